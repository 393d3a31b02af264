//! Bounds each volume this node owns to its `maximum_size` where the
//! volume backend can (btrfs: a quota group per volume, set again every
//! pass, so a volume that arrived by a move or a failover is bounded within
//! one), and reports how much disk each uses against it.
//!
//! Why only reported elsewhere: on `dir` and `xfs` a volume is a directory
//! bind-mounted into the container, and ext4 or xfs can bound a directory
//! only with project quotas, which need the `prjquota` mount option that
//! hosts (this one included) rarely have; a per-volume loop file system
//! would make every volume a fixed-size image to create, grow and move. So
//! the agent measures allocated blocks every `USAGE_INTERVAL` and `ctl
//! status` flags a volume over its maximum.

use crate::raft::StateMachineStore;
use crate::volume::{SizeLimit, VolumeStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub const USAGE_INTERVAL: Duration = Duration::from_secs(10);

/// One volume's usage as its owner measured it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeUsage {
    pub used_bytes: u64,
    pub maximum_size: Option<u64>,
    /// The measurement stopped early (a huge tree): at least `used_bytes`.
    pub partial: bool,
}

impl VolumeUsage {
    pub fn exceeded(&self) -> bool {
        self.maximum_size.is_some_and(|max| self.used_bytes > max)
    }
}

/// Measures the volumes this node owns, forever.
pub async fn usage_loop(
    node: String,
    store: VolumeStore,
    sm: StateMachineStore,
    observed: super::Observations,
) {
    let mut tick = tokio::time::interval(USAGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut limits = Limits::default();
    loop {
        tick.tick().await;
        let owned: Vec<(String, Option<u64>)> = {
            let applied = sm.read();
            let state = &applied.state;
            state
                .volumes
                .iter()
                .filter(|(_, o)| o.node == node)
                .filter_map(|(app, _)| {
                    let spec = state.deployed.config.applications.get(app)?;
                    Some((app.clone(), spec.volume.as_ref()?.maximum_size))
                })
                .collect()
        };
        let (store, mut pass_limits) = (store.clone(), std::mem::take(&mut limits));
        let measured = tokio::task::spawn_blocking(move || {
            pass_limits.apply(&store, &owned);
            let measured = owned
                .into_iter()
                .filter_map(|(app, maximum_size)| {
                    let dir = store.data_dir(&app).ok()?;
                    let u = crate::volume::usage::usage(&dir).ok()?;
                    Some((
                        app,
                        VolumeUsage {
                            used_bytes: u.bytes,
                            maximum_size,
                            partial: u.partial,
                        },
                    ))
                })
                .collect::<BTreeMap<_, _>>();
            (measured, pass_limits)
        })
        .await;
        if let Ok((measured, pass_limits)) = measured {
            limits = pass_limits;
            for (app, u) in &measured {
                if u.exceeded() {
                    tracing::warn!(%app, used = u.used_bytes, maximum = ?u.maximum_size, "volume over its maximum_size");
                }
            }
            observed.volumes_measured(measured);
        }
    }
}

/// The bound last set on each owned volume, to say so once per change.
#[derive(Default)]
struct Limits {
    set: HashMap<String, (Option<u64>, SizeLimit)>,
}

impl Limits {
    /// Sets every owned volume's bound (again: cheap, and a copy that came
    /// by a move or failover has none yet); lifts one whose maximum went.
    fn apply(&mut self, store: &VolumeStore, owned: &[(String, Option<u64>)]) {
        let mut now = HashMap::new();
        for (app, max) in owned {
            let had_one = self.set.get(app).is_some_and(|(m, _)| m.is_some());
            if max.is_none() && !had_one {
                continue;
            }
            if !store.data_dir(app).is_ok_and(|d| d.exists()) {
                continue;
            }
            let outcome = store.limit_volume(app, *max);
            let said = self.set.get(app);
            if said != Some(&(*max, outcome.clone())) {
                match (&outcome, max) {
                    (SizeLimit::Enforced, Some(max)) => {
                        tracing::info!(%app, maximum_size = max, "volume bounded: writes past its maximum_size fail")
                    }
                    (SizeLimit::Enforced, None) => tracing::info!(%app, "volume bound lifted"),
                    (SizeLimit::Reported(why), _) => {
                        tracing::info!(%app, "maximum_size is measured and reported, not enforced: {why}")
                    }
                }
            }
            now.insert(app.clone(), (*max, outcome));
        }
        self.set = now;
    }
}
