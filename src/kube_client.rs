//! Building the Kubernetes client and checking that the CRDs are installed.

use std::path::Path;

use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::crd::{ClusterGitLabConnection, GitLabConnection, Runner};

/// Connects with the given kubeconfig, else the usual inference (KUBECONFIG, ~/.kube/config,
/// in-cluster).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("loading kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes configuration found ({e}); pass --kubeconfig or run inside a cluster"
            )
        })?,
    };
    Client::try_from(config).map_err(|e| format!("building the Kubernetes client: {e}"))
}

/// Fails with an install hint when one of our CRDs is not served.
pub async fn check_crds_installed(client: &Client) -> Result<(), String> {
    let lp = ListParams::default().limit(1);
    let checks = [
        (
            "runners",
            Api::<Runner>::all(client.clone())
                .list(&lp)
                .await
                .map(|_| ()),
        ),
        (
            "gitlabconnections",
            Api::<GitLabConnection>::all(client.clone())
                .list(&lp)
                .await
                .map(|_| ()),
        ),
        (
            "clustergitlabconnections",
            Api::<ClusterGitLabConnection>::all(client.clone())
                .list(&lp)
                .await
                .map(|_| ()),
        ),
    ];
    for (plural, result) in checks {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(format!(
                    "the CRD {plural}.{} is not installed in this cluster; install the CRDs first: \
                     `runner-operator crd | kubectl apply --server-side -f -` (or `kubectl apply --server-side -f crds/`)",
                    crate::crd::GROUP
                ));
            }
            Err(e) => {
                return Err(format!(
                    "checking that the CRD {plural}.{} is installed: {e}",
                    crate::crd::GROUP
                ));
            }
        }
    }
    Ok(())
}
