//! The HTTPS JSON API (`flocker node --http-listen ADDR`): the client API of
//! `api` for tools that speak HTTP, with the same certificates and roles as
//! `ctl`. A client must present a certificate from the cluster CA; it is
//! checked in the TLS handshake by `net`'s verifier (chain and deny list),
//! so a request without one never reaches a handler. Every handler turns
//! the request into the `ClientRequest` `ctl` would send and hands it to
//! [`Api::handle_client`], which makes reads linearizable, forwards writes
//! to the leader and acknowledges them once committed: this module owns the
//! HTTP shape (routes, status codes, error bodies, the OpenAPI document),
//! never the semantics.

mod events;
mod openapi;
mod reply;
mod routes;
mod status_page;

pub use openapi::openapi_json;
pub use reply::{ErrorBody, Problem};

use crate::api::Api;
use crate::ca::Identity;
use crate::net::tls::TlsMaterial;
use crate::net::DenyList;
use anyhow::{Context, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connections served at once; more wait in the kernel's accept queue, so
/// a flood of clients cannot take the node's memory.
const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake must finish within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's head must arrive within this (also bounds an idle
/// keep-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is asking: the identity in the client certificate the handshake
/// verified.
#[derive(Clone)]
pub(crate) struct Peer(pub Identity);

/// What every handler reaches.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub api: Arc<Api>,
    /// Checked on every request too: a certificate revoked while its
    /// keep-alive connection is open is refused from then on.
    pub deny: DenyList,
}

/// Binds `addr` and serves the API there until the task is aborted.
pub async fn start(
    addr: SocketAddr,
    tls: &TlsMaterial,
    api: Arc<Api>,
) -> Result<tokio::task::JoinHandle<()>> {
    let config = tls
        .https_server_config()
        .context("the HTTPS API's TLS configuration")?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--http-listen {addr}"))?;
    tracing::info!(%addr, "HTTPS API serving");
    let ctx = Ctx {
        api,
        deny: tls.deny.clone(),
    };
    let router = routes::router(ctx);
    Ok(tokio::spawn(accept_loop(listener, acceptor, router)))
}

/// Accepts connections until aborted; the connections are its tasks, so
/// stopping the node (which aborts this task) ends them too.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, router: axum::Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("HTTPS API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            serve_connection(tcp, from, acceptor, router).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    from: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        // The verifier already logged why a certificate was refused.
        Ok(Err(e)) => {
            tracing::debug!(%from, "HTTPS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(Identity::from_der);
    let identity = match identity {
        Some(Ok(identity)) => identity,
        // Unreachable with the verifier requiring a certificate from our
        // CA, but never serve a request for nobody.
        _ => return,
    };
    let service = TowerToHyperService::new(router.layer(axum::Extension(Peer(identity))));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%from, "HTTPS connection: {e}");
    }
}
