//! The docker CLI as the benchmarks' independent view of the engine (and the
//! way to drive Swarm and plain `docker run` anchors).

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs `docker args…` and returns its standard output.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Force-removes every container matching a `docker ps --filter` expression.
pub fn remove_matching(filters: &[&str]) -> Result<()> {
    let mut args = vec!["ps", "-aq"];
    for f in filters {
        args.extend(["--filter", f]);
    }
    let ids: Vec<String> = docker(&args)?.lines().map(str::to_string).collect();
    if !ids.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.iter().map(String::as_str));
        docker(&rm)?;
    }
    Ok(())
}
