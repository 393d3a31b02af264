//! Bounded loss: what a failover may lose of a replicated app's log. When
//! the host owning a volume with replicas is lost (crashed, killed, cut
//! off, stopped) the leader fails the app over to the freshest replica's
//! last committed point, so the records written after that point are gone:
//! every record acknowledged (fsynced, then heartbeated) more than the
//! app's `max_lag` before its host was lost must survive, and only those
//! within `max_lag` of the loss — or after it — may be missing or replaced
//! by the new owner's records. The final log stays one hash chain.
//!
//! Inputs, all on the run's clock except the cluster's own account:
//! - the failovers, from `cluster-history.json` and `failovers.jsonl` (the
//!   history lines "<app>: failed over from X (down) to Y at epoch E, from
//!   its point S of epoch P", at the end of the run and as the observer
//!   copied them when they happened), timed by `owners.jsonl` (the move observer's linearizable status
//!   reads: epoch E was committed after `prev_invoke_ns` and before
//!   `time_ns`) and by the new owner's first heartbeat;
//! - when the host was lost: the start of the fault that touched X and
//!   could have brought the failover (`nemesis.jsonl`: it began at least
//!   `DOWN_GRACE` less a heartbeat interval before the failover and ended
//!   shortly before it at the earliest); a crash's start is logged right
//!   after the kill. No such fault: X was declared down by itself, and the
//!   loss is measured from the latest instant that allows;
//! - what was lost: heartbeats (`witness.jsonl`) whose record is not in the
//!   final log (`volumes/<app>.log`), acknowledged before the failover and
//!   past the promoted point (the new owner's first record is the point's
//!   last plus one). Each lost record is charged to the first failover
//!   after it. A heartbeat's time is when the witness got it, just after
//!   the fsync, so it is never earlier than the record's fsync.
//!
//! volume-integrity uses the same accounting: a heartbeat missing from the
//! log is allowed exactly when a failover lost it within `max_lag`.

use super::volume::Chain;
use super::Budget;
use crate::history::{FailoverEntry, Heartbeat, NemesisEvent, OwnerSeen};
use crate::verdict::{InvariantResult, Validity};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// How long before a failover its host's trouble must have begun: the
/// leader's grace, less the heartbeat the fault may have just missed.
const MIN_DOWN_NS: u64 = (flocker::scheduler::DOWN_GRACE.as_nanos()
    - flocker::scheduler::HEARTBEAT_INTERVAL.as_nanos()) as u64;
/// How long after a fault heals a failover it brought may still be
/// committed (the leader declared the node down just before it came back).
const AFTER_HEAL_NS: u64 = 5_000_000_000;

/// One failover, as the cluster's history tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub app: String,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub point_seq: u64,
    pub point_epoch: u64,
}

/// Reads a history summary line of a failover.
pub fn parse_failover(summary: &str) -> Option<Failover> {
    let (app, rest) = summary.split_once(": failed over from ")?;
    let (from, rest) = rest.split_once(" (down) to ")?;
    let (to, rest) = rest.split_once(" at epoch ")?;
    let (epoch, rest) = rest.split_once(", from its point ")?;
    let (point_seq, point_epoch) = rest.split_once(" of epoch ")?;
    Some(Failover {
        app: app.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        epoch: epoch.parse().ok()?,
        point_seq: point_seq.parse().ok()?,
        point_epoch: point_epoch.trim().parse().ok()?,
    })
}

#[derive(Deserialize)]
struct HistoryLine {
    index: u64,
    summary: String,
}

/// The failovers, oldest first: those in `cluster-history.json` (the
/// cluster's history at the end of the run, bounded) and those the move
/// observer copied to `failovers.jsonl` as they happened, by history index.
/// An error only when neither file can be read.
pub fn load_failovers(dir: &Path) -> Result<Vec<Failover>, String> {
    let at_end = super::load_json::<Vec<HistoryLine>>(dir, "cluster-history.json");
    let copied = super::load_jsonl::<FailoverEntry>(dir, "failovers.jsonl");
    let lines: BTreeMap<u64, String> = match (at_end, copied) {
        (Err(a), Err(b)) => return Err(format!("{a}; {b}")),
        (a, b) => a
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.index, l.summary))
            .chain(
                b.unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.index, e.summary)),
            )
            .collect(),
    };
    Ok(lines.values().filter_map(|s| parse_failover(s)).collect())
}

/// A fault's span, from `nemesis.jsonl`.
#[derive(Debug, Clone)]
struct Fault {
    nemesis: String,
    detail: String,
    nodes: Vec<String>,
    start_ns: u64,
    stop_ns: Option<u64>,
}

/// Pairs each `stop` with the open `start` of the same nemesis.
fn faults(events: &[NemesisEvent]) -> Vec<Fault> {
    let mut out: Vec<Fault> = Vec::new();
    for e in events {
        match e.phase.as_str() {
            "start" => out.push(Fault {
                nemesis: e.nemesis.clone(),
                detail: e.detail.clone(),
                nodes: e.nodes.clone(),
                start_ns: e.time_ns,
                stop_ns: None,
            }),
            "stop" => {
                if let Some(f) = out
                    .iter_mut()
                    .find(|f| f.stop_ns.is_none() && f.nemesis == e.nemesis)
                {
                    f.stop_ns = Some(e.time_ns);
                }
            }
            _ => {}
        }
    }
    out
}

/// What one failover cost.
#[derive(Debug, Clone)]
pub struct Loss {
    pub failover: Failover,
    /// When the failover was committed at the latest (run clock).
    pub at_ns: u64,
    /// When it was committed at the earliest.
    pub after_ns: u64,
    /// When the old owner's host was lost.
    pub host_lost_ns: u64,
    /// The fault that lost it, in words; `None`: declared down by itself.
    pub cause: Option<String>,
    /// The promoted point's last record, from the new owner's first one.
    pub point_record: Option<u64>,
    /// Heartbeats (indices into the app's heartbeats) this failover lost.
    pub lost: Vec<usize>,
    /// The earliest acknowledgement lost.
    pub first_lost_ns: Option<u64>,
    pub max_lag_ns: u64,
}

impl Loss {
    /// Seconds of acknowledged writes lost before the host was (0: none,
    /// or only what it wrote after).
    pub fn loss_s(&self) -> f64 {
        self.first_lost_ns
            .map_or(0.0, |t| self.host_lost_ns.saturating_sub(t) as f64 / 1e9)
    }

    /// Whether every record lost was acknowledged within `max_lag` of the
    /// host's loss, or after it.
    pub fn within(&self) -> bool {
        self.first_lost_ns
            .is_none_or(|t| t + self.max_lag_ns >= self.host_lost_ns)
    }
}

/// One app's failovers and what each lost; the heartbeats missing from the
/// log that no failover accounts for.
#[derive(Debug, Default)]
pub struct Accounting {
    pub losses: Vec<Loss>,
    /// Failovers the observer never saw (they cannot be judged).
    pub untimed: Vec<Failover>,
    /// Heartbeat index → the loss (index into `losses`) that took it.
    pub charged: BTreeMap<usize, usize>,
}

impl Accounting {
    /// Whether heartbeat `i` (acknowledged at `time_ns`) may be missing
    /// from the log: a failover lost it, and it was acknowledged within
    /// `max_lag` of its host's loss or after.
    pub fn allowed(&self, i: usize, time_ns: u64) -> bool {
        self.charged.get(&i).is_some_and(|&l| {
            let loss = &self.losses[l];
            time_ns + loss.max_lag_ns >= loss.host_lost_ns
        })
    }

    /// Which failover lost heartbeat `i`'s record (acknowledged at
    /// `time_ns`), if one did, in words.
    pub fn explain(&self, i: usize, time_ns: u64) -> Option<String> {
        let loss = &self.losses[*self.charged.get(&i)?];
        Some(format!(
            "lost by the failover from {} to {} at epoch {}, acknowledged {} s before {} was lost ({}); max_lag {} s",
            loss.failover.from,
            loss.failover.to,
            loss.failover.epoch,
            secs(loss.host_lost_ns.saturating_sub(time_ns)),
            loss.failover.from,
            loss.cause.as_deref().unwrap_or("declared down by itself"),
            secs(loss.max_lag_ns),
        ))
    }
}

fn secs(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e9)
}

/// Everything the accounting reads besides one app's log and heartbeats.
pub struct Inputs {
    pub failovers: Vec<Failover>,
    pub owners: Vec<OwnerSeen>,
    pub nemesis: Vec<NemesisEvent>,
    /// `max_lag` of each replicated app, from `run.json`.
    pub max_lag_ns: BTreeMap<String, u64>,
}

impl Inputs {
    /// Reads them; neither `cluster-history.json` nor `failovers.jsonl`, or
    /// no `owners.jsonl`, is an error (the failovers are then not known).
    pub fn load(dir: &Path) -> Result<Inputs, String> {
        let failovers = load_failovers(dir)?;
        let owners = super::load_jsonl::<OwnerSeen>(dir, "owners.jsonl")?;
        let nemesis = super::load_jsonl::<NemesisEvent>(dir, "nemesis.jsonl")?;
        let max_lag_ns = super::load_json::<serde_json::Value>(dir, "run.json")
            .ok()
            .and_then(|r| r.get("replicated").and_then(|v| v.as_object()).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(app, spec)| Some((app, spec["max_lag_ms"].as_u64()? * 1_000_000)))
            .collect();
        Ok(Inputs {
            failovers,
            owners,
            nemesis,
            max_lag_ns,
        })
    }
}

impl Inputs {
    /// When the observer first saw failover `f` (`time_ns`), and when the
    /// read before, still showing the old epoch, began: `f` was committed
    /// in between. `None`: never seen.
    pub fn seen(&self, f: &Failover) -> Option<(u64, u64)> {
        self.owners
            .iter()
            .find(|o| o.app == f.app && o.epoch >= f.epoch)
            .map(|o| (o.prev_invoke_ns.unwrap_or(0), o.time_ns))
    }

    /// Whether a failover of `app` away from `from` was committed between
    /// `start_ns` and `end_ns`, as far as the observer can tell: a move
    /// from `from` seen in flight then was given up by it, not finished.
    pub fn failed_over_during(&self, app: &str, from: &str, start_ns: u64, end_ns: u64) -> bool {
        self.failovers
            .iter()
            .filter(|f| f.app == app && f.from == from)
            .filter_map(|f| self.seen(f))
            .any(|(after, by)| after <= end_ns && by >= start_ns)
    }
}

/// Charges each of `app`'s heartbeats missing from `chain` to the failover
/// that lost it.
pub(crate) fn account(
    app: &str,
    chain: &Chain,
    beats: &[&Heartbeat],
    inputs: &Inputs,
) -> Accounting {
    let in_log = |b: &Heartbeat| chain.heads.get((b.seq - 1) as usize) == Some(&b.head);
    let faults = faults(&inputs.nemesis);
    let max_lag_ns = inputs.max_lag_ns.get(app).copied().unwrap_or(0);
    let mut first_heard: BTreeMap<&str, u64> = BTreeMap::new();
    for b in beats {
        first_heard.entry(b.instance.as_str()).or_insert(b.time_ns);
    }
    let mut acc = Accounting::default();
    for f in inputs.failovers.iter().filter(|f| f.app == app) {
        let Some((after_ns, seen_ns)) = inputs.seen(f) else {
            acc.untimed.push(f.clone());
            continue;
        };
        // The new owner's first record after the failover: its instance was
        // not heard before the failover could have happened.
        let first_new = beats.iter().find(|b| {
            b.node == f.to
                && first_heard
                    .get(b.instance.as_str())
                    .is_some_and(|&t| t > after_ns)
        });
        let at_ns = first_new.map_or(seen_ns, |b| b.time_ns.min(seen_ns));
        let cause = faults
            .iter()
            .filter(|c| c.nodes.contains(&f.from))
            .filter(|c| c.start_ns + MIN_DOWN_NS <= at_ns)
            .filter(|c| c.stop_ns.is_none_or(|s| s + AFTER_HEAL_NS >= after_ns))
            .max_by_key(|c| c.start_ns);
        let host_lost_ns = cause.map_or(at_ns.saturating_sub(MIN_DOWN_NS), |c| c.start_ns);
        acc.losses.push(Loss {
            failover: f.clone(),
            at_ns,
            after_ns,
            host_lost_ns,
            cause: cause.map(|c| format!("{}: {}", c.nemesis, c.detail)),
            point_record: first_new.map(|b| b.seq - 1),
            lost: Vec::new(),
            first_lost_ns: None,
            max_lag_ns,
        });
    }
    acc.losses.sort_by_key(|l| l.at_ns);
    for (i, b) in beats.iter().enumerate() {
        if in_log(b) {
            continue;
        }
        let took = acc
            .losses
            .iter()
            .position(|l| b.time_ns < l.at_ns && l.point_record.is_none_or(|p| b.seq > p));
        if let Some(l) = took {
            acc.charged.insert(i, l);
            let loss = &mut acc.losses[l];
            loss.lost.push(i);
            loss.first_lost_ns = Some(loss.first_lost_ns.map_or(b.time_ns, |t| t.min(b.time_ns)));
        }
    }
    acc
}

/// The bounded-loss invariant over every replicated app that failed over.
pub fn check(dir: &Path, budget: &Budget) -> InvariantResult {
    let inputs = match Inputs::load(dir) {
        Ok(i) => i,
        Err(e) => return InvariantResult::unknown(format!("failovers not known: {e}")),
    };
    let beats = match super::load_jsonl::<Heartbeat>(dir, "witness.jsonl") {
        Ok(b) => b,
        Err(e) => return InvariantResult::unknown(e),
    };
    let mut problems: Vec<String> = Vec::new();
    let mut unknowns: Vec<String> = Vec::new();
    let mut reported = Vec::new();
    let apps: std::collections::BTreeSet<&str> =
        inputs.failovers.iter().map(|f| f.app.as_str()).collect();
    for app in apps {
        let chain = match super::volume::load_chain(dir, app, budget) {
            Ok(c) => c,
            Err(e) => {
                unknowns.push(e);
                continue;
            }
        };
        if let Some(b) = &chain.broken {
            problems.push(format!("{app}: the final log is not one hash chain: {b}"));
        }
        if !inputs.max_lag_ns.contains_key(app) {
            problems.push(format!(
                "{app} failed over but run.json gives it no max_lag"
            ));
        }
        let app_beats: Vec<&Heartbeat> =
            beats.iter().filter(|b| b.app == app && b.seq > 0).collect();
        let acc = account(app, &chain, &app_beats, &inputs);
        for f in &acc.untimed {
            unknowns.push(format!(
                "{app}: the failover from {} to {} at epoch {} was never seen in owners.jsonl",
                f.from, f.to, f.epoch
            ));
        }
        for loss in &acc.losses {
            let first = loss.lost.first().map(|&i| app_beats[i]);
            if !loss.within() {
                problems.push(format!(
                    "{app}: the failover from {} to {} at epoch {} lost record {} acknowledged at {} ns, {} s before {} was lost at {} ns ({}); max_lag is {} s",
                    loss.failover.from,
                    loss.failover.to,
                    loss.failover.epoch,
                    first.map_or(0, |b| b.seq),
                    loss.first_lost_ns.unwrap_or(0),
                    secs(loss.host_lost_ns.saturating_sub(loss.first_lost_ns.unwrap_or(0))),
                    loss.failover.from,
                    loss.host_lost_ns,
                    loss.cause.as_deref().unwrap_or("declared down by itself"),
                    secs(loss.max_lag_ns),
                ));
            }
            let after = loss
                .lost
                .iter()
                .filter(|&&i| app_beats[i].time_ns >= loss.host_lost_ns)
                .count();
            reported.push(json!({
                "app": app,
                "from": loss.failover.from,
                "to": loss.failover.to,
                "epoch": loss.failover.epoch,
                "point": {"seq": loss.failover.point_seq, "epoch": loss.failover.point_epoch},
                "point_record": loss.point_record,
                "committed_after_ns": loss.after_ns,
                "committed_by_ns": loss.at_ns,
                "host_lost_ns": loss.host_lost_ns,
                "cause": loss.cause,
                "lost_records": loss.lost.len(),
                "lost_after_host_lost": after,
                "first_lost_seq": first.map(|b| b.seq),
                "first_lost_ns": loss.first_lost_ns,
                "loss_s": (loss.loss_s() * 1000.0).round() / 1000.0,
                "max_lag_s": loss.max_lag_ns as f64 / 1e9,
                "within": loss.within(),
            }));
        }
    }
    let details = json!({
        "failovers": reported,
        "problems": problems,
        "undecided": unknowns,
    });
    if let Some(result) = super::problems_or_unknowns(&problems, &unknowns, &details) {
        return result;
    }
    if reported.is_empty() {
        return InvariantResult::new(Validity::Valid, "no failover in this run", details);
    }
    let losses: Vec<String> = reported
        .iter()
        .map(|r| {
            format!(
                "{}→{} {:.2} s",
                r["from"].as_str().unwrap_or("?"),
                r["to"].as_str().unwrap_or("?"),
                r["loss_s"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    InvariantResult::new(
        Validity::Valid,
        format!(
            "{} failover(s), each within max_lag; loss: {}",
            reported.len(),
            losses.join(", ")
        ),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    const S: u64 = 1_000_000_000;
    const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Appends records `from..=to` by `inst` to `log`, heartbeating record
    /// `seq` at `at(seq)` from `node`.
    fn write(
        log: &mut String,
        prev: &mut String,
        beats: &mut Vec<String>,
        (from, to): (u64, u64),
        (inst, node): (&str, &str),
        at: impl Fn(u64) -> u64,
    ) {
        for seq in from..=to {
            let line = format!("{seq} {prev} {inst}\n");
            *prev = hex(&Sha256::digest(line.as_bytes()));
            log.push_str(&line);
            beats.push(
                serde_json::to_string(&Heartbeat {
                    time_ns: at(seq),
                    app: "ledger".into(),
                    node: node.into(),
                    instance: inst.into(),
                    seq,
                    head: prev.clone(),
                })
                .unwrap(),
            );
        }
    }

    /// Records 1..=10 by instance a on n1 (heartbeat of record i at i s),
    /// n1 crashed at 10.5 s, failed over to n2 from a point holding
    /// records 1..=`point`; n2's instance b goes on from there (record i
    /// at 10 + i s). The final log is a's first `point` records, then b's.
    fn run_dir(point: u64, history: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut beats = Vec::new();
        let (mut old, mut old_prev) = (String::new(), ZERO.to_string());
        write(
            &mut old,
            &mut old_prev,
            &mut beats,
            (1, 10),
            ("a", "n1"),
            |s| s * S,
        );
        let (mut log, mut prev) = (String::new(), ZERO.to_string());
        let mut unused = Vec::new();
        write(
            &mut log,
            &mut prev,
            &mut unused,
            (1, point),
            ("a", "n1"),
            |s| s * S,
        );
        write(
            &mut log,
            &mut prev,
            &mut beats,
            (point + 1, 14),
            ("b", "n2"),
            |s| (10 + s) * S,
        );
        beats.sort_by_key(|b| serde_json::from_str::<Heartbeat>(b).unwrap().time_ns);
        std::fs::create_dir(dir.path().join("volumes")).unwrap();
        std::fs::write(dir.path().join("volumes/ledger.log"), log).unwrap();
        std::fs::write(dir.path().join("witness.jsonl"), beats.join("\n")).unwrap();
        std::fs::write(dir.path().join("moves.jsonl"), "").unwrap();
        std::fs::write(
            dir.path().join("run.json"),
            r#"{"seed": 1, "volume_apps": ["ledger"], "replicated": {"ledger": {"replicas": 2, "max_lag_ms": 3000}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("nemesis.jsonl"),
            format!(
                "{}\n{}\n{}\n",
                r#"{"time_ns":2000000000,"nemesis":"clock","phase":"start","detail":"n1 wall clock +40 s","nodes":["n1"]}"#,
                r#"{"time_ns":6000000000,"nemesis":"clock","phase":"stop","detail":"","nodes":["n1"]}"#,
                r#"{"time_ns":10500000000,"nemesis":"crash","phase":"start","detail":"crash n1: process killed","nodes":["n1"]}"#,
            ) + r#"{"time_ns":22000000000,"nemesis":"crash","phase":"stop","detail":"n1 back","nodes":["n1"]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("owners.jsonl"),
            r#"{"time_ns":1000000000,"app":"ledger","owner":"n1","epoch":1}
{"time_ns":17000000000,"prev_invoke_ns":12000000000,"app":"ledger","owner":"n2","epoch":2}"#,
        )
        .unwrap();
        if history {
            let summary = format!(
                "ledger: failed over from n1 (down) to n2 at epoch 2, from its point {} of epoch 1",
                point + 20
            );
            std::fs::write(
                dir.path().join("cluster-history.json"),
                serde_json::to_string(&[
                    json!({"index": 3, "summary": "deploy: 5 app(s)"}),
                    json!({"index": 9, "summary": summary}),
                ])
                .unwrap(),
            )
            .unwrap();
        }
        dir
    }

    fn budget() -> Budget {
        Budget::new(Duration::from_secs(10))
    }

    #[test]
    fn parses_the_history_line() {
        let f = parse_failover(
            "ledger: failed over from n2 (down) to n3 at epoch 7, from its point 12 of epoch 5",
        )
        .unwrap();
        assert_eq!(
            (f.app.as_str(), f.from.as_str(), f.to.as_str()),
            ("ledger", "n2", "n3")
        );
        assert_eq!((f.epoch, f.point_seq, f.point_epoch), (7, 12, 5));
        assert_eq!(parse_failover("ledger: moved from n1 to n2"), None);
    }

    #[test]
    fn a_loss_within_max_lag_is_allowed_and_reported() {
        // Records 8..10 lost, the first acknowledged 2.5 s before the crash.
        let dir = run_dir(7, true);
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
        let f = &res.details["failovers"][0];
        assert_eq!(f["lost_records"], 3);
        assert_eq!(f["point_record"], 7);
        assert_eq!(f["loss_s"], 2.5);
        assert_eq!(f["host_lost_ns"], 10_500_000_000u64);
        assert!(f["cause"].as_str().unwrap().starts_with("crash"), "{f}");
        // A move from n1 seen in flight when n1 crashed ends on n2 with
        // the replica's point, not n1's last state: given up, not failed.
        let failed_move = |start_s: u64, end_ms: u64| {
            let m = format!(
                r#"{{"start_ns":{},"end_ns":{},"app":"ledger","from":"n1","to":"n2","bytes":0,"checksum_ok":false}}"#,
                start_s * S,
                end_ms * 1_000_000
            );
            std::fs::write(dir.path().join("moves.jsonl"), m).unwrap();
        };
        failed_move(11, 17_500);
        let vol = super::super::volume::check(dir.path(), &budget());
        assert_eq!(vol.valid, Validity::Valid, "{}", vol.summary);
        assert_eq!(
            vol.details["apps"]["ledger"]["heartbeats_lost_to_failovers"],
            3
        );
        assert_eq!(vol.details["moves_given_up_by_failovers"], 1);
        // The same move with no failover during it is a failed checksum.
        failed_move(1, 3_000);
        let vol = super::super::volume::check(dir.path(), &budget());
        assert_eq!(vol.valid, Validity::Invalid, "{}", vol.summary);
    }

    #[test]
    fn a_loss_beyond_max_lag_breaks_both_invariants() {
        // Records 6..10 lost: the first acknowledged 4.5 s before the crash.
        let dir = run_dir(5, true);
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Invalid);
        assert!(res.summary.contains("lost record 6"), "{}", res.summary);
        assert_eq!(res.details["failovers"][0]["loss_s"], 4.5);
        // Only record 6 (4.5 s) and 7 (3.5 s) are past the allowance.
        let vol = super::super::volume::check(dir.path(), &budget());
        assert_eq!(vol.valid, Validity::Invalid);
        assert_eq!(vol.details["problem_count"], 2, "{}", vol.details);
        assert!(
            vol.summary.contains("lost by the failover from n1"),
            "{}",
            vol.summary
        );
    }

    #[test]
    fn without_a_failover_volume_integrity_stays_strict() {
        let dir = run_dir(7, false);
        std::fs::write(dir.path().join("cluster-history.json"), "[]").unwrap();
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Valid);
        assert_eq!(res.summary, "no failover in this run");
        let vol = super::super::volume::check(dir.path(), &budget());
        assert_eq!(vol.valid, Validity::Invalid);
        assert_eq!(vol.details["problem_count"], 3);
        // No history at all: bounded-loss cannot tell, volume-integrity is
        // strict.
        std::fs::remove_file(dir.path().join("cluster-history.json")).unwrap();
        assert_eq!(check(dir.path(), &budget()).valid, Validity::Unknown);
        let vol = super::super::volume::check(dir.path(), &budget());
        assert_eq!(vol.valid, Validity::Invalid);
    }

    #[test]
    fn a_failover_the_cluster_history_no_longer_holds_is_copied_by_the_observer() {
        let dir = run_dir(7, true);
        let history = dir.path().join("cluster-history.json");
        let entries: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&history).unwrap()).unwrap();
        std::fs::write(&history, serde_json::to_string(&entries[..1]).unwrap()).unwrap();
        assert_eq!(
            check(dir.path(), &budget()).summary,
            "no failover in this run"
        );
        let copied = json!({"time_ns": 17 * S, "index": 9, "summary": entries[1]["summary"]});
        std::fs::write(dir.path().join("failovers.jsonl"), copied.to_string()).unwrap();
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
        assert_eq!(res.details["failovers"][0]["lost_records"], 3);
        // Both sources name it: one failover.
        std::fs::write(&history, serde_json::to_string(&entries).unwrap()).unwrap();
        assert_eq!(
            check(dir.path(), &budget()).details["failovers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_failover_the_observer_never_saw_is_unknown() {
        let dir = run_dir(7, true);
        std::fs::write(
            dir.path().join("owners.jsonl"),
            r#"{"time_ns":1000000000,"app":"ledger","owner":"n1","epoch":1}"#,
        )
        .unwrap();
        let res = check(dir.path(), &budget());
        assert_eq!(res.valid, Validity::Unknown, "{}", res.summary);
        assert!(res.summary.contains("never seen"), "{}", res.summary);
    }
}
