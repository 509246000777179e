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
    use backon::BackoffBuilder;
    let p = RetryPolicy::default();
    for _ in 0..20 {
        let waits: Vec<Duration> = p.backoff().build().collect();
        assert_eq!(
            waits.len() as u32,
            p.max_retries + p.max_rate_limited_retries
        );
        for (attempt, d) in waits.into_iter().enumerate() {
            let step = (p.base * (1 << attempt)).min(p.cap);
            assert!(
                d >= step / 2 && d < step,
                "attempt {attempt}: {d:?} not in [{:?}, {step:?})",
                step / 2
            );
        }
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
