//! A local Kubernetes API server for the tests and the sandbox of runner-operator: plain HTTP on
//! 127.0.0.1, used through a generated kubeconfig by kube-rs and by the real kubectl.
//!
//! Modelled: discovery, built-in kinds (namespaces, Secrets, ConfigMaps, Events core and
//! events.k8s.io, Leases, ServiceAccounts, Deployments, StatefulSets, DaemonSets) and CRDs that
//! start serving their resources; get/list/watch/create/update/patch/delete with resourceVersion
//! semantics, selectors, watch resume, bookmarks and 410 Gone; optimistic concurrency; merge,
//! JSON and (as merge) strategic-merge patches; server-side apply with field managers and
//! conflicts; finalizers and deletionTimestamp; generation; the status subresource; owner
//! reference garbage collection; CR schema validation with pruning, defaults and CEL; Tables with
//! printer columns for kubectl; fault injection.

mod http;
mod openapi;
mod prune;
pub mod registry;
pub mod schema;
pub mod select;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use store::Store;

/// What an injected fault does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KubeFaultAction {
    /// Answer with a `kind: Status` of this code (409, 429, 500…).
    Status { code: u16, message: Option<String> },
    /// Wait, then serve normally.
    Delay { millis: u64 },
}

/// A fault on matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubeFault {
    /// HTTP method, or any.
    pub method: Option<String>,
    /// Substring of the request path.
    pub path_contains: String,
    /// How many matching requests.
    pub times: u32,
    pub action: KubeFaultAction,
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Vec<KubeFault>>,
    counts: Mutex<BTreeMap<String, u64>>,
    drop_watches: tokio::sync::watch::Sender<u64>,
    bookmark_interval: Duration,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_fault(&self, method: &axum::http::Method, path: &str) -> Option<KubeFaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let idx = faults.iter().position(|f| {
            f.times > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && path.contains(&f.path_contains)
        })?;
        faults[idx].times -= 1;
        let action = faults[idx].action.clone();
        faults.retain(|f| f.times > 0);
        Some(action)
    }

    fn count(&self, method: &axum::http::Method, path: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{method} {path}"))
            .or_insert(0) += 1;
    }
}

/// A running local API server. Dropping it stops it.
pub struct KubeApiServer {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KubeApiServer {
    /// Starts on 127.0.0.1 (random port), bookmarks every 5 s.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with("127.0.0.1:0", Duration::from_secs(5)).await
    }

    /// Starts on `addr` with a given bookmark interval.
    pub async fn start_with(addr: &str, bookmark_interval: Duration) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (drop_watches, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            faults: Mutex::new(vec![]),
            counts: Mutex::new(BTreeMap::new()),
            drop_watches,
            bookmark_interval,
            addr,
        });
        let app = http::router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(KubeApiServer {
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig pointing at this server (any token is accepted).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\nusers:\n- name: sandbox\n  user:\n    token: sandbox\n",
            self.url()
        )
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A kube client for this server.
    pub async fn client(&self) -> Result<kube::Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| e.to_string())?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }

    /// Test back door: creates a custom resource without validating it against its CRD's
    /// schema, as an object stored under an older or looser schema would be. A real API server
    /// has no such door; this is how the tests get an object that does not decode.
    pub fn create_unchecked(
        &self,
        group: &str,
        plural: &str,
        obj: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let mut st = self.shared.lock();
        let res = st
            .resource(group, plural)
            .ok_or_else(|| format!("no resource {plural}.{group}"))?;
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        st.unchecked = true;
        let created = st.create(&res, ns.as_deref(), obj, "test-back-door", false);
        st.unchecked = false;
        created.map_err(|s| s.body.to_string())
    }

    /// Injects a fault.
    pub fn inject(&self, fault: KubeFault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Ends every open watch stream (clients must resume).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Forgets the watch history: resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Requests by `METHOD path`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Field managers and their field paths for an object uid.
    pub fn field_managers(
        &self,
        uid: &str,
    ) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        self.shared.lock().managers(uid)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
