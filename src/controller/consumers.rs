//! Rolling the workloads that mount the token Secret after each new token, and spotting
//! runners that would rotate the token behind our back.

use crate::controller::reasons::Reason;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::error::Error;
use super::secret::ANN_TOKEN_GENERATION;
use crate::crd::{ConsumerKind, Runner};

pub const CONSUMERS_READY: &str = "ConsumersReady";
pub const ROTATION_CONFLICT: &str = "TokenRotationConflict";
const FLAG: &str = "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION";

/// A side condition to report.
#[derive(Debug, Clone)]
pub struct Warning {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// True when some container of the template sets the flag to true (env or `--feature-flags`
/// style config is not inspected).
pub fn disables_self_rotation(template: Option<&PodTemplateSpec>) -> bool {
    template.and_then(|t| t.spec.as_ref()).is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| {
                c.env.iter().flatten().any(|e| {
                    e.name == FLAG
                        && e.value
                            .as_deref()
                            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
                })
            })
    })
}

/// Bumps the token-generation annotation on every consumer's pod template (a rolling restart).
/// Missing consumers and consumers that let the runner rotate its own token become warnings.
pub async fn roll(
    ctx: &Context,
    runner: &Runner,
    generation: &str,
) -> Result<(Vec<String>, Vec<Warning>), Error> {
    let ns = runner.namespace().unwrap_or_default();
    let consumers = runner
        .spec
        .token_secret
        .as_ref()
        .map(|t| t.consumers.clone())
        .unwrap_or_default();
    if consumers.is_empty() {
        return Ok((vec![], vec![]));
    }
    if !ctx.settings.consumer_restarts.allows(&ns) {
        let names: Vec<String> = consumers
            .iter()
            .map(|c| format!("{:?}/{}", c.kind, c.name))
            .collect();
        return Ok((
            vec![],
            vec![Warning {
                type_: CONSUMERS_READY,
                status: false,
                reason: Reason::ConsumerRestartsDisabled,
                message: format!(
                    "consumer restarts are not enabled for namespace {ns}, so {} keep the old token until restarted: restart them (kubectl rollout restart), or enable restarts there (chart value consumerRestarts.namespaces, flag --consumer-restarts)",
                    names.join(", ")
                ),
            }],
        ));
    }
    let mut restarted = vec![];
    let (mut missing, mut self_rotating, mut forbidden) = (vec![], vec![], vec![]);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {ANN_TOKEN_GENERATION: generation}}}}});
    for c in consumers {
        let label = format!("{:?}/{}", c.kind, c.name);
        let template = match c.kind {
            ConsumerKind::Deployment => {
                roll_one::<Deployment>(ctx, &ns, &c.name, &label, &patch, |d| {
                    d.spec.map(|s| s.template)
                })
                .await?
            }
            ConsumerKind::StatefulSet => {
                roll_one::<StatefulSet>(ctx, &ns, &c.name, &label, &patch, |d| {
                    d.spec.map(|s| s.template)
                })
                .await?
            }
            ConsumerKind::DaemonSet => {
                roll_one::<DaemonSet>(ctx, &ns, &c.name, &label, &patch, |d| {
                    d.spec.map(|s| s.template)
                })
                .await?
            }
        };
        match template {
            Rolled::Missing => missing.push(label),
            Rolled::Forbidden => forbidden.push(label),
            Rolled::Done {
                self_rotating: rotates,
            } => {
                if rotates {
                    self_rotating.push(label.clone());
                }
                restarted.push(label);
            }
        }
    }
    let warnings = warnings(&ns, forbidden, missing, self_rotating);
    Ok((restarted, warnings))
}

/// The conditions a roll leaves: consumers RBAC keeps the operator from, consumers missing,
/// consumers that would rotate the token themselves.
fn warnings(
    ns: &str,
    forbidden: Vec<String>,
    missing: Vec<String>,
    self_rotating: Vec<String>,
) -> Vec<Warning> {
    let mut warnings = vec![];
    if !forbidden.is_empty() {
        warnings.push(Warning {
            type_: CONSUMERS_READY,
            status: false,
            reason: Reason::ConsumerRestartForbidden,
            message: format!(
                "RBAC does not let the operator get and patch {} in namespace {ns}, so they keep the old token until restarted: grant it (chart value consumerRestarts.namespaces) or restart them yourself",
                forbidden.join(", ")
            ),
        });
    }
    if !missing.is_empty() {
        warnings.push(Warning {
            type_: CONSUMERS_READY,
            status: false,
            reason: Reason::ConsumerMissing,
            message: format!(
                "not found in namespace {ns}, so not restarted: {} (the token was rotated anyway)",
                missing.join(", ")
            ),
        });
    }
    if !self_rotating.is_empty() {
        warnings.push(Warning {
            type_: ROTATION_CONFLICT,
            status: true,
            reason: Reason::AutomaticRotationEnabled,
            message: format!("{} do not set {FLAG}=true: the runner process will rotate its token itself and the Secret's token stops working; set the variable in the pod template", self_rotating.join(", ")),
        });
    }
    warnings
}

/// What restarting one consumer came to.
enum Rolled {
    /// Patched; whether its pod template lets the runner rotate its own token.
    Done {
        self_rotating: bool,
    },
    Missing,
    /// RBAC refused: reported, not retried (retrying cannot help until someone changes RBAC).
    Forbidden,
}

/// Patches one workload's pod template.
async fn roll_one<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    label: &str,
    patch: &serde_json::Value,
    template: impl Fn(K) -> Option<PodTemplateSpec>,
) -> Result<Rolled, Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let current = match api.get_opt(name).await {
        Ok(Some(current)) => current,
        Ok(None) => return Ok(Rolled::Missing),
        Err(e) if forbidden(&e) => return Ok(Rolled::Forbidden),
        Err(e) => return Err(Error::kube(format!("reading {label}"))(e)),
    };
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(Rolled::Done {
            self_rotating: !disables_self_rotation(template(current).as_ref()),
        }),
        Err(e) if forbidden(&e) => Ok(Rolled::Forbidden),
        Err(e) => Err(Error::kube(format!("restarting {label}"))(e)),
    }
}
