//! Reliability under faults (issue: lost answers, Retry-After, honest Ready, stalls): each
//! behaviour with a named test against the emulators.

use std::time::Duration;

use gitlab_emulator::{Fault, FaultAction};
use kube::api::DeleteParams;
use serde_json::{Value, json};

use crate::cluster::Backend;
use crate::operator::Env;

mod gitlab;
mod suite;

/// The n-th management write reaches GitLab and its answer is lost, as when the operator dies
/// right after GitLab did the work.
pub(crate) fn lose_nth_write(n: u32) -> Fault {
    Fault {
        endpoint: None,
        path_contains: None,
        writes_only: true,
        skip: n - 1,
        times: 1,
        action: FaultAction::LoseAnswer,
    }
}

pub(crate) fn lose_answer(endpoint: &str, times: u32) -> Fault {
    Fault {
        endpoint: Some(endpoint.into()),
        path_contains: None,
        writes_only: false,
        skip: 0,
        times,
        action: FaultAction::LoseAnswer,
    }
}

pub(crate) fn base() -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api",
           "description": "before", "tags": ["linux"], "maintenanceNote": "note"})
}

/// `POST /user/runners` is processed but its answer lost; the user edits the spec before the
/// operator tries again. Whatever was edited, the operator finds the runner it created (by the
/// marker, which names the Runner's uid), converges it, and leaves exactly one runner behind —
/// and none once the Runner is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn lost_create_then_any_spec_edit_finds_the_created_runner() {
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
        let mut env = Env::start(Backend::Local).await;
        env.gitlab.inject(lose_answer("POST /user/runners", 1));
        // Hold the search for it back until the spec was edited.
        env.gitlab.inject(Fault {
            endpoint: Some("GET /projects/:id/runners".into()),
            path_contains: None,
            writes_only: false,
            skip: 0,
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
        env.run_operator();
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

/// Requests that arrived inside a wait GitLab asked for: after a 429 answered at T with a wait
/// until U, nothing with the same access token may arrive in (T + 100 ms, U) — 100 ms for
/// requests already on the wire.
pub(crate) fn inside_retry_windows(log: &[gitlab_emulator::model::LoggedRequest]) -> Vec<String> {
    let grace = Duration::from_millis(100);
    let mut bad = vec![];
    for w in log.iter().filter(|r| r.status == 429) {
        let Some(until) = w.retry_until else { continue };
        for r in log.iter().filter(|r| r.token == w.token) {
            if r.at > w.at + grace && r.at + Duration::from_millis(5) < until {
                bad.push(format!(
                    "{} arrived {:?} after a 429 on {} that asked to wait {:?}",
                    r.endpoint,
                    r.at.duration_since(w.at).unwrap_or_default(),
                    w.endpoint,
                    until.duration_since(w.at).unwrap_or_default()
                ));
            }
        }
    }
    bad
}

/// After a 429 every caller of that GitLab and token waits: creates, runner reads, project
/// lookups, assignments, token resets and the connection checks alike, whether Retry-After
/// comes in seconds or as an HTTP date, under single 429 pulses and a Rack::Attack throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn retry_after_holds_every_caller_of_the_connection() {
    for http_date in [false, true] {
        let env = Env::start(Backend::Local).await;
        env.gitlab
            .update_settings(|s| s.retry_after_http_date = http_date);
        // The client alone would go much faster than GitLab allows.
        kube::Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
            .patch(
                "gitlab",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"spec": {"rateLimit": {"requestsPerSecond": 200, "burst": 100}}}),
                ),
            )
            .await
            .unwrap();
        // Single pulses on several kinds of call…
        for endpoint in [
            "POST /user/runners",
            "GET /runners/:id",
            "GET /projects/:id",
            "POST /projects/:id/runners",
            "POST /runners/:id/reset_authentication_token",
        ] {
            env.gitlab.inject(Fault {
                endpoint: Some(endpoint.into()),
                path_contains: None,
                writes_only: false,
                skip: 0,
                times: 1,
                action: FaultAction::Status {
                    status: 429,
                    body: None,
                    retry_after: Some(2),
                },
            });
        }
        let n = 6;
        for i in 0..n {
            let mut spec = base();
            spec["assignedProjects"] = json!(["platform/web"]);
            env.apply(&format!("rl{i}"), spec).await;
        }
        for i in 0..n {
            env.wait_for("ready", Duration::from_secs(60), || async {
                let r = env.runners().get(&format!("rl{i}")).await.ok()?;
                r.status?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            })
            .await;
        }
        // …then a Rack::Attack-style throttle while every token is rotated at once.
        env.gitlab.update_settings(|s| {
            s.throttle = Some(gitlab_emulator::Throttle {
                limit: 8,
                period_seconds: 2,
            })
        });
        for i in 0..n {
            env.runners()
                .patch(
                    &format!("rl{i}"),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}})),
                )
                .await
                .unwrap();
        }
        env.wait_for("all rotated", Duration::from_secs(60), || async {
            let mut done = 0;
            for i in 0..n {
                let st = env.status(&format!("rl{i}")).await?;
                if st.handled_rotate_request.as_deref() == Some("now") {
                    done += 1;
                }
            }
            (done == n).then_some(())
        })
        .await;
        let log = env.gitlab.request_log();
        let throttled = log.iter().filter(|r| r.status == 429).count();
        assert!(
            throttled >= 5,
            "http_date={http_date}: only {throttled} 429s"
        );
        let bad = inside_retry_windows(&log);
        assert!(
            bad.is_empty(),
            "http_date={http_date}: {} requests inside Retry-After windows:\n{}",
            bad.len(),
            bad.join("\n")
        );
        assert_eq!(env.gitlab.runners().len(), n, "nothing lost or duplicated");
    }
}

/// The connection's access token stops working (revoked: 401), then the Runner is deleted: it
/// says DeletionBlocked with both ways out, and finishes once the token is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_revoked_token_blocks_deletion_with_a_way_out() {
    let env = Env::start(Backend::Local).await;
    env.apply("doomed", base()).await;
    let id = env.ready("doomed").await.status.unwrap().runner_id.unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "ci");
    let set_token = |token: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "gitlab-api-token",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"stringData": {"token": token}})),
                )
                .await
                .unwrap();
        }
    };
    set_token("glpat-revoked-by-an-admin").await;
    env.runners()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let msg = env.condition("doomed", "Ready", "DeletionBlocked").await;
    assert!(
        msg.contains("401")
            && msg.contains("replace it in its Secret")
            && msg.contains("deletionPolicy: Orphan"),
        "{msg}"
    );
    env.has_event("doomed", "DeletionBlocked").await;
    assert!(
        env.gitlab_runner(id).is_some(),
        "nothing deleted with a dead token"
    );
    set_token("glpat-emulator-bot").await;
    env.wait_for(
        "deleted once the token works",
        Duration::from_secs(30),
        || async {
            (env.gitlab_runner(id).is_none()
                && env.runners().get_opt("doomed").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
}

/// A Runner stored under an older or looser schema (here: a runnerType this version does not
/// know) must not stall the others: it gets a condition and an event saying what to fix, and
/// new Runners still become Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_runner_that_does_not_decode_stalls_nothing() {
    let env = Env::start(Backend::Local).await;
    let local = env.kube.local().expect("the in-memory API's back door");
    local
        .create_unchecked(
            "gitlab.runner-operator.dev",
            "runners",
            json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner",
                   "metadata": {"name": "legacy", "namespace": "ci"},
                   "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "shared_type", "maximumTimeout": "ten minutes"}}),
        )
        .unwrap();
    env.apply("healthy", base()).await;
    env.ready("healthy").await;
    let msg = env
        .wait("the undecodable Runner is reported", || async {
            let obj = kube::Api::<kube::api::DynamicObject>::namespaced_with(
                env.client.clone(),
                "ci",
                &kube::api::ApiResource::erase::<runner_operator::crd::Runner>(&()),
            )
            .get("legacy")
            .await
            .ok()?;
            obj.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "InvalidObject")
                .and_then(|c| c["message"].as_str().map(str::to_string))
        })
        .await;
    assert!(
        msg.contains("ten minutes") && msg.contains("other Runners are not affected"),
        "{msg}"
    );
    env.has_event("legacy", "InvalidObject").await;
    assert_eq!(
        env.gitlab.runners().len(),
        1,
        "nothing done in GitLab for it"
    );
}

/// Settings that would loop or half-fail are stopped before the first GitLab write. Admission
/// refuses them (`crds::bad_runners`); these are stored through the in-memory API's back door,
/// as objects from before the rules would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn settings_that_would_loop_are_refused_before_any_gitlab_write() {
    let env = Env::start(Backend::Local).await;
    let local = env.kube.local().expect("back door");
    let store = |name: &str, extra: Value| {
        let mut spec = base();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        local
            .create_unchecked(
                "gitlab.runner-operator.dev",
                "runners",
                json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner",
                       "metadata": {"name": name, "namespace": "ci"}, "spec": spec}),
            )
            .unwrap();
    };
    store("tight", json!({"tokenRotation": {"interval": "0d"}}));
    store("badname", json!({"tokenSecret": {"name": "Bad_Name."}}));
    store(
        "badlabels",
        json!({"tokenSecret": {"labels": {"not a key": "v"}}}),
    );
    let msg = env.condition("tight", "Ready", "InvalidSpec").await;
    assert!(msg.contains("below the 10m floor"), "{msg}");
    for name in ["badname", "badlabels"] {
        let msg = env.condition(name, "Ready", "InvalidSpec").await;
        assert!(
            msg.contains("could not be written") && msg.contains("nothing was done in GitLab"),
            "{msg}"
        );
    }
    let writes: u64 = env
        .gitlab
        .request_counts()
        .iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        writes,
        0,
        "no GitLab write: {:?}",
        env.gitlab.request_counts()
    );
    assert!(env.gitlab.runners().is_empty());
}

/// Deleting or replacing a connection's token Secret is noticed at once (the Secrets are
/// watched, metadata only), not at the next resync (here 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn connection_secrets_are_watched() {
    let env = Env::start_with(Backend::Local, Duration::from_secs(300)).await;
    let conns: kube::Api<runner_operator::crd::GitLabConnection> =
        kube::Api::namespaced(env.client.clone(), "ci");
    let ready = |want: &'static str| {
        let conns = conns.clone();
        async move {
            let c = conns.get("gitlab").await.ok()?;
            let cond = c
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (cond.status == want).then_some(cond.message)
        }
    };
    env.wait("connection Ready", || ready("True")).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "ci");
    let original = secrets.get("gitlab-api-token").await.unwrap();
    secrets
        .delete("gitlab-api-token", &DeleteParams::default())
        .await
        .unwrap();
    let msg = env
        .wait_for("not Ready soon after", Duration::from_secs(20), || {
            ready("False")
        })
        .await;
    assert!(msg.contains("gitlab-api-token"), "{msg}");
    let mut again = original.clone();
    again.metadata.resource_version = None;
    again.metadata.uid = None;
    again.metadata.creation_timestamp = None;
    again.metadata.managed_fields = None;
    secrets
        .create(&kube::api::PostParams::default(), &again)
        .await
        .unwrap();
    env.wait_for("Ready again soon after", Duration::from_secs(20), || {
        ready("True")
    })
    .await;
}

/// The connection's access token stops working (revoked or expired: GitLab answers 401) while
/// Runners are created, updated and rotated: each says GitLabUnauthorized with the fix, no
/// runner is half-made, and the Secret keeps the live token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_dead_access_token_stops_everything_cleanly() {
    let env = Env::start(Backend::Local).await;
    env.apply("alive", base()).await;
    let id = env.ready("alive").await.status.unwrap().runner_id.unwrap();
    let live = env.secret_token("alive-runner-token").await.unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "ci");
    secrets
        .patch(
            "gitlab-api-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"token": "glpat-expired-long-ago"}})),
        )
        .await
        .unwrap();
    // Create, update and rotate with the dead token.
    env.apply("newborn", base()).await;
    let mut spec = base();
    spec["description"] = json!("changed");
    env.apply("alive", spec).await;
    env.runners()
        .patch(
            "alive",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "now"}}})),
        )
        .await
        .unwrap();
    for name in ["newborn", "alive"] {
        let msg = env.condition(name, "Ready", "GitLabUnauthorized").await;
        assert!(msg.contains("renew it in its Secret"), "{name}: {msg}");
    }
    assert_eq!(
        env.gitlab.runners().len(),
        1,
        "nothing created with a dead token"
    );
    let g = env.gitlab_runner(id).unwrap();
    assert_eq!(g.description.as_deref(), Some("before"), "nothing updated");
    assert_eq!(g.token, live, "nothing rotated");
    assert_eq!(
        env.secret_token("alive-runner-token").await.as_deref(),
        Some(live.as_str()),
        "the Secret keeps the live token"
    );
}
