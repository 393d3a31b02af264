//! Deploying a configuration: what changes (the plan), and the deployed
//! configuration with its version and where each application is placed.
//!
//! The plan is computed the same way for `ctl deploy --dry-run` and inside
//! `State::apply`, so the dry run shows exactly what the deploy would do.

use super::NodeRecord;
use crate::config::{resolve_nodes, Configuration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The configuration the operators deployed last, and placements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    /// Counts operator changes only: placements by the leader do not bump it.
    pub version: u64,
    pub config: Configuration,
    /// Application → node name, for deployed applications that have a node.
    /// Pinned applications get theirs at deploy; `anywhere` ones keep theirs
    /// across deploys and are otherwise placed by the scheduler.
    pub placements: BTreeMap<String, String>,
}

impl Deployed {
    /// Whether `app` is configured with a volume.
    pub fn has_volume(&self, app: &str) -> bool {
        self.config
            .applications
            .get(app)
            .is_some_and(|a| a.volume.is_some())
    }
}

/// An application whose node changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub app: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What a deploy would change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The version the plan starts from.
    pub from_version: u64,
    /// True when the configuration differs from the deployed one (and so the
    /// deploy makes a new version).
    pub config_changed: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Deployed before and after, with different settings.
    pub changed: Vec<String>,
    pub moved: Vec<Move>,
    /// Placements after the deploy.
    pub placements: BTreeMap<String, String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        !self.config_changed && self.moved.is_empty()
    }

    /// `+web ~db -old >cache(n1→n2)`, or `no changes`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.added.iter().map(|a| format!("+{a}")));
        parts.extend(self.changed.iter().map(|a| format!("~{a}")));
        parts.extend(self.removed.iter().map(|a| format!("-{a}")));
        parts.extend(self.moved.iter().map(|m| {
            format!(
                ">{}({}→{})",
                m.app,
                m.from.as_deref().unwrap_or("unplaced"),
                m.to.as_deref().unwrap_or("unplaced")
            )
        }));
        if parts.is_empty() {
            "no changes".into()
        } else {
            summarize_list(&parts)
        }
    }
}

/// Computes what deploying `new` over `current` would do on a cluster whose
/// members are `nodes`. Fails when a node key of the deployment matches no
/// member or more than one.
pub fn plan(
    current: &Deployed,
    nodes: &BTreeMap<String, NodeRecord>,
    new: &Configuration,
) -> Result<Plan, Vec<String>> {
    let members: Vec<(String, String)> = nodes
        .iter()
        .map(|(name, record)| (name.clone(), record.address.clone()))
        .collect();
    let mut placements = resolve_nodes(&new.deployment, &members)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    for app in &new.deployment.anywhere {
        if let Some(node) = current.placements.get(app) {
            if nodes.contains_key(node) {
                placements.insert(app.clone(), node.clone());
            }
        }
    }
    let old_deployed = deployed_apps(&current.config);
    let new_deployed = deployed_apps(new);
    let mut plan = Plan {
        from_version: current.version,
        config_changed: *new != current.config,
        ..Plan::default()
    };
    for app in &new_deployed {
        if !old_deployed.contains(app) {
            plan.added.push(app.clone());
        } else if current.config.applications.get(app) != new.applications.get(app) {
            plan.changed.push(app.clone());
        }
        let (from, to) = (current.placements.get(app), placements.get(app));
        if old_deployed.contains(app) && from != to {
            plan.moved.push(Move {
                app: app.clone(),
                from: from.cloned(),
                to: to.cloned(),
            });
        }
    }
    plan.removed = old_deployed
        .into_iter()
        .filter(|a| !new_deployed.contains(a))
        .collect();
    plan.placements = placements;
    Ok(plan)
}

/// Applications named in the deployment (pinned or anywhere).
fn deployed_apps(config: &Configuration) -> BTreeSet<String> {
    config
        .deployment
        .pinned
        .values()
        .flatten()
        .chain(&config.deployment.anywhere)
        .cloned()
        .collect()
}

/// Most items an outcome message names: messages are kept in the request
/// window and the history, so a deploy of 50,000 apps must not write 50,000
/// names into each.
pub const MAX_LISTED: usize = 20;

/// `a b c … and N more`.
pub fn summarize_list(parts: &[String]) -> String {
    let mut text = parts
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if parts.len() > MAX_LISTED {
        text.push_str(&format!(" … and {} more", parts.len() - MAX_LISTED));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut() {
        let many: Vec<String> = (0..25).map(|i| format!("+app{i}")).collect();
        let text = summarize_list(&many);
        assert!(text.starts_with("+app0 +app1"));
        assert!(text.ends_with("… and 5 more"), "{text}");
        assert_eq!(summarize_list(&many[..2]), "+app0 +app1");
    }
}
