//! The status page at `/`: one self-contained HTML file (embedded at build
//! time, no external assets, so it works offline) that reads `/v1/nodes`,
//! `/v1/status` and follows `/v1/events` with the browser's client
//! certificate. It is a view only: everything it shows comes from the API.

use super::reply::ApiError;
use super::{Ctx, Peer};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

const PAGE: &str = include_str!("status_page.html");

/// Only the page's own inline script and style, and requests to this node.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

pub(crate) async fn page(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Response {
    if ctx.deny.contains(&peer.fingerprint) {
        return ApiError::new(StatusCode::FORBIDDEN, "this certificate is revoked").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
