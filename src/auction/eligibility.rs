//! Who may bid on a call, decided before any ping from the in-memory
//! catalog alone: enabled, not already tried, targeting, opening hours,
//! and whatever the [`Gate`] adds (caps, budgets, concurrency, health).
//!
//! This runs for every destination of the campaign on every call, so it
//! allocates nothing on the accepting path and answers in well under a
//! microsecond per destination (see benches/eligibility.rs).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, FixedOffset, Utc};

use crate::catalog::Destination;
use crate::catalog::targeting::TargetFacts;
use crate::phone::E164;

/// The caller facts targeting and pings use, derived once per call.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub caller: Option<E164>,
    pub area_code: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub local_time: Option<DateTime<FixedOffset>>,
    pub tags: BTreeMap<String, String>,
    pub source: String,
}

impl CallFacts {
    pub fn derive(
        caller: Option<&E164>,
        tags: &BTreeMap<String, String>,
        source: &str,
        now: DateTime<Utc>,
    ) -> CallFacts {
        let area_code = caller.and_then(|c| c.nanp_area_code()).map(str::to_string);
        let info = area_code.as_deref().and_then(crate::geo::area_info);
        let local_time = info.map(|i| now.with_timezone(&i.time_zone).fixed_offset());
        CallFacts {
            caller: caller.cloned(),
            state: info.map(|i| i.region.to_string()),
            area_code,
            zip: tags.get("zip").cloned(),
            local_time,
            tags: tags.clone(),
            source: source.to_string(),
        }
    }

    pub fn target_facts<'a>(&'a self, vertical: &'a str) -> TargetFacts<'a> {
        TargetFacts {
            vertical,
            state: self.state.as_deref(),
            area_code: self.area_code.as_deref(),
            zip: self.zip.as_deref(),
            tags: &self.tags,
            source: &self.source,
        }
    }
}

/// Extra admission rules that need live state (caps, concurrency, budgets,
/// buyer health). Implementations must answer from memory.
pub trait Gate: Send + Sync {
    /// `Err(reason)` keeps the destination out of this auction.
    fn admit(&self, destination: &Destination, now: DateTime<Utc>) -> Result<(), &'static str>;
}

/// A gate that admits everyone (tests, simulations without caps).
pub struct OpenGate;

impl Gate for OpenGate {
    fn admit(&self, _: &Destination, _: DateTime<Utc>) -> Result<(), &'static str> {
        Ok(())
    }
}

/// Time we allow between the auction and the caller being connected: the
/// destination must stay open through its own ring time plus this.
const CONNECT_ALLOWANCE: Duration = Duration::seconds(30);

/// Decides one destination. `Err` carries the reason recorded on the bid.
pub fn check(
    destination: &Destination,
    facts: &TargetFacts<'_>,
    now: DateTime<Utc>,
    exclude: &HashSet<String>,
    gate: &dyn Gate,
) -> Result<(), &'static str> {
    if !destination.enabled {
        return Err("destination disabled");
    }
    if !destination.buyer.enabled {
        return Err("buyer disabled");
    }
    if exclude.contains(&destination.id) {
        return Err("already tried on this call");
    }
    destination.targeting.check(facts).map_err(|m| m.as_str())?;
    let window = CONNECT_ALLOWANCE
        + Duration::from_std(destination.ring_timeout).unwrap_or_else(|_| Duration::seconds(60));
    destination
        .schedule
        .open_throughout(now, window)
        .map_err(|closed| match closed {
            crate::catalog::schedule::Closed::ClosedDate => "closed today",
            crate::catalog::schedule::Closed::OutsideHours => "outside hours",
            crate::catalog::schedule::Closed::ClosingSoon => {
                "closing before the call could connect"
            }
        })?;
    gate.admit(destination, now)
}
