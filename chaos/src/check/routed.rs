//! Routed reads (`routed-reads`): what a client sees through the routing
//! mesh, judged from `routed.jsonl` (reads of the ledger's and the beacon's
//! state line through a random node's address), Docker's events and
//! `cuts.jsonl`. Three rules:
//!
//! 1. **Live.** An answer comes from a container Docker ran during the
//!    read: one of its lives (start to die, as single-instance builds
//!    them) meets the read's interval, widened by [`SLACK_NS`] for the
//!    mapping of Docker's wall-clock timestamps onto the run clock.
//! 2. **Not stale.** When the read began, no other container of the app
//!    that started after the answering one's life began was running
//!    (started more than [`SLACK_NS`] before the read and not dead): a
//!    client is never served by an instance the cluster has replaced.
//! 3. **Cut-off nodes refuse.** Through a node cut off from the cluster
//!    (a cut window of `cuts.jsonl`), a read begun at least
//!    [`FENCE_BOUND_NS`] after the cut and ended before it was lifted is
//!    refused: the node's lease ran out within the node lease of the cut,
//!    so from then on it forwards nothing and its own copies are fenced.
//!    An answer is a stale route or an unfenced copy; a timeout means the
//!    node still forwards into the partition. (A connection reset or
//!    closed by Docker's proxy while a fenced container restarts and exits
//!    is not an answer and no violation.)
//!
//! Availability is reported, not judged: the share of routed reads
//! answered per phase (a partition or cut window, a volume move the
//! observer saw in flight, another fault, or none), in all and per app, and
//! how many answers came from another node than the one read through (the
//! mesh forwarding). The clients' own `ctl move`s of the ledger stop it for
//! a moment even in "no-fault" time. A run whose routed
//! reads were never answered is unknown: the check saw no routing.

use super::single_instance::{docker_intervals, Interval};
use crate::history::{
    ContainerEvent, CutWindow, MoveRecord, NemesisEvent, RoutedOutcome, RoutedRead,
};
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Slack for Docker's timestamps (its wall clock mapped onto the run's
/// monotonic one; `die` is stamped after the process is gone, `start`
/// around the moment it begins).
pub const SLACK_NS: u64 = 250_000_000;
/// From a cut to the moment every read through the cut-off node must be
/// refused: the leader's grace before it declares a node down, which the
/// design makes outlast the node's lease, a heartbeat and the kill
/// (`flocker::scheduler::DOWN_GRACE`).
pub const FENCE_BOUND_NS: u64 = flocker::scheduler::DOWN_GRACE.as_nanos() as u64;
/// Violations listed in the details at most; the count is always exact.
const MAX_LISTED: usize = 50;

/// The phases availability is reported for, in order of precedence.
const PHASES: [&str; 4] = ["partition", "move", "other-fault", "no-fault"];

/// Judges `dir`.
pub fn check(dir: &Path) -> InvariantResult {
    let reads: Vec<RoutedRead> = match super::load_jsonl(dir, "routed.jsonl") {
        Ok(r) => r,
        Err(e) => return InvariantResult::unknown(e),
    };
    let events: Vec<ContainerEvent> = match super::load_jsonl(dir, "docker-events.jsonl") {
        Ok(e) => e,
        Err(e) => return InvariantResult::unknown(e),
    };
    let cuts: Vec<CutWindow> = match super::load_jsonl(dir, "cuts.jsonl") {
        Ok(c) => c,
        Err(e) => return InvariantResult::unknown(e),
    };
    // Only for the availability figures: absent files leave phases out.
    let nemesis: Vec<NemesisEvent> = super::load_jsonl(dir, "nemesis.jsonl").unwrap_or_default();
    let moves: Vec<MoveRecord> = super::load_jsonl(dir, "moves.jsonl").unwrap_or_default();
    judge(&reads, &docker_intervals(&events), &cuts, &nemesis, &moves)
}

/// The judgement from parsed inputs (see the module's doc).
pub fn judge(
    reads: &[RoutedRead],
    lives: &[Interval],
    cuts: &[CutWindow],
    nemesis: &[NemesisEvent],
    moves: &[MoveRecord],
) -> InvariantResult {
    let mut violations = Vec::new();
    let mut after_cut: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in reads {
        if let Some(v) = live_and_fresh(r, lives) {
            violations.push(v);
        }
        if let Some(w) = cuts.iter().find(|w| {
            w.node == r.via && r.invoke_ns >= w.from_ns + FENCE_BOUND_NS && r.complete_ns <= w.to_ns
        }) {
            *after_cut.entry(outcome_name(r.outcome)).or_default() += 1;
            let what = match r.outcome {
                RoutedOutcome::Answered => Some("answered"),
                RoutedOutcome::Timeout => Some("timed out (still forwarding)"),
                RoutedOutcome::Refused | RoutedOutcome::Error => None,
            };
            if let Some(what) = what {
                violations.push(json!({
                    "rule": "cut-off-refuses",
                    "read": r,
                    "cut": w,
                    "why": format!(
                        "read through {} {:.3} s after it was cut off ({}) {what}",
                        r.via,
                        (r.invoke_ns - w.from_ns) as f64 / 1e9,
                        w.why
                    ),
                }));
            }
        }
    }
    let answered = reads
        .iter()
        .filter(|r| r.outcome == RoutedOutcome::Answered)
        .count();
    let forwarded = reads
        .iter()
        .filter(|r| r.answer.as_ref().is_some_and(|a| a.node != r.via))
        .count();
    let details = json!({
        "reads": reads.len(),
        "answered": answered,
        "answered_from_another_node": forwarded,
        "availability": availability(reads, cuts, nemesis, moves),
        "through_cut_off_nodes_after_bound": after_cut,
        "fence_bound_ms": FENCE_BOUND_NS / 1_000_000,
        "violation_count": violations.len(),
        "violations": violations.iter().take(MAX_LISTED).collect::<Vec<_>>(),
    });
    if let Some(first) = violations.first() {
        return InvariantResult::new(
            Validity::Invalid,
            format!(
                "{} violation(s); first: {}",
                violations.len(),
                first["why"].as_str().unwrap_or("?")
            ),
            details,
        );
    }
    if reads.is_empty() {
        return InvariantResult::new(Validity::Unknown, "no routed reads were made", details);
    }
    if answered == 0 {
        return InvariantResult::new(
            Validity::Unknown,
            format!(
                "none of {} routed reads was answered: the check saw no routing",
                reads.len()
            ),
            details,
        );
    }
    let refused_after: usize = after_cut.get("refused").copied().unwrap_or(0);
    InvariantResult::new(
        Validity::Valid,
        format!(
            "{answered} of {} routed reads answered ({forwarded} through another node), each by a live, current instance; {refused_after} read(s) through cut-off nodes after {} ms refused",
            reads.len(),
            FENCE_BOUND_NS / 1_000_000
        ),
        details,
    )
}

/// Rules 1 and 2 for one read; the violation, if any.
fn live_and_fresh(r: &RoutedRead, lives: &[Interval]) -> Option<serde_json::Value> {
    let a = r.answer.as_ref()?;
    if a.container.is_empty() {
        return Some(json!({"rule": "live", "read": r, "why": "the answer names no container"}));
    }
    let (from, to) = (
        r.invoke_ns.saturating_sub(SLACK_NS),
        r.complete_ns.saturating_add(SLACK_NS),
    );
    let own: Vec<&Interval> = lives
        .iter()
        .filter(|l| l.app == a.app && l.who.starts_with(&a.container))
        .collect();
    // The answering life: the latest that meets the read.
    let Some(life) = own
        .iter()
        .filter(|l| l.start_ns <= to && l.end_ns.is_none_or(|e| e >= from))
        .max_by_key(|l| l.start_ns)
    else {
        return Some(json!({
            "rule": "live",
            "read": r,
            "lives": own.iter().map(|l| json!({"start_ns": l.start_ns, "end_ns": l.end_ns, "node": l.node})).collect::<Vec<_>>(),
            "why": format!(
                "{} answered through {} at {:.3} s from container {}, which Docker did not run then",
                a.app, r.via, r.invoke_ns as f64 / 1e9, a.container
            ),
        }));
    };
    let newer = lives.iter().find(|l| {
        l.app == a.app
            && !l.who.starts_with(&a.container)
            && l.start_ns > life.start_ns
            && l.start_ns + SLACK_NS < r.invoke_ns
            && l.end_ns.is_none_or(|e| e > r.invoke_ns)
    })?;
    Some(json!({
        "rule": "not-stale",
        "read": r,
        "newer": {"container": newer.who, "node": newer.node, "start_ns": newer.start_ns},
        "why": format!(
            "{} answered through {} at {:.3} s by container {} on {}, while container {} on {} had been running since {:.3} s",
            a.app, r.via, r.invoke_ns as f64 / 1e9, a.container, a.node,
            newer.who, newer.node, newer.start_ns as f64 / 1e9
        ),
    }))
}

fn outcome_name(o: RoutedOutcome) -> &'static str {
    match o {
        RoutedOutcome::Answered => "answered",
        RoutedOutcome::Refused => "refused",
        RoutedOutcome::Timeout => "timeout",
        RoutedOutcome::Error => "error",
    }
}

/// Per phase: reads, each outcome's count and the share answered.
fn availability(
    reads: &[RoutedRead],
    cuts: &[CutWindow],
    nemesis: &[NemesisEvent],
    moves: &[MoveRecord],
) -> serde_json::Value {
    let periods = fault_periods(nemesis);
    let within = |t: u64, from: u64, to: Option<u64>| from <= t && to.is_none_or(|e| t < e);
    let phase_of = |t: u64| -> &'static str {
        let partition = cuts.iter().any(|w| within(t, w.from_ns, Some(w.to_ns)))
            || periods
                .iter()
                .any(|(n, f, e)| n == "partition" && within(t, *f, *e));
        if partition {
            "partition"
        } else if moves.iter().any(|m| within(t, m.start_ns, Some(m.end_ns))) {
            "move"
        } else if periods.iter().any(|(_, f, e)| within(t, *f, *e)) {
            "other-fault"
        } else {
            "no-fault"
        }
    };
    // Per phase, then per app within it ("all": every app).
    let mut counts: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, usize>>> = BTreeMap::new();
    for r in reads {
        let phase = counts.entry(phase_of(r.invoke_ns)).or_default();
        for app in ["all", r.app.as_str()] {
            let c = phase.entry(app).or_default();
            *c.entry("reads").or_default() += 1;
            *c.entry(outcome_name(r.outcome)).or_default() += 1;
        }
    }
    let with_share = |c: &BTreeMap<&str, usize>| {
        let total = c.get("reads").copied().unwrap_or(0);
        let answered = c.get("answered").copied().unwrap_or(0);
        let mut v = json!(c);
        v["answered_share"] =
            json!((answered as f64 / total.max(1) as f64 * 1000.0).round() / 1000.0);
        v
    };
    let mut out = serde_json::Map::new();
    for phase in PHASES {
        let Some(apps) = counts.get(phase) else {
            continue;
        };
        let mut v = apps.get("all").map(with_share).unwrap_or_default();
        for (app, c) in apps.iter().filter(|(a, _)| **a != "all") {
            v["by_app"][*app] = with_share(c);
        }
        out.insert(phase.to_string(), v);
    }
    serde_json::Value::Object(out)
}

/// (nemesis, start, stop) of each fault; one fault runs at a time.
fn fault_periods(events: &[NemesisEvent]) -> Vec<(String, u64, Option<u64>)> {
    let mut out: Vec<(String, u64, Option<u64>)> = Vec::new();
    for e in events {
        match e.phase.as_str() {
            "start" => out.push((e.nemesis.clone(), e.time_ns, None)),
            "stop" => {
                if let Some(open) = out
                    .iter_mut()
                    .rev()
                    .find(|(n, _, end)| *n == e.nemesis && end.is_none())
                {
                    open.2 = Some(e.time_ns);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RoutedAnswer;

    const S: u64 = 1_000_000_000;

    fn life(app: &str, id: &str, node: &str, start: u64, end: Option<u64>) -> Interval {
        Interval {
            app: app.into(),
            who: id.into(),
            node: node.into(),
            start_ns: start,
            end_ns: end,
        }
    }

    fn read(at: u64, via: &str, outcome: RoutedOutcome, by: Option<(&str, &str)>) -> RoutedRead {
        RoutedRead {
            invoke_ns: at,
            complete_ns: at + S / 100,
            app: "beacon".into(),
            port: 18101,
            via: via.into(),
            outcome,
            answer: by.map(|(container, node)| RoutedAnswer {
                app: "beacon".into(),
                instance: "i".into(),
                container: container.into(),
                node: node.into(),
                seq: 3,
            }),
            error: None,
        }
    }

    fn cut(node: &str, from: u64, to: u64) -> CutWindow {
        CutWindow {
            node: node.into(),
            from_ns: from,
            to_ns: to,
            why: "n1 cut from n2,n3".into(),
        }
    }

    /// beacon: container aaa on n1 from 1 s to 20 s, then bbb on n2 from 21 s.
    fn lives() -> Vec<Interval> {
        vec![
            life("beacon", "aaa0000000000000", "n1", S, Some(20 * S)),
            life("beacon", "bbb0000000000000", "n2", 21 * S, None),
        ]
    }

    #[test]
    fn answers_from_the_current_container_through_any_node_are_valid() {
        let reads = [
            read(5 * S, "n2", RoutedOutcome::Answered, Some(("aaa", "n1"))),
            read(30 * S, "n1", RoutedOutcome::Answered, Some(("bbb", "n2"))),
            read(31 * S, "n3", RoutedOutcome::Refused, None),
        ];
        let r = judge(&reads, &lives(), &[], &[], &[]);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["answered_from_another_node"], 2);
        assert_eq!(r.details["availability"]["no-fault"]["reads"], 3);
    }

    #[test]
    fn an_answer_from_a_dead_or_replaced_container_is_a_violation() {
        let dead = [read(
            25 * S,
            "n2",
            RoutedOutcome::Answered,
            Some(("aaa", "n1")),
        )];
        let r = judge(&dead, &lives(), &[], &[], &[]);
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.details["violations"][0]["rule"], "live");

        // aaa never died (no fencing) while bbb runs: stale.
        let unfenced = vec![
            life("beacon", "aaa0000000000000", "n1", S, None),
            life("beacon", "bbb0000000000000", "n2", 21 * S, None),
        ];
        let stale = [read(
            25 * S,
            "n1",
            RoutedOutcome::Answered,
            Some(("aaa", "n1")),
        )];
        let r = judge(&stale, &unfenced, &[], &[], &[]);
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.details["violations"][0]["rule"], "not-stale");
    }

    #[test]
    fn a_cut_off_node_must_refuse_after_the_bound() {
        let cuts = [cut("n1", 10 * S, 40 * S)];
        // Before the bound anything goes; after it, only refusals (and
        // errors) through n1; other nodes are not judged by this rule.
        let early = 10 * S + FENCE_BOUND_NS - S / 10;
        let late = 10 * S + FENCE_BOUND_NS + S / 10;
        let ok = [
            read(early, "n1", RoutedOutcome::Timeout, None),
            read(late, "n1", RoutedOutcome::Refused, None),
            read(late, "n1", RoutedOutcome::Error, None),
            read(late, "n2", RoutedOutcome::Timeout, None),
            read(late, "n3", RoutedOutcome::Answered, Some(("aaa", "n1"))),
        ];
        let r = judge(&ok, &lives(), &cuts, &[], &[]);
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary);
        assert_eq!(r.details["through_cut_off_nodes_after_bound"]["refused"], 1);
        assert_eq!(r.details["availability"]["partition"]["reads"], 5);

        for bad in [
            read(late, "n1", RoutedOutcome::Timeout, None),
            read(late, "n1", RoutedOutcome::Answered, Some(("aaa", "n1"))),
        ] {
            let r = judge(&[bad], &lives(), &cuts, &[], &[]);
            assert_eq!(r.valid, Validity::Invalid, "{}", r.summary);
            assert_eq!(r.details["violations"][0]["rule"], "cut-off-refuses");
        }
        // A read that outlasts the cut is not judged by it.
        let mut spanning = read(40 * S - S / 100, "n1", RoutedOutcome::Timeout, None);
        spanning.complete_ns = 41 * S;
        assert_ne!(
            judge(&[spanning], &lives(), &cuts, &[], &[]).valid,
            Validity::Invalid
        );
    }

    #[test]
    fn no_reads_or_no_answers_is_unknown() {
        assert_eq!(judge(&[], &lives(), &[], &[], &[]).valid, Validity::Unknown);
        let refused = [read(5 * S, "n1", RoutedOutcome::Refused, None)];
        assert_eq!(
            judge(&refused, &lives(), &[], &[], &[]).valid,
            Validity::Unknown
        );
    }

    #[test]
    fn phases_follow_faults_and_moves() {
        let ev = |t: u64, n: &str, phase: &str| NemesisEvent {
            time_ns: t,
            nemesis: n.into(),
            phase: phase.into(),
            detail: String::new(),
            nodes: vec![],
            probe: None,
        };
        let nemesis = [ev(2 * S, "kill", "start"), ev(4 * S, "kill", "stop")];
        let moves = [MoveRecord {
            start_ns: 6 * S,
            end_ns: 8 * S,
            app: "ledger".into(),
            from: "n1".into(),
            to: "n2".into(),
            bytes: None,
            checksum_ok: None,
        }];
        let reads = [
            read(S, "n2", RoutedOutcome::Answered, Some(("aaa", "n1"))),
            read(3 * S, "n2", RoutedOutcome::Timeout, None),
            read(7 * S, "n2", RoutedOutcome::Answered, Some(("aaa", "n1"))),
        ];
        let r = judge(&reads, &lives(), &[], &nemesis, &moves);
        let a = &r.details["availability"];
        assert_eq!(a["no-fault"]["answered_share"], 1.0);
        assert_eq!(a["other-fault"]["timeout"], 1);
        assert_eq!(a["move"]["answered"], 1);
        assert_eq!(a["move"]["by_app"]["beacon"]["reads"], 1);
    }
}
