//! The fence inside each fenceable container (invariant 3 when the `flocker`
//! process itself dies or is paused while Docker keeps running containers).
//!
//! Such a container runs the app under a tiny init — a shell script run by a
//! static busybox bind-mounted read-only at `/.flocker` — that kills the app
//! once the deadline in `/.flocker/lease` has passed. The node rewrites that
//! deadline on every lease renewal; if nothing renews it (the process died or
//! stopped), the app stops by itself within the lease, before the leader's
//! grace lets it start elsewhere. The deadline is whole seconds rounded down,
//! so the fence is never later than the node's own lease.

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where the fence directory appears inside containers.
pub const FENCE_MOUNT: &str = "/.flocker";
/// The static busybox the fence runs on (Debian's `busybox-static`); images
/// need no shell of their own.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

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
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while kill -0 "$child" 2>/dev/null; do
  deadline=$($bb cat /.flocker/lease 2>/dev/null || echo 0)
  if [ "$($bb date +%s)" -ge "${deadline:-0}" ]; then
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

/// Publishes the lease deadline (Unix seconds) to every fenced container.
pub fn write_lease(dir: &Path, deadline_unix_secs: u64) -> Result<()> {
    write_atomically(
        &dir.join("lease"),
        format!("{deadline_unix_secs}\n").as_bytes(),
    )
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
