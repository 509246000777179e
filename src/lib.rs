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
