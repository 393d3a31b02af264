//! When traffic followed a move, from what the bench collected: the
//! handoff's commit (the leader's stamp in the history), each node's
//! `routing: APP:PORT/tcp now …` log line, and the prober's samples. Pure
//! functions of those records, so they are tested without a cluster.

use super::wire::{is_instance, Sample};
use crate::bench::logs::{line_ms, strip_ansi};
use crate::state::HistoryEntry;
use std::collections::BTreeMap;

/// The handoff entry of `app`'s move `from`→`to` proposed at or after
/// `after_ms`: the first such one.
pub fn handoff<'a>(
    history: &'a [HistoryEntry],
    app: &str,
    from: &str,
    to: &str,
    after_ms: u64,
) -> Option<&'a HistoryEntry> {
    let head = format!("{app}: volume handed off {from}→{to} ");
    history
        .iter()
        .filter(|e| e.proposed_at_ms >= after_ms && e.summary.starts_with(&head))
        .min_by_key(|e| e.index)
}

/// When `node`'s log (text format) first says, at or after `since_ms`, that
/// it routes `app:port/tcp` to `to`: delivered here when it is `to`,
/// forwarded to `to` otherwise.
pub fn rules_switched(
    log: &str,
    app: &str,
    port: u16,
    node: &str,
    to: &str,
    since_ms: u64,
) -> Option<u64> {
    let what = if node == to {
        format!("routing: {app}:{port}/tcp now delivered here")
    } else {
        format!("routing: {app}:{port}/tcp now forwarded to {to} (")
    };
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(&what))
        .filter_map(|l| line_ms(&l))
        .find(|ms| *ms >= since_ms)
}

/// Through one target, after one handoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switch {
    /// The first connection begun at or after the commit that reached the
    /// new instance, when one did before the window's end.
    pub reached_ms: Option<u64>,
    /// The connection from which on every one until the window's end
    /// reached it (when the last one did).
    pub steady_ms: Option<u64>,
    /// Connections after the first that reached it which did not, by why
    /// (the prober's reason, or `another instance`).
    pub misses_after: BTreeMap<&'static str, usize>,
}

/// How connections through `target` went from `since_ms` (the commit) to
/// `until_ms` (the next move's command), for the new instance `id`.
pub fn switch(samples: &[Sample], target: usize, since_ms: u64, until_ms: u64, id: &str) -> Switch {
    let mut window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.target == target && s.at_ms >= since_ms && s.at_ms < until_ms)
        .collect();
    window.sort_by_key(|s| s.at_ms);
    let reached = |s: &Sample| s.answer.as_deref().is_ok_and(|a| is_instance(a, id));
    let Some(first) = window.iter().position(|s| reached(s)) else {
        return Switch::default();
    };
    let steady = match window.iter().rposition(|s| !reached(s)) {
        None => Some(first),
        Some(last_miss) if last_miss + 1 < window.len() => Some(last_miss + 1),
        Some(_) => None,
    };
    let mut misses_after = BTreeMap::new();
    for s in window[first..].iter().filter(|s| !reached(s)) {
        let why = match &s.answer {
            Ok(_) => "another instance",
            Err(why) => why,
        };
        *misses_after.entry(why).or_default() += 1;
    }
    Switch {
        reached_ms: Some(window[first].at_ms),
        steady_ms: steady.map(|i| window[i].at_ms),
        misses_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, at: u64, summary: &str) -> HistoryEntry {
        HistoryEntry {
            index,
            proposed_at_ms: at,
            author: "node n1".into(),
            request_id: format!("r{index}"),
            summary: summary.into(),
            via: None,
        }
    }

    #[test]
    fn the_handoff_is_the_first_matching_entry_after_the_command() {
        let history = [
            entry(
                5,
                1_000,
                "web: volume handed off n1→n2 at epoch 2 (attempt 1)",
            ),
            entry(9, 5_000, "web: frozen for the final delta at epoch 3"),
            entry(
                10,
                5_100,
                "web: volume handed off n2→n1 at epoch 3 (attempt 1)",
            ),
            entry(
                12,
                9_000,
                "webby: volume handed off n1→n2 at epoch 2 (attempt 1)",
            ),
            entry(
                14,
                9_500,
                "web: volume handed off n1→n2 at epoch 4 (attempt 1)",
            ),
        ];
        assert_eq!(
            handoff(&history, "web", "n1", "n2", 0).map(|e| e.index),
            Some(5)
        );
        assert_eq!(
            handoff(&history, "web", "n1", "n2", 2_000).map(|e| e.index),
            Some(14)
        );
        assert_eq!(
            handoff(&history, "web", "n2", "n1", 2_000).map(|e| e.index),
            Some(10)
        );
        assert!(handoff(&history, "web", "n2", "n1", 6_000).is_none());
    }

    #[test]
    fn rule_switches_are_read_from_the_log() {
        let log = "\
1970-01-01T00:00:01.000000Z  INFO flocker::routing: routing: web:18081/tcp now forwarded to n2 (10.214.3.11) app=web port=18081 applied_index=7
1970-01-01T00:00:02.500000Z  INFO flocker::routing: routing: web:18081/tcp now delivered here app=web port=18081 applied_index=9
\x1b[2m1970-01-01T00:00:04.250000Z\x1b[0m  INFO flocker::routing: routing: web:18081/tcp now forwarded to n2 (10.214.3.11) app=web port=18081 applied_index=12
1970-01-01T00:00:05.000000Z  INFO flocker::routing: routing: web:180812/tcp now delivered here
";
        assert_eq!(
            rules_switched(log, "web", 18081, "n1", "n2", 0),
            Some(1_000)
        );
        assert_eq!(
            rules_switched(log, "web", 18081, "n1", "n2", 1_001),
            Some(4_250)
        );
        assert_eq!(
            rules_switched(log, "web", 18081, "n1", "n1", 0),
            Some(2_500)
        );
        assert_eq!(rules_switched(log, "web", 18081, "n1", "n1", 2_501), None);
        assert_eq!(rules_switched(log, "web", 18081, "n3", "n1", 0), None);
    }

    #[test]
    fn the_switch_is_the_first_connection_reaching_the_new_instance() {
        let new = "bbbbbbbbbbbb0123";
        let s = |target, at_ms, answer: Option<&str>| Sample {
            target,
            at_ms,
            answer: answer.map(str::to_string).ok_or("refused"),
        };
        let samples = [
            s(0, 990, Some("aaaaaaaaaaaa")),
            s(0, 1_010, None),
            s(1, 1_020, Some("bbbbbbbbbbbb")),
            s(0, 1_030, Some("aaaaaaaaaaaa")),
            s(0, 1_050, Some("bbbbbbbbbbbb")),
            s(0, 1_070, None),
            s(0, 1_090, Some("bbbbbbbbbbbb")),
            s(0, 1_080, Some("cccccccccccc")),
            s(0, 1_110, Some("bbbbbbbbbbbb")),
            s(0, 2_000, None),
        ];
        let through_0 = switch(&samples, 0, 1_000, 2_000, new);
        assert_eq!(through_0.reached_ms, Some(1_050));
        assert_eq!(through_0.steady_ms, Some(1_090), "after the last miss");
        assert_eq!(
            through_0.misses_after,
            BTreeMap::from([("another instance", 1), ("refused", 1)])
        );
        let through_1 = switch(&samples, 1, 1_000, 2_000, new);
        assert_eq!(
            (through_1.reached_ms, through_1.steady_ms),
            (Some(1_020), Some(1_020))
        );
        assert_eq!(switch(&samples, 2, 1_000, 2_000, new), Switch::default());
        assert_eq!(switch(&samples, 0, 1_060, 1_080, new).reached_ms, None);
        let unsteady = switch(&samples, 0, 1_000, 2_001, new);
        assert_eq!(
            (unsteady.reached_ms, unsteady.steady_ms),
            (Some(1_050), None),
            "the last probe missed"
        );
    }
}
