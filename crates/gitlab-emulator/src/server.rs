//! HTTP front of the emulator: routing, parameters, auth, scopes, pagination, throttling.

// Errors here are finished HTTP answers returned early; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::model::*;
use super::{FaultAction, Shared};

type Params = Map<String, Value>;
type Reply = Result<Response, Response>;

fn message(status: u16, msg: impl Into<Value>) -> Response {
    json_reply(status, json!({ "message": msg.into() }))
}

fn error(status: u16, msg: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": msg.into() }))
}

fn json_reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

const NO_ACCESS: &str = "403 Forbidden - No access granted";

/// The endpoint label used for counting and fault matching, e.g. `GET /runners/:id`.
pub fn endpoint_label(method: &Method, segs: &[String]) -> String {
    let parts: Vec<&str> = match segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["runners", x, rest @ ..] if x.parse::<i64>().is_ok() => std::iter::once("runners")
            .chain(std::iter::once(":id"))
            .chain(rest.iter().copied())
            .collect(),
        [kind @ ("projects" | "groups"), _, "runners", r, rest @ ..]
            if *r != "reset_registration_token" =>
        {
            [*kind, ":id", "runners", ":runner_id"]
                .into_iter()
                .chain(rest.iter().copied())
                .collect()
        }
        [kind @ ("projects" | "groups"), _, rest @ ..] => [*kind, ":id"]
            .into_iter()
            .chain(rest.iter().copied())
            .collect(),
        other => other.to_vec(),
    };
    format!("{method} /{}", parts.join("/"))
}

/// Entry point for every request: answers it, then logs it (arrival, endpoint, status, and for
/// a 429 the end of the wait it asked for, in seconds or as an HTTP date).
pub async fn handle(
    state: axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = std::time::SystemTime::now();
    let shared = state.0;
    let path = uri.path().to_string();
    if path.starts_with("/-/emulator/") {
        return super::control::handle(&shared, &method, &path, &body);
    }
    let segs: Vec<String> = path
        .trim_start_matches("/api/v4/")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let label = endpoint_label(&method, &segs);
    let token = headers
        .get("private-token")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string());
    let req = Request {
        method: &method,
        uri: &uri,
        path: &path,
        segs: &segs,
        label: &label,
        headers: &headers,
        body: &body,
    };
    let mut resp = answer(&shared, &req).await;
    let status = resp.status().as_u16();
    let mut retry_until = None;
    if status == 429 {
        let secs = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(secs) = secs {
            let until = at + std::time::Duration::from_secs(secs);
            retry_until = Some(until);
            let as_date = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .settings
                .retry_after_http_date;
            if as_date {
                // Whole seconds, rounded up: the date is never earlier than the wait.
                let unix = until
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                    .unwrap_or(0);
                retry_until = Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix));
                let date = jiff::Timestamp::from_second(unix as i64)
                    .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    .unwrap_or_default();
                if let Ok(v) = HeaderValue::from_str(&date) {
                    resp.headers_mut().insert("retry-after", v);
                }
            }
        }
    }
    shared
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .log
        .push(super::model::LoggedRequest {
            at,
            endpoint: label,
            status,
            retry_until,
            token,
        });
    resp
}

/// What `handle` parsed once: the path, its decoded segments and the endpoint label.
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    path: &'a str,
    segs: &'a [String],
    label: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

async fn answer(shared: &Arc<Shared>, req: &Request<'_>) -> Response {
    let Request {
        method,
        uri,
        path,
        segs,
        label,
        headers,
        body,
    } = *req;
    if path.starts_with("/api/v3/") {
        return error(410, "API V3 is no longer supported. Use API V4 instead.");
    }
    if !path.starts_with("/api/v4/") {
        return error(404, "404 Not Found");
    }

    // Faults first: they model the network and proxies in front of GitLab.
    let fault = shared.take_fault(label, path);
    shared.count(label);
    let lose_answer = matches!(fault, Some(FaultAction::LoseAnswer));
    if let Some(action) = fault {
        match action {
            FaultAction::LoseAnswer => {}
            FaultAction::Delay { millis } => {
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await
            }
            FaultAction::Status {
                status,
                body,
                retry_after,
            } => {
                let mut resp = if status == 429 && body.is_none() {
                    rack_attack_429(retry_after.unwrap_or(60), 0, 0)
                } else {
                    json_reply(
                        status,
                        body.unwrap_or_else(
                            || json!({"message": format!("{status} Injected fault")}),
                        ),
                    )
                };
                if let Some(secs) = retry_after
                    && let Ok(v) = HeaderValue::from_str(&secs.to_string())
                {
                    resp.headers_mut().insert("retry-after", v);
                }
                return resp;
            }
            FaultAction::Drop => return dropped_connection(),
        }
    }

    let params = match merge_params(uri.query(), headers, body) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let base_url = format!(
        "http://{}{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost"),
        path
    );
    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let ctx = Ctx {
        method,
        segs,
        params: &params,
        headers,
        base_url: &base_url,
    };
    let answer = route(&mut st, &ctx).unwrap_or_else(|e| e);
    if lose_answer {
        return dropped_connection();
    }
    answer
}

/// Headers promise a body that never comes: hyper closes the connection mid-response.
fn dropped_connection() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    Response::builder()
        .status(200)
        .header("content-length", "1000")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct Ctx<'a> {
    method: &'a Method,
    segs: &'a [String],
    params: &'a Params,
    headers: &'a HeaderMap,
    base_url: &'a str,
}

fn merge_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Params, Response> {
    let mut params = Params::new();
    let mut add = |k: String, v: String| {
        if let Some(key) = k.strip_suffix("[]") {
            let entry = params
                .entry(key.to_string())
                .or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(items) = entry {
                items.push(Value::String(v));
            }
        } else {
            params.insert(k, Value::String(v));
        }
    };
    if let Some(q) = query {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            add(k.into_owned(), v.into_owned());
        }
    }
    if !body.is_empty() {
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => params.extend(map),
                Ok(_) => {}
                Err(_) => {
                    return Err(error(
                        400,
                        "The provided content-type 'application/json' is not supported.",
                    ));
                }
            }
        } else {
            for (k, v) in url::form_urlencoded::parse(body) {
                add(k.into_owned(), v.into_owned());
            }
        }
    }
    Ok(params)
}

// ---- Parameter helpers (Grape semantics: errors are {"error": ...}) ----

fn p_bool(params: &Params, name: &str) -> Result<Option<bool>, Response> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" | "on" => Ok(Some(true)),
            "false" | "f" | "0" | "no" | "n" | "off" => Ok(Some(false)),
            _ => Err(error(400, format!("{name} is invalid"))),
        },
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(_) => Err(error(400, format!("{name} is invalid"))),
    }
}

fn p_int(params: &Params, name: &str) -> Result<Option<i64>, Response> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| error(400, format!("{name} is invalid"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| error(400, format!("{name} is invalid"))),
        Some(_) => Err(error(400, format!("{name} is invalid"))),
    }
}

fn p_str(params: &Params, name: &str) -> Result<Option<String>, Response> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(error(400, format!("{name} is invalid"))),
    }
}

fn p_values(params: &Params, name: &str, allowed: &[&str]) -> Result<Option<String>, Response> {
    match p_str(params, name)? {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(error(400, format!("{name} does not have a valid value")))
        }
        other => Ok(other),
    }
}

// ---- Authentication and scopes ----

#[derive(Clone, Copy, PartialEq)]
enum ScopeKind {
    /// `/runners/:id...`: manage_runner applies.
    RunnerById,
    /// `POST /user/runners`: create_runner applies.
    UserRunners,
    /// `GET /personal_access_tokens/self`: any scope.
    AnyScope,
    Other,
}

/// The access token a request presents (header, bearer or parameter).
fn presented_token(ctx: &Ctx) -> Option<String> {
    let header_token = ctx
        .headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bearer = ctx
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let param = ctx
        .params
        .get("private_token")
        .and_then(Value::as_str)
        .map(str::to_string);
    header_token.or(bearer).or(param)
}

fn authenticate(st: &State, ctx: &Ctx, kind: ScopeKind) -> Result<User, Response> {
    let Some(token) = presented_token(ctx) else {
        return Err(message(401, "401 Unauthorized"));
    };
    let Some(t) = st.tokens.get(&token) else {
        return Err(message(401, "401 Unauthorized"));
    };
    if t.revoked {
        return Err(json_reply(
            401,
            json!({"error": "invalid_token", "error_description": "Token was revoked. You have to re-authorize from the user."}),
        ));
    }
    if t.expired {
        return Err(json_reply(
            401,
            json!({"error": "invalid_token", "error_description": "Token is expired. You can either do re-authorization or token refresh."}),
        ));
    }
    let is_get = *ctx.method == Method::GET || *ctx.method == Method::HEAD;
    let mut accepted = vec!["api"];
    if is_get {
        accepted.push("read_api");
    }
    match kind {
        ScopeKind::RunnerById => accepted.push("manage_runner"),
        ScopeKind::UserRunners => accepted.push("create_runner"),
        ScopeKind::AnyScope | ScopeKind::Other => {}
    }
    if kind != ScopeKind::AnyScope && !t.scopes.iter().any(|s| accepted.contains(&s.as_str())) {
        return Err(json_reply(
            403,
            json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": accepted.join(" "),
            }),
        ));
    }
    st.users
        .get(&t.user_id)
        .cloned()
        .ok_or_else(|| message(401, "401 Unauthorized"))
}

fn throttle(st: &mut State, user: &User) -> Result<(), Response> {
    let Some(th) = st.settings.throttle.clone() else {
        return Ok(());
    };
    let now_s = (st.now() / 1000).max(0) as u64;
    let period = th.period_seconds.max(1);
    let window = now_s - now_s % period;
    let count = st.throttle_windows.entry((user.id, window)).or_insert(0);
    *count += 1;
    if *count > th.limit {
        st.throttled += 1;
        let retry = period - now_s % period;
        return Err(rack_attack_429(
            retry,
            th.limit.div_ceil(period).saturating_mul(60).max(1),
            *count,
        ));
    }
    Ok(())
}

/// Rack::Attack's throttled answer: plain text with RateLimit-* headers.
fn rack_attack_429(retry_after: u64, limit_per_minute: u64, observed: u64) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reset = now + retry_after;
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [("content-type", "text/plain")],
        "Retry later\n",
    )
        .into_response();
    let h = resp.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("ratelimit-name", "throttle_authenticated_api".into());
    put("ratelimit-limit", limit_per_minute.to_string());
    put("ratelimit-observed", observed.to_string());
    put("ratelimit-remaining", "0".into());
    put("ratelimit-reset", reset.to_string());
    put("ratelimit-resettime", iso((reset * 1000) as i64));
    put("retry-after", retry_after.to_string());
    resp
}

// ---- Pagination ----

fn paginate(items: Vec<Value>, ctx: &Ctx) -> Reply {
    let page = p_int(ctx.params, "page")?.unwrap_or(1).max(1);
    let per_page = p_int(ctx.params, "per_page")?.unwrap_or(20).clamp(1, 100);
    let total = items.len() as i64;
    let total_pages = ((total + per_page - 1) / per_page).max(1);
    let start = ((page - 1) * per_page).min(total) as usize;
    let end = (start + per_page as usize).min(items.len());
    let slice: Vec<Value> = items[start..end].to_vec();
    let skip_counts = total > 10_000;
    let link_for = |p: i64| {
        let mut pairs: Vec<(String, String)> = ctx
            .params
            .iter()
            .filter(|(k, _)| {
                k.as_str() != "page" && k.as_str() != "per_page" && k.as_str() != "private_token"
            })
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        pairs.insert(0, ("per_page".into(), per_page.to_string()));
        pairs.insert(0, ("page".into(), p.to_string()));
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("<{}?{}>", ctx.base_url, q)
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_for(page - 1)));
    }
    let has_next = (end as i64) < total;
    if has_next {
        links.push(format!("{}; rel=\"next\"", link_for(page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_for(1)));
    if !skip_counts {
        links.push(format!("{}; rel=\"last\"", link_for(total_pages)));
    }
    let mut resp = json_reply(200, Value::Array(slice));
    let h = resp.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-page", page.to_string());
    put("x-per-page", per_page.to_string());
    put(
        "x-next-page",
        if has_next {
            (page + 1).to_string()
        } else {
            String::new()
        },
    );
    put(
        "x-prev-page",
        if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        },
    );
    if !skip_counts {
        put("x-total", total.to_string());
        put("x-total-pages", total_pages.to_string());
    }
    put("link", links.join(", "));
    Ok(resp)
}

// ---- Routing ----

fn route(st: &mut State, ctx: &Ctx) -> Reply {
    let segs: Vec<&str> = ctx.segs.iter().map(String::as_str).collect();
    let m = ctx.method.clone();
    match (m, segs.as_slice()) {
        (Method::GET, ["version"]) => {
            authenticate(st, ctx, ScopeKind::Other)?;
            Ok(json_reply(
                200,
                json!({"version": st.settings.version, "revision": "abcdef12", "kas": {"enabled": false}, "enterprise": true}),
            ))
        }
        (Method::GET, ["personal_access_tokens", "self"]) => {
            if !st.settings.personal_access_token_self {
                return Err(error(404, "404 Not Found"));
            }
            authed(st, ctx, ScopeKind::AnyScope)?;
            let t = presented_token(ctx)
                .and_then(|k| st.tokens.get(&k))
                .ok_or_else(|| message(401, "401 Unauthorized"))?;
            Ok(json_reply(
                200,
                json!({"id": t.id, "name": t.name, "revoked": t.revoked, "created_at": "2026-01-05T10:00:00.000Z",
                       "description": null, "scopes": t.scopes, "user_id": t.user_id, "last_used_at": null,
                       "active": !t.revoked && !t.expired, "expires_at": t.expires_at}),
            ))
        }
        (Method::GET, ["user"]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            Ok(json_reply(
                200,
                json!({"id": u.id, "username": u.username, "name": u.username, "state": "active", "is_admin": u.admin}),
            ))
        }
        (Method::GET, ["projects", id]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            let p = visible_project(st, &u, id)?;
            Ok(json_reply(200, st.project_entity(&p)))
        }
        (Method::GET, ["groups", id]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            let g = visible_group(st, &u, id)?;
            Ok(json_reply(200, st.group_entity(&g)))
        }
        (Method::GET, ["runners"]) => list_runners(st, ctx, ListKind::Owned),
        (Method::GET, ["runners", "all"]) => list_runners(st, ctx, ListKind::All),
        (Method::GET, ["projects", id, "runners"]) => {
            list_runners(st, ctx, ListKind::Project(id.to_string()))
        }
        (Method::GET, ["groups", id, "runners"]) => {
            list_runners(st, ctx, ListKind::Group(id.to_string()))
        }
        (Method::POST, ["user", "runners"]) => create_user_runner(st, ctx),
        (Method::POST, ["runners"]) => register_legacy(st, ctx),
        (Method::DELETE, ["runners"]) => delete_by_token(st, ctx),
        (Method::POST, ["runners", "verify"]) => verify(st, ctx),
        (Method::POST, ["runners", "reset_authentication_token"]) => reset_by_token(st, ctx),
        (Method::POST, ["runners", "reset_registration_token"]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            if !st.settings.allow_runner_registration_token || !u.admin {
                return Err(message(403, "403 Forbidden"));
            }
            st.settings.registration_token = random_string(20);
            Ok(json_reply(
                201,
                json!({"token": st.settings.registration_token}),
            ))
        }
        (Method::POST, ["projects", id, "runners", "reset_registration_token"]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            let p = visible_project(st, &u, id)?;
            if !st.settings.allow_runner_registration_token
                || !(u.admin || st.project_role(&u, p.id) >= Some(Role::Maintainer))
            {
                return Err(message(403, "403 Forbidden"));
            }
            let token = format!("GR1348941{}", random_string(20));
            if let Some(p) = st.projects.get_mut(&p.id) {
                p.registration_token = token.clone();
            }
            Ok(json_reply(201, json!({"token": token})))
        }
        (Method::POST, ["groups", id, "runners", "reset_registration_token"]) => {
            let u = authed(st, ctx, ScopeKind::Other)?;
            let g = visible_group(st, &u, id)?;
            if !st.settings.allow_runner_registration_token
                || !(u.admin || st.group_role(&u, g.id) == Some(Role::Owner))
            {
                return Err(message(403, "403 Forbidden"));
            }
            let token = format!("GR1348941{}", random_string(20));
            if let Some(g) = st.groups.get_mut(&g.id) {
                g.registration_token = token.clone();
            }
            Ok(json_reply(201, json!({"token": token})))
        }
        (Method::POST, ["projects", id, "runners"]) => assign(st, ctx, id),
        (Method::DELETE, ["projects", id, "runners", runner_id]) => {
            unassign(st, ctx, id, runner_id)
        }
        (_, ["runners", id, rest @ ..]) => runner_by_id(st, ctx, id, rest),
        _ => Err(error(404, "404 Not Found")),
    }
}

/// Authenticates and applies the throttle.
fn authed(st: &mut State, ctx: &Ctx, kind: ScopeKind) -> Result<User, Response> {
    let u = authenticate(st, ctx, kind)?;
    throttle(st, &u)?;
    Ok(u)
}

fn visible_project(st: &State, u: &User, id: &str) -> Result<Project, Response> {
    st.find_project(id)
        .filter(|p| st.project_visible(u, p.id))
        .cloned()
        .ok_or_else(|| message(404, "404 Project Not Found"))
}

fn visible_group(st: &State, u: &User, id: &str) -> Result<Group, Response> {
    st.find_group(id)
        .filter(|g| st.group_visible(u, g.id))
        .cloned()
        .ok_or_else(|| message(404, "404 Group Not Found"))
}

enum ListKind {
    Owned,
    All,
    Project(String),
    Group(String),
}

fn list_runners(st: &mut State, ctx: &Ctx, kind: ListKind) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let now = st.now();
    const OWNED_SCOPES: &[&str] = &[
        "active",
        "paused",
        "online",
        "offline",
        "never_contacted",
        "stale",
    ];
    const ALL_SCOPES: &[&str] = &[
        "specific",
        "shared",
        "instance_type",
        "group_type",
        "project_type",
        "active",
        "paused",
        "online",
        "offline",
        "never_contacted",
        "stale",
    ];
    let scope = match kind {
        ListKind::Owned => {
            let s = p_str(ctx.params, "scope")?;
            if let Some(s) = &s
                && !OWNED_SCOPES.contains(&s.as_str())
            {
                return Err(message(400, "Scope contains invalid value"));
            }
            s
        }
        ListKind::All | ListKind::Project(_) => p_values(ctx.params, "scope", ALL_SCOPES)?,
        ListKind::Group(_) => None,
    };
    let rtype = p_values(
        ctx.params,
        "type",
        &["instance_type", "group_type", "project_type"],
    )?;
    let status = p_values(
        ctx.params,
        "status",
        &[
            "online",
            "offline",
            "stale",
            "never_contacted",
            "active",
            "paused",
        ],
    )?;
    let paused = p_bool(ctx.params, "paused")?;
    let tags = match ctx.params.get("tag_list") {
        Some(v) => parse_tags(v).ok_or_else(|| error(400, "tag_list is invalid"))?,
        None => vec![],
    };
    let version_prefix = p_str(ctx.params, "version_prefix")?;
    if let Some(vp) = &version_prefix
        && !vp.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+')
    {
        return Err(error(400, "version_prefix is invalid"));
    }
    let candidates: Vec<RunnerRec> = match &kind {
        ListKind::Owned => st
            .runners
            .values()
            .filter(|r| match r.runner_type.as_str() {
                "project_type" => r
                    .projects
                    .iter()
                    .any(|p| st.project_role(&u, *p) >= Some(Role::Maintainer)),
                "group_type" => r
                    .group
                    .is_some_and(|g| st.group_role(&u, g) == Some(Role::Owner)),
                _ => false,
            })
            .cloned()
            .collect(),
        ListKind::All => {
            if !u.admin {
                return Err(message(403, "403 Forbidden"));
            }
            st.runners.values().cloned().collect()
        }
        ListKind::Project(id) => {
            let p = visible_project(st, &u, id)?;
            if !(u.admin || st.project_role(&u, p.id) >= Some(Role::Maintainer)) {
                return Err(message(403, "403 Forbidden"));
            }
            let ancestors: Vec<i64> = st.group_chain(p.group).iter().map(|g| g.id).collect();
            st.runners
                .values()
                .filter(|r| match r.runner_type.as_str() {
                    "project_type" => r.projects.contains(&p.id),
                    "group_type" => {
                        p.group_runners_enabled && r.group.is_some_and(|g| ancestors.contains(&g))
                    }
                    _ => p.shared_runners_enabled,
                })
                .cloned()
                .collect()
        }
        ListKind::Group(id) => {
            let g = visible_group(st, &u, id)?;
            if !(u.admin || st.group_role(&u, g.id) >= Some(Role::Maintainer)) {
                return Err(message(403, "403 Forbidden"));
            }
            let ancestors: Vec<i64> = st.group_chain(Some(g.id)).iter().map(|g| g.id).collect();
            st.runners
                .values()
                .filter(|r| match r.runner_type.as_str() {
                    "group_type" => r.group.is_some_and(|g| ancestors.contains(&g)),
                    "instance_type" => true,
                    _ => false,
                })
                .cloned()
                .collect()
        }
    };
    let items: Vec<Value> = candidates
        .iter()
        .filter(|r| scope.as_deref().is_none_or(|s| r.matches_status(s, now)))
        .filter(|r| rtype.as_deref().is_none_or(|t| r.runner_type == t))
        .filter(|r| status.as_deref().is_none_or(|s| r.matches_status(s, now)))
        .filter(|r| paused.is_none_or(|p| r.paused == p))
        .filter(|r| tags.iter().all(|t| r.tags.contains(t)))
        .filter(|r| {
            version_prefix
                .as_deref()
                .is_none_or(|vp| !r.managers.is_empty() && "18.6.0".starts_with(vp))
        })
        .map(|r| st.runner_entity(r, now))
        .collect();
    paginate(items, ctx)
}

/// Attributes from params, validated like GitLab's model. `creating` applies create defaults.
struct Attrs {
    description: Option<Option<String>>,
    paused: Option<bool>,
    tags: Option<Vec<String>>,
    run_untagged: Option<bool>,
    locked: Option<bool>,
    access_level: Option<String>,
    maximum_timeout: Option<Option<i64>>,
    maintenance_note: Option<Option<String>>,
}

fn read_attrs(params: &Params) -> Result<Attrs, Response> {
    if params.contains_key("active") && params.contains_key("paused") {
        return Err(error(400, "active, paused are mutually exclusive"));
    }
    let paused = match p_bool(params, "paused")? {
        Some(p) => Some(p),
        None => p_bool(params, "active")?.map(|a| !a),
    };
    let tags = match params.get("tag_list") {
        Some(v) => Some(parse_tags(v).ok_or_else(|| error(400, "tag_list is invalid"))?),
        None => None,
    };
    let maximum_timeout = match params.get("maximum_timeout") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.is_empty() => Some(None),
        Some(_) => Some(p_int(params, "maximum_timeout")?),
    };
    let note_key = if params.contains_key("maintenance_note") {
        "maintenance_note"
    } else {
        "maintainer_note"
    };
    Ok(Attrs {
        description: params
            .contains_key("description")
            .then(|| p_str(params, "description"))
            .transpose()?,
        paused,
        tags,
        run_untagged: p_bool(params, "run_untagged")?,
        locked: p_bool(params, "locked")?,
        access_level: p_values(params, "access_level", &["not_protected", "ref_protected"])?,
        maximum_timeout,
        maintenance_note: params
            .contains_key(note_key)
            .then(|| p_str(params, note_key))
            .transpose()?,
    })
}

impl Attrs {
    fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.paused.is_none()
            && self.tags.is_none()
            && self.run_untagged.is_none()
            && self.locked.is_none()
            && self.access_level.is_none()
            && self.maximum_timeout.is_none()
            && self.maintenance_note.is_none()
    }

    fn apply(self, r: &mut RunnerRec) -> bool {
        let tags_changed = self.tags.as_ref().is_some_and(|t| *t != r.tags);
        if let Some(d) = self.description {
            r.description = d;
        }
        if let Some(p) = self.paused {
            r.paused = p;
        }
        if let Some(t) = self.tags {
            r.tags = t;
        }
        if let Some(u) = self.run_untagged {
            r.run_untagged = u;
        }
        if let Some(l) = self.locked {
            r.locked = l;
        }
        if let Some(a) = self.access_level {
            r.access_level = a;
        }
        if let Some(t) = self.maximum_timeout {
            r.maximum_timeout = t;
        }
        if let Some(n) = self.maintenance_note {
            r.maintenance_note = n;
        }
        tags_changed
    }
}

/// The model validations; errors keyed by attribute, as GitLab's `render_validation_error!`.
fn validate_runner(r: &RunnerRec, tags_changed: bool) -> Result<(), Map<String, Value>> {
    let mut errs = Map::new();
    if tags_changed && r.tags.len() > 50 {
        errs.insert(
            "tags_list".into(),
            json!(["Too many tags specified. Please limit the number of tags to 50"]),
        );
    }
    if !r.run_untagged && r.tags.is_empty() {
        errs.insert(
            "tags_list".into(),
            json!(["can not be empty when runner is not allowed to pick untagged jobs"]),
        );
    }
    if r.maximum_timeout.is_some_and(|t| t < 600) {
        errs.insert(
            "maximum_timeout".into(),
            json!(["needs to be at least 10 minutes"]),
        );
    }
    if r.description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        errs.insert(
            "description".into(),
            json!(["is too long (maximum is 1024 characters)"]),
        );
    }
    if r.maintenance_note
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        errs.insert(
            "maintenance_note".into(),
            json!(["is too long (maximum is 1024 characters)"]),
        );
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn new_runner(st: &mut State, runner_type: &str, legacy: bool, now: Millis) -> RunnerRec {
    st.next_runner_id += 1;
    RunnerRec {
        id: st.next_runner_id,
        runner_type: runner_type.into(),
        description: None,
        name: None,
        paused: false,
        tags: vec![],
        run_untagged: true,
        locked: false,
        access_level: "not_protected".into(),
        maximum_timeout: None,
        maintenance_note: None,
        projects: vec![],
        group: None,
        token: st.new_runner_token(runner_type, legacy),
        token_expires_at: None,
        contacted_at: None,
        created_at: now,
        updated_at: now,
        created_by: None,
        managers: vec![],
        jobs: vec![],
    }
}

fn registration_reply(r: &RunnerRec) -> Response {
    json_reply(
        201,
        json!({"id": r.id, "token": r.token, "token_expires_at": r.token_expires_at.map(iso)}),
    )
}

fn create_user_runner(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::UserRunners)?;
    let runner_type = match p_str(ctx.params, "runner_type")? {
        None => {
            return Err(error(
                400,
                "runner_type is missing, runner_type does not have a valid value",
            ));
        }
        Some(t) if !["instance_type", "group_type", "project_type"].contains(&t.as_str()) => {
            return Err(error(400, "runner_type does not have a valid value"));
        }
        Some(t) => t,
    };
    let attrs = read_attrs(ctx.params)?;
    let now = st.now();
    let mut r = new_runner(st, &runner_type, false, now);
    match runner_type.as_str() {
        "group_type" => {
            let id =
                p_int(ctx.params, "group_id")?.ok_or_else(|| error(400, "group_id is missing"))?;
            let g = st
                .groups
                .get(&id)
                .ok_or_else(|| message(400, "400 Bad request - Missing/invalid group"))?;
            if !(u.admin || st.group_role(&u, g.id) == Some(Role::Owner)) {
                return Err(message(403, "403 Forbidden - Insufficient permissions"));
            }
            r.group = Some(g.id);
        }
        "project_type" => {
            let id = p_int(ctx.params, "project_id")?
                .ok_or_else(|| error(400, "project_id is missing"))?;
            let p = st
                .projects
                .get(&id)
                .ok_or_else(|| message(400, "400 Bad request - Missing/invalid project"))?;
            if !(u.admin || st.project_role(&u, p.id) >= Some(Role::Maintainer)) {
                return Err(message(403, "403 Forbidden - Insufficient permissions"));
            }
            r.projects = vec![p.id];
        }
        _ => {
            if !u.admin {
                return Err(message(403, "403 Forbidden - Insufficient permissions"));
            }
        }
    }
    let tags_changed = attrs.apply(&mut r);
    if let Err(errs) = validate_runner(&r, tags_changed) {
        // The create service flattens model errors into one sentence.
        let sentence = errs
            .iter()
            .map(|(k, v)| {
                let attr = match k.as_str() {
                    "tags_list" => "Tags list".to_string(),
                    other => capitalize(&other.replace('_', " ")),
                };
                format!(
                    "{attr} {}",
                    v.as_array()
                        .and_then(|a| a.first())
                        .and_then(Value::as_str)
                        .unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(message(400, format!("400 Bad request - {sentence}")));
    }
    r.created_by = Some(u.id);
    r.token_expires_at = st.token_expiry(&r, now);
    let reply = registration_reply(&r);
    st.runners.insert(r.id, r);
    Ok(reply)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn register_legacy(st: &mut State, ctx: &Ctx) -> Reply {
    let token = p_str(ctx.params, "token")?.ok_or_else(|| error(400, "token is missing"))?;
    if ctx.params.contains_key("maintenance_note") && ctx.params.contains_key("maintainer_note") {
        return Err(error(
            400,
            "maintainer_note, maintenance_note are mutually exclusive",
        ));
    }
    let attrs = read_attrs(ctx.params)?;
    let now = st.now();
    let disallowed = || message(410, "410 Gone - runner registration disallowed");
    let (runner_type, owner_project, owner_group) = if token == st.settings.registration_token {
        if !st.settings.allow_runner_registration_token {
            return Err(disallowed());
        }
        ("instance_type", None, None)
    } else if let Some(p) = st.projects.values().find(|p| p.registration_token == token) {
        let top = st
            .group_chain(p.group)
            .last()
            .map(|g| g.allow_registration_token)
            .unwrap_or(true);
        if !st.settings.allow_runner_registration_token || !top {
            return Err(disallowed());
        }
        ("project_type", Some(p.id), None)
    } else if let Some(g) = st.groups.values().find(|g| g.registration_token == token) {
        let top = st
            .group_chain(Some(g.id))
            .last()
            .map(|g| g.allow_registration_token)
            .unwrap_or(true);
        if !st.settings.allow_runner_registration_token || !top {
            return Err(disallowed());
        }
        ("group_type", None, Some(g.id))
    } else if !st.settings.allow_runner_registration_token {
        return Err(disallowed());
    } else {
        return Err(message(403, "403 Forbidden - invalid token supplied"));
    };
    let mut r = new_runner(st, runner_type, true, now);
    r.projects = owner_project.into_iter().collect();
    r.group = owner_group;
    if let Some(Value::Object(info)) = ctx.params.get("info") {
        r.name = info.get("name").and_then(Value::as_str).map(str::to_string);
    }
    let tags_changed = attrs.apply(&mut r);
    validate_runner(&r, tags_changed).map_err(|errs| message(400, Value::Object(errs)))?;
    r.token_expires_at = st.token_expiry(&r, now);
    let reply = registration_reply(&r);
    st.runners.insert(r.id, r);
    Ok(reply)
}

fn live_runner_by_token(st: &State, ctx: &Ctx, forbidden: &str) -> Result<i64, Response> {
    let token = p_str(ctx.params, "token")?.ok_or_else(|| error(400, "token is missing"))?;
    let now = st.now();
    st.runner_by_token(&token)
        .filter(|r| !r.token_expired(now))
        .map(|r| r.id)
        .ok_or_else(|| message(403, forbidden.to_string()))
}

fn unmodified_since_ok(ctx: &Ctx, updated_at: Millis) -> Result<(), Response> {
    let Some(value) = ctx
        .headers
        .get("if-unmodified-since")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let parsed = jiff::fmt::rfc2822::parse(value)
        .ok()
        .map(|z| z.timestamp().as_millisecond());
    match parsed {
        Some(since) if updated_at / 1000 > since / 1000 => {
            Err(message(412, "412 Precondition Failed"))
        }
        _ => Ok(()),
    }
}

fn delete_by_token(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    if let Some(r) = st.runners.get(&id) {
        unmodified_since_ok(ctx, r.updated_at)?;
    }
    st.runners.remove(&id);
    Ok(no_content())
}

fn verify(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    let system_id = p_str(ctx.params, "system_id")?;
    let now = st.now();
    let next_manager_id = st.alloc_id();
    let Some(r) = st.runners.get_mut(&id) else {
        return Err(message(403, "403 Forbidden"));
    };
    r.contacted_at = Some(now);
    if let Some(sid) = system_id {
        match r.managers.iter_mut().find(|m| m.system_id == sid) {
            Some(m) => m.contacted_at = now,
            None => r.managers.push(Manager::new(next_manager_id, sid, now)),
        }
    }
    Ok(json_reply(
        200,
        json!({"id": r.id, "token": r.token, "token_expires_at": r.token_expires_at.map(iso)}),
    ))
}

fn reset_token(st: &mut State, id: i64) -> Response {
    let now = st.now();
    let Some(r) = st.runners.get(&id).cloned() else {
        return message(404, "404 Runner Not Found");
    };
    let token = st.new_runner_token(&r.runner_type, !r.token.starts_with("glrt-"));
    let expires = st.token_expiry(&r, now);
    if let Some(r) = st.runners.get_mut(&id) {
        r.token = token.clone();
        r.token_expires_at = expires;
        r.updated_at = now;
    }
    json_reply(
        201,
        json!({"token": token, "token_expires_at": expires.map(iso)}),
    )
}

fn reset_by_token(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    Ok(reset_token(st, id))
}

fn runner_by_id(st: &mut State, ctx: &Ctx, id: &str, rest: &[&str]) -> Reply {
    let u = authed(st, ctx, ScopeKind::RunnerById)?;
    let id: i64 = id.parse().map_err(|_| error(400, "id is invalid"))?;
    let r = st
        .runners
        .get(&id)
        .cloned()
        .ok_or_else(|| message(404, "404 Runner Not Found"))?;
    let now = st.now();
    match (ctx.method.clone(), rest) {
        (Method::GET, []) => {
            if !st.can_read_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            let include = p_bool(ctx.params, "include_projects")?.unwrap_or(true);
            Ok(json_reply(200, st.runner_details(&u, &r, now, include)))
        }
        (Method::PUT, []) => {
            if !st.can_update_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            let attrs = read_attrs(ctx.params)?;
            if attrs.is_empty() {
                return Err(error(
                    400,
                    "description, active, paused, tag_list, run_untagged, locked, access_level, maximum_timeout, maintenance_note are missing, at least one parameter must be provided",
                ));
            }
            let mut updated = r.clone();
            let tags_changed = attrs.apply(&mut updated);
            validate_runner(&updated, tags_changed)
                .map_err(|errs| message(400, Value::Object(errs)))?;
            updated.updated_at = now;
            let body = st.runner_details(&u, &updated, now, true);
            st.runners.insert(id, updated);
            Ok(json_reply(200, body))
        }
        (Method::DELETE, []) => {
            if !u.admin && r.runner_type == "project_type" && r.projects.len() > 1 {
                return Err(message(
                    403,
                    "403 Forbidden - Runner associated with more than one project",
                ));
            }
            if !st.can_delete_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            unmodified_since_ok(ctx, r.updated_at)?;
            st.runners.remove(&id);
            Ok(no_content())
        }
        (Method::POST, ["reset_authentication_token"]) => {
            if !st.can_update_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            Ok(reset_token(st, id))
        }
        (Method::GET, ["managers"]) => {
            if !st.can_read_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            let items: Vec<Value> = r
                .managers
                .iter()
                .map(|m| {
                    json!({"id": m.id, "system_id": m.system_id, "version": m.version, "revision": "abcdef12", "platform": m.platform,
                           "architecture": m.architecture, "created_at": iso(m.created_at), "contacted_at": iso(m.contacted_at),
                           "ip_address": null, "status": if m.contacted_at > now - 2 * 3600 * 1000 { "online" } else { "offline" },
                           "job_execution_status": "idle"})
                })
                .collect();
            Ok(json_reply(200, Value::Array(items)))
        }
        (Method::GET, ["projects"]) => {
            if !st.can_read_runner(&u, &r) {
                return Err(message(403, NO_ACCESS));
            }
            let items: Vec<Value> = r
                .projects
                .iter()
                .filter(|p| u.admin || st.project_role(&u, **p).is_some())
                .filter_map(|p| st.projects.get(p))
                .map(|p| st.project_entity(p))
                .collect();
            paginate(items, ctx)
        }
        (Method::GET, ["jobs"]) => {
            let allowed =
                u.admin || (r.runner_type != "instance_type" && st.can_update_runner(&u, &r));
            if !allowed {
                return Err(message(403, NO_ACCESS));
            }
            let status = p_values(
                ctx.params,
                "status",
                &[
                    "created",
                    "waiting_for_resource",
                    "preparing",
                    "pending",
                    "running",
                    "success",
                    "failed",
                    "canceling",
                    "canceled",
                    "skipped",
                    "manual",
                    "scheduled",
                ],
            )?;
            let order_by = p_values(ctx.params, "order_by", &["id"])?;
            let sort = p_values(ctx.params, "sort", &["asc", "desc"])?;
            let system_id = p_str(ctx.params, "system_id")?;
            let mut jobs: Vec<JobRec> = r
                .jobs
                .iter()
                .filter(|j| status.as_deref().is_none_or(|s| j.status == s))
                .filter(|j| system_id.is_none() || j.system_id == system_id)
                .filter(|j| u.admin || st.project_role(&u, j.project_id) >= Some(Role::Reporter))
                .cloned()
                .collect();
            jobs.sort_by_key(|j| j.id);
            // `sort` only matters together with `order_by=id`.
            if order_by.is_some() && sort.as_deref().unwrap_or("desc") == "desc" {
                jobs.reverse();
            }
            let items: Vec<Value> = jobs
                .iter()
                .map(|j| {
                    let project = st.projects.get(&j.project_id).map(|p| st.project_entity(p));
                    let git_ref = j.git_ref.clone().unwrap_or_else(|| "main".into());
                    let pipeline = j.pipeline_id.unwrap_or(j.id);
                    let finished = match (j.started_at, j.duration) {
                        (Some(s), Some(d)) => Some(s + (d * 1000.0) as i64),
                        _ => None,
                    };
                    let host = ctx.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("gitlab.example.com");
                    let web = st.projects.get(&j.project_id).map(|p| format!("http://{host}/{}/-/jobs/{}", p.path_with_namespace, j.id));
                    json!({"id": j.id, "status": j.status, "stage": "test", "name": format!("job-{}", j.id), "ref": git_ref, "tag": false,
                           "created_at": j.started_at.map(iso), "started_at": j.started_at.map(iso), "finished_at": finished.map(iso),
                           "duration": j.duration, "queued_duration": 0.5, "web_url": web,
                           "pipeline": {"id": pipeline, "project_id": j.project_id, "ref": git_ref, "sha": "a91957a858320c0e17f3a0eca7cfacbff50ea29a", "status": j.status},
                           "project": project})
                })
                .collect();
            paginate(items, ctx)
        }
        _ => Err(error(404, "404 Not Found")),
    }
}

fn assign(st: &mut State, ctx: &Ctx, project: &str) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let runner_id =
        p_int(ctx.params, "runner_id")?.ok_or_else(|| error(400, "runner_id is missing"))?;
    let p = visible_project(st, &u, project)?;
    if !(u.admin || st.project_role(&u, p.id) >= Some(Role::Maintainer)) {
        return Err(message(403, "403 Forbidden"));
    }
    let r = st
        .runners
        .get(&runner_id)
        .cloned()
        .ok_or_else(|| message(404, "404 Runner Not Found"))?;
    if r.runner_type == "group_type" {
        return Err(message(403, "403 Forbidden - Runner is a group runner"));
    }
    if !u.admin && r.locked {
        return Err(message(403, "403 Forbidden - Runner is locked"));
    }
    if !u.admin && (r.runner_type == "instance_type" || !st.can_update_runner(&u, &r)) {
        return Err(message(403, NO_ACCESS));
    }
    if r.runner_type == "instance_type" {
        return Err(message(500, "500 Internal Server Error"));
    }
    if r.projects.contains(&p.id) {
        return Err(message(400, "Runner has already been taken - runner_error"));
    }
    let now = st.now();
    let entity = {
        let Some(rm) = st.runners.get_mut(&runner_id) else {
            return Err(message(404, "404 Runner Not Found"));
        };
        rm.projects.push(p.id);
        rm.updated_at = now;
        rm.clone()
    };
    Ok(json_reply(201, st.runner_entity(&entity, now)))
}

fn unassign(st: &mut State, ctx: &Ctx, project: &str, runner_id: &str) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let p = visible_project(st, &u, project)?;
    if !(u.admin || st.project_role(&u, p.id) >= Some(Role::Maintainer)) {
        return Err(message(403, "403 Forbidden"));
    }
    let runner_id: i64 = runner_id
        .parse()
        .map_err(|_| error(400, "runner_id is invalid"))?;
    let r = st
        .runners
        .get(&runner_id)
        .filter(|r| r.projects.contains(&p.id))
        .cloned()
        .ok_or_else(|| message(404, "404 Runner Not Found"))?;
    let is_owner = r.projects.first() == Some(&p.id);
    if !u.admin {
        if r.locked {
            return Err(message(403, "403 Forbidden - Runner is locked"));
        }
        if is_owner {
            return Err(message(403, NO_ACCESS));
        }
    } else if is_owner {
        return Err(message(
            403,
            "403 Forbidden - You cannot unassign a runner from the owner project. Delete the runner instead",
        ));
    }
    unmodified_since_ok(ctx, r.updated_at)?;
    let now = st.now();
    if let Some(rm) = st.runners.get_mut(&runner_id) {
        rm.projects.retain(|x| *x != p.id);
        rm.updated_at = now;
    }
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(m: Method, path: &str) -> String {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        endpoint_label(&m, &segs)
    }

    #[test]
    fn labels() {
        assert_eq!(label(Method::GET, "runners/12"), "GET /runners/:id");
        assert_eq!(
            label(Method::POST, "runners/12/reset_authentication_token"),
            "POST /runners/:id/reset_authentication_token"
        );
        assert_eq!(label(Method::GET, "runners/all"), "GET /runners/all");
        assert_eq!(
            label(Method::DELETE, "projects/a%2Fb/runners/7"),
            "DELETE /projects/:id/runners/:runner_id"
        );
        assert_eq!(
            label(Method::POST, "projects/5/runners/reset_registration_token"),
            "POST /projects/:id/runners/reset_registration_token"
        );
        assert_eq!(label(Method::GET, "groups/5"), "GET /groups/:id");
        assert_eq!(label(Method::POST, "user/runners"), "POST /user/runners");
    }
}
