//! Framing: every message is a 4-byte big-endian length, then a version byte,
//! then a postcard body. Frames above the caller's limit are refused before a
//! byte of their body is read, bodies are read as their bytes arrive (a
//! declared length costs no memory until the bytes come), and decoding never
//! panics.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The envelope version of every frame this build writes. A frame with
/// another version is refused by name rather than misread.
pub const FRAME_VERSION: u8 = 1;

/// Largest client API frame (requests and replies): deployments are big YAML
/// documents, but nothing an operator sends needs more.
pub const MAX_CLIENT_FRAME: usize = 4 << 20;

/// Largest Raft frame: a batch of entries or one snapshot chunk (chunks are
/// 1 MiB, `snapshot_max_chunk_size`; entry batches are what may get big).
pub const MAX_RAFT_FRAME: usize = 32 << 20;

/// Largest node-to-node peer request (`PeerRequest`: status, read index,
/// join, heartbeat): each is a few bytes plus at most an address, so 64 KiB
/// leaves room to grow while a node's slot costs little. Peer replies
/// (observed containers) may be larger and use [`MAX_CLIENT_FRAME`].
pub const MAX_PEER_REQUEST: usize = 64 << 10;

/// The most one read step of a frame body takes in. Steps start at
/// [`FIRST_STEP`] and grow with what arrived, and the buffer grows with
/// them (at most doubling), never to the declared length up front: a
/// stream that sent a few bytes of a huge frame holds a few KiB.
pub const READ_STEP: usize = 64 << 10;
pub const FIRST_STEP: usize = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("frame version {0} is not supported (this build speaks version {FRAME_VERSION})")]
    BadVersion(u8),
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    #[error("stream ended before a whole frame arrived")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame body (version byte + postcard).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut body = vec![FRAME_VERSION];
    // postcard only fails to serialize on types it cannot represent (maps
    // with non-string keys are fine); our message types are all representable.
    postcard::to_io(msg, &mut body).expect("message types are postcard-serializable");
    body
}

/// Decodes one frame body written by [`encode`].
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&version, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    postcard::from_bytes(rest).map_err(FrameError::Decode)
}

pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = encode(msg);
    if body.len() > max {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max,
        });
    }
    write_encoded(w, &body).await
}

/// Writes a body made by [`encode`] whose size the caller has checked.
pub async fn write_encoded<W>(w: &mut W, body: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    Ok(())
}

pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut frame = PartialFrame::start(r, max).await?;
    while !frame.is_complete() {
        frame.read_more(r).await?;
    }
    decode(&frame.into_body())
}

/// A frame whose length is known and whose body is arriving: it holds only
/// the bytes that came, so a peer that declares 32 MiB and sends nothing
/// costs a few bytes. Callers that must bound time or memory per step
/// (the endpoint's request reader) drive it with [`PartialFrame::read_more`].
#[derive(Debug)]
pub struct PartialFrame {
    declared: usize,
    body: Vec<u8>,
}

impl PartialFrame {
    /// Reads the length prefix and refuses a frame above `max`.
    pub async fn start<R: AsyncRead + Unpin>(
        r: &mut R,
        max: usize,
    ) -> Result<PartialFrame, FrameError> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.map_err(truncated)?;
        let declared = u32::from_be_bytes(len) as usize;
        if declared > max {
            return Err(FrameError::TooLarge { len: declared, max });
        }
        Ok(PartialFrame {
            declared,
            body: Vec::new(),
        })
    }

    /// The body length the peer announced.
    pub fn declared(&self) -> usize {
        self.declared
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }

    /// Bytes this frame holds in memory now (its buffer's capacity).
    pub fn allocated(&self) -> usize {
        self.body.capacity()
    }

    pub fn is_complete(&self) -> bool {
        self.body.len() == self.declared
    }

    /// The size of the next [`PartialFrame::read_more`] step at most: as
    /// much as arrived so far, between [`FIRST_STEP`] and [`READ_STEP`].
    pub fn next_step(&self) -> usize {
        let remaining = self.declared - self.body.len();
        remaining.min(self.body.len().clamp(FIRST_STEP, READ_STEP))
    }

    /// One read of at most [`PartialFrame::next_step`] bytes; returns how
    /// many came.
    /// The stream ending before the declared length is `Truncated`.
    pub async fn read_more<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<usize, FrameError> {
        let mut step = self.next_step();
        if step == 0 {
            return Ok(0);
        }
        let have = self.body.len();
        let spare = self.body.capacity() - have;
        if spare > 0 {
            // Fill what is there before growing: the buffer grows only
            // once bytes have filled it.
            step = step.min(spare);
        } else {
            // Amortised doubling, capped at the declared length: the buffer
            // is never more than twice what arrived, plus one first step.
            let target = (have + step)
                .max(self.body.capacity() * 2)
                .min(self.declared);
            self.body.reserve_exact(target - have);
        }
        // `read_buf` fills spare capacity and only then counts the bytes
        // as part of the body, so a read cancelled by a timeout leaves the
        // frame as it was.
        let n = (&mut *r)
            .take(step as u64)
            .read_buf(&mut self.body)
            .await
            .map_err(truncated)?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
        Ok(n)
    }

    /// Decodes the complete body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        if !self.is_complete() {
            return Err(FrameError::Truncated);
        }
        decode(&self.body)
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

fn truncated(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &("hello".to_string(), 7u64), 1024)
            .await
            .unwrap();
        let back: (String, u64) = read_frame(&mut buf.as_slice(), 1024).await.unwrap();
        assert_eq!(back, ("hello".to_string(), 7));

        // A reader with a smaller limit refuses before reading the body.
        let err = read_frame::<_, (String, u64)>(&mut buf.as_slice(), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 4, .. }), "{err}");

        // A writer refuses to produce an oversize frame.
        let big = vec![0u8; 100];
        assert!(write_frame(&mut Vec::new(), &big, 50).await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let bad_version = [0, 0, 0, 2, 9, 1];
        let err = read_frame::<_, u64>(&mut &bad_version[..], 64)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::BadVersion(9)), "{err}");

        let truncated = [0, 0, 0, 10, 1, 1];
        let err = read_frame::<_, u64>(&mut &truncated[..], 64)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");

        let undecodable = [0, 0, 0, 3, FRAME_VERSION, 0xff, 0xff];
        let err = read_frame::<_, String>(&mut &undecodable[..], 64)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    #[tokio::test]
    async fn a_declared_length_costs_nothing_until_its_bytes_arrive() {
        // 32 MiB announced, 100 bytes sent, then the stream ends.
        let mut wire = (MAX_RAFT_FRAME as u32).to_be_bytes().to_vec();
        wire.push(FRAME_VERSION);
        wire.extend_from_slice(&[7u8; 99]);
        let mut r = wire.as_slice();
        let mut frame = PartialFrame::start(&mut r, MAX_RAFT_FRAME).await.unwrap();
        assert_eq!(frame.declared(), MAX_RAFT_FRAME);
        assert_eq!(
            frame.allocated(),
            0,
            "nothing is allocated for a bare length"
        );
        let err = loop {
            match frame.read_more(&mut r).await {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, FrameError::Truncated), "{err}");
        assert_eq!(frame.received(), 100);
        assert!(
            frame.allocated() <= FIRST_STEP,
            "{} bytes allocated for 100 received",
            frame.allocated()
        );

        // And through read_frame: the same refusal, no 32 MiB buffer.
        let err = read_frame::<_, Vec<u8>>(&mut wire.as_slice(), MAX_RAFT_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn a_large_frame_arrives_whole_with_a_buffer_near_its_size() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        write_frame(&mut wire, &big, MAX_RAFT_FRAME).await.unwrap();
        let mut r = wire.as_slice();
        let mut frame = PartialFrame::start(&mut r, MAX_RAFT_FRAME).await.unwrap();
        while !frame.is_complete() {
            frame.read_more(&mut r).await.unwrap();
        }
        assert_eq!(
            frame.allocated(),
            frame.declared(),
            "capped at the declared length"
        );
        let back: Vec<u8> = frame.decode().unwrap();
        assert_eq!(back, big);
    }
}
