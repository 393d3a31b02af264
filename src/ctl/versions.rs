//! Configuration versions from the command line: `config show --version`,
//! `config diff N M` and `rollback`.

use super::{output, report_failure, to_json, write, Exit, OutputFormat};
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest};
use crate::config::Configuration;
use crate::state::Command;

/// Fetches the configuration deployed as `version` (the current one when
/// `None`), with its version.
pub async fn fetch(client: &Client, version: Option<u64>) -> Result<(u64, Configuration), Exit> {
    let request = match version {
        Some(version) => ClientRequest::ShowConfigVersion { version },
        None => ClientRequest::ShowConfig,
    };
    match client.request(request).await {
        ClientReply::Config {
            version,
            configuration,
        } => Ok((version, configuration)),
        other => Err(report_failure(other)),
    }
}

/// `ctl config diff N M`: what changed from version N to version M.
pub async fn diff(client: &Client, from: u64, to: u64, out: OutputFormat) -> Exit {
    let (a, b) = match (
        fetch(client, Some(from)).await,
        fetch(client, Some(to)).await,
    ) {
        (Ok((_, a)), Ok((_, b))) => (a, b),
        (Err(exit), _) | (_, Err(exit)) => return exit,
    };
    let lines = describe_changes(&a, &b);
    match out {
        OutputFormat::Json => println!("{}", to_json(&lines)),
        OutputFormat::Table if lines.is_empty() => {
            println!("versions {from} and {to} are the same")
        }
        OutputFormat::Table => {
            println!("# from version {from} to version {to}");
            for line in lines {
                println!("{line}");
            }
        }
    }
    Exit::Ok
}

/// One line per difference: `+app`, `-app`, `~app: image, environment`,
/// `>app: n1 → anywhere`.
pub fn describe_changes(a: &Configuration, b: &Configuration) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, new) in &b.applications {
        match a.applications.get(name) {
            None => lines.push(format!("+{name}")),
            Some(old) if old != new => {
                let as_json = |spec| serde_json::to_value(spec).unwrap_or_default();
                let (old, new) = (as_json(old), as_json(new));
                let fields: Vec<&str> = new
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, value)| old.get(key.as_str()) != Some(value))
                    .map(|(key, _)| key.as_str())
                    .collect();
                lines.push(format!("~{name}: {}", fields.join(", ")));
            }
            Some(_) => {}
        }
    }
    for name in a.applications.keys() {
        if !b.applications.contains_key(name) {
            lines.push(format!("-{name}"));
        }
    }
    let node_of = |c: &Configuration, app: &str| {
        c.deployment.node_key_of(app).map_or_else(
            || {
                if c.deployment.is_anywhere(app) {
                    "anywhere".to_string()
                } else {
                    "not deployed".to_string()
                }
            },
            str::to_string,
        )
    };
    for name in b
        .applications
        .keys()
        .filter(|n| a.applications.contains_key(*n))
    {
        let (from, to) = (node_of(a, name), node_of(b, name));
        if from != to {
            lines.push(format!(">{name}: {from} → {to}"));
        }
    }
    lines
}

/// `ctl rollback [--to N]`: deploys version N again (the one before the
/// current when not given), or with `dry_run` prints what that would do.
pub async fn rollback(
    client: &Client,
    to: Option<u64>,
    dry_run: bool,
    if_version: Option<u64>,
    request_id: Option<String>,
) -> Exit {
    let to = match to {
        Some(to) => to,
        None => match fetch(client, None).await {
            Ok((current, _)) if current > 1 => current - 1,
            Ok((current, _)) => {
                eprintln!(
                    "error: the configuration is at version {current}: nothing to roll back to"
                );
                return Exit::Refused;
            }
            Err(exit) => return exit,
        },
    };
    if dry_run {
        let configuration = match fetch(client, Some(to)).await {
            Ok((_, c)) => c,
            Err(exit) => return exit,
        };
        return match client
            .request(ClientRequest::PlanDeploy { configuration })
            .await
        {
            ClientReply::Plan(plan) => {
                println!("# rollback to version {to}");
                print!("{}", output::plan_text(&plan));
                Exit::Ok
            }
            other => report_failure(other),
        };
    }
    write(client, request_id, Command::Rollback { to, if_version }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(deployment: &str, apps: &str) -> Configuration {
        crate::config::parse(deployment, "d.yml", apps, "a.yml").unwrap()
    }

    #[test]
    fn changes_name_apps_fields_and_placements() {
        let a = config(
            "version: 1\nnodes:\n  n1: [web, db]\n",
            "version: 1\napplications:\n  web:\n    image: busybox:1\n  db:\n    image: busybox\n",
        );
        let b = config(
            "version: 1\nnodes:\n  n1: [web]\nanywhere: [cache]\n",
            "version: 1\napplications:\n  web:\n    image: busybox:2\n  cache:\n    image: busybox\n",
        );
        let lines = describe_changes(&a, &b);
        assert!(lines.contains(&"+cache".to_string()), "{lines:?}");
        assert!(lines.contains(&"-db".to_string()), "{lines:?}");
        assert!(lines.contains(&"~web: image".to_string()), "{lines:?}");
        assert!(describe_changes(&a, &a).is_empty());
    }
}
