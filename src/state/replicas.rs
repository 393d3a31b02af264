//! Volume replicas in the replicated state: which nodes keep a copy of an
//! app's volume besides its owner, the last complete point each holds, and
//! the leader's failover to the freshest one when the owner is lost.
//!
//! Who holds a replica is a function of the state, recomputed after every
//! entry ([`State::reconcile_replicas`]): `volume.replicas − 1` live,
//! undrained members other than the owner, spread over values of the
//! `zone` label, the least loaded first, then by name. A replica that is
//! down, drained or gone is replaced at once; a node keeps its place for
//! as long as it stays eligible, so its copy stays useful.
//!
//! A point is a state the owner's volume really had at one instant. The
//! owner ships it to a replica and, once the replica says it holds it
//! complete, commits `ReplicaPoint`: from then on every member knows how
//! fresh that replica is. Points are ordered by (owner epoch, seq).
//!
//! `Failover` (the leader's alone) makes the live replica with the newest
//! committed point the owner at a fresh epoch, with the app placed there
//! and any move given up, when the owner's node is down. The new owner
//! mounts only its copy of exactly that point (`VolumeOwner::from_point`);
//! the old owner's copy is behind the new epoch and is never mounted again
//! (invariant 4); whatever it wrote after the point is kept aside as
//! diverged when it returns (`diverged`).

use super::{Command, Effect, State, VolumeOwner};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The label replicas are spread over.
pub const ZONE_LABEL: &str = "zone";

/// The replicas of one app's volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    /// Replica nodes (never the owner), each with the newest point it holds
    /// complete as committed (`None`: still seeding).
    pub nodes: BTreeMap<String, Option<ReplicaPoint>>,
    /// Former owners a failover left behind, with the epoch they owned the
    /// volume at: their copies may hold writes after the promoted point,
    /// kept aside when they return.
    #[serde(default)]
    pub diverged: BTreeMap<String, u64>,
}

/// A complete point of a volume, as committed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaPoint {
    /// The owner's epoch when it took the point.
    pub epoch: u64,
    /// The owner's count of points at that epoch, from 1.
    pub seq: u64,
    /// The volume's root hash at the point (hex).
    pub root: String,
    /// The leader's clock when the point was taken (milliseconds since the
    /// Unix epoch): shown to operators only; ages that decide anything are
    /// measured on a node's monotonic clock.
    pub taken_at_ms: u64,
    /// How long before its commit the point was taken, by the owner's
    /// monotonic clock: each node dates the point from when it saw the
    /// commit (`api::freshness`).
    #[serde(default)]
    pub age_at_commit_ms: u64,
}

impl ReplicaPoint {
    /// The order of points: by epoch, then seq.
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }
}

impl State {
    /// Replicas each volume should have now: a function of the state, run
    /// after every entry (deterministic: the same log gives the same sets).
    pub(super) fn reconcile_replicas(&mut self) {
        let wanted: BTreeMap<String, usize> = self
            .volumes
            .keys()
            .filter_map(|app| {
                let spec = self.deployed.config.applications.get(app)?;
                let copies = spec.volume.as_ref()?.replicas as usize;
                (copies > 1).then(|| (app.clone(), copies - 1))
            })
            .collect();
        // Apps that no longer ask for copies keep only their diverged
        // records (until forgotten).
        self.replicas.retain(|app, set| {
            if !wanted.contains_key(app) {
                set.nodes.clear();
            }
            !set.nodes.is_empty() || !set.diverged.is_empty() || wanted.contains_key(app)
        });
        let mut load = self.replica_load();
        for (app, want) in &wanted {
            let owner = self.volumes[app].node.clone();
            let mut set = self.replicas.remove(app).unwrap_or_default();
            let before: Vec<String> = set.nodes.keys().cloned().collect();
            set.nodes
                .retain(|node, _| *node != owner && self.replica_eligible(node));
            while set.nodes.len() > *want {
                let worst = least_fresh(&set.nodes);
                set.nodes.remove(&worst);
            }
            while set.nodes.len() < *want {
                let Some(node) = self.best_candidate(&owner, &set, &load) else {
                    break;
                };
                set.nodes.insert(node, None);
            }
            for gone in before.iter().filter(|n| !set.nodes.contains_key(*n)) {
                if let Some(n) = load.get_mut(gone) {
                    *n = n.saturating_sub(1);
                }
            }
            for node in set.nodes.keys().filter(|n| !before.contains(n)) {
                *load.entry(node.clone()).or_default() += 1;
            }
            self.replicas.insert(app.clone(), set);
        }
    }

    /// A node may hold a replica: a live, undrained member.
    fn replica_eligible(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| !n.down && !n.drained)
    }

    /// Replicas held per node.
    fn replica_load(&self) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        for set in self.replicas.values() {
            for node in set.nodes.keys() {
                *load.entry(node.clone()).or_default() += 1;
            }
        }
        load
    }

    /// The next replica node for a set owned by `owner`: a zone not yet
    /// used first, then the fewest replicas held, then the name.
    fn best_candidate(
        &self,
        owner: &str,
        set: &ReplicaSet,
        load: &BTreeMap<String, usize>,
    ) -> Option<String> {
        let zone_of = |node: &str| {
            self.nodes
                .get(node)
                .and_then(|n| n.labels.get(ZONE_LABEL))
                .cloned()
        };
        let used: BTreeSet<String> = std::iter::once(owner)
            .chain(set.nodes.keys().map(String::as_str))
            .filter_map(zone_of)
            .collect();
        self.nodes
            .keys()
            .filter(|n| *n != owner && !set.nodes.contains_key(*n) && self.replica_eligible(n))
            .min_by_key(|n| {
                let zone_taken = zone_of(n).is_none_or(|z| used.contains(&z));
                (zone_taken, load.get(*n).copied().unwrap_or(0), (*n).clone())
            })
            .cloned()
    }

    /// `ReplicaPoint`: `node` holds the owner's point `seq` at `epoch`
    /// complete. Proposed by the owner (authorization checks that).
    pub(super) fn execute_replica_point(
        &mut self,
        app: &str,
        node: &str,
        point: ReplicaPoint,
    ) -> Result<Effect, String> {
        let owner = self
            .volumes
            .get(app)
            .ok_or_else(|| format!("{app} has no volume"))?;
        if point.epoch != owner.epoch {
            return Err(format!(
                "{app}: point {} was taken at epoch {}, but the volume is at epoch {} now",
                point.seq, point.epoch, owner.epoch
            ));
        }
        let slot = self
            .replicas
            .get_mut(app)
            .and_then(|set| set.nodes.get_mut(node))
            .ok_or_else(|| format!("{node} holds no replica of {app}"))?;
        if slot
            .as_ref()
            .is_some_and(|held| held.position() >= point.position())
        {
            return Ok(Effect {
                message: format!(
                    "{app}: {node} already holds a point as new as {}",
                    point.seq
                ),
                changed: false,
            });
        }
        let message = format!(
            "{app}: {node} holds point {} of epoch {}",
            point.seq, point.epoch
        );
        *slot = Some(point);
        // A point of the owner's epoch is fresher than what a handoff's
        // former owner holds.
        if let Some(owner) = self.volumes.get_mut(app) {
            owner.handed_from = None;
        }
        // Points are routine, like placements: not operator history.
        Ok(Effect {
            message,
            changed: false,
        })
    }

    /// The live replica of `app` holding the newest committed point, if
    /// any: where a failover goes.
    pub fn freshest_replica(&self, app: &str) -> Option<(&str, &ReplicaPoint)> {
        let set = self.replicas.get(app)?;
        set.nodes
            .iter()
            .filter(|(node, _)| self.nodes.get(*node).is_some_and(|n| !n.down))
            .filter_map(|(node, point)| Some((node.as_str(), point.as_ref()?)))
            .max_by_key(|(node, point)| (point.position(), std::cmp::Reverse(*node)))
    }

    /// Where a failover of `app` goes and from what: the live replica with
    /// the newest committed point; but right after a handoff, before any
    /// point of the new epoch is committed, the former owner (when live)
    /// with its own copy — exactly what it handed off, newer than every
    /// replica's point. That copy is named as point `seq` 0 of its epoch.
    pub fn failover_source(&self, app: &str) -> Option<(String, ReplicaPoint)> {
        let owner = self.volumes.get(app)?;
        let freshest = self.freshest_replica(app);
        if let Some(handed) = &owner.handed_from {
            let live = self.nodes.get(&handed.node).is_some_and(|n| !n.down);
            let newer = freshest.is_some_and(|(_, p)| p.epoch >= owner.epoch);
            if live && !newer {
                let copy = ReplicaPoint {
                    epoch: handed.epoch,
                    seq: 0,
                    root: String::new(),
                    taken_at_ms: 0,
                    age_at_commit_ms: 0,
                };
                return Some((handed.node.clone(), copy));
            }
        }
        freshest.map(|(node, point)| (node.to_string(), point.clone()))
    }

    /// `Failover`: the owner of `app` is down; `node`, where
    /// [`failover_source`](Self::failover_source) says (`seq`), becomes the
    /// owner at a fresh epoch and the app is placed there.
    pub(super) fn execute_failover(
        &mut self,
        app: &str,
        node: &str,
        seq: u64,
    ) -> Result<Effect, String> {
        let owner = self
            .volumes
            .get(app)
            .ok_or_else(|| format!("{app} has no volume"))?
            .clone();
        if self.nodes.get(&owner.node).is_some_and(|n| !n.down) {
            return Err(format!(
                "{app}: its owner {} is not down; a live owner's volume moves instead",
                owner.node
            ));
        }
        if !self.deployed.config.deployment.is_anywhere(app) {
            return Err(format!(
                "{app} is pinned: it does not move by itself (`ctl volume recover` moves it)"
            ));
        }
        let (freshest, point) = self
            .failover_source(app)
            .ok_or_else(|| format!("{app}: no live replica holds a complete point"))?;
        if freshest != node || point.seq != seq {
            return Err(format!(
                "{app}: the newest point of a live replica is {} on {freshest}, not {seq} on {node}",
                point.seq
            ));
        }
        let epoch = owner.issued.max(owner.epoch) + 1;
        self.volumes.insert(
            app.to_string(),
            VolumeOwner {
                node: node.to_string(),
                epoch,
                adopt: false,
                issued: epoch,
                from_point: Some(point.clone()),
                handed_from: None,
            },
        );
        self.deployed
            .placements
            .insert(app.to_string(), node.to_string());
        self.moves.remove(app);
        let set = self.replicas.entry(app.to_string()).or_default();
        set.nodes.remove(node);
        set.diverged.insert(owner.node.clone(), owner.epoch);
        Ok(Effect::changed(format!(
            "{app}: failed over from {} (down) to {node} at epoch {epoch}, from its point {seq} of epoch {}",
            owner.node, point.epoch
        )))
    }

    /// The failovers the leader should propose now, one per app: the owner
    /// of an `anywhere` app with replicas is down (its grace ran out, which
    /// is longer than the node lease, so its container is already fenced)
    /// and a live replica holds a committed point. Pinned apps never move
    /// by themselves; `ctl volume recover` moves them.
    pub fn due_failovers(&self) -> Vec<Command> {
        self.volumes
            .iter()
            .filter(|(app, owner)| {
                self.deployed.config.deployment.is_anywhere(app)
                    && self.replicas.contains_key(*app)
                    && self.nodes.get(&owner.node).is_some_and(|n| n.down)
            })
            .filter_map(|(app, _)| {
                let (node, point) = self.failover_source(app)?;
                Some(Command::Failover {
                    app: app.clone(),
                    node,
                    seq: point.seq,
                })
            })
            .collect()
    }

    /// What an app whose owner is down waits for, when it has replicas.
    pub fn failover_wait(&self, app: &str) -> Option<String> {
        let set = self.replicas.get(app)?;
        if set.nodes.is_empty() {
            return None;
        }
        if !self.deployed.config.deployment.is_anywhere(app) {
            return Some(
                "pinned: it does not fail over by itself; `ctl volume recover` moves it to a replica"
                    .to_string(),
            );
        }
        match self.failover_source(app) {
            Some((node, point)) if point.seq == 0 => Some(format!(
                "failing over to {node} (the copy it handed off at epoch {})",
                point.epoch
            )),
            Some((node, point)) => Some(format!(
                "failing over to {node} (point {} of epoch {})",
                point.seq, point.epoch
            )),
            None => Some("no live replica holds a complete point yet".to_string()),
        }
    }

    /// `ForgetDiverged`: an operator is done with what `node` (every node
    /// when `None`) kept aside of `app` after a failover.
    pub(super) fn execute_forget_diverged(
        &mut self,
        app: &str,
        node: Option<&str>,
    ) -> Result<Effect, String> {
        let set = self
            .replicas
            .get_mut(app)
            .filter(|s| !s.diverged.is_empty())
            .ok_or_else(|| format!("{app} has no diverged copies"))?;
        let forgotten: Vec<String> = match node {
            Some(n) => set
                .diverged
                .remove(n)
                .map(|_| n.to_string())
                .into_iter()
                .collect(),
            None => std::mem::take(&mut set.diverged).into_keys().collect(),
        };
        if forgotten.is_empty() {
            return Err(format!(
                "{} kept no diverged copy of {app}",
                node.unwrap_or("no node")
            ));
        }
        Ok(Effect::changed(format!(
            "{app}: diverged copies on {} may be removed",
            forgotten.join(", ")
        )))
    }
}

/// The replica to drop first when a set is too big: one still seeding,
/// else the oldest point; ties by name.
fn least_fresh(nodes: &BTreeMap<String, Option<ReplicaPoint>>) -> String {
    nodes
        .iter()
        .min_by_key(|(node, point)| (point.as_ref().map(ReplicaPoint::position), (*node).clone()))
        .map(|(node, _)| node.clone())
        .expect("called on a non-empty set")
}

#[cfg(test)]
mod tests {
    use super::super::{Command, State};

    const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

    struct Log {
        state: State,
        index: u64,
    }

    impl Log {
        /// Four members; n1 and n2 in zone a, n3 and n4 in zone b.
        fn new() -> Log {
            let mut state = State::default();
            state.apply_membership(NODES.iter().map(|n| (*n, "127.0.0.1:1")));
            let mut log = Log { state, index: 0 };
            for (node, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")] {
                log.apply(Command::SetLabels {
                    node: node.into(),
                    changes: [("zone".to_string(), Some(zone.to_string()))].into(),
                })
                .unwrap();
            }
            log
        }

        fn apply(&mut self, command: Command) -> Result<String, String> {
            self.index += 1;
            self.state.apply_signed(self.index, &command).result
        }

        fn deploy(&mut self, copies: u32) {
            let apps = format!("version: 1\napplications:\n  db:\n    image: busybox\n    volume: {{mountpoint: /data, replicas: {copies}}}\n");
            let configuration = crate::config::parse(
                "version: 1\nanywhere: [db]\n",
                "deployment.yml",
                &apps,
                "application.yml",
            )
            .unwrap();
            self.apply(Command::Deploy {
                configuration,
                if_version: None,
            })
            .unwrap();
            self.apply(Command::Place {
                changes: vec![("db".into(), Some("n1".into()))],
            })
            .unwrap();
        }

        fn replicas(&self) -> Vec<&str> {
            self.state.replicas["db"]
                .nodes
                .keys()
                .map(String::as_str)
                .collect()
        }

        fn point(&mut self, node: &str, seq: u64) -> Result<String, String> {
            let epoch = self.state.volumes["db"].epoch;
            self.apply(Command::ReplicaPoint {
                app: "db".into(),
                node: node.into(),
                epoch,
                seq,
                root: format!("{seq:064x}"),
                age_ms: 250,
            })
        }

        fn down(&mut self, node: &str, down: bool) {
            self.apply(Command::SetNodeDown {
                node: node.into(),
                down,
            })
            .unwrap();
        }
    }

    #[test]
    fn replicas_spread_over_zones_and_are_replaced_when_lost_or_drained() {
        let mut log = Log::new();
        log.deploy(3);
        // Owner n1 in zone a: the first replica goes to zone b, the second
        // to the least loaded of the rest.
        assert_eq!(log.replicas(), ["n2", "n3"]);
        log.down("n3", true);
        assert_eq!(
            log.replicas(),
            ["n2", "n4"],
            "a down replica is replaced in its zone"
        );
        log.down("n3", false);
        assert_eq!(
            log.replicas(),
            ["n2", "n4"],
            "a replacement keeps its place"
        );
        log.apply(Command::SetDrained {
            node: "n2".into(),
            drained: true,
        })
        .unwrap();
        assert_eq!(log.replicas(), ["n3", "n4"]);
        log.deploy(1);
        assert!(
            !log.state.replicas.contains_key("db"),
            "one copy: no replicas"
        );
        log.state.check_invariants().unwrap();
    }

    #[test]
    fn points_come_from_the_owner_at_its_epoch_and_only_go_forward() {
        let mut log = Log::new();
        log.deploy(2);
        assert_eq!(log.replicas(), ["n3"]);
        assert!(log.point("n3", 2).unwrap().contains("n3 holds point 2"));
        log.point("n3", 1).unwrap();
        let held = log.state.replicas["db"].nodes["n3"].clone().unwrap();
        assert_eq!(
            (held.seq, held.taken_at_ms),
            (2, log.index * 1000 - 1000 - 250)
        );
        assert!(log
            .point("n2", 3)
            .unwrap_err()
            .contains("n2 holds no replica of db"));
        let stale = log.apply(Command::ReplicaPoint {
            app: "db".into(),
            node: "n3".into(),
            epoch: 0,
            seq: 9,
            root: String::new(),
            age_ms: 0,
        });
        assert!(stale.unwrap_err().contains("taken at epoch 0"));
        // Only the owner may say what its replicas hold.
        let forged = log.state.apply_batch(
            99,
            crate::ca::node_id_for(crate::state::TEST_LEADER),
            &crate::state::Batch {
                proposed_at_ms: 0,
                proposals: vec![crate::state::Proposal::signed(
                    "forged",
                    crate::state::Principal::Node { name: "n3".into() },
                    None,
                    &Command::ReplicaPoint {
                        app: "db".into(),
                        node: "n3".into(),
                        epoch: 1,
                        seq: 50,
                        root: String::new(),
                        age_ms: 0,
                    },
                )],
            },
        );
        assert!(forged.unwrap()[0]
            .result
            .as_ref()
            .unwrap_err()
            .contains("node n1 itself"));
        assert_eq!(
            log.state.replicas["db"].nodes["n3"].as_ref().unwrap().seq,
            2
        );
    }

    #[test]
    fn right_after_a_handoff_the_former_owners_copy_is_the_freshest() {
        let mut log = Log::new();
        log.deploy(2);
        let replica = log.replicas()[0].to_string();
        log.point(&replica, 4).unwrap();
        let to = ["n2", "n3", "n4"]
            .into_iter()
            .find(|n| *n != replica)
            .unwrap();
        log.apply(Command::MoveApp {
            app: "db".into(),
            node: to.into(),
        })
        .unwrap();
        let epoch = log.state.moves["db"].epoch;
        for step in [
            super::super::MoveStep::Freeze,
            super::super::MoveStep::Handoff,
        ] {
            log.apply(Command::MoveStep {
                app: "db".into(),
                epoch,
                step,
            })
            .unwrap();
        }
        assert_eq!(log.state.volumes["db"].node, to);
        log.down(to, true);
        // No point of the new epoch yet: n1 holds exactly what it handed off.
        let (node, copy) = log.state.failover_source("db").unwrap();
        assert_eq!((node.as_str(), copy.seq, copy.epoch), ("n1", 0, 1));
        assert_eq!(
            log.state.due_failovers(),
            vec![Command::Failover {
                app: "db".into(),
                node: "n1".into(),
                seq: 0,
            }]
        );
        log.apply(Command::Failover {
            app: "db".into(),
            node: "n1".into(),
            seq: 0,
        })
        .unwrap();
        let owner = &log.state.volumes["db"];
        assert_eq!(
            (owner.node.as_str(), owner.from_point.as_ref().unwrap().seq),
            ("n1", 0)
        );
        log.state.check_invariants().unwrap();
        // Once the new owner commits a point, replicas are fresher again.
        log.down(to, false);
        log.apply(Command::MoveApp {
            app: "db".into(),
            node: to.into(),
        })
        .unwrap();
        let epoch = log.state.moves["db"].epoch;
        for step in [
            super::super::MoveStep::Freeze,
            super::super::MoveStep::Handoff,
        ] {
            log.apply(Command::MoveStep {
                app: "db".into(),
                epoch,
                step,
            })
            .unwrap();
        }
        assert!(log.state.volumes["db"].handed_from.is_some());
        let replica = log.replicas()[0].to_string();
        log.point(&replica, 1).unwrap();
        assert!(log.state.volumes["db"].handed_from.is_none());
    }

    #[test]
    fn a_move_back_into_the_former_owner_makes_its_copy_no_failover_source() {
        let mut log = Log::new();
        log.deploy(2);
        let to = "n4";
        log.apply(Command::MoveApp {
            app: "db".into(),
            node: to.into(),
        })
        .unwrap();
        let epoch = log.state.moves["db"].epoch;
        for step in [
            super::super::MoveStep::Freeze,
            super::super::MoveStep::Handoff,
        ] {
            log.apply(Command::MoveStep {
                app: "db".into(),
                epoch,
                step,
            })
            .unwrap();
        }
        assert!(log.state.volumes["db"].handed_from.is_some());
        // Its copy will take this move's rounds: not a copy to fail over to.
        log.apply(Command::MoveApp {
            app: "db".into(),
            node: "n1".into(),
        })
        .unwrap();
        assert!(log.state.volumes["db"].handed_from.is_none());
        log.down(to, true);
        assert!(log
            .state
            .failover_source("db")
            .is_none_or(|(node, point)| node != "n1" || point.seq != 0));
    }

    #[test]
    fn failover_goes_to_the_freshest_live_replica_only_once_the_owner_is_down() {
        let mut log = Log::new();
        log.deploy(3);
        log.point("n2", 4).unwrap();
        log.point("n3", 5).unwrap();
        let failover = |log: &mut Log, node: &str, seq| {
            log.apply(Command::Failover {
                app: "db".into(),
                node: node.into(),
                seq,
            })
        };
        assert!(failover(&mut log, "n3", 5)
            .unwrap_err()
            .contains("owner n1 is not down"));
        log.down("n1", true);
        assert!(failover(&mut log, "n2", 4)
            .unwrap_err()
            .contains("is 5 on n3"));
        log.down("n3", true);
        // n3 is down too: n2's point is the newest live one now. (n3 was
        // replaced by n4, still seeding.)
        assert_eq!(log.replicas(), ["n2", "n4"]);
        failover(&mut log, "n2", 4).unwrap();
        let owner = &log.state.volumes["db"];
        assert_eq!((owner.node.as_str(), owner.epoch), ("n2", 2));
        assert_eq!(owner.from_point.as_ref().unwrap().seq, 4);
        assert_eq!(log.state.deployed.placements["db"], "n2");
        assert!(log.state.moves.is_empty());
        assert_eq!(log.state.replicas["db"].diverged["n1"], 1);
        assert_eq!(
            log.replicas(),
            ["n4"],
            "the new owner is no replica; n1 and n3 are down"
        );
        log.state.check_invariants().unwrap();
        // Points of the old epoch are refused now.
        assert!(log
            .apply(Command::ReplicaPoint {
                app: "db".into(),
                node: "n4".into(),
                epoch: 1,
                seq: 6,
                root: String::new(),
                age_ms: 0,
            })
            .is_err());
        log.apply(Command::ForgetDiverged {
            app: "db".into(),
            node: Some("n1".into()),
        })
        .unwrap();
        assert!(log.state.replicas["db"].diverged.is_empty());
    }
    fn failover_state(anywhere: bool, owner_down: bool, point: bool) -> State {
        let mut s = State::default();
        s.apply_membership([("n1", "a:1"), ("n2", "a:2"), ("n3", "a:3")].into_iter());
        let deployment = if anywhere {
            "version: 1\nanywhere: [db]\n"
        } else {
            "version: 1\nnodes:\n  n1: [db]\n"
        };
        s.deployed.config = crate::config::parse(
            deployment,
            "deployment.yml",
            "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, replicas: 2}\n",
            "application.yml",
        )
        .unwrap();
        s.nodes.get_mut("n1").unwrap().down = owner_down;
        s.volumes.insert(
            "db".into(),
            super::super::VolumeOwner {
                node: "n1".into(),
                epoch: 2,
                adopt: false,
                issued: 2,
                from_point: None,
                handed_from: None,
            },
        );
        let mut set = super::ReplicaSet::default();
        set.nodes.insert(
            "n2".into(),
            point.then(|| super::ReplicaPoint {
                epoch: 2,
                seq: 4,
                root: String::new(),
                taken_at_ms: 0,
                age_at_commit_ms: 0,
            }),
        );
        s.replicas.insert("db".into(), set);
        s
    }

    #[test]
    fn only_a_down_owners_anywhere_app_with_a_committed_point_fails_over() {
        let failover = Command::Failover {
            app: "db".into(),
            node: "n2".into(),
            seq: 4,
        };
        let cases = [
            // (anywhere, owner down, replica has a point) -> failover?
            (true, true, true, true),
            (true, false, true, false),
            (true, true, false, false),
            (false, true, true, false),
        ];
        for (anywhere, down, point, expected) in cases {
            let s = failover_state(anywhere, down, point);
            let got = s.due_failovers();
            assert_eq!(
                got == vec![failover.clone()],
                expected,
                "anywhere={anywhere} down={down} point={point}: {got:?}"
            );
            assert_eq!(got.is_empty(), !expected);
        }
        assert!(failover_state(true, true, false)
            .failover_wait("db")
            .unwrap()
            .contains("no live replica holds a complete point"));
        assert!(failover_state(false, true, true)
            .failover_wait("db")
            .unwrap()
            .contains("pinned"));
    }
}
