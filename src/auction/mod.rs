//! The auction: who may bid, asking them all at once, and the ranked list
//! of offers the connect stage walks through.
//!
//! - [`eligibility`]: decided from memory before any ping.
//! - [`ping`]: one HTTP exchange per pinged destination, all in parallel,
//!   under one deadline; the auction closes as soon as every ping has
//!   answered, or at the deadline, whichever is first.
//! - [`protocol`]: what is sent and what a buyer may answer.
//! - [`rank`]: the order of the usable bids and the price each would pay.
//!
//! What it must never do: wait past its deadline, let one buyer's failure
//! affect another's bid, or put caller data in a ping the buyer may not have.

pub mod eligibility;
pub mod health;
pub mod ping;
pub mod protocol;
pub mod rank;
pub mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use self::eligibility::{CallFacts, Gate};
use self::ping::{PingAnswer, PingClient};
use self::protocol::{CallerData, NotABid, ParsedBid, PingContext};
use self::rank::Candidate;
use crate::catalog::dial::DialTarget;
use crate::catalog::spec::Ranking;
use crate::catalog::{Bidding, Campaign, Destination, NumberRoute};
use crate::config::{AuctionConfig, PingStrategy};
use crate::ledger::record::{BidRecord, BidStatus, SharingRecord};
use crate::money::Cents;

/// Ineligible destinations beyond this many are counted, not recorded one
/// by one (a campaign with 1,000 destinations must not write 1,000 rows
/// per call to explain why most of them were closed).
pub const MAX_INELIGIBLE_RECORDED: usize = 32;

/// A ranked, usable bid: what the connect stage dials.
#[derive(Debug, Clone)]
pub struct Offer {
    pub destination: Arc<Destination>,
    /// Where to dial: the bid's override or the destination's own target.
    pub dial: DialTarget,
    pub price_bid: Cents,
    pub price_charged: Cents,
    pub bid_id: Option<String>,
    /// Talk time this offer needs to be payable.
    pub min_talk_secs: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub win_url: Option<String>,
    pub billing_url: Option<String>,
    pub loss_url: Option<String>,
    /// Index of this offer's row in [`AuctionOutcome::bids`].
    pub bid_index: usize,
}

#[derive(Debug, Default)]
pub struct AuctionOutcome {
    pub bids: Vec<BidRecord>,
    /// Best first.
    pub offers: Vec<Offer>,
    /// From the start of the auction to the ranked list.
    pub took: Duration,
    /// The longest time a ping took among those answered in time: the
    /// auction's own overhead is `took - slowest_answer`.
    pub slowest_answer: Duration,
    /// Ineligible destinations by reason (all of them, recorded or not).
    pub ineligible: BTreeMap<&'static str, usize>,
    pub pinged: usize,
    /// One row per ping sent: who got which caller fields (the call adds
    /// the consent reference and keeps them for the sharing log).
    pub shared: Vec<SharingRecord>,
}

/// What the call brings to an auction.
pub struct AuctionInput<'a> {
    pub call_id: &'a str,
    pub route: &'a NumberRoute,
    pub facts: &'a CallFacts,
    pub now: DateTime<Utc>,
    /// Destinations not to ask again (already tried on this call).
    pub exclude: &'a HashSet<String>,
    /// Is the caller's consent to share their number on record?
    pub consent: bool,
    /// No caller data may leave the daemon (`require_consent` without
    /// consent, `without_consent = "static_only"`): only static-price
    /// destinations take part; nobody is pinged.
    pub static_only: bool,
    pub test: bool,
}

/// Scores for expected-value ranking: the chance a destination answers and
/// that an answered call becomes payable.
pub trait Scorer: Send + Sync {
    fn answer_rate(&self, destination_id: &str) -> f64;
    fn payable_rate(&self, destination_id: &str) -> f64;
    /// Share of connected calls the buyer reported a conversion for.
    fn conversion_rate(&self, _destination_id: &str) -> f64 {
        0.0
    }
}

/// Runs auctions; one per daemon, shared by every call.
pub struct Auctioneer {
    pings: PingClient,
    settings: AuctionConfig,
    /// Key for the per-buyer caller hashes (see [`caller_hash`]).
    hash_key: Vec<u8>,
    /// Recent answers by (destination, caller): a caller who calls again
    /// within seconds is not pinged about twice.
    reuse: Option<moka::sync::Cache<(String, String), Reusable>>,
    /// Pings sent this second, per rate-limited destination.
    rate: std::sync::Mutex<HashMap<String, (u64, u32)>>,
}

/// An answer worth reusing: a bid, or an explicit no-bid.
#[derive(Debug, Clone)]
enum Reusable {
    Bid(ParsedBid, std::time::Instant),
    NoBid(Option<String>, std::time::Instant),
}

impl Auctioneer {
    pub fn new(settings: AuctionConfig, hash_key: Vec<u8>) -> Auctioneer {
        Auctioneer {
            pings: PingClient::new(settings.max_response_bytes, settings.pool_idle_per_host),
            reuse: (settings.reuse_bid_secs > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(settings.reuse_bid_secs))
                    .build()
            }),
            rate: std::sync::Mutex::new(HashMap::new()),
            settings,
            hash_key,
        }
    }

    pub fn deadline(&self, campaign: &Campaign) -> Duration {
        campaign
            .auction_deadline
            .unwrap_or(Duration::from_millis(self.settings.default_deadline_ms))
    }

    pub async fn run(
        &self,
        input: &AuctionInput<'_>,
        gate: &dyn Gate,
        scorer: &dyn Scorer,
    ) -> AuctionOutcome {
        let started = Instant::now();
        let campaign = &input.route.campaign;
        let deadline_len = self.deadline(campaign);
        let floor = campaign
            .floor
            .max(input.route.publisher.floor.unwrap_or(Cents::ZERO));
        let target = input.facts.target_facts(&campaign.vertical);

        let mut outcome = AuctionOutcome::default();
        let mut accepted: Vec<(Arc<Destination>, ParsedBid, usize)> = Vec::new();
        let mut to_ping: Vec<(Arc<Destination>, crate::catalog::PingEndpoint)> = Vec::new();
        for destination in &campaign.destinations {
            if let Err(reason) =
                eligibility::check(destination, &target, input.now, input.exclude, gate)
            {
                *outcome.ineligible.entry(reason).or_default() += 1;
                if outcome.ineligible.values().sum::<usize>() <= MAX_INELIGIBLE_RECORDED {
                    outcome.bids.push(bid_row(
                        destination,
                        BidStatus::Ineligible,
                        Some(reason.to_string()),
                    ));
                }
                continue;
            }
            match &destination.bidding {
                Bidding::Static(price) => {
                    let parsed = ParsedBid {
                        price: *price,
                        bid_id: None,
                        min_talk_secs: None,
                        destination: None,
                        expires_at: None,
                        win_url: None,
                        billing_url: None,
                        loss_url: None,
                    };
                    self.consider(
                        destination,
                        parsed,
                        None,
                        floor,
                        &mut outcome,
                        &mut accepted,
                    );
                }
                Bidding::Ping(_) if input.static_only => {
                    let reason = "no consent: static-price destinations only";
                    *outcome.ineligible.entry(reason).or_default() += 1;
                    if outcome.ineligible.values().sum::<usize>() <= MAX_INELIGIBLE_RECORDED {
                        outcome.bids.push(bid_row(
                            destination,
                            BidStatus::Ineligible,
                            Some(reason.to_string()),
                        ));
                    }
                }
                Bidding::Ping(endpoint) => {
                    if let Some(reused) = self.reused(&destination.id, input.facts.caller.as_ref())
                    {
                        match reused {
                            Reusable::Bid(parsed, at) => {
                                self.consider(
                                    destination,
                                    parsed,
                                    None,
                                    floor,
                                    &mut outcome,
                                    &mut accepted,
                                );
                                if let Some(row) = outcome.bids.last_mut() {
                                    row.reason = Some(format!(
                                        "reused the answer to a ping {} ms ago",
                                        at.elapsed().as_millis()
                                    ));
                                }
                            }
                            Reusable::NoBid(reason, at) => {
                                let why = format!(
                                    "reused the answer to a ping {} ms ago{}",
                                    at.elapsed().as_millis(),
                                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                                );
                                outcome.bids.push(bid_row(
                                    destination,
                                    BidStatus::NoBid,
                                    Some(why),
                                ));
                            }
                        }
                        continue;
                    }
                    if let Some(limit) = endpoint.rate_limit_per_sec
                        && !self.take_ping_slot(&destination.id, limit)
                    {
                        *outcome.ineligible.entry("ping rate limit").or_default() += 1;
                        outcome.bids.push(bid_row(
                            destination,
                            BidStatus::Ineligible,
                            Some("ping rate limit".into()),
                        ));
                        continue;
                    }
                    to_ping.push((destination.clone(), endpoint.clone()))
                }
            }
        }

        let caller_base = CallerData {
            area_code: input.facts.area_code.clone(),
            state: input.facts.state.clone(),
            zip: input.facts.zip.clone(),
            local_time: input.facts.local_time.map(|t| t.to_rfc3339()),
            number_hash: None,
            number: None,
        };
        let ping_one =
            |(destination, endpoint): (Arc<Destination>, crate::catalog::PingEndpoint),
             deadline: Instant| {
                let buyer = &destination.buyer;
                let mut caller = caller_base.clone();
                if let Some(number) = &input.facts.caller {
                    caller.number_hash = caller_hash(&self.hash_key, &buyer.id, number);
                    // The number itself only with both the buyer's permission and consent.
                    if buyer.allow_caller_number && input.consent {
                        caller.number = Some(number.to_string());
                    }
                }
                let context = PingContext {
                    ping_id: uuid::Uuid::new_v4().to_string(),
                    call_id: input.call_id,
                    tmax_ms: deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis() as u64,
                    auction_type: campaign.auction_type,
                    floor,
                    currency: &campaign.currency,
                    campaign_id: &campaign.id,
                    vertical: &campaign.vertical,
                    source: &input.route.source,
                    caller,
                    tags: &input.facts.tags,
                    test: input.test,
                };
                let body = protocol::request_body(endpoint.dialect, &context);
                let fields = protocol::shared_fields(endpoint.dialect, &context);
                async move {
                    let shared = SharingRecord {
                        channel: "ping".into(),
                        party_kind: "buyer".into(),
                        party_id: destination.buyer.id.clone(),
                        destination_id: Some(destination.id.clone()),
                        fields,
                        consent_seq: None,
                        shared_at: Utc::now(),
                    };
                    let sent = Instant::now();
                    let answer = self.pings.ping(&endpoint, body, deadline).await;
                    (
                        destination,
                        endpoint.dialect,
                        answer,
                        sent.elapsed(),
                        shared,
                    )
                }
            };

        outcome.pinged = to_ping.len();
        let mut answers = Vec::with_capacity(to_ping.len());
        match self.settings.strategy {
            PingStrategy::Parallel => {
                let deadline = started + deadline_len;
                let mut inflight: FuturesUnordered<_> =
                    to_ping.into_iter().map(|d| ping_one(d, deadline)).collect();
                while let Some(answer) = inflight.next().await {
                    answers.push(answer);
                }
            }
            PingStrategy::Sequential => {
                // A traditional ping tree: one buyer at a time, each with the
                // full deadline. Kept for benchmarks, never the default.
                for destination in to_ping {
                    answers.push(ping_one(destination, Instant::now() + deadline_len).await);
                }
            }
        }

        let now = Utc::now();
        for (destination, dialect, answer, latency, shared) in answers {
            outcome.shared.push(shared);
            let latency_us = Some(latency.as_micros() as u64);
            let (status, reason, parsed) = match answer {
                PingAnswer::Timeout => (
                    BidStatus::Timeout,
                    Some(format!("no answer within {} ms", deadline_len.as_millis())),
                    None,
                ),
                PingAnswer::TooLarge => (
                    BidStatus::Invalid,
                    Some(format!(
                        "response over {} bytes",
                        self.settings.max_response_bytes
                    )),
                    None,
                ),
                PingAnswer::Error(e) => (BidStatus::Error, Some(e), None),
                PingAnswer::Response { status, body } => {
                    outcome.slowest_answer = outcome.slowest_answer.max(latency);
                    match protocol::parse_response(
                        dialect,
                        status,
                        &body,
                        &campaign.currency,
                        &destination.dial,
                        now,
                    ) {
                        Ok(parsed) => (BidStatus::Bid, None, Some(parsed)),
                        Err(NotABid::Declined(reason)) => (BidStatus::NoBid, reason, None),
                        Err(NotABid::Invalid(reason)) => (BidStatus::Invalid, Some(reason), None),
                    }
                }
            };
            if let Some(caller) = &input.facts.caller
                && let Some(cache) = &self.reuse
            {
                let key = (destination.id.clone(), caller.to_string());
                match (&parsed, status) {
                    (Some(p), _) if p.expires_at.is_none_or(|at| at > now) => {
                        cache.insert(key, Reusable::Bid(p.clone(), std::time::Instant::now()))
                    }
                    (None, BidStatus::NoBid) => cache.insert(
                        key,
                        Reusable::NoBid(reason.clone(), std::time::Instant::now()),
                    ),
                    _ => {}
                }
            }
            match parsed {
                Some(parsed) => self.consider(
                    &destination,
                    parsed,
                    latency_us,
                    floor,
                    &mut outcome,
                    &mut accepted,
                ),
                None => {
                    let mut row = bid_row(&destination, status, reason);
                    row.latency_us = latency_us;
                    outcome.bids.push(row);
                }
            }
        }

        // Rank and price.
        let candidates: Vec<Candidate<(Arc<Destination>, ParsedBid, usize)>> = accepted
            .into_iter()
            .map(|(destination, parsed, index)| {
                let score = match campaign.ranking {
                    Ranking::Price => parsed.price.0 as f64,
                    Ranking::ExpectedValue => {
                        parsed.price.0 as f64
                            * scorer.answer_rate(&destination.id)
                            * scorer.payable_rate(&destination.id)
                            * (1.0
                                + stats::CONVERSION_WEIGHT
                                    * scorer.conversion_rate(&destination.id))
                    }
                };
                Candidate {
                    price: parsed.price,
                    score,
                    tier: destination.tier,
                    weight: destination.weight,
                    item: (destination, parsed, index),
                }
            })
            .collect();
        let ranked = rank::rank(candidates, campaign.tier_margin, || {
            1.0 - rand::random::<f64>()
        });
        let prices: Vec<Cents> = ranked.iter().map(|c| c.price).collect();
        for (position, candidate) in ranked.into_iter().enumerate() {
            let (destination, parsed, index) = candidate.item;
            outcome.bids[index].rank = Some((position + 1) as u16);
            // Kept in the record: the outbox sends the bid's own notices.
            outcome.bids[index].notices = crate::ledger::record::BidNoticeUrls {
                win_url: parsed.win_url.clone(),
                billing_url: parsed.billing_url.clone(),
                loss_url: parsed.loss_url.clone(),
            };
            let min_talk_secs = parsed
                .min_talk_secs
                .or(destination.min_talk_secs)
                .unwrap_or(campaign.min_talk_secs);
            outcome.offers.push(Offer {
                dial: parsed
                    .destination
                    .clone()
                    .unwrap_or_else(|| destination.dial.clone()),
                price_bid: parsed.price,
                price_charged: rank::price_charged(
                    &prices,
                    position,
                    campaign.auction_type,
                    floor,
                    campaign.second_price_increment,
                ),
                bid_id: parsed.bid_id,
                min_talk_secs,
                expires_at: parsed.expires_at,
                win_url: parsed.win_url,
                billing_url: parsed.billing_url,
                loss_url: parsed.loss_url,
                bid_index: index,
                destination,
            });
        }
        outcome.took = started.elapsed();
        outcome
    }

    /// An answer this destination gave for this caller moments ago.
    fn reused(&self, destination: &str, caller: Option<&crate::phone::E164>) -> Option<Reusable> {
        let (cache, caller) = (self.reuse.as_ref()?, caller?);
        let found = cache.get(&(destination.to_string(), caller.to_string()))?;
        match &found {
            Reusable::Bid(parsed, _) if parsed.expires_at.is_some_and(|at| at <= Utc::now()) => {
                None
            }
            _ => Some(found),
        }
    }

    /// Takes one of this second's pings for a rate-limited destination.
    fn take_ping_slot(&self, destination: &str, per_sec: u32) -> bool {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let Ok(mut rate) = self.rate.lock() else {
            return true;
        };
        let slot = rate.entry(destination.to_string()).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        if slot.1 >= per_sec {
            return false;
        }
        slot.1 += 1;
        true
    }

    /// Records a parsed bid and keeps it when it clears the floor.
    fn consider(
        &self,
        destination: &Arc<Destination>,
        parsed: ParsedBid,
        latency_us: Option<u64>,
        floor: Cents,
        outcome: &mut AuctionOutcome,
        accepted: &mut Vec<(Arc<Destination>, ParsedBid, usize)>,
    ) {
        let mut row = bid_row(destination, BidStatus::Bid, None);
        row.latency_us = latency_us;
        row.price = Some(parsed.price);
        row.bid_id = parsed.bid_id.clone();
        row.min_talk_secs = parsed.min_talk_secs;
        row.expires_at = parsed.expires_at;
        if parsed.price < floor {
            row.status = BidStatus::BelowFloor;
            row.reason = Some(format!("{} under the floor {}", parsed.price, floor));
            outcome.bids.push(row);
            return;
        }
        outcome.bids.push(row);
        accepted.push((destination.clone(), parsed, outcome.bids.len() - 1));
    }
}

fn bid_row(destination: &Destination, status: BidStatus, reason: Option<String>) -> BidRecord {
    BidRecord {
        buyer_id: destination.buyer.id.clone(),
        destination_id: destination.id.clone(),
        status,
        reason,
        bid_id: None,
        price: None,
        min_talk_secs: None,
        expires_at: None,
        latency_us: None,
        rank: None,
        notices: Default::default(),
    }
}

/// HMAC-SHA256(key, buyer id ‖ caller) in hex: the same caller gets the same
/// hash at one buyer on every call, and different hashes at different
/// buyers, so buyers cannot join their lists. `None` without a key: an
/// unkeyed hash of a phone number is reversible by brute force, and sending
/// it would leak the number.
pub fn caller_hash(key: &[u8], buyer_id: &str, caller: &crate::phone::E164) -> Option<String> {
    use hmac::{KeyInit, Mac};
    if key.is_empty() {
        return None;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
    mac.update(buyer_id.as_bytes());
    mac.update(b"\0");
    mac.update(caller.as_str().as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// A scorer with no history: every destination is assumed to answer and pay.
pub struct NeutralScorer;

impl Scorer for NeutralScorer {
    fn answer_rate(&self, _: &str) -> f64 {
        1.0
    }
    fn payable_rate(&self, _: &str) -> f64 {
        1.0
    }
}
