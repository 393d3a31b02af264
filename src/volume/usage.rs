//! How much disk a copy uses: the blocks its files, directories and
//! symlinks have allocated (holes cost nothing), walked without following
//! symlinks. This is what `maximum_size` is compared with; see `usage_loop`
//! in the agent for why it is reported rather than enforced.

use super::error::{IoContext, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Entries walked at most; a larger tree is reported as at least what was
/// counted.
pub const MAX_USAGE_ENTRIES: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk.
    pub bytes: u64,
    pub entries: u64,
    /// The walk stopped at `MAX_USAGE_ENTRIES`.
    pub partial: bool,
}

/// Walks `dir` (a copy's `data` directory).
pub fn usage(dir: &Path) -> Result<Usage> {
    let mut total = Usage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).ctx("read", &d)? {
            let entry = entry.ctx("read", &d)?;
            let path = entry.path();
            // Gone between listing and stat: the app deleted it; not counted.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            total.bytes += meta.blocks() * 512;
            total.entries += 1;
            if total.entries >= MAX_USAGE_ENTRIES {
                total.partial = true;
                return Ok(total);
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_allocated_blocks_not_holes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/full"), vec![7u8; 1 << 20]).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        std::os::unix::fs::symlink("sub/full", dir.path().join("link")).unwrap();
        let u = usage(dir.path()).unwrap();
        assert_eq!(u.entries, 4);
        assert!(u.bytes >= 1 << 20, "{u:?}");
        assert!(u.bytes < 2 << 20, "a 1 GiB hole costs nothing: {u:?}");
    }
}
