//! `plan` and `import` against the GitLab emulator and a cluster: each kind of change and each
//! blocking reason, nothing written by either, the JSON schema pinned, the exit codes, and the
//! round trip import → apply → adoption with one reset → plan says nothing to do.

use std::collections::BTreeMap;

use runner_operator::preview::{self, Outcome, PlanDocument, RunnerPlan, Source, input};
use serde_json::{Value, json};

use crate::operator::Env;

mod imports;
pub(crate) mod plan;

use imports::*;
use plan::*;

pub(crate) const ROOT: &str = "glpat-emulator-root";

pub(crate) fn spec(extra: Value) -> Value {
    let mut s = json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api"});
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    s
}

/// Every write the emulator served (anything but GET).
pub(crate) fn gitlab_writes(env: &Env) -> BTreeMap<String, u64> {
    env.gitlab
        .request_counts()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .collect()
}

pub(crate) async fn root(env: &Env, method: &str, path: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    reqwest::Client::new()
        .request(method, format!("{}/api/v4{path}", env.gitlab.url()))
        .header("PRIVATE-TOKEN", ROOT)
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// A runner made by hand (not by the operator): its id.
pub(crate) async fn hand_made(env: &Env, body: Value) -> i64 {
    root(env, "POST", "/user/runners", body).await["id"]
        .as_i64()
        .expect("id")
}

pub(crate) async fn plan_cluster(env: &Env) -> PlanDocument {
    let runners = input::from_cluster(&env.client, Some("ci"), false)
        .await
        .expect("runners");
    preview::plan_all(&Source::Cluster(env.client.clone()), runners).await
}

pub(crate) fn find<'a>(doc: &'a PlanDocument, name: &str) -> &'a RunnerPlan {
    doc.runners
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not planned: {doc:#?}"))
}

pub(crate) fn blocked(doc: &PlanDocument, name: &str) -> (String, String) {
    let p = find(doc, name);
    assert_eq!(p.outcome, Outcome::Blocked, "{p:#?}");
    assert!(p.actions.is_empty(), "{p:#?}");
    (
        p.reason.clone().unwrap_or_default(),
        p.message.clone().unwrap_or_default(),
    )
}

/// The JSON Schema of `plan -o json`, pinned: a change to the document's shape must change
/// docs/plan-output.schema.json too (`UPDATE_DOCS=1` rewrites it).
#[test]
pub(crate) fn plan_output_schema_is_pinned() {
    let schema = schemars::schema_for!(PlanDocument);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plan-output.schema.json");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let pinned = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        pinned == text,
        "docs/plan-output.schema.json is stale: run UPDATE_DOCS=1 cargo test --test it plan_output_schema"
    );
}

mod local {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_names_every_change_and_blocking_reason_and_writes_nothing() {
        super::plan_names_every_change_and_blocking_reason_and_writes_nothing(
            crate::cluster::Backend::Local,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean() {
        super::import_then_apply_adopts_with_one_reset_and_plan_is_clean(
            crate::cluster::Backend::Local,
        )
        .await
    }
}

mod real {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
    async fn plan_names_every_change_and_blocking_reason_and_writes_nothing() {
        super::plan_names_every_change_and_blocking_reason_and_writes_nothing(
            crate::cluster::Backend::Real,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
    async fn import_then_apply_adopts_with_one_reset_and_plan_is_clean() {
        super::import_then_apply_adopts_with_one_reset_and_plan_is_clean(
            crate::cluster::Backend::Real,
        )
        .await
    }
}
