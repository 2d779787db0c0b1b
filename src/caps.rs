//! Caps, budgets and concurrency that hold across every bidbridge node.
//!
//! Two steps, so the hot path never pays a database round trip per
//! eligible buyer (docs/caps.md has the whole design):
//!
//! 1. **Eligibility, from memory** ([`Gate`]): a snapshot of the call and
//!    budget counters (refreshed from PostgreSQL every 250 ms, plus this
//!    node's own admissions since) keeps full destinations out of the
//!    auction. It may be a few hundred milliseconds stale; it is only a
//!    filter. Concurrency is not filtered here (it changes faster than any
//!    snapshot): admission decides it.
//! 2. **Admission, exact** ([`Caps::admit`]): right before a destination's
//!    phone rings, one call to `bidbridge_admit()` reserves one unit of
//!    every cap that applies (destination and buyer: calls per
//!    hour/day/month/total, the live-call slot, the budget) under row locks,
//!    all or nothing. Two nodes can never both take the last slot.
//!    After the attempt, [`Caps::settle`] releases the reservation and
//!    records what was consumed, exactly once.
//!
//! What counts: `calls` caps count connected calls (the buyer answered);
//! `concurrency` counts this buyer's phones ringing or bridged right now;
//! budgets count the price charged for payable calls. A ringing attempt
//! holds a unit of each until it ends, so the cap cannot be overshot while
//! the outcome is unknown.
//!
//! Node death: reservations are leases, renewed every 30 s while the call
//! lives; any node releases expired ones. Database down: capped destinations
//! are skipped (fail closed, no buyer gets calls past a cap); uncapped
//! destinations never touch this module.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use crate::auction::eligibility::Gate;
use crate::catalog::{Caps as CapLimits, Destination};
use crate::money::Cents;

/// How long a reservation lives without renewal.
const LEASE: Duration = Duration::from_secs(120);
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
const RENEW_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CounterKey {
    owner_kind: &'static str,
    owner_id: String,
    metric: &'static str,
    period: &'static str,
    period_start: DateTime<Utc>,
}

/// One cap an attempt must fit in (serialised for `bidbridge_admit`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    owner_kind: &'static str,
    owner_id: String,
    metric: &'static str,
    period: &'static str,
    period_start: DateTime<Utc>,
    cap: i64,
    amount: i64,
    /// Names the cap in refusals and records: `destination d1 calls per day`.
    label: String,
}

impl Item {
    fn key(&self) -> CounterKey {
        CounterKey {
            owner_kind: self.owner_kind,
            owner_id: self.owner_id.clone(),
            metric: self.metric,
            period: self.period,
            period_start: self.period_start,
        }
    }
}

/// Start of the period containing `now`, in `tz`, as UTC.
fn period_start(period: &str, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&tz);
    let date = local.date_naive();
    let start = match period {
        "hour" => date.and_time(NaiveTime::from_hms_opt(local.hour(), 0, 0).unwrap_or_default()),
        "day" => date.and_time(NaiveTime::MIN),
        "month" => NaiveDate::from_ymd_opt(date.year(), date.month(), 1)
            .unwrap_or(date)
            .and_time(NaiveTime::MIN),
        // Totals and live slots have one window forever.
        _ => return DateTime::<Utc>::UNIX_EPOCH,
    };
    // A DST gap hides local midnight/hour starts: take the earliest instant.
    tz.from_local_datetime(&start)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

/// Every cap that applies to ringing `destination` at `price`.
pub fn items_for(destination: &Destination, price: Cents, now: DateTime<Utc>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut add = |owner_kind: &'static str, owner_id: &str, tz: Tz, limits: &CapLimits| {
        let counts = [
            ("calls", "hour", limits.per_hour.map(i64::from), 1),
            ("calls", "day", limits.per_day.map(i64::from), 1),
            ("calls", "month", limits.per_month.map(i64::from), 1),
            ("calls", "total", limits.total.map(i64::from), 1),
            ("live", "now", limits.concurrency.map(i64::from), 1),
            (
                "budget",
                "day",
                limits.budget_per_day.map(|c| c.0),
                price.0.max(0),
            ),
            (
                "budget",
                "month",
                limits.budget_per_month.map(|c| c.0),
                price.0.max(0),
            ),
        ];
        for (metric, period, cap, amount) in counts {
            let Some(cap) = cap else { continue };
            let what = match (metric, period) {
                ("live", _) => "concurrent calls".to_string(),
                ("budget", p) => format!("budget per {p}"),
                (_, "total") => "total calls".to_string(),
                (_, p) => format!("calls per {p}"),
            };
            items.push(Item {
                owner_kind,
                owner_id: owner_id.to_string(),
                metric,
                period,
                period_start: period_start(period, tz, now),
                cap,
                amount,
                label: format!("{owner_kind} {owner_id} {what} ({cap})"),
            });
        }
    };
    add(
        "destination",
        &destination.id,
        destination.schedule.tz,
        &destination.caps,
    );
    add(
        "buyer",
        &destination.buyer.id,
        destination.buyer.timezone,
        &destination.buyer.caps,
    );
    // One lock order for everybody: no deadlocks between admissions.
    items.sort_by(|a, b| {
        (
            a.owner_kind,
            &a.owner_id,
            a.metric,
            a.period,
            a.period_start,
        )
            .cmp(&(
                b.owner_kind,
                &b.owner_id,
                b.metric,
                b.period,
                b.period_start,
            ))
    });
    items
}

/// A unit of every cap held by one ringing or bridged attempt.
#[derive(Debug)]
pub struct Reservation {
    id: Uuid,
    items: Vec<Item>,
}

/// Why an attempt may not ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cap reached: {0}")]
    Full(String),
    #[error("caps unavailable (database unreachable); capped destinations are skipped")]
    Unavailable(String),
}

pub struct Caps {
    pool: Pool,
    node_id: String,
    /// used + reserved per counter, from the last refresh plus our own
    /// admissions since.
    snapshot: RwLock<HashMap<CounterKey, i64>>,
    /// Reservations this node holds (renewed until settled).
    live: Mutex<HashSet<Uuid>>,
}

impl Caps {
    pub fn new(pool: Pool, node_id: String) -> Arc<Caps> {
        Arc::new(Caps {
            pool,
            node_id,
            snapshot: RwLock::new(HashMap::new()),
            live: Mutex::new(HashSet::new()),
        })
    }

    /// Reserves one unit of every cap on `destination`. `Ok(None)`: nothing
    /// is capped, nothing to hold.
    pub async fn admit(
        &self,
        call_id: Uuid,
        destination: &Destination,
        price: Cents,
    ) -> Result<Option<Reservation>, Refusal> {
        let items = items_for(destination, price, Utc::now());
        if items.is_empty() {
            return Ok(None);
        }
        let id = Uuid::new_v4();
        let json = serde_json::to_value(&items).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let lease = LEASE.as_secs() as i32;
        let row = client
            .query_one(
                "SELECT bidbridge_admit($1, $2, $3, $4, $5)",
                &[&id, &self.node_id, &call_id, &json, &lease],
            )
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        if let Some(full) = row.get::<_, Option<String>>(0) {
            return Err(Refusal::Full(full));
        }
        if let Ok(mut snapshot) = self.snapshot.write() {
            for item in &items {
                *snapshot.entry(item.key()).or_default() += item.amount;
            }
        }
        if let Ok(mut live) = self.live.lock() {
            live.insert(id);
        }
        Ok(Some(Reservation { id, items }))
    }

    /// Ends an attempt: `answered` consumes a call unit, `payable_price` the
    /// budget. Retried briefly; if the database stays away, the lease expiry
    /// releases the reservation (the call units it would have consumed are
    /// then not counted: an undercount, never an overshoot of a live cap).
    pub async fn settle(
        &self,
        reservation: Reservation,
        answered: bool,
        payable_price: Option<Cents>,
    ) {
        let consumed = serde_json::json!({
            "calls": if answered { 1 } else { 0 },
            "budget": payable_price.map(|p| p.0).unwrap_or(0),
            "live": 0,
        });
        for attempt in 0..3 {
            let result = async {
                let client = self.pool.get().await.map_err(|e| e.to_string())?;
                client
                    .query_one(
                        "SELECT bidbridge_settle($1, $2)",
                        &[&reservation.id, &consumed],
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(_) => {
                    if let Ok(mut live) = self.live.lock() {
                        live.remove(&reservation.id);
                    }
                    if let Ok(mut snapshot) = self.snapshot.write() {
                        for item in &reservation.items {
                            let consumed_here = match item.metric {
                                "calls" if answered => item.amount,
                                "budget" => {
                                    payable_price.map(|p| p.0.min(item.amount)).unwrap_or(0)
                                }
                                _ => 0,
                            };
                            if let Some(v) = snapshot.get_mut(&item.key()) {
                                *v -= item.amount - consumed_here;
                            }
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "settling a cap reservation failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        tracing::error!(reservation = %reservation.id, "cap reservation not settled; its lease will release it");
    }

    /// Reloads the counter snapshot from PostgreSQL.
    pub async fn refresh(&self) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query(
                "SELECT owner_kind, owner_id, metric, period, period_start, used + reserved
                   FROM cap_counters
                  WHERE period IN ('total', 'now') OR period_start > now() - interval '32 days'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut fresh = HashMap::with_capacity(rows.len());
        for row in rows {
            let (Some(owner_kind), Some(metric), Some(period)) = (
                intern(row.get::<_, &str>(0), &["destination", "buyer"]),
                intern(row.get::<_, &str>(2), &["calls", "live", "budget"]),
                intern(
                    row.get::<_, &str>(3),
                    &["hour", "day", "month", "total", "now"],
                ),
            ) else {
                continue;
            };
            let key = CounterKey {
                owner_kind,
                owner_id: row.get(1),
                metric,
                period,
                period_start: row.get(4),
            };
            fresh.insert(key, row.get::<_, i64>(5));
        }
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = fresh;
        }
        Ok(())
    }

    /// Keeps the snapshot fresh, renews this node's leases and releases
    /// expired ones, until the task is aborted.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let caps = self.clone();
        tokio::spawn(async move {
            let mut snapshot = tokio::time::interval(SNAPSHOT_EVERY);
            let mut renew = tokio::time::interval(RENEW_EVERY);
            snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = snapshot.tick() => {
                        if let Err(e) = caps.refresh().await {
                            tracing::debug!(error = %e, "cap snapshot refresh failed");
                        }
                    }
                    _ = renew.tick() => caps.renew_and_expire().await,
                }
            }
        })
    }

    async fn renew_and_expire(&self) {
        let held: Vec<Uuid> = self
            .live
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        let Ok(client) = self.pool.get().await else {
            return;
        };
        if !held.is_empty() {
            let lease = LEASE.as_secs() as f64;
            if let Err(e) = client
                .execute(
                    "UPDATE cap_reservations SET expires_at = now() + make_interval(secs => $2) WHERE reservation_id = ANY($1)",
                    &[&held, &lease],
                )
                .await
            {
                tracing::warn!(error = %e, "renewing cap leases failed");
            }
        }
        match client
            .query_one("SELECT bidbridge_expire_reservations()", &[])
            .await
        {
            Ok(row) => {
                let n: i32 = row.get(0);
                if n > 0 {
                    tracing::warn!(
                        released = n,
                        "released cap reservations whose node stopped renewing them"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "expiring cap reservations failed"),
        }
    }

    fn snapshot_value(&self, key: &CounterKey) -> i64 {
        self.snapshot
            .read()
            .ok()
            .and_then(|s| s.get(key).copied())
            .unwrap_or(0)
    }
}

fn intern(text: &str, known: &[&'static str]) -> Option<&'static str> {
    known.iter().copied().find(|k| *k == text)
}

impl Gate for Caps {
    fn admit(&self, destination: &Destination, now: DateTime<Utc>) -> Result<(), &'static str> {
        self.admit_gate(destination, now)
    }
}

impl Caps {
    /// From the snapshot only: a destination whose next call (or any budget
    /// spend) would exceed a cap is not asked to bid.
    pub fn admit_gate(
        &self,
        destination: &Destination,
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        if destination.caps.is_empty() && destination.buyer.caps.is_empty() {
            return Ok(());
        }
        for item in items_for(destination, Cents::ZERO, now) {
            // Live calls change in milliseconds; a snapshot up to 250 ms old
            // would keep a destination out long after its slots freed up.
            // Concurrency is left to exact admission.
            if item.metric == "live" {
                continue;
            }
            let current = self.snapshot_value(&item.key());
            let over = match item.metric {
                "budget" => current >= item.cap,
                _ => current + 1 > item.cap,
            };
            if over {
                return Err(match (item.owner_kind, item.metric) {
                    ("destination", "live") => "destination at its concurrency cap",
                    ("buyer", "live") => "buyer at its concurrency cap",
                    ("destination", "budget") => "destination budget spent",
                    ("buyer", "budget") => "buyer budget spent",
                    ("destination", _) => "destination call cap reached",
                    _ => "buyer call cap reached",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_in_the_owners_time_zone() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 3, 30, 0).unwrap(); // 21:30 on the 20th in Chicago
        let chicago = chrono_tz::America::Chicago;
        assert_eq!(
            period_start("day", chicago, now),
            Utc.with_ymd_and_hms(2026, 11, 20, 6, 0, 0).unwrap()
        );
        assert_eq!(
            period_start("hour", chicago, now),
            Utc.with_ymd_and_hms(2026, 11, 21, 3, 0, 0).unwrap()
        );
        assert_eq!(
            period_start("month", chicago, now),
            Utc.with_ymd_and_hms(2026, 11, 1, 5, 0, 0).unwrap()
        );
        assert_eq!(
            period_start("total", chicago, now),
            DateTime::<Utc>::UNIX_EPOCH
        );
    }
}
