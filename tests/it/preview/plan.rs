//! `plan`: each kind of change and each blocking reason, nothing written, the binary's exit
//! codes and formats.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use runner_operator::preview::{self, Action, Outcome, PlanDocument};
use serde_json::{Value, json};

use crate::cluster::Backend;
use crate::operator::Env;

use super::*;

pub(crate) async fn plan_names_every_change_and_blocking_reason_and_writes_nothing(
    backend: Backend,
) {
    let mut env = Env::start(backend).await;
    let web = env.gitlab.project_id("platform/web").expect("platform/web");
    for (name, extra) in [
        (
            "steady",
            json!({"description": "steady", "tags": ["linux"]}),
        ),
        (
            "drifted",
            json!({"description": "as in the spec", "assignedProjects": ["platform/web"]}),
        ),
        ("rotating", json!({"tokenRotation": {"interval": "720h"}})),
        ("unmarked", json!({})),
        ("leaving", json!({})),
        ("extra", json!({})),
        ("vanished", json!({})),
    ] {
        env.apply(name, spec(extra)).await;
    }
    let mut ids = BTreeMap::new();
    for name in [
        "steady", "drifted", "rotating", "unmarked", "leaving", "extra", "vanished",
    ] {
        ids.insert(
            name,
            env.ready(name).await.status.unwrap().runner_id.unwrap(),
        );
    }
    // From here the operator is stopped: only plan runs, and nothing may change.
    env.stop_operator().await;
    let drifted = ids["drifted"];
    root(
        &env,
        "PUT",
        &format!("/runners/{drifted}"),
        json!({"description": "edited by hand", "paused": true}),
    )
    .await;
    root(
        &env,
        "DELETE",
        &format!("/projects/{web}/runners/{drifted}"),
        json!({}),
    )
    .await;
    root(
        &env,
        "PUT",
        &format!("/runners/{}", ids["unmarked"]),
        json!({"maintenance_note": "taken by hand"}),
    )
    .await;
    root(
        &env,
        "POST",
        &format!("/projects/{web}/runners"),
        json!({"runner_id": ids["extra"]}),
    )
    .await;
    root(
        &env,
        "DELETE",
        &format!("/runners/{}", ids["vanished"]),
        json!({}),
    )
    .await;
    // A connection whose token GitLab refuses, and a cluster connection closed to "ci".
    let objects = json!([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad-token", "namespace": "ci"}, "stringData": {"token": "glpat-nope"}},
        {"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "badtoken", "namespace": "ci"}, "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "bad-token"}}},
        {"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "ClusterGitLabConnection", "metadata": {"name": "closed"}, "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "bad-token", "namespace": "ci"}, "allowedNamespaces": {"names": ["elsewhere"]}}},
    ]);
    let secret: Secret = serde_json::from_value(objects[0].clone()).unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let conn: runner_operator::crd::GitLabConnection =
        serde_json::from_value(objects[1].clone()).unwrap();
    Api::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &conn)
        .await
        .unwrap();
    let closed: runner_operator::crd::ClusterGitLabConnection =
        serde_json::from_value(objects[2].clone()).unwrap();
    Api::all(env.client.clone())
        .create(&PostParams::default(), &closed)
        .await
        .unwrap();
    env.runners()
        .patch(
            "rotating",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}})),
        )
        .await
        .unwrap();
    env.runners()
        .delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    let hand = hand_made(&env, json!({"runner_type": "project_type", "project_id": env.gitlab.project_id("platform/api"), "description": "Hand-written by the platform team"})).await;
    let hand2 = hand_made(
        &env,
        json!({"runner_type": "project_type", "project_id": env.gitlab.project_id("platform/api")}),
    )
    .await;
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "stringData": {"runner-token": "someone else's"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "ci")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    for (name, extra) in [
        ("adopter", json!({"adopt": {"runnerId": hand}})),
        ("thief", json!({"adopt": {"runnerId": ids["steady"]}})),
        ("clash", json!({"tokenSecret": {"name": "taken"}})),
        (
            "clash-adopt",
            json!({"tokenSecret": {"name": "taken"}, "adopt": {"runnerId": hand2}}),
        ),
        ("noproject", json!({"project": "platform/nope"})),
        ("noconn", json!({"connectionRef": {"name": "missing"}})),
        ("ghost", json!({"adopt": {"runnerId": 999_999}})),
        ("refused", json!({"connectionRef": {"name": "badtoken"}})),
        (
            "notallowed",
            json!({"connectionRef": {"kind": "ClusterGitLabConnection", "name": "closed"}}),
        ),
        (
            "newcomer",
            json!({"description": "new", "tags": ["b", "a"], "assignedProjects": ["platform/web"]}),
        ),
    ] {
        env.apply(name, spec(extra)).await;
    }
    let writes = gitlab_writes(&env);
    let before = env.fingerprint().await;

    let doc = plan_cluster(&env).await;

    assert_eq!(gitlab_writes(&env), writes, "plan wrote to GitLab");
    assert_eq!(env.fingerprint().await, before, "plan wrote to Kubernetes");
    assert_eq!(find(&doc, "steady").outcome, Outcome::NoChanges);
    assert!(find(&doc, "steady").actions.is_empty());
    // Drift: each field before and after, then the assignment GitLab lost.
    let p = find(&doc, "drifted");
    assert_eq!(p.outcome, Outcome::Changes);
    match &p.actions[..] {
        [
            Action::Update { runner_id, fields },
            Action::Assign {
                project_id,
                project,
                ..
            },
        ] => {
            assert_eq!(*runner_id, drifted);
            let f: Vec<(String, Value, Value)> = fields
                .iter()
                .map(|f| (f.field.clone(), f.before.clone().unwrap(), f.after.clone()))
                .collect();
            assert_eq!(
                f,
                [
                    (
                        "description".into(),
                        json!("edited by hand"),
                        json!("as in the spec")
                    ),
                    ("paused".into(), json!(true), json!(false)),
                ]
            );
            assert_eq!(
                (*project_id, project.as_deref()),
                (web, Some("platform/web"))
            );
        }
        other => panic!("{other:#?}"),
    }
    // A project assigned by hand is unassigned; a runner deleted by hand is created again.
    assert_eq!(
        find(&doc, "extra").actions,
        [Action::Unassign {
            runner_id: ids["extra"],
            project_id: web,
            project: Some("platform/web".into())
        }]
    );
    assert!(matches!(
        &find(&doc, "vanished").actions[..],
        [Action::Create {
            recreated: true,
            ..
        }]
    ));
    // Rotation on request, and the next scheduled one.
    let p = find(&doc, "rotating");
    assert_eq!(
        p.actions,
        [Action::RotateToken {
            runner_id: ids["rotating"],
            reason: "Requested".into()
        }]
    );
    assert_eq!(
        p.next_rotation.as_ref().map(|r| r.reason.as_str()),
        Some("Interval")
    );
    // Deletion.
    assert_eq!(
        find(&doc, "leaving").actions,
        [Action::Delete {
            runner_id: ids["leaving"]
        }]
    );
    // Adoption: what it changes is a warning, before and after; then the update and the reset.
    let p = find(&doc, "adopter");
    assert_eq!(p.runner_id, Some(hand));
    assert!(
        matches!(&p.actions[..], [Action::Adopt { runner_id }, Action::Update { .. }, Action::RotateToken { reason, .. }] if *runner_id == hand && reason == "Adopted"),
        "{p:#?}"
    );
    assert!(
        p.warnings.iter().any(|w| w.contains(r#"changes description: "Hand-written by the platform team" → """#)),
        "{:?}",
        p.warnings
    );
    // A new Runner: created with its attributes.
    match &find(&doc, "newcomer").actions[..] {
        [
            Action::Create {
                runner_type,
                owner,
                recreated: false,
                fields,
            },
        ] => {
            assert_eq!(
                (runner_type.as_str(), owner.as_deref()),
                ("project_type", Some("platform/api"))
            );
            let tags = fields
                .iter()
                .find(|f| f.field == "tags")
                .map(|f| f.after.clone());
            assert_eq!(tags, Some(json!(["a", "b"])));
        }
        other => panic!("{other:#?}"),
    }
    // Each blocking reason, as the Ready condition would name it.
    let (r, m) = blocked(&doc, "unmarked");
    assert_eq!(r, "RunnerNotOwned", "{m}");
    let (r, m) = blocked(&doc, "thief");
    assert_eq!(r, "RunnerClaimed");
    assert!(m.contains("managed by Runner ci/steady"), "{m}");
    for name in ["clash", "clash-adopt"] {
        let (r, m) = blocked(&doc, name);
        assert_eq!(r, "SecretNotOwned", "{name}: {m}");
    }
    let (r, m) = blocked(&doc, "noproject");
    assert_eq!(r, "InvalidSpec");
    assert!(m.contains("\"platform/nope\" does not exist"), "{m}");
    let (r, m) = blocked(&doc, "noconn");
    assert_eq!(r, "ConnectionNotReady");
    assert!(
        m.contains("GitLabConnection ci/missing does not exist"),
        "{m}"
    );
    let (r, m) = blocked(&doc, "ghost");
    assert_eq!(r, "InvalidSpec");
    assert!(m.contains("999999: no such runner"), "{m}");
    let (r, m) = blocked(&doc, "notallowed");
    assert_eq!(r, "ConnectionNotAllowed");
    assert!(m.contains("does not allow namespace ci"), "{m}");
    // GitLab refusing the token is an error of the plan, not a state of the Runner.
    let p = find(&doc, "refused");
    assert_eq!(
        (p.outcome, p.reason.as_deref()),
        (Outcome::Error, Some("GitLabUnauthorized")),
        "{p:#?}"
    );
    assert_eq!(
        (doc.summary.runners, doc.summary.errors),
        (doc.runners.len(), 1),
        "{:#?}",
        doc.summary
    );
    assert_eq!(preview::exit_code(&doc), 1, "blocked Runners fail the plan");
    // The text names the same.
    let text = preview::render_text(&doc);
    assert!(
        text.contains("~ description: \"edited by hand\" → \"as in the spec\""),
        "{text}"
    );
    assert!(text.contains("+ assign to project platform/web"), "{text}");
    assert!(text.contains("blocked: RunnerClaimed"), "{text}");

    // The binary: exit codes 0 (nothing to do), 2 (changes pending), 1 (blocked); JSON and YAML
    // decode into the pinned document.
    let dir = tempdir("plan");
    let kubeconfig = dir.join("kubeconfig");
    env.kube.write_kubeconfig(&kubeconfig);
    let steady = env.runners().get("steady").await.unwrap();
    let file = |name: &str, spec: Value| {
        let path = dir.join(format!("{name}.yaml"));
        let doc = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": steady.name_any(), "namespace": "ci"}, "spec": spec});
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        path
    };
    let same = file("same", serde_json::to_value(&steady.spec).unwrap());
    let changed = file(
        "changed",
        spec(json!({"description": "steady", "tags": ["linux", "gpu"]})),
    );
    let (code, out) = cli(&kubeconfig, &["-f", same.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Runner ci/steady") && out.contains("no changes"),
        "{out}"
    );
    let (code, out) = cli(
        &kubeconfig,
        &["-f", changed.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(code, 2, "{out}");
    let parsed: PlanDocument = serde_json::from_str(&out).expect("JSON as pinned");
    assert!(
        matches!(&parsed.runners[0].actions[..], [Action::Update { fields, .. }] if fields[0].field == "tags")
    );
    let (code, out) = cli(&kubeconfig, &["-n", "ci", "-o", "yaml"]);
    assert_eq!(code, 1, "{out}");
    let parsed: PlanDocument = serde_saphyr::from_str(&out).expect("YAML as pinned");
    assert_eq!(parsed, doc);
    assert_eq!(gitlab_writes(&env), writes, "the binary wrote to GitLab");
    assert_eq!(
        env.fingerprint().await,
        before,
        "the binary wrote to Kubernetes"
    );
}

pub(crate) fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "runner-operator-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `runner-operator plan ARGS`: exit code and stdout (stderr appended).
pub(crate) fn cli(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner-operator"))
        .arg("plan")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("runner-operator runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}
