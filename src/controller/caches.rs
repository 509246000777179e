//! The controllers' caches, for reads that would otherwise be a request per Runner per pass:
//! Runners, connections and the metadata of token Secrets, as the watches fill them. Commands
//! that run no controller (`plan`, `import`) have none and read live.

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::crd::{ClusterGitLabConnection, GitLabConnection, Runner};

/// The caches of one watched scope (all namespaces, or one).
#[derive(Clone)]
pub struct Scope {
    pub namespace: Option<String>,
    pub runners: Store<DeserializeGuard<Runner>>,
    pub connections: Store<GitLabConnection>,
    /// Token Secrets the operator manages (by label), metadata only.
    pub token_secrets: Store<PartialObjectMeta<Secret>>,
}

impl Scope {
    fn covers(&self, ns: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == ns)
    }
}

#[derive(Default)]
pub struct Caches {
    scopes: Mutex<Vec<Scope>>,
    cluster_connections: OnceLock<Store<ClusterGitLabConnection>>,
}

/// What a cache says about one object: there is no cache, or the object as cached (None: the
/// cache holds no such object).
pub enum Cached<T> {
    NoCache,
    Found(Option<Arc<T>>),
}

impl Caches {
    /// Whether the controllers' caches for `ns` exist but have not listed everything yet (just
    /// after a start): a pass then had better wait a moment than read live.
    pub fn listing(&self, ns: &str) -> bool {
        self.scope(ns).is_some_and(|s| {
            !ready(&s.connections) || !ready(&s.token_secrets) || !ready(&s.runners)
        }) || self.cluster_connections.get().is_some_and(|c| !ready(c))
    }

    pub fn add_scope(&self, scope: Scope) {
        self.scopes.lock().push(scope);
    }

    pub fn set_cluster_connections(&self, store: Store<ClusterGitLabConnection>) {
        let _ = self.cluster_connections.set(store);
    }

    fn scope(&self, ns: &str) -> Option<Scope> {
        self.scopes.lock().iter().find(|s| s.covers(ns)).cloned()
    }

    /// Every cached Runner (all scopes).
    pub fn runners(&self) -> Vec<Arc<DeserializeGuard<Runner>>> {
        self.scopes
            .lock()
            .iter()
            .flat_map(|s| s.runners.state())
            .collect()
    }

    /// A connection from the store the connection controller's watch fills, once that store
    /// has listed everything (a miss before that proves nothing).
    pub fn connection(&self, ns: &str, name: &str) -> Cached<GitLabConnection> {
        let Some(s) = self.scope(ns) else {
            return Cached::NoCache;
        };
        if !ready(&s.connections) {
            return Cached::NoCache;
        }
        Cached::Found(s.connections.get(&ObjectRef::new(name).within(ns)))
    }

    pub fn cluster_connection(&self, name: &str) -> Cached<ClusterGitLabConnection> {
        let Some(store) = self.cluster_connections.get() else {
            return Cached::NoCache;
        };
        if !ready(store) {
            return Cached::NoCache;
        }
        Cached::Found(store.get(&ObjectRef::new(name)))
    }

    /// The names of managed token Secrets in `ns` that the object `uid` controls (None: no
    /// cache yet).
    pub fn owned_token_secrets(&self, ns: &str, uid: &str) -> Option<Vec<String>> {
        let s = self.scope(ns)?;
        if !ready(&s.token_secrets) {
            return None;
        }
        let owned = s.token_secrets.state().into_iter().filter(|m| {
            m.namespace().as_deref() == Some(ns)
                && m.owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.controller == Some(true))
        });
        Some(owned.map(|m| m.name_any()).collect())
    }

    /// A managed token Secret's metadata.
    pub fn token_secret(&self, ns: &str, name: &str) -> Cached<PartialObjectMeta<Secret>> {
        let Some(s) = self.scope(ns) else {
            return Cached::NoCache;
        };
        if !ready(&s.token_secrets) {
            return Cached::NoCache;
        }
        Cached::Found(s.token_secrets.get(&ObjectRef::new(name).within(ns)))
    }
}

/// What the caches keep of an object: no managedFields, no last-applied copy of the object.
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What the cache keeps of a token Secret's metadata: its name, namespace and resourceVersion
/// (all a pass compares) and its owner (what maps a change to its Runner).
pub fn slim_secret(meta: &mut PartialObjectMeta<Secret>) {
    let m = &mut meta.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.creation_timestamp = None;
    m.uid = None;
}

/// `resourceVersion` as a number, where the server uses numbers (etcd revisions, and the local
/// API). Only used to tell whether a cached copy is older than one the operator wrote.
pub fn revision<K: Resource>(obj: &K) -> Option<u64> {
    obj.resource_version()?.parse().ok()
}

/// Whether a store has listed everything once. Not awaited: kube's readiness future wakes only
/// its latest waiter, and a pass can just as well read live until then.
fn ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}
