//! Scale benchmark: N Runners against the GitLab emulator with a fixed latency per call.
//!
//! ```text
//! cargo run --release --example bench -- --runners 1000 --latency-ms 20 --concurrency 32 --rps 500
//! ```
//! Prints the time until every Runner is Ready, GitLab requests per Runner to create, GitLab
//! requests per Runner per resync at steady state, and the peak RSS of the process (which also
//! holds both emulators). Results go into docs/benchmarks.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use gitlab_emulator::{Fault, FaultAction, GitLabEmulator, default_seed};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube_local::KubeApiServer;
use runner_operator::controller::{self, Context, Options, Settings};
use runner_operator::crd::{GitLabConnection, Runner};
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn total(
    counts: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    pred: impl Fn(&str) -> bool,
) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| pred(k))
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
        .sum()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n = arg("--runners", 1000);
    let latency = arg("--latency-ms", 20);
    let concurrency = arg("--concurrency", 32) as u16;
    let rps = arg("--rps", 500);
    let resync = Duration::from_secs(arg("--resync-s", 60));
    runner_operator::tls::install_crypto_provider();
    let gitlab = GitLabEmulator::start(&default_seed())
        .await
        .expect("gitlab");
    gitlab.inject(Fault {
        endpoint: None,
        path_contains: Some("/api/v4/".into()),
        times: u32::MAX,
        action: FaultAction::Delay { millis: latency },
    });
    let kube = KubeApiServer::start_with("127.0.0.1:0", Duration::from_secs(30))
        .await
        .expect("kube");
    let client = kube.client().await.expect("client");
    runner_operator::sandbox::bootstrap(&client, &gitlab.url())
        .await
        .expect("bootstrap");
    Api::<GitLabConnection>::namespaced(client.clone(), "ci")
        .patch(
            "gitlab",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rateLimit": {"requestsPerSecond": rps, "burst": rps}}})),
        )
        .await
        .expect("rate limit");
    let settings = Settings {
        resync,
        namespace: "runner-operator".into(),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(client.clone(), settings));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(controller::run(
        ctx,
        Options {
            concurrency,
            namespaces: vec![],
            label_selector: None,
        },
        rx.map(|_| ()).boxed().shared(),
    ));

    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");
    let before = gitlab.request_counts();
    let start = Instant::now();
    for i in 0..n {
        let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": format!("r{i}"), "namespace": "ci"},
            "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["bench"], "description": format!("bench {i}")}}))
        .expect("runner");
        runners
            .create(&PostParams::default(), &r)
            .await
            .expect("create");
    }
    loop {
        let list = runners.list(&ListParams::default()).await.expect("list");
        let ready = list
            .items
            .iter()
            .filter(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready as u64 == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converge = start.elapsed();
    let created = gitlab.request_counts();
    let create_reqs = total(&created, &before, |k| {
        k.starts_with("POST /user/runners")
            || k.starts_with("GET /runners/:id")
            || k.starts_with("GET /projects")
            || k.contains("runners/:id")
    });
    let all_reqs = total(&created, &before, |_| true);
    println!(
        "runners: {n}, latency per GitLab call: {latency} ms, concurrency: {concurrency}, client rate limit: {rps}/s"
    );
    println!("time until all Ready: {:.1} s", converge.as_secs_f64());
    println!(
        "GitLab requests to create, per runner: {:.2} (runner endpoints and lookups: {:.2})",
        all_reqs as f64 / n as f64,
        create_reqs as f64 / n as f64
    );
    println!(
        "requests by endpoint during creation: {:?}",
        created
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect::<BTreeMap<_, _>>()
    );
    // Steady state: wait for resyncs to go by.
    let window = resync.mul_f64(2.2);
    let before = gitlab.request_counts();
    tokio::time::sleep(window).await;
    let after = gitlab.request_counts();
    let resyncs = window.as_secs_f64() / resync.as_secs_f64();
    let gets = total(&after, &before, |k| k == "GET /runners/:id");
    let writes = total(&after, &before, |k| !k.starts_with("GET "));
    let other_gets = total(&after, &before, |k| {
        k.starts_with("GET ") && k != "GET /runners/:id" && k != "GET /version" && k != "GET /user"
    });
    println!(
        "steady state over {:.0} s (~{resyncs:.1} resyncs of {} s): GET /runners/:id per runner per resync: {:.2}; other GETs: {other_gets}; writes: {writes}",
        window.as_secs_f64(),
        resync.as_secs(),
        gets as f64 / n as f64 / resyncs
    );
    // Live runners: a runner process per Runner contacts GitLab, so GitLab's status turns
    // online and the operator reads the managers once, then every tenth resync.
    let live_resyncs = arg("--live-resyncs", 10);
    if live_resyncs > 0 {
        let ids: Vec<i64> = gitlab.runners().iter().map(|r| r.id).collect();
        let before = gitlab.request_counts();
        for id in &ids {
            gitlab.add_manager(
                *id,
                &format!("s_{id}"),
                "18.6.0",
                "linux",
                "amd64",
                Duration::ZERO,
            );
        }
        // The transition (status online: one read of the managers, one status write).
        tokio::time::sleep(resync * 2).await;
        let after = gitlab.request_counts();
        println!(
            "runner processes appear: per runner GET /runners/:id/managers {:.2}, GET /runners/:id {:.2} over 2 resyncs",
            total(&after, &before, |x| x == "GET /runners/:id/managers") as f64 / n as f64,
            total(&after, &before, |x| x == "GET /runners/:id") as f64 / n as f64,
        );
        let before = after;
        let window = resync * live_resyncs as u32;
        tokio::time::sleep(window).await;
        let after = gitlab.request_counts();
        let per =
            |k: &str| total(&after, &before, |x| x == k) as f64 / n as f64 / live_resyncs as f64;
        let all_gitlab = total(&after, &before, |k| k != "GET /version" && k != "GET /user");
        println!(
            "then live runners over {live_resyncs} resyncs: per runner per resync GET /runners/:id {:.2}, GET /runners/:id/managers {:.2}, all GitLab requests {:.2}; writes: {}",
            per("GET /runners/:id"),
            per("GET /runners/:id/managers"),
            all_gitlab as f64 / n as f64 / live_resyncs as f64,
            total(&after, &before, |k| !k.starts_with("GET "))
        );
        let list = runners.list(&ListParams::default()).await.expect("list");
        let summarized = list
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.gitlab.as_ref())
                    .and_then(|g| g.managers.as_ref())
                    .is_some_and(|m| m.summary == "1/1")
            })
            .count();
        println!("Runners showing their manager (1/1): {summarized} of {n}");
    }
    println!(
        "peak RSS (operator + both emulators in one process): {:.0} MiB",
        peak_rss_mib()
    );
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
}
