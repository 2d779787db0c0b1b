//! Fraud signals over call records: `bidbridge report --fraud`, and the
//! optional auto-block of offending numbers.
//!
//! Owns two signals, computed per traffic source (publisher + source label
//! + campaign) over a window of calls:
//! - talk-time clustering: the share of a source's payable calls whose talk
//!   time lands just past the payable minimum (within `margin_percent` of
//!   it). Real callers' talk times spread out; a publisher feeding
//!   scripted or incentivised calls that hang up right after the threshold
//!   piles them up there.
//! - rotating callers: many distinct caller numbers sharing the same first
//!   `prefix_digits` digits (e.g. +1 312 555 01xx) from one source: one
//!   dialer cycling the last digits to defeat duplicate-caller rules.
//!
//! Must never: change a record, or block anything unless the campaign opted
//! in (`fraud_auto_block = true`) and the caller asked for it.
//! Purged numbers (`hmac:` hashes) carry no prefix and are ignored by the
//! rotation signal.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Thresholds; the defaults suit a 60 s minimum and a few hundred calls a week.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FraudOptions {
    /// "Just past the minimum": talk ≤ minimum × (1 + margin_percent/100).
    pub margin_percent: u32,
    /// Share of payable calls near the minimum that flags a source.
    pub cluster_share: f64,
    /// Fewer payable calls than this never flag (too few to tell).
    pub min_payable_calls: i64,
    /// Digits (after `+`) two numbers must share to count as one block.
    pub prefix_digits: u32,
    /// Distinct numbers in one block that flag it.
    pub min_distinct_callers: i64,
}

impl Default for FraudOptions {
    fn default() -> Self {
        FraudOptions {
            margin_percent: 10,
            cluster_share: 0.5,
            min_payable_calls: 5,
            prefix_digits: 9,
            min_distinct_callers: 5,
        }
    }
}

/// A source whose payable calls cluster just past the minimum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TalkCluster {
    pub campaign_id: String,
    pub publisher_id: String,
    pub source: String,
    pub payable_calls: i64,
    pub near_minimum: i64,
    pub share: f64,
    /// Talk time range of the clustered calls, seconds.
    pub min_talk_secs: i64,
    pub max_talk_secs: i64,
    /// Callers of the clustered calls (E.164 only).
    pub callers: Vec<String>,
}

/// A block of numbers one source's calls rotated through.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RotatingBlock {
    pub campaign_id: String,
    pub publisher_id: String,
    pub source: String,
    /// The shared leading part, e.g. `+131255501`.
    pub prefix: String,
    pub distinct_callers: i64,
    pub calls: i64,
    pub callers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FraudReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub margin_percent: u32,
    pub prefix_digits: u32,
    pub talk_clusters: Vec<TalkCluster>,
    pub rotating_callers: Vec<RotatingBlock>,
}

/// Builds both signals from the database.
pub async fn build(
    client: &tokio_postgres::Client,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    options: FraudOptions,
) -> Result<FraudReport, tokio_postgres::Error> {
    let margin = i64::from(options.margin_percent);
    let rows = client
        .query(
            "WITH c AS (
                 SELECT COALESCE(campaign_id, '') AS campaign, COALESCE(publisher_id, '') AS publisher,
                        COALESCE(source, '') AS source, caller, talk_ms, min_talk_secs,
                        (talk_ms >= min_talk_secs::bigint * 1000
                         AND talk_ms * 100 <= min_talk_secs::bigint * 1000 * (100 + $3::bigint)) AS near
                 FROM calls
                 WHERE arrived_at >= $1 AND arrived_at < $2 AND payable
                   AND min_talk_secs > 0 AND talk_ms IS NOT NULL)
             SELECT campaign, publisher, source, count(*)::bigint,
                    count(*) FILTER (WHERE near)::bigint,
                    COALESCE(min(talk_ms) FILTER (WHERE near), 0)::bigint,
                    COALESCE(max(talk_ms) FILTER (WHERE near), 0)::bigint,
                    COALESCE(array_agg(DISTINCT caller ORDER BY caller)
                             FILTER (WHERE near AND caller LIKE '+%'), '{}')
             FROM c GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[&since, &until, &margin],
        )
        .await?;
    let mut talk_clusters = Vec::new();
    for row in rows {
        let payable: i64 = row.try_get(3)?;
        let near: i64 = row.try_get(4)?;
        let share = if payable > 0 {
            near as f64 / payable as f64
        } else {
            0.0
        };
        if payable < options.min_payable_calls || share < options.cluster_share {
            continue;
        }
        talk_clusters.push(TalkCluster {
            campaign_id: row.try_get(0)?,
            publisher_id: row.try_get(1)?,
            source: row.try_get(2)?,
            payable_calls: payable,
            near_minimum: near,
            share,
            min_talk_secs: row.try_get::<_, i64>(5)? / 1000,
            max_talk_secs: row.try_get::<_, i64>(6)? / 1000,
            callers: row.try_get(7)?,
        });
    }

    let prefix_len = i32::try_from(options.prefix_digits.clamp(4, 14)).unwrap_or(9) + 1;
    let rows = client
        .query(
            "SELECT COALESCE(campaign_id, ''), COALESCE(publisher_id, ''), COALESCE(source, ''),
                    left(caller, $3) AS prefix, count(DISTINCT caller)::bigint, count(*)::bigint,
                    array_agg(DISTINCT caller ORDER BY caller)
             FROM calls
             WHERE arrived_at >= $1 AND arrived_at < $2 AND caller LIKE '+%' AND length(caller) > $3
             GROUP BY 1, 2, 3, 4
             HAVING count(DISTINCT caller) >= $4
             ORDER BY 5 DESC, 1, 2, 3, 4",
            &[&since, &until, &prefix_len, &options.min_distinct_callers],
        )
        .await?;
    let mut rotating_callers = Vec::new();
    for row in rows {
        rotating_callers.push(RotatingBlock {
            campaign_id: row.try_get(0)?,
            publisher_id: row.try_get(1)?,
            source: row.try_get(2)?,
            prefix: row.try_get(3)?,
            distinct_callers: row.try_get(4)?,
            calls: row.try_get(5)?,
            callers: row.try_get(6)?,
        });
    }
    Ok(FraudReport {
        since,
        until,
        margin_percent: options.margin_percent,
        prefix_digits: options.prefix_digits,
        talk_clusters,
        rotating_callers,
    })
}

impl FraudReport {
    pub fn is_empty(&self) -> bool {
        self.talk_clusters.is_empty() && self.rotating_callers.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "fraud signals {} .. {}\n\n",
            self.since.format("%Y-%m-%d %H:%M UTC"),
            self.until.format("%Y-%m-%d %H:%M UTC")
        );
        out.push_str(&format!(
            "talk time clustered just past the payable minimum (within {} %):\n",
            self.margin_percent
        ));
        if self.talk_clusters.is_empty() {
            out.push_str("  none\n");
        }
        for c in &self.talk_clusters {
            out.push_str(&format!(
                "  SUSPICIOUS source {} (publisher {}, campaign {}): {} of {} payable calls ({:.0} %) talked {}-{} s\n",
                c.source,
                c.publisher_id,
                c.campaign_id,
                c.near_minimum,
                c.payable_calls,
                c.share * 100.0,
                c.min_talk_secs,
                c.max_talk_secs
            ));
        }
        out.push_str(&format!(
            "\nrotating caller numbers (same first {} digits):\n",
            self.prefix_digits
        ));
        if self.rotating_callers.is_empty() {
            out.push_str("  none\n");
        }
        for r in &self.rotating_callers {
            out.push_str(&format!(
                "  SUSPICIOUS source {} (publisher {}, campaign {}): {} distinct numbers {}… in {} calls\n",
                r.source, r.publisher_id, r.campaign_id, r.distinct_callers, r.prefix, r.calls
            ));
        }
        out
    }

    /// Every offending number with the signal that caught it, per campaign.
    fn offenders(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for c in &self.talk_clusters {
            for n in &c.callers {
                out.push((
                    c.campaign_id.clone(),
                    n.clone(),
                    format!(
                        "fraud auto-block: talk time clustered past the minimum (source {})",
                        c.source
                    ),
                ));
            }
        }
        for r in &self.rotating_callers {
            for n in &r.callers {
                out.push((
                    r.campaign_id.clone(),
                    n.clone(),
                    format!(
                        "fraud auto-block: rotating numbers {}… (source {})",
                        r.prefix, r.source
                    ),
                ));
            }
        }
        out
    }
}

/// Adds the offending numbers of campaigns with `fraud_auto_block = true`
/// to the blocklist (the daemons hear it through the catalog NOTIFY).
/// Existing entries are left as they are. Returns how many were added.
///
/// The blocklist is a catalog table: `catalog apply --prune` removes
/// entries not in the catalog file, auto-blocked ones included (they are
/// marked by their reason, `fraud auto-block: ...`).
pub async fn auto_block(
    client: &tokio_postgres::Client,
    report: &FraudReport,
) -> Result<u64, tokio_postgres::Error> {
    let opted_in: Vec<String> = client
        .query("SELECT id FROM campaigns WHERE fraud_auto_block", &[])
        .await?
        .into_iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut numbers: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (campaign, number, reason) in report.offenders() {
        if opted_in.contains(&campaign) && crate::phone::E164::parse_strict(&number).is_ok() {
            numbers.push(number);
            reasons.push(reason);
        }
    }
    if numbers.is_empty() {
        return Ok(0);
    }
    client
        .execute(
            "INSERT INTO blocklist (number, reason)
             SELECT DISTINCT ON (n) n, r FROM UNNEST($1::text[], $2::text[]) AS u(n, r)
             ON CONFLICT (number) DO NOTHING",
            &[&numbers, &reasons],
        )
        .await
}

/// How far back the daemon's daily auto-block looks.
pub const AUTO_BLOCK_WINDOW_DAYS: i64 = 7;

/// The daemon's daily auto-block: the last week's signals with default
/// thresholds, applied to campaigns with `fraud_auto_block = true`. Does
/// nothing (one cheap query) when no campaign opted in.
pub async fn auto_block_recent(
    client: &tokio_postgres::Client,
    now: DateTime<Utc>,
) -> Result<u64, tokio_postgres::Error> {
    let opted_in: i64 = client
        .query_one(
            "SELECT count(*)::bigint FROM campaigns WHERE fraud_auto_block",
            &[],
        )
        .await?
        .try_get(0)?;
    if opted_in == 0 {
        return Ok(0);
    }
    let since = now - chrono::Duration::days(AUTO_BLOCK_WINDOW_DAYS);
    let report = build(client, since, now, FraudOptions::default()).await?;
    auto_block(client, &report).await
}
