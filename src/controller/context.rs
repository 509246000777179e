//! What the controllers share: the Kubernetes client, the event recorder, settings, and the
//! owners of the rest — `GitLabClients` (per connection), `Recent` (per Runner), the caches,
//! metrics and the clock.

use crate::controller::reasons::Reason;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::identity::ClusterName;

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

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    /// Who publishes the events (controller, pod).
    pub reporter: Reporter,
    pub settings: Settings,
    /// Clients, rate limiters and what was learnt from GitLab, per connection.
    pub gitlab: super::gitlab_clients::GitLabClients,
    /// The running controllers' caches (none in `plan` and `import`).
    pub caches: super::caches::Caches,
    /// What this process remembers per Runner (forgotten when it is deleted).
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
        let gitlab = super::gitlab_clients::GitLabClients::new(settings.resync);
        Context {
            client,
            recorder,
            reporter,
            settings,
            gitlab,
            caches: Default::default(),
            recent: Default::default(),
            metrics,
            clock: Arc::new(super::clock::SystemClock),
        }
    }

    /// Another Runner (not `uid`) that recorded GitLab runner `id` in its status, as the caches
    /// know it: `(namespace, name)`.
    pub fn claimant(&self, id: crate::gitlab::RunnerId, uid: &str) -> Option<(String, String)> {
        use kube::{Resource, ResourceExt};
        self.caches.runners().into_iter().find_map(|g| {
            let r = g.0.as_ref().ok()?;
            (r.uid().as_deref() != Some(uid)
                && r.meta().deletion_timestamp.is_none()
                && r.status.as_ref().and_then(|s| s.runner_id) == Some(id.0))
            .then(|| (r.namespace().unwrap_or_default(), r.name_any()))
        })
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

    /// Jittered resync period (±10 %), so many Runners do not wake together.
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
