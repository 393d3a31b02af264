//! Where `anywhere` apps go: a pure function of the applied state, so it is
//! unit-tested directly and its decisions are reproducible. The leader runs
//! it and commits the result; nothing here talks to anyone.
//!
//! A node can take an app when it is a live, undrained member that meets the
//! app's constraints and has the memory and CPU shares left. Among those the
//! app goes where the fewest apps run (spread), then where the most memory is
//! free, then by name.

use crate::state::{NodeRecord, State};
use std::collections::BTreeMap;

/// One placement change: app → node (`None`: no node can take it now).
pub type Change = (String, Option<String>);

/// Why an app is where it is, when it cannot be placed or moved.
pub fn waiting_reason(state: &State, app: &str) -> Option<String> {
    let node = state.deployed.placements.get(app)?;
    let record = state.nodes.get(node)?;
    let has_volume = state
        .deployed
        .config
        .applications
        .get(app)
        .is_some_and(|a| a.volume.is_some());
    (record.down && has_volume).then(|| format!("waiting for {node}: its volume is there"))
}

/// The placement changes the leader should commit now.
pub fn place(state: &State) -> Vec<Change> {
    let deployed = &state.deployed;
    let mut load: BTreeMap<&str, Load> = state
        .nodes
        .iter()
        .map(|(name, record)| (name.as_str(), Load::of(record)))
        .collect();
    for (app, node) in &deployed.placements {
        if let (Some(l), Some(spec)) = (
            load.get_mut(node.as_str()),
            deployed.config.applications.get(app),
        ) {
            l.add(spec.mem_limit, spec.cpu_shares);
        }
    }
    let mut changes = Vec::new();
    for app in &deployed.config.deployment.anywhere {
        let Some(spec) = deployed.config.applications.get(app) else {
            continue;
        };
        let current = deployed.placements.get(app);
        let keep = match current.and_then(|n| state.nodes.get(n).map(|r| (n, r))) {
            None => false,
            Some((_, record)) if !record.down && !record.drained => true,
            // Its data is on that node: it stays until the volume can move.
            Some(_) if spec.volume.is_some() => true,
            Some(_) => false,
        };
        if keep {
            continue;
        }
        if let Some(node) = current {
            if let Some(l) = load.get_mut(node.as_str()) {
                l.remove(spec.mem_limit, spec.cpu_shares);
            }
        }
        let choice = state
            .nodes
            .iter()
            .filter(|(_, r)| !r.down && !r.drained)
            .filter(|(_, r)| spec.constraints.iter().all(|c| c.holds(&r.labels)))
            .filter(|(name, _)| load[name.as_str()].fits(spec.mem_limit, spec.cpu_shares))
            .min_by(|(a, _), (b, _)| {
                let (la, lb) = (&load[a.as_str()], &load[b.as_str()]);
                la.apps
                    .cmp(&lb.apps)
                    .then(lb.free_memory().cmp(&la.free_memory()))
                    .then(a.cmp(b))
            })
            .map(|(name, _)| name.clone());
        if let Some(node) = &choice {
            load.get_mut(node.as_str())
                .expect("chosen among known nodes")
                .add(spec.mem_limit, spec.cpu_shares);
        }
        if choice.as_ref() != current {
            changes.push((app.clone(), choice));
        }
    }
    changes
}

/// What is placed on a node against what it offers.
struct Load {
    apps: usize,
    memory_used: u64,
    cpu_used: u64,
    capacity: Option<crate::state::Capacity>,
}

impl Load {
    fn of(record: &NodeRecord) -> Load {
        Load {
            apps: 0,
            memory_used: 0,
            cpu_used: 0,
            capacity: record.capacity,
        }
    }

    fn add(&mut self, memory: Option<u64>, cpu: Option<u64>) {
        self.apps += 1;
        self.memory_used += memory.unwrap_or(0);
        self.cpu_used += cpu.unwrap_or(0);
    }

    fn remove(&mut self, memory: Option<u64>, cpu: Option<u64>) {
        self.apps = self.apps.saturating_sub(1);
        self.memory_used = self.memory_used.saturating_sub(memory.unwrap_or(0));
        self.cpu_used = self.cpu_used.saturating_sub(cpu.unwrap_or(0));
    }

    fn free_memory(&self) -> u64 {
        self.capacity
            .map_or(0, |c| c.memory_bytes.saturating_sub(self.memory_used))
    }

    /// A node that has not reported its capacity takes only apps without limits.
    fn fits(&self, memory: Option<u64>, cpu: Option<u64>) -> bool {
        let (memory, cpu) = (memory.unwrap_or(0), cpu.unwrap_or(0));
        match self.capacity {
            None => memory == 0 && cpu == 0,
            Some(c) => {
                self.memory_used + memory <= c.memory_bytes && self.cpu_used + cpu <= c.cpu_shares
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Capacity;

    /// A node for the tests: name, memory in MiB, labels.
    type TestNode<'a> = (&'a str, u64, &'a [(&'a str, &'a str)]);

    fn state(anywhere: &[(&str, &str)], nodes: &[TestNode]) -> State {
        // anywhere: (app, extra YAML settings)
        let mut apps = String::from("version: 1\napplications:\n");
        for (app, extra) in anywhere {
            apps.push_str(&format!("  {app}:\n    image: busybox\n{extra}"));
        }
        let names: Vec<&str> = anywhere.iter().map(|(a, _)| *a).collect();
        let dep = format!("version: 1\nanywhere: [{}]\n", names.join(", "));
        let mut s = State::default();
        s.deployed.config = crate::config::parse(&dep, "d", &apps, "a").unwrap();
        for (name, mem_mib, labels) in nodes {
            s.nodes.insert(
                name.to_string(),
                NodeRecord {
                    address: "127.0.0.1:1".into(),
                    capacity: Some(Capacity {
                        memory_bytes: mem_mib << 20,
                        cpu_shares: 2048,
                    }),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                },
            );
        }
        s
    }

    fn apply(s: &mut State, changes: &[Change]) {
        for (app, node) in changes {
            match node {
                Some(n) => s.deployed.placements.insert(app.clone(), n.clone()),
                None => s.deployed.placements.remove(app),
            };
        }
    }

    #[test]
    fn spreads_and_is_stable() {
        let mut s = state(
            &[("a", ""), ("b", ""), ("c", "")],
            &[("n1", 1024, &[]), ("n2", 1024, &[]), ("n3", 1024, &[])],
        );
        let changes = place(&s);
        let nodes: std::collections::BTreeSet<_> =
            changes.iter().filter_map(|(_, n)| n.clone()).collect();
        assert_eq!(nodes.len(), 3, "one app per node: {changes:?}");
        apply(&mut s, &changes);
        assert!(place(&s).is_empty(), "placed apps stay put");
    }

    #[test]
    fn constraints_and_capacity_decide() {
        let mut s = state(
            &[
                ("ssd", "    constraints: [\"disk=ssd\"]\n"),
                ("big", "    mem_limit: 900M\n"),
                ("huge", "    mem_limit: 4G\n"),
            ],
            &[("n1", 512, &[("disk", "ssd")]), ("n2", 1024, &[])],
        );
        let changes: BTreeMap<_, _> = place(&s).into_iter().collect();
        assert_eq!(changes["ssd"].as_deref(), Some("n1"));
        assert_eq!(
            changes["big"].as_deref(),
            Some("n2"),
            "only n2 has 900M free"
        );
        assert!(
            !changes.contains_key("huge"),
            "nothing fits 4G: stays unplaced"
        );
        apply(&mut s, &changes.into_iter().collect::<Vec<_>>());
        assert!(!s.deployed.placements.contains_key("huge"));
    }

    #[test]
    fn apps_leave_down_and_drained_nodes_unless_their_volume_is_there() {
        let mut s = state(
            &[("web", ""), ("db", "    volume: {mountpoint: /data}\n")],
            &[("n1", 1024, &[]), ("n2", 1024, &[])],
        );
        apply(
            &mut s,
            &[
                ("web".into(), Some("n1".into())),
                ("db".into(), Some("n1".into())),
            ],
        );
        s.nodes.get_mut("n1").unwrap().down = true;
        let changes = place(&s);
        assert_eq!(changes, vec![("web".to_string(), Some("n2".to_string()))]);
        assert_eq!(
            waiting_reason(&s, "db").as_deref(),
            Some("waiting for n1: its volume is there")
        );
        s.nodes.get_mut("n1").unwrap().down = false;
        s.nodes.get_mut("n2").unwrap().drained = true;
        apply(&mut s, &changes);
        let back = place(&s);
        assert_eq!(
            back,
            vec![("web".to_string(), Some("n1".to_string()))],
            "drained n2 gives web back"
        );
    }
}
