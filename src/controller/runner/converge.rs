//! The pass's rounds: observe → plan → act until GitLab matches (or the rounds run out).

use kube::{Resource, ResourceExt};

use crate::controller::consumers;
use crate::controller::error::Error;
use crate::controller::plan::{self, Shortcut, Step};
use crate::controller::reasons::{Reason, RotationReason};
use crate::crd::Runner;

use super::act::act;
use super::desired::{Scope, desired, marker, token_state};
use super::lane::check_lane;
use super::observe::{Sight, observe, record, resolve_ids};
use super::pass::Pass;
use super::{NOTE_LIMIT, NOTE_TRUNCATED, ROTATE_ANNOTATION};

/// Observe → plan → act until GitLab matches (at most four rounds).
pub(crate) async fn converge(pass: &mut Pass<'_>) -> Result<(), Error> {
    let scope = prepare(pass).await?;
    if rotated_only(pass).await? {
        return Ok(());
    }
    // What GitLab answered to the operator's own writes, when that says all it stored: the
    // next round needs no read.
    let mut answered = None;
    for _round in 0..4 {
        let observed = observe(pass, &scope, answered.take()).await?;
        record(pass, &observed);
        let token = token_state(&pass.status, observed.secret);
        let now = pass.ctx.clock.now();
        let steps = plan::plan(&scope.desired, &observed.gitlab, &token, now);
        if steps.is_empty() {
            pass.blocked = None;
            return Ok(());
        }
        // A token reset changes nothing else GitLab shows, an update answers with the runner
        // as stored, and an (un)assignment GitLab accepted changes only the project list:
        // after only those, the next round reuses what is known instead of reading again.
        let known_after = steps.iter().all(|s| {
            matches!(
                s,
                Step::Update { .. }
                    | Step::RotateToken { .. }
                    | Step::Assign { .. }
                    | Step::Unassign { .. }
            )
        });
        for step in steps {
            let runner = pass.runner;
            tracing::debug!(namespace = %runner.namespace().unwrap_or_default(), name = %runner.name_any(), ?step, "acting");
            act(pass, &scope, &observed.gitlab, step).await?;
            // A step may find the way blocked.
            if pass.blocked.is_some() {
                return Ok(());
            }
            // A create found the token Secret's name taken: the next round reads that Secret.
            if pass.secret.taken {
                break;
            }
        }
        if known_after {
            answered = pass.details.clone();
        }
    }
    // Ready only from what was observed after acting: changes that did not stick are no match.
    pass.blocked = Some((
        Reason::NotConverged,
        "GitLab did not reach the spec after four rounds of changes (another writer may be undoing them); retrying".into(),
    ));
    Ok(())
}

/// The spec's projects and groups as ids, the tenancy lane (outside it, nothing is written to
/// GitLab), and the desired state.
async fn prepare(pass: &mut Pass<'_>) -> Result<Scope, Error> {
    let (runner, ctx) = (pass.runner, pass.ctx);
    let (owner_project, owner_group, assigned) =
        resolve_ids(Some((ctx, &pass.conn.key)), runner, &pass.status, pass.gl()).await?;
    pass.status.project_ids = owner_project
        .into_iter()
        .chain(assigned.iter().copied())
        .collect();
    pass.status.group_id = owner_group;
    let ids = (owner_project, owner_group, &assigned);
    check_lane(ctx, runner, &pass.conn, &pass.status, ids).await?;
    let cluster = ctx.settings.cluster_name.as_ref();
    let desired = desired(runner, assigned, owner_project, cluster)?;
    if note_needs_room(runner, cluster) {
        pass.warnings.push(consumers::Warning {
            type_: NOTE_TRUNCATED,
            status: true,
            reason: Reason::MarkerNeedsRoom,
            message:
                "maintenanceNote was shortened in GitLab to leave room for the ownership marker"
                    .into(),
        });
    }
    Ok(Scope {
        owner_project,
        owner_group,
        desired,
        drift_possible: runner.status.as_ref().and_then(|s| s.observed_generation)
            == runner.meta().generation,
    })
}

fn note_needs_room(
    runner: &Runner,
    cluster: Option<&crate::controller::identity::ClusterName>,
) -> bool {
    runner.spec.adopt.is_none()
        && runner.spec.maintenance_note.as_ref().is_some_and(|n| {
            n.chars().count() + marker(runner, cluster).chars().count() + 2 > NOTE_LIMIT
        })
}

/// The rotation shortcut (`plan::shortcut`): true when the pass is over.
async fn rotated_only(pass: &mut Pass<'_>) -> Result<bool, Error> {
    let request = pass.runner.annotations().get(ROTATE_ANNOTATION);
    let shortcut = plan::shortcut(
        pass.rotation_only,
        pass.recorded(),
        request.map(String::as_str),
        pass.status.handled_rotate_request.as_deref(),
    );
    match shortcut {
        Shortcut::Done => Ok(true),
        Shortcut::Full => Ok(false),
        Shortcut::Rotate(id) => match pass.rotate(id, RotationReason::Requested).await {
            Ok(()) => Ok(true),
            // Gone meanwhile: the rounds look at everything.
            Err(Error::GitLab { source, .. }) if source.is_not_found() => Ok(false),
            Err(e) => Err(e),
        },
    }
}
