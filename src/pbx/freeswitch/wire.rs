//! FreeSWITCH wire values: dial strings, prompt paths, application
//! arguments, and the reading of a bridge's result. Pure functions, so every
//! rule here is unit-tested against values taken from real recordings
//! (`../shared/fixtures/esl/`).
//!
//! Nothing built here ever contains text that was not validated first:
//! [`DialTarget`] and [`PromptName`] only hold safe characters, and the
//! numbers we add are formatted by us.

use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

use crate::catalog::dial::{DialTarget, PromptName};
use crate::config::FreeswitchConfig;
use crate::pbx::{BridgeOutcome, LegStatus, Party};

/// The endpoint part of a bridge dial string.
pub fn endpoint(target: &DialTarget, settings: &FreeswitchConfig) -> String {
    match target {
        DialTarget::Gateway { gateway, number } => format!("sofia/gateway/{gateway}/{number}"),
        DialTarget::Sip(uri) => format!("sofia/{}/{}", settings.sip_profile, uri.as_str()),
        DialTarget::Extension { extension, context } => format!("loopback/{extension}/{context}"),
    }
}

/// The `bridge` application argument: per-leg variables, then the endpoint.
/// `originate_timeout` is the ring timeout (FreeSWITCH counts whole seconds);
/// `bidbridge_call_id` lets the switch's CDR of the buyer leg be joined to
/// our record.
pub fn bridge_arg(
    target: &DialTarget,
    ring_timeout: Duration,
    call_id: &str,
    settings: &FreeswitchConfig,
) -> String {
    let secs = ring_timeout.as_secs().max(1);
    // call_id is a UUID we generated: hex digits and dashes only.
    let call_id: String = call_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    format!(
        "{{originate_timeout={secs},bidbridge_call_id={call_id}}}{}",
        endpoint(target, settings)
    )
}

/// Whether `value` reaches a channel variable unchanged as the last argument
/// of an `api uuid_setvar`: FreeSWITCH splits api arguments with
/// `switch_separate_string`, which removes quote characters and trims blanks
/// around each argument, and `switch_channel_set_variable` refuses a value
/// holding `${`. (Backslashes and double quotes are already refused by
/// `validate_variable`.)
pub fn survives_api_arguments(value: &str) -> bool {
    !value.is_empty() && value.trim() == value && !value.contains('\'') && !value.contains("${")
}

/// The file a prompt plays: `<prompts_dir>/<name>.<ext>`.
pub fn prompt_path(prompt: &PromptName, settings: &FreeswitchConfig) -> String {
    format!(
        "{}/{}.{}",
        settings.prompts_dir.trim_end_matches('/'),
        prompt.as_str(),
        settings.prompt_extension
    )
}

/// The variable `play_and_get_digits` stores digits in (the name the
/// recordings use, so replays read the real switch's results unaltered).
pub const DIGITS_VARIABLE: &str = "ivr_choice";

/// `play_and_get_digits` arguments for one try: `min max tries timeout
/// terminators file invalid_file var_name regexp digit_timeout`. One try
/// only; retries and invalid-entry prompts are the call flow's, so both
/// switches behave the same. The regexp accepts any keys, so the switch
/// never judges an entry itself.
pub fn collect_arg(
    prompt: &str,
    max_digits: u8,
    timeout: Duration,
    terminator: Option<char>,
) -> String {
    let timeout_ms = timeout.as_millis().max(1);
    let terminators = match terminator {
        Some(t @ ('#' | '*')) => t.to_string(),
        _ => "none".to_string(),
    };
    // Between digits the caller gets the same time as for the first one,
    // capped so a fixed-length entry does not stall on a forgotten key.
    let digit_timeout = timeout_ms.min(5_000);
    format!(
        "1 {max} 1 {timeout_ms} {terminators} {prompt} silence_stream://250 {DIGITS_VARIABLE} ^[0-9*#]+$ {digit_timeout}",
        max = max_digits.max(1)
    )
}

/// `Event-Date-Timestamp` (microseconds since the epoch) as a time.
pub fn event_time(micros: Option<&str>) -> Option<DateTime<Utc>> {
    let micros: i64 = micros?.trim().parse().ok()?;
    Utc.timestamp_micros(micros).single()
}

/// What the switch reported for one bridge attempt, gathered from the
/// bridge's own events.
#[derive(Debug, Clone, Default)]
pub struct BridgeReport {
    /// `variable_originate_disposition` of the bridge's EXECUTE_COMPLETE.
    pub disposition: Option<String>,
    pub dialstatus: Option<String>,
    pub last_bridge_hangup_cause: Option<String>,
    pub bridge_hangup_cause: Option<String>,
    pub proto_cause: Option<String>,
    /// CHANNEL_EXECUTE of the bridge (the attempt started ringing).
    pub started_at: Option<DateTime<Utc>>,
    /// CHANNEL_BRIDGE (the buyer answered).
    pub bridged_at: Option<DateTime<Utc>>,
    /// CHANNEL_UNBRIDGE (the conversation ended), when the switch sends it;
    /// the session nixes it, and `completed_at` (the same instant: the
    /// bridge application returns as the bridge ends) stands in.
    pub unbridged_at: Option<DateTime<Utc>>,
    /// EXECUTE_COMPLETE of the bridge.
    pub completed_at: Option<DateTime<Utc>>,
    /// The caller's CHANNEL_HANGUP, if it came during this attempt.
    pub caller_hangup_at: Option<DateTime<Utc>>,
    /// When we sent the command, by our clock: the fallback for ring time
    /// if the switch's events lack timestamps.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Classifies an `originate_disposition` / hang-up cause name.
pub fn leg_status(cause: &str) -> LegStatus {
    match cause {
        "SUCCESS" | "NORMAL_CLEARING" => LegStatus::Answered,
        "NO_ANSWER" | "ALLOTTED_TIMEOUT" | "PROGRESS_TIMEOUT" => LegStatus::NoAnswer,
        "USER_BUSY" => LegStatus::Busy,
        "CALL_REJECTED"
        | "INCOMPATIBLE_DESTINATION"
        | "OUTGOING_CALL_BARRED"
        | "BEARERCAPABILITY_NOTAUTH" => LegStatus::Rejected,
        "ORIGINATOR_CANCEL" | "LOSE_RACE" => LegStatus::CallerGone,
        "NO_ROUTE_DESTINATION"
        | "UNALLOCATED_NUMBER"
        | "NORMAL_TEMPORARY_FAILURE"
        | "DESTINATION_OUT_OF_ORDER"
        | "NETWORK_OUT_OF_ORDER"
        | "GATEWAY_DOWN"
        | "INVALID_GATEWAY"
        | "RECOVERY_ON_TIMER_EXPIRE"
        | "NO_USER_RESPONSE"
        | "SUBSCRIBER_ABSENT"
        | "USER_NOT_REGISTERED"
        | "INVALID_NUMBER_FORMAT"
        | "NO_ROUTE_TRANSIT_NET"
        | "EXCHANGE_ROUTING_ERROR"
        | "CHAN_NOT_IMPLEMENTED"
        | "MEDIA_TIMEOUT" => LegStatus::Unreachable,
        _ => LegStatus::Failed,
    }
}

impl BridgeReport {
    /// Turns the raw report into an outcome. The current attempt's result is
    /// `originate_disposition` (sticky variables such as
    /// `originate_failed_cause` describe earlier attempts) and the
    /// CHANNEL_BRIDGE event, which only a successful attempt produces.
    pub fn outcome(&self) -> BridgeOutcome {
        let answered = self.bridged_at.is_some();
        let start = self.started_at.or(self.sent_at);
        let status = if answered {
            LegStatus::Answered
        } else if self.caller_hangup_at.is_some()
            && self.disposition.as_deref() != Some("USER_BUSY")
        {
            LegStatus::CallerGone
        } else {
            match self.disposition.as_deref() {
                // A SUCCESS without CHANNEL_BRIDGE: the leg answered but the
                // bridge never formed (e.g. media failure). Not a sale.
                Some("SUCCESS") | None => LegStatus::Failed,
                Some(cause) => leg_status(cause),
            }
        };
        let cause = if answered {
            self.bridge_hangup_cause
                .clone()
                .or_else(|| self.last_bridge_hangup_cause.clone())
        } else {
            self.disposition
                .clone()
                .filter(|d| d != "SUCCESS")
                .or_else(|| self.last_bridge_hangup_cause.clone())
        };
        let ring_end = if answered {
            self.bridged_at
        } else {
            self.completed_at.or(self.caller_hangup_at)
        };
        let ring_time = match (start, ring_end) {
            (Some(s), Some(e)) if e >= s => (e - s).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let (ended_at, talk_time, ended_by) = if let Some(bridged) = self.bridged_at {
            // The conversation ends at UNBRIDGE; if the caller's hang-up came
            // first (or instead), that is the end and the caller ended it.
            let (end, by) = match (self.unbridged_at, self.caller_hangup_at) {
                (Some(u), Some(h)) if h <= u => (Some(h), Party::Caller),
                (Some(u), _) => (Some(u), Party::Buyer),
                (None, Some(h)) => (Some(h), Party::Caller),
                (None, None) => (self.completed_at, Party::Buyer),
            };
            let talk = end.map(|e| (e - bridged).to_std().unwrap_or_default());
            (end, talk, Some(by))
        } else {
            (self.completed_at.or(self.caller_hangup_at), None, None)
        };
        BridgeOutcome {
            status,
            cause,
            detail: self.proto_cause.clone(),
            ring_time,
            answered_at: self.bridged_at,
            ended_at,
            talk_time,
            ended_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dial::DialTarget;

    fn settings() -> FreeswitchConfig {
        FreeswitchConfig {
            sip_profile: "harness".into(),
            prompts_dir: "/opt/freeswitch/share/sounds/prompts".into(),
            ..FreeswitchConfig::default()
        }
    }

    #[test]
    fn only_values_the_api_splitter_keeps_go_through_uuid_setvar() {
        for plain in [
            "true",
            "+13125550199",
            "sofia/harness/sip:backup@127.0.0.1:5090;transport=tcp",
            "sold buyer=answer price=12.50",
        ] {
            assert!(survives_api_arguments(plain), "{plain}");
        }
        for mangled in ["", " padded", "padded ", "o'brien", "${caller_id_number}"] {
            assert!(!survives_api_arguments(mangled), "{mangled:?}");
        }
    }

    #[test]
    fn dial_strings_match_what_the_switch_accepted() {
        let s = settings();
        let sip = DialTarget::from_parts(
            None,
            None,
            Some("sip:buyer-busy@127.0.0.1:5091"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            endpoint(&sip, &s),
            "sofia/harness/sip:buyer-busy@127.0.0.1:5091"
        );
        let ext = DialTarget::from_parts(None, None, None, Some("buyer_noanswer"), Some("default"))
            .unwrap();
        assert_eq!(endpoint(&ext, &s), "loopback/buyer_noanswer/default");
        let gw = DialTarget::from_parts(Some("+13125550100"), Some("carrier1"), None, None, None)
            .unwrap();
        assert_eq!(endpoint(&gw, &s), "sofia/gateway/carrier1/+13125550100");
        assert_eq!(
            bridge_arg(
                &ext,
                Duration::from_secs(3),
                "9da20c82-649c-449c-a03c-b060e5ce69db",
                &s
            ),
            "{originate_timeout=3,bidbridge_call_id=9da20c82-649c-449c-a03c-b060e5ce69db}loopback/buyer_noanswer/default"
        );
    }

    #[test]
    fn prompt_paths() {
        let p = PromptName::new("welcome").unwrap();
        assert_eq!(
            prompt_path(&p, &settings()),
            "/opt/freeswitch/share/sounds/prompts/welcome.wav"
        );
        assert_eq!(
            collect_arg("/x/welcome.wav", 1, Duration::from_secs(5), Some('#')),
            "1 1 1 5000 # /x/welcome.wav silence_stream://250 ivr_choice ^[0-9*#]+$ 5000"
        );
    }

    fn at(micros: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(micros).single()
    }

    #[test]
    fn recorded_outcomes_classify() {
        // 01: NO_ANSWER after ~2 s of ringing.
        let no_answer = BridgeReport {
            disposition: Some("NO_ANSWER".into()),
            started_at: at(1_795_237_503_960_000),
            completed_at: at(1_795_237_506_005_012),
            ..Default::default()
        }
        .outcome();
        assert_eq!(no_answer.status, LegStatus::NoAnswer);
        assert_eq!(no_answer.cause.as_deref(), Some("NO_ANSWER"));
        assert!(no_answer.ring_time > Duration::from_secs(2));

        // 01: busy.
        let busy = BridgeReport {
            disposition: Some("USER_BUSY".into()),
            ..Default::default()
        }
        .outcome();
        assert_eq!(busy.status, LegStatus::Busy);

        // 01: answered, buyer hung up after ~5 s.
        let answered = BridgeReport {
            disposition: Some("SUCCESS".into()),
            bridge_hangup_cause: Some("NORMAL_CLEARING".into()),
            started_at: at(1_795_237_506_025_000),
            bridged_at: at(1_795_237_506_045_001),
            unbridged_at: at(1_795_237_511_064_969),
            completed_at: at(1_795_237_511_064_969),
            ..Default::default()
        }
        .outcome();
        assert_eq!(answered.status, LegStatus::Answered);
        assert_eq!(answered.ended_by, Some(Party::Buyer));
        assert_eq!(answered.talk_time.map(|t| t.as_millis()), Some(5019));

        // 03: caller hung up while the buyer rang.
        let cancel = BridgeReport {
            disposition: Some("ORIGINATOR_CANCEL".into()),
            caller_hangup_at: at(1_795_237_600_000_000),
            ..Default::default()
        }
        .outcome();
        assert_eq!(cancel.status, LegStatus::CallerGone);
    }

    #[test]
    fn caller_hanging_up_while_bridged_ends_the_talk() {
        let o = BridgeReport {
            disposition: Some("SUCCESS".into()),
            bridged_at: at(10_000_000),
            caller_hangup_at: at(40_000_000),
            unbridged_at: at(40_000_100),
            ..Default::default()
        }
        .outcome();
        assert_eq!(o.ended_by, Some(Party::Caller));
        assert_eq!(o.talk_time, Some(Duration::from_secs(30)));
    }
}
