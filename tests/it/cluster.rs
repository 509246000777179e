//! The Kubernetes the tests run against: the in-memory API (fast, with fault injection) or a
//! real control plane (etcd, kube-apiserver, kube-controller-manager) started by
//! `tests/control-plane/up.sh` from binaries built by `tests/control-plane/build.sh`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_local::KubeApiServer;

/// Which Kubernetes a scenario runs against, and as whom the operator talks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `kube_local`, in this process; the operator is cluster admin.
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

    /// Free ports are picked before the processes bind them, so with tests starting control
    /// planes in parallel another process can take one in between: then start again.
    fn start_blocking(controllers: bool) -> ControlPlane {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(controllers) {
                Ok(cp) => return cp,
                Err(log) if attempt < 3 && log.contains("address already in use") => continue,
                Err(log) => panic!(
                    "the real control plane did not start (tests/control-plane/up.sh; build it with tests/control-plane/build.sh, which needs Go):\n{log}"
                ),
            }
        }
    }

    fn try_start(controllers: bool) -> Result<ControlPlane, String> {
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
            let _ = std::fs::remove_dir_all(&dir);
            return Err(log);
        };
        Ok(ControlPlane {
            child,
            dir,
            kubeconfig,
        })
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

/// A request in the audit-log form `verb group/resource[/subresource] namespace`, where group is
/// `core` for the core group and namespace `(cluster)` for cluster-wide requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
}

impl Request {
    pub fn parse(text: &str) -> Request {
        let parts: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "request {text:?}: verb group/resource ns");
        let mut path = parts[1].split('/');
        let group = path.next().expect("group");
        Request {
            verb: parts[0].into(),
            group: if group == "core" { "" } else { group }.into(),
            resource: path.next().expect("resource").into(),
            subresource: path.next().map(str::to_string),
            namespace: (parts[2] != "(cluster)").then(|| parts[2].to_string()),
        }
    }

    /// The resource as RBAC rules name it (`runners/status`).
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// A row of the RBAC table in the chart README (between `rbac:begin` and `rbac:end`).
#[derive(Debug, Clone)]
pub struct RbacRow {
    pub rule: String,
    /// Test path of the scenario that needs the rule; None when no scenario does yet.
    pub scenario: Option<String>,
    pub request: Request,
    /// The request as written (audit-log form).
    pub request_text: String,
    /// An authorization check inside the API server (admission), not a request of its own.
    pub admission: bool,
}

impl RbacRow {
    /// Checked with the chart in namespaced mode (`watchNamespaces`)?
    pub fn namespaced(&self) -> bool {
        self.scenario
            .as_deref()
            .is_some_and(|s| s.starts_with("operator::chart_namespaced::"))
    }
}

pub fn rbac_table() -> Vec<RbacRow> {
    let readme = std::fs::read_to_string(root().join("charts/runner-operator/README.md"))
        .expect("chart README");
    let start = readme
        .find("<!-- rbac:begin -->")
        .expect("rbac:begin marker");
    let end = readme.find("<!-- rbac:end -->").expect("rbac:end marker");
    let ticked = |cell: &str| cell.split('`').nth(1).map(str::to_string);
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "RBAC table row {line:?}");
            let request_text = ticked(cells[3]).expect("request in backticks");
            RbacRow {
                rule: cells[0].to_string(),
                scenario: cells[2]
                    .starts_with('`')
                    .then(|| ticked(cells[2]))
                    .flatten(),
                request: Request::parse(&request_text),
                request_text,
                admission: cells[3].contains("(admission)"),
            }
        })
        .collect()
}
