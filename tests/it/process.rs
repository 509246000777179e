//! The `run` process: health endpoints, metrics, and leader election with two instances.

use std::time::Duration;

use futures::FutureExt;
use gitlab_emulator::{GitLabEmulator, default_seed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_local::KubeApiServer;
use runner_operator::run::{RunArgs, serve_operator};
use serde_json::json;

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn args(addr: std::net::SocketAddr, name: &str) -> RunArgs {
    RunArgs {
        kubeconfig: None,
        log_format: runner_operator::telemetry::LogFormat::Text,
        resync_interval: Duration::from_secs(5),
        concurrency: 4,
        watch_namespaces: vec![],
        label_selector: None,
        namespace: "runner-operator".into(),
        listen_address: addr,
        leader_election: true,
        leader_election_lease: "runner-operator".into(),
        consumer_restarts: runner_operator::controller::ConsumerRestarts::Everywhere,
        token_expiry_warning: Duration::from_secs(30 * 86_400),
        cluster_name: None,
        pod_name: Some(name.into()),
    }
}

/// The GitLab emulator and the local API, bootstrapped (CRDs, namespaces, connections).
async fn stand_ins() -> (GitLabEmulator, KubeApiServer, kube::Client) {
    runner_operator::tls::install_crypto_provider();
    let gitlab = GitLabEmulator::start(&default_seed()).await.unwrap();
    let kube = KubeApiServer::start().await.unwrap();
    let client = kube.client().await.unwrap();
    runner_operator::sandbox::bootstrap(&client, &gitlab.url())
        .await
        .unwrap();
    (gitlab, kube, client)
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_leader_health_and_metrics() {
    runner_operator::tls::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "kube_lease_manager=debug",
        ))
        .with_test_writer()
        .try_init();
    let (gitlab, _kube, client) = stand_ins().await;
    gitlab.set_token_expiry("glpat-emulator-bot", Some("2099-01-01"));
    let (a_addr, b_addr) = (free_port(), free_port());
    let (a_stop, a_rx) = tokio::sync::oneshot::channel::<()>();
    let (b_stop, b_rx) = tokio::sync::oneshot::channel::<()>();
    let a = tokio::spawn(serve_operator(
        client.clone(),
        args(a_addr, "pod-a"),
        a_rx.map(|_| ()).boxed().shared(),
    ));
    // pod-a leads before pod-b starts (the order makes the assertions below deterministic).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(a_addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "pod-a never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = tokio::spawn(serve_operator(
        client.clone(),
        args(b_addr, "pod-b"),
        b_rx.map(|_| ()).boxed().shared(),
    ));
    // Both live, exactly one ready: the Lease holder.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ra, rb) = (
            get(a_addr, "/readyz").await.0,
            get(b_addr, "/readyz").await.0,
        );
        if ra == 200 || rb == 200 {
            assert_ne!(ra == 200, rb == 200, "exactly one leader");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody became leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(a_addr, "/livez").await.0, 200);
    assert_eq!(get(b_addr, "/livez").await.0, 200);
    let lease = Api::<Lease>::namespaced(client.clone(), "runner-operator")
        .get("runner-operator")
        .await
        .unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    let (leader_addr, standby_addr, leader_stop, standby_name) =
        if get(a_addr, "/readyz").await.0 == 200 {
            (a_addr, b_addr, a_stop, "pod-b")
        } else {
            (b_addr, a_addr, b_stop, "pod-a")
        };
    assert_ne!(holder, standby_name);
    assert_eq!(
        get(standby_addr, "/readyz").await.0,
        503,
        "standby: live but not ready"
    );

    // The leader reconciles; its metrics show it.
    let runners: Api<runner_operator::crd::Runner> = Api::namespaced(client.clone(), "ci");
    let r: runner_operator::crd::Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "m", "namespace": "ci"},
        "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}})).unwrap();
    runners.create(&Default::default(), &r).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, body) = get(leader_addr, "/metrics").await;
        if body.contains(
            "runner_operator_runners{connection=\"GitLabConnection/ci/gitlab\",ready=\"true\"} 1",
        ) {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the ready runner:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for needle in [
        "runner_operator_reconciles_total{result=\"success\"}",
        "runner_operator_reconcile_duration_seconds_bucket",
        "runner_operator_gitlab_requests_total{endpoint=\"POST /user/runners\",status_class=\"2xx\"} 1",
        "runner_operator_gitlab_request_duration_seconds_bucket{le=",
        "runner_operator_token_rotations_total",
        "runner_operator_gitlab_rate_limit_waits_total",
        "runner_operator_connection_token_expiry_seconds{connection=\"GitLabConnection/ci/gitlab\"}",
        "runner_operator_build_info{version=",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    assert_eq!(gitlab.runners().len(), 1, "only the leader acted");

    // The leader goes away: the standby takes over within the lease duration.
    let _ = leader_stop.send(());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while get(standby_addr, "/readyz").await.0 != 200 {
        if tokio::time::Instant::now() > deadline {
            let lease = Api::<Lease>::namespaced(client.clone(), "runner-operator")
                .get("runner-operator")
                .await
                .unwrap();
            panic!(
                "standby never took over; lease: {}",
                serde_json::to_string(&lease).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_operator_stops_on_the_shutdown_signal() {
    let (_gitlab, _kube, client) = stand_ins().await;
    let addr = free_port();
    let mut a = args(addr, "solo");
    a.leader_election = false;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_operator(
        client.clone(),
        a,
        rx.map(|_| ()).boxed().shared(),
    ));
    // Running first (ready), so a start-up failure cannot pass for a clean stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(addr, "/readyz").await.0 != 200 {
        assert!(!task.is_finished(), "the operator exited before the signal");
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    let r = tokio::time::timeout(Duration::from_secs(30), task).await;
    let outcome = r.expect("the operator did not stop within 30 s of the shutdown signal");
    assert_eq!(outcome.expect("joined"), Ok(()), "a clean stop");
}

/// A leader that loses its Lease (another holder took it over) stops and returns an error, so
/// the process exits non-zero and its pod restarts to compete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_exits_with_an_error() {
    let (_gitlab, _kube, client) = stand_ins().await;
    let addr = free_port();
    let mut a = args(addr, "pod-a");
    a.leader_election_lease = "release-a".into();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_operator(
        client.clone(),
        a,
        rx.map(|_| ()).boxed().shared(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Lease is named as asked; someone else takes it over.
    let leases = Api::<Lease>::namespaced(client.clone(), "runner-operator");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            "release-a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"holderIdentity": "intruder", "renewTime": now, "acquireTime": now, "leaseDurationSeconds": 600}})),
        )
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("the leader stopped")
        .expect("joined");
    let err = result.expect_err("losing the lease is an error");
    assert!(
        err.contains("lost the leader-election Lease runner-operator/release-a"),
        "{err}"
    );
}

/// `version` says what was built (commit and date from build.rs), and `completions` prints a
/// script that knows the subcommands.
#[test]
fn version_and_completions() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-operator"))
            .args(args)
            .output()
            .expect("binary runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let version = run(&["version"]);
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {version}"))
            .to_string()
    };
    assert!(version.starts_with(&format!("runner-operator {}\n", env!("CARGO_PKG_VERSION"))));
    let commit = field("commit");
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let built = field("built");
    assert!(
        built.len() == 20 && built.ends_with('Z') && built.as_bytes()[10] == b'T',
        "{built}"
    );
    assert!(field("cluster").starts_with("(none"), "{version}");
    let named = run(&["version", "--cluster-name", "prod-eu-1"]);
    assert!(named.contains("\ncluster: prod-eu-1\n"), "{named}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_runner-operator"))
        .args(["version", "--cluster-name", "Prod EU"])
        .output()
        .expect("binary runs");
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("DNS label"),
        "{bad:?}"
    );
    // prune refuses to guess which runners are this cluster's.
    let unnamed = std::process::Command::new(env!("CARGO_BIN_EXE_runner-operator"))
        .arg("prune")
        .env_remove("RUNNER_OPERATOR_CLUSTER_NAME")
        .output()
        .expect("binary runs");
    assert!(
        !unnamed.status.success()
            && String::from_utf8_lossy(&unnamed.stderr).contains("--cluster-name"),
        "{unnamed:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for sub in ["run", "crd", "version", "completions", "prune"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
}

/// /metrics of an operator that made one Runner Ready (expiring tokens, so every family the
/// dashboard reads has samples).
async fn metrics_after_one_runner() -> String {
    let (gitlab, _kube, client) = stand_ins().await;
    gitlab.set_token_expiry("glpat-emulator-bot", Some("2099-01-01"));
    gitlab.update_settings(|s| s.project_runner_token_expiration_interval = Some(30 * 86_400));
    let addr = free_port();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let mut a = args(addr, "pod-a");
    a.leader_election = false;
    let task = tokio::spawn(serve_operator(
        client.clone(),
        a,
        rx.map(|_| ()).boxed().shared(),
    ));
    let runners: Api<runner_operator::crd::Runner> = Api::namespaced(client.clone(), "ci");
    let r: runner_operator::crd::Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "m", "namespace": "ci"},
        "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}})).unwrap();
    runners.create(&Default::default(), &r).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (_, body) = get(addr, "/metrics").await;
        if body.contains("runner_operator_token_expiry_timestamp_seconds{") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the runner's token expiry:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    body
}

/// The metric names the Grafana dashboard queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/runner-operator/dashboards/runner-operator.json"
    ))
    .expect("dashboard");
    text.match_indices("runner_operator_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let metrics = metrics_after_one_runner().await;
    for name in dashboard_metrics() {
        assert!(
            metrics
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(&name)),
            "the dashboard queries {name}, which /metrics does not have:\n{metrics}"
        );
    }
}

/// Prometheus' own lint of the exposition: naming, units, HELP on every family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool from .ci/install-tools: cargo test -- --include-ignored runs it (CI does)"]
async fn metrics_pass_promtool_check_metrics() {
    use std::io::Write;
    // Where .ci/install-tools puts it.
    let cache = std::env::var_os("RUNNER_OPERATOR_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/runner-operator")
        });
    let promtool = cache.join("tools/promtool-v0.316.0/promtool");
    let metrics = metrics_after_one_runner().await;
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run .ci/install-tools)", promtool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
