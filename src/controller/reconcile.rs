//! One Runner: observe (Kubernetes, the Secret, GitLab), plan (pure), act, report.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tracing::Instrument;

use super::connection::{self, Resolved};
use super::context::Context;
use super::error::Error;
use super::plan::{
    self, Desired, DesiredAttrs, GitLabState, Reason, RotationPolicy, SecretState, Step, TokenState,
};
use super::{consumers, managers, secret};
use crate::crd::{
    self, DeletionPolicy, GitLabRunnerState, READY, RegistrationStrategy, Runner, RunnerStatus,
    RunnerType, condition, set_condition,
};
use crate::gitlab::{CreateUserRunner, GitLabApi, RunnerDetails, RunnerFilter};

pub const FINALIZER: &str = "gitlab.runner-operator.dev/cleanup";
pub const ROTATE_ANNOTATION: &str = "gitlab.runner-operator.dev/rotate-token";
const MANAGER: &str = "runner-operator";
const NOTE_LIMIT: usize = 1024;
const NOTE_TRUNCATED: &str = "NoteTruncated";

/// Entry point for the Runner controller.
pub async fn reconcile(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = runner.namespace().unwrap_or_default();
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), &ns);
    let oref = ObjectRef::from_obj(&*runner);
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
        ctx.record_success(&oref);
    }
    ctx.metrics.reconciled(
        if result.is_ok() { "success" } else { "error" },
        started.elapsed(),
    );
    result
}

/// Requeue policy for failures: per-object exponential backoff, GitLab's Retry-After as a floor.
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
async fn report_invalid(
    obj: &DeserializeGuard<Runner>,
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let key = (
        meta.uid.clone().unwrap_or_default(),
        meta.generation.unwrap_or_default(),
    );
    if !ctx
        .invalid_reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key)
    {
        return Ok(Action::await_change());
    }
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let message = format!(
        "this Runner does not match the schema of this operator version ({}): fix the field with kubectl edit or re-apply the manifest; nothing is done in GitLab for it until then, and other Runners are not affected",
        invalid.error
    );
    tracing::warn!(namespace = %ns, name = %name, error = %invalid.error, "a Runner does not decode");
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": READY, "status": "False", "reason": "InvalidObject", "message": message,
        "observedGeneration": meta.generation, "lastTransitionTime": Time(ctx.clock.now()),
    }]}});
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
        "InvalidObject",
        "Reconcile",
        message,
    )
    .await;
    Ok(Action::await_change())
}

pub fn error_policy(runner: Arc<Runner>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(ObjectRef::from_obj(&*runner));
    let wait = ctx
        .backoff(n.saturating_sub(1))
        .max(error.retry_after().unwrap_or_default());
    tracing::warn!(namespace = runner.namespace().unwrap_or_default(), name = %runner.name_any(), runner_id = runner.status.as_ref().and_then(|s| s.runner_id), reason = error.reason(), error = %error, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    Action::requeue(wait)
}

/// Ownership marker kept in the runner's maintenance note.
pub fn marker(runner: &Runner) -> String {
    format!(
        "[runner-operator: managed by Runner {}/{}, uid {}]",
        runner.namespace().unwrap_or_default(),
        runner.name_any(),
        runner.meta().uid.as_deref().unwrap_or_default()
    )
}

fn carries_marker(note: Option<&str>, runner: &Runner) -> bool {
    let uid = runner.meta().uid.as_deref().unwrap_or("-");
    note.is_some_and(|n| n.contains(&format!(", uid {uid}]")))
}

/// Whether a GitLab runner is this Runner's: it carries our marker, or `spec.adopt` names it
/// and this Runner has taken it (its id is in status). An adopted runner is not marked, so
/// adopting a runner whose fields already match the spec writes nothing but the token reset.
pub(crate) fn is_ours(d: &RunnerDetails, runner: &Runner, recorded: Option<i64>) -> bool {
    carries_marker(d.maintenance_note.as_deref(), runner)
        || (runner.spec.adopt.as_ref().map(|a| a.runner_id) == Some(d.id) && recorded == Some(d.id))
}

/// The user's note as GitLab should hold it: with our marker, except on adopted runners.
fn desired_note(runner: &Runner) -> String {
    if runner.spec.adopt.is_some() {
        runner.spec.maintenance_note.clone().unwrap_or_default()
    } else {
        note_with_marker(runner)
    }
}

/// `(namespace, name, uid)` of the Runner a marker names.
pub(crate) fn marker_owner(note: Option<&str>) -> Option<(String, String, String)> {
    let rest = note?.split("[runner-operator: managed by Runner ").nth(1)?;
    let (path, rest) = rest.split_once(", uid ")?;
    let uid = rest.split(']').next()?;
    let (ns, name) = path.split_once('/')?;
    Some((ns.into(), name.into(), uid.into()))
}

/// The note without any marker of ours (and the blank line before it).
pub(crate) fn strip_marker(note: &str) -> String {
    match note.find("[runner-operator: managed by Runner ") {
        None => note.to_string(),
        Some(start) => {
            let end = note[start..]
                .find(']')
                .map_or(note.len(), |e| start + e + 1);
            let mut out = note[..start].trim_end().to_string();
            out.push_str(note[end..].trim_end());
            out
        }
    }
}

fn note_with_marker(runner: &Runner) -> String {
    let m = marker(runner);
    match runner
        .spec
        .maintenance_note
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        None => m,
        Some(note) => {
            let room = NOTE_LIMIT.saturating_sub(m.chars().count() + 2);
            let kept: String = note.chars().take(room).collect();
            format!("{kept}\n\n{m}")
        }
    }
}

fn parse_duration(field: &str, v: Option<&String>) -> Result<Option<Duration>, Error> {
    v.map(|s| {
        crd::duration::parse(s)
            .map_err(|e| Error::Invalid(format!("spec.tokenRotation.{field}: {e}")))
    })
    .transpose()
}

pub(crate) fn rotation_policy(runner: &Runner) -> Result<RotationPolicy, Error> {
    let rotation = runner.spec.token_rotation.clone().unwrap_or_default();
    let interval = parse_duration("interval", rotation.interval.as_ref())?;
    // Admission refuses shorter ones written in h/m/s; this catches the `d` form (`0d`) and
    // objects stored before the rule.
    if let Some(i) = interval
        && i < crd::runner::MIN_ROTATION_INTERVAL
    {
        return Err(Error::Invalid(format!(
            "spec.tokenRotation.interval {:?} is below the 10m floor: every rotation kills the live token and restarts the consumers; use e.g. 720h",
            rotation.interval.unwrap_or_default()
        )));
    }
    Ok(RotationPolicy {
        interval,
        before_expiry: parse_duration("beforeExpiry", rotation.before_expiry.as_ref())?,
    })
}

/// Tags as GitLab stores them: every entry split on commas and trimmed, blanks dropped (its
/// tag parser), so a spec GitLab normalises differently does not look like drift on every pass.
fn gitlab_tags(tags: &[String]) -> BTreeSet<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn desired(runner: &Runner, assigned: BTreeSet<i64>) -> Result<Desired, Error> {
    let s = &runner.spec;
    Ok(Desired {
        attrs: DesiredAttrs {
            description: s.description.clone().unwrap_or_default(),
            tags: gitlab_tags(&s.tags),
            run_untagged: s.run_untagged.unwrap_or(true),
            paused: s.paused.unwrap_or(false),
            locked: s.locked.unwrap_or(false),
            access_level: s
                .access_level
                .map(|a| a.as_str())
                .unwrap_or("not_protected")
                .into(),
            maximum_timeout: s.maximum_timeout,
            maintenance_note: desired_note(runner),
        },
        assigned,
        is_project_runner: s.runner_type == RunnerType::ProjectType,
        rotation: rotation_policy(runner)?,
        rotate_request: runner.annotations().get(ROTATE_ANNOTATION).cloned(),
        adopt: s.adopt.as_ref().map(|a| a.runner_id),
    })
}

/// The token's bookkeeping as status records it, with the Secret as observed.
pub(crate) fn token_state(status: &RunnerStatus, secret: SecretState) -> TokenState {
    TokenState {
        secret,
        issued_at: ts(status.token_issued_at.as_deref()),
        expires_at: ts(status.token_expires_at.as_deref()),
        pending: status.pending_rotation.as_deref().and_then(Reason::parse),
        handled_request: status.handled_rotate_request.clone(),
    }
}

pub(crate) fn ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

fn now_str(ctx: &Context) -> String {
    ctx.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes status when it differs (ignoring condition timestamps): no loops from our own writes.
async fn write_status(ctx: &Context, runner: &Runner, status: &RunnerStatus) -> Result<(), Error> {
    if let Some(old) = &runner.status {
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
    api.patch_status(
        &runner.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube("writing the Runner status"))?;
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// GitLab's view of the runner for status. The managers are read when due (see `managers`),
/// else kept; contactedAt moves with them, not on every pass: a live runner contacts GitLab
/// every few seconds, and copying that into status would write status (and trigger another
/// pass) at every resync. A failed read keeps what status has; it never fails the pass.
async fn observe_gitlab(
    ctx: &Context,
    pass: &Pass<'_>,
    d: &crate::gitlab::RunnerDetails,
) -> GitLabRunnerState {
    let previous = pass.status.gitlab.as_ref();
    let (managers, refreshed) = observe_managers(ctx, pass, d).await;
    let contacted_at = match previous {
        Some(p) if !refreshed && p.status == d.status => p.contacted_at.clone(),
        _ => d.contacted_at.clone(),
    };
    GitLabRunnerState {
        status: d.status.clone(),
        contacted_at,
        managers,
    }
}

/// The managers, and whether they were (re)read in this pass.
async fn observe_managers(
    ctx: &Context,
    pass: &Pass<'_>,
    d: &crate::gitlab::RunnerDetails,
) -> (Option<crate::crd::ManagersState>, bool) {
    let uid = pass.runner.uid().unwrap_or_default();
    let previous = pass.status.gitlab.as_ref();
    let kept = || previous.and_then(|p| p.managers.clone());
    let checked_ago = lock(&ctx.managers_checked).get(&uid).map(|t| t.elapsed());
    let record = || {
        lock(&ctx.managers_checked).insert(uid.clone(), tokio::time::Instant::now());
    };
    match managers::decide(
        previous,
        d.status.as_deref(),
        d.contacted_at.is_some(),
        checked_ago,
        ctx.settings.resync,
    ) {
        managers::Action::Empty => (Some(managers::none()), true),
        managers::Action::Keep => {
            if checked_ago.is_none() {
                record();
            }
            (kept(), false)
        }
        managers::Action::Fetch => match pass.gl().list_runner_managers(d.id).await {
            Ok(list) => {
                record();
                (Some(managers::summarize(&list)), true)
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read the runner's managers; keeping the last summary");
                (kept(), false)
            }
        },
    }
}

async fn event(
    ctx: &Context,
    runner: &Runner,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    ctx.publish(&runner.object_ref(&()), type_, reason, action, note)
        .await;
}

async fn warn_event(ctx: &Context, runner: &Runner, e: &Error) {
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

struct Pass<'a> {
    ctx: &'a Context,
    runner: &'a Runner,
    conn: Resolved,
    status: RunnerStatus,
    details: Option<RunnerDetails>,
    blocked: Option<(&'static str, String)>,
    warnings: Vec<consumers::Warning>,
    /// Consumers were rolled in this pass (their conditions are fresh).
    rolled: bool,
}

impl Pass<'_> {
    fn gl(&self) -> &dyn GitLabApi {
        &*self.conn.client
    }

    fn log(&self) -> tracing::Span {
        tracing::info_span!("runner", namespace = %self.runner.namespace().unwrap_or_default(), name = %self.runner.name_any(), runner_id = self.status.runner_id)
    }

    async fn save(&self) -> Result<(), Error> {
        write_status(self.ctx, self.runner, &self.status).await
    }

    /// Writes the token Secret as a server dry run with a placeholder token: whatever the API
    /// server would refuse (a bad name, labels, quota, RBAC, a webhook) is found before GitLab
    /// issues a token that would then be lost, and retried into a reset loop.
    async fn check_secret_writable(&self) -> Result<(), Error> {
        let placeholder = SecretString::from("dry-run");
        let s = secret::build(
            self.runner,
            &secret::TokenData {
                token: &placeholder,
                runner_id: self.status.runner_id.unwrap_or(0),
                url: &self.conn.url,
                issued_at: &now_str(self.ctx),
                expires_at: None,
            },
        );
        let name = self.runner.token_secret_name();
        let api: Api<Secret> = Api::namespaced(
            self.ctx.client.clone(),
            &self.runner.namespace().unwrap_or_default(),
        );
        let mut pp = PatchParams::apply(MANAGER).force();
        pp.dry_run = true;
        api.patch(&name, &pp, &Patch::Apply(&s))
            .await
            .map(|_| ())
            .map_err(|e| match &e {
                // The API server refuses the Secret itself: only the spec can fix that.
                kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Error::Invalid(format!(
                    "the token Secret {name} could not be written ({e}); nothing was done in GitLab: fix spec.tokenSecret"
                )),
                _ => Error::kube(format!(
                    "checking that the token Secret {name} can be written (nothing was done in GitLab)"
                ))(e),
            })
    }

    async fn write_secret(
        &mut self,
        runner_id: i64,
        token: &SecretString,
        expires_at: Option<&str>,
    ) -> Result<(), Error> {
        let issued = now_str(self.ctx);
        let s = secret::build(
            self.runner,
            &secret::TokenData {
                token,
                runner_id,
                url: &self.conn.url,
                issued_at: &issued,
                expires_at,
            },
        );
        let name = self.runner.token_secret_name();
        let api: Api<Secret> = Api::namespaced(
            self.ctx.client.clone(),
            &self.runner.namespace().unwrap_or_default(),
        );
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&s),
        )
        .await
        .map_err(Error::kube(format!("writing the token Secret {name}")))?;
        self.status.token_secret_name = Some(name);
        self.status.token_hash = Some(secret::token_hash(token.expose_secret()));
        self.status.token_issued_at = Some(issued);
        self.status.token_expires_at = expires_at.map(str::to_string);
        let generation = format!(
            "{}/{}",
            self.status.token_issued_at.clone().unwrap_or_default(),
            self.status.token_hash.clone().unwrap_or_default()
        );
        let (restarted, warnings) = consumers::roll(self.ctx, self.runner, &generation).await?;
        for w in &warnings {
            // Once per new token: the condition stays, the event says when it happened.
            let reason = if w.type_ == consumers::ROTATION_CONFLICT {
                consumers::ROTATION_CONFLICT
            } else {
                w.reason
            };
            event(
                self.ctx,
                self.runner,
                EventType::Warning,
                reason,
                "RestartConsumers",
                w.message.clone(),
            )
            .await;
        }
        self.status.restarted_consumers = restarted;
        self.warnings.extend(warnings);
        self.rolled = true;
        Ok(())
    }

    async fn create(
        &mut self,
        owner_project: Option<i64>,
        owner_group: Option<i64>,
        desired: &Desired,
        recreated: bool,
    ) -> Result<(), Error> {
        let spec = &self.runner.spec;
        let strategy = spec
            .registration
            .as_ref()
            .map(|r| r.strategy)
            .unwrap_or_default();
        self.check_secret_writable().await?;
        // Recorded first: a crash after GitLab created the runner makes the next pass look for
        // it (by its marker) instead of registering a second one.
        if self.status.creation_started.is_none() {
            self.status.creation_started = Some(now_str(self.ctx));
            self.save().await?;
        }
        let reg = match strategy {
            RegistrationStrategy::UserRunner => {
                let req = CreateUserRunner {
                    runner_type: spec.runner_type.as_str().into(),
                    group_id: owner_group,
                    project_id: owner_project,
                    attributes: desired.attrs.all(),
                };
                self.gl()
                    .create_user_runner(&req)
                    .await
                    .map_err(Error::gitlab("creating the runner with POST /user/runners"))?
            }
            RegistrationStrategy::RegistrationToken => {
                let r = spec.registration.as_ref().and_then(|r| r.registration_token_secret_ref.clone()).ok_or_else(|| Error::Invalid("registration strategy RegistrationToken needs registrationTokenSecretRef".into()))?;
                let ns = self.runner.namespace().unwrap_or_default();
                let token =
                    read_secret_key(self.ctx, &ns, &r.name, r.key.as_deref().unwrap_or("token"))
                        .await?;
                self.gl().register_runner(&SecretString::from(token), &desired.attrs.all()).await.map_err(|e| {
                    if matches!(e.status(), Some(410)) {
                        Error::Invalid(format!("GitLab refused the registration token (410: {}): registration tokens are disabled on this instance (the default since GitLab 17.0); use spec.registration.strategy: UserRunner, or have an administrator re-enable them", e.message().unwrap_or_default()))
                    } else if matches!(e.status(), Some(403)) {
                        Error::Invalid(format!("GitLab refused the registration token (403: {}): check the Secret {}/{} holds a valid project, group or instance registration token, or use strategy UserRunner", e.message().unwrap_or_default(), ns, r.name))
                    } else {
                        Error::gitlab("registering the runner with POST /runners")(e)
                    }
                })?
            }
        };
        // The token exists nowhere else: into the Secret first, then the id into status.
        self.write_secret(reg.id, &reg.token, reg.token_expires_at.as_deref())
            .await?;
        self.status.runner_id = Some(reg.id);
        self.status.creation_started = None;
        let reason = if recreated {
            Reason::Recovered
        } else {
            Reason::Created
        };
        self.ctx
            .metrics
            .rotations
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.as_str().into(),
            })
            .inc();
        self.status.last_rotation_reason = Some(
            if recreated {
                Reason::Recovered
            } else {
                Reason::Created
            }
            .as_str()
            .into(),
        );
        self.status.pending_rotation = None;
        self.save().await?;
        let (reason, note) = if recreated {
            (
                "Recreated",
                format!(
                    "the GitLab runner was deleted outside the operator; registered a new one (id {}) and wrote its token",
                    reg.id
                ),
            )
        } else {
            (
                "Created",
                format!(
                    "registered GitLab runner {} and wrote its token to Secret {}",
                    reg.id,
                    self.runner.token_secret_name()
                ),
            )
        };
        event(
            self.ctx,
            self.runner,
            EventType::Normal,
            reason,
            "Create",
            note,
        )
        .await;
        Ok(())
    }

    async fn rotate(&mut self, id: i64, reason: Reason) -> Result<(), Error> {
        self.check_secret_writable().await?;
        self.ctx
            .metrics
            .rotations
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.as_str().into(),
            })
            .inc();
        // Recorded before calling GitLab: a crash after the reset makes the next pass reset again.
        self.status.pending_rotation = Some(reason.as_str().into());
        self.save().await?;
        let reset = self
            .gl()
            .reset_runner_token(id)
            .await
            .map_err(Error::gitlab("resetting the runner token"))?;
        self.write_secret(id, &reset.token, reset.token_expires_at.as_deref())
            .await?;
        self.status.pending_rotation = None;
        self.status.last_rotation_reason = Some(reason.as_str().into());
        if reason == Reason::Requested || self.runner.annotations().contains_key(ROTATE_ANNOTATION)
        {
            self.status.handled_rotate_request =
                self.runner.annotations().get(ROTATE_ANNOTATION).cloned();
        }
        self.save().await?;
        let why = match reason {
            Reason::Interval => "the rotation interval elapsed",
            Reason::Expiry => "the token nears its expiry",
            Reason::Requested => "requested through the rotate-token annotation",
            Reason::Recovered => "the Secret was missing, edited or not yet written",
            Reason::Adopted => "the runner was adopted",
            Reason::Created => "created",
        };
        let expiry = reset
            .token_expires_at
            .as_deref()
            .map(|e| format!("; it expires {e}"))
            .unwrap_or_default();
        event(
            self.ctx,
            self.runner,
            EventType::Normal,
            "TokenRotated",
            "RotateToken",
            format!(
                "reset the token of runner {id} ({why}) and wrote the new one to Secret {}{expiry}",
                self.runner.token_secret_name()
            ),
        )
        .await;
        Ok(())
    }
}

async fn read_secret_key(ctx: &Context, ns: &str, name: &str, key: &str) -> Result<String, Error> {
    let s = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading Secret {ns}/{name}")))?;
    s.and_then(|s| s.data)
        .and_then(|d| {
            d.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Invalid(format!("Secret {ns}/{name} has no non-empty key {key:?}")))
}

/// The cache of resolved paths a pass may use: the context and the connection's key.
type PathCache<'a> = Option<(&'a Context, &'a str)>;

async fn resolve_project(
    cache: PathCache<'_>,
    gl: &dyn GitLabApi,
    p: &str,
    what: &str,
) -> Result<i64, Error> {
    let lookup = || async {
        gl.get_project(p).await.map(|p| p.id).map_err(|e| {
        if e.is_not_found() {
            let fix = if what == "project" {
                "if it was deleted, GitLab moved the runner to its oldest other project (or deleted it): recreate this Runner with spec.project set to an existing project, or delete the Runner"
            } else {
                "remove it from spec.assignedProjects, or fix the path"
            };
            Error::Invalid(format!("{what} {p:?} does not exist or the token's user cannot see it (GitLab: 404 Project Not Found): {fix}"))
        } else {
            Error::gitlab(format!("looking up {what} {p:?}"))(e)
        }
        })
    };
    match cache {
        Some((ctx, key)) => ctx.resolve_path(key, "project", p, lookup).await,
        None => lookup().await,
    }
}

/// Owner project, owner group, extra projects — from status when the spec did not change.
pub(crate) async fn resolve_ids(
    cache: PathCache<'_>,
    runner: &Runner,
    status: &RunnerStatus,
    gl: &dyn GitLabApi,
) -> Result<(Option<i64>, Option<i64>, BTreeSet<i64>), Error> {
    let spec = &runner.spec;
    let current = status.observed_generation.is_some()
        && status.observed_generation == runner.meta().generation;
    match spec.runner_type {
        RunnerType::ProjectType => {
            if current && !status.project_ids.is_empty() {
                return Ok((
                    status.project_ids.first().copied(),
                    None,
                    status.project_ids.iter().skip(1).copied().collect(),
                ));
            }
            let owner = resolve_project(
                cache,
                gl,
                spec.project.as_deref().unwrap_or_default(),
                "project",
            )
            .await?;
            let mut assigned = BTreeSet::new();
            for p in &spec.assigned_projects {
                let id = resolve_project(cache, gl, p, "assigned project").await?;
                if id != owner {
                    assigned.insert(id);
                }
            }
            Ok((Some(owner), None, assigned))
        }
        RunnerType::GroupType => {
            if current && status.group_id.is_some() {
                return Ok((None, status.group_id, BTreeSet::new()));
            }
            let g = spec.group.as_deref().unwrap_or_default();
            let lookup = || async {
                gl.get_group(g).await.map(|g| g.id).map_err(|e| {
                if e.is_not_found() {
                    Error::Invalid(format!("group {g:?} does not exist or the token's user cannot see it (GitLab: 404 Group Not Found)"))
                } else {
                    Error::gitlab(format!("looking up group {g:?}"))(e)
                }
                })
            };
            let id = match cache {
                Some((ctx, key)) => ctx.resolve_path(key, "group", g, lookup).await?,
                None => lookup().await?,
            };
            Ok((None, Some(id), BTreeSet::new()))
        }
        RunnerType::InstanceType => Ok((None, None, BTreeSet::new())),
    }
}

/// Finds the runner this object created when a crash or a lost answer kept its id from us: in
/// the same scope, carrying our marker (which names the Runner's uid). Nothing the user can
/// edit between the lost create and this search (description, tags…) decides whether a runner
/// is ours — `description` only orders the search; runners created well before `started` are
/// skipped when GitLab says when they were created.
async fn find_marked(
    ctx: &Context,
    gl: &dyn GitLabApi,
    runner: &Runner,
    owner_project: Option<i64>,
    owner_group: Option<i64>,
    started: Option<&str>,
    description: &str,
) -> Result<Option<RunnerDetails>, Error> {
    let filter = RunnerFilter {
        runner_type: Some(runner.spec.runner_type.as_str().into()),
        ..Default::default()
    };
    let list = match (runner.spec.runner_type, owner_project, owner_group) {
        (RunnerType::ProjectType, Some(p), _) => {
            gl.list_project_runners(&p.to_string(), &filter).await
        }
        (RunnerType::GroupType, _, Some(g)) => gl.list_group_runners(&g.to_string(), &filter).await,
        (RunnerType::InstanceType, _, _) => gl.list_all_runners(&filter).await,
        _ => return Ok(None),
    }
    .map_err(Error::gitlab(
        "looking for a runner this Runner created earlier",
    ))?;
    // Ten minutes of slack for clock skew between the cluster and GitLab.
    let not_before = started
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| t.as_second() - 600);
    let mut candidates: Vec<_> = list
        .iter()
        .filter(|r| r.runner_type == runner.spec.runner_type.as_str())
        .filter(|r| {
            let created = r
                .created_at
                .as_deref()
                .and_then(|c| c.parse::<Timestamp>().ok());
            match (created, not_before) {
                (Some(c), Some(nb)) => c.as_second() >= nb,
                _ => true,
            }
        })
        .collect();
    // Most likely first, so the usual search costs one GET even among many runners of one
    // project: the description we would send now (it rarely changed in between), then the
    // creation time closest to the write-ahead record, then the newest.
    let started_at = started
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| t.as_second());
    let created = |r: &crate::gitlab::Runner| {
        r.created_at
            .as_deref()
            .and_then(|c| c.parse::<Timestamp>().ok())
            .map(|t| t.as_second())
    };
    candidates.sort_by_key(|r| {
        (
            r.description.as_deref().unwrap_or("") != description,
            match (created(r), started_at) {
                (Some(c), Some(s)) => (c - s).abs(),
                _ => i64::MAX,
            },
            std::cmp::Reverse(r.id),
        )
    });
    let uid = runner.meta().uid.clone().unwrap_or_default();
    for candidate in candidates {
        let known = ctx
            .marker_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&candidate.id)
            .cloned();
        if matches!(&known, Some(owner) if owner.as_deref() != Some(uid.as_str())) {
            continue;
        }
        // Gone since the list (deleted meanwhile): not ours to find.
        let Some(details) = fetch(gl, candidate.id).await? else {
            continue;
        };
        let owner = marker_owner(details.maintenance_note.as_deref()).map(|(_, _, u)| u);
        ctx.marker_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(candidate.id, owner);
        if carries_marker(details.maintenance_note.as_deref(), runner) {
            return Ok(Some(details));
        }
    }
    Ok(None)
}

pub(crate) async fn fetch(gl: &dyn GitLabApi, id: i64) -> Result<Option<RunnerDetails>, Error> {
    match gl.get_runner(id).await {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::gitlab(format!("reading runner {id}"))(e)),
    }
}

/// The Runner as the API server has it now: the watch cache can lag behind our own status
/// writes, and acting on a stale status would redo work (a second reset, a lost runner id).
async fn fresh(runner: Arc<Runner>, ctx: &Context) -> Result<Option<Arc<Runner>>, Error> {
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

async fn apply(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(runner) = fresh(runner, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let generation = runner.meta().generation;
    let mut status = runner.status.clone().unwrap_or_default();
    let set = |status: &mut RunnerStatus, type_: &str, ok: bool, reason: &str, message: String| {
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
                "Resolved",
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
    let mut pass = Pass {
        ctx: &ctx,
        runner: &runner,
        conn,
        status,
        details: None,
        blocked: None,
        warnings: vec![],
        rolled: false,
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
        && matches!(source.status(), Some(400 | 403 | 404))
    {
        // A project or group the ids in status name may be gone (GitLab says 404, or 400
        // "Missing/invalid project" on create): resolve the paths again on the next pass.
        status.project_ids.clear();
        status.group_id = None;
        ctx.forget_paths(&conn_key);
    }
    status.observed_generation = generation;
    if let Some(g) = observed {
        status.gitlab = Some(g);
    }
    match (&outcome, &pass.blocked) {
        (Err(e), _) => set(&mut status, READY, false, e.reason(), e.to_string()),
        (Ok(_), Some((reason, message))) => set(&mut status, READY, false, reason, message.clone()),
        (Ok(_), None) => {
            let message = format!(
                "GitLab runner {} matches the spec; its token is in Secret {}",
                status.runner_id.unwrap_or_default(),
                runner.token_secret_name()
            );
            set(&mut status, READY, true, "Reconciled", message);
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
                "Restarted",
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
                    .is_none_or(|c| c.reason != *reason);
                if changed {
                    event(
                        &ctx,
                        &runner,
                        EventType::Warning,
                        reason,
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
            Ok(Action::requeue(wait))
        }
    }
}

/// Observe → plan → act until GitLab matches (at most a few rounds).
async fn converge(pass: &mut Pass<'_>) -> Result<(), Error> {
    let runner = pass.runner;
    let ctx = pass.ctx;
    let (owner_project, owner_group, assigned) =
        resolve_ids(Some((ctx, &pass.conn.key)), runner, &pass.status, pass.gl()).await?;
    pass.status.project_ids = owner_project
        .into_iter()
        .chain(assigned.iter().copied())
        .collect();
    pass.status.group_id = owner_group;
    let desired = desired(runner, assigned)?;
    if runner.spec.adopt.is_none()
        && runner
            .spec
            .maintenance_note
            .as_ref()
            .is_some_and(|n| n.chars().count() + marker(runner).chars().count() + 2 > NOTE_LIMIT)
    {
        pass.warnings.push(consumers::Warning {
            type_: NOTE_TRUNCATED,
            status: true,
            reason: "MarkerNeedsRoom",
            message:
                "maintenanceNote was shortened in GitLab to leave room for the ownership marker"
                    .into(),
        });
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &runner.namespace().unwrap_or_default());
    let drift_possible =
        runner.status.as_ref().and_then(|s| s.observed_generation) == runner.meta().generation;
    for _round in 0..4 {
        let secret_obj = secrets
            .get_opt(&runner.token_secret_name())
            .await
            .map_err(Error::kube("reading the token Secret"))?;
        let secret_state = secret::observe(
            secret_obj.as_ref(),
            runner,
            pass.status.token_hash.as_deref(),
        );
        let known_id = pass.status.runner_id.or_else(|| {
            secret_obj
                .as_ref()
                .filter(|_| secret_state != SecretState::Foreign)
                .and_then(secret::runner_id)
        });
        let recorded = pass.status.runner_id;
        let gitlab = match known_id {
            Some(id) => match fetch(pass.gl(), id).await? {
                Some(d) if is_ours(&d, runner, recorded) => GitLabState::Present(Box::new(d)),
                Some(d) => GitLabState::NotOurs(Box::new(d)),
                None => GitLabState::Gone,
            },
            None => match desired.adopt {
                Some(id) => match fetch(pass.gl(), id).await? {
                    Some(d) if is_ours(&d, runner, recorded) => GitLabState::Present(Box::new(d)),
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
                None => GitLabState::Unknown,
            },
        };
        if let GitLabState::Present(d) | GitLabState::NotOurs(d) = &gitlab {
            pass.details = Some((**d).clone());
        }
        if let GitLabState::Present(d) = &gitlab {
            // Known from the Secret after a crash before the status write: record it now.
            pass.status.runner_id = Some(d.id);
            // GitLab moves a runner to its oldest other project when its owner project is
            // deleted: that is no drift to revert, and the spec cannot be met as written.
            if let (Some(want), Some(owner)) = (owner_project, d.projects.first())
                && owner.id != want
            {
                pass.status.project_ids.clear();
                ctx.forget_paths(&pass.conn.key);
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
        let id = match &gitlab {
            GitLabState::Present(d) | GitLabState::NotOurs(d) => Some(d.id),
            _ => None,
        };
        for step in steps {
            tracing::debug!(namespace = %runner.namespace().unwrap_or_default(), name = %runner.name_any(), runner_id = id, ?step, "acting");
            match step {
                Step::Create { recreated } => {
                    if recreated {
                        pass.status.runner_id = None;
                    }
                    pass.create(owner_project, owner_group, &desired, recreated)
                        .await?;
                }
                Step::Adopt(target) => adopt(pass, target, &desired, &gitlab).await?,
                Step::Update(attrs) => {
                    let rid = id.unwrap_or_default();
                    let changes = plan::describe_changes(pass.details.as_ref(), &attrs);
                    let d = pass
                        .gl()
                        .update_runner(rid, &attrs)
                        .await
                        .map_err(Error::gitlab(format!("updating runner {rid}")))?;
                    pass.details = Some(d);
                    let (t, reason, note) = if drift_possible && attrs.locked.is_none() {
                        (
                            EventType::Warning,
                            "DriftReverted",
                            format!(
                                "runner {rid} was changed outside the operator; restored {changes}"
                            ),
                        )
                    } else {
                        (
                            EventType::Normal,
                            "Updated",
                            format!("updated runner {rid}: {changes}"),
                        )
                    };
                    event(ctx, runner, t, reason, "Update", note).await;
                }
                Step::Assign(project) => {
                    let rid = id.unwrap_or_default();
                    match pass.gl().assign_runner(&project.to_string(), rid).await {
                        Ok(_) => {}
                        Err(e)
                            if e.status() == Some(400)
                                && e.message()
                                    .is_some_and(|m| m.contains("already been taken")) => {}
                        Err(e) if e.is_not_found() => {
                            // The project is gone (or hidden): resolve the spec's paths again on
                            // the next pass instead of trusting the ids recorded in status.
                            pass.status.project_ids.clear();
                            ctx.forget_paths(&pass.conn.key);
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
                    event(
                        ctx,
                        runner,
                        EventType::Normal,
                        "Assigned",
                        "Assign",
                        format!("assigned runner {rid} to project {project}"),
                    )
                    .await;
                }
                Step::Unassign(project) => {
                    let rid = id.unwrap_or_default();
                    match pass.gl().unassign_runner(&project.to_string(), rid).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            return Err(Error::gitlab(format!(
                                "unassigning runner {rid} from project {project}"
                            ))(e));
                        }
                    }
                    event(ctx, runner, EventType::Normal, "Unassigned", "Unassign", format!("unassigned runner {rid} from project {project} (not in spec.assignedProjects)")).await;
                }
                Step::RotateToken(reason) => {
                    let rid = id.unwrap_or_default();
                    pass.rotate(rid, reason).await?;
                    if reason == Reason::Adopted {
                        event(ctx, runner, EventType::Warning, "Adopted", "Adopt", format!("took over GitLab runner {rid}; its previous token was reset and no longer works")).await;
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
    }
    // Ready only from what was observed after acting: changes that did not stick are no match.
    pass.blocked = Some((
        "NotConverged",
        "GitLab did not reach the spec after four rounds of changes (another writer may be undoing them); retrying".into(),
    ));
    Ok(())
}

async fn adopt(
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
        && let Some((ns, name, owner_uid)) = marker_owner(d.maintenance_note.as_deref())
    {
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
            "RunnerClaimed",
            format!(
                "GitLab runner {target} is managed by Runner {ns}/{name}; it is not adopted. Delete that Runner with deletionPolicy: Orphan first"
            ),
        ));
        return Ok(());
    }
    // Recorded before any write: a crash from here on finds the runner ours (spec.adopt and
    // status agree) with its reset still pending.
    pass.status.runner_id = Some(target);
    pass.status.pending_rotation = Some(Reason::Adopted.as_str().into());
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
                "AdoptionChangesField",
                &format!("Adopt{action}"),
                format!("adopting GitLab runner {target} changes {}", change.text()),
            )
            .await;
        }
    }
    Ok(())
}

async fn cleanup(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(runner) = fresh(runner, &ctx).await? else {
        return Ok(Action::await_change());
    };
    ctx.metrics
        .forget(&runner.namespace().unwrap_or_default(), &runner.name_any());
    lock(&ctx.managers_checked).remove(&runner.uid().unwrap_or_default());
    if runner.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Orphan {
        let id = runner.status.as_ref().and_then(|s| s.runner_id);
        event(
            &ctx,
            &runner,
            EventType::Normal,
            "Orphaned",
            "Delete",
            format!(
                "deletionPolicy Orphan: GitLab runner {} is left registered",
                id.map(|i| i.to_string()).unwrap_or_else(|| "(none)".into())
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    let ns = runner.namespace().unwrap_or_default();
    let conn = match connection::for_runner(
        &ctx,
        &ns,
        runner.spec.connection_ref.kind,
        &runner.spec.connection_ref.name,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            return Err(deletion_blocked(&ctx, &runner, format!("{e}; fix the connection")).await?);
        }
    };
    match delete_in_gitlab(&ctx, &runner, &*conn.client).await {
        // GitLab refuses the connection's token: only a person can fix that.
        Err(Error::GitLab { action, source }) if matches!(source.status(), Some(401 | 403)) => {
            let fix = if source.status() == Some(401) {
                "the connection's access token is revoked, expired or wrong: replace it in its Secret"
            } else {
                "the connection's access token may not delete this runner: give its user Maintainer (project) or Owner (group) rights, or an admin token for instance runners"
            };
            Err(deletion_blocked(&ctx, &runner, format!("{action}: {source}; {fix}")).await?)
        }
        other => other,
    }
}

/// The Runner's deletion waits on something only a person can fix: a DeletionBlocked condition
/// and Warning event naming it and the way out. Returns the error to back off with.
async fn deletion_blocked(ctx: &Context, runner: &Runner, cause: String) -> Result<Error, Error> {
    let e = Error::Connection(format!(
        "cannot delete the GitLab runner: {cause}. To release this Runner without touching GitLab, set spec.deletionPolicy: Orphan"
    ));
    let mut status = runner.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            false,
            "DeletionBlocked",
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
        "DeletionBlocked",
        "Delete",
        e.to_string(),
    )
    .await;
    Ok(e)
}

/// Removes the runner from GitLab (unassigning it from other projects first when GitLab
/// insists), if it is ours.
async fn delete_in_gitlab(
    ctx: &Context,
    runner: &Runner,
    gl: &dyn GitLabApi,
) -> Result<Action, Error> {
    let ns = runner.namespace().unwrap_or_default();
    let status = runner.status.clone().unwrap_or_default();
    let secret_id = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&runner.token_secret_name())
        .await
        .ok()
        .flatten()
        .filter(|s| secret::observe(Some(s), runner, None) != SecretState::Foreign)
        .and_then(|s| secret::runner_id(&s));
    let found = match status.runner_id.or(secret_id) {
        Some(id) => fetch(gl, id).await?,
        None if status.creation_started.is_none() => None,
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
                status.creation_started.as_deref(),
                runner.spec.description.as_deref().unwrap_or(""),
            )
            .await?
        }
    };
    let Some(details) = found else {
        return Ok(Action::await_change());
    };
    let id = details.id;
    if !is_ours(&details, runner, status.runner_id) {
        event(
            ctx,
            runner,
            EventType::Warning,
            "NotDeleted",
            "Delete",
            format!("GitLab runner {id} does not carry this Runner's marker and is not the one it adopted; it is left in place"),
        )
        .await;
        return Ok(Action::await_change());
    }
    match gl.delete_runner(id).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e)
            if e.status() == Some(403)
                && e.message()
                    .is_some_and(|m| m.contains("more than one project")) =>
        {
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
    event(
        ctx,
        runner,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!("deleted GitLab runner {id}"),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(note: Option<&str>) -> Runner {
        let mut r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": "ci", "uid": "u-1"}, "spec": {"connectionRef": {"name": "g"}, "runnerType": "instance_type"}})).unwrap();
        r.spec.maintenance_note = note.map(str::to_string);
        r
    }

    #[test]
    fn tags_compare_as_gitlab_stores_them() {
        let spec = vec![
            " linux".to_string(),
            "docker,arm64 ".into(),
            ",".into(),
            "linux".into(),
        ];
        assert_eq!(
            gitlab_tags(&spec),
            ["arm64", "docker", "linux"].map(String::from).into()
        );
    }

    #[test]
    fn marker_round_trip() {
        let r = runner(Some("owned by team a"));
        let note = note_with_marker(&r);
        assert!(
            note.starts_with(
                "owned by team a\n\n[runner-operator: managed by Runner ci/r, uid u-1]"
            )
        );
        assert!(carries_marker(Some(&note), &r));
        assert_eq!(
            marker_owner(Some(&note)),
            Some(("ci".into(), "r".into(), "u-1".into()))
        );
        let mut other = runner(None);
        other.metadata.uid = Some("u-2".into());
        assert!(!carries_marker(Some(&note), &other));
        assert!(!carries_marker(None, &r));
    }

    #[test]
    fn markers_are_stripped_for_import() {
        let r = runner(Some("Owned by the platform team"));
        assert_eq!(
            strip_marker(&note_with_marker(&r)),
            "Owned by the platform team"
        );
        assert_eq!(strip_marker(&note_with_marker(&runner(None))), "");
        assert_eq!(strip_marker("plain"), "plain");
    }

    #[test]
    fn long_notes_leave_room_for_the_marker() {
        let r = runner(Some(&"x".repeat(1024)));
        let note = note_with_marker(&r);
        assert_eq!(note.chars().count(), NOTE_LIMIT);
        assert!(carries_marker(Some(&note), &r));
    }
}
