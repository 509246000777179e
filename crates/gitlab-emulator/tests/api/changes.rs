//! B15–B19: updating, deleting, assigning and unassigning runners; project and group lists.

use serde_json::json;

use super::*;

#[tokio::test]
async fn b15_put_rules() {
    let emu = emulator().await;
    let p = emu.project_id("grp/app").unwrap();
    let (id, _) = create(&emu, "glpat-alice", json!({"runner_type": "project_type", "project_id": p, "description": "keep", "tag_list": ["x"]})).await;
    let r = check(
        &emu,
        "PUT",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        Some(json!({})),
        400,
        None,
    )
    .await;
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
    check(
        &emu,
        "DELETE",
        &format!("/api/v4/runners/{id}"),
        Some("glpat-alice"),
        None,
        403,
        Some(json!({"message": "403 Forbidden - Runner associated with more than one project"})),
    )
    .await;
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
