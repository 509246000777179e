//! Observe → plan → act, in rounds, until GitLab matches (or the rounds run out).

use crate::gitlab::ErrorKind;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::controller::error::Error;
use crate::controller::plan::{self, Desired, GitLabState, SecretState, Step};
use crate::controller::reasons::RotationReason;
use crate::controller::{caches, consumers, secret};
use crate::crd::Runner;

use super::*;
use crate::controller::identity;
use crate::gitlab::{Refusal, RunnerAttributes};

/// Observe → plan → act until GitLab matches (at most a few rounds).
pub(crate) async fn converge(pass: &mut Pass<'_>) -> Result<(), Error> {
    let runner = pass.runner;
    let ctx = pass.ctx;
    let (owner_project, owner_group, assigned) =
        resolve_ids(Some((ctx, &pass.conn.key)), runner, &pass.status, pass.gl()).await?;
    pass.status.project_ids = owner_project
        .into_iter()
        .chain(assigned.iter().copied())
        .collect();
    pass.status.group_id = owner_group;
    // The tenancy lane first: outside it, nothing is written to GitLab.
    check_lane(
        ctx,
        runner,
        &pass.conn,
        &pass.status,
        (owner_project, owner_group, &assigned),
    )
    .await?;
    let cluster = ctx.settings.cluster_name.as_ref();
    let desired = desired(runner, assigned, cluster)?;
    if runner.spec.adopt.is_none()
        && runner.spec.maintenance_note.as_ref().is_some_and(|n| {
            n.chars().count() + marker(runner, cluster).chars().count() + 2 > NOTE_LIMIT
        })
    {
        pass.warnings.push(consumers::Warning {
            type_: NOTE_TRUNCATED,
            status: true,
            reason: Reason::MarkerNeedsRoom,
            message:
                "maintenanceNote was shortened in GitLab to leave room for the ownership marker"
                    .into(),
        });
    }
    let drift_possible =
        runner.status.as_ref().and_then(|s| s.observed_generation) == runner.meta().generation;
    if pass.rotation_only
        && let Some(id) = pass.status.runner_id
    {
        // Only the rotate-token request changed since a check that found GitLab matching: reset
        // without reading the runner first. A runner gone meanwhile answers 404; then the
        // rounds below look at everything.
        let request = runner.annotations().get(ROTATE_ANNOTATION);
        if request.is_none() || request == pass.status.handled_rotate_request.as_ref() {
            return Ok(());
        }
        match pass.rotate(id, RotationReason::Requested).await {
            Ok(()) => return Ok(()),
            Err(Error::GitLab { source, .. }) if source.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // What GitLab answered to the operator's own writes, when that says all it stored: the
    // next round needs no read.
    let mut answered: Option<crate::gitlab::RunnerDetails> = None;
    for _round in 0..4 {
        let (secret_state, id_in_secret) = observe_secret(pass).await?;
        let known_id = pass.status.runner_id.or(id_in_secret);
        let recorded = pass.status.runner_id;
        let reuse = answered.take().filter(|d| Some(d.id) == known_id);
        let restored = matches!(secret_state, SecretState::Restored { .. });
        let gitlab = match (known_id, reuse) {
            (Some(_), Some(d)) => GitLabState::Present(Box::new(d)),
            (Some(id), None) => match fetch(pass.gl(), id).await? {
                Some(d) => classify(ctx, d, runner, recorded),
                // Only a restored Secret named it: the old runner is gone, nothing was lost here.
                None if restored && recorded.is_none() => GitLabState::Unknown,
                None => GitLabState::Gone,
            },
            (None, _) => match desired.adopt {
                Some(id) => match fetch(pass.gl(), id).await? {
                    Some(d) if is_ours(&d, runner, recorded, cluster) => {
                        GitLabState::Present(Box::new(d))
                    }
                    Some(d) => GitLabState::NotOurs(Box::new(d)),
                    None => {
                        return Err(Error::Invalid(format!(
                            "spec.adopt.runnerId {id}: no such runner in GitLab"
                        )));
                    }
                },
                // Only after an interrupted create: finding our marked runner costs a list.
                None if pass.status.creation_started.is_some() => match find_marked(
                    ctx,
                    pass.gl(),
                    runner,
                    owner_project,
                    owner_group,
                    pass.status.creation_started.as_deref(),
                    &desired.attrs.description,
                )
                .await?
                {
                    Some(d) => {
                        pass.status.runner_id = Some(d.id);
                        pass.status.creation_started = None;
                        GitLabState::Present(Box::new(d))
                    }
                    None => GitLabState::Unknown,
                },
                // Before registering: a runner this cluster made for this Runner before a
                // rebuild (only with --cluster-name).
                None => match find_predecessor(ctx, pass.gl(), runner, owner_project, owner_group)
                    .await?
                {
                    Some(d) => classify(ctx, d, runner, recorded),
                    None => GitLabState::Unknown,
                },
            },
        };
        if let GitLabState::Present(d) | GitLabState::NotOurs(d) | GitLabState::Predecessor(d) =
            &gitlab
        {
            pass.details = Some((**d).clone());
        }
        if let GitLabState::Present(d) = &gitlab {
            pass.status.token_expires_at = token_expiry(
                pass.status.token_expires_at.as_deref(),
                d.token_expires_at.as_deref(),
            );
            // Known from the Secret after a crash before the status write: record it now
            // (and the create it came from is over).
            pass.status.runner_id = Some(d.id);
            pass.status.creation_started = None;
            // GitLab moves a runner to its oldest other project when its owner project is
            // deleted: that is no drift to revert, and the spec cannot be met as written.
            if let (Some(want), Some(owner)) = (owner_project, d.projects.first())
                && owner.id != want
            {
                pass.status.project_ids.clear();
                ctx.gitlab.forget_paths(&pass.conn.key);
                return Err(Error::Invalid(format!(
                    "GitLab now lists project {} ({}) as the owner of runner {}, not project {want} of spec.project {:?} (deleted?); recreate this Runner with spec.project set to an existing project, or delete the Runner",
                    owner.id,
                    owner.path_with_namespace.as_deref().unwrap_or("?"),
                    d.id,
                    runner.spec.project.as_deref().unwrap_or_default()
                )));
            }
        }
        let token = token_state(&pass.status, secret_state);
        let steps = plan::plan(&desired, &gitlab, &token, ctx.clock.now());
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
            tracing::debug!(namespace = %runner.namespace().unwrap_or_default(), name = %runner.name_any(), ?step, "acting");
            match step {
                Step::Create { recreated } => {
                    if recreated {
                        pass.status.runner_id = None;
                    }
                    pass.create(owner_project, owner_group, &desired, recreated)
                        .await?;
                }
                Step::Adopt(target) => adopt(pass, target, &desired, &gitlab).await?,
                Step::TakeOver {
                    runner: rid,
                    keep_token,
                } => pass.take_over(rid, keep_token).await?,
                Step::Update { runner: rid, attrs } => {
                    let changes = plan::describe_changes(pass.details.as_ref(), &attrs);
                    // Only the marker changes (a cluster name written in, a takeover): no drift.
                    let before = pass
                        .details
                        .as_ref()
                        .and_then(|d| d.maintenance_note.clone());
                    let marker_only = attrs
                        == RunnerAttributes {
                            maintenance_note: attrs.maintenance_note.clone(),
                            ..Default::default()
                        }
                        && attrs.maintenance_note.as_deref().map(identity::strip)
                            == Some(identity::strip(before.as_deref().unwrap_or_default()));
                    let d = pass
                        .gl()
                        .update_runner(rid, &attrs)
                        .await
                        .map_err(Error::gitlab(format!("updating runner {rid}")))?;
                    pass.details = Some(d);
                    let (t, reason, note) = if marker_only {
                        (
                            EventType::Normal,
                            Reason::MarkerUpdated,
                            format!("rewrote the ownership marker of runner {rid} ({changes})"),
                        )
                    } else if drift_possible && attrs.locked.is_none() {
                        (
                            EventType::Warning,
                            Reason::DriftReverted,
                            format!(
                                "runner {rid} was changed outside the operator; restored {changes}"
                            ),
                        )
                    } else {
                        (
                            EventType::Normal,
                            Reason::Updated,
                            format!("updated runner {rid}: {changes}"),
                        )
                    };
                    event(ctx, runner, t, reason, "Update", note).await;
                }
                Step::Assign {
                    runner: rid,
                    project,
                } => {
                    match pass.gl().assign_runner(&project.to_string(), rid).await {
                        Ok(_) => {}
                        Err(e) if e.refusal() == Some(Refusal::AlreadyAssigned) => {}
                        Err(e) if e.is_not_found() => {
                            // The project is gone (or hidden): resolve the spec's paths again on
                            // the next pass instead of trusting the ids recorded in status.
                            pass.status.project_ids.clear();
                            ctx.gitlab.forget_paths(&pass.conn.key);
                            return Err(Error::Invalid(format!(
                                "project {project} of spec.assignedProjects no longer exists in GitLab, or the token's user cannot see it ({}): remove it from spec.assignedProjects, or fix the path",
                                e.message().unwrap_or("404")
                            )));
                        }
                        Err(e) => {
                            return Err(Error::gitlab(format!(
                                "assigning runner {rid} to project {project}"
                            ))(e));
                        }
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
                    event(
                        ctx,
                        runner,
                        EventType::Normal,
                        Reason::Assigned,
                        "Assign",
                        format!("assigned runner {rid} to project {project}"),
                    )
                    .await;
                }
                Step::Unassign {
                    runner: rid,
                    project,
                } => {
                    match pass.gl().unassign_runner(&project.to_string(), rid).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            return Err(Error::gitlab(format!(
                                "unassigning runner {rid} from project {project}"
                            ))(e));
                        }
                    }
                    if let Some(d) = pass.details.as_mut() {
                        d.projects.retain(|p| p.id != project);
                    }
                    event(ctx, runner, EventType::Normal, Reason::Unassigned, "Unassign", format!("unassigned runner {rid} from project {project} (not in spec.assignedProjects)")).await;
                }
                Step::RotateToken {
                    runner: rid,
                    reason,
                } => {
                    pass.rotate(rid, reason).await?;
                    if reason == RotationReason::Adopted {
                        event(ctx, runner, EventType::Warning, Reason::Adopted, "Adopt", format!("took over GitLab runner {rid}; its previous token was reset and no longer works")).await;
                    }
                }
                Step::Blocked { reason, message } => {
                    pass.blocked = Some((reason, message));
                    return Ok(());
                }
            }
            // A step may find the way blocked (a runner another Runner claimed).
            if pass.blocked.is_some() {
                return Ok(());
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

/// The token Secret: from the cache when it is the version this process wrote or checked and
/// status names the same token, else read (the token itself is read only then). Also the
/// runner id it records, when status lost it.
pub(crate) async fn observe_secret(
    pass: &mut Pass<'_>,
) -> Result<(SecretState, Option<i64>), Error> {
    let (ctx, runner) = (pass.ctx, pass.runner);
    let (ns, name) = (
        runner.namespace().unwrap_or_default(),
        runner.token_secret_name(),
    );
    let uid = runner.uid().unwrap_or_default();
    let known = ctx.recent.secret_version(&uid);
    let cached = match ctx.caches.token_secret(&ns, &name) {
        caches::Cached::Found(m) => Some(m.and_then(|m| m.resource_version())),
        caches::Cached::NoCache => None,
    };
    if let (Some(cached), Some((version, hash))) = (&cached, &known)
        && pass.status.token_hash.as_ref() == Some(hash)
        && pass.status.runner_id.is_some()
        && (cached.as_ref() == Some(version)
            || (pass.rolled && ctx.recent.secret_cache_lags(&uid, cached.as_deref())))
    {
        // The version this process wrote or checked (or wrote in this very pass, before the
        // cache caught up).
        return Ok((SecretState::Valid, None));
    }
    // The cache holds only Secrets labelled as ours: its not having one proves nothing (a
    // Secret someone else made under that name must be found, and never overwritten).
    let secret_obj = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(Error::kube("reading the token Secret"))?;
    let state = secret::observe(
        secret_obj.as_ref(),
        runner,
        pass.status.token_hash.as_deref(),
    );
    pass.restored = None;
    if state == SecretState::Foreign
        && ctx.settings.cluster_name.is_some()
        && let Some(mut restored) = secret_obj
            .as_ref()
            .and_then(|s| secret::restored(s, runner))
    {
        // Restored from a backup: kept if GitLab still accepts its token for the runner it
        // names (a verify without system_id: no runner manager is created).
        let live = match pass.gl().verify_runner(&restored.token).await {
            Ok(answer) => {
                if answer.token_expires_at.is_some() {
                    restored.expires_at = answer.token_expires_at.clone();
                }
                answer.id == restored.runner_id
            }
            Err(e) if e.kind() == ErrorKind::Forbidden => false,
            Err(e) => {
                return Err(Error::gitlab(
                    "checking whether GitLab accepts the restored token Secret's token",
                )(e));
            }
        };
        let id = restored.runner_id;
        if live {
            pass.restored = Some(restored);
        }
        return Ok((SecretState::Restored { live }, Some(id)));
    }
    let version = secret_obj
        .as_ref()
        .and_then(|s| s.resource_version())
        .zip(pass.status.token_hash.clone())
        .filter(|_| state == SecretState::Valid);
    ctx.recent.set_secret_version(&uid, version);
    let id = secret_obj
        .as_ref()
        .filter(|_| state != SecretState::Foreign)
        .and_then(secret::runner_id);
    Ok((state, id))
}

pub(crate) async fn adopt(
    pass: &mut Pass<'_>,
    target: i64,
    desired: &Desired,
    gitlab: &GitLabState,
) -> Result<(), Error> {
    let ctx = pass.ctx;
    let runner = pass.runner;
    let uid = runner.uid().unwrap_or_default();
    // No tug of war: a runner another live Runner manages is not taken — one that marked it
    // (it created or adopted it), or one that recorded it in its status.
    let mut claimed_by = ctx.claimant(target, &uid);
    if let GitLabState::NotOurs(d) = gitlab
        && claimed_by.is_none()
        && let Some(m) = identity::Marker::parse(d.maintenance_note.as_deref())
    {
        if !m.in_cluster(ctx.settings.cluster_name.as_ref()) {
            pass.blocked = Some((
                Reason::RunnerClaimed,
                format!(
                    "GitLab runner {target} is managed by Runner {} of cluster {}; it is not adopted. Delete that Runner with deletionPolicy: Orphan in that cluster, or remove the marker from the runner's maintenance note, first",
                    m.path(),
                    m.cluster.as_deref().unwrap_or_default()
                ),
            ));
            return Ok(());
        }
        let (ns, name, owner_uid) = (m.namespace, m.name, m.uid);
        let other = Api::<Runner>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(Error::kube("reading the Runner that claims the runner"))?;
        if other.is_some_and(|o| o.meta().uid.as_deref() == Some(owner_uid.as_str())) {
            claimed_by = Some((ns, name));
        }
    }
    if let Some((ns, name)) = claimed_by {
        pass.blocked = Some((
            Reason::RunnerClaimed,
            format!(
                "GitLab runner {target} is managed by Runner {ns}/{name}; it is not adopted. Delete that Runner with deletionPolicy: Orphan first"
            ),
        ));
        return Ok(());
    }
    // Recorded before any write: a crash from here on finds the runner ours (spec.adopt and
    // status agree) with its reset still pending.
    pass.status.runner_id = Some(target);
    pass.status.pending_rotation = Some(RotationReason::Adopted.as_str().into());
    pass.save().await?;
    // "My description disappeared": each field the adoption changes, before and after.
    if let GitLabState::NotOurs(d) = gitlab {
        for change in plan::field_changes(Some(d), &desired.attrs.diff(d)) {
            // One action per field: events of the same reason and action merge into a series.
            let mut field = change.field.chars();
            let action: String = field
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(field)
                .collect();
            event(
                ctx,
                runner,
                EventType::Normal,
                Reason::AdoptionChangesField,
                &format!("Adopt{action}"),
                format!("adopting GitLab runner {target} changes {}", change.text()),
            )
            .await;
        }
    }
    Ok(())
}
