//! Pairs `history.jsonl`'s invoke and completion events into operations.
//! Each process runs one operation at a time, so a completion belongs to the
//! process's pending invoke. An invoke the history never completes (the run
//! ended first) is treated like `info`: its outcome is unknown. Pairing
//! errors are reported with the file and line, as malformed input.

use crate::history::{Event, EventType, OpKind};
use std::collections::HashMap;
use std::path::Path;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    /// `info`, or never completed: may or may not have taken effect.
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// One operation: an invoke and its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The invoke event's index.
    pub index: u64,
    pub process: u32,
    pub f: OpKind,
    pub key: String,
    /// Write/move: the value written. Read: the value read (ok only).
    pub value: Option<String>,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// When the completion was recorded; `None` if it never was.
    pub complete_ns: Option<u64>,
    pub node: String,
    pub error: Option<String>,
}

impl Op {
    /// A JSON description for checker details and the report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "index": self.index,
            "process": self.process,
            "f": match self.f { OpKind::Write => "write", OpKind::Read => "read", OpKind::Move => "move" },
            "type": self.outcome.as_str(),
            "key": self.key,
            "value": self.value,
            "invoke_ns": self.invoke_ns,
            "complete_ns": self.complete_ns,
            "node": self.node,
        })
    }
}

/// Loads and pairs `dir/history.jsonl`; the error is an unknown-summary.
pub fn load_history(dir: &Path) -> Result<Vec<Op>, String> {
    let numbered: Vec<(usize, Event)> = super::load_jsonl_numbered(dir, "history.jsonl")?;
    let (lines, events): (Vec<usize>, Vec<Event>) = numbered.into_iter().unzip();
    pair(&events, |i| lines.get(i).copied().unwrap_or(i + 1))
}

/// Pairs events in file order; `line_of(i)` gives event i's line number.
pub fn pair(events: &[Event], line_of: impl Fn(usize) -> usize) -> Result<Vec<Op>, String> {
    let mut ops: Vec<Op> = Vec::new();
    let mut pending: HashMap<u32, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let at = || format!("history.jsonl:{}", line_of(i));
        match e.kind {
            EventType::Invoke => {
                if let Some(&p) = pending.get(&e.process) {
                    return Err(format!(
                        "{}: process {} invoked again while op at index {} is pending",
                        at(),
                        e.process,
                        ops[p].index
                    ));
                }
                pending.insert(e.process, ops.len());
                ops.push(Op {
                    index: e.index,
                    process: e.process,
                    f: e.f,
                    key: e.key.clone(),
                    // A read's value is only known on completion.
                    value: if e.f == OpKind::Read {
                        None
                    } else {
                        e.value.clone()
                    },
                    outcome: Outcome::Info,
                    invoke_ns: e.time_ns,
                    complete_ns: None,
                    node: e.node.clone(),
                    error: None,
                });
            }
            kind => {
                let Some(p) = pending.remove(&e.process) else {
                    return Err(format!(
                        "{}: completion for process {} with no pending invoke",
                        at(),
                        e.process
                    ));
                };
                let op = &mut ops[p];
                if op.f != e.f || op.key != e.key {
                    return Err(format!(
                        "{}: completion does not match its invoke (index {})",
                        at(),
                        op.index
                    ));
                }
                op.outcome = match kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                op.complete_ns = Some(e.time_ns.max(op.invoke_ns));
                op.error = e.error.clone();
                if op.f == OpKind::Read && op.outcome == Outcome::Ok {
                    op.value = e.value.clone();
                }
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for synthetic histories shared by the checkers' tests.
    use super::*;

    /// An op with explicit times; `end: None` means never completed.
    pub fn op(
        process: u32,
        f: OpKind,
        key: &str,
        value: Option<&str>,
        outcome: Outcome,
        start: u64,
        end: Option<u64>,
    ) -> Op {
        Op {
            index: 0,
            process,
            f,
            key: key.to_string(),
            value: value.map(str::to_string),
            outcome,
            invoke_ns: start,
            complete_ns: end,
            node: "n1".into(),
            error: None,
        }
    }

    pub fn w(p: u32, v: &str, o: Outcome, s: u64, e: u64) -> Op {
        op(p, OpKind::Write, "k", Some(v), o, s, Some(e))
    }

    pub fn r(p: u32, v: Option<&str>, s: u64, e: u64) -> Op {
        op(p, OpKind::Read, "k", v, Outcome::Ok, s, Some(e))
    }

    /// Numbers the ops' indexes in order.
    pub fn numbered(mut ops: Vec<Op>) -> Vec<Op> {
        for (i, o) in ops.iter_mut().enumerate() {
            o.index = i as u64;
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: u64, t: u64, p: u32, kind: EventType, f: OpKind, v: Option<&str>) -> Event {
        Event {
            index,
            time_ns: t,
            process: p,
            kind,
            f,
            key: "a".into(),
            value: v.map(str::to_string),
            node: "n1".into(),
            request_id: "r".into(),
            error: None,
        }
    }

    #[test]
    fn pairs_and_rejects_orphans() {
        use EventType::*;
        let evs = vec![
            ev(0, 1, 0, Invoke, OpKind::Write, Some("x")),
            ev(1, 2, 1, Invoke, OpKind::Read, None),
            ev(2, 3, 0, Ok, OpKind::Write, Some("x")),
            ev(3, 4, 1, Ok, OpKind::Read, Some("x")),
            ev(4, 5, 2, Invoke, OpKind::Write, Some("y")),
        ];
        let ops = pair(&evs, |i| i + 1).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[1].value.as_deref(), Some("x"));
        assert_eq!(ops[1].complete_ns, Some(4));
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].complete_ns, None);
        let bad = vec![ev(0, 1, 3, Ok, OpKind::Read, None)];
        assert!(pair(&bad, |i| i + 1)
            .unwrap_err()
            .contains("history.jsonl:1"));
    }
}
