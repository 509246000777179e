//! The runner process's side of the API (GitLab's `lib/api/ci/runner.rb`, `lib/api/ci/helpers/runner.rb`):
//! job requests, verify with `info`, deleting a manager, and pagination links on every paginated
//! endpoint.

use gitlab_emulator::JobRec;
use serde_json::json;

use super::*;

#[tokio::test]
async fn job_requests_mark_contact_and_refuse_dead_tokens() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    // No job queued: 204, as GitLab answers a poll it has nothing for.
    let info = json!({"name": "gitlab-runner", "version": "18.5.1", "revision": "1a2b3c4d",
                      "platform": "linux", "architecture": "arm64", "executor": "shell"});
    let r = raw(
        &emu,
        "POST",
        "/api/v4/jobs/request",
        None,
        Some(json!({"token": token, "system_id": "s_0123456789ab", "info": info})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.header("x-gitlab-last-update").is_some());
    // The poll made the runner online and created its manager from `info`.
    let details = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(details["status"], "online");
    assert_eq!(details["version"], "18.5.1");
    assert_eq!(details["revision"], "1a2b3c4d");
    assert_eq!(details["architecture"], "arm64");
    let managers = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}/managers"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(managers.as_array().unwrap().len(), 1);
    assert_eq!(managers[0]["system_id"], "s_0123456789ab");
    assert_eq!(managers[0]["version"], "18.5.1");
    assert_eq!(managers[0]["platform"], "linux");
    assert_eq!(managers[0]["status"], "online");

    // Missing or unknown tokens.
    check(
        &emu,
        "POST",
        "/api/v4/jobs/request",
        None,
        Some(json!({})),
        400,
        Some(json!({"error": "token is missing"})),
    )
    .await;
    check(
        &emu,
        "POST",
        "/api/v4/jobs/request",
        None,
        Some(json!({"token": "glrt-nope"})),
        403,
        Some(json!({"message": "403 Forbidden"})),
    )
    .await;

    // After a reset the old token is refused at once and the new one polls.
    let reset = raw(
        &emu,
        "POST",
        &format!("/api/v4/runners/{id}/reset_authentication_token"),
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(reset.status, 201);
    let new_token = reset.json()["token"].as_str().unwrap().to_string();
    check(
        &emu,
        "POST",
        "/api/v4/jobs/request",
        None,
        Some(json!({"token": token})),
        403,
        None,
    )
    .await;
    check(
        &emu,
        "POST",
        "/api/v4/jobs/request",
        None,
        Some(json!({"token": new_token, "system_id": "s_0123456789ab"})),
        204,
        None,
    )
    .await;
    // A poll without `info` keeps what the manager reported before.
    let managers = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}/managers"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(managers[0]["version"], "18.5.1");
}

#[tokio::test]
async fn verify_records_the_manager_and_managers_can_be_deleted_by_token() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    // verify without system_id: contact only, no manager; the runner's version stays null.
    check(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(json!({"token": token})),
        200,
        None,
    )
    .await;
    let details = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert!(details["contacted_at"].is_string());
    assert!(details["version"].is_null());
    // With system_id and info: a manager reporting what the process said, nothing invented.
    check(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(
            json!({"token": token, "system_id": "s_aaaaaaaaaaaa", "info": {"version": "17.11.0"}}),
        ),
        200,
        None,
    )
    .await;
    let managers = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}/managers"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(managers[0]["version"], "17.11.0");
    assert!(managers[0]["platform"].is_null());

    check(
        &emu,
        "DELETE",
        "/api/v4/runners/managers",
        None,
        Some(json!({"token": "glrt-nope", "system_id": "s_aaaaaaaaaaaa"})),
        403,
        None,
    )
    .await;
    check(
        &emu,
        "DELETE",
        "/api/v4/runners/managers",
        None,
        Some(json!({"token": token, "system_id": "s_bbbbbbbbbbbb"})),
        404,
        None,
    )
    .await;
    check(
        &emu,
        "DELETE",
        "/api/v4/runners/managers",
        None,
        Some(json!({"token": token, "system_id": "s_aaaaaaaaaaaa"})),
        204,
        None,
    )
    .await;
    let managers = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}/managers"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(managers, json!([]));
}

/// Every paginated endpoint links the full API path, as GitLab does, with the headers that
/// say where the next page is.
#[tokio::test]
async fn every_paginated_endpoint_links_the_full_api_path() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let g = emu.group_id("grp").unwrap();
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(
            create(
                &emu,
                "glpat-alice",
                json!({"runner_type": "project_type", "project_id": p}),
            )
            .await
            .0,
        );
        create(
            &emu,
            "glpat-alice",
            json!({"runner_type": "group_type", "group_id": g}),
        )
        .await;
    }
    let id = ids[0];
    for other in ["grp/lib", "grp/sub/deep"] {
        let other = emu.project_id(other).unwrap();
        check(
            &emu,
            "POST",
            &format!("/api/v4/projects/{other}/runners"),
            Some("glpat-alice"),
            Some(json!({"runner_id": id})),
            201,
            None,
        )
        .await;
    }
    for n in 1..=3 {
        emu.add_job(
            id,
            JobRec {
                id: n,
                status: "success".into(),
                project_id: p,
                system_id: None,
                git_ref: None,
                pipeline_id: None,
                started_at: None,
                duration: None,
            },
        );
    }
    let base = emu.url();
    for (path, token, total) in [
        ("/api/v4/runners".to_string(), "glpat-alice", 6),
        ("/api/v4/runners/all".to_string(), "glpat-root", 6),
        (format!("/api/v4/projects/{p}/runners"), "glpat-alice", 6),
        (format!("/api/v4/groups/{g}/runners"), "glpat-alice", 3),
        (format!("/api/v4/runners/{id}/projects"), "glpat-alice", 3),
        (format!("/api/v4/runners/{id}/jobs"), "glpat-alice", 3),
    ] {
        let r = raw(
            &emu,
            "GET",
            &format!("{path}?per_page=2&page=1"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(
            r.header("x-total").as_deref(),
            Some(total.to_string().as_str()),
            "{path}"
        );
        assert_eq!(r.header("x-next-page").as_deref(), Some("2"), "{path}");
        let link = r.header("link").unwrap_or_default();
        let next = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .unwrap_or_else(|| panic!("{path}: no next link in {link}"));
        let host = base.trim_end_matches('/').trim_start_matches("http://");
        assert!(
            next.starts_with(&format!("<http://{host}{path}?page=2&per_page=2")),
            "{path}: {next}"
        );
        // The link is followable as given.
        let target = next.trim_start_matches('<').split('>').next().unwrap();
        let followed = raw(
            &emu,
            "GET",
            target.trim_start_matches(&format!("http://{host}")),
            Some(token),
            None,
        )
        .await;
        assert_eq!(followed.header("x-page").as_deref(), Some("2"), "{path}");
    }
}
