//! Times and node logs as the benchmarks read them: the wall clock in
//! milliseconds since the Unix epoch (what the leader stamps on entries and
//! what Docker and the node logs write, all on this one machine), RFC 3339
//! timestamps, and log lines without their colour escapes.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as Docker and
/// the node logs write it (`2026-11-26T02:01:02.123456789Z`).
pub fn rfc3339_ms(text: &str) -> Option<u64> {
    let t = text.trim().strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from civil (proleptic Gregorian), after H. Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis;
    u64::try_from(ms).ok()
}

/// The time a node's text log line starts with.
pub fn line_ms(line: &str) -> Option<u64> {
    rfc3339_ms(line.split_whitespace().next()?)
}

/// The text of a log line without its colour escapes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// WARN and ERROR lines of the node logs `DIR/<name>.log`, counted by
/// message.
pub fn log_warnings(dir: &Path, names: &[&str]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for name in names {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        for line in log.lines().map(strip_ansi) {
            let Some(level_at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
                continue;
            };
            // Drop the timestamp; keep the target and the message's head.
            let rest: String = line[level_at..].chars().take(110).collect();
            *counts.entry(format!("{name}:{rest}")).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_as_docker_and_the_logs_write_it() {
        // date -u -d 2024-02-29T12:34:56Z +%s → 1709210096
        assert_eq!(
            rfc3339_ms("2024-02-29T12:34:56.123456789Z"),
            Some(1_709_210_096_123)
        );
        assert_eq!(rfc3339_ms("2024-02-29T12:34:56Z"), Some(1_709_210_096_000));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(rfc3339_ms("2024-02-29 12:34:56"), None);
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None, "before the epoch");
        let line = "2024-02-29T12:34:56.250000Z  INFO flocker::routing: routing: web:18081/tcp now delivered here";
        assert_eq!(line_ms(line), Some(1_709_210_096_250));
    }

    #[test]
    fn colour_escapes_are_dropped() {
        assert_eq!(
            strip_ansi("\x1b[2m2024\x1b[0m \x1b[32m INFO\x1b[0m x"),
            "2024  INFO x"
        );
    }
}
