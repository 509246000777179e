//! The resource types the local API serves: built-ins plus whatever CRDs define.

use serde_json::{Value, json};

/// One served resource (group/version/plural).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// `additionalPrinterColumns` of a CRD version.
    pub printer_columns: Vec<Value>,
    /// openAPIV3Schema of a CRD version.
    pub schema: Option<Value>,
    /// Name of the CRD that defines it.
    pub crd: Option<String>,
    /// metadata.generation is maintained (objects with a spec).
    pub has_generation: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as in RBAC and error details.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    #[allow(clippy::too_many_arguments)] // a table row, clearer positional
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        short: &[&str],
        status: bool,
        generation: bool,
    ) -> Self {
        ResourceDef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: vec![],
            status_subresource: status,
            printer_columns: vec![],
            schema: None,
            crd: None,
            has_generation: generation,
        }
    }

    /// The discovery entry (`APIResource`) for this resource and its subresources.
    pub fn api_resources(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "categories": self.categories,
            "storageVersionHash": "",
        })];
        if self.status_subresource {
            out.push(json!({"name": format!("{}/status", self.plural), "singularName": "", "namespaced": self.namespaced, "kind": self.kind, "verbs": ["get", "patch", "update"]}));
        }
        out
    }

    /// Builds the definition from a CRD object (its first served version).
    pub fn from_crd(crd: &Value) -> Vec<ResourceDef> {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let strs = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        spec["versions"]
            .as_array()
            .map(|versions| {
                versions
                    .iter()
                    .filter(|v| v["served"].as_bool().unwrap_or(true))
                    .map(|v| ResourceDef {
                        group: spec["group"].as_str().unwrap_or_default().into(),
                        version: v["name"].as_str().unwrap_or_default().into(),
                        kind: names["kind"].as_str().unwrap_or_default().into(),
                        plural: names["plural"].as_str().unwrap_or_default().into(),
                        singular: names["singular"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| {
                                names["kind"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_ascii_lowercase()
                            }),
                        namespaced: spec["scope"].as_str() != Some("Cluster"),
                        short_names: strs(&names["shortNames"]),
                        categories: strs(&names["categories"]),
                        status_subresource: v["subresources"]["status"].is_object(),
                        printer_columns: v["additionalPrinterColumns"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                        schema: v["schema"]["openAPIV3Schema"]
                            .as_object()
                            .map(|o| Value::Object(o.clone())),
                        crd: crd["metadata"]["name"].as_str().map(str::to_string),
                        has_generation: true,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The built-in resources.
pub fn builtins() -> Vec<ResourceDef> {
    let mut v = vec![
        ResourceDef::builtin(
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            &["ns"],
            true,
            false,
        ),
        ResourceDef::builtin("", "v1", "Secret", "secrets", true, &[], false, false),
        ResourceDef::builtin(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            &["cm"],
            false,
            false,
        ),
        ResourceDef::builtin("", "v1", "Event", "events", true, &["ev"], false, false),
        ResourceDef::builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
            false,
        ),
        ResourceDef::builtin(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            false,
            false,
        ),
        ResourceDef::builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            false,
            false,
        ),
        ResourceDef::builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            true,
            true,
        ),
        ResourceDef::builtin(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            &["sts"],
            true,
            true,
        ),
        ResourceDef::builtin(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            true,
            &["ds"],
            true,
            true,
        ),
        ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
            true,
        ),
    ];
    for r in &mut v {
        if r.group == "apps" {
            r.categories = vec!["all".into()];
        }
    }
    v
}
