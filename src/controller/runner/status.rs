//! One pass and its report: connection, converge, conditions, the status write.

use crate::controller::reasons::Reason;
use crate::gitlab::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::controller::connection::{self};
use crate::controller::consumers;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::plan::{self};
use crate::controller::recent;
use crate::crd::{self, READY, Runner, RunnerStatus, condition, set_condition};

use super::*;

/// Writes status when it differs (ignoring condition timestamps): no loops from our own writes.
pub(crate) async fn write_status(
    ctx: &Context,
    runner: &Runner,
    status: &RunnerStatus,
) -> Result<(), Error> {
    // kstatus' Reconciling and Stalled follow the other conditions, whoever set them.
    let mut status = status.clone();
    crate::controller::standing::apply(&mut status.conditions);
    let status = &status;
    // Compared with what the server has: our last write in this pass, if any.
    let last = ctx
        .recent
        .written_status(&runner.uid().unwrap_or_default())
        .or_else(|| runner.status.clone());
    if let Some(old) = &last {
        let mut a = old.clone();
        let mut b = status.clone();
        let same_conditions = crd::same_ignoring_time(&a.conditions, &b.conditions);
        a.conditions.clear();
        b.conditions.clear();
        if same_conditions && a == b {
            return Ok(());
        }
    }
    let api: Api<Runner> =
        Api::namespaced(ctx.client.clone(), &runner.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "status": status});
    let written = api
        .patch_status(
            &runner.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::kube("writing the Runner status"))?;
    ctx.recent.wrote(written);
    Ok(())
}

pub(crate) async fn apply(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(runner) = fresh(runner, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let uid = runner.uid().unwrap_or_default();
    let (mut periodic, mut rotation_only) = (false, false);
    if ctx.caches.listing(&runner.namespace().unwrap_or_default()) {
        // Just started: the caches are still listing. Checking now would read live what they
        // are about to hold, and leave nothing to compare the next pass with.
        ctx.metrics.pass_skipped("cache-listing");
        return Ok(Action::requeue(Duration::from_millis(
            500 + fastrand::u64(0..1000),
        )));
    }
    // Without caches (none in `plan`) every pass checks.
    let inputs = gate_inputs(&ctx, &runner);
    if let Some((_, secret_version)) = &inputs
        && ctx
            .recent
            .secret_cache_lags(&uid, secret_version.as_deref())
    {
        // Reading the Secret now would only learn what the operator wrote; the watch event
        // that brings the cache up to date triggers the next pass.
        ctx.metrics.pass_skipped("cache-lag");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Some((conn_generation, secret_version)) = &inputs {
        let fp = recent::fingerprint(&runner, *conn_generation, secret_version.as_deref());
        let first = settled(&runner, secret_version.is_some())
            .then(|| first_check(&ctx, &runner, &uid))
            .flatten();
        let now = ctx.clock.now();
        let memo = ctx.recent.memo(&uid);
        match recent::gate(memo, fp, now, first) {
            recent::Gate::Wait(wait) => {
                if memo.is_none() {
                    ctx.recent.set_memo(
                        &uid,
                        Some(recent::Memo {
                            fingerprint: fp.0,
                            base: fp.1,
                            due: now + wait,
                            ready: true,
                        }),
                    );
                }
                ctx.metrics.pass_skipped("unchanged");
                return Ok(Action::requeue(wait));
            }
            recent::Gate::Run { periodic: p } => periodic = p,
            recent::Gate::Rotate => rotation_only = true,
        }
    }
    let outcome = checked(&ctx, &runner, periodic, rotation_only).await;
    match (&outcome, &inputs) {
        (Ok(Checked::Done(wait, ready)), Some((conn_generation, cached_secret))) => {
            // What the next trigger will see: our own Secret write, if any, is the version
            // the cache is about to hold.
            let secret = ctx
                .recent
                .secret_version(&uid)
                .map(|(v, _)| v)
                .or_else(|| cached_secret.clone());
            let fp = recent::fingerprint(&runner, *conn_generation, secret.as_deref());
            ctx.recent.set_memo(
                &uid,
                Some(recent::Memo {
                    fingerprint: fp.0,
                    base: fp.1,
                    due: ctx.clock.now() + *wait,
                    ready: *ready,
                }),
            );
        }
        (Ok(Checked::Deferred(_)), _) => {}
        _ => ctx.recent.set_memo(&uid, None),
    }
    outcome.map(|c| match c {
        Checked::Done(wait, _) | Checked::Deferred(wait) => Action::requeue(wait),
    })
}

/// How a pass that checked GitLab ended: when to check again, or stepped aside (a periodic
/// check while the connection's rate limit has callers queued) and when to try again.
enum Checked {
    /// When to check again; whether the pass ended Ready.
    Done(Duration, bool),
    Deferred(Duration),
}

/// The connection's generation and the token Secret's resourceVersion, from the caches; None
/// without caches.
fn gate_inputs(ctx: &Context, runner: &Runner) -> Option<(Option<i64>, Option<String>)> {
    use crate::controller::caches::Cached;
    let ns = runner.namespace().unwrap_or_default();
    let r = &runner.spec.connection_ref;
    let conn_generation = match r.kind {
        crd::ConnectionKind::GitLabConnection => match ctx.caches.connection(&ns, &r.name) {
            Cached::Found(c) => c.and_then(|c| c.meta().generation),
            Cached::NoCache => return None,
        },
        crd::ConnectionKind::ClusterGitLabConnection => {
            match ctx.caches.cluster_connection(&r.name) {
                Cached::Found(c) => c.and_then(|c| c.meta().generation),
                Cached::NoCache => return None,
            }
        }
    };
    let secret = match ctx.caches.token_secret(&ns, &runner.token_secret_name()) {
        Cached::Found(m) => m.and_then(|m| m.resource_version()),
        Cached::NoCache => return None,
    };
    Some((conn_generation, secret))
}

/// The status says the Runner was settled when last checked: Ready for its current spec,
/// nothing half-done, no rotation request pending, its Secret present.
fn settled(runner: &Runner, secret_present: bool) -> bool {
    let Some(st) = &runner.status else {
        return false;
    };
    secret_present
        && runner.meta().deletion_timestamp.is_none()
        && st.observed_generation.is_some()
        && st.observed_generation == runner.meta().generation
        && st.runner_id.is_some()
        && st.creation_started.is_none()
        && st.pending_rotation.is_none()
        && st
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True")
        && runner
            .annotations()
            .get(ROTATE_ANNOTATION)
            .is_none_or(|a| st.handled_rotate_request.as_ref() == Some(a))
}

/// When a settled Runner's first check after a start is due: its place in the resync period,
/// or its next token deadline if that comes first.
fn first_check(ctx: &Context, runner: &Runner, uid: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let due = ctx.clock.now() + recent::spread(uid, ctx.settings.resync);
    let policy = rotation_policy(runner).ok()?;
    let st = runner.status.as_ref()?;
    let next = plan::next_rotation(
        &policy,
        ts(st.token_issued_at.as_deref()),
        ts(st.token_expires_at.as_deref()),
    );
    Some(match next {
        Some((_, at)) if at < due => at,
        _ => due,
    })
}

/// A pass that checks GitLab: connection, converge, report.
async fn checked(
    ctx: &Arc<Context>,
    runner: &Arc<Runner>,
    periodic: bool,
    rotation_only: bool,
) -> Result<Checked, Error> {
    let ctx = ctx.clone();
    let runner = runner.clone();
    let generation = runner.meta().generation;
    let mut status = runner.status.clone().unwrap_or_default();
    let set =
        |status: &mut RunnerStatus, type_: &str, ok: bool, reason: Reason, message: String| {
            set_condition(
                &mut status.conditions,
                condition(
                    type_,
                    ok,
                    reason,
                    message,
                    generation,
                    Time(ctx.clock.now()),
                ),
            );
        };
    let conn = match connection::for_runner(
        &ctx,
        &runner.namespace().unwrap_or_default(),
        runner.spec.connection_ref.kind,
        &runner.spec.connection_ref.name,
    )
    .await
    {
        Ok(c) => {
            set(
                &mut status,
                "ConnectionReady",
                true,
                Reason::Resolved,
                String::new(),
            );
            c
        }
        Err(e) => {
            set(
                &mut status,
                "ConnectionReady",
                false,
                e.reason(),
                e.to_string(),
            );
            set(&mut status, READY, false, e.reason(), e.to_string());
            status.observed_generation = generation;
            write_status(&ctx, &runner, &status).await?;
            warn_event(&ctx, &runner, &e).await;
            return Err(e);
        }
    };
    // New work first: a periodic check steps aside while the connection's limit has callers
    // queued (or a 429 holds everyone), and tries again once they are likely through.
    if periodic && let Some(backlog) = conn.limiter.as_ref().and_then(|l| l.backlog()) {
        // Past the queue, and spread over a fifth of the period: when periodic checks alone
        // exceed the rate limit, stepping aside must not turn into a busy loop.
        let wait = (backlog + ctx.settings.resync.mul_f64(0.05 + 0.2 * fastrand::f64()))
            .clamp(Duration::from_secs(1), ctx.settings.resync);
        ctx.metrics.pass_skipped("deferred");
        return Ok(Checked::Deferred(wait));
    }
    let mut pass = Pass {
        ctx: &ctx,
        runner: &runner,
        conn,
        status,
        details: None,
        blocked: None,
        warnings: vec![],
        rolled: false,
        rotation_only,
        restored: None,
    };
    let span = pass.log();
    let outcome = converge(&mut pass).instrument(span).await;
    let observed = match &pass.details {
        Some(d) => Some(observe_gitlab(&ctx, &pass, d).await),
        None => None,
    };
    let conn_key = pass.conn.key.clone();
    let mut status = pass.status;
    if let Err(Error::GitLab { source, .. }) = &outcome
        && matches!(
            source.kind(),
            ErrorKind::Rejected | ErrorKind::Forbidden | ErrorKind::NotFound
        )
    {
        // A project or group the ids in status name may be gone (GitLab says 404, or 400
        // "Missing/invalid project" on create): resolve the paths again on the next pass.
        status.project_ids.clear();
        status.group_id = None;
        ctx.gitlab.forget_paths(&conn_key);
    }
    status.observed_generation = generation;
    if let Some(g) = observed {
        status.gitlab = Some(g);
    }
    match (&outcome, &pass.blocked) {
        (Err(e), _) => set(&mut status, READY, false, e.reason(), e.to_string()),
        (Ok(_), Some((reason, message))) => {
            set(&mut status, READY, false, *reason, message.clone())
        }
        (Ok(_), None) => {
            let message = format!(
                "GitLab runner {} matches the spec; its token is in Secret {}",
                status.runner_id.unwrap_or_default(),
                runner.token_secret_name()
            );
            set(&mut status, READY, true, Reason::Reconciled, message);
        }
    }
    // Side conditions hold while their warning does. Consumer conditions are only re-evaluated
    // in a pass that rolled the consumers; the note check runs every pass.
    let has_consumers = runner
        .spec
        .token_secret
        .as_ref()
        .is_some_and(|s| !s.consumers.is_empty());
    for t in [
        consumers::CONSUMERS_READY,
        consumers::ROTATION_CONFLICT,
        NOTE_TRUNCATED,
    ] {
        let evaluated = pass.rolled || t == NOTE_TRUNCATED;
        match pass.warnings.iter().find(|w| w.type_ == t) {
            Some(w) => set(&mut status, t, w.status, w.reason, w.message.clone()),
            None if evaluated && t == consumers::CONSUMERS_READY && has_consumers => set(
                &mut status,
                t,
                true,
                Reason::Restarted,
                "every consumer was rolled onto the current token".into(),
            ),
            None if evaluated => status.conditions.retain(|c| c.type_ != t),
            None => {}
        }
    }
    write_status(&ctx, &runner, &status).await?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    let expires = ts(status.token_expires_at.as_deref()).map(|t| t.as_second());
    ctx.metrics.runner(
        &runner.namespace().unwrap_or_default(),
        &runner.name_any(),
        &pass.conn.key,
        ready,
        expires,
    );
    match outcome {
        Err(e) => {
            warn_event(&ctx, &runner, &e).await;
            Err(e)
        }
        Ok(()) => {
            if let Some((reason, message)) = &pass.blocked {
                let changed = runner
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                    .is_none_or(|c| c.reason != reason.as_str());
                if changed {
                    event(
                        &ctx,
                        &runner,
                        EventType::Warning,
                        *reason,
                        "Reconcile",
                        message.clone(),
                    )
                    .await;
                }
            }
            // Wake at the next token deadline if it comes before the resync.
            let policy = rotation_policy(&runner)?;
            let mut wait = ctx.resync();
            let (issued, expires) = (
                ts(status.token_issued_at.as_deref()),
                ts(status.token_expires_at.as_deref()),
            );
            if let Some((_, at)) = plan::next_rotation(&policy, issued, expires) {
                let until = at.duration_since(ctx.clock.now()).as_secs_f64().max(1.0);
                wait = wait.min(Duration::from_secs_f64(
                    until + fastrand::f64() * until.min(60.0) * 0.1,
                ));
            }
            Ok(Checked::Done(wait, ready))
        }
    }
}
