//! Pruning of fields a structural schema does not declare, as the API server does.

use serde_json::Value;

/// Removes undeclared fields; returns their paths (`spec.foo`).
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = vec![];
    walk(schema, obj, "", true, &mut pruned);
    pruned
}

fn walk(schema: &Value, v: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let child_schema = props.and_then(|p| p.get(&k)).or(additional);
                match (child_schema, map.get_mut(&k)) {
                    (Some(s), Some(child)) => walk(s, child, &child_path, false, pruned),
                    (None, _) if preserve => {}
                    (None, _) => {
                        map.remove(&k);
                        pruned.push(child_path);
                    }
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}
