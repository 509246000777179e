//! One runner: by id (get, update, delete, jobs, managers, reset), by its own token (verify,
//! delete, reset), and (un)assignment to projects.

// Errors here are finished HTTP answers returned early; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::model::*;

use super::*;

pub(crate) fn live_runner_by_token(
    st: &State,
    ctx: &Ctx,
    forbidden: &str,
) -> Result<i64, Response> {
    let token = p_str(ctx.params, "token")?.ok_or_else(|| error(400, "token is missing"))?;
    let now = st.now();
    st.runner_by_token(&token)
        .filter(|r| !r.token_expired(now))
        .map(|r| r.id)
        .ok_or_else(|| message(403, forbidden.to_string()))
}

pub(crate) fn unmodified_since_ok(ctx: &Ctx, updated_at: Millis) -> Result<(), Response> {
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

pub(crate) fn delete_by_token(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    if let Some(r) = st.runners.get(&id) {
        unmodified_since_ok(ctx, r.updated_at)?;
    }
    st.runners.remove(&id);
    Ok(no_content())
}

/// Marks a runner contacted by its own process, creating or updating the manager named by
/// `system_id` from the process's `info` (GitLab: `ensure_runner_manager` and `heartbeat`).
fn contact(st: &mut State, ctx: &Ctx, id: i64) -> Result<(), Response> {
    let system_id = p_str(ctx.params, "system_id")?;
    let now = st.now();
    let next_manager_id = st.alloc_id();
    let Some(r) = st.runners.get_mut(&id) else {
        return Err(message(403, "403 Forbidden"));
    };
    r.contacted_at = Some(now);
    if let Some(sid) = system_id {
        let m = match r.managers.iter().position(|m| m.system_id == sid) {
            Some(i) => &mut r.managers[i],
            None => {
                r.managers.push(Manager::new(next_manager_id, sid, now));
                r.managers.last_mut().expect("just pushed")
            }
        };
        m.contacted_at = now;
        m.apply_info(ctx.params.get("info"));
    }
    Ok(())
}

pub(crate) fn verify(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    contact(st, ctx, id)?;
    let r = st
        .runners
        .get(&id)
        .ok_or_else(|| message(403, "403 Forbidden"))?;
    Ok(json_reply(
        200,
        json!({"id": r.id, "token": r.token, "token_expires_at": r.token_expires_at.map(iso)}),
    ))
}

/// `POST /jobs/request`: the runner process's poll. 403 for an unknown or expired token, else
/// the contact is recorded and, with no job queued for it, 204 (GitLab's "no job for you").
pub(crate) fn request_job(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    contact(st, ctx, id)?;
    let mut resp = no_content();
    if let Ok(v) = axum::http::HeaderValue::from_str(&st.now().to_string()) {
        resp.headers_mut().insert("x-gitlab-last-update", v);
    }
    Ok(resp)
}

/// `DELETE /runners/managers`: a runner process unregistering its own manager.
pub(crate) fn delete_manager(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    let system_id =
        p_str(ctx.params, "system_id")?.ok_or_else(|| error(400, "system_id is missing"))?;
    let Some(r) = st.runners.get_mut(&id) else {
        return Err(message(403, "403 Forbidden"));
    };
    let before = r.managers.len();
    r.managers.retain(|m| m.system_id != system_id);
    if r.managers.len() == before {
        return Err(message(404, "404 Runner manager not found"));
    }
    Ok(no_content())
}

pub(crate) fn reset_token(st: &mut State, id: i64) -> Response {
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

pub(crate) fn reset_by_token(st: &mut State, ctx: &Ctx) -> Reply {
    let id = live_runner_by_token(st, ctx, "403 Forbidden")?;
    Ok(reset_token(st, id))
}

pub(crate) fn runner_by_id(st: &mut State, ctx: &Ctx, id: &str, rest: &[&str]) -> Reply {
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
                    json!({"id": m.id, "system_id": m.system_id, "version": m.version, "revision": m.revision, "platform": m.platform,
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

pub(crate) fn assign(st: &mut State, ctx: &Ctx, project: &str) -> Reply {
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

pub(crate) fn unassign(st: &mut State, ctx: &Ctx, project: &str, runner_id: &str) -> Reply {
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
