//! The runner managers (runner processes using a runner's token) shown in status: when to ask
//! GitLab for them and how to summarize them. Fetching on every resync would double the
//! steady-state cost, so they are read when GitLab's status of the runner changes (a process
//! came or went) and otherwise at most every `REFRESH_RESYNCS` resyncs.

use std::cmp::Ordering;
use std::time::Duration;

use crate::crd::{GitLabRunnerState, ManagersState};
use crate::gitlab::RunnerManager;

/// Resyncs between two reads of an unchanged runner's managers.
pub const REFRESH_RESYNCS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep what status has.
    Keep,
    /// `GET /runners/:id/managers`.
    Fetch,
    /// The runner never contacted GitLab: no managers, nothing to read.
    Empty,
}

/// Whether to read the managers in this pass. `checked_ago`: since this process last read them
/// (None: not since it started — then what status has is trusted until the next refresh).
pub fn decide(
    previous: Option<&GitLabRunnerState>,
    status_now: Option<&str>,
    contacted: bool,
    checked_ago: Option<Duration>,
    resync: Duration,
) -> Action {
    if !contacted {
        return Action::Empty;
    }
    let Some(prev) = previous.filter(|p| p.managers.is_some()) else {
        return Action::Fetch;
    };
    if prev.status.as_deref() != status_now {
        return Action::Fetch;
    }
    match checked_ago {
        Some(ago) if ago >= resync * REFRESH_RESYNCS => Action::Fetch,
        _ => Action::Keep,
    }
}

/// Orders versions numerically ("17.9.0" before "17.11.0"), then as text.
fn version_order(a: &str, b: &str) -> Ordering {
    let nums = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .take_while(|p| !p.is_empty())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    nums(a).cmp(&nums(b)).then_with(|| a.cmp(b))
}

pub fn summarize(managers: &[RunnerManager]) -> ManagersState {
    let online = managers
        .iter()
        .filter(|m| m.status.as_deref() == Some("online"))
        .count() as u32;
    let mut versions: Vec<String> = managers.iter().filter_map(|m| m.version.clone()).collect();
    versions.sort_by(|a, b| version_order(a, b));
    versions.dedup();
    let mut platforms: Vec<String> = managers
        .iter()
        .filter_map(|m| match (&m.platform, &m.architecture) {
            (Some(p), Some(a)) => Some(format!("{p}/{a}")),
            (Some(p), None) => Some(p.clone()),
            _ => None,
        })
        .collect();
    platforms.sort();
    platforms.dedup();
    let count = managers.len() as u32;
    ManagersState {
        count,
        online,
        summary: format!("{online}/{count}"),
        version: versions.join(","),
        versions,
        platforms,
        last_contact_at: managers.iter().filter_map(|m| m.contacted_at.clone()).max(),
    }
}

/// What a runner that never contacted GitLab shows.
pub fn none() -> ManagersState {
    summarize(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(version: &str, platform: &str, arch: &str, status: &str, at: &str) -> RunnerManager {
        RunnerManager {
            id: 1,
            system_id: format!("s_{version}_{arch}"),
            version: Some(version.into()),
            platform: Some(platform.into()),
            architecture: Some(arch.into()),
            contacted_at: Some(at.into()),
            status: Some(status.into()),
        }
    }

    #[test]
    fn summaries_for_zero_one_and_several_managers() {
        assert_eq!(
            summarize(&[]),
            ManagersState {
                summary: "0/0".into(),
                ..Default::default()
            }
        );
        let one = summarize(&[manager(
            "18.6.0",
            "linux",
            "amd64",
            "online",
            "2026-11-30T10:00:00.000Z",
        )]);
        assert_eq!((one.count, one.online, one.summary.as_str()), (1, 1, "1/1"));
        assert_eq!(one.version, "18.6.0");
        assert_eq!(one.platforms, vec!["linux/amd64"]);
        let several = summarize(&[
            manager(
                "17.11.0",
                "linux",
                "arm64",
                "offline",
                "2026-11-30T08:00:00.000Z",
            ),
            manager(
                "18.6.0",
                "linux",
                "amd64",
                "online",
                "2026-11-30T10:00:00.000Z",
            ),
            manager(
                "17.9.2",
                "windows",
                "amd64",
                "online",
                "2026-11-30T09:00:00.000Z",
            ),
            manager(
                "18.6.0",
                "linux",
                "amd64",
                "online",
                "2026-11-30T09:30:00.000Z",
            ),
        ]);
        assert_eq!((several.count, several.online), (4, 3));
        assert_eq!(several.summary, "3/4");
        assert_eq!(several.versions, vec!["17.9.2", "17.11.0", "18.6.0"]);
        assert_eq!(several.version, "17.9.2,17.11.0,18.6.0");
        assert_eq!(
            several.platforms,
            vec!["linux/amd64", "linux/arm64", "windows/amd64"]
        );
        assert_eq!(
            several.last_contact_at.as_deref(),
            Some("2026-11-30T10:00:00.000Z")
        );
    }

    #[test]
    fn managers_are_read_on_change_and_every_tenth_resync() {
        let resync = Duration::from_secs(600);
        let known = |status: &str| GitLabRunnerState {
            status: Some(status.into()),
            contacted_at: None,
            managers: Some(none()),
        };
        let cases = [
            // never contacted: nothing to read
            (None, Some("never_contacted"), false, None, Action::Empty),
            // first sight of a contacted runner
            (None, Some("online"), true, None, Action::Fetch),
            // status went offline → online: a process came
            (
                Some(known("offline")),
                Some("online"),
                true,
                Some(Duration::ZERO),
                Action::Fetch,
            ),
            // unchanged, read recently
            (
                Some(known("online")),
                Some("online"),
                true,
                Some(resync * 3),
                Action::Keep,
            ),
            // unchanged, but ten resyncs since the last read
            (
                Some(known("online")),
                Some("online"),
                true,
                Some(resync * 10),
                Action::Fetch,
            ),
            // after a restart: trust status until the next refresh
            (
                Some(known("online")),
                Some("online"),
                true,
                None,
                Action::Keep,
            ),
        ];
        for (prev, now, contacted, ago, want) in cases {
            assert_eq!(
                decide(prev.as_ref(), now, contacted, ago, resync),
                want,
                "{prev:?} {now:?} {contacted} {ago:?}"
            );
        }
    }
}
