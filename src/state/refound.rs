//! Re-founding a cluster from one surviving member's state (disaster
//! recovery): the state keeps every app, placement and volume record, the
//! node table shrinks to the survivor, and every volume gets a fresh epoch so
//! that no copy from before the loss can be mounted without a new handoff.

use super::State;
use std::collections::BTreeMap;

impl State {
    /// Reshapes the state for a new cluster whose only member is `name` at
    /// `address`. Returns each volume's epoch change (`app → (old, new)`).
    pub fn refound(&mut self, name: &str, address: &str) -> BTreeMap<String, (u64, u64)> {
        self.apply_membership([(name, address)].into_iter());
        // A move in flight cannot finish: its app stays with its volume.
        self.moves.clear();
        let mut bumped = BTreeMap::new();
        for (app, owner) in &mut self.volumes {
            let fresh = owner.issued.max(owner.epoch) + 1;
            bumped.insert(app.clone(), (owner.epoch, fresh));
            owner.epoch = fresh;
            owner.issued = fresh;
            self.deployed
                .placements
                .insert(app.clone(), owner.node.clone());
        }
        // Certificates of departed members are forgotten with them.
        let nodes = &self.nodes;
        self.certificates.retain(|node, _| nodes.contains_key(node));
        bumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::VolumeOwner;

    #[test]
    fn refounding_keeps_apps_and_bumps_every_epoch() {
        let mut s = State::default();
        s.apply_membership([("n1", "a:1"), ("n2", "a:2"), ("n3", "a:3")].into_iter());
        s.volumes.insert(
            "db".into(),
            VolumeOwner {
                node: "n3".into(),
                epoch: 4,
                adopt: false,
                issued: 6,
                from_point: None,
                handed_from: None,
            },
        );
        s.deployed.placements.insert("db".into(), "n2".into());
        s.deployed.placements.insert("web".into(), "n1".into());
        let bumped = s.refound("n3", "10.0.0.3:7000");
        assert_eq!(bumped["db"], (4, 7));
        assert_eq!(s.volumes["db"].epoch, 7);
        assert_eq!(s.volumes["db"].issued, 7);
        assert_eq!(s.deployed.placements["db"], "n3");
        assert_eq!(s.deployed.placements["web"], "n1", "kept for the scheduler");
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), vec!["n3"]);
        assert!(s.moves.is_empty());
    }
}
