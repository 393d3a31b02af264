//! Linearizability of each app's register (its `CHAOS_VALUE`), checked with
//! the Wing–Gong–Lowe search in Lowe's "just-in-time linearization" form, as
//! porcupine implements it: the history's call and return entries sit in a
//! doubly linked list in time order; the search walks from the head,
//! linearizing (lifting out) any call whose model step succeeds and whose
//! (linearized set, state) pair is new to a memo cache, and backtracks when
//! it reaches the return of an operation it has not linearized. Keys are
//! independent registers, so each is searched alone (P-compositionality).
//!
//! Model: the initial value is null unless `run.json` names one
//! ([`InitialValues`]); `write(v)` sets v; a read returns the value.
//! `fail` writes never happened and are dropped; `info` writes return at
//! +infinity (they may take effect any time after invoke, or never);
//! `fail`/`info` reads observe nothing and are dropped. An `info` write whose
//! value no read returned is dropped too: linearizing it last is always
//! possible and changes nothing observed, so it can only slow the search.
//! The sole write of a value some read returned must take effect before the
//! first such read returns, so its interval is cut there (see `check_key`).
//! The search stops with success once every non-`info` operation is
//! linearized, since the remaining `info` writes may simply never happen.
//! Two further cuts keep ~10k ops per key fast: only writes branch on
//! backtracking (see the comment there), and the memo stores each
//! linearized set as the short window of words past its all-ones prefix.
//!
//! On a violation the search reports the return entry it never got past
//! (the furthest any order reached): the ops returning before it are the
//! longest linearizable prefix, and that op with the ops concurrent with it
//! and a few just before is the failing window.

use super::ops::{Op, Outcome};
use super::{Budget, InitialValues};
use crate::history::OpKind;
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

const NIL: usize = usize::MAX;
/// The return time of an `info` operation.
const INF: u64 = u64::MAX;
/// The memo cache may grow to this many bytes; beyond it the answer is
/// unknown rather than an out-of-memory kill.
const MEMO_BYTE_LIMIT: usize = 512 << 20;
/// Ops shown around the failure point, besides the failing op.
const WINDOW_CONCURRENT: usize = 24;
const WINDOW_BEFORE: usize = 4;

/// Checks every key's register; see the module documentation.
pub fn check(history: &[Op], initial: &InitialValues, budget: &Budget) -> InvariantResult {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.f, OpKind::Read | OpKind::Write) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    if by_key.is_empty() {
        return InvariantResult::unknown("history.jsonl has no read or write operations");
    }
    let mut per_key = serde_json::Map::new();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut unknowns = Vec::new();
    for (key, ops) in &by_key {
        let res = if budget.expired() {
            KeyResult::Unknown("time budget exhausted before this key was checked".into())
        } else {
            check_key(ops, initial.get(key), budget)
        };
        let (v, entry) = match &res {
            KeyResult::Linearizable => (Validity::Valid, json!({"valid": true, "ops": ops.len()})),
            KeyResult::Unknown(why) => {
                unknowns.push(format!("{key}: {why}"));
                (
                    Validity::Unknown,
                    json!({"valid": "unknown", "ops": ops.len(), "why": why}),
                )
            }
            KeyResult::Violation(f) => {
                failures.push((key.to_string(), f.clone()));
                (Validity::Invalid, json!({"valid": false, "ops": ops.len()}))
            }
        };
        results.push(v);
        per_key.insert(key.to_string(), entry);
    }
    let valid = Validity::all(results);
    let keys = by_key.len();
    let summary = match valid {
        Validity::Valid => format!("all {keys} keys linearizable"),
        Validity::Unknown => format!("undecided: {}", unknowns.join("; ")),
        Validity::Invalid => {
            let (k, f) = &failures[0];
            let names: Vec<&str> = failures.iter().map(|(k, _)| k.as_str()).collect();
            format!(
                "not linearizable on key(s) {}: on {k}, {}",
                names.join(", "),
                f.sentence
            )
        }
    };
    let mut details = json!({"keys": per_key});
    if let Some((k, f)) = failures.first() {
        details["failure"] = f.to_json(k);
    }
    InvariantResult::new(valid, summary, details)
}

/// One key's answer.
#[derive(Debug, Clone)]
pub(crate) enum KeyResult {
    Linearizable,
    Violation(Failure),
    Unknown(String),
}

/// Where the search failed: the op whose return no order of the ops before
/// it could get past, with the ops around it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The op at which the history became impossible.
    pub stuck: Op,
    /// Ops (of this key) returning before `stuck`: the linearizable prefix.
    pub prefix_ops: usize,
    /// Values the register could hold at that point (null as None).
    pub states: Vec<Option<String>>,
    /// `stuck`, the ops concurrent with it and a few just before, by invoke.
    pub window: Vec<Op>,
    pub sentence: String,
}

impl Failure {
    fn to_json(&self, key: &str) -> serde_json::Value {
        json!({
            "key": key,
            "stuck_op": self.stuck.to_json(),
            "linearizable_prefix_ops": self.prefix_ops,
            "possible_states": self.states,
            "window": self.window.iter().map(|o| {
                let mut j = o.to_json();
                j["failing"] = json!(o.index == self.stuck.index && o.process == self.stuck.process);
                j
            }).collect::<Vec<_>>(),
        })
    }
}

/// An operation as the search sees it.
struct LinOp<'a> {
    op: &'a Op,
    write: bool,
    /// Interned value: 0 is null.
    value: u32,
    call: u64,
    ret: u64,
    /// Not `info`: must be linearized.
    required: bool,
}

/// Checks one key's ops (reads and writes of that key only).
pub(crate) fn check_key(ops: &[&Op], initial: Option<&str>, budget: &Budget) -> KeyResult {
    // Intern values so states compare and hash as integers.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<Option<String>> = vec![None];
    // The earliest return of an ok read of each value, and how many writes
    // (not failed) wrote each value.
    let mut first_read: HashMap<Option<&str>, u64> = HashMap::new();
    for o in ops {
        if let (OpKind::Read, Outcome::Ok, Some(t)) = (o.f, o.outcome, o.complete_ns) {
            let e = first_read.entry(o.value.as_deref()).or_insert(t);
            *e = (*e).min(t);
        }
    }
    // The initial value counts as one more writer of its value.
    let mut writers: HashMap<&str, usize> = HashMap::new();
    if let Some(v) = initial {
        writers.insert(v, 1);
    }
    for o in ops {
        if let (OpKind::Write, Some(v)) = (o.f, o.value.as_deref()) {
            if o.outcome != Outcome::Fail {
                *writers.entry(v).or_default() += 1;
            }
        }
    }
    let mut lops: Vec<LinOp> = Vec::new();
    for &op in ops {
        let write = op.f == OpKind::Write;
        let (mut ret, mut required) = match (write, op.outcome, op.complete_ns) {
            (_, Outcome::Fail, _) => continue,
            (false, Outcome::Info, _) | (false, _, None) => continue,
            (true, Outcome::Info, _) | (true, _, None) => {
                if !first_read.contains_key(&op.value.as_deref()) {
                    continue;
                }
                (INF, false)
            }
            (_, Outcome::Ok, Some(t)) => (t, true),
        };
        // The only write of a (non-null) value that some read returned must
        // take effect before that read returns: tightening its interval to
        // end there admits exactly the same linearizations, and turns an
        // open-ended info write into an ordinary one. Without this, each
        // pending info write stays concurrent with the whole rest of the
        // history and the search space multiplies.
        if let Some(v) = op.value.as_deref().filter(|_| write) {
            if let (Some(&t), Some(1)) = (first_read.get(&Some(v)), writers.get(v)) {
                ret = ret.min(t);
                required = true;
            }
        }
        let value = match &op.value {
            None => 0,
            Some(v) => *ids.entry(v.as_str()).or_insert_with(|| {
                names.push(Some(v.clone()));
                (names.len() - 1) as u32
            }),
        };
        lops.push(LinOp {
            op,
            write,
            value,
            call: op.invoke_ns,
            ret: ret.max(op.invoke_ns),
            required,
        });
    }
    let initial_state = match initial {
        None => 0,
        Some(v) => *ids.entry(v).or_insert_with(|| {
            names.push(Some(v.to_string()));
            (names.len() - 1) as u32
        }),
    };
    let written: Vec<bool> = {
        let mut w = vec![false; names.len()];
        w[initial_state as usize] = true;
        for o in lops.iter().filter(|o| o.write) {
            w[o.value as usize] = true;
        }
        w
    };
    // The memo stores sets as windows of this order; see `OpSet::window`.
    lops.sort_by_key(|o| (o.call, o.op.index));
    match search(&lops, initial_state, budget) {
        Search::Linearizable => KeyResult::Linearizable,
        Search::Unknown(why) => KeyResult::Unknown(why),
        Search::Stuck { op, states } => {
            KeyResult::Violation(describe_failure(&lops, op, &states, &names, &written))
        }
    }
}

enum Search {
    Linearizable,
    /// No order gets past the return of `op`; `states` are the register
    /// values the search held there.
    Stuck {
        op: usize,
        states: Vec<u32>,
    },
    Unknown(String),
}

/// The WGL search over `lops`.
fn search(lops: &[LinOp], initial_state: u32, budget: &Budget) -> Search {
    let n = lops.len();
    if lops.iter().all(|o| !o.required) {
        return Search::Linearizable;
    }
    // Entries: call of op i and return of op i, sorted by time; at equal
    // times calls come first, so touching ops count as concurrent.
    let mut order: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
    for (i, o) in lops.iter().enumerate() {
        order.push((o.call, 0, i as u32));
        order.push((o.ret, 1, i as u32));
    }
    order.sort_unstable();
    let m = order.len();
    let head = m;
    let mut entry_op = vec![0u32; m];
    let mut is_call = vec![false; m];
    let mut ret_pos = vec![0usize; n];
    for (pos, &(_, kind, op)) in order.iter().enumerate() {
        entry_op[pos] = op;
        is_call[pos] = kind == 0;
        if kind == 1 {
            ret_pos[op as usize] = pos;
        }
    }
    // The list: position `head` is the sentinel.
    let mut next: Vec<usize> = (0..=m)
        .map(|i| if i + 1 < m { i + 1 } else { NIL })
        .collect();
    let mut prev: Vec<usize> = (0..=m).map(|i| if i == 0 { head } else { i - 1 }).collect();
    next[head] = 0;
    prev[head] = NIL;

    let mut linearized = OpSet::new(n);
    let mut memo = Memo::default();
    let mut remaining = lops.iter().filter(|o| o.required).count();
    let mut state = initial_state;
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut frontier = 0usize;
    let mut frontier_states: Vec<u32> = Vec::new();
    let mut entry = next[head];
    let mut steps = 0u64;

    loop {
        if remaining == 0 {
            return Search::Linearizable;
        }
        steps += 1;
        if steps & 0x3ff == 0 && budget.expired() {
            return Search::Unknown(format!(
                "time budget exhausted after {steps} search steps over {n} ops"
            ));
        }
        if entry != NIL && is_call[entry] {
            let i = entry_op[entry] as usize;
            let o = &lops[i];
            let (ok, new_state) = if o.write {
                (true, o.value)
            } else {
                (state == o.value, state)
            };
            if ok {
                linearized.set(i);
                if memo.insert(&mut linearized, new_state) {
                    if memo.bytes() > MEMO_BYTE_LIMIT {
                        return Search::Unknown(format!(
                            "memo cache exceeded {} MiB over {n} ops",
                            MEMO_BYTE_LIMIT >> 20
                        ));
                    }
                    stack.push((entry, state));
                    state = new_state;
                    if o.required {
                        remaining -= 1;
                    }
                    lift(&mut next, &mut prev, entry, ret_pos[i]);
                    entry = next[head];
                    continue;
                }
                linearized.clear(i);
            }
            entry = next[entry];
        } else {
            // The return of an op not yet linearized (or, defensively, the
            // end of the list): this order cannot go on.
            if entry != NIL {
                if entry > frontier {
                    frontier = entry;
                    frontier_states.clear();
                }
                if entry == frontier
                    && frontier_states.len() < 8
                    && !frontier_states.contains(&state)
                {
                    frontier_states.push(state);
                }
            }
            // Undo the last choice. A read that was linearized is undone
            // too and never skipped: it changes no state, and it could be
            // linearized where it was, so any success that placed it later
            // would also succeed with it there, and that was just explored.
            // Only writes branch.
            entry = loop {
                let Some((call, prior)) = stack.pop() else {
                    return Search::Stuck {
                        op: entry_op[frontier] as usize,
                        states: frontier_states,
                    };
                };
                let i = entry_op[call] as usize;
                linearized.clear(i);
                state = prior;
                if lops[i].required {
                    remaining += 1;
                }
                unlift(&mut next, &mut prev, call, ret_pos[i]);
                if lops[i].write {
                    break next[call];
                }
            };
        }
    }
}

/// The set of linearized ops (indexes in call-time order), with its
/// Zobrist hash kept up to date in O(1) per change, and hints that bound
/// the span of words a memo entry must store.
struct OpSet {
    bits: Vec<u64>,
    keys: Vec<u64>,
    hash: u64,
    /// No word before this one has a zero bit.
    low: usize,
    /// No word after this one has a set bit.
    high: usize,
}

impl OpSet {
    fn new(n: usize) -> Self {
        OpSet {
            bits: vec![0; n.div_ceil(64)],
            keys: (0..n as u64).map(splitmix64).collect(),
            hash: 0,
            low: 0,
            high: 0,
        }
    }

    fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
        self.hash ^= self.keys[i];
        self.high = self.high.max(i / 64);
    }

    fn clear(&mut self, i: usize) {
        self.bits[i / 64] &= !(1 << (i % 64));
        self.hash ^= self.keys[i];
        self.low = self.low.min(i / 64);
    }

    /// The set as (first word not all ones, the words from there to the
    /// last non-zero one): canonical, and short because ops are linearized
    /// roughly in call order, so everything before a small window is in.
    fn window(&mut self) -> (usize, &[u64]) {
        while self.low < self.bits.len() && self.bits[self.low] == !0 {
            self.low += 1;
        }
        while self.high > 0 && self.bits[self.high] == 0 {
            self.high -= 1;
        }
        let end = (self.high + 1).min(self.bits.len()).max(self.low);
        (self.low, &self.bits[self.low..end])
    }
}

/// The memo cache of (linearized set, state) pairs already explored. Sets
/// are stored exactly (a hash collision must not prune a branch) but
/// compactly, as windows in one arena, chained per (hash, state).
#[derive(Default)]
struct Memo {
    index: HashMap<(u64, u32), u32, BuildHasherDefault<MixHasher>>,
    entries: Vec<MemoEntry>,
    arena: Vec<u64>,
}

struct MemoEntry {
    base: usize,
    off: usize,
    len: usize,
    next: u32,
}

const NO_ENTRY: u32 = u32::MAX;

impl Memo {
    /// Records (set, state); false if it was already recorded.
    fn insert(&mut self, set: &mut OpSet, state: u32) -> bool {
        let key = (set.hash, state);
        let (base, window) = set.window();
        let head = self.index.get(&key).copied().unwrap_or(NO_ENTRY);
        let mut cur = head;
        while cur != NO_ENTRY {
            let e = &self.entries[cur as usize];
            if e.base == base && self.arena[e.off..e.off + e.len] == *window {
                return false;
            }
            cur = e.next;
        }
        let off = self.arena.len();
        self.arena.extend_from_slice(window);
        self.entries.push(MemoEntry {
            base,
            off,
            len: window.len(),
            next: head,
        });
        self.index.insert(key, (self.entries.len() - 1) as u32);
        true
    }

    /// Roughly the memory held, for the limit.
    fn bytes(&self) -> usize {
        self.arena.capacity() * 8
            + self.entries.capacity() * std::mem::size_of::<MemoEntry>()
            + self.index.capacity() * 24
    }
}

/// Removes a call entry and its return from the list (dancing links).
fn lift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    for e in [call, ret] {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    }
}

/// Puts back what `lift` removed, in reverse order, so the entries' own
/// (untouched) links are valid again.
fn unlift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    for e in [ret, call] {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The memo keys are already uniformly random (Zobrist) hashes, so a cheap
/// mix beats SipHash on this hot path.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
}

fn describe_failure(
    lops: &[LinOp],
    stuck: usize,
    states: &[u32],
    names: &[Option<String>],
    written: &[bool],
) -> Failure {
    let s = &lops[stuck];
    let prefix_ops = lops.iter().filter(|o| o.ret < s.ret).count();
    // Ops concurrent with the stuck one: required ones first, then the
    // open-ended writes invoked closest before it.
    let mut concurrent: Vec<&LinOp> = lops
        .iter()
        .enumerate()
        .filter(|(i, o)| *i != stuck && o.call <= s.ret && o.ret >= s.call)
        .map(|(_, o)| o)
        .collect();
    concurrent.sort_by_key(|o| (!o.required, s.call.abs_diff(o.call)));
    concurrent.truncate(WINDOW_CONCURRENT);
    let mut before: Vec<&LinOp> = lops.iter().filter(|o| o.ret < s.call).collect();
    before.sort_by_key(|o| std::cmp::Reverse(o.ret));
    before.truncate(WINDOW_BEFORE);
    let mut window: Vec<Op> = std::iter::once(s)
        .chain(concurrent)
        .chain(before)
        .map(|o| o.op.clone())
        .collect();
    window.sort_by_key(|o| (o.invoke_ns, o.index));
    let states: Vec<Option<String>> = states
        .iter()
        .map(|&i| names.get(i as usize).cloned().flatten())
        .collect();
    let shown: Vec<String> = states
        .iter()
        .map(|v| v.as_deref().unwrap_or("null").to_string())
        .collect();
    let what = match s.op.f {
        OpKind::Read => format!("read returning {}", s.op.value.as_deref().unwrap_or("null")),
        _ => format!("write of {}", s.op.value.as_deref().unwrap_or("null")),
    };
    // A read of a value nothing wrote is often a wrong initial value.
    let hint = if !s.write && !written.get(s.value as usize).copied().unwrap_or(true) {
        "; no write wrote that value (if it is the initial value, say so in run.json's initial_value)"
    } else {
        ""
    };
    let sentence = format!(
        "the {prefix_ops} ops returning earlier linearize, but no order lets op {} ({what} by process {}, {}..{} ns) complete; the register could hold only {}{hint}",
        s.op.index,
        s.op.process,
        s.op.invoke_ns,
        s.op.complete_ns.map_or("?".to_string(), |t| t.to_string()),
        if shown.is_empty() { "-".to_string() } else { shown.join(" or ") }
    );
    Failure {
        stuck: s.op.clone(),
        prefix_ops,
        states,
        window,
        sentence,
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::testing::{numbered, op, r, w};
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
    fn linearizable_history_passes() {
        let h = numbered(vec![
            r(0, None, 0, 5),
            w(1, "a", Ok, 1, 10),
            r(0, Some("a"), 6, 12), // concurrent with the write: fine
            w(2, "b", Ok, 11, 20),
            r(0, Some("a"), 13, 15), // before b may take effect
            r(0, Some("b"), 21, 22),
            w(1, "c", Fail, 23, 24), // never happened
            r(0, Some("b"), 25, 26),
        ]);
        let res = run(&h);
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
    }

    #[test]
    fn stale_read_fails_with_the_right_key() {
        let mut h = numbered(vec![
            w(1, "a", Ok, 0, 10),
            w(1, "b", Ok, 11, 20),
            r(0, Some("a"), 30, 40), // stale: b completed before
        ]);
        // Another key that is fine.
        h.push(op(3, OpKind::Write, "other", Some("z"), Ok, 0, Some(1)));
        h.push(op(4, OpKind::Read, "other", Some("z"), Ok, 2, Some(3)));
        let res = run(&h);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.details["failure"]["key"], "k");
        assert_eq!(res.details["failure"]["stuck_op"]["index"], 2);
        assert_eq!(res.details["keys"]["other"]["valid"], true);
        assert!(res.summary.contains("on k"), "{}", res.summary);
        let win = res.details["failure"]["window"].as_array().unwrap();
        assert!(win.iter().any(|o| o["failing"] == true));
        assert_eq!(res.details["failure"]["possible_states"][0], "b");
    }

    #[test]
    fn info_writes_may_take_effect_late_or_never() {
        let h = numbered(vec![
            w(1, "a", Ok, 0, 10),
            w(2, "x", Info, 5, 6), // timed out
            r(0, Some("a"), 20, 21),
            r(0, Some("x"), 100, 101), // x took effect long after its info
            r(0, Some("x"), 102, 103),
            w(3, "never", Info, 50, 60), // never read: never happened
        ]);
        let res = run(&h);
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
        // But an info write cannot take effect before its invoke.
        let h = numbered(vec![r(0, Some("x"), 0, 1), w(2, "x", Info, 5, 6)]);
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn initial_value_is_configurable() {
        let h = numbered(vec![
            r(0, Some("init"), 0, 1),
            w(1, "init", Info, 2, 3), // not the sole writer of "init"
            w(1, "a", Ok, 4, 5),
            r(0, Some("a"), 6, 7),
        ]);
        let init = InitialValues::all(Some("init"));
        let budget = Budget::new(Duration::from_secs(10));
        assert_eq!(check(&h, &init, &budget).valid, Validity::Valid);
        // With a null initial value, the write of init came too late.
        assert_eq!(run(&h).valid, Validity::Invalid);
        let h = numbered(vec![r(0, Some("init"), 0, 1)]);
        let res = run(&h);
        assert_eq!(res.valid, Validity::Invalid);
        assert!(res.summary.contains("initial_value"), "{}", res.summary);
        assert_eq!(check(&h, &init, &budget).valid, Validity::Valid);
    }

    #[test]
    fn read_of_never_written_value_fails() {
        let h = numbered(vec![w(1, "a", Ok, 0, 10), r(0, Some("zz"), 11, 12)]);
        assert_eq!(run(&h).valid, Validity::Invalid);
        // And null after a completed write is a stale read too.
        let h = numbered(vec![w(1, "a", Ok, 0, 10), r(0, None, 11, 12)]);
        assert_eq!(run(&h).valid, Validity::Invalid);
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let h = random_history(400, 5, 1);
        let res = check(&h, &InitialValues::default(), &Budget::new(Duration::ZERO));
        assert_eq!(res.valid, Validity::Unknown, "{}", res.summary);
        assert!(res.summary.contains("budget"));
    }

    #[test]
    fn large_random_valid_history_is_fast() {
        let h = random_history(2000, 8, 7);
        let t = std::time::Instant::now();
        let res = run(&h);
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    #[ignore = "timing: 10k ops per key; run by hand with --release"]
    fn ten_thousand_ops_per_key() {
        let h = random_history(10_000, 10, 3);
        let t = std::time::Instant::now();
        let res = run(&h);
        eprintln!("10k ops: {:?} {}", t.elapsed(), res.summary);
        assert_eq!(res.valid, Validity::Valid);
        // A stale read at the very end: the search must exhaust every order.
        let mut h = h;
        let end = h.iter().filter_map(|o| o.complete_ns).max().unwrap_or(0);
        let old = h
            .iter()
            .find(|o| o.f == OpKind::Write && o.outcome == Ok)
            .unwrap();
        let mut stale = r(99, old.value.as_deref(), end + 10, end + 20);
        stale.index = 99_999;
        h.push(stale);
        let t = std::time::Instant::now();
        let res = run(&h);
        eprintln!("10k ops + stale read: {:?} {}", t.elapsed(), res.summary);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.details["failure"]["stuck_op"]["index"], 99_999);
    }

    /// The specification, by brute force: some order of the ops that
    /// respects real time and the register, where ok ops must appear, info
    /// writes may, and fail ops and non-ok reads do not.
    fn brute_force(ops: &[Op], initial: Option<&str>) -> bool {
        struct B {
            write: bool,
            value: Option<String>,
            call: u64,
            ret: u64,
            required: bool,
        }
        let bs: Vec<B> = ops
            .iter()
            .filter(|o| o.outcome != Fail && !(o.f == OpKind::Read && o.outcome != Ok))
            .map(|o| B {
                write: o.f == OpKind::Write,
                value: o.value.clone(),
                call: o.invoke_ns,
                ret: match (o.outcome, o.complete_ns) {
                    (Ok, Some(t)) => t,
                    _ => u64::MAX,
                },
                required: o.outcome == Ok,
            })
            .collect();
        fn go(bs: &[B], used: &mut Vec<bool>, state: Option<String>) -> bool {
            if bs.iter().zip(used.iter()).all(|(b, u)| *u || !b.required) {
                return true;
            }
            for i in 0..bs.len() {
                if used[i] {
                    continue;
                }
                // Every op that returned before i was invoked goes first.
                let blocked = (0..bs.len()).any(|j| !used[j] && j != i && bs[j].ret < bs[i].call);
                if blocked || (!bs[i].write && bs[i].value != state) {
                    continue;
                }
                used[i] = true;
                let next = if bs[i].write {
                    bs[i].value.clone()
                } else {
                    state.clone()
                };
                let found = go(bs, used, next);
                used[i] = false;
                if found {
                    return true;
                }
            }
            false
        }
        go(&bs, &mut vec![false; bs.len()], initial.map(str::to_string))
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let values = [None, Some("a"), Some("b"), Some("c")];
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..3000 {
            let n = 2 + (next() % 6) as usize;
            let h: Vec<Op> = (0..n)
                .map(|i| {
                    let start = next() % 20;
                    let end = start + next() % 10;
                    let outcome = match next() % 8 {
                        0 => Fail,
                        1 => Info,
                        _ => Ok,
                    };
                    let o = if next() % 2 == 0 {
                        op(
                            i as u32,
                            OpKind::Write,
                            "k",
                            values[1 + (next() % 3) as usize],
                            outcome,
                            start,
                            Some(end),
                        )
                    } else {
                        op(
                            i as u32,
                            OpKind::Read,
                            "k",
                            values[(next() % 4) as usize],
                            outcome,
                            start,
                            Some(end),
                        )
                    };
                    Op {
                        index: i as u64,
                        ..o
                    }
                })
                .collect();
            let initial = values[(next() % 2) as usize];
            let expect = brute_force(&h, initial);
            let budget = Budget::new(Duration::from_secs(10));
            let got = check(&h, &InitialValues::all(initial), &budget).valid;
            assert_eq!(
                got == Validity::Valid,
                expect,
                "initial {initial:?}: {h:#?}"
            );
            if expect {
                valid += 1
            } else {
                invalid += 1
            }
        }
        assert!(
            valid > 100 && invalid > 100,
            "{valid} valid, {invalid} invalid"
        );
    }

    /// A valid concurrent register history: each op takes effect at a random
    /// instant inside its interval; some writes time out (info) and take
    /// effect late or never.
    pub(crate) fn random_history(n: usize, procs: u32, seed: u64) -> Vec<Op> {
        let mut rng = seed.wrapping_mul(6364136223846793005) | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // (effect time, op index) pairs; applied in order to compute reads.
        let mut ops: Vec<Op> = Vec::new();
        let mut free_at = vec![0u64; procs as usize];
        let mut effects: Vec<(u64, usize)> = Vec::new();
        for i in 0..n {
            let p = (next() % procs as u64) as usize;
            let start = free_at[p] + next() % 50;
            let dur = 1 + next() % 200;
            let end = start + dur;
            free_at[p] = end + 1;
            let is_write = next() % 2 == 0;
            let info = is_write && next() % 10 == 0;
            let effect = if info {
                if next() % 2 == 0 {
                    Some(start + next() % 2000)
                } else {
                    None
                }
            } else {
                Some(start + next() % dur)
            };
            let f = if is_write {
                OpKind::Write
            } else {
                OpKind::Read
            };
            let v = if is_write {
                Some(format!("v{i}"))
            } else {
                None
            };
            let outcome = if info { Info } else { Ok };
            let mut o = op(p as u32, f, "k", v.as_deref(), outcome, start, Some(end));
            o.index = i as u64;
            if let Some(t) = effect {
                effects.push((t, i));
            }
            ops.push(o);
        }
        effects.sort();
        let mut reg: Option<String> = None;
        for (_, i) in effects {
            if ops[i].f == OpKind::Write {
                reg = ops[i].value.clone();
            } else {
                ops[i].value = reg.clone();
            }
        }
        ops
    }
}
