//! `ctl status` as a pure function: from the applied state, what every
//! member observes and every member's routing report, the line of each
//! deployed app (where it is wanted, what runs, why it waits, its move and
//! volume) and the routing lines. Gathering the inputs (read barrier,
//! asking the members) is the server's; nothing here reads a clock or the
//! network, so each rule is tested from a table.

use super::freshness::ReplicaAges;
use super::messages::{AppStatus, StatusView, VolumeView};
use super::replica_view::replica_views;
use super::routing_view::route_views;
use crate::agent::{InstanceStatus, MoveReport, MoveStatus, Observed};
use crate::config::AppSpec;
use crate::routing::RoutingReport;
use crate::state::State;

/// A member and what it observes (`None`: it did not answer).
pub type MemberObservations = (String, Option<Observed>);

/// The whole view: every deployed app (pinned or `anywhere`) by name.
pub fn status_view(
    state: &State,
    observations: &[MemberObservations],
    routing: &[(String, Option<RoutingReport>)],
    ages: &ReplicaAges,
) -> StatusView {
    let deployed = &state.deployed;
    let deployment = &deployed.config.deployment;
    let mut names: Vec<&String> = deployment
        .pinned
        .values()
        .flatten()
        .chain(&deployment.anywhere)
        .collect();
    names.sort();
    StatusView {
        config_version: deployed.version,
        apps: names
            .into_iter()
            .filter_map(|name| app_status(state, name, observations, ages))
            .collect(),
        routing: route_views(state, routing),
    }
}

/// One app's line (`None` for a name the configuration does not define).
fn app_status(
    state: &State,
    name: &str,
    observations: &[MemberObservations],
    ages: &ReplicaAges,
) -> Option<AppStatus> {
    let spec = state.deployed.config.applications.get(name)?;
    let desired_node = state.deployed.placements.get(name).cloned();
    let instances: Vec<InstanceStatus> = observations
        .iter()
        .filter_map(|(_, o)| o.as_ref()?.instances.get(name).cloned())
        .collect();
    let moving = move_in_flight(state, name, observations);
    let waiting = waiting(
        state,
        name,
        desired_node.as_deref(),
        &instances,
        observations,
        moving.as_ref(),
    );
    Some(AppStatus {
        name: name.to_string(),
        image: spec.image.to_string(),
        waiting,
        desired_node,
        instances,
        moving,
        last_move: last_move(name, observations),
        volume: volume_view(state, name, spec, observations, ages),
    })
}

/// Why the app is not running where it is wanted, the strongest reason
/// first: a move in flight (which only a freeze stops it for), a node that
/// must stop it first, then what keeps it from its own node.
fn waiting(
    state: &State,
    name: &str,
    desired_node: Option<&str>,
    instances: &[InstanceStatus],
    observations: &[MemberObservations],
    moving: Option<&MoveStatus>,
) -> Option<String> {
    if let Some(m) = moving {
        let frozen = state.moves.get(name).is_some_and(|s| s.frozen);
        return frozen.then(|| format!("stopped for the move to {}: {}", m.to, m.phase));
    }
    if let Some(holder) = state.releases.get(name) {
        return Some(format!("waiting for {holder} to stop it first"));
    }
    if let Some(why) = held_by_its_volume(state, name) {
        return Some(why);
    }
    let Some(node) = desired_node else {
        return Some("waiting for a node: none can take it now".to_string());
    };
    match observations.iter().find(|(n, _)| n == node) {
        Some((_, None)) => Some(format!("{node} did not answer")),
        Some((_, Some(o))) if o.degraded.is_some() => o
            .degraded
            .as_ref()
            .map(|d| format!("{node} is degraded: {d}")),
        _ => instances
            .iter()
            .find(|i| i.node == node && i.state != "running")
            .and_then(|i| i.last_error.clone()),
    }
}

/// An app with a volume stays placed on a node that is down (the scheduler
/// does not place it elsewhere without its data): say so.
fn held_by_its_volume(state: &State, app: &str) -> Option<String> {
    let node = state.deployed.placements.get(app)?;
    let record = state.nodes.get(node)?;
    if !(record.down && state.deployed.has_volume(app)) {
        return None;
    }
    Some(match state.failover_wait(app) {
        Some(replicas) => format!("waiting for {node}: its volume is there; {replicas}"),
        None => format!("waiting for {node}: its volume is there"),
    })
}

/// The app's move in flight: as its source reports this attempt, else what
/// the state knows of it.
fn move_in_flight(
    state: &State,
    name: &str,
    observations: &[MemberObservations],
) -> Option<MoveStatus> {
    let m = state.moves.get(name)?;
    let reported = observations
        .iter()
        .find(|(n, _)| *n == m.from)
        .and_then(|(_, o)| o.as_ref()?.moves.get(name))
        .filter(|r| r.epoch == m.epoch);
    Some(reported.cloned().unwrap_or_else(|| MoveStatus {
        from: m.from.clone(),
        to: m.to.clone(),
        epoch: m.epoch,
        attempt: m.attempt,
        phase: format!("waiting for {} to send", m.from),
        started_ms: m.started_ms,
        last_error: m.last_error.clone(),
        ..MoveStatus::default()
    }))
}

/// The last finished move of the app's volume, whichever source reports it.
fn last_move(name: &str, observations: &[MemberObservations]) -> Option<MoveReport> {
    observations
        .iter()
        .filter_map(|(_, o)| o.as_ref()?.moved.get(name))
        .max_by_key(|r| r.handed_off_ms)
        .cloned()
}

/// The app's volume: its owner and epoch from the state, its disk use as the
/// owner measured it.
fn volume_view(
    state: &State,
    name: &str,
    spec: &AppSpec,
    observations: &[MemberObservations],
    ages: &ReplicaAges,
) -> Option<VolumeView> {
    let owner = state.volumes.get(name)?;
    let (replicas, short, diverged) = match &spec.volume {
        Some(v) => replica_views(state, name, v, &owner.node, observations, ages),
        None => Default::default(),
    };
    let usage = observations
        .iter()
        .find(|(n, _)| *n == owner.node)
        .and_then(|(_, o)| o.as_ref()?.volumes.get(name));
    Some(VolumeView {
        owner: owner.node.clone(),
        epoch: owner.epoch,
        used_bytes: usage.map(|u| u.used_bytes),
        maximum_size: spec.volume.as_ref().and_then(|v| v.maximum_size),
        warning: usage.filter(|u| u.exceeded()).map(|u| {
            format!(
                "uses {} bytes, over its maximum_size of {} (enforced only on the btrfs volume backend; measured here)",
                u.used_bytes,
                u.maximum_size.unwrap_or_default()
            )
        }).or(short),
        replicas,
        diverged,
    })
}

#[cfg(test)]
mod tests;
