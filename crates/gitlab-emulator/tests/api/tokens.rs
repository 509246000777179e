//! B20–B23: token resets, expiry intervals, verify, legacy registration.

use std::time::Duration;

use serde_json::json;

use super::*;

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
    let r = check(
        &emu,
        "POST",
        &format!("/api/v4/runners/{id}/reset_authentication_token"),
        Some("glpat-alice"),
        None,
        201,
        None,
    )
    .await;
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
    let r = check(
        &emu,
        "POST",
        "/api/v4/runners/reset_authentication_token",
        None,
        Some(json!({"token": new})),
        201,
        None,
    )
    .await;
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
    let r = check(
        &emu,
        "POST",
        "/api/v4/runners/verify",
        None,
        Some(json!({"token": token, "system_id": "s_89e5e9956577"})),
        200,
        None,
    )
    .await;
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
    check(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": token})),
        410,
        Some(json!({"message": "410 Gone - runner registration disallowed"})),
    )
    .await;
    check(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": "unknown"})),
        410,
        None,
    )
    .await;
    check(
        &emu,
        "POST",
        "/api/v4/projects/grp%2Fapp/runners/reset_registration_token",
        Some("glpat-alice"),
        None,
        403,
        Some(json!({"message": "403 Forbidden"})),
    )
    .await;
    emu.update_settings(|s| s.allow_runner_registration_token = true);
    check(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": "unknown"})),
        403,
        Some(json!({"message": "403 Forbidden - invalid token supplied"})),
    )
    .await;
    let r = check(
        &emu,
        "POST",
        "/api/v4/runners",
        None,
        Some(json!({"token": token, "description": "legacy", "tag_list": "a,b"})),
        201,
        None,
    )
    .await;
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("t3_"), "{t}");
    let r = check(
        &emu,
        "POST",
        "/api/v4/projects/grp%2Fapp/runners/reset_registration_token",
        Some("glpat-alice"),
        None,
        201,
        None,
    )
    .await;
    assert!(r.json()["token"].as_str().unwrap().starts_with("GR1348941"));
    assert_eq!(
        raw(&emu, "POST", "/api/v4/runners", None, Some(json!({})))
            .await
            .json(),
        json!({"error": "token is missing"})
    );
    for (method, path, token, body, status, want) in [
        (
            "POST",
            "/api/v4/projects/grp%2Fapp/runners/reset_registration_token".to_string(),
            Some("glpat-bob"),
            None,
            403,
            None,
        ),
        (
            "POST",
            "/api/v4/runners/reset_registration_token".to_string(),
            Some("glpat-root"),
            None,
            201,
            None,
        ),
    ] {
        check(&emu, method, &path, token, body, status, want).await;
    }
}
