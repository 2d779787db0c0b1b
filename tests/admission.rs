//! Calls the daemon will not serve are never left waiting: before the
//! catalog is loaded the switch's connect is refused by the kernel, and a
//! call beyond `calls.max_concurrent` is accepted and handed straight back
//! to the switch's dialplan. The switch's side is played from the
//! recordings: FreeSWITCH's connect reply and goodbye notice (transcript
//! 01), Asterisk's preamble and its `HANGUP` after a half-close (06).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bidbridge::server;
use common::esl::{Record, Transcript};
use common::{TestDb, eventually, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

/// Reads until `want` bytes arrived (or EOF / the limit).
async fn read_at_least(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < want {
        match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Everything until the peer closes its side.
async fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("the daemon closes its side")
        .expect("read");
    rest
}

/// Plays the recorded switch through a refusal: the daemon's two commands
/// arrive, the switch answers both as FreeSWITCH does, sees the daemon's
/// half-close, says goodbye (the recorded notice) and closes.
async fn freeswitch_call_is_handed_back(esl: SocketAddr) {
    let transcript = Transcript::load("01_outbound_ivr_bridge_failover.esl");
    let goodbye = transcript
        .records
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Recv { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .expect("the recorded disconnect notice");
    assert!(String::from_utf8_lossy(&goodbye).contains("Content-Disposition: disconnect"));

    let mut switch = TcpStream::connect(esl).await.expect("connect");
    let commands = read_at_least(&mut switch, bidbridge::pbx::freeswitch::HAND_BACK.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&commands),
        "connect\n\nresume\n\n",
        "a refused call is connected and resumed, nothing else"
    );
    switch
        .write_all(&transcript.connect_reply())
        .await
        .expect("connect reply");
    switch
        .write_all(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
        .await
        .expect("resume reply");
    assert!(
        read_to_eof(&mut switch).await.is_empty(),
        "the daemon says nothing after resume"
    );
    switch.write_all(&goodbye).await.expect("goodbye");
    drop(switch);
}

fn refused(services: &bidbridge::services::Services, pbx: &str, reason: &str) -> u64 {
    let text = services.metrics.encode();
    let key = format!("bidbridge_calls_refused_total{{pbx=\"{pbx}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a new connection is served: the daemon sends `connect` alone
/// and waits for the switch (a refusal sends `resume` in the same write).
async fn served(esl: SocketAddr) -> Option<TcpStream> {
    let mut switch = TcpStream::connect(esl).await.ok()?;
    let first = read_at_least(&mut switch, 9).await;
    if first != b"connect\n\n" {
        return None;
    }
    let mut more = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(300), switch.read(&mut more)).await {
        Err(_) => Some(switch),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn at_max_concurrent_a_call_goes_straight_back_to_the_dialplan() {
    let db = TestDb::migrated().await;
    let journal = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&db, journal.path());
    config.calls.max_concurrent = 1;
    let running = server::start(config).await.expect("start");
    let esl = running.esl_addr.expect("esl");
    let http = running.http_addr.expect("http");
    let ready_url = format!("http://{http}/readyz");
    assert!(
        eventually(LIMIT, || async {
            reqwest::get(&ready_url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "daemon ready"
    );

    // A second daemon cannot take the port of one that listens.
    let mut second = bidbridge::config::Config::default();
    second.esl.listen = esl;
    second.agi.enabled = false;
    second.http.enabled = false;
    second.records.journal_dir = journal.path().join("second");
    assert!(matches!(
        server::start(second).await,
        Err(server::ServerError::Bind { what: "esl", .. })
    ));

    // The first call takes the only slot: the daemon connects and waits for
    // the switch's channel data.
    let first = served(esl).await.expect("the first call is served");

    // The second is handed back at once, and counted.
    freeswitch_call_is_handed_back(esl).await;
    assert_eq!(refused(&running.services, "freeswitch", "capacity"), 1);

    // The first call goes away (the switch dropped it); its slot serves the
    // next call.
    drop(first);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let next = loop {
        if let Some(switch) = served(esl).await {
            break switch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed slot serves the next call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(next);

    running.shutdown();
    tokio::time::timeout(LIMIT, running.stopped())
        .await
        .expect("daemon stops");
}

#[tokio::test]
async fn before_the_catalog_loads_the_switch_is_refused_at_connect() {
    // No database: the catalog cannot load, so the daemon is never ready.
    let journal = tempfile::tempdir().expect("tempdir");
    let mut config = bidbridge::config::Config::default();
    config.database.url = "host=/nonexistent/bidbridge-admission dbname=x".into();
    config.database.connect_timeout_ms = 100;
    config.esl.listen = "127.0.0.1:0".parse().expect("addr");
    config.agi.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.records.journal_dir = journal.path().to_path_buf();
    let running = server::start(config).await.expect("start");
    // The ports are bound (and reported) at start...
    let esl = running.esl_addr.expect("esl");
    let agi = running.agi_addr.expect("agi");
    assert_ne!(esl.port(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...but not listening: the kernel refuses the connect, so FreeSWITCH's
    // `socket` fails at once and Asterisk's AGI() ends with
    // AGISTATUS=FAILURE (recording 05); both dialplans fail over.
    for addr in [esl, agi] {
        let err = TcpStream::connect(addr).await.expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
    }

    // Shutting down while still waiting for the catalog stops cleanly.
    running.shutdown();
    tokio::time::timeout(LIMIT, running.stopped())
        .await
        .expect("daemon stops");
}

#[tokio::test]
async fn at_max_concurrent_an_asterisk_call_goes_straight_back_to_the_dialplan() {
    let db = TestDb::migrated().await;
    let journal = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&db, journal.path());
    config.calls.max_concurrent = 1;
    let running = server::start(config).await.expect("start");
    let agi = running.agi_addr.expect("agi");
    assert!(
        eventually(LIMIT, || async { TcpStream::connect(agi).await.is_ok() }).await,
        "listening once the catalog is loaded"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/agi");
    let a2s = std::fs::read(dir.join("06-preamble-with-args-and-close.a2s.raw")).expect("fixture");
    let preamble_end = a2s
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("the preamble ends with a blank line")
        + 2;
    assert!(a2s.ends_with(b"HANGUP\n"));

    // The first call takes the only slot (the probe above has ended and
    // given its slot back once the daemon saw it close).
    let mut first = None;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while first.is_none() {
        let mut asterisk = TcpStream::connect(agi).await.expect("connect");
        asterisk
            .write_all(&a2s[..preamble_end])
            .await
            .expect("preamble");
        // Served: the daemon starts the call with a command. Refused: EOF.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(LIMIT, asterisk.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => first = Some(asterisk),
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "never served");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let before = refused(&running.services, "asterisk", "capacity");

    // The second: the preamble as recorded; the daemon answers nothing and
    // half-closes, so AGI() ends (AGISTATUS=SUCCESS, BIDBRIDGE_DONE unset:
    // the dialplan dials the backup). Asterisk then sends HANGUP and closes.
    let mut asterisk = TcpStream::connect(agi).await.expect("connect");
    asterisk
        .write_all(&a2s[..preamble_end])
        .await
        .expect("preamble");
    assert!(
        read_to_eof(&mut asterisk).await.is_empty(),
        "a refused AGI call is told nothing"
    );
    asterisk.write_all(b"HANGUP\n").await.expect("hangup");
    drop(asterisk);
    assert_eq!(
        refused(&running.services, "asterisk", "capacity"),
        before + 1
    );
    drop(first);

    running.shutdown();
    tokio::time::timeout(LIMIT, running.stopped())
        .await
        .expect("daemon stops");
}
