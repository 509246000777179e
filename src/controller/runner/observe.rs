//! Observe: GitLab and the cluster as they are — the token Secret, the runner (by the id
//! status or the Secret records, by `spec.adopt`, or found by its marker after an interrupted
//! create or a rebuild), who else claims it, paths to ids, and what GitLab reports for status.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Resource, ResourceExt};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::identity::{ClusterName, Marker};
use crate::controller::managers;
use crate::controller::plan::{Claimant, GitLabState, SecretState};
use crate::controller::{caches, secret};
use crate::crd::{GitLabRunnerState, Runner, RunnerStatus, RunnerType};
use crate::gitlab::ErrorKind;
use crate::gitlab::{GitLabApi, RunnerDetails, RunnerFilter, RunnerId};

use super::desired::{Scope, carries_marker, is_ours, is_predecessors, token_expiry};
use super::pass::{Pass, SecretSeen};

/// What a round sees before deciding.
pub(crate) struct Observed {
    pub(crate) secret: SecretState,
    pub(crate) gitlab: GitLabState,
}

/// What an observation reads, and how: the controller's pass (its caches, the token checked
/// with GitLab, claims from the watched Runners) or the `plan` command (read-only, claims
/// listed from the cluster). `observe` decides what it all means, for both.
pub(crate) trait Sight: Send {
    fn gl(&self) -> &dyn GitLabApi;
    fn runner(&self) -> &Runner;
    fn cluster(&self) -> Option<&ClusterName>;
    /// The runner id status records.
    fn recorded(&self) -> Option<RunnerId>;
    /// The token Secret, and the runner id it records (when it is not someone else's).
    /// `may_assume`: a Secret that cannot be ours may be assumed absent without reading (a
    /// create proves it by creating the Secret; anything else reads it first).
    fn secret(
        &mut self,
        may_assume: bool,
    ) -> impl Future<Output = Result<(SecretState, Option<RunnerId>), Error>> + Send;
    /// The last `secret` was assumed absent, not read.
    fn assumed_absent(&self) -> bool {
        false
    }
    /// Another live Runner that manages `d`: it recorded it, or marked it.
    fn claimant(
        &self,
        d: &RunnerDetails,
    ) -> impl Future<Output = Result<Option<Claimant>, Error>> + Send;
    /// No other live Runner claims `d` (a predecessor's runner is taken over only then).
    fn unclaimed(&self, d: &RunnerDetails) -> bool;
    /// After a create interrupted before its id was recorded: our runner, found by its marker
    /// (`Some(None)`: searched, not there); `None` when no create was interrupted.
    fn interrupted_create(
        &mut self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Option<Option<RunnerDetails>>, Error>> + Send;
    /// Before registering: a runner this cluster made for this Runner before a rebuild.
    fn predecessor(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Option<RunnerDetails>, Error>> + Send;
}

/// One round's observation: the token Secret, and which runner in GitLab is this Runner's and
/// what it is to it. `answered`: what GitLab answered to the last round's writes, when that says
/// all it stored (then the runner is not read again).
pub(crate) async fn observe<S: Sight>(
    s: &mut S,
    scope: &Scope,
    answered: Option<RunnerDetails>,
) -> Result<Observed, Error> {
    let (secret, id_in_secret) = s.secret(scope.desired.adopt.is_none()).await?;
    let observed = observe_gitlab_side(s, scope, answered.clone(), secret, id_in_secret).await?;
    if !s.assumed_absent() || observed.gitlab == GitLabState::Unknown {
        return Ok(observed);
    }
    // Only a create may write a Secret it has not read: anything else reads it first.
    let (secret, id_in_secret) = s.secret(false).await?;
    if id_in_secret.is_none() {
        return Ok(Observed { secret, ..observed });
    }
    observe_gitlab_side(s, scope, answered, secret, id_in_secret).await
}

/// Which runner in GitLab is this Runner's, given what the token Secret showed.
async fn observe_gitlab_side<S: Sight>(
    s: &mut S,
    scope: &Scope,
    answered: Option<RunnerDetails>,
    secret: SecretState,
    id_in_secret: Option<RunnerId>,
) -> Result<Observed, Error> {
    let recorded = s.recorded();
    let known = recorded.or(id_in_secret);
    let restored = matches!(secret, SecretState::Restored { .. });
    let gitlab = match (known, answered.filter(|d| Some(d.id) == known)) {
        (Some(_), Some(d)) => GitLabState::Present(Box::new(d)),
        (Some(id), None) => match fetch(s.gl(), id).await? {
            Some(d) => classify(s, d),
            // Only a restored Secret named it: the old runner is gone, nothing was lost here.
            None if restored && recorded.is_none() => GitLabState::Unknown,
            None => GitLabState::Gone,
        },
        (None, _) => match scope.desired.adopt {
            Some(id) => adoption_target(s, id).await?,
            None => match s.interrupted_create(scope).await? {
                Some(Some(d)) => GitLabState::Present(Box::new(d)),
                Some(None) => GitLabState::Unknown,
                None => match s.predecessor(scope).await? {
                    Some(d) => classify(s, d),
                    None => GitLabState::Unknown,
                },
            },
        },
    };
    Ok(Observed { secret, gitlab })
}

/// What a runner found by id is to this Runner: ours, left by this cluster's earlier
/// incarnation of it (and claimed by no other Runner), or someone else's.
fn classify<S: Sight>(s: &S, d: RunnerDetails) -> GitLabState {
    let (runner, cluster) = (s.runner(), s.cluster());
    if is_ours(&d, runner, s.recorded(), cluster) {
        GitLabState::Present(Box::new(d))
    } else if is_predecessors(&d, runner, cluster) && s.unclaimed(&d) {
        GitLabState::Predecessor(Box::new(d))
    } else {
        GitLabState::NotOurs(Box::new(d))
    }
}

/// The runner `spec.adopt` names: ours already, someone else's, or managed by another Runner.
async fn adoption_target<S: Sight>(s: &S, id: RunnerId) -> Result<GitLabState, Error> {
    let Some(d) = fetch(s.gl(), id).await? else {
        return Err(Error::Invalid(format!(
            "spec.adopt.runnerId {id}: no such runner in GitLab"
        )));
    };
    if is_ours(&d, s.runner(), s.recorded(), s.cluster()) {
        return Ok(GitLabState::Present(Box::new(d)));
    }
    Ok(match s.claimant(&d).await? {
        Some(by) => GitLabState::Claimed(Box::new(d), by),
        None => GitLabState::NotOurs(Box::new(d)),
    })
}

/// Records in the pass what an observation proves: the runner's details and, when it is ours,
/// its id and token expiry (known from the Secret or a marker search after a crash before the
/// status write; the create it came from is over).
pub(crate) fn record(pass: &mut Pass<'_>, observed: &Observed) {
    if let GitLabState::Present(d)
    | GitLabState::NotOurs(d)
    | GitLabState::Predecessor(d)
    | GitLabState::Claimed(d, _) = &observed.gitlab
    {
        pass.details = Some((**d).clone());
    }
    if let GitLabState::Present(d) = &observed.gitlab {
        pass.status.token_expires_at = token_expiry(
            pass.status.token_expires_at.as_deref(),
            d.token_expires_at.as_deref(),
        );
        pass.status.runner_id = Some(d.id.into());
        pass.status.creation_started = None;
    }
}

impl Sight for Pass<'_> {
    fn gl(&self) -> &dyn GitLabApi {
        Pass::gl(self)
    }

    fn runner(&self) -> &Runner {
        self.runner
    }

    fn cluster(&self) -> Option<&ClusterName> {
        self.ctx.settings.cluster_name.as_ref()
    }

    fn recorded(&self) -> Option<RunnerId> {
        self.status.runner_id.map(RunnerId)
    }

    async fn secret(&mut self, may_assume: bool) -> Result<(SecretState, Option<RunnerId>), Error> {
        observe_secret(self, may_assume).await
    }

    fn assumed_absent(&self) -> bool {
        self.secret.assumed_absent
    }

    /// No tug of war: another live Runner manages the runner when it recorded it in its
    /// status, or marked it (created or adopted it) — in this cluster, or in another one.
    async fn claimant(&self, d: &RunnerDetails) -> Result<Option<Claimant>, Error> {
        let ctx = self.ctx;
        let uid = self.runner.uid().unwrap_or_default();
        if let Some((ns, name)) = ctx.claimant(d.id, &uid) {
            return Ok(Some(Claimant::Runner(format!("{ns}/{name}"))));
        }
        let Some(m) = Marker::parse(d.maintenance_note.as_deref()) else {
            return Ok(None);
        };
        if let Some(other) = Claimant::other_cluster(&m, self.cluster()) {
            return Ok(Some(other));
        }
        let other = Api::<Runner>::namespaced(ctx.client.clone(), &m.namespace)
            .get_opt(&m.name)
            .await
            .map_err(Error::kube("reading the Runner that claims the runner"))?;
        Ok(other
            .filter(|o| o.meta().uid.as_deref() == Some(m.uid.as_str()))
            .map(|_| Claimant::Runner(m.path())))
    }

    fn unclaimed(&self, d: &RunnerDetails) -> bool {
        unclaimed(self.ctx, d, self.runner)
    }

    async fn interrupted_create(
        &mut self,
        scope: &Scope,
    ) -> Result<Option<Option<RunnerDetails>>, Error> {
        let Some(started) = self
            .secret
            .creation_started
            .as_deref()
            .or(self.status.creation_started.as_deref())
        else {
            return Ok(None);
        };
        let description = &scope.desired.attrs.description;
        let (project, group) = (scope.owner_project, scope.owner_group);
        let found = find_marked(
            self.ctx,
            self.gl(),
            self.runner,
            project,
            group,
            Some(started),
            description,
        );
        Ok(Some(found.await?))
    }

    async fn predecessor(&self, scope: &Scope) -> Result<Option<RunnerDetails>, Error> {
        let (project, group) = (scope.owner_project, scope.owner_group);
        find_predecessor(self.ctx, self.gl(), self.runner, project, group).await
    }
}

/// The token Secret: from the cache when it is the version this process (or, after a restart,
/// status) says the operator wrote or checked and status names the same token, else read (the
/// token itself is read only then). Also the runner id it records, when status lost it.
pub(crate) async fn observe_secret(
    pass: &mut Pass<'_>,
    may_assume: bool,
) -> Result<(SecretState, Option<RunnerId>), Error> {
    let (ctx, runner) = (pass.ctx, pass.runner);
    let (ns, name) = (
        runner.namespace().unwrap_or_default(),
        runner.token_secret_name(),
    );
    let uid = runner.uid().unwrap_or_default();
    let known = ctx.recent.secret_version(&uid).or_else(|| {
        let st = &pass.status;
        st.token_secret_version.clone().zip(st.token_hash.clone())
    });
    let cached = match ctx.caches.token_secret(&ns, &name) {
        caches::Cached::Found(m) => Some(m.and_then(|m| m.resource_version())),
        caches::Cached::NoCache => None,
    };
    pass.secret.assumed_absent = false;
    let st = &pass.status;
    let never_written =
        st.runner_id.is_none() && st.token_hash.is_none() && st.creation_started.is_none();
    // A create interrupted before the Secret was renamed left its record under the old name.
    let renamed = match never_written && runner.meta().generation.unwrap_or(1) > 1 {
        true => ahead_elsewhere(pass, &ns, &name, &uid).await?,
        false => None,
    };
    if may_assume
        && never_written
        && renamed.is_none()
        && !pass.secret.taken
        && cached == Some(None)
    {
        // A Runner that never had a token, and no Secret of ours by that name: a create's
        // write-ahead Secret proves the name free (or finds it taken, and then it is read).
        pass.secret = SecretSeen {
            assumed_absent: true,
            absent: true,
            ..SecretSeen::default()
        };
        return Ok((SecretState::Missing, None));
    }
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
    pass.secret = SecretSeen {
        absent: secret_obj.is_none(),
        creation_started: secret_obj
            .as_ref()
            .filter(|_| state == SecretState::Missing)
            .and_then(secret::creation_started)
            .or(renamed),
        ..SecretSeen::default()
    };
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

/// When a create started whose write-ahead Secret has another name than the spec gives now
/// (the Secret was renamed before the interrupted create was found): read from the Secrets the
/// Runner owns (the cache knows them), only for a Runner whose spec changed.
async fn ahead_elsewhere(
    pass: &Pass<'_>,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<Option<String>, Error> {
    let Some(names) = pass.ctx.caches.owned_token_secrets(ns, uid) else {
        return Ok(None);
    };
    let api = Api::<Secret>::namespaced(pass.ctx.client.clone(), ns);
    for other in names.iter().filter(|n| n.as_str() != name) {
        let found = api.get_opt(other).await.map_err(Error::kube(
            "reading an earlier token Secret of this Runner",
        ))?;
        if let Some(started) = found.as_ref().and_then(secret::creation_started) {
            return Ok(Some(started));
        }
    }
    Ok(None)
}

/// GitLab's view of the runner for status. The managers are read when due (see `managers`),
/// else kept; contactedAt moves with them, not on every pass: a live runner contacts GitLab
/// every few seconds, and copying that into status would write status (and trigger another
/// pass) at every resync. A failed read keeps what status has; it never fails the pass.
pub(crate) async fn observe_gitlab(
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
pub(crate) async fn observe_managers(
    ctx: &Context,
    pass: &Pass<'_>,
    d: &crate::gitlab::RunnerDetails,
) -> (Option<crate::crd::ManagersState>, bool) {
    let uid = pass.runner.uid().unwrap_or_default();
    let previous = pass.status.gitlab.as_ref();
    let kept = || previous.and_then(|p| p.managers.clone());
    let checked_ago = ctx.recent.managers_read_ago(&uid);
    let record = || ctx.recent.managers_read(&uid);
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

/// The cache of resolved paths a pass may use: the context and the connection's key.
pub(crate) type PathCache<'a> = Option<(&'a Context, &'a str)>;

pub(crate) async fn resolve_project(
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
        Some((ctx, key)) => ctx.gitlab.resolve_path(key, "project", p, lookup).await,
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
                Some((ctx, key)) => ctx.gitlab.resolve_path(key, "group", g, lookup).await?,
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
pub(crate) async fn find_marked(
    ctx: &Context,
    gl: &dyn GitLabApi,
    runner: &Runner,
    owner_project: Option<i64>,
    owner_group: Option<i64>,
    started: Option<&str>,
    description: &str,
) -> Result<Option<RunnerDetails>, Error> {
    let Some(list) = list_scope(
        gl,
        runner,
        owner_project,
        owner_group,
        "looking for a runner this Runner created earlier",
    )
    .await?
    else {
        return Ok(None);
    };
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
    let cluster = ctx.settings.cluster_name.as_ref();
    for candidate in candidates {
        let known = ctx.gitlab.marker(candidate.id);
        if matches!(&known, Some(owner) if owner.as_ref().map(|m| m.uid.as_str()) != Some(uid.as_str()))
        {
            continue;
        }
        // Gone since the list (deleted meanwhile): not ours to find.
        let Some(details) = fetch(gl, candidate.id).await? else {
            continue;
        };
        remember_marker(ctx, &details);
        if carries_marker(details.maintenance_note.as_deref(), runner, cluster) {
            return Ok(Some(details));
        }
    }
    Ok(None)
}

/// The runners of the Runner's type in its scope (its project, its group, the instance); None
/// while the owner is not resolved.
async fn list_scope(
    gl: &dyn GitLabApi,
    runner: &Runner,
    owner_project: Option<i64>,
    owner_group: Option<i64>,
    what: &'static str,
) -> Result<Option<Vec<crate::gitlab::Runner>>, Error> {
    let filter = RunnerFilter {
        runner_type: Some(runner.spec.runner_type.as_str().into()),
        ..Default::default()
    };
    match (runner.spec.runner_type, owner_project, owner_group) {
        (RunnerType::ProjectType, Some(p), _) => {
            gl.list_project_runners(&p.to_string(), &filter).await
        }
        (RunnerType::GroupType, _, Some(g)) => gl.list_group_runners(&g.to_string(), &filter).await,
        (RunnerType::InstanceType, _, _) => gl.list_all_runners(&filter).await,
        _ => return Ok(None),
    }
    .map(Some)
    .map_err(Error::gitlab(what))
}

fn remember_marker(ctx: &Context, d: &RunnerDetails) {
    ctx.gitlab
        .remember_marker(d.id, Marker::parse(d.maintenance_note.as_deref()));
}

/// Never two live claimants: a runner whose marked uid is still a Runner here, or that another
/// Runner recorded, is not taken over.
fn unclaimed(ctx: &Context, d: &RunnerDetails, runner: &Runner) -> bool {
    let uid = runner.uid().unwrap_or_default();
    let marked = Marker::parse(d.maintenance_note.as_deref()).map(|m| m.uid);
    let live = ctx.caches.runners().into_iter().any(|g| {
        g.0.as_ref()
            .is_ok_and(|r| r.uid().is_some() && r.uid() == marked)
    });
    !live && ctx.claimant(d.id, &uid).is_none()
}

/// A runner this cluster's earlier incarnation of the Runner registered, found in the Runner's
/// scope by its marker (`--cluster-name` set; one list, and a read of each runner whose note
/// this process has not seen). The way a Runner re-applied from Git after a rebuild, with no
/// status and no Secret, finds its runner instead of registering a second one.
pub(crate) async fn find_predecessor(
    ctx: &Context,
    gl: &dyn GitLabApi,
    runner: &Runner,
    owner_project: Option<i64>,
    owner_group: Option<i64>,
) -> Result<Option<RunnerDetails>, Error> {
    let Some(cluster) = ctx.settings.cluster_name.as_ref() else {
        return Ok(None);
    };
    let Some(list) = list_scope(
        gl,
        runner,
        owner_project,
        owner_group,
        "looking for a runner this cluster registered for this Runner before a rebuild",
    )
    .await?
    else {
        return Ok(None);
    };
    let (ns, name, uid) = (
        runner.namespace().unwrap_or_default(),
        runner.name_any(),
        runner.uid().unwrap_or_default(),
    );
    // Newest first: the last incarnation's runner, should there be several.
    for candidate in list.iter().rev() {
        if candidate.runner_type != runner.spec.runner_type.as_str() {
            continue;
        }
        let known = ctx.gitlab.marker(candidate.id);
        if let Some(m) = &known
            && !m
                .as_ref()
                .is_some_and(|m| m.uid == uid || m.predecessor_of(Some(cluster), &ns, &name, &uid))
        {
            continue;
        }
        let Some(details) = fetch(gl, candidate.id).await? else {
            continue;
        };
        remember_marker(ctx, &details);
        // Already marked for this very Runner: a takeover interrupted before its id was
        // recorded.
        if carries_marker(details.maintenance_note.as_deref(), runner, Some(cluster))
            || (is_predecessors(&details, runner, Some(cluster))
                && unclaimed(ctx, &details, runner))
        {
            return Ok(Some(details));
        }
    }
    Ok(None)
}

pub(crate) async fn fetch(
    gl: &dyn GitLabApi,
    id: RunnerId,
) -> Result<Option<RunnerDetails>, Error> {
    match gl.get_runner(id).await {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::gitlab(format!("reading runner {id}"))(e)),
    }
}
