//! Scale benchmark: the operator binary, as its own process, against the GitLab emulator (a
//! fixed latency per call, in this process) and a Kubernetes API: the local one in this process
//! (`--backend local`, the default) or the real control plane (`--backend real`:
//! kube-apiserver and etcd from `tests/control-plane/`, started for the run).
//!
//! ```text
//! cargo build --release --example bench
//! cargo build --release --no-default-features --bin runner-operator   # the production build
//! target/release/examples/bench --runners 1000 --json a.json
//! target/release/examples/bench --backend real --runners 1000 --json b.json
//! target/release/examples/bench --render a.json b.json     # the table in docs/benchmarks.md
//! ```
//! `scripts/bench.sh` runs both sizes and rewrites the table. Phases: create N Runners (time to
//! all Ready against the rate-limit bound, GitLab and Kubernetes requests per Runner); steady
//! state; runner processes contacting GitLab (`--live-resyncs`); a rotation request on every
//! Runner at once; SIGKILL and start again with a new Runner applied at once. RSS and CPU are
//! the operator process's own (`/proc`), reconciles come from its `/metrics`, Kubernetes
//! requests are the local API's counts minus the bench's own, or on the real control plane the
//! audit log's requests by the operator's user. The API side's CPU (kube-apiserver and etcd, or
//! the bench process that holds the local API) is shown beside the operator's.

mod backend;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gitlab_emulator::{Fault, FaultAction, GitLabEmulator, default_seed};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use runner_operator::crd::{GitLabConnection, Runner};
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// VmHWM of a process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
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
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
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

/// The operator binary, running.
struct Operator {
    child: std::process::Child,
    metrics: String,
}

impl Operator {
    fn spawn(bin: &str, kubeconfig: &std::path::Path, resync: Duration, concurrency: u64) -> Self {
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
            .expect("the operator binary starts (build it with cargo build --release)");
        Operator {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    /// The sum of a counter family on the operator's /metrics.
    async fn counter(&self, family: &str) -> f64 {
        let Ok(resp) = reqwest::get(&self.metrics).await else {
            return 0.0;
        };
        resp.text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds, reconciles, and reconciles that checked GitLab, so far.
    async fn work(&self) -> (f64, f64, f64) {
        let reconciles = self.counter("runner_operator_reconciles_total").await;
        let skipped = self.counter("runner_operator_passes_skipped_total").await;
        (cpu_seconds(self.pid()), reconciles, reconciles - skipped)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) type Counts = BTreeMap<String, u64>;

fn delta(after: &Counts, before: &Counts, pred: impl Fn(&str) -> bool) -> u64 {
    after
        .iter()
        .filter(|(k, _)| pred(k))
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
        .sum()
}

fn by_endpoint(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Kubernetes requests grouped as "METHOD kind" (the last plural in the path).
fn kube_by_kind(after: &Counts, before: &Counts) -> Counts {
    let mut out = Counts::new();
    for (k, v) in by_endpoint(after, before) {
        let (method, path) = k.split_once(' ').unwrap_or(("?", &k));
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let kind = KINDS
            .iter()
            .find(|p| segs.contains(p))
            .copied()
            .unwrap_or("other");
        let sub = if segs.last() == Some(&"status") {
            "/status"
        } else {
            ""
        };
        *out.entry(format!("{method} {kind}{sub}")).or_default() += v;
    }
    out
}

/// The plurals the operator reads and writes.
const KINDS: [&str; 8] = [
    "runners",
    "secrets",
    "events",
    "gitlabconnections",
    "clustergitlabconnections",
    "leases",
    "deployments",
    "namespaces",
];

/// A GET of one object (a path that goes on after the plural), not a list or a watch.
fn is_object_read(key: &str) -> bool {
    let Some(path) = key.strip_prefix("GET ") else {
        return false;
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [.., plural, _name] => KINDS.contains(plural) && *plural != "namespaces",
        _ => false,
    }
}

fn cpu_delta(after: &BTreeMap<&str, f64>, before: &BTreeMap<&str, f64>) -> Value {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(v - before.get(k).copied().unwrap_or(0.0)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Bytes of each Runner's status and of the whole object as JSON (what etcd holds for a
/// custom resource, managedFields included): mean and largest.
async fn object_sizes(runners: &Api<Runner>) -> Value {
    let list = runners.list(&ListParams::default()).await.expect("list");
    let mut status = Vec::new();
    let mut object = Vec::new();
    for r in &list.items {
        status.push(serde_json::to_vec(&r.status).map_or(0, |v| v.len()));
        object.push(serde_json::to_vec(r).map_or(0, |v| v.len()));
    }
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    json!({
        "status_bytes_mean": mean(&status), "status_bytes_max": status.iter().max(),
        "object_bytes_mean": mean(&object), "object_bytes_max": object.iter().max(),
    })
}

fn is_ready(r: &Runner) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--render") {
        let files: Vec<String> = std::env::args().skip(i + 1).collect();
        print!("{}", render(&files));
        return;
    }
    let n = num("--runners", 1000);
    let latency = num("--latency-ms", 20);
    let concurrency = num("--concurrency", 32);
    // 0: the connection's default rate limit (10 requests/s, burst 20).
    let rps = num("--rps", 0);
    let resync = Duration::from_secs(num("--resync-s", 60));
    let live_resyncs = num("--live-resyncs", 3);
    let bin = arg("--operator-bin").unwrap_or_else(|| "target/release/runner-operator".into());
    runner_operator::tls::install_crypto_provider();
    let gitlab = GitLabEmulator::start(&default_seed())
        .await
        .expect("gitlab");
    gitlab.inject(Fault {
        endpoint: None,
        path_contains: Some("/api/v4/".into()),
        writes_only: false,
        skip: 0,
        times: u32::MAX,
        action: FaultAction::Delay { millis: latency },
    });
    let kube = backend::Backend::start(&arg("--backend").unwrap_or_else(|| "local".into())).await;
    let client = kube.client().await;
    let api_cpu0 = kube.cpu();
    runner_operator::sandbox::bootstrap(&client, &gitlab.url())
        .await
        .expect("bootstrap");
    let effective_rps = if rps > 0 {
        Api::<GitLabConnection>::namespaced(client.clone(), "ci")
            .patch(
                "gitlab",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"rateLimit": {"requestsPerSecond": rps, "burst": rps}}}),
                ),
            )
            .await
            .expect("rate limit");
        rps
    } else {
        10
    };
    let kubeconfig = kube.operator_kubeconfig();
    let mut out = json!({
        "backend": kube.name(), "runners": n, "latency_ms": latency, "concurrency": concurrency, "rps": effective_rps,
        "default_rate_limit": rps == 0, "resync_s": resync.as_secs(),
    });
    let mut operator = Operator::spawn(&bin, &kubeconfig, resync, concurrency);
    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");

    // 1. Create N Runners; wait until every one is Ready.
    let mut own = 0u64;
    let (k0, g0, c0) = (kube.request_counts(), gitlab.request_counts(), kube.cpu());
    let start = Instant::now();
    for i in 0..n {
        let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": format!("r{i}"), "namespace": "ci"},
            "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["bench"], "description": format!("bench {i}")}}))
        .expect("runner");
        runners
            .create(&PostParams::default(), &r)
            .await
            .expect("create");
        own += 1;
    }
    own += wait_all(&runners, n, is_ready).await;
    let took = start.elapsed().as_secs_f64();
    let (k1, g1, c1) = (kube.request_counts(), gitlab.request_counts(), kube.cpu());
    let bound = 2.0 * n as f64 / effective_rps as f64;
    out["create"] = json!({
        "seconds": took, "bound_seconds": bound,
        "gitlab_per_runner": delta(&g1, &g0, |_| true) as f64 / n as f64,
        "gitlab_by_endpoint": by_endpoint(&g1, &g0),
        "kube_per_runner": delta(&k1, &k0, |_| true).saturating_sub(kube.own(own)) as f64 / n as f64,
        "kube_by_kind": kube_by_kind(&k1, &k0),
        "bench_own_kube_requests": own,
        "operator_cpu_seconds": cpu_seconds(operator.pid()),
        "api_cpu_seconds": cpu_delta(&c1, &c0),
    });
    eprintln!("create: {}", out["create"]);

    // 2. Steady state: 2.2 resync periods with nothing changing.
    let resyncs = 2.2;
    let (g0, k0, w0) = (
        gitlab.request_counts(),
        kube.request_counts(),
        operator.work().await,
    );
    tokio::time::sleep(resync.mul_f64(resyncs)).await;
    let (g1, k1, w1) = (
        gitlab.request_counts(),
        kube.request_counts(),
        operator.work().await,
    );
    let per = |x: u64| x as f64 / n as f64 / resyncs;
    out["steady"] = json!({
        "gitlab_gets_per_runner_per_resync": per(delta(&g1, &g0, |k| k == "GET /runners/:id")),
        "gitlab_per_runner_per_resync": per(delta(&g1, &g0, |_| true)),
        "gitlab_writes": delta(&g1, &g0, |k| !k.starts_with("GET ")),
        "gitlab_by_endpoint": by_endpoint(&g1, &g0),
        "kube_per_runner_per_resync": per(delta(&k1, &k0, |_| true)),
        "kube_by_kind": kube_by_kind(&k1, &k0),
        "reconciles": w1.1 - w0.1, "checks": w1.2 - w0.2,
        "cpu_ms_per_reconcile": (w1.0 - w0.0) * 1000.0 / (w1.1 - w0.1).max(1.0),
        "cpu_ms_per_check": (w1.0 - w0.0) * 1000.0 / (w1.2 - w0.2).max(1.0),
    });
    eprintln!("steady: {}", out["steady"]);

    // 3. Runner processes contact GitLab (GitLab's status turns online, managers appear).
    if live_resyncs > 0 {
        for r in gitlab.runners() {
            gitlab.add_manager(
                r.id,
                &format!("s_{}", r.id),
                "18.6.0",
                "linux",
                "amd64",
                Duration::ZERO,
            );
        }
        let (g0, k0) = (gitlab.request_counts(), kube.request_counts());
        tokio::time::sleep(resync * 2).await;
        let (g1, k1) = (gitlab.request_counts(), kube.request_counts());
        tokio::time::sleep(resync * live_resyncs as u32).await;
        let (g2, k2) = (gitlab.request_counts(), kube.request_counts());
        let per = |x: u64| x as f64 / n as f64 / live_resyncs as f64;
        let list = runners.list(&ListParams::default()).await.expect("list");
        let shown = list
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
        out["live"] = json!({
            "transition_gitlab_per_runner": delta(&g1, &g0, |_| true) as f64 / n as f64,
            "transition_kube_per_runner": delta(&k1, &k0, |_| true) as f64 / n as f64,
            "resyncs": live_resyncs,
            "gitlab_per_runner_per_resync": per(delta(&g2, &g1, |_| true)),
            "gitlab_by_endpoint": by_endpoint(&g2, &g1),
            "kube_per_runner_per_resync": per(delta(&k2, &k1, |_| true)),
            "writes": delta(&g2, &g1, |k| !k.starts_with("GET ")) + delta(&k2, &k1, |k| !k.starts_with("GET ")),
            "runners_showing_their_manager": shown,
        });
        eprintln!("live: {}", out["live"]);
    }

    // 4. A rotation request on every Runner at once.
    let (g0, k0) = (gitlab.request_counts(), kube.request_counts());
    let mut own = 0u64;
    let start = Instant::now();
    for i in 0..n {
        runners
            .patch(
                &format!("r{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "bench"}}})),
            )
            .await
            .expect("annotate");
        own += 1;
    }
    own += wait_all(&runners, n, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.handled_rotate_request.as_deref())
            == Some("bench")
            && is_ready(r)
    })
    .await;
    let (g1, k1) = (gitlab.request_counts(), kube.request_counts());
    out["rotate"] = json!({
        "seconds": start.elapsed().as_secs_f64(),
        "gitlab_per_runner": delta(&g1, &g0, |_| true) as f64 / n as f64,
        "gitlab_by_endpoint": by_endpoint(&g1, &g0),
        "kube_per_runner": delta(&k1, &k0, |_| true).saturating_sub(kube.own(own)) as f64 / n as f64,
    });
    eprintln!("rotate: {}", out["rotate"]);
    let (cpu, reconciles, checks) = operator.work().await;
    out["process"] = json!({
        "peak_rss_mib": peak_rss_mib(operator.pid()),
        "cpu_seconds": cpu, "reconciles": reconciles, "checks": checks,
        "api_cpu_seconds": cpu_delta(&kube.cpu(), &api_cpu0),
    });
    out["size"] = object_sizes(&runners).await;
    eprintln!("size: {}", out["size"]);

    // 5. SIGKILL, start again, apply a new Runner at once.
    operator.kill();
    let (g0, k0) = (gitlab.request_counts(), kube.request_counts());
    let restarted = Instant::now();
    operator = Operator::spawn(&bin, &kubeconfig, resync, concurrency);
    let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "after-restart", "namespace": "ci"},
        "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["bench"]}}))
    .expect("runner");
    runners
        .create(&PostParams::default(), &r)
        .await
        .expect("create");
    let mut own = 1u64;
    loop {
        own += 1;
        if runners
            .get("after-restart")
            .await
            .ok()
            .is_some_and(|r| is_ready(&r))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_ready = restarted.elapsed().as_secs_f64();
    tokio::time::sleep(resync.saturating_sub(restarted.elapsed())).await;
    let (g1, k1) = (gitlab.request_counts(), kube.request_counts());
    out["restart"] = json!({
        "new_runner_ready_seconds": new_ready,
        "first_resync_gitlab_per_runner": delta(&g1, &g0, |_| true) as f64 / n as f64,
        "first_resync_kube_per_runner": delta(&k1, &k0, |_| true).saturating_sub(kube.own(own)) as f64 / n as f64,
        // GETs of one object (not lists or watches), the bench's polls of its new Runner aside.
        "first_resync_kube_reads_per_runner": delta(&k1, &k0, |k| is_object_read(k) && !k.ends_with("/after-restart")) as f64 / n as f64,
        "gitlab_by_endpoint": by_endpoint(&g1, &g0),
        "kube_by_kind": kube_by_kind(&k1, &k0),
        "kube_reads": by_endpoint(&k1, &k0).into_iter().filter(|(k, _)| is_object_read(k)).collect::<Counts>(),
        "peak_rss_mib": peak_rss_mib(operator.pid()),
    });
    eprintln!("restart: {}", out["restart"]);
    operator.kill();
    let text = serde_json::to_string_pretty(&out).expect("json");
    match arg("--json") {
        Some(path) => std::fs::write(&path, text).expect("write the results"),
        None => println!("{text}"),
    }
}

/// Polls the Runners until `n` satisfy `done`; returns how many requests that took. Listing
/// every Runner is not free for the local API either: less often the more there are.
async fn wait_all(runners: &Api<Runner>, n: u64, done: impl Fn(&Runner) -> bool) -> u64 {
    let every = Duration::from_millis(500 * (n / 1000).max(1));
    let mut polls = 0;
    loop {
        polls += 1;
        let list = runners.list(&ListParams::default()).await.expect("list");
        if list.items.iter().filter(|r| done(r)).count() as u64 >= n {
            return polls;
        }
        tokio::time::sleep(every).await;
    }
}

/// The goal table of issue 15, one column per results file.
fn render(files: &[String]) -> String {
    let runs: Vec<Value> = files
        .iter()
        .map(|f| {
            serde_json::from_str(&std::fs::read_to_string(f).expect("results file")).expect("json")
        })
        .collect();
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut s = String::from("| measure | goal |");
    for r in &runs {
        s += &format!(
            " {} API, N = {}, {} req/s{} |",
            r["backend"].as_str().unwrap_or("local"),
            f(r, "/runners"),
            f(r, "/rps"),
            if r["default_rate_limit"] == true {
                " (default)"
            } else {
                ""
            }
        );
    }
    s += "\n|---|---|";
    s += &"---|".repeat(runs.len());
    s += "\n";
    type Cell = Box<dyn Fn(&Value) -> String>;
    let rows: Vec<(&str, &str, Cell)> = vec![
        (
            "GitLab requests per Runner created",
            "≤ 2.0",
            Box::new(move |r| format!("{:.2}", f(r, "/create/gitlab_per_runner"))),
        ),
        (
            "time to all Ready (bound: 2.0 × N ÷ rate limit)",
            "≤ 1.1 × bound",
            Box::new(move |r| {
                format!(
                    "{:.1} s (bound {:.0} s: {:.2} ×)",
                    f(r, "/create/seconds"),
                    f(r, "/create/bound_seconds"),
                    f(r, "/create/seconds") / f(r, "/create/bound_seconds")
                )
            }),
        ),
        (
            "Kubernetes requests per Runner created",
            "≤ 5",
            Box::new(move |r| format!("{:.2}", f(r, "/create/kube_per_runner"))),
        ),
        (
            "steady state, per Runner per resync: GitLab / Kubernetes requests",
            "1 GET / 0",
            Box::new(move |r| {
                format!(
                    "{:.2} / {:.3}",
                    f(r, "/steady/gitlab_per_runner_per_resync"),
                    f(r, "/steady/kube_per_runner_per_resync")
                )
            }),
        ),
        (
            "steady state with runners contacting GitLab: GitLab requests per Runner per resync; writes",
            "1 GET, 0 writes",
            Box::new(move |r| {
                if r.get("live").is_some() {
                    format!(
                        "{:.2}; {} writes",
                        f(r, "/live/gitlab_per_runner_per_resync"),
                        f(r, "/live/writes")
                    )
                } else {
                    "not run".into()
                }
            }),
        ),
        (
            "a rotation request on every Runner: GitLab requests per Runner",
            "≤ 1.5",
            Box::new(move |r| {
                format!(
                    "{:.2} ({:.1} s)",
                    f(r, "/rotate/gitlab_per_runner"),
                    f(r, "/rotate/seconds")
                )
            }),
        ),
        (
            "CPU while creating: the operator / the API side",
            "",
            Box::new(move |r| {
                let api = r["create"]["api_cpu_seconds"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k} {:.0} s", v.as_f64().unwrap_or(f64::NAN)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "not measured".into());
                format!("{:.0} s / {api}", f(r, "/create/operator_cpu_seconds"))
            }),
        ),
        (
            "peak RSS of the operator process: creating, steady, rotating / after a restart",
            "< 64 MiB at 10,000",
            Box::new(move |r| {
                format!(
                    "{:.0} / {:.0} MiB",
                    f(r, "/process/peak_rss_mib"),
                    f(r, "/restart/peak_rss_mib")
                )
            }),
        ),
        (
            "a Runner in etcd: status / whole object (JSON, managedFields included), mean (largest)",
            "status ≤ 2 KiB",
            Box::new(move |r| {
                format!(
                    "{:.0} ({:.0}) B / {:.0} ({:.0}) B",
                    f(r, "/size/status_bytes_mean"),
                    f(r, "/size/status_bytes_max"),
                    f(r, "/size/object_bytes_mean"),
                    f(r, "/size/object_bytes_max")
                )
            }),
        ),
        (
            "CPU per reconcile / per GitLab check (steady state)",
            "≤ 1 ms",
            Box::new(move |r| {
                format!(
                    "{:.2} / {:.2} ms",
                    f(r, "/steady/cpu_ms_per_reconcile"),
                    f(r, "/steady/cpu_ms_per_check")
                )
            }),
        ),
        (
            "CPU over the whole run, per GitLab check",
            "",
            Box::new(move |r| {
                format!(
                    "{:.2} ms ({:.0} s for {:.0} checks)",
                    f(r, "/process/cpu_seconds") * 1000.0 / f(r, "/process/checks"),
                    f(r, "/process/cpu_seconds"),
                    f(r, "/process/checks")
                )
            }),
        ),
        (
            "restart: a new Runner Ready after",
            "< 5 s",
            Box::new(move |r| format!("{:.1} s", f(r, "/restart/new_runner_ready_seconds"))),
        ),
        (
            "restart, first resync period: GitLab / Kubernetes requests per Runner",
            "",
            Box::new(move |r| {
                format!(
                    "{:.2} / {:.2}",
                    f(r, "/restart/first_resync_gitlab_per_runner"),
                    f(r, "/restart/first_resync_kube_per_runner")
                )
            }),
        ),
        (
            "restart, first resync period: Kubernetes reads (GETs of one object) per Runner",
            "0",
            Box::new(move |r| {
                format!("{:.3}", f(r, "/restart/first_resync_kube_reads_per_runner"))
            }),
        ),
    ];
    for (what, goal, cell) in rows {
        s += &format!("| {what} | {goal} |");
        for r in &runs {
            s += &format!(" {} |", cell(r));
        }
        s += "\n";
    }
    s
}
