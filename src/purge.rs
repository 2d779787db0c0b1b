//! Data retention: `bidbridge purge` and the daemon's daily purge task.
//!
//! Owns: replacing caller numbers of calls past their campaign's
//! `retention_days` by a keyed hash (HMAC-SHA256, `[privacy]
//! purge_hash_key`, else `[auction] caller_hash_key`), deleting recording
//! files past `recording_retention_days`, and keeping the local record
//! journal from holding caller numbers past retention.
//!
//! Must never: touch a financial column (revenue, payout, prices, talk
//! time, payable: reports read the same before and after), delete a file
//! outside `[privacy] recordings_dir`, hash a value twice (every update is
//! guarded by `caller_purged_at IS NULL`, so two nodes purging at once, or
//! a re-run, change nothing), or delete a journal segment whose records are
//! not in PostgreSQL.
//!
//! Calls whose campaign is no longer in the catalog, and calls to unknown
//! numbers (no campaign), have no retention rule and are kept.
//!
//! The journal: a segment holding a record past its campaign's retention
//! is replayed into PostgreSQL (idempotent, exactly what the writer does)
//! and deleted, before the database purge runs, so the database purge then
//! hashes those records too. The newest segment is skipped while a daemon
//! holds the journal lock (it may be appending to it); the writer itself
//! deletes it once all its records are written and it is older than
//! `[records] segment_max_age_secs`. Anything that could not be handled is
//! reported and makes the CLI exit 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;
use crate::ledger::journal::{Journal, JournalError};

/// Rows updated per statement.
const BATCH: i64 = 1000;
/// Prefix of a purged number, so a reader can tell a hash from a number.
pub const HASH_PREFIX: &str = "hmac:";

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "no key to hash purged numbers with: set [privacy] purge_hash_key (or [auction] caller_hash_key)"
    )]
    NoKey,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What the purge did (or, dry run, would do) for one campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CampaignPurge {
    pub campaign_id: String,
    pub retention_days: Option<u32>,
    pub recording_retention_days: Option<u32>,
    /// Calls whose caller numbers were replaced by hashes.
    pub callers_hashed: u64,
    /// Recording files deleted (or already gone) and their paths cleared.
    pub recordings_deleted: u64,
    /// Recording paths outside `recordings_dir` (or with no directory
    /// configured): left alone, reported.
    pub recordings_refused: u64,
}

/// What the purge did with the local journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JournalPurge {
    pub segments_removed: u64,
    pub records_replayed: u64,
    /// Segments still holding records past retention, and why.
    pub left: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub campaigns: Vec<CampaignPurge>,
    pub journal: JournalPurge,
}

impl PurgeReport {
    /// Everything past retention is gone (or, dry run, would be).
    pub fn complete(&self) -> bool {
        self.journal.left.is_empty() && self.campaigns.iter().all(|c| c.recordings_refused == 0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would purge"
        } else {
            "purged"
        };
        for c in &self.campaigns {
            out.push_str(&format!(
                "{verb} campaign {}: {} caller number(s) hashed (retention {}), {} recording(s) deleted (retention {}){}\n",
                c.campaign_id,
                c.callers_hashed,
                days(c.retention_days),
                c.recordings_deleted,
                days(c.recording_retention_days),
                if c.recordings_refused > 0 {
                    format!(
                        ", {} recording(s) outside [privacy] recordings_dir left alone",
                        c.recordings_refused
                    )
                } else {
                    String::new()
                }
            ));
        }
        if self.campaigns.is_empty() {
            out.push_str("no campaign has a retention rule\n");
        }
        out.push_str(&format!(
            "journal: {} segment(s) removed, {} record(s) replayed into PostgreSQL first\n",
            self.journal.segments_removed, self.journal.records_replayed
        ));
        for (path, why) in &self.journal.left {
            out.push_str(&format!(
                "WARNING: journal segment {} still holds records past retention: {why}\n",
                path.display()
            ));
        }
        out
    }
}

fn days(d: Option<u32>) -> String {
    d.map(|d| format!("{d} d"))
        .unwrap_or_else(|| "forever".into())
}

/// The keyed hash that replaces a purged number: `hmac:` + 32 hex digits
/// (128 bits of HMAC-SHA256). Deterministic, so repeat callers stay
/// countable after the purge; keyed, so the number cannot be recovered by
/// hashing every phone number.
pub fn hash_number(key: &[u8], number: &str) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; unreachable, but never panic.
        return format!("{HASH_PREFIX}invalid-key");
    };
    mac.update(number.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("{HASH_PREFIX}{}", hex::encode(&digest[..16]))
}

struct Rule {
    campaign_id: String,
    retention_days: Option<u32>,
    recording_retention_days: Option<u32>,
}

async fn rules(client: &tokio_postgres::Client) -> Result<Vec<Rule>, PurgeError> {
    let rows = client
        .query(
            "SELECT id, retention_days, recording_retention_days FROM campaigns
             WHERE retention_days IS NOT NULL OR recording_retention_days IS NOT NULL
             ORDER BY id",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let days = |name: &str| -> Result<Option<u32>, tokio_postgres::Error> {
            Ok(row
                .try_get::<_, Option<i32>>(name)?
                .and_then(|d| u32::try_from(d).ok()))
        };
        out.push(Rule {
            campaign_id: row.try_get("id")?,
            retention_days: days("retention_days")?,
            recording_retention_days: days("recording_retention_days")?,
        });
    }
    Ok(out)
}

fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days))
}

/// Runs the whole purge: journal first (so its old records reach the
/// database), then caller numbers, then recordings.
pub async fn run(
    client: &mut tokio_postgres::Client,
    config: &Config,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PurgeReport, PurgeError> {
    let key = config.privacy.hash_key(&config.auction).as_bytes().to_vec();
    let rules = rules(client).await?;
    if key.is_empty() && rules.iter().any(|r| r.retention_days.is_some()) {
        return Err(PurgeError::NoKey);
    }
    let retention: BTreeMap<String, u32> = rules
        .iter()
        .filter_map(|r| r.retention_days.map(|d| (r.campaign_id.clone(), d)))
        .collect();
    let journal = purge_journal(
        client,
        &config.records.journal_dir,
        &retention,
        now,
        dry_run,
    )
    .await?;
    let mut campaigns = Vec::new();
    for rule in &rules {
        let mut c = CampaignPurge {
            campaign_id: rule.campaign_id.clone(),
            retention_days: rule.retention_days,
            recording_retention_days: rule.recording_retention_days,
            ..Default::default()
        };
        if let Some(days) = rule.retention_days {
            c.callers_hashed =
                hash_callers(client, &key, &rule.campaign_id, cutoff(now, days), dry_run).await?;
        }
        if let Some(days) = rule.recording_retention_days {
            let (deleted, refused) = purge_recordings(
                client,
                &config.privacy.recordings_dir,
                &rule.campaign_id,
                cutoff(now, days),
                dry_run,
            )
            .await?;
            c.recordings_deleted = deleted;
            c.recordings_refused = refused;
        }
        campaigns.push(c);
    }
    Ok(PurgeReport {
        dry_run,
        campaigns,
        journal,
    })
}

/// Hashes `caller` and `caller_raw` of the campaign's calls that arrived
/// before `before`, in batches. Returns how many calls.
async fn hash_callers(
    client: &tokio_postgres::Client,
    key: &[u8],
    campaign: &str,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, PurgeError> {
    if dry_run {
        let row = client
            .query_one(
                "SELECT count(*)::bigint FROM calls
                 WHERE campaign_id = $1 AND arrived_at < $2 AND caller_purged_at IS NULL",
                &[&campaign, &before],
            )
            .await?;
        return Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0));
    }
    let mut total = 0u64;
    loop {
        let rows = client
            .query(
                "SELECT call_id, caller, caller_raw FROM calls
                 WHERE campaign_id = $1 AND arrived_at < $2 AND caller_purged_at IS NULL
                 ORDER BY arrived_at LIMIT $3",
                &[&campaign, &before, &BATCH],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(rows.len());
        let mut callers: Vec<Option<String>> = Vec::with_capacity(rows.len());
        let mut raws: Vec<String> = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get(0)?);
            callers.push(
                row.try_get::<_, Option<String>>(1)?
                    .map(|c| hash_number(key, &c)),
            );
            raws.push(hash_number(key, &row.try_get::<_, String>(2)?));
        }
        // The guard makes a concurrent purge (another node) a no-op for the
        // rows it already did: a hash is never hashed again.
        let updated = client
            .execute(
                "UPDATE calls c SET caller = u.caller, caller_raw = u.caller_raw, caller_purged_at = now()
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(call_id, caller, caller_raw)
                 WHERE c.call_id = u.call_id AND c.caller_purged_at IS NULL",
                &[&ids, &callers, &raws],
            )
            .await?;
        total += updated;
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    Ok(total)
}

/// Where a recording path resolves, if it is a file inside `dir`.
enum Resolved {
    Inside(PathBuf),
    Gone,
    Outside,
}

fn resolve_recording(dir: &Path, recording: &str) -> Resolved {
    if dir.as_os_str().is_empty() {
        return Resolved::Outside;
    }
    let Ok(root) = dir.canonicalize() else {
        return Resolved::Outside;
    };
    let path = Path::new(recording);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    match path.canonicalize() {
        // canonicalize resolves `..` and symlinks: a link inside the
        // directory pointing outside it resolves outside and is refused.
        Ok(real) if real.starts_with(&root) && real != root && real.is_file() => {
            Resolved::Inside(real)
        }
        Ok(_) => Resolved::Outside,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Already deleted (an earlier run died before clearing the
            // path): clear it, but only if it would have been inside.
            let lexically_inside = path.starts_with(&root)
                && !path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if lexically_inside {
                Resolved::Gone
            } else {
                Resolved::Outside
            }
        }
        Err(_) => Resolved::Outside,
    }
}

/// Deletes recordings of the campaign's calls that arrived before
/// `before`, and clears their paths. Returns (deleted, refused).
async fn purge_recordings(
    client: &tokio_postgres::Client,
    dir: &Path,
    campaign: &str,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<(u64, u64), PurgeError> {
    let rows = client
        .query(
            "SELECT call_id, recording_path FROM calls
             WHERE campaign_id = $1 AND arrived_at < $2 AND recording_path IS NOT NULL
             ORDER BY arrived_at",
            &[&campaign, &before],
        )
        .await?;
    let (mut deleted, mut refused) = (0u64, 0u64);
    for row in rows {
        let call_id: Uuid = row.try_get(0)?;
        let recording: String = row.try_get(1)?;
        match resolve_recording(dir, &recording) {
            Resolved::Outside => {
                tracing::warn!(%call_id, path = %recording, "recording past retention is outside [privacy] recordings_dir; not deleted");
                refused += 1;
                continue;
            }
            Resolved::Inside(real) if !dry_run => {
                if let Err(e) = std::fs::remove_file(&real)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(%call_id, path = %real.display(), error = %e, "could not delete a recording; it is retried on the next purge");
                    refused += 1;
                    continue;
                }
            }
            Resolved::Inside(_) | Resolved::Gone => {}
        }
        if !dry_run {
            client
                .execute(
                    "UPDATE calls SET recording_path = NULL, recording_purged_at = now()
                     WHERE call_id = $1 AND recording_path = $2",
                    &[&call_id, &recording],
                )
                .await?;
        }
        deleted += 1;
    }
    Ok((deleted, refused))
}

/// Replays and deletes journal segments that hold records past retention.
async fn purge_journal(
    client: &mut tokio_postgres::Client,
    dir: &Path,
    retention: &BTreeMap<String, u32>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<JournalPurge, PurgeError> {
    let mut report = JournalPurge::default();
    let segments = Journal::segments(dir)?;
    // While a daemon holds the lock, its newest segment may be open for
    // appending: deleting it would lose acknowledged records on a crash.
    let daemon_running = Journal::locked_by_other(dir);
    let newest = segments.last().cloned();
    for path in segments {
        let contents = Journal::read_segment(&path)?;
        let past = contents
            .records
            .iter()
            .filter(|r| {
                r.campaign_id
                    .as_ref()
                    .and_then(|c| retention.get(c))
                    .is_some_and(|days| r.times.arrived_at < cutoff(now, *days))
            })
            .count();
        if past == 0 {
            continue;
        }
        if daemon_running && Some(&path) == newest.as_ref() {
            report.left.push((
                path,
                format!(
                    "{past} record(s); the running daemon's current segment (it deletes it once written and older than [records] segment_max_age_secs)"
                ),
            ));
            continue;
        }
        if dry_run {
            report.segments_removed += 1;
            report.records_replayed += contents.records.len() as u64;
            continue;
        }
        for chunk in contents.records.chunks(500) {
            if let Err(e) = crate::ledger::store::insert_batch(client, chunk).await {
                report.left.push((
                    path.clone(),
                    format!("{past} record(s); replaying into PostgreSQL failed: {e}"),
                ));
                return Ok(report);
            }
        }
        report.records_replayed += contents.records.len() as u64;
        match std::fs::remove_file(&path) {
            Ok(()) => report.segments_removed += 1,
            // The daemon's writer replayed and removed it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.segments_removed += 1,
            Err(e) => report.left.push((
                path.clone(),
                format!("{past} record(s); cannot delete: {e}"),
            )),
        }
    }
    Ok(report)
}

/// The daemon's purge task: every `[privacy] purge_interval_secs` (first
/// run a minute after start), on a dedicated connection. Several nodes may
/// run it; the purge is idempotent and guarded row by row. The same task
/// then applies the fraud auto-block of opted-in campaigns
/// (`crate::fraud::auto_block_recent`), which is idempotent as well.
pub fn spawn(
    config: Config,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = config.privacy.purge_interval_secs;
    if every == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut delay = std::time::Duration::from_secs(60.min(every));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            delay = std::time::Duration::from_secs(every);
            let (mut client, connection) = match crate::db::connect_dedicated(&config.database)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "purge: PostgreSQL unreachable; retrying at the next interval");
                    continue;
                }
            };
            let driver = tokio::spawn(connection);
            match run(&mut client, &config, Utc::now(), false).await {
                Ok(report) => {
                    for line in report.render().lines() {
                        tracing::info!("purge: {line}");
                    }
                }
                Err(e) => tracing::error!(error = %e, "purge failed"),
            }
            match crate::fraud::auto_block_recent(&client, Utc::now()).await {
                Ok(0) => {}
                Ok(added) => {
                    tracing::warn!(added, "fraud auto-block: numbers added to the blocklist")
                }
                Err(e) => tracing::error!(error = %e, "fraud auto-block failed"),
            }
            drop(client);
            let _ = driver.await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = hash_number(b"k1", "+13125550100");
        assert_eq!(a, hash_number(b"k1", "+13125550100"));
        assert_ne!(a, hash_number(b"k2", "+13125550100"));
        assert!(a.starts_with(HASH_PREFIX) && a.len() == HASH_PREFIX.len() + 32);
        assert!(!a.contains("3125550100"));
    }

    #[test]
    fn recordings_outside_the_directory_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("rec");
        std::fs::create_dir(&dir).expect("mkdir");
        let inside = dir.join("a.wav");
        std::fs::write(&inside, b"x").expect("write");
        let outside = root.path().join("b.wav");
        std::fs::write(&outside, b"x").expect("write");
        assert!(matches!(
            resolve_recording(&dir, inside.to_str().unwrap_or_default()),
            Resolved::Inside(_)
        ));
        assert!(matches!(
            resolve_recording(&dir, "a.wav"),
            Resolved::Inside(_)
        ));
        assert!(matches!(
            resolve_recording(&dir, outside.to_str().unwrap_or_default()),
            Resolved::Outside
        ));
        assert!(matches!(
            resolve_recording(&dir, "../b.wav"),
            Resolved::Outside
        ));
        assert!(matches!(
            resolve_recording(&dir, "gone.wav"),
            Resolved::Gone
        ));
        assert!(matches!(
            resolve_recording(&dir, "../gone.wav"),
            Resolved::Outside
        ));
        assert!(matches!(
            resolve_recording(Path::new(""), "a.wav"),
            Resolved::Outside
        ));
        #[cfg(unix)]
        {
            let link = dir.join("link.wav");
            std::os::unix::fs::symlink(&outside, &link).expect("symlink");
            assert!(matches!(
                resolve_recording(&dir, "link.wav"),
                Resolved::Outside
            ));
        }
    }
}
