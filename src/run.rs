//! `runner-operator run`: connect to Kubernetes, check the CRDs, run the controllers.

use clap::Args;

/// Flags of `run`; each can also be set through the environment.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Path to a kubeconfig; default: $KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "KUBECONFIG_PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "RUNNER_OPERATOR_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

/// Runs the operator until interrupted.
pub fn run(args: RunArgs) -> Result<(), String> {
    crate::telemetry::init(args.log_format);
    crate::tls::install_crypto_provider();
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))?;
    rt.block_on(async move {
        let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
        crate::kube_client::check_crds_installed(&client).await?;
        tracing::info!("CRDs are installed; reconciling is not implemented in this build yet");
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("waiting for a signal: {e}"))?;
        Ok(())
    })
}
