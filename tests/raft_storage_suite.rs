//! openraft's own conformance suite run against our RocksDB log and state
//! machine stores: every storage contract openraft relies on, on real RocksDB.

use flocker::raft::{open_stores, LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open_stores(dir.path()).expect("open stores");
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_stores_pass_openraft_suite() {
    Suite::test_all(RocksBuilder).unwrap();
}
