//! Forwards Docker's event stream to one subscriber through a bounded
//! channel, keeping the `EventStream` contract.
//!
//! A task reads Docker's stream promptly, because Docker drops events for a
//! subscriber that does not read (after a short wait, silently). When our own
//! buffer fills, the loss is made explicit instead: the subscriber gets
//! `EventsLagged` after the buffered events and the stream ends. The task
//! ends when the subscriber drops the stream. It does not reconnect: that is
//! the subscriber's decision, since a resubscribe must come with a resync.

use super::convert::container_event;
use super::errors::{map_error, Subject};
use crate::runtime::{ContainerEvent, EventStream, RuntimeError, EVENT_BUFFER};
use bollard::models::EventMessage;
use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;

type Item = Result<ContainerEvent, RuntimeError>;

pub(super) fn forward(
    source: impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send + Unpin + 'static,
    endpoint: String,
    client_timeout: Duration,
) -> EventStream {
    let (tx, rx) = mpsc::channel::<Item>(EVENT_BUFFER);
    tokio::spawn(pump(source, tx, endpoint, client_timeout));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

async fn pump(
    mut source: impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send + Unpin,
    tx: mpsc::Sender<Item>,
    endpoint: String,
    client_timeout: Duration,
) {
    let last = loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = source.next() => next,
        };
        match next {
            None => {
                break RuntimeError::EngineUnreachable {
                    endpoint,
                    reason: "the engine closed its event stream".into(),
                }
            }
            Some(Err(e)) => {
                break map_error(&endpoint, "events", Subject::Engine, e, client_timeout)
            }
            Some(Ok(message)) => {
                let Some(event) = container_event(message) else {
                    continue;
                };
                match tx.try_send(Ok(event)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    // Counting further drops would mean reading on while the
                    // subscriber cannot keep up; one is enough to say "resync".
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        break RuntimeError::EventsLagged { dropped: 1 }
                    }
                }
            }
        }
    };
    // Waits for room behind the buffered events; returns at once if the
    // subscriber has gone.
    let _ = tx.send(Err(last)).await;
}
