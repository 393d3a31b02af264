//! A three-node flocker cluster of real processes for benchmarks.

use super::procs::{free_udp, Proc};
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest};
use crate::ca::{self, CertsDir, Role};
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const NAMES: [&str; 3] = ["n1", "n2", "n3"];

pub struct FlockerCluster {
    /// The admin's bundle (`ca.crt`, `users/admin.*`): what clients use.
    pub certs: CertsDir,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Proc>,
}

impl FlockerCluster {
    /// Starts `n1`..`n3` on loopback with `--peers` and routing off, plus
    /// `extra(name)` arguments each, each node from its own bundle (the CA
    /// key stays in `DIR/ca`).
    pub fn start(dir: &Path, extra: impl Fn(&str) -> Vec<String>) -> Result<FlockerCluster> {
        let addrs: Vec<SocketAddr> = NAMES.iter().map(|_| free_udp()).collect();
        FlockerCluster::start_at(dir, addrs, |name, mut command| {
            // These benchmarks measure deploys and failover, not routing.
            command.push("--routing=off".into());
            command.extend(extra(name));
            command
        })
    }

    /// Starts `n1`..`n3` listening on `addrs`, each node's command line
    /// (the program and its node arguments) passed through `shape(name,
    /// command)` first: to add arguments, or to run it somewhere else.
    pub fn start_at(
        dir: &Path,
        addrs: Vec<SocketAddr>,
        shape: impl Fn(&str, Vec<String>) -> Vec<String>,
    ) -> Result<FlockerCluster> {
        let ca_dir = dir.join("ca");
        let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        ca::init(
            &ca_dir,
            &names,
            &[ca::Subject::user("admin")],
            ca::Validity::default(),
        )?;
        let bundle = |name: &str| dir.join("bundles").join(name);
        for name in NAMES {
            ca::bundle(&ca_dir, Role::Node, name, &bundle(name))?;
        }
        let admin = bundle("admin");
        ca::bundle(&ca_dir, Role::User, "admin", &admin)?;
        let peers: Vec<String> = NAMES
            .iter()
            .zip(&addrs)
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        let exe = std::env::current_exe()?.display().to_string();
        let mut nodes = Vec::new();
        for (name, addr) in NAMES.iter().zip(&addrs) {
            let command = vec![
                exe.clone(),
                "node".into(),
                format!("--name={name}"),
                format!("--listen={addr}"),
                format!("--data-dir={}", dir.join(format!("data-{name}")).display()),
                format!("--certs={}", bundle(name).display()),
                format!("--peers={}", peers.join(",")),
            ];
            nodes.push(Proc::spawn(
                shape(name, command),
                dir.join(format!("{name}.log")),
            )?);
        }
        Ok(FlockerCluster {
            certs: CertsDir::new(admin),
            addrs,
            nodes,
        })
    }

    pub fn client(&self, i: usize) -> Result<Client> {
        Client::new(&self.certs, "admin", self.addrs[i])
    }

    /// The index of the leader, once every running node agrees on it.
    pub async fn leader(&self, running: &[usize], timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let client = self.client(running[0])?;
        loop {
            if let ClientReply::Nodes(views) =
                client.request(ClientRequest::Nodes { stale: false }).await
            {
                let leaders: Vec<&str> = views
                    .iter()
                    .filter(|v| v.role == "leader")
                    .map(|v| v.name.as_str())
                    .collect();
                let agreed = running.iter().all(|&i| {
                    views.iter().any(|v| {
                        v.name == NAMES[i] && v.leader.as_deref() == leaders.first().copied()
                    })
                });
                let applied: Vec<u64> = views.iter().filter_map(|v| v.applied_index).collect();
                let caught_up =
                    applied.len() == running.len() && applied.iter().all(|a| *a == applied[0]);
                if leaders.len() == 1 && agreed && caught_up {
                    return Ok(NAMES
                        .iter()
                        .position(|n| *n == leaders[0])
                        .expect("known name"));
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed, caught-up leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Commits a deployment (Flocker's two files, as text) through `via`.
    pub async fn deploy(&self, via: usize, deployment: &str, application: &str) -> Result<()> {
        let configuration =
            crate::config::parse(deployment, "deployment.yml", application, "application.yml")
                .map_err(|e| anyhow::anyhow!("bench configuration: {}", e[0]))?;
        let reply = self
            .client(via)?
            .request(ClientRequest::Write {
                request_id: format!("bench-deploy-{:x}", rand::random::<u64>()),
                command: crate::state::Command::Deploy {
                    configuration,
                    if_version: None,
                },
            })
            .await;
        if !matches!(reply, ClientReply::Written(ref o) if o.result.is_ok()) {
            bail!("deploy failed: {reply:?}");
        }
        Ok(())
    }
}
