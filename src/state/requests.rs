//! The bounded window of recently applied request ids (invariant 6): a client
//! that retries within the window gets the first outcome back instead of a
//! second application.

use super::command::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How many request ids are remembered. At a thousand writes a second this is
/// almost a minute of retries; `ctl` gives up on a request long before.
pub const REQUEST_WINDOW_CAPACITY: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    pub fingerprint: [u8; 32],
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestWindow {
    seen: BTreeMap<String, SeenRequest>,
    /// Ids in the order they were applied; the oldest is evicted first.
    order: VecDeque<String>,
}

impl RequestWindow {
    pub fn get(&self, id: &str) -> Option<&SeenRequest> {
        self.seen.get(id)
    }

    pub fn remember(&mut self, id: String, fingerprint: [u8; 32], outcome: Outcome) {
        if self.seen.contains_key(&id) {
            return;
        }
        while self.order.len() >= REQUEST_WINDOW_CAPACITY {
            let oldest = self.order.pop_front().expect("non-empty");
            self.seen.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.seen.insert(
            id,
            SeenRequest {
                fingerprint,
                outcome,
            },
        );
        debug_assert_eq!(self.order.len(), self.seen.len());
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_and_evicts_oldest() {
        let mut w = RequestWindow::default();
        for i in 0..REQUEST_WINDOW_CAPACITY + 10 {
            w.remember(
                format!("r{i}"),
                [0; 32],
                Outcome::done(i as u64, String::new()),
            );
        }
        assert_eq!(w.len(), REQUEST_WINDOW_CAPACITY);
        assert!(w.get("r0").is_none());
        assert!(w.get("r9").is_none());
        assert!(w.get("r10").is_some());
    }
}
