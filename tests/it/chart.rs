//! Generated deployment files stay fresh; the Argo CD health check answers sample statuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(candidates: &[PathBuf], probe: &str, what: &str) -> Option<PathBuf> {
    let found = candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg(probe)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .cloned();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing in CI (.ci/install-tools installs it)"
        );
        eprintln!("SKIPPED: {what} not found (run .ci/install-tools)");
    }
    found
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
fn plain_manifests_are_rendered_from_the_chart() {
    let Some(helm) = tool(
        &[root().join(".tools/bin/helm"), PathBuf::from("helm")],
        "version",
        "helm",
    ) else {
        return;
    };
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

#[test]
fn argocd_health_reads_the_ready_condition() {
    let Some(lua) = tool(
        &[PathBuf::from("lua5.4"), PathBuf::from("lua")],
        "-v",
        "lua (Debian's lua5.4)",
    ) else {
        return;
    };
    let cond = |status: &str, reason: &str| json!({"type": "Ready", "status": status, "reason": reason, "message": "m"});
    let cases = [
        (json!({"metadata": {"generation": 1}}), "Progressing"),
        (
            json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "conditions": [cond("True", "Reconciled")]}}),
            "Progressing",
        ),
        (
            json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [cond("True", "Reconciled")]}}),
            "Healthy",
        ),
        (
            json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "ConnectionReady", "status": "True"}, cond("False", "InvalidSpec")]}}),
            "Degraded",
        ),
        (
            json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [cond("False", "GitLabRateLimited")]}}),
            "Progressing",
        ),
        (
            json!({"metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [cond("True", "Reconciled")]}}),
            "Progressing",
        ),
        (
            json!({"metadata": {}, "status": {"conditions": [cond("False", "ConnectionNotReady")]}}),
            "Degraded",
        ),
    ];
    for (obj, want) in cases {
        let (status, message) = health(&lua, obj.clone());
        assert_eq!(status, want, "{obj} → {message}");
    }
    let (_, message) = health(
        &lua,
        json!({"status": {"conditions": [cond("False", "InvalidSpec")]}}),
    );
    assert_eq!(message, "InvalidSpec: m");
}
