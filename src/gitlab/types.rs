//! Request and response bodies of the Runners API (GitLab's own field names).

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

/// A GitLab runner's id: what the Runners API's `:id` and `runner_id` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunnerId(pub i64);

impl std::fmt::Display for RunnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<RunnerId> for i64 {
    fn from(id: RunnerId) -> i64 {
        id.0
    }
}

/// A runner in list answers (`Runner` entity).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Runner {
    pub id: RunnerId,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub paused: Option<bool>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub is_shared: Option<bool>,
    pub runner_type: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A project as listed in runner details (the identity fields).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ProjectRef {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path_with_namespace: Option<String>,
}

/// A group as listed in runner details.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct GroupRef {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
}

/// `GET/PUT /runners/:id` (`RunnerDetails` entity).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RunnerDetails {
    pub id: RunnerId,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub paused: Option<bool>,
    #[serde(default)]
    pub active: Option<bool>,
    pub runner_type: String,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tag_list: Vec<String>,
    #[serde(default)]
    pub run_untagged: Option<bool>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub maximum_timeout: Option<i64>,
    #[serde(default)]
    pub access_level: Option<String>,
    #[serde(default)]
    pub contacted_at: Option<String>,
    #[serde(default)]
    pub maintenance_note: Option<String>,
    #[serde(default)]
    pub projects: Vec<ProjectRef>,
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    /// Only newer GitLab emits it (null when unset).
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

impl RunnerDetails {
    /// `paused`, falling back to the deprecated `active` on older GitLab.
    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or_else(|| !self.active.unwrap_or(true))
    }
}

/// Answer of runner creation, registration and verify: the token is shown this once.
#[derive(Deserialize)]
pub struct RunnerRegistration {
    pub id: RunnerId,
    #[serde(deserialize_with = "secret")]
    pub token: SecretString,
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

impl std::fmt::Debug for RunnerRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerRegistration")
            .field("id", &self.id)
            .field("token", &"[REDACTED]")
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

/// Answer of the token reset endpoints.
#[derive(Deserialize)]
pub struct ResetToken {
    #[serde(deserialize_with = "secret")]
    pub token: SecretString,
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

impl std::fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetToken")
            .field("token", &"[REDACTED]")
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

/// `GET /runners/:id/managers` items.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RunnerManager {
    pub id: i64,
    pub system_id: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub contacted_at: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /runners/:id/jobs` items (what an operator reads).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Job {
    pub id: i64,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub pipeline: Option<PipelineRef>,
    #[serde(default)]
    pub project: Option<ProjectRef>,
}

/// The pipeline a job belongs to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PipelineRef {
    pub id: i64,
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /projects/:id`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub path_with_namespace: String,
}

/// `GET /groups/:id`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub full_path: String,
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub revision: Option<String>,
}

/// `GET /user`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    #[serde(default)]
    pub is_admin: Option<bool>,
}

/// Filters of the runner list endpoints. Unset fields are not sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunnerFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub runner_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Sent comma-joined; the runner must carry every tag.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "comma_joined"
    )]
    pub tag_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_prefix: Option<String>,
}

fn comma_joined<S: serde::Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(tags) => s.serialize_str(&tags.join(",")),
        None => s.serialize_none(),
    }
}

/// Filters of `GET /runners/:id/jobs`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct JobFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

/// Runner attributes settable at creation and update. Unset fields are not sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunnerAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_untagged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_level: Option<String>,
    /// `Some(None)` sends JSON null, which clears the timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_timeout: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_note: Option<String>,
}

impl RunnerAttributes {
    /// True when nothing would be sent (GitLab refuses an empty PUT with 400).
    pub fn is_empty(&self) -> bool {
        *self == RunnerAttributes::default()
    }
}

/// `POST /user/runners`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CreateUserRunner {
    pub runner_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    #[serde(flatten)]
    pub attributes: RunnerAttributes,
}

/// `GET /personal_access_tokens/self`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AccessTokenInfo {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub revoked: bool,
    /// YYYY-MM-DD; None: never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
}
