//! One pass's writes: the Secret, creation, token resets — each recorded in status first
//! where a crash could otherwise lose its effect.

use crate::controller::reasons::Reason;
use crate::gitlab::ErrorKind;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::gitlab_clients::Resolved;
use crate::controller::plan::Desired;
use crate::controller::reasons::RotationReason;
use crate::controller::{consumers, secret};
use crate::crd::{RegistrationStrategy, Runner, RunnerStatus};
use crate::gitlab::{CreateUserRunner, GitLabApi, RunnerDetails, RunnerId, RunnerRegistration};

use super::{MANAGER, ROTATE_ANNOTATION, event, now_str};

pub(crate) struct Pass<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) runner: &'a Runner,
    pub(crate) conn: Resolved,
    pub(crate) status: RunnerStatus,
    pub(crate) details: Option<RunnerDetails>,
    pub(crate) blocked: Option<(Reason, String)>,
    pub(crate) warnings: Vec<consumers::Warning>,
    /// Consumers were rolled in this pass (their conditions are fresh).
    pub(crate) rolled: bool,
    /// Only the rotate-token request changed since a check that ended Ready.
    pub(crate) rotation_only: bool,
    /// A restored token Secret's token GitLab accepts (observed in this round).
    pub(crate) restored: Option<secret::Restored>,
    /// What this pass knows of the token Secret's existence.
    pub(crate) secret: SecretSeen,
}

/// The token Secret as far as a create needs to know.
#[derive(Default)]
pub(crate) struct SecretSeen {
    /// No Secret of that name was read, and none is ours in the cache: assumed absent (a
    /// create's write-ahead Secret then proves it, or finds someone else's).
    pub(crate) assumed_absent: bool,
    /// No Secret of that name exists (read, or assumed).
    pub(crate) absent: bool,
    /// Ours, written ahead of a create that started then: no token yet.
    pub(crate) creation_started: Option<String>,
    /// The write-ahead Secret found the name taken: read it before anything else.
    pub(crate) taken: bool,
}

/// A token Secret write that failed before anything was done in GitLab: the API server refusing
/// the Secret itself is the spec's to fix; anything else is retried.
fn refused_before_gitlab(name: &str, doing: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Error::Invalid(format!(
            "the token Secret {name} could not be written ({e}); nothing was done in GitLab: fix spec.tokenSecret"
        )),
        _ => Error::kube(format!("{doing} (nothing was done in GitLab)"))(e),
    }
}

impl Pass<'_> {
    pub(crate) fn gl(&self) -> &dyn GitLabApi {
        &*self.conn.client
    }

    pub(crate) fn log(&self) -> tracing::Span {
        tracing::info_span!("runner", namespace = %self.runner.namespace().unwrap_or_default(), name = %self.runner.name_any(), runner_id = self.status.runner_id)
    }

    pub(crate) async fn save(&self) -> Result<(), Error> {
        write_status(self.ctx, self.runner, &self.status).await
    }

    /// Writes the token Secret as a server dry run with a placeholder token: whatever the API
    /// server would refuse (a bad name, labels, quota, RBAC, a webhook) is found before GitLab
    /// issues a token that would then be lost, and retried into a reset loop.
    pub(crate) async fn check_secret_writable(&self) -> Result<(), Error> {
        let placeholder = SecretString::from("dry-run");
        let s = secret::build(
            self.runner,
            &secret::TokenData {
                token: &placeholder,
                runner_id: RunnerId(self.status.runner_id.unwrap_or(0)),
                url: &self.conn.url,
                issued_at: &now_str(self.ctx),
                expires_at: None,
            },
        );
        let name = self.runner.token_secret_name();
        let api = self.secrets();
        let mut pp = PatchParams::apply(MANAGER).force();
        pp.dry_run = true;
        api.patch(&name, &pp, &Patch::Apply(&s))
            .await
            .map(|_| ())
            .map_err(|e| {
                refused_before_gitlab(
                    &name,
                    &format!("checking that the token Secret {name} can be written"),
                    e,
                )
            })
    }

    /// The token Secrets of this Runner's namespace.
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(
            self.ctx.client.clone(),
            &self.runner.namespace().unwrap_or_default(),
        )
    }

    /// Creates the token Secret with no token and the time the create starts (the write-ahead
    /// record, `secret::build_pending`). False when the name is taken by a Secret this pass has
    /// not read: the next round reads it (someone else's is never overwritten).
    async fn write_ahead(&mut self) -> Result<bool, Error> {
        let started = now_str(self.ctx);
        let s = secret::build_pending(self.runner, &started);
        let name = self.runner.token_secret_name();
        let api = self.secrets();
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, &s).await {
            Ok(_) => {
                self.secret.creation_started = Some(started);
                self.secret.absent = false;
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.secret.taken = true;
                Ok(false)
            }
            Err(e) => Err(refused_before_gitlab(
                &name,
                &format!("creating the token Secret {name}"),
                e,
            )),
        }
    }

    pub(crate) async fn write_secret(
        &mut self,
        runner_id: RunnerId,
        token: &SecretString,
        expires_at: Option<&str>,
    ) -> Result<(), Error> {
        let issued = now_str(self.ctx);
        self.store_token(runner_id, token, expires_at, issued)
            .await?;
        self.roll_consumers().await
    }

    /// The Secret and status's token bookkeeping, consumers untouched.
    async fn store_token(
        &mut self,
        runner_id: RunnerId,
        token: &SecretString,
        expires_at: Option<&str>,
        issued: String,
    ) -> Result<(), Error> {
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
        let api = self.secrets();
        let written = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&s),
            )
            .await
            .map_err(Error::kube(format!("writing the token Secret {name}")))?;
        self.ctx.recent.wrote_secret(
            &self.runner.uid().unwrap_or_default(),
            written
                .resource_version()
                .map(|v| (v, secret::token_hash(token.expose_secret()))),
        );
        self.status.token_secret_name = Some(name);
        self.status.token_secret_version = written.resource_version();
        self.status.token_hash = Some(secret::token_hash(token.expose_secret()));
        self.status.token_issued_at = Some(issued);
        self.status.token_expires_at = expires_at.map(str::to_string);
        Ok(())
    }

    /// Restarts the token's consumers for the token just stored.
    async fn roll_consumers(&mut self) -> Result<(), Error> {
        let generation = format!(
            "{}/{}",
            self.status.token_issued_at.clone().unwrap_or_default(),
            self.status.token_hash.clone().unwrap_or_default()
        );
        let (restarted, warnings) = consumers::roll(self.ctx, self.runner, &generation).await?;
        for w in &warnings {
            // Once per new token: the condition stays, the event says when it happened.
            let reason = if w.type_ == consumers::ROTATION_CONFLICT {
                Reason::TokenRotationConflict
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

    pub(crate) async fn create(
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
        // Recorded first: a crash after GitLab created the runner makes the next pass look for
        // it (by its marker) instead of registering a second one.
        if self.secret.creation_started.is_some() {
            // Written ahead by an earlier attempt: still the record.
        } else if self.secret.absent {
            if !self.write_ahead().await? {
                return Ok(());
            }
        } else {
            // Our Secret with a dead token (the runner was deleted in GitLab): the record goes
            // into status, the Secret keeps its place until the new token replaces the old.
            self.check_secret_writable().await?;
            if self.status.creation_started.is_none() {
                self.status.creation_started = Some(now_str(self.ctx));
                self.save().await?;
            }
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
            RegistrationStrategy::RegistrationToken => self.register(desired).await?,
        };
        // The token exists nowhere else: into the Secret first, then the id into status.
        self.write_secret(reg.id, &reg.token, reg.token_expires_at.as_deref())
            .await?;
        self.status.runner_id = Some(reg.id.into());
        self.status.creation_started = None;
        self.secret.creation_started = None;
        let reason = if recreated {
            RotationReason::Recovered
        } else {
            RotationReason::Created
        };
        self.ctx
            .metrics
            .rotations
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.as_str().into(),
            })
            .inc();
        self.status.last_rotation_reason = Some(reason.as_str().into());
        self.status.pending_rotation = None;
        // No status write here: the pass writes status once at its end, and a crash before
        // that finds the runner through the id in the Secret.
        self.created_event(reg.id, recreated).await;
        Ok(())
    }

    async fn created_event(&self, id: RunnerId, recreated: bool) {
        let (reason, note) = if recreated {
            (
                Reason::Recreated,
                format!(
                    "the GitLab runner was deleted outside the operator; registered a new one (id {}) and wrote its token",
                    id
                ),
            )
        } else {
            (
                Reason::Created,
                format!(
                    "registered GitLab runner {} and wrote its token to Secret {}",
                    id,
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
    }

    /// The legacy flow: `POST /runners` with the registration token from its Secret.
    async fn register(&self, desired: &Desired) -> Result<RunnerRegistration, Error> {
        let spec = &self.runner.spec;
        let r = spec
            .registration
            .as_ref()
            .and_then(|r| r.registration_token_secret_ref.clone())
            .ok_or_else(|| {
                Error::Invalid(
                    "registration strategy RegistrationToken needs registrationTokenSecretRef"
                        .into(),
                )
            })?;
        let ns = self.runner.namespace().unwrap_or_default();
        let key = r.key.as_deref().unwrap_or("token");
        let token = read_secret_key(self.ctx, &ns, &r.name, key).await?;
        let (token, attrs) = (SecretString::from(token), desired.attrs.all());
        let answer = self.gl().register_runner(&token, &attrs);
        answer.await.map_err(|e| {
            let said = e.message().unwrap_or_default();
            match e.kind() {
                ErrorKind::Disabled => Error::RegistrationTokensDisabled(format!("GitLab refused the registration token (410: {said}): registration tokens are disabled on this instance (the default since GitLab 17.0); use spec.registration.strategy: UserRunner, or have an administrator re-enable them")),
                ErrorKind::Forbidden => Error::Invalid(format!("GitLab refused the registration token (403: {said}): check the Secret {ns}/{} holds a valid project, group or instance registration token, or use strategy UserRunner", r.name)),
                _ => Error::gitlab("registering the runner with POST /runners")(e),
            }
        })
    }

    /// Makes a runner left by this cluster's earlier incarnation of the Runner this one's: its
    /// id goes into status; a restored token GitLab accepts goes into the Secret as ours (the
    /// consumers already run with it: none is restarted). Without one, the token reset the
    /// plan puts next is recorded as pending first.
    pub(crate) async fn take_over(&mut self, id: RunnerId, keep_token: bool) -> Result<(), Error> {
        let previous = self
            .details
            .as_ref()
            .and_then(|d| crate::controller::identity::Marker::parse(d.maintenance_note.as_deref()))
            .filter(|m| m.uid != self.runner.uid().unwrap_or_default());
        self.status.runner_id = Some(id.into());
        self.status.creation_started = None;
        let kept = match self
            .restored
            .take()
            .filter(|r| keep_token && r.runner_id == id)
        {
            Some(restored) => {
                self.check_secret_writable().await?;
                // GitLab's verify answered with the expiry; the issue time is the Secret's own.
                let issued = restored
                    .issued_at
                    .clone()
                    .filter(|t| t.parse::<k8s_openapi::jiff::Timestamp>().is_ok())
                    .unwrap_or_else(|| now_str(self.ctx));
                self.store_token(id, &restored.token, restored.expires_at.as_deref(), issued)
                    .await?;
                true
            }
            None => {
                // Recorded before the marker is rewritten or the token reset: a crash in
                // between finds the runner by this id, not by a search that no longer sees a
                // predecessor's marker.
                self.status.pending_rotation = Some(RotationReason::TakenOver.as_str().into());
                self.save().await?;
                false
            }
        };
        self.ctx.gitlab.forget_marker(id);
        let from = previous
            .map(|m| {
                format!(
                    " from this cluster's earlier Runner {} (uid {})",
                    m.path(),
                    m.uid
                )
            })
            .unwrap_or_default();
        let token = if kept {
            "kept its token (GitLab accepts the one in the restored Secret)"
        } else {
            "its token is reset"
        };
        event(
            self.ctx,
            self.runner,
            EventType::Normal,
            Reason::TakenOver,
            "TakeOver",
            format!("took over GitLab runner {id}{from}; {token}"),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn rotate(
        &mut self,
        id: RunnerId,
        reason: RotationReason,
    ) -> Result<(), Error> {
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
        if reason == RotationReason::Requested
            || self.runner.annotations().contains_key(ROTATE_ANNOTATION)
        {
            self.status.handled_rotate_request =
                self.runner.annotations().get(ROTATE_ANNOTATION).cloned();
        }
        // No status write here: the pass writes status once at its end (a crash before that
        // leaves pendingRotation recorded, and the next pass resets once more).
        let why = match reason {
            RotationReason::Interval => "the rotation interval elapsed",
            RotationReason::Expiry => "the token nears its expiry",
            RotationReason::Requested => "requested through the rotate-token annotation",
            RotationReason::Recovered => "the Secret was missing, edited or not yet written",
            RotationReason::Adopted => "the runner was adopted",
            RotationReason::TakenOver => "the runner was taken over after a rebuild",
            RotationReason::Created => "created",
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
            Reason::TokenRotated,
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
        let same_conditions = crate::crd::same_ignoring_time(&a.conditions, &b.conditions);
        a.conditions.clear();
        b.conditions.clear();
        if same_conditions && a == b {
            return Ok(());
        }
    }
    let api: Api<Runner> =
        Api::namespaced(ctx.client.clone(), &runner.namespace().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "status": status});
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

/// A key of a Secret (the registration token's).
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
