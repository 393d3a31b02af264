//! `ctl events [-f] [--since ID] [-o json]`: the contacted node's event
//! log (committed changes of the cluster and what that node observed; see
//! `api::events`), one line per event. `-f` keeps asking for the events
//! after the last one shown, so it never prints one twice and resumes
//! across a node's restart (reporting what the node no longer keeps).

use super::{Exit, OutputFormat};
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest, Event};
use std::io::Write;
use std::time::Duration;

/// How often `-f` asks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub struct EventsArgs {
    pub follow: bool,
    pub since: Option<String>,
    pub limit: u32,
    pub output: OutputFormat,
}

pub async fn events(client: &Client, args: EventsArgs) -> Exit {
    let mut since = args.since.clone();
    let mut failures = 0u32;
    loop {
        let request = ClientRequest::Events {
            since: since.clone(),
            limit: args.limit,
        };
        let page = match client.request(request).await {
            ClientReply::Events(page) => page,
            other => {
                if super::logs::ride_out(args.follow, &mut failures, &other).await {
                    continue;
                }
                return super::report_failure(other);
            }
        };
        failures = 0;
        if let Some(gap) = &page.gap {
            eprintln!("warning: {gap}");
        }
        let mut out = std::io::stdout().lock();
        for event in &page.events {
            let line = match args.output {
                OutputFormat::Json => {
                    serde_json::to_string(event).expect("events serialize to JSON")
                }
                OutputFormat::Table => event_line(event),
            };
            if writeln!(out, "{line}").is_err() {
                // The reader went away (`| head`): done.
                return Exit::Ok;
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(last) = page.events.last() {
            since = Some(last.id.clone());
        }
        if !args.follow {
            return Exit::Ok;
        }
        if page.events.len() < args.limit as usize {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// `TIME ID NODE KIND SUMMARY [by WHO, request ID]`.
pub fn event_line(e: &Event) -> String {
    let mut line = format!(
        "{} {} {} {} {}",
        super::output::rfc3339_ms(e.time_ms),
        e.id,
        e.node,
        e.kind,
        e.summary
    );
    if let (Some(who), Some(request)) = (&e.who, &e.request_id) {
        line.push_str(&format!(" [by {who}, request {request}]"));
    }
    line
}
