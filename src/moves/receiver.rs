//! The destination's side of a move: serves volume streams, one session per
//! app at a time, writing rounds into this node's copy in place.
//!
//! A session is accepted only from the move's source (the peer certificate
//! names it) for the attempt the applied state shows in flight to this node;
//! a newer session for the same app (the source reconnected) replaces the
//! older one. The copy is written on a blocking thread fed by a bounded
//! channel, so a slow disk slows the stream instead of filling memory. A
//! final round is allowed to mark the copy complete only once this node
//! has applied the attempt's `Freeze`; when it has, this node proposes the
//! handoff itself too, so the move finishes even if the source dies right
//! after sending the last byte.
//!
//! What the copy may do to this host is set here, per session, from this
//! node's settings and the applied state: setuid and setgid bits are written
//! only if the app's volume says `preserve_setuid`, and no round may leave
//! the file system with less than the node's `--reserve` available (the
//! refusal names this node and reaches the source's `last_error`).

use super::protocol::{ToReceiver, ToSender, MAX_VOLUME_FRAME};
use super::{replica, MoveContext, STATE_WAIT};
use crate::ca::{Identity, Role};
use crate::net::frame::{read_frame, write_frame};
use crate::net::{Service, StreamHandler};
use crate::volume::{ApplyOptions, ReceiverCopy, ScanOptions, VolumeError};
use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Messages buffered between the stream and the disk writer (≤ 1 MiB each).
const INBOX: usize = 16;
const OUTBOX: usize = 64;

pub struct Receiver {
    ctx: Arc<MoveContext>,
    /// Per app: the running session's cancel switch, and the lock the next
    /// session waits on until the previous one let go of the copy.
    sessions: Mutex<HashMap<String, Slot>>,
}

struct Slot {
    cancel: watch::Sender<bool>,
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl Receiver {
    pub fn new(ctx: Arc<MoveContext>) -> Arc<Receiver> {
        Arc::new(Receiver {
            ctx,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Cancels `app`'s running session, if any, and returns the lock the
    /// new session must hold plus its own cancel switch.
    fn take_slot(&self, app: &str) -> (Arc<tokio::sync::Mutex<()>>, watch::Receiver<bool>) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let (cancel, cancelled) = watch::channel(false);
        let busy = match sessions.remove(app) {
            Some(old) => {
                let _ = old.cancel.send(true);
                old.busy
            }
            None => Arc::default(),
        };
        sessions.insert(
            app.to_string(),
            Slot {
                cancel,
                busy: busy.clone(),
            },
        );
        (busy, cancelled)
    }

    async fn session(
        &self,
        peer: &Identity,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), String> {
        let hello: ToReceiver = read_frame(&mut recv, MAX_VOLUME_FRAME)
            .await
            .map_err(|e| format!("reading hello: {e}"))?;
        let (app, epoch, target) = match hello {
            ToReceiver::Hello { app, epoch } => {
                match self.ctx.wait_for_attempt(&app, epoch, &peer.name).await {
                    Ok(owner_epoch) => (app, epoch, Target::Move { owner_epoch }),
                    Err(why) => return refuse(&mut send, why).await,
                }
            }
            ToReceiver::ReplicaHello { app, epoch, seq } => {
                match self.replica_target(&peer.name, &app, epoch, seq).await {
                    Ok(store) => {
                        tracing::debug!(%app, epoch, seq, "receiving a replica point");
                        (app, epoch, Target::Replica { store })
                    }
                    Err(why) => return refuse(&mut send, why).await,
                }
            }
            _ => return refuse(&mut send, "a volume session starts with hello".into()).await,
        };
        // Moves and points of one app write different copies.
        let key = match &target {
            Target::Move { .. } => app.clone(),
            Target::Replica { .. } => format!("{app} (replica)"),
        };
        let (busy, mut cancelled) = self.take_slot(&key);
        let _held = busy.lock().await;
        if matches!(target, Target::Move { .. }) {
            self.seed_from_replica(&app).await;
        }
        tracing::info!(%app, epoch, from = %peer.name, ?target, "receiving volume");

        let (in_tx, in_rx) = mpsc::channel::<ToReceiver>(INBOX);
        let (out_tx, mut out_rx) = mpsc::channel::<ToSender>(OUTBOX);
        let is_move = matches!(target, Target::Move { .. });
        let worker = self.spawn_writer(&app, &target, epoch, in_rx, out_tx);
        let reader = spawn_reader(self.ctx.clone(), app.clone(), recv, in_tx, is_move);
        let result = self
            .relay(&app, epoch, is_move, &mut send, &mut out_rx, &mut cancelled)
            .await;
        reader.abort();
        // The writer stops at its next message once the reader is gone.
        drop(out_rx);
        let _ = worker.await;
        let _ = send.finish();
        result
    }

    /// Starts a move's copy from this node's replica of the app, if it has
    /// one and no copy of its own (a failure only costs the saving).
    async fn seed_from_replica(&self, app: &str) {
        let ctx = self.ctx.clone();
        let app = app.to_string();
        let seeded = tokio::task::spawn_blocking(move || {
            replica::seed_from_replica(&ctx.store, &ctx.slots, &ctx.backend, &app)
        })
        .await;
        if let Ok(Err(why)) = seeded {
            tracing::warn!("{why}");
        }
    }

    /// Whether `peer` may send point `seq` of `app` (taken at `epoch`) to
    /// this replica, once this node has applied what the peer did; the
    /// store of the slot that receives it, marked as receiving it.
    async fn replica_target(
        &self,
        peer: &str,
        app: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<crate::volume::VolumeStore, String> {
        let me = self.ctx.node.as_str();
        let admitted = self
            .ctx
            .wait_state(STATE_WAIT, |s| replica::admit(s, me, peer, app, epoch).ok())
            .await;
        let keep = match admitted {
            Some(keep) => keep,
            None => replica::admit(&self.ctx.sm.read().state, me, peer, app, epoch)?,
        };
        let (slots, live) = (self.ctx.slots.clone(), self.ctx.store.clone());
        let backend = self.ctx.backend.clone();
        let app = app.to_string();
        tokio::task::spawn_blocking(move || {
            let admitted =
                replica::prepare_slot(&slots, &live, &backend, &app, keep, (epoch, seq))?;
            Ok(slots.store(admitted.slot).clone())
        })
        .await
        .map_err(|e| format!("slot task: {e}"))?
    }

    /// Starts the blocking writer of one session of `app` (see [`receive`]).
    fn spawn_writer(
        &self,
        app: &str,
        target: &Target,
        attempt_epoch: u64,
        inbox: mpsc::Receiver<ToReceiver>,
        outbox: mpsc::Sender<ToSender>,
    ) -> tokio::task::JoinHandle<()> {
        let (store, owner_epoch) = match target {
            Target::Move { owner_epoch } => (self.ctx.store.clone(), *owner_epoch),
            // A slot is never the volume itself: epoch 0 is never issued,
            // so no slot is refused as "the live copy".
            Target::Replica { store, .. } => (store.clone(), 0),
        };
        let app = app.to_string();
        let opts = self.apply_options(&app);
        let node = self.ctx.node.clone();
        tokio::task::spawn_blocking(move || {
            let session = Session {
                node: &node,
                app: &app,
                owner_epoch,
                attempt_epoch,
                opts,
            };
            receive(&store, &session, inbox, outbox)
        })
    }

    /// Writes the writer's replies to the stream until it ends, refuses or
    /// a newer session replaces this one; proposes the handoff once a round
    /// completed the copy.
    async fn relay(
        &self,
        app: &str,
        epoch: u64,
        is_move: bool,
        send: &mut SendStream,
        replies: &mut mpsc::Receiver<ToSender>,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        loop {
            let reply = tokio::select! {
                reply = replies.recv() => reply,
                _ = cancelled.changed() => return Err("replaced by a newer session".into()),
            };
            let Some(reply) = reply else { return Ok(()) };
            let complete = matches!(reply, ToSender::RoundDone { complete: true, .. });
            let refused = match &reply {
                ToSender::Refused(why) => Some(why.clone()),
                _ => None,
            };
            write_frame(send, &reply, MAX_VOLUME_FRAME)
                .await
                .map_err(|e| format!("writing to the stream: {e}"))?;
            if let Some(why) = refused {
                return Err(why);
            }
            if complete && !is_move {
                // The owner commits the point: it knows when it was taken.
                tracing::debug!(%app, epoch, "replica point complete");
            } else if complete {
                tracing::info!(%app, epoch, "copy complete; proposing the handoff");
                let (ctx, app) = (self.ctx.clone(), app.to_string());
                tokio::spawn(async move { ctx.hand_off(&app, epoch).await });
            }
        }
    }
}

/// Reads the source's messages into the writer's inbox. A move's final
/// round is final only if this node has applied the attempt's freeze (a
/// replica point completes at its own epoch: nothing runs from it).
fn spawn_reader(
    ctx: Arc<MoveContext>,
    app: String,
    mut recv: RecvStream,
    inbox: mpsc::Sender<ToReceiver>,
    is_move: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A read error ends the session: the writer sees its inbox close.
        while let Ok(mut msg) = read_frame::<_, ToReceiver>(&mut recv, MAX_VOLUME_FRAME).await {
            if let (true, ToReceiver::End { complete_epoch, .. }) = (is_move, &mut msg) {
                // Only a round sent after the freeze may be final.
                if let Some(epoch) = *complete_epoch {
                    if !ctx.wait_for_freeze(&app, epoch).await {
                        tracing::warn!(%app, epoch, "final round without a freeze applied here: not marking the copy complete");
                        *complete_epoch = None;
                    }
                }
            }
            if inbox.send(msg).await.is_err() {
                return;
            }
        }
    })
}

impl Receiver {
    /// How rounds of `app` are written here: the app's `preserve_setuid`
    /// as this node has applied it, and this node's reserve.
    fn apply_options(&self, app: &str) -> ApplyOptions {
        let preserve_setuid = self
            .ctx
            .sm
            .read()
            .state
            .deployed
            .config
            .applications
            .get(app)
            .and_then(|spec| spec.volume.as_ref())
            .is_some_and(|v| v.preserve_setuid);
        ApplyOptions {
            preserve_setuid,
            reserve: self.ctx.reserve,
            ..ApplyOptions::default()
        }
    }
}

/// Which copy a session writes.
#[derive(Debug)]
enum Target {
    /// This node's live copy, as a move's destination.
    Move { owner_epoch: u64 },
    /// A replica slot, receiving one of the owner's points.
    Replica { store: crate::volume::VolumeStore },
}

/// What the blocking writer of one session works with.
struct Session<'a> {
    node: &'a str,
    app: &'a str,
    owner_epoch: u64,
    attempt_epoch: u64,
    opts: ApplyOptions,
}

impl Session<'_> {
    /// A copy error as the source will read it: a reserve refusal names
    /// this node, so the operator knows whose disk is short.
    fn describe(&self, e: VolumeError) -> String {
        match e {
            VolumeError::Reserve(shortfall) => shortfall.describe(self.node),
            e => e.to_string(),
        }
    }
}

async fn refuse(send: &mut SendStream, why: String) -> Result<(), String> {
    let _ = write_frame(send, &ToSender::Refused(why.clone()), MAX_VOLUME_FRAME).await;
    let _ = send.finish();
    Err(why)
}

impl StreamHandler for Receiver {
    fn handle(
        self: Arc<Self>,
        peer: Identity,
        service: Service,
        mut send: SendStream,
        recv: RecvStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if service != Service::Volume || peer.role != Role::Node {
                let _ = refuse(
                    &mut send,
                    format!("this endpoint serves volume streams between nodes only, not {service:?} from {peer}"),
                )
                .await;
                return;
            }
            if let Err(why) = self.session(&peer, send, recv).await {
                tracing::warn!(from = %peer.name, "volume session ended: {why}");
            }
        })
    }
}

/// The blocking half of a session: owns this node's copy while it lasts.
fn receive(
    store: &crate::volume::VolumeStore,
    session: &Session<'_>,
    mut inbox: mpsc::Receiver<ToReceiver>,
    outbox: mpsc::Sender<ToSender>,
) {
    let app = session.app;
    let reply = |msg: ToSender| outbox.blocking_send(msg).is_ok();
    let mut copy = match ReceiverCopy::open(
        store,
        app,
        session.owner_epoch,
        ScanOptions::default(),
        session.opts,
    ) {
        Ok(copy) => copy,
        Err(e) => {
            reply(ToSender::Refused(format!("opening the copy of {app}: {e}")));
            return;
        }
    };
    if !reply(ToSender::Ready) {
        return;
    }
    while let Some(msg) = inbox.blocking_recv() {
        let answered = match between_rounds(&mut copy, msg, &mut inbox, session, &reply) {
            Ok(sent) => sent,
            Err(why) => {
                reply(ToSender::Refused(why));
                false
            }
        };
        if !answered {
            break;
        }
    }
    if let Err(e) = copy.save_cache() {
        tracing::warn!(%app, "could not save the copy's hash cache: {e}");
    }
}

/// Answers one message between rounds: `Ok(false)` once the stream is
/// gone, `Err` with why the session is refused.
fn between_rounds(
    copy: &mut ReceiverCopy,
    msg: ToReceiver,
    inbox: &mut mpsc::Receiver<ToReceiver>,
    session: &Session<'_>,
    reply: &impl Fn(ToSender) -> bool,
) -> Result<bool, String> {
    match msg {
        ToReceiver::SummaryPlease => {
            let items = copy
                .summary_items()
                .map_err(|e| format!("describing the copy: {e}"))?;
            Ok(items.into_iter().all(|item| reply(ToSender::Summary(item)))
                && reply(ToSender::SummaryEnd))
        }
        ToReceiver::Leaves(req) => {
            let leaves = copy
                .leaves(&req)
                .map_err(|e| format!("block hashes: {e}"))?;
            Ok(reply(ToSender::Leaves(leaves)))
        }
        ToReceiver::Begin => Ok(reply(apply_round(copy, inbox, session)?)),
        other => Err(format!(
            "unexpected message between rounds: {}",
            message_name(&other)
        )),
    }
}

/// One round, from `Begin` (already read) to `End`.
fn apply_round(
    copy: &mut ReceiverCopy,
    inbox: &mut mpsc::Receiver<ToReceiver>,
    session: &Session<'_>,
) -> Result<ToSender, String> {
    let attempt_epoch = session.attempt_epoch;
    let mut round = copy.begin_round().map_err(|e| match e {
        e @ VolumeError::Reserve(_) => session.describe(e),
        e => format!("marking the copy incomplete: {e}"),
    })?;
    loop {
        let msg = inbox
            .blocking_recv()
            .ok_or("the stream ended in the middle of a round")?;
        match msg {
            ToReceiver::Item(item) => round.apply_item(item).map_err(|e| session.describe(e))?,
            ToReceiver::Chunk(chunk) => {
                if let crate::volume::wire::Chunk::Data(data) = &chunk {
                    let len = data.bytes.len() as u64;
                    crate::metrics::get()
                        .volume_received_bytes_total
                        .inc_by(len);
                }
                round.apply_chunk(chunk).map_err(|e| session.describe(e))?
            }
            ToReceiver::End {
                end,
                complete_epoch,
            } => {
                if complete_epoch.is_some_and(|e| e != attempt_epoch) {
                    return Err(format!(
                        "asked to complete at epoch {complete_epoch:?} in a session for epoch {attempt_epoch}"
                    ));
                }
                let outcome = round
                    .finish(&end, complete_epoch)
                    .map_err(|e| session.describe(e))?;
                return Ok(ToSender::RoundDone {
                    matched: outcome.matched,
                    complete: complete_epoch.is_some_and(|e| outcome.mark.is_complete_at(e)),
                    bytes_written: outcome.stats.bytes_written,
                });
            }
            other => {
                return Err(format!(
                    "unexpected message in a round: {}",
                    message_name(&other)
                ))
            }
        }
    }
}

fn message_name(msg: &ToReceiver) -> &'static str {
    match msg {
        ToReceiver::Hello { .. } => "hello",
        ToReceiver::SummaryPlease => "summary request",
        ToReceiver::Leaves(_) => "leaf request",
        ToReceiver::Begin => "begin",
        ToReceiver::Item(_) => "item",
        ToReceiver::Chunk(_) => "chunk",
        ToReceiver::End { .. } => "end",
        ToReceiver::ReplicaHello { .. } => "replica hello",
    }
}
