//! Controller errors: typed, with the context a user needs and a stable reason for conditions,
//! events and metrics.

use crate::controller::reasons::Reason;
use crate::gitlab::ErrorKind;
use std::time::Duration;

use crate::gitlab::GitLabError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection cannot be used yet (missing, its Secret missing or bad, GitLab not
    /// answering its check).
    #[error("{0}")]
    Connection(String),
    /// A ClusterGitLabConnection refuses the Runner's namespace: only a change to its
    /// allowedNamespaces (or the Runner's connectionRef) helps.
    #[error("{0}")]
    NotAllowed(String),
    /// The Runner asks for something outside the lane its ClusterGitLabConnection's tenancy
    /// gives its namespace: nothing is done in GitLab.
    #[error("{0}")]
    Tenancy(String),
    /// GitLab refused or failed a call.
    #[error("{action}: {source}")]
    GitLab {
        action: String,
        #[source]
        source: GitLabError,
    },
    /// The Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The spec cannot be satisfied as written (unknown project, adopt target missing).
    #[error("{0}")]
    Invalid(String),
    /// GitLab answered 410 to a registration token: the instance has them disabled.
    #[error("{0}")]
    RegistrationTokensDisabled(String),
    /// The Runner's deletion waits for a person (its connection is gone, or GitLab refuses).
    #[error("{0}")]
    DeletionBlocked(String),
}

impl Error {
    pub fn gitlab(action: impl Into<String>) -> impl FnOnce(GitLabError) -> Error {
        let action = action.into();
        move |source| Error::GitLab { action, source }
    }

    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// Condition reason, event reason and metric label (a fixed vocabulary).
    pub fn reason(&self) -> Reason {
        match self {
            Error::Connection(_) => Reason::ConnectionNotReady,
            Error::NotAllowed(_) => Reason::ConnectionNotAllowed,
            Error::Tenancy(_) => Reason::TenancyViolation,
            Error::GitLab { source, .. } => match source.kind() {
                ErrorKind::Unauthorized => Reason::GitLabUnauthorized,
                ErrorKind::Forbidden => Reason::GitLabForbidden,
                ErrorKind::NotFound => Reason::GitLabNotFound,
                ErrorKind::Disabled => Reason::RegistrationTokensDisabled,
                ErrorKind::RateLimited => Reason::GitLabRateLimited,
                ErrorKind::Rejected => Reason::GitLabRejected,
                ErrorKind::ServerError | ErrorKind::BadAnswer | ErrorKind::Config => {
                    Reason::GitLabError
                }
                ErrorKind::Unreachable => Reason::GitLabUnreachable,
            },
            Error::Kube { .. } => Reason::KubernetesError,
            Error::Invalid(_) => Reason::InvalidSpec,
            Error::RegistrationTokensDisabled(_) => Reason::RegistrationTokensDisabled,
            Error::DeletionBlocked(_) => Reason::DeletionBlocked,
        }
    }

    /// A floor for the retry delay GitLab asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::GitLab { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}
