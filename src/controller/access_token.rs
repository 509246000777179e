//! The connection's own access token: what its scopes allow the operator to do, and when it
//! expires (from `GET /personal_access_tokens/self`). Pure: the connection controller reports.

use crate::controller::reasons::Reason;
use std::time::Duration;

use k8s_openapi::jiff::{Timestamp, civil::Date, tz::TimeZone};

use crate::crd::AccessTokenState;
use crate::gitlab::AccessTokenInfo;

pub const TOKEN_EXPIRING: &str = "TokenExpiring";
pub const TOKEN_SCOPES: &str = "TokenScopes";

/// What each part of the operator's work needs, as GitLab checks it (`lib/api/api.rb`,
/// `lib/api/ci/runners.rb`, `lib/api/user_runners.rb`): any one of the scopes listed.
const NEEDS: &[(&str, &[&str])] = &[
    (
        "creating runners (POST /user/runners)",
        &["api", "create_runner"],
    ),
    (
        "updating and deleting runners and rotating their tokens",
        &["api", "manage_runner"],
    ),
    (
        "resolving spec.project and spec.group, and finding a runner whose creation was interrupted",
        &["api", "read_api"],
    ),
    (
        "spec.assignedProjects (assigning runners to more projects)",
        &["api"],
    ),
];

/// One sentence per feature the scopes do not allow; empty when they allow everything.
pub fn missing(scopes: &[String]) -> Vec<String> {
    NEEDS
        .iter()
        .filter(|(_, any)| !any.iter().any(|s| scopes.iter().any(|have| have == s)))
        .map(|(feature, any)| {
            format!(
                "{feature} needs the scope {} (the token has {})",
                any.join(" or "),
                if scopes.is_empty() {
                    "none".to_string()
                } else {
                    scopes.join(", ")
                }
            )
        })
        .collect()
}

/// GitLab's tokens stop working at 00:00 UTC of their expiry date.
pub fn expires_at(date: &str) -> Option<Timestamp> {
    let d: Date = date.get(..10)?.parse().ok()?;
    d.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The expiry's condition: (expiring?, reason, message).
pub fn expiry(
    info: &AccessTokenInfo,
    now: Timestamp,
    warn_before: Duration,
) -> (bool, Reason, String) {
    let Some(date) = info.expires_at.as_deref() else {
        return (
            false,
            Reason::NoExpiry,
            format!("the access token {:?} does not expire", info.name),
        );
    };
    let Some(at) = expires_at(date) else {
        return (
            false,
            Reason::UnknownExpiry,
            format!("GitLab reports an expiry date {date:?} that is not a date"),
        );
    };
    let left = at.as_second() - now.as_second();
    let days = left.div_euclid(86_400);
    if left <= warn_before.as_secs() as i64 {
        (
            true,
            Reason::ExpiresSoon,
            format!(
                "the access token {:?} expires on {date} (in {days} days): create a new one in GitLab with the same scopes and put it into the connection's token Secret before then; every Runner of this connection stops being reconciled when it expires",
                info.name
            ),
        )
    } else {
        (
            false,
            Reason::NotExpiringSoon,
            format!(
                "the access token {:?} expires on {date} (in {days} days)",
                info.name
            ),
        )
    }
}

/// What status shows about the token.
pub fn state(info: &AccessTokenInfo) -> AccessTokenState {
    let mut scopes = info.scopes.clone();
    scopes.sort();
    AccessTokenState {
        name: info.name.clone(),
        scopes,
        expires_at: info.expires_at.clone(),
        active: info.active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(scopes: &[&str], expires: Option<&str>) -> AccessTokenInfo {
        AccessTokenInfo {
            id: 7,
            name: "ops".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            active: true,
            revoked: false,
            expires_at: expires.map(str::to_string),
        }
    }

    #[test]
    fn scopes_name_the_features_they_lack() {
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(missing(&s(&["api"])).is_empty());
        let narrow = missing(&s(&["create_runner", "manage_runner", "read_api"]));
        assert_eq!(narrow.len(), 1, "{narrow:?}");
        assert!(
            narrow[0].starts_with("spec.assignedProjects")
                && narrow[0].contains("needs the scope api")
        );
        let read_only = missing(&s(&["read_api"]));
        assert_eq!(read_only.len(), 3, "{read_only:?}");
        assert!(read_only[0].contains("create_runner"));
        assert!(read_only[1].contains("manage_runner"));
        assert_eq!(missing(&[]).len(), 4);
    }

    #[test]
    fn expiry_warns_within_the_window() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let month = Duration::from_secs(30 * 86_400);
        let (soon, reason, msg) = expiry(&info(&["api"], Some("2026-12-10")), now, month);
        assert!(soon);
        assert_eq!(reason, Reason::ExpiresSoon);
        assert!(msg.contains("2026-12-10 (in 9 days)"), "{msg}");
        let (soon, reason, _) = expiry(&info(&["api"], Some("2027-06-01")), now, month);
        assert_eq!((soon, reason), (false, Reason::NotExpiringSoon));
        let (soon, reason, _) = expiry(&info(&["api"], None), now, month);
        assert_eq!((soon, reason), (false, Reason::NoExpiry));
        // Expires at 00:00 UTC of its date.
        assert_eq!(
            expires_at("2026-12-10").unwrap().to_string(),
            "2026-12-10T00:00:00Z"
        );
    }
}
