//! The QUIC endpoint of a node (or of `flocker ctl`): accepting connections,
//! reading the peer's identity from its certificate, dispatching each stream by
//! its service tag, and making request/reply calls over pooled connections.
//!
//! One stream carries one call: a service tag byte, one request frame, one
//! reply frame (`Result<Reply, String>`, the error being a refusal in words).
//!
//! Everything a peer can make this side hold is bounded before it is held:
//! handshakes in progress, accepted connections (in all, for users, per
//! identity), concurrent streams per connection (fewer for users), the time
//! a stream may take to deliver its request, and the memory of request
//! bodies (read as they arrive; users' large bodies draw on one budget).
//! The accepted connections are registered with their identity so that a
//! revoked certificate's connections can be closed
//! ([`Net::close_connections_of`]).

use super::frame::{read_frame, write_encoded, write_frame, FrameError, PartialFrame};
use super::tls::{server_name, TlsMaterial};
use crate::ca::{Identity, Role};
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};

/// How long establishing a connection (QUIC + TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a process that closed its endpoint gives the close packets to
/// leave before it exits (a connection not closed stays open on the node,
/// counting against the limits below, until the 3 s idle timeout).
pub const CLOSE_FLUSH: Duration = Duration::from_millis(20);

/// Connections a node accepts at once, all peers together. Sized for a few
/// hundred nodes (each keeps one pooled connection to every node it calls,
/// and a reconnect may overlap the old one for the 3 s idle timeout) plus
/// the user connections below; an idle connection costs a few KiB.
pub const MAX_CONNECTIONS: usize = 1024;
/// Of those, connections with user certificates, all users together: a few
/// operators, their scripts and `flocker bench raft` (64 clients, one
/// connection each). Keeps users from crowding out nodes.
pub const MAX_USER_CONNECTIONS: usize = 128;
/// Connections one user (by name) may hold: each `ctl` run opens one, and a
/// `ctl` that exits without closing leaves it for the 3 s idle timeout, so a
/// busy script needs some dozens. Beyond it the node refuses with a reason.
pub const MAX_CONNECTIONS_PER_USER: usize = 96;
/// Connections one node (by name) may hold. A node pools one connection per
/// address; more appear only when it redials after a timeout or restart,
/// and then the oldest one is closed as superseded rather than the new one
/// refused, so a restarted node never waits for its dead connections.
pub const MAX_CONNECTIONS_PER_NODE: usize = 8;
/// Handshakes in progress at once (before any identity is known); more are
/// refused at once, so a handshake flood cannot hold unbounded state.
pub const MAX_HANDSHAKES: usize = 256;

/// Concurrent streams on a user connection: `ctl` uses one per run; a
/// program may pipeline a few. This is also what the QUIC handshake
/// advertises to everyone, before the peer's identity is known.
pub const USER_STREAMS_PER_CONNECTION: u32 = 16;
/// Concurrent streams on a node connection, raised once the certificate
/// says it is a node: Raft replication, votes, heartbeats, probes and the
/// writes a node forwards for its users all share it.
pub const NODE_STREAMS_PER_CONNECTION: u32 = 256;
/// Connection-level flow control window until the peer is known to be a
/// node (QUIC's default is unlimited): what one user connection can make
/// QUIC buffer on this side. Node connections are raised to unlimited.
pub const USER_RECEIVE_WINDOW: u32 = 2 << 20;

/// Time a stream gets to deliver its service tag, and the base of the time
/// it gets for its request frame.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The rate a request (or reply) must at least keep on top of
/// [`REQUEST_TIMEOUT`]: a legitimate 32 MiB Raft frame gets 42 s, which a
/// link of 1 MiB/s meets; a 4 MiB client request gets 14 s.
pub const MIN_TRANSFER_RATE: u64 = 1 << 20;

/// Bytes of a user's request body that are free; bytes beyond them are
/// held against [`USER_BODY_BUDGET`] until the reply is sent. Most requests
/// are far smaller, so ordinary use never waits on the budget.
const FREE_BODY_BYTES: usize = 16 << 10;
/// Memory all user request bodies together may hold beyond their free
/// bytes: 16 full-size deploys. A stream that cannot get budget waits (and
/// times out like any slow stream).
const USER_BODY_BUDGET_BYTES: usize = 64 << 20;
static USER_BODY_BUDGET: Semaphore = Semaphore::const_new(USER_BODY_BUDGET_BYTES);

/// Application close codes, readable by the peer with the reason text.
/// The connection was refused after the handshake; nothing was read from it.
pub const CLOSE_REFUSED: u32 = 1;
/// The peer's certificate was revoked while the connection was open.
pub const CLOSE_REVOKED: u32 = 2;
/// A newer connection from the same node replaced this one.
pub const CLOSE_SUPERSEDED: u32 = 3;

/// Stream error codes (QUIC RESET_STREAM / STOP_SENDING).
/// The service refused the stream without reading its request.
pub const STREAM_REFUSED: u32 = 1;
/// The request or the reply did not move within its time bound.
pub const STREAM_TIMED_OUT: u32 = 2;

/// How long a request or reply of `len` bytes may take to cross.
pub fn transfer_bound(len: usize) -> Duration {
    REQUEST_TIMEOUT + Duration::from_secs((len as u64).div_ceil(MIN_TRANSFER_RATE))
}

/// What a stream is for; the first byte of every stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Service {
    /// openraft RPCs: node certificates only.
    Raft = 1,
    /// Operator requests, and requests nodes forward to the leader.
    Client = 2,
    /// Node-to-node requests outside Raft (status probes, read index, join).
    Peer = 3,
    /// Volume streams, served only on a node's separate volume endpoint.
    Volume = 4,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Raft => "Raft",
            Service::Client => "client",
            Service::Peer => "peer",
            Service::Volume => "volume",
        }
    }

    /// Who may open streams of this service: clients anyone with a
    /// certificate of this cluster, everything else nodes only. Checked
    /// right after the service tag, before a byte of the request is read.
    pub fn admits(self, peer: &Identity) -> Result<(), String> {
        match (self, peer.role) {
            (Service::Client, _) | (_, Role::Node) => Ok(()),
            (service, Role::User) => Err(format!(
                "refused: {} streams need a node certificate, and this is the certificate of {peer}",
                service.name()
            )),
        }
    }

    fn from_byte(b: u8) -> Option<Service> {
        match b {
            1 => Some(Service::Raft),
            2 => Some(Service::Client),
            3 => Some(Service::Peer),
            4 => Some(Service::Volume),
            _ => None,
        }
    }
}

/// Serves the streams a node accepts. Implemented by the node's dispatcher.
pub trait StreamHandler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: Identity,
        service: Service,
        send: SendStream,
        recv: RecvStream,
    ) -> BoxFuture<'static, ()>;
}

/// Why a call failed, and so whether its effect is known.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: no connection, or the peer refused our credentials.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    /// The request is larger than the frame limit; nothing was sent.
    #[error("request of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The peer read the request and refused it; nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The request was sent but no reply came in time: the outcome is unknown.
    #[error("no reply from {addr} within {timeout:?}: the outcome is unknown")]
    Timeout { addr: SocketAddr, timeout: Duration },
    /// The request was sent but the stream broke: the outcome is unknown.
    #[error("connection to {addr} broke after sending: {reason}; the outcome is unknown")]
    Broken { addr: SocketAddr, reason: String },
}

impl CallError {
    /// True when the request may have taken effect.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CallError::Timeout { .. } | CallError::Broken { .. })
    }
}

pub struct Net {
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    pool: Mutex<HashMap<SocketAddr, (Connection, Identity)>>,
    /// Our own certificate, to explain a peer's refusal of it.
    own: Option<Identity>,
    accepted: Arc<Mutex<Accepted>>,
}

/// The connections this endpoint accepted, with who is on the other end.
#[derive(Default)]
struct Accepted {
    /// By `Connection::stable_id`, with the order they were admitted in.
    conns: HashMap<usize, (Connection, Identity, u64)>,
    admitted: u64,
    handshaking: usize,
}

impl Accepted {
    /// Registers `conn` or says why it is refused. Returns the connections
    /// it supersedes (a node's oldest, beyond its per-node limit).
    fn admit(&mut self, conn: &Connection, peer: &Identity) -> Result<Vec<Connection>, String> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err(format!(
                "this node already has {MAX_CONNECTIONS} connections open, its limit"
            ));
        }
        let same = |other: &Identity| other.role == peer.role && other.name == peer.name;
        let mut superseded = Vec::new();
        match peer.role {
            Role::User => {
                let users = self
                    .conns
                    .values()
                    .filter(|(_, id, _)| id.role == Role::User)
                    .count();
                if users >= MAX_USER_CONNECTIONS {
                    return Err(format!(
                        "this node already serves {MAX_USER_CONNECTIONS} user connections, its limit"
                    ));
                }
                let own = self.conns.values().filter(|(_, id, _)| same(id)).count();
                if own >= MAX_CONNECTIONS_PER_USER {
                    return Err(format!(
                        "{peer} already has {own} connections open to this node, the limit per user"
                    ));
                }
            }
            Role::Node => {
                let mut own: Vec<(u64, usize)> = self
                    .conns
                    .iter()
                    .filter(|(_, (_, id, _))| same(id))
                    .map(|(key, (_, _, order))| (*order, *key))
                    .collect();
                own.sort_unstable();
                let excess = (own.len() + 1).saturating_sub(MAX_CONNECTIONS_PER_NODE);
                for (_, key) in own.into_iter().take(excess) {
                    if let Some((old, _, _)) = self.conns.remove(&key) {
                        superseded.push(old);
                    }
                }
            }
        }
        self.admitted += 1;
        self.conns.insert(
            conn.stable_id(),
            (conn.clone(), peer.clone(), self.admitted),
        );
        Ok(superseded)
    }
}

/// Forgets an accepted connection when its serving task ends.
struct Registered {
    accepted: Arc<Mutex<Accepted>>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.accepted).conns.remove(&self.key);
    }
}

/// Counts a handshake in progress for as long as it lives.
struct Handshake(Arc<Mutex<Accepted>>);

impl Handshake {
    fn begin(accepted: &Arc<Mutex<Accepted>>) -> Option<Handshake> {
        let mut a = lock(accepted);
        if a.handshaking >= MAX_HANDSHAKES {
            return None;
        }
        a.handshaking += 1;
        Some(Handshake(accepted.clone()))
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        lock(&self.0).handshaking -= 1;
    }
}

/// The registry's lock. Its holders never panic while holding it, but a
/// poisoned lock must not take the endpoint down either: the data is still
/// a consistent map.
fn lock(accepted: &Mutex<Accepted>) -> std::sync::MutexGuard<'_, Accepted> {
    accepted
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Net {
    /// A node's endpoint: serves on `listen` and calls out from the same port.
    pub fn server(listen: SocketAddr, tls: &TlsMaterial) -> Result<Arc<Net>> {
        let endpoint = Endpoint::server(tls.server_config()?, listen)
            .with_context(|| format!("binding UDP {listen}"))?;
        Ok(Arc::new(Net {
            endpoint,
            client: tls.client_config()?,
            pool: Mutex::new(HashMap::new()),
            own: tls.own_identity(),
            accepted: Arc::default(),
        }))
    }

    /// A client-only endpoint on an ephemeral port of the loopback or any
    /// interface, matching the family of the node it will call.
    pub fn client(tls: &TlsMaterial, target: SocketAddr) -> Result<Arc<Net>> {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let endpoint = Endpoint::client(bind).context("binding a UDP port")?;
        Ok(Arc::new(Net {
            endpoint,
            client: tls.client_config()?,
            pool: Mutex::new(HashMap::new()),
            own: tls.own_identity(),
            accepted: Arc::default(),
        }))
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts connections until the endpoint closes, handing every stream to
    /// `handler`. Connections that fail authentication or exceed a limit are
    /// logged and closed with the reason.
    pub fn serve(self: &Arc<Self>, handler: Arc<dyn StreamHandler>) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let own = self.own.clone();
        let accepted = self.accepted.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let remote = incoming.remote_address();
                let Some(handshake) = Handshake::begin(&accepted) else {
                    tracing::warn!(
                        %remote,
                        "refused connection: {MAX_HANDSHAKES} handshakes already under way"
                    );
                    incoming.refuse();
                    continue;
                };
                let handler = handler.clone();
                let own = own.clone();
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    let conn = incoming.await;
                    drop(handshake);
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(%remote, "refused connection: {}", explain(own.as_ref(), &e));
                            return;
                        }
                    };
                    let identity = match peer_identity(&conn) {
                        Ok(id) => id,
                        Err(e) => {
                            tracing::warn!(%remote, "refused connection: {e:#}");
                            conn.close(CLOSE_REFUSED.into(), b"unusable certificate");
                            return;
                        }
                    };
                    let admitted = lock(&accepted).admit(&conn, &identity);
                    match admitted {
                        Err(why) => {
                            tracing::warn!(%remote, peer = %identity, "refused connection: {why}");
                            conn.close(CLOSE_REFUSED.into(), why.as_bytes());
                            return;
                        }
                        Ok(superseded) => {
                            for old in superseded {
                                tracing::info!(
                                    peer = %identity,
                                    old = %old.remote_address(),
                                    "closing a connection superseded by a newer one from the same node"
                                );
                                old.close(
                                    CLOSE_SUPERSEDED.into(),
                                    b"superseded by a newer connection from the same node",
                                );
                            }
                        }
                    }
                    let _registered = Registered {
                        accepted,
                        key: conn.stable_id(),
                    };
                    if identity.role == Role::Node {
                        // The handshake advertised users' limits to everyone.
                        conn.set_max_concurrent_bi_streams(NODE_STREAMS_PER_CONNECTION.into());
                        conn.set_receive_window(VarInt::MAX);
                    }
                    serve_connection(conn, identity, handler).await;
                });
            }
        })
    }

    /// Closes every connection, accepted or pooled, whose peer certificate
    /// has one of `fingerprints` (SHA-256 of the DER, lowercase hex, as in
    /// [`Identity::fingerprint`]) with the reason "certificate revoked", and
    /// forgets them. Streams in progress on them end with it. Returns how
    /// many connections were closed.
    pub fn close_connections_of(&self, fingerprints: &HashSet<String>) -> usize {
        let mut closed = Vec::new();
        {
            let mut accepted = lock(&self.accepted);
            let revoked: Vec<usize> = accepted
                .conns
                .iter()
                .filter(|(_, (_, id, _))| fingerprints.contains(&id.fingerprint))
                .map(|(key, _)| *key)
                .collect();
            for key in revoked {
                if let Some((conn, id, _)) = accepted.conns.remove(&key) {
                    closed.push((conn, id));
                }
            }
        }
        {
            let mut pool = self.pool.lock().expect("pool lock");
            pool.retain(|_, (conn, id)| {
                let revoked = fingerprints.contains(&id.fingerprint);
                if revoked {
                    closed.push((conn.clone(), id.clone()));
                }
                !revoked
            });
        }
        for (conn, id) in &closed {
            tracing::warn!(
                peer = %id,
                remote = %conn.remote_address(),
                "closing the connection of a revoked certificate"
            );
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
        }
        closed.len()
    }

    /// How many accepted connections are open now (tests and diagnostics).
    pub fn accepted_connections(&self) -> usize {
        lock(&self.accepted).conns.len()
    }

    /// A pooled connection to `addr`, opened if needed, whose certificate must
    /// name `expect` when given.
    async fn connection(
        &self,
        addr: SocketAddr,
        expect: Option<&str>,
    ) -> Result<(Connection, Identity), CallError> {
        let unreachable = |reason: String| CallError::Unreachable { addr, reason };
        let pooled = self.pool.lock().expect("pool lock").get(&addr).cloned();
        let (conn, identity) = match pooled {
            Some((conn, id)) if conn.close_reason().is_none() => (conn, id),
            _ => {
                let connecting = self
                    .endpoint
                    .connect_with(self.client.clone(), addr, server_name())
                    .map_err(|e| unreachable(e.to_string()))?;
                let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                    .await
                    .map_err(|_| unreachable(format!("no handshake within {CONNECT_TIMEOUT:?}")))?
                    .map_err(|e| unreachable(self.explain(&e)))?;
                let id = peer_identity(&conn).map_err(|e| unreachable(format!("{e:#}")))?;
                self.pool
                    .lock()
                    .expect("pool lock")
                    .insert(addr, (conn.clone(), id.clone()));
                (conn, id)
            }
        };
        if let Some(expected) = expect {
            if identity.name != expected || identity.role != crate::ca::Role::Node {
                return Err(unreachable(format!(
                    "expected node '{expected}' there, but its certificate is that of {identity}"
                )));
            }
        }
        Ok((conn, identity))
    }

    fn forget(&self, addr: SocketAddr) {
        self.pool.lock().expect("pool lock").remove(&addr);
    }

    /// One request/reply call on a new stream.
    pub async fn call<Req, Resp>(
        &self,
        addr: SocketAddr,
        expect: Option<&str>,
        service: Service,
        request: &Req,
        max_frame: usize,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = super::frame::encode(request);
        if body.len() > max_frame {
            return Err(CallError::TooLarge {
                len: body.len(),
                max: max_frame,
            });
        }
        let (conn, mut send, mut recv) = self.open_on(addr, expect).await?;
        let broken = |reason: String| match conn.close_reason() {
            // The peer refused our certificate after our side finished the
            // TLS 1.3 handshake, or refused the connection past a limit: it
            // never read the request.
            Some(close) if is_tls_refusal(&close) || is_refusal(&close) => CallError::Unreachable {
                addr,
                reason: self.explain(&close),
            },
            _ => CallError::Broken { addr, reason },
        };
        let exchange = async {
            let sent = async {
                send.write_all(&[service as u8])
                    .await
                    .map_err(|e| e.to_string())?;
                write_encoded(&mut send, &body)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(why) = sent {
                // A peer refusing a stream stops it without reading the
                // request (`refuse_stream`): its refusal may be waiting.
                return match read_frame::<_, Result<Resp, String>>(&mut recv, max_frame).await {
                    Ok(Err(refusal)) => Err(CallError::Refused(refusal)),
                    _ => Err(broken(why)),
                };
            }
            let _ = send.finish();
            let reply: Result<Resp, String> = read_frame(&mut recv, max_frame)
                .await
                .map_err(|e| broken(describe_frame_error(&e)))?;
            reply.map_err(CallError::Refused)
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout { addr, timeout }),
        };
        // A silent or broken connection may belong to a peer that restarted
        // (its new process cannot reset our old connection): dial afresh next time.
        if matches!(
            result,
            Err(CallError::Broken { .. } | CallError::Timeout { .. })
        ) {
            self.forget(addr);
        }
        result
    }

    /// Opens a stream, reconnecting once if the pooled connection went stale.
    pub async fn open(
        &self,
        addr: SocketAddr,
        expect: Option<&str>,
    ) -> Result<(SendStream, RecvStream), CallError> {
        let (_, send, recv) = self.open_on(addr, expect).await?;
        Ok((send, recv))
    }

    async fn open_on(
        &self,
        addr: SocketAddr,
        expect: Option<&str>,
    ) -> Result<(Connection, SendStream, RecvStream), CallError> {
        for attempt in 0..2 {
            let (conn, _) = self.connection(addr, expect).await?;
            match conn.open_bi().await {
                Ok((send, recv)) => return Ok((conn, send, recv)),
                Err(e) => {
                    self.forget(addr);
                    if attempt == 1 {
                        return Err(CallError::Unreachable {
                            addr,
                            reason: self.explain(&e),
                        });
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// [`describe`], and which of our certificates a peer refused, and why.
    pub fn explain(&self, e: &ConnectionError) -> String {
        explain(self.own.as_ref(), e)
    }

    /// Closes every connection and the endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

/// [`describe`], and when the peer's TLS alert says it refused our own
/// certificate (`own`) as expired or revoked, which certificate and since when.
fn explain(own: Option<&Identity>, e: &ConnectionError) -> String {
    let (Some(alert), Some(own)) = (tls_alert(e), own) else {
        return describe(e);
    };
    match alert {
        ALERT_CERTIFICATE_EXPIRED if own.not_after <= unix_now() => format!(
            "the peer refused our certificate: our certificate ({own}) expired on {}; \
             renew it (`flocker ca renew`) and use the new one",
            own.expires()
        ),
        ALERT_CERTIFICATE_EXPIRED => format!(
            "the peer refused our certificate ({own}) as expired or not yet valid, \
             though it is valid until {}: is that peer's clock wrong?",
            own.expires()
        ),
        ALERT_CERTIFICATE_REVOKED => format!(
            "the peer refused our certificate: our certificate ({own}, fingerprint {}) is revoked",
            own.fingerprint
        ),
        _ => describe(e),
    }
}

async fn serve_connection(conn: Connection, identity: Identity, handler: Arc<dyn StreamHandler>) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(_) => return,
        };
        let handler = handler.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let mut tag = [0u8; 1];
            match timeout(REQUEST_TIMEOUT, recv.read_exact(&mut tag)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(peer = %identity, "stream timed out: no service tag within {REQUEST_TIMEOUT:?}");
                    let _ = recv.stop(STREAM_TIMED_OUT.into());
                    let _ = send.reset(STREAM_TIMED_OUT.into());
                    return;
                }
            }
            match Service::from_byte(tag[0]) {
                Some(service) => handler.handle(identity, service, send, recv).await,
                None => {
                    tracing::warn!(peer = %identity, tag = tag[0], "unknown service tag");
                    refuse_stream(send, recv, format!("unknown service tag {}", tag[0])).await;
                }
            }
        });
    }
}

/// Answers a stream with a refusal (a `Result<(), String>` error frame)
/// without reading its request, and asks the peer to stop sending it.
pub async fn refuse_stream(mut send: SendStream, mut recv: RecvStream, why: String) {
    let _ = recv.stop(STREAM_REFUSED.into());
    let reply: Result<(), String> = Err(why);
    match timeout(REQUEST_TIMEOUT, write_frame(&mut send, &reply, 64 << 10)).await {
        Ok(_) => {
            let _ = send.finish();
            let _ = timeout(REQUEST_TIMEOUT, send.stopped()).await;
        }
        Err(_) => {
            let _ = send.reset(STREAM_REFUSED.into());
        }
    }
}

/// Why a request was not read.
enum RequestError {
    Frame(FrameError),
    TimedOut {
        bound: Duration,
        received: usize,
        declared: Option<usize>,
    },
}

/// A request read within its time bound, and the user budget its body holds.
struct Request<T> {
    message: T,
    _budget: Option<SemaphorePermit<'static>>,
}

/// Reads one request frame as its bytes arrive: the length prefix within
/// [`REQUEST_TIMEOUT`], the whole frame within [`transfer_bound`] of its
/// declared length. A user's body bytes beyond [`FREE_BODY_BYTES`] are held
/// against the user body budget.
async fn read_request<T: DeserializeOwned>(
    peer: &Identity,
    recv: &mut RecvStream,
    max: usize,
) -> Result<Request<T>, RequestError> {
    let started = Instant::now();
    let head = timeout_at(started + REQUEST_TIMEOUT, PartialFrame::start(recv, max))
        .await
        .map_err(|_| RequestError::TimedOut {
            bound: REQUEST_TIMEOUT,
            received: 0,
            declared: None,
        })?;
    let mut frame = head.map_err(RequestError::Frame)?;
    let bound = transfer_bound(frame.declared());
    let deadline = started + bound;
    let timed_out = |frame: &PartialFrame| RequestError::TimedOut {
        bound,
        received: frame.received(),
        declared: Some(frame.declared()),
    };
    let mut held: Option<SemaphorePermit<'static>> = None;
    while !frame.is_complete() {
        let step = frame.next_step();
        let charged = peer.role == Role::User && frame.received() + step > FREE_BODY_BYTES;
        let mut reserved = if charged {
            // Steps are at most READ_STEP bytes, far below u32::MAX.
            let permits = u32::try_from(step).unwrap_or(u32::MAX);
            match timeout_at(deadline, USER_BODY_BUDGET.acquire_many(permits)).await {
                Ok(Ok(permit)) => Some(permit),
                // The budget is never closed.
                Ok(Err(_)) => None,
                Err(_) => return Err(timed_out(&frame)),
            }
        } else {
            None
        };
        let n = match timeout_at(deadline, frame.read_more(recv)).await {
            Ok(read) => read.map_err(RequestError::Frame)?,
            Err(_) => return Err(timed_out(&frame)),
        };
        // Keep budget for the bytes that came; the rest goes back.
        if let Some(kept) = reserved.as_mut().and_then(|r| r.split(n)) {
            match held.as_mut() {
                Some(h) => h.merge(kept),
                None => held = Some(kept),
            }
        }
    }
    let message = frame.decode().map_err(RequestError::Frame)?;
    Ok(Request {
        message,
        _budget: held,
    })
}

/// Serves one request/reply stream: reads a request (refusing bad frames with
/// a reason, which closes only this stream, and timing out slow ones), runs
/// `f`, writes its reply. The request may be at most `max_request` bytes, the
/// reply `max_reply`.
pub async fn serve_call<Req, Resp, F, Fut>(
    peer: &Identity,
    mut send: SendStream,
    mut recv: RecvStream,
    max_request: usize,
    max_reply: usize,
    f: F,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, String>>,
{
    let (reply, _budget) = match read_request::<Req>(peer, &mut recv, max_request).await {
        Ok(Request { message, _budget }) => (f(message).await, _budget),
        Err(RequestError::Frame(e)) => {
            tracing::warn!(%peer, "bad frame: {}", describe_frame_error(&e));
            (
                Err(format!("bad frame: {}", describe_frame_error(&e))),
                None,
            )
        }
        Err(RequestError::TimedOut {
            bound,
            received,
            declared,
        }) => {
            let progress = match declared {
                Some(declared) => format!("{received} of {declared} bytes arrived"),
                None => "not even its length arrived".to_string(),
            };
            let why = format!("stream timed out: no whole request within {bound:?} ({progress})");
            tracing::warn!(%peer, "{why}");
            let _ = recv.stop(STREAM_TIMED_OUT.into());
            (Err(why), None)
        }
    };
    let body = super::frame::encode(&reply);
    let body = if body.len() > max_reply {
        tracing::warn!(%peer, "reply of {} bytes exceeds the limit of {max_reply}", body.len());
        super::frame::encode(&Err::<Resp, String>(format!(
            "reply not sendable: {} bytes exceed the limit of {max_reply}",
            body.len()
        )))
    } else {
        body
    };
    let bound = transfer_bound(body.len());
    match timeout(bound, write_encoded(&mut send, &body)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
            // Let the reply drain before the stream is dropped.
            let _ = timeout(REQUEST_TIMEOUT, send.stopped()).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, "could not send reply: {e}"),
        Err(_) => {
            tracing::warn!(%peer, "stream timed out: the reply was not taken within {bound:?}");
            let _ = send.reset(STREAM_TIMED_OUT.into());
        }
    }
}

fn describe_frame_error(e: &FrameError) -> String {
    e.to_string()
}

fn peer_identity(conn: &Connection) -> Result<Identity> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .context("peer presented no certificate")?;
    let leaf = certs.first().context("peer presented an empty chain")?;
    Identity::from_der(leaf)
}

/// True when the node refused the connection after the handshake (a limit).
fn is_refusal(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::ApplicationClosed(close)
        if close.error_code == VarInt::from(CLOSE_REFUSED))
}

/// True when the connection was closed with a TLS alert (a crypto error code).
fn is_tls_refusal(e: &ConnectionError) -> bool {
    tls_alert(e).is_some()
}

/// The TLS alert a peer closed the connection with (QUIC carries it as a
/// crypto error code, 0x100 + alert).
fn tls_alert(e: &ConnectionError) -> Option<u8> {
    match e {
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
        }
        _ => None,
    }
}

const ALERT_CERTIFICATE_REVOKED: u8 = 44;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Turns QUIC/TLS failures into words an operator can act on.
pub fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            if (0x100..0x200).contains(&code) {
                let alert = (code - 0x100) as u8;
                format!(
                    "the node refused our TLS credentials ({}); is this certificate issued by this cluster's CA?",
                    tls_alert_name(alert)
                )
            } else {
                format!("connection closed by peer: {close}")
            }
        }
        // Our verifier refused the node's certificate and logged why.
        ConnectionError::TransportError(t)
            if t.reason.contains("invalid peer certificate")
                && t.reason.contains("certificate expired") =>
        {
            format!("TLS handshake failed: {t}: the peer's certificate has expired")
        }
        ConnectionError::TransportError(t)
            if t.reason.contains("invalid peer certificate") && t.reason.contains("Revoked") =>
        {
            "TLS handshake failed: the peer's certificate is revoked (on our deny list)".to_string()
        }
        ConnectionError::TransportError(t) if t.reason.contains("invalid peer certificate") => {
            format!(
                "TLS handshake failed: {t}: that node's certificate is not signed by the CA in your certs directory"
            )
        }
        ConnectionError::TransportError(t) => format!("TLS/QUIC handshake failed: {t}"),
        ConnectionError::ApplicationClosed(close) if is_refusal(e) => format!(
            "the node refused this connection: {}",
            String::from_utf8_lossy(&close.reason)
        ),
        ConnectionError::ApplicationClosed(close) => format!(
            "connection closed by peer: {}",
            String::from_utf8_lossy(&close.reason)
        ),
        ConnectionError::TimedOut => "timed out (no response from that address)".to_string(),
        other => other.to_string(),
    }
}

fn tls_alert_name(alert: u8) -> String {
    let name = match alert {
        40 => "handshake failure",
        42 => "bad certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        116 => "certificate required",
        120 => "no application protocol",
        _ => return format!("TLS alert {alert}"),
    };
    format!("TLS alert {alert}: {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{self, CertsDir};
    use crate::net::tls::load_cert;

    /// Answers every call with the caller's name, as its certificate says.
    struct Echo;

    impl StreamHandler for Echo {
        fn handle(
            self: Arc<Self>,
            peer: Identity,
            _service: Service,
            send: SendStream,
            recv: RecvStream,
        ) -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let name = peer.name.clone();
                serve_call(&peer, send, recv, 1024, 1024, |_: ()| async move {
                    Ok::<String, String>(name)
                })
                .await
            })
        }
    }

    fn fingerprint(certs: &CertsDir, role: Role, name: &str) -> String {
        Identity::from_der(&load_cert(&certs.cert(role, name)).unwrap())
            .unwrap()
            .fingerprint
    }

    /// The connection `net` holds to `addr` (without redialling a closed one).
    fn pooled(net: &Net, addr: SocketAddr) -> Connection {
        net.pool.lock().unwrap()[&addr].0.clone()
    }

    async fn hello(net: &Net, addr: SocketAddr) -> Result<String, CallError> {
        net.call::<_, String>(addr, None, Service::Client, &(), 1024, CONNECT_TIMEOUT)
            .await
    }

    #[tokio::test]
    async fn revoked_certificates_lose_their_connections_and_nodes_supersede_their_own() {
        let dir = tempfile::tempdir().unwrap();
        ca::init(
            dir.path(),
            &["n1".into(), "n2".into()],
            &[ca::Subject::user("alice")],
            ca::Validity::default(),
        )
        .unwrap();
        let certs = CertsDir::new(dir.path());
        let tls = |role, name| TlsMaterial::load(&certs, role, name).unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let n1 = Net::server(local, &tls(Role::Node, "n1")).unwrap();
        n1.serve(Arc::new(Echo));
        let n2 = Net::server(local, &tls(Role::Node, "n2")).unwrap();
        n2.serve(Arc::new(Echo));
        let (a1, a2) = (n1.local_addr().unwrap(), n2.local_addr().unwrap());

        let alice = Net::client(&tls(Role::User, "alice"), a1).unwrap();
        assert_eq!(hello(&alice, a1).await.unwrap(), "alice");
        // n1 calls n2 (a pooled connection), n2 calls n1 (an accepted one).
        assert_eq!(hello(&n1, a2).await.unwrap(), "n1");
        assert_eq!(hello(&n2, a1).await.unwrap(), "n2");
        assert_eq!(n1.accepted_connections(), 2);

        let revoked: HashSet<String> = [
            fingerprint(&certs, Role::User, "alice"),
            fingerprint(&certs, Role::Node, "n2"),
        ]
        .into();
        // Alice's and n2's accepted connections, and n1's pooled one to n2.
        assert_eq!(n1.close_connections_of(&revoked), 3);
        assert_eq!(n1.accepted_connections(), 0);
        let err = pooled(&alice, a1).closed().await;
        assert!(describe(&err).contains("certificate revoked"), "{err}");
        assert_eq!(
            n1.close_connections_of(&revoked),
            0,
            "nothing left to close"
        );

        // A node past its per-node limit: its oldest connection gives way.
        let mut n2s = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_NODE + 1 {
            let net = Net::client(&tls(Role::Node, "n2"), a1).unwrap();
            assert_eq!(hello(&net, a1).await.unwrap(), "n2");
            n2s.push(net);
        }
        let err = pooled(&n2s[0], a1).closed().await;
        assert!(describe(&err).contains("superseded"), "{err}");
        assert_eq!(n1.accepted_connections(), MAX_CONNECTIONS_PER_NODE);
        assert_eq!(
            hello(&n2s[MAX_CONNECTIONS_PER_NODE], a1).await.unwrap(),
            "n2"
        );
    }
}
