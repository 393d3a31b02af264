//! Volume integrity: the stateful app's log survives moves and failovers
//! whole and unforked. Each `volumes/<app>.log` is a hash chain of lines
//! `"{seq} {prev} {payload}\n"` with `seq` counting from 1 and `prev` the
//! SHA-256 (lowercase hex) of the previous full line, newline included (64
//! zeros first). The app sends a heartbeat `(seq, head)` only after fsyncing
//! record `seq`, so every heartbeat in `witness.jsonl` must name a record in
//! the final log with that very hash: a missing record is lost data, a
//! different one is a fork (two instances wrote). A move whose destination
//! checksum did not match (`moves.jsonl`) is a violation too.
//!
//! Except after a failover (`bounded_loss`): a replicated app's record
//! that a failover lost may be missing or replaced by the new owner's,
//! exactly when it was acknowledged within the app's `max_lag` of its host's
//! loss (or after). Without a failover the check stays strict, and a
//! failover's loss beyond `max_lag` is a violation here too.
//!
//! A final line without its newline is a torn write the app never
//! acknowledged; it is ignored unless a heartbeat names it.

use super::Budget;
use crate::history::{Heartbeat, MoveRecord};
use crate::verdict::{InvariantResult, Validity};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Problems listed in the details at most; the count is always exact.
const MAX_LISTED: usize = 100;
const ZERO_HEAD: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a log file holds, as far as its chain is intact.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    /// Heads (sha256 hex) of the complete lines, by position; line i should
    /// carry seq i + 1.
    pub heads: Vec<String>,
    /// The first break, e.g. "volumes/db.log:7: prev does not match line 6".
    pub broken: Option<String>,
    /// The file ends in a partial line.
    pub torn_tail: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses and verifies a log's chain; `name` is used in messages.
pub(crate) fn read_chain(data: &[u8], name: &str, budget: &Budget) -> Result<Chain, String> {
    let mut chain = Chain::default();
    let mut prev_head = ZERO_HEAD.to_string();
    let mut rest = data;
    let mut lineno = 0usize;
    while !rest.is_empty() {
        lineno += 1;
        if lineno % 4096 == 0 && budget.expired() {
            return Err(format!(
                "time budget exhausted reading {name} at line {lineno}"
            ));
        }
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            chain.torn_tail = true;
            break;
        };
        let line = &rest[..=nl];
        rest = &rest[nl + 1..];
        let head = hex(&Sha256::digest(line));
        if chain.broken.is_none() {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            let mut parts = text.splitn(3, ' ');
            let seq = parts.next().and_then(|s| s.parse::<u64>().ok());
            let prev = parts.next();
            let problem = match (seq, prev) {
                (None, _) | (_, None) => Some("not a \"seq prev payload\" record".to_string()),
                (Some(s), _) if s != lineno as u64 => Some(format!("seq {s}, expected {lineno}")),
                (_, Some(p)) if p != prev_head => Some(format!(
                    "prev {p} does not match the hash of the record before ({prev_head})"
                )),
                _ => None,
            };
            if let Some(p) = problem {
                chain.broken = Some(format!("{name}:{lineno}: {p}"));
            }
        }
        prev_head = head.clone();
        chain.heads.push(head);
    }
    Ok(chain)
}

/// Reads and verifies `volumes/<app>.log` of the run in `dir`.
pub(crate) fn load_chain(dir: &Path, app: &str, budget: &Budget) -> Result<Chain, String> {
    let name = format!("volumes/{app}.log");
    match std::fs::read(dir.join(&name)) {
        Ok(data) => read_chain(&data, &name, budget),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{name} is missing")),
        Err(e) => Err(format!("{name} could not be read: {e}")),
    }
}

/// Checks every app's log against its chain and its heartbeats, and the
/// moves' checksums.
pub fn check(dir: &Path, budget: &Budget) -> InvariantResult {
    let mut problems: Vec<String> = Vec::new();
    let mut unknowns: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let beats = super::load_jsonl::<Heartbeat>(dir, "witness.jsonl").unwrap_or_else(|e| {
        unknowns.push(e);
        Vec::new()
    });
    let moves = super::load_jsonl::<MoveRecord>(dir, "moves.jsonl").unwrap_or_else(|e| {
        unknowns.push(e);
        Vec::new()
    });
    // Without the cluster's history the failovers are unknown: no record
    // may then be missing (the strict check), and the details say why.
    let failovers = match super::bounded_loss::Inputs::load(dir) {
        Ok(i) => Some(i),
        Err(e) => {
            notes.push(format!("no failover allowance: {e}"));
            None
        }
    };
    let mut failed_moves = Vec::new();
    let mut superseded = 0usize;
    for m in &moves {
        if m.checksum_ok == Some(false) {
            // A failover away from the source while the move was in flight
            // gave the move up: the destination holds a replica's point,
            // not the source's last state (the heartbeats judge that).
            if failovers
                .as_ref()
                .is_some_and(|f| f.failed_over_during(&m.app, &m.from, m.start_ns, m.end_ns))
            {
                superseded += 1;
                continue;
            }
            problems.push(format!(
                "move of {} from {} to {} at {} ns: the destination's checksum did not match",
                m.app, m.from, m.to, m.end_ns
            ));
            failed_moves
                .push(json!({"app": m.app, "from": m.from, "to": m.to, "end_ns": m.end_ns}));
        }
    }
    let mut logs: BTreeSet<String> = BTreeSet::new();
    let vdir = dir.join("volumes");
    match std::fs::read_dir(&vdir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(app) = name.strip_suffix(".log") {
                    logs.insert(app.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            unknowns.push("volumes/ is missing".into())
        }
        Err(e) => unknowns.push(format!("volumes/ could not be read: {e}")),
    }
    // Heartbeats with seq 0 acknowledge no durable record (an app without a
    // volume), so only the others need a log.
    let mut beats_by_app: BTreeMap<&str, Vec<&Heartbeat>> = BTreeMap::new();
    for b in beats.iter().filter(|b| b.seq > 0) {
        beats_by_app.entry(b.app.as_str()).or_default().push(b);
    }
    // run.json's `volume_apps` must have a log even if no heartbeat came.
    let volume_apps: Vec<String> = super::load_json::<serde_json::Value>(dir, "run.json")
        .ok()
        .and_then(|r| r.get("volume_apps").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let apps: BTreeSet<String> = logs
        .iter()
        .cloned()
        .chain(beats_by_app.keys().map(|s| s.to_string()))
        .chain(volume_apps)
        .collect();
    let mut per_app = serde_json::Map::new();
    for app in &apps {
        if budget.expired() {
            unknowns.push(format!("time budget exhausted before {app} was checked"));
            break;
        }
        let app_beats = beats_by_app.get(app.as_str()).cloned().unwrap_or_default();
        let name = format!("volumes/{app}.log");
        let chain = if logs.contains(app) {
            load_chain(dir, app, budget)
        } else {
            Err(format!("{name} is missing"))
        };
        let chain = match chain {
            Ok(c) => c,
            Err(e) => {
                unknowns.push(e);
                continue;
            }
        };
        if let Some(b) = &chain.broken {
            problems.push(format!("chain broken: {b}"));
        }
        let accounting = failovers
            .as_ref()
            .map(|inputs| super::bounded_loss::account(app, &chain, &app_beats, inputs))
            .unwrap_or_default();
        let mut bad_beats = 0usize;
        let mut lost_to_failovers = 0usize;
        for (i, b) in app_beats.iter().enumerate() {
            let problem = match chain.heads.get((b.seq - 1) as usize) {
                Some(h) if *h == b.head => None,
                _ if accounting.allowed(i, b.time_ns) => {
                    lost_to_failovers += 1;
                    None
                }
                None => Some(format!(
                    "{app}: heartbeat at {} ns from instance {} on {} acknowledged record {} but {name} has only {} records (lost data)",
                    b.time_ns, b.instance, b.node, b.seq, chain.heads.len()
                )),
                Some(h) => Some(format!(
                    "{app}: heartbeat at {} ns from instance {} on {} acknowledged record {} with head {} but {name} has {} there (forked or rewritten)",
                    b.time_ns, b.instance, b.node, b.seq, b.head, h
                )),
            };
            if let Some(mut p) = problem {
                if let Some(why) = accounting.explain(i, b.time_ns) {
                    p.push_str(&format!(": {why}"));
                }
                bad_beats += 1;
                problems.push(p);
            }
        }
        per_app.insert(
            app.clone(),
            json!({
                "records": chain.heads.len(),
                "head": chain.heads.last(),
                "torn_tail": chain.torn_tail,
                "chain_intact": chain.broken.is_none(),
                "heartbeats": app_beats.len(),
                "heartbeats_not_in_log": bad_beats,
                "heartbeats_lost_to_failovers": lost_to_failovers,
                "failovers": accounting.losses.len(),
            }),
        );
    }
    let listed: Vec<&String> = problems.iter().take(MAX_LISTED).collect();
    let details = json!({
        "apps": per_app,
        "moves": moves.len(),
        "failed_moves": failed_moves,
        "moves_given_up_by_failovers": superseded,
        "problem_count": problems.len(),
        "problems": listed,
        "undecided": unknowns,
        "notes": notes,
    });
    if let Some(result) = super::problems_or_unknowns(&problems, &unknowns, &details) {
        return result;
    }
    if apps.is_empty() {
        return InvariantResult::new(
            Validity::Unknown,
            "no volumes/*.log and no heartbeats to check",
            details,
        );
    }
    let allowed: u64 = per_app
        .values()
        .filter_map(|a| a["heartbeats_lost_to_failovers"].as_u64())
        .sum();
    let found = if allowed == 0 {
        format!(
            "all {} durable heartbeats found in them",
            beats_by_app.values().map(Vec::len).sum::<usize>()
        )
    } else {
        format!(
            "{} of {} durable heartbeats found in them, the other {allowed} lost by failovers within max_lag",
            beats_by_app.values().map(Vec::len).sum::<usize>() as u64 - allowed,
            beats_by_app.values().map(Vec::len).sum::<usize>()
        )
    };
    InvariantResult::new(
        Validity::Valid,
        format!(
            "{} log(s) intact, {found}, {} move(s) checksummed{}",
            apps.len(),
            moves.len() - superseded,
            match superseded {
                0 => String::new(),
                n => format!(" ({n} more given up by failovers)"),
            }
        ),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A valid chain of `n` records and each record's head.
    fn chain(n: usize, tag: &str) -> (String, Vec<String>) {
        let mut text = String::new();
        let mut heads = Vec::new();
        let mut prev = ZERO_HEAD.to_string();
        for i in 1..=n {
            let line = format!("{i} {prev} payload {tag} {i}\n");
            prev = hex(&Sha256::digest(line.as_bytes()));
            heads.push(prev.clone());
            text.push_str(&line);
        }
        (text, heads)
    }

    fn hb(seq: u64, head: &str, inst: &str) -> String {
        serde_json::to_string(&Heartbeat {
            time_ns: seq * 10,
            app: "db".into(),
            node: "n1".into(),
            instance: inst.into(),
            seq,
            head: head.into(),
        })
        .unwrap()
    }

    fn setup(log: &str, beats: &[String], moves: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("volumes")).unwrap();
        std::fs::write(dir.path().join("volumes/db.log"), log).unwrap();
        std::fs::write(dir.path().join("witness.jsonl"), beats.join("\n")).unwrap();
        std::fs::write(dir.path().join("moves.jsonl"), moves).unwrap();
        dir
    }

    fn run(dir: &tempfile::TempDir) -> InvariantResult {
        check(dir.path(), &Budget::new(Duration::from_secs(10)))
    }

    #[test]
    fn intact_chain_passes() {
        let (log, heads) = chain(5, "a");
        let beats = vec![hb(1, &heads[0], "i1"), hb(5, &heads[4], "i2")];
        let mv = r#"{"start_ns":1,"end_ns":2,"app":"db","from":"n1","to":"n2","bytes":10,"checksum_ok":true}"#;
        let res = run(&setup(&format!("{log}6 torn"), &beats, mv));
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
        assert_eq!(res.details["apps"]["db"]["records"], 5);
        assert_eq!(res.details["apps"]["db"]["torn_tail"], true);
    }

    #[test]
    fn volumeless_heartbeats_need_no_log_but_volume_apps_do() {
        let (log, heads) = chain(2, "a");
        let beacon = serde_json::to_string(&Heartbeat {
            time_ns: 5,
            app: "beacon".into(),
            node: "n2".into(),
            instance: "b1".into(),
            seq: 0,
            head: ZERO_HEAD.into(),
        })
        .unwrap();
        let dir = setup(&log, &[hb(2, &heads[1], "i1"), beacon], "");
        assert_eq!(run(&dir).valid, Validity::Valid);
        std::fs::write(
            dir.path().join("run.json"),
            r#"{"seed": 1, "volume_apps": ["db", "other"]}"#,
        )
        .unwrap();
        let res = run(&dir);
        assert_eq!(res.valid, Validity::Unknown);
        assert!(
            res.summary.contains("volumes/other.log is missing"),
            "{}",
            res.summary
        );
    }

    #[test]
    fn broken_chain_fails() {
        let (log, _) = chain(4, "a");
        let broken = log.replacen("payload a 2", "payload X 2", 1);
        let res = run(&setup(&broken, &[], ""));
        assert_eq!(res.valid, Validity::Invalid);
        assert!(res.summary.contains("volumes/db.log:3"), "{}", res.summary);
    }

    #[test]
    fn forked_chain_fails_on_head_mismatch() {
        // Instance i1 acknowledged record 3 of its own history; the final
        // log is i2's fork of records 3.. from the same prefix.
        let (mine, my_heads) = chain(3, "a");
        let (theirs, _) = chain(4, "b");
        let _ = mine;
        let beats = vec![hb(3, &my_heads[2], "i1")];
        let res = run(&setup(&theirs, &beats, ""));
        assert_eq!(res.valid, Validity::Invalid);
        assert!(res.summary.contains("forked"), "{}", res.summary);
        // And a heartbeat past the end of the log is lost data.
        let (short, heads) = chain(2, "a");
        let res = run(&setup(
            &short,
            &[hb(2, &heads[1], "i1"), hb(3, "ff", "i1")],
            "",
        ));
        assert_eq!(res.valid, Validity::Invalid);
        assert!(res.summary.contains("lost data"), "{}", res.summary);
    }

    #[test]
    fn bad_move_checksum_fails_and_missing_log_is_unknown() {
        let (log, _) = chain(1, "a");
        let mv = r#"{"start_ns":1,"end_ns":2,"app":"db","from":"n1","to":"n2","bytes":null,"checksum_ok":false}"#;
        let res = run(&setup(&log, &[], mv));
        assert_eq!(res.valid, Validity::Invalid);
        let dir = setup(&log, &[], "");
        std::fs::remove_file(dir.path().join("volumes/db.log")).unwrap();
        std::fs::write(dir.path().join("witness.jsonl"), hb(1, "x", "i1")).unwrap();
        let res = run(&dir);
        assert_eq!(res.valid, Validity::Unknown);
        assert!(res.summary.contains("volumes/db.log is missing"));
    }
}
