//! Client requests as the metrics count them (issue 17): one kind per
//! request (a write by its command), one outcome per reply, both from fixed
//! sets so the label values stay bounded.

use super::messages::{ClientReply, ClientRequest};
use crate::state::Command;
use std::borrow::Cow;
use std::time::Duration;

/// The `kind` label of a request.
pub fn kind(request: &ClientRequest) -> Cow<'static, str> {
    Cow::Borrowed(match request {
        ClientRequest::Nodes { .. } => "nodes",
        ClientRequest::Write { command, .. } => return write_kind(command),
        ClientRequest::MembersAdd { .. } => "members_add",
        ClientRequest::MembersRemove { .. } => "members_remove",
        ClientRequest::PlanDeploy { .. } => "plan_deploy",
        ClientRequest::ShowConfig | ClientRequest::ShowConfigVersion { .. } => "show_config",
        ClientRequest::Status => "status",
        ClientRequest::History | ClientRequest::HistoryPage { .. } => "history",
        ClientRequest::WhoAmI => "whoami",
        ClientRequest::Logs(_) => "logs",
        ClientRequest::SnapshotSave => "snapshot_save",
        ClientRequest::Events { .. } => "events",
    })
}

/// A write's kind: its command's words (`deploy`, `set labels`, `move an
/// app`) joined by `_`, a fixed set as the commands are.
fn write_kind(command: &Command) -> Cow<'static, str> {
    Cow::Owned(command.kind_name().replace(' ', "_"))
}

/// The `outcome` label of a reply: `ok`; `failed` (committed, but the
/// state refused the change); `refused` (nothing was done); `unknown` (it
/// may or may not have been applied).
pub fn outcome(reply: &ClientReply) -> &'static str {
    match reply {
        ClientReply::Written(o) if o.result.is_err() => "failed",
        ClientReply::Failed { unknown: true, .. } => "unknown",
        ClientReply::Failed { unknown: false, .. } => "refused",
        _ => "ok",
    }
}

/// Counts one answered request of `kind` that took `took`.
pub fn record(kind: &str, reply: &ClientReply, took: Duration) {
    let metrics = crate::metrics::get();
    metrics
        .client_requests_total
        .with_label_values(&[kind, outcome(reply)])
        .inc();
    metrics
        .client_request_seconds
        .with_label_values(&[kind])
        .observe(crate::metrics::secs(took));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;

    #[test]
    fn kinds_and_outcomes_are_fixed_words() {
        let write = ClientRequest::Write {
            request_id: "r1".into(),
            command: Command::SetDrained {
                node: "n1".into(),
                drained: true,
            },
        };
        assert_eq!(kind(&write), "drain_or_activate_a_node");
        assert_eq!(kind(&ClientRequest::Status), "status");
        let written = |result| {
            ClientReply::Written(Outcome {
                index: 3,
                result,
                replayed: false,
            })
        };
        assert_eq!(outcome(&written(Ok("done".into()))), "ok");
        assert_eq!(outcome(&written(Err("no such node".into()))), "failed");
        assert_eq!(outcome(&ClientReply::refused("no quorum")), "refused");
        assert_eq!(outcome(&ClientReply::unknown("timed out")), "unknown");
    }
}
