//! Every reason the operator puts on a condition or an event, what it means and what fixes it.
//! The code can only use a reason declared here (conditions and events take a `Reason`), and
//! docs/troubleshooting.md is generated from this table (a test keeps it in step).

/// Where a reason shows up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// A Runner's condition (and, for failures, a Warning event of the same reason).
    Runner,
    /// A GitLabConnection's or ClusterGitLabConnection's condition.
    Connection,
    /// An event only.
    Event,
}

/// What a reason is used for and what it says to users.
pub struct Info {
    pub on: On,
    /// The condition type it is set on (empty for events).
    pub condition: &'static str,
    pub meaning: &'static str,
    pub fix: &'static str,
}

macro_rules! reasons {
    ($($name:ident: $on:ident, $condition:literal, $meaning:literal, $fix:literal;)*) => {
        /// A condition or event reason: the operator's whole vocabulary.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        pub enum Reason {
            $($name,)*
        }

        impl Reason {
            /// Every reason, in the order docs/troubleshooting.md lists them.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The word in conditions, events, logs and metric labels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub const fn info(self) -> &'static Info {
                match self {
                    $(Reason::$name => &Info {
                        on: $on,
                        condition: $condition,
                        meaning: $meaning,
                        fix: $fix,
                    },)*
                }
            }
        }
    };
}

use On::{Connection, Event, Runner};

reasons! {
    LeftOutsideLane: Event, "",
        "A Runner outside its tenancy lane was deleted: its GitLab runner was left registered (the namespace may not delete it).",
        "Delete the runner in GitLab if it is no longer wanted (the connection's owners can), or restore the rule and recreate the Runner.";
    Reconciled: Runner, "Ready",
        "GitLab matches the spec and the token is in its Secret.",
        "Nothing to do.";
    ConnectionNotReady: Runner, "Ready",
        "The Runner's connection cannot be used: it does not exist, its token Secret or CA bundle is missing, or its live check fails.",
        "`kubectl describe` the connection named in spec.connectionRef; its Ready condition says what is wrong.";
    ConnectionNotAllowed: Runner, "Ready",
        "The ClusterGitLabConnection does not admit the Runner's namespace; nothing was done in GitLab.",
        "Add the namespace to the connection's spec.allowedNamespaces (names, or a label its selector matches), or use another connection.";
    TenancyViolation: Runner, "Ready",
        "The Runner asks for something its ClusterGitLabConnection's spec.tenancy does not give its namespace (a runner type, a path, an adoption), or no rule matches the namespace; nothing was done in GitLab, and a runner already managed is left as it is.",
        "Change the Runner as the message says, or ask the connection's owners to extend the rule it names.";
    GitLabUnauthorized: Runner, "Ready",
        "GitLab answered 401: the access token is wrong, revoked or expired.",
        "Put a valid token into the connection's token Secret (the connection's TokenExpiring condition warns before expiry).";
    GitLabForbidden: Runner, "Ready",
        "GitLab answered 403: the token's user may not do this (role, or a scope the endpoint needs).",
        "Give the user the role the message names (Maintainer of the project, Owner of the group, admin for instance runners), or the missing scope; the connection's TokenScopes condition lists scopes.";
    GitLabNotFound: Runner, "Ready",
        "GitLab answered 404: the project, group or runner does not exist or the token's user cannot see it.",
        "Fix spec.project, spec.group or spec.assignedProjects, or give the user access.";
    RegistrationTokensDisabled: Runner, "Ready",
        "GitLab answered 410: registration tokens are disabled for spec.registration.strategy: RegistrationToken.",
        "Use the default strategy (CreateRunner, POST /user/runners), or allow registration tokens in GitLab.";
    GitLabRateLimited: Runner, "Ready",
        "GitLab answered 429; every request to that GitLab with that token waits for Retry-After.",
        "Nothing, it retries. If it persists, lower spec.rateLimit.requestsPerSecond of connections sharing the token, or raise GitLab's limits.";
    GitLabRejected: Runner, "Ready",
        "GitLab refused the values (400 or 422), with its own message.",
        "Fix the field the message names in the Runner's spec.";
    GitLabError: Runner, "Ready",
        "GitLab answered with another error status (5xx and others); retried with backoff.",
        "Check GitLab's health; nothing is lost meanwhile.";
    GitLabUnreachable: Runner, "Ready",
        "No answer from GitLab: DNS, connection refused, TLS (untrusted certificate, name mismatch, expiry) or timeout; the message names the cause.",
        "Fix the network path or the connection's url, caBundleSecretRef/caBundleConfigMapRef, proxy or NetworkPolicy.";
    KubernetesError: Runner, "Ready",
        "A Kubernetes request failed (often RBAC: 403 on the named resource).",
        "Grant what the message names; the chart README's RBAC table lists what the operator needs.";
    InvalidSpec: Runner, "Ready",
        "The spec cannot be acted on (a value admission could not refuse, a project that vanished, a rotation interval below the floor).",
        "Fix the field the message names.";
    InvalidObject: Runner, "Ready",
        "The Runner does not decode (written past admission, e.g. with an older CRD); the other Runners are not affected.",
        "Fix or re-apply the object; the message names the field.";
    RunnerNotOwned: Runner, "Ready",
        "The GitLab runner in status.runnerId does not carry this Runner's ownership marker; nothing is changed.",
        "Set spec.adopt.runnerId to take it over (its token is reset), or remove the Runner.";
    RunnerClaimed: Runner, "Ready",
        "spec.adopt names a GitLab runner another Runner manages (in this cluster, or in a cluster of another --cluster-name); it is not adopted.",
        "Delete the other Runner with deletionPolicy: Orphan first, or adopt another runner.";
    SecretNotOwned: Runner, "Ready",
        "A Secret with the token Secret's name exists and is not this Runner's; it is never overwritten. (With --cluster-name, a Secret restored from a backup — labelled for this Runner, no owner — is taken back instead.)",
        "Delete that Secret or set spec.tokenSecret.name; after a restore, run the operator with the cluster name it had.";
    NotConverged: Runner, "Ready",
        "GitLab did not keep the changes after several rounds (something keeps changing the runner back).",
        "Find what else edits the runner in GitLab (a person, Terraform, another operator) and stop it.";
    DeletionBlocked: Runner, "Ready",
        "GitLab refused to delete the runner (revoked token, missing rights); the finalizer stays so nothing is orphaned silently.",
        "Fix the token or rights; or set deletionPolicy: Orphan to leave the runner in GitLab.";
    Resolved: Runner, "ConnectionReady",
        "The Runner's connection was found and may be used.",
        "Nothing to do.";
    Restarted: Runner, "ConsumersReady",
        "Every consumer was rolled onto the current token.",
        "Nothing to do.";
    ConsumerMissing: Runner, "ConsumersReady",
        "A workload in tokenSecret.consumers does not exist, so it was not restarted (the token was rotated anyway).",
        "Fix the consumer's kind or name, or create it.";
    ConsumerRestartsDisabled: Runner, "ConsumersReady",
        "Consumer restarts are not enabled for the Runner's namespace; the workloads keep the old token until restarted.",
        "`kubectl rollout restart` them, or enable restarts there (chart value consumerRestarts.namespaces, flag --consumer-restarts).";
    ConsumerRestartForbidden: Runner, "ConsumersReady",
        "RBAC refused to get or patch a consumer.",
        "Grant it (chart value consumerRestarts.namespaces), or restart the workloads yourself.";
    AutomaticRotationEnabled: Runner, "TokenRotationConflict",
        "A consumer does not set FF_DISABLE_AUTOMATIC_TOKEN_ROTATION=true: the runner process would rotate the token itself and the Secret's token would stop working.",
        "Set the variable to true in the consumer's pod template (the gitlab-runner chart: envVars).";
    MarkerNeedsRoom: Runner, "NoteTruncated",
        "spec.maintenanceNote was shortened in GitLab to leave room for the ownership marker.",
        "Shorten spec.maintenanceNote.";
    Connected: Connection, "Ready",
        "GET /version and GET /user succeeded with the token.",
        "Nothing to do.";
    ExpiresSoon: Connection, "TokenExpiring",
        "The access token expires within --token-expiry-warning (default 30 days); a Warning event AccessTokenExpiring repeats each check.",
        "Create a new token in GitLab with the same scopes and put it into the connection's token Secret.";
    NotExpiringSoon: Connection, "TokenExpiring",
        "The access token expires later than the warning window.",
        "Nothing to do.";
    NoExpiry: Connection, "TokenExpiring",
        "The access token does not expire.",
        "Nothing to do.";
    UnknownExpiry: Connection, "TokenExpiring",
        "GitLab reported an expiry that is not a date.",
        "Check the token in GitLab.";
    Sufficient: Connection, "TokenScopes",
        "The token's scopes allow everything the operator does.",
        "Nothing to do.";
    MissingScopes: Connection, "TokenScopes",
        "The token lacks a scope some features need; the message names the feature and the scope.",
        "Give the token the scope (or api).";
    Created: Event, "",
        "A GitLab runner was created and its token written to the Secret.",
        "Nothing to do.";
    Recreated: Event, "",
        "The GitLab runner had been deleted outside the operator; a new one was created.",
        "Nothing to do; find out who deletes runners if it repeats.";
    Updated: Event, "",
        "Fields of the GitLab runner were changed to match the spec (named in the message).",
        "Nothing to do.";
    DriftReverted: Event, "",
        "Someone changed the runner in GitLab; the spec's values were restored.",
        "Change the Runner's spec instead of the runner in GitLab.";
    Assigned: Event, "",
        "The runner was assigned to a project of spec.assignedProjects.",
        "Nothing to do.";
    Unassigned: Event, "",
        "The runner was unassigned from a project not in spec.assignedProjects.",
        "Nothing to do.";
    TokenRotated: Event, "",
        "The runner's token was reset and the new one written to the Secret (status.lastRotationReason says why).",
        "Nothing to do.";
    Adopted: Event, "",
        "An existing GitLab runner was taken over (spec.adopt); its token was reset.",
        "Nothing to do.";
    AdoptionChangesField: Event, "",
        "Adopting an existing GitLab runner changes one of its fields to the spec's value (one event per field, before → after).",
        "Nothing to do if intended; otherwise set the field in the spec to the value GitLab had (`runner-operator import` writes such a spec).";
    Deleted: Event, "",
        "The GitLab runner was deleted with its Runner.",
        "Nothing to do.";
    TakenOver: Event, "",
        "The GitLab runner this cluster (same --cluster-name) registered for a Runner of this namespace and name before a rebuild was taken over: its id is recorded, its marker names this Runner, and its token was kept (a restored Secret GitLab accepts) or reset.",
        "Nothing to do. Give every live cluster its own --cluster-name: two live clusters of one name would take each other's runners.";
    MarkerUpdated: Event, "",
        "Only the ownership marker in the runner's maintenance note changed: the cluster name was written in (--cluster-name set on a running installation), or the runner was taken over.",
        "Nothing to do.";
    MarkerKept: Event, "",
        "A Runner with deletionPolicy: Orphan was deleted, but its runner's ownership marker could not be removed (GitLab or the connection failed); `plan` lists the runner as an orphan and `prune --yes` may delete it once idle.",
        "Remove the `[runner-operator: …]` marker from the runner's maintenance note in GitLab.";
    Orphaned: Event, "",
        "deletionPolicy: Orphan: the GitLab runner was left registered when the Runner was deleted.",
        "Delete it in GitLab when no longer needed.";
    NotDeleted: Event, "",
        "The GitLab runner neither carried this Runner's marker nor was the one it adopted, so it was left in place.",
        "Delete it in GitLab yourself if it should go.";
    TokenRotationConflict: Event, "",
        "Same as the TokenRotationConflict condition (AutomaticRotationEnabled), once per new token.",
        "See AutomaticRotationEnabled.";
    AccessTokenExpiring: Event, "",
        "On a connection: its access token expires soon (see ExpiresSoon).",
        "See ExpiresSoon.";
}

/// Condition types and what each summarizes.
pub const CONDITION_TYPES: &[(&str, &str)] = &[
    (
        "Ready",
        "Runner: GitLab matches the spec and the token is in its Secret. Connection: the live check passed.",
    ),
    ("ConnectionReady", "Runner: its connection can be used."),
    (
        "ConsumersReady",
        "Runner: the workloads in tokenSecret.consumers were rolled onto the current token.",
    ),
    (
        "TokenRotationConflict",
        "Runner: a consumer would rotate the token behind the operator's back.",
    ),
    (
        "NoteTruncated",
        "Runner: spec.maintenanceNote was shortened in GitLab.",
    ),
    (
        "TokenExpiring",
        "Connection: its access token expires soon.",
    ),
    (
        "TokenScopes",
        "Connection: whether its token's scopes allow everything the operator does.",
    ),
];

/// Why a token is (re)issued; recorded in status as `lastRotationReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationReason {
    Created,
    Interval,
    Expiry,
    Requested,
    Recovered,
    Adopted,
    /// Taken over from this cluster's earlier incarnation of the Runner, its token unknown
    /// or dead.
    TakenOver,
}

impl RotationReason {
    pub const ALL: &[RotationReason] = &[
        RotationReason::Created,
        RotationReason::Interval,
        RotationReason::Expiry,
        RotationReason::Requested,
        RotationReason::Recovered,
        RotationReason::Adopted,
        RotationReason::TakenOver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RotationReason::Created => "Created",
            RotationReason::Interval => "Interval",
            RotationReason::Expiry => "Expiry",
            RotationReason::Requested => "Requested",
            RotationReason::Recovered => "Recovered",
            RotationReason::Adopted => "Adopted",
            RotationReason::TakenOver => "TakenOver",
        }
    }

    /// What it means, for docs/troubleshooting.md.
    pub fn meaning(self) -> &'static str {
        match self {
            RotationReason::Created => "issued when the runner was created",
            RotationReason::Interval => "spec.tokenRotation.interval passed",
            RotationReason::Expiry => {
                "the token was about to expire (spec.tokenRotation.beforeExpiry)"
            }
            RotationReason::Requested => {
                "the gitlab.runner-operator.dev/rotate-token annotation changed"
            }
            RotationReason::Recovered => {
                "the Secret was missing or edited by hand, or the runner was deleted in GitLab and registered again"
            }
            RotationReason::Adopted => "the runner was adopted (spec.adopt)",
            RotationReason::TakenOver => {
                "the runner was taken over from this cluster's earlier incarnation of the Runner (a rebuild) and no token GitLab accepts was restored"
            }
        }
    }

    pub fn parse(s: &str) -> Option<RotationReason> {
        Self::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// docs/troubleshooting.md.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Troubleshooting\n\n<!-- Generated from src/controller/reasons.rs by `.ci/generate`; a test keeps it in step with the code. -->\n\n\
Start with `kubectl get glrunners -A` (the Ready column) and `kubectl describe glrunner NAME -n NS`:\n\
the Ready condition's reason is one of those below, its message names the object and the fix, and\n\
the same words are in the Runner's events (`kubectl get events -n NS --field-selector involvedObject.name=NAME`)\n\
and in the operator's log. Connections: `kubectl describe gitlabconnection NAME -n NS`\n\
(or `clustergitlabconnection NAME`).\n\n## Conditions\n\n| Type | Meaning |\n|---|---|\n",
    );
    for (t, m) in CONDITION_TYPES {
        out.push_str(&format!("| `{t}` | {m} |\n"));
    }
    for (title, on) in [
        ("Runner condition reasons", Runner),
        ("Connection condition reasons", Connection),
        ("Event reasons", Event),
    ] {
        out.push_str(&format!("\n## {title}\n\n"));
        if on == Connection {
            out.push_str("A failing live check sets Ready=False with the failure reasons of the Runner table (`GitLabUnauthorized`, `GitLabUnreachable`, `ConnectionNotReady`, …).\n\n");
        }
        if on == Event {
            out.push_str("Failures on a Runner are also Warning events with the condition's reason.\n\n| Reason | Meaning | What to do |\n|---|---|---|\n");
        } else {
            out.push_str("| Reason | Condition | Meaning | What to do |\n|---|---|---|---|\n");
        }
        for (name, r) in Reason::ALL
            .iter()
            .map(|r| (r.as_str(), r.info()))
            .filter(|(_, r)| r.on == on)
        {
            if on == Event {
                out.push_str(&format!("| `{name}` | {} | {} |\n", r.meaning, r.fix));
            } else {
                out.push_str(&format!(
                    "| `{name}` | `{}` | {} | {} |\n",
                    r.condition, r.meaning, r.fix
                ));
            }
        }
    }
    out.push_str("\n## Why a token was issued (`status.lastRotationReason`)\n\n| Value | Meaning |\n|---|---|\n");
    for r in RotationReason::ALL {
        out.push_str(&format!("| `{}` | {} |\n", r.as_str(), r.meaning()));
    }
    out
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.as_str().to_string()
    }
}
