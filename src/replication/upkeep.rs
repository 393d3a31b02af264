//! What a node keeps of volumes it no longer serves, by the applied state:
//!
//! - a former owner that a failover left behind sets its old copy aside as
//!   `volumes/<app>/diverged-<epoch>/` (its data, mark and cache): it may
//!   hold writes made after the promoted point, so it is never thrown away
//!   silently and never mounted again; `ctl volume forget-diverged` (the
//!   state no longer lists the node) removes it;
//! - replica slots of apps this node holds no replica of (any more) are
//!   removed — never those of an app this node owns, whose slot a failover
//!   may still be promoting.

use crate::moves::replica::DIVERGED_PREFIX;
use crate::moves::MoveContext;
use crate::state::State;
use crate::volume::{ReplicaSlots, VolumeStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often the upkeep runs besides after applied changes.
const PERIOD: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<MoveContext>) {
    let mut applied = ctx.sm.subscribe();
    loop {
        let work = plan(&ctx.sm.read().state, &ctx.node);
        let (store, slots) = (ctx.store.clone(), ctx.slots.clone());
        let done = tokio::task::spawn_blocking(move || carry_out(&store, &slots, &work)).await;
        if let Ok(Err(why)) = done {
            tracing::warn!("volume upkeep: {why}");
        }
        let _ = tokio::time::timeout(PERIOD, applied.changed()).await;
    }
}

/// What this node should do with copies it no longer serves.
#[derive(Debug, Default, PartialEq)]
struct Upkeep {
    /// (app, epoch): the live copy a failover left behind, to set aside.
    diverged: Vec<(String, u64)>,
    /// Apps whose set-aside copies the state no longer lists here.
    forget: Vec<String>,
    /// Apps whose replica slots this node may drop (None: keep every app's
    /// slots that `keep` lists).
    keep_slots: Vec<String>,
}

fn plan(state: &State, me: &str) -> Upkeep {
    let mut upkeep = Upkeep::default();
    for (app, set) in &state.replicas {
        let owner_here = state.volumes.get(app).is_some_and(|o| o.node == me);
        match set.diverged.get(me) {
            Some(epoch) if !owner_here => upkeep.diverged.push((app.clone(), *epoch)),
            Some(_) => {}
            None => upkeep.forget.push(app.clone()),
        }
        if set.nodes.contains_key(me) || owner_here {
            upkeep.keep_slots.push(app.clone());
        }
    }
    // Apps whose failover record is gone altogether: nothing to keep aside.
    for app in state
        .volumes
        .keys()
        .filter(|a| !state.replicas.contains_key(*a))
    {
        upkeep.forget.push(app.clone());
        if state.volumes[app].node == me {
            upkeep.keep_slots.push(app.clone());
        }
    }
    upkeep
}

fn carry_out(store: &VolumeStore, slots: &ReplicaSlots, work: &Upkeep) -> Result<(), String> {
    for (app, epoch) in &work.diverged {
        set_diverged_aside(store, app, *epoch)?;
    }
    for app in &work.forget {
        forget_diverged(store, app)?;
    }
    for app in slots.apps().map_err(|e| e.to_string())? {
        if !work.keep_slots.contains(&app) {
            tracing::info!(%app, "dropping replica slots: this node holds no replica of it");
            slots.remove(&app).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Moves this node's old copy of `app` (owned at `epoch` or before) into
/// `volumes/<app>/diverged-<epoch>/`, unless already done.
fn set_diverged_aside(store: &VolumeStore, app: &str, epoch: u64) -> Result<(), String> {
    let dir = store.volume_dir(app).map_err(|e| e.to_string())?;
    let mark = match store.mark(app) {
        Ok(Some(mark)) => mark,
        // No copy here (or nothing readable to judge): nothing to keep.
        _ => return Ok(()),
    };
    if mark.epoch > epoch {
        return Ok(());
    }
    let aside = dir.join(format!("{DIVERGED_PREFIX}{epoch}"));
    crate::durable::create_dir_all(&aside, 0o777)
        .map_err(|e| format!("creating {}: {e}", aside.display()))?;
    for name in [
        crate::volume::store::DATA_DIR,
        crate::volume::mark::MARK_FILE,
        crate::volume::store::CACHE_FILE,
    ] {
        rename_if_there(&dir.join(name), &aside.join(name))?;
    }
    // Both ends of the renames: a power cut must not bring the copy back
    // into place (it would be mounted) nor lose it.
    for d in [&aside, &dir] {
        crate::durable::fsync_dir(d).map_err(|e| format!("fsync {}: {e}", d.display()))?;
    }
    tracing::warn!(%app, epoch, path = %aside.display(), "a failover left this copy behind: kept aside, never mounted again");
    Ok(())
}

/// Removes what `set_diverged_aside` kept of `app`, if anything.
fn forget_diverged(store: &VolumeStore, app: &str) -> Result<(), String> {
    let dir = store.volume_dir(app).map_err(|e| e.to_string())?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(DIVERGED_PREFIX))
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .map_err(|e| format!("removing {}: {e}", path.display()))?;
            tracing::info!(%app, path = %path.display(), "diverged copy forgotten");
        }
    }
    Ok(())
}

fn rename_if_there(from: &Path, to: &Path) -> Result<(), String> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("moving {} aside: {e}", from.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ReplicaSet, VolumeOwner};

    fn owner(node: &str, epoch: u64) -> VolumeOwner {
        VolumeOwner {
            node: node.into(),
            epoch,
            adopt: false,
            issued: epoch,
            from_point: None,
            handed_from: None,
        }
    }

    #[test]
    fn a_left_behind_owner_keeps_its_copy_aside_and_drops_slots_it_does_not_need() {
        let mut s = State::default();
        s.volumes.insert("db".into(), owner("n2", 4));
        s.volumes.insert("web".into(), owner("n1", 1));
        let mut set = ReplicaSet::default();
        set.nodes.insert("n3".into(), None);
        set.diverged.insert("n1".into(), 3);
        s.replicas.insert("db".into(), set);
        let n1 = plan(&s, "n1");
        assert_eq!(n1.diverged, [("db".to_string(), 3)]);
        assert_eq!(n1.keep_slots, ["web"], "n1 is no replica of db");
        let n2 = plan(&s, "n2");
        assert!(n2.diverged.is_empty());
        assert!(
            n2.keep_slots.contains(&"db".to_string()),
            "the new owner may be promoting"
        );
        assert!(n2.forget.contains(&"db".to_string()));
        assert!(plan(&s, "n3").keep_slots.contains(&"db".to_string()));
    }

    #[test]
    fn setting_aside_and_forgetting_a_diverged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path()).unwrap();
        store.create_empty("db", 3).unwrap();
        std::fs::write(
            store.data_dir("db").unwrap().join("late"),
            "after the point",
        )
        .unwrap();
        set_diverged_aside(&store, "db", 3).unwrap();
        assert!(!store.mountable("db", 3));
        let kept = store.volume_dir("db").unwrap().join("diverged-3/data/late");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "after the point");
        set_diverged_aside(&store, "db", 3).unwrap();
        assert!(kept.exists(), "doing it again changes nothing");
        forget_diverged(&store, "db").unwrap();
        assert!(!kept.exists());
    }
}
