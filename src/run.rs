//! `runner-operator run`: connect to Kubernetes, check the CRDs, run the controllers.

use std::sync::Arc;
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
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "RUNNER_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Only reconcile Runners matching this label selector (to split runners between deployments).
    #[arg(long, env = "RUNNER_OPERATOR_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// The operator's namespace: default namespace of ClusterGitLabConnection token Secrets.
    #[arg(long, env = "POD_NAMESPACE", default_value = "runner-operator")]
    pub namespace: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::crd::duration::parse(s)
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            resync: self.resync_interval,
            namespace: self.namespace.clone(),
            ..Settings::default()
        }
    }

    pub fn options(&self) -> Options {
        Options {
            concurrency: self.concurrency,
            namespace: self.watch_namespace.clone(),
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

/// Runs the operator until SIGTERM/Ctrl-C.
pub fn run(args: RunArgs) -> Result<(), String> {
    crate::telemetry::init(args.log_format);
    crate::tls::install_crypto_provider();
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))?;
    rt.block_on(async move {
        let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
        crate::kube_client::check_crds_installed(&client).await?;
        tracing::info!(resync = ?args.resync_interval, concurrency = args.concurrency, "runner-operator started");
        let ctx = Arc::new(Context::new(client, args.settings()));
        controller::run(ctx, args.options(), shutdown_signal()).await;
        Ok(())
    })
}
