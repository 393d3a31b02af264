//! The run's one clock: nanoseconds since the run started, from the
//! monotonic clock (`Instant`), so wall-clock faults injected into the nodes
//! never reach the history. Every file the checkers read is stamped with it.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    /// The host's wall clock at `start` (the harness itself is never
    /// time-faked): maps Docker's event timestamps onto the run clock.
    wall_start_ns: u128,
}

impl RunClock {
    pub fn start() -> RunClock {
        let wall_start_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RunClock {
            start: Instant::now(),
            wall_start_ns,
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A host wall-clock time (ns since the epoch) on the run clock; 0 for
    /// times before the run.
    pub fn from_wall_ns(&self, wall_ns: u128) -> u64 {
        u64::try_from(wall_ns.saturating_sub(self.wall_start_ns)).unwrap_or(u64::MAX)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}
