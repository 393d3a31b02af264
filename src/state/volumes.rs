//! Volume ownership changed by an operator: `ctl volume recover` gives an
//! app's volume to a live node at a fresh epoch, accepting the loss of any
//! newer data elsewhere.

use super::{Effect, State, VolumeOwner};

impl State {
    pub(super) fn execute_recover_volume(
        &mut self,
        app: &str,
        node: &str,
    ) -> Result<Effect, String> {
        if !self.deployed.has_volume(app) {
            return Err(format!("{app} is not an application with a volume"));
        }
        if self.nodes.get(node).is_none_or(|n| n.down) {
            return Err(format!("{node} is not a live member"));
        }
        let epoch = self
            .volumes
            .get(app)
            .map_or(1, |o| o.issued.max(o.epoch) + 1);
        self.volumes.insert(
            app.to_string(),
            VolumeOwner {
                node: node.to_string(),
                epoch,
                adopt: true,
                issued: epoch,
                from_point: None,
            },
        );
        self.deployed
            .placements
            .insert(app.to_string(), node.to_string());
        // Any move in flight is given up with the old owner.
        self.moves.remove(app);
        Ok(Effect::changed(format!(
            "{app}: volume recovered on {node} at epoch {epoch}, from its copy there (or empty); newer data elsewhere is given up"
        )))
    }
}
