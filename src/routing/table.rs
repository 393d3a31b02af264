//! Where this node sends each external port, derived from the applied state
//! alone: a pure function, so every node computes the same table from the
//! same state and the rules it installs are unit-tested without a kernel.
//!
//! A port of an app served from this node needs no rule: the engine's own
//! published port delivers it. A port of an app served from another live
//! node is forwarded there, where that node's engine delivers it. Anything
//! else (not placed, its node down, this node's lease run out) is left
//! unrouted, so a client is refused at once instead of reaching a location
//! this node cannot vouch for.

use crate::runtime::Protocol;
use crate::state::State;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Where one external port goes from this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// The app is served from this node: its engine's published port.
    Local,
    /// Forwarded to `node`, which publishes the port on `ip`.
    Forward { node: String, ip: IpAddr },
    /// Refused here, and why.
    Unrouted(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub app: String,
    pub port: u16,
    pub protocol: Protocol,
    pub target: Target,
}

/// Everything this node routes, computed from one applied state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// By (port, protocol): one app per port and protocol.
    pub routes: BTreeMap<(u16, Protocol), Route>,
    /// Other members' publish IPs: what they forward arrives from these
    /// addresses, and a node never forwards it again (no loops while two
    /// nodes briefly disagree about where an app runs).
    pub peers: BTreeSet<IpAddr>,
}

impl RouteTable {
    /// The routes that forward to another node.
    pub fn forwards(&self) -> impl Iterator<Item = (&Route, &str, IpAddr)> {
        self.routes.values().filter_map(|r| match &r.target {
            Target::Forward { node, ip } => Some((r, node.as_str(), *ip)),
            _ => None,
        })
    }
}

/// What this node knows of itself when it computes its table.
#[derive(Debug, Clone)]
pub struct Vantage<'a> {
    pub node: &'a str,
    pub publish_ip: IpAddr,
    /// Whether this node's lease is valid: without it the node may hold an
    /// old state (cut off from the cluster), and forwards nothing.
    pub lease_valid: bool,
}

/// The table for `me` from the applied `state`.
pub fn route_table(state: &State, me: &Vantage) -> RouteTable {
    let mut table = RouteTable {
        peers: state
            .nodes
            .iter()
            .filter(|(name, _)| name.as_str() != me.node)
            .filter_map(|(_, record)| record.reachable_ip()?.parse::<IpAddr>().ok())
            .filter(|ip| *ip != me.publish_ip && ip.is_ipv6() == me.publish_ip.is_ipv6())
            .collect(),
        ..RouteTable::default()
    };
    for (app, spec) in &state.deployed.config.applications {
        for port in &spec.ports {
            let key = (port.external, crate::agent::port_protocol(port));
            if let Some(first) = table.routes.get(&key) {
                // Configurations are refused when two apps claim one port;
                // one applied before that check is routed to the first app
                // by name, the same on every node.
                tracing::debug!(app, first = %first.app, port = port.external, "port claimed twice");
                continue;
            }
            let target = target_for(state, me, app);
            table.routes.insert(
                key,
                Route {
                    app: app.clone(),
                    port: port.external,
                    protocol: key.1,
                    target,
                },
            );
        }
    }
    table
}

fn target_for(state: &State, me: &Vantage, app: &str) -> Target {
    let Some(node) = state.serves_from(app) else {
        return Target::Unrouted("not placed on any node".into());
    };
    if node == me.node {
        return Target::Local;
    }
    if !me.lease_valid {
        return Target::Unrouted(
            "this node's lease ran out: it may not know where the app runs".into(),
        );
    }
    let Some(record) = state.nodes.get(node) else {
        return Target::Unrouted(format!("its node {node} is not a member"));
    };
    if record.down {
        return Target::Unrouted(format!("its node {node} is down"));
    }
    match record
        .reachable_ip()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    {
        Some(ip) if ip == me.publish_ip => Target::Unrouted(format!(
            "its node {node} publishes on this node's own address {ip}"
        )),
        // One family's NAT cannot send to the other's addresses.
        Some(ip) if ip.is_ipv6() != me.publish_ip.is_ipv6() => Target::Unrouted(format!(
            "its node {node} publishes on {ip}, another address family than this node's {}",
            me.publish_ip
        )),
        Some(ip) => Target::Forward {
            node: node.to_string(),
            ip,
        },
        None => Target::Unrouted(format!("{node} has not reported its publish IP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NodeRecord;

    fn node(ip: &str) -> NodeRecord {
        NodeRecord {
            address: format!("{ip}:7000"),
            publish_ip: Some(ip.into()),
            ..NodeRecord::default()
        }
    }

    /// n1 (10.0.0.1), n2 (10.0.0.2), n3 (10.0.0.3); `web` on n2 with port
    /// 8080, `db` on n1 with 5432, `quiet` without ports on n3.
    fn state() -> State {
        let config = crate::config::parse(
            "version: 1\nnodes:\n  n1: [db]\n  n2: [web]\n  n3: [quiet]\n",
            "deployment.yml",
            r#"version: 1
applications:
  web:
    image: busybox
    ports: [{internal: 80, external: 8080}]
  db:
    image: busybox
    ports: [{internal: 5432, external: 5432}]
  quiet:
    image: busybox
"#,
            "application.yml",
        )
        .unwrap();
        let mut s = State::default();
        for (name, ip) in [("n1", "10.0.0.1"), ("n2", "10.0.0.2"), ("n3", "10.0.0.3")] {
            s.nodes.insert(name.into(), node(ip));
        }
        s.deployed.config = config;
        for (a, n) in [("web", "n2"), ("db", "n1"), ("quiet", "n3")] {
            s.deployed.placements.insert(a.into(), n.into());
        }
        s
    }

    fn me(node: &str, ip: &str) -> Vantage<'static> {
        Vantage {
            node: Box::leak(node.to_string().into_boxed_str()),
            publish_ip: ip.parse().unwrap(),
            lease_valid: true,
        }
    }

    fn target(t: &RouteTable, port: u16) -> &Target {
        &t.routes[&(port, Protocol::Tcp)].target
    }

    #[test]
    fn every_port_is_local_forwarded_or_unrouted() {
        let s = state();
        let t = route_table(&s, &me("n1", "10.0.0.1"));
        assert_eq!(target(&t, 5432), &Target::Local);
        assert_eq!(
            target(&t, 8080),
            &Target::Forward {
                node: "n2".into(),
                ip: "10.0.0.2".parse().unwrap()
            }
        );
        assert_eq!(t.routes.len(), 2, "an app without ports has no route");
        let peers: Vec<String> = t.peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(peers, ["10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn every_node_computes_the_same_destination() {
        let s = state();
        for (n, ip) in [("n1", "10.0.0.1"), ("n3", "10.0.0.3")] {
            let t = route_table(&s, &me(n, ip));
            assert!(
                matches!(target(&t, 8080), Target::Forward { node, .. } if node == "n2"),
                "{n}"
            );
        }
        assert_eq!(
            target(&route_table(&s, &me("n2", "10.0.0.2")), 8080),
            &Target::Local
        );
    }

    #[test]
    fn nothing_is_forwarded_without_a_lease() {
        let s = state();
        let mut v = me("n1", "10.0.0.1");
        v.lease_valid = false;
        let t = route_table(&s, &v);
        assert_eq!(target(&t, 5432), &Target::Local, "local delivery goes on");
        assert!(matches!(target(&t, 8080), Target::Unrouted(why) if why.contains("lease")));
        assert_eq!(t.forwards().count(), 0);
    }

    #[test]
    fn a_down_node_or_an_unplaced_app_is_not_routed_to() {
        let mut s = state();
        s.nodes.get_mut("n2").unwrap().down = true;
        s.deployed.placements.remove("db");
        let t = route_table(&s, &me("n3", "10.0.0.3"));
        assert!(matches!(target(&t, 8080), Target::Unrouted(why) if why.contains("n2 is down")));
        assert!(matches!(target(&t, 5432), Target::Unrouted(why) if why.contains("not placed")));
    }

    #[test]
    fn an_app_with_a_volume_is_routed_to_its_owner_until_the_handoff() {
        let mut s = state();
        let spec = s.deployed.config.applications.get_mut("web").unwrap();
        spec.volume = Some(crate::config::VolumeSpec::at("/data".into()));
        // Placed on n3 (the move's destination) while n2 still owns the volume.
        s.deployed.placements.insert("web".into(), "n3".into());
        s.volumes.insert(
            "web".into(),
            crate::state::VolumeOwner {
                node: "n2".into(),
                epoch: 1,
                adopt: false,
                issued: 1,
                from_point: None,
                handed_from: None,
            },
        );
        let t = route_table(&s, &me("n1", "10.0.0.1"));
        assert!(matches!(target(&t, 8080), Target::Forward { node, .. } if node == "n2"));
        s.volumes.get_mut("web").unwrap().node = "n3".into();
        let t = route_table(&s, &me("n1", "10.0.0.1"));
        assert!(matches!(target(&t, 8080), Target::Forward { node, .. } if node == "n3"));
    }

    #[test]
    fn a_port_claimed_twice_goes_to_the_first_app_by_name() {
        let mut s = state();
        let web = s.deployed.config.applications["web"].clone();
        s.deployed.config.applications.insert("alpha".into(), web);
        s.deployed.placements.insert("alpha".into(), "n3".into());
        let t = route_table(&s, &me("n1", "10.0.0.1"));
        assert_eq!(t.routes[&(8080, Protocol::Tcp)].app, "alpha");
    }

    #[test]
    fn a_udp_port_is_its_own_route() {
        let mut s = state();
        let web = s.deployed.config.applications.get_mut("web").unwrap();
        web.ports.push(crate::config::PortMapping {
            internal: 53,
            external: 8080,
            protocol: crate::config::Protocol::Udp,
        });
        let t = route_table(&s, &me("n1", "10.0.0.1"));
        assert!(
            matches!(&t.routes[&(8080, Protocol::Udp)].target, Target::Forward { node, .. } if node == "n2")
        );
        assert!(t.routes.contains_key(&(8080, Protocol::Tcp)));
    }
}
