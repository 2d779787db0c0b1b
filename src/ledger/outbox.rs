//! Enqueueing postbacks (publishers) and notices (buyers) into the
//! `postbacks` outbox (sql/0003_outbox.sql).
//!
//! Owns: deciding which notices a call or a conversion causes, filling
//! their URL templates, and inserting the rows inside the caller's
//! transaction — the record writer's batch or the conversion insert — so a
//! notice exists exactly when its cause does, and a replayed batch (journal
//! replay) or a repeated conversion enqueues nothing new (unique index on
//! `(call_id, kind, url, conversion_id)` + `ON CONFLICT DO NOTHING`).
//!
//! The URL templates are read from the catalog tables in that same
//! transaction rather than from the daemon's in-memory catalog: the record
//! writer runs on its own thread with its own connection and no catalog
//! handle, a replay after an outage may happen on a node whose cache is not
//! loaded yet, and the database is the one place every node agrees on.
//!
//! Must never: send anything (that is [`super::postback`]'s job, off every
//! call's path), or put a publisher's payout into a buyer's URL or a
//! winner's price into a loser's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::record::{BidStatus, CallRecord};
use crate::money::Cents;
use crate::template;

/// What a postback row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PostbackKind {
    PublisherPayable,
    PublisherConversion,
    BuyerWin,
    BuyerLoss,
    BuyerBilling,
    BuyerConversion,
}

impl PostbackKind {
    /// Sent to the publisher (not a buyer).
    pub fn is_publisher(self) -> bool {
        matches!(
            self,
            PostbackKind::PublisherPayable | PostbackKind::PublisherConversion
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PostbackKind::PublisherPayable => "publisher_payable",
            PostbackKind::PublisherConversion => "publisher_conversion",
            PostbackKind::BuyerWin => "buyer_win",
            PostbackKind::BuyerLoss => "buyer_loss",
            PostbackKind::BuyerBilling => "buyer_billing",
            PostbackKind::BuyerConversion => "buyer_conversion",
        }
    }
}

/// One row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub call_id: Uuid,
    pub conversion_id: Option<i64>,
    pub kind: PostbackKind,
    pub party_id: String,
    pub url: String,
    /// The template fields the template filled in: what the notice tells its
    /// receiver about the call (for the sharing log).
    pub fields: Vec<String>,
}

/// The template field names a template uses, deduplicated, in order.
fn fields_of(template: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in template::fields(template) {
        if !out.iter().any(|f| f == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// The URL templates of the parties involved, as the catalog has them now.
#[derive(Debug, Clone, Default)]
pub struct CatalogUrls {
    /// Publisher id → `postback_url`.
    pub publishers: HashMap<String, Option<String>>,
    pub buyers: HashMap<String, BuyerUrls>,
}

#[derive(Debug, Clone, Default)]
pub struct BuyerUrls {
    pub win_url: Option<String>,
    pub loss_url: Option<String>,
    pub billing_url: Option<String>,
    pub postback_url: Option<String>,
}

/// The facts about a call that notices may mention; built from a
/// [`CallRecord`] at insert time or from a `calls` row for a conversion.
#[derive(Debug, Clone)]
pub struct CallFacts {
    pub call_id: Uuid,
    pub campaign: Option<String>,
    pub publisher: Option<String>,
    pub source: Option<String>,
    pub talk_ms: Option<u64>,
    pub payable: bool,
    pub revenue: Cents,
    pub payout: Cents,
    pub winner_buyer: Option<String>,
    pub winner_destination: Option<String>,
    pub winner_bid_id: Option<String>,
    pub price_bid: Option<Cents>,
    pub price_charged: Option<Cents>,
    pub consent_id: Option<String>,
}

impl CallFacts {
    pub fn from_record(r: &CallRecord) -> CallFacts {
        CallFacts {
            call_id: r.call_id,
            campaign: r.campaign_id.clone(),
            publisher: r.publisher_id.clone(),
            source: r.source.clone(),
            talk_ms: r.talk_ms,
            payable: r.payable,
            revenue: r.revenue,
            payout: r.payout,
            winner_buyer: r.winner.as_ref().map(|w| w.buyer_id.clone()),
            winner_destination: r.winner.as_ref().map(|w| w.destination_id.clone()),
            winner_bid_id: r.winner.as_ref().and_then(|w| w.bid_id.clone()),
            price_bid: r.winner.as_ref().map(|w| w.price_bid),
            price_charged: r.winner.as_ref().map(|w| w.price_charged),
            consent_id: r.consents.iter().find_map(|c| c.reference.clone()),
        }
    }

    /// Placeholders every party may see.
    fn common(&self) -> BTreeMap<&'static str, String> {
        let talk_secs = self.talk_ms.unwrap_or(0) / 1000;
        let mut v = BTreeMap::new();
        v.insert("call_id", self.call_id.to_string());
        v.insert("campaign", self.campaign.clone().unwrap_or_default());
        v.insert("source", self.source.clone().unwrap_or_default());
        v.insert("duration", talk_secs.to_string());
        v.insert("talk_secs", talk_secs.to_string());
        v.insert("payable", self.payable.to_string());
        v.insert("consent_id", self.consent_id.clone().unwrap_or_default());
        v
    }

    /// What a publisher's postback may say: its payout and the revenue,
    /// never which buyer took the call.
    fn publisher_values(&self) -> BTreeMap<&'static str, String> {
        let mut v = self.common();
        v.insert("publisher", self.publisher.clone().unwrap_or_default());
        v.insert("payout", self.payout.to_string());
        v.insert("revenue", self.revenue.to_string());
        v
    }

    /// What the winning buyer's notices may say: its own price, never the
    /// publisher's payout.
    fn winner_values(&self) -> BTreeMap<&'static str, String> {
        let mut v = self.common();
        let charged = self
            .price_charged
            .map(|p| p.to_string())
            .unwrap_or_default();
        v.insert("buyer", self.winner_buyer.clone().unwrap_or_default());
        v.insert(
            "destination",
            self.winner_destination.clone().unwrap_or_default(),
        );
        v.insert("bid_id", self.winner_bid_id.clone().unwrap_or_default());
        v.insert("price", charged.clone());
        v.insert("price_charged", charged);
        v.insert(
            "price_bid",
            self.price_bid.map(|p| p.to_string()).unwrap_or_default(),
        );
        v
    }
}

fn present(url: &Option<String>) -> Option<&str> {
    url.as_deref().map(str::trim).filter(|u| !u.is_empty())
}

/// The notices one call record causes (pure; see docs/records.md):
/// - publisher `postback_url` when the call is payable;
/// - the winner's `win_url` when its destination answered;
/// - the winner's `billing_url` when the call is payable, `{price}` = charged;
/// - `loss_url` to every other buyer that made a usable bid (one per buyer).
pub fn notices_for_call(record: &CallRecord, urls: &CatalogUrls) -> Vec<Pending> {
    let facts = CallFacts::from_record(record);
    let mut out = Vec::new();
    let mut push = |kind, party: &str, template: &str, values: &BTreeMap<&str, String>| {
        out.push(Pending {
            call_id: record.call_id,
            conversion_id: None,
            kind,
            party_id: party.to_string(),
            url: template::fill(template, values),
            fields: fields_of(template),
        });
    };
    if record.payable
        && let Some(publisher) = &record.publisher_id
        && let Some(url) = urls.publishers.get(publisher).and_then(present)
    {
        push(
            PostbackKind::PublisherPayable,
            publisher,
            url,
            &facts.publisher_values(),
        );
    }
    if let Some(winner) = &record.winner {
        let catalog = urls
            .buyers
            .get(&winner.buyer_id)
            .cloned()
            .unwrap_or_default();
        // The winning bid's own URLs (nurl/burl) replace the templates.
        let own = record
            .bids
            .iter()
            .find(|b| {
                b.status == BidStatus::Bid
                    && b.buyer_id == winner.buyer_id
                    && b.destination_id == winner.destination_id
                    && (winner.bid_id.is_none() || b.bid_id == winner.bid_id)
            })
            .map(|b| b.notices.clone())
            .unwrap_or_default();
        let values = facts.winner_values();
        if let Some(url) = present(&own.win_url).or(present(&catalog.win_url)) {
            push(PostbackKind::BuyerWin, &winner.buyer_id, url, &values);
        }
        if record.payable
            && let Some(url) = present(&own.billing_url).or(present(&catalog.billing_url))
        {
            push(PostbackKind::BuyerBilling, &winner.buyer_id, url, &values);
        }
    }
    let winner_buyer = record.winner.as_ref().map(|w| w.buyer_id.as_str());
    let mut told: BTreeSet<&str> = BTreeSet::new();
    for bid in record.bids.iter().filter(|b| b.status == BidStatus::Bid) {
        if Some(bid.buyer_id.as_str()) == winner_buyer || !told.insert(&bid.buyer_id) {
            continue;
        }
        // The bid's own lurl replaces the buyer's template.
        let url = present(&bid.notices.loss_url).or_else(|| {
            urls.buyers
                .get(&bid.buyer_id)
                .and_then(|b| present(&b.loss_url))
        });
        let Some(url) = url else {
            continue;
        };
        let attempted_unanswered = record.attempts.iter().any(|a| {
            a.buyer_id.as_deref() == Some(bid.buyer_id.as_str()) && a.answered_at.is_none()
        });
        let reason = if attempted_unanswered {
            "not_answered"
        } else if winner_buyer.is_some() {
            "outbid"
        } else {
            "not_connected"
        };
        let mut values = facts.common();
        values.insert("buyer", bid.buyer_id.clone());
        values.insert("destination", bid.destination_id.clone());
        values.insert("bid_id", bid.bid_id.clone().unwrap_or_default());
        values.insert(
            "price_bid",
            bid.price.map(|p| p.to_string()).unwrap_or_default(),
        );
        values.insert("reason", reason.to_string());
        // `payable` and talk time describe another buyer's call: not theirs to know.
        values.remove("payable");
        values.insert("duration", String::new());
        values.insert("talk_secs", String::new());
        push(PostbackKind::BuyerLoss, &bid.buyer_id, url, &values);
    }
    out
}

/// The postbacks a conversion causes: the publisher's `postback_url` and
/// the reporting buyer's `postback_url`, with `{event}` and `{value}`.
pub fn notices_for_conversion(
    facts: &CallFacts,
    conversion_id: i64,
    buyer_id: &str,
    event: &str,
    value: Cents,
    urls: &CatalogUrls,
) -> Vec<Pending> {
    let mut out = Vec::new();
    if let Some(publisher) = &facts.publisher
        && let Some(url) = urls.publishers.get(publisher).and_then(present)
    {
        let mut values = facts.publisher_values();
        values.insert("event", event.to_string());
        values.insert("value", value.to_string());
        out.push(Pending {
            call_id: facts.call_id,
            conversion_id: Some(conversion_id),
            kind: PostbackKind::PublisherConversion,
            party_id: publisher.clone(),
            url: template::fill(url, &values),
            fields: fields_of(url),
        });
    }
    if let Some(url) = urls
        .buyers
        .get(buyer_id)
        .and_then(|b| present(&b.postback_url))
    {
        let mut values = facts.winner_values();
        values.insert("event", event.to_string());
        values.insert("value", value.to_string());
        out.push(Pending {
            call_id: facts.call_id,
            conversion_id: Some(conversion_id),
            kind: PostbackKind::BuyerConversion,
            party_id: buyer_id.to_string(),
            url: template::fill(url, &values),
            fields: fields_of(url),
        });
    }
    out
}

/// Reads the URL templates of `publishers` and `buyers` from the catalog tables.
pub async fn catalog_urls(
    tx: &tokio_postgres::Transaction<'_>,
    publishers: &[&str],
    buyers: &[&str],
) -> Result<CatalogUrls, tokio_postgres::Error> {
    let mut urls = CatalogUrls::default();
    if !publishers.is_empty() {
        for row in tx
            .query(
                "SELECT id::text, postback_url FROM publishers WHERE id = ANY($1::text[])",
                &[&publishers],
            )
            .await?
        {
            urls.publishers.insert(row.try_get(0)?, row.try_get(1)?);
        }
    }
    if !buyers.is_empty() {
        for row in tx
            .query(
                "SELECT id::text, win_url, loss_url, billing_url, postback_url FROM buyers WHERE id = ANY($1::text[])",
                &[&buyers],
            )
            .await?
        {
            urls.buyers.insert(
                row.try_get(0)?,
                BuyerUrls {
                    win_url: row.try_get(1)?,
                    loss_url: row.try_get(2)?,
                    billing_url: row.try_get(3)?,
                    postback_url: row.try_get(4)?,
                },
            );
        }
    }
    Ok(urls)
}

/// Enqueues the notices of newly inserted call records, in `tx`; returns
/// them (the writer logs each in the sharing log).
pub async fn enqueue_for_calls(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[&CallRecord],
) -> Result<Vec<Pending>, tokio_postgres::Error> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let publishers: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.publisher_id.as_deref())
        .collect();
    let buyers: BTreeSet<&str> = records
        .iter()
        .flat_map(|r| {
            r.bids
                .iter()
                .map(|b| b.buyer_id.as_str())
                .chain(r.winner.as_ref().map(|w| w.buyer_id.as_str()))
        })
        .collect();
    let publishers: Vec<&str> = publishers.into_iter().collect();
    let buyers: Vec<&str> = buyers.into_iter().collect();
    let urls = catalog_urls(tx, &publishers, &buyers).await?;
    let pending: Vec<Pending> = records
        .iter()
        .flat_map(|r| notices_for_call(r, &urls))
        .collect();
    insert(tx, &pending).await?;
    Ok(pending)
}

/// Inserts `pending` rows; rows already there (same call, kind, URL and
/// conversion) are skipped.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    pending: &[Pending],
) -> Result<u64, tokio_postgres::Error> {
    if pending.is_empty() {
        return Ok(0);
    }
    let call_id: Vec<Uuid> = pending.iter().map(|p| p.call_id).collect();
    let conversion: Vec<Option<i64>> = pending.iter().map(|p| p.conversion_id).collect();
    let kind: Vec<&str> = pending.iter().map(|p| p.kind.as_str()).collect();
    let party: Vec<&str> = pending.iter().map(|p| p.party_id.as_str()).collect();
    let url: Vec<&str> = pending.iter().map(|p| p.url.as_str()).collect();
    tx.execute(
        "INSERT INTO postbacks (call_id, conversion_id, kind, party_id, url)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT DO NOTHING",
        &[&call_id, &conversion, &kind, &party, &url],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{BidRecord, Disposition, Stage, StageTimes, Winner};
    use crate::pbx::PbxKind;

    fn bid(buyer: &str, status: BidStatus, price: i64) -> BidRecord {
        BidRecord {
            buyer_id: buyer.into(),
            destination_id: format!("{buyer}-main"),
            status,
            reason: None,
            bid_id: Some(format!("bid-{buyer}")),
            price: Some(Cents(price)),
            min_talk_secs: None,
            expires_at: None,
            latency_us: None,
            rank: None,
            notices: Default::default(),
        }
    }

    fn record(payable: bool) -> CallRecord {
        CallRecord {
            call_id: Uuid::nil(),
            node_id: "n".into(),
            pbx: PbxKind::Freeswitch,
            channel_id: "c".into(),
            caller: None,
            caller_raw: "x".into(),
            tracking_number: "+18005550100".into(),
            campaign_id: Some("auto".into()),
            publisher_id: Some("pub".into()),
            source: Some("a&b".into()),
            disposition: Disposition::Sold,
            stage_reached: Stage::Settled,
            times: StageTimes::default(),
            ivr_tags: BTreeMap::new(),
            ivr_path: vec![],
            bids: vec![
                bid("a", BidStatus::Bid, 1250),
                bid("b", BidStatus::Bid, 1000),
                bid("b", BidStatus::Bid, 900),
                bid("c", BidStatus::NoBid, 0),
            ],
            attempts: vec![],
            winner: Some(Winner {
                buyer_id: "a".into(),
                destination_id: "a-main".into(),
                bid_id: Some("bid-a".into()),
                price_bid: Cents(1250),
                price_charged: Cents(1001),
            }),
            currency: "USD".into(),
            talk_ms: Some(95_400),
            min_talk_secs: Some(60),
            payable,
            payable_reason: String::new(),
            revenue: Cents(if payable { 1001 } else { 0 }),
            payout: Cents(if payable { 400 } else { 0 }),
            hangup_cause: None,
            hung_up_by: None,
            recording_path: None,
            auction_us: None,
            consents: vec![],
            sharing: vec![],
            opted_out: None,
            notes: vec![],
            attestation: None,
        }
    }

    fn urls() -> CatalogUrls {
        let all = |b: &str| BuyerUrls {
            win_url: Some(format!("http://{b}/win?p={{price}}&b={{bid_id}}")),
            loss_url: Some(format!(
                "http://{b}/loss?r={{reason}}&p={{price}}&mine={{price_bid}}"
            )),
            billing_url: Some(format!("http://{b}/bill?p={{price}}&payout={{payout}}")),
            postback_url: Some(format!("http://{b}/conv?e={{event}}&v={{value}}")),
        };
        CatalogUrls {
            publishers: HashMap::from([(
                "pub".to_string(),
                Some("http://pub/pb?c={call_id}&s={source}&p={payout}&d={duration}".to_string()),
            )]),
            buyers: ["a", "b", "c"]
                .into_iter()
                .map(|b| (b.to_string(), all(b)))
                .collect(),
        }
    }

    #[test]
    fn payable_call_notifies_everyone_once() {
        let got = notices_for_call(&record(true), &urls());
        let summary: Vec<(PostbackKind, &str, &str)> = got
            .iter()
            .map(|p| (p.kind, p.party_id.as_str(), p.url.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    PostbackKind::PublisherPayable,
                    "pub",
                    "http://pub/pb?c=00000000-0000-0000-0000-000000000000&s=a%26b&p=4.00&d=95"
                ),
                (PostbackKind::BuyerWin, "a", "http://a/win?p=10.01&b=bid-a"),
                // A buyer never learns the publisher's payout.
                (
                    PostbackKind::BuyerBilling,
                    "a",
                    "http://a/bill?p=10.01&payout="
                ),
                // A loser learns its own bid, not the winner's price; one notice per buyer.
                (
                    PostbackKind::BuyerLoss,
                    "b",
                    "http://b/loss?r=outbid&p=&mine=10.00"
                ),
            ]
        );
    }

    #[test]
    fn the_bids_own_urls_replace_the_templates() {
        let mut r = record(true);
        r.bids[0].notices.win_url = Some("http://nurl/a?p={price}".into());
        r.bids[1].notices.loss_url = Some("http://lurl/b?r={reason}".into());
        let got = notices_for_call(&r, &urls());
        let url = |k| got.iter().find(|p| p.kind == k).map(|p| p.url.as_str());
        assert_eq!(url(PostbackKind::BuyerWin), Some("http://nurl/a?p=10.01"));
        assert_eq!(url(PostbackKind::BuyerLoss), Some("http://lurl/b?r=outbid"));
        // No burl: the catalog template stays.
        assert_eq!(
            url(PostbackKind::BuyerBilling),
            Some("http://a/bill?p=10.01&payout=")
        );
    }

    #[test]
    fn unpayable_call_has_no_billing_or_publisher_postback() {
        let kinds: Vec<PostbackKind> = notices_for_call(&record(false), &urls())
            .iter()
            .map(|p| p.kind)
            .collect();
        assert_eq!(kinds, vec![PostbackKind::BuyerWin, PostbackKind::BuyerLoss]);
    }

    #[test]
    fn conversion_fills_event_and_value() {
        let facts = CallFacts::from_record(&record(true));
        let got = notices_for_conversion(&facts, 7, "a", "sale", Cents(12000), &urls());
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].url, "http://a/conv?e=sale&v=120.00");
        assert!(got.iter().all(|p| p.conversion_id == Some(7)));
    }
}
