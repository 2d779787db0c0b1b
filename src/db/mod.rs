//! PostgreSQL access: the connection pool and the schema migrations.
//!
//! The database is the contract between bidbridge nodes (catalog, caps,
//! records), but it is never on a call's critical path: the call flow reads
//! the in-memory catalog and hands records to the writer. What this module
//! must never do is let a sick database hang a caller: every connection
//! carries a statement timeout and pool waits are bounded.

pub mod migrate;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a valid connection string: {0}")]
    BadUrl(String),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Unreachable(e.to_string())
    }
}

/// Parses the configured connection string and applies our timeouts.
pub fn pg_config(config: &DatabaseConfig) -> Result<tokio_postgres::Config, DbError> {
    let mut pg = tokio_postgres::Config::from_str(&config.url)
        .map_err(|e| DbError::BadUrl(e.to_string()))?;
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    pg.application_name("bidbridge");
    let existing = pg.get_options().unwrap_or_default().to_string();
    pg.options(
        format!(
            "{existing} -c statement_timeout={}",
            config.statement_timeout_ms
        )
        .trim(),
    );
    Ok(pg)
}

/// Builds the pool. Connections are made lazily, so this succeeds even
/// while PostgreSQL is down; [`wait_until_reachable`] is what waits.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        pg_config(config)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .recycle_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Opens one dedicated connection outside the pool (LISTEN needs its own,
/// and the migrator holds its advisory lock on one).
pub async fn connect_dedicated(
    config: &DatabaseConfig,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    DbError,
> {
    pg_config(config)?
        .connect(NoTls)
        .await
        .map_err(|e| DbError::Unreachable(e.to_string()))
}

/// Tries to get a working connection, retrying with exponential backoff
/// (0.5 s doubling to 30 s) and logging each failure, until it works or
/// `give_up_after` passes. `run` uses this at start instead of crash-looping
/// under systemd when PostgreSQL is late.
pub async fn wait_until_reachable(
    pool: &Pool,
    give_up_after: Option<Duration>,
) -> Result<(), DbError> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = async {
            let client = pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<(), DbError>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if let Some(limit) = give_up_after
                    && started.elapsed() + delay > limit
                {
                    return Err(e);
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "PostgreSQL is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
