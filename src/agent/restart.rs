//! The restart policy, enforced by the agent rather than by Docker (whose own
//! policy is always `no`, so it can never resurrect a container the cluster
//! fenced): whether a dead container may run again, and after how long.

use crate::config::RestartPolicy;
use std::time::Duration;

/// First restart delay; doubled per restart up to [`MAX_RESTART_DELAY`], as
/// Docker does, so a crash-looping app cannot monopolise the engine.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
/// A container that ran this long before dying starts its delays afresh.
pub const STABLE_RUN: Duration = Duration::from_secs(10);

/// Whether a container that ended with `exit_code` (`None`: it vanished, e.g.
/// removed from outside) may be started again after `restarts` restarts.
pub fn may_restart(policy: RestartPolicy, exit_code: Option<i64>, restarts: u32) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure {
            maximum_retry_count,
        } => exit_code != Some(0) && maximum_retry_count.is_none_or(|max| restarts < max),
    }
}

/// How long to wait before restart number `restarts + 1`.
pub fn restart_delay(restarts: u32) -> Duration {
    FIRST_RESTART_DELAY
        .saturating_mul(1u32 << restarts.min(16))
        .min(MAX_RESTART_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert!(!may_restart(RestartPolicy::Never, Some(1), 0));
        assert!(may_restart(RestartPolicy::Always, Some(0), 1000));
        let twice = RestartPolicy::OnFailure {
            maximum_retry_count: Some(2),
        };
        assert!(may_restart(twice, Some(1), 1));
        assert!(!may_restart(twice, Some(1), 2), "retry count is a bound");
        assert!(!may_restart(twice, Some(0), 0), "success is not a failure");
        assert!(
            may_restart(twice, None, 0),
            "a vanished container counts as failed"
        );
        let unbounded = RestartPolicy::OnFailure {
            maximum_retry_count: None,
        };
        assert!(may_restart(unbounded, Some(137), 500));
    }

    #[test]
    fn delays_double_and_are_bounded() {
        assert_eq!(restart_delay(0), Duration::from_millis(100));
        assert_eq!(restart_delay(3), Duration::from_millis(800));
        assert_eq!(restart_delay(50), MAX_RESTART_DELAY);
    }
}
