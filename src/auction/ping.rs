//! Sending one ping and reading its answer, within a deadline.
//!
//! One keep-alive connection pool per buyer endpoint (scheme, host, port):
//! a slow or broken buyer's connections never delay another buyer's, and
//! after the first call every ping rides a warm connection. The deadline
//! covers everything (connect, TLS, request, response body), and bodies are
//! read in chunks up to a size limit, so a buyer streaming an enormous
//! answer costs us at most the limit.

use std::time::Duration;

use moka::sync::Cache;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::catalog::PingEndpoint;

/// What came back from one ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingAnswer {
    Response {
        status: u16,
        body: Vec<u8>,
    },
    /// The deadline passed first.
    Timeout,
    /// The answer was bigger than the limit.
    TooLarge,
    /// Transport failure (refused, reset, TLS).
    Error(String),
}

pub struct PingClient {
    /// Keyed by `scheme://host:port`.
    clients: Cache<String, reqwest::Client>,
    max_response_bytes: usize,
    pool_idle_per_host: usize,
}

impl PingClient {
    pub fn new(max_response_bytes: usize, pool_idle_per_host: usize) -> PingClient {
        install_crypto_provider();
        PingClient {
            // A bound only against a catalog with absurdly many endpoints;
            // an evicted client just means a cold connection next time.
            clients: Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            max_response_bytes,
            pool_idle_per_host,
        }
    }

    fn client_for(&self, url: &reqwest::Url) -> Result<reqwest::Client, String> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        if let Some(client) = self.clients.get(&key) {
            return Ok(client);
        }
        let client = crate::http_client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(self.pool_idle_per_host)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// POSTs `body` to the endpoint; gives up at `deadline`.
    pub async fn ping(
        &self,
        endpoint: &PingEndpoint,
        body: Vec<u8>,
        deadline: Instant,
    ) -> PingAnswer {
        let url = match reqwest::Url::parse(&endpoint.url) {
            Ok(url) => url,
            Err(e) => return PingAnswer::Error(format!("bad URL: {e}")),
        };
        let client = match self.client_for(&url) {
            Ok(client) => client,
            Err(e) => return PingAnswer::Error(e),
        };
        let limit = self.max_response_bytes;
        let exchange = async move {
            let mut request = client
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .body(body);
            if let Some((name, value)) = &endpoint.auth
                && let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                )
            {
                let mut value = value;
                value.set_sensitive(true);
                request = request.header(name, value);
            }
            let mut response = match request.send().await {
                Ok(r) => r,
                Err(e) => return PingAnswer::Error(describe(&e)),
            };
            let status = response.status().as_u16();
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|len| len > limit) {
                return PingAnswer::TooLarge;
            }
            let mut body = Vec::with_capacity(declared.unwrap_or(256).min(limit));
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > limit {
                            return PingAnswer::TooLarge;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return PingAnswer::Error(describe(&e)),
                }
            }
            PingAnswer::Response { status, body }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(answer) => answer,
            Err(_) => PingAnswer::Timeout,
        }
    }
}

/// A short error text without the URL (which may carry a buyer's key).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "broken response body"
    } else if error.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let source = std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let source: String = source.chars().take(120).collect();
    if source.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {source}")
    }
}

/// rustls needs a process-wide crypto provider; we use ring. Installing
/// twice is harmless (the second attempt is refused and ignored).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
