//! The GitLab client against the emulator: every function, errors, pagination, 429, retries.

use std::time::{Duration, Instant};

use gitlab_emulator::{Fault, FaultAction, GitLabEmulator, JobRec};
use runner_operator::gitlab::*;
use secrecy::{ExposeSecret, SecretString};

use crate::support::emulator;

fn client(emu: &GitLabEmulator, token: &str) -> GitLabClient {
    runner_operator::tls::install_crypto_provider();
    let mut cfg = ClientConfig::new(emu.url(), SecretString::from(token.to_string()));
    cfg.requests_per_second = 1000.0;
    cfg.burst = 1000;
    cfg.retry.base = Duration::from_millis(5);
    cfg.retry.cap = Duration::from_millis(50);
    GitLabClient::new(cfg).expect("client")
}

/// A fault on one endpoint, `times` times.
fn inject(emu: &GitLabEmulator, endpoint: &str, times: u32, action: FaultAction) {
    emu.inject(Fault {
        endpoint: Some(endpoint.into()),
        path_contains: None,
        writes_only: false,
        skip: 0,
        times,
        action,
    });
}

fn project_runner(project_id: i64) -> CreateUserRunner {
    CreateUserRunner {
        runner_type: "project_type".into(),
        group_id: None,
        project_id: Some(project_id),
        attributes: RunnerAttributes::default(),
    }
}

#[tokio::test]
async fn lifecycle_through_every_runner_endpoint() {
    let emu = emulator().await;
    let gl = client(&emu, "glpat-alice");
    assert_eq!(gl.version().await.unwrap().version, "18.6.0-ee");
    assert_eq!(gl.current_user().await.unwrap().username, "alice");
    let app = gl.get_project("grp/app").await.unwrap();
    assert_eq!(app.path_with_namespace, "grp/app");
    let lib = gl
        .get_project(&emu.project_id("grp/lib").unwrap().to_string())
        .await
        .unwrap();
    let group = gl.get_group("grp").await.unwrap();
    assert_eq!(group.full_path, "grp");

    let mut req = project_runner(app.id);
    req.attributes.description = Some("builders".into());
    req.attributes.tag_list = Some(vec!["linux".into(), "docker".into()]);
    let created = gl.create_user_runner(&req).await.unwrap();
    assert!(created.token.expose_secret().starts_with("glrt-t3_"));
    assert!(!format!("{created:?}").contains(created.token.expose_secret()));
    let id = created.id;

    let details = gl.get_runner(id).await.unwrap();
    assert_eq!(details.description.as_deref(), Some("builders"));
    assert_eq!(details.projects[0].id, app.id);

    let update = RunnerAttributes {
        paused: Some(true),
        maximum_timeout: Some(Some(3600)),
        ..Default::default()
    };
    let updated = gl.update_runner(id, &update).await.unwrap();
    assert!(updated.is_paused());
    assert_eq!(updated.maximum_timeout, Some(3600));
    let cleared = gl
        .update_runner(
            id,
            &RunnerAttributes {
                maximum_timeout: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.maximum_timeout, None);
    assert_eq!(emu.runner(id.0).unwrap().maximum_timeout, None);

    gl.assign_runner(&lib.path_with_namespace, id)
        .await
        .unwrap();
    assert_eq!(
        emu.runner(id.0).unwrap().projects,
        vec!["grp/app", "grp/lib"]
    );
    gl.unassign_runner("grp/lib", id).await.unwrap();
    assert_eq!(emu.runner(id.0).unwrap().projects, vec!["grp/app"]);

    let verified = gl.verify_runner(&created.token, Some("s_1")).await.unwrap();
    assert_eq!(verified.id, id);
    assert_eq!(
        gl.list_runner_managers(id).await.unwrap()[0].system_id,
        "s_1"
    );
    emu.add_job(
        id.0,
        JobRec {
            id: 7,
            status: "running".into(),
            project_id: app.id,
            system_id: None,
            ..Default::default()
        },
    );
    let jobs = gl
        .list_runner_jobs(id, &JobFilter::default())
        .await
        .unwrap();
    assert_eq!(jobs[0].id, 7);

    let reset = gl.reset_runner_token(id).await.unwrap();
    assert_eq!(emu.runner(id.0).unwrap().token, reset.token.expose_secret());
    let err = gl.verify_runner(&created.token, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "the old token died at once");
    let again = gl
        .reset_runner_token_with_token(&reset.token)
        .await
        .unwrap();
    assert_eq!(emu.runner(id.0).unwrap().token, again.token.expose_secret());

    let owned = gl
        .list_owned_runners(&RunnerFilter {
            tag_list: Some(vec!["linux".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(owned.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(
        gl.list_project_runners("grp/app", &RunnerFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        gl.list_group_runners("grp", &RunnerFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    gl.delete_runner(id).await.unwrap();
    assert!(emu.runner(id.0).is_none());
    let gone = gl.get_runner(id).await.unwrap_err();
    assert!(gone.is_not_found());

    let second = gl
        .create_user_runner(&project_runner(app.id))
        .await
        .unwrap();
    gl.delete_runner_by_token(&second.token).await.unwrap();
    assert!(emu.runner(second.id.0).is_none());
}

#[tokio::test]
async fn admin_and_legacy_endpoints() {
    let emu = emulator().await;
    let root = client(&emu, "glpat-root");
    let inst = root
        .create_user_runner(&CreateUserRunner {
            runner_type: "instance_type".into(),
            group_id: None,
            project_id: None,
            attributes: RunnerAttributes::default(),
        })
        .await
        .unwrap();
    let all = root
        .list_all_runners(&RunnerFilter {
            runner_type: Some("instance_type".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![inst.id]);

    // Registration tokens off (GitLab ≥ 17.0 default): 410, which the error explains.
    let project_token = SecretString::from(emu.project_registration_token("grp/app").unwrap());
    let err = root
        .register_runner(&project_token, &RunnerAttributes::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(410));
    assert!(
        err.to_string()
            .contains("use registration strategy UserRunner"),
        "{err}"
    );
    assert!(!err.to_string().contains(project_token.expose_secret()));
    assert_eq!(
        root.reset_project_registration_token("grp/app")
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );

    emu.update_settings(|s| s.allow_runner_registration_token = true);
    let reg = root
        .register_runner(
            &project_token,
            &RunnerAttributes {
                description: Some("legacy".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(emu.runner(reg.id.0).unwrap().projects, vec!["grp/app"]);
    assert!(
        root.reset_project_registration_token("grp/app")
            .await
            .unwrap()
            .token
            .expose_secret()
            .starts_with("GR1348941")
    );
    assert!(
        root.reset_group_registration_token("grp")
            .await
            .unwrap()
            .token
            .expose_secret()
            .starts_with("GR1348941")
    );
    assert!(
        !root
            .reset_instance_registration_token()
            .await
            .unwrap()
            .token
            .expose_secret()
            .is_empty()
    );
}

#[tokio::test]
async fn typed_errors_keep_status_message_and_endpoint() {
    let emu = emulator().await;
    let alice = client(&emu, "glpat-alice");
    let app = emu.project_id("grp/app").unwrap();
    let id = alice
        .create_user_runner(&project_runner(app))
        .await
        .unwrap()
        .id;

    let carol = client(&emu, "glpat-carol");
    let e = carol.get_runner(id).await.unwrap_err();
    assert!(e.is_forbidden() && !e.is_not_found(), "403 is never 'gone'");
    assert_eq!(e.message(), Some("403 Forbidden - No access granted"));
    assert!(e.to_string().contains("GET /runners/:id"));

    let e = alice
        .update_runner(
            id,
            &RunnerAttributes {
                tag_list: Some((0..51).map(|i| i.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        e.message().unwrap().contains("tags_list Too many tags"),
        "{e}"
    );

    let e = alice
        .update_runner(id, &RunnerAttributes::default())
        .await
        .unwrap_err();
    assert!(
        e.message()
            .unwrap()
            .contains("at least one parameter must be provided")
    );

    let read_only = client(&emu, "glpat-alice-read");
    let e = read_only
        .create_user_runner(&project_runner(app))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(
        e.message().unwrap().starts_with("insufficient_scope"),
        "{e}"
    );

    let nobody = client(&emu, "glpat-wrong-secret-value");
    let e = nobody.version().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(!e.to_string().contains("wrong-secret-value"));
    assert!(!format!("{e:?}").contains("wrong-secret-value"));

    let e = alice.get_project("nope/none").await.unwrap_err();
    assert_eq!(
        (e.status(), e.message()),
        (Some(404), Some("404 Project Not Found"))
    );
}

#[tokio::test]
async fn pagination_reads_every_page() {
    let emu = emulator().await;
    let alice = client(&emu, "glpat-alice");
    let app = emu.project_id("grp/app").unwrap();
    for _ in 0..230 {
        alice
            .create_user_runner(&project_runner(app))
            .await
            .unwrap();
    }
    let all = alice
        .list_owned_runners(&RunnerFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 230);
    let mut ids: Vec<i64> = all.iter().map(|r| r.id.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), 230);
    assert_eq!(
        emu.request_count("GET /runners"),
        3,
        "per_page=100 → 3 pages"
    );
}

#[tokio::test]
async fn retries_idempotent_calls_on_5xx_and_dropped_connections() {
    let emu = emulator().await;
    let alice = client(&emu, "glpat-alice");
    inject(
        &emu,
        "GET /version",
        2,
        FaultAction::Status {
            status: 502,
            body: None,
            retry_after: None,
        },
    );
    assert_eq!(alice.version().await.unwrap().version, "18.6.0-ee");
    assert_eq!(emu.request_count("GET /version"), 3);

    inject(&emu, "GET /user", 1, FaultAction::Drop);
    assert_eq!(alice.current_user().await.unwrap().username, "alice");
    assert_eq!(emu.request_count("GET /user"), 2);

    // Retries are bounded: 1 + max_retries attempts, then the error.
    inject(
        &emu,
        "GET /version",
        10,
        FaultAction::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
    );
    let e = alice.version().await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(e.is_transient());
    assert_eq!(emu.request_count("GET /version"), 3 + 4);
}

#[tokio::test]
async fn creates_are_not_retried_after_gitlab_may_have_processed_them() {
    let emu = emulator().await;
    let alice = client(&emu, "glpat-alice");
    let app = emu.project_id("grp/app").unwrap();
    inject(
        &emu,
        "POST /user/runners",
        1,
        FaultAction::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
    );
    assert_eq!(
        alice
            .create_user_runner(&project_runner(app))
            .await
            .unwrap_err()
            .status(),
        Some(500)
    );
    assert_eq!(emu.request_count("POST /user/runners"), 1);
    inject(&emu, "POST /user/runners", 1, FaultAction::Drop);
    assert!(
        alice
            .create_user_runner(&project_runner(app))
            .await
            .is_err()
    );
    assert_eq!(emu.request_count("POST /user/runners"), 2);
    assert!(emu.runners().is_empty());
}

#[tokio::test]
async fn rate_limited_calls_wait_retry_after_and_hold_back_other_callers() {
    let emu = emulator().await;
    let app = emu.project_id("grp/app").unwrap();
    // 429 is safe to repeat even for a POST: GitLab did not process it.
    inject(
        &emu,
        "POST /user/runners",
        1,
        FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(1),
        },
    );
    // The client's gate is the test's, to see when the 429 has closed it.
    let gate = std::sync::Arc::new(RateLimiter::new(1000.0, 1000));
    let mut cfg = ClientConfig::new(emu.url(), SecretString::from("glpat-alice".to_string()));
    cfg.limiter = Some(gate.clone());
    cfg.retry.base = Duration::from_millis(5);
    cfg.retry.cap = Duration::from_millis(50);
    let alice = GitLabClient::new(cfg).expect("client");
    let start = Instant::now();
    let other = alice.clone();
    let req = project_runner(app);
    let (created, version) = tokio::join!(alice.create_user_runner(&req), async {
        // Once the create's 429 has closed the gate for every caller.
        while !gate.is_paused() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = Instant::now();
        other.version().await.map(|_| t.elapsed())
    });
    assert!(created.is_ok());
    assert!(start.elapsed() >= Duration::from_secs(1));
    let waited = version.unwrap();
    assert!(
        waited >= Duration::from_millis(600),
        "the other caller was held back too: {waited:?}"
    );
    assert_eq!(emu.runners().len(), 1);
    assert_eq!(emu.request_count("POST /user/runners"), 2);
    assert!(alice.rate_limiter().wait_stats().0 >= 1);
}

#[tokio::test]
async fn rate_limit_gives_up_with_a_typed_error() {
    let emu = emulator().await;
    let mut cfg = ClientConfig::new(emu.url(), SecretString::from("glpat-alice"));
    cfg.retry.max_rate_limited_retries = 1;
    cfg.retry.max_rate_limit_wait = Duration::from_millis(10);
    let gl = GitLabClient::new(cfg).unwrap();
    inject(
        &emu,
        "GET /version",
        5,
        FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(30),
        },
    );
    let e = gl.version().await.unwrap_err();
    assert_eq!(e.status(), Some(429));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(e.message(), Some("Retry later"));
}

#[tokio::test]
async fn timeouts_are_typed_and_retried() {
    let emu = emulator().await;
    let mut cfg = ClientConfig::new(emu.url(), SecretString::from("glpat-alice"));
    cfg.timeout = Duration::from_millis(300);
    cfg.retry.base = Duration::from_millis(5);
    let gl = GitLabClient::new(cfg).unwrap();
    inject(&emu, "GET /version", 1, FaultAction::Delay { millis: 1000 });
    assert!(gl.version().await.is_ok(), "second attempt succeeds");
    inject(
        &emu,
        "GET /version",
        10,
        FaultAction::Delay { millis: 1000 },
    );
    let e = gl.version().await.unwrap_err();
    assert!(matches!(e, GitLabError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn client_side_rate_limit_holds() {
    let emu = emulator().await;
    let mut cfg = ClientConfig::new(emu.url(), SecretString::from("glpat-alice"));
    cfg.requests_per_second = 20.0;
    cfg.burst = 5;
    let gl = GitLabClient::new(cfg).unwrap();
    let start = Instant::now();
    let calls = (0..25).map(|_| gl.version());
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    // 5 at once, then 20 more at 20/s: at least ~1 s.
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_clearly() {
    let e = GitLabClient::new(ClientConfig::new("not a url", SecretString::from("x"))).unwrap_err();
    assert!(e.to_string().contains("not a valid URL"));
    let mut cfg = ClientConfig::new("https://gitlab.example.com", SecretString::from("x"));
    cfg.ca_bundle_pem = Some(b"garbage".to_vec());
    assert!(
        GitLabClient::new(cfg)
            .unwrap_err()
            .to_string()
            .contains("CA bundle")
    );
}

/// `GET /personal_access_tokens/self`: scopes and expiry for any scope; None on GitLab versions
/// without the endpoint; an expired token is refused like everywhere else.
#[tokio::test]
async fn access_token_self_reports_scopes_and_expiry() {
    let emu = emulator().await;
    emu.set_token_expiry("glpat-alice-create", Some("2027-01-31"));
    let info = client(&emu, "glpat-alice-create")
        .access_token_self()
        .await
        .unwrap()
        .expect("served");
    assert_eq!(info.scopes, vec!["create_runner"], "any scope may ask");
    assert_eq!(info.expires_at.as_deref(), Some("2027-01-31"));
    assert!(info.active && !info.revoked);
    let root = client(&emu, "glpat-root")
        .access_token_self()
        .await
        .unwrap()
        .expect("served");
    assert_eq!(root.expires_at, None);
    assert!(
        client(&emu, "glpat-expired")
            .access_token_self()
            .await
            .is_err_and(|e| e.status() == Some(401))
    );
    emu.update_settings(|s| s.personal_access_token_self = false);
    assert_eq!(
        client(&emu, "glpat-root")
            .access_token_self()
            .await
            .unwrap(),
        None
    );
}
