//! Who asks and how: parameters (query, JSON, form), tokens and scopes, the instance throttle,
//! pagination, visibility of projects and groups.

// Errors here are finished HTTP answers returned early; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::*;

use super::*;

pub(crate) fn merge_params(
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

pub(crate) fn p_bool(params: &Params, name: &str) -> Result<Option<bool>, Response> {
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

pub(crate) fn p_int(params: &Params, name: &str) -> Result<Option<i64>, Response> {
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

pub(crate) fn p_str(params: &Params, name: &str) -> Result<Option<String>, Response> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(error(400, format!("{name} is invalid"))),
    }
}

pub(crate) fn p_values(
    params: &Params,
    name: &str,
    allowed: &[&str],
) -> Result<Option<String>, Response> {
    match p_str(params, name)? {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(error(400, format!("{name} does not have a valid value")))
        }
        other => Ok(other),
    }
}

// ---- Authentication and scopes ----

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum ScopeKind {
    /// `/runners/:id...`: manage_runner applies.
    RunnerById,
    /// `POST /user/runners`: create_runner applies.
    UserRunners,
    /// `GET /personal_access_tokens/self`: any scope.
    AnyScope,
    Other,
}

/// The access token a request presents (header, bearer or parameter).
pub(crate) fn presented_token(ctx: &Ctx) -> Option<String> {
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

pub(crate) fn authenticate(st: &State, ctx: &Ctx, kind: ScopeKind) -> Result<User, Response> {
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

pub(crate) fn throttle(st: &mut State, user: &User) -> Result<(), Response> {
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
pub(crate) fn rack_attack_429(retry_after: u64, limit_per_minute: u64, observed: u64) -> Response {
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

pub(crate) fn paginate(items: Vec<Value>, ctx: &Ctx) -> Reply {
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

/// Authenticates and applies the throttle.
pub(crate) fn authed(st: &mut State, ctx: &Ctx, kind: ScopeKind) -> Result<User, Response> {
    let u = authenticate(st, ctx, kind)?;
    throttle(st, &u)?;
    Ok(u)
}

pub(crate) fn visible_project(st: &State, u: &User, id: &str) -> Result<Project, Response> {
    st.find_project(id)
        .filter(|p| st.project_visible(u, p.id))
        .cloned()
        .ok_or_else(|| message(404, "404 Project Not Found"))
}

pub(crate) fn visible_group(st: &State, u: &User, id: &str) -> Result<Group, Response> {
    st.find_group(id)
        .filter(|g| st.group_visible(u, g.id))
        .cloned()
        .ok_or_else(|| message(404, "404 Group Not Found"))
}
