//! The Kubernetes the tests run against: the in-memory API (fast, with fault injection) or a
//! real control plane (etcd, kube-apiserver, kube-controller-manager) started by
//! `tests/control-plane/up.sh` from binaries built by `tests/control-plane/build.sh`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use runner_operator::kubeapi::KubeApiServer;

/// Which Kubernetes a scenario runs against, and as whom the operator talks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `runner_operator::kubeapi`, in this process; the operator is cluster admin.
    Local,
    /// The real control plane, one per scenario (no state shared between tests); the operator
    /// is cluster admin.
    Real,
    /// The real control plane with the Helm chart installed; the operator runs as the chart's
    /// ServiceAccount (a TokenRequest token), so RBAC decides. `namespaced`: the chart's
    /// `watchNamespaces: [ci]` mode.
    Chart { namespaced: bool },
}

// Tests that need the real control plane (or Go) are `#[ignore = "…"]`d with the reason, so a
// plain `cargo test` reports them as ignored; `tests/control-plane/e2e.sh` and CI run them with
// `--include-ignored` (ignore reasons must be literals, hence no shared constant).

pub enum Cluster {
    Local(KubeApiServer),
    Real(ControlPlane),
}

impl Cluster {
    pub async fn start(backend: Backend) -> Cluster {
        match backend {
            Backend::Local => Cluster::Local(
                KubeApiServer::start_with("127.0.0.1:0", Duration::from_millis(500))
                    .await
                    .expect("local kube api"),
            ),
            Backend::Real | Backend::Chart { .. } => Cluster::Real(ControlPlane::start(true).await),
        }
    }

    pub async fn client(&self) -> Client {
        match self {
            Cluster::Local(k) => k.client().await.expect("local client"),
            Cluster::Real(cp) => cp.client().await,
        }
    }

    pub fn write_kubeconfig(&self, path: &Path) {
        match self {
            Cluster::Local(k) => k.write_kubeconfig(path).expect("kubeconfig written"),
            Cluster::Real(cp) => {
                std::fs::copy(&cp.kubeconfig, path).expect("kubeconfig copied");
            }
        }
    }

    /// The in-memory API, for what only it offers (fault injection, a global resourceVersion).
    pub fn local(&self) -> Option<&KubeApiServer> {
        match self {
            Cluster::Local(k) => Some(k),
            Cluster::Real(_) => None,
        }
    }

    pub fn real(&self) -> Option<&ControlPlane> {
        match self {
            Cluster::Local(_) => None,
            Cluster::Real(cp) => Some(cp),
        }
    }
}

pub fn helm() -> PathBuf {
    let helm = root().join(".tools/bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: run .ci/install-tools",
        helm.display()
    );
    helm
}

/// The chart's release as the tests install it.
pub const RELEASE: &str = "runner-operator";
pub const RELEASE_NAMESPACE: &str = "runner-operator";

impl ControlPlane {
    /// `helm install`s the chart (CRDs included; leader election on; `watchNamespaces: [ci]`
    /// when `namespaced`) and returns a client that authenticates as the chart's
    /// ServiceAccount with a token from the TokenRequest API.
    pub async fn install_chart(&self, namespaced: bool) -> Client {
        {
            // The chart's Roles go into the watched namespaces and the consumer-restart
            // namespace, which must exist first.
            let ns: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "ci"}}))
                    .expect("namespace");
            kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client().await)
                .create(&Default::default(), &ns)
                .await
                .expect("namespace ci");
        }
        let mut cmd = Command::new(helm());
        cmd.current_dir(root())
            .args(["install", RELEASE, "charts/runner-operator"])
            .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
            .args(["--set", "leaderElection.enabled=true"])
            .args(["--set", "consumerRestarts.namespaces={ci}"])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        if namespaced {
            cmd.args(["--set", "watchNamespaces={ci}"]);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("joined")
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm install failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = self.client().await;
        let sa: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(admin, RELEASE_NAMESPACE);
        let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(
            serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 7200}}),
        )
        .expect("token request");
        let token = sa
            .create_token_request(RELEASE, &Default::default(), &request)
            .await
            .expect("TokenRequest for the chart's ServiceAccount")
            .status
            .expect("token issued")
            .token;
        let admin_config = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let config: String = admin_config
            .lines()
            .map(|l| match l.trim().strip_prefix("token: ") {
                Some(_) => format!("    token: {token}"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.dir.join("operator.kubeconfig");
        std::fs::write(&path, config).expect("operator kubeconfig");
        client_from(&path).await
    }

    /// What the chart's ServiceAccount did, from the audit log: the requests it made
    /// (`verb group/resource[/subresource] namespace`) and the ones RBAC refused.
    pub fn service_account_requests(&self) -> (std::collections::BTreeSet<String>, Vec<String>) {
        let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}");
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut used = std::collections::BTreeSet::new();
        let mut denied = vec![];
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if e["user"]["username"] != user.as_str() {
                continue;
            }
            let o = &e["objectRef"];
            let what = if o.is_object() {
                let group = o["apiGroup"].as_str().unwrap_or("core");
                let mut resource = format!("{group}/{}", o["resource"].as_str().unwrap_or(""));
                if let Some(sub) = o["subresource"].as_str() {
                    resource = format!("{resource}/{sub}");
                }
                format!(
                    "{} {resource} {}",
                    e["verb"].as_str().unwrap_or(""),
                    o["namespace"].as_str().unwrap_or("(cluster)")
                )
            } else {
                format!(
                    "{} {}",
                    e["verb"].as_str().unwrap_or(""),
                    e["requestURI"].as_str().unwrap_or("")
                )
            };
            if e["responseStatus"]["code"].as_i64() == Some(403) {
                denied.push(what.clone());
            }
            used.insert(what);
        }
        (used, denied)
    }
}

async fn client_from(path: &Path) -> Client {
    runner_operator::tls::install_crypto_provider();
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// A running real control plane; stopped (and its directory removed) on drop.
pub struct ControlPlane {
    child: Child,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, and kube-controller-manager when `controllers`.
    pub async fn start(controllers: bool) -> ControlPlane {
        tokio::task::spawn_blocking(move || Self::start_blocking(controllers))
            .await
            .expect("joined")
    }

    fn start_blocking(controllers: bool) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!(
            "runner-operator-cp-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("tests/control-plane/up.sh"))
            .arg("--dir")
            .arg(&dir)
            .arg("--watch-pid")
            .arg(std::process::id().to_string());
        if !controllers {
            cmd.arg("--no-controller-manager");
        }
        // stderr to a file: a daemon holding the test binary's pipes would keep CI waiting.
        std::fs::create_dir_all(&dir).expect("control-plane dir");
        let err = std::fs::File::create(dir.join("up.log")).expect("up.log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .expect("bash runs tests/control-plane/up.sh");
        let stdout = child.stdout.take().expect("stdout");
        let mut kubeconfig = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(path) = line.strip_prefix("ready ") {
                kubeconfig = Some(PathBuf::from(path));
                break;
            }
        }
        let Some(kubeconfig) = kubeconfig else {
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
            panic!(
                "the real control plane did not start (tests/control-plane/up.sh; build it with tests/control-plane/build.sh, which needs Go):\n{log}"
            );
        };
        ControlPlane {
            child,
            dir,
            kubeconfig,
        }
    }

    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // SIGTERM lets up.sh stop its children; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The operator binary (`runner-operator run`) as its own process, logging to a file; killed
/// on drop. The fault suite and the leader-election test SIGKILL it.
pub struct OperatorProcess {
    child: Child,
    /// Port of its /livez, /readyz and /metrics.
    pub port: u16,
}

impl OperatorProcess {
    /// Starts it against `kubeconfig` with `args` after `run`, appending its output to `log`.
    pub fn spawn(kubeconfig: &Path, log: &Path, args: &[&str]) -> OperatorProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_runner-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--listen-address", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "runner_operator=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("the operator binary runs");
        OperatorProcess { child, port }
    }

    /// SIGKILL: no drain, no cleanup, answers in flight lost.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether /readyz answers 200 (with leader election: whether it leads).
    pub async fn ready(&self) -> bool {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
