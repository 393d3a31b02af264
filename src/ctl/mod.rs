//! `flocker ctl`: the operator's commands against any node. Owns argument
//! meaning, output (tables or `-o json`) and exit codes; the wire is `api::client`.

mod events;
mod logs;
mod moving;
mod output;
mod seeding;
mod trust;
mod versions;

use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest};
use crate::ca::CertsDir;
use crate::state::Command;
use clap::{Args, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit codes every `ctl` command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Refused or failed with nothing changed.
    Refused = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The request was sent but its outcome is unknown (e.g. a timeout).
    Unknown = 3,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Any node of the cluster (IP:PORT).
    #[arg(long, env = "FLOCKER_NODE", global = true)]
    pub node: Option<SocketAddr>,
    /// Your bundle (`flocker ca bundle --user NAME`), or the CA directory.
    #[arg(long, env = "FLOCKER_CERTS", global = true)]
    pub certs: Option<PathBuf>,
    /// The user certificate to present.
    #[arg(long, default_value = "admin", global = true)]
    pub user: String,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// An app's container output, from whichever node runs it.
    Logs {
        app: String,
        /// Keep printing new lines, following the app when it moves.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Only lines since T: an RFC 3339 time or an age (90s, 10m, 2h, 1d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
    },
    /// Events: committed changes (who, request id) and what the contacted
    /// node observed (containers, nodes, moves), one line each.
    Events {
        /// Keep printing new events as they happen.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events after this id (as printed: INDEX or INDEX.N).
        #[arg(long, value_name = "ID")]
        since: Option<String>,
        /// At most this many (the newest, without --since) per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// `json`: one JSON object per line.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Members with their role, term, leader and progress.
    Nodes {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
        /// Answer from the contacted node's own state, without a read index
        /// (works without a quorum; may be out of date).
        #[arg(long)]
        stale: bool,
    },
    /// Set (key=value) or remove (key-) labels on a node.
    Label {
        node_name: String,
        #[arg(required = true)]
        labels: Vec<String>,
        /// Makes a retry apply once; generated and printed when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Take a node out of service: its `anywhere` apps are placed elsewhere.
    Drain {
        node_name: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Move an app to NODE: a pinned app's deployment entry changes, an
    /// `anywhere` app's placement; its volume goes with it (pushed while it
    /// runs, then a short stop for the final delta).
    Move {
        app: String,
        /// The node to move it to.
        #[arg(value_name = "NODE")]
        to: String,
        /// Follow the move with a progress bar until the app runs on NODE.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting (not the move) after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Volumes.
    Volume {
        #[command(subcommand)]
        action: VolumeAction,
    },
    /// Return a drained node to service.
    Activate {
        node_name: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Add or remove cluster members.
    Members {
        #[command(subcommand)]
        action: MembersAction,
    },
    /// Commit a whole desired configuration: Flocker's deployment file, then
    /// its application file (or fig/compose form), as one change.
    Deploy {
        deployment: PathBuf,
        application: PathBuf,
        /// Print what would change; commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless the deployed configuration is at this version.
        #[arg(long)]
        if_version: Option<u64>,
        /// Makes a retry apply once; generated and printed when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Applications: where they should run and what the nodes observe.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Committed changes: who, when, through which node, request id, what.
    History {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
        /// At most this many changes (the newest ones before --before).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only changes committed before this log index (to page back).
        #[arg(long, value_name = "INDEX")]
        before: Option<u64>,
    },
    /// The certificate this command presents, as the node sees it: name,
    /// role, expiry, fingerprint.
    Whoami {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Put a certificate on the cluster's deny list (admin): every node
    /// refuses it from the commit on, and closes connections using it.
    Revoke {
        /// The certificate file (PEM).
        #[arg(
            long,
            conflicts_with = "fingerprint",
            required_unless_present = "fingerprint"
        )]
        cert: Option<PathBuf>,
        /// Its SHA-256 fingerprint (`flocker ca fingerprint FILE`; colons allowed).
        #[arg(long)]
        fingerprint: Option<String>,
        /// Why, for history.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Deploy an earlier configuration version again (the one before the
    /// current unless --to), through the same plan as a deploy.
    Rollback {
        #[arg(long, value_name = "VERSION")]
        to: Option<u64>,
        /// Print what would change; commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless the deployed configuration is at this version.
        #[arg(long)]
        if_version: Option<u64>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Backups of the replicated state.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// The deployed configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeAction {
    /// Give up on a volume's owner (gone for good): NODE becomes the owner at
    /// a new epoch, starting from its own copy or empty. The old owner, if it
    /// returns, never mounts its copy.
    Recover {
        app: String,
        /// The node that becomes the owner.
        #[arg(long = "to", value_name = "NODE")]
        to: String,
        /// Required: whatever only the old owner had is lost.
        #[arg(long)]
        accept_data_loss: bool,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Remove the copies a failover left aside on the volume's former
    /// owners (what they wrote after the promoted point; `ctl status`
    /// lists them): `--on NODE` only, or on every node.
    /// Wait until every replica of APP's volume is in sync, drawing the
    /// progress of the points on their way (a new replica's seeding).
    Wait {
        app: String,
        /// Give up waiting (not the replication) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    ForgetDiverged {
        app: String,
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the deployed configuration as Flocker's two files
    /// (deployment.yml, then application.yml), or `-o json`.
    Show {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
        /// Write deployment.yml and application.yml into this directory
        /// (ready for `ctl deploy`) instead of printing them.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// An earlier version (the last 50 are kept) instead of the current.
        #[arg(long)]
        version: Option<u64>,
    },
    /// What changed from configuration version FROM to version TO.
    Diff {
        from: u64,
        to: u64,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Write a consistent, checksummed copy of the replicated state
    /// (linearizable; admin) for `flocker recover --from-snapshot`.
    Save { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum MembersAction {
    /// Add a member: a learner first, then a voter once caught up while there
    /// are fewer voters than the cluster's --max-voters.
    Add { name: String, address: SocketAddr },
    /// Remove a member.
    Remove { name: String },
}

pub async fn run(args: CtlArgs) -> Exit {
    let Some(node) = args.node else {
        eprintln!("error: no node given: pass --node IP:PORT or set FLOCKER_NODE");
        return Exit::Usage;
    };
    let Some(certs) = args.certs else {
        eprintln!("error: no certs directory given: pass --certs DIR or set FLOCKER_CERTS");
        return Exit::Usage;
    };
    let client = match Client::new(&CertsDir::new(&certs), &args.user, node) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Exit::Usage;
        }
    };
    match args.command {
        CtlCommand::Nodes { output, stale } => {
            match client.request(ClientRequest::Nodes { stale }).await {
                ClientReply::Nodes(views) => {
                    match output {
                        OutputFormat::Json => println!("{}", to_json(&views)),
                        OutputFormat::Table => print!("{}", output::nodes_table(&views)),
                    }
                    Exit::Ok
                }
                other => report_failure(other),
            }
        }
        CtlCommand::Label {
            node_name,
            labels,
            request_id,
        } => {
            let changes = match parse_label_changes(&labels) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Exit::Usage;
                }
            };
            let command = Command::SetLabels {
                node: node_name,
                changes,
            };
            write(&client, request_id, command).await
        }
        CtlCommand::Deploy {
            deployment,
            application,
            dry_run,
            if_version,
            request_id,
        } => {
            let configuration = match crate::config::load(&deployment, &application) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{} error(s); nothing was deployed", errors.len());
                    return Exit::Refused;
                }
            };
            if dry_run {
                return match client
                    .request(ClientRequest::PlanDeploy { configuration })
                    .await
                {
                    ClientReply::Plan(plan) => {
                        print!("{}", output::plan_text(&plan));
                        Exit::Ok
                    }
                    other => report_failure(other),
                };
            }
            let command = Command::Deploy {
                configuration,
                if_version,
            };
            write(&client, request_id, command).await
        }
        CtlCommand::Drain {
            node_name,
            request_id,
        } => {
            let command = Command::SetDrained {
                node: node_name,
                drained: true,
            };
            write(&client, request_id, command).await
        }
        CtlCommand::Volume {
            action:
                VolumeAction::Recover {
                    app,
                    to: node,
                    accept_data_loss,
                    request_id,
                },
        } => {
            let replica = recovery_point(&client, &app, &node).await;
            match (&replica, accept_data_loss) {
                (Some(r), _) if r.state == "in-sync" => {
                    println!(
                        "recovering {app} on {node} from its replica's {}",
                        point_words(r)
                    );
                }
                (_, false) => {
                    let why = match &replica {
                        Some(r) => format!("{node}'s replica is {} ({})", r.state, point_words(r)),
                        None => format!("{node} holds no replica of {app}"),
                    };
                    eprintln!(
                        "error: {why}: recovering {app} there gives up whatever only its current owner holds; \
                         say so with --accept-data-loss"
                    );
                    return Exit::Usage;
                }
                (_, true) => {}
            }
            write(&client, request_id, Command::RecoverVolume { app, node }).await
        }
        CtlCommand::Volume {
            action: VolumeAction::Wait { app, timeout },
        } => {
            seeding::wait_for_replicas(&client, &app, std::time::Duration::from_secs(timeout)).await
        }
        CtlCommand::Volume {
            action:
                VolumeAction::ForgetDiverged {
                    app,
                    on,
                    request_id,
                },
        } => {
            write(
                &client,
                request_id,
                Command::ForgetDiverged { app, node: on },
            )
            .await
        }
        CtlCommand::Move {
            app,
            to: node,
            wait,
            timeout,
            request_id,
        } => {
            let command = Command::MoveApp {
                app: app.clone(),
                node: node.clone(),
            };
            let exit = write(&client, request_id, command).await;
            if exit != Exit::Ok || !wait {
                return exit;
            }
            moving::wait_for_move(
                &client,
                &app,
                &node,
                std::time::Duration::from_secs(timeout),
            )
            .await
        }
        CtlCommand::Activate {
            node_name,
            request_id,
        } => {
            let command = Command::SetDrained {
                node: node_name,
                drained: false,
            };
            write(&client, request_id, command).await
        }
        CtlCommand::Status { output } => match client.request(ClientRequest::Status).await {
            ClientReply::Status(view) => {
                match output {
                    OutputFormat::Json => println!("{}", to_json(&view)),
                    OutputFormat::Table => print!("{}", output::status_table(&view)),
                }
                Exit::Ok
            }
            other => report_failure(other),
        },
        CtlCommand::Whoami { output } => trust::whoami(&client, output).await,
        CtlCommand::Snapshot {
            action: SnapshotAction::Save { file },
        } => save_snapshot(&client, &certs, &file).await,
        CtlCommand::Logs {
            app,
            follow,
            tail,
            since,
        } => {
            let args = logs::LogsArgs {
                app,
                follow,
                tail,
                since,
            };
            logs::logs(&client, args).await
        }
        CtlCommand::Events {
            follow,
            since,
            limit,
            output,
        } => {
            let args = events::EventsArgs {
                follow,
                since,
                limit,
                output,
            };
            events::events(&client, args).await
        }
        CtlCommand::Revoke {
            cert,
            fingerprint,
            reason,
            request_id,
        } => {
            let target = trust::RevokeTarget {
                cert: cert.as_deref(),
                fingerprint: fingerprint.as_deref(),
                reason,
            };
            trust::revoke(&client, target, request_id).await
        }
        CtlCommand::History {
            output,
            limit,
            before,
        } => match client
            .request(ClientRequest::HistoryPage { limit, before })
            .await
        {
            ClientReply::History(entries) => {
                match output {
                    OutputFormat::Json => println!("{}", to_json(&entries)),
                    OutputFormat::Table => print!("{}", output::history_table(&entries)),
                }
                Exit::Ok
            }
            other => report_failure(other),
        },
        CtlCommand::Rollback {
            to,
            dry_run,
            if_version,
            request_id,
        } => versions::rollback(&client, to, dry_run, if_version, request_id).await,
        CtlCommand::Config {
            action: ConfigAction::Diff { from, to, output },
        } => versions::diff(&client, from, to, output).await,
        CtlCommand::Config {
            action:
                ConfigAction::Show {
                    output,
                    dir,
                    version,
                },
        } => match versions::fetch(&client, version).await {
            Ok((version, configuration)) => {
                match output {
                    OutputFormat::Json => println!(
                        "{}",
                        to_json(
                            &serde_json::json!({"version": version, "configuration": configuration})
                        )
                    ),
                    OutputFormat::Table => match dir {
                        Some(dir) => {
                            let (deployment, application) = crate::config::to_files(&configuration);
                            let written = std::fs::create_dir_all(&dir)
                                .and_then(|()| {
                                    std::fs::write(dir.join("deployment.yml"), deployment)
                                })
                                .and_then(|()| {
                                    std::fs::write(dir.join("application.yml"), application)
                                });
                            if let Err(e) = written {
                                eprintln!("error: writing to {}: {e}", dir.display());
                                return Exit::Refused;
                            }
                            println!(
                                "configuration version {version} written to {}/deployment.yml and application.yml",
                                dir.display()
                            );
                        }
                        None => {
                            println!("# configuration version {version}");
                            print!("{}", output::config_text(&configuration));
                        }
                    },
                }
                Exit::Ok
            }
            Err(exit) => exit,
        },
        CtlCommand::Members { action } => {
            let request = match action {
                MembersAction::Add { name, address } => ClientRequest::MembersAdd {
                    name,
                    address: address.to_string(),
                },
                MembersAction::Remove { name } => ClientRequest::MembersRemove { name },
            };
            match client.request(request).await {
                ClientReply::Done(message) => {
                    println!("{message}");
                    Exit::Ok
                }
                other => report_failure(other),
            }
        }
    }
}

/// `ctl snapshot save FILE`.
async fn save_snapshot(client: &Client, certs: &std::path::Path, file: &std::path::Path) -> Exit {
    match client.request(ClientRequest::SnapshotSave).await {
        ClientReply::Snapshot { index, term, state } => {
            let cluster = crate::node::cluster_id(&CertsDir::new(certs)).unwrap_or_default();
            match crate::recover::file::write_snapshot(file, index, term, &cluster, &state) {
                Ok(()) => {
                    println!(
                        "snapshot at index {index} (term {term}), {} bytes, written to {}",
                        state.len(),
                        file.display()
                    );
                    Exit::Ok
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Exit::Refused
                }
            }
        }
        other => report_failure(other),
    }
}

/// Sends one write with its request id and reports its outcome.
/// `node`'s replica of `app`'s volume as `ctl status` shows it, if it holds
/// one (a recovery there starts from its point).
async fn recovery_point(client: &Client, app: &str, node: &str) -> Option<crate::api::ReplicaView> {
    let ClientReply::Status(view) = client.request(ClientRequest::Status).await else {
        return None;
    };
    let volume = view.apps.into_iter().find(|a| a.name == app)?.volume?;
    volume.replicas.into_iter().find(|r| r.node == node)
}

/// `point 14 of epoch 2, 1.2 s old`.
fn point_words(r: &crate::api::ReplicaView) -> String {
    match (r.seq, r.epoch, r.age_ms) {
        (Some(seq), Some(epoch), Some(ms)) => {
            format!(
                "point {seq} of epoch {epoch}, {:.1} s old",
                ms as f64 / 1000.0
            )
        }
        (Some(seq), Some(epoch), None) => format!("point {seq} of epoch {epoch}, age unknown"),
        _ => "no complete point yet".to_string(),
    }
}

async fn write(client: &Client, request_id: Option<String>, command: Command) -> Exit {
    let request_id = request_id.unwrap_or_else(|| {
        let id = new_request_id();
        eprintln!("request id: {id}");
        id
    });
    if let Err(why) = crate::state::check_request_id(&request_id) {
        eprintln!("error: {why}");
        return Exit::Usage;
    }
    match client
        .request(ClientRequest::Write {
            request_id,
            command,
        })
        .await
    {
        ClientReply::Written(outcome) => {
            let note = if outcome.replayed {
                " (already applied: this is the original outcome)"
            } else {
                ""
            };
            match outcome.result {
                Ok(message) => {
                    println!("{message} (index {}){note}", outcome.index);
                    Exit::Ok
                }
                Err(reason) => {
                    eprintln!("refused: {reason}{note}");
                    Exit::Refused
                }
            }
        }
        other => report_failure(other),
    }
}

fn report_failure(reply: ClientReply) -> Exit {
    match reply {
        ClientReply::Failed {
            unknown: true,
            message,
        } => {
            eprintln!("outcome unknown: {message}");
            Exit::Unknown
        }
        ClientReply::Failed {
            unknown: false,
            message,
        } => {
            eprintln!("error: {message}");
            Exit::Refused
        }
        other => {
            eprintln!("error: unexpected reply from the node: {other:?}");
            Exit::Unknown
        }
    }
}

/// `key=value` sets a label, `key-` removes one.
pub fn parse_label_changes(args: &[String]) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut changes = BTreeMap::new();
    for arg in args {
        let (key, value) = if let Some((k, v)) = arg.split_once('=') {
            (k, Some(v.to_string()))
        } else if let Some(k) = arg.strip_suffix('-') {
            (k, None)
        } else {
            return Err(format!("'{arg}' is neither key=value nor key-"));
        };
        crate::state::validate_label(key, value.as_deref())?;
        if changes.insert(key.to_string(), value).is_some() {
            return Err(format!("label '{key}' given twice"));
        }
    }
    Ok(changes)
}

/// A fresh request id: 128 random bits, hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("API replies serialize to JSON")
}
