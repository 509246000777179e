//! URL building, headers, backoff and redaction.

use super::*;

#[test]
fn paths_are_one_segment() {
    assert_eq!(segment("platform/ci-tools"), "platform%2Fci-tools");
    assert_eq!(segment("42"), "42");
    assert_eq!(segment("a b"), "a%20b");
}

#[test]
fn link_header_next() {
    let mut h = HeaderMap::new();
    h.insert("link", HeaderValue::from_static("<https://g/api/v4/runners?page=1&per_page=2>; rel=\"prev\", <https://g/api/v4/runners?page=3&per_page=2>; rel=\"next\", <https://g/api/v4/runners?page=1&per_page=2>; rel=\"first\""));
    assert_eq!(
        next_link(&h).as_deref(),
        Some("https://g/api/v4/runners?page=3&per_page=2")
    );
}

#[test]
fn retry_after_in_every_form() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("7"));
    assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    let later = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(120))
        .unwrap();
    let date = later.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
    h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
    let d = retry_after(&h).unwrap();
    assert!(
        d >= Duration::from_secs(110) && d <= Duration::from_secs(121),
        "{d:?}"
    );
    let mut h = HeaderMap::new();
    let reset = (k8s_openapi::jiff::Timestamp::now().as_second() + 30).to_string();
    h.insert("ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
    let d = retry_after(&h).unwrap();
    assert!(
        d >= Duration::from_secs(29) && d <= Duration::from_secs(31),
        "{d:?}"
    );
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[test]
fn backoff_is_capped_and_jittered() {
    let p = RetryPolicy::default();
    for attempt in 0..40 {
        let d = p.backoff(attempt);
        assert!(d <= p.cap, "{d:?}");
        assert!(d >= (p.base * (1 << attempt.min(16))).min(p.cap) / 2);
    }
}

#[test]
fn debug_never_shows_the_token() {
    let cfg = ClientConfig::new(
        "https://gitlab.example.com",
        SecretString::from("glpat-supersecret"),
    );
    assert!(!format!("{cfg:?}").contains("supersecret"));
    let client = GitLabClient::new(cfg).expect("client");
    assert!(!format!("{client:?}").contains("supersecret"));
}
