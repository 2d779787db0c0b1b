//! Phone numbers: E.164 normalisation and the caller facts derived from them.
//!
//! Caller IDs arrive in every shape a carrier can think of (`3125550123`,
//! `+13125550123`, `13125550123`, `"Name" <sip:+1312...@host>` stripped to its
//! user part by the adapter). Everything past the adapters works on
//! [`E164`], so a blocklist entry, a duplicate-caller check and a ping's area
//! code all agree on one spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number in E.164 form: `+` then 8 to 15 digits, first digit not zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a phone number in E.164 form (+ and 8 to 15 digits, e.g. +13125550123)")]
pub struct NotE164(pub String);

impl E164 {
    /// Strict parse: the text must already be E.164 (`+` and digits). Used
    /// for the catalog, where an operator's typo must be an error.
    pub fn parse_strict(text: &str) -> Result<E164, NotE164> {
        let digits = text
            .strip_prefix('+')
            .ok_or_else(|| NotE164(text.to_string()))?;
        if (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(E164(text.to_string()))
        } else {
            Err(NotE164(text.to_string()))
        }
    }

    /// Lenient parse for numbers that came off the wire (caller ID, dialed
    /// number): strips visual separators, accepts national NANP forms
    /// (10 digits, or 11 starting with 1) and `00` international prefixes.
    /// Returns `None` for anything that is not plausibly a phone number
    /// (`anonymous`, `unknown`, SIP user names).
    pub fn normalize(raw: &str) -> Option<E164> {
        let raw = raw.trim();
        let (plus, rest) = match raw.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let mut digits = String::with_capacity(rest.len());
        for ch in rest.chars() {
            match ch {
                '0'..='9' => digits.push(ch),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return None,
            }
        }
        let candidate = if plus {
            digits
        } else if let Some(intl) = digits.strip_prefix("00") {
            intl.to_string()
        } else if digits.len() == 10 && is_nanp_national(&digits) {
            format!("1{digits}")
        } else if digits.len() == 11 && digits.starts_with('1') && is_nanp_national(&digits[1..]) {
            digits
        } else {
            return None;
        };
        E164::parse_strict(&format!("+{candidate}")).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits without the `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// True for North American Numbering Plan numbers (+1 NXX NXX XXXX).
    pub fn is_nanp(&self) -> bool {
        let d = self.digits();
        d.len() == 11 && d.starts_with('1') && is_nanp_national(&d[1..])
    }

    /// The NANP area code (NPA), e.g. `312` for +13125550123.
    pub fn nanp_area_code(&self) -> Option<&str> {
        self.is_nanp().then(|| &self.digits()[1..4])
    }

    /// The national significant number for NANP (10 digits), used when a
    /// number must be matched in every spelling a log or ping might carry.
    pub fn nanp_national(&self) -> Option<&str> {
        self.is_nanp().then(|| &self.digits()[1..])
    }
}

/// NPA and NXX both start with 2-9.
fn is_nanp_national(ten: &str) -> bool {
    let b = ten.as_bytes();
    b.len() == 10 && (b'2'..=b'9').contains(&b[0]) && (b'2'..=b'9').contains(&b[3])
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for E164 {
    type Err = NotE164;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        E164::parse_strict(s)
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        E164::parse_strict(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_requires_plus_and_digits() {
        assert!(E164::parse_strict("+13125550123").is_ok());
        assert!(E164::parse_strict("13125550123").is_err());
        assert!(E164::parse_strict("+1312555012a").is_err());
        assert!(E164::parse_strict("+0123456789").is_err());
        assert!(E164::parse_strict("+1234567").is_err());
    }

    #[test]
    fn normalizes_wire_forms() {
        let want = Some(E164("+13125550123".into()));
        assert_eq!(E164::normalize("3125550123"), want);
        assert_eq!(E164::normalize("13125550123"), want);
        assert_eq!(E164::normalize("+1 (312) 555-0123"), want);
        assert_eq!(E164::normalize("0013125550123"), want);
        assert_eq!(
            E164::normalize("+442071838750"),
            Some(E164("+442071838750".into()))
        );
        assert_eq!(E164::normalize("anonymous"), None);
        assert_eq!(E164::normalize("unknown"), None);
        assert_eq!(E164::normalize("1125550123"), None);
        assert_eq!(E164::normalize(""), None);
    }

    #[test]
    fn nanp_parts() {
        let n = E164::parse_strict("+13125550123").unwrap();
        assert_eq!(n.nanp_area_code(), Some("312"));
        assert_eq!(n.nanp_national(), Some("3125550123"));
        let uk = E164::parse_strict("+442071838750").unwrap();
        assert_eq!(uk.nanp_area_code(), None);
    }
}
