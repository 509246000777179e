//! What only a real cluster shows: the Deployment controller turning the operator's pod-template
//! bump into a new ReplicaSet, and leader election on real Leases surviving a SIGKILLed leader.
//! (Garbage collection of the token Secret is asserted by every backend's
//! `create_update_assign_and_delete`.) These need kube-controller-manager, so they have no
//! in-memory twin; they are ignored unless asked for (see `cluster`).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster::{Backend, OperatorProcess, RELEASE_NAMESPACE};
use crate::operator::Env;

const GENERATION: &str = "gitlab.runner-operator.dev/token-generation";

/// ReplicaSets of the Deployment `name` with the generation annotation of their pod template.
async fn replica_sets(env: &Env, name: &str) -> Vec<(String, Option<String>)> {
    let list = Api::<ReplicaSet>::namespaced(env.client.clone(), "ci")
        .list(&ListParams::default())
        .await
        .expect("replicasets");
    list.items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && o.name == name)
        })
        .map(|rs| {
            let annotation = rs
                .spec
                .and_then(|s| s.template)
                .and_then(|t| t.metadata)
                .and_then(|m| m.annotations)
                .and_then(|a| a.get(GENERATION).cloned());
            (rs.metadata.name.unwrap_or_default(), annotation)
        })
        .collect()
}

async fn secret_generation(env: &Env) -> Option<String> {
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get_opt("roll-runner-token")
        .await
        .ok()??
        .metadata
        .annotations?
        .get(GENERATION)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn real_only_a_rotated_token_rolls_the_deployment_into_a_new_replicaset() {
    let env = Env::start(Backend::Real).await;
    let deploy: Deployment = serde_json::from_value(json!({"metadata": {"name": "runner"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "runner"}},
        "template": {"metadata": {"labels": {"app": "runner"}}, "spec": {"containers": [{"name": "runner", "image": "gitlab/gitlab-runner:alpine",
            "env": [{"name": "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", "value": "true"}],
            "volumeMounts": [{"name": "token", "mountPath": "/secrets"}]}],
            "volumes": [{"name": "token", "secret": {"secretName": "roll-runner-token", "optional": true}}]}}}}))
    .expect("deployment");
    Api::<Deployment>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &deploy)
        .await
        .expect("created");
    env.apply("roll", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
        "tokenSecret": {"consumers": [{"kind": "Deployment", "name": "runner"}]}}))
    .await;
    env.ready("roll").await;
    let first = secret_generation(&env)
        .await
        .expect("generation annotation");
    // The Deployment controller made a ReplicaSet for the annotated template.
    let first_rs = env
        .wait("a ReplicaSet with the first token's generation", || async {
            replica_sets(&env, "runner")
                .await
                .into_iter()
                .find(|(_, a)| a.as_deref() == Some(first.as_str()))
                .map(|(n, _)| n)
        })
        .await;
    env.runners()
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}})),
        )
        .await
        .expect("rotation requested");
    let second = env
        .wait("a new token", || async {
            secret_generation(&env).await.filter(|g| *g != first)
        })
        .await;
    let second_rs = env
        .wait(
            "a new ReplicaSet with the new token's generation",
            || async {
                replica_sets(&env, "runner")
                    .await
                    .into_iter()
                    .find(|(_, a)| a.as_deref() == Some(second.as_str()))
                    .map(|(n, _)| n)
            },
        )
        .await;
    assert_ne!(first_rs, second_rs, "the rollout made a new ReplicaSet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn real_only_leader_election_survives_a_sigkilled_leader() {
    // The chart with leader election; two operator processes as its ServiceAccount.
    let mut env = Env::start(Backend::Chart { namespaced: false }).await;
    env.stop_operator().await;
    let kubeconfig = env
        .kube
        .real()
        .expect("real")
        .dir
        .join("operator.kubeconfig");
    let spawn = |name: &'static str| {
        let log =
            std::env::temp_dir().join(format!("runner-operator-{name}-{}.log", std::process::id()));
        let args = [
            "--leader-election",
            "--pod-name",
            name,
            "--namespace",
            RELEASE_NAMESPACE,
            "--resync-interval",
            "5s",
        ];
        (name, OperatorProcess::spawn(&kubeconfig, &log, &args))
    };
    let a = spawn("pod-a");
    let b = spawn("pod-b");
    let leader_name = env
        .wait_for("a leader", Duration::from_secs(60), || async {
            match (a.1.ready().await, b.1.ready().await) {
                (true, false) => Some(a.0),
                (false, true) => Some(b.0),
                _ => None,
            }
        })
        .await;
    let (mut leader, standby) = if leader_name == a.0 { (a, b) } else { (b, a) };
    env.apply("elected", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}))
        .await;
    env.ready("elected").await;

    // SIGKILL: no chance to release the Lease; the standby must wait it out, then lead.
    leader.1.kill9();
    let killed = Instant::now();
    env.wait_for("the standby leads", Duration::from_secs(40), || async {
        standby.1.ready().await.then_some(())
    })
    .await;
    let handover = killed.elapsed();
    // Lease duration 15 s + grace 5 s, polled by the lease manager.
    assert!(
        handover <= Duration::from_secs(25),
        "handover took {handover:?}"
    );
    env.apply("after-handover", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"}))
        .await;
    env.ready("after-handover").await;
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        env.client.clone(),
        RELEASE_NAMESPACE,
    )
    .get("runner-operator")
    .await
    .expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(standby.0)
    );
    eprintln!("handover after SIGKILL: {handover:?}");
}

/// With the chart installed, people holding Kubernetes' default roles in a namespace can use
/// the operator there: `view` reads Runners and connections, `edit` and `admin` manage them,
/// nobody gets ClusterGitLabConnections that way (role aggregation by kube-controller-manager).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn real_only_default_roles_cover_runners() {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let env = Env::start(Backend::Chart { namespaced: false }).await;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(env.client.clone(), "ci");
    for (user, role) in [("viewer", "view"), ("editor", "edit"), ("owner", "admin")] {
        let b: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap();
        bindings.create(&PostParams::default(), &b).await.unwrap();
    }
    let reviews: Api<SubjectAccessReview> = Api::all(env.client.clone());
    let allowed = |user: &'static str, verb: &'static str, resource: &'static str| {
        let reviews = reviews.clone();
        async move {
            let r: SubjectAccessReview = serde_json::from_value(json!({"spec": {"user": user,
                "resourceAttributes": {"namespace": "ci", "group": "gitlab.runner-operator.dev", "resource": resource, "verb": verb}}}))
            .unwrap();
            reviews
                .create(&PostParams::default(), &r)
                .await
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| s.allowed)
        }
    };
    let cases = [
        ("viewer", "list", "runners", true),
        ("viewer", "get", "gitlabconnections", true),
        ("viewer", "create", "runners", false),
        ("editor", "create", "runners", true),
        ("editor", "delete", "gitlabconnections", true),
        ("owner", "patch", "runners", true),
        ("editor", "create", "clustergitlabconnections", false),
    ];
    // Aggregation is asynchronous: wait until the first case holds.
    env.wait_for("roles aggregated", Duration::from_secs(30), || async {
        allowed("editor", "create", "runners").await.then_some(())
    })
    .await;
    for (user, verb, resource, want) in cases {
        assert_eq!(
            allowed(user, verb, resource).await,
            want,
            "{user} {verb} {resource}"
        );
    }
}
