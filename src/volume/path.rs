//! `RelPath`: a path inside a volume's `data` directory, as raw bytes (Linux
//! names need not be UTF-8), valid by construction, including when a peer
//! sends it: no absolute paths, no `.` or `..`, no empty components, no NUL,
//! bounded length. Its order puts a directory right before its whole subtree,
//! which is what deletion and creation order rely on.
//!
//! It does not make a path safe to write through by itself: a valid path can
//! still cross a symlink on disk. [`resolve_beneath`] is the check for that,
//! and every receiver-side write goes through it.

use super::error::{peer, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Longest path accepted, Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// Longest name of one component, Linux's NAME_MAX.
pub const MAX_NAME: usize = 255;

/// A validated relative path; the empty path is the `data` directory itself.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The volume's `data` directory itself.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, String> {
        let bytes = bytes.into();
        check(&bytes)?;
        Ok(RelPath(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The components, none for the root.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        let bytes: &[u8] = &self.0;
        (!bytes.is_empty())
            .then(|| bytes.split(|&b| b == b'/'))
            .into_iter()
            .flatten()
    }

    pub fn join(&self, name: &[u8]) -> Result<RelPath, String> {
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name);
        RelPath::new(bytes)
    }

    /// The parent directory; `None` only for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.iter().rposition(|&b| b == b'/').unwrap_or(0);
        Some(RelPath(self.0[..cut].to_vec()))
    }

    /// Whether `other` lies strictly below `self`.
    pub fn is_ancestor_of(&self, other: &RelPath) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0[self.0.len()] == b'/'
    }

    /// The path below `base`, without any check of what is on disk.
    pub fn under(&self, base: &Path) -> PathBuf {
        if self.is_root() {
            base.to_path_buf()
        } else {
            base.join(OsStr::from_bytes(&self.0))
        }
    }
}

fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    if bytes.len() > MAX_PATH {
        return Err(format!(
            "path of {} bytes exceeds {MAX_PATH}: {shown:?}...",
            bytes.len()
        ));
    }
    if bytes.contains(&0) {
        return Err(format!("path contains NUL: {shown:?}"));
    }
    for c in bytes.split(|&b| b == b'/') {
        if c.is_empty() {
            return Err(format!(
                "path has an empty component (absolute, trailing or double '/'): {shown:?}"
            ));
        }
        if c == b"." || c == b".." {
            return Err(format!("path has a '.' or '..' component: {shown:?}"));
        }
        if c.len() > MAX_NAME {
            return Err(format!("path has a name over {MAX_NAME} bytes: {shown:?}"));
        }
    }
    Ok(())
}

impl TryFrom<Vec<u8>> for RelPath {
    type Error = String;
    fn try_from(bytes: Vec<u8>) -> Result<RelPath, String> {
        RelPath::new(bytes)
    }
}

impl From<RelPath> for Vec<u8> {
    fn from(p: RelPath) -> Vec<u8> {
        p.0
    }
}

/// Component-wise order: "a" < "a/b" < "a-c", so a subtree is contiguous and
/// follows its directory. Consistent with `Eq` because valid paths have no
/// empty components.
impl Ord for RelPath {
    fn cmp(&self, other: &RelPath) -> Ordering {
        self.components().cmp(other.components())
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &RelPath) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            write!(f, "{}", self.0.escape_ascii())
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({self})")
    }
}

/// `rel` below `base`, after checking on disk that `base` and every ancestor
/// of `rel` is a real directory, not a symlink: a peer's paths are valid by
/// type, but the tree they land in may hold a symlink (sent earlier, or left
/// by an older copy) that would carry a write outside the volume. The final
/// component is not checked: callers open it with `O_NOFOLLOW`, or replace it.
///
/// Race-free only because nothing else writes a receiving copy (it is never
/// mounted before its mark is complete).
pub fn resolve_beneath(base: &Path, rel: &RelPath) -> Result<PathBuf> {
    resolve_existing(base, rel)?.ok_or_else(|| {
        peer(format!(
            "a parent of {rel} does not exist in {} (parents come before children)",
            base.display()
        ))
    })
}

/// As [`resolve_beneath`], but `None` when an ancestor does not exist.
pub fn resolve_existing(base: &Path, rel: &RelPath) -> Result<Option<PathBuf>> {
    let mut path = base.to_path_buf();
    if !check_real_dir(&path, base, &RelPath::root())? {
        return Ok(None);
    }
    let count = rel.components().count();
    let mut so_far = RelPath::root();
    for (i, c) in rel.components().enumerate() {
        path.push(OsStr::from_bytes(c));
        if i + 1 == count {
            break;
        }
        so_far = so_far.join(c).map_err(peer)?;
        if !check_real_dir(&path, base, &so_far)? {
            return Ok(None);
        }
    }
    Ok(Some(path))
}

/// `Ok(false)` when `path` does not exist.
fn check_real_dir(path: &Path, base: &Path, rel: &RelPath) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => Err(peer(format!(
            "{rel} in {} is a symlink: refusing to write through it",
            base.display()
        ))),
        Ok(_) => Err(peer(format!(
            "{rel} in {} is not a directory",
            base.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx("lstat", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escaping_and_malformed_paths() {
        for bad in [
            &b"/etc/passwd"[..],
            b"..",
            b"a/../b",
            b"a/./b",
            b"./a",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{:?}", bad.escape_ascii());
            let encoded = postcard::to_allocvec(&bad.to_vec()).unwrap();
            assert!(postcard::from_bytes::<RelPath>(&encoded).is_err());
        }
        assert!(RelPath::new(vec![b'a'; MAX_NAME + 1]).is_err());
        let long: Vec<u8> = std::iter::repeat_n(&b"abcdefg/"[..], 600)
            .flatten()
            .copied()
            .collect();
        assert!(RelPath::new(long).is_err());
        assert!(RelPath::new(&b"a/b c/\xff"[..]).is_ok());
    }

    #[test]
    fn a_subtree_follows_its_directory() {
        let mut v: Vec<RelPath> = ["a-c", "a/b", "a", "", "a/b/c", "b", "a.d"]
            .iter()
            .map(|s| RelPath::new(s.as_bytes()).unwrap())
            .collect();
        v.sort();
        let shown: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, [".", "a", "a/b", "a/b/c", "a-c", "a.d", "b"]);
        let a = RelPath::new(&b"a"[..]).unwrap();
        assert!(a.is_ancestor_of(&v[3]));
        assert!(!a.is_ancestor_of(&v[4]));
        assert!(RelPath::root().is_ancestor_of(&a));
        assert_eq!(v[3].parent().unwrap(), v[2]);
        assert_eq!(a.parent().unwrap(), RelPath::root());
    }

    #[test]
    fn resolve_refuses_symlinked_parents() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("data");
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path(), base.join("link")).unwrap();
        let ok = RelPath::new(&b"real/x"[..]).unwrap();
        assert_eq!(resolve_beneath(&base, &ok).unwrap(), base.join("real/x"));
        let bad = RelPath::new(&b"link/x"[..]).unwrap();
        let err = resolve_beneath(&base, &bad).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        let missing = RelPath::new(&b"nope/x"[..]).unwrap();
        assert!(resolve_beneath(&base, &missing).is_err());
        // The final component itself may be a symlink: callers replace it.
        assert!(resolve_beneath(&base, &RelPath::new(&b"link"[..]).unwrap()).is_ok());
    }
}
