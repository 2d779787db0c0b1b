//! The buyer wire protocols: what a ping carries and what a bid may say.
//!
//! Two dialects per destination (`ping.dialect` in the catalog):
//! - `native`: bidbridge's own OpenRTB-style JSON, documented field by field
//!   in docs/buyer-protocol.md (with a JSON Schema generated from these
//!   types' documentation and checked by a test);
//! - `ringba`: the request/response shape of Ringba's RTB, so a buyer who
//!   already bids on Ringba can bid here without writing code.
//!
//! Both are decoded into one [`ParsedBid`]; everything a buyer can send is
//! untrusted: a malformed, negative, NaN, sub-cent, wrong-currency or
//! oversized answer is a no-bid with the reason recorded, never a panic.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::dial::{DialTarget, DialTargetSpec};
use crate::catalog::spec::{AuctionType, PingDialect};
use crate::money::Cents;

/// The call data a ping carries. Anonymised: no caller number or name
/// unless the buyer is allowed it (see [`CallerData::number`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerData {
    /// The caller's NANP area code (`312`), if the number is NANP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    /// Two-letter state or province derived from the area code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// ZIP code the caller entered in the IVR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    /// The caller's local time (RFC 3339 with offset), from the area code's time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    /// SHA-256 of the caller's E.164 number salted per buyer: lets a buyer
    /// recognise a repeat caller without learning the number, and cannot be
    /// joined across buyers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_hash: Option<String>,
    /// The caller's E.164 number: only for buyers allowed it, and only when
    /// the caller's consent is on record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

/// The names of the caller fields a ping in `dialect` carries (for the
/// sharing log): `area_code`, `state`, `zip`, `local_time`, `number_hash`,
/// `number`, `source` and `tag.<name>` per IVR answer.
pub fn shared_fields(dialect: PingDialect, ctx: &PingContext<'_>) -> Vec<String> {
    let c = &ctx.caller;
    let mut out: Vec<String> = Vec::new();
    let mut add = |present: bool, name: &str| {
        if present {
            out.push(name.to_string());
        }
    };
    add(c.area_code.is_some(), "area_code");
    add(c.state.is_some(), "state");
    add(c.zip.is_some(), "zip");
    add(
        c.local_time.is_some() && dialect == PingDialect::Native,
        "local_time",
    );
    add(c.number_hash.is_some(), "number_hash");
    add(c.number.is_some(), "number");
    add(true, "source");
    out.extend(ctx.tags.keys().map(|k| format!("tag.{k}")));
    out
}

/// Native ping request body (`POST` to the destination's `ping.url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeRequest {
    /// Unique id of this ping; echo it back as `ping_id` if you like.
    pub id: String,
    /// bidbridge's id for the call (stable across all pings and notices).
    pub call_id: String,
    /// Milliseconds you have to answer, measured from when the ping was sent.
    pub tmax: u64,
    pub auction: AuctionTerms,
    pub campaign: CampaignData,
    /// Traffic source label of the tracking number.
    pub source: String,
    pub caller: CallerData,
    /// Answers from the IVR (`product=auto`, `zip=60601`).
    pub tags: BTreeMap<String, String>,
    /// True for simulated calls: bid as usual, nobody will be connected.
    pub test: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuctionTerms {
    /// `first_price` (you pay your bid) or `second_price` (you pay the next
    /// bid or the floor, plus the increment, never more than your bid).
    #[serde(rename = "type")]
    pub kind: AuctionType,
    /// Minimum acceptable bid, in major units (dollars).
    pub floor: f64,
    /// ISO 4217 currency of every amount.
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignData {
    pub id: String,
    pub vertical: String,
}

/// Native response body (HTTP 200). HTTP 204, or `{"bid": null}`, is a no-bid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeResponse {
    pub bid: Option<NativeBid>,
    /// Why you did not bid (recorded, shown in reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeBid {
    /// Price per payable call in major units (12.5 = $12.50); at most 2 decimals.
    pub price: f64,
    /// Must equal the request's currency when given.
    #[serde(default)]
    pub currency: Option<String>,
    /// Your id for this bid; sent back in notices as `{bid_id}`.
    #[serde(default)]
    pub bid_id: Option<String>,
    /// Talk time the call needs to be payable; defaults to the destination's
    /// or campaign's.
    #[serde(default)]
    pub min_talk_secs: Option<u32>,
    /// Where to send the call instead of your configured destination.
    #[serde(default)]
    pub destination: Option<DestinationOverride>,
    /// Seconds the bid stays valid (the call may ring other buyers first).
    #[serde(default)]
    pub expires_in_secs: Option<u32>,
    /// Win notice URL (called when your phone is connected).
    #[serde(default)]
    pub nurl: Option<String>,
    /// Billing notice URL (called when the call became payable).
    #[serde(default)]
    pub burl: Option<String>,
    /// Loss notice URL (called when another buyer got the call).
    #[serde(default)]
    pub lurl: Option<String>,
}

/// A phone number (sent through the destination's own gateway) or a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationOverride {
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub sip: Option<String>,
}

/// Ringba-compatible request: the call's data as flat tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingbaRequest {
    pub call_id: String,
    /// Caller number without `+` (only for buyers allowed it, with consent).
    #[serde(rename = "CID", skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_hash: Option<String>,
    pub publisher_sub_id: String,
    pub vertical: String,
    pub campaign_id: String,
    /// `tag:Name` style flattening of the IVR answers.
    pub tags: BTreeMap<String, String>,
    pub min_bid: f64,
    pub currency: String,
}

/// Ringba-compatible response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingbaResponse {
    #[serde(default)]
    pub bid_id: Option<String>,
    #[serde(default)]
    pub bid_amount: Option<f64>,
    #[serde(default)]
    pub expire_in_seconds: Option<u32>,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub phone_number_no_plus: Option<String>,
    #[serde(default)]
    pub sip_address: Option<String>,
    #[serde(default)]
    pub reject_reason: Option<String>,
}

/// A usable bid, whatever the dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBid {
    pub price: Cents,
    pub bid_id: Option<String>,
    pub min_talk_secs: Option<u32>,
    pub destination: Option<DialTarget>,
    pub expires_at: Option<DateTime<Utc>>,
    pub win_url: Option<String>,
    pub billing_url: Option<String>,
    pub loss_url: Option<String>,
}

/// Why an answer is not a bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotABid {
    /// The buyer declined; the reason they gave, if any.
    Declined(Option<String>),
    /// The answer broke the protocol; what was wrong.
    Invalid(String),
}

/// Everything the daemon knows about the call that a ping may carry.
#[derive(Debug, Clone)]
pub struct PingContext<'a> {
    pub ping_id: String,
    pub call_id: &'a str,
    pub tmax_ms: u64,
    pub auction_type: AuctionType,
    pub floor: Cents,
    pub currency: &'a str,
    pub campaign_id: &'a str,
    pub vertical: &'a str,
    pub source: &'a str,
    pub caller: CallerData,
    pub tags: &'a BTreeMap<String, String>,
    pub test: bool,
}

/// The request body for `dialect`.
pub fn request_body(dialect: PingDialect, ctx: &PingContext<'_>) -> Vec<u8> {
    let body = match dialect {
        PingDialect::Native => serde_json::to_vec(&NativeRequest {
            id: ctx.ping_id.clone(),
            call_id: ctx.call_id.to_string(),
            tmax: ctx.tmax_ms,
            auction: AuctionTerms {
                kind: ctx.auction_type,
                floor: ctx.floor.as_major_f64(),
                currency: ctx.currency.to_string(),
            },
            campaign: CampaignData {
                id: ctx.campaign_id.to_string(),
                vertical: ctx.vertical.to_string(),
            },
            source: ctx.source.to_string(),
            caller: ctx.caller.clone(),
            tags: ctx.tags.clone(),
            test: ctx.test,
        }),
        PingDialect::Ringba => serde_json::to_vec(&RingbaRequest {
            call_id: ctx.call_id.to_string(),
            cid: ctx
                .caller
                .number
                .as_ref()
                .map(|n| n.trim_start_matches('+').to_string()),
            zipcode: ctx.caller.zip.clone(),
            state: ctx.caller.state.clone(),
            area_code: ctx.caller.area_code.clone(),
            caller_hash: ctx.caller.number_hash.clone(),
            publisher_sub_id: ctx.source.to_string(),
            vertical: ctx.vertical.to_string(),
            campaign_id: ctx.campaign_id.to_string(),
            tags: ctx.tags.clone(),
            min_bid: ctx.floor.as_major_f64(),
            currency: ctx.currency.to_string(),
        }),
    };
    // Serialising these plain structs cannot fail; an empty body would be
    // refused by the buyer and recorded as an error.
    body.unwrap_or_default()
}

/// Decodes a buyer's answer. `fallback` is the destination's configured
/// dial target (a number override goes out through its gateway).
pub fn parse_response(
    dialect: PingDialect,
    status: u16,
    body: &[u8],
    currency: &str,
    fallback: &DialTarget,
    now: DateTime<Utc>,
) -> Result<ParsedBid, NotABid> {
    if status == 204 {
        return Err(NotABid::Declined(None));
    }
    if !(200..300).contains(&status) {
        return Err(NotABid::Invalid(format!("HTTP {status}")));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(NotABid::Invalid("empty body".into()));
    }
    match dialect {
        PingDialect::Native => parse_native(body, currency, fallback, now),
        PingDialect::Ringba => parse_ringba(body, fallback, now),
    }
}

fn short(error: serde_json::Error) -> String {
    let text = error.to_string();
    text.chars().take(160).collect()
}

fn parse_native(
    body: &[u8],
    currency: &str,
    fallback: &DialTarget,
    now: DateTime<Utc>,
) -> Result<ParsedBid, NotABid> {
    let response: NativeResponse = serde_json::from_slice(body)
        .map_err(|e| NotABid::Invalid(format!("malformed JSON: {}", short(e))))?;
    let Some(bid) = response.bid else {
        return Err(NotABid::Declined(
            response.reason.map(|r| r.chars().take(200).collect()),
        ));
    };
    if let Some(c) = &bid.currency
        && c != currency
    {
        return Err(NotABid::Invalid(format!(
            "currency {c}, expected {currency}"
        )));
    }
    let price = price(bid.price)?;
    let destination = match bid.destination {
        Some(over) => Some(destination_override(
            over.number.as_deref(),
            over.sip.as_deref(),
            fallback,
        )?),
        None => None,
    };
    Ok(ParsedBid {
        price,
        bid_id: clean_id(bid.bid_id)?,
        min_talk_secs: bid.min_talk_secs.filter(|s| *s <= 24 * 3600),
        destination,
        expires_at: bid
            .expires_in_secs
            .map(|s| now + Duration::seconds(i64::from(s))),
        win_url: url(bid.nurl)?,
        billing_url: url(bid.burl)?,
        loss_url: url(bid.lurl)?,
    })
}

fn parse_ringba(
    body: &[u8],
    fallback: &DialTarget,
    now: DateTime<Utc>,
) -> Result<ParsedBid, NotABid> {
    let response: RingbaResponse = serde_json::from_slice(body)
        .map_err(|e| NotABid::Invalid(format!("malformed JSON: {}", short(e))))?;
    if let Some(reason) = response.reject_reason.filter(|r| !r.is_empty()) {
        return Err(NotABid::Declined(Some(reason.chars().take(200).collect())));
    }
    let Some(amount) = response.bid_amount else {
        return Err(NotABid::Declined(None));
    };
    if amount == 0.0 {
        return Err(NotABid::Declined(Some("bidAmount 0".into())));
    }
    let price = price(amount)?;
    let number = response
        .phone_number
        .or_else(|| response.phone_number_no_plus.map(|n| format!("+{n}")));
    let destination = match (number.as_deref(), response.sip_address.as_deref()) {
        (None, None) => None,
        (n, s) => Some(destination_override(
            n,
            s.filter(|s| !s.is_empty()),
            fallback,
        )?),
    };
    Ok(ParsedBid {
        price,
        bid_id: clean_id(response.bid_id)?,
        min_talk_secs: None,
        destination,
        expires_at: response
            .expire_in_seconds
            .map(|s| now + Duration::seconds(i64::from(s))),
        win_url: None,
        billing_url: None,
        loss_url: None,
    })
}

fn price(value: f64) -> Result<Cents, NotABid> {
    if value.is_nan() || value.is_infinite() {
        return Err(NotABid::Invalid("price is not a number".into()));
    }
    if value < 0.0 {
        return Err(NotABid::Invalid(format!("negative price {value}")));
    }
    Cents::from_decimal_f64(value)
        .ok_or_else(|| NotABid::Invalid(format!("price {value} is not a whole number of cents")))
}

/// Bid ids come back in notices; keep them printable and short.
fn clean_id(id: Option<String>) -> Result<Option<String>, NotABid> {
    match id {
        Some(id) if id.len() > 128 || id.chars().any(|c| c.is_control()) => Err(NotABid::Invalid(
            "bid_id longer than 128 characters or not printable".into(),
        )),
        other => Ok(other),
    }
}

fn url(url: Option<String>) -> Result<Option<String>, NotABid> {
    match url {
        None => Ok(None),
        Some(u) => match reqwest::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && u.len() <= 2048 => {
                Ok(Some(u))
            }
            _ => Err(NotABid::Invalid("notice URL is not an http(s) URL".into())),
        },
    }
}

fn destination_override(
    number: Option<&str>,
    sip: Option<&str>,
    fallback: &DialTarget,
) -> Result<DialTarget, NotABid> {
    let spec = match (number, sip) {
        (Some(number), None) => {
            let DialTarget::Gateway { gateway, .. } = fallback else {
                return Err(NotABid::Invalid(
                    "a number override needs a destination dialled through a gateway".into(),
                ));
            };
            DialTargetSpec {
                number: Some(number.to_string()),
                gateway: Some(gateway.to_string()),
                ..Default::default()
            }
        }
        (None, Some(sip)) => DialTargetSpec {
            sip: Some(sip.to_string()),
            ..Default::default()
        },
        _ => {
            return Err(NotABid::Invalid(
                "destination must give exactly one of number or sip".into(),
            ));
        }
    };
    spec.validate()
        .map_err(|e| NotABid::Invalid(format!("destination: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> DialTarget {
        DialTarget::from_parts(Some("+13125550100"), Some("carrier1"), None, None, None).unwrap()
    }

    fn native(body: &str) -> Result<ParsedBid, NotABid> {
        parse_response(
            PingDialect::Native,
            200,
            body.as_bytes(),
            "USD",
            &gw(),
            Utc::now(),
        )
    }

    #[test]
    fn native_bids_and_no_bids() {
        let bid = native(
            r#"{"bid":{"price":12.5,"bid_id":"b-1","min_talk_secs":90,"expires_in_secs":30}}"#,
        )
        .unwrap();
        assert_eq!(bid.price, Cents(1250));
        assert_eq!(bid.min_talk_secs, Some(90));
        assert!(bid.expires_at.is_some());
        assert_eq!(
            native(r#"{"bid":null,"reason":"closed"}"#),
            Err(NotABid::Declined(Some("closed".into())))
        );
        assert_eq!(
            parse_response(PingDialect::Native, 204, b"", "USD", &gw(), Utc::now()),
            Err(NotABid::Declined(None))
        );
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for body in [
            "not json",
            r#"{"bid":{"price":-1}}"#,
            r#"{"bid":{"price":"12"}}"#,
            r#"{"bid":{"price":12.345}}"#,
            r#"{"bid":{"price":1e400}}"#,
            r#"{"bid":{"price":12,"currency":"EUR"}}"#,
            r#"{"bid":{"price":12,"destination":{"sip":"sip:a@b\nx"}}}"#,
            r#"{"bid":{"price":12,"nurl":"javascript:alert(1)"}}"#,
            "[]",
            "",
        ] {
            assert!(matches!(native(body), Err(NotABid::Invalid(_))), "{body}");
        }
        assert!(matches!(
            parse_response(PingDialect::Native, 500, b"oops", "USD", &gw(), Utc::now()),
            Err(NotABid::Invalid(m)) if m == "HTTP 500"
        ));
    }

    #[test]
    fn overrides_go_through_the_destination_gateway() {
        let bid =
            native(r#"{"bid":{"price":10,"destination":{"number":"+13125550999"}}}"#).unwrap();
        assert_eq!(
            bid.destination.unwrap().to_string(),
            "+13125550999 via carrier1"
        );
    }

    #[test]
    fn ringba_dialect() {
        let parse = |body: &str| {
            parse_response(
                PingDialect::Ringba,
                200,
                body.as_bytes(),
                "USD",
                &gw(),
                Utc::now(),
            )
        };
        let bid = parse(r#"{"bidId":"r1","bidAmount":15.25,"expireInSeconds":60,"phoneNumberNoPlus":"13125550777"}"#).unwrap();
        assert_eq!(bid.price, Cents(1525));
        assert_eq!(
            bid.destination.unwrap().number().unwrap().as_str(),
            "+13125550777"
        );
        assert_eq!(
            parse(r#"{"bidAmount":0,"rejectReason":"no capacity"}"#),
            Err(NotABid::Declined(Some("no capacity".into())))
        );
        assert_eq!(parse(r#"{}"#), Err(NotABid::Declined(None)));
    }
}
