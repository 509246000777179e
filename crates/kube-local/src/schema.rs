//! Checks an object against a CRD's openAPIV3Schema the way the API server does: structural
//! rules (types, enums, bounds, lengths, patterns, required, unknown fields, list sets) and the
//! CEL `x-kubernetes-validations` (through kube-cel). Errors name the field, as a 422 would.

use serde_json::Value;

/// Every violation, as `field.path: message`.
pub fn validate(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, object, "", &mut errors, true);
    if errors.is_empty()
        && let Err(cel) = kube_cel::validate(schema, object, old)
    {
        for e in cel.iter() {
            let path = if e.field_path.is_empty() {
                "<root>".to_string()
            } else {
                e.field_path.trim_start_matches('.').to_string()
            };
            errors.push(format!("{path}: Invalid value: {}", e.message));
        }
    }
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>, root: bool) {
    let here = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            errors.push(format!("{here}: Invalid value: \"null\": must not be null"));
        }
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{here}: Invalid value: must be an integer or a string"
            ));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            errors.push(format!("{here}: Invalid value: \"{actual}\": {here} in body must be of type {t}: \"{actual}\""));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        errors.push(format!(
            "{here}: Unsupported value: {value}: supported values: {list}"
        ));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!(
                    "{here}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{here}: Invalid value: \"{s}\": {here} in body should be at least {min} chars long"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => errors.push(format!(
                        "{here}: Invalid value: \"{s}\": {here} in body should match '{p}'"
                    )),
                    Ok(_) => {}
                    Err(e) => errors.push(format!(
                        "{here}: schema pattern {p:?} does not compile: {e}"
                    )),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                errors.push(format!("{here}: Invalid value: {n}: {here} in body should be greater than or equal to {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                errors.push(format!("{here}: Invalid value: {n}: {here} in body should be less than or equal to {max}"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!(
                    "{here}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!(
                    "{here}: Invalid value: {here} in body should have at least {min} items"
                ));
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(format!("{here}[{i}]: Duplicate value: {item}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{}: Required value", join(path, r)));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            for (k, v) in map {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => walk(s, v, &join(path, k), errors, false),
                    (None, Some(s)) if s.is_object() => walk(s, v, &join(path, k), errors, false),
                    _ if preserve => {}
                    _ => errors.push(format!("{}: unknown field \"{}\"", join(path, k), k)),
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
