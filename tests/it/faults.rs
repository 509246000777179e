//! Reliability under faults (issue: lost answers, Retry-After, honest Ready, stalls): each
//! behaviour with a named test against the emulators.

use std::time::Duration;

use kube::api::DeleteParams;
use runner_operator::emulator::{Fault, FaultAction};
use serde_json::{Value, json};

use crate::cluster::Backend;
use crate::operator::Env;

fn lose_answer(endpoint: &str, times: u32) -> Fault {
    Fault {
        endpoint: Some(endpoint.into()),
        path_contains: None,
        times,
        action: FaultAction::LoseAnswer,
    }
}

fn base() -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
           "description": "before", "tags": ["linux"], "maintenanceNote": "note"})
}

/// `POST /user/runners` is processed but its answer lost; the user edits the spec before the
/// operator tries again. Whatever was edited, the operator finds the runner it created (by the
/// marker, which names the Runner's uid), converges it, and leaves exactly one runner behind —
/// and none once the Runner is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_create_then_any_spec_edit_finds_the_created_runner() {
    let edits = [
        ("description", json!("after")),
        ("tags", json!(["linux", "docker"])),
        ("runUntagged", json!(false)),
        ("paused", json!(true)),
        ("locked", json!(true)),
        ("accessLevel", json!("ref_protected")),
        ("maximumTimeout", json!(7200)),
        ("maintenanceNote", json!("edited note")),
        ("assignedProjects", json!(["platform/web"])),
        ("tokenSecret", json!({"name": "renamed-token"})),
        ("tokenRotation", json!({"interval": "720h"})),
        ("deletionPolicy", json!("Delete")),
    ];
    for (field, value) in edits {
        let mut env = Env::start(Backend::Local, None).await;
        env.gitlab.inject(lose_answer("POST /user/runners", 1));
        // Hold the search for it back until the spec was edited.
        env.gitlab.inject(Fault {
            endpoint: Some("GET /projects/:id/runners".into()),
            path_contains: None,
            times: 10_000,
            action: FaultAction::Status {
                status: 503,
                body: None,
                retry_after: None,
            },
        });
        env.apply("lost", base()).await;
        env.wait("created in GitLab, answer lost, search refused", || async {
            (env.gitlab.runners().len() == 1
                && env.gitlab.request_count("GET /projects/:id/runners") > 0)
                .then_some(())
        })
        .await;
        env.stop_operator().await;
        env.gitlab.clear_faults();
        let mut spec = base();
        spec[field] = value.clone();
        env.apply("lost", spec).await;
        env.run_operator(None);
        let st = env.ready("lost").await.status.unwrap();
        let runners = env.gitlab.runners();
        assert_eq!(
            runners.len(),
            1,
            "{field}: exactly one runner, got {runners:?}"
        );
        assert_eq!(Some(runners[0].id), st.runner_id, "{field}");
        let secret = st.token_secret_name.clone().unwrap();
        let token = env.secret_token(&secret).await.unwrap();
        assert_eq!(
            token, runners[0].token,
            "{field}: the Secret holds the live token"
        );
        match field {
            "description" => assert_eq!(runners[0].description.as_deref(), Some("after")),
            "tags" => assert_eq!(runners[0].tags, vec!["docker", "linux"]),
            "paused" => assert!(runners[0].paused),
            "assignedProjects" => {
                assert_eq!(runners[0].projects, vec!["platform/api", "platform/web"])
            }
            _ => {}
        }
        env.runners()
            .delete("lost", &DeleteParams::default())
            .await
            .unwrap();
        env.wait_for("gone from GitLab", Duration::from_secs(30), || async {
            env.gitlab.runners().is_empty().then_some(())
        })
        .await;
    }
}
