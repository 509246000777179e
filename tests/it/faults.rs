//! Reliability under faults (issue: lost answers, Retry-After, honest Ready, stalls): each
//! behaviour with a named test against the emulators.

use std::time::Duration;

use gitlab_emulator::{Fault, FaultAction};
use kube::api::DeleteParams;
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

/// Requests that arrived inside a wait GitLab asked for: after a 429 answered at T with a wait
/// until U, nothing with the same access token may arrive in (T + 100 ms, U) — 100 ms for
/// requests already on the wire.
fn inside_retry_windows(log: &[gitlab_emulator::model::LoggedRequest]) -> Vec<String> {
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
async fn retry_after_holds_every_caller_of_the_connection() {
    for http_date in [false, true] {
        let env = Env::start(Backend::Local, None).await;
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
async fn a_revoked_token_blocks_deletion_with_a_way_out() {
    let env = Env::start(Backend::Local, None).await;
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
async fn a_runner_that_does_not_decode_stalls_nothing() {
    let env = Env::start(Backend::Local, None).await;
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
async fn settings_that_would_loop_are_refused_before_any_gitlab_write() {
    let env = Env::start(Backend::Local, None).await;
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
async fn connection_secrets_are_watched() {
    let env = Env::start_with(Backend::Local, None, Duration::from_secs(300)).await;
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

/// A connection that cannot reach GitLab says why, in its Ready condition: nothing listening,
/// or a certificate signed by a CA the operator does not trust (naming the issuer and the
/// field that fixes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_errors_name_their_cause() {
    let env = Env::start(Backend::Local, None).await;
    // An HTTPS server whose certificate comes from a private CA (openssl, as a GitLab behind a
    // corporate CA would look).
    let dir = std::env::temp_dir().join(format!("runner-operator-tls-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "{cmd}");
    };
    sh(
        "openssl ecparam -name prime256v1 -genkey -noout -out ca.key && openssl req -x509 -new -key ca.key -subj '/O=Corp/CN=Corp Internal CA' -days 30 -out ca.crt",
    );
    sh(
        "openssl ecparam -name prime256v1 -genkey -noout -out tls.key && openssl req -new -key tls.key -subj /CN=127.0.0.1 -out tls.csr && printf 'subjectAltName=IP:127.0.0.1\\n' > ext && openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile ext -out tls.crt",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .args(["-cert", "tls.crt", "-key", "tls.key"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // bound, then dropped: nothing listens there
    let conns: kube::Api<runner_operator::crd::GitLabConnection> =
        kube::Api::namespaced(env.client.clone(), "ci");
    for (name, url) in [
        ("untrusted", format!("https://127.0.0.1:{port}")),
        ("nobody", format!("http://127.0.0.1:{closed}")),
    ] {
        let c = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection",
            "metadata": {"name": name, "namespace": "ci"},
            "spec": {"url": url, "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-api-token"}}});
        conns
            .create(
                &kube::api::PostParams::default(),
                &serde_json::from_value(c).unwrap(),
            )
            .await
            .unwrap();
    }
    let message = |name: &'static str| {
        let conns = conns.clone();
        async move {
            let c = conns.get(name).await.ok()?;
            c.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .map(|c| c.message)
        }
    };
    let m = env
        .wait("untrusted explained", || message("untrusted"))
        .await;
    assert!(
        m.contains("not signed by a CA the operator trusts")
            && m.contains("issued by \"Corp Internal CA\"")
            && m.contains("caBundleSecretRef"),
        "{m}"
    );
    let m = env.wait("refused explained", || message("nobody")).await;
    assert!(
        m.contains(&format!(
            "connection refused: nothing listens at 127.0.0.1:{closed}"
        )),
        "{m}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Projects deleted in GitLab under a project runner: the Runner is not Ready, names the
/// project and the fix, and stops sending the assignment that cannot succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_projects_make_the_runner_not_ready_with_the_fix() {
    for (deleted, fix) in [
        (
            vec!["platform/api"],
            "recreate this Runner with spec.project",
        ),
        (vec!["platform/web"], "remove it from spec.assignedProjects"),
        (
            vec!["platform/api", "platform/web"],
            "recreate this Runner with spec.project",
        ),
    ] {
        let env = Env::start(Backend::Local, None).await;
        let mut spec = base();
        spec["assignedProjects"] = json!(["platform/web"]);
        env.apply("homeless", spec).await;
        env.ready("homeless").await;
        for p in &deleted {
            assert!(env.gitlab.delete_project(p));
        }
        let msg = env.condition("homeless", "Ready", "InvalidSpec").await;
        assert!(msg.contains(fix), "{deleted:?}: {msg}");
        // Once the paths no longer resolve, no assignment is attempted any more: a few more
        // passes (resync 2 s) add no POST /projects/:id/runners.
        let assigns = || env.gitlab.request_count("POST /projects/:id/runners");
        let lookups = || env.gitlab.request_count("GET /projects/:id");
        let (a0, l0) = (assigns(), lookups());
        env.wait_for("two more passes", Duration::from_secs(30), || async {
            (lookups() >= l0 + 2).then_some(())
        })
        .await;
        assert_eq!(assigns(), a0, "{deleted:?}: no failing assignment repeated");
        let st = env.status("homeless").await.unwrap();
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False"),
            "{deleted:?}: never Ready while GitLab disagrees"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fault suite: the operator *binary* against the emulators, killed with SIGKILL at random
// moments while it creates, rotates and deletes many Runners, with lost answers on GitLab
// writes, 5xx and 429 storms, and Kubernetes 409/500 answers and dropped watches. Afterwards:
// no orphan, no duplicate, no dead token, nothing stuck, no token in its logs.
//
//   RUNNER_OPERATOR_FAULT_SEEDS=1,2,3,4,5,6,7,8 RUNNER_OPERATOR_FAULT_RUNNERS=100 \
//     cargo test --test it fault_suite -- --nocapture
//
// CI runs seeds 1 and 2 with 50 Runners. RUNNER_OPERATOR_FAULT_KEEP=1 keeps the operator's log.

use kube_local::{KubeFault, KubeFaultAction};

use crate::cluster::OperatorProcess;

// 50 Runners resynced every few seconds would need more than the default 10 GitLab requests per
// second: a realistic period leaves the budget to the work under test.
const OPERATOR_ARGS: &[&str] = &["--resync-interval", "60s", "--concurrency", "8"];

#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Tally {
    kills: u32,
    orphans: usize,
    duplicates: usize,
    dead_tokens: usize,
    stuck: usize,
    leaks: usize,
}

fn gitlab_storm(env: &Env, rng: &mut fastrand::Rng) {
    let lost = |endpoint: &str, times| lose_answer(endpoint, times);
    for endpoint in [
        "POST /user/runners",
        "POST /runners/:id/reset_authentication_token",
        "DELETE /runners/:id",
        "PUT /runners/:id",
        "POST /projects/:id/runners",
    ] {
        env.gitlab.inject(lost(endpoint, rng.u32(1..4)));
    }
    for (endpoint, status, retry) in [
        ("GET /runners/:id", 503, None),
        ("GET /projects/:id", 502, None),
        ("POST /user/runners", 429, Some(1)),
        ("POST /runners/:id/reset_authentication_token", 500, None),
    ] {
        env.gitlab.inject(Fault {
            endpoint: Some(endpoint.into()),
            path_contains: None,
            times: rng.u32(2..8),
            action: FaultAction::Status {
                status,
                body: None,
                retry_after: retry,
            },
        });
    }
}

fn kube_storm(env: &Env, rng: &mut fastrand::Rng) {
    let local = env.kube.local().expect("in-memory API");
    for (method, path, code) in [
        ("PATCH", "/runners/", 409),
        ("PATCH", "/status", 500),
        ("PATCH", "/secrets/", 500),
        ("GET", "/runners/", 500),
    ] {
        local.inject(KubeFault {
            method: Some(method.into()),
            path_contains: path.into(),
            times: rng.u32(1..5),
            action: KubeFaultAction::Status {
                code,
                message: None,
            },
        });
    }
    local.drop_watches();
}

/// Runs the binary with SIGKILLs at random moments for a few cycles, then lets it finish until
/// `done` holds (or gives up: stuck).
async fn kill_cycles<F, Fut>(
    env: &Env,
    rng: &mut fastrand::Rng,
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    tally: &mut Tally,
    done: F,
) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..rng.u32(2..5) {
        gitlab_storm(env, rng);
        kube_storm(env, rng);
        let mut op = OperatorProcess::spawn(kubeconfig, log, OPERATOR_ARGS);
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
        op.kill9();
        tally.kills += 1;
    }
    env.gitlab.clear_faults();
    let _op = OperatorProcess::spawn(kubeconfig, log, OPERATOR_ARGS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Why Runners are not done: each one's Ready condition (for the suite's report).
async fn not_ready(env: &Env) -> Vec<String> {
    let list = env.list_runners().await;
    list.iter()
        .filter_map(|r| {
            let ready = r
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" && r.metadata.deletion_timestamp.is_none() => None,
                Some(c) => Some(format!(
                    "{}: {} {}",
                    kube::ResourceExt::name_any(r),
                    c.reason,
                    c.message
                )),
                None => Some(format!(
                    "{}: no Ready condition",
                    kube::ResourceExt::name_any(r)
                )),
            }
        })
        .collect()
}

async fn ready_count(env: &Env, names: &[String]) -> usize {
    let list = env.list_runners().await;
    list.iter()
        .filter(|r| names.contains(&kube::ResourceExt::name_any(*r)))
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == r.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

/// Orphans, duplicates and dead tokens as GitLab and the cluster stand now.
async fn audit(env: &Env, names: &[String], tally: &mut Tally) {
    let runners = env.gitlab.runners();
    let list = env.list_runners().await;
    let uid_of = |name: &str| {
        list.iter()
            .find(|r| kube::ResourceExt::name_any(*r) == name)
            .and_then(|r| r.metadata.uid.clone())
    };
    for name in names {
        let Some(uid) = uid_of(name) else { continue };
        let mine: Vec<_> = runners
            .iter()
            .filter(|g| {
                g.maintenance_note
                    .as_deref()
                    .is_some_and(|n| n.contains(&format!(", uid {uid}]")))
            })
            .collect();
        tally.duplicates += mine.len().saturating_sub(1);
        let secret = env.secret_token(&format!("{name}-runner-token")).await;
        match (mine.first(), secret) {
            (Some(g), Some(t)) if g.token == t => {}
            (None, _) => tally.stuck += 1,
            _ => tally.dead_tokens += 1,
        }
    }
    // A marked runner whose Runner is gone is an orphan.
    let live: Vec<String> = list.iter().filter_map(|r| r.metadata.uid.clone()).collect();
    tally.orphans += runners
        .iter()
        .filter(|g| {
            g.maintenance_note.as_deref().is_some_and(|n| {
                n.contains("[runner-operator: managed by")
                    && !live.iter().any(|u| n.contains(&format!(", uid {u}]")))
            })
        })
        .count();
}

async fn fault_run(seed: u64, n: usize) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut env = Env::start(Backend::Local, None).await;
    env.stop_operator().await;
    let dir = std::env::temp_dir().join(format!(
        "runner-operator-faults-{}-{seed}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    env.kube.write_kubeconfig(&kubeconfig);
    let log = dir.join("operator.log");
    let mut tally = Tally::default();
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let mut issued = vec![];

    // Create.
    for name in &names {
        let mut spec = base();
        spec["assignedProjects"] = json!(["platform/web"]);
        spec["description"] = json!(name);
        env.apply(name, spec).await;
    }
    let all_ready = || async { ready_count(&env, &names).await == names.len() };
    if !kill_cycles(&env, &mut rng, &kubeconfig, &log, &mut tally, all_ready).await {
        tally.stuck += names.len() - ready_count(&env, &names).await;
        eprintln!(
            "seed {seed}, create: not Ready:\n  {}",
            not_ready(&env).await.join("\n  ")
        );
        eprintln!("GitLab requests: {:?}", env.gitlab.request_counts());
    }
    audit(&env, &names, &mut tally).await;
    issued.extend(env.gitlab.runners().into_iter().map(|r| r.token));

    // Rotate every token.
    for name in &names {
        env.runners()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"gitlab.runner-operator.dev/rotate-token": format!("seed-{seed}")}}})),
            )
            .await
            .unwrap();
    }
    let want = format!("seed-{seed}");
    let all_rotated = || async {
        let list = env.list_runners().await;
        list.iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.handled_rotate_request.as_deref())
                    == Some(want.as_str())
            })
            .count()
            == names.len()
            && ready_count(&env, &names).await == names.len()
    };
    if !kill_cycles(&env, &mut rng, &kubeconfig, &log, &mut tally, all_rotated).await {
        tally.stuck += 1;
        eprintln!(
            "seed {seed}, rotate: not done:\n  {}",
            not_ready(&env).await.join("\n  ")
        );
    }
    audit(&env, &names, &mut tally).await;
    issued.extend(env.gitlab.runners().into_iter().map(|r| r.token));

    // Delete.
    for name in &names {
        let _ = env.runners().delete(name, &DeleteParams::default()).await;
    }
    let all_gone =
        || async { env.list_runners().await.is_empty() && env.gitlab.runners().is_empty() };
    if !kill_cycles(&env, &mut rng, &kubeconfig, &log, &mut tally, all_gone).await {
        let left = env.list_runners().await.len();
        tally.stuck += left;
        tally.orphans += env.gitlab.runners().len();
        eprintln!(
            "seed {seed}, delete: left:\n  {}",
            not_ready(&env).await.join("\n  ")
        );
    }

    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logs.contains("f0"), "the binary's logs were captured");
    tally.leaks = issued
        .iter()
        .map(|t| t.trim_start_matches("glrt-"))
        .chain(["glpat-emulator-bot", "glpat-emulator-root"])
        .filter(|t| logs.contains(t))
        .count();
    env.stop_operator().await;
    if std::env::var_os("RUNNER_OPERATOR_FAULT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite() {
    let seeds: Vec<u64> = std::env::var("RUNNER_OPERATOR_FAULT_SEEDS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let n: usize = std::env::var("RUNNER_OPERATOR_FAULT_RUNNERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut rows = vec![];
    for seed in &seeds {
        rows.push((*seed, fault_run(*seed, n).await));
    }
    let mut table = format!(
        "fault suite: {n} Runners per run, SIGKILLed while creating, rotating and deleting\n\
         | seed | kills | orphans | duplicates | dead tokens | stuck | leaks |\n|---|---|---|---|---|---|---|\n"
    );
    for (seed, t) in &rows {
        table.push_str(&format!(
            "| {seed} | {} | {} | {} | {} | {} | {} |\n",
            t.kills, t.orphans, t.duplicates, t.dead_tokens, t.stuck, t.leaks
        ));
    }
    eprintln!("{table}");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(target.join("fault-suite.md"), &table);
    assert!(
        rows.iter().all(|(_, t)| Tally {
            kills: t.kills,
            ..Tally::default()
        } == *t),
        "{table}"
    );
}

/// The connection's access token stops working (revoked or expired: GitLab answers 401) while
/// Runners are created, updated and rotated: each says GitLabUnauthorized with the fix, no
/// runner is half-made, and the Secret keeps the live token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_access_token_stops_everything_cleanly() {
    let env = Env::start(Backend::Local, None).await;
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
