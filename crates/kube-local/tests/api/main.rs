//! The local Kubernetes API through kube-rs: discovery, verbs and their semantics, watches,
//! finalizers, the status subresource, garbage collection, validation, faults, and a
//! kube-runtime Controller running against it — on a fixture resource of its own
//! (`widget-crd.yaml`), so these tests know nothing of the operator.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt};
use kube_local::KubeApiServer;
use serde_json::{Value, json};

mod clients;

pub async fn server_with_crds() -> (KubeApiServer, Client) {
    let server = KubeApiServer::start_with("127.0.0.1:0", Duration::from_millis(300))
        .await
        .expect("server starts");
    let client = server.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(include_str!("widget-crd.yaml")).expect("the fixture CRD");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "ci"}})).unwrap(),
    )
    .await
    .unwrap();
    (server, client)
}

/// The fixture resource's API type.
pub fn widgets() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.dev", "v1", "Widget"),
        "widgets",
    )
}

pub fn widget_api(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "ci", &widgets())
}

pub fn widget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"type": "project", "ownerRef": {"name": "platform"}, "size": 3}
    }))
    .expect("widget")
}

pub fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_serves_builtins_and_crds() {
    let (server, client) = server_with_crds().await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget discovered");
    assert_eq!(ar.group, "example.dev");
    assert_eq!(ar.plural, "widgets");
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
    let raw: Value = reqwest::get(format!("{}/apis/example.dev/v1", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let widgets = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "widgets")
        .unwrap()
        .clone();
    assert_eq!(widgets["shortNames"], json!(["wd", "wds"]));
    assert_eq!(widgets["categories"], json!(["examples"]));
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("widgets.example.dev")
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
    let widgets = widget_api(&client);
    let r = widgets
        .create(&PostParams::default(), &widget("r1"))
        .await
        .unwrap();
    assert_eq!(r.metadata.generation, Some(1));
    let mut stale = r.clone();
    let mut fresh = r.clone();
    fresh.data["spec"]["description"] = json!("one");
    let fresh = widgets
        .replace("r1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(fresh.metadata.generation, Some(2));
    stale.data["spec"]["description"] = json!("two");
    assert_eq!(
        status_code(
            &widgets
                .replace("r1", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    // Labels do not move generation.
    let labelled = widgets
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    // Status through the main resource is ignored; through /status it lands without a generation bump.
    let ignored = widgets
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"widgetId": 5}})),
        )
        .await
        .unwrap();
    assert!(ignored.data.get("status").is_none_or(Value::is_null));
    let st = widgets
        .patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"widgetId": 5}, "spec": {"description": "sneaky"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["widgetId"], 5);
    assert_eq!(
        st.data["spec"]["description"], "one",
        "spec changes through /status are ignored"
    );
    assert_eq!(st.metadata.generation, Some(2));
    // A no-op write keeps the resourceVersion.
    let again = widgets
        .patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"widgetId": 5}})),
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
    let runners = widget_api(&client);
    let mut r = widget("fin");
    r.metadata.finalizers = Some(vec!["example.dev/cleanup".into()]);
    let r = runners.create(&PostParams::default(), &r).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ci");
    let owner = OwnerReference {
        api_version: "example.dev/v1".into(),
        kind: "Widget".into(),
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
    let api = widget_api(&client);
    let obj = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    };
    let bad = obj(
        "bad",
        json!({"type": "project", "ownerRef": {"name": "o"}, "size": 1000}),
    );
    let e = api.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("spec.size"), "{}", s.message);
    let enum_bad = obj("enum", json!({"type": "gadget", "ownerRef": {"name": "o"}}));
    let e = api
        .create(&PostParams::default(), &enum_bad)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.type"), "{e}");
    let cel = obj("cel", json!({"type": "group", "ownerRef": {"name": "o"}}));
    let e = api.create(&PostParams::default(), &cel).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("group is required when type is group"),
        "{e}"
    );
    let extra = obj(
        "extra",
        json!({"type": "instance", "ownerRef": {"name": "o"}, "unknown": 1}),
    );
    let created = api.create(&PostParams::default(), &extra).await.unwrap();
    assert!(created.data["spec"].get("unknown").is_none(), "pruned");
    assert_eq!(
        created.data["spec"]["ownerRef"]["kind"], "Team",
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
    // words, as kube-apiserver does.
    assert!(
        e.to_string()
            .contains(".spec.unknown: field not declared in schema"),
        "{e}"
    );
    // Transition rules: type is immutable.
    let e = api
        .patch(
            "extra",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "group", "group": "g"}})),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("type is immutable"), "{e}");
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
