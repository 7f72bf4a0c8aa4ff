//! SQLite behind a journal of the store's own: small commits cost one `write`.
//!
//! With one task in flight every change of a task was an SQLite transaction
//! of its own on the critical path — statements, WAL frames, tens of
//! microseconds each (BENCHMARKS.md, issue 12). A [`Journaled`] store makes
//! a small batch durable by appending one record to `tasks.journal` (one
//! `write`, and an `fdatasync` with [`Sync::Full`]), and applies the records
//! to SQLite later, many batches in one transaction, as its upkeep on the
//! writer thread: once [`APPLY_OPS`] ops wait, or [`APPLY_DELAY`] after the
//! first of them was written. A large batch (a group commit under load,
//! where a transaction's cost is shared by many tasks) goes straight to
//! SQLite, with whatever the journal still held, in one transaction.
//!
//! A record is `[length u32][crc32 u32][number u64][ops as a JSON array]`,
//! little-endian; the length counts the number and the ops, the checksum
//! covers them. Records are numbered from 1 up; the transaction that
//! applies them stores the last number applied (`meta.journal_applied`),
//! and the journal is emptied after it. Opening replays what the database
//! has not applied — a crash between the transaction and the emptying
//! leaves records that are skipped, never applied twice — then empties the
//! journal. A record cut short (the process died in its `write`, which had
//! not returned, so nothing it held was acknowledged) ends the journal: it
//! and anything after it are dropped, with a warning.
//!
//! Readers ([`crate::SqliteReader`]) see the database, so a journaled batch
//! is durable before it is visible: [`Store::behind`] says so, and the
//! writer reports the two apart ([`crate::Committed::visible`]).
//!
//! The promise is the store's at either sync mode: what was acknowledged
//! survives `kill -9` ([`Sync::Normal`]) or a power cut too ([`Sync::Full`]).
//! [`SqliteStore`] opened alone on a data directory ignores the journal: the
//! coordinator opens it through [`crate::open`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Loaded, Op, SqliteStore, Store, StoreError, Sync};

/// The journal's file in the data directory.
pub const JOURNAL_FILE: &str = "tasks.journal";

/// Ops waiting in the journal past which they are applied at once.
pub const APPLY_OPS: usize = 512;

/// How long the first op waiting in the journal may wait to be applied
/// (what a reader may wait to see a change that was acknowledged).
pub const APPLY_DELAY: Duration = Duration::from_millis(10);

/// A batch with more ops than this goes straight to SQLite.
pub const JOURNAL_MAX_OPS: usize = 64;

/// Length, checksum, number.
const HEADER: usize = 16;

/// An SQLite store whose small commits are records in a journal.
pub struct Journaled {
    db: SqliteStore,
    file: File,
    path: PathBuf,
    sync: Sync,
    /// The journal's length: a failed append is cut back to it.
    len: u64,
    /// The last record number written (or applied).
    seq: u64,
    /// Ops in the journal not yet applied to the database, in order.
    pending: Vec<Op>,
    /// When the first of them was written.
    since: Option<Instant>,
    /// A failed append that could not be cut back: nothing more is written.
    broken: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journaled")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Journaled {
    /// Opens (creating if needed) `dir/tasks.db` and its journal, applying
    /// what the journal holds that the database lacks.
    pub fn open(dir: &Path, sync: Sync) -> Result<Journaled, StoreError> {
        let mut db = SqliteStore::open(dir, sync)?;
        let path = dir.join(JOURNAL_FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        if created && sync == Sync::Full {
            // The file's name must survive a power cut as its records do.
            File::open(dir)?.sync_all()?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let applied = db.journal_applied()?;
        let (records, end) = records(&bytes);
        if end < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                "dropping {} bytes of an unfinished record at the journal's end (a crash while \
                 it was written; it was never acknowledged)",
                bytes.len() - end
            );
        }
        let mut seq = applied;
        let mut ops = Vec::new();
        for (number, body) in records {
            if number > applied {
                let mut batch: Vec<Op> = serde_json::from_slice(body).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "journal record {number} in {}: {e}",
                        path.display()
                    ))
                })?;
                ops.append(&mut batch);
            }
            seq = seq.max(number);
        }
        if !ops.is_empty() {
            db.write_applying(&ops, Some(seq))?;
            tracing::info!(ops = ops.len(), "applied the store journal left by the last run");
        }
        if !bytes.is_empty() {
            file.set_len(0)?;
        }
        Ok(Journaled {
            db,
            file,
            path,
            sync,
            len: 0,
            seq,
            pending: Vec::new(),
            since: None,
            broken: false,
            buf: Vec::new(),
        })
    }

    /// Appends `ops` as the next record; the journal is left as it was if
    /// that fails.
    fn append(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Io(std::io::Error::other(format!(
                "the journal {} could not be repaired after a failed write",
                self.path.display()
            ))));
        }
        let number = self.seq + 1;
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        serde_json::to_writer(&mut self.buf, ops).map_err(std::io::Error::other)?;
        let body = u32::try_from(self.buf.len() - 8).map_err(std::io::Error::other)?;
        self.buf[8..16].copy_from_slice(&number.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&body.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let written = self.file.write_all(&self.buf).and_then(|()| match self.sync {
            Sync::Full => self.file.sync_data(),
            Sync::Normal => Ok(()),
        });
        if let Err(e) = written {
            // A retry must not follow a torn record, which would end the journal.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(e.into());
        }
        self.len += self.buf.len() as u64;
        self.seq = number;
        Ok(())
    }

    /// Whether the ops waiting in the journal are to be applied now.
    fn apply_due(&self) -> bool {
        self.pending.len() >= APPLY_OPS || self.since.is_some_and(|t| t.elapsed() >= APPLY_DELAY)
    }

    /// Applies what waits in the journal, and `more` after it, in one
    /// transaction; then empties the journal.
    fn apply(&mut self, more: &[Op]) -> Result<(), StoreError> {
        let waiting = self.pending.len();
        if waiting == 0 {
            self.db.write_applying(more, Some(self.seq))?;
        } else {
            self.pending.extend_from_slice(more);
            if let Err(e) = self.db.write_applying(&self.pending, Some(self.seq)) {
                // Tried again as it was: `more` is the caller's to retry.
                self.pending.truncate(waiting);
                return Err(e);
            }
            self.pending.clear();
        }
        self.since = None;
        if self.len > 0 {
            // Applied: a crash before this only leaves records to skip.
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }
}

/// The whole records at the start of `bytes` (number, ops' JSON), and
/// where they end.
fn records(bytes: &[u8]) -> (Vec<(u64, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let body = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(record) = body.checked_sub(8).and_then(|_| bytes.get(at + 8..at + 8 + body))
        else {
            break;
        };
        if crc32fast::hash(record) != crc {
            break;
        }
        let number = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
        out.push((number, &record[8..]));
        at += 8 + body;
    }
    (out, at)
}

impl Store for Journaled {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        if !self.pending.is_empty() {
            self.apply(&[])?;
        }
        self.db.load()
    }

    fn write(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.len() > JOURNAL_MAX_OPS {
            return self.apply(ops);
        }
        self.append(ops)?;
        self.pending.extend_from_slice(ops);
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn upkeep_due(&self) -> bool {
        self.apply_due() || self.db.upkeep_due()
    }

    /// Applies the journal when it is due, then SQLite's own upkeep.
    fn upkeep(&mut self) -> Result<(), StoreError> {
        if self.apply_due()
            && let Err(e) = self.apply(&[])
        {
            // Tried again after the delay, not at once.
            self.since = Some(Instant::now());
            return Err(e);
        }
        if self.db.upkeep_due() { self.db.upkeep() } else { Ok(()) }
    }

    fn behind(&self) -> bool {
        !self.pending.is_empty()
    }

    fn upkeep_within(&self) -> Option<Duration> {
        self.since.map(|t| APPLY_DELAY.saturating_sub(t.elapsed()))
    }
}

impl Drop for Journaled {
    /// Leaves the database whole for whoever opens it next (the journal
    /// would be replayed anyway).
    fn drop(&mut self) {
        if !self.pending.is_empty()
            && let Err(e) = self.apply(&[])
        {
            tracing::warn!("store journal not applied at close (it is at the next open): {e}");
        }
    }
}

#[cfg(test)]
mod tests;
