//! Deletion: the runner goes from GitLab with its Runner (or stays, `Orphan`).

use crate::gitlab::ErrorKind;
use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::controller::connection::{self};
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::gitlab_clients::Resolved;
use crate::controller::plan::SecretState;
use crate::controller::reasons::Reason;
use crate::controller::secret;
use crate::crd::{DeletionPolicy, READY, Runner, condition, set_condition};
use crate::gitlab::{GitLabApi, RunnerDetails, RunnerId};

use super::desired::{carries_marker, is_ours};
use super::lane::check_lane;
use super::observe::{fetch, find_marked, resolve_ids};
use super::pass::write_status;
use super::{event, fresh};

pub(crate) async fn cleanup(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(runner) = fresh(runner, &ctx).await? else {
        return Ok(Action::await_change());
    };
    ctx.metrics
        .forget(&runner.namespace().unwrap_or_default(), &runner.name_any());
    ctx.recent.forget(&runner.uid().unwrap_or_default());
    if runner.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Orphan {
        orphan(&ctx, &runner).await;
        return Ok(Action::await_change());
    }
    let conn = match connection::of_runner(&ctx, &runner).await {
        Ok(c) => c,
        Err(e) => {
            return Err(deletion_blocked(&ctx, &runner, format!("{e}; fix the connection")).await?);
        }
    };
    if left_outside_lane(&ctx, &runner, &conn).await? {
        return Ok(Action::await_change());
    }
    match delete_in_gitlab(&ctx, &runner, &*conn.client).await {
        // GitLab refuses the connection's token: only a person can fix that.
        Err(Error::GitLab { action, source })
            if matches!(
                source.kind(),
                ErrorKind::Unauthorized | ErrorKind::Forbidden
            ) =>
        {
            let fix = if source.kind() == ErrorKind::Unauthorized {
                "the connection's access token is revoked, expired or wrong: replace it in its Secret"
            } else {
                "the connection's access token may not delete this runner: give its user Maintainer (project) or Owner (group) rights, or an admin token for instance runners"
            };
            Err(deletion_blocked(&ctx, &runner, format!("{action}: {source}; {fix}")).await?)
        }
        other => other,
    }
}

/// `deletionPolicy: Orphan`: the runner stays registered (without this cluster's marker, when
/// it has a name).
async fn orphan(ctx: &Context, runner: &Runner) {
    let id = runner.status.as_ref().and_then(|s| s.runner_id);
    if let (Some(id), Some(_)) = (id, &ctx.settings.cluster_name)
        && let Err(why) = release_marker(ctx, runner, id).await
    {
        // Orphan must not depend on GitLab: the Runner goes, the marker stays.
        event(
            ctx,
            runner,
            EventType::Warning,
            Reason::MarkerKept,
            "Delete",
            format!("GitLab runner {id} keeps this cluster's ownership marker ({why}): `runner-operator plan` lists it as an orphan, and a Runner of the same name in this cluster would take it over; remove the marker from its maintenance note by hand"),
        )
        .await;
    }
    event(
        ctx,
        runner,
        EventType::Normal,
        Reason::Orphaned,
        "Delete",
        format!(
            "deletionPolicy Orphan: GitLab runner {} is left registered",
            id.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into())
        ),
    )
    .await;
}

/// A Runner outside its lane may not delete the runner either: it stays in GitLab (an event
/// says so). True when that is the case.
async fn left_outside_lane(ctx: &Context, runner: &Runner, conn: &Resolved) -> Result<bool, Error> {
    if let Some(st) = runner.status.as_ref()
        && let Some(id) = st.runner_id
    {
        let owner = st.project_ids.first().copied();
        let assigned: BTreeSet<i64> = st.project_ids.iter().skip(1).copied().collect();
        match check_lane(ctx, runner, conn, st, (owner, st.group_id, &assigned)).await {
            Err(Error::Tenancy(why)) => {
                event(
                    ctx,
                    runner,
                    EventType::Warning,
                    Reason::LeftOutsideLane,
                    "Delete",
                    format!("GitLab runner {id} is left registered: {why}"),
                )
                .await;
                return Ok(true);
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(false)
}

/// The Runner's deletion waits on something only a person can fix: a DeletionBlocked condition
/// and Warning event naming it and the way out. Returns the error to back off with.
pub(crate) async fn deletion_blocked(
    ctx: &Context,
    runner: &Runner,
    cause: String,
) -> Result<Error, Error> {
    let e = Error::DeletionBlocked(format!(
        "cannot delete the GitLab runner: {cause}. To release this Runner without touching GitLab, set spec.deletionPolicy: Orphan"
    ));
    let mut status = runner.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            false,
            e.reason(),
            e.to_string(),
            runner.meta().generation,
            Time(ctx.clock.now()),
        ),
    );
    write_status(ctx, runner, &status).await?;
    event(
        ctx,
        runner,
        EventType::Warning,
        e.reason(),
        "Delete",
        e.to_string(),
    )
    .await;
    Ok(e)
}

/// Removes the runner from GitLab (unassigning it from other projects first when GitLab
/// insists), if it is ours.
pub(crate) async fn delete_in_gitlab(
    ctx: &Context,
    runner: &Runner,
    gl: &dyn GitLabApi,
) -> Result<Action, Error> {
    let status = runner.status.clone().unwrap_or_default();
    let found = find_for_deletion(ctx, runner, gl).await?;
    let Some(details) = found else {
        return Ok(Action::await_change());
    };
    let id = details.id;
    if !is_ours(
        &details,
        runner,
        status.runner_id.map(RunnerId),
        ctx.settings.cluster_name.as_ref(),
    ) {
        event(
            ctx,
            runner,
            EventType::Warning,
            Reason::NotDeleted,
            "Delete",
            format!("GitLab runner {id} does not carry this Runner's marker and is not the one it adopted; it is left in place"),
        )
        .await;
        return Ok(Action::await_change());
    }
    delete_everywhere(gl, &details).await?;
    event(
        ctx,
        runner,
        EventType::Normal,
        Reason::Deleted,
        "Delete",
        format!("deleted GitLab runner {id}"),
    )
    .await;
    Ok(Action::await_change())
}

/// The runner to delete: by the id status or the token Secret records, or, after a create
/// interrupted before recording it, by its marker.
async fn find_for_deletion(
    ctx: &Context,
    runner: &Runner,
    gl: &dyn GitLabApi,
) -> Result<Option<RunnerDetails>, Error> {
    let ns = runner.namespace().unwrap_or_default();
    let status = runner.status.clone().unwrap_or_default();
    // The Secret may be all that knows the id (a crash before the status write): a failed
    // read is an error to retry, never "no runner".
    let ours = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&runner.token_secret_name())
        .await
        .map_err(Error::kube(
            "reading the token Secret before deleting the runner",
        ))?
        .filter(|s| secret::observe(Some(s), runner, None) != SecretState::Foreign);
    let secret_id = ours.as_ref().and_then(secret::runner_id);
    // A create interrupted before its id was recorded: in status, or in the Secret written
    // ahead of it.
    let started = status
        .creation_started
        .clone()
        .or_else(|| ours.as_ref().and_then(secret::creation_started));
    Ok(match status.runner_id.map(RunnerId).or(secret_id) {
        Some(id) => fetch(gl, id).await?,
        None if started.is_none() => None,
        None => {
            // Created, then crashed before recording the id: find it by our marker.
            let (p, g, _) = resolve_ids(None, runner, &status, gl).await.unwrap_or((
                None,
                None,
                BTreeSet::new(),
            ));
            find_marked(
                ctx,
                gl,
                runner,
                p,
                g,
                started.as_deref(),
                runner.spec.description.as_deref().unwrap_or(""),
            )
            .await?
        }
    })
}

/// `DELETE /runners/:id`; when GitLab insists (a project runner assigned to several projects
/// and a non-admin token), unassigned from the other projects first.
async fn delete_everywhere(gl: &dyn GitLabApi, details: &RunnerDetails) -> Result<(), Error> {
    let id = details.id;
    match gl.delete_runner(id).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) if e.refusal() == Some(crate::gitlab::Refusal::AssignedToSeveralProjects) => {
            for p in details.projects.iter().skip(1) {
                match gl.unassign_runner(&p.id.to_string(), id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        return Err(Error::gitlab(format!(
                            "unassigning runner {id} from project {} before deleting it",
                            p.id
                        ))(e));
                    }
                }
            }
            match gl.delete_runner(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::gitlab(format!("deleting runner {id}"))(e)),
            }
        }
        Err(e) => return Err(Error::gitlab(format!("deleting runner {id}"))(e)),
    }
    Ok(())
}

/// `deletionPolicy: Orphan` with a cluster name: the runner stays, without this cluster's
/// marker — so `prune` never counts it as an orphan and a later Runner of the same name does
/// not take it over.
async fn release_marker(ctx: &Context, runner: &Runner, id: i64) -> Result<(), String> {
    let conn = connection::of_runner(ctx, runner)
        .await
        .map_err(|e| e.to_string())?;
    let gl = &*conn.client;
    let Some(d) = fetch(gl, RunnerId(id)).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let cluster = ctx.settings.cluster_name.as_ref();
    if !carries_marker(d.maintenance_note.as_deref(), runner, cluster) {
        return Ok(());
    }
    let note =
        crate::controller::identity::strip(d.maintenance_note.as_deref().unwrap_or_default());
    let attrs = crate::gitlab::RunnerAttributes {
        maintenance_note: Some(note),
        ..Default::default()
    };
    gl.update_runner(RunnerId(id), &attrs)
        .await
        .map_err(|e| format!("removing the marker: {e}"))?;
    Ok(())
}
