//! Replays the FastAGI sessions recorded from a real Asterisk 22.10.1
//! (`shared/fixtures/agi`, see its README) through the wire codec.
//!
//! Every `*.a2s.raw` (Asterisk → daemon) must decode completely, with the
//! items read off its `.transcript`, whether it arrives whole, split the way
//! the recorder's reads really split it, or one byte at a time. Every
//! `*.s2a.raw` line that is one of our commands must re-encode to the same
//! bytes. A fixture without expectations here fails the run, so a new
//! recording cannot be skipped silently.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bidbridge::pbx::asterisk::codec::{
    Command, Inbound, Preamble, Reply, decode_inbound, decode_preamble,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/agi");

fn fixture(name: &str, suffix: &str) -> PathBuf {
    Path::new(FIXTURES).join(format!("{name}.{suffix}"))
}

fn read(name: &str, suffix: &str) -> Vec<u8> {
    let path = fixture(name, suffix);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Scenario names that have an `a2s.raw` recording, from the directory.
fn recorded_scenarios() -> BTreeSet<String> {
    let entries = fs::read_dir(FIXTURES).unwrap_or_else(|e| panic!("{FIXTURES}: {e}"));
    entries
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| f.strip_suffix(".a2s.raw").map(String::from))
        .collect()
}

// ---------------------------------------------------------------------------
// Expected items, read off each scenario's .transcript

const H: Inbound = Inbound::Hangup;

fn ok(result: &str) -> Inbound {
    Inbound::Reply(Reply::Success {
        result: result.into(),
        data: None,
        endpos: None,
        timeout: false,
    })
}

fn data(result: &str, data: &str) -> Inbound {
    Inbound::Reply(Reply::Success {
        result: result.into(),
        data: Some(data.into()),
        endpos: None,
        timeout: false,
    })
}

fn endpos(result: &str, endpos: u64) -> Inbound {
    Inbound::Reply(Reply::Success {
        result: result.into(),
        data: None,
        endpos: Some(endpos),
        timeout: false,
    })
}

/// `200 result=<digits> (timeout)`: GET DATA ran out of time.
fn timeout(result: &str) -> Inbound {
    Inbound::Reply(Reply::Success {
        result: result.into(),
        data: Some("timeout".into()),
        endpos: None,
        timeout: true,
    })
}

fn e510() -> Inbound {
    Inbound::Reply(Reply::InvalidCommand {
        text: "Invalid or unknown command".into(),
    })
}

fn e511() -> Inbound {
    Inbound::Reply(Reply::DeadChannel {
        text: "Command Not Permitted on a dead channel or intercept routine".into(),
    })
}

/// A 520 block is compared by its line count and first usage line.
#[derive(Debug)]
enum Want {
    Exactly(Inbound),
    Usage {
        lines: usize,
        first_starts: &'static str,
    },
}

impl From<Inbound> for Want {
    fn from(item: Inbound) -> Want {
        Want::Exactly(item)
    }
}

fn usage(lines: usize, first_starts: &'static str) -> Want {
    Want::Usage {
        lines,
        first_starts,
    }
}

macro_rules! want {
    ($($item:expr),* $(,)?) => { vec![$(Want::from($item)),*] };
}

/// What each recording must decode to after its preamble.
fn expected_items(name: &str) -> Option<Vec<Want>> {
    Some(match name {
        "01-full-flow" => want![
            ok("0"),                              // ANSWER
            endpos("57", 9600),                   // STREAM FILE cut by DTMF 9
            ok("1"),                              // GET DATA ... 8000 1 -> the digit 1
            ok("6"),                              // CHANNEL STATUS
            data("1", "3125550123 1795238021.1"), // GET FULL VARIABLE (data with a space)
            endpos("0", 20210),                   // STREAM FILE connecting
            ok("0"),                              // EXEC Dial noanswer
            data("1", "NOANSWER"),
            data("1", "0"),
            data("1", ""),
            data("1", ""),
            ok("0"), // EXEC Dial busy
            data("1", "BUSY"),
            data("1", "0"),
            data("1", ""),
            ok("-1"), // EXEC Dial answer
            data("1", "ANSWER"),
            data("1", "19"),
            data("1", "19"),
            data("1", "16"),
            data("1", "Local/answer@buyers-00000003;1"),
            data("1", "answer@buyers"),
            data("1", ""), // ${HANGUPCAUSE_KEYS()}
            ok("6"),       // CHANNEL STATUS
            ok("1"),       // SET VARIABLE
            data("1", "sold buyer=answer price=12.50"),
            ok("1"), // HANGUP
            H,
            e511(), // STREAM FILE after hangup
            data("1", "sold buyer=answer price=12.50"),
            H, // session end
        ],
        "02a-caller-hangup-during-stream-file" => want![
            ok("0"),
            endpos("-1", 12000),
            H,
            e511(), // GET DATA
            e511(), // STREAM FILE
            e511(), // ANSWER
            e511(), // CHANNEL STATUS
            e511(), // HANGUP
            data("1", "16"),
            ok("0"),
            ok("0"), // NOOP still-here
            H,
        ],
        "02b-caller-hangup-during-get-data" => want![
            ok("0"),
            ok("-1"), // GET DATA interrupted by the hang-up
            H,
            e511(),
            e511(),
            data("1", "16"),
            e511(),
            H,
        ],
        "02c-caller-hangup-agiexitonhangup" => want![
            data("1", "yes"),
            ok("0"),
            endpos("-1", 12000),
            H, // both HANGUPs arrive in the same read as the reply
            H,
        ],
        "03-caller-hangup-while-dial-rings" => want![
            ok("0"),
            ok("-1"), // EXEC Dial, caller hung up while ringing
            H,
            data("1", "CANCEL"),
            data("1", "16"),
            data("1", ""),
            data("1", ""),
            ok("-1"), // EXEC Dial again: refused at once
            data("1", "CANCEL"),
            e511(),
            e511(),
            H,
        ],
        "04-invalid-command-and-usage" => want![
            ok("0"),
            e510(), // FOO BAR
            e510(), // GET
            usage(5, "Send the given file, allowing playback"),
            usage(
                2,
                "Stream the given <replaceable>file</replaceable>, and receive DTMF data."
            ),
            usage(1, "Sets a variable to the current channel."),
            usage(
                3,
                "Executes <replaceable>application</replaceable> with given"
            ),
            usage(
                1,
                "Waits up to <replaceable>timeout</replaceable> milliseconds"
            ),
            ok("0"),  // answer (lower case)
            ok("0"),  // noop lower case works
            ok("1"),  // VERBOSE
            ok("-2"), // EXEC NoSuchApplication
            ok("0"),  // GET VARIABLE of an unset variable
            ok("0"),  // DATABASE GET of a missing key
            e510(),   // empty line
            ok("1"),  // HANGUP
            H,
            H,
        ],
        "06-preamble-with-args-and-close" => want![ok("0"), H],
        "07-dialstatus-matrix" => want![
            ok("0"),
            // busy17: DIALSTATUS, HANGUPCAUSE, DIALEDTIME, ANSWEREDTIME, DIALEDPEERNAME
            ok("0"),
            data("1", "BUSY"),
            data("1", "17"),
            data("1", ""),
            data("1", ""),
            data("1", ""),
            // congestion
            ok("0"),
            data("1", "CONGESTION"),
            data("1", "0"),
            data("1", ""),
            data("1", ""),
            data("1", ""),
            // reject (cause 21)
            ok("0"),
            data("1", "CHANUNAVAIL"),
            data("1", "21"),
            data("1", ""),
            data("1", ""),
            data("1", ""),
            // nosuchexten
            ok("0"),
            data("1", "CHANUNAVAIL"),
            data("1", "21"),
            data("1", ""),
            data("1", ""),
            data("1", ""),
            // noanswer, 2 s
            ok("0"),
            data("1", "NOANSWER"),
            data("1", "21"),
            data("1", ""),
            data("1", ""),
            data("1", ""),
            // shortcall without g
            ok("-1"),
            data("1", "ANSWER"),
            data("1", "16"),
            data("1", "4"),
            data("1", "4"),
            data("1", "Local/shortcall@buyers-00000011;1"),
            // shortcall with g
            ok("0"),
            data("1", "ANSWER"),
            data("1", "16"),
            data("1", "5"),
            data("1", "5"),
            data("1", "Local/shortcall@buyers-00000012;1"),
            // ring group
            ok("-1"),
            data("1", "ANSWER"),
            data("1", "16"),
            data("1", "13"),
            data("1", "13"),
            data("1", "Local/answer@buyers-00000014;1"),
            // U() answer stamp
            data("1", "1795238075.170"),
            ok("-1"),
            data("1", "1795238076.674"),
            data("1", "ANSWER"),
            data("1", "14642"),
            data("1", "14643"),
            data("1", ""),
            data("1", ""),
            data("1", "1795238075.171"),
            ok("1"), // HANGUP
            H,
            H,
        ],
        // The server reset the connection: no HANGUP ever arrives.
        "08a-server-dies-mid-call" => want![ok("0"), ok("1")],
        "08b-server-dies-mid-call-guarded" => want![ok("0"), ok("1")],
        "08c-server-dies-during-bridge-guarded" => want![ok("0")],
        "09-digit-collection" => want![
            ok("0"),
            ok("60601"),     // 5-digit ZIP
            timeout(""),     // nothing keyed: `200 result= (timeout)`
            ok("0"),         // WAIT FOR DIGIT timed out
            timeout("12"),   // partial entry
            ok("77"),        // 77# (terminator not included)
            endpos("-1", 0), // missing prompt file
            ok("1"),         // SET VARIABLE
            ok("1"),         // HANGUP
            H,
            H,
        ],
        // Interrupted commands get no reply: six replies for eight commands.
        "10-command-sent-during-prompt" => want![
            ok("0"),
            ok("0"),
            ok("0"),
            ok("0"),
            ok("0"),
            ok("0"),
            ok("1"),
            H,
            H
        ],
        _ => return None,
    })
}

/// `(channel, uniqueid, extension)` from each recording's preamble.
fn identity(name: &str) -> (&'static str, &'static str, &'static str) {
    match name {
        "01-full-flow" => (
            "Local/8005550100@bidbridge-in-00000000;2",
            "1795238021.1",
            "8005550100",
        ),
        "02a-caller-hangup-during-stream-file" => (
            "Local/8005550100@bidbridge-in-00000004;2",
            "1795238042.9",
            "8005550100",
        ),
        "02b-caller-hangup-during-get-data" => (
            "Local/8005550100@bidbridge-in-00000005;2",
            "1795238045.11",
            "8005550100",
        ),
        "02c-caller-hangup-agiexitonhangup" => (
            "Local/8005550100@bidbridge-in-00000006;2",
            "1795238052.13",
            "8005550100",
        ),
        "03-caller-hangup-while-dial-rings" => (
            "Local/8005550100@bidbridge-in-00000007;2",
            "1795238055.15",
            "8005550100",
        ),
        "04-invalid-command-and-usage" => (
            "Local/8005550100@bidbridge-in-00000009;2",
            "1795238060.19",
            "8005550100",
        ),
        "06-preamble-with-args-and-close" => (
            "Local/8005550101@bidbridge-in-0000000a;2",
            "1795238061.21",
            "8005550101",
        ),
        "07-dialstatus-matrix" => (
            "Local/8005550100@bidbridge-in-0000000b;2",
            "1795238062.23",
            "8005550100",
        ),
        "08a-server-dies-mid-call" => (
            "Local/8005550100@bidbridge-in-00000016;2",
            "1795238077.45",
            "8005550100",
        ),
        "08b-server-dies-mid-call-guarded" => (
            "Local/8005550102@bidbridge-in-00000017;2",
            "1795238079.47",
            "8005550102",
        ),
        "08c-server-dies-during-bridge-guarded" => (
            "Local/8005550102@bidbridge-in-0000001e;2",
            "1795238198.61",
            "8005550102",
        ),
        "09-digit-collection" => (
            "Local/8005550100@bidbridge-in-00000019;2",
            "1795238083.51",
            "8005550100",
        ),
        "10-command-sent-during-prompt" => (
            "Local/8005550100@bidbridge-in-0000001a;2",
            "1795238105.53",
            "8005550100",
        ),
        other => panic!("no preamble identity written down for fixture {other}"),
    }
}

/// The 22 names Asterisk 22 sends, in order (README finding 1).
const PREAMBLE_NAMES: [&str; 22] = [
    "network",
    "network_script",
    "request",
    "channel",
    "language",
    "type",
    "uniqueid",
    "version",
    "callerid",
    "calleridname",
    "callingpres",
    "callingani2",
    "callington",
    "callingtns",
    "dnid",
    "rdnis",
    "context",
    "extension",
    "priority",
    "enhanced",
    "accountcode",
    "threadid",
];

// ---------------------------------------------------------------------------
// Decoding

#[derive(Debug, PartialEq)]
struct Session {
    preamble: Preamble,
    items: Vec<Inbound>,
}

/// Feeds `chunks` as successive socket reads through a streaming reader:
/// preamble first, then items; every error fails the test, and nothing may
/// be left over at the end.
fn replay<'a>(name: &str, chunks: impl IntoIterator<Item = &'a [u8]>) -> Session {
    let mut buf: Vec<u8> = Vec::new();
    let mut preamble = None;
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            if preamble.is_none() {
                match decode_preamble(&buf) {
                    Ok(Some((p, n))) => {
                        preamble = Some(p);
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => panic!("{name}: preamble: {e}"),
                }
            } else {
                match decode_inbound(&buf) {
                    Ok(Some((item, n))) => {
                        items.push(item);
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => panic!("{name}: item {}: {e}", items.len()),
                }
            }
        }
    }
    assert!(
        buf.is_empty(),
        "{name}: {} bytes left over: {:?}",
        buf.len(),
        String::from_utf8_lossy(&buf)
    );
    let preamble = preamble.unwrap_or_else(|| panic!("{name}: no complete preamble"));
    Session { preamble, items }
}

/// The Asterisk → server reads as the recorder saw them: each `A>` starts a
/// `recv()`, each `A+` continues it (transcript format in the README).
fn transcript_reads(name: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8(read(name, "transcript")).expect("transcript is UTF-8");
    let mut reads: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('+')) {
        // `+SSSS.mmm TAG payload`; the payload keeps its own spaces.
        let (_time, rest) = line[1..].trim_start().split_once(' ').expect("timed line");
        let (tag, payload) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "A>" => reads.push(unescape(payload)),
            "A+" => reads
                .last_mut()
                .expect("A+ after A>")
                .extend(unescape(payload)),
            "S>" | "S+" => {}
            other => panic!("{name}: unknown transcript tag {other:?}"),
        }
    }
    reads
}

/// Undoes the transcript escapes: `\\`, `\n`, `\r`, `\t`, `\xHH`.
fn unescape(payload: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = payload.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            other => panic!("bad escape {other:?} in {payload:?}"),
        }
        i += 2;
    }
    out
}

fn check_items(name: &str, got: &[Inbound], want: &[Want]) {
    assert_eq!(got.len(), want.len(), "{name}: item count; got {got:#?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match w {
            Want::Exactly(item) => assert_eq!(g, item, "{name}: item {i}"),
            Want::Usage {
                lines,
                first_starts,
            } => {
                let Inbound::Reply(Reply::Usage { lines: got_lines }) = g else {
                    panic!("{name}: item {i}: want a 520 usage block, got {g:?}")
                };
                assert_eq!(
                    got_lines.len(),
                    *lines,
                    "{name}: item {i}: usage lines {got_lines:#?}"
                );
                assert!(
                    got_lines[0].starts_with(first_starts),
                    "{name}: item {i}: {:?}",
                    got_lines[0]
                );
            }
        }
    }
}

fn check_preamble(name: &str, p: &Preamble) {
    let (channel, uniqueid, extension) = identity(name);
    let names: Vec<&str> = p.iter().map(|(n, _)| n).collect();
    let mut want_names = PREAMBLE_NAMES.to_vec();
    if name == "06-preamble-with-args-and-close" {
        want_names.extend(["arg_1", "arg_2"]);
    }
    assert_eq!(names, want_names, "{name}: preamble names in order");
    assert_eq!(p.get("network"), Some("yes"), "{name}");
    assert_eq!(p.channel(), Some(channel), "{name}");
    assert_eq!(p.uniqueid(), Some(uniqueid), "{name}");
    assert_eq!(p.extension(), Some(extension), "{name}");
    assert_eq!(p.callerid(), Some("3125550123"), "{name}");
    assert_eq!(p.calleridname(), Some("Test Caller"), "{name}");
    assert_eq!(p.dnid(), Some("unknown"), "{name}");
    assert_eq!(p.get("rdnis"), Some("unknown"), "{name}");
    assert_eq!(p.context(), Some("bidbridge-in"), "{name}");
    assert_eq!(p.enhanced(), Some("0.0"), "{name}");
    assert_eq!(p.language(), Some("en"), "{name}");
    assert_eq!(p.get("type"), Some("Local"), "{name}");
    assert_eq!(p.get("version"), Some("22.10.1"), "{name}");
    assert_eq!(p.get("priority"), Some("2"), "{name}");
    assert_eq!(
        p.accountcode(),
        Some(""),
        "{name}: `agi_accountcode: ` is an empty value"
    );
    if name == "06-preamble-with-args-and-close" {
        assert_eq!(p.network_script(), Some("route?campaign=auto"));
        assert_eq!(
            p.request(),
            Some("agi://127.0.0.1:4574/route?campaign=auto")
        );
        assert_eq!(p.args(), vec!["pub=77", "zip=60601"]);
    } else {
        assert_eq!(p.network_script(), Some("route"), "{name}");
        assert_eq!(p.request(), Some("agi://127.0.0.1:4574/route"), "{name}");
        assert!(p.args().is_empty(), "{name}");
    }
}

// ---------------------------------------------------------------------------
// a2s: what the daemon reads

#[test]
fn every_recording_has_expectations() {
    let recorded = recorded_scenarios();
    // The README lists 13 recorded sessions (05 has only an Asterisk log).
    assert_eq!(recorded.len(), 13, "{recorded:?}");
    for name in &recorded {
        assert!(
            expected_items(name).is_some(),
            "fixture {name} has no expected items in this test: add them"
        );
        assert!(
            fixture(name, "transcript").is_file(),
            "{name}: transcript missing"
        );
        assert!(
            fixture(name, "s2a.raw").is_file(),
            "{name}: s2a.raw missing"
        );
    }
}

#[test]
fn a2s_recordings_decode_whole() {
    for name in recorded_scenarios() {
        let raw = read(&name, "a2s.raw");
        let session = replay(&name, [raw.as_slice()]);
        check_preamble(&name, &session.preamble);
        let want = expected_items(&name).unwrap_or_else(|| panic!("no expectations for {name}"));
        check_items(&name, &session.items, &want);
    }
}

#[test]
fn a2s_recordings_decode_at_the_real_read_boundaries() {
    for name in recorded_scenarios() {
        let raw = read(&name, "a2s.raw");
        let reads = transcript_reads(&name);
        assert_eq!(
            reads.concat(),
            raw,
            "{name}: transcript and a2s.raw disagree"
        );
        let whole = replay(&name, [raw.as_slice()]);
        let split = replay(&name, reads.iter().map(Vec::as_slice));
        assert_eq!(split, whole, "{name}");
    }
}

#[test]
fn a2s_recordings_decode_one_byte_at_a_time() {
    for name in recorded_scenarios() {
        let raw = read(&name, "a2s.raw");
        let whole = replay(&name, [raw.as_slice()]);
        let trickled = replay(&name, raw.chunks(1));
        assert_eq!(trickled, whole, "{name}");
    }
}

#[test]
fn full_flow_01_key_replies() {
    let raw = read("01-full-flow", "a2s.raw");
    let s = replay("01-full-flow", [raw.as_slice()]);
    assert_eq!(s.preamble.len(), 22);
    let replies: Vec<&Reply> = s
        .items
        .iter()
        .filter_map(|i| match i {
            Inbound::Reply(r) => Some(r),
            Inbound::Hangup => None,
        })
        .collect();
    assert_eq!(
        replies[1],
        &Reply::Success {
            result: "57".into(),
            data: None,
            endpos: Some(9600),
            timeout: false
        }
    );
    assert_eq!(
        replies[1].result_int(),
        Some(57),
        "ASCII code of the DTMF 9 that cut the prompt"
    );
    for status in ["NOANSWER", "BUSY", "ANSWER"] {
        assert!(replies.iter().any(|r| r.data() == Some(status)), "{status}");
    }
    assert_eq!(
        replies
            .iter()
            .filter(|r| matches!(r, Reply::DeadChannel { .. }))
            .count(),
        1
    );
    assert_eq!(s.items.iter().filter(|i| **i == Inbound::Hangup).count(), 2);
    assert!(
        replies
            .iter()
            .all(|r| !matches!(r, Reply::InvalidCommand { .. } | Reply::Usage { .. }))
    );
}

#[test]
fn digit_collection_09_keeps_digit_strings() {
    let raw = read("09-digit-collection", "a2s.raw");
    let s = replay("09-digit-collection", [raw.as_slice()]);
    let Inbound::Reply(zip) = &s.items[1] else {
        panic!()
    };
    assert_eq!(zip.result_str(), Some("60601"));
    let Inbound::Reply(none) = &s.items[2] else {
        panic!()
    };
    assert_eq!(
        none,
        &Reply::Success {
            result: "".into(),
            data: Some("timeout".into()),
            endpos: None,
            timeout: true
        }
    );
    assert_eq!(none.result_int(), None);
    let Inbound::Reply(partial) = &s.items[4] else {
        panic!()
    };
    assert!(matches!(partial, Reply::Success { result, timeout: true, .. } if result == "12"));
    let Inbound::Reply(missing) = &s.items[6] else {
        panic!()
    };
    assert_eq!(
        missing,
        &Reply::Success {
            result: "-1".into(),
            data: None,
            endpos: Some(0),
            timeout: false
        }
    );
}

// ---------------------------------------------------------------------------
// s2a: what the daemon wrote

/// The [`Command`] a recorded line is, when it is one of ours (upper-case
/// keywords, the arguments our variants carry).
fn command_of(line: &str) -> Option<Command> {
    let argv = bidbridge::pbx::asterisk::codec::parse_args(line);
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    Some(match a.as_slice() {
        ["ANSWER"] => Command::Answer,
        ["HANGUP"] => Command::Hangup,
        ["NOOP"] => Command::Noop,
        ["CHANNEL", "STATUS"] => Command::ChannelStatus,
        ["STREAM", "FILE", file, digits] => Command::StreamFile {
            file: (*file).into(),
            escape_digits: (*digits).into(),
        },
        ["GET", "DATA", file, timeout, max] => Command::GetData {
            file: (*file).into(),
            timeout_ms: timeout.parse().ok()?,
            max_digits: max.parse().ok()?,
        },
        ["WAIT", "FOR", "DIGIT", timeout] => Command::WaitForDigit {
            timeout_ms: timeout.parse().ok()?,
        },
        ["EXEC", app, args] => Command::Exec {
            app: (*app).into(),
            args: (*args).into(),
        },
        ["GET", "VARIABLE", name] => Command::GetVariable {
            name: (*name).into(),
        },
        ["GET", "FULL", "VARIABLE", expr] => Command::GetFullVariable {
            expr: (*expr).into(),
        },
        ["SET", "VARIABLE", name, value] => Command::SetVariable {
            name: (*name).into(),
            value: (*value).into(),
        },
        ["VERBOSE", message, level] => Command::Verbose {
            message: (*message).into(),
            level: level.parse().ok()?,
        },
        _ => return None,
    })
}

/// Recorded lines that are not one of our commands, on purpose: the
/// recorder's probes for 510/520, lower-case and NOOP-with-text variants.
fn foreign_lines(name: &str) -> Vec<&'static str> {
    match name {
        "02a-caller-hangup-during-stream-file" => vec!["NOOP still-here"],
        "04-invalid-command-and-usage" => vec![
            "FOO BAR",
            "GET",
            "STREAM FILE",
            "GET DATA",
            "SET VARIABLE ONLYNAME",
            "EXEC",
            "WAIT FOR DIGIT",
            "answer",
            "noop lower case works",
            "DATABASE GET bidbridge nokey",
            "", // the bare LF sent to provoke a 510
        ],
        "06-preamble-with-args-and-close" => vec!["NOOP args"],
        "10-command-sent-during-prompt" => vec![
            "NOOP sent-during-stream-file",
            "NOOP sent-during-get-data-prompt",
            "NOOP sent-during-get-data-wait",
            "NOOP sent-during-dial",
        ],
        _ => vec![],
    }
}

/// Recorded lines that quote an argument that needs no quotes; we send the
/// same arguments unquoted (Asterisk parses both alike, checked below).
fn redundantly_quoted(line: &str) -> bool {
    matches!(
        line,
        "EXEC Dial \"Local/noanswer@buyers,3\"" | "EXEC Dial \"Local/noanswer@buyers,30\""
    )
}

fn s2a_lines(name: &str) -> Vec<String> {
    let raw = String::from_utf8(read(name, "s2a.raw")).expect("s2a is UTF-8");
    let body = raw
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{name}: s2a does not end in LF"));
    body.split('\n').map(String::from).collect()
}

#[test]
fn s2a_commands_re_encode_byte_identically() {
    let mut encoded_count = 0;
    let mut canonicalised = Vec::new();
    for name in recorded_scenarios() {
        let mut foreign = Vec::new();
        for line in s2a_lines(&name) {
            let Some(cmd) = command_of(&line) else {
                foreign.push(line);
                continue;
            };
            let encoded = cmd
                .encode()
                .unwrap_or_else(|e| panic!("{name}: {line:?} -> {cmd:?}: {e}"));
            let body = encoded.strip_suffix('\n').expect("encoded line ends in LF");
            if redundantly_quoted(&line) {
                assert_eq!(
                    bidbridge::pbx::asterisk::codec::parse_args(body),
                    bidbridge::pbx::asterisk::codec::parse_args(&line),
                    "{name}: {line:?}"
                );
                canonicalised.push(body.to_string());
            } else {
                assert_eq!(body, line, "{name}: re-encoding {cmd:?}");
            }
            encoded_count += 1;
        }
        assert_eq!(
            foreign,
            foreign_lines(&name),
            "{name}: lines that are not our commands"
        );
    }
    assert_eq!(
        canonicalised,
        [
            "EXEC Dial Local/noanswer@buyers,3",
            "EXEC Dial Local/noanswer@buyers,30"
        ]
    );
    // Lines less foreign ones: 01: 29, 02a: 9, 02b: 6, 02c: 4, 03: 10, 04: 5,
    // 06: 0, 07: 59, 08a-c: 3 + 3 + 2, 09: 9, 10: 6.
    assert_eq!(encoded_count, 145);
}

#[test]
fn s2a_09_built_by_hand_is_byte_identical() {
    let commands = [
        Command::Answer,
        Command::GetData {
            file: "bidbridge/press1".into(),
            timeout_ms: 6000,
            max_digits: 5,
        },
        Command::GetData {
            file: "bidbridge/goodbye".into(),
            timeout_ms: 3000,
            max_digits: 5,
        },
        Command::WaitForDigit { timeout_ms: 2000 },
        Command::GetData {
            file: "bidbridge/connecting".into(),
            timeout_ms: 3000,
            max_digits: 5,
        },
        Command::GetData {
            file: "bidbridge/press1".into(),
            timeout_ms: 8000,
            max_digits: 5,
        },
        Command::StreamFile {
            file: "bidbridge/nosuchprompt".into(),
            escape_digits: "".into(),
        },
        Command::SetVariable {
            name: "BIDBRIDGE_DONE".into(),
            value: "1".into(),
        },
        Command::Hangup,
    ];
    let wire: String = commands
        .iter()
        .map(|c| c.encode().expect("valid command"))
        .collect();
    assert_eq!(wire.as_bytes(), read("09-digit-collection", "s2a.raw"));
}

#[test]
fn s2a_01_built_by_hand_matches_line_by_line() {
    let var = |name: &str| Command::GetVariable { name: name.into() };
    let dial = |args: &str| Command::Exec {
        app: "Dial".into(),
        args: args.into(),
    };
    let commands = [
        Command::Answer,
        Command::StreamFile {
            file: "bidbridge/welcome".into(),
            escape_digits: "0123456789*#".into(),
        },
        Command::GetData {
            file: "bidbridge/press1".into(),
            timeout_ms: 8000,
            max_digits: 1,
        },
        Command::ChannelStatus,
        Command::GetFullVariable {
            expr: "${CALLERID(num)} ${CHANNEL(uniqueid)}".into(),
        },
        Command::StreamFile {
            file: "bidbridge/connecting".into(),
            escape_digits: "".into(),
        },
        dial("Local/noanswer@buyers,3"),
        var("DIALSTATUS"),
        var("HANGUPCAUSE"),
        var("DIALEDTIME"),
        var("ANSWEREDTIME"),
        dial("Local/busy@buyers,5"),
        var("DIALSTATUS"),
        var("HANGUPCAUSE"),
        var("DIALEDTIME"),
        dial("Local/answer@buyers,10"),
        var("DIALSTATUS"),
        var("ANSWEREDTIME"),
        var("DIALEDTIME"),
        var("HANGUPCAUSE"),
        var("DIALEDPEERNAME"),
        var("DIALEDPEERNUMBER"),
        Command::GetFullVariable {
            expr: "${HANGUPCAUSE_KEYS()}".into(),
        },
        Command::ChannelStatus,
        Command::SetVariable {
            name: "BIDBRIDGE_OUTCOME".into(),
            value: "sold buyer=answer price=12.50".into(),
        },
        var("BIDBRIDGE_OUTCOME"),
        Command::Hangup,
        Command::StreamFile {
            file: "bidbridge/goodbye".into(),
            escape_digits: "".into(),
        },
        var("BIDBRIDGE_OUTCOME"),
    ];
    let recorded = s2a_lines("01-full-flow");
    assert_eq!(recorded.len(), commands.len());
    for (cmd, line) in commands.iter().zip(&recorded) {
        let encoded = cmd.encode().expect("valid command");
        let body = encoded.strip_suffix('\n').expect("LF");
        if redundantly_quoted(line) {
            // The recorder quoted this Dial argument; we send it bare.
            assert_eq!(body, "EXEC Dial Local/noanswer@buyers,3");
        } else {
            assert_eq!(body, line);
        }
    }
}
