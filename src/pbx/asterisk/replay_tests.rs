//! Replays the real Asterisk 22 recordings (`shared/fixtures/agi`) to
//! [`AgiChannel`]: a peer writes the exact bytes Asterisk wrote, reply by
//! reply, and the tests check what the adapter made of them and that the
//! lines it sent correspond to lines Asterisk accepted.
//!
//! How replies are paired with commands (never by counting): the
//! transcript gives the order of sends and reads; a reply belongs to the
//! oldest unanswered command, and a command sent while a prompt
//! (STREAM FILE / GET DATA) is unanswered cuts that prompt, which then never
//! gets a reply (fixture 10). HANGUP lines are kept with the reply they
//! followed; those read after the recorder closed its side are written when
//! the adapter closes.
//!
//! The adapter does not send exactly the recorder's sequence (it asks for
//! the switch clock around Dial, CHANNEL STATUS at start, ...). The peer
//! answers each adapter command with the recorded reply of the first unused
//! recorded command with the same key, looking no further than the next
//! recorded `EXEC Dial` (so replies about one Dial attempt never answer
//! another). Commands with no recorded counterpart get a plain synthetic
//! reply, listed in the peer's log so tests can tell them apart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::codec::{self, Inbound};
use super::session::AgiChannel;
use crate::catalog::dial::{DialTarget, PromptName, Token};
use crate::config::AsteriskConfig;
use crate::pbx::{
    BridgeRequest, CallChannel, ChannelError, CollectOutcome, CollectRequest, HangupCause,
    LegStatus, Party, PlayOutcome,
};

fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BIDBRIDGE_AGI_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/agi")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} missing ({e}); set BIDBRIDGE_AGI_FIXTURES",
            path.display()
        )
    })
}

/// Undoes the transcript's escapes (`\\` `\n` `\r` `\t` `\xHH`).
fn unescape(payload: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = payload.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' if i + 3 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex byte"));
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// One recorded command and Asterisk's answer to it.
#[derive(Debug, Clone)]
struct Exchange {
    command: String,
    /// Exact bytes of the reply (empty: never answered).
    reply: Vec<u8>,
    /// HANGUP lines that followed the reply.
    after: Vec<u8>,
    used: bool,
}

#[derive(Debug, Clone)]
struct Recording {
    preamble: Vec<u8>,
    exchanges: Vec<Exchange>,
    /// Bytes Asterisk wrote after the recorder closed its side.
    on_close: Vec<u8>,
    /// The recorder aborted the connection (08a-c).
    aborted: bool,
    /// Asterisk closed the connection itself after this exchange (02c).
    asterisk_closed_after: Option<usize>,
}

enum Event {
    Recv(Vec<u8>),
    Send(String),
    ServerClosed,
    Abort,
    AsteriskClosed,
}

fn is_prompt(command: &str) -> bool {
    let up = command.to_ascii_uppercase();
    up.starts_with("STREAM FILE") || up.starts_with("GET DATA")
}

/// Parses `NAME.transcript`, checks it against the raw files, and pairs
/// replies with commands.
fn load(name: &str) -> Recording {
    let transcript = String::from_utf8(read_fixture(&format!("{name}.transcript"))).expect("utf8");
    let mut events = Vec::new();
    for line in transcript.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            if comment.contains("half-closes") {
                events.push(Event::ServerClosed);
            } else if comment.contains("aborts the connection") {
                events.push(Event::Abort);
            } else if comment.contains("EOF from Asterisk") {
                events.push(Event::AsteriskClosed);
            }
            continue;
        }
        // `+SSSS.mmm X> payload`
        let rest = line.trim_start_matches('+').trim_start();
        let (_, rest) = rest.split_once(' ').expect("time");
        let (tag, payload) = rest.split_at(2);
        let payload = payload.strip_prefix(' ').unwrap_or(payload);
        match tag {
            "A>" | "A+" => events.push(Event::Recv(unescape(payload))),
            "S>" | "S+" => {
                let bytes = unescape(payload);
                let text = String::from_utf8(bytes).expect("command utf8");
                events.push(Event::Send(text.trim_end_matches('\n').to_string()));
            }
            other => panic!("unknown tag {other} in {name}"),
        }
    }
    // The transcript must be the raw files, byte for byte.
    let a2s: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Recv(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(a2s, read_fixture(&format!("{name}.a2s.raw")), "{name} a2s");
    let s2a: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Send(s) => Some(format!("{s}\n")),
            _ => None,
        })
        .collect();
    assert_eq!(
        s2a.as_bytes(),
        read_fixture(&format!("{name}.s2a.raw")),
        "{name} s2a"
    );

    // Walk the events: bytes received so far, decoded as they complete.
    let mut buf: Vec<u8> = Vec::new();
    let mut preamble = None;
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut last_answered: Option<usize> = None;
    let mut on_close = Vec::new();
    let mut closed = false;
    let mut aborted = false;
    let mut asterisk_closed_after = None;
    for event in events {
        match event {
            Event::Send(cmd) => {
                // A command sent during a prompt cuts it: no reply ever (10).
                if pending.last().is_some_and(|c| is_prompt(c)) {
                    let cut = pending.pop().expect("pending");
                    exchanges.push(Exchange {
                        command: cut,
                        reply: Vec::new(),
                        after: Vec::new(),
                        used: false,
                    });
                }
                pending.push(cmd);
            }
            Event::ServerClosed => closed = true,
            Event::Abort => aborted = true,
            Event::AsteriskClosed if !closed => asterisk_closed_after = last_answered,
            Event::AsteriskClosed => {}
            Event::Recv(bytes) => {
                buf.extend_from_slice(&bytes);
                if preamble.is_none() {
                    match codec::decode_preamble(&buf).expect("preamble") {
                        Some((_, n)) => {
                            preamble = Some(buf.drain(..n).collect::<Vec<u8>>());
                        }
                        None => continue,
                    }
                }
                while let Some((item, n)) = codec::decode_inbound(&buf).expect("inbound") {
                    let raw: Vec<u8> = buf.drain(..n).collect();
                    match item {
                        Inbound::Hangup if closed => on_close.extend(raw),
                        Inbound::Hangup => match last_answered {
                            Some(i) => exchanges[i].after.extend(raw),
                            None => panic!("{name}: HANGUP before any reply"),
                        },
                        Inbound::Reply(_) => {
                            assert!(!pending.is_empty(), "{name}: reply with no command");
                            let command = pending.remove(0);
                            exchanges.push(Exchange {
                                command,
                                reply: raw,
                                after: Vec::new(),
                                used: false,
                            });
                            last_answered = Some(exchanges.len() - 1);
                        }
                    }
                }
            }
        }
    }
    assert!(buf.is_empty(), "{name}: trailing partial bytes");
    // Commands never answered (the connection ended first).
    for command in pending {
        exchanges.push(Exchange {
            command,
            reply: Vec::new(),
            after: Vec::new(),
            used: false,
        });
    }
    Recording {
        preamble: preamble.expect("a preamble"),
        exchanges,
        on_close,
        aborted,
        asterisk_closed_after,
    }
}

/// How a command is looked up among the recorded ones.
fn key(command: &str) -> String {
    let argv = crate::simulate::asterisk::parse_args(command);
    let up: Vec<String> = argv.iter().map(|a| a.to_ascii_uppercase()).collect();
    let words: Vec<&str> = up.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["GET", "VARIABLE", name, ..] => format!("GET VARIABLE {name}"),
        ["GET", "FULL", "VARIABLE", expr, ..] => format!("GET FULL VARIABLE {expr}"),
        ["SET", "VARIABLE", name, ..] => format!("SET VARIABLE {name}"),
        // Both hang the channel up (EXEC Hangup carries the cause).
        ["EXEC", "HANGUP", ..] | ["HANGUP", ..] => "HANGUP".into(),
        ["EXEC", app, ..] => format!("EXEC {app}"),
        [a, b, ..] if matches!(*a, "STREAM" | "GET" | "CHANNEL") => format!("{a} {b}"),
        [a, ..] => a.to_string(),
        [] => String::new(),
    }
}

/// The `Dial()` argument's dial string and timeout (`Local/x@y,10`).
fn dial_head(command: &str) -> Option<String> {
    let argv = crate::simulate::asterisk::parse_args(command);
    let arg = argv.get(2)?;
    let mut parts = arg.split(',');
    Some(format!("{},{}", parts.next()?, parts.next().unwrap_or("")))
}

/// Whether the adapter's line does what the recorded line did.
fn corresponds(sent: &str, recorded: &str) -> bool {
    if sent == recorded {
        return true;
    }
    let (s, r) = (
        crate::simulate::asterisk::parse_args(sent),
        crate::simulate::asterisk::parse_args(recorded),
    );
    match key(sent).as_str() {
        // Same file; the escape digits may differ (we never allow any).
        "STREAM FILE" => s.get(2) == r.get(2),
        // Same dial string and ring timeout; options may differ (U(), g).
        "EXEC DIAL" => dial_head(sent) == dial_head(recorded),
        "HANGUP" => true,
        _ => false,
    }
}

/// The peer's shared state, inspectable by the test.
#[derive(Debug, Default)]
struct PeerLog {
    /// (adapter line, recorded line it was answered from).
    matched: Vec<(String, String)>,
    /// Adapter lines answered with a synthetic reply.
    synthetic: Vec<String>,
    /// Set by the test to skip recorded attempts the adapter cannot make.
    skip_dial: Vec<String>,
}

struct Peer {
    recording: Recording,
    cursor: usize,
    log: Arc<Mutex<PeerLog>>,
}

impl Peer {
    /// The recorded exchange answering `line`, if any.
    fn find(&mut self, line: &str) -> Option<usize> {
        let k = key(line);
        let skip = self.log.lock().expect("log").skip_dial.clone();
        let is_dial = k == "EXEC DIAL";
        // CHANNEL STATUS at session start is ours, not the recorder's.
        if k == "CHANNEL STATUS" && self.log.lock().expect("log").matched.is_empty() {
            return None;
        }
        let mut i = self.cursor;
        while i < self.recording.exchanges.len() {
            let ex = &self.recording.exchanges[i];
            let ex_key = key(&ex.command);
            if ex_key == "EXEC DIAL" && !ex.used {
                let skipped = skip.iter().any(|s| ex.command.contains(s.as_str()));
                if skipped {
                    i += 1;
                    continue;
                }
                if !is_dial {
                    // Never answer from beyond the next Dial attempt.
                    return None;
                }
                if dial_head(&ex.command).map(|h| h.split(',').next().map(str::to_string))
                    == dial_head(line).map(|h| h.split(',').next().map(str::to_string))
                {
                    self.cursor = i + 1;
                    return Some(i);
                }
                i += 1;
                continue;
            }
            if !ex.used && ex_key == k {
                return Some(i);
            }
            // Nor from beyond a hang-up not yet replayed.
            if !ex.used && !ex.after.is_empty() {
                return None;
            }
            i += 1;
        }
        None
    }

    fn synthetic(line: &str) -> &'static str {
        let k = key(line);
        if k.starts_with("GET FULL VARIABLE") {
            "200 result=1 (1795238000.000)\n"
        } else if k.starts_with("GET VARIABLE") {
            "200 result=0\n"
        } else if k.starts_with("SET VARIABLE") {
            "200 result=1\n"
        } else if k == "CHANNEL STATUS" {
            "200 result=4\n"
        } else {
            "200 result=0\n"
        }
    }

    async fn run(mut self, mut stream: TcpStream) {
        stream
            .write_all(&self.recording.preamble)
            .await
            .expect("preamble");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let line = loop {
                if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=lf).collect();
                    break Some(String::from_utf8_lossy(&line[..lf]).to_string());
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let Some(line) = line else {
                let _ = stream.write_all(&self.recording.on_close).await;
                let _ = stream.shutdown().await;
                return;
            };
            match self.find(&line) {
                Some(i) => {
                    let ex = &mut self.recording.exchanges[i];
                    ex.used = true;
                    self.log
                        .lock()
                        .expect("log")
                        .matched
                        .push((line.clone(), ex.command.clone()));
                    if ex.reply.is_empty() {
                        // Never answered: the connection died (08a-c).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                    let (reply, after) = (ex.reply.clone(), ex.after.clone());
                    stream.write_all(&reply).await.expect("reply");
                    if !after.is_empty() {
                        // f3: HANGUP ~40 ms after the interrupted reply.
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        stream.write_all(&after).await.expect("hangup");
                    }
                    // 02c: Asterisk closed the connection itself.
                    if self.recording.asterisk_closed_after == Some(i) {
                        return;
                    }
                }
                None => {
                    self.log.lock().expect("log").synthetic.push(line.clone());
                    stream
                        .write_all(Self::synthetic(&line).as_bytes())
                        .await
                        .expect("synthetic");
                }
            }
        }
    }
}

/// Starts a replay of `name` and returns the adapter connected to it.
async fn replay(name: &str) -> (AgiChannel, Arc<Mutex<PeerLog>>, tokio::task::JoinHandle<()>) {
    let recording = load(name);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(PeerLog::default()));
    let peer = Peer {
        recording,
        cursor: 0,
        log: log.clone(),
    };
    // The peer plays Asterisk, which connects to the daemon.
    let peer_task = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        peer.run(stream).await;
    });
    let (stream, _) = listener.accept().await.expect("accept");
    let channel = AgiChannel::establish(stream, AsteriskConfig::default())
        .await
        .expect("establish");
    (channel, log, peer_task)
}

/// Every matched line must correspond to what Asterisk accepted.
fn assert_corresponds(log: &Arc<Mutex<PeerLog>>) {
    let log = log.lock().expect("log");
    for (sent, recorded) in &log.matched {
        assert!(
            corresponds(sent, recorded),
            "adapter sent {sent:?} where the recording has {recorded:?}"
        );
    }
}

fn prompt(name: &str) -> PromptName {
    PromptName::new(name).expect("prompt")
}

fn collect_req(name: &str, timeout_ms: u64, max: u8) -> CollectRequest {
    CollectRequest {
        prompt: prompt(name),
        max_digits: max,
        timeout: Duration::from_millis(timeout_ms),
        terminator: Some('#'),
    }
}

fn local(ext: &str, ring_secs: u64) -> BridgeRequest {
    BridgeRequest {
        target: DialTarget::Extension {
            extension: Token::new(ext).expect("ext"),
            context: Token::new("buyers").expect("ctx"),
        },
        ring_timeout: Duration::from_secs(ring_secs),
        call_id: "00000000-0000-0000-0000-000000000000".into(),
        caller_id_number: None,
    }
}

fn was_sent(log: &Arc<Mutex<PeerLog>>, line: &str) -> bool {
    let log = log.lock().expect("log");
    log.matched.iter().any(|(s, _)| s == line) || log.synthetic.iter().any(|s| s == line)
}

#[tokio::test]
async fn replay_01_full_flow() {
    let (mut ch, log, peer) = replay("01-full-flow").await;
    assert_eq!(ch.info().channel_id, "1795238021.1");
    assert_eq!(ch.info().caller_id_number, "3125550123");
    assert_eq!(ch.info().caller_id_name, "Test Caller");
    // agi_dnid is `unknown`: the extension is the dialled number.
    assert_eq!(ch.info().dialed_number, "8005550100");
    ch.answer().await.expect("answer");
    // result=57 (DTMF 9 cut the prompt) is still a played prompt.
    assert_eq!(
        ch.play(&prompt("bidbridge/welcome")).await.expect("play"),
        PlayOutcome::Played
    );
    assert_eq!(
        ch.collect(&collect_req("bidbridge/press1", 8000, 1))
            .await
            .expect("collect"),
        CollectOutcome::Digits("1".into())
    );
    assert_eq!(
        ch.play(&prompt("bidbridge/connecting"))
            .await
            .expect("play"),
        PlayOutcome::Played
    );
    let o = ch.bridge(&local("noanswer", 3)).await.expect("bridge 1");
    assert_eq!(o.status, LegStatus::NoAnswer);
    let o = ch.bridge(&local("busy", 5)).await.expect("bridge 2");
    assert_eq!(o.status, LegStatus::Busy);
    let o = ch.bridge(&local("answer", 10)).await.expect("bridge 3");
    assert_eq!(o.status, LegStatus::Answered);
    // The recorder did not use U(): no stamp, so no talk time is invented
    // (ANSWEREDTIME=19 would have been wrong, f4).
    assert_eq!(o.talk_time, None);
    assert_eq!(o.ended_by, Some(Party::Buyer));
    ch.set_variable("BIDBRIDGE_OUTCOME", "sold buyer=answer price=12.50")
        .await
        .expect("set");
    assert!(!ch.presence().is_gone());
    ch.hangup(HangupCause::NormalClearing)
        .await
        .expect("hangup");
    // The HANGUP line follows ~40 ms later.
    let mut presence = ch.presence();
    tokio::time::timeout(Duration::from_secs(1), presence.gone())
        .await
        .expect("HANGUP line");
    assert!(matches!(
        ch.play(&prompt("bidbridge/goodbye")).await,
        Err(ChannelError::CallerGone)
    ));
    ch.mark_settled().await.expect("settled after hangup");
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
    assert!(was_sent(
        &log,
        "SET VARIABLE BIDBRIDGE_OUTCOME \"sold buyer=answer price=12.50\""
    ));
    assert!(was_sent(&log, "GET DATA bidbridge/press1 8000 1"));
    assert!(was_sent(&log, "EXEC Hangup 16"));
}

#[tokio::test]
async fn replay_02a_hangup_during_stream_file() {
    let (mut ch, log, peer) = replay("02a-caller-hangup-during-stream-file").await;
    ch.answer().await.expect("answer");
    // 200 result=-1 endpos=12000, then HANGUP: the caller left.
    assert!(matches!(
        ch.play(&prompt("bidbridge/welcome")).await,
        Err(ChannelError::CallerGone)
    ));
    assert!(ch.presence().is_gone());
    assert!(matches!(
        ch.collect(&collect_req("bidbridge/press1", 5000, 1)).await,
        Err(ChannelError::CallerGone)
    ));
    // Hanging up a gone caller sends nothing.
    ch.hangup(HangupCause::NormalClearing)
        .await
        .expect("hangup");
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
    assert!(!was_sent(&log, "EXEC Hangup 16"));
}

#[tokio::test]
async fn replay_02b_hangup_during_get_data() {
    let (mut ch, log, peer) = replay("02b-caller-hangup-during-get-data").await;
    ch.answer().await.expect("answer");
    assert!(matches!(
        ch.collect(&collect_req("bidbridge/press1", 10000, 1)).await,
        Err(ChannelError::CallerGone)
    ));
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
    assert!(was_sent(&log, "GET DATA bidbridge/press1 10000 1"));
}

#[tokio::test]
async fn replay_02c_asterisk_closes_on_hangup() {
    let (mut ch, log, peer) = replay("02c-caller-hangup-agiexitonhangup").await;
    ch.answer().await.expect("answer");
    assert!(matches!(
        ch.play(&prompt("bidbridge/welcome")).await,
        Err(ChannelError::CallerGone)
    ));
    peer.await.expect("peer");
    // Asterisk closed the socket: nothing more can be sent, no panic, no hang.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ch.mark_settled().await.is_err());
    ch.close().await;
    assert_corresponds(&log);
}

#[tokio::test]
async fn replay_03_hangup_while_dial_rings() {
    let (mut ch, log, peer) = replay("03-caller-hangup-while-dial-rings").await;
    ch.answer().await.expect("answer");
    let o = ch.bridge(&local("noanswer", 30)).await.expect("bridge");
    // DIALSTATUS=CANCEL with result -1 and a HANGUP line.
    assert_eq!(o.status, LegStatus::CallerGone);
    assert!(ch.presence().is_gone());
    assert!(matches!(
        ch.bridge(&local("answer", 10)).await,
        Err(ChannelError::CallerGone)
    ));
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
}

#[tokio::test]
async fn replay_04_invalid_command_and_usage() {
    // The adapter never sends malformed commands; here the recorded error
    // replies (exact bytes) answer the adapter's own commands, chosen by
    // index, to check how each form is read.
    let recording = load("04-invalid-command-and-usage");
    let r: Vec<Vec<u8>> = recording
        .exchanges
        .iter()
        .map(|e| e.reply.clone())
        .collect();
    assert_eq!(r.len(), 16);
    assert_eq!(r[1], b"510 Invalid or unknown command\n");
    let queue: Vec<Vec<u8>> = vec![
        b"200 result=6\n".to_vec(), // CHANNEL STATUS at start (synthetic)
        r[0].clone(),               // ANSWER -> 200 result=0
        r[1].clone(),               // 510
        r[2].clone(),               // 510
        r[3].clone(),               // 520 STREAM FILE usage, 5 lines, two reads
        r[4].clone(),               // 520 GET DATA
        r[5].clone(),               // 520 SET VARIABLE
        r[6].clone(),               // 520 EXEC
        r[7].clone(),               // 520 WAIT FOR DIGIT
        r[8].clone(),               // lower-case answer -> 200 result=0
        r[10].clone(),              // VERBOSE -> 200 result=1 (SET SHARED)
        r[12].clone(),              // unset variable -> 200 result=0 (clock)
        r[11].clone(),              // EXEC NoSuchApplication -> 200 result=-2
        r[15].clone(),              // HANGUP -> 200 result=1
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let on_close = recording.on_close.clone();
    let preamble = recording.preamble.clone();
    let peer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&preamble).await.expect("preamble");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut next = 0;
        loop {
            if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
                buf.drain(..=lf);
                let reply = queue.get(next).cloned().unwrap_or_default();
                next += 1;
                s.write_all(&reply).await.expect("reply");
                continue;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = s.write_all(&on_close).await;
        next
    });
    let (stream, _) = listener.accept().await.expect("accept");
    let mut ch = AgiChannel::establish(stream, AsteriskConfig::default())
        .await
        .expect("establish");
    assert!(ch.info().answered);
    ch.answer().await.expect("answer");
    for _ in 0..2 {
        let e = ch.set_variable("A", "1").await.expect_err("510");
        assert!(
            matches!(&e, ChannelError::Refused { reply, .. } if reply == "510 Invalid or unknown command"),
            "{e:?}"
        );
    }
    let e = ch.play(&prompt("x")).await.expect_err("520");
    assert!(
        matches!(&e, ChannelError::Refused { reply, .. }
            if reply.starts_with("520 Send the given file") && reply.contains("<value>FAILED</value>")),
        "{e:?}"
    );
    for _ in 0..4 {
        let e = ch.set_variable("A", "1").await.expect_err("520");
        assert!(
            matches!(&e, ChannelError::Refused { reply, .. } if reply.starts_with("520 ")),
            "{e:?}"
        );
    }
    ch.answer().await.expect("lower-case answer's reply");
    // result=-2: the Dial application is missing; refused, not a leg outcome.
    let e = ch.bridge(&local("x", 5)).await.expect_err("-2");
    assert!(
        matches!(&e, ChannelError::Refused { reply, .. } if reply.contains("-2")),
        "{e:?}"
    );
    ch.hangup(HangupCause::NormalClearing)
        .await
        .expect("hangup");
    ch.close().await;
    assert_eq!(peer.await.expect("peer"), 14, "every queued reply was used");
}

#[tokio::test]
async fn replay_06_preamble_with_args_and_close() {
    let (ch, log, peer) = replay("06-preamble-with-args-and-close").await;
    let info = ch.info().clone();
    assert_eq!(info.dialed_number, "8005550101");
    assert_eq!(
        info.variables.get("campaign").map(String::as_str),
        Some("auto")
    );
    assert_eq!(info.variables.get("pub").map(String::as_str), Some("77"));
    assert_eq!(info.variables.get("zip").map(String::as_str), Some("60601"));
    assert!(
        info.variables
            .get("agi_channel")
            .is_some_and(|c| c.starts_with("Local/8005550101@bidbridge-in-"))
    );
    // We close without HANGUP; Asterisk answers with HANGUP and closes.
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
}

#[tokio::test]
async fn replay_07_dialstatus_matrix_and_answer_stamp() {
    let (mut ch, log, peer) = replay("07-dialstatus-matrix").await;
    ch.answer().await.expect("answer");
    let expect = [
        ("busy17", 5, LegStatus::Busy),
        ("congestion", 5, LegStatus::Unreachable),
        ("reject", 5, LegStatus::Unreachable),
        ("nosuchexten", 5, LegStatus::Unreachable),
        ("noanswer", 2, LegStatus::NoAnswer),
        ("shortcall", 10, LegStatus::Answered),
        ("shortcall", 10, LegStatus::Answered),
    ];
    for (ext, secs, status) in expect {
        let o = ch.bridge(&local(ext, secs)).await.expect("bridge");
        assert_eq!(o.status, status, "{ext}");
        if status == LegStatus::Answered {
            assert_eq!(o.ended_by, Some(Party::Buyer));
        }
    }
    // A ring group (`&`) cannot be expressed as a DialTarget: skip it.
    log.lock()
        .expect("log")
        .skip_dial
        .push("Local/busy@buyers&Local/answer@buyers".into());
    let o = ch.bridge(&local("shortcall", 10)).await.expect("stamped");
    assert_eq!(o.status, LegStatus::Answered);
    // U() stamp 1795238075.171 .. Dial end 1795238076.674 (f4); ANSWEREDTIME_MS said 14642.
    assert_eq!(o.talk_time, Some(Duration::from_millis(1503)));
    assert_eq!(o.ring_time, Duration::from_millis(1));
    assert_eq!(o.ended_by, Some(Party::Buyer));
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
    // The exact line fixture 07 shows Asterisk accepting.
    assert!(was_sent(
        &log,
        "EXEC Dial Local/shortcall@buyers,10,U(bidbridge-answered^Local/8005550100@bidbridge-in-0000000b;2)"
    ));
}

#[tokio::test]
async fn replay_08a_08b_connection_dies_mid_prompt() {
    for name in [
        "08a-server-dies-mid-call",
        "08b-server-dies-mid-call-guarded",
    ] {
        assert!(load(name).aborted, "{name}: the recorder aborted");
        let (mut ch, log, peer) = replay(name).await;
        ch.answer().await.expect("answer");
        ch.set_variable("BIDBRIDGE_STATE", "routing")
            .await
            .expect("set");
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            ch.play(&prompt("bidbridge/welcome")),
        )
        .await
        .expect("no hang");
        assert!(
            matches!(r, Err(ChannelError::ConnectionLost(_))),
            "{name}: {r:?}"
        );
        ch.close().await;
        peer.await.expect("peer");
        assert_corresponds(&log);
        assert!(was_sent(&log, "SET VARIABLE BIDBRIDGE_STATE routing"));
    }
}

#[tokio::test]
async fn replay_08c_connection_dies_during_dial() {
    let (mut ch, log, peer) = replay("08c-server-dies-during-bridge-guarded").await;
    ch.answer().await.expect("answer");
    let r = tokio::time::timeout(Duration::from_secs(5), ch.bridge(&local("answer", 10)))
        .await
        .expect("no hang");
    assert!(matches!(r, Err(ChannelError::ConnectionLost(_))), "{r:?}");
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
}

#[tokio::test]
async fn replay_09_digit_collection() {
    let (mut ch, log, peer) = replay("09-digit-collection").await;
    ch.answer().await.expect("answer");
    let cases = [
        (
            "bidbridge/press1",
            6000,
            CollectOutcome::Digits("60601".into()),
        ),
        (
            "bidbridge/goodbye",
            3000,
            CollectOutcome::Timeout {
                partial: String::new(),
            },
        ),
        (
            "bidbridge/connecting",
            3000,
            CollectOutcome::Timeout {
                partial: "12".into(),
            },
        ),
        (
            "bidbridge/press1",
            8000,
            CollectOutcome::Digits("77".into()),
        ),
    ];
    for (file, ms, expected) in cases {
        assert_eq!(
            ch.collect(&collect_req(file, ms, 5))
                .await
                .expect("collect"),
            expected
        );
    }
    // -1 endpos=0 with no HANGUP: the prompt failed, the caller is still there.
    assert!(matches!(
        ch.play(&prompt("bidbridge/nosuchprompt")).await,
        Ok(PlayOutcome::PromptFailed { .. })
    ));
    assert!(!ch.presence().is_gone());
    ch.mark_settled().await.expect("settled");
    ch.hangup(HangupCause::NormalClearing)
        .await
        .expect("hangup");
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
    assert!(was_sent(&log, "SET VARIABLE BIDBRIDGE_DONE 1"));
    assert!(was_sent(&log, "GET DATA bidbridge/press1 6000 5"));
}

#[tokio::test]
async fn replay_10_no_pipelining_and_dial_reply() {
    let recording = load("10-command-sent-during-prompt");
    // The recording itself: commands cut by pipelining got no reply.
    let cut: Vec<&str> = recording
        .exchanges
        .iter()
        .filter(|e| e.reply.is_empty())
        .map(|e| e.command.as_str())
        .collect();
    assert_eq!(
        cut,
        [
            "STREAM FILE bidbridge/welcome \"0123456789\"",
            "GET DATA bidbridge/press1 5000 1",
            "GET DATA bidbridge/press1 5000 1"
        ]
    );
    let (mut ch, log, peer) = replay("10-command-sent-during-prompt").await;
    ch.answer().await.expect("answer");
    // Dial's reply came in one read with the pipelined NOOP's: only the
    // Dial's own reply is ours.
    let o = ch.bridge(&local("shortcall", 10)).await.expect("bridge");
    // No DIALSTATUS in this recording: an unknown status is a failure.
    assert_eq!(o.status, LegStatus::Failed);
    ch.close().await;
    peer.await.expect("peer");
    assert_corresponds(&log);
}

#[test]
fn every_fixture_is_replayed() {
    // Guards against a new recording landing without a replay test.
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter_map(|n| n.strip_suffix(".a2s.raw").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "01-full-flow",
            "02a-caller-hangup-during-stream-file",
            "02b-caller-hangup-during-get-data",
            "02c-caller-hangup-agiexitonhangup",
            "03-caller-hangup-while-dial-rings",
            "04-invalid-command-and-usage",
            "06-preamble-with-args-and-close",
            "07-dialstatus-matrix",
            "08a-server-dies-mid-call",
            "08b-server-dies-mid-call-guarded",
            "08c-server-dies-during-bridge-guarded",
            "09-digit-collection",
            "10-command-sent-during-prompt",
        ]
    );
    for name in &names {
        let r = load(name);
        assert!(!r.preamble.is_empty());
    }
}
