//! Outbound HTTP clients (buyer pings, postbacks): one TLS configuration
//! for the whole process.
//!
//! Left to itself, every `reqwest::ClientBuilder::build` reads and parses
//! the system's root certificates (rustls-platform-verifier →
//! rustls-native-certs): about 10 ms of CPU each on this project's bench
//! machine. The ping client builds one `reqwest::Client` per buyer endpoint
//! the first time an auction pings it, so a fresh daemon, or a catalog
//! with new endpoints, paid that inside the auction's deadline once per
//! endpoint. The roots are loaded once here instead, and each builder gets
//! a clone of the finished configuration.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls_platform_verifier::Verifier;

/// The roots and verifier are loaded on first use; a machine without any
/// CA certificates gets the error text on every build (and plain-HTTP
/// buyers still work through [`builder`]'s fallback).
static TLS: OnceLock<Result<ClientConfig, String>> = OnceLock::new();

fn tls_config() -> &'static Result<ClientConfig, String> {
    TLS.get_or_init(|| {
        crate::auction::ping::install_crypto_provider();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let verifier = Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // What reqwest offers by itself with HTTP/2 enabled.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    })
}

/// A `reqwest` builder with the process's TLS configuration and the
/// settings every outbound client of ours shares: no redirects (a buyer or
/// receiver is what the catalog says, not where it redirects), no proxy from
/// the environment (call data never goes through one), our user agent.
pub fn builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("bidbridge/", env!("CARGO_PKG_VERSION")));
    match tls_config() {
        Ok(config) => builder.tls_backend_preconfigured(config.clone()),
        Err(e) => {
            // reqwest's own build reports the same failure for HTTPS; say
            // once why, and let it.
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(
                || tracing::warn!(error = %e, "no TLS roots; HTTPS buyers and postbacks will fail"),
            );
            builder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_share_one_configuration_and_build() {
        let a = builder().build();
        let b = builder().build();
        assert!(a.is_ok() && b.is_ok());
        // Loaded once: both builders saw the same OnceLock value.
        assert!(TLS.get().is_some());
    }
}
