//! Consent evidence at call capture.
//!
//! The publisher's side (its SIP trunk or dialplan) may set SIP headers or
//! channel variables with a consent id, a TrustedForm certificate URL, a
//! Jornaya LeadiD token, when the consumer consented and on which page.
//! Asterisk passes the same as AGI arguments (`consent_id=...`). The names
//! looked at are configurable (`[consent]`); the first present name of each
//! list wins.
//!
//! Must never: accept a value that is not printable ASCII, longer than the
//! limit, or (for TrustedForm) not an `https` URL on the configured host —
//! a rejected value is noted on the record and is not evidence.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::config::ConsentConfig;
use crate::ledger::record::ConsentRecord;

/// What the call brought.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    pub records: Vec<ConsentRecord>,
    /// Values that were present but refused (for the record's notes).
    pub problems: Vec<String>,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("contains characters that are not printable ASCII")]
    NotPrintable,
    #[error("not an https URL")]
    NotHttps,
    #[error("URL host is not {0}")]
    WrongHost(String),
    #[error("not an RFC 3339 time or Unix seconds")]
    BadTime,
    #[error("more than 5 minutes in the future")]
    FutureTime,
    #[error("empty")]
    Empty,
}

/// A printable, length-limited value.
pub fn printable(value: &str, max_len: usize) -> Result<&str, BadValue> {
    let value = value.trim();
    if value.is_empty() {
        return Err(BadValue::Empty);
    }
    if value.len() > max_len {
        return Err(BadValue::TooLong(max_len));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(BadValue::NotPrintable);
    }
    Ok(value)
}

/// A TrustedForm certificate URL: https, and on `host` when one is configured.
pub fn trustedform_url<'a>(
    value: &'a str,
    max_len: usize,
    host: &str,
) -> Result<&'a str, BadValue> {
    let value = printable(value, max_len)?;
    let url = reqwest::Url::parse(value).map_err(|_| BadValue::NotHttps)?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(BadValue::NotHttps);
    }
    if !host.is_empty() && !url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host)) {
        return Err(BadValue::WrongHost(host.to_string()));
    }
    Ok(value)
}

/// A consent time: RFC 3339, or Unix seconds (milliseconds when 13 digits).
pub fn consent_time(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, BadValue> {
    let value = printable(value, 64)?;
    let at = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if value.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = value.parse().map_err(|_| BadValue::BadTime)?;
        let single = if value.len() >= 13 {
            Utc.timestamp_millis_opt(n)
        } else {
            Utc.timestamp_opt(n, 0)
        };
        single.single().ok_or(BadValue::BadTime)?
    } else {
        return Err(BadValue::BadTime);
    };
    if at > now + Duration::minutes(5) {
        return Err(BadValue::FutureTime);
    }
    Ok(at)
}

/// The first present variable among the comma-separated `names`.
fn lookup<'a>(
    variables: &'a BTreeMap<String, String>,
    names: &'a str,
) -> Option<(&'a str, &'a str)> {
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .find_map(|n| variables.get(n).map(|v| (n, v.as_str())))
        .filter(|(_, v)| !v.trim().is_empty())
}

/// Reads the consent evidence in `variables`.
pub fn capture(
    variables: &BTreeMap<String, String>,
    config: &ConsentConfig,
    now: DateTime<Utc>,
) -> Captured {
    let mut out = Captured::default();
    let max = config.max_value_len;
    let mut refuse = |what: &str, name: &str, e: BadValue| {
        out.problems
            .push(format!("consent evidence refused: {what} ({name}) {e}"));
    };
    let page = lookup(variables, &config.page).and_then(|(name, v)| {
        printable(v, max)
            .map_err(|e| refuse("page", name, e))
            .ok()
            .map(str::to_string)
    });
    let consented_at = lookup(variables, &config.consent_time).and_then(|(name, v)| {
        consent_time(v, now)
            .map_err(|e| refuse("consent time", name, e))
            .ok()
    });
    let mut found: Vec<(String, String)> = Vec::new();
    if let Some((name, v)) = lookup(variables, &config.consent_id) {
        match printable(v, max) {
            Ok(v) => {
                let kind = if name.starts_with("sip_h_") {
                    "sip_header"
                } else {
                    "channel_variable"
                };
                found.push((kind.into(), v.into()));
            }
            Err(e) => refuse("consent id", name, e),
        }
    }
    if let Some((name, v)) = lookup(variables, &config.trustedform) {
        match trustedform_url(v, max, &config.trustedform_host) {
            Ok(v) => found.push(("trustedform".into(), v.into())),
            Err(e) => refuse("TrustedForm certificate", name, e),
        }
    }
    if let Some((name, v)) = lookup(variables, &config.leadid) {
        match printable(v, max) {
            Ok(v) if v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                found.push(("jornaya".into(), v.into()))
            }
            Ok(_) => refuse("LeadiD token", name, BadValue::NotPrintable),
            Err(e) => refuse("LeadiD token", name, e),
        }
    }
    out.records = found
        .into_iter()
        .map(|(kind, reference)| ConsentRecord {
            kind,
            reference: Some(reference),
            prompt: None,
            key_pressed: None,
            page: page.clone(),
            consented_at,
            captured_at: now,
        })
        .collect();
    out
}

/// Consent given in the IVR: the exact prompt played, the key pressed, when.
pub fn ivr_record(prompt: &str, key: &str, at: DateTime<Utc>) -> ConsentRecord {
    ConsentRecord {
        kind: "ivr".into(),
        reference: None,
        prompt: Some(prompt.to_string()),
        key_pressed: Some(key.to_string()),
        page: None,
        consented_at: Some(at),
        captured_at: at,
    }
}

/// The consent record a share relies on: the first one captured (its index
/// in the call's `consents`), if any.
pub fn primary(consents: &[ConsentRecord]) -> Option<u16> {
    (!consents.is_empty()).then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn captures_headers_with_defaults() {
        let now = Utc::now();
        let got = capture(
            &vars(&[
                ("sip_h_X-Consent-Id", "c-123"),
                (
                    "sip_h_X-TrustedForm-Cert",
                    "https://cert.trustedform.com/abc123",
                ),
                ("sip_h_X-LeadiD", "AAAA-BBBB-1234"),
                ("sip_h_X-Consent-Time", "2026-01-02T03:04:05Z"),
                ("sip_h_X-Consent-Page", "https://quotes.example/auto"),
            ]),
            &ConsentConfig::default(),
            now,
        );
        assert!(got.problems.is_empty(), "{:?}", got.problems);
        let kinds: Vec<&str> = got.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["sip_header", "trustedform", "jornaya"]);
        assert_eq!(got.records[0].reference.as_deref(), Some("c-123"));
        assert_eq!(
            got.records[1].page.as_deref(),
            Some("https://quotes.example/auto")
        );
        assert!(got.records[2].consented_at.is_some());
    }

    #[test]
    fn agi_arguments_are_channel_variables() {
        let got = capture(
            &vars(&[("consent_id", "abc"), ("consent_time", "1700000000")]),
            &ConsentConfig::default(),
            Utc::now(),
        );
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].kind, "channel_variable");
        assert_eq!(
            got.records[0].consented_at.map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn refuses_bad_values() {
        let long = "x".repeat(1000);
        let got = capture(
            &vars(&[
                ("sip_h_X-Consent-Id", long.as_str()),
                (
                    "sip_h_X-TrustedForm-Cert",
                    "http://cert.trustedform.com/abc",
                ),
                ("sip_h_X-LeadiD", "bad token\u{7}"),
                ("sip_h_X-Consent-Time", "2999-01-01T00:00:00Z"),
            ]),
            &ConsentConfig::default(),
            Utc::now(),
        );
        assert!(got.records.is_empty());
        assert_eq!(got.problems.len(), 4, "{:?}", got.problems);
        assert_eq!(
            trustedform_url("https://evil.example/x", 512, "cert.trustedform.com"),
            Err(BadValue::WrongHost("cert.trustedform.com".into()))
        );
        assert_eq!(printable("a\u{e9}", 10), Err(BadValue::NotPrintable));
    }

    #[test]
    fn page_and_time_alone_are_not_consent() {
        let got = capture(
            &vars(&[("sip_h_X-Consent-Page", "https://x.example/")]),
            &ConsentConfig::default(),
            Utc::now(),
        );
        assert!(got.records.is_empty());
    }
}
