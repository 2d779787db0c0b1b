//! A fake FreeSWITCH for `bidbridge simulate`: it dials the daemon's outbound
//! Event Socket port exactly as the dialplan's `socket 127.0.0.1:8084 async
//! full` application does (one TCP connection per call) and plays the
//! switch's side of the conversation from a [`Scenario`].
//!
//! What it owns: the switch's wire behaviour as recorded in
//! `shared/fixtures/esl/` (FreeSWITCH 1.10.12): the CHANNEL_DATA connect
//! reply, command replies, the async `sendmsg` execute cycle
//! (`+OK` → CHANNEL_EXECUTE → CHANNEL_EXECUTE_COMPLETE matched by
//! `Application-UUID`), bridge results with their sticky variables, the
//! hang-up event order and the linger/disconnect notices. Every event is
//! built from a real recorded frame ([`fs_templates.txt`], copied
//! byte-exact from transcript 01), so header sets and frame sizes are
//! realistic; only identities, times and the variables the call changed
//! are substituted.
//!
//! Time: the switch's clock (every `Event-Date-Timestamp`) is *simulated*.
//! It starts at real now; scenario durations (ringing, talking, prompts)
//! advance it by their simulated length while costing only
//! `simulated × time_scale` of real waiting; time spent waiting on the
//! daemon advances it one-to-one. So a 95 s conversation reads as 95 s in
//! the daemon's record even when it takes 0.95 s of real time.
//!
//! What it must never do: panic or hang on what the daemon sends (garbage,
//! early close, silence all end in a failed [`CallTrace`] within bounded
//! time), or talk to anything but the address it was given.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::scenario::{CallTrace, CallerProfile, EndedBy, HangupStage, LegBehaviour, Scenario};

/// Real frames from transcript 01, in the `#FRAME <name> <index> <len>` format.
const TEMPLATE_TEXT: &str = include_str!("fs_templates.txt");

/// Identities in the recorded frames that each simulated call replaces.
const TPL_UUID: &str = "78570aa9-402e-4726-a7a4-2e616e685c22";
const TPL_OTHER_UUID: &str = "ff196e5f-a40c-4f8f-b381-0a8e6ae249e5";
const TPL_CORE_UUID: &str = "8e5b1f8d-824c-42d8-a4d1-6c59637084ad";
const TPL_CALLER: &str = "+13125550199";
const TPL_CALLER_DIGITS: &str = "13125550199";
const TPL_DEST: &str = "8005550100";
const TPL_OTHER_CHANNEL: &str = "loopback/buyer_answer-a";
const TPL_OTHER_DEST: &str = "buyer_answer";

/// Longest a daemon may leave a live call without a command before the
/// simulator gives up on it (nothing running on the switch side).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the switch waits for `exit` after a linger notice (FreeSWITCH
/// waits forever with `linger` and no timeout; a simulator run must end).
const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// Connect timeout to the daemon.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Largest command header block / body accepted from the daemon.
const MAX_COMMAND: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// Simulated lengths of things FreeSWITCH does on its own.
const PROMPT_SECS: f64 = 1.5;
const DIGIT_SECS: f64 = 0.3;

/// What FreeSWITCH's `switch_url_encode` escapes (everything else, `/` and
/// `,` included, goes out as is, as the recordings show).
const FS_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Errors that end a simulated call.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not connect to the daemon at {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("connection to the daemon failed: {0}")]
    Io(String),
    #[error("the daemon sent something that is not an ESL command: {0}")]
    Garbage(String),
    #[error("the daemon closed the connection {0}")]
    Closed(&'static str),
    #[error("the daemon went silent for {0:?}")]
    Silent(Duration),
    #[error("bad built-in templates: {0}")]
    Templates(String),
}

// ---------------------------------------------------------------------------
// Templates

/// One recorded frame: its headers with url-decoded values, in order.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub headers: Vec<(String, String)>,
    /// Per header: does its value hold one of the recording's identities
    /// (`TPL_*`) that each simulated call replaces with its own? Most do
    /// not; knowing it up front keeps the load generator from searching
    /// every value of every event it sends (it shares the bench machine
    /// with the daemon).
    pub templated: Vec<bool>,
    /// The frame exactly as recorded (for notices, which are sent as text).
    pub raw: String,
}

/// One header of an event being written: borrowed from the template or the
/// channel where the value is theirs unchanged.
type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The recording's identities a simulated call replaces with its own.
const TPL_ALL: [&str; 8] = [
    TPL_UUID,
    TPL_OTHER_UUID,
    TPL_CORE_UUID,
    TPL_CALLER,
    TPL_CALLER_DIGITS,
    TPL_DEST,
    TPL_OTHER_CHANNEL,
    TPL_OTHER_DEST,
];

impl Template {
    fn new(raw: &str) -> Template {
        let headers = parse_headers(raw);
        let templated = headers
            .iter()
            .map(|(_, v)| TPL_ALL.iter().any(|t| v.contains(t)))
            .collect();
        Template {
            headers,
            templated,
            raw: raw.to_string(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Templates {
    frames: Vec<(String, Template)>,
}

impl Templates {
    fn parse(text: &str) -> Result<Templates, String> {
        let mut rest = text;
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (line, after) = rest.split_once('\n').ok_or("unterminated marker line")?;
            rest = after;
            if let Some(spec) = line.strip_prefix("#FRAME ") {
                let mut parts = spec.split(' ');
                let name = parts.next().ok_or("frame without name")?.to_string();
                let len: usize = parts
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .ok_or("frame without length")?;
                let raw = rest.get(..len).ok_or("frame shorter than its length")?;
                rest = rest.get(len + 1..).ok_or("frame without separator")?;
                frames.push((name, Template::new(raw)));
            } else if !line.starts_with('#') {
                return Err(format!("unexpected line {line:?}"));
            }
        }
        Ok(Templates { frames })
    }

    pub(crate) fn get(&self, name: &str) -> Result<&Template, SimError> {
        self.frames
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| SimError::Templates(format!("no {name} frame")))
    }
}

/// `Name: url-encoded value` lines up to the first blank line.
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), url_decode(v)))
        .collect()
}

fn url_decode(v: &str) -> String {
    percent_decode_str(v).decode_utf8_lossy().into_owned()
}

/// Serialises headers the way `switch_event_serialize(encode=TRUE)` does.
pub(crate) fn serialize_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> String {
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 8)
        .sum();
    let mut out = String::with_capacity(size + size / 4);
    for (k, v) in headers {
        out.push_str(k.as_ref());
        out.push_str(": ");
        out.extend(utf8_percent_encode(v.as_ref(), FS_UNSAFE));
        out.push('\n');
    }
    out.push('\n');
    out
}

pub(crate) fn templates() -> Result<&'static Templates, SimError> {
    static PARSED: LazyLock<Result<Templates, String>> =
        LazyLock::new(|| Templates::parse(TEMPLATE_TEXT));
    PARSED.as_ref().map_err(|e| SimError::Templates(e.clone()))
}

/// FreeSWITCH numbers every event it fires, switch-wide.
static EVENT_SEQUENCE: AtomicU64 = AtomicU64::new(1327);

// ---------------------------------------------------------------------------
// The simulated clock

/// See the module docs: scenario durations are scaled, daemon time is not.
#[derive(Debug)]
struct Clock {
    sim_us: i64,
    mark: Instant,
    scale: f64,
}

impl Clock {
    fn new(scale: f64) -> Clock {
        Clock {
            sim_us: Utc::now().timestamp_micros(),
            mark: Instant::now(),
            scale,
        }
    }

    fn now_us(&self) -> i64 {
        let real = i64::try_from(self.mark.elapsed().as_micros()).unwrap_or(i64::MAX / 2);
        self.sim_us.saturating_add(real)
    }

    /// A point `secs` simulated seconds from now: (real deadline, simulated time).
    fn after(&self, secs: f64) -> (Instant, i64) {
        let secs = secs.max(0.0);
        let real = Duration::from_secs_f64((secs * self.scale).min(86_400.0));
        (
            Instant::now() + real,
            self.now_us() + (secs * 1_000_000.0) as i64,
        )
    }

    /// A scheduled point was reached: the switch's clock reads its time.
    fn reach(&mut self, sim_us: i64) {
        let now = self.now_us();
        self.sim_us = sim_us.max(now);
        self.mark = Instant::now();
    }
}

// ---------------------------------------------------------------------------
// The simulated channel

#[derive(Debug, Clone)]
struct OtherLeg {
    uuid: String,
    channel: String,
    dest: String,
    created_us: i64,
}

/// Is `header` the event header of channel variable `name`
/// (`variable_<name>`)? Lengths first: this runs for every variable of a
/// channel on every lookup.
fn is_variable(header: &str, name: &str) -> bool {
    header.len() == name.len() + "variable_".len()
        && header.ends_with(name)
        && header.starts_with("variable_")
}

#[derive(Debug)]
struct Channel {
    uuid: String,
    core_uuid: String,
    caller: String,
    dest: String,
    /// The channel variables in FreeSWITCH's order, each under its event
    /// header name (`variable_<name>`), so an event borrows them as they are.
    vars: Vec<(String, String)>,
    created_us: i64,
    answered_us: Option<i64>,
    progress_us: Option<i64>,
    bridged_us: Option<i64>,
    hangup_us: Option<i64>,
    hangup_cause: Option<String>,
    other: Option<OtherLeg>,
    executed_any: bool,
    last_app: Option<(String, String)>,
    digits_dialed: String,
}

impl Channel {
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| is_variable(k, name))
            .map(|(_, v)| v.as_str())
    }

    /// FreeSWITCH keeps a variable's place when it is overwritten and
    /// appends new ones, which is what the recordings show.
    fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.vars.iter_mut().find(|(k, _)| is_variable(k, name)) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((format!("variable_{name}"), value)),
        }
    }

    fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| !is_variable(k, name));
    }

    /// Appends to a FreeSWITCH list variable (`a` → `ARRAY::a|:b`).
    fn push_list(&mut self, name: &str, item: &str) {
        let value = match self.var(name) {
            None => item.to_string(),
            Some(old) if old.starts_with("ARRAY::") => format!("{old}|:{item}"),
            Some(old) => format!("ARRAY::{old}|:{item}"),
        };
        self.set(name, value);
    }

    fn answer_state(&self) -> &'static str {
        if self.hangup_us.is_some() {
            "hangup"
        } else if self.answered_us.is_some() {
            "answered"
        } else {
            "ringing"
        }
    }

    fn call_state(&self) -> &'static str {
        if self.hangup_us.is_some() {
            "HANGUP"
        } else if self.answered_us.is_some() {
            "ACTIVE"
        } else {
            "RINGING"
        }
    }

    fn substitute(&self, value: &str) -> String {
        let caller_digits = self.caller.trim_start_matches('+');
        // In this order: the caller's number holds its digits, the other
        // leg's channel name its destination.
        let mut pairs = vec![
            (TPL_UUID, self.uuid.as_str()),
            (TPL_CORE_UUID, self.core_uuid.as_str()),
            (TPL_CALLER, self.caller.as_str()),
            (TPL_CALLER_DIGITS, caller_digits),
            (TPL_DEST, self.dest.as_str()),
        ];
        if let Some(other) = &self.other {
            pairs.extend([
                (TPL_OTHER_UUID, other.uuid.as_str()),
                (TPL_OTHER_CHANNEL, other.channel.as_str()),
                (TPL_OTHER_DEST, other.dest.as_str()),
            ]);
        }
        // A value holds one identity at most, usually none: copy once, and
        // search-and-copy only for what is there.
        let mut v = value.to_string();
        for (recorded, ours) in pairs {
            if v.contains(recorded) {
                v = v.replace(recorded, ours);
            }
        }
        v
    }

    /// A header's value at `now`, for headers whose value is a time or a state.
    fn dynamic(&self, name: &str, now: i64, seq: u64) -> Option<String> {
        let t = |v: Option<i64>| v.unwrap_or(0).to_string();
        if let Some(rest) = name.strip_prefix("Other-Leg-") {
            let other = self.other.as_ref()?;
            return match rest {
                "Profile-Created-Time" | "Channel-Created-Time" | "Channel-Answered-Time" => {
                    Some(other.created_us.to_string())
                }
                r if r.ends_with("-Time") => Some("0".into()),
                _ => None,
            };
        }
        let stamp = || Utc.timestamp_micros(now).single();
        Some(match name {
            "Event-Date-Timestamp" => now.to_string(),
            "Event-Date-Local" => stamp()?.format("%Y-%m-%d %H:%M:%S").to_string(),
            "Event-Date-GMT" => stamp()?.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            "Event-Sequence" => seq.to_string(),
            "Answer-State" => self.answer_state().into(),
            "Channel-Call-State" => self.call_state().into(),
            "Hangup-Cause" => self.hangup_cause.clone()?,
            n if n.ends_with("Profile-Created-Time") || n.ends_with("Channel-Created-Time") => {
                self.created_us.to_string()
            }
            n if n.ends_with("Channel-Answered-Time") => t(self.answered_us),
            n if n.ends_with("Channel-Progress-Time") => t(self.progress_us),
            n if n.ends_with("Channel-Hangup-Time") => t(self.hangup_us),
            n if n.ends_with("Channel-Bridged-Time") => t(self.bridged_us),
            _ => return None,
        })
    }

    /// The headers of an event built from `tpl`: the template's own headers
    /// with this call's identities and times, this channel's variables in
    /// place of the recorded ones, and `extra` overriding or appended.
    fn headers<'a>(
        &'a self,
        tpl: &'a Template,
        bridge_tpl: &'a Template,
        now: i64,
        extra: &'a [(&'a str, String)],
    ) -> Vec<Header<'a>> {
        let seq = EVENT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let mut out: Vec<Header<'a>> = Vec::with_capacity(tpl.headers.len() + 40);
        let has_other_block = tpl.headers.iter().any(|(k, _)| k.starts_with("Other-Leg-"));
        let mut vars_done = false;
        let mut used_extra = vec![false; extra.len()];
        for ((k, v), templated) in tpl.headers.iter().zip(&tpl.templated) {
            if k.starts_with("variable_") {
                if !vars_done {
                    if !has_other_block && self.other.is_some() {
                        self.push_other_block(bridge_tpl, now, seq, &mut out);
                    }
                    out.extend(
                        self.vars
                            .iter()
                            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str()))),
                    );
                    vars_done = true;
                }
                continue;
            }
            if (k == "Other-Type" || k.starts_with("Other-Leg-")) && self.other.is_none() {
                continue;
            }
            if k == "Hangup-Cause" && self.hangup_cause.is_none() {
                continue;
            }
            if let Some(i) = extra.iter().position(|(n, _)| n == k) {
                used_extra[i] = true;
                out.push((
                    Cow::Borrowed(k.as_str()),
                    Cow::Borrowed(extra[i].1.as_str()),
                ));
                continue;
            }
            let value = match self.dynamic(k, now, seq) {
                Some(value) => Cow::Owned(value),
                None if *templated => Cow::Owned(self.substitute(v)),
                None => Cow::Borrowed(v.as_str()),
            };
            out.push((Cow::Borrowed(k.as_str()), value));
        }
        for (i, (k, v)) in extra.iter().enumerate() {
            if !used_extra[i] {
                out.push((Cow::Borrowed(*k), Cow::Borrowed(v.as_str())));
            }
        }
        out
    }

    fn push_other_block<'a>(
        &'a self,
        bridge_tpl: &'a Template,
        now: i64,
        seq: u64,
        out: &mut Vec<Header<'a>>,
    ) {
        for (k, v) in bridge_tpl
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("Other-Leg-"))
        {
            let value = self
                .dynamic(k, now, seq)
                .unwrap_or_else(|| self.substitute(v));
            out.push((Cow::Borrowed(k.as_str()), Cow::Owned(value)));
        }
    }
}

/// The event frame around a plain body, as mod_event_socket writes it.
pub(crate) fn event_frame<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> String {
    let body = serialize_headers(headers);
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
}

/// The event frame around a JSON body, as mod_event_socket writes it for
/// `myevents json` (recording 04b): one flat object in header order, every
/// value a string except list variables (`ARRAY::a|:b`), which FreeSWITCH
/// keeps as arrays and cJSON writes as JSON arrays. No newline after it.
pub(crate) fn json_event_frame<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> String {
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 8)
        .sum();
    let mut body = String::with_capacity(size + 2);
    body.push('{');
    for (i, (k, v)) in headers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_json_string(&mut body, k.as_ref());
        body.push(':');
        match v.as_ref().strip_prefix("ARRAY::") {
            Some(items) => {
                body.push('[');
                for (j, item) in items.split("|:").enumerate() {
                    if j > 0 {
                        body.push(',');
                    }
                    push_json_string(&mut body, item);
                }
                body.push(']');
            }
            None => push_json_string(&mut body, v.as_ref()),
        }
    }
    body.push('}');
    format!(
        "Content-Length: {}\nContent-Type: text/event-json\n\n{body}",
        body.len()
    )
}

/// A JSON string as cJSON writes it: `"` and `\\` escaped, control
/// characters as `\n`-style or `\u00XX` escapes, everything else as is.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    // Most values need no escape at all: copy them whole.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn reply(text: &str) -> String {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n")
}

fn api_response(body: &str) -> String {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

// ---------------------------------------------------------------------------
// Commands from the daemon

#[derive(Debug)]
struct Command {
    line: String,
    headers: Vec<(String, String)>,
}

impl Command {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads commands (`line\nHeader: value\n...\n\n` plus an optional
/// Content-Length body) until the connection ends or turns to garbage.
async fn read_commands(mut rd: OwnedReadHalf, tx: mpsc::Sender<Result<Command, SimError>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // A whole header block?
        if let Some(end) = find_blank_line(&buf) {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = match std::str::from_utf8(&block[..end]) {
                Ok(t) => t.trim_start_matches(['\r', '\n']).to_string(),
                Err(_) => {
                    let _ = tx
                        .send(Err(SimError::Garbage("non-UTF-8 command".into())))
                        .await;
                    return;
                }
            };
            if text.is_empty() {
                continue;
            }
            let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
            let line = lines.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim_start().to_string()))
                .collect();
            let body_len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body_len > MAX_BODY {
                let _ = tx
                    .send(Err(SimError::Garbage(format!("{body_len}-byte body"))))
                    .await;
                return;
            }
            while buf.len() < body_len {
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Err(SimError::Closed("mid-command"))).await;
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..body_len);
            if tx.send(Ok(Command { line, headers })).await.is_err() {
                return;
            }
            continue;
        }
        if buf.len() > MAX_COMMAND {
            let _ = tx
                .send(Err(SimError::Garbage(format!(
                    "no command end in {} bytes",
                    buf.len()
                ))))
                .await;
            return;
        }
        match rd.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx.send(Err(SimError::Closed("without exit"))).await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx.send(Err(SimError::Io(e.to_string()))).await;
                return;
            }
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

// ---------------------------------------------------------------------------
// Applications

#[derive(Debug, Clone)]
struct App {
    name: String,
    arg: String,
    uuid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BridgeStage {
    Ringing,
    Talking,
}

#[derive(Debug)]
struct BridgeRun {
    leg_uuid: String,
    endpoint: String,
    dest: String,
    sip: bool,
    stage: BridgeStage,
    first: bool,
}

#[derive(Debug)]
enum Kind {
    Playback,
    Collect { digits: Option<String>, var: String },
    Bridge(BridgeRun),
}

/// What happens when an app's timer fires.
#[derive(Debug, Clone)]
enum Step {
    Complete,
    BridgeAnswer { talk_secs: f64, caller_ends: bool },
    BridgeEnd,
    BridgeFail { cause: &'static str },
}

#[derive(Debug)]
struct Running {
    app: App,
    kind: Kind,
    timer: Option<(Instant, i64, Step)>,
}

/// The Asterisk-style DIALSTATUS FreeSWITCH sets beside `originate_disposition`.
fn dialstatus(cause: &str) -> &'static str {
    match cause {
        "SUCCESS" => "SUCCESS",
        "NO_ANSWER" | "NO_USER_RESPONSE" => "NOANSWER",
        "USER_BUSY" => "BUSY",
        "ORIGINATOR_CANCEL" => "CANCEL",
        _ => "CHANUNAVAIL",
    }
}

fn q850(cause: &str) -> u16 {
    match cause {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_DESTINATION" => 3,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "CALL_REJECTED" => 21,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "SWITCH_CONGESTION" => 42,
        "ORIGINATOR_CANCEL" => 487,
        _ => 31,
    }
}

/// `{originate_timeout=N,...}endpoint` → (N, endpoint).
fn parse_bridge_arg(arg: &str) -> (Option<u64>, String) {
    let Some(rest) = arg.strip_prefix('{') else {
        return (None, arg.to_string());
    };
    let Some((vars, endpoint)) = rest.split_once('}') else {
        return (None, arg.to_string());
    };
    let timeout = vars
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "originate_timeout")
        .and_then(|(_, v)| v.trim().parse().ok());
    (timeout, endpoint.to_string())
}

/// The number or user part a leg's far end was dialled as.
fn leg_dest(endpoint: &str) -> String {
    let tail = endpoint.rsplit('/').next().unwrap_or(endpoint);
    let tail = tail.strip_prefix("sip:").unwrap_or(tail);
    tail.split('@').next().unwrap_or(tail).to_string()
}

// ---------------------------------------------------------------------------
// One call

/// How the call's switch side ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    HungUp,
}

struct Call {
    wr: OwnedWriteHalf,
    rx: mpsc::Receiver<Result<Command, SimError>>,
    tpl: &'static Templates,
    clock: Clock,
    ch: Channel,
    profile: CallerProfile,
    scenario: Arc<Scenario>,
    trace: CallTrace,
    connected: bool,
    events_on: bool,
    /// `myevents json` / `event json ...`: events as `text/event-json`.
    events_json: bool,
    /// Event names switched off with `nixevent` (FreeSWITCH clears their
    /// `event_list` entries, so they never reach the socket).
    nixed: Vec<String>,
    linger: Option<Option<u64>>,
    /// `resume` was sent: when the daemon closes the session without
    /// `exit`, the switch continues the dialplan instead of hanging up.
    resumed: bool,
    state: State,
    queue: VecDeque<App>,
    running: Option<Running>,
    /// The caller's own hang-up: (real deadline, simulated time).
    caller_timer: Option<(Instant, i64)>,
    collects: usize,
    prompts_started: usize,
    bridges_started: usize,
    answered_bridges: usize,
    /// Set when the call ended for the daemon (transfer, hang-up).
    transferred: bool,
    close_at: Option<Instant>,
    /// An armed `sched_transfer`: (real deadline, extension). FreeSWITCH's
    /// scheduler runs on the wall clock, so this deadline is not scaled.
    failsafe: Option<(Instant, String)>,
}

/// Places one call: connects to `esl`, plays the switch until the daemon
/// says `exit` (or fails), and reports what happened. Never panics.
pub async fn run_call(esl: SocketAddr, scenario: Arc<Scenario>, index: u32) -> CallTrace {
    let started = std::time::Instant::now();
    let mut trace = CallTrace {
        index,
        caller: scenario.caller_number(index),
        ..CallTrace::default()
    };
    let result = async {
        let tpl = templates()?;
        let stream = tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(esl))
            .await
            .map_err(|_| SimError::Connect {
                addr: esl,
                reason: "timed out".into(),
            })?
            .map_err(|e| SimError::Connect {
                addr: esl,
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_commands(rd, tx));
        let clock = Clock::new(scenario.run.time_scale);
        let created = clock.now_us();
        let profile = scenario.caller(index);
        let mut call = Call {
            wr,
            rx,
            tpl,
            ch: Channel {
                uuid: uuid::Uuid::new_v4().to_string(),
                core_uuid: core_uuid().to_string(),
                caller: trace.caller.clone(),
                dest: scenario.run.tracking_number.clone(),
                vars: Vec::new(),
                created_us: created,
                answered_us: None,
                progress_us: None,
                bridged_us: None,
                hangup_us: None,
                hangup_cause: None,
                other: None,
                executed_any: false,
                last_app: None,
                digits_dialed: String::new(),
            },
            clock,
            profile,
            scenario: scenario.clone(),
            trace: std::mem::take(&mut trace),
            connected: false,
            events_on: false,
            events_json: false,
            nixed: Vec::new(),
            linger: None,
            resumed: false,
            state: State::Live,
            queue: VecDeque::new(),
            running: None,
            caller_timer: None,
            collects: 0,
            prompts_started: 0,
            bridges_started: 0,
            answered_bridges: 0,
            transferred: false,
            close_at: None,
            failsafe: None,
        };
        // The channel's variables as the connect reply shows them.
        let data = tpl.get("CHANNEL_DATA")?;
        call.ch.vars = data
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("variable_"))
            .map(|(k, v)| (k.clone(), call.ch.substitute(v)))
            .collect();
        // The caller profile's own variables (a publisher's SIP headers).
        for (name, value) in &call.profile.variables {
            call.ch.unset(name);
            call.ch.set(name, value.clone());
        }
        let outcome = call.serve().await;
        reader.abort();
        trace = std::mem::take(&mut call.trace);
        outcome
    }
    .await;
    if let Err(e) = result {
        trace.completed = false;
        if trace.ended.is_empty() {
            trace.ended = "error".into();
        }
        trace.error = Some(e.to_string());
    }
    trace.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    trace
}

fn core_uuid() -> &'static str {
    static CORE: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());
    CORE.as_str()
}

impl Call {
    async fn send(&mut self, text: &str) -> Result<(), SimError> {
        self.wr
            .write_all(text.as_bytes())
            .await
            .map_err(|e| SimError::Io(e.to_string()))
    }

    async fn emit(&mut self, name: &str, extra: &[(&str, String)]) -> Result<(), SimError> {
        if !self.events_on {
            return Ok(());
        }
        let tpl = self.tpl.get(name)?;
        if !self.nixed.is_empty()
            && let Some((_, event_name)) = tpl.headers.iter().find(|(k, _)| k == "Event-Name")
            && self.nixed.iter().any(|n| n == event_name)
        {
            return Ok(());
        }
        let bridge_tpl = self.tpl.get("CHANNEL_BRIDGE")?;
        let now = self.clock.now_us();
        let headers = self.ch.headers(tpl, bridge_tpl, now, extra);
        let frame = if self.events_json {
            json_event_frame(&headers)
        } else {
            event_frame(&headers)
        };
        self.send(&frame).await
    }

    fn app_headers(app: &App, response: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Application", app.name.clone()),
            ("Application-Data", app.arg.clone()),
        ];
        if let Some(r) = response {
            h.push(("Application-Response", r.to_string()));
        }
        h.push(("Application-UUID", app.uuid.clone()));
        h
    }

    async fn emit_execute(&mut self, app: &App) -> Result<(), SimError> {
        if !self.ch.executed_any {
            // The socket application parks the channel before the first
            // queued app runs (CHANNEL_PARK, transcript 01).
            self.emit("CHANNEL_PARK", &[]).await?;
            self.ch.executed_any = true;
            self.ch.set("current_loop", "1");
            self.ch.set("total_loops", "1");
        }
        self.ch.set("current_application", app.name.clone());
        if app.arg.is_empty() {
            self.ch.unset("current_application_data");
        } else {
            self.ch.set("current_application_data", app.arg.clone());
        }
        self.ch.unset("current_application_response");
        self.ch.last_app = Some((app.name.clone(), app.arg.clone()));
        let h = Self::app_headers(app, None);
        self.emit("CHANNEL_EXECUTE", &h).await
    }

    async fn emit_complete(&mut self, app: &App, response: &str) -> Result<(), SimError> {
        let h = Self::app_headers(app, Some(response));
        self.emit("CHANNEL_EXECUTE_COMPLETE", &h).await
    }

    /// The main loop: commands, app timers, the caller's own hang-up.
    async fn serve(&mut self) -> Result<(), SimError> {
        let mut idle_since = Instant::now();
        loop {
            if self.state == State::Live
                && self.running.is_none()
                && !self.transferred
                && let Some(app) = self.queue.pop_front()
            {
                self.start_app(app).await?;
                continue;
            }
            let app_timer = self
                .running
                .as_ref()
                .and_then(|r| r.timer.as_ref())
                .map(|(at, _, _)| *at);
            let caller_timer = self.caller_timer.map(|(at, _)| at);
            let failsafe = self
                .failsafe
                .as_ref()
                .filter(|_| self.state == State::Live && !self.transferred)
                .map(|(at, _)| *at);
            let busy = app_timer.is_some() || caller_timer.is_some() || failsafe.is_some();
            let limit = if self.state == State::HungUp || self.transferred {
                EXIT_LIMIT
            } else {
                IDLE_LIMIT
            };
            let idle_deadline = idle_since + limit;
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                cmd = self.rx.recv() => {
                    idle_since = Instant::now();
                    let cmd = match cmd {
                        Some(Ok(cmd)) => cmd,
                        Some(Err(SimError::Closed("without exit"))) | None if self.resumed => {
                            return self.dialplan_resumed().await;
                        }
                        Some(Err(e)) => return Err(e),
                        None => return Err(SimError::Closed("without exit")),
                    };
                    if self.command(cmd).await? {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep_until(app_timer.unwrap_or(far)), if app_timer.is_some() => {
                    self.app_timer_fired().await?;
                    idle_since = Instant::now();
                }
                _ = tokio::time::sleep_until(caller_timer.unwrap_or(far)), if caller_timer.is_some() => {
                    if let Some((_, sim)) = self.caller_timer.take() {
                        self.clock.reach(sim);
                        self.caller_hangup().await?;
                    }
                    idle_since = Instant::now();
                }
                _ = tokio::time::sleep_until(failsafe.unwrap_or(far)), if failsafe.is_some() => {
                    if let Some((_, extension)) = self.failsafe.take() {
                        self.failsafe_transfer(&extension).await?;
                    }
                    idle_since = Instant::now();
                }
                _ = tokio::time::sleep_until(self.close_at.unwrap_or(far)), if self.close_at.is_some() => {
                    if self.linger.is_none() {
                        // No linger: FreeSWITCH closed the socket right after
                        // the disconnect notice; that is a normal end.
                        let _ = self.wr.shutdown().await;
                        self.trace.completed = true;
                        return Ok(());
                    }
                    // `linger N` ran out: FreeSWITCH closes the socket itself.
                    let notice = self.disconnect_notice()?;
                    self.send(&notice).await?;
                    let _ = self.wr.shutdown().await;
                    self.trace.completed = false;
                    self.trace.error = Some("the daemon never sent exit; the linger time ran out".into());
                    return Ok(());
                }
                _ = tokio::time::sleep_until(idle_deadline), if !busy => {
                    return Err(SimError::Silent(limit));
                }
            }
        }
    }

    /// The daemon closed the session without `exit` after `resume`. In
    /// mod_event_socket's listener cleanup LFLAG_RESUME puts the channel in
    /// CS_RESET, the "Disconnected, goodbye" notice goes out, the socket
    /// closes, and the `socket` application returns to the dialplan, which
    /// continues at its next action (the failover transfer). The daemon did
    /// not finish the call, so the trace says so.
    async fn dialplan_resumed(&mut self) -> Result<(), SimError> {
        let notice = self.disconnect_notice()?;
        // The daemon may have closed both directions; the switch's notice
        // is then lost, as it would be on a real switch.
        let _ = self.send(&notice).await;
        let _ = self.wr.shutdown().await;
        if self.trace.ended.is_empty() {
            self.trace.ended = if self.transferred {
                "transfer".into()
            } else {
                "dialplan resumed".into()
            };
        }
        self.trace.completed = false;
        if self.trace.error.is_none() {
            self.trace.error = Some(
                "the daemon closed the session without exit; the switch resumed the dialplan (failover)"
                    .into(),
            );
        }
        Ok(())
    }

    fn disconnect_notice(&self) -> Result<String, SimError> {
        Ok(self.ch.substitute(&self.tpl.get("NOTICE_DISCONNECT")?.raw))
    }

    /// Handles one command; `true` when the session is over.
    async fn command(&mut self, cmd: Command) -> Result<bool, SimError> {
        let line = cmd.line.trim().to_string();
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let word = word.to_ascii_lowercase();
        if !self.connected && word != "connect" {
            // FreeSWITCH reads the first packet as `connect` whatever it is;
            // anything else first is a broken daemon.
            return Err(SimError::Garbage(format!("expected connect, got {line:?}")));
        }
        match word.as_str() {
            "connect" => {
                if self.connected {
                    self.send(&reply("-ERR command not found")).await?;
                } else {
                    self.connected = true;
                    let tpl = self.tpl.get("CHANNEL_DATA")?;
                    let bridge_tpl = self.tpl.get("CHANNEL_BRIDGE")?;
                    let now = self.clock.now_us();
                    let headers = self.ch.headers(tpl, bridge_tpl, now, &[]);
                    // Not an event frame: a bare header block (README fact 1).
                    self.send(&serialize_headers(&headers)).await?;
                }
            }
            "myevents" => {
                self.events_on = true;
                self.events_json = rest.trim().eq_ignore_ascii_case("json");
                self.nixed.clear();
                self.send(&reply("+OK Events Enabled")).await?;
            }
            "event" => {
                self.events_on = true;
                let words: Vec<String> = rest.split(' ').map(|w| w.to_ascii_uppercase()).collect();
                if words.iter().any(|w| w == "ALL") {
                    self.nixed.clear();
                } else {
                    self.nixed.retain(|n| !words.contains(n));
                }
                self.events_json = rest.starts_with("json");
                let format = if self.events_json { "json" } else { "plain" };
                self.send(&reply(&format!("+OK event listener enabled {format}")))
                    .await?;
            }
            "linger" => {
                let secs = rest.trim().parse::<u64>().ok();
                self.linger = Some(secs);
                let text = match secs {
                    Some(s) => format!("+OK will linger {s} seconds"),
                    None => "+OK will linger".into(),
                };
                self.send(&reply(&text)).await?;
            }
            "nolinger" => {
                self.linger = None;
                self.send(&reply("+OK will not linger")).await?;
            }
            // mod_event_socket.c (1.10): resume sets LFLAG_RESUME and the
            // channel variable socket_resume=true, and replies `+OK`.
            "resume" => {
                self.resumed = true;
                self.send(&reply("+OK")).await?;
            }
            "noevents" => {
                self.events_on = false;
                self.nixed.clear();
                self.send(&reply("+OK no longer listening for events"))
                    .await?;
            }
            // mod_event_socket clears each named event's `event_list` entry
            // (names it does not know are skipped) and answers
            // `+OK events nixed`; with no names, `-ERR no keywords supplied`.
            "nixevent" => {
                let names: Vec<String> = rest
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(|w| w.to_ascii_uppercase())
                    .collect();
                if names.is_empty() {
                    self.send(&reply("-ERR no keywords supplied")).await?;
                } else {
                    if names.iter().any(|n| n == "ALL") {
                        self.events_on = false;
                    }
                    self.nixed.extend(names);
                    self.send(&reply("+OK events nixed")).await?;
                }
            }
            "filter" => self.send(&reply("+OK filter added")).await?,
            "exit" => {
                self.send(&reply("+OK bye")).await?;
                let notice = self.disconnect_notice()?;
                self.send(&notice).await?;
                let _ = self.wr.shutdown().await;
                self.finish_on_exit();
                return Ok(true);
            }
            "api" => {
                let body = self.api(rest.trim());
                self.send(&api_response(&body)).await?;
            }
            "sendmsg" => {
                // Async mode: `+OK` at once, whatever happens next; after
                // the hang-up it is never executed (transcript 02).
                self.send(&reply("+OK")).await?;
                if self.state == State::Live && !self.transferred {
                    self.sendmsg(&cmd).await?;
                }
            }
            _ => self.send(&reply("-ERR command not found")).await?,
        }
        Ok(false)
    }

    fn finish_on_exit(&mut self) {
        if self.trace.ended.is_empty() {
            self.trace.ended = if self.transferred {
                "transfer".into()
            } else {
                "handed back".into()
            };
        }
        if self.trace.error.is_none() {
            self.trace.completed = true;
        }
    }

    fn api(&mut self, command: &str) -> String {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let gone = self.state == State::HungUp;
        match name {
            // mod_commands' replies (from memory of the 1.10 source).
            "sched_transfer" => {
                if args.len() < 3 {
                    "-USAGE: [+]<time> <uuid> <extension> [<dialplan>] [<context>]\n".into()
                } else if gone || args.get(1) != Some(&self.ch.uuid.as_str()) {
                    "-ERR No such channel!\n".into()
                } else {
                    let secs: u64 = args[0].trim_start_matches('+').parse().unwrap_or(0);
                    // `+N` is relative; an absolute epoch is taken as "now".
                    let secs = if args[0].starts_with('+') { secs } else { 0 };
                    self.failsafe = Some((
                        Instant::now() + Duration::from_secs(secs),
                        args[2].to_string(),
                    ));
                    "+OK\n".into()
                }
            }
            "sched_del" => {
                if args.is_empty() {
                    "-ERR Invalid syntax. USAGE: sched_del <task_id>|<group_id>\n".into()
                } else {
                    // The transfer task's group is the channel's uuid.
                    let deleted =
                        u32::from(self.failsafe.take().is_some() && args[0] == self.ch.uuid);
                    format!("+OK Deleted: {deleted}\n")
                }
            }
            "uuid_setvar" => {
                if args.len() < 2 {
                    "-USAGE: <uuid> <var> [value]\n".into()
                } else if gone || args[0] != self.ch.uuid {
                    "-ERR No such channel!\n".into()
                } else {
                    if args.len() > 2 {
                        let value = args[2..].join(" ");
                        self.ch.set(args[1], value);
                    } else {
                        self.ch.unset(args[1]);
                    }
                    "+OK\n".into()
                }
            }
            "" => "-ERR  Command not found!\n".into(),
            other => format!("-ERR {other} Command not found!\n"),
        }
    }

    async fn sendmsg(&mut self, cmd: &Command) -> Result<(), SimError> {
        let call_command = cmd.header("call-command").unwrap_or_default();
        match call_command.to_ascii_lowercase().as_str() {
            "execute" => {
                let app = App {
                    name: cmd
                        .header("execute-app-name")
                        .unwrap_or_default()
                        .to_string(),
                    arg: cmd
                        .header("execute-app-arg")
                        .unwrap_or_default()
                        .to_string(),
                    uuid: cmd
                        .header("Event-UUID")
                        .map(str::to_string)
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                };
                self.queue.push_back(app);
            }
            "hangup" => {
                let cause = cmd
                    .header("hangup-cause")
                    .filter(|c| !c.is_empty())
                    .unwrap_or("NORMAL_CLEARING")
                    .to_ascii_uppercase();
                self.trace.ended = format!("hangup {cause}");
                self.hangup(&cause, false).await?;
            }
            // nomedia, unicast, xferext...: accepted, not simulated.
            _ => {}
        }
        Ok(())
    }

    async fn start_app(&mut self, app: App) -> Result<(), SimError> {
        match app.name.as_str() {
            "answer" | "pre_answer" | "ring_ready" => {
                self.emit_execute(&app).await?;
                if app.name == "answer" && self.ch.answered_us.is_none() {
                    self.ch.answered_us = Some(self.clock.now_us());
                    // What answering adds to the channel (RTP set-up), as recorded.
                    let answer = self.tpl.get("CHANNEL_ANSWER")?;
                    for (k, v) in &answer.headers {
                        if let Some(name) = k.strip_prefix("variable_")
                            && self.ch.var(name).is_none()
                        {
                            let v = self.ch.substitute(v);
                            self.ch.set(name, v);
                        }
                    }
                    self.emit("CHANNEL_ANSWER", &[]).await?;
                    self.ch.set("endpoint_disposition", "ANSWER");
                }
                self.emit_complete(&app, "_none_").await?;
                if self.collects == 0 {
                    self.arm_caller(HangupStage::Auction);
                }
            }
            "set" | "export" => {
                self.emit_execute(&app).await?;
                if let Some((k, v)) = app.arg.split_once('=') {
                    if v.is_empty() {
                        self.ch.unset(k);
                    } else {
                        self.ch.set(k, v);
                    }
                }
                self.emit_complete(&app, "_none_").await?;
            }
            "unset" => {
                self.emit_execute(&app).await?;
                self.ch.unset(app.arg.trim());
                self.emit_complete(&app, "_none_").await?;
            }
            "playback" => {
                self.emit_execute(&app).await?;
                self.prompt_started();
                let (at, sim) = self.clock.after(PROMPT_SECS);
                self.running = Some(Running {
                    app,
                    kind: Kind::Playback,
                    timer: Some((at, sim, Step::Complete)),
                });
            }
            "play_and_get_digits" => {
                self.emit_execute(&app).await?;
                self.prompt_started();
                let args: Vec<&str> = app.arg.split_whitespace().collect();
                let max: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
                let timeout_ms: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5000.0);
                let terminators = args.get(4).copied().unwrap_or("none");
                let var = args.get(7).copied().unwrap_or("").to_string();
                let answer = self.profile.dtmf.get(self.collects).cloned();
                self.collects += 1;
                let digits = answer.map(|mut d| {
                    if let Some(pos) = d.find(|c| terminators.contains(c) && terminators != "none")
                    {
                        d.truncate(pos);
                    }
                    d.chars().take(max).collect::<String>()
                });
                let secs = match &digits {
                    Some(d) if !d.is_empty() => PROMPT_SECS + DIGIT_SECS * d.len() as f64,
                    _ => PROMPT_SECS + timeout_ms / 1000.0,
                };
                let (at, sim) = self.clock.after(secs);
                self.running = Some(Running {
                    app,
                    kind: Kind::Collect { digits, var },
                    timer: Some((at, sim, Step::Complete)),
                });
            }
            "bridge" => self.start_bridge(app).await?,
            "transfer" => {
                self.emit_execute(&app).await?;
                self.emit_complete(&app, "_none_").await?;
                // The channel leaves the socket application for the dialplan.
                self.emit("CHANNEL_UNPARK", &[]).await?;
                let socket = App {
                    name: "socket".into(),
                    arg: "127.0.0.1:8084 async full".into(),
                    uuid: uuid::Uuid::new_v4().to_string(),
                };
                self.emit_complete(&socket, "_none_").await?;
                self.transferred = true;
                self.caller_timer = None;
                self.trace.ended = "transfer".into();
            }
            "hangup" => {
                self.emit_execute(&app).await?;
                let cause = if app.arg.trim().is_empty() {
                    "NORMAL_CLEARING".to_string()
                } else {
                    app.arg.trim().to_ascii_uppercase()
                };
                self.trace.ended = format!("hangup {cause}");
                self.hangup(&cause, false).await?;
            }
            "sleep" => {
                self.emit_execute(&app).await?;
                let ms: f64 = app.arg.trim().parse().unwrap_or(0.0);
                let (at, sim) = self.clock.after(ms / 1000.0);
                self.running = Some(Running {
                    app,
                    kind: Kind::Playback,
                    timer: Some((at, sim, Step::Complete)),
                });
            }
            _ => {
                // switch_core_session_execute_application: an unknown app
                // hangs the channel up (from memory of the core source).
                self.trace.ended =
                    format!("hangup DESTINATION_OUT_OF_ORDER (unknown app {})", app.name);
                self.hangup("DESTINATION_OUT_OF_ORDER", false).await?;
            }
        }
        Ok(())
    }

    /// The daemon stopped responding and the armed `sched_transfer` fired:
    /// the switch takes the caller out of the socket application into the
    /// failover extension, interrupting whatever ran.
    async fn failsafe_transfer(&mut self, extension: &str) -> Result<(), SimError> {
        if self.state != State::Live || self.transferred {
            return Ok(());
        }
        self.queue.clear();
        self.caller_timer = None;
        if let Some(running) = self.running.take() {
            if let Kind::Bridge(b) = &running.kind {
                if b.stage == BridgeStage::Talking {
                    self.unbridge().await?;
                } else {
                    let cause = "ORIGINATOR_CANCEL";
                    self.ch
                        .push_list("originate_causes", &format!("{};{cause}", b.leg_uuid));
                    self.ch.set("originate_disposition", cause);
                    self.ch.set("DIALSTATUS", dialstatus(cause));
                }
            }
            let response = if running.app.name == "playback" {
                "PLAYBACK ERROR"
            } else {
                "_none_"
            };
            self.emit_complete(&running.app, response).await?;
        }
        self.emit("CHANNEL_UNPARK", &[]).await?;
        let socket = App {
            name: "socket".into(),
            arg: "127.0.0.1:8084 async full".into(),
            uuid: uuid::Uuid::new_v4().to_string(),
        };
        self.emit_complete(&socket, "_none_").await?;
        self.transferred = true;
        self.trace.ended = format!("failsafe transfer to {extension}");
        Ok(())
    }

    fn prompt_started(&mut self) {
        self.prompts_started += 1;
        if self.prompts_started == 1 {
            self.arm_caller(HangupStage::Prompt);
        }
    }

    /// Starts the caller's own hang-up timer if the profile hangs up at `stage`.
    fn arm_caller(&mut self, stage: HangupStage) {
        if let Some(h) = &self.profile.hangup
            && h.stage == stage
            && self.state == State::Live
        {
            self.caller_timer = Some(self.clock.after(h.after_secs));
        }
    }

    fn disarm_caller(&mut self, stage: HangupStage) {
        if self.profile.hangup.as_ref().map(|h| h.stage) == Some(stage) {
            self.caller_timer = None;
        }
    }

    async fn start_bridge(&mut self, app: App) -> Result<(), SimError> {
        let (timeout, endpoint) = parse_bridge_arg(&app.arg);
        let leg = self.scenario.leg(&endpoint);
        let behaviour = format!("{:?}", leg.behaviour).to_ascii_lowercase();
        self.trace.bridges.push((app.arg.clone(), behaviour));
        self.emit_execute(&app).await?;
        self.bridges_started += 1;
        let first = self.bridges_started == 1;
        if first {
            self.disarm_caller(HangupStage::Auction);
            self.arm_caller(HangupStage::Ringing);
        } else {
            self.disarm_caller(HangupStage::Ringing);
        }
        // originate_timeout counts whole seconds and fires early (2.0-2.8 s
        // for 3 in the recordings); FreeSWITCH's default is 60.
        let limit = timeout.map(|t| (t as f64 - 0.95).max(0.05)).unwrap_or(60.0);
        let ring = leg.ring_secs.max(0.0);
        let step = match leg.behaviour {
            LegBehaviour::Answer if ring < limit => Step::BridgeAnswer {
                talk_secs: leg.talk_secs.max(0.0),
                caller_ends: leg.ended_by == Some(EndedBy::Caller),
            },
            LegBehaviour::Answer | LegBehaviour::NoAnswer => {
                Step::BridgeFail { cause: "NO_ANSWER" }
            }
            LegBehaviour::Busy => Step::BridgeFail { cause: "USER_BUSY" },
            LegBehaviour::Rejected => Step::BridgeFail {
                cause: "CALL_REJECTED",
            },
            LegBehaviour::Unreachable => Step::BridgeFail {
                cause: "NORMAL_TEMPORARY_FAILURE",
            },
        };
        let wait = match step {
            Step::BridgeFail { cause: "NO_ANSWER" } => limit,
            _ => ring.min(limit),
        };
        if ring > 0.0 || matches!(step, Step::BridgeFail { cause: "NO_ANSWER" }) {
            self.ch.progress_us.get_or_insert(self.clock.now_us());
        }
        let (at, sim) = self.clock.after(wait);
        let dest = leg_dest(&endpoint);
        self.running = Some(Running {
            app,
            kind: Kind::Bridge(BridgeRun {
                leg_uuid: uuid::Uuid::new_v4().to_string(),
                sip: endpoint.starts_with("sofia/"),
                endpoint,
                dest,
                stage: BridgeStage::Ringing,
                first,
            }),
            timer: Some((at, sim, step)),
        });
        Ok(())
    }

    async fn app_timer_fired(&mut self) -> Result<(), SimError> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        let Some((_, sim, step)) = running.timer.take() else {
            self.running = Some(running);
            return Ok(());
        };
        self.clock.reach(sim);
        match (step, &mut running.kind) {
            (Step::Complete, Kind::Playback) => {
                if running.app.name == "playback" {
                    self.set_playback_vars(PROMPT_SECS);
                    self.ch.set("current_application_response", "FILE PLAYED");
                    self.emit_complete(&running.app, "FILE PLAYED").await?;
                } else {
                    self.emit_complete(&running.app, "_none_").await?;
                }
            }
            (Step::Complete, Kind::Collect { digits, var }) => {
                self.set_playback_vars(PROMPT_SECS);
                match digits.as_deref() {
                    Some(d) if !d.is_empty() => {
                        for digit in d.chars() {
                            self.emit(
                                "DTMF",
                                &[
                                    ("DTMF-Digit", digit.to_string()),
                                    ("DTMF-Duration", "2000".into()),
                                ],
                            )
                            .await?;
                        }
                        self.ch.set("read_result", "success");
                        if !var.is_empty() {
                            self.ch.set(var, d);
                        }
                        self.ch.digits_dialed.push_str(d);
                        self.trace.dtmf_sent.push(d.to_string());
                    }
                    _ => self.ch.set("read_result", "timeout"),
                }
                self.emit_complete(&running.app, "_none_").await?;
                self.disarm_caller(HangupStage::Prompt);
                self.arm_caller(HangupStage::Auction);
            }
            (Step::BridgeFail { cause }, Kind::Bridge(b)) => {
                let leg = b.leg_uuid.clone();
                self.ch.push_list(
                    "originated_legs",
                    &format!("{leg};Outbound Call;{}", b.dest),
                );
                self.ch
                    .push_list("originate_causes", &format!("{leg};{cause}"));
                self.ch.set("originate_signal_bond", leg.as_str());
                self.ch.set("last_bridge_hangup_cause", cause);
                self.ch.set("originate_disposition", cause);
                self.ch.set("DIALSTATUS", dialstatus(cause));
                self.ch.set("originate_failed_cause", cause);
                if b.sip {
                    let proto = match cause {
                        "USER_BUSY" => Some("sip:486"),
                        "CALL_REJECTED" => Some("sip:603"),
                        "NO_ANSWER" => Some("sip:487"),
                        "NORMAL_TEMPORARY_FAILURE" => Some("sip:503"),
                        _ => None,
                    };
                    if let Some(p) = proto {
                        self.ch.set("last_bridge_proto_specific_hangup_cause", p);
                    }
                }
                if b.first {
                    self.disarm_caller(HangupStage::Ringing);
                }
                self.emit_complete(&running.app, "_none_").await?;
            }
            (
                Step::BridgeAnswer {
                    talk_secs,
                    caller_ends,
                },
                Kind::Bridge(b),
            ) => {
                let now = self.clock.now_us();
                let leg = b.leg_uuid.clone();
                b.stage = BridgeStage::Talking;
                self.ch.other = Some(OtherLeg {
                    uuid: leg.clone(),
                    channel: format!("{}-a", b.endpoint),
                    dest: b.dest.clone(),
                    created_us: now,
                });
                self.ch.bridged_us = Some(now);
                self.ch.push_list(
                    "originated_legs",
                    &format!("{leg};Outbound Call;{}", b.dest),
                );
                self.ch
                    .push_list("originate_causes", &format!("{leg};NONE"));
                self.ch.unset("originate_signal_bond");
                self.ch.set("originate_disposition", "SUCCESS");
                self.ch.set("DIALSTATUS", "SUCCESS");
                self.ch.set("signal_bond", leg.as_str());
                if b.sip {
                    self.ch
                        .set("last_bridge_proto_specific_hangup_cause", "sip:200");
                }
                if b.first {
                    self.disarm_caller(HangupStage::Ringing);
                }
                self.answered_bridges += 1;
                self.emit(
                    "CHANNEL_BRIDGE",
                    &[
                        ("Bridge-A-Unique-ID", self.ch.uuid.clone()),
                        ("Bridge-B-Unique-ID", leg.clone()),
                    ],
                )
                .await?;
                if self.answered_bridges == 1 {
                    self.arm_caller(HangupStage::Bridged);
                }
                let (at, sim) = self.clock.after(talk_secs);
                if caller_ends {
                    // The caller ends the conversation: their hang-up is the end.
                    self.caller_timer = Some((at, sim));
                    running.timer = None;
                } else {
                    running.timer = Some((at, sim, Step::BridgeEnd));
                }
                self.running = Some(running);
                return Ok(());
            }
            (Step::BridgeEnd, Kind::Bridge(_)) => {
                self.unbridge().await?;
                self.emit_complete(&running.app, "_none_").await?;
                self.disarm_caller(HangupStage::Bridged);
            }
            (_, _) => {
                self.emit_complete(&running.app, "_none_").await?;
            }
        }
        Ok(())
    }

    fn set_playback_vars(&mut self, secs: f64) {
        let samples = (secs * 8000.0) as u64;
        self.ch.set("playback_last_offset_pos", samples.to_string());
        self.ch.set("playback_seconds", (secs as u64).to_string());
        self.ch
            .set("playback_ms", ((secs * 1000.0) as u64).to_string());
        self.ch.set("playback_samples", samples.to_string());
    }

    async fn unbridge(&mut self) -> Result<(), SimError> {
        if let Some(other) = self.ch.other.clone() {
            self.ch.set("last_bridge_to", other.uuid.as_str());
            self.ch.set("bridge_channel", other.channel.as_str());
            self.ch.set("bridge_uuid", other.uuid.as_str());
            self.ch.set("last_sent_callee_id_name", "Outbound Call");
            self.ch
                .set("last_sent_callee_id_number", other.dest.as_str());
            self.ch.set("last_bridge_hangup_cause", "NORMAL_CLEARING");
            self.ch.set("bridge_hangup_cause", "NORMAL_CLEARING");
            self.emit(
                "CHANNEL_UNBRIDGE",
                &[
                    ("Bridge-A-Unique-ID", self.ch.uuid.clone()),
                    ("Bridge-B-Unique-ID", other.uuid.clone()),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// The caller hangs up on their own (a BYE from their phone).
    async fn caller_hangup(&mut self) -> Result<(), SimError> {
        if self.state != State::Live || self.transferred {
            return Ok(());
        }
        if self.trace.ended.is_empty() || !self.trace.ended.starts_with("hangup") {
            self.trace.ended = "caller hung up".into();
        }
        self.hangup("NORMAL_CLEARING", true).await
    }

    /// Ends the call on the switch: CHANNEL_HANGUP, the running app's
    /// completion, then the closing events in transcript 01's order.
    async fn hangup(&mut self, cause: &str, by_caller: bool) -> Result<(), SimError> {
        if self.state != State::Live {
            return Ok(());
        }
        self.state = State::HungUp;
        self.caller_timer = None;
        self.queue.clear();
        let now = self.clock.now_us();
        self.ch.hangup_us = Some(now);
        self.ch.hangup_cause = Some(cause.to_string());
        self.ch.set(
            "sip_hangup_disposition",
            if by_caller { "recv_bye" } else { "send_bye" },
        );
        let running = self.running.take();
        // A bridge still ringing: the originate is cancelled; the HANGUP
        // event catches the transient failure values (transcript 03).
        let ringing = matches!(&running, Some(Running { kind: Kind::Bridge(b), .. }) if b.stage == BridgeStage::Ringing);
        if ringing {
            self.ch.set("originate_disposition", "failure");
            self.ch.set("DIALSTATUS", "INVALIDARGS");
        }
        self.emit("CHANNEL_HANGUP", &[]).await?;
        if let Some(running) = running {
            match &running.kind {
                Kind::Playback if running.app.name == "playback" => {
                    self.ch
                        .set("current_application_response", "PLAYBACK ERROR");
                    self.emit_complete(&running.app, "PLAYBACK ERROR").await?;
                }
                Kind::Playback => self.emit_complete(&running.app, "_none_").await?,
                Kind::Collect { .. } => {
                    self.ch.set("read_result", "failure");
                    self.emit_complete(&running.app, "_none_").await?;
                }
                Kind::Bridge(b) if b.stage == BridgeStage::Ringing => {
                    let leg = b.leg_uuid.clone();
                    self.ch
                        .push_list("originate_causes", &format!("{leg};ORIGINATOR_CANCEL"));
                    self.ch.set("originate_disposition", "ORIGINATOR_CANCEL");
                    self.ch.set("DIALSTATUS", "CANCEL");
                    self.ch.set("originate_failed_cause", "ORIGINATOR_CANCEL");
                    if b.sip {
                        self.ch
                            .set("last_bridge_proto_specific_hangup_cause", "sip:487");
                    }
                    self.emit_complete(&running.app, "_none_").await?;
                }
                Kind::Bridge(_) => {
                    self.unbridge().await?;
                    self.emit_complete(&running.app, "_none_").await?;
                }
            }
        }
        self.ch.unset("current_loop");
        self.ch.unset("total_loops");
        self.emit("CHANNEL_UNPARK", &[]).await?;
        let socket = App {
            name: "socket".into(),
            arg: "127.0.0.1:8084 async full".into(),
            uuid: uuid::Uuid::new_v4().to_string(),
        };
        self.emit_complete(&socket, "_none_").await?;
        self.emit("CHANNEL_STATE_1", &[]).await?;
        self.emit("CHANNEL_STATE_2", &[]).await?;
        self.set_cdr_vars(cause, now)?;
        self.emit("CHANNEL_HANGUP_COMPLETE", &[]).await?;
        match self.linger {
            Some(secs) => {
                let mut notice = self.ch.substitute(&self.tpl.get("NOTICE_LINGER")?.raw);
                if let Some(s) = secs {
                    notice = notice.replace("Linger-Time: -1", &format!("Linger-Time: {s}"));
                    // FreeSWITCH closes about half a second after the linger time.
                    self.close_at = Some(Instant::now() + Duration::from_millis(s * 1000 + 500));
                }
                self.send(&notice).await?;
            }
            None => {
                // No linger: the socket is closed at once after the notice.
                let notice = self.disconnect_notice()?;
                self.send(&notice).await?;
                self.close_at = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// The CDR variables CHANNEL_HANGUP_COMPLETE carries, computed from the
    /// simulated times; the media statistics are the recorded ones.
    fn set_cdr_vars(&mut self, cause: &str, end: i64) -> Result<(), SimError> {
        let stamp = |us: i64| {
            Utc.timestamp_micros(us)
                .single()
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        let start = self.ch.created_us;
        let answer = self.ch.answered_us.unwrap_or(0);
        let bridge = self.ch.bridged_us.unwrap_or(0);
        let progress = self.ch.progress_us.unwrap_or(0);
        let dur = (end - start).max(0);
        let bill = if answer > 0 { (end - answer).max(0) } else { 0 };
        let answer_wait = if answer > 0 {
            (answer - start).max(0)
        } else {
            0
        };
        let wait = if bridge > 0 {
            (bridge - start).max(0)
        } else {
            0
        };
        let prog = if progress > 0 {
            (progress - start).max(0)
        } else {
            0
        };
        let (last_app, last_arg) = self.ch.last_app.clone().unwrap_or_default();
        let computed: Vec<(&str, String)> = vec![
            ("hangup_cause", cause.to_string()),
            ("hangup_cause_q850", q850(cause).to_string()),
            (
                "digits_dialed",
                if self.ch.digits_dialed.is_empty() {
                    "none".into()
                } else {
                    self.ch.digits_dialed.clone()
                },
            ),
            ("start_stamp", stamp(start)),
            ("profile_start_stamp", stamp(start)),
            (
                "answer_stamp",
                if answer > 0 {
                    stamp(answer)
                } else {
                    String::new()
                },
            ),
            (
                "bridge_stamp",
                if bridge > 0 {
                    stamp(bridge)
                } else {
                    String::new()
                },
            ),
            (
                "progress_stamp",
                if progress > 0 {
                    stamp(progress)
                } else {
                    String::new()
                },
            ),
            ("end_stamp", stamp(end)),
            ("start_epoch", (start / 1_000_000).to_string()),
            ("start_uepoch", start.to_string()),
            ("profile_start_epoch", (start / 1_000_000).to_string()),
            ("profile_start_uepoch", start.to_string()),
            ("answer_epoch", (answer / 1_000_000).to_string()),
            ("answer_uepoch", answer.to_string()),
            ("bridge_epoch", (bridge / 1_000_000).to_string()),
            ("bridge_uepoch", bridge.to_string()),
            ("progress_epoch", (progress / 1_000_000).to_string()),
            ("progress_uepoch", progress.to_string()),
            ("end_epoch", (end / 1_000_000).to_string()),
            ("end_uepoch", end.to_string()),
            ("last_app", last_app),
            ("last_arg", last_arg),
            (
                "caller_id",
                format!("\"Harness Caller\" <{}>", self.ch.caller),
            ),
            ("duration", (dur / 1_000_000).to_string()),
            ("billsec", (bill / 1_000_000).to_string()),
            ("progresssec", (prog / 1_000_000).to_string()),
            ("answersec", (answer_wait / 1_000_000).to_string()),
            ("waitsec", (wait / 1_000_000).to_string()),
            ("flow_billsec", (dur / 1_000_000).to_string()),
            ("mduration", (dur / 1000).to_string()),
            ("billmsec", (bill / 1000).to_string()),
            ("progressmsec", (prog / 1000).to_string()),
            ("answermsec", (answer_wait / 1000).to_string()),
            ("waitmsec", (wait / 1000).to_string()),
            ("flow_billmsec", (dur / 1000).to_string()),
            ("uduration", dur.to_string()),
            ("billusec", bill.to_string()),
            ("progressusec", prog.to_string()),
            ("answerusec", answer_wait.to_string()),
            ("waitusec", wait.to_string()),
            ("flow_billusec", dur.to_string()),
        ];
        for (k, v) in &computed {
            if v.is_empty() {
                self.ch.unset(k);
            } else {
                self.ch.set(k, v.clone());
            }
        }
        // Anything else the recorded HANGUP_COMPLETE adds (RTP statistics).
        let tpl = self.tpl.get("CHANNEL_HANGUP_COMPLETE")?;
        for (k, v) in &tpl.headers {
            if let Some(name) = k.strip_prefix("variable_")
                && self.ch.var(name).is_none()
                && !computed.iter().any(|(c, _)| *c == name)
                && !is_call_specific(name)
            {
                let v = self.ch.substitute(v);
                self.ch.set(name, v);
            }
        }
        Ok(())
    }
}

/// Recorded variables that describe transcript 01's own call flow and must
/// not leak into a simulated call that did not do the same.
fn is_call_specific(name: &str) -> bool {
    name.starts_with("originat")
        || name.starts_with("bridge")
        || name.starts_with("last_bridge")
        || name.starts_with("playback")
        || name.starts_with("current_application")
        || name.contains("signal_bond")
        || matches!(
            name,
            "DIALSTATUS"
                | "read_result"
                | "ivr_choice"
                | "continue_on_fail"
                | "hangup_after_bridge"
                | "last_sent_callee_id_name"
                | "last_sent_callee_id_number"
                | "endpoint_disposition"
                | "current_loop"
                | "total_loops"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dial::{DialTarget, PromptName};
    use crate::config::FreeswitchConfig;
    use crate::pbx::freeswitch::session::FsChannel;
    use crate::pbx::{
        BridgeRequest, CallChannel, CollectOutcome, CollectRequest, HangupCause, LegStatus, Party,
    };
    use freeswitch_esl_tokio::EslClient;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const SCENARIO: &str = r#"
[run]
time_scale = 0.01
tracking_number = "+18005550100"
caller_base = "+13125550100"

[[callers]]
dtmf = ["1"]

[[legs]]
match = "buyer-noanswer"
behaviour = "no_answer"

[[legs]]
match = "buyer-busy"
behaviour = "busy"

[[legs]]
match = "buyer-answer"
behaviour = "answer"
ring_secs = 2.0
talk_secs = 95.0
"#;

    fn scenario(extra: &str) -> Arc<Scenario> {
        let text = format!("{SCENARIO}{extra}");
        Arc::new(Scenario::parse(&text).expect("test scenario parses"))
    }

    /// A fake switch call against the daemon's real adapter.
    async fn session(sc: Arc<Scenario>) -> (FsChannel, tokio::task::JoinHandle<CallTrace>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sim = tokio::spawn(run_call(addr, sc, 0));
        let (stream, _) = listener.accept().await.expect("accept");
        let (client, events) = EslClient::accept_outbound_stream(stream);
        let channel = FsChannel::establish(client, events, FreeswitchConfig::default())
            .await
            .expect("session set-up");
        (channel, sim)
    }

    fn bridge(uri: &str, ring_secs: u64) -> BridgeRequest {
        BridgeRequest {
            target: DialTarget::from_parts(None, None, Some(uri), None, None).expect("target"),
            ring_timeout: Duration::from_secs(ring_secs),
            call_id: uuid::Uuid::new_v4().to_string(),
            caller_id_number: None,
        }
    }

    fn collect() -> CollectRequest {
        CollectRequest {
            prompt: PromptName::new("welcome").expect("prompt"),
            max_digits: 1,
            timeout: Duration::from_secs(5),
            terminator: Some('#'),
        }
    }

    #[tokio::test]
    async fn a_refused_call_resumes_the_dialplan_on_the_simulated_switch() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sim = tokio::spawn(run_call(addr, scenario(""), 0));
        let (stream, _) = listener.accept().await.expect("accept");
        // The daemon's own refusal: connect, resume, half-close, drain.
        let drained = crate::pbx::handback::hand_back(stream, crate::pbx::freeswitch::HAND_BACK)
            .await
            .expect("the simulated switch closes after its goodbye");
        let trace = sim.await.expect("join");
        assert_eq!(trace.ended, "dialplan resumed");
        assert!(!trace.completed);
        assert!(
            trace
                .error
                .as_deref()
                .is_some_and(|e| e.contains("resumed")),
            "{trace:?}"
        );
        // The connect reply, `+OK` for resume, and the disconnect notice.
        let templates = templates().expect("templates");
        let notice = templates
            .get("NOTICE_DISCONNECT")
            .expect("notice")
            .raw
            .len();
        assert!(drained > notice + 1000, "{drained} bytes");
    }

    #[tokio::test]
    async fn adapter_and_simulator_agree_on_a_failover_call() {
        let (mut ch, sim) = session(scenario("")).await;
        assert_eq!(ch.info().caller_id_number, "+13125550100");
        assert_eq!(ch.info().dialed_number, "+18005550100");
        assert!(!ch.info().answered);
        assert!(ch.info().variables.contains_key("sip_call_id"));

        ch.answer().await.expect("answer");
        let digits = ch.collect(&collect()).await.expect("collect");
        assert_eq!(digits, CollectOutcome::Digits("1".into()));
        // A second collect: the caller says nothing this time.
        let silent = ch.collect(&collect()).await.expect("collect");
        assert_eq!(
            silent,
            CollectOutcome::Timeout {
                partial: String::new()
            }
        );

        let no_answer = ch
            .bridge(&bridge("sip:buyer-noanswer@127.0.0.1:5092", 3))
            .await
            .expect("bridge 1");
        assert_eq!(no_answer.status, LegStatus::NoAnswer);
        assert_eq!(no_answer.cause.as_deref(), Some("NO_ANSWER"));
        assert!(
            no_answer.ring_time >= Duration::from_secs(2)
                && no_answer.ring_time < Duration::from_secs(3),
            "{:?}",
            no_answer.ring_time
        );

        let busy = ch
            .bridge(&bridge("sip:buyer-busy@127.0.0.1:5091", 30))
            .await
            .expect("bridge 2");
        assert_eq!(busy.status, LegStatus::Busy);
        assert_eq!(busy.cause.as_deref(), Some("USER_BUSY"));

        let answered = ch
            .bridge(&bridge("sip:buyer-answer@127.0.0.1:5090", 30))
            .await
            .expect("bridge 3");
        assert_eq!(answered.status, LegStatus::Answered);
        assert_eq!(answered.ended_by, Some(Party::Buyer));
        let talk = answered.talk_time.expect("talk time").as_secs_f64();
        assert!((talk - 95.0).abs() < 0.5, "talk {talk}");
        let ring = answered.ring_time.as_secs_f64();
        assert!((ring - 2.0).abs() < 0.5, "ring {ring}");

        ch.hangup(HangupCause::NormalClearing)
            .await
            .expect("hangup");
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert!(trace.completed, "{trace:?}");
        assert_eq!(trace.error, None);
        assert_eq!(trace.ended, "hangup NORMAL_CLEARING");
        assert_eq!(trace.bridges.len(), 3);
        assert_eq!(trace.dtmf_sent, vec!["1".to_string()]);
    }

    #[tokio::test]
    async fn caller_hanging_up_while_the_buyer_rings_is_caller_gone() {
        let sc = scenario("");
        let mut sc = (*sc).clone();
        sc.callers[0].hangup = Some(super::super::scenario::HangupSpec {
            stage: HangupStage::Ringing,
            after_secs: 1.0,
        });
        let (mut ch, sim) = session(Arc::new(sc)).await;
        ch.answer().await.expect("answer");
        let outcome = ch
            .bridge(&bridge("sip:buyer-noanswer@127.0.0.1:5092", 30))
            .await
            .expect("bridge");
        assert_eq!(outcome.status, LegStatus::CallerGone);
        assert_eq!(outcome.cause.as_deref(), Some("ORIGINATOR_CANCEL"));
        assert!(ch.presence().is_gone());
        // Hanging up a gone caller is a no-op; close still says exit.
        ch.hangup(HangupCause::NormalClearing)
            .await
            .expect("hangup");
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "caller hung up");
        assert!(trace.completed, "{trace:?}");
    }

    #[tokio::test]
    async fn caller_hanging_up_during_a_prompt_ends_the_prompt() {
        let sc = scenario("");
        let mut sc = (*sc).clone();
        sc.callers[0].hangup = Some(super::super::scenario::HangupSpec {
            stage: HangupStage::Prompt,
            after_secs: 0.5,
        });
        let (mut ch, sim) = session(Arc::new(sc)).await;
        ch.answer().await.expect("answer");
        let played = ch.play(&PromptName::new("greeting").expect("prompt")).await;
        assert!(
            matches!(&played, Err(e) if e.is_caller_gone()),
            "{played:?}"
        );
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "caller hung up");
        assert!(trace.completed);
    }

    #[tokio::test]
    async fn caller_ending_the_conversation_is_reported_as_the_caller() {
        let extra = r#"
[[legs]]
match = "buyer-chatty"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 30.0
ended_by = "caller"
"#;
        let (mut ch, sim) = session(scenario(extra)).await;
        ch.answer().await.expect("answer");
        let outcome = ch
            .bridge(&bridge("sip:buyer-chatty@127.0.0.1:5093", 30))
            .await
            .expect("bridge");
        assert_eq!(outcome.status, LegStatus::Answered);
        assert_eq!(outcome.ended_by, Some(Party::Caller));
        let talk = outcome.talk_time.expect("talk").as_secs_f64();
        assert!((talk - 30.0).abs() < 0.5, "talk {talk}");
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "caller hung up");
    }

    #[tokio::test]
    async fn refused_and_unreachable_legs_classify() {
        let extra = r#"
[[legs]]
match = "buyer-reject"
behaviour = "rejected"

[[legs]]
match = "buyer-gone"
behaviour = "unreachable"
"#;
        let (mut ch, sim) = session(scenario(extra)).await;
        ch.answer().await.expect("answer");
        let rejected = ch
            .bridge(&bridge("sip:buyer-reject@127.0.0.1:5094", 30))
            .await
            .expect("bridge");
        assert_eq!(rejected.status, LegStatus::Rejected);
        assert_eq!(rejected.detail.as_deref(), Some("sip:603"));
        let gone = ch
            .bridge(&bridge("sip:buyer-gone@127.0.0.1:5099", 30))
            .await
            .expect("bridge");
        assert_eq!(gone.status, LegStatus::Unreachable);
        // Anything the scenario does not know is unreachable too.
        let unknown = ch
            .bridge(&bridge("sip:nobody@127.0.0.1:5098", 30))
            .await
            .expect("bridge");
        assert_eq!(unknown.status, LegStatus::Unreachable);
        ch.set_variable("bidbridge_outcome", "no_buyer")
            .await
            .expect("set");
        ch.mark_settled().await.expect("settled");
        ch.hangup(HangupCause::NoRouteDestination)
            .await
            .expect("hangup");
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "hangup NO_ROUTE_DESTINATION");
        assert_eq!(
            trace
                .bridges
                .iter()
                .map(|b| b.1.as_str())
                .collect::<Vec<_>>(),
            vec!["rejected", "unreachable", "unreachable"]
        );
        assert!(trace.completed);
    }

    #[tokio::test]
    async fn a_transfer_hands_the_call_to_the_dialplan() {
        let (mut ch, sim) = session(scenario("")).await;
        ch.answer().await.expect("answer");
        let target = DialTarget::from_parts(None, None, None, Some("backup_line"), Some("default"))
            .expect("target");
        ch.transfer(&target).await.expect("transfer");
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "transfer");
        assert!(trace.completed, "{trace:?}");
    }

    #[tokio::test]
    async fn an_armed_failsafe_fires_when_the_daemon_stalls_and_not_after_disarm() {
        let (mut ch, sim) = session(scenario("")).await;
        ch.answer().await.expect("answer");
        ch.arm_failsafe(None, Duration::from_secs(1))
            .await
            .expect("arm");
        ch.arm_failsafe(None, Duration::from_secs(1))
            .await
            .expect("re-arm");
        ch.disarm_failsafe().await.expect("disarm");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        ch.arm_failsafe(None, Duration::from_secs(1))
            .await
            .expect("arm");
        // The daemon "stalls": the switch transfers the caller on its own.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        ch.close().await;
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "failsafe transfer to bidbridge_failover");
    }

    #[test]
    fn templates_round_trip_byte_exact() {
        let tpl = templates().expect("templates");
        for (name, t) in &tpl.frames {
            if name.starts_with("NOTICE") {
                continue;
            }
            assert_eq!(
                serialize_headers(&t.headers),
                t.raw,
                "{name} does not re-encode to the recorded bytes"
            );
        }
    }

    /// The copied frames still match the recording they came from (when the
    /// shared fixtures are checked out beside the repository).
    #[test]
    fn templates_match_the_recording() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/esl/01_outbound_ivr_bridge_failover.esl");
        let Ok(recording) = std::fs::read(&path) else {
            return;
        };
        let tpl = templates().expect("templates");
        for (name, t) in &tpl.frames {
            let found = recording
                .windows(t.raw.len())
                .any(|w| w == t.raw.as_bytes());
            assert!(found, "{name} is not a frame of {}", path.display());
        }
    }

    /// A JSON object's entries in the order written (serde_json's own map
    /// sorts them).
    struct InOrder(Vec<(String, serde_json::Value)>);

    impl<'de> serde::Deserialize<'de> for InOrder {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Entries;
            impl<'de> serde::de::Visitor<'de> for Entries {
                type Value = InOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<InOrder, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        entries.push(entry);
                    }
                    Ok(InOrder(entries))
                }
            }
            d.deserialize_map(Entries)
        }
    }

    /// The `RECV` payloads of an `ESL-TRANSCRIPT 1` file, read by their
    /// byte counts (payloads hold newlines and blank lines; markers are never
    /// looked for inside them).
    fn received_frames(text: &str) -> Vec<&str> {
        let mut frames = Vec::new();
        let mut rest = text;
        while let Some((line, after)) = rest.split_once('\n') {
            rest = after;
            let payload = line
                .strip_prefix("#RECV ")
                .map(|m| (true, m))
                .or_else(|| line.strip_prefix("#SEND ").map(|m| (false, m)));
            if let Some((received, marker)) = payload {
                let n: usize = marker.split(' ').next().unwrap().parse().unwrap();
                if received {
                    frames.push(&rest[..n]);
                }
                rest = &rest[n + 1..];
            }
        }
        frames
    }

    /// Every `text/event-json` frame of recording 04b, turned back into
    /// headers (a JSON array as FreeSWITCH's `ARRAY::a|:b`) and written
    /// again, is the recorded frame byte for byte.
    #[test]
    fn json_event_frames_are_written_as_the_switch_writes_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/esl/04b_outbound_ivr_bridge_failover_json_all.esl");
        let recording = std::fs::read(&path).expect("recording 04b");
        let text = String::from_utf8(recording).expect("04b is UTF-8");
        let mut checked = 0;
        for frame in received_frames(&text) {
            let Some(body) = frame.strip_prefix("Content-Length: ").and_then(|r| {
                r.split_once("\nContent-Type: text/event-json\n\n")
                    .map(|(_, b)| b)
            }) else {
                continue;
            };
            let InOrder(object) = serde_json::from_str(body).unwrap();
            let headers: Vec<(String, String)> = object
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Array(items) => format!(
                            "ARRAY::{}",
                            items
                                .iter()
                                .map(|i| i.as_str().unwrap().to_string())
                                .collect::<Vec<_>>()
                                .join("|:")
                        ),
                        other => panic!("unexpected JSON value {other}"),
                    };
                    (k, v)
                })
                .collect();
            assert_eq!(json_event_frame(&headers), frame);
            checked += 1;
        }
        assert!(checked > 40, "only {checked} JSON events in 04b");
    }

    /// Reads from a raw socket until `needle` has arrived (or 5 s pass).
    async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 8192];
        while !seen.contains(needle) {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return false,
            }
        }
        true
    }

    #[tokio::test]
    async fn connect_reply_and_events_parse_and_api_replies_are_real() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sim = tokio::spawn(run_call(addr, scenario(""), 7));
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut seen = String::new();
        s.write_all(b"connect\n\n").await.expect("write");
        assert!(read_until(&mut s, &mut seen, "Control: full\n\n").await);
        assert!(seen.starts_with("Event-Name: CHANNEL_DATA\n"));
        assert!(!seen.contains("Content-Length"));
        assert!(seen.contains("Caller-Caller-ID-Number: %2B13125550107\n"));
        assert!(seen.contains("Reply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"));
        let vars = seen.matches("\nvariable_").count();
        assert!(vars > 60, "{vars} variables");
        seen.clear();
        s.write_all(b"myevents plain\n\n").await.expect("write");
        assert!(read_until(&mut s, &mut seen, "+OK Events Enabled\n\n").await);
        s.write_all(b"api no_such_command\n\n")
            .await
            .expect("write");
        assert!(
            read_until(
                &mut s,
                &mut seen,
                "-ERR no_such_command Command not found!\n"
            )
            .await
        );
        assert!(seen.contains("Content-Type: api/response\nContent-Length: 40\n\n"));
        s.write_all(
            b"sendmsg\nCall-Command: execute\nExecute-App-Name: answer\nEvent-Uuid: abc\n\n",
        )
        .await
        .expect("write");
        assert!(read_until(&mut s, &mut seen, "Event-Name: CHANNEL_EXECUTE_COMPLETE").await);
        assert!(read_until(&mut s, &mut seen, "Application-UUID: abc\n\n").await);
        assert!(seen.contains("Event-Name: CHANNEL_ANSWER"));
        s.write_all(b"linger\n\n").await.expect("write");
        assert!(read_until(&mut s, &mut seen, "+OK will linger\n\n").await);
        s.write_all(b"sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n")
            .await
            .expect("write");
        assert!(read_until(&mut s, &mut seen, "Content-Disposition: linger\n").await);
        for name in [
            "CHANNEL_HANGUP\n",
            "CHANNEL_UNPARK",
            "Application: socket",
            "CHANNEL_STATE",
            "CHANNEL_HANGUP_COMPLETE",
            "Content-Disposition: linger",
        ] {
            assert!(seen.contains(name), "{name} missing");
        }
        assert!(seen.contains("variable_hangup_cause: USER_BUSY\n"));
        assert!(seen.contains("variable_billsec: "));
        let order: Vec<usize> = [
            "CHANNEL_HANGUP\n",
            "CHANNEL_UNPARK",
            "CHANNEL_HANGUP_COMPLETE",
        ]
        .iter()
        .filter_map(|n| seen.find(n))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        // After the hang-up a sendmsg is still accepted but never executed (02).
        seen.clear();
        s.write_all(
            b"sendmsg\ncall-command: execute\nexecute-app-name: playback\nEvent-UUID: late\n\n",
        )
        .await
        .expect("write");
        assert!(read_until(&mut s, &mut seen, "Reply-Text: +OK\n\n").await);
        s.write_all(b"exit\n\n").await.expect("write");
        assert!(read_until(&mut s, &mut seen, "See you at ClueCon!").await);
        assert!(!seen.contains("Application-UUID: late"));
        assert!(seen.contains("+OK bye"));
        let trace = sim.await.expect("simulator task");
        assert_eq!(trace.ended, "hangup USER_BUSY");
        assert!(trace.completed);
    }

    #[tokio::test]
    async fn a_daemon_sending_garbage_fails_the_trace_without_panicking() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sim = tokio::spawn(run_call(addr, scenario(""), 0));
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"\xff\xfe garbage\n\n").await.expect("write");
        let trace = sim.await.expect("simulator task");
        assert!(!trace.completed);
        assert!(trace.error.is_some());

        let sim = tokio::spawn(run_call(addr, scenario(""), 1));
        let (s, _) = listener.accept().await.expect("accept");
        drop(s);
        let trace = sim.await.expect("simulator task");
        assert!(!trace.completed);
        assert!(
            trace
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("closed")
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_a_failed_trace() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let trace = run_call(addr, scenario(""), 0).await;
        assert!(!trace.completed);
        assert!(trace.error.is_some());
    }
}
