//! An in-memory GitLab that serves the Runners API on 127.0.0.1, faithful to GitLab's own
//! sources (`lib/api/ci/runners.rb`, `lib/api/user_runners.rb`, `lib/api/ci/runner.rb` and the
//! models and policies they use). Test support and the operator's sandbox;
//! it knows nothing of the operator.
//!
//! Control surface: the methods of [`GitLabEmulator`] in-process, or over HTTP under
//! `/-/emulator/` (seed, state, faults, clock, counts) for the standalone binary.

mod control;
pub mod fixtures;
pub mod model;
mod server;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use model::{AccessToken, Group, Project, State, User};
pub use model::{JobRec, Role, Settings, Throttle};

/// What an injected fault does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status (and body; default: a JSON message, or Rack::Attack's plain-text
    /// 429) and optional `Retry-After` seconds.
    Status {
        status: u16,
        #[serde(default)]
        body: Option<serde_json::Value>,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Wait, then answer normally.
    Delay { millis: u64 },
    /// Close the connection mid-response, without processing the request.
    Drop,
    /// Process the request, then close the connection mid-response: GitLab did the work but
    /// the caller never hears of it (a lost answer).
    LoseAnswer,
}

/// A fault on matching requests, `times` times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Endpoint label such as `GET /runners/:id` (exact), or absent for any.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Substring of the raw request path, or absent for any.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Only the management API's writes (any method but GET and HEAD; not the runner-side
    /// `/runners/verify`, `/runners/managers` and `/jobs/...` a runner process calls).
    #[serde(default)]
    pub writes_only: bool,
    /// How many matching requests pass untouched before it applies (a crash at the n-th write:
    /// `skip: n - 1`).
    #[serde(default)]
    pub skip: u32,
    /// How many matching requests it applies to.
    pub times: u32,
    pub action: FaultAction,
}

/// Seed document: users, tokens, groups, projects, settings. Names refer to each other.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Seed {
    pub users: Vec<SeedUser>,
    pub tokens: Vec<SeedToken>,
    pub groups: Vec<SeedNamespace>,
    pub projects: Vec<SeedNamespace>,
    pub settings: Option<Settings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedUser {
    pub username: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedToken {
    pub token: String,
    pub user: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub revoked: bool,
    /// Expiry date (YYYY-MM-DD); absent: the token does not expire.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The token's name in GitLab; defaults to "runner-operator".
    #[serde(default)]
    pub name: Option<String>,
}

/// A group (`path` a/b nests under a) or a project (`path` group/.../name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedNamespace {
    pub path: String,
    /// username → role.
    pub members: BTreeMap<String, Role>,
    /// Runner token lifetime in seconds for runners of this group/project.
    pub runner_token_expiration_interval: Option<i64>,
    /// Registration token (legacy flow); generated when absent.
    pub registration_token: Option<String>,
    /// Groups: whether registration tokens are allowed below this (top-level) group. Default true.
    pub allow_registration_token: Option<bool>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    faults: Mutex<Vec<Fault>>,
}

impl Shared {
    fn take_fault(&self, label: &str, path: &str) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let write = !(label.starts_with("GET ")
            || label.starts_with("HEAD ")
            || label.contains(" /jobs/")
            || label == "POST /runners/verify"
            || label == "DELETE /runners/managers");
        let idx = faults.iter().position(|f| {
            f.times > 0
                && f.endpoint.as_deref().is_none_or(|e| e == label)
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && (write || !f.writes_only)
        })?;
        if faults[idx].skip > 0 {
            faults[idx].skip -= 1;
            return None;
        }
        faults[idx].times -= 1;
        let action = faults[idx].action.clone();
        faults.retain(|f| f.times > 0);
        Some(action)
    }

    fn count(&self, label: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *st.counts.entry(label.to_string()).or_insert(0) += 1;
    }

    fn apply_seed(&self, seed: &Seed) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(settings) = &seed.settings {
            st.settings = settings.clone();
        }
        for u in &seed.users {
            if st.user_by_name(&u.username).is_none() {
                let id = st.alloc_id();
                st.users.insert(
                    id,
                    User {
                        id,
                        username: u.username.clone(),
                        admin: u.admin,
                    },
                );
            }
        }
        let user_id = |st: &State, name: &str| {
            st.user_by_name(name)
                .map(|u| u.id)
                .ok_or_else(|| format!("unknown user {name:?}"))
        };
        for t in &seed.tokens {
            let uid = user_id(&st, &t.user)?;
            let id = st.alloc_id();
            st.tokens.insert(
                t.token.clone(),
                AccessToken {
                    id,
                    name: t.name.clone().unwrap_or_else(|| "runner-operator".into()),
                    user_id: uid,
                    scopes: t.scopes.clone(),
                    expired: t.expired,
                    revoked: t.revoked,
                    expires_at: t.expires_at.clone(),
                },
            );
        }
        let mut groups = seed.groups.clone();
        groups.sort_by_key(|g| g.path.matches('/').count());
        for g in &groups {
            let parent = match g.path.rsplit_once('/') {
                Some((parent, _)) => {
                    Some(st.find_group(parent).map(|p| p.id).ok_or_else(|| {
                        format!("group {:?} needs its parent group {parent:?} first", g.path)
                    })?)
                }
                None => None,
            };
            let members = g
                .members
                .iter()
                .map(|(n, r)| user_id(&st, n).map(|id| (id, *r)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            let id = st
                .find_group(&g.path)
                .map(|x| x.id)
                .unwrap_or_else(|| st.alloc_id());
            st.groups.insert(
                id,
                Group {
                    id,
                    full_path: g.path.clone(),
                    parent,
                    members,
                    registration_token: g
                        .registration_token
                        .clone()
                        .unwrap_or_else(|| format!("GR1348941{}", model::random_string(20))),
                    runner_token_expiration_interval: g.runner_token_expiration_interval,
                    allow_registration_token: g.allow_registration_token.unwrap_or(true),
                },
            );
        }
        for p in &seed.projects {
            let group = match p.path.rsplit_once('/') {
                Some((ns, _)) => st.find_group(ns).map(|g| g.id),
                None => None,
            };
            let members = p
                .members
                .iter()
                .map(|(n, r)| user_id(&st, n).map(|id| (id, *r)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            let id = st
                .find_project(&p.path)
                .map(|x| x.id)
                .unwrap_or_else(|| st.alloc_id());
            st.projects.insert(
                id,
                Project {
                    id,
                    path_with_namespace: p.path.clone(),
                    group,
                    members,
                    registration_token: p
                        .registration_token
                        .clone()
                        .unwrap_or_else(|| format!("GR1348941{}", model::random_string(20))),
                    runner_token_expiration_interval: p.runner_token_expiration_interval,
                    shared_runners_enabled: true,
                    group_runners_enabled: true,
                },
            );
        }
        Ok(())
    }
}

/// A snapshot of one runner, for assertions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunnerSnapshot {
    pub id: i64,
    pub runner_type: String,
    pub description: Option<String>,
    pub paused: bool,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub access_level: String,
    pub maximum_timeout: Option<i64>,
    pub maintenance_note: Option<String>,
    /// Project paths, owner first.
    pub projects: Vec<String>,
    pub group: Option<String>,
    /// The current token (the emulator is the one place a test may read it).
    pub token: String,
    pub token_expires_at: Option<String>,
}

/// A running emulator. Dropping it stops the server.
pub struct GitLabEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GitLabEmulator {
    /// Starts on `127.0.0.1:0` with the given seed.
    pub async fn start(seed: &Seed) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", seed).await
    }

    /// Starts on a given address.
    pub async fn start_on(addr: &str, seed: &Seed) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            faults: Mutex::new(vec![]),
        });
        shared.apply_seed(seed).map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = server::router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(GitLabEmulator {
            shared,
            addr,
            shutdown: Some(tx),
        })
    }

    /// The instance URL to give a client (`/api/v4` is appended by clients).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds more users, tokens, groups, projects or settings.
    pub fn seed(&self, seed: &Seed) -> Result<(), String> {
        self.shared.apply_seed(seed)
    }

    /// Changes instance settings.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut self.lock().settings);
    }

    /// Faults injected and not yet used up.
    pub fn faults_left(&self) -> usize {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Deletes a project as GitLab does for its runners: each loses the association; a runner
    /// left without projects is deleted; one whose owner it was moves to its oldest remaining
    /// project.
    pub fn delete_project(&self, path: &str) -> bool {
        let mut st = self.lock();
        let Some(id) = st
            .projects
            .values()
            .find(|p| p.path_with_namespace == path)
            .map(|p| p.id)
        else {
            return false;
        };
        st.projects.remove(&id);
        st.runners.retain(|_, r| {
            if r.runner_type != "project_type" || !r.projects.contains(&id) {
                return true;
            }
            r.projects.retain(|p| *p != id);
            !r.projects.is_empty()
        });
        true
    }

    /// Every API request so far, in arrival order.
    pub fn request_log(&self) -> Vec<model::LoggedRequest> {
        self.lock().log.clone()
    }

    /// Removes every injected fault not yet used up.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Requests served per endpoint label (`GET /runners/:id`), faults included.
    pub fn request_count(&self, endpoint: &str) -> u64 {
        self.lock().counts.get(endpoint).copied().unwrap_or(0)
    }

    /// All counts.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    /// Requests the instance throttle answered with 429.
    pub fn throttled_count(&self) -> u64 {
        self.lock().throttled
    }

    /// Moves the emulator's clock forward (token expiry, online/stale windows).
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.lock().clock_offset_ms += by.as_millis() as i64;
    }

    /// Marks a runner as having contacted GitLab now (as a runner process would).
    pub fn touch_runner(&self, id: i64) {
        let mut st = self.lock();
        let now = st.now();
        if let Some(r) = st.runners.get_mut(&id) {
            r.contacted_at = Some(now);
        }
    }

    /// Registers (or refreshes) a runner manager — a runner process using the runner's token —
    /// that last contacted GitLab `ago` before the emulator's now, reporting `version` on
    /// `platform`/`architecture`. The runner's contactedAt follows its latest manager.
    pub fn add_manager(
        &self,
        runner_id: i64,
        system_id: &str,
        version: &str,
        platform: &str,
        architecture: &str,
        ago: std::time::Duration,
    ) {
        let mut st = self.lock();
        let at = st.now() - ago.as_millis() as i64;
        let id = st.alloc_id();
        if let Some(r) = st.runners.get_mut(&runner_id) {
            r.managers.retain(|m| m.system_id != system_id);
            let mut m = model::Manager::new(id, system_id.into(), at);
            m.version = Some(version.into());
            m.revision = Some("abcdef12".into());
            m.platform = Some(platform.into());
            m.architecture = Some(architecture.into());
            m.executor = Some("shell".into());
            r.managers.push(m);
            r.contacted_at = r.managers.iter().map(|m| m.contacted_at).max();
        }
    }

    /// Sets an access token's expiry date (YYYY-MM-DD; None: never).
    pub fn set_token_expiry(&self, token: &str, date: Option<&str>) {
        if let Some(t) = self.lock().tokens.get_mut(token) {
            t.expires_at = date.map(str::to_string);
        }
    }

    /// Adds a job to a runner's history.
    pub fn add_job(&self, runner_id: i64, job: JobRec) {
        if let Some(r) = self.lock().runners.get_mut(&runner_id) {
            r.jobs.push(job);
        }
    }

    /// Every runner, by id.
    pub fn runners(&self) -> Vec<RunnerSnapshot> {
        let st = self.lock();
        st.runners
            .values()
            .map(|r| RunnerSnapshot {
                id: r.id,
                runner_type: r.runner_type.clone(),
                description: r.description.clone(),
                paused: r.paused,
                tags: r.tags.clone(),
                run_untagged: r.run_untagged,
                locked: r.locked,
                access_level: r.access_level.clone(),
                maximum_timeout: r.maximum_timeout,
                maintenance_note: r.maintenance_note.clone(),
                projects: r
                    .projects
                    .iter()
                    .filter_map(|p| st.projects.get(p))
                    .map(|p| p.path_with_namespace.clone())
                    .collect(),
                group: r
                    .group
                    .and_then(|g| st.groups.get(&g))
                    .map(|g| g.full_path.clone()),
                token: r.token.clone(),
                token_expires_at: r.token_expires_at.map(model::iso),
            })
            .collect()
    }

    /// One runner.
    pub fn runner(&self, id: i64) -> Option<RunnerSnapshot> {
        self.runners().into_iter().find(|r| r.id == id)
    }

    /// A project's id by path.
    pub fn project_id(&self, path: &str) -> Option<i64> {
        self.lock().find_project(path).map(|p| p.id)
    }

    /// A group's id by path.
    pub fn group_id(&self, path: &str) -> Option<i64> {
        self.lock().find_group(path).map(|g| g.id)
    }

    /// A project's current registration token (legacy flow).
    pub fn project_registration_token(&self, path: &str) -> Option<String> {
        self.lock()
            .find_project(path)
            .map(|p| p.registration_token.clone())
    }

    /// Changes a project's flags.
    pub fn set_project_runner_settings(
        &self,
        path: &str,
        shared_runners: bool,
        group_runners: bool,
    ) {
        let mut st = self.lock();
        let id = st.find_project(path).map(|p| p.id);
        if let Some(p) = id.and_then(|id| st.projects.get_mut(&id)) {
            p.shared_runners_enabled = shared_runners;
            p.group_runners_enabled = group_runners;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for GitLabEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The seed used by the sandbox and the standalone emulator: it makes every manifest in
/// `deploy/examples/` work.
pub fn default_seed() -> Seed {
    let ns = |path: &str, members: &[(&str, Role)]| SeedNamespace {
        path: path.into(),
        members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
        ..Default::default()
    };
    Seed {
        users: vec![
            SeedUser {
                username: "root".into(),
                admin: true,
            },
            SeedUser {
                username: "platform-bot".into(),
                admin: false,
            },
        ],
        tokens: vec![
            SeedToken {
                token: "glpat-emulator-root".into(),
                user: "root".into(),
                scopes: vec!["api".into()],
                ..Default::default()
            },
            // Assigning runners to projects (assignedProjects) takes the api scope in GitLab.
            SeedToken {
                token: "glpat-emulator-bot".into(),
                user: "platform-bot".into(),
                scopes: vec!["api".into()],
                ..Default::default()
            },
            SeedToken {
                token: "glpat-emulator-scoped".into(),
                user: "platform-bot".into(),
                scopes: vec![
                    "create_runner".into(),
                    "manage_runner".into(),
                    "read_api".into(),
                ],
                ..Default::default()
            },
        ],
        groups: vec![
            ns("platform", &[("platform-bot", Role::Owner)]),
            ns("platform/ci", &[]),
        ],
        projects: vec![
            ns("platform/api", &[]),
            ns("platform/web", &[]),
            ns("platform/docs", &[]),
        ],
        settings: None,
    }
}
