//! A replica's copies of one volume: two slots, so that the last complete
//! point is never given up while the next one arrives (the owner usually
//! dies in the middle of a point). Layout under a node's data directory:
//!
//! ```text
//! <data-dir>/replicas/a/<app>/{data,mark,cache,point}
//! <data-dir>/replicas/b/<app>/{data,mark,cache,point}
//! ```
//!
//! Each slot is a `VolumeStore` of its own, so rounds write into it exactly
//! as a move writes into a destination's copy: marked Incomplete before the
//! first write, Complete only on an equal root. The `point` file names the
//! point a slot holds or is receiving (owner epoch and seq); it is written
//! after the mark went Incomplete and before any data, so a slot whose mark
//! is Complete holds exactly the point its file names. The next point goes
//! to the slot that does not hold the newest committed point ([`target`]).
//!
//! Failover promotes the slot holding the committed point into the node's
//! live store, at the new owner's epoch ([`ReplicaSlots::promote`]).
//! Blocking I/O: call it from `spawn_blocking`.
//!
//! [`target`]: ReplicaSlots::target

use super::error::{IoContext, Result, VolumeError};
use super::hash::Hash;
use super::mark::{self, MarkState};
use super::store::VolumeStore;
use super::sys;
use serde::{Deserialize, Serialize};
use std::path::Path;

const POINT_FILE: &str = "point";

/// One of a replica's two copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// The point a slot holds complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPoint {
    pub epoch: u64,
    pub seq: u64,
    pub root: Hash,
}

impl HeldPoint {
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }
}

/// A root as the replicated state writes it: 64 hex digits.
pub fn root_to_hex(root: &Hash) -> String {
    root.iter().map(|b| format!("{b:02x}")).collect()
}

/// The root `hex` names, if it is 64 hex digits.
pub fn root_from_hex(hex: &str) -> Option<Hash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut root = [0u8; 32];
    for (i, byte) in root.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(root)
}

/// What the `point` file says: the point the slot holds or is receiving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PointFile {
    epoch: u64,
    seq: u64,
}

#[derive(Clone, Debug)]
pub struct ReplicaSlots {
    a: VolumeStore,
    b: VolumeStore,
}

impl ReplicaSlots {
    /// The slots under `<data_dir>/replicas`, created private like the store.
    pub fn open(data_dir: &Path) -> Result<ReplicaSlots> {
        let root = data_dir.join("replicas");
        Ok(ReplicaSlots {
            a: VolumeStore::open_at(root.join(Slot::A.name()))?,
            b: VolumeStore::open_at(root.join(Slot::B.name()))?,
        })
    }

    /// These slots with new copies made by `backend`.
    pub fn with_backend(self, backend: &super::backend::Backend) -> ReplicaSlots {
        ReplicaSlots {
            a: self.a.with_backend(backend.clone()),
            b: self.b.with_backend(backend.clone()),
        }
    }

    pub fn store(&self, slot: Slot) -> &VolumeStore {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The point `slot` holds complete, if any: its mark is Complete and
    /// its point file names the mark's epoch. Anything unreadable: none.
    pub fn held(&self, slot: Slot, app: &str) -> Option<HeldPoint> {
        let store = self.store(slot);
        let dir = store.volume_dir(app).ok()?;
        let mark = mark::read_mark(&dir).ok().flatten()?;
        if mark.state != MarkState::Complete {
            return None;
        }
        let file: PointFile =
            serde_json::from_slice(&std::fs::read(dir.join(POINT_FILE)).ok()?).ok()?;
        (file.epoch == mark.epoch).then_some(HeldPoint {
            epoch: file.epoch,
            seq: file.seq,
            root: mark.root,
        })
    }

    /// The slot holding exactly `point`, if one does.
    pub fn holding(&self, app: &str, point: &HeldPoint) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|slot| self.held(*slot, app).as_ref() == Some(point))
    }

    /// Where the next point of `app` goes: never the slot holding `keep`
    /// (the newest point committed for this replica). Without one held
    /// here, never the slot with the newest complete point either: this
    /// node's applied state may not show that point's commit yet, and a
    /// committed point must survive the next one arriving.
    pub fn target(&self, app: &str, keep: Option<&HeldPoint>) -> Slot {
        if let Some(slot) = keep.and_then(|p| self.holding(app, p)) {
            return slot.other();
        }
        match self.newest(app) {
            Some((slot, _)) => slot.other(),
            None => Slot::A,
        }
    }

    /// The slot with the newest complete point, and that point.
    pub fn newest(&self, app: &str) -> Option<(Slot, HeldPoint)> {
        [Slot::A, Slot::B]
            .into_iter()
            .filter_map(|slot| Some((slot, self.held(slot, app)?)))
            .max_by_key(|(_, point)| point.position())
    }

    /// Before the first byte of point `seq` (taken at owner epoch `epoch`)
    /// lands in `slot`: the slot stops being complete, then names the
    /// point it is receiving.
    pub fn begin_point(&self, slot: Slot, app: &str, epoch: u64, seq: u64) -> Result<()> {
        let store = self.store(slot);
        let dir = store.volume_dir(app)?;
        crate::durable::create_dir_all(&dir, 0o777).ctx("create", &dir)?;
        store.mark_incomplete(app)?;
        let bytes = serde_json::to_vec(&PointFile { epoch, seq }).expect("serializable");
        sys::write_atomic(&dir, POINT_FILE, &bytes)
    }

    /// Makes `to`'s data a copy of `from`'s (which stays as it is), for the
    /// next point to arrive on top of: `to` must be marked as receiving
    /// (`begin_point`) first. A snapshot keeps inodes and times, so the
    /// kept slot's hash cache is right for it; an in-place update keeps
    /// `to`'s own.
    pub fn refresh_from(
        &self,
        from: Slot,
        to: Slot,
        app: &str,
        backend: &super::backend::Backend,
    ) -> Result<()> {
        let source = self.store(from).data_dir(app)?;
        let target = self.store(to).data_dir(app)?;
        let stats = backend.clone_tree(&source, &target)?;
        if stats.method == super::backend::CaptureMethod::Snapshot {
            let cache = self.store(from).load_cache(app)?;
            self.store(to).save_cache(app, &cache)?;
        }
        Ok(())
    }

    /// Makes `slot`'s copy of `app` the node's live copy in `live`, complete
    /// at `epoch` (a failover's): any copy there is set aside first. Refuses
    /// unless the slot holds exactly `point`.
    pub fn promote(
        &self,
        slot: Slot,
        app: &str,
        point: &HeldPoint,
        live: &VolumeStore,
        epoch: u64,
    ) -> Result<()> {
        if self.held(slot, app).as_ref() != Some(point) {
            return Err(VolumeError::Invalid(format!(
                "replica slot {} of {app} does not hold point {} of epoch {}",
                slot.name(),
                point.seq,
                point.epoch
            )));
        }
        live.set_aside(app)?;
        let from = self.store(slot).volume_dir(app)?;
        let to = live.volume_dir(app)?;
        std::fs::rename(&from, &to).ctx("promote", &from)?;
        sys::fsync_dir(live.root())?;
        sys::fsync_dir(self.store(slot).root())?;
        if !live.remark_complete(app, point.epoch, epoch)? {
            return Err(VolumeError::Invalid(format!(
                "the promoted copy of {app} was not complete at epoch {}",
                point.epoch
            )));
        }
        let _ = std::fs::remove_file(to.join(POINT_FILE));
        Ok(())
    }

    /// Drops both slots of `app` (this node holds no replica of it now).
    pub fn remove(&self, app: &str) -> Result<()> {
        for slot in [Slot::A, Slot::B] {
            let dir = self.store(slot).volume_dir(app)?;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => sys::fsync_dir(self.store(slot).root())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove", &dir),
            }
        }
        Ok(())
    }

    /// Apps with a slot on this node.
    pub fn apps(&self) -> Result<Vec<String>> {
        let mut apps = std::collections::BTreeSet::new();
        for slot in [Slot::A, Slot::B] {
            let root = self.store(slot).root();
            for item in std::fs::read_dir(root).ctx("read directory", root)? {
                let item = item.ctx("read directory", root)?;
                if let Some(name) = item.file_name().to_str() {
                    if crate::config::check_app_name(name).is_ok() {
                        apps.insert(name.to_string());
                    }
                }
            }
        }
        Ok(apps.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::ScanOptions;

    /// Writes `content` as point `seq` into `slot`, completing it as a
    /// round would.
    fn fill(slots: &ReplicaSlots, slot: Slot, seq: u64, content: &str) -> HeldPoint {
        slots.begin_point(slot, "db", 3, seq).unwrap();
        let store = slots.store(slot);
        let data = store.data_dir("db").unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), content).unwrap();
        let (manifest, _) = store
            .scanner("db", ScanOptions::default())
            .unwrap()
            .scan()
            .unwrap();
        store.mark_complete("db", 3, manifest.root()).unwrap();
        HeldPoint {
            epoch: 3,
            seq,
            root: manifest.root(),
        }
    }

    #[test]
    fn roots_go_to_hex_and_back_and_nothing_else_parses() {
        let root = [0x0f; 32];
        assert_eq!(root_from_hex(&root_to_hex(&root)), Some(root));
        assert_eq!(root_from_hex("0f"), None);
        assert_eq!(root_from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn the_committed_point_is_never_the_target_and_a_slot_mid_point_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let slots = ReplicaSlots::open(dir.path()).unwrap();
        assert_eq!(slots.target("db", None), Slot::A);
        let p1 = fill(&slots, Slot::A, 1, "one");
        assert_eq!(slots.held(Slot::A, "db"), Some(p1));
        assert_eq!(slots.target("db", Some(&p1)), Slot::B);
        let p2 = fill(&slots, Slot::B, 2, "two");
        // Point 2 not committed yet: point 1 must be kept.
        assert_eq!(slots.target("db", Some(&p1)), Slot::B);
        assert_eq!(slots.target("db", Some(&p2)), Slot::A);
        // Without the committed point held here (this node's state may lag
        // behind the commit), the newest complete point is kept too.
        assert_eq!(slots.target("db", None), Slot::A);
        assert_eq!(slots.newest("db"), Some((Slot::B, p2)));
        slots.begin_point(Slot::A, "db", 3, 3).unwrap();
        assert_eq!(
            slots.held(Slot::A, "db"),
            None,
            "a slot receiving a point holds none"
        );
        assert_eq!(slots.holding("db", &p2), Some(Slot::B));
        assert_eq!(slots.apps().unwrap(), ["db"]);
        slots.remove("db").unwrap();
        assert!(slots.apps().unwrap().is_empty());
    }

    #[test]
    fn promotion_takes_exactly_the_committed_point_into_the_live_store() {
        let dir = tempfile::tempdir().unwrap();
        let slots = ReplicaSlots::open(dir.path()).unwrap();
        let live = VolumeStore::open(dir.path()).unwrap();
        live.create_empty("db", 1).unwrap();
        let p1 = fill(&slots, Slot::A, 1, "one");
        let wrong = HeldPoint { seq: 9, ..p1 };
        assert!(slots.promote(Slot::A, "db", &wrong, &live, 5).is_err());
        assert!(
            live.mountable("db", 1),
            "a refused promotion changes nothing"
        );
        slots.promote(Slot::A, "db", &p1, &live, 5).unwrap();
        assert!(live.mountable("db", 5));
        assert_eq!(
            std::fs::read_to_string(live.data_dir("db").unwrap().join("f")).unwrap(),
            "one"
        );
        let stale = live.stale_copies("db").unwrap();
        assert_eq!(stale.len(), 1, "the copy that was live is kept aside");
        assert_eq!(slots.held(Slot::A, "db"), None);
    }
}
