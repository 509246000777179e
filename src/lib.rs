//! runner-operator: GitLab CI runners managed declaratively from Kubernetes.
//!
//! Dependencies point one way: `cli` → `controller` → {`crd`, `gitlab`}; `crd` and `gitlab` know
//! nothing of each other.

pub mod cli;

/// What build.rs embedded.
pub mod build {
    /// The git commit this binary was built from ("unknown" without git).
    pub const COMMIT: &str = env!("RUNNER_OPERATOR_GIT_COMMIT");
    /// Build date (SOURCE_DATE_EPOCH when set), RFC 3339.
    pub const DATE: &str = env!("RUNNER_OPERATOR_BUILD_DATE");
}
pub mod controller;
pub mod crd;
pub mod gitlab;
pub mod import;
pub mod jobs;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod preview;
pub mod prune;
pub mod run;
#[cfg(feature = "emulator")]
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod tls;
