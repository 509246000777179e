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

/// Which Kubernetes a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `runner_operator::kubeapi`, in this process.
    Local,
    /// The real control plane, one per scenario (no state shared between tests).
    Real,
}

/// Why the real-backend tests are `#[ignore]`d by default; `tests/control-plane/e2e.sh` and CI
/// run them with `--include-ignored`.
pub const REAL: &str = "real control plane: run tests/control-plane/e2e.sh (builds it once; needs Go), or cargo test -- --include-ignored";

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
            Backend::Real => Cluster::Real(ControlPlane::start(true).await),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Cluster::Local(_) => Backend::Local,
            Cluster::Real(_) => Backend::Real,
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
        runner_operator::tls::install_crypto_provider();
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        Client::try_from(config).expect("client")
    }

    /// The URL of the API server.
    pub fn url(&self) -> String {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap_or_default();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap_or_default()
            .to_string()
    }

    /// The API server's CA certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
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
