//! Objects, resource versions, the watch log and the write semantics of the API server.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::registry::{ResourceDef, builtins};
use super::select::{FieldSelector, LabelSelector};

mod apply;
mod write;

pub use apply::{apply_patch, leaf_paths};

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

/// One page of a list.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Value>,
    /// (namespace, name) of the last item when more follow.
    pub next: Option<(String, String)>,
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
    /// A copy for a dry run on one object (`name`), or on any object of its kind and namespace
    /// (`None`, a create): only what that write can read — the objects of that kind there and
    /// the namespaces — so a dry run does not copy the whole store.
    pub fn detached_copy_for(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Store {
        let ns_key = if res.namespaced { ns.unwrap_or("") } else { "" };
        let objects: BTreeMap<Key, Value> = self
            .objects
            .iter()
            .filter(|((g, p, n, obj), _)| {
                (p == "namespaces" && g.is_empty())
                    || (*g == res.group
                        && *p == res.plural
                        && n == ns_key
                        && name.is_none_or(|want| obj == want))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let uids: BTreeSet<&str> = objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str())
            .collect();
        Store {
            rv: self.rv,
            resources: self.resources.clone(),
            owners: self
                .owners
                .iter()
                .filter(|(uid, _)| uids.contains(uid.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            objects,
            log: VecDeque::new(),
            compacted_rv: self.compacted_rv,
            log_capacity: self.log_capacity,
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
        self.list_page(res, ns, labels, fields, None, None).items
    }

    /// Up to `limit` matching objects after `after` (namespace, name), in the order etcd keeps
    /// them (by namespace, then name), and where the next page starts.
    pub fn list_page(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> Page {
        let mut matching = self
            .range_after(res, ns, after)
            .filter(|(_, v)| labels.matches(&v["metadata"]["labels"]) && fields.matches(v));
        let mut page = Page::default();
        let mut last = None;
        for ((_, _, n, name), v) in matching.by_ref() {
            if limit.is_some_and(|l| page.items.len() >= l) {
                // One more exists: the page ends at the last one taken.
                page.next = last.take();
                break;
            }
            page.items.push(v.clone());
            last = Some((n.clone(), name.clone()));
        }
        page
    }

    /// How many objects of a kind (in `ns`) come after `after`, selectors aside: the real
    /// server's `remainingItemCount`.
    pub fn count_after(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        after: &(String, String),
    ) -> usize {
        self.range_after(res, ns, Some(after)).count()
    }

    /// The objects of a kind (in `ns`) after `after`, in key order.
    fn range_after<'a>(
        &'a self,
        res: &'a ResourceDef,
        ns: Option<&'a str>,
        after: Option<&(String, String)>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        use std::ops::Bound;
        let (g, p) = (res.group.clone(), res.plural.clone());
        let start = match after {
            Some((n, name)) => Bound::Excluded((g, p, n.clone(), name.clone())),
            None => Bound::Included((g, p, String::new(), String::new())),
        };
        self.objects
            .range((start, Bound::Unbounded))
            .take_while(|((g, p, _, _), _)| *g == res.group && *p == res.plural)
            .filter(move |((_, _, n, _), _)| ns.is_none_or(|ns| ns == n))
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

    /// Field managers of an object (for `metadata.managedFields`-like assertions in tests).
    pub fn managers(&self, uid: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.owners.get(uid).cloned().unwrap_or_default()
    }
}
