//! `GET /v1/events`: the node's event log (`api::events`) as server-sent
//! events. Each event's `id` is its log id, so a client that reconnects
//! with `Last-Event-ID` (browsers' `EventSource` does it by itself) or
//! `?since=` gets only what came after. A pump task copies new events
//! into a bounded channel per client and never waits on it: a client too
//! slow to take them is cut off with a final `event: error` giving the
//! reason, and the node goes on at its own pace.

use super::reply::ApiError;
use super::{Ctx, Peer};
use crate::api::{ClientReply, ClientRequest, Event, EventKey, EventLog, EventsPage};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa::IntoParams;

/// Events waiting for one client; past this the client is too slow.
pub const CLIENT_BUFFER: usize = 1024;
/// Events a stream starts with when no id is given.
const RECENT: usize = 100;
/// Events the pump reads from the log at once.
const PUMP_PAGE: usize = 256;
/// A comment line this often keeps proxies and the client's timer content.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id (`Last-Event-ID` wins when both are given);
    /// without either, the newest 100 and then what follows.
    pub since: Option<String>,
}

/// What the client is sent: an event, or the reason it is cut off.
enum Item {
    Event(Event),
    Gap(String),
}

#[utoipa::path(get, path = "/v1/events", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "text/event-stream: `event: change|container|node|move|replica` with the event as JSON data, `event: gap` when events after the asked id are no longer kept, `event: error` before the server ends a stream"),
        (status = 400, body = super::ErrorBody)))]
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = super::routes::query_of(query)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let since = last_id.or(query.since);
    // The first page through the client API: it checks the caller and the id.
    let limit = match since {
        Some(_) => crate::api::events::MAX_EVENT_PAGE,
        None => RECENT,
    };
    let request = ClientRequest::Events {
        since: since.clone(),
        limit: limit as u32,
    };
    let first = match super::routes::ask(&ctx, &peer, request).await? {
        ClientReply::Events(page) => page,
        other => return Err(ApiError::from_reply(other, false)),
    };
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let cut = Arc::new(Mutex::new(None));
    tokio::spawn(pump(ctx.api.events.clone(), since, first, tx, cut.clone()));
    let stream = futures::stream::unfold((rx, cut), |(mut rx, cut)| async move {
        let item = match rx.recv().await {
            Some(Item::Event(e)) => event_frame(&e),
            Some(Item::Gap(why)) => axum::response::sse::Event::default().event("gap").data(why),
            None => {
                let why: Option<String> = cut.lock().expect("cut lock").take();
                axum::response::sse::Event::default()
                    .event("error")
                    .data(why?)
            }
        };
        Some((Ok::<_, Infallible>(item), (rx, cut)))
    });
    let keep_alive = KeepAlive::new().interval(KEEP_ALIVE);
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

fn event_frame(e: &Event) -> axum::response::sse::Event {
    let data = serde_json::to_string(e).expect("events serialize to JSON");
    axum::response::sse::Event::default()
        .id(e.id.clone())
        .event(e.kind.clone())
        .data(data)
}

/// Copies events after the first page into `tx` as they are logged, until
/// the client goes away or cannot keep up (then `cut` says why).
async fn pump(
    log: Arc<EventLog>,
    since: Option<String>,
    first: EventsPage,
    tx: mpsc::Sender<Item>,
    cut: Arc<Mutex<Option<String>>>,
) {
    let mut appended = log.subscribe();
    appended.mark_changed();
    // The client API checked `since` parses.
    let mut cursor = first.events.last().map(|e| e.id.clone()).or(since);
    if let Some(gap) = first.gap {
        if tx.try_send(Item::Gap(gap)).is_err() {
            return;
        }
    }
    let mut page = first.events;
    loop {
        if let Err(why) = offer(&tx, page) {
            *cut.lock().expect("cut lock") = Some(why);
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            changed = appended.changed() => if changed.is_err() { return },
        }
        let since = cursor.as_deref().and_then(|id| EventKey::parse(id).ok());
        let next = match since {
            Some(since) => log.page(Some(since), PUMP_PAGE),
            // Nothing sent yet (the log was empty): everything in it is
            // new, and nothing was missed.
            None => EventsPage {
                gap: None,
                ..log.page(Some(EventKey::default()), PUMP_PAGE)
            },
        };
        if let Some(last) = next.events.last() {
            cursor = Some(last.id.clone());
        }
        if next.events.len() == PUMP_PAGE {
            // More waiting: come round again without waiting for a change.
            appended.mark_changed();
        }
        if let Some(gap) = next.gap {
            let why = format!("the client fell behind the event log: {gap}");
            *cut.lock().expect("cut lock") = Some(why);
            return;
        }
        page = next.events;
    }
}

/// Hands `events` to the client's channel without waiting.
fn offer(tx: &mpsc::Sender<Item>, events: Vec<Event>) -> Result<(), String> {
    for event in events {
        match tx.try_send(Item::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(format!(
                    "too slow: {CLIENT_BUFFER} events were waiting for this client; \
                     reconnect with Last-Event-ID to resume"
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err("gone".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_does_not_read_is_cut_off_with_a_reason_and_the_log_goes_on() {
        let log = Arc::new(EventLog::empty());
        let (tx, mut rx) = mpsc::channel(CLIENT_BUFFER);
        let cut = Arc::new(Mutex::new(None));
        let page = EventsPage::default();
        let pump = tokio::spawn(pump(log.clone(), None, page, tx, cut.clone()));
        for i in 0..(CLIENT_BUFFER + 10) {
            log.observe("n1", 1, "node", format!("e{i}"));
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), pump)
            .await
            .expect("the pump gave up on the slow client")
            .unwrap();
        let why = cut.lock().unwrap().clone().expect("a reason");
        assert!(why.contains("too slow"), "{why}");
        // What was buffered is still delivered, then the stream ends.
        let mut got = 0;
        while let Some(Item::Event(_)) = rx.recv().await {
            got += 1;
        }
        assert_eq!(got, CLIENT_BUFFER);
        assert_eq!(
            log.page(None, 1).events[0].summary,
            format!("e{}", CLIENT_BUFFER + 9)
        );
    }

    #[tokio::test]
    async fn a_resumed_stream_sends_only_what_comes_after_its_id() {
        let log = Arc::new(EventLog::empty());
        log.observe("n1", 3, "node", "before".into());
        let (tx, mut rx) = mpsc::channel(CLIENT_BUFFER);
        let cut = Arc::new(Mutex::new(None));
        let since = Some("3.1".to_string());
        let page = EventsPage::default();
        tokio::spawn(pump(log.clone(), since, page, tx, cut));
        tokio::task::yield_now().await;
        log.observe("n1", 3, "node", "after".into());
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        match first.expect("an event").expect("the stream goes on") {
            Item::Event(e) => assert_eq!((e.id.as_str(), e.summary.as_str()), ("3.2", "after")),
            Item::Gap(gap) => panic!("{gap}"),
        }
    }
}
