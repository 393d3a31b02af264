//! Why a try of a move attempt failed, typed by what the source's driver
//! does about it, and that decision ([`after_failure`]) as a pure function
//! of the error's kind, the attempt's freeze and the failures so far.
//!
//! The texts are the operator's: a failure's [`Display`](std::fmt::Display)
//! is what `ctl status` shows as the move's `last_error` and what a `Retry`
//! records as its reason, so they stay exactly as the code that found the
//! failure wrote them.

use std::fmt;
use std::time::Duration;

/// Failed tries of a frozen attempt before handing the app back to the
/// source (`Retry`): each is a reconnect and a final round.
pub const FROZEN_TRIES: u32 = 3;
/// The first wait before trying an attempt again, doubled per failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a failure says about the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveErrorKind {
    /// The network, the destination, a disk or a proposal failed: the same
    /// attempt may succeed on another try (a new session asks the
    /// destination what it holds, so only what is missing is sent again).
    Transient,
    /// The applied state shows the attempt is over (a retry, a cancel, a
    /// recover): nothing more to do for it.
    Superseded,
    /// This node cannot be the source at the committed epoch (it owns no
    /// volume, or its copy is not complete): another try of the same
    /// attempt fails the same way.
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveError {
    pub kind: MoveErrorKind,
    message: String,
}

impl MoveError {
    pub fn transient(message: impl Into<String>) -> MoveError {
        MoveError {
            kind: MoveErrorKind::Transient,
            message: message.into(),
        }
    }

    pub fn superseded(message: impl Into<String>) -> MoveError {
        MoveError {
            kind: MoveErrorKind::Superseded,
            message: message.into(),
        }
    }

    pub fn fatal(message: impl Into<String>) -> MoveError {
        MoveError {
            kind: MoveErrorKind::Fatal,
            message: message.into(),
        }
    }
}

impl fmt::Display for MoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MoveError {}

/// What the source's driver does after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Stop driving the attempt: the state has moved on.
    Stop,
    /// Commit `Retry`: the source runs the app again and the move goes on
    /// under a fresh epoch. Only for a frozen attempt, whose app runs
    /// nowhere until then.
    GiveBack,
    /// Try the same attempt again after this long.
    RetryIn(Duration),
}

/// The decision after `failures` failed tries in a row (this one
/// included) of an attempt that is `frozen` or not. Before the freeze the
/// app runs on the source, so retrying costs nothing but time; after it,
/// the app is down until the attempt ends, so a frozen attempt is given
/// back after [`FROZEN_TRIES`], or at once when trying cannot help.
pub fn after_failure(kind: MoveErrorKind, frozen: bool, failures: u32) -> AfterFailure {
    match kind {
        MoveErrorKind::Superseded => AfterFailure::Stop,
        MoveErrorKind::Fatal if frozen => AfterFailure::GiveBack,
        MoveErrorKind::Transient if frozen && failures >= FROZEN_TRIES => AfterFailure::GiveBack,
        MoveErrorKind::Transient | MoveErrorKind::Fatal => AfterFailure::RetryIn(backoff(failures)),
    }
}

/// The wait before the next try after `failures` failed ones (also when a
/// give-back could not be committed): doubling, bounded.
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(4))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AfterFailure::{GiveBack, RetryIn, Stop};
    use MoveErrorKind::{Fatal, Superseded, Transient};

    fn secs(s: u64) -> AfterFailure {
        RetryIn(Duration::from_secs(s))
    }

    #[test]
    fn what_the_driver_does_after_a_failure() {
        // (kind, frozen, failures so far, decision)
        let rows = [
            (Transient, false, 1, secs(1)),
            (Transient, false, 2, secs(2)),
            (Transient, false, 3, secs(4)),
            (Transient, false, 4, secs(8)),
            (Transient, false, 5, secs(10)),
            (Transient, false, 1000, secs(10)),
            (Transient, true, 1, secs(1)),
            (Transient, true, 2, secs(2)),
            (Transient, true, FROZEN_TRIES, GiveBack),
            (Transient, true, FROZEN_TRIES + 1, GiveBack),
            (Superseded, false, 1, Stop),
            (Superseded, true, 5, Stop),
            (Fatal, true, 1, GiveBack),
            (Fatal, false, 1, secs(1)),
            (Fatal, false, 9, secs(10)),
        ];
        for (kind, frozen, failures, expect) in rows {
            assert_eq!(
                after_failure(kind, frozen, failures),
                expect,
                "{kind:?}, frozen: {frozen}, failures: {failures}"
            );
        }
    }

    #[test]
    fn the_operator_reads_the_failure_as_it_was_written() {
        let e = MoveError::transient("volume endpoint of n2: timed out");
        assert_eq!(e.to_string(), "volume endpoint of n2: timed out");
        assert_eq!(MoveError::fatal("x").kind, Fatal);
    }
}
