//! The node's part in keeping the replicated trust state current: reporting
//! its own certificate, turning on apply-time authorization once every voter
//! can enforce it (leader), and revoking a removed member's certificate.

use super::caller::Caller;
use super::messages::{ClientEnvelope, ClientReply, ClientRequest};
use super::server::Api;
use crate::state::{trust_short, CertificateRecord, Command, AUTHORIZATION_KINDS};

impl Api {
    /// Called periodically on every node: reports this node's certificate
    /// when the state does not hold it yet, and (leader) enforces
    /// authorization once every voter knows the signed format.
    pub async fn trust_upkeep(&self) {
        let (report, enforce) = {
            let applied = self.sm.read();
            let state = &applied.state;
            let report = self
                .certificate
                .get()
                .filter(|mine| state.certificates.get(&self.name) != Some(mine))
                .filter(|_| state.nodes.contains_key(&self.name))
                .cloned();
            let enforce = self.is_leader()
                && state.authorization_from.is_none()
                && self.voters_know(state, AUTHORIZATION_KINDS);
            (report, enforce)
        };
        if enforce {
            match self.submit_as_node(Command::EnforceAuthorization).await {
                Ok(_) => tracing::info!("every voter enforces authorization from now on"),
                Err(e) => tracing::debug!("enforcing authorization: {e}"),
            }
        }
        if let Some(CertificateRecord {
            fingerprint,
            not_after,
        }) = report
        {
            let command = Command::NodeCertificate {
                node: self.name.clone(),
                fingerprint,
                not_after,
            };
            if let Err(e) = self.submit_as_node(command).await {
                tracing::debug!("reporting this node's certificate: {e}");
            }
        }
    }

    /// Puts a member's certificate on the deny list before it is removed.
    /// Says what was done; `Err` is the reply when the revocation failed.
    pub(super) async fn revoke_member(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<String, ClientReply> {
        let known = self.sm.read().state.certificates.get(name).cloned();
        let Some(cert) = known else {
            return Ok(format!(
                "{name} never reported its certificate, so it is not revoked: run `flocker ctl revoke --cert` with it"
            ));
        };
        let command = Command::Revoke {
            fingerprint: cert.fingerprint.clone(),
            subject: format!("node {name}"),
            reason: format!("member removed by {}", caller.principal.author()),
            not_after: Some(cert.not_after),
        };
        let env = ClientEnvelope::new(ClientRequest::Write {
            request_id: format!("remove-{name}-{:016x}", rand::random::<u64>()),
            command,
        });
        match Box::pin(self.serve_client(caller, env)).await {
            ClientReply::Written(outcome) => match outcome.result {
                Ok(_) => Ok(format!(
                    "its certificate {} is revoked: it cannot rejoin without a new one",
                    trust_short(&cert.fingerprint)
                )),
                Err(why) => Err(ClientReply::refused(format!(
                    "not removed: revoking its certificate failed: {why}"
                ))),
            },
            other => Err(other),
        }
    }
}
