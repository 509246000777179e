//! The generated CRDs: fresh in `crds/`, examples valid, every CEL rule proven both ways.

use kube::CustomResourceExt;
use kube_local::schema as openapi;
use runner_operator::crd::{self, ClusterGitLabConnection, GitLabConnection, Runner};
use serde_json::{Value, json};

fn schema_of(kind: &str) -> Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("known kind");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

#[test]
fn committed_crds_are_fresh() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for c in crd::all() {
        let path = dir.join(crd::file_name(&c));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = crd::to_yaml(&c).expect("yaml");
        assert!(
            committed == generated,
            "{} is stale: run `cargo run -- crd --output-dir crds` and commit",
            path.display()
        );
    }
}

#[test]
fn crd_shape() {
    let r = Runner::crd();
    assert_eq!(
        r.spec.names.short_names.as_deref(),
        Some(&["glrunner".to_string(), "glrunners".to_string()][..])
    );
    assert_eq!(
        r.spec.names.categories.as_deref(),
        Some(&["gitlab".to_string()][..])
    );
    let v = &r.spec.versions[0];
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "Type",
            "Runner ID",
            "GitLab",
            "Managers",
            "Version",
            "Paused",
            "Ready",
            "Token Expiry",
            "Age"
        ]
    );
    let schema = schema_of("Runner");
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(ClusterGitLabConnection::crd().spec.scope, "Cluster");
    assert_eq!(GitLabConnection::crd().spec.scope, "Namespaced");
}

pub fn example_docs() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut out = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("readable");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), d));
        }
    }
    out
}

#[test]
fn every_example_is_valid() {
    let docs = example_docs();
    let kinds: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for k in [
        "Runner",
        "GitLabConnection",
        "ClusterGitLabConnection",
        "Secret",
    ] {
        assert!(kinds.contains(&k), "examples lack a {k}");
    }
    let runner_types: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["spec"]["runnerType"].as_str())
        .collect();
    for t in ["project_type", "group_type", "instance_type"] {
        assert!(runner_types.contains(&t), "examples lack a {t} runner");
    }
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if doc["apiVersion"] != "gitlab.runner-operator.dev/v1alpha1" {
            continue;
        }
        let errors = openapi::validate(&schema_of(kind), doc, None);
        assert!(errors.is_empty(), "{file} {kind}: {errors:?}");
        let typed = match kind {
            "Runner" => serde_json::from_value::<Runner>(doc.clone()).map(|_| ()),
            "GitLabConnection" => {
                serde_json::from_value::<GitLabConnection>(doc.clone()).map(|_| ())
            }
            _ => serde_json::from_value::<ClusterGitLabConnection>(doc.clone()).map(|_| ()),
        };
        typed.unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

fn runner(spec: Value) -> Value {
    json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": "ci"}, "spec": spec})
}

fn base() -> Value {
    json!({"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["linux"]})
}

fn with(patch: Value) -> Value {
    let mut spec = base();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    runner(spec)
}

#[test]
fn runner_rules_accept_and_refuse() {
    let schema = schema_of("Runner");
    let ok = [
        with(json!({})),
        with(json!({"assignedProjects": ["platform/web", "12"]})),
        with(json!({"runUntagged": false})),
        with(
            json!({"maximumTimeout": 600, "description": "x".repeat(1024), "maintenanceNote": "n"}),
        ),
        with(json!({"runnerType": "group_type", "project": null, "group": "platform"})),
        with(json!({"runnerType": "instance_type", "project": null})),
        with(
            json!({"registration": {"strategy": "RegistrationToken", "registrationTokenSecretRef": {"name": "reg"}}}),
        ),
        with(json!({"tokenRotation": {"interval": "720h", "beforeExpiry": "1h30m"}})),
        with(json!({"tokenRotation": {"interval": "10m"}})),
        with(json!({"tokenRotation": {"interval": "30d"}})),
        with(
            json!({"tokenSecret": {"name": "a.b-c", "labels": {"app.kubernetes.io/part-of": "ci", "team": ""}, "annotations": {"example.com/owner": "any text at all"}}}),
        ),
        with(json!({"tags": (0..50).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
    ];
    for obj in ok {
        let errors = openapi::validate(&schema, &obj, None);
        assert!(errors.is_empty(), "{}: {errors:?}", obj["spec"]);
    }
    let bad = bad_runners();
    for (obj, want) in bad {
        let errors = openapi::validate(&schema, &obj, None);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{} should fail with {want:?}, got {errors:?}",
            obj["spec"]
        );
    }
}

#[test]
fn immutable_fields_refuse_changes_and_allow_the_rest() {
    let schema = schema_of("Runner");
    let old = with(json!({}));
    let changes = [
        (
            with(json!({"runnerType": "group_type", "project": null, "group": "platform"})),
            "runnerType is immutable",
        ),
        (
            with(json!({"project": "platform/web"})),
            "project is immutable",
        ),
    ];
    for (new, want) in changes {
        let errors = openapi::validate(&schema, &new, Some(&old));
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want}: {errors:?}"
        );
    }
    let gold = with(json!({"runnerType": "group_type", "project": null, "group": "platform"}));
    let gnew = with(json!({"runnerType": "group_type", "project": null, "group": "other"}));
    assert!(
        openapi::validate(&schema, &gnew, Some(&gold))
            .iter()
            .any(|e| e.contains("group is immutable"))
    );
    let allowed = with(json!({"description": "changed", "tags": ["new"], "paused": true}));
    assert_eq!(
        openapi::validate(&schema, &allowed, Some(&old)),
        Vec::<String>::new()
    );
}

#[test]
fn connection_url_rules() {
    let schema = schema_of("GitLabConnection");
    let conn = |spec: Value| json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection", "metadata": {"name": "g"}, "spec": spec});
    let ok = [
        conn(json!({"url": "https://gitlab.example.com", "tokenSecretRef": {"name": "t"}})),
        conn(
            json!({"url": "http://127.0.0.1:8929", "allowInsecureHTTP": true, "tokenSecretRef": {"name": "t"}}),
        ),
    ];
    for o in ok {
        assert_eq!(openapi::validate(&schema, &o, None), Vec::<String>::new());
    }
    let bad = [
        conn(json!({"url": "http://gitlab.example.com", "tokenSecretRef": {"name": "t"}})),
        conn(
            json!({"url": "http://gitlab.example.com", "allowInsecureHTTP": false, "tokenSecretRef": {"name": "t"}}),
        ),
        conn(
            json!({"url": "ftp://gitlab.example.com", "allowInsecureHTTP": true, "tokenSecretRef": {"name": "t"}}),
        ),
    ];
    for o in bad {
        let errors = openapi::validate(&schema, &o, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("url must start with https://")),
            "{errors:?}"
        );
    }
    let cluster = schema_of("ClusterGitLabConnection");
    let c = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "ClusterGitLabConnection", "metadata": {"name": "g"},
                   "spec": {"url": "http://x.example", "tokenSecretRef": {"name": "t", "namespace": "ops"}}});
    assert!(
        openapi::validate(&cluster, &c, None)
            .iter()
            .any(|e| e.contains("url must start with https://"))
    );
}

/// Runners the API server must refuse, with what its message must contain. One table for the
/// schema validator, the in-memory API and the real API server.
pub fn bad_runners() -> Vec<(Value, &'static str)> {
    vec![
        (
            with(json!({"runnerType": "shared"})),
            "spec.runnerType: Unsupported value",
        ),
        (
            with(json!({"accessLevel": "protected"})),
            "spec.accessLevel: Unsupported value",
        ),
        (
            with(json!({"deletionPolicy": "Keep"})),
            "spec.deletionPolicy: Unsupported value",
        ),
        (
            with(json!({"registration": {"strategy": "Token"}})),
            "spec.registration.strategy: Unsupported value",
        ),
        (with(json!({"maximumTimeout": 599})), "spec.maximumTimeout"),
        (
            with(json!({"description": "x".repeat(1025)})),
            "spec.description: Too long",
        ),
        (
            with(json!({"maintenanceNote": "x".repeat(1025)})),
            "spec.maintenanceNote: Too long",
        ),
        (
            with(json!({"tags": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
            "spec.tags: Too many",
        ),
        (with(json!({"tags": ["a", "a"]})), "Duplicate value"),
        (
            with(json!({"tags": ["x".repeat(256)]})),
            "spec.tags[0]: Too long",
        ),
        (
            with(
                json!({"assignedProjects": (0..201).map(|i| format!("p{i}")).collect::<Vec<_>>()}),
            ),
            "spec.assignedProjects: Too many",
        ),
        (with(json!({"tags": ["a,b"]})), "no commas"),
        (with(json!({"tags": [""]})), "no commas"),
        (with(json!({"tags": [" padded"]})), "no commas"),
        (
            with(
                json!({"maintenanceNote": "[runner-operator: managed by Runner x/y, uid z, cluster prod]"}),
            ),
            "must not contain an ownership marker",
        ),
        (
            with(json!({"tags": null, "runUntagged": false})),
            "runUntagged: false needs at least one tag",
        ),
        (
            with(json!({"project": null})),
            "project is required when runnerType is project_type",
        ),
        (
            with(json!({"runnerType": "group_type", "project": null})),
            "group is required when runnerType is group_type",
        ),
        (
            with(json!({"group": "platform"})),
            "group is required when runnerType is group_type, and not allowed",
        ),
        (
            with(
                json!({"runnerType": "instance_type", "project": null, "assignedProjects": ["a"]}),
            ),
            "assignedProjects is only allowed when runnerType is project_type",
        ),
        (
            with(json!({"registration": {"strategy": "RegistrationToken"}})),
            "needs registrationTokenSecretRef",
        ),
        (
            with(json!({"tokenRotation": {"interval": "30 days"}})),
            "spec.tokenRotation.interval",
        ),
        (
            with(json!({"tokenRotation": {"interval": "0s"}})),
            "tokenRotation.interval must be at least 10m",
        ),
        (
            with(json!({"tokenRotation": {"interval": "1ms"}})),
            "tokenRotation.interval must be at least 10m",
        ),
        (
            with(json!({"tokenRotation": {"interval": "9m59s"}})),
            "tokenRotation.interval must be at least 10m",
        ),
        (
            with(json!({"tokenSecret": {"name": "Bad_Name."}})),
            "spec.tokenSecret.name",
        ),
        (
            with(json!({"tokenSecret": {"labels": {"bad key": "v"}}})),
            "tokenSecret.labels keys must be label keys",
        ),
        (
            with(json!({"tokenSecret": {"labels": {"team": "not a label value"}}})),
            "spec.tokenSecret.labels.team",
        ),
        (
            with(json!({"tokenSecret": {"labels": {"team": "x".repeat(64)}}})),
            "spec.tokenSecret.labels.team",
        ),
        (
            with(json!({"tokenSecret": {"annotations": {"/bad": "v"}}})),
            "tokenSecret.annotations keys must be annotation keys",
        ),
        (
            with(json!({"adopt": {"runnerId": 0}})),
            "spec.adopt.runnerId",
        ),
        (
            with(json!({"connectionRef": {"name": "g", "kind": "Other"}})),
            "spec.connectionRef.kind: Unsupported value",
        ),
        (with(json!({"unknownField": 1})), "unknown field"),
        (
            with(json!({"connectionRef": null})),
            "spec.connectionRef: Required value",
        ),
    ]
}

/// `kubectl explain` shows every field of ours with a whole sentence (Kubernetes' own types —
/// conditions, label selectors — keep their upstream wording), and every printer column says
/// what it shows.
#[test]
fn every_field_and_column_is_described_in_a_sentence() {
    fn walk(node: &Value, path: &str, bad: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if ["conditions", "selector", "metadata", "apiVersion", "kind"]
                    .contains(&k.as_str())
                {
                    continue;
                }
                match v.get("description").and_then(Value::as_str).map(str::trim) {
                    None | Some("") => bad.push(format!("{p}: no description")),
                    Some(d) => {
                        let first = d.chars().next().unwrap_or(' ');
                        if !(first.is_uppercase() || first == '`') || !d.ends_with('.') {
                            bad.push(format!("{p}: {d:?}"));
                        }
                    }
                }
                walk(v, &p, bad);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), bad);
        }
    }
    let mut bad = vec![];
    for c in crd::all() {
        walk(&schema_of(&c.spec.names.kind), &c.spec.names.kind, &mut bad);
        for col in c.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
        {
            if col.name != "Age" && !col.description.as_deref().is_some_and(|d| d.ends_with('.')) {
                bad.push(format!(
                    "{} column {}: {:?}",
                    c.spec.names.kind, col.name, col.description
                ));
            }
        }
    }
    assert!(bad.is_empty(), "not a sentence:\n{}", bad.join("\n"));
}

#[tokio::test]
async fn run_refuses_to_start_without_the_crds() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let server = kube_local::KubeApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let err = runner_operator::kube_client::check_crds_installed(&client)
        .await
        .unwrap_err();
    assert!(
        err.contains("not installed") && err.contains("kubectl apply --server-side"),
        "{err}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in crd::all() {
        crds.create(&PostParams::default(), &c).await.unwrap();
    }
    runner_operator::kube_client::check_crds_installed(&client)
        .await
        .unwrap();
}
