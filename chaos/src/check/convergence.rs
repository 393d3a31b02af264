//! Convergence: after the last fault heals, the cluster must reach its
//! desired state (every app running where placed) within a bound. The
//! harness measures it and writes `convergence.json`
//! `{"healed_at_ns", "converged_at_ns" (null: never), "bound_s"}`; this
//! checker only judges it, so the bound lives in one place.

use crate::verdict::{InvariantResult, Validity};
use serde::Deserialize;
use serde_json::json;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct Convergence {
    healed_at_ns: u64,
    converged_at_ns: Option<u64>,
    bound_s: u64,
}

/// Judges `dir/convergence.json`.
pub fn check(dir: &Path) -> InvariantResult {
    let c: Convergence = match super::load_json(dir, "convergence.json") {
        Ok(c) => c,
        Err(e) => return InvariantResult::unknown(e),
    };
    let bound_ns = c.bound_s.saturating_mul(1_000_000_000);
    let took = c.converged_at_ns.map(|t| t.saturating_sub(c.healed_at_ns));
    let details = json!({
        "healed_at_ns": c.healed_at_ns,
        "converged_at_ns": c.converged_at_ns,
        "bound_s": c.bound_s,
        "took_ns": took,
    });
    match took {
        None => InvariantResult::new(
            Validity::Invalid,
            format!("never converged after healing (bound {} s)", c.bound_s),
            details,
        ),
        Some(t) if t > bound_ns => InvariantResult::new(
            Validity::Invalid,
            format!(
                "converged {:.3} s after healing, over the {} s bound",
                t as f64 / 1e9,
                c.bound_s
            ),
            details,
        ),
        Some(t) => InvariantResult::new(
            Validity::Valid,
            format!(
                "converged {:.3} s after healing (bound {} s)",
                t as f64 / 1e9,
                c.bound_s
            ),
            details,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(text: Option<&str>) -> InvariantResult {
        let dir = tempfile::tempdir().unwrap();
        if let Some(t) = text {
            std::fs::write(dir.path().join("convergence.json"), t).unwrap();
        }
        check(dir.path())
    }

    #[test]
    fn bound_null_and_missing() {
        let ok = judge(Some(
            r#"{"healed_at_ns": 1000000000, "converged_at_ns": 3000000000, "bound_s": 2}"#,
        ));
        assert_eq!(ok.valid, Validity::Valid, "{}", ok.summary);
        let late = judge(Some(
            r#"{"healed_at_ns": 0, "converged_at_ns": 3000000001, "bound_s": 3}"#,
        ));
        assert_eq!(late.valid, Validity::Invalid);
        let never = judge(Some(
            r#"{"healed_at_ns": 0, "converged_at_ns": null, "bound_s": 3}"#,
        ));
        assert_eq!(never.valid, Validity::Invalid);
        let missing = judge(None);
        assert_eq!(missing.valid, Validity::Unknown);
        assert!(missing.summary.contains("convergence.json"));
        let bad = judge(Some("{\n\"healed_at_ns\": \"x\"}"));
        assert_eq!(bad.valid, Validity::Unknown);
        assert!(
            bad.summary.contains("convergence.json:2"),
            "{}",
            bad.summary
        );
    }
}
