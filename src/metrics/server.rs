//! The `--metrics-listen` endpoint: plain HTTP/1.1 serving the text
//! exposition at `/metrics`, and nothing else. Plain, as Prometheus scrapes
//! most targets; it tells only numbers (no names beyond bounded labels), and
//! an operator who wants it private binds it to a private address.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] scrapers at once (more wait in the
//! kernel's accept queue), each connection closed after [`CONNECTION_LIMIT`],
//! request heads limited by hyper's default buffer.

use super::NodeGauges;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapers served at once: Prometheus servers (usually one or two) and
/// an operator's curl.
const MAX_CONNECTIONS: usize = 16;
/// A connection's whole life: a scrape answers in milliseconds; a client
/// that holds a connection open longer is cut off.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Sets the node's own gauges right before they are rendered.
pub type Refresh = Arc<dyn Fn(&NodeGauges) + Send + Sync>;

/// Binds `listen` (an error names it) and serves scrapes until aborted.
pub async fn start(listen: SocketAddr, refresh: Refresh) -> anyhow::Result<MetricsServer> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {listen}: {e}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, refresh));
    Ok(MetricsServer { local, task })
}

/// A running endpoint; dropping it does not stop it, `task` does.
pub struct MetricsServer {
    pub local: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

async fn serve(listener: TcpListener, refresh: Refresh) {
    let gauges = Arc::new(NodeGauges::default());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: try again shortly.
                tracing::warn!("metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (gauges, refresh) = (gauges.clone(), refresh.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = answer(&req, &gauges, &refresh);
                async move { Ok::<_, std::convert::Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIMIT, conn).await {
                Ok(Err(e)) => tracing::debug!(%peer, "metrics connection: {e}"),
                Err(_) => tracing::debug!(%peer, "metrics connection held too long; closed"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn answer(
    req: &Request<Incoming>,
    gauges: &NodeGauges,
    refresh: &Refresh,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    refresh(gauges);
    match super::render(gauges) {
        Ok(text) => reply(StatusCode::OK, prometheus::TEXT_FORMAT, text),
        Err(why) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{why}\n"),
        ),
    }
}
