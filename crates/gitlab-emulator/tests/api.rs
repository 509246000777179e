//! The emulator against `shared/gitlab-runners-api.md` §15, one test per behaviour (B1…B25)
//! plus the extras listed there.

use std::time::Duration;

use gitlab_emulator::{JobRec, Settings, Throttle};
use serde_json::json;

mod support;

use support::{create, emulator, raw};

#[tokio::test]
async fn b01_error_shapes() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    // Grape parameter error: {"error": ...}
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "runner_type is missing, runner_type does not have a valid value"})
        )
    );
    // Helper error: {"message": "404 Runner Not Found"}
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners/999",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "404 Runner Not Found"}))
    );
    // Model error: {"message": {attr: [..]}}
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"maximum_timeout": 0})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}})
        )
    );
    // Unknown route: {"error": "404 Not Found"}; API v3: 410.
    let r = raw(&emu, "GET", "/api/v4/nope", Some("glpat-alice"), None).await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "404 Not Found"}))
    );
    let r = raw(&emu, "GET", "/api/v3/runners", Some("glpat-alice"), None).await;
    assert_eq!(r.status, 410);
}

#[tokio::test]
async fn b02_unauthenticated_first_and_token_states() {
    let emu = emulator().await;
    let r = raw(&emu, "GET", "/api/v4/runners/999", None, None).await;
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "401 Unauthorized"}))
    );
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-unknown"), None).await;
    assert_eq!(r.status, 401);
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-expired"), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-revoked"), None).await;
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[tokio::test]
async fn b03_forbidden_runner_is_403_missing_is_404() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    for (m, path) in [
        ("GET", format!("/api/v4/runners/{id}")),
        ("PUT", format!("/api/v4/runners/{id}")),
        ("DELETE", format!("/api/v4/runners/{id}")),
    ] {
        let r = raw(
            &emu,
            m,
            &path,
            Some("glpat-carol"),
            Some(json!({"description": "x"})),
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (403, json!({"message": "403 Forbidden - No access granted"})),
            "{m}"
        );
    }
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners/abc",
        Some("glpat-carol"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "id is invalid"}))
    );
}

#[tokio::test]
async fn b04_invisible_project_404_low_role_403() {
    let emu = emulator().await;
    let r = raw(
        &emu,
        "GET",
        "/api/v4/projects/other%2Fproj/runners",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "404 Project Not Found"}))
    );
    let r = raw(
        &emu,
        "GET",
        "/api/v4/projects/grp%2Fapp/runners",
        Some("glpat-bob"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"message": "403 Forbidden"}))
    );
    let r = raw(
        &emu,
        "GET",
        "/api/v4/groups/other/runners",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "404 Group Not Found"}))
    );
    let r = raw(
        &emu,
        "GET",
        "/api/v4/projects/grp%2Fapp",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path_with_namespace"], "grp/app");
}

#[tokio::test]
async fn b05_scope_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let cases = [
        (
            "glpat-alice-read",
            "GET",
            format!("/api/v4/runners/{id}"),
            200,
        ),
        (
            "glpat-alice-read",
            "PUT",
            format!("/api/v4/runners/{id}"),
            403,
        ),
        (
            "glpat-alice-manage",
            "GET",
            format!("/api/v4/runners/{id}"),
            200,
        ),
        (
            "glpat-alice-manage",
            "PUT",
            format!("/api/v4/runners/{id}"),
            200,
        ),
        (
            "glpat-alice-manage",
            "GET",
            "/api/v4/runners".to_string(),
            403,
        ),
        (
            "glpat-alice-manage",
            "GET",
            "/api/v4/projects/grp%2Fapp/runners".to_string(),
            403,
        ),
        (
            "glpat-alice-create",
            "GET",
            format!("/api/v4/runners/{id}"),
            403,
        ),
        (
            "glpat-alice-read",
            "GET",
            "/api/v4/runners".to_string(),
            200,
        ),
    ];
    for (token, m, path, want) in cases {
        let r = raw(
            &emu,
            m,
            &path,
            Some(token),
            Some(json!({"description": "d"})),
        )
        .await;
        assert_eq!(r.status, want, "{token} {m} {path}: {}", r.text);
        if want == 403 {
            assert_eq!(r.json()["error"], "insufficient_scope");
        }
    }
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice-create"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice-read"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, json!("insufficient_scope"))
    );
}

#[tokio::test]
async fn b06_create_user_runner() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let g = emu.group_id("grp").unwrap();
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
    )
    .await;
    assert_eq!(r.status, 201);
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
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": 999999})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": "400 Bad request - Missing/invalid project"})
        )
    );
    let other = emu.project_id("other/proj").unwrap();
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": other})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "403 Forbidden - Insufficient permissions"})
        )
    );
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "instance_type"})),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": p, "run_untagged": false})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs"})
        )
    );
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
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners/all",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"message": "403 Forbidden"}))
    );
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners/all?scope=shared",
        Some("glpat-root"),
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?scope=shared",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": "Scope contains invalid value"}))
    );
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
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"tag_list": many})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": {"tags_list": ["Too many tags specified. Please limit the number of tags to 50"]}})
        )
    );
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"run_untagged": false})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": {"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]}})
        )
    );
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
    let r = raw(
        &emu,
        "POST",
        &format!("/api/v4/projects/{other}/runners"),
        Some("glpat-root"),
        Some(json!({"runner_id": id})),
    )
    .await;
    assert_eq!(r.status, 201);
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

#[tokio::test]
async fn b15_put_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(&emu, "glpat-alice", json!({"runner_type": "project_type", "project_id": p, "description": "keep", "tag_list": ["x"]})).await;
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .ends_with("at least one parameter must be provided")
    );
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"active": true, "paused": true})),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"error": "active, paused are mutually exclusive"})
    );
    let r = raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"locked": true})),
    )
    .await;
    let v = r.json();
    assert_eq!(
        (
            v["locked"].clone(),
            v["description"].clone(),
            v["tag_list"].clone()
        ),
        (json!(true), json!("keep"), json!(["x"]))
    );
    assert!(v["projects"].is_array(), "PUT answers the full details");
}

#[tokio::test]
async fn b16_delete_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let lib = emu.project_id("grp/lib").unwrap();
    let g = emu.group_id("grp").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    raw(
        &emu,
        "POST",
        &format!("/api/v4/projects/{lib}/runners"),
        Some("glpat-alice"),
        Some(json!({"runner_id": id})),
    )
    .await;
    let r = raw(
        &emu,
        "DELETE",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "403 Forbidden - Runner associated with more than one project"})
        )
    );
    raw(
        &emu,
        "DELETE",
        &format!("/api/v4/projects/{lib}/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await;
    let r = raw(
        &emu,
        "DELETE",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(
        raw(
            &emu,
            "GET",
            &format!("/api/v4/runners/{id}"),
            Some("glpat-alice"),
            None
        )
        .await
        .status,
        404
    );
    // Group runner: Owner may delete, Maintainer may not.
    let (gid, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "group_type", "group_id": g}),
    )
    .await;
    assert_eq!(
        raw(
            &emu,
            "DELETE",
            &format!("/api/v4/runners/{gid}"),
            Some("glpat-dave"),
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        raw(
            &emu,
            "DELETE",
            &format!("/api/v4/runners/{gid}"),
            Some("glpat-alice"),
            None
        )
        .await
        .status,
        204
    );
}

#[tokio::test]
async fn b17_assign_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let lib = emu.project_id("grp/lib").unwrap();
    let g = emu.group_id("grp").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let (gid, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "group_type", "group_id": g}),
    )
    .await;
    let (inst, _) = create(&emu, "glpat-root", json!({"runner_type": "instance_type"})).await;
    let assign = |rid: i64, token: &'static str| {
        let emu = &emu;
        async move {
            raw(
                emu,
                "POST",
                &format!("/api/v4/projects/{lib}/runners"),
                Some(token),
                Some(json!({"runner_id": rid})),
            )
            .await
        }
    };
    let r = assign(gid, "glpat-root").await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "403 Forbidden - Runner is a group runner"})
        )
    );
    assert_eq!(
        assign(inst, "glpat-alice").await.json(),
        json!({"message": "403 Forbidden - No access granted"})
    );
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"locked": true})),
    )
    .await;
    assert_eq!(
        assign(id, "glpat-alice").await.json(),
        json!({"message": "403 Forbidden - Runner is locked"})
    );
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"locked": false})),
    )
    .await;
    let r = assign(id, "glpat-alice").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["id"], id);
    assert_eq!(emu.runner(id).unwrap().projects, vec!["grp/app", "grp/lib"]);
    assert_eq!(
        assign(id, "glpat-alice").await.status,
        400,
        "already assigned"
    );
    let r = raw(
        &emu,
        "POST",
        &format!("/api/v4/projects/{lib}/runners"),
        Some("glpat-alice"),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.json(), json!({"error": "runner_id is missing"}));
}

#[tokio::test]
async fn b18_unassign_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let lib = emu.project_id("grp/lib").unwrap();
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let un = |project: i64, token: &'static str| {
        let emu = &emu;
        async move {
            raw(
                emu,
                "DELETE",
                &format!("/api/v4/projects/{project}/runners/{id}"),
                Some(token),
                None,
            )
            .await
        }
    };
    assert_eq!(
        un(lib, "glpat-alice").await.json(),
        json!({"message": "404 Runner Not Found"})
    );
    assert_eq!(
        un(p, "glpat-alice").await.json(),
        json!({"message": "403 Forbidden - No access granted"})
    );
    assert_eq!(
        un(p, "glpat-root").await.json(),
        json!({"message": "403 Forbidden - You cannot unassign a runner from the owner project. Delete the runner instead"})
    );
    raw(
        &emu,
        "POST",
        &format!("/api/v4/projects/{lib}/runners"),
        Some("glpat-alice"),
        Some(json!({"runner_id": id})),
    )
    .await;
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"locked": true})),
    )
    .await;
    assert_eq!(
        un(lib, "glpat-alice").await.json(),
        json!({"message": "403 Forbidden - Runner is locked"})
    );
    raw(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({"locked": false})),
    )
    .await;
    assert_eq!(un(lib, "glpat-alice").await.status, 204);
    assert_eq!(emu.runner(id).unwrap().projects, vec!["grp/app"]);
}

#[tokio::test]
async fn b19_project_and_group_lists() {
    let emu = emulator().await;
    let app = emu.project_id("grp/app").unwrap();
    let g = emu.group_id("grp").unwrap();
    let sub = emu.group_id("grp/sub").unwrap();
    let (pr, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": app}),
    )
    .await;
    let (gr, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "group_type", "group_id": g}),
    )
    .await;
    let (inst, _) = create(&emu, "glpat-root", json!({"runner_type": "instance_type"})).await;
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
            "/api/v4/projects/grp%2Fapp/runners",
            Some("glpat-alice"),
            None
        )
        .await),
        vec![pr, gr, inst]
    );
    emu.set_project_runner_settings("grp/app", false, false);
    assert_eq!(
        ids(raw(
            &emu,
            "GET",
            "/api/v4/projects/grp%2Fapp/runners",
            Some("glpat-alice"),
            None
        )
        .await),
        vec![pr]
    );
    // Group list: the group's and its ancestors' runners plus instance, never project runners.
    assert_eq!(
        ids(raw(
            &emu,
            "GET",
            &format!("/api/v4/groups/{sub}/runners"),
            Some("glpat-alice"),
            None
        )
        .await),
        vec![gr, inst]
    );
    assert_eq!(
        ids(raw(
            &emu,
            "GET",
            "/api/v4/groups/grp/runners?type=project_type",
            Some("glpat-alice"),
            None
        )
        .await),
        Vec::<i64>::new()
    );
}

#[tokio::test]
async fn b20_reset_tokens() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, old) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let r = raw(
        &emu,
        "POST",
        &format!("/api/v4/runners/{id}/reset_authentication_token"),
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    let new = r.json()["token"].as_str().unwrap().to_string();
    assert!(
        r.json()
            .as_object()
            .unwrap()
            .contains_key("token_expires_at")
    );
    assert_ne!(new, old);
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/verify",
            None,
            Some(json!({"token": old}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/verify",
            None,
            Some(json!({"token": new}))
        )
        .await
        .status,
        200
    );
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners/reset_authentication_token",
        None,
        Some(json!({"token": new})),
    )
    .await;
    assert_eq!(r.status, 201);
    let newer = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/reset_authentication_token",
            None,
            Some(json!({"token": new}))
        )
        .await
        .json(),
        json!({"message": "403 Forbidden"})
    );
    assert_eq!(emu.runner(id).unwrap().token, newer);
    assert_eq!(
        raw(
            &emu,
            "POST",
            &format!("/api/v4/runners/{id}/reset_authentication_token"),
            Some("glpat-carol"),
            None
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn b21_token_expiry_intervals() {
    let emu = emulator().await;
    emu.update_settings(|s| {
        s.project_runner_token_expiration_interval = Some(5 * 86400);
        s.runner_token_expiration_interval = Some(86400);
    });
    let p = emu.project_id("grp/app").unwrap();
    let r = raw(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
    )
    .await;
    let v = r.json();
    let token = v["token"].as_str().unwrap().to_string();
    let expires = v["token_expires_at"].as_str().unwrap();
    let ts: jiff::Timestamp = expires.parse().unwrap();
    let left = ts.as_second() - jiff::Timestamp::now().as_second();
    assert!((5 * 86400 - 60..=5 * 86400 + 60).contains(&left), "{left}");
    assert!(expires.ends_with('Z') && expires.len() == "2024-06-09T11:12:02.507Z".len());
    // An expired token can neither verify nor reset itself; the management API still can.
    emu.advance_clock(Duration::from_secs(6 * 86400));
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/verify",
            None,
            Some(json!({"token": token}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/reset_authentication_token",
            None,
            Some(json!({"token": token}))
        )
        .await
        .status,
        403
    );
    let id = v["id"].as_i64().unwrap();
    assert_eq!(
        raw(
            &emu,
            "POST",
            &format!("/api/v4/runners/{id}/reset_authentication_token"),
            Some("glpat-alice"),
            None
        )
        .await
        .status,
        201
    );
    let (inst, _) = create(&emu, "glpat-root", json!({"runner_type": "instance_type"})).await;
    assert!(emu.runner(inst).unwrap().token_expires_at.is_some());
}

#[tokio::test]
async fn b22_verify() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, token) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(json!({"token": token, "system_id": "s_89e5e9956577"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], id);
    assert_eq!(r.json()["token"], token.as_str());
    let v = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert!(v["contacted_at"].is_string());
    let m = raw(
        &emu,
        "GET",
        &format!("/api/v4/runners/{id}/managers"),
        Some("glpat-alice"),
        None,
    )
    .await
    .json();
    assert_eq!(m[0]["system_id"], "s_89e5e9956577");
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/verify",
            None,
            Some(json!({"token": "glrt-nope"}))
        )
        .await
        .json(),
        json!({"message": "403 Forbidden"})
    );
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/api/v4/runners/verify",
            None,
            Some(json!({}))
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn b23_legacy_registration() {
    let emu = emulator().await;
    let token = emu.project_registration_token("grp/app").unwrap();
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            410,
            json!({"message": "410 Gone - runner registration disallowed"})
        )
    );
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": "unknown"})),
    )
    .await;
    assert_eq!(r.status, 410, "unknown tokens also get 410 while disabled");
    let r = raw(
        &emu,
        "POST",
        "/api/v4/projects/grp%2Fapp/runners/reset_registration_token",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"message": "403 Forbidden"}))
    );
    emu.update_settings(|s| s.allow_runner_registration_token = true);
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": "unknown"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "403 Forbidden - invalid token supplied"})
        )
    );
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": token, "description": "legacy", "tag_list": "a,b"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("t3_"), "{t}");
    let r = raw(
        &emu,
        "POST",
        "/api/v4/projects/grp%2Fapp/runners/reset_registration_token",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(r.json()["token"].as_str().unwrap().starts_with("GR1348941"));
    assert_eq!(
        raw(&emu, "POST", "/api/v4/runners", None, Some(json!({})))
            .await
            .json(),
        json!({"error": "token is missing"})
    );
    let r = raw(
        &emu,
        "POST",
        "/api/v4/projects/grp%2Fapp/runners/reset_registration_token",
        Some("glpat-bob"),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw(
        &emu,
        "POST",
        "/api/v4/runners/reset_registration_token",
        Some("glpat-root"),
        None,
    )
    .await;
    assert_eq!(r.status, 201);
}

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
    let r = raw(
        &emu,
        "GET",
        "/api/v4/runners?page=9",
        Some("glpat-alice"),
        None,
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!([])));
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
    let r = raw(&emu, "GET", "/api/v4/runners", Some("glpat-alice"), None).await;
    assert_eq!(r.status, 429);
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
    let r = raw(&emu, "POST", "/-/emulator/seed", None, Some(json!({"users": [{"username": "erin"}], "tokens": [{"token": "glpat-erin", "user": "erin", "scopes": ["api"]}], "projects": [{"path": "grp/new", "members": {"erin": "maintainer"}}]}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
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
    let r = raw(&emu, "POST", "/-/emulator/faults", None, Some(json!({"endpoint": "GET /version", "times": 1, "action": {"kind": "status", "status": 503}}))).await;
    assert_eq!(r.status, 200);
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
