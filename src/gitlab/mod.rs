//! GitLab Runners REST API client. Knows nothing of Kubernetes.

pub mod api;
pub mod cause;
pub mod client;
pub mod error;
pub mod ratelimit;
pub mod types;

pub use api::GitLabApi;
pub use client::{ClientConfig, GitLabClient, RetryPolicy};
pub use error::{ErrorKind, GitLabError, Refusal};
pub use ratelimit::{PauseGate, RateLimiter};
pub use types::*;
