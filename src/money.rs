//! Money as integer minor units.
//!
//! Every price, payout and budget in bidbridge is a [`Cents`]: an `i64` count of
//! the currency's minor unit (cents for USD). Floats never hold money: a bid of
//! `12.10` must invoice as exactly 1210, not 1209.9999.
//!
//! Text forms (`"12.50"`, `"12"`, `"0.5"`) are parsed exactly; more decimal
//! places than the currency has are refused rather than rounded, so an
//! operator's catalog never silently loses a fraction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in minor currency units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i64);

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an amount (expected digits with at most 2 decimals, e.g. 12.50)")]
    Malformed(String),
    #[error("`{0}` has more than 2 decimal places")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn saturating_add(self, other: Cents) -> Cents {
        Cents(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Cents) -> Cents {
        Cents(self.0.saturating_sub(other.0))
    }

    /// `self × percent / 100`, rounded half away from zero: publisher payouts
    /// given as a share of revenue.
    pub fn percent(self, basis_points: u32) -> Cents {
        // basis points: 1 % = 100 bp, so 100 % = 10_000 bp.
        let product = i128::from(self.0) * i128::from(basis_points);
        let rounded = if product >= 0 {
            (product + 5_000) / 10_000
        } else {
            (product - 5_000) / 10_000
        };
        Cents(i64::try_from(rounded).unwrap_or(i64::MAX))
    }

    /// Converts a decimal price from a buyer's JSON (a float on the wire) into
    /// cents, refusing NaN, infinities, negatives and sub-cent fractions that
    /// are not just float noise.
    pub fn from_decimal_f64(value: f64) -> Option<Cents> {
        if !value.is_finite() || !(0.0..=1.0e12).contains(&value) {
            return None;
        }
        let scaled = value * 100.0;
        let rounded = scaled.round();
        // 12.345 is a price we cannot charge exactly; 12.34999999 is float noise.
        if (scaled - rounded).abs() > 1e-6 {
            return None;
        }
        Some(Cents(rounded as i64))
    }

    /// The amount as a float in major units, for JSON to buyers that expect
    /// numbers. Exact for every amount below 2^53 cents.
    pub fn as_major_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Cents {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let malformed = || MoneyError::Malformed(text.to_string());
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit())
            || (digits.contains('.') && fraction.is_empty())
        {
            return Err(malformed());
        }
        if fraction.len() > 2 {
            return Err(MoneyError::TooPrecise(text.to_string()));
        }
        let overflow = || MoneyError::Overflow(text.to_string());
        let whole: i64 = whole.parse().map_err(|_| overflow())?;
        let mut frac: i64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| malformed())?
        };
        if fraction.len() == 1 {
            frac *= 10;
        }
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac))
            .ok_or_else(overflow)?;
        Ok(Cents(if negative { -cents } else { cents }))
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Raw::Int(whole) => whole
                .checked_mul(100)
                .map(Cents)
                .ok_or_else(|| serde::de::Error::custom("amount too large")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts() {
        assert_eq!("12.50".parse::<Cents>(), Ok(Cents(1250)));
        assert_eq!("12.5".parse::<Cents>(), Ok(Cents(1250)));
        assert_eq!("12".parse::<Cents>(), Ok(Cents(1200)));
        assert_eq!("0.07".parse::<Cents>(), Ok(Cents(7)));
        assert_eq!("-3.10".parse::<Cents>(), Ok(Cents(-310)));
    }

    #[test]
    fn refuses_what_it_cannot_represent() {
        assert!(matches!(
            "12.345".parse::<Cents>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "abc".parse::<Cents>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "12.".parse::<Cents>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            ".5".parse::<Cents>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "1e3".parse::<Cents>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Cents>(),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Cents(1250).to_string(), "12.50");
        assert_eq!(Cents(7).to_string(), "0.07");
        assert_eq!(Cents(-310).to_string(), "-3.10");
    }

    #[test]
    fn float_prices_from_buyers() {
        assert_eq!(Cents::from_decimal_f64(12.1), Some(Cents(1210)));
        assert_eq!(Cents::from_decimal_f64(0.29), Some(Cents(29)));
        assert_eq!(Cents::from_decimal_f64(12.345), None);
        assert_eq!(Cents::from_decimal_f64(f64::NAN), None);
        assert_eq!(Cents::from_decimal_f64(-1.0), None);
        assert_eq!(Cents::from_decimal_f64(f64::INFINITY), None);
    }

    #[test]
    fn percent_rounds_half_away_from_zero() {
        assert_eq!(Cents(1000).percent(5_000), Cents(500));
        assert_eq!(Cents(333).percent(5_000), Cents(167));
        assert_eq!(Cents(1).percent(10_000), Cents(1));
    }
}
