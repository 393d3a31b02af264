//! The bounded window of recently applied request ids (invariant 6): a client
//! that retries within the window gets the first outcome back instead of a
//! second application.

use super::command::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How many request ids are remembered. At a thousand writes a second this is
/// almost a minute of retries; `ctl` gives up on a request long before.
pub const REQUEST_WINDOW_CAPACITY: usize = 50_000;

/// Bytes the window may hold (ids, fingerprints and outcome texts), so that
/// large outcomes cannot grow it past the count's intent.
pub const REQUEST_WINDOW_BYTES: usize = 16 << 20;

/// Longest outcome text remembered for a retry; longer ones are cut.
const MAX_REMEMBERED_TEXT: usize = 1024;

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
    /// What `seen` holds, by [`entry_bytes`]; recounted after decoding.
    #[serde(skip)]
    bytes: usize,
}

/// What one remembered request costs, roughly as held in memory.
fn entry_bytes(id: &str, seen: &SeenRequest) -> usize {
    let text = match &seen.outcome.result {
        Ok(t) | Err(t) => t.len(),
    };
    2 * id.len() + 32 + text + 64
}

impl RequestWindow {
    pub fn get(&self, id: &str) -> Option<&SeenRequest> {
        self.seen.get(id)
    }

    pub fn remember(&mut self, id: String, fingerprint: [u8; 32], mut outcome: Outcome) {
        if self.seen.contains_key(&id) {
            return;
        }
        match &mut outcome.result {
            Ok(text) | Err(text) => clip_text(text, MAX_REMEMBERED_TEXT),
        }
        let seen = SeenRequest {
            fingerprint,
            outcome,
        };
        let cost = entry_bytes(&id, &seen);
        while self.order.len() >= REQUEST_WINDOW_CAPACITY
            || (!self.order.is_empty() && self.bytes + cost > REQUEST_WINDOW_BYTES)
        {
            let oldest = self.order.pop_front().expect("non-empty");
            if let Some(gone) = self.seen.remove(&oldest) {
                self.bytes -= entry_bytes(&oldest, &gone);
            }
        }
        self.order.push_back(id.clone());
        self.seen.insert(id, seen);
        self.bytes += cost;
        debug_assert_eq!(self.order.len(), self.seen.len());
    }

    /// Recomputes the byte count after decoding (it is not stored).
    pub fn recount(&mut self) {
        self.bytes = self.seen.iter().map(|(id, s)| entry_bytes(id, s)).sum();
    }

    /// Bytes held, as counted against [`REQUEST_WINDOW_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub(super) fn clip_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
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
