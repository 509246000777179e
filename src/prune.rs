//! `runner-operator prune`: the orphans `plan` lists (runners with this cluster's marker that
//! no Runner claims), deleted from GitLab with `--yes` — never an unmarked runner, never
//! another cluster's, never one used within `--min-idle`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::controller::identity::{ClusterName, Marker};
use crate::preview::orphans::{self, Orphan};

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Delete the orphans listed. Without it nothing is changed: the list is what would go.
    #[arg(long)]
    pub yes: bool,
    /// Keep runners a process used (or that were created) within this time.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub min_idle: Duration,
    /// The cluster's name, as the operator runs with it (required: only runners marked with
    /// it are ever candidates).
    #[arg(long, env = "RUNNER_OPERATOR_CLUSTER_NAME")]
    pub cluster_name: Option<ClusterName>,
    /// Output format: text or json.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Path of the kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "RUNNER_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::crd::duration::parse(s)
}

/// What `prune -o json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub orphans: Vec<Orphan>,
    /// Orphans used within --min-idle: kept.
    pub recently_used: Vec<i64>,
    /// Deleted (only with --yes).
    pub deleted: Vec<i64>,
    /// Not deleted after all: changed hands since the scan, or GitLab refused (with why).
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub id: i64,
    pub why: String,
}

/// Last sign of use: the last contact, else the creation.
fn idle_since(o: &Orphan) -> Option<Timestamp> {
    o.contacted_at
        .as_deref()
        .or(o.created_at.as_deref())
        .and_then(|t| t.parse().ok())
}

pub async fn prune(
    client: &kube::Client,
    cluster: &ClusterName,
    min_idle: Duration,
    yes: bool,
    now: Timestamp,
) -> Result<Report, String> {
    let found = orphans::scan(client, cluster).await?;
    let mut report = Report {
        orphans: found.iter().map(|f| f.orphan.clone()).collect(),
        recently_used: vec![],
        deleted: vec![],
        skipped: vec![],
    };
    let bound = now.as_second() - min_idle.as_secs() as i64;
    for f in found {
        let o = &f.orphan;
        // Unknown age counts as recent: nothing is deleted on a guess.
        if idle_since(o).is_none_or(|t| t.as_second() > bound) {
            report.recently_used.push(o.id);
            continue;
        }
        if !yes {
            continue;
        }
        // Read again right before deleting: a rebuilt Runner may have taken it over since.
        let still = match f.client.get_runner(crate::gitlab::RunnerId(o.id)).await {
            Ok(d) => Marker::parse(d.maintenance_note.as_deref())
                .is_some_and(|m| m.to_string() == o.marker),
            Err(e) if e.is_not_found() => {
                report.skipped.push(Skipped {
                    id: o.id,
                    why: "already gone".into(),
                });
                continue;
            }
            Err(e) => {
                report.skipped.push(Skipped {
                    id: o.id,
                    why: format!("could not read it again: {e}"),
                });
                continue;
            }
        };
        if !still {
            report.skipped.push(Skipped {
                id: o.id,
                why: "its marker changed since the scan (taken over?)".into(),
            });
            continue;
        }
        match f.client.delete_runner(crate::gitlab::RunnerId(o.id)).await {
            Ok(()) => report.deleted.push(o.id),
            Err(e) if e.is_not_found() => report.deleted.push(o.id),
            Err(e) => report.skipped.push(Skipped {
                id: o.id,
                why: format!("GitLab refused the deletion: {e}"),
            }),
        }
    }
    Ok(report)
}

pub fn render_text(r: &Report, yes: bool) -> String {
    let mut out = crate::preview::render_orphans(&r.orphans);
    for id in &r.recently_used {
        out.push_str(&format!(
            "kept: GitLab runner {id} was used within --min-idle\n"
        ));
    }
    for id in &r.deleted {
        out.push_str(&format!("deleted: orphan GitLab runner {id}\n"));
    }
    for s in &r.skipped {
        out.push_str(&format!("skipped: GitLab runner {}: {}\n", s.id, s.why));
    }
    let candidates = r.orphans.len() - r.recently_used.len();
    if !yes {
        out.push_str(&format!(
            "{} to delete; nothing was changed (run again with --yes to delete {}).\n",
            candidates,
            if candidates == 1 { "it" } else { "them" }
        ));
    } else {
        out.push_str(&format!("{} deleted.\n", r.deleted.len()));
    }
    out
}

pub fn run(args: PruneArgs) -> Result<(), String> {
    let cluster = args.cluster_name.clone().ok_or(
        "prune needs the cluster's name (--cluster-name or RUNNER_OPERATOR_CLUSTER_NAME, as the operator runs with it): only runners marked with it are candidates",
    )?;
    crate::cli::block_on(async {
        let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
        let report = prune(&client, &cluster, args.min_idle, args.yes, Timestamp::now()).await?;
        match args.output {
            Output::Text => print!("{}", render_text(&report, args.yes)),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|e| format!("rendering JSON: {e}"))?
            ),
        }
        if report.skipped.iter().any(|s| s.why != "already gone") {
            return Err("some orphans were not deleted (see above)".into());
        }
        Ok(())
    })
}
