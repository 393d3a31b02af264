//! The benchmark's app: a busybox shell loop inside its container that
//! appends one numbered record to `/data/log` per iteration, fsyncs the file
//! and only then acknowledges the record on its standard output with the
//! times the append began and the fsync returned. Times come from the
//! kernel's clock through `adjtimex` (busybox's `date` has no sub-second
//! format; `adjtimex` only reads when given no options), so they are the
//! host's wall clock in microseconds. Acknowledgements go to stdout and not
//! to a file because a pipe survives the process's death: what was echoed
//! before a `kill -9` is still in `docker logs`.
//!
//! From the acknowledgements (`docker logs`) and the records a volume holds
//! after a failover, this module derives the fsync-write latencies, the
//! longest time the writer made no progress (a `docker pause` shows as one)
//! and the acknowledged writes a crash lost.

use super::super::docker_cli::docker;
use anyhow::Result;
use std::time::Duration;

/// The volume's mount point in the container and the log's name in it.
pub const MOUNT: &str = "/data";
pub const LOG: &str = "log";

/// Each record is `<hostname> <seq> <start µs>`: the hostname (the
/// container's short id) tells one incarnation's records from the next's.
/// A 2 ms sleep between records keeps the loop from taking a whole core of
/// this small machine away from the nodes.
const SCRIPT: &str = r#"trap 'exit 0' TERM
h=$(hostname); i=0
now() { o=$(adjtimex); s=${o#*tv_sec:}; s=${s%%time*}; u=${o#*tv_usec:}; u=${u%%return*}; t=$((s*1000000+u)); }
while true; do
  i=$((i+1)); now; a=$t
  echo "$h $i $a" >> /data/log; sync /data/log
  now; echo "ack $i $a $t"; usleep 2000
done"#;

/// application.yml for `app` running the writer, with `replicas` copies of
/// its volume (1: no replication) and the recovery-point objective.
pub fn application(app: &str, replicas: u32, max_lag_ms: u64) -> String {
    let script = serde_json::to_string(SCRIPT).expect("a string serializes");
    let volume = if replicas > 1 {
        format!(
            "{{mountpoint: {MOUNT}, replicas: {replicas}, max_lag: {}}}",
            crate::config::format_duration_ms(max_lag_ms)
        )
    } else {
        format!("{{mountpoint: {MOUNT}}}")
    };
    format!(
        "version: 1\napplications:\n  {app}:\n    image: {}\n    command: [\"sh\", \"-c\", {script}]\n    volume: {volume}\n",
        crate::runtime::TEST_IMAGE
    )
}

/// One acknowledged record: its number and when its append began and its
/// fsync returned (µs since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub start_us: u64,
    pub end_us: u64,
}

impl Ack {
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.end_us.saturating_sub(self.start_us))
    }
}

/// The acknowledgements a container printed (running or exited).
pub fn acks(container: &str) -> Result<Vec<Ack>> {
    Ok(parse_acks(&docker(&["logs", container])?))
}

pub fn parse_acks(text: &str) -> Vec<Ack> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            if f.next()? != "ack" {
                return None;
            }
            let ack = Ack {
                seq: f.next()?.parse().ok()?,
                start_us: f.next()?.parse().ok()?,
                end_us: f.next()?.parse().ok()?,
            };
            f.next().is_none().then_some(ack)
        })
        .collect()
}

/// The sequence numbers of `host`'s records in a volume's log, in file
/// order (a torn last line is not a record).
pub fn records_of(log: &str, host: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            (f.next()? == host).then_some(())?;
            let seq = f.next()?.parse().ok()?;
            f.next()?.parse::<u64>().ok()?;
            Some(seq)
        })
        .collect()
}

/// Latencies of the records that began within `[from_us, to_us)`.
pub fn latencies(acks: &[Ack], from_us: u64, to_us: u64) -> Vec<Duration> {
    acks.iter()
        .filter(|a| (from_us..to_us).contains(&a.start_us))
        .map(Ack::latency)
        .collect()
}

/// The longest time between two consecutive acknowledgements whose later
/// one falls in `(from_us, to_us]`: how long the writer made no progress
/// (a freeze, a slow fsync) in that span.
pub fn longest_gap(acks: &[Ack], from_us: u64, to_us: u64) -> Option<Duration> {
    acks.windows(2)
        .filter(|w| w[1].end_us > from_us && w[1].end_us <= to_us)
        .map(|w| Duration::from_micros(w[1].end_us.saturating_sub(w[0].end_us)))
        .max()
}

/// What a crash cost one writer incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// From the last record the volume kept (its acknowledgement) to the
    /// last acknowledgement: acknowledged writes lost, in time.
    pub lost: Duration,
    /// Acknowledged records missing.
    pub records: u64,
    /// None of the incarnation's records survived (`lost` then counts from
    /// its first record's start).
    pub none_kept: bool,
    /// The kept records are exactly 1..=n: a state the log had at one
    /// instant (a crash-consistent point never holds a later record without
    /// every earlier one).
    pub prefix: bool,
}

/// The acknowledged writes of `acks` that `kept` (the incarnation's
/// records in the volume after the failover) does not hold.
pub fn loss(acks: &[Ack], kept: &[u64]) -> Option<Loss> {
    let last = acks.last()?;
    let prefix = kept.iter().enumerate().all(|(i, s)| *s == i as u64 + 1);
    let newest = kept.iter().copied().max();
    let Some(newest) = newest else {
        return Some(Loss {
            lost: Duration::from_micros(last.end_us.saturating_sub(acks[0].start_us)),
            records: last.seq,
            none_kept: true,
            prefix,
        });
    };
    if newest >= last.seq {
        return Some(Loss {
            lost: Duration::ZERO,
            records: 0,
            none_kept: false,
            prefix,
        });
    }
    // The newest kept record was acknowledged (it precedes the last
    // acknowledged one, and records are acknowledged in order).
    let kept_end = acks
        .iter()
        .find(|a| a.seq == newest)
        .map_or(acks[0].start_us, |a| a.end_us);
    Some(Loss {
        lost: Duration::from_micros(last.end_us.saturating_sub(kept_end)),
        records: last.seq - newest,
        none_kept: false,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, start_us: u64, end_us: u64) -> Ack {
        Ack {
            seq,
            start_us,
            end_us,
        }
    }

    #[test]
    fn the_writer_deploys_as_written() {
        for replicas in [1, 2] {
            let application = application("rep", replicas, 3_000);
            let parsed = crate::config::parse(
                "version: 1\nanywhere: [rep]\n",
                "deployment.yml",
                &application,
                "application.yml",
            )
            .unwrap_or_else(|e| panic!("{application}\n{e:?}"));
            let spec = &parsed.applications["rep"];
            let volume = spec.volume.as_ref().expect("a volume");
            assert_eq!(volume.replicas, replicas);
            if replicas > 1 {
                assert_eq!(volume.max_lag_ms, 3_000);
            }
        }
    }

    #[test]
    fn acknowledgements_and_records_parse() {
        let out = "ack 1 100 250\nnoise\nack 2 300 x\nack 3 400 450 extra\nack 4 500 600\n";
        assert_eq!(parse_acks(out), vec![ack(1, 100, 250), ack(4, 500, 600)]);
        let log = "abc 1 100\nother 1 120\nabc 2 300\nabc 3";
        assert_eq!(
            records_of(log, "abc"),
            vec![1, 2],
            "a torn line is no record"
        );
    }

    #[test]
    fn latency_and_gaps_over_a_window() {
        let acks = [
            ack(1, 0, 10),
            ack(2, 20, 30),
            ack(3, 40, 500),
            ack(4, 510, 520),
        ];
        assert_eq!(
            latencies(&acks, 10, 510),
            vec![Duration::from_micros(10), Duration::from_micros(460)]
        );
        assert_eq!(longest_gap(&acks, 0, 30), Some(Duration::from_micros(20)));
        assert_eq!(
            longest_gap(&acks, 30, 600),
            Some(Duration::from_micros(470))
        );
        assert_eq!(longest_gap(&acks, 600, 700), None);
    }

    #[test]
    fn loss_counts_from_the_newest_kept_record() {
        let acks = [ack(1, 0, 1_000), ack(2, 2_000, 3_000), ack(3, 4_000, 5_000)];
        let lost = loss(&acks, &[1, 2]).unwrap();
        assert_eq!(lost.lost, Duration::from_micros(2_000));
        assert_eq!(
            (lost.records, lost.none_kept, lost.prefix),
            (1, false, true)
        );
        // A record written but not yet acknowledged may be kept: no loss.
        assert_eq!(loss(&acks, &[1, 2, 3, 4]).unwrap().lost, Duration::ZERO);
        let none = loss(&acks, &[]).unwrap();
        assert!(none.none_kept);
        assert_eq!(none.lost, Duration::from_micros(5_000));
        assert!(!loss(&acks, &[1, 3]).unwrap().prefix, "a gap is no prefix");
        assert_eq!(loss(&[], &[1]), None);
    }
}
