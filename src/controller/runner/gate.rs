//! The gate before a pass: whether anything a pass depends on changed since the last one
//! (or the resync or a token deadline is due), so that unchanged Runners cost nothing.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::{plan, recent};
use crate::crd::{self, READY, Runner};

use super::check::{Checked, checked};
use super::desired::{rotation_policy, ts};
use super::{ROTATE_ANNOTATION, fresh};

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
    remember_pass(&ctx, &runner, &outcome, &inputs);
    outcome.map(|c| match c {
        Checked::Done(wait, _) | Checked::Deferred(wait) => Action::requeue(wait),
    })
}

/// What the next gate compares with: the pass's inputs and when it is due again (nothing
/// after a failed pass, which always runs again).
fn remember_pass(
    ctx: &Context,
    runner: &Runner,
    outcome: &Result<Checked, Error>,
    inputs: &Option<(Option<i64>, Option<String>)>,
) {
    let uid = runner.uid().unwrap_or_default();
    match (outcome, inputs) {
        (Ok(Checked::Done(wait, ready)), Some((conn_generation, cached_secret))) => {
            // What the next trigger will see: our own Secret write, if any, is the version
            // the cache is about to hold.
            let secret = ctx
                .recent
                .secret_version(&uid)
                .map(|(v, _)| v)
                .or_else(|| cached_secret.clone());
            let fp = recent::fingerprint(runner, *conn_generation, secret.as_deref());
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
