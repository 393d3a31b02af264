//! The state machine store: the applied [`State`] in memory, its snapshots in
//! RocksDB. After a restart the state is the last snapshot plus the committed
//! log replayed on top of it, so nothing applied needs writing per entry.

use super::store::{decode_record, encode_record, synced, CF_SNAPSHOT};
use super::types::{NodeInfo, TypeConfig};
use crate::state::{Outcome, State};
use anyhow::Context;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;

const KEY_CURRENT: &[u8] = b"current";

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The applied state together with the log position it reflects.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, NodeInfo>,
    pub state: State,
}

impl Applied {
    /// The index of the last entry applied (0 before any).
    pub fn index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }
}

/// A snapshot as persisted: its metadata and the encoded state.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, NodeInfo>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    applied: Arc<RwLock<Applied>>,
    snapshot_seq: Arc<AtomicU64>,
    /// The last applied index, for anyone waiting on the state to move.
    applied_index: watch::Sender<u64>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

impl StateMachineStore {
    pub(super) fn open(db: Arc<DB>) -> anyhow::Result<StateMachineStore> {
        let store = StateMachineStore {
            db,
            applied: Arc::default(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            applied_index: watch::Sender::new(0),
        };
        if let Some(snapshot) = store.load_snapshot()? {
            store.restore(&snapshot.meta, &snapshot.data)?;
        }
        Ok(store)
    }

    /// Makes the database safe to leave without closing it: the WAL synced
    /// (every acknowledged write already is) and RocksDB's background work
    /// stopped. After this the process may end without running RocksDB's
    /// destructors.
    pub fn quiesce(&self) {
        if let Err(e) = self.db.flush_wal(true) {
            tracing::warn!("syncing the RocksDB WAL at shutdown: {e}");
        }
        self.db.cancel_all_background_work(true);
    }

    /// Read access to the applied state. Hold it briefly: apply waits on it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().expect("state lock poisoned")
    }

    /// Follows the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_SNAPSHOT)
            .expect("column family created at open")
    }

    fn load_snapshot(&self) -> anyhow::Result<Option<StoredSnapshot>> {
        match self.db.get_cf(self.cf(), KEY_CURRENT)? {
            Some(bytes) => Ok(Some(
                decode_record(&bytes).context("reading the stored snapshot")?,
            )),
            None => Ok(None),
        }
    }

    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), rocksdb::Error> {
        self.db
            .put_cf_opt(self.cf(), KEY_CURRENT, encode_record(snapshot), &synced())
    }

    fn restore(&self, meta: &SnapshotMeta<u64, NodeInfo>, data: &[u8]) -> anyhow::Result<()> {
        let state = State::decode(data).context("decoding snapshot state")?;
        let mut applied = self.applied.write().expect("state lock poisoned");
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        self.applied_index
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, meta) = {
            let applied = self.read();
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let id = match applied.last_applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
                None => format!("empty-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            (applied.state.encode(), meta)
        };
        let stored = StoredSnapshot { meta, data };
        self.save_snapshot(&stored).map_err(sm_err)?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, NodeInfo>)> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Outcome>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut applied = self.applied.write().expect("state lock poisoned");
        for entry in entries {
            let index = entry.log_id.index;
            if index <= applied.index() && applied.last_applied.is_some() {
                // openraft hands entries in log order, each once; anything
                // else would apply a command twice.
                let last = applied.index();
                drop(applied);
                tracing::error!(
                    index,
                    last,
                    "entry handed to apply out of order; this node stops applying"
                );
                return Err(StorageIOError::apply(
                    entry.log_id,
                    &std::io::Error::other(format!("entry {index} after {last}")),
                )
                .into());
            }
            let outcome = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => {
                    match applied
                        .state
                        .apply_batch(index, entry.log_id.leader_id.node_id, batch)
                    {
                        Ok(outcomes) => outcomes,
                        Err(e) => {
                            // Invariant 8: never skip an entry. Stop applying and say so.
                            tracing::error!(
                            index,
                            "cannot apply committed entry: {e}; this node stops applying until upgraded"
                        );
                            drop(applied);
                            return Err(StorageIOError::apply(
                                entry.log_id,
                                &std::io::Error::other(e.to_string()),
                            )
                            .into());
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.state.apply_membership(
                        membership
                            .nodes()
                            .map(|(_, n)| (n.name.as_str(), n.address.as_str())),
                    );
                    applied.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    Vec::new()
                }
            };
            if crate::state::invariants::checking() {
                if let Err(broken) = applied.state.check_invariants() {
                    // A state that broke its own rules must not drive
                    // containers: stop here, as for an undecodable entry.
                    tracing::error!(index, "INVARIANT VIOLATED after applying entry {index}: {broken}; this node stops applying");
                    drop(applied);
                    return Err(StorageIOError::apply(
                        entry.log_id,
                        &std::io::Error::other(format!("invariant violated: {broken}")),
                    )
                    .into());
                }
            }
            applied.last_applied = Some(entry.log_id);
            outcomes.push(outcome);
        }
        let last = applied.index();
        drop(applied);
        self.applied_index.send_replace(last);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        // Decode before persisting, so a bad snapshot replaces nothing.
        State::decode(&data).map_err(snap_err)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).map_err(sm_err)?;
        self.restore(&stored.meta, &stored.data).map_err(sm_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.load_snapshot().map_err(snap_err)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
