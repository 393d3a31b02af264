//! Who changed what: a bounded record of committed operator changes, with the
//! author (the user certificate's name), the request id and the leader's
//! clock reading when it proposed the change.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Changes kept; older ones are dropped first.
pub const HISTORY_CAPACITY: usize = 1000;

/// Bytes of history kept (summaries, ids, names), whatever the count.
pub const HISTORY_BYTES: usize = 2 << 20;

/// Longest summary kept for one change.
const MAX_SUMMARY: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub index: u64,
    /// Milliseconds since the Unix epoch, stamped by the leader that proposed
    /// the change (a committed value, not a clock read while applying).
    pub proposed_at_ms: u64,
    pub author: String,
    pub request_id: String,
    pub summary: String,
    /// The node that passed the author's request on to the leader (it
    /// vouched for the author); `None` when the request reached the leader
    /// directly or a node acted for itself.
    #[serde(default)]
    pub via: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    entries: VecDeque<HistoryEntry>,
    /// What `entries` holds, by [`HistoryEntry::bytes`]; recounted after
    /// decoding (it is not stored).
    #[serde(skip)]
    bytes: usize,
}

impl HistoryEntry {
    /// Roughly what the entry costs to keep and to send.
    pub fn bytes(&self) -> usize {
        self.author.len()
            + self.request_id.len()
            + self.summary.len()
            + self.via.as_ref().map_or(0, String::len)
            + 48
    }
}

impl History {
    pub fn record(&mut self, mut entry: HistoryEntry) {
        super::requests::clip_text(&mut entry.summary, MAX_SUMMARY);
        while self.entries.len() >= HISTORY_CAPACITY
            || (!self.entries.is_empty() && self.bytes + entry.bytes() > HISTORY_BYTES)
        {
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= gone.bytes();
            }
        }
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
    }

    /// Recomputes the byte count after decoding.
    pub fn recount(&mut self) {
        self.bytes = self.entries.iter().map(HistoryEntry::bytes).sum();
    }

    /// The kept count equals the entries, which stay within their bounds
    /// (a lone entry may exceed the byte bound) and in index order.
    pub fn check_count(&self) -> Result<(), String> {
        let counted: usize = self.entries.iter().map(HistoryEntry::bytes).sum();
        if counted != self.bytes {
            return Err(format!(
                "kept byte count {} but the entries hold {counted}",
                self.bytes
            ));
        }
        if self.entries.len() > HISTORY_CAPACITY
            || (self.entries.len() > 1 && self.bytes > HISTORY_BYTES)
        {
            return Err(format!(
                "{} entries of {} bytes, above the bounds ({HISTORY_CAPACITY} entries, {HISTORY_BYTES} bytes)",
                self.entries.len(),
                self.bytes
            ));
        }
        let mut indices = self.entries.iter().map(|e| e.index);
        if let Some(first) = indices.next() {
            let mut last = first;
            for index in indices {
                if index < last {
                    return Err(format!("entry at index {index} after one at {last}"));
                }
                last = index;
            }
        }
        Ok(())
    }

    /// Up to `limit` entries older than index `before` (all when `None`),
    /// oldest first, and no more than `max_bytes` of them: a page that fits
    /// a reply frame.
    pub fn page(&self, limit: usize, before: Option<u64>, max_bytes: usize) -> Vec<HistoryEntry> {
        let mut page = Vec::new();
        let mut bytes = 0;
        for entry in self.entries.iter().rev() {
            if before.is_some_and(|b| entry.index >= b) {
                continue;
            }
            if page.len() >= limit || bytes + entry.bytes() > max_bytes {
                break;
            }
            bytes += entry.bytes();
            page.push(entry.clone());
        }
        page.reverse();
        page
    }

    /// Oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter()
    }
}
