//! Stop-before-start for apps without a volume: when such an app's node
//! changes while the old node is live, the new node may start it only
//! after the old one has said, through Raft, that its container is gone
//! (`Command::Released`). A node declared down releases everything at
//! once: its lease ran out long before, so its agent killed what the
//! cluster may start elsewhere (invariant 3).
//!
//! Without this, a placement change between two live nodes (a drain, an
//! operator's move, a rebalance after a partition heals) let the new node
//! start the app while the old one was still stopping it; the chaos suite
//! saw both running for up to 1.5 s. Apps with a volume get the same
//! guarantee from their move's freeze (`moves.rs`).

use super::{Effect, State};
use std::collections::BTreeMap;

impl State {
    /// After placements changed from `before`: apps without a volume that
    /// left a live node wait for it to release them; an app placed back on
    /// the node that holds it needs no release.
    pub(super) fn note_releases<'a>(
        &mut self,
        before: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        for (app, old) in before {
            let now = self.deployed.placements.get(app);
            if now == Some(old)
                || self.deployed.has_volume(app)
                || !self.deployed.config.applications.contains_key(app)
            {
                continue;
            }
            if self.nodes.get(old).is_some_and(|n| !n.down) {
                self.releases
                    .entry(app.clone())
                    .or_insert_with(|| old.clone());
            }
        }
        let placements = &self.deployed.placements;
        let applications = &self.deployed.config.applications;
        self.releases.retain(|app, holder| {
            applications.contains_key(app) && placements.get(app) != Some(holder)
        });
    }

    /// Placements as `note_releases` needs them, for the apps `changes`
    /// names (before they change).
    pub(super) fn placements_of<'a>(
        &self,
        apps: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<String, String> {
        apps.into_iter()
            .filter_map(|a| Some((a.clone(), self.deployed.placements.get(a)?.clone())))
            .collect()
    }

    /// A node declared down holds nothing any more.
    pub(super) fn release_all_of(&mut self, node: &str) {
        self.releases.retain(|_, holder| holder != node);
    }

    pub(super) fn execute_released(&mut self, app: &str, node: &str) -> Result<Effect, String> {
        match self.releases.get(app) {
            Some(holder) if holder == node => {
                self.releases.remove(app);
                Ok(Effect {
                    message: format!("{node} released {app}"),
                    changed: false,
                })
            }
            _ => Err(format!("{node} holds no release of {app}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, State};

    const APPS: &str = "version: 1\napplications:\n  web:\n    image: busybox\n  db:\n    image: busybox\n    volume: {mountpoint: /data}\n";

    fn apply(s: &mut State, index: u64, command: Command) -> Result<String, String> {
        s.apply_signed(index, &command).result
    }

    fn deploy(s: &mut State, index: u64, deployment: &str) {
        let configuration =
            crate::config::parse(deployment, "deployment.yml", APPS, "application.yml").unwrap();
        apply(
            s,
            index,
            Command::Deploy {
                configuration,
                if_version: None,
            },
        )
        .unwrap();
    }

    #[test]
    fn the_new_node_waits_until_the_old_one_released_the_app() {
        let mut s = State::default();
        s.apply_membership([("n1", "a:1"), ("n2", "a:2")].into_iter());
        deploy(&mut s, 1, "version: 1\nanywhere: [web]\n");
        apply(
            &mut s,
            2,
            Command::Place {
                changes: vec![("web".into(), Some("n1".into()))],
            },
        )
        .unwrap();
        assert_eq!(
            s.runs_on("web"),
            Some("n1"),
            "first placement needs no release"
        );
        apply(
            &mut s,
            3,
            Command::Place {
                changes: vec![("web".into(), Some("n2".into()))],
            },
        )
        .unwrap();
        assert_eq!(s.runs_on("web"), None, "nobody runs it until n1 lets go");
        assert!(apply(
            &mut s,
            4,
            Command::Released {
                app: "web".into(),
                node: "n2".into()
            }
        )
        .is_err());
        apply(
            &mut s,
            5,
            Command::Released {
                app: "web".into(),
                node: "n1".into(),
            },
        )
        .unwrap();
        assert_eq!(s.runs_on("web"), Some("n2"));
    }

    #[test]
    fn a_down_node_or_a_move_back_needs_no_release_and_volumes_use_moves() {
        let mut s = State::default();
        s.apply_membership([("n1", "a:1"), ("n2", "a:2")].into_iter());
        deploy(&mut s, 1, "version: 1\nnodes:\n  n1: [db, web]\n");
        deploy(&mut s, 2, "version: 1\nnodes:\n  n2: [db, web]\n");
        assert_eq!(s.releases.get("web").map(String::as_str), Some("n1"));
        assert!(!s.releases.contains_key("db"), "a volume moves instead");
        deploy(&mut s, 3, "version: 1\nnodes:\n  n1: [db, web]\n");
        assert!(s.releases.is_empty(), "back where it runs");
        deploy(&mut s, 4, "version: 1\nnodes:\n  n2: [db, web]\n");
        apply(
            &mut s,
            5,
            Command::SetNodeDown {
                node: "n1".into(),
                down: true,
            },
        )
        .unwrap();
        assert!(s.releases.is_empty(), "a down node's lease ran out");
        assert_eq!(s.runs_on("web"), Some("n2"));
    }
}
