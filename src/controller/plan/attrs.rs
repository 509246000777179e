//! The runner's fields as the spec wants them and as GitLab holds them, and what changes
//! between the two (before → after, for events and `plan`).

use std::collections::BTreeSet;

use crate::gitlab::{RunnerAttributes, RunnerDetails};

/// The runner fields as the spec wants them in GitLab (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredAttrs {
    pub description: String,
    pub tags: BTreeSet<String>,
    pub run_untagged: bool,
    pub paused: bool,
    pub locked: bool,
    pub access_level: String,
    pub maximum_timeout: Option<i64>,
    /// The user's note plus our ownership marker.
    pub maintenance_note: String,
}

impl DesiredAttrs {
    /// Everything, for a create.
    pub fn all(&self) -> RunnerAttributes {
        RunnerAttributes {
            description: Some(self.description.clone()),
            paused: Some(self.paused),
            tag_list: Some(self.tags.iter().cloned().collect()),
            run_untagged: Some(self.run_untagged),
            locked: Some(self.locked),
            access_level: Some(self.access_level.clone()),
            maximum_timeout: self.maximum_timeout.map(Some),
            maintenance_note: Some(self.maintenance_note.clone()),
        }
    }

    /// The same fields as GitLab holds them, GitLab's defaults filled in where it omits one.
    pub fn seen(d: &RunnerDetails) -> DesiredAttrs {
        DesiredAttrs {
            description: d.description.clone().unwrap_or_default(),
            tags: d.tag_list.iter().cloned().collect(),
            run_untagged: d.run_untagged.unwrap_or(true),
            paused: d.is_paused(),
            locked: d.locked.unwrap_or(false),
            access_level: d
                .access_level
                .clone()
                .unwrap_or_else(|| "not_protected".into()),
            maximum_timeout: d.maximum_timeout,
            maintenance_note: d.maintenance_note.clone().unwrap_or_default(),
        }
    }

    /// Only what differs from GitLab's view (tags as a set, unset timeout = null).
    pub fn diff(&self, seen: &RunnerDetails) -> RunnerAttributes {
        let seen = DesiredAttrs::seen(seen);
        RunnerAttributes {
            description: (seen.description != self.description).then(|| self.description.clone()),
            paused: (seen.paused != self.paused).then_some(self.paused),
            tag_list: (seen.tags != self.tags).then(|| self.tags.iter().cloned().collect()),
            run_untagged: (seen.run_untagged != self.run_untagged).then_some(self.run_untagged),
            locked: (seen.locked != self.locked).then_some(self.locked),
            access_level: (seen.access_level != self.access_level)
                .then(|| self.access_level.clone()),
            maximum_timeout: (seen.maximum_timeout != self.maximum_timeout)
                .then_some(self.maximum_timeout),
            maintenance_note: (seen.maintenance_note != self.maintenance_note)
                .then(|| self.maintenance_note.clone()),
        }
    }
}

/// One field an update changes, in the spec's casing; `before` is None when GitLab's value is
/// not known. Values are JSON as the spec writes them (an unset timeout is null).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: Option<serde_json::Value>,
    pub after: serde_json::Value,
}

impl FieldChange {
    /// `field: before → after`, long texts shortened.
    pub fn text(&self) -> String {
        format!(
            "{}: {}",
            self.field,
            before_after(self.before.as_ref(), &self.after)
        )
    }
}

/// `before → after` as people read it (`?` when not known, long texts shortened).
pub fn before_after(before: Option<&serde_json::Value>, after: &serde_json::Value) -> String {
    format!("{} → {}", before.map_or("?".to_string(), show), show(after))
}

/// One value as people read it (`none` for null, long texts shortened, lists sorted).
pub fn shown(v: &serde_json::Value) -> String {
    show(v)
}

fn show(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".into(),
        Value::String(s) => {
            let one_line = s.replace('\n', " ");
            if one_line.chars().count() > 40 {
                format!("{:?}", one_line.chars().take(39).collect::<String>() + "…")
            } else {
                format!("{one_line:?}")
            }
        }
        Value::Array(items) => {
            let mut t: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect();
            t.sort();
            format!("[{}]", t.join(", "))
        }
        other => other.to_string(),
    }
}

/// The fields an update changes, before and after, in a fixed order.
pub fn field_changes(seen: Option<&RunnerDetails>, a: &RunnerAttributes) -> Vec<FieldChange> {
    use serde_json::{Value, json};
    let seen = seen.map(DesiredAttrs::seen);
    let mut out = vec![];
    let mut push = |field, before: &dyn Fn(&DesiredAttrs) -> Value, after: Value| {
        out.push(FieldChange {
            field,
            before: seen.as_ref().map(before),
            after,
        })
    };
    let sorted = |t: &mut Vec<String>| {
        t.sort();
        json!(t)
    };
    if let Some(v) = &a.description {
        push("description", &|d| json!(d.description), json!(v));
    }
    if let Some(v) = a.paused {
        push("paused", &|d| json!(d.paused), json!(v));
    }
    if let Some(v) = &a.tag_list {
        let after = sorted(&mut v.clone());
        push("tags", &|d| json!(d.tags), after);
    }
    if let Some(v) = a.run_untagged {
        push("runUntagged", &|d| json!(d.run_untagged), json!(v));
    }
    if let Some(v) = a.locked {
        push("locked", &|d| json!(d.locked), json!(v));
    }
    if let Some(v) = &a.access_level {
        push("accessLevel", &|d| json!(d.access_level), json!(v));
    }
    if let Some(v) = a.maximum_timeout {
        push("maximumTimeout", &|d| json!(d.maximum_timeout), json!(v));
    }
    if let Some(v) = &a.maintenance_note {
        push("maintenanceNote", &|d| json!(d.maintenance_note), json!(v));
    }
    out
}

/// The fields an update changes, each as `field: before → after` (long texts shortened), so
/// an event says exactly what moved — "my description disappeared" has an answer.
pub fn describe_changes(seen: Option<&RunnerDetails>, a: &RunnerAttributes) -> String {
    field_changes(seen, a)
        .iter()
        .map(FieldChange::text)
        .collect::<Vec<_>>()
        .join("; ")
}
