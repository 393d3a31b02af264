//! The power nemeses: a host (`power`) or every host (`power-all`) loses
//! power. In order: the node is frozen (SIGSTOP, so nothing more reaches
//! its disk), its lazyfs is cut (every write and directory change not
//! fsynced is gone, as from a real disk cache), the node is killed (-9) and
//! its containers removed (they die with the host), and its file system is
//! mounted again on what survived. When the fault ends `heal_all` restarts
//! the node on that.
//!
//! `start` is logged right after the kill (the instant the bounded-loss
//! checker measures a failover's loss from), `down` once the containers
//! are gone and the disk is back.

use super::{sleep_until, Nemesis};
use std::time::{Duration, Instant};

impl Nemesis {
    /// Runs one power cut of about `duration`; false when `stop` cut it
    /// short (the hosts come back all the same).
    pub(super) fn power_cycle(
        &mut self,
        all: bool,
        owner: bool,
        pick: u64,
        duration: Duration,
        with_move: bool,
        stop: &dyn Fn() -> bool,
    ) -> bool {
        let names = self.names();
        let nemesis = if all { "power-all" } else { "power" };
        let (targets, role) = if all {
            (names.clone(), String::new())
        } else {
            let (target, role) = self.host_to_fail(owner, pick);
            (vec![target], role)
        };
        let idx: Vec<usize> = targets.iter().filter_map(|t| self.index(t)).collect();
        let began = Instant::now();
        let problems = self.cut_power(&idx);
        self.event(
            nemesis,
            "start",
            &format!(
                "power cut {}{role}: frozen, unsynced writes dropped, killed{problems}",
                targets.join(",")
            ),
            &targets,
        );
        if with_move {
            self.kick_move();
        }
        let down = self.host_down(&idx);
        self.event(nemesis, "down", &down, &targets);
        let ended = sleep_until(began + duration, stop);
        self.heal_all();
        self.event(
            nemesis,
            "stop",
            &format!("{} back on what their disks kept", targets.join(",")),
            &targets,
        );
        ended && !stop()
    }

    /// Freezes, cuts and kills the nodes `idx`, every one frozen before
    /// any disk is cut (a power-all cut is one instant for all of them).
    /// Returns what went wrong, for the event's detail.
    fn cut_power(&mut self, idx: &[usize]) -> String {
        let mut problems = String::new();
        for &i in idx {
            if let Err(e) = self.cluster().pause(i, true) {
                problems.push_str(&format!("; SIGSTOP: {e:#}"));
            }
        }
        for &i in idx {
            if let Err(e) = self.cluster().power_cut(i) {
                problems.push_str(&format!("; {e:#}"));
            }
        }
        for &i in idx {
            self.cluster().kill(i);
            self.killed.insert(i);
        }
        problems
    }

    /// Removes the containers of the nodes `idx` and mounts their disks
    /// again; says what happened.
    fn host_down(&mut self, idx: &[usize]) -> String {
        let cluster_id = self.cluster().cluster_id.clone();
        let mut parts = Vec::new();
        for &i in idx {
            let name = self.names()[i].clone();
            let removed =
                crate::topology::remove_node_containers(&self.topo.slot, &cluster_id, &name);
            let containers = match removed {
                Ok(n) => format!("{n} container(s) removed"),
                Err(e) => format!("removing containers: {e:#}"),
            };
            let disk = match self.cluster().reboot_disk(i) {
                Ok(()) => "disk mounted again".to_string(),
                Err(e) => format!("{e:#}"),
            };
            parts.push(format!("{name}: {containers}, {disk}"));
        }
        parts.join("; ")
    }
}
