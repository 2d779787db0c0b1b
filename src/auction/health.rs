//! Buyer health: a destination that leaves calls unanswered is paused.
//!
//! When a destination's phone rings out unanswered `unanswered` times within
//! `window`, it is paused for `pause` (kept out of auctions, reason
//! "paused: unanswered calls"), then resumes on its own. A buyer whose
//! phones go unstaffed stops burning callers' patience at once instead of
//! after an operator notices.
//!
//! The counts are this node's (each node pauses on what it sees; a busy
//! multi-node setup reaches the threshold on whichever node sees the
//! calls). Pauses are logged, exported as the `bidbridge_destination_paused`
//! gauge, and listed by `GET /v1/status`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::catalog::Destination;

#[derive(Debug, Clone, Copy)]
pub struct HealthRules {
    pub unanswered: u32,
    pub window: Duration,
    pub pause: Duration,
}

#[derive(Default)]
struct State {
    misses: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

pub struct Health {
    rules: HealthRules,
    states: Mutex<HashMap<String, State>>,
}

impl Health {
    pub fn new(rules: HealthRules) -> Health {
        Health {
            rules,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Records how an attempt at `destination` ended; returns true when this
    /// attempt paused it.
    pub fn observe(&self, destination: &str, unanswered: bool) -> bool {
        if self.rules.unanswered == 0 {
            return false;
        }
        let now = Instant::now();
        let Ok(mut states) = self.states.lock() else {
            return false;
        };
        let state = states.entry(destination.to_string()).or_default();
        if !unanswered {
            // An answered call shows the phone is staffed again.
            state.misses.clear();
            return false;
        }
        state.misses.push_back(now);
        while state
            .misses
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.rules.window)
        {
            state.misses.pop_front();
        }
        if state.misses.len() as u32 >= self.rules.unanswered
            && state.paused_until.is_none_or(|until| until <= now)
        {
            state.paused_until = Some(now + self.rules.pause);
            state.misses.clear();
            tracing::warn!(
                destination,
                unanswered = self.rules.unanswered,
                window_secs = self.rules.window.as_secs(),
                pause_secs = self.rules.pause.as_secs(),
                "destination paused: calls left unanswered"
            );
            return true;
        }
        false
    }

    pub fn is_paused(&self, destination: &str) -> bool {
        let now = Instant::now();
        self.states
            .lock()
            .ok()
            .and_then(|s| s.get(destination).and_then(|st| st.paused_until))
            .is_some_and(|until| until > now)
    }

    /// Destinations paused right now, with the seconds left.
    pub fn paused(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        let Ok(states) = self.states.lock() else {
            return Vec::new();
        };
        let mut list: Vec<(String, u64)> = states
            .iter()
            .filter_map(|(id, st)| {
                st.paused_until
                    .filter(|u| *u > now)
                    .map(|u| (id.clone(), (u - now).as_secs()))
            })
            .collect();
        list.sort();
        list
    }

    pub fn admit(
        &self,
        destination: &Destination,
        _now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        if self.is_paused(&destination.id) {
            Err("paused: calls left unanswered")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn three_unanswered_in_the_window_pause_then_resume() {
        let health = Health::new(HealthRules {
            unanswered: 3,
            window: Duration::from_secs(3600),
            pause: Duration::from_secs(600),
        });
        assert!(!health.observe("d", true));
        assert!(!health.observe("d", true));
        assert!(health.observe("d", true));
        assert!(health.is_paused("d"));
        assert_eq!(health.paused(), vec![("d".to_string(), 600)]);
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(!health.is_paused("d"));
    }

    #[tokio::test(start_paused = true)]
    async fn misses_outside_the_window_or_an_answer_reset_the_count() {
        let health = Health::new(HealthRules {
            unanswered: 3,
            window: Duration::from_secs(60),
            pause: Duration::from_secs(600),
        });
        health.observe("d", true);
        health.observe("d", true);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!health.observe("d", true), "old misses left the window");
        health.observe("d", true);
        health.observe("d", false);
        assert!(!health.observe("d", true), "an answered call resets");
        assert!(!health.is_paused("d"));
    }
}
