//! The event log a node serves (`ctl events`, `GET /v1/events`): every
//! committed change from the applied state's history (who, request id)
//! and every transition this node observes — its own containers started,
//! died, restarted, recreated or removed, its engine degraded or back,
//! members joined, down, up or gone, volume moves begun, ended or in a
//! new phase as the applied state and its own move driver show them, and
//! the replicas it ships to as owner seeded, failing or reached again.
//! Observed events carry the node that saw them. Each node serves the
//! committed changes of the whole cluster, its own observations, and the
//! other members' as it gathers them (`event_gather`), so any node's log is
//! the cluster's.
//!
//! Ids resume: a committed change is `"<index>"` (its Raft log index); an
//! observed event is `"<index>.<n>"`, the n-th (from 1) this node saw while
//! its applied index was `index`. Ids order as (index, n), so every event
//! after an id is the rest of the log. The log is in memory and bounded
//! ([`EVENT_CAPACITY`]); a reader asking from an id older than what is kept
//! (dropped for room, or before this node started) is told so in `gap`,
//! never silently.

use crate::agent::{Observations, Observed};
use crate::raft::StateMachineStore;
use crate::state::{HistoryEntry, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Events kept; the oldest go first.
pub const EVENT_CAPACITY: usize = 10_000;
/// Most events one page holds.
pub const MAX_EVENT_PAGE: usize = 1000;
/// Longest summary kept for one event.
const MAX_SUMMARY: usize = 1024;
/// How often this node looks for observed transitions besides commits.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One event, as `ctl events -o json` and the event stream show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Resume after it with `--since ID` or `Last-Event-ID`.
    pub id: String,
    /// Milliseconds since the Unix epoch: the leader's proposal time for a
    /// committed change, this node's clock for an observed one.
    pub time_ms: u64,
    /// The node that saw it (that applied the change, or observed it).
    pub node: String,
    /// `change`, `container`, `node`, `move`, `replica`.
    pub kind: String,
    pub summary: String,
    /// For a change: its author and request id.
    pub who: Option<String>,
    pub request_id: Option<String>,
}

/// A page of events after an id, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<Event>,
    /// Set when events after the asked id are no longer kept here.
    pub gap: Option<String>,
}

/// Where an event stands in the log: (applied index, n); n = 0 for a
/// committed change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey(pub u64, pub u32);

impl EventKey {
    pub fn parse(text: &str) -> Result<EventKey, String> {
        let bad = || format!("'{text}' is not an event id (INDEX or INDEX.N)");
        let (index, n) = match text.trim().split_once('.') {
            Some((i, n)) => (i, n.parse().map_err(|_| bad())?),
            None => (text.trim(), 0),
        };
        Ok(EventKey(index.parse().map_err(|_| bad())?, n))
    }

    fn id(self) -> String {
        match self.1 {
            0 => self.0.to_string(),
            n => format!("{}.{n}", self.0),
        }
    }
}

/// The log itself, shared by the sampler and the readers.
pub struct EventLog {
    log: Mutex<Log>,
    /// Bumped on every append: readers wait on it.
    appended: watch::Sender<u64>,
}

#[derive(Default)]
struct Log {
    /// With whether it is this node's own observation, which members
    /// gather from it (`event_gather`); changes, and what every node derives
    /// alike from the applied state, are not.
    events: VecDeque<(EventKey, Event, bool)>,
    /// The newest key known not to be kept (dropped, or before this node
    /// started observing).
    lost_through: Option<EventKey>,
    last_committed: u64,
    /// The index observed events are numbered under, and the last n.
    observed_at: EventKey,
    seen: Seen,
}

/// What the sampler saw last time, to find transitions.
#[derive(Default, Clone, PartialEq)]
struct Seen {
    containers: BTreeMap<String, (String, Option<String>, u32)>,
    degraded: Option<String>,
    down: BTreeMap<String, bool>,
    moves: BTreeMap<String, (String, String, u64)>,
    phases: BTreeMap<String, String>,
    /// Replicas this node ships to as owner: (app, replica) -> (seeded,
    /// last error).
    replicas: BTreeMap<(String, String), (bool, Option<String>)>,
}

impl EventLog {
    /// Starts following `sm` and `observed` for node `name` (needs a tokio
    /// runtime); the task ends once the log is dropped.
    pub fn follow(name: String, sm: StateMachineStore, observed: Observations) -> Arc<EventLog> {
        let log = Arc::new(EventLog::empty());
        {
            let applied = sm.read();
            log.start(&name, applied.index(), &applied.state, &observed.snapshot());
        }
        let weak = Arc::downgrade(&log);
        tokio::spawn(sample_loop(weak, name, sm, observed));
        log
    }

    pub fn empty() -> EventLog {
        EventLog {
            log: Mutex::new(Log::default()),
            appended: watch::Sender::new(0),
        }
    }

    /// Follows appends.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Up to `limit` events after `since` (the newest `limit` when `None`).
    pub fn page(&self, since: Option<EventKey>, limit: usize) -> EventsPage {
        let log = self.log.lock().expect("event log lock");
        let limit = limit.clamp(1, MAX_EVENT_PAGE);
        let Some(since) = since else {
            let skip = log.events.len().saturating_sub(limit);
            let events = log.events.iter().skip(skip).map(|(_, e, _)| e.clone());
            return EventsPage {
                events: events.collect(),
                gap: None,
            };
        };
        let gap = log.lost_through.filter(|&lost| lost > since).map(|lost| {
            format!(
                "events after {} up to {} are no longer kept by this node \
                 (it keeps the last {EVENT_CAPACITY}, and none observed before it started); \
                 what follows is what it has",
                since.id(),
                lost.id()
            )
        });
        let start = log.events.partition_point(|(k, _, _)| *k <= since);
        let events = log.events.range(start..).take(limit);
        EventsPage {
            events: events.map(|(_, e, _)| e.clone()).collect(),
            gap,
        }
    }

    /// This node's own observations after `since` (the newest `limit` when
    /// `None`), for a member gathering them.
    pub fn own_after(&self, since: Option<EventKey>, limit: usize) -> EventsPage {
        let log = self.log.lock().expect("event log lock");
        let own = log
            .events
            .iter()
            .filter(|(k, _, own)| *own && since.is_none_or(|s| *k > s));
        let mut events: Vec<Event> = own.map(|(_, e, _)| e.clone()).collect();
        let limit = limit.clamp(1, MAX_EVENT_PAGE);
        match since {
            None => drop(events.drain(..events.len().saturating_sub(limit))),
            Some(_) => events.truncate(limit),
        }
        EventsPage { events, gap: None }
    }

    /// Adds what member `node` observed (gathered from it), numbered here.
    pub fn adopt(&self, index: u64, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut log = self.log.lock().expect("event log lock");
        for event in events {
            log.push_observed(&event.node, index, &event.kind, event.summary, false);
            if let Some((_, last, _)) = log.events.back_mut() {
                last.time_ms = event.time_ms;
            }
        }
        drop(log);
        self.appended.send_modify(|n| *n += 1);
    }

    /// The baseline: history kept so far, and what is seen now (no events
    /// for it; observations from before now are lost).
    fn start(&self, name: &str, index: u64, state: &State, observed: &Observed) {
        let mut log = self.log.lock().expect("event log lock");
        for entry in state.history.entries() {
            log.push_committed(name, entry);
        }
        log.lost_through = Some(EventKey(index, u32::MAX));
        log.observed_at = EventKey(index, 0);
        log.seen = seen(name, state, observed);
        drop(log);
        self.appended.send_modify(|n| *n += 1);
    }

    /// Records what changed since the last sample.
    fn sample(&self, name: &str, index: u64, state: &State, observed: &Observed) {
        let now = seen(name, state, observed);
        let mut log = self.log.lock().expect("event log lock");
        let before = log.events.len();
        let fresh: Vec<&HistoryEntry> = state
            .history
            .entries()
            .filter(|e| e.index > log.last_committed)
            .collect();
        for entry in fresh {
            log.push_committed(name, entry);
        }
        if now != log.seen {
            let found = transitions(name, &log.seen, &now, state);
            for (kind, summary, own) in found {
                log.push_observed(name, index, kind, summary, own);
            }
            log.seen = now;
        }
        let grew = log.events.len() != before || log.events.len() == EVENT_CAPACITY;
        drop(log);
        if grew {
            self.appended.send_modify(|n| *n += 1);
        }
    }

    /// Adds an observed event (tests and the sampler).
    pub fn observe(&self, node: &str, index: u64, kind: &str, summary: String) {
        self.log
            .lock()
            .expect("event log lock")
            .push_observed(node, index, kind, summary, true);
        self.appended.send_modify(|n| *n += 1);
    }
}

impl Log {
    fn push(&mut self, key: EventKey, event: Event, own: bool) {
        if self.events.len() >= EVENT_CAPACITY {
            if let Some((gone, _, _)) = self.events.pop_front() {
                self.lost_through = Some(self.lost_through.map_or(gone, |l| l.max(gone)));
            }
        }
        self.events.push_back((key, event, own));
    }

    fn push_committed(&mut self, node: &str, entry: &HistoryEntry) {
        if entry.index <= self.last_committed {
            return;
        }
        self.last_committed = entry.index;
        let key = EventKey(entry.index, 0);
        let mut summary = entry.summary.clone();
        if let Some(via) = &entry.via {
            summary.push_str(&format!(" (via {via})"));
        }
        clip(&mut summary);
        let event = Event {
            id: key.id(),
            time_ms: entry.proposed_at_ms,
            node: node.to_string(),
            kind: "change".into(),
            summary,
            who: Some(entry.author.clone()),
            request_id: Some(entry.request_id.clone()),
        };
        self.push(key, event, false);
    }

    fn push_observed(&mut self, node: &str, index: u64, kind: &str, summary: String, own: bool) {
        let mut summary = summary;
        // Never before a committed change already logged, nor before an
        // earlier observation: ids only grow.
        let index = index.max(self.last_committed).max(self.observed_at.0);
        self.observed_at = match self.observed_at {
            EventKey(at, n) if at == index => EventKey(at, n.saturating_add(1)),
            _ => EventKey(index, 1),
        };
        let key = self.observed_at;
        clip(&mut summary);
        let event = Event {
            id: key.id(),
            time_ms: now_ms(),
            node: node.to_string(),
            kind: kind.to_string(),
            summary,
            who: None,
            request_id: None,
        };
        self.push(key, event, own);
    }
}

async fn sample_loop(
    log: Weak<EventLog>,
    name: String,
    sm: StateMachineStore,
    observed: Observations,
) {
    let mut applied = sm.subscribe();
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
        let Some(log) = log.upgrade() else { return };
        let snapshot = observed.snapshot();
        let guard = sm.read();
        log.sample(&name, guard.index(), &guard.state, &snapshot);
    }
}

fn seen(name: &str, state: &State, observed: &Observed) -> Seen {
    Seen {
        containers: observed
            .instances
            .iter()
            .filter(|(_, i)| i.node == name)
            .map(|(app, i)| {
                let what = (i.state.clone(), i.container_id.clone(), i.restarts);
                (app.clone(), what)
            })
            .collect(),
        degraded: observed.degraded.clone(),
        down: state
            .nodes
            .iter()
            .map(|(n, r)| (n.clone(), r.down))
            .collect(),
        moves: state
            .moves
            .iter()
            .map(|(app, m)| (app.clone(), (m.from.clone(), m.to.clone(), m.epoch)))
            .collect(),
        phases: observed
            .moves
            .iter()
            .map(|(app, m)| (app.clone(), m.phase.clone()))
            .collect(),
        replicas: observed
            .replication
            .iter()
            .flat_map(|(app, replicas)| {
                replicas.iter().map(move |(node, p)| {
                    let seen = (p.shipped_seq > 0, p.last_error.clone());
                    ((app.clone(), node.clone()), seen)
                })
            })
            .collect(),
    }
}

/// The events between two samples, in a stable order, each with whether
/// it is this node's own observation (else every node derives it alike
/// from the applied state).
fn transitions(
    name: &str,
    was: &Seen,
    now: &Seen,
    state: &State,
) -> Vec<(&'static str, String, bool)> {
    let mut own = container_transitions(name, was, now);
    if was.degraded != now.degraded {
        let summary = match &now.degraded {
            Some(why) => format!("{name} degraded: {why}"),
            None => format!("{name} can run containers again"),
        };
        own.push(("node", summary));
    }
    own.extend(phase_transitions(was, now));
    own.extend(replica_transitions(name, was, now));
    let mut found: Vec<_> = own.into_iter().map(|(k, s)| (k, s, true)).collect();
    let mut derived = Vec::new();
    for (node, down) in &now.down {
        let summary = match (was.down.get(node), down) {
            (None, _) => format!("{node} joined the cluster"),
            (Some(false), true) => format!("{node} declared down"),
            (Some(true), false) => format!("{node} up again"),
            _ => continue,
        };
        derived.push(("node", summary));
    }
    for node in was.down.keys().filter(|n| !now.down.contains_key(*n)) {
        derived.push(("node", format!("{node} left the cluster")));
    }
    derived.extend(move_transitions(was, now, state));
    found.extend(derived.into_iter().map(|(k, s)| (k, s, false)));
    found
}

/// A replica this node ships to: seeded (its first complete point), a
/// point failing to reach it, reaching it again.
fn replica_transitions(name: &str, was: &Seen, now: &Seen) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for ((app, node), (seeded, error)) in &now.replicas {
        let (was_seeded, was_error) = match was.replicas.get(&(app.clone(), node.clone())) {
            Some((s, e)) => (*s, e.clone()),
            None => {
                let summary = format!("{app}: {name} ships points to a replica on {node}");
                found.push(("replica", summary));
                (false, None)
            }
        };
        if *seeded && !was_seeded {
            found.push(("replica", format!("{app}: replica on {node} seeded")));
        }
        match (error, was_error) {
            (Some(e), old) if old.as_ref() != Some(e) => {
                found.push(("replica", format!("{app}: replica on {node} failing: {e}")));
            }
            (None, Some(_)) => {
                found.push(("replica", format!("{app}: replica on {node} reached again")));
            }
            _ => {}
        }
    }
    for (app, node) in was.replicas.keys() {
        if !now.replicas.contains_key(&(app.clone(), node.clone())) {
            let summary = format!("{app}: {name} no longer ships to {node}");
            found.push(("replica", summary));
        }
    }
    found
}

fn container_transitions(name: &str, was: &Seen, now: &Seen) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (app, (state, id, restarts)) in &now.containers {
        let short = id.as_deref().map_or("-", |id| &id[..id.len().min(12)]);
        let summary = match was.containers.get(app) {
            None => format!("{app}: container {short} {state} on {name}"),
            Some((_, old_id, _)) if old_id != id && old_id.is_some() => {
                format!("{app}: container recreated on {name} as {short} ({state})")
            }
            Some((old, _, _)) if old != state => match state.as_str() {
                "running" => format!("{app}: container {short} started on {name}"),
                "exited" => format!("{app}: container {short} died on {name}"),
                other => format!("{app}: container {short} {other} on {name}"),
            },
            Some((_, _, old)) if old < restarts => {
                format!("{app}: container {short} restarted on {name} ({restarts} restarts)")
            }
            _ => continue,
        };
        found.push(("container", summary));
    }
    for app in was.containers.keys() {
        if !now.containers.contains_key(app) {
            let summary = format!("{app}: container removed from {name} (stopped or fenced)");
            found.push(("container", summary));
        }
    }
    found
}

fn move_transitions(was: &Seen, now: &Seen, state: &State) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (app, (from, to, epoch)) in &now.moves {
        if was.moves.get(app) != Some(&(from.clone(), to.clone(), *epoch)) {
            let summary = format!("{app}: volume move {from} -> {to} began (epoch {epoch})");
            found.push(("move", summary));
        }
    }
    for (app, (from, to, _)) in &was.moves {
        if !now.moves.contains_key(app) {
            let owner = state.volumes.get(app).map(|o| (o.node.as_str(), o.epoch));
            let summary = match owner {
                Some((node, epoch)) if node == to => {
                    format!("{app}: volume moved {from} -> {to} (epoch {epoch})")
                }
                _ => format!("{app}: volume move {from} -> {to} ended without a handoff"),
            };
            found.push(("move", summary));
        }
    }
    found
}

/// Phases of the moves this node sends.
fn phase_transitions(was: &Seen, now: &Seen) -> Vec<(&'static str, String)> {
    let changed = now
        .phases
        .iter()
        .filter(|(app, phase)| was.phases.get(*app) != Some(phase));
    changed
        .map(|(app, phase)| ("move", format!("{app}: move phase: {phase}")))
        .collect()
}

fn clip(text: &mut String) {
    if text.len() > MAX_SUMMARY {
        let mut end = MAX_SUMMARY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_order_committed_before_the_observations_after_them() {
        assert_eq!(EventKey::parse("7"), Ok(EventKey(7, 0)));
        assert_eq!(EventKey::parse("7.2"), Ok(EventKey(7, 2)));
        assert!(EventKey::parse("x")
            .unwrap_err()
            .contains("not an event id"));
        assert!(EventKey(7, 0) < EventKey(7, 1) && EventKey(7, 9) < EventKey(8, 0));
        assert_eq!(EventKey(7, 2).id(), "7.2");
    }

    #[test]
    fn a_page_resumes_after_an_id_and_reports_what_is_no_longer_kept() {
        let log = EventLog::empty();
        for i in 0..(EVENT_CAPACITY + 5) {
            log.observe("n1", 3, "node", format!("e{i}"));
        }
        let all = log.page(Some(EventKey(3, 4)), 10);
        assert!(all.gap.unwrap().contains("no longer kept"), "dropped");
        assert_eq!(all.events[0].summary, "e5");
        let later = log.page(Some(EventKey(3, 100)), 2);
        assert_eq!(later.gap, None);
        assert_eq!(later.events[0].id, "3.101");
        assert_eq!(later.events.len(), 2);
        let newest = log.page(None, 1);
        assert_eq!(newest.events[0].summary, format!("e{}", EVENT_CAPACITY + 4));
    }

    #[test]
    fn transitions_are_one_event_each_with_what_changed() {
        let container =
            |state: &str, id: &str, restarts| (state.to_string(), Some(id.to_string()), restarts);
        let mut was = Seen::default();
        was.containers
            .insert("web".into(), container("running", "aaa", 0));
        was.containers
            .insert("db".into(), container("running", "bbb", 0));
        was.containers
            .insert("old".into(), container("running", "ccc", 0));
        was.down.insert("n2".into(), false);
        let mut now = was.clone();
        now.containers
            .insert("web".into(), container("exited", "aaa", 0));
        now.containers
            .insert("db".into(), container("running", "ddd", 0));
        now.containers.remove("old");
        now.down.insert("n2".into(), true);
        now.degraded = Some("engine unreachable".into());
        let key = ("kv".to_string(), "n3".to_string());
        now.replicas.insert(key, (true, Some("refused".into())));
        let found = transitions("n1", &was, &now, &State::default());
        let text: Vec<String> = found
            .iter()
            .map(|(k, s, own)| format!("{k}: {s}{}", if *own { "" } else { " (derived)" }))
            .collect();
        let want = [
            "container: db: container recreated on n1 as ddd (running)",
            "container: web: container aaa died on n1",
            "container: old: container removed from n1 (stopped or fenced)",
            "node: n1 degraded: engine unreachable",
            "replica: kv: n1 ships points to a replica on n3",
            "replica: kv: replica on n3 seeded",
            "replica: kv: replica on n3 failing: refused",
            "node: n2 declared down (derived)",
        ];
        assert_eq!(text, want);
        assert!(transitions("n1", &now, &now, &State::default()).is_empty());
    }

    #[test]
    fn members_gather_only_what_a_node_saw_itself_and_never_pass_it_on() {
        let log = EventLog::empty();
        log.observe("n1", 4, "container", "web: started on n1".into());
        let theirs = Event {
            id: "9.1".into(),
            time_ms: 7,
            node: "n2".into(),
            kind: "container".into(),
            summary: "db: started on n2".into(),
            who: None,
            request_id: None,
        };
        log.adopt(5, vec![theirs]);
        let own = log.own_after(None, 10);
        let summaries: Vec<&str> = own.events.iter().map(|e| e.summary.as_str()).collect();
        assert_eq!(summaries, ["web: started on n1"]);
        assert!(log.own_after(Some(EventKey(4, 1)), 10).events.is_empty());
        let all = log.page(None, 10).events;
        assert_eq!(
            (all[1].id.as_str(), all[1].node.as_str(), all[1].time_ms),
            ("5.1", "n2", 7)
        );
    }
}
