//! Clusters come and go, runners stay: a rebuilt cluster of the same name takes over its
//! runners (keeping tokens GitLab still accepts), a cluster of another name never touches
//! them, and what a lost Runner left behind is found and pruned.

use kube::api::{DeleteParams, PostParams};
use runner_operator::controller::identity::ClusterName;
use runner_operator::preview::orphans;

use super::*;

const NAMES: [&str; 3] = ["build", "deploy", "docs"];

fn spec(name: &str) -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type",
           "project": "platform/api", "description": format!("{name} runners"), "tags": [name]})
}

async fn apply_all(env: &Env) -> Vec<i64> {
    for name in NAMES {
        env.apply(name, spec(name)).await;
    }
    let mut ids = vec![];
    for name in NAMES {
        let r = env.ready(name).await;
        ids.push(r.status.and_then(|s| s.runner_id).expect("runner id"));
    }
    ids
}

/// The Secret as a backup restore (Velero) brings it back: same data, labels and
/// annotations, no owner, no server-set fields.
fn as_restored(mut s: Secret) -> Secret {
    let m = &mut s.metadata;
    m.owner_references = None;
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.managed_fields = None;
    s
}

pub(crate) async fn a_rebuilt_cluster_takes_over_its_runners_and_prunes_orphans(backend: Backend) {
    let prod: ClusterName = "prod".parse().unwrap();
    // Cluster A (prod) registers three runners.
    let a = Env::start_cluster(backend, "prod", None).await;
    let ids = apply_all(&a).await;
    let secrets = Api::<Secret>::namespaced(a.client.clone(), "ci");
    let build_secret = secrets.get("build-runner-token").await.unwrap();
    let deploy_secret = secrets.get("deploy-runner-token").await.unwrap();
    let build_token = a.secret_token("build-runner-token").await.unwrap();
    let gitlab = a.gitlab.clone();
    for id in &ids {
        let note = gitlab.runner(*id).unwrap().maintenance_note.unwrap();
        assert!(note.ends_with(", cluster prod]"), "{note}");
    }
    // A is lost. Meanwhile someone reset deploy's token in GitLab: its backup is dead.
    drop(a);
    let b = Env::start_cluster(backend, "prod", Some(gitlab.clone())).await;
    assert_eq!(
        b.as_root(
            reqwest::Method::POST,
            &format!("/runners/{}/reset_authentication_token", ids[1]),
            None
        )
        .await,
        201
    );
    // Cluster B (prod): the Secrets of build and deploy restored, docs only re-applied.
    let restored = Api::<Secret>::namespaced(b.client.clone(), "ci");
    for s in [build_secret, deploy_secret] {
        restored
            .create(&PostParams::default(), &as_restored(s))
            .await
            .expect("restored Secret");
    }
    // What `plan -f runners/ --cluster-name prod` says before the manifests are applied.
    let manifests: Vec<Runner> = NAMES
        .iter()
        .map(|name| {
            serde_json::from_value(
                json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner",
                "metadata": {"name": name, "namespace": "ci"}, "spec": spec(name)}),
            )
            .unwrap()
        })
        .collect();
    let writes_before = gitlab_writes_now(&gitlab);
    let doc = runner_operator::preview::plan_with(
        &runner_operator::preview::Source::Cluster(b.client.clone()),
        manifests,
        &[],
        Some(&prod),
    )
    .await;
    use runner_operator::preview::Action;
    for (p, (id, keep)) in doc
        .runners
        .iter()
        .zip([(ids[0], true), (ids[1], true), (ids[2], false)])
    {
        assert_eq!(
            p.actions.first(),
            Some(&Action::TakeOver {
                runner_id: id,
                keep_token: keep
            }),
            "{p:?}"
        );
        assert!(
            !p.actions.iter().any(|a| matches!(a, Action::Create { .. })),
            "{p:?}"
        );
    }
    assert_eq!(
        gitlab_writes_now(&gitlab),
        writes_before,
        "plan wrote nothing"
    );
    let before = gitlab.request_counts();
    let taken = apply_all(&b).await;
    let after = gitlab.request_counts();
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(taken, ids, "the same three runners");
    assert_eq!(delta("POST /user/runners"), 0, "nothing registered");
    assert_eq!(delta("DELETE /runners/:id"), 0, "nothing deleted");
    assert_eq!(
        delta("POST /runners/:id/reset_authentication_token"),
        2,
        "one reset for deploy (dead backup) and docs (no backup), none for build"
    );
    // build kept its token: the Secret, now owned by the new Runner, holds the one GitLab has.
    assert_eq!(
        b.secret_token("build-runner-token").await.as_deref(),
        Some(build_token.as_str())
    );
    assert_eq!(gitlab.runner(ids[0]).unwrap().token, build_token);
    let build = b.runners().get("build").await.unwrap();
    let owner = restored.get("build-runner-token").await.unwrap();
    assert_eq!(
        owner.metadata.owner_references.unwrap()[0].uid,
        build.uid().unwrap()
    );
    for (name, id) in NAMES.iter().zip(&ids) {
        let r = b.runners().get(name).await.unwrap();
        let note = gitlab.runner(*id).unwrap().maintenance_note.unwrap();
        assert!(
            note.contains(&format!("uid {}, cluster prod]", r.uid().unwrap())),
            "{note}"
        );
        let token = b
            .secret_token(&format!("{name}-runner-token"))
            .await
            .unwrap();
        assert!(b.token_works(&token).await, "{name}'s Secret works");
        let (_, _, message) = b.has_event(name, "TakenOver").await;
        assert!(
            message.contains(&format!("GitLab runner {id}")),
            "{message}"
        );
    }
    assert_eq!(
        b.status("build").await.unwrap().last_rotation_reason,
        None,
        "no rotation for build"
    );
    assert_eq!(
        b.status("docs")
            .await
            .unwrap()
            .last_rotation_reason
            .as_deref(),
        Some("TakenOver")
    );

    // Cluster C (staging), same manifests: its own three runners, nothing written to B's.
    let b_runners: Vec<_> = ids.iter().map(|id| gitlab.runner(*id)).collect();
    let c = Env::start_cluster(backend, "staging", Some(gitlab.clone())).await;
    let theirs = apply_all(&c).await;
    assert!(
        theirs.iter().all(|id| !ids.contains(id)),
        "{theirs:?} {ids:?}"
    );
    let b_after: Vec<_> = ids.iter().map(|id| gitlab.runner(*id)).collect();
    assert_eq!(b_runners, b_after, "C changed none of B's runners");
    assert!(
        orphans::find(&c.client, &"staging".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(orphans::find(&b.client, &prod).await.unwrap().is_empty());

    // B loses docs' manifest without its finalizer running: docs' runner is an orphan.
    let mut b = b;
    b.stop_operator().await;
    b.runners()
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let _ = b.runners().delete("docs", &DeleteParams::default()).await;
    b.wait("docs gone", || async {
        b.runners()
            .get_opt("docs")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let found = orphans::find(&b.client, &prod).await.unwrap();
    assert_eq!(
        found.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![ids[2]],
        "exactly docs' runner"
    );
    let text = runner_operator::preview::render_orphans(&found);
    assert!(
        text.contains("orphan") && text.contains(&ids[2].to_string()),
        "{text}"
    );
    let json = serde_json::to_value(&found[0]).unwrap();
    for key in ["id", "description", "marker", "contactedAt"] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    // The same through the binary, as a platform engineer runs it.
    let dir = crate::preview::plan::tempdir("clusters");
    let kubeconfig = dir.join("kubeconfig");
    b.kube.write_kubeconfig(&kubeconfig);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-operator"))
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("RUNNER_OPERATOR_CLUSTER_NAME", "prod")
            .output()
            .expect("runner-operator runs");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let text = cli(&["plan", "-A"]);
    assert!(
        text.lines()
            .any(|l| l.contains("orphan") && l.contains(&ids[2].to_string())),
        "{text}"
    );
    let doc: Value = serde_json::from_str(&cli(&["plan", "-A", "-o", "json"])).unwrap();
    assert_eq!(doc["orphans"][0]["id"], json!(ids[2]), "{doc}");
    let listed = cli(&["prune"]);
    assert!(
        listed.contains(&format!(
            "kept: GitLab runner {} was used within --min-idle",
            ids[2]
        )),
        "{listed}"
    );
    let now = k8s_openapi::jiff::Timestamp::now();
    // Created moments ago: within the default --min-idle, kept even with --yes.
    let recent =
        runner_operator::prune::prune(&b.client, &prod, Duration::from_secs(3600), true, now)
            .await
            .unwrap();
    assert_eq!(recent.recently_used, vec![ids[2]]);
    assert!(recent.deleted.is_empty());
    // Without --yes nothing changes.
    let dry = runner_operator::prune::prune(&b.client, &prod, Duration::ZERO, false, now)
        .await
        .unwrap();
    assert!(dry.deleted.is_empty());
    assert!(gitlab.runner(ids[2]).is_some());
    let pruned = runner_operator::prune::prune(&b.client, &prod, Duration::ZERO, true, now)
        .await
        .unwrap();
    assert_eq!(pruned.deleted, vec![ids[2]]);
    assert!(gitlab.runner(ids[2]).is_none(), "docs' runner deleted");
    for id in ids[..2].iter().chain(&theirs) {
        assert!(gitlab.runner(*id).is_some(), "runner {id} kept");
    }
}

/// Setting a name on a running installation rewrites each marker and nothing else.
pub(crate) async fn naming_a_running_cluster_only_rewrites_markers(backend: Backend) {
    let mut env = Env::start(backend).await;
    env.apply("build", spec("build")).await;
    let id = env.ready("build").await.status.unwrap().runner_id.unwrap();
    let token = env.secret_token("build-runner-token").await;
    env.stop_operator().await;
    let before = env.gitlab.request_counts();
    env.cluster_name = Some("prod".parse().unwrap());
    env.run_operator();
    env.has_event("build", "MarkerUpdated").await;
    let note = env.gitlab.runner(id).unwrap().maintenance_note.unwrap();
    assert!(note.ends_with(", cluster prod]"), "{note}");
    let after = env.gitlab.request_counts();
    assert_eq!(gitlab_writes(&before, &after), 1, "one PUT: {after:?}");
    assert_eq!(env.secret_token("build-runner-token").await, token);
    assert!(
        env.events("build")
            .await
            .iter()
            .all(|e| e.1 != "DriftReverted"),
        "no drift reported"
    );
}

/// Every GitLab request so far but reads.
fn gitlab_writes_now(gitlab: &GitLabEmulator) -> u64 {
    gitlab_writes(&Default::default(), &gitlab.request_counts())
}
