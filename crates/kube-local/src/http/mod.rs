//! Routing and verbs of the local API server.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use crate::registry::ResourceDef;
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{Status, Store, WriteOpts, apply_patch};
use crate::{KubeFaultAction, Shared};

mod discovery;
mod watch;

use discovery::*;
use watch::*;

pub(crate) fn reply(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn status(s: Status) -> Response {
    reply(s.code, &s.body)
}

pub(crate) struct Query(Vec<(String, String)>);

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

fn not_found(message: &str) -> Response {
    status(Status::new(404, "NotFound", message, json!({})))
}

/// The API's routes; counting and injected faults run before every one of them.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/api", get(api_versions))
        .route("/apis", get(apis))
        .route("/api/v1", get(core_resources))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/api/{version}", get(openapi_core))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi_group))
        .route("/openapi/v2", get(openapi_v2))
        .route("/api/v1/{*rest}", any(core_request))
        .route("/apis/{group}/{version}/{*rest}", any(group_request))
        .fallback(|| async { not_found("the server could not find the requested resource") })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            counts_and_faults,
        ))
        .with_state(shared)
}

/// Counts the request and answers with an injected fault when one matches.
async fn counts_and_faults(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    shared.count(&method, &path);
    match shared.take_fault(&method, &path) {
        Some(KubeFaultAction::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await
        }
        Some(KubeFaultAction::Status { code, message }) => {
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
        None => {}
    }
    next.run(req).await
}

async fn version() -> Response {
    reply(
        200,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-runner-operator-sandbox", "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
    )
}

async fn ok() -> Response {
    (StatusCode::OK, "ok").into_response()
}

async fn api_versions(State(shared): State<Arc<Shared>>) -> Response {
    reply(
        200,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
    )
}

async fn apis(State(shared): State<Arc<Shared>>) -> Response {
    reply(200, &group_list(&shared.lock()))
}

async fn core_resources(State(shared): State<Arc<Shared>>) -> Response {
    reply(200, &resource_list(&shared.lock(), "", "v1"))
}

async fn api_group(State(shared): State<Arc<Shared>>, Path(group): Path<String>) -> Response {
    let found = group_list(&shared.lock())["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == group.as_str()).cloned());
    match found {
        Some(mut g) => {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            reply(200, &g)
        }
        None => not_found("the server could not find the requested resource"),
    }
}

async fn group_resources(
    State(shared): State<Arc<Shared>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    let st = shared.lock();
    if st
        .resources
        .iter()
        .any(|r| r.group == group && r.version == version)
    {
        reply(200, &resource_list(&st, &group, &version))
    } else {
        not_found("the server could not find the requested resource")
    }
}

async fn openapi_index(State(shared): State<Arc<Shared>>) -> Response {
    reply(200, &super::openapi::index(&shared.lock()))
}

async fn openapi_core(State(shared): State<Arc<Shared>>, Path(version): Path<String>) -> Response {
    openapi_doc(&shared, "", &version)
}

async fn openapi_group(
    State(shared): State<Arc<Shared>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    openapi_doc(&shared, &group, &version)
}

async fn openapi_v2() -> Response {
    not_found("the server could not find the requested resource (only OpenAPI v3 is served)")
}

/// The path's segments after the first `skip`, each percent-decoded on its own (an encoded
/// `/` stays inside its segment).
fn segments(uri: &Uri, skip: usize) -> Vec<String> {
    uri.path()
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(skip)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn query(uri: &Uri) -> Query {
    Query(
        uri.query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// `/api/v1/…`: core resources.
async fn core_request(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = segments(&uri, 2);
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    resource_request(
        &shared,
        &method,
        "",
        "v1",
        &rest,
        &query(&uri),
        &headers,
        &body,
    )
    .await
}

/// `/apis/GROUP/VERSION/…`: resources of an API group (built-in or a CRD's).
async fn group_request(
    State(shared): State<Arc<Shared>>,
    Path((group, version, _)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = segments(&uri, 3);
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    resource_request(
        &shared,
        &method,
        &group,
        &version,
        &rest,
        &query(&uri),
        &headers,
        &body,
    )
    .await
}

pub(crate) struct Target<'a> {
    res: ResourceDef,
    ns: Option<String>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

pub(crate) fn parse_target<'a>(
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

pub(crate) fn decode_body(body: &[u8]) -> Result<Value, Status> {
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
pub(crate) async fn resource_request(
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
            StoreRef::Dry(Box::new(live.detached_copy_for(res, ns, target.name)))
        } else {
            StoreRef::Live(live)
        }
    };
    let result: Result<(u16, Value), Status> = match (method.clone(), target.name) {
        (Method::GET, None) if q.flag("watch") => {
            return watch(shared, res, ns, q, discovery::wants_metadata(headers)).await;
        }
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

pub(crate) fn list(
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
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let st = shared.lock();
    let (rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        None => (st.rv, None),
        Some(token) => {
            if q.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(Status::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, after) = decode_continue(token).ok_or_else(|| {
                Status::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            })?;
            if rv < st.compacted_rv {
                return Err(Status::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    json!({}),
                ));
            }
            (rv, Some(after))
        }
    };
    // Like etcd, a later page is read from the current state but reports the first page's
    // resourceVersion, so a watch from it replays whatever changed in between.
    let page = st.list_page(res, ns, &labels, &fields, after.as_ref(), limit);
    let mut body = maybe_table(res, page.items, headers, rv, true);
    if let (Some(next), Some(meta)) = (page.next, body["metadata"].as_object_mut()) {
        // The real server counts what is left only when no selector filters it.
        if labels.is_empty() && fields.is_empty() {
            meta.insert(
                "remainingItemCount".into(),
                json!(st.count_after(res, ns, &next)),
            );
        }
        meta.insert("continue".into(), json!(encode_continue(rv, &next)));
    }
    Ok((200, body))
}

/// An opaque continue token, as the real server's: base64 of the list's resourceVersion and
/// the key the next page starts after.
fn encode_continue(rv: u64, (ns, name): &(String, String)) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}\u{0}")});
    serde_json::to_value(k8s_openapi::ByteString(raw.to_string().into_bytes()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes: k8s_openapi::ByteString = serde_json::from_value(json!(token)).ok()?;
    let raw: Value = serde_json::from_slice(&bytes.0).ok()?;
    let start = raw["start"].as_str()?.strip_suffix('\u{0}')?;
    let (ns, name) = start.split_once('/')?;
    Some((raw["rv"].as_u64()?, (ns.to_string(), name.to_string())))
}

/// The store a write goes to: the live one, or a detached copy for `dryRun=All`.
pub(crate) enum StoreRef<'a> {
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
