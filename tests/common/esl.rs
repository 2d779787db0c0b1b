//! Reading the recorded FreeSWITCH transcripts (`../shared/fixtures/esl/`,
//! format `ESL-TRANSCRIPT 1`, see its README) and playing the switch's side
//! of them against the daemon.
//!
//! The replay peer is `MockEslServer`'s connection type from
//! freeswitch-esl-tokio (`MockConnection::from_stream`): it sends the
//! recorded bytes verbatim. Two things cannot be verbatim and are rewritten
//! exactly, never approximated: the `Application-UUID` of each execute
//! result (FreeSWITCH echoes the `Event-UUID` the daemon chose, so the
//! recorded id is replaced by the daemon's own), and the `Content-Length`
//! of a frame whose body that substitution changed (same length UUIDs, so
//! in practice never).

#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/esl"
    ))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Bytes FreeSWITCH sent: one whole ESL frame.
    Recv {
        t_ms: f64,
        bytes: Vec<u8>,
    },
    /// Bytes the recorder (the daemon's role) sent: one command.
    Send {
        t_ms: f64,
        bytes: Vec<u8>,
    },
    Eof,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub name: String,
    pub meta: Vec<(String, String)>,
    pub records: Vec<Record>,
}

impl Transcript {
    pub fn load(name: &str) -> Transcript {
        let path = fixture_dir().join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut i = 0;
        let line = |data: &[u8], i: &mut usize| -> String {
            let start = *i;
            while *i < data.len() && data[*i] != b'\n' {
                *i += 1;
            }
            let text = String::from_utf8_lossy(&data[start..*i]).to_string();
            *i += 1;
            text
        };
        assert_eq!(
            line(&data, &mut i),
            "#ESL-TRANSCRIPT 1",
            "{name}: not a transcript"
        );
        let mut meta = Vec::new();
        let mut records = Vec::new();
        while i < data.len() {
            let marker = line(&data, &mut i);
            let mut parts = marker.split(' ');
            match parts.next() {
                Some("#META") => {
                    let rest = marker.trim_start_matches("#META ");
                    if let Some((k, v)) = rest.split_once(": ") {
                        meta.push((k.to_string(), v.to_string()));
                    }
                }
                Some(kind @ ("#RECV" | "#SEND")) => {
                    let n: usize = parts.next().and_then(|n| n.parse().ok()).expect("length");
                    let t_ms: f64 = parts.next().and_then(|t| t.parse().ok()).expect("time");
                    let bytes = data[i..i + n].to_vec();
                    i += n;
                    assert_eq!(data.get(i), Some(&b'\n'), "{name}: separator after payload");
                    i += 1;
                    records.push(if kind == "#RECV" {
                        Record::Recv { t_ms, bytes }
                    } else {
                        Record::Send { t_ms, bytes }
                    });
                }
                Some("#EOF") => records.push(Record::Eof),
                _ => {}
            }
        }
        Transcript {
            name: name.to_string(),
            meta,
            records,
        }
    }

    /// The first RECV (outbound: the connect reply).
    pub fn connect_reply(&self) -> Vec<u8> {
        self.records
            .iter()
            .find_map(|r| match r {
                Record::Recv { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .expect("a connect reply")
    }
}

/// A header's value in a frame (first match, raw, not url-decoded).
pub fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

/// A field of an event frame, plain (`Name: url-encoded value` lines) or
/// JSON (`text/event-json`, one flat object; a list variable is an array
/// and is returned as its JSON text). Plain values come back as they are on
/// the wire, JSON values decoded.
pub fn event_field(frame: &str, name: &str) -> Option<String> {
    match header(frame, "Content-Type")? {
        "text/event-plain" => header(frame, name).map(str::to_string),
        "text/event-json" => {
            let (_, body) = frame.split_once("\n\n")?;
            let object: serde_json::Value = serde_json::from_str(body).ok()?;
            match object.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        }
        _ => None,
    }
}

/// Case-insensitive header lookup in a command the daemon sent (the
/// library title-cases header names; FreeSWITCH does not care).
pub fn command_header<'a>(command: &'a str, name: &str) -> Option<&'a str> {
    command.lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// The verb of a command: `connect`, `myevents`, `sendmsg`, `api`, ...
pub fn verb(command: &str) -> &str {
    command.split(['\n', ' ']).next().unwrap_or_default()
}

/// `execute-app-name` of a sendmsg (or `hangup` for a hangup call-command).
pub fn app_of(command: &str) -> Option<String> {
    match command_header(command, "call-command") {
        Some("execute") => command_header(command, "execute-app-name").map(str::to_string),
        Some(other) => Some(other.to_string()),
        None => None,
    }
}

/// Replaces every occurrence of `from` with `to` (same length) in a frame.
pub fn rewrite(frame: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "UUID rewrite must keep frame lengths");
    let text = String::from_utf8_lossy(frame).to_string();
    text.replace(from, to).into_bytes()
}
