//! [`Observations`]: the one handle through which this node's agent, move
//! driver and usage loop record what they see, and the API reads it for
//! `ctl status`. Each method says what happened rather than which field
//! changes, so the rules (which move report to forget first) live here.

use super::{usage::VolumeUsage, Observed};
use crate::api::{InstanceStatus, MoveReport, MoveStatus};
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
