//! The replicated state keeps its own rules (`state-invariants`): every
//! node runs with `--check-invariants`, so it checks the state after each
//! applied entry and, on a violation, logs `INVARIANT VIOLATED` and stops
//! applying. Judged from the nodes' logs (`logs/<node>.log`): any such line
//! is a violation; a log without the line saying the checks were on leaves
//! the invariant unknown (that node was not checked). Other programs' logs
//! beside them (`<node>.probe-<generation>.log`, the membership probe that
//! exits before it applies anything; `<node>.dockerd.log`, the node's
//! engine) have a dot in their stem, which node names never have.

use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::path::Path;

/// What a node logs at start when it checks after every entry.
pub const CHECKING: &str = "checking the replicated state's invariants after every applied entry";
/// What a node logs when a check fails.
pub const VIOLATED: &str = "INVARIANT VIOLATED";

/// Judges every `dir/logs/*.log`.
pub fn check(dir: &Path) -> InvariantResult {
    let logs = dir.join("logs");
    let entries = match std::fs::read_dir(&logs) {
        Ok(e) => e,
        Err(e) => return InvariantResult::unknown(format!("{}: {e}", logs.display())),
    };
    let mut unchecked = Vec::new();
    let mut violations = Vec::new();
    let mut nodes = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains('.') {
            continue;
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return InvariantResult::unknown(format!("{}: {e}", path.display())),
        };
        nodes += 1;
        if !text.contains(CHECKING) {
            unchecked.push(name.clone());
        }
        for line in text.lines().filter(|l| l.contains(VIOLATED)) {
            violations
                .push(json!({"node": name, "line": line.chars().take(2000).collect::<String>()}));
        }
    }
    let details = json!({"nodes": nodes, "unchecked": unchecked, "violations": violations});
    if !violations.is_empty() {
        return InvariantResult::new(
            Validity::Invalid,
            format!(
                "{} node(s) found the state breaking its invariants",
                violations.len()
            ),
            details,
        );
    }
    if nodes == 0 || !unchecked.is_empty() {
        return InvariantResult::new(
            Validity::Unknown,
            format!(
                "not every node checked its state (unchecked: {})",
                unchecked.join(", ")
            ),
            details,
        );
    }
    InvariantResult::new(
        Validity::Valid,
        format!("{nodes} node logs: every applied entry checked, no violation"),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(logs: &[(&str, &str)]) -> InvariantResult {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        for (node, text) in logs {
            std::fs::write(dir.path().join("logs").join(format!("{node}.log")), text).unwrap();
        }
        check(dir.path())
    }

    #[test]
    fn a_violation_in_any_log_is_invalid() {
        let ok = format!("x {CHECKING}\n");
        let bad = format!("x {CHECKING}\ny {VIOLATED} after applying entry 7: ...\n");
        assert_eq!(run(&[("n1", &ok), ("n2", &ok)]).valid, Validity::Valid);
        assert_eq!(run(&[("n1", &ok), ("n2", &bad)]).valid, Validity::Invalid);
        assert_eq!(
            run(&[("n1", &ok), ("n2", "no checks\n")]).valid,
            Validity::Unknown
        );
        assert_eq!(run(&[]).valid, Validity::Unknown);
        // The probe's and the engine's logs are not node logs.
        assert_eq!(
            run(&[
                ("n1", &ok),
                ("n1.probe-1", "refused\n"),
                ("n1.dockerd", "dockerd\n")
            ])
            .valid,
            Validity::Valid
        );
    }
}
