//! The planted bugs must be caught, every time: each run starts every node
//! with `--plant-bug NAME`, uses the schedule that exposes that bug, and
//! must exit 1 with `verdict.json` naming the broken invariant.
//!
//! These are real runs (root, network namespaces, iptables, Docker, the
//! static busybox): about a minute each, one after the other so two
//! clusters never share this machine's two CPUs. Where any of that is
//! missing they fail, loudly: `.ci/run` installs it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// One planted run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CHAOS: &str = env!("CARGO_BIN_EXE_flocker-chaos");

/// The flocker binary built alongside this test (same target dir and
/// profile), or FLOCKER_BIN.
fn flocker_bin() -> PathBuf {
    if let Ok(b) = std::env::var("FLOCKER_BIN") {
        return PathBuf::from(b);
    }
    let sibling = PathBuf::from(CHAOS).with_file_name("flocker");
    assert!(
        sibling.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p flocker` first), or set FLOCKER_BIN",
        sibling.display()
    );
    sibling
}

fn planted_run(bug: &str, invariant: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let output = Command::new(CHAOS)
        .args(["--seed", "1", "--time", "30", "--plant-bug", bug])
        .arg("--out")
        .arg(&out)
        .arg("--flocker")
        .arg(flocker_bin())
        .output()
        .expect("run flocker-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code();
    assert_eq!(
        code,
        Some(1),
        "planted {bug}: expected exit 1 (violation found), got {code:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("verdict.json")).expect("verdict.json written"),
    )
    .expect("verdict.json is JSON");
    assert_eq!(
        verdict["invariants"][invariant]["valid"],
        serde_json::Value::Bool(false),
        "planted {bug}: {invariant} should be invalid; verdict: {verdict:#}\n--- stderr\n{stderr}"
    );
}

#[test]
fn planted_stale_reads_break_linearizability() {
    planted_run("stale-reads", "linearizable");
}

#[test]
fn planted_no_fencing_breaks_single_instance() {
    planted_run("no-fencing", "single-instance");
}
