//! Early evidence, for the planted runs to stop once their bug shows rather
//! than run out the clock. Two certain signs, noticed as they happen:
//!
//! - a stale read: a read invoked after write W was acknowledged returns
//!   the value of a write X acknowledged before W was even invoked (values
//!   are unique per write, so the value names X);
//! - two instances of one app interleaving their heartbeats: an instance
//!   beats again after another one has started beating (a plain handoff,
//!   old then new, is not evidence however close together).
//!
//! This is a hint for stopping only; the checkers decide the verdict from
//! the files.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Acknowledged writes remembered per key.
const WRITES_KEPT: usize = 256;
/// An instance that beats within this long after another one took over was
/// still running then.
const OVERLAP_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
struct Acked {
    value: String,
    invoke_ns: u64,
    ok_ns: u64,
}

#[derive(Default)]
pub struct Caught {
    /// Run-clock time of the first evidence; 0: none yet.
    at_ns: AtomicU64,
    writes: Mutex<BTreeMap<String, VecDeque<Acked>>>,
    /// Per app: the instance beating now, and the one it took over from
    /// with the time it took over.
    beats: Mutex<BTreeMap<String, Beats>>,
}

#[derive(Default)]
struct Beats {
    current: String,
    previous: Option<(String, u64)>,
}

impl Caught {
    fn note(&self, now_ns: u64, what: &str) {
        if self
            .at_ns
            .compare_exchange(0, now_ns.max(1), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            eprintln!("flocker-chaos: caught: {what}");
        }
    }

    /// When the first evidence came, if any.
    pub fn at_ns(&self) -> Option<u64> {
        Some(self.at_ns.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    pub fn write_ok(&self, key: &str, value: &str, invoke_ns: u64, ok_ns: u64) {
        let mut w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let q = w.entry(key.to_string()).or_default();
        if q.len() == WRITES_KEPT {
            q.pop_front();
        }
        q.push_back(Acked {
            value: value.to_string(),
            invoke_ns,
            ok_ns,
        });
    }

    pub fn read_ok(&self, key: &str, value: Option<&str>, invoke_ns: u64, ok_ns: u64) {
        let Some(value) = value else { return };
        let w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = w.get(key) else { return };
        let Some(x) = q.iter().find(|a| a.value == value) else {
            return;
        };
        let newer = q
            .iter()
            .find(|wr| wr.ok_ns < invoke_ns && x.ok_ns < wr.invoke_ns && wr.value != value);
        if let Some(wr) = newer {
            self.note(
                ok_ns,
                &format!(
                    "stale read of {key}: {value} after {} was acknowledged",
                    wr.value
                ),
            );
        }
    }

    pub fn heartbeat(&self, app: &str, instance: &str, now_ns: u64) {
        let mut b = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let beats = b.entry(app.to_string()).or_default();
        if beats.current == instance {
            return;
        }
        let interleaved = beats
            .previous
            .as_ref()
            .is_some_and(|(p, since)| p == instance && now_ns.saturating_sub(*since) < OVERLAP_NS);
        if interleaved {
            let what = format!(
                "two instances of {app} at once ({}, {instance})",
                beats.current
            );
            drop(b);
            self.note(now_ns, &what);
            return;
        }
        let old = std::mem::replace(&mut beats.current, instance.to_string());
        beats.previous = (!old.is_empty()).then_some((old, now_ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_a_stale_read_and_two_instances() {
        let c = Caught::default();
        c.write_ok("k", "a", 0, 10);
        c.write_ok("k", "b", 20, 30);
        c.read_ok("k", Some("b"), 40, 50);
        c.read_ok("k", Some("a"), 25, 50); // concurrent with b: fine
        assert_eq!(c.at_ns(), None);
        c.read_ok("k", Some("a"), 40, 50);
        assert_eq!(c.at_ns(), Some(50));

        let c = Caught::default();
        c.heartbeat("x", "i1", 0);
        c.heartbeat("x", "i1", 2_000_000_000);
        c.heartbeat("x", "i2", 4_000_000_000);
        assert_eq!(c.at_ns(), None);
        c.heartbeat("x", "i1", 4_500_000_000);
        assert_eq!(c.at_ns(), Some(4_500_000_000));

        // A quick handoff (old, then new, never old again) is no evidence.
        let c = Caught::default();
        c.heartbeat("x", "i1", 0);
        c.heartbeat("x", "i2", 100_000_000);
        c.heartbeat("x", "i2", 600_000_000);
        assert_eq!(c.at_ns(), None);
    }
}
