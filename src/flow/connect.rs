//! Connecting the caller: the ranked offers one after another, then the
//! backup line.
//!
//! The loop is a plain function of the attempt list (what was tried, how
//! it ended) in the spirit of a retry policy: each step picks the next
//! offer, checks it is still good (not expired, admitted by the caps), arms
//! the switch-side failsafe, bridges, and records the attempt. It stops at
//! the first answered attempt, unless the buyer hung up within the recovery
//! window while the caller is still there, in which case the caller is
//! offered to the next bidder.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use super::Call;
use crate::auction::{AuctionInput, Offer};
use crate::catalog::dial::DialTarget;
use crate::catalog::spec::BidExpiryAction;
use crate::ledger::record::{AttemptKind, AttemptRecord};
use crate::pbx::{BridgeOutcome, BridgeRequest, CallChannel, ChannelError, LegStatus, Party};
use crate::services::Services;

/// Who took the call.
#[derive(Debug, Clone)]
pub enum Taker {
    Buyer(Box<Offer>),
    Backup,
}

#[derive(Debug, Default)]
pub struct ConnectResult {
    /// The last answered attempt (after any recovery), with its outcome.
    pub answered: Option<(Taker, BridgeOutcome)>,
    /// Status of the last failed attempt: the cause the caller hears.
    pub last_failure: Option<LegStatus>,
}

impl ConnectResult {
    pub fn caller_gone(&self) -> bool {
        self.last_failure == Some(LegStatus::CallerGone)
            || self
                .answered
                .as_ref()
                .is_some_and(|(_, o)| o.ended_by == Some(Party::Caller))
    }
}

/// Walks `offers`, then the campaign's backup line.
pub async fn connect<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    offers: Vec<Offer>,
    services: &Services,
) -> Result<ConnectResult, ChannelError> {
    let mut result = ConnectResult::default();
    let Some(route) = call.route.clone() else {
        return Ok(result);
    };
    let campaign = route.campaign.clone();
    let max_attempts = services.config.calls.max_attempts as usize;
    let recovery_window = Duration::from_secs(services.config.calls.recovery_window_secs);
    let grace = Duration::from_secs(services.config.calls.failsafe_grace_secs);

    let mut queue: std::collections::VecDeque<Offer> = offers.into();
    let mut tried: HashSet<String> = HashSet::new();
    let mut buyer_attempts = 0;
    let mut rerun_done = false;
    let mut recovering = false;

    while buyer_attempts < max_attempts {
        let Some(offer) = queue.pop_front() else {
            break;
        };
        if tried.contains(&offer.destination.id) {
            continue;
        }
        // A bid that expired while earlier destinations rang. Its
        // destination was never dialled, so a re-run may ask it again.
        if offer.expires_at.is_some_and(|at| at <= Utc::now()) {
            call.record
                .attempts
                .push(skipped(&offer, "bid expired before its turn"));
            if campaign.bid_expiry == BidExpiryAction::Rerun && !rerun_done {
                rerun_done = true;
                let fresh = rerun(call, &tried, services).await;
                queue = fresh.into();
            }
            continue;
        }
        tried.insert(offer.destination.id.clone());
        let kind = if recovering {
            AttemptKind::Recovery
        } else if buyer_attempts == 0 {
            AttemptKind::Winner
        } else {
            AttemptKind::Fallthrough
        };
        // Exact cross-node admission for capped destinations: one round
        // trip, for this destination only, right before it rings.
        let reservation = match &services.caps {
            Some(caps) => match caps
                .admit(call.record.call_id, &offer.destination, offer.price_charged)
                .await
            {
                Ok(reservation) => reservation,
                Err(refusal) => {
                    tracing::info!(destination = %offer.destination.id, %refusal, "skipping a destination at admission");
                    call.record
                        .attempts
                        .push(skipped(&offer, &refusal.to_string()));
                    continue;
                }
            },
            None => None,
        };
        buyer_attempts += 1;
        let attempted = attempt(
            channel,
            call,
            &offer.dial,
            offer.destination.ring_timeout,
            kind,
            Some(&offer),
            campaign.backup.as_ref(),
            grace,
        )
        .await;
        if let (Some(caps), Some(reservation)) = (&services.caps, reservation) {
            let (answered, payable_price) = match &attempted {
                Ok(o) if o.status == LegStatus::Answered => {
                    let payable = o
                        .talk_time
                        .is_some_and(|t| t.as_secs() >= u64::from(offer.min_talk_secs));
                    (true, payable.then_some(offer.price_charged))
                }
                _ => (false, None),
            };
            caps.settle(reservation, answered, payable_price).await;
        }
        let outcome = attempted?;
        if outcome.status != LegStatus::CallerGone {
            services
                .health
                .observe(&offer.destination.id, outcome.status == LegStatus::NoAnswer);
        }
        let status = outcome.status;
        services
            .metrics
            .bridge_outcomes
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: status.as_str().into(),
            })
            .inc();
        match status {
            LegStatus::Answered => {
                let short_and_caller_waiting = outcome.ended_by == Some(Party::Buyer)
                    && outcome.talk_time.is_some_and(|t| t < recovery_window)
                    && !channel.presence().is_gone();
                result.answered = Some((Taker::Buyer(Box::new(offer)), outcome));
                if short_and_caller_waiting && !recovery_window.is_zero() {
                    tracing::info!(
                        "buyer hung up within the recovery window; offering the caller to the next bidder"
                    );
                    recovering = true;
                    continue;
                }
                return Ok(result);
            }
            LegStatus::CallerGone => {
                result.last_failure = Some(status);
                return Ok(result);
            }
            other => {
                result.last_failure = Some(other);
                if channel.presence().is_gone() {
                    return Ok(result);
                }
            }
        }
    }

    // No buyer took the call, or a recovery found no new buyer for a caller
    // who is still waiting: the backup line. After a failed recovery the
    // first buyer stays the call's winner; the backup attempt is recorded.
    let recovering_caller = result.answered.is_some();
    if let Some(backup) = campaign.backup.clone()
        && !channel.presence().is_gone()
    {
        let outcome = attempt(
            channel,
            call,
            &backup,
            Duration::from_secs(60),
            AttemptKind::Backup,
            None,
            None,
            grace,
        )
        .await?;
        services
            .metrics
            .bridge_outcomes
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: outcome.status.as_str().into(),
            })
            .inc();
        if !recovering_caller {
            match outcome.status {
                LegStatus::Answered => result.answered = Some((Taker::Backup, outcome)),
                other => result.last_failure = Some(other),
            }
        }
    }
    Ok(result)
}

/// One bridge attempt, recorded whatever happens.
#[allow(clippy::too_many_arguments)]
async fn attempt<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    target: &DialTarget,
    ring_timeout: Duration,
    kind: AttemptKind,
    offer: Option<&Offer>,
    failsafe_backup: Option<&DialTarget>,
    grace: Duration,
) -> Result<BridgeOutcome, ChannelError> {
    // If we stop responding while this leg rings, the switch moves the
    // caller to the backup line itself.
    if let Err(e) = channel
        .arm_failsafe(failsafe_backup, ring_timeout + grace)
        .await
    {
        if e.ends_call_control() {
            return Err(e);
        }
        tracing::warn!(error = %e, "could not arm the switch-side failsafe");
        call.record.notes.push(format!("failsafe not armed: {e}"));
    }
    let started_at = Utc::now();
    call.record.times.first_ring_at.get_or_insert(started_at);
    let request = BridgeRequest {
        target: target.clone(),
        ring_timeout,
        call_id: call.record.call_id.to_string(),
        caller_id_number: None,
    };
    tracing::info!(target = %target, kind = kind.as_str(), "bridging");
    let outcome = channel.bridge(&request).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Record the attempt that was cut short, then stop.
            call.record.attempts.push(AttemptRecord {
                buyer_id: offer.map(|o| o.destination.buyer.id.clone()),
                destination_id: offer.map(|o| o.destination.id.clone()),
                kind,
                target: target.to_string(),
                started_at,
                ring_ms: (Utc::now() - started_at).num_milliseconds().max(0) as u64,
                answered_at: None,
                ended_at: Some(Utc::now()),
                talk_ms: None,
                outcome: Some(if e.is_caller_gone() {
                    LegStatus::CallerGone
                } else {
                    LegStatus::Failed
                }),
                cause: Some(e.to_string()),
                detail: None,
                ended_by: None,
            });
            return Err(e);
        }
    };
    tracing::info!(target = %target, status = outcome.status.as_str(), cause = ?outcome.cause, talk_ms = ?outcome.talk_time.map(|t| t.as_millis()), "bridge attempt ended");
    if outcome.status == LegStatus::Answered && call.record.times.answered_at.is_none() {
        call.record.times.answered_at = outcome.answered_at.or(Some(Utc::now()));
    }
    call.record.attempts.push(AttemptRecord {
        buyer_id: offer.map(|o| o.destination.buyer.id.clone()),
        destination_id: offer.map(|o| o.destination.id.clone()),
        kind,
        target: target.to_string(),
        started_at,
        ring_ms: outcome.ring_time.as_millis() as u64,
        answered_at: outcome.answered_at,
        ended_at: outcome.ended_at,
        talk_ms: outcome.talk_time.map(|t| t.as_millis() as u64),
        outcome: Some(outcome.status),
        cause: outcome.cause.clone(),
        detail: outcome.detail.clone(),
        ended_by: outcome.ended_by,
    });
    Ok(outcome)
}

fn skipped(offer: &Offer, why: &str) -> AttemptRecord {
    let now = Utc::now();
    AttemptRecord {
        buyer_id: Some(offer.destination.buyer.id.clone()),
        destination_id: Some(offer.destination.id.clone()),
        kind: AttemptKind::Fallthrough,
        target: offer.dial.to_string(),
        started_at: now,
        ring_ms: 0,
        answered_at: None,
        ended_at: None,
        talk_ms: None,
        outcome: None,
        cause: Some(why.to_string()),
        detail: None,
        ended_by: None,
    }
}

/// Runs the auction again for the destinations not yet tried.
async fn rerun(call: &mut Call, tried: &HashSet<String>, services: &Services) -> Vec<Offer> {
    let Some(route) = call.route.clone() else {
        return Vec::new();
    };
    let call_id = call.record.call_id.to_string();
    let input = AuctionInput {
        call_id: &call_id,
        route: &route,
        facts: &call.facts,
        now: Utc::now(),
        exclude: tried,
        consent: call.consent,
        static_only: call.static_only,
        test: false,
    };
    let outcome = services
        .auctioneer
        .run(&input, &services.gate(), services.scorer.as_ref())
        .await;
    call.record.notes.push(format!(
        "auction re-run after an expired bid: {} new offer(s)",
        outcome.offers.len()
    ));
    let offset = call.record.bids.len();
    call.record.bids.extend(outcome.bids);
    call.note_shared(outcome.shared);
    outcome
        .offers
        .into_iter()
        .map(|mut o| {
            o.bid_index += offset;
            o
        })
        .collect()
}
