//! What this process keeps about GitLab: one client per connection (rebuilt only when its
//! settings change), each connection's rate limiter, the 429 pause shared by every connection
//! using the same GitLab and token, each connection as last resolved, project and group paths
//! resolved to ids (and back), and the ownership markers read from runners' notes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::identity::Marker;
use crate::gitlab::{GitLabApi, PauseGate, RateLimiter, RunnerId};

/// A connection's GitLab client.
pub type Client = Arc<dyn GitLabApi>;

/// A usable connection.
#[derive(Clone)]
pub struct Resolved {
    pub client: Client,
    pub url: String,
    pub key: String,
    /// The connection's rate limiter (periodic checks step aside when it is busy).
    pub limiter: Option<Arc<RateLimiter>>,
    /// A ClusterGitLabConnection's tenancy (its name, its rules or None for the default lane);
    /// None for a namespace's own GitLabConnection, which is not limited.
    pub lane: Option<Arc<Lane>>,
}

/// Whose token a Runner uses and what its namespace may do with it.
#[derive(Debug)]
pub struct Lane {
    pub connection: String,
    pub tenancy: Option<crate::crd::Tenancy>,
}

/// "project" or "group".
pub type PathKind = &'static str;

/// (connection key, kind, path).
type PathKey = (String, PathKind, String);

/// (connection key, kind, id).
type IdKey = (String, PathKind, i64);

#[derive(Default)]
pub struct GitLabClients {
    /// How long a resolved path stays fresh.
    resync: Duration,
    /// One client per connection (key: kind/namespace/name) with the fingerprint of the
    /// settings it was built from.
    clients: Mutex<HashMap<String, (String, Client)>>,
    /// Each connection as last resolved, by the connection's generation: Runner passes reuse it
    /// without reading the token Secret again (the connection's own checks read it).
    resolved: Mutex<HashMap<String, (i64, Resolved)>>,
    /// One 429 pause per GitLab and access token (key: URL and token hash): GitLab limits per
    /// user, and after a 429 nothing may reach it before Retry-After.
    gates: Mutex<HashMap<String, Arc<PauseGate>>>,
    /// One rate limiter per connection (its own rateLimit), kept across client rebuilds.
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    /// GitLab runner id → the marker its note carries (None: no marker), as last read. A
    /// marker changes hands only when this process takes a runner over (and updates this), so
    /// the searches for a runner lost mid-create or left by a predecessor read each
    /// candidate's note once per process.
    markers: Mutex<HashMap<RunnerId, Option<Marker>>>,
    /// Project and group paths resolved to ids, per connection: many Runners name the same
    /// project.
    paths: Mutex<HashMap<PathKey, (i64, Instant)>>,
    /// The other way round, for tenancy: GitLab's canonical full path of a project or group.
    canonical_paths: Mutex<HashMap<IdKey, (String, Instant)>>,
    /// One lookup per path at a time (the others wait for its answer).
    path_locks: Mutex<HashMap<PathKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitLabClients {
    /// Paths resolved within `resync` are not looked up again.
    pub fn new(resync: Duration) -> Self {
        GitLabClients {
            resync,
            ..Default::default()
        }
    }

    /// The connection's client, if it was built from settings with this fingerprint.
    pub fn client(&self, key: &str, fingerprint: &str) -> Option<Client> {
        self.clients
            .lock()
            .get(key)
            .filter(|(fp, _)| fp == fingerprint)
            .map(|(_, c)| c.clone())
    }

    pub fn set_client(&self, key: &str, fingerprint: String, client: Client) {
        self.clients
            .lock()
            .insert(key.to_string(), (fingerprint, client));
    }

    /// The connection's rate limiter, if it has one yet.
    pub fn limiter(&self, key: &str) -> Option<Arc<RateLimiter>> {
        self.limiters.lock().get(key).cloned()
    }

    /// The connection's rate limiter at this rate, on the pause gate of `gate_key` (GitLab URL
    /// and token): the limiter is kept (with its queue) unless the gate changed.
    pub fn limiter_for(
        &self,
        key: &str,
        gate_key: String,
        rps: f64,
        burst: u32,
    ) -> Arc<RateLimiter> {
        let pause = self.gates.lock().entry(gate_key).or_default().clone();
        let mut limiters = self.limiters.lock();
        match limiters.get(key) {
            Some(l) if l.shares(&pause) => {
                l.reconfigure(rps, burst);
                l.clone()
            }
            // New, or the token or URL changed: a fresh limiter on the new gate.
            _ => {
                let fresh = Arc::new(RateLimiter::with_gate(rps, burst, pause));
                limiters.insert(key.to_string(), fresh.clone());
                fresh
            }
        }
    }

    /// The connection as resolved for this generation of it, if it was.
    pub fn resolved(&self, key: &str, generation: i64) -> Option<Resolved> {
        self.resolved
            .lock()
            .get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, r)| r.clone())
    }

    pub fn remember_resolved(&self, generation: i64, r: &Resolved) {
        self.resolved
            .lock()
            .insert(r.key.clone(), (generation, r.clone()));
    }

    /// Forgets how a connection was resolved (its token or CA Secret changed).
    pub fn forget_resolved(&self, key: &str) {
        self.resolved.lock().remove(key);
    }

    /// The marker runner `id`'s note carried when this process last read it: None when never
    /// read, Some(None) when it carried none.
    pub fn marker(&self, id: RunnerId) -> Option<Option<Marker>> {
        self.markers.lock().get(&id).cloned()
    }

    pub fn remember_marker(&self, id: RunnerId, marker: Option<Marker>) {
        self.markers.lock().insert(id, marker);
    }

    /// Runner `id`'s marker changes (this process rewrites it): read it again next time.
    pub fn forget_marker(&self, id: RunnerId) {
        self.markers.lock().remove(&id);
    }

    /// A path's id: from the cache when read within the resync period, else from `fetch` —
    /// once, however many Runners ask at the same time.
    pub async fn resolve_path<E, Fut>(
        &self,
        conn: &str,
        kind: PathKind,
        path: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<i64, E>
    where
        Fut: std::future::Future<Output = Result<i64, E>>,
    {
        let key = (conn.to_string(), kind, path.to_string());
        let fresh = || {
            self.paths
                .lock()
                .get(&key)
                .filter(|(_, at)| at.elapsed() < self.resync)
                .map(|(id, _)| *id)
        };
        if let Some(id) = fresh() {
            return Ok(id);
        }
        let gate = self
            .path_locks
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(id) = fresh() {
            return Ok(id);
        }
        let id = fetch().await?;
        self.paths.lock().insert(key, (id, Instant::now()));
        Ok(id)
    }

    /// A project's or group's canonical full path: from the cache when read within the resync
    /// period (a move in GitLab is seen within one period), else from `fetch`.
    pub async fn canonical_path<E, Fut>(
        &self,
        conn: &str,
        kind: PathKind,
        id: i64,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<String, E>
    where
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let key = (conn.to_string(), kind, id);
        let cached = self
            .canonical_paths
            .lock()
            .get(&key)
            .filter(|(_, at)| at.elapsed() < self.resync)
            .map(|(p, _)| p.clone());
        if let Some(p) = cached {
            return Ok(p);
        }
        let path = fetch().await?;
        self.canonical_paths
            .lock()
            .insert(key, (path.clone(), Instant::now()));
        Ok(path)
    }

    /// Forgets a connection's resolved paths (GitLab said a project or group is gone).
    pub fn forget_paths(&self, conn: &str) {
        self.paths.lock().retain(|(c, _, _), _| c != conn);
        self.canonical_paths.lock().retain(|(c, _, _), _| c != conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_path_is_looked_up_once_until_forgotten() {
        let clients = GitLabClients::new(Duration::from_secs(600));
        let lookups = std::sync::atomic::AtomicUsize::new(0);
        let lookup = || async {
            lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(7)
        };
        for _ in 0..3 {
            let id = clients.resolve_path("c", "project", "a/b", lookup).await;
            assert_eq!(id, Ok(7));
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
        clients.forget_paths("c");
        let _ = clients.resolve_path("c", "project", "a/b", lookup).await;
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
