//! The HTTP client: authentication, rate limit, retries, pagination, one function per endpoint.
//!
//! Retry rules:
//! - GET, PUT and DELETE are idempotent: retried with capped, jittered exponential backoff on 5xx,
//!   timeouts and connection errors. (A retried DELETE that already succeeded answers 404, which
//!   callers treat as done.)
//! - POSTs are not retried when GitLab may have processed them — a second
//!   `POST /user/runners` would register a second runner, a second reset would kill the token the
//!   first one returned. They are retried only when the request surely never reached GitLab (the
//!   connection could not be opened) or GitLab refused it unprocessed (429). A create stays safe
//!   beyond that because the controller marks every runner it creates and looks for its marked
//!   runner before creating again, so a lost answer costs a lookup, not a duplicate.
//! - 429 (any method): every caller of the connection waits `Retry-After` (else `RateLimit-Reset`,
//!   else backoff), then the request is sent again.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{GitLabError, parse_message};
use super::ratelimit::RateLimiter;

mod endpoints;
#[cfg(test)]
mod tests;

/// Characters kept as-is in a path segment; `/` in project paths becomes `%2F` as GitLab requires.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Page size for list calls (GitLab's maximum).
pub const PER_PAGE: u32 = 100;

/// Backoff and retry limits.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt for 5xx/timeouts/connection errors.
    pub max_retries: u32,
    /// Retries after 429 answers.
    pub max_rate_limited_retries: u32,
    /// First backoff step.
    pub base: Duration,
    /// Longest backoff step.
    pub cap: Duration,
    /// Longest wait honoured from `Retry-After`/`RateLimit-Reset`.
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            max_rate_limited_retries: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential steps from `base` to `cap`, each waited in [step/2, step) (jitter).
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base / 2)
            .with_max_delay(self.cap / 2)
            .with_jitter()
            .with_max_times((self.max_retries + self.max_rate_limited_retries) as usize)
    }
}

/// How an attempt failed: worth another (by the retry rules) or not at all.
enum Failure {
    Retryable {
        error: GitLabError,
        /// The request never left (connection refused): safe to repeat even a POST.
        never_sent: bool,
    },
    Final(GitLabError),
}

impl Failure {
    fn error(&self) -> &GitLabError {
        match self {
            Failure::Retryable { error, .. } | Failure::Final(error) => error,
        }
    }

    fn into_error(self) -> GitLabError {
        match self {
            Failure::Retryable { error, .. } | Failure::Final(error) => error,
        }
    }
}

/// Receives request outcomes (for metrics); knows nothing of where they go.
pub trait Observer: Send + Sync {
    /// One HTTP attempt finished: its endpoint template, status (None: no answer), duration.
    fn request(&self, endpoint: &str, status: Option<u16>, took: Duration);
    /// A request waited for the rate limit (or a 429 pause).
    fn rate_limited(&self, waited: Duration);
}

/// Everything needed to talk to one GitLab instance.
pub struct ClientConfig {
    /// Instance URL, e.g. `https://gitlab.example.com` (`/api/v4` is appended).
    pub base_url: String,
    /// Personal, group or project access token.
    pub token: SecretString,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Burst size.
    pub burst: u32,
    /// Extra PEM CA certificates to trust.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Accept any certificate (reported loudly by the controller).
    pub insecure_skip_tls_verify: bool,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Metrics hook.
    pub observer: Option<Arc<dyn Observer>>,
    /// A limiter shared with other clients of the same GitLab and token (GitLab limits per
    /// user, and a 429 must hold back all of them); absent: one of the client's own from
    /// `requests_per_second` and `burst`.
    pub limiter: Option<Arc<RateLimiter>>,
}

impl ClientConfig {
    /// Defaults: 30 s timeout, 10 requests/s, burst 20.
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            token,
            timeout: Duration::from_secs(30),
            requests_per_second: 10.0,
            burst: 20,
            ca_bundle_pem: None,
            insecure_skip_tls_verify: false,
            retry: RetryPolicy::default(),
            observer: None,
            limiter: None,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &"[REDACTED]")
            .field("timeout", &self.timeout)
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

/// A GitLab Runners API client. Cheap to clone; clones share the rate limiter.
#[derive(Clone)]
pub struct GitLabClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api: Url,
    token: SecretString,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabClient")
            .field("api", &self.inner.api.as_str())
            .finish_non_exhaustive()
    }
}

/// Who authenticates a request.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// The connection's access token in `PRIVATE-TOKEN`.
    User,
    /// Runner-facing endpoints: the runner or registration token travels in the JSON body, never
    /// in the URL (URLs end up in error messages and proxy logs).
    None,
}

struct Call<'a> {
    method: Method,
    endpoint: &'a str,
    url: Url,
    body: Option<serde_json::Value>,
    auth: Auth,
}

impl GitLabClient {
    /// Builds a client; fails on a bad URL or CA bundle.
    pub fn new(config: ClientConfig) -> Result<Self, GitLabError> {
        crate::tls::install_crypto_provider();
        let base = config.base_url.trim_end_matches('/');
        let api = Url::parse(&format!("{base}/api/v4/")).map_err(|e| {
            GitLabError::Config(format!("url {:?} is not a valid URL: {e}", config.base_url))
        })?;
        if !matches!(api.scheme(), "http" | "https") {
            return Err(GitLabError::Config(format!(
                "url {:?} must be http(s)",
                config.base_url
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("runner-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| GitLabError::Config(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(GitLabError::Config(
                    "the CA bundle holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if config.insecure_skip_tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| GitLabError::Config(format!("building the HTTP client: {e}")))?;
        Ok(GitLabClient {
            inner: Arc::new(Inner {
                http,
                api,
                token: config.token,
                limiter: config.limiter.unwrap_or_else(|| {
                    Arc::new(RateLimiter::new(config.requests_per_second, config.burst))
                }),
                retry: config.retry,
                timeout: config.timeout,
                observer: config.observer,
            }),
        })
    }

    /// The connection's rate limiter (shared by every clone).
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    fn url(&self, path: &str, query: &impl Serialize) -> Result<Url, GitLabError> {
        let mut url = self
            .inner
            .api
            .join(path.trim_start_matches('/'))
            .map_err(|e| GitLabError::Config(format!("building URL for {path}: {e}")))?;
        append_query(&mut url, query);
        Ok(url)
    }

    /// One request with retries (backon): 429s hold every caller of the connection back until
    /// GitLab's `Retry-After` (a floor under the backoff); 5xx, timeouts and connection errors
    /// are retried for requests that are safe to repeat (or were never sent).
    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, GitLabError> {
        let idempotent = call.method != Method::POST;
        let retry = &self.inner.retry;
        let (mut failures, mut throttled) = (0u32, 0u32);
        let retryable = |f: &Failure| match f {
            Failure::Final(_) => false,
            Failure::Retryable { error, never_sent } => {
                if error.status() == Some(429) {
                    throttled += 1;
                    throttled <= retry.max_rate_limited_retries
                } else if error.is_transient() && (idempotent || *never_sent) {
                    failures += 1;
                    failures <= retry.max_retries
                } else {
                    false
                }
            }
        };
        (|| self.attempt(&call))
            .retry(retry.backoff())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .adjust(|f: &Failure, wait| match f.error().retry_after() {
                Some(floor) if f.error().status() == Some(429) => {
                    Some(wait.unwrap_or_default().max(floor).min(retry.max_rate_limit_wait))
                }
                _ => wait,
            })
            .notify(|f: &Failure, wait| {
                let error = f.error();
                if error.status() == Some(429) {
                    tracing::warn!(
                        endpoint = call.endpoint,
                        wait_ms = wait.as_millis() as u64,
                        "GitLab rate limit hit; holding back all requests of this connection"
                    );
                    self.inner.limiter.pause_for(wait);
                } else {
                    tracing::debug!(endpoint = call.endpoint, error = %error, wait_ms = wait.as_millis() as u64, "GitLab failed or unreachable; retrying");
                }
            })
            .await
            .map_err(Failure::into_error)
    }

    /// One attempt, after the rate limit let it go.
    async fn attempt(&self, call: &Call<'_>) -> Result<reqwest::Response, Failure> {
        let waited = self.inner.limiter.acquire().await;
        if let (Some(o), false) = (&self.inner.observer, waited.is_zero()) {
            o.rate_limited(waited);
        }
        let started = tokio::time::Instant::now();
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone());
        if call.auth == Auth::User {
            let mut value =
                HeaderValue::from_str(self.inner.token.expose_secret()).map_err(|_| {
                    Failure::Final(GitLabError::Config(
                        "the access token contains characters not allowed in a header".into(),
                    ))
                })?;
            value.set_sensitive(true);
            req = req.header("PRIVATE-TOKEN", value);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let sent = req.send().await;
        if let Some(o) = &self.inner.observer {
            o.request(
                call.endpoint,
                sent.as_ref().ok().map(|r| r.status().as_u16()),
                started.elapsed(),
            );
        }
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(resp),
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let body = resp.text().await.unwrap_or_default();
                Err(Failure::Retryable {
                    error: GitLabError::Api {
                        endpoint: call.endpoint.to_string(),
                        status: status.as_u16(),
                        message: parse_message(&body),
                        retry_after,
                    },
                    never_sent: false,
                })
            }
            Err(e) => {
                let never_sent = e.is_connect();
                let cause = super::cause::classify(&e);
                let error = if e.is_timeout() {
                    GitLabError::Timeout {
                        endpoint: call.endpoint.to_string(),
                        timeout: self.inner.timeout,
                    }
                } else if let super::cause::Cause::Certificate(_) = cause {
                    // Not transient: say which CA would be needed, and stop.
                    let issuer = super::cause::presented_issuer(&call.url).await;
                    return Err(Failure::Final(GitLabError::Transport {
                        endpoint: call.endpoint.to_string(),
                        detail: super::cause::explain(&cause, &call.url, issuer.as_deref(), ""),
                        source: e.without_url(),
                    }));
                } else {
                    let raw = super::cause::chain(&e);
                    GitLabError::Transport {
                        endpoint: call.endpoint.to_string(),
                        detail: super::cause::explain(&cause, &call.url, None, &raw),
                        source: e.without_url(),
                    }
                };
                Err(Failure::Retryable { error, never_sent })
            }
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, GitLabError> {
        let endpoint = call.endpoint.to_string();
        let resp = self.send(call).await?;
        decode(&endpoint, resp).await
    }

    async fn empty(&self, call: Call<'_>) -> Result<(), GitLabError> {
        self.send(call).await.map(|_| ())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        query: &impl Serialize,
    ) -> Result<T, GitLabError> {
        let url = self.url(path, query)?;
        self.json(Call {
            method: Method::GET,
            endpoint,
            url,
            body: None,
            auth: Auth::User,
        })
        .await
    }

    /// GETs every page (per_page 100), following `X-Next-Page`, else the `Link: rel="next"` header.
    async fn get_all<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        query: &impl Serialize,
    ) -> Result<Vec<T>, GitLabError> {
        let mut url = self.url(path, query)?;
        set_param(&mut url, "per_page", &PER_PAGE.to_string());
        set_param(&mut url, "page", "1");
        let mut all = Vec::new();
        for _ in 0..100_000 {
            let resp = self
                .send(Call {
                    method: Method::GET,
                    endpoint,
                    url: url.clone(),
                    body: None,
                    auth: Auth::User,
                })
                .await?;
            let next_page = header_str(resp.headers(), "x-next-page").filter(|s| !s.is_empty());
            let next_link = next_link(resp.headers());
            let page: Vec<T> = decode(endpoint, resp).await?;
            all.extend(page);
            if let Some(next) = next_page {
                set_param(&mut url, "page", &next);
            } else if let Some(link) = next_link {
                url = Url::parse(&link).map_err(|e| GitLabError::Decode {
                    endpoint: endpoint.into(),
                    detail: format!("bad Link header: {e}"),
                })?;
            } else {
                return Ok(all);
            }
        }
        Err(GitLabError::Decode {
            endpoint: endpoint.into(),
            detail: "pagination did not end".into(),
        })
    }

    fn call_with_body(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
        auth: Auth,
    ) -> Result<Call<'static>, GitLabError> {
        Ok(Call {
            method,
            endpoint,
            url: self.url(path, &())?,
            body,
            auth,
        })
    }
}

/// Percent-encodes an id or full path as one URL path segment.
pub fn segment(id_or_path: &str) -> String {
    utf8_percent_encode(id_or_path, SEGMENT).to_string()
}

async fn decode<T: DeserializeOwned>(
    endpoint: &str,
    resp: reqwest::Response,
) -> Result<T, GitLabError> {
    let bytes = resp.bytes().await.map_err(|e| GitLabError::Transport {
        detail: super::cause::chain(&e),
        endpoint: endpoint.into(),
        source: e.without_url(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| GitLabError::Decode {
        endpoint: endpoint.into(),
        detail: e.to_string(),
    })
}

fn append_query(url: &mut Url, query: &impl Serialize) {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(query) else {
        return;
    };
    let mut pairs = url.query_pairs_mut();
    for (k, v) in map {
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => {
                pairs.append_pair(&k, &s);
            }
            other => {
                pairs.append_pair(&k, &other.to_string());
            }
        }
    }
    drop(pairs);
    if url.query() == Some("") {
        url.set_query(None);
    }
}

fn set_param(url: &mut Url, key: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (k, v) in &kept {
        pairs.append_pair(k, v);
    }
    pairs.append_pair(key, value);
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// `Retry-After` (seconds), else `RateLimit-Reset` (Unix seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(value) = header_str(headers, "retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        // The HTTP-date form, e.g. `Wed, 21 Oct 2026 07:28:00 GMT`.
        if let Ok(at) = k8s_openapi::jiff::fmt::rfc2822::parse(&value) {
            let secs = at.timestamp().as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
            return Some(Duration::from_secs(secs.max(1) as u64));
        }
    }
    let reset = header_str(headers, "ratelimit-reset").and_then(|s| s.parse::<u64>().ok())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = header_str(headers, "link")?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}
