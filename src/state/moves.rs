//! Volume moves in the replicated state: which moves are in flight, the
//! epochs they are given, and the commands that advance them.
//!
//! A move exists exactly while an app with a volume is placed on a node other
//! than its volume's owner; [`State::reconcile_moves`] keeps that true after
//! every command that changes placements, owners or the configuration. Each
//! attempt of a move gets an epoch of its own, issued from the volume's
//! counter and never given out again, so a copy completed by an abandoned
//! attempt can never match the epoch of a later owner (invariant 4). Only a
//! step naming the move's current epoch applies: a late `Handoff` of an
//! abandoned attempt is refused, whichever node proposed it.
//!
//! Who runs the app during a move: the owner (the source) until `Freeze`
//! commits, nobody from `Freeze` until `Handoff` (the new owner starts it)
//! or `Retry` (the source runs it again). See [`State::runs_on`].

use super::{Effect, MoveStep, State, VolumeOwner};
use serde::{Deserialize, Serialize};

/// A volume on its way from its owner to the node its app is placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMove {
    pub from: String,
    pub to: String,
    /// This attempt's epoch: the one the destination owns the volume at
    /// after the handoff.
    pub epoch: u64,
    /// The source stops the app for the final delta; nobody runs it.
    pub frozen: bool,
    /// Attempts so far, from 1.
    pub attempt: u32,
    /// Leader's clock when the move began (milliseconds since the Unix epoch).
    pub started_ms: u64,
    /// Why the last attempt was given up.
    pub last_error: Option<String>,
}

/// Longest retry reason kept in the state.
const MAX_REASON: usize = 300;

impl State {
    /// The next epoch of `app`'s volume, never issued before.
    fn issue_epoch(&mut self, app: &str) -> u64 {
        let owner = self
            .volumes
            .get_mut(app)
            .expect("epochs are issued only for volumes that have an owner");
        owner.issued = owner.issued.max(owner.epoch) + 1;
        owner.issued
    }

    /// Starts, retargets or cancels moves so that a move exists exactly for
    /// each app with a volume placed away from its owner.
    pub(super) fn reconcile_moves(&mut self, now_ms: u64) {
        let apps: Vec<String> = self.volumes.keys().cloned().collect();
        for app in apps {
            let owner = self.volumes[&app].node.clone();
            let target = self
                .deployed
                .placements
                .get(&app)
                .filter(|_| self.deployed.has_volume(&app))
                .cloned();
            let wanted = target.filter(|t| *t != owner);
            match (wanted, self.moves.get(&app)) {
                (None, None) => {}
                (None, Some(_)) => {
                    self.moves.remove(&app);
                }
                (Some(to), Some(m)) if m.to == to && m.from == owner => {}
                (Some(to), _) => {
                    // The former owner's copy is about to be written by
                    // this move's rounds: no longer a failover source.
                    let record = self.volumes.get_mut(&app).expect("iterating volumes");
                    if record.handed_from.as_ref().is_some_and(|h| h.node == to) {
                        record.handed_from = None;
                    }
                    let epoch = self.issue_epoch(&app);
                    self.moves.insert(
                        app.clone(),
                        VolumeMove {
                            from: owner,
                            to,
                            epoch,
                            frozen: false,
                            attempt: 1,
                            started_ms: now_ms,
                            last_error: None,
                        },
                    );
                }
            }
        }
        // Moves whose volume is gone (the app was removed).
        let volumes = &self.volumes;
        self.moves.retain(|app, _| volumes.contains_key(app));
    }

    /// The node that may run `app` now, if any: where it is served from
    /// (`serves_from`), except while it waits for a stop elsewhere — the
    /// node it left has not released it yet (no volume), or its move is
    /// frozen for the final delta (with a volume).
    pub fn runs_on(&self, app: &str) -> Option<&str> {
        let node = self.serves_from(app)?;
        let waiting = if self.deployed.has_volume(app) {
            self.moves.get(app).is_some_and(|m| m.frozen)
        } else {
            self.releases.contains_key(app)
        };
        (!waiting).then_some(node)
    }

    /// The node that runs `app` or will run it again once a handoff ends:
    /// its placement, or for an app with a volume its volume's owner. Where
    /// links to it point: unlike `runs_on`, never `None` for a placed app,
    /// so links do not flap (and recreate their users) during a handoff.
    pub fn serves_from(&self, app: &str) -> Option<&str> {
        let placed = self.deployed.placements.get(app)?;
        if !self.deployed.has_volume(app) {
            return Some(placed);
        }
        // A volume gets its first owner when first placed, so an owner exists.
        self.volumes.get(app).map(|o| o.node.as_str())
    }

    /// Whether `app`'s move is at attempt `epoch` and frozen.
    pub fn move_frozen_at(&self, app: &str, epoch: u64) -> bool {
        self.moves
            .get(app)
            .is_some_and(|m| m.epoch == epoch && m.frozen)
    }

    pub(super) fn execute_move_app(
        &mut self,
        app: &str,
        node: &str,
        now_ms: u64,
    ) -> Result<Effect, String> {
        if !self.deployed.config.applications.contains_key(app) {
            return Err(format!("no application named '{app}' is deployed"));
        }
        let record = self
            .nodes
            .get(node)
            .ok_or_else(|| format!("no member node named '{node}'"))?;
        if record.down {
            return Err(format!("{node} is down"));
        }
        let deployment = &self.deployed.config.deployment;
        if deployment.is_anywhere(app) {
            if record.drained {
                return Err(format!("{node} is drained"));
            }
            if self.deployed.placements.get(app).map(String::as_str) == Some(node) {
                return Ok(Effect {
                    message: format!("{app} is already placed on {node}"),
                    changed: false,
                });
            }
            let before = self.placements_of([&app.to_string()]);
            let from = self.deployed.placements.insert(app.into(), node.into());
            self.assign_new_volumes();
            self.reconcile_moves(now_ms);
            self.note_releases(&before);
            return Ok(Effect::changed(format!(
                "{app}: {}→{node}",
                from.as_deref().unwrap_or("unplaced")
            )));
        }
        // A pinned app: the same change as editing deployment.yml.
        let mut configuration = self.deployed.config.clone();
        let pinned = &mut configuration.deployment.pinned;
        for apps in pinned.values_mut() {
            apps.retain(|a| a != app);
        }
        pinned.retain(|_, apps| !apps.is_empty());
        let apps = pinned.entry(node.to_string()).or_default();
        apps.push(app.to_string());
        apps.sort();
        self.execute_deploy(&configuration, None, now_ms)
    }

    pub(super) fn execute_move_step(
        &mut self,
        app: &str,
        epoch: u64,
        step: &MoveStep,
    ) -> Result<Effect, String> {
        let Some(m) = self.moves.get_mut(app) else {
            return Err(format!("{app} has no volume move in flight"));
        };
        if m.epoch != epoch {
            return Err(format!(
                "{app}: attempt at epoch {epoch} was superseded (the move is at epoch {})",
                m.epoch
            ));
        }
        match step {
            MoveStep::Freeze => {
                if m.frozen {
                    return Ok(Effect {
                        message: format!("{app}: already frozen at epoch {epoch}"),
                        changed: false,
                    });
                }
                m.frozen = true;
                Ok(Effect {
                    message: format!("{app}: frozen for the final delta at epoch {epoch}"),
                    changed: false,
                })
            }
            MoveStep::Handoff => self.hand_off(app, epoch),
            MoveStep::Retry { reason } => self.retry_move(app, reason),
        }
    }

    /// The destination's copy is final: it becomes the owner at the move's
    /// epoch and the move ends.
    fn hand_off(&mut self, app: &str, epoch: u64) -> Result<Effect, String> {
        if !self.moves[app].frozen {
            return Err(format!(
                "{app}: the move at epoch {epoch} is not frozen, so no copy can be final"
            ));
        }
        let m = self.moves.remove(app).expect("checked above");
        let owner = self
            .volumes
            .get_mut(app)
            .expect("a move exists only for a volume with an owner");
        debug_assert!(owner.issued >= epoch && epoch > owner.epoch);
        *owner = VolumeOwner {
            node: m.to.clone(),
            epoch,
            adopt: false,
            issued: owner.issued,
            from_point: None,
            handed_from: Some(super::HandedFrom {
                node: m.from.clone(),
                epoch: owner.epoch,
            }),
        };
        Ok(Effect::changed(format!(
            "{app}: volume handed off {}→{} at epoch {epoch} (attempt {})",
            m.from, m.to, m.attempt
        )))
    }

    /// The attempt failed: the next one gets a fresh epoch, which fences
    /// whatever the abandoned attempt still does.
    fn retry_move(&mut self, app: &str, reason: &str) -> Result<Effect, String> {
        let mut reason = reason.to_string();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let next = self.issue_epoch(app);
        let m = self.moves.get_mut(app).expect("checked above");
        m.epoch = next;
        m.frozen = false;
        m.attempt += 1;
        let message = format!(
            "{app}: move {}→{} attempt {} at epoch {next}, after: {reason}",
            m.from, m.to, m.attempt
        );
        m.last_error = Some(reason);
        Ok(Effect::changed(message))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, MoveStep, State};

    const APPS: &str = "version: 1\napplications:\n  db:\n    image: busybox\n    volume: {mountpoint: /data}\n  web:\n    image: busybox\n";

    fn config(deployment: &str) -> crate::config::Configuration {
        crate::config::parse(deployment, "deployment.yml", APPS, "application.yml").unwrap()
    }

    struct Log {
        state: State,
        index: u64,
    }

    impl Log {
        fn new() -> Log {
            let mut state = State::default();
            state.apply_membership(
                [
                    ("n1", "127.0.0.1:1"),
                    ("n2", "127.0.0.1:2"),
                    ("n3", "127.0.0.1:3"),
                ]
                .into_iter(),
            );
            Log { state, index: 0 }
        }

        fn apply(&mut self, command: Command) -> Result<String, String> {
            self.index += 1;
            self.state.apply_signed(self.index, &command).result
        }

        fn deploy(&mut self, deployment: &str) -> Result<String, String> {
            self.apply(Command::Deploy {
                configuration: config(deployment),
                if_version: None,
            })
        }

        fn step(&mut self, epoch: u64, step: MoveStep) -> Result<String, String> {
            self.apply(Command::MoveStep {
                app: "db".into(),
                epoch,
                step,
            })
        }
    }

    #[test]
    fn a_move_hands_off_at_its_own_epoch_and_nobody_runs_the_app_while_frozen() {
        let mut log = Log::new();
        log.deploy("version: 1\nnodes:\n  n1: [db, web]\n").unwrap();
        assert_eq!(log.state.volumes["db"].epoch, 1);
        assert_eq!(log.state.runs_on("db"), Some("n1"));
        log.deploy("version: 1\nnodes:\n  n1: [web]\n  n2: [db]\n")
            .unwrap();
        let m = log.state.moves["db"].clone();
        assert_eq!((m.from.as_str(), m.to.as_str(), m.epoch), ("n1", "n2", 2));
        // The source keeps running it while the volume is pushed.
        assert_eq!(log.state.runs_on("db"), Some("n1"));
        assert!(log.step(2, MoveStep::Handoff).is_err(), "not frozen yet");
        log.step(2, MoveStep::Freeze).unwrap();
        assert_eq!(log.state.runs_on("db"), None);
        assert!(log.step(1, MoveStep::Handoff).is_err(), "stale epoch");
        log.step(2, MoveStep::Handoff).unwrap();
        assert!(log.state.moves.is_empty());
        assert_eq!(log.state.volumes["db"].node, "n2");
        assert_eq!(log.state.volumes["db"].epoch, 2);
        assert_eq!(log.state.runs_on("db"), Some("n2"));
        // Apps without a volume simply run where they are placed.
        assert_eq!(log.state.runs_on("web"), Some("n1"));
    }

    #[test]
    fn a_retry_gets_a_fresh_epoch_and_fences_the_abandoned_attempt() {
        let mut log = Log::new();
        log.deploy("version: 1\nnodes:\n  n1: [db]\n").unwrap();
        log.apply(Command::MoveApp {
            app: "db".into(),
            node: "n2".into(),
        })
        .unwrap();
        assert_eq!(
            log.state.deployed.version, 2,
            "a pinned move edits the deployment"
        );
        log.step(2, MoveStep::Freeze).unwrap();
        log.step(
            2,
            MoveStep::Retry {
                reason: "n2 unreachable".into(),
            },
        )
        .unwrap();
        let m = log.state.moves["db"].clone();
        assert_eq!((m.epoch, m.attempt, m.frozen), (3, 2, false));
        assert_eq!(
            log.state.runs_on("db"),
            Some("n1"),
            "the source runs it again"
        );
        // A late handoff of attempt 1, from either node, changes nothing.
        assert!(log.step(2, MoveStep::Handoff).is_err());
        assert_eq!(log.state.volumes["db"].node, "n1");
        log.step(3, MoveStep::Freeze).unwrap();
        log.step(3, MoveStep::Handoff).unwrap();
        assert_eq!(log.state.volumes["db"].epoch, 3);
    }

    #[test]
    fn moving_back_cancels_and_recover_supersedes_a_move() {
        let mut log = Log::new();
        log.deploy("version: 1\nnodes:\n  n1: [db]\n").unwrap();
        log.deploy("version: 1\nnodes:\n  n2: [db]\n").unwrap();
        assert!(log.state.moves.contains_key("db"));
        log.deploy("version: 1\nnodes:\n  n1: [db]\n").unwrap();
        assert!(log.state.moves.is_empty(), "placed on its owner again");
        // Retargeting a move starts a new attempt with a new epoch.
        log.deploy("version: 1\nnodes:\n  n2: [db]\n").unwrap();
        let first = log.state.moves["db"].epoch;
        log.deploy("version: 1\nnodes:\n  n3: [db]\n").unwrap();
        assert!(log.state.moves["db"].epoch > first);
        // recover: a new owner above every epoch issued, no move left.
        let issued = log.state.volumes["db"].issued;
        log.apply(Command::RecoverVolume {
            app: "db".into(),
            node: "n3".into(),
        })
        .unwrap();
        assert!(log.state.moves.is_empty());
        assert_eq!(log.state.volumes["db"].epoch, issued + 1);
    }

    #[test]
    fn moving_refuses_unknown_apps_and_nodes() {
        let mut log = Log::new();
        log.deploy("version: 1\nnodes:\n  n1: [db]\n").unwrap();
        let unknown_node = log.apply(Command::MoveApp {
            app: "db".into(),
            node: "n9".into(),
        });
        assert!(unknown_node.unwrap_err().contains("n9"));
        let unknown_app = log.apply(Command::MoveApp {
            app: "nope".into(),
            node: "n2".into(),
        });
        assert!(unknown_app.unwrap_err().contains("nope"));
        assert!(log.state.moves.is_empty());
        assert_eq!(log.state.deployed.version, 1);
    }
}
