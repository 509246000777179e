//! `runner-operator import`: Runner manifests for runners that already exist in GitLab, every
//! field at its current value and `spec.adopt` naming the runner — applied, the operator takes
//! them over with one token reset and nothing else. Read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::controller::identity::{self, Marker};
use crate::controller::{Context, Settings, connection};
use crate::crd::{
    AccessLevel, Adopt, ConnectionKind, ConnectionRef, Runner, RunnerSpec, RunnerType, TokenSecret,
};
use crate::gitlab::{GitLabApi, RunnerDetails, RunnerFilter, RunnerId};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Runners of this project (id or full path): its own and those assigned to it. Repeatable.
    #[arg(long, value_name = "PATH|ID")]
    pub project: Vec<String>,
    /// Group runners of this group (id or full path). Repeatable.
    #[arg(long, value_name = "PATH|ID")]
    pub group: Vec<String>,
    /// Instance runners (needs an administrator's token).
    #[arg(long)]
    pub instance: bool,
    /// This runner, by id. Repeatable.
    #[arg(long = "runner-id", value_name = "N")]
    pub runner_id: Vec<i64>,
    /// Only runners carrying every one of these tags. Repeatable.
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Only runners with this status (online, offline, stale, never_contacted).
    #[arg(long)]
    pub status: Option<String>,
    /// Only paused (true) or active (false) runners.
    #[arg(long, value_name = "BOOL")]
    pub paused: Option<bool>,
    /// Only runners whose description matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub description_regex: Option<String>,
    /// The connection the manifests refer to (spec.connectionRef.name); with a cluster, GitLab is
    /// also reached through it.
    #[arg(long, value_name = "NAME")]
    pub connection: String,
    /// The connection is a ClusterGitLabConnection (default: a GitLabConnection in --namespace).
    #[arg(long)]
    pub cluster_connection: bool,
    /// metadata.namespace of the manifests (and of the GitLabConnection read from the cluster).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Also write runners another Runner already manages (they are listed and skipped otherwise).
    #[arg(long)]
    pub include_managed: bool,
    /// Write one file per runner into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Reach this GitLab directly, without any cluster (the token from --token-env).
    #[arg(long, value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// Environment variable holding the access token for --gitlab-url (never a flag value, so
    /// the token stays out of shell history).
    #[arg(long, default_value = "GITLAB_TOKEN", value_name = "VAR")]
    pub token_env: String,
    /// Path of the kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "RUNNER_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Which runners to import.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub projects: Vec<String>,
    pub groups: Vec<String>,
    pub instance: bool,
    pub ids: Vec<i64>,
    pub tags: Vec<String>,
    pub status: Option<String>,
    pub paused: Option<bool>,
    pub description: Option<regex::Regex>,
}

/// Where the manifests point and how they are named.
#[derive(Debug, Clone)]
pub struct Target {
    pub connection: ConnectionRef,
    pub namespace: String,
    pub include_managed: bool,
}

/// A runner someone else already manages: skipped unless asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    pub runner_id: i64,
    /// `namespace/name` of the Runner managing it.
    pub by: String,
}

/// What `import` found.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// File name (without `.yaml`) → manifest.
    pub manifests: Vec<(String, Runner)>,
    pub managed: Vec<Managed>,
}

/// GitLab runner id → `namespace/name` of each Runner of the cluster that recorded it in status.
pub type Claims = BTreeMap<i64, String>;

/// Lists, filters and reads the selected runners and writes their manifests.
pub async fn import(
    gl: &dyn GitLabApi,
    sel: &Selection,
    target: &Target,
    claims: &Claims,
) -> Result<Imported, String> {
    let ids = selected_ids(gl, sel).await?;
    let mut out = Imported::default();
    let mut names = BTreeSet::new();
    let mut groups: BTreeMap<i64, String> = BTreeMap::new();
    for id in ids {
        let d = gl
            .get_runner(RunnerId(id))
            .await
            .map_err(|e| format!("reading runner {id}: {e}"))?;
        // Runners named by id pass the same filters as listed ones.
        if sel.ids.contains(&id) && !passes(&d, sel) {
            continue;
        }
        let managed_by = Marker::parse(d.maintenance_note.as_deref())
            .map(|m| match &m.cluster {
                Some(c) => format!("{} (cluster {c})", m.path()),
                None => m.path(),
            })
            .or_else(|| claims.get(&id).cloned());
        if let Some(by) = managed_by {
            out.managed.push(Managed { runner_id: id, by });
            if !target.include_managed {
                continue;
            }
        }
        let group = match d.groups.first() {
            Some(g) => match groups.get(&g.id) {
                Some(path) => Some(path.clone()),
                None => {
                    let path = gl
                        .get_group(&g.id.to_string())
                        .await
                        .map(|g| g.full_path)
                        .unwrap_or_else(|_| g.id.to_string());
                    groups.insert(g.id, path.clone());
                    Some(path)
                }
            },
            None => None,
        };
        let name = unique_name(&d, &mut names);
        out.manifests
            .push((name.clone(), manifest(&d, &name, group, target)?));
    }
    Ok(out)
}

/// The ids the selection names, and those of the runners listed for its projects, groups
/// and the instance whose description matches.
async fn selected_ids(gl: &dyn GitLabApi, sel: &Selection) -> Result<BTreeSet<i64>, String> {
    let filter = |runner_type: &str| RunnerFilter {
        runner_type: Some(runner_type.into()),
        status: sel.status.clone(),
        paused: sel.paused,
        tag_list: (!sel.tags.is_empty()).then(|| sel.tags.clone()),
        ..Default::default()
    };
    let mut ids: BTreeSet<i64> = sel.ids.iter().copied().collect();
    let mut listed = vec![];
    for p in &sel.projects {
        listed.extend(
            gl.list_project_runners(p, &filter("project_type"))
                .await
                .map_err(|e| format!("listing the runners of project {p:?}: {e}"))?,
        );
    }
    for g in &sel.groups {
        listed.extend(
            gl.list_group_runners(g, &filter("group_type"))
                .await
                .map_err(|e| format!("listing the runners of group {g:?}: {e}"))?,
        );
    }
    if sel.instance {
        listed.extend(
            gl.list_all_runners(&filter("instance_type"))
                .await
                .map_err(|e| {
                    format!("listing instance runners (an administrator's token is needed): {e}")
                })?,
        );
    }
    let matches = |d: Option<&str>| {
        sel.description
            .as_ref()
            .is_none_or(|re| re.is_match(d.unwrap_or_default()))
    };
    ids.extend(
        listed
            .iter()
            .filter(|r| matches(r.description.as_deref()))
            .map(|r| r.id.0),
    );
    Ok(ids)
}

fn passes(d: &RunnerDetails, sel: &Selection) -> bool {
    let tags: BTreeSet<&str> = d.tag_list.iter().map(String::as_str).collect();
    sel.tags.iter().all(|t| tags.contains(t.as_str()))
        && sel.paused.is_none_or(|p| d.is_paused() == p)
        && sel
            .status
            .as_deref()
            .is_none_or(|s| d.status.as_deref() == Some(s))
        && sel
            .description
            .as_ref()
            .is_none_or(|re| re.is_match(d.description.as_deref().unwrap_or_default()))
}

/// A DNS-label name from the description (else `runner-<id>`), unique among `taken`.
fn unique_name(d: &RunnerDetails, taken: &mut BTreeSet<String>) -> String {
    let mut slug = String::new();
    for c in d.description.as_deref().unwrap_or_default().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_matches('-').to_string();
    let base = if slug.is_empty() || !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("runner-{}", d.id)
    } else {
        slug
    };
    let name = if taken.contains(&base) {
        format!("{base}-{}", d.id)
    } else {
        base
    };
    taken.insert(name.clone());
    name
}

/// The manifest of one runner: every field at GitLab's value, `adopt` naming it.
fn manifest(
    d: &RunnerDetails,
    name: &str,
    group: Option<String>,
    target: &Target,
) -> Result<Runner, String> {
    let runner_type = match d.runner_type.as_str() {
        "instance_type" => RunnerType::InstanceType,
        "group_type" => RunnerType::GroupType,
        "project_type" => RunnerType::ProjectType,
        other => return Err(format!("runner {}: unknown runner_type {other:?}", d.id)),
    };
    let path = |p: &crate::gitlab::ProjectRef| {
        p.path_with_namespace
            .clone()
            .unwrap_or_else(|| p.id.to_string())
    };
    let (project, assigned) = match runner_type {
        RunnerType::ProjectType => (
            d.projects.first().map(path),
            d.projects.iter().skip(1).map(path).collect(),
        ),
        _ => (None, vec![]),
    };
    let mut tags = d.tag_list.clone();
    tags.sort();
    let note = identity::strip(d.maintenance_note.as_deref().unwrap_or_default());
    let spec = RunnerSpec {
        connection_ref: target.connection.clone(),
        runner_type,
        group: (runner_type == RunnerType::GroupType)
            .then(|| group.unwrap_or_default())
            .filter(|g| !g.is_empty()),
        project,
        assigned_projects: assigned,
        description: Some(d.description.clone().unwrap_or_default()),
        tags,
        run_untagged: Some(d.run_untagged.unwrap_or(true)),
        paused: Some(d.is_paused()),
        locked: Some(d.locked.unwrap_or(false)),
        access_level: Some(match d.access_level.as_deref() {
            Some("ref_protected") => AccessLevel::RefProtected,
            _ => AccessLevel::NotProtected,
        }),
        maximum_timeout: d.maximum_timeout,
        maintenance_note: (!note.is_empty()).then_some(note),
        registration: None,
        token_secret: Some(TokenSecret {
            name: Some(format!("{name}-runner-token")),
            ..Default::default()
        }),
        token_rotation: None,
        deletion_policy: None,
        adopt: Some(Adopt { runner_id: d.id.0 }),
    };
    let mut r = Runner::new(name, spec);
    r.metadata.namespace = Some(target.namespace.clone());
    Ok(r)
}

/// The manifests as one YAML stream, each headed by a comment naming its runner.
pub fn to_yaml(imported: &Imported) -> Result<String, String> {
    let mut out = String::new();
    for (i, (_, r)) in imported.manifests.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&document(r)?);
    }
    Ok(out)
}

fn document(r: &Runner) -> Result<String, String> {
    let id = r
        .spec
        .adopt
        .as_ref()
        .map(|a| a.runner_id)
        .unwrap_or_default();
    let yaml = serde_saphyr::to_string(r).map_err(|e| format!("rendering YAML: {e}"))?;
    Ok(format!(
        "# GitLab runner {id}, imported by runner-operator: applying this resets its token once.\n{yaml}"
    ))
}

/// Runs `import` from the command line.
pub fn run(args: ImportArgs) -> Result<(), String> {
    if args.project.is_empty()
        && args.group.is_empty()
        && !args.instance
        && args.runner_id.is_empty()
    {
        return Err("choose runners with --project, --group, --instance or --runner-id".into());
    }
    let sel = selection(&args)?;
    crate::cli::block_on(async {
        let kind = if args.cluster_connection {
            ConnectionKind::ClusterGitLabConnection
        } else {
            ConnectionKind::GitLabConnection
        };
        let (gl, namespace, claims) = match &args.gitlab_url {
            Some(url) => {
                let gl = crate::preview::gitlab_from_env(url, &args.token_env)?;
                (
                    std::sync::Arc::new(gl) as std::sync::Arc<dyn GitLabApi>,
                    args.namespace.clone().unwrap_or_else(|| "default".into()),
                    Claims::new(),
                )
            }
            None => {
                let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
                let ns = args
                    .namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string());
                let ctx = Context::new(client.clone(), Settings::default());
                let conn = connection::for_runner(&ctx, &ns, kind, &args.connection)
                    .await
                    .map_err(|e| format!("the connection: {e}"))?;
                (conn.client, ns, claims(&client).await)
            }
        };
        let target = Target {
            connection: ConnectionRef {
                kind,
                name: args.connection.clone(),
            },
            namespace,
            include_managed: args.include_managed,
        };
        let imported = import(&*gl, &sel, &target, &claims).await?;
        write_out(&imported, &args)
    })
}

/// Which runners the flags choose.
fn selection(args: &ImportArgs) -> Result<Selection, String> {
    let description = args
        .description_regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| format!("--description-regex: {e}"))?;
    Ok(Selection {
        projects: args.project.clone(),
        groups: args.group.clone(),
        instance: args.instance,
        ids: args.runner_id.clone(),
        tags: args.tag.clone(),
        status: args.status.clone(),
        paused: args.paused,
        description,
    })
}

/// The manifests to stdout or into `--output-dir`, and a summary on stderr.
fn write_out(imported: &Imported, args: &ImportArgs) -> Result<(), String> {
    for m in &imported.managed {
        let what = if args.include_managed {
            "written anyway (--include-managed)"
        } else {
            "skipped (--include-managed writes it)"
        };
        eprintln!(
            "runner {} is managed by Runner {}: {what}",
            m.runner_id, m.by
        );
    }
    match &args.output_dir {
        None => print!("{}", to_yaml(imported)?),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for (name, r) in &imported.manifests {
                let path = dir.join(format!("{name}.yaml"));
                std::fs::write(&path, document(r)?)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    eprintln!(
        "{} runner(s) imported, {} managed elsewhere{}",
        imported.manifests.len(),
        imported.managed.len(),
        if args.include_managed {
            ""
        } else {
            " (skipped)"
        }
    );
    Ok(())
}

/// Runners of the cluster that recorded a GitLab runner in status: `plan`'s listing, by name.
pub async fn claims(client: &kube::Client) -> Claims {
    crate::preview::claims(client)
        .await
        .into_iter()
        .filter_map(|(id, who)| Some((id, who.into_iter().next()?.1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(id: i64, description: &str) -> RunnerDetails {
        serde_json::from_value(serde_json::json!({
            "id": id, "description": description, "runner_type": "instance_type"
        }))
        .expect("details")
    }

    #[test]
    fn names_are_dns_labels_and_unique() {
        let mut taken = BTreeSet::new();
        let name = |id, d: &str, taken: &mut BTreeSet<String>| unique_name(&details(id, d), taken);
        assert_eq!(
            name(1, "Linux Builders (x86_64) — prod!", &mut taken),
            "linux-builders-x86-64-prod"
        );
        assert_eq!(
            name(2, "linux builders x86/64 prod", &mut taken),
            "linux-builders-x86-64-prod-2"
        );
        assert_eq!(name(3, "", &mut taken), "runner-3");
        assert_eq!(name(4, "日本語 ランナー", &mut taken), "runner-4");
        assert_eq!(name(5, "42 docker", &mut taken), "runner-5");
        let long = name(6, &"a".repeat(300), &mut taken);
        assert!(long.len() <= 40, "{long}");
    }
}
