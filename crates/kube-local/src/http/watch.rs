//! Watches: history replay, bookmarks, resume and 410 Gone, timeouts, dropped streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::registry::ResourceDef;
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{Event, Status};

use super::*;

pub(crate) fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Initial events are read from the store this many at a time, as the real server pages them.
const INITIAL_PAGE: usize = 500;

fn bookmark(res: &ResourceDef, rv: u64) -> Bytes {
    let obj = json!({"apiVersion": res.api_version(), "kind": res.kind, "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
    event_line("BOOKMARK", &obj)
}

pub(crate) struct WatchState {
    shared: Arc<Shared>,
    /// Where the next page of initial events starts (`Some(None)`: at the beginning).
    initial: Option<Option<(String, String)>>,
    /// The resourceVersion of the bookmark that ends the initial events, when asked for.
    end_bookmark: Option<u64>,
    queue: VecDeque<Bytes>,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    drop_rx: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    last_rv: u64,
    /// Newest event received from the channel (relevant or not).
    seen_rv: u64,
    res: ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    done: bool,
}

impl WatchState {
    fn wants(&self, e: &Event) -> bool {
        e.rv > self.last_rv
            && e.group == self.res.group
            && e.plural == self.res.plural
            && self
                .ns
                .as_ref()
                .is_none_or(|ns| e.namespace.as_ref() == Some(ns))
            && self.labels.matches(&e.object["metadata"]["labels"])
            && self.fields.matches(&e.object)
    }
}

pub(crate) async fn watch(
    shared: &Arc<Shared>,
    res: &ResourceDef,
    ns: Option<&str>,
    q: &Query,
    meta_only: bool,
) -> Response {
    let line = move |type_: &str, o: &Value| {
        if meta_only && type_ != "ERROR" {
            event_line(type_, &super::discovery::partial(o))
        } else {
            event_line(type_, o)
        }
    };
    let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return status(Status::bad_request(e)),
    };
    let fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return status(Status::bad_request(e)),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let since = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>().unwrap_or(0));
    // sendInitialEvents (a streaming list): the current state, then a bookmark marking its end.
    let send_initial = q.flag("sendInitialEvents");
    let st = shared.lock();
    let rx = st.tx.subscribe();
    let mut queue = VecDeque::new();
    let last_rv;
    let mut initial = None;
    let mut end_bookmark = None;
    match since.filter(|_| !send_initial) {
        Some(rv) => match st.events_since(res, rv) {
            Ok(events) => {
                for e in events.iter().filter(|e| {
                    ns.is_none_or(|n| e.namespace.as_deref() == Some(n))
                        && labels.matches(&e.object["metadata"]["labels"])
                        && fields.matches(&e.object)
                }) {
                    queue.push_back(line(e.type_, &e.object));
                }
                last_rv = st.rv;
            }
            Err(s) => {
                // Like the real server: 200, then one ERROR event carrying the 410 Status.
                queue.push_back(event_line("ERROR", &s.body));
                last_rv = u64::MAX;
            }
        },
        None => {
            // Sent a page at a time as the client reads, not copied out of the store at once.
            initial = Some(None);
            last_rv = st.rv;
            end_bookmark = send_initial.then_some(st.rv);
        }
    }
    drop(st);
    let bookmarks = q.flag("allowWatchBookmarks").then(|| {
        let period = shared.bookmark_interval;
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    let state = WatchState {
        shared: shared.clone(),
        initial,
        end_bookmark,
        done: last_rv == u64::MAX,
        queue,
        rx,
        drop_rx: shared.drop_watches.subscribe(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        bookmarks,
        last_rv,
        seen_rv: 0,
        res: res.clone(),
        ns: ns.map(str::to_string),
        labels,
        fields,
    };
    let stream = futures::stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(line) = s.queue.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(line), s));
            }
            if let Some(after) = s.initial.take() {
                let page = s.shared.lock().list_page(
                    &s.res,
                    s.ns.as_deref(),
                    &s.labels,
                    &s.fields,
                    after.as_ref(),
                    Some(INITIAL_PAGE),
                );
                for o in &page.items {
                    s.queue.push_back(line("ADDED", o));
                }
                s.initial = page.next.map(Some);
                if s.initial.is_none()
                    && let Some(rv) = s.end_bookmark.take()
                {
                    s.queue.push_back(bookmark(&s.res, rv));
                }
                continue;
            }
            if s.done {
                return None;
            }
            tokio::select! {
                ev = s.rx.recv() => match ev {
                    Ok(e) => {
                        if s.wants(&e) {
                            s.last_rv = e.rv;
                            s.queue.push_back(line(e.type_, &e.object));
                        }
                        s.seen_rv = s.seen_rv.max(e.rv);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) | Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(s.deadline) => return None,
                _ = s.drop_rx.changed() => return None,
                _ = async { match s.bookmarks.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending::<()>().await } } => {
                    // Only as far as events were actually seen: anything newer may still be
                    // in the channel, and a bookmark past it would make the client skip it.
                    s.last_rv = s.last_rv.max(s.seen_rv);
                    s.queue.push_back(bookmark(&s.res, s.last_rv));
                }
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
