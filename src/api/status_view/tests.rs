//! `status_view` from tables: a cluster of n1 and n2 (both answering,
//! nothing observed unless a case says so), `web` without a volume and `db`
//! with one (maximum_size 1M), both `anywhere`, and `cron` pinned on n2.

use super::*;
use crate::agent::usage::VolumeUsage;
use crate::state::{NodeRecord, VolumeMove, VolumeOwner};

struct Cluster {
    state: State,
    observed: Vec<MemberObservations>,
}

impl Cluster {
    fn new() -> Cluster {
        let apps = "version: 1\napplications:\n  web:\n    image: busybox\n  db:\n    image: busybox\n    volume: {mountpoint: /data, maximum_size: 1M}\n  cron:\n    image: busybox\n";
        let dep = "version: 1\nnodes:\n  n2: [cron]\nanywhere: [web, db]\n";
        let mut state = State::default();
        state.deployed.config = crate::config::parse(dep, "d", apps, "a").unwrap();
        state.deployed.version = 7;
        for n in ["n1", "n2"] {
            state.nodes.insert(n.into(), NodeRecord::default());
        }
        let observed = ["n1", "n2"]
            .map(|n| (n.to_string(), Some(Observed::default())))
            .to_vec();
        Cluster { state, observed }
    }

    fn observed(&mut self, node: &str) -> &mut Observed {
        self.observed
            .iter_mut()
            .find(|(n, _)| n == node)
            .and_then(|(_, o)| o.as_mut())
            .expect("an answering member")
    }

    fn place(&mut self, app: &str, node: &str) {
        self.state
            .deployed
            .placements
            .insert(app.into(), node.into());
    }

    fn runs(&mut self, node: &str, app: &str, state: &str, last_error: Option<&str>) {
        let instance = InstanceStatus {
            node: node.into(),
            state: state.into(),
            container_id: None,
            image_id: None,
            started_at: None,
            restarts: 0,
            exit_code: None,
            last_error: last_error.map(str::to_string),
            observed_at: "2024-01-01T00:00:00Z".into(),
        };
        self.observed(node).instances.insert(app.into(), instance);
    }

    fn silent(&mut self, node: &str) {
        self.observed.iter_mut().find(|(n, _)| n == node).unwrap().1 = None;
    }

    fn owner(&mut self, app: &str, node: &str, epoch: u64) {
        let owner = VolumeOwner {
            node: node.into(),
            epoch,
            adopt: false,
            issued: epoch,
            from_point: None,
            handed_from: None,
        };
        self.state.volumes.insert(app.into(), owner);
    }

    /// `db` moving from n1 to n2 at epoch 3, frozen or not.
    fn db_moving(&mut self, frozen: bool) {
        self.place("db", "n2");
        self.owner("db", "n1", 2);
        let m = VolumeMove {
            from: "n1".into(),
            to: "n2".into(),
            epoch: 3,
            frozen,
            attempt: 2,
            started_ms: 1_000,
            last_error: Some("n2 refused: disk full".into()),
        };
        self.state.moves.insert("db".into(), m);
    }

    fn app(&self, name: &str) -> AppStatus {
        let view = status_view(&self.state, &self.observed, &[], &Default::default());
        view.apps.into_iter().find(|a| a.name == name).unwrap()
    }
}

fn reported_move(epoch: u64, phase: &str) -> MoveStatus {
    MoveStatus {
        from: "n1".into(),
        to: "n2".into(),
        epoch,
        phase: phase.into(),
        bytes_done: 10,
        ..MoveStatus::default()
    }
}

/// One thing a case sets up.
enum Given {
    Placed(&'static str, &'static str),
    /// node, app, container state, last error.
    Runs(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
    Silent(&'static str),
    Degraded(&'static str, &'static str),
    Down(&'static str),
    /// app, its volume's owner.
    Owner(&'static str, &'static str),
    /// app, the node that must stop it first.
    Release(&'static str, &'static str),
    /// `db` moving from n1 to n2; frozen or not.
    DbMoving {
        frozen: bool,
    },
    /// n1 reports db's move at this phase (this attempt).
    SourceSays(&'static str),
}
use Given::*;

impl Cluster {
    fn given(&mut self, given: &Given) {
        match *given {
            Placed(app, node) => self.place(app, node),
            Runs(node, app, state, error) => self.runs(node, app, state, error),
            Silent(node) => self.silent(node),
            Degraded(node, why) => self.observed(node).degraded = Some(why.into()),
            Down(node) => self.state.nodes.get_mut(node).unwrap().down = true,
            Owner(app, node) => self.owner(app, node, 1),
            Release(app, holder) => {
                self.state.releases.insert(app.into(), holder.into());
            }
            DbMoving { frozen } => self.db_moving(frozen),
            SourceSays(phase) => {
                let report = reported_move(3, phase);
                self.observed("n1").moves.insert("db".into(), report);
            }
        }
    }
}

/// What `ctl status` says an app waits for: (case, app, given, waiting).
const WAITING: &[(&str, &str, &[Given], Option<&str>)] = &[
    (
        "running where placed",
        "web",
        &[Placed("web", "n1"), Runs("n1", "web", "running", None)],
        None,
    ),
    (
        "placed, not observed yet: no reason known",
        "web",
        &[Placed("web", "n1")],
        None,
    ),
    (
        "not running where placed: its last error",
        "web",
        &[
            Placed("web", "n1"),
            Runs("n1", "web", "exited", Some("port 80 is taken")),
        ],
        Some("port 80 is taken"),
    ),
    (
        "a copy running elsewhere does not hide it",
        "web",
        &[
            Placed("web", "n1"),
            Runs("n1", "web", "exited", Some("port 80 is taken")),
            Runs("n2", "web", "running", None),
        ],
        Some("port 80 is taken"),
    ),
    (
        "not placed",
        "web",
        &[],
        Some("waiting for a node: none can take it now"),
    ),
    (
        "its node did not answer",
        "web",
        &[Placed("web", "n1"), Silent("n1")],
        Some("n1 did not answer"),
    ),
    (
        "its node's engine is degraded",
        "web",
        &[
            Placed("web", "n1"),
            Degraded("n1", "engine unreachable"),
            Runs("n1", "web", "exited", Some("port 80 is taken")),
        ],
        Some("n1 is degraded: engine unreachable"),
    ),
    (
        "its node is down and holds its volume",
        "db",
        &[
            Placed("db", "n1"),
            Owner("db", "n1"),
            Down("n1"),
            Silent("n1"),
        ],
        Some("waiting for n1: its volume is there"),
    ),
    (
        "its node is down, no volume: not placed elsewhere yet",
        "web",
        &[Placed("web", "n1"), Down("n1"), Silent("n1")],
        Some("n1 did not answer"),
    ),
    (
        "its previous node must stop it first",
        "web",
        &[
            Placed("web", "n2"),
            Release("web", "n1"),
            Runs("n2", "web", "created", Some("not started")),
        ],
        Some("waiting for n1 to stop it first"),
    ),
    (
        "a move in flight, not frozen: it runs at the source",
        "db",
        &[DbMoving { frozen: false }, Release("db", "n1")],
        None,
    ),
    (
        "a frozen move, the source not reporting",
        "db",
        &[DbMoving { frozen: true }],
        Some("stopped for the move to n2: waiting for n1 to send"),
    ),
    (
        "a frozen move in the source's words",
        "db",
        &[DbMoving { frozen: true }, SourceSays("final delta")],
        Some("stopped for the move to n2: final delta"),
    ),
];

#[test]
fn why_an_app_waits() {
    for (what, app, given, waiting) in WAITING {
        let mut c = Cluster::new();
        for g in *given {
            c.given(g);
        }
        assert_eq!(c.app(app).waiting.as_deref(), *waiting, "{what}");
    }
}

#[test]
fn a_move_in_flight_is_shown_as_its_source_reports_this_attempt() {
    let cases: &[(&str, Option<MoveStatus>, MoveStatus)] = &[
        (
            "the source reports this attempt",
            Some(reported_move(3, "pushing round 2")),
            reported_move(3, "pushing round 2"),
        ),
        (
            "the source's report is of an earlier attempt: the state's view",
            Some(reported_move(2, "pushing round 5")),
            MoveStatus {
                from: "n1".into(),
                to: "n2".into(),
                epoch: 3,
                attempt: 2,
                phase: "waiting for n1 to send".into(),
                started_ms: 1_000,
                last_error: Some("n2 refused: disk full".into()),
                ..MoveStatus::default()
            },
        ),
    ];
    for (what, report, expected) in cases {
        let mut c = Cluster::new();
        c.db_moving(false);
        if let Some(r) = report {
            c.observed("n1").moves.insert("db".into(), r.clone());
        }
        assert_eq!(c.app("db").moving.as_ref(), Some(expected), "{what}");
    }
    assert_eq!(Cluster::new().app("db").moving, None, "no move, none shown");
}

#[test]
fn the_last_move_is_the_latest_handoff_any_source_reports() {
    let mut c = Cluster::new();
    let report = |from: &str, handed_off_ms| MoveReport {
        from: from.into(),
        handed_off_ms,
        ..MoveReport::default()
    };
    c.observed("n1")
        .moved
        .insert("db".into(), report("n1", 500));
    c.observed("n2")
        .moved
        .insert("db".into(), report("n2", 900));
    c.observed("n2")
        .moved
        .insert("web".into(), report("n2", 9_999));
    assert_eq!(c.app("db").last_move, Some(report("n2", 900)));
    assert_eq!(c.app("cron").last_move, None);
}

#[test]
fn the_volume_line_uses_the_owners_measurement() {
    let usage = |used_bytes| VolumeUsage {
        used_bytes,
        maximum_size: Some(1 << 20),
        partial: false,
    };
    let mut c = Cluster::new();
    assert_eq!(c.app("db").volume, None, "no owner yet");
    c.owner("db", "n1", 4);
    c.observed("n2").volumes.insert("db".into(), usage(5 << 20));
    let unmeasured = c.app("db").volume.unwrap();
    assert_eq!(
        (
            unmeasured.owner.as_str(),
            unmeasured.epoch,
            unmeasured.used_bytes
        ),
        ("n1", 4, None),
        "a non-owner's measurement is not the volume's"
    );
    assert_eq!(unmeasured.maximum_size, Some(1 << 20));
    c.observed("n1").volumes.insert("db".into(), usage(1000));
    let within = c.app("db").volume.unwrap();
    assert_eq!((within.used_bytes, within.warning), (Some(1000), None));
    c.observed("n1").volumes.insert("db".into(), usage(2 << 20));
    assert_eq!(
        c.app("db").volume.unwrap().warning.as_deref(),
        Some("uses 2097152 bytes, over its maximum_size of 1048576 (enforced only on the btrfs volume backend; measured here)")
    );
}

#[test]
fn every_deployed_app_by_name_with_the_config_version() {
    let mut c = Cluster::new();
    c.place("cron", "n2");
    c.runs("n2", "cron", "running", None);
    c.runs("n1", "cron", "exited", None);
    let view = status_view(&c.state, &c.observed, &[], &Default::default());
    assert_eq!(view.config_version, 7);
    let names: Vec<&str> = view.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["cron", "db", "web"], "pinned and anywhere, sorted");
    let cron = &view.apps[0];
    assert_eq!(cron.image, "busybox:latest");
    assert_eq!(cron.desired_node.as_deref(), Some("n2"));
    let seen: Vec<(&str, &str)> = cron
        .instances
        .iter()
        .map(|i| (i.node.as_str(), i.state.as_str()))
        .collect();
    assert_eq!(seen, [("n1", "exited"), ("n2", "running")], "on any node");
    assert!(view.routing.is_empty(), "no external ports");
}
