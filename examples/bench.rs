//! Scale benchmark: N Runners against the GitLab emulator with a fixed latency per call.
//!
//! ```text
//! cargo run --release --example bench -- --runners 1000 --latency-ms 20 --concurrency 32 --rps 500
//! ```
//! Prints the time until every Runner is Ready, GitLab requests per Runner to create, GitLab
//! requests per Runner per resync at steady state, and the peak RSS.
//!
//! `--operator-bin target/release/runner-operator` runs the operator as its own process (the
//! stand-ins stay in this one): then the RSS and CPU are the operator's alone, Kubernetes
//! requests are counted too, and a restart (SIGKILL, start again) is measured. Without it the
//! operator runs in this process and the RSS includes both stand-ins. Results go into
//! docs/benchmarks.md.

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
    peak_rss_of("self")
}

/// VmHWM of a process (`self` or a pid), MiB.
fn peak_rss_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
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

/// User plus system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// The operator, in this process or as its own.
enum Operator {
    InProcess(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    Process {
        child: std::process::Child,
        metrics: String,
    },
}

impl Operator {
    fn spawn(
        bin: &str,
        kubeconfig: &std::path::Path,
        resync: Duration,
        concurrency: u16,
    ) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = std::process::Command::new(bin)
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--resync-interval",
                &format!("{}s", resync.as_secs()),
                "--concurrency",
                &concurrency.to_string(),
                "--listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(match std::env::var_os("BENCH_OPERATOR_LOG") {
                Some(path) => std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
                None => std::process::Stdio::null(),
            })
            .spawn()
            .expect("the operator binary starts");
        Operator::Process {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    /// Reconciles so far (the operator's own counter), when it runs as a process.
    async fn reconciles(&self) -> f64 {
        let Operator::Process { metrics, .. } = self else {
            return 0.0;
        };
        let Ok(resp) = reqwest::get(metrics).await else {
            return 0.0;
        };
        resp.text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("runner_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Operator::Process { child, .. } => Some(child.id()),
            Operator::InProcess(..) => None,
        }
    }

    async fn stop(self) {
        match self {
            Operator::InProcess(tx, op) => {
                let _ = tx.send(());
                let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
            }
            Operator::Process { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
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
    let bin = std::env::args()
        .skip_while(|a| a != "--operator-bin")
        .nth(1);
    let kubeconfig = std::env::temp_dir().join(format!("bench-{}.kubeconfig", std::process::id()));
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let start_operator = || match &bin {
        Some(bin) => Operator::spawn(bin, &kubeconfig, resync, concurrency),
        None => {
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
            Operator::InProcess(tx, op)
        }
    };
    let mut operator = start_operator();
    // The bench's own Kubernetes requests (creates, readiness polls) are not the operator's.
    let mut own_kube_requests = 0u64;
    let kube_before = kube.request_counts();
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
        own_kube_requests += 1;
    }
    loop {
        own_kube_requests += 1;
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
    let kube_created = kube.request_counts();
    let kube_reqs = total(&kube_created, &kube_before, |_| true).saturating_sub(own_kube_requests);
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
    if bin.is_some() {
        println!(
            "Kubernetes requests by the operator to create, per runner: {:.2}",
            kube_reqs as f64 / n as f64
        );
    }
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
    let kube_before = kube.request_counts();
    let reconciles_before = operator.reconciles().await;
    let cpu_before = operator.pid().map(cpu_seconds).unwrap_or(0.0);
    tokio::time::sleep(window).await;
    let after = gitlab.request_counts();
    if let Some(pid) = operator.pid() {
        let kube_after = kube.request_counts();
        let reconciles = operator.reconciles().await - reconciles_before;
        let cpu = cpu_seconds(pid) - cpu_before;
        println!(
            "steady state, operator process: Kubernetes requests per runner per resync: {:.2} ({:?}); reconciles: {reconciles:.0}; CPU per reconcile: {:.2} ms",
            total(&kube_after, &kube_before, |_| true) as f64
                / n as f64
                / (window.as_secs_f64() / resync.as_secs_f64()),
            kube_after
                .iter()
                .map(|(k, v)| (
                    k.split('?').next().unwrap_or(k).to_string(),
                    v - kube_before.get(k).copied().unwrap_or(0)
                ))
                .filter(|(_, v)| *v > 0)
                .fold(BTreeMap::<String, u64>::new(), |mut m, (k, v)| {
                    let kind = k
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .take(6)
                        .collect::<Vec<_>>()
                        .join("/");
                    *m.entry(kind).or_default() += v;
                    m
                }),
            if reconciles > 0.0 {
                cpu * 1000.0 / reconciles
            } else {
                0.0
            }
        );
    }
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
    if let Some(pid) = operator.pid() {
        println!(
            "peak RSS of the operator process: {:.0} MiB; CPU time: {:.1} s",
            peak_rss_of(&pid.to_string()),
            cpu_seconds(pid)
        );
        // Restart: SIGKILL, start again, and see how soon a new Runner gets its turn.
        operator.stop().await;
        let before = gitlab.request_counts();
        let kube_before = kube.request_counts();
        let restarted = Instant::now();
        operator = start_operator();
        let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "after-restart", "namespace": "ci"},
            "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["bench"]}}))
        .expect("runner");
        runners
            .create(&PostParams::default(), &r)
            .await
            .expect("create");
        let mut polls = 1u64;
        loop {
            polls += 1;
            let ready = runners
                .get("after-restart")
                .await
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let new_ready = restarted.elapsed();
        tokio::time::sleep(resync).await;
        let after = gitlab.request_counts();
        println!(
            "restart: a new Runner Ready {:.1} s after the operator started again; over the first {} s: GitLab requests per runner {:.2}, Kubernetes requests per runner {:.2}",
            new_ready.as_secs_f64(),
            (restarted.elapsed()).as_secs(),
            total(&after, &before, |_| true) as f64 / n as f64,
            total(&kube.request_counts(), &kube_before, |_| true).saturating_sub(polls) as f64
                / n as f64,
        );
    } else {
        println!(
            "peak RSS (operator + both emulators in one process): {:.0} MiB",
            peak_rss_mib()
        );
    }
    operator.stop().await;
    let _ = std::fs::remove_file(&kubeconfig);
}
