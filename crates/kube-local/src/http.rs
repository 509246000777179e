//! Routing and verbs of the local API server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::registry::ResourceDef;
use super::select::{FieldSelector, LabelSelector, json_path};
use super::store::{Event, Status, Store, WriteOpts, apply_patch};
use super::{KubeFaultAction, Shared};

fn reply(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status(s: Status) -> Response {
    reply(s.code, &s.body)
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// Entry point.
pub async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = Query(
        uri.query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
    );
    shared.count(&method, &path);
    if let Some(action) = shared.take_fault(&method, &path) {
        match action {
            KubeFaultAction::Delay { millis } => {
                tokio::time::sleep(Duration::from_millis(millis)).await
            }
            KubeFaultAction::Status { code, message } => {
                let reason = match code {
                    409 => "Conflict",
                    429 => "TooManyRequests",
                    500 => "InternalError",
                    503 => "ServiceUnavailable",
                    _ => "Unknown",
                };
                let mut resp = status(Status::new(
                    code,
                    reason,
                    message.unwrap_or_else(|| format!("injected fault {code}")),
                    json!({}),
                ));
                if code == 429 {
                    resp.headers_mut()
                        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                }
                return resp;
            }
        }
    }
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["version"] => reply(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-runner-operator-sandbox", "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ["healthz"] | ["livez"] | ["readyz"] => (StatusCode::OK, "ok").into_response(),
        ["api"] => reply(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ),
        ["apis"] => {
            let st = shared.lock();
            reply(200, &group_list(&st))
        }
        ["api", "v1"] => {
            let st = shared.lock();
            reply(200, &resource_list(&st, "", "v1"))
        }
        ["apis", group] => {
            let st = shared.lock();
            match group_list(&st)["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == *group).cloned())
            {
                Some(mut g) => {
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    reply(200, &g)
                }
                None => status(Status::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    json!({}),
                )),
            }
        }
        ["apis", group, version] => {
            let st = shared.lock();
            if st
                .resources
                .iter()
                .any(|r| r.group == *group && r.version == *version)
            {
                reply(200, &resource_list(&st, group, version))
            } else {
                status(Status::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    json!({}),
                ))
            }
        }
        ["openapi", "v3"] => reply(200, &super::openapi::index(&shared.lock())),
        ["openapi", "v3", "api", version] => openapi_doc(&shared, "", version),
        ["openapi", "v3", "apis", group, version] => openapi_doc(&shared, group, version),
        ["openapi", "v2"] => status(Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource (only OpenAPI v3 is served)",
            json!({}),
        )),
        ["api", "v1", rest @ ..] => {
            resource_request(&shared, &method, "", "v1", rest, &query, &headers, &body).await
        }
        ["apis", group, version, rest @ ..] => {
            resource_request(
                &shared, &method, group, version, rest, &query, &headers, &body,
            )
            .await
        }
        _ => status(Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )),
    }
}

fn openapi_doc(shared: &Shared, group: &str, version: &str) -> Response {
    match super::openapi::document(&shared.lock(), group, version) {
        Some(doc) => reply(200, &doc),
        None => status(Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )),
    }
}

fn group_list(st: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for r in st.resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version.clone()),
            Some(_) => {}
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    // As kube-apiserver orders them: built-in groups first, then CRD groups (all of priority
    // 1000) by name. kubectl resolves a resource name two groups share to the first.
    let is_crd = |g: &str| st.resources.iter().any(|r| r.group == g && r.crd.is_some());
    groups.sort_by_key(|(g, _)| {
        if is_crd(g) {
            (1, g.clone())
        } else {
            (0, String::new())
        }
    });
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(st: &Store, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = st
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(ResourceDef::api_resources)
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

struct Target<'a> {
    res: ResourceDef,
    ns: Option<String>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(
    st: &Store,
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<Target<'a>, Status> {
    let (ns, rest): (Option<String>, Vec<&'a str>) = match rest {
        ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => (
            Some(ns.to_string()),
            std::iter::once(*plural)
                .chain(more.iter().copied())
                .collect(),
        ),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => {
            return Err(Status::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
                json!({}),
            ));
        }
    };
    let res = st.resource_v(group, version, plural).ok_or_else(|| {
        Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )
    })?;
    if sub.is_some_and(|s| s != "status" || !res.status_subresource) {
        return Err(Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ));
    }
    Ok(Target { res, ns, name, sub })
}

fn decode_body(body: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(body).or_else(|_| {
        let text =
            std::str::from_utf8(body).map_err(|_| Status::bad_request("the body is not UTF-8"))?;
        serde_saphyr::from_str::<Value>(text).map_err(|e| {
            Status::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    })
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let target = {
        let st = shared.lock();
        match parse_target(&st, group, version, rest) {
            Ok(t) => t,
            Err(s) => return status(s),
        }
    };
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/vnd.kubernetes.protobuf") || ct.starts_with("application/cbor") {
        return status(Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"
            ),
            json!({}),
        ));
    }
    let manager = q.get("fieldManager").unwrap_or("unknown").to_string();
    let strict = q.get("fieldValidation") == Some("Strict");
    let opts = WriteOpts {
        manager: &manager,
        subresource: target.sub,
        strict,
    };
    let res = &target.res;
    let ns = target.ns.as_deref();
    // dryRun=All: the write runs on a detached copy of the store (no watch events, nothing kept),
    // as the real API server runs admission and validation without persisting.
    let dry = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return status(Status::bad_request(format!(
                "unsupported dry run option: {other}; only All is supported"
            )));
        }
    };
    let writable = || {
        let live = shared.lock();
        if dry {
            StoreRef::Dry(Box::new(live.detached_copy()))
        } else {
            StoreRef::Live(live)
        }
    };
    let result: Result<(u16, Value), Status> = match (method.clone(), target.name) {
        (Method::GET, None) if q.flag("watch") => return watch(shared, res, ns, q).await,
        (Method::GET, None) => list(shared, res, ns, q, headers),
        (Method::GET, Some(name)) => {
            let st = shared.lock();
            st.get(res, ns, name)
                .map(|o| (200, maybe_table(res, vec![o], headers, st.rv, false)))
        }
        (Method::POST, None) => decode_body(body).and_then(|obj| {
            writable()
                .create(res, ns, obj, &manager, strict)
                .map(|o| (201, o))
        }),
        (Method::PUT, Some(name)) => decode_body(body).and_then(|obj| {
            writable()
                .update(res, ns, name, obj, &opts)
                .map(|o| (200, o))
        }),
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mut st = writable();
            if ct.starts_with("application/apply-patch") {
                decode_body(body).and_then(|obj| {
                    let existed = st.get(res, ns, name).is_ok();
                    st.apply(res, ns, name, obj, q.flag("force"), &opts)
                        .map(|o| (if existed { 200 } else { 201 }, o))
                })
            } else {
                st.get(res, ns, name)
                    .and_then(|cur| apply_patch(&cur, ct, body))
                    .and_then(|patched| st.update(res, ns, name, patched, &opts))
                    .map(|o| (200, o))
            }
        }
        (Method::DELETE, Some(name)) => {
            let uid = decode_body(body)
                .ok()
                .and_then(|b| b["preconditions"]["uid"].as_str().map(str::to_string));
            let mut st = writable();
            st.delete(res, ns, name, uid.as_deref()).map(|o| (200, o))
        }
        (Method::DELETE, None) => {
            let mut st = writable();
            let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
                Ok(l) => l,
                Err(e) => return status(Status::bad_request(e)),
            };
            let names: Vec<String> = st
                .list(res, ns, &labels, &FieldSelector::default())
                .iter()
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            for n in &names {
                let _ = st.delete(res, ns, n, None);
            }
            Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(Status::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            json!({}),
        )),
    };
    match result {
        Ok((code, mut body)) => {
            if dry {
                // Nothing was stored: a dry-run create has no resourceVersion, and an update
                // keeps the live one.
                let live = target
                    .name
                    .and_then(|n| shared.lock().get(res, ns, n).ok())
                    .and_then(|o| {
                        o["metadata"]["resourceVersion"]
                            .as_str()
                            .map(str::to_string)
                    });
                if let Some(meta) = body["metadata"].as_object_mut() {
                    match live {
                        Some(rv) => meta.insert("resourceVersion".into(), json!(rv)),
                        None => meta.remove("resourceVersion"),
                    };
                }
            }
            reply(code, &body)
        }
        Err(s) => status(s),
    }
}

fn list(
    shared: &Arc<Shared>,
    res: &ResourceDef,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> Result<(u16, Value), Status> {
    let labels =
        LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(Status::bad_request)?;
    let fields =
        FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(Status::bad_request)?;
    let st = shared.lock();
    let items = st.list(res, ns, &labels, &fields);
    Ok((200, maybe_table(res, items, headers, st.rv, true)))
}

/// A `Table` when kubectl asks for one (printer columns), else the object or list.
fn maybe_table(
    res: &ResourceDef,
    items: Vec<Value>,
    headers: &HeaderMap,
    rv: u64,
    is_list: bool,
) -> Value {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("as=Table") {
        if is_list {
            return json!({"apiVersion": res.api_version(), "kind": format!("{}List", res.kind), "metadata": {"resourceVersion": rv.to_string()}, "items": items});
        }
        return items.into_iter().next().unwrap_or(Value::Null);
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let custom: Vec<Value> = res.printer_columns.clone();
    let has_age = custom
        .iter()
        .any(|c| c["jsonPath"] == ".metadata.creationTimestamp");
    for c in &custom {
        columns.push(json!({"name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")), "description": c.get("description").cloned().unwrap_or(json!("")), "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
    }
    if !has_age {
        columns.push(
            json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}),
        );
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &custom {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let vals = json_path(o, path);
                // As apiextensions' table convertor: the first result only; none is null
                // (kubectl prints an empty cell); dates become ages.
                let cell = match (c["type"].as_str(), vals.first()) {
                    (_, None) => Value::Null,
                    (Some("date"), Some(Value::String(s))) => json!(age(s)),
                    (_, Some(v)) => v.clone(),
                };
                cells.push(cell);
            }
            if !has_age {
                cells.push(json!(age(o["metadata"]["creationTimestamp"].as_str().unwrap_or_default())));
            }
            let mut meta = o["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": columns, "rows": rows})
}

fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return ts.to_string();
    };
    human_duration(jiff::Timestamp::now().as_second() - t.as_second())
}

/// apimachinery's `duration.HumanDuration`, which kube-apiserver uses for ages: a time in the
/// future shows as `<invalid>`.
fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    let with = |big: i64, unit: &str, small: i64, sunit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{sunit}")
        }
    };
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if minutes < 10 => with(minutes, "m", secs % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", (hours / 24) % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

struct WatchState {
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

async fn watch(shared: &Arc<Shared>, res: &ResourceDef, ns: Option<&str>, q: &Query) -> Response {
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
    let st = shared.lock();
    let rx = st.tx.subscribe();
    let mut queue = VecDeque::new();
    let last_rv;
    match since {
        Some(rv) => match st.events_since(res, rv) {
            Ok(events) => {
                for e in events.iter().filter(|e| {
                    ns.is_none_or(|n| e.namespace.as_deref() == Some(n))
                        && labels.matches(&e.object["metadata"]["labels"])
                        && fields.matches(&e.object)
                }) {
                    queue.push_back(event_line(e.type_, &e.object));
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
            for o in st.list(res, ns, &labels, &fields) {
                queue.push_back(event_line("ADDED", &o));
            }
            last_rv = st.rv;
        }
    }
    drop(st);
    let bookmarks = q.flag("allowWatchBookmarks").then(|| {
        let period = shared.bookmark_interval;
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    let state = WatchState {
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
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(line) = s.queue.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(line), s));
            }
            if s.done {
                return None;
            }
            tokio::select! {
                ev = s.rx.recv() => match ev {
                    Ok(e) => {
                        if s.wants(&e) {
                            s.last_rv = e.rv;
                            s.queue.push_back(event_line(e.type_, &e.object));
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
                    let obj = json!({"apiVersion": s.res.api_version(), "kind": s.res.kind, "metadata": {"resourceVersion": s.last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                    s.queue.push_back(event_line("BOOKMARK", &obj));
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

/// The store a write goes to: the live one, or a detached copy for `dryRun=All`.
enum StoreRef<'a> {
    Live(std::sync::MutexGuard<'a, super::store::Store>),
    Dry(Box<super::store::Store>),
}

impl std::ops::Deref for StoreRef<'_> {
    type Target = super::store::Store;
    fn deref(&self) -> &Self::Target {
        match self {
            StoreRef::Live(g) => g,
            StoreRef::Dry(s) => s,
        }
    }
}

impl std::ops::DerefMut for StoreRef<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            StoreRef::Live(g) => &mut *g,
            StoreRef::Dry(s) => &mut *s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn ages_read_as_kubectl_shows_them_from_a_real_server() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (48 * 3600, "2d"),
            (49 * 3600, "2d1h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
