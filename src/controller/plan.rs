//! The reconcile decision, as a pure function: (desired, observed, now) → steps.
//!
//! No I/O here; `reconcile.rs` observes and acts. Every rule users rely on is decided (and
//! tested) in this file.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::gitlab::{RunnerAttributes, RunnerDetails};

/// Why a token is (re)issued; recorded in status as `lastRotationReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Created,
    Interval,
    Expiry,
    Requested,
    Recovered,
    Adopted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "Created",
            Reason::Interval => "Interval",
            Reason::Expiry => "Expiry",
            Reason::Requested => "Requested",
            Reason::Recovered => "Recovered",
            Reason::Adopted => "Adopted",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::Created,
            Reason::Interval,
            Reason::Expiry,
            Reason::Requested,
            Reason::Recovered,
            Reason::Adopted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The runner fields as the spec wants them in GitLab (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredAttrs {
    pub description: String,
    pub tags: BTreeSet<String>,
    pub run_untagged: bool,
    pub paused: bool,
    pub locked: bool,
    pub access_level: String,
    pub maximum_timeout: Option<i64>,
    /// The user's note plus our ownership marker.
    pub maintenance_note: String,
}

impl DesiredAttrs {
    /// Everything, for a create.
    pub fn all(&self) -> RunnerAttributes {
        RunnerAttributes {
            description: Some(self.description.clone()),
            paused: Some(self.paused),
            tag_list: Some(self.tags.iter().cloned().collect()),
            run_untagged: Some(self.run_untagged),
            locked: Some(self.locked),
            access_level: Some(self.access_level.clone()),
            maximum_timeout: self.maximum_timeout.map(Some),
            maintenance_note: Some(self.maintenance_note.clone()),
        }
    }

    /// The same fields as GitLab holds them, GitLab's defaults filled in where it omits one.
    pub fn seen(d: &RunnerDetails) -> DesiredAttrs {
        DesiredAttrs {
            description: d.description.clone().unwrap_or_default(),
            tags: d.tag_list.iter().cloned().collect(),
            run_untagged: d.run_untagged.unwrap_or(true),
            paused: d.is_paused(),
            locked: d.locked.unwrap_or(false),
            access_level: d
                .access_level
                .clone()
                .unwrap_or_else(|| "not_protected".into()),
            maximum_timeout: d.maximum_timeout,
            maintenance_note: d.maintenance_note.clone().unwrap_or_default(),
        }
    }

    /// Only what differs from GitLab's view (tags as a set, unset timeout = null).
    pub fn diff(&self, seen: &RunnerDetails) -> RunnerAttributes {
        let seen = DesiredAttrs::seen(seen);
        RunnerAttributes {
            description: (seen.description != self.description).then(|| self.description.clone()),
            paused: (seen.paused != self.paused).then_some(self.paused),
            tag_list: (seen.tags != self.tags).then(|| self.tags.iter().cloned().collect()),
            run_untagged: (seen.run_untagged != self.run_untagged).then_some(self.run_untagged),
            locked: (seen.locked != self.locked).then_some(self.locked),
            access_level: (seen.access_level != self.access_level)
                .then(|| self.access_level.clone()),
            maximum_timeout: (seen.maximum_timeout != self.maximum_timeout)
                .then_some(self.maximum_timeout),
            maintenance_note: (seen.maintenance_note != self.maintenance_note)
                .then(|| self.maintenance_note.clone()),
        }
    }
}

/// One field an update changes, in the spec's casing; `before` is None when GitLab's value is
/// not known. Values are JSON as the spec writes them (an unset timeout is null).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: Option<serde_json::Value>,
    pub after: serde_json::Value,
}

impl FieldChange {
    /// `field: before → after`, long texts shortened.
    pub fn text(&self) -> String {
        let before = self.before.as_ref().map_or("?".to_string(), show);
        format!("{}: {before} → {}", self.field, show(&self.after))
    }
}

fn show(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".into(),
        Value::String(s) => {
            let one_line = s.replace('\n', " ");
            if one_line.chars().count() > 40 {
                format!("{:?}", one_line.chars().take(39).collect::<String>() + "…")
            } else {
                format!("{one_line:?}")
            }
        }
        Value::Array(items) => {
            let mut t: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect();
            t.sort();
            format!("[{}]", t.join(", "))
        }
        other => other.to_string(),
    }
}

/// The fields an update changes, before and after, in a fixed order.
pub fn field_changes(seen: Option<&RunnerDetails>, a: &RunnerAttributes) -> Vec<FieldChange> {
    use serde_json::{Value, json};
    let seen = seen.map(DesiredAttrs::seen);
    let mut out = vec![];
    let mut push = |field, before: &dyn Fn(&DesiredAttrs) -> Value, after: Value| {
        out.push(FieldChange {
            field,
            before: seen.as_ref().map(before),
            after,
        })
    };
    let sorted = |t: &mut Vec<String>| {
        t.sort();
        json!(t)
    };
    if let Some(v) = &a.description {
        push("description", &|d| json!(d.description), json!(v));
    }
    if let Some(v) = a.paused {
        push("paused", &|d| json!(d.paused), json!(v));
    }
    if let Some(v) = &a.tag_list {
        let after = sorted(&mut v.clone());
        push("tags", &|d| json!(d.tags), after);
    }
    if let Some(v) = a.run_untagged {
        push("runUntagged", &|d| json!(d.run_untagged), json!(v));
    }
    if let Some(v) = a.locked {
        push("locked", &|d| json!(d.locked), json!(v));
    }
    if let Some(v) = &a.access_level {
        push("accessLevel", &|d| json!(d.access_level), json!(v));
    }
    if let Some(v) = a.maximum_timeout {
        push("maximumTimeout", &|d| json!(d.maximum_timeout), json!(v));
    }
    if let Some(v) = &a.maintenance_note {
        push("maintenanceNote", &|d| json!(d.maintenance_note), json!(v));
    }
    out
}

/// The fields an update changes, each as `field: before → after` (long texts shortened), so
/// an event says exactly what moved — "my description disappeared" has an answer.
pub fn describe_changes(seen: Option<&RunnerDetails>, a: &RunnerAttributes) -> String {
    field_changes(seen, a)
        .iter()
        .map(FieldChange::text)
        .collect::<Vec<_>>()
        .join("; ")
}

/// When tokens rotate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RotationPolicy {
    pub interval: Option<Duration>,
    /// Default: a third of the token's lifetime.
    pub before_expiry: Option<Duration>,
}

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub attrs: DesiredAttrs,
    /// Resolved ids of `assignedProjects` (project runners only).
    pub assigned: BTreeSet<i64>,
    pub is_project_runner: bool,
    pub rotation: RotationPolicy,
    /// Value of the rotate-token annotation, if any.
    pub rotate_request: Option<String>,
    pub adopt: Option<i64>,
}

/// GitLab's side.
#[derive(Debug, Clone, PartialEq)]
pub enum GitLabState {
    /// No runner known for this object (and none carrying our marker).
    Unknown,
    /// The recorded runner answered 404.
    Gone,
    /// Our runner (carries our marker, or is the one `adopt` names).
    Present(Box<RunnerDetails>),
    /// The runner exists but carries no marker of ours.
    NotOurs(Box<RunnerDetails>),
}

/// The token Secret as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    /// Holds the token we issued (hash matches).
    Valid,
    /// Absent.
    Missing,
    /// Ours, but its token is not the one we issued (edited by hand).
    Tampered,
    /// A Secret of that name we do not own: never overwritten.
    Foreign,
}

/// The token's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenState {
    pub secret: SecretState,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// A rotation recorded in status but not known to have reached the Secret.
    pub pending: Option<Reason>,
    /// The rotate-token annotation value already handled.
    pub handled_request: Option<String>,
}

/// One step of the plan, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Register a new runner (`recreated`: the old one vanished from GitLab).
    Create { recreated: bool },
    /// Take over an existing runner by id (resets its token).
    Adopt(i64),
    /// `PUT /runners/:id` with these fields.
    Update {
        runner: i64,
        attrs: RunnerAttributes,
    },
    /// Assign the runner to one more project.
    Assign { runner: i64, project: i64 },
    /// Remove the runner from a project.
    Unassign { runner: i64, project: i64 },
    /// Reset the runner's token and write the Secret.
    RotateToken { runner: i64, reason: Reason },
    /// Something blocks progress; nothing is done in GitLab about it.
    Blocked {
        reason: &'static str,
        message: String,
    },
}

/// The whole decision.
pub fn plan(
    desired: &Desired,
    gitlab: &GitLabState,
    token: &TokenState,
    now: Timestamp,
) -> Vec<Step> {
    let mut steps = vec![];
    if token.secret == SecretState::Foreign
        && matches!(gitlab, GitLabState::Unknown | GitLabState::Gone)
    {
        // A token would have nowhere to go: nothing is created or adopted.
        return vec![secret_not_owned()];
    }
    let runner = match gitlab {
        GitLabState::Unknown => {
            steps.push(match desired.adopt {
                Some(id) => Step::Adopt(id),
                None => Step::Create { recreated: false },
            });
            return steps;
        }
        GitLabState::Gone => {
            steps.push(Step::Create { recreated: true });
            return steps;
        }
        GitLabState::NotOurs(r) if desired.adopt == Some(r.id) => {
            if token.secret == SecretState::Foreign {
                return vec![secret_not_owned()];
            }
            // Take it, bring its fields to the spec (nothing, when they match), then reset
            // the token: GitLab never reveals the current one.
            steps.push(Step::Adopt(r.id));
            let taken = TokenState {
                secret: SecretState::Valid,
                pending: Some(Reason::Adopted),
                ..token.clone()
            };
            steps.extend(plan(desired, &GitLabState::Present(r.clone()), &taken, now));
            return steps;
        }
        GitLabState::NotOurs(r) => {
            steps.push(Step::Blocked {
                reason: "RunnerNotOwned",
                message: format!(
                    "GitLab runner {} does not carry this Runner's ownership marker (another Runner or a person manages it); nothing is changed. Set spec.adopt.runnerId: {} to take it over (its token is reset)",
                    r.id, r.id
                ),
            });
            return steps;
        }
        GitLabState::Present(r) => r,
    };

    // Assignments: owner project first in GitLab's list, never unassigned.
    let current: BTreeSet<i64> = runner.projects.iter().skip(1).map(|p| p.id).collect();
    let (to_assign, to_unassign): (Vec<i64>, Vec<i64>) = if desired.is_project_runner {
        (
            desired.assigned.difference(&current).copied().collect(),
            current.difference(&desired.assigned).copied().collect(),
        )
    } else {
        (vec![], vec![])
    };
    let update = desired.attrs.diff(runner);
    if to_assign.is_empty() && to_unassign.is_empty() {
        if !update.is_empty() {
            steps.push(Step::Update {
                runner: runner.id,
                attrs: update,
            });
        }
    } else {
        // GitLab refuses (un)assigning a locked runner to non-admins: unlock, change, lock again.
        let locked_now = runner.locked.unwrap_or(false);
        let before = RunnerAttributes {
            locked: locked_now.then_some(false),
            ..update
        };
        if !before.is_empty() {
            steps.push(Step::Update {
                runner: runner.id,
                attrs: before,
            });
        }
        let id = runner.id;
        steps.extend(to_assign.into_iter().map(|project| Step::Assign {
            runner: id,
            project,
        }));
        steps.extend(to_unassign.into_iter().map(|project| Step::Unassign {
            runner: id,
            project,
        }));
        if desired.attrs.locked {
            steps.push(Step::Update {
                runner: runner.id,
                attrs: RunnerAttributes {
                    locked: Some(true),
                    ..Default::default()
                },
            });
        }
    }

    if let Some(step) = token_step(runner.id, desired, token, now) {
        steps.push(step);
    }
    steps
}

fn secret_not_owned() -> Step {
    Step::Blocked {
        reason: "SecretNotOwned",
        message: "a Secret with the token Secret's name exists and is not owned by this Runner; it is never overwritten, so no token is written to it (and no runner created or adopted for it). Delete it or set spec.tokenSecret.name".into(),
    }
}

fn token_step(runner: i64, desired: &Desired, token: &TokenState, now: Timestamp) -> Option<Step> {
    let rotate = |reason| Some(Step::RotateToken { runner, reason });
    match token.secret {
        SecretState::Foreign => return Some(secret_not_owned()),
        SecretState::Missing | SecretState::Tampered => return rotate(Reason::Recovered),
        SecretState::Valid => {}
    }
    if let Some(reason) = token.pending {
        return rotate(reason);
    }
    if desired.rotate_request.is_some() && desired.rotate_request != token.handled_request {
        return rotate(Reason::Requested);
    }
    if let Some(deadline) = next_rotation(&desired.rotation, token.issued_at, token.expires_at)
        && deadline.1 <= now
    {
        return rotate(deadline.0);
    }
    None
}

/// When the next scheduled rotation is due, and why: the earlier of interval and expiry window.
pub fn next_rotation(
    policy: &RotationPolicy,
    issued_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
) -> Option<(Reason, Timestamp)> {
    let by_interval = match (policy.interval, issued_at) {
        (Some(i), Some(issued)) => issued
            .checked_add(signed(i))
            .ok()
            .map(|t| (Reason::Interval, t)),
        _ => None,
    };
    let by_expiry = expires_at.map(|exp| {
        let lifetime = issued_at
            .map(|i| exp.duration_since(i).as_secs_f64().max(0.0))
            .unwrap_or(0.0);
        let window = policy
            .before_expiry
            .map(|d| d.as_secs_f64())
            .unwrap_or(lifetime / 3.0);
        // Never rotate sooner than a tenth of the lifetime: a short-lived token must not loop.
        let window = window.min(lifetime * 0.9).max(0.0);
        let at = exp
            .checked_sub(signed(Duration::from_secs_f64(window)))
            .unwrap_or(exp);
        (Reason::Expiry, at)
    });
    match (by_interval, by_expiry) {
        (Some(a), Some(b)) => Some(if a.1 <= b.1 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn signed(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::ProjectRef;

    #[test]
    fn changes_are_described_before_and_after() {
        let mut hand_made = seen(&[1]);
        hand_made.description = Some("Hand-written by the platform team".into());
        hand_made.tag_list = vec!["linux".into()];
        hand_made.maximum_timeout = Some(3600);
        let mut want = attrs();
        want.description = String::new();
        want.tags = ["docker".to_string(), "linux".to_string()].into();
        let diff = want.diff(&hand_made);
        let text = describe_changes(Some(&hand_made), &diff);
        assert!(
            text.contains(r#"description: "Hand-written by the platform team" → """#),
            "{text}"
        );
        assert!(text.contains("tags: [linux] → [docker, linux]"), "{text}");
        assert!(text.contains("maximumTimeout: 3600 → none"), "{text}");
        assert!(!text.contains("paused"), "only what changes: {text}");
        let long = RunnerAttributes {
            maintenance_note: Some("x".repeat(100)),
            ..Default::default()
        };
        let text = describe_changes(None, &long);
        assert!(
            text.starts_with("maintenanceNote: ? → \"xxx") && text.ends_with("…\""),
            "{text}"
        );
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn attrs() -> DesiredAttrs {
        DesiredAttrs {
            description: "d".into(),
            tags: ["a".to_string(), "b".to_string()].into(),
            run_untagged: false,
            paused: false,
            locked: false,
            access_level: "not_protected".into(),
            maximum_timeout: None,
            maintenance_note: "note\n[marker]".into(),
        }
    }

    fn desired() -> Desired {
        Desired {
            attrs: attrs(),
            assigned: BTreeSet::new(),
            is_project_runner: true,
            rotation: RotationPolicy::default(),
            rotate_request: None,
            adopt: None,
        }
    }

    fn seen(projects: &[i64]) -> RunnerDetails {
        RunnerDetails {
            id: 7,
            description: Some("d".into()),
            paused: Some(false),
            active: Some(true),
            runner_type: "project_type".into(),
            online: None,
            status: Some("never_contacted".into()),
            tag_list: vec!["b".into(), "a".into()],
            run_untagged: Some(false),
            locked: Some(false),
            maximum_timeout: None,
            access_level: Some("not_protected".into()),
            contacted_at: None,
            maintenance_note: Some("note\n[marker]".into()),
            projects: projects
                .iter()
                .map(|id| ProjectRef {
                    id: *id,
                    name: None,
                    path_with_namespace: None,
                })
                .collect(),
            groups: vec![],
            version: None,
            created_at: None,
            token_expires_at: None,
        }
    }

    fn token() -> TokenState {
        TokenState {
            secret: SecretState::Valid,
            issued_at: Some(t(0)),
            expires_at: None,
            pending: None,
            handled_request: None,
        }
    }

    fn present(r: RunnerDetails) -> GitLabState {
        GitLabState::Present(Box::new(r))
    }

    #[test]
    fn steady_state_does_nothing() {
        assert_eq!(
            plan(&desired(), &present(seen(&[1])), &token(), t(10)),
            vec![]
        );
    }

    #[test]
    fn unknown_creates_or_adopts() {
        assert_eq!(
            plan(&desired(), &GitLabState::Unknown, &token(), t(0)),
            vec![Step::Create { recreated: false }]
        );
        let mut d = desired();
        d.adopt = Some(42);
        assert_eq!(
            plan(&d, &GitLabState::Unknown, &token(), t(0)),
            vec![Step::Adopt(42)]
        );
    }

    #[test]
    fn gone_is_recreated() {
        assert_eq!(
            plan(&desired(), &GitLabState::Gone, &token(), t(0)),
            vec![Step::Create { recreated: true }]
        );
    }

    #[test]
    fn foreign_runner_is_never_touched_unless_adopted() {
        let steps = plan(
            &desired(),
            &GitLabState::NotOurs(Box::new(seen(&[1]))),
            &token(),
            t(0),
        );
        assert!(matches!(
            &steps[..],
            [Step::Blocked {
                reason: "RunnerNotOwned",
                ..
            }]
        ));
        let mut d = desired();
        d.adopt = Some(7);
        let not_ours = GitLabState::NotOurs(Box::new(seen(&[1])));
        // Fields that match cost nothing: the token reset is the only write.
        assert_eq!(
            plan(&d, &not_ours, &token(), t(0)),
            vec![
                Step::Adopt(7),
                Step::RotateToken {
                    runner: 7,
                    reason: Reason::Adopted
                }
            ]
        );
        // Even without a Secret yet, the reset is the adoption's.
        let missing = TokenState {
            secret: SecretState::Missing,
            issued_at: None,
            ..token()
        };
        assert_eq!(
            plan(&d, &not_ours, &missing, t(0)),
            vec![
                Step::Adopt(7),
                Step::RotateToken {
                    runner: 7,
                    reason: Reason::Adopted
                }
            ]
        );
        // What differs is changed before the reset.
        d.attrs.description = "from the spec".into();
        assert_eq!(
            plan(&d, &not_ours, &token(), t(0)),
            vec![
                Step::Adopt(7),
                Step::Update {
                    runner: 7,
                    attrs: RunnerAttributes {
                        description: Some("from the spec".into()),
                        ..Default::default()
                    }
                },
                Step::RotateToken {
                    runner: 7,
                    reason: Reason::Adopted
                }
            ]
        );
        // A Secret of that name we do not own: nothing is taken.
        let foreign = TokenState {
            secret: SecretState::Foreign,
            ..token()
        };
        assert!(matches!(
            &plan(&d, &not_ours, &foreign, t(0))[..],
            [Step::Blocked {
                reason: "SecretNotOwned",
                ..
            }]
        ));
    }

    #[test]
    fn only_differing_fields_are_sent() {
        let mut r = seen(&[1]);
        r.tag_list = vec!["a".into(), "b".into(), "c".into()];
        r.paused = Some(true);
        r.maximum_timeout = Some(3600);
        let steps = plan(&desired(), &present(r), &token(), t(0));
        assert_eq!(
            steps,
            vec![Step::Update {
                runner: 7,
                attrs: RunnerAttributes {
                    paused: Some(false),
                    tag_list: Some(vec!["a".into(), "b".into()]),
                    maximum_timeout: Some(None),
                    ..Default::default()
                }
            }]
        );
    }

    #[test]
    fn every_field_is_compared() {
        type Case = (fn(&mut RunnerDetails), RunnerAttributes);
        let cases: Vec<Case> = vec![
            (
                |r| r.description = Some("x".into()),
                RunnerAttributes {
                    description: Some("d".into()),
                    ..Default::default()
                },
            ),
            (
                |r| r.run_untagged = Some(true),
                RunnerAttributes {
                    run_untagged: Some(false),
                    ..Default::default()
                },
            ),
            (
                |r| r.locked = Some(true),
                RunnerAttributes {
                    locked: Some(false),
                    ..Default::default()
                },
            ),
            (
                |r| r.access_level = Some("ref_protected".into()),
                RunnerAttributes {
                    access_level: Some("not_protected".into()),
                    ..Default::default()
                },
            ),
            (
                |r| r.maintenance_note = Some("hand edit".into()),
                RunnerAttributes {
                    maintenance_note: Some("note\n[marker]".into()),
                    ..Default::default()
                },
            ),
            (|r| r.paused = None, RunnerAttributes::default()),
        ];
        for (change, want) in cases {
            let mut r = seen(&[1]);
            change(&mut r);
            let steps = plan(&desired(), &present(r), &token(), t(0));
            let expected = if want.is_empty() {
                vec![]
            } else {
                vec![Step::Update {
                    runner: 7,
                    attrs: want,
                }]
            };
            assert_eq!(steps, expected);
        }
        // Tag order and null description vs "" are not differences.
        let mut d = desired();
        d.attrs.description = String::new();
        let mut r = seen(&[1]);
        r.description = None;
        r.tag_list = vec!["b".into(), "a".into()];
        assert_eq!(plan(&d, &present(r), &token(), t(0)), vec![]);
    }

    #[test]
    fn assignments_follow_the_spec_and_spare_the_owner() {
        let mut d = desired();
        d.assigned = [2, 3].into();
        let steps = plan(&d, &present(seen(&[1, 3, 4])), &token(), t(0));
        assert_eq!(
            steps,
            vec![
                Step::Assign {
                    runner: 7,
                    project: 2
                },
                Step::Unassign {
                    runner: 7,
                    project: 4
                }
            ]
        );
        // The owner (first) is never unassigned even when listed nowhere.
        d.assigned = BTreeSet::new();
        assert_eq!(plan(&d, &present(seen(&[1])), &token(), t(0)), vec![]);
    }

    #[test]
    fn group_and_instance_runners_are_never_assigned() {
        let mut d = desired();
        d.is_project_runner = false;
        d.assigned = [5].into();
        assert_eq!(plan(&d, &present(seen(&[])), &token(), t(0)), vec![]);
    }

    #[test]
    fn locked_runners_are_unlocked_around_assignment() {
        let mut d = desired();
        d.assigned = [2].into();
        d.attrs.locked = true;
        let mut r = seen(&[1]);
        r.locked = Some(true);
        assert_eq!(
            plan(&d, &present(r), &token(), t(0)),
            vec![
                Step::Update {
                    runner: 7,
                    attrs: RunnerAttributes {
                        locked: Some(false),
                        ..Default::default()
                    }
                },
                Step::Assign {
                    runner: 7,
                    project: 2
                },
                Step::Update {
                    runner: 7,
                    attrs: RunnerAttributes {
                        locked: Some(true),
                        ..Default::default()
                    }
                },
            ]
        );
        // Locking requested together with a new assignment: assign first, lock after.
        let steps = plan(&d, &present(seen(&[1])), &token(), t(0));
        assert_eq!(
            steps,
            vec![
                Step::Assign {
                    runner: 7,
                    project: 2
                },
                Step::Update {
                    runner: 7,
                    attrs: RunnerAttributes {
                        locked: Some(true),
                        ..Default::default()
                    }
                }
            ]
        );
    }

    #[test]
    fn token_recovery_and_foreign_secrets() {
        for (secret, want) in [
            (
                SecretState::Missing,
                Some(Step::RotateToken {
                    runner: 7,
                    reason: Reason::Recovered,
                }),
            ),
            (
                SecretState::Tampered,
                Some(Step::RotateToken {
                    runner: 7,
                    reason: Reason::Recovered,
                }),
            ),
            (SecretState::Valid, None),
        ] {
            let mut tk = token();
            tk.secret = secret;
            assert_eq!(
                plan(&desired(), &present(seen(&[1])), &tk, t(0)).pop(),
                want,
                "{secret:?}"
            );
        }
        let mut tk = token();
        tk.secret = SecretState::Foreign;
        assert!(matches!(
            plan(&desired(), &present(seen(&[1])), &tk, t(0)).as_slice(),
            [Step::Blocked {
                reason: "SecretNotOwned",
                ..
            }]
        ));
    }

    #[test]
    fn pending_rotation_is_redone() {
        let mut tk = token();
        tk.pending = Some(Reason::Interval);
        assert_eq!(
            plan(&desired(), &present(seen(&[1])), &tk, t(0)),
            vec![Step::RotateToken {
                runner: 7,
                reason: Reason::Interval
            }]
        );
    }

    #[test]
    fn rotation_on_request_once_per_value() {
        let mut d = desired();
        d.rotate_request = Some("2026-11-26".into());
        let mut tk = token();
        assert_eq!(
            plan(&d, &present(seen(&[1])), &tk, t(0)),
            vec![Step::RotateToken {
                runner: 7,
                reason: Reason::Requested
            }]
        );
        tk.handled_request = Some("2026-11-26".into());
        assert_eq!(plan(&d, &present(seen(&[1])), &tk, t(0)), vec![]);
    }

    #[test]
    fn rotation_by_interval_and_expiry() {
        let mut d = desired();
        d.rotation.interval = Some(Duration::from_secs(100));
        let tk = token();
        assert_eq!(plan(&d, &present(seen(&[1])), &tk, t(99)), vec![]);
        assert_eq!(
            plan(&d, &present(seen(&[1])), &tk, t(100)),
            vec![Step::RotateToken {
                runner: 7,
                reason: Reason::Interval
            }]
        );
        // Expiry: default window is a third of the lifetime (900 s → rotate at 600 s).
        let mut tk = token();
        tk.expires_at = Some(t(900));
        let d = desired();
        assert_eq!(plan(&d, &present(seen(&[1])), &tk, t(599)), vec![]);
        assert_eq!(
            plan(&d, &present(seen(&[1])), &tk, t(600)),
            vec![Step::RotateToken {
                runner: 7,
                reason: Reason::Expiry
            }]
        );
        // A window longer than the lifetime does not loop: capped at 90 % of it.
        let mut d = desired();
        d.rotation.before_expiry = Some(Duration::from_secs(10_000));
        assert_eq!(
            next_rotation(&d.rotation, tk.issued_at, tk.expires_at),
            Some((Reason::Expiry, t(90)))
        );
        // The earlier trigger wins.
        d.rotation.interval = Some(Duration::from_secs(50));
        assert_eq!(
            next_rotation(&d.rotation, tk.issued_at, tk.expires_at),
            Some((Reason::Interval, t(50)))
        );
    }
}
