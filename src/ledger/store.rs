//! Writing call records into PostgreSQL: one transaction per batch, one
//! multi-row `INSERT ... SELECT FROM UNNEST(...)` per table, and
//! `ON CONFLICT DO NOTHING` on keys derived from the call id, so a batch
//! written twice (a journal replay after a crash) adds nothing the second
//! time.
//!
//! The same transaction enqueues the postbacks and buyer notices of the
//! calls it actually inserted ([`super::outbox`]), so a replay enqueues
//! nothing twice and a notice never exists without its call.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record::CallRecord;

/// Inserts `records` (all or nothing).
pub async fn insert_batch(
    client: &mut tokio_postgres::Client,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let tx = client.transaction().await?;
    let new_calls = insert_calls(&tx, records).await?;
    insert_bids(&tx, records).await?;
    insert_attempts(&tx, records).await?;
    insert_consents(&tx, records).await?;
    insert_opt_outs(&tx, records).await?;
    let fresh: Vec<&CallRecord> = records
        .iter()
        .filter(|r| new_calls.contains(&r.call_id))
        .collect();
    let notices = super::outbox::enqueue_for_calls(&tx, &fresh).await?;
    insert_sharing(&tx, records, &notices).await?;
    tx.commit().await?;
    Ok(new_calls.len() as u64)
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn ms(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Inserts the `calls` rows; returns the ids actually inserted (not
/// already there).
async fn insert_calls(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<std::collections::HashSet<Uuid>, tokio_postgres::Error> {
    let mut call_id: Vec<Uuid> = Vec::new();
    let mut node_id: Vec<&str> = Vec::new();
    let mut pbx: Vec<&str> = Vec::new();
    let mut channel_id: Vec<&str> = Vec::new();
    let mut caller: Vec<Option<&str>> = Vec::new();
    let mut caller_raw: Vec<&str> = Vec::new();
    let mut tracking_number: Vec<&str> = Vec::new();
    let mut campaign_id: Vec<Option<&str>> = Vec::new();
    let mut publisher_id: Vec<Option<&str>> = Vec::new();
    let mut source: Vec<Option<&str>> = Vec::new();
    let mut disposition: Vec<&str> = Vec::new();
    let mut stage: Vec<&str> = Vec::new();
    let mut arrived_at: Vec<DateTime<Utc>> = Vec::new();
    let mut ivr_done_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut auction_closed_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut first_ring_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut answered_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut ended_at: Vec<DateTime<Utc>> = Vec::new();
    let mut ivr_tags: Vec<serde_json::Value> = Vec::new();
    let mut ivr_path: Vec<serde_json::Value> = Vec::new();
    let mut winner_buyer: Vec<Option<&str>> = Vec::new();
    let mut winner_destination: Vec<Option<&str>> = Vec::new();
    let mut winner_bid: Vec<Option<&str>> = Vec::new();
    let mut price_bid: Vec<Option<i64>> = Vec::new();
    let mut price_charged: Vec<Option<i64>> = Vec::new();
    let mut currency: Vec<&str> = Vec::new();
    let mut talk_ms: Vec<Option<i64>> = Vec::new();
    let mut min_talk: Vec<Option<i32>> = Vec::new();
    let mut payable: Vec<bool> = Vec::new();
    let mut payable_reason: Vec<&str> = Vec::new();
    let mut revenue: Vec<i64> = Vec::new();
    let mut payout: Vec<i64> = Vec::new();
    let mut hangup_cause: Vec<Option<&str>> = Vec::new();
    let mut hung_up_by: Vec<Option<&str>> = Vec::new();
    let mut recording: Vec<Option<&str>> = Vec::new();
    let mut auction_us: Vec<Option<i64>> = Vec::new();
    let mut notes: Vec<serde_json::Value> = Vec::new();
    let mut attestation: Vec<Option<&str>> = Vec::new();
    for r in records {
        call_id.push(r.call_id);
        node_id.push(&r.node_id);
        pbx.push(r.pbx.as_str());
        channel_id.push(&r.channel_id);
        caller.push(r.caller.as_deref());
        caller_raw.push(&r.caller_raw);
        tracking_number.push(&r.tracking_number);
        campaign_id.push(r.campaign_id.as_deref());
        publisher_id.push(r.publisher_id.as_deref());
        source.push(r.source.as_deref());
        disposition.push(r.disposition.as_str());
        stage.push(r.stage_reached.as_str());
        arrived_at.push(r.times.arrived_at);
        ivr_done_at.push(r.times.ivr_done_at);
        auction_closed_at.push(r.times.auction_closed_at);
        first_ring_at.push(r.times.first_ring_at);
        answered_at.push(r.times.answered_at);
        ended_at.push(r.times.ended_at);
        ivr_tags.push(json(&r.ivr_tags));
        ivr_path.push(json(&r.ivr_path));
        winner_buyer.push(r.winner.as_ref().map(|w| w.buyer_id.as_str()));
        winner_destination.push(r.winner.as_ref().map(|w| w.destination_id.as_str()));
        winner_bid.push(r.winner.as_ref().and_then(|w| w.bid_id.as_deref()));
        price_bid.push(r.winner.as_ref().map(|w| w.price_bid.0));
        price_charged.push(r.winner.as_ref().map(|w| w.price_charged.0));
        currency.push(&r.currency);
        talk_ms.push(ms(r.talk_ms));
        min_talk.push(
            r.min_talk_secs
                .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        );
        payable.push(r.payable);
        payable_reason.push(&r.payable_reason);
        revenue.push(r.revenue.0);
        payout.push(r.payout.0);
        hangup_cause.push(r.hangup_cause.as_deref());
        hung_up_by.push(r.hung_up_by.map(|p| p.as_str()));
        recording.push(r.recording_path.as_deref());
        auction_us.push(ms(r.auction_us));
        notes.push(json(&r.notes));
        attestation.push(r.attestation.map(|a| a.as_str()));
    }
    let rows = tx.query(
        "INSERT INTO calls (call_id, node_id, pbx, channel_id, caller, caller_raw, tracking_number, campaign_id,
             publisher_id, source, disposition, stage_reached, arrived_at, ivr_done_at, auction_closed_at,
             first_ring_at, answered_at, ended_at, ivr_tags, ivr_path, winner_buyer_id, winner_destination_id,
             winner_bid_id, price_bid_cents, price_charged_cents, currency, talk_ms, min_talk_secs, payable,
             payable_reason, revenue_cents, payout_cents, hangup_cause, hung_up_by, recording_path, auction_us, notes,
             attestation)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[],
             $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $19::jsonb[],
             $20::jsonb[], $21::text[], $22::text[], $23::text[], $24::bigint[], $25::bigint[], $26::bpchar[],
             $27::bigint[], $28::int[], $29::bool[], $30::text[], $31::bigint[], $32::bigint[], $33::text[],
             $34::text[], $35::text[], $36::bigint[], $37::jsonb[], $38::text[])
         ON CONFLICT (call_id) DO NOTHING
         RETURNING call_id",
        &[
            &call_id,
            &node_id,
            &pbx,
            &channel_id,
            &caller,
            &caller_raw,
            &tracking_number,
            &campaign_id,
            &publisher_id,
            &source,
            &disposition,
            &stage,
            &arrived_at,
            &ivr_done_at,
            &auction_closed_at,
            &first_ring_at,
            &answered_at,
            &ended_at,
            &ivr_tags,
            &ivr_path,
            &winner_buyer,
            &winner_destination,
            &winner_bid,
            &price_bid,
            &price_charged,
            &currency,
            &talk_ms,
            &min_talk,
            &payable,
            &payable_reason,
            &revenue,
            &payout,
            &hangup_cause,
            &hung_up_by,
            &recording,
            &auction_us,
            &notes,
            &attestation,
        ],
    )
    .await?;
    rows.iter().map(|r| r.try_get::<_, Uuid>(0)).collect()
}

async fn insert_bids(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    let mut call_id = Vec::new();
    let mut seq: Vec<i16> = Vec::new();
    let mut buyer: Vec<&str> = Vec::new();
    let mut destination: Vec<&str> = Vec::new();
    let mut bid_id: Vec<Option<&str>> = Vec::new();
    let mut status: Vec<&str> = Vec::new();
    let mut reason: Vec<Option<&str>> = Vec::new();
    let mut price: Vec<Option<i64>> = Vec::new();
    let mut min_talk: Vec<Option<i32>> = Vec::new();
    let mut expires: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut latency: Vec<Option<i64>> = Vec::new();
    let mut rank: Vec<Option<i16>> = Vec::new();
    for r in records {
        for (i, b) in r.bids.iter().enumerate() {
            call_id.push(r.call_id);
            seq.push(i16::try_from(i).unwrap_or(i16::MAX));
            buyer.push(b.buyer_id.as_str());
            destination.push(b.destination_id.as_str());
            bid_id.push(b.bid_id.as_deref());
            status.push(b.status.as_str());
            reason.push(b.reason.as_deref());
            price.push(b.price.map(|p| p.0));
            min_talk.push(
                b.min_talk_secs
                    .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
            );
            expires.push(b.expires_at);
            latency.push(ms(b.latency_us));
            rank.push(b.rank.map(|r| i16::try_from(r).unwrap_or(i16::MAX)));
        }
    }
    if call_id.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO bids (call_id, seq, buyer_id, destination_id, bid_id, status, reason, price_cents,
             min_talk_secs, expires_at, latency_us, rank)
         SELECT * FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::bigint[], $9::int[], $10::timestamptz[], $11::bigint[], $12::int2[])
         ON CONFLICT (call_id, seq) DO NOTHING",
        &[&call_id, &seq, &buyer, &destination, &bid_id, &status, &reason, &price, &min_talk, &expires, &latency, &rank],
    )
    .await
}

async fn insert_attempts(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    let mut call_id = Vec::new();
    let mut seq: Vec<i16> = Vec::new();
    let mut buyer: Vec<Option<&str>> = Vec::new();
    let mut destination: Vec<Option<&str>> = Vec::new();
    let mut kind: Vec<&str> = Vec::new();
    let mut target: Vec<&str> = Vec::new();
    let mut started: Vec<DateTime<Utc>> = Vec::new();
    let mut ring_ms: Vec<i64> = Vec::new();
    let mut answered: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut ended: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut talk: Vec<Option<i64>> = Vec::new();
    let mut outcome: Vec<&str> = Vec::new();
    let mut cause: Vec<Option<&str>> = Vec::new();
    let mut detail: Vec<Option<&str>> = Vec::new();
    let mut ended_by: Vec<Option<&str>> = Vec::new();
    for r in records {
        for (i, a) in r.attempts.iter().enumerate() {
            call_id.push(r.call_id);
            seq.push(i16::try_from(i).unwrap_or(i16::MAX));
            buyer.push(a.buyer_id.as_deref());
            destination.push(a.destination_id.as_deref());
            kind.push(a.kind.as_str());
            target.push(a.target.as_str());
            started.push(a.started_at);
            ring_ms.push(i64::try_from(a.ring_ms).unwrap_or(i64::MAX));
            answered.push(a.answered_at);
            ended.push(a.ended_at);
            talk.push(ms(a.talk_ms));
            outcome.push(a.outcome_str());
            cause.push(a.cause.as_deref());
            detail.push(a.detail.as_deref());
            ended_by.push(a.ended_by.map(|p| p.as_str()));
        }
    }
    if call_id.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO bridge_attempts (call_id, seq, buyer_id, destination_id, kind, target, started_at, ring_ms,
             answered_at, ended_at, talk_ms, outcome, cause, detail, ended_by)
         SELECT * FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::timestamptz[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::text[],
             $13::text[], $14::text[], $15::text[])
         ON CONFLICT (call_id, seq) DO NOTHING",
        &[&call_id, &seq, &buyer, &destination, &kind, &target, &started, &ring_ms, &answered, &ended, &talk, &outcome, &cause, &detail, &ended_by],
    )
    .await
}

async fn insert_consents(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    let mut call_id = Vec::new();
    let mut seq: Vec<i16> = Vec::new();
    let mut kind: Vec<&str> = Vec::new();
    let mut reference: Vec<Option<&str>> = Vec::new();
    let mut prompt: Vec<Option<&str>> = Vec::new();
    let mut key: Vec<Option<&str>> = Vec::new();
    let mut page: Vec<Option<&str>> = Vec::new();
    let mut consented: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut captured: Vec<DateTime<Utc>> = Vec::new();
    for r in records {
        for (i, c) in r.consents.iter().enumerate() {
            call_id.push(r.call_id);
            seq.push(i16::try_from(i).unwrap_or(i16::MAX));
            kind.push(c.kind.as_str());
            reference.push(c.reference.as_deref());
            prompt.push(c.prompt.as_deref());
            key.push(c.key_pressed.as_deref());
            page.push(c.page.as_deref());
            consented.push(c.consented_at);
            captured.push(c.captured_at);
        }
    }
    if call_id.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO consent_records (call_id, seq, kind, reference, prompt, key_pressed, page, consented_at, captured_at)
         SELECT * FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::timestamptz[], $9::timestamptz[])
         ON CONFLICT (call_id, seq) DO NOTHING",
        &[&call_id, &seq, &kind, &reference, &prompt, &key, &page, &consented, &captured],
    )
    .await
}

/// Opted-out callers join the do-not-call list in the record's own
/// transaction: the journal makes the opt-out as durable as the record.
async fn insert_opt_outs(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    let mut number: Vec<&str> = Vec::new();
    let mut at: Vec<DateTime<Utc>> = Vec::new();
    for r in records {
        if let (Some(opt_out), Some(caller)) = (&r.opted_out, &r.caller) {
            number.push(caller);
            at.push(opt_out.at);
        }
    }
    if number.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO dnc (number, source, added_at)
         SELECT n, $3::text, a FROM UNNEST($1::text[], $2::timestamptz[]) AS u(n, a)
         ON CONFLICT (number) DO NOTHING",
        &[&number, &at, &crate::compliance::dnc::SOURCE_IVR_OPT_OUT],
    )
    .await
}

/// The sharing log: the record's own rows (pings, bridges) and one row per
/// notice enqueued for it. Notice rows follow the record's rows, so their
/// `seq` is stable: a notice is enqueued only when its call is first
/// inserted, and a replay inserts neither again.
async fn insert_sharing(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[CallRecord],
    notices: &[super::outbox::Pending],
) -> Result<u64, tokio_postgres::Error> {
    let mut call_id: Vec<Uuid> = Vec::new();
    let mut seq: Vec<i16> = Vec::new();
    let mut channel: Vec<&str> = Vec::new();
    let mut party_kind: Vec<&str> = Vec::new();
    let mut party_id: Vec<&str> = Vec::new();
    let mut destination: Vec<Option<&str>> = Vec::new();
    // Arrays of arrays must be rectangular in PostgreSQL: the field lists
    // travel as one comma-joined text each and are split in SQL.
    let mut fields: Vec<String> = Vec::new();
    let mut consent_seq: Vec<Option<i16>> = Vec::new();
    let mut shared_at: Vec<DateTime<Utc>> = Vec::new();
    let now = Utc::now();
    for r in records {
        let consent = crate::compliance::consent::primary(&r.consents);
        for (i, s) in r.sharing.iter().enumerate() {
            call_id.push(r.call_id);
            seq.push(i16::try_from(i).unwrap_or(i16::MAX));
            channel.push(&s.channel);
            party_kind.push(&s.party_kind);
            party_id.push(&s.party_id);
            destination.push(s.destination_id.as_deref());
            fields.push(s.fields.join(","));
            consent_seq.push(s.consent_seq.map(|c| i16::try_from(c).unwrap_or(i16::MAX)));
            shared_at.push(s.shared_at);
        }
        let mine = notices.iter().filter(|n| n.call_id == r.call_id);
        for (next, n) in (r.sharing.len()..).zip(mine) {
            call_id.push(r.call_id);
            seq.push(i16::try_from(next).unwrap_or(i16::MAX));
            channel.push("notice");
            party_kind.push(if n.kind.is_publisher() {
                "publisher"
            } else {
                "buyer"
            });
            party_id.push(&n.party_id);
            destination.push(None);
            fields.push(n.fields.join(","));
            consent_seq.push(consent.map(|c| i16::try_from(c).unwrap_or(i16::MAX)));
            shared_at.push(now);
        }
    }
    if call_id.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO sharing_log (call_id, seq, channel, party_kind, party_id, destination_id, fields, consent_seq, shared_at)
         SELECT c, s, ch, pk, p, d, CASE WHEN f = '' THEN '{}'::text[] ELSE string_to_array(f, ',') END, cs, a
         FROM UNNEST($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::int2[], $9::timestamptz[]) AS u(c, s, ch, pk, p, d, f, cs, a)
         ON CONFLICT (call_id, seq) DO NOTHING",
        &[&call_id, &seq, &channel, &party_kind, &party_id, &destination, &fields, &consent_seq, &shared_at],
    )
    .await
}
