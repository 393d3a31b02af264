//! Disaster recovery, offline (the node is stopped): `flocker recover
//! --force-new-cluster` turns one surviving member into a single-member
//! cluster with the same identity, and `--from-snapshot` builds a first
//! member from a `ctl snapshot save` file. Either way the state keeps every
//! app and volume record and every volume gets a fresh epoch (see
//! `State::refound`), so no copy from before the loss mounts without a new
//! handoff; this node's own complete copies are re-marked at the new epoch.

pub mod file;

use crate::api::{PeerReply, PeerRequest};
use crate::ca::{CertsDir, Role};
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::tls::TlsMaterial;
use crate::net::{Net, Service};
use crate::raft::{node_id_for, open_stores, NodeInfo};
use crate::state::State;
use anyhow::{bail, Context, Result};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a former member has to say how far its log goes.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RecoverArgs {
    pub data_dir: PathBuf,
    pub name: String,
    pub certs: PathBuf,
    /// The address the node will listen on (default: the one it had).
    pub listen: Option<SocketAddr>,
    pub force_new_cluster: bool,
    pub from_snapshot: Option<PathBuf>,
}

pub async fn run(args: RecoverArgs) -> Result<()> {
    let raft_dir = args.data_dir.join("raft");
    match (&args.from_snapshot, args.force_new_cluster) {
        (Some(file), false) => {
            if raft_dir.exists() && std::fs::read_dir(&raft_dir)?.next().is_some() {
                bail!(
                    "{} already holds Raft state: recover from a snapshot into a new data dir",
                    raft_dir.display()
                );
            }
            let Some(address) = args.listen else {
                bail!("give the address the new member will listen on (--listen IP:PORT)");
            };
            let (header, bytes) = file::read_snapshot(file)?;
            let state = State::decode(&bytes).context("decoding the snapshot's state")?;
            println!(
                "snapshot {}: index {}, term {}, {} bytes, checksum verified",
                file.display(),
                header.index,
                header.term,
                header.bytes
            );
            found(&args, address, state, header.term, header.index).await
        }
        (None, true) => force_new_cluster(&args, &raft_dir).await,
        _ => bail!("give exactly one of --force-new-cluster and --from-snapshot FILE"),
    }
}

/// What this node holds: the state after its whole log, where the log ends,
/// the members it last knew, and its vote's term.
struct Survivor {
    state: State,
    last: LogId<u64>,
    members: Vec<NodeInfo>,
    vote_term: u64,
}

async fn read_survivor(raft_dir: &Path) -> Result<Survivor> {
    if !raft_dir.exists() {
        bail!("{} holds no Raft state to recover from", raft_dir.display());
    }
    let (mut log, mut sm) = open_stores(raft_dir)?;
    let log_state = log.get_log_state().await?;
    let Some(last) = log_state.last_log_id else {
        bail!(
            "{} holds an empty log: nothing to recover",
            raft_dir.display()
        );
    };
    // Log indexes start at 0 (the founding membership).
    let from = sm.read().last_applied.map_or(0, |l| l.index + 1);
    // Every entry this node holds, committed or not: it is the most
    // up-to-date survivor (checked below), so its log is the best there is.
    let entries = log.try_get_log_entries(from..=last.index).await?;
    sm.apply(entries).await?;
    let vote_term = log.read_vote().await?.map_or(0, |v| v.leader_id().term);
    let applied = sm.read();
    let members = applied
        .membership
        .membership()
        .nodes()
        .map(|(_, info)| info.clone())
        .collect();
    let state = applied.state.clone();
    drop(applied);
    sm.quiesce();
    Ok(Survivor {
        state,
        last,
        members,
        vote_term,
    })
}

async fn force_new_cluster(args: &RecoverArgs, raft_dir: &Path) -> Result<()> {
    let survivor = read_survivor(raft_dir).await?;
    println!(
        "{}: log ends at index {} (term {})",
        args.name, survivor.last.index, survivor.last.leader_id.term
    );
    let mut ahead = Vec::new();
    for member in survivor.members.iter().filter(|m| m.name != args.name) {
        match ask_progress(args, member).await {
            Ok(last_index) => {
                println!("asked {member}: log ends at index {last_index}");
                if last_index > survivor.last.index {
                    ahead.push(format!("{} (index {last_index})", member.name));
                }
            }
            Err(why) => println!("asked {member}: unreachable ({why})"),
        }
    }
    if !ahead.is_empty() {
        bail!(
            "refused: {} {} ahead of this node (index {}); recover there instead, or bring it back into the cluster",
            ahead.join(", "),
            if ahead.len() == 1 { "is" } else { "are" },
            survivor.last.index
        );
    }
    let address = match args.listen {
        Some(a) => a,
        None => survivor
            .members
            .iter()
            .find(|m| m.name == args.name)
            .and_then(|m| m.address.parse().ok())
            .context("this node is not in its own membership: give --listen IP:PORT")?,
    };
    let aside = raft_dir.with_file_name(format!("raft.before-recovery-{}", unix_now()));
    std::fs::rename(raft_dir, &aside)
        .with_context(|| format!("moving {} aside", raft_dir.display()))?;
    println!("the old Raft state is kept in {}", aside.display());
    let term = survivor.vote_term.max(survivor.last.leader_id.term);
    found(args, address, survivor.state, term, survivor.last.index).await
}

/// How far `member`'s log goes, as it says itself.
async fn ask_progress(args: &RecoverArgs, member: &NodeInfo) -> Result<u64, String> {
    let tls = TlsMaterial::load(&CertsDir::new(&args.certs), Role::Node, &args.name)
        .map_err(|e| format!("{e:#}"))?;
    let addr: SocketAddr = member
        .address
        .parse()
        .map_err(|_| format!("unusable address {}", member.address))?;
    let net = Net::client(&tls, addr).map_err(|e| format!("{e:#}"))?;
    let reply = net
        .call::<_, PeerReply>(
            addr,
            Some(&member.name),
            Service::Peer,
            &PeerRequest::Status,
            MAX_CLIENT_FRAME,
            ASK_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string());
    net.close();
    match reply? {
        PeerReply::Status(status) => Ok(status.last_log_index),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Writes a fresh Raft state in `args.data_dir/raft`: one snapshot of
/// `state` refounded for this node at (term, index), this node the only
/// voter.
async fn found(
    args: &RecoverArgs,
    address: SocketAddr,
    mut state: State,
    term: u64,
    index: u64,
) -> Result<()> {
    let address = address.to_string();
    let bumped = state.refound(&args.name, &address);
    let store = crate::volume::VolumeStore::open(&args.data_dir)?;
    for (app, (old, new)) in &bumped {
        let owner = &state.volumes[app].node;
        let remarked = owner == &args.name && store.remark_complete(app, *old, *new)?;
        println!(
            "volume of {app}: owner {owner}, epoch {old} → {new}{}",
            if remarked {
                " (this node's complete copy re-marked)"
            } else {
                ""
            }
        );
    }
    let id = node_id_for(&args.name);
    let log_id = LogId::new(CommittedLeaderId::new(term, id), index);
    let info = NodeInfo {
        name: args.name.clone(),
        address: address.clone(),
    };
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, info)]));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("recovered-{term}-{index}"),
    };
    let (mut log, mut sm) = open_stores(&args.data_dir.join("raft"))?;
    sm.install_snapshot(&meta, Box::new(Cursor::new(state.encode())))
        .await?;
    log.save_vote(&Vote::new_committed(term, id)).await?;
    log.purge(log_id).await?;
    log.save_committed(Some(log_id)).await?;
    sm.quiesce();
    println!(
        "{} is now the only member of a recovered cluster at index {index}: start it with `flocker node --name {} --listen {address}` and neither --peers nor --join, then add members with --join",
        args.name, args.name
    );
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
