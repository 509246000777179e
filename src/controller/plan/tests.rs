//! The decision, case by case.

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
        owner_project: Some((1, "platform/api".into())),
    }
}

fn seen(projects: &[i64]) -> RunnerDetails {
    RunnerDetails {
        id: RunnerId(7),
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
    d.adopt = Some(RunnerId(42));
    assert_eq!(
        plan(&d, &GitLabState::Unknown, &token(), t(0)),
        vec![Step::Adopt(RunnerId(42))]
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
            reason: Reason::RunnerNotOwned,
            ..
        }]
    ));
    let mut d = desired();
    d.adopt = Some(RunnerId(7));
    let not_ours = GitLabState::NotOurs(Box::new(seen(&[1])));
    // Fields that match cost nothing: the token reset is the only write.
    assert_eq!(
        plan(&d, &not_ours, &token(), t(0)),
        vec![
            Step::Adopt(RunnerId(7)),
            Step::RotateToken {
                runner: RunnerId(7),
                reason: RotationReason::Adopted
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
            Step::Adopt(RunnerId(7)),
            Step::RotateToken {
                runner: RunnerId(7),
                reason: RotationReason::Adopted
            }
        ]
    );
    // What differs is changed before the reset.
    d.attrs.description = "from the spec".into();
    assert_eq!(
        plan(&d, &not_ours, &token(), t(0)),
        vec![
            Step::Adopt(RunnerId(7)),
            Step::Update {
                runner: RunnerId(7),
                attrs: RunnerAttributes {
                    description: Some("from the spec".into()),
                    ..Default::default()
                }
            },
            Step::RotateToken {
                runner: RunnerId(7),
                reason: RotationReason::Adopted
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
            reason: Reason::SecretNotOwned,
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
            runner: RunnerId(7),
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
                runner: RunnerId(7),
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
                runner: RunnerId(7),
                project: 2
            },
            Step::Unassign {
                runner: RunnerId(7),
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
                runner: RunnerId(7),
                attrs: RunnerAttributes {
                    locked: Some(false),
                    ..Default::default()
                }
            },
            Step::Assign {
                runner: RunnerId(7),
                project: 2
            },
            Step::Update {
                runner: RunnerId(7),
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
                runner: RunnerId(7),
                project: 2
            },
            Step::Update {
                runner: RunnerId(7),
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
                runner: RunnerId(7),
                reason: RotationReason::Recovered,
            }),
        ),
        (
            SecretState::Tampered,
            Some(Step::RotateToken {
                runner: RunnerId(7),
                reason: RotationReason::Recovered,
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
            reason: Reason::SecretNotOwned,
            ..
        }]
    ));
}

#[test]
fn pending_rotation_is_redone() {
    let mut tk = token();
    tk.pending = Some(RotationReason::Interval);
    assert_eq!(
        plan(&desired(), &present(seen(&[1])), &tk, t(0)),
        vec![Step::RotateToken {
            runner: RunnerId(7),
            reason: RotationReason::Interval
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
            runner: RunnerId(7),
            reason: RotationReason::Requested
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
            runner: RunnerId(7),
            reason: RotationReason::Interval
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
            runner: RunnerId(7),
            reason: RotationReason::Expiry
        }]
    );
    // A window longer than the lifetime does not loop: capped at 90 % of it.
    let mut d = desired();
    d.rotation.before_expiry = Some(Duration::from_secs(10_000));
    assert_eq!(
        next_rotation(&d.rotation, tk.issued_at, tk.expires_at),
        Some((RotationReason::Expiry, t(90)))
    );
    // The earlier trigger wins.
    d.rotation.interval = Some(Duration::from_secs(50));
    assert_eq!(
        next_rotation(&d.rotation, tk.issued_at, tk.expires_at),
        Some((RotationReason::Interval, t(50)))
    );
}

fn with_secret(secret: SecretState) -> TokenState {
    TokenState {
        secret,
        issued_at: None,
        ..token()
    }
}

#[test]
fn a_predecessors_runner_is_taken_over_keeping_a_live_token() {
    // The old marker differs from ours: the note is rewritten, nothing else.
    let mut old = seen(&[1]);
    old.maintenance_note = Some("note\n[old marker]".into());
    let predecessor = GitLabState::Predecessor(Box::new(old));
    let note_only = Step::Update {
        runner: RunnerId(7),
        attrs: RunnerAttributes {
            maintenance_note: Some("note\n[marker]".into()),
            ..Default::default()
        },
    };
    for live in [SecretState::Restored { live: true }, SecretState::Valid] {
        assert_eq!(
            plan(&desired(), &predecessor, &with_secret(live), t(0)),
            vec![
                Step::TakeOver {
                    runner: RunnerId(7),
                    keep_token: true
                },
                note_only.clone()
            ],
            "{live:?}"
        );
    }
    // No Secret, or one GitLab refuses: one reset, recorded as a takeover.
    for dead in [
        SecretState::Missing,
        SecretState::Restored { live: false },
        SecretState::Tampered,
    ] {
        assert_eq!(
            plan(&desired(), &predecessor, &with_secret(dead), t(0)),
            vec![
                Step::TakeOver {
                    runner: RunnerId(7),
                    keep_token: false
                },
                note_only.clone(),
                Step::RotateToken {
                    runner: RunnerId(7),
                    reason: RotationReason::TakenOver
                }
            ],
            "{dead:?}"
        );
    }
    // A Secret someone else made: nothing is taken over.
    assert!(matches!(
        plan(
            &desired(),
            &predecessor,
            &with_secret(SecretState::Foreign),
            t(0)
        )[..],
        [Step::Blocked {
            reason: Reason::SecretNotOwned,
            ..
        }]
    ));
}

#[test]
fn restored_secrets_are_kept_when_live_and_overwritten_only_when_dead() {
    // Our runner, the Secret restored without its owner: made ours again, token kept.
    assert_eq!(
        plan(
            &desired(),
            &present(seen(&[1])),
            &with_secret(SecretState::Restored { live: true }),
            t(0)
        ),
        vec![Step::TakeOver {
            runner: RunnerId(7),
            keep_token: true
        }]
    );
    assert_eq!(
        plan(
            &desired(),
            &present(seen(&[1])),
            &with_secret(SecretState::Restored { live: false }),
            t(0)
        ),
        vec![Step::RotateToken {
            runner: RunnerId(7),
            reason: RotationReason::Recovered
        }]
    );
    // The runner it names is gone: the token is dead, a new runner's goes in its place.
    for gone in [GitLabState::Unknown, GitLabState::Gone] {
        for live in [true, false] {
            assert!(matches!(
                plan(
                    &desired(),
                    &gone,
                    &with_secret(SecretState::Restored { live }),
                    t(0)
                )[..],
                [Step::Create { .. }]
            ));
        }
    }
    // Another's runner: blocked as before.
    assert!(matches!(
        plan(
            &desired(),
            &GitLabState::NotOurs(Box::new(seen(&[1]))),
            &with_secret(SecretState::Restored { live: true }),
            t(0)
        )[..],
        [Step::Blocked {
            reason: Reason::RunnerNotOwned,
            ..
        }]
    ));
}

#[test]
fn default_expiry_rotation_comes_before_gitlab_runners_own() {
    // gitlab-runner resets its own token at 75 % of its lifetime (unless
    // FF_DISABLE_AUTOMATIC_TOKEN_ROTATION is set), leaving the Secret's token dead: by default
    // the operator rotates first, at two thirds.
    for lifetime in [3_600, 86_400, 30 * 86_400] {
        let (_, at) = next_rotation(&RotationPolicy::default(), Some(t(0)), Some(t(lifetime)))
            .expect("a deadline");
        assert!(
            at.as_second() - t(0).as_second() < lifetime * 3 / 4,
            "{lifetime}"
        );
    }
}

#[test]
fn an_owner_project_moved_by_gitlab_makes_the_spec_invalid() {
    // GitLab moved the runner to project 2 when project 1 was deleted.
    let mut moved = seen(&[2, 3]);
    moved.projects[0].path_with_namespace = Some("platform/web".into());
    let steps = plan(&desired(), &present(moved), &token(), t(0));
    let [Step::Invalid { message }] = steps.as_slice() else {
        panic!("{steps:?}");
    };
    assert!(
        message.contains("project 2 (platform/web)")
            && message.contains("not project 1 of spec.project \"platform/api\""),
        "{message}"
    );
    // Not a project runner, or owned by the spec's project: no such check.
    let mut group = desired();
    group.owner_project = None;
    assert_eq!(plan(&group, &present(seen(&[2])), &token(), t(0)), vec![]);
    assert_eq!(
        plan(&desired(), &present(seen(&[1])), &token(), t(0)),
        vec![]
    );
}

#[test]
fn a_runner_another_runner_manages_is_never_adopted() {
    let mut d = desired();
    d.adopt = Some(RunnerId(7));
    for (by, says) in [
        (
            Claimant::Runner("ci/other".into()),
            "managed by Runner ci/other; it is not adopted",
        ),
        (
            Claimant::OtherCluster {
                runner: "ci/other".into(),
                cluster: "staging".into(),
            },
            "managed by Runner ci/other of cluster staging",
        ),
    ] {
        let claimed = GitLabState::Claimed(Box::new(seen(&[1])), by);
        let steps = plan(&d, &claimed, &token(), t(0));
        let [Step::Blocked { reason, message }] = steps.as_slice() else {
            panic!("{steps:?}");
        };
        assert_eq!(*reason, Reason::RunnerClaimed);
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn a_new_rotate_request_alone_resets_without_reading() {
    use Shortcut::*;
    let cases = [
        // (only the request changed, recorded id, request, handled) → shortcut
        (
            true,
            Some(RunnerId(7)),
            Some("b"),
            Some("a"),
            Rotate(RunnerId(7)),
        ),
        (true, Some(RunnerId(7)), Some("a"), Some("a"), Done),
        (true, Some(RunnerId(7)), None, Some("a"), Done),
        (true, None, Some("b"), None, Full),
        (false, Some(RunnerId(7)), Some("b"), Some("a"), Full),
    ];
    for (only, id, request, handled, want) in cases {
        assert_eq!(
            shortcut(only, id, request, handled),
            want,
            "{only} {id:?} {request:?} {handled:?}"
        );
    }
}

#[test]
fn refusals_mean_done_invalid_or_error() {
    use crate::gitlab::{ErrorKind, Refusal};
    let assign = Step::Assign {
        runner: RunnerId(7),
        project: 9,
    };
    let unassign = Step::Unassign {
        runner: RunnerId(7),
        project: 9,
    };
    let update = Step::Update {
        runner: RunnerId(7),
        attrs: RunnerAttributes::default(),
    };
    assert_eq!(
        on_failure(
            &assign,
            ErrorKind::Rejected,
            Some(Refusal::AlreadyAssigned),
            None
        ),
        Failure::Done
    );
    let Failure::Invalid(why) = on_failure(
        &assign,
        ErrorKind::NotFound,
        None,
        Some("404 Project Not Found"),
    ) else {
        panic!("a missing project is invalid input");
    };
    assert!(
        why.contains("project 9 of spec.assignedProjects") && why.contains("404 Project Not Found"),
        "{why}"
    );
    assert_eq!(
        on_failure(&unassign, ErrorKind::NotFound, None, None),
        Failure::Done
    );
    for kind in [
        ErrorKind::Forbidden,
        ErrorKind::ServerError,
        ErrorKind::Unreachable,
    ] {
        assert_eq!(on_failure(&assign, kind, None, None), Failure::Error);
        assert_eq!(on_failure(&unassign, kind, None, None), Failure::Error);
    }
    assert_eq!(
        on_failure(&update, ErrorKind::NotFound, None, None),
        Failure::Error
    );
}

#[test]
fn updates_say_whether_they_revert_drift_follow_the_spec_or_move_the_marker() {
    let mut before = seen(&[1]);
    // Marked before the cluster had a name.
    before.maintenance_note = Some("note\n[runner-operator: managed by Runner ci/a, uid u]".into());
    let note = |n: &str| RunnerAttributes {
        maintenance_note: Some(n.into()),
        ..Default::default()
    };
    let tags = RunnerAttributes {
        tag_list: Some(vec!["x".into()]),
        ..Default::default()
    };
    let lock = RunnerAttributes {
        locked: Some(false),
        ..Default::default()
    };
    let marked = "note\n[runner-operator: managed by Runner ci/a, uid u, cluster prod]";
    let cases = [
        // (attrs, spec unchanged) → kind
        (note(marked), true, UpdateKind::Marker),
        (note(marked), false, UpdateKind::Marker),
        (note("other text"), true, UpdateKind::Drift),
        (note("other text"), false, UpdateKind::Spec),
        (tags.clone(), true, UpdateKind::Drift),
        (tags, false, UpdateKind::Spec),
        (lock, true, UpdateKind::Spec),
    ];
    for (attrs, unchanged, want) in cases {
        assert_eq!(
            update_kind(Some(&before), &attrs, unchanged),
            want,
            "{attrs:?} {unchanged}"
        );
    }
}
