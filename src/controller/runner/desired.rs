//! Spec → desired state: GitLab's fields as the spec wants them, the ownership marker, the
//! rotation policy, the token's bookkeeping from status.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::controller::error::Error;
use crate::controller::identity::{ClusterName, Marker};
use crate::controller::plan::{Desired, DesiredAttrs, RotationPolicy, SecretState, TokenState};
use crate::controller::reasons::RotationReason;
use crate::crd::{self, Runner, RunnerStatus, RunnerType};
use crate::gitlab::{RunnerDetails, RunnerId};

use super::{NOTE_LIMIT, ROTATE_ANNOTATION};

/// Ownership marker kept in the runner's maintenance note.
pub fn marker(runner: &Runner, cluster: Option<&ClusterName>) -> String {
    Marker {
        namespace: runner.namespace().unwrap_or_default(),
        name: runner.name_any(),
        uid: runner.meta().uid.clone().unwrap_or_default(),
        cluster: cluster.map(|c| c.to_string()),
    }
    .to_string()
}

/// The note names this Runner's uid (and no other cluster than this one).
pub(crate) fn carries_marker(
    note: Option<&str>,
    runner: &Runner,
    cluster: Option<&ClusterName>,
) -> bool {
    Marker::parse(note).is_some_and(|m| {
        Some(m.uid.as_str()) == runner.meta().uid.as_deref() && m.in_cluster(cluster)
    })
}

/// Whether a GitLab runner is this Runner's: it carries our marker, or this Runner has taken
/// it (its id is in status) as `spec.adopt` names it or from this cluster's earlier
/// incarnation of it. An adopted runner is not marked, so adopting a runner whose fields
/// already match the spec writes nothing but the token reset.
pub(crate) fn is_ours(
    d: &RunnerDetails,
    runner: &Runner,
    recorded: Option<RunnerId>,
    cluster: Option<&ClusterName>,
) -> bool {
    let taken = recorded == Some(d.id);
    carries_marker(d.maintenance_note.as_deref(), runner, cluster)
        || (taken && runner.spec.adopt.as_ref().map(|a| RunnerId(a.runner_id)) == Some(d.id))
        || (taken && is_predecessors(d, runner, cluster))
}

/// Marked by this cluster's earlier incarnation of this Runner (see `Marker::predecessor_of`).
pub(crate) fn is_predecessors(
    d: &RunnerDetails,
    runner: &Runner,
    cluster: Option<&ClusterName>,
) -> bool {
    Marker::parse(d.maintenance_note.as_deref()).is_some_and(|m| {
        m.predecessor_of(
            cluster,
            &runner.namespace().unwrap_or_default(),
            &runner.name_any(),
            runner.meta().uid.as_deref().unwrap_or_default(),
        )
    })
}

/// The user's note as GitLab should hold it: with our marker, except on adopted runners.
pub(crate) fn desired_note(runner: &Runner, cluster: Option<&ClusterName>) -> String {
    if runner.spec.adopt.is_some() {
        runner.spec.maintenance_note.clone().unwrap_or_default()
    } else {
        note_with_marker(runner, cluster)
    }
}

pub(crate) fn note_with_marker(runner: &Runner, cluster: Option<&ClusterName>) -> String {
    let m = marker(runner, cluster);
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

/// What the rounds work from, resolved once per pass.
pub(crate) struct Scope {
    pub(crate) owner_project: Option<i64>,
    pub(crate) owner_group: Option<i64>,
    pub(crate) desired: Desired,
    /// The spec did not change since the last pass: a difference in GitLab is drift.
    pub(crate) drift_possible: bool,
}

pub(crate) fn desired(
    runner: &Runner,
    assigned: BTreeSet<i64>,
    owner_project: Option<i64>,
    cluster: Option<&ClusterName>,
) -> Result<Desired, Error> {
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
            maintenance_note: desired_note(runner, cluster),
        },
        assigned,
        is_project_runner: s.runner_type == RunnerType::ProjectType,
        rotation: rotation_policy(runner)?,
        rotate_request: runner.annotations().get(ROTATE_ANNOTATION).cloned(),
        adopt: s.adopt.as_ref().map(|a| RunnerId(a.runner_id)),
        owner_project: owner_project
            .filter(|_| s.runner_type == RunnerType::ProjectType)
            .zip(s.project.clone()),
    })
}

/// The token's bookkeeping as status records it, with the Secret as observed.
pub(crate) fn token_state(status: &RunnerStatus, secret: SecretState) -> TokenState {
    TokenState {
        secret,
        issued_at: ts(status.token_issued_at.as_deref()),
        expires_at: ts(status.token_expires_at.as_deref()),
        pending: status
            .pending_rotation
            .as_deref()
            .and_then(RotationReason::parse),
        handled_request: status.handled_rotate_request.clone(),
    }
}

/// The token's expiry: GitLab's `GET /runners/:id` carries it only in recent versions; where
/// it does (a parseable time), it wins, else status keeps what the create or reset answered.
pub(crate) fn token_expiry(recorded: Option<&str>, from_get: Option<&str>) -> Option<String> {
    from_get
        .filter(|e| e.parse::<Timestamp>().is_ok())
        .or(recorded)
        .map(str::to_string)
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
    fn token_expiry_from_get_only_where_gitlab_sends_it() {
        let at = "2026-03-01T00:00:00.000Z";
        assert_eq!(token_expiry(Some(at), None).as_deref(), Some(at));
        assert_eq!(
            token_expiry(Some(at), Some("2026-02-01T00:00:00.000Z")).as_deref(),
            Some("2026-02-01T00:00:00.000Z")
        );
        assert_eq!(token_expiry(Some(at), Some("")).as_deref(), Some(at));
        assert_eq!(token_expiry(None, None), None);
    }

    #[test]
    fn marker_round_trip() {
        let r = runner(Some("owned by team a"));
        let note = note_with_marker(&r, None);
        assert!(
            note.starts_with(
                "owned by team a\n\n[runner-operator: managed by Runner ci/r, uid u-1]"
            )
        );
        assert!(carries_marker(Some(&note), &r, None));
        let mut other = runner(None);
        other.metadata.uid = Some("u-2".into());
        assert!(!carries_marker(Some(&note), &other, None));
        assert!(!carries_marker(None, &r, None));
    }

    #[test]
    fn markers_name_the_cluster_and_old_markers_stay_ours() {
        let (prod, staging) = ("prod".parse().unwrap(), "staging".parse().unwrap());
        let r = runner(None);
        let named = note_with_marker(&r, Some(&prod));
        assert_eq!(
            named,
            "[runner-operator: managed by Runner ci/r, uid u-1, cluster prod]"
        );
        assert!(carries_marker(Some(&named), &r, Some(&prod)));
        assert!(!carries_marker(Some(&named), &r, Some(&staging)));
        // Written before --cluster-name was set: still this Runner's (its uid decides).
        let unnamed = note_with_marker(&r, None);
        assert!(carries_marker(Some(&unnamed), &r, Some(&prod)));
    }

    #[test]
    fn long_notes_leave_room_for_the_marker() {
        let r = runner(Some(&"x".repeat(1024)));
        let note = note_with_marker(&r, None);
        assert_eq!(note.chars().count(), NOTE_LIMIT);
        assert!(carries_marker(Some(&note), &r, None));
    }
}
