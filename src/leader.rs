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

/// The task holding (or competing for) the Lease.
pub struct Election {
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Election {
    /// Once every receiver is dropped the task releases the Lease: waits for that (at most
    /// `limit`), so a successor leads at once instead of waiting for the Lease to lapse.
    pub async fn release(self, limit: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.task).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("releasing the Lease: {e}")),
            Ok(Err(e)) => Err(format!("the lease task failed: {e}")),
            Err(_) => Err(format!("releasing the Lease took longer than {limit:?}")),
        }
    }
}

/// Starts competing for the Lease `lease` in `namespace`; the receiver says whether this
/// instance leads (it closes if the lease task dies). Lease duration 15 s, grace 5 s.
pub async fn elect(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    identity: String,
) -> Result<(tokio::sync::watch::Receiver<bool>, Election), String> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_parameters(LeaseParams::new(identity, 15, 5))
        .build()
        .await
        .map_err(|e| format!("setting up leader election (Lease {namespace}/{lease}): {e}"))?;
    let (rx, task) = manager.watch().await;
    Ok((rx, Election { task }))
}
