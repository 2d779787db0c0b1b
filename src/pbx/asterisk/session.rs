//! One FastAGI session: the [`CallChannel`] of an Asterisk call.
//!
//! Asterisk connects to us from `AGI(agi://127.0.0.1:4573/route)`, writes
//! the `agi_*` preamble, then waits for commands. Each command gets exactly
//! one reply; `HANGUP` lines arrive on their own when the caller leaves
//! (and again when the session ends). See docs/asterisk.md and the
//! recordings in `shared/fixtures/agi` (README "Findings" N, cited as fN).
//!
//! What it owns: the socket, the one-command-at-a-time discipline, reading
//! replies, the caller's presence, and turning the AGI dialogue into the
//! shared [`CallChannel`] semantics.
//!
//! What it must never do:
//! - send a command while another is outstanding: Asterisk would cut the
//!   running prompt and the cut command would never be answered (f8,
//!   fixture 10), so replies could no longer be paired with commands;
//! - pair replies by counting: a reply goes to the one waiting command and
//!   an unexpected one is dropped and logged;
//! - send anything during `EXEC Dial` (Asterisk does not read the socket
//!   then, f8), or any keepalive;
//! - panic on what Asterisk sends: a codec error ends the session as lost;
//! - wait without bound, except for `EXEC Dial`, which lasts as long as the
//!   buyer conversation.
//!
//! A dedicated reader task owns the read half and always drains it, so a
//! `HANGUP` that arrives mid-command, unprompted or twice is seen at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

use super::codec::{self, Command, Inbound, Preamble, Reply};
use super::dial;
use crate::catalog::dial::{DialTarget, PromptName};
use crate::config::AsteriskConfig;
use crate::pbx::{
    BridgeOutcome, BridgeRequest, CallChannel, CallInfo, CallerPresence, CallerPresenceSender,
    ChannelError, CollectOutcome, CollectRequest, HangupCause, LegStatus, Party, PbxKind,
    PlayOutcome, caller_presence, validate_variable,
};

/// The whole preamble must arrive within this.
pub const PREAMBLE_LIMIT: Duration = Duration::from_secs(5);
/// Replies to commands that do not wait on the caller (variables, status).
const QUICK_LIMIT: Duration = Duration::from_secs(5);
/// Reading STIR/SHAKEN at session start delays the call: keep it short.
const STIR_LIMIT: Duration = Duration::from_millis(500);
/// ANSWER waits up to 500 ms for media (f7); generous bound.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);
/// Prompts and digit collection: bounded by their own length and timeout,
/// this only catches a switch that stopped answering.
const PROMPT_LIMIT: Duration = Duration::from_secs(600);
/// A write that does not complete in this time means Asterisk stopped
/// reading; the session cannot be trusted any more.
const WRITE_LIMIT: Duration = Duration::from_secs(5);
/// After the caller hangs up, how long the outstanding command's reply is
/// worth waiting for (Asterisk answers the interrupted command at once).
const AFTER_HANGUP_GRACE: Duration = Duration::from_secs(3);
/// `HANGUP` follows the interrupted command's reply by ~40 ms (f3); a
/// `-1` (or 511) without one within this is not a hang-up.
pub const HANGUP_LINE_GRACE: Duration = Duration::from_millis(200);
/// How long a new command waits for the reply of one whose operation was
/// cancelled (its future dropped) before giving up on the session.
const STALE_REPLY_LIMIT: Duration = Duration::from_secs(5);
/// How long `close` waits for Asterisk to close its side after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Shared variable the `[bidbridge-answered]` gosub stamps (f4, fixture 07).
pub const ANSWERED_STAMP: &str = "SHARED(BIDBRIDGE_ANSWERED_AT)";
/// The switch's clock, epoch seconds with milliseconds (fixture 07).
pub const CLOCK_EXPR: &str = "${STRFTIME(,,%s.%3q)}";
/// Set to 1 when bidbridge finished the call on purpose (finding 10).
pub const DONE_VARIABLE: &str = "BIDBRIDGE_DONE";
/// The backup dial string for the dialplan's guard.
pub const BACKUP_VARIABLE: &str = "BIDBRIDGE_BACKUP";

/// What the reader shares with the channel.
struct Shared {
    /// The one command waiting for its reply.
    waiting: Mutex<Option<oneshot::Sender<Reply>>>,
    /// True from sending a command until its reply is read, even when the
    /// operation that sent it was cancelled.
    outstanding: watch::Sender<bool>,
    presence: CallerPresenceSender,
    /// `HANGUP` lines seen.
    hangups: AtomicU32,
    /// Set when the connection ended or could no longer be decoded.
    lost: watch::Sender<Option<String>>,
}

impl Shared {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Option<oneshot::Sender<Reply>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }
}

/// The Asterisk side of one call.
pub struct AgiChannel {
    writer: OwnedWriteHalf,
    info: CallInfo,
    /// `agi_channel`, the caller's channel name (for `U()`).
    agi_channel: String,
    shared: Arc<Shared>,
    presence: CallerPresence,
    reader: tokio::task::JoinHandle<()>,
    settings: AsteriskConfig,
    /// A command's reply never came, or a write was cut: the session is out
    /// of step and only `close` remains.
    poisoned: Option<String>,
    /// A write was started and its future dropped before it finished.
    writing: bool,
    /// The backup dial string last given to the dialplan.
    backup_set: Option<String>,
}

impl std::fmt::Debug for AgiChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgiChannel")
            .field("info", &self.info)
            .field("agi_channel", &self.agi_channel)
            .finish_non_exhaustive()
    }
}

impl Drop for AgiChannel {
    /// A channel dropped without `close` (a failed set-up, a panicking
    /// caller) must not leave its reader running: the socket closes with it.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads the preamble (bounded in time and size). Returns it and any bytes
/// that followed it in the same reads.
async fn read_preamble(reader: &mut OwnedReadHalf) -> Result<(Preamble, Vec<u8>), ChannelError> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + PREAMBLE_LIMIT;
    let mut chunk = [0u8; 4096];
    loop {
        match codec::decode_preamble(&buf) {
            Ok(Some((preamble, used))) => {
                let rest = buf.split_off(used);
                return Ok((preamble, rest));
            }
            Ok(None) => {}
            Err(e) => return Err(ChannelError::Protocol(format!("AGI preamble: {e}"))),
        }
        let n = tokio::time::timeout_at(deadline, reader.read(&mut chunk))
            .await
            .map_err(|_| ChannelError::Timeout("the AGI preamble".into()))?
            .map_err(|e| ChannelError::ConnectionLost(e.to_string()))?;
        if n == 0 {
            return Err(ChannelError::ConnectionLost(
                "Asterisk closed the connection during the preamble".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Key/value pairs of `a=1&b=2` (percent-decoded; pairs without `=` or
/// with an empty key are skipped).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let k = percent_encoding::percent_decode_str(k)
            .decode_utf8_lossy()
            .to_string();
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .to_string();
        (!k.is_empty()).then_some((k, v))
    })
}

/// The call facts of a preamble, `answered` still unknown (false).
pub fn call_info(preamble: &Preamble) -> Result<CallInfo, ChannelError> {
    let channel_id = preamble.uniqueid().unwrap_or_default().to_string();
    if channel_id.is_empty() {
        return Err(ChannelError::Protocol(
            "AGI preamble carried no agi_uniqueid".into(),
        ));
    }
    // Asterisk writes `unknown` for an absent caller ID / DNID (f1).
    let known = |v: Option<&str>| {
        v.filter(|v| *v != "unknown")
            .unwrap_or_default()
            .to_string()
    };
    let dnid = preamble.dnid().unwrap_or_default();
    let dnid_is_number = {
        let digits = dnid.strip_prefix('+').unwrap_or(dnid);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let dialed_number = if dnid_is_number {
        dnid.to_string()
    } else {
        preamble.extension().unwrap_or_default().to_string()
    };
    let mut variables = std::collections::BTreeMap::new();
    // The URL query stays in agi_network_script (f1, fixture 06).
    if let Some((_, query)) = preamble.network_script().and_then(|s| s.split_once('?')) {
        variables.extend(query_pairs(query));
    }
    // AGI(url,key=value,...) arguments; later ones win over the query.
    for arg in preamble.args() {
        if let Some((k, v)) = arg.split_once('=')
            && !k.is_empty()
        {
            variables.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(channel) = preamble.channel() {
        variables.insert("agi_channel".to_string(), channel.to_string());
    }
    Ok(CallInfo {
        pbx: PbxKind::Asterisk,
        channel_id,
        caller_id_number: known(preamble.callerid()),
        caller_id_name: known(preamble.calleridname()),
        dialed_number,
        variables,
        answered: false,
    })
}

/// `1795238075.171` (STRFTIME `%s.%3q`) as a time.
pub fn parse_epoch(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || secs.len() > 12 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Utc.timestamp_opt(secs, nanos).single()
}

/// What the switch reported for one `EXEC Dial`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialReport {
    /// `DIALSTATUS` after Dial.
    pub dialstatus: String,
    /// `HANGUPCAUSE` after Dial: a hint only, it is the caller channel's
    /// field and sticky across attempts (f5).
    pub hangupcause: Option<String>,
    /// Switch clock before Dial.
    pub started_at: Option<DateTime<Utc>>,
    /// `SHARED(BIDBRIDGE_ANSWERED_AT)`, stamped by the `U()` gosub.
    pub answered_at: Option<DateTime<Utc>>,
    /// Switch clock after Dial returned.
    pub ended_at: Option<DateTime<Utc>>,
    /// A `HANGUP` line arrived during or right after the Dial.
    pub caller_hung_up: bool,
    /// Our own measure of the Dial, the fallback for ring time when the
    /// switch clock could not be read.
    pub local_elapsed: Duration,
}

fn span(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<Duration> {
    match (from, to) {
        (Some(f), Some(t)) if t >= f => (t - f).to_std().ok(),
        _ => None,
    }
}

impl DialReport {
    /// Decides on DIALSTATUS (never on HANGUPCAUSE, f5), with talk time from
    /// the U() stamp to the end of Dial (never ANSWEREDTIME, f4).
    pub fn outcome(&self) -> BridgeOutcome {
        let (status, cause) = match self.dialstatus.as_str() {
            "ANSWER" => (LegStatus::Answered, "NORMAL_CLEARING"),
            "NOANSWER" => (LegStatus::NoAnswer, "NO_ANSWER"),
            "BUSY" => (LegStatus::Busy, "USER_BUSY"),
            "CONGESTION" => (LegStatus::Unreachable, "SWITCH_CONGESTION"),
            "CHANUNAVAIL" => (LegStatus::Unreachable, "CHANUNAVAIL"),
            "CANCEL" => (LegStatus::CallerGone, "ORIGINATOR_CANCEL"),
            _ => (LegStatus::Failed, "DIALSTATUS_UNKNOWN"),
        };
        let mut detail = format!("dialstatus:{}", self.dialstatus);
        if let Some(hint) = self.hangupcause.as_deref().filter(|c| !c.is_empty()) {
            detail.push_str(&format!(" hangupcause:{hint}"));
        }
        let whole = span(self.started_at, self.ended_at).unwrap_or(self.local_elapsed);
        if status == LegStatus::Answered {
            let ring_time = span(self.started_at, self.answered_at).unwrap_or(whole);
            let talk_time = span(self.answered_at, self.ended_at);
            if talk_time.is_none() {
                detail.push_str(" no-answer-stamp");
            }
            BridgeOutcome {
                status,
                cause: Some(cause.to_string()),
                detail: Some(detail),
                ring_time,
                answered_at: self.answered_at,
                ended_at: self.ended_at,
                talk_time,
                ended_by: Some(if self.caller_hung_up {
                    Party::Caller
                } else {
                    Party::Buyer
                }),
            }
        } else {
            BridgeOutcome {
                status,
                cause: Some(cause.to_string()),
                detail: Some(detail),
                ring_time: whole,
                answered_at: None,
                ended_at: self.ended_at,
                talk_time: None,
                ended_by: None,
            }
        }
    }
}

impl AgiChannel {
    /// Reads the preamble of a freshly accepted FastAGI connection, starts
    /// the reader and asks whether the channel is answered.
    pub async fn establish(
        stream: TcpStream,
        settings: AsteriskConfig,
    ) -> Result<AgiChannel, ChannelError> {
        let _ = stream.set_nodelay(true);
        let (mut read_half, writer) = stream.into_split();
        let (preamble, leftover) = read_preamble(&mut read_half).await?;
        let info = call_info(&preamble)?;
        let agi_channel = preamble.channel().unwrap_or_default().to_string();

        let (presence_tx, presence) = caller_presence();
        let shared = Arc::new(Shared {
            waiting: Mutex::new(None),
            outstanding: watch::channel(false).0,
            presence: presence_tx,
            hangups: AtomicU32::new(0),
            lost: watch::channel(None).0,
        });
        let reader = tokio::spawn(read_loop(read_half, leftover, shared.clone()));
        let mut channel = AgiChannel {
            writer,
            info,
            agi_channel,
            shared,
            presence,
            reader,
            settings,
            poisoned: None,
            writing: false,
            backup_set: None,
        };
        match channel
            .command(&Command::ChannelStatus, Some(QUICK_LIMIT))
            .await
        {
            // 6 = AST_STATE_UP.
            Ok(reply) => channel.info.answered = reply.result_int() == Some(6),
            Err(e @ ChannelError::ConnectionLost(_)) | Err(e @ ChannelError::Timeout(_)) => {
                return Err(e);
            }
            // A 511 here: the caller left before we started; the flow finds out.
            Err(e) => tracing::debug!(error = %e, "CHANNEL STATUS at session start"),
        }
        if channel.settings.read_stir_shaken {
            channel.read_stir_shaken().await;
        }
        Ok(channel)
    }

    /// Best effort: copies the first STIR/SHAKEN result on the channel
    /// (res_stir_shaken's `STIR_SHAKEN()` function) into the call's
    /// variables, where `crate::attestation` reads it. At most three quick
    /// commands; any error leaves the call without attestation (`none`),
    /// never fails it.
    async fn read_stir_shaken(&mut self) {
        let mut read = async |expr: &str| -> Option<String> {
            match self
                .command(
                    &Command::GetFullVariable {
                        expr: expr.to_string(),
                    },
                    Some(STIR_LIMIT),
                )
                .await
            {
                Ok(reply) if reply.result_int() == Some(1) => {
                    reply.data().map(|d| d.trim().to_string())
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, expr, "reading STIR/SHAKEN from Asterisk");
                    None
                }
            }
        };
        let count = read("${STIR_SHAKEN(count)}")
            .await
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(0);
        if count == 0 {
            return;
        }
        let attestation = read("${STIR_SHAKEN(0,attestation)}").await;
        let verify = read("${STIR_SHAKEN(0,verify_result)}").await;
        if let Some(a) = attestation.filter(|a| !a.is_empty()) {
            self.info
                .variables
                .insert(crate::attestation::AST_ATTESTATION_VAR.into(), a);
        }
        if let Some(v) = verify.filter(|v| !v.is_empty()) {
            self.info
                .variables
                .insert(crate::attestation::AST_VERIFY_RESULT_VAR.into(), v);
        }
    }

    /// The channel name Asterisk gave (`agi_channel`).
    pub fn agi_channel(&self) -> &str {
        &self.agi_channel
    }

    fn hangups(&self) -> u32 {
        self.shared.hangups.load(Ordering::SeqCst)
    }

    fn lost(&self) -> ChannelError {
        if self.presence.is_gone() {
            return ChannelError::CallerGone;
        }
        ChannelError::ConnectionLost(
            self.shared
                .lost_reason()
                .or_else(|| self.poisoned.clone())
                .unwrap_or_else(|| "Asterisk closed the session".into()),
        )
    }

    fn check_alive(&self) -> Result<(), ChannelError> {
        if self.presence.is_gone() {
            return Err(ChannelError::CallerGone);
        }
        self.check_connected()
    }

    fn check_connected(&self) -> Result<(), ChannelError> {
        if let Some(why) = self.shared.lost_reason() {
            return Err(ChannelError::ConnectionLost(why));
        }
        if let Some(why) = &self.poisoned {
            return Err(ChannelError::ConnectionLost(why.clone()));
        }
        Ok(())
    }

    /// Sends one command and waits for its reply: the only place that
    /// writes to the socket. `limit: None` waits for ever (Dial only).
    async fn command(
        &mut self,
        cmd: &Command,
        limit: Option<Duration>,
    ) -> Result<Reply, ChannelError> {
        let verb = cmd.verb();
        let line = cmd
            .encode()
            .map_err(|e| ChannelError::UnsafeValue(format!("{verb}: {e}")))?;
        self.check_connected()?;
        if self.writing {
            self.poisoned = Some("a command line was cut off mid-write".into());
            return Err(self.lost());
        }
        // A cancelled operation may have left its command outstanding: wait
        // for that reply first, so there is never more than one in flight.
        let mut outstanding = self.shared.outstanding.subscribe();
        let mut lost = self.shared.lost.subscribe();
        if *outstanding.borrow() {
            tokio::select! {
                done = tokio::time::timeout(STALE_REPLY_LIMIT, outstanding.wait_for(|o| !*o)) => {
                    if !matches!(done, Ok(Ok(_))) {
                        self.poisoned = Some("a cancelled command's reply never came".into());
                        return Err(ChannelError::Timeout(verb.to_string()));
                    }
                }
                _ = lost.wait_for(|l| l.is_some()) => return Err(self.lost()),
            }
        }
        let (tx, mut rx) = oneshot::channel();
        *self.shared.lock_waiting() = Some(tx);
        self.shared.outstanding.send_replace(true);
        tracing::trace!(line = line.trim_end(), "AGI command");
        self.writing = true;
        let written =
            tokio::time::timeout(WRITE_LIMIT, self.writer.write_all(line.as_bytes())).await;
        self.writing = false;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.poisoned = Some(format!("write failed: {e}"));
                return Err(ChannelError::ConnectionLost(e.to_string()));
            }
            Err(_) => {
                self.poisoned = Some("Asterisk stopped reading".into());
                return Err(ChannelError::Timeout(verb.to_string()));
            }
        }
        let mut presence = self.presence.clone();
        let mut deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let mut gone_seen = false;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                reply = &mut rx => {
                    return reply.map_err(|_| self.lost());
                }
                _ = presence.gone(), if !gone_seen => {
                    // The interrupted command is answered at once; wait a
                    // little for it so the session stays in step.
                    gone_seen = true;
                    let grace = tokio::time::Instant::now() + AFTER_HANGUP_GRACE;
                    deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                }
                _ = sleep => {
                    self.poisoned = Some(format!("no reply to {verb}"));
                    return Err(if self.presence.is_gone() {
                        ChannelError::CallerGone
                    } else {
                        ChannelError::Timeout(verb.to_string())
                    });
                }
            }
        }
    }

    /// Waits briefly for a `HANGUP` line; true if the caller is gone.
    async fn hangup_follows(&self) -> bool {
        let mut presence = self.presence.clone();
        tokio::time::timeout(HANGUP_LINE_GRACE, presence.gone())
            .await
            .is_ok()
    }

    /// The error for a non-200 reply.
    async fn refusal(&self, verb: &str, reply: Reply) -> ChannelError {
        match reply {
            Reply::DeadChannel { text } => {
                if self.presence.is_gone() || self.hangup_follows().await {
                    ChannelError::CallerGone
                } else {
                    ChannelError::Refused {
                        command: verb.to_string(),
                        reply: format!("511 {text}"),
                    }
                }
            }
            Reply::InvalidCommand { text } => ChannelError::Refused {
                command: verb.to_string(),
                reply: format!("510 {text}"),
            },
            Reply::Usage { lines } => ChannelError::Refused {
                command: verb.to_string(),
                reply: format!("520 {}", lines.join(" ")),
            },
            Reply::Success { .. } => ChannelError::Protocol(format!("{verb}: unexpected success")),
        }
    }

    /// A command whose only meaningful reply is a 200.
    async fn simple(&mut self, cmd: &Command, limit: Duration) -> Result<Reply, ChannelError> {
        let reply = self.command(cmd, Some(limit)).await?;
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(self.refusal(cmd.verb(), reply).await)
        }
    }

    async fn get_variable(&mut self, name: &str) -> Result<Option<String>, ChannelError> {
        let reply = self
            .simple(
                &Command::GetVariable {
                    name: name.to_string(),
                },
                QUICK_LIMIT,
            )
            .await?;
        // `200 result=0`: not set; `200 result=1 (value)`.
        Ok(match reply.result_int() {
            Some(1) => Some(reply.data().unwrap_or_default().to_string()),
            _ => None,
        })
    }

    async fn switch_clock(&mut self) -> Result<Option<DateTime<Utc>>, ChannelError> {
        let reply = self
            .simple(
                &Command::GetFullVariable {
                    expr: CLOCK_EXPR.to_string(),
                },
                QUICK_LIMIT,
            )
            .await?;
        Ok(reply.data().and_then(parse_epoch))
    }

    async fn set_raw(&mut self, name: &str, value: &str) -> Result<(), ChannelError> {
        self.simple(
            &Command::SetVariable {
                name: name.to_string(),
                value: value.to_string(),
            },
            QUICK_LIMIT,
        )
        .await
        .map(drop)
    }

    /// Reads what Asterisk reported about the Dial that just returned.
    async fn dial_report(
        &mut self,
        started_at: Option<DateTime<Utc>>,
        result: Option<i64>,
        hangups_before: u32,
        local_elapsed: Duration,
    ) -> Result<DialReport, ChannelError> {
        // The clock first: the end of the conversation is now.
        let ended_at = self.switch_clock().await?;
        // -1 is both "answered buyer hung up" and "caller gone" (f6); only
        // the HANGUP line (~40 ms later) tells them apart.
        if result == Some(-1) && self.hangups() == hangups_before {
            self.hangup_follows().await;
        }
        let dialstatus = self.get_variable("DIALSTATUS").await?.unwrap_or_default();
        let answered_at = self
            .get_variable(ANSWERED_STAMP)
            .await?
            .as_deref()
            .and_then(parse_epoch);
        let hangupcause = self.get_variable("HANGUPCAUSE").await?;
        Ok(DialReport {
            dialstatus,
            hangupcause,
            started_at,
            answered_at,
            ended_at,
            caller_hung_up: self.hangups() > hangups_before || self.presence.is_gone(),
            local_elapsed,
        })
    }
}

impl CallChannel for AgiChannel {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    fn presence(&self) -> CallerPresence {
        self.presence.clone()
    }

    async fn answer(&mut self) -> Result<(), ChannelError> {
        self.check_alive()?;
        let reply = self.simple(&Command::Answer, ANSWER_LIMIT).await?;
        if reply.result_int() == Some(0) {
            self.info.answered = true;
            Ok(())
        } else if self.presence.is_gone() || self.hangup_follows().await {
            Err(ChannelError::CallerGone)
        } else {
            Err(ChannelError::Refused {
                command: "ANSWER".into(),
                reply: format!("result={}", reply.result_str().unwrap_or_default()),
            })
        }
    }

    async fn play(&mut self, prompt: &PromptName) -> Result<PlayOutcome, ChannelError> {
        self.check_alive()?;
        let cmd = Command::StreamFile {
            file: prompt.as_str().to_string(),
            escape_digits: String::new(),
        };
        let reply = self.simple(&cmd, PROMPT_LIMIT).await?;
        match reply.result_int() {
            Some(r) if r >= 0 => Ok(PlayOutcome::Played),
            _ => {
                // -1: the caller left (HANGUP follows, fixture 02a) or the
                // file could not be played (endpos=0, no HANGUP, fixture 09).
                if self.presence.is_gone() || self.hangup_follows().await {
                    return Err(ChannelError::CallerGone);
                }
                let endpos = match &reply {
                    Reply::Success { endpos, .. } => *endpos,
                    _ => None,
                };
                Ok(PlayOutcome::PromptFailed {
                    detail: format!(
                        "STREAM FILE {prompt}: result={} endpos={}",
                        reply.result_str().unwrap_or_default(),
                        endpos.map(|e| e.to_string()).unwrap_or_default()
                    ),
                })
            }
        }
    }

    async fn collect(&mut self, request: &CollectRequest) -> Result<CollectOutcome, ChannelError> {
        self.check_alive()?;
        // GET DATA always ends an entry on `#` and strips it (fixture 09);
        // another terminator cannot be asked for.
        if let Some(t) = request.terminator.filter(|t| *t != '#') {
            tracing::debug!(terminator = %t, "GET DATA only knows # as a terminator");
        }
        let timeout_ms = (request.timeout.as_millis() as u64).clamp(1, codec::MAX_TIMEOUT_MS);
        let cmd = Command::GetData {
            file: request.prompt.as_str().to_string(),
            timeout_ms,
            max_digits: u32::from(request.max_digits.max(1)),
        };
        let reply = self.simple(&cmd, PROMPT_LIMIT).await?;
        let Reply::Success {
            result, timeout, ..
        } = &reply
        else {
            return Err(ChannelError::Protocol("GET DATA: not a 200 reply".into()));
        };
        if result == "-1" {
            if self.presence.is_gone() || self.hangup_follows().await {
                return Err(ChannelError::CallerGone);
            }
            return Ok(CollectOutcome::PromptFailed {
                detail: format!("GET DATA {}: result=-1", request.prompt),
            });
        }
        if !result
            .chars()
            .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
        {
            return Err(ChannelError::Protocol(format!(
                "GET DATA: result {:?} is not DTMF",
                result.chars().take(40).collect::<String>()
            )));
        }
        let digits = result.trim_end_matches('#').to_string();
        if *timeout || digits.is_empty() {
            Ok(CollectOutcome::Timeout { partial: digits })
        } else {
            Ok(CollectOutcome::Digits(digits))
        }
    }

    async fn bridge(&mut self, request: &BridgeRequest) -> Result<BridgeOutcome, ChannelError> {
        self.check_alive()?;
        let unsafe_value = |e: dial::DialStringError| ChannelError::UnsafeValue(e.to_string());
        let dial_string =
            dial::dial_string(&request.target, &self.settings).map_err(unsafe_value)?;
        let arg = dial::dial_arg(
            &dial_string,
            request.ring_timeout,
            &self.settings.answered_context,
            &self.agi_channel,
        )
        .map_err(unsafe_value)?;
        // A stamp left by an earlier answered attempt must not be read as
        // this one's answer.
        self.set_raw(ANSWERED_STAMP, "").await?;
        let started_at = self.switch_clock().await?;
        let hangups_before = self.hangups();
        let sent = Instant::now();
        // Dial lasts as long as the conversation: no limit of ours, and
        // nothing is sent until it returns (Asterisk is not reading).
        let reply = self
            .command(
                &Command::Exec {
                    app: "Dial".into(),
                    args: arg,
                },
                None,
            )
            .await?;
        let local_elapsed = sent.elapsed();
        if !reply.is_success() {
            return Err(self.refusal("EXEC Dial", reply).await);
        }
        let result = reply.result_int();
        if result == Some(-2) {
            return Err(ChannelError::Refused {
                command: "EXEC Dial".into(),
                reply: "result=-2 (Dial application not loaded)".into(),
            });
        }
        let report = self
            .dial_report(started_at, result, hangups_before, local_elapsed)
            .await?;
        let outcome = report.outcome();
        if outcome.status == LegStatus::Answered && outcome.talk_time.is_none() {
            tracing::warn!(
                context = %self.settings.answered_context,
                "buyer answered but no answer stamp was set: is the U() context from extensions_bidbridge.conf installed? talk time unknown"
            );
        }
        Ok(outcome)
    }

    async fn set_variable(&mut self, name: &str, value: &str) -> Result<(), ChannelError> {
        self.check_connected()?;
        validate_variable(name, value)?;
        self.set_raw(name, value).await
    }

    async fn transfer(&mut self, target: &DialTarget) -> Result<(), ChannelError> {
        self.check_alive()?;
        let DialTarget::Extension { extension, context } = target else {
            return Err(ChannelError::UnsafeValue(
                "transfer needs a dialplan extension".into(),
            ));
        };
        // The dialplan continues there once we close the session.
        self.simple(
            &Command::SetContext {
                context: context.as_str().to_string(),
            },
            QUICK_LIMIT,
        )
        .await?;
        self.simple(
            &Command::SetExtension {
                extension: extension.as_str().to_string(),
            },
            QUICK_LIMIT,
        )
        .await?;
        self.simple(&Command::SetPriority { priority: 1 }, QUICK_LIMIT)
            .await?;
        Ok(())
    }

    async fn hangup(&mut self, cause: HangupCause) -> Result<(), ChannelError> {
        if self.presence.is_gone() {
            return Ok(());
        }
        self.check_connected()?;
        // Hangup(<q850>) sets the cause the caller's network sees; the AGI
        // HANGUP command cannot carry one.
        let cmd = Command::Exec {
            app: "Hangup".into(),
            args: cause.q850().to_string(),
        };
        match self.simple(&cmd, QUICK_LIMIT).await {
            Ok(_) | Err(ChannelError::CallerGone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Asterisk has no switch-side timer we can arm over AGI; the guard in
    /// extensions_bidbridge.conf dials `BIDBRIDGE_BACKUP` when the session
    /// ends without `BIDBRIDGE_DONE=1` (daemon death), so only the backup
    /// line is handed over here. `deadline` cannot be honoured.
    async fn arm_failsafe(
        &mut self,
        backup: Option<&DialTarget>,
        _deadline: Duration,
    ) -> Result<(), ChannelError> {
        self.check_alive()?;
        let value = match backup {
            Some(target) => dial::dial_string(target, &self.settings)
                .map_err(|e| ChannelError::UnsafeValue(e.to_string()))?,
            // Empty: the dialplan falls back to its static backup.
            None => String::new(),
        };
        if self.backup_set.as_deref() == Some(value.as_str())
            || (self.backup_set.is_none() && value.is_empty())
        {
            return Ok(());
        }
        self.set_raw(BACKUP_VARIABLE, &value).await?;
        self.backup_set = Some(value);
        Ok(())
    }

    async fn disarm_failsafe(&mut self) -> Result<(), ChannelError> {
        // Nothing is armed on the switch (see arm_failsafe).
        Ok(())
    }

    async fn mark_settled(&mut self) -> Result<(), ChannelError> {
        // SET VARIABLE works on a hung-up channel too (f3), and the guard
        // reads it in the `h`-less continuation after AGI().
        self.check_connected()?;
        self.set_raw(DONE_VARIABLE, "1").await
    }

    async fn close(mut self) {
        // Asterisk does not close on hang-up (f3): we end the session by
        // closing our side; it answers with HANGUP and closes (fixture 06).
        if let Err(e) = tokio::time::timeout(WRITE_LIMIT, self.writer.shutdown()).await {
            tracing::debug!(error = %e, "shutting down the AGI socket");
        }
        let mut lost = self.shared.lost.subscribe();
        let _ = tokio::time::timeout(CLOSE_GRACE, lost.wait_for(|l| l.is_some())).await;
        self.reader.abort();
    }
}

/// Reads every item Asterisk sends until the connection ends; never panics.
async fn read_loop(mut read_half: OwnedReadHalf, mut buf: Vec<u8>, shared: Arc<Shared>) {
    let mut chunk = vec![0u8; 8192];
    let why = 'session: loop {
        loop {
            match codec::decode_inbound(&buf) {
                Ok(Some((item, used))) => {
                    buf.drain(..used.min(buf.len()));
                    match item {
                        Inbound::Hangup => {
                            shared.hangups.fetch_add(1, Ordering::SeqCst);
                            shared.presence.caller_left();
                        }
                        Inbound::Reply(reply) => {
                            let waiter = shared.lock_waiting().take();
                            shared.outstanding.send_replace(false);
                            match waiter {
                                Some(tx) => {
                                    // The operation may have been cancelled: fine.
                                    let _ = tx.send(reply);
                                }
                                None => {
                                    tracing::warn!(
                                        ?reply,
                                        "AGI reply with no command waiting; dropped"
                                    );
                                }
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => break 'session format!("undecodable data from Asterisk: {e}"),
            }
        }
        match read_half.read(&mut chunk).await {
            Ok(0) => break 'session "Asterisk closed the session".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break 'session format!("reading from Asterisk: {e}"),
        }
    };
    tracing::debug!(why, "AGI reader ended");
    shared.lost.send_replace(Some(why));
    // Wake the waiting command (its sender is dropped).
    shared.lock_waiting().take();
    shared.outstanding.send_replace(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    fn preamble(pairs: &[(&str, &str)]) -> Preamble {
        pairs.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn call_info_from_a_preamble() {
        let p = preamble(&[
            ("network_script", "route?campaign=auto&src=web%20form"),
            ("channel", "PJSIP/carrier-0000001a"),
            ("uniqueid", "1795238021.1"),
            ("callerid", "unknown"),
            ("calleridname", "unknown"),
            ("dnid", "+18005550100"),
            ("extension", "s"),
            ("arg_1", "pub=77"),
            ("arg_2", "zip=60601"),
            ("arg_3", "no-equals-sign"),
            ("arg_4", "campaign=manual"),
        ]);
        let info = call_info(&p).expect("info");
        assert_eq!(info.pbx, PbxKind::Asterisk);
        assert_eq!(info.caller_id_number, "");
        assert_eq!(info.caller_id_name, "");
        assert_eq!(info.dialed_number, "+18005550100");
        let v = |k: &str| info.variables.get(k).map(String::as_str);
        assert_eq!(
            v("campaign"),
            Some("manual"),
            "arguments win over the query"
        );
        assert_eq!(v("src"), Some("web form"));
        assert_eq!(v("pub"), Some("77"));
        assert_eq!(v("zip"), Some("60601"));
        assert_eq!(v("agi_channel"), Some("PJSIP/carrier-0000001a"));
        assert_eq!(info.variables.len(), 5);

        // DNID not a number: the extension.
        let p = preamble(&[
            ("uniqueid", "1.2"),
            ("dnid", "unknown"),
            ("extension", "8005550100"),
        ]);
        assert_eq!(call_info(&p).expect("info").dialed_number, "8005550100");
        assert!(call_info(&preamble(&[("dnid", "1")])).is_err());
    }

    #[test]
    fn epoch_parsing() {
        let t = parse_epoch("1795238075.171").expect("time");
        assert_eq!(t.timestamp(), 1_795_238_075);
        assert_eq!(t.timestamp_subsec_millis(), 171);
        assert_eq!(
            parse_epoch("1795238075").map(|t| t.timestamp()),
            Some(1_795_238_075)
        );
        for bad in [
            "",
            "-1.0",
            "abc",
            "1.2.3",
            ".5",
            "99999999999999.0",
            "1.1234567890",
        ] {
            assert!(parse_epoch(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn dial_report_decides_on_dialstatus() {
        let at = |s: &str| parse_epoch(s);
        let base = DialReport {
            started_at: at("1795238075.170"),
            ended_at: at("1795238076.674"),
            local_elapsed: Duration::from_millis(1500),
            ..Default::default()
        };
        for (status, leg) in [
            ("NOANSWER", LegStatus::NoAnswer),
            ("BUSY", LegStatus::Busy),
            ("CONGESTION", LegStatus::Unreachable),
            ("CHANUNAVAIL", LegStatus::Unreachable),
            ("CANCEL", LegStatus::CallerGone),
            ("TORTURE", LegStatus::Failed),
            ("", LegStatus::Failed),
        ] {
            let o = DialReport {
                dialstatus: status.into(),
                // A stale cause must not change the verdict (f5).
                hangupcause: Some("21".into()),
                ..base.clone()
            }
            .outcome();
            assert_eq!(o.status, leg, "{status}");
            assert_eq!(o.talk_time, None);
            assert_eq!(o.ring_time, Duration::from_millis(1504));
        }
        let o = DialReport {
            dialstatus: "ANSWER".into(),
            answered_at: at("1795238075.171"),
            ..base.clone()
        }
        .outcome();
        assert_eq!(o.status, LegStatus::Answered);
        assert_eq!(o.talk_time, Some(Duration::from_millis(1503)));
        assert_eq!(o.ring_time, Duration::from_millis(1));
        assert_eq!(o.ended_by, Some(Party::Buyer));
        let o = DialReport {
            dialstatus: "ANSWER".into(),
            caller_hung_up: true,
            ..base
        }
        .outcome();
        assert_eq!(o.ended_by, Some(Party::Caller));
        assert_eq!(o.talk_time, None, "no stamp, no invented talk time");
    }

    #[tokio::test]
    async fn stir_shaken_is_read_at_session_start_when_enabled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(GOOD_PREAMBLE).await.expect("preamble");
            let mut buf = [0u8; 1024];
            let mut lines = Vec::new();
            for reply in [
                &b"200 result=6\n"[..],
                b"200 result=1 (1)\n",
                b"200 result=1 (B)\n",
                b"200 result=1 (Verification passed)\n",
            ] {
                let n = s.read(&mut buf).await.expect("read");
                lines.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(reply).await.expect("write");
            }
            let _ = s.read(&mut buf).await;
            lines
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let settings = AsteriskConfig {
            read_stir_shaken: true,
            ..AsteriskConfig::default()
        };
        let ch = AgiChannel::establish(stream, settings)
            .await
            .expect("establish");
        assert_eq!(
            crate::attestation::from_variables(&ch.info().variables, false),
            crate::attestation::Attestation::B
        );
        drop(ch);
        let lines = peer.await.expect("peer");
        assert_eq!(
            lines,
            [
                "CHANNEL STATUS\n",
                "GET FULL VARIABLE \"${STIR_SHAKEN(count)}\"\n",
                "GET FULL VARIABLE \"${STIR_SHAKEN(0,attestation)}\"\n",
                "GET FULL VARIABLE \"${STIR_SHAKEN(0,verify_result)}\"\n",
            ]
        );
    }

    #[tokio::test]
    async fn an_unexpected_reply_is_dropped_not_paired() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(GOOD_PREAMBLE).await.expect("preamble");
            let mut buf = [0u8; 1024];
            let mut lines = Vec::new();
            // CHANNEL STATUS, answered together with a reply nobody asked for.
            let n = s.read(&mut buf).await.expect("read");
            lines.push(String::from_utf8_lossy(&buf[..n]).to_string());
            s.write_all(b"200 result=6\n200 result=1 (stale)\n")
                .await
                .expect("write");
            let n = s.read(&mut buf).await.expect("read");
            lines.push(String::from_utf8_lossy(&buf[..n]).to_string());
            s.write_all(b"200 result=1 (fresh)\n").await.expect("write");
            let _ = s.read(&mut buf).await;
            lines
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let mut ch = AgiChannel::establish(stream, AsteriskConfig::default())
            .await
            .expect("establish");
        assert!(ch.info().answered);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ch.get_variable("X").await.expect("get"),
            Some("fresh".to_string())
        );
        ch.close().await;
        assert_eq!(
            peer.await.expect("peer"),
            ["CHANNEL STATUS\n", "GET VARIABLE X\n"]
        );
    }

    const GOOD_PREAMBLE: &[u8] = b"agi_network: yes\nagi_channel: PJSIP/a-1\nagi_uniqueid: 1.1\nagi_callerid: 3125550123\nagi_dnid: 8005550100\n\n";

    /// Feeds `bytes` from a fake Asterisk, then runs a few operations: all
    /// must end (no hang, no panic), whatever the bytes were.
    async fn survive(head: Vec<u8>, bytes: Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let _ = s.write_all(&head).await;
            let _ = s.write_all(&bytes).await;
            // Drain whatever the adapter sends, then close.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), async {
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let run = async {
            if let Ok(mut ch) = AgiChannel::establish(stream, AsteriskConfig::default()).await {
                let _ = ch.answer().await;
                let _ = ch.play(&PromptName::new("x").expect("p")).await;
                let _ = ch.mark_settled().await;
                ch.close().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("every operation ended");
        peer.await.expect("peer");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn reader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            runtime().block_on(survive(GOOD_PREAMBLE.to_vec(), bytes));
        }

        #[test]
        fn reader_survives_reply_shaped_noise(lines in proptest::collection::vec(
            "200 result=[-0-9]{0,4}( \\([ -~]{0,10}\\))?|HANGUP|511 x|520-x|[ -~]{0,20}", 0..12)) {
            let wire = lines.join("\n") + "\n";
            runtime().block_on(survive(GOOD_PREAMBLE.to_vec(), wire.into_bytes()));
        }

        #[test]
        fn preamble_reader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            runtime().block_on(survive(Vec::new(), bytes));
        }
    }
}
