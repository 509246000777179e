//! Connections: problems as conditions, GitLab's refusals, the access token's scopes and
//! expiry, jobs through the connection, watched namespaces.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use runner_operator::crd::{GitLabConnection, Runner};
use serde_json::{Value, json};

use crate::cluster::Backend;

use super::*;

pub(crate) async fn connection_problems_are_conditions_and_nothing_happens_in_gitlab(
    backend: Backend,
) {
    let env = Env::start(backend).await;
    env.apply(
        "noconn",
        json!({"connectionRef": {"name": "missing"}, "runnerType": "instance_type"}),
    )
    .await;
    let msg = env.condition("noconn", "Ready", "ConnectionNotReady").await;
    assert!(
        msg.contains("GitLabConnection ci/missing does not exist"),
        "{msg}"
    );
    // A cluster connection limited to other namespaces.
    let ns: Value = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let other: Api<Runner> = Api::namespaced(env.client.clone(), "other");
    let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "outsider", "namespace": "other"},
        "spec": {"connectionRef": {"kind": "ClusterGitLabConnection", "name": "jihulab"}, "runnerType": "group_type", "group": "platform"}})).unwrap();
    other.create(&PostParams::default(), &r).await.unwrap();
    let msg = env
        .wait("outsider refused", || async {
            other
                .get("outsider")
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == "ConnectionNotAllowed")
                .map(|c| c.message)
        })
        .await;
    assert!(msg.contains("does not allow namespace other"), "{msg}");
    assert!(env.gitlab.runners().is_empty());
    // Label the namespace: the selector admits it and the Runner converges.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"gitlab-runners": "allowed"}}})),
        )
        .await
        .unwrap();
    env.wait("outsider ready", || async {
        other
            .get("outsider")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
            .map(|_| ())
    })
    .await;
    // Creating the missing connection re-queues its Runners.
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "missing", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-admin-token"}}});
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    env.ready("noconn").await;
    // Connections report their live check.
    let c = Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci");
    let st = env
        .wait("connection ready", || async {
            c.get("gitlab")
                .await
                .ok()?
                .status
                .filter(|s| s.gitlab_version.is_some())
        })
        .await;
    assert_eq!(
        (st.gitlab_version.as_deref(), st.username.as_deref()),
        (Some("18.6.0-ee"), Some("platform-bot"))
    );
}

pub(crate) async fn gitlab_refusals_become_conditions_with_gitlabs_message(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("unknown", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/nope"})).await;
    let msg = env.condition("unknown", "Ready", "InvalidSpec").await;
    assert!(msg.contains("\"platform/nope\" does not exist"), "{msg}");
    // Legacy registration where GitLab disabled registration tokens (410).
    let token = env
        .gitlab
        .project_registration_token("platform/api")
        .unwrap();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "reg"}, "stringData": {"token": token}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env.apply("legacy", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "registration": {"strategy": "RegistrationToken", "registrationTokenSecretRef": {"name": "reg"}}})).await;
    let msg = env
        .condition("legacy", "Ready", "RegistrationTokensDisabled")
        .await;
    assert!(
        msg.contains("registration tokens are disabled") && msg.contains("UserRunner"),
        "{msg}"
    );
    env.gitlab
        .update_settings(|s| s.allow_runner_registration_token = true);
    let st = env.ready("legacy").await.status.unwrap();
    assert!(
        env.gitlab_runner(st.runner_id.unwrap())
            .unwrap()
            .token
            .starts_with("t3_")
    );
    // Scope too small for assignments: GitLab's own words reach the condition.
    let scoped: Secret = serde_json::from_value(
        json!({"metadata": {"name": "scoped"}, "stringData": {"token": "glpat-emulator-scoped"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &scoped)
        .await
        .unwrap();
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "scoped", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "scoped"}}});
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    let mut spec = project_spec();
    spec["connectionRef"] = json!({"name": "scoped"});
    env.apply("scoped", spec).await;
    let msg = env.condition("scoped", "Ready", "GitLabForbidden").await;
    assert!(
        msg.contains("insufficient_scope") && msg.contains("accepted scopes: api"),
        "{msg}"
    );
}

/// The connection's own access token: scopes and expiry in status, conditions that say what is
/// missing or coming, a Warning event before expiry; GitLab without the endpoint is fine.
pub(crate) async fn connection_token_scopes_and_expiry_are_reported(backend: Backend) {
    let env = Env::start(backend).await;
    let conns: Api<GitLabConnection> = Api::namespaced(env.client.clone(), "ci");
    let in_days = |d: i64| {
        let t = k8s_openapi::jiff::Timestamp::now()
            + k8s_openapi::jiff::SignedDuration::from_hours(24 * d);
        t.to_string()[..10].to_string()
    };
    let recheck = |name: &'static str, seconds: i64| {
        let conns = conns.clone();
        async move {
            conns
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"timeoutSeconds": seconds}})),
                )
                .await
                .unwrap();
        }
    };
    let condition = |name: &'static str, type_: &'static str, generation: i64| {
        let (env, conns) = (&env, conns.clone());
        async move {
            env.wait(&format!("{name} {type_}"), || async {
                let c = conns.get(name).await.ok()?;
                let st = c.status?;
                (st.observed_generation >= Some(generation)).then_some(())?;
                let cond = st.conditions.iter().find(|c| c.type_ == type_).cloned()?;
                Some((st.token, cond))
            })
            .await
        }
    };
    // Expiring in 10 days: within the 30-day window.
    env.gitlab
        .set_token_expiry("glpat-emulator-bot", Some(&in_days(10)));
    recheck("gitlab", 31).await;
    let (token, c) = condition("gitlab", "TokenExpiring", 2).await;
    let token = token.expect("token in status");
    assert_eq!(token.scopes, vec!["api"]);
    assert_eq!(token.expires_at.as_deref(), Some(in_days(10).as_str()));
    assert!(token.active);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ExpiresSoon")
    );
    assert!(
        c.message.contains("(in 9 days)") || c.message.contains("(in 10 days)"),
        "{}",
        c.message
    );
    let ev = env.has_event("gitlab", "AccessTokenExpiring").await;
    assert_eq!(ev.0, "Warning");
    let (_, scopes) = condition("gitlab", "TokenScopes", 2).await;
    assert_eq!(
        (scopes.status.as_str(), scopes.reason.as_str()),
        ("True", "Sufficient")
    );

    // Far from expiry: no warning.
    env.gitlab
        .set_token_expiry("glpat-emulator-bot", Some(&in_days(200)));
    recheck("gitlab", 32).await;
    let (_, c) = condition("gitlab", "TokenExpiring", 3).await;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NotExpiringSoon")
    );

    // Narrow scopes: the feature they lack is named.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "ci");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "scoped-token"}, "stringData": {"token": "glpat-emulator-scoped"}})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let scoped: GitLabConnection = serde_json::from_value(json!({"metadata": {"name": "scoped"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "scoped-token"}}})).unwrap();
    conns.create(&PostParams::default(), &scoped).await.unwrap();
    let (_, c) = condition("scoped", "TokenScopes", 1).await;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "MissingScopes")
    );
    assert!(
        c.message.contains("spec.assignedProjects") && c.message.contains("needs the scope api"),
        "{}",
        c.message
    );

    // A GitLab without the endpoint (before 15.5): no token facts, still Ready.
    env.gitlab
        .update_settings(|s| s.personal_access_token_self = false);
    recheck("gitlab", 33).await;
    env.wait("token facts gone", || async {
        let st = conns.get("gitlab").await.ok()?.status?;
        (st.observed_generation == Some(4)
            && st.token.is_none()
            && st
                .conditions
                .iter()
                .all(|c| c.type_ != "TokenExpiring" && c.type_ != "TokenScopes")
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"))
        .then_some(())
    })
    .await;

    // Expired: GitLab refuses it, and Ready says so.
    env.gitlab
        .seed(&gitlab_emulator::Seed {
            tokens: vec![gitlab_emulator::SeedToken {
                token: "glpat-emulator-old".into(),
                user: "platform-bot".into(),
                scopes: vec!["api".into()],
                expired: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    secrets
        .patch(
            "scoped-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "glpat-emulator-old"}})),
        )
        .await
        .unwrap();
    let (_, c) = condition("scoped", "Ready", 1).await;
    let c = if c.status == "False" {
        c
    } else {
        env.wait("scoped not Ready", || async {
            conns
                .get("scoped")
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .await
    };
    assert_eq!(c.reason, "GitLabUnauthorized");
    assert!(c.message.contains("expired"), "{}", c.message);
}

/// `runner-operator jobs`: the runner's recent jobs through its connection, newest first,
/// filtered and limited, as a table or JSON — and not one write anywhere.
pub(crate) async fn jobs_are_listed_through_the_runners_connection(backend: Backend) {
    use gitlab_emulator::JobRec;
    use runner_operator::jobs::{Format, list, render};
    let env = Env::start(backend).await;
    env.apply("busy", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let rid = env.ready("busy").await.status.unwrap().runner_id.unwrap();
    let api = env.gitlab.project_id("platform/api").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (id, status, duration) in [
        (101, "success", Some(61.0)),
        (102, "failed", Some(5.0)),
        (103, "success", Some(3700.0)),
        (104, "failed", Some(12.0)),
        (105, "running", None),
    ] {
        env.gitlab.add_job(
            rid,
            JobRec {
                id,
                status: status.into(),
                project_id: api,
                git_ref: Some(format!("feature-{id}")),
                pipeline_id: Some(id * 10),
                started_at: Some(now - (200 - id) * 60_000),
                duration,
                ..Default::default()
            },
        );
    }
    let before = env.gitlab.request_counts();
    let newest = list(env.client.clone(), "ci/busy", None, 3).await.unwrap();
    assert_eq!(
        newest.iter().map(|j| j.id).collect::<Vec<_>>(),
        [105, 104, 103]
    );
    assert_eq!(newest[1].project.as_deref(), Some("platform/api"));
    assert_eq!(newest[1].git_ref.as_deref(), Some("feature-104"));
    assert_eq!(newest[1].pipeline, Some(1040));
    let failed = list(env.client.clone(), "ci/busy", Some("failed"), 20)
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|j| j.id).collect::<Vec<_>>(), [104, 102]);
    let table = render(&failed, Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("DURATION"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("104")
            && lines[1].contains("platform/api")
            && lines[1].ends_with("12s"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&render(&newest[..1], Format::Json)).unwrap();
    let keys: Vec<&str> = json[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The JSON output's schema, pinned (serde_json lists keys sorted).
    assert_eq!(
        keys,
        [
            "duration",
            "id",
            "name",
            "pipeline",
            "project",
            "ref",
            "startedAt",
            "status",
            "webUrl"
        ]
    );
    assert!(
        json[0]["webUrl"]
            .as_str()
            .unwrap()
            .ends_with("/platform/api/-/jobs/105")
    );
    let after = env.gitlab.request_counts();
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0, "read-only: {after:?}");
    let e = list(env.client.clone(), "ci/nope", None, 5)
        .await
        .unwrap_err();
    assert!(e.contains("Runner ci/nope does not exist"), "{e}");
    let e = list(env.client.clone(), "busy", None, 5).await.unwrap_err();
    assert!(e.contains("NAMESPACE/NAME"), "{e}");
}

pub(crate) async fn watch_namespaces_limit_what_is_reconciled(backend: Backend) {
    let env = Env::start_in(backend, vec!["ci".into(), "team-b".into()]).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    for ns in ["team-b", "elsewhere"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "gitlab", "namespace": ns},
            "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "t"}}});
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "t", "namespace": ns}, "stringData": {"token": "glpat-emulator-bot"}})).unwrap();
        Api::<Secret>::namespaced(env.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(conn).unwrap(),
            )
            .await
            .unwrap();
        let r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": ns},
            "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}})).unwrap();
        Api::<Runner>::namespaced(env.client.clone(), ns)
            .create(&PostParams::default(), &r)
            .await
            .unwrap();
    }
    env.apply("in-ci", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    env.ready("in-ci").await;
    let team_b: Api<Runner> = Api::namespaced(env.client.clone(), "team-b");
    env.wait("team-b reconciled", || async {
        team_b.get("r").await.ok()?.status?.runner_id.map(|_| ())
    })
    .await;
    // Resyncs of the watched Runners went by; the one elsewhere was never touched.
    env.passes(2).await;
    let elsewhere = Api::<Runner>::namespaced(env.client.clone(), "elsewhere")
        .get("r")
        .await
        .unwrap();
    assert!(
        elsewhere.status.is_none() && elsewhere.metadata.finalizers.is_none(),
        "an unwatched namespace is left alone"
    );
    assert_eq!(env.gitlab.runners().len(), 2);
}
