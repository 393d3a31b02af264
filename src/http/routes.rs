//! The `/v1` routes: each handler reads its HTTP input, builds the
//! `ClientRequest` `ctl` would send, and answers with what the client API
//! replied. The types here are the ones the OpenAPI document is derived
//! from (`openapi.rs`), so the document cannot drift from the handlers.

use super::reply::{status_of_refusal, ApiError, ErrorBody};
use super::{Ctx, Peer};
use crate::api::{ClientEnvelope, ClientReply, ClientRequest, NodeView, StatusView};
use crate::ca::Identity;
use crate::state::{Command, HistoryEntry};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Largest request body: two configuration files at their limit, with room
/// for JSON's escaping.
pub const MAX_BODY: usize = 3 * crate::config::MAX_CONFIG_BYTES;
/// The header whose value is a write's request id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(crate) fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(super::status_page::page))
        .route("/v1/nodes", get(nodes))
        .route("/v1/status", get(status))
        .route(
            "/v1/configuration",
            get(get_configuration).put(put_configuration),
        )
        .route("/v1/apps/{app}/move", post(move_app))
        .route("/v1/nodes/{node}/drain", post(drain))
        .route("/v1/nodes/{node}/activate", post(activate))
        .route("/v1/nodes/{node}/labels", put(labels))
        .route("/v1/history", get(history))
        .route("/v1/events", get(super::events::events))
        .route("/v1/openapi.json", get(openapi))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_declared_large_bodies))
        .with_state(ctx)
}

/// Answers 413 on a `Content-Length` past the limit before reading the
/// body, so a client waiting on `Expect: 100-continue` (curl does for large
/// bodies) gets the answer instead of a connection closed mid-upload. A
/// body without a declared length is cut at the limit as it is read.
async fn refuse_declared_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(bytes) if bytes > MAX_BODY as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {bytes} bytes; at most {MAX_BODY} are taken"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// `GET /v1/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodesReply {
    /// Every member, as `ctl nodes -o json` shows it.
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodesQuery {
    /// Answer from this node's own applied state, skipping the read index.
    pub stale: Option<bool>,
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusReply {
    /// Apps with their desired and observed state, as `ctl status -o json`.
    #[schema(value_type = Object)]
    pub status: StatusView,
}

/// `GET /v1/configuration`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigurationReply {
    /// The deployed version: `If-Match` it when deploying.
    pub version: u64,
    /// The configuration as the cluster holds it.
    #[schema(value_type = Object)]
    pub model: crate::config::Configuration,
    /// The same as Flocker's two files, ready to edit and `PUT` back.
    pub deployment: String,
    pub application: String,
}

/// `PUT /v1/configuration`: both files' text, in any format `ctl deploy`
/// reads (Flocker's, or fig/compose for the application).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeployBody {
    pub deployment: String,
    pub application: String,
}

/// `POST /v1/apps/{app}/move`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MoveBody {
    /// The destination node.
    pub node: String,
}

/// `PUT /v1/nodes/{node}/labels`: labels to set, and (as `null`) to remove.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LabelsBody {
    pub labels: BTreeMap<String, Option<String>>,
}

/// A committed write.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// The request id it was applied under (`Idempotency-Key`).
    pub request_id: String,
    /// The log index at which it was (first) applied.
    pub index: u64,
    pub message: String,
    /// True when this is a retry answered with the original outcome.
    pub replayed: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many changes (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only changes committed before this log index.
    pub before: Option<u64>,
}

/// `GET /v1/history`: a page of committed changes, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryReply {
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<HistoryEntry>,
    /// Pass as `before` for the page of older changes; absent once a page
    /// comes back empty.
    pub next_before: Option<u64>,
}

type Answer<T> = Result<Json<T>, ApiError>;

/// Serves `request` through the client API as the certificate's holder.
pub(super) async fn ask(
    ctx: &Ctx,
    peer: &Identity,
    request: ClientRequest,
) -> Result<ClientReply, ApiError> {
    if ctx.deny.contains(&peer.fingerprint) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("permission denied: the certificate of {peer} is revoked"),
        ));
    }
    Ok(ctx
        .api
        .handle_client(peer, ClientEnvelope::new(request))
        .await)
}

#[utoipa::path(get, path = "/v1/nodes", params(NodesQuery),
    responses((status = 200, body = NodesReply), (status = 503, body = ErrorBody)))]
pub(crate) async fn nodes(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Answer<NodesReply> {
    let stale = query_of(query)?.stale.unwrap_or(false);
    match ask(&ctx, &peer, ClientRequest::Nodes { stale }).await? {
        ClientReply::Nodes(nodes) => Ok(Json(NodesReply { nodes })),
        other => Err(ApiError::from_reply(other, false)),
    }
}

#[utoipa::path(get, path = "/v1/status",
    responses((status = 200, body = StatusReply), (status = 503, body = ErrorBody)))]
pub(crate) async fn status(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Answer<StatusReply> {
    match ask(&ctx, &peer, ClientRequest::Status).await? {
        ClientReply::Status(status) => Ok(Json(StatusReply { status })),
        other => Err(ApiError::from_reply(other, false)),
    }
}

#[utoipa::path(get, path = "/v1/configuration",
    responses((status = 200, body = ConfigurationReply,
        headers(("ETag" = String, description = "The version, quoted"))),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn get_configuration(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Result<Response, ApiError> {
    match ask(&ctx, &peer, ClientRequest::ShowConfig).await? {
        ClientReply::Config {
            version,
            configuration,
        } => {
            let (deployment, application) = crate::config::to_files(&configuration);
            let reply = ConfigurationReply {
                version,
                model: configuration,
                deployment,
                application,
            };
            Ok(([(header::ETAG, format!("\"{version}\""))], Json(reply)).into_response())
        }
        other => Err(ApiError::from_reply(other, false)),
    }
}

#[utoipa::path(put, path = "/v1/configuration", request_body = DeployBody,
    params(
        ("If-Match" = Option<String>, Header, description = "Deploy only if the configuration is at this version"),
        ("Idempotency-Key" = Option<String>, Header, description = "The request id: a retry with the same key applies once"),
    ),
    responses((status = 200, body = Written), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn put_configuration(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Json<DeployBody>, JsonRejection>,
) -> Answer<Written> {
    let body = body_of(body)?;
    let if_version = if_match(&headers)?;
    let configuration = crate::config::parse(
        &body.deployment,
        "deployment",
        &body.application,
        "application",
    )
    .map_err(|errors| ApiError::config(&errors))?;
    let command = Command::Deploy {
        configuration,
        if_version,
    };
    write(&ctx, &peer, &headers, command).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/move", request_body = MoveBody,
    params(("app" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Written), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn move_app(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Json<MoveBody>, JsonRejection>,
) -> Answer<Written> {
    let node = body_of(body)?.node;
    write(&ctx, &peer, &headers, Command::MoveApp { app, node }).await
}

#[utoipa::path(post, path = "/v1/nodes/{node}/drain",
    params(("node" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Written), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn drain(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Answer<Written> {
    let drained = true;
    write(&ctx, &peer, &headers, Command::SetDrained { node, drained }).await
}

#[utoipa::path(post, path = "/v1/nodes/{node}/activate",
    params(("node" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Written), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(crate) async fn activate(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Answer<Written> {
    let drained = false;
    write(&ctx, &peer, &headers, Command::SetDrained { node, drained }).await
}

#[utoipa::path(put, path = "/v1/nodes/{node}/labels", request_body = LabelsBody,
    params(("node" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Written), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub(crate) async fn labels(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Result<Json<LabelsBody>, JsonRejection>,
) -> Answer<Written> {
    let changes = body_of(body)?.labels;
    for (key, value) in &changes {
        crate::state::validate_label(key, value.as_deref()).map_err(ApiError::bad_request)?;
    }
    write(&ctx, &peer, &headers, Command::SetLabels { node, changes }).await
}

#[utoipa::path(get, path = "/v1/history", params(HistoryQuery),
    responses((status = 200, body = HistoryReply), (status = 503, body = ErrorBody)))]
pub(crate) async fn history(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Answer<HistoryReply> {
    let query = query_of(query)?;
    let limit = query
        .limit
        .unwrap_or(crate::api::DEFAULT_HISTORY_PAGE as u32);
    let request = ClientRequest::HistoryPage {
        limit,
        before: query.before,
    };
    match ask(&ctx, &peer, request).await? {
        ClientReply::History(entries) => Ok(Json(HistoryReply {
            next_before: entries.first().map(|e| e.index),
            entries,
        })),
        other => Err(ApiError::from_reply(other, false)),
    }
}

#[utoipa::path(get, path = "/v1/openapi.json",
    responses((status = 200, description = "This API's OpenAPI 3.1 document")))]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
        .into_response()
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route: the API is under /v1 (see /v1/openapi.json)")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method (see /v1/openapi.json)",
    )
}

/// Proposes `command` under the request's `Idempotency-Key` (a fresh id
/// when absent) and answers once it is committed.
async fn write(
    ctx: &Ctx,
    peer: &Identity,
    headers: &HeaderMap,
    command: Command,
) -> Answer<Written> {
    let request_id = match headers.get(IDEMPOTENCY_KEY) {
        Some(key) => key
            .to_str()
            .map_err(|_| ApiError::bad_request("Idempotency-Key is not visible ASCII"))?
            .to_string(),
        None => format!("{:032x}", rand::random::<u128>()),
    };
    let request = ClientRequest::Write {
        request_id: request_id.clone(),
        command,
    };
    match ask(ctx, peer, request).await? {
        ClientReply::Written(outcome) => match outcome.result {
            Ok(message) => Ok(Json(Written {
                request_id,
                index: outcome.index,
                message,
                replayed: outcome.replayed,
            })),
            Err(reason) => {
                Err(ApiError::new(status_of_refusal(&reason), reason).with_request_id(&request_id))
            }
        },
        other => Err(ApiError::from_reply(other, true).with_request_id(&request_id)),
    }
}

/// `If-Match: 3` or `If-Match: "3"` (as the ETag of `GET` gives it);
/// `*` or no header: no condition.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_matches('"').parse().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match '{text}' is not a configuration version (GET /v1/configuration gives it as its ETag)"
        ))
    })
}

fn body_of<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|rejection| {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, rejection.body_text())
    })
}

pub(super) fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_if_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, value.parse().unwrap());
        headers
    }

    #[test]
    fn if_match_takes_the_etag_or_the_bare_version_and_refuses_the_rest() {
        assert_eq!(if_match(&HeaderMap::new()), Ok(None));
        assert_eq!(if_match(&with_if_match("\"7\"")), Ok(Some(7)));
        assert_eq!(if_match(&with_if_match("7")), Ok(Some(7)));
        assert_eq!(if_match(&with_if_match("*")), Ok(None));
        let e = if_match(&with_if_match("W/\"7\"")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.body.error.contains("not a configuration version"),
            "{e:?}"
        );
    }
}
