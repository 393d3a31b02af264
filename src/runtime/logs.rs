//! Container logs as the runtime layer serves them: pages of timestamped
//! lines, each page bounded in lines and bytes, read from a cursor (the
//! engine time of the last line already delivered) so that a client can poll
//! for more, and follow an app from node to node, without a long stream.

use super::UnixNanos;
use serde::{Deserialize, Serialize};

/// Most lines one page holds.
pub const MAX_PAGE_LINES: usize = 5_000;
/// Most text bytes one page holds (well inside a 4 MiB reply frame).
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// A longer line is cut here (and marked), so one line cannot fill a page.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Which lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only lines stamped strictly after this engine time.
    pub after: Option<UnixNanos>,
    /// Only the last `tail` lines (of those after `after`).
    pub tail: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the engine received it: the next page's cursor.
    pub at: UnixNanos,
    pub stderr: bool,
    /// Without its newline.
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The page filled up: more lines follow the last one.
    pub more: bool,
}

/// Collects lines into a bounded page.
#[derive(Debug, Default)]
pub struct PageBuilder {
    page: LogPage,
    bytes: usize,
}

impl PageBuilder {
    /// Adds a line unless the page is full; false once it is (then `more`
    /// is set and the caller stops reading).
    pub fn push(&mut self, mut line: LogLine) -> bool {
        if self.page.lines.len() >= MAX_PAGE_LINES || self.bytes + line.text.len() > MAX_PAGE_BYTES
        {
            self.page.more = true;
            return false;
        }
        if line.text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.text.is_char_boundary(cut) {
                cut -= 1;
            }
            line.text.truncate(cut);
            line.text.push_str(" [line cut]");
        }
        self.bytes += line.text.len();
        self.page.lines.push(line);
        true
    }

    pub fn finish(self) -> LogPage {
        self.page
    }
}

/// Splits one engine line `<RFC 3339 time> <text>` (what Docker writes with
/// `timestamps=1`); `None` for a line without a readable time.
pub fn split_timestamped(line: &str) -> Option<(UnixNanos, &str)> {
    let (time, text) = line.split_once(' ').unwrap_or((line, ""));
    Some((UnixNanos::parse_rfc3339(time)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: i64, text: &str) -> LogLine {
        LogLine {
            at: UnixNanos(at),
            stderr: false,
            text: text.into(),
        }
    }

    #[test]
    fn pages_are_bounded_in_lines_and_bytes() {
        let mut b = PageBuilder::default();
        for i in 0..MAX_PAGE_LINES {
            assert!(b.push(line(i as i64, "x")));
        }
        assert!(!b.push(line(-1, "one too many")));
        let page = b.finish();
        assert!(page.more);
        assert_eq!(page.lines.len(), MAX_PAGE_LINES);

        let mut b = PageBuilder::default();
        let big = "é".repeat(MAX_LINE_BYTES);
        let mut n = 0;
        while b.push(line(n, &big)) {
            n += 1;
        }
        let page = b.finish();
        assert!(page.more);
        assert!(page.lines[0].text.ends_with("[line cut]"));
        let total: usize = page.lines.iter().map(|l| l.text.len()).sum();
        assert!(total <= MAX_PAGE_BYTES);
    }

    #[test]
    fn timestamps_are_split_off() {
        let (at, text) = split_timestamped("2024-05-01T10:00:00.000000001Z hello world").unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(at, UnixNanos(1_714_557_600_000_000_001));
        assert_eq!(split_timestamped("no time here"), None);
    }
}
