//! `GitLabConnection` (namespaced) and `ClusterGitLabConnection` (cluster-scoped): where GitLab is
//! and how to authenticate — the Issuer/ClusterIssuer pattern.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const URL_RULE: &str = "self.url.startsWith('https://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP && self.url.startsWith('http://'))";
const URL_MESSAGE: &str = "url must start with https:// (http:// only with allowInsecureHTTP: true, meant for local emulators)";

/// A GitLab instance and the access token used for it, for Runners in the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gitlab.runner-operator.dev",
    version = "v1alpha1",
    kind = "GitLabConnection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "glconn",
    category = "gitlab",
    derive = "PartialEq",
    doc = "A GitLab instance and the access token Runners in this namespace use to manage runners there.",
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.url",
        description = "The GitLab instance."
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.gitlabVersion",
        description = "GitLab's version, from the last connection check."
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the last connection check passed (the Ready condition)."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
pub struct GitLabConnectionSpec {
    /// Base URL of the GitLab instance, e.g. https://gitlab.example.com (`/api/v4` is appended).
    #[schemars(length(min = 8))]
    pub url: String,
    /// Secret key (in this namespace) holding a personal, group or project access token with the
    /// scopes create_runner + manage_runner (+ read_api), or api.
    pub token_secret_ref: SecretKeyRef,
    #[serde(flatten)]
    pub client: ClientSettings,
}

/// A GitLab instance and access token usable by Runners in several namespaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gitlab.runner-operator.dev",
    version = "v1alpha1",
    kind = "ClusterGitLabConnection",
    status = "ConnectionStatus",
    shortname = "clglconn",
    category = "gitlab",
    derive = "PartialEq",
    doc = "A GitLab instance and access token shared by Runners across namespaces.",
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.url",
        description = "The GitLab instance."
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.gitlabVersion",
        description = "GitLab's version, from the last connection check."
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the last connection check passed (the Ready condition)."
    ),
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.tenancy.rules",
        priority = 1,
        description = "How many tenancy rules spec.tenancy has (0: the default lane)."
    ),
    printcolumn(
        name = "Runners",
        type_ = "string",
        json_path = ".status.tenancy.runners",
        priority = 1,
        description = "How many Runners each rule matched at the last connection check (rule: count)."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
pub struct ClusterGitLabConnectionSpec {
    /// Base URL of the GitLab instance, e.g. https://gitlab.com (`/api/v4` is appended).
    #[schemars(length(min = 8))]
    pub url: String,
    /// Secret key holding the access token; `namespace` defaults to the operator's namespace.
    pub token_secret_ref: NamespacedSecretKeyRef,
    /// Namespaces whose Runners may use this connection. Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// What each namespace may do through this connection's token. Absent: project and group
    /// runners anywhere the token reaches, no instance runners, no adoption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Tenancy>,
    #[serde(flatten)]
    pub client: ClientSettings,
}

/// Tenancy rules: evaluated in order, the first whose `namespaces` match the Runner's namespace
/// decides; a namespace no rule matches may do nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenancy {
    /// The rules, first match wins (at most 64).
    #[schemars(length(max = 64))]
    pub rules: Vec<TenancyRule>,
}

/// What the namespaces a rule matches may do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenancyRule {
    /// Named in conditions, events and status. Default: `rules[INDEX]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// The namespaces this rule is for: listed by name or matched by labels (either suffices).
    pub namespaces: AllowedNamespaces,
    /// Runner types they may manage. Default: project_type and group_type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_types: Vec<crate::crd::RunnerType>,
    /// Globs over the full paths of the owner project or group and of every assigned project:
    /// `*` matches within one path segment, `**` any number of segments, `${namespace}` stands
    /// for the Runner's namespace (e.g. `team/${namespace}/**`). Empty: any path the token
    /// reaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub paths: Vec<String>,
    /// Whether they may adopt existing runners (`spec.adopt`). Default Never.
    #[serde(default)]
    pub adopt: AdoptPolicy,
}

/// Which existing runners a namespace may take over.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AdoptPolicy {
    /// No adoption.
    #[default]
    Never,
    /// Only runners whose owner project or group and every assigned project match `paths`.
    WithinPaths,
    /// Any runner the token reaches (that no other Runner manages).
    Any,
}

/// Settings shared by both connection kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSettings {
    /// Allow an http:// url. Only for local emulators: the token travels in clear text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "allowInsecureHTTP"
    )]
    pub allow_insecure_http: Option<bool>,
    /// Secret key with PEM CA certificates to trust for this GitLab (added to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// ConfigMap key with PEM CA certificates to trust for this GitLab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_config_map_ref: Option<ConfigMapKeyRef>,
    /// Skip TLS certificate verification. Dangerous: reported in the connection's status.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "insecureSkipTLSVerify"
    )]
    pub insecure_skip_tls_verify: Option<bool>,
    /// Client-side request rate limit shared by every Runner using this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Timeout of one GitLab request in seconds. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<i64>,
}

/// A token bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 10000.0))]
    pub requests_per_second: Option<f64>,
    /// Requests allowed in a burst. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<i64>,
}

/// A key in a Secret of the connection's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data. Default `token` (`ca.crt` for CA bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A key in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the ConfigMap. Default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A key in a Secret of a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the Secret. Default: the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key in the Secret's data. Default `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Namespaces allowed to use a ClusterGitLabConnection: listed by name or matched by labels
/// (either suffices).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Label selector on namespaces, with Kubernetes' semantics: `{}` selects every namespace;
    /// unset selects none (only `names` count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Observed state of a connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// GitLab's version, from `GET /version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_version: Option<String>,
    /// The user the access token belongs to, from `GET /user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The access token itself, from `GET /personal_access_tokens/self` (unset where GitLab
    /// does not serve it, before 15.5, or for OAuth tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<AccessTokenState>,
    /// ClusterGitLabConnection only: its tenancy rules and the Runners each matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<TenancyStatus>,
    /// Ready after a successful live check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What a ClusterGitLabConnection's tenancy covers, counted at each connection check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenancyStatus {
    /// How many rules spec.tenancy has (0: none, the default lane).
    pub rules: i64,
    /// Runners using the connection per deciding rule, e.g. `team-a: 3, platform: 1`; Runners
    /// of namespaces no rule matches count as `unmatched`.
    pub runners: String,
}

/// What GitLab says about a connection's access token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenState {
    /// The token's name in GitLab.
    pub name: String,
    /// Its scopes, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Its expiry date (YYYY-MM-DD; it stops working at 00:00 UTC that day); unset when it
    /// does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whether GitLab considers it active (not revoked, not expired).
    #[serde(default)]
    pub active: bool,
}
