//! Admission: which accepted calls the daemon serves, and what becomes of
//! the rest.
//!
//! A call is served while a call slot is free (`calls.max_concurrent`).
//! A call beyond that, and a call still waiting in the listen backlog when
//! the daemon stops accepting for a shutdown, is refused: handed straight
//! back to the switch's dialplan ([`crate::pbx::handback`]), whose failover
//! dials the backup line within milliseconds. The alternative, leaving the
//! connection in the backlog until a slot frees (or until the listener's
//! close resets it), is dead air for the caller, and on FreeSWITCH worse:
//! the outbound socket gives up after 25 s without a first command and
//! leaves the channel parked. (Before the catalog is loaded the call
//! sockets are bound but not listening, so the switch's connect is refused
//! by the kernel and its failover runs at once: see `server`.)
//!
//! Refusals are counted in `bidbridge_calls_refused_total{pbx,reason}`
//! and logged at warn, at most once per [`WARN_EVERY`] with the number
//! refused since the last line, so a flood cannot flood the log too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, RefusalLabels};
use crate::pbx::PbxKind;

/// Refused connections being handed back at once. Each is a socket and a
/// small task for at most [`crate::pbx::handback::GRACE`]; past this many
/// a refused connection is closed outright (the switch sees a reset: the
/// shipped FreeSWITCH dialplan presets `socket_resume`, and Asterisk's
/// `AGI()` fails, so the failover still runs).
pub const MAX_REFUSALS_IN_FLIGHT: usize = 1024;

/// The least time between two "refusing calls" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a call was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `calls.max_concurrent` calls are in progress.
    AtCapacity,
    /// It was still in the listen backlog when the daemon stopped
    /// accepting calls for a shutdown.
    Draining,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::AtCapacity => "capacity",
            Refusal::Draining => "draining",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Refusal::AtCapacity => "calls.max_concurrent calls are in progress",
            Refusal::Draining => "the daemon is shutting down",
        }
    }
}

/// What to do with a connection just accepted.
#[derive(Debug)]
pub enum Decision {
    /// Serve it, holding this call slot until the call is over.
    Serve(OwnedSemaphorePermit),
    /// Refuse it; hand it back politely while holding `hand_back`, or, when
    /// [`MAX_REFUSALS_IN_FLIGHT`] are already under way (`None`), close it.
    Refuse {
        reason: Refusal,
        hand_back: Option<OwnedSemaphorePermit>,
    },
}

pub struct Admission {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// When the last warning was logged (None: never).
    last_warning: Mutex<Option<Instant>>,
    /// Refusals since the last warning.
    unreported: AtomicU64,
}

impl Admission {
    pub fn new(max_concurrent: usize, metrics: Arc<Metrics>) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            metrics,
            last_warning: Mutex::new(None),
            unreported: AtomicU64::new(0),
        }
    }

    /// Decides for one connection just accepted from `pbx`.
    pub fn decide(&self, pbx: PbxKind) -> Decision {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Decision::Serve(slot),
            Err(_) => self.refuse(pbx, Refusal::AtCapacity),
        }
    }

    /// Refuses one connection from `pbx` (counted and logged).
    pub fn refuse(&self, pbx: PbxKind, reason: Refusal) -> Decision {
        let hand_back = self.refusals.clone().try_acquire_owned().ok();
        self.note_refusal(pbx, reason, hand_back.is_some());
        Decision::Refuse { reason, hand_back }
    }

    fn note_refusal(&self, pbx: PbxKind, reason: Refusal, handed_back: bool) {
        self.metrics
            .calls_refused
            .get_or_create(&RefusalLabels {
                pbx: pbx.as_str().to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc();
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = match self.last_warning.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        // This refusal and every one since the last line.
        let refused = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            pbx = pbx.as_str(),
            reason = reason.as_str(),
            refused,
            handed_back,
            "refusing calls: {}; the switch's dialplan sends them to its failover (backup line)",
            reason.why()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(metrics: &Metrics, pbx: &str, reason: &str) -> bool {
        metrics.encode().contains(&format!(
            "bidbridge_calls_refused_total{{pbx=\"{pbx}\",reason=\"{reason}\"}} 1\n"
        ))
    }

    #[test]
    fn a_call_is_served_while_a_slot_is_free_and_refused_after() {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(1, metrics.clone());

        let slot = match admission.decide(PbxKind::Asterisk) {
            Decision::Serve(permit) => permit,
            other => panic!("expected to serve, got {other:?}"),
        };
        let full = admission.decide(PbxKind::Asterisk);
        assert!(
            matches!(
                full,
                Decision::Refuse {
                    reason: Refusal::AtCapacity,
                    hand_back: Some(_),
                }
            ),
            "{full:?}"
        );
        assert!(refused(&metrics, "asterisk", "capacity"));
        assert!(!refused(&metrics, "freeswitch", "capacity"));

        // The call ends: its slot serves the next one.
        drop(slot);
        assert!(matches!(
            admission.decide(PbxKind::Freeswitch),
            Decision::Serve(_)
        ));

        admission.refuse(PbxKind::Freeswitch, Refusal::Draining);
        assert!(refused(&metrics, "freeswitch", "draining"));
    }

    #[test]
    fn past_the_refusal_budget_connections_are_closed_outright() {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(1, metrics);
        let mut held = Vec::new();
        for _ in 0..MAX_REFUSALS_IN_FLIGHT {
            match admission.refuse(PbxKind::Freeswitch, Refusal::AtCapacity) {
                Decision::Refuse {
                    hand_back: Some(permit),
                    ..
                } => held.push(permit),
                other => panic!("expected a hand-back, got {other:?}"),
            }
        }
        assert!(matches!(
            admission.refuse(PbxKind::Freeswitch, Refusal::AtCapacity),
            Decision::Refuse {
                hand_back: None,
                ..
            }
        ));
        // A hand-back finishes: the next refusal is polite again.
        held.pop();
        assert!(matches!(
            admission.refuse(PbxKind::Freeswitch, Refusal::AtCapacity),
            Decision::Refuse {
                hand_back: Some(_),
                ..
            }
        ));
    }
}
