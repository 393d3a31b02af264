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
    let newest = [Slot::A, Slot::B]
        .into_iter()
        .filter_map(|slot| Some((slots.held(slot, app)?, slot)))
        .max_by_key(|(point, _)| point.position());
    let Some((point, slot)) = newest else {
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

/// Chooses the slot for the next point and marks it as receiving it.
/// Blocking.
/// The spare slot starts as a copy of the kept one (a snapshot, reflinks
/// or the differing blocks, by `backend`), so the owner sends one
/// interval's changes, not two.
pub fn prepare_slot(
    slots: &ReplicaSlots,
    backend: &Backend,
    app: &str,
    keep: Option<HeldPoint>,
    epoch: u64,
    seq: u64,
) -> Result<Admitted, String> {
    let slot = slots.target(app, keep.as_ref());
    let failed = |e: String| format!("preparing the replica slot of {app}: {e}");
    slots
        .begin_point(slot, app, epoch, seq)
        .map_err(|e| failed(e.to_string()))?;
    if let Some(kept) = keep.as_ref().and_then(|p| slots.holding(app, p)) {
        slots
            .refresh_from(kept, slot, app, backend)
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(Admitted { slot, keep })
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
}
