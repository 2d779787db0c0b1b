//! The boundary between a phone switch and the call flow.
//!
//! [`CallChannel`] is everything the call flow may ask of a live call:
//! answer, play a prompt, collect digits, bridge to a buyer and learn what
//! happened, set a variable the dialplan can read, hang up, and notice the
//! caller leaving at any moment. Each switch has one thin adapter that turns
//! these into its wire protocol ([`freeswitch`]: outbound Event Socket;
//! [`asterisk`]: FastAGI). Nothing switch-specific may cross this boundary:
//! the flow in `crate::flow` is written once and drives both.
//!
//! What a channel must never do: block the flow on anything but the switch,
//! swallow a hang-up, or splice unvalidated text into a command.

pub mod asterisk;
pub mod freeswitch;
pub mod handback;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::catalog::dial::{DialTarget, PromptName};

/// Which switch a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PbxKind {
    Freeswitch,
    Asterisk,
}

impl PbxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxKind::Freeswitch => "freeswitch",
            PbxKind::Asterisk => "asterisk",
        }
    }
}

/// What the switch told us about the call when it handed it over.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub pbx: PbxKind,
    /// The switch's id for the caller's channel (FreeSWITCH `Unique-ID`,
    /// Asterisk `agi_uniqueid`).
    pub channel_id: String,
    /// Caller ID number exactly as the switch gave it (may be `anonymous`).
    pub caller_id_number: String,
    pub caller_id_name: String,
    /// The number the caller dialled (the tracking number), as given.
    pub dialed_number: String,
    /// Extra facts from the switch that later stages may use: selected
    /// channel variables, SIP headers (`sip_h_*`), AGI arguments (`key=value`).
    pub variables: BTreeMap<String, String>,
    /// Whether the channel was already answered when we got it.
    pub answered: bool,
}

/// One try at collecting digits: play `prompt`, then wait for up to
/// `max_digits` digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectRequest {
    pub prompt: PromptName,
    pub max_digits: u8,
    /// Time allowed after the prompt for the first digit (and, on switches
    /// that distinguish them, between digits).
    pub timeout: Duration,
    /// A key that ends the entry early (`#`).
    pub terminator: Option<char>,
}

/// What a collect try produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectOutcome {
    /// The caller entered these digits (terminator stripped). May be shorter
    /// than requested if the caller pressed the terminator.
    Digits(String),
    /// The timeout passed; `partial` holds whatever was typed before it.
    Timeout { partial: String },
    /// The prompt could not be played (missing file, codec trouble). An
    /// operator problem, never counted as the caller's silence.
    PromptFailed { detail: String },
}

/// What playing a prompt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayOutcome {
    Played,
    PromptFailed { detail: String },
}

/// A bridge attempt to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRequest {
    pub target: DialTarget,
    pub ring_timeout: Duration,
    /// Our call id, passed to the switch so its CDRs can be joined to ours.
    pub call_id: String,
    /// Caller ID presented to the buyer, when the operator wants it passed on.
    pub caller_id_number: Option<String>,
}

/// How one bridge attempt ended, as the switch reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegStatus {
    /// The buyer answered; the conversation has ended when the outcome is returned.
    Answered,
    /// Rang until the ring timeout.
    NoAnswer,
    Busy,
    /// The far end refused the call (403/603, CALL_REJECTED).
    Rejected,
    /// No route, gateway down, nothing listening.
    Unreachable,
    /// The caller hung up while the buyer's phone rang.
    CallerGone,
    /// Anything else the switch reported as a failure.
    Failed,
}

impl LegStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LegStatus::Answered => "answered",
            LegStatus::NoAnswer => "no_answer",
            LegStatus::Busy => "busy",
            LegStatus::Rejected => "rejected",
            LegStatus::Unreachable => "unreachable",
            LegStatus::CallerGone => "caller_gone",
            LegStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<LegStatus> {
        Some(match text {
            "answered" => LegStatus::Answered,
            "no_answer" => LegStatus::NoAnswer,
            "busy" => LegStatus::Busy,
            "rejected" => LegStatus::Rejected,
            "unreachable" => LegStatus::Unreachable,
            "caller_gone" => LegStatus::CallerGone,
            "failed" => LegStatus::Failed,
            _ => return None,
        })
    }
}

/// Who ended a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Caller,
    Buyer,
    /// bidbridge itself (e.g. the call had nowhere to go).
    Daemon,
    /// The switch (e.g. a media timeout) or unknown.
    Switch,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Buyer => "buyer",
            Party::Daemon => "daemon",
            Party::Switch => "switch",
        }
    }
}

/// The result of one bridge attempt. Times come from the switch's clock
/// where the switch reports them, because the switch is what bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOutcome {
    pub status: LegStatus,
    /// The switch's cause for the leg (Q.850 name such as `USER_BUSY`).
    pub cause: Option<String>,
    /// Protocol detail when the switch gives one (`sip:486`).
    pub detail: Option<String>,
    /// From the start of the attempt to answer or failure.
    pub ring_time: Duration,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Conversation length with the buyer (answer to hang-up of the buyer leg).
    pub talk_time: Option<Duration>,
    /// Who ended an answered conversation.
    pub ended_by: Option<Party>,
}

/// Q.850 hang-up causes bidbridge uses when it ends a call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HangupCause {
    NormalClearing,
    UserBusy,
    NoAnswer,
    CallRejected,
    NoRouteDestination,
    UnallocatedNumber,
    NormalTemporaryFailure,
    SwitchCongestion,
    OriginatorCancel,
}

impl HangupCause {
    /// The FreeSWITCH name (also what we store).
    pub fn name(self) -> &'static str {
        match self {
            HangupCause::NormalClearing => "NORMAL_CLEARING",
            HangupCause::UserBusy => "USER_BUSY",
            HangupCause::NoAnswer => "NO_ANSWER",
            HangupCause::CallRejected => "CALL_REJECTED",
            HangupCause::NoRouteDestination => "NO_ROUTE_DESTINATION",
            HangupCause::UnallocatedNumber => "UNALLOCATED_NUMBER",
            HangupCause::NormalTemporaryFailure => "NORMAL_TEMPORARY_FAILURE",
            HangupCause::SwitchCongestion => "SWITCH_CONGESTION",
            HangupCause::OriginatorCancel => "ORIGINATOR_CANCEL",
        }
    }

    /// The Q.850 code (what Asterisk's `Hangup()` takes).
    pub fn q850(self) -> u16 {
        match self {
            HangupCause::NormalClearing => 16,
            HangupCause::UserBusy => 17,
            HangupCause::NoAnswer => 19,
            HangupCause::CallRejected => 21,
            HangupCause::NoRouteDestination => 3,
            HangupCause::UnallocatedNumber => 1,
            HangupCause::NormalTemporaryFailure => 41,
            HangupCause::SwitchCongestion => 42,
            HangupCause::OriginatorCancel => 487,
        }
    }

    /// The cause to end a call with after its last bridge attempt failed
    /// with `status`: the caller should hear what really happened, not a
    /// generic NORMAL_CLEARING.
    pub fn after_failed_leg(status: LegStatus) -> HangupCause {
        match status {
            LegStatus::Busy => HangupCause::UserBusy,
            LegStatus::NoAnswer => HangupCause::NoAnswer,
            LegStatus::Rejected => HangupCause::CallRejected,
            LegStatus::Unreachable => HangupCause::NoRouteDestination,
            LegStatus::Failed => HangupCause::NormalTemporaryFailure,
            LegStatus::Answered | LegStatus::CallerGone => HangupCause::NormalClearing,
        }
    }
}

/// Errors a channel operation can end with. Callers branch on the
/// classifiers, not on the variants.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The caller hung up; the channel accepts no more call control.
    #[error("the caller hung up")]
    CallerGone,
    /// The control connection to the switch is gone.
    #[error("connection to the switch lost: {0}")]
    ConnectionLost(String),
    /// The switch refused a command.
    #[error("the switch refused {command}: {reply}")]
    Refused { command: String, reply: String },
    /// The switch said something we could not make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The switch did not finish an operation in the time it should have.
    #[error("the switch did not complete {0} in time")]
    Timeout(String),
    /// A value could not be put into a command safely.
    #[error("refused to send an unsafe value: {0}")]
    UnsafeValue(String),
}

impl ChannelError {
    /// The caller is gone or the channel can no longer be controlled: stop
    /// call control and go straight to settling.
    pub fn ends_call_control(&self) -> bool {
        matches!(
            self,
            ChannelError::CallerGone | ChannelError::ConnectionLost(_)
        )
    }

    pub fn is_caller_gone(&self) -> bool {
        matches!(self, ChannelError::CallerGone)
    }
}

/// A watch on the caller's presence that any task can hold and await.
#[derive(Debug, Clone)]
pub struct CallerPresence {
    rx: watch::Receiver<bool>,
}

/// The adapter's side of [`CallerPresence`].
#[derive(Debug)]
pub struct CallerPresenceSender {
    tx: watch::Sender<bool>,
}

pub fn caller_presence() -> (CallerPresenceSender, CallerPresence) {
    let (tx, rx) = watch::channel(false);
    (CallerPresenceSender { tx }, CallerPresence { rx })
}

impl CallerPresenceSender {
    /// Marks the caller as gone; idempotent.
    pub fn caller_left(&self) {
        self.tx.send_if_modified(|gone| {
            let changed = !*gone;
            *gone = true;
            changed
        });
    }

    pub fn is_gone(&self) -> bool {
        *self.tx.borrow()
    }
}

impl CallerPresence {
    pub fn is_gone(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the caller has hung up (at once if they already have).
    /// If the adapter is dropped without a hang-up, this never resolves: a
    /// dropped adapter is reported through the operation that failed.
    pub async fn gone(&mut self) {
        if self.rx.wait_for(|gone| *gone).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Everything the call flow may ask of a live call. See the module docs.
///
/// Every operation returns [`ChannelError::CallerGone`] as soon as the
/// caller hangs up, including while it waits on the switch, and every
/// operation is cancel-safe in the sense that dropping its future leaves the
/// channel usable for `hangup` and `close`.
pub trait CallChannel: Send {
    fn info(&self) -> &CallInfo;

    /// A handle that reports the caller hanging up, usable while no
    /// operation is in flight (e.g. during the auction).
    fn presence(&self) -> CallerPresence;

    fn answer(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    fn play(
        &mut self,
        prompt: &PromptName,
    ) -> impl Future<Output = Result<PlayOutcome, ChannelError>> + Send;

    fn collect(
        &mut self,
        request: &CollectRequest,
    ) -> impl Future<Output = Result<CollectOutcome, ChannelError>> + Send;

    /// Rings the destination and, if it answers, keeps the caller bridged to
    /// it until either side hangs up. Returns when the attempt is over. A
    /// failed attempt leaves the caller up and under our control.
    fn bridge(
        &mut self,
        request: &BridgeRequest,
    ) -> impl Future<Output = Result<BridgeOutcome, ChannelError>> + Send;

    /// Sets a channel variable the dialplan can read after we are done
    /// (name: letters, digits, `_`; value: one line of printable text).
    fn set_variable(
        &mut self,
        name: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Hands the call to a dialplan extension and gives up control of it.
    fn transfer(
        &mut self,
        target: &DialTarget,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;

    fn hangup(
        &mut self,
        cause: HangupCause,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Arms the switch-side safety net: if bidbridge stops responding, the
    /// switch itself connects the caller to `backup` (or the dialplan's own
    /// fallback when `None`) within `deadline`. Re-arming replaces the
    /// previous deadline.
    fn arm_failsafe(
        &mut self,
        backup: Option<&DialTarget>,
        deadline: Duration,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Cancels the deadline armed by [`arm_failsafe`](Self::arm_failsafe)
    /// (the call is bridged or settled and needs no rescue).
    fn disarm_failsafe(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Tells the dialplan that bidbridge finished this call on purpose, so its
    /// failover path must not dial the backup line.
    fn mark_settled(&mut self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Ends our control session (after hangup, or after a transfer) and
    /// releases the connection. Never fails: errors are logged.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Checks a channel variable name and value before an adapter puts them on
/// the wire. Shared so both adapters refuse the same things.
pub fn validate_variable(name: &str, value: &str) -> Result<(), ChannelError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        return Err(ChannelError::UnsafeValue(format!("variable name {name:?}")));
    }
    let value_ok = value.len() <= 1024
        && !value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\');
    if !value_ok {
        return Err(ChannelError::UnsafeValue(format!("value of {name}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_leg_causes_are_the_real_ones() {
        assert_eq!(
            HangupCause::after_failed_leg(LegStatus::Busy),
            HangupCause::UserBusy
        );
        assert_eq!(
            HangupCause::after_failed_leg(LegStatus::NoAnswer),
            HangupCause::NoAnswer
        );
        assert_eq!(
            HangupCause::after_failed_leg(LegStatus::Rejected).name(),
            "CALL_REJECTED"
        );
    }

    #[test]
    fn variables_are_validated() {
        assert!(validate_variable("bidbridge_done", "true").is_ok());
        assert!(validate_variable("bad name", "x").is_err());
        assert!(validate_variable("x", "line\nexecute-app-name: hangup").is_err());
        assert!(validate_variable("x", "quote\"").is_err());
    }

    #[tokio::test]
    async fn presence_reports_once_and_stays() {
        let (tx, mut rx) = caller_presence();
        assert!(!rx.is_gone());
        tx.caller_left();
        tx.caller_left();
        rx.gone().await;
        assert!(rx.is_gone());
    }
}
