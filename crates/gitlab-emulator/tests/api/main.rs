//! The emulator against the behaviour GitLab's Runners API shows (its `lib/api/ci/runners.rb`,
//! `lib/api/user_runners.rb` and their specs), one test per behaviour (B1…B25) plus extras.

use serde_json::json;

mod support;

use support::{check, create, emulator, raw};

mod changes;
mod create;
mod extras;
mod runner_side;
mod tokens;

#[tokio::test]
async fn b01_error_shapes() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    // Grape parameter error: {"error": ...}
    for (method, path, token, body, status, want) in [
        (
            "POST",
            "/api/v4/user/runners".to_string(),
            Some("glpat-alice"),
            Some(json!({})),
            400,
            Some(
                json!({"error": "runner_type is missing, runner_type does not have a valid value"}),
            ),
        ),
        // Helper error: {"message": "404 Runner Not Found"}
        (
            "GET",
            "/api/v4/runners/999".to_string(),
            Some("glpat-alice"),
            None,
            404,
            Some(json!({"message": "404 Runner Not Found"})),
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
    // Model error: {"message": {attr: [..]}}
    let (id, _) = create(
        &emu,
        "glpat-alice",
        json!({"runner_type": "project_type", "project_id": p}),
    )
    .await;
    for (method, path, token, body, status, want) in [
        (
            "PUT",
            format!("/api/v4/runners/{id}"),
            Some("glpat-alice"),
            Some(json!({"maximum_timeout": 0})),
            400,
            Some(json!({"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}})),
        ),
        // Unknown route: {"error": "404 Not Found"}; API v3: 410.
        (
            "GET",
            "/api/v4/nope".to_string(),
            Some("glpat-alice"),
            None,
            404,
            Some(json!({"error": "404 Not Found"})),
        ),
        (
            "GET",
            "/api/v3/runners".to_string(),
            Some("glpat-alice"),
            None,
            410,
            None,
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
}

#[tokio::test]
async fn b02_unauthenticated_first_and_token_states() {
    let emu = emulator().await;
    for (method, path, token, body, status, want) in [
        (
            "GET",
            "/api/v4/runners/999".to_string(),
            None,
            None,
            401,
            Some(json!({"message": "401 Unauthorized"})),
        ),
        (
            "GET",
            "/api/v4/runners".to_string(),
            Some("glpat-unknown"),
            None,
            401,
            None,
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
    let r = check(
        &emu,
        "GET",
        "/api/v4/runners",
        Some("glpat-expired"),
        None,
        401,
        None,
    )
    .await;
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
        check(
            &emu,
            m,
            &path,
            Some("glpat-carol"),
            Some(json!({"description": "x"})),
            403,
            Some(json!({"message": "403 Forbidden - No access granted"})),
        )
        .await;
    }
    check(
        &emu,
        "GET",
        "/api/v4/runners/abc",
        Some("glpat-carol"),
        None,
        400,
        Some(json!({"error": "id is invalid"})),
    )
    .await;
}

#[tokio::test]
async fn b04_invisible_project_404_low_role_403() {
    let emu = emulator().await;
    for (method, path, token, body, status, want) in [
        (
            "GET",
            "/api/v4/projects/other%2Fproj/runners".to_string(),
            Some("glpat-alice"),
            None,
            404,
            Some(json!({"message": "404 Project Not Found"})),
        ),
        (
            "GET",
            "/api/v4/projects/grp%2Fapp/runners".to_string(),
            Some("glpat-bob"),
            None,
            403,
            Some(json!({"message": "403 Forbidden"})),
        ),
        (
            "GET",
            "/api/v4/groups/other/runners".to_string(),
            Some("glpat-alice"),
            None,
            404,
            Some(json!({"message": "404 Group Not Found"})),
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
    let r = check(
        &emu,
        "GET",
        "/api/v4/projects/grp%2Fapp",
        Some("glpat-alice"),
        None,
        200,
        None,
    )
    .await;
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
    check(
        &emu,
        "POST",
        "/api/v4/user/runners",
        Some("glpat-alice-create"),
        Some(json!({"runner_type": "project_type", "project_id": p})),
        201,
        None,
    )
    .await;
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
