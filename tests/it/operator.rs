//! The operator end to end: the controllers against the local Kubernetes API and the GitLab
//! emulator, asserting what users see (GitLab state, the Secret, status, events).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use futures::FutureExt;
use gitlab_emulator::{GitLabEmulator, RunnerSnapshot, default_seed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use runner_operator::controller::{self, Context, Options, Settings};
use runner_operator::crd::{GitLabConnection, Runner};
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of every test in this binary, at debug level for the operator.
fn capture_logs() {
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "runner_operator=debug,kube=info",
            ))
            .with_writer(|| LogWriter)
            .try_init();
    });
}

pub struct Env {
    pub gitlab: GitLabEmulator,
    pub kube: Cluster,
    /// The tests' own client: cluster admin.
    pub client: Client,
    /// The operator's: admin, or the chart's ServiceAccount (Backend::Chart).
    operator_client: Client,
    backend: Backend,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    resync: Duration,
    pub namespaces: Vec<String>,
    /// Applies from the next run_operator.
    pub consumer_restarts: controller::ConsumerRestarts,
    /// The operator's clock: moved with the emulator's by `advance`.
    clock: Arc<TestClock>,
}

/// The system clock plus an offset the test moves.
#[derive(Default)]
pub struct TestClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl controller::clock::Clock for TestClock {
    fn now(&self) -> k8s_openapi::jiff::Timestamp {
        let offset = self.offset_ms.load(Ordering::SeqCst);
        k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_millis(offset))
            .expect("a time within range")
    }
}

impl Env {
    pub async fn start(backend: Backend, hook: Option<controller::context::GitLabLayer>) -> Env {
        Self::start_with(backend, hook, Duration::from_secs(2)).await
    }

    /// An operator limited to some namespaces.
    pub async fn start_in(backend: Backend, namespaces: Vec<String>) -> Env {
        Self::start_full(backend, None, Duration::from_secs(2), namespaces).await
    }

    pub async fn start_with(
        backend: Backend,
        hook: Option<controller::context::GitLabLayer>,
        resync: Duration,
    ) -> Env {
        Self::start_full(backend, hook, resync, vec![]).await
    }

    async fn start_full(
        backend: Backend,
        hook: Option<controller::context::GitLabLayer>,
        resync: Duration,
        namespaces: Vec<String>,
    ) -> Env {
        capture_logs();
        let gitlab = GitLabEmulator::start(&default_seed())
            .await
            .expect("gitlab emulator");
        let kube = Cluster::start(backend).await;
        let client = kube.client().await;
        let mut namespaces = namespaces;
        let operator_client = match (backend, kube.real()) {
            (Backend::Chart { namespaced }, Some(cp)) => {
                if namespaced && namespaces.is_empty() {
                    namespaces = vec!["ci".into()];
                }
                cp.install_chart(namespaced).await
            }
            _ => client.clone(),
        };
        runner_operator::sandbox::bootstrap(&client, &gitlab.url())
            .await
            .expect("bootstrap");
        let mut env = Env {
            gitlab,
            kube,
            client,
            operator_client,
            backend,
            stop: None,
            task: None,
            resync,
            namespaces,
            consumer_restarts: controller::ConsumerRestarts::Everywhere,
            clock: Arc::default(),
        };
        env.run_operator(hook);
        env
    }

    pub fn run_operator(&mut self, hook: Option<controller::context::GitLabLayer>) {
        let settings = Settings {
            resync: self.resync,
            namespace: "runner-operator".into(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            consumer_restarts: self.consumer_restarts.clone(),
            ..Settings::default()
        };
        let mut ctx = Context::new(self.operator_client.clone(), settings);
        ctx.gitlab_layer = hook;
        ctx.clock = self.clock.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = rx.map(|_| ()).boxed().shared();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(controller::run(
            Arc::new(ctx),
            Options {
                concurrency: 8,
                namespaces: self.namespaces.clone(),
                label_selector: None,
            },
            shutdown,
        )));
    }

    pub async fn stop_operator(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// Moves time forward for GitLab (token expiry) and the operator alike.
    pub fn advance(&self, by: Duration) {
        self.gitlab.advance_clock(by);
        self.clock
            .offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn runners(&self) -> Api<Runner> {
        Api::namespaced(self.client.clone(), "ci")
    }

    pub async fn apply(&self, name: &str, spec: Value) -> Runner {
        let obj: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": name, "namespace": "ci"}, "spec": spec})).expect("runner");
        self.runners()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&obj),
            )
            .await
            .expect("applied")
    }

    pub async fn wait<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        self.wait_for(what, Duration::from_secs(30), f).await
    }

    pub async fn wait_for<T, F, Fut>(&self, what: &str, limit: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let dump: Vec<Value> = self
                    .runners()
                    .list(&ListParams::default())
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .map(|r| json!({"name": r.name_any(), "status": r.status}))
                            .collect()
                    })
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}; runners: {}",
                    serde_json::to_string_pretty(&dump).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready(&self, name: &str) -> Runner {
        self.wait(&format!("{name} Ready"), || async {
            let r = self.runners().get_opt(name).await.ok().flatten()?;
            let st = r.status.as_ref()?;
            let ready = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && st.observed_generation == r.metadata.generation).then_some(r)
        })
        .await
    }

    /// Every Runner in `ci` (none when the API answers with an error).
    pub async fn list_runners(&self) -> Vec<Runner> {
        self.runners()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    pub async fn condition(&self, name: &str, type_: &str, reason: &str) -> String {
        self.wait(&format!("{name} {type_} {reason}"), || async {
            let r = self.runners().get_opt(name).await.ok().flatten()?;
            r.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_ && c.reason == reason)
                .map(|c| c.message)
        })
        .await
    }

    pub async fn status(&self, name: &str) -> Option<runner_operator::crd::RunnerStatus> {
        self.runners().get(name).await.ok()?.status
    }

    pub async fn secret_token(&self, name: &str) -> Option<String> {
        let s = Api::<Secret>::namespaced(self.client.clone(), "ci")
            .get_opt(name)
            .await
            .ok()
            .flatten()?;
        s.data?
            .get("runner-token")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    }

    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let evs = Api::<CoreEvent>::namespaced(self.client.clone(), "ci")
            .list(&ListParams::default())
            .await
            .expect("events");
        evs.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Events of a Runner in the order they happened (by event time).
    pub async fn events_in_order(&self, name: &str) -> Vec<(String, String, String)> {
        let mut evs: Vec<CoreEvent> = Api::<CoreEvent>::namespaced(self.client.clone(), "ci")
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        evs.sort_by_key(|e| {
            (
                e.event_time.as_ref().map(|t| t.0),
                e.first_timestamp.as_ref().map(|t| t.0),
            )
        });
        evs.into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until `n` more `GET /runners/:id` reached GitLab (each a pass over some Runner):
    /// the operator went through its loop, so whatever it would have done, it has done.
    pub async fn passes(&self, n: u64) {
        let before = self.gitlab.request_count("GET /runners/:id");
        self.wait(&format!("{n} more passes"), || async {
            (self.gitlab.request_count("GET /runners/:id") >= before + n).then_some(())
        })
        .await
    }

    pub async fn has_event(&self, name: &str, reason: &str) -> (String, String, String) {
        self.wait(&format!("event {reason} on {name}"), || async {
            self.events(name).await.into_iter().find(|e| e.1 == reason)
        })
        .await
    }

    /// Every object the operator may write (Runners, connections, Secrets, Events, Leases, in
    /// every namespace) with its resourceVersion: equal fingerprints mean no write in between,
    /// on either backend.
    pub async fn fingerprint(&self) -> Vec<String> {
        async fn rvs<K>(client: &Client, kind: &str, out: &mut Vec<String>)
        where
            K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug,
            K::DynamicType: Default,
        {
            let list = Api::<K>::all(client.clone())
                .list(&ListParams::default())
                .await
                .expect("list");
            for o in list.items {
                out.push(format!(
                    "{kind} {}/{} {}",
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.resource_version().unwrap_or_default()
                ));
            }
        }
        let mut out = vec![];
        rvs::<Runner>(&self.client, "Runner", &mut out).await;
        rvs::<runner_operator::crd::GitLabConnection>(&self.client, "GitLabConnection", &mut out)
            .await;
        rvs::<Secret>(&self.client, "Secret", &mut out).await;
        rvs::<CoreEvent>(&self.client, "Event", &mut out).await;
        rvs::<Deployment>(&self.client, "Deployment", &mut out).await;
        out.sort();
        out
    }

    pub fn gitlab_runner(&self, id: i64) -> Option<RunnerSnapshot> {
        self.gitlab.runner(id)
    }

    /// GitLab accepts this runner token (as a runner process would check it).
    pub async fn token_works(&self, token: &str) -> bool {
        reqwest::Client::new()
            .post(format!("{}/api/v4/runners/verify", self.gitlab.url()))
            .json(&json!({"token": token}))
            .send()
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    }

    pub async fn as_root(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}/api/v4{path}", self.gitlab.url()))
            .header("PRIVATE-TOKEN", "glpat-emulator-root");
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        // Under the chart's ServiceAccount every request must have been allowed.
        if let (Backend::Chart { .. }, Some(cp)) = (self.backend, self.kube.real()) {
            let (used, denied) = cp.service_account_requests();
            let scenario = std::thread::current().name().unwrap_or("?").to_string();
            // One file per scenario: the union is the chart README's RBAC table's evidence.
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rbac-usage");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                dir.join(scenario.replace("::", "-")),
                used.iter().cloned().collect::<Vec<_>>().join("\n"),
            );
            eprintln!(
                "{scenario}: the chart's ServiceAccount made these requests:\n  {}",
                used.iter().cloned().collect::<Vec<_>>().join("\n  ")
            );
            if !std::thread::panicking() {
                assert!(
                    denied.is_empty(),
                    "{scenario}: RBAC refused the chart's ServiceAccount: {denied:?}"
                );
                // The chart README's RBAC table names this scenario for these requests.
                for row in crate::cluster::rbac_table() {
                    if row.scenario.as_deref() == Some(scenario.as_str()) && !row.admission {
                        assert!(
                            used.contains(&row.request_text),
                            "{scenario}: the RBAC table says it needs `{}` for {}, but it made no such request",
                            row.request_text,
                            row.rule
                        );
                    }
                }
            }
        }
    }
}

/// GitLab writes (any request but a GET) between two `request_counts()`.
fn gitlab_writes(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    after
        .iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
        .sum()
}

fn project_spec() -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "assignedProjects": ["platform/web"],
           "description": "Linux builders", "tags": ["linux", "docker"], "runUntagged": false, "maximumTimeout": 3600, "maintenanceNote": "team platform"})
}

async fn create_update_assign_and_delete(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("builders", project_spec()).await;
    let r = env.ready("builders").await;
    let st = r.status.clone().unwrap();
    let id = st.runner_id.unwrap();
    let g = env.gitlab_runner(id).unwrap();
    assert_eq!(g.projects, vec!["platform/api", "platform/web"]);
    assert_eq!(g.tags, vec!["docker", "linux"]);
    assert_eq!(
        (g.description.as_deref(), g.run_untagged, g.maximum_timeout),
        (Some("Linux builders"), false, Some(3600))
    );
    let note = g.maintenance_note.clone().unwrap();
    assert!(
        note.starts_with("team platform\n\n[runner-operator: managed by Runner ci/builders, uid "),
        "{note}"
    );
    assert_eq!(
        st.project_ids,
        vec![
            env.gitlab.project_id("platform/api").unwrap(),
            env.gitlab.project_id("platform/web").unwrap()
        ]
    );
    assert_eq!(st.last_rotation_reason.as_deref(), Some("Created"));
    // The Secret holds the token GitLab issued, in the chart's layout.
    let secret = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("builders-runner-token")
        .await
        .unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(String::from_utf8_lossy(&data["runner-token"].0), g.token);
    assert_eq!(data["runner-registration-token"].0, b"");
    assert_eq!(
        String::from_utf8_lossy(&data["runner-id"].0),
        id.to_string()
    );
    assert!(env.token_works(&g.token).await);
    assert_eq!(secret.owner_references()[0].uid, r.uid().unwrap());
    env.has_event("builders", "Created").await;
    env.has_event("builders", "Assigned").await;

    // Update: only what differs, assignments follow the spec.
    let mut spec = project_spec();
    spec["tags"] = json!(["linux"]);
    spec["paused"] = json!(true);
    spec["assignedProjects"] = json!([]);
    env.apply("builders", spec).await;
    env.wait("GitLab updated", || async {
        let g = env.gitlab_runner(id)?;
        (g.tags == vec!["linux"] && g.paused && g.projects == vec!["platform/api"]).then_some(())
    })
    .await;
    env.ready("builders").await;
    env.has_event("builders", "Unassigned").await;
    // The update says what moved, before and after.
    let updated = env.has_event("builders", "Updated").await.2;
    assert!(
        updated.contains("tags: [docker, linux] → [linux]")
            && updated.contains("paused: false → true"),
        "{updated}"
    );
    assert_eq!(
        env.gitlab_runner(id).unwrap().token,
        g.token,
        "updates keep the token"
    );

    // A token rotation on request.
    env.runners().patch("builders", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "story"}}}))).await.unwrap();
    env.has_event("builders", "TokenRotated").await;

    // Delete: gone from GitLab, finalizer released, Secret collected.
    env.runners()
        .delete("builders", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("Runner gone", || async {
        env.runners()
            .get_opt("builders")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(env.gitlab_runner(id).is_none());
    // The story, in order, in events and in the log: one line per GitLab write.
    env.has_event("builders", "Deleted").await;
    let story: Vec<String> = env
        .events_in_order("builders")
        .await
        .into_iter()
        .filter(|e| e.0 == "Normal")
        .map(|e| e.1)
        .collect();
    let at = |reason: &str| {
        story
            .iter()
            .position(|r| r == reason)
            .unwrap_or_else(|| panic!("no {reason} event in {story:?}"))
    };
    assert!(at("Created") < at("Assigned"), "{story:?}");
    assert!(
        at("Assigned") < at("Updated").min(at("Unassigned")),
        "{story:?}"
    );
    assert!(
        at("Updated").max(at("Unassigned")) < at("TokenRotated"),
        "{story:?}"
    );
    assert!(at("TokenRotated") < at("Deleted"), "{story:?}");
    let logs =
        String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let web = env.gitlab.project_id("platform/web").unwrap();
    for line in [
        format!("registered GitLab runner {id} and wrote its token"),
        format!("assigned runner {id} to project {web}"),
        format!("unassigned runner {id} from project {web}"),
        format!("reset the token of runner {id}"),
        format!("deleted GitLab runner {id}"),
    ] {
        assert!(
            logs.contains(&line),
            "no log line {line:?} in {}",
            logs.lines()
                .filter(|l| l.contains("ssigned"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The garbage collector (kube-controller-manager on a real cluster) removes the owned
    // Secret, asynchronously: it learns of a new CRD's kind at its next discovery sync (every
    // 30 s), so right after the CRDs are installed this can take that long.
    env.wait_for(
        "token Secret garbage-collected",
        Duration::from_secs(90),
        || async {
            env.secret_token("builders-runner-token")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

async fn group_and_instance_runners_through_both_connection_kinds(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("group", json!({"connectionRef": {"kind": "ClusterGitLabConnection", "name": "jihulab"}, "runnerType": "group_type", "group": "platform", "tags": ["linux"], "accessLevel": "ref_protected"})).await;
    env.apply("instance", json!({"connectionRef": {"name": "gitlab-admin"}, "runnerType": "instance_type", "deletionPolicy": "Orphan", "tokenSecret": {"format": "GitLabRunnerOperator", "name": "inst-token"}})).await;
    let g = env.ready("group").await.status.unwrap();
    let i = env.ready("instance").await.status.unwrap();
    let gr = env.gitlab_runner(g.runner_id.unwrap()).unwrap();
    assert_eq!(
        (
            gr.runner_type.as_str(),
            gr.group.as_deref(),
            gr.access_level.as_str()
        ),
        ("group_type", Some("platform"), "ref_protected")
    );
    assert_eq!(
        env.gitlab_runner(i.runner_id.unwrap()).unwrap().runner_type,
        "instance_type"
    );
    let s = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("inst-token")
        .await
        .unwrap();
    assert!(
        !s.data.unwrap().contains_key("runner-registration-token"),
        "GitLabRunnerOperator format: runner-token only"
    );
    // Orphan leaves the runner in GitLab.
    env.runners()
        .delete("instance", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("instance Runner gone", || async {
        env.runners()
            .get_opt("instance")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(env.gitlab_runner(i.runner_id.unwrap()).is_some());
    env.has_event("instance", "Orphaned").await;
}

async fn hand_edits_are_reverted_and_deleted_runners_recreated(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("drift", project_spec()).await;
    let id = env.ready("drift").await.status.unwrap().runner_id.unwrap();
    assert_eq!(
        env.as_root(
            reqwest::Method::PUT,
            &format!("/runners/{id}"),
            Some(json!({"description": "hand edit", "tag_list": "x"}))
        )
        .await,
        200
    );
    env.wait("drift reverted", || async {
        env.gitlab_runner(id)
            .filter(|g| {
                g.description.as_deref() == Some("Linux builders")
                    && g.tags == vec!["docker", "linux"]
            })
            .map(|_| ())
    })
    .await;
    env.has_event("drift", "DriftReverted").await;
    // Deleted behind our back: a new runner, a new token in the Secret.
    assert_eq!(
        env.as_root(reqwest::Method::DELETE, &format!("/runners/{id}"), None)
            .await,
        204
    );
    let new_id = env
        .wait("recreated", || async {
            env.status("drift").await?.runner_id.filter(|n| *n != id)
        })
        .await;
    // Status records the new id as soon as the runner exists (before its assignments): wait
    // for what GitLab shows.
    let g = env
        .wait("recreated and assigned", || async {
            env.gitlab_runner(new_id)
                .filter(|g| g.projects == vec!["platform/api", "platform/web"])
        })
        .await;
    env.ready("drift").await;
    assert_eq!(
        env.secret_token("drift-runner-token").await.as_deref(),
        Some(g.token.as_str())
    );
    env.has_event("drift", "Recreated").await;
    assert_eq!(env.gitlab.runners().len(), 1, "no duplicate");
}

async fn adoption_resets_the_token_and_claims_are_exclusive(backend: Backend) {
    let env = Env::start(backend, None).await;
    let api = env.gitlab.project_id("platform/api").unwrap();
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", env.gitlab.url()))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .json(&json!({"runner_type": "project_type", "project_id": api, "description": "made by hand"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, old_token) = (
        resp["id"].as_i64().unwrap(),
        resp["token"].as_str().unwrap().to_string(),
    );
    // Without adopt, a Runner never touches it: it creates its own.
    let mut spec = json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "description": "made by hand"});
    env.apply("own", spec.clone()).await;
    let own_id = env.ready("own").await.status.unwrap().runner_id.unwrap();
    assert_ne!(own_id, id);
    assert!(env.token_works(&old_token).await);
    spec["adopt"] = json!({"runnerId": id});
    let writes = |e: &Env| {
        [
            "PUT /runners/:id",
            "POST /projects/:id/runners",
            "POST /runners/:id/reset_authentication_token",
        ]
        .map(|w| e.gitlab.request_count(w))
    };
    let before = writes(&env);
    env.apply("adopter", spec.clone()).await;
    let st = env.ready("adopter").await.status.unwrap();
    assert_eq!(
        (st.runner_id, st.last_rotation_reason.as_deref()),
        (Some(id), Some("Adopted"))
    );
    assert!(
        !env.token_works(&old_token).await,
        "adoption reset the token"
    );
    let token = env.secret_token("adopter-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
    // The spec matches the runner: the reset is the only write, and the note stays unmarked.
    let after = writes(&env);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [0, 0, 1],
        "no update, no assignment, one reset"
    );
    assert_eq!(env.gitlab_runner(id).unwrap().maintenance_note, None);
    env.has_event("adopter", "Adopted").await;
    assert!(
        !env.events("adopter")
            .await
            .iter()
            .any(|e| e.1 == "AdoptionChangesField"),
        "nothing changed"
    );
    // A second claimant is refused; the first keeps its runner.
    env.apply("thief", spec).await;
    let msg = env.condition("thief", "Ready", "RunnerClaimed").await;
    assert!(msg.contains("managed by Runner ci/adopter"), "{msg}");
    assert!(env.token_works(&token).await);
    // An adoption that changes fields says which, before and after, one event per field.
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", env.gitlab.url()))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .json(&json!({"runner_type": "project_type", "project_id": api, "description": "Hand-written by the platform team", "tag_list": "linux"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hand = resp["id"].as_i64().unwrap();
    env.apply(
        "adopter2",
        json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["linux", "docker"], "adopt": {"runnerId": hand}}),
    )
    .await;
    env.ready("adopter2").await;
    let changes: Vec<String> = env
        .events("adopter2")
        .await
        .into_iter()
        .filter(|e| e.1 == "AdoptionChangesField")
        .map(|e| e.2)
        .collect();
    assert!(
        changes.iter().any(|m| m.contains(&format!(
            "adopting GitLab runner {hand} changes description: \"Hand-written by the platform team\" → \"\""
        ))),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|m| m.contains("tags: [linux] → [docker, linux]")),
        "{changes:?} {:?}",
        env.gitlab_runner(hand)
    );
    assert_eq!(
        changes.len(),
        2,
        "one event per changed field: {changes:?} {:?}",
        env.gitlab_runner(hand)
    );
    let g = env.gitlab_runner(hand).unwrap();
    assert_eq!((g.description.as_deref(), g.tags.len()), (Some(""), 2));
}

async fn connection_problems_are_conditions_and_nothing_happens_in_gitlab(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply(
        "noconn",
        json!({"connectionRef": {"name": "missing"}, "runnerType": "instance_type"}),
    )
    .await;
    let msg = env.condition("noconn", "Ready", "ConnectionNotReady").await;
    assert!(
        msg.contains("GitLabConnection ci/missing does not exist"),
        "{msg}"
    );
    // A cluster connection limited to other namespaces.
    let ns: Value = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let other: Api<Runner> = Api::namespaced(env.client.clone(), "other");
    let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "outsider", "namespace": "other"},
        "spec": {"connectionRef": {"kind": "ClusterGitLabConnection", "name": "jihulab"}, "runnerType": "group_type", "group": "platform"}})).unwrap();
    other.create(&PostParams::default(), &r).await.unwrap();
    let msg = env
        .wait("outsider refused", || async {
            other
                .get("outsider")
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == "ConnectionNotAllowed")
                .map(|c| c.message)
        })
        .await;
    assert!(msg.contains("does not allow namespace other"), "{msg}");
    assert!(env.gitlab.runners().is_empty());
    // Label the namespace: the selector admits it and the Runner converges.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"gitlab-runners": "allowed"}}})),
        )
        .await
        .unwrap();
    env.wait("outsider ready", || async {
        other
            .get("outsider")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
            .map(|_| ())
    })
    .await;
    // Creating the missing connection re-queues its Runners.
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "missing", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-admin-token"}}});
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    env.ready("noconn").await;
    // Connections report their live check.
    let c = Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci");
    let st = env
        .wait("connection ready", || async {
            c.get("gitlab")
                .await
                .ok()?
                .status
                .filter(|s| s.gitlab_version.is_some())
        })
        .await;
    assert_eq!(
        (st.gitlab_version.as_deref(), st.username.as_deref()),
        (Some("18.6.0-ee"), Some("platform-bot"))
    );
}

async fn gitlab_refusals_become_conditions_with_gitlabs_message(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("unknown", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/nope"})).await;
    let msg = env.condition("unknown", "Ready", "InvalidSpec").await;
    assert!(msg.contains("\"platform/nope\" does not exist"), "{msg}");
    // Legacy registration where GitLab disabled registration tokens (410).
    let token = env
        .gitlab
        .project_registration_token("platform/api")
        .unwrap();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "reg"}, "stringData": {"token": token}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env.apply("legacy", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "registration": {"strategy": "RegistrationToken", "registrationTokenSecretRef": {"name": "reg"}}})).await;
    let msg = env.condition("legacy", "Ready", "InvalidSpec").await;
    assert!(
        msg.contains("registration tokens are disabled") && msg.contains("UserRunner"),
        "{msg}"
    );
    env.gitlab
        .update_settings(|s| s.allow_runner_registration_token = true);
    let st = env.ready("legacy").await.status.unwrap();
    assert!(
        env.gitlab_runner(st.runner_id.unwrap())
            .unwrap()
            .token
            .starts_with("t3_")
    );
    // Scope too small for assignments: GitLab's own words reach the condition.
    let scoped: Secret = serde_json::from_value(
        json!({"metadata": {"name": "scoped"}, "stringData": {"token": "glpat-emulator-scoped"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &scoped)
        .await
        .unwrap();
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "scoped", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "scoped"}}});
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    let mut spec = project_spec();
    spec["connectionRef"] = json!({"name": "scoped"});
    env.apply("scoped", spec).await;
    let msg = env.condition("scoped", "Ready", "GitLabForbidden").await;
    assert!(
        msg.contains("insufficient_scope") && msg.contains("accepted scopes: api"),
        "{msg}"
    );
}

async fn tokens_are_recovered_rotated_on_request_and_on_schedule(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("tok", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let id = env.ready("tok").await.status.unwrap().runner_id.unwrap();
    let secrets = Api::<Secret>::namespaced(env.client.clone(), "ci");
    let first = env.secret_token("tok-runner-token").await.unwrap();
    // Secret deleted → reset and rewritten.
    secrets
        .delete("tok-runner-token", &DeleteParams::default())
        .await
        .unwrap();
    let second = env
        .wait("secret recovered", || async {
            env.secret_token("tok-runner-token")
                .await
                .filter(|t| *t != first)
        })
        .await;
    assert!(!env.token_works(&first).await && env.token_works(&second).await);
    assert_eq!(env.gitlab_runner(id).unwrap().token, second);
    env.has_event("tok", "TokenRotated").await;
    // Token edited by hand → recovered (seen through the hash, without calling verify).
    let verifies = env.gitlab.request_count("POST /runners/verify");
    secrets
        .patch(
            "tok-runner-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"runner-token": "typed-by-hand"}})),
        )
        .await
        .unwrap();
    let third = env
        .wait("hand edit recovered", || async {
            env.secret_token("tok-runner-token")
                .await
                .filter(|t| *t != second && t != "typed-by-hand")
        })
        .await;
    assert!(env.token_works(&third).await);
    assert_eq!(
        env.gitlab.request_count("POST /runners/verify"),
        verifies + 1,
        "only the test's own verify call"
    );
    // On request: once per annotation value.
    let resets = || {
        env.gitlab
            .request_count("POST /runners/:id/reset_authentication_token")
    };
    let before = resets();
    env.runners().patch("tok", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "r1"}}}))).await.unwrap();
    env.wait("requested rotation", || async {
        env.status("tok")
            .await?
            .handled_rotate_request
            .filter(|v| v == "r1")
            .map(|_| ())
    })
    .await;
    // Two more resyncs of this (only) Runner: a second reset would have happened by now.
    env.passes(2).await;
    assert_eq!(resets(), before + 1, "one rotation per annotation value");
    assert_eq!(
        env.runners()
            .get("tok")
            .await
            .unwrap()
            .status
            .unwrap()
            .last_rotation_reason
            .as_deref(),
        Some("Requested")
    );
    // On an interval (10m at least): the token was issued an hour ago, as far as status says.
    env.runners()
        .patch_status(
            "tok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"tokenIssuedAt": "2020-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    env.apply("tok", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tokenRotation": {"interval": "10m"}})).await;
    env.wait("interval rotation", || async {
        env.status("tok")
            .await?
            .last_rotation_reason
            .filter(|r| r == "Interval")
            .map(|_| ())
    })
    .await;
    let token = env.secret_token("tok-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
}

async fn expiring_tokens_rotate_before_expiry_and_expiry_is_reported(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.gitlab
        .update_settings(|s| s.project_runner_token_expiration_interval = Some(3600));
    env.apply("exp", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let st = env.ready("exp").await.status.unwrap();
    assert!(st.token_expires_at.is_some(), "expiry is reported");
    let s = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("exp-runner-token")
        .await
        .unwrap();
    assert!(s.data.unwrap().contains_key("token-expires-at"));
    // A third of the hour before expiry: rotated once 40 minutes have passed, long before it
    // dies. Nothing is due earlier (two passes later it is still the creation's token).
    env.advance(Duration::from_secs(30 * 60));
    env.passes(2).await;
    assert_eq!(
        env.status("exp")
            .await
            .unwrap()
            .last_rotation_reason
            .as_deref(),
        Some("Created")
    );
    env.advance(Duration::from_secs(11 * 60));
    env.wait("expiry rotation", || async {
        env.status("exp")
            .await?
            .last_rotation_reason
            .filter(|r| r == "Expiry")
            .map(|_| ())
    })
    .await;
    let token = env.secret_token("exp-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
}

async fn consumers_roll_onto_new_tokens(backend: Backend) {
    let env = Env::start(backend, None).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "ci");
    let deploy = |name: &str, flag: bool| {
        let env_vars = if flag {
            json!([{"name": "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", "value": "true"}])
        } else {
            json!([])
        };
        serde_json::from_value::<Deployment>(json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "runner", "image": "gitlab/gitlab-runner", "env": env_vars}]}}}})).unwrap()
    };
    deploys
        .create(&PostParams::default(), &deploy("good", true))
        .await
        .unwrap();
    deploys
        .create(&PostParams::default(), &deploy("selfrotating", false))
        .await
        .unwrap();
    env.apply("cons", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
        "tokenSecret": {"consumers": [{"kind": "Deployment", "name": "good"}, {"kind": "Deployment", "name": "selfrotating"}, {"kind": "StatefulSet", "name": "absent"}]}})).await;
    let r = env.ready("cons").await;
    let st = r.status.unwrap();
    assert_eq!(
        st.restarted_consumers,
        vec!["Deployment/good", "Deployment/selfrotating"]
    );
    let conds: Vec<(String, String, String)> = st
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.message.clone()))
        .collect();
    assert!(
        conds.iter().any(|(t, s, m)| t == "ConsumersReady"
            && s == "False"
            && m.contains("StatefulSet/absent")),
        "{conds:?}"
    );
    assert!(
        conds.iter().any(|(t, s, m)| t == "TokenRotationConflict"
            && s == "True"
            && m.contains("Deployment/selfrotating")
            && !m.contains("Deployment/good")),
        "{conds:?}"
    );
    // Both problems are Warning events too, naming the workloads.
    let missing = env.has_event("cons", "ConsumerMissing").await;
    assert_eq!(missing.0, "Warning");
    assert!(missing.2.contains("StatefulSet/absent"), "{missing:?}");
    let conflict = env.has_event("cons", "TokenRotationConflict").await;
    assert_eq!(conflict.0, "Warning");
    assert!(
        conflict.2.contains("Deployment/selfrotating"),
        "{conflict:?}"
    );
    let annotation = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| {
                a.get("gitlab.runner-operator.dev/token-generation")
                    .cloned()
            })
    };
    let first = annotation(deploys.get("good").await.unwrap()).expect("pod template annotated");
    assert!(!first.contains(&env.secret_token("cons-runner-token").await.unwrap()));
    env.runners().patch("cons", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}}))).await.unwrap();
    env.wait("rolled again", || async {
        annotation(deploys.get("good").await.ok()?).filter(|a| *a != first)
    })
    .await;
}

/// With restarts off for the namespace (the chart's default), consumers are not touched and the
/// Runner says why and what to do; everything else still converges.
async fn consumers_are_left_alone_where_restarts_are_disabled(backend: Backend) {
    let mut env = Env::start(backend, None).await;
    env.stop_operator().await;
    env.consumer_restarts = controller::ConsumerRestarts::Only(["elsewhere".to_string()].into());
    env.run_operator(None);
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "ci");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "runner"}, "spec": {"selector": {"matchLabels": {"app": "runner"}}, "template": {"metadata": {"labels": {"app": "runner"}}, "spec": {"containers": [{"name": "runner", "image": "gitlab/gitlab-runner"}]}}}})).unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    env.apply("off", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
        "tokenSecret": {"consumers": [{"kind": "Deployment", "name": "runner"}]}})).await;
    let st = env.ready("off").await.status.unwrap();
    assert!(st.restarted_consumers.is_empty(), "{st:?}");
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "ConsumersReady")
        .expect("ConsumersReady condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ConsumerRestartsDisabled")
    );
    assert!(
        c.message.contains("Deployment/runner")
            && c.message.contains("consumerRestarts.namespaces"),
        "{}",
        c.message
    );
    assert!(env.secret_token("off-runner-token").await.is_some());
    assert_eq!(
        env.has_event("off", "ConsumerRestartsDisabled").await.0,
        "Warning"
    );
    let now = deploys.get("runner").await.unwrap();
    // Generation, not resourceVersion: the Deployment controller writes status.
    assert_eq!(
        now.metadata.generation, created.metadata.generation,
        "the Deployment's spec was not patched"
    );
}

/// Status summarizes the runner's managers (0, 1, several with versions and platforms), read
/// when GitLab's status of the runner changes, not on every resync.
async fn runner_managers_are_summarized_in_status(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("fleet", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let r = env.ready("fleet").await;
    let st = r.status.unwrap();
    let rid = st.runner_id.unwrap();
    let m = st
        .gitlab
        .and_then(|g| g.managers)
        .expect("managers summary");
    assert_eq!((m.count, m.summary.as_str()), (0, "0/0"), "never contacted");
    assert_eq!(env.gitlab.request_count("GET /runners/:id/managers"), 0);

    env.gitlab
        .add_manager(rid, "s_one", "18.6.0", "linux", "amd64", Duration::ZERO);
    let managers = |want: &'static str| {
        let env = &env;
        async move {
            env.wait(&format!("managers {want}"), || async {
                let r = env.runners().get("fleet").await.ok()?;
                let m = r.status?.gitlab?.managers?;
                (m.summary == want).then_some(m)
            })
            .await
        }
    };
    let one = managers("1/1").await;
    assert_eq!(one.versions, vec!["18.6.0"]);
    assert_eq!(one.platforms, vec!["linux/amd64"]);

    // Two more processes, one of them offline for hours: GitLab's status of the runner stays
    // online, so the operator only sees them at the next refresh (ten resyncs) — unless the
    // status changes. Make it change: every manager goes quiet, then two come back.
    let reads = env.gitlab.request_count("GET /runners/:id/managers");
    env.gitlab.add_manager(
        rid,
        "s_one",
        "18.6.0",
        "linux",
        "amd64",
        Duration::from_secs(3 * 3600),
    );
    let offline = managers("0/1").await;
    assert_eq!(offline.count, 1);
    env.gitlab
        .add_manager(rid, "s_two", "17.11.0", "linux", "arm64", Duration::ZERO);
    env.gitlab.add_manager(
        rid,
        "s_win",
        "17.9.2",
        "windows",
        "amd64",
        Duration::from_secs(60),
    );
    let several = managers("2/3").await;
    assert_eq!(several.versions, vec!["17.9.2", "17.11.0", "18.6.0"]);
    assert_eq!(several.version, "17.9.2,17.11.0,18.6.0");
    assert_eq!(
        several.platforms,
        vec!["linux/amd64", "linux/arm64", "windows/amd64"]
    );
    assert!(several.last_contact_at.is_some());
    assert_eq!(
        env.gitlab.request_count("GET /runners/:id/managers") - reads,
        2,
        "read once per status change"
    );

    // Steady state: three more resyncs (each one GET of the runner) read no managers.
    let reads = env.gitlab.request_count("GET /runners/:id/managers");
    let gets = env.gitlab.request_count("GET /runners/:id");
    env.wait("three resyncs", || async {
        (env.gitlab.request_count("GET /runners/:id") >= gets + 3).then_some(())
    })
    .await;
    assert_eq!(env.gitlab.request_count("GET /runners/:id/managers"), reads);
}

/// The connection's own access token: scopes and expiry in status, conditions that say what is
/// missing or coming, a Warning event before expiry; GitLab without the endpoint is fine.
async fn connection_token_scopes_and_expiry_are_reported(backend: Backend) {
    let env = Env::start(backend, None).await;
    let conns: Api<GitLabConnection> = Api::namespaced(env.client.clone(), "ci");
    let in_days = |d: i64| {
        let t = k8s_openapi::jiff::Timestamp::now()
            + k8s_openapi::jiff::SignedDuration::from_hours(24 * d);
        t.to_string()[..10].to_string()
    };
    let recheck = |name: &'static str, seconds: i64| {
        let conns = conns.clone();
        async move {
            conns
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"timeoutSeconds": seconds}})),
                )
                .await
                .unwrap();
        }
    };
    let condition = |name: &'static str, type_: &'static str, generation: i64| {
        let (env, conns) = (&env, conns.clone());
        async move {
            env.wait(&format!("{name} {type_}"), || async {
                let c = conns.get(name).await.ok()?;
                let st = c.status?;
                (st.observed_generation >= Some(generation)).then_some(())?;
                let cond = st.conditions.iter().find(|c| c.type_ == type_).cloned()?;
                Some((st.token, cond))
            })
            .await
        }
    };
    // Expiring in 10 days: within the 30-day window.
    env.gitlab
        .set_token_expiry("glpat-emulator-bot", Some(&in_days(10)));
    recheck("gitlab", 31).await;
    let (token, c) = condition("gitlab", "TokenExpiring", 2).await;
    let token = token.expect("token in status");
    assert_eq!(token.scopes, vec!["api"]);
    assert_eq!(token.expires_at.as_deref(), Some(in_days(10).as_str()));
    assert!(token.active);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ExpiresSoon")
    );
    assert!(
        c.message.contains("(in 9 days)") || c.message.contains("(in 10 days)"),
        "{}",
        c.message
    );
    let ev = env.has_event("gitlab", "AccessTokenExpiring").await;
    assert_eq!(ev.0, "Warning");
    let (_, scopes) = condition("gitlab", "TokenScopes", 2).await;
    assert_eq!(
        (scopes.status.as_str(), scopes.reason.as_str()),
        ("True", "Sufficient")
    );

    // Far from expiry: no warning.
    env.gitlab
        .set_token_expiry("glpat-emulator-bot", Some(&in_days(200)));
    recheck("gitlab", 32).await;
    let (_, c) = condition("gitlab", "TokenExpiring", 3).await;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NotExpiringSoon")
    );

    // Narrow scopes: the feature they lack is named.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "ci");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "scoped-token"}, "stringData": {"token": "glpat-emulator-scoped"}})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let scoped: GitLabConnection = serde_json::from_value(json!({"metadata": {"name": "scoped"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "scoped-token"}}})).unwrap();
    conns.create(&PostParams::default(), &scoped).await.unwrap();
    let (_, c) = condition("scoped", "TokenScopes", 1).await;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "MissingScopes")
    );
    assert!(
        c.message.contains("spec.assignedProjects") && c.message.contains("needs the scope api"),
        "{}",
        c.message
    );

    // A GitLab without the endpoint (before 15.5): no token facts, still Ready.
    env.gitlab
        .update_settings(|s| s.personal_access_token_self = false);
    recheck("gitlab", 33).await;
    env.wait("token facts gone", || async {
        let st = conns.get("gitlab").await.ok()?.status?;
        (st.observed_generation == Some(4)
            && st.token.is_none()
            && st
                .conditions
                .iter()
                .all(|c| c.type_ != "TokenExpiring" && c.type_ != "TokenScopes")
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"))
        .then_some(())
    })
    .await;

    // Expired: GitLab refuses it, and Ready says so.
    env.gitlab
        .seed(&gitlab_emulator::Seed {
            tokens: vec![gitlab_emulator::SeedToken {
                token: "glpat-emulator-old".into(),
                user: "platform-bot".into(),
                scopes: vec!["api".into()],
                expired: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    secrets
        .patch(
            "scoped-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "glpat-emulator-old"}})),
        )
        .await
        .unwrap();
    let (_, c) = condition("scoped", "Ready", 1).await;
    let c = if c.status == "False" {
        c
    } else {
        env.wait("scoped not Ready", || async {
            conns
                .get("scoped")
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .await
    };
    assert_eq!(c.reason, "GitLabUnauthorized");
    assert!(c.message.contains("expired"), "{}", c.message);
}

/// `runner-operator jobs`: the runner's recent jobs through its connection, newest first,
/// filtered and limited, as a table or JSON — and not one write anywhere.
async fn jobs_are_listed_through_the_runners_connection(backend: Backend) {
    use gitlab_emulator::JobRec;
    use runner_operator::jobs::{Format, list, render};
    let env = Env::start(backend, None).await;
    env.apply("busy", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let rid = env.ready("busy").await.status.unwrap().runner_id.unwrap();
    let api = env.gitlab.project_id("platform/api").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (id, status, duration) in [
        (101, "success", Some(61.0)),
        (102, "failed", Some(5.0)),
        (103, "success", Some(3700.0)),
        (104, "failed", Some(12.0)),
        (105, "running", None),
    ] {
        env.gitlab.add_job(
            rid,
            JobRec {
                id,
                status: status.into(),
                project_id: api,
                git_ref: Some(format!("feature-{id}")),
                pipeline_id: Some(id * 10),
                started_at: Some(now - (200 - id) * 60_000),
                duration,
                ..Default::default()
            },
        );
    }
    let before = env.gitlab.request_counts();
    let newest = list(env.client.clone(), "ci/busy", None, 3).await.unwrap();
    assert_eq!(
        newest.iter().map(|j| j.id).collect::<Vec<_>>(),
        [105, 104, 103]
    );
    assert_eq!(newest[1].project.as_deref(), Some("platform/api"));
    assert_eq!(newest[1].git_ref.as_deref(), Some("feature-104"));
    assert_eq!(newest[1].pipeline, Some(1040));
    let failed = list(env.client.clone(), "ci/busy", Some("failed"), 20)
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|j| j.id).collect::<Vec<_>>(), [104, 102]);
    let table = render(&failed, Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("DURATION"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("104")
            && lines[1].contains("platform/api")
            && lines[1].ends_with("12s"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&render(&newest[..1], Format::Json)).unwrap();
    let keys: Vec<&str> = json[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The JSON output's schema, pinned (serde_json lists keys sorted).
    assert_eq!(
        keys,
        [
            "duration",
            "id",
            "name",
            "pipeline",
            "project",
            "ref",
            "startedAt",
            "status",
            "webUrl"
        ]
    );
    assert!(
        json[0]["webUrl"]
            .as_str()
            .unwrap()
            .ends_with("/platform/api/-/jobs/105")
    );
    let after = env.gitlab.request_counts();
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0, "read-only: {after:?}");
    let e = list(env.client.clone(), "ci/nope", None, 5)
        .await
        .unwrap_err();
    assert!(e.contains("Runner ci/nope does not exist"), "{e}");
    let e = list(env.client.clone(), "busy", None, 5).await.unwrap_err();
    assert!(e.contains("NAMESPACE/NAME"), "{e}");
}

/// A live runner contacts GitLab every few seconds; the operator does not copy every contact
/// into status, so a resync costs one GET and no write (no status write, no pass it triggers).
async fn live_runners_cost_one_get_and_no_writes_per_resync(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("live", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let rid = env.ready("live").await.status.unwrap().runner_id.unwrap();
    env.gitlab
        .add_manager(rid, "s_live", "18.6.0", "linux", "amd64", Duration::ZERO);
    env.wait("manager seen", || async {
        let g = env.runners().get("live").await.ok()?.status?.gitlab?;
        (g.managers?.summary == "1/1").then_some(())
    })
    .await;
    env.passes(1).await;
    let rv = env
        .runners()
        .get("live")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let before = env.gitlab.request_counts();
    let started = std::time::Instant::now();
    // The runner process contacts GitLab every 100 ms while three resyncs go by.
    let contacting = async {
        loop {
            env.gitlab.touch_runner(rid);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = env.passes(3) => {}
        _ = contacting => {}
    }
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "three resyncs of 2 s, none triggered by the operator's own writes: {:?}",
        started.elapsed()
    );
    let after = env.gitlab.request_counts();
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(delta("GET /runners/:id/managers"), 0);
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0);
    assert_eq!(
        env.runners()
            .get("live")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "no status write"
    );
}

/// Many Runners naming the same projects cost one lookup per path and connection, not one per
/// Runner.
async fn project_paths_are_resolved_once_per_connection(backend: Backend) {
    let env = Env::start(backend, None).await;
    for i in 0..4 {
        env.apply(
            &format!("same-{i}"),
            json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type",
            "project": "platform/api", "assignedProjects": ["platform/web"]}),
        )
        .await;
    }
    for i in 0..4 {
        env.ready(&format!("same-{i}")).await;
    }
    assert_eq!(
        env.gitlab.request_count("GET /projects/:id"),
        2,
        "platform/api and platform/web, once each"
    );
}

async fn steady_state_costs_one_get_and_no_writes(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.apply("steady", project_spec()).await;
    env.ready("steady").await;
    // One resync first, so nothing of the creation is still in flight.
    env.passes(1).await;
    let before = env.gitlab.request_counts();
    let rv_before = env.kube.local().map(|k| k.resource_version());
    let objects_before = env.fingerprint().await;
    let started = std::time::Instant::now();
    env.passes(3).await;
    // Three resyncs of 2 s (jittered ±10 %): not sooner, or passes are being triggered.
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "{:?}",
        started.elapsed()
    );
    let after = env.gitlab.request_counts();
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let gets = delta("GET /runners/:id");
    assert!((2..=5).contains(&gets), "one GET per resync, got {gets}");
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0, "no GitLab writes at steady state: {after:?}");
    assert_eq!(
        delta("GET /projects/:id"),
        0,
        "resolved ids come from status"
    );
    assert_eq!(
        env.kube.local().map(|k| k.resource_version()),
        rv_before,
        "no Kubernetes writes at steady state either"
    );
    assert_eq!(
        env.fingerprint().await,
        objects_before,
        "no Kubernetes writes at steady state either"
    );
}

async fn rate_limits_and_server_errors_back_off_without_losing_anything(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("POST /user/runners".into()),
        path_contains: None,
        times: 2,
        action: gitlab_emulator::FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(1),
        },
    });
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("GET /projects/:id".into()),
        path_contains: None,
        times: 2,
        action: gitlab_emulator::FaultAction::Status {
            status: 503,
            body: None,
            retry_after: None,
        },
    });
    env.apply("flaky", project_spec()).await;
    let st = env.ready("flaky").await.status.unwrap();
    assert_eq!(env.gitlab.runners().len(), 1);
    assert!(
        env.token_works(&env.secret_token("flaky-runner-token").await.unwrap())
            .await
    );
    assert!(st.runner_id.is_some());
}

async fn crash_after_every_gitlab_call_leaves_no_orphan_duplicate_or_dead_token(backend: Backend) {
    // GitLab writes in order: create, assign; a requested rotation: reset; a spec change: PUT;
    // the deletion: DELETE. The n-th reaches GitLab, its answer is lost, then all runs on.
    for n in 1..=5 {
        let (hook, count) = crate::fail_after::fail_after(n);
        let env = Env::start(backend, Some(hook)).await;
        env.apply("crash", project_spec()).await;
        env.ready("crash").await;
        env.runners()
            .patch("crash", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "x"}}})))
            .await
            .unwrap();
        env.wait("rotation handled", || async {
            env.status("crash")
                .await?
                .handled_rotate_request
                .map(|_| ())
        })
        .await;
        let mut spec = project_spec();
        spec["tags"] = json!(["linux"]);
        env.apply("crash", spec).await;
        let st = env.ready("crash").await.status.unwrap();
        let runners = env.gitlab.runners();
        assert_eq!(
            runners.len(),
            1,
            "crash point {n}: exactly one runner, got {runners:?}"
        );
        assert_eq!(Some(runners[0].id), st.runner_id, "crash point {n}");
        assert_eq!(
            runners[0].projects,
            vec!["platform/api", "platform/web"],
            "crash point {n}"
        );
        assert_eq!(runners[0].tags, vec!["linux"], "crash point {n}");
        let token = env.secret_token("crash-runner-token").await.unwrap();
        assert_eq!(
            token, runners[0].token,
            "crash point {n}: the Secret holds the live token"
        );
        assert!(env.token_works(&token).await);
        env.runners()
            .delete("crash", &DeleteParams::default())
            .await
            .unwrap();
        env.wait("deleted everywhere", || async {
            (env.runners().get_opt("crash").await.ok()?.is_none()
                && env.gitlab.runners().is_empty())
            .then_some(())
        })
        .await;
        assert!(
            count.load(Ordering::SeqCst) >= n,
            "crash point {n} was reached"
        );
    }
}

async fn restart_between_create_and_status_finds_the_marked_runner(backend: Backend) {
    // The operator dies right after GitLab created the runner: nothing recorded anywhere.
    let (hook, _) = crate::fail_after::fail_after(1);
    let mut env = Env::start(backend, Some(hook)).await;
    env.apply("restart", project_spec()).await;
    env.wait("created in GitLab", || async {
        (!env.gitlab.runners().is_empty()).then_some(())
    })
    .await;
    env.stop_operator().await;
    let orphan = env.gitlab.runners()[0].clone();
    env.run_operator(None);
    let st = env.ready("restart").await.status.unwrap();
    assert_eq!(st.runner_id, Some(orphan.id), "took its own runner back");
    assert_eq!(env.gitlab.runners().len(), 1);
    let token = env.secret_token("restart-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
    // Deleting cleans up even though the first pass never finished.
    env.runners()
        .delete("restart", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("deleted", || async {
        env.gitlab.runners().is_empty().then_some(())
    })
    .await;
}

async fn a_runner_whose_connection_is_gone_can_be_released(backend: Backend) {
    let env = Env::start(backend, None).await;
    let mut spec = project_spec();
    spec["connectionRef"] = json!({"name": "temp"});
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "temp", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-api-token"}}});
    let conns = Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci");
    conns
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    env.apply("stuck", spec.clone()).await;
    env.ready("stuck").await;
    conns
        .delete("temp", &DeleteParams::default())
        .await
        .unwrap();
    env.runners()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    let msg = env.condition("stuck", "Ready", "DeletionBlocked").await;
    assert!(msg.contains("deletionPolicy: Orphan"), "{msg}");
    spec["deletionPolicy"] = json!("Orphan");
    env.apply("stuck", spec).await;
    env.wait("released", || async {
        env.runners()
            .get_opt("stuck")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(env.gitlab.runners().len(), 1, "Orphan leaves the runner");
}

async fn foreign_secrets_are_never_overwritten(backend: Backend) {
    let env = Env::start(backend, None).await;
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "stringData": {"runner-token": "someone else's"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env.apply("clash", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tokenSecret": {"name": "taken"}})).await;
    let msg = env.condition("clash", "Ready", "SecretNotOwned").await;
    assert!(msg.contains("never overwritten"), "{msg}");
    assert_eq!(
        env.secret_token("taken").await.as_deref(),
        Some("someone else's")
    );
    assert!(
        env.gitlab.runners().is_empty(),
        "no runner whose token could not be stored"
    );
}

/// This scenario's tokens — created, then rotated after a failed assignment — appear nowhere a
/// user could read them (the log buffer also holds other tests' lines; only these are checked).
async fn tokens_never_leak_into_logs_events_or_status(backend: Backend) {
    let env = Env::start(backend, None).await;
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("POST /projects/:id/runners".into()),
        path_contains: None,
        times: 1,
        action: gitlab_emulator::FaultAction::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
    });
    env.apply("secretive", project_spec()).await;
    let id = env
        .ready("secretive")
        .await
        .status
        .unwrap()
        .runner_id
        .unwrap();
    let mut tokens = vec![env.gitlab_runner(id).unwrap().token];
    env.runners().patch("secretive", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "1"}}}))).await.unwrap();
    let second = env
        .wait("rotated", || async {
            env.gitlab_runner(id)
                .map(|g| g.token)
                .filter(|t| *t != tokens[0])
        })
        .await;
    tokens.push(second);
    env.ready("secretive").await;
    let status =
        serde_json::to_string(&env.runners().get("secretive").await.unwrap().status).unwrap();
    let events = format!("{:?}", env.events("secretive").await);
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(logs.contains("secretive"), "logs were captured");
    for t in &tokens {
        let body = t.trim_start_matches("glrt-");
        assert!(!status.contains(body), "status leaks a token");
        assert!(!events.contains(body), "events leak a token");
        assert!(!logs.contains(body), "logs leak a token");
    }
    for access in ["glpat-emulator-bot", "glpat-emulator-root"] {
        assert!(
            !logs.contains(access) && !events.contains(access) && !status.contains(access),
            "access token leaked"
        );
    }
}

async fn expired_tokens_are_replaced_through_the_management_api(backend: Backend) {
    let mut env = Env::start(backend, None).await;
    env.gitlab
        .update_settings(|s| s.project_runner_token_expiration_interval = Some(3600));
    env.apply("late", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    env.ready("late").await;
    // The operator is down while the token expires: the runner endpoints refuse it.
    env.stop_operator().await;
    let dead = env.secret_token("late-runner-token").await.unwrap();
    env.advance(Duration::from_secs(3601));
    assert!(!env.token_works(&dead).await, "the token expired in GitLab");
    env.run_operator(None);
    let fresh = env
        .wait("replaced", || async {
            env.secret_token("late-runner-token")
                .await
                .filter(|t| *t != dead)
        })
        .await;
    assert!(env.token_works(&fresh).await);
}

async fn many_rotations_at_once_stay_within_the_rate_limit(backend: Backend) {
    let env = Env::start_with(backend, None, Duration::from_secs(300)).await;
    // GitLab throttles at 80 requests per 1 s window; the connection allows 60/s, burst 10.
    env.gitlab.update_settings(|s| {
        s.throttle = Some(gitlab_emulator::Throttle {
            limit: 80,
            period_seconds: 1,
        })
    });
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .patch(
            "gitlab",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rateLimit": {"requestsPerSecond": 60, "burst": 10}}})),
        )
        .await
        .unwrap();
    let n = 200;
    for i in 0..n {
        env.apply(&format!("m{i}"), json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    }
    env.wait_for("all ready", Duration::from_secs(120), || async {
        let list = env.runners().list(&ListParams::default()).await.ok()?;
        (list
            .items
            .iter()
            .filter(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count()
            == n)
            .then_some(())
    })
    .await;
    let resets_before = env
        .gitlab
        .request_count("POST /runners/:id/reset_authentication_token");
    let start = std::time::Instant::now();
    for i in 0..n {
        env.runners().patch(&format!("m{i}"), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "all-at-once"}}}))).await.unwrap();
    }
    env.wait_for("all rotated", Duration::from_secs(120), || async {
        (env.gitlab
            .request_count("POST /runners/:id/reset_authentication_token")
            - resets_before
            == n as u64)
            .then_some(())
    })
    .await;
    assert_eq!(
        env.gitlab.throttled_count(),
        0,
        "never a burst that trips GitLab's 429"
    );
    // 200 resets plus their reads at 60/s cannot finish in under ~3 s.
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

async fn watch_namespaces_limit_what_is_reconciled(backend: Backend) {
    let env = Env::start_in(backend, vec!["ci".into(), "team-b".into()]).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    for ns in ["team-b", "elsewhere"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "gitlab", "namespace": ns},
            "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "t"}}});
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "t", "namespace": ns}, "stringData": {"token": "glpat-emulator-bot"}})).unwrap();
        Api::<Secret>::namespaced(env.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(conn).unwrap(),
            )
            .await
            .unwrap();
        let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": ns},
            "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}})).unwrap();
        Api::<Runner>::namespaced(env.client.clone(), ns)
            .create(&PostParams::default(), &r)
            .await
            .unwrap();
    }
    env.apply("in-ci", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    env.ready("in-ci").await;
    let team_b: Api<Runner> = Api::namespaced(env.client.clone(), "team-b");
    env.wait("team-b reconciled", || async {
        team_b.get("r").await.ok()?.status?.runner_id.map(|_| ())
    })
    .await;
    // Resyncs of the watched Runners went by; the one elsewhere was never touched.
    env.passes(2).await;
    let elsewhere = Api::<Runner>::namespaced(env.client.clone(), "elsewhere")
        .get("r")
        .await
        .unwrap();
    assert!(
        elsewhere.status.is_none() && elsewhere.metadata.finalizers.is_none(),
        "an unwatched namespace is left alone"
    );
    assert_eq!(env.gitlab.runners().len(), 2);
}

/// Each scenario twice: against the in-memory API (`operator::local::…`) and against the real
/// control plane (`operator::real::…`, ignored unless asked for: see `cluster`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::cluster::Backend::Local).await
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
                async fn $name() {
                    super::$name(crate::cluster::Backend::Real).await
                }
            )*
        }
    };
}

on_both_backends!(
    create_update_assign_and_delete,
    group_and_instance_runners_through_both_connection_kinds,
    hand_edits_are_reverted_and_deleted_runners_recreated,
    adoption_resets_the_token_and_claims_are_exclusive,
    connection_problems_are_conditions_and_nothing_happens_in_gitlab,
    gitlab_refusals_become_conditions_with_gitlabs_message,
    tokens_are_recovered_rotated_on_request_and_on_schedule,
    expiring_tokens_rotate_before_expiry_and_expiry_is_reported,
    consumers_roll_onto_new_tokens,
    consumers_are_left_alone_where_restarts_are_disabled,
    runner_managers_are_summarized_in_status,
    connection_token_scopes_and_expiry_are_reported,
    jobs_are_listed_through_the_runners_connection,
    live_runners_cost_one_get_and_no_writes_per_resync,
    project_paths_are_resolved_once_per_connection,
    steady_state_costs_one_get_and_no_writes,
    rate_limits_and_server_errors_back_off_without_losing_anything,
    crash_after_every_gitlab_call_leaves_no_orphan_duplicate_or_dead_token,
    restart_between_create_and_status_finds_the_marked_runner,
    a_runner_whose_connection_is_gone_can_be_released,
    foreign_secrets_are_never_overwritten,
    tokens_never_leak_into_logs_events_or_status,
    expired_tokens_are_replaced_through_the_management_api,
    many_rotations_at_once_stay_within_the_rate_limit,
    watch_namespaces_limit_what_is_reconciled,
);

/// Scenarios run by the operator as the chart installs it: `helm install` into the real
/// control plane, the operator authenticated as the chart's ServiceAccount. Cluster-wide
/// (`operator::chart::…`) and `watchNamespaces: [ci]` (`operator::chart_namespaced::…`). Any
/// request RBAC refuses fails the scenario (checked from the API server's audit log).
macro_rules! under_the_chart {
    ($($name:ident),* $(,)?) => {
        mod chart {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
                async fn $name() {
                    super::$name(crate::cluster::Backend::Chart { namespaced: false }).await
                }
            )*
        }
        mod chart_namespaced {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
                async fn $name() {
                    super::$name(crate::cluster::Backend::Chart { namespaced: true }).await
                }
            )*
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn chart_cluster_wide_only_connection_limits_and_namespace_labels() {
    // Cluster-wide only: its Runner lives in a namespace a namespaced release does not watch.
    connection_problems_are_conditions_and_nothing_happens_in_gitlab(Backend::Chart {
        namespaced: false,
    })
    .await
}

under_the_chart!(
    create_update_assign_and_delete,
    group_and_instance_runners_through_both_connection_kinds,
    tokens_are_recovered_rotated_on_request_and_on_schedule,
    consumers_roll_onto_new_tokens,
    a_runner_whose_connection_is_gone_can_be_released,
);
