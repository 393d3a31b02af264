//! The relationships the replicated state keeps after every applied entry,
//! checked in code rather than only stated in doc comments: debug builds,
//! tests and nodes started with `--check-invariants` (the chaos suite's)
//! run [`State::check_invariants`] after each entry, and a violation stops
//! applying on that node, like an undecodable entry (invariant 8): a state
//! that broke its own rules must not drive containers and volumes.
//!
//! Each message names the values that broke the rule.

use super::State;
use std::sync::atomic::{AtomicBool, Ordering};

static ALWAYS: AtomicBool = AtomicBool::new(false);

/// `flocker node --check-invariants`: check after every entry in release
/// builds too.
pub fn check_always() {
    ALWAYS.store(true, Ordering::Relaxed);
}

/// Whether this process checks the state after every applied entry.
pub fn checking() -> bool {
    cfg!(debug_assertions) || ALWAYS.load(Ordering::Relaxed)
}

impl State {
    /// Every rule below, or the first that is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_placements()?;
        self.check_volumes_and_moves()?;
        self.check_releases()?;
        self.check_replicas()?;
        self.history
            .check_count()
            .map_err(|e| format!("history: {e}"))?;
        Ok(())
    }

    /// Every placement is of a deployed application.
    fn check_placements(&self) -> Result<(), String> {
        let apps = &self.deployed.config.applications;
        for (app, node) in &self.deployed.placements {
            if !apps.contains_key(app) {
                return Err(format!(
                    "app '{app}' is placed on {node} but is not in configuration version {}",
                    self.deployed.version
                ));
            }
        }
        Ok(())
    }

    /// Invariant 4 and the move rule: an owner's epoch never exceeds the
    /// epochs issued; a move exists exactly while an app with a volume is
    /// placed away from its owner, from the owner to the placement, at an
    /// epoch issued after the owner's.
    fn check_volumes_and_moves(&self) -> Result<(), String> {
        for (app, owner) in &self.volumes {
            if owner.epoch > owner.issued {
                return Err(format!(
                    "volume of '{app}': owner {} at epoch {} above the highest issued ({})",
                    owner.node, owner.epoch, owner.issued
                ));
            }
            let placed = self
                .deployed
                .placements
                .get(app)
                .filter(|_| self.deployed.has_volume(app));
            let away = placed.filter(|p| **p != owner.node);
            match (away, self.moves.get(app)) {
                (None, None) => {}
                (Some(to), None) => {
                    return Err(format!(
                        "'{app}' is placed on {to}, away from its volume's owner {}, with no move",
                        owner.node
                    ))
                }
                (None, Some(m)) => {
                    return Err(format!(
                        "a move of '{app}' ({} -> {}) exists while the app is placed with its owner {} (or not at all)",
                        m.from, m.to, owner.node
                    ))
                }
                (Some(to), Some(m)) => {
                    if m.from != owner.node || m.to != *to {
                        return Err(format!(
                            "the move of '{app}' goes {} -> {}, but the owner is {} and the app is placed on {to}",
                            m.from, m.to, owner.node
                        ));
                    }
                    if m.epoch <= owner.epoch || m.epoch > owner.issued {
                        return Err(format!(
                            "the move of '{app}' is at epoch {}, not above the owner's {} and at most the issued {}",
                            m.epoch, owner.epoch, owner.issued
                        ));
                    }
                }
            }
        }
        if let Some(app) = self.moves.keys().find(|a| !self.volumes.contains_key(*a)) {
            return Err(format!(
                "a move of '{app}' exists but its volume has no owner"
            ));
        }
        Ok(())
    }

    /// Release holders are members, hold deployed apps without a volume,
    /// and are not where the app is placed now (invariant 3).
    fn check_releases(&self) -> Result<(), String> {
        for (app, holder) in &self.releases {
            if !self.nodes.contains_key(holder) {
                return Err(format!(
                    "'{app}' waits for {holder} to release it, but {holder} is not a member"
                ));
            }
            if !self.deployed.config.applications.contains_key(app) {
                return Err(format!(
                    "'{app}' waits for {holder} to release it but is not deployed"
                ));
            }
            if self.deployed.has_volume(app) {
                return Err(format!(
                    "'{app}' has a volume but waits for a release by {holder} (its move's freeze does that)"
                ));
            }
            if self.deployed.placements.get(app) == Some(holder) {
                return Err(format!(
                    "'{app}' is placed on {holder}, which is also to release it"
                ));
            }
        }
        Ok(())
    }
}

impl State {
    /// Replica sets: of volumes that have an owner and ask for copies, no
    /// bigger than asked, never on the owner, on members only; no point
    /// newer than the owner's epoch; a failed-over owner's point is older
    /// than its epoch.
    fn check_replicas(&self) -> Result<(), String> {
        for (app, set) in &self.replicas {
            if set.nodes.is_empty() {
                continue;
            }
            let owner = self.volumes.get(app).ok_or_else(|| {
                format!(
                    "'{app}' has replicas on {:?} but its volume has no owner",
                    set.nodes.keys()
                )
            })?;
            let asked = self
                .deployed
                .config
                .applications
                .get(app)
                .and_then(|spec| spec.volume.as_ref())
                .map_or(1, |v| v.replicas as usize);
            if set.nodes.len() + 1 > asked {
                return Err(format!(
                    "'{app}' has {} replicas besides its owner {} but asks for {asked} copies in all",
                    set.nodes.len(),
                    owner.node
                ));
            }
            for (node, point) in &set.nodes {
                if *node == owner.node {
                    return Err(format!(
                        "'{app}': its owner {node} is also listed as a replica"
                    ));
                }
                if !self.nodes.contains_key(node) {
                    return Err(format!("'{app}': replica {node} is not a member"));
                }
                if let Some(p) = point.as_ref().filter(|p| p.epoch > owner.epoch) {
                    return Err(format!(
                        "'{app}': replica {node} holds point {} of epoch {}, newer than the owner's epoch {}",
                        p.seq, p.epoch, owner.epoch
                    ));
                }
            }
        }
        for (app, owner) in &self.volumes {
            if let Some(h) = owner
                .handed_from
                .as_ref()
                .filter(|h| h.epoch >= owner.epoch)
            {
                return Err(format!(
                    "'{app}': owner {} at epoch {} was handed the volume by {} at epoch {}, not older",
                    owner.node, owner.epoch, h.node, h.epoch
                ));
            }
            if let Some(p) = owner.from_point.as_ref().filter(|p| p.epoch >= owner.epoch) {
                return Err(format!(
                    "'{app}': owner {} at epoch {} was promoted from point {} of epoch {}, not older",
                    owner.node, owner.epoch, p.seq, p.epoch
                ));
            }
        }
        Ok(())
    }
}

/// Random command sequences through `apply`, the invariants checked after
/// each: what a leader, operators and nodes could commit in any order.
#[cfg(test)]
mod tests {
    use super::super::{Command, MoveStep, State};
    use proptest::prelude::*;

    const NODES: [&str; 3] = ["n1", "n2", "n3"];
    /// (name, has a volume)
    const APPS: [(&str, bool); 4] = [
        ("web", false),
        ("db", true),
        ("cache", false),
        ("store", true),
    ];

    #[derive(Debug, Clone)]
    enum Op {
        /// Per app: 0 absent, 1-3 pinned to that node, 4 anywhere.
        Deploy([u8; 4]),
        Place(usize, Option<usize>),
        Down(usize, bool),
        Drain(usize, bool),
        Move(usize, usize),
        /// 0 freeze, 1 handoff, 2 retry; at the move's epoch unless `stale`.
        Step(usize, u8, bool),
        Released(usize, usize),
        Recover(usize, usize),
        /// Removes n3 from the membership, or brings it back.
        Membership(bool),
        /// The owner commits a point of a replica: (app, replica, seq, stale epoch).
        Point(usize, usize, u64, bool),
        /// The leader fails an app over to a node with a point's seq.
        Failover(usize, usize, u64),
        /// Labels a node with a zone.
        Zone(usize, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<[u8; 4]>().prop_map(|a| Op::Deploy(a.map(|x| x % 5))),
            2 => (0..4usize, prop::option::of(0..3usize)).prop_map(|(a, n)| Op::Place(a, n)),
            1 => (0..3usize, any::<bool>()).prop_map(|(n, d)| Op::Down(n, d)),
            1 => (0..3usize, any::<bool>()).prop_map(|(n, d)| Op::Drain(n, d)),
            2 => (0..4usize, 0..3usize).prop_map(|(a, n)| Op::Move(a, n)),
            3 => (0..4usize, 0..3u8, any::<bool>()).prop_map(|(a, s, stale)| Op::Step(a, s, stale)),
            1 => (0..4usize, 0..3usize).prop_map(|(a, n)| Op::Released(a, n)),
            1 => (0..4usize, 0..3usize).prop_map(|(a, n)| Op::Recover(a, n)),
            1 => any::<bool>().prop_map(Op::Membership),
            3 => (0..4usize, 0..3usize, 1..6u64, any::<bool>()).prop_map(|(a, n, s, stale)| Op::Point(a, n, s, stale)),
            2 => (0..4usize, 0..3usize, 1..6u64).prop_map(|(a, n, s)| Op::Failover(a, n, s)),
            1 => (0..3usize, 0..3u8).prop_map(|(n, z)| Op::Zone(n, z)),
        ]
    }

    fn configuration(assign: &[u8; 4]) -> Option<crate::config::Configuration> {
        let mut applications = String::from("version: 1\napplications:\n");
        let mut pinned: Vec<Vec<&str>> = vec![Vec::new(); 3];
        let mut anywhere = Vec::new();
        for ((app, volume), how) in APPS.iter().zip(assign) {
            match how {
                0 => continue,
                1..=3 => pinned[usize::from(*how) - 1].push(app),
                _ => anywhere.push(*app),
            }
            applications.push_str(&format!("  {app}:\n    image: busybox\n"));
            if *volume {
                // Both volumes ask for copies; a random third of
                // deployments ask for one copy only (replicas given up).
                let copies = 1 + assign.iter().map(|x| usize::from(*x)).sum::<usize>() % 3;
                applications.push_str(&format!(
                    "    volume: {{mountpoint: /data, replicas: {copies}}}\n"
                ));
            }
        }
        let mut deployment = String::from("version: 1\nnodes:\n");
        for (node, apps) in NODES.iter().zip(&pinned) {
            if !apps.is_empty() {
                deployment.push_str(&format!("  {node}: [{}]\n", apps.join(", ")));
            }
        }
        if !anywhere.is_empty() {
            deployment.push_str(&format!("anywhere: [{}]\n", anywhere.join(", ")));
        }
        crate::config::parse(
            &deployment,
            "deployment.yml",
            &applications,
            "application.yml",
        )
        .ok()
    }

    fn command(state: &State, op: &Op) -> Option<Command> {
        let app = |a: usize| APPS[a].0.to_string();
        let node = |n: usize| NODES[n].to_string();
        Some(match op {
            Op::Deploy(assign) => Command::Deploy {
                configuration: configuration(assign)?,
                if_version: None,
            },
            Op::Place(a, n) => Command::Place {
                changes: vec![(app(*a), n.map(node))],
            },
            Op::Down(n, down) => Command::SetNodeDown {
                node: node(*n),
                down: *down,
            },
            Op::Drain(n, drained) => Command::SetDrained {
                node: node(*n),
                drained: *drained,
            },
            Op::Move(a, n) => Command::MoveApp {
                app: app(*a),
                node: node(*n),
            },
            Op::Step(a, s, stale) => {
                let epoch = state.moves.get(&app(*a)).map_or(1, |m| m.epoch);
                Command::MoveStep {
                    app: app(*a),
                    epoch: if *stale {
                        epoch.saturating_sub(1)
                    } else {
                        epoch
                    },
                    step: match s {
                        0 => MoveStep::Freeze,
                        1 => MoveStep::Handoff,
                        _ => MoveStep::Retry {
                            reason: "test".into(),
                        },
                    },
                }
            }
            Op::Released(a, n) => Command::Released {
                app: app(*a),
                node: node(*n),
            },
            Op::Recover(a, n) => Command::RecoverVolume {
                app: app(*a),
                node: node(*n),
            },
            Op::Membership(_) => return None,
            Op::Point(a, n, seq, stale) => {
                let epoch = state.volumes.get(&app(*a)).map_or(1, |o| o.epoch);
                Command::ReplicaPoint {
                    app: app(*a),
                    node: node(*n),
                    epoch: if *stale {
                        epoch.saturating_sub(1)
                    } else {
                        epoch
                    },
                    seq: *seq,
                    root: "00".repeat(32),
                    age_ms: 100,
                }
            }
            Op::Failover(a, n, seq) => Command::Failover {
                app: app(*a),
                node: node(*n),
                seq: *seq,
            },
            Op::Zone(n, z) => Command::SetLabels {
                node: node(*n),
                changes: [("zone".to_string(), Some(format!("z{z}")))].into(),
            },
        })
    }

    fn members(with_n3: bool) -> Vec<(&'static str, &'static str)> {
        let mut m = vec![("n1", "127.0.0.1:1"), ("n2", "127.0.0.1:2")];
        if with_n3 {
            m.push(("n3", "127.0.0.1:3"));
        }
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn every_applied_sequence_keeps_the_invariants(ops in prop::collection::vec(op(), 1..60)) {
            let mut state = State::default();
            state.apply_membership(members(true).into_iter());
            for (i, op) in ops.iter().enumerate() {
                let index = i as u64 + 1;
                match (op, command(&state, op)) {
                    (Op::Membership(with_n3), _) => state.apply_membership(members(*with_n3).into_iter()),
                    (_, Some(command)) => {
                        let _ = state.apply_signed(index, &command);
                    }
                    (_, None) => {}
                }
                if let Err(broken) = state.check_invariants() {
                    return Err(TestCaseError::fail(format!("after op {i} ({op:?}): {broken}")));
                }
            }
        }
    }

    #[test]
    fn a_broken_rule_is_named_with_its_values() {
        let mut state = State::default();
        state.apply_membership(members(true).into_iter());
        state.releases.insert("web".into(), "n9".into());
        let err = state.check_invariants().unwrap_err();
        assert!(err.contains("n9"), "{err}");
    }
}
