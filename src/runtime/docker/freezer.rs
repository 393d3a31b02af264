//! Freezing a container's processes through its cgroup's freezer, written
//! directly rather than through `docker pause`.
//!
//! A volume point on `dir` and `xfs` is captured while the app holds still;
//! the app's stall is the point's whole cost to it. Docker's pause and
//! unpause are two API round trips through dockerd and containerd (about
//! 50 ms on this kind of machine), while the freeze itself is one write to a
//! cgroup file. Docker does not know of a freeze it did not make, so the
//! runtime reports such a container as paused itself, and thaws it after
//! killing it whenever it stops or removes it: a frozen process cannot take
//! a signal, and a container stopped while frozen would hang until thawed.
//!
//! cgroup v1 (`freezer.state`: FROZEN/THAWED) and v2 (`cgroup.freeze` and
//! the `frozen` line of `cgroup.events`) are both handled; the cgroup is
//! found from `/proc/<pid>/cgroup` of the container's init process and must
//! name the container's id, so a wrong pid never freezes anything else.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a freeze may take to settle (processes in uninterruptible
/// sleep freeze only when they leave it) before it is undone and refused.
const FREEZE_SETTLE: Duration = Duration::from_secs(2);
/// Between checks of whether the freeze settled.
const SETTLE_POLL: Duration = Duration::from_micros(200);

/// Where cgroup file systems are mounted on every distribution we run on.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// `<root>/freezer/<path>/freezer.state`.
    V1,
    /// `<root>/<path>/cgroup.freeze` (unified hierarchy).
    V2,
}

/// The freezer of one container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freezer {
    version: Version,
    dir: PathBuf,
}

impl Freezer {
    /// The freezer of the cgroup that process `pid` (the container's init)
    /// is in; refused unless that cgroup's path names `container_id`.
    pub fn of_process(pid: u32, container_id: &str) -> io::Result<Freezer> {
        let table = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let freezer = Self::from_cgroup_table(&table, Path::new(CGROUP_ROOT))
            .ok_or_else(|| other(format!("process {pid} is in no freezer cgroup")))?;
        let named = freezer
            .dir
            .to_str()
            .is_some_and(|d| !container_id.is_empty() && d.contains(container_id));
        if !named {
            return Err(other(format!(
                "process {pid}'s cgroup {} is not container {container_id}'s",
                freezer.dir.display()
            )));
        }
        Ok(freezer)
    }

    /// Picks the freezer out of a `/proc/<pid>/cgroup` table: the v1
    /// `freezer` controller when the host mounts one (hybrid hosts have
    /// both), otherwise the unified hierarchy.
    fn from_cgroup_table(table: &str, root: &Path) -> Option<Freezer> {
        let mut unified = None;
        for line in table.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let relative = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "freezer") {
                return Some(Freezer {
                    version: Version::V1,
                    dir: root.join("freezer").join(relative),
                });
            }
            if controllers.is_empty() {
                // Hybrid hosts mount the unified tree at `unified`.
                let base = match root.join("unified").join("cgroup.controllers").exists() {
                    true => root.join("unified"),
                    false => root.to_path_buf(),
                };
                unified = Some(Freezer {
                    version: Version::V2,
                    dir: base.join(relative),
                });
            }
        }
        unified
    }

    /// Freezes every process of the cgroup and waits until they all are;
    /// one that does not settle in time is thawed and the freeze refused.
    pub fn freeze(&self) -> io::Result<()> {
        self.write(true)?;
        let since = Instant::now();
        loop {
            if self.is_frozen()? {
                return Ok(());
            }
            if since.elapsed() > FREEZE_SETTLE {
                let _ = self.write(false);
                return Err(other(format!(
                    "{} did not freeze within {FREEZE_SETTLE:?}",
                    self.dir.display()
                )));
            }
            std::thread::sleep(SETTLE_POLL);
        }
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.write(false)
    }

    /// Whether the cgroup is frozen now (or freezing, on v1: a freeze that
    /// has not settled still holds most of its processes).
    pub fn is_frozen(&self) -> io::Result<bool> {
        match self.version {
            Version::V1 => {
                let state = fs::read_to_string(self.dir.join("freezer.state"))?;
                Ok(state.trim() == "FROZEN")
            }
            Version::V2 => {
                let events = fs::read_to_string(self.dir.join("cgroup.events"))?;
                Ok(events.lines().any(|l| l.trim() == "frozen 1"))
            }
        }
    }

    fn write(&self, frozen: bool) -> io::Result<()> {
        let (file, value) = match (&self.version, frozen) {
            (Version::V1, true) => ("freezer.state", "FROZEN"),
            (Version::V1, false) => ("freezer.state", "THAWED"),
            (Version::V2, true) => ("cgroup.freeze", "1"),
            (Version::V2, false) => ("cgroup.freeze", "0"),
        };
        fs::write(self.dir.join(file), value)
    }
}

fn other(message: String) -> io::Error {
    io::Error::other(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_freezer_line_wins_over_the_unified_one() {
        let table = "12:pids:/docker/abc\n7:freezer:/docker/abc\n0::/system.slice/x\n";
        let f = Freezer::from_cgroup_table(table, Path::new("/cg")).unwrap();
        assert_eq!(f.version, Version::V1);
        assert_eq!(f.dir, PathBuf::from("/cg/freezer/docker/abc"));
    }

    #[test]
    fn a_unified_only_host_uses_cgroup_freeze() {
        let table = "0::/system.slice/docker-abc.scope\n";
        let f = Freezer::from_cgroup_table(table, Path::new("/cg")).unwrap();
        assert_eq!(f.version, Version::V2);
        assert_eq!(f.dir, PathBuf::from("/cg/system.slice/docker-abc.scope"));
    }

    #[test]
    fn a_table_without_a_freezer_gives_none() {
        assert_eq!(
            Freezer::from_cgroup_table("5:cpu:/docker/abc\ngarbage\n", Path::new("/cg")),
            None
        );
    }

    #[test]
    fn a_process_outside_the_container_is_refused() {
        // This test process is in no cgroup named after this id.
        let err = Freezer::of_process(std::process::id(), "0123456789abcdef").unwrap_err();
        assert!(
            err.to_string().contains("0123456789abcdef") || err.to_string().contains("no freezer"),
            "{err}"
        );
    }
}
