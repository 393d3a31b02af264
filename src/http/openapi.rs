//! The OpenAPI document served at `/v1/openapi.json`, derived by utoipa
//! from the handlers' annotations and their request and reply types.

use super::reply::{ErrorBody, Problem};
use super::{events, routes};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flocker",
        description = "The cluster's HTTPS JSON API: the client API of `flocker ctl`, with the same client certificates and roles."
    ),
    paths(
        routes::nodes,
        routes::status,
        routes::get_configuration,
        routes::put_configuration,
        routes::move_app,
        routes::drain,
        routes::activate,
        routes::labels,
        routes::history,
        events::events,
        routes::openapi,
    ),
    components(schemas(
        ErrorBody,
        Problem,
        routes::NodesReply,
        routes::StatusReply,
        routes::ConfigurationReply,
        routes::DeployBody,
        routes::MoveBody,
        routes::LabelsBody,
        routes::Written,
        routes::HistoryReply,
    ))
)]
struct ApiDoc;

/// The document, as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_route_with_its_error_body() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 10, "{:?}", paths.keys());
        let put = &doc["paths"]["/v1/configuration"]["put"];
        assert!(put["responses"]["409"].is_object(), "{put}");
        let headers: Vec<&str> = put["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(headers, ["If-Match", "Idempotency-Key"]);
        let error = &doc["components"]["schemas"]["ErrorBody"]["properties"];
        for field in ["error", "code", "detail", "outcome"] {
            assert!(error[field].is_object(), "{field}: {error}");
        }
    }
}
