//! The verdict of a chaos run: one result per invariant and an overall
//! validity, written as `verdict.json` and mapped to the process exit code.
//! Validity is three-valued, as in Jepsen: a checker that ran out of time or
//! lacked an input says "unknown", which is never reported as a pass.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path;

/// Whether an invariant held: `true`, `false` or `"unknown"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Validity {
    /// Combines results: any invalid wins (a violation found is definitive even
    /// if another part could not be decided), then any unknown, else valid.
    /// An empty set is unknown: nothing was checked, so nothing was shown.
    pub fn all<I: IntoIterator<Item = Validity>>(items: I) -> Validity {
        let mut seen_any = false;
        let mut unknown = false;
        for v in items {
            seen_any = true;
            match v {
                Validity::Invalid => return Validity::Invalid,
                Validity::Unknown => unknown = true,
                Validity::Valid => {}
            }
        }
        if unknown || !seen_any {
            Validity::Unknown
        } else {
            Validity::Valid
        }
    }

    /// The word used in summaries and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Invalid => "invalid",
            Validity::Unknown => "unknown",
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(Validity::Valid),
            serde_json::Value::Bool(false) => Ok(Validity::Invalid),
            serde_json::Value::String(s) if s == "unknown" => Ok(Validity::Unknown),
            other => Err(serde::de::Error::custom(format!(
                "validity must be true, false or \"unknown\", not {other}"
            ))),
        }
    }
}

/// One invariant's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantResult {
    pub valid: Validity,
    /// One line for humans.
    pub summary: String,
    /// Checker-specific evidence (violations, counts, the failing window).
    pub details: serde_json::Value,
}

impl InvariantResult {
    pub fn new(valid: Validity, summary: impl Into<String>, details: serde_json::Value) -> Self {
        InvariantResult {
            valid,
            summary: summary.into(),
            details,
        }
    }

    /// An undecided result, e.g. a missing input file or an exhausted budget.
    pub fn unknown(summary: impl Into<String>) -> Self {
        Self::new(Validity::Unknown, summary, serde_json::Value::Null)
    }
}

/// The whole run's verdict, as written to `verdict.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: Validity,
    /// Operations (invocations) in the history.
    pub operations: u64,
    /// The run's seed, from `run.json` (0 when unknown).
    pub seed: u64,
    pub invariants: BTreeMap<String, InvariantResult>,
}

impl Verdict {
    /// Builds a verdict whose overall validity combines the invariants'.
    pub fn new(operations: u64, seed: u64, invariants: BTreeMap<String, InvariantResult>) -> Self {
        let valid = Validity::all(invariants.values().map(|r| r.valid));
        Verdict {
            valid,
            operations,
            seed,
            invariants,
        }
    }

    /// 0 when valid, 1 when anything is invalid, 3 when nothing is invalid but
    /// something is unknown (the same convention as `flocker ctl`'s exit 3).
    pub fn exit_code(&self) -> i32 {
        let overall = Validity::all(
            std::iter::once(self.valid).chain(self.invariants.values().map(|r| r.valid)),
        );
        match overall {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 3,
        }
    }

    /// Writes the verdict as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let mut text = serde_json::to_string_pretty(self).context("serializing verdict")?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(vs: &[Validity]) -> Verdict {
        let inv = vs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("i{i}"),
                    InvariantResult::new(*v, "s", serde_json::Value::Null),
                )
            })
            .collect();
        Verdict::new(3, 7, inv)
    }

    #[test]
    fn exit_codes_and_json_shape() {
        use Validity::*;
        assert_eq!(verdict(&[Valid, Valid]).exit_code(), 0);
        assert_eq!(verdict(&[Valid, Unknown]).exit_code(), 3);
        assert_eq!(verdict(&[Unknown, Invalid]).exit_code(), 1);
        assert_eq!(verdict(&[]).exit_code(), 3);
        let v = verdict(&[Valid, Unknown]);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["valid"], "unknown");
        assert_eq!(json["invariants"]["i0"]["valid"], true);
        assert_eq!(json["operations"], 3);
        assert_eq!(json["seed"], 7);
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("verdict.json");
        verdict(&[Invalid]).write_json(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"valid\": false"));
    }
}
