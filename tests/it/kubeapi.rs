//! The local Kubernetes API through kube-rs: discovery, verbs and their semantics, watches,
//! finalizers, the status subresource, garbage collection, validation, faults, and a
//! kube-runtime Controller running against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use kube_local::{KubeApiServer, KubeFault, KubeFaultAction};
use runner_operator::crd::{self, Runner, RunnerStatus};
use serde_json::{Value, json};

pub async fn server_with_crds() -> (KubeApiServer, Client) {
    let server = KubeApiServer::start_with("127.0.0.1:0", Duration::from_millis(300))
        .await
        .expect("server starts");
    let client = server.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in crd::all() {
        crds.create(&PostParams::default(), &c)
            .await
            .expect("CRD created");
    }
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "ci"}})).unwrap(),
    )
    .await
    .unwrap();
    (server, client)
}

pub fn runner(name: &str) -> Runner {
    serde_json::from_value(json!({
        "apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"connectionRef": {"name": "gitlab"}, "runnerType": "project_type", "project": "platform/api", "tags": ["linux"]}
    }))
    .expect("runner")
}

fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_serves_builtins_and_crds() {
    let (_server, client) = server_with_crds().await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Runner")
        .expect("Runner discovered");
    assert_eq!(ar.group, "gitlab.runner-operator.dev");
    assert_eq!(ar.plural, "runners");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    for kind in [
        "Secret",
        "ConfigMap",
        "Lease",
        "Event",
        "Namespace",
        "CustomResourceDefinition",
        "Deployment",
    ] {
        assert!(
            discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .any(|(ar, _)| ar.kind == kind),
            "{kind}"
        );
    }
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let raw: Value = client
        .request(
            http::Request::get("/apis/gitlab.runner-operator.dev/v1alpha1")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    let runners = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "runners")
        .unwrap()
        .clone();
    assert_eq!(runners["shortNames"], json!(["glrunner", "glrunners"]));
    assert_eq!(runners["categories"], json!(["gitlab"]));
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("runners.gitlab.runner-operator.dev")
        .await
        .unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
}

#[tokio::test]
async fn create_get_list_with_selectors_and_metadata() {
    let (_server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ci");
    let a: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}}, "data": {"k": "v"}})).unwrap();
    let created = cms.create(&PostParams::default(), &a).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.resource_version.is_some());
    let gen_named: ConfigMap = serde_json::from_value(
        json!({"metadata": {"generateName": "cfg-", "labels": {"app": "api"}}}),
    )
    .unwrap();
    let g = cms
        .create(&PostParams::default(), &gen_named)
        .await
        .unwrap();
    assert!(g.name_any().starts_with("cfg-") && g.name_any().len() > 4);
    let e = cms.create(&PostParams::default(), &a).await.unwrap_err();
    assert_eq!(status_code(&e), 409);
    let list = cms
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    assert_eq!(
        cms.list(&ListParams::default().labels("app in (web,api)"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        cms.list(&ListParams::default().labels("tier"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        cms.list(&ListParams::default().fields("metadata.name=a"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let e = Api::<ConfigMap>::namespaced(client, "missing")
        .create(&PostParams::default(), &a)
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), 404);
    let e = cms.get("nope").await.unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
}

#[tokio::test]
async fn optimistic_concurrency_generation_and_status_split() {
    let (_server, client) = server_with_crds().await;
    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");
    let r = runners
        .create(&PostParams::default(), &runner("r1"))
        .await
        .unwrap();
    assert_eq!(r.metadata.generation, Some(1));
    let mut stale = r.clone();
    let mut fresh = r.clone();
    fresh.spec.description = Some("one".into());
    let fresh = runners
        .replace("r1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(fresh.metadata.generation, Some(2));
    stale.spec.description = Some("two".into());
    assert_eq!(
        status_code(
            &runners
                .replace("r1", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    // Labels do not move generation.
    let labelled = runners
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    // Status through the main resource is ignored; through /status it lands without a generation bump.
    let ignored = runners
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"runnerId": 5}})),
        )
        .await
        .unwrap();
    assert!(ignored.status.is_none());
    let st = runners
        .patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"runnerId": 5}, "spec": {"description": "sneaky"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().and_then(|s| s.runner_id), Some(5));
    assert_eq!(
        st.spec.description.as_deref(),
        Some("one"),
        "spec changes through /status are ignored"
    );
    assert_eq!(st.metadata.generation, Some(2));
    // A no-op write keeps the resourceVersion.
    let again = runners
        .patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"runnerId": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        st.metadata.resource_version
    );
}

#[tokio::test]
async fn json_patch_test_ops_merge_and_strategic() {
    let (_server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "ci");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    let ok = json_patch::Patch(serde_json::from_value(json!([{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "2"}])).unwrap());
    let p = cms
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ok))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["a"], "2");
    let failing = json_patch::Patch(serde_json::from_value(json!([{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "3"}])).unwrap());
    assert_eq!(
        status_code(
            &cms.patch("p", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
                .unwrap_err()
        ),
        422
    );
    let s = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"b": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data.unwrap().len(), 2);
    let m = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null}})),
        )
        .await
        .unwrap();
    assert_eq!(m.data.unwrap().keys().collect::<Vec<_>>(), vec!["b"]);
}

#[tokio::test]
async fn server_side_apply_managers_and_conflicts() {
    let (server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "ci");
    let cfg = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"owned": v}});
    let created = cms
        .patch("ssa", &PatchParams::apply("alpha"), &Patch::Apply(cfg("a")))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["owned"], "a");
    let e = cms
        .patch("ssa", &PatchParams::apply("beta"), &Patch::Apply(cfg("b")))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(s.code, 409);
    assert!(
        s.message.contains("conflict with \"alpha\""),
        "{}",
        s.message
    );
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(cfg("b")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["owned"], "b");
    let managers = server.field_managers(forced.metadata.uid.as_deref().unwrap());
    assert!(managers["beta"].contains(".data.owned"));
    assert!(
        !managers
            .get("alpha")
            .is_some_and(|p| p.contains(".data.owned"))
    );
    // Fields a manager stops applying are removed.
    cms.patch("ssa", &PatchParams::apply("beta"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"other": "x"}}))).await.unwrap();
    let now = cms.get("ssa").await.unwrap();
    assert_eq!(now.data.unwrap().keys().collect::<Vec<_>>(), vec!["other"]);
}

#[tokio::test]
async fn finalizers_delay_deletion_and_gc_follows_owners() {
    let (_server, client) = server_with_crds().await;
    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");
    let mut r = runner("fin");
    r.metadata.finalizers = Some(vec!["gitlab.runner-operator.dev/cleanup".into()]);
    let r = runners.create(&PostParams::default(), &r).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ci");
    let owner = OwnerReference {
        api_version: "gitlab.runner-operator.dev/v1alpha1".into(),
        kind: "Runner".into(),
        name: "fin".into(),
        uid: r.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "fin-token"}, "stringData": {"runner-token": "x"}}),
    )
    .unwrap();
    s.metadata.owner_references = Some(vec![owner]);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    runners
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = runners.get("fin").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(
        secrets.get("fin-token").await.is_ok(),
        "dependents live while the owner is finalizing"
    );
    runners
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(status_code(&runners.get("fin").await.unwrap_err()), 404);
    assert_eq!(
        status_code(&secrets.get("fin-token").await.unwrap_err()),
        404,
        "garbage-collected with its owner"
    );
}

#[tokio::test]
async fn custom_resources_are_validated_defaulted_and_pruned() {
    let (_server, client) = server_with_crds().await;
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client, "ci", &kube::api::ApiResource::erase::<Runner>(&()));
    let bad: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "bad"},
        "spec": {"connectionRef": {"name": "g"}, "runnerType": "project_type", "project": "p", "maximumTimeout": 10}
    }))
    .unwrap();
    let e = api.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("spec.maximumTimeout"), "{}", s.message);
    let cel: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "cel"},
        "spec": {"connectionRef": {"name": "g"}, "runnerType": "group_type", "project": "p"}
    }))
    .unwrap();
    let e = api.create(&PostParams::default(), &cel).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("group is required when runnerType is group_type"),
        "{e}"
    );
    let extra: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "extra"},
        "spec": {"connectionRef": {"name": "g"}, "runnerType": "instance_type", "unknown": 1}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &extra).await.unwrap();
    assert!(created.data["spec"].get("unknown").is_none(), "pruned");
    assert_eq!(
        created.data["spec"]["connectionRef"]["kind"], "GitLabConnection",
        "defaulted"
    );
    let mut extra2 = extra.clone();
    extra2.metadata.name = Some("extra2".into());
    let strict = PatchParams::apply("kubectl").validation_strict();
    let e = api
        .patch("extra2", &strict, &Patch::Apply(&extra2))
        .await
        .unwrap_err();
    // Server-side apply builds a typed patch first and refuses undeclared fields in its own
    // words, as kube-apiserver does (admission::real_api_refuses_what_the_readme_promises).
    assert!(
        e.to_string()
            .contains(".spec.unknown: field not declared in schema"),
        "{e}"
    );
    // Transition rules: runnerType is immutable.
    let e = api
        .patch(
            "extra",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runnerType": "group_type", "group": "g"}})),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("runnerType is immutable"), "{e}");
}

#[tokio::test]
async fn watches_resume_bookmark_expire_and_time_out() {
    let (server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ci");
    let first = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "w1"}})).unwrap(),
        )
        .await
        .unwrap();
    let from = first.resource_version().unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "w2"}})).unwrap(),
    )
    .await
    .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    // Resume from a version: only later events, in order.
    let wp = WatchParams::default().timeout(2);
    let mut stream = cms.watch(&wp, &from).await.unwrap().boxed();
    let mut seen = vec![];
    let mut bookmark = false;
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Bookmark(_) => bookmark = true,
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED w2", "DELETED w1"]);
    assert!(bookmark, "bookmarks were sent");
    // History compacted: 410 Gone as an ERROR event.
    server.compact();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &from)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn faults_are_injected_and_watches_dropped() {
    let (server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ci");
    let http = reqwest::Client::new();
    for code in [500, 409, 429] {
        server.inject(KubeFault {
            method: Some("GET".into()),
            path_contains: "/configmaps".into(),
            times: 1,
            action: KubeFaultAction::Status {
                code,
                message: None,
            },
        });
        let resp = http
            .get(format!("{}/api/v1/namespaces/ci/configmaps", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (body["kind"].clone(), body["code"].clone()),
            (json!("Status"), json!(code))
        );
    }
    // Through kube: a 409 surfaces as such (kube retries 429/5xx by itself).
    server.inject(KubeFault {
        method: Some("GET".into()),
        path_contains: "/configmaps".into(),
        times: 1,
        action: KubeFaultAction::Status {
            code: 409,
            message: None,
        },
    });
    assert_eq!(
        status_code(&cms.list(&ListParams::default()).await.unwrap_err()),
        409
    );
    server.inject(KubeFault {
        method: Some("GET".into()),
        path_contains: "/configmaps".into(),
        times: 1,
        action: KubeFaultAction::Status {
            code: 503,
            message: None,
        },
    });
    assert!(cms.list(&ListParams::default()).await.is_ok());
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    server.drop_watches();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.try_next().await.unwrap_or(None).is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "dropped watch streams end");
}

#[derive(Clone)]
struct Ctx {
    client: Client,
    cleanups: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

async fn reconcile(
    r: Arc<Runner>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<TestError>> {
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), &r.namespace().unwrap());
    finalizer(&api, "gitlab.runner-operator.dev/test", r, |event| async {
        match event {
            Finalizer::Apply(r) => {
                let status = RunnerStatus { observed_generation: r.meta().generation, runner_id: Some(42), ..Default::default() };
                let patch = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "status": status});
                api.patch_status(&r.name_any(), &PatchParams::apply("test-controller").force(), &Patch::Apply(patch)).await.map_err(|e| TestError(e.to_string()))?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

#[tokio::test]
async fn kube_runtime_controller_with_finalizer_runs_against_it() {
    let (_server, client) = server_with_crds().await;
    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleanups: Arc::new(AtomicUsize::new(0)),
    });
    let controller = Controller::new(Api::<Runner>::all(client.clone()), Default::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(200)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    runners
        .create(&PostParams::default(), &runner("ctl"))
        .await
        .unwrap();
    let reconciled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = runners.get("ctl").await.unwrap();
            if r.status.as_ref().and_then(|s| s.runner_id) == Some(42)
                && r.finalizers()
                    .contains(&"gitlab.runner-operator.dev/test".to_string())
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the controller added its finalizer and wrote status");
    assert_eq!(reconciled.status.unwrap().observed_generation, Some(1));
    runners
        .delete("ctl", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while runners.get_opt("ctl").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("cleanup ran and the finalizer was removed");
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    handle.abort();
}

#[tokio::test]
async fn kubectl_tables_use_printer_columns() {
    let (server, client) = server_with_crds().await;
    let runners: Api<Runner> = Api::namespaced(client, "ci");
    runners
        .create(&PostParams::default(), &runner("tbl"))
        .await
        .unwrap();
    runners.patch_status("tbl", &PatchParams::default(), &Patch::Merge(json!({"status": {"runnerId": 9, "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))).await.unwrap();
    let table: Value = reqwest::Client::new()
        .get(format!(
            "{}/apis/gitlab.runner-operator.dev/v1alpha1/namespaces/ci/runners",
            server.url()
        ))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
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
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        (
            cells[0].clone(),
            cells[1].clone(),
            cells[2].clone(),
            cells[7].clone()
        ),
        (json!("tbl"), json!("project_type"), json!(9), json!("True"))
    );
}

#[tokio::test]
async fn leases_and_events_in_both_apis() {
    let (_server, client) = server_with_crds().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "ci");
    let lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({"metadata": {"name": "runner-operator"}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let got = leases.patch("runner-operator", &PatchParams::apply("pod-b").force(), &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "pod-b"}}))).await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("pod-b"));
    // An events.k8s.io Event (what kube's Recorder writes) shows up as a core Event too.
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "test".into(),
            instance: None,
        },
    );
    let runners: Api<Runner> = Api::namespaced(client.clone(), "ci");
    let r = runners
        .create(&PostParams::default(), &runner("evented"))
        .await
        .unwrap();
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &r.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &r.object_ref(&())).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "ci");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=evented"))
        .await
        .unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "a repeat is a series, not a second event"
    );
    assert_eq!(
        (
            list.items[0].reason.as_deref(),
            list.items[0].message.as_deref()
        ),
        (Some("Tested"), Some("hello"))
    );
}

#[tokio::test]
async fn run_refuses_to_start_without_the_crds() {
    let server = KubeApiServer::start().await.unwrap();
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

/// A manager that stops applying a struct loses it whole, as on the real API server: no empty
/// map is left behind (a Rust type would fail to decode it).
#[tokio::test]
async fn server_side_apply_removes_a_struct_no_longer_applied() {
    let (_server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "ci");
    let with = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gone", "annotations": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
    cms.patch("gone", &PatchParams::apply("m"), &Patch::Apply(with))
        .await
        .unwrap();
    let without = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gone"}, "data": {"k": "v"}});
    let after = cms
        .patch("gone", &PatchParams::apply("m"), &Patch::Apply(without))
        .await
        .unwrap();
    assert_eq!(after.metadata.annotations, None, "{:?}", after.metadata);
}
