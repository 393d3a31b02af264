//! `ctl logs` on the node side: a page of an app's output, read from the
//! engine of the node that runs it. Any node answers: one that does not run
//! the app asks the one that does (one peer call, never passed on further),
//! and each page is found anew, so a client that keeps asking follows the
//! app when it moves.

use super::messages::{ClientReply, LogsPage, LogsRequest, PeerReply, PeerRequest};
use super::server::Api;
use crate::agent::container_name;
use crate::runtime::{ContainerId, ContainerRuntime, LogQuery, RuntimeError, UnixNanos};
use std::sync::Arc;
use std::time::Duration;

/// How long a node waits for the page it asked another node for: the
/// engine's own call deadline (30 s) plus the way back.
const PEER_LOGS_TIMEOUT: Duration = Duration::from_secs(40);

/// What this node reads its own containers' output from.
pub struct LogSource {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub cluster_id: String,
}

impl Api {
    /// A client's page: from this node's engine, or from the node that runs
    /// the app.
    pub(super) async fn logs(&self, request: &LogsRequest) -> ClientReply {
        let node = {
            let applied = self.sm.read();
            let state = &applied.state;
            if !state
                .deployed
                .config
                .applications
                .contains_key(&request.app)
            {
                return ClientReply::refused(format!("no application {} is deployed", request.app));
            }
            // Where it runs, or ran last and will run again (mid-move).
            state.serves_from(&request.app).map(str::to_string)
        };
        let Some(node) = node else {
            return ClientReply::Logs(LogsPage {
                note: Some(format!("{} is not placed on any node yet", request.app)),
                ..LogsPage::default()
            });
        };
        if node == self.name {
            return match self.local_logs(request).await {
                Ok(page) => ClientReply::Logs(page),
                Err(e) => ClientReply::refused(e),
            };
        }
        let Some(member) = self.member(&node) else {
            return ClientReply::refused(format!(
                "{} runs on {node}, which is not a member any more",
                request.app
            ));
        };
        match self
            .ask(
                &member,
                &PeerRequest::Logs(request.clone()),
                PEER_LOGS_TIMEOUT,
            )
            .await
        {
            Ok(PeerReply::Logs(page)) => ClientReply::Logs(page),
            Ok(_) => ClientReply::refused(format!(
                "{node} answered a logs request with something else"
            )),
            Err(e) => ClientReply::refused(format!(
                "{} runs on {node}, which did not send its logs: {e}",
                request.app
            )),
        }
    }

    /// A page from this node's own engine, whether or not the app is placed
    /// here now (an exited or departing container still has its output).
    pub(super) async fn local_logs(&self, request: &LogsRequest) -> Result<LogsPage, String> {
        let Some(source) = self.log_source.get() else {
            return Err(format!("{} has no container engine for logs", self.name));
        };
        crate::config::check_app_name(&request.app)?;
        let id = ContainerId(container_name(&source.cluster_id, &self.name, &request.app));
        let query = LogQuery {
            after: request.after_ns.map(UnixNanos),
            tail: request.tail,
        };
        match source.runtime.logs(&id, &query).await {
            Ok(page) => Ok(LogsPage {
                node: Some(self.name.clone()),
                lines: page.lines,
                more: page.more,
                note: None,
            }),
            Err(RuntimeError::ContainerNotFound(_)) => Ok(LogsPage {
                node: Some(self.name.clone()),
                note: Some(format!(
                    "{} has no container of {} (not started yet, or gone)",
                    self.name, request.app
                )),
                ..LogsPage::default()
            }),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}
