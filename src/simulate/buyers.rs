//! Loopback buyer HTTP servers for `bidbridge simulate`: one per scenario
//! `[[buyers]]` entry, answering pings in the native or Ringba dialect with
//! the configured behaviour (bid, no-bid, HTTP 500, garbage, a 10 MB body,
//! or silence).
//!
//! What it owns: the buyer's side of the ping protocol
//! (`crate::auction::protocol`), and a record of every request body exactly
//! as received, so tests can prove that no caller number leaks into a ping.
//!
//! What it must never do: listen on anything but 127.0.0.1 or ::1 (it is a
//! test double, not a service), or stop answering for a reason other than
//! its behaviour (`silent`) and its configured delay.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::scenario::{BidBehaviour, BuyerSpec};
use crate::catalog::spec::PingDialect;

/// Size of a `huge` answer: far above any sane response limit.
pub const HUGE_BODY_BYTES: usize = 10 * 1024 * 1024;
const HUGE_CHUNK: usize = 64 * 1024;

/// What a running buyer server shares with its handlers.
#[derive(Debug)]
struct Shared {
    spec: BuyerSpec,
    /// Keep every request body? Tests need them; a benchmark sending
    /// millions of pings must not hold them all in memory.
    record: bool,
    requests: Mutex<Vec<Vec<u8>>>,
    count: AtomicU64,
}

/// A running loopback buyer; stops (connections included) when dropped.
#[derive(Debug)]
pub struct BuyerServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl BuyerServer {
    /// The bound address (the port is real even when the spec said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/bid`, the URL to put in a catalog.
    pub fn url(&self) -> String {
        format!("http://{}/bid", self.addr)
    }

    /// Every request body received, byte for byte, in arrival order.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests received (including ones still being answered).
    pub fn request_count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    pub fn spec(&self) -> &BuyerSpec {
        &self.shared.spec
    }
}

impl Drop for BuyerServer {
    fn drop(&mut self) {
        // Aborting (not a graceful shutdown): a `silent` buyer holds its
        // connections forever, and a graceful shutdown would wait for them.
        self.task.abort();
    }
}

fn is_allowed(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// Starts a buyer server for `spec` on its `listen` address (loopback only),
/// keeping every request body (see [`BuyerServer::requests`]).
pub async fn spawn(spec: &BuyerSpec) -> io::Result<BuyerServer> {
    spawn_with(spec, true).await
}

/// Starts a buyer server that only counts requests (for load runs, where
/// keeping every body would grow without bound).
pub async fn spawn_quiet(spec: &BuyerSpec) -> io::Result<BuyerServer> {
    spawn_with(spec, false).await
}

async fn spawn_with(spec: &BuyerSpec, record: bool) -> io::Result<BuyerServer> {
    if !is_allowed(spec.listen.ip()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "simulated buyers listen on 127.0.0.1 or ::1 only, not {}",
                spec.listen.ip()
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(spec.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        record,
        requests: Mutex::new(Vec::new()),
        count: AtomicU64::new(0),
    });
    let app = Router::new().fallback(answer).with_state(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "simulated buyer server stopped");
        }
    });
    Ok(BuyerServer { addr, shared, task })
}

/// Starts every buyer of a scenario; fails (stopping those started) on the first error.
pub async fn spawn_all(specs: &[BuyerSpec]) -> io::Result<Vec<BuyerServer>> {
    let mut servers = Vec::with_capacity(specs.len());
    for spec in specs {
        servers.push(spawn(spec).await?);
    }
    Ok(servers)
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let n = shared.count.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.record {
        shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(body.to_vec());
    }
    let spec = &shared.spec;
    if spec.behaviour == BidBehaviour::Silent {
        // Holds the connection open and never answers: the daemon's ping
        // timeout must end the wait.
        std::future::pending::<()>().await;
    }
    let mut delay = Duration::from_millis(spec.delay_ms);
    if let Some(latency) = &spec.latency {
        match latency.sample() {
            Some(d) => delay += d,
            None => {
                // A "never" answer: hold the request past any deadline, then
                // decline, so a long run does not accumulate held connections.
                tokio::time::sleep(latency.never_hold()).await;
                return StatusCode::NO_CONTENT.into_response();
            }
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let dialect = spec.dialect.unwrap_or_default();
    match spec.behaviour {
        BidBehaviour::Bid => json(StatusCode::OK, bid_body(spec, dialect, n)),
        BidBehaviour::NoBid => match dialect {
            PingDialect::Native => StatusCode::NO_CONTENT.into_response(),
            PingDialect::Ringba => json(
                StatusCode::OK,
                serde_json::json!({"bidAmount": 0, "rejectReason": "simulated no-bid"}).to_string(),
            ),
        },
        BidBehaviour::Error => {
            (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response()
        }
        BidBehaviour::Garbage => json(
            StatusCode::OK,
            "<html><body>502 Bad Gateway</body></html> {\"bid\":".to_string(),
        ),
        BidBehaviour::Huge => huge(),
        BidBehaviour::Silent => StatusCode::NO_CONTENT.into_response(),
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bid_body(spec: &BuyerSpec, dialect: PingDialect, n: u64) -> String {
    let price = spec.price.map(|c| c.0).unwrap_or(0) as f64 / 100.0;
    let bid_id = format!("sim-{}-{n}", spec.listen.port());
    match dialect {
        PingDialect::Native => {
            let mut bid = serde_json::json!({"price": price, "bid_id": bid_id});
            if let Some(secs) = spec.min_talk_secs {
                bid["min_talk_secs"] = secs.into();
            }
            serde_json::json!({ "bid": bid }).to_string()
        }
        PingDialect::Ringba => serde_json::json!({
            "bidId": bid_id,
            "bidAmount": price,
            "expireInSeconds": 60,
        })
        .to_string(),
    }
}

/// A 10 MB answer, streamed so the server never holds it in memory.
fn huge() -> Response {
    let head = Bytes::from_static(b"{\"bid\":{\"price\":1.00,\"pad\":\"");
    let pad = Bytes::from(vec![b'x'; HUGE_CHUNK]);
    let chunks = HUGE_BODY_BYTES.saturating_sub(head.len()) / HUGE_CHUNK;
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(pad, chunks))
            .map(Ok::<Bytes, io::Error>),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auction::protocol::{NotABid, parse_response};
    use crate::catalog::dial::DialTarget;
    use crate::money::Cents;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn spec(behaviour: BidBehaviour, dialect: PingDialect) -> BuyerSpec {
        BuyerSpec {
            listen: "127.0.0.1:0".parse().expect("addr"),
            behaviour,
            price: Some(Cents(1400)),
            delay_ms: 0,
            dialect: Some(dialect),
            min_talk_secs: Some(90),
            latency: None,
        }
    }

    /// One HTTP/1.1 POST over a raw socket: (status, body bytes) or None on timeout.
    async fn post(addr: SocketAddr, body: &str, limit: Duration) -> Option<(u16, Vec<u8>)> {
        let run = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            let req = format!(
                "POST /bid HTTP/1.1\r\nHost: buyer\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.ok()?;
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&raw[..split]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let mut rest = raw[split + 4..].to_vec();
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                rest = dechunk(&rest);
            }
            Some((status, rest))
        };
        tokio::time::timeout(limit, run).await.ok().flatten()
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 || data.len() < eol + 2 + size {
                break;
            }
            out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
            data = &data[(eol + 4 + size).min(data.len())..];
        }
        out
    }

    fn fallback() -> DialTarget {
        DialTarget::from_parts(None, None, Some("sip:buyer@127.0.0.1:5090"), None, None)
            .expect("target")
    }

    #[tokio::test]
    async fn bids_parse_in_both_dialects() {
        for dialect in [PingDialect::Native, PingDialect::Ringba] {
            let server = spawn(&spec(BidBehaviour::Bid, dialect))
                .await
                .expect("spawn");
            let (status, body) = post(server.addr(), r#"{"call_id":"x"}"#, Duration::from_secs(5))
                .await
                .expect("answer");
            assert_eq!(status, 200);
            let bid = parse_response(
                dialect,
                status,
                &body,
                "USD",
                &fallback(),
                chrono::Utc::now(),
            )
            .expect("a bid");
            assert_eq!(bid.price, Cents(1400));
            assert!(bid.bid_id.is_some());
            if dialect == PingDialect::Native {
                assert_eq!(bid.min_talk_secs, Some(90));
            }
            assert_eq!(server.request_count(), 1);
            assert_eq!(server.requests(), vec![br#"{"call_id":"x"}"#.to_vec()]);
        }
    }

    #[tokio::test]
    async fn no_bids_error_and_garbage_are_not_bids() {
        for dialect in [PingDialect::Native, PingDialect::Ringba] {
            let server = spawn(&spec(BidBehaviour::NoBid, dialect))
                .await
                .expect("spawn");
            let (status, body) = post(server.addr(), "{}", Duration::from_secs(5))
                .await
                .expect("answer");
            let parsed = parse_response(
                dialect,
                status,
                &body,
                "USD",
                &fallback(),
                chrono::Utc::now(),
            );
            assert!(
                matches!(parsed, Err(NotABid::Declined(_))),
                "{dialect:?}: {parsed:?}"
            );
        }
        let server = spawn(&spec(BidBehaviour::Error, PingDialect::Native))
            .await
            .expect("spawn");
        let (status, _) = post(server.addr(), "{}", Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(status, 500);

        let server = spawn(&spec(BidBehaviour::Garbage, PingDialect::Native))
            .await
            .expect("spawn");
        let (status, body) = post(server.addr(), "{}", Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(status, 200);
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    }

    #[tokio::test]
    async fn huge_streams_ten_megabytes_and_silent_never_answers() {
        let server = spawn(&spec(BidBehaviour::Huge, PingDialect::Native))
            .await
            .expect("spawn");
        let (status, body) = post(server.addr(), "{}", Duration::from_secs(30))
            .await
            .expect("answer");
        assert_eq!(status, 200);
        assert!(
            body.len() >= HUGE_BODY_BYTES - HUGE_CHUNK,
            "{} bytes",
            body.len()
        );

        let server = spawn(&spec(BidBehaviour::Silent, PingDialect::Native))
            .await
            .expect("spawn");
        let answer = post(server.addr(), "{}", Duration::from_millis(300)).await;
        assert!(answer.is_none());
        assert_eq!(server.request_count(), 1);
        // Dropping the server ends its held connections too.
        let addr = server.addr();
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn delay_is_applied() {
        let mut s = spec(BidBehaviour::Bid, PingDialect::Native);
        s.delay_ms = 150;
        let server = spawn(&s).await.expect("spawn");
        let started = std::time::Instant::now();
        post(server.addr(), "{}", Duration::from_secs(5))
            .await
            .expect("answer");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn only_loopback_addresses_are_allowed() {
        let mut s = spec(BidBehaviour::Bid, PingDialect::Native);
        s.listen = "0.0.0.0:0".parse().expect("addr");
        let err = spawn(&s).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        s.listen = "127.0.0.2:0".parse().expect("addr");
        assert!(spawn(&s).await.is_err());
    }
}
