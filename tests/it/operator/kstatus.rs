//! kstatus (Flux, kpt, Config Sync, `cli-utils apply --wait`) on live objects: every state a
//! Runner or connection can be in comes out Current, InProgress or Failed as a platform team
//! expects — a permanent error fails a `wait` at once instead of at its timeout.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, PostParams};
use runner_operator::crd::GitLabConnection;

use super::*;

/// kstatus' verdicts for `objects`, through tests/kstatus (cli-utils' `status.Compute`).
fn kstatus(objects: &[Value]) -> Vec<(String, String)> {
    let results = crate::support::go_run("tests/kstatus", &[], &objects);
    results
        .into_iter()
        .map(|r| {
            assert!(r["error"].is_null(), "kstatus: {r}");
            (
                r["status"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn live(env: &Env, kind: &str, name: &str) -> Value {
    let (group, version, plural) = match kind {
        "Runner" => ("gitlab.runner-operator.dev", "v1alpha1", "runners"),
        _ => (
            "gitlab.runner-operator.dev",
            "v1alpha1",
            "gitlabconnections",
        ),
    };
    let ar = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "ci", &ar);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// Waits until the object's Ready condition has `reason` for its current generation.
async fn settled(env: &Env, kind: &str, name: &str, reason: &str) -> Value {
    env.wait(&format!("{kind} {name} Ready reason {reason}"), || async {
        let o = live(env, kind, name).await;
        let current = o["status"]["observedGeneration"] == o["metadata"]["generation"];
        let has = o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["reason"] == reason)
        });
        (current && has).then_some(o)
    })
    .await
}

pub(crate) async fn kstatus_agrees_with_every_state(backend: Backend) {
    let env = Env::start(backend).await;
    let base = |extra: Value| {
        let mut s = json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    };
    // A connection GitLab never answers on (a port nothing listens on).
    let mut down: GitLabConnection = Api::<GitLabConnection>::namespaced(env.client.clone(), "ci")
        .get("gitlab")
        .await
        .unwrap();
    down.metadata = kube::api::ObjectMeta {
        name: Some("down".into()),
        namespace: Some("ci".into()),
        ..Default::default()
    };
    down.status = None;
    down.spec.url = "http://127.0.0.1:9".into();
    Api::<GitLabConnection>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &down)
        .await
        .unwrap();
    // Someone else's Secret under the token Secret's name.
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken-runner-token", "namespace": "ci"}, "stringData": {"x": "y"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    env.apply("ok", base(json!({}))).await;
    env.apply("noproject", base(json!({"project": "platform/nope"})))
        .await;
    env.apply(
        "noconnection",
        base(json!({"connectionRef": {"name": "absent"}})),
    )
    .await;
    env.apply("taken", base(json!({}))).await;
    env.apply(
        "unreachable",
        base(json!({"connectionRef": {"name": "down"}})),
    )
    .await;
    env.apply(
        "noconsumer",
        base(json!({"tokenSecret": {"consumers": [{"kind": "Deployment", "name": "absent"}]}})),
    )
    .await;
    // (object, what kstatus must say, words its message must carry)
    let cases = [
        (
            settled(&env, "Runner", "ok", "Reconciled").await,
            "Current",
            "",
        ),
        (
            settled(&env, "Runner", "noproject", "InvalidSpec").await,
            "Failed",
            "platform/nope",
        ),
        (
            settled(&env, "Runner", "noconnection", "ConnectionNotReady").await,
            "InProgress",
            "absent",
        ),
        (
            settled(&env, "Runner", "taken", "SecretNotOwned").await,
            "Failed",
            "never overwritten",
        ),
        (
            settled(&env, "Runner", "unreachable", "GitLabUnreachable").await,
            "InProgress",
            "",
        ),
        (
            env.wait("noconsumer ConsumersReady False", || async {
                let o = live(&env, "Runner", "noconsumer").await;
                o["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "ConsumersReady" && c["status"] == "False")
                    })
                    .then_some(o)
            })
            .await,
            "Failed",
            "absent",
        ),
        (
            settled(&env, "GitLabConnection", "gitlab", "Connected").await,
            "Current",
            "",
        ),
        (
            settled(&env, "GitLabConnection", "down", "GitLabUnreachable").await,
            "InProgress",
            "",
        ),
    ];
    let objects: Vec<Value> = cases.iter().map(|(o, _, _)| o.clone()).collect();
    let verdicts = kstatus(&objects);
    for ((o, want, words), (got, message)) in cases.iter().zip(&verdicts) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(got, want, "{name}: {message}\n{o}");
        assert!(message.contains(words), "{name}: {message}");
    }
    // A spec change the operator has not seen yet: InProgress whatever the conditions say.
    let mut env = env;
    env.stop_operator().await;
    env.apply("ok", base(json!({"description": "changed"})))
        .await;
    let stale = live(&env, "Runner", "ok").await;
    assert_eq!(kstatus(&[stale])[0].0, "InProgress");
}
