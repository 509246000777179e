//! Condition types and reasons, and helpers that keep `lastTransitionTime` stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The summary condition that kstatus, `kubectl wait` and Argo CD read.
pub const READY: &str = "Ready";

/// Sets (or replaces) the condition of `new.type_` in `conditions`.
///
/// `lastTransitionTime` only moves when the status flips, so writing the same state again
/// leaves the list byte-for-byte equal (no status-write loops).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if existing.status == new.status {
            new.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = new;
    } else {
        conditions.push(new);
    }
}

/// Builds a condition with the given parts.
pub fn condition(
    type_: &str,
    status: bool,
    reason: impl Into<String>,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.into(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Equality that ignores `lastTransitionTime`, to decide whether a status patch is needed.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(READY, false, "Creating", "a", Some(1), t(10)),
        );
        set_condition(
            &mut cs,
            condition(READY, false, "Creating", "b", Some(2), t(20)),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t(10));
        assert_eq!(cs[0].message, "b");
        set_condition(
            &mut cs,
            condition(READY, true, "Reconciled", "", Some(2), t(30)),
        );
        assert_eq!(cs[0].last_transition_time, t(30));
    }

    #[test]
    fn equality_ignores_time() {
        let a = vec![condition(READY, true, "R", "", Some(1), t(1))];
        let b = vec![condition(READY, true, "R", "", Some(1), t(2))];
        let c = vec![condition(READY, true, "R", "x", Some(1), t(1))];
        assert!(same_ignoring_time(&a, &b));
        assert!(!same_ignoring_time(&a, &c));
    }
}
