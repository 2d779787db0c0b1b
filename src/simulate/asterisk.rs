//! A fake Asterisk 22 speaking FastAGI to the daemon, byte for byte as the
//! recordings in `shared/fixtures/agi` show it (README "Findings" fN).
//!
//! What it owns: one simulated caller channel per connection, opened TO the
//! daemon's AGI listener like `AGI(agi://...)` does: the 22-line preamble
//! (+ `agi_arg_N`) and blank line, the exact reply forms (`200 result=0`,
//! `200 result=-1 endpos=12000`, `200 result= (timeout)`, `511 Command Not
//! Permitted ...`, `510 Invalid or unknown command`, `520-` usage blocks),
//! unprompted `HANGUP` lines ~40 ms after the reply a hang-up interrupted,
//! `EXEC Dial` blocking for the simulated ring (+ talk) time, honouring
//! `U(<context>^<channel>)` by stamping `SHARED(BIDBRIDGE_ANSWERED_AT)` with
//! the simulated clock, DIALSTATUS per the scenario's leg (fixture 07), and
//! the dead-channel rules after a hang-up (f3).
//!
//! Time: every timed operation (prompt, digit wait, ring, talk) waits
//! `simulated × time_scale` real seconds, and the switch clock it reports
//! (`STRFTIME`, the U() stamp) advances by exactly the simulated length of
//! each operation; between operations it advances 1:1 with real time. So
//! ring and talk times read back from the switch are the scenario's values
//! to within the daemon's own real-time overhead, whatever the scale.
//!
//! It also polices the daemon: a command sent while another is outstanding
//! is recorded as a violation (and treated as Asterisk treats it: it cuts a
//! running prompt, which then never gets a reply, fixture 10).
//!
//! What it must never do: answer in a form Asterisk does not use, or read
//! the socket during `EXEC Dial` (Asterisk does not).
//!
//! Assumed, not recorded: the reply to `EXEC Hangup <cause>` (`200
//! result=-1`, then `HANGUP`).
//!
//! Not reproduced: media, DTMF during STREAM FILE (escape digits), the
//! `AGIEXITONHANGUP` variant (02c), timing of ANSWER beyond a fixed 0.5 s
//! (f7), multi-leg `&` dial strings, labels in SET PRIORITY, and the
//! continuation of the dialplan after the session (the guard, the backup
//! Dial): the trace reports how the session ended and the variables the
//! dialplan would read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use super::scenario::{
    CallTrace, CallerProfile, EndedBy, HangupStage, LegBehaviour, Scenario, SimReport,
};
pub use crate::pbx::asterisk::codec::parse_args;

/// The simulated switch clock at the start of every call (epoch seconds).
pub const SIM_EPOCH: f64 = 1_795_238_000.0;
/// Simulated length of every prompt.
pub const PROMPT_SECS: f64 = 3.0;
/// Simulated time a caller takes to key an entry.
pub const TYPING_SECS: f64 = 1.0;
/// Simulated time ANSWER takes (f7: it waits ~500 ms for media).
pub const ANSWER_SECS: f64 = 0.5;
/// Real delay between the reply a hang-up interrupted and the HANGUP line (f3).
pub const HANGUP_LINE_DELAY: Duration = Duration::from_millis(40);
/// A session the daemon never closes is abandoned after this (real time).
pub const SESSION_LIMIT: Duration = Duration::from_secs(900);
/// Samples per second of `endpos` (8 kHz prompts).
const RATE: f64 = 8000.0;

const DEAD: &str = "511 Command Not Permitted on a dead channel or intercept routine\n";
const INVALID: &str = "510 Invalid or unknown command\n";
const USAGE_HEAD: &str = "520-Invalid command syntax.  Proper usage follows:\n";
const USAGE_END: &str = "520 End of proper usage.\n";

/// One call the fake places.
#[derive(Debug, Clone)]
pub struct FakeCall {
    pub index: u32,
    /// Caller ID number as the switch gives it (`agi_callerid`).
    pub caller: String,
    /// The tracking number without `+` (`agi_dnid`, `agi_extension`).
    pub tracking: String,
    pub profile: CallerProfile,
    /// `agi_network_script`: `route`, or `route?campaign=auto`.
    pub script: String,
    /// `AGI()` arguments (`agi_arg_N`).
    pub args: Vec<String>,
}

impl FakeCall {
    /// Call `index` of a scenario.
    pub fn from_scenario(scenario: &Scenario, index: u32) -> FakeCall {
        FakeCall {
            index,
            caller: scenario.caller_number(index),
            tracking: scenario
                .run
                .tracking_number
                .trim_start_matches('+')
                .to_string(),
            profile: scenario.caller(index),
            script: "route".to_string(),
            args: Vec::new(),
        }
    }

    /// `agi_channel` of this call (the `;2` half of a Local channel, as in
    /// the recordings).
    pub fn channel_name(&self) -> String {
        format!("Local/{}@bidbridge-in-{:08x};2", self.tracking, self.index)
    }

    /// The preamble as Asterisk writes it (f1), one entry per line.
    pub fn preamble_lines(&self, agi_addr: SocketAddr) -> Vec<String> {
        let mut lines = vec![
            "agi_network: yes".to_string(),
            format!("agi_network_script: {}", self.script),
            format!("agi_request: agi://{agi_addr}/{}", self.script),
            format!("agi_channel: {}", self.channel_name()),
            "agi_language: en".to_string(),
            "agi_type: Local".to_string(),
            format!(
                "agi_uniqueid: {}.{}",
                1_795_238_000 + u64::from(self.index),
                2 * self.index + 1
            ),
            "agi_version: 22.10.1".to_string(),
            format!("agi_callerid: {}", self.caller),
            format!("agi_calleridname: Sim Caller {}", self.index),
            "agi_callingpres: 0".to_string(),
            "agi_callingani2: 0".to_string(),
            "agi_callington: 0".to_string(),
            "agi_callingtns: 0".to_string(),
            format!("agi_dnid: {}", self.tracking),
            "agi_rdnis: unknown".to_string(),
            "agi_context: bidbridge-in".to_string(),
            format!("agi_extension: {}", self.tracking),
            "agi_priority: 2".to_string(),
            "agi_enhanced: 0.0".to_string(),
            // Empty values keep the space after the colon (f1).
            "agi_accountcode: ".to_string(),
            format!(
                "agi_threadid: {}",
                140_248_760_895_168u64 + u64::from(self.index)
            ),
        ];
        for (i, arg) in self.args.iter().enumerate() {
            lines.push(format!("agi_arg_{}: {arg}", i + 1));
        }
        lines
    }
}

/// Everything the fake saw of one call.
#[derive(Debug, Clone, Default)]
pub struct AgiCallReport {
    pub trace: CallTrace,
    /// Channel variables at the end (what the dialplan would read after
    /// AGI(): `BIDBRIDGE_DONE`, `BIDBRIDGE_BACKUP`, ...).
    pub variables: BTreeMap<String, String>,
    /// `SHARED()` variables of the caller channel.
    pub shared: BTreeMap<String, String>,
    /// Every command line received, in order (without LF).
    pub commands: Vec<String>,
    /// Protocol rules the daemon broke (pipelining, ...).
    pub violations: Vec<String>,
    /// `(context, extension, priority)` set with SET CONTEXT/EXTENSION/PRIORITY.
    pub continue_at: (Option<String>, Option<String>, Option<String>),
}

/// Places `run.calls` calls at `run.rate_per_sec` to the daemon's FastAGI
/// listener, concurrently, and reports what the switch saw.
pub async fn run_asterisk(agi_addr: SocketAddr, scenario: &Scenario) -> SimReport {
    let scenario = Arc::new(scenario.clone());
    let calls = scenario.run.calls;
    let interval = Duration::from_secs_f64(1.0 / scenario.run.rate_per_sec.max(1e-3));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(calls as usize);
    for index in 0..calls {
        tokio::time::sleep_until(start + interval.mul_f64(f64::from(index))).await;
        let scenario = scenario.clone();
        handles.push(tokio::spawn(async move {
            let call = FakeCall::from_scenario(&scenario, index);
            place_call(agi_addr, &scenario, call).await.trace
        }));
    }
    let mut report = SimReport {
        calls,
        ..Default::default()
    };
    for (index, handle) in handles.into_iter().enumerate() {
        let trace = match handle.await {
            Ok(trace) => trace,
            Err(e) => CallTrace {
                index: index as u32,
                error: Some(format!("simulated call task failed: {e}")),
                ..Default::default()
            },
        };
        if trace.completed && trace.error.is_none() {
            report.completed += 1;
        } else {
            report.failed += 1;
        }
        report.traces.push(trace);
    }
    report
}

/// Places one call and plays Asterisk's side until the daemon closes.
pub async fn place_call(
    agi_addr: SocketAddr,
    scenario: &Scenario,
    call: FakeCall,
) -> AgiCallReport {
    let started = std::time::Instant::now();
    let mut trace = CallTrace {
        index: call.index,
        caller: call.caller.clone(),
        ..Default::default()
    };
    let stream = match TcpStream::connect(agi_addr).await {
        Ok(s) => s,
        Err(e) => {
            // What Asterisk calls AGISTATUS=FAILURE (fixture 05).
            trace.ended = "agi failure".into();
            trace.error = Some(format!("connect {agi_addr}: {e}"));
            return AgiCallReport {
                trace,
                ..Default::default()
            };
        }
    };
    let _ = stream.set_nodelay(true);
    let (read_half, writer) = stream.into_split();
    let mut session = Session {
        scale: scenario.run.time_scale,
        scenario,
        channel_name: call.channel_name(),
        call,
        read_half,
        writer,
        buf: Vec::new(),
        answered: false,
        dead: false,
        hangup_line_at: None,
        caller_hangup_at: None,
        armed: false,
        bridged_once: false,
        collects: 0,
        clock: SimClock::new(),
        report: AgiCallReport {
            trace,
            ..Default::default()
        },
    };
    let outcome = tokio::time::timeout(SESSION_LIMIT, session.run(agi_addr)).await;
    let mut report = session.report;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.trace.error = Some(e),
        Err(_) => report.trace.error = Some("the daemon never closed the session".into()),
    }
    if !report.violations.is_empty() {
        let v = report.violations.join("; ");
        report.trace.error = Some(match report.trace.error.take() {
            Some(e) => format!("{e}; {v}"),
            None => v,
        });
    }
    report.trace.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// The switch clock: simulated seconds during operations, real time between.
struct SimClock {
    at_anchor: f64,
    anchor: Instant,
}

impl SimClock {
    fn new() -> SimClock {
        SimClock {
            at_anchor: SIM_EPOCH,
            anchor: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.at_anchor + self.anchor.elapsed().as_secs_f64()
    }

    /// Ends an operation that began at simulated `start` and lasted `sim`.
    fn advance_to(&mut self, t: f64) {
        self.at_anchor = t;
        self.anchor = Instant::now();
    }
}

/// How a timed wait ended.
enum Waited {
    /// The whole simulated time passed.
    Done,
    /// The caller hung up after this many simulated seconds.
    CallerLeft(f64),
    /// A command line arrived (only when watching the socket).
    Command(f64),
    /// The daemon closed its side.
    Eof(f64),
}

struct Session<'a> {
    scenario: &'a Scenario,
    scale: f64,
    call: FakeCall,
    channel_name: String,
    read_half: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    answered: bool,
    dead: bool,
    /// A HANGUP line to write at this time (f3: ~40 ms after the reply).
    hangup_line_at: Option<Instant>,
    /// When the caller will hang up (real time), once their stage began.
    caller_hangup_at: Option<Instant>,
    armed: bool,
    bridged_once: bool,
    collects: usize,
    clock: SimClock,
    report: AgiCallReport,
}

/// The Q.850 name of a cause code, for the trace.
fn cause_name(code: &str) -> String {
    match code {
        "16" => "NORMAL_CLEARING",
        "17" => "USER_BUSY",
        "19" => "NO_ANSWER",
        "21" => "CALL_REJECTED",
        "3" => "NO_ROUTE_DESTINATION",
        "1" => "UNALLOCATED_NUMBER",
        "41" => "NORMAL_TEMPORARY_FAILURE",
        "42" => "SWITCH_CONGESTION",
        "487" => "ORIGINATOR_CANCEL",
        other => return other.to_string(),
    }
    .to_string()
}

fn behaviour_name(b: LegBehaviour) -> &'static str {
    match b {
        LegBehaviour::Answer => "answer",
        LegBehaviour::NoAnswer => "no_answer",
        LegBehaviour::Busy => "busy",
        LegBehaviour::Rejected => "rejected",
        LegBehaviour::Unreachable => "unreachable",
    }
}

/// A usage block as Asterisk writes it (fixture 04).
fn usage(text: &str) -> String {
    format!("{USAGE_HEAD}{text}\n{USAGE_END}")
}

fn usage_of(verb: &str) -> String {
    usage(match verb {
        "STREAM FILE" => {
            "Send the given file, allowing playback to be interrupted by the given digits, if any. Returns <literal>0</literal> if playback completes without a digit being pressed, or the ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error or if the channel was disconnected. If musiconhold is playing before calling stream file it will be automatically stopped and will not be restarted after completion.\nIt sets the following channel variables upon completion:\n<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n    <value>SUCCESS</value>\n    <value>FAILED</value>"
        }
        "GET DATA" => {
            "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\nReturns the digits received from the channel at the other end."
        }
        "SET VARIABLE" => "Sets a variable to the current channel.",
        "EXEC" => {
            "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.\nReturns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> on failure to find <replaceable>application</replaceable>.\n<note>NOTE:</note> exec does not evaluate dialplan functions and variables unless it is explicitly enabled by setting the <variable>AGIEXECFULL</variable> variable to <literal>yes</literal>."
        }
        "WAIT FOR DIGIT" => {
            "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit. Returns <literal>-1</literal> on channel failure, <literal>0</literal> if no digit is received in the timeout, or the numerical value of the ascii of the digit if one is received. Use <literal>-1</literal> for the <replaceable>timeout</replaceable> value if you desire the call to block indefinitely."
        }
        "GET VARIABLE" => {
            "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set and returns the variable in parentheses."
        }
        "GET FULL VARIABLE" => {
            "Evaluates the given <replaceable>expression</replaceable> against the channel specified by <replaceable>channelname</replaceable>, or the current channel if <replaceable>channelname</replaceable> is not provided."
        }
        "SET CONTEXT" => "Sets the context for continuation upon exiting the application.",
        "SET EXTENSION" => "Changes the extension for continuation upon exiting the application.",
        "SET PRIORITY" => {
            "Changes the priority for continuation upon exiting the application. The priority must be a valid priority or label."
        }
        _ => "Proper usage not available.",
    })
}

/// The commands Asterisk still runs on a hung-up channel (f3).
fn allowed_when_dead(verb: &str) -> bool {
    matches!(
        verb,
        "GET VARIABLE"
            | "GET FULL VARIABLE"
            | "SET VARIABLE"
            | "EXEC"
            | "NOOP"
            | "VERBOSE"
            | "DATABASE GET"
            | "DATABASE PUT"
    )
}

/// The command's keywords (upper case) and its arguments.
fn split_verb(argv: &[String]) -> Option<(&'static str, &[String])> {
    let up: Vec<String> = argv
        .iter()
        .take(3)
        .map(|a| a.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = up.iter().map(String::as_str).collect();
    const VERBS: &[&str] = &[
        "GET FULL VARIABLE",
        "WAIT FOR DIGIT",
        "CHANNEL STATUS",
        "STREAM FILE",
        "GET DATA",
        "GET VARIABLE",
        "SET VARIABLE",
        "SET CONTEXT",
        "SET EXTENSION",
        "SET PRIORITY",
        "DATABASE GET",
        "DATABASE PUT",
        "ANSWER",
        "HANGUP",
        "NOOP",
        "EXEC",
        "VERBOSE",
    ];
    VERBS.iter().find_map(|verb| {
        let n = verb.split(' ').count();
        (words.len() >= n && words[..n].join(" ") == *verb).then(|| (*verb, &argv[n..]))
    })
}

impl Session<'_> {
    async fn run(&mut self, agi_addr: SocketAddr) -> Result<(), String> {
        // Asterisk writes each preamble line with its own write() (README).
        for line in self.call.preamble_lines(agi_addr) {
            self.write(&format!("{line}\n")).await?;
        }
        self.write("\n").await?;
        let mut chunk = vec![0u8; 4096];
        loop {
            if let Some(line) = self.take_line() {
                self.handle(&line).await?;
                continue;
            }
            let hangup_line_at = self.hangup_line_at;
            let caller_at = self.caller_hangup_at.filter(|_| !self.dead);
            tokio::select! {
                read = self.read_half.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => {
                        // The daemon closed its side: Asterisk sends HANGUP
                        // (again, even if the channel is up) and closes (f3, 06).
                        if self.hangup_line_at.take().is_some() {
                            let _ = self.write("HANGUP\n").await;
                        }
                        let _ = self.write("HANGUP\n").await;
                        let _ = self.writer.shutdown().await;
                        self.finish_trace();
                        self.report.trace.completed = true;
                        return Ok(());
                    }
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                },
                _ = sleep_opt(hangup_line_at), if hangup_line_at.is_some() => {
                    self.hangup_line_at = None;
                    self.write("HANGUP\n").await?;
                }
                _ = sleep_opt(caller_at), if caller_at.is_some() => {
                    // The caller leaves while no command runs: HANGUP at once.
                    self.caller_leaves();
                    self.hangup_line_at = None;
                    self.write("HANGUP\n").await?;
                }
            }
        }
    }

    fn finish_trace(&mut self) {
        if self.report.trace.ended.is_empty() {
            self.report.trace.ended = match &self.report.continue_at {
                // The destination is in `AgiCallReport::continue_at`.
                (Some(_), Some(_), _) => "transfer".into(),
                _ if self.dead => "caller hung up".into(),
                _ => "handed back".into(),
            };
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let lf = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=lf).collect();
        let text = String::from_utf8_lossy(&line[..lf]);
        Some(text.trim_end_matches('\r').to_string())
    }

    async fn write(&mut self, text: &str) -> Result<(), String> {
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("writing to the daemon: {e}"))
    }

    /// Reads what has already arrived without waiting, and records a
    /// violation if a whole command is waiting before `verb` was answered.
    fn check_pipelined(&mut self, verb: &str) {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = self.read_half.try_read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if self.buf.contains(&b'\n') {
            self.report
                .violations
                .push(format!("a command was sent before {verb} was answered"));
        }
    }

    async fn reply(&mut self, verb: &str, text: &str) -> Result<(), String> {
        self.check_pipelined(verb);
        self.write(text).await
    }

    /// The caller hangs up now.
    fn caller_leaves(&mut self) {
        if self.dead {
            return;
        }
        self.dead = true;
        self.caller_hangup_at = None;
        self.report
            .variables
            .entry("HANGUPCAUSE".into())
            .and_modify(|v| *v = "16".into())
            .or_insert_with(|| "16".into());
        if self.report.trace.ended.is_empty() {
            self.report.trace.ended = "caller hung up".into();
        }
    }

    /// Starts the caller's hang-up clock if their stage is `stage`.
    fn arm(&mut self, stage: HangupStage) {
        if self.armed {
            return;
        }
        if let Some(spec) = &self.call.profile.hangup
            && spec.stage == stage
        {
            self.armed = true;
            let real = Duration::from_secs_f64((spec.after_secs * self.scale).max(0.0));
            self.caller_hangup_at = Some(Instant::now() + real);
        }
    }

    /// Waits `sim` simulated seconds, cut short by the caller leaving and,
    /// when `watch` is set, by a command arriving or the daemon closing.
    async fn wait_sim(&mut self, sim: f64, watch: bool) -> Waited {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64((sim * self.scale).max(0.0));
        let elapsed_sim = |scale: f64| start.elapsed().as_secs_f64() / scale;
        let mut chunk = vec![0u8; 4096];
        loop {
            if watch && self.buf.contains(&b'\n') {
                return Waited::Command(elapsed_sim(self.scale).min(sim));
            }
            let caller_at = self.caller_hangup_at.filter(|_| !self.dead);
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return Waited::Done,
                _ = sleep_opt(caller_at), if caller_at.is_some() => {
                    // Measured from the planned moment, not from when this
                    // task got to run: scheduling delays, divided by a small
                    // time_scale, would otherwise show up as simulated seconds.
                    let planned = caller_at
                        .map(|at| at.saturating_duration_since(start).as_secs_f64() / self.scale)
                        .unwrap_or_default();
                    return Waited::CallerLeft(planned.min(sim));
                }
                read = self.read_half.read(&mut chunk), if watch => match read {
                    Ok(0) | Err(_) => return Waited::Eof(elapsed_sim(self.scale).min(sim)),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                },
            }
        }
    }

    async fn handle(&mut self, line: &str) -> Result<(), String> {
        self.report.commands.push(line.to_string());
        let argv = parse_args(line);
        let Some((verb, args)) = split_verb(&argv) else {
            return self.reply("?", INVALID).await;
        };
        if self.dead && !allowed_when_dead(verb) {
            return self.reply(verb, DEAD).await;
        }
        let arg = |i: usize| args.get(i).map(String::as_str);
        match verb {
            "ANSWER" => {
                let t = self.clock.now();
                self.wait_sim(ANSWER_SECS, false).await;
                self.clock.advance_to(t + ANSWER_SECS);
                self.answered = true;
                if self.call.profile.dtmf.is_empty() {
                    self.arm(HangupStage::Auction);
                }
                self.reply(verb, "200 result=0\n").await
            }
            "HANGUP" => {
                self.dead = true;
                if self.report.trace.ended.is_empty() {
                    self.report.trace.ended = "hangup NORMAL_CLEARING".into();
                }
                self.reply(verb, "200 result=1\n").await?;
                self.hangup_line_at = Some(Instant::now() + HANGUP_LINE_DELAY);
                Ok(())
            }
            "NOOP" | "DATABASE GET" => self.reply(verb, "200 result=0\n").await,
            "DATABASE PUT" => self.reply(verb, "200 result=1\n").await,
            "VERBOSE" => match arg(0) {
                Some(_) => self.reply(verb, "200 result=1\n").await,
                None => self.reply(verb, &usage_of(verb)).await,
            },
            "CHANNEL STATUS" => {
                let state = if self.answered { 6 } else { 4 };
                self.reply(verb, &format!("200 result={state}\n")).await
            }
            "STREAM FILE" => {
                let (Some(file), Some(_digits)) = (arg(0), arg(1)) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                if file.contains("nosuch") || file.contains("missing") {
                    // A file that does not exist: -1, endpos 0, channel up (09).
                    return self.reply(verb, "200 result=-1 endpos=0\n").await;
                }
                self.arm(HangupStage::Prompt);
                self.timed_prompt(verb).await
            }
            "GET DATA" => {
                let (Some(file), Some(timeout), Some(max)) = (arg(0), arg(1), arg(2)) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let timeout_ms: f64 = timeout.parse().unwrap_or(2000.0);
                let max: usize = max.parse().unwrap_or(1024).max(1);
                let missing = file.contains("nosuch") || file.contains("missing");
                self.get_data(timeout_ms / 1000.0, max, missing).await
            }
            "WAIT FOR DIGIT" => {
                let Some(timeout) = arg(0) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let secs = timeout.parse::<f64>().unwrap_or(0.0).max(0.0) / 1000.0;
                let t = self.clock.now();
                match self.wait_sim(secs, false).await {
                    Waited::CallerLeft(e) => {
                        self.caller_left_during(verb, t + e, "200 result=-1\n")
                            .await
                    }
                    _ => {
                        self.clock.advance_to(t + secs);
                        self.reply(verb, "200 result=0\n").await
                    }
                }
            }
            "EXEC" => {
                let Some(app) = arg(0) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let data = args[1..].join(",");
                match app.to_ascii_lowercase().as_str() {
                    "dial" => self.dial(&data).await,
                    "hangup" => {
                        // Not in the recordings: res_agi answers EXEC with
                        // the application's return value, and Hangup()
                        // returns -1; the HANGUP line follows as for any
                        // hang-up (f3).
                        let cause = if data.is_empty() {
                            "16".to_string()
                        } else {
                            data
                        };
                        let was_dead = self.dead;
                        self.dead = true;
                        if self.report.trace.ended.is_empty() {
                            self.report.trace.ended = format!("hangup {}", cause_name(&cause));
                        }
                        if !was_dead {
                            self.report.variables.insert("HANGUPCAUSE".into(), cause);
                        }
                        self.reply(verb, "200 result=-1\n").await?;
                        if !was_dead {
                            self.hangup_line_at = Some(Instant::now() + HANGUP_LINE_DELAY);
                        }
                        Ok(())
                    }
                    "noop" | "verbose" | "set" => self.reply(verb, "200 result=0\n").await,
                    _ => self.reply(verb, "200 result=-2\n").await,
                }
            }
            "GET VARIABLE" => {
                let Some(name) = arg(0) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let text = match self.read_variable(name) {
                    Some(v) => format!("200 result=1 ({v})\n"),
                    None => "200 result=0\n".to_string(),
                };
                self.reply(verb, &text).await
            }
            "GET FULL VARIABLE" => {
                let Some(expr) = arg(0) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let value = self.evaluate(expr);
                self.reply(verb, &format!("200 result=1 ({value})\n")).await
            }
            "SET VARIABLE" => {
                let (Some(name), Some(value)) = (arg(0), arg(1)) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                let (name, value) = (name.to_string(), value.to_string());
                match name
                    .strip_prefix("SHARED(")
                    .and_then(|n| n.strip_suffix(')'))
                {
                    Some(shared) => {
                        self.report.shared.insert(shared.to_string(), value);
                    }
                    None => {
                        self.report.variables.insert(name, value);
                    }
                }
                self.reply(verb, "200 result=1\n").await
            }
            "SET CONTEXT" | "SET EXTENSION" | "SET PRIORITY" => {
                let Some(value) = arg(0).map(str::to_string) else {
                    return self.reply(verb, &usage_of(verb)).await;
                };
                match verb {
                    "SET CONTEXT" => self.report.continue_at.0 = Some(value),
                    "SET EXTENSION" => self.report.continue_at.1 = Some(value),
                    _ => self.report.continue_at.2 = Some(value),
                }
                self.reply(verb, "200 result=0\n").await
            }
            _ => self.reply(verb, INVALID).await,
        }
    }

    fn read_variable(&self, name: &str) -> Option<String> {
        if let Some(shared) = name
            .strip_prefix("SHARED(")
            .and_then(|n| n.strip_suffix(')'))
        {
            // A function reads as set, empty when it has no value.
            return Some(self.report.shared.get(shared).cloned().unwrap_or_default());
        }
        if name.contains('(') {
            return Some(String::new());
        }
        self.report.variables.get(name).cloned()
    }

    /// `GET FULL VARIABLE`: `${STRFTIME(,,%s.%3q)}` is the switch clock,
    /// `${NAME}` a variable; everything else evaluates to empty.
    fn evaluate(&self, expr: &str) -> String {
        let mut out = String::new();
        let mut rest = expr;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &after[..end];
            if inner.starts_with("STRFTIME(") {
                out.push_str(&format!("{:.3}", self.clock.now()));
            } else if let Some(v) = self.read_variable(inner) {
                out.push_str(&v);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A STREAM FILE of a prompt that exists.
    async fn timed_prompt(&mut self, verb: &str) -> Result<(), String> {
        let t = self.clock.now();
        match self.wait_sim(PROMPT_SECS, true).await {
            Waited::Done => {
                self.clock.advance_to(t + PROMPT_SECS);
                let endpos = (PROMPT_SECS * RATE) as u64;
                self.reply(verb, &format!("200 result=0 endpos={endpos}\n"))
                    .await
            }
            Waited::CallerLeft(e) => {
                let endpos = (e * RATE) as u64;
                self.caller_left_during(verb, t + e, &format!("200 result=-1 endpos={endpos}\n"))
                    .await
            }
            Waited::Command(e) => {
                self.prompt_cut_by_command(verb, t + e);
                Ok(())
            }
            Waited::Eof(e) => {
                // The daemon went away: Asterisk stops the prompt (08a).
                self.clock.advance_to(t + e);
                Ok(())
            }
        }
    }

    /// The caller hung up at simulated time `at` while `verb` ran:
    /// Asterisk answers the verb with `reply`, then sends the HANGUP line
    /// a moment later.
    async fn caller_left_during(&mut self, verb: &str, at: f64, reply: &str) -> Result<(), String> {
        self.clock.advance_to(at);
        self.caller_leaves();
        self.reply(verb, reply).await?;
        self.hangup_line_at = Some(Instant::now() + HANGUP_LINE_DELAY);
        Ok(())
    }

    /// Pipelining: a command arrived while a prompt played, so the prompt
    /// is cut and never answered (10); the daemon broke the protocol.
    fn prompt_cut_by_command(&mut self, verb: &str, at: f64) {
        self.clock.advance_to(at);
        self.report
            .violations
            .push(format!("a command was sent while {verb} ran"));
    }

    async fn get_data(&mut self, timeout: f64, max: usize, missing: bool) -> Result<(), String> {
        const VERB: &str = "GET DATA";
        self.arm(HangupStage::Prompt);
        let entry = self.call.profile.dtmf.get(self.collects).cloned();
        self.collects += 1;
        let t = self.clock.now();
        // The prompt, then the caller typing (or the wait running out).
        let prompt = if missing { 0.0 } else { PROMPT_SECS };
        let (digits, ended_by_key, typing) = match &entry {
            Some(entry) => {
                let typed: String = entry.chars().take_while(|c| *c != '#').take(max).collect();
                let ended = entry.contains('#') || typed.len() >= max;
                (typed, ended, TYPING_SECS.min(timeout))
            }
            None => (String::new(), false, timeout),
        };
        let total = if ended_by_key {
            prompt + typing
        } else {
            prompt + typing.max(timeout)
        };
        match self.wait_sim(total, true).await {
            Waited::Done => {
                self.clock.advance_to(t + total);
                if let Some(entry) = entry {
                    self.report.trace.dtmf_sent.push(entry);
                }
                if self.collects >= self.call.profile.dtmf.len() {
                    self.arm(HangupStage::Auction);
                }
                let text = if ended_by_key {
                    format!("200 result={digits}\n")
                } else {
                    format!("200 result={digits} (timeout)\n")
                };
                self.reply(VERB, &text).await
            }
            Waited::CallerLeft(e) => {
                self.caller_left_during(VERB, t + e, "200 result=-1\n")
                    .await
            }
            Waited::Command(e) => {
                self.prompt_cut_by_command(VERB, t + e);
                Ok(())
            }
            Waited::Eof(e) => {
                self.clock.advance_to(t + e);
                Ok(())
            }
        }
    }

    /// `EXEC Dial <dialstring>,<secs>,<options>`: rings per the scenario's
    /// leg, blocking (and not reading the socket) until the attempt ends.
    async fn dial(&mut self, data: &str) -> Result<(), String> {
        const VERB: &str = "EXEC Dial";
        if self.dead {
            // The caller is gone: no buyer is called (03).
            self.report
                .variables
                .insert("DIALSTATUS".into(), "CANCEL".into());
            return self.reply(VERB, "200 result=-1\n").await;
        }
        let mut parts = data.splitn(3, ',');
        let dial_string = parts.next().unwrap_or_default().to_string();
        let ring_limit: f64 = parts
            .next()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(3600.0);
        let options = parts.next().unwrap_or_default().to_string();
        let gosub = options
            .find("U(")
            .and_then(|i| options[i + 2..].split(')').next())
            .map(|inner| {
                let (ctx, arg) = inner.split_once('^').unwrap_or((inner, ""));
                (ctx.to_string(), arg.to_string())
            });
        // The `g` option (outside parentheses): 0 instead of -1 after an answered call.
        let mut depth = 0;
        let go_on = options.chars().any(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                'g' if depth == 0 => return true,
                _ => {}
            }
            false
        });
        let leg = self.scenario.leg(&dial_string);
        self.report.trace.bridges.push((
            dial_string.clone(),
            behaviour_name(leg.behaviour).to_string(),
        ));
        self.report
            .variables
            .entry("HANGUPCAUSE".into())
            .or_insert_with(|| "0".into());
        self.report
            .variables
            .insert("DIALSTATUS".into(), String::new());
        self.arm(HangupStage::Ringing);

        let t = self.clock.now();
        let (ring, unanswered) = match leg.behaviour {
            LegBehaviour::Answer if leg.ring_secs < ring_limit => (leg.ring_secs, None),
            LegBehaviour::Answer | LegBehaviour::NoAnswer => (ring_limit, Some(("NOANSWER", None))),
            LegBehaviour::Busy => (leg.ring_secs.min(ring_limit), Some(("BUSY", Some("17")))),
            LegBehaviour::Rejected => (
                leg.ring_secs.min(ring_limit),
                Some(("CHANUNAVAIL", Some("21"))),
            ),
            LegBehaviour::Unreachable => (0.0, Some(("CHANUNAVAIL", None))),
        };
        match self.wait_sim(ring, false).await {
            Waited::CallerLeft(e) => {
                self.report
                    .variables
                    .insert("DIALSTATUS".into(), "CANCEL".into());
                return self
                    .caller_left_during(VERB, t + e, "200 result=-1\n")
                    .await;
            }
            _ => self.clock.advance_to(t + ring),
        }
        if let Some((status, cause)) = unanswered {
            self.report
                .variables
                .insert("DIALSTATUS".into(), status.into());
            if let Some(cause) = cause {
                self.report
                    .variables
                    .insert("HANGUPCAUSE".into(), cause.into());
            }
            return self.reply(VERB, "200 result=0\n").await;
        }

        // Answered: the U() gosub stamps the answer on the channel it names.
        let answered_at = self.clock.now();
        if let Some((ctx, channel)) = &gosub
            && !ctx.is_empty()
            && *channel == self.channel_name
        {
            self.report
                .shared
                .insert("BIDBRIDGE_ANSWERED_AT".into(), format!("{answered_at:.3}"));
        }
        self.report
            .variables
            .insert("DIALSTATUS".into(), "ANSWER".into());
        if !self.bridged_once {
            self.bridged_once = true;
            self.arm(HangupStage::Bridged);
        }
        let talk = leg.talk_secs.max(0.0);
        let caller_ends = leg.ended_by == Some(EndedBy::Caller);
        let left = match self.wait_sim(talk, false).await {
            Waited::CallerLeft(e) => {
                self.clock.advance_to(answered_at + e);
                true
            }
            _ => {
                self.clock.advance_to(answered_at + talk);
                caller_ends
            }
        };
        self.report
            .variables
            .insert("HANGUPCAUSE".into(), "16".into());
        if left {
            self.caller_leaves();
            self.reply(VERB, "200 result=-1\n").await?;
            self.hangup_line_at = Some(Instant::now() + HANGUP_LINE_DELAY);
            Ok(())
        } else {
            // The buyer hung up: -1 without `g`, 0 with it (07).
            let result = if go_on { 0 } else { -1 };
            self.reply(VERB, &format!("200 result={result}\n")).await
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The adapter against the fake: the behaviours the call flow relies
    //! on, end to end over a real socket.

    use super::*;
    use crate::catalog::dial::{DialTarget, PromptName, SipUri, Token};
    use crate::config::AsteriskConfig;
    use crate::pbx::asterisk::session::AgiChannel;
    use crate::pbx::{
        BridgeRequest, CallChannel, ChannelError, CollectOutcome, CollectRequest, HangupCause,
        LegStatus, Party, PlayOutcome,
    };
    use tokio::net::TcpListener;

    const LEGS: &str = r#"
[[legs]]
match = "buyer-noanswer"
behaviour = "no_answer"

[[legs]]
match = "buyer-busy"
behaviour = "busy"
ring_secs = 1.0

[[legs]]
match = "buyer-reject"
behaviour = "rejected"

[[legs]]
match = "buyer-answer"
behaviour = "answer"
ring_secs = 2.0
talk_secs = 95.0

[[legs]]
match = "buyer-hangs-up-caller"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 30.0
ended_by = "caller"
"#;

    fn scenario(callers: &str) -> Scenario {
        let text = format!("[run]\ncalls = 1\ntime_scale = 0.01\n{callers}\n{LEGS}");
        Scenario::parse(&text).expect("scenario")
    }

    /// Connects the fake (as call 0 of `scenario`) to a fresh AgiChannel.
    async fn start(scenario: Scenario) -> (AgiChannel, tokio::task::JoinHandle<AgiCallReport>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = tokio::spawn(async move {
            let call = FakeCall::from_scenario(&scenario, 0);
            place_call(addr, &scenario, call).await
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let channel = AgiChannel::establish(stream, AsteriskConfig::default())
            .await
            .expect("establish");
        (channel, fake)
    }

    async fn finish(ch: AgiChannel, fake: tokio::task::JoinHandle<AgiCallReport>) -> AgiCallReport {
        ch.close().await;
        let report = tokio::time::timeout(Duration::from_secs(10), fake)
            .await
            .expect("fake ends")
            .expect("fake task");
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.trace.completed, "{:?}", report.trace);
        report
    }

    fn prompt(name: &str) -> PromptName {
        PromptName::new(name).expect("prompt")
    }

    fn collect_req(max: u8, timeout_secs: u64) -> CollectRequest {
        CollectRequest {
            prompt: prompt("bidbridge/press1"),
            max_digits: max,
            timeout: Duration::from_secs(timeout_secs),
            terminator: Some('#'),
        }
    }

    fn sip(user: &str, ring_secs: u64) -> BridgeRequest {
        BridgeRequest {
            target: DialTarget::Sip(
                SipUri::parse(&format!("sip:{user}@198.51.100.7")).expect("uri"),
            ),
            ring_timeout: Duration::from_secs(ring_secs),
            call_id: "c0ffee00-0000-0000-0000-000000000000".into(),
            caller_id_number: None,
        }
    }

    fn about(d: Duration, secs: f64, slack: f64) -> bool {
        (d.as_secs_f64() - secs).abs() <= slack
    }

    #[tokio::test]
    async fn preamble_reads_like_a_real_one() {
        let (ch, fake) = start(scenario("[[callers]]\ndtmf = []")).await;
        let info = ch.info().clone();
        assert_eq!(info.dialed_number, "18005550100");
        assert_eq!(info.caller_id_number, "+13125550100");
        assert!(!info.answered);
        assert_eq!(
            info.variables.get("agi_channel").map(String::as_str),
            Some("Local/18005550100@bidbridge-in-00000000;2")
        );
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "handed back");
        assert_eq!(report.commands, ["CHANNEL STATUS"]);
    }

    #[tokio::test]
    async fn ivr_digit_and_silence() {
        let (mut ch, fake) = start(scenario("[[callers]]\ndtmf = [\"1\", \"606\"]")).await;
        ch.answer().await.expect("answer");
        assert!(ch.info().answered);
        assert_eq!(
            ch.play(&prompt("bidbridge/welcome")).await.expect("play"),
            PlayOutcome::Played
        );
        assert_eq!(
            ch.collect(&collect_req(1, 5)).await.expect("collect"),
            CollectOutcome::Digits("1".into())
        );
        // Fewer digits than asked for, no #: a partial entry.
        assert_eq!(
            ch.collect(&collect_req(5, 3)).await.expect("collect"),
            CollectOutcome::Timeout {
                partial: "606".into()
            }
        );
        // Beyond the caller's script: silence.
        assert_eq!(
            ch.collect(&collect_req(1, 2)).await.expect("collect"),
            CollectOutcome::Timeout {
                partial: String::new()
            }
        );
        assert!(matches!(
            ch.play(&prompt("bidbridge/nosuchprompt")).await,
            Ok(PlayOutcome::PromptFailed { .. })
        ));
        ch.mark_settled().await.expect("settled");
        ch.hangup(HangupCause::NormalClearing)
            .await
            .expect("hangup");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.dtmf_sent, ["1", "606"]);
        assert_eq!(report.trace.ended, "hangup NORMAL_CLEARING");
        assert_eq!(
            report.variables.get("BIDBRIDGE_DONE").map(String::as_str),
            Some("1")
        );
    }

    #[tokio::test]
    async fn bridge_outcomes_and_talk_time_from_the_answer_stamp() {
        let (mut ch, fake) = start(scenario("[[callers]]\ndtmf = []")).await;
        ch.answer().await.expect("answer");
        let o = ch
            .bridge(&sip("buyer-noanswer", 3))
            .await
            .expect("noanswer");
        assert_eq!(o.status, LegStatus::NoAnswer);
        assert!(about(o.ring_time, 3.0, 0.5), "{o:?}");
        let o = ch.bridge(&sip("buyer-busy", 10)).await.expect("busy");
        assert_eq!(o.status, LegStatus::Busy);
        let o = ch.bridge(&sip("buyer-reject", 10)).await.expect("reject");
        assert_eq!(o.status, LegStatus::Unreachable);
        let o = ch
            .bridge(&sip("nobody-matches", 10))
            .await
            .expect("unreachable");
        assert_eq!(o.status, LegStatus::Unreachable);
        let o = ch.bridge(&sip("buyer-answer", 10)).await.expect("answer");
        assert_eq!(o.status, LegStatus::Answered);
        // 95 simulated seconds took ~0.95 s of real time; the switch's
        // clock and the U() stamp say 95 s.
        let talk = o.talk_time.expect("talk time");
        assert!(about(talk, 95.0, 0.5), "talk {talk:?}");
        assert!(about(o.ring_time, 2.0, 0.5), "ring {:?}", o.ring_time);
        assert_eq!(o.ended_by, Some(Party::Buyer));
        assert!(o.answered_at.is_some() && o.ended_at > o.answered_at);
        // The caller is still ours after the buyer hung up.
        assert!(!ch.presence().is_gone());
        ch.mark_settled().await.expect("settled");
        ch.hangup(HangupCause::NormalClearing)
            .await
            .expect("hangup");
        let report = finish(ch, fake).await;
        let behaviours: Vec<&str> = report
            .trace
            .bridges
            .iter()
            .map(|(_, b)| b.as_str())
            .collect();
        assert_eq!(
            behaviours,
            ["no_answer", "busy", "rejected", "unreachable", "answer"]
        );
        // Nothing was sent while Dial ran, nothing pipelined (checked in finish).
        assert!(report.commands.iter().any(|c| c.starts_with(
            "EXEC Dial PJSIP/bidbridge-out/sip:buyer-answer@198.51.100.7,10,U(bidbridge-answered^"
        )));
    }

    #[tokio::test]
    async fn caller_hangs_up_during_prompt() {
        let (mut ch, fake) = start(scenario(
            "[[callers]]\nhangup = { stage = \"prompt\", after_secs = 1.0 }",
        ))
        .await;
        ch.answer().await.expect("answer");
        assert!(matches!(
            ch.play(&prompt("bidbridge/welcome")).await,
            Err(ChannelError::CallerGone)
        ));
        assert!(ch.presence().is_gone());
        // The dialplan must learn we are done, even on a dead channel (f3).
        ch.mark_settled()
            .await
            .expect("SET VARIABLE works after hang-up");
        ch.hangup(HangupCause::NormalClearing).await.expect("no-op");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "caller hung up");
        assert_eq!(
            report.variables.get("BIDBRIDGE_DONE").map(String::as_str),
            Some("1")
        );
    }

    #[tokio::test]
    async fn caller_hangs_up_during_collect() {
        let (mut ch, fake) = start(scenario(
            "[[callers]]\nhangup = { stage = \"prompt\", after_secs = 5.0 }",
        ))
        .await;
        ch.answer().await.expect("answer");
        assert!(matches!(
            ch.collect(&collect_req(1, 10)).await,
            Err(ChannelError::CallerGone)
        ));
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "caller hung up");
    }

    #[tokio::test]
    async fn caller_hangs_up_during_the_auction() {
        let (mut ch, fake) = start(scenario(
            "[[callers]]\ndtmf = [\"1\"]\nhangup = { stage = \"auction\", after_secs = 5.0 }",
        ))
        .await;
        ch.answer().await.expect("answer");
        assert_eq!(
            ch.collect(&collect_req(1, 5)).await.expect("collect"),
            CollectOutcome::Digits("1".into())
        );
        // No command runs: the HANGUP line arrives on its own.
        let mut presence = ch.presence();
        tokio::time::timeout(Duration::from_secs(2), presence.gone())
            .await
            .expect("unprompted HANGUP");
        assert!(matches!(
            ch.bridge(&sip("buyer-answer", 10)).await,
            Err(ChannelError::CallerGone)
        ));
        ch.mark_settled().await.expect("settled");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "caller hung up");
        assert!(report.trace.bridges.is_empty());
    }

    #[tokio::test]
    async fn caller_hangs_up_while_ringing() {
        let (mut ch, fake) = start(scenario(
            "[[callers]]\nhangup = { stage = \"ringing\", after_secs = 1.0 }",
        ))
        .await;
        ch.answer().await.expect("answer");
        let o = ch.bridge(&sip("buyer-noanswer", 20)).await.expect("bridge");
        assert_eq!(o.status, LegStatus::CallerGone);
        assert!(about(o.ring_time, 1.0, 0.5), "{o:?}");
        assert!(ch.presence().is_gone());
        assert!(matches!(
            ch.bridge(&sip("buyer-answer", 20)).await,
            Err(ChannelError::CallerGone)
        ));
        ch.mark_settled().await.expect("settled");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.bridges.len(), 1);
    }

    #[tokio::test]
    async fn caller_hangs_up_while_bridged() {
        let (mut ch, fake) = start(scenario(
            "[[callers]]\nhangup = { stage = \"bridged\", after_secs = 10.0 }",
        ))
        .await;
        ch.answer().await.expect("answer");
        let o = ch.bridge(&sip("buyer-answer", 20)).await.expect("bridge");
        assert_eq!(o.status, LegStatus::Answered);
        assert_eq!(o.ended_by, Some(Party::Caller));
        let talk = o.talk_time.expect("talk");
        assert!(about(talk, 10.0, 0.5), "{talk:?}");
        // A leg that the scenario says the caller ends.
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "caller hung up");

        let (mut ch, fake) = start(scenario("[[callers]]\ndtmf = []")).await;
        let o = ch
            .bridge(&sip("buyer-hangs-up-caller", 20))
            .await
            .expect("bridge");
        assert_eq!(o.ended_by, Some(Party::Caller));
        assert!(about(o.talk_time.expect("talk"), 30.0, 0.5));
        finish(ch, fake).await;
    }

    #[tokio::test]
    async fn dead_channel_answers_511_but_variables_still_work() {
        let (mut ch, fake) = start(scenario("[[callers]]\ndtmf = []")).await;
        ch.answer().await.expect("answer");
        ch.hangup(HangupCause::UserBusy).await.expect("hangup");
        // Sent before the HANGUP line (40 ms) arrives: Asterisk says 511,
        // which the adapter reads as the caller being gone.
        assert!(matches!(ch.answer().await, Err(ChannelError::CallerGone)));
        ch.mark_settled().await.expect("SET VARIABLE after hang-up");
        ch.set_variable("BIDBRIDGE_OUTCOME", "no buyer")
            .await
            .expect("set after hang-up");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "hangup USER_BUSY");
        assert!(report.commands.contains(&"EXEC Hangup 17".to_string()));
        assert_eq!(report.commands.iter().filter(|c| *c == "ANSWER").count(), 2);
        assert_eq!(
            report.variables.get("BIDBRIDGE_DONE").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            report
                .variables
                .get("BIDBRIDGE_OUTCOME")
                .map(String::as_str),
            Some("no buyer")
        );
    }

    #[tokio::test]
    async fn a_cancelled_operation_leaves_the_session_in_step() {
        // The trait promises that dropping an operation's future leaves the
        // channel usable for hangup and close: the next command must wait
        // for the abandoned one's reply instead of pipelining behind it.
        let text = "[run]\ntime_scale = 0.1\n[[callers]]\ndtmf = []";
        let (mut ch, fake) = start(Scenario::parse(text).expect("scenario")).await;
        ch.answer().await.expect("answer");
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            ch.play(&prompt("bidbridge/welcome")),
        )
        .await;
        assert!(cut.is_err(), "the 0.3 s prompt was still playing");
        ch.hangup(HangupCause::NormalClearing)
            .await
            .expect("hangup");
        let report = finish(ch, fake).await;
        assert_eq!(report.trace.ended, "hangup NORMAL_CLEARING");
        assert_eq!(
            report.commands,
            [
                "CHANNEL STATUS",
                "ANSWER",
                "STREAM FILE bidbridge/welcome \"\"",
                "EXEC Hangup 16"
            ]
        );
    }

    #[tokio::test]
    async fn transfer_and_failsafe_variables() {
        let (mut ch, fake) = start(scenario("[[callers]]\ndtmf = []")).await;
        let backup = DialTarget::Gateway {
            gateway: Token::new("carrier1").expect("t"),
            number: crate::phone::E164::parse_strict("+13125550999").expect("n"),
        };
        ch.arm_failsafe(Some(&backup), Duration::from_secs(30))
            .await
            .expect("arm");
        // Re-arming with the same backup sends nothing new.
        ch.arm_failsafe(Some(&backup), Duration::from_secs(30))
            .await
            .expect("re-arm");
        ch.disarm_failsafe().await.expect("disarm");
        let target = DialTarget::Extension {
            extension: Token::new("backup").expect("t"),
            context: Token::new("buyers").expect("t"),
        };
        ch.transfer(&target).await.expect("transfer");
        let report = finish(ch, fake).await;
        assert_eq!(
            report.variables.get("BIDBRIDGE_BACKUP").map(String::as_str),
            Some("PJSIP/+13125550999@carrier1")
        );
        assert_eq!(
            report
                .commands
                .iter()
                .filter(|c| c.starts_with("SET VARIABLE BIDBRIDGE_BACKUP"))
                .count(),
            1
        );
        assert_eq!(report.trace.ended, "transfer");
        assert_eq!(
            report.continue_at,
            (
                Some("buyers".to_string()),
                Some("backup".to_string()),
                Some("1".to_string())
            )
        );
    }

    #[tokio::test]
    async fn run_asterisk_places_concurrent_calls() {
        // A minimal daemon stand-in: each call answers, collects, bridges,
        // settles and hangs up through AgiChannel.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let (stream, _) = listener.accept().await.expect("accept");
                tasks.push(tokio::spawn(async move {
                    let mut ch = AgiChannel::establish(stream, AsteriskConfig::default())
                        .await
                        .expect("establish");
                    let flow = async {
                        ch.answer().await?;
                        ch.collect(&collect_req(1, 2)).await?;
                        ch.bridge(&sip("buyer-answer", 10)).await?;
                        Ok::<(), ChannelError>(())
                    };
                    let _ = flow.await;
                    let _ = ch.mark_settled().await;
                    let _ = ch.hangup(HangupCause::NormalClearing).await;
                    ch.close().await;
                }));
            }
            for t in tasks {
                t.await.expect("call task");
            }
        });
        let text = format!(
            "[run]\ncalls = 6\nrate_per_sec = 50.0\ntime_scale = 0.005\n\
             [[callers]]\ndtmf = [\"1\"]\n\
             [[callers]]\nhangup = {{ stage = \"ringing\", after_secs = 0.5 }}\n{LEGS}"
        );
        let scenario = Scenario::parse(&text).expect("scenario");
        let report = run_asterisk(addr, &scenario).await;
        server.await.expect("server");
        assert_eq!(report.calls, 6);
        assert_eq!(report.completed, 6, "{:#?}", report.traces);
        assert_eq!(report.failed, 0);
        for trace in &report.traces {
            let expected = if trace.index % 2 == 0 {
                "hangup NORMAL_CLEARING"
            } else {
                "caller hung up"
            };
            assert_eq!(trace.ended, expected, "{trace:?}");
        }
    }

    #[test]
    fn parse_args_reads_quotes_and_escapes() {
        assert_eq!(
            parse_args("SET VARIABLE X \"a b\""),
            ["SET", "VARIABLE", "X", "a b"]
        );
        assert_eq!(
            parse_args("STREAM FILE f \"\""),
            ["STREAM", "FILE", "f", ""]
        );
        assert_eq!(
            split_verb(&parse_args("get full variable \"${X}\"")).map(|(v, a)| (v, a.len())),
            Some(("GET FULL VARIABLE", 1))
        );
        assert!(split_verb(&parse_args("FOO BAR")).is_none());
    }

    #[test]
    fn preamble_has_the_recorded_shape() {
        let s = scenario("[[callers]]\ndtmf = []");
        let mut call = FakeCall::from_scenario(&s, 0);
        let lines = call.preamble_lines("127.0.0.1:4573".parse().expect("addr"));
        assert_eq!(lines.len(), 22);
        assert_eq!(lines[20], "agi_accountcode: ");
        call.args = vec!["pub=77".into()];
        call.script = "route?campaign=auto".into();
        let lines = call.preamble_lines("127.0.0.1:4573".parse().expect("addr"));
        assert_eq!(lines[22], "agi_arg_1: pub=77");
        assert_eq!(
            lines[2],
            "agi_request: agi://127.0.0.1:4573/route?campaign=auto"
        );
        let wire = lines.join("\n") + "\n\n";
        let (preamble, n) = crate::pbx::asterisk::codec::decode_preamble(wire.as_bytes())
            .expect("decodes")
            .expect("complete");
        assert_eq!(n, wire.len());
        assert_eq!(preamble.len(), 23);
    }
}
