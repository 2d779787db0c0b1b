//! Measured destination statistics for expected-value ranking.
//!
//! `expected value = price × answer rate × payable rate`: a high bidder
//! whose phone is never picked up, or whose calls never last long enough to
//! pay, stops winning. Rates come from the recorded attempts and calls of
//! the last 7 days (every node writes them, so every node learns from all
//! calls), refreshed every minute, and are smoothed toward a prior so a new
//! destination is neither favoured nor starved: with no history it scores
//! at the prior, and each observed attempt moves it a little.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::Scorer;

/// Prior answer rate, and how many attempts' worth of weight it carries.
pub const ANSWER_PRIOR: (f64, f64) = (0.7, 5.0);
/// Prior payable rate among answered calls, and its weight in calls.
pub const PAYABLE_PRIOR: (f64, f64) = (0.7, 5.0);
/// How much a destination's measured conversion rate lifts its expected
/// value: a destination whose every connected call converted ranks 25 %
/// higher. Buyers who report no conversions are not penalised below
/// baseline; conversions are evidence of value, their absence is not
/// evidence of anything (most buyers never report them).
pub const CONVERSION_WEIGHT: f64 = 0.25;

/// Smoothed rate: `(hits + prior × weight) / (trials + weight)`.
pub fn smoothed(hits: f64, trials: f64, prior: (f64, f64)) -> f64 {
    (hits + prior.0 * prior.1) / (trials + prior.1)
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Bridge attempts that rang (skipped and caller-gone attempts excluded).
    pub attempts: f64,
    pub answered: f64,
    /// Calls this destination won and connected.
    pub connected: f64,
    pub payable: f64,
    /// Connected calls with at least one conversion reported (`/v1/conversions`).
    pub converted: f64,
}

impl Counts {
    pub fn rates(&self) -> (f64, f64) {
        (
            smoothed(self.answered, self.attempts, ANSWER_PRIOR),
            smoothed(self.payable, self.connected, PAYABLE_PRIOR),
        )
    }

    /// Converted share of connected calls, smoothed toward 0.
    pub fn conversion_rate(&self) -> f64 {
        smoothed(self.converted, self.connected, (0.0, 5.0))
    }
}

#[derive(Default)]
pub struct DestinationStats {
    /// destination → (answer rate, payable rate, conversion rate)
    rates: RwLock<HashMap<String, (f64, f64, f64)>>,
}

impl DestinationStats {
    pub fn new() -> Arc<DestinationStats> {
        Arc::new(DestinationStats::default())
    }

    pub fn install(&self, counts: HashMap<String, Counts>) {
        let rates = counts
            .into_iter()
            .map(|(id, c)| {
                let (answer, payable) = c.rates();
                (id, (answer, payable, c.conversion_rate()))
            })
            .collect();
        if let Ok(mut current) = self.rates.write() {
            *current = rates;
        }
    }

    /// Recomputes the rates from the last 7 days of records.
    pub async fn refresh(&self, pool: &Pool) -> Result<(), String> {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let mut counts: HashMap<String, Counts> = HashMap::new();
        let attempts = client
            .query(
                "SELECT destination_id,
                        count(*) FILTER (WHERE outcome NOT IN ('skipped', 'caller_gone'))::float8,
                        count(*) FILTER (WHERE outcome = 'answered')::float8
                   FROM bridge_attempts
                  WHERE started_at > now() - interval '7 days' AND destination_id IS NOT NULL
                  GROUP BY destination_id",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        for row in attempts {
            let entry = counts.entry(row.get(0)).or_default();
            entry.attempts = row.get(1);
            entry.answered = row.get(2);
        }
        let calls = client
            .query(
                "SELECT winner_destination_id, count(*)::float8, count(*) FILTER (WHERE payable)::float8
                   FROM calls
                  WHERE arrived_at > now() - interval '7 days' AND winner_destination_id IS NOT NULL
                  GROUP BY winner_destination_id",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        for row in calls {
            let entry = counts.entry(row.get(0)).or_default();
            entry.connected = row.get(1);
            entry.payable = row.get(2);
        }
        let converted = client
            .query(
                "SELECT c.winner_destination_id, count(DISTINCT c.call_id)::float8
                   FROM calls c JOIN conversions v ON v.call_id = c.call_id
                  WHERE c.arrived_at > now() - interval '7 days' AND c.winner_destination_id IS NOT NULL
                  GROUP BY c.winner_destination_id",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        for row in converted {
            counts.entry(row.get(0)).or_default().converted = row.get(1);
        }
        self.install(counts);
        Ok(())
    }

    /// Refreshes every minute until aborted.
    pub fn spawn_refresh(self: &Arc<Self>, pool: Pool) -> tokio::task::JoinHandle<()> {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                if let Err(e) = stats.refresh(&pool).await {
                    tracing::debug!(error = %e, "destination statistics refresh failed; keeping the last ones");
                }
            }
        })
    }

    fn get(&self, id: &str) -> (f64, f64, f64) {
        self.rates
            .read()
            .ok()
            .and_then(|r| r.get(id).copied())
            .unwrap_or((ANSWER_PRIOR.0, PAYABLE_PRIOR.0, 0.0))
    }
}

impl Scorer for DestinationStats {
    fn answer_rate(&self, destination_id: &str) -> f64 {
        self.get(destination_id).0
    }
    fn payable_rate(&self, destination_id: &str) -> f64 {
        self.get(destination_id).1
    }
    fn conversion_rate(&self, destination_id: &str) -> f64 {
        self.get(destination_id).2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auction::rank::{Candidate, rank};
    use crate::money::Cents;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn new_destinations_score_at_the_prior_and_history_moves_them() {
        assert_eq!(Counts::default().rates(), (ANSWER_PRIOR.0, PAYABLE_PRIOR.0));
        let never = Counts {
            attempts: 100.0,
            answered: 0.0,
            connected: 0.0,
            payable: 0.0,
            converted: 0.0,
        };
        assert!(never.rates().0 < 0.05);
        let good = Counts {
            attempts: 100.0,
            answered: 95.0,
            connected: 95.0,
            payable: 80.0,
            converted: 40.0,
        };
        assert!(good.rates().0 > 0.9 && good.rates().1 > 0.8);
        assert!((good.conversion_rate() - 0.4).abs() < 0.03);
        assert_eq!(Counts::default().conversion_rate(), 0.0);
    }

    /// A buyer population with a high bidder who almost never answers:
    /// A bids $20 and answers 5 % of the time; B bids $15 and C $12, both
    /// answer 90 %; answered calls are payable 80 % of the time. A caller
    /// who has waited through one unanswered ring gives up half the time.
    /// Expected-value ranking, learning the rates from recorded history,
    /// earns more per call than ranking by price.
    #[test]
    fn expected_value_ranking_beats_price_ranking_with_a_non_answering_high_bidder() {
        let buyers = [("a", 2000i64, 0.05), ("b", 1500, 0.9), ("c", 1200, 0.9)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts: HashMap<String, Counts> = HashMap::new();

        let play = |order: Vec<usize>,
                    rng: &mut rand::rngs::StdRng,
                    counts: &mut HashMap<String, Counts>|
         -> i64 {
            for (tried, index) in order.into_iter().enumerate() {
                if tried > 0 && rng.random::<f64>() < 0.5 {
                    return 0; // the caller hung up while waiting
                }
                let (name, price, answers) = buyers[index];
                let entry = counts.entry(name.to_string()).or_default();
                entry.attempts += 1.0;
                if rng.random::<f64>() < answers {
                    entry.answered += 1.0;
                    entry.connected += 1.0;
                    if rng.random::<f64>() < 0.8 {
                        entry.payable += 1.0;
                        return price;
                    }
                    return 0;
                }
            }
            0
        };
        let order =
            |stats: Option<&DestinationStats>, rng: &mut rand::rngs::StdRng| -> Vec<usize> {
                let candidates = buyers
                    .iter()
                    .enumerate()
                    .map(|(i, (name, price, _))| {
                        let score = match stats {
                            Some(s) => *price as f64 * s.answer_rate(name) * s.payable_rate(name),
                            None => *price as f64,
                        };
                        Candidate {
                            price: Cents(*price),
                            score,
                            tier: 1,
                            weight: 100,
                            item: i,
                        }
                    })
                    .collect();
                rank(candidates, Cents(0), || 1.0 - rng.random::<f64>())
                    .into_iter()
                    .map(|c| c.item)
                    .collect()
            };

        // History: a week of calls routed by price, as a new campaign would.
        for _ in 0..500 {
            let o = order(None, &mut rng);
            play(o, &mut rng, &mut counts);
        }
        let stats = DestinationStats::default();
        stats.install(counts.clone());
        assert!(
            stats.answer_rate("a") < 0.15,
            "the history shows A does not answer"
        );

        let calls = 20_000;
        let mut by_price = 0i64;
        let mut by_value = 0i64;
        let mut scratch = counts.clone();
        for _ in 0..calls {
            let o = order(None, &mut rng);
            by_price += play(o, &mut rng, &mut scratch);
            let o = order(Some(&stats), &mut rng);
            by_value += play(o, &mut rng, &mut scratch);
        }
        let (per_call_price, per_call_value) = (
            by_price as f64 / calls as f64,
            by_value as f64 / calls as f64,
        );
        assert!(
            per_call_value > per_call_price * 1.5,
            "expected value {per_call_value:.0} c/call vs price {per_call_price:.0} c/call"
        );
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    /// Two destinations equal in price, answer and payable rates: the one
    /// whose calls convert ranks first under expected value.
    #[test]
    fn measured_conversions_lift_expected_value() {
        let stats = DestinationStats::default();
        let base = Counts {
            attempts: 100.0,
            answered: 90.0,
            connected: 90.0,
            payable: 70.0,
            converted: 0.0,
        };
        stats.install(HashMap::from([
            (
                "converts".to_string(),
                Counts {
                    converted: 45.0,
                    ..base
                },
            ),
            ("silent".to_string(), base),
        ]));
        let ev = |id: &str| {
            1000.0
                * stats.answer_rate(id)
                * stats.payable_rate(id)
                * (1.0 + CONVERSION_WEIGHT * stats.conversion_rate(id))
        };
        assert!(ev("converts") > ev("silent") * 1.1);
        assert_eq!(stats.conversion_rate("silent"), 0.0);
    }
}
