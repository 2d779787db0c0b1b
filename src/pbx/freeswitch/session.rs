//! One outbound Event Socket session: the [`CallChannel`] of a FreeSWITCH call.
//!
//! FreeSWITCH connects to us (`socket 127.0.0.1:8084 async full`); we send
//! `connect` and read the channel's data, subscribe to this channel's events
//! (`myevents`), ask the switch to `linger` so the closing events reach us,
//! and `resume` so that if this session dies the dialplan continues to its
//! failover action instead of hanging up the caller.
//!
//! Every application runs as `sendmsg` `execute` with an `Event-UUID`; in
//! async mode the `+OK` only means "queued", and the result is the
//! CHANNEL_EXECUTE_COMPLETE whose `Application-UUID` equals that id. A
//! dedicated task (the pump) reads every event the switch sends, always,
//! so the switch's event queue for this socket never backs up; it hands
//! completions to the waiting operation, keeps the bridge timestamps, and
//! flips the caller's presence on CHANNEL_HANGUP.
//!
//! Wire quirks this relies on are listed in docs/freeswitch.md with the
//! recordings that show them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use freeswitch_esl_tokio::{EslClient, EslEvent, EslEventStream, EventFormat};
use tokio::sync::{oneshot, watch};

use super::wire::{self, BridgeReport};
use crate::catalog::dial::{DialTarget, PromptName};
use crate::config::{FreeswitchConfig, SessionEventFormat};
use crate::pbx::{
    BridgeOutcome, BridgeRequest, CallChannel, CallInfo, CallerPresence, CallerPresenceSender,
    ChannelError, CollectOutcome, CollectRequest, HangupCause, PbxKind, PlayOutcome,
    caller_presence, validate_variable,
};

/// How long an application may take before we stop waiting (prompts and
/// collects; a bridge is bounded by the caller and buyer, not by us).
const APP_LIMIT: Duration = Duration::from_secs(600);
/// After the caller hangs up, how long a bridge's EXECUTE_COMPLETE (which
/// carries ORIGINATOR_CANCEL) is worth waiting for.
const AFTER_HANGUP_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for the switch to close the socket after `exit`.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Events `myevents` subscribes to (or a newer switch may add) that the
/// session does without. Each is a full channel dump (6-12 KB, 150-280
/// url-encoded headers) that the ESL reader would otherwise parse into a map
/// (most of a call's CPU in the daemon); `nixevent` stops them in the
/// switch. Kept: CHANNEL_EXECUTE, CHANNEL_EXECUTE_COMPLETE, CHANNEL_BRIDGE
/// and CHANNEL_HANGUP (see [`pump`]). Two of the nixed ones carry facts the
/// kept ones also carry: CHANNEL_UNBRIDGE's time is the bridge's
/// EXECUTE_COMPLETE time (the same microsecond in the recordings), and
/// CHANNEL_HANGUP_COMPLETE repeats CHANNEL_HANGUP's cause with the CDR
/// variables appended. The pump still reads both when a switch sends them.
/// FreeSWITCH skips names it does not know, so the list is safe on any 1.x.
const UNUSED_EVENTS: &str = "CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_CREATE CHANNEL_DATA \
CHANNEL_DESTROY CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK \
CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_STATE CHANNEL_CALLSTATE CALL_UPDATE \
CHANNEL_UNBRIDGE CHANNEL_HANGUP_COMPLETE \
DETECTED_SPEECH DTMF TALK NOTALK PLAYBACK_START PLAYBACK_STOP RECORD_START RECORD_STOP \
MEDIA_BUG_START MEDIA_BUG_STOP";

/// A finished application.
#[derive(Debug)]
struct Completion {
    event: EslEvent,
    started_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct PendingApp {
    started_at: Option<DateTime<Utc>>,
    done: Option<oneshot::Sender<Completion>>,
}

#[derive(Default)]
struct BridgeTrack {
    bridged_at: Option<DateTime<Utc>>,
    unbridged_at: Option<DateTime<Utc>>,
}

/// What the pump shares with the channel.
struct Shared {
    pending: Mutex<HashMap<String, PendingApp>>,
    bridge: Mutex<BridgeTrack>,
    hangup: Mutex<Option<(String, Option<DateTime<Utc>>)>>,
    presence: CallerPresenceSender,
    /// Flips when the connection to the switch is gone.
    disconnected: watch::Sender<bool>,
    /// A `sched_transfer` failsafe is pending on the switch.
    failsafe_armed: std::sync::atomic::AtomicBool,
    /// For the pump's own commands (cancelling the failsafe on bridge).
    client: EslClient,
    channel_id: String,
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingApp>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    fn lock_bridge(&self) -> std::sync::MutexGuard<'_, BridgeTrack> {
        self.bridge
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    fn hangup_info(&self) -> Option<(String, Option<DateTime<Utc>>)> {
        self.hangup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

pub struct FsChannel {
    client: EslClient,
    info: CallInfo,
    shared: Arc<Shared>,
    presence: CallerPresence,
    pump: tokio::task::JoinHandle<()>,
    settings: FreeswitchConfig,
    bridge_vars_set: bool,
    /// The `bidbridge_backup_dial` value the switch holds.
    backup_dial_set: Option<String>,
    collected_before: bool,
}

/// Channel variables worth carrying into [`CallInfo::variables`]: SIP
/// headers (`sip_h_*`), our own (`bidbridge_*`) and a few SIP facts
/// (request user, STIR/SHAKEN verification).
fn keep_variable(name: &str) -> bool {
    name.starts_with("sip_h_")
        || name.starts_with("bidbridge_")
        || matches!(
            name,
            "sip_req_user"
                | "sip_from_user"
                | "sip_to_user"
                | "sip_call_id"
                | "sip_verstat"
                | "sip_from_display"
        )
        || name.starts_with("sip_P-Asserted-Identity")
        || name.starts_with("sip_identity")
}

impl FsChannel {
    /// Runs the session set-up on a freshly accepted connection.
    pub async fn establish(
        client: EslClient,
        events: EslEventStream,
        settings: FreeswitchConfig,
    ) -> Result<FsChannel, ChannelError> {
        // In async mode every reply is immediate; 5 s is generous.
        client.set_command_timeout(Duration::from_secs(5));
        let data = client
            .connect_session()
            .await
            .map_err(|e| ChannelError::ConnectionLost(e.to_string()))?;
        let header = |name: &str| data.header(name).unwrap_or_default().to_string();
        let channel_id = header("Unique-ID");
        if channel_id.is_empty() {
            return Err(ChannelError::Protocol(
                "connect reply carried no Unique-ID".into(),
            ));
        }
        let variables = data
            .headers()
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("variable_").map(|name| (name, v)))
            .filter(|(name, _)| keep_variable(name))
            .map(|(name, v)| (name.to_string(), v.clone()))
            .collect();
        let info = CallInfo {
            pbx: PbxKind::Freeswitch,
            channel_id,
            caller_id_number: header("Caller-Caller-ID-Number"),
            caller_id_name: header("Caller-Caller-ID-Name"),
            dialed_number: header("Caller-Destination-Number"),
            variables,
            answered: header("Answer-State") == "answered",
        };

        let (presence_tx, presence) = caller_presence();
        let (disconnected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            bridge: Mutex::new(BridgeTrack::default()),
            hangup: Mutex::new(None),
            presence: presence_tx,
            disconnected,
            failsafe_armed: std::sync::atomic::AtomicBool::new(false),
            client: client.clone(),
            channel_id: info.channel_id.clone(),
        });
        let pump = tokio::spawn(pump(events, shared.clone()));

        let lost = |e: freeswitch_esl_tokio::EslError| ChannelError::ConnectionLost(e.to_string());
        let format = match settings.event_format {
            SessionEventFormat::Json => EventFormat::Json,
            SessionEventFormat::Plain => EventFormat::Plain,
        };
        client.myevents(format).await.map_err(lost)?;
        // Only a saving: a switch that refuses it still works, just slower.
        if let Err(e) = client.nixevent_raw(UNUSED_EVENTS).await {
            if e.is_connection_error() {
                return Err(lost(e));
            }
            tracing::debug!(error = %e, "the switch refused nixevent");
        }
        client.linger(None).await.map_err(lost)?;
        client.resume().await.map_err(lost)?;

        Ok(FsChannel {
            client,
            info,
            shared,
            presence,
            pump,
            settings,
            bridge_vars_set: false,
            backup_dial_set: None,
            collected_before: false,
        })
    }

    /// Queues an application and returns the receiver of its completion.
    async fn execute(
        &self,
        app: &str,
        arg: Option<&str>,
    ) -> Result<oneshot::Receiver<Completion>, ChannelError> {
        if *self.shared.disconnected.borrow() {
            return Err(ChannelError::ConnectionLost(
                "the switch closed the session".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.shared.lock_pending().insert(
            id.clone(),
            PendingApp {
                started_at: None,
                done: Some(tx),
            },
        );
        let mut event = EslEvent::new();
        event.set_header("call-command", "execute");
        event.set_header("execute-app-name", app);
        if let Some(arg) = arg {
            event.set_header("execute-app-arg", arg);
        }
        event.set_header("Event-UUID", id.as_str());
        let reply = self.client.sendmsg(None, event).await.map_err(|e| {
            self.shared.lock_pending().remove(&id);
            if e.is_connection_error() {
                ChannelError::ConnectionLost(e.to_string())
            } else {
                ChannelError::Protocol(e.to_string())
            }
        })?;
        if !reply.is_success() {
            self.shared.lock_pending().remove(&id);
            return Err(ChannelError::Refused {
                command: app.to_string(),
                reply: reply.reply_text().unwrap_or_default().to_string(),
            });
        }
        Ok(rx)
    }

    /// Waits for an application's completion; the caller leaving ends the
    /// wait at once (or after a grace for results worth having).
    async fn wait(
        &self,
        what: &str,
        rx: oneshot::Receiver<Completion>,
        limit: Duration,
        grace_after_hangup: Option<Duration>,
    ) -> Result<Completion, ChannelError> {
        let mut presence = self.presence.clone();
        let mut rx = rx;
        tokio::select! {
            done = &mut rx => return done.map_err(|_| self.lost()),
            _ = presence.gone() => {}
            _ = tokio::time::sleep(limit) => return Err(ChannelError::Timeout(what.to_string())),
        }
        match grace_after_hangup {
            Some(grace) => match tokio::time::timeout(grace, rx).await {
                Ok(Ok(done)) => Ok(done),
                _ => Err(ChannelError::CallerGone),
            },
            None => Err(ChannelError::CallerGone),
        }
    }

    fn lost(&self) -> ChannelError {
        if self.presence.is_gone() {
            ChannelError::CallerGone
        } else {
            ChannelError::ConnectionLost("the switch closed the session".into())
        }
    }

    fn check_alive(&self) -> Result<(), ChannelError> {
        if self.presence.is_gone() {
            return Err(ChannelError::CallerGone);
        }
        if *self.shared.disconnected.borrow() {
            return Err(ChannelError::ConnectionLost(
                "the switch closed the session".into(),
            ));
        }
        Ok(())
    }

    /// Sets a channel variable before the next application runs.
    ///
    /// `api uuid_setvar` sets it at once, outside the application queue,
    /// and costs one short `api/response`. The `set` application would cost
    /// a CHANNEL_EXECUTE and a CHANNEL_EXECUTE_COMPLETE, each a full dump of
    /// the channel (6-8 KB, ~150 headers) for the reader to parse: with four
    /// or five variables per call, most of the events a call used to bring.
    /// The api splits its arguments FreeSWITCH's way (switch_separate_string:
    /// quotes are removed, blanks around the value trimmed), so a value that
    /// would not survive that takes the `set` application instead; the flow
    /// waits for nothing either way, and the switch runs queued applications
    /// in order, so the next one sees the value.
    async fn set_variable_now(&self, name: &str, value: &str) -> Result<(), ChannelError> {
        validate_variable(name, value)?;
        if !wire::survives_api_arguments(value) {
            let rx = self
                .execute("set", Some(&format!("{name}={value}")))
                .await?;
            drop(rx);
            return Ok(());
        }
        let command = format!("uuid_setvar {} {name} {value}", self.info.channel_id);
        self.api_ok(&command).await
    }

    /// Removes a channel variable at once (`uuid_setvar` without a value).
    async fn unset_variable_now(&self, name: &str) -> Result<(), ChannelError> {
        validate_variable(name, "")?;
        let command = format!("uuid_setvar {} {name}", self.info.channel_id);
        self.api_ok(&command).await
    }

    /// An `api` command whose reply must be `+OK`.
    async fn api_ok(&self, command: &str) -> Result<(), ChannelError> {
        let reply = self.api(command).await?;
        if reply.starts_with("+OK") {
            return Ok(());
        }
        if self.presence.is_gone() {
            return Err(ChannelError::CallerGone);
        }
        Err(ChannelError::Refused {
            command: command.split(' ').next().unwrap_or_default().to_string(),
            reply,
        })
    }

    /// An `api` command on this socket (runs at once, outside the channel's
    /// application queue).
    async fn api(&self, command: &str) -> Result<String, ChannelError> {
        let reply = self
            .client
            .api(command)
            .await
            .map_err(|e| ChannelError::ConnectionLost(e.to_string()))?;
        Ok(reply.body().unwrap_or_default().trim().to_string())
    }
}

impl CallChannel for FsChannel {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    fn presence(&self) -> CallerPresence {
        self.presence.clone()
    }

    async fn answer(&mut self) -> Result<(), ChannelError> {
        self.check_alive()?;
        let rx = self.execute("answer", None).await?;
        self.wait("answer", rx, Duration::from_secs(30), None)
            .await?;
        self.info.answered = true;
        Ok(())
    }

    async fn play(&mut self, prompt: &PromptName) -> Result<PlayOutcome, ChannelError> {
        self.check_alive()?;
        let path = wire::prompt_path(prompt, &self.settings);
        let rx = self.execute("playback", Some(&path)).await?;
        let done = self.wait("playback", rx, APP_LIMIT, None).await?;
        match done.event.header_str("Application-Response") {
            Some("FILE PLAYED") => Ok(PlayOutcome::Played),
            // PLAYBACK ERROR also ends a prompt the caller hung up on (02).
            other if self.presence.is_gone() => {
                tracing::debug!(response = ?other, "playback ended by hang-up");
                Err(ChannelError::CallerGone)
            }
            other => Ok(PlayOutcome::PromptFailed {
                detail: format!("playback {path}: {}", other.unwrap_or("no response")),
            }),
        }
    }

    async fn collect(&mut self, request: &CollectRequest) -> Result<CollectOutcome, ChannelError> {
        self.check_alive()?;
        if self.collected_before {
            // read_result is sticky across collects; clear it so a prompt
            // that fails to play cannot be mistaken for the last one's result.
            self.unset_variable_now("read_result").await?;
            self.unset_variable_now(wire::DIGITS_VARIABLE).await?;
        }
        self.collected_before = true;
        let path = wire::prompt_path(&request.prompt, &self.settings);
        let arg = wire::collect_arg(
            &path,
            request.max_digits,
            request.timeout,
            request.terminator,
        );
        let rx = self.execute("play_and_get_digits", Some(&arg)).await?;
        let done = self
            .wait("play_and_get_digits", rx, APP_LIMIT, None)
            .await?;
        let digits = done
            .event
            .variable_str(wire::DIGITS_VARIABLE)
            .unwrap_or_default()
            .to_string();
        match done.event.variable_str("read_result") {
            Some("success") if !digits.is_empty() => Ok(CollectOutcome::Digits(digits)),
            Some("success") | Some("timeout") => Ok(CollectOutcome::Timeout { partial: digits }),
            _ if self.presence.is_gone() => Err(ChannelError::CallerGone),
            other => Ok(CollectOutcome::PromptFailed {
                detail: format!(
                    "play_and_get_digits {path}: read_result {}",
                    other.unwrap_or("missing")
                ),
            }),
        }
    }

    async fn bridge(&mut self, request: &BridgeRequest) -> Result<BridgeOutcome, ChannelError> {
        self.check_alive()?;
        if !self.bridge_vars_set {
            // Control must come back to us after a failed or finished leg.
            self.set_variable_now("continue_on_fail", "true").await?;
            self.set_variable_now("hangup_after_bridge", "false")
                .await?;
            self.bridge_vars_set = true;
        }
        if let Some(number) = &request.caller_id_number
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'+')
        {
            self.set_variable_now("effective_caller_id_number", number)
                .await?;
        }
        *self.shared.lock_bridge() = BridgeTrack::default();
        let hangup_before = self.shared.hangup_info().is_some();
        let sent_at = Utc::now();
        let arg = wire::bridge_arg(
            &request.target,
            request.ring_timeout,
            &request.call_id,
            &self.settings,
        );
        let rx = self.execute("bridge", Some(&arg)).await?;
        // A bridge lasts as long as the conversation: no limit of ours.
        let done = self
            .wait(
                "bridge",
                rx,
                Duration::from_secs(24 * 3600),
                Some(AFTER_HANGUP_GRACE),
            )
            .await;
        let track = std::mem::take(&mut *self.shared.lock_bridge());
        let hangup = self.shared.hangup_info().filter(|_| !hangup_before);
        let mut report = BridgeReport {
            sent_at: Some(sent_at),
            bridged_at: track.bridged_at,
            unbridged_at: track.unbridged_at,
            caller_hangup_at: hangup.as_ref().map(|(_, at)| at.unwrap_or_else(Utc::now)),
            ..Default::default()
        };
        match done {
            Ok(done) => {
                let var = |name: &str| done.event.variable_str(name).map(str::to_string);
                report.disposition = var("originate_disposition");
                report.dialstatus = var("DIALSTATUS");
                report.last_bridge_hangup_cause = var("last_bridge_hangup_cause");
                report.bridge_hangup_cause = var("bridge_hangup_cause");
                report.proto_cause = var("last_bridge_proto_specific_hangup_cause");
                report.started_at = done.started_at;
                report.completed_at =
                    wire::event_time(done.event.header_str("Event-Date-Timestamp"));
            }
            // The caller left and the switch never reported the bridge's end:
            // still an attempt to record.
            Err(ChannelError::CallerGone) => {
                report.disposition = Some("ORIGINATOR_CANCEL".into());
            }
            Err(e) => return Err(e),
        }
        Ok(report.outcome())
    }

    async fn set_variable(&mut self, name: &str, value: &str) -> Result<(), ChannelError> {
        self.check_alive()?;
        self.set_variable_now(name, value).await
    }

    async fn transfer(&mut self, target: &DialTarget) -> Result<(), ChannelError> {
        self.check_alive()?;
        let DialTarget::Extension { extension, context } = target else {
            return Err(ChannelError::UnsafeValue(
                "transfer needs a dialplan extension".into(),
            ));
        };
        let rx = self
            .execute("transfer", Some(&format!("{extension} XML {context}")))
            .await?;
        drop(rx);
        Ok(())
    }

    async fn hangup(&mut self, cause: HangupCause) -> Result<(), ChannelError> {
        if self.presence.is_gone() {
            return Ok(());
        }
        // The form the recordings use: a hangup call-command, not an app.
        let mut event = EslEvent::new();
        event.set_header("call-command", "hangup");
        event.set_header("hangup-cause", cause.name());
        let reply = self
            .client
            .sendmsg(None, event)
            .await
            .map_err(|e| ChannelError::ConnectionLost(e.to_string()))?;
        if !reply.is_success() && !self.presence.is_gone() {
            return Err(ChannelError::Refused {
                command: "hangup".into(),
                reply: reply.reply_text().unwrap_or_default().to_string(),
            });
        }
        Ok(())
    }

    async fn arm_failsafe(
        &mut self,
        backup: Option<&DialTarget>,
        deadline: Duration,
    ) -> Result<(), ChannelError> {
        self.check_alive()?;
        if let Some(backup) = backup {
            let endpoint = wire::endpoint(backup, &self.settings);
            // Every attempt re-arms; the backup line rarely changes between them.
            if self.backup_dial_set.as_deref() != Some(endpoint.as_str()) {
                self.set_variable_now("bidbridge_backup_dial", &endpoint)
                    .await?;
                self.backup_dial_set = Some(endpoint);
            }
        }
        if self.shared.failsafe_armed.swap(false, Ordering::SeqCst) {
            self.api(&format!("sched_del {}", self.info.channel_id))
                .await?;
        }
        // Runs in the switch's scheduler: if we stop responding, the caller is
        // transferred to the failover extension, which dials the backup line.
        let reply = self
            .api(&format!(
                "sched_transfer +{} {} {} XML {}",
                deadline.as_secs().max(1),
                self.info.channel_id,
                self.settings.failover_extension,
                self.settings.failover_context
            ))
            .await?;
        if reply.starts_with("-ERR") {
            tracing::warn!(reply, "the switch refused the failsafe sched_transfer");
        }
        self.shared.failsafe_armed.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn disarm_failsafe(&mut self) -> Result<(), ChannelError> {
        if !self.shared.failsafe_armed.swap(false, Ordering::SeqCst)
            || *self.shared.disconnected.borrow()
        {
            return Ok(());
        }
        self.api(&format!("sched_del {}", self.info.channel_id))
            .await?;
        Ok(())
    }

    async fn mark_settled(&mut self) -> Result<(), ChannelError> {
        if self.presence.is_gone() || *self.shared.disconnected.borrow() {
            return Ok(());
        }
        self.set_variable_now("bidbridge_done", "true").await
    }

    async fn close(self) {
        // Everything the record needs has arrived by now (the bridge waits for
        // its own completion, even after a hang-up); linger only kept the
        // socket open for it. Say goodbye so the switch releases the socket.
        if !*self.shared.disconnected.borrow()
            && let Err(e) = self.client.exit().await
        {
            tracing::debug!(error = %e, "exit on a closing session");
        }
        let mut disconnected = self.shared.disconnected.subscribe();
        let _ = tokio::time::timeout(CLOSE_GRACE, disconnected.wait_for(|d| *d)).await;
        let _ = self.client.disconnect().await;
        self.pump.abort();
    }
}

/// Reads every event of the session until the connection ends.
async fn pump(mut events: EslEventStream, shared: Arc<Shared>) {
    while let Some(item) = events.recv().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!(error = %e, "event stream error");
                if e.is_connection_error() {
                    break;
                }
                continue;
            }
        };
        let at = wire::event_time(event.header_str("Event-Date-Timestamp"));
        match event.header_str("Event-Name") {
            Some("CHANNEL_EXECUTE") => {
                if let Some(id) = event.header_str("Application-UUID")
                    && let Some(pending) = shared.lock_pending().get_mut(id)
                {
                    pending.started_at = at;
                }
            }
            Some("CHANNEL_EXECUTE_COMPLETE") => {
                let Some(id) = event.header_str("Application-UUID").map(str::to_string) else {
                    continue;
                };
                let pending = shared.lock_pending().remove(&id);
                if let Some(PendingApp {
                    started_at,
                    done: Some(done),
                }) = pending
                {
                    let _ = done.send(Completion { event, started_at });
                }
            }
            Some("CHANNEL_BRIDGE") => {
                shared.lock_bridge().bridged_at = at;
                // The caller is with a buyer: the failsafe must not fire during
                // the conversation. The flow is inside `bridge` now, so the
                // pump cancels it itself.
                if shared.failsafe_armed.swap(false, Ordering::SeqCst) {
                    let client = shared.client.clone();
                    let command = format!("sched_del {}", shared.channel_id);
                    tokio::spawn(async move {
                        if let Err(e) = client.api(&command).await {
                            tracing::warn!(error = %e, "could not cancel the failsafe after the bridge formed");
                        }
                    });
                }
            }
            // Nixed (the bridge's completion time stands in), read if sent.
            Some("CHANNEL_UNBRIDGE") => shared.lock_bridge().unbridged_at = at,
            Some("CHANNEL_HANGUP") => {
                let cause = event
                    .header_str("Hangup-Cause")
                    .unwrap_or("NORMAL_CLEARING")
                    .to_string();
                *shared.hangup.lock().unwrap_or_else(|p| p.into_inner()) = Some((cause, at));
                shared.presence.caller_left();
            }
            // Nixed, but a switch that refused the nixevent still sends it.
            Some("CHANNEL_HANGUP_COMPLETE") => {
                if shared.hangup_info().is_none() {
                    let cause = event
                        .header_str("Hangup-Cause")
                        .unwrap_or("NORMAL_CLEARING")
                        .to_string();
                    *shared.hangup.lock().unwrap_or_else(|p| p.into_inner()) = Some((cause, at));
                }
                shared.presence.caller_left();
            }
            _ => {}
        }
    }
    // The switch closed the socket: wake everything that waits on it.
    shared.disconnected.send_replace(true);
    shared.lock_pending().clear();
}
