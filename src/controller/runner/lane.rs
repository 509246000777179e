//! The tenancy check of a Runner whose connection is a ClusterGitLabConnection: what it asks,
//! with GitLab's canonical paths, judged by `tenancy::evaluate` before any GitLab write.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::gitlab_clients::Resolved;
use crate::controller::tenancy::{self, AdoptTarget, Request};
use crate::crd::{Runner, RunnerStatus, RunnerType};
use crate::gitlab::GitLabApi;

/// Ok(Some(rule)) when the Runner stays in its lane, Ok(None) when its connection sets none
/// (a namespace's own GitLabConnection), Err(Error::Tenancy) with what to change otherwise.
pub(crate) async fn check_lane(
    ctx: &Context,
    runner: &Runner,
    conn: &Resolved,
    status: &RunnerStatus,
    ids: (Option<i64>, Option<i64>, &BTreeSet<i64>),
) -> Result<Option<String>, Error> {
    let Some(lane) = &conn.lane else {
        return Ok(None);
    };
    let gl = &*conn.client;
    let ns = runner.namespace().unwrap_or_default();
    let labels = if tenancy::needs_labels(lane.tenancy.as_ref()) {
        Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&ns)
            .await
            .map_err(Error::kube(format!("reading Namespace {ns}")))?
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let (owner_project, owner_group, assigned) = ids;
    let owner_path = match (runner.spec.runner_type, owner_project, owner_group) {
        (RunnerType::ProjectType, Some(p), _) => Some(project_path(ctx, conn, p).await?),
        (RunnerType::GroupType, _, Some(g)) => Some(group_path(ctx, conn, g).await?),
        _ => None,
    };
    let mut assigned_paths = vec![];
    for p in assigned {
        assigned_paths.push(project_path(ctx, conn, *p).await?);
    }
    // An adoption is judged until it happened: afterwards the runner is the Runner's, its
    // paths the spec's, checked like any other.
    let adopt = match runner.spec.adopt.as_ref().map(|a| a.runner_id) {
        Some(id) if status.runner_id != Some(id) => Some(adopt_target(ctx, conn, gl, id).await?),
        _ => None,
    };
    let req = Request {
        namespace: &ns,
        namespace_labels: &labels,
        runner_type: runner.spec.runner_type,
        owner_path,
        assigned_paths,
        adopt,
    };
    tenancy::evaluate(&lane.connection, lane.tenancy.as_ref(), &req)
        .map(Some)
        .map_err(Error::Tenancy)
}

async fn project_path(ctx: &Context, conn: &Resolved, id: i64) -> Result<String, Error> {
    ctx.gitlab
        .canonical_path(&conn.key, "project", id, || async {
            conn.client
                .get_project(&id.to_string())
                .await
                .map(|p| p.path_with_namespace)
                .map_err(Error::gitlab(format!("looking up project {id}'s path")))
        })
        .await
}

async fn group_path(ctx: &Context, conn: &Resolved, id: i64) -> Result<String, Error> {
    ctx.gitlab
        .canonical_path(&conn.key, "group", id, || async {
            conn.client
                .get_group(&id.to_string())
                .await
                .map(|g| g.full_path)
                .map_err(Error::gitlab(format!("looking up group {id}'s path")))
        })
        .await
}

/// The runner `spec.adopt` names, as GitLab describes it (read, never changed).
async fn adopt_target(
    ctx: &Context,
    conn: &Resolved,
    gl: &dyn GitLabApi,
    id: i64,
) -> Result<AdoptTarget, Error> {
    let Some(d) = super::fetch(gl, crate::gitlab::RunnerId(id)).await? else {
        return Err(Error::Invalid(format!(
            "spec.adopt.runnerId {id}: no such runner in GitLab"
        )));
    };
    let owner_path = match d.runner_type.as_str() {
        "project_type" => match d.projects.first() {
            Some(p) => Some(project_path(ctx, conn, p.id).await?),
            None => None,
        },
        "group_type" => match d.groups.first() {
            Some(g) => Some(group_path(ctx, conn, g.id).await?),
            None => None,
        },
        _ => None,
    };
    let mut assigned_paths = vec![];
    for p in d.projects.iter().skip(1) {
        assigned_paths.push(project_path(ctx, conn, p.id).await?);
    }
    Ok(AdoptTarget {
        id,
        runner_type: d.runner_type,
        owner_path,
        assigned_paths,
    })
}
