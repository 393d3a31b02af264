//! Routes every accepted stream to its service: Raft RPCs to openraft, client
//! and peer requests to the API.
//!
//! The peer's role is checked against the service right after the service
//! tag, before a byte of the request is read: a user's Raft, peer or volume
//! stream is refused at once and costs nothing. Each service reads requests
//! up to its own limit: Raft [`MAX_RAFT_FRAME`] (entry batches), client
//! [`MAX_CLIENT_FRAME`] (deployments), peer [`MAX_PEER_REQUEST`] (small
//! node-to-node requests; their replies may be client-sized).

use crate::api::{Api, ClientEnvelope, ClientReply, PeerReply, PeerRequest};
use crate::ca::Identity;
use crate::net::endpoint::{refuse_stream, serve_call};
use crate::net::frame::{MAX_CLIENT_FRAME, MAX_PEER_REQUEST, MAX_RAFT_FRAME};
use crate::net::{Service, StreamHandler};
use crate::raft::{serve_raft_rpc, Raft, RaftRpc};
use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Dispatcher {
    raft: Raft,
    api: Arc<Api>,
    drain: Arc<Drain>,
}

impl Dispatcher {
    pub fn new(raft: Raft, api: Arc<Api>, drain: Arc<Drain>) -> Dispatcher {
        Dispatcher { raft, api, drain }
    }
}

/// Client requests being served, so that a stopping node refuses new ones
/// (the client tries another node: nothing happened) and lets those in
/// flight answer before Raft stops. Raft and peer streams are not held
/// back: an in-flight write needs them to commit.
#[derive(Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    closing: AtomicBool,
}

/// Counts one client request for as long as it lives.
pub struct Serving<'a>(&'a Drain);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    /// Counts a client request in, unless the node is stopping.
    pub fn begin(&self) -> Option<Serving<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let serving = Serving(self);
        (!self.closing.load(Ordering::SeqCst)).then_some(serving)
    }

    /// Refuses new client requests and waits (at most `limit`) until those
    /// in flight have answered; returns how many had not.
    pub async fn close_and_wait(&self, limit: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = self.in_flight.load(Ordering::SeqCst);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl StreamHandler for Dispatcher {
    fn handle(
        self: Arc<Self>,
        peer: Identity,
        service: Service,
        send: SendStream,
        recv: RecvStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Err(why) = service.admits(&peer) {
                tracing::warn!(%peer, "{why}");
                refuse_stream(send, recv, why).await;
                return;
            }
            match service {
                Service::Raft => {
                    serve_call(
                        &peer,
                        send,
                        recv,
                        MAX_RAFT_FRAME,
                        MAX_RAFT_FRAME,
                        |rpc: RaftRpc| serve_raft_rpc(&self.raft, &peer, rpc),
                    )
                    .await
                }
                Service::Client => {
                    let Some(_serving) = self.drain.begin() else {
                        let why =
                            "refused: this node is shutting down; send the request to another node";
                        refuse_stream(send, recv, why.to_string()).await;
                        return;
                    };
                    serve_call(
                        &peer,
                        send,
                        recv,
                        MAX_CLIENT_FRAME,
                        MAX_CLIENT_FRAME,
                        |env: ClientEnvelope| async {
                            Ok::<ClientReply, String>(self.api.handle_client(&peer, env).await)
                        },
                    )
                    .await
                }
                Service::Peer => {
                    serve_call(
                        &peer,
                        send,
                        recv,
                        MAX_PEER_REQUEST,
                        MAX_CLIENT_FRAME,
                        |req: PeerRequest| async {
                            let reply: Result<PeerReply, String> =
                                self.api.handle_peer(&peer, req).await;
                            reply
                        },
                    )
                    .await
                }
                Service::Volume => {
                    // Volume data has its own endpoint (invariant 7).
                    refuse_stream(
                        send,
                        recv,
                        "volume streams go to the node's volume endpoint, not this one".into(),
                    )
                    .await
                }
            }
        })
    }
}
