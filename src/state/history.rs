//! Who changed what: a bounded record of committed operator changes, with the
//! author (the user certificate's name), the request id and the leader's
//! clock reading when it proposed the change.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Changes kept; older ones are dropped first.
pub const HISTORY_CAPACITY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub index: u64,
    /// Milliseconds since the Unix epoch, stamped by the leader that proposed
    /// the change (a committed value, not a clock read while applying).
    pub proposed_at_ms: u64,
    pub author: String,
    pub request_id: String,
    pub summary: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    entries: VecDeque<HistoryEntry>,
}

impl History {
    pub fn record(&mut self, entry: HistoryEntry) {
        while self.entries.len() >= HISTORY_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter()
    }
}
