//! Tenancy: what a namespace may do through a shared ClusterGitLabConnection (an admin token).
//! One table: each case's outcome, and no GitLab write for a refusal.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use runner_operator::crd::{ClusterGitLabConnection, Runner};
use serde_json::{Value, json};

use crate::cluster::Backend;

use super::*;

async fn namespace(env: &Env, name: &str, labels: Value) {
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .unwrap();
    let _ = Api::<Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &ns)
        .await;
}

async fn runner_in(env: &Env, ns: &str, name: &str, spec: Value) {
    let mut spec = spec;
    spec["connectionRef"] = json!({"kind": "ClusterGitLabConnection", "name": "shared"});
    let r: Runner = serde_json::from_value(
        json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .unwrap();
    Api::<Runner>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &r)
        .await
        .unwrap();
}

/// The Ready condition once it has the reason wanted: (status, message).
async fn ready_reason(env: &Env, ns: &str, name: &str, reason: &str) -> (String, String) {
    let api = Api::<Runner>::namespaced(env.client.clone(), ns);
    env.wait(&format!("{ns}/{name} Ready reason {reason}"), || async {
        api.get(name)
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == reason)
            .map(|c| (c.status, c.message))
    })
    .await
}

/// What changed GitLab: every accepted request but reads and runner processes' own calls.
fn writes(env: &Env) -> Vec<String> {
    env.gitlab
        .request_log()
        .into_iter()
        .filter(|r| !r.endpoint.starts_with("GET ") && r.status < 400)
        .filter(|r| r.endpoint != "POST /runners/verify" && r.endpoint != "POST /jobs/request")
        .map(|r| r.endpoint)
        .collect()
}

pub(crate) async fn tenants_stay_in_their_lane(backend: Backend) {
    let env = Env::start(backend).await;
    let docs = env.gitlab.project_id("platform/docs").unwrap();
    // A runner the platform team registered by hand in platform/docs.
    let hand: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", env.gitlab.url()))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .json(&json!({"runner_type": "project_type", "project_id": docs}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (hand_id, hand_token) = (
        hand["id"].as_i64().unwrap(),
        hand["token"].as_str().unwrap().to_string(),
    );
    // The shared connection: an admin token; team-a may run project runners in platform/api
    // and platform/web and adopt within them; namespaces labelled tenant=yes group runners in
    // platform/ci.
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared-token", "namespace": "runner-operator"}, "stringData": {"token": "glpat-emulator-root"}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "runner-operator")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let conn: ClusterGitLabConnection = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "ClusterGitLabConnection",
        "metadata": {"name": "shared"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true,
                 "tokenSecretRef": {"name": "shared-token", "namespace": "runner-operator"},
                 "tenancy": {"rules": [
                     {"name": "team-a", "namespaces": {"names": ["team-a"]}, "runnerTypes": ["project_type"],
                      "paths": ["platform/api", "platform/web"], "adopt": "WithinPaths"},
                     {"name": "labelled", "namespaces": {"selector": {"matchLabels": {"tenant": "yes"}}},
                      "runnerTypes": ["group_type"], "paths": ["platform/ci"]}]}}}))
    .unwrap();
    let conns = Api::<ClusterGitLabConnection>::all(env.client.clone());
    conns.create(&PostParams::default(), &conn).await.unwrap();
    namespace(&env, "team-a", json!({})).await;
    namespace(&env, "team-c", json!({"tenant": "yes"})).await;
    namespace(&env, "team-z", json!({})).await;

    // The allowed cases first (the adoption of another Runner's runner needs one).
    runner_in(&env, "team-a", "allowed", json!({"runnerType": "project_type", "project": "platform/api", "assignedProjects": ["platform/web"]})).await;
    runner_in(
        &env,
        "team-c",
        "by-label",
        json!({"runnerType": "group_type", "group": "platform/ci"}),
    )
    .await;
    ready_reason(&env, "team-a", "allowed", "Reconciled").await;
    ready_reason(&env, "team-c", "by-label", "Reconciled").await;
    let allowed_id = Api::<Runner>::namespaced(env.client.clone(), "team-a")
        .get("allowed")
        .await
        .unwrap()
        .status
        .unwrap()
        .runner_id
        .unwrap();
    let writes_before = writes(&env);

    let cases: Vec<(&str, &str, &str, Value, &str, &str)> = vec![
        (
            "instance runner",
            "team-a",
            "instance",
            json!({"runnerType": "instance_type"}),
            "TenancyViolation",
            "allows runnerTypes project_type only, not instance_type",
        ),
        (
            "project outside paths",
            "team-a",
            "docs",
            json!({"runnerType": "project_type", "project": "platform/docs"}),
            "TenancyViolation",
            "platform/docs is outside its paths (platform/api, platform/web)",
        ),
        (
            "assigned project outside paths",
            "team-a",
            "sneaky",
            json!({"runnerType": "project_type", "project": "platform/api", "assignedProjects": ["platform/docs"]}),
            "TenancyViolation",
            "assigned project platform/docs is outside its paths",
        ),
        (
            "adopting a hand-made runner",
            "team-a",
            "takeover",
            json!({"runnerType": "project_type", "project": "platform/docs", "adopt": {"runnerId": hand_id}}),
            "TenancyViolation",
            "platform/docs is outside its paths",
        ),
        (
            "adopting another Runner's runner",
            "team-a",
            "steal",
            json!({"runnerType": "project_type", "project": "platform/api", "adopt": {"runnerId": allowed_id}}),
            "RunnerClaimed",
            "is managed by Runner team-a/allowed",
        ),
        (
            "a namespace no rule matches",
            "team-z",
            "nobody",
            json!({"runnerType": "project_type", "project": "platform/api"}),
            "TenancyViolation",
            "no tenancy rule matches namespace team-z",
        ),
        (
            "a selector-matched namespace asking for a project runner",
            "team-c",
            "wrong-type",
            json!({"runnerType": "project_type", "project": "platform/api"}),
            "TenancyViolation",
            "rule \"labelled\"",
        ),
    ];
    for (case, ns, name, spec, reason, words) in &cases {
        runner_in(&env, ns, name, spec.clone()).await;
        let (status, msg) = ready_reason(&env, ns, name, reason).await;
        assert_eq!(status, "False", "{case}");
        assert!(msg.contains(words), "{case}: {msg}");
        if *reason == "TenancyViolation" {
            assert!(msg.contains("nothing was done in GitLab"), "{case}: {msg}");
            env.wait(&format!("{case}: a TenancyViolation event"), || async {
                env.events_in_namespace(ns, name)
                    .await
                    .into_iter()
                    .find(|(t, r, _)| t == "Warning" && r == "TenancyViolation")
            })
            .await;
        }
    }
    // No write for any refusal; the hand-made runner's token still works.
    assert_eq!(
        writes(&env),
        writes_before,
        "GitLab writes during the refusals"
    );
    assert!(
        env.token_works(&hand_token).await,
        "the adopted-by-nobody runner's token was reset"
    );
    assert_eq!(
        env.gitlab.runners().len(),
        3,
        "only the hand-made runner and the two allowed ones"
    );

    // `kubectl get clustergitlabconnection -o wide`: the rules, and the Runners each decided.
    env.wait("the connection counts Runners per rule", || async {
        let t = conns.get("shared").await.ok()?.status?.tenancy?;
        (t.rules == 2 && t.runners == "team-a: 6, labelled: 2, unmatched: 1").then_some(())
    })
    .await;

    // A policy change puts "allowed" out of its lane. `plan -f new-connection.yaml` says so
    // before it is applied...
    let narrower = json!({"rules": [
        {"name": "team-a", "namespaces": {"names": ["team-a"]}, "runnerTypes": ["project_type"], "paths": ["platform/api"]}]});
    let mut new_conn = conns.get("shared").await.unwrap();
    new_conn.spec.tenancy = Some(serde_json::from_value(narrower.clone()).unwrap());
    let live = Api::<Runner>::namespaced(env.client.clone(), "team-a")
        .get("allowed")
        .await
        .unwrap();
    let doc = runner_operator::preview::plan_with(
        &runner_operator::preview::Source::Cluster(env.client.clone()),
        vec![live],
        &[new_conn],
        None,
    )
    .await;
    let plan = &doc.runners[0];
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("puts this Runner out of its lane")
                && w.contains("assigned project platform/web is outside its paths")),
        "{plan:?}"
    );
    // ... and once applied it is reported, and left as it is in GitLab.
    conns
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tenancy": narrower}})),
        )
        .await
        .unwrap();
    let (_, msg) = ready_reason(&env, "team-a", "allowed", "TenancyViolation").await;
    assert!(
        msg.contains("assigned project platform/web is outside its paths"),
        "{msg}"
    );
    let projects = env.gitlab_runner(allowed_id).unwrap().projects;
    assert!(
        projects.iter().any(|p| p == "platform/web"),
        "platform/web must stay assigned: {projects:?}"
    );
    // Deleting it leaves the runner registered (the namespace may no longer delete it).
    Api::<Runner>::namespaced(env.client.clone(), "team-a")
        .delete("allowed", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("allowed released", || async {
        Api::<Runner>::namespaced(env.client.clone(), "team-a")
            .get_opt("allowed")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        env.gitlab_runner(allowed_id).is_some(),
        "deleted from GitLab outside the lane"
    );
    assert_eq!(
        writes(&env),
        writes_before,
        "GitLab writes after the policy change"
    );
    env.wait("a LeftOutsideLane event", || async {
        env.events_in_namespace("team-a", "allowed")
            .await
            .into_iter()
            .find(|(_, r, _)| r == "LeftOutsideLane")
    })
    .await;
}
