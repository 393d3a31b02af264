//! The owner's account of its replica points, read from a node's log: one
//! `volume point taken` line per point (the app's stall inside the capture,
//! the bytes the capture wrote or shared) and one `volume point shipped`
//! line per point and replica (the chunk bytes sent).

use super::super::logs::{line_ms, strip_ansi};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// When the line was logged (after the capture and the point's scan),
    /// ms since the Unix epoch.
    pub at_ms: u64,
    pub app: String,
    pub epoch: u64,
    pub seq: u64,
    pub stall: Duration,
    pub captured_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipped {
    pub at_ms: u64,
    pub app: String,
    pub replica: String,
    pub seq: u64,
    pub sent_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Points {
    pub taken: Vec<Taken>,
    pub shipped: Vec<Shipped>,
}

impl Points {
    /// The points of `app` taken at or after `since_ms`.
    pub fn taken_since<'a>(
        &'a self,
        app: &'a str,
        since_ms: u64,
    ) -> impl Iterator<Item = &'a Taken> {
        of_app_since(&self.taken, app, since_ms, |t| (&t.app, t.at_ms))
    }

    pub fn shipped_since<'a>(
        &'a self,
        app: &'a str,
        since_ms: u64,
    ) -> impl Iterator<Item = &'a Shipped> {
        of_app_since(&self.shipped, app, since_ms, |s| (&s.app, s.at_ms))
    }

    /// Chunk bytes sent for point `seq` of `app` (to every replica), once a
    /// shipped line for it is there.
    pub fn sent(&self, app: &str, since_ms: u64, seq: u64) -> Option<u64> {
        let lines: Vec<&Shipped> = self
            .shipped_since(app, since_ms)
            .filter(|s| s.seq == seq)
            .collect();
        (!lines.is_empty()).then(|| lines.iter().map(|s| s.sent_bytes).sum())
    }
}

/// The lines of `items` about `app` logged at or after `since_ms`, as
/// `key` gives each line's app and time.
fn of_app_since<'a, T>(
    items: &'a [T],
    app: &'a str,
    since_ms: u64,
    key: fn(&T) -> (&String, u64),
) -> impl Iterator<Item = &'a T> {
    items.iter().filter(move |item| {
        let (of, at_ms) = key(item);
        of == app && at_ms >= since_ms
    })
}

/// The point lines of the node log `DIR/<node>.log` (none if unreadable).
pub fn read(dir: &Path, node: &str) -> Points {
    let text = std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default();
    parse(&text)
}

pub fn parse(text: &str) -> Points {
    let mut points = Points::default();
    for line in text.lines() {
        let taken = line.contains("volume point taken");
        if !taken && !line.contains("volume point shipped") {
            continue;
        }
        let line = strip_ansi(line);
        let Some(at_ms) = line_ms(&line) else {
            continue;
        };
        let field = |key: &str| -> Option<&str> {
            line.split_whitespace()
                .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        };
        let number = |key: &str| -> Option<u64> { field(key)?.parse().ok() };
        let Some(app) = field("app") else { continue };
        let app = app.to_string();
        if taken {
            let (Some(epoch), Some(seq), Some(stall_us), Some(captured_bytes)) = (
                number("epoch"),
                number("seq"),
                number("stall_us"),
                number("captured_bytes"),
            ) else {
                continue;
            };
            points.taken.push(Taken {
                at_ms,
                app,
                epoch,
                seq,
                stall: Duration::from_micros(stall_us),
                captured_bytes,
            });
        } else {
            let (Some(replica), Some(seq), Some(sent_bytes)) =
                (field("replica"), number("seq"), number("sent_bytes"))
            else {
                continue;
            };
            points.shipped.push(Shipped {
                at_ms,
                app,
                replica: replica.to_string(),
                seq,
                sent_bytes,
            });
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_lines_as_the_owner_logs_them() {
        let log = "\
2026-01-02T03:04:05.250000Z  INFO flocker::replication::owner: volume point taken app=rep epoch=2 seq=7 stall_us=1234 captured_bytes=4096
2026-01-02T03:04:05.400000Z  INFO flocker::replication::owner: volume point shipped app=rep replica=n3 seq=7 sent_bytes=8192
2026-01-02T03:04:05.500000Z  WARN flocker::replication::owner: point not shipped app=rep replica=n2 seq=7
2026-01-02T03:04:06.000000Z  INFO flocker::replication::owner: volume point taken app=rep epoch=2
";
        let p = parse(log);
        assert_eq!(p.taken.len(), 1, "a line without its fields is skipped");
        let t = &p.taken[0];
        assert_eq!((t.app.as_str(), t.epoch, t.seq), ("rep", 2, 7));
        assert_eq!(t.stall, Duration::from_micros(1234));
        assert_eq!(t.captured_bytes, 4096);
        assert_eq!(p.sent("rep", 0, 7), Some(8192));
        assert_eq!(p.sent("rep", 0, 8), None);
        assert_eq!(p.shipped[0].replica, "n3");
        assert_eq!(p.taken_since("rep", t.at_ms + 1).count(), 0);
    }
}
