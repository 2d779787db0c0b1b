//! One call's whole story, as the call flow hands it to the record writer
//! and as the journal stores it while PostgreSQL is away.
//!
//! The record is plain data with serde: the journal writes it as one JSON
//! line, and the writer inserts it into `calls`, `bids`, `bridge_attempts`
//! and `consent_records` keyed by `call_id` (+ `seq`), so writing the same
//! record twice changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Cents;
use crate::pbx::{LegStatus, Party, PbxKind};

/// How far a call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Identify,
    Screen,
    Ivr,
    Auction,
    Connect,
    Bridged,
    Settled,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Identify => "identify",
            Stage::Screen => "screen",
            Stage::Ivr => "ivr",
            Stage::Auction => "auction",
            Stage::Connect => "connect",
            Stage::Bridged => "bridged",
            Stage::Settled => "settled",
        }
    }
}

/// How the call ended, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// A buyer answered.
    Sold,
    /// The backup line answered.
    Backup,
    /// Nobody (buyer or backup) took the call.
    NoBuyer,
    /// Refused by screening (blocklist, do-not-call, duplicate rule).
    Rejected,
    /// The dialled number is not a tracking number.
    UnknownNumber,
    /// The caller hung up before anyone answered.
    Abandoned,
    /// Lost control of the call (switch connection dropped, internal error).
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Sold => "sold",
            Disposition::Backup => "backup",
            Disposition::NoBuyer => "no_buyer",
            Disposition::Rejected => "rejected",
            Disposition::UnknownNumber => "unknown_number",
            Disposition::Abandoned => "abandoned",
            Disposition::Failed => "failed",
        }
    }
}

/// What became of one destination in the auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidStatus {
    /// A valid bid at or above the floor.
    Bid,
    /// The buyer declined (HTTP 204 or `{"bid": null}`).
    NoBid,
    /// A bid under the floor.
    BelowFloor,
    /// No answer before the deadline.
    Timeout,
    /// Transport or HTTP failure.
    Error,
    /// An answer we could not accept (garbage JSON, negative price, ...).
    Invalid,
    /// Not asked: targeting, hours, caps, health, ... (see `reason`).
    Ineligible,
}

impl BidStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BidStatus::Bid => "bid",
            BidStatus::NoBid => "no_bid",
            BidStatus::BelowFloor => "below_floor",
            BidStatus::Timeout => "timeout",
            BidStatus::Error => "error",
            BidStatus::Invalid => "invalid",
            BidStatus::Ineligible => "ineligible",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRecord {
    pub buyer_id: String,
    pub destination_id: String,
    pub status: BidStatus,
    /// Why a bid is not a usable bid (no-bid reason, error text).
    pub reason: Option<String>,
    pub bid_id: Option<String>,
    pub price: Option<Cents>,
    pub min_talk_secs: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Ping round trip; `None` for static prices and ineligible destinations.
    pub latency_us: Option<u64>,
    /// Position in the ranked list (1 = winner), for usable bids.
    pub rank: Option<u16>,
    /// Notice URLs the bid itself carried; absent from older journal lines.
    #[serde(default, skip_serializing_if = "BidNoticeUrls::is_empty")]
    pub notices: BidNoticeUrls,
}

/// Per-bid notice URLs (`nurl` / `burl` / `lurl` in the native protocol):
/// when present they replace the buyer's catalog templates for this call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidNoticeUrls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_url: Option<String>,
}

impl BidNoticeUrls {
    pub fn is_empty(&self) -> bool {
        self.win_url.is_none() && self.billing_url.is_none() && self.loss_url.is_none()
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The first-ranked destination.
    Winner,
    /// A later-ranked destination after earlier ones did not answer.
    Fallthrough,
    /// Offered to the next bidder after a buyer hung up early.
    Recovery,
    Backup,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Winner => "winner",
            AttemptKind::Fallthrough => "fallthrough",
            AttemptKind::Recovery => "recovery",
            AttemptKind::Backup => "backup",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub buyer_id: Option<String>,
    pub destination_id: Option<String>,
    pub kind: AttemptKind,
    /// The destination as a person reads it (`+1312... via carrier1`).
    pub target: String,
    pub started_at: DateTime<Utc>,
    pub ring_ms: u64,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub talk_ms: Option<u64>,
    /// `None` when the attempt was skipped before dialling (expired bid,
    /// cap reached at the last moment); see `cause`.
    pub outcome: Option<LegStatus>,
    pub cause: Option<String>,
    pub detail: Option<String>,
    pub ended_by: Option<Party>,
}

impl AttemptRecord {
    pub fn outcome_str(&self) -> &'static str {
        self.outcome.map(LegStatus::as_str).unwrap_or("skipped")
    }
}

/// Consent evidence captured with the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// `channel_variable`, `sip_header`, `trustedform`, `jornaya`, `ivr`.
    pub kind: String,
    pub reference: Option<String>,
    pub prompt: Option<String>,
    pub key_pressed: Option<String>,
    pub page: Option<String>,
    pub consented_at: Option<DateTime<Utc>>,
    pub captured_at: DateTime<Utc>,
}

/// Where caller data went, once (see docs/compliance.md, "The sharing log").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingRecord {
    /// `ping`, `bridge`, `notice`, `api`.
    pub channel: String,
    /// `buyer`, `publisher`, `operator` (the backup line), `admin`.
    pub party_kind: String,
    pub party_id: String,
    pub destination_id: Option<String>,
    /// Names of the fields sent (`area_code`, `number_hash`, `number`, `tag.zip`, ...).
    pub fields: Vec<String>,
    /// Index into [`CallRecord::consents`] of the consent relied on, if any.
    pub consent_seq: Option<u16>,
    pub shared_at: DateTime<Utc>,
}

/// An IVR opt-out: the caller asked never to be called again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// The IVR node (or `consent`) where the key was pressed.
    pub node: String,
    pub at: DateTime<Utc>,
}

/// The stage timestamps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimes {
    pub arrived_at: DateTime<Utc>,
    pub ivr_done_at: Option<DateTime<Utc>>,
    pub auction_closed_at: Option<DateTime<Utc>>,
    pub first_ring_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
}

/// The winning (answered) destination and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Winner {
    pub buyer_id: String,
    pub destination_id: String,
    pub bid_id: Option<String>,
    pub price_bid: Cents,
    pub price_charged: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: Uuid,
    pub node_id: String,
    pub pbx: PbxKind,
    pub channel_id: String,
    /// E.164 caller, when the caller ID was a number.
    pub caller: Option<String>,
    pub caller_raw: String,
    pub tracking_number: String,
    pub campaign_id: Option<String>,
    pub publisher_id: Option<String>,
    pub source: Option<String>,
    pub disposition: Disposition,
    pub stage_reached: Stage,
    pub times: StageTimes,
    pub ivr_tags: BTreeMap<String, String>,
    /// Each IVR step: `(node, what the caller entered or "timeout")`.
    pub ivr_path: Vec<(String, String)>,
    pub bids: Vec<BidRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub winner: Option<Winner>,
    pub currency: String,
    pub talk_ms: Option<u64>,
    pub min_talk_secs: Option<u32>,
    pub payable: bool,
    pub payable_reason: String,
    pub revenue: Cents,
    pub payout: Cents,
    pub hangup_cause: Option<String>,
    pub hung_up_by: Option<Party>,
    pub recording_path: Option<String>,
    pub auction_us: Option<u64>,
    pub consents: Vec<ConsentRecord>,
    /// Every time this caller's data left the daemon during the call (pings,
    /// bridges); notices are added by the writer. Absent from older journal lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sharing: Vec<SharingRecord>,
    /// The caller pressed the campaign's opt-out key: the writer adds them
    /// to the do-not-call list in the record's own transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opted_out: Option<OptOut>,
    /// Operator-facing remarks (a prompt that would not play, a refused command).
    pub notes: Vec<String>,
    /// The caller's STIR/SHAKEN attestation as the switch reported it;
    /// absent from older journal lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attestation::Attestation>,
}

impl CallRecord {
    pub fn margin(&self) -> Cents {
        self.revenue.saturating_sub(self.payout)
    }
}
