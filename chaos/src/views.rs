//! What the harness reads out of `ctl`'s JSON answers: register values from
//! `config show -o json`, the leader from `nodes -o json`, placements and
//! running instances from `status -o json`. Shapes are flocker's
//! `api::messages` types; a missing field reads as "not known".

use serde_json::Value;
use std::collections::BTreeMap;

/// `config show -o json` → (version, every app's register value).
pub fn config_values(json: &str, var: &str) -> Option<(u64, BTreeMap<String, Option<String>>)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let version = v["version"].as_u64()?;
    let apps = v["configuration"]["applications"].as_object()?;
    let values = apps
        .iter()
        .map(|(name, spec)| {
            (
                name.clone(),
                spec["environment"][var].as_str().map(str::to_string),
            )
        })
        .collect();
    Some((version, values))
}

/// `nodes -o json` → the leader every reachable member names, when they agree
/// and that member says it leads.
pub fn agreed_leader(json: &str) -> Option<String> {
    let nodes: Vec<Value> = serde_json::from_str(json).ok()?;
    let leaders: Vec<&str> = nodes
        .iter()
        .filter(|n| n["role"] == "leader")
        .filter_map(|n| n["name"].as_str())
        .collect();
    if leaders.len() != 1 {
        return None;
    }
    let all_agree = nodes
        .iter()
        .filter(|n| n["reachable"] == true)
        .all(|n| n["leader"].as_str() == Some(leaders[0]));
    all_agree.then(|| leaders[0].to_string())
}

/// `nodes -o json` → whether every member answered and all is settled:
/// reachable, one leader agreed by all, every node up and not degraded.
pub fn all_nodes_healthy(json: &str, expected: usize) -> Result<(), String> {
    let nodes: Vec<Value> =
        serde_json::from_str(json).map_err(|e| format!("bad nodes json: {e}"))?;
    if nodes.len() != expected {
        return Err(format!("{} members, expected {expected}", nodes.len()));
    }
    for n in &nodes {
        let name = n["name"].as_str().unwrap_or("?");
        if n["reachable"] != true {
            return Err(format!("{name} unreachable"));
        }
        if n["liveness"].as_str() != Some("up") {
            return Err(format!("{name} is {}", n["liveness"]));
        }
        if let Some(d) = n["degraded"].as_str() {
            return Err(format!("{name} degraded: {d}"));
        }
    }
    agreed_leader(json)
        .map(|_| ())
        .ok_or_else(|| "no agreed leader".to_string())
}

/// One app in `status -o json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub name: String,
    pub desired_node: Option<String>,
    /// Nodes with a running container of it.
    pub running_on: Vec<String>,
    pub moving: Option<(String, String, u64)>,
}

pub fn status_apps(json: &str) -> Option<Vec<AppView>> {
    let v: Value = serde_json::from_str(json).ok()?;
    let apps = v["apps"].as_array()?;
    Some(
        apps.iter()
            .map(|a| AppView {
                name: a["name"].as_str().unwrap_or_default().to_string(),
                desired_node: a["desired_node"].as_str().map(str::to_string),
                running_on: a["instances"]
                    .as_array()
                    .map(|is| {
                        is.iter()
                            .filter(|i| i["state"] == "running")
                            .filter_map(|i| i["node"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                moving: a["move"].as_object().map(|m| {
                    (
                        m.get("from")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        m.get("to")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        m.get("bytes_total").and_then(Value::as_u64).unwrap_or(0),
                    )
                }),
            })
            .collect(),
    )
}

/// `status -o json` → the nodes that hold or are about to hold `app`'s data:
/// its volume's owner, where it is placed, and both ends of a move.
pub fn data_holders(json: &str, app: &str) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(json).ok()?;
    let a = v["apps"].as_array()?.iter().find(|a| a["name"] == app)?;
    let mut out: Vec<String> = [
        &a["volume"]["owner"],
        &a["desired_node"],
        &a["move"]["from"],
        &a["move"]["to"],
    ]
    .into_iter()
    .filter_map(|n| n.as_str().map(str::to_string))
    .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// `status -o json` → the owner of `app`'s volume and its epoch.
pub fn volume_owner(json: &str, app: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let a = v["apps"].as_array()?.iter().find(|a| a["name"] == app)?;
    let owner = a["volume"]["owner"].as_str()?.to_string();
    Some((owner, a["volume"]["epoch"].as_u64()?))
}

/// `nodes -o json` → `name`'s membership ("voter", "learner") when it is a
/// member that answered the probe; `None` when it is not a member.
pub fn membership_of(json: &str, name: &str) -> Option<(String, bool)> {
    let nodes: Vec<Value> = serde_json::from_str(json).ok()?;
    let n = nodes.iter().find(|n| n["name"] == name)?;
    Some((
        n["membership"].as_str().unwrap_or("?").to_string(),
        n["reachable"] == true,
    ))
}

/// Whether every app in `expected` runs exactly once, where it is placed.
pub fn all_apps_placed_once(apps: &[AppView], expected: &[String]) -> Result<(), String> {
    for name in expected {
        let Some(app) = apps.iter().find(|a| &a.name == name) else {
            return Err(format!("{name} missing from status"));
        };
        let Some(node) = &app.desired_node else {
            return Err(format!("{name} not placed"));
        };
        if app.running_on != [node.clone()] {
            return Err(format!(
                "{name} placed on {node} but running on {:?}",
                app.running_on
            ));
        }
        if app.moving.is_some() {
            return Err(format!("{name} still moving"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_leader_and_placements() {
        let cfg = r#"{"version":4,"configuration":{"applications":{"reg1":{"environment":{"CHAOS_VALUE":"1-2"}},"ledger":{"environment":{}}}}}"#;
        let (v, vals) = config_values(cfg, "CHAOS_VALUE").unwrap();
        assert_eq!(v, 4);
        assert_eq!(vals["reg1"].as_deref(), Some("1-2"));
        assert_eq!(vals["ledger"], None);

        let nodes = r#"[{"name":"n1","role":"leader","leader":"n1","reachable":true,"liveness":"up","degraded":null},
                        {"name":"n2","role":"follower","leader":"n1","reachable":true,"liveness":"up","degraded":null}]"#;
        assert_eq!(agreed_leader(nodes).as_deref(), Some("n1"));
        assert!(all_nodes_healthy(nodes, 2).is_ok());
        assert!(all_nodes_healthy(nodes, 3).is_err());

        let status = r#"{"config_version":1,"apps":[{"name":"a","desired_node":"n2","instances":[{"node":"n2","state":"running"},{"node":"n1","state":"exited"}],"move":null}]}"#;
        let apps = status_apps(status).unwrap();
        assert_eq!(apps[0].running_on, ["n2"]);
        assert!(all_apps_placed_once(&apps, &["a".into()]).is_ok());
        assert!(all_apps_placed_once(&apps, &["b".into()]).is_err());

        let status = r#"{"apps":[{"name":"ledger","desired_node":"n2","instances":[],
            "move":{"from":"n2","to":"n3"},"volume":{"owner":"n2","epoch":4}}]}"#;
        assert_eq!(data_holders(status, "ledger").unwrap(), ["n2", "n3"]);
        assert_eq!(volume_owner(status, "ledger"), Some(("n2".into(), 4)));
        assert_eq!(volume_owner(status, "beacon"), None);
        assert_eq!(data_holders(status, "beacon"), None);
        let nodes = r#"[{"name":"n1","membership":"voter","reachable":true},
                        {"name":"n2","membership":"learner","reachable":false}]"#;
        assert_eq!(membership_of(nodes, "n1"), Some(("voter".into(), true)));
        assert_eq!(membership_of(nodes, "n2"), Some(("learner".into(), false)));
        assert_eq!(membership_of(nodes, "n3"), None);
    }
}
