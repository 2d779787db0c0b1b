//! The postback sender: empties the `postbacks` outbox (sql/0003_outbox.sql)
//! with HTTP GETs, records every attempt in `postback_attempts`, and
//! retries failures with exponential backoff until a 2xx, or until it gives
//! up (too many attempts or too old) and marks the row failed.
//!
//! Several nodes may run it against one database. A round claims due rows
//! with `SELECT ... FOR UPDATE SKIP LOCKED` and, in the same short
//! transaction, leases them by moving `next_attempt_at` past the request
//! timeout; the HTTP requests then run with no transaction open, so a slow
//! receiver never holds row locks or a pool connection. A node that dies
//! mid-send only delays its rows until the lease runs out: delivery is at
//! least once, which is why receivers get the call id to deduplicate on.
//!
//! Must never: run on a call's path (it is its own task, fed only by the
//! database), log a postback URL (it may carry a receiver's secret; we log
//! the id, kind and host), or follow redirects or environment proxies.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use std::sync::Arc;

use crate::config::PostbacksConfig;
use crate::metrics::{Metrics, PostbackLabels};

#[derive(Debug, thiserror::Error)]
pub enum PostbackError {
    #[error("PostgreSQL is unreachable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The wait before attempt `attempts + 1`, after `attempts` failures:
/// `initial`, doubling each time, capped at `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    initial
        .checked_mul(1u32 << exponent)
        .unwrap_or(max)
        .min(max)
}

/// One claimed row.
#[derive(Debug)]
struct Claimed {
    id: i64,
    kind: String,
    url: String,
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// What one attempt came to.
#[derive(Debug)]
struct Outcome {
    at: DateTime<Utc>,
    status: Option<u16>,
    error: Option<String>,
    latency: Duration,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Starts the sender; it stops when `shutdown` turns true.
pub fn spawn(
    config: PostbacksConfig,
    node_id: String,
    pool: deadpool_postgres::Pool,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(config, node_id, pool, metrics, shutdown))
}

async fn run(
    config: PostbacksConfig,
    node_id: String,
    pool: deadpool_postgres::Pool,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match http_client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "postback sender not started");
            return;
        }
    };
    let idle = Duration::from_millis(config.poll_interval_ms.max(1));
    loop {
        let wait = match round(&client, &pool, &config, &node_id, Some(&metrics)).await {
            // A full batch: there may be more due right now.
            Ok(n) if n >= config.batch_size as usize => Duration::ZERO,
            Ok(_) => idle,
            Err(e) => {
                tracing::warn!(error = %e, "postback round failed; retrying");
                idle
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

fn http_client(config: &PostbacksConfig) -> Result<reqwest::Client, PostbackError> {
    crate::http_client::builder()
        .timeout(Duration::from_millis(config.timeout_ms.max(1)))
        .connect_timeout(Duration::from_millis(config.timeout_ms.max(1)))
        .build()
        .map_err(|e| PostbackError::Client(e.to_string()))
}

/// Claims due postbacks, sends them concurrently, records the outcomes.
/// Returns how many were claimed.
pub async fn round_once(
    pool: &deadpool_postgres::Pool,
    config: &PostbacksConfig,
    node_id: &str,
) -> Result<usize, PostbackError> {
    let client = http_client(config)?;
    round(&client, pool, config, node_id, None).await
}

async fn round(
    client: &reqwest::Client,
    pool: &deadpool_postgres::Pool,
    config: &PostbacksConfig,
    node_id: &str,
    metrics: Option<&Metrics>,
) -> Result<usize, PostbackError> {
    let claimed = claim(pool, config).await?;
    let n = claimed.len();
    if n == 0 {
        return Ok(0);
    }
    let sends = claimed.iter().map(|c| send(client, &c.url));
    let outcomes = futures::future::join_all(sends).await;
    let db = pool.get().await?;
    for (row, outcome) in claimed.iter().zip(outcomes) {
        let result = record(&db, config, node_id, row, &outcome).await?;
        if let Some(m) = metrics {
            m.postback_attempts
                .get_or_create(&PostbackLabels {
                    kind: row.kind.clone(),
                    result: result.to_string(),
                })
                .inc();
        }
    }
    Ok(n)
}

async fn claim(
    pool: &deadpool_postgres::Pool,
    config: &PostbacksConfig,
) -> Result<Vec<Claimed>, PostbackError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let limit = i64::from(config.batch_size);
    let rows = tx
        .query(
            "SELECT id, kind, url, attempts, created_at FROM postbacks
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?;
    let claimed = rows
        .iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                url: r.try_get(2)?,
                attempts: r.try_get(3)?,
                created_at: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    if !claimed.is_empty() {
        // The lease: long enough for every request of the round to time out.
        let lease_ms = i64::try_from(config.timeout_ms.saturating_mul(2))
            .unwrap_or(i64::MAX)
            .saturating_add(30_000);
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        tx.execute(
            "UPDATE postbacks SET next_attempt_at = now() + $2 * interval '1 millisecond'
             WHERE id = ANY($1)",
            &[&ids, &(lease_ms as f64)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

async fn send(client: &reqwest::Client, url: &str) -> Outcome {
    let at = Utc::now();
    let started = Instant::now();
    let result = client.get(url).send().await;
    let latency = started.elapsed();
    match result {
        // The body is not read: the status is the whole answer.
        Ok(response) => Outcome {
            at,
            status: Some(response.status().as_u16()),
            error: None,
            latency,
        },
        Err(e) => Outcome {
            at,
            status: None,
            error: Some(describe(&e)),
            latency,
        },
    }
}

/// The error and its causes, without the URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_builder() {
        "bad url"
    } else {
        "request"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn record(
    db: &deadpool_postgres::Object,
    config: &PostbacksConfig,
    node_id: &str,
    row: &Claimed,
    outcome: &Outcome,
) -> Result<&'static str, PostbackError> {
    let attempt = row.attempts.saturating_add(1);
    let status = outcome.status.map(i32::from);
    let latency_ms = i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX);
    db.execute(
        "INSERT INTO postback_attempts (postback_id, attempt, at, node_id, status, error, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (postback_id, attempt) DO NOTHING",
        &[
            &row.id,
            &attempt,
            &outcome.at,
            &node_id,
            &status,
            &outcome.error,
            &latency_ms,
        ],
    )
    .await?;
    let host = reqwest::Url::parse(&row.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let delay = backoff(
        u32::try_from(attempt).unwrap_or(u32::MAX),
        Duration::from_millis(config.initial_backoff_ms),
        Duration::from_millis(config.max_backoff_ms),
    );
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let too_old = next - row.created_at
        > chrono::Duration::seconds(i64::try_from(config.give_up_after_secs).unwrap_or(i64::MAX));
    let delivered = outcome.delivered();
    let give_up = !delivered
        && (u32::try_from(attempt).unwrap_or(u32::MAX) >= config.max_attempts || too_old);
    if delivered {
        tracing::debug!(postback = row.id, kind = %row.kind, host, attempt, "postback delivered");
    } else if give_up {
        tracing::warn!(postback = row.id, kind = %row.kind, host, attempt, status = ?outcome.status, error = ?outcome.error, "postback failed for good; giving up");
    } else {
        tracing::info!(postback = row.id, kind = %row.kind, host, attempt, status = ?outcome.status, error = ?outcome.error, retry_in_ms = delay.as_millis() as u64, "postback not accepted; will retry");
    }
    db.execute(
        "UPDATE postbacks SET attempts = $2, last_status = $3, last_error = $4,
             delivered_at = CASE WHEN $5 THEN now() END,
             failed_at = CASE WHEN $6 THEN now() END,
             next_attempt_at = $7
         WHERE id = $1",
        &[
            &row.id,
            &attempt,
            &status,
            &outcome.error,
            &delivered,
            &give_up,
            &next,
        ],
    )
    .await?;
    Ok(if delivered {
        "delivered"
    } else if give_up {
        "failed"
    } else {
        "retry"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(30), s(3600)), s(30));
        assert_eq!(backoff(2, s(30), s(3600)), s(60));
        assert_eq!(backoff(3, s(30), s(3600)), s(120));
        assert_eq!(backoff(8, s(30), s(3600)), s(3600));
        assert_eq!(backoff(1000, s(30), s(3600)), s(3600));
    }
}
