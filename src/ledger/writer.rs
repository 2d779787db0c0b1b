//! The record writer: takes finished calls' records off the call path,
//! makes them durable in the journal (group commit: one fsync for every
//! record waiting), acknowledges them, then writes them to PostgreSQL in
//! batches. While PostgreSQL is unreachable the records wait in the
//! journal; when it is back they are replayed, oldest first.
//!
//! It runs on its own OS thread with its own single-threaded runtime and
//! its own database connection, so an fsync or a slow database never
//! stalls a worker thread that is serving calls.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::journal::{Journal, JournalError};
use super::record::CallRecord;
use super::store;
use crate::config::{DatabaseConfig, RecordsConfig};

/// A journal segment is deleted (its records all being in PostgreSQL) once
/// it grows past this; smaller ones are kept and appended to.
const ROTATE_BYTES: u64 = 8 << 20;
/// During an outage, records beyond this are dropped from memory (they are
/// in the sealed journal segment and come back from disk).
const HOLD_IN_MEMORY: usize = 20_000;

/// Counters the metrics endpoint and the readiness check read.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub submitted: AtomicU64,
    pub written: AtomicU64,
    pub replayed: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_max_bytes: AtomicU64,
    /// Records in the journal not yet known to be in PostgreSQL.
    pub journal_depth: AtomicU64,
    pub queue_depth: AtomicU64,
    pub queue_max_depth: AtomicU64,
    pub dropped: AtomicU64,
    pub db_down: AtomicBool,
    pub journal_full: AtomicBool,
    pub journal_failing: AtomicBool,
}

impl WriterStats {
    /// Ready unless records are at risk (journal full or failing).
    pub fn healthy(&self) -> bool {
        !self.journal_full.load(Ordering::Relaxed) && !self.journal_failing.load(Ordering::Relaxed)
    }
}

struct Submission {
    record: CallRecord,
    durable: Option<oneshot::Sender<bool>>,
}

/// The call path's handle: cheap to clone, never blocks for long.
#[derive(Clone)]
pub struct RecordSink {
    tx: mpsc::Sender<Submission>,
    stats: Arc<WriterStats>,
}

impl RecordSink {
    /// Hands a record to the writer and waits until it is durable on disk
    /// (or the writer says it could not make it so). Called after the call
    /// has ended, so the wait never delays a caller; it is what makes
    /// "the call ended" imply "its record survives kill -9".
    pub async fn submit(&self, record: CallRecord) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self
            .enqueue(Submission {
                record,
                durable: Some(tx),
            })
            .await
        {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(10), rx).await,
            Ok(Ok(true))
        )
    }

    async fn enqueue(&self, submission: Submission) -> bool {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let depth = self.stats.queue_depth.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats
            .queue_max_depth
            .fetch_max(depth, Ordering::Relaxed);
        let submission = match self.tx.try_send(submission) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(s)) => s,
            Err(mpsc::error::TrySendError::Closed(s)) => {
                self.lost(&s.record, "the record writer has stopped");
                return false;
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), self.tx.send(submission)).await {
            Ok(Ok(())) => true,
            Ok(Err(mpsc::error::SendError(s))) => {
                self.lost(&s.record, "the record writer has stopped");
                false
            }
            Err(_) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(call_id = %"(queue full)", "record queue full for 5 s; record lost");
                false
            }
        }
    }

    fn lost(&self, record: &CallRecord, why: &str) {
        self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        // The last place the record can survive is the log.
        let json = serde_json::to_string(record).unwrap_or_default();
        tracing::error!(call_id = %record.call_id, record = %json, "{why}; record written to the log only");
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

/// Owns the writer thread.
pub struct WriterHandle {
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterHandle {
    /// Writes everything still queued and stops (blocking; call from a
    /// blocking context or at the very end of `run`).
    pub fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Starts the writer. Fails only if the journal directory is unusable.
pub fn start(
    records: &RecordsConfig,
    database: &DatabaseConfig,
) -> Result<(RecordSink, WriterHandle), JournalError> {
    let journal = Journal::open(&records.journal_dir, records.journal_max_bytes)?;
    let stats = Arc::new(WriterStats::default());
    stats
        .journal_max_bytes
        .store(records.journal_max_bytes, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(records.queue_capacity);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut writer = Writer {
        rx,
        journal,
        stats: stats.clone(),
        database: database.clone(),
        batch_size: records.batch_size,
        segment_max_age: Duration::from_secs(records.segment_max_age_secs.max(1)),
        client: None,
        pending: VecDeque::new(),
        unjournaled: 0,
        outage: false,
    };
    let thread = std::thread::Builder::new()
        .name("bidbridge-records".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the record writer runtime");
                    return;
                }
            };
            runtime.block_on(writer.run(shutdown_rx));
        })
        .map_err(|source| JournalError::Io {
            path: records.journal_dir.clone(),
            source,
        })?;
    Ok((
        RecordSink { tx, stats },
        WriterHandle {
            shutdown,
            thread: Some(thread),
        },
    ))
}

struct Writer {
    rx: mpsc::Receiver<Submission>,
    journal: Journal,
    stats: Arc<WriterStats>,
    database: DatabaseConfig,
    batch_size: usize,
    /// A fully written segment older than this is deleted (retention).
    segment_max_age: Duration,
    client: Option<tokio_postgres::Client>,
    /// Records acknowledged (or unjournalable) but not yet in PostgreSQL,
    /// oldest first.
    pending: VecDeque<CallRecord>,
    /// How many of the oldest `pending` records are NOT in the journal
    /// (journal full or failing): these must never leave memory unwritten.
    unjournaled: usize,
    outage: bool,
}

impl Writer {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        self.publish_journal_stats();
        // Records from an earlier run (crash, kill -9, outage) first.
        self.retry_database().await;
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Often enough that a segment never outlives its age by much.
        let mut age_check = tokio::time::interval(
            (self.segment_max_age / 2).clamp(Duration::from_secs(1), Duration::from_secs(30)),
        );
        age_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                first = self.rx.recv() => match first {
                    Some(first) => self.take_batch(first).await,
                    None => break,
                },
                _ = retry.tick(), if self.outage || !self.journal.backlog_segments().is_empty() => {
                    self.retry_database().await;
                }
                _ = age_check.tick() => self.rotate_if_old(),
                _ = shutdown.changed() => break,
            }
        }
        // Drain what is queued, then one last try at the database.
        while let Ok(submission) = self.rx.try_recv() {
            self.take_batch(submission).await;
        }
        self.retry_database().await;
        if self.pending.is_empty() && self.journal.backlog_segments().is_empty() {
            self.journal.discard_current();
        } else {
            tracing::warn!(
                records = self.pending.len(),
                "stopping with records not yet in PostgreSQL; they stay in the journal for the next start"
            );
            self.journal.seal_current();
        }
    }

    /// Journals `first` and whatever else is already queued (group commit),
    /// acknowledges, then writes to the database unless it is down.
    async fn take_batch(&mut self, first: Submission) {
        let mut batch = vec![first];
        while batch.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        self.stats
            .queue_depth
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let records: Vec<CallRecord> = batch.iter().map(|s| s.record.clone()).collect();
        let journaled = match self.journal.append(&records) {
            Ok(()) => {
                self.stats.journal_full.store(false, Ordering::Relaxed);
                self.stats.journal_failing.store(false, Ordering::Relaxed);
                true
            }
            Err(JournalError::Full { used, limit }) => {
                self.stats.journal_full.store(true, Ordering::Relaxed);
                tracing::error!(
                    used,
                    limit,
                    "ALARM: record journal full; records held in memory only until PostgreSQL takes them"
                );
                false
            }
            Err(e) => {
                self.stats.journal_failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "ALARM: cannot write the record journal; records held in memory only");
                false
            }
        };
        for submission in batch {
            if let Some(durable) = submission.durable {
                let _ = durable.send(journaled);
            }
        }
        if journaled {
            self.pending.extend(records);
        } else {
            // Unjournaled records go in front of journaled ones in the
            // order they must be written; keep them counted.
            let journaled_part: Vec<CallRecord> = self.pending.drain(self.unjournaled..).collect();
            self.unjournaled += records.len();
            self.pending.extend(records);
            self.pending.extend(journaled_part);
        }
        self.publish_journal_stats();
        if !self.outage {
            self.flush_pending().await;
        }
        if self.outage && self.pending.len() > HOLD_IN_MEMORY + self.unjournaled {
            // The journaled part is safe on disk: let it come back from there.
            self.pending.truncate(self.unjournaled);
            self.journal.seal_current();
            self.publish_journal_stats();
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        let (client, connection) = crate::db::connect_dedicated(&self.database)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.client = Some(client);
        Ok(())
    }

    /// Writes `pending` to the database in batches.
    async fn flush_pending(&mut self) {
        while !self.pending.is_empty() {
            if let Err(e) = self.connect().await {
                self.enter_outage(&e);
                return;
            }
            let take = self.pending.len().min(self.batch_size);
            let batch: Vec<CallRecord> = self.pending.iter().take(take).cloned().collect();
            let Some(client) = self.client.as_mut() else {
                return;
            };
            match store::insert_batch(client, &batch).await {
                Ok(_) => {
                    self.pending.drain(..take);
                    self.unjournaled = self.unjournaled.saturating_sub(take);
                    self.stats.written.fetch_add(take as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.client = None;
                    self.enter_outage(&e.to_string());
                    return;
                }
            }
        }
        // Everything acknowledged is in the database: the current segment
        // may go once it is big enough to be worth a new file.
        if self.journal.current_bytes() > ROTATE_BYTES
            || self
                .journal
                .current_age()
                .is_some_and(|age| age > self.segment_max_age)
        {
            self.journal.discard_current();
        }
        self.publish_journal_stats();
    }

    /// Deletes the current segment when every record in it is in
    /// PostgreSQL and it is older than `segment_max_age`: an idle node
    /// must not keep caller numbers on disk past retention.
    fn rotate_if_old(&mut self) {
        if !self.outage
            && self.pending.is_empty()
            && self
                .journal
                .current_age()
                .is_some_and(|age| age > self.segment_max_age)
        {
            self.journal.discard_current();
            self.publish_journal_stats();
        }
    }

    fn enter_outage(&mut self, error: &str) {
        if !self.outage {
            tracing::error!(
                error,
                "PostgreSQL unreachable: call records are kept in the journal and replayed when it is back"
            );
        }
        self.outage = true;
        self.stats.db_down.store(true, Ordering::Relaxed);
    }

    /// Replays backlog segments, then pending records.
    async fn retry_database(&mut self) {
        if let Err(e) = self.connect().await {
            self.enter_outage(&e);
            return;
        }
        for path in self.journal.backlog_segments() {
            if !path.exists() {
                // `bidbridge purge` replayed and removed it.
                self.journal.remove_backlog(&path);
                continue;
            }
            let contents = match Journal::read_segment(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a journal segment; it stays for a later attempt");
                    return;
                }
            };
            if contents.skipped_lines > 0 {
                tracing::warn!(path = %path.display(), lines = contents.skipped_lines, "skipped torn lines in a journal segment (never acknowledged)");
            }
            for chunk in contents.records.chunks(self.batch_size.max(1)) {
                let Some(client) = self.client.as_mut() else {
                    return;
                };
                if let Err(e) = store::insert_batch(client, chunk).await {
                    self.client = None;
                    self.enter_outage(&e.to_string());
                    return;
                }
                self.stats
                    .replayed
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            tracing::info!(path = %path.display(), records = contents.records.len(), "journal segment replayed into PostgreSQL");
            self.journal.remove_backlog(&path);
            self.publish_journal_stats();
        }
        let was_down = self.outage;
        self.outage = false;
        self.flush_pending().await;
        if !self.outage {
            self.stats.db_down.store(false, Ordering::Relaxed);
            if was_down {
                tracing::info!("PostgreSQL is back; call records caught up");
            }
        }
    }

    fn publish_journal_stats(&self) {
        let bytes = self.journal.bytes();
        self.stats.journal_bytes.store(bytes, Ordering::Relaxed);
        let depth = self.pending.len().saturating_sub(self.unjournaled) as u64
            + if self.journal.backlog_segments().is_empty() {
                0
            } else {
                1
            };
        self.stats.journal_depth.store(depth, Ordering::Relaxed);
        if self.journal.fill() >= 0.8 {
            tracing::error!(
                bytes,
                limit = self.journal.max_bytes(),
                "ALARM: record journal above 80 % of its limit"
            );
        }
    }
}
