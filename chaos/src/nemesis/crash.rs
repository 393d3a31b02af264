//! The crash nemesis: a host goes down with everything on it. Its
//! `flocker node` is killed (-9), its containers are removed from its
//! engine (they die with the host), and its data dir is moved out of reach
//! (`<node>.crashed`), so nothing of it can be read, served or mounted
//! while it is down: a replicated volume survives only through its
//! replicas. The host stays down past `DOWN_GRACE` and the failover that
//! follows, then comes back: its data dir put back and the node restarted
//! on it (by `heal_all`, like every other fault's end).
//!
//! `start` is logged right after the kill — the instant the bounded-loss
//! checker measures the loss from — and `down` once the containers and the
//! disk are gone too.

use super::{sleep_until, Nemesis};
use crate::app::LEDGER;
use crate::ctl::Outcome;
use crate::views;
use std::time::{Duration, Instant};

/// How long the nemesis looks for the ledger's owner before choosing blindly.
const FIND_OWNER: Duration = Duration::from_secs(5);

impl Nemesis {
    /// Runs one crash of about `duration`; false when `stop` cut it short
    /// (the host is brought back all the same).
    pub(super) fn crash_cycle(
        &mut self,
        owner: bool,
        pick: u64,
        duration: Duration,
        with_move: bool,
        stop: &dyn Fn() -> bool,
    ) -> bool {
        let (target, role) = self.host_to_fail(owner, pick);
        let Some(i) = self.index(&target) else {
            return !stop();
        };
        let nodes = std::slice::from_ref(&target);
        let began = Instant::now();
        self.cluster().kill(i);
        self.killed.insert(i);
        self.event(
            "crash",
            "start",
            &format!("crash {target}{role}: process killed"),
            nodes,
        );
        if with_move {
            self.kick_move();
        }
        let cluster_id = self.cluster().cluster_id.clone();
        let removed =
            crate::topology::remove_node_containers(&self.topo.slot, &cluster_id, &target);
        let hidden = self.cluster().hide_data(i);
        let containers = match removed {
            Ok(n) => format!("its {n} container(s) removed"),
            Err(e) => format!("removing its containers: {e:#}"),
        };
        let disk = match hidden {
            Ok(p) => format!("its data dir moved to {}", p.display()),
            Err(e) => format!("its data dir could not be moved away: {e:#}"),
        };
        self.event(
            "crash",
            "down",
            &format!("{target}: {containers}, {disk}"),
            nodes,
        );
        let ended = sleep_until(began + duration, stop);
        self.heal_all();
        self.event(
            "crash",
            "stop",
            &format!("{target} back on its data dir"),
            nodes,
        );
        ended && !stop()
    }

    /// The host a crash or power cut takes down: the ledger's volume owner
    /// when `owner` asks for it and it is found (with how the event names
    /// it), else the node `pick` draws.
    pub(super) fn host_to_fail(&self, owner: bool, pick: u64) -> (String, String) {
        let names = self.names();
        let drawn = names[pick as usize % names.len()].clone();
        match owner.then(|| self.volume_owner(LEDGER)).flatten() {
            Some(o) => (o, format!(" (owner of {LEDGER}'s volume)")),
            None => (drawn, String::new()),
        }
    }

    /// The node owning `app`'s volume, as a linearizable status says.
    pub(super) fn volume_owner(&self, app: &str) -> Option<String> {
        let deadline = Instant::now() + FIND_OWNER;
        while Instant::now() < deadline {
            for (_, addr) in &self.env.nodes {
                if let Outcome::Ok(out) = self.env.ctl.call(addr, &["status", "-o", "json"]) {
                    if let Some((node, _)) = views::volume_owner(&out, app) {
                        return Some(node);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}
