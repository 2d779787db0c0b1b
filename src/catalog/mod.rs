//! The catalog: what bidbridge sells and to whom.
//!
//! - [`spec`]: the catalog document (TOML/YAML in git, rows in PostgreSQL).
//! - [`store`]: reading, applying and exporting the document in PostgreSQL.
//! - [`cache`]: the running daemon's copy, kept fresh by LISTEN/NOTIFY.
//! - this module: the runtime form the call flow reads — validated,
//!   compiled (time zones, schedules, targeting) and cross-linked (a
//!   tracking number points straight at its campaign and publisher, a
//!   campaign at its destinations), so a call never looks anything up twice.
//!
//! Runtime values are immutable and shared (`Arc`): a call holds the
//! version it started with even if the catalog is reloaded under it.

pub mod cache;
pub mod dial;
pub mod ivr;
pub mod schedule;
pub mod spec;
pub mod store;
pub mod targeting;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

use self::dial::{DialTarget, PromptName};
use self::ivr::IvrSpec;
use self::schedule::Schedule;
use self::spec::{
    AuctionType, BidExpiryAction, CampaignSpec, CapsSpec, CatalogDoc, CatalogIssue, DuplicateRule,
    NoticesSpec, PayoutSpec, PingDialect, Ranking, WithoutConsent,
};
use self::targeting::Targeting;
use crate::money::Cents;
use crate::phone::E164;

/// How a publisher is paid, resolved from the campaign or publisher rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutRule {
    None,
    Fixed {
        amount: Cents,
        min_talk_secs: Option<u32>,
    },
    Share {
        basis_points: u32,
        min_talk_secs: Option<u32>,
    },
}

impl PayoutRule {
    fn from_spec(spec: Option<&PayoutSpec>) -> PayoutRule {
        match spec {
            Some(PayoutSpec {
                fixed: Some(amount),
                min_talk_secs,
                ..
            }) => PayoutRule::Fixed {
                amount: *amount,
                min_talk_secs: *min_talk_secs,
            },
            Some(PayoutSpec {
                share_percent: Some(p),
                min_talk_secs,
                ..
            }) => PayoutRule::Share {
                basis_points: p.0,
                min_talk_secs: *min_talk_secs,
            },
            _ => PayoutRule::None,
        }
    }
}

#[derive(Debug)]
pub struct Publisher {
    pub id: String,
    pub name: String,
    pub payout: PayoutRule,
    pub floor: Option<Cents>,
    pub postback_url: Option<String>,
}

/// Caps and budget of a buyer or a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub per_hour: Option<u32>,
    pub per_day: Option<u32>,
    pub per_month: Option<u32>,
    pub total: Option<u32>,
    pub concurrency: Option<u32>,
    pub budget_per_day: Option<Cents>,
    pub budget_per_month: Option<Cents>,
}

impl Caps {
    fn from_spec(spec: &CapsSpec) -> Caps {
        Caps {
            per_hour: spec.per_hour,
            per_day: spec.per_day,
            per_month: spec.per_month,
            total: spec.total,
            concurrency: spec.concurrency,
            budget_per_day: spec.budget_per_day,
            budget_per_month: spec.budget_per_month,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Caps::default()
    }
}

#[derive(Debug)]
pub struct Buyer {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub allow_caller_number: bool,
    pub timezone: Tz,
    pub caps: Caps,
    pub notices: NoticesSpec,
    pub api_token_sha256: Option<String>,
}

/// How a destination takes part in an auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bidding {
    /// Asked over HTTP for a bid.
    Ping(PingEndpoint),
    /// Always bids this, without a ping.
    Static(Cents),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingEndpoint {
    pub url: String,
    pub dialect: PingDialect,
    /// Header name and value; the value is a secret and never logged.
    pub auth: Option<(String, String)>,
    /// Pings per second this endpoint accepts.
    pub rate_limit_per_sec: Option<u32>,
}

#[derive(Debug)]
pub struct Destination {
    pub id: String,
    pub buyer: Arc<Buyer>,
    pub enabled: bool,
    pub bidding: Bidding,
    pub dial: DialTarget,
    pub ring_timeout: Duration,
    pub tier: u8,
    pub weight: u32,
    pub min_talk_secs: Option<u32>,
    pub schedule: Schedule,
    pub caps: Caps,
    pub targeting: Targeting,
}

#[derive(Debug)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub vertical: String,
    pub currency: String,
    pub floor: Cents,
    pub auction_deadline: Option<Duration>,
    pub auction_type: AuctionType,
    pub second_price_increment: Cents,
    pub ranking: Ranking,
    pub tier_margin: Cents,
    pub min_talk_secs: u32,
    pub recording: bool,
    pub backup: Option<DialTarget>,
    pub duplicate: Option<DuplicateRule>,
    pub bid_expiry: BidExpiryAction,
    pub ivr: Option<IvrSpec>,
    pub payout: PayoutRule,
    /// IVR consent step: (prompt, key).
    pub consent_step: Option<(PromptName, char)>,
    pub require_consent: bool,
    pub without_consent: WithoutConsent,
    pub opt_out_key: Option<char>,
    pub opt_out_prompt: Option<PromptName>,
    /// STIR/SHAKEN rule: the weakest attestation accepted, and what happens below it.
    pub require_attestation: Option<crate::attestation::RequiredAttestation>,
    pub unattested: crate::attestation::UnattestedAction,
    /// Every destination that serves this campaign (enabled or not; the
    /// auction filters), in id order.
    pub destinations: Vec<Arc<Destination>>,
}

/// A tracking number, resolved.
#[derive(Debug)]
pub struct NumberRoute {
    pub number: E164,
    pub campaign: Arc<Campaign>,
    pub publisher: Arc<Publisher>,
    pub source: String,
}

impl NumberRoute {
    /// The payout rule in force for this number's calls: the campaign's when
    /// it has one, else the publisher's.
    pub fn payout_rule(&self) -> PayoutRule {
        match self.campaign.payout {
            PayoutRule::None => self.publisher.payout,
            rule => rule,
        }
    }
}

/// A complete, consistent catalog built from one document.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub numbers: HashMap<E164, Arc<NumberRoute>>,
    pub campaigns: HashMap<String, Arc<Campaign>>,
    pub buyers: HashMap<String, Arc<Buyer>>,
    pub publishers: HashMap<String, Arc<Publisher>>,
    pub blocklist: HashMap<E164, String>,
    pub destination_count: usize,
}

impl Snapshot {
    /// Validates and compiles `doc`. Any problem refuses the whole document:
    /// a half-applied catalog is worse than the previous one.
    pub fn build(doc: &CatalogDoc) -> Result<Snapshot, Vec<CatalogIssue>> {
        let issues = doc.validate();
        if !issues.is_empty() {
            return Err(issues);
        }
        let tz = |name: &str| name.parse::<Tz>().unwrap_or(Tz::UTC);

        let publishers: HashMap<String, Arc<Publisher>> = doc
            .publishers
            .iter()
            .map(|p| {
                let publisher = Publisher {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    payout: PayoutRule::from_spec(p.payout.as_ref()),
                    floor: p.floor,
                    postback_url: p.postback_url.clone(),
                };
                (p.id.clone(), Arc::new(publisher))
            })
            .collect();

        let mut buyers = HashMap::new();
        let mut by_campaign: HashMap<&str, Vec<Arc<Destination>>> = HashMap::new();
        let mut destination_count = 0;
        for b in &doc.buyers {
            let buyer = Arc::new(Buyer {
                id: b.id.clone(),
                name: b.name.clone(),
                enabled: b.enabled,
                allow_caller_number: b.allow_caller_number,
                timezone: tz(&b.timezone),
                caps: Caps::from_spec(&b.caps),
                notices: b.notices.clone(),
                api_token_sha256: b.api_token_sha256.clone(),
            });
            buyers.insert(b.id.clone(), buyer.clone());
            for d in &b.destinations {
                let Ok(dial) = d.dial.validate() else {
                    continue;
                };
                let bidding = match (&d.ping, d.static_price) {
                    (Some(ping), _) => Bidding::Ping(PingEndpoint {
                        url: ping.url.clone(),
                        dialect: ping.dialect,
                        auth: ping.auth_header.clone().zip(ping.auth_value.clone()),
                        rate_limit_per_sec: ping.rate_limit_per_sec,
                    }),
                    (None, Some(price)) => Bidding::Static(price),
                    (None, None) => continue,
                };
                let zone = tz(&d.timezone);
                let destination = Arc::new(Destination {
                    id: d.id.clone(),
                    buyer: buyer.clone(),
                    enabled: d.enabled,
                    bidding,
                    dial,
                    ring_timeout: Duration::from_secs(u64::from(d.ring_timeout_secs)),
                    tier: d.tier,
                    weight: d.weight,
                    min_talk_secs: d.min_talk_secs,
                    schedule: Schedule::compile(zone, d.hours.as_ref(), &d.closed_dates),
                    caps: Caps::from_spec(&d.caps),
                    targeting: Targeting::compile(&d.targeting),
                });
                destination_count += 1;
                for c in &d.campaigns {
                    by_campaign
                        .entry(c.as_str())
                        .or_default()
                        .push(destination.clone());
                }
            }
        }

        let campaigns: HashMap<String, Arc<Campaign>> = doc
            .campaigns
            .iter()
            .map(|c| {
                let mut destinations = by_campaign.remove(c.id.as_str()).unwrap_or_default();
                destinations.sort_by(|a, b| a.id.cmp(&b.id));
                (c.id.clone(), Arc::new(compile_campaign(c, destinations)))
            })
            .collect();

        let mut numbers = HashMap::new();
        for n in &doc.numbers {
            let (Ok(number), Some(campaign), Some(publisher)) = (
                E164::parse_strict(&n.number),
                campaigns.get(&n.campaign),
                publishers.get(&n.publisher),
            ) else {
                continue;
            };
            let route = NumberRoute {
                number: number.clone(),
                campaign: campaign.clone(),
                publisher: publisher.clone(),
                source: n.source.clone(),
            };
            numbers.insert(number, Arc::new(route));
        }

        let blocklist = doc
            .blocklist
            .iter()
            .filter_map(|b| {
                E164::parse_strict(&b.number)
                    .ok()
                    .map(|n| (n, b.reason.clone()))
            })
            .collect();

        Ok(Snapshot {
            numbers,
            campaigns,
            buyers,
            publishers,
            blocklist,
            destination_count,
        })
    }
}

fn compile_campaign(c: &CampaignSpec, destinations: Vec<Arc<Destination>>) -> Campaign {
    Campaign {
        id: c.id.clone(),
        name: c.name.clone(),
        vertical: c.vertical.clone(),
        currency: c.currency.clone(),
        floor: c.floor,
        auction_deadline: c
            .auction_deadline_ms
            .map(|ms| Duration::from_millis(u64::from(ms))),
        auction_type: c.auction_type,
        second_price_increment: c.second_price_increment,
        ranking: c.ranking,
        tier_margin: c.tier_margin,
        min_talk_secs: c.min_talk_secs,
        recording: c.recording,
        backup: c.backup.as_ref().and_then(|b| b.validate().ok()),
        duplicate: c.duplicate.clone(),
        bid_expiry: c.bid_expiry,
        ivr: c.ivr.clone(),
        payout: PayoutRule::from_spec(c.payout.as_ref()),
        consent_step: c
            .consent_prompt
            .clone()
            .zip(c.consent_key.as_deref().and_then(|k| k.chars().next())),
        require_consent: c.require_consent,
        without_consent: c.without_consent,
        opt_out_key: c.opt_out_key.as_deref().and_then(|k| k.chars().next()),
        opt_out_prompt: c.opt_out_prompt.clone(),
        require_attestation: c.require_attestation,
        unattested: c.unattested,
        destinations,
    }
}
