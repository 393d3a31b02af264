//! The leader's write path: concurrent client writes are gathered into one
//! Raft entry (a [`Batch`]), so they share a log append, an fsync and a
//! replication round. A lone write goes out at once; nothing waits on a timer.

use crate::raft::Raft;
use crate::state::{Batch, Outcome, Proposal};
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most writes in one entry, and most bytes of commands in one entry (an
/// entry must fit a Raft frame with room to spare).
pub const MAX_BATCH_PROPOSALS: usize = 512;
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Writes waiting for a batch; beyond this, callers wait (back-pressure).
const MAX_QUEUED: usize = 8192;
/// Batches proposed but not yet committed at once.
const MAX_IN_FLIGHT: usize = 8;

#[derive(Debug)]
pub enum ProposeError {
    /// This node is not the leader: nothing was proposed.
    NotLeader,
    /// Proposed, but the commit was not seen in time: the outcome is unknown.
    Unknown(String),
}

type Waiter = oneshot::Sender<Result<Outcome, ProposeError>>;

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(Proposal, Waiter)>,
}

impl Proposer {
    pub fn start(raft: Raft, commit_timeout: Duration) -> Proposer {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(batch_loop(raft, rx, commit_timeout));
        Proposer { queue }
    }

    /// Proposes one write and waits for its committed, applied outcome.
    pub async fn propose(&self, proposal: Proposal) -> Result<Outcome, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((proposal, tx))
            .await
            .map_err(|_| ProposeError::NotLeader)?;
        rx.await
            .unwrap_or_else(|_| Err(ProposeError::Unknown("the proposer stopped".into())))
    }
}

async fn batch_loop(
    raft: Raft,
    mut rx: mpsc::Receiver<(Proposal, Waiter)>,
    commit_timeout: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.command.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_PROPOSALS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.0.command.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let raft = raft.clone();
        tokio::spawn(async move {
            let (proposals, waiters): (Vec<Proposal>, Vec<Waiter>) = batch.into_iter().unzip();
            let metrics = crate::metrics::get();
            metrics.raft_batch_proposals.observe(proposals.len() as f64);
            let batch = Batch {
                proposed_at_ms: now_ms(),
                proposals,
            };
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(commit_timeout, raft.client_write(batch)).await;
            drop(permit);
            if matches!(result, Ok(Ok(_))) {
                metrics
                    .raft_commit_seconds
                    .observe(crate::metrics::secs(started.elapsed()));
            }
            match result {
                Ok(Ok(response)) => {
                    debug_assert_eq!(response.data.len(), waiters.len());
                    for (waiter, outcome) in waiters.into_iter().zip(response.data) {
                        let _ = waiter.send(Ok(outcome));
                    }
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(ProposeError::NotLeader));
                    }
                }
                Ok(Err(e)) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(ProposeError::Unknown(e.to_string())));
                    }
                }
                Err(_) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(ProposeError::Unknown(format!(
                            "not committed within {commit_timeout:?} (is a quorum reachable?)"
                        ))));
                    }
                }
            }
        });
    }
}

/// The leader's wall clock for the batch it proposes. Time enters the state
/// only this way: decided by the leader, then committed.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
