//! Server-side apply with field managers and conflicts, and the patch formats (merge, JSON,
//! strategic merge as merge).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;
use crate::registry::ResourceDef;

impl Store {
    /// Server-side apply by `manager`.
    pub fn apply(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        applied: Value,
        force: bool,
        opts: &WriteOpts,
    ) -> Result<Value, Status> {
        typed_patch_check(res, ns, name, &applied)?;
        let existing = self.get(res, ns, name).ok();
        let Some(current) = existing else {
            if opts.subresource.is_some() {
                return Err(Status::not_found(res, name));
            }
            let mut obj = applied;
            obj["metadata"]["name"] = json!(name);
            return self.create(res, ns, obj, opts.manager, opts.strict);
        };
        let mut applied_paths = BTreeSet::new();
        leaf_paths(&applied, "", &mut applied_paths);
        let in_scope = |p: &String| match opts.subresource {
            Some("status") => p.starts_with(".status"),
            _ => !res.status_subresource || !p.starts_with(".status"),
        };
        applied_paths.retain(|p| in_scope(p));
        let uid = current["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let owners = self.owners.entry(uid.clone()).or_default().clone();
        let mut conflicts = vec![];
        for (m, paths) in &owners {
            if m == opts.manager {
                continue;
            }
            for p in paths.intersection(&applied_paths) {
                if at(&current, p) != at(&applied, p) {
                    conflicts.push((m.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let list = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {p}"))
                .collect::<Vec<_>>()
                .join("\n- ");
            return Err(Status::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {list}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" }
                ),
                json!({"causes": conflicts.iter().map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": p})).collect::<Vec<_>>()}),
            ));
        }
        let mut new = current.clone();
        let previously = owners.get(opts.manager).cloned().unwrap_or_default();
        for p in previously
            .iter()
            .filter(|p| in_scope(p) && !applied_paths.contains(*p))
        {
            let owned_by_others = owners
                .iter()
                .any(|(m, ps)| m != opts.manager && ps.contains(p));
            if !owned_by_others {
                remove_path(&mut new, p);
            }
        }
        let mut scoped = applied.clone();
        if let Some(m) = scoped.as_object_mut() {
            match opts.subresource {
                Some("status") => m.retain(|k, _| k == "status"),
                _ if res.status_subresource => {
                    m.remove("status");
                }
                _ => {}
            }
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
        }
        deep_merge(&mut new, &scoped);
        let result = self.update(
            res,
            ns,
            name,
            without_rv(&new),
            &WriteOpts {
                manager: "__apply__",
                ..*opts
            },
        )?;
        let entry = self.owners.entry(uid).or_default();
        entry.remove("__apply__");
        for (m, paths) in entry.iter_mut() {
            if m != opts.manager {
                paths.retain(|p| !applied_paths.contains(p));
            }
        }
        let mine = entry.entry(opts.manager.to_string()).or_default();
        mine.retain(|p| !in_scope(p));
        mine.extend(applied_paths);
        Ok(result)
    }
}

/// Merge patch (RFC 7386) and JSON patch (RFC 6902, with `test`).
pub fn apply_patch(current: &Value, content_type: &str, body: &[u8]) -> Result<Value, Status> {
    let mut doc = current.clone();
    if content_type.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch = serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("invalid JSON patch: {e}")))?;
        for op in ops.0 {
            // Like the API server's JSON patch library: `test` for null passes on a missing path
            // (kube's finalizer helper relies on this).
            if let json_patch::PatchOperation::Test(t) = &op
                && t.value.is_null()
                && doc.pointer(&t.path.to_string()).is_none()
            {
                continue;
            }
            json_patch::patch(&mut doc, &[op]).map_err(|e| {
                Status::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                    json!({}),
                )
            })?;
        }
    } else if content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json")
    {
        // Strategic merge is treated as a JSON merge patch (no patchMergeKey list merging).
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("invalid merge patch: {e}")))?;
        json_patch::merge(&mut doc, &patch);
    } else {
        return Err(Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
            json!({}),
        ));
    }
    Ok(doc)
}

/// What the real API server's structured-merge-diff refuses before validation when building the
/// typed apply configuration: fields the schema does not declare, and duplicates in set lists.
/// It answers 500 with this message (checked against kube-apiserver 1.35).
pub(crate) fn typed_patch_check(
    res: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    applied: &Value,
) -> Result<(), Status> {
    let Some(schema) = &res.schema else {
        return Ok(());
    };
    let mut probe = applied.clone();
    let mut problems: Vec<String> = crate::prune::prune(schema, &mut probe)
        .into_iter()
        .map(|p| format!(".{p}: field not declared in schema"))
        .collect();
    for e in crate::schema::validate(schema, applied, None) {
        if let Some((at, item)) = e.split_once(": Duplicate value: ") {
            let list = at.rsplit_once('[').map_or(at, |(l, _)| l);
            problems.push(format!(".{list}: duplicate entries for key [={item}]"));
        }
    }
    match problems.first() {
        None => Ok(()),
        Some(p) => Err(Status::new(
            500,
            "",
            format!(
                "failed to create typed patch object ({}{name}; {}, Kind={}): {p}",
                ns.map(|n| format!("{n}/")).unwrap_or_default(),
                res.api_version(),
                res.kind
            ),
            Value::Null,
        )),
    }
}

/// Leaf paths of an object (lists are atomic leaves), e.g. `.spec.tags`, `.metadata.labels.app`.
pub fn leaf_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if prefix == ".metadata"
                    && matches!(
                        k.as_str(),
                        "name"
                            | "namespace"
                            | "resourceVersion"
                            | "uid"
                            | "managedFields"
                            | "creationTimestamp"
                            | "generation"
                    )
                {
                    continue;
                }
                leaf_paths(child, &format!("{prefix}.{k}"), out);
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.to_string());
            }
        }
    }
}

/// The value at a field path (`.spec.tags`, or `spec.tags[0]` as validation errors name it);
/// null where there is none.
pub(crate) fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.').split('.').fold(v, |cur, seg| {
        let (name, indexes) = seg.split_at(seg.find('[').unwrap_or(seg.len()));
        let cur = if name.is_empty() { cur } else { &cur[name] };
        indexes
            .split(['[', ']'])
            .filter(|i| !i.is_empty())
            .fold(cur, |cur, i| match i.parse::<usize>() {
                Ok(n) => &cur[n],
                Err(_) => &cur[i.trim_matches('"')],
            })
    })
}

/// Removes a field an applier no longer sets; maps it leaves empty go too, as the API server
/// drops a struct whose every field was that manager's.
pub(crate) fn remove_path(v: &mut Value, path: &str) {
    fn remove(cur: &mut Value, segs: &[&str]) -> bool {
        let Some(m) = cur.as_object_mut() else {
            return false;
        };
        match segs {
            [] => false,
            [last] => m.remove(*last).is_some() && m.is_empty(),
            [first, rest @ ..] => {
                let emptied = m.get_mut(*first).is_some_and(|next| remove(next, rest));
                if emptied {
                    m.remove(*first);
                }
                emptied && m.is_empty()
            }
        }
    }
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    remove(v, &segs);
}

/// Deep merge for apply: objects merge, everything else replaces.
pub(crate) fn deep_merge(base: &mut Value, applied: &Value) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in a {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, a) => *b = a.clone(),
    }
}

/// Everything but metadata and status: what moves `generation`.
pub(crate) fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

pub(crate) fn without_rv(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}
