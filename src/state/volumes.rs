//! Volume ownership changed by an operator: `ctl volume recover` gives an
//! app's volume to a live node at a fresh epoch, accepting the loss of any
//! newer data elsewhere. A node holding a replica of the volume starts from
//! its newest committed point (promoted, like a failover's); any other
//! node adopts whatever copy it has, or starts empty.

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
        let from_point = self
            .replicas
            .get_mut(app)
            .and_then(|set| set.nodes.remove(node))
            .flatten();
        if let (Some(old), Some(set)) = (self.volumes.get(app), self.replicas.get_mut(app)) {
            if from_point.is_some() && old.node != node {
                set.diverged.insert(old.node.clone(), old.epoch);
            }
        }
        let from = match &from_point {
            Some(p) => format!("from its replica's point {} of epoch {}", p.seq, p.epoch),
            None => "from its copy there (or empty)".to_string(),
        };
        self.volumes.insert(
            app.to_string(),
            VolumeOwner {
                node: node.to_string(),
                epoch,
                adopt: from_point.is_none(),
                issued: epoch,
                from_point,
                handed_from: None,
            },
        );
        self.deployed
            .placements
            .insert(app.to_string(), node.to_string());
        // Any move in flight is given up with the old owner.
        self.moves.remove(app);
        Ok(Effect::changed(format!(
            "{app}: volume recovered on {node} at epoch {epoch}, {from}; newer data elsewhere is given up"
        )))
    }
}
