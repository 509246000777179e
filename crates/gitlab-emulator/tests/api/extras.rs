//! B24–B25 and the extras: pagination headers, rate-limit answers, conditional and by-token
//! deletion, the jobs ordering quirk, the control surface over HTTP.

use gitlab_emulator::{JobRec, Settings, Throttle};
use serde_json::json;

use super::*;

#[tokio::test]
async fn b24_pagination_headers() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    for _ in 0..5 {
        create(
            &emu,
            "glpat-alice",
            json!({"runner_type": "project_type", "project_id": p}),
        )
        .await;
    }
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?per_page=2&page=2&status=never_contacted",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_eq!(r.header("x-total").as_deref(), Some("5"));
    assert_eq!(r.header("x-total-pages").as_deref(), Some("3"));
    assert_eq!(r.header("x-page").as_deref(), Some("2"));
    assert_eq!(r.header("x-per-page").as_deref(), Some("2"));
    assert_eq!(r.header("x-next-page").as_deref(), Some("3"));
    assert_eq!(r.header("x-prev-page").as_deref(), Some("1"));
    let link = r.header("link").unwrap();
    let rels: Vec<&str> = link
        .split(", ")
        .map(|l| l.split("; ").nth(1).unwrap())
        .collect();
    assert_eq!(
        rels,
        vec![
            "rel=\"prev\"",
            "rel=\"next\"",
            "rel=\"first\"",
            "rel=\"last\""
        ]
    );
    assert!(link.contains("status=never_contacted"));
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?per_page=500",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.header("x-per-page").as_deref(), Some("100"));
    assert_eq!(r.header("x-next-page").as_deref(), Some(""));
    check(
        &emu,
        "GET",
        "/api/v4/runners?page=9",
        Some("glpat-alice"),
        None,
        200,
        Some(json!([])),
    )
    .await;
    assert_eq!(
        raw(&emu, "GET", "/api/v4/runners", Some("glpat-alice"), None)
            .await
            .header("x-per-page")
            .as_deref(),
        Some("20")
    );
}

#[tokio::test]
async fn b25_rate_limit_answers() {
    let emu = emulator().await;
    emu.update_settings(|s: &mut Settings| {
        s.throttle = Some(Throttle {
            limit: 2,
            period_seconds: 3600,
        })
    });
    for _ in 0..2 {
        assert_eq!(
            raw(&emu, "GET", "/api/v4/runners", Some("glpat-alice"), None)
                .await
                .status,
            200
        );
    }
    let r = check(
        &emu,
        "GET",
        "/api/v4/runners",
        Some("glpat-alice"),
        None,
        429,
        None,
    )
    .await;
    assert_eq!(r.text, "Retry later\n");
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    for h in [
        "ratelimit-name",
        "ratelimit-limit",
        "ratelimit-observed",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-resettime",
        "retry-after",
    ] {
        assert!(r.header(h).is_some(), "{h}");
    }
    assert_eq!(
        r.header("ratelimit-name").as_deref(),
        Some("throttle_authenticated_api")
    );
    // Another user has their own window.
    assert_eq!(
        raw(&emu, "GET", "/api/v4/runners", Some("glpat-bob"), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn extra_conditional_delete_and_delete_by_token() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let client = reqwest::Client::new();
    let r = client
        .delete(format!("{}/api/v4/runners/{id}", emu.url()))
        .header("PRIVATE-TOKEN", "glpat-alice")
        .header("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "412 Precondition Failed"})
    );
    assert_eq!(
        raw(
            &emu,
            "DELETE",
            "/api/v4/runners",
            None,
            Some(json!({"token": "nope"}))
        )
        .await
        .json(),
        json!({"message": "403 Forbidden"})
    );
    assert_eq!(
        raw(
            &emu,
            "DELETE",
            "/api/v4/runners",
            None,
            Some(json!({"token": token}))
        )
        .await
        .status,
        204
    );
    assert!(emu.runner(id).is_none());
}

#[tokio::test]
async fn extra_jobs_ordering_quirk() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    for j in [3, 1, 2] {
        emu.add_job(
            id,
            JobRec {
                id: j,
                status: "success".into(),
                project_id: p,
                system_id: None,
                ..Default::default()
            },
        );
    }
    let ids = |r: crate::support::Raw| {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{id}/jobs?sort=desc"),
            Some("glpat-alice"),
            None
        )
        .await),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{id}/jobs?order_by=id"),
            Some("glpat-alice"),
            None
        )
        .await),
        vec![3, 2, 1]
    );
    assert_eq!(
        raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{id}/jobs?sort=up"),
            Some("glpat-alice"),
            None
        )
        .await
        .status,
        400
    );
    let (inst, _) = create(&emu, "glpat-root", json!({"runner_type": "instance_type"})).await;
    assert_eq!(
        raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{inst}/jobs"),
            Some("glpat-alice"),
            None
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn extra_control_surface_over_http() {
    let emu = emulator().await;
    check(&emu, "POST", "/-/emulator/seed", None, Some(json!({"users": [{"username": "erin"}], "tokens": [{"token": "glpat-erin", "user": "erin", "scopes": ["api"]}], "projects": [{"path": "grp/new", "members": {"erin": "maintainer"}}]})), 200, None).await;
    assert_eq!(
        raw(
            &emu,
            "GET",
            "/api/v4/projects/grp%2Fnew",
            Some("glpat-erin"),
            None
        )
        .await
        .status,
        200
    );
    check(&emu, "POST", "/-/emulator/faults", None, Some(json!({"endpoint": "GET /version", "times": 1, "action": {"kind": "status", "status": 503}})), 200, None).await;
    assert_eq!(
        raw(&emu, "GET", "/api/v4/version", Some("glpat-erin"), None)
            .await
            .status,
        503
    );
    assert_eq!(
        raw(&emu, "GET", "/api/v4/version", Some("glpat-erin"), None)
            .await
            .status,
        200
    );
    let counts = raw(&emu, "GET", "/-/emulator/counts", None, None)
        .await
        .json();
    assert_eq!(counts["GET /version"], 2);
}
