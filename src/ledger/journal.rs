//! The local journal: every call record is appended here and fsync'd
//! before the call's session with the switch is released, so a record
//! survives `kill -9`, a power cut of the daemon, and a PostgreSQL outage.
//!
//! Layout: `records-<seq>.jsonl` segment files in one directory, one JSON
//! record per line. The writer appends to the newest segment; a segment
//! whose records are all in PostgreSQL is deleted; everything else is
//! backlog, replayed oldest first when the database is reachable (and on
//! start, after a crash). Replays are idempotent because the inserts are.
//!
//! A torn last line (the process died mid-write) is not valid JSON and is
//! skipped with a warning: it belongs to a batch that was never
//! acknowledged as durable, so no call was told its record was safe.
//!
//! Retention: a segment whose records are all in PostgreSQL is also
//! deleted once older than `records.segment_max_age_secs`, so caller
//! numbers do not outlive a campaign's retention here. The journal holds
//! an advisory lock on `journal.lock` while open, so `bidbridge purge`
//! (crate::purge) knows whether a daemon may be appending to the newest
//! segment.
//!
//! The journal is bounded (`records.journal_max_bytes`): past 80 % it
//! raises an alarm; when full it refuses appends, and the writer keeps the
//! records in memory and reports the node not ready.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::record::CallRecord;

const PREFIX: &str = "records-";
const SUFFIX: &str = ".jsonl";
const LOCK_FILE: &str = "journal.lock";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("journal full: {used} bytes of {limit} used")]
    Full { used: u64, limit: u64 },
}

struct Segment {
    path: PathBuf,
    file: File,
    bytes: u64,
    records: u64,
    opened_at: std::time::Instant,
}

pub struct Journal {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<Segment>,
    /// Closed segments whose records may not all be in PostgreSQL yet.
    backlog: VecDeque<(PathBuf, u64)>,
    next_seq: u64,
    /// Held for the journal's lifetime (advisory; see the module doc).
    _lock: Option<File>,
}

/// What a replayed segment held.
pub struct SegmentContents {
    pub records: Vec<CallRecord>,
    pub skipped_lines: usize,
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

impl Journal {
    /// Opens (creating if needed) the journal directory. Segments already
    /// there are backlog from an earlier run.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Journal, JournalError> {
        let io_err = |source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            if let Some(seq) = seq_of(&path) {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                found.push((seq, path, bytes));
            }
        }
        found.sort();
        let next_seq = found.last().map(|(s, _, _)| s + 1).unwrap_or(1);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .ok()
            .filter(|f| match f.try_lock() {
                Ok(()) => true,
                Err(e) => {
                    // Another process uses this journal directory; the
                    // writer works as before, the lock is only advisory.
                    tracing::warn!(dir = %dir.display(), error = %e, "journal lock held by another process");
                    false
                }
            });
        Ok(Journal {
            dir: dir.to_path_buf(),
            max_bytes,
            current: None,
            backlog: found.into_iter().map(|(_, p, b)| (p, b)).collect(),
            next_seq,
            _lock: lock,
        })
    }

    /// Segment files in `dir`, oldest first (none if `dir` does not exist).
    pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(JournalError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut found: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| seq_of(&e.path()).map(|seq| (seq, e.path())))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// Whether another process (a running daemon) holds `dir`'s journal lock.
    pub fn locked_by_other(dir: &Path) -> bool {
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
        else {
            // Cannot even open it: assume the worst.
            return dir.exists();
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// How long the current segment has been open.
    pub fn current_age(&self) -> Option<std::time::Duration> {
        self.current.as_ref().map(|s| s.opened_at.elapsed())
    }

    /// Bytes held by all segments.
    pub fn bytes(&self) -> u64 {
        self.backlog.iter().map(|(_, b)| b).sum::<u64>()
            + self.current.as_ref().map(|s| s.bytes).unwrap_or(0)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Fraction of the bound in use (0.0 ..= 1.0+).
    pub fn fill(&self) -> f64 {
        if self.max_bytes == 0 {
            1.0
        } else {
            self.bytes() as f64 / self.max_bytes as f64
        }
    }

    pub fn backlog_segments(&self) -> Vec<PathBuf> {
        self.backlog.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Records in the current segment (acknowledged, maybe not in the database).
    pub fn current_records(&self) -> u64 {
        self.current.as_ref().map(|s| s.records).unwrap_or(0)
    }

    pub fn current_bytes(&self) -> u64 {
        self.current.as_ref().map(|s| s.bytes).unwrap_or(0)
    }

    fn open_segment(&mut self) -> Result<&mut Segment, JournalError> {
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{PREFIX}{:020}{SUFFIX}", self.next_seq));
            self.next_seq += 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?;
            // Make the new file's name durable too.
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            self.current = Some(Segment {
                path,
                file,
                bytes: 0,
                records: 0,
                opened_at: std::time::Instant::now(),
            });
        }
        match self.current.as_mut() {
            Some(segment) => Ok(segment),
            None => Err(JournalError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no segment"),
            }),
        }
    }

    /// Appends `records` and syncs them to disk; only then are they durable.
    pub fn append(&mut self, records: &[CallRecord]) -> Result<(), JournalError> {
        let mut buffer = Vec::with_capacity(records.len() * 2048);
        for record in records {
            // Serialising plain data cannot fail; skip defensively if it does.
            if serde_json::to_writer(&mut buffer, record).is_ok() {
                buffer.push(b'\n');
            }
        }
        let used = self.bytes();
        if used + buffer.len() as u64 > self.max_bytes {
            return Err(JournalError::Full {
                used,
                limit: self.max_bytes,
            });
        }
        let segment = self.open_segment()?;
        let path = segment.path.clone();
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        segment.file.write_all(&buffer).map_err(io_err)?;
        segment.file.sync_data().map_err(io_err)?;
        segment.bytes += buffer.len() as u64;
        segment.records += records.len() as u64;
        Ok(())
    }

    /// Every record in the current segment is in the database: delete it.
    pub fn discard_current(&mut self) {
        if let Some(segment) = self.current.take()
            && let Err(e) = fs::remove_file(&segment.path)
        {
            tracing::warn!(path = %segment.path.display(), error = %e, "could not delete a replayed journal segment");
        }
    }

    /// Closes the current segment into the backlog (to be replayed from disk).
    pub fn seal_current(&mut self) {
        if let Some(segment) = self.current.take() {
            self.backlog.push_back((segment.path, segment.bytes));
        }
    }

    /// Reads a backlog segment.
    pub fn read_segment(path: &Path) -> Result<SegmentContents, JournalError> {
        let file = File::open(path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut records = Vec::new();
        let mut skipped_lines = 0;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| JournalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<CallRecord>(&line) {
                Ok(record) => records.push(record),
                Err(_) => skipped_lines += 1,
            }
        }
        Ok(SegmentContents {
            records,
            skipped_lines,
        })
    }

    /// A backlog segment is fully in the database: forget and delete it.
    pub fn remove_backlog(&mut self, path: &Path) {
        self.backlog.retain(|(p, _)| p != path);
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a replayed journal segment");
        }
    }
}
