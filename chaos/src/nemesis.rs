//! Carries out the schedule against the live cluster: partitions as
//! iptables rules inside the nodes' own namespaces (so clients are never
//! cut off, and deleting a namespace deletes its rules), kill -9 and
//! restart, SIGSTOP/SIGCONT, libfaketime clock offsets, lossy links
//! (iptables `statistic`) and slow links (`tbf`). Each fault is logged in
//! `nemesis.jsonl` when it starts and when it heals.
//!
//! Partition and loss rules match packets by their source, a peer node's
//! address, in the `mangle` table's PREROUTING chain of the receiving
//! node: before any NAT, so they cut what the node receives for itself
//! (Raft, volumes) and what it forwards alike — a connection a peer's
//! routing mesh forwarded, the replies to one it forwarded, a container's
//! traffic to a peer. Clients and the witness (on the bridge's own address)
//! are never matched. A slow link slows what the node sends, except to the
//! witness: a heartbeat held back in the queue would outlive its container.
//! Every node a partition leaves hearing from fewer than a majority is
//! written to `cuts.jsonl` (see [`crate::history::CutWindow`]) when the
//! partition is lifted.
//!
//! The membership nemesis (`membership.rs`) is one self-contained cycle:
//! remove a follower, keep it out, bring it back with a new certificate.
//! So is the crash nemesis (`crash.rs`): a host down with its containers
//! and its disk, then back; and the power nemeses (`power.rs`): one host
//! or all of them losing power, back on what their disks kept.
//!
//! Healing is one idempotent step, [`Nemesis::heal_all`]: flush every
//! node's rules and queueing discipline, reset every clock, continue
//! stopped nodes, put back crashed hosts' data dirs and restart killed
//! nodes. A node that exited on its own is restarted too, and that is
//! logged as a crash.

use crate::app::{BEACON, LEDGER};
use crate::cluster::Cluster;
use crate::ctl::Outcome;
use crate::history::{CutWindow, NemesisEvent};
use crate::record::Jsonl;
use crate::schedule::{Fault, Step};
use crate::topology::Topology;
use crate::views;
use crate::workload::{self, Env, Targets, NEMESIS_PROCESS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod crash;
mod membership;
mod power;
pub use membership::{judge_probe, Probe};

/// How long the nemesis looks for the leader before choosing blindly.
const FIND_LEADER: Duration = Duration::from_secs(10);
/// Where partition and loss rules go (see the module's doc).
const CUT_RULES: [&str; 3] = ["-t", "mangle", "PREROUTING"];

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub topo: Arc<Topology>,
    pub env: Arc<Env>,
    pub log: Arc<Jsonl>,
    /// `cuts.jsonl`.
    cuts: Arc<Jsonl>,
    /// Nodes cut off now: (node, since, why).
    open_cuts: Vec<(String, u64, String)>,
    /// Nodes this nemesis killed (a node missing from here died by itself).
    killed: BTreeSet<usize>,
    rng: ChaCha8Rng,
    /// Move requests in flight (each bounded by its watch).
    moves: Vec<std::thread::JoinHandle<()>>,
}

impl Nemesis {
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        topo: Arc<Topology>,
        env: Arc<Env>,
        log: Arc<Jsonl>,
        cuts: Arc<Jsonl>,
        seed: u64,
    ) -> Nemesis {
        Nemesis {
            cluster,
            topo,
            env,
            log,
            cuts,
            open_cuts: Vec::new(),
            killed: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321),
            moves: Vec::new(),
        }
    }

    fn names(&self) -> Vec<String> {
        self.topo.nodes.clone()
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, nemesis: &str, phase: &str, detail: &str, nodes: &[String]) {
        eprintln!("flocker-chaos: nemesis {nemesis} {phase}: {detail}");
        self.log.write_with(|time_ns| NemesisEvent {
            time_ns,
            nemesis: nemesis.to_string(),
            phase: phase.to_string(),
            detail: detail.to_string(),
            nodes: nodes.to_vec(),
            probe: None,
        });
    }

    /// Runs `steps` from `start`; returns early (healed) when `stop` is set.
    /// The caller's thread must be in the clients' namespace (for `ctl`).
    pub fn run(&mut self, steps: &[Step], start: Instant, stop: &dyn Fn() -> bool) {
        for step in steps {
            if !sleep_until(start + step.at, stop) {
                return;
            }
            if let Fault::Crash { owner, pick } = step.fault {
                let ended = self.crash_cycle(owner, pick, step.duration, step.with_move, stop);
                if !ended {
                    return;
                }
                continue;
            }
            if let Some(all) = match step.fault {
                Fault::Power { .. } => Some(false),
                Fault::PowerAll => Some(true),
                _ => None,
            } {
                let (owner, pick) = match step.fault {
                    Fault::Power { owner, pick } => (owner, pick),
                    _ => (false, 0),
                };
                let ended = self.power_cycle(all, owner, pick, step.duration, step.with_move, stop);
                if !ended {
                    return;
                }
                continue;
            }
            if let Fault::Member { pick, isolated } = step.fault {
                let ended = self.member_cycle(pick, isolated, step.duration, step.with_move, stop);
                self.heal_all();
                if !ended {
                    return;
                }
                continue;
            }
            let (detail, nodes) = self.begin(&step.fault);
            self.event(step.fault.nemesis(), "start", &detail, &nodes);
            if step.with_move {
                self.kick_move();
            }
            let ended = sleep_until(Instant::now() + step.duration, stop);
            self.heal_all();
            self.event(step.fault.nemesis(), "stop", &detail, &nodes);
            if !ended {
                return;
            }
        }
    }

    /// Starts `fault`; returns its description and the nodes it touches.
    fn begin(&mut self, fault: &Fault) -> (String, Vec<String>) {
        let names = self.names();
        let pick = |p: u64| p as usize % names.len();
        match fault {
            Fault::IsolateLeader => {
                let leader = self.leader_or(0);
                let others: Vec<String> = names.iter().filter(|n| **n != leader).cloned().collect();
                self.cut(std::slice::from_ref(&leader), &others, true);
                (format!("isolate leader {leader}"), vec![leader])
            }
            Fault::Halves { pick: p } => {
                let mut order = names.clone();
                let mut rng = ChaCha8Rng::seed_from_u64(*p);
                use rand::seq::SliceRandom;
                order.shuffle(&mut rng);
                let k = rng.random_range(1..order.len().max(2));
                let (a, b) = order.split_at(k.min(order.len()));
                self.cut(a, b, true);
                (format!("{} | {}", a.join(","), b.join(",")), names.clone())
            }
            Fault::Bridge { pick: p } => {
                let bridge = names[pick(*p)].clone();
                let rest: Vec<String> = names.iter().filter(|n| **n != bridge).cloned().collect();
                let (a, b) = rest.split_at(rest.len() / 2);
                self.cut(a, b, true);
                (
                    format!(
                        "{} | {bridge} | {} (bridge {bridge})",
                        a.join(","),
                        b.join(",")
                    ),
                    names.clone(),
                )
            }
            Fault::OneWay { pick: p } => {
                let deaf = names[pick(*p)].clone();
                let others: Vec<String> = names.iter().filter(|n| **n != deaf).cloned().collect();
                self.cut(std::slice::from_ref(&deaf), &others, false);
                (format!("{deaf} hears nobody (one-way)"), vec![deaf])
            }
            Fault::Kill { leader, pick: p } => {
                let target = if *leader {
                    self.leader_or(pick(*p))
                } else {
                    names[pick(*p)].clone()
                };
                if let Some(i) = self.index(&target) {
                    self.cluster().kill(i);
                    self.killed.insert(i);
                }
                let role = if *leader { "leader " } else { "" };
                (format!("kill -9 {role}{target}"), vec![target])
            }
            Fault::PauseLeader => {
                let leader = self.leader_or(0);
                if let Some(i) = self.index(&leader) {
                    if let Err(e) = self.cluster().pause(i, true) {
                        eprintln!("flocker-chaos: SIGSTOP {leader}: {e:#}");
                    }
                }
                (format!("SIGSTOP leader {leader}"), vec![leader])
            }
            Fault::Clock { pick: p, offset_s } => {
                let target = names[pick(*p)].clone();
                let enabled = self.cluster().faketime_enabled();
                if let Some(i) = self.index(&target) {
                    if let Err(e) = self.cluster().set_clock_offset(i, *offset_s) {
                        eprintln!("flocker-chaos: clock of {target}: {e:#}");
                    }
                }
                let note = if enabled {
                    ""
                } else {
                    " (no libfaketime: no effect)"
                };
                (
                    format!("{target} wall clock {offset_s:+} s{note}"),
                    vec![target],
                )
            }
            Fault::Lossy { pick: p, percent } => {
                let target = names[pick(*p)].clone();
                let probability = format!("{:.2}", f64::from(*percent) / 100.0);
                for (i, peer) in names.iter().enumerate() {
                    if *peer == target {
                        continue;
                    }
                    let ip = self.topo.slot.node_ip(i).to_string();
                    let r = self.add_cut_rule(
                        &target,
                        &[
                            "-s",
                            &ip,
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                            &probability,
                            "-j",
                            "DROP",
                        ],
                    );
                    if let Err(e) = r {
                        eprintln!("flocker-chaos: lossy link: {e:#}");
                    }
                }
                (
                    format!("{target} drops {percent}% from its peers"),
                    vec![target],
                )
            }
            Fault::Slow { pick: p, kbit } => {
                let target = names[pick(*p)].clone();
                let r = self.slow_link(&target, *kbit);
                if let Err(e) = r {
                    eprintln!("flocker-chaos: slow link: {e:#}");
                }
                (
                    format!("{target} sends at {kbit} kbit/s (tbf)"),
                    vec![target],
                )
            }
            Fault::StaleReadTrap => {
                let leader = self.leader_or(0);
                let lonely = names
                    .iter()
                    .find(|n| **n != leader)
                    .cloned()
                    .unwrap_or_else(|| names[0].clone());
                let others: Vec<String> = names.iter().filter(|n| **n != lonely).cloned().collect();
                self.cut(std::slice::from_ref(&lonely), &others, true);
                self.env.set_targets(Targets {
                    reads_via: Some(lonely.clone()),
                    writes_avoid: Some(lonely.clone()),
                });
                (
                    format!("isolate {lonely} from its peers (not the clients); reads through it"),
                    vec![lonely],
                )
            }
            // Run by `member_cycle` and `crash_cycle`, never begun here.
            Fault::Member { .. } => (String::from("membership"), Vec::new()),
            Fault::Crash { .. } => (String::from("crash"), Vec::new()),
            Fault::Power { .. } | Fault::PowerAll => (String::from("power"), Vec::new()),
            Fault::FencingTrap => {
                let node = self
                    .placement_of(BEACON)
                    .unwrap_or_else(|| names[0].clone());
                let others: Vec<String> = names.iter().filter(|n| **n != node).cloned().collect();
                self.cut(std::slice::from_ref(&node), &others, true);
                (
                    format!("isolate {node} (running {BEACON}) from its peers"),
                    vec![node],
                )
            }
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.topo.nodes.iter().position(|n| n == name)
    }

    /// Drops traffic from every node of `b` at every node of `a` and, when
    /// `both`, the other way too; opens a cut window for every node that
    /// then hears from fewer than a majority.
    fn cut(&mut self, a: &[String], b: &[String], both: bool) {
        let mut drops: Vec<(String, String)> = Vec::new();
        for x in a {
            for y in b {
                drops.push((x.clone(), y.clone()));
                if both {
                    drops.push((y.clone(), x.clone()));
                }
            }
        }
        for (node, from) in &drops {
            let Some(i) = self.index(from) else {
                continue;
            };
            let ip = self.topo.slot.node_ip(i).to_string();
            if let Err(e) = self.add_cut_rule(node, &["-s", &ip, "-j", "DROP"]) {
                eprintln!("flocker-chaos: partition: {e:#}");
            }
        }
        let names = self.names();
        let why = format!(
            "{} cut from {}{}",
            a.join(","),
            b.join(","),
            if both { "" } else { " (one-way)" }
        );
        let now = self.env.clock.now_ns();
        for node in cut_off(&names, &drops) {
            self.open_cut(&node, now, &why);
        }
    }

    /// Appends a rule to `node`'s partition and loss chain.
    fn add_cut_rule(&self, node: &str, rule: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["iptables", CUT_RULES[0], CUT_RULES[1], "-A", CUT_RULES[2]];
        args.extend_from_slice(rule);
        self.topo.in_node(node, &args)
    }

    /// Limits what `node` sends to `kbit` (tbf), except to the witness: an
    /// htb root whose default class holds the tbf and whose other class,
    /// unshaped, takes the bridge address (htb, not prio: kernels without
    /// `sch_prio` are common). Without htb, everything is shaped, as
    /// before, and stderr says so.
    fn slow_link(&self, node: &str, kbit: u32) -> anyhow::Result<()> {
        let rate = format!("{kbit}kbit");
        let witness = format!("{}/32", self.topo.slot.gateway());
        let tc = |args: &[&str]| {
            let mut cmd = vec!["tc"];
            cmd.extend_from_slice(args);
            self.topo.in_node(node, &cmd)
        };
        let tbf = ["tbf", "rate", &rate, "burst", "16kbit", "latency", "500ms"];
        let spared = tc(&[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "20",
        ])
        .and_then(|_| {
            for class in ["1:10", "1:20"] {
                tc(&[
                    "class", "add", "dev", "eth0", "parent", "1:", "classid", class, "htb", "rate",
                    "1gbit", "quantum", "1514",
                ])?;
            }
            let mut leaf = vec![
                "qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:",
            ];
            leaf.extend_from_slice(&tbf);
            tc(&leaf)?;
            tc(&[
                "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "dst", &witness, "flowid", "1:10",
            ])
        });
        if let Err(e) = spared {
            eprintln!("flocker-chaos: slow link sparing the witness: {e:#}; shaping everything");
            let _ = tc(&["qdisc", "del", "dev", "eth0", "root"]);
            let mut root = vec!["qdisc", "add", "dev", "eth0", "root"];
            root.extend_from_slice(&tbf);
            tc(&root)?;
        }
        Ok(())
    }

    /// `node` is cut off from `since` (a no-op when it already is).
    fn open_cut(&mut self, node: &str, since: u64, why: &str) {
        if self.open_cuts.iter().any(|(n, _, _)| n == node) {
            return;
        }
        self.open_cuts
            .push((node.to_string(), since, why.to_string()));
    }

    /// Ends the cut windows of `node` (every node: `None`) now, writing them.
    fn close_cuts(&mut self, node: Option<&str>) {
        let now = self.env.clock.now_ns();
        let (closing, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open_cuts)
            .into_iter()
            .partition(|(n, _, _)| node.is_none_or(|x| x == n));
        self.open_cuts = open;
        for (node, from_ns, why) in closing {
            self.cuts.write_with(|_| CutWindow {
                node,
                from_ns,
                to_ns: now,
                why,
            });
        }
    }

    /// Flushes every node's partition and loss rules (closing the cut
    /// windows first: from here on traffic may pass).
    fn lift_partitions(&mut self) {
        self.close_cuts(None);
        for node in self.names() {
            let _ = self.topo.in_node(
                &node,
                &["iptables", CUT_RULES[0], CUT_RULES[1], "-F", CUT_RULES[2]],
            );
        }
    }

    /// Undoes every fault; safe to call at any time, any number of times.
    pub fn heal_all(&mut self) {
        self.env.set_targets(Targets::default());
        self.lift_partitions();
        for node in self.names() {
            // Fails when there is no tbf: that is fine.
            let _ = crate::sh::quiet(&[
                "ip",
                "netns",
                "exec",
                &self.topo.slot.node_ns(&node),
                "tc",
                "qdisc",
                "del",
                "dev",
                "eth0",
                "root",
            ]);
        }
        let n = self.names().len();
        for i in 0..n {
            let name = self.names()[i].clone();
            let mut cluster = self.cluster();
            let _ = cluster.set_clock_offset(i, 0);
            if cluster.pid(i).is_some() {
                let _ = cluster.pause(i, false);
            }
            match cluster.restore_data(i) {
                Ok(true) => eprintln!("flocker-chaos: {name}'s data dir is back"),
                Ok(false) => {}
                Err(e) => eprintln!("flocker-chaos: {e:#}"),
            }
            if !cluster.is_running(i) {
                let crashed = !self.killed.contains(&i);
                if crashed {
                    cluster.kill(i); // reap
                }
                drop(cluster);
                if crashed {
                    self.event(
                        "kill",
                        "stop",
                        &format!("{name} had exited by itself: restarted"),
                        std::slice::from_ref(&name),
                    );
                }
                if let Err(e) = self.cluster().start(&self.topo, i) {
                    eprintln!("flocker-chaos: restarting {name}: {e:#}");
                }
                self.killed.remove(&i);
            }
        }
    }

    /// The leader the members agree on, else node `fallback`'s name.
    fn leader_or(&self, fallback: usize) -> String {
        let deadline = Instant::now() + FIND_LEADER;
        while Instant::now() < deadline {
            for (_, addr) in &self.env.nodes {
                if let Outcome::Ok(out) = self.env.ctl.call(addr, &["nodes", "-o", "json"]) {
                    if let Some(l) = views::agreed_leader(&out) {
                        return l;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.names()[fallback % self.names().len()].clone()
    }

    fn placement_of(&self, app: &str) -> Option<String> {
        let deadline = Instant::now() + FIND_LEADER;
        while Instant::now() < deadline {
            for (_, addr) in &self.env.nodes {
                if let Outcome::Ok(out) = self.env.ctl.call(addr, &["status", "-o", "json"]) {
                    let found = views::status_apps(&out)
                        .and_then(|apps| apps.into_iter().find(|a| a.name == app))
                        .and_then(|a| a.running_on.first().cloned().or(a.desired_node));
                    if found.is_some() {
                        return found;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Asks for a ledger move on a thread of its own (a move is watched
    /// until done, which must not hold up the fault's end).
    fn kick_move(&mut self) {
        let names = self.names();
        let to = names[self.rng.random_range(0..names.len())].clone();
        let via = names[self.rng.random_range(0..names.len())].clone();
        let seed = self.rng.random::<u64>();
        // Each move its own process: two may overlap in time.
        let process = NEMESIS_PROCESS + (self.moves.len() as u32 % 100);
        let env = self.env.clone();
        if !env.moves_supported.load(Ordering::SeqCst) {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("nemesis-move".into())
            .spawn(move || {
                if crate::topology::enter_netns(&env.client_ns).is_ok() {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    workload::move_app(&env, &mut rng, process, LEDGER, &to, &via);
                }
            });
        if let Ok(handle) = spawned {
            self.moves.push(handle);
        }
    }

    /// Waits (up to `limit`) for the moves this nemesis asked for, so none
    /// records into the history after the run's final reads.
    pub fn join_moves(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for handle in self.moves.drain(..) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// The nodes that hear from fewer than a majority of `names` (themselves
/// included) when each (receiver, sender) of `drops` is dropped.
pub fn cut_off(names: &[String], drops: &[(String, String)]) -> Vec<String> {
    let majority = names.len() / 2 + 1;
    names
        .iter()
        .filter(|x| {
            let heard = names
                .iter()
                .filter(|y| !drops.iter().any(|(r, s)| r == *x && s == *y))
                .count();
            heard < majority
        })
        .cloned()
        .collect()
}

/// Sleeps until `t` in small steps; false when `stop` said to stop first.
pub fn sleep_until(t: Instant, stop: &dyn Fn() -> bool) -> bool {
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_minority_and_the_deaf_are_cut_off_a_bridge_side_is_not() {
        let three = names(3);
        // n1 | n2,n3 both ways.
        let halves = pairs(&[("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")]);
        assert_eq!(cut_off(&three, &halves), ["n1"]);
        // n1 hears nobody, the others hear it.
        let deaf = pairs(&[("n1", "n2"), ("n1", "n3")]);
        assert_eq!(cut_off(&three, &deaf), ["n1"]);
        // n1 | n2 | n3 with n2 the bridge: n1 and n3 each hear two of three.
        let bridge = pairs(&[("n1", "n3"), ("n3", "n1")]);
        assert!(cut_off(&three, &bridge).is_empty());
        // Five: n1,n2 | n3,n4,n5.
        let five = names(5);
        let mut drops = Vec::new();
        for a in ["n1", "n2"] {
            for b in ["n3", "n4", "n5"] {
                drops.push((a.to_string(), b.to_string()));
                drops.push((b.to_string(), a.to_string()));
            }
        }
        assert_eq!(cut_off(&five, &drops), ["n1", "n2"]);
    }
}
