//! Planted bugs: runtime switches of the normal binary that disable one
//! safety mechanism, so the chaos suite can prove its checkers catch the
//! violation that follows (issue 7). Set once at node start from
//! `--plant-bug NAME` and logged loudly; never set in production.

use std::sync::OnceLock;

/// A safety mechanism a chaos run may switch off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedBug {
    /// Reads are served from this node's applied state without a read index.
    StaleReads,
    /// The node never fences: no lease check in the agent, and the fence in
    /// each container is given a deadline that never comes.
    NoFencing,
}

static PLANTED: OnceLock<Vec<PlantedBug>> = OnceLock::new();

/// Records the planted bugs of this process; only the first call counts.
pub fn plant(bugs: &[PlantedBug]) {
    if PLANTED.set(bugs.to_vec()).is_ok() {
        for bug in bugs {
            tracing::warn!(
                ?bug,
                "PLANTED BUG active: this node deliberately breaks an invariant (chaos testing only)"
            );
        }
    }
}

/// True when `bug` was planted in this process.
pub fn planted(bug: PlantedBug) -> bool {
    PLANTED.get().is_some_and(|b| b.contains(&bug))
}
