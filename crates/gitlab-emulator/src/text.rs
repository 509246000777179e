//! Text as GitLab makes it: token bodies and tag lists.

use serde_json::Value;

/// Random `[A-Za-z0-9_-]` characters, like GitLab's token bodies.
pub fn random_string(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..n)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

/// GitLab's tag parsing: strings split on commas, array items split too, trimmed, blanks
/// dropped, duplicates removed in order of first occurrence.
pub fn parse_tags(value: &Value) -> Option<Vec<String>> {
    let pieces: Vec<String> = match value {
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .flat_map(|i| match i {
                Value::String(s) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
                other => vec![other.to_string()],
            })
            .collect(),
        Value::Null => vec![],
        _ => return None,
    };
    let mut out: Vec<String> = Vec::new();
    for p in pieces {
        let t = p.trim().to_string();
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::iso;
    use serde_json::json;

    #[test]
    fn tag_parsing() {
        assert_eq!(
            parse_tags(&json!("tag1, tag2")),
            Some(vec!["tag1".into(), "tag2".into()])
        );
        assert_eq!(
            parse_tags(&json!(["a,b", "c", " a "])),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(parse_tags(&json!("")), Some(vec![]));
    }

    #[test]
    fn iso_has_milliseconds() {
        assert_eq!(iso(1_717_931_522_507), "2024-06-09T11:12:02.507Z");
    }
}
