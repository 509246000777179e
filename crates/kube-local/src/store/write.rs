//! Writes: create, update, delete (finalizers, garbage collection), CRD registration, schema
//! validation of custom resources.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::apply::*;
use super::*;
use crate::registry::ResourceDef;

impl Store {
    pub(crate) fn prepare_custom(
        &self,
        res: &ResourceDef,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), Status> {
        let Some(schema) = &res.schema else {
            return Ok(());
        };
        if self.unchecked {
            return Ok(());
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pruned = crate::prune::prune(schema, obj);
        if strict && !pruned.is_empty() {
            let unknown = pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Status::new(
                400,
                "BadRequest",
                format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {unknown}",
                    res.kind, res.version, res.kind
                ),
                json!({"causes": pruned.iter().map(|p| json!({"reason": "FieldValueUnknown", "message": format!("unknown field \"{p}\""), "field": p})).collect::<Vec<_>>()}),
            ));
        }
        *obj = kube_cel::apply_defaults(schema, obj);
        let mut errors = crate::schema::validate(schema, obj, old);
        // Validation ratcheting (GA in Kubernetes 1.33): on an update, a field that fails
        // validation but did not change is let through, so objects stored under older rules
        // can still get finalizers, status and fixes elsewhere.
        if let Some(old) = old {
            errors.retain(|e| {
                let field = e.split_once(": ").map_or("", |(f, _)| f);
                field.is_empty() || at(obj, field) != at(old, field)
            });
        }
        if !errors.is_empty() {
            let causes = errors
                .into_iter()
                .map(|e| match e.split_once(": ") {
                    Some((field, message)) => (field.to_string(), message.to_string()),
                    None => (String::new(), e),
                })
                .collect();
            return Err(Status::invalid(res, &name, causes));
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        manager: &str,
        strict: bool,
    ) -> Result<Value, Status> {
        if !obj.is_object() {
            return Err(Status::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        let meta = obj["metadata"].as_object().cloned().unwrap_or_default();
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    name = format!(
                        "{prefix}{}",
                        random_suffix(5)
                            .to_ascii_lowercase()
                            .replace(['_', '-'], "x")
                    )
                }
                None => {
                    return Err(Status::invalid(
                        res,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "metadata.name: Required value: name or generateName is required"
                                .into(),
                        )],
                    ));
                }
            }
        }
        if res.namespaced {
            let ns = ns
                .or(meta.get("namespace").and_then(Value::as_str))
                .unwrap_or("default")
                .to_string();
            let nsres = self.resource("", "namespaces").expect("built in");
            if self.get(&nsres, None, &ns).is_err() {
                return Err(Status::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                    json!({"name": ns, "kind": "namespaces"}),
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let ns_owned = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let k = key(res, ns_owned.as_deref(), &name);
        if self.objects.contains_key(&k) {
            return Err(Status::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.qualified()),
                json!({"name": name, "group": res.group, "kind": res.plural}),
            ));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        obj["metadata"]["name"] = json!(name);
        Self::normalize(res, &mut obj);
        if !self.unchecked {
            validate_meta(res, &obj, true)?;
        }
        if res.status_subresource
            && res.crd.is_some()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        self.prepare_custom(res, &mut obj, None, strict)?;
        if res.plural == "customresourcedefinitions" {
            self.register_crd(&mut obj)?;
        }
        self.rv += 1;
        let m = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        m.insert("uid".into(), json!(uuid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("resourceVersion".into(), json!(self.rv.to_string()));
        m.remove("deletionTimestamp");
        if res.has_generation {
            m.insert("generation".into(), json!(1));
        }
        let mut paths = BTreeSet::new();
        leaf_paths(&obj, "", &mut paths);
        self.owners
            .entry(
                obj["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .insert(manager.to_string(), paths);
        self.objects.insert(k, obj.clone());
        self.emit(res, "ADDED", obj.clone());
        self.mirror_event(res, &obj);
        Ok(obj)
    }

    /// PUT semantics (also the tail of every patch).
    pub fn update(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut new: Value,
        opts: &WriteOpts,
    ) -> Result<Value, Status> {
        let old = self.get(res, ns, name)?;
        if let Some(rv) = new["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            && rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(Status::conflict(
                res,
                name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    res.qualified()
                ),
            ));
        }
        if !new.is_object() {
            return Err(Status::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        // The status subresource split.
        if res.status_subresource {
            if opts.subresource == Some("status") {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        // Identity and server-owned metadata stay.
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        new["apiVersion"] = json!(res.api_version());
        new["kind"] = json!(res.kind);
        Self::normalize(res, &mut new);
        if !self.unchecked && new["metadata"]["labels"] != old["metadata"]["labels"] {
            validate_meta(res, &new, false)?;
        }
        if opts.subresource != Some("status") {
            self.prepare_custom(res, &mut new, Some(&old), opts.strict)?;
        }
        if res.has_generation && spec_part(&new) != spec_part(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if res.plural == "customresourcedefinitions" {
            self.register_crd(&mut new)?;
        }
        let uid = old["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Fields this write changed now belong to its manager.
        let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
        leaf_paths(&old, "", &mut before);
        leaf_paths(&new, "", &mut after);
        let changed: BTreeSet<String> = after
            .iter()
            .filter(|p| at(&old, p) != at(&new, p))
            .cloned()
            .collect();
        let owners = self.owners.entry(uid).or_default();
        for (m, paths) in owners.iter_mut() {
            // Fields that no longer exist belong to nobody; changed ones move to this writer.
            paths.retain(|p| after.contains(p));
            if m != opts.manager {
                paths.retain(|p| !changed.contains(p));
            }
        }
        owners
            .entry(opts.manager.to_string())
            .or_default()
            .extend(changed);
        if without_rv(&new) == without_rv(&old) {
            return Ok(old); // a no-op write: no new resourceVersion, no event
        }
        self.commit(res, new)
    }

    pub(crate) fn commit(&mut self, res: &ResourceDef, mut new: Value) -> Result<Value, Status> {
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ns = new["metadata"]["namespace"].as_str().map(str::to_string);
        let name = new["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let k = key(res, ns.as_deref(), &name);
        let deleting = new["metadata"]["deletionTimestamp"].is_string();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            self.objects.remove(&k);
            self.emit(res, "DELETED", new.clone());
            self.after_removal(res, &new);
            return Ok(new);
        }
        self.objects.insert(k, new.clone());
        self.emit(res, "MODIFIED", new.clone());
        self.mirror_event(res, &new);
        Ok(new)
    }

    pub fn delete(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        precondition_uid: Option<&str>,
    ) -> Result<Value, Status> {
        let mut obj = self.get(res, ns, name)?;
        if let Some(uid) = precondition_uid
            && obj["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(Status::conflict(
                res,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj["metadata"]["uid"]
                ),
            ));
        }
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj["metadata"]["deletionTimestamp"].is_string() {
                return Ok(obj);
            }
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return self.commit(res, obj);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.remove(&key(res, ns, name));
        self.emit(res, "DELETED", obj.clone());
        self.after_removal(res, &obj);
        Ok(obj)
    }

    /// Garbage collection of dependents, namespace contents and CRD instances.
    pub(crate) fn after_removal(&mut self, res: &ResourceDef, obj: &Value) {
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.owners.remove(&uid);
        let mut doomed: Vec<(ResourceDef, Option<String>, String)> = vec![];
        for ((g, p, n, name), v) in &self.objects {
            let owned = v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str())));
            let in_ns = res.plural == "namespaces"
                && res.group.is_empty()
                && !n.is_empty()
                && Some(n.as_str()) == obj["metadata"]["name"].as_str();
            if (owned || in_ns)
                && let Some(r) = self.resource(g, p)
            {
                doomed.push((r, (!n.is_empty()).then(|| n.clone()), name.clone()));
            }
        }
        if res.plural == "customresourcedefinitions" {
            let crd_name = obj["metadata"]["name"].as_str().map(str::to_string);
            let defs: Vec<ResourceDef> = self
                .resources
                .iter()
                .filter(|r| r.crd == crd_name)
                .cloned()
                .collect();
            for d in &defs {
                let keys: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|(g, p, _, _)| *g == d.group && *p == d.plural)
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(v) = self.objects.remove(&k) {
                        self.rv += 1;
                        self.emit(d, "DELETED", v);
                    }
                }
            }
            self.resources.retain(|r| r.crd != crd_name);
        }
        for (r, ns, name) in doomed {
            let _ = self.delete(&r, ns.as_deref(), &name, None);
        }
    }

    /// A CRD write: accept its names and start (or keep) serving its resources.
    pub(crate) fn register_crd(&mut self, crd: &mut Value) -> Result<(), Status> {
        let defs = ResourceDef::from_crd(crd);
        if defs.is_empty() {
            let res = self
                .resource("apiextensions.k8s.io", "customresourcedefinitions")
                .expect("built in");
            return Err(Status::invalid(&res, crd["metadata"]["name"].as_str().unwrap_or_default(), vec![("spec.versions".into(), "spec.versions: Invalid value: must have exactly one version marked as storage version".into())]));
        }
        let name = crd["metadata"]["name"].as_str().map(str::to_string);
        self.resources.retain(|r| r.crd != name);
        self.resources.extend(defs);
        let now = now_rfc3339();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
        Ok(())
    }
}

/// Object names and labels as kube-apiserver validates them, with its messages.
pub(crate) fn validate_meta(
    res: &ResourceDef,
    obj: &Value,
    check_name: bool,
) -> Result<(), Status> {
    const SUBDOMAIN: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
    const NAME_PART: &str = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
    let full =
        |re: &str, v: &str| regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(v));
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = vec![];
    // Namespaces are DNS labels; every other kind modelled here takes a DNS subdomain.
    if check_name {
        let label_only = res.plural == "namespaces";
        let ok = if label_only {
            name.len() <= 63 && full("[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        } else {
            name.len() <= 253 && full(SUBDOMAIN, name)
        };
        if !ok {
            let what = if label_only {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
            } else {
                format!(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{SUBDOMAIN}')"
                )
            };
            causes.push((
                "metadata.name".to_string(),
                format!("metadata.name: Invalid value: \"{name}\": {what}"),
            ));
        }
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let (prefix, key_name) = match k.split_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, k.as_str()),
            };
            let key_ok = key_name.len() <= 63
                && full(NAME_PART, key_name)
                && prefix.is_none_or(|p| p.len() <= 253 && full(SUBDOMAIN, p));
            if !key_ok {
                causes.push((
                    "metadata.labels".to_string(),
                    format!("metadata.labels: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{NAME_PART}')"),
                ));
            }
            let v = v.as_str().unwrap_or_default();
            if !(v.is_empty() || v.len() <= 63 && full(NAME_PART, v)) {
                causes.push((
                    "metadata.labels".to_string(),
                    format!("metadata.labels: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
                ));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(res, name, causes))
    }
}

pub(crate) fn uuid() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// `generateName`'s suffix: lowercase letters and digits, as the API server's.
pub(crate) fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}
