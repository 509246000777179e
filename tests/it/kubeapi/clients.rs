//! The local API as its clients use it: watches, faults, kube-runtime's controller and
//! finalizer, kubectl's tables, Leases and Events, the operator's start-up check.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use kube_local::{KubeApiServer, KubeFault, KubeFaultAction};
use runner_operator::crd::{self, Runner, RunnerStatus};
use serde_json::{Value, json};

use super::*;

#[tokio::test]
pub(crate) async fn watches_resume_bookmark_expire_and_time_out() {
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
pub(crate) async fn faults_are_injected_and_watches_dropped() {
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TestError(String);

pub(crate) async fn reconcile(
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
pub(crate) async fn kube_runtime_controller_with_finalizer_runs_against_it() {
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
pub(crate) async fn kubectl_tables_use_printer_columns() {
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
pub(crate) async fn leases_and_events_in_both_apis() {
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
pub(crate) async fn run_refuses_to_start_without_the_crds() {
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
