//! The reconcile decision, as a pure function: (desired, observed, now) → steps.
//!
//! No I/O here: `runner/observe.rs` observes (for the controller and the `plan` command alike),
//! `runner/act.rs` carries out each step, `runner/converge.rs` runs the rounds. Every choice is
//! made in this file — what to create, adopt, take over, update, (un)assign or rotate, what
//! blocks, a spec GitLab shows cannot be met, the rotation shortcut, what a refused step means —
//! and each is tested in `tests.rs`.

use crate::controller::identity;
use crate::controller::reasons::{Reason, RotationReason};
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::gitlab::{RunnerAttributes, RunnerDetails, RunnerId};

mod attrs;
#[cfg(test)]
mod tests;

pub use attrs::*;

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
    pub adopt: Option<RunnerId>,
    /// A project runner's owner project: its id and spec.project as written.
    pub owner_project: Option<(i64, String)>,
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
    /// Marked by this cluster's earlier incarnation of the Runner (same cluster name,
    /// namespace and name; that uid is gone from the cluster): taken over, not registered
    /// again.
    Predecessor(Box<RunnerDetails>),
    /// The runner `spec.adopt` names, managed by another live Runner: never adopted.
    Claimed(Box<RunnerDetails>, Claimant),
}

/// Who manages a runner besides this Runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimant {
    /// A Runner of this cluster (`namespace/name`) that marked it or recorded it in status.
    Runner(String),
    /// A Runner (`namespace/name`) of another cluster, by its marker.
    OtherCluster { runner: String, cluster: String },
}

impl Claimant {
    /// The Runner of another cluster that `m` names, if it names one.
    pub fn other_cluster(
        m: &identity::Marker,
        cluster: Option<&identity::ClusterName>,
    ) -> Option<Self> {
        (!m.in_cluster(cluster)).then(|| Claimant::OtherCluster {
            runner: m.path(),
            cluster: m.cluster.clone().unwrap_or_default(),
        })
    }
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
    /// Labelled as this Runner's token Secret but owned by no live object (restored from a
    /// backup, with `--cluster-name` set); `live`: GitLab accepts its token for the runner it
    /// names. Kept when live, overwritten only when dead.
    Restored { live: bool },
}

/// The token's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenState {
    pub secret: SecretState,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// A rotation recorded in status but not known to have reached the Secret.
    pub pending: Option<RotationReason>,
    /// The rotate-token annotation value already handled.
    pub handled_request: Option<String>,
}

/// One step of the plan, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Register a new runner (`recreated`: the old one vanished from GitLab).
    Create { recreated: bool },
    /// Take over an existing runner by id (resets its token).
    Adopt(RunnerId),
    /// Record a runner left by this cluster's earlier incarnation of the Runner as this one's;
    /// `keep_token`: write the restored Secret's token (GitLab accepts it) as ours, else a
    /// token reset follows.
    TakeOver { runner: RunnerId, keep_token: bool },
    /// `PUT /runners/:id` with these fields.
    Update {
        runner: RunnerId,
        attrs: RunnerAttributes,
    },
    /// Assign the runner to one more project.
    Assign { runner: RunnerId, project: i64 },
    /// Remove the runner from a project.
    Unassign { runner: RunnerId, project: i64 },
    /// Reset the runner's token and write the Secret.
    RotateToken {
        runner: RunnerId,
        reason: RotationReason,
    },
    /// Something blocks progress; nothing is done in GitLab about it.
    Blocked { reason: Reason, message: String },
    /// GitLab shows the spec cannot be met as written (a project it names is gone): the
    /// project and group ids resolved for it are forgotten, and the pass fails with
    /// InvalidSpec.
    Invalid { message: String },
}

/// A pass that only has to handle a new rotate-token request (nothing else changed since a
/// pass found GitLab matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// The request was handled already: nothing to do.
    Done,
    /// Reset the recorded runner's token without reading it first (a runner gone meanwhile
    /// answers 404: then observe everything).
    Rotate(RunnerId),
    /// Observe and plan everything.
    Full,
}

/// Whether a pass can take the rotation shortcut.
pub fn shortcut(
    rotation_only: bool,
    recorded: Option<RunnerId>,
    request: Option<&str>,
    handled: Option<&str>,
) -> Shortcut {
    match recorded {
        Some(_) if rotation_only && (request.is_none() || request == handled) => Shortcut::Done,
        Some(id) if rotation_only => Shortcut::Rotate(id),
        _ => Shortcut::Full,
    }
}

/// What a step's failure means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// GitLab is already where the step would take it.
    Done,
    /// The spec cannot be met as written (see `Step::Invalid`).
    Invalid(String),
    /// An error to report and retry.
    Error,
}

/// The meaning of GitLab's refusal of a step (`message`: GitLab's words).
pub fn on_failure(
    step: &Step,
    kind: crate::gitlab::ErrorKind,
    refusal: Option<crate::gitlab::Refusal>,
    message: Option<&str>,
) -> Failure {
    use crate::gitlab::{ErrorKind, Refusal};
    match (step, kind) {
        (Step::Assign { .. }, _) if refusal == Some(Refusal::AlreadyAssigned) => Failure::Done,
        // The project is gone (or hidden): the ids recorded for the spec's paths are stale.
        (Step::Assign { project, .. }, ErrorKind::NotFound) => Failure::Invalid(format!(
            "project {project} of spec.assignedProjects no longer exists in GitLab, or the token's user cannot see it ({}): remove it from spec.assignedProjects, or fix the path",
            message.unwrap_or("404")
        )),
        (Step::Unassign { .. }, ErrorKind::NotFound) => Failure::Done,
        _ => Failure::Error,
    }
}

/// Why an update is made (its event says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Only the ownership marker changes (a cluster name written in, a takeover): no drift.
    Marker,
    /// The spec did not change since the last pass, yet GitLab differs: someone changed it.
    Drift,
    /// The spec changed, or the lock is lifted or restored around an assignment.
    Spec,
}

/// What `attrs` (an Update step) does to the runner as it was (`before`); `spec_unchanged`: the
/// Runner's generation is the one the last pass observed.
pub fn update_kind(
    before: Option<&RunnerDetails>,
    attrs: &RunnerAttributes,
    spec_unchanged: bool,
) -> UpdateKind {
    let note_only = *attrs
        == RunnerAttributes {
            maintenance_note: attrs.maintenance_note.clone(),
            ..Default::default()
        };
    let old_note = before.and_then(|d| d.maintenance_note.as_deref());
    let same_text = attrs.maintenance_note.as_deref().map(identity::strip)
        == Some(identity::strip(old_note.unwrap_or_default()));
    if note_only && same_text {
        UpdateKind::Marker
    } else if spec_unchanged && attrs.locked.is_none() {
        UpdateKind::Drift
    } else {
        UpdateKind::Spec
    }
}

/// GitLab moves a runner to its oldest other project when its owner project is deleted: no
/// drift to revert, and the spec cannot be met as written.
fn owner_moved(desired: &Desired, gitlab: &GitLabState) -> Option<Step> {
    let (GitLabState::Present(d), Some((want, path))) = (gitlab, &desired.owner_project) else {
        return None;
    };
    let owner = d.projects.first().filter(|o| o.id != *want)?;
    Some(Step::Invalid {
        message: format!(
            "GitLab now lists project {} ({}) as the owner of runner {}, not project {want} of spec.project {path:?} (deleted?); recreate this Runner with spec.project set to an existing project, or delete the Runner",
            owner.id,
            owner.path_with_namespace.as_deref().unwrap_or("?"),
            d.id,
        ),
    })
}

fn claimed(id: RunnerId, by: &Claimant) -> Step {
    Step::Blocked {
        reason: Reason::RunnerClaimed,
        message: match by {
            Claimant::Runner(who) => format!(
                "GitLab runner {id} is managed by Runner {who}; it is not adopted. Delete that Runner with deletionPolicy: Orphan first"
            ),
            Claimant::OtherCluster { runner, cluster } => format!(
                "GitLab runner {id} is managed by Runner {runner} of cluster {cluster}; it is not adopted. Delete that Runner with deletionPolicy: Orphan in that cluster, or remove the marker from the runner's maintenance note, first"
            ),
        },
    }
}

/// The whole decision.
pub fn plan(
    desired: &Desired,
    gitlab: &GitLabState,
    token: &TokenState,
    now: Timestamp,
) -> Vec<Step> {
    if let Some(invalid) = owner_moved(desired, gitlab) {
        return vec![invalid];
    }
    steps(desired, gitlab, token, now)
}

fn steps(desired: &Desired, gitlab: &GitLabState, token: &TokenState, now: Timestamp) -> Vec<Step> {
    let mut steps = vec![];
    if token.secret == SecretState::Foreign
        && matches!(
            gitlab,
            GitLabState::Unknown | GitLabState::Gone | GitLabState::Predecessor(_)
        )
    {
        // A token would have nowhere to go: nothing is created, adopted or taken over.
        return vec![secret_not_owned()];
    }
    let mut token = token.clone();
    token.secret = match (token.secret, gitlab) {
        // The runner a restored Secret names is gone or not this Runner's to find: its token
        // is dead, the Secret ours to overwrite.
        (SecretState::Restored { .. }, GitLabState::Unknown | GitLabState::Gone) => {
            SecretState::Missing
        }
        (SecretState::Restored { live: false }, _) => SecretState::Tampered,
        (s, _) => s,
    };
    let token = &token;
    let runner = match gitlab {
        GitLabState::Predecessor(r) => {
            // The same Runner, rebuilt: its runner, its token when GitLab still accepts it.
            let keep = matches!(
                token.secret,
                SecretState::Valid | SecretState::Restored { live: true }
            );
            steps.push(Step::TakeOver {
                runner: r.id,
                keep_token: keep,
            });
            let taken = TokenState {
                secret: SecretState::Valid,
                pending: (!keep).then_some(RotationReason::TakenOver),
                ..token.clone()
            };
            steps.extend(self::steps(
                desired,
                &GitLabState::Present(r.clone()),
                &taken,
                now,
            ));
            return steps;
        }
        GitLabState::Present(r) if token.secret == (SecretState::Restored { live: true }) => {
            // Ours, with a restored Secret GitLab accepts: the Secret becomes ours again.
            steps.push(Step::TakeOver {
                runner: r.id,
                keep_token: true,
            });
            let kept = TokenState {
                secret: SecretState::Valid,
                ..token.clone()
            };
            steps.extend(self::steps(desired, gitlab, &kept, now));
            return steps;
        }
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
        GitLabState::Claimed(r, by) => return vec![claimed(r.id, by)],
        GitLabState::NotOurs(r) if desired.adopt == Some(r.id) => {
            if token.secret == SecretState::Foreign {
                return vec![secret_not_owned()];
            }
            // Take it, bring its fields to the spec (nothing, when they match), then reset
            // the token: GitLab never reveals the current one.
            steps.push(Step::Adopt(r.id));
            let taken = TokenState {
                secret: SecretState::Valid,
                pending: Some(RotationReason::Adopted),
                ..token.clone()
            };
            steps.extend(self::steps(
                desired,
                &GitLabState::Present(r.clone()),
                &taken,
                now,
            ));
            return steps;
        }
        GitLabState::NotOurs(r) => {
            steps.push(Step::Blocked {
                reason: Reason::RunnerNotOwned,
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
        reason: Reason::SecretNotOwned,
        message: "a Secret with the token Secret's name exists and is not owned by this Runner; it is never overwritten, so no token is written to it (and no runner created or adopted for it). Delete it or set spec.tokenSecret.name".into(),
    }
}

fn token_step(
    runner: RunnerId,
    desired: &Desired,
    token: &TokenState,
    now: Timestamp,
) -> Option<Step> {
    let rotate = |reason| Some(Step::RotateToken { runner, reason });
    match token.secret {
        SecretState::Foreign => return Some(secret_not_owned()),
        SecretState::Missing | SecretState::Tampered | SecretState::Restored { .. } => {
            return rotate(RotationReason::Recovered);
        }
        SecretState::Valid => {}
    }
    if let Some(reason) = token.pending {
        return rotate(reason);
    }
    if desired.rotate_request.is_some() && desired.rotate_request != token.handled_request {
        return rotate(RotationReason::Requested);
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
) -> Option<(RotationReason, Timestamp)> {
    let by_interval = match (policy.interval, issued_at) {
        (Some(i), Some(issued)) => issued
            .checked_add(signed(i))
            .ok()
            .map(|t| (RotationReason::Interval, t)),
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
        (RotationReason::Expiry, at)
    });
    match (by_interval, by_expiry) {
        (Some(a), Some(b)) => Some(if a.1 <= b.1 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn signed(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}
