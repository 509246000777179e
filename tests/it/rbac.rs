//! Each rule of the chart's RBAC is needed: the chart README's table names, for every rule, a
//! scenario and a request it makes (checked when that scenario ends, see `operator::Env`);
//! here, on the real API server with the chart installed, every rule bound to the operator's
//! ServiceAccount grants some row's request, exactly one rule grants each row's request, and
//! with that rule removed a SubjectAccessReview of the request is refused.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::cluster::{Backend, RELEASE, RELEASE_NAMESPACE, Request, rbac_table};
use crate::operator::Env;

/// A Role or ClusterRole bound to the operator's ServiceAccount, with where the binding applies.
struct Bound {
    /// Role namespace; None for a ClusterRole.
    role_namespace: Option<String>,
    name: String,
    /// Namespace the binding grants in; None: everywhere (ClusterRoleBinding).
    scope: Option<String>,
    rules: Vec<PolicyRule>,
}

impl Bound {
    fn grants(&self, rule: &PolicyRule, r: &Request) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == v || x == "*");
        let in_scope = match &self.scope {
            None => true,
            Some(ns) => r.namespace.as_deref() == Some(ns.as_str()),
        };
        in_scope
            && rule.resource_names.as_ref().is_none_or(Vec::is_empty)
            && has(&rule.verbs, &r.verb)
            && has(rule.api_groups.as_deref().unwrap_or_default(), &r.group)
            && has(
                rule.resources.as_deref().unwrap_or_default(),
                &r.rbac_resource(),
            )
    }

    async fn set_rules(&self, client: &Client, rules: Vec<PolicyRule>) {
        let patch = Patch::Merge(json!({ "rules": rules }));
        let pp = PatchParams::default();
        match &self.role_namespace {
            None => {
                Api::<ClusterRole>::all(client.clone())
                    .patch(&self.name, &pp, &patch)
                    .await
                    .expect("patch ClusterRole");
            }
            Some(ns) => {
                Api::<Role>::namespaced(client.clone(), ns)
                    .patch(&self.name, &pp, &patch)
                    .await
                    .expect("patch Role");
            }
        }
    }
}

fn is_operator(subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>) -> bool {
    subjects.into_iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == RELEASE
            && s.namespace.as_deref() == Some(RELEASE_NAMESPACE)
    })
}

/// The rules of the role a binding names: (the Role's namespace, None for a ClusterRole; rules).
async fn rules_of(
    client: &Client,
    role_ref: &k8s_openapi::api::rbac::v1::RoleRef,
    ns: Option<&str>,
) -> (Option<String>, Vec<PolicyRule>) {
    match ns.filter(|_| role_ref.kind == "Role") {
        Some(ns) => {
            let r = Api::<Role>::namespaced(client.clone(), ns)
                .get(&role_ref.name)
                .await
                .expect("bound Role");
            (Some(ns.to_string()), r.rules.unwrap_or_default())
        }
        None => {
            let r = Api::<ClusterRole>::all(client.clone())
                .get(&role_ref.name)
                .await
                .expect("bound ClusterRole");
            (None, r.rules.unwrap_or_default())
        }
    }
}

async fn bound_roles(client: &Client) -> Vec<Bound> {
    let crbs = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("clusterrolebindings");
    let rbs = Api::<RoleBinding>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("rolebindings");
    // (role ref, binding namespace: None = everywhere)
    let bindings = crbs
        .items
        .into_iter()
        .filter(|b| is_operator(b.subjects.as_ref()))
        .map(|b| (b.role_ref, None))
        .chain(
            rbs.items
                .into_iter()
                .filter(|b| is_operator(b.subjects.as_ref()))
                .map(|b| (b.role_ref, b.metadata.namespace)),
        );
    let mut out = vec![];
    for (role_ref, scope) in bindings {
        let (role_namespace, rules) = rules_of(client, &role_ref, scope.as_deref()).await;
        out.push(Bound {
            role_namespace,
            name: role_ref.name,
            scope,
            rules,
        });
    }
    out
}

/// Would RBAC let the operator's ServiceAccount make this request?
async fn allowed(client: &Client, r: &Request) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}"),
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{RELEASE_NAMESPACE}"), "system:authenticated"],
        "resourceAttributes": {
            "namespace": r.namespace.clone().unwrap_or_default(),
            "verb": r.verb, "group": r.group, "resource": r.resource,
            "subresource": r.subresource.clone().unwrap_or_default(),
        }
    }}))
    .expect("review");
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane and helm: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn real_only_every_chart_rule_is_needed() {
    let rows = rbac_table();
    assert!(rows.len() >= 12, "RBAC table rows: {rows:?}");
    for namespaced in [false, true] {
        let mut env = Env::start(Backend::Chart { namespaced }).await;
        // The operator would be refused while rules are removed; reviews need no operator.
        env.stop_operator().await;
        let admin = env.client.clone();
        let roles = bound_roles(&admin).await;
        assert!(!roles.is_empty(), "no Role bound to the ServiceAccount");
        if !namespaced {
            for role in &roles {
                for rule in &role.rules {
                    assert!(
                        rows.iter().any(|row| role.grants(rule, &row.request)),
                        "{}: rule {rule:?} has no row in the chart README's RBAC table",
                        role.name
                    );
                }
            }
        }
        for row in rows.iter().filter(|r| r.namespaced() == namespaced) {
            let granting: Vec<(usize, usize)> = roles
                .iter()
                .enumerate()
                .flat_map(|(ri, role)| {
                    role.rules
                        .iter()
                        .enumerate()
                        .filter(|(_, rule)| role.grants(rule, &row.request))
                        .map(move |(i, _)| (ri, i))
                })
                .collect();
            assert_eq!(
                granting.len(),
                1,
                "exactly one rule should grant `{}` ({})",
                row.request_text,
                row.rule
            );
            let (ri, i) = granting[0];
            let role = &roles[ri];
            assert!(
                allowed(&admin, &row.request).await,
                "`{}` refused with the chart's RBAC",
                row.request_text
            );
            let mut without = role.rules.clone();
            without.remove(i);
            role.set_rules(&admin, without).await;
            env.wait_for(
                &format!("`{}` refused without its rule", row.request_text),
                Duration::from_secs(20),
                || async { (!allowed(&admin, &row.request).await).then_some(()) },
            )
            .await;
            role.set_rules(&admin, role.rules.clone()).await;
            env.wait_for(
                &format!("`{}` allowed again", row.request_text),
                Duration::from_secs(20),
                || async { allowed(&admin, &row.request).await.then_some(()) },
            )
            .await;
        }
    }
}
