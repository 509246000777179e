//! The emulated GitLab's state and rules (no HTTP here).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Milliseconds since the Unix epoch, on the emulator's (movable) clock.
pub type Millis = i64;

/// GitLab membership roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest = 10,
    Reporter = 20,
    Developer = 30,
    Maintainer = 40,
    Owner = 50,
}

/// A user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub admin: bool,
}

/// A personal/group/project access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub id: i64,
    pub name: String,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub expired: bool,
    pub revoked: bool,
    /// Expiry date (YYYY-MM-DD), as GitLab stores it; None: never.
    pub expires_at: Option<String>,
}

/// A group (full path `a/b`, parent `a`).
#[derive(Debug, Clone)]
pub struct Group {
    pub id: i64,
    pub full_path: String,
    pub parent: Option<i64>,
    pub members: HashMap<i64, Role>,
    pub registration_token: String,
    pub runner_token_expiration_interval: Option<i64>,
    pub allow_registration_token: bool,
}

/// A project.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: i64,
    pub path_with_namespace: String,
    pub group: Option<i64>,
    pub members: HashMap<i64, Role>,
    pub registration_token: String,
    pub runner_token_expiration_interval: Option<i64>,
    pub shared_runners_enabled: bool,
    pub group_runners_enabled: bool,
}

impl Project {
    pub fn name(&self) -> &str {
        self.path_with_namespace
            .rsplit('/')
            .next()
            .unwrap_or(&self.path_with_namespace)
    }
}

/// Instance-wide settings (seconds for intervals).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub version: String,
    pub allow_runner_registration_token: bool,
    pub registration_token: String,
    pub runner_token_expiration_interval: Option<i64>,
    pub group_runner_token_expiration_interval: Option<i64>,
    pub project_runner_token_expiration_interval: Option<i64>,
    /// Rack::Attack-style throttle for authenticated API traffic: `limit` requests per
    /// `period_seconds` per user. Absent: off (the self-managed default).
    pub throttle: Option<Throttle>,
    /// Send `Retry-After` as an HTTP date instead of seconds (both forms are legal; proxies
    /// in front of GitLab use either).
    pub retry_after_http_date: bool,
    /// Serve `GET /personal_access_tokens/self` (GitLab 15.5 and later); false: 404 as older
    /// versions answer.
    pub personal_access_token_self: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version: "18.6.0-ee".into(),
            allow_runner_registration_token: false,
            registration_token: "instance-registration-token".into(),
            runner_token_expiration_interval: None,
            group_runner_token_expiration_interval: None,
            project_runner_token_expiration_interval: None,
            throttle: None,
            retry_after_http_date: false,
            personal_access_token_self: true,
        }
    }
}

/// A request throttle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throttle {
    pub limit: u64,
    pub period_seconds: u64,
}

/// A runner manager (one per `system_id` that verified).
#[derive(Debug, Clone)]
pub struct Manager {
    pub id: i64,
    pub system_id: String,
    pub created_at: Millis,
    pub contacted_at: Millis,
    /// What the runner process reports in `info` (verify and job requests); null until it does.
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub executor: Option<String>,
}

impl Manager {
    /// A manager as the first verify or job request with a new `system_id` creates it.
    pub fn new(id: i64, system_id: String, now: Millis) -> Manager {
        Manager {
            id,
            system_id,
            created_at: now,
            contacted_at: now,
            version: None,
            revision: None,
            platform: None,
            architecture: None,
            executor: None,
        }
    }

    /// Records what the runner process reported in `info` (GitLab's `ensure_runner_manager`
    /// plus `heartbeat`): fields it sent replace the old ones, the others stay.
    pub fn apply_info(&mut self, info: Option<&serde_json::Value>) {
        let Some(info) = info.and_then(|v| v.as_object()) else {
            return;
        };
        let field = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_string);
        for (slot, key) in [
            (&mut self.version, "version"),
            (&mut self.revision, "revision"),
            (&mut self.platform, "platform"),
            (&mut self.architecture, "architecture"),
            (&mut self.executor, "executor"),
        ] {
            if let Some(v) = field(key) {
                *slot = Some(v);
            }
        }
    }
}

/// A job a runner ran (seeded by tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobRec {
    pub id: i64,
    pub status: String,
    pub project_id: i64,
    #[serde(default)]
    pub system_id: Option<String>,
    /// Branch or tag; "main" when unset.
    #[serde(default)]
    pub git_ref: Option<String>,
    /// The pipeline's id; the job's id when unset.
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    /// When it started (ms since the epoch); unset: not started.
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// Seconds it ran (finished jobs).
    #[serde(default)]
    pub duration: Option<f64>,
}

/// A runner as GitLab stores it.
#[derive(Debug, Clone)]
pub struct RunnerRec {
    pub id: i64,
    pub runner_type: String,
    pub description: Option<String>,
    pub name: Option<String>,
    pub paused: bool,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub access_level: String,
    pub maximum_timeout: Option<i64>,
    pub maintenance_note: Option<String>,
    /// Associated projects, owner first.
    pub projects: Vec<i64>,
    pub group: Option<i64>,
    pub token: String,
    pub token_expires_at: Option<Millis>,
    pub contacted_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub created_by: Option<i64>,
    pub managers: Vec<Manager>,
    pub jobs: Vec<JobRec>,
}

/// Formats a time as GitLab does: ISO 8601 UTC with milliseconds.
pub fn iso(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

const ONLINE_MS: i64 = 2 * 3600 * 1000;
const STALE_MS: i64 = 7 * 24 * 3600 * 1000;

impl RunnerRec {
    /// REST `status`: stale → never_contacted → paused → online/offline.
    pub fn rest_status(&self, now: Millis) -> &'static str {
        let last = self
            .contacted_at
            .unwrap_or(self.created_at)
            .max(self.created_at);
        if last <= now - STALE_MS {
            "stale"
        } else if self.contacted_at.is_none() {
            "never_contacted"
        } else if self.paused {
            "paused"
        } else if self.is_online(now) == Some(true) {
            "online"
        } else {
            "offline"
        }
    }

    /// `online`: null when never contacted.
    pub fn is_online(&self, now: Millis) -> Option<bool> {
        self.contacted_at.map(|c| c > now - ONLINE_MS)
    }

    pub fn is_stale(&self, now: Millis) -> bool {
        self.created_at <= now - STALE_MS && self.contacted_at.is_none_or(|c| c <= now - STALE_MS)
    }

    /// Matches a `status`/`scope` filter value.
    pub fn matches_status(&self, status: &str, now: Millis) -> bool {
        match status {
            "online" => self.contacted_at.is_some_and(|c| c > now - ONLINE_MS),
            "offline" => self.contacted_at.is_some_and(|c| c <= now - ONLINE_MS),
            "never_contacted" => self.contacted_at.is_none(),
            "stale" => self.is_stale(now),
            "active" => !self.paused,
            "paused" => self.paused,
            "specific" => self.runner_type != "instance_type",
            "shared" => self.runner_type == "instance_type",
            t @ ("instance_type" | "group_type" | "project_type") => self.runner_type == t,
            _ => false,
        }
    }

    pub fn token_expired(&self, now: Millis) -> bool {
        self.token_expires_at.is_some_and(|e| e <= now)
    }
}

/// The whole emulated instance.
#[derive(Debug, Default)]
pub struct State {
    pub clock_offset_ms: i64,
    pub settings: Settings,
    pub users: BTreeMap<i64, User>,
    pub tokens: HashMap<String, AccessToken>,
    pub groups: BTreeMap<i64, Group>,
    pub projects: BTreeMap<i64, Project>,
    pub runners: BTreeMap<i64, RunnerRec>,
    pub next_id: i64,
    pub next_runner_id: i64,
    /// Requests per endpoint label (`GET /runners/:id`).
    pub counts: BTreeMap<String, u64>,
    /// Throttle windows: (user, window start) → requests.
    pub throttle_windows: HashMap<(i64, u64), u64>,
    /// Requests answered 429 by the throttle.
    pub throttled: u64,
    /// Every API request in arrival order (not the control endpoints).
    pub log: Vec<LoggedRequest>,
}

/// One API request as the emulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// When it arrived (wall clock, so it compares with HTTP dates).
    pub at: std::time::SystemTime,
    /// Endpoint label, e.g. `GET /runners/:id`.
    pub endpoint: String,
    pub status: u16,
    /// For a 429: until when the caller was told to wait.
    pub retry_until: Option<std::time::SystemTime>,
    /// The access token it came with (`PRIVATE-TOKEN` or bearer), if any.
    pub token: Option<String>,
}

impl State {
    pub fn now(&self) -> Millis {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.clock_offset_ms
    }

    pub fn alloc_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == name)
    }

    pub fn find_group(&self, id_or_path: &str) -> Option<&Group> {
        match id_or_path.parse::<i64>() {
            Ok(id) => self.groups.get(&id),
            Err(_) => self.groups.values().find(|g| g.full_path == id_or_path),
        }
    }

    pub fn find_project(&self, id_or_path: &str) -> Option<&Project> {
        match id_or_path.parse::<i64>() {
            Ok(id) => self.projects.get(&id),
            Err(_) => self
                .projects
                .values()
                .find(|p| p.path_with_namespace == id_or_path),
        }
    }

    /// The group and its ancestors, nearest first.
    pub fn group_chain(&self, group: Option<i64>) -> Vec<&Group> {
        let mut out = Vec::new();
        let mut cur = group;
        while let Some(id) = cur {
            let Some(g) = self.groups.get(&id) else { break };
            out.push(g);
            cur = g.parent;
            if out.len() > 50 {
                break;
            }
        }
        out
    }

    pub fn group_role(&self, user: &User, group: i64) -> Option<Role> {
        self.group_chain(Some(group))
            .iter()
            .filter_map(|g| g.members.get(&user.id).copied())
            .max()
    }

    pub fn project_role(&self, user: &User, project: i64) -> Option<Role> {
        let p = self.projects.get(&project)?;
        let inherited = self
            .group_chain(p.group)
            .iter()
            .filter_map(|g| g.members.get(&user.id).copied())
            .max();
        p.members.get(&user.id).copied().max(inherited)
    }

    /// Every project and group is private here: visible to admins and members.
    pub fn project_visible(&self, user: &User, project: i64) -> bool {
        user.admin || self.project_role(user, project).is_some()
    }

    pub fn group_visible(&self, user: &User, group: i64) -> bool {
        user.admin || self.group_role(user, group).is_some()
    }

    fn is_maintainer_of_any(&self, user: &User, projects: &[i64]) -> bool {
        projects.iter().any(|p| {
            self.project_role(user, *p)
                .is_some_and(|r| r >= Role::Maintainer)
        })
    }

    pub fn can_read_runner(&self, user: &User, r: &RunnerRec) -> bool {
        if user.admin {
            return true;
        }
        match r.runner_type.as_str() {
            "instance_type" => true,
            "group_type" => r
                .group
                .and_then(|g| self.group_role(user, g))
                .is_some_and(|role| role >= Role::Maintainer),
            _ => self.is_maintainer_of_any(user, &r.projects),
        }
    }

    pub fn can_update_runner(&self, user: &User, r: &RunnerRec) -> bool {
        if user.admin {
            return true;
        }
        match r.runner_type.as_str() {
            "instance_type" => false,
            "group_type" => r.group.and_then(|g| self.group_role(user, g)) == Some(Role::Owner),
            _ => {
                let owner = r.projects.first().copied();
                owner.is_some_and(|o| self.is_maintainer_of_any(user, &[o]))
                    || (r.projects.len() > 1 && self.is_maintainer_of_any(user, &r.projects))
            }
        }
    }

    pub fn can_delete_runner(&self, user: &User, r: &RunnerRec) -> bool {
        if user.admin {
            return true;
        }
        match r.runner_type.as_str() {
            "instance_type" => false,
            "group_type" => r.group.and_then(|g| self.group_role(user, g)) == Some(Role::Owner),
            _ => r.projects.len() == 1 && self.is_maintainer_of_any(user, &r.projects[..1]),
        }
    }

    /// `token_expires_at` for a new token: now + the smallest applicable interval.
    pub fn token_expiry(&self, r: &RunnerRec, now: Millis) -> Option<Millis> {
        let s = &self.settings;
        let interval = match r.runner_type.as_str() {
            "instance_type" => s.runner_token_expiration_interval,
            "group_type" => {
                let g = r
                    .group
                    .and_then(|g| self.groups.get(&g))
                    .and_then(|g| g.runner_token_expiration_interval);
                min_opt(g, s.group_runner_token_expiration_interval)
            }
            _ => r
                .projects
                .iter()
                .filter_map(|p| self.projects.get(p))
                .map(|p| {
                    min_opt(
                        p.runner_token_expiration_interval,
                        s.project_runner_token_expiration_interval,
                    )
                })
                .fold(None, min_opt),
        };
        interval.map(|secs| now + secs * 1000)
    }

    pub fn new_runner_token(&self, runner_type: &str, legacy: bool) -> String {
        let partition = match runner_type {
            "instance_type" => "t1_",
            "group_type" => "t2_",
            _ => "t3_",
        };
        let prefix = if legacy { "" } else { "glrt-" };
        format!("{prefix}{partition}{}", random_string(20))
    }

    pub fn runner_by_token(&self, token: &str) -> Option<&RunnerRec> {
        self.runners.values().find(|r| r.token == token)
    }

    // ---- Entities ----

    pub fn runner_entity(&self, r: &RunnerRec, now: Millis) -> Value {
        json!({
            "id": r.id,
            "description": r.description,
            "ip_address": null,
            "active": !r.paused,
            "paused": r.paused,
            "is_shared": r.runner_type == "instance_type",
            "runner_type": r.runner_type,
            "name": r.name,
            "online": r.is_online(now),
            "created_at": iso(r.created_at),
            "status": r.rest_status(now),
            "job_execution_status": if r.jobs.iter().any(|j| j.status == "running") { "active" } else { "idle" },
        })
    }

    pub fn project_entity(&self, p: &Project) -> Value {
        let namespace = p
            .path_with_namespace
            .rsplit_once('/')
            .map(|(ns, _)| ns)
            .unwrap_or("");
        json!({
            "id": p.id,
            "description": null,
            "name": p.name(),
            "name_with_namespace": p.path_with_namespace.replace('/', " / "),
            "path": p.name(),
            "path_with_namespace": p.path_with_namespace,
            "namespace": {"full_path": namespace},
            "created_at": "2024-01-02T03:04:05.000Z",
        })
    }

    pub fn group_entity(&self, g: &Group) -> Value {
        let name = g.full_path.rsplit('/').next().unwrap_or(&g.full_path);
        json!({
            "id": g.id,
            "name": name,
            "path": name,
            "full_path": g.full_path,
            "full_name": g.full_path.replace('/', " / "),
            "parent_id": g.parent,
            "web_url": format!("https://gitlab.example.com/groups/{}", g.full_path),
        })
    }

    pub fn runner_details(
        &self,
        user: &User,
        r: &RunnerRec,
        now: Millis,
        include_projects: bool,
    ) -> Value {
        let mut v = self.runner_entity(r, now);
        let manager = r.managers.iter().max_by_key(|m| m.contacted_at);
        let obj = v.as_object_mut().expect("entity is an object");
        obj.insert("tag_list".into(), json!(r.tags));
        obj.insert("run_untagged".into(), json!(r.run_untagged));
        obj.insert("locked".into(), json!(r.locked));
        obj.insert("maximum_timeout".into(), json!(r.maximum_timeout));
        obj.insert("access_level".into(), json!(r.access_level));
        obj.insert("version".into(), json!(manager.map(|m| &m.version)));
        obj.insert("revision".into(), json!(manager.map(|m| &m.revision)));
        obj.insert("platform".into(), json!(manager.map(|m| &m.platform)));
        obj.insert(
            "architecture".into(),
            json!(manager.map(|m| &m.architecture)),
        );
        obj.insert("contacted_at".into(), json!(r.contacted_at.map(iso)));
        let note = if self.can_update_runner(user, r) {
            r.maintenance_note.clone()
        } else {
            None
        };
        obj.insert("maintenance_note".into(), json!(note));
        if include_projects {
            let projects: Vec<Value> = r
                .projects
                .iter()
                .filter(|p| user.admin || self.project_role(user, **p).is_some())
                .filter_map(|p| self.projects.get(p))
                .map(|p| self.project_entity(p))
                .collect();
            obj.insert("projects".into(), json!(projects));
        }
        let groups: Vec<Value> = r
            .group
            .iter()
            .filter(|g| user.admin || self.group_role(user, **g).is_some())
            .filter_map(|g| self.groups.get(g))
            .map(|g| json!({"id": g.id, "web_url": format!("https://gitlab.example.com/groups/{}", g.full_path), "name": g.full_path.rsplit('/').next()}))
            .collect();
        obj.insert("groups".into(), json!(groups));
        v
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub use crate::text::{parse_tags, random_string};
