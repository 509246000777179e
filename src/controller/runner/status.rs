//! A pass's report: conditions from its outcome, the status write, metrics and the event of a
//! newly blocked Runner.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::controller::consumers;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::reasons::Reason;
use crate::crd::{READY, Runner, RunnerStatus, condition, set_condition};

use super::desired::ts;
use super::pass::{Pass, write_status};
use super::{NOTE_TRUNCATED, event};

/// Sets condition `type_` to (status, reason, message).
pub(crate) fn set(
    ctx: &Context,
    status: &mut RunnerStatus,
    generation: Option<i64>,
    type_: &str,
    (ok, reason, message): (bool, Reason, String),
) {
    let now = Time(ctx.clock.now());
    set_condition(
        &mut status.conditions,
        condition(type_, ok, reason, message, generation, now),
    );
}

/// Ready and the side conditions from the pass's outcome, then the status write and the
/// Runner's metrics. Returns whether it is Ready.
pub(crate) async fn report(
    pass: &mut Pass<'_>,
    outcome: &Result<(), Error>,
) -> Result<bool, Error> {
    let (ctx, runner) = (pass.ctx, pass.runner);
    let generation = runner.meta().generation;
    let status = &mut pass.status;
    status.observed_generation = generation;
    let ready = match (outcome, &pass.blocked) {
        (Err(e), _) => (false, e.reason(), e.to_string()),
        (Ok(_), Some((reason, message))) => (false, *reason, message.clone()),
        (Ok(_), None) => (
            true,
            Reason::Reconciled,
            format!(
                "GitLab runner {} matches the spec; its token is in Secret {}",
                status.runner_id.unwrap_or_default(),
                runner.token_secret_name()
            ),
        ),
    };
    let is_ready = ready.0;
    set(ctx, status, generation, READY, ready);
    side_conditions(ctx, runner, status, &pass.warnings, pass.rolled);
    write_status(ctx, runner, status).await?;
    let expires = ts(status.token_expires_at.as_deref()).map(|t| t.as_second());
    let ns = runner.namespace().unwrap_or_default();
    ctx.metrics
        .runner(&ns, &runner.name_any(), &pass.conn.key, is_ready, expires);
    Ok(is_ready)
}

/// Side conditions hold while their warning does. Consumer conditions are only re-evaluated
/// in a pass that rolled the consumers; the note check runs every pass.
fn side_conditions(
    ctx: &Context,
    runner: &Runner,
    status: &mut RunnerStatus,
    warnings: &[consumers::Warning],
    rolled: bool,
) {
    let generation = runner.meta().generation;
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
        let evaluated = rolled || t == NOTE_TRUNCATED;
        match warnings.iter().find(|w| w.type_ == t) {
            Some(w) => set(
                ctx,
                status,
                generation,
                t,
                (w.status, w.reason, w.message.clone()),
            ),
            None if evaluated && t == consumers::CONSUMERS_READY && has_consumers => {
                let all = "every consumer was rolled onto the current token".to_string();
                set(ctx, status, generation, t, (true, Reason::Restarted, all));
            }
            None if evaluated => status.conditions.retain(|c| c.type_ != t),
            None => {}
        }
    }
}

/// A Warning event when a Runner becomes blocked (not on every pass that finds it so).
pub(crate) async fn blocked_event(ctx: &Context, runner: &Runner, reason: Reason, message: &str) {
    let changed = runner
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_none_or(|c| c.reason != reason.as_str());
    if changed {
        let note = message.to_string();
        event(ctx, runner, EventType::Warning, reason, "Reconcile", note).await;
    }
}
