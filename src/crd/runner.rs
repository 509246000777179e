//! `Runner`: one GitLab CI runner, owned by this operator.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::SecretKeyRef;

/// Desired state of a GitLab runner. Field names follow GitLab's Runners API in Kubernetes casing.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gitlab.runner-operator.dev",
    version = "v1alpha1",
    kind = "Runner",
    namespaced,
    status = "RunnerStatus",
    shortname = "glrunner",
    shortname = "glrunners",
    category = "gitlab",
    derive = "PartialEq",
    doc = "A GitLab CI runner managed through GitLab's Runners API; its authentication token is kept in a Secret.",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.runnerType",
        description = "instance_type, group_type or project_type."
    ),
    printcolumn(
        name = "Runner ID",
        type_ = "integer",
        json_path = ".status.runnerId",
        description = "GitLab's id of the runner."
    ),
    printcolumn(
        name = "GitLab",
        type_ = "string",
        json_path = ".status.gitlab.status",
        description = "Status GitLab reports: online, offline, stale, never_contacted or paused."
    ),
    printcolumn(
        name = "Managers",
        type_ = "string",
        json_path = ".status.gitlab.managers.summary",
        description = "Runner managers (runner processes using the token) online, of all registered."
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.gitlab.managers.version",
        description = "Versions the runner managers report."
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        description = "Whether the runner is paused (spec.paused)."
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether GitLab matches the spec and the token is in its Secret (the Ready condition)."
    ),
    printcolumn(
        name = "Token Expiry",
        type_ = "string",
        json_path = ".status.tokenExpiresAt",
        description = "When the runner's token expires (a date column would show a future time as <invalid>)."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.runnerType == 'group_type' ? has(self.group) : !has(self.group)").message("group is required when runnerType is group_type, and not allowed for other runner types"))]
#[x_kube(validation = Rule::new("self.runnerType == 'project_type' ? has(self.project) : !has(self.project)").message("project is required when runnerType is project_type, and not allowed for other runner types"))]
#[x_kube(validation = Rule::new("!has(self.assignedProjects) || size(self.assignedProjects) == 0 || self.runnerType == 'project_type'").message("assignedProjects is only allowed when runnerType is project_type"))]
#[x_kube(validation = Rule::new("!has(self.runUntagged) || self.runUntagged || (has(self.tags) && size(self.tags) > 0)").message("runUntagged: false needs at least one tag, or the runner could never pick up a job"))]
#[x_kube(validation = Rule::new("has(self.group) == has(oldSelf.group) && (!has(self.group) || self.group == oldSelf.group)").message("group is immutable: a runner cannot move to another group; create a new Runner instead"))]
#[x_kube(validation = Rule::new("has(self.project) == has(oldSelf.project) && (!has(self.project) || self.project == oldSelf.project)").message("project is immutable: a runner's owner project cannot change; create a new Runner instead"))]
pub struct RunnerSpec {
    /// The GitLabConnection (same namespace) or ClusterGitLabConnection that says which GitLab to
    /// talk to and with which access token.
    pub connection_ref: ConnectionRef,

    /// Scope of the runner: instance_type (whole instance, needs an admin token), group_type
    /// (a group and its subgroups) or project_type (a project, plus assignedProjects). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("runnerType is immutable: create a new Runner instead"))]
    pub runner_type: RunnerType,

    /// The group that owns a group_type runner: numeric id or full path (e.g. `platform/ci`).
    /// Required for group_type, not allowed otherwise. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub group: Option<String>,

    /// The owner project of a project_type runner: numeric id or full path (e.g. `platform/api`).
    /// Required for project_type, not allowed otherwise. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub project: Option<String>,

    /// Further projects (ids or full paths) a project_type runner is assigned to, besides its owner
    /// project. Projects assigned by hand in GitLab and not listed here are unassigned. At most
    /// 200 (a runner shared that widely is better a group runner).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200), inner(length(max = 2048)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("assignedProjects entries must not be empty"))]
    pub assigned_projects: Vec<String>,

    /// Description shown in GitLab (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Job tags the runner picks up: a set of at most 50 non-empty tags without commas, each at
    /// most 255 characters (GitLab's limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(max = 255)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(t, t.matches('^[^,\\\\s]([^,]*[^,\\\\s])?$'))").message("tags must be non-empty and contain no commas or leading/trailing spaces (GitLab splits tags on commas)"))]
    pub tags: Vec<String>,

    /// Whether the runner also picks up jobs without tags. GitLab's default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_untagged: Option<bool>,

    /// Pause the runner: it stays registered but picks up no jobs. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// Lock a project runner to its current projects (GitLab then refuses further assignment by
    /// non-admins). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,

    /// Which jobs the runner picks up: `not_protected` (any branch, the default) or
    /// `ref_protected` (protected branches and tags only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<AccessLevel>,

    /// Maximum job timeout in seconds; GitLab's minimum is 600 (10 minutes). Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 600))]
    pub maximum_timeout: Option<i64>,

    /// Free-text maintenance note shown to maintainers in GitLab (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("!self.contains('[runner-operator: managed by')").message("maintenanceNote must not contain an ownership marker ('[runner-operator: managed by …]'): the operator appends the real one"))]
    pub maintenance_note: Option<String>,

    /// How the runner is created in GitLab. Default: `POST /user/runners` with the connection's
    /// token (strategy UserRunner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,

    /// The Secret that receives the runner's authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<TokenSecret>,

    /// When to rotate the authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotation: Option<TokenRotation>,

    /// What happens in GitLab when this Runner is deleted: Delete (default) removes the runner,
    /// Orphan leaves it registered. Switch to Orphan to release a Runner whose GitLab is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Take over an existing GitLab runner by id instead of creating one. GitLab never reveals an
    /// existing token, so adoption resets it: the old token stops working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Adopt>,
}

/// Reference to the connection a Runner uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// GitLabConnection (same namespace as the Runner, the default) or ClusterGitLabConnection.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// Name of the connection.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Which connection kind a Runner refers to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ConnectionKind {
    /// A namespaced GitLabConnection in the Runner's namespace.
    #[default]
    GitLabConnection,
    /// A cluster-scoped ClusterGitLabConnection.
    ClusterGitLabConnection,
}

/// GitLab's runner scopes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunnerType {
    /// Available to every project of the instance (admin only).
    InstanceType,
    /// Available to a group's projects and subgroups.
    GroupType,
    /// Available to its owner project and assigned projects.
    ProjectType,
}

impl RunnerType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::InstanceType => "instance_type",
            RunnerType::GroupType => "group_type",
            RunnerType::ProjectType => "project_type",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// Jobs from any ref.
    NotProtected,
    /// Only jobs from protected branches and tags.
    RefProtected,
}

impl AccessLevel {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::NotProtected => "not_protected",
            AccessLevel::RefProtected => "ref_protected",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove the runner from GitLab (a runner already gone counts as removed).
    #[default]
    Delete,
    /// Leave the runner registered in GitLab.
    Orphan,
}

/// How the runner is created in GitLab.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.strategy != 'RegistrationToken' || has(self.registrationTokenSecretRef)").message("strategy RegistrationToken needs registrationTokenSecretRef"))]
pub struct Registration {
    /// UserRunner (default): `POST /user/runners` with the connection's access token (GitLab 16+).
    /// RegistrationToken: the legacy `POST /runners` with a registration token (older GitLab and
    /// JiHu instances; disabled by default since GitLab 17.0).
    #[serde(default)]
    pub strategy: RegistrationStrategy,
    /// Secret key holding the registration token, for strategy RegistrationToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token_secret_ref: Option<SecretKeyRef>,
}

/// Runner creation flows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RegistrationStrategy {
    /// `POST /user/runners` with the connection's access token.
    #[default]
    UserRunner,
    /// Legacy `POST /runners` with a registration token.
    RegistrationToken,
}

/// The Secret that receives the authentication token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecret {
    /// Secret name (a DNS subdomain: lowercase letters, digits, `-` and `.`). Default
    /// `<runner name>-runner-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,
    /// Keys written: GitLabRunnerChart (default; `runner-token` plus an empty
    /// `runner-registration-token`, both of which the gitlab-runner Helm chart mounts) or
    /// GitLabRunnerOperator (`runner-token` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SecretFormat>,
    /// Extra labels on the Secret (Kubernetes label syntax: keys `[prefix/]name`, values at
    /// most 63 characters of letters, digits, `-`, `_` and `.`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "label_map")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("tokenSecret.labels keys must be label keys: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.'"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret (keys as label keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotation_map")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("tokenSecret.annotations keys must be annotation keys: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.'"))]
    pub annotations: BTreeMap<String, String>,
    /// Workloads in the Runner's namespace that mount the Secret; each new token triggers a
    /// rolling restart of them (a pod-template annotation changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SecretFormat {
    /// `runner-token` and an empty `runner-registration-token`, for the gitlab-runner Helm chart.
    #[default]
    GitLabRunnerChart,
    /// `runner-token` only, for GitLab's Runner Operator.
    GitLabRunnerOperator,
}

/// At most 64 labels, values as Kubernetes accepts them (the bound keeps the key rule's CEL
/// cost within the API server's budget).
fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
        }
    })
}

/// At most 64 annotations.
fn annotation_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 65536}
    })
}

/// A workload restarted after each new token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: ConsumerKind,
    /// Name of the workload in the Runner's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Workload kinds that can consume the token Secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConsumerKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// The shortest rotation interval: each rotation kills the live token and restarts the
/// consumers, so anything shorter is a loop, not a policy.
pub const MIN_ROTATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// When to rotate the authentication token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.interval) || self.interval.contains('d') || duration(self.interval) >= duration('10m')").message("tokenRotation.interval must be at least 10m: every rotation kills the live token and restarts the consumers (e.g. 720h)"))]
pub struct TokenRotation {
    /// Rotate this long after the token was issued (Go duration, at least `10m`, e.g. `720h`).
    /// Unset: no time-based rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        regex(pattern = super::duration::DURATION_PATTERN)
    )]
    pub interval: Option<String>,
    /// Rotate when the token expires within this window (Go duration, e.g. `24h`). Default: a
    /// third of the token's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        regex(pattern = super::duration::DURATION_PATTERN)
    )]
    pub before_expiry: Option<String>,
}

/// Adoption of an existing GitLab runner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Adopt {
    /// The GitLab runner id to take over.
    #[schemars(range(min = 1))]
    pub runner_id: i64,
}

/// Observed state of a Runner.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// GitLab's id of the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<i64>,
    /// When the current token was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued_at: Option<String>,
    /// When the current token expires (RFC 3339); unset when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    /// Why the current token was issued: Created, Interval, Expiry, Requested, Recovered, Adopted,
    /// TakenOver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_reason: Option<String>,
    /// What GitLab reports about the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitLabRunnerState>,
    /// Resolved ids of the projects the runner serves (owner first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_ids: Vec<i64>,
    /// Resolved id of the owner group (group_type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    /// Name of the token Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    /// Short SHA-256 of the token last written to the Secret (never the token): a Secret whose
    /// token does not match was edited by hand and is recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// The token Secret's resourceVersion as the operator last wrote it: a Secret still at that
    /// version needs no read after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_version: Option<String>,
    /// Set just before a runner is created in GitLab and cleared once its id is recorded: if a
    /// crash comes in between, the next pass looks for the runner by its marker instead of
    /// creating a second one. A create with no token Secret yet records this in the Secret it
    /// writes first instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_started: Option<String>,
    /// A token reset recorded before calling GitLab; set until the new token is in the Secret, so
    /// a crash in between makes the next pass reset again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_rotation: Option<String>,
    /// The last value of the gitlab.runner-operator.dev/rotate-token annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate_request: Option<String>,
    /// Workloads restarted after the last token change (kind/name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted_consumers: Vec<String>,
    /// Current state, with Ready as the summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// GitLab's view of the runner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitLabRunnerState {
    /// GitLab's status of the runner: online, offline, stale, never_contacted or paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Last contact of a runner process with GitLab, as of the last read of the managers (it
    /// moves every few seconds in GitLab; status follows at most every ten resyncs, or when
    /// GitLab's status of the runner changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacted_at: Option<String>,
    /// The runner managers (runner processes using this runner's token), from
    /// `GET /runners/:id/managers`; refreshed when GitLab's status of the runner changes and at
    /// least every ten resyncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managers: Option<ManagersState>,
}

/// A summary of a runner's managers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagersState {
    /// How many managers are registered.
    pub count: u32,
    /// How many of them are online (contacted GitLab recently).
    pub online: u32,
    /// `online/count`, as `kubectl get` shows it.
    pub summary: String,
    /// The versions they report, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The versions joined by commas, as `kubectl get` shows them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Their platforms as platform/architecture, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The latest contact of any of them with GitLab (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_at: Option<String>,
}

impl Runner {
    /// The Secret name: `spec.tokenSecret.name` or `<runner>-runner-token`.
    pub fn token_secret_name(&self) -> String {
        self.spec
            .token_secret
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| {
                format!(
                    "{}-runner-token",
                    self.metadata.name.as_deref().unwrap_or("runner")
                )
            })
    }
}
