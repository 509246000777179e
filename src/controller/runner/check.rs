//! A pass that checks GitLab: the connection, the rounds (`converge`), the report.

use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use tracing::Instrument;

use crate::controller::connection;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::gitlab_clients::Resolved;
use crate::controller::plan;
use crate::controller::reasons::Reason;
use crate::crd::{READY, Runner, RunnerStatus};
use crate::gitlab::ErrorKind;

use super::converge::converge;
use super::desired::{rotation_policy, ts};
use super::observe::observe_gitlab;
use super::pass::write_status;
use super::pass::{Pass, SecretSeen};
use super::status::{blocked_event, report, set};
use super::warn_event;

/// How a pass that checked GitLab ended: when to check again, or stepped aside (a periodic
/// check while the connection's rate limit has callers queued) and when to try again.
pub(crate) enum Checked {
    /// When to check again; whether the pass ended Ready.
    Done(Duration, bool),
    Deferred(Duration),
}

/// A pass that checks GitLab: connection, converge, report.
pub(crate) async fn checked(
    ctx: &Arc<Context>,
    runner: &Arc<Runner>,
    periodic: bool,
    rotation_only: bool,
) -> Result<Checked, Error> {
    let (ctx, runner) = (&**ctx, &**runner);
    let mut status = runner.status.clone().unwrap_or_default();
    let conn = connect(ctx, runner, &mut status).await?;
    if periodic && let Some(wait) = deferral(ctx, &conn) {
        ctx.metrics.pass_skipped("deferred");
        return Ok(Checked::Deferred(wait));
    }
    let mut pass = Pass {
        ctx,
        runner,
        conn,
        status,
        details: None,
        blocked: None,
        warnings: vec![],
        rolled: false,
        rotation_only,
        restored: None,
        secret: SecretSeen::default(),
    };
    let span = pass.log();
    let outcome = converge(&mut pass).instrument(span).await;
    if let Some(d) = pass.details.clone() {
        pass.status.gitlab = Some(observe_gitlab(ctx, &pass, &d).await);
    }
    if let Err(Error::GitLab { source, .. }) = &outcome
        && matches!(
            source.kind(),
            ErrorKind::Rejected | ErrorKind::Forbidden | ErrorKind::NotFound
        )
    {
        // A project or group the ids in status name may be gone (GitLab says 404, or 400
        // "Missing/invalid project" on create): resolve the paths again on the next pass.
        pass.status.project_ids.clear();
        pass.status.group_id = None;
        ctx.gitlab.forget_paths(&pass.conn.key);
    }
    let ready = report(&mut pass, &outcome).await?;
    match outcome {
        Err(e) => {
            warn_event(ctx, runner, &e).await;
            Err(e)
        }
        Ok(()) => {
            if let Some((reason, message)) = &pass.blocked {
                blocked_event(ctx, runner, *reason, message).await;
            }
            Ok(Checked::Done(next_wake(ctx, runner, &pass.status)?, ready))
        }
    }
}

/// The Runner's connection; when it cannot be used, status says so (ConnectionReady and
/// Ready) and the pass ends.
async fn connect(
    ctx: &Context,
    runner: &Runner,
    status: &mut RunnerStatus,
) -> Result<Resolved, Error> {
    let generation = runner.meta().generation;
    match connection::of_runner(ctx, runner).await {
        Ok(c) => {
            let ok = (true, Reason::Resolved, String::new());
            set(ctx, status, generation, "ConnectionReady", ok);
            Ok(c)
        }
        Err(e) => {
            let failed = || (false, e.reason(), e.to_string());
            set(ctx, status, generation, "ConnectionReady", failed());
            set(ctx, status, generation, READY, failed());
            status.observed_generation = generation;
            write_status(ctx, runner, status).await?;
            warn_event(ctx, runner, &e).await;
            Err(e)
        }
    }
}

/// New work first: a periodic check steps aside while the connection's limit has callers
/// queued (or a 429 holds everyone), and tries again once they are likely through.
fn deferral(ctx: &Context, conn: &Resolved) -> Option<Duration> {
    let backlog = conn.limiter.as_ref().and_then(|l| l.backlog())?;
    // Past the queue, and spread over a fifth of the period: when periodic checks alone exceed
    // the rate limit, stepping aside must not turn into a busy loop.
    Some(
        (backlog + ctx.settings.resync.mul_f64(0.05 + 0.2 * fastrand::f64()))
            .clamp(Duration::from_secs(1), ctx.settings.resync),
    )
}

/// The resync, or the next token deadline if that comes first.
fn next_wake(ctx: &Context, runner: &Runner, status: &RunnerStatus) -> Result<Duration, Error> {
    let policy = rotation_policy(runner)?;
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
    Ok(wait)
}
