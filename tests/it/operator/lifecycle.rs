//! A Runner's life: create, update, assign, delete; group and instance runners; drift and
//! runners deleted by hand; adoption.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::Backend;

use super::*;

pub(crate) async fn create_update_assign_and_delete(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("builders", project_spec()).await;
    let r = env.ready("builders").await;
    let st = r.status.clone().unwrap();
    let id = st.runner_id.unwrap();
    let g = env.gitlab_runner(id).unwrap();
    assert_eq!(g.projects, vec!["platform/api", "platform/web"]);
    assert_eq!(g.tags, vec!["docker", "linux"]);
    assert_eq!(
        (g.description.as_deref(), g.run_untagged, g.maximum_timeout),
        (Some("Linux builders"), false, Some(3600))
    );
    let note = g.maintenance_note.clone().unwrap();
    assert!(
        note.starts_with("team platform\n\n[runner-operator: managed by Runner ci/builders, uid "),
        "{note}"
    );
    assert_eq!(
        st.project_ids,
        vec![
            env.gitlab.project_id("platform/api").unwrap(),
            env.gitlab.project_id("platform/web").unwrap()
        ]
    );
    assert_eq!(st.last_rotation_reason.as_deref(), Some("Created"));
    // The Secret holds the token GitLab issued, in the chart's layout.
    let secret = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("builders-runner-token")
        .await
        .unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(String::from_utf8_lossy(&data["runner-token"].0), g.token);
    assert_eq!(data["runner-registration-token"].0, b"");
    assert_eq!(
        String::from_utf8_lossy(&data["runner-id"].0),
        id.to_string()
    );
    assert!(env.token_works(&g.token).await);
    assert_eq!(secret.owner_references()[0].uid, r.uid().unwrap());
    env.has_event("builders", "Created").await;
    env.has_event("builders", "Assigned").await;

    // Update: only what differs, assignments follow the spec.
    let mut spec = project_spec();
    spec["tags"] = json!(["linux"]);
    spec["paused"] = json!(true);
    spec["assignedProjects"] = json!([]);
    env.apply("builders", spec).await;
    env.wait("GitLab updated", || async {
        let g = env.gitlab_runner(id)?;
        (g.tags == vec!["linux"] && g.paused && g.projects == vec!["platform/api"]).then_some(())
    })
    .await;
    env.ready("builders").await;
    env.has_event("builders", "Unassigned").await;
    // The update says what moved, before and after.
    let updated = env.has_event("builders", "Updated").await.2;
    assert!(
        updated.contains("tags: [docker, linux] → [linux]")
            && updated.contains("paused: false → true"),
        "{updated}"
    );
    assert_eq!(
        env.gitlab_runner(id).unwrap().token,
        g.token,
        "updates keep the token"
    );

    // A token rotation on request.
    env.runners().patch("builders", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "story"}}}))).await.unwrap();
    env.has_event("builders", "TokenRotated").await;

    // Delete: gone from GitLab, finalizer released, Secret collected.
    env.runners()
        .delete("builders", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("Runner gone", || async {
        env.runners()
            .get_opt("builders")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(env.gitlab_runner(id).is_none());
    // The story, in order, in events and in the log: one line per GitLab write.
    env.has_event("builders", "Deleted").await;
    let story: Vec<String> = env
        .events_in_order("builders")
        .await
        .into_iter()
        .filter(|e| e.0 == "Normal")
        .map(|e| e.1)
        .collect();
    let at = |reason: &str| {
        story
            .iter()
            .position(|r| r == reason)
            .unwrap_or_else(|| panic!("no {reason} event in {story:?}"))
    };
    assert!(at("Created") < at("Assigned"), "{story:?}");
    assert!(
        at("Assigned") < at("Updated").min(at("Unassigned")),
        "{story:?}"
    );
    assert!(
        at("Updated").max(at("Unassigned")) < at("TokenRotated"),
        "{story:?}"
    );
    assert!(at("TokenRotated") < at("Deleted"), "{story:?}");
    let logs =
        String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let web = env.gitlab.project_id("platform/web").unwrap();
    for line in [
        format!("registered GitLab runner {id} and wrote its token"),
        format!("assigned runner {id} to project {web}"),
        format!("unassigned runner {id} from project {web}"),
        format!("reset the token of runner {id}"),
        format!("deleted GitLab runner {id}"),
    ] {
        assert!(
            logs.contains(&line),
            "no log line {line:?} in {}",
            logs.lines()
                .filter(|l| l.contains("ssigned"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The garbage collector (kube-controller-manager on a real cluster) removes the owned
    // Secret, asynchronously: it learns of a new CRD's kind at its next discovery sync (every
    // 30 s), so right after the CRDs are installed this can take that long.
    env.wait_for(
        "token Secret garbage-collected",
        Duration::from_secs(90),
        || async {
            env.secret_token("builders-runner-token")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

pub(crate) async fn group_and_instance_runners_through_both_connection_kinds(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("group", json!({"connectionRef": {"kind": "ClusterGitLabConnection", "name": "jihulab"}, "runnerType": "group_type", "group": "platform", "tags": ["linux"], "accessLevel": "ref_protected"})).await;
    env.apply("instance", json!({"connectionRef": {"name": "gitlab-admin"}, "runnerType": "instance_type", "deletionPolicy": "Orphan", "tokenSecret": {"format": "GitLabRunnerOperator", "name": "inst-token"}})).await;
    let g = env.ready("group").await.status.unwrap();
    let i = env.ready("instance").await.status.unwrap();
    let gr = env.gitlab_runner(g.runner_id.unwrap()).unwrap();
    assert_eq!(
        (
            gr.runner_type.as_str(),
            gr.group.as_deref(),
            gr.access_level.as_str()
        ),
        ("group_type", Some("platform"), "ref_protected")
    );
    assert_eq!(
        env.gitlab_runner(i.runner_id.unwrap()).unwrap().runner_type,
        "instance_type"
    );
    let s = Api::<Secret>::namespaced(env.client.clone(), "ci")
        .get("inst-token")
        .await
        .unwrap();
    assert!(
        !s.data.unwrap().contains_key("runner-registration-token"),
        "GitLabRunnerOperator format: runner-token only"
    );
    // Orphan leaves the runner in GitLab.
    env.runners()
        .delete("instance", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("instance Runner gone", || async {
        env.runners()
            .get_opt("instance")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(env.gitlab_runner(i.runner_id.unwrap()).is_some());
    env.has_event("instance", "Orphaned").await;
}

pub(crate) async fn hand_edits_are_reverted_and_deleted_runners_recreated(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("drift", project_spec()).await;
    let id = env.ready("drift").await.status.unwrap().runner_id.unwrap();
    assert_eq!(
        env.as_root(
            reqwest::Method::PUT,
            &format!("/runners/{id}"),
            Some(json!({"description": "hand edit", "tag_list": "x"}))
        )
        .await,
        200
    );
    env.wait("drift reverted", || async {
        env.gitlab_runner(id)
            .filter(|g| {
                g.description.as_deref() == Some("Linux builders")
                    && g.tags == vec!["docker", "linux"]
            })
            .map(|_| ())
    })
    .await;
    env.has_event("drift", "DriftReverted").await;
    // Deleted behind our back: a new runner, a new token in the Secret.
    assert_eq!(
        env.as_root(reqwest::Method::DELETE, &format!("/runners/{id}"), None)
            .await,
        204
    );
    let new_id = env
        .wait("recreated", || async {
            env.status("drift").await?.runner_id.filter(|n| *n != id)
        })
        .await;
    // Status records the new id as soon as the runner exists (before its assignments): wait
    // for what GitLab shows.
    let g = env
        .wait("recreated and assigned", || async {
            env.gitlab_runner(new_id)
                .filter(|g| g.projects == vec!["platform/api", "platform/web"])
        })
        .await;
    env.ready("drift").await;
    assert_eq!(
        env.secret_token("drift-runner-token").await.as_deref(),
        Some(g.token.as_str())
    );
    env.has_event("drift", "Recreated").await;
    assert_eq!(env.gitlab.runners().len(), 1, "no duplicate");
}

pub(crate) async fn adoption_resets_the_token_and_claims_are_exclusive(backend: Backend) {
    let env = Env::start(backend).await;
    let api = env.gitlab.project_id("platform/api").unwrap();
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", env.gitlab.url()))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .json(&json!({"runner_type": "project_type", "project_id": api, "description": "made by hand"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, old_token) = (
        resp["id"].as_i64().unwrap(),
        resp["token"].as_str().unwrap().to_string(),
    );
    // Without adopt, a Runner never touches it: it creates its own.
    let mut spec = json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "description": "made by hand"});
    env.apply("own", spec.clone()).await;
    let own_id = env.ready("own").await.status.unwrap().runner_id.unwrap();
    assert_ne!(own_id, id);
    assert!(env.token_works(&old_token).await);
    spec["adopt"] = json!({"runnerId": id});
    let writes = |e: &Env| {
        [
            "PUT /runners/:id",
            "POST /projects/:id/runners",
            "POST /runners/:id/reset_authentication_token",
        ]
        .map(|w| e.gitlab.request_count(w))
    };
    let before = writes(&env);
    env.apply("adopter", spec.clone()).await;
    let st = env.ready("adopter").await.status.unwrap();
    assert_eq!(
        (st.runner_id, st.last_rotation_reason.as_deref()),
        (Some(id), Some("Adopted"))
    );
    assert!(
        !env.token_works(&old_token).await,
        "adoption reset the token"
    );
    let token = env.secret_token("adopter-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
    // The spec matches the runner: the reset is the only write, and the note stays unmarked.
    let after = writes(&env);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [0, 0, 1],
        "no update, no assignment, one reset"
    );
    assert_eq!(env.gitlab_runner(id).unwrap().maintenance_note, None);
    env.has_event("adopter", "Adopted").await;
    assert!(
        !env.events("adopter")
            .await
            .iter()
            .any(|e| e.1 == "AdoptionChangesField"),
        "nothing changed"
    );
    // A second claimant is refused; the first keeps its runner.
    env.apply("thief", spec).await;
    let msg = env.condition("thief", "Ready", "RunnerClaimed").await;
    assert!(msg.contains("managed by Runner ci/adopter"), "{msg}");
    assert!(env.token_works(&token).await);
    // An adoption that changes fields says which, before and after, one event per field.
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", env.gitlab.url()))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .json(&json!({"runner_type": "project_type", "project_id": api, "description": "Hand-written by the platform team", "tag_list": "linux"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hand = resp["id"].as_i64().unwrap();
    env.apply(
        "adopter2",
        json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["linux", "docker"], "adopt": {"runnerId": hand}}),
    )
    .await;
    env.ready("adopter2").await;
    let changes: Vec<String> = env
        .events("adopter2")
        .await
        .into_iter()
        .filter(|e| e.1 == "AdoptionChangesField")
        .map(|e| e.2)
        .collect();
    assert!(
        changes.iter().any(|m| m.contains(&format!(
            "adopting GitLab runner {hand} changes description: \"Hand-written by the platform team\" → \"\""
        ))),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|m| m.contains("tags: [linux] → [docker, linux]")),
        "{changes:?} {:?}",
        env.gitlab_runner(hand)
    );
    assert_eq!(
        changes.len(),
        2,
        "one event per changed field: {changes:?} {:?}",
        env.gitlab_runner(hand)
    );
    let g = env.gitlab_runner(hand).unwrap();
    assert_eq!((g.description.as_deref(), g.tags.len()), (Some(""), 2));
}
