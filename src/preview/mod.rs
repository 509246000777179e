//! `runner-operator plan`: what reconciliation would do next for each Runner, without doing it.
//!
//! It runs the controller's own decision (`controller::plan`) on the controller's own desired
//! state, from GitLab and Kubernetes reads only: no write reaches either.

pub mod input;
pub mod orphans;
mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::controller::identity::{ClusterName, Marker};
use crate::controller::plan::{self, GitLabState, SecretState, Step};
use crate::controller::reasons::Reason;
use crate::controller::{Context, Error, Settings, connection, gitlab_clients, runner, secret};
use crate::crd::{DeletionPolicy, Runner, RunnerType};
use crate::gitlab::{ClientConfig, GitLabApi, GitLabClient, RunnerDetails, RunnerId};

pub use render::{orphans_text as render_orphans, render_text, to_output};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Runner manifests: a file, a folder (its .yaml, .yml and .json files) or `-` for stdin.
    /// Repeatable. Without it, the Runners in the cluster are planned.
    #[arg(short = 'f', long = "filename", value_name = "PATH|-")]
    pub files: Vec<PathBuf>,
    /// Namespace of the cluster's Runners to plan, and of manifests that name none.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Plan the Runners of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Plan against this GitLab without any cluster (manifests from -f only): nothing is read
    /// from Kubernetes, so every Runner is planned as new (or as an adoption).
    #[arg(long, requires = "files", value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// Environment variable holding the access token for --gitlab-url (never a flag value, so
    /// the token stays out of shell history).
    #[arg(long, default_value = "GITLAB_TOKEN", value_name = "VAR")]
    pub token_env: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// Path of the kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "RUNNER_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's name, as the operator runs with it: markers are planned with it, and the
    /// runners it marked that no Runner claims are listed as orphans.
    #[arg(long, env = "RUNNER_OPERATOR_CLUSTER_NAME")]
    pub cluster_name: Option<ClusterName>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// What a Runner's plan comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// GitLab matches the spec; nothing would be done.
    NoChanges,
    /// The actions listed would be taken.
    Changes,
    /// Something blocks progress (the Ready condition's reason); nothing would be done about it.
    Blocked,
    /// The plan could not be made (GitLab or Kubernetes unreachable, refused…).
    Error,
}

/// One field, before (GitLab's value; absent when not known) and after (the spec's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Field {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    pub after: Value,
}

/// One action reconciliation would take, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Register a new runner (`recreated`: the recorded one is gone from GitLab).
    #[serde(rename_all = "camelCase")]
    Create {
        runner_type: String,
        /// Owner project or group, as the spec names it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        recreated: bool,
        fields: Vec<Field>,
    },
    /// Take over an existing runner (`spec.adopt`); its token is reset.
    #[serde(rename_all = "camelCase")]
    Adopt { runner_id: i64 },
    /// Take over the runner this cluster registered for this Runner before a rebuild (same
    /// cluster name, namespace and name); `keepToken`: the restored Secret's token is kept
    /// (if GitLab still accepts it), else it is reset.
    #[serde(rename_all = "camelCase")]
    TakeOver { runner_id: i64, keep_token: bool },
    /// Change these fields of the runner.
    #[serde(rename_all = "camelCase")]
    Update { runner_id: i64, fields: Vec<Field> },
    /// Assign the runner to a project of `spec.assignedProjects`.
    #[serde(rename_all = "camelCase")]
    Assign {
        runner_id: i64,
        project_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
    },
    /// Unassign the runner from a project not in `spec.assignedProjects`.
    #[serde(rename_all = "camelCase")]
    Unassign {
        runner_id: i64,
        project_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
    },
    /// Reset the token and write the new one to the Secret (reason as in
    /// `status.lastRotationReason`).
    #[serde(rename_all = "camelCase")]
    RotateToken { runner_id: i64, reason: String },
    /// The Runner is being deleted: delete the runner in GitLab.
    #[serde(rename_all = "camelCase")]
    Delete { runner_id: i64 },
    /// The Runner is being deleted with `deletionPolicy: Orphan` (or its runner is not its to
    /// delete): the runner stays in GitLab, the Runner goes.
    #[serde(rename_all = "camelCase")]
    Release {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner_id: Option<i64>,
    },
}

/// When the token is next due for rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    /// Interval or Expiry.
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// The plan of one Runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerPlan {
    pub namespace: String,
    pub name: String,
    pub outcome: Outcome,
    /// The GitLab runner the Runner manages (or would adopt), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<i64>,
    pub actions: Vec<Action>,
    /// What a person should know before applying (fields an adoption changes…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Blocked or error: the reason, as the Ready condition would say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<Rotation>,
}

/// Counts over all Runners.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Summary {
    pub runners: usize,
    pub no_changes: usize,
    pub changes: usize,
    pub blocked: usize,
    pub errors: usize,
}

/// The document `plan -o json|yaml` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanDocument {
    /// Version of this document's format (`runner-operator.plan/v1`).
    pub format: String,
    pub summary: Summary,
    pub runners: Vec<RunnerPlan>,
    /// GitLab runners marked by this cluster (`--cluster-name`) that no Runner claims: what
    /// a lost Runner left behind (`runner-operator prune` deletes them). Empty without a
    /// cluster name, or when planning without a cluster.
    #[serde(default)]
    pub orphans: Vec<orphans::Orphan>,
}

pub const FORMAT: &str = "runner-operator.plan/v1";

/// `plan`'s exit code: 0 no changes, 2 changes pending, 1 an error or a blocked Runner.
pub fn exit_code(doc: &PlanDocument) -> u8 {
    let s = &doc.summary;
    if s.errors > 0 || s.blocked > 0 {
        1
    } else if s.changes > 0 {
        2
    } else {
        0
    }
}

/// Where GitLab access comes from.
pub enum Source {
    /// The cluster: Runners' status, connections, Secrets.
    Cluster(kube::Client),
    /// One GitLab, no cluster.
    GitLab(std::sync::Arc<dyn GitLabApi>),
}

/// Plans every Runner given (each with the live object of the same name, when a cluster is
/// read). Never fails as a whole: a Runner that cannot be planned is an `error` entry.
pub async fn plan_all(source: &Source, runners: Vec<Runner>) -> PlanDocument {
    plan_with(source, runners, &[], None).await
}

/// Plans `runners`; those using one of `changes` (new versions of ClusterGitLabConnections, not
/// yet applied) are also judged by its tenancy, with a warning when it would put them out of
/// their lane.
pub async fn plan_with(
    source: &Source,
    runners: Vec<Runner>,
    changes: &[crate::crd::ClusterGitLabConnection],
    cluster: Option<&ClusterName>,
) -> PlanDocument {
    // What each Runner is planned through: its connection in the cluster, or the one GitLab.
    enum Access {
        Cluster(Box<Context>),
        GitLab(std::sync::Arc<dyn GitLabApi>),
    }
    let (access, claims) = match source {
        Source::Cluster(c) => (
            Access::Cluster(Box::new(Context::new(
                c.clone(),
                Settings {
                    cluster_name: cluster.cloned(),
                    ..Settings::default()
                },
            ))),
            claims(c).await,
        ),
        Source::GitLab(gl) => (Access::GitLab(gl.clone()), BTreeMap::new()),
    };
    let mut out = vec![];
    for runner in runners {
        let (ns, name) = (runner.namespace().unwrap_or_default(), runner.name_any());
        let plan = match &access {
            Access::Cluster(ctx) => match connection::of_runner(ctx, &runner).await {
                Ok(r) => {
                    let lane = Some((&**ctx, &r, changes));
                    one(Some(&**ctx), &*r.client, &runner, &claims, lane).await
                }
                Err(e) => Err(e),
            },
            Access::GitLab(gl) => one(None, &**gl, &runner, &claims, None).await,
        };
        out.push(plan.unwrap_or_else(|e| RunnerPlan {
            outcome: match e {
                Error::Invalid(_)
                | Error::Connection(_)
                | Error::NotAllowed(_)
                | Error::Tenancy(_)
                | Error::RegistrationTokensDisabled(_)
                | Error::DeletionBlocked(_) => Outcome::Blocked,
                _ => Outcome::Error,
            },
            reason: Some(e.reason().into()),
            message: Some(e.to_string()),
            ..empty(&ns, &name)
        }));
    }
    let mut summary = Summary {
        runners: out.len(),
        ..Default::default()
    };
    for p in &out {
        match p.outcome {
            Outcome::NoChanges => summary.no_changes += 1,
            Outcome::Changes => summary.changes += 1,
            Outcome::Blocked => summary.blocked += 1,
            Outcome::Error => summary.errors += 1,
        }
    }
    PlanDocument {
        format: FORMAT.into(),
        summary,
        runners: out,
        orphans: vec![],
    }
}

fn empty(ns: &str, name: &str) -> RunnerPlan {
    RunnerPlan {
        namespace: ns.into(),
        name: name.into(),
        outcome: Outcome::NoChanges,
        runner_id: None,
        actions: vec![],
        warnings: vec![],
        reason: None,
        message: None,
        next_rotation: None,
    }
}

/// GitLab runner id → (uid, namespace/name) of each Runner in the cluster that recorded it in
/// status (none when Runners cannot be listed in every namespace: then only markers tell).
pub async fn claims(client: &kube::Client) -> BTreeMap<i64, Vec<(String, String)>> {
    let mut out: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    if let Ok(list) = Api::<Runner>::all(client.clone())
        .list(&Default::default())
        .await
    {
        for r in list.items {
            if let Some(id) = r.status.as_ref().and_then(|s| s.runner_id) {
                out.entry(id).or_default().push((
                    r.uid().unwrap_or_default(),
                    format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
                ));
            }
        }
    }
    out
}

/// A client for `--gitlab-url`, its token read from the environment variable `var` (never a
/// flag value, so it stays out of shell history).
pub fn gitlab_from_env(url: &str, var: &str) -> Result<GitLabClient, String> {
    let token = std::env::var(var)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            format!(
                "--gitlab-url needs the access token in the environment variable {var} (set it, or name another with --token-env)"
            )
        })?;
    GitLabClient::new(ClientConfig::new(url, token.trim().to_string().into()))
        .map_err(|e| format!("--gitlab-url: {e}"))
}

/// A cluster plan's tenancy inputs: the context, the Runner's connection and the connection
/// changes to preview.
type LaneCheck<'a> = (
    &'a Context,
    &'a gitlab_clients::Resolved,
    &'a [crate::crd::ClusterGitLabConnection],
);

async fn one(
    ctx: Option<&Context>,
    gl: &dyn GitLabApi,
    runner: &Runner,
    claims: &BTreeMap<i64, Vec<(String, String)>>,
    lane: Option<LaneCheck<'_>>,
) -> Result<RunnerPlan, Error> {
    let (ns, name) = (runner.namespace().unwrap_or_default(), runner.name_any());
    let mut p = empty(&ns, &name);
    let status = runner.status.clone().unwrap_or_default();
    p.runner_id = status
        .runner_id
        .or(runner.spec.adopt.as_ref().map(|a| a.runner_id));
    let cluster = ctx.and_then(|c| c.settings.cluster_name.as_ref());
    if runner.meta().deletion_timestamp.is_some() {
        return deletion(gl, runner, p, cluster).await;
    }
    let (owner_project, owner_group, assigned) =
        runner::resolve_ids(None, runner, &status, gl).await?;
    if let Some(check) = lane {
        let ids = (owner_project, owner_group, &assigned);
        p.warnings
            .extend(lane_warnings(check, runner, &status, ids).await?);
    }
    let desired = runner::desired(runner, assigned, owner_project, cluster)?;
    let scope = runner::Scope {
        owner_project,
        owner_group,
        desired,
        drift_possible: false,
    };
    let mut seen = ReadOnly {
        ctx,
        gl,
        runner,
        claims,
        warnings: vec![],
    };
    let observed = runner::observe(&mut seen, &scope, None).await?;
    p.warnings.append(&mut seen.warnings);
    let (secret_state, gitlab, desired) = (observed.secret, observed.gitlab, scope.desired);
    let token = runner::token_state(&status, secret_state);
    let steps = plan::plan(&desired, &gitlab, &token, Timestamp::now());
    let details = match &gitlab {
        GitLabState::Present(d)
        | GitLabState::NotOurs(d)
        | GitLabState::Predecessor(d)
        | GitLabState::Claimed(d, _) => Some(&**d),
        GitLabState::Unknown | GitLabState::Gone => None,
    };
    let paths = project_paths(gl, details, &steps).await;
    for step in steps {
        if let Some(blocked) = describe(&mut p, step, runner, &desired, details, &paths) {
            let (reason, message) = blocked;
            p.outcome = Outcome::Blocked;
            p.reason = Some(reason.into());
            p.message = Some(message);
            p.actions.clear();
            return Ok(p);
        }
    }
    if !p.actions.is_empty() {
        p.outcome = Outcome::Changes;
    }
    let policy = runner::rotation_policy(runner)?;
    let (issued, expires) = (
        runner::ts(status.token_issued_at.as_deref()),
        runner::ts(status.token_expires_at.as_deref()),
    );
    p.next_rotation = plan::next_rotation(&policy, issued, expires).map(|(r, at)| Rotation {
        reason: r.as_str().into(),
        at: at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(p)
}

/// As the controller judges the lane now (outside it, the plan is blocked), and what the
/// connection changes being previewed would make of it.
async fn lane_warnings(
    (ctx, resolved, changes): LaneCheck<'_>,
    runner: &Runner,
    status: &crate::crd::RunnerStatus,
    ids: (Option<i64>, Option<i64>, &std::collections::BTreeSet<i64>),
) -> Result<Vec<String>, Error> {
    runner::check_lane(ctx, runner, resolved, status, ids).await?;
    let changed = resolved.lane.as_ref().and_then(|l| {
        changes
            .iter()
            .find(|c| c.name_any() == l.connection)
            .map(|c| (l.connection.clone(), c.spec.tenancy.clone()))
    });
    let Some((name, tenancy)) = changed else {
        return Ok(vec![]);
    };
    let mut after = resolved.clone();
    after.lane = Some(std::sync::Arc::new(gitlab_clients::Lane {
        connection: name.clone(),
        tenancy,
    }));
    Ok(
        match runner::check_lane(ctx, runner, &after, status, ids).await {
            Err(Error::Tenancy(why)) => vec![format!(
                "the new ClusterGitLabConnection {name} puts this Runner out of its lane (TenancyViolation once applied): {why}"
            )],
            _ => vec![],
        },
    )
}

/// How `plan` observes (the decisions are the controller's: `runner::observe`): read-only — a
/// restored token is not checked with GitLab, which would record a contact — with the claims
/// listed from the cluster's Runners instead of the controller's caches, and no search for a
/// runner lost mid-create.
struct ReadOnly<'a> {
    ctx: Option<&'a Context>,
    gl: &'a dyn GitLabApi,
    runner: &'a Runner,
    claims: &'a BTreeMap<i64, Vec<(String, String)>>,
    /// What the plan should say besides its steps.
    warnings: Vec<String>,
}

impl runner::Sight for ReadOnly<'_> {
    fn gl(&self) -> &dyn GitLabApi {
        self.gl
    }

    fn runner(&self) -> &Runner {
        self.runner
    }

    fn cluster(&self) -> Option<&ClusterName> {
        self.ctx.and_then(|c| c.settings.cluster_name.as_ref())
    }

    fn recorded(&self) -> Option<RunnerId> {
        self.runner
            .status
            .as_ref()
            .and_then(|s| s.runner_id)
            .map(RunnerId)
    }

    async fn secret(
        &mut self,
        _may_assume: bool,
    ) -> Result<(SecretState, Option<RunnerId>), Error> {
        let runner = self.runner;
        let Some(ctx) = self.ctx else {
            return Ok((SecretState::Missing, None));
        };
        let ns = runner.namespace().unwrap_or_default();
        let secret_obj = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&runner.token_secret_name())
            .await
            .map_err(Error::kube("reading the token Secret"))?;
        let hash = runner.status.as_ref().and_then(|s| s.token_hash.as_deref());
        let mut state = secret::observe(secret_obj.as_ref(), runner, hash);
        let restored = secret_obj
            .as_ref()
            .and_then(|s| secret::restored(s, runner));
        if state == SecretState::Foreign && self.cluster().is_some() && restored.is_some() {
            // Checking the token would record a contact in GitLab: assumed live, and said so.
            state = SecretState::Restored { live: true };
            self.warnings.push(format!(
                "the Secret {} was restored (no owner): its token is kept if GitLab still accepts it, else reset",
                runner.token_secret_name()
            ));
        }
        let id = secret_obj
            .as_ref()
            .filter(|_| state != SecretState::Foreign)
            .and_then(secret::runner_id);
        Ok((state, id))
    }

    async fn claimant(&self, d: &RunnerDetails) -> Result<Option<plan::Claimant>, Error> {
        Ok(claimant(
            d.id,
            self.runner,
            Some(d),
            self.claims,
            self.cluster(),
        ))
    }

    fn unclaimed(&self, d: &RunnerDetails) -> bool {
        claimant(d.id, self.runner, Some(d), self.claims, self.cluster()).is_none()
    }

    async fn interrupted_create(
        &mut self,
        _scope: &runner::Scope,
    ) -> Result<Option<Option<RunnerDetails>>, Error> {
        Ok(None)
    }

    async fn predecessor(&self, scope: &runner::Scope) -> Result<Option<RunnerDetails>, Error> {
        let Some(ctx) = self.ctx else {
            return Ok(None);
        };
        let (project, group) = (scope.owner_project, scope.owner_group);
        runner::find_predecessor(ctx, self.gl, self.runner, project, group).await
    }
}

/// Adds one step to the plan shown; returns the reason and message of a step that blocks.
fn describe(
    p: &mut RunnerPlan,
    step: Step,
    runner: &Runner,
    desired: &plan::Desired,
    details: Option<&RunnerDetails>,
    paths: &BTreeMap<i64, String>,
) -> Option<(Reason, String)> {
    let action = match step {
        Step::Create { recreated } => {
            p.runner_id = None;
            let mut attrs = desired.attrs.clone();
            // The marker is ours to add; show the note as the user wrote it.
            attrs.maintenance_note = runner.spec.maintenance_note.clone().unwrap_or_default();
            Action::Create {
                runner_type: runner.spec.runner_type.as_str().into(),
                owner: match runner.spec.runner_type {
                    RunnerType::ProjectType => runner.spec.project.clone(),
                    RunnerType::GroupType => runner.spec.group.clone(),
                    RunnerType::InstanceType => None,
                },
                recreated,
                fields: fields(plan::field_changes(None, &attrs.all())),
            }
        }
        Step::Adopt(id) => {
            if let Some(d) = details {
                for c in plan::field_changes(Some(d), &desired.attrs.diff(d)) {
                    p.warnings
                        .push(format!("adopting runner {id} changes {}", c.text()));
                }
            }
            p.warnings.push(format!(
                "adopting runner {id} resets its token: the runner process using the current one stops working until it gets the new Secret"
            ));
            Action::Adopt {
                runner_id: id.into(),
            }
        }
        Step::TakeOver {
            runner: rid,
            keep_token,
        } => {
            p.runner_id = Some(rid.into());
            Action::TakeOver {
                runner_id: rid.into(),
                keep_token,
            }
        }
        Step::Update { runner: rid, attrs } => Action::Update {
            runner_id: rid.into(),
            fields: fields(plan::field_changes(details, &attrs)),
        },
        Step::Assign {
            runner: rid,
            project,
        } => Action::Assign {
            runner_id: rid.into(),
            project_id: project,
            project: paths.get(&project).cloned(),
        },
        Step::Unassign {
            runner: rid,
            project,
        } => Action::Unassign {
            runner_id: rid.into(),
            project_id: project,
            project: paths.get(&project).cloned(),
        },
        Step::RotateToken {
            runner: rid,
            reason,
        } => Action::RotateToken {
            runner_id: rid.into(),
            reason: reason.as_str().into(),
        },
        Step::Blocked { reason, message } => return Some((reason, message)),
        Step::Invalid { message } => return Some((Reason::InvalidSpec, message)),
    };
    p.actions.push(action);
    None
}

fn fields(changes: Vec<plan::FieldChange>) -> Vec<Field> {
    changes
        .into_iter()
        .map(|c| Field {
            field: c.field.into(),
            before: c.before,
            after: c.after,
        })
        .collect()
}

/// Another Runner that claims runner `id`: by the id in its status, or by its marker (a live
/// Runner of this cluster, or any Runner of another).
fn claimant(
    id: RunnerId,
    runner: &Runner,
    details: Option<&RunnerDetails>,
    claims: &BTreeMap<i64, Vec<(String, String)>>,
    cluster: Option<&ClusterName>,
) -> Option<plan::Claimant> {
    let uid = runner.uid().unwrap_or_default();
    if let Some((_, who)) = claims
        .get(&id.0)
        .and_then(|c| c.iter().find(|(u, _)| *u != uid))
    {
        return Some(plan::Claimant::Runner(who.clone()));
    }
    let m = Marker::parse(details.and_then(|d| d.maintenance_note.as_deref()))?;
    if let Some(other) = plan::Claimant::other_cluster(&m, cluster) {
        return Some(other);
    }
    let live = claims.values().flatten().any(|(u, _)| *u == m.uid);
    (live && m.uid != uid).then(|| plan::Claimant::Runner(m.path()))
}

/// Paths of the projects the steps (un)assign, for people: GitLab's own list for those
/// assigned now, one read each for the others.
async fn project_paths(
    gl: &dyn GitLabApi,
    details: Option<&RunnerDetails>,
    steps: &[Step],
) -> BTreeMap<i64, String> {
    let mut out: BTreeMap<i64, String> = details
        .into_iter()
        .flat_map(|d| &d.projects)
        .filter_map(|p| Some((p.id, p.path_with_namespace.clone()?)))
        .collect();
    for step in steps {
        if let Step::Assign { project: id, .. } = step
            && !out.contains_key(id)
            && let Ok(project) = gl.get_project(&id.to_string()).await
        {
            out.insert(*id, project.path_with_namespace);
        }
    }
    out
}

/// A Runner being deleted: what its finalizer would do.
async fn deletion(
    gl: &dyn GitLabApi,
    runner: &Runner,
    mut p: RunnerPlan,
    cluster: Option<&ClusterName>,
) -> Result<RunnerPlan, Error> {
    let status = runner.status.clone().unwrap_or_default();
    p.outcome = Outcome::Changes;
    if runner.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Orphan {
        p.actions.push(Action::Release {
            runner_id: status.runner_id,
        });
        return Ok(p);
    }
    let found = match status.runner_id {
        Some(id) => runner::fetch(gl, RunnerId(id)).await?,
        None => None,
    };
    match found {
        Some(d) if runner::is_ours(&d, runner, status.runner_id.map(RunnerId), cluster) => {
            p.actions.push(Action::Delete {
                runner_id: d.id.into(),
            });
        }
        Some(d) => {
            p.warnings.push(format!(
                "GitLab runner {} does not carry this Runner's marker and is not the one it adopted; it is left in place",
                d.id
            ));
            p.actions.push(Action::Release {
                runner_id: Some(d.id.into()),
            });
        }
        None => p.actions.push(Action::Release { runner_id: None }),
    }
    Ok(p)
}

/// Runs `plan` from the command line; the exit code as `exit_code` says.
pub fn run(args: PlanArgs) -> Result<u8, String> {
    crate::cli::block_on(async {
        let (mut from_files, mut changes) = (vec![], vec![]);
        for f in &args.files {
            let (runners, conns) = input::read_all(f)?;
            from_files.extend(runners);
            changes.extend(conns);
        }
        let (source, runners) = match &args.gitlab_url {
            Some(url) => {
                let gl = gitlab_from_env(url, &args.token_env)?;
                let runners = input::with_namespace(from_files, args.namespace.as_deref());
                (Source::GitLab(std::sync::Arc::new(gl)), runners)
            }
            None => {
                let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
                let runners = if !changes.is_empty() && from_files.is_empty() {
                    // Only connection changes: every Runner using one of them.
                    let names: Vec<String> = changes.iter().map(|c| c.name_any()).collect();
                    input::from_cluster(&client, None, true)
                        .await?
                        .into_iter()
                        .filter(|r| {
                            r.spec.connection_ref.kind
                                == crate::crd::ConnectionKind::ClusterGitLabConnection
                                && names.contains(&r.spec.connection_ref.name)
                        })
                        .collect()
                } else if args.files.is_empty() {
                    input::from_cluster(&client, args.namespace.as_deref(), args.all_namespaces)
                        .await?
                } else {
                    let default_ns = args
                        .namespace
                        .clone()
                        .unwrap_or_else(|| client.default_namespace().to_string());
                    input::with_live(
                        &client,
                        input::with_namespace(from_files, Some(&default_ns)),
                    )
                    .await?
                };
                (Source::Cluster(client), runners)
            }
        };
        let mut doc = plan_with(&source, runners, &changes, args.cluster_name.as_ref()).await;
        if let (Source::Cluster(client), Some(cluster)) = (&source, &args.cluster_name)
            && args.files.is_empty()
        {
            doc.orphans = orphans::find(client, cluster).await?;
        }
        let text = match args.output {
            Format::Text => render_text(&doc),
            Format::Json => to_output(&doc, false)?,
            Format::Yaml => to_output(&doc, true)?,
        };
        print!("{text}");
        Ok(exit_code(&doc))
    })
}
