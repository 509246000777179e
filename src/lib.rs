//! runner-operator: GitLab CI runners managed declaratively from Kubernetes.
//!
//! Dependencies point one way: `cli` → `controller` → {`crd`, `gitlab`}; `crd` and `gitlab` know
//! nothing of each other.

pub mod cli;
pub mod controller;
pub mod crd;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod gitlab;
pub mod kube_client;
#[cfg(feature = "emulator")]
pub mod kubeapi;
pub mod leader;
pub mod metrics;
pub mod run;
#[cfg(feature = "emulator")]
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod tls;

/// Random `[a-z0-9]` characters (instance identities).
pub fn emulator_free_random(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(..36), 36).unwrap_or('x'))
        .collect()
}
