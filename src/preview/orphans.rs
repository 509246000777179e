//! Orphans: GitLab runners that carry this cluster's marker and that no Runner claims — what
//! a Runner lost with its cluster (or deleted while its finalizer could not run) left behind.
//! `plan` lists them; `prune` deletes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::controller::identity::{ClusterName, Marker};
use crate::controller::{Context, Settings, connection};
use crate::crd::{ClusterGitLabConnection, ConnectionKind, GitLabConnection, Runner};
use crate::gitlab::{GitLabApi, RunnerFilter};

/// One orphan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Orphan {
    pub id: i64,
    pub description: String,
    /// The ownership marker it carries.
    pub marker: String,
    /// When a runner process last used its token (null: never).
    pub contacted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The GitLab it is registered in.
    pub gitlab: String,
    /// The connection it was found through (kind/namespace/name).
    pub connection: String,
}

/// An orphan and the client that can delete it.
pub struct Found {
    pub orphan: Orphan,
    pub client: Arc<dyn GitLabApi>,
}

/// What the cluster's Runners claim: uids, `namespace/name`s, recorded runner ids.
#[derive(Default)]
struct Claims {
    uids: BTreeSet<String>,
    paths: BTreeSet<String>,
    ids: BTreeSet<i64>,
}

impl Claims {
    /// A Runner claims a marked runner by its uid, by its id in status, or by having the
    /// marker's namespace and name (it takes the runner over on its next pass).
    fn claim(&self, id: i64, m: &Marker) -> bool {
        self.ids.contains(&id) || self.uids.contains(&m.uid) || self.paths.contains(&m.path())
    }
}

/// Every orphan of `cluster` in every GitLab the cluster's connections reach (each GitLab
/// once). Reads each listed runner once (its note is not in lists); writes nothing.
pub async fn scan(client: &kube::Client, cluster: &ClusterName) -> Result<Vec<Found>, String> {
    let claims = claims(client).await?;
    let ctx = Context::new(
        client.clone(),
        Settings {
            cluster_name: Some(cluster.clone()),
            ..Settings::default()
        },
    );
    // Per GitLab: the runners seen (an admin connection sees more than a project owner's).
    let mut seen: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut out = vec![];
    for (kind, ns, name) in connections(client).await {
        let label = match kind {
            ConnectionKind::ClusterGitLabConnection => format!("ClusterGitLabConnection/{name}"),
            ConnectionKind::GitLabConnection => format!("GitLabConnection/{ns}/{name}"),
        };
        let Ok(resolved) = connection::for_runner(&ctx, &ns, kind, &name).await else {
            // A connection that does not work shows in its own status; others may reach
            // the same GitLab.
            continue;
        };
        let gl = resolved.client.clone();
        let filter = RunnerFilter::default();
        // Instance runners only through /runners/all (admins); others through /runners.
        let listed = match gl.list_all_runners(&filter).await {
            Ok(l) => l,
            Err(_) => match gl.list_owned_runners(&filter).await {
                Ok(l) => l,
                Err(_) => continue,
            },
        };
        let known = seen.entry(resolved.url.clone()).or_default();
        for r in listed.into_iter().filter(|r| known.insert(r.id.0)) {
            let Ok(d) = gl.get_runner(r.id).await else {
                continue;
            };
            let Some(m) = Marker::parse(d.maintenance_note.as_deref()) else {
                continue;
            };
            if m.cluster.as_deref() != Some(cluster.as_str()) || claims.claim(d.id.0, &m) {
                continue;
            }
            out.push(Found {
                orphan: Orphan {
                    id: d.id.0,
                    description: d.description.clone().unwrap_or_default(),
                    marker: m.to_string(),
                    contacted_at: d.contacted_at.clone(),
                    created_at: d.created_at.clone(),
                    gitlab: resolved.url.clone(),
                    connection: label.clone(),
                },
                client: gl.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.orphan.gitlab, a.orphan.id).cmp(&(&b.orphan.gitlab, b.orphan.id)));
    Ok(out)
}

/// What the cluster's Runners claim: their uids, names and recorded runner ids.
async fn claims(client: &kube::Client) -> Result<Claims, String> {
    let runners = Api::<Runner>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Runners in every namespace (orphans are runners no Runner anywhere claims): {e}"))?;
    let mut claims = Claims::default();
    for r in &runners.items {
        claims.uids.extend(r.uid());
        claims.paths.insert(format!(
            "{}/{}",
            r.namespace().unwrap_or_default(),
            r.name_any()
        ));
        claims
            .ids
            .extend(r.status.as_ref().and_then(|s| s.runner_id));
    }
    Ok(claims)
}

/// Every connection of the cluster: (kind, namespace, name).
async fn connections(client: &kube::Client) -> Vec<(ConnectionKind, String, String)> {
    let mut out = vec![];
    if let Ok(list) = Api::<ClusterGitLabConnection>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let kind = ConnectionKind::ClusterGitLabConnection;
        out.extend(
            list.items
                .iter()
                .map(|c| (kind, String::new(), c.name_any())),
        );
    }
    if let Ok(list) = Api::<GitLabConnection>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let kind = ConnectionKind::GitLabConnection;
        out.extend(
            list.items
                .iter()
                .map(|c| (kind, c.namespace().unwrap_or_default(), c.name_any())),
        );
    }
    out
}

/// The orphans, without their clients.
pub async fn find(client: &kube::Client, cluster: &ClusterName) -> Result<Vec<Orphan>, String> {
    Ok(scan(client, cluster)
        .await?
        .into_iter()
        .map(|f| f.orphan)
        .collect())
}
