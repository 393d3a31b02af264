//! The Raft log and vote in RocksDB. Log keys are big-endian indexes, so
//! RocksDB's order is log order. Appends and votes are fsynced before
//! openraft is told they are durable.

use super::store::{decode_record, encode_record, synced, CF_LOG, CF_META};
use super::types::TypeConfig;
use super::wal_sync::WalSyncer;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: WalSyncer,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> LogStore {
        LogStore {
            syncer: WalSyncer::start(db.clone()),
            db,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> anyhow::Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_META), key)? {
            Some(bytes) => Ok(Some(decode_record(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), rocksdb::Error> {
        self.db
            .put_cf_opt(self.cf(CF_META), key, encode_record(value), &synced())
    }

    fn last_entry_log_id(&self) -> anyhow::Result<Option<LogId<u64>>> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (_, value) = item?;
                let entry: Entry<TypeConfig> = decode_record(&value)?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = key_index(&key).ok_or_else(|| read_err("malformed log key"))?;
            if !range.contains(&index) {
                break;
            }
            entries.push(decode_record(&value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = self.get_meta(KEY_PURGED).map_err(read_err)?;
        let last_entry = self.last_entry_log_id().map_err(read_err)?;
        // After a crash mid-purge, entries at or below the purge point may remain.
        let last = std::cmp::max(last_entry, last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&std::io::Error::other(e.to_string())).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        // Not fsynced: it only lets a restart re-apply sooner. Losing it is
        // safe, since the commit point is re-learned from the leader.
        if let Some(log_id) = committed {
            crate::metrics::get()
                .raft_commit_index
                .set(log_id.index as i64);
        }
        self.db
            .put_cf(self.cf(CF_META), KEY_COMMITTED, encode_record(&committed))
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self
            .get_meta::<Option<LogId<u64>>>(KEY_COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut batch = WriteBatch::default();
        let mut count = 0u32;
        for entry in entries {
            count += 1;
            batch.put_cf(
                self.cf(CF_LOG),
                index_key(entry.get_log_id().index),
                encode_record(&entry),
            );
        }
        // Written now (readable at once), durable when the syncer has fsynced
        // the WAL: only then does openraft count these entries (invariant 2).
        self.db.write(batch).map_err(write_err)?;
        let metrics = crate::metrics::get();
        metrics.raft_append_entries.observe(count.into());
        metrics
            .raft_append_seconds
            .observe(crate::metrics::secs(started.elapsed()));
        self.syncer.after_sync(callback).await.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_LOG),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Record the purge point first: a crash between the two writes leaves
        // extra entries below it, which get_log_state ignores.
        self.put_meta(KEY_PURGED, &log_id).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), index_key(0), index_key(log_id.index + 1));
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }
}
