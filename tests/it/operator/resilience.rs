//! Cost and failure: requests per pass at steady state, managers, rate limits and server errors,
//! lost answers after every write, restarts, connections that are gone, rotation storms.

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster::Backend;

use super::*;

/// Status summarizes the runner's managers (0, 1, several with versions and platforms), read
/// when GitLab's status of the runner changes, not on every resync.
pub(crate) async fn runner_managers_are_summarized_in_status(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("fleet", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let r = env.ready("fleet").await;
    let st = r.status.unwrap();
    let rid = st.runner_id.unwrap();
    let m = st
        .gitlab
        .and_then(|g| g.managers)
        .expect("managers summary");
    assert_eq!((m.count, m.summary.as_str()), (0, "0/0"), "never contacted");
    assert_eq!(env.gitlab.request_count("GET /runners/:id/managers"), 0);

    env.gitlab
        .add_manager(rid, "s_one", "18.6.0", "linux", "amd64", Duration::ZERO);
    let managers = |want: &'static str| {
        let env = &env;
        async move {
            env.wait(&format!("managers {want}"), || async {
                let r = env.runners().get("fleet").await.ok()?;
                let m = r.status?.gitlab?.managers?;
                (m.summary == want).then_some(m)
            })
            .await
        }
    };
    let one = managers("1/1").await;
    assert_eq!(one.versions, vec!["18.6.0"]);
    assert_eq!(one.platforms, vec!["linux/amd64"]);

    // Two more processes, one of them offline for hours: GitLab's status of the runner stays
    // online, so the operator only sees them at the next refresh (ten resyncs) — unless the
    // status changes. Make it change: every manager goes quiet, then two come back.
    let reads = env.gitlab.request_count("GET /runners/:id/managers");
    env.gitlab.add_manager(
        rid,
        "s_one",
        "18.6.0",
        "linux",
        "amd64",
        Duration::from_secs(3 * 3600),
    );
    let offline = managers("0/1").await;
    assert_eq!(offline.count, 1);
    env.gitlab
        .add_manager(rid, "s_two", "17.11.0", "linux", "arm64", Duration::ZERO);
    env.gitlab.add_manager(
        rid,
        "s_win",
        "17.9.2",
        "windows",
        "amd64",
        Duration::from_secs(60),
    );
    let several = managers("2/3").await;
    assert_eq!(several.versions, vec!["17.9.2", "17.11.0", "18.6.0"]);
    assert_eq!(several.version, "17.9.2,17.11.0,18.6.0");
    assert_eq!(
        several.platforms,
        vec!["linux/amd64", "linux/arm64", "windows/amd64"]
    );
    assert!(several.last_contact_at.is_some());
    assert_eq!(
        env.gitlab.request_count("GET /runners/:id/managers") - reads,
        2,
        "read once per status change"
    );

    // Steady state: three more resyncs (each one GET of the runner) read no managers.
    let reads = env.gitlab.request_count("GET /runners/:id/managers");
    let gets = env.gitlab.request_count("GET /runners/:id");
    env.wait("three resyncs", || async {
        (env.gitlab.request_count("GET /runners/:id") >= gets + 3).then_some(())
    })
    .await;
    assert_eq!(env.gitlab.request_count("GET /runners/:id/managers"), reads);
}

/// A live runner contacts GitLab every few seconds; the operator does not copy every contact
/// into status, so a resync costs one GET and no write (no status write, no pass it triggers).
pub(crate) async fn live_runners_cost_one_get_and_no_writes_per_resync(backend: Backend) {
    let env = Env::start(backend).await;
    env.apply("live", json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    let rid = env.ready("live").await.status.unwrap().runner_id.unwrap();
    env.gitlab
        .add_manager(rid, "s_live", "18.6.0", "linux", "amd64", Duration::ZERO);
    env.wait("manager seen", || async {
        let g = env.runners().get("live").await.ok()?.status?.gitlab?;
        (g.managers?.summary == "1/1").then_some(())
    })
    .await;
    env.passes(1).await;
    let rv = env
        .runners()
        .get("live")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let before = env.gitlab.request_counts();
    let started = std::time::Instant::now();
    // The runner process contacts GitLab every 100 ms while three resyncs go by.
    let contacting = async {
        loop {
            env.gitlab.touch_runner(rid);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = env.passes(3) => {}
        _ = contacting => {}
    }
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "three resyncs of 2 s, none triggered by the operator's own writes: {:?}",
        started.elapsed()
    );
    let after = env.gitlab.request_counts();
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(delta("GET /runners/:id/managers"), 0);
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0);
    assert_eq!(
        env.runners()
            .get("live")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "no status write"
    );
}

/// Many Runners naming the same projects cost one lookup per path and connection, not one per
/// Runner.
pub(crate) async fn project_paths_are_resolved_once_per_connection(backend: Backend) {
    let env = Env::start(backend).await;
    for i in 0..4 {
        env.apply(
            &format!("same-{i}"),
            json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type",
            "project": "platform/api", "assignedProjects": ["platform/web"]}),
        )
        .await;
    }
    for i in 0..4 {
        env.ready(&format!("same-{i}")).await;
    }
    assert_eq!(
        env.gitlab.request_count("GET /projects/:id"),
        2,
        "platform/api and platform/web, once each"
    );
}

pub(crate) async fn steady_state_costs_one_get_and_no_writes(backend: Backend) {
    let env = Env::start(backend).await;
    let start = env.gitlab.request_counts();
    env.apply("steady", project_spec()).await;
    env.ready("steady").await;
    // One resync first, so nothing of the creation is still in flight.
    env.passes(1).await;
    let created = env.gitlab.request_counts();
    let grew = |after: &std::collections::BTreeMap<String, u64>,
                before: &std::collections::BTreeMap<String, u64>,
                k: &str| {
        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
    };
    // A create is one POST and one GET; the passes the operator's own Secret and status
    // writes trigger read nothing; then the one resync waited for.
    assert_eq!(grew(&created, &start, "POST /user/runners"), 1);
    assert_eq!(
        grew(&created, &start, "GET /runners/:id"),
        2,
        "the check after creating, then one resync: {created:?}"
    );
    let before = env.gitlab.request_counts();
    let rv_before = env.kube.local().map(|k| k.resource_version());
    let objects_before = env.fingerprint().await;
    let kube_before = env.kube.local().map(|k| k.request_counts());
    let started = std::time::Instant::now();
    env.passes(3).await;
    if let (Some(k), Some(kube_before)) = (env.kube.local(), kube_before) {
        let kube_after = k.request_counts();
        let (per_connection, per_runner): (Vec<_>, Vec<_>) = kube_after
            .iter()
            .filter(|(k, v)| kube_before.get(*k) != Some(*v))
            .map(|(k, v)| (k, v - kube_before.get(k).copied().unwrap_or(0)))
            .partition(|(k, _)| k.ends_with("-token") && !k.contains("steady"));
        assert!(
            per_runner.is_empty(),
            "no Kubernetes requests for the Runner at steady state (reads come from the caches): {per_runner:?}"
        );
        // Each connection's own check reads its access token, once per resync.
        assert!(
            per_connection.iter().all(|(_, n)| *n <= 4),
            "{per_connection:?}"
        );
    }
    // Three resyncs of 2 s (jittered ±10 %): not sooner, or passes are being triggered.
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "{:?}",
        started.elapsed()
    );
    let after = env.gitlab.request_counts();
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let gets = delta("GET /runners/:id");
    assert!((2..=5).contains(&gets), "one GET per resync, got {gets}");
    let writes = gitlab_writes(&before, &after);
    assert_eq!(writes, 0, "no GitLab writes at steady state: {after:?}");
    assert_eq!(
        delta("GET /projects/:id"),
        0,
        "resolved ids come from status"
    );
    assert_eq!(
        env.kube.local().map(|k| k.resource_version()),
        rv_before,
        "no Kubernetes writes at steady state either"
    );
    assert_eq!(
        env.fingerprint().await,
        objects_before,
        "no Kubernetes writes at steady state either"
    );
    // A rotation request after a check that found GitLab matching: one reset, no read first.
    let before = env.gitlab.request_counts();
    env.runners()
        .patch(
            "steady",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "cost"}}})),
        )
        .await
        .unwrap();
    env.wait("rotation handled", || async {
        let st = env.runners().get("steady").await.ok()?.status?;
        (st.handled_rotate_request.as_deref() == Some("cost")).then_some(())
    })
    .await;
    let after = env.gitlab.request_counts();
    assert_eq!(
        grew(
            &after,
            &before,
            "POST /runners/:id/reset_authentication_token"
        ),
        1
    );
    assert!(
        grew(&after, &before, "GET /runners/:id") <= 1,
        "no read before the reset (at most a resync in between): {after:?}"
    );
}

pub(crate) async fn rate_limits_and_server_errors_back_off_without_losing_anything(
    backend: Backend,
) {
    let env = Env::start(backend).await;
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("POST /user/runners".into()),
        path_contains: None,
        writes_only: false,
        skip: 0,
        times: 2,
        action: gitlab_emulator::FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(1),
        },
    });
    env.gitlab.inject(gitlab_emulator::Fault {
        endpoint: Some("GET /projects/:id".into()),
        path_contains: None,
        writes_only: false,
        skip: 0,
        times: 2,
        action: gitlab_emulator::FaultAction::Status {
            status: 503,
            body: None,
            retry_after: None,
        },
    });
    env.apply("flaky", project_spec()).await;
    let st = env.ready("flaky").await.status.unwrap();
    assert_eq!(env.gitlab.runners().len(), 1);
    assert!(
        env.token_works(&env.secret_token("flaky-runner-token").await.unwrap())
            .await
    );
    assert!(st.runner_id.is_some());
}

pub(crate) async fn crash_after_every_gitlab_call_leaves_no_orphan_duplicate_or_dead_token(
    backend: Backend,
) {
    // GitLab writes in order: create, assign; a requested rotation: reset; a spec change: PUT;
    // the deletion: DELETE. The n-th reaches GitLab, its answer is lost, then all runs on.
    for n in 1..=5 {
        let env = Env::start(backend).await;
        env.gitlab.inject(crate::faults::lose_nth_write(n));
        env.apply("crash", project_spec()).await;
        env.ready("crash").await;
        env.runners()
            .patch("crash", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "x"}}})))
            .await
            .unwrap();
        env.wait("rotation handled", || async {
            env.status("crash")
                .await?
                .handled_rotate_request
                .map(|_| ())
        })
        .await;
        let mut spec = project_spec();
        spec["tags"] = json!(["linux"]);
        env.apply("crash", spec).await;
        let st = env.ready("crash").await.status.unwrap();
        let runners = env.gitlab.runners();
        assert_eq!(
            runners.len(),
            1,
            "crash point {n}: exactly one runner, got {runners:?}"
        );
        assert_eq!(Some(runners[0].id), st.runner_id, "crash point {n}");
        assert_eq!(
            runners[0].projects,
            vec!["platform/api", "platform/web"],
            "crash point {n}"
        );
        assert_eq!(runners[0].tags, vec!["linux"], "crash point {n}");
        let token = env.secret_token("crash-runner-token").await.unwrap();
        assert_eq!(
            token, runners[0].token,
            "crash point {n}: the Secret holds the live token"
        );
        assert!(env.token_works(&token).await);
        env.runners()
            .delete("crash", &DeleteParams::default())
            .await
            .unwrap();
        env.wait("deleted everywhere", || async {
            (env.runners().get_opt("crash").await.ok()?.is_none()
                && env.gitlab.runners().is_empty())
            .then_some(())
        })
        .await;
        assert_eq!(env.gitlab.faults_left(), 0, "crash point {n} was reached");
    }
}

pub(crate) async fn restart_between_create_and_status_finds_the_marked_runner(backend: Backend) {
    // The operator dies right after GitLab created the runner: nothing recorded anywhere.
    let mut env = Env::start(backend).await;
    env.gitlab.inject(crate::faults::lose_nth_write(1));
    env.apply("restart", project_spec()).await;
    env.wait("created in GitLab", || async {
        (!env.gitlab.runners().is_empty()).then_some(())
    })
    .await;
    env.stop_operator().await;
    let orphan = env.gitlab.runners()[0].clone();
    env.run_operator();
    let st = env.ready("restart").await.status.unwrap();
    assert_eq!(st.runner_id, Some(orphan.id), "took its own runner back");
    assert_eq!(env.gitlab.runners().len(), 1);
    let token = env.secret_token("restart-runner-token").await.unwrap();
    assert!(env.token_works(&token).await);
    // Deleting cleans up even though the first pass never finished.
    env.runners()
        .delete("restart", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("deleted", || async {
        env.gitlab.runners().is_empty().then_some(())
    })
    .await;
}

pub(crate) async fn a_runner_whose_connection_is_gone_can_be_released(backend: Backend) {
    let env = Env::start(backend).await;
    let mut spec = project_spec();
    spec["connectionRef"] = json!({"name": "temp"});
    let conn = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "temp", "namespace": "ci"},
        "spec": {"url": env.gitlab.url(), "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-api-token"}}});
    let conns = Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci");
    conns
        .create(
            &PostParams::default(),
            &serde_json::from_value(conn).unwrap(),
        )
        .await
        .unwrap();
    env.apply("stuck", spec.clone()).await;
    env.ready("stuck").await;
    conns
        .delete("temp", &DeleteParams::default())
        .await
        .unwrap();
    env.runners()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    let msg = env.condition("stuck", "Ready", "DeletionBlocked").await;
    assert!(msg.contains("deletionPolicy: Orphan"), "{msg}");
    spec["deletionPolicy"] = json!("Orphan");
    env.apply("stuck", spec).await;
    env.wait("released", || async {
        env.runners()
            .get_opt("stuck")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(env.gitlab.runners().len(), 1, "Orphan leaves the runner");
}

pub(crate) async fn many_rotations_at_once_stay_within_the_rate_limit(backend: Backend) {
    let env = Env::start_with(backend, Duration::from_secs(300)).await;
    // GitLab throttles at 80 requests per 1 s window; the connection allows 60/s, burst 10.
    env.gitlab.update_settings(|s| {
        s.throttle = Some(gitlab_emulator::Throttle {
            limit: 80,
            period_seconds: 1,
        })
    });
    Api::<runner_operator::crd::GitLabConnection>::namespaced(env.client.clone(), "ci")
        .patch(
            "gitlab",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rateLimit": {"requestsPerSecond": 60, "burst": 10}}})),
        )
        .await
        .unwrap();
    let n = 200;
    for i in 0..n {
        env.apply(&format!("m{i}"), json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"})).await;
    }
    env.wait_for("all ready", Duration::from_secs(120), || async {
        let list = env.runners().list(&ListParams::default()).await.ok()?;
        (list
            .items
            .iter()
            .filter(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count()
            == n)
            .then_some(())
    })
    .await;
    let resets_before = env
        .gitlab
        .request_count("POST /runners/:id/reset_authentication_token");
    let start = std::time::Instant::now();
    for i in 0..n {
        env.runners().patch(&format!("m{i}"), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": "all-at-once"}}}))).await.unwrap();
    }
    env.wait_for("all rotated", Duration::from_secs(120), || async {
        (env.gitlab
            .request_count("POST /runners/:id/reset_authentication_token")
            - resets_before
            == n as u64)
            .then_some(())
    })
    .await;
    assert_eq!(
        env.gitlab.throttled_count(),
        0,
        "never a burst that trips GitLab's 429"
    );
    // 200 resets plus their reads at 60/s cannot finish in under ~3 s.
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
