//! Commands about member nodes themselves: their labels, what they
//! registered (publish IP, capacity, command kinds), and the leader's and
//! operators' marks on them (down, drained).

use super::{validate_label, Capacity, Effect, State};
use std::collections::BTreeMap;

impl State {
    pub(super) fn execute_set_labels(
        &mut self,
        node: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Effect, String> {
        if changes.is_empty() {
            return Err("no label changes given".into());
        }
        for (key, value) in changes {
            validate_label(key, value.as_deref())?;
        }
        let record = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| format!("no member node named '{node}'"))?;
        let mut said = Vec::new();
        for (key, value) in changes {
            match value {
                Some(v) => {
                    record.labels.insert(key.clone(), v.clone());
                    said.push(format!("{key}={v}"));
                }
                None => {
                    record.labels.remove(key);
                    said.push(format!("{key}-"));
                }
            }
        }
        Ok(Effect::changed(format!("{node}: {}", said.join(" "))))
    }

    pub(super) fn execute_register(
        &mut self,
        node: &str,
        publish_ip: &str,
        capacity: Capacity,
        command_kinds: u16,
    ) -> Result<Effect, String> {
        if publish_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid publish IP '{publish_ip}'"));
        }
        let record = self.member_mut(node)?;
        let changed = record.publish_ip.as_deref() != Some(publish_ip)
            || record.capacity != Some(capacity)
            || record.command_kinds != Some(command_kinds);
        record.publish_ip = Some(publish_ip.to_string());
        record.capacity = Some(capacity);
        record.command_kinds = Some(command_kinds);
        Ok(Effect {
            message: format!("{node} publishes on {publish_ip}"),
            changed,
        })
    }

    pub(super) fn execute_set_down(&mut self, node: &str, down: bool) -> Result<Effect, String> {
        let record = self.member_mut(node)?;
        let changed = record.down != down;
        record.down = down;
        if down {
            self.release_all_of(node);
        }
        Ok(Effect {
            message: format!("{node} is {}", if down { "down" } else { "up" }),
            changed,
        })
    }

    pub(super) fn execute_set_drained(
        &mut self,
        node: &str,
        drained: bool,
    ) -> Result<Effect, String> {
        let record = self.member_mut(node)?;
        let changed = record.drained != drained;
        record.drained = drained;
        let mut message = format!("{node} {}", if drained { "drained" } else { "active" });
        let deployment = &self.deployed.config.deployment;
        let pinned: Vec<&str> = self
            .deployed
            .placements
            .iter()
            .filter(|(app, at)| *at == node && !deployment.is_anywhere(app))
            .map(|(app, _)| app.as_str())
            .collect();
        if drained && !pinned.is_empty() {
            message.push_str(&format!(
                "; pinned apps still here: {} (they move only by a deployment change)",
                pinned.join(", ")
            ));
        }
        Ok(Effect { message, changed })
    }
}
