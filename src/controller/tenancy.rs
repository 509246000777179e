//! Tenancy: what a namespace may do through a ClusterGitLabConnection's token, decided before
//! any GitLab write. Pure: the caller gathers the namespace's labels and GitLab's canonical
//! paths; this module only judges.

use std::collections::BTreeMap;

use crate::crd::{AdoptPolicy, AllowedNamespaces, RunnerType, Tenancy, TenancyRule};

/// An existing runner a Runner wants to adopt, as GitLab describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptTarget {
    pub id: i64,
    pub runner_type: String,
    /// Full path of the owner project (project runners) or group (group runners).
    pub owner_path: Option<String>,
    /// Full paths of the other projects it serves.
    pub assigned_paths: Vec<String>,
}

/// What a Runner asks of GitLab, with canonical full paths (GitLab's, not the spec's spelling:
/// an old path GitLab redirects must not pass for the new one).
#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub runner_type: RunnerType,
    /// The owner project's or group's full path; None for instance runners.
    pub owner_path: Option<String>,
    pub assigned_paths: Vec<String>,
    pub adopt: Option<AdoptTarget>,
}

/// The rule that allowed a request, or why none did (a message that says what to change).
pub type Verdict = Result<String, String>;

/// The rule that applies without `spec.tenancy`.
pub fn default_rule() -> TenancyRule {
    TenancyRule {
        name: Some("default (no spec.tenancy)".into()),
        namespaces: AllowedNamespaces {
            names: vec![],
            selector: Some(Default::default()),
        },
        runner_types: vec![RunnerType::ProjectType, RunnerType::GroupType],
        paths: vec![],
        adopt: AdoptPolicy::Never,
    }
}

/// A rule's name as conditions, events and status show it.
pub fn rule_name(rule: &TenancyRule, index: usize) -> String {
    rule.name
        .clone()
        .unwrap_or_else(|| format!("rules[{index}]"))
}

/// Whether `namespaces` (of a rule, or a connection's allowedNamespaces) match: names, or the
/// label selector (`{}` selects all; unset, none).
pub fn matches_namespace(
    ns: &AllowedNamespaces,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    ns.names.iter().any(|n| n == name)
        || ns
            .selector
            .as_ref()
            .is_some_and(|s| selector_admits(s, labels))
}

/// Kubernetes label-selector semantics (kube's `Selector`): an empty selector selects every
/// namespace; a selector that does not parse selects none.
pub fn selector_admits(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    use kube::core::{Selector, SelectorExt};
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// Whether any rule needs the namespace's labels (else they need not be read).
pub fn needs_labels(tenancy: Option<&Tenancy>) -> bool {
    tenancy.is_some_and(|t| t.rules.iter().any(|r| r.namespaces.selector.is_some()))
}

/// The rule deciding for `namespace` (first match), with its name.
pub fn rule_for<'t>(
    tenancy: Option<&'t Tenancy>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<(String, std::borrow::Cow<'t, TenancyRule>)> {
    match tenancy {
        None => {
            let rule = default_rule();
            Some((rule_name(&rule, 0), std::borrow::Cow::Owned(rule)))
        }
        Some(t) => t
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| matches_namespace(&r.namespaces, namespace, labels))
            .map(|(i, r)| (rule_name(r, i), std::borrow::Cow::Borrowed(r))),
    }
}

/// Judges a request against the connection's tenancy.
pub fn evaluate(connection: &str, tenancy: Option<&Tenancy>, req: &Request<'_>) -> Verdict {
    let ns = req.namespace;
    let Some((name, rule)) = rule_for(tenancy, ns, req.namespace_labels) else {
        return Err(format!(
            "ClusterGitLabConnection {connection}: no tenancy rule matches namespace {ns}, so it may not manage runners through it; nothing was done in GitLab. Ask the connection's owners to add a rule for {ns} to spec.tenancy.rules, or use a GitLabConnection of the namespace's own"
        ));
    };
    let types = if rule.runner_types.is_empty() {
        default_rule().runner_types
    } else {
        rule.runner_types.clone()
    };
    let lane = format!("ClusterGitLabConnection {connection} rule {name:?} (namespace {ns})");
    let untouched = "nothing was done in GitLab";
    if !types.contains(&req.runner_type) {
        let allowed: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        let hint = if tenancy.is_none() && req.runner_type == RunnerType::InstanceType {
            ". Instance runners serve every project of the instance; to allow them, the connection's owners add a spec.tenancy rule with runnerTypes [instance_type]"
        } else {
            ""
        };
        return Err(format!(
            "{lane} allows runnerTypes {} only, not {}; {untouched}. Change spec.runnerType, or ask the connection's owners to extend the rule{hint}",
            allowed.join(", "),
            req.runner_type.as_str()
        ));
    }
    if let Some(p) = first_outside(&rule, ns, req.owner_path.iter().collect()) {
        return Err(format!(
            "{lane}: {p} is outside its paths ({}); {untouched}. Use a project or group under those paths, or ask the connection's owners to extend the rule",
            globs(&rule, ns)
        ));
    }
    if let Some(p) = first_outside(&rule, ns, req.assigned_paths.iter().collect()) {
        return Err(format!(
            "{lane}: assigned project {p} is outside its paths ({}); {untouched}. Remove it from spec.assignedProjects, or ask the connection's owners to extend the rule",
            globs(&rule, ns)
        ));
    }
    if let Some(target) = &req.adopt {
        check_adoption(&rule, &types, target, ns, &lane)?;
    }
    Ok(name)
}

/// The first of `paths` outside the rule's paths.
fn first_outside(rule: &TenancyRule, ns: &str, paths: Vec<&String>) -> Option<String> {
    paths
        .into_iter()
        .find(|p| !path_allowed(&rule.paths, ns, p))
        .cloned()
}

/// The rule's paths as the namespace sees them, for messages.
fn globs(rule: &TenancyRule, ns: &str) -> String {
    rule.paths
        .iter()
        .map(|g| g.replace("${namespace}", ns))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the rule lets the namespace adopt `target`.
fn check_adoption(
    rule: &TenancyRule,
    types: &[RunnerType],
    target: &AdoptTarget,
    ns: &str,
    lane: &str,
) -> Result<(), String> {
    let untouched = "nothing was done in GitLab";
    let id = target.id;
    match rule.adopt {
        AdoptPolicy::Never => {
            return Err(format!(
                "{lane} does not allow adopting existing runners (adopt: Never), so runner {id} is not taken and its token stays valid; {untouched}. Remove spec.adopt, or ask the connection's owners for adopt: WithinPaths"
            ));
        }
        AdoptPolicy::WithinPaths => {
            if !types.iter().any(|t| t.as_str() == target.runner_type) {
                return Err(format!(
                    "{lane}: runner {id} is a {}, which the rule does not allow; it is not adopted and its token stays valid; {untouched}",
                    target.runner_type
                ));
            }
            let owner = target.owner_path.as_ref();
            let first_outside = match owner {
                None => Some("(no owner project or group)".to_string()),
                Some(_) => first_outside(
                    rule,
                    ns,
                    owner
                        .into_iter()
                        .chain(target.assigned_paths.iter())
                        .collect(),
                ),
            };
            if let Some(p) = first_outside {
                return Err(format!(
                    "{lane}: runner {id} serves {p}, outside its paths ({}); it is not adopted and its token stays valid; {untouched}. Adopt only runners whose owner and every project lie under those paths",
                    globs(rule, ns)
                ));
            }
        }
        AdoptPolicy::Any => {}
    }
    Ok(())
}

/// Whether `path` matches one of `globs` (none: any path).
pub fn path_allowed(globs: &[String], namespace: &str, path: &str) -> bool {
    globs.is_empty()
        || globs
            .iter()
            .any(|g| glob_matches(&g.replace("${namespace}", namespace), path))
}

/// `*` within one segment, `**` across any number (zero included) of whole segments.
/// GitLab paths are case-insensitive, so the comparison is too.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    let glob = glob.to_ascii_lowercase();
    let path = path.to_ascii_lowercase();
    let g: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments_match(&g, &p)
}

fn segments_match(g: &[&str], p: &[&str]) -> bool {
    match g.split_first() {
        None => p.is_empty(),
        Some((&"**", rest)) => (0..=p.len()).any(|i| segments_match(rest, &p[i..])),
        Some((seg, rest)) => {
            !p.is_empty()
                && segment_matches(seg.as_bytes(), p[0].as_bytes())
                && segments_match(rest, &p[1..])
        }
    }
}

fn segment_matches(g: &[u8], s: &[u8]) -> bool {
    match g.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment_matches(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && segment_matches(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn rule(
        name: &str,
        names: &[&str],
        types: &[RunnerType],
        paths: &[&str],
        adopt: AdoptPolicy,
    ) -> TenancyRule {
        TenancyRule {
            name: Some(name.into()),
            namespaces: AllowedNamespaces {
                names: names.iter().map(|s| s.to_string()).collect(),
                selector: None,
            },
            runner_types: types.to_vec(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            adopt,
        }
    }

    fn req<'a>(
        ns: &'a str,
        labels: &'a BTreeMap<String, String>,
        t: RunnerType,
        owner: Option<&str>,
        assigned: &[&str],
        adopt: Option<AdoptTarget>,
    ) -> Request<'a> {
        Request {
            namespace: ns,
            namespace_labels: labels,
            runner_type: t,
            owner_path: owner.map(str::to_string),
            assigned_paths: assigned.iter().map(|s| s.to_string()).collect(),
            adopt,
        }
    }

    fn target(t: &str, owner: Option<&str>, assigned: &[&str]) -> AdoptTarget {
        AdoptTarget {
            id: 7,
            runner_type: t.into(),
            owner_path: owner.map(str::to_string),
            assigned_paths: assigned.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs() {
        for (glob, path, want) in [
            ("team/*/**", "team/a/app", true),
            ("team/*/**", "team/a", true),
            ("team/*/**", "team", false),
            ("team/a/**", "team/a/sub/deep/app", true),
            ("team/a/**", "team/ab/app", false),
            ("team/a*", "team/abc", true),
            ("team/a*", "team/abc/x", false),
            ("**", "anything/at/all", true),
            ("team/a/app", "team/a/app", true),
            ("team/a/app", "Team/A/App", true),
            ("team/a/app", "team/a/app2", false),
            ("*/app", "x/app", true),
            ("*/app", "x/y/app", false),
        ] {
            assert_eq!(glob_matches(glob, path), want, "{glob} vs {path}");
        }
        assert!(path_allowed(
            &["team/${namespace}/**".into()],
            "a",
            "team/a/x"
        ));
        assert!(!path_allowed(
            &["team/${namespace}/**".into()],
            "a",
            "team/b/x"
        ));
        assert!(path_allowed(&[], "a", "anything"));
    }

    /// The table: each case, the outcome and the rule or the words of the refusal.
    #[test]
    fn the_lanes() {
        let none = BTreeMap::new();
        let team_labels: BTreeMap<String, String> =
            [("tenant".to_string(), "yes".to_string())].into();
        let mut by_label = rule(
            "labelled",
            &[],
            &[],
            &["team/${namespace}/**"],
            AdoptPolicy::WithinPaths,
        );
        by_label.namespaces.selector = Some(LabelSelector {
            match_labels: Some([("tenant".to_string(), "yes".to_string())].into()),
            ..Default::default()
        });
        let tenancy = Tenancy {
            rules: vec![
                rule(
                    "team-a",
                    &["team-a"],
                    &[RunnerType::ProjectType, RunnerType::GroupType],
                    &["team/${namespace}/**"],
                    AdoptPolicy::WithinPaths,
                ),
                rule(
                    "platform",
                    &["platform"],
                    &[RunnerType::InstanceType, RunnerType::ProjectType],
                    &[],
                    AdoptPolicy::Any,
                ),
                by_label,
            ],
        };
        let t = Some(&tenancy);
        use RunnerType::*;
        let cases: Vec<(&str, Request<'_>, Result<&str, &str>)> = vec![
            (
                "the allowed case",
                req(
                    "team-a",
                    &none,
                    ProjectType,
                    Some("team/team-a/app"),
                    &["team/team-a/lib"],
                    None,
                ),
                Ok("team-a"),
            ),
            (
                "an instance runner",
                req("team-a", &none, InstanceType, None, &[], None),
                Err("allows runnerTypes project_type, group_type only, not instance_type"),
            ),
            (
                "a project outside paths",
                req("team-a", &none, ProjectType, Some("other/app"), &[], None),
                Err("other/app is outside its paths (team/team-a/**)"),
            ),
            (
                "an assigned project outside paths",
                req(
                    "team-a",
                    &none,
                    ProjectType,
                    Some("team/team-a/app"),
                    &["secret/vault"],
                    None,
                ),
                Err("assigned project secret/vault is outside its paths"),
            ),
            (
                "adopting a hand-made runner outside paths",
                req(
                    "team-a",
                    &none,
                    ProjectType,
                    Some("team/team-a/app"),
                    &[],
                    Some(target("instance_type", None, &[])),
                ),
                Err("runner 7 is a instance_type"),
            ),
            (
                "adopting a project runner also serving another team",
                req(
                    "team-a",
                    &none,
                    ProjectType,
                    Some("team/team-a/app"),
                    &[],
                    Some(target(
                        "project_type",
                        Some("team/team-a/app"),
                        &["team/team-b/app"],
                    )),
                ),
                Err("runner 7 serves team/team-b/app"),
            ),
            (
                "adopting within paths",
                req(
                    "team-a",
                    &none,
                    ProjectType,
                    Some("team/team-a/app"),
                    &[],
                    Some(target(
                        "project_type",
                        Some("team/team-a/app"),
                        &["team/team-a/lib"],
                    )),
                ),
                Ok("team-a"),
            ),
            (
                "a namespace no rule matches",
                req(
                    "team-z",
                    &none,
                    ProjectType,
                    Some("team/team-z/app"),
                    &[],
                    None,
                ),
                Err("no tenancy rule matches namespace team-z"),
            ),
            (
                "a selector-matched namespace",
                req(
                    "team-c",
                    &team_labels,
                    GroupType,
                    Some("team/team-c"),
                    &[],
                    None,
                ),
                Ok("labelled"),
            ),
            (
                "a selector-matched namespace outside paths",
                req(
                    "team-c",
                    &team_labels,
                    GroupType,
                    Some("team/team-a"),
                    &[],
                    None,
                ),
                Err("team/team-a is outside its paths (team/team-c/**)"),
            ),
            (
                "the platform may do anything",
                req(
                    "platform",
                    &none,
                    InstanceType,
                    None,
                    &[],
                    Some(target("instance_type", None, &[])),
                ),
                Ok("platform"),
            ),
        ];
        for (case, r, want) in cases {
            let got = evaluate("shared", t, &r);
            match (&got, want) {
                (Ok(rule), Ok(w)) => assert_eq!(rule, w, "{case}"),
                (Err(msg), Err(w)) => {
                    assert!(msg.contains(w), "{case}: {msg}");
                    assert!(msg.contains("nothing was done in GitLab"), "{case}: {msg}");
                }
                _ => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn without_tenancy_project_and_group_runners_only_and_no_adoption() {
        let none = BTreeMap::new();
        use RunnerType::*;
        assert!(
            evaluate(
                "c",
                None,
                &req("any", &none, ProjectType, Some("x/y"), &["z/w"], None)
            )
            .is_ok()
        );
        assert!(
            evaluate(
                "c",
                None,
                &req("any", &none, GroupType, Some("x"), &[], None)
            )
            .is_ok()
        );
        let instance =
            evaluate("c", None, &req("any", &none, InstanceType, None, &[], None)).unwrap_err();
        assert!(
            instance.contains("runnerTypes [instance_type]"),
            "{instance}"
        );
        let adopt = evaluate(
            "c",
            None,
            &req(
                "any",
                &none,
                ProjectType,
                Some("x/y"),
                &[],
                Some(target("project_type", Some("x/y"), &[])),
            ),
        )
        .unwrap_err();
        assert!(
            adopt.contains("adopt: Never") && adopt.contains("token stays valid"),
            "{adopt}"
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let none = BTreeMap::new();
        let tenancy = Tenancy {
            rules: vec![
                rule(
                    "narrow",
                    &["a"],
                    &[RunnerType::ProjectType],
                    &["only/**"],
                    AdoptPolicy::Never,
                ),
                rule(
                    "wide",
                    &["a"],
                    &[RunnerType::ProjectType],
                    &[],
                    AdoptPolicy::Any,
                ),
            ],
        };
        let got = evaluate(
            "c",
            Some(&tenancy),
            &req(
                "a",
                &none,
                RunnerType::ProjectType,
                Some("elsewhere/x"),
                &[],
                None,
            ),
        );
        assert!(got.unwrap_err().contains("rule \"narrow\""));
        let unnamed = Tenancy {
            rules: vec![TenancyRule {
                name: None,
                ..rule("", &["a"], &[], &[], AdoptPolicy::Never)
            }],
        };
        assert_eq!(
            evaluate(
                "c",
                Some(&unnamed),
                &req("a", &none, RunnerType::GroupType, Some("g"), &[], None)
            ),
            Ok("rules[0]".to_string())
        );
    }
}
