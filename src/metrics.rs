//! Prometheus metrics (`GET /metrics`).
//!
//! Counters are updated where things happen (the flow, the auction); values
//! that live elsewhere (journal depth, catalog age) are read at scrape time.
//! Label values are catalog ids and fixed enums only: never caller data,
//! never free text, so cardinality stays bounded by the catalog.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CampaignLabel {
    pub campaign: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub campaign: String,
    pub disposition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuyerLabel {
    pub buyer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BidLabels {
    pub buyer: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// freeswitch or asterisk.
    pub pbx: String,
    /// capacity or draining (see [`crate::admission::Refusal`]).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PostbackLabels {
    /// publisher_payable, buyer_win, ... (a fixed set).
    pub kind: String,
    /// delivered, retry, failed.
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub calls_in_progress: Family<CampaignLabel, Gauge>,
    pub calls: Family<CallLabels, Counter>,
    pub calls_refused: Family<RefusalLabels, Counter>,
    pub auctions: Family<CampaignLabel, Counter>,
    pub auction_seconds: Histogram,
    pub bid_latency_seconds: Family<BuyerLabel, Histogram>,
    pub bids: Family<BidLabels, Counter>,
    pub ineligible: Family<ReasonLabel, Counter>,
    pub bridge_outcomes: Family<OutcomeLabel, Counter>,
    pub payable_calls: Family<CampaignLabel, Counter>,
    pub revenue_cents: Family<CampaignLabel, Counter>,
    pub prompt_failures: Counter,
    pub destination_paused: Family<DestinationLabel, Gauge>,
    pub postback_attempts: Family<PostbackLabels, Counter>,
    pub journal_depth: Gauge,
    pub journal_bytes: Gauge,
    pub records_written: Gauge,
    pub records_dropped: Gauge,
    pub records_queue_depth: Gauge,
    pub records_queue_max_depth: Gauge,
    pub catalog_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Every call task alive (including those not yet identified).
    pub sessions: Gauge,
    sessions_raw: AtomicI64,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~4 s, doubling: pings live in the 5-150 ms range.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 13,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bidbridge");
        let m = Metrics {
            calls_in_progress: Family::default(),
            calls: Family::default(),
            calls_refused: Family::default(),
            auctions: Family::default(),
            auction_seconds: latency_histogram(),
            bid_latency_seconds: Family::new_with_constructor(latency_histogram),
            bids: Family::default(),
            ineligible: Family::default(),
            bridge_outcomes: Family::default(),
            payable_calls: Family::default(),
            revenue_cents: Family::default(),
            prompt_failures: Counter::default(),
            destination_paused: Family::default(),
            postback_attempts: Family::default(),
            journal_depth: Gauge::default(),
            journal_bytes: Gauge::default(),
            records_written: Gauge::default(),
            records_dropped: Gauge::default(),
            records_queue_depth: Gauge::default(),
            records_queue_max_depth: Gauge::default(),
            catalog_age_seconds: Gauge::default(),
            sessions: Gauge::default(),
            sessions_raw: AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "calls_in_progress",
            "Calls being handled, by campaign",
            m.calls_in_progress.clone(),
        );
        registry.register(
            "calls",
            "Finished calls by campaign and disposition",
            m.calls.clone(),
        );
        registry.register(
            "calls_refused",
            "Calls handed straight back to the switch's dialplan (its failover) without being served, by PBX and reason: capacity (calls.max_concurrent reached) or draining (still queued when a shutdown stopped accepting)",
            m.calls_refused.clone(),
        );
        registry.register("auctions", "Auctions run, by campaign", m.auctions.clone());
        registry.register(
            "auction_duration_seconds",
            "Time from auction start to ranked list",
            m.auction_seconds.clone(),
        );
        registry.register(
            "bid_latency_seconds",
            "Ping round trip, by buyer",
            m.bid_latency_seconds.clone(),
        );
        registry.register("bids", "Auction answers by buyer and status (bid, no_bid, timeout, error, invalid, below_floor)", m.bids.clone());
        registry.register(
            "ineligible",
            "Destinations kept out of an auction, by reason",
            m.ineligible.clone(),
        );
        registry.register(
            "bridge_attempts",
            "Bridge attempts by outcome",
            m.bridge_outcomes.clone(),
        );
        registry.register(
            "payable_calls",
            "Calls that met the minimum talk time, by campaign",
            m.payable_calls.clone(),
        );
        registry.register(
            "revenue_cents",
            "Revenue of payable calls in minor currency units, by campaign",
            m.revenue_cents.clone(),
        );
        registry.register(
            "prompt_failures",
            "Prompts the switch could not play (operator alert)",
            m.prompt_failures.clone(),
        );
        registry.register(
            "postback_attempts",
            "Postback and notice attempts by kind and result (delivered, retry, failed)",
            m.postback_attempts.clone(),
        );
        registry.register(
            "journal_depth",
            "Call records in the journal not yet in PostgreSQL",
            m.journal_depth.clone(),
        );
        registry.register(
            "journal_bytes",
            "Bytes used by the record journal",
            m.journal_bytes.clone(),
        );
        registry.register(
            "records_written",
            "Call records written to PostgreSQL since start",
            m.records_written.clone(),
        );
        registry.register(
            "records_dropped",
            "Call records that could not be queued (should be 0)",
            m.records_dropped.clone(),
        );
        registry.register(
            "records_queue_depth",
            "Call records handed to the writer and not yet taken off its queue",
            m.records_queue_depth.clone(),
        );
        registry.register(
            "records_queue_max_depth",
            "Largest records_queue_depth since start (writer backlog under load)",
            m.records_queue_max_depth.clone(),
        );
        registry.register(
            "catalog_age_seconds",
            "Seconds since the catalog was last loaded",
            m.catalog_age_seconds.clone(),
        );
        registry.register(
            "sessions",
            "Switch sessions open (calls in any stage)",
            m.sessions.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn session_started(&self) {
        let n = self.sessions_raw.fetch_add(1, Ordering::Relaxed) + 1;
        self.sessions.set(n);
    }

    pub fn session_ended(&self) {
        let n = self.sessions_raw.fetch_sub(1, Ordering::Relaxed) - 1;
        self.sessions.set(n);
    }

    pub fn open_sessions(&self) -> i64 {
        self.sessions_raw.load(Ordering::Relaxed)
    }
}
