//! kstatus' view of an object, derived from its Ready condition: `Stalled=True` when only a
//! person can move it on, `Reconciling=True` while the operator retries by itself (Flux, kpt,
//! Config Sync and cli-utils read these; kstatus reports Failed and InProgress from them).
//! Argo CD's health script (deploy/argocd/health.lua) reads the same two conditions, and its
//! fallback list of transient reasons is this module's `TRANSIENT` (a test keeps them equal).
//!
//! Both are present only while True ("abnormal-true" polarity): kstatus takes an absent one as
//! False, and a status with nothing wrong stays as short as before.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::controller::reasons::Reason;
use crate::crd::READY;

pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Ready=False reasons that clear without anyone acting: GitLab busy or unreachable for a
/// while, the API server failing, or a connection (or its Secret) not there yet — as in the
/// first sync of a GitOps application that brings both.
pub const TRANSIENT: &[Reason] = &[
    Reason::GitLabRateLimited,
    Reason::GitLabError,
    Reason::GitLabUnreachable,
    Reason::KubernetesError,
    Reason::ConnectionNotReady,
];

/// Side conditions that need a person although Ready is True: (type, the status that says so).
const NEEDS_A_PERSON: &[(&str, &str)] = &[
    ("TokenRotationConflict", "True"),
    ("ConsumersReady", "False"),
    ("TokenScopes", "False"),
];

/// What kstatus should conclude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Nothing to do (or Ready not yet set).
    Current,
    /// The operator is working on it: Reconciling=True with this reason and message.
    Reconciling(String, String),
    /// Stuck until someone acts: Stalled=True with this reason and message.
    Stalled(String, String),
}

/// The standing its conditions give an object.
pub fn of(conditions: &[Condition]) -> Standing {
    let Some(ready) = conditions.iter().find(|c| c.type_ == READY) else {
        return Standing::Current;
    };
    let said = |c: &Condition| (c.reason.clone(), c.message.clone());
    if ready.status == "True" {
        return conditions
            .iter()
            .find(|c| {
                NEEDS_A_PERSON
                    .iter()
                    .any(|(t, s)| c.type_ == *t && c.status == *s)
            })
            .map_or(Standing::Current, |c| {
                let (reason, message) = said(c);
                Standing::Stalled(reason, message)
            });
    }
    let (reason, message) = said(ready);
    if TRANSIENT.iter().any(|r| r.as_str() == ready.reason) {
        Standing::Reconciling(reason, message)
    } else {
        Standing::Stalled(reason, message)
    }
}

/// Sets Reconciling and Stalled from the other conditions (after every other condition is
/// set). They take Ready's generation and transition time, so an unchanged state writes
/// nothing new.
pub fn apply(conditions: &mut Vec<Condition>) {
    conditions.retain(|c| c.type_ != RECONCILING && c.type_ != STALLED);
    let Some(ready) = conditions.iter().find(|c| c.type_ == READY).cloned() else {
        return;
    };
    let (type_, (reason, message)) = match of(conditions) {
        Standing::Current => return,
        Standing::Reconciling(r, m) => (RECONCILING, (r, m)),
        Standing::Stalled(r, m) => (STALLED, (r, m)),
    };
    conditions.push(Condition {
        type_: type_.into(),
        status: "True".into(),
        reason,
        message,
        ..ready
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn c(type_: &str, status: bool, reason: &str) -> Condition {
        crate::crd::condition(
            type_,
            status,
            reason,
            format!("{reason} message"),
            Some(3),
            Time(Timestamp::from_second(1_800_000_000).unwrap()),
        )
    }

    fn derived(conditions: Vec<Condition>) -> Vec<(String, String)> {
        let mut conditions = conditions;
        apply(&mut conditions);
        conditions
            .into_iter()
            .filter(|c| c.type_ == RECONCILING || c.type_ == STALLED)
            .map(|c| (c.type_, c.reason))
            .collect()
    }

    #[test]
    fn every_ready_reason_is_current_reconciling_or_stalled() {
        let pair = |t: &str, r: &str| vec![(t.to_string(), r.to_string())];
        assert_eq!(derived(vec![c(READY, true, "Reconciled")]), vec![]);
        assert_eq!(derived(vec![]), vec![]);
        for r in TRANSIENT.iter().map(|r| r.as_str()) {
            assert_eq!(derived(vec![c(READY, false, r)]), pair(RECONCILING, r));
        }
        // Every other reason Ready=False can carry (and an undecodable object's) needs a person.
        let ready_reasons = Reason::ALL
            .iter()
            .filter(|r| r.info().condition == READY && **r != Reason::Reconciled);
        for r in ready_reasons.filter(|r| !TRANSIENT.contains(r)) {
            let r = r.as_str();
            assert_eq!(derived(vec![c(READY, false, r)]), pair(STALLED, r));
        }
        // Ready, but the next rotation breaks it, or a consumer is missing.
        assert_eq!(
            derived(vec![
                c(READY, true, "Reconciled"),
                c("TokenRotationConflict", true, "AutomaticRotationEnabled")
            ]),
            pair(STALLED, "AutomaticRotationEnabled")
        );
        assert_eq!(
            derived(vec![
                c(READY, true, "Reconciled"),
                c("ConsumersReady", false, "ConsumerMissing")
            ]),
            pair(STALLED, "ConsumerMissing")
        );
    }

    #[test]
    fn applying_again_changes_nothing_and_recovery_clears_them() {
        let mut conditions = vec![c(READY, false, "GitLabError")];
        apply(&mut conditions);
        let once = conditions.clone();
        apply(&mut conditions);
        assert_eq!(conditions, once);
        let reconciling = &conditions[1];
        assert_eq!(reconciling.observed_generation, Some(3));
        assert_eq!(
            reconciling.last_transition_time,
            conditions[0].last_transition_time
        );
        conditions[0] = c(READY, true, "Reconciled");
        apply(&mut conditions);
        assert_eq!(conditions.len(), 1);
    }
}
