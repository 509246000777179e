//! Tokens: recovery, rotation (requested, scheduled, before expiry, after expiry), consumers
//! rolled onto new tokens, foreign Secrets, no token in logs, events or status.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use runner_operator::controller::{self};
use serde_json::json;

use crate::cluster::Backend;

use super::*;

pub(crate) async fn tokens_are_recovered_rotated_on_request_and_on_schedule(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("tok", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let id = env.ready("tok").await.status.unwrap().runner_id.unwrap();
    let secrets = Api::<Secret>::namespaced(env.client.clone(), "ci");
    let first = env.secret_token("tok-runner-token").await.unwrap();
    // Secret deleted → reset and rewritten.
    secrets
        .delete("tok-runner-token", &DeleteParams::default())
        .await
        .unwrap();
    let second = env
        .wait("secret recovered", || async {
            env.secret_token("tok-runner-token")
                .await
                .filter(|t| *t != first)
        })
        .await;
    assert!(!env.token_works(&first).await && env.token_works(&second).await);
    assert_eq!(env.gitlab_runner(id).unwrap().token, second);
    env.has_event("tok", "TokenRotated").await;
    // Token edited by hand → recovered (seen through the hash, without calling verify).
    let verifies = env.gitlab.request_count("POST /runners/verify");
    secrets
        .patch(
            "tok-runner-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"runner-token": "typed-by-hand"}})),
        )
        .await
        .unwrap();
    let third = env
        .wait("hand edit recovered", || async {
            env.secret_token("tok-runner-token")
                .await
                .filter(|t| *t != second && t != "typed-by-hand")
        })
        .await;
    assert!(env.token_works(&third).await);
    assert_eq!(
        env.gitlab.request_count("POST /runners/verify"),
        verifies + 1,
        "only the test's own verify call"
    );
    // On request: once per annotation value.
    let resets = || {
        env.gitlab
            .request_count("POST /runners/:id/reset_authentication_token")
    };
    let before = resets();
    env.runners().patch("tok", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "r1"}}}))).await.unwrap();
    env.wait("requested rotation", || async {
        env.status("tok")
            .await?
            .handled_rotate_request
            .filter(|v| v == "r1")
            .map(|_| ())
    })
    .await;
    // Two more resyncs of this (only) Runner: a second reset would have happened by now.
    env.passes(2).await;
    assert_eq!(resets(), before + 1, "one rotation per annotation value");
    assert_eq!(
        env.runners()
            .get("tok")
            .await
            .unwrap()
            .status
            .unwrap()
            .last_rotation_reason
            .as_deref(),
        Some("Requested")
    );
    // On an interval (10m at least): the token was issued an hour ago, as far as status says.
    env.runners()
        .patch_status(
            "tok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"tokenIssuedAt": "2020-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    env.apply("tok", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tokenRotation": {"interval": "10m"}})).await;
    env.wait("interval rotation", || async {
        env.status("tok")
            .await?
            .last_rotation_reason
            .filter(|r| r == "Interval")
            .map(|_| ())
    })
    .await;
    let token = env.secret_token("tok-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
}

pub(crate) async fn expiring_tokens_rotate_before_expiry_and_expiry_is_reported(backend: Backend) {
    let env = Env::start(backend).await;
    env.gitlab
        .update_settings(|s| s.project_runner_token_expiration_interval = Some(3600));
    env.apply("exp", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let st = env.ready("exp").await.status.unwrap();
    assert!(st.token_expires_at.is_some(), "expiry is reported");
    let s = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("exp-runner-token")
        .await
        .unwrap();
    assert!(s.data.unwrap().contains_key("token-expires-at"));
    // A third of the hour before expiry: rotated once 40 minutes have passed, long before it
    // dies. Nothing is due earlier (two passes later it is still the creation's token).
    env.advance(Duration::from_secs(30 * 60));
    env.passes(2).await;
    assert_eq!(
        env.status("exp")
            .await
            .unwrap()
            .last_rotation_reason
            .as_deref(),
        Some("Created")
    );
    env.advance(Duration::from_secs(11 * 60));
    env.wait("expiry rotation", || async {
        env.status("exp")
            .await?
            .last_rotation_reason
            .filter(|r| r == "Expiry")
            .map(|_| ())
    })
    .await;
    let token = env.secret_token("exp-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
}

pub(crate) async fn consumers_roll_onto_new_tokens(backend: Backend) {
    let env = Env::start(backend).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "ci");
    let deploy = |name: &str, flag: bool| {
        let env_vars = if flag {
            json!([{"name": "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", "value": "true"}])
        } else {
            json!([])
        };
        serde_json::from_value::<Deployment>(json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "runner", "image": "gitlab/gitlab-runner", "env": env_vars}]}}}})).unwrap()
    };
    deploys
        .create(&PostParams::default(), &deploy("good", true))
        .await
        .unwrap();
    deploys
        .create(&PostParams::default(), &deploy("selfrotating", false))
        .await
        .unwrap();
    env.apply("cons", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
        "tokenSecret": {"consumers": [{"kind": "Deployment", "name": "good"}, {"kind": "Deployment", "name": "selfrotating"}, {"kind": "StatefulSet", "name": "absent"}]}})).await;
    let r = env.ready("cons").await;
    let st = r.status.unwrap();
    assert_eq!(
        st.restarted_consumers,
        vec!["Deployment/good", "Deployment/selfrotating"]
    );
    let conds: Vec<(String, String, String)> = st
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.message.clone()))
        .collect();
    assert!(
        conds.iter().any(|(t, s, m)| t == "ConsumersReady"
            && s == "False"
            && m.contains("StatefulSet/absent")),
        "{conds:?}"
    );
    assert!(
        conds.iter().any(|(t, s, m)| t == "TokenRotationConflict"
            && s == "True"
            && m.contains("Deployment/selfrotating")
            && !m.contains("Deployment/good")),
        "{conds:?}"
    );
    // Both problems are Warning events too, naming the workloads.
    let missing = env.has_event("cons", "ConsumerMissing").await;
    assert_eq!(missing.0, "Warning");
    assert!(missing.2.contains("StatefulSet/absent"), "{missing:?}");
    let conflict = env.has_event("cons", "TokenRotationConflict").await;
    assert_eq!(conflict.0, "Warning");
    assert!(
        conflict.2.contains("Deployment/selfrotating"),
        "{conflict:?}"
    );
    let annotation = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| {
                a.get("gitlab.runner-operator.dev/token-generation")
                    .cloned()
            })
    };
    let first = annotation(deploys.get("good").await.unwrap()).expect("pod template annotated");
    assert!(!first.contains(&env.secret_token("cons-runner-token").await.unwrap()));
    env.runners().patch("cons", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}}))).await.unwrap();
    env.wait("rolled again", || async {
        annotation(deploys.get("good").await.ok()?).filter(|a| *a != first)
    })
    .await;
}

/// With restarts off for the namespace (the chart's default), consumers are not touched and the
/// Runner says why and what to do; everything else still converges.
pub(crate) async fn consumers_are_left_alone_where_restarts_are_disabled(backend: Backend) {
    let mut env = Env::start(backend).await;
    env.stop_operator().await;
    env.consumer_restarts = controller::ConsumerRestarts::Only(["elsewhere".to_string()].into());
    env.run_operator();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "ci");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "runner"}, "spec": {"selector": {"matchLabels": {"app": "runner"}}, "template": {"metadata": {"labels": {"app": "runner"}}, "spec": {"containers": [{"name": "runner", "image": "gitlab/gitlab-runner"}]}}}})).unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    env.apply("off", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
        "tokenSecret": {"consumers": [{"kind": "Deployment", "name": "runner"}]}})).await;
    let st = env.ready("off").await.status.unwrap();
    assert!(st.restarted_consumers.is_empty(), "{st:?}");
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "ConsumersReady")
        .expect("ConsumersReady condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ConsumerRestartsDisabled")
    );
    assert!(
        c.message.contains("Deployment/runner")
            && c.message.contains("consumerRestarts.namespaces"),
        "{}",
        c.message
    );
    assert!(env.secret_token("off-runner-token").await.is_some());
    assert_eq!(
        env.has_event("off", "ConsumerRestartsDisabled").await.0,
        "Warning"
    );
    let now = deploys.get("runner").await.unwrap();
    // Generation, not resourceVersion: the Deployment controller writes status.
    assert_eq!(
        now.metadata.generation, created.metadata.generation,
        "the Deployment's spec was not patched"
    );
}

pub(crate) async fn foreign_secrets_are_never_overwritten(backend: Backend) {
    let env = Env::start(backend).await;
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "stringData": {"runner-token": "someone else's"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env.apply("clash", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tokenSecret": {"name": "taken"}})).await;
    let msg = env.condition("clash", "Ready", "SecretNotOwned").await;
    assert!(msg.contains("never overwritten"), "{msg}");
    assert_eq!(
        env.secret_token("taken").await.as_deref(),
        Some("someone else's")
    );
    assert!(
        env.gitlab.runners().is_empty(),
        "no runner whose token could not be stored"
    );
}

/// This scenario's tokens — created, then rotated after a failed assignment — appear nowhere a
/// user could read them (the log buffer also holds other tests' lines; only these are checked).
pub(crate) async fn tokens_never_leak_into_logs_events_or_status(backend: Backend) {
    let env = Env::start(backend).await;
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("POST /projects/:id/runners".into()),
        path_contains: None,
        writes_only: false,
        skip: 0,
        times: 1,
        action: gitlab_emulator::FaultAction::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
    });
    env.apply("secretive", project_spec()).await;
    let id = env
        .ready("secretive")
        .await
        .status
        .unwrap()
        .runner_id
        .unwrap();
    let mut tokens = vec![env.gitlab_runner(id).unwrap().token];
    env.runners().patch("secretive", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "1"}}}))).await.unwrap();
    let second = env
        .wait("rotated", || async {
            env.gitlab_runner(id)
                .map(|g| g.token)
                .filter(|t| *t != tokens[0])
        })
        .await;
    tokens.push(second);
    env.ready("secretive").await;
    let status =
        serde_json::to_string(&env.runners().get("secretive").await.unwrap().status).unwrap();
    let events = format!("{:?}", env.events("secretive").await);
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(logs.contains("secretive"), "logs were captured");
    for t in &tokens {
        let body = t.trim_start_matches("glrt-");
        assert!(!status.contains(body), "status leaks a token");
        assert!(!events.contains(body), "events leak a token");
        assert!(!logs.contains(body), "logs leak a token");
    }
    for access in ["glpat-emulator-bot", "glpat-emulator-root"] {
        assert!(
            !logs.contains(access) && !events.contains(access) && !status.contains(access),
            "access token leaked"
        );
    }
}

pub(crate) async fn expired_tokens_are_replaced_through_the_management_api(backend: Backend) {
    let mut env = Env::start(backend).await;
    env.gitlab
        .update_settings(|s| s.project_runner_token_expiration_interval = Some(3600));
    env.apply("late", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    env.ready("late").await;
    // The operator is down while the token expires: the runner endpoints refuse it.
    env.stop_operator().await;
    let dead = env.secret_token("late-runner-token").await.unwrap();
    env.advance(Duration::from_secs(3601));
    assert!(!env.token_works(&dead).await, "the token expired in GitLab");
    env.run_operator();
    let fresh = env
        .wait("replaced", || async {
            env.secret_token("late-runner-token")
                .await
                .filter(|t| *t != dead)
        })
        .await;
    assert!(env.token_works(&fresh).await);
}
