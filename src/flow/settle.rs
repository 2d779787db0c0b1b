//! Settling a call: was it payable, what does the buyer owe, what does the
//! publisher earn. Pure arithmetic on what the connect stage recorded, so
//! every rule is unit-tested to the cent.
//!
//! Rules (docs/records.md says the same for operators):
//! - the winner is the last buyer who answered (after a revenue recovery,
//!   the one who took the caller over);
//! - payable when that buyer's talk time reaches the winning bid's minimum
//!   (bid, else destination, else campaign), unless a duplicate-caller rule
//!   marks the call not payable;
//! - revenue is the winner's price charged (first or second price) when
//!   payable, else 0;
//! - the publisher payout applies to calls a buyer answered: a fixed amount
//!   or a share of revenue, each with its own minimum talk time (default:
//!   the campaign's); the backup line earns no payout.

use super::connect::{ConnectResult, Taker};
use crate::catalog::{NumberRoute, PayoutRule};
use crate::ledger::record::{Disposition, Winner};
use crate::money::Cents;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub disposition: Disposition,
    pub winner: Option<Winner>,
    pub talk_ms: Option<u64>,
    pub min_talk_secs: Option<u32>,
    pub payable: bool,
    pub payable_reason: String,
    pub revenue: Cents,
    pub payout: Cents,
}

/// `not_payable` carries the reason a screening rule already decided the
/// call cannot be billed (a duplicate caller).
pub fn settle(
    result: &ConnectResult,
    route: &NumberRoute,
    not_payable: Option<&str>,
) -> Settlement {
    let campaign_min = route.campaign.min_talk_secs;
    let Some((taker, outcome)) = &result.answered else {
        let disposition = if result.caller_gone() {
            Disposition::Abandoned
        } else {
            Disposition::NoBuyer
        };
        let reason = if result.caller_gone() {
            "caller hung up before anyone answered"
        } else {
            "no buyer or backup answered"
        };
        return Settlement {
            disposition,
            winner: None,
            talk_ms: None,
            min_talk_secs: None,
            payable: false,
            payable_reason: reason.to_string(),
            revenue: Cents::ZERO,
            payout: Cents::ZERO,
        };
    };
    let talk_ms = outcome.talk_time.map(|t| t.as_millis() as u64).unwrap_or(0);
    let offer = match taker {
        Taker::Backup => {
            return Settlement {
                disposition: Disposition::Backup,
                winner: None,
                talk_ms: Some(talk_ms),
                min_talk_secs: None,
                payable: false,
                payable_reason: "connected to the backup line".to_string(),
                revenue: Cents::ZERO,
                payout: Cents::ZERO,
            };
        }
        Taker::Buyer(offer) => offer,
    };
    let min_talk = offer.min_talk_secs;
    let talk_secs = talk_ms / 1000;
    let met = talk_ms >= u64::from(min_talk) * 1000;
    let (payable, payable_reason) = match (met, not_payable) {
        (_, Some(rule)) => (false, format!("not payable: {rule}")),
        (true, None) => (
            true,
            format!("talk {talk_secs}s meets the {min_talk}s minimum"),
        ),
        (false, None) => (
            false,
            format!("talk {talk_secs}s is under the {min_talk}s minimum"),
        ),
    };
    let revenue = if payable {
        offer.price_charged
    } else {
        Cents::ZERO
    };
    let payout = match route.payout_rule() {
        PayoutRule::None => Cents::ZERO,
        PayoutRule::Fixed {
            amount,
            min_talk_secs,
        } => {
            if talk_ms >= u64::from(min_talk_secs.unwrap_or(campaign_min)) * 1000 {
                amount
            } else {
                Cents::ZERO
            }
        }
        PayoutRule::Share {
            basis_points,
            min_talk_secs,
        } => {
            if talk_ms >= u64::from(min_talk_secs.unwrap_or(campaign_min)) * 1000 {
                revenue.percent(basis_points)
            } else {
                Cents::ZERO
            }
        }
    };
    Settlement {
        disposition: Disposition::Sold,
        winner: Some(Winner {
            buyer_id: offer.destination.buyer.id.clone(),
            destination_id: offer.destination.id.clone(),
            bid_id: offer.bid_id.clone(),
            price_bid: offer.price_bid,
            price_charged: offer.price_charged,
        }),
        talk_ms: Some(talk_ms),
        min_talk_secs: Some(min_talk),
        payable,
        payable_reason,
        revenue,
        payout,
    }
}
