//! `runner-operator sandbox`: the local Kubernetes API, the GitLab emulator and the operator in
//! one process, ready for `kubectl apply -f deploy/examples/…`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::controller::{self, Context, Options, Settings};
use crate::crd::{ClusterGitLabConnection, GitLabConnection};
use gitlab_emulator::{GitLabEmulator, default_seed};
use kube_local::KubeApiServer;

/// Flags of `sandbox`.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Where to write the kubeconfig of the local Kubernetes API.
    #[arg(long, default_value = "sandbox.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Address of the GitLab emulator (the example connections point at 127.0.0.1:8929).
    #[arg(long, default_value = "127.0.0.1:8929")]
    pub gitlab_listen: String,
    /// Address of the local Kubernetes API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub kube_listen: String,
    /// Resync period of the operator.
    #[arg(long, default_value = "1m", value_parser = crate::crd::duration::parse)]
    pub resync_interval: Duration,
}

const EXAMPLE_CONNECTIONS: [&str; 2] = [
    include_str!("../deploy/examples/connection.yaml"),
    include_str!("../deploy/examples/cluster-connection.yaml"),
];

/// A create whose object already exists (installed by Helm, say) is kept as it is.
fn kept<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Installs CRDs, namespaces and the example connections (pointed at `gitlab_url`); CRDs and
/// namespaces that exist already are kept.
pub async fn bootstrap(client: &kube::Client, gitlab_url: &str) -> Result<(), String> {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crd::all() {
        kept(crds.create(&PostParams::default(), &crd).await)
            .map_err(|e| format!("installing the CRDs: {e}"))?;
    }
    // A real API server serves a new CRD's resources only once it is Established.
    for crd in crate::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .map_err(|_| format!("CRD {name} not established after 60 s"))?
            .map_err(|e| format!("waiting for CRD {name}: {e}"))?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["ci", "runner-operator"] {
        let obj: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).map_err(|e| e.to_string())?;
        kept(namespaces.create(&PostParams::default(), &obj).await)
            .map_err(|e| format!("creating namespace {ns}: {e}"))?;
    }
    for text in EXAMPLE_CONNECTIONS {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| format!("parsing the example connections: {e}"))?;
        for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
            if doc["spec"]["url"].is_string() {
                doc["spec"]["url"] = json!(gitlab_url);
            }
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let pp = PostParams::default();
            let result = match doc["kind"].as_str() {
                Some("Secret") => Api::<Secret>::namespaced(client.clone(), &ns)
                    .create(
                        &pp,
                        &serde_json::from_value(doc).map_err(|e| e.to_string())?,
                    )
                    .await
                    .map(|_| ()),
                Some("GitLabConnection") => {
                    Api::<GitLabConnection>::namespaced(client.clone(), &ns)
                        .create(
                            &pp,
                            &serde_json::from_value(doc).map_err(|e| e.to_string())?,
                        )
                        .await
                        .map(|_| ())
                }
                Some("ClusterGitLabConnection") => {
                    Api::<ClusterGitLabConnection>::all(client.clone())
                        .create(
                            &pp,
                            &serde_json::from_value(doc).map_err(|e| e.to_string())?,
                        )
                        .await
                        .map(|_| ())
                }
                _ => Ok(()),
            };
            result.map_err(|e| format!("creating an example connection object: {e}"))?;
        }
    }
    Ok(())
}

/// Runs the sandbox until Ctrl-C.
pub fn run(args: SandboxArgs) -> Result<(), String> {
    crate::telemetry::init(crate::telemetry::LogFormat::Text);
    crate::tls::install_crypto_provider();
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))?;
    rt.block_on(async move {
        let gitlab = GitLabEmulator::start_on(&args.gitlab_listen, &default_seed())
            .await
            .map_err(|e| format!("starting the GitLab emulator on {}: {e} (is another sandbox running? pick another address with --gitlab-listen)", args.gitlab_listen))?;
        let kube = KubeApiServer::start_with(&args.kube_listen, Duration::from_secs(30)).await.map_err(|e| format!("starting the local Kubernetes API on {}: {e}", args.kube_listen))?;
        let client = kube.client().await?;
        bootstrap(&client, &gitlab.url()).await?;
        kube.write_kubeconfig(&args.kubeconfig).map_err(|e| format!("writing {}: {e}", args.kubeconfig.display()))?;
        let kc = args.kubeconfig.display();
        println!(
            "runner-operator sandbox\n\
             \n  Kubernetes API  {}  (kubeconfig: {kc})\n  GitLab emulator {}  (admin token glpat-emulator-root)\n\
             \nInstalled: the CRDs, namespaces ci and runner-operator, the connections of deploy/examples/connection.yaml\n\
             and cluster-connection.yaml. Try:\n\
             \n  export KUBECONFIG={kc}\n  kubectl apply -f deploy/examples/project-runner.yaml\n  kubectl wait --for=condition=Ready glrunner/linux-builders -n ci --timeout=30s\n  kubectl get glrunners -n ci\n  kubectl get secret linux-builders-token -n ci -o jsonpath='{{.data.runner-token}}' | base64 -d\n  curl -s -H 'PRIVATE-TOKEN: glpat-emulator-root' {}/api/v4/runners/all\n\
             \nCtrl-C stops everything.",
            kube.url(),
            gitlab.url(),
            gitlab.url()
        );
        let settings = Settings { resync: args.resync_interval, namespace: "runner-operator".into(), ..Settings::default() };
        let ctx = Arc::new(Context::new(client, settings));
        controller::run(ctx, Options { concurrency: 16, namespaces: vec![], label_selector: None }, crate::run::shutdown_signal()).await;
        drop(kube);
        drop(gitlab);
        Ok(())
    })
}
