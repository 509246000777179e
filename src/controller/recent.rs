//! What this process remembers of each Runner (by uid), so that passes cost nothing they need
//! not: the Runner as the operator last wrote it (the watch cache can lag behind that write),
//! the token Secret version it wrote or checked, when its last full pass is due again and what
//! it had seen (a pass triggered by the operator's own writes then does nothing), its failures
//! in a row, when its managers were read, and which undecodable generation was reported.
//! `forget` drops all of it when the Runner is deleted.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::caches::revision;
use crate::crd::Runner;

#[derive(Default)]
struct Entry {
    written: Option<Arc<Runner>>,
    /// (resourceVersion, token hash) of the token Secret.
    secret_version: Option<(String, String)>,
    /// When this process last wrote the token Secret, until a pass saw the cache hold it.
    secret_written: Option<std::time::Instant>,
    pass: Option<Memo>,
    /// Failed reconciles in a row (for the backoff).
    failures: u32,
    /// When this process last read the runner's managers.
    managers_read: Option<tokio::time::Instant>,
    /// The generation reported as not decoding.
    invalid_reported: Option<i64>,
}

/// The last full pass: what triggered it may change, and when the next one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memo {
    pub fingerprint: u64,
    /// The fingerprint without the rotate-token annotation.
    pub base: u64,
    pub due: Timestamp,
    /// The pass ended Ready.
    pub ready: bool,
}

#[derive(Default)]
pub struct Recent {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Recent {
    /// Reads an entry without creating one.
    fn get<T>(&self, uid: &str, f: impl FnOnce(&Entry) -> Option<T>) -> Option<T> {
        let map = self.entries.lock();
        map.get(uid).and_then(f)
    }

    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.entries.lock();
        f(map.entry(uid.to_string()).or_default())
    }

    /// The newer of the cached Runner and the one the operator last wrote. A copy that cannot
    /// be ordered (a server whose resourceVersions are not numbers) is `None`: read it live.
    pub fn newest(&self, cached: Arc<Runner>) -> Option<Arc<Runner>> {
        let uid = cached.uid().unwrap_or_default();
        self.with(&uid, |e| {
            let Some(w) = e.written.clone() else {
                return Some(cached.clone());
            };
            match (revision(&*cached), revision(&*w)) {
                (Some(c), Some(ours)) if c >= ours => {
                    // The cache caught up: forget the copy.
                    e.written = None;
                    Some(cached)
                }
                (Some(_), Some(_)) => Some(w),
                _ => None,
            }
        })
    }

    /// The Runner as the API server answered the operator's write.
    pub fn wrote(&self, mut runner: Runner) {
        super::caches::slim(&mut runner);
        let uid = runner.uid().unwrap_or_default();
        self.with(&uid, |e| e.written = Some(Arc::new(runner)));
    }

    /// The status of the operator's last write the cache has not caught up with.
    pub fn written_status(&self, uid: &str) -> Option<crate::crd::RunnerStatus> {
        self.get(uid, |e| e.written.as_ref().and_then(|w| w.status.clone()))
    }

    /// The token Secret's resourceVersion and the hash of the token it holds, as the
    /// operator wrote it or last checked it.
    pub fn secret_version(&self, uid: &str) -> Option<(String, String)> {
        self.get(uid, |e| e.secret_version.clone())
    }

    pub fn set_secret_version(&self, uid: &str, version: Option<(String, String)>) {
        self.with(uid, |e| e.secret_version = version);
    }

    /// The operator wrote the token Secret: this is its version now.
    pub fn wrote_secret(&self, uid: &str, version: Option<(String, String)>) {
        self.with(uid, |e| {
            e.secret_version = version;
            e.secret_written = Some(std::time::Instant::now());
        });
    }

    /// The Secret watch saw the token Secret deleted: from now on, no copy in the cache means
    /// it is gone, however recent the operator's last write.
    pub fn secret_deleted(&self, uid: &str) {
        if let Some(e) = self.entries.lock().get_mut(uid) {
            e.secret_written = None;
        }
    }

    /// Whether the cache's copy of the token Secret (its resourceVersion, None: no copy) only
    /// lags behind the operator's own write: older than that write, or not there yet within a
    /// few seconds of it. Then a pass would read what it already knows.
    pub fn secret_cache_lags(&self, uid: &str, cached: Option<&str>) -> bool {
        const LAG: std::time::Duration = std::time::Duration::from_secs(30);
        self.with(uid, |e| {
            let Some((ours, _)) = &e.secret_version else {
                return false;
            };
            match cached {
                Some(c) if c == ours => {
                    // Caught up: from now on, no copy means the Secret is gone.
                    e.secret_written = None;
                    false
                }
                Some(c) => matches!(
                    (c.parse::<u64>(), ours.parse::<u64>()),
                    (Ok(c), Ok(o)) if c < o
                ),
                None => e.secret_written.is_some_and(|t| t.elapsed() < LAG),
            }
        })
    }

    pub fn memo(&self, uid: &str) -> Option<Memo> {
        self.get(uid, |e| e.pass)
    }

    pub fn set_memo(&self, uid: &str, memo: Option<Memo>) {
        self.with(uid, |e| e.pass = memo);
    }

    /// One more failure in a row; returns how many.
    pub fn failed(&self, uid: &str) -> u32 {
        self.with(uid, |e| {
            e.failures += 1;
            e.failures
        })
    }

    pub fn succeeded(&self, uid: &str) {
        if let Some(e) = self.entries.lock().get_mut(uid) {
            e.failures = 0;
        }
    }

    /// How long ago the runner's managers were read, if they were.
    pub fn managers_read_ago(&self, uid: &str) -> Option<std::time::Duration> {
        self.get(uid, |e| e.managers_read.map(|t| t.elapsed()))
    }

    pub fn managers_read(&self, uid: &str) {
        self.with(uid, |e| e.managers_read = Some(tokio::time::Instant::now()));
    }

    /// Whether this generation of an undecodable Runner is reported for the first time (and
    /// records that it is).
    pub fn first_report_of_invalid(&self, uid: &str, generation: i64) -> bool {
        self.with(uid, |e| {
            e.invalid_reported.replace(generation) != Some(generation)
        })
    }

    /// The Runner is gone: nothing to remember.
    pub fn forget(&self, uid: &str) {
        self.entries.lock().remove(uid);
    }
}

/// What a pass depends on besides GitLab and the clock: the Runner's spec (generation), its
/// labels and annotations (the rotate-token request), its deletion, the connection's spec and
/// the token Secret's version. The operator's own status writes change none of these.
/// Returns the fingerprint with and without the rotate-token annotation.
pub fn fingerprint(
    runner: &Runner,
    connection_generation: Option<i64>,
    secret_version: Option<&str>,
) -> (u64, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = runner.meta();
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                && k.as_str() != crate::crd::ROTATE_ANNOTATION
        })
        .for_each(|kv| kv.hash(&mut h));
    meta.deletion_timestamp.is_some().hash(&mut h);
    connection_generation.hash(&mut h);
    secret_version.hash(&mut h);
    let base = h.finish();
    runner
        .annotations()
        .get(crate::crd::ROTATE_ANNOTATION)
        .hash(&mut h);
    (h.finish(), base)
}

/// Whether a pass checks GitLab now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check now: something changed (`periodic: false`), or the resync is due.
    Run { periodic: bool },
    /// Only the rotate-token request changed since a check that ended Ready: reset the token
    /// without reading the runner first (a runner gone meanwhile answers 404, and then the
    /// pass checks everything).
    Rotate,
    /// Nothing changed since the last check and the next is not due: wake then.
    Wait(std::time::Duration),
}

/// Decides whether a pass checks GitLab. `memo`: the last full pass in this process;
/// `first_check`: for a Runner this process has not checked yet whose status says it was
/// settled (Ready, current generation, nothing pending), when its first check is due.
pub fn gate(
    memo: Option<Memo>,
    (fingerprint, base): (u64, u64),
    now: Timestamp,
    first_check: Option<Timestamp>,
) -> Gate {
    // Below this, waking again costs more than checking.
    const SLACK: std::time::Duration = std::time::Duration::from_millis(500);
    let until =
        |due: Timestamp| std::time::Duration::try_from(due.duration_since(now)).unwrap_or_default();
    match (memo, first_check) {
        (Some(m), _) if m.fingerprint == fingerprint => match until(m.due) {
            wait if wait > SLACK => Gate::Wait(wait),
            _ => Gate::Run { periodic: true },
        },
        (Some(m), _) if m.base == base && m.ready => Gate::Rotate,
        (Some(_), _) => Gate::Run { periodic: false },
        (None, Some(due)) if until(due) > SLACK => Gate::Wait(until(due)),
        (None, _) => Gate::Run { periodic: false },
    }
}

/// Where in the resync period a Runner's first check after a start falls: spread evenly by
/// its uid, so a restart does not check every Runner at once.
pub fn spread(uid: &str, period: std::time::Duration) -> std::time::Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let frac = (h.finish() % 10_000) as f64 / 10_000.0;
    period.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runner(rv: &str, generation: i64) -> Runner {
        serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": "ci", "uid": "u-1", "resourceVersion": rv, "generation": generation}, "spec": {"connectionRef": {"name": "g"}, "runnerType": "instance_type"}})).unwrap()
    }

    #[test]
    fn newest_prefers_our_write_until_the_cache_catches_up() {
        let recent = Recent::default();
        let cached = Arc::new(runner("10", 1));
        assert_eq!(
            recent
                .newest(cached.clone())
                .unwrap()
                .resource_version()
                .as_deref(),
            Some("10")
        );
        recent.wrote(runner("12", 1));
        assert_eq!(
            recent.newest(cached).unwrap().resource_version().as_deref(),
            Some("12")
        );
        let caught_up = Arc::new(runner("13", 1));
        assert_eq!(
            recent
                .newest(caught_up.clone())
                .unwrap()
                .resource_version()
                .as_deref(),
            Some("13")
        );
        // Forgotten once seen: an older copy is no longer replaced.
        recent.wrote(runner("20", 1));
        assert!(recent.newest(Arc::new(runner("abc", 1))).is_none());
    }

    #[test]
    fn a_secret_cache_behind_our_write_lags_a_newer_or_missing_one_does_not() {
        let recent = Recent::default();
        assert!(!recent.secret_cache_lags("u", Some("5")), "nothing written");
        recent.set_secret_version("u", Some(("10".into(), "h".into())));
        assert!(
            !recent.secret_cache_lags("u", None),
            "checked, not written: gone"
        );
        recent.wrote_secret("u", Some(("10".into(), "h".into())));
        assert!(recent.secret_cache_lags("u", Some("9")));
        assert!(
            recent.secret_cache_lags("u", None),
            "just written, not cached yet"
        );
        assert!(!recent.secret_cache_lags("u", Some("11")), "changed since");
        assert!(!recent.secret_cache_lags("u", Some("10")));
        assert!(
            !recent.secret_cache_lags("u", None),
            "seen, then gone: deleted"
        );
        assert!(
            !recent.secret_cache_lags("u", Some("x")),
            "cannot be ordered"
        );
        // Deleted before any pass saw the cache catch up: the watch's Delete says it is gone.
        recent.wrote_secret("u", Some(("12".into(), "h".into())));
        assert!(recent.secret_cache_lags("u", None), "just written");
        recent.secret_deleted("u");
        assert!(!recent.secret_cache_lags("u", None), "deleted: gone");
    }

    #[test]
    fn fingerprint_ignores_status_but_not_spec_annotations_or_secret() {
        let a = runner("1", 1);
        let mut b = runner("2", 1);
        b.status = Some(Default::default());
        assert_eq!(
            fingerprint(&a, Some(1), Some("5")),
            fingerprint(&b, Some(1), Some("5"))
        );
        assert_ne!(
            fingerprint(&a, Some(1), Some("5")),
            fingerprint(&runner("3", 2), Some(1), Some("5"))
        );
        assert_ne!(
            fingerprint(&a, Some(1), Some("5")),
            fingerprint(&a, Some(2), Some("5"))
        );
        assert_ne!(
            fingerprint(&a, Some(1), Some("5")),
            fingerprint(&a, Some(1), Some("6"))
        );
        let mut c = runner("4", 1);
        c.annotations_mut().insert(
            "gitlab.runner-operator.dev/rotate-token".into(),
            "now".into(),
        );
        assert_ne!(
            fingerprint(&a, Some(1), Some("5")),
            fingerprint(&c, Some(1), Some("5"))
        );
    }

    #[test]
    fn gate_runs_changes_at_once_and_resyncs_when_due() {
        let now: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let later = |s: i64| now + std::time::Duration::from_secs(s as u64);
        let memo = |due| {
            Some(Memo {
                fingerprint: 7,
                base: 70,
                due,
                ready: true,
            })
        };
        let secs = std::time::Duration::from_secs;
        // The operator's own writes: same fingerprint, not due.
        assert_eq!(
            gate(memo(later(60)), (7, 70), now, None),
            Gate::Wait(secs(60))
        );
        // Due (or within the slack): a periodic check.
        assert_eq!(
            gate(memo(now), (7, 70), now, None),
            Gate::Run { periodic: true }
        );
        assert_eq!(
            gate(memo(later(0)), (7, 70), later(30), None),
            Gate::Run { periodic: true }
        );
        // Anything that matters changed: now, whatever is due.
        assert_eq!(
            gate(memo(later(60)), (8, 80), now, Some(later(5))),
            Gate::Run { periodic: false }
        );
        // Only the rotate-token request changed after a Ready check: reset without reading.
        assert_eq!(gate(memo(later(60)), (8, 70), now, None), Gate::Rotate);
        let not_ready = Some(Memo {
            ready: false,
            ..memo(later(60)).unwrap()
        });
        assert_eq!(
            gate(not_ready, (8, 70), now, None),
            Gate::Run { periodic: false }
        );
        // First sight after a start: settled Runners wait for their place in the period.
        assert_eq!(
            gate(None, (7, 70), now, Some(later(42))),
            Gate::Wait(secs(42))
        );
        assert_eq!(
            gate(None, (7, 70), now, Some(now)),
            Gate::Run { periodic: false }
        );
        assert_eq!(
            gate(None, (7, 70), now, None),
            Gate::Run { periodic: false }
        );
    }

    #[test]
    fn spread_falls_within_the_period() {
        let p = std::time::Duration::from_secs(600);
        let d: Vec<_> = (0..100).map(|i| spread(&format!("uid-{i}"), p)).collect();
        assert!(d.iter().all(|x| *x < p));
        assert!(d.iter().any(|x| *x < p / 4) && d.iter().any(|x| *x > p * 3 / 4));
    }
}
