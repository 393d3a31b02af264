//! The bench's client of a node's HTTPS API: one kept-alive HTTP/1.1
//! connection over TLS with the admin's certificate, verifying the node as
//! `flocker ctl` does, so the HTTPS row measures the same writes as the
//! QUIC row through the other front door.

use crate::ca::{CertsDir, Role};
use crate::net::tls::{server_name, TlsMaterial};
use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

/// Largest reply body read (a label write answers in a few hundred bytes).
const MAX_REPLY: usize = 64 << 10;

pub struct HttpsConn {
    sender: Mutex<SendRequest<Full<Bytes>>>,
    /// Drives the connection; ends with it.
    _driver: tokio::task::JoinHandle<()>,
}

impl HttpsConn {
    /// Connects to the HTTPS API at `addr` as the user `user` of `certs`.
    pub async fn connect(certs: &CertsDir, user: &str, addr: SocketAddr) -> Result<HttpsConn> {
        let tls = TlsMaterial::load(certs, Role::User, user)?.https_client_config()?;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(server_name())?.to_owned();
        let stream = TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 with {addr}"))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(HttpsConn {
            sender: Mutex::new(sender),
            _driver: driver,
        })
    }

    /// Sends one JSON request; the reply's status and body.
    pub async fn send(&self, method: &str, path: &str, body: String) -> Result<(u16, String)> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", server_name())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let mut sender = self.sender.lock().await;
        sender.ready().await?;
        let reply = sender.send_request(request).await?;
        let status = reply.status().as_u16();
        let body = reply.into_body().collect().await?.to_bytes();
        if body.len() > MAX_REPLY {
            bail!("a {} byte reply to {method} {path}", body.len());
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
