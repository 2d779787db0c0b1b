//! The catalog document: publishers, campaigns (with IVR trees), tracking
//! numbers, buyers and their destinations, as an operator writes them in a
//! TOML or YAML file kept in git.
//!
//! These types are the one description of the catalog. `catalog apply`
//! parses a file into them, the database rows are read back into them, and
//! `catalog export` writes them out again, so `apply(export())` compares
//! equal and changes nothing. [`CatalogDoc::validate`] checks everything a
//! type cannot (references, dial targets, time zones, IVR shape) and names
//! the entry and field of every problem; it is what turns a document into
//! the runtime [`Snapshot`](super::Snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dial::{DialTargetSpec, PromptName};
use super::ivr::IvrSpec;
use super::schedule::{HoursSpec, HoursSpecExt};
use super::targeting::TargetingSpec;
use crate::money::Cents;

/// A whole catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<PublisherSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<CampaignSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<NumberSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buyers: Vec<BuyerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocklist: Vec<BlockSpec>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_true(value: &bool) -> bool {
    *value
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherSpec {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<PayoutSpec>,
    /// Minimum price for this publisher's calls (on top of the campaign floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<Cents>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_url: Option<String>,
}

/// How a publisher is paid for a payable call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutSpec {
    /// A fixed amount per payable call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Cents>,
    /// A share of the call's revenue, in percent (`40`, `42.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_percent: Option<Percent>,
    /// Talk time the publisher's call needs to be paid; defaults to the
    /// campaign's minimum talk time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_talk_secs: Option<u32>,
}

/// A percentage held exactly as basis points (42.5 % = 4250).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(pub u32);

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        if frac == 0 {
            serializer.serialize_str(&whole.to_string())
        } else if frac.is_multiple_of(10) {
            serializer.serialize_str(&format!("{whole}.{}", frac / 10))
        } else {
            serializer.serialize_str(&format!("{whole}.{frac:02}"))
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u32),
            Float(f64),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => format!("{f}"),
        };
        // Percent has the same grammar as money with two decimals.
        let cents: Cents = text.parse().map_err(serde::de::Error::custom)?;
        if !(0..=10_000).contains(&cents.0) {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a percentage between 0 and 100"
            )));
        }
        Ok(Percent(cents.0 as u32))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuctionType {
    #[default]
    FirstPrice,
    SecondPrice,
}

impl AuctionType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuctionType::FirstPrice => "first_price",
            AuctionType::SecondPrice => "second_price",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// Highest price first.
    #[default]
    Price,
    /// Highest price × measured answer rate × payable rate first.
    ExpectedValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateAction {
    /// Send the repeat caller to the buyer who had them before.
    RoutePrevious,
    /// Route normally but mark the call not payable.
    NotPayable,
    /// Send the repeat caller to the backup line.
    Backup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateRule {
    pub window_secs: u32,
    pub action: DuplicateAction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidExpiryAction {
    /// A bid that expired while earlier destinations rang is skipped.
    #[default]
    Skip,
    /// The auction is run again for the buyers not yet tried.
    Rerun,
}

fn usd() -> String {
    "USD".to_string()
}

fn default_min_talk() -> u32 {
    60
}

fn default_increment() -> Cents {
    Cents(1)
}

fn is_usd(c: &String) -> bool {
    c == "USD"
}

fn is_default_min_talk(v: &u32) -> bool {
    *v == 60
}

fn is_default_increment(v: &Cents) -> bool {
    *v == Cents(1)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub id: String,
    pub name: String,
    /// What is being sold, e.g. `insurance.auto`. Buyers may target it.
    pub vertical: String,
    #[serde(default = "usd", skip_serializing_if = "is_usd")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub floor: Cents,
    /// Auction deadline; the daemon's `auction.default_deadline_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auction_deadline_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auction_type: AuctionType,
    /// Second price: the winner pays the next bid (or the floor) plus this.
    #[serde(
        default = "default_increment",
        skip_serializing_if = "is_default_increment"
    )]
    pub second_price_increment: Cents,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ranking: Ranking,
    /// A lower tier outranks a higher tier only when it bids this much more.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tier_margin: Cents,
    /// Talk time a call needs to be payable, unless the winning bid says otherwise.
    #[serde(
        default = "default_min_talk",
        skip_serializing_if = "is_default_min_talk"
    )]
    pub min_talk_secs: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub recording: bool,
    /// Where calls go when no buyer takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<DialTargetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<DuplicateRule>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub bid_expiry: BidExpiryAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ivr: Option<IvrSpec>,
    /// Publisher payout for this campaign's calls (overrides the publisher's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<PayoutSpec>,
    /// IVR consent step (docs/compliance.md): this prompt is played after
    /// the IVR tree unless the publisher already sent consent evidence;
    /// pressing `consent_key` is recorded as consent (prompt, key, time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_prompt: Option<PromptName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_key: Option<String>,
    /// Without consent on record, no caller data leaves the daemon: see
    /// `without_consent`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub require_consent: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub without_consent: WithoutConsent,
    /// A key that, at any IVR node or the consent prompt, puts the caller
    /// on the do-not-call list and ends the call ("press 9 to never be
    /// called again").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_key: Option<String>,
    /// Played after an opt-out, before hanging up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_prompt: Option<PromptName>,
    /// Days a call's caller number is kept; then `bidbridge purge` replaces
    /// it by a keyed hash. Absent: kept for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Days a call's recording is kept; then the purge deletes the file.
    /// Absent: kept for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_retention_days: Option<u32>,
    /// STIR/SHAKEN: the weakest attestation accepted (`"A"`, `"B"`, `"C"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_attestation: Option<crate::attestation::RequiredAttestation>,
    /// What happens to a call below `require_attestation`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unattested: crate::attestation::UnattestedAction,
    /// Sources tripping a fraud signal get their offending numbers blocked.
    #[serde(default, skip_serializing_if = "is_default")]
    pub fraud_auto_block: bool,
}

/// What a `require_consent` campaign does with a call that has no consent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithoutConsent {
    /// No pings at all: straight to the backup line.
    #[default]
    Backup,
    /// Only static-price destinations (no ping leaves the daemon).
    StaticOnly,
}

/// A single DTMF key: `0`-`9`, `*` or `#`.
fn is_dtmf_key(key: &str) -> bool {
    key.len() == 1
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberSpec {
    /// The tracking number in E.164 form.
    pub number: String,
    pub campaign: String,
    pub publisher: String,
    /// Traffic source label (passed to buyers, used in reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// Call caps, counted per the rules in docs/caps.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Live bridged calls at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_per_day: Option<Cents>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_per_month: Option<Cents>,
}

/// URLs the daemon calls after the auction (see docs/buyer-protocol.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_url: Option<String>,
    /// Called when one of this buyer's calls becomes payable or converts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_url: Option<String>,
}

fn utc() -> String {
    "UTC".to_string()
}

fn is_utc(tz: &String) -> bool {
    tz == "UTC"
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerSpec {
    pub id: String,
    pub name: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// May learn the caller's full number (after winning, or in pings when consent exists).
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_caller_number: bool,
    /// Time zone that defines the buyer's cap days and months.
    #[serde(default = "utc", skip_serializing_if = "is_utc")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub caps: CapsSpec,
    #[serde(default, skip_serializing_if = "is_default")]
    pub notices: NoticesSpec,
    /// SHA-256 (hex) of the token the buyer uses on /v1/conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingDialect {
    /// bidbridge's own OpenRTB-style protocol.
    #[default]
    Native,
    /// Ringba RTB compatible request/response.
    Ringba,
}

impl PingDialect {
    pub fn as_str(self) -> &'static str {
        match self {
            PingDialect::Native => "native",
            PingDialect::Ringba => "ringba",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub dialect: PingDialect,
    /// Header carrying the buyer's credential, e.g. `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_value: Option<String>,
    /// At most this many pings per second to this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<u32>,
}

fn default_ring_timeout() -> u32 {
    20
}

fn is_default_ring_timeout(v: &u32) -> bool {
    *v == 20
}

fn one() -> u8 {
    1
}

fn is_one(v: &u8) -> bool {
    *v == 1
}

fn hundred() -> u32 {
    100
}

fn is_hundred(v: &u32) -> bool {
    *v == 100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub id: String,
    /// Campaigns this destination takes calls for.
    pub campaigns: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Real-time bidding endpoint; give this or `static_price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_price: Option<Cents>,
    /// The buyer's phone: `{ number, gateway }`, `{ sip }` or `{ extension, context }`.
    pub dial: DialTargetSpec,
    #[serde(
        default = "default_ring_timeout",
        skip_serializing_if = "is_default_ring_timeout"
    )]
    pub ring_timeout_secs: u32,
    /// Higher tiers win over lower ones (see the campaign's `tier_margin`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub tier: u8,
    /// Share of calls among equal bids in the same tier.
    #[serde(default = "hundred", skip_serializing_if = "is_hundred")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_talk_secs: Option<u32>,
    #[serde(default = "utc", skip_serializing_if = "is_utc")]
    pub timezone: String,
    /// Weekly opening hours in `timezone`; absent means always open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursSpec>,
    /// Dates (in `timezone`) the destination is closed all day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed_dates: Vec<chrono::NaiveDate>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub caps: CapsSpec,
    #[serde(default, skip_serializing_if = "is_default")]
    pub targeting: TargetingSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    pub number: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One problem in a catalog document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogIssue {
    /// `campaign auto-insurance`, `destination acme-main`, ...
    pub entry: String,
    /// `ivr.nodes[zip].next`, `dial.sip`, ...
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for CatalogIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.entry, self.field, self.message)
    }
}

/// Why a catalog file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unknown format; name the file .toml, .yaml or .yml")]
    Format { path: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {} problem(s):\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        issues: Vec<CatalogIssue>,
    },
}

/// File formats for `catalog apply` / `catalog export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Toml,
    Yaml,
}

impl DocFormat {
    pub fn from_path(path: &Path) -> Option<DocFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Some(DocFormat::Toml),
            Some("yaml") | Some("yml") => Some(DocFormat::Yaml),
            _ => None,
        }
    }
}

impl CatalogDoc {
    /// Reads and parses a catalog file (not yet validated).
    pub fn read(path: &Path) -> Result<CatalogDoc, CatalogFileError> {
        let shown = path.display().to_string();
        let format = DocFormat::from_path(path).ok_or_else(|| CatalogFileError::Format {
            path: shown.clone(),
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| CatalogFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, format).map_err(|message| CatalogFileError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses document text; the error names the key path.
    pub fn parse(text: &str, format: DocFormat) -> Result<CatalogDoc, String> {
        match format {
            DocFormat::Toml => {
                let value: toml::Value =
                    toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
                serde_path_to_error::deserialize(value)
                    .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))
            }
            DocFormat::Yaml => {
                let deserializer = serde_yaml_ng::Deserializer::from_str(text);
                serde_path_to_error::deserialize(deserializer)
                    .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))
            }
        }
    }

    /// Renders the document in `format`.
    pub fn render(&self, format: DocFormat) -> Result<String, String> {
        match format {
            DocFormat::Toml => toml::to_string_pretty(self).map_err(|e| e.to_string()),
            DocFormat::Yaml => serde_yaml_ng::to_string(self).map_err(|e| e.to_string()),
        }
    }

    /// Sorts every list into a canonical order, so two documents describing
    /// the same catalog compare equal whatever order they were written in.
    pub fn normalize(&mut self) {
        self.publishers.sort_by(|a, b| a.id.cmp(&b.id));
        self.campaigns.sort_by(|a, b| a.id.cmp(&b.id));
        self.numbers.sort_by(|a, b| a.number.cmp(&b.number));
        self.blocklist.sort_by(|a, b| a.number.cmp(&b.number));
        self.buyers.sort_by(|a, b| a.id.cmp(&b.id));
        for buyer in &mut self.buyers {
            buyer.destinations.sort_by(|a, b| a.id.cmp(&b.id));
            for dest in &mut buyer.destinations {
                dest.campaigns.sort();
                dest.campaigns.dedup();
                dest.closed_dates.sort();
                dest.closed_dates.dedup();
                dest.targeting.normalize();
            }
        }
        for campaign in &mut self.campaigns {
            if let Some(ivr) = &mut campaign.ivr {
                ivr.normalize();
            }
        }
    }

    /// Every problem in the document, or none.
    pub fn validate(&self) -> Vec<CatalogIssue> {
        let mut issues = Vec::new();
        let mut push = |entry: String, field: &str, message: String| {
            issues.push(CatalogIssue {
                entry,
                field: field.to_string(),
                message,
            })
        };

        let mut seen = BTreeSet::new();
        for p in &self.publishers {
            let entry = format!("publisher {}", p.id);
            check_slug(&p.id, &entry, &mut push);
            if !seen.insert(("publisher", p.id.clone())) {
                push(entry.clone(), "id", "defined twice".into());
            }
            if p.name.trim().is_empty() {
                push(entry.clone(), "name", "must not be empty".into());
            }
            if let Some(payout) = &p.payout {
                check_payout(payout, &entry, "payout", &mut push);
            }
            if let Some(url) = &p.postback_url {
                check_url_template(url, &entry, "postback_url", &mut push);
            }
        }
        let publisher_ids: BTreeSet<&str> = self.publishers.iter().map(|p| p.id.as_str()).collect();

        for c in &self.campaigns {
            let entry = format!("campaign {}", c.id);
            check_slug(&c.id, &entry, &mut push);
            if !seen.insert(("campaign", c.id.clone())) {
                push(entry.clone(), "id", "defined twice".into());
            }
            if c.name.trim().is_empty() {
                push(entry.clone(), "name", "must not be empty".into());
            }
            if c.vertical.trim().is_empty() {
                push(entry.clone(), "vertical", "must not be empty".into());
            }
            if c.currency.len() != 3 || !c.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                push(
                    entry.clone(),
                    "currency",
                    format!("`{}` is not an ISO 4217 code like USD", c.currency),
                );
            }
            if c.floor.is_negative() {
                push(entry.clone(), "floor", "must not be negative".into());
            }
            if c.tier_margin.is_negative() || c.second_price_increment.is_negative() {
                push(
                    entry.clone(),
                    "tier_margin",
                    "amounts must not be negative".into(),
                );
            }
            if let Some(ms) = c.auction_deadline_ms
                && !(1..=10_000).contains(&ms)
            {
                push(
                    entry.clone(),
                    "auction_deadline_ms",
                    "expected 1 to 10000".into(),
                );
            }
            if let Some(backup) = &c.backup
                && let Err(e) = backup.validate()
            {
                push(entry.clone(), "backup", e.to_string());
            }
            if let Some(d) = &c.duplicate
                && d.window_secs == 0
            {
                push(
                    entry.clone(),
                    "duplicate.window_secs",
                    "must be at least 1".into(),
                );
            }
            if let Some(payout) = &c.payout {
                check_payout(payout, &entry, "payout", &mut push);
            }
            if c.retention_days == Some(0) {
                push(entry.clone(), "retention_days", "must be at least 1".into());
            }
            if c.recording_retention_days == Some(0) {
                push(
                    entry.clone(),
                    "recording_retention_days",
                    "must be at least 1".into(),
                );
            }
            if let Some(ivr) = &c.ivr {
                for (field, message) in ivr.problems() {
                    push(entry.clone(), &format!("ivr.{field}"), message);
                }
            }
            for (field, key) in [
                ("consent_key", &c.consent_key),
                ("opt_out_key", &c.opt_out_key),
            ] {
                if let Some(key) = key
                    && !is_dtmf_key(key)
                {
                    push(entry.clone(), field, "expected one key: 0-9, * or #".into());
                }
            }
            if c.consent_prompt.is_some() != c.consent_key.is_some() {
                push(
                    entry.clone(),
                    "consent_prompt",
                    "consent_prompt and consent_key go together".into(),
                );
            }
            if c.opt_out_prompt.is_some() && c.opt_out_key.is_none() {
                push(entry.clone(), "opt_out_prompt", "needs opt_out_key".into());
            }
            if let Some(key) = &c.opt_out_key {
                if c.consent_key.as_ref() == Some(key) {
                    push(
                        entry.clone(),
                        "opt_out_key",
                        "must differ from consent_key".into(),
                    );
                }
                // The key must mean "opt out" at every node: a menu option
                // on the same key would make it ambiguous.
                for node in c.ivr.iter().flat_map(|ivr| ivr.nodes.iter()) {
                    if node.collect.as_ref().is_some_and(|c| c.digits == 1) {
                        push(
                            entry.clone(),
                            &format!("ivr.nodes[{}].collect.digits", node.id),
                            "a one-digit entry cannot coexist with opt_out_key".into(),
                        );
                    }
                    if node.options.contains_key(key) {
                        push(
                            entry.clone(),
                            &format!("ivr.nodes[{}].options", node.id),
                            format!("key {key} is the campaign's opt_out_key"),
                        );
                    }
                }
            }
        }
        let campaign_ids: BTreeSet<&str> = self.campaigns.iter().map(|c| c.id.as_str()).collect();

        let mut numbers = BTreeSet::new();
        for n in &self.numbers {
            let entry = format!("number {}", n.number);
            if crate::phone::E164::parse_strict(&n.number).is_err() {
                push(
                    entry.clone(),
                    "number",
                    "expected E.164, e.g. +18005550100".into(),
                );
            }
            if !numbers.insert(n.number.clone()) {
                push(entry.clone(), "number", "listed twice".into());
            }
            if !campaign_ids.contains(n.campaign.as_str()) {
                push(
                    entry.clone(),
                    "campaign",
                    format!("no campaign `{}` in the catalog", n.campaign),
                );
            }
            if !publisher_ids.contains(n.publisher.as_str()) {
                push(
                    entry.clone(),
                    "publisher",
                    format!("no publisher `{}` in the catalog", n.publisher),
                );
            }
            if n.source.len() > 64 || n.source.chars().any(|c| c.is_control()) {
                push(
                    entry.clone(),
                    "source",
                    "at most 64 printable characters".into(),
                );
            }
        }

        for b in &self.buyers {
            let entry = format!("buyer {}", b.id);
            check_slug(&b.id, &entry, &mut push);
            if !seen.insert(("buyer", b.id.clone())) {
                push(entry.clone(), "id", "defined twice".into());
            }
            if b.name.trim().is_empty() {
                push(entry.clone(), "name", "must not be empty".into());
            }
            if b.timezone.parse::<chrono_tz::Tz>().is_err() {
                push(
                    entry.clone(),
                    "timezone",
                    format!(
                        "`{}` is not an IANA time zone like America/Chicago",
                        b.timezone
                    ),
                );
            }
            check_caps(&b.caps, &entry, &mut push);
            for (field, url) in [
                ("notices.win_url", &b.notices.win_url),
                ("notices.loss_url", &b.notices.loss_url),
                ("notices.billing_url", &b.notices.billing_url),
                ("notices.postback_url", &b.notices.postback_url),
            ] {
                if let Some(url) = url {
                    check_url_template(url, &entry, field, &mut push);
                }
            }
            if let Some(hash) = &b.api_token_sha256
                && (hash.len() != 64
                    || !hash
                        .bytes()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
            {
                push(
                    entry.clone(),
                    "api_token_sha256",
                    "expected 64 lower-case hex digits (`bidbridge token hash`)".into(),
                );
            }
            for d in &b.destinations {
                let entry = format!("destination {}", d.id);
                check_slug(&d.id, &entry, &mut push);
                if !seen.insert(("destination", d.id.clone())) {
                    push(entry.clone(), "id", "defined twice".into());
                }
                if d.campaigns.is_empty() {
                    push(
                        entry.clone(),
                        "campaigns",
                        "name at least one campaign".into(),
                    );
                }
                for c in &d.campaigns {
                    if !campaign_ids.contains(c.as_str()) {
                        push(
                            entry.clone(),
                            "campaigns",
                            format!("no campaign `{c}` in the catalog"),
                        );
                    }
                }
                match (&d.ping, &d.static_price) {
                    (Some(_), Some(_)) | (None, None) => push(
                        entry.clone(),
                        "ping",
                        "give exactly one of `ping` or `static_price`".into(),
                    ),
                    (Some(ping), None) => check_ping(ping, &entry, &mut push),
                    (None, Some(price)) => {
                        if price.is_negative() {
                            push(entry.clone(), "static_price", "must not be negative".into());
                        }
                    }
                }
                if let Err(e) = d.dial.validate() {
                    push(entry.clone(), "dial", e.to_string());
                }
                if !(1..=300).contains(&d.ring_timeout_secs) {
                    push(
                        entry.clone(),
                        "ring_timeout_secs",
                        "expected 1 to 300".into(),
                    );
                }
                if !(1..=99).contains(&d.tier) {
                    push(entry.clone(), "tier", "expected 1 to 99".into());
                }
                if !(1..=1_000_000).contains(&d.weight) {
                    push(entry.clone(), "weight", "expected 1 to 1000000".into());
                }
                if d.timezone.parse::<chrono_tz::Tz>().is_err() {
                    push(
                        entry.clone(),
                        "timezone",
                        format!(
                            "`{}` is not an IANA time zone like America/Chicago",
                            d.timezone
                        ),
                    );
                }
                if let Some(hours) = &d.hours {
                    for (field, message) in hours.problems() {
                        push(entry.clone(), &format!("hours.{field}"), message);
                    }
                }
                check_caps(&d.caps, &entry, &mut push);
                for (field, message) in d.targeting.problems() {
                    push(entry.clone(), &format!("targeting.{field}"), message);
                }
            }
        }

        let mut blocked = BTreeSet::new();
        for block in &self.blocklist {
            let entry = format!("blocklist {}", block.number);
            if crate::phone::E164::parse_strict(&block.number).is_err() {
                push(
                    entry.clone(),
                    "number",
                    "expected E.164, e.g. +13125550123".into(),
                );
            }
            if !blocked.insert(block.number.clone()) {
                push(entry, "number", "listed twice".into());
            }
        }
        issues
    }

    /// Ids of everything in the document, by kind, for prune planning.
    pub fn destinations(&self) -> impl Iterator<Item = (&BuyerSpec, &DestinationSpec)> {
        self.buyers
            .iter()
            .flat_map(|b| b.destinations.iter().map(move |d| (b, d)))
    }

    /// Campaigns each destination serves, keyed by campaign.
    pub fn destinations_by_campaign(&self) -> BTreeMap<&str, Vec<&DestinationSpec>> {
        let mut map: BTreeMap<&str, Vec<&DestinationSpec>> = BTreeMap::new();
        for (_, d) in self.destinations() {
            for c in &d.campaigns {
                map.entry(c.as_str()).or_default().push(d);
            }
        }
        map
    }
}

fn check_slug(id: &str, entry: &str, push: &mut impl FnMut(String, &str, String)) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if !ok {
        push(
            entry.to_string(),
            "id",
            "expected lower-case letters, digits, _ . - (1 to 64, starting with a letter or digit)"
                .into(),
        );
    }
}

fn check_payout(
    payout: &PayoutSpec,
    entry: &str,
    field: &str,
    push: &mut impl FnMut(String, &str, String),
) {
    match (&payout.fixed, &payout.share_percent) {
        (Some(_), Some(_)) | (None, None) => push(
            entry.to_string(),
            field,
            "give exactly one of `fixed` or `share_percent`".into(),
        ),
        (Some(amount), None) if amount.is_negative() => push(
            entry.to_string(),
            &format!("{field}.fixed"),
            "must not be negative".into(),
        ),
        _ => {}
    }
}

fn check_caps(caps: &CapsSpec, entry: &str, push: &mut impl FnMut(String, &str, String)) {
    for (field, amount) in [
        ("caps.budget_per_day", &caps.budget_per_day),
        ("caps.budget_per_month", &caps.budget_per_month),
    ] {
        if let Some(amount) = amount
            && amount.is_negative()
        {
            push(entry.to_string(), field, "must not be negative".into());
        }
    }
}

fn check_ping(ping: &PingSpec, entry: &str, push: &mut impl FnMut(String, &str, String)) {
    match reqwest::Url::parse(&ping.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => push(
            entry.to_string(),
            "ping.url",
            format!("`{}` is not an http(s) URL", ping.url),
        ),
    }
    match (&ping.auth_header, &ping.auth_value) {
        (Some(name), Some(value)) => {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                push(
                    entry.to_string(),
                    "ping.auth_header",
                    format!("`{name}` is not a valid HTTP header name"),
                );
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                push(
                    entry.to_string(),
                    "ping.auth_value",
                    "not a valid HTTP header value".into(),
                );
            }
        }
        (None, None) => {}
        _ => push(
            entry.to_string(),
            "ping.auth_header",
            "give both auth_header and auth_value, or neither".into(),
        ),
    }
}

/// Notice and postback URLs may carry `{field}` template fields; check the URL with
/// them filled in.
fn check_url_template(
    url: &str,
    entry: &str,
    field: &str,
    push: &mut impl FnMut(String, &str, String),
) {
    let filled = crate::template::fill_for_validation(url);
    match reqwest::Url::parse(&filled) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
        _ => push(
            entry.to_string(),
            field,
            format!("`{url}` is not an http(s) URL"),
        ),
    }
    if let Err(unknown) = crate::template::check_fields(url) {
        push(
            entry.to_string(),
            field,
            format!("unknown template field {{{unknown}}}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example must stay a valid catalog.
    #[test]
    fn documented_example_is_valid_and_round_trips() {
        let text = include_str!("../../docs/examples/catalog.toml");
        let doc =
            CatalogDoc::parse(text, DocFormat::Toml).expect("docs/examples/catalog.toml parses");
        assert_eq!(
            doc.validate(),
            vec![],
            "docs/examples/catalog.toml has problems"
        );
        let snapshot = super::super::Snapshot::build(&doc).expect("builds");
        assert_eq!(snapshot.numbers.len(), 2);
        assert_eq!(snapshot.destination_count, 3);
        for format in [DocFormat::Toml, DocFormat::Yaml] {
            let mut again = CatalogDoc::parse(&doc.render(format).unwrap(), format).unwrap();
            let mut original = doc.clone();
            again.normalize();
            original.normalize();
            assert_eq!(again, original, "{format:?} round trip");
        }
    }

    #[test]
    fn consent_and_opt_out_keys_are_checked() {
        let base = include_str!("../../docs/examples/catalog.toml");
        let bad = base
            .replace("consent_key = \"1\"", "consent_key = \"12\"")
            .replace("opt_out_key = \"9\"", "opt_out_key = \"2\"");
        let doc = CatalogDoc::parse(&bad, DocFormat::Toml).expect("parses");
        let fields: Vec<String> = doc.validate().into_iter().map(|i| i.field).collect();
        assert!(fields.contains(&"consent_key".to_string()), "{fields:?}");
        // "2" is a menu option of the product node.
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with("ivr.nodes[") && f.ends_with(".options")),
            "{fields:?}"
        );
        let no_key = base.replace("consent_key = \"1\"", "");
        let doc = CatalogDoc::parse(&no_key, DocFormat::Toml).expect("parses");
        assert!(doc.validate().iter().any(|i| i.field == "consent_prompt"));
    }
}
