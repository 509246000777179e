//! `runner-operator jobs NAMESPACE/RUNNER`: the runner's recent jobs, read from GitLab through
//! the connection the Runner uses. Read-only; nothing is stored.

use std::path::PathBuf;

use kube::Api;
use serde::Serialize;

use crate::controller::{Context, Settings, connection};
use crate::crd::Runner;
use crate::gitlab::Job;

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    /// The Runner, as NAMESPACE/NAME.
    pub runner: String,
    /// Only jobs of this status (created, pending, running, success, failed, canceled, skipped,
    /// manual, scheduled, …).
    #[arg(long)]
    pub status: Option<String>,
    /// How many of the most recent jobs to show.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
    /// Path of the kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "RUNNER_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// One job as the command shows it (the JSON output's schema).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobRow {
    pub id: i64,
    pub status: String,
    pub name: Option<String>,
    pub project: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub pipeline: Option<i64>,
    pub started_at: Option<String>,
    /// Seconds.
    pub duration: Option<f64>,
    pub web_url: Option<String>,
}

impl From<Job> for JobRow {
    fn from(j: Job) -> Self {
        JobRow {
            id: j.id,
            status: j.status,
            name: j.name,
            project: j.project.and_then(|p| p.path_with_namespace.or(p.name)),
            git_ref: j.git_ref,
            pipeline: j.pipeline.map(|p| p.id),
            started_at: j.started_at,
            duration: j.duration,
            web_url: j.web_url,
        }
    }
}

/// The jobs of the Runner `namespace/name`, newest first.
pub async fn list(
    client: kube::Client,
    target: &str,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<JobRow>, String> {
    let (ns, name) = target
        .split_once('/')
        .filter(|(n, r)| !n.is_empty() && !r.is_empty())
        .ok_or_else(|| format!("{target:?}: give the Runner as NAMESPACE/NAME"))?;
    let runner = Api::<Runner>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Runner {ns}/{name}: {e}"))?
        .ok_or_else(|| format!("Runner {ns}/{name} does not exist"))?;
    let id = runner
        .status
        .as_ref()
        .and_then(|s| s.runner_id)
        .ok_or_else(|| format!("Runner {ns}/{name} has no GitLab runner yet (status.runnerId is unset): see its Ready condition"))?;
    let ctx = Context::new(client, Settings::default());
    let conn = connection::of_runner(&ctx, &runner)
        .await
        .map_err(|e| format!("the Runner's connection: {e}"))?;
    let jobs = conn
        .client
        .recent_runner_jobs(crate::gitlab::RunnerId(id), status, limit)
        .await
        .map_err(|e| format!("listing the jobs of GitLab runner {id}: {e}"))?;
    Ok(jobs.into_iter().map(JobRow::from).collect())
}

fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => {
            let s = s.round() as u64;
            match (s / 3600, s % 3600 / 60, s % 60) {
                (0, 0, sec) => format!("{sec}s"),
                (0, m, sec) => format!("{m}m{sec}s"),
                (h, m, _) => format!("{h}h{m}m"),
            }
        }
    }
}

pub fn render(rows: &[JobRow], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default() + "\n",
        Format::Table => {
            let mut lines = vec![[
                "ID".to_string(),
                "STATUS".into(),
                "PROJECT".into(),
                "REF".into(),
                "PIPELINE".into(),
                "STARTED".into(),
                "DURATION".into(),
            ]];
            for r in rows {
                lines.push([
                    r.id.to_string(),
                    r.status.clone(),
                    r.project.clone().unwrap_or_else(|| "-".into()),
                    r.git_ref.clone().unwrap_or_else(|| "-".into()),
                    r.pipeline.map_or("-".into(), |p| p.to_string()),
                    r.started_at
                        .as_deref()
                        .map_or("-".into(), |s| s.get(..19).unwrap_or(s).replace('T', " ")),
                    duration(r.duration),
                ]);
            }
            let widths: Vec<usize> = (0..7)
                .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
                .collect();
            let mut out = String::new();
            for l in &lines {
                let cells: Vec<String> = l
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(cells.join("   ").trim_end());
                out.push('\n');
            }
            if rows.is_empty() {
                out.push_str("(no jobs)\n");
            }
            out
        }
    }
}

pub fn run(args: JobsArgs) -> Result<(), String> {
    crate::cli::block_on(async {
        let client = crate::kube_client::connect(args.kubeconfig.as_deref()).await?;
        let rows = list(
            client,
            &args.runner,
            args.status.as_deref(),
            args.limit as usize,
        )
        .await?;
        print!("{}", render(&rows, args.output));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(42.4)), "42s");
        assert_eq!(duration(Some(125.0)), "2m5s");
        assert_eq!(duration(Some(7300.0)), "2h1m");
    }
}
