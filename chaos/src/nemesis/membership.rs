//! The membership nemesis: one cycle of removing a follower and bringing
//! its host back, as an operator would. `ctl members remove` (which revokes
//! the member's certificate, then changes the membership); the node's
//! process left running, cut off, for about half the fault; then killed
//! and its containers removed, as a wiped host's would be; a probe that the
//! old certificate stays out; `flocker ca renew`, a new bundle, an empty
//! data dir and `--join`; and a wait until the node is a voter again.
//!
//! The isolated variant cuts the node off from its peers before removing
//! it and starts its return while it is still cut off (the partition is
//! lifted a few seconds into the join).
//!
//! Never removed: the leader (a follower is the subject), the node holding
//! or receiving the ledger's volume (wiping it would lose the only copy,
//! which no system can survive), and n1 while another node qualifies (reg1
//! is pinned there). With one fault at a time, at most one member is out,
//! so 3 voters keep a quorum of the remaining 2.
//!
//! The probe is the trust property the checker `removed-stay-out` judges:
//! `flocker node --join` with the removed node's old bundle, started from
//! the clients' namespace, must exit refused ("revoked").

use super::{sleep_until, Nemesis};
use crate::app::LEDGER;
use crate::ctl::Outcome;
use crate::history::NemesisEvent;
use crate::views;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long `ctl members remove` is retried.
const REMOVE_FOR: Duration = Duration::from_secs(30);
/// Shortest time a removed node stays out.
const MIN_OUT: Duration = Duration::from_secs(5);
/// How long the old certificate's join may take to be refused.
const PROBE_BOUND: Duration = Duration::from_secs(30);
/// In the isolated variant, how long the return runs while still cut off.
const JOIN_WHILE_CUT: Duration = Duration::from_secs(4);
/// Extra time, past the fault's own, for the node to become a voter again.
const VOTER_GRACE: Duration = Duration::from_secs(45);
/// The port the probe listens on, in the clients' namespace.
const PROBE_PORT: u16 = 4599;

/// What the probe saw of the old certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The join exited refused, saying the certificate is revoked.
    Refused,
    /// The old certificate got back in.
    Admitted,
    /// Neither could be shown (it neither exited refused nor joined).
    Undecided,
}

impl Probe {
    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Refused => "refused",
            Probe::Admitted => "admitted",
            Probe::Undecided => "undecided",
        }
    }
}

/// Judges the probe's output and whether it ended by itself (`exited`):
/// refused when it gave up because its certificate is revoked. How it
/// exited (1, or a signal) is in the probe's detail, not the judgement.
pub fn judge_probe(exited: bool, output: &str) -> Probe {
    if output.contains("join complete") {
        Probe::Admitted
    } else if exited && output.contains("cannot join") && output.contains("is revoked") {
        Probe::Refused
    } else {
        Probe::Undecided
    }
}

impl Nemesis {
    /// Runs one membership cycle of about `duration`; false when `stop`
    /// cut it short (the node is brought back all the same).
    pub(super) fn member_cycle(
        &mut self,
        pick: u64,
        isolated: bool,
        duration: Duration,
        with_move: bool,
        stop: &dyn Fn() -> bool,
    ) -> bool {
        let began = Instant::now();
        let Some((target, leader)) = self.removable(pick) else {
            let detail = "no follower could be removed (leader, ledger's volume, n1)";
            self.event("membership", "start", detail, &[]);
            self.event("membership", "stop", detail, &[]);
            return !stop();
        };
        let Some(i) = self.index(&target) else {
            return !stop();
        };
        let others: Vec<String> = self.names().into_iter().filter(|n| *n != target).collect();
        let nodes = std::slice::from_ref(&target);
        let how = if isolated { " (cut off first)" } else { "" };
        self.event(
            "membership",
            "start",
            &format!("remove follower {target}{how}"),
            nodes,
        );
        if with_move {
            self.kick_move();
        }
        if isolated {
            self.cut(nodes, &others, true);
        }
        let log_path = self.cluster().logs.join(format!("{target}.log"));
        let log_mark = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        match self.remove(&target, &leader, &others) {
            Ok(said) => {
                // Out of the membership, no leader renews its lease.
                let now = self.env.clock.now_ns();
                self.open_cut(&target, now, "removed from the membership");
                self.event("membership", "removed", &said, nodes)
            }
            Err(why) => {
                self.lift_partitions();
                self.event(
                    "membership",
                    "stop",
                    &format!("{target} could not be removed: {why}"),
                    nodes,
                );
                return !stop();
            }
        }

        // Out: its process still runs, refused by everyone.
        let out_for = (duration / 2).max(MIN_OUT);
        let ended = sleep_until(Instant::now() + out_for, stop);
        let cut_off = refusal_in_log(&log_path, log_mark);
        self.event(
            "membership",
            "cut-off",
            &match cut_off {
                Some(line) => format!("{target}'s log shows it was refused: {line}"),
                None => format!("{target}'s log shows no refusal (yet)"),
            },
            nodes,
        );
        self.cluster().kill(i);
        let cluster_id = self.cluster().cluster_id.clone();
        let removed =
            crate::topology::remove_node_containers(&self.topo.slot, &cluster_id, &target);
        self.event(
            "membership",
            "killed",
            &match removed {
                Ok(n) => format!("{target}'s process killed, its {n} container(s) removed"),
                Err(e) => format!("{target}'s process killed; removing its containers: {e:#}"),
            },
            nodes,
        );

        let via = self.addr_of(&leader).unwrap_or_default();
        let (probe, detail) = self.probe_old_certificate(i, &via);
        self.log.write_with(|time_ns| NemesisEvent {
            time_ns,
            nemesis: "membership".into(),
            phase: "probe".into(),
            detail: detail.clone(),
            nodes: nodes.to_vec(),
            probe: Some(probe.as_str().into()),
        });
        eprintln!("flocker-chaos: nemesis membership probe: {detail}");

        // Back, as a new host with the same name.
        let generation = self.cluster().nodes[i].generation + 1;
        if !isolated {
            // From here it is a new host joining (refusing until it has a
            // lease), no longer the removed one.
            self.close_cuts(Some(&target));
        }
        let rejoined = {
            let topo = self.topo.clone();
            self.cluster().rejoin(&topo, i, &via)
        };
        self.event(
            "membership",
            "rejoin",
            &match &rejoined {
                Ok(()) => format!(
                    "{target} starts with certificate #{generation}, an empty data dir and --join {leader}"
                ),
                Err(e) => format!("{target} could not be brought back: {e:#}"),
            },
            nodes,
        );
        if isolated {
            sleep_until(Instant::now() + JOIN_WHILE_CUT, stop);
            self.lift_partitions();
            self.event(
                "membership",
                "lifted",
                &format!("{target} no longer cut off"),
                nodes,
            );
        }
        let deadline = began + duration.max(out_for) + VOTER_GRACE;
        let back = rejoined.is_ok() && self.wait_for_voter(&target, deadline, stop);
        let took = began.elapsed().as_secs_f64();
        self.event(
            "membership",
            "stop",
            &if back {
                format!("{target} is a voter again ({took:.1} s after its removal began)")
            } else {
                format!("{target} is not a voter {took:.1} s after its removal began")
            },
            nodes,
        );
        ended && !stop()
    }

    /// The follower to remove and the leader to ask, or `None`.
    fn removable(&mut self, pick: u64) -> Option<(String, String)> {
        let names = self.names();
        let leader = self.leader_or(0);
        let mut holders = None;
        for (_, addr) in &self.env.nodes {
            if let Outcome::Ok(out) = self.env.ctl.call(addr, &["status", "-o", "json"]) {
                holders = views::data_holders(&out, LEDGER);
                if holders.is_some() {
                    break;
                }
            }
        }
        // Without knowing where the ledger's data is, removing anyone risks it.
        let holders = holders?;
        let allowed = |n: &String| *n != leader && !holders.contains(n);
        let mut candidates: Vec<&String> = names.iter().skip(1).filter(|n| allowed(n)).collect();
        if candidates.is_empty() {
            candidates = names.iter().filter(|n| allowed(n)).collect();
        }
        if candidates.is_empty() {
            return None;
        }
        let target = candidates[pick as usize % candidates.len()].clone();
        Some((target, leader))
    }

    fn addr_of(&self, name: &str) -> Option<String> {
        self.env
            .nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
    }

    /// `ctl members remove`, through the leader first, then the others,
    /// retried until it is done or `REMOVE_FOR` passes.
    fn remove(&self, target: &str, leader: &str, others: &[String]) -> Result<String, String> {
        let deadline = Instant::now() + REMOVE_FOR;
        let mut via: Vec<&str> = vec![leader];
        via.extend(others.iter().map(String::as_str).filter(|n| *n != leader));
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            for name in &via {
                let Some(addr) = self.addr_of(name) else {
                    continue;
                };
                match self.env.ctl.call(&addr, &["members", "remove", target]) {
                    Outcome::Ok(said) => {
                        if self.is_member(target, others) == Some(false) {
                            return Ok(format!("via {name}: {}", said.trim()));
                        }
                        last = format!("via {name}: said '{}' but is still a member", said.trim());
                    }
                    Outcome::Fail(w) | Outcome::Unknown(w) => last = format!("via {name}: {w}"),
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(last)
    }

    /// Whether `target` is in the membership, as the first of `others` to
    /// answer sees it.
    fn is_member(&self, target: &str, others: &[String]) -> Option<bool> {
        for name in others {
            let addr = self.addr_of(name)?;
            if let Outcome::Ok(out) = self.env.ctl.call(&addr, &["nodes", "-o", "json"]) {
                return Some(views::membership_of(&out, target).is_some());
            }
        }
        None
    }

    /// Polls until `target` is a reachable voter, or `deadline` or `stop`
    /// (an interrupted run checks what it recorded, not convergence).
    fn wait_for_voter(&self, target: &str, deadline: Instant, stop: &dyn Fn() -> bool) -> bool {
        while Instant::now() < deadline && !stop() {
            for (name, addr) in &self.env.nodes {
                if name == target {
                    continue;
                }
                if let Outcome::Ok(out) = self.env.ctl.call(addr, &["nodes", "-o", "json"]) {
                    if views::membership_of(&out, target) == Some(("voter".into(), true)) {
                        return true;
                    }
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// Starts `flocker node --join` with node `i`'s current (revoked)
    /// bundle, from this thread's namespace (the clients'), on an empty
    /// scratch data dir, and judges how it ends.
    fn probe_old_certificate(&self, i: usize, via: &str) -> (Probe, String) {
        let (bin, name, bundle, scratch, log) = {
            let c = self.cluster();
            let name = c.nodes[i].name.clone();
            let generation = c.nodes[i].generation;
            let parent = c.nodes[i]
                .data_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (
                c.bin.clone(),
                name.clone(),
                c.bundle_dir(i),
                parent.join(format!("probe-{name}-{generation}")),
                c.logs.join(format!("{name}.probe-{generation}.log")),
            )
        };
        if let Err(e) = std::fs::create_dir_all(&scratch) {
            return (Probe::Undecided, format!("scratch dir: {e}"));
        }
        let listen = format!("{}:{PROBE_PORT}", self.topo.slot.client_ip());
        let out = crate::sh::run(
            Command::new(&bin)
                .arg("node")
                .args(["--name", &name, "--listen", &listen])
                .arg("--data-dir")
                .arg(&scratch)
                .arg("--certs")
                .arg(&bundle)
                .args(["--join", via])
                // Were it let in, it must start nothing on a real engine
                // and route nothing from the clients' namespace.
                .args(["--engine", "sim", "--routing", "off"]),
            PROBE_BOUND,
        );
        let _ = std::fs::remove_dir_all(&scratch);
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return (
                    Probe::Undecided,
                    format!("could not start the probe: {e:#}"),
                )
            }
        };
        let text = strip_colour(&format!("{}{}", out.stdout, out.stderr));
        let _ = std::fs::write(&log, &text);
        let probe = judge_probe(!out.timed_out, &text);
        let how = match (out.timed_out, out.code) {
            (true, _) => format!("still running after {PROBE_BOUND:?}"),
            (false, Some(c)) => format!("exit {c}"),
            // flocker should exit 1; an abort on the way out is its bug.
            (false, None) => "ended by a signal, not exit 1".into(),
        };
        let line = text
            .lines()
            .find(|l| l.contains("revoked") || l.contains("join complete"))
            .unwrap_or("")
            .trim();
        (
            probe,
            format!(
                "{name}'s old certificate joining via {via}: {} ({how}) {line}",
                probe.as_str()
            ),
        )
    }
}

/// `text` without terminal colour sequences (ESC [ ... m).
fn strip_colour(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first line of `path` after byte `from` that tells of a revoked
/// certificate, cut to a readable length.
fn refusal_in_log(path: &Path, from: u64) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let tail = bytes.get(from as usize..)?;
    let text = strip_colour(&String::from_utf8_lossy(tail));
    let line = text.lines().find(|l| l.contains("revoked"))?;
    Some(line.chars().take(240).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_judgement() {
        let refused = "ERROR cannot join through X: our certificate (node 'n2') is revoked";
        assert_eq!(judge_probe(true, refused), Probe::Refused);
        assert_eq!(judge_probe(false, refused), Probe::Undecided);
        assert_eq!(
            judge_probe(false, "INFO member of the cluster; join complete"),
            Probe::Admitted
        );
        assert_eq!(judge_probe(true, "error: address in use"), Probe::Undecided);
        assert_eq!(
            judge_probe(false, "join failed, will retry"),
            Probe::Undecided
        );
    }

    #[test]
    fn colour_is_stripped() {
        assert_eq!(
            strip_colour("\u{1b}[2ma\u{1b}[0m b \u{1b}[31mERROR"),
            "a b ERROR"
        );
    }

    #[test]
    fn refusal_found_only_after_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n2.log");
        std::fs::write(&p, "old: certificate revoked\nnew: fine\n").unwrap();
        assert!(refusal_in_log(&p, 0).is_some());
        assert_eq!(refusal_in_log(&p, 25), None);
        std::fs::write(&p, "a\nthe peer refused our certificate: ... is revoked\n").unwrap();
        assert!(refusal_in_log(&p, 2).unwrap().contains("is revoked"));
    }
}
