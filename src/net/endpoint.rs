//! The QUIC endpoint of a node (or of `flocker ctl`): accepting connections,
//! reading the peer's identity from its certificate, dispatching each stream by
//! its service tag, and making request/reply calls over pooled connections.
//!
//! One stream carries one call: a service tag byte, one request frame, one
//! reply frame (`Result<Reply, String>`, the error being a refusal in words).

use super::frame::{read_frame, write_encoded, write_frame, FrameError};
use super::tls::{server_name, TlsMaterial};
use crate::ca::Identity;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream};
use rustls_pki_types::CertificateDer;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long establishing a connection (QUIC + TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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
        }))
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts connections until the endpoint closes, handing every stream to
    /// `handler`. Connections that fail authentication are logged and dropped.
    pub fn serve(self: &Arc<Self>, handler: Arc<dyn StreamHandler>) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let own = self.own.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let handler = handler.clone();
                let own = own.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    let conn = match incoming.await {
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
                            conn.close(1u32.into(), b"unusable certificate");
                            return;
                        }
                    };
                    serve_connection(conn, identity, handler).await;
                });
            }
        })
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
            // TLS 1.3 handshake: it never read the request.
            Some(close) if is_tls_refusal(&close) => CallError::Unreachable {
                addr,
                reason: self.explain(&close),
            },
            _ => CallError::Broken { addr, reason },
        };
        let exchange = async {
            send.write_all(&[service as u8])
                .await
                .map_err(|e| broken(e.to_string()))?;
            write_encoded(&mut send, &body)
                .await
                .map_err(|e| broken(e.to_string()))?;
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
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(_) => return,
        };
        let handler = handler.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let mut tag = [0u8; 1];
            if recv.read_exact(&mut tag).await.is_err() {
                return;
            }
            match Service::from_byte(tag[0]) {
                Some(service) => handler.handle(identity, service, send, recv).await,
                None => {
                    let mut send = send;
                    tracing::warn!(peer = %identity, tag = tag[0], "unknown service tag");
                    let reply: Result<(), String> = Err(format!("unknown service tag {}", tag[0]));
                    let _ = write_frame(&mut send, &reply, 1024).await;
                    let _ = send.finish();
                }
            }
        });
    }
}

/// Serves one request/reply stream: reads a request (refusing bad frames with
/// a reason, which closes only this stream), runs `f`, writes its reply.
pub async fn serve_call<Req, Resp, F, Fut>(
    peer: &Identity,
    mut send: SendStream,
    mut recv: RecvStream,
    max_frame: usize,
    f: F,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, String>>,
{
    let reply = match read_frame::<_, Req>(&mut recv, max_frame).await {
        Ok(req) => f(req).await,
        Err(e) => {
            tracing::warn!(%peer, "bad frame: {}", describe_frame_error(&e));
            Err(format!("bad frame: {}", describe_frame_error(&e)))
        }
    };
    if let Err(e) = write_frame(&mut send, &reply, max_frame).await {
        tracing::warn!(%peer, "could not send reply: {e}");
        let refusal: Result<Resp, String> = Err(format!("reply not sendable: {e}"));
        let _ = write_frame(&mut send, &refusal, max_frame).await;
    }
    let _ = send.finish();
    // Let the reply drain before the stream is dropped.
    let _ = send.stopped().await;
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
