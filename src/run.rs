//! `runner-operator run`: connect to Kubernetes, check the CRDs, run the controllers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use futures::FutureExt;

use crate::controller::{self, Context, Options, Settings};

/// Flags of `run`; each can also be set through its environment variable.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Path to a kubeconfig; default: $KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "RUNNER_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "RUNNER_OPERATOR_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
    /// How often each Runner is re-checked against GitLab at steady state (jittered ±10 %).
    #[arg(long, env = "RUNNER_OPERATOR_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Reconciles running at once.
    #[arg(long, env = "RUNNER_OPERATOR_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Only watch these namespaces, comma-separated (default: all namespaces).
    #[arg(long, env = "RUNNER_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Only reconcile Runners matching this label selector (to split runners between deployments).
    #[arg(long, env = "RUNNER_OPERATOR_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// The operator's namespace: default namespace of ClusterGitLabConnection token Secrets,
    /// and of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "runner-operator")]
    pub namespace: String,
    /// Address of /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "RUNNER_OPERATOR_LISTEN_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_address: std::net::SocketAddr,
    /// Elect a leader through a Lease so several replicas can run; standbys stay live but not
    /// ready. Losing the Lease stops the process with a non-zero code.
    #[arg(long, env = "RUNNER_OPERATOR_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the leader-election Lease in --namespace (the chart uses the release's name, so
    /// two releases in one namespace never share one).
    #[arg(
        long,
        env = "RUNNER_OPERATOR_LEASE_NAME",
        default_value = "runner-operator"
    )]
    pub leader_election_lease: String,
    /// Namespaces where the Deployments, StatefulSets and DaemonSets a Runner lists as token
    /// consumers may be restarted: `*` (all), `none`, or a comma-separated list.
    #[arg(long, env = "RUNNER_OPERATOR_CONSUMER_RESTARTS", default_value = "*")]
    pub consumer_restarts: crate::controller::ConsumerRestarts,
    /// Warn this long before a connection's access token expires (condition TokenExpiring,
    /// Warning events, and the runner_operator_connection_token_expiry_seconds gauge).
    #[arg(long, env = "RUNNER_OPERATOR_TOKEN_EXPIRY_WARNING", default_value = "720h", value_parser = parse_duration)]
    pub token_expiry_warning: Duration,
    /// This cluster's name (a DNS label, e.g. prod-eu-1), written into the ownership marker of
    /// every runner: after a rebuild, an operator of the same name takes over the runners its
    /// predecessor made instead of registering new ones; operators of other names never touch
    /// them. Unset: markers name only the Runner's uid (a rebuild registers new runners).
    #[arg(long, env = "RUNNER_OPERATOR_CLUSTER_NAME")]
    pub cluster_name: Option<crate::controller::identity::ClusterName>,
    /// Identity in leader election and events (the Downward API's pod name in the chart).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::crd::duration::parse(s)
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            resync: self.resync_interval,
            namespace: self.namespace.clone(),
            consumer_restarts: self.consumer_restarts.clone(),
            token_expiry_warning: self.token_expiry_warning,
            cluster_name: self.cluster_name.clone(),
            pod_name: self.pod_name.clone(),
            ..Settings::default()
        }
    }

    pub fn options(&self) -> Options {
        Options {
            concurrency: self.concurrency,
            namespaces: self.watch_namespaces.clone(),
            label_selector: self.label_selector.clone(),
        }
    }
}

/// Resolves on the first SIGTERM or Ctrl-C; clones share it.
pub fn shutdown_signal() -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    async {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: letting in-flight reconciles finish");
    }
    .boxed()
    .shared()
}

/// glibc gives threads that allocate at the same time arenas of their own, up to eight per
/// core, and memory freed in one is not reused by another: with the caches allocated by the
/// watch tasks and freed by the reconcile tasks, that left the peak after a restart well above
/// the caches' size (docs/benchmarks.md). Two arenas serve the two busy threads as well.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter and takes glibc's own lock; called
    // before the async runtime starts, it bounds every arena the process will have.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Runs the operator until SIGTERM/Ctrl-C.
pub fn run(args: RunArgs) -> Result<(), String> {
    limit_malloc_arenas();
    crate::telemetry::init(args.log_format);
    crate::tls::install_crypto_provider();
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))?;
    rt.block_on(async move {
        let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
        serve_operator(client, args, shutdown_signal()).await
    })
}

/// Health server, CRD check, optional leader election, controllers — until `shutdown`.
pub async fn serve_operator(
    client: kube::Client,
    args: RunArgs,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) -> Result<(), String> {
    let ctx = Arc::new(Context::new(client.clone(), args.settings()));
    let health = crate::server::Health {
        metrics: ctx.metrics.clone(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let addr = crate::server::serve(args.listen_address, health.clone(), shutdown.clone()).await?;
    tracing::info!(%addr, "serving /livez, /readyz and /metrics");
    crate::kube_client::check_crds_installed(&client).await?;
    if args.leader_election {
        let identity = args
            .pod_name
            .clone()
            .unwrap_or_else(crate::leader::identity);
        let (mut leading, election) = crate::leader::elect(
            client.clone(),
            &args.namespace,
            &args.leader_election_lease,
            identity.clone(),
        )
        .await?;
        tracing::info!(%identity, "waiting to become the leader");
        let mut stop = shutdown.clone();
        loop {
            if *leading.borrow() {
                break;
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return Err("leader election stopped".into()) },
                _ = &mut stop => return Ok(()),
            }
        }
        tracing::info!(%identity, "leading: reconciling");
        health.ready.store(true, Ordering::Relaxed);
        // Losing the lease — or the lease task dying, which closes the channel — stops the
        // controllers (in-flight reconciles finish) and exits non-zero, so the pod restarts
        // and competes again instead of two leaders acting at once.
        let lost_flag = Arc::new(AtomicBool::new(false));
        let flag = lost_flag.clone();
        let lost = async move {
            while leading.changed().await.is_ok() {
                if !*leading.borrow() {
                    break;
                }
            }
            flag.store(true, Ordering::Relaxed);
        };
        let lost_or_shutdown = futures::future::select(Box::pin(lost), shutdown.clone())
            .map(|_| ())
            .boxed()
            .shared();
        controller::run(ctx, args.options(), lost_or_shutdown).await;
        health.ready.store(false, Ordering::Relaxed);
        if lost_flag.load(Ordering::Relaxed) {
            return Err(format!(
                "lost the leader-election Lease {}/{}; exiting so this instance restarts and competes again",
                args.namespace, args.leader_election_lease
            ));
        }
        // Shut down with nothing in flight: hand the Lease over now (a rollout's next pod
        // leads at once instead of after the 15 s lease duration).
        match election.release(Duration::from_secs(5)).await {
            Ok(()) => tracing::info!(%identity, "released the leader-election Lease"),
            Err(e) => {
                tracing::warn!(%identity, error = %e, "could not release the Lease; it lapses within 15 s")
            }
        }
        return Ok(());
    }
    tracing::info!(resync = ?args.resync_interval, concurrency = args.concurrency, "runner-operator started");
    health.ready.store(true, Ordering::Relaxed);
    controller::run(ctx, args.options(), shutdown).await;
    health.ready.store(false, Ordering::Relaxed);
    Ok(())
}
