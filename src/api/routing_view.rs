//! `ctl status`'s routing lines: for every external port, the node the
//! state serves it from and which members' installed rules agree — so an
//! operator sees when, after a move, every node sends new connections to
//! the new node. A pure function of the state and the nodes' reports.

use crate::routing::RoutingReport;
use crate::runtime::Protocol;
use crate::state::State;
use serde::{Deserialize, Serialize};

/// One external port across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub app: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Where the applied state serves the app from.
    pub serving: Option<String>,
    /// Members whose installed rules send new connections there.
    pub routed_by: Vec<String>,
    /// The other members, each with what it does instead ("refuses: …",
    /// "sends to n1", "did not answer", "routing off").
    pub elsewhere: Vec<(String, String)>,
}

/// The views for every external port of every deployed app, by app and port.
pub fn route_views(state: &State, reports: &[(String, Option<RoutingReport>)]) -> Vec<RouteView> {
    let mut views = Vec::new();
    for (app, spec) in &state.deployed.config.applications {
        let serving = state.serves_from(app).map(str::to_string);
        for port in &spec.ports {
            let mut view = RouteView {
                app: app.clone(),
                port: port.external,
                protocol: crate::agent::port_protocol(port),
                serving: serving.clone(),
                routed_by: Vec::new(),
                elsewhere: Vec::new(),
            };
            for (node, report) in reports {
                let what = match report {
                    None => Err("did not answer".to_string()),
                    Some(r) if r.mode != "iptables" => Err(format!("routing {}", r.mode)),
                    Some(r) => match r.ports.iter().find(|p| {
                        p.app == *app && p.port == view.port && p.protocol == view.protocol
                    }) {
                        None => Err("has no rule yet".to_string()),
                        Some(p) => match (&p.to, &p.refused) {
                            (Some(to), _) if Some(to) == serving.as_ref() => Ok(()),
                            (Some(to), _) => Err(format!("sends to {to}")),
                            (None, why) => {
                                Err(format!("refuses: {}", why.as_deref().unwrap_or("no route")))
                            }
                        },
                    },
                };
                match what {
                    Ok(()) => view.routed_by.push(node.clone()),
                    Err(why) => view.elsewhere.push((node.clone(), why)),
                }
            }
            views.push(view);
        }
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::PortRoute;

    fn state() -> State {
        let config = crate::config::parse(
            "version: 1\nnodes:\n  n2: [web]\n",
            "deployment.yml",
            "version: 1\napplications:\n  web:\n    image: busybox\n    ports: [{internal: 80, external: 8080}]\n",
            "application.yml",
        )
        .unwrap();
        let mut s = State::default();
        s.deployed.config = config;
        s.deployed.placements.insert("web".into(), "n2".into());
        s
    }

    fn report(to: Option<&str>) -> RoutingReport {
        RoutingReport {
            mode: "iptables".into(),
            forwarding: true,
            ports: vec![PortRoute {
                app: "web".into(),
                port: 8080,
                protocol: Protocol::Tcp,
                to: to.map(str::to_string),
                refused: to.is_none().then(|| "lease ran out".to_string()),
            }],
            ..RoutingReport::default()
        }
    }

    #[test]
    fn lists_who_routes_to_the_serving_node_and_what_the_others_do() {
        let reports = vec![
            ("n1".to_string(), Some(report(Some("n2")))),
            ("n2".to_string(), Some(report(Some("n2")))),
            ("n3".to_string(), Some(report(Some("n1")))),
            ("n4".to_string(), Some(report(None))),
            ("n5".to_string(), None),
        ];
        let views = route_views(&state(), &reports);
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!(v.serving.as_deref(), Some("n2"));
        assert_eq!(v.routed_by, ["n1", "n2"]);
        assert_eq!(
            v.elsewhere,
            [
                ("n3".to_string(), "sends to n1".to_string()),
                ("n4".to_string(), "refuses: lease ran out".to_string()),
                ("n5".to_string(), "did not answer".to_string()),
            ]
        );
    }
}
