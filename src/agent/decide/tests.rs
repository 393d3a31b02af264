//! The agent's decisions from tables: each row is one pass of [`decide`]
//! (or of a gate) with the inputs a real pass would gather.

use super::*;
use crate::config::RestartPolicy;
use crate::runtime::ContainerSpec;

/// 2024-01-01T00:00:00Z: the wall clock at a pass's `at_ms` 0.
const W0: i64 = 1_704_067_200_000_000_000;
const SEC: i64 = 1_000_000_000;
const HASH: &str = "h1";

fn name(app: &str) -> String {
    format!("flocker-c1-n1-{app}")
}

fn desired(app: &str, restart: RestartPolicy) -> Desired {
    Desired {
        app: app.into(),
        spec: ContainerSpec {
            name: name(app),
            image: "busybox:latest".into(),
            ..ContainerSpec::default()
        },
        spec_hash: HASH.into(),
        restart,
        fenceable: false,
        volume: None,
    }
}

fn fenceable(app: &str) -> Desired {
    Desired {
        fenceable: true,
        ..desired(app, RestartPolicy::Always)
    }
}

/// A container of `app` with the desired name and settings, created and
/// never started.
fn created(id: &str, app: &str) -> ContainerInfo {
    let mut spec = desired(app, NEVER).spec;
    spec.labels = [
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_SPEC.to_string(), HASH.to_string()),
    ]
    .into();
    ContainerInfo::created(ContainerId(id.into()), &spec, "sha256:0".into())
}

/// Running since `secs` before the wall clock's origin.
fn running(id: &str, app: &str, secs: i64) -> ContainerInfo {
    ContainerInfo {
        state: ContainerState::Running,
        started_at: Some(UnixNanos(W0 - secs * SEC)),
        ..created(id, app)
    }
}

/// Exited with `code` a minute before the wall clock's origin.
fn exited(id: &str, app: &str, code: i64) -> ContainerInfo {
    ContainerInfo {
        state: ContainerState::Exited,
        exit_code: Some(code),
        started_at: Some(UnixNanos(W0 - 70 * SEC)),
        finished_at: Some(UnixNanos(W0 - 60 * SEC)),
        ..created(id, app)
    }
}

fn with_spec(c: ContainerInfo, hash: &str) -> ContainerInfo {
    let mut c = c;
    c.labels.insert(LABEL_SPEC.into(), hash.into());
    c
}

fn with_name(c: ContainerInfo, name: &str) -> ContainerInfo {
    ContainerInfo {
        name: name.into(),
        ..c
    }
}

/// The instant a pass at `at_ms` sees; one origin for the whole test run.
fn at(at_ms: u64) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(at_ms)
}

fn now(at_ms: u64) -> Now {
    Now {
        instant: at(at_ms),
        wall: UnixNanos(W0 + at_ms as i64 * 1_000_000),
    }
}

/// A track of an app this agent started and last saw running.
fn ran(restarts: u32) -> Track {
    Track {
        spec_hash: HASH.into(),
        started: true,
        restarts,
        seen: Some(Seen {
            live: true,
            finished_at: None,
        }),
        ..Track::default()
    }
}

/// Last seen exited at `finished_secs` before the wall clock's origin.
fn ran_then_exited(finished_secs: i64) -> Track {
    Track {
        seen: Some(Seen {
            live: false,
            finished_at: Some(UnixNanos(W0 - finished_secs * SEC)),
        }),
        ..ran(0)
    }
}

fn due(track: Track, at_ms: u64) -> Track {
    Track {
        next_restart: Some(at(at_ms)),
        ..track
    }
}

fn show(a: &Action) -> String {
    let why = |why: &Why| match why {
        Why::First => "(first)".to_string(),
        Why::Restart {
            restarts,
            exit_code,
        } => format!("(restart {restarts}, exit {exit_code:?})"),
        Why::Recreate { note } => format!("({note})"),
    };
    match a {
        Action::Remove { id, app } => format!("remove {} {app}", id.0).trim_end().to_string(),
        Action::Kill { id, app } => format!("kill {} {app}", id.0),
        Action::Run { desired, why: w } => format!("run {} {}", desired.app, why(w)),
        Action::Start { id, app, why: w } => format!("start {} {app} {}", id.0, why(w)),
    }
}

fn shown(actions: &[Action]) -> Vec<String> {
    actions.iter().map(show).collect()
}

fn pass_of(
    desired: &[Desired],
    actual: &[ContainerInfo],
    tracks: &Tracks,
    fenced: &[String],
    held: &BTreeMap<String, String>,
    at_ms: u64,
) -> Decision {
    decide(
        &Pass {
            desired,
            fenced,
            held,
            actual,
            now: now(at_ms),
        },
        tracks,
    )
}

/// One pass over the app `web` alone.
struct Row {
    name: &'static str,
    policy: RestartPolicy,
    before: Option<Track>,
    actual: Vec<ContainerInfo>,
    at_ms: u64,
    expect: &'static [&'static str],
    /// Its track after the pass: started, restarts, next restart (ms).
    after: (bool, u32, Option<u64>),
}

const NEVER: RestartPolicy = RestartPolicy::Never;
const ALWAYS: RestartPolicy = RestartPolicy::Always;
const ON_FAILURE: RestartPolicy = RestartPolicy::OnFailure {
    maximum_retry_count: None,
};
const TWICE: RestartPolicy = RestartPolicy::OnFailure {
    maximum_retry_count: Some(2),
};

// One row per line, so the table reads as a table.
#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let failed_once = Track {
        spec_hash: HASH.into(),
        failures: 1,
        last_error: Some("image busybox:latest not present".into()),
        next_restart: Some(at(100)),
        ..Track::default()
    };
    vec![
        Row { name: "first start", policy: NEVER, before: None, actual: vec![], at_ms: 0,
            expect: &["run web (first)"], after: (false, 0, None) },
        Row { name: "created and never started: started", policy: NEVER, before: None,
            actual: vec![created("c1", "web")], at_ms: 0,
            expect: &["start c1 web (first)"], after: (false, 0, None) },
        Row { name: "a failed first start waits for its delay", policy: NEVER,
            before: Some(failed_once.clone()), actual: vec![], at_ms: 99,
            expect: &[], after: (false, 0, Some(100)) },
        Row { name: "a failed first start is tried again at its delay", policy: NEVER,
            before: Some(failed_once), actual: vec![], at_ms: 100,
            expect: &["run web (first)"], after: (false, 0, None) },
        Row { name: "already running: nothing to do", policy: NEVER, before: Some(ran(0)),
            actual: vec![running("c1", "web", 1)], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "a running container a new agent finds is its own", policy: NEVER, before: None,
            actual: vec![running("c1", "web", 1)], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "running stably resets the restart count", policy: ALWAYS, before: Some(ran(3)),
            actual: vec![running("c1", "web", 11)], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "running briefly keeps the restart count", policy: ALWAYS, before: Some(ran(3)),
            actual: vec![running("c1", "web", 5)], at_ms: 0, expect: &[], after: (true, 3, None) },
        Row { name: "never: an exit stays exited", policy: NEVER, before: Some(ran(0)),
            actual: vec![exited("c1", "web", 1)], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "always: an exit schedules a restart", policy: ALWAYS, before: Some(ran(0)),
            actual: vec![exited("c1", "web", 0)], at_ms: 0, expect: &[], after: (true, 0, Some(100)) },
        Row { name: "always: not before the delay", policy: ALWAYS, before: Some(due(ran(0), 100)),
            actual: vec![exited("c1", "web", 0)], at_ms: 99, expect: &[], after: (true, 0, Some(100)) },
        Row { name: "always: restarted at the delay", policy: ALWAYS, before: Some(due(ran(0), 100)),
            actual: vec![exited("c1", "web", 0)], at_ms: 100,
            expect: &["start c1 web (restart 1, exit Some(0))"], after: (true, 1, None) },
        Row { name: "the delay doubles per restart", policy: ALWAYS, before: Some(ran(3)),
            actual: vec![exited("c1", "web", 0)], at_ms: 0, expect: &[], after: (true, 3, Some(800)) },
        Row { name: "on-failure: success stays exited", policy: ON_FAILURE, before: Some(due(ran(0), 0)),
            actual: vec![exited("c1", "web", 0)], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "on-failure: a failure is restarted", policy: TWICE, before: Some(due(ran(1), 0)),
            actual: vec![exited("c1", "web", 1)], at_ms: 0,
            expect: &["start c1 web (restart 2, exit Some(1))"], after: (true, 2, None) },
        Row { name: "on-failure: not beyond the retry count", policy: TWICE, before: Some(due(ran(2), 0)),
            actual: vec![exited("c1", "web", 1)], at_ms: 0, expect: &[], after: (true, 2, None) },
        Row { name: "left stopped by its policy, then cleaned up: not drift", policy: NEVER,
            before: Some(ran_then_exited(60)), actual: vec![], at_ms: 0, expect: &[], after: (true, 0, None) },
        Row { name: "left stopped, cleaned up, and always: its policy restarts it", policy: ALWAYS,
            before: Some(due(ran_then_exited(60), 0)), actual: vec![], at_ms: 0,
            expect: &["run web (restart 1, exit None)"], after: (true, 1, None) },
        Row { name: "removed from outside: recreated at once, whatever the policy", policy: NEVER,
            before: Some(ran(0)), actual: vec![], at_ms: 5000,
            expect: &["run web (recreated: its container was removed from outside at 2024-01-01T00:00:05Z)"],
            after: (false, 0, None) },
        Row { name: "killed by its removal (stopped just before it vanished): drift", policy: NEVER,
            before: Some(ran_then_exited(1)), actual: vec![], at_ms: 0,
            expect: &["run web (recreated: its container was removed from outside at 2024-01-01T00:00:00Z)"],
            after: (false, 0, None) },
        Row { name: "removed from outside during a delay: not yet", policy: NEVER,
            before: Some(due(ran(0), 100)), actual: vec![], at_ms: 50, expect: &[], after: (true, 0, Some(100)) },
        Row { name: "replaced from outside: removed; recreated once its name is free", policy: NEVER,
            before: Some(ran(0)), actual: vec![with_spec(running("c2", "web", 1), "h0")], at_ms: 0,
            expect: &["remove c2 web"], after: (true, 0, None) },
        Row { name: "replaced from outside, its name free: recreated", policy: NEVER,
            before: Some(Track { replaced: true, ..ran(0) }), actual: vec![], at_ms: 0,
            expect: &["run web (recreated: its container was replaced from outside (other settings) at 2024-01-01T00:00:00Z)"],
            after: (false, 0, None) },
        Row { name: "outdated spec: removed and replaced", policy: ALWAYS,
            before: Some(Track { spec_hash: "h0".into(), ..ran(2) }),
            actual: vec![with_spec(running("c1", "web", 1), "h0")], at_ms: 0,
            expect: &["remove c1 web", "run web (first)"], after: (false, 0, None) },
        Row { name: "duplicates: one stays", policy: NEVER, before: Some(ran(0)),
            actual: vec![running("c1", "web", 1), with_name(running("c2", "web", 1), "web-copy")], at_ms: 0,
            expect: &["remove c2 web"], after: (true, 0, None) },
    ]
}

#[test]
fn one_app_through_restart_policies_backoff_and_drift() {
    for row in rows() {
        let mut tracks = Tracks::new();
        if let Some(track) = row.before {
            tracks.insert("web".into(), track);
        }
        let d = [desired("web", row.policy)];
        let decision = pass_of(&d, &row.actual, &tracks, &[], &BTreeMap::new(), row.at_ms);
        assert_eq!(shown(&decision.actions), row.expect, "{}", row.name);
        let track = &decision.tracks["web"];
        let after = (
            track.started,
            track.restarts,
            track
                .next_restart
                .map(|t| t.duration_since(at(0)).as_millis() as u64),
        );
        assert_eq!(after, row.after, "{}: {track:?}", row.name);
        assert_eq!(track.spec_hash, HASH, "{}", row.name);
    }
}

#[test]
fn drift_notes_stay_for_status_and_replacements_are_remembered() {
    let d = [desired("web", NEVER)];
    let none = BTreeMap::new();
    let tracks: Tracks = [("web".to_string(), ran(0))].into();
    let replaced = with_spec(running("c2", "web", 1), "h0");
    let first = pass_of(&d, &[replaced], &tracks, &[], &none, 0);
    assert!(first.tracks["web"].replaced);
    let second = pass_of(&d, &[], &first.tracks, &[], &none, 1000);
    let web = &second.tracks["web"];
    assert_eq!(
        web.drift.as_deref(),
        Some("recreated: its container was replaced from outside (other settings) at 2024-01-01T00:00:01Z")
    );
    assert!(!web.replaced && web.seen.is_none());
}

#[test]
fn a_crash_loop_backs_off_and_counts_its_restarts() {
    let d = [desired("web", ALWAYS)];
    let none = BTreeMap::new();
    let mut tracks: Tracks = [("web".to_string(), ran(0))].into();
    // (at ms, what the pass does)
    let steps: [(u64, &[&str]); 6] = [
        (0, &[]),
        (99, &[]),
        (100, &["start c1 web (restart 1, exit Some(1))"]),
        // The container died again at once: 200 ms now.
        (150, &[]),
        (349, &[]),
        (350, &["start c1 web (restart 2, exit Some(1))"]),
    ];
    for (at_ms, expect) in steps {
        let decision = pass_of(&d, &[exited("c1", "web", 1)], &tracks, &[], &none, at_ms);
        assert_eq!(shown(&decision.actions), expect, "at {at_ms} ms");
        tracks = decision.tracks;
    }
    assert_eq!(tracks["web"].restarts, 2);
}

/// One pass over a node with several apps, fences and holds.
struct NodeRow {
    name: &'static str,
    desired: Vec<Desired>,
    fenced: &'static [&'static str],
    held: &'static [&'static str],
    actual: Vec<ContainerInfo>,
    /// The apps the agent remembers before the pass (as started).
    before: &'static [&'static str],
    expect: &'static [&'static str],
    /// The apps whose tracks remain.
    tracked: &'static [&'static str],
}

#[rustfmt::skip]
fn node_rows() -> Vec<NodeRow> {
    let unlabelled = {
        let mut c = running("c9", "stray", 1);
        c.labels.remove(LABEL_APP);
        c
    };
    vec![
        NodeRow { name: "a container without an app label is removed",
            desired: vec![], fenced: &[], held: &[], actual: vec![unlabelled],
            before: &[],
            expect: &["remove c9"], tracked: &[] },
        NodeRow { name: "an app no longer placed here is removed and forgotten",
            desired: vec![desired("web", NEVER)], fenced: &[], held: &[],
            actual: vec![running("c1", "web", 1), running("c5", "old", 1), exited("c6", "old", 0)],
            before: &["web", "old"],
            expect: &["remove c5 old", "remove c6 old"], tracked: &["web"] },
        NodeRow { name: "fenced: a live container is killed and not restarted",
            desired: vec![fenceable("web"), desired("db", NEVER)], fenced: &["web"], held: &[],
            actual: vec![running("c1", "web", 1), running("c2", "db", 1)],
            before: &["web", "db"],
            expect: &["kill c1 web"], tracked: &["db"] },
        NodeRow { name: "fenced: an exited container is left alone, nothing starts",
            desired: vec![fenceable("web"), fenceable("api")], fenced: &["web", "api"], held: &[],
            actual: vec![exited("c1", "web", 137)], before: &["web"],
            expect: &[], tracked: &[] },
        NodeRow { name: "volume not mountable: not started",
            desired: vec![desired("db", ALWAYS), desired("web", NEVER)], fenced: &[], held: &["db"],
            actual: vec![], before: &["db"],
            expect: &["run web (first)"], tracked: &["web"] },
        NodeRow { name: "volume not mountable: a running container is removed",
            desired: vec![desired("db", ALWAYS)], fenced: &[], held: &["db"],
            actual: vec![running("c3", "db", 1)], before: &["db"],
            expect: &["remove c3 db"], tracked: &[] },
    ]
}

#[test]
fn a_node_fences_holds_and_removes_what_may_not_run() {
    for row in node_rows() {
        let tracks: Tracks = row
            .before
            .iter()
            .map(|app| (app.to_string(), ran(0)))
            .collect();
        let fenced: Vec<String> = row.fenced.iter().map(|a| a.to_string()).collect();
        let held = row
            .held
            .iter()
            .map(|a| {
                (
                    a.to_string(),
                    "its volume here is not a complete copy".to_string(),
                )
            })
            .collect();
        let decision = pass_of(&row.desired, &row.actual, &tracks, &fenced, &held, 0);
        assert_eq!(shown(&decision.actions), row.expect, "{}", row.name);
        let mut tracked: Vec<&str> = decision.tracks.keys().map(String::as_str).collect();
        tracked.sort();
        assert_eq!(tracked, row.tracked, "{}", row.name);
    }
}

#[test]
fn without_a_lease_only_fenceable_apps_are_fenced() {
    let apps = [fenceable("web"), desired("db", NEVER), fenceable("api")];
    let rows: [(bool, &[Desired], &[&str]); 4] = [
        (true, &apps, &[]),
        (false, &apps, &["web", "api"]),
        (false, &apps[1..2], &[]),
        (false, &[], &[]),
    ];
    for (lease_valid, desired, expect) in rows {
        assert_eq!(
            fenced(desired, lease_valid),
            expect,
            "lease valid: {lease_valid}"
        );
    }
}

#[test]
fn the_lease_expiry_wakes_the_agent_only_when_it_must_fence() {
    let some = [desired("db", NEVER), fenceable("web")];
    let none = [desired("db", NEVER)];
    /// (case, what runs here, lease expiry ms, now ms, wake-up ms)
    type Row<'a> = (&'a str, &'a [Desired], Option<u64>, u64, Option<u64>);
    let rows: [Row; 5] = [
        ("runs a fenceable app", &some, Some(2000), 0, Some(2000)),
        ("nothing to fence", &none, Some(2000), 0, None),
        ("already expired", &some, Some(2000), 2000, None),
        ("never had a lease", &some, None, 0, None),
        ("runs nothing", &[], Some(2000), 0, None),
    ];
    for (name, desired, expiry, now_ms, expect) in rows {
        assert_eq!(
            fence_deadline(desired, expiry.map(at), at(now_ms)),
            expect.map(at),
            "{name}"
        );
    }
}

#[test]
fn failed_operations_back_off_and_a_success_clears_them() {
    let mut track = ran(0);
    let mut delays = Vec::new();
    for _ in 0..4 {
        track.failed("port 8080 is taken".into(), at(0));
        delays.push(
            track
                .next_restart
                .unwrap()
                .duration_since(at(0))
                .as_millis(),
        );
    }
    assert_eq!(delays, [100, 200, 400, 800]);
    assert_eq!(track.last_error.as_deref(), Some("port 8080 is taken"));
    let mut fresh = Track::default();
    fresh.succeeded(true);
    track.succeeded(false);
    assert_eq!((track.failures, track.last_error), (0, None));
    assert!(fresh.started, "a successful start counts as started");
}

#[test]
fn a_removal_is_told_from_an_exit_the_policy_decided_on() {
    let gone_after = |seen: Option<Seen>| {
        let track = Track {
            started: true,
            seen,
            ..Track::default()
        };
        removed_from_outside(&track, UnixNanos(W0))
    };
    assert!(
        gone_after(None),
        "started, then gone before any pass saw it"
    );
    assert!(gone_after(Some(Seen {
        live: true,
        finished_at: None
    })));
    // `docker rm -f`: a pass may see it killed just before it vanishes.
    assert!(gone_after(Some(Seen {
        live: false,
        finished_at: Some(UnixNanos(W0 - SEC / 2))
    })));
    // Exited a minute ago and left stopped, then cleaned up: not drift.
    let a_minute_ago = Some(UnixNanos(W0 - 60 * SEC));
    assert!(!gone_after(Some(Seen {
        live: false,
        finished_at: a_minute_ago
    })));
    let replaced = Track {
        started: true,
        replaced: true,
        seen: Some(Seen {
            live: false,
            finished_at: a_minute_ago,
        }),
        ..Track::default()
    };
    assert!(removed_from_outside(&replaced, UnixNanos(W0)));
}
