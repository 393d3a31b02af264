//! How the API's answers become HTTP: the JSON error body every failure
//! has (`{error, code, detail}`) and which status a refusal earns. The
//! client API says "refused" (nothing changed) or "unknown" (a write may or
//! may not have been applied) with a message; the status is read from what
//! kind of refusal the message reports, so both front ends keep one
//! wording.

use crate::api::ClientReply;
use crate::config::ConfigError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Every error the API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in the words `flocker ctl` uses.
    pub error: String,
    /// A stable kind: `bad_request`, `forbidden`, `not_found`,
    /// `version_conflict`, `no_quorum`, `outcome_unknown`.
    pub code: String,
    /// Each problem found, where it is: for a configuration, the file
    /// (`deployment` or `application`), line, column and key.
    pub detail: Vec<Problem>,
    /// `unknown` when a write may or may not have been applied: retry it
    /// with the same `Idempotency-Key` to find out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The write's request id (its `Idempotency-Key`), to retry it with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One problem with the input, as precise as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The key path (`applications.web.ports[0].internal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// An error with its status, ready to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: handlers return `Result<_, ApiError>` all the way up.
    pub body: Box<ErrorBody>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: Box::new(ErrorBody {
                error: error.into(),
                code: code_of(status).to_string(),
                detail: Vec::new(),
                outcome: None,
                request_id: None,
            }),
        }
    }

    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    /// A configuration the parsers refused: one problem per error found.
    pub fn config(errors: &[ConfigError]) -> ApiError {
        let mut e = ApiError::bad_request(format!(
            "{} error(s) in the configuration; nothing was deployed",
            errors.len()
        ));
        e.body.detail = errors.iter().map(problem).collect();
        e
    }

    pub fn with_request_id(mut self, id: &str) -> ApiError {
        self.body.request_id = Some(id.to_string());
        self
    }

    /// A `Failed` reply of the client API. `write`: whether the request
    /// could change anything (only then is an unknown outcome a 504; a read
    /// that could not be served is a 503).
    pub fn from_failed(unknown: bool, message: &str, write: bool) -> ApiError {
        if unknown && write {
            let mut e = ApiError::new(StatusCode::GATEWAY_TIMEOUT, message);
            e.body.outcome = Some("unknown".into());
            return e;
        }
        if unknown {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        ApiError::new(status_of_refusal(message), message)
    }

    /// Any reply that is not the one a handler expects.
    pub fn from_reply(reply: ClientReply, write: bool) -> ApiError {
        match reply {
            ClientReply::Failed { unknown, message } => {
                ApiError::from_failed(unknown, &message, write)
            }
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("unexpected reply from the node: {other:?}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The status a refusal (nothing was changed) earns, from its kind.
pub fn status_of_refusal(message: &str) -> StatusCode {
    let has = |s: &str| message.contains(s);
    if has("permission denied") {
        StatusCode::FORBIDDEN
    } else if has("someone else deployed meanwhile") {
        StatusCode::CONFLICT
    } else if has("no leader known") || has("no stable leader") || has("is a quorum") {
        StatusCode::SERVICE_UNAVAILABLE
    } else if has("no application named") || has("no member node named") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "version_conflict",
        StatusCode::SERVICE_UNAVAILABLE => "no_quorum",
        StatusCode::GATEWAY_TIMEOUT => "outcome_unknown",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::BAD_GATEWAY => "bad_gateway",
        _ => "bad_request",
    }
}

fn problem(e: &ConfigError) -> Problem {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Problem {
        message: e.message.clone(),
        file: some(&e.file),
        line: e.at.map(|p| p.line),
        column: e.at.map(|p| p.column),
        key: some(&e.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_honest_statuses() {
        let cases = [
            ("permission denied: user v (role viewer) may not deploy; that needs a user with role operator or higher", 403),
            ("the configuration is at version 3, not 2: someone else deployed meanwhile; review with `ctl config show` and retry", 409),
            ("no leader known to n1 within 3s (is a quorum up?)", 503),
            ("no stable leader: request forwarded 3 times without reaching one", 503),
            ("no application named 'x' is deployed", 404),
            ("no member node named 'n9'", 404),
            ("invalid request id 'a b' (3 bytes): use 1-128 letters", 400),
        ];
        for (message, status) in cases {
            let e = ApiError::from_failed(false, message, true);
            assert_eq!(e.status.as_u16(), status, "{message}");
            assert_eq!(e.body.error, message);
            assert_eq!(e.body.outcome, None);
        }
    }

    #[test]
    fn an_unknown_write_is_504_and_says_so_but_an_unserved_read_is_503() {
        let write = ApiError::from_failed(true, "not committed within 8s", true);
        assert_eq!(write.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(write.body.outcome.as_deref(), Some("unknown"));
        assert_eq!(write.body.code, "outcome_unknown");
        let json = serde_json::to_value(&write.body).unwrap();
        assert_eq!(json["outcome"], "unknown");
        let read = ApiError::from_failed(true, "leadership not confirmed within 5s", false);
        assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(read.body.outcome, None);
        assert!(serde_json::to_value(&read.body)
            .unwrap()
            .get("outcome")
            .is_none());
    }

    #[test]
    fn config_errors_keep_file_line_and_key() {
        let errors = crate::config::parse(
            "version: 1\nnodes:\n  n1: [web]\n",
            "deployment",
            "version: 1\napplications:\n  web:\n    imag: busybox\n",
            "application",
        )
        .unwrap_err();
        let e = ApiError::config(&errors);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let p = e
            .body
            .detail
            .iter()
            .find(|p| p.message.contains("imag"))
            .unwrap_or_else(|| panic!("{:?}", e.body.detail));
        assert_eq!(p.file.as_deref(), Some("application"));
        assert_eq!(p.line, Some(4));
        assert!(p.key.as_deref().unwrap().contains("web"), "{p:?}");
    }
}
