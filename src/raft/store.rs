//! The one RocksDB database a node keeps: column families for the Raft log,
//! Raft metadata (vote, committed, purged) and the latest state snapshot.
//! Every record carries a format byte so later builds can tell old from new.

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use anyhow::{bail, Context, Result};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;

pub(super) const CF_LOG: &str = "log";
pub(super) const CF_META: &str = "meta";
pub(super) const CF_SNAPSHOT: &str = "snapshot";

/// Format byte of every record this build writes to disk.
const DISK_FORMAT: u8 = 1;

/// Opens (creating if absent) the node's database under `dir`.
pub fn open_stores(dir: &Path) -> Result<(LogStore, StateMachineStore)> {
    crate::durable::create_dir_all(dir, 0o777)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Overwrite old WAL files instead of growing new ones: an fsync of a file
    // whose size does not change needs no filesystem journal commit, which
    // roughly halves its cost on ext4.
    opts.set_recycle_log_file_num(4);
    let cfs = [CF_LOG, CF_META, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .with_context(|| format!("opening RocksDB at {}", dir.display()))?;
    let db = Arc::new(db);
    let sm = StateMachineStore::open(db.clone())?;
    Ok((LogStore::new(db), sm))
}

pub(super) fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![DISK_FORMAT];
    postcard::to_io(value, &mut bytes).expect("records are postcard-serializable");
    bytes
}

pub(super) fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let Some((&format, body)) = bytes.split_first() else {
        bail!("empty record");
    };
    if format != DISK_FORMAT {
        bail!("record format {format} is not one this build reads ({DISK_FORMAT})");
    }
    postcard::from_bytes(body).context("undecodable record")
}

/// Durable write options: nothing is acknowledged before it is fsynced
/// (invariant 2).
pub(super) fn synced() -> rocksdb::WriteOptions {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    opts
}
