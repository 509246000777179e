//! Spec → desired state: GitLab's fields as the spec wants them, the ownership marker, the
//! rotation policy, the token's bookkeeping from status.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::controller::error::Error;
use crate::controller::plan::{
    Desired, DesiredAttrs, Reason, RotationPolicy, SecretState, TokenState,
};
use crate::crd::{self, Runner, RunnerStatus, RunnerType};
use crate::gitlab::RunnerDetails;

use super::*;

/// Ownership marker kept in the runner's maintenance note.
pub fn marker(runner: &Runner) -> String {
    format!(
        "[runner-operator: managed by Runner {}/{}, uid {}]",
        runner.namespace().unwrap_or_default(),
        runner.name_any(),
        runner.meta().uid.as_deref().unwrap_or_default()
    )
}

pub(crate) fn carries_marker(note: Option<&str>, runner: &Runner) -> bool {
    let uid = runner.meta().uid.as_deref().unwrap_or("-");
    note.is_some_and(|n| n.contains(&format!(", uid {uid}]")))
}

/// Whether a GitLab runner is this Runner's: it carries our marker, or `spec.adopt` names it
/// and this Runner has taken it (its id is in status). An adopted runner is not marked, so
/// adopting a runner whose fields already match the spec writes nothing but the token reset.
pub(crate) fn is_ours(d: &RunnerDetails, runner: &Runner, recorded: Option<i64>) -> bool {
    carries_marker(d.maintenance_note.as_deref(), runner)
        || (runner.spec.adopt.as_ref().map(|a| a.runner_id) == Some(d.id) && recorded == Some(d.id))
}

/// The user's note as GitLab should hold it: with our marker, except on adopted runners.
pub(crate) fn desired_note(runner: &Runner) -> String {
    if runner.spec.adopt.is_some() {
        runner.spec.maintenance_note.clone().unwrap_or_default()
    } else {
        note_with_marker(runner)
    }
}

/// `(namespace, name, uid)` of the Runner a marker names.
pub(crate) fn marker_owner(note: Option<&str>) -> Option<(String, String, String)> {
    let rest = note?.split("[runner-operator: managed by Runner ").nth(1)?;
    let (path, rest) = rest.split_once(", uid ")?;
    let uid = rest.split(']').next()?;
    let (ns, name) = path.split_once('/')?;
    Some((ns.into(), name.into(), uid.into()))
}

/// The note without any marker of ours (and the blank line before it).
pub(crate) fn strip_marker(note: &str) -> String {
    match note.find("[runner-operator: managed by Runner ") {
        None => note.to_string(),
        Some(start) => {
            let end = note[start..]
                .find(']')
                .map_or(note.len(), |e| start + e + 1);
            let mut out = note[..start].trim_end().to_string();
            out.push_str(note[end..].trim_end());
            out
        }
    }
}

pub(crate) fn note_with_marker(runner: &Runner) -> String {
    let m = marker(runner);
    match runner
        .spec
        .maintenance_note
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        None => m,
        Some(note) => {
            let room = NOTE_LIMIT.saturating_sub(m.chars().count() + 2);
            let kept: String = note.chars().take(room).collect();
            format!("{kept}\n\n{m}")
        }
    }
}

pub(crate) fn parse_duration(field: &str, v: Option<&String>) -> Result<Option<Duration>, Error> {
    v.map(|s| {
        crd::duration::parse(s)
            .map_err(|e| Error::Invalid(format!("spec.tokenRotation.{field}: {e}")))
    })
    .transpose()
}

pub(crate) fn rotation_policy(runner: &Runner) -> Result<RotationPolicy, Error> {
    let rotation = runner.spec.token_rotation.clone().unwrap_or_default();
    let interval = parse_duration("interval", rotation.interval.as_ref())?;
    // Admission refuses shorter ones written in h/m/s; this catches the `d` form (`0d`) and
    // objects stored before the rule.
    if let Some(i) = interval
        && i < crd::runner::MIN_ROTATION_INTERVAL
    {
        return Err(Error::Invalid(format!(
            "spec.tokenRotation.interval {:?} is below the 10m floor: every rotation kills the live token and restarts the consumers; use e.g. 720h",
            rotation.interval.unwrap_or_default()
        )));
    }
    Ok(RotationPolicy {
        interval,
        before_expiry: parse_duration("beforeExpiry", rotation.before_expiry.as_ref())?,
    })
}

/// Tags as GitLab stores them: every entry split on commas and trimmed, blanks dropped (its
/// tag parser), so a spec GitLab normalises differently does not look like drift on every pass.
pub(crate) fn gitlab_tags(tags: &[String]) -> BTreeSet<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn desired(runner: &Runner, assigned: BTreeSet<i64>) -> Result<Desired, Error> {
    let s = &runner.spec;
    Ok(Desired {
        attrs: DesiredAttrs {
            description: s.description.clone().unwrap_or_default(),
            tags: gitlab_tags(&s.tags),
            run_untagged: s.run_untagged.unwrap_or(true),
            paused: s.paused.unwrap_or(false),
            locked: s.locked.unwrap_or(false),
            access_level: s
                .access_level
                .map(|a| a.as_str())
                .unwrap_or("not_protected")
                .into(),
            maximum_timeout: s.maximum_timeout,
            maintenance_note: desired_note(runner),
        },
        assigned,
        is_project_runner: s.runner_type == RunnerType::ProjectType,
        rotation: rotation_policy(runner)?,
        rotate_request: runner.annotations().get(ROTATE_ANNOTATION).cloned(),
        adopt: s.adopt.as_ref().map(|a| a.runner_id),
    })
}

/// The token's bookkeeping as status records it, with the Secret as observed.
pub(crate) fn token_state(status: &RunnerStatus, secret: SecretState) -> TokenState {
    TokenState {
        secret,
        issued_at: ts(status.token_issued_at.as_deref()),
        expires_at: ts(status.token_expires_at.as_deref()),
        pending: status.pending_rotation.as_deref().and_then(Reason::parse),
        handled_request: status.handled_rotate_request.clone(),
    }
}

pub(crate) fn ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runner(note: Option<&str>) -> Runner {
        let mut r: Runner = serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": "ci", "uid": "u-1"}, "spec": {"connectionRef": {"name": "g"}, "runnerType": "instance_type"}})).unwrap();
        r.spec.maintenance_note = note.map(str::to_string);
        r
    }

    #[test]
    fn tags_compare_as_gitlab_stores_them() {
        let spec = vec![
            " linux".to_string(),
            "docker,arm64 ".into(),
            ",".into(),
            "linux".into(),
        ];
        assert_eq!(
            gitlab_tags(&spec),
            ["arm64", "docker", "linux"].map(String::from).into()
        );
    }

    #[test]
    fn marker_round_trip() {
        let r = runner(Some("owned by team a"));
        let note = note_with_marker(&r);
        assert!(
            note.starts_with(
                "owned by team a\n\n[runner-operator: managed by Runner ci/r, uid u-1]"
            )
        );
        assert!(carries_marker(Some(&note), &r));
        assert_eq!(
            marker_owner(Some(&note)),
            Some(("ci".into(), "r".into(), "u-1".into()))
        );
        let mut other = runner(None);
        other.metadata.uid = Some("u-2".into());
        assert!(!carries_marker(Some(&note), &other));
        assert!(!carries_marker(None, &r));
    }

    #[test]
    fn markers_are_stripped_for_import() {
        let r = runner(Some("Owned by the platform team"));
        assert_eq!(
            strip_marker(&note_with_marker(&r)),
            "Owned by the platform team"
        );
        assert_eq!(strip_marker(&note_with_marker(&runner(None))), "");
        assert_eq!(strip_marker("plain"), "plain");
    }

    #[test]
    fn long_notes_leave_room_for_the_marker() {
        let r = runner(Some(&"x".repeat(1024)));
        let note = note_with_marker(&r);
        assert_eq!(note.chars().count(), NOTE_LIMIT);
        assert!(carries_marker(Some(&note), &r));
    }
}
