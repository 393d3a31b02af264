//! `ctl whoami` and `ctl revoke`: the operator's side of the trust model.

use super::output::{expiry_warning, now_unix};
use super::{report_failure, to_json, write, Exit, OutputFormat};
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest};
use crate::ca::{format_unix, normalize_fingerprint, Identity};
use crate::net::tls::load_cert;
use crate::state::Command;
use std::path::Path;

/// Prints how the node sees the certificate `ctl` presents.
pub async fn whoami(client: &Client, output: OutputFormat) -> Exit {
    match client.request(ClientRequest::WhoAmI).await {
        ClientReply::Identity(me) => {
            match output {
                OutputFormat::Json => println!("{}", to_json(&me)),
                OutputFormat::Table => {
                    println!("name:        {}", me.name);
                    println!("role:        {}", me.role);
                    println!("expires:     {}", format_unix(me.not_after));
                    println!("fingerprint: {}", me.fingerprint);
                    eprint!(
                        "{}",
                        expiry_warning("this certificate", me.not_after, now_unix())
                    );
                }
            }
            Exit::Ok
        }
        other => report_failure(other),
    }
}

/// What to revoke: a certificate file, or a fingerprint.
pub struct RevokeTarget<'a> {
    pub cert: Option<&'a Path>,
    pub fingerprint: Option<&'a str>,
    pub reason: Option<String>,
}

/// Puts a certificate on the cluster's deny list.
pub async fn revoke(client: &Client, target: RevokeTarget<'_>, request_id: Option<String>) -> Exit {
    let (fingerprint, subject, not_after) = match (target.cert, target.fingerprint) {
        (Some(path), None) => match read_certificate(path) {
            Ok(id) => (
                id.fingerprint,
                format!("{} {}", id.role.as_str(), id.name),
                Some(id.not_after),
            ),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Exit::Usage;
            }
        },
        (None, Some(text)) => match normalize_fingerprint(text) {
            Ok(fp) => (fp, "unknown".to_string(), None),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
        },
        _ => {
            eprintln!("error: give exactly one of --cert FILE and --fingerprint F");
            return Exit::Usage;
        }
    };
    let command = Command::Revoke {
        fingerprint,
        subject,
        reason: target
            .reason
            .unwrap_or_else(|| "revoked by an operator".into()),
        not_after,
    };
    write(client, request_id, command).await
}

fn read_certificate(path: &Path) -> anyhow::Result<Identity> {
    let der = load_cert(path)?;
    Identity::from_der(&der)
}
