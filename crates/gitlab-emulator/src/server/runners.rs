//! Runner lists and creation: `GET /runners…`, `POST /user/runners`, the legacy `POST /runners`,
//! attribute parsing and validation.

// Errors here are finished HTTP answers returned early; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::model::*;

use super::*;

pub(crate) enum ListKind {
    Owned,
    All,
    Project(String),
    Group(String),
}

pub(crate) fn list_runners(st: &mut State, ctx: &Ctx, kind: ListKind) -> Reply {
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
            version_prefix.as_deref().is_none_or(|vp| {
                r.managers
                    .iter()
                    .any(|m| m.version.as_deref().is_some_and(|v| v.starts_with(vp)))
            })
        })
        .map(|r| st.runner_entity(r, now))
        .collect();
    paginate(items, ctx)
}

/// Attributes from params, validated like GitLab's model. `creating` applies create defaults.
pub(crate) struct Attrs {
    pub(crate) description: Option<Option<String>>,
    pub(crate) paused: Option<bool>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) run_untagged: Option<bool>,
    pub(crate) locked: Option<bool>,
    pub(crate) access_level: Option<String>,
    pub(crate) maximum_timeout: Option<Option<i64>>,
    pub(crate) maintenance_note: Option<Option<String>>,
}

pub(crate) fn read_attrs(params: &Params) -> Result<Attrs, Response> {
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
    pub(crate) fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.paused.is_none()
            && self.tags.is_none()
            && self.run_untagged.is_none()
            && self.locked.is_none()
            && self.access_level.is_none()
            && self.maximum_timeout.is_none()
            && self.maintenance_note.is_none()
    }

    pub(crate) fn apply(self, r: &mut RunnerRec) -> bool {
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
pub(crate) fn validate_runner(r: &RunnerRec, tags_changed: bool) -> Result<(), Map<String, Value>> {
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

pub(crate) fn new_runner(
    st: &mut State,
    runner_type: &str,
    legacy: bool,
    now: Millis,
) -> RunnerRec {
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

pub(crate) fn registration_reply(r: &RunnerRec) -> Response {
    json_reply(
        201,
        json!({"id": r.id, "token": r.token, "token_expires_at": r.token_expires_at.map(iso)}),
    )
}

pub(crate) fn create_user_runner(st: &mut State, ctx: &Ctx) -> Reply {
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

pub(crate) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub(crate) fn register_legacy(st: &mut State, ctx: &Ctx) -> Reply {
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
