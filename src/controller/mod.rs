//! The controllers: Runners (observe, plan, act, report) and connections (live checks).

pub mod access_token;
pub mod caches;
pub mod clock;
pub mod connection;
pub mod consumers;
pub mod context;
pub mod error;
pub mod gitlab_clients;
pub mod identity;
pub mod managers;
pub mod plan;
pub mod reasons;
pub mod recent;
pub mod runner;
pub mod secret;
pub mod standing;
pub mod tenancy;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

pub use context::{ConsumerRestarts, Context, Settings};
pub use error::Error;

use crate::crd::{ClusterGitLabConnection, ConnectionKind, GitLabConnection, Runner};

/// Options of the controllers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconciles running at once (0 = unbounded).
    pub concurrency: u16,
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Label selector on Runners.
    pub label_selector: Option<String>,
}

/// Runs every controller until `shutdown` resolves; in-flight reconciles finish first. With
/// several namespaces, one set of namespaced controllers runs per namespace.
pub async fn run(
    ctx: Arc<Context>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let cluster_controller = Controller::new(
        Api::<ClusterGitLabConnection>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let cluster_store = cluster_controller.store();
    ctx.caches.set_cluster_connections(cluster_store.clone());
    // Cluster-wide releases may list Secrets everywhere: re-check a connection as soon as its
    // token or CA Secret changes. (Namespaced releases rely on the periodic check.)
    let cluster_controller = if options.namespaces.is_empty() {
        let operator_ns = ctx.settings.namespace.clone();
        let ctx_c = ctx.clone();
        cluster_controller.watches(
            Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
            watcher::Config::default(),
            move |secret: PartialObjectMeta<Secret>| {
                cluster_connections_using(&ctx_c, &cluster_store, &operator_ns, &secret)
            },
        )
    } else {
        cluster_controller
    };
    let cluster = cluster_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            connection::reconcile_cluster,
            |_, e: &Error, _| connection_retry(e),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let namespaced = futures::future::join_all(
        scopes
            .into_iter()
            .map(|ns| run_scope(ctx.clone(), ns, options.clone(), shutdown.clone())),
    );
    let controllers = async {
        tokio::join!(cluster, namespaced);
    };
    // Controllers drain in-flight reconciles after the signal; a stop that comes before their
    // caches are ready can otherwise wait forever (kube waits for the store), so bound it.
    let grace = ctx.settings.shutdown_grace;
    let deadline = async move {
        shutdown.await;
        tokio::time::sleep(grace).await;
        tracing::warn!(grace = ?grace, "reconciles did not finish in time after the shutdown signal; exiting anyway");
    };
    tokio::select! {
        _ = controllers => {}
        _ = deadline => {}
    }
}

/// Every resource of kind K in `namespace`, or in all namespaces.
fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Runner and GitLabConnection controllers of one namespace (or of all).
async fn run_scope(
    ctx: Arc<Context>,
    namespace: Option<String>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let conn_controller = Controller::new(
        scoped::<GitLabConnection>(&ctx.client, &namespace),
        watcher::Config::default(),
    );
    let conn_store = conn_controller.store();
    let runners = runner_loop(
        &ctx,
        &namespace,
        &options,
        conn_store.clone(),
        shutdown.clone(),
    );
    let ctx_n = ctx.clone();
    let connections = conn_controller
        // A connection's token or CA Secret changed or vanished: re-check it now, not at the
        // next resync (metadata only; the token is read when the check runs).
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&ctx.client, &namespace),
            watcher::Config::default(),
            move |secret: PartialObjectMeta<Secret>| {
                connections_using(&ctx_n, &conn_store, &secret)
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(
            connection::reconcile_namespaced,
            |_, e: &Error, _| connection_retry(e),
            ctx.clone(),
        )
        .for_each(|_| async {});
    tokio::join!(runners, connections);
}

/// The Runner controller of one scope: Runners read through a guard (one that does not
/// decode is reported on its own instead of failing the whole watch), their token Secrets'
/// metadata, and the connections they use.
async fn runner_loop(
    ctx: &Arc<Context>,
    namespace: &Option<String>,
    options: &Options,
    connections: reflector::Store<GitLabConnection>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = &ctx.client;
    let mut runner_cfg = watcher::Config::default();
    if let Some(sel) = &options.label_selector {
        runner_cfg = runner_cfg.labels(sel);
    }
    let secret_cfg = watcher::Config::default().labels(&format!(
        "{}={}",
        secret::LABEL_MANAGED_BY,
        secret::MANAGED_BY
    ));
    // The caches keep no managedFields or last-applied copies (most of a Runner's bytes).
    let (store, runner_writer) = reflector::store();
    let runner_stream = reflector(
        runner_writer,
        watcher(
            scoped::<DeserializeGuard<Runner>>(client, namespace),
            runner_cfg,
        )
        .default_backoff()
        .modify(|g: &mut DeserializeGuard<Runner>| {
            if let Ok(r) = g.0.as_mut() {
                caches::slim(r);
            }
        }),
    )
    .applied_objects();
    // Owned token Secrets: metadata only, kept in a store the passes read instead of the API.
    let (secret_store, secret_writer) = reflector::store();
    let on_delete = ctx.clone();
    let secret_stream = reflector(
        secret_writer,
        watcher(
            scoped::<PartialObjectMeta<Secret>>(client, namespace),
            secret_cfg,
        )
        .default_backoff()
        .modify(caches::slim_secret),
    )
    .map(move |event| {
        // A deletion the watch saw is not the cache lagging behind the operator's own write.
        if let Ok(watcher::Event::Delete(meta)) = &event {
            for owner in meta.owner_references() {
                on_delete.recent.secret_deleted(&owner.uid);
            }
        }
        event
    })
    .touched_objects();
    ctx.caches.add_scope(caches::Scope {
        namespace: namespace.clone(),
        runners: store.clone(),
        connections,
        token_secrets: secret_store,
    });
    let (by_conn, by_cluster_conn) = (store.clone(), store.clone());
    Controller::for_stream(runner_stream, store)
        .with_config(ControllerConfig::default().concurrency(options.concurrency))
        .owns_stream(secret_stream)
        .watches(
            scoped::<GitLabConnection>(client, namespace),
            watcher::Config::default(),
            move |conn: GitLabConnection| {
                let (kind, ns) = (ConnectionKind::GitLabConnection, conn.namespace());
                runners_using(&by_conn, kind, ns, conn.name_any())
            },
        )
        .watches(
            Api::<ClusterGitLabConnection>::all(client.clone()),
            watcher::Config::default(),
            move |conn: ClusterGitLabConnection| {
                let kind = ConnectionKind::ClusterGitLabConnection;
                runners_using(&by_cluster_conn, kind, None, conn.name_any())
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(
            runner::reconcile_guarded,
            runner::error_policy_guarded,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await
}

/// The Runners that use connection `name` (of `kind`; in namespace `ns` for namespaced ones).
fn runners_using(
    store: &reflector::Store<DeserializeGuard<Runner>>,
    kind: ConnectionKind,
    ns: Option<String>,
    name: String,
) -> Vec<ObjectRef<DeserializeGuard<Runner>>> {
    store
        .state()
        .into_iter()
        .filter(|g| {
            g.0.as_ref().is_ok_and(|r| {
                let c = &r.spec.connection_ref;
                c.kind == kind
                    && c.name == name
                    && (kind == ConnectionKind::ClusterGitLabConnection || r.namespace() == ns)
            })
        })
        .map(|r| ObjectRef::from_obj(&*r))
        .collect()
}

/// The namespace's connections whose token or CA Secret is `secret`; Runner passes read their
/// token again instead of reusing the client.
fn connections_using(
    ctx: &Context,
    store: &reflector::Store<GitLabConnection>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<GitLabConnection>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .into_iter()
        .filter(|c| {
            let s = &c.spec;
            let ca = s.client.ca_bundle_secret_ref.as_ref();
            c.namespace() == ns
                && (s.token_secret_ref.name == name || ca.is_some_and(|r| r.name == name))
        })
        .map(|c| {
            ctx.gitlab.forget_resolved(&connection::namespaced_key(&c));
            ObjectRef::from_obj(&*c)
        })
        .collect()
}

/// The ClusterGitLabConnections whose token Secret (in its namespace, by default the
/// operator's) or CA Secret (in the operator's namespace) is `secret`.
fn cluster_connections_using(
    ctx: &Context,
    store: &reflector::Store<ClusterGitLabConnection>,
    operator_ns: &str,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<ClusterGitLabConnection>> {
    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    store
        .state()
        .into_iter()
        .filter(|c| {
            let s = &c.spec;
            let token_ns = s
                .token_secret_ref
                .namespace
                .as_deref()
                .unwrap_or(operator_ns);
            let ca = s.client.ca_bundle_secret_ref.as_ref();
            (token_ns == ns && s.token_secret_ref.name == name)
                || (operator_ns == ns && ca.is_some_and(|r| r.name == name))
        })
        .map(|c| {
            // Runner passes read the token again instead of reusing the client.
            ctx.gitlab.forget_resolved(&connection::cluster_key(&c));
            ObjectRef::from_obj(&*c)
        })
        .collect()
}

fn connection_retry(e: &Error) -> Action {
    tracing::warn!(error = %e, "connection check failed");
    Action::requeue(Duration::from_secs(30).max(e.retry_after().unwrap_or_default()))
}
