//! Framing: every message is a 4-byte big-endian length, then a version byte,
//! then a postcard body. Frames above the caller's limit are refused before a
//! byte of their body is read, and decoding never panics.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The envelope version of every frame this build writes. A frame with
/// another version is refused by name rather than misread.
pub const FRAME_VERSION: u8 = 1;

/// Largest client API frame (requests and replies): deployments are big YAML
/// documents, but nothing an operator sends needs more.
pub const MAX_CLIENT_FRAME: usize = 4 << 20;

/// Largest Raft frame: a batch of entries or one snapshot chunk.
pub const MAX_RAFT_FRAME: usize = 32 << 20;

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
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(truncated)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(truncated)?;
    decode(&body)
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
}
