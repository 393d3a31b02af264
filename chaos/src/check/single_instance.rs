//! At most one running instance per app (DESIGN.md invariant 3), judged
//! from two sources the cluster does not control: the witness, where each
//! instance is alive from its first to its last heartbeat, and Docker's
//! events, where each container runs from `start` to `die` (or to the end of
//! the history if it never died). Two different instances or containers of
//! one app whose intervals overlap strictly — not merely touch — violate it.
//! Heartbeat intervals under-approximate an instance's life, so a witness
//! overlap is a certain violation.

use super::Budget;
use crate::history::{ContainerEvent, Heartbeat};
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Overlaps listed in the details at most; the count is always exact.
const MAX_LISTED: usize = 100;

/// One instance's or container's life.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub app: String,
    /// Instance id (witness) or container id (Docker).
    pub who: String,
    pub node: String,
    pub start_ns: u64,
    /// `None`: still running when the history ends.
    pub end_ns: Option<u64>,
}

impl Interval {
    fn end(&self) -> u64 {
        self.end_ns.unwrap_or(u64::MAX)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"id": self.who, "node": self.node, "start_ns": self.start_ns, "end_ns": self.end_ns})
    }
}

/// Two lives of one app at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    pub a: Interval,
    pub b: Interval,
    pub start_ns: u64,
    /// `None`: both still running at the end.
    pub end_ns: Option<u64>,
}

/// Instance lives from heartbeats: first to last, per (app, instance).
pub fn witness_intervals(beats: &[Heartbeat]) -> Vec<Interval> {
    let mut by: BTreeMap<(&str, &str), Interval> = BTreeMap::new();
    for b in beats {
        by.entry((b.app.as_str(), b.instance.as_str()))
            .and_modify(|i| {
                i.start_ns = i.start_ns.min(b.time_ns);
                i.end_ns = Some(i.end().max(b.time_ns));
            })
            .or_insert_with(|| Interval {
                app: b.app.clone(),
                who: b.instance.clone(),
                node: b.node.clone(),
                start_ns: b.time_ns,
                end_ns: Some(b.time_ns),
            });
    }
    by.into_values().collect()
}

/// Container lives from Docker events. A `die` with no `start` seen ran
/// since recording began (time 0): it was running, and a start would have
/// been recorded.
pub fn docker_intervals(events: &[ContainerEvent]) -> Vec<Interval> {
    let mut sorted: Vec<&ContainerEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.time_ns);
    let mut open: HashMap<&str, Interval> = HashMap::new();
    let mut out = Vec::new();
    for e in sorted {
        match e.action.as_str() {
            "start" => {
                open.entry(e.container.as_str())
                    .or_insert_with(|| Interval {
                        app: e.app.clone(),
                        who: e.container.clone(),
                        node: e.node.clone(),
                        start_ns: e.time_ns,
                        end_ns: None,
                    });
            }
            "die" => {
                let mut i = open
                    .remove(e.container.as_str())
                    .unwrap_or_else(|| Interval {
                        app: e.app.clone(),
                        who: e.container.clone(),
                        node: e.node.clone(),
                        start_ns: 0,
                        end_ns: None,
                    });
                i.end_ns = Some(e.time_ns);
                // The fence refused to start the app: no instance ran.
                if e.exit_code != Some(crate::history::FENCED_BEFORE_START) {
                    out.push(i);
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_values());
    out.sort_by(|a, b| (&a.app, a.start_ns, &a.who).cmp(&(&b.app, b.start_ns, &b.who)));
    out
}

/// Every strictly overlapping pair of intervals of the same app, found by a
/// sweep in start order (pairs are compared only while the earlier one is
/// still running, so this is linear in intervals plus overlaps). Stops
/// early when the budget runs out, returning `false`.
pub fn overlaps(intervals: &[Interval], budget: &Budget) -> (Vec<Overlap>, bool) {
    let mut by_app: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    for i in intervals {
        by_app.entry(i.app.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for list in by_app.values_mut() {
        list.sort_by_key(|i| (i.start_ns, i.end()));
        let mut active: Vec<&Interval> = Vec::new();
        for &cur in list.iter() {
            if budget.expired() {
                return (out, false);
            }
            active.retain(|a| a.end() > cur.start_ns);
            for &a in &active {
                if a.who != cur.who && cur.end() > cur.start_ns {
                    let end = a.end().min(cur.end());
                    out.push(Overlap {
                        a: a.clone(),
                        b: cur.clone(),
                        start_ns: cur.start_ns,
                        end_ns: (end != u64::MAX).then_some(end),
                    });
                }
            }
            active.push(cur);
        }
    }
    (out, true)
}

/// Checks the invariant from `witness.jsonl` and `docker-events.jsonl`.
pub fn check(dir: &Path, budget: &Budget) -> InvariantResult {
    let mut listed = Vec::new();
    let mut count = 0usize;
    let mut missing = Vec::new();
    let mut observed = 0usize;
    let mut complete = true;
    let sources: [(&str, Result<Vec<Interval>, String>); 2] = [
        (
            "witness",
            super::load_jsonl::<Heartbeat>(dir, "witness.jsonl").map(|b| witness_intervals(&b)),
        ),
        (
            "docker",
            super::load_jsonl::<ContainerEvent>(dir, "docker-events.jsonl")
                .map(|e| docker_intervals(&e)),
        ),
    ];
    let mut counts = serde_json::Map::new();
    for (source, loaded) in sources {
        let intervals = match loaded {
            Ok(i) => i,
            Err(e) => {
                missing.push(e);
                continue;
            }
        };
        observed += intervals.len();
        counts.insert(source.into(), json!(intervals.len()));
        let (found, done) = overlaps(&intervals, budget);
        complete &= done;
        for o in found {
            count += 1;
            if listed.len() < MAX_LISTED {
                listed.push(json!({
                    "source": source,
                    "app": o.a.app,
                    "a": o.a.to_json(),
                    "b": o.b.to_json(),
                    "overlap_start_ns": o.start_ns,
                    "overlap_end_ns": o.end_ns,
                }));
            }
        }
    }
    let details = json!({"lives": counts, "overlap_count": count, "overlaps": listed});
    if count > 0 {
        let f = &listed[0];
        let summary = format!(
            "{count} overlap(s) of two running instances; first: app {} ({}) {} on {} and {} on {} from {:.3} s",
            f["app"].as_str().unwrap_or("?"),
            f["source"].as_str().unwrap_or("?"),
            f["a"]["id"].as_str().unwrap_or("?"),
            f["a"]["node"].as_str().unwrap_or("?"),
            f["b"]["id"].as_str().unwrap_or("?"),
            f["b"]["node"].as_str().unwrap_or("?"),
            f["overlap_start_ns"].as_u64().unwrap_or(0) as f64 / 1e9,
        );
        return InvariantResult::new(Validity::Invalid, summary, details);
    }
    if !missing.is_empty() {
        return InvariantResult::new(Validity::Unknown, missing.join("; "), details);
    }
    if !complete {
        return InvariantResult::new(
            Validity::Unknown,
            "time budget exhausted while comparing instances",
            details,
        );
    }
    if observed == 0 {
        return InvariantResult::new(
            Validity::Unknown,
            "no heartbeats or container events were recorded",
            details,
        );
    }
    InvariantResult::new(
        Validity::Valid,
        format!("no overlapping instances among {observed} instance/container lives"),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hb(t: u64, app: &str, inst: &str, node: &str) -> Heartbeat {
        Heartbeat {
            time_ns: t,
            app: app.into(),
            node: node.into(),
            instance: inst.into(),
            seq: 1,
            head: "h".into(),
        }
    }

    fn ce(t: u64, app: &str, c: &str, action: &str) -> ContainerEvent {
        ContainerEvent {
            time_ns: t,
            app: app.into(),
            node: "n1".into(),
            container: c.into(),
            action: action.into(),
            exit_code: None,
        }
    }

    #[test]
    fn a_container_the_fence_never_let_start_is_no_instance() {
        let mut refused = ce(15, "a", "c2", "die");
        refused.exit_code = Some(crate::history::FENCED_BEFORE_START);
        let events = vec![
            ce(10, "a", "c1", "start"),
            ce(14, "a", "c2", "start"),
            refused,
            ce(20, "a", "c1", "die"),
        ];
        let budget = Budget::new(Duration::from_secs(10));
        assert!(overlaps(&docker_intervals(&events), &budget).0.is_empty());
        // Any other exit is a real life.
        let mut killed = ce(15, "a", "c2", "die");
        killed.exit_code = Some(137);
        let events = vec![
            ce(10, "a", "c1", "start"),
            ce(14, "a", "c2", "start"),
            killed,
        ];
        assert_eq!(overlaps(&docker_intervals(&events), &budget).0.len(), 1);
    }

    fn write_files(dir: &Path, beats: &[Heartbeat], events: &[ContainerEvent]) {
        let j = |v: Vec<String>| v.join("\n");
        std::fs::write(
            dir.join("witness.jsonl"),
            j(beats
                .iter()
                .map(|b| serde_json::to_string(b).unwrap())
                .collect()),
        )
        .unwrap();
        std::fs::write(
            dir.join("docker-events.jsonl"),
            j(events
                .iter()
                .map(|b| serde_json::to_string(b).unwrap())
                .collect()),
        )
        .unwrap();
    }

    fn budget() -> Budget {
        Budget::new(Duration::from_secs(10))
    }

    #[test]
    fn handover_without_overlap_passes() {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &[
                hb(10, "db", "i1", "n1"),
                hb(20, "db", "i1", "n1"),
                hb(25, "db", "i2", "n2"),
                hb(30, "db", "i2", "n2"),
                hb(22, "web", "w1", "n3"),
            ],
            &[
                ce(5, "db", "c1", "start"),
                ce(21, "db", "c1", "die"),
                ce(21, "db", "c2", "start"), // touching, not overlapping
            ],
        );
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
    }

    #[test]
    fn overlapping_instances_fail() {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &[
                hb(10, "db", "i1", "n1"),
                hb(30, "db", "i1", "n1"),
                hb(20, "db", "i2", "n2"),
                hb(40, "db", "i2", "n2"),
            ],
            &[],
        );
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Invalid, "{}", res.summary);
        let o = &res.details["overlaps"][0];
        assert_eq!(o["app"], "db");
        assert_eq!(o["overlap_start_ns"], 20);
        assert_eq!(o["overlap_end_ns"], 30);
    }

    #[test]
    fn container_never_dying_overlaps_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &[],
            &[ce(5, "db", "c1", "start"), ce(50, "db", "c2", "start")],
        );
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.details["overlaps"][0]["source"], "docker");
        assert_eq!(res.details["overlaps"][0]["overlap_end_ns"], json!(null));
    }

    #[test]
    fn missing_witness_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-events.jsonl"), "").unwrap();
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Unknown);
        assert!(res.summary.contains("witness.jsonl"));
    }
}
