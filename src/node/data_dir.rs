//! The node's data directory and who may read it. `raft/` holds the Raft log
//! and snapshots, and with them every deployed environment value (passwords
//! included); `volumes/` holds the apps' data. Both are private to the user
//! the node runs as (mode 0700), created so and tightened at every start if
//! someone widened them, with a log line saying so. The data directory itself
//! is made 0700 too, unless it holds entries that are not the node's (an
//! operator who points `--data-dir` at a shared directory such as `/var/lib`
//! must not find it locked): `raft/` and `volumes/` protect the data either
//! way. A directory every user may write to (`/tmp`) is refused, since anyone
//! could replace `raft/` in it.
//!
//! Containers are unaffected: the agent bind-mounts `volumes/<app>/data` and
//! `fence/`, and a bind mount is reached without walking its parents.
//!
//! Also here: the start-up check of free space against `--reserve`.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory, `raft/` and `volumes/`.
pub const PRIVATE_MODE: u32 = 0o700;
/// What the node itself creates directly in its data directory.
const OWN_ENTRIES: &[&str] = &["raft", "volumes", "fence", "replicas", "points"];
/// Entries looked at before deciding the data directory is shared.
const ENTRIES_CHECKED: usize = 64;

/// Creates the data directory, `raft/` and `volumes/` private, and makes
/// existing ones private. Errors when a directory cannot be made private.
pub fn prepare(data_dir: &Path) -> Result<()> {
    create_private(data_dir)?;
    let meta = std::fs::metadata(data_dir)
        .with_context(|| format!("--data-dir {}", data_dir.display()))?;
    if !meta.is_dir() {
        bail!("--data-dir {} is not a directory", data_dir.display());
    }
    if meta.mode() & 0o002 != 0 {
        bail!(
            "--data-dir {} may be written by every user (mode {:04o}), so anyone could replace the Raft log in it: give the node a directory of its own, e.g. /var/lib/flocker",
            data_dir.display(),
            meta.mode() & 0o7777
        );
    }
    match foreign_entry(data_dir)? {
        None => tighten(data_dir)?,
        Some(other) => tracing::warn!(
            data_dir = %data_dir.display(),
            "the data directory also holds {other}, which the node did not create: its mode ({:04o}) is left alone; raft/ and volumes/ are private",
            meta.mode() & 0o7777
        ),
    }
    for sub in ["raft", "volumes"] {
        let dir = data_dir.join(sub);
        create_private(&dir)?;
        tighten(&dir)?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, each made durable
/// with its parent's fsync (a power cut must not lose `raft/` under a log
/// RocksDB fsynced); nothing if it exists.
fn create_private(dir: &Path) -> Result<()> {
    crate::durable::create_dir_all(dir, PRIVATE_MODE)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Sets `dir` to 0700 if group or others have any access, saying so.
fn tighten(dir: &Path) -> Result<()> {
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading the mode of {}", dir.display()))?
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_MODE))
        .with_context(|| format!("making {} private (mode 0700)", dir.display()))?;
    tracing::warn!(
        dir = %dir.display(),
        "tightened {} from mode {mode:04o} to {PRIVATE_MODE:04o}: it holds the cluster's state and other users must not read it",
        dir.display()
    );
    Ok(())
}

/// The first entry of `data_dir` the node did not create, if any.
fn foreign_entry(data_dir: &Path) -> Result<Option<String>> {
    let listing =
        std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?;
    for entry in listing.take(ENTRIES_CHECKED) {
        let entry = entry.with_context(|| format!("reading {}", data_dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !OWN_ENTRIES.contains(&name.as_ref()) {
            return Ok(Some(format!("'{name}'")));
        }
    }
    Ok(None)
}

/// Logs a warning when the data directory's file system already has less
/// available than `reserve`: volumes will not be received here until space
/// is freed. Returns whether it warned.
pub fn warn_if_below_reserve(data_dir: &Path, reserve: u64) -> bool {
    if reserve == 0 {
        return false;
    }
    match crate::volume::available_bytes(data_dir) {
        Ok(available) if available < reserve => {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "free space is below the reserve: {} available on the data directory's file system, reserve {} (--reserve); this node refuses to receive volumes until space is freed, and Raft needs room for its log",
                crate::volume::human_bytes(available),
                crate::volume::human_bytes(reserve),
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(data_dir = %data_dir.display(), "cannot read free space: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_directories_are_private_and_wide_ones_are_tightened() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("a/data");
        prepare(&data).unwrap();
        for dir in [&data, &data.join("raft"), &data.join("volumes")] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        for dir in [&data, &data.join("raft"), &data.join("volumes")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(data.join("fence")).unwrap();
        prepare(&data).unwrap();
        for dir in [&data, &data.join("raft"), &data.join("volumes")] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn a_shared_data_directory_keeps_its_mode_and_a_world_writable_one_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(shared.join("someone-elses"), "x").unwrap();
        prepare(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&shared.join("raft")), 0o700);
        assert_eq!(mode(&shared.join("volumes")), 0o700);

        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare(&open).unwrap_err().to_string();
        assert!(err.contains("may be written by every user"), "{err}");
        assert!(!open.join("raft").exists());
    }
}
