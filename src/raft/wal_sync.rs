//! Group commit for the Raft log: appends are written to RocksDB at once
//! (unsynced, so openraft can read them back immediately), and a dedicated
//! thread fsyncs the WAL and only then tells openraft the entries are durable.
//! Every append queued while one fsync runs shares the next one, and the
//! Raft core never waits on the disk.

use super::types::TypeConfig;
use openraft::storage::LogFlushed;
use rocksdb::DB;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Appends that may wait for an fsync at once; a full queue makes `append`
/// wait, which slows the leader down rather than growing memory.
const MAX_PENDING_FLUSHES: usize = 4096;

#[derive(Clone)]
pub struct WalSyncer {
    pending: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl WalSyncer {
    pub fn start(db: Arc<DB>) -> WalSyncer {
        let (pending, mut queue) = mpsc::channel::<LogFlushed<TypeConfig>>(MAX_PENDING_FLUSHES);
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                // Ends when every LogStore (and so every sender) is gone.
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = queue.try_recv() {
                        batch.push(more);
                    }
                    let started = std::time::Instant::now();
                    let synced = db.flush_wal(true).map_err(|e| e.to_string());
                    let metrics = crate::metrics::get();
                    metrics
                        .raft_fsync_seconds
                        .observe(crate::metrics::secs(started.elapsed()));
                    metrics.raft_fsync_appends.observe(batch.len() as f64);
                    for flushed in batch {
                        flushed.log_io_completed(synced.clone().map_err(std::io::Error::other));
                    }
                }
            })
            .expect("spawning the WAL sync thread");
        WalSyncer { pending }
    }

    /// Reports `flushed` once everything written so far is on disk.
    pub async fn after_sync(&self, flushed: LogFlushed<TypeConfig>) -> Result<(), String> {
        self.pending
            .send(flushed)
            .await
            .map_err(|_| "the WAL sync thread has stopped".to_string())
    }
}
