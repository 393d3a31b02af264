//! Keeps the TLS deny list equal to the replicated one: after every applied
//! change the node's endpoints refuse exactly the certificates the state
//! denies, and connections already open with a newly denied certificate
//! are closed.

use crate::net::{DenyList, Net};
use crate::raft::StateMachineStore;
use std::collections::HashSet;
use std::sync::Arc;

/// Runs until the state machine goes away.
pub async fn follow(sm: StateMachineStore, deny: DenyList, nets: Vec<Arc<Net>>) {
    let mut applied = sm.subscribe();
    loop {
        let denied: HashSet<String> = sm.read().state.denied.keys().cloned().collect();
        if *deny.snapshot() != denied {
            tracing::info!(
                denied = denied.len(),
                "deny list updated from the replicated state"
            );
            deny.replace(denied.clone());
            for net in &nets {
                net.close_connections_of(&denied);
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}
