//! Tokens for the HTTP API: the admin token (config) and per-buyer tokens
//! (catalog). Only their SHA-256 is ever stored, and a presented token is
//! compared in constant time, so neither the configuration nor the database
//! nor the timing of a refusal gives a token away.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Hex SHA-256 of a token, as stored in the config and the catalog.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token: 32 bytes from the OS generator, hex-encoded.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Does `presented` hash to `expected_sha256_hex`? Constant time in the
/// content of both.
pub fn verify(presented: &str, expected_sha256_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_sha256_hex) else {
        return false;
    };
    let actual = Sha256::digest(presented.as_bytes());
    expected.len() == actual.len() && bool::from(actual.as_slice().ct_eq(&expected))
}

/// The token from an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_token() {
        let token = new_token();
        let hash = hash_token(&token);
        assert!(verify(&token, &hash));
        assert!(!verify("wrong", &hash));
        assert!(!verify(&token, "not-hex"));
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
