//! Gathering the members' observations into this node's event log, so any
//! node serves the events of the whole cluster: every second, each member
//! (up to [`ASKS_PER_ROUND`] of them, taking turns) is asked (`PeerRequest::ObservedEvents`) for its own observations after
//! the last one taken from it, at most a page at a time, and they are
//! logged here under this node's ids with the node that saw them. What
//! every node derives alike from the applied state (a member declared
//! down, a move begun) is not gathered: each node logs that itself. A
//! member whose build predates the request answers that it cannot read it
//! and is left alone for [`OLDER_BUILD_PAUSE`]; its observations are
//! missing meanwhile.

use super::events::{EventKey, EventLog};
use super::messages::{PeerReply, PeerRequest};
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::{Net, Service};
use crate::raft::{NodeInfo, StateMachineStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often members are asked.
const GATHER_EVERY: Duration = Duration::from_secs(1);
/// How long a member has to answer.
const GATHER_TIMEOUT: Duration = Duration::from_millis(800);
/// Events taken from one member per ask.
pub const GATHER_PAGE: u32 = 256;
/// Members asked per round: in a large cluster they take turns, so each
/// node's cost stays bounded (its observations arrive a little later).
const ASKS_PER_ROUND: usize = 16;
/// How long a member whose build cannot read the request is left alone
/// (it logs each such request as a bad frame): until it is upgraded.
const OLDER_BUILD_PAUSE: Duration = Duration::from_secs(300);

/// Gathers until the log is dropped.
pub fn gather(log: Weak<EventLog>, name: String, sm: StateMachineStore, net: Arc<Net>) {
    tokio::spawn(async move {
        // The last id taken from each member, in that member's numbering.
        let mut cursors: HashMap<String, String> = HashMap::new();
        let mut turn = 0usize;
        let mut paused: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::time::sleep(GATHER_EVERY).await;
            let Some(log) = log.upgrade() else { return };
            let members: Vec<NodeInfo> = {
                let applied = sm.read();
                let membership = applied.membership.membership();
                membership.nodes().map(|(_, n)| n.clone()).collect()
            };
            let now = tokio::time::Instant::now();
            paused.retain(|_, until| *until > now);
            let others: Vec<NodeInfo> = members
                .into_iter()
                .filter(|m| m.name != name && !paused.contains_key(&m.name))
                .collect();
            let count = others.len().min(ASKS_PER_ROUND);
            let start = if others.is_empty() {
                0
            } else {
                turn % others.len()
            };
            turn = turn.wrapping_add(count);
            let this_round = others.iter().cycle().skip(start).take(count);
            let asks = this_round.map(|m| {
                let since = cursors.get(&m.name).cloned();
                let net = net.clone();
                async move { (m.name.clone(), ask(&net, m, since).await) }
            });
            for (member, answer) in futures::future::join_all(asks).await {
                match answer {
                    Ok(page) => {
                        if let Some(last) = page.events.last() {
                            cursors.insert(member, last.id.clone());
                        }
                        let index = sm.read().index();
                        log.adopt(index, page.events);
                    }
                    Err(e) => {
                        tracing::debug!(%member, "gathering observed events: {e}");
                        if e.contains("bad frame") {
                            paused.insert(member, now + OLDER_BUILD_PAUSE);
                        }
                    }
                }
            }
        }
    });
}

async fn ask(
    net: &Net,
    member: &NodeInfo,
    since: Option<String>,
) -> Result<super::EventsPage, String> {
    let addr: SocketAddr = member
        .address
        .parse()
        .map_err(|_| format!("member {member} has an unusable address"))?;
    let request = PeerRequest::ObservedEvents { since };
    let reply: PeerReply = net
        .call(
            addr,
            Some(&member.name),
            Service::Peer,
            &request,
            MAX_CLIENT_FRAME,
            GATHER_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        PeerReply::ObservedEvents(page) => Ok(page),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// A member's answer: its own observations after `since`.
pub fn own_page(log: &EventLog, since: Option<&str>) -> Result<super::EventsPage, String> {
    let since = since.map(EventKey::parse).transpose()?;
    Ok(log.own_after(since, GATHER_PAGE as usize))
}
