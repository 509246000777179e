//! B06–B14: creating runners, their defaults, REST status order, list filters and scopes, tags,
//! timeouts and lengths.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
async fn b06_create_user_runner() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let g = emu.group_id("grp").unwrap();
    let r = check(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
        201,
        None,
    )
    .await;
    let v = r.json();
    assert!(v["token"].as_str().unwrap().starts_with("glrt-t3_"));
    assert!(v["token_expires_at"].is_null());
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "group_type", "group_id": g})),
    )
    .await;
    assert!(r.json()["token"].as_str().unwrap().starts_with("glrt-t2_"));
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-root"),
        Some(json!({"runner_type": "instance_type"})),
    )
    .await;
    assert!(r.json()["token"].as_str().unwrap().starts_with("glrt-t1_"));
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "group_type"})),
    )
    .await;
    assert_eq!(r.json(), json!({"error": "group_id is missing"}));
    check(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": 999999})),
        400,
        Some(json!({"message": "400 Bad request - Missing/invalid project"})),
    )
    .await;
    let other = emu.project_id("other/proj").unwrap();
    for (method, path, token, body, status, want) in [
        (
            "POST",
            "/api/v4/user/runners".to_string(),
            Some("glpat-alice"),
            Some(json!({"runner_type": "project_type", "project_id": other})),
            403,
            Some(json!({"message": "403 Forbidden - Insufficient permissions"})),
        ),
        (
            "POST",
            "/api/v4/user/runners".to_string(),
            Some("glpat-alice"),
            Some(json!({"runner_type": "instance_type"})),
            403,
            None,
        ),
        (
            "POST",
            "/api/v4/user/runners".to_string(),
            Some("glpat-alice"),
            Some(json!({"runner_type": "project_type", "project_id": p, "run_untagged": false})),
            400,
            Some(
                json!({"message": "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs"}),
            ),
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
}

#[tokio::test]
async fn b07_created_runner_defaults() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let v = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(v["status"], "never_contacted");
    assert!(v["online"].is_null());
    assert_eq!(v["locked"], false);
    assert_eq!(v["run_untagged"], true);
    assert_eq!(v["access_level"], "not_protected");
    assert!(v["maximum_timeout"].is_null());
    assert_eq!(v["projects"][0]["path_with_namespace"], "grp/app");
}

#[tokio::test]
async fn b08_rest_status_order() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let status = || async {
        raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{id}"),
            Some("glpat-alice"),
            None,
        )
        .await
        .json()["status"]
            .clone()
    };
    assert_eq!(status().await, "never_contacted");
    raw(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(status().await, "online");
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"paused": true})),
    )
    .await;
    assert_eq!(status().await, "paused");
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"paused": false})),
    )
    .await;
    emu.advance_clock(Duration::from_secs(3 * 3600));
    assert_eq!(status().await, "offline");
    emu.advance_clock(Duration::from_secs(8 * 24 * 3600));
    assert_eq!(status().await, "stale");
}

#[tokio::test]
async fn b09_status_filters() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (a, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let (b, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    raw(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(json!({"token": token})),
    )
    .await;
    let ids = |v: serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let q = |s: &'static str| {
        let emu = &emu;
        async move {
            raw(
                emu,
                "GET",
                &format!("/api/v4/runners?{s}"),
                Some("glpat-alice"),
                None,
            )
            .await
        }
    };
    assert_eq!(ids(q("status=online").await.json()), vec![a]);
    assert_eq!(ids(q("status=never_contacted").await.json()), vec![b]);
    emu.advance_clock(Duration::from_secs(8 * 24 * 3600));
    // offline includes stale runners that had contact; never_contacted includes stale ones.
    assert_eq!(ids(q("status=offline").await.json()), vec![a]);
    assert_eq!(ids(q("status=stale").await.json()), vec![a, b]);
    assert_eq!(ids(q("status=never_contacted").await.json()), vec![b]);
    let r = q("status=bogus").await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "status does not have a valid value"}))
    );
    assert_eq!(ids(q("scope=active").await.json()), vec![a, b]);
}

#[tokio::test]
async fn b10_owned_list_all_list_and_scopes() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (pr, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let (inst, _) = create(&emu, "glpat-root", json!({"runner_type": "instance_type"})).await;
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-root"), None).await;
    let ids: Vec<i64> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(
        !ids.contains(&inst),
        "instance runners are never in GET /runners"
    );
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-alice"), None).await;
    assert_eq!(r.json()[0]["id"], pr);
    check(
        &emu,
        "GET",
        "/api/v4/runners/all",
        Some("glpat-alice"),
        None,
        403,
        Some(json!({"message": "403 Forbidden"})),
    )
    .await;
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners/all?scope=shared",
        Some("glpat-root"),
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    check(
        &emu,
        "GET",
        "/api/v4/runners?scope=shared",
        Some("glpat-alice"),
        None,
        400,
        Some(json!({"message": "Scope contains invalid value"})),
    )
    .await;
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?type=bogus",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"error": "type does not have a valid value"})
    );
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?version_prefix=V15",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.json(), json!({"error": "version_prefix is invalid"}));
}

#[tokio::test]
async fn b11_tag_parsing_and_replacement() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p, "tag_list": "tag1, tag2,tag1,"}),
    )
    .await;
    assert_eq!(emu.runner(id).unwrap().tags, vec!["tag1", "tag2"]);
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"tag_list": ["a,b", "c"]})),
    )
    .await;
    assert_eq!(r.json()["tag_list"], json!(["a", "b", "c"]));
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"tag_list": ""})),
    )
    .await;
    assert!(emu.runner(id).unwrap().tags.is_empty());
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?tag_list=a,b",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn b12_tag_limits() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    for (method, path, token, body, status, want) in [
        (
            "PUT",
            format!("/api/v4/runners/{id}"),
            Some("glpat-alice"),
            Some(json!({"tag_list": many})),
            400,
            Some(
                json!({"message": {"tags_list": ["Too many tags specified. Please limit the number of tags to 50"]}}),
            ),
        ),
        (
            "PUT",
            format!("/api/v4/runners/{id}"),
            Some("glpat-alice"),
            Some(json!({"run_untagged": false})),
            400,
            Some(
                json!({"message": {"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]}}),
            ),
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
}

#[tokio::test]
async fn b13_maximum_timeout() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let put = |body| {
        let emu = &emu;
        async move {
            raw(
                emu,
                "PUT",
                &format!("/api/v4/runners/{id}"),
                Some("glpat-alice"),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(put(json!({"maximum_timeout": 599})).await.status, 400);
    assert_eq!(
        put(json!({"maximum_timeout": "abc"})).await.json(),
        json!({"error": "maximum_timeout is invalid"})
    );
    assert_eq!(
        put(json!({"maximum_timeout": 600})).await.json()["maximum_timeout"],
        600
    );
    assert!(put(json!({"maximum_timeout": null})).await.json()["maximum_timeout"].is_null());
}

#[tokio::test]
async fn b14_lengths_and_hidden_maintenance_note() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p, "maintenance_note": "secret plan"}),
    )
    .await;
    let long = "x".repeat(1025);
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"description": long})),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"message": {"description": ["is too long (maximum is 1024 characters)"]}})
    );
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"maintenance_note": long})),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"message": {"maintenance_note": ["is too long (maximum is 1024 characters)"]}})
    );
    // Shared with other/proj (admin assigns), carol can read but not update: note hidden.
    let other = emu.project_id("other/proj").unwrap();
    check(
        &emu,
        "POST",
        &format!("/api/v4/projects/{other}/runners"),
        Some("glpat-root"),
        Some(json!({"runner_id": id})),
        201,
        None,
    )
    .await;
    let v = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(v["maintenance_note"], "secret plan");
    let v = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-bob"),
        None,
    )
    .await;
    assert_eq!(v.status, 403);
}
