//! Optional leader election on a coordination.k8s.io Lease (kube-lease-manager, server-side
//! apply). Standbys stay live (serving `/livez`) but not ready, and reconcile nothing.

use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};

/// Identity of this instance when `--pod-name`/`POD_NAME` is not set: the hostname (the pod name
/// in Kubernetes), else a random one.
pub fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            let suffix: String = (0..8)
                .map(|_| char::from_digit(fastrand::u32(..36), 36).unwrap_or('x'))
                .collect();
            format!("runner-operator-{suffix}")
        })
}

/// Starts competing for the Lease `lease` in `namespace`; the receiver says whether this
/// instance leads (it closes if the lease task dies). Lease duration 15 s, grace 5 s.
pub async fn elect(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    identity: String,
) -> Result<tokio::sync::watch::Receiver<bool>, String> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_parameters(LeaseParams::new(identity, 15, 5))
        .build()
        .await
        .map_err(|e| format!("setting up leader election (Lease {namespace}/{lease}): {e}"))?;
    let (rx, _task) = manager.watch().await;
    Ok(rx)
}
