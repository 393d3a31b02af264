//! The checkers: each reads the files a run wrote and decides one invariant
//! (valid, invalid or unknown). `check_run` runs them all under one time
//! budget and assembles the [`Verdict`]. Inputs are parsed here once, and
//! a missing or malformed file turns the invariants that need it into
//! "unknown" with a summary naming the file and line, never a panic.

pub mod bounded_loss;
pub mod convergence;
pub mod linearizable;
pub mod lost_writes;
pub mod membership;
pub mod ops;
pub mod routed;
pub mod single_instance;
pub mod state_invariants;
pub mod volume;

use crate::verdict::{InvariantResult, Verdict};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The invariant names, as keys of `verdict.json`'s `invariants`.
pub const INVARIANTS: [&str; 9] = [
    "linearizable",
    "no-lost-writes",
    "single-instance",
    "volume-integrity",
    "bounded-loss",
    "convergence",
    "removed-stay-out",
    "state-invariants",
    "routed-reads",
];

/// A wall-clock deadline shared by every checker of one run, so the whole
/// check ends in bounded time; a checker that hits it answers "unknown".
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    /// A budget of `d` from now (an unrepresentable deadline means none).
    pub fn new(d: Duration) -> Self {
        Budget {
            deadline: Instant::now().checked_add(d),
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Reads `dir/name` as JSONL of `T`. The error is the summary an invariant
/// reports as unknown: which file is missing, or which line is malformed.
pub fn load_jsonl<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Vec<T>, String> {
    Ok(load_jsonl_numbered(dir, name)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// Like [`load_jsonl`], with each record's line number (from 1).
pub fn load_jsonl_numbered<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Vec<(usize, T)>, String> {
    let text = read_text(dir, name)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push((i + 1, v)),
            Err(e) => return Err(format!("{name}:{}: malformed record: {e}", i + 1)),
        }
    }
    Ok(out)
}

/// Reads `dir/name` as one JSON value of `T`, with the same error wording.
pub fn load_json<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T, String> {
    let text = read_text(dir, name)?;
    serde_json::from_str(&text).map_err(|e| format!("{name}:{}: malformed: {e}", e.line()))
}

fn read_text(dir: &Path, name: &str) -> Result<String, String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{name} is missing")),
        Err(e) => Err(format!("{name} could not be read: {e}")),
    }
}

/// The verdict of a checker that listed `problems` (any: invalid, the first
/// one in the summary) and `unknowns` (any, and no problem: unknown);
/// `None` when it found neither and decides validity itself.
pub fn problems_or_unknowns(
    problems: &[String],
    unknowns: &[String],
    details: &serde_json::Value,
) -> Option<InvariantResult> {
    use crate::verdict::Validity;
    if let Some(first) = problems.first() {
        let summary = format!("{} problem(s); first: {first}", problems.len());
        return Some(InvariantResult::new(
            Validity::Invalid,
            summary,
            details.clone(),
        ));
    }
    if !unknowns.is_empty() {
        return Some(InvariantResult::new(
            Validity::Unknown,
            unknowns.join("; "),
            details.clone(),
        ));
    }
    None
}

/// The registers' initial values, from `run.json`'s optional
/// `initial_value`: a string or null for every key, or an object of key to
/// string or null. Absent: null, as in the history's model (an app absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitialValues {
    all: Option<String>,
    per_key: BTreeMap<String, Option<String>>,
}

impl InitialValues {
    /// The same initial value for every key.
    pub fn all(value: Option<&str>) -> Self {
        InitialValues {
            all: value.map(str::to_string),
            per_key: BTreeMap::new(),
        }
    }

    /// The initial value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.per_key.get(key) {
            Some(v) => v.as_deref(),
            None => self.all.as_deref(),
        }
    }

    /// Reads `initial_value` from `dir/run.json` (defaults when absent).
    pub fn from_run_json(dir: &Path) -> Self {
        let v = load_json::<serde_json::Value>(dir, "run.json")
            .ok()
            .and_then(|r| r.get("initial_value").cloned());
        match v {
            Some(serde_json::Value::String(s)) => Self::all(Some(&s)),
            Some(serde_json::Value::Object(m)) => InitialValues {
                all: None,
                per_key: m
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map(str::to_string)))
                    .collect(),
            },
            _ => Self::default(),
        }
    }
}

/// The seed from `run.json`, 0 when the file or field is absent.
fn run_seed(dir: &Path) -> u64 {
    load_json::<serde_json::Value>(dir, "run.json")
        .ok()
        .and_then(|v| v.get("seed").and_then(|s| s.as_u64()))
        .unwrap_or(0)
}

/// Checks every invariant of the run in `dir` within `budget` and returns
/// the verdict. The cheap linear checkers run first so the search-heavy
/// linearizability check gets whatever time is left rather than starving
/// them.
pub fn check_run(dir: &Path, budget: Duration) -> Verdict {
    let budget = Budget::new(budget);
    let history = ops::load_history(dir);
    let initial = InitialValues::from_run_json(dir);
    let operations = history.as_ref().map(|h| h.len() as u64).unwrap_or(0);
    let mut inv: BTreeMap<String, InvariantResult> = BTreeMap::new();
    inv.insert("convergence".into(), convergence::check(dir));
    inv.insert(
        "single-instance".into(),
        single_instance::check(dir, &budget),
    );
    inv.insert("volume-integrity".into(), volume::check(dir, &budget));
    inv.insert("bounded-loss".into(), bounded_loss::check(dir, &budget));
    inv.insert("removed-stay-out".into(), membership::check(dir));
    inv.insert("state-invariants".into(), state_invariants::check(dir));
    inv.insert("routed-reads".into(), routed::check(dir));
    match &history {
        Ok(h) => {
            inv.insert(
                "no-lost-writes".into(),
                lost_writes::check(h, &initial, &budget),
            );
            inv.insert(
                "linearizable".into(),
                linearizable::check(h, &initial, &budget),
            );
        }
        Err(e) => {
            inv.insert("no-lost-writes".into(), InvariantResult::unknown(e.clone()));
            inv.insert("linearizable".into(), InvariantResult::unknown(e.clone()));
        }
    }
    Verdict::new(operations, run_seed(dir), inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Validity;

    #[test]
    fn empty_dir_is_unknown_everywhere_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let v = check_run(dir.path(), Duration::from_secs(5));
        assert_eq!(v.valid, Validity::Unknown);
        assert_eq!(v.exit_code(), 3);
        for name in INVARIANTS {
            let r = &v.invariants[name];
            assert_eq!(r.valid, Validity::Unknown, "{name}");
        }
        assert!(v.invariants["linearizable"]
            .summary
            .contains("history.jsonl"));
        assert!(v.invariants["convergence"]
            .summary
            .contains("convergence.json"));
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("history.jsonl"), "\n{\"index\": 0}\n").unwrap();
        std::fs::write(dir.path().join("run.json"), "{\"seed\": 42}").unwrap();
        let v = check_run(dir.path(), Duration::from_secs(5));
        assert_eq!(v.seed, 42);
        let s = &v.invariants["linearizable"].summary;
        assert!(s.contains("history.jsonl:2"), "{s}");
    }

    #[test]
    fn initial_values_from_run_json() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(InitialValues::from_run_json(dir.path()).get("a"), None);
        std::fs::write(dir.path().join("run.json"), r#"{"initial_value": "init"}"#).unwrap();
        assert_eq!(
            InitialValues::from_run_json(dir.path()).get("a"),
            Some("init")
        );
        std::fs::write(
            dir.path().join("run.json"),
            r#"{"initial_value": {"a": "x", "b": null}}"#,
        )
        .unwrap();
        let i = InitialValues::from_run_json(dir.path());
        assert_eq!(
            (i.get("a"), i.get("b"), i.get("c")),
            (Some("x"), None, None)
        );
    }
}
