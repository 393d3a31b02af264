//! [`Observations`]: the one handle through which this node's agent, move
//! driver and usage loop record what they see, and the API reads it for
//! `ctl status`. Each method says what happened rather than which field
//! changes, so the rules (which move report to forget first) live here.
//!
//! The observed records themselves ([`InstanceStatus`], [`MoveStatus`],
//! [`MoveReport`]) are defined here too: the API carries them to clients
//! as they are (and re-exports them), so they are wire types whose fields
//! keep their order.

use super::{usage::VolumeUsage, Observed};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Finished move reports kept, one per app: the oldest goes first.
pub const MAX_MOVE_REPORTS: usize = 256;

#[derive(Clone, Default)]
pub struct Observations(Arc<RwLock<Observed>>);

impl Observations {
    /// A copy of everything, for a status request.
    pub fn snapshot(&self) -> Observed {
        self.0.read().expect("observed lock").clone()
    }

    /// The applied index the agent's last finished pass acted on.
    pub fn reconciled_index(&self) -> u64 {
        self.0.read().expect("observed lock").reconciled_index
    }

    pub fn reconciled(&self, index: u64) {
        self.0.write().expect("observed lock").reconciled_index = index;
    }

    /// Why the engine cannot be used, if it cannot.
    pub fn degraded(&self) -> Option<String> {
        self.0.read().expect("observed lock").degraded.clone()
    }

    pub fn instances_seen(&self, instances: BTreeMap<String, InstanceStatus>) {
        self.0.write().expect("observed lock").instances = instances;
    }

    /// Records why the engine cannot be used (`None`: it can); true when
    /// that changed.
    pub fn engine_degraded(&self, why: Option<String>) -> bool {
        let mut observed = self.0.write().expect("observed lock");
        let changed = observed.degraded != why;
        observed.degraded = why;
        changed
    }

    pub fn volumes_measured(&self, measured: BTreeMap<String, VolumeUsage>) {
        self.0.write().expect("observed lock").volumes = measured;
    }

    /// A move this node sends made progress.
    pub fn move_progress(&self, app: &str, status: MoveStatus) {
        self.0
            .write()
            .expect("observed lock")
            .moves
            .insert(app.to_string(), status);
    }

    /// A move this node sent ended without finishing here (superseded,
    /// cancelled): no progress to show any more.
    pub fn move_ended(&self, app: &str) {
        self.0.write().expect("observed lock").moves.remove(app);
    }

    /// A move this node sent finished: its report replaces the app's
    /// previous one; beyond [`MAX_MOVE_REPORTS`] apps the report that
    /// finished longest ago is forgotten.
    pub fn move_finished(&self, app: &str, report: MoveReport) {
        let mut observed = self.0.write().expect("observed lock");
        observed.moves.remove(app);
        let moved = &mut observed.moved;
        if moved.len() >= MAX_MOVE_REPORTS && !moved.contains_key(app) {
            let oldest = moved
                .iter()
                .min_by_key(|(name, r)| (r.finished_ms, name.as_str()))
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                moved.remove(&oldest);
            }
        }
        moved.insert(app.to_string(), report);
    }

    /// The owner's shipping of points of `app` to `replica` moved on.
    pub fn replica_progress(
        &self,
        app: &str,
        replica: &str,
        change: impl FnOnce(&mut ReplicaProgress),
    ) {
        let mut observed = self.0.write().expect("observed lock");
        let progress = observed
            .replication
            .entry(app.to_string())
            .or_default()
            .entry(replica.to_string())
            .or_default();
        change(progress);
    }

    /// This node ships points of `apps` only: the rest is forgotten.
    pub fn replicating(&self, apps: &[&String]) {
        self.0
            .write()
            .expect("observed lock")
            .replication
            .retain(|app, _| apps.contains(&app));
    }
}

/// How the owner's shipping of points to one replica stands (issue 15).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    /// The newest point the replica took complete.
    pub shipped_seq: u64,
    /// Bytes of changes the replica lacks: the size of the point being
    /// sent (or that failed), 0 once it arrived.
    pub bytes_behind: Option<u64>,
    /// While a point is on its way: bytes sent of the round's total.
    pub sending: Option<(u64, u64)>,
    /// Why the last point did not reach it.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub node: String,
    /// `created`, `running`, `exited` or `missing`.
    pub state: String,
    pub container_id: Option<String>,
    pub image_id: Option<String>,
    pub started_at: Option<String>,
    pub restarts: u32,
    pub exit_code: Option<i64>,
    pub last_error: Option<String>,
    /// When the node observed this, RFC 3339.
    pub observed_at: String,
}

/// A volume move in flight, as its source reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveStatus {
    pub from: String,
    pub to: String,
    /// The attempt's epoch: the destination's at the handoff.
    pub epoch: u64,
    pub attempt: u32,
    /// `pushing round N`, `freezing`, `stopping the app`, `final delta`,
    /// `handing off`, `retrying in Ns`, or `waiting for n1` when the source
    /// does not answer.
    pub phase: String,
    /// Of the current round.
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_sec: u64,
    /// Over every round so far.
    pub bytes_sent: u64,
    /// Leader's clock when the move began (milliseconds since the Unix epoch).
    pub started_ms: u64,
    pub last_error: Option<String>,
}

/// A finished move, as its source saw it: times in milliseconds since the
/// Unix epoch, on the source's clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub rounds: u32,
    /// Chunk data sent, all rounds.
    pub bytes_sent: u64,
    /// Of that, in the final round (with the app stopped).
    pub final_bytes: u64,
    /// Bytes the final scan re-read (changed, or changed too recently to
    /// trust the cache).
    pub final_scan_bytes: u64,
    /// The freeze applied here.
    pub frozen_ms: u64,
    /// The app's container no longer ran here.
    pub stopped_ms: u64,
    /// The destination's copy was complete.
    pub final_ms: u64,
    /// The handoff was committed.
    pub handed_off_ms: u64,
    pub finished_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(finished_ms: u64) -> MoveReport {
        MoveReport {
            finished_ms,
            ..MoveReport::default()
        }
    }

    #[test]
    fn the_report_that_finished_longest_ago_is_forgotten_first() {
        let o = Observations::default();
        // "a…" names sort first but finished last.
        for i in 0..MAX_MOVE_REPORTS {
            o.move_finished(&format!("app{i:03}"), report(1000 + i as u64));
        }
        o.move_finished("a-first-by-name", report(5));
        o.move_finished("zz-newest", report(10_000));
        let moved = o.snapshot().moved;
        assert_eq!(moved.len(), MAX_MOVE_REPORTS);
        assert!(!moved.contains_key("app000"), "the oldest report went");
        assert!(
            !moved.contains_key("a-first-by-name"),
            "then the next oldest"
        );
        assert!(moved.contains_key("zz-newest"));
        // A new report for a known app replaces it without evicting.
        o.move_finished("app063", report(20_000));
        assert_eq!(o.snapshot().moved.len(), MAX_MOVE_REPORTS);
    }

    #[test]
    fn a_finished_move_stops_showing_progress() {
        let o = Observations::default();
        o.move_progress("db", MoveStatus::default());
        assert!(o.snapshot().moves.contains_key("db"));
        o.move_finished("db", report(1));
        assert!(!o.snapshot().moves.contains_key("db"));
        assert!(o.snapshot().moved.contains_key("db"));
    }
}
