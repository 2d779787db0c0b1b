//! NANP area code (NPA) → state/province and IANA time zone.
//!
//! Auctions tell buyers where a caller is and what time it is there, and the
//! only location signal a bare caller ID carries is its area code. This module
//! owns that mapping: a static table, sorted by area code, of every geographic
//! NPA in service in the United States (50 states, DC, Puerto Rico, the US
//! Virgin Islands, Guam, the Northern Mariana Islands and American Samoa),
//! Canada, and the Caribbean and Atlantic members of the North American
//! Numbering Plan. Lookups are a binary search over `static` data: no
//! allocation, no lazy initialisation, well under a microsecond.
//!
//! # Data
//!
//! Assignments follow NANPA's public NPA records as of mid-2026. The list of
//! codes and their states was cross-checked against Google libphonenumber's
//! public metadata (release 9.0.35, July 2026). Four overlays that are in
//! service but missing from that metadata are included from public utility
//! commission announcements: 861 (IL, 309 overlay, 2023), 624 (NY, 716
//! overlay, 2023), 436 (OH, 440 overlay, 2024) and 679 (MI, 313 overlay,
//! 2025). Codes that are only announced or whose status is unclear (e.g. 357
//! and 764 for California's 650) are left out; an unknown code returns `None`,
//! which callers must treat as "location unknown", never as an error.
//!
//! Non-geographic codes have no state and are **not** in the table:
//! toll-free 800/833/844/855/866/877/888 (see [`is_toll_free`]), personal
//! communications 500/52x/533/544/566/577/588, Canadian non-geographic
//! 600/622, 700, 710 (US government) and 900.
//!
//! # Region and country codes
//!
//! `region` is the two-letter postal code of a US state, DC or territory
//! (`"PR"`, `"VI"`, `"GU"`, `"MP"`, `"AS"`), or of a Canadian province or
//! territory. For the other NANP countries `region` and `country` are both the
//! ISO 3166-1 code (`"JM"`, `"BS"`, `"DO"`, ...). US territories carry
//! `country: "US"`: they are US jurisdictions for buyers' purposes, and
//! [`is_us_state_or_territory`] says which regions they are.
//!
//! Two ISO country codes collide with US state codes: `"KY"` is Kentucky and
//! the Cayman Islands (345), `"MS"` is Mississippi and Montserrat (664). Read
//! `region` together with `country` ([`AreaInfo`] always carries both). The
//! region-only functions ([`region_time_zone`], [`is_us_state_or_territory`])
//! resolve such a code to the US state; [`region_time_zone_in`] takes the
//! country too.
//!
//! # Limits
//!
//! * An area code is a proxy for where a caller is, not a fact. Mobile numbers
//!   keep their area code when people move, ported and VoIP numbers can be
//!   anywhere, and overlays mean several codes share one area (each overlay is
//!   listed with its parent's state).
//! * An NPA belongs to exactly one state or province, with one exception:
//!   867 serves Yukon, the Northwest Territories and Nunavut; it is reported
//!   as `"YT"`, `America/Whitehorse`. 902/782 serve Nova Scotia and Prince
//!   Edward Island; they are reported as `"NS"` (both provinces use
//!   `America/Halifax`).
//! * Some area codes straddle time zones. Each code gets the zone covering
//!   most of its population, so the zone can be an hour off for callers on
//!   the minority side:
//!   - 850/448 Florida panhandle → `America/Chicago` (Pensacola, Fort Walton
//!     Beach and Panama City are Central; Tallahassee and the Big Bend east of
//!     the Apalachicola are Eastern and the smaller part).
//!   - 219 northwest Indiana → `America/Chicago` (Chicago metro). Other
//!     Indiana codes → `America/Indiana/Indianapolis`, although the Evansville
//!     corner of 812/930 and a few 574 counties are Central.
//!   - 270/364 western Kentucky → `America/Chicago` (Bowling Green, Owensboro,
//!     Paducah; the Elizabethtown area is Eastern). 502/859/606 →
//!     `America/New_York`.
//!   - Tennessee: 423 (Chattanooga, Tri-Cities) and 865 (Knoxville) →
//!     `America/New_York`; 615/629/731/901/931 → `America/Chicago`. Some
//!     counties on either side of the line are in the other zone.
//!   - 915 El Paso → `America/Denver`; the rest of Texas, including 432 and
//!     806, → `America/Chicago`.
//!   - 906 Michigan Upper Peninsula → `America/Detroit` (the four counties on
//!     the Wisconsin border are Central).
//!   - 308 Nebraska → `America/Chicago` (Grand Island, Kearney, North Platte;
//!     the Panhandle is Mountain). 605 South Dakota and 701 North Dakota →
//!     `America/Chicago` (West River / the south-west are Mountain). 620/785
//!     Kansas → `America/Chicago` (four western counties are Mountain).
//!   - 208/986 Idaho → `America/Boise` (the Panhandle is Pacific). 541/458
//!     Oregon → `America/Los_Angeles` (most of Malheur County is Mountain).
//!     775 Nevada → `America/Los_Angeles` (West Wendover is Mountain).
//!   - 928 Arizona → `America/Phoenix` (the Navajo Nation observes DST).
//!   - 907 Alaska → `America/Anchorage` (the western Aleutians use
//!     `America/Adak`).
//!   - Canada: 807 north-western Ontario → `America/Toronto` (Thunder Bay;
//!     Kenora and Dryden are Central). 418/581/367 Quebec → `America/Toronto`
//!     (the Magdalen Islands and the Lower North Shore are Atlantic). British
//!     Columbia's 250/778/236/672/257 → `America/Vancouver` (the East Kootenay
//!     is Mountain, the Peace River region is on year-round MST).
//!     Saskatchewan → `America/Regina` (Lloydminster keeps Alberta's time).
//!     709/879 → `America/St_Johns` (most of Labrador is Atlantic).
//!     New Brunswick → `America/Moncton`.

use chrono_tz::Tz;

/// Location facts for one geographic NANP area code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AreaInfo {
    /// The three-digit NPA, e.g. `312`.
    pub area_code: u16,
    /// Two-letter state/province/territory code (`"IL"`, `"DC"`, `"PR"`,
    /// `"ON"`), or the ISO country code for the other NANP countries
    /// (`"JM"`). See the module docs for the `"KY"`/`"MS"` collisions.
    pub region: &'static str,
    /// `"US"` (including US territories), `"CA"`, or the ISO country code.
    pub country: &'static str,
    /// The IANA zone covering most of the area code's population.
    pub time_zone: Tz,
}

/// Looks up a three-digit area code, e.g. `"312"` → Illinois,
/// `America/Chicago`.
///
/// Anything that is not exactly three ASCII digits, and any code that is not
/// a geographic NPA in service (toll-free, non-geographic, unassigned),
/// returns `None`.
pub fn area_info(area_code: &str) -> Option<&'static AreaInfo> {
    let code = parse_npa(area_code)?;
    AREA_CODES
        .binary_search_by_key(&code, |info| info.area_code)
        .ok()
        .map(|index| &AREA_CODES[index])
}

/// Whether `area_code` is a NANP toll-free code: 800, 833, 844, 855, 866, 877
/// or 888.
pub fn is_toll_free(area_code: &str) -> bool {
    matches!(
        parse_npa(area_code),
        Some(800 | 833 | 844 | 855 | 866 | 877 | 888)
    )
}

/// The default time zone of a state, province, territory or NANP country,
/// e.g. `"IL"` → `America/Chicago`, `"AZ"` → `America/Phoenix`, `"IN"` →
/// `America/Indiana/Indianapolis`, `"HI"` → `Pacific/Honolulu`.
///
/// The default is the zone covering most of the region's population; a
/// particular area code may differ (see [`area_info`]). Matching ignores ASCII
/// case. `"KY"` and `"MS"` resolve to Kentucky and Mississippi; use
/// [`region_time_zone_in`] for the Cayman Islands and Montserrat.
pub fn region_time_zone(region: &str) -> Option<Tz> {
    REGIONS
        .iter()
        .find(|r| r.region.eq_ignore_ascii_case(region))
        .map(|r| r.time_zone)
}

/// Like [`region_time_zone`], but for a `(country, region)` pair as carried by
/// [`AreaInfo`], which is unambiguous: `("KY", "KY")` is the Cayman Islands,
/// `("US", "KY")` is Kentucky. Matching ignores ASCII case.
pub fn region_time_zone_in(country: &str, region: &str) -> Option<Tz> {
    REGIONS
        .iter()
        .find(|r| r.country.eq_ignore_ascii_case(country) && r.region.eq_ignore_ascii_case(region))
        .map(|r| r.time_zone)
}

/// Whether `region` is a US state, DC, or a US territory (PR, VI, GU, MP,
/// AS). Matching ignores ASCII case; `"KY"` and `"MS"` count as the states.
pub fn is_us_state_or_territory(region: &str) -> bool {
    REGIONS
        .iter()
        .any(|r| r.country == US && r.region.eq_ignore_ascii_case(region))
}

/// Every known geographic area code, sorted by `area_code` with no duplicates.
pub fn all() -> &'static [AreaInfo] {
    AREA_CODES
}

/// Exactly three ASCII digits → their value.
fn parse_npa(area_code: &str) -> Option<u16> {
    match area_code.as_bytes() {
        &[a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

const US: &str = "US";
const CA: &str = "CA";

struct Region {
    region: &'static str,
    country: &'static str,
    time_zone: Tz,
}

const fn r(region: &'static str, country: &'static str, time_zone: Tz) -> Region {
    Region {
        region,
        country,
        time_zone,
    }
}

/// Every region code the table may use, with its default zone. US entries
/// come first so that region-only lookups of `"KY"`/`"MS"` find the states.
static REGIONS: &[Region] = &[
    // US states and DC.
    r("AL", US, Tz::America__Chicago),
    r("AK", US, Tz::America__Anchorage),
    r("AZ", US, Tz::America__Phoenix),
    r("AR", US, Tz::America__Chicago),
    r("CA", US, Tz::America__Los_Angeles),
    r("CO", US, Tz::America__Denver),
    r("CT", US, Tz::America__New_York),
    r("DE", US, Tz::America__New_York),
    r("DC", US, Tz::America__New_York),
    r("FL", US, Tz::America__New_York),
    r("GA", US, Tz::America__New_York),
    r("HI", US, Tz::Pacific__Honolulu),
    r("ID", US, Tz::America__Boise),
    r("IL", US, Tz::America__Chicago),
    r("IN", US, Tz::America__Indiana__Indianapolis),
    r("IA", US, Tz::America__Chicago),
    r("KS", US, Tz::America__Chicago),
    r("KY", US, Tz::America__New_York),
    r("LA", US, Tz::America__Chicago),
    r("ME", US, Tz::America__New_York),
    r("MD", US, Tz::America__New_York),
    r("MA", US, Tz::America__New_York),
    r("MI", US, Tz::America__Detroit),
    r("MN", US, Tz::America__Chicago),
    r("MS", US, Tz::America__Chicago),
    r("MO", US, Tz::America__Chicago),
    r("MT", US, Tz::America__Denver),
    r("NE", US, Tz::America__Chicago),
    r("NV", US, Tz::America__Los_Angeles),
    r("NH", US, Tz::America__New_York),
    r("NJ", US, Tz::America__New_York),
    r("NM", US, Tz::America__Denver),
    r("NY", US, Tz::America__New_York),
    r("NC", US, Tz::America__New_York),
    r("ND", US, Tz::America__Chicago),
    r("OH", US, Tz::America__New_York),
    r("OK", US, Tz::America__Chicago),
    r("OR", US, Tz::America__Los_Angeles),
    r("PA", US, Tz::America__New_York),
    r("RI", US, Tz::America__New_York),
    r("SC", US, Tz::America__New_York),
    r("SD", US, Tz::America__Chicago),
    r("TN", US, Tz::America__Chicago),
    r("TX", US, Tz::America__Chicago),
    r("UT", US, Tz::America__Denver),
    r("VT", US, Tz::America__New_York),
    r("VA", US, Tz::America__New_York),
    r("WA", US, Tz::America__Los_Angeles),
    r("WV", US, Tz::America__New_York),
    r("WI", US, Tz::America__Chicago),
    r("WY", US, Tz::America__Denver),
    // US territories.
    r("PR", US, Tz::America__Puerto_Rico),
    r("VI", US, Tz::America__St_Thomas),
    r("GU", US, Tz::Pacific__Guam),
    r("MP", US, Tz::Pacific__Saipan),
    r("AS", US, Tz::Pacific__Pago_Pago),
    // Canadian provinces and territories. PE, NT and NU share area codes with
    // NS (902/782) and YT (867) and are never an AreaInfo's region, but buyers
    // may name them.
    r("AB", CA, Tz::America__Edmonton),
    r("BC", CA, Tz::America__Vancouver),
    r("MB", CA, Tz::America__Winnipeg),
    r("NB", CA, Tz::America__Moncton),
    r("NL", CA, Tz::America__St_Johns),
    r("NS", CA, Tz::America__Halifax),
    r("NT", CA, Tz::America__Yellowknife),
    r("NU", CA, Tz::America__Iqaluit),
    r("ON", CA, Tz::America__Toronto),
    r("PE", CA, Tz::America__Halifax),
    r("QC", CA, Tz::America__Toronto),
    r("SK", CA, Tz::America__Regina),
    r("YT", CA, Tz::America__Whitehorse),
    // Other NANP countries and territories (region == ISO country code).
    r("AG", "AG", Tz::America__Antigua),
    r("AI", "AI", Tz::America__Anguilla),
    r("BB", "BB", Tz::America__Barbados),
    r("BM", "BM", Tz::Atlantic__Bermuda),
    r("BS", "BS", Tz::America__Nassau),
    r("DM", "DM", Tz::America__Dominica),
    r("DO", "DO", Tz::America__Santo_Domingo),
    r("GD", "GD", Tz::America__Grenada),
    r("JM", "JM", Tz::America__Jamaica),
    r("KN", "KN", Tz::America__St_Kitts),
    r("KY", "KY", Tz::America__Cayman),
    r("LC", "LC", Tz::America__St_Lucia),
    r("MS", "MS", Tz::America__Montserrat),
    r("SX", "SX", Tz::America__Lower_Princes),
    r("TC", "TC", Tz::America__Grand_Turk),
    r("TT", "TT", Tz::America__Port_of_Spain),
    r("VC", "VC", Tz::America__St_Vincent),
    r("VG", "VG", Tz::America__Tortola),
];

const fn a(area_code: u16, region: &'static str, country: &'static str, time_zone: Tz) -> AreaInfo {
    AreaInfo {
        area_code,
        region,
        country,
        time_zone,
    }
}

/// The table, sorted by area code (binary-searched by [`area_info`]). Rows
/// whose zone differs from their region's default are marked; the tests keep
/// that list explicit.
static AREA_CODES: &[AreaInfo] = &[
    a(201, "NJ", US, Tz::America__New_York),
    a(202, "DC", US, Tz::America__New_York),
    a(203, "CT", US, Tz::America__New_York),
    a(204, "MB", CA, Tz::America__Winnipeg),
    a(205, "AL", US, Tz::America__Chicago),
    a(206, "WA", US, Tz::America__Los_Angeles),
    a(207, "ME", US, Tz::America__New_York),
    a(208, "ID", US, Tz::America__Boise),
    a(209, "CA", US, Tz::America__Los_Angeles),
    a(210, "TX", US, Tz::America__Chicago),
    a(212, "NY", US, Tz::America__New_York),
    a(213, "CA", US, Tz::America__Los_Angeles),
    a(214, "TX", US, Tz::America__Chicago),
    a(215, "PA", US, Tz::America__New_York),
    a(216, "OH", US, Tz::America__New_York),
    a(217, "IL", US, Tz::America__Chicago),
    a(218, "MN", US, Tz::America__Chicago),
    a(219, "IN", US, Tz::America__Chicago), // split zone: NW Indiana: Chicago metro, Central
    a(220, "OH", US, Tz::America__New_York),
    a(223, "PA", US, Tz::America__New_York),
    a(224, "IL", US, Tz::America__Chicago),
    a(225, "LA", US, Tz::America__Chicago),
    a(226, "ON", CA, Tz::America__Toronto),
    a(227, "MD", US, Tz::America__New_York),
    a(228, "MS", US, Tz::America__Chicago),
    a(229, "GA", US, Tz::America__New_York),
    a(231, "MI", US, Tz::America__Detroit),
    a(234, "OH", US, Tz::America__New_York),
    a(235, "MO", US, Tz::America__Chicago),
    a(236, "BC", CA, Tz::America__Vancouver),
    a(239, "FL", US, Tz::America__New_York),
    a(240, "MD", US, Tz::America__New_York),
    a(242, "BS", "BS", Tz::America__Nassau),
    a(246, "BB", "BB", Tz::America__Barbados),
    a(248, "MI", US, Tz::America__Detroit),
    a(249, "ON", CA, Tz::America__Toronto),
    a(250, "BC", CA, Tz::America__Vancouver),
    a(251, "AL", US, Tz::America__Chicago),
    a(252, "NC", US, Tz::America__New_York),
    a(253, "WA", US, Tz::America__Los_Angeles),
    a(254, "TX", US, Tz::America__Chicago),
    a(256, "AL", US, Tz::America__Chicago),
    a(257, "BC", CA, Tz::America__Vancouver),
    a(260, "IN", US, Tz::America__Indiana__Indianapolis),
    a(262, "WI", US, Tz::America__Chicago),
    a(263, "QC", CA, Tz::America__Toronto),
    a(264, "AI", "AI", Tz::America__Anguilla),
    a(267, "PA", US, Tz::America__New_York),
    a(268, "AG", "AG", Tz::America__Antigua),
    a(269, "MI", US, Tz::America__Detroit),
    a(270, "KY", US, Tz::America__Chicago), // split zone: western Kentucky: Central
    a(272, "PA", US, Tz::America__New_York),
    a(274, "WI", US, Tz::America__Chicago),
    a(276, "VA", US, Tz::America__New_York),
    a(279, "CA", US, Tz::America__Los_Angeles),
    a(281, "TX", US, Tz::America__Chicago),
    a(283, "OH", US, Tz::America__New_York),
    a(284, "VG", "VG", Tz::America__Tortola),
    a(289, "ON", CA, Tz::America__Toronto),
    a(301, "MD", US, Tz::America__New_York),
    a(302, "DE", US, Tz::America__New_York),
    a(303, "CO", US, Tz::America__Denver),
    a(304, "WV", US, Tz::America__New_York),
    a(305, "FL", US, Tz::America__New_York),
    a(306, "SK", CA, Tz::America__Regina),
    a(307, "WY", US, Tz::America__Denver),
    a(308, "NE", US, Tz::America__Chicago),
    a(309, "IL", US, Tz::America__Chicago),
    a(310, "CA", US, Tz::America__Los_Angeles),
    a(312, "IL", US, Tz::America__Chicago),
    a(313, "MI", US, Tz::America__Detroit),
    a(314, "MO", US, Tz::America__Chicago),
    a(315, "NY", US, Tz::America__New_York),
    a(316, "KS", US, Tz::America__Chicago),
    a(317, "IN", US, Tz::America__Indiana__Indianapolis),
    a(318, "LA", US, Tz::America__Chicago),
    a(319, "IA", US, Tz::America__Chicago),
    a(320, "MN", US, Tz::America__Chicago),
    a(321, "FL", US, Tz::America__New_York),
    a(323, "CA", US, Tz::America__Los_Angeles),
    a(324, "FL", US, Tz::America__New_York),
    a(325, "TX", US, Tz::America__Chicago),
    a(326, "OH", US, Tz::America__New_York),
    a(327, "AR", US, Tz::America__Chicago),
    a(329, "NY", US, Tz::America__New_York),
    a(330, "OH", US, Tz::America__New_York),
    a(331, "IL", US, Tz::America__Chicago),
    a(332, "NY", US, Tz::America__New_York),
    a(334, "AL", US, Tz::America__Chicago),
    a(336, "NC", US, Tz::America__New_York),
    a(337, "LA", US, Tz::America__Chicago),
    a(339, "MA", US, Tz::America__New_York),
    a(340, "VI", US, Tz::America__St_Thomas),
    a(341, "CA", US, Tz::America__Los_Angeles),
    a(343, "ON", CA, Tz::America__Toronto),
    a(345, "KY", "KY", Tz::America__Cayman),
    a(346, "TX", US, Tz::America__Chicago),
    a(347, "NY", US, Tz::America__New_York),
    a(350, "CA", US, Tz::America__Los_Angeles),
    a(351, "MA", US, Tz::America__New_York),
    a(352, "FL", US, Tz::America__New_York),
    a(353, "WI", US, Tz::America__Chicago),
    a(354, "QC", CA, Tz::America__Toronto),
    a(360, "WA", US, Tz::America__Los_Angeles),
    a(361, "TX", US, Tz::America__Chicago),
    a(363, "NY", US, Tz::America__New_York),
    a(364, "KY", US, Tz::America__Chicago), // split zone: 270 overlay: Central
    a(365, "ON", CA, Tz::America__Toronto),
    a(367, "QC", CA, Tz::America__Toronto),
    a(368, "AB", CA, Tz::America__Edmonton),
    a(369, "CA", US, Tz::America__Los_Angeles),
    a(380, "OH", US, Tz::America__New_York),
    a(382, "ON", CA, Tz::America__Toronto),
    a(385, "UT", US, Tz::America__Denver),
    a(386, "FL", US, Tz::America__New_York),
    a(401, "RI", US, Tz::America__New_York),
    a(402, "NE", US, Tz::America__Chicago),
    a(403, "AB", CA, Tz::America__Edmonton),
    a(404, "GA", US, Tz::America__New_York),
    a(405, "OK", US, Tz::America__Chicago),
    a(406, "MT", US, Tz::America__Denver),
    a(407, "FL", US, Tz::America__New_York),
    a(408, "CA", US, Tz::America__Los_Angeles),
    a(409, "TX", US, Tz::America__Chicago),
    a(410, "MD", US, Tz::America__New_York),
    a(412, "PA", US, Tz::America__New_York),
    a(413, "MA", US, Tz::America__New_York),
    a(414, "WI", US, Tz::America__Chicago),
    a(415, "CA", US, Tz::America__Los_Angeles),
    a(416, "ON", CA, Tz::America__Toronto),
    a(417, "MO", US, Tz::America__Chicago),
    a(418, "QC", CA, Tz::America__Toronto),
    a(419, "OH", US, Tz::America__New_York),
    a(423, "TN", US, Tz::America__New_York), // split zone: east Tennessee: Eastern
    a(424, "CA", US, Tz::America__Los_Angeles),
    a(425, "WA", US, Tz::America__Los_Angeles),
    a(428, "NB", CA, Tz::America__Moncton),
    a(430, "TX", US, Tz::America__Chicago),
    a(431, "MB", CA, Tz::America__Winnipeg),
    a(432, "TX", US, Tz::America__Chicago),
    a(434, "VA", US, Tz::America__New_York),
    a(435, "UT", US, Tz::America__Denver),
    a(436, "OH", US, Tz::America__New_York),
    a(437, "ON", CA, Tz::America__Toronto),
    a(438, "QC", CA, Tz::America__Toronto),
    a(440, "OH", US, Tz::America__New_York),
    a(441, "BM", "BM", Tz::Atlantic__Bermuda),
    a(442, "CA", US, Tz::America__Los_Angeles),
    a(443, "MD", US, Tz::America__New_York),
    a(445, "PA", US, Tz::America__New_York),
    a(447, "IL", US, Tz::America__Chicago),
    a(448, "FL", US, Tz::America__Chicago), // split zone: 850 overlay: Central majority
    a(450, "QC", CA, Tz::America__Toronto),
    a(458, "OR", US, Tz::America__Los_Angeles),
    a(463, "IN", US, Tz::America__Indiana__Indianapolis),
    a(464, "IL", US, Tz::America__Chicago),
    a(468, "QC", CA, Tz::America__Toronto),
    a(469, "TX", US, Tz::America__Chicago),
    a(470, "GA", US, Tz::America__New_York),
    a(472, "NC", US, Tz::America__New_York),
    a(473, "GD", "GD", Tz::America__Grenada),
    a(474, "SK", CA, Tz::America__Regina),
    a(475, "CT", US, Tz::America__New_York),
    a(478, "GA", US, Tz::America__New_York),
    a(479, "AR", US, Tz::America__Chicago),
    a(480, "AZ", US, Tz::America__Phoenix),
    a(484, "PA", US, Tz::America__New_York),
    a(501, "AR", US, Tz::America__Chicago),
    a(502, "KY", US, Tz::America__New_York),
    a(503, "OR", US, Tz::America__Los_Angeles),
    a(504, "LA", US, Tz::America__Chicago),
    a(505, "NM", US, Tz::America__Denver),
    a(506, "NB", CA, Tz::America__Moncton),
    a(507, "MN", US, Tz::America__Chicago),
    a(508, "MA", US, Tz::America__New_York),
    a(509, "WA", US, Tz::America__Los_Angeles),
    a(510, "CA", US, Tz::America__Los_Angeles),
    a(512, "TX", US, Tz::America__Chicago),
    a(513, "OH", US, Tz::America__New_York),
    a(514, "QC", CA, Tz::America__Toronto),
    a(515, "IA", US, Tz::America__Chicago),
    a(516, "NY", US, Tz::America__New_York),
    a(517, "MI", US, Tz::America__Detroit),
    a(518, "NY", US, Tz::America__New_York),
    a(519, "ON", CA, Tz::America__Toronto),
    a(520, "AZ", US, Tz::America__Phoenix),
    a(530, "CA", US, Tz::America__Los_Angeles),
    a(531, "NE", US, Tz::America__Chicago),
    a(534, "WI", US, Tz::America__Chicago),
    a(539, "OK", US, Tz::America__Chicago),
    a(540, "VA", US, Tz::America__New_York),
    a(541, "OR", US, Tz::America__Los_Angeles),
    a(548, "ON", CA, Tz::America__Toronto),
    a(551, "NJ", US, Tz::America__New_York),
    a(557, "MO", US, Tz::America__Chicago),
    a(559, "CA", US, Tz::America__Los_Angeles),
    a(561, "FL", US, Tz::America__New_York),
    a(562, "CA", US, Tz::America__Los_Angeles),
    a(563, "IA", US, Tz::America__Chicago),
    a(564, "WA", US, Tz::America__Los_Angeles),
    a(567, "OH", US, Tz::America__New_York),
    a(570, "PA", US, Tz::America__New_York),
    a(571, "VA", US, Tz::America__New_York),
    a(572, "OK", US, Tz::America__Chicago),
    a(573, "MO", US, Tz::America__Chicago),
    a(574, "IN", US, Tz::America__Indiana__Indianapolis),
    a(575, "NM", US, Tz::America__Denver),
    a(579, "QC", CA, Tz::America__Toronto),
    a(580, "OK", US, Tz::America__Chicago),
    a(581, "QC", CA, Tz::America__Toronto),
    a(582, "PA", US, Tz::America__New_York),
    a(584, "MB", CA, Tz::America__Winnipeg),
    a(585, "NY", US, Tz::America__New_York),
    a(586, "MI", US, Tz::America__Detroit),
    a(587, "AB", CA, Tz::America__Edmonton),
    a(601, "MS", US, Tz::America__Chicago),
    a(602, "AZ", US, Tz::America__Phoenix),
    a(603, "NH", US, Tz::America__New_York),
    a(604, "BC", CA, Tz::America__Vancouver),
    a(605, "SD", US, Tz::America__Chicago),
    a(606, "KY", US, Tz::America__New_York),
    a(607, "NY", US, Tz::America__New_York),
    a(608, "WI", US, Tz::America__Chicago),
    a(609, "NJ", US, Tz::America__New_York),
    a(610, "PA", US, Tz::America__New_York),
    a(612, "MN", US, Tz::America__Chicago),
    a(613, "ON", CA, Tz::America__Toronto),
    a(614, "OH", US, Tz::America__New_York),
    a(615, "TN", US, Tz::America__Chicago),
    a(616, "MI", US, Tz::America__Detroit),
    a(617, "MA", US, Tz::America__New_York),
    a(618, "IL", US, Tz::America__Chicago),
    a(619, "CA", US, Tz::America__Los_Angeles),
    a(620, "KS", US, Tz::America__Chicago),
    a(623, "AZ", US, Tz::America__Phoenix),
    a(624, "NY", US, Tz::America__New_York),
    a(626, "CA", US, Tz::America__Los_Angeles),
    a(628, "CA", US, Tz::America__Los_Angeles),
    a(629, "TN", US, Tz::America__Chicago),
    a(630, "IL", US, Tz::America__Chicago),
    a(631, "NY", US, Tz::America__New_York),
    a(636, "MO", US, Tz::America__Chicago),
    a(639, "SK", CA, Tz::America__Regina),
    a(640, "NJ", US, Tz::America__New_York),
    a(641, "IA", US, Tz::America__Chicago),
    a(645, "FL", US, Tz::America__New_York),
    a(646, "NY", US, Tz::America__New_York),
    a(647, "ON", CA, Tz::America__Toronto),
    a(649, "TC", "TC", Tz::America__Grand_Turk),
    a(650, "CA", US, Tz::America__Los_Angeles),
    a(651, "MN", US, Tz::America__Chicago),
    a(656, "FL", US, Tz::America__New_York),
    a(657, "CA", US, Tz::America__Los_Angeles),
    a(658, "JM", "JM", Tz::America__Jamaica),
    a(659, "AL", US, Tz::America__Chicago),
    a(660, "MO", US, Tz::America__Chicago),
    a(661, "CA", US, Tz::America__Los_Angeles),
    a(662, "MS", US, Tz::America__Chicago),
    a(664, "MS", "MS", Tz::America__Montserrat),
    a(667, "MD", US, Tz::America__New_York),
    a(669, "CA", US, Tz::America__Los_Angeles),
    a(670, "MP", US, Tz::Pacific__Saipan),
    a(671, "GU", US, Tz::Pacific__Guam),
    a(672, "BC", CA, Tz::America__Vancouver),
    a(678, "GA", US, Tz::America__New_York),
    a(679, "MI", US, Tz::America__Detroit),
    a(680, "NY", US, Tz::America__New_York),
    a(681, "WV", US, Tz::America__New_York),
    a(682, "TX", US, Tz::America__Chicago),
    a(683, "ON", CA, Tz::America__Toronto),
    a(684, "AS", US, Tz::Pacific__Pago_Pago),
    a(686, "VA", US, Tz::America__New_York),
    a(689, "FL", US, Tz::America__New_York),
    a(701, "ND", US, Tz::America__Chicago),
    a(702, "NV", US, Tz::America__Los_Angeles),
    a(703, "VA", US, Tz::America__New_York),
    a(704, "NC", US, Tz::America__New_York),
    a(705, "ON", CA, Tz::America__Toronto),
    a(706, "GA", US, Tz::America__New_York),
    a(707, "CA", US, Tz::America__Los_Angeles),
    a(708, "IL", US, Tz::America__Chicago),
    a(709, "NL", CA, Tz::America__St_Johns),
    a(712, "IA", US, Tz::America__Chicago),
    a(713, "TX", US, Tz::America__Chicago),
    a(714, "CA", US, Tz::America__Los_Angeles),
    a(715, "WI", US, Tz::America__Chicago),
    a(716, "NY", US, Tz::America__New_York),
    a(717, "PA", US, Tz::America__New_York),
    a(718, "NY", US, Tz::America__New_York),
    a(719, "CO", US, Tz::America__Denver),
    a(720, "CO", US, Tz::America__Denver),
    a(721, "SX", "SX", Tz::America__Lower_Princes),
    a(724, "PA", US, Tz::America__New_York),
    a(725, "NV", US, Tz::America__Los_Angeles),
    a(726, "TX", US, Tz::America__Chicago),
    a(727, "FL", US, Tz::America__New_York),
    a(728, "FL", US, Tz::America__New_York),
    a(730, "IL", US, Tz::America__Chicago),
    a(731, "TN", US, Tz::America__Chicago),
    a(732, "NJ", US, Tz::America__New_York),
    a(734, "MI", US, Tz::America__Detroit),
    a(737, "TX", US, Tz::America__Chicago),
    a(738, "CA", US, Tz::America__Los_Angeles),
    a(740, "OH", US, Tz::America__New_York),
    a(742, "ON", CA, Tz::America__Toronto),
    a(743, "NC", US, Tz::America__New_York),
    a(747, "CA", US, Tz::America__Los_Angeles),
    a(748, "CO", US, Tz::America__Denver),
    a(753, "ON", CA, Tz::America__Toronto),
    a(754, "FL", US, Tz::America__New_York),
    a(757, "VA", US, Tz::America__New_York),
    a(758, "LC", "LC", Tz::America__St_Lucia),
    a(760, "CA", US, Tz::America__Los_Angeles),
    a(762, "GA", US, Tz::America__New_York),
    a(763, "MN", US, Tz::America__Chicago),
    a(765, "IN", US, Tz::America__Indiana__Indianapolis),
    a(767, "DM", "DM", Tz::America__Dominica),
    a(769, "MS", US, Tz::America__Chicago),
    a(770, "GA", US, Tz::America__New_York),
    a(771, "DC", US, Tz::America__New_York),
    a(772, "FL", US, Tz::America__New_York),
    a(773, "IL", US, Tz::America__Chicago),
    a(774, "MA", US, Tz::America__New_York),
    a(775, "NV", US, Tz::America__Los_Angeles),
    a(778, "BC", CA, Tz::America__Vancouver),
    a(779, "IL", US, Tz::America__Chicago),
    a(780, "AB", CA, Tz::America__Edmonton),
    a(781, "MA", US, Tz::America__New_York),
    a(782, "NS", CA, Tz::America__Halifax),
    a(784, "VC", "VC", Tz::America__St_Vincent),
    a(785, "KS", US, Tz::America__Chicago),
    a(786, "FL", US, Tz::America__New_York),
    a(787, "PR", US, Tz::America__Puerto_Rico),
    a(801, "UT", US, Tz::America__Denver),
    a(802, "VT", US, Tz::America__New_York),
    a(803, "SC", US, Tz::America__New_York),
    a(804, "VA", US, Tz::America__New_York),
    a(805, "CA", US, Tz::America__Los_Angeles),
    a(806, "TX", US, Tz::America__Chicago),
    a(807, "ON", CA, Tz::America__Toronto),
    a(808, "HI", US, Tz::Pacific__Honolulu),
    a(809, "DO", "DO", Tz::America__Santo_Domingo),
    a(810, "MI", US, Tz::America__Detroit),
    a(812, "IN", US, Tz::America__Indiana__Indianapolis),
    a(813, "FL", US, Tz::America__New_York),
    a(814, "PA", US, Tz::America__New_York),
    a(815, "IL", US, Tz::America__Chicago),
    a(816, "MO", US, Tz::America__Chicago),
    a(817, "TX", US, Tz::America__Chicago),
    a(818, "CA", US, Tz::America__Los_Angeles),
    a(819, "QC", CA, Tz::America__Toronto),
    a(820, "CA", US, Tz::America__Los_Angeles),
    a(821, "SC", US, Tz::America__New_York),
    a(825, "AB", CA, Tz::America__Edmonton),
    a(826, "VA", US, Tz::America__New_York),
    a(828, "NC", US, Tz::America__New_York),
    a(829, "DO", "DO", Tz::America__Santo_Domingo),
    a(830, "TX", US, Tz::America__Chicago),
    a(831, "CA", US, Tz::America__Los_Angeles),
    a(832, "TX", US, Tz::America__Chicago),
    a(835, "PA", US, Tz::America__New_York),
    a(838, "NY", US, Tz::America__New_York),
    a(839, "SC", US, Tz::America__New_York),
    a(840, "CA", US, Tz::America__Los_Angeles),
    a(843, "SC", US, Tz::America__New_York),
    a(845, "NY", US, Tz::America__New_York),
    a(847, "IL", US, Tz::America__Chicago),
    a(848, "NJ", US, Tz::America__New_York),
    a(849, "DO", "DO", Tz::America__Santo_Domingo),
    a(850, "FL", US, Tz::America__Chicago), // split zone: FL panhandle: Central majority
    a(854, "SC", US, Tz::America__New_York),
    a(856, "NJ", US, Tz::America__New_York),
    a(857, "MA", US, Tz::America__New_York),
    a(858, "CA", US, Tz::America__Los_Angeles),
    a(859, "KY", US, Tz::America__New_York),
    a(860, "CT", US, Tz::America__New_York),
    a(861, "IL", US, Tz::America__Chicago),
    a(862, "NJ", US, Tz::America__New_York),
    a(863, "FL", US, Tz::America__New_York),
    a(864, "SC", US, Tz::America__New_York),
    a(865, "TN", US, Tz::America__New_York), // split zone: Knoxville: Eastern
    a(867, "YT", CA, Tz::America__Whitehorse),
    a(868, "TT", "TT", Tz::America__Port_of_Spain),
    a(869, "KN", "KN", Tz::America__St_Kitts),
    a(870, "AR", US, Tz::America__Chicago),
    a(872, "IL", US, Tz::America__Chicago),
    a(873, "QC", CA, Tz::America__Toronto),
    a(876, "JM", "JM", Tz::America__Jamaica),
    a(878, "PA", US, Tz::America__New_York),
    a(879, "NL", CA, Tz::America__St_Johns),
    a(901, "TN", US, Tz::America__Chicago),
    a(902, "NS", CA, Tz::America__Halifax),
    a(903, "TX", US, Tz::America__Chicago),
    a(904, "FL", US, Tz::America__New_York),
    a(905, "ON", CA, Tz::America__Toronto),
    a(906, "MI", US, Tz::America__Detroit),
    a(907, "AK", US, Tz::America__Anchorage),
    a(908, "NJ", US, Tz::America__New_York),
    a(909, "CA", US, Tz::America__Los_Angeles),
    a(910, "NC", US, Tz::America__New_York),
    a(912, "GA", US, Tz::America__New_York),
    a(913, "KS", US, Tz::America__Chicago),
    a(914, "NY", US, Tz::America__New_York),
    a(915, "TX", US, Tz::America__Denver), // split zone: El Paso: Mountain
    a(916, "CA", US, Tz::America__Los_Angeles),
    a(917, "NY", US, Tz::America__New_York),
    a(918, "OK", US, Tz::America__Chicago),
    a(919, "NC", US, Tz::America__New_York),
    a(920, "WI", US, Tz::America__Chicago),
    a(925, "CA", US, Tz::America__Los_Angeles),
    a(928, "AZ", US, Tz::America__Phoenix),
    a(929, "NY", US, Tz::America__New_York),
    a(930, "IN", US, Tz::America__Indiana__Indianapolis),
    a(931, "TN", US, Tz::America__Chicago),
    a(934, "NY", US, Tz::America__New_York),
    a(936, "TX", US, Tz::America__Chicago),
    a(937, "OH", US, Tz::America__New_York),
    a(938, "AL", US, Tz::America__Chicago),
    a(939, "PR", US, Tz::America__Puerto_Rico),
    a(940, "TX", US, Tz::America__Chicago),
    a(941, "FL", US, Tz::America__New_York),
    a(942, "ON", CA, Tz::America__Toronto),
    a(943, "GA", US, Tz::America__New_York),
    a(945, "TX", US, Tz::America__Chicago),
    a(947, "MI", US, Tz::America__Detroit),
    a(948, "VA", US, Tz::America__New_York),
    a(949, "CA", US, Tz::America__Los_Angeles),
    a(951, "CA", US, Tz::America__Los_Angeles),
    a(952, "MN", US, Tz::America__Chicago),
    a(954, "FL", US, Tz::America__New_York),
    a(956, "TX", US, Tz::America__Chicago),
    a(959, "CT", US, Tz::America__New_York),
    a(970, "CO", US, Tz::America__Denver),
    a(971, "OR", US, Tz::America__Los_Angeles),
    a(972, "TX", US, Tz::America__Chicago),
    a(973, "NJ", US, Tz::America__New_York),
    a(975, "MO", US, Tz::America__Chicago),
    a(978, "MA", US, Tz::America__New_York),
    a(979, "TX", US, Tz::America__Chicago),
    a(980, "NC", US, Tz::America__New_York),
    a(983, "CO", US, Tz::America__Denver),
    a(984, "NC", US, Tz::America__New_York),
    a(985, "LA", US, Tz::America__Chicago),
    a(986, "ID", US, Tz::America__Boise),
    a(989, "MI", US, Tz::America__Detroit),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Area codes whose zone deliberately differs from their region's default
    /// zone, because the area code lies mostly on the other side of a time
    /// zone line (see the module docs). Anything not listed here must use its
    /// region's default.
    const SPLIT_ZONE_EXCEPTIONS: &[(u16, Tz)] = &[
        // Northwest Indiana (Gary, Hammond): Chicago metro, Central time.
        (219, Tz::America__Chicago),
        // Western Kentucky (Bowling Green, Owensboro, Paducah): Central.
        (270, Tz::America__Chicago),
        (364, Tz::America__Chicago),
        // East Tennessee (Chattanooga, Tri-Cities, Knoxville): Eastern.
        (423, Tz::America__New_York),
        (865, Tz::America__New_York),
        // Florida panhandle: Pensacola/Fort Walton/Panama City (Central)
        // outnumber Tallahassee and the Big Bend (Eastern).
        (448, Tz::America__Chicago),
        (850, Tz::America__Chicago),
        // El Paso and far west Texas: Mountain.
        (915, Tz::America__Denver),
    ];

    fn check(codes: &[&str], region: &str, country: &str, zone: Tz) {
        for code in codes {
            let info = area_info(code).unwrap_or_else(|| panic!("{code} missing"));
            assert_eq!(info.area_code.to_string(), *code);
            assert_eq!(info.region, region, "{code} region");
            assert_eq!(info.country, country, "{code} country");
            assert_eq!(info.time_zone, zone, "{code} zone");
        }
    }

    #[test]
    fn table_is_strictly_sorted_three_digit_codes() {
        for pair in all().windows(2) {
            assert!(
                pair[0].area_code < pair[1].area_code,
                "{} then {}",
                pair[0].area_code,
                pair[1].area_code
            );
        }
        for info in all() {
            assert!((200..=999).contains(&info.area_code), "{}", info.area_code);
            // Every row is reachable through the public lookup.
            assert_eq!(area_info(&info.area_code.to_string()), Some(info));
        }
    }

    #[test]
    fn zones_match_region_defaults_or_listed_exceptions() {
        for info in all() {
            let default = region_time_zone_in(info.country, info.region)
                .unwrap_or_else(|| panic!("{}: unknown region", info.area_code));
            let exception = SPLIT_ZONE_EXCEPTIONS
                .iter()
                .find(|(code, _)| *code == info.area_code);
            match exception {
                Some(&(_, zone)) => {
                    assert_eq!(info.time_zone, zone, "{}", info.area_code);
                    assert_ne!(zone, default, "{}: stale exception", info.area_code);
                }
                None => assert_eq!(info.time_zone, default, "{}", info.area_code),
            }
        }
        for (code, _) in SPLIT_ZONE_EXCEPTIONS {
            assert!(all().iter().any(|i| i.area_code == *code), "{code}");
        }
    }

    #[test]
    fn every_region_is_known_and_countries_are_consistent() {
        for info in all() {
            assert!(
                REGIONS
                    .iter()
                    .any(|r| r.region == info.region && r.country == info.country),
                "{}: unknown region {}/{}",
                info.area_code,
                info.country,
                info.region
            );
            match info.country {
                US | CA => {}
                other => assert_eq!(info.region, other, "{}", info.area_code),
            }
        }
        // No (country, region) pair is listed twice.
        for (i, a) in REGIONS.iter().enumerate() {
            for b in &REGIONS[i + 1..] {
                assert!(
                    !(a.region == b.region && a.country == b.country),
                    "{}",
                    a.region
                );
            }
        }
        // Every region except those sharing another's NPAs has an area code.
        for region in REGIONS {
            if matches!(region.region, "PE" | "NT" | "NU") {
                continue;
            }
            assert!(
                all()
                    .iter()
                    .any(|i| i.region == region.region && i.country == region.country),
                "{}/{} has no area code",
                region.country,
                region.region
            );
        }
    }

    #[test]
    fn counts_by_country() {
        let us = all().iter().filter(|i| i.country == US).count();
        let ca = all().iter().filter(|i| i.country == CA).count();
        assert!(us >= 330, "{us} US entries");
        assert!(ca >= 40, "{ca} Canadian entries");
        let states = REGIONS.iter().filter(|r| r.country == US).count();
        assert_eq!(states, 56, "50 states + DC + 5 territories");
    }

    #[test]
    fn spot_checks_us() {
        let ny = Tz::America__New_York;
        let chi = Tz::America__Chicago;
        let la = Tz::America__Los_Angeles;
        check(
            &["212", "646", "917", "332", "718", "347", "929"],
            "NY",
            US,
            ny,
        );
        check(
            &[
                "312", "773", "872", "630", "708", "847", "224", "815", "779",
            ],
            "IL",
            US,
            chi,
        );
        check(
            &[
                "213", "310", "323", "424", "818", "747", "626", "562", "714", "949", "415", "628",
                "408", "669", "650", "510", "341", "916", "279",
            ],
            "CA",
            US,
            la,
        );
        check(
            &[
                "305", "786", "954", "754", "407", "321", "689", "813", "656",
            ],
            "FL",
            US,
            ny,
        );
        check(&["850", "448"], "FL", US, chi);
        check(
            &["602", "480", "520", "623", "928"],
            "AZ",
            US,
            Tz::America__Phoenix,
        );
        check(&["808"], "HI", US, Tz::Pacific__Honolulu);
        check(&["907"], "AK", US, Tz::America__Anchorage);
        check(&["202", "771"], "DC", US, ny);
        check(&["787", "939"], "PR", US, Tz::America__Puerto_Rico);
        check(&["340"], "VI", US, Tz::America__St_Thomas);
        check(&["671"], "GU", US, Tz::Pacific__Guam);
        check(&["670"], "MP", US, Tz::Pacific__Saipan);
        check(&["684"], "AS", US, Tz::Pacific__Pago_Pago);
        // Texas.
        check(&["214", "469", "972", "945"], "TX", US, chi);
        check(&["713", "281", "832", "346"], "TX", US, chi);
        check(&["512", "737", "210", "726"], "TX", US, chi);
        check(&["915"], "TX", US, Tz::America__Denver);
        // Indiana.
        check(
            &["317", "463", "260", "574", "765", "812", "930"],
            "IN",
            US,
            Tz::America__Indiana__Indianapolis,
        );
        check(&["219"], "IN", US, chi);
        // Kentucky and Tennessee.
        check(&["270", "364"], "KY", US, chi);
        check(&["502", "859", "606"], "KY", US, ny);
        check(&["901", "731", "615", "629", "931"], "TN", US, chi);
        check(&["865", "423"], "TN", US, ny);
        // Michigan, including the Upper Peninsula.
        check(
            &["313", "248", "906", "679"],
            "MI",
            US,
            Tz::America__Detroit,
        );
        // Plains and mountain states.
        check(&["308", "402", "531"], "NE", US, chi);
        check(&["620", "785", "316", "913"], "KS", US, chi);
        check(&["701"], "ND", US, chi);
        check(&["605"], "SD", US, chi);
        check(&["541", "458", "503", "971"], "OR", US, la);
        check(&["208", "986"], "ID", US, Tz::America__Boise);
        check(&["775", "702", "725"], "NV", US, la);
        // Recent overlays.
        check(&["326", "283", "380", "436"], "OH", US, ny);
        check(&["472", "743"], "NC", US, ny);
        check(&["557", "235", "975"], "MO", US, chi);
        check(&["582", "835", "445", "878"], "PA", US, ny);
        check(&["640"], "NJ", US, ny);
        check(&["645", "728", "324"], "FL", US, ny);
        check(&["659", "938"], "AL", US, chi);
        check(&["680", "363", "624", "838", "329"], "NY", US, ny);
        check(&["826", "686", "948"], "VA", US, ny);
        check(&["839", "821", "854"], "SC", US, ny);
        check(&["861", "447", "464", "730"], "IL", US, chi);
        check(&["943", "470"], "GA", US, ny);
        check(&["983", "748"], "CO", US, Tz::America__Denver);
        check(&["572"], "OK", US, chi);
        check(&["327"], "AR", US, chi);
        check(&["353", "274"], "WI", US, chi);
        check(&["227"], "MD", US, ny);
    }

    #[test]
    fn spot_checks_canada() {
        let toronto = Tz::America__Toronto;
        check(
            &[
                "416", "647", "437", "905", "289", "365", "742", "942", "807",
            ],
            "ON",
            CA,
            toronto,
        );
        check(
            &[
                "514", "438", "450", "579", "418", "581", "367", "819", "873", "468", "354", "263",
            ],
            "QC",
            CA,
            toronto,
        );
        check(
            &["604", "778", "236", "250", "672", "257"],
            "BC",
            CA,
            Tz::America__Vancouver,
        );
        check(
            &["403", "587", "780", "825", "368"],
            "AB",
            CA,
            Tz::America__Edmonton,
        );
        check(&["306", "639", "474"], "SK", CA, Tz::America__Regina);
        check(&["204", "431", "584"], "MB", CA, Tz::America__Winnipeg);
        check(&["902", "782"], "NS", CA, Tz::America__Halifax);
        check(&["506", "428"], "NB", CA, Tz::America__Moncton);
        check(&["709", "879"], "NL", CA, Tz::America__St_Johns);
        check(&["867"], "YT", CA, Tz::America__Whitehorse);
    }

    #[test]
    fn spot_checks_caribbean() {
        check(&["876", "658"], "JM", "JM", Tz::America__Jamaica);
        check(&["242"], "BS", "BS", Tz::America__Nassau);
        check(
            &["809", "829", "849"],
            "DO",
            "DO",
            Tz::America__Santo_Domingo,
        );
        check(&["345"], "KY", "KY", Tz::America__Cayman);
        check(&["664"], "MS", "MS", Tz::America__Montserrat);
        check(&["441"], "BM", "BM", Tz::Atlantic__Bermuda);
        check(&["868"], "TT", "TT", Tz::America__Port_of_Spain);
    }

    #[test]
    fn non_geographic_codes_have_no_location() {
        let toll_free = ["800", "833", "844", "855", "866", "877", "888"];
        for code in toll_free {
            assert_eq!(area_info(code), None, "{code}");
            assert!(is_toll_free(code), "{code}");
        }
        let other = [
            "500", "521", "522", "523", "524", "525", "526", "527", "528", "529", "533", "544",
            "566", "577", "588", "600", "622", "700", "710", "900", "211", "311", "411", "911",
            "555", "950", "958",
        ];
        for code in other {
            assert_eq!(area_info(code), None, "{code}");
            assert!(!is_toll_free(code), "{code}");
        }
        for code in ["312", "8000", "80", "", "8OO", "822"] {
            assert!(!is_toll_free(code), "{code}");
        }
    }

    #[test]
    fn garbage_input_is_none() {
        for input in [
            "",
            "3",
            "31",
            "3125",
            "abc",
            "012",
            "000",
            "199",
            " 312",
            "312 ",
            "+13",
            "3 2",
            "３１２",
            "31\u{0}",
            "-12",
        ] {
            assert_eq!(area_info(input), None, "{input:?}");
        }
    }

    #[test]
    fn region_functions() {
        assert_eq!(region_time_zone("IL"), Some(Tz::America__Chicago));
        assert_eq!(region_time_zone("AZ"), Some(Tz::America__Phoenix));
        assert_eq!(
            region_time_zone("IN"),
            Some(Tz::America__Indiana__Indianapolis)
        );
        assert_eq!(region_time_zone("HI"), Some(Tz::Pacific__Honolulu));
        assert_eq!(region_time_zone("il"), Some(Tz::America__Chicago));
        assert_eq!(region_time_zone("ON"), Some(Tz::America__Toronto));
        assert_eq!(region_time_zone("NU"), Some(Tz::America__Iqaluit));
        assert_eq!(region_time_zone("JM"), Some(Tz::America__Jamaica));
        assert_eq!(region_time_zone("XX"), None);
        assert_eq!(region_time_zone(""), None);
        // Colliding codes: region-only means the US state.
        assert_eq!(region_time_zone("KY"), Some(Tz::America__New_York));
        assert_eq!(region_time_zone("MS"), Some(Tz::America__Chicago));
        assert_eq!(region_time_zone_in("KY", "KY"), Some(Tz::America__Cayman));
        assert_eq!(region_time_zone_in("US", "KY"), Some(Tz::America__New_York));
        assert_eq!(region_time_zone_in("CA", "IL"), None);

        for region in ["IL", "DC", "PR", "VI", "GU", "MP", "AS", "ky", "MS"] {
            assert!(is_us_state_or_territory(region), "{region}");
        }
        for region in ["ON", "QC", "JM", "DO", "BS", "", "XX", "USA"] {
            assert!(!is_us_state_or_territory(region), "{region}");
        }
    }
}
