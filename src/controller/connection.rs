//! Connections: turning a GitLabConnection or ClusterGitLabConnection into a GitLab client, and
//! their own status (live check with `GET /version` and `GET /user`).

use crate::controller::reasons::Reason;
use crate::gitlab::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use secrecy::SecretString;
use serde_json::json;

use super::access_token;
use super::caches::Cached;
use super::context::Context;
use super::error::Error;
use crate::crd::{
    ClientSettings, ClusterGitLabConnection, ConnectionKind, ConnectionStatus, GitLabConnection,
    READY, condition, set_condition,
};
use crate::gitlab::{ClientConfig, GitLabApi, GitLabClient};

use super::gitlab_clients::{Lane, Resolved};

async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
    what: &str,
) -> Result<String, Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading Secret {ns}/{name}")))?
        .ok_or_else(|| Error::Connection(format!("{what}: Secret {ns}/{name} does not exist")))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .ok_or_else(|| {
            Error::Connection(format!("{what}: Secret {ns}/{name} has no key {key:?}"))
        })?;
    if value.is_empty() {
        return Err(Error::Connection(format!(
            "{what}: key {key:?} of Secret {ns}/{name} is empty"
        )));
    }
    Ok(value)
}

/// The connection's CA bundle (from a Secret or a ConfigMap in `ns_for_refs`), if it names
/// one.
async fn ca_bundle(
    ctx: &Context,
    settings: &ClientSettings,
    ns_for_refs: &str,
) -> Result<Option<String>, Error> {
    Ok(if let Some(r) = &settings.ca_bundle_secret_ref {
        Some(
            secret_value(
                &ctx.client,
                ns_for_refs,
                &r.name,
                r.key.as_deref().unwrap_or("ca.crt"),
                "the CA bundle",
            )
            .await?,
        )
    } else if let Some(r) = &settings.ca_bundle_config_map_ref {
        let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns_for_refs)
            .get_opt(&r.name)
            .await
            .map_err(Error::kube(format!(
                "reading ConfigMap {ns_for_refs}/{}",
                r.name
            )))?
            .ok_or_else(|| {
                Error::Connection(format!(
                    "the CA bundle: ConfigMap {ns_for_refs}/{} does not exist",
                    r.name
                ))
            })?;
        let k = r.key.as_deref().unwrap_or("ca.crt");
        Some(cm.data.and_then(|d| d.get(k).cloned()).ok_or_else(|| {
            Error::Connection(format!(
                "the CA bundle: ConfigMap {ns_for_refs}/{} has no key {k:?}",
                r.name
            ))
        })?)
    } else {
        None
    })
}

async fn build(
    ctx: &Context,
    key: String,
    url: &str,
    (token_ns, token_name, token_key): (&str, &str, &str),
    settings: &ClientSettings,
    ns_for_refs: &str,
) -> Result<Resolved, Error> {
    let token = secret_value(
        &ctx.client,
        token_ns,
        token_name,
        token_key,
        "the connection's access token",
    )
    .await?;
    let ca = ca_bundle(ctx, settings, ns_for_refs).await?;
    let rate = settings.rate_limit.clone();
    let rps = rate
        .as_ref()
        .and_then(|r| r.requests_per_second)
        .unwrap_or(10.0);
    let burst = rate
        .as_ref()
        .and_then(|r| r.burst)
        .unwrap_or(20)
        .clamp(1, 10_000) as u32;
    let timeout = Duration::from_secs(settings.timeout_seconds.unwrap_or(30).clamp(1, 600) as u64);
    // Rebuild only when something that shapes the client changed, so all Runners keep sharing
    // one rate limiter.
    let fingerprint = format!(
        "{url}|{}|{}|{rps}|{burst}|{timeout:?}|{:?}",
        super::secret::token_hash(&token),
        ca.as_deref()
            .map(super::secret::token_hash)
            .unwrap_or_default(),
        settings.insecure_skip_tls_verify
    );
    if let Some(client) = ctx.gitlab.client(&key, &fingerprint) {
        return Ok(Resolved {
            client,
            url: url.to_string(),
            limiter: ctx.gitlab.limiter(&key),
            key,
            lane: None,
        });
    }
    // Each connection keeps its own rate (and its queue across rebuilds); a 429 holds back
    // every connection using the same GitLab and token.
    let gate_key = format!(
        "{}|{}",
        url.trim_end_matches('/'),
        super::secret::token_hash(&token)
    );
    let gate = ctx.gitlab.limiter_for(&key, gate_key, rps, burst);
    let mut config = ClientConfig::new(url, SecretString::from(token));
    config.requests_per_second = rps;
    config.burst = burst;
    config.limiter = Some(gate.clone());
    config.timeout = timeout;
    config.ca_bundle_pem = ca.map(String::into_bytes);
    config.insecure_skip_tls_verify = settings.insecure_skip_tls_verify.unwrap_or(false);
    config.observer = Some(ctx.metrics.clone());
    let client: Arc<dyn GitLabApi> =
        Arc::new(GitLabClient::new(config).map_err(|e| Error::Connection(e.to_string()))?);
    ctx.gitlab.set_client(&key, fingerprint, client.clone());
    Ok(Resolved {
        client,
        url: url.to_string(),
        key,
        limiter: Some(gate),
        lane: None,
    })
}

/// The connection a Runner in `ns` refers to, if it may use it. Read from the connection
/// controller's cache where there is one; its token is read again only when the connection
/// changed since this process last resolved it (the connection's own checks re-read it).
pub async fn for_runner(
    ctx: &Context,
    ns: &str,
    kind: ConnectionKind,
    name: &str,
) -> Result<Resolved, Error> {
    match kind {
        ConnectionKind::GitLabConnection => {
            let conn = match ctx.caches.connection(ns, name) {
                Cached::Found(c) => c,
                Cached::NoCache => Api::<GitLabConnection>::namespaced(ctx.client.clone(), ns)
                    .get_opt(name)
                    .await
                    .map_err(Error::kube(format!("reading GitLabConnection {ns}/{name}")))?
                    .map(Arc::new),
            }
            .ok_or_else(|| Error::Connection(format!("GitLabConnection {ns}/{name} does not exist: create it, or point spec.connectionRef at an existing one")))?;
            if let Some(r) = reuse(ctx, &namespaced_key(&conn), &*conn) {
                return Ok(r);
            }
            resolve_namespaced(ctx, &conn).await
        }
        ConnectionKind::ClusterGitLabConnection => {
            let conn = match ctx.caches.cluster_connection(name) {
                Cached::Found(c) => c,
                Cached::NoCache => Api::<ClusterGitLabConnection>::all(ctx.client.clone())
                    .get_opt(name)
                    .await
                    .map_err(Error::kube(format!(
                        "reading ClusterGitLabConnection {name}"
                    )))?
                    .map(Arc::new),
            }
            .ok_or_else(|| {
                Error::Connection(format!("ClusterGitLabConnection {name} does not exist"))
            })?;
            if !namespace_allowed(ctx, &conn, ns).await? {
                return Err(Error::NotAllowed(format!(
                    "ClusterGitLabConnection {name} does not allow namespace {ns}: add it to the connection's spec.allowedNamespaces (names, or a label its namespace selector matches), or use another connection; nothing was done in GitLab"
                )));
            }
            if let Some(r) = reuse(ctx, &cluster_key(&conn), &*conn) {
                return Ok(r);
            }
            resolve_cluster(ctx, &conn).await
        }
    }
}

/// The connection `runner` names in spec.connectionRef (see `for_runner`).
pub async fn of_runner(ctx: &Context, runner: &crate::crd::Runner) -> Result<Resolved, Error> {
    let r = &runner.spec.connection_ref;
    let ns = runner.namespace().unwrap_or_default();
    for_runner(ctx, &ns, r.kind, &r.name).await
}

pub(crate) fn namespaced_key(conn: &GitLabConnection) -> String {
    format!(
        "GitLabConnection/{}/{}",
        conn.namespace().unwrap_or_default(),
        conn.name_any()
    )
}

pub(crate) fn cluster_key(conn: &ClusterGitLabConnection) -> String {
    format!("ClusterGitLabConnection/{}", conn.name_any())
}

/// The client resolved for this spec (generation) of the connection, if any. Status writes do
/// not count; a change of its token or CA Secret forgets the entry (`GitLabClients::forget_resolved`).
fn reuse<K: kube::Resource>(ctx: &Context, key: &str, conn: &K) -> Option<Resolved> {
    ctx.gitlab.resolved(key, conn.meta().generation?)
}

fn remember<K: kube::Resource>(ctx: &Context, conn: &K, r: &Result<Resolved, Error>) {
    if let (Ok(r), Some(g)) = (r, conn.meta().generation) {
        ctx.gitlab.remember_resolved(g, r);
    }
}

/// Resolves a namespaced connection: reads its token (and CA) and builds or reuses its client.
async fn resolve_namespaced(ctx: &Context, conn: &GitLabConnection) -> Result<Resolved, Error> {
    let s = &conn.spec;
    let ns = conn.namespace().unwrap_or_default();
    let r = build(
        ctx,
        namespaced_key(conn),
        &s.url,
        (
            &ns,
            &s.token_secret_ref.name,
            s.token_secret_ref.key.as_deref().unwrap_or("token"),
        ),
        &s.client,
        &ns,
    )
    .await;
    remember(ctx, conn, &r);
    r
}

async fn namespace_allowed(
    ctx: &Context,
    conn: &ClusterGitLabConnection,
    ns: &str,
) -> Result<bool, Error> {
    let Some(allowed) = &conn.spec.allowed_namespaces else {
        return Ok(true);
    };
    if allowed.names.iter().any(|n| n == ns) {
        return Ok(true);
    }
    if allowed.selector.is_none() {
        return Ok(false);
    }
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(ns)
        .await
        .map_err(Error::kube(format!("reading Namespace {ns}")))?;
    let labels = namespace.map(|n| n.labels().clone()).unwrap_or_default();
    Ok(super::tenancy::matches_namespace(allowed, ns, &labels))
}

/// What the live check learned.
pub struct Checked {
    pub version: String,
    pub user: String,
    /// None where GitLab cannot say (no `/personal_access_tokens/self`, OAuth tokens).
    pub token: Option<crate::gitlab::AccessTokenInfo>,
}

/// The live check: version, user and the token's own scopes and expiry.
async fn live_check(resolved: &Resolved) -> Result<Checked, Error> {
    let version = resolved
        .client
        .version()
        .await
        .map_err(Error::gitlab("checking the connection with GET /version"))?;
    let user = resolved.client.current_user().await.map_err(|e| match (e.kind(), e.message()) {
        (ErrorKind::Forbidden, Some(m)) if m.starts_with("insufficient_scope") => Error::Connection(
            "the access token lacks the read_api scope (GET /user was refused): give it create_runner, manage_runner and read_api, or api".into(),
        ),
        _ => Error::gitlab("checking the access token with GET /user")(e),
    })?;
    // Informational: a failure here never makes the connection unusable.
    let token = match resolved.client.access_token_self().await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "GET /personal_access_tokens/self failed; token expiry unknown");
            None
        }
    };
    Ok(Checked {
        version: version.version,
        user: user.username,
        token,
    })
}

fn connection_status(
    generation: Option<i64>,
    old: Option<&ConnectionStatus>,
    result: &Result<Checked, Error>,
    insecure: bool,
    warn_before: Duration,
    now: k8s_openapi::jiff::Timestamp,
) -> ConnectionStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let now = Time(now);
    match result {
        Ok(c) => {
            let (version, user) = (&c.version, &c.user);
            status.gitlab_version = Some(version.clone());
            status.username = Some(user.clone());
            let msg = if insecure {
                format!(
                    "GitLab {version} reachable as {user}; WARNING: TLS verification is disabled (insecureSkipTLSVerify)"
                )
            } else {
                format!("GitLab {version} reachable as {user}")
            };
            set_condition(
                &mut status.conditions,
                condition(READY, true, Reason::Connected, msg, generation, now.clone()),
            );
            status.token = c.token.as_ref().map(access_token::state);
            match &c.token {
                Some(t) => {
                    let (soon, reason, msg) = access_token::expiry(t, now.0, warn_before);
                    set_condition(
                        &mut status.conditions,
                        condition(
                            access_token::TOKEN_EXPIRING,
                            soon,
                            reason,
                            msg,
                            generation,
                            now.clone(),
                        ),
                    );
                    let missing = access_token::missing(&t.scopes);
                    let (ok, reason, msg) = if missing.is_empty() {
                        (
                            true,
                            Reason::Sufficient,
                            format!(
                                "the scopes {} allow everything the operator does",
                                t.scopes.join(", ")
                            ),
                        )
                    } else {
                        (
                            false,
                            Reason::MissingScopes,
                            format!(
                                "{}; give the token the missing scope, or api",
                                missing.join("; ")
                            ),
                        )
                    };
                    set_condition(
                        &mut status.conditions,
                        condition(access_token::TOKEN_SCOPES, ok, reason, msg, generation, now),
                    );
                }
                None => status.conditions.retain(|c| {
                    c.type_ != access_token::TOKEN_EXPIRING && c.type_ != access_token::TOKEN_SCOPES
                }),
            }
        }
        Err(e) => set_condition(
            &mut status.conditions,
            condition(READY, false, e.reason(), e.to_string(), generation, now),
        ),
    }
    super::standing::apply(&mut status.conditions);
    status
}

async fn write_status<K>(
    api: &Api<K>,
    obj: &K,
    status: ConnectionStatus,
    old: Option<&ConnectionStatus>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let unchanged = old.is_some_and(|o| {
        o.gitlab_version == status.gitlab_version
            && o.username == status.username
            && o.token == status.token
            && o.observed_generation == status.observed_generation
            && o.tenancy == status.tenancy
            && crate::crd::same_ignoring_time(&o.conditions, &status.conditions)
    });
    if unchanged {
        return Ok(());
    }
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply("runner-operator").force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube("writing the connection status"))?;
    Ok(())
}

/// Live check, status, requeue: the same for both connection kinds.
async fn check_and_report<K>(
    ctx: &Context,
    api: Api<K>,
    conn: &K,
    old: Option<&ConnectionStatus>,
    insecure: bool,
    resolved: Result<Resolved, Error>,
    tenancy: Option<crate::crd::TenancyStatus>,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let key = resolved.as_ref().map(|r| r.key.clone()).ok();
    let result = match resolved {
        Ok(r) => live_check(&r).await,
        Err(e) => Err(e),
    };
    let warn_before = ctx.settings.token_expiry_warning;
    let mut status = connection_status(
        conn.meta().generation,
        old,
        &result,
        insecure,
        warn_before,
        ctx.clock.now(),
    );
    status.tenancy = tenancy;
    if let Some(key) = key {
        let expiry = result
            .as_ref()
            .ok()
            .and_then(|c| c.token.as_ref())
            .and_then(|t| t.expires_at.as_deref())
            .and_then(access_token::expires_at);
        ctx.metrics
            .connection_token(&key, expiry.map(|t| t.as_second()));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == access_token::TOKEN_EXPIRING && c.status == "True")
    {
        // Every check (each resync) while within the window; repeats become one series.
        ctx.publish(
            &conn.object_ref(&()),
            kube::runtime::events::EventType::Warning,
            Reason::AccessTokenExpiring,
            "CheckConnection",
            c.message.clone(),
        )
        .await;
    }
    write_status(&api, conn, status, old).await?;
    Ok(Action::requeue(if result.is_ok() {
        ctx.resync()
    } else {
        Duration::from_secs(30)
    }))
}

pub async fn reconcile_namespaced(
    conn: Arc<GitLabConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = conn.namespace().unwrap_or_default();
    let resolved = resolve_namespaced(&ctx, &conn).await;
    let api = Api::<GitLabConnection>::namespaced(ctx.client.clone(), &ns);
    check_and_report(
        &ctx,
        api,
        &*conn,
        conn.status.as_ref(),
        conn.spec.client.insecure_skip_tls_verify.unwrap_or(false),
        resolved,
        None,
    )
    .await
}

pub async fn reconcile_cluster(
    conn: Arc<ClusterGitLabConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let resolved = resolve_cluster(&ctx, &conn).await;
    let api = Api::<ClusterGitLabConnection>::all(ctx.client.clone());
    let tenancy = tenancy_status(&ctx, &conn).await?;
    check_and_report(
        &ctx,
        api,
        &*conn,
        conn.status.as_ref(),
        conn.spec.client.insecure_skip_tls_verify.unwrap_or(false),
        resolved,
        Some(tenancy),
    )
    .await
}

/// The Runners using a ClusterGitLabConnection, counted per deciding tenancy rule (from the
/// Runner cache; the namespaces' labels are listed once when a rule has a selector).
async fn tenancy_status(
    ctx: &Context,
    conn: &ClusterGitLabConnection,
) -> Result<crate::crd::TenancyStatus, Error> {
    use std::collections::BTreeMap;
    let name = conn.name_any();
    let tenancy = conn.spec.tenancy.as_ref();
    let namespaces: Vec<String> = ctx
        .caches
        .runners()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| {
            r.spec.connection_ref.kind == ConnectionKind::ClusterGitLabConnection
                && r.spec.connection_ref.name == name
        })
        .map(|r| r.namespace().unwrap_or_default())
        .collect();
    // Each namespace read once (the chart grants get on namespaces, not list).
    let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if super::tenancy::needs_labels(tenancy) {
        for ns in &namespaces {
            if labels.contains_key(ns) {
                continue;
            }
            let l = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(ns)
                .await
                .map_err(Error::kube(format!("reading Namespace {ns}")))?
                .map(|n| n.labels().clone())
                .unwrap_or_default();
            labels.insert(ns.clone(), l);
        }
    }
    let none = BTreeMap::new();
    let mut counts: Vec<(String, i64)> = match tenancy {
        Some(t) => t
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (super::tenancy::rule_name(r, i), 0))
            .collect(),
        None => vec![(super::tenancy::default_rule().name.unwrap_or_default(), 0)],
    };
    let mut unmatched = 0;
    for ns in &namespaces {
        let l = labels.get(ns).unwrap_or(&none);
        match super::tenancy::rule_for(tenancy, ns, l) {
            Some((rule, _)) => match counts.iter_mut().find(|(n, _)| *n == rule) {
                Some((_, c)) => *c += 1,
                None => counts.push((rule, 1)),
            },
            None => unmatched += 1,
        }
    }
    if tenancy.is_some() {
        counts.push(("unmatched".into(), unmatched));
    }
    Ok(crate::crd::TenancyStatus {
        rules: tenancy.map_or(0, |t| t.rules.len() as i64),
        runners: counts
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A ClusterGitLabConnection's client (its token Secret defaults to the operator's namespace).
async fn resolve_cluster(ctx: &Context, conn: &ClusterGitLabConnection) -> Result<Resolved, Error> {
    let s = &conn.spec;
    let token_ns = s
        .token_secret_ref
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.settings.namespace.clone());
    let r = build(
        ctx,
        cluster_key(conn),
        &s.url,
        (
            &token_ns,
            &s.token_secret_ref.name,
            s.token_secret_ref.key.as_deref().unwrap_or("token"),
        ),
        &s.client,
        &token_ns,
    )
    .await
    .map(|mut r| {
        r.lane = Some(Arc::new(Lane {
            connection: conn.name_any(),
            tenancy: s.tenancy.clone(),
        }));
        r
    });
    remember(ctx, conn, &r);
    r
}

#[cfg(test)]
mod tests {
    use super::super::tenancy::selector_admits;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn namespace_selectors_follow_kubernetes() {
        let labels = [("team".to_string(), "ci".to_string())].into();
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        for (selector, want) in [
            (serde_json::json!({}), true),
            (serde_json::json!({"matchLabels": {"team": "ci"}}), true),
            (serde_json::json!({"matchLabels": {"team": "web"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["ci", "web"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["ci"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "Like", "values": ["c"]}]}),
                false,
            ),
        ] {
            assert_eq!(
                selector_admits(&sel(selector.clone()), &labels),
                want,
                "{selector}"
            );
        }
    }
}
