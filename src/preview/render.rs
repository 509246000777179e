//! `plan` output: text for people, JSON or YAML for machines.

use super::{Action, Field, Outcome, PlanDocument, RunnerPlan, orphans::Orphan};

/// JSON (pretty) or YAML.
pub fn to_output(doc: &PlanDocument, yaml: bool) -> Result<String, String> {
    if yaml {
        serde_saphyr::to_string(doc).map_err(|e| format!("rendering YAML: {e}"))
    } else {
        serde_json::to_string_pretty(doc)
            .map(|s| s + "\n")
            .map_err(|e| format!("rendering JSON: {e}"))
    }
}

fn field(f: &Field) -> String {
    crate::controller::plan::before_after(f.before.as_ref(), &f.after)
}

fn project(id: i64, path: &Option<String>) -> String {
    match path {
        Some(p) => format!("{p} ({id})"),
        None => id.to_string(),
    }
}

fn runner_text(p: &RunnerPlan, out: &mut String) {
    let id = p
        .runner_id
        .map(|i| format!(" (GitLab runner {i})"))
        .unwrap_or_default();
    let head = match p.outcome {
        Outcome::NoChanges => "no changes".to_string(),
        Outcome::Changes => format!("{} to do", plural(p.actions.len(), "action")),
        Outcome::Blocked => format!("blocked: {}", p.reason.as_deref().unwrap_or("?")),
        Outcome::Error => format!("error: {}", p.reason.as_deref().unwrap_or("?")),
    };
    out.push_str(&format!("Runner {}/{}{id}: {head}\n", p.namespace, p.name));
    for a in &p.actions {
        action_text(a, out);
    }
    for w in &p.warnings {
        out.push_str(&format!("  ! {w}\n"));
    }
    if let Some(m) = &p.message {
        out.push_str(&format!("  {m}\n"));
    }
    if let Some(r) = &p.next_rotation {
        out.push_str(&format!("  next token rotation: {} ({})\n", r.at, r.reason));
    }
}

/// One action's lines.
fn action_text(a: &Action, out: &mut String) {
    match a {
        Action::Create {
            runner_type,
            owner,
            recreated,
            fields,
        } => {
            let owner = owner
                .as_ref()
                .map(|o| format!(" in {o}"))
                .unwrap_or_default();
            let again = if *recreated {
                " (again: the recorded runner is gone from GitLab)"
            } else {
                ""
            };
            out.push_str(&format!("  + create {runner_type} runner{owner}{again}\n"));
            for f in fields {
                out.push_str(&format!(
                    "      {}: {}\n",
                    f.field,
                    crate::controller::plan::shown(&f.after)
                ));
            }
        }
        Action::Adopt { runner_id } => {
            out.push_str(&format!("  + adopt GitLab runner {runner_id}\n"))
        }
        Action::TakeOver {
            runner_id,
            keep_token,
        } => out.push_str(&format!(
            "  + take over GitLab runner {runner_id} (this cluster's, from before a rebuild); {}\n",
            if *keep_token {
                "its token is kept"
            } else {
                "its token is reset"
            }
        )),
        Action::Update { fields, .. } => {
            for f in fields {
                out.push_str(&format!("  ~ {}: {}\n", f.field, field(f)));
            }
        }
        Action::Assign {
            project_id,
            project: path,
            ..
        } => out.push_str(&format!(
            "  + assign to project {}\n",
            project(*project_id, path)
        )),
        Action::Unassign {
            project_id,
            project: path,
            ..
        } => out.push_str(&format!(
            "  - unassign from project {}\n",
            project(*project_id, path)
        )),
        Action::RotateToken { reason, .. } => out.push_str(&format!(
            "  ~ reset the token ({reason}) and write the new one to the Secret\n"
        )),
        Action::Delete { runner_id } => {
            out.push_str(&format!("  - delete GitLab runner {runner_id}\n"))
        }
        Action::Release { runner_id } => out.push_str(&match runner_id {
            Some(id) => {
                format!("  - release the Runner; GitLab runner {id} stays registered\n")
            }
            None => "  - release the Runner (no GitLab runner to delete)\n".into(),
        }),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The text for people: each Runner, then one summary line.
pub fn render_text(doc: &PlanDocument) -> String {
    let mut out = String::new();
    for p in &doc.runners {
        runner_text(p, &mut out);
    }
    out.push_str(&orphans_text(&doc.orphans));
    let s = &doc.summary;
    if s.runners == 0 {
        out.push_str("No Runners to plan.\n");
        return out;
    }
    out.push_str(&format!(
        "\nPlan: {} with changes, {} without, {} blocked, {}.\n",
        plural(s.changes, "Runner"),
        s.no_changes,
        s.blocked,
        plural(s.errors, "error"),
    ));
    out
}

/// One line per orphan: a runner with this cluster's marker that no Runner claims.
pub fn orphans_text(orphans: &[Orphan]) -> String {
    orphans
        .iter()
        .map(|o| {
            format!(
                "orphan: GitLab runner {} ({:?}) on {}, marked for {}; last contact {}\n",
                o.id,
                o.description,
                o.gitlab,
                o.marker,
                o.contacted_at.as_deref().unwrap_or("never")
            )
        })
        .collect()
}
