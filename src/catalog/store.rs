//! The catalog document in PostgreSQL: read it, apply a new one, export it.
//!
//! `apply` is validate-then-write: the whole document is checked first
//! (nothing is written if anything is wrong), then compared with what the
//! database holds, and only the differences are upserted, in one
//! transaction, under an advisory lock so two operators applying at once
//! cannot interleave. Entries the database has and the file lacks are
//! reported, and removed only with `--prune`: a partial file must never
//! silently delete the rest of a live catalog.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::dial::{DialTargetSpec, PromptName};
use super::spec::{
    BlockSpec, BuyerSpec, CampaignSpec, CapsSpec, CatalogDoc, CatalogIssue, DestinationSpec,
    DuplicateRule, NoticesSpec, NumberSpec, PayoutSpec, Percent, PingSpec, PublisherSpec,
};
use crate::money::Cents;

/// Arbitrary constant naming the catalog-apply lock.
const APPLY_LOCK_KEY: i64 = 0x6262_6361_7461_6c67; // "bbcatalg"

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the catalog in the database is inconsistent: {0}")]
    Corrupt(String),
    #[error("the catalog has {} problem(s):\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<CatalogIssue>),
}

/// What `apply` did (or would do, with `--dry-run`) to one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub id: String,
    pub action: ChangeAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "fields")]
pub enum ChangeAction {
    Added,
    Changed(Vec<String>),
    Removed,
    /// In the database, not in the file, kept (no `--prune`).
    NotInFile,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            ChangeAction::Added => write!(f, "+ {} {}", self.kind, self.id),
            ChangeAction::Changed(fields) => {
                write!(f, "~ {} {} ({})", self.kind, self.id, fields.join(", "))
            }
            ChangeAction::Removed => write!(f, "- {} {}", self.kind, self.id),
            ChangeAction::NotInFile => write!(
                f,
                "? {} {} is in the database but not in the file (kept; --prune removes it)",
                self.kind, self.id
            ),
        }
    }
}

impl Change {
    pub fn is_write(&self) -> bool {
        !matches!(self.action, ChangeAction::NotInFile)
    }
}

fn opt_u32(row: &Row, column: &str) -> Result<Option<u32>, StoreError> {
    let value: Option<i32> = row.try_get(column)?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} = {v} is negative")))
        })
        .transpose()
}

fn opt_cents(row: &Row, column: &str) -> Result<Option<Cents>, StoreError> {
    Ok(row.try_get::<_, Option<i64>>(column)?.map(Cents))
}

fn json_to<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn payout_from_row(row: &Row) -> Result<Option<PayoutSpec>, StoreError> {
    let kind: String = row.try_get("payout_kind")?;
    let min_talk_secs = opt_u32(row, "payout_min_talk_secs")?;
    Ok(match kind.as_str() {
        "fixed" => Some(PayoutSpec {
            fixed: opt_cents(row, "payout_fixed_cents")?,
            share_percent: None,
            min_talk_secs,
        }),
        "share" => Some(PayoutSpec {
            fixed: None,
            share_percent: opt_u32(row, "payout_share_bp")?.map(Percent),
            min_talk_secs,
        }),
        _ => None,
    })
}

fn caps_from_row(row: &Row) -> Result<CapsSpec, StoreError> {
    Ok(CapsSpec {
        per_hour: opt_u32(row, "cap_hour")?,
        per_day: opt_u32(row, "cap_day")?,
        per_month: opt_u32(row, "cap_month")?,
        total: opt_u32(row, "cap_total")?,
        concurrency: opt_u32(row, "concurrency_cap")?,
        budget_per_day: opt_cents(row, "budget_day_cents")?,
        budget_per_month: opt_cents(row, "budget_month_cents")?,
    })
}

/// Reads the whole catalog in one consistent snapshot.
pub async fn load(client: &mut tokio_postgres::Client) -> Result<CatalogDoc, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let doc = load_in(&tx).await?;
    tx.commit().await?;
    Ok(doc)
}

/// A nullable prompt-name column.
fn opt_prompt(row: &Row, column: &str) -> Result<Option<PromptName>, StoreError> {
    row.try_get::<_, Option<String>>(column)?
        .map(|p| {
            PromptName::new(&p).map_err(|e| StoreError::Corrupt(format!("campaigns.{column}: {e}")))
        })
        .transpose()
}

async fn load_in(db: &impl GenericClient) -> Result<CatalogDoc, StoreError> {
    let mut doc = CatalogDoc::default();

    for row in db.query("SELECT * FROM publishers", &[]).await? {
        doc.publishers.push(PublisherSpec {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            payout: payout_from_row(&row)?,
            floor: opt_cents(&row, "floor_cents")?,
            postback_url: row.try_get("postback_url")?,
        });
    }

    for row in db.query("SELECT * FROM campaigns", &[]).await? {
        let duplicate = match (
            opt_u32(&row, "duplicate_window_secs")?,
            row.try_get::<_, Option<String>>("duplicate_action")?,
        ) {
            (Some(window_secs), Some(action)) => Some(DuplicateRule {
                window_secs,
                action: json_to(
                    serde_json::Value::String(action),
                    "campaigns.duplicate_action",
                )?,
            }),
            _ => None,
        };
        let id: String = row.try_get("id")?;
        doc.campaigns.push(CampaignSpec {
            name: row.try_get("name")?,
            vertical: row.try_get("vertical")?,
            currency: row.try_get("currency")?,
            floor: Cents(row.try_get("floor_cents")?),
            auction_deadline_ms: opt_u32(&row, "auction_deadline_ms")?,
            auction_type: json_to(
                serde_json::Value::String(row.try_get("auction_type")?),
                "campaigns.auction_type",
            )?,
            second_price_increment: Cents(row.try_get("second_price_increment_cents")?),
            ranking: json_to(
                serde_json::Value::String(row.try_get("ranking")?),
                "campaigns.ranking",
            )?,
            tier_margin: Cents(row.try_get("tier_margin_cents")?),
            min_talk_secs: opt_u32(&row, "min_talk_secs")?.unwrap_or(0),
            recording: row.try_get("recording")?,
            backup: row
                .try_get::<_, Option<serde_json::Value>>("backup_dial")?
                .map(|v| json_to::<DialTargetSpec>(v, &format!("campaign {id} backup_dial")))
                .transpose()?,
            duplicate,
            bid_expiry: json_to(
                serde_json::Value::String(row.try_get("bid_expiry_action")?),
                "campaigns.bid_expiry_action",
            )?,
            ivr: row
                .try_get::<_, Option<serde_json::Value>>("ivr")?
                .map(|v| json_to(v, &format!("campaign {id} ivr")))
                .transpose()?,
            payout: payout_from_row(&row)?,
            consent_prompt: opt_prompt(&row, "consent_prompt")?,
            consent_key: row.try_get("consent_key")?,
            require_consent: row.try_get("require_consent")?,
            without_consent: json_to(
                serde_json::Value::String(row.try_get("without_consent")?),
                "campaigns.without_consent",
            )?,
            opt_out_key: row.try_get("opt_out_key")?,
            opt_out_prompt: opt_prompt(&row, "opt_out_prompt")?,
            retention_days: opt_u32(&row, "retention_days")?,
            recording_retention_days: opt_u32(&row, "recording_retention_days")?,
            require_attestation: row
                .try_get::<_, Option<String>>("require_attestation")?
                .map(|v| {
                    json_to(
                        serde_json::Value::String(v),
                        "campaigns.require_attestation",
                    )
                })
                .transpose()?,
            unattested: json_to(
                serde_json::Value::String(row.try_get("unattested_action")?),
                "campaigns.unattested_action",
            )?,
            fraud_auto_block: row.try_get("fraud_auto_block")?,
            id,
        });
    }

    for row in db
        .query(
            "SELECT number, campaign_id, publisher_id, source FROM tracking_numbers",
            &[],
        )
        .await?
    {
        doc.numbers.push(NumberSpec {
            number: row.try_get(0)?,
            campaign: row.try_get(1)?,
            publisher: row.try_get(2)?,
            source: row.try_get(3)?,
        });
    }

    let mut buyers: BTreeMap<String, BuyerSpec> = BTreeMap::new();
    for row in db.query("SELECT * FROM buyers", &[]).await? {
        let id: String = row.try_get("id")?;
        buyers.insert(
            id.clone(),
            BuyerSpec {
                id,
                name: row.try_get("name")?,
                enabled: row.try_get("enabled")?,
                allow_caller_number: row.try_get("allow_caller_number")?,
                timezone: row.try_get("timezone")?,
                caps: caps_from_row(&row)?,
                notices: NoticesSpec {
                    win_url: row.try_get("win_url")?,
                    loss_url: row.try_get("loss_url")?,
                    billing_url: row.try_get("billing_url")?,
                    postback_url: row.try_get("postback_url")?,
                },
                api_token_sha256: row.try_get("api_token_sha256")?,
                destinations: Vec::new(),
            },
        );
    }

    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in db
        .query(
            "SELECT destination_id, campaign_id FROM destination_campaigns",
            &[],
        )
        .await?
    {
        served
            .entry(row.try_get(0)?)
            .or_default()
            .push(row.try_get(1)?);
    }

    for row in db.query("SELECT * FROM destinations", &[]).await? {
        let id: String = row.try_get("id")?;
        let buyer_id: String = row.try_get("buyer_id")?;
        let ping = match row.try_get::<_, Option<String>>("ping_url")? {
            Some(url) => Some(PingSpec {
                url,
                dialect: json_to(
                    serde_json::Value::String(row.try_get("ping_dialect")?),
                    "destinations.ping_dialect",
                )?,
                auth_header: row.try_get("ping_auth_header")?,
                auth_value: row.try_get("ping_auth_value")?,
                rate_limit_per_sec: opt_u32(&row, "ping_rate_limit_per_sec")?,
            }),
            None => None,
        };
        let destination = DestinationSpec {
            campaigns: served.remove(&id).unwrap_or_default(),
            enabled: row.try_get("enabled")?,
            ping,
            static_price: opt_cents(&row, "static_price_cents")?,
            dial: json_to(row.try_get("dial")?, &format!("destination {id} dial"))?,
            ring_timeout_secs: opt_u32(&row, "ring_timeout_secs")?.unwrap_or(20),
            tier: u8::try_from(row.try_get::<_, i16>("tier")?)
                .map_err(|_| StoreError::Corrupt(format!("destination {id} tier")))?,
            weight: opt_u32(&row, "weight")?.unwrap_or(100),
            min_talk_secs: opt_u32(&row, "min_talk_secs")?,
            timezone: row.try_get("timezone")?,
            hours: row
                .try_get::<_, Option<serde_json::Value>>("hours")?
                .map(|v| json_to(v, &format!("destination {id} hours")))
                .transpose()?,
            closed_dates: row.try_get::<_, Vec<NaiveDate>>("closed_dates")?,
            caps: caps_from_row(&row)?,
            targeting: json_to(
                row.try_get("targeting")?,
                &format!("destination {id} targeting"),
            )?,
            id,
        };
        buyers
            .get_mut(&buyer_id)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "destination {} names missing buyer {buyer_id}",
                    destination.id
                ))
            })?
            .destinations
            .push(destination);
    }
    doc.buyers = buyers.into_values().collect();

    for row in db
        .query(
            "SELECT number, reason FROM blocklist WHERE expires_at IS NULL OR expires_at > now()",
            &[],
        )
        .await?
    {
        doc.blocklist.push(BlockSpec {
            number: row.try_get(0)?,
            reason: row.try_get(1)?,
        });
    }

    doc.normalize();
    Ok(doc)
}

/// Field names whose values differ between two entries.
fn changed_fields<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(entry)".to_string()];
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Compares entries keyed by id and records the changes.
fn diff<'a, T: Serialize + PartialEq + 'a>(
    kind: &'static str,
    old: impl IntoIterator<Item = (String, &'a T)>,
    new: impl IntoIterator<Item = (String, &'a T)>,
    prune: bool,
    changes: &mut Vec<Change>,
) -> (Vec<&'a T>, Vec<String>) {
    let old: BTreeMap<String, &T> = old.into_iter().collect();
    let new: BTreeMap<String, &T> = new.into_iter().collect();
    let mut writes = Vec::new();
    let mut removes = Vec::new();
    for (id, entry) in &new {
        match old.get(id) {
            None => {
                changes.push(Change {
                    kind,
                    id: id.clone(),
                    action: ChangeAction::Added,
                });
                writes.push(*entry);
            }
            Some(before) if *before != *entry => {
                changes.push(Change {
                    kind,
                    id: id.clone(),
                    action: ChangeAction::Changed(changed_fields(*before, *entry)),
                });
                writes.push(*entry);
            }
            Some(_) => {}
        }
    }
    for id in old.keys().filter(|id| !new.contains_key(*id)) {
        let action = if prune {
            ChangeAction::Removed
        } else {
            ChangeAction::NotInFile
        };
        changes.push(Change {
            kind,
            id: id.clone(),
            action,
        });
        if prune {
            removes.push(id.clone());
        }
    }
    (writes, removes)
}

/// A destination with its buyer, the unit of comparison for destinations.
#[derive(Debug, PartialEq, Serialize)]
struct OwnedDestination<'a> {
    buyer: &'a str,
    #[serde(flatten)]
    spec: &'a DestinationSpec,
}

/// A buyer without its destinations (they are compared on their own).
fn buyer_only(b: &BuyerSpec) -> BuyerSpec {
    BuyerSpec {
        destinations: Vec::new(),
        ..b.clone()
    }
}

/// Validates `doc`, compares it with the database and (unless `dry_run`)
/// writes the differences in one transaction. Returns every change.
pub async fn apply(
    client: &mut tokio_postgres::Client,
    doc: &CatalogDoc,
    prune: bool,
    dry_run: bool,
) -> Result<Vec<Change>, StoreError> {
    let issues = doc.validate();
    if !issues.is_empty() {
        return Err(StoreError::Invalid(issues));
    }
    let mut doc = doc.clone();
    doc.normalize();

    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK_KEY])
        .await?;
    let current = load_in(&tx).await?;
    let mut changes = Vec::new();

    let (publishers, drop_publishers) = diff(
        "publisher",
        current.publishers.iter().map(|p| (p.id.clone(), p)),
        doc.publishers.iter().map(|p| (p.id.clone(), p)),
        prune,
        &mut changes,
    );
    let (campaigns, drop_campaigns) = diff(
        "campaign",
        current.campaigns.iter().map(|c| (c.id.clone(), c)),
        doc.campaigns.iter().map(|c| (c.id.clone(), c)),
        prune,
        &mut changes,
    );
    let old_buyers: Vec<BuyerSpec> = current.buyers.iter().map(buyer_only).collect();
    let new_buyers: Vec<BuyerSpec> = doc.buyers.iter().map(buyer_only).collect();
    let (buyers, drop_buyers) = diff(
        "buyer",
        old_buyers.iter().map(|b| (b.id.clone(), b)),
        new_buyers.iter().map(|b| (b.id.clone(), b)),
        prune,
        &mut changes,
    );
    let old_dests: Vec<OwnedDestination> = current
        .destinations()
        .map(|(b, d)| OwnedDestination {
            buyer: &b.id,
            spec: d,
        })
        .collect();
    let new_dests: Vec<OwnedDestination> = doc
        .destinations()
        .map(|(b, d)| OwnedDestination {
            buyer: &b.id,
            spec: d,
        })
        .collect();
    let (destinations, drop_destinations) = diff(
        "destination",
        old_dests.iter().map(|d| (d.spec.id.clone(), d)),
        new_dests.iter().map(|d| (d.spec.id.clone(), d)),
        prune,
        &mut changes,
    );
    let (numbers, drop_numbers) = diff(
        "number",
        current.numbers.iter().map(|n| (n.number.clone(), n)),
        doc.numbers.iter().map(|n| (n.number.clone(), n)),
        prune,
        &mut changes,
    );
    let (blocks, drop_blocks) = diff(
        "blocklist",
        current.blocklist.iter().map(|b| (b.number.clone(), b)),
        doc.blocklist.iter().map(|b| (b.number.clone(), b)),
        prune,
        &mut changes,
    );

    if dry_run {
        tx.rollback().await?;
        return Ok(changes);
    }

    // Removals first, dependants before what they depend on.
    for number in &drop_numbers {
        tx.execute(
            "DELETE FROM tracking_numbers WHERE number = $1::text",
            &[number],
        )
        .await?;
    }
    for id in &drop_destinations {
        tx.execute("DELETE FROM destinations WHERE id = $1::text", &[id])
            .await?;
    }
    for id in &drop_buyers {
        tx.execute("DELETE FROM buyers WHERE id = $1::text", &[id])
            .await?;
    }
    for id in &drop_campaigns {
        tx.execute("DELETE FROM campaigns WHERE id = $1::text", &[id])
            .await?;
    }
    for id in &drop_publishers {
        tx.execute("DELETE FROM publishers WHERE id = $1::text", &[id])
            .await?;
    }
    for number in &drop_blocks {
        tx.execute("DELETE FROM blocklist WHERE number = $1::text", &[number])
            .await?;
    }

    for p in publishers {
        upsert_publisher(&tx, p).await?;
    }
    for c in campaigns {
        upsert_campaign(&tx, c).await?;
    }
    for b in buyers {
        upsert_buyer(&tx, b).await?;
    }
    for d in destinations {
        upsert_destination(&tx, d.buyer, d.spec).await?;
    }
    for n in numbers {
        tx.execute(
            "INSERT INTO tracking_numbers (number, campaign_id, publisher_id, source)
             VALUES ($1::text, $2::text, $3::text, $4)
             ON CONFLICT (number) DO UPDATE SET campaign_id = EXCLUDED.campaign_id,
                 publisher_id = EXCLUDED.publisher_id, source = EXCLUDED.source, updated_at = now()",
            &[&n.number, &n.campaign, &n.publisher, &n.source],
        )
        .await?;
    }
    for b in blocks {
        tx.execute(
            "INSERT INTO blocklist (number, reason) VALUES ($1::text, $2)
             ON CONFLICT (number) DO UPDATE SET reason = EXCLUDED.reason, expires_at = NULL",
            &[&b.number, &b.reason],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changes)
}

/// `(kind, fixed, share_bp, min_talk)` columns for a payout rule.
fn payout_columns(
    payout: &Option<PayoutSpec>,
) -> (&'static str, Option<i64>, Option<i32>, Option<i32>) {
    match payout {
        Some(PayoutSpec {
            fixed: Some(amount),
            min_talk_secs,
            ..
        }) => (
            "fixed",
            Some(amount.0),
            None,
            min_talk_secs.map(|v| v as i32),
        ),
        Some(PayoutSpec {
            share_percent: Some(p),
            min_talk_secs,
            ..
        }) => (
            "share",
            None,
            Some(p.0 as i32),
            min_talk_secs.map(|v| v as i32),
        ),
        _ => ("none", None, None, None),
    }
}

fn to_i32(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

async fn upsert_publisher(db: &impl GenericClient, p: &PublisherSpec) -> Result<(), StoreError> {
    let (kind, fixed, share, min_talk) = payout_columns(&p.payout);
    db.execute(
        "INSERT INTO publishers (id, name, payout_kind, payout_fixed_cents, payout_share_bp, payout_min_talk_secs,
                                 floor_cents, postback_url)
         VALUES ($1::text, $2, $3, $4::bigint, $5, $6, $7::bigint, $8)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, payout_kind = EXCLUDED.payout_kind,
             payout_fixed_cents = EXCLUDED.payout_fixed_cents, payout_share_bp = EXCLUDED.payout_share_bp,
             payout_min_talk_secs = EXCLUDED.payout_min_talk_secs, floor_cents = EXCLUDED.floor_cents,
             postback_url = EXCLUDED.postback_url, updated_at = now()",
        &[&p.id, &p.name, &kind, &fixed, &share, &min_talk, &p.floor.map(|c| c.0), &p.postback_url],
    )
    .await?;
    Ok(())
}

fn enum_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

async fn upsert_campaign(db: &impl GenericClient, c: &CampaignSpec) -> Result<(), StoreError> {
    let (kind, fixed, share, min_talk) = payout_columns(&c.payout);
    let backup = c
        .backup
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ivr = c
        .ivr
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let (dup_window, dup_action) = match &c.duplicate {
        Some(d) => (Some(d.window_secs as i32), Some(enum_text(&d.action))),
        None => (None, None),
    };
    db.execute(
        "INSERT INTO campaigns (id, name, vertical, currency, floor_cents, auction_deadline_ms, auction_type,
                                second_price_increment_cents, ranking, tier_margin_cents, min_talk_secs, recording,
                                backup_dial, duplicate_window_secs, duplicate_action, bid_expiry_action, ivr,
                                payout_kind, payout_fixed_cents, payout_share_bp, payout_min_talk_secs,
                                consent_prompt, consent_key, require_consent, without_consent, opt_out_key,
                                opt_out_prompt, retention_days, recording_retention_days, require_attestation,
                                unattested_action, fraud_auto_block)
         VALUES ($1::text, $2, $3, $4, $5::bigint, $6, $7, $8::bigint, $9, $10::bigint, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19::bigint, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, vertical = EXCLUDED.vertical,
             currency = EXCLUDED.currency, floor_cents = EXCLUDED.floor_cents,
             auction_deadline_ms = EXCLUDED.auction_deadline_ms, auction_type = EXCLUDED.auction_type,
             second_price_increment_cents = EXCLUDED.second_price_increment_cents, ranking = EXCLUDED.ranking,
             tier_margin_cents = EXCLUDED.tier_margin_cents, min_talk_secs = EXCLUDED.min_talk_secs,
             recording = EXCLUDED.recording, backup_dial = EXCLUDED.backup_dial,
             duplicate_window_secs = EXCLUDED.duplicate_window_secs, duplicate_action = EXCLUDED.duplicate_action,
             bid_expiry_action = EXCLUDED.bid_expiry_action, ivr = EXCLUDED.ivr, payout_kind = EXCLUDED.payout_kind,
             payout_fixed_cents = EXCLUDED.payout_fixed_cents, payout_share_bp = EXCLUDED.payout_share_bp,
             payout_min_talk_secs = EXCLUDED.payout_min_talk_secs, consent_prompt = EXCLUDED.consent_prompt,
             consent_key = EXCLUDED.consent_key, require_consent = EXCLUDED.require_consent,
             without_consent = EXCLUDED.without_consent, opt_out_key = EXCLUDED.opt_out_key,
             opt_out_prompt = EXCLUDED.opt_out_prompt,
             retention_days = EXCLUDED.retention_days,
             recording_retention_days = EXCLUDED.recording_retention_days,
             require_attestation = EXCLUDED.require_attestation,
             unattested_action = EXCLUDED.unattested_action,
             fraud_auto_block = EXCLUDED.fraud_auto_block, updated_at = now()",
        &[
            &c.id,
            &c.name,
            &c.vertical,
            &c.currency,
            &c.floor.0,
            &to_i32(c.auction_deadline_ms),
            &enum_text(&c.auction_type),
            &c.second_price_increment.0,
            &enum_text(&c.ranking),
            &c.tier_margin.0,
            &(c.min_talk_secs as i32),
            &c.recording,
            &backup,
            &dup_window,
            &dup_action,
            &enum_text(&c.bid_expiry),
            &ivr,
            &kind,
            &fixed,
            &share,
            &min_talk,
            &c.consent_prompt.as_ref().map(PromptName::as_str),
            &c.consent_key,
            &c.require_consent,
            &enum_text(&c.without_consent),
            &c.opt_out_key,
            &c.opt_out_prompt.as_ref().map(PromptName::as_str),
            &to_i32(c.retention_days),
            &to_i32(c.recording_retention_days),
            &c.require_attestation.map(|r| r.as_str()),
            &enum_text(&c.unattested),
            &c.fraud_auto_block,
        ],
    )
    .await?;
    Ok(())
}

async fn upsert_buyer(db: &impl GenericClient, b: &BuyerSpec) -> Result<(), StoreError> {
    let caps = &b.caps;
    db.execute(
        "INSERT INTO buyers (id, name, enabled, allow_caller_number, timezone, cap_hour, cap_day, cap_month, cap_total,
                             concurrency_cap, budget_day_cents, budget_month_cents, api_token_sha256, win_url,
                             loss_url, billing_url, postback_url)
         VALUES ($1::text, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::bigint, $12::bigint, $13, $14, $15, $16, $17)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, enabled = EXCLUDED.enabled,
             allow_caller_number = EXCLUDED.allow_caller_number, timezone = EXCLUDED.timezone,
             cap_hour = EXCLUDED.cap_hour, cap_day = EXCLUDED.cap_day, cap_month = EXCLUDED.cap_month,
             cap_total = EXCLUDED.cap_total, concurrency_cap = EXCLUDED.concurrency_cap,
             budget_day_cents = EXCLUDED.budget_day_cents, budget_month_cents = EXCLUDED.budget_month_cents,
             api_token_sha256 = EXCLUDED.api_token_sha256, win_url = EXCLUDED.win_url, loss_url = EXCLUDED.loss_url,
             billing_url = EXCLUDED.billing_url, postback_url = EXCLUDED.postback_url, updated_at = now()",
        &[
            &b.id,
            &b.name,
            &b.enabled,
            &b.allow_caller_number,
            &b.timezone,
            &to_i32(caps.per_hour),
            &to_i32(caps.per_day),
            &to_i32(caps.per_month),
            &to_i32(caps.total),
            &to_i32(caps.concurrency),
            &caps.budget_per_day.map(|c| c.0),
            &caps.budget_per_month.map(|c| c.0),
            &b.api_token_sha256,
            &b.notices.win_url,
            &b.notices.loss_url,
            &b.notices.billing_url,
            &b.notices.postback_url,
        ],
    )
    .await?;
    Ok(())
}

async fn upsert_destination(
    db: &impl GenericClient,
    buyer: &str,
    d: &DestinationSpec,
) -> Result<(), StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let dial = serde_json::to_value(&d.dial).map_err(corrupt)?;
    let hours = d
        .hours
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(corrupt)?;
    let targeting = serde_json::to_value(&d.targeting).map_err(corrupt)?;
    let ping = d.ping.as_ref();
    let caps = &d.caps;
    db.execute(
        "INSERT INTO destinations (id, buyer_id, enabled, ping_url, ping_dialect, ping_auth_header, ping_auth_value,
                                   static_price_cents, dial, ring_timeout_secs, tier, weight, min_talk_secs, timezone,
                                   hours, closed_dates, cap_hour, cap_day, cap_month, cap_total, concurrency_cap,
                                   budget_day_cents, budget_month_cents, targeting, ping_rate_limit_per_sec)
         VALUES ($1::text, $2::text, $3, $4, $5, $6, $7, $8::bigint, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22::bigint, $23::bigint, $24, $25)
         ON CONFLICT (id) DO UPDATE SET buyer_id = EXCLUDED.buyer_id, enabled = EXCLUDED.enabled,
             ping_url = EXCLUDED.ping_url, ping_dialect = EXCLUDED.ping_dialect,
             ping_auth_header = EXCLUDED.ping_auth_header, ping_auth_value = EXCLUDED.ping_auth_value,
             static_price_cents = EXCLUDED.static_price_cents, dial = EXCLUDED.dial,
             ring_timeout_secs = EXCLUDED.ring_timeout_secs, tier = EXCLUDED.tier, weight = EXCLUDED.weight,
             min_talk_secs = EXCLUDED.min_talk_secs, timezone = EXCLUDED.timezone, hours = EXCLUDED.hours,
             closed_dates = EXCLUDED.closed_dates, cap_hour = EXCLUDED.cap_hour, cap_day = EXCLUDED.cap_day,
             cap_month = EXCLUDED.cap_month, cap_total = EXCLUDED.cap_total,
             concurrency_cap = EXCLUDED.concurrency_cap, budget_day_cents = EXCLUDED.budget_day_cents,
             budget_month_cents = EXCLUDED.budget_month_cents, targeting = EXCLUDED.targeting,
             ping_rate_limit_per_sec = EXCLUDED.ping_rate_limit_per_sec, updated_at = now()",
        &[
            &d.id,
            &buyer,
            &d.enabled,
            &ping.map(|p| p.url.clone()),
            &ping.map(|p| p.dialect.as_str()).unwrap_or("native"),
            &ping.and_then(|p| p.auth_header.clone()),
            &ping.and_then(|p| p.auth_value.clone()),
            &d.static_price.map(|c| c.0),
            &dial,
            &(d.ring_timeout_secs as i32),
            &i16::from(d.tier),
            &to_i32(Some(d.weight)),
            &to_i32(d.min_talk_secs),
            &d.timezone,
            &hours,
            &d.closed_dates,
            &to_i32(caps.per_hour),
            &to_i32(caps.per_day),
            &to_i32(caps.per_month),
            &to_i32(caps.total),
            &to_i32(caps.concurrency),
            &caps.budget_per_day.map(|c| c.0),
            &caps.budget_per_month.map(|c| c.0),
            &targeting,
            &to_i32(ping.and_then(|p| p.rate_limit_per_sec)),
        ],
    )
    .await?;
    db.execute(
        "DELETE FROM destination_campaigns WHERE destination_id = $1::text",
        &[&d.id],
    )
    .await?;
    for campaign in &d.campaigns {
        db.execute(
            "INSERT INTO destination_campaigns (destination_id, campaign_id) VALUES ($1::text, $2::text)",
            &[&d.id, campaign],
        )
        .await?;
    }
    Ok(())
}
