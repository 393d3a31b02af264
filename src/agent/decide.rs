//! The agent's decision for one pass, as pure functions: from what should
//! run here, what the engine shows and the agent's memory of each app
//! ([`Track`]), the engine operations to perform and that memory after them.
//!
//! Nothing here does I/O or reads a clock: the pass's time ([`Now`]) is an
//! input, and so are the lease's validity and the volume checks' results.
//! Every rule — restart policies and their backoff, duplicates, outdated
//! specs, drift repair, fencing, volume holds — is therefore tested from
//! tables below, and the caller (`Agent::reconcile`) only gathers inputs,
//! runs the actions and logs what they say.

use super::desired::{Desired, LABEL_APP, LABEL_SPEC};
use super::restart::{may_restart, restart_delay, STABLE_RUN};
use crate::runtime::{ContainerId, ContainerInfo, ContainerState, UnixNanos};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// A container that vanished this soon after it stopped was killed by its
/// removal (`docker rm -f`); one that had exited earlier and was removed
/// later was already left stopped by its restart policy.
const REMOVAL_KILL_WINDOW: Duration = Duration::from_secs(3);

/// The agent's memory of every app it may run here, by app.
pub(super) type Tracks = HashMap<String, Track>;

/// The agent's memory of one application on this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Track {
    pub spec_hash: String,
    /// The agent (or a previous run of it) has seen this container run: if it
    /// is then gone or exited, it died.
    pub started: bool,
    pub restarts: u32,
    /// Engine operations that failed in a row (a missing image, a taken
    /// port): retried with growing delays, never in a tight loop.
    pub failures: u32,
    /// No action for this app before this instant.
    pub next_restart: Option<Instant>,
    pub last_error: Option<String>,
    /// Its container as the last pass saw it: what tells a removal from
    /// outside apart from an exit the restart policy already decided on.
    pub seen: Option<Seen>,
    /// A container with its name but other settings was found: someone
    /// replaced it from outside (the removal is ours, the drift is not).
    pub replaced: bool,
    /// The last drift repair, shown in `ctl status` while nothing else is.
    pub drift: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub live: bool,
    pub finished_at: Option<UnixNanos>,
}

impl Track {
    /// An engine operation for this app succeeded; `starts`: it started
    /// the app's container.
    pub fn succeeded(&mut self, starts: bool) {
        self.last_error = None;
        self.failures = 0;
        self.started |= starts;
    }

    /// An engine operation for this app failed (`why`, as `ctl status`
    /// shows it): nothing more for it until a delay that grows per failure.
    pub fn failed(&mut self, why: String, now: Instant) {
        self.last_error = Some(why);
        self.next_restart = Some(now + restart_delay(self.failures));
        self.failures += 1;
    }
}

/// When a pass happens: the agent's own clock for its delays, and the wall
/// clock to compare with the engine's timestamps and to date notes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub instant: Instant,
    pub wall: UnixNanos,
}

/// An engine operation the pass asks for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// Stop gracefully, then remove: a duplicate, an outdated spec, an app
    /// no longer placed here, or (with an empty `app`) a container of ours
    /// that names no app.
    Remove { id: ContainerId, app: String },
    /// Fencing: killed at once, no grace, because the app may start elsewhere.
    Kill { id: ContainerId, app: String },
    /// Create and start a new container.
    Run { desired: Box<Desired>, why: Why },
    /// Start the app's existing container.
    Start {
        id: ContainerId,
        app: String,
        why: Why,
    },
}

/// Why a container is (re)started, for the log.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Why {
    /// It never ran (or a first start that failed is tried again).
    First,
    /// Its restart policy lets it run again: restart number `restarts`.
    Restart {
        restarts: u32,
        exit_code: Option<i64>,
    },
    /// Drift repair: it was removed or replaced from outside; `note` is
    /// also kept in its track for `ctl status`.
    Recreate { note: String },
}

/// What one pass works from.
pub(super) struct Pass<'a> {
    /// Every container the applied state runs on this node.
    pub desired: &'a [Desired],
    /// Apps that must not run now for want of a lease ([`fenced`]).
    pub fenced: &'a [String],
    /// Apps whose volume cannot be mounted here now, and why.
    pub held: &'a BTreeMap<String, String>,
    /// This node's containers as the engine lists them.
    pub actual: &'a [ContainerInfo],
    pub now: Now,
}

/// The pass's engine operations, and the tracks to keep after it: those of
/// the apps that may run here now (others are forgotten).
#[derive(Debug)]
pub(super) struct Decision {
    pub actions: Vec<Action>,
    pub tracks: Tracks,
}

/// Invariant 3: without a lease nothing the cluster may start elsewhere
/// runs here. The apps of `desired` that must not run now.
pub(super) fn fenced(desired: &[Desired], lease_valid: bool) -> Vec<String> {
    if lease_valid {
        return Vec::new();
    }
    desired
        .iter()
        .filter(|d| d.fenceable)
        .map(|d| d.app.clone())
        .collect()
}

/// When the lease (valid until `expiry`) runs out, if something of
/// `desired` must then be fenced: the agent's pass is due at that instant.
pub(super) fn fence_deadline(
    desired: &[Desired],
    expiry: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let expiry = expiry?;
    let fenceable = desired.iter().any(|d| d.fenceable);
    (fenceable && expiry > now).then_some(expiry)
}

/// Decides one pass; see the module's comment.
pub(super) fn decide(pass: &Pass<'_>, tracks: &Tracks) -> Decision {
    let fenced_app = |c: &&ContainerInfo| {
        c.labels
            .get(LABEL_APP)
            .is_some_and(|app| pass.fenced.contains(app))
    };
    let mut actions: Vec<Action> = pass
        .actual
        .iter()
        .filter(|c| fenced_app(c) && c.state.is_live())
        .map(|c| Action::Kill {
            id: c.id.clone(),
            app: c.labels[LABEL_APP].clone(),
        })
        .collect();
    let mut by_app: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in pass.actual.iter().filter(|c| !fenced_app(c)) {
        match c.labels.get(LABEL_APP) {
            Some(app) => by_app.entry(app.as_str()).or_default().push(c),
            None => actions.push(remove(c, "")),
        }
    }
    let mut kept = Tracks::new();
    let may_run = pass
        .desired
        .iter()
        .filter(|d| !pass.fenced.contains(&d.app) && !pass.held.contains_key(&d.app));
    for d in may_run {
        let mut track = match tracks.get(&d.app) {
            Some(track) if track.spec_hash == d.spec_hash => track.clone(),
            // New here, or new settings: its history is another container's.
            _ => Track {
                spec_hash: d.spec_hash.clone(),
                ..Track::default()
            },
        };
        let containers = by_app.remove(d.app.as_str()).unwrap_or_default();
        actions.extend(decide_app(d, &containers, &mut track, pass.now));
        kept.insert(d.app.clone(), track);
    }
    // Containers of apps that may not run here (any more).
    for (app, containers) in by_app {
        actions.extend(containers.into_iter().map(|c| remove(c, app)));
    }
    Decision {
        actions,
        tracks: kept,
    }
}

fn remove(c: &ContainerInfo, app: &str) -> Action {
    Action::Remove {
        id: c.id.clone(),
        app: app.to_string(),
    }
}

/// One app that may run here, with its containers (all carry its label).
fn decide_app(
    d: &Desired,
    containers: &[&ContainerInfo],
    track: &mut Track,
    now: Now,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut current = None;
    let mut name_taken = false;
    for c in containers.iter().copied() {
        let matches = c.labels.get(LABEL_SPEC) == Some(&d.spec_hash) && c.name == d.spec.name;
        if matches && current.is_none() {
            current = Some(c);
            continue;
        }
        // Our name with other settings than the ones this agent gave it
        // (the track's hash is the desired one): it was replaced from outside.
        if c.name == d.spec.name {
            name_taken = true;
            track.replaced |= track.started;
        }
        // Outdated settings or a duplicate: only the current one stays.
        actions.push(remove(c, &d.app));
    }
    if let Some(c) = current {
        track.seen = Some(Seen {
            live: c.state.is_live(),
            finished_at: c.finished_at,
        });
    }
    actions.extend(start_or_restart(d, current, track, name_taken, now));
    actions
}

/// Whether the app's container (`current`: the one with its settings, if
/// any) must be started, created, or left as it is.
fn start_or_restart(
    d: &Desired,
    current: Option<&ContainerInfo>,
    track: &mut Track,
    name_taken: bool,
    now: Now,
) -> Option<Action> {
    let waiting = track.next_restart.is_some_and(|at| at > now.instant);
    match current {
        // The restart policy governs exits, not removals: the app is still
        // placed here, so it runs again at once, through the same checks
        // (lease, volume, releases) as any start, since it is in `desired`.
        // Not while this pass still removes the replacement that holds its
        // name: its removal's events bring the next pass.
        None if track.started && removed_from_outside(track, now.wall) => {
            (!waiting && !name_taken).then(|| recreate(d, track, now.wall))
        }
        Some(c) if c.state.is_live() => {
            track.started = true;
            track.next_restart = None;
            if ran_stably(c, now.wall) {
                track.restarts = 0;
            }
            None
        }
        // Never seen running: a first start (or a retry of one that failed).
        Some(c) if c.state == ContainerState::Created && !track.started => (!waiting).then(|| {
            track.next_restart = None;
            Action::Start {
                id: c.id.clone(),
                app: d.app.clone(),
                why: Why::First,
            }
        }),
        None if !track.started => (!waiting).then(|| {
            track.next_restart = None;
            Action::Run {
                desired: Box::new(d.clone()),
                why: Why::First,
            }
        }),
        // It ran and is now exited, dead, or gone from outside.
        dead => restart(d, dead, track, now.instant),
    }
}

/// Drift repair: runs the app again and notes why in its track.
fn recreate(d: &Desired, track: &mut Track, wall: UnixNanos) -> Action {
    let how = if track.replaced {
        "replaced from outside (other settings)"
    } else {
        "removed from outside"
    };
    let note = format!(
        "recreated: its container was {how} at {}",
        super::rfc3339(wall)
    );
    track.drift = Some(note.clone());
    track.started = false;
    track.replaced = false;
    track.seen = None;
    track.next_restart = None;
    Action::Run {
        desired: Box::new(d.clone()),
        why: Why::Recreate { note },
    }
}

/// The restart policy for a container that ran and died (`dead`: what is
/// left of it, if anything): a restart is first scheduled, then done once due.
fn restart(
    d: &Desired,
    dead: Option<&ContainerInfo>,
    track: &mut Track,
    now: Instant,
) -> Option<Action> {
    let exit_code = dead.and_then(|c| c.exit_code);
    if !may_restart(d.restart, exit_code, track.restarts) {
        track.next_restart = None;
        return None;
    }
    match track.next_restart {
        None => {
            track.next_restart = Some(now + restart_delay(track.restarts));
            None
        }
        Some(at) if at <= now => {
            track.next_restart = None;
            track.restarts += 1;
            let why = Why::Restart {
                restarts: track.restarts,
                exit_code,
            };
            Some(match dead {
                Some(c) => Action::Start {
                    id: c.id.clone(),
                    app: d.app.clone(),
                    why,
                },
                None => Action::Run {
                    desired: Box::new(d.clone()),
                    why,
                },
            })
        }
        Some(_) => None,
    }
}

/// Whether the app's container, gone now, was taken away rather than left
/// stopped by its restart policy: it was last seen live (or never seen since
/// this agent started it), or it stopped just before it vanished.
fn removed_from_outside(track: &Track, wall: UnixNanos) -> bool {
    if track.replaced {
        return true;
    }
    match &track.seen {
        None => true,
        Some(seen) if seen.live => true,
        Some(seen) => seen
            .finished_at
            .is_none_or(|f| wall.0.saturating_sub(f.0) < REMOVAL_KILL_WINDOW.as_nanos() as i64),
    }
}

fn ran_stably(c: &ContainerInfo, wall: UnixNanos) -> bool {
    c.started_at
        .is_some_and(|s| wall.0.saturating_sub(s.0) > STABLE_RUN.as_nanos() as i64)
}

#[cfg(test)]
mod tests;
