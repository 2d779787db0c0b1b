//! STIR/SHAKEN: what the switch tells us about the caller's attestation,
//! normalised into one [`Attestation`], and the campaign rule that acts on it.
//!
//! Owns: reading the indications the switch adapters put in
//! `CallInfo.variables` (FreeSWITCH `sip_verstat`, the `verstat` parameter
//! of P-Asserted-Identity, the `attest` claim of an Identity header;
//! Asterisk `STIR_SHAKEN(0,attestation)` / `STIR_SHAKEN(0,verify_result)`
//! read by the AGI adapter or passed as AGI arguments).
//!
//! Must never: verify signatures itself (the carrier or the switch does,
//! and says so in `verstat` / `verify_result`), or fail a call because an
//! indication is malformed: anything unreadable is [`Attestation::None`].
//!
//! Precedence: a verification result (verstat, verify_result) decides
//! between "failed", "none" and "passed"; the level (A/B/C) then comes from
//! the result itself when it carries one (`TN-Validation-Passed-A`), else
//! from the attestation value / Identity header. A passed verification with
//! no readable level counts as C (the weakest level that passed) so a
//! campaign requiring A or B never pays for an unknown level. With no
//! verification result at all, an Identity header's level is believed only
//! when `trust_unverified_identity` is set by the caller of [`from_variables`]
//! (a trusted SBC in front of the switch that strips unverified headers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Variable names the Asterisk adapter (or an AGI argument) uses.
pub const AST_ATTESTATION_VAR: &str = "stir_shaken_attestation";
pub const AST_VERIFY_RESULT_VAR: &str = "stir_shaken_verify_result";

/// The caller's STIR/SHAKEN standing, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Attestation {
    /// Full: the originating carrier knows the customer and the number.
    A,
    /// Partial: knows the customer, not that they own the number.
    B,
    /// Gateway: only that the call entered its network.
    C,
    /// A signature was present and did not verify (spoofing indicator).
    #[serde(rename = "failed")]
    Failed,
    /// No STIR/SHAKEN information at all (or unreadable).
    #[serde(rename = "none")]
    None,
}

impl Attestation {
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::A => "A",
            Attestation::B => "B",
            Attestation::C => "C",
            Attestation::Failed => "failed",
            Attestation::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Attestation> {
        Some(match text.trim() {
            "A" | "a" => Attestation::A,
            "B" | "b" => Attestation::B,
            "C" | "c" => Attestation::C,
            "failed" => Attestation::Failed,
            "none" => Attestation::None,
            _ => return None,
        })
    }

    /// Whether this attestation is at least `required`.
    pub fn meets(self, required: RequiredAttestation) -> bool {
        let rank = match self {
            Attestation::A => 3,
            Attestation::B => 2,
            Attestation::C => 1,
            Attestation::Failed | Attestation::None => 0,
        };
        rank >= required.rank()
    }
}

/// A campaign's `require_attestation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequiredAttestation {
    A,
    B,
    C,
}

impl RequiredAttestation {
    fn rank(self) -> u8 {
        match self {
            RequiredAttestation::A => 3,
            RequiredAttestation::B => 2,
            RequiredAttestation::C => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequiredAttestation::A => "A",
            RequiredAttestation::B => "B",
            RequiredAttestation::C => "C",
        }
    }
}

/// What a campaign does with a call below its `require_attestation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnattestedAction {
    /// Straight to the backup line; no buyer is pinged (the caller's data
    /// is not shared with anyone).
    #[default]
    Backup,
    /// Auctioned and routed as usual, but never payable.
    NotPayable,
}

/// What a verification result says, before the level is known.
enum Verification {
    Passed(Option<Attestation>),
    Failed,
    Absent,
}

/// FreeSWITCH / carrier `verstat` (RFC 8224 / ATIS-1000074):
/// `TN-Validation-Passed[-A|-B|-C]`, `TN-Validation-Failed[-…]`,
/// `No-TN-Validation`. Some carriers spell it `TN-Verification-…`.
fn verstat(value: &str) -> Option<Verification> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    if v.starts_with("no-tn-") {
        return Some(Verification::Absent);
    }
    if let Some(rest) = v
        .strip_prefix("tn-validation-passed")
        .or_else(|| v.strip_prefix("tn-verification-passed"))
    {
        let level = rest.strip_prefix('-').and_then(|l| match l {
            "a" => Some(Attestation::A),
            "b" => Some(Attestation::B),
            "c" => Some(Attestation::C),
            _ => None,
        });
        return Some(Verification::Passed(level));
    }
    if v.starts_with("tn-validation-failed") || v.starts_with("tn-verification-failed") {
        return Some(Verification::Failed);
    }
    None
}

/// Asterisk `STIR_SHAKEN(0,verify_result)`: "Verification passed",
/// "Signature verification failed", "Verification mismatch",
/// "Verification not present" (wording varies across versions).
fn ast_verify_result(value: &str) -> Option<Verification> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    if v.contains("not present") || v.contains("no_tn") || v.contains("not_present") {
        Some(Verification::Absent)
    } else if v.contains("fail") || v.contains("mismatch") || v.contains("invalid") {
        Some(Verification::Failed)
    } else if v.contains("pass") || v == "success" {
        Some(Verification::Passed(None))
    } else {
        None
    }
}

/// `verstat=...` inside a P-Asserted-Identity (or From) header value.
fn verstat_param(header: &str) -> Option<&str> {
    header.split([';', '>', '?', '&', '@']).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("verstat").then_some(v.trim())
    })
}

/// The `attest` claim of a SHAKEN PASSporT in an Identity header value
/// (`header.payload.signature;info=<...>;alg=ES256;ppt=shaken`). The
/// signature is not checked here: see the module doc.
fn identity_attest(header: &str) -> Option<Attestation> {
    let token = header.split(';').next()?.trim();
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match json.get("attest")?.as_str()? {
        "A" => Some(Attestation::A),
        "B" => Some(Attestation::B),
        "C" => Some(Attestation::C),
        _ => None,
    }
}

/// Unpadded (or padded) base64url, as JWTs use; `None` on any bad byte.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Normalises the switch's indications (see the module doc for precedence).
pub fn from_variables(
    vars: &BTreeMap<String, String>,
    trust_unverified_identity: bool,
) -> Attestation {
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // The verification result: FreeSWITCH's own variable, a verstat
    // parameter on P-Asserted-Identity, or Asterisk's verify_result.
    let verification = get("sip_verstat")
        .and_then(verstat)
        .or_else(|| {
            vars.iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    k.starts_with("sip_p-asserted-identity") || k == "sip_h_p-asserted-identity"
                })
                .find_map(|(_, v)| verstat_param(v).and_then(verstat))
        })
        .or_else(|| get(AST_VERIFY_RESULT_VAR).and_then(ast_verify_result));
    // The claimed level: Asterisk's attestation, else an Identity header.
    let claimed = get(AST_ATTESTATION_VAR)
        .and_then(|v| match v.trim() {
            "A" => Some(Attestation::A),
            "B" => Some(Attestation::B),
            "C" => Some(Attestation::C),
            _ => None,
        })
        .or_else(|| {
            vars.iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    k.starts_with("sip_identity") || k == "sip_h_identity"
                })
                .find_map(|(_, v)| identity_attest(v))
        });
    match verification {
        Some(Verification::Failed) => Attestation::Failed,
        Some(Verification::Absent) => Attestation::None,
        Some(Verification::Passed(level)) => level.or(claimed).unwrap_or(Attestation::C),
        None if trust_unverified_identity => claimed.unwrap_or(Attestation::None),
        None => Attestation::None,
    }
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

    // {"attest":"A","dest":{"tn":["12125551213"]},"iat":1443208345,"orig":{"tn":"12155551212"},"origid":"x"}
    const PASSPORT_A: &str = "eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIxMyJdfSwiaWF0IjoxNDQzMjA4MzQ1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifSwib3JpZ2lkIjoieCJ9.c2ln;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken";

    #[test]
    fn verstat_values() {
        let a = |v: &str| from_variables(&vars(&[("sip_verstat", v)]), false);
        assert_eq!(a("TN-Validation-Failed"), Attestation::Failed);
        assert_eq!(a("No-TN-Validation"), Attestation::None);
        assert_eq!(a("TN-Validation-Passed"), Attestation::C);
        assert_eq!(a("TN-Validation-Passed-A"), Attestation::A);
        assert_eq!(a("TN-Validation-Passed-B"), Attestation::B);
        assert_eq!(a("garbage"), Attestation::None);
        assert_eq!(from_variables(&vars(&[]), false), Attestation::None);
    }

    #[test]
    fn level_from_identity_header_when_passed() {
        let v = vars(&[
            ("sip_verstat", "TN-Validation-Passed"),
            ("sip_identity", PASSPORT_A),
        ]);
        assert_eq!(from_variables(&v, false), Attestation::A);
        // Unverified identity: believed only when trusted.
        let v = vars(&[("sip_identity", PASSPORT_A)]);
        assert_eq!(from_variables(&v, false), Attestation::None);
        assert_eq!(from_variables(&v, true), Attestation::A);
        // A failed verification wins over any claimed level.
        let v = vars(&[
            ("sip_verstat", "TN-Validation-Failed"),
            ("sip_identity", PASSPORT_A),
        ]);
        assert_eq!(from_variables(&v, true), Attestation::Failed);
    }

    #[test]
    fn verstat_in_p_asserted_identity() {
        let v = vars(&[(
            "sip_P-Asserted-Identity",
            "<sip:+13125550100;verstat=TN-Validation-Passed-B@carrier.example;user=phone>",
        )]);
        assert_eq!(from_variables(&v, false), Attestation::B);
    }

    #[test]
    fn asterisk_values() {
        let v = vars(&[
            (AST_ATTESTATION_VAR, "B"),
            (AST_VERIFY_RESULT_VAR, "Verification passed"),
        ]);
        assert_eq!(from_variables(&v, false), Attestation::B);
        let v = vars(&[
            (AST_ATTESTATION_VAR, "A"),
            (AST_VERIFY_RESULT_VAR, "Signature verification failed"),
        ]);
        assert_eq!(from_variables(&v, false), Attestation::Failed);
    }

    #[test]
    fn meets_orders_levels() {
        assert!(Attestation::A.meets(RequiredAttestation::A));
        assert!(!Attestation::B.meets(RequiredAttestation::A));
        assert!(Attestation::B.meets(RequiredAttestation::C));
        assert!(!Attestation::Failed.meets(RequiredAttestation::C));
        assert!(!Attestation::None.meets(RequiredAttestation::C));
    }
}
