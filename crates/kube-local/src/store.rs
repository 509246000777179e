//! Objects, resource versions, the watch log and the write semantics of the API server.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::registry::{ResourceDef, builtins};
use super::select::{FieldSelector, LabelSelector};

/// A `kind: Status` failure: HTTP code and body.
#[derive(Debug, Clone)]
pub struct Status {
    pub code: u16,
    pub body: Value,
}

impl Status {
    pub fn new(code: u16, reason: &str, message: impl Into<String>, details: Value) -> Self {
        Status {
            code,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message.into(), "reason": reason, "details": details, "code": code}),
        }
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
            json!({"name": name, "group": res.group, "kind": res.plural}),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::new(400, "BadRequest", message, json!({}))
    }

    pub fn invalid(res: &ResourceDef, name: &str, causes: Vec<(String, String)>) -> Self {
        let message = format!(
            "{} \"{name}\" is invalid: {}",
            res.kind,
            causes
                .iter()
                .map(|(f, m)| format!("{f}: {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let causes: Vec<Value> = causes.into_iter().map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field})).collect();
        Status::new(
            422,
            "Invalid",
            message,
            json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes}),
        )
    }

    pub fn conflict(res: &ResourceDef, name: &str, message: impl Into<String>) -> Self {
        Status::new(
            409,
            "Conflict",
            message,
            json!({"name": name, "group": res.group, "kind": res.plural}),
        )
    }
}

/// One change, as sent on watches.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub type_: &'static str,
    pub object: Value,
}

type Key = (String, String, String, String); // group, plural, namespace ("" if cluster), name

/// The server's state.
pub struct Store {
    pub rv: u64,
    pub resources: Vec<ResourceDef>,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
    /// Events older than this were compacted away: watching from before it is 410 Gone.
    pub compacted_rv: u64,
    pub log_capacity: usize,
    /// Server-side apply: object uid → manager → owned field paths.
    owners: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
    pub tx: broadcast::Sender<Arc<Event>>,
    /// Test back door: store custom resources without schema validation (an object left from
    /// before a schema change, as after an upgrade).
    pub unchecked: bool,
}

impl Store {
    /// A copy whose writes reach no watcher: what a dry run acts on.
    pub fn detached_copy(&self) -> Store {
        Store {
            rv: self.rv,
            resources: self.resources.clone(),
            objects: self.objects.clone(),
            log: self.log.clone(),
            compacted_rv: self.compacted_rv,
            log_capacity: self.log_capacity,
            owners: self.owners.clone(),
            tx: broadcast::channel(1).0,
            unchecked: self.unchecked,
        }
    }
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn key(res: &ResourceDef, ns: Option<&str>, name: &str) -> Key {
    (
        res.group.clone(),
        res.plural.clone(),
        if res.namespaced {
            ns.unwrap_or("").to_string()
        } else {
            String::new()
        },
        name.to_string(),
    )
}

/// Everything but metadata and status: what moves `generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn without_rv(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
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
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
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
fn remove_path(v: &mut Value, path: &str) {
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
fn deep_merge(base: &mut Value, applied: &Value) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in a {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, a) => *b = a.clone(),
    }
}

impl Default for Store {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        let mut s = Store {
            rv: 100,
            resources: builtins(),
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            compacted_rv: 0,
            log_capacity: 10_000,
            owners: HashMap::new(),
            tx,
            unchecked: false,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let res = s
                .resource("", "namespaces")
                .expect("namespaces are built in");
            let _ = s.create(
                &res,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                "system",
                false,
            );
        }
        s
    }
}

pub struct WriteOpts<'a> {
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    pub strict: bool,
}

impl Store {
    pub fn resource(&self, group: &str, plural: &str) -> Option<ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    pub fn resource_v(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn emit(&mut self, res: &ResourceDef, type_: &'static str, object: Value) {
        let ev = Arc::new(Event {
            rv: self.rv,
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
            type_,
            object,
        });
        self.log.push_back(ev.clone());
        while self.log.len() > self.log_capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Events after `since` for a resource, or 410 when they were compacted.
    pub fn events_since(&self, res: &ResourceDef, since: u64) -> Result<Vec<Arc<Event>>, Status> {
        if since < self.compacted_rv {
            return Err(Status::new(
                410,
                "Expired",
                format!(
                    "too old resource version: {since} ({})",
                    self.compacted_rv + 1
                ),
                json!({}),
            ));
        }
        Ok(self
            .log
            .iter()
            .filter(|e| e.rv > since && e.group == res.group && e.plural == res.plural)
            .cloned()
            .collect())
    }

    /// Drops all events older than now (tests of 410 Gone).
    pub fn compact(&mut self) {
        self.compacted_rv = self.rv;
        self.log.clear();
    }

    pub fn get(&self, res: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, Status> {
        self.objects
            .get(&key(res, ns, name))
            .cloned()
            .ok_or_else(|| Status::not_found(res, name))
    }

    pub fn list(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == res.group && *p == res.plural && ns.is_none_or(|ns| ns == n)
            })
            .map(|(_, v)| v)
            .filter(|v| labels.matches(&v["metadata"]["labels"]) && fields.matches(v))
            .cloned()
            .collect()
    }

    /// What the real server does to built-ins on every write: Secret `stringData` folds into `data`.
    fn normalize(res: &ResourceDef, obj: &mut Value) {
        if res.group.is_empty()
            && res.plural == "secrets"
            && let Some(Value::Object(string_data)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
        {
            for (k, v) in string_data {
                let bytes =
                    k8s_openapi::ByteString(v.as_str().unwrap_or_default().as_bytes().to_vec());
                obj["data"][k] = serde_json::to_value(bytes).unwrap_or_default();
            }
        }
    }

    /// events.k8s.io/v1 and core/v1 Events are one store in Kubernetes: mirror the former so
    /// `kubectl describe` shows what controllers record.
    fn mirror_event(&mut self, res: &ResourceDef, obj: &Value) {
        if res.group != "events.k8s.io" {
            return;
        }
        let Some(core) = self.resource("", "events") else {
            return;
        };
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let when = obj["series"]["lastObservedTime"]
            .as_str()
            .or(obj["eventTime"].as_str())
            .map(|t| {
                t.split('.')
                    .next()
                    .unwrap_or(t)
                    .trim_end_matches('Z')
                    .to_string()
                    + "Z"
            });
        let mirrored = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": obj["regarding"],
            "reason": obj["reason"], "message": obj["note"], "type": obj["type"], "action": obj["action"],
            "source": {"component": obj["reportingController"]},
            "reportingComponent": obj["reportingController"], "reportingInstance": obj["reportingInstance"],
            "firstTimestamp": when, "lastTimestamp": when,
            "count": obj["series"]["count"].as_i64().unwrap_or(1),
        });
        let existing = self.get(&core, ns.as_deref(), &name).ok();
        let _ = match existing {
            Some(mut cur) => {
                for k in [
                    "involvedObject",
                    "reason",
                    "message",
                    "type",
                    "lastTimestamp",
                    "count",
                    "action",
                ] {
                    cur[k] = mirrored[k].clone();
                }
                self.update(
                    &core,
                    ns.as_deref(),
                    &name,
                    cur,
                    &WriteOpts {
                        manager: "events-mirror",
                        subresource: None,
                        strict: false,
                    },
                )
            }
            None => self.create(&core, ns.as_deref(), mirrored, "events-mirror", false),
        };
    }

    fn prepare_custom(
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
        let pruned = super::prune::prune(schema, obj);
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

    fn commit(&mut self, res: &ResourceDef, mut new: Value) -> Result<Value, Status> {
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
    fn after_removal(&mut self, res: &ResourceDef, obj: &Value) {
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
    fn register_crd(&mut self, crd: &mut Value) -> Result<(), Status> {
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

    /// Field managers of an object (for `metadata.managedFields`-like assertions in tests).
    pub fn managers(&self, uid: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.owners.get(uid).cloned().unwrap_or_default()
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

fn uuid() -> String {
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

/// What the real API server's structured-merge-diff refuses before validation when building the
/// typed apply configuration: fields the schema does not declare, and duplicates in set lists.
/// It answers 500 with this message (checked against kube-apiserver 1.35).
fn typed_patch_check(
    res: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    applied: &Value,
) -> Result<(), Status> {
    let Some(schema) = &res.schema else {
        return Ok(());
    };
    let mut probe = applied.clone();
    let mut problems: Vec<String> = super::prune::prune(schema, &mut probe)
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

/// Object names and labels as kube-apiserver validates them, with its messages.
fn validate_meta(res: &ResourceDef, obj: &Value, check_name: bool) -> Result<(), Status> {
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

/// `generateName`'s suffix: lowercase letters and digits, as the API server's.
fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}
