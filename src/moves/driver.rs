//! Runs this node's part of every move in flight: as the source, the whole
//! attempt (push rounds, freeze, final round, handoff); as the destination,
//! the handoff of a copy completed before a restart. One task per app,
//! started and stopped as the applied state changes.

use super::error::{after_failure, backoff, AfterFailure, MoveError};
use super::sender::SenderSession;
use super::{HandoffResult, MoveContext};
use crate::agent::LABEL_APP;
use crate::api::{MoveReport, MoveStatus};
use crate::runtime::ContainerState;
use crate::state::{Command, MoveStep, VolumeMove};
use crate::volume::{ScanOptions, Scanner, VolumeStore};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Live rounds at most before the freeze, whatever is still dirty.
pub const MAX_LIVE_ROUNDS: u32 = 6;
/// Dirty data small enough to send with the app stopped.
pub const FINAL_DELTA_TARGET: u64 = 8 << 20;
/// How long the source waits for its agent to stop the app after the freeze
/// (the agent's stop grace and a margin).
const STOP_WAIT: Duration = Duration::from_secs(30);
const STOP_POLL: Duration = Duration::from_millis(20);
/// How often the driver looks again without a state change (a container
/// stopping is not one).
const TICK: Duration = Duration::from_millis(200);

/// Starts and stops move tasks as this node's applied state changes.
pub async fn run(ctx: Arc<MoveContext>) {
    let mut applied = ctx.sm.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut sources: HashMap<String, (u64, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut handoffs: HashSet<(String, u64)> = HashSet::new();
    loop {
        tokio::select! {
            _ = applied.changed() => {}
            _ = tick.tick() => {}
        }
        let (moves, owned_at): (Vec<(String, VolumeMove)>, HashMap<String, u64>) = {
            let applied = ctx.sm.read();
            let state = &applied.state;
            let moves = state
                .moves
                .iter()
                .filter(|(_, m)| m.from == ctx.node || m.to == ctx.node)
                .map(|(a, m)| (a.clone(), m.clone()))
                .collect();
            let owned_at = sources
                .keys()
                .filter_map(|a| Some((a.clone(), state.volumes.get(a)?.epoch)))
                .collect();
            (moves, owned_at)
        };
        // Tasks of attempts that are over: a handed-off one finishes its
        // report; a retried or cancelled one stops where it is.
        sources.retain(|app, (epoch, task)| {
            let current = moves
                .iter()
                .any(|(a, m)| a == app && m.epoch == *epoch && m.from == ctx.node);
            let handed_off = owned_at.get(app) == Some(epoch);
            if !current && !handed_off {
                task.abort();
            }
            let keep = (current || handed_off) && !task.is_finished();
            if !keep {
                ctx.observed.move_ended(app);
            }
            keep
        });
        for (app, m) in &moves {
            if m.from == ctx.node && !sources.contains_key(app) {
                let task = tokio::spawn(drive(ctx.clone(), app.clone(), m.clone()));
                sources.insert(app.clone(), (m.epoch, task));
            }
            // A destination that completed its copy and then restarted (or
            // whose proposal got lost) finishes the handoff itself.
            if m.to == ctx.node
                && m.frozen
                && ctx
                    .store
                    .mark(app)
                    .ok()
                    .flatten()
                    .is_some_and(|k| k.is_complete_at(m.epoch))
                && handoffs.insert((app.clone(), m.epoch))
            {
                let (ctx, app, epoch) = (ctx.clone(), app.clone(), m.epoch);
                tokio::spawn(async move {
                    let outcome = ctx.hand_off(&app, epoch).await;
                    tracing::info!(%app, epoch, ?outcome, "handoff of a completed copy");
                });
            }
        }
        handoffs.retain(|(app, epoch)| moves.iter().any(|(a, m)| a == app && m.epoch == *epoch));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Times the phases of one try for `flocker_move_phase_seconds`: each
/// phase from the end of the one before.
struct PhaseTimer(Instant);

impl PhaseTimer {
    fn start() -> PhaseTimer {
        PhaseTimer(Instant::now())
    }

    fn ended(&mut self, phase: &str) {
        crate::metrics::get()
            .move_phase_seconds
            .with_label_values(&[phase])
            .observe(crate::metrics::secs(self.0.elapsed()));
        self.0 = Instant::now();
    }
}

/// Progress of one attempt, published for `ctl status`.
struct Progress {
    ctx: Arc<MoveContext>,
    app: String,
    status: MoveStatus,
    round_started: Instant,
}

impl Progress {
    fn new(ctx: Arc<MoveContext>, app: &str, m: &VolumeMove) -> Progress {
        Progress {
            ctx,
            app: app.to_string(),
            status: MoveStatus {
                from: m.from.clone(),
                to: m.to.clone(),
                epoch: m.epoch,
                attempt: m.attempt,
                phase: "starting".into(),
                bytes_done: 0,
                bytes_total: 0,
                bytes_per_sec: 0,
                bytes_sent: 0,
                started_ms: m.started_ms,
                last_error: m.last_error.clone(),
            },
            round_started: Instant::now(),
        }
    }

    fn publish(&self) {
        self.ctx
            .observed
            .move_progress(&self.app, self.status.clone());
    }

    fn phase(&mut self, phase: impl Into<String>) {
        self.status.phase = phase.into();
        self.publish();
    }

    fn round(&mut self, phase: String, total: u64) {
        self.status.phase = phase;
        self.status.bytes_done = 0;
        self.status.bytes_total = total;
        self.round_started = Instant::now();
        self.publish();
    }

    fn sent(&mut self, done: u64) {
        let added = done.saturating_sub(self.status.bytes_done);
        self.status.bytes_sent += added;
        self.status.bytes_done = done;
        let secs = self.round_started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.status.bytes_per_sec = (done as f64 / secs) as u64;
        }
        // Publishing every chunk would take the lock ~1,000 times a second.
        if added > 0 && (done == self.status.bytes_total || done % (16 << 20) < added) {
            self.publish();
        }
    }
}

/// The source's loop over tries of one attempt, until it ends.
async fn drive(ctx: Arc<MoveContext>, app: String, m: VolumeMove) {
    let mut progress = Progress::new(ctx.clone(), &app, &m);
    progress.publish();
    let mut failures = 0u32;
    loop {
        let mut report = MoveReport {
            from: m.from.clone(),
            to: m.to.clone(),
            epoch: m.epoch,
            ..MoveReport::default()
        };
        let Err(e) = attempt(&ctx, &app, &m, &mut progress, &mut report).await else {
            report.finished_ms = now_ms();
            tracing::info!(%app, epoch = m.epoch, to = %m.to, ?report, "volume moved");
            ctx.observed.move_finished(&app, report);
            return;
        };
        failures += 1;
        let frozen = ctx.sm.read().state.move_frozen_at(&app, m.epoch);
        let decision = after_failure(e.kind, frozen, failures);
        if decision == AfterFailure::Stop {
            tracing::info!(%app, epoch = m.epoch, "move attempt superseded");
            return;
        }
        tracing::warn!(%app, epoch = m.epoch, failures, "move attempt failed: {e}");
        progress.status.last_error = Some(e.to_string());
        let wait = match decision {
            AfterFailure::RetryIn(wait) => wait,
            // The next attempt is a new task, with a new epoch.
            AfterFailure::GiveBack if give_back(&ctx, &app, m.epoch, &e, &mut progress).await => {
                return
            }
            AfterFailure::GiveBack | AfterFailure::Stop => backoff(failures),
        };
        progress.phase(format!("retrying in {}s", wait.as_secs_f32()));
        tokio::time::sleep(wait).await;
    }
}

/// Commits `Retry` for the frozen attempt at `epoch`, which failed with
/// `why`: the source runs the app again. True once committed.
async fn give_back(
    ctx: &MoveContext,
    app: &str,
    epoch: u64,
    why: &MoveError,
    progress: &mut Progress,
) -> bool {
    progress.phase("giving the app back to the source");
    let retry = Command::MoveStep {
        app: app.to_string(),
        epoch,
        step: MoveStep::Retry {
            reason: why.to_string(),
        },
    };
    match ctx.api.submit_as_node(retry).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(%app, "could not commit the retry: {e}");
            false
        }
    }
}

/// One try: a session from connect to handoff (or a frozen attempt resumed).
async fn attempt(
    ctx: &Arc<MoveContext>,
    app: &str,
    m: &VolumeMove,
    progress: &mut Progress,
    report: &mut MoveReport,
) -> Result<(), MoveError> {
    let mut timer = PhaseTimer::start();
    progress.phase(format!("connecting to {}", m.to));
    let mut session = open_session(ctx, app, m).await?;
    timer.ended("connect");
    if !ctx.sm.read().state.move_frozen_at(app, m.epoch) {
        live_rounds(&mut session, progress, report).await?;
        timer.ended("live_rounds");
        freeze(ctx, app, m.epoch, progress).await?;
        timer.ended("freeze");
    }
    report.frozen_ms = now_ms();
    let frozen = Instant::now();
    progress.phase("stopping the app");
    let frozen_at = ctx.sm.read().index();
    wait_stopped(ctx, app, frozen_at).await?;
    timer.ended("stop_app");
    report.stopped_ms = now_ms();
    final_round(&mut session, app, m, progress, report).await?;
    timer.ended("final_round");
    report.final_ms = now_ms();
    progress.phase("handing off");
    let outcome = ctx.hand_off(app, m.epoch).await;
    timer.ended("handoff");
    report.handed_off_ms = now_ms();
    if matches!(outcome, HandoffResult::Done) {
        let metrics = crate::metrics::get();
        metrics.moves_total.inc();
        metrics
            .move_downtime_seconds
            .observe(crate::metrics::secs(frozen.elapsed()));
    }
    // Saving the hash cache is not part of the move's time.
    tokio::spawn(session.close());
    match outcome {
        HandoffResult::Done => Ok(()),
        HandoffResult::Superseded => Err(MoveError::superseded(format!(
            "the attempt at epoch {} was superseded before its handoff",
            m.epoch
        ))),
        HandoffResult::Unknown(why) => Err(MoveError::transient(why)),
    }
}

/// A session to the destination, over this node's copy at the owner's
/// committed epoch.
async fn open_session(
    ctx: &MoveContext,
    app: &str,
    m: &VolumeMove,
) -> Result<SenderSession, MoveError> {
    let addr = ctx
        .api
        .volume_address_of(&m.to)
        .await
        .map_err(MoveError::transient)?;
    let owner_epoch = ctx
        .sm
        .read()
        .state
        .volumes
        .get(app)
        .map(|o| o.epoch)
        .ok_or_else(|| MoveError::fatal("the volume has no owner"))?;
    let scanner = source_scanner(ctx.store.clone(), app, owner_epoch).await?;
    SenderSession::open(
        &ctx.volume_net,
        addr,
        &m.to,
        app,
        m.epoch,
        scanner,
        ctx.rate_limit,
    )
    .await
    .map_err(MoveError::transient)
}

/// A scanner of this node's copy, which must be complete at `owner_epoch`
/// to be the source. File work runs off the async threads.
async fn source_scanner(
    store: VolumeStore,
    app: &str,
    owner_epoch: u64,
) -> Result<Scanner, MoveError> {
    let app = app.to_string();
    tokio::task::spawn_blocking(move || {
        // A volume whose app never ran here yet has no copy: it is empty.
        if owner_epoch == 1 && !store.exists(&app).unwrap_or(true) {
            store
                .create_empty(&app, 1)
                .map_err(|e| MoveError::transient(format!("creating the empty volume: {e}")))?;
        }
        if !store.mountable(&app, owner_epoch) {
            return Err(MoveError::fatal(format!(
                "this node's copy is not complete at epoch {owner_epoch}: it cannot be the source"
            )));
        }
        store
            .scanner(&app, ScanOptions::default())
            .map_err(|e| MoveError::transient(format!("opening the volume: {e}")))
    })
    .await
    .map_err(|e| MoveError::transient(format!("open task: {e}")))?
}

/// Rounds pushed while the app keeps running, until what is still dirty
/// is small enough for the final round (or [`MAX_LIVE_ROUNDS`]).
async fn live_rounds(
    session: &mut SenderSession,
    progress: &mut Progress,
    report: &mut MoveReport,
) -> Result<(), MoveError> {
    let mut settled = false;
    for round in 1..=MAX_LIVE_ROUNDS {
        let prepared = session.prepare().await.map_err(MoveError::transient)?;
        let dirty = prepared.stats().send_bytes;
        if round > 1 && dirty <= FINAL_DELTA_TARGET {
            // Files this scan had to read may have changed too recently
            // for their hashes to be trusted (`volume::cache`): the final
            // scan would read them again with the app stopped. Let the
            // window pass and scan once more while the app still runs.
            let reread = prepared.scan.hashed_bytes > FINAL_DELTA_TARGET;
            if !reread || settled || round == MAX_LIVE_ROUNDS {
                break;
            }
            settled = true;
            tokio::time::sleep(crate::volume::cache::RACY_WINDOW).await;
        }
        progress.round(format!("pushing round {round}"), dirty);
        let result = session
            .send_round(prepared, None, |done| progress.sent(done))
            .await
            .map_err(MoveError::transient)?;
        report.rounds += 1;
        report.bytes_sent += result.bytes;
    }
    Ok(())
}

/// Commits the attempt's freeze and waits until this node has applied it.
async fn freeze(
    ctx: &MoveContext,
    app: &str,
    epoch: u64,
    progress: &mut Progress,
) -> Result<(), MoveError> {
    progress.phase("freezing");
    let freeze = Command::MoveStep {
        app: app.to_string(),
        epoch,
        step: MoveStep::Freeze,
    };
    if let Err(why) = ctx.api.submit_as_node(freeze).await {
        let why = format!("freezing: {why}");
        if MoveContext::attempt_outcome(&ctx.sm.read().state, app, epoch).is_some() {
            return Err(MoveError::superseded(why));
        }
        return Err(MoveError::transient(why));
    }
    if !ctx.wait_for_freeze(app, epoch).await {
        return Err(MoveError::transient(
            "the freeze did not reach this node's state",
        ));
    }
    Ok(())
}

/// The round sent with the app stopped, which asks the destination to mark
/// its copy complete at the attempt's epoch.
async fn final_round(
    session: &mut SenderSession,
    app: &str,
    m: &VolumeMove,
    progress: &mut Progress,
    report: &mut MoveReport,
) -> Result<(), MoveError> {
    let prepared = session.prepare().await.map_err(MoveError::transient)?;
    let dirty = prepared.stats().send_bytes;
    report.final_scan_bytes = prepared.scan.hashed_bytes;
    tracing::info!(%app, epoch = m.epoch, dirty, reread = prepared.scan.hashed_bytes, files = prepared.scan.hashed_files, "final delta");
    progress.round("final delta".into(), dirty);
    let result = session
        .send_round(prepared, Some(m.epoch), |done| progress.sent(done))
        .await
        .map_err(MoveError::transient)?;
    report.rounds += 1;
    report.bytes_sent += result.bytes;
    report.final_bytes = result.bytes;
    if !result.complete {
        return Err(MoveError::transient(format!(
            "the final round left {}'s copy incomplete (matched: {})",
            m.to, result.matched
        )));
    }
    Ok(())
}

/// Waits until no container of `app` runs on this node: the agent, having
/// acted on a state at least as new as `index` (which no longer runs the
/// app here), stopped it. Waiting for the agent's pass, not just for the
/// engine to show nothing running, covers a start the agent had already
/// begun from an older state (the chaos suite caught exactly that).
async fn wait_stopped(ctx: &MoveContext, app: &str, index: u64) -> Result<(), MoveError> {
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        let acted = ctx.observed.reconciled_index() >= index;
        if !acted {
            if Instant::now() >= deadline {
                return Err(MoveError::transient(format!(
                    "the agent did not act on index {index} within {STOP_WAIT:?}"
                )));
            }
            tokio::time::sleep(STOP_POLL).await;
            continue;
        }
        let containers = ctx
            .runtime
            .list(&ctx.labels)
            .await
            .map_err(|e| MoveError::transient(format!("listing containers: {e}")))?;
        if !running_here(&containers, app) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MoveError::transient(format!(
                "the app still runs here {STOP_WAIT:?} after the freeze"
            )));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// Whether a container of `app` may be running among this node's.
pub(super) fn running_here(containers: &[crate::runtime::ContainerInfo], app: &str) -> bool {
    containers.iter().any(|c| {
        c.labels.get(LABEL_APP).map(String::as_str) == Some(app)
            && matches!(
                c.state,
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
            )
    })
}
