//! Scenario files for `bidbridge simulate`: who calls, what they press,
//! when they hang up, how each buyer's phone behaves, and (optionally)
//! which loopback buyer HTTP servers to run.
//!
//! The same scenario drives the FreeSWITCH simulator (outbound ESL) and the
//! Asterisk simulator (FastAGI), so the two switches can be compared on
//! identical calls.
//!
//! ```toml
//! [run]
//! calls = 30
//! rate_per_sec = 10.0
//! tracking_number = "+18005550100"
//! caller_base = "+13125550100"     # caller n is caller_base + n
//! time_scale = 0.05                # 1 simulated second takes 50 ms
//!
//! [[callers]]                      # profiles, assigned to calls round-robin
//! dtmf = ["1", "60601"]            # answer to the 1st, 2nd, ... collect
//!
//! [[callers]]
//! dtmf = ["2", "10001"]
//! hangup = { stage = "ringing", after_secs = 1.0 }
//!
//! [[legs]]                         # matched against the dial string, first match wins
//! match = "buyer-noanswer"
//! behaviour = "no_answer"
//!
//! [[legs]]
//! match = "buyer-answer"
//! behaviour = "answer"
//! ring_secs = 2.0
//! talk_secs = 95.0
//!
//! [[buyers]]                        # loopback bidders (optional)
//! listen = "127.0.0.1:18081"
//! behaviour = "bid"
//! price = "14.00"
//! delay_ms = 20
//!
//! [[buyers]]                        # answer times as a distribution instead
//! listen = "127.0.0.1:18082"
//! behaviour = "bid"
//! price = "12.00"
//! latency = { median_ms = 20, p99_ms = 80, never_pct = 5 }   # never_hold_ms = 11000 by default
//! ```

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::money::Cents;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub run: RunSpec,
    #[serde(default)]
    pub callers: Vec<CallerProfile>,
    #[serde(default)]
    pub legs: Vec<LegSpec>,
    #[serde(default)]
    pub buyers: Vec<BuyerSpec>,
}

fn one() -> u32 {
    1
}

fn ten() -> f64 {
    10.0
}

fn scale() -> f64 {
    1.0
}

fn default_tracking() -> String {
    "+18005550100".to_string()
}

fn default_caller_base() -> String {
    "+13125550100".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Calls to place.
    #[serde(default = "one")]
    pub calls: u32,
    /// Calls started per second (evenly spaced).
    #[serde(default = "ten")]
    pub rate_per_sec: f64,
    /// The number the callers dial.
    #[serde(default = "default_tracking")]
    pub tracking_number: String,
    /// Caller n (0-based) calls from this number plus n.
    #[serde(default = "default_caller_base")]
    pub caller_base: String,
    /// Real seconds per simulated second (ring and talk times, prompt
    /// lengths). The switch's own timestamps stay in simulated time, as a
    /// real switch would report them.
    #[serde(default = "scale")]
    pub time_scale: f64,
}

/// What a caller does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerProfile {
    /// Digits entered at the 1st, 2nd, ... digit collection. A collection
    /// beyond the list times out (the caller says nothing).
    #[serde(default)]
    pub dtmf: Vec<String>,
    #[serde(default)]
    pub hangup: Option<HangupSpec>,
    /// Channel variables the switch hands over with the call (added to or
    /// overriding its connect reply), e.g. `{ "sip_h_X-Consent-Id" = "c-1" }`
    /// (SIP headers arrive as `sip_h_*`) or `{ sip_verstat = "TN-Validation-Failed" }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// When a caller hangs up on their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupSpec {
    pub stage: HangupStage,
    /// Simulated seconds into that stage.
    #[serde(default)]
    pub after_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupStage {
    /// While a prompt (playback or collect) plays: the first one.
    Prompt,
    /// After the IVR's last collect, before the first bridge (the auction).
    Auction,
    /// While the first buyer's phone rings.
    Ringing,
    /// While talking to the first buyer who answers.
    Bridged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegSpec {
    /// Substring of the dial string (`sip:buyer-answer@...`, a number, an extension).
    #[serde(rename = "match")]
    pub matches: String,
    pub behaviour: LegBehaviour,
    /// Simulated seconds of ringing before answering (or being busy/rejected).
    #[serde(default)]
    pub ring_secs: f64,
    /// Simulated seconds of conversation after answering.
    #[serde(default)]
    pub talk_secs: f64,
    /// Who ends an answered conversation (default: the buyer).
    #[serde(default)]
    pub ended_by: Option<EndedBy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegBehaviour {
    Answer,
    /// Rings until the ring timeout.
    NoAnswer,
    Busy,
    Rejected,
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Buyer,
    Caller,
}

/// A loopback bidder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerSpec {
    pub listen: SocketAddr,
    pub behaviour: BidBehaviour,
    /// Price of a `bid` (ignored otherwise).
    #[serde(default)]
    pub price: Option<Cents>,
    /// Delay before answering, in real milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Wire dialect spoken (default native).
    #[serde(default)]
    pub dialect: Option<crate::catalog::spec::PingDialect>,
    /// `min_talk_secs` a native `bid` asks for (none when unset).
    #[serde(default)]
    pub min_talk_secs: Option<u32>,
    /// A random answer time instead of the fixed `delay_ms` (added to it).
    #[serde(default)]
    pub latency: Option<LatencySpec>,
}

/// A buyer's answer time as a distribution: log-normal through the given
/// median and 99th percentile, plus a share of pings never answered. Real
/// bidders look like this (a long right tail and some that never answer),
/// and a fixed delay hides exactly what the auction deadline is for.
///
/// ```toml
/// latency = { median_ms = 20, p99_ms = 80, never_pct = 5 }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    pub median_ms: f64,
    pub p99_ms: f64,
    /// Percent of pings held open without an answer (see
    /// [`LatencySpec::NEVER_HOLD`]).
    #[serde(default)]
    pub never_pct: f64,
    /// How long a "never" answer holds the request before declining;
    /// [`LatencySpec::NEVER_HOLD`] when absent. Past the daemon's deadline
    /// the hold changes nothing for the daemon (it dropped the request);
    /// it only decides how many sockets the simulator keeps open.
    #[serde(default)]
    pub never_hold_ms: Option<u64>,
}

impl LatencySpec {
    /// How long a "never" answer holds the request: longer than any auction
    /// deadline the daemon accepts (10 s), yet bounded so the simulator's
    /// held connections cannot pile up without limit over a long run.
    pub const NEVER_HOLD: std::time::Duration = std::time::Duration::from_secs(11);

    /// How long this spec's "never" answers hold the request.
    pub fn never_hold(&self) -> std::time::Duration {
        self.never_hold_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(Self::NEVER_HOLD)
    }

    /// z of the 99th percentile of the standard normal distribution.
    const Z99: f64 = 2.326_347_874;

    /// Checks the numbers make a distribution.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.median_ms > 0.0 && self.median_ms.is_finite()) {
            return Err("latency.median_ms must be positive".into());
        }
        if !(self.p99_ms >= self.median_ms && self.p99_ms.is_finite()) {
            return Err("latency.p99_ms must be at least median_ms".into());
        }
        if !(0.0..=100.0).contains(&self.never_pct) {
            return Err("latency.never_pct must be between 0 and 100".into());
        }
        if self.never_hold_ms.is_some_and(|ms| ms == 0 || ms > 60_000) {
            return Err("latency.never_hold_ms must be between 1 and 60000".into());
        }
        Ok(())
    }

    /// One answer time from two uniform draws in (0, 1] and one in [0, 1):
    /// `None` for a ping never answered. Deterministic in its inputs so it
    /// can be tested without a random source.
    pub fn sample_with(&self, u1: f64, u2: f64, u_never: f64) -> Option<std::time::Duration> {
        if u_never * 100.0 < self.never_pct {
            return None;
        }
        // Box-Muller: a standard normal from two uniforms.
        let z = (-2.0 * u1.max(f64::MIN_POSITIVE).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * u2).cos();
        let sigma = (self.p99_ms / self.median_ms).ln() / Self::Z99;
        let ms = self.median_ms * (sigma * z).exp();
        // Capped: a log-normal tail is unbounded, a held request is not.
        Some(std::time::Duration::from_secs_f64(
            (ms / 1000.0).min(Self::NEVER_HOLD.as_secs_f64()),
        ))
    }

    /// One answer time drawn at random.
    pub fn sample(&self) -> Option<std::time::Duration> {
        self.sample_with(
            1.0 - rand::random::<f64>(),
            rand::random::<f64>(),
            rand::random::<f64>(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidBehaviour {
    Bid,
    NoBid,
    /// HTTP 500.
    Error,
    /// A 200 whose body is not JSON.
    Garbage,
    /// A body far over any sane limit.
    Huge,
    /// Accepts the connection and never answers.
    Silent,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    pub fn read(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|message| ScenarioError::Invalid {
            path: shown,
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        let scenario: Scenario = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
        if !(scenario.run.time_scale > 0.0 && scenario.run.time_scale <= 10.0) {
            return Err("run.time_scale must be in (0, 10]".into());
        }
        if scenario.run.rate_per_sec.is_nan() || scenario.run.rate_per_sec <= 0.0 {
            return Err("run.rate_per_sec must be positive".into());
        }
        if crate::phone::E164::parse_strict(&scenario.run.caller_base).is_err() {
            return Err("run.caller_base must be an E.164 number".into());
        }
        for (i, buyer) in scenario.buyers.iter().enumerate() {
            if let Some(latency) = &buyer.latency {
                latency
                    .validate()
                    .map_err(|e| format!("buyers[{i}]: {e}"))?;
            }
        }
        Ok(scenario)
    }

    /// The profile of call `n` (round-robin; a silent caller when none).
    pub fn caller(&self, n: u32) -> CallerProfile {
        if self.callers.is_empty() {
            return CallerProfile::default();
        }
        self.callers[n as usize % self.callers.len()].clone()
    }

    /// Caller ID of call `n`.
    pub fn caller_number(&self, n: u32) -> String {
        let digits = self.run.caller_base.trim_start_matches('+');
        match digits.parse::<u64>() {
            Ok(base) => format!("+{}", base + u64::from(n)),
            Err(_) => self.run.caller_base.clone(),
        }
    }

    /// How a leg to `dial_string` behaves: the first matching spec, else
    /// unreachable.
    pub fn leg(&self, dial_string: &str) -> LegSpec {
        self.legs
            .iter()
            .find(|l| dial_string.contains(&l.matches))
            .cloned()
            .unwrap_or(LegSpec {
                matches: String::new(),
                behaviour: LegBehaviour::Unreachable,
                ring_secs: 0.0,
                talk_secs: 0.0,
                ended_by: None,
            })
    }
}

/// What the simulator saw of one call (the switch's view).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallTrace {
    pub index: u32,
    pub caller: String,
    /// Bridges requested, in order, with the behaviour played.
    pub bridges: Vec<(String, String)>,
    /// Digits given to collects.
    pub dtmf_sent: Vec<String>,
    /// How the call ended on the switch side: `hangup <CAUSE>`, `caller hung up`,
    /// `transfer`, `handed back`, or an error.
    pub ended: String,
    /// Whether the daemon closed the session cleanly.
    pub completed: bool,
    pub error: Option<String>,
    /// Real milliseconds from connect to close.
    pub duration_ms: u64,
}

/// The run's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub calls: u32,
    pub completed: u32,
    pub failed: u32,
    pub traces: Vec<CallTrace>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_follows_its_median_and_p99() {
        let spec = LatencySpec {
            median_ms: 20.0,
            p99_ms: 80.0,
            never_pct: 5.0,
            never_hold_ms: None,
        };
        assert_eq!(spec.never_hold(), LatencySpec::NEVER_HOLD);
        let held = LatencySpec {
            never_hold_ms: Some(1000),
            ..spec
        };
        assert_eq!(held.never_hold(), std::time::Duration::from_secs(1));
        assert!(
            LatencySpec {
                never_hold_ms: Some(0),
                ..spec
            }
            .validate()
            .is_err()
        );
        spec.validate().expect("valid");
        // A deterministic grid of uniforms stands in for a random source.
        let mut ms = Vec::new();
        let mut never = 0;
        for i in 0..200 {
            for j in 0..50 {
                let u1 = (f64::from(i) + 0.5) / 200.0;
                let u2 = (f64::from(j) + 0.5) / 50.0;
                let u_never = ((i * 50 + j) % 1000) as f64 / 1000.0;
                match spec.sample_with(u1, u2, u_never) {
                    Some(d) => ms.push(d.as_secs_f64() * 1000.0),
                    None => never += 1,
                }
            }
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[(q * ms.len() as f64) as usize];
        assert!((at(0.5) - 20.0).abs() < 2.0, "median {}", at(0.5));
        assert!((at(0.99) - 80.0).abs() < 12.0, "p99 {}", at(0.99));
        assert_eq!(never, 500);
    }

    #[test]
    fn latency_is_optional_and_checked() {
        let base = "[run]\n[[buyers]]\nlisten = \"127.0.0.1:0\"\nbehaviour = \"bid\"\n";
        let s = Scenario::parse(base).expect("no latency");
        assert_eq!(s.buyers[0].latency, None);
        let s = Scenario::parse(&format!(
            "{base}latency = {{ median_ms = 20, p99_ms = 80, never_pct = 5 }}\n"
        ))
        .expect("latency");
        assert_eq!(s.buyers[0].latency.map(|l| l.p99_ms), Some(80.0));
        let err = Scenario::parse(&format!(
            "{base}latency = {{ median_ms = 20, p99_ms = 10 }}\n"
        ))
        .expect_err("p99 under the median");
        assert!(err.contains("p99_ms"), "{err}");
    }
}
