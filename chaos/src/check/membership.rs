//! Removed members stay out (`removed-stay-out`): every member the
//! membership nemesis removed had its old certificate tried again — a
//! `flocker node --join` with the removed node's bundle — and the cluster
//! must have refused it. Judged from `nemesis.jsonl`: its "removed" and
//! "probe" records. A certificate let back in is a violation; a removal
//! whose probe is missing or undecided leaves the invariant unknown.

use crate::history::NemesisEvent;
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::path::Path;

/// Judges `dir/nemesis.jsonl`.
pub fn check(dir: &Path) -> InvariantResult {
    let events: Vec<NemesisEvent> = match super::load_jsonl(dir, "nemesis.jsonl") {
        Ok(e) => e,
        Err(e) => return InvariantResult::unknown(e),
    };
    let ours = |phase: &str| {
        events
            .iter()
            .filter(|e| e.nemesis == "membership" && e.phase == phase)
            .collect::<Vec<_>>()
    };
    let removed = ours("removed");
    let probes = ours("probe");
    let cut_off = ours("cut-off");
    let with = |word: &str| {
        probes
            .iter()
            .filter(|e| e.probe.as_deref() == Some(word))
            .copied()
            .collect::<Vec<&NemesisEvent>>()
    };
    let (refused, admitted) = (with("refused"), with("admitted"));
    let described = |es: &[&NemesisEvent]| {
        es.iter()
            .map(|e| json!({"time_ns": e.time_ns, "nodes": e.nodes, "detail": e.detail}))
            .collect::<Vec<_>>()
    };
    let details = json!({
        "removals": removed.len(),
        "refused": refused.len(),
        "admitted": described(&admitted),
        "undecided": described(&with("undecided")),
        "cut_off": described(&cut_off),
    });
    if !admitted.is_empty() {
        let who: Vec<String> = admitted.iter().flat_map(|e| e.nodes.clone()).collect();
        return InvariantResult::new(
            Validity::Invalid,
            format!(
                "a removed member's old certificate got back in: {}",
                who.join(", ")
            ),
            details,
        );
    }
    if removed.is_empty() {
        return InvariantResult::new(Validity::Valid, "no member was removed", details);
    }
    if refused.len() < removed.len() {
        return InvariantResult::new(
            Validity::Unknown,
            format!(
                "{} member(s) removed, {} old certificate(s) shown refused",
                removed.len(),
                refused.len()
            ),
            details,
        );
    }
    // Refused all the same, but flocker should have exited 1.
    let aborted = refused
        .iter()
        .filter(|e| e.detail.contains("not exit 1"))
        .count();
    let note = if aborted > 0 {
        format!(" ({aborted} probe(s) ended by a signal instead of exit 1)")
    } else {
        String::new()
    };
    InvariantResult::new(
        Validity::Valid,
        format!(
            "{} member(s) removed; each old certificate was refused on rejoining{note}",
            removed.len()
        ),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(lines: &[&str]) -> InvariantResult {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nemesis.jsonl"), lines.join("\n")).unwrap();
        check(dir.path())
    }

    const REMOVED: &str = r#"{"time_ns":1,"nemesis":"membership","phase":"removed","detail":"n2 removed","nodes":["n2"]}"#;

    fn probe(word: &str) -> String {
        format!(
            r#"{{"time_ns":2,"nemesis":"membership","phase":"probe","detail":"d","nodes":["n2"],"probe":"{word}"}}"#
        )
    }

    #[test]
    fn refused_admitted_missing_and_none() {
        let ok = judge(&[REMOVED, &probe("refused")]);
        assert_eq!(ok.valid, Validity::Valid, "{}", ok.summary);
        let bad = judge(&[REMOVED, &probe("admitted")]);
        assert_eq!(bad.valid, Validity::Invalid);
        assert!(bad.summary.contains("n2"), "{}", bad.summary);
        assert_eq!(judge(&[REMOVED]).valid, Validity::Unknown);
        assert_eq!(
            judge(&[REMOVED, &probe("undecided")]).valid,
            Validity::Unknown
        );
        let none = judge(&[
            r#"{"time_ns":2,"nemesis":"kill","phase":"start","detail":"kill -9 n3","nodes":["n3"]}"#,
        ]);
        assert_eq!(none.valid, Validity::Valid);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()).valid, Validity::Unknown);
    }
}
