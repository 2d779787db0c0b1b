//! URL templates for notices and postbacks: `https://buyer.example/win?bid={bid_id}&p={price}`.
//!
//! Placeholders are a fixed, documented set; a template naming anything
//! else is refused when the catalog is applied, not discovered when the
//! first call tries to send it. Values are percent-encoded as they are
//! filled in, so a source label with `&` cannot add a query parameter.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Every template field a template may use (docs/buyer-protocol.md and
/// docs/records.md describe each).
pub const FIELDS: &[&str] = &[
    "call_id",
    "bid_id",
    "price",
    "price_bid",
    "price_charged",
    "duration",
    "talk_secs",
    "campaign",
    "publisher",
    "source",
    "buyer",
    "destination",
    "payout",
    "revenue",
    "event",
    "value",
    "payable",
    "reason",
    "consent_id",
];

/// Characters left as they are inside a query value.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The first unknown template field in `template`, if any.
pub fn check_fields(template: &str) -> Result<(), String> {
    for name in fields(template) {
        if !FIELDS.contains(&name) {
            return Err(name.to_string());
        }
    }
    Ok(())
}

/// The template field names `template` uses, in order (the sharing log lists
/// them as the fields a notice carries).
pub fn fields(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// The template with each known template field replaced by a harmless value,
/// so the result can be checked as a URL.
pub fn fill_for_validation(template: &str) -> String {
    let values: BTreeMap<&str, String> = FIELDS.iter().map(|p| (*p, "0".to_string())).collect();
    fill(template, &values)
}

/// Fills `{name}` from `values` (percent-encoded); unknown or missing
/// template fields become empty.
pub fn fill(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                if let Some(value) = values.get(name) {
                    out.extend(utf8_percent_encode(value, VALUE));
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_encodes() {
        let values = BTreeMap::from([
            ("bid_id", "a b&c".to_string()),
            ("price", "12.50".to_string()),
        ]);
        assert_eq!(
            fill("https://x/win?b={bid_id}&p={price}", &values),
            "https://x/win?b=a%20b%26c&p=12.50"
        );
    }

    #[test]
    fn unknown_fields_are_reported() {
        assert_eq!(
            check_fields("https://x/{call_id}/{secret}"),
            Err("secret".to_string())
        );
        assert_eq!(check_fields("https://x/{call_id}"), Ok(()));
    }
}
