//! The source's side of one volume stream: opens a session with the
//! destination and sends rounds over it.
//!
//! A round is prepared by scanning this node's copy (the hash cache makes
//! that cost what changed) and computing the delta against what the
//! destination holds: learned from its summary on the session's first round,
//! and afterwards known, because the destination's copy is exactly what the
//! last round made it. Chunks are read on a blocking thread and handed over
//! through a bounded channel; the stream writes them under the rate limit.

use super::endpoint::RateLimit;
use super::protocol::{ToReceiver, ToSender, MAX_VOLUME_FRAME};
use crate::net::frame::{read_frame, write_frame};
use crate::net::{Net, Service};
use crate::volume::wire::Chunk;
use crate::volume::{
    Delta, DeltaStats, Limits, Manifest, ScanReport, Scanner, Summary, SummaryBuilder,
};
use quinn::{RecvStream, SendStream};
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// Chunks (≤ 1 MiB each) read ahead of the stream.
const READ_AHEAD: usize = 8;
/// How long a failed write waits for the destination's reason (a refusal
/// sent just before it stopped the stream), and how many frames it reads.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const REFUSAL_FRAMES: usize = 4;

pub struct SenderSession {
    send: SendStream,
    recv: RecvStream,
    /// Taken while a blocking scan runs.
    scanner: Option<Scanner>,
    /// What the destination's copy holds, when known from this session.
    have: Option<Manifest>,
    limit: RateLimit,
}

/// A round ready to send.
pub struct Prepared {
    want: Manifest,
    delta: Delta,
    /// What the scan had to read: files whose stat key changed, or changed
    /// too recently to trust (`volume::cache`'s racy window).
    pub scan: ScanReport,
}

impl Prepared {
    pub fn stats(&self) -> DeltaStats {
        self.delta.stats()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RoundResult {
    pub matched: bool,
    pub complete: bool,
    /// Chunk data bytes sent.
    pub bytes: u64,
}

impl SenderSession {
    /// Opens a session on a new stream to the destination `to` at `addr`.
    pub async fn open(
        net: &Net,
        addr: SocketAddr,
        to: &str,
        app: &str,
        epoch: u64,
        scanner: Scanner,
        rate_limit: u64,
    ) -> Result<SenderSession, String> {
        let hello = ToReceiver::Hello {
            app: app.to_string(),
            epoch,
        };
        Self::open_with(net, addr, to, hello, scanner, rate_limit).await
    }

    /// Opens a session that starts with `hello` (a move's or a replica's).
    pub async fn open_with(
        net: &Net,
        addr: SocketAddr,
        to: &str,
        hello: ToReceiver,
        scanner: Scanner,
        rate_limit: u64,
    ) -> Result<SenderSession, String> {
        let (mut send, recv) = net
            .open(addr, Some(to))
            .await
            .map_err(|e| format!("volume endpoint of {to}: {e}"))?;
        send.write_all(&[Service::Volume as u8])
            .await
            .map_err(|e| format!("writing to {to}: {e}"))?;
        let mut session = SenderSession {
            send,
            recv,
            scanner: Some(scanner),
            have: None,
            limit: RateLimit::new(rate_limit),
        };
        session.write(&hello).await?;
        match session.read().await? {
            ToSender::Ready => Ok(session),
            other => Err(unexpected(other)),
        }
    }

    async fn write(&mut self, msg: &ToReceiver) -> Result<(), String> {
        match write_frame(&mut self.send, msg, MAX_VOLUME_FRAME).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.reason_for(format!("sending: {e}")).await),
        }
    }

    /// A write failed. A destination that refuses a round (a bad message,
    /// its disk's reserve) says why and stops the stream, usually while
    /// this side is still writing: its reason, not "stopped by peer", is
    /// what the operator must see in `ctl status`.
    async fn reason_for(&mut self, failed: String) -> String {
        let recv = &mut self.recv;
        let refusal = tokio::time::timeout(REFUSAL_WAIT, async move {
            for _ in 0..REFUSAL_FRAMES {
                match read_frame::<_, ToSender>(recv, MAX_VOLUME_FRAME).await {
                    Ok(ToSender::Refused(why)) => return Some(why),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
            None
        })
        .await;
        match refusal {
            Ok(Some(why)) => format!("the destination refused: {why}"),
            _ => failed,
        }
    }

    async fn read(&mut self) -> Result<ToSender, String> {
        match read_frame(&mut self.recv, MAX_VOLUME_FRAME).await {
            Ok(ToSender::Refused(why)) => Err(format!("the destination refused: {why}")),
            Ok(msg) => Ok(msg),
            Err(e) => Err(format!("receiving: {e}")),
        }
    }

    /// Scans this copy and computes what the destination lacks.
    pub async fn prepare(&mut self) -> Result<Prepared, String> {
        let mut scanner = self.scanner.take().expect("one round at a time");
        let (scanner, scanned) = tokio::task::spawn_blocking(move || {
            let scanned = scanner.scan();
            (scanner, scanned)
        })
        .await
        .map_err(|e| format!("scan task: {e}"))?;
        self.scanner = Some(scanner);
        let (want, scan) = scanned.map_err(|e| format!("scanning the volume: {e}"))?;
        let have = match &self.have {
            Some(have) => Summary::from_manifest(have),
            None => self.fetch_summary(&want).await?,
        };
        let (want, delta) = tokio::task::spawn_blocking(move || {
            let delta = Delta::compute(&have, &want);
            (want, delta)
        })
        .await
        .map_err(|e| format!("delta task: {e}"))?;
        let delta = delta.map_err(|e| format!("computing the delta: {e}"))?;
        Ok(Prepared { want, delta, scan })
    }

    async fn fetch_summary(&mut self, want: &Manifest) -> Result<Summary, String> {
        self.write(&ToReceiver::SummaryPlease).await?;
        let mut builder = SummaryBuilder::new(Limits::default());
        loop {
            match self.read().await? {
                ToSender::Summary(item) => builder
                    .push(item)
                    .map_err(|e| format!("the destination's summary: {e}"))?,
                ToSender::SummaryEnd => break,
                other => return Err(unexpected(other)),
            }
        }
        let mut summary = builder
            .finish()
            .map_err(|e| format!("the destination's summary: {e}"))?;
        let requests = summary.leaf_requests(want);
        // One at a time: each reply is checked against its request.
        for req in requests {
            self.write(&ToReceiver::Leaves(req.clone())).await?;
            match self.read().await? {
                ToSender::Leaves(reply) => summary
                    .add_leaves(&req, reply)
                    .map_err(|e| format!("the destination's block hashes: {e}"))?,
                other => return Err(unexpected(other)),
            }
        }
        Ok(summary)
    }

    /// Sends a prepared round; `complete_epoch` only for the final one.
    /// `progress` hears the chunk bytes sent so far.
    pub async fn send_round(
        &mut self,
        prepared: Prepared,
        complete_epoch: Option<u64>,
        mut progress: impl FnMut(u64),
    ) -> Result<RoundResult, String> {
        let Prepared { want, delta, .. } = prepared;
        // Until the round ends well, the destination's copy is unknown.
        self.have = None;
        self.write(&ToReceiver::Begin).await?;
        for item in delta.items() {
            self.write(&ToReceiver::Item(item)).await?;
        }
        let data_dir = self
            .scanner
            .as_ref()
            .expect("no scan runs now")
            .data_dir()
            .to_path_buf();
        let (tx, mut rx) = mpsc::channel::<Chunk>(READ_AHEAD);
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = delta.chunks(&data_dir, &want);
            for chunk in &mut reader {
                let chunk = chunk.map_err(|e| format!("reading the volume: {e}"))?;
                if tx.blocking_send(chunk).is_err() {
                    return Err("the stream went away".to_string());
                }
            }
            reader
                .finish()
                .map_err(|e| format!("reading the volume: {e}"))
        });
        let mut bytes = 0u64;
        while let Some(chunk) = rx.recv().await {
            let len = data_len(&chunk);
            self.limit.take(len).await;
            if let Err(e) = self.write(&ToReceiver::Chunk(chunk)).await {
                // Stop the reader before reporting.
                drop(rx);
                let _ = reading.await;
                return Err(e);
            }
            bytes += len;
            crate::metrics::get().volume_sent_bytes_total.inc_by(len);
            progress(bytes);
        }
        let (expected, end) = reading.await.map_err(|e| format!("read task: {e}"))??;
        self.write(&ToReceiver::End {
            end,
            complete_epoch,
        })
        .await?;
        match self.read().await? {
            ToSender::RoundDone {
                matched, complete, ..
            } => {
                if matched {
                    self.have = Some(expected);
                }
                Ok(RoundResult {
                    matched,
                    complete,
                    bytes,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Saves the hash cache (off the critical path) and ends the stream.
    pub async fn close(mut self) {
        if let Some(scanner) = self.scanner.take() {
            let _ = tokio::task::spawn_blocking(move || scanner.save()).await;
        }
        let _ = self.send.finish();
    }
}

/// The bytes of data a chunk carries (a zero run carries none).
fn data_len(chunk: &Chunk) -> u64 {
    match chunk {
        Chunk::Data(c) => c.bytes.len() as u64,
        Chunk::Zero(_) => 0,
    }
}

fn unexpected(msg: ToSender) -> String {
    let name = match msg {
        ToSender::Ready => "ready",
        ToSender::Summary(_) => "summary",
        ToSender::SummaryEnd => "summary end",
        ToSender::Leaves(_) => "block hashes",
        ToSender::RoundDone { .. } => "round done",
        ToSender::Refused(_) => "refusal",
    };
    format!("unexpected {name} from the destination")
}
