//! Generated deployment files stay fresh; the Argo CD health check answers sample statuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `.ci/install-tools`; the tests that need one are `#[ignore]`d (so plain `cargo
/// test` reports them as ignored, never as passed) and fail when asked for without it.
fn tool(candidates: &[PathBuf], probe: &str, what: &str) -> PathBuf {
    candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg(probe)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .cloned()
        .unwrap_or_else(|| panic!("{what} not found: run .ci/install-tools"))
}

#[test]
fn chart_crds_are_the_generated_ones() {
    for entry in std::fs::read_dir(root().join("crds")).unwrap().flatten() {
        let name = entry.file_name();
        let chart_copy =
            std::fs::read_to_string(root().join("charts/runner-operator/files/crds").join(&name))
                .unwrap_or_default();
        assert_eq!(
            chart_copy,
            std::fs::read_to_string(entry.path()).unwrap(),
            "charts/runner-operator/files/crds/{name:?} is stale: run .ci/generate"
        );
    }
}

#[test]
#[ignore = "needs helm from .ci/install-tools: cargo test -- --include-ignored runs it (CI does)"]
fn plain_manifests_are_rendered_from_the_chart() {
    let helm = tool(
        &[root().join(".tools/bin/helm"), PathBuf::from("helm")],
        "version",
        "helm",
    );
    let out = Command::new(helm)
        .args([
            "template",
            "runner-operator",
            "charts/runner-operator",
            "--namespace",
            "runner-operator",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(root().join("deploy/manifests/runner-operator.yaml")).unwrap();
    let body: String = committed
        .lines()
        .filter(|l| !l.starts_with("# Generated") && !l.starts_with("# Install:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == String::from_utf8_lossy(&out.stdout),
        "deploy/manifests/runner-operator.yaml is stale: run .ci/generate"
    );
}

#[test]
fn argocd_config_embeds_the_health_script_for_every_kind() {
    let script = std::fs::read_to_string(root().join("deploy/argocd/health.lua")).unwrap();
    let cm: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/argocd/argocd-cm-health.yaml")).unwrap(),
    )
    .unwrap();
    for kind in ["Runner", "GitLabConnection", "ClusterGitLabConnection"] {
        let key = format!("resource.customizations.health.gitlab.runner-operator.dev_{kind}");
        assert_eq!(
            cm["data"][&key].as_str().map(str::trim_end),
            Some(script.trim_end()),
            "{key}"
        );
    }
}

fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn health(lua: &Path, obj: Value) -> (String, String) {
    let script = std::fs::read_to_string(root().join("deploy/argocd/health.lua")).unwrap();
    let program = format!(
        "local obj = {}\nlocal function check()\n{script}\nend\nlocal hs = check()\nio.write(hs.status, '|', hs.message or '')\n",
        lua_literal(&obj)
    );
    let out = Command::new(lua).arg("-e").arg(program).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (s, m) = text.split_once('|').unwrap();
    (s.into(), m.into())
}

/// Sample statuses and the health Argo CD must show: (object, status, message must contain).
fn health_cases() -> Vec<(Value, &'static str, &'static str)> {
    let cond = |status: &str, reason: &str, message: &str| json!({"type": "Ready", "status": status, "reason": reason, "message": message});
    let observed = |conditions: Value| json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": conditions}});
    vec![
        (
            json!({"metadata": {"generation": 1}}),
            "Progressing",
            "Waiting for runner-operator",
        ),
        (
            json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "conditions": [cond("True", "Reconciled", "m")]}}),
            "Progressing",
            "observe generation 2",
        ),
        (
            observed(json!([cond("True", "Reconciled", "matches the spec")])),
            "Healthy",
            "matches the spec",
        ),
        (
            observed(
                json!([{"type": "ConnectionReady", "status": "True"}, cond("False", "InvalidSpec", "m")]),
            ),
            "Degraded",
            "InvalidSpec: m",
        ),
        (
            observed(json!([cond("False", "GitLabRateLimited", "m")])),
            "Progressing",
            "GitLabRateLimited",
        ),
        (
            json!({"metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [cond("True", "Reconciled", "m")]}}),
            "Progressing",
            "Deleting",
        ),
        // Deletion that cannot proceed: Degraded, with the way out.
        (
            json!({"metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [
                cond("False", "DeletionBlocked", "cannot delete the GitLab runner: GitLabConnection ci/gitlab does not exist. To release this Runner without touching GitLab, set spec.deletionPolicy: Orphan")]}}),
            "Degraded",
            "set spec.deletionPolicy: Orphan",
        ),
        // Ready, but the runner rotates its own token behind the operator's back.
        (
            observed(
                json!([cond("True", "Reconciled", "m"), {"type": "TokenRotationConflict", "status": "True", "reason": "TokenRotationConflict",
                "message": "Deployment/runner rotates its own token: set FF_DISABLE_AUTOMATIC_TOKEN_ROTATION=true"}]),
            ),
            "Degraded",
            "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION",
        ),
        (
            observed(
                json!([cond("True", "Reconciled", "m"), {"type": "ConsumersReady", "status": "False", "reason": "ConsumerMissing", "message": "StatefulSet/absent does not exist"}]),
            ),
            "Degraded",
            "StatefulSet/absent",
        ),
        // The connection is not there yet (first sync of an application): Progressing, saying
        // what is awaited.
        (
            observed(json!([cond(
                "False",
                "ConnectionNotReady",
                "GitLabConnection ci/gitlab does not exist: create it, or point spec.connectionRef at an existing one"
            )])),
            "Progressing",
            "create it, or point spec.connectionRef",
        ),
        // Refused by a ClusterGitLabConnection: nothing changes without someone acting.
        (
            observed(json!([cond(
                "False",
                "ConnectionNotAllowed",
                "ClusterGitLabConnection jihulab does not allow namespace other (see its spec.allowedNamespaces)"
            )])),
            "Degraded",
            "allowedNamespaces",
        ),
        (
            json!({"metadata": {}, "status": {"conditions": [cond("False", "InvalidSpec", "m")]}}),
            "Degraded",
            "InvalidSpec: m",
        ),
        // kstatus' conditions decide when present (the operator sets them from Ready).
        (
            observed(
                json!([cond("True", "Connected", "m"), {"type": "TokenScopes", "status": "False", "reason": "MissingScopes", "message": "needs api"},
                {"type": "Stalled", "status": "True", "reason": "MissingScopes", "message": "needs api"}]),
            ),
            "Degraded",
            "MissingScopes: needs api",
        ),
        (
            observed(
                json!([cond("False", "GitLabUnreachable", "m"), {"type": "Reconciling", "status": "True", "reason": "GitLabUnreachable", "message": "m"}]),
            ),
            "Progressing",
            "GitLabUnreachable: m",
        ),
    ]
}

/// Argo CD's fallback list of transient reasons is kstatus' (one table for both tools).
#[test]
fn argocd_transient_reasons_are_kstatus_reconciling_reasons() {
    let lua = std::fs::read_to_string(root().join("deploy/argocd/health.lua")).expect("health.lua");
    let table = lua
        .split("local transient = {")
        .nth(1)
        .and_then(|t| t.split('}').next())
        .expect("the transient table");
    let mut in_lua: Vec<&str> = table
        .split(',')
        .filter_map(|e| e.split('=').next().map(str::trim))
        .filter(|k| !k.is_empty())
        .collect();
    let mut in_rust: Vec<&str> = runner_operator::controller::standing::TRANSIENT
        .iter()
        .map(|r| r.as_str())
        .collect();
    in_lua.sort();
    in_rust.sort();
    assert_eq!(in_lua, in_rust);
}

fn check_health(runner: &str, results: Vec<(String, String)>) {
    let cases = health_cases();
    assert_eq!(results.len(), cases.len());
    for ((obj, want, says), (status, message)) in cases.into_iter().zip(results) {
        assert_eq!(status, want, "{runner}: {obj} → {message}");
        assert!(
            message.contains(says),
            "{runner}: {obj} → {message:?} lacks {says:?}"
        );
    }
}

#[test]
#[ignore = "needs lua5.4 from .ci/install-tools: cargo test -- --include-ignored runs it (CI does)"]
fn argocd_health_in_lua_5_4() {
    let lua = tool(
        &[PathBuf::from("lua5.4"), PathBuf::from("lua")],
        "-v",
        "lua (Debian's lua5.4)",
    );
    let results = health_cases()
        .into_iter()
        .map(|(obj, _, _)| health(&lua, obj))
        .collect();
    check_health("lua 5.4", results);
}

/// Argo CD runs health checks in gopher-lua (Lua 5.1), not Lua 5.4: the same cases there,
/// through `tests/argocd-lua` (a few lines of Go over gopher-lua, as Argo CD calls it).
#[test]
#[ignore = "needs Go: tests/control-plane/e2e.sh runs it, or cargo test -- --include-ignored"]
fn argocd_health_in_gopher_lua_as_argocd_runs_it() {
    let objects: Vec<Value> = health_cases().into_iter().map(|(o, _, _)| o).collect();
    let lua = root().join("deploy/argocd/health.lua");
    let results = crate::support::go_run("tests/argocd-lua", &[&lua], &objects);
    let results = results
        .into_iter()
        .map(|r| {
            assert!(r["error"].is_null(), "gopher-lua: {r}");
            (
                r["status"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    check_health("gopher-lua", results);
}
