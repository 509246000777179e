//! Go-style durations (`720h`, `1h30m`, `90s`) as used across Kubernetes APIs.

use std::time::Duration;

/// The schema pattern for a duration string; the parser below accepts exactly this language.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+$";

/// Parses `720h`, `1h30m`, `2.5h`, `90s`, `1d` (days are an extension Kubernetes users expect;
/// a day is 24 hours). The language is the schema's pattern; the arithmetic is jiff's.
pub fn parse(s: &str) -> Result<Duration, String> {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(DURATION_PATTERN).unwrap_or_else(|e| unreachable!("a literal: {e}"))
    });
    let bad = || format!("invalid duration {s:?}: use a number and unit, e.g. 720h, 1h30m, 90s");
    if !PATTERN.is_match(s) {
        return Err(bad());
    }
    // jiff allows a fraction on the last unit only; Go (and the pattern) on any unit, so each
    // number-and-unit piece is parsed and summed.
    let mut total = k8s_openapi::jiff::SignedDuration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let unit_at = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let next = rest[unit_at..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| unit_at + i);
        let (piece, unit) = (&rest[..next], &rest[unit_at..next]);
        let d = if unit == "d" {
            let days: f64 = rest[..unit_at].parse().map_err(|_| bad())?;
            k8s_openapi::jiff::SignedDuration::try_from_secs_f64(days * 86_400.0)
                .map_err(|_| bad())?
        } else {
            piece
                .parse::<k8s_openapi::jiff::SignedDuration>()
                .map_err(|_| bad())?
        };
        total = total.checked_add(d).ok_or_else(bad)?;
        rest = &rest[next..];
    }
    Duration::try_from(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172800)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for s in ["", "h", "10", "10x", "-1h", "1h 2m"] {
            let e = parse(s).expect_err(s);
            assert!(e.contains("e.g. 720h"), "{e}");
        }
    }
}
