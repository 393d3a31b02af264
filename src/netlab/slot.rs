//! Slot claims: which lab owns which `10.214.<slot>.0/24` and `fl-<slot>-…`
//! names. A claim is a file `<slot>.pid` holding its owner's pid, created
//! under an exclusive lock on the directory's `.lock`, so two labs starting
//! at once never take the same slot and never clean one another's slot.
//!
//! A slot whose owner is dead (or whose file is unreadable, as after a
//! crash between create and write), or that has no claim but still has
//! leftovers, is cleaned before it is claimed; one that cannot be cleaned is
//! skipped and named in the error if no slot is free.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the claims live; `/run` goes with a reboot, as namespaces do.
pub const CLAIM_DIR: &str = "/run/flocker-netlab";

/// Slots 1..=250: the third octet of the subnet.
pub const MAX_SLOT: u8 = 250;

/// A directory of slot claims.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    dir: PathBuf,
    max: u8,
}

impl Claims {
    pub(crate) fn new(dir: impl Into<PathBuf>, max: u8) -> Claims {
        Claims {
            dir: dir.into(),
            max,
        }
    }

    pub(crate) fn file(&self, n: u8) -> PathBuf {
        self.dir.join(format!("{n}.pid"))
    }

    /// Claims the lowest free slot for this process. `leftovers(n)` says
    /// whether an unclaimed slot still has anything of a lab; `clean(n)`
    /// removes everything of slot `n`.
    pub(crate) fn claim(
        &self,
        leftovers: impl Fn(u8) -> bool,
        mut clean: impl FnMut(u8) -> Result<()>,
    ) -> Result<u8> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Held while a dead owner's slot is cleaned too: a second starter
        // reading the same stale claim would otherwise clean a slot the
        // first one has just taken.
        let _lock = DirLock::acquire(&self.dir.join(".lock"))?;
        let mut unusable = Vec::new();
        for n in 1..=self.max {
            let file = self.file(n);
            let stale = match std::fs::read_to_string(&file) {
                Ok(text) => {
                    if text.trim().parse::<u32>().is_ok_and(process_alive) {
                        continue;
                    }
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => leftovers(n),
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            if stale {
                if let Err(e) = clean(n) {
                    unusable.push(format!("slot {n}: {e:#}"));
                    continue;
                }
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", file.display()))
                    }
                }
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            writeln!(f, "{}", std::process::id())
                .with_context(|| format!("writing {}", file.display()))?;
            return Ok(n);
        }
        if unusable.is_empty() {
            bail!(
                "no free network lab slot in {} (1..={} all held by live processes)",
                self.dir.display(),
                self.max
            )
        }
        bail!(
            "no free network lab slot in {}; slots left by dead labs could not be cleaned: {}",
            self.dir.display(),
            unusable.join("; ")
        )
    }

    /// Gives slot `n` up (after its teardown succeeded).
    pub(crate) fn release(&self, n: u8) -> Result<()> {
        let file = self.file(n);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
}

/// An exclusive `flock` on a file, released when dropped (the file closes).
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(path: &Path) -> Result<DirLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(DirLock { _file: file })
    }
}

/// Whether `pid` runs: a zombie (exited, not yet reaped) does not.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')', as comm may hold one.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A pid that was just reaped, so no process has it (barring reuse).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn live_owners_are_kept_and_dead_ones_cleaned_before_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path(), 6);
        let me = std::process::id();
        std::fs::write(claims.file(1), format!("{me}\n")).unwrap();
        std::fs::write(claims.file(2), format!("{}\n", dead_pid())).unwrap();
        let cleaned = RefCell::new(Vec::new());
        let clean = |n| {
            cleaned.borrow_mut().push(n);
            Ok(())
        };

        // Slot 1's owner (this process) lives; slot 2's is dead.
        assert_eq!(claims.claim(|_| false, clean).unwrap(), 2);
        assert_eq!(*cleaned.borrow(), [2]);
        assert_eq!(
            std::fs::read_to_string(claims.file(2)).unwrap().trim(),
            me.to_string()
        );

        // An unclaimed slot with leftovers is cleaned; one without is not.
        assert_eq!(claims.claim(|n| n == 3, clean).unwrap(), 3);
        assert_eq!(claims.claim(|_| false, clean).unwrap(), 4);
        assert_eq!(*cleaned.borrow(), [2, 3]);

        // A claim cut short by a crash (empty file) counts as dead.
        std::fs::write(claims.file(5), "").unwrap();
        assert_eq!(claims.claim(|_| false, clean).unwrap(), 5);
        assert_eq!(*cleaned.borrow(), [2, 3, 5]);

        claims.release(3).unwrap();
        assert!(!claims.file(3).exists());
        claims.release(3).unwrap();
        assert_eq!(claims.claim(|_| false, clean).unwrap(), 3);
    }

    #[test]
    fn a_slot_that_cannot_be_cleaned_is_skipped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path(), 2);
        std::fs::write(claims.file(1), format!("{}\n", dead_pid())).unwrap();
        let busy = |n: u8| {
            if n == 1 {
                bail!("device busy")
            }
            Ok(())
        };
        assert_eq!(claims.claim(|_| false, busy).unwrap(), 2);
        // Slot 1 keeps its stale claim, to be tried again later.
        assert!(claims.file(1).exists());
        let e = claims.claim(|_| false, busy).unwrap_err().to_string();
        assert!(e.contains("slot 1: device busy"), "{e}");
    }

    #[test]
    fn full_directories_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path(), 1);
        assert_eq!(claims.claim(|_| false, |_| Ok(())).unwrap(), 1);
        let e = claims.claim(|_| false, |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("all held by live processes"), "{e}");
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_one_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(dead_pid()));
        assert!(!process_alive(u32::MAX));
    }
}
