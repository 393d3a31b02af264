//! The recorded history of a chaos run: one JSON object per line
//! (`history.jsonl`), every event stamped on the run's one monotonic clock
//! (nanoseconds since the run started). Clients append `invoke` then exactly
//! one of `ok` / `fail` / `info` for each operation; `info` means the outcome
//! is unknown (timeout, broken connection, exit code 3) and the operation
//! stays open-ended for the checkers.
//!
//! The witness (heartbeats from the stateful app, received by a listener the
//! cluster does not control), Docker's container events and the nemesis log
//! are separate files with their own event types below, on the same clock.

use serde::{Deserialize, Serialize};

/// Whether an event opens an operation or says how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    /// Took effect (writes) or returned a value (reads).
    Ok,
    /// Certainly did not take effect.
    Fail,
    /// Unknown: may or may not have taken effect, at any time after invoke.
    Info,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Sets `key`'s register (the app's `CHAOS_VALUE` environment variable)
    /// to `value` through a `ctl deploy --if-version` of the configuration
    /// just read with only that app changed.
    Write,
    /// Reads every app's register through `ctl config show` (linearizable);
    /// `value` on `ok` is the value read for `key` (null: app absent).
    Read,
    /// `ctl move key value` (value: the target node name).
    Move,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the file, from 0.
    pub index: u64,
    /// Nanoseconds since the run started (monotonic).
    pub time_ns: u64,
    /// The client that issued the operation; one operation at a time each.
    pub process: u32,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub f: OpKind,
    /// The app the operation is about.
    pub key: String,
    /// Write/move: the value written on invoke (repeated on completion).
    /// Read: null on invoke, the value read on ok.
    pub value: Option<String>,
    /// The node the request was sent to.
    pub node: String,
    /// The request id the client used (and reused on retries).
    pub request_id: String,
    /// Fail/info: why, in the tool's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `witness.jsonl`: a heartbeat the stateful app sent after
/// fsyncing record `seq` of its hash-chained log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub time_ns: u64,
    pub app: String,
    /// The node the container says it runs on (its FLOCKER node label, passed in
    /// the environment).
    pub node: String,
    /// Random per container start: tells two instances apart.
    pub instance: String,
    /// The last record written and fsynced.
    pub seq: u64,
    /// Hex hash of that record (the chain's head).
    pub head: String,
}

/// One line of `docker-events.jsonl`: a container of the cluster starting or
/// dying, from `docker events` filtered by the cluster label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub time_ns: u64,
    pub app: String,
    pub node: String,
    pub container: String,
    /// "start" or "die".
    pub action: String,
    /// On "die": the container's exit code, when Docker reported one. 75 is
    /// flocker's fence refusing to start the app (its node's lease had run
    /// out): that container never ran an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// The exit code of a flocker-fenced container whose app never started
/// (`flocker::agent::fence::FENCED_BEFORE_START`).
pub const FENCED_BEFORE_START: i64 = 75;

/// One line of `nemesis.jsonl`: a fault starting or healing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisEvent {
    pub time_ns: u64,
    /// "partition", "kill", "pause", "clock", "link", "membership".
    pub nemesis: String,
    /// "start" or "stop"; the membership nemesis also records its steps
    /// in between ("removed", "cut-off", "killed", "probe", "rejoin",
    /// "lifted").
    pub phase: String,
    /// In words: "isolate leader n2", "n1,n2 | n3", "kill -9 n3", ...
    pub detail: String,
    /// The nodes affected.
    pub nodes: Vec<String>,
    /// On a membership "probe": what became of the removed node's old
    /// certificate — "refused", "admitted" or "undecided".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// One line of `cuts.jsonl`: a time during which `node` was cut off from
/// the cluster, written when it ended. Cut off: under a partition the node
/// heard from fewer than a majority of the nodes (itself included), or it
/// had been removed from the membership. Either way no leader could renew
/// its lease after `from_ns` (a leader renews only with a quorum behind it,
/// and only members), so the lease ran out within the node lease of it.
/// `to_ns` is taken just before the cut was lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutWindow {
    pub node: String,
    pub from_ns: u64,
    pub to_ns: u64,
    /// "partition: n1 | n2,n3", "removed from the membership", ...
    pub why: String,
}

/// How a routed read ended (see [`RoutedRead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutedOutcome {
    /// An instance answered with its state line.
    Answered,
    /// The connection was refused (RST to the SYN): nothing routes or
    /// listens there.
    Refused,
    /// No connection, or no answer, within the read's bounds.
    Timeout,
    /// Anything else: reset or closed after connecting, an unreadable
    /// answer.
    Error,
}

/// What answered a routed read: the line the app serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedAnswer {
    pub app: String,
    /// The instance (as in its heartbeats).
    pub instance: String,
    /// The container's hostname: the first 12 hex digits of its Docker id.
    pub container: String,
    /// The node the instance says it runs on.
    pub node: String,
    /// The last record it had written.
    pub seq: u64,
}

/// One line of `routed.jsonl`: an HTTP read of an app's state line from the
/// clients' namespace through one node's address and the app's external
/// port, i.e. through the routing mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedRead {
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// The app read (whose port).
    pub app: String,
    pub port: u16,
    /// The node whose address the client connected to.
    pub via: String,
    pub outcome: RoutedOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<RoutedAnswer>,
    /// Refused, timeout, error: what the client saw, in its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `moves.jsonl`: a volume move the harness watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub start_ns: u64,
    pub end_ns: u64,
    pub app: String,
    pub from: String,
    pub to: String,
    /// Bytes the move reported sending (from `ctl status`), when known.
    pub bytes: Option<u64>,
    /// Whether the destination's copy matched the source's last state.
    pub checksum_ok: Option<bool>,
}

/// One line of `owners.jsonl`: the move observer saw the owner or the
/// epoch of an app's volume change (a move's handoff or a failover), in a
/// linearizable `ctl status`. The change was committed between
/// `prev_invoke_ns` (when the read that last showed the old owner began;
/// absent for the first sighting) and `time_ns` (when this read ended).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerSeen {
    pub time_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_invoke_ns: Option<u64>,
    pub app: String,
    pub owner: String,
    pub epoch: u64,
}

/// One line of `failovers.jsonl`: a failover in the cluster's history, as
/// the move observer copied it when it saw the owner change (`time_ns`:
/// when it was copied). `index` and `summary` are the history entry's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverEntry {
    #[serde(default)]
    pub time_ns: u64,
    pub index: u64,
    pub summary: String,
}

/// Reads a JSONL file of `T`, naming the file and line of any bad line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a valid record", path.display(), i + 1))
        })
        .collect()
}
