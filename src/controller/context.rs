//! Shared state of the controllers: clients, event recorder, per-connection GitLab clients,
//! per-object backoff.

use crate::controller::reasons::Reason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use super::identity::ClusterName;
use crate::crd::Runner;
use crate::gitlab::GitLabApi;

/// Tunables of `run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Steady-state re-check period (jittered ±10 %).
    pub resync: Duration,
    /// Namespace of the operator (default namespace of cluster connections' Secrets).
    pub namespace: String,
    /// Backoff bounds for failing objects.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long in-flight reconciles may take after the shutdown signal (below the pod's
    /// termination grace period).
    pub shutdown_grace: Duration,
    /// Where consumers listed by Runners may be restarted.
    pub consumer_restarts: ConsumerRestarts,
    /// How long before a connection's access token expires to start warning.
    pub token_expiry_warning: Duration,
    /// This cluster's name (`--cluster-name`), written into ownership markers: a rebuilt
    /// cluster of the same name takes over its predecessor's runners, others never touch them.
    pub cluster_name: Option<ClusterName>,
    /// This instance's name in events (`--pod-name`; the chart passes the pod's through
    /// POD_NAME). None: POD_NAME, if set.
    pub pod_name: Option<String>,
}

/// Namespaces in which the operator may patch the pod templates of token consumers
/// (`--consumer-restarts`; the chart grants workload `patch` only there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRestarts {
    Everywhere,
    Only(std::collections::BTreeSet<String>),
}

impl ConsumerRestarts {
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            ConsumerRestarts::Everywhere => true,
            ConsumerRestarts::Only(set) => set.contains(namespace),
        }
    }
}

impl std::str::FromStr for ConsumerRestarts {
    type Err = String;

    /// `*` (everywhere), `none` or empty (nowhere), or comma-separated namespaces.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(ConsumerRestarts::Everywhere);
        }
        if s.is_empty() || s == "none" {
            return Ok(ConsumerRestarts::Only(Default::default()));
        }
        let set: std::collections::BTreeSet<String> =
            s.split(',').map(|n| n.trim().to_string()).collect();
        if set.iter().any(|n| n.is_empty() || n == "*") {
            return Err(format!(
                "{s:?}: give \"*\" alone, \"none\", or namespace names separated by commas"
            ));
        }
        Ok(ConsumerRestarts::Only(set))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
            namespace: "runner-operator".into(),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(45),
            consumer_restarts: ConsumerRestarts::Everywhere,
            token_expiry_warning: Duration::from_secs(30 * 86_400),
            cluster_name: None,
            pod_name: None,
        }
    }
}

/// A connection's GitLab client.
pub type Client = Arc<dyn GitLabApi>;

/// Connection key, "project" or "group", path.
pub type PathKey = (String, &'static str, String);

/// (connection key, "project" or "group", id).
pub type IdKey = (String, &'static str, i64);

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    /// Who publishes the events (controller, pod).
    pub reporter: Reporter,
    pub settings: Settings,
    /// One client per connection (key: kind/namespace/name), rebuilt when its settings change.
    pub gitlab: Mutex<HashMap<String, (String, Client)>>,
    /// Each connection as last resolved, by the connection's generation: Runner passes reuse it
    /// without reading the token Secret again (the connection's own checks read it).
    pub(crate) resolved: Mutex<HashMap<String, (i64, super::connection::Resolved)>>,
    /// One 429 pause per GitLab and access token (key: URL and token hash), shared by every
    /// connection using them: GitLab limits per user, and after a 429 nothing may reach it
    /// before Retry-After.
    pub gates: Mutex<HashMap<String, Arc<crate::gitlab::PauseGate>>>,
    /// One rate limiter per connection (its own rateLimit), kept across client rebuilds.
    pub limiters: Mutex<HashMap<String, Arc<crate::gitlab::RateLimiter>>>,
    /// GitLab runner id → the marker its note carries (None: no marker), as last read. A
    /// marker changes hands only when this process takes a runner over (and updates this), so
    /// the searches for a runner lost mid-create or left by a predecessor read each
    /// candidate's note once per process.
    pub marker_owners: Mutex<HashMap<i64, Option<super::identity::Marker>>>,
    /// Undecodable Runners already reported: (uid, generation).
    pub invalid_reported: Mutex<std::collections::HashSet<(String, i64)>>,
    /// Consecutive failures per Runner.
    pub failures: Mutex<HashMap<ObjectRef<Runner>, u32>>,
    /// Project and group paths resolved to ids, per connection: many Runners name the same
    /// project (key: connection key, "project" or "group", path; value: id, when read).
    paths: Mutex<HashMap<PathKey, (i64, tokio::time::Instant)>>,
    /// The other way round, for tenancy: GitLab's canonical full path of a project or group id
    /// (key: connection key, "project" or "group", id; value: path, when read).
    canonical_paths: Mutex<HashMap<IdKey, (String, tokio::time::Instant)>>,
    /// One lookup per path at a time (the others wait for its answer).
    path_locks: Mutex<HashMap<PathKey, Arc<tokio::sync::Mutex<()>>>>,
    /// When this process last read each Runner's managers (key: uid).
    pub managers_checked: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The running controllers' caches (none in `plan` and `import`).
    pub caches: super::caches::Caches,
    /// What this process last wrote and checked per Runner.
    pub recent: super::recent::Recent,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What "now" is (token deadlines, timestamps in status).
    pub clock: Arc<dyn super::clock::Clock>,
}

impl Context {
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        let instance = settings
            .pod_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok());
        let reporter = Reporter {
            controller: "runner-operator".into(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let metrics = Arc::new(crate::metrics::Metrics::new(
            settings.cluster_name.as_ref().map(ClusterName::as_str),
        ));
        Context {
            client,
            recorder,
            reporter,
            settings,
            gitlab: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
            invalid_reported: Mutex::new(Default::default()),
            marker_owners: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            managers_checked: Mutex::new(HashMap::new()),
            paths: Mutex::new(HashMap::new()),
            canonical_paths: Mutex::new(HashMap::new()),
            path_locks: Mutex::new(HashMap::new()),
            caches: Default::default(),
            recent: Default::default(),
            metrics,
            clock: Arc::new(super::clock::SystemClock),
        }
    }

    /// Another Runner (not `uid`) that recorded GitLab runner `id` in its status, as the caches
    /// know it: `(namespace, name)`.
    pub fn claimant(&self, id: i64, uid: &str) -> Option<(String, String)> {
        use kube::{Resource, ResourceExt};
        self.caches.runners().into_iter().find_map(|g| {
            let r = g.0.as_ref().ok()?;
            (r.uid().as_deref() != Some(uid)
                && r.meta().deletion_timestamp.is_none()
                && r.status.as_ref().and_then(|s| s.runner_id) == Some(id))
            .then(|| (r.namespace().unwrap_or_default(), r.name_any()))
        })
    }

    /// Jittered resync period (±10 %), so many Runners do not wake together.
    /// A path's id: from the cache when read within the resync period, else from `fetch` —
    /// once, however many Runners ask at the same time.
    pub async fn resolve_path<E, Fut>(
        &self,
        conn: &str,
        kind: &'static str,
        path: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<i64, E>
    where
        Fut: std::future::Future<Output = Result<i64, E>>,
    {
        let key = (conn.to_string(), kind, path.to_string());
        let fresh = |paths: &HashMap<_, (i64, tokio::time::Instant)>| {
            paths
                .get(&key)
                .filter(|(_, at)| at.elapsed() < self.settings.resync)
                .map(|(id, _)| *id)
        };
        if let Some(id) = fresh(&self.paths.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(id);
        }
        let gate = self
            .path_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(id) = fresh(&self.paths.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(id);
        }
        let id = fetch().await?;
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (id, tokio::time::Instant::now()));
        Ok(id)
    }

    /// Publishes an event on `object` and logs the same words (info for Normal, warn for
    /// Warning), so `kubectl logs` tells the story without `kubectl get events`. A failed
    /// publish is logged, never an error: events are a report, not the work.
    pub async fn publish(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let reason = reason.as_str();
        let (kind, ns, name) = (
            object.kind.as_deref().unwrap_or_default(),
            object.namespace.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default(),
        );
        match type_ {
            EventType::Normal => tracing::info!(kind, namespace = ns, name, reason, "{note}"),
            EventType::Warning => tracing::warn!(kind, namespace = ns, name, reason, "{note}"),
        }
        let note: String = note.chars().take(1024).collect();
        let published = match type_ {
            // Warnings repeat (a failing Runner retries): kube's recorder folds them into a
            // series, keeping each for six minutes to do so.
            EventType::Warning => {
                let ev = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note),
                    action: action.into(),
                    secondary: None,
                };
                self.recorder.publish(&ev, object).await
            }
            // Normal events report one change each: created as they are, nothing kept (the
            // recorder's cache held one event per Runner, ~2 KB each, after a mass create).
            EventType::Normal => self.create_event(object, reason, action, note).await,
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, reason, "could not publish an event");
        }
    }

    /// An events.k8s.io/v1 Event as kube's recorder would write it, without its cache.
    async fn create_event(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let now = k8s_openapi::jiff::Timestamp::now();
        let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
        let event = K8sEvent {
            action: Some(action.into()),
            reason: Some(reason.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(object.clone()),
            note: Some(note),
            metadata: ObjectMeta {
                namespace: Some(ns.clone()),
                name: Some(format!(
                    "{}.{:x}",
                    object.name.as_deref().unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some("Normal".into()),
            ..Default::default()
        };
        kube::Api::<K8sEvent>::namespaced(self.client.clone(), &ns)
            .create(&kube::api::PostParams::default(), &event)
            .await
            .map(|_| ())
    }

    /// Forgets how a connection was resolved (its token or CA Secret changed).
    pub fn forget_resolved(&self, conn: &str) {
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conn);
    }

    /// Forgets a connection's resolved paths (GitLab said a project or group is gone).
    pub fn forget_paths(&self, conn: &str) {
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(c, _, _), _| c != conn);
        self.canonical_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(c, _, _), _| c != conn);
    }

    /// A project's or group's canonical full path: from the cache when read within the resync
    /// period (a move in GitLab is seen within one period), else from `fetch`.
    pub async fn canonical_path<E, Fut>(
        &self,
        conn: &str,
        kind: &'static str,
        id: i64,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<String, E>
    where
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let key = (conn.to_string(), kind, id);
        let cached = self
            .canonical_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(_, at)| at.elapsed() < self.settings.resync)
            .map(|(p, _)| p.clone());
        if let Some(p) = cached {
            return Ok(p);
        }
        let path = fetch().await?;
        self.canonical_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (path.clone(), tokio::time::Instant::now()));
        Ok(path)
    }

    pub fn resync(&self) -> Duration {
        self.settings.resync.mul_f64(0.9 + 0.2 * fastrand::f64())
    }

    /// Exponential backoff for the n-th consecutive failure, jittered, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let base = self.settings.backoff_min.as_secs_f64() * 2f64.powi(failures.min(20) as i32);
        Duration::from_secs_f64(
            base.min(self.settings.backoff_max.as_secs_f64()) * (0.8 + 0.4 * fastrand::f64()),
        )
    }

    pub fn record_failure(&self, obj: ObjectRef<Runner>) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(obj).or_insert(0);
        *n += 1;
        *n
    }

    pub fn record_success(&self, obj: &ObjectRef<Runner>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(obj);
    }
}

#[cfg(test)]
mod tests {
    use super::ConsumerRestarts;

    #[test]
    fn consumer_restart_flag_values() {
        let parse = |s: &str| s.parse::<ConsumerRestarts>();
        assert_eq!(parse("*"), Ok(ConsumerRestarts::Everywhere));
        for nowhere in ["", "none", " none "] {
            let r = parse(nowhere).unwrap();
            assert!(!r.allows("ci"), "{nowhere:?}");
        }
        let some = parse("ci, team-b").unwrap();
        assert!(some.allows("ci") && some.allows("team-b") && !some.allows("other"));
        assert!(parse("ci,*").is_err());
        assert!(parse("ci,,b").is_err());
    }
}
