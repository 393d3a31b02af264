//! The deny list: fingerprints of certificates no node may talk to (removed
//! members, revoked users). It is consulted at every TLS handshake, in both
//! directions, and refreshed as a whole from the replicated state.
//!
//! This module only holds the set; who fills it, and when, belongs to the
//! node (from its applied state).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// A shared set of SHA-256 certificate fingerprints (lowercase hex, as
/// [`crate::ca::fingerprint`] makes them). Clones share one set: a node
/// gives the same list to its main and its volume endpoint.
#[derive(Debug, Clone, Default)]
pub struct DenyList {
    // The set is swapped whole, so a handshake reads one consistent
    // version and a replace never waits for readers to finish looking.
    current: Arc<RwLock<Arc<HashSet<String>>>>,
}

impl DenyList {
    pub fn new() -> DenyList {
        DenyList::default()
    }

    /// Replaces the whole set (fingerprints must be lowercase hex).
    pub fn replace(&self, fingerprints: HashSet<String>) {
        let fresh = Arc::new(fingerprints);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            // A panic while holding the lock left a whole set behind: the
            // swap is a single assignment, so the value is still sound.
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// True when `fingerprint` is denied.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.snapshot().contains(fingerprint)
    }

    /// How many fingerprints are denied.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<HashSet<String>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_set_and_replace_swaps_it_whole() {
        let list = DenyList::new();
        let shared = list.clone();
        assert!(!shared.contains("aa"));
        list.replace(["aa".to_string(), "bb".to_string()].into());
        assert!(shared.contains("aa") && shared.contains("bb"));
        list.replace(["cc".to_string()].into());
        assert!(!shared.contains("aa"));
        assert!(shared.contains("cc"));
        assert_eq!(shared.len(), 1);
    }
}
