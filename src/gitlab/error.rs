//! Typed GitLab errors: status, GitLab's own message and the endpoint, never a token.

use std::time::Duration;

/// What went wrong talking to GitLab.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// GitLab answered with an error status.
    #[error("GitLab answered {status} to {endpoint}: {message}{}", hint(*status))]
    Api {
        /// Method and path template, e.g. `PUT /runners/:id` (ids, not tokens).
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// GitLab's message (`message` as string or object, or `error`), or the body text.
        message: String,
        /// `Retry-After` or `RateLimit-Reset`, when GitLab sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not complete (DNS, connect, TLS, reset); `detail` names the cause and
    /// what to do.
    #[error("cannot reach GitLab for {endpoint}: {detail}")]
    Transport {
        endpoint: String,
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request timed out.
    #[error(
        "GitLab did not answer {endpoint} in time ({timeout:?}); raise the connection's timeoutSeconds if GitLab is slow"
    )]
    Timeout { endpoint: String, timeout: Duration },
    /// GitLab's answer was not what the API documents.
    #[error("unexpected answer from GitLab to {endpoint}: {detail}")]
    Decode { endpoint: String, detail: String },
    /// The client could not be built (bad URL, CA bundle).
    #[error("invalid GitLab client configuration: {0}")]
    Config(String),
}

/// What kind of failure an error is, so callers decide on it instead of re-reading HTTP
/// statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: the access token is unknown, expired or revoked.
    Unauthorized,
    /// 403: the token lacks a scope or role (or GitLab refused the operation).
    Forbidden,
    /// 404: the object does not exist, or the token's user cannot see it.
    NotFound,
    /// 410: the endpoint is switched off (registration tokens disabled).
    Disabled,
    /// 429: rate limited.
    RateLimited,
    /// 400, 409, 422: GitLab refused the request's content.
    Rejected,
    /// 5xx or another unexpected status.
    ServerError,
    /// No answer: transport failure or timeout.
    Unreachable,
    /// An answer the API does not document.
    BadAnswer,
    /// The client could not be built.
    Config,
}

/// Refusals of the Runners API that callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `POST /projects/:id/runners`: the runner is assigned to that project already (400).
    AlreadyAssigned,
    /// `DELETE /runners/:id` by a non-admin: the project runner is assigned to several projects
    /// and must be unassigned from the others first (403).
    AssignedToSeveralProjects,
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (the access token is unknown, expired or revoked: renew it in its Secret)",
        403 => {
            " (the access token lacks a scope or role: it needs create_runner + manage_runner or api, and Maintainer/Owner rights on the project or group)"
        }
        410 => {
            " (registration tokens are disabled on this GitLab: use registration strategy UserRunner)"
        }
        429 => " (GitLab rate limit: requests are held back and retried)",
        500..=599 => " (GitLab server error: retried with backoff)",
        _ => "",
    }
}

impl GitLabError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GitLabError::Api { status, .. } => match status {
                401 => ErrorKind::Unauthorized,
                403 => ErrorKind::Forbidden,
                404 => ErrorKind::NotFound,
                410 => ErrorKind::Disabled,
                429 => ErrorKind::RateLimited,
                400 | 409 | 422 => ErrorKind::Rejected,
                _ => ErrorKind::ServerError,
            },
            GitLabError::Transport { .. } | GitLabError::Timeout { .. } => ErrorKind::Unreachable,
            GitLabError::Decode { .. } => ErrorKind::BadAnswer,
            GitLabError::Config(_) => ErrorKind::Config,
        }
    }

    /// The HTTP status, when GitLab answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitLabError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// GitLab's message, when it answered.
    pub fn message(&self) -> Option<&str> {
        match self {
            GitLabError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// 404: the object does not exist (for runners: gone). A 403 never counts as gone.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// 403: exists (or may exist) but this token may not do that.
    pub fn is_forbidden(&self) -> bool {
        self.kind() == ErrorKind::Forbidden
    }

    /// Worth retrying later without any change by the user: 429, 5xx, timeouts, transport.
    pub fn is_transient(&self) -> bool {
        match self {
            // Other statuses GitLab should not send (1xx-3xx) are not worth retrying.
            GitLabError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => self.kind() == ErrorKind::Unreachable,
        }
    }

    /// What a documented refusal means, so callers match on a kind instead of GitLab's words
    /// (GitLab's `lib/api/ci/runners.rb`: the assignment's uniqueness validation, and the
    /// deletion of a project runner that serves more than one project).
    pub fn refusal(&self) -> Option<Refusal> {
        let GitLabError::Api {
            endpoint,
            status,
            message,
            ..
        } = self
        else {
            return None;
        };
        match (endpoint.as_str(), status) {
            // The uniqueness validation of the assignment ("Runner has already been taken").
            ("POST /projects/:id/runners", 400) if message.contains("already been taken") => {
                Some(Refusal::AlreadyAssigned)
            }
            ("DELETE /runners/:id", 403) if message.contains("more than one project") => {
                Some(Refusal::AssignedToSeveralProjects)
            }
            _ => None,
        }
    }

    /// How long GitLab asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitLabError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Extracts GitLab's message from an error body: `{"message": "..."}`, `{"message": {...}}`,
/// `{"error": "...", "error_description": "..."}`, or plain text (Rack::Attack's 429).
pub fn parse_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.trim().chars().take(500).collect();
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Array(items) => format!(
                    "{k} {}",
                    items
                        .iter()
                        .map(|i| i
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                serde_json::Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    if let Some(m) = value.get("message") {
        return text(m);
    }
    if let Some(e) = value.get("error") {
        let mut s = text(e);
        if let Some(d) = value.get("error_description").and_then(|d| d.as_str()) {
            s = format!("{s}: {d}");
        }
        if let Some(scope) = value.get("scope").and_then(|d| d.as_str()) {
            s = format!("{s} (accepted scopes: {scope})");
        }
        return s;
    }
    body.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_every_shape() {
        assert_eq!(
            parse_message(r#"{"message":"404 Runner Not Found"}"#),
            "404 Runner Not Found"
        );
        assert_eq!(
            parse_message(
                r#"{"message":{"tags_list":["Too many tags specified. Please limit the number of tags to 50"]}}"#
            ),
            "tags_list Too many tags specified. Please limit the number of tags to 50"
        );
        assert_eq!(
            parse_message(r#"{"error":"id is invalid"}"#),
            "id is invalid"
        );
        assert_eq!(
            parse_message(
                r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api create_runner"}"#
            ),
            "insufficient_scope: The request requires higher privileges than provided by the access token. (accepted scopes: api create_runner)"
        );
        assert_eq!(parse_message("Retry later\n"), "Retry later");
        assert_eq!(
            parse_message(
                r#"{"message":{"error":"This endpoint has been requested too many times. Try again later."}}"#
            ),
            "error: This endpoint has been requested too many times. Try again later."
        );
    }

    #[test]
    fn forbidden_is_not_gone() {
        let e = GitLabError::Api {
            endpoint: "GET /runners/:id".into(),
            status: 403,
            message: "403 Forbidden - No access granted".into(),
            retry_after: None,
        };
        assert!(e.is_forbidden());
        assert!(!e.is_not_found());
        assert!(!e.is_transient());
        assert!(e.to_string().contains("lacks a scope or role"));
    }

    #[test]
    fn kinds_follow_the_status() {
        let api = |status| GitLabError::Api {
            endpoint: "POST /user/runners".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        for (status, kind) in [
            (400, ErrorKind::Rejected),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Rejected),
            (410, ErrorKind::Disabled),
            (422, ErrorKind::Rejected),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::ServerError),
            (503, ErrorKind::ServerError),
        ] {
            assert_eq!(api(status).kind(), kind, "{status}");
            assert_eq!(
                api(status).is_transient(),
                matches!(kind, ErrorKind::RateLimited | ErrorKind::ServerError)
            );
        }
        let timeout = GitLabError::Timeout {
            endpoint: "GET /runners/:id".into(),
            timeout: Duration::ZERO,
        };
        assert_eq!(timeout.kind(), ErrorKind::Unreachable);
        assert!(timeout.is_transient());
    }
}
