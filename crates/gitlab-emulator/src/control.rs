//! HTTP control surface of the standalone emulator, under `/-/emulator/`.
//!
//! - `POST /-/emulator/seed` (a [`Seed`](super::Seed) as JSON)
//! - `POST /-/emulator/faults` (a [`Fault`](super::Fault) as JSON)
//! - `POST /-/emulator/clock` `{"advance_seconds": N}`
//! - `POST /-/emulator/runners/:id/contact` (a runner process checked in)
//! - `GET /-/emulator/counts`, `GET /-/emulator/state`

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Response {
    let reply = |status: StatusCode, v: serde_json::Value| {
        (
            status,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, json!({ "error": e }));
    match (
        method.clone(),
        path.trim_start_matches("/-/emulator/")
            .trim_end_matches('/'),
    ) {
        (Method::POST, "seed") => match serde_json::from_slice::<super::Seed>(body) {
            Ok(seed) => match shared.apply_seed(&seed) {
                Ok(()) => reply(StatusCode::OK, json!({"seeded": true})),
                Err(e) => bad(e),
            },
            Err(e) => bad(e.to_string()),
        },
        (Method::POST, "faults") => match serde_json::from_slice::<super::Fault>(body) {
            Ok(f) => {
                shared
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(f);
                reply(StatusCode::OK, json!({"injected": true}))
            }
            Err(e) => bad(e.to_string()),
        },
        (Method::POST, "clock") => match serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("advance_seconds").and_then(|s| s.as_i64()))
        {
            Some(secs) => {
                let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                st.clock_offset_ms += secs * 1000;
                reply(StatusCode::OK, json!({"now": super::model::iso(st.now())}))
            }
            None => bad("expected {\"advance_seconds\": N}".into()),
        },
        (Method::GET, "counts") => {
            let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            reply(StatusCode::OK, json!(st.counts))
        }
        (Method::GET, "state") => {
            let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let runners: Vec<_> = st
                .runners
                .values()
                .map(|r| json!({"id": r.id, "runner_type": r.runner_type, "description": r.description, "tag_list": r.tags, "projects": r.projects, "group": r.group, "paused": r.paused}))
                .collect();
            let projects: Vec<_> = st.projects.values().map(|p| json!({"id": p.id, "path": p.path_with_namespace, "registration_token": p.registration_token})).collect();
            let groups: Vec<_> = st.groups.values().map(|g| json!({"id": g.id, "path": g.full_path, "registration_token": g.registration_token})).collect();
            reply(
                StatusCode::OK,
                json!({"runners": runners, "projects": projects, "groups": groups, "settings": st.settings}),
            )
        }
        (Method::POST, p) if p.starts_with("runners/") && p.ends_with("/contact") => {
            let id = p
                .trim_start_matches("runners/")
                .trim_end_matches("/contact")
                .parse::<i64>()
                .ok();
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = st.now();
            match id.and_then(|id| st.runners.get_mut(&id)) {
                Some(r) => {
                    r.contacted_at = Some(now);
                    reply(StatusCode::OK, json!({"contacted": true}))
                }
                None => reply(StatusCode::NOT_FOUND, json!({"error": "no such runner"})),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown emulator control endpoint"}),
        ),
    }
}
