//! A volume's `maximum_size`, enforced where the backend can: on btrfs a
//! volume is a subvolume, and a quota group bounds the bytes it references
//! (writes past it fail with EDQUOT, in the app as for anyone). Plain
//! directories on ext4 or xfs could be bounded only by project quotas,
//! which need a mount option hosts rarely have; there the size is measured
//! and reported (`agent::usage`).

use super::{btrfs, copy, Backend, BackendKind};
use std::path::Path;

/// What became of a volume's `maximum_size` here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeLimit {
    /// Writes past it fail.
    Enforced,
    /// Only measured and reported, for the reason given.
    Reported(String),
}

impl Backend {
    /// Sets (or with `None` lifts) the bound on the volume whose data is
    /// `data`. Blocking; cheap to repeat (quota groups are turned on for
    /// the file system once).
    pub fn limit_volume(&self, data: &Path, max: Option<u64>) -> SizeLimit {
        if self.kind != BackendKind::Btrfs {
            return SizeLimit::Reported(format!(
                "the {} backend has no per-volume quota",
                self.kind
            ));
        }
        match copy::lstat(data) {
            Ok(m) if btrfs::is_subvolume(&m) => {}
            Ok(_) => {
                return SizeLimit::Reported(
                    "this volume is a plain directory (made before the btrfs backend)".into(),
                )
            }
            Err(e) => return SizeLimit::Reported(e.to_string()),
        }
        let enabled = self
            .quota
            .get_or_init(|| btrfs::enable_quota(&self.root).map_err(|e| e.to_string()));
        if let Err(why) = enabled {
            return SizeLimit::Reported(format!(
                "btrfs quota groups could not be turned on: {why}"
            ));
        }
        match btrfs::limit_referenced(data, max) {
            Ok(()) => SizeLimit::Enforced,
            Err(e) => SizeLimit::Reported(format!("setting the btrfs quota: {e}")),
        }
    }
}
