//! `import`: project, group and instance runners, filters, managed runners skipped, special
//! characters; the round trip import → apply → adoption with one reset → plan is clean.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use runner_operator::crd::{ConnectionKind, ConnectionRef, Runner};
use runner_operator::import::{self, Selection, Target};
use runner_operator::preview::{self, Outcome, input};
use serde_json::{Value, json};

use crate::cluster::Backend;
use crate::operator::Env;

use super::*;

pub(crate) async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean(backend: Backend) {
    let env = Env::start(backend).await;
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
    let root_conn: Value = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "ClusterGitLabConnection", "metadata": {"name": "gitlab-root"}, "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-root-token", "namespace": "runner-operator"},
        // Instance runners and adoption through a cluster connection are opted into.
        "tenancy": {"rules": [{"name": "platform", "namespaces": {"names": ["ci"]}, "runnerTypes": ["instance_type", "group_type", "project_type"], "adopt": "Any"}]}}});
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
