//! Schema migrations: the numbered files in `sql/`, applied exactly once
//! each, in order, each inside its own transaction.
//!
//! The migration files are compiled into the binary, so an installed
//! daemon never depends on a `sql/` directory on the host. Safety:
//! - A session advisory lock serialises concurrent `migrate` runs (two nodes
//!   upgraded at once): the second waits, then finds nothing left to do.
//! - Each applied migration's SHA-256 is recorded; if a file changes after
//!   it was applied, `migrate` refuses to continue instead of leaving nodes
//!   with different schemas under the same version number.
//!
//! A hand-written runner rather than a migration crate because the crates
//! available for tokio-postgres either skip the cross-node lock or the
//! checksum check, and both are what make "safe from two nodes" true.

use sha2::{Digest, Sha256};

use super::DbError;

/// `(version, file name, SQL)` for every file in `sql/`, in order.
/// `tests::embedded_list_matches_sql_directory` keeps this honest.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_catalog.sql",
        include_str!("../../sql/0001_catalog.sql"),
    ),
    (
        2,
        "0002_calls.sql",
        include_str!("../../sql/0002_calls.sql"),
    ),
    (3, "0003_caps.sql", include_str!("../../sql/0003_caps.sql")),
    (
        4,
        "0004_ping_limits.sql",
        include_str!("../../sql/0004_ping_limits.sql"),
    ),
    (
        5,
        "0005_outbox.sql",
        include_str!("../../sql/0005_outbox.sql"),
    ),
    (
        6,
        "0006_consent.sql",
        include_str!("../../sql/0006_consent.sql"),
    ),
    (
        7,
        "0007_retention.sql",
        include_str!("../../sql/0007_retention.sql"),
    ),
];

/// Arbitrary constant naming bidbridge's migration lock (`pg_advisory_lock`).
const MIGRATION_LOCK_KEY: i64 = 0x6269_6462_7269_6467; // "bidbridg"

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration {name} failed: {source}")]
    Failed {
        name: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "migration {name} was applied with different contents (recorded sha256 {recorded}, this binary has {current}); \
         never edit an applied migration, add a new one"
    )]
    Changed {
        name: String,
        recorded: String,
        current: String,
    },
    #[error(
        "the database has migration {version} that this binary does not know; upgrade bidbridge"
    )]
    Unknown { version: i32 },
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(DbError::Query(e))
    }
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies every pending migration over `client` (a dedicated connection:
/// the advisory lock is held by the session).
pub async fn run(client: &mut tokio_postgres::Client) -> Result<MigrationReport, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = run_locked(client).await;
    // Unlock even on failure; if the session dies the lock goes with it.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn run_locked(client: &mut tokio_postgres::Client) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 sha256     text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let rows = client
        .query(
            "SELECT version, name, sha256 FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let recorded: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    for (version, _, _) in &recorded {
        if !MIGRATIONS.iter().any(|(v, _, _)| v == version) {
            return Err(MigrateError::Unknown { version: *version });
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already: Vec::new(),
    };
    for (version, name, sql) in MIGRATIONS {
        let current = checksum(sql);
        if let Some((_, _, sha)) = recorded.iter().find(|(v, _, _)| v == version) {
            if *sha != current {
                return Err(MigrateError::Changed {
                    name: name.to_string(),
                    recorded: sha.clone(),
                    current,
                });
            }
            report.already.push(name.to_string());
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|source| MigrateError::Failed {
                name: name.to_string(),
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            &[version, name, &current],
        )
        .await?;
        tx.commit().await.map_err(|source| MigrateError::Failed {
            name: name.to_string(),
            source,
        })?;
        report.applied.push(name.to_string());
    }
    Ok(report)
}

/// The highest migration version this binary knows (for `check`).
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|(v, _, _)| *v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_sql_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS.iter().map(|(_, n, _)| n.to_string()).collect();
        assert_eq!(
            files, embedded,
            "sql/ and MIGRATIONS disagree: add the new file to MIGRATIONS"
        );
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                *version as usize,
                i + 1,
                "versions must be 1, 2, 3, ... in order"
            );
            assert!(
                name.starts_with(&format!("{version:04}_")),
                "{name} must start with its version"
            );
        }
    }
}
