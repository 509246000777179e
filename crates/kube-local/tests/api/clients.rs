//! The local API as its clients use it: watches, faults, kube-runtime's controller and
//! finalizer, kubectl's tables, Leases and Events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use kube_local::{KubeFault, KubeFaultAction};
use serde_json::{Value, json};

use super::*;

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
pub(crate) struct Ctx {
    client: Client,
    cleanups: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub(crate) struct TestError(String);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestError {}

async fn reconcile(
    r: Arc<DynamicObject>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<TestError>> {
    let api = widget_api(&ctx.client);
    finalizer(&api, "example.dev/test", r, |event| async {
        match event {
            Finalizer::Apply(r) => {
                let status = json!({"observedGeneration": r.meta().generation, "widgetId": 42});
                let patch =
                    json!({"apiVersion": "example.dev/v1", "kind": "Widget", "status": status});
                api.patch_status(
                    &r.name_any(),
                    &PatchParams::apply("test-controller").force(),
                    &Patch::Apply(patch),
                )
                .await
                .map_err(|e| TestError(e.to_string()))?;
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
    let runners = widget_api(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleanups: Arc::new(AtomicUsize::new(0)),
    });
    let all = Api::<DynamicObject>::all_with(client.clone(), &widgets());
    let controller = Controller::new_with(all, Default::default(), widgets())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(200)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    runners
        .create(&PostParams::default(), &widget("ctl"))
        .await
        .unwrap();
    let reconciled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = runners.get("ctl").await.unwrap();
            if r.data["status"]["widgetId"] == 42
                && r.finalizers().contains(&"example.dev/test".to_string())
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the controller added its finalizer and wrote status");
    assert_eq!(reconciled.data["status"]["observedGeneration"], 1);
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
    let runners = widget_api(&client);
    runners
        .create(&PostParams::default(), &widget("tbl"))
        .await
        .unwrap();
    runners.patch_status("tbl", &PatchParams::default(), &Patch::Merge(json!({"status": {"widgetId": 9, "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))).await.unwrap();
    let table: Value = reqwest::Client::new()
        .get(format!(
            "{}/apis/example.dev/v1/namespaces/ci/widgets",
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
    assert_eq!(names, ["Name", "Type", "Widget ID", "Ready", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        (
            cells[0].clone(),
            cells[1].clone(),
            cells[2].clone(),
            cells[3].clone()
        ),
        (json!("tbl"), json!("project"), json!(9), json!("True"))
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
    let runners = widget_api(&client);
    let r = runners
        .create(&PostParams::default(), &widget("evented"))
        .await
        .unwrap();
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder
        .publish(&ev, &r.object_ref(&widgets()))
        .await
        .unwrap();
    recorder
        .publish(&ev, &r.object_ref(&widgets()))
        .await
        .unwrap();
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
async fn lists_page_by_limit_and_continue_and_watches_stream_initial_events_in_pages() {
    let (server, client) = server_with_crds().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ci");
    let cm = |name: String| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(format!("cm-{i}")))
            .await
            .unwrap();
    }
    let names = |l: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.iter().map(|c| c.name_any()).collect()
    };
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first), ["cm-0", "cm-1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rv = first.metadata.resource_version.clone();
    // Changes between pages: a later page shows the current state at the first page's version.
    cms.delete("cm-2", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("cm-9".into()))
        .await
        .unwrap();
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["cm-3", "cm-4"]);
    assert_eq!(second.metadata.resource_version, rv);
    let last = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&last), ["cm-9"]);
    assert_eq!(last.metadata.continue_, None);
    // A selector still pages, without a count of what is left.
    let selected = cms
        .list(&ListParams::default().limit(1).fields("metadata.name!=cm-0"))
        .await
        .unwrap();
    assert_eq!(names(&selected), ["cm-1"]);
    assert!(selected.metadata.continue_.is_some());
    assert_eq!(selected.metadata.remaining_item_count, None);
    // As on the real server: a token older than the compacted history is 410 Expired.
    server.compact();
    let e = cms
        .list(&ListParams::default().continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), 410);
    // kube-runtime's paged list sees everything.
    let all: Vec<ConfigMap> = kube::runtime::watcher(
        cms.clone(),
        kube::runtime::watcher::Config::default().page_size(2),
    )
    .take_while(|e| {
        futures::future::ready(!matches!(e, Ok(kube::runtime::watcher::Event::InitDone)))
    })
    .try_filter_map(|e| async move {
        Ok(match e {
            kube::runtime::watcher::Event::InitApply(c) => Some(c),
            _ => None,
        })
    })
    .try_collect()
    .await
    .unwrap();
    assert_eq!(all.len(), 5);
    // A streaming list: more objects than one page of initial events, all of them before the
    // bookmark that ends them, which carries the version they were read at.
    futures::stream::iter(10..1_010)
        .map(|i| {
            let (cms, obj) = (cms.clone(), cm(format!("cm-{i}")));
            async move { cms.create(&PostParams::default(), &obj).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let listed_rv = cms
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version;
    let mut stream = cms
        .watch(&WatchParams::streaming_lists().timeout(5), "")
        .await
        .unwrap()
        .boxed();
    let mut added = std::collections::BTreeSet::new();
    loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(c)) => assert!(added.insert(c.name_any())),
            Some(WatchEvent::Bookmark(b)) => {
                assert_eq!(
                    b.metadata.annotations.get("k8s.io/initial-events-end"),
                    Some(&"true".to_string())
                );
                assert_eq!(Some(b.metadata.resource_version), listed_rv);
                break;
            }
            other => panic!("expected initial events, got {other:?}"),
        }
    }
    assert_eq!(added.len(), 1_005);
}
