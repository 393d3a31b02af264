//! The nemesis schedule: a pure function of the seed, the run length and the
//! enabled nemeses, so one seed replays the same faults at the same offsets.
//! Choices that depend on the live cluster (which node leads) are resolved
//! when the fault starts, from the same schedule (a `pick` drawn here).
//!
//! Faults run one at a time with a quiet gap between them. The enabled
//! nemeses are dealt in rounds, each round a seeded shuffle, so every nemesis
//! appears once before any appears twice. A planted-bug run replaces the
//! random schedule with the one fault that exposes that bug.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// The kinds of faults, as named on the command line.
pub const ALL_NEMESES: [&str; 9] = [
    "partition",
    "kill",
    "pause",
    "clock",
    "link",
    "membership",
    "crash",
    "power",
    "power-all",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Fault {
    /// Cut the leader off from every other node.
    IsolateLeader,
    /// Two random sides that cannot talk to each other.
    Halves { pick: u64 },
    /// One node talks to both sides, the sides not to each other.
    Bridge { pick: u64 },
    /// One node hears nobody but is still heard.
    OneWay { pick: u64 },
    /// kill -9, restart when the fault ends.
    Kill { leader: bool, pick: u64 },
    /// SIGSTOP the leader, SIGCONT when the fault ends.
    PauseLeader,
    /// The host goes down with its containers: kill -9 of the node, its
    /// containers removed from its engine, its data dir moved out of reach;
    /// when the fault ends the data dir is put back and the node restarts
    /// on it. `owner`: the host owning the ledger's volume (else a node
    /// drawn by `pick`).
    Crash { owner: bool, pick: u64 },
    /// A power cut of one host: the node frozen (SIGSTOP: nothing more
    /// reaches its disk), its lazyfs cut (every unsynced write and
    /// directory change gone), the node killed and its containers
    /// removed, the file system mounted again; the node restarts on what
    /// survived when the fault ends. `owner` as for `Crash`.
    Power { owner: bool, pick: u64 },
    /// The same for every node at once: the whole cluster loses power.
    PowerAll,
    /// Shift one node's wall clock by `offset_s`.
    Clock { pick: u64, offset_s: i64 },
    /// Drop `percent` of the packets a node receives from its peers.
    Lossy { pick: u64, percent: u32 },
    /// Throttle a node's outgoing traffic with a token bucket.
    Slow { pick: u64, kbit: u32 },
    /// Remove a follower from the membership (its certificate revoked),
    /// keep it out, then bring it back with a newly issued certificate and
    /// an empty data dir; `isolated`: cut it off from its peers first, and
    /// start its return while it is still cut off.
    Member { pick: u64, isolated: bool },
    /// Planted stale-reads: one non-leader cut off from its peers (not from
    /// the clients) while writes go to the others and reads to it.
    StaleReadTrap,
    /// Planted no-fencing: the node running `beacon` cut off from its peers
    /// long enough for the leader to place it again.
    FencingTrap,
}

impl Fault {
    /// The nemesis family, as in `nemesis.jsonl`.
    pub fn nemesis(&self) -> &'static str {
        match self {
            Fault::IsolateLeader
            | Fault::Halves { .. }
            | Fault::Bridge { .. }
            | Fault::OneWay { .. }
            | Fault::StaleReadTrap
            | Fault::FencingTrap => "partition",
            Fault::Kill { .. } => "kill",
            Fault::PauseLeader => "pause",
            Fault::Clock { .. } => "clock",
            Fault::Lossy { .. } | Fault::Slow { .. } => "link",
            Fault::Member { .. } => "membership",
            Fault::Crash { .. } => "crash",
            Fault::Power { .. } => "power",
            Fault::PowerAll => "power-all",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// From the start of the workload.
    pub at: Duration,
    pub duration: Duration,
    pub fault: Fault,
    /// Also ask for a volume move of the ledger as the fault starts.
    pub with_move: bool,
}

/// Quiet time before the first fault and after the last one.
const LEAD_IN: Duration = Duration::from_secs(3);
const TAIL: Duration = Duration::from_secs(3);

/// The schedule for a run of `time` with `nemeses` enabled.
pub fn schedule(
    seed: u64,
    time: Duration,
    nemeses: &[String],
    plant_bug: Option<&str>,
) -> Vec<Step> {
    if let Some(bug) = plant_bug {
        return planted(time, bug);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut t = LEAD_IN;
    let mut deck: Vec<&String> = Vec::new();
    loop {
        if deck.is_empty() {
            deck = nemeses.iter().collect();
            deck.shuffle(&mut rng);
        }
        let Some(name) = deck.pop() else {
            break;
        };
        let (fault, duration) = draw(&mut rng, name);
        if t + duration + TAIL > time {
            break;
        }
        let with_move = rng.random_range(0..10) < 3;
        steps.push(Step {
            at: t,
            duration,
            fault,
            with_move,
        });
        t += duration + Duration::from_millis(rng.random_range(2000..5000));
    }
    steps
}

fn draw(rng: &mut ChaCha8Rng, nemesis: &str) -> (Fault, Duration) {
    let secs = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| {
        Duration::from_millis(rng.random_range(lo * 1000..hi * 1000))
    };
    let pick = rng.random::<u64>();
    match nemesis {
        "partition" => {
            let fault = match rng.random_range(0..4) {
                0 => Fault::IsolateLeader,
                1 => Fault::Halves { pick },
                2 => Fault::Bridge { pick },
                _ => Fault::OneWay { pick },
            };
            // Often past the 3.5 s grace, so apps are placed again.
            (fault, secs(rng, 4, 12))
        }
        "kill" => (
            Fault::Kill {
                leader: rng.random(),
                pick,
            },
            secs(rng, 2, 8),
        ),
        // Down past DOWN_GRACE (3.5 s) and the failover it brings, then
        // back. Mostly the ledger's owner: that is what fails over.
        "crash" => (
            Fault::Crash {
                owner: rng.random_range(0..3) < 2,
                pick,
            },
            secs(rng, 8, 15),
        ),
        // Down for a while: mostly the ledger's owner (bounded loss, once
        // past DOWN_GRACE a failover), back on what its disk kept.
        "power" => (
            Fault::Power {
                owner: rng.random_range(0..3) < 2,
                pick,
            },
            secs(rng, 3, 9),
        ),
        // Everything down at once, then everything back: no failover can
        // hide a lost write.
        "power-all" => (Fault::PowerAll, secs(rng, 2, 5)),
        // Past the election timeout (≤ 1 s) and the 2 s lease.
        "pause" => (Fault::PauseLeader, secs(rng, 3, 8)),
        "clock" => {
            let magnitude = rng.random_range(20..300);
            let offset_s = if rng.random() { magnitude } else { -magnitude };
            (Fault::Clock { pick, offset_s }, secs(rng, 5, 12))
        }
        // The whole cycle: out for about half of it, then the return (new
        // certificate, empty data dir, join, promotion to voter).
        "membership" => (
            Fault::Member {
                pick,
                isolated: rng.random(),
            },
            secs(rng, 16, 28),
        ),
        _ => {
            let fault = if rng.random() {
                Fault::Lossy {
                    pick,
                    percent: rng.random_range(10..40),
                }
            } else {
                Fault::Slow {
                    pick,
                    kbit: rng.random_range(64..512),
                }
            };
            (fault, secs(rng, 4, 10))
        }
    }
}

/// One long trap, from the lead-in to just before the end.
fn planted(time: Duration, bug: &str) -> Vec<Step> {
    let fault = match bug {
        "stale-reads" => Fault::StaleReadTrap,
        _ => Fault::FencingTrap,
    };
    let duration = time
        .saturating_sub(LEAD_IN + TAIL)
        .max(Duration::from_secs(8));
    vec![Step {
        at: LEAD_IN,
        duration,
        fault,
        with_move: false,
    }]
}

/// Checks the `--nemesis` list.
pub fn parse_nemeses(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ALL_NEMESES.contains(&name) {
            return Err(format!(
                "unknown nemesis '{name}' (known: {})",
                ALL_NEMESES.join(", ")
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        ALL_NEMESES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_seed_same_schedule() {
        let a = schedule(7, Duration::from_secs(120), &all(), None);
        let b = schedule(7, Duration::from_secs(120), &all(), None);
        let c = schedule(8, Duration::from_secs(120), &all(), None);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_nemesis_once_before_any_twice_and_within_time() {
        let time = Duration::from_secs(300);
        let s = schedule(1, time, &all(), None);
        let first: Vec<&str> = s
            .iter()
            .take(ALL_NEMESES.len())
            .map(|st| st.fault.nemesis())
            .collect();
        for n in ALL_NEMESES {
            assert!(first.contains(&n), "{n} missing from {first:?}");
        }
        for w in s.windows(2) {
            assert!(w[0].at + w[0].duration < w[1].at);
        }
        let last = s.last().unwrap();
        assert!(last.at + last.duration + TAIL <= time);
    }

    #[test]
    fn planted_runs_use_their_trap() {
        let s = schedule(1, Duration::from_secs(30), &all(), Some("stale-reads"));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].fault, Fault::StaleReadTrap);
        assert!(parse_nemeses("kill,bogus").is_err());
        assert_eq!(
            parse_nemeses("kill, pause,kill").unwrap(),
            ["kill", "pause"]
        );
    }
}
