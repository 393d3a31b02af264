//! What should run on this node, derived from the applied state alone: one
//! [`Desired`] container per application placed here, with everything Docker
//! needs (image, command, env with link variables, ports on this node's
//! publish IP, the volume bind, limits) and the labels that mark it ours.
//!
//! Pure functions of the state and the node's context: no I/O, so they are
//! unit-tested directly and every node computes them the same way.

use crate::config::{self, AppSpec, RestartPolicy};
use crate::runtime::{Bind, ContainerSpec, Labels, PortBinding, Protocol};
use crate::state::{State, VolumeOwner};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

pub const LABEL_CLUSTER: &str = "flocker.cluster";
pub const LABEL_NODE: &str = "flocker.node";
pub const LABEL_APP: &str = "flocker.app";
pub const LABEL_CONFIG_VERSION: &str = "flocker.config-version";
/// Hash of everything that defines the container except these labels: a
/// container whose hash differs from the desired one is recreated, and a new
/// configuration version that leaves an app alone leaves its container alone.
pub const LABEL_SPEC: &str = "flocker.spec";

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub cluster_id: String,
    pub node: String,
    pub publish_ip: IpAddr,
    /// Where application volumes live on this host.
    pub volumes_dir: PathBuf,
    /// The fence directory (busybox, script, lease) mounted into fenceable
    /// containers.
    pub fence_dir: PathBuf,
    /// Every node answers on every app's external ports (`--routing`):
    /// links then lead to this node's own publish IP, wherever the target
    /// runs, so a move of the target recreates nothing that links to it.
    pub routing: bool,
    /// How new volume copies are made here (`--volume-backend`).
    pub volume_backend: Option<crate::volume::Backend>,
}

impl NodeContext {
    /// The labels every container of this agent carries, and the filter that
    /// finds them: the agent touches nothing without both.
    pub fn ownership_labels(&self) -> Labels {
        Labels::from([
            (LABEL_CLUSTER.to_string(), self.cluster_id.clone()),
            (LABEL_NODE.to_string(), self.node.clone()),
        ])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub app: String,
    pub spec: ContainerSpec,
    pub spec_hash: String,
    pub restart: RestartPolicy,
    /// The cluster may start this app elsewhere (an `anywhere` app), so it
    /// runs here only while this node holds its lease.
    pub fenceable: bool,
    /// Who owns its volume, when it has one (invariant 4).
    pub volume: Option<VolumeOwner>,
}

/// Engine-wide container name: several nodes, even of several clusters,
/// may share one engine, so the name carries the cluster and the node.
pub fn container_name(cluster_id: &str, node: &str, app: &str) -> String {
    let cluster = cluster_id.get(..8).unwrap_or(cluster_id);
    format!("flocker-{cluster}-{node}-{app}")
}

/// Every application that runs on this node (see `State::runs_on`: an app
/// with a volume runs where its volume is, also while it moves), by name.
pub fn desired_containers(ctx: &NodeContext, state: &State) -> Vec<Desired> {
    let deployed = &state.deployed;
    deployed
        .placements
        .keys()
        .filter(|app| state.runs_on(app) == Some(ctx.node.as_str()))
        .filter_map(|app| {
            let spec = deployed.config.applications.get(app)?;
            Some(desired_for(ctx, state, app, spec))
        })
        .collect()
}

fn desired_for(ctx: &NodeContext, state: &State, app: &str, spec: &AppSpec) -> Desired {
    let mut env = if ctx.routing {
        link_environment_routed(ctx.publish_ip, spec)
    } else {
        link_environment(state, spec)
    };
    // The operator's own variables win over generated link variables.
    env.extend(spec.environment.clone());
    let mut container = ContainerSpec {
        name: container_name(&ctx.cluster_id, &ctx.node, app),
        image: spec.image.to_string(),
        entrypoint: None,
        command: spec.command.clone(),
        env,
        ports: spec
            .ports
            .iter()
            .map(|p| PortBinding {
                host_ip: ctx.publish_ip,
                host_port: p.external,
                container_port: p.internal,
                protocol: port_protocol(p),
            })
            .collect(),
        binds: spec
            .volume
            .iter()
            .map(|v| Bind {
                // The store's layout: `<volumes>/<app>/data` (see crate::volume).
                host_path: ctx.volumes_dir.join(app).join("data").display().to_string(),
                container_path: v.mountpoint.clone(),
                read_only: false,
            })
            .collect(),
        mem_limit: spec.mem_limit,
        cpu_shares: spec.cpu_shares,
        labels: ctx.ownership_labels(),
    };
    let fenceable = state.deployed.config.deployment.is_anywhere(app);
    if fenceable {
        container.entrypoint = Some(super::fence::fence_entrypoint());
        container.binds.push(Bind {
            host_path: ctx.fence_dir.display().to_string(),
            container_path: super::fence::FENCE_MOUNT.to_string(),
            read_only: true,
        });
    }
    container
        .labels
        .insert(LABEL_APP.to_string(), app.to_string());
    let spec_hash = hash_spec(&container);
    container
        .labels
        .insert(LABEL_SPEC.to_string(), spec_hash.clone());
    container.labels.insert(
        LABEL_CONFIG_VERSION.to_string(),
        state.deployed.version.to_string(),
    );
    Desired {
        app: app.to_string(),
        spec: container,
        spec_hash,
        restart: spec.restart_policy,
        fenceable,
        volume: spec
            .volume
            .as_ref()
            .and_then(|_| state.volumes.get(app).cloned()),
    }
}

/// The engine's protocol for a configured port.
pub fn port_protocol(port: &config::PortMapping) -> Protocol {
    match port.protocol {
        config::Protocol::Tcp => Protocol::Tcp,
        config::Protocol::Udp => Protocol::Udp,
    }
}

fn hash_spec(spec: &ContainerSpec) -> String {
    let bytes = postcard::to_stdvec(spec).expect("container specs serialize");
    blake3::hash(&bytes).to_hex()[..16].to_string()
}

/// Docker-style link variables through the routing mesh: every link leads
/// to `remote_port` on this node's own publish IP, which forwards to
/// wherever the target runs, so the variables never change with its node.
pub fn link_environment_routed(publish_ip: IpAddr, spec: &AppSpec) -> BTreeMap<String, String> {
    let host = publish_ip.to_string();
    let mut env = BTreeMap::new();
    for link in &spec.links {
        insert_link_variables(&mut env, link, &host);
    }
    env
}

/// Docker-style link variables for every link whose target is placed:
/// `DB_PORT=tcp://host:port`, `DB_PORT_5432_TCP=…`, `…_ADDR`, `…_PORT`,
/// `…_PROTO`, with `host` the node running the target and `port` its
/// published (external) port.
pub fn link_environment(state: &State, spec: &AppSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for link in &spec.links {
        let Some(host) = state
            .serves_from(&link.app)
            .and_then(|node| state.nodes.get(node))
            .and_then(|record| record.reachable_ip())
        else {
            continue;
        };
        insert_link_variables(&mut env, link, &host);
    }
    env
}

/// The variables of one link, leading to `host`.
fn insert_link_variables(
    env: &mut BTreeMap<String, String>,
    link: &crate::config::Link,
    host: &str,
) {
    let alias: String = link
        .alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let url = format!("tcp://{host}:{}", link.remote_port);
    let prefix = format!("{alias}_PORT_{}_TCP", link.local_port);
    env.entry(format!("{alias}_PORT"))
        .or_insert_with(|| url.clone());
    env.insert(format!("{prefix}_ADDR"), host.to_string());
    env.insert(format!("{prefix}_PORT"), link.remote_port.to_string());
    env.insert(format!("{prefix}_PROTO"), "tcp".to_string());
    env.insert(prefix, url);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NodeRecord;

    fn ctx(node: &str) -> NodeContext {
        NodeContext {
            cluster_id: "c1".into(),
            node: node.into(),
            publish_ip: "127.0.0.2".parse().unwrap(),
            volumes_dir: "/data/volumes".into(),
            fence_dir: "/data/fence".into(),
            routing: false,
            volume_backend: None,
        }
    }

    fn state() -> State {
        let config = crate::config::parse(
            "version: 1\nnodes:\n  n1: [web]\n  n2: [db]\n",
            "deployment.yml",
            r#"version: 1
applications:
  web:
    image: busybox
    environment: {MODE: prod}
    ports: [{internal: 80, external: 8080}]
    links: [{local_port: 5432, remote_port: 15432, alias: db}]
  db:
    image: busybox:1.36
    ports: [{internal: 5432, external: 15432}]
    volume: {mountpoint: /var/lib/db}
    mem_limit: 64M
"#,
            "application.yml",
        )
        .unwrap();
        let mut s = State::default();
        s.nodes.insert(
            "n1".into(),
            NodeRecord {
                address: "127.0.0.1:7001".into(),
                ..Default::default()
            },
        );
        s.nodes.insert(
            "n2".into(),
            NodeRecord {
                address: "127.0.0.1:7002".into(),
                publish_ip: Some("127.0.0.3".into()),
                ..Default::default()
            },
        );
        s.deployed.version = 4;
        s.deployed.placements = [("web".into(), "n1".into()), ("db".into(), "n2".into())].into();
        s.deployed.config = config;
        s.volumes.insert(
            "db".into(),
            crate::state::VolumeOwner {
                node: "n2".into(),
                epoch: 1,
                adopt: false,
                issued: 1,
                from_point: None,
                handed_from: None,
            },
        );
        s
    }

    #[test]
    fn only_apps_placed_here_with_ports_on_the_publish_ip() {
        let s = state();
        let d = desired_containers(&ctx("n1"), &s);
        assert_eq!(d.len(), 1);
        let web = &d[0].spec;
        assert_eq!(web.name, "flocker-c1-n1-web");
        assert_eq!(web.image, "busybox:latest");
        assert_eq!(web.ports[0].host_ip.to_string(), "127.0.0.2");
        assert_eq!(
            (web.ports[0].host_port, web.ports[0].container_port),
            (8080, 80)
        );
        assert_eq!(web.labels[LABEL_APP], "web");
        assert_eq!(web.labels[LABEL_NODE], "n1");
        assert_eq!(web.labels[LABEL_CONFIG_VERSION], "4");
        assert_eq!(web.env["MODE"], "prod");
        // The link points at the node running db, on its publish IP.
        assert_eq!(web.env["DB_PORT_5432_TCP"], "tcp://127.0.0.3:15432");
        assert_eq!(web.env["DB_PORT_5432_TCP_ADDR"], "127.0.0.3");
        assert_eq!(web.env["DB_PORT_5432_TCP_PORT"], "15432");
        assert_eq!(web.env["DB_PORT"], "tcp://127.0.0.3:15432");

        let db = &desired_containers(&ctx("n2"), &s)[0].spec;
        assert_eq!(db.binds[0].host_path, "/data/volumes/db/data");
        assert_eq!(db.binds[0].container_path, "/var/lib/db");
        assert_eq!(db.mem_limit, Some(64 << 20));
    }

    #[test]
    fn a_held_release_or_a_frozen_move_keeps_the_app_off_every_node() {
        let apps = |s: &State, node: &str| -> Vec<String> {
            desired_containers(&ctx(node), s)
                .into_iter()
                .map(|d| d.app)
                .collect()
        };
        let mut s = state();
        // web was placed on n2 while it ran on n1: neither runs it until n1
        // has released it.
        s.deployed.placements.insert("web".into(), "n2".into());
        s.releases.insert("web".into(), "n1".into());
        assert_eq!(apps(&s, "n1"), Vec::<String>::new());
        assert_eq!(apps(&s, "n2"), ["db"]);
        s.releases.clear();
        assert_eq!(apps(&s, "n2"), ["db", "web"]);
        // db's volume moving to n1: its owner runs it until the freeze,
        // then nobody until the handoff.
        s.deployed.placements.insert("db".into(), "n1".into());
        let mut m = crate::state::VolumeMove {
            from: "n2".into(),
            to: "n1".into(),
            epoch: 2,
            frozen: false,
            attempt: 1,
            started_ms: 0,
            last_error: None,
        };
        s.moves.insert("db".into(), m.clone());
        assert_eq!(apps(&s, "n2"), ["db", "web"]);
        m.frozen = true;
        s.moves.insert("db".into(), m);
        assert_eq!(apps(&s, "n2"), ["web"]);
        assert_eq!(apps(&s, "n1"), Vec::<String>::new());
    }

    #[test]
    fn udp_ports_are_published_as_udp() {
        let mut s = state();
        let web = s.deployed.config.applications.get_mut("web").unwrap();
        web.ports.push(crate::config::PortMapping {
            internal: 5353,
            external: 53,
            protocol: crate::config::Protocol::Udp,
        });
        let ports = &desired_containers(&ctx("n1"), &s)[0].spec.ports;
        let published: Vec<(u16, u16, Protocol)> = ports
            .iter()
            .map(|p| (p.host_port, p.container_port, p.protocol))
            .collect();
        assert_eq!(
            published,
            [(8080, 80, Protocol::Tcp), (53, 5353, Protocol::Udp)]
        );
    }

    #[test]
    fn spec_hash_ignores_the_version_but_not_the_settings() {
        let mut s = state();
        let before = desired_containers(&ctx("n1"), &s)[0].clone();
        s.deployed.version = 5;
        let bumped = desired_containers(&ctx("n1"), &s)[0].clone();
        assert_eq!(before.spec_hash, bumped.spec_hash);
        s.deployed
            .config
            .applications
            .get_mut("web")
            .unwrap()
            .environment
            .insert("MODE".into(), "debug".into());
        let changed = desired_containers(&ctx("n1"), &s)[0].clone();
        assert_ne!(before.spec_hash, changed.spec_hash);
        // db's volume moving changes web's link variables, hence its hash.
        s.deployed.placements.insert("db".into(), "n1".into());
        s.volumes.get_mut("db").unwrap().node = "n1".into();
        let relinked = desired_containers(&ctx("n1"), &s);
        assert!(relinked.iter().all(|d| d.spec_hash != changed.spec_hash));
    }

    #[test]
    fn with_routing_links_lead_to_this_node_and_survive_the_targets_move() {
        let mut s = state();
        let routed = NodeContext {
            routing: true,
            ..ctx("n1")
        };
        let before = desired_containers(&routed, &s)[0].clone();
        // This node's own publish IP, not db's node (127.0.0.3).
        assert_eq!(before.spec.env["DB_PORT_5432_TCP"], "tcp://127.0.0.2:15432");
        assert_eq!(before.spec.env["DB_PORT_5432_TCP_ADDR"], "127.0.0.2");
        assert_eq!(before.spec.env["DB_PORT_5432_TCP_PROTO"], "tcp");
        s.deployed.placements.insert("db".into(), "n3".into());
        s.volumes.get_mut("db").unwrap().node = "n3".into();
        let after = desired_containers(&routed, &s)[0].clone();
        assert_eq!(before.spec_hash, after.spec_hash, "web is not recreated");
    }
}
