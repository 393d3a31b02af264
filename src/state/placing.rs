//! Where apps run: the leader's placements of `anywhere` apps, and the
//! first owner of each new app's volume.

use super::{deploy, Effect, State, VolumeOwner};

impl State {
    pub(super) fn execute_place(
        &mut self,
        changes: &[(String, Option<String>)],
        now_ms: u64,
    ) -> Result<Effect, String> {
        let mut said = Vec::new();
        for (app, node) in changes {
            if !self.deployed.config.deployment.is_anywhere(app) {
                return Err(format!("{app} is not an `anywhere` app"));
            }
            if let Some(node) = node {
                let usable = self.nodes.get(node).is_some_and(|n| !n.down && !n.drained);
                if !usable {
                    return Err(format!("{node} cannot take apps (down, drained or gone)"));
                }
            }
        }
        let before = self.placements_of(changes.iter().map(|(app, _)| app));
        for (app, node) in changes {
            match node {
                Some(node) => {
                    self.deployed.placements.insert(app.clone(), node.clone());
                    said.push(format!("{app}→{node}"));
                }
                None => {
                    self.deployed.placements.remove(app);
                    said.push(format!("{app}→unplaced"));
                }
            }
        }
        self.assign_new_volumes();
        self.reconcile_moves(now_ms);
        self.note_releases(&before);
        // Placements are the leader's, not operator changes.
        Ok(Effect {
            message: format!("placed {}", deploy::summarize_list(&said)),
            changed: false,
        })
    }

    /// Gives every placed app with a volume and no owner yet its first owner:
    /// the node it is placed on, at epoch 1.
    pub(super) fn assign_new_volumes(&mut self) {
        let deployed = &self.deployed;
        for (app, node) in &deployed.placements {
            if deployed.has_volume(app) && !self.volumes.contains_key(app) {
                self.volumes.insert(
                    app.clone(),
                    VolumeOwner {
                        node: node.clone(),
                        epoch: 1,
                        adopt: false,
                        issued: 1,
                        from_point: None,
                        handed_from: None,
                    },
                );
            }
        }
    }
}
