//! Reports over the call records: per-group totals (`bidbridge report --by
//! ...`, `GET /v1/reports/{by}`) and the recent-calls listing (`bidbridge
//! report calls`).
//!
//! Owns: the report SQL (read-only, every value a parameter; the grouping
//! expression is chosen from a fixed list, never taken from input), the
//! derived figures (rates, averages) and their text, CSV and JSON forms.
//!
//! Must never: add or average money as floating point — sums come from
//! PostgreSQL as BIGINT cents, averages are rounded half-up in integers,
//! and every amount is printed from [`Cents`] ("12.50"). Percentiles and
//! rates are not money and may be floats.
//!
//! Grouping: calls are grouped by their own column; for `buyer` and
//! `destination` that is the winner (calls nobody won are "(none)"), while
//! bid figures (average bid, no-bid reasons) are grouped by the bidding
//! buyer/destination, so a buyer sees its own bids, won or lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::money::Cents;
use crate::phone::E164;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "`{0}` is not a time: expected a duration back from now (30m, 24h, 7d) or an RFC 3339 time (2026-11-20T00:00:00Z)"
    )]
    BadSince(String),
    #[error(
        "`{0}` is not a report grouping: expected campaign, buyer, destination, publisher, source or hour"
    )]
    BadGroup(String),
    #[error("`{0}` is not a report format: expected table, csv or json")]
    BadFormat(String),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Campaign,
    Buyer,
    Destination,
    Publisher,
    Source,
    Hour,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Campaign => "campaign",
            GroupBy::Buyer => "buyer",
            GroupBy::Destination => "destination",
            GroupBy::Publisher => "publisher",
            GroupBy::Source => "source",
            GroupBy::Hour => "hour",
        }
    }

    /// The grouping expression over `calls c` (static SQL, never input).
    fn call_key(self) -> &'static str {
        match self {
            GroupBy::Campaign => "COALESCE(c.campaign_id, '(none)')",
            GroupBy::Buyer => "COALESCE(c.winner_buyer_id, '(none)')",
            GroupBy::Destination => "COALESCE(c.winner_destination_id, '(none)')",
            GroupBy::Publisher => "COALESCE(c.publisher_id, '(none)')",
            GroupBy::Source => "COALESCE(NULLIF(c.source, ''), '(none)')",
            GroupBy::Hour => {
                "to_char(date_trunc('hour', c.arrived_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:00\"Z\"')"
            }
        }
    }

    /// The grouping expression over `bids b JOIN calls c`.
    fn bid_key(self) -> &'static str {
        match self {
            GroupBy::Buyer => "b.buyer_id",
            GroupBy::Destination => "b.destination_id",
            other => other.call_key(),
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <GroupBy as clap::ValueEnum>::from_str(s, true).map_err(|_| ReportError::BadGroup(s.into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Format as clap::ValueEnum>::from_str(s, true).map_err(|_| ReportError::BadFormat(s.into()))
    }
}

/// `30m`, `24h`, `7d`, `90s` back from `now`, or an RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ReportError> {
    let text = text.trim();
    let bad = || ReportError::BadSince(text.to_string());
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let span = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(span).ok_or_else(bad)
}

/// One group's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRow {
    pub key: String,
    pub calls: i64,
    /// A buyer's destination answered (the backup line does not count).
    pub answered: i64,
    pub payable: i64,
    pub conversions: i64,
    pub conversion_value: Cents,
    pub revenue: Cents,
    pub payout: Cents,
    pub margin: Cents,
    /// Usable bids (status `bid`) and the sum of their prices.
    pub bids: i64,
    pub bid_total: Cents,
    pub auction_p50_us: Option<f64>,
    pub auction_p95_us: Option<f64>,
    /// The most frequent reasons for bids that were not usable, with counts.
    pub no_bid_reasons: Vec<(String, i64)>,
}

/// `num / den` rounded half up, in integers (both non-negative).
fn div_round(num: i64, den: i64) -> i64 {
    if den <= 0 {
        return 0;
    }
    let (num, den) = (i128::from(num), i128::from(den));
    let q = (2 * num + den).div_euclid(2 * den);
    i64::try_from(q).unwrap_or(i64::MAX)
}

impl GroupRow {
    pub fn answer_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.answered as f64 / self.calls as f64)
    }

    pub fn payable_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.payable as f64 / self.calls as f64)
    }

    pub fn revenue_per_call(&self) -> Cents {
        Cents(div_round(self.revenue.0, self.calls))
    }

    pub fn average_bid(&self) -> Option<Cents> {
        (self.bids > 0).then(|| Cents(div_round(self.bid_total.0, self.bids)))
    }

    fn reasons_text(&self) -> String {
        self.no_bid_reasons
            .iter()
            .map(|(r, n)| format!("{r} ×{n}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn to_json(&self) -> Value {
        let money = |c: Cents| Value::String(c.to_string());
        json!({
            "key": self.key,
            "calls": self.calls,
            "answered": self.answered,
            "payable": self.payable,
            "answer_rate": self.answer_rate(),
            "payable_rate": self.payable_rate(),
            "conversions": self.conversions,
            "conversion_value": money(self.conversion_value),
            "conversion_value_cents": self.conversion_value.0,
            "revenue": money(self.revenue),
            "revenue_cents": self.revenue.0,
            "payout": money(self.payout),
            "payout_cents": self.payout.0,
            "margin": money(self.margin),
            "margin_cents": self.margin.0,
            "revenue_per_call": money(self.revenue_per_call()),
            "bids": self.bids,
            "average_bid": self.average_bid().map(money),
            "auction_ms_p50": self.auction_p50_us.map(|u| (u / 100.0).round() / 10.0),
            "auction_ms_p95": self.auction_p95_us.map(|u| (u / 100.0).round() / 10.0),
            "no_bid_reasons": self.no_bid_reasons.iter()
                .map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
        })
    }
}

/// A grouped report over `[since, until)`.
#[derive(Debug, Clone)]
pub struct Report {
    pub by: GroupBy,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub rows: Vec<GroupRow>,
    /// The same figures over every call in the window.
    pub total: GroupRow,
}

/// How many no-bid reasons each group lists.
const TOP_REASONS: usize = 3;

/// Builds the report from the database.
pub async fn build(
    client: &tokio_postgres::Client,
    by: GroupBy,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Report, ReportError> {
    let rows = grouped(client, by.call_key(), by.bid_key(), since, until).await?;
    let mut total = grouped(client, "'TOTAL'", "'TOTAL'", since, until)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    total.key = "TOTAL".into();
    Ok(Report {
        by,
        since,
        until,
        rows,
        total,
    })
}

async fn grouped(
    client: &tokio_postgres::Client,
    call_key: &str,
    bid_key: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<GroupRow>, ReportError> {
    let mut groups: BTreeMap<String, GroupRow> = BTreeMap::new();
    let calls_sql = format!(
        "SELECT {call_key} AS k, count(*)::bigint,
                count(*) FILTER (WHERE c.winner_buyer_id IS NOT NULL)::bigint,
                count(*) FILTER (WHERE c.payable)::bigint,
                COALESCE(sum(c.revenue_cents), 0)::bigint,
                COALESCE(sum(c.payout_cents), 0)::bigint,
                COALESCE(sum(c.margin_cents), 0)::bigint,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY c.auction_us),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY c.auction_us),
                COALESCE(sum(v.n), 0)::bigint,
                COALESCE(sum(v.value), 0)::bigint
         FROM calls c
         LEFT JOIN (SELECT call_id, count(*) AS n, sum(value_cents) AS value
                    FROM conversions GROUP BY call_id) v USING (call_id)
         WHERE c.arrived_at >= $1 AND c.arrived_at < $2
         GROUP BY 1"
    );
    for row in client.query(&calls_sql, &[&since, &until]).await? {
        let key: String = row.try_get(0)?;
        let g = groups.entry(key.clone()).or_default();
        g.key = key;
        g.calls = row.try_get(1)?;
        g.answered = row.try_get(2)?;
        g.payable = row.try_get(3)?;
        g.revenue = Cents(row.try_get(4)?);
        g.payout = Cents(row.try_get(5)?);
        g.margin = Cents(row.try_get(6)?);
        g.auction_p50_us = row.try_get(7)?;
        g.auction_p95_us = row.try_get(8)?;
        g.conversions = row.try_get(9)?;
        g.conversion_value = Cents(row.try_get(10)?);
    }
    let bids_sql = format!(
        "SELECT {bid_key} AS k, count(*)::bigint,
                COALESCE(sum(b.price_cents), 0)::bigint
         FROM bids b JOIN calls c USING (call_id)
         WHERE c.arrived_at >= $1 AND c.arrived_at < $2 AND b.status = 'bid'
         GROUP BY 1"
    );
    for row in client.query(&bids_sql, &[&since, &until]).await? {
        let key: String = row.try_get(0)?;
        let g = groups.entry(key.clone()).or_default();
        g.key = key;
        g.bids = row.try_get(1)?;
        g.bid_total = Cents(row.try_get(2)?);
    }
    let reasons_sql = format!(
        "SELECT {bid_key} AS k, b.status || COALESCE(': ' || b.reason, '') AS r, count(*)::bigint AS n
         FROM bids b JOIN calls c USING (call_id)
         WHERE c.arrived_at >= $1 AND c.arrived_at < $2 AND b.status <> 'bid'
         GROUP BY 1, 2
         ORDER BY 1, 3 DESC, 2"
    );
    for row in client.query(&reasons_sql, &[&since, &until]).await? {
        let key: String = row.try_get(0)?;
        let g = groups.entry(key.clone()).or_default();
        g.key = key;
        if g.no_bid_reasons.len() < TOP_REASONS {
            g.no_bid_reasons.push((row.try_get(1)?, row.try_get(2)?));
        }
    }
    Ok(groups.into_values().collect())
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn ms(us: Option<f64>) -> String {
    us.map(|u| format!("{:.1}", u / 1000.0))
        .unwrap_or_else(|| "-".into())
}

const HEADERS: &[&str] = &[
    "group",
    "calls",
    "answered",
    "payable",
    "answer_rate",
    "payable_rate",
    "conversions",
    "conversion_value",
    "revenue",
    "payout",
    "margin",
    "revenue_per_call",
    "avg_bid",
    "auction_ms_p50",
    "auction_ms_p95",
    "top_no_bid_reasons",
];

fn cells(g: &GroupRow) -> Vec<String> {
    vec![
        g.key.clone(),
        g.calls.to_string(),
        g.answered.to_string(),
        g.payable.to_string(),
        percent(g.answer_rate()),
        percent(g.payable_rate()),
        g.conversions.to_string(),
        g.conversion_value.to_string(),
        g.revenue.to_string(),
        g.payout.to_string(),
        g.margin.to_string(),
        g.revenue_per_call().to_string(),
        g.average_bid()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        ms(g.auction_p50_us),
        ms(g.auction_p95_us),
        g.reasons_text(),
    ]
}

/// Aligned columns; numbers right-aligned, the last column left as is.
fn table(headers: &[&str], rows: &[Vec<String>], numeric: impl Fn(usize) -> bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                out.push_str("  ");
            }
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else if numeric(i) {
                let _ = write!(out, "{cell:>w$}");
            } else {
                let _ = write!(out, "{cell:<w$}");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = headers.join(",") + "\n";
    for row in rows {
        out.push_str(
            &row.iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "by": self.by,
            "since": self.since.to_rfc3339_opts(SecondsFormat::Secs, true),
            "until": self.until.to_rfc3339_opts(SecondsFormat::Secs, true),
            "groups": self.rows.iter().map(GroupRow::to_json).collect::<Vec<_>>(),
            "total": self.total.to_json(),
        })
    }

    pub fn render(&self, format: Format) -> String {
        let mut rows: Vec<Vec<String>> = self.rows.iter().map(cells).collect();
        rows.push(cells(&self.total));
        match format {
            Format::Json => {
                serde_json::to_string_pretty(&self.to_json()).unwrap_or_default() + "\n"
            }
            Format::Csv => csv(HEADERS, &rows),
            Format::Table => {
                let mut headers = HEADERS.to_vec();
                headers[0] = self.by.as_str();
                format!(
                    "calls by {} from {} to {}\n\n{}",
                    self.by.as_str(),
                    self.since.to_rfc3339_opts(SecondsFormat::Secs, true),
                    self.until.to_rfc3339_opts(SecondsFormat::Secs, true),
                    table(&headers, &rows, |i| i > 0)
                )
            }
        }
    }
}

/// One call, as `bidbridge report calls` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct CallLine {
    pub call_id: Uuid,
    pub arrived_at: DateTime<Utc>,
    /// The caller's area code only (NANP); never the number.
    pub area_code: Option<String>,
    pub campaign: Option<String>,
    pub ivr_tags: BTreeMap<String, String>,
    pub bids: Vec<BidLine>,
    pub attempts: Vec<AttemptLine>,
    pub disposition: String,
    pub winner: Option<String>,
    pub price_charged: Option<String>,
    pub talk_secs: Option<i64>,
    pub payable: bool,
    pub revenue: String,
    pub payout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BidLine {
    pub buyer: String,
    pub destination: String,
    pub price: Option<String>,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptLine {
    pub destination: String,
    pub outcome: String,
    pub ring_secs: f64,
}

/// The last `last` calls, oldest first.
pub async fn recent_calls(
    client: &tokio_postgres::Client,
    last: i64,
) -> Result<Vec<CallLine>, ReportError> {
    let rows = client
        .query(
            "SELECT call_id, arrived_at, caller, campaign_id, ivr_tags, disposition, winner_buyer_id,
                    price_charged_cents, talk_ms, payable, revenue_cents, payout_cents
             FROM calls ORDER BY arrived_at DESC, call_id LIMIT $1",
            &[&last.max(0)],
        )
        .await?;
    let mut lines = Vec::with_capacity(rows.len());
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for row in rows.iter().rev() {
        let call_id: Uuid = row.try_get(0)?;
        let caller: Option<String> = row.try_get(2)?;
        let tags: Value = row.try_get(4)?;
        let ivr_tags: BTreeMap<String, String> = serde_json::from_value(tags).unwrap_or_default();
        let talk_ms: Option<i64> = row.try_get(8)?;
        index.insert(call_id, lines.len());
        lines.push(CallLine {
            call_id,
            arrived_at: row.try_get(1)?,
            area_code: caller
                .and_then(|c| E164::parse_strict(&c).ok())
                .and_then(|e| e.nanp_area_code().map(str::to_string)),
            campaign: row.try_get(3)?,
            ivr_tags,
            bids: Vec::new(),
            attempts: Vec::new(),
            disposition: row.try_get(5)?,
            winner: row.try_get(6)?,
            price_charged: row
                .try_get::<_, Option<i64>>(7)?
                .map(|c| Cents(c).to_string()),
            talk_secs: talk_ms.map(|t| t / 1000),
            payable: row.try_get(9)?,
            revenue: Cents(row.try_get(10)?).to_string(),
            payout: Cents(row.try_get(11)?).to_string(),
        });
    }
    let ids: Vec<Uuid> = lines.iter().map(|l| l.call_id).collect();
    for row in client
        .query(
            "SELECT call_id, buyer_id, destination_id, price_cents, status FROM bids
             WHERE call_id = ANY($1) ORDER BY call_id, seq",
            &[&ids],
        )
        .await?
    {
        let call_id: Uuid = row.try_get(0)?;
        if let Some(line) = index.get(&call_id).and_then(|i| lines.get_mut(*i)) {
            line.bids.push(BidLine {
                buyer: row.try_get(1)?,
                destination: row.try_get(2)?,
                price: row
                    .try_get::<_, Option<i64>>(3)?
                    .map(|c| Cents(c).to_string()),
                status: row.try_get(4)?,
            });
        }
    }
    for row in client
        .query(
            "SELECT call_id, COALESCE(destination_id, kind), outcome, ring_ms FROM bridge_attempts
             WHERE call_id = ANY($1) ORDER BY call_id, seq",
            &[&ids],
        )
        .await?
    {
        let call_id: Uuid = row.try_get(0)?;
        let ring_ms: i64 = row.try_get(3)?;
        if let Some(line) = index.get(&call_id).and_then(|i| lines.get_mut(*i)) {
            line.attempts.push(AttemptLine {
                destination: row.try_get(1)?,
                outcome: row.try_get(2)?,
                ring_secs: (ring_ms as f64 / 100.0).round() / 10.0,
            });
        }
    }
    Ok(lines)
}

/// The recent calls as an aligned table, one call per line.
pub fn render_calls(lines: &[CallLine]) -> String {
    let headers = [
        "time (UTC)",
        "call",
        "area",
        "campaign",
        "ivr",
        "winner",
        "charged",
        "talk",
        "payable",
        "bids",
        "attempts",
    ];
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let dash = || "-".to_string();
            let tags = l
                .ivr_tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let bids = l
                .bids
                .iter()
                .map(|b| {
                    format!(
                        "{}:{}/{}",
                        b.buyer,
                        b.price.clone().unwrap_or_else(dash),
                        b.status
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            let attempts = l
                .attempts
                .iter()
                .map(|a| format!("{}:{}({:.1}s)", a.destination, a.outcome, a.ring_secs))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                l.arrived_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                l.call_id.to_string(),
                l.area_code.clone().unwrap_or_else(dash),
                l.campaign.clone().unwrap_or_else(dash),
                if tags.is_empty() { dash() } else { tags },
                l.winner.clone().unwrap_or_else(|| l.disposition.clone()),
                l.price_charged.clone().unwrap_or_else(dash),
                l.talk_secs.map(|t| format!("{t}s")).unwrap_or_else(dash),
                if l.payable { "yes" } else { "no" }.to_string(),
                if bids.is_empty() { dash() } else { bids },
                if attempts.is_empty() {
                    dash()
                } else {
                    attempts
                },
            ]
        })
        .collect();
    table(&headers, &rows, |i| matches!(i, 6 | 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_durations_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("24h").unwrap(), "2026-11-20T12:00:00+00:00");
        assert_eq!(at("7d").unwrap(), "2026-11-14T12:00:00+00:00");
        assert_eq!(at("30m").unwrap(), "2026-11-21T11:30:00+00:00");
        assert_eq!(
            at("2026-11-01T00:00:00+01:00").unwrap(),
            "2026-10-31T23:00:00+00:00"
        );
        for bad in [
            "",
            "h",
            "24",
            "24x",
            "-1h",
            "yesterday",
            "99999999999999999999d",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn averages_round_half_up_in_integers() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(div_round(0, 0), 0);
        let g = GroupRow {
            calls: 3,
            revenue: Cents(1000),
            bids: 2,
            bid_total: Cents(2501),
            ..GroupRow::default()
        };
        assert_eq!(g.revenue_per_call().to_string(), "3.33");
        assert_eq!(
            g.average_bid().map(|c| c.to_string()).as_deref(),
            Some("12.51")
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
