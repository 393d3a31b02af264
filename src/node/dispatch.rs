//! Routes every accepted stream to its service: Raft RPCs to openraft, client
//! and peer requests to the API.

use crate::api::{Api, ClientEnvelope, ClientReply, PeerReply, PeerRequest};
use crate::ca::Identity;
use crate::net::endpoint::serve_call;
use crate::net::frame::{MAX_CLIENT_FRAME, MAX_RAFT_FRAME};
use crate::net::{Service, StreamHandler};
use crate::raft::{serve_raft_rpc, Raft, RaftRpc};
use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use std::sync::Arc;

pub struct Dispatcher {
    raft: Raft,
    api: Arc<Api>,
}

impl Dispatcher {
    pub fn new(raft: Raft, api: Arc<Api>) -> Dispatcher {
        Dispatcher { raft, api }
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
            match service {
                Service::Raft => {
                    serve_call(&peer, send, recv, MAX_RAFT_FRAME, |rpc: RaftRpc| {
                        serve_raft_rpc(&self.raft, &peer, rpc)
                    })
                    .await
                }
                Service::Client => {
                    serve_call(
                        &peer,
                        send,
                        recv,
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
                    serve_call(&peer, send, recv, MAX_CLIENT_FRAME, |_: ()| async {
                        Err::<(), String>(
                            "volume streams go to the node's volume endpoint, not this one".into(),
                        )
                    })
                    .await
                }
            }
        })
    }
}
