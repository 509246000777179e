//! HTTP front of the emulator: routing, parameters, auth, scopes, pagination, throttling.

// Errors here are finished HTTP answers returned early; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use futures::future::BoxFuture;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::model::*;
use super::{FaultAction, Shared};

mod access;
mod runner;
mod runners;
#[cfg(test)]
mod tests;

use access::*;
use runner::*;
use runners::*;

pub(crate) type Params = Map<String, Value>;

pub(crate) type Reply = Result<Response, Response>;

pub(crate) fn message(status: u16, msg: impl Into<Value>) -> Response {
    json_reply(status, json!({ "message": msg.into() }))
}

pub(crate) fn error(status: u16, msg: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": msg.into() }))
}

pub(crate) fn json_reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) const NO_ACCESS: &str = "403 Forbidden - No access granted";

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

/// The emulator's routes under `/api/v4`, its control surface under `/-/emulator/`, and the
/// request log around all of them.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/version", get(endpoint(version)))
        .route(
            "/personal_access_tokens/self",
            get(endpoint(access_token_self)),
        )
        .route("/user", get(endpoint(user)))
        .route("/projects/{id}", get(endpoint(project)))
        .route("/groups/{id}", get(endpoint(group)))
        .route(
            "/runners",
            get(endpoint(|st, ctx| list_runners(st, ctx, ListKind::Owned)))
                .post(endpoint(register_legacy))
                .delete(endpoint(delete_by_token)),
        )
        .route(
            "/runners/all",
            get(endpoint(|st, ctx| list_runners(st, ctx, ListKind::All))),
        )
        .route("/runners/verify", post(endpoint(verify)))
        .route("/runners/managers", delete(endpoint(delete_manager)))
        .route("/jobs/request", post(endpoint(request_job)))
        .route(
            "/runners/reset_authentication_token",
            post(endpoint(reset_by_token)),
        )
        .route(
            "/runners/reset_registration_token",
            post(endpoint(reset_instance_registration_token)),
        )
        .route("/runners/{id}", any(endpoint(one_runner)))
        .route("/runners/{id}/{*rest}", any(endpoint(one_runner)))
        .route("/user/runners", post(endpoint(create_user_runner)))
        .route(
            "/projects/{id}/runners",
            get(endpoint(|st, ctx| {
                list_runners(st, ctx, ListKind::Project(ctx.segs[1].clone()))
            }))
            .post(endpoint(|st, ctx| assign(st, ctx, &ctx.segs[1]))),
        )
        .route(
            "/projects/{id}/runners/reset_registration_token",
            post(endpoint(reset_project_registration_token)),
        )
        .route(
            "/projects/{id}/runners/{runner_id}",
            delete(endpoint(|st, ctx| {
                unassign(st, ctx, &ctx.segs[1], &ctx.segs[3])
            })),
        )
        .route(
            "/groups/{id}/runners",
            get(endpoint(|st, ctx| {
                list_runners(st, ctx, ListKind::Group(ctx.segs[1].clone()))
            })),
        )
        .route(
            "/groups/{id}/runners/reset_registration_token",
            post(endpoint(reset_group_registration_token)),
        )
        .fallback(endpoint(|_, _| Err(error(404, "404 Not Found"))))
        .method_not_allowed_fallback(endpoint(|_, _| Err(error(404, "404 Not Found"))));
    Router::new()
        .nest("/api/v4", api)
        .route(
            "/-/emulator/{*rest}",
            any(
                |Extract(shared): Extract<Arc<Shared>>, method: Method, uri: Uri, body: Bytes| async move {
                    super::control::handle(&shared, &method, uri.path(), &body)
                },
            ),
        )
        .route(
            "/api/v3/{*rest}",
            any(|| async { error(410, "API V3 is no longer supported. Use API V4 instead.") }),
        )
        .fallback(|| async { error(404, "404 Not Found") })
        .layer(middleware::from_fn_with_state(shared.clone(), log))
        .with_state(shared)
}

/// An endpoint: `f` answers from the state and the parsed request, after the faults (which
/// model the network and proxies in front of GitLab) had their say.
fn endpoint(
    f: fn(&mut State, &Ctx) -> Reply,
) -> impl Fn(State_, Method, Uri, HeaderMap, Bytes) -> BoxFuture<'static, Response>
+ Clone
+ Send
+ Sync
+ 'static {
    move |Extract(shared), method, uri, headers, body| {
        Box::pin(async move { answer(&shared, &method, &uri, &headers, &body, f).await })
    }
}

type State_ = Extract<Arc<Shared>>;

/// Logs every request after it was answered (arrival, endpoint, status, and for a 429 the end
/// of the wait it asked for, in seconds or as an HTTP date).
async fn log(
    Extract(shared): Extract<Arc<Shared>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let at = std::time::SystemTime::now();
    let path = req.uri().path().to_string();
    if path.starts_with("/-/emulator/") {
        return next.run(req).await;
    }
    let label = endpoint_label(req.method(), &segments(&path));
    let token = req
        .headers()
        .get("private-token")
        .or_else(|| req.headers().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string());
    let mut resp = next.run(req).await;
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

/// The decoded segments after `/api/v4/`.
fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches("/api/v4/")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

pub(crate) async fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    f: fn(&mut State, &Ctx) -> Reply,
) -> Response {
    let path = uri.path();
    let segs = segments(path);
    let label = endpoint_label(method, &segs);
    let (segs, label) = (&segs, &label);

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
    // Routes are nested under /api/v4, which axum strips from the path: GitLab's links carry it.
    let api_path = if path.starts_with("/api/v4/") {
        path.to_string()
    } else {
        format!("/api/v4{path}")
    };
    let base_url = format!(
        "http://{}{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost"),
        api_path
    );
    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let ctx = Ctx {
        method,
        segs,
        params: &params,
        headers,
        base_url: &base_url,
    };
    let answer = f(&mut st, &ctx).unwrap_or_else(|e| e);
    if lose_answer {
        return dropped_connection();
    }
    answer
}

/// Headers promise a body that never comes: hyper closes the connection mid-response.
pub(crate) fn dropped_connection() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    Response::builder()
        .status(200)
        .header("content-length", "1000")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(crate) struct Ctx<'a> {
    pub(crate) method: &'a Method,
    pub(crate) segs: &'a [String],
    pub(crate) params: &'a Params,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) base_url: &'a str,
}

fn version(st: &mut State, ctx: &Ctx) -> Reply {
    authenticate(st, ctx, ScopeKind::Other)?;
    Ok(json_reply(
        200,
        json!({"version": st.settings.version, "revision": "abcdef12", "kas": {"enabled": false}, "enterprise": true}),
    ))
}

fn access_token_self(st: &mut State, ctx: &Ctx) -> Reply {
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

fn user(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    Ok(json_reply(
        200,
        json!({"id": u.id, "username": u.username, "name": u.username, "state": "active", "is_admin": u.admin}),
    ))
}

fn project(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let p = visible_project(st, &u, &ctx.segs[1])?;
    Ok(json_reply(200, st.project_entity(&p)))
}

fn group(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let g = visible_group(st, &u, &ctx.segs[1])?;
    Ok(json_reply(200, st.group_entity(&g)))
}

fn one_runner(st: &mut State, ctx: &Ctx) -> Reply {
    let rest: Vec<&str> = ctx.segs[2..].iter().map(String::as_str).collect();
    runner_by_id(st, ctx, &ctx.segs[1], &rest)
}

fn reset_instance_registration_token(st: &mut State, ctx: &Ctx) -> Reply {
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

fn reset_project_registration_token(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let p = visible_project(st, &u, &ctx.segs[1])?;
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

fn reset_group_registration_token(st: &mut State, ctx: &Ctx) -> Reply {
    let u = authed(st, ctx, ScopeKind::Other)?;
    let g = visible_group(st, &u, &ctx.segs[1])?;
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
