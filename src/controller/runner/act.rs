//! Act: carries out one planned step. What a step is, and what a refusal of it means, is
//! decided in `plan`; here are the writes and the events that report them.

use kube::runtime::events::EventType;

use crate::controller::error::Error;
use crate::controller::plan::{self, Failure, GitLabState, Step, UpdateKind};
use crate::controller::reasons::{Reason, RotationReason};
use crate::gitlab::{GitLabError, RunnerAttributes, RunnerId};

use super::desired::Scope;
use super::event;
use super::pass::Pass;

/// Carries out `step`; a Blocked step is recorded in the pass (the rounds stop there).
pub(crate) async fn act(
    pass: &mut Pass<'_>,
    scope: &Scope,
    gitlab: &GitLabState,
    step: Step,
) -> Result<(), Error> {
    match step {
        Step::Create { recreated } => {
            if recreated {
                pass.status.runner_id = None;
            }
            pass.create(
                scope.owner_project,
                scope.owner_group,
                &scope.desired,
                recreated,
            )
            .await
        }
        Step::Adopt(target) => adopt(pass, target, scope, gitlab).await,
        Step::TakeOver { runner, keep_token } => pass.take_over(runner, keep_token).await,
        Step::Update { runner, attrs } => update(pass, scope, runner, &attrs).await,
        Step::Assign { runner, project } => assign(pass, &step, runner, project).await,
        Step::Unassign { runner, project } => unassign(pass, &step, runner, project).await,
        Step::RotateToken { runner, reason } => {
            pass.rotate(runner, reason).await?;
            if reason == RotationReason::Adopted {
                event(pass.ctx, pass.runner, EventType::Warning, Reason::Adopted, "Adopt", format!("took over GitLab runner {runner}; its previous token was reset and no longer works")).await;
            }
            Ok(())
        }
        Step::Blocked { reason, message } => {
            pass.blocked = Some((reason, message));
            Ok(())
        }
        Step::Invalid { message } => Err(invalid(pass, message)),
    }
}

/// The spec cannot be met as written: the ids resolved for its paths are forgotten (the next
/// pass resolves them again) and the pass fails with InvalidSpec.
fn invalid(pass: &mut Pass<'_>, message: String) -> Error {
    pass.status.project_ids.clear();
    pass.ctx.gitlab.forget_paths(&pass.conn.key);
    Error::Invalid(message)
}

/// What GitLab's refusal of `step` means (`plan::on_failure`): done, invalid spec, or an error.
fn refused(pass: &mut Pass<'_>, step: &Step, e: GitLabError, action: String) -> Result<(), Error> {
    match plan::on_failure(step, e.kind(), e.refusal(), e.message()) {
        Failure::Done => Ok(()),
        Failure::Invalid(message) => Err(invalid(pass, message)),
        Failure::Error => Err(Error::gitlab(action)(e)),
    }
}

async fn update(
    pass: &mut Pass<'_>,
    scope: &Scope,
    rid: RunnerId,
    attrs: &RunnerAttributes,
) -> Result<(), Error> {
    let changes = plan::describe_changes(pass.details.as_ref(), attrs);
    let kind = plan::update_kind(pass.details.as_ref(), attrs, scope.drift_possible);
    let d = pass
        .gl()
        .update_runner(rid, attrs)
        .await
        .map_err(Error::gitlab(format!("updating runner {rid}")))?;
    pass.details = Some(d);
    let (t, reason, note) = match kind {
        UpdateKind::Marker => (
            EventType::Normal,
            Reason::MarkerUpdated,
            format!("rewrote the ownership marker of runner {rid} ({changes})"),
        ),
        UpdateKind::Drift => (
            EventType::Warning,
            Reason::DriftReverted,
            format!("runner {rid} was changed outside the operator; restored {changes}"),
        ),
        UpdateKind::Spec => (
            EventType::Normal,
            Reason::Updated,
            format!("updated runner {rid}: {changes}"),
        ),
    };
    event(pass.ctx, pass.runner, t, reason, "Update", note).await;
    Ok(())
}

async fn assign(
    pass: &mut Pass<'_>,
    step: &Step,
    rid: RunnerId,
    project: i64,
) -> Result<(), Error> {
    if let Err(e) = pass.gl().assign_runner(&project.to_string(), rid).await {
        let action = format!("assigning runner {rid} to project {project}");
        refused(pass, step, e, action)?;
    }
    if let Some(d) = pass.details.as_mut()
        && !d.projects.iter().any(|p| p.id == project)
    {
        d.projects.push(crate::gitlab::ProjectRef {
            id: project,
            name: None,
            path_with_namespace: None,
        });
    }
    let note = format!("assigned runner {rid} to project {project}");
    event(
        pass.ctx,
        pass.runner,
        EventType::Normal,
        Reason::Assigned,
        "Assign",
        note,
    )
    .await;
    Ok(())
}

async fn unassign(
    pass: &mut Pass<'_>,
    step: &Step,
    rid: RunnerId,
    project: i64,
) -> Result<(), Error> {
    if let Err(e) = pass.gl().unassign_runner(&project.to_string(), rid).await {
        let action = format!("unassigning runner {rid} from project {project}");
        refused(pass, step, e, action)?;
    }
    if let Some(d) = pass.details.as_mut() {
        d.projects.retain(|p| p.id != project);
    }
    let note =
        format!("unassigned runner {rid} from project {project} (not in spec.assignedProjects)");
    event(
        pass.ctx,
        pass.runner,
        EventType::Normal,
        Reason::Unassigned,
        "Unassign",
        note,
    )
    .await;
    Ok(())
}

/// Takes runner `target` (the plan found no one else manages it): recorded in status first,
/// then each field the adoption changes reported.
async fn adopt(
    pass: &mut Pass<'_>,
    target: RunnerId,
    scope: &Scope,
    gitlab: &GitLabState,
) -> Result<(), Error> {
    // Recorded before any write: a crash from here on finds the runner ours (spec.adopt and
    // status agree) with its reset still pending.
    pass.status.runner_id = Some(target.into());
    pass.status.pending_rotation = Some(RotationReason::Adopted.as_str().into());
    pass.save().await?;
    // "My description disappeared": each field the adoption changes, before and after.
    let GitLabState::NotOurs(d) = gitlab else {
        return Ok(());
    };
    for change in plan::field_changes(Some(d), &scope.desired.attrs.diff(d)) {
        // One action per field: events of the same reason and action merge into a series.
        let mut field = change.field.chars();
        let action: String = field
            .next()
            .map(|c| c.to_ascii_uppercase())
            .into_iter()
            .chain(field)
            .collect();
        let note = format!("adopting GitLab runner {target} changes {}", change.text());
        let action = format!("Adopt{action}");
        event(
            pass.ctx,
            pass.runner,
            EventType::Normal,
            Reason::AdoptionChangesField,
            &action,
            note,
        )
        .await;
    }
    Ok(())
}
