//! Where `anywhere` apps go: a pure function of the applied state, so it is
//! unit-tested directly and its decisions are reproducible. The leader runs
//! it and commits the result; nothing here talks to anyone.
//!
//! A node can take an app when it is a live, undrained member that meets the
//! app's constraints and has the memory and CPU shares left. Among those the
//! app goes where the fewest apps run (spread), then where the most memory is
//! free, then by name.

use crate::state::{NodeRecord, State};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// One placement change: app → node (`None`: no node can take it now).
pub type Change = (String, Option<String>);

/// The placement changes the leader should commit now.
///
/// Usable nodes are kept in a set ordered by preference and re-ranked as apps
/// land on them, so an app usually takes the first node it meets: placing
/// every app costs O(apps · log nodes), not O(apps · nodes). (At 1,000 nodes
/// and 50,000 apps a scan of every node per app took seconds.) Apps that fit
/// few nodes still look further down the order.
pub fn place(state: &State) -> Vec<Change> {
    let deployed = &state.deployed;
    let mut nodes = Nodes::new(state);
    // `anywhere` is sorted, like the maps: walk them together.
    let mut specs = InOrder::new(&deployed.config.applications);
    let mut placements = InOrder::new(&deployed.placements);
    let mut changes = Vec::new();
    for app in &deployed.config.deployment.anywhere {
        let Some(spec) = specs.get(app) else {
            continue;
        };
        let current = placements.get(app);
        let keep = match current.and_then(|n| state.nodes.get(n).map(|r| (n, r))) {
            None => false,
            Some((_, record)) if usable(record) => true,
            Some((placed, record)) if spec.volume.is_some() => {
                let owner = state.volumes.get(app).map(|o| o.node.as_str());
                let owner_usable = owner
                    .filter(|o| *o != placed.as_str())
                    .and_then(|o| state.nodes.get(o))
                    .is_some_and(usable);
                if owner_usable {
                    // A move's destination failed: back to where the data is.
                    let owner = owner.expect("checked above");
                    if let Some(i) = nodes.position(placed) {
                        nodes.update(i, |l| l.remove(spec.mem_limit, spec.cpu_shares));
                    }
                    if let Some(i) = nodes.position(owner) {
                        nodes.update(i, |l| l.add(spec.mem_limit, spec.cpu_shares));
                    }
                    changes.push((app.clone(), Some(owner.to_string())));
                    continue;
                }
                // Its data is on a node that is down: it waits for it. A
                // drained node's apps move, volume and all.
                record.down
            }
            Some(_) => false,
        };
        if keep {
            continue;
        }
        if let Some(i) = current.and_then(|n| nodes.position(n)) {
            nodes.update(i, |l| l.remove(spec.mem_limit, spec.cpu_shares));
        }
        let accepts = |record: &NodeRecord, load: &Load| {
            spec.constraints.iter().all(|c| c.holds(&record.labels))
                && load.fits(spec.mem_limit, spec.cpu_shares)
        };
        // A volume goes where a replica already holds most of it.
        let choice = nodes
            .freshest_replica(state, app, accepts)
            .or_else(|| nodes.first(accepts));
        if let Some(i) = choice {
            nodes.update(i, |l| l.add(spec.mem_limit, spec.cpu_shares));
        }
        let choice = choice.map(|i| nodes.names[i]);
        if choice != current.map(String::as_str) {
            changes.push((app.clone(), choice.map(str::to_string)));
        }
    }
    changes
}

/// A usable node's place in the preference order: the fewest apps, then the
/// most free memory, then the name (positions follow name order).
type Rank = (usize, Reverse<u64>, usize);

/// The nodes by position in name order, their loads, and the usable ones
/// (live, not drained) in preference order.
struct Nodes<'a> {
    names: Vec<&'a str>,
    records: Vec<&'a NodeRecord>,
    load: Vec<Load>,
    order: BTreeSet<Rank>,
}

impl<'a> Nodes<'a> {
    /// The nodes with the apps placed on them now.
    fn new(state: &'a State) -> Nodes<'a> {
        let names: Vec<&str> = state.nodes.keys().map(String::as_str).collect();
        let records: Vec<&NodeRecord> = state.nodes.values().collect();
        let mut load: Vec<Load> = records.iter().map(|r| Load::of(r)).collect();
        let mut specs = InOrder::new(&state.deployed.config.applications);
        for (app, node) in &state.deployed.placements {
            if let (Ok(i), Some(spec)) = (names.binary_search(&node.as_str()), specs.get(app)) {
                load[i].add(spec.mem_limit, spec.cpu_shares);
            }
        }
        let order = (0..records.len())
            .filter(|&i| usable(records[i]))
            .map(|i| load[i].rank(i))
            .collect();
        Nodes {
            names,
            records,
            load,
            order,
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.binary_search(&name).ok()
    }

    /// Changes node `i`'s load, keeping the order in step.
    fn update(&mut self, i: usize, change: impl FnOnce(&mut Load)) {
        let usable = usable(self.records[i]);
        if usable {
            self.order.remove(&self.load[i].rank(i));
        }
        change(&mut self.load[i]);
        if usable {
            self.order.insert(self.load[i].rank(i));
        }
    }

    /// The usable node holding the freshest replica of `app`'s volume that
    /// `accepts`, if any (an app moving off a drained owner goes there, so
    /// its move sends only what changed since that replica's point).
    fn freshest_replica(
        &self,
        state: &State,
        app: &str,
        accepts: impl Fn(&NodeRecord, &Load) -> bool,
    ) -> Option<usize> {
        let set = state.replicas.get(app)?;
        let mut held: Vec<(&String, (u64, u64))> = set
            .nodes
            .iter()
            .filter_map(|(node, point)| Some((node, point.as_ref()?.position())))
            .collect();
        held.sort_by_key(|(node, position)| (Reverse(*position), *node));
        held.into_iter()
            .filter_map(|(node, _)| self.position(node))
            .find(|&i| usable(self.records[i]) && accepts(self.records[i], &self.load[i]))
    }

    /// The most preferred usable node that `accepts`.
    fn first(&self, accepts: impl Fn(&NodeRecord, &Load) -> bool) -> Option<usize> {
        self.order
            .iter()
            .map(|&(_, _, i)| i)
            .find(|&i| accepts(self.records[i], &self.load[i]))
    }
}

fn usable(record: &NodeRecord) -> bool {
    !record.down && !record.drained
}

/// Lookups in a map by keys that mostly come in ascending order: a walk
/// along the map instead of a search from its root each time (with 50,000
/// apps the searches were most of a pass that changes nothing). A key out of
/// order is searched for.
struct InOrder<'a, V> {
    map: &'a BTreeMap<String, V>,
    rest: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, V>>,
    last: Option<&'a str>,
}

impl<'a, V> InOrder<'a, V> {
    fn new(map: &'a BTreeMap<String, V>) -> InOrder<'a, V> {
        InOrder {
            map,
            rest: map.iter().peekable(),
            last: None,
        }
    }

    fn get(&mut self, key: &str) -> Option<&'a V> {
        if self.last.is_some_and(|last| key <= last) {
            return self.map.get(key);
        }
        while let Some((k, v)) = self.rest.next_if(|(k, _)| k.as_str() <= key) {
            self.last = Some(k);
            if k == key {
                return Some(v);
            }
        }
        None
    }
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

    fn rank(&self, position: usize) -> Rank {
        (self.apps, Reverse(self.free_memory()), position)
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
    fn apps_leave_down_nodes_unless_their_volume_is_there() {
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
        // db stays with its volume (`ctl status` says why: api::status_view).
        assert_eq!(changes, vec![("web".to_string(), Some("n2".to_string()))]);
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

    #[test]
    fn a_failed_move_destination_sends_the_app_back_to_its_volume_and_drain_moves_it() {
        let mut s = state(
            &[("db", "    volume: {mountpoint: /data}\n")],
            &[("n1", 1024, &[]), ("n2", 1024, &[])],
        );
        apply(&mut s, &[("db".into(), Some("n1".into()))]);
        s.volumes.insert(
            "db".into(),
            crate::state::VolumeOwner {
                node: "n1".into(),
                epoch: 1,
                adopt: false,
                issued: 1,
                from_point: None,
                handed_from: None,
            },
        );
        // Moving to n2 (n1 still owns the volume), then n2 dies.
        s.deployed.placements.insert("db".into(), "n2".into());
        s.nodes.get_mut("n2").unwrap().down = true;
        assert_eq!(place(&s), vec![("db".to_string(), Some("n1".to_string()))]);
        // Draining the owner moves the app (and so its volume) away.
        s.deployed.placements.insert("db".into(), "n1".into());
        s.nodes.get_mut("n2").unwrap().down = false;
        s.nodes.get_mut("n1").unwrap().drained = true;
        assert_eq!(place(&s), vec![("db".to_string(), Some("n2".to_string()))]);
    }

    /// The first implementation, which scans every node for every app: the
    /// specification `place` must keep to.
    fn place_by_scan(state: &State) -> Vec<Change> {
        let deployed = &state.deployed;
        let mut load = scanned_load(state);
        let mut changes = Vec::new();
        for app in &deployed.config.deployment.anywhere {
            let Some(spec) = deployed.config.applications.get(app) else {
                continue;
            };
            let current = deployed.placements.get(app);
            let live = |r: &NodeRecord| !r.down && !r.drained;
            let keep = match current.and_then(|n| state.nodes.get(n).map(|r| (n, r))) {
                None => false,
                Some((_, record)) if live(record) => true,
                Some((placed, record)) if spec.volume.is_some() => {
                    let owner = state
                        .volumes
                        .get(app)
                        .map(|o| &o.node)
                        .filter(|o| *o != placed && state.nodes.get(*o).is_some_and(live));
                    if let Some(owner) = owner {
                        load.get_mut(placed.as_str())
                            .unwrap()
                            .remove(spec.mem_limit, spec.cpu_shares);
                        load.get_mut(owner.as_str())
                            .unwrap()
                            .add(spec.mem_limit, spec.cpu_shares);
                        changes.push((app.clone(), Some(owner.clone())));
                        continue;
                    }
                    record.down
                }
                Some(_) => false,
            };
            if keep {
                continue;
            }
            if let Some(l) = current.and_then(|n| load.get_mut(n.as_str())) {
                l.remove(spec.mem_limit, spec.cpu_shares);
            }
            let choice = scanned_choice(state, spec, &load);
            if let Some(node) = &choice {
                load.get_mut(node.as_str())
                    .unwrap()
                    .add(spec.mem_limit, spec.cpu_shares);
            }
            if choice.as_ref() != current {
                changes.push((app.clone(), choice));
            }
        }
        changes
    }

    /// Every node's load from the current placements, for `place_by_scan`.
    fn scanned_load(state: &State) -> BTreeMap<&str, Load> {
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
        load
    }

    /// `place_by_scan`'s node for an app: every live node it fits, the
    /// least loaded first.
    fn scanned_choice(
        state: &State,
        spec: &crate::config::AppSpec,
        load: &BTreeMap<&str, Load>,
    ) -> Option<String> {
        state
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
            .map(|(name, _)| name.clone())
    }

    /// A random cluster: up to 30 apps of assorted settings, up to 7 nodes
    /// (some down, drained or unregistered), random placements (some on a
    /// node that is gone) and volume owners.
    fn random_cluster(rng: &mut rand::rngs::StdRng) -> State {
        use rand::Rng;
        const EXTRAS: [&str; 7] = [
            "",
            "",
            "    mem_limit: 300M\n",
            "    cpu_shares: 1024\n",
            "    constraints: [\"disk=ssd\"]\n",
            "    constraints: [\"disk!=ssd\"]\n    mem_limit: 100M\n",
            "    volume: {mountpoint: /data}\n",
        ];
        let app_names: Vec<String> = (0..rng.random_range(1..30))
            .map(|i| format!("a{i:02}"))
            .collect();
        let apps: Vec<(&str, &str)> = app_names
            .iter()
            .map(|a| (a.as_str(), EXTRAS[rng.random_range(0..EXTRAS.len())]))
            .collect();
        let node_names: Vec<String> = (0..rng.random_range(1..8))
            .map(|i| format!("n{i}"))
            .collect();
        let nodes: Vec<TestNode> = node_names
            .iter()
            .map(|n| {
                let labels: &[(&str, &str)] = if rng.random_bool(0.5) {
                    &[("disk", "ssd")]
                } else {
                    &[]
                };
                (n.as_str(), [256, 512, 1024][rng.random_range(0..3)], labels)
            })
            .collect();
        let mut s = state(&apps, &nodes);
        for record in s.nodes.values_mut() {
            record.down = rng.random_bool(0.2);
            record.drained = rng.random_bool(0.1);
            if rng.random_bool(0.1) {
                record.capacity = None;
            }
        }
        for app in &app_names {
            if rng.random_bool(0.5) {
                let node = match rng.random_range(0..=node_names.len()) {
                    i if i == node_names.len() => "gone".to_string(),
                    i => node_names[i].clone(),
                };
                s.deployed.placements.insert(app.clone(), node);
            }
            // Some volumes are owned elsewhere (a move in flight).
            if rng.random_bool(0.3) {
                let owner = node_names[rng.random_range(0..node_names.len())].clone();
                s.volumes.insert(
                    app.clone(),
                    crate::state::VolumeOwner {
                        node: owner,
                        epoch: 1,
                        adopt: false,
                        issued: 1,
                        from_point: None,
                        handed_from: None,
                    },
                );
            }
        }
        s
    }

    #[test]
    fn chooses_as_scanning_every_node_does() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for round in 0..300 {
            let mut s = random_cluster(&mut rng);
            // Twice: from the random placements, then from the first result.
            for pass in 0..2 {
                let changes = place(&s);
                assert_eq!(changes, place_by_scan(&s), "round {round}, pass {pass}");
                apply(&mut s, &changes);
            }
        }
    }

    #[test]
    fn in_order_lookups_find_what_get_finds_in_any_order() {
        let map: BTreeMap<String, usize> = ["b", "d", "f"]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), i))
            .collect();
        let mut walk = InOrder::new(&map);
        for key in ["a", "b", "c", "d", "d", "b", "e", "f", "g", "a", "f"] {
            assert_eq!(walk.get(key), map.get(key), "{key}");
        }
    }
}
