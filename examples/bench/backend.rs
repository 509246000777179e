//! The Kubernetes API the bench runs against: the local one in this process, or the real
//! control plane (`tests/control-plane/up.sh`: kube-apiserver and etcd as their own processes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_local::KubeApiServer;

use crate::{Counts, cpu_seconds};

pub enum Backend {
    Local {
        server: KubeApiServer,
        kubeconfig: PathBuf,
    },
    Real(ControlPlane),
}

impl Backend {
    pub async fn start(kind: &str) -> Backend {
        match kind {
            "local" => {
                let server = KubeApiServer::start_with("127.0.0.1:0", Duration::from_secs(30))
                    .await
                    .expect("the local API starts");
                let kubeconfig =
                    std::env::temp_dir().join(format!("bench-{}.kubeconfig", std::process::id()));
                server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
                Backend::Local { server, kubeconfig }
            }
            "real" => Backend::Real(
                tokio::task::spawn_blocking(ControlPlane::start)
                    .await
                    .expect("joined"),
            ),
            other => panic!("--backend {other}: use local or real"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local { .. } => "local",
            Backend::Real(_) => "real",
        }
    }

    /// A client for the bench's own requests.
    pub async fn client(&self) -> Client {
        match self {
            Backend::Local { server, .. } => server.client().await.expect("client"),
            Backend::Real(cp) => {
                let kc = Kubeconfig::read_from(cp.dir.join("kubeconfig")).expect("kubeconfig");
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                        .await
                        .expect("config");
                Client::try_from(config).expect("client")
            }
        }
    }

    /// The operator's kubeconfig (on the real control plane a user of its own).
    pub fn operator_kubeconfig(&self) -> PathBuf {
        match self {
            Backend::Local { kubeconfig, .. } => kubeconfig.clone(),
            Backend::Real(cp) => cp.dir.join("operator.kubeconfig"),
        }
    }

    /// Requests by `METHOD path`: the operator's alone on the real control plane (from the
    /// audit log), everyone's on the local API (the caller subtracts its own).
    pub fn request_counts(&self) -> Counts {
        match self {
            Backend::Local { server, .. } => server.request_counts(),
            Backend::Real(cp) => cp.operator_requests(),
        }
    }

    /// The bench's own requests, to subtract from `request_counts`.
    pub fn own(&self, requests: u64) -> u64 {
        match self {
            Backend::Local { .. } => requests,
            Backend::Real(_) => 0,
        }
    }

    /// CPU seconds of the API side so far: kube-apiserver and etcd, or the bench process (the
    /// local API shares it with the GitLab emulator and the bench's own client).
    pub fn cpu(&self) -> BTreeMap<&'static str, f64> {
        match self {
            Backend::Local { .. } => BTreeMap::from([("bench", cpu_seconds(std::process::id()))]),
            Backend::Real(cp) => BTreeMap::from([
                ("kube-apiserver", cpu_seconds(cp.apiserver)),
                ("etcd", cpu_seconds(cp.etcd)),
                ("bench", cpu_seconds(std::process::id())),
            ]),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Local { kubeconfig, .. } = self {
            let _ = std::fs::remove_file(kubeconfig);
        }
    }
}

/// `tests/control-plane/up.sh` running (no controller manager: the bench needs none).
pub struct ControlPlane {
    child: Child,
    dir: PathBuf,
    apiserver: u32,
    etcd: u32,
    /// How far the audit log has been read, and the operator's requests in it so far.
    audit: Mutex<(u64, Counts)>,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("bench-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("control-plane dir");
        let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control-plane/up.sh");
        let mut child = Command::new("bash")
            .arg(up)
            .arg("--dir")
            .arg(&dir)
            .arg("--no-controller-manager")
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("up.log")).expect("up.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("bash runs tests/control-plane/up.sh");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("ready "));
        assert!(
            ready,
            "the real control plane did not start (tests/control-plane/build.sh needs Go); see {}",
            dir.join("up.log").display()
        );
        let pids = std::fs::read_to_string(dir.join("pids")).expect("pids");
        let pid = |name: &str| {
            pids.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .expect("a pid in DIR/pids")
        };
        ControlPlane {
            apiserver: pid("kube-apiserver "),
            etcd: pid("etcd "),
            child,
            dir,
            audit: Mutex::new((0, Counts::new())),
        }
    }

    /// The operator's requests so far, from the audit log: each request once (watches when
    /// they start, everything else when answered).
    fn operator_requests(&self) -> Counts {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(mut file) = std::fs::File::open(self.dir.join("audit.log")) else {
            return audit.1.clone();
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(audit.0)).is_err() || file.read_to_string(&mut text).is_err() {
            return audit.1.clone();
        }
        // Only whole lines: the last may still be being written.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..whole].lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["user"]["username"] != "runner-operator" {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default();
            let stage = event["stage"].as_str().unwrap_or_default();
            let counted = if verb == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if stage != counted {
                continue;
            }
            let method = match verb {
                "get" | "list" | "watch" => "GET",
                "create" => "POST",
                "update" => "PUT",
                "patch" => "PATCH",
                "delete" | "deletecollection" => "DELETE",
                other => other,
            };
            let uri = event["requestURI"].as_str().unwrap_or_default();
            let path = uri.split('?').next().unwrap_or_default();
            *audit.1.entry(format!("{method} {path}")).or_default() += 1;
        }
        audit.0 += whole as u64;
        audit.1.clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // SIGTERM lets up.sh stop etcd and kube-apiserver.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
