//! No lost writes: an acknowledged (`ok`) write must not vanish. Write `w`
//! is lost when some `ok` read of the same key, invoked after `w` completed,
//! returns a value that only strictly older writes could have produced:
//! every write of that value (`ok` or `info`) completed before `w` was
//! invoked, or the value is null (the initial value) and no write of null
//! could explain it. This is deliberately weaker than linearizability and
//! sound on its own: it never blames a write that a concurrent or later
//! write could have overwritten, and it names the lost writes one by one.

use super::ops::{Op, Outcome};
use super::{Budget, InitialValues};
use crate::history::OpKind;
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// Lost writes listed in the details at most; the count is always exact.
const MAX_LISTED: usize = 100;

/// Checks every key; see the module documentation.
pub fn check(history: &[Op], initial: &InitialValues, budget: &Budget) -> InvariantResult {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.f, OpKind::Read | OpKind::Write) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    let ok_writes = history
        .iter()
        .filter(|o| o.f == OpKind::Write && o.outcome == Outcome::Ok)
        .count();
    if by_key.is_empty() {
        return InvariantResult::unknown("history.jsonl has no read or write operations");
    }
    let mut lost: Vec<serde_json::Value> = Vec::new();
    let mut count = 0usize;
    for (key, ops) in &by_key {
        if budget.expired() {
            return InvariantResult::unknown(format!(
                "time budget exhausted before key {key} was checked"
            ));
        }
        for (w, r) in lost_in_key(ops, initial.get(key)) {
            count += 1;
            if lost.len() < MAX_LISTED {
                lost.push(json!({"key": key, "write": w.to_json(), "seen_by_read": r.to_json()}));
            }
        }
    }
    let details = json!({"ok_writes": ok_writes, "lost_count": count, "lost": lost});
    if count == 0 {
        InvariantResult::new(
            Validity::Valid,
            format!("none of {ok_writes} acknowledged writes lost"),
            details,
        )
    } else {
        let first = &lost[0];
        InvariantResult::new(
            Validity::Invalid,
            format!(
                "{count} acknowledged write(s) lost; first: key {} value {} (op {}), a later read returned {} (op {})",
                first["key"].as_str().unwrap_or("?"),
                first["write"]["value"].as_str().unwrap_or("null"),
                first["write"]["index"],
                first["seen_by_read"]["value"].as_str().unwrap_or("null"),
                first["seen_by_read"]["index"],
            ),
            details,
        )
    }
}

/// The lost writes of one key, each with the first read showing it lost.
/// O((reads + writes) log): for each read, `newest(v)` is the latest time a
/// write of its value could have completed; `w` is lost if a read invoked
/// after `w` completed has `newest < w.invoke`.
fn lost_in_key<'a>(ops: &[&'a Op], initial: Option<&'a str>) -> Vec<(&'a Op, &'a Op)> {
    // newest completion per value; i128 so null's "initial value" is -1
    // (older than everything) and open-ended writes are +infinity.
    let mut newest: HashMap<Option<&str>, i128> = HashMap::new();
    // Null (the app absent) and the initial value are older than any write.
    newest.insert(None, -1);
    newest.insert(initial, -1);
    for o in ops.iter().filter(|o| o.f == OpKind::Write) {
        let t = match (o.outcome, o.complete_ns) {
            (Outcome::Fail, _) => continue,
            (Outcome::Ok, Some(t)) => t as i128,
            _ => i128::MAX,
        };
        let e = newest.entry(o.value.as_deref()).or_insert(t);
        *e = (*e).max(t);
    }
    let mut reads: Vec<(u64, i128, &Op)> = ops
        .iter()
        .filter(|o| o.f == OpKind::Read && o.outcome == Outcome::Ok)
        // A value no write produced is a linearizability failure, not
        // evidence about which write was lost.
        .filter_map(|o| {
            newest
                .get(&o.value.as_deref())
                .map(|&n| (o.invoke_ns, n, *o))
        })
        .collect();
    reads.sort_by_key(|r| r.0);
    // suffix_min[i]: the read with the smallest `newest` among reads[i..].
    let mut suffix_min: Vec<usize> = vec![0; reads.len()];
    for i in (0..reads.len()).rev() {
        suffix_min[i] = if i + 1 < reads.len() && reads[suffix_min[i + 1]].1 < reads[i].1 {
            suffix_min[i + 1]
        } else {
            i
        };
    }
    let mut out = Vec::new();
    for w in ops
        .iter()
        .filter(|o| o.f == OpKind::Write && o.outcome == Outcome::Ok)
    {
        let Some(done) = w.complete_ns else { continue };
        let first_after = reads.partition_point(|r| r.0 <= done);
        if first_after < reads.len() {
            let (_, n, r) = reads[suffix_min[first_after]];
            if n < w.invoke_ns as i128 {
                out.push((*w, r));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::ops::testing::{numbered, r, w};
    use super::*;
    use std::time::Duration;
    use Outcome::*;

    fn run(ops: &[Op]) -> InvariantResult {
        check(
            ops,
            &InitialValues::default(),
            &Budget::new(Duration::from_secs(10)),
        )
    }

    #[test]
    fn lost_write_detected() {
        let h = numbered(vec![
            w(1, "a", Ok, 0, 10),
            w(1, "b", Ok, 20, 30),
            r(0, Some("a"), 40, 41), // b vanished: a is strictly older
        ]);
        let res = run(&h);
        assert_eq!(res.valid, Validity::Invalid, "{}", res.summary);
        assert_eq!(res.details["lost_count"], 1);
        assert_eq!(res.details["lost"][0]["write"]["value"], "b");
        // Null after an acknowledged write: lost as well.
        let h = numbered(vec![w(1, "a", Ok, 0, 10), r(0, None, 11, 12)]);
        assert_eq!(run(&h).valid, Validity::Invalid);
        // And so does the initial value.
        let h = numbered(vec![w(1, "a", Ok, 0, 10), r(0, Some("init"), 11, 12)]);
        let init = InitialValues::all(Some("init"));
        let res = check(&h, &init, &Budget::new(Duration::from_secs(10)));
        assert_eq!(res.valid, Validity::Invalid);
    }

    #[test]
    fn concurrent_or_uncertain_writes_are_not_blamed() {
        let h = numbered(vec![
            w(1, "a", Ok, 0, 10),
            w(2, "b", Ok, 5, 30), // concurrent with a: a may win
            r(0, Some("a"), 40, 41),
            w(3, "c", Ok, 50, 60),
            w(4, "d", Info, 55, 56), // may land after c
            r(0, Some("d"), 70, 71),
            w(5, "e", Fail, 80, 81),
            r(0, Some("d"), 90, 91),
        ]);
        let res = run(&h);
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
    }
}
