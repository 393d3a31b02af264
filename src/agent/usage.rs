//! Reports how much disk each volume this node owns uses, against its
//! `maximum_size`.
//!
//! Why reported and not enforced: a volume is a directory on the node's
//! file system, bind-mounted into the container, and ext4 or xfs can bound a
//! directory only with project quotas, which need the `prjquota` mount
//! option that hosts (this one included) rarely have. A per-volume loop
//! file system would enforce it but makes every volume a fixed-size image
//! to create, grow and move. So the agent measures allocated blocks every
//! `USAGE_INTERVAL` and `ctl status` flags a volume over its maximum.

use crate::raft::StateMachineStore;
use crate::volume::VolumeStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
        let store = store.clone();
        let measured = tokio::task::spawn_blocking(move || {
            owned
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
                .collect::<BTreeMap<_, _>>()
        })
        .await;
        if let Ok(measured) = measured {
            for (app, u) in &measured {
                if u.exceeded() {
                    tracing::warn!(%app, used = u.used_bytes, maximum = ?u.maximum_size, "volume over its maximum_size");
                }
            }
            observed.volumes_measured(measured);
        }
    }
}
