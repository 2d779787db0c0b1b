//! The FastAGI wire codec: the bytes Asterisk sends us, and the command lines
//! we send Asterisk.
//!
//! What it owns: framing and grammar of a FastAGI session as Asterisk 22
//! writes it (the `agi_*` preamble, the `200`/`510`/`511`/`520` replies and
//! the unprompted `HANGUP` line), and rendering [`Command`]s into lines that
//! Asterisk's argument parser reads back exactly as meant. What it does not
//! own: sockets, timing, which command a reply belongs to, or what a result
//! means for the call; the Asterisk adapter decides those.
//!
//! What it must never do:
//! - panic, whatever bytes arrive: every malformed input is a [`CodecError`];
//! - buffer without bound: "need more bytes" is only ever answered while the
//!   item is still within [`MAX_LINE_LEN`], [`MAX_PREAMBLE_BYTES`] /
//!   [`MAX_PREAMBLE_LINES`] and [`MAX_USAGE_LINES`]; past those it is an
//!   error even though the item is unfinished, so a peer that never sends a
//!   line feed (or never ends a block) cannot make the daemon grow a buffer;
//! - splice text into a command line that could change the command: line
//!   breaks, control characters, quotes and backslashes are refused by
//!   [`Command::encode`], never passed through.
//!
//! How to use the decoders: they are pure functions over the caller's read
//! buffer, always starting at an item boundary. `Ok(None)` means the item at
//! the start is not complete yet: read more, append, call again with the same
//! start. `Ok(Some((item, n)))` means drop `n` bytes. `Err(_)` means the
//! stream can no longer be trusted: end the session (the dialplan's fallback
//! takes the call).
//!
//! How it is built: two layers. Framing finds one whole line with a bounded
//! search for the line feed; that is the only place "incomplete" can come
//! from. The grammar of a found line is read with nom's `complete` parsers,
//! so a short or malformed line is an error and never a wait. (nom's
//! `streaming` parsers are deliberately not used for the line grammar: a line
//! that has ended cannot become valid by waiting.)
//!
//! Wire facts this relies on, all seen in the recordings of Asterisk 22.10.1
//! in `shared/fixtures/agi` (see its README):
//! - lines end in a bare LF (a CR before it is tolerated and stripped);
//! - the preamble is `agi_<name>: <value>` lines ended by one empty line;
//!   values may be empty (`agi_accountcode: `) or hold colons and spaces;
//! - each command gets exactly one reply: `200 result=...`, `510 ...`,
//!   `511 ...`, or a `520-` ... `520 ` usage block;
//! - `HANGUP` is not a reply: it arrives unprompted after the caller leaves
//!   and again when the session ends, possibly twice in one read.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, take_till1, take_while, take_while_m_n, take_while1},
    character::complete::{char, one_of},
    combinator::{all_consuming, eof, map, opt, recognize, rest, value},
    error::{Error as NomError, ErrorKind},
    multi::many0,
    sequence::{preceded, separated_pair},
};

/// Longest line accepted from Asterisk, in bytes, not counting the LF.
/// Asterisk's own replies are far shorter (the longest usage line in the
/// recordings is 429 bytes); a `GET VARIABLE` of a long value is the only
/// legitimate way to get near this.
pub const MAX_LINE_LEN: usize = 8 * 1024;

/// Largest preamble accepted, in bytes, blank line included. A real one is
/// about 600 bytes; arguments to `AGI()` are the only part that can grow.
pub const MAX_PREAMBLE_BYTES: usize = 64 * 1024;

/// Most `agi_*` lines accepted in a preamble (a real one has 22 plus one per
/// `AGI()` argument).
pub const MAX_PREAMBLE_LINES: usize = 200;

/// Most usage-text lines accepted in one `520` block (the recordings have 1
/// to 5).
pub const MAX_USAGE_LINES: usize = 64;

/// Longest command line Asterisk reads in one piece, LF included: res_agi.c
/// reads commands into a buffer of `AGI_BUF_LEN` (2048) bytes with `fgets`,
/// and a longer line is cut there and its tail run as a second command.
pub const MAX_COMMAND_LINE_LEN: usize = 2047;

/// Longest timeout we ever put in a command. Asterisk reads timeouts with
/// `atoi` into a C `int`; anything near that is a unit mistake on our side,
/// and an hour is far beyond any prompt or digit wait a call flow needs.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Most digits one `GET DATA` may ask for: Asterisk collects them into a
/// 1024-byte buffer, NUL included.
pub const MAX_GET_DATA_DIGITS: u32 = 1023;

/// The parenthesised data Asterisk uses to say a digit wait ran out
/// (`200 result= (timeout)`, `200 result=12 (timeout)`).
const TIMEOUT_MARK: &str = "timeout";

/// The last line of a multi-line `520` reply.
const USAGE_END: &str = "520 End of proper usage.";

/// How much of an offending line an error carries: enough to diagnose, not
/// enough to let a hostile peer flood our logs.
const ERROR_SNIPPET_CHARS: usize = 200;

// ---------------------------------------------------------------------------
// Errors

/// Why bytes from Asterisk could not be decoded. Any of these means the
/// stream is out of step or hostile: end the session.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    #[error("a line from Asterisk is not valid UTF-8")]
    NotUtf8,
    #[error("a line from Asterisk is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("the AGI preamble is longer than {limit} bytes")]
    PreambleTooLong { limit: usize },
    #[error("the AGI preamble has more than {limit} lines")]
    TooManyPreambleLines { limit: usize },
    #[error("malformed AGI preamble line {line:?}")]
    BadPreambleLine { line: String },
    #[error("unknown reply from Asterisk {line:?}")]
    UnknownReply { line: String },
    #[error("malformed 200 reply from Asterisk {line:?}")]
    BadResult { line: String },
    #[error("a 520 usage reply has more than {limit} lines")]
    TooManyUsageLines { limit: usize },
}

/// Why a [`Command`] could not be rendered. Nothing is sent in that case.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    #[error("{field} contains a control character (line break, tab, NUL, ...)")]
    ControlChar { field: &'static str },
    #[error("{field} contains a double quote or a backslash")]
    QuoteOrBackslash { field: &'static str },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} contains whitespace")]
    Whitespace { field: &'static str },
    #[error("{field} = {value} is outside {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: i128,
        min: i128,
        max: i128,
    },
    #[error("escape digit {digit:?} is not a DTMF key (0-9 * # A-D)")]
    BadEscapeDigit { digit: char },
    #[error("command line is {len} bytes; Asterisk reads at most {limit}")]
    TooLong { len: usize, limit: usize },
}

// ---------------------------------------------------------------------------
// Decoded types

/// The `agi_*` lines Asterisk sends when a session starts, in their order,
/// names without the `agi_` prefix. Values are exactly as sent: Asterisk
/// writes `unknown` for an absent caller ID, DNID or RDNIS, and an empty
/// string for an absent account code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preamble {
    entries: Vec<(String, String)>,
}

impl Preamble {
    /// The value of `agi_<name>` (`name` without the prefix, e.g.
    /// `"channel"`). If a name repeats, the first one wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `AGI()` arguments, `agi_arg_1` .. `agi_arg_N`, in numeric order
    /// (so `arg_10` comes after `arg_2`).
    pub fn args(&self) -> Vec<&str> {
        let mut numbered: Vec<(u32, &str)> = self
            .entries
            .iter()
            .filter_map(|(name, value)| {
                let n = name.strip_prefix("arg_")?.parse::<u32>().ok()?;
                Some((n, value.as_str()))
            })
            .collect();
        // Stable, so a repeated number keeps its wire order.
        numbered.sort_by_key(|(n, _)| *n);
        numbered.into_iter().map(|(_, v)| v).collect()
    }

    /// All lines in wire order, as `(name without "agi_", value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The script part of the AGI URL, query included (`route?campaign=auto`).
    pub fn network_script(&self) -> Option<&str> {
        self.get("network_script")
    }

    /// The whole AGI URL (`agi://127.0.0.1:4574/route?campaign=auto`).
    pub fn request(&self) -> Option<&str> {
        self.get("request")
    }

    pub fn channel(&self) -> Option<&str> {
        self.get("channel")
    }

    pub fn uniqueid(&self) -> Option<&str> {
        self.get("uniqueid")
    }

    pub fn callerid(&self) -> Option<&str> {
        self.get("callerid")
    }

    pub fn calleridname(&self) -> Option<&str> {
        self.get("calleridname")
    }

    pub fn dnid(&self) -> Option<&str> {
        self.get("dnid")
    }

    pub fn extension(&self) -> Option<&str> {
        self.get("extension")
    }

    pub fn context(&self) -> Option<&str> {
        self.get("context")
    }

    /// `0.0`, or `1.0` for EAGI.
    pub fn enhanced(&self) -> Option<&str> {
        self.get("enhanced")
    }

    pub fn language(&self) -> Option<&str> {
        self.get("language")
    }

    pub fn accountcode(&self) -> Option<&str> {
        self.get("accountcode")
    }
}

/// Builds a preamble from `(name without "agi_", value)` pairs, e.g. for a
/// fake switch in tests.
impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Preamble {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Preamble {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// One item Asterisk sends after the preamble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The reply to the one outstanding command.
    Reply(Reply),
    /// The caller's channel hung up, or the session is ending. Not a reply:
    /// it never answers a command, and it may come twice.
    Hangup,
}

/// Asterisk's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 result=<result>[ (<data>)][ endpos=<n>]`.
    Success {
        /// The text after `result=`, kept as text: `GET DATA` answers with a
        /// digit string (`60601`, `0123`, or empty on a bare timeout) whose
        /// leading zeros matter; other commands answer with an integer, see
        /// [`Reply::result_int`].
        result: String,
        /// The text between the parentheses (`BUSY`, `3125550123
        /// 1795238021.1`, empty for `()`), exactly as sent.
        data: Option<String>,
        /// Where playback stopped, in samples (`STREAM FILE`).
        endpos: Option<u64>,
        /// The data is exactly `timeout`: how `GET DATA` reports that the
        /// wait for digits ran out. `data` still holds `timeout` as well,
        /// because the codec cannot tell which command this answers: a
        /// `GET VARIABLE` whose value is `timeout` looks the same on the wire.
        timeout: bool,
    },
    /// `510 Invalid or unknown command`: text after the code.
    InvalidCommand { text: String },
    /// `511 Command Not Permitted on a dead channel or intercept routine`:
    /// the caller is gone.
    DeadChannel { text: String },
    /// A `520` block: the usage text lines between `520-...` and
    /// `520 End of proper usage.` (empty for the one-line
    /// `520 Invalid command syntax.  Proper usage not available.`).
    Usage { lines: Vec<String> },
}

impl Reply {
    /// The result as an integer, when this is a `200` whose result parses
    /// as one (`-1`, `57`; `0123` gives 123, the text keeps the zero).
    pub fn result_int(&self) -> Option<i64> {
        self.result_str()?.parse().ok()
    }

    /// The raw result text of a `200` reply.
    pub fn result_str(&self) -> Option<&str> {
        match self {
            Reply::Success { result, .. } => Some(result),
            _ => None,
        }
    }

    /// The parenthesised data of a `200` reply.
    pub fn data(&self) -> Option<&str> {
        match self {
            Reply::Success { data, .. } => data.as_deref(),
            _ => None,
        }
    }

    /// Asterisk ran the command (code 200). Says nothing about the
    /// command's own outcome: `200 result=-1` is a success here.
    pub fn is_success(&self) -> bool {
        matches!(self, Reply::Success { .. })
    }
}

// ---------------------------------------------------------------------------
// Framing

/// The next whole line at `start`: its text (LF and one CR before it
/// removed) and the offset just past its LF. `Ok(None)` while no LF has
/// arrived and the line is still within [`MAX_LINE_LEN`].
fn next_line(buf: &[u8], start: usize) -> Result<Option<(&str, usize)>, CodecError> {
    let rest = buf.get(start..).unwrap_or_default();
    // Look no further than one line plus its LF: a peer that never sends a
    // LF costs one bounded scan, and the error comes as soon as the limit
    // is crossed rather than when the peer stops.
    let window = &rest[..rest.len().min(MAX_LINE_LEN + 1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() > MAX_LINE_LEN {
            Err(CodecError::LineTooLong {
                limit: MAX_LINE_LEN,
            })
        } else {
            Ok(None)
        };
    };
    let raw = &window[..lf];
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| CodecError::NotUtf8)?;
    Ok(Some((text, start + lf + 1)))
}

/// A prefix of `line` short enough to put in an error.
fn snippet(line: &str) -> String {
    match line.char_indices().nth(ERROR_SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Line grammar (nom, complete input: the line has already ended)

type PResult<'a, O> = IResult<&'a str, O>;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `agi_<name>: <value>`. Asterisk always writes ": " (even before an empty
/// value); a bare ":" is accepted too, in case something between us trims
/// trailing spaces. Only that one space is removed: the value is kept as is.
fn preamble_line(input: &str) -> PResult<'_, (&str, &str)> {
    all_consuming(preceded(
        tag("agi_"),
        separated_pair(take_while1(is_name_char), (char(':'), opt(char(' '))), rest),
    ))
    .parse(input)
}

/// `<3 digits>` then `' '`, `'-'` or the end of the line, then the text.
fn status_line(input: &str) -> PResult<'_, (&str, Option<char>, &str)> {
    (
        take_while_m_n(3, 3, |c: char| c.is_ascii_digit()),
        alt((map(one_of(" -"), Some), value(None, eof))),
        rest,
    )
        .parse(input)
}

/// What a result may be made of: an integer, or the keys `GET DATA`
/// collected (digits, `*`, and the A-D keys some phones have).
fn is_result_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '*' || c == '#'
}

/// ` <key>=<value>` after the result, e.g. ` endpos=9600`.
fn attr(input: &str) -> PResult<'_, (&str, &str)> {
    preceded(
        char(' '),
        separated_pair(
            take_while1(is_name_char),
            char('='),
            take_till1(|c| c == ' '),
        ),
    )
    .parse(input)
}

fn attrs_to_end(input: &str) -> PResult<'_, Vec<(&str, &str)>> {
    all_consuming(many0(attr)).parse(input)
}

/// ` (<data>)`. Asterisk prints variable values verbatim between the
/// parentheses, so the data may itself contain `)` (or `(`). The data
/// therefore ends at the last `)` that is followed only by attributes; for
/// a `GET VARIABLE` reply that is the `)` ending the line.
fn paren_data(input: &str) -> PResult<'_, &str> {
    let (body, _) = tag(" (").parse(input)?;
    for (close, _) in body.rmatch_indices(')') {
        let tail = &body[close + 1..];
        if attrs_to_end(tail).is_ok() {
            return Ok((tail, &body[..close]));
        }
    }
    Err(nom::Err::Error(NomError::new(input, ErrorKind::Char)))
}

struct SuccessParts<'a> {
    result: &'a str,
    data: Option<&'a str>,
    attrs: Vec<(&'a str, &'a str)>,
}

/// Everything after `200 `.
fn success_body(input: &str) -> PResult<'_, SuccessParts<'_>> {
    let (input, result) = preceded(
        tag("result="),
        recognize((opt(char('-')), take_while(is_result_char))),
    )
    .parse(input)?;
    let (input, data) = opt(paren_data).parse(input)?;
    let (input, attrs) = attrs_to_end(input)?;
    Ok((
        input,
        SuccessParts {
            result,
            data,
            attrs,
        },
    ))
}

fn success_reply(line: &str, body: &str) -> Result<Reply, CodecError> {
    let bad = || CodecError::BadResult {
        line: snippet(line),
    };
    let (_, parts) = success_body(body).map_err(|_| bad())?;
    let mut endpos = None;
    for (key, val) in parts.attrs {
        match key {
            "endpos" if endpos.is_none() => endpos = Some(val.parse::<u64>().map_err(|_| bad())?),
            // None of the commands we send answers with another attribute
            // (SPEECH and RECORD FILE do): seeing one means we are out of
            // step with the switch.
            _ => return Err(bad()),
        }
    }
    Ok(Reply::Success {
        result: parts.result.to_owned(),
        data: parts.data.map(str::to_owned),
        endpos,
        timeout: parts.data == Some(TIMEOUT_MARK),
    })
}

/// What the first line of an inbound item says.
enum FirstLine {
    Hangup,
    Done(Reply),
    /// `520-`: usage text lines follow until the `520 ` line.
    UsageBlock,
}

fn first_line(line: &str) -> Result<FirstLine, CodecError> {
    if line == "HANGUP" {
        return Ok(FirstLine::Hangup);
    }
    let unknown = || CodecError::UnknownReply {
        line: snippet(line),
    };
    let (_, (code, sep, text)) = status_line(line).map_err(|_| unknown())?;
    match (code, sep) {
        ("200", Some(' ')) => success_reply(line, text).map(FirstLine::Done),
        ("200", _) => Err(CodecError::BadResult {
            line: snippet(line),
        }),
        ("510", Some(' ') | None) => Ok(FirstLine::Done(Reply::InvalidCommand {
            text: text.to_owned(),
        })),
        ("511", Some(' ') | None) => Ok(FirstLine::Done(Reply::DeadChannel {
            text: text.to_owned(),
        })),
        ("520", Some('-')) => Ok(FirstLine::UsageBlock),
        // Asterisk's reply for a command registered without usage text.
        ("520", _) => Ok(FirstLine::Done(Reply::Usage { lines: Vec::new() })),
        _ => Err(unknown()),
    }
}

/// If `line` ends a usage block, the usage text on it (normally empty).
/// Asterisk 22 puts `520 End of proper usage.` on its own line; older
/// versions wrote the usage text without its final LF, gluing the end
/// marker to the last usage line, so that form ends the block too.
fn usage_end(line: &str) -> Option<&str> {
    if line.starts_with("520 ") {
        return Some("");
    }
    line.strip_suffix(USAGE_END)
}

// ---------------------------------------------------------------------------
// Decoders

/// Decodes the preamble at the start of `buf`.
///
/// `Ok(None)`: the blank line ending it has not arrived yet. `Ok(Some((p, n)))`:
/// the preamble and the bytes it took, blank line included. Exceeding
/// [`MAX_PREAMBLE_BYTES`], [`MAX_PREAMBLE_LINES`] or [`MAX_LINE_LEN`] is an
/// error as soon as it is certain, even before the preamble ends.
pub fn decode_preamble(buf: &[u8]) -> Result<Option<(Preamble, usize)>, CodecError> {
    let mut entries = Vec::new();
    let mut pos = 0;
    loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            // Unfinished; the blank line still to come would put the end
            // past the budget.
            if buf.len() >= MAX_PREAMBLE_BYTES {
                return Err(CodecError::PreambleTooLong {
                    limit: MAX_PREAMBLE_BYTES,
                });
            }
            return Ok(None);
        };
        if next > MAX_PREAMBLE_BYTES {
            return Err(CodecError::PreambleTooLong {
                limit: MAX_PREAMBLE_BYTES,
            });
        }
        if line.is_empty() {
            return Ok(Some((Preamble { entries }, next)));
        }
        if entries.len() == MAX_PREAMBLE_LINES {
            return Err(CodecError::TooManyPreambleLines {
                limit: MAX_PREAMBLE_LINES,
            });
        }
        let (_, (name, value)) = preamble_line(line).map_err(|_| CodecError::BadPreambleLine {
            line: snippet(line),
        })?;
        entries.push((name.to_owned(), value.to_owned()));
        pos = next;
    }
}

/// Decodes one item (a reply, or a `HANGUP` line) at the start of `buf`,
/// which must be past the preamble.
///
/// `Ok(None)`: the item is not complete yet (no whole line, or a `520`
/// block whose end line has not arrived). `Ok(Some((item, n)))`: the item and
/// the bytes it took. More than [`MAX_USAGE_LINES`] usage lines, or a line
/// over [`MAX_LINE_LEN`], is an error even before the item ends.
pub fn decode_inbound(buf: &[u8]) -> Result<Option<(Inbound, usize)>, CodecError> {
    let Some((line, mut pos)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    match first_line(line)? {
        FirstLine::Hangup => Ok(Some((Inbound::Hangup, pos))),
        FirstLine::Done(reply) => Ok(Some((Inbound::Reply(reply), pos))),
        FirstLine::UsageBlock => {
            let mut lines = Vec::new();
            loop {
                let Some((line, next)) = next_line(buf, pos)? else {
                    return Ok(None);
                };
                pos = next;
                let (text, ended) = match usage_end(line) {
                    Some(text) => (text, true),
                    None => (line, false),
                };
                if !(ended && text.is_empty()) {
                    if lines.len() == MAX_USAGE_LINES {
                        return Err(CodecError::TooManyUsageLines {
                            limit: MAX_USAGE_LINES,
                        });
                    }
                    lines.push(text.to_owned());
                }
                if ended {
                    return Ok(Some((Inbound::Reply(Reply::Usage { lines }), pos)));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Commands

/// A command bidbridge sends. Fields are plain values; [`Command::encode`]
/// validates and quotes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Answer,
    Hangup,
    Noop,
    /// Plays `file` (no extension); any key in `escape_digits` interrupts it.
    StreamFile {
        file: String,
        escape_digits: String,
    },
    /// Plays `file`, then collects up to `max_digits` keys (`#` ends early),
    /// waiting `timeout_ms` after the prompt.
    GetData {
        file: String,
        timeout_ms: u64,
        max_digits: u32,
    },
    /// Waits for one key; `-1` waits for ever.
    WaitForDigit {
        timeout_ms: i64,
    },
    /// Runs a dialplan application; `args` is passed as one argument (it is
    /// split on `,` by the application itself).
    Exec {
        app: String,
        args: String,
    },
    GetVariable {
        name: String,
    },
    /// Evaluates a dialplan expression such as `${CHANNEL(uniqueid)}`.
    GetFullVariable {
        expr: String,
    },
    SetVariable {
        name: String,
        value: String,
    },
    ChannelStatus,
    /// Where the dialplan continues when the AGI session ends (with
    /// [`Command::SetExtension`] and [`Command::SetPriority`]: a transfer).
    SetContext {
        context: String,
    },
    SetExtension {
        extension: String,
    },
    /// A numeric priority (Asterisk also takes labels; we never send one).
    SetPriority {
        priority: u32,
    },
    /// Logs `message` at verbose `level` (1 to 4) in Asterisk's log.
    Verbose {
        message: String,
        level: u8,
    },
}

impl Command {
    /// The command's keywords as sent (`STREAM FILE`), for logs and errors.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Answer => "ANSWER",
            Command::Hangup => "HANGUP",
            Command::Noop => "NOOP",
            Command::StreamFile { .. } => "STREAM FILE",
            Command::GetData { .. } => "GET DATA",
            Command::WaitForDigit { .. } => "WAIT FOR DIGIT",
            Command::Exec { .. } => "EXEC",
            Command::GetVariable { .. } => "GET VARIABLE",
            Command::GetFullVariable { .. } => "GET FULL VARIABLE",
            Command::SetVariable { .. } => "SET VARIABLE",
            Command::ChannelStatus => "CHANNEL STATUS",
            Command::SetContext { .. } => "SET CONTEXT",
            Command::SetExtension { .. } => "SET EXTENSION",
            Command::SetPriority { .. } => "SET PRIORITY",
            Command::Verbose { .. } => "VERBOSE",
        }
    }

    /// Renders the command line, trailing `\n` included.
    ///
    /// Asterisk splits a command line on spaces and tabs, and its parser
    /// (`parse_args` in res_agi.c) gives `"` (quote toggle) and `\` (escape)
    /// special meaning anywhere in the line. So: names (files, variables,
    /// applications) must be non-empty and free of whitespace; every value
    /// is refused if it holds a quote, a backslash or any control character;
    /// free-text values are put in double quotes when empty or when they
    /// hold whitespace. Escape digits and `GET FULL VARIABLE` expressions are
    /// always quoted, as in the recorded sessions.
    pub fn encode(&self) -> Result<String, CommandError> {
        let mut line = match self {
            Command::Answer | Command::Hangup | Command::Noop | Command::ChannelStatus => {
                self.verb().to_owned()
            }
            Command::StreamFile {
                file,
                escape_digits,
            } => {
                let file = name_arg("file", file)?;
                let digits = escape_digits_arg(escape_digits)?;
                format!("STREAM FILE {file} {digits}")
            }
            Command::GetData {
                file,
                timeout_ms,
                max_digits,
            } => {
                let file = name_arg("file", file)?;
                in_range(
                    "timeout_ms",
                    i128::from(*timeout_ms),
                    1,
                    i128::from(MAX_TIMEOUT_MS),
                )?;
                in_range(
                    "max_digits",
                    i128::from(*max_digits),
                    1,
                    i128::from(MAX_GET_DATA_DIGITS),
                )?;
                format!("GET DATA {file} {timeout_ms} {max_digits}")
            }
            Command::WaitForDigit { timeout_ms } => {
                in_range(
                    "timeout_ms",
                    i128::from(*timeout_ms),
                    -1,
                    i128::from(MAX_TIMEOUT_MS),
                )?;
                format!("WAIT FOR DIGIT {timeout_ms}")
            }
            Command::Exec { app, args } => {
                let app = name_arg("app", app)?;
                let args = text_arg("args", args)?;
                format!("EXEC {app} {args}")
            }
            Command::GetVariable { name } => format!("GET VARIABLE {}", name_arg("name", name)?),
            Command::GetFullVariable { expr } => {
                check_text("expr", expr)?;
                format!("GET FULL VARIABLE \"{expr}\"")
            }
            Command::SetVariable { name, value } => {
                let name = name_arg("name", name)?;
                let value = text_arg("value", value)?;
                format!("SET VARIABLE {name} {value}")
            }
            Command::SetContext { context } => {
                format!("SET CONTEXT {}", name_arg("context", context)?)
            }
            Command::SetExtension { extension } => {
                format!("SET EXTENSION {}", name_arg("extension", extension)?)
            }
            Command::SetPriority { priority } => {
                // Priority 0 does not exist; 1 starts an extension.
                in_range("priority", i128::from(*priority), 1, i128::from(i32::MAX))?;
                format!("SET PRIORITY {priority}")
            }
            Command::Verbose { message, level } => {
                in_range("level", i128::from(*level), 1, 4)?;
                format!("VERBOSE {} {level}", text_arg("message", message)?)
            }
        };
        line.push('\n');
        if line.len() > MAX_COMMAND_LINE_LEN {
            return Err(CommandError::TooLong {
                len: line.len(),
                limit: MAX_COMMAND_LINE_LEN,
            });
        }
        Ok(line)
    }
}

/// Refuses what would break the line or be read specially by `parse_args`.
fn check_text(field: &'static str, text: &str) -> Result<(), CommandError> {
    if text.chars().any(char::is_control) {
        return Err(CommandError::ControlChar { field });
    }
    if text.contains(['"', '\\']) {
        return Err(CommandError::QuoteOrBackslash { field });
    }
    Ok(())
}

/// A name that must arrive as one bare argument.
fn name_arg<'a>(field: &'static str, text: &'a str) -> Result<&'a str, CommandError> {
    if text.is_empty() {
        return Err(CommandError::Empty { field });
    }
    check_text(field, text)?;
    if text.chars().any(char::is_whitespace) {
        return Err(CommandError::Whitespace { field });
    }
    Ok(text)
}

/// Free text as one argument: quoted only when it has to be, which is also
/// what the recordings show Asterisk accepting (`SET VARIABLE X 1`).
fn text_arg(field: &'static str, text: &str) -> Result<String, CommandError> {
    check_text(field, text)?;
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        Ok(format!("\"{text}\""))
    } else {
        Ok(text.to_owned())
    }
}

/// Escape digits are always quoted (an empty set must be `""` to keep its
/// place) and limited to DTMF keys, which is all Asterisk compares them with.
fn escape_digits_arg(digits: &str) -> Result<String, CommandError> {
    if let Some(digit) = digits
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        return Err(CommandError::BadEscapeDigit { digit });
    }
    Ok(format!("\"{digits}\""))
}

fn in_range(field: &'static str, value: i128, min: i128, max: i128) -> Result<(), CommandError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(CommandError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

// ---------------------------------------------------------------------------

/// Asterisk's own argument splitting (`parse_args` in res/res_agi.c): a
/// command line (without its LF) split on spaces and tabs, `"` toggling
/// quoting and `\` escaping the next character. The simulator reads
/// commands with it, and the tests prove every encoded command splits
/// back into exactly the arguments meant.
pub fn parse_args(line: &str) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    let (mut quoted, mut escaped, mut whitespace) = (false, false, true);
    for c in line.chars() {
        match c {
            '"' if !escaped => {
                quoted = !quoted;
                if quoted && whitespace {
                    argv.push(String::new());
                    whitespace = false;
                }
            }
            ' ' | '\t' if !quoted && !escaped => whitespace = true,
            '\\' if !escaped => escaped = true,
            _ => {
                if whitespace {
                    argv.push(String::new());
                    whitespace = false;
                }
                if let Some(arg) = argv.last_mut() {
                    arg.push(c);
                }
                escaped = false;
            }
        }
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -- helpers ------------------------------------------------------------

    fn ok(result: &str) -> Reply {
        Reply::Success {
            result: result.into(),
            data: None,
            endpos: None,
            timeout: false,
        }
    }

    fn ok_data(result: &str, data: &str) -> Reply {
        Reply::Success {
            result: result.into(),
            data: Some(data.into()),
            endpos: None,
            timeout: data == "timeout",
        }
    }

    fn ok_endpos(result: &str, endpos: u64) -> Reply {
        Reply::Success {
            result: result.into(),
            data: None,
            endpos: Some(endpos),
            timeout: false,
        }
    }

    /// Decodes exactly one item that must fill `wire` completely.
    fn one(wire: &str) -> Inbound {
        match decode_inbound(wire.as_bytes()) {
            Ok(Some((item, n))) => {
                assert_eq!(n, wire.len(), "consumed length for {wire:?}");
                item
            }
            other => panic!("{wire:?} gave {other:?}"),
        }
    }

    fn reply(wire: &str) -> Reply {
        match one(wire) {
            Inbound::Reply(r) => r,
            Inbound::Hangup => panic!("{wire:?} decoded as HANGUP"),
        }
    }

    fn err(wire: &[u8]) -> CodecError {
        match decode_inbound(wire) {
            Err(e) => e,
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(wire)),
        }
    }

    const STREAM_FILE_USAGE: &str = "520-Invalid command syntax.  Proper usage follows:\n\
        Send the given file, allowing playback to be interrupted by the given digits, if any. Returns <literal>0</literal> if playback completes without a digit being pressed, or the ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error or if the channel was disconnected. If musiconhold is playing before calling stream file it will be automatically stopped and will not be restarted after completion.\n\
        It sets the following channel variables upon completion:\n\
        <variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n    \
        <value>SUCCESS</value>\n    \
        <value>FAILED</value>\n\
        520 End of proper usage.\n";

    const PREAMBLE_01: &str = "agi_network: yes\n\
        agi_network_script: route\n\
        agi_request: agi://127.0.0.1:4574/route\n\
        agi_channel: Local/8005550100@bidbridge-in-00000000;2\n\
        agi_language: en\n\
        agi_type: Local\n\
        agi_uniqueid: 1795238021.1\n\
        agi_version: 22.10.1\n\
        agi_callerid: 3125550123\n\
        agi_calleridname: Test Caller\n\
        agi_callingpres: 0\n\
        agi_callingani2: 0\n\
        agi_callington: 0\n\
        agi_callingtns: 0\n\
        agi_dnid: unknown\n\
        agi_rdnis: unknown\n\
        agi_context: bidbridge-in\n\
        agi_extension: 8005550100\n\
        agi_priority: 2\n\
        agi_enhanced: 0.0\n\
        agi_accountcode: \n\
        agi_threadid: 140248760895168\n\
        \n";

    // -- replies ------------------------------------------------------------

    #[test]
    fn plain_results() {
        assert_eq!(reply("200 result=0\n"), ok("0"));
        assert_eq!(reply("200 result=-1\n"), ok("-1"));
        assert_eq!(reply("200 result=-2\n"), ok("-2"));
        assert_eq!(reply("200 result=6\n"), ok("6"));
        assert_eq!(reply("200 result=-1\n").result_int(), Some(-1));
    }

    #[test]
    fn endpos() {
        let r = reply("200 result=57 endpos=9600\n");
        assert_eq!(r, ok_endpos("57", 9600));
        assert_eq!(r.result_int(), Some(57));
        assert_eq!(reply("200 result=-1 endpos=0\n"), ok_endpos("-1", 0));
        assert_eq!(reply("200 result=0 endpos=20210\n"), ok_endpos("0", 20210));
    }

    #[test]
    fn parenthesised_data() {
        assert_eq!(reply("200 result=1 (BUSY)\n"), ok_data("1", "BUSY"));
        assert_eq!(reply("200 result=1 ()\n"), ok_data("1", ""));
        assert_eq!(
            reply("200 result=1 (3125550123 1795238021.1)\n"),
            ok_data("1", "3125550123 1795238021.1")
        );
        assert_eq!(
            reply("200 result=1 (1795238075.170)\n"),
            ok_data("1", "1795238075.170")
        );
        assert_eq!(
            reply("200 result=1 (Local/answer@buyers-00000003;1)\n"),
            ok_data("1", "Local/answer@buyers-00000003;1")
        );
        assert_eq!(
            reply("200 result=1 (sold buyer=answer price=12.50)\n"),
            ok_data("1", "sold buyer=answer price=12.50")
        );
        let r = reply("200 result=1 (BUSY)\n");
        assert_eq!(r.data(), Some("BUSY"));
        assert_eq!(r.result_str(), Some("1"));
    }

    #[test]
    fn data_may_hold_parentheses() {
        // A variable value is printed verbatim: the data runs to the last ")".
        assert_eq!(reply("200 result=1 (a) b)\n"), ok_data("1", "a) b"));
        assert_eq!(reply("200 result=1 ((x))\n"), ok_data("1", "(x)"));
        assert_eq!(
            reply("200 result=1 (x) endpos=5)\n"),
            ok_data("1", "x) endpos=5")
        );
        // ... unless only attributes follow a ")".
        let r = reply("200 result=1 (x) endpos=5) endpos=7\n");
        assert_eq!(
            r,
            Reply::Success {
                result: "1".into(),
                data: Some("x) endpos=5".into()),
                endpos: Some(7),
                timeout: false
            }
        );
        let r = reply("200 result=0 (dtmf) endpos=123\n");
        assert_eq!(
            r,
            Reply::Success {
                result: "0".into(),
                data: Some("dtmf".into()),
                endpos: Some(123),
                timeout: false
            }
        );
    }

    #[test]
    fn get_data_digit_strings() {
        let r = reply("200 result=60601\n");
        assert_eq!(r, ok("60601"));
        assert_eq!(r.result_int(), Some(60601));
        assert_eq!(reply("200 result=77\n"), ok("77"));
        // ZIP codes keep their leading zero in the text.
        let r = reply("200 result=01234\n");
        assert_eq!(r.result_str(), Some("01234"));
        assert_eq!(r.result_int(), Some(1234));
        // Keys that are not digits.
        let r = reply("200 result=1*2\n");
        assert_eq!(r.result_str(), Some("1*2"));
        assert_eq!(r.result_int(), None);
        // Empty entry without a timeout (caller pressed # at once).
        let r = reply("200 result=\n");
        assert_eq!(r, ok(""));
        assert_eq!(r.result_int(), None);
    }

    #[test]
    fn timeouts() {
        let r = reply("200 result= (timeout)\n");
        assert_eq!(
            r,
            Reply::Success {
                result: "".into(),
                data: Some("timeout".into()),
                endpos: None,
                timeout: true
            }
        );
        assert_eq!(r.result_int(), None);
        let r = reply("200 result=12 (timeout)\n");
        assert_eq!(
            r,
            Reply::Success {
                result: "12".into(),
                data: Some("timeout".into()),
                endpos: None,
                timeout: true
            }
        );
        assert_eq!(r.result_int(), Some(12));
        // Only the exact marker counts.
        assert_eq!(reply("200 result=1 (timeouts)\n"), ok_data("1", "timeouts"));
    }

    #[test]
    fn error_replies() {
        let r = reply("510 Invalid or unknown command\n");
        assert_eq!(
            r,
            Reply::InvalidCommand {
                text: "Invalid or unknown command".into()
            }
        );
        assert!(!r.is_success());
        assert_eq!(r.result_int(), None);
        let r = reply("511 Command Not Permitted on a dead channel or intercept routine\n");
        assert_eq!(
            r,
            Reply::DeadChannel {
                text: "Command Not Permitted on a dead channel or intercept routine".into()
            }
        );
        assert!(!r.is_success());
        assert!(reply("200 result=-1\n").is_success());
    }

    #[test]
    fn usage_block_from_fixture_04() {
        let r = reply(STREAM_FILE_USAGE);
        let Reply::Usage { lines } = r else {
            panic!("{r:?}")
        };
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("Send the given file, allowing playback"));
        assert_eq!(lines[3], "    <value>SUCCESS</value>");
        assert_eq!(lines[4], "    <value>FAILED</value>");

        let set_var = "520-Invalid command syntax.  Proper usage follows:\nSets a variable to the current channel.\n520 End of proper usage.\n";
        assert_eq!(
            reply(set_var),
            Reply::Usage {
                lines: vec!["Sets a variable to the current channel.".into()]
            }
        );
    }

    #[test]
    fn usage_variants() {
        // Command without usage text: one line.
        assert_eq!(
            reply("520 Invalid command syntax.  Proper usage not available.\n"),
            Reply::Usage { lines: vec![] }
        );
        // Empty usage and an empty usage line.
        assert_eq!(
            reply("520-x\n520 End of proper usage.\n"),
            Reply::Usage { lines: vec![] }
        );
        assert_eq!(
            reply("520-x\n\nb\n520 End of proper usage.\n"),
            Reply::Usage {
                lines: vec!["".into(), "b".into()]
            }
        );
        // Older Asterisk glued the end marker to the last usage line.
        assert_eq!(
            reply(
                "520-Invalid command syntax.  Proper usage follows:\nAnswers channel.520 End of proper usage.\n"
            ),
            Reply::Usage {
                lines: vec!["Answers channel.".into()]
            }
        );
        // A usage line that looks like a reply is still usage text.
        assert_eq!(
            reply("520-x\n200 result=1\nHANGUP\n520 End\n"),
            Reply::Usage {
                lines: vec!["200 result=1".into(), "HANGUP".into()]
            }
        );
    }

    #[test]
    fn hangup_lines() {
        assert_eq!(one("HANGUP\n"), Inbound::Hangup);
        let wire = b"HANGUP\nHANGUP\n";
        let (first, n) = decode_inbound(wire).unwrap().unwrap();
        assert_eq!((first, n), (Inbound::Hangup, 7));
        let (second, m) = decode_inbound(&wire[n..]).unwrap().unwrap();
        assert_eq!((second, m), (Inbound::Hangup, 7));
        // A reply and the HANGUP that follows it in one read (02c).
        let wire = b"200 result=-1 endpos=12000\nHANGUP\n";
        let (r, n) = decode_inbound(wire).unwrap().unwrap();
        assert_eq!(r, Inbound::Reply(ok_endpos("-1", 12000)));
        assert_eq!(
            decode_inbound(&wire[n..]).unwrap(),
            Some((Inbound::Hangup, 7))
        );
    }

    #[test]
    fn crlf_is_tolerated() {
        assert_eq!(
            one("200 result=1 (BUSY)\r\n"),
            Inbound::Reply(ok_data("1", "BUSY"))
        );
        assert_eq!(one("HANGUP\r\n"), Inbound::Hangup);
        assert_eq!(
            one("510 Invalid or unknown command\r\n"),
            Inbound::Reply(Reply::InvalidCommand {
                text: "Invalid or unknown command".into()
            })
        );
        assert_eq!(
            one("520-x\r\nusage\r\n520 End of proper usage.\r\n"),
            Inbound::Reply(Reply::Usage {
                lines: vec!["usage".into()]
            })
        );
        let crlf = PREAMBLE_01.replace('\n', "\r\n");
        let (p, n) = decode_preamble(crlf.as_bytes()).unwrap().unwrap();
        assert_eq!(n, crlf.len());
        assert_eq!(
            p,
            decode_preamble(PREAMBLE_01.as_bytes()).unwrap().unwrap().0
        );
        assert_eq!(p.accountcode(), Some(""));
        // Only one CR, right before the LF, is a line ending.
        assert_eq!(reply("200 result=1 (a\rb)\n"), ok_data("1", "a\rb"));
    }

    #[test]
    fn garbage_is_an_error() {
        let unknown = |s: &str| CodecError::UnknownReply { line: s.into() };
        let bad = |s: &str| CodecError::BadResult { line: s.into() };
        assert_eq!(err(b"\n"), unknown(""));
        assert_eq!(err(b"FOO BAR\n"), unknown("FOO BAR"));
        assert_eq!(err(b"HANGUP now\n"), unknown("HANGUP now"));
        assert_eq!(err(b"hangup\n"), unknown("hangup"));
        assert_eq!(err(b"2x0 result=1\n"), unknown("2x0 result=1"));
        assert_eq!(err(b"2000 result=1\n"), unknown("2000 result=1"));
        assert_eq!(err(b"300 something\n"), unknown("300 something"));
        assert_eq!(
            err(b"503 result=-2 Memory allocation failure\n"),
            unknown("503 result=-2 Memory allocation failure")
        );
        assert_eq!(err(b"510-x\n"), unknown("510-x"));
        assert_eq!(err(b"200\n"), bad("200"));
        assert_eq!(err(b"200-result=1\n"), bad("200-result=1"));
        assert_eq!(err(b"200 foo=1\n"), bad("200 foo=1"));
        assert_eq!(err(b"200 result 1\n"), bad("200 result 1"));
        assert_eq!(
            err(b"200 result=1 (unterminated\n"),
            bad("200 result=1 (unterminated")
        );
        assert_eq!(err(b"200 result=1 bogus\n"), bad("200 result=1 bogus"));
        assert_eq!(err(b"200 result=1  (x)\n"), bad("200 result=1  (x)"));
        assert_eq!(
            err(b"200 result=1 endpos=abc\n"),
            bad("200 result=1 endpos=abc")
        );
        assert_eq!(err(b"200 result=1 endpos=\n"), bad("200 result=1 endpos="));
        assert_eq!(
            err(b"200 result=1 endpos=-5\n"),
            bad("200 result=1 endpos=-5")
        );
        assert_eq!(
            err(b"200 result=1 endpos=1 endpos=2\n"),
            bad("200 result=1 endpos=1 endpos=2")
        );
        assert_eq!(
            err(b"200 result=1 (speech) endpos=0 results=1\n"),
            bad("200 result=1 (speech) endpos=0 results=1")
        );
        assert_eq!(
            err(b"200 result=0 Gosub complete\n"),
            bad("200 result=0 Gosub complete")
        );
        assert_eq!(err(b"200 result=1(x)\n"), bad("200 result=1(x)"));
        assert_eq!(err(b"200 result=1 \n"), bad("200 result=1 "));
        assert_eq!(err(b"200 result=\xff\n"), CodecError::NotUtf8);
        assert_eq!(err(b"\xc3\x28\n"), CodecError::NotUtf8);
        // A usage line that is not UTF-8 poisons the block.
        assert_eq!(
            err(b"520-x\n\xff\n520 End of proper usage.\n"),
            CodecError::NotUtf8
        );
        // Errors carry a bounded part of the line.
        let long = format!("{}\n", "x".repeat(5000));
        let CodecError::UnknownReply { line } = err(long.as_bytes()) else {
            panic!()
        };
        assert!(line.len() < 300, "{}", line.len());
    }

    // -- limits -------------------------------------------------------------

    #[test]
    fn line_limit() {
        // Exactly at the limit without its LF: still waiting.
        let at_limit = vec![b'x'; MAX_LINE_LEN];
        assert_eq!(decode_inbound(&at_limit), Ok(None));
        assert_eq!(decode_preamble(&at_limit), Ok(None));
        // One more byte and no LF: an error, although the line is unfinished.
        let over = vec![b'x'; MAX_LINE_LEN + 1];
        assert_eq!(
            decode_inbound(&over),
            Err(CodecError::LineTooLong {
                limit: MAX_LINE_LEN
            })
        );
        assert_eq!(
            decode_preamble(&over),
            Err(CodecError::LineTooLong {
                limit: MAX_LINE_LEN
            })
        );
        // A line of exactly the limit is accepted.
        let mut data = "200 result=1 (".to_string();
        data.push_str(&"d".repeat(MAX_LINE_LEN - data.len() - 1));
        data.push_str(")\n");
        assert_eq!(data.len(), MAX_LINE_LEN + 1);
        assert!(reply(&data).is_success());
        // The limit also holds inside a usage block.
        let mut block = b"520-x\n".to_vec();
        block.extend(std::iter::repeat_n(b'u', MAX_LINE_LEN + 1));
        assert_eq!(
            decode_inbound(&block),
            Err(CodecError::LineTooLong {
                limit: MAX_LINE_LEN
            })
        );
    }

    #[test]
    fn usage_block_limit() {
        let mut block = "520-Invalid command syntax.  Proper usage follows:\n".to_string();
        for i in 0..MAX_USAGE_LINES {
            block.push_str(&format!("usage {i}\n"));
        }
        // At the limit and unfinished: waiting.
        assert_eq!(decode_inbound(block.as_bytes()), Ok(None));
        let mut ended = block.clone();
        ended.push_str("520 End of proper usage.\n");
        let Reply::Usage { lines } = reply(&ended) else {
            panic!()
        };
        assert_eq!(lines.len(), MAX_USAGE_LINES);
        // One more usage line: an error before the block ends.
        block.push_str("one too many\n");
        assert_eq!(
            decode_inbound(block.as_bytes()),
            Err(CodecError::TooManyUsageLines {
                limit: MAX_USAGE_LINES
            })
        );
    }

    #[test]
    fn preamble_line_limit() {
        let mut wire = String::new();
        for i in 0..MAX_PREAMBLE_LINES {
            wire.push_str(&format!("agi_arg_{i}: x\n"));
        }
        assert_eq!(decode_preamble(wire.as_bytes()), Ok(None));
        let mut done = wire.clone();
        done.push('\n');
        assert_eq!(
            decode_preamble(done.as_bytes()).unwrap().unwrap().0.len(),
            MAX_PREAMBLE_LINES
        );
        wire.push_str("agi_arg_x: x\n");
        assert_eq!(
            decode_preamble(wire.as_bytes()),
            Err(CodecError::TooManyPreambleLines {
                limit: MAX_PREAMBLE_LINES
            })
        );
    }

    #[test]
    fn preamble_byte_limit() {
        // Ten lines of ~7 KiB (each under the line limit) pass 64 KiB.
        let line = format!("agi_arg_1: {}\n", "v".repeat(7000));
        let mut wire = String::new();
        while wire.len() + line.len() <= MAX_PREAMBLE_BYTES {
            wire.push_str(&line);
        }
        // Complete lines, no blank line, under the budget: waiting.
        assert_eq!(decode_preamble(wire.as_bytes()), Ok(None));
        // The next full line crosses the budget: an error while unfinished.
        let mut over = wire.clone();
        over.push_str(&line);
        assert_eq!(
            decode_preamble(over.as_bytes()),
            Err(CodecError::PreambleTooLong {
                limit: MAX_PREAMBLE_BYTES
            })
        );
        // So does a partial line that fills the budget.
        let mut partial = wire.clone();
        partial.push_str(&"v".repeat(MAX_PREAMBLE_BYTES - wire.len()));
        assert_eq!(partial.len(), MAX_PREAMBLE_BYTES);
        assert_eq!(
            decode_preamble(partial.as_bytes()),
            Err(CodecError::PreambleTooLong {
                limit: MAX_PREAMBLE_BYTES
            })
        );
        // A preamble ending exactly at the budget is fine.
        let mut exact = wire.clone();
        let pad = MAX_PREAMBLE_BYTES - exact.len() - "agi_x: \n\n".len();
        exact.push_str(&format!("agi_x: {}\n\n", "p".repeat(pad)));
        assert_eq!(exact.len(), MAX_PREAMBLE_BYTES);
        assert_eq!(
            decode_preamble(exact.as_bytes()).unwrap().unwrap().1,
            MAX_PREAMBLE_BYTES
        );
    }

    // -- preamble -----------------------------------------------------------

    #[test]
    fn preamble_fields() {
        let (p, n) = decode_preamble(PREAMBLE_01.as_bytes()).unwrap().unwrap();
        assert_eq!(n, PREAMBLE_01.len());
        assert_eq!(p.len(), 22);
        assert_eq!(p.iter().next(), Some(("network", "yes")));
        assert_eq!(p.iter().last(), Some(("threadid", "140248760895168")));
        assert_eq!(p.network_script(), Some("route"));
        assert_eq!(p.request(), Some("agi://127.0.0.1:4574/route"));
        assert_eq!(
            p.channel(),
            Some("Local/8005550100@bidbridge-in-00000000;2")
        );
        assert_eq!(p.uniqueid(), Some("1795238021.1"));
        assert_eq!(p.callerid(), Some("3125550123"));
        assert_eq!(p.calleridname(), Some("Test Caller"));
        assert_eq!(p.dnid(), Some("unknown"));
        assert_eq!(p.extension(), Some("8005550100"));
        assert_eq!(p.context(), Some("bidbridge-in"));
        assert_eq!(p.enhanced(), Some("0.0"));
        assert_eq!(p.language(), Some("en"));
        assert_eq!(p.accountcode(), Some(""));
        assert_eq!(
            p.get("agi_channel"),
            None,
            "names are stored without the prefix"
        );
        assert_eq!(p.get("nosuch"), None);
        assert!(p.args().is_empty());
    }

    #[test]
    fn preamble_args_and_odd_values() {
        let wire = "agi_network_script: route?campaign=auto\n\
            agi_request: agi://127.0.0.1:4574/route?campaign=auto\n\
            agi_calleridname:  Leading Space\n\
            agi_accountcode:\n\
            agi_arg_2: zip=60601\n\
            agi_arg_10: ten\n\
            agi_arg_1: pub=77\n\
            agi_arg_3: a: b\n\
            \n200 result=0\n";
        let (p, n) = decode_preamble(wire.as_bytes()).unwrap().unwrap();
        assert_eq!(&wire[n..], "200 result=0\n", "stops after the blank line");
        assert_eq!(p.network_script(), Some("route?campaign=auto"));
        assert_eq!(
            p.request(),
            Some("agi://127.0.0.1:4574/route?campaign=auto")
        );
        assert_eq!(p.calleridname(), Some(" Leading Space"));
        assert_eq!(p.accountcode(), Some(""));
        assert_eq!(p.args(), vec!["pub=77", "zip=60601", "a: b", "ten"]);
    }

    #[test]
    fn preamble_garbage() {
        let bad = |s: &str| CodecError::BadPreambleLine { line: s.into() };
        assert_eq!(
            decode_preamble(b"agi_channel SIP/1\n\n"),
            Err(bad("agi_channel SIP/1"))
        );
        assert_eq!(decode_preamble(b"foo: bar\n\n"), Err(bad("foo: bar")));
        assert_eq!(decode_preamble(b"agi_: x\n\n"), Err(bad("agi_: x")));
        assert_eq!(decode_preamble(b"agi_a-b: x\n\n"), Err(bad("agi_a-b: x")));
        assert_eq!(decode_preamble(b"200 result=0\n"), Err(bad("200 result=0")));
        assert_eq!(
            decode_preamble(b"agi_x: \xff\n\n"),
            Err(CodecError::NotUtf8)
        );
        // A bad line is reported as soon as it is complete, before the end.
        assert_eq!(
            decode_preamble(b"agi_network: yes\nbogus\nagi_x"),
            Err(bad("bogus"))
        );
        // An empty preamble is just the blank line.
        assert_eq!(decode_preamble(b"\n"), Ok(Some((Preamble::default(), 1))));
    }

    // -- incomplete input at every byte boundary ----------------------------

    /// A session as Asterisk sends it, with the item boundaries.
    fn sample_items() -> Vec<(&'static str, Inbound)> {
        vec![
            ("200 result=0\n", Inbound::Reply(ok("0"))),
            (
                "200 result=57 endpos=9600\n",
                Inbound::Reply(ok_endpos("57", 9600)),
            ),
            (
                "200 result=1 (3125550123 1795238021.1)\n",
                Inbound::Reply(ok_data("1", "3125550123 1795238021.1")),
            ),
            (
                "200 result= (timeout)\n",
                Inbound::Reply(ok_data("", "timeout")),
            ),
            (
                "510 Invalid or unknown command\n",
                Inbound::Reply(Reply::InvalidCommand {
                    text: "Invalid or unknown command".into(),
                }),
            ),
            (
                "520-Invalid command syntax.  Proper usage follows:\nSets a variable to the current channel.\n520 End of proper usage.\n",
                Inbound::Reply(Reply::Usage {
                    lines: vec!["Sets a variable to the current channel.".into()],
                }),
            ),
            ("200 result=1\n", Inbound::Reply(ok("1"))),
            ("HANGUP\n", Inbound::Hangup),
            (
                "511 Command Not Permitted on a dead channel or intercept routine\n",
                Inbound::Reply(Reply::DeadChannel {
                    text: "Command Not Permitted on a dead channel or intercept routine".into(),
                }),
            ),
            ("HANGUP\n", Inbound::Hangup),
            ("HANGUP\n", Inbound::Hangup),
        ]
    }

    #[test]
    fn preamble_prefixes_wait_until_complete() {
        let wire = format!("{PREAMBLE_01}200 result=0\n");
        let bytes = wire.as_bytes();
        for end in 0..PREAMBLE_01.len() {
            assert_eq!(
                decode_preamble(&bytes[..end]),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
        for end in PREAMBLE_01.len()..=bytes.len() {
            let (p, n) = decode_preamble(&bytes[..end]).unwrap().unwrap();
            assert_eq!(n, PREAMBLE_01.len());
            assert_eq!(p.len(), 22);
        }
    }

    #[test]
    fn inbound_prefixes_wait_until_complete() {
        let items = sample_items();
        let wire: String = items.iter().map(|(w, _)| *w).collect();
        let bytes = wire.as_bytes();
        let mut start = 0;
        for (text, item) in &items {
            let len = text.len();
            for end in start..start + len {
                assert_eq!(
                    decode_inbound(&bytes[start..end]),
                    Ok(None),
                    "item {text:?}, {} bytes",
                    end - start
                );
            }
            // From the moment it is complete, whatever follows.
            for end in start + len..=bytes.len() {
                assert_eq!(
                    decode_inbound(&bytes[start..end]),
                    Ok(Some((item.clone(), len))),
                    "item {text:?}"
                );
            }
            start += len;
        }
        assert_eq!(start, bytes.len());
    }

    // -- commands -----------------------------------------------------------

    fn enc(c: Command) -> String {
        c.encode().unwrap_or_else(|e| panic!("{c:?}: {e}"))
    }

    #[test]
    fn command_lines_as_recorded() {
        assert_eq!(enc(Command::Answer), "ANSWER\n");
        assert_eq!(enc(Command::Hangup), "HANGUP\n");
        assert_eq!(enc(Command::Noop), "NOOP\n");
        assert_eq!(enc(Command::ChannelStatus), "CHANNEL STATUS\n");
        assert_eq!(
            enc(Command::StreamFile {
                file: "bidbridge/welcome".into(),
                escape_digits: "0123456789*#".into()
            }),
            "STREAM FILE bidbridge/welcome \"0123456789*#\"\n"
        );
        assert_eq!(
            enc(Command::StreamFile {
                file: "bidbridge/connecting".into(),
                escape_digits: "".into()
            }),
            "STREAM FILE bidbridge/connecting \"\"\n"
        );
        assert_eq!(
            enc(Command::GetData {
                file: "bidbridge/press1".into(),
                timeout_ms: 8000,
                max_digits: 1
            }),
            "GET DATA bidbridge/press1 8000 1\n"
        );
        assert_eq!(
            enc(Command::WaitForDigit { timeout_ms: 2000 }),
            "WAIT FOR DIGIT 2000\n"
        );
        assert_eq!(
            enc(Command::WaitForDigit { timeout_ms: -1 }),
            "WAIT FOR DIGIT -1\n"
        );
        assert_eq!(
            enc(Command::Exec {
                app: "Dial".into(),
                args: "Local/busy@buyers,5".into()
            }),
            "EXEC Dial Local/busy@buyers,5\n"
        );
        assert_eq!(
            enc(Command::Exec { app: "Dial".into(), args: "Local/shortcall@buyers,10,U(bidbridge-answered^Local/8005550100@bidbridge-in-0000000b;2)".into() }),
            "EXEC Dial Local/shortcall@buyers,10,U(bidbridge-answered^Local/8005550100@bidbridge-in-0000000b;2)\n"
        );
        assert_eq!(
            enc(Command::Exec {
                app: "Wait".into(),
                args: "".into()
            }),
            "EXEC Wait \"\"\n"
        );
        assert_eq!(
            enc(Command::GetVariable {
                name: "DIALSTATUS".into()
            }),
            "GET VARIABLE DIALSTATUS\n"
        );
        assert_eq!(
            enc(Command::GetVariable {
                name: "SHARED(BIDBRIDGE_ANSWERED_AT)".into()
            }),
            "GET VARIABLE SHARED(BIDBRIDGE_ANSWERED_AT)\n"
        );
        assert_eq!(
            enc(Command::GetFullVariable {
                expr: "${STRFTIME(,,%s.%3q)}".into()
            }),
            "GET FULL VARIABLE \"${STRFTIME(,,%s.%3q)}\"\n"
        );
        assert_eq!(
            enc(Command::GetFullVariable {
                expr: "${CALLERID(num)} ${CHANNEL(uniqueid)}".into()
            }),
            "GET FULL VARIABLE \"${CALLERID(num)} ${CHANNEL(uniqueid)}\"\n"
        );
        assert_eq!(
            enc(Command::SetVariable {
                name: "BIDBRIDGE_OUTCOME".into(),
                value: "sold buyer=answer price=12.50".into()
            }),
            "SET VARIABLE BIDBRIDGE_OUTCOME \"sold buyer=answer price=12.50\"\n"
        );
        assert_eq!(
            enc(Command::SetVariable {
                name: "BIDBRIDGE_DONE".into(),
                value: "1".into()
            }),
            "SET VARIABLE BIDBRIDGE_DONE 1\n"
        );
        assert_eq!(
            enc(Command::SetVariable {
                name: "X".into(),
                value: "".into()
            }),
            "SET VARIABLE X \"\"\n"
        );
        assert_eq!(
            enc(Command::Verbose {
                message: "bidbridge says hi".into(),
                level: 1
            }),
            "VERBOSE \"bidbridge says hi\" 1\n"
        );
        assert_eq!(
            Command::GetData {
                file: "f".into(),
                timeout_ms: 1,
                max_digits: 1
            }
            .verb(),
            "GET DATA"
        );
    }

    #[test]
    fn command_refusals() {
        use CommandError as E;
        let set = |value: &str| {
            Command::SetVariable {
                name: "X".into(),
                value: value.into(),
            }
            .encode()
        };
        assert_eq!(set("a\nHANGUP"), Err(E::ControlChar { field: "value" }));
        assert_eq!(set("a\r"), Err(E::ControlChar { field: "value" }));
        assert_eq!(set("a\0b"), Err(E::ControlChar { field: "value" }));
        assert_eq!(set("a\tb"), Err(E::ControlChar { field: "value" }));
        assert_eq!(set("a\u{7f}"), Err(E::ControlChar { field: "value" }));
        assert_eq!(set("a\u{85}b"), Err(E::ControlChar { field: "value" }));
        assert_eq!(
            set("say \"hi\""),
            Err(E::QuoteOrBackslash { field: "value" })
        );
        assert_eq!(set("a\\b"), Err(E::QuoteOrBackslash { field: "value" }));
        assert_eq!(set("ab\""), Err(E::QuoteOrBackslash { field: "value" }));

        let name = |n: &str| Command::GetVariable { name: n.into() }.encode();
        assert_eq!(name(""), Err(E::Empty { field: "name" }));
        assert_eq!(name("A B"), Err(E::Whitespace { field: "name" }));
        assert_eq!(name("A\u{a0}B"), Err(E::Whitespace { field: "name" }));
        assert_eq!(name("A\nB"), Err(E::ControlChar { field: "name" }));
        assert_eq!(
            Command::SetVariable {
                name: "A B".into(),
                value: "1".into()
            }
            .encode(),
            Err(E::Whitespace { field: "name" })
        );
        assert_eq!(
            Command::Exec {
                app: "".into(),
                args: "x".into()
            }
            .encode(),
            Err(E::Empty { field: "app" })
        );
        assert_eq!(
            Command::Exec {
                app: "Di al".into(),
                args: "x".into()
            }
            .encode(),
            Err(E::Whitespace { field: "app" })
        );
        assert_eq!(
            Command::Exec {
                app: "Dial".into(),
                args: "x\n".into()
            }
            .encode(),
            Err(E::ControlChar { field: "args" })
        );
        assert_eq!(
            Command::StreamFile {
                file: "a b".into(),
                escape_digits: "".into()
            }
            .encode(),
            Err(E::Whitespace { field: "file" })
        );
        assert_eq!(
            Command::StreamFile {
                file: "a".into(),
                escape_digits: "1 2".into()
            }
            .encode(),
            Err(E::BadEscapeDigit { digit: ' ' })
        );
        assert_eq!(
            Command::StreamFile {
                file: "a".into(),
                escape_digits: "12\"".into()
            }
            .encode(),
            Err(E::BadEscapeDigit { digit: '"' })
        );
        assert_eq!(
            Command::GetFullVariable {
                expr: "${X}\"".into()
            }
            .encode(),
            Err(E::QuoteOrBackslash { field: "expr" })
        );
        assert_eq!(
            Command::Verbose {
                message: "x\n".into(),
                level: 1
            }
            .encode(),
            Err(E::ControlChar { field: "message" })
        );

        let get_data = |timeout_ms, max_digits| {
            Command::GetData {
                file: "f".into(),
                timeout_ms,
                max_digits,
            }
            .encode()
        };
        assert!(get_data(1, 1).is_ok());
        assert!(get_data(MAX_TIMEOUT_MS, MAX_GET_DATA_DIGITS).is_ok());
        assert_eq!(
            get_data(0, 1),
            Err(E::OutOfRange {
                field: "timeout_ms",
                value: 0,
                min: 1,
                max: 3_600_000
            })
        );
        assert!(matches!(
            get_data(MAX_TIMEOUT_MS + 1, 1),
            Err(E::OutOfRange {
                field: "timeout_ms",
                ..
            })
        ));
        assert!(matches!(
            get_data(u64::MAX, 1),
            Err(E::OutOfRange {
                field: "timeout_ms",
                ..
            })
        ));
        assert!(matches!(
            get_data(1000, 0),
            Err(E::OutOfRange {
                field: "max_digits",
                ..
            })
        ));
        assert!(matches!(
            get_data(1000, 1024),
            Err(E::OutOfRange {
                field: "max_digits",
                ..
            })
        ));
        let wait = |timeout_ms| Command::WaitForDigit { timeout_ms }.encode();
        assert!(wait(0).is_ok());
        assert!(matches!(
            wait(-2),
            Err(E::OutOfRange {
                field: "timeout_ms",
                ..
            })
        ));
        assert!(matches!(wait(i64::MIN), Err(E::OutOfRange { .. })));
        assert!(matches!(wait(i64::MAX), Err(E::OutOfRange { .. })));
        assert!(matches!(
            Command::Verbose {
                message: "m".into(),
                level: 0
            }
            .encode(),
            Err(E::OutOfRange { field: "level", .. })
        ));
        assert!(matches!(
            Command::Verbose {
                message: "m".into(),
                level: 5
            }
            .encode(),
            Err(E::OutOfRange { field: "level", .. })
        ));
    }

    #[test]
    fn transfer_commands_encode() {
        assert_eq!(
            enc(Command::SetContext {
                context: "buyers".into()
            }),
            "SET CONTEXT buyers\n"
        );
        assert_eq!(
            enc(Command::SetExtension {
                extension: "backup".into()
            }),
            "SET EXTENSION backup\n"
        );
        assert_eq!(
            enc(Command::SetPriority { priority: 1 }),
            "SET PRIORITY 1\n"
        );
        assert!(matches!(
            Command::SetPriority { priority: 0 }.encode(),
            Err(CommandError::OutOfRange {
                field: "priority",
                ..
            })
        ));
        assert_eq!(
            Command::SetContext {
                context: "a b".into()
            }
            .encode(),
            Err(CommandError::Whitespace { field: "context" })
        );
        assert_eq!(
            Command::SetExtension {
                extension: String::new()
            }
            .encode(),
            Err(CommandError::Empty { field: "extension" })
        );
    }

    #[test]
    fn command_length_limit() {
        let prefix = "SET VARIABLE X ".len();
        let fits = "v".repeat(MAX_COMMAND_LINE_LEN - prefix - 1);
        let line = enc(Command::SetVariable {
            name: "X".into(),
            value: fits.clone(),
        });
        assert_eq!(line.len(), MAX_COMMAND_LINE_LEN);
        let over = format!("{fits}v");
        assert_eq!(
            Command::SetVariable {
                name: "X".into(),
                value: over
            }
            .encode(),
            Err(CommandError::TooLong {
                len: MAX_COMMAND_LINE_LEN + 1,
                limit: MAX_COMMAND_LINE_LEN
            })
        );
    }

    /// The arguments Asterisk must see for `cmd`.
    fn expected_argv(cmd: &Command) -> Vec<String> {
        let mut argv: Vec<String> = cmd.verb().split(' ').map(String::from).collect();
        let more: Vec<String> = match cmd {
            Command::Answer | Command::Hangup | Command::Noop | Command::ChannelStatus => vec![],
            Command::StreamFile {
                file,
                escape_digits,
            } => vec![file.clone(), escape_digits.clone()],
            Command::GetData {
                file,
                timeout_ms,
                max_digits,
            } => {
                vec![file.clone(), timeout_ms.to_string(), max_digits.to_string()]
            }
            Command::WaitForDigit { timeout_ms } => vec![timeout_ms.to_string()],
            Command::Exec { app, args } => vec![app.clone(), args.clone()],
            Command::GetVariable { name } => vec![name.clone()],
            Command::GetFullVariable { expr } => vec![expr.clone()],
            Command::SetVariable { name, value } => vec![name.clone(), value.clone()],
            Command::Verbose { message, level } => vec![message.clone(), level.to_string()],
            Command::SetContext { context } => vec![context.clone()],
            Command::SetExtension { extension } => vec![extension.clone()],
            Command::SetPriority { priority } => vec![priority.to_string()],
        };
        argv.extend(more);
        argv
    }

    #[test]
    fn parse_args_model_matches_recorded_lines() {
        // Sanity of the model against what Asterisk did with recorded lines.
        assert_eq!(
            parse_args("EXEC Dial \"Local/noanswer@buyers,3\""),
            ["EXEC", "Dial", "Local/noanswer@buyers,3"]
        );
        assert_eq!(
            parse_args("STREAM FILE bidbridge/connecting \"\""),
            ["STREAM", "FILE", "bidbridge/connecting", ""]
        );
        assert_eq!(parse_args("a\\\"b \"c d\"e"), ["a\"b", "c de"]);
    }

    // -- property tests -----------------------------------------------------

    /// Test-side encoder for inbound items, as Asterisk would print them.
    fn wire_of(item: &Inbound) -> String {
        match item {
            Inbound::Hangup => "HANGUP\n".into(),
            Inbound::Reply(Reply::Success {
                result,
                data,
                endpos,
                ..
            }) => {
                let mut s = format!("200 result={result}");
                if let Some(d) = data {
                    s.push_str(&format!(" ({d})"));
                }
                if let Some(e) = endpos {
                    s.push_str(&format!(" endpos={e}"));
                }
                s + "\n"
            }
            Inbound::Reply(Reply::InvalidCommand { text }) => format!("510 {text}\n"),
            Inbound::Reply(Reply::DeadChannel { text }) => format!("511 {text}\n"),
            Inbound::Reply(Reply::Usage { lines }) => {
                let mut s = "520-Invalid command syntax.  Proper usage follows:\n".to_string();
                for l in lines {
                    s.push_str(l);
                    s.push('\n');
                }
                s + "520 End of proper usage.\n"
            }
        }
    }

    /// One line of text as Asterisk could print it: no LF, and no CR at the
    /// end (that would be read as a CRLF line ending).
    fn text_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            "[a-z()= ]{0,20}",
            any::<String>().prop_map(|s| s.replace(['\n', '\r'], "")),
        ]
        .prop_map(|s| s.trim_end_matches('\r').to_string())
    }

    fn usage_line_strategy() -> impl Strategy<Value = String> {
        text_strategy().prop_filter("not an end line", |l| usage_end(l).is_none())
    }

    fn item_strategy() -> impl Strategy<Value = Inbound> {
        let result = prop_oneof!["-?[0-9]{1,6}", "[0-9*#]{0,8}", Just(String::new())];
        let data = proptest::option::of(prop_oneof![
            text_strategy(),
            Just("timeout".to_string()),
            Just(String::new())
        ]);
        let success = (result, data, proptest::option::of(any::<u64>())).prop_map(
            |(result, data, endpos)| {
                let timeout = data.as_deref() == Some("timeout");
                Inbound::Reply(Reply::Success {
                    result,
                    data,
                    endpos,
                    timeout,
                })
            },
        );
        prop_oneof![
            4 => success,
            1 => text_strategy().prop_map(|text| Inbound::Reply(Reply::InvalidCommand { text })),
            1 => text_strategy().prop_map(|text| Inbound::Reply(Reply::DeadChannel { text })),
            1 => proptest::collection::vec(usage_line_strategy(), 0..6).prop_map(|lines| Inbound::Reply(Reply::Usage { lines })),
            2 => Just(Inbound::Hangup),
        ]
    }

    /// A minimal streaming reader: appends what the socket gave and drains
    /// every complete item.
    #[derive(Default)]
    struct Reader {
        buf: Vec<u8>,
    }

    impl Reader {
        fn feed(&mut self, chunk: &[u8], out: &mut Vec<Inbound>) -> Result<(), CodecError> {
            self.buf.extend_from_slice(chunk);
            while let Some((item, n)) = decode_inbound(&self.buf)? {
                assert!(n > 0 && n <= self.buf.len());
                out.push(item);
                self.buf.drain(..n);
            }
            Ok(())
        }
    }

    /// Cuts `bytes` into pieces whose sizes cycle through `sizes`.
    fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        out
    }

    fn arbitrary_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ -~\\n\\r\\t\"\\\\]{0,16}",
            "[A-Za-z0-9_/]{0,12}",
            Just(String::new())
        ]
    }

    fn command_strategy() -> impl Strategy<Value = Command> {
        let t = arbitrary_text;
        prop_oneof![
            Just(Command::Answer),
            Just(Command::Hangup),
            Just(Command::Noop),
            Just(Command::ChannelStatus),
            (t(), prop_oneof![t(), "[0-9*#A-D]{0,12}"]).prop_map(|(file, escape_digits)| {
                Command::StreamFile {
                    file,
                    escape_digits,
                }
            }),
            (t(), any::<u64>(), any::<u32>()).prop_map(|(file, timeout_ms, max_digits)| {
                Command::GetData {
                    file,
                    timeout_ms,
                    max_digits,
                }
            }),
            (t(), 0..=20_000u64, 0..=40u32).prop_map(|(file, timeout_ms, max_digits)| {
                Command::GetData {
                    file,
                    timeout_ms,
                    max_digits,
                }
            }),
            prop_oneof![any::<i64>(), -3..=20_000i64]
                .prop_map(|timeout_ms| Command::WaitForDigit { timeout_ms }),
            (t(), t()).prop_map(|(app, args)| Command::Exec { app, args }),
            t().prop_map(|name| Command::GetVariable { name }),
            t().prop_map(|expr| Command::GetFullVariable { expr }),
            (t(), t()).prop_map(|(name, value)| Command::SetVariable { name, value }),
            (t(), any::<u8>()).prop_map(|(message, level)| Command::Verbose { message, level }),
            t().prop_map(|context| Command::SetContext { context }),
            t().prop_map(|extension| Command::SetExtension { extension }),
            any::<u32>().prop_map(|priority| Command::SetPriority { priority }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for buf in [bytes.clone(), [b"200 result=".as_slice(), &bytes].concat(), [b"520-x\n".as_slice(), &bytes].concat()] {
                if let Ok(Some((_, n))) = decode_inbound(&buf) {
                    prop_assert!(n > 0 && n <= buf.len());
                }
                if let Ok(Some((_, n))) = decode_preamble(&buf) {
                    prop_assert!(n > 0 && n <= buf.len());
                }
            }
        }

        #[test]
        fn decoders_never_panic_on_line_shaped_input(lines in proptest::collection::vec("[ -~]{0,30}|200 result=[ -~]{0,30}|agi_[a-z]{0,5}:[ -~]{0,10}", 0..8)) {
            let wire = lines.join("\n") + "\n";
            let _ = decode_inbound(wire.as_bytes());
            let _ = decode_preamble(wire.as_bytes());
        }

        #[test]
        fn streams_round_trip_in_any_chunking(
            items in proptest::collection::vec(item_strategy(), 0..20),
            sizes in proptest::collection::vec(1usize..40, 1..10),
        ) {
            let wire: String = items.iter().map(wire_of).collect();
            let mut reader = Reader::default();
            let mut got = Vec::new();
            for chunk in chunks(wire.as_bytes(), &sizes) {
                reader.feed(chunk, &mut got).map_err(|e| TestCaseError::fail(format!("{e} in {wire:?}")))?;
            }
            prop_assert_eq!(got, items);
            prop_assert!(reader.buf.is_empty());
        }

        #[test]
        fn encode_never_embeds_a_line_break(cmd in command_strategy()) {
            if let Ok(line) = cmd.encode() {
                let body = line.strip_suffix('\n');
                prop_assert!(body.is_some(), "no trailing LF: {:?}", line);
                let body = body.unwrap_or_default();
                prop_assert!(!body.contains(['\n', '\r', '\0']), "{:?}", line);
                prop_assert!(line.len() <= MAX_COMMAND_LINE_LEN);
                // And Asterisk reads back exactly the arguments we meant.
                prop_assert_eq!(parse_args(body), expected_argv(&cmd), "line {:?}", line);
            }
        }
    }
}
