//! The snapshot file `ctl snapshot save` writes and `flocker recover
//! --from-snapshot` reads: a header line, a JSON line describing the state
//! (log position, length, BLAKE3 checksum), then the encoded state.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &str = "FLOCKER-SNAPSHOT 1\n";

/// What the second line says about the state that follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The log position the state reflects.
    pub index: u64,
    pub term: u64,
    /// The cluster it came from (a digest of its CA certificate).
    pub cluster: String,
    pub bytes: usize,
    /// BLAKE3 of the state bytes, hex.
    pub blake3: String,
}

/// Writes a snapshot file atomically (temporary file, fsync, rename).
pub fn write_snapshot(
    path: &Path,
    index: u64,
    term: u64,
    cluster: &str,
    state: &[u8],
) -> Result<()> {
    let header = SnapshotHeader {
        index,
        term,
        cluster: cluster.to_string(),
        bytes: state.len(),
        blake3: blake3::hash(state).to_hex().to_string(),
    };
    let mut bytes = MAGIC.as_bytes().to_vec();
    serde_json::to_writer(&mut bytes, &header)?;
    bytes.push(b'\n');
    bytes.extend_from_slice(state);
    let tmp = path.with_extension("partial");
    {
        use std::io::Write;
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads and verifies a snapshot file: its header and the state bytes.
pub fn read_snapshot(path: &Path) -> Result<(SnapshotHeader, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
        bail!("{} is not a flocker snapshot file", path.display());
    };
    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
        bail!("{}: the header line is cut short", path.display());
    };
    let header: SnapshotHeader = serde_json::from_slice(&rest[..end])
        .with_context(|| format!("{}: unreadable header", path.display()))?;
    let state = &rest[end + 1..];
    if state.len() != header.bytes {
        bail!(
            "{}: {} bytes of state, the header says {}",
            path.display(),
            state.len(),
            header.bytes
        );
    }
    if blake3::hash(state).to_hex().as_str() != header.blake3 {
        bail!("{}: checksum mismatch, the file is damaged", path.display());
    }
    Ok((header, state.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_file_round_trips_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        write_snapshot(&path, 42, 3, "abc", b"state bytes").unwrap();
        let (header, state) = read_snapshot(&path).unwrap();
        assert_eq!(
            (header.index, header.term, state.as_slice()),
            (42, 3, &b"state bytes"[..])
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_snapshot(&path)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
