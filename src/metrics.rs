//! Prometheus metrics with bounded label sets (fixed vocabularies; per-Runner only where asked:
//! the token expiry gauge).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Reconciles: success or error. Skipped passes: why (unchanged, deferred, cache-listing,
    /// cache-lag).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Endpoint template, e.g. `GET /runners/:id`.
    pub endpoint: String,
    /// 2xx, 4xx, 429, 5xx, or error (no answer).
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// kind/namespace/name of the connection.
    pub connection: String,
    pub ready: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<ResultLabels, Histogram>,
    /// Passes that did not check GitLab (nothing changed and no check due; or a periodic
    /// check stepped aside for new work).
    pub passes_skipped: Family<ResultLabels, Counter>,
    pub gitlab_requests: Family<RequestLabels, Counter>,
    pub gitlab_request_duration: Family<EndpointLabels, Histogram>,
    pub rate_limit_waits: Counter,
    pub rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub token_expiry: Family<RunnerLabels, Gauge>,
    pub rotations: Family<ReasonLabels, Counter>,
    runners: Family<ConnectionLabels, Gauge>,
    runner_state: Mutex<HashMap<(String, String), (String, bool)>>,
    connection_token_expiry: Family<ConnectionKey, Gauge>,
    /// Connection → its access token's expiry (Unix seconds); seconds left are computed at
    /// scrape time.
    connection_tokens: Mutex<HashMap<String, i64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionKey {
    /// kind/namespace/name of the connection.
    pub connection: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(None)
    }
}

impl Metrics {
    /// The registry, its build info naming the cluster (`--cluster-name`; empty without one).
    pub fn new(cluster: Option<&str>) -> Self {
        let histogram = || Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let mut m = Metrics {
            registry: Registry::with_prefix("runner_operator"),
            reconciles: Family::default(),
            passes_skipped: Family::default(),
            reconcile_duration: Family::new_with_constructor(histogram),
            gitlab_requests: Family::default(),
            gitlab_request_duration: Family::new_with_constructor(histogram),
            rate_limit_waits: Counter::default(),
            rate_limit_wait_seconds: Counter::default(),
            token_expiry: Family::default(),
            rotations: Family::default(),
            runners: Family::default(),
            runner_state: Mutex::new(HashMap::new()),
            connection_token_expiry: Family::default(),
            connection_tokens: Mutex::new(HashMap::new()),
        };
        m.register_runner_metrics(cluster);
        m.register_gitlab_metrics();
        m
    }

    fn register_runner_metrics(&mut self, cluster: Option<&str>) {
        let r = &mut self.registry;
        r.register(
            "connection_token_expiry_seconds",
            "Seconds until each connection's access token expires (negative: expired)",
            self.connection_token_expiry.clone(),
        );
        r.register(
            "reconciles",
            "Runner reconciles by result",
            self.reconciles.clone(),
        );
        r.register(
            "passes_skipped",
            "Runner reconciles that did not check GitLab: unchanged since the last check (not due), or deferred (a periodic check stepping aside for queued work)",
            self.passes_skipped.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of Runner reconciles",
            self.reconcile_duration.clone(),
        );
        r.register(
            "token_expiry_timestamp_seconds",
            "When each Runner's current token expires (Unix seconds)",
            self.token_expiry.clone(),
        );
        r.register(
            "token_rotations",
            "Token resets by reason",
            self.rotations.clone(),
        );
        r.register(
            "runners",
            "Runners by connection and readiness",
            self.runners.clone(),
        );
        r.register(
            "build",
            "The operator's version, git commit and cluster name",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("commit", crate::build::COMMIT.to_string()),
                ("cluster", cluster.unwrap_or_default().to_string()),
            ]),
        );
    }

    fn register_gitlab_metrics(&mut self) {
        let r = &mut self.registry;
        r.register(
            "gitlab_requests",
            "GitLab API requests by endpoint and status class",
            self.gitlab_requests.clone(),
        );
        r.register(
            "gitlab_request_duration_seconds",
            "Duration of GitLab API requests",
            self.gitlab_request_duration.clone(),
        );
        r.register(
            "gitlab_rate_limit_waits",
            "Requests held back by a connection's rate limit or a 429",
            self.rate_limit_waits.clone(),
        );
        r.register(
            "gitlab_rate_limit_wait_seconds",
            "Time spent waiting for a connection's rate limit",
            self.rate_limit_wait_seconds.clone(),
        );
    }
}

impl Metrics {
    pub fn pass_skipped(&self, why: &str) {
        self.passes_skipped
            .get_or_create(&ResultLabels { result: why.into() })
            .inc();
    }

    pub fn reconciled(&self, result: &str, took: Duration) {
        let l = ResultLabels {
            result: result.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.reconcile_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    pub fn gitlab_request(&self, endpoint: &str, status: Option<u16>, took: Duration) {
        // 429 on its own: rate limiting is alerted on separately from other client errors.
        let status_class = match status {
            Some(429) => "429".into(),
            Some(s) => format!("{}xx", s / 100),
            None => "error".into(),
        };
        self.gitlab_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                status_class,
            })
            .inc();
        self.gitlab_request_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_waits.inc();
        self.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
    }

    /// Records a Runner's connection, readiness and token expiry (None: no expiry).
    pub fn runner(
        &self,
        namespace: &str,
        name: &str,
        connection: &str,
        ready: bool,
        expires_unix: Option<i64>,
    ) {
        let key = RunnerLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match expires_unix {
            Some(t) => {
                self.token_expiry.get_or_create(&key).set(t);
            }
            None => {
                self.token_expiry.remove(&key);
            }
        }
        self.runner_state
            .lock()
            .insert((namespace.into(), name.into()), (connection.into(), ready));
    }

    /// Forgets a deleted Runner.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.token_expiry.remove(&RunnerLabels {
            namespace: namespace.into(),
            name: name.into(),
        });
        self.runner_state
            .lock()
            .remove(&(namespace.into(), name.into()));
    }

    /// A connection's access token expiry (Unix seconds), or None when unknown or never.
    pub fn connection_token(&self, connection: &str, expires_unix: Option<i64>) {
        let mut map = self.connection_tokens.lock();
        match expires_unix {
            Some(t) => {
                map.insert(connection.into(), t);
            }
            None => {
                map.remove(connection);
            }
        }
    }

    /// The OpenMetrics exposition (`to_text_format` turns it into the classic text format).
    pub fn encode(&self) -> String {
        self.connection_token_expiry.clear();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for (connection, at) in self.connection_tokens.lock().iter() {
            self.connection_token_expiry
                .get_or_create(&ConnectionKey {
                    connection: connection.clone(),
                })
                .set(at - now);
        }
        self.runners.clear();
        for (connection, ready) in self.runner_state.lock().values() {
            self.runners
                .get_or_create(&ConnectionLabels {
                    connection: connection.clone(),
                    ready: ready.to_string(),
                })
                .inc();
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl crate::gitlab::client::Observer for Metrics {
    fn request(&self, endpoint: &str, status: Option<u16>, took: Duration) {
        self.gitlab_request(endpoint, status, took);
    }

    fn rate_limited(&self, waited: Duration) {
        self.rate_limit_wait(waited);
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers and
/// tools that do not ask for OpenMetrics (promtool, older agents, curl): an OpenMetrics `info`
/// family becomes a `_info` gauge, counters are named by their `_total` samples, and the `UNIT`
/// and `EOF` lines go. A 0.0.4 parser fails the whole scrape on an `info` type.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "info" => (format!("{name}_info"), "gauge"),
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        // Counters' creation timestamps have no place in 0.0.4.
        if line.contains("_created{") || line.contains("_created ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_no_openmetrics_only_types() {
        let m = Metrics::new(Some("prod"));
        m.gitlab_request("GET /runners/:id", Some(200), Duration::from_millis(1));
        let text = to_text_format(&m.encode());
        assert!(
            !text.contains(" info\n") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE runner_operator_build_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE runner_operator_gitlab_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("runner_operator_build_info{version="),
            "{text}"
        );
    }

    #[test]
    fn requests_are_counted_by_status_class_with_429_apart() {
        let m = Metrics::default();
        for status in [Some(200), Some(201), Some(404), Some(429), Some(503), None] {
            m.gitlab_request("GET /runners/:id", status, Duration::from_millis(1));
        }
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "runner_operator_build_info{{version=\"{}\",commit=\"{}\",cluster=\"\"}} 1",
                env!("CARGO_PKG_VERSION"),
                crate::build::COMMIT
            )),
            "{text}"
        );
        for (class, n) in [("2xx", 2), ("4xx", 1), ("429", 1), ("5xx", 1), ("error", 1)] {
            let line = format!(
                "runner_operator_gitlab_requests_total{{endpoint=\"GET /runners/:id\",status_class=\"{class}\"}} {n}"
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
