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
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use runner_operator::controller::{self, Context, Options, Settings};
use runner_operator::crd::Runner;
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};

mod clusters;
mod connections;
mod kstatus;
mod lifecycle;
mod resilience;
mod tenancy;
mod tokens;

use clusters::*;
use connections::*;
use lifecycle::*;
use resilience::*;
use tenancy::*;
use tokens::*;

pub(crate) static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

pub(crate) static INIT: Once = Once::new();

pub(crate) struct LogWriter;

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
pub(crate) fn capture_logs() {
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
    /// Shared by the clusters of a rebuild scenario (one GitLab, several clusters).
    pub gitlab: Arc<GitLabEmulator>,
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
    /// `--cluster-name` of the operator (from the next run_operator).
    pub cluster_name: Option<runner_operator::controller::identity::ClusterName>,
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
    pub async fn start(backend: Backend) -> Env {
        Self::start_with(backend, Duration::from_secs(2)).await
    }

    /// An operator limited to some namespaces.
    pub async fn start_in(backend: Backend, namespaces: Vec<String>) -> Env {
        Self::start_full(backend, Duration::from_secs(2), namespaces).await
    }

    pub async fn start_with(backend: Backend, resync: Duration) -> Env {
        Self::start_full(backend, resync, vec![]).await
    }

    /// A cluster whose operator runs with `--cluster-name name`, using `gitlab` when given
    /// (clusters rebuilt against one GitLab) or a GitLab of its own.
    pub async fn start_cluster(
        backend: Backend,
        name: &str,
        gitlab: Option<Arc<GitLabEmulator>>,
    ) -> Env {
        let mut env = Self::start_on(backend, Duration::from_secs(2), vec![], gitlab).await;
        env.stop_operator().await;
        env.cluster_name = Some(name.parse().expect("cluster name"));
        env.run_operator();
        env
    }

    async fn start_full(backend: Backend, resync: Duration, namespaces: Vec<String>) -> Env {
        Self::start_on(backend, resync, namespaces, None).await
    }

    async fn start_on(
        backend: Backend,
        resync: Duration,
        namespaces: Vec<String>,
        gitlab: Option<Arc<GitLabEmulator>>,
    ) -> Env {
        capture_logs();
        let gitlab = match gitlab {
            Some(g) => g,
            None => Arc::new(
                GitLabEmulator::start(&default_seed())
                    .await
                    .expect("gitlab emulator"),
            ),
        };
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
            cluster_name: None,
        };
        env.run_operator();
        env
    }

    pub fn run_operator(&mut self) {
        let settings = Settings {
            resync: self.resync,
            namespace: "runner-operator".into(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            consumer_restarts: self.consumer_restarts.clone(),
            cluster_name: self.cluster_name.clone(),
            ..Settings::default()
        };
        let mut ctx = Context::new(self.operator_client.clone(), settings);
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
        self.events_in_namespace("ci", name).await
    }

    /// (type, reason, message) of the events about `name` in `ns`.
    pub async fn events_in_namespace(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let evs = Api::<CoreEvent>::namespaced(self.client.clone(), ns)
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
pub(crate) fn gitlab_writes(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    after
        .iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
        .sum()
}

pub(crate) fn project_spec() -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "assignedProjects": ["platform/web"],
           "description": "Linux builders", "tags": ["linux", "docker"], "runUntagged": false, "maximumTimeout": 3600, "maintenanceNote": "team platform"})
}

/// Each scenario twice: against the in-memory API (`operator::local::…`) and against the real
/// control plane (`operator::real::…`, ignored unless asked for: see `cluster`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?; long: $($long:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::cluster::Backend::Local).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "long: CI runs it (cargo test -- --include-ignored)"]
                async fn $long() {
                    super::$long(crate::cluster::Backend::Local).await
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
                async fn $long() {
                    super::$long(crate::cluster::Backend::Real).await
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
    watch_namespaces_limit_what_is_reconciled,
    tenants_stay_in_their_lane,
    naming_a_running_cluster_only_rewrites_markers;
    // The slowest on the in-memory API too (200 Runners; three clusters one after another).
    long: many_rotations_at_once_stay_within_the_rate_limit,
    a_rebuilt_cluster_takes_over_its_runners_and_prunes_orphans,
);

/// kstatus needs Go (tests/kstatus); run on the real control plane, whose objects Flux reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane and Go: tests/control-plane/e2e.sh runs it, or cargo test -- --include-ignored"]
async fn kstatus_reads_live_objects_as_platform_teams_expect() {
    kstatus::kstatus_agrees_with_every_state(crate::cluster::Backend::Real).await
}

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
pub(crate) async fn chart_cluster_wide_only_connection_limits_and_namespace_labels() {
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
