//! `ctl logs APP [-f] [--tail N] [--since T]`: an app's container output,
//! through any node. It reads in pages, each from the last line shown on, so
//! `-f` is a poll that never asks for a line twice; each page is served by
//! whichever node runs the app at that moment, so `-f` follows a move.

use super::Exit;
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest, LogsRequest};
use crate::runtime::UnixNanos;
use std::io::Write;
use std::time::Duration;

/// How often `-f` asks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Failed polls in a row that `-f` rides out (a node restarting, a move in
/// progress) before giving up: about a minute.
const FOLLOW_FAILURES: u32 = 120;

/// While following: whether to ride out failed poll `reply` (warning once,
/// waiting a poll) rather than give up; a reply that is no failure is not.
pub(super) async fn ride_out(follow: bool, failures: &mut u32, reply: &ClientReply) -> bool {
    let ClientReply::Failed { message, .. } = reply else {
        return false;
    };
    if !follow || *failures >= FOLLOW_FAILURES {
        return false;
    }
    if *failures == 0 {
        eprintln!("warning: {message} (still following)");
    }
    *failures += 1;
    tokio::time::sleep(FOLLOW_POLL).await;
    true
}

pub struct LogsArgs {
    pub app: String,
    pub follow: bool,
    pub tail: Option<u32>,
    /// `--since`, as given.
    pub since: Option<String>,
}

pub async fn logs(client: &Client, args: LogsArgs) -> Exit {
    let mut cursor = match args.since.as_deref().map(parse_since).transpose() {
        Ok(since) => since.map(|t| t.0 - 1),
        Err(e) => {
            eprintln!("error: --since: {e}");
            return Exit::Usage;
        }
    };
    let mut tail = args.tail;
    let mut failures = 0u32;
    let mut last_note: Option<String> = None;
    let mut last_node: Option<String> = None;
    loop {
        let request = LogsRequest {
            app: args.app.clone(),
            after_ns: cursor,
            tail,
        };
        let page = match client.request(ClientRequest::Logs(request)).await {
            ClientReply::Logs(page) => page,
            other => {
                if ride_out(args.follow, &mut failures, &other).await {
                    continue;
                }
                return super::report_failure(other);
            }
        };
        failures = 0;
        if args.follow && page.node.is_some() && last_node.is_some() && page.node != last_node {
            eprintln!(
                "-- {} now runs on {} --",
                args.app,
                page.node.as_deref().unwrap_or("?")
            );
        }
        if page.node.is_some() {
            last_node = page.node.clone();
        }
        if page.note.is_some() && page.note != last_note {
            if let Some(note) = &page.note {
                eprintln!("-- {note} --");
            }
        }
        last_note = page.note.clone();
        {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for line in &page.lines {
                let written = if line.stderr {
                    writeln!(err, "{}", line.text)
                } else {
                    writeln!(out, "{}", line.text)
                };
                if written.is_err() {
                    // The reader went away (a closed pipe): nothing to do.
                    return Exit::Ok;
                }
            }
            let _ = out.flush();
        }
        if let Some(last) = page.lines.last() {
            cursor = Some(last.at.0);
            tail = None;
        }
        if page.more {
            continue;
        }
        if !args.follow {
            return Exit::Ok;
        }
        // A first page without lines still answered `--tail`: from now on
        // every line is new.
        if cursor.is_none() {
            cursor = Some(UnixNanos::now().0);
            tail = None;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// `--since`: an RFC 3339 time, or an age such as `90s`, `10m`, `2h`, `1d`.
fn parse_since(text: &str) -> Result<UnixNanos, String> {
    if let Some(t) = UnixNanos::parse_rfc3339(text) {
        return Ok(t);
    }
    let bad = || format!("{text:?} is neither an RFC 3339 time nor an age like 90s, 10m, 2h or 1d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let seconds_per: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let count: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    let age = count
        .checked_mul(seconds_per)
        .and_then(|s| s.checked_mul(1_000_000_000))
        .filter(|n| *n >= 0)
        .ok_or_else(bad)?;
    Ok(UnixNanos(UnixNanos::now().0.saturating_sub(age)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_times_and_ages() {
        assert_eq!(
            parse_since("2024-05-01T10:00:00Z").unwrap(),
            UnixNanos(1_714_557_600_000_000_000)
        );
        let ten_minutes_ago = parse_since("10m").unwrap().0;
        let expected = UnixNanos::now().0 - 600_000_000_000;
        assert!((ten_minutes_ago - expected).abs() < 5_000_000_000);
        for bad in ["", "m", "10x", "-5m", "yesterday", "99999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
