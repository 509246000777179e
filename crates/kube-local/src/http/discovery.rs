//! Discovery (groups, resources, OpenAPI) and the Table rendering kubectl asks for.

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use crate::Shared;
use crate::registry::ResourceDef;
use crate::select::json_path;
use crate::store::{Status, Store};

use super::*;

pub(crate) fn openapi_doc(shared: &Shared, group: &str, version: &str) -> Response {
    match crate::openapi::document(&shared.lock(), group, version) {
        Some(doc) => reply(200, &doc),
        None => status(Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )),
    }
}

pub(crate) fn group_list(st: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for r in st.resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version.clone()),
            Some(_) => {}
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    // As kube-apiserver orders them: built-in groups first, then CRD groups (all of priority
    // 1000) by name. kubectl resolves a resource name two groups share to the first.
    let is_crd = |g: &str| st.resources.iter().any(|r| r.group == g && r.crd.is_some());
    groups.sort_by_key(|(g, _)| {
        if is_crd(g) {
            (1, g.clone())
        } else {
            (0, String::new())
        }
    });
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn resource_list(st: &Store, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = st
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(ResourceDef::api_resources)
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// A `Table` when kubectl asks for one (printer columns), else the object or list.
pub(crate) fn maybe_table(
    res: &ResourceDef,
    items: Vec<Value>,
    headers: &HeaderMap,
    rv: u64,
    is_list: bool,
) -> Value {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("as=PartialObjectMetadata") {
        // Metadata only (kube's metadata watcher): what the real server sends for it.
        let metas: Vec<Value> = items.iter().map(partial).collect();
        if is_list {
            return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": rv.to_string()}, "items": metas});
        }
        return metas.into_iter().next().unwrap_or(Value::Null);
    }
    if !accept.contains("as=Table") {
        if is_list {
            return json!({"apiVersion": res.api_version(), "kind": format!("{}List", res.kind), "metadata": {"resourceVersion": rv.to_string()}, "items": items});
        }
        return items.into_iter().next().unwrap_or(Value::Null);
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let custom: Vec<Value> = res.printer_columns.clone();
    let has_age = custom
        .iter()
        .any(|c| c["jsonPath"] == ".metadata.creationTimestamp");
    for c in &custom {
        columns.push(json!({"name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")), "description": c.get("description").cloned().unwrap_or(json!("")), "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
    }
    if !has_age {
        columns.push(
            json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}),
        );
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &custom {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let vals = json_path(o, path);
                // As apiextensions' table convertor: the first result only; none is null
                // (kubectl prints an empty cell); dates become ages.
                let cell = match (c["type"].as_str(), vals.first()) {
                    (_, None) => Value::Null,
                    (Some("date"), Some(Value::String(s))) => json!(age(s)),
                    (_, Some(v)) => v.clone(),
                };
                cells.push(cell);
            }
            if !has_age {
                cells.push(json!(age(o["metadata"]["creationTimestamp"].as_str().unwrap_or_default())));
            }
            let mut meta = o["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": columns, "rows": rows})
}

/// Whether the client asked for metadata only (`as=PartialObjectMetadata[List]`).
pub(crate) fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// An object as `PartialObjectMetadata`: its metadata, nothing of its data.
pub(crate) fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
}

pub(crate) fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return ts.to_string();
    };
    human_duration(jiff::Timestamp::now().as_second() - t.as_second())
}

/// apimachinery's `duration.HumanDuration`, which kube-apiserver uses for ages: a time in the
/// future shows as `<invalid>`.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    let with = |big: i64, unit: &str, small: i64, sunit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{sunit}")
        }
    };
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if minutes < 10 => with(minutes, "m", secs % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", (hours / 24) % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}
