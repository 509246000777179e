//! `plan` and `import` against the GitLab emulator and a cluster: each kind of change and each
//! blocking reason, nothing written by either, the JSON schema pinned, the exit codes, and the
//! round trip import → apply → adoption with one reset → plan says nothing to do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use runner_operator::crd::{ConnectionKind, ConnectionRef, Runner};
use runner_operator::import::{self, Selection, Target};
use runner_operator::preview::{self, Action, Outcome, PlanDocument, RunnerPlan, Source, input};
use serde_json::{Value, json};

use crate::cluster::Backend;
use crate::operator::Env;

const ROOT: &str = "glpat-emulator-root";

fn spec(extra: Value) -> Value {
    let mut s = json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"});
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    s
}

/// Every write the emulator served (anything but GET).
fn gitlab_writes(env: &Env) -> BTreeMap<String, u64> {
    env.gitlab
        .request_counts()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .collect()
}

async fn root(env: &Env, method: &str, path: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    reqwest::Client::new()
        .request(method, format!("{}/api/v4{path}", env.gitlab.url()))
        .header("PRIVATE-TOKEN", ROOT)
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// A runner made by hand (not by the operator): its id.
async fn hand_made(env: &Env, body: Value) -> i64 {
    root(env, "POST", "/user/runners", body).await["id"]
        .as_i64()
        .expect("id")
}

async fn plan_cluster(env: &Env) -> PlanDocument {
    let runners = input::from_cluster(&env.client, Some("ci"), false)
        .await
        .expect("runners");
    preview::plan_all(&Source::Cluster(env.client.clone()), runners).await
}

fn find<'a>(doc: &'a PlanDocument, name: &str) -> &'a RunnerPlan {
    doc.runners
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not planned: {doc:#?}"))
}

fn blocked(doc: &PlanDocument, name: &str) -> (String, String) {
    let p = find(doc, name);
    assert_eq!(p.outcome, Outcome::Blocked, "{p:#?}");
    assert!(p.actions.is_empty(), "{p:#?}");
    (
        p.reason.clone().unwrap_or_default(),
        p.message.clone().unwrap_or_default(),
    )
}

async fn plan_names_every_change_and_blocking_reason_and_writes_nothing(backend: Backend) {
    let mut env = Env::start(backend, None).await;
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

fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "runner-operator-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `runner-operator plan ARGS`: exit code and stdout (stderr appended).
fn cli(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String) {
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

async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean(backend: Backend) {
    let env = Env::start(backend, None).await;
    let api = env.gitlab.project_id("platform/api");
    let web = env.gitlab.project_id("platform/web").unwrap();
    let platform = env.gitlab.group_id("platform");
    // Made by hand: a project runner also serving platform/web, locked, with odd characters; a
    // group runner; an instance runner; and one the operator already manages.
    let project_runner = hand_made(&env, json!({"runner_type": "project_type", "project_id": api, "description": "GPU box #1: \"fast\" (ünïcode) — don't pause!", "tag_list": "gpu,cuda", "run_untagged": false, "maximum_timeout": 7200, "maintenance_note": "Ask @ops\nbefore pausing", "access_level": "ref_protected"})).await;
    root(
        &env,
        "POST",
        &format!("/projects/{web}/runners"),
        json!({"runner_id": project_runner}),
    )
    .await;
    root(
        &env,
        "PUT",
        &format!("/runners/{project_runner}"),
        json!({"locked": true}),
    )
    .await;
    let group_runner = hand_made(&env, json!({"runner_type": "group_type", "group_id": platform, "description": "GPU box #1: \"fast\" (ünïcode) — don't pause!", "paused": true})).await;
    let instance_runner = hand_made(
        &env,
        json!({"runner_type": "instance_type", "description": "Shared autoscaler"}),
    )
    .await;
    env.apply("managed", spec(json!({"description": "managed"})))
        .await;
    let managed = env
        .ready("managed")
        .await
        .status
        .unwrap()
        .runner_id
        .unwrap();

    let gl = runner_operator::gitlab::GitLabClient::new(
        runner_operator::gitlab::ClientConfig::new(env.gitlab.url(), ROOT.to_string().into()),
    )
    .unwrap();
    let target = Target {
        connection: ConnectionRef {
            kind: ConnectionKind::ClusterGitLabConnection,
            name: "gitlab-root".into(),
        },
        namespace: "ci".into(),
        include_managed: false,
    };
    let claims = import::claims(&env.client).await;
    let writes = gitlab_writes(&env);
    let sel = Selection {
        projects: vec!["platform/api".into()],
        groups: vec!["platform".into()],
        instance: true,
        ..Default::default()
    };
    let imported = import::import(&gl, &sel, &target, &claims)
        .await
        .expect("import");
    assert_eq!(gitlab_writes(&env), writes, "import wrote to GitLab");
    // The managed runner is listed, not written.
    assert_eq!(imported.managed.len(), 1, "{:?}", imported.managed);
    assert_eq!(
        (
            imported.managed[0].runner_id,
            imported.managed[0].by.as_str()
        ),
        (managed, "ci/managed")
    );
    let by_id: BTreeMap<i64, &Runner> = imported
        .manifests
        .iter()
        .map(|(_, r)| (r.spec.adopt.as_ref().unwrap().runner_id, r))
        .collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        [project_runner, group_runner, instance_runner]
    );
    let p = &by_id[&project_runner].spec;
    assert_eq!(p.project.as_deref(), Some("platform/api"));
    assert_eq!(p.assigned_projects, ["platform/web"]);
    assert_eq!(p.tags, ["cuda", "gpu"]);
    assert_eq!(
        (p.run_untagged, p.locked, p.maximum_timeout),
        (Some(false), Some(true), Some(7200))
    );
    assert_eq!(
        p.maintenance_note.as_deref(),
        Some("Ask @ops\nbefore pausing")
    );
    assert_eq!(
        p.description.as_deref(),
        Some("GPU box #1: \"fast\" (ünïcode) — don't pause!")
    );
    assert_eq!(by_id[&group_runner].spec.group.as_deref(), Some("platform"));
    assert_eq!(by_id[&group_runner].spec.paused, Some(true));
    // Same description, distinct names.
    let names: Vec<String> = imported.manifests.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names,
        [
            "gpu-box-1-fast-n-code-don-t-pause".to_string(),
            format!("gpu-box-1-fast-n-code-don-t-pause-{group_runner}"),
            "shared-autoscaler".into()
        ]
    );
    // Filters: tag, paused, description.
    let only = |sel: Selection| {
        let (gl, target, claims) = (gl.clone(), target.clone(), claims.clone());
        async move {
            let mut ids: Vec<i64> = import::import(&gl, &sel, &target, &claims)
                .await
                .unwrap()
                .manifests
                .iter()
                .map(|(_, r)| r.spec.adopt.as_ref().unwrap().runner_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let all = || sel.clone();
    assert_eq!(
        only(Selection {
            tags: vec!["gpu".into()],
            ..all()
        })
        .await,
        [project_runner]
    );
    assert_eq!(
        only(Selection {
            paused: Some(true),
            ..all()
        })
        .await,
        [group_runner]
    );
    env.gitlab.touch_runner(instance_runner);
    assert_eq!(
        only(Selection {
            status: Some("online".into()),
            ..all()
        })
        .await,
        [instance_runner]
    );
    assert_eq!(
        only(Selection {
            description: Some(regex::Regex::new("^Shared").unwrap()),
            ..all()
        })
        .await,
        [instance_runner]
    );
    assert_eq!(
        only(Selection {
            ids: vec![instance_runner],
            ..Default::default()
        })
        .await,
        [instance_runner]
    );
    // With --include-managed, the managed one too, its marker stripped from the note.
    let with_managed = import::import(
        &gl,
        &Selection {
            ids: vec![managed],
            ..Default::default()
        },
        &Target {
            include_managed: true,
            ..target.clone()
        },
        &claims,
    )
    .await
    .unwrap();
    assert_eq!(with_managed.manifests[0].1.spec.maintenance_note, None);

    // Round trip: the YAML as printed, applied as is.
    let yaml = import::to_yaml(&imported).unwrap();
    let docs = input::parse("import", &yaml).expect("import output parses");
    assert_eq!(docs.len(), 3);
    let root_conn: Value = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "ClusterGitLabConnection", "metadata": {"name": "gitlab-root"}, "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-root-token", "namespace": "runner-operator"}}});
    let token: Secret = serde_json::from_value(
        json!({"metadata": {"name": "gitlab-root-token"}, "stringData": {"token": ROOT}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "runner-operator")
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let conn: runner_operator::crd::ClusterGitLabConnection =
        serde_json::from_value(root_conn).unwrap();
    Api::all(env.client.clone())
        .create(&PostParams::default(), &conn)
        .await
        .unwrap();
    let counted = [
        "PUT /runners/:id",
        "POST /projects/:id/runners",
        "DELETE /projects/:id/runners/:runner_id",
        "POST /runners/:id/reset_authentication_token",
    ];
    let before: Vec<u64> = counted
        .iter()
        .map(|c| env.gitlab.request_count(c))
        .collect();
    for r in &docs {
        env.runners()
            .patch(
                &r.name_any(),
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(r),
            )
            .await
            .unwrap();
    }
    for r in &docs {
        let st = env.ready(&r.name_any()).await.status.unwrap();
        assert_eq!(st.last_rotation_reason.as_deref(), Some("Adopted"));
    }
    let after: Vec<u64> = counted
        .iter()
        .map(|c| env.gitlab.request_count(c))
        .collect();
    assert_eq!(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        [0, 0, 0, 3],
        "exactly one reset per runner, no update and no (un)assignment ({counted:?})"
    );
    for id in [project_runner, group_runner, instance_runner] {
        assert_eq!(
            env.gitlab_runner(id).unwrap().projects.len(),
            if id == project_runner { 2 } else { 0 }
        );
    }
    let doc = plan_cluster(&env).await;
    for r in &docs {
        let p = find(&doc, &r.name_any());
        assert_eq!(p.outcome, Outcome::NoChanges, "{p:#?}");
    }
    assert_eq!(
        preview::exit_code(&doc),
        0,
        "{}",
        preview::render_text(&doc)
    );
}

/// The JSON Schema of `plan -o json`, pinned: a change to the document's shape must change
/// docs/plan-output.schema.json too (`UPDATE_DOCS=1` rewrites it).
#[test]
fn plan_output_schema_is_pinned() {
    let schema = schemars::schema_for!(PlanDocument);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plan-output.schema.json");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let pinned = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        pinned == text,
        "docs/plan-output.schema.json is stale: run UPDATE_DOCS=1 cargo test --test it plan_output_schema"
    );
}

mod local {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_names_every_change_and_blocking_reason_and_writes_nothing() {
        super::plan_names_every_change_and_blocking_reason_and_writes_nothing(
            crate::cluster::Backend::Local,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean() {
        super::import_then_apply_adopts_with_one_reset_and_plan_is_clean(
            crate::cluster::Backend::Local,
        )
        .await
    }
}

mod real {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
    async fn plan_names_every_change_and_blocking_reason_and_writes_nothing() {
        super::plan_names_every_change_and_blocking_reason_and_writes_nothing(
            crate::cluster::Backend::Real,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
    async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean() {
        super::import_then_apply_adopts_with_one_reset_and_plan_is_clean(
            crate::cluster::Backend::Real,
        )
        .await
    }
}
