//! The fence inside each fenceable container (invariant 3 when the `flocker`
//! process itself dies or is paused while Docker keeps running containers).
//!
//! Such a container runs the app under a tiny init — a shell script run by a
//! static busybox bind-mounted read-only at `/.flocker` — that kills the app
//! once the deadline in `/.flocker/lease` has passed. The node rewrites that
//! deadline on every lease renewal; if nothing renews it (the process died or
//! stopped), the app stops by itself within the lease, before the leader's
//! grace lets it start elsewhere. The deadline is in centiseconds since boot
//! (`/proc/uptime`), rounded down, so the fence is never later than the
//! node's own lease, and no step of the wall clock moves it.

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where the fence directory appears inside containers: the mountpoint
/// configurations may not use.
pub const FENCE_MOUNT: &str = crate::config::RESERVED_MOUNT;
/// The static busybox the fence runs on (Debian's `busybox-static`); images
/// need no shell of their own.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The exit code of a fenced container whose app never started: its node's
/// lease had run out when Docker started it (a start issued just before the
/// node lost its lease or was paused).
pub const FENCED_BEFORE_START: i64 = 75;

/// The container entrypoint that wraps the app's command.
pub fn fence_entrypoint() -> Vec<String> {
    vec![
        format!("{FENCE_MOUNT}/busybox"),
        "sh".into(),
        format!("{FENCE_MOUNT}/fence"),
    ]
}

/// Only busybox applets by full path: the image may have no tools at all.
const FENCE_SCRIPT: &str = r#"# flocker fence: runs the app; kills it when the node's lease runs out.
bb=/.flocker/busybox
expired() {
  deadline=$($bb cat /.flocker/lease 2>/dev/null || echo 0)
  # Centiseconds since boot: the host's one clock that no time step moves.
  read -r up _ < /proc/uptime
  [ "${up%.*}${up#*.}" -ge "${deadline:-0}" ]
}
# A start the node asked for before it lost its lease (or before it was
# paused) must not run the app: check before starting it.
if expired; then
  echo "flocker fence: this node's lease had run out; the app was not started" >&2
  exit 75
fi
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while kill -0 "$child" 2>/dev/null; do
  if expired; then
    kill -KILL "$child" 2>/dev/null
    echo "flocker fence: this node's lease ran out; the app was stopped" >&2
    exit 137
  fi
  $bb sleep 0.2
done
wait "$child"
"#;

/// Fills the node's fence directory: busybox, the script, an expired lease.
pub fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let busybox = dir.join("busybox");
    std::fs::copy(HOST_BUSYBOX, &busybox).with_context(|| {
        format!("copying {HOST_BUSYBOX} for the container fence (apt-get install busybox-static)")
    })?;
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755))?;
    write_atomically(&dir.join("fence"), FENCE_SCRIPT.as_bytes())?;
    write_lease(dir, 0)
}

/// Publishes the lease deadline to every fenced container, in centiseconds
/// of `/proc/uptime` (time since boot, shared by every container on the
/// host and never stepped: a wall-clock jump must not delay a fence).
pub fn write_lease(dir: &Path, deadline_uptime_cs: u64) -> Result<()> {
    write_atomically(
        &dir.join("lease"),
        format!("{deadline_uptime_cs}\n").as_bytes(),
    )
}

/// Now, in centiseconds of `/proc/uptime`, as the fence script reads it.
pub fn uptime_cs() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/uptime").context("reading /proc/uptime")?;
    parse_uptime_cs(&text).with_context(|| format!("/proc/uptime says '{}'", text.trim()))
}

fn parse_uptime_cs(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.')?;
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(secs.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

/// Readers see the old or the new file, never half of one.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_as_centiseconds() {
        assert_eq!(parse_uptime_cs("12345.67 98765.43\n"), Some(1_234_567));
        assert_eq!(parse_uptime_cs("0.05 1.00"), Some(5));
        assert_eq!(parse_uptime_cs("garbage"), None);
        assert!(uptime_cs().unwrap() > 0);
    }
}
