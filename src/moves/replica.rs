//! The replica's side of replication (`crate::replication`): whether a
//! point may be received, and into which slot. The volume stream and its
//! rounds are the move receiver's (`receiver`), pointed at the slot's store.

use crate::state::State;
use crate::volume::replica::root_from_hex;
use crate::volume::{Backend, HeldPoint, ReplicaSlots, Slot, VolumeStore};

/// Where an admitted point goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub slot: Slot,
    /// The newest point committed for this replica, which the slot choice
    /// keeps intact.
    pub keep: Option<HeldPoint>,
}

/// Whether `peer` may send point `seq` of `app` taken at `epoch` to this
/// node (`me`), by the applied state: the peer owns the volume at exactly
/// that epoch and this node holds one of its replicas.
pub fn admit(
    state: &State,
    me: &str,
    peer: &str,
    app: &str,
    epoch: u64,
) -> Result<Option<HeldPoint>, String> {
    let owner = state
        .volumes
        .get(app)
        .ok_or_else(|| format!("{app} has no volume here"))?;
    if owner.node != peer || owner.epoch != epoch {
        return Err(format!(
            "{peer} does not own {app} at epoch {epoch} (the owner is {} at epoch {})",
            owner.node, owner.epoch
        ));
    }
    let committed = state
        .replicas
        .get(app)
        .and_then(|set| set.nodes.get(me))
        .ok_or_else(|| format!("{me} holds no replica of {app}"))?;
    Ok(committed.as_ref().and_then(|p| {
        Some(HeldPoint {
            epoch: p.epoch,
            seq: p.seq,
            root: root_from_hex(&p.root)?,
        })
    }))
}

/// A move's destination that holds a replica of `app` but no copy of its
/// own starts from its newest complete point, so the move sends only what
/// changed since (the summary exchange finds it). The copy has no mark: it
/// is not mountable until the move's final round completes it. Blocking.
pub fn seed_from_replica(
    store: &VolumeStore,
    slots: &ReplicaSlots,
    backend: &Backend,
    app: &str,
) -> Result<bool, String> {
    if store.exists(app).map_err(|e| e.to_string())? {
        return Ok(false);
    }
    let Some((slot, point)) = slots.newest(app) else {
        return Ok(false);
    };
    let from = slots.store(slot).data_dir(app).map_err(|e| e.to_string())?;
    let dir = store.volume_dir(app).map_err(|e| e.to_string())?;
    crate::durable::create_dir_all(&dir, 0o777)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let to = store.data_dir(app).map_err(|e| e.to_string())?;
    let stats = backend
        .clone_tree(&from, &to)
        .map_err(|e| format!("seeding {app} from its replica: {e}"))?;
    tracing::info!(%app, seq = point.seq, epoch = point.epoch, bytes = stats.bytes_copied, "move destination seeded from its replica's point");
    Ok(true)
}

/// What a former owner's copy set aside by a failover is called, under
/// `volumes/<app>/` (`replication::upkeep`).
pub const DIVERGED_PREFIX: &str = "diverged-";

/// Chooses the slot for the next point and marks it as receiving it.
/// Blocking.
/// The spare slot starts as a copy of the kept one (a snapshot, reflinks
/// or the differing blocks, by `backend`), so the owner sends one
/// interval's changes, not two. A replica with no point yet starts from
/// the newest copy this node still has of its own (`live`): a returning
/// former owner is then sent only what changed since it left.
pub fn prepare_slot(
    slots: &ReplicaSlots,
    live: &VolumeStore,
    backend: &Backend,
    app: &str,
    keep: Option<HeldPoint>,
    (epoch, seq): (u64, u64),
) -> Result<Admitted, String> {
    let slot = slots.target(app, keep.as_ref());
    let failed = |e: String| format!("preparing the replica slot of {app}: {e}");
    slots
        .begin_point(slot, app, epoch, seq)
        .map_err(|e| failed(e.to_string()))?;
    // The base: the committed point, else the newest complete one here.
    let base = keep
        .as_ref()
        .and_then(|p| slots.holding(app, p))
        .or_else(|| slots.newest(app).map(|(slot, _)| slot))
        .filter(|base| *base != slot);
    match base {
        Some(base) => slots
            .refresh_from(base, slot, app, backend)
            .map_err(|e| failed(e.to_string()))?,
        None => seed_empty_slot(slots.store(slot), live, backend, app).map_err(failed)?,
    }
    Ok(Admitted { slot, keep })
}

/// Fills a slot that has no data yet from this node's newest own copy of
/// `app`, if it has one. Only a base for the rounds: the slot is marked as
/// receiving, and only an equal root completes it.
fn seed_empty_slot(
    slot: &VolumeStore,
    live: &VolumeStore,
    backend: &Backend,
    app: &str,
) -> Result<(), String> {
    let to = slot.data_dir(app).map_err(|e| e.to_string())?;
    let empty = std::fs::read_dir(&to).map_or(true, |mut d| d.next().is_none());
    if !empty {
        return Ok(());
    }
    let Some(from) = newest_local_copy(live, app) else {
        return Ok(());
    };
    let stats = backend
        .clone_tree(&from, &to)
        .map_err(|e| format!("seeding from {}: {e}", from.display()))?;
    tracing::info!(%app, from = %from.display(), bytes = stats.bytes_copied + stats.bytes_reflinked, "replica slot seeded from this node's own older copy");
    Ok(())
}

/// This node's own copy of `app` the closest to the owner's: the newest
/// copy a failover set aside here, else a live copy it kept.
fn newest_local_copy(live: &VolumeStore, app: &str) -> Option<std::path::PathBuf> {
    let dir = live.volume_dir(app).ok()?;
    let aside = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let epoch: u64 = name.strip_prefix(DIVERGED_PREFIX)?.parse().ok()?;
            Some((epoch, dir.join(name).join(crate::volume::store::DATA_DIR)))
        })
        .filter(|(_, data)| data.is_dir())
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, data)| data);
    aside.or_else(|| live.data_dir(app).ok().filter(|d| d.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ReplicaPoint, ReplicaSet, VolumeOwner};

    fn state() -> State {
        let mut s = State::default();
        s.volumes.insert(
            "db".into(),
            VolumeOwner {
                node: "n1".into(),
                epoch: 3,
                adopt: false,
                issued: 3,
                from_point: None,
                handed_from: None,
            },
        );
        let mut set = ReplicaSet::default();
        set.nodes.insert(
            "n2".into(),
            Some(ReplicaPoint {
                epoch: 3,
                seq: 7,
                root: "ab".repeat(32),
                taken_at_ms: 0,
                age_at_commit_ms: 0,
            }),
        );
        set.nodes.insert("n3".into(), None);
        s.replicas.insert("db".into(), set);
        s
    }

    #[test]
    fn only_the_owner_at_its_epoch_sends_and_only_to_a_replica() {
        let s = state();
        let keep = admit(&s, "n2", "n1", "db", 3).unwrap().unwrap();
        assert_eq!((keep.epoch, keep.seq, keep.root), (3, 7, [0xab; 32]));
        assert_eq!(admit(&s, "n3", "n1", "db", 3), Ok(None), "still seeding");
        assert!(admit(&s, "n2", "n3", "db", 3)
            .unwrap_err()
            .contains("n3 does not own db"));
        assert!(admit(&s, "n2", "n1", "db", 2)
            .unwrap_err()
            .contains("at epoch 2"));
        assert!(admit(&s, "n4", "n1", "db", 3)
            .unwrap_err()
            .contains("n4 holds no replica"));
        assert!(admit(&s, "n2", "n1", "web", 3).is_err());
    }

    /// A returning former owner's first point: the slot starts from the
    /// copy the failover set aside here (the newest of them), so only the
    /// difference travels; a slot that already has data keeps it.
    #[test]
    fn an_empty_slot_starts_from_the_newest_copy_set_aside_here() {
        let dir = tempfile::tempdir().unwrap();
        let live = VolumeStore::open(dir.path()).unwrap();
        let slots = ReplicaSlots::open(dir.path()).unwrap();
        let backend = Backend::select(live.root(), crate::volume::BackendChoice::Dir).unwrap();
        let volume = live.volume_dir("db").unwrap();
        for (epoch, content) in [(2, "older"), (5, "newest")] {
            let data = volume
                .join(format!("{DIVERGED_PREFIX}{epoch}"))
                .join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("f"), content).unwrap();
        }
        let admitted = prepare_slot(&slots, &live, &backend, "db", None, (7, 1)).unwrap();
        let seeded = slots.store(admitted.slot).data_dir("db").unwrap();
        assert_eq!(std::fs::read_to_string(seeded.join("f")).unwrap(), "newest");
        assert_eq!(slots.held(admitted.slot, "db"), None, "a base, not a point");

        std::fs::write(seeded.join("f"), "received").unwrap();
        let again = prepare_slot(&slots, &live, &backend, "db", None, (7, 2)).unwrap();
        assert_eq!(again.slot, admitted.slot);
        assert_eq!(
            std::fs::read_to_string(seeded.join("f")).unwrap(),
            "received"
        );
    }

    #[test]
    fn without_a_copy_of_its_own_a_slot_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let live = VolumeStore::open(dir.path()).unwrap();
        let slots = ReplicaSlots::open(dir.path()).unwrap();
        let backend = Backend::select(live.root(), crate::volume::BackendChoice::Dir).unwrap();
        let admitted = prepare_slot(&slots, &live, &backend, "db", None, (1, 1)).unwrap();
        let data = slots.store(admitted.slot).data_dir("db").unwrap();
        assert!(std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none()));
    }
}
