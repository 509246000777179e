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
                let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                let operator_ns = operator_ns.clone();
                cluster_store
                    .state()
                    .into_iter()
                    .filter(move |c| {
                        let s = &c.spec;
                        let token_ns = s
                            .token_secret_ref
                            .namespace
                            .as_deref()
                            .unwrap_or(&operator_ns);
                        (token_ns == ns && s.token_secret_ref.name == name)
                            || (operator_ns == ns
                                && s.client
                                    .ca_bundle_secret_ref
                                    .as_ref()
                                    .is_some_and(|r| r.name == name))
                    })
                    .map(|c| {
                        // Runner passes read the token again instead of reusing the client.
                        ctx_c.gitlab.forget_resolved(&connection::cluster_key(&c));
                        ObjectRef::from_obj(&*c)
                    })
                    .collect::<Vec<_>>()
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

async fn run_scope(
    ctx: Arc<Context>,
    namespace: Option<String>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = ctx.client.clone();
    // Runners are read through a guard: one that does not decode (stored under an older or
    // looser schema) is reported on its own instead of failing the whole watch.
    let runners: Api<DeserializeGuard<Runner>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut runner_cfg = watcher::Config::default();
    if let Some(sel) = &options.label_selector {
        runner_cfg = runner_cfg.labels(sel);
    }
    let secrets: Api<PartialObjectMeta<Secret>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secret_cfg = watcher::Config::default().labels(&format!(
        "{}={}",
        secret::LABEL_MANAGED_BY,
        secret::MANAGED_BY
    ));
    // The caches keep no managedFields or last-applied copies (most of a Runner's bytes).
    let (store, runner_writer) = reflector::store();
    let runner_stream = reflector(
        runner_writer,
        watcher(runners, runner_cfg).default_backoff().modify(
            |g: &mut DeserializeGuard<Runner>| {
                if let Ok(r) = g.0.as_mut() {
                    caches::slim(r);
                }
            },
        ),
    )
    .applied_objects();
    let controller = Controller::for_stream(runner_stream, store.clone())
        .with_config(ControllerConfig::default().concurrency(options.concurrency));
    let store2 = store.clone();
    // Owned token Secrets: metadata only, kept in a store the passes read instead of the API.
    let (secret_store, secret_writer) = reflector::store();
    let secret_stream = reflector(
        secret_writer,
        watcher(secrets, secret_cfg)
            .default_backoff()
            .modify(caches::slim_secret),
    )
    .touched_objects();
    let conn_api: Api<GitLabConnection> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let conn_controller = Controller::new(conn_api.clone(), watcher::Config::default());
    let conn_store = conn_controller.store();
    ctx.caches.add_scope(caches::Scope {
        namespace: namespace.clone(),
        runners: store.clone(),
        connections: conn_store.clone(),
        token_secrets: secret_store,
    });
    let runner_loop = controller
        .owns_stream(secret_stream)
        .watches(
            conn_api,
            watcher::Config::default(),
            move |conn: GitLabConnection| {
                let ns = conn.namespace();
                let name = conn.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(move |g| {
                        g.0.as_ref().is_ok_and(|r| {
                            r.spec.connection_ref.kind == ConnectionKind::GitLabConnection
                                && r.spec.connection_ref.name == name
                                && r.namespace() == ns
                        })
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
            },
        )
        .watches(
            Api::<ClusterGitLabConnection>::all(client.clone()),
            watcher::Config::default(),
            move |conn: ClusterGitLabConnection| {
                let name = conn.name_any();
                store2
                    .state()
                    .into_iter()
                    .filter(move |g| {
                        g.0.as_ref().is_ok_and(|r| {
                            r.spec.connection_ref.kind == ConnectionKind::ClusterGitLabConnection
                                && r.spec.connection_ref.name == name
                        })
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            runner::reconcile_guarded,
            runner::error_policy_guarded,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // Metadata only: an Api of PartialObjectMeta makes kube ask for metadata, never data.
    let secrets_meta: Api<PartialObjectMeta<Secret>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ctx_n = ctx.clone();
    let conn_loop = conn_controller
        // A connection's token or CA Secret changed or vanished: re-check it now, not at the
        // next resync (metadata only; the token is read when the check runs).
        .watches(
            secrets_meta,
            watcher::Config::default(),
            move |secret: PartialObjectMeta<Secret>| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                conn_store
                    .state()
                    .into_iter()
                    .filter(move |c| {
                        let s = &c.spec;
                        c.namespace() == ns
                            && (s.token_secret_ref.name == name
                                || s.client
                                    .ca_bundle_secret_ref
                                    .as_ref()
                                    .is_some_and(|r| r.name == name))
                    })
                    .map(|c| {
                        // Runner passes read the token again instead of reusing the client.
                        ctx_n
                            .gitlab
                            .forget_resolved(&connection::namespaced_key(&c));
                        ObjectRef::from_obj(&*c)
                    })
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            connection::reconcile_namespaced,
            |_, e: &Error, _| connection_retry(e),
            ctx.clone(),
        )
        .for_each(|_| async {});
    tokio::join!(runner_loop, conn_loop);
}

fn connection_retry(e: &Error) -> Action {
    tracing::warn!(error = %e, "connection check failed");
    Action::requeue(Duration::from_secs(30).max(e.retry_after().unwrap_or_default()))
}
