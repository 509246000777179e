//! One Runner: observe (Kubernetes, the Secret, GitLab), plan (pure), act, report.
//!
//! A reconcile goes `gate` (whether a pass is needed) → `check` (the connection, then the
//! rounds, then the report) → `converge` (the rounds: `observe` → `plan::plan` → `act`, until
//! GitLab matches) → `status` (conditions and the status write). `desired` turns the spec into
//! what `plan` compares with; `pass` holds the writes, each recorded first where a crash could
//! lose its effect; `cleanup` is deletion; `lane` the tenancy check. Every choice is made in
//! `controller::plan`; these modules observe and carry it out.

mod act;
mod check;
mod cleanup;
mod converge;
mod desired;
mod gate;
mod lane;
mod observe;
mod pass;
mod status;

use crate::controller::reasons::Reason;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use crate::crd::{READY, Runner};

// What the plan, import and prune commands share with the controller.
pub(crate) use desired::{Scope, desired, is_ours, rotation_policy, token_state, ts};
pub(crate) use lane::check_lane;
pub(crate) use observe::{Sight, fetch, find_predecessor, observe, resolve_ids};

use cleanup::cleanup;
use gate::apply;

use crate::crd::{FINALIZER, ROTATE_ANNOTATION};

pub(crate) const MANAGER: &str = "runner-operator";

pub(crate) const NOTE_LIMIT: usize = 1024;

pub(crate) const NOTE_TRUNCATED: &str = "NoteTruncated";

/// Entry point for the Runner controller.
pub async fn reconcile(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = runner.namespace().unwrap_or_default();
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = runner.uid().unwrap_or_default();
    let started = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, runner, |event| async {
        match event {
            Finalizer::Apply(r) => apply(r, ctx.clone()).await,
            Finalizer::Cleanup(r) => cleanup(r, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        kube::runtime::finalizer::Error::AddFinalizer(e) => Error::kube("adding the finalizer")(e),
        kube::runtime::finalizer::Error::RemoveFinalizer(e) => {
            Error::kube("removing the finalizer")(e)
        }
        other => Error::Invalid(other.to_string()),
    });
    if result.is_ok() {
        ctx.recent.succeeded(&uid);
    }
    ctx.metrics.reconciled(
        if result.is_ok() { "success" } else { "error" },
        started.elapsed(),
    );
    result
}

/// A Runner as the watch delivered it: decoded, or not (then reported on its own).
pub async fn reconcile_guarded(
    obj: Arc<DeserializeGuard<Runner>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &obj.0 {
        Ok(runner) => reconcile(Arc::new(runner.clone()), ctx).await,
        Err(invalid) => report_invalid(&obj, invalid, &ctx).await,
    }
}

pub fn error_policy_guarded(
    obj: Arc<DeserializeGuard<Runner>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    match &obj.0 {
        Ok(runner) => error_policy(Arc::new(runner.clone()), error, ctx),
        Err(_) => Action::requeue(ctx.settings.backoff_max),
    }
}

/// A Runner that does not decode: a Ready=False InvalidObject condition and a Warning event,
/// once per generation; nothing is done in GitLab, and the other Runners carry on.
pub(crate) async fn report_invalid(
    obj: &DeserializeGuard<Runner>,
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let (uid, generation) = (
        meta.uid.as_deref().unwrap_or_default(),
        meta.generation.unwrap_or_default(),
    );
    if !ctx.recent.first_report_of_invalid(uid, generation) {
        return Ok(Action::await_change());
    }
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let message = format!(
        "this Runner does not match the schema of this operator version ({}): fix the field with kubectl edit or re-apply the manifest; nothing is done in GitLab for it until then, and other Runners are not affected",
        invalid.error
    );
    tracing::warn!(namespace = %ns, name = %name, error = %invalid.error, "a Runner does not decode");
    let now = Time(ctx.clock.now());
    // Nothing happens until someone fixes the object: Stalled too, for kstatus.
    let conditions = [
        (READY, "False"),
        (crate::controller::standing::STALLED, "True"),
    ]
    .map(|(type_, status)| {
        serde_json::json!({
            "type": type_, "status": status, "reason": Reason::InvalidObject, "message": message,
            "observedGeneration": meta.generation, "lastTransitionTime": now,
        })
    });
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<Runner>(&()),
    );
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "reporting the undecodable Runner {ns}/{name}"
        )))?;
    let reference = kube::Resource::object_ref(obj, &());
    ctx.publish(
        &reference,
        EventType::Warning,
        Reason::InvalidObject,
        "Reconcile",
        message,
    )
    .await;
    Ok(Action::await_change())
}

/// Requeue policy for failures: per-object exponential backoff, GitLab's Retry-After as a floor.
pub fn error_policy(runner: Arc<Runner>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.recent.failed(&runner.uid().unwrap_or_default());
    let wait = ctx
        .backoff(n.saturating_sub(1))
        .max(error.retry_after().unwrap_or_default());
    tracing::warn!(namespace = runner.namespace().unwrap_or_default(), name = %runner.name_any(), runner_id = runner.status.as_ref().and_then(|s| s.runner_id), reason = error.reason().as_str(), error = %error, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    Action::requeue(wait)
}

pub(crate) fn now_str(ctx: &Context) -> String {
    ctx.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) async fn event(
    ctx: &Context,
    runner: &Runner,
    type_: EventType,
    reason: Reason,
    action: &str,
    note: String,
) {
    ctx.publish(&runner.object_ref(&()), type_, reason, action, note)
        .await;
}

pub(crate) async fn warn_event(ctx: &Context, runner: &Runner, e: &Error) {
    event(
        ctx,
        runner,
        EventType::Warning,
        e.reason(),
        "Reconcile",
        e.to_string(),
    )
    .await;
}

/// The Runner as the API server has it now: the watch cache can lag behind our own status
/// writes, and acting on a stale status would redo work (a second reset, a lost runner id). The
/// copy our last write returned stands in for the cache until the cache catches up; only a
/// server whose resourceVersions cannot be ordered costs a read.
pub(crate) async fn fresh(
    runner: Arc<Runner>,
    ctx: &Context,
) -> Result<Option<Arc<Runner>>, Error> {
    if let Some(newest) = ctx.recent.newest(runner.clone()) {
        return Ok(Some(newest));
    }
    let api: Api<Runner> =
        Api::namespaced(ctx.client.clone(), &runner.namespace().unwrap_or_default());
    let latest = api
        .get_opt(&runner.name_any())
        .await
        .map_err(Error::kube("reading the Runner"))?;
    Ok(latest
        .filter(|r| r.meta().uid == runner.meta().uid)
        .map(Arc::new))
}
