//! Runners to plan: manifests from files, folders or stdin, or the cluster's.

use std::io::Read;
use std::path::Path;

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::Value;

use crate::crd::{ClusterGitLabConnection, Runner};

/// The Runners in a file, a folder (its .yaml, .yml and .json files, sorted) or stdin (`-`).
/// Documents of other kinds are skipped; a Runner that does not decode is an error that names
/// the file and the document.
pub fn read(path: &Path) -> Result<Vec<Runner>, String> {
    Ok(read_all(path)?.0)
}

/// The Runners and the ClusterGitLabConnections (a policy change to preview) of `path`.
pub fn read_all(path: &Path) -> Result<(Vec<Runner>, Vec<ClusterGitLabConnection>), String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return Ok((parse("stdin", &text)?, parse_connections("stdin", &text)?));
    }
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        let (mut runners, mut conns) = (vec![], vec![]);
        for f in files {
            let (r, c) = read_all(&f)?;
            runners.extend(r);
            conns.extend(c);
        }
        return Ok((runners, conns));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let origin = path.display().to_string();
    Ok((parse(&origin, &text)?, parse_connections(&origin, &text)?))
}

/// The ClusterGitLabConnections among the documents of `text` (`List` objects opened).
pub fn parse_connections(origin: &str, text: &str) -> Result<Vec<ClusterGitLabConnection>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not YAML: {e}"))?;
    let mut queue: Vec<Value> = docs.into_iter().rev().collect();
    let mut out = vec![];
    while let Some(doc) = queue.pop() {
        if doc["kind"] == "List" {
            if let Some(items) = doc["items"].as_array() {
                queue.extend(items.iter().rev().cloned());
            }
            continue;
        }
        if doc["kind"] == "ClusterGitLabConnection"
            && doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("gitlab.runner-operator.dev/"))
        {
            out.push(serde_json::from_value(doc.clone()).map_err(|e| {
                format!(
                    "{origin}: ClusterGitLabConnection {} does not decode: {e}",
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                )
            })?);
        }
    }
    Ok(out)
}

/// The Runners among the YAML (or JSON) documents of `text`; `List` objects are opened.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Runner>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not YAML: {e}"))?;
    let mut out = vec![];
    let mut queue: Vec<Value> = docs.into_iter().rev().collect();
    let mut n = 0;
    while let Some(doc) = queue.pop() {
        if doc.is_null() {
            continue;
        }
        n += 1;
        if doc["kind"] == "List" {
            if let Some(items) = doc["items"].as_array() {
                queue.extend(items.iter().rev().cloned());
            }
            continue;
        }
        let is_runner = doc["kind"] == "Runner"
            && doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("gitlab.runner-operator.dev/"));
        if !is_runner {
            continue;
        }
        let runner: Runner = serde_json::from_value(doc.clone()).map_err(|e| {
            format!(
                "{origin}: document {n} (Runner {}) does not decode: {e}",
                doc["metadata"]["name"].as_str().unwrap_or("?")
            )
        })?;
        if runner
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(format!(
                "{origin}: document {n}: a Runner without metadata.name"
            ));
        }
        out.push(runner);
    }
    Ok(out)
}

/// Sets the namespace of manifests that name none.
pub fn with_namespace(mut runners: Vec<Runner>, ns: Option<&str>) -> Vec<Runner> {
    for r in &mut runners {
        if r.metadata.namespace.is_none() {
            r.metadata.namespace = Some(ns.unwrap_or("default").to_string());
        }
    }
    runners
}

/// Each manifest with what the cluster knows of the Runner of that name: its uid (which its
/// marker names), status and deletion. The spec stays the manifest's.
pub async fn with_live(client: &kube::Client, runners: Vec<Runner>) -> Result<Vec<Runner>, String> {
    let mut out = vec![];
    for mut r in runners {
        let ns = r.namespace().unwrap_or_default();
        let live = Api::<Runner>::namespaced(client.clone(), &ns)
            .get_opt(&r.name_any())
            .await
            .map_err(|e| format!("reading Runner {ns}/{}: {e}", r.name_any()))?;
        if let Some(live) = live {
            r.metadata.uid = live.metadata.uid;
            r.metadata.deletion_timestamp = live.metadata.deletion_timestamp;
            // Same spec: the generation is too, so ids recorded in status are reused.
            if live.spec == r.spec {
                r.metadata.generation = live.metadata.generation;
            }
            r.status = live.status;
        }
        out.push(r);
    }
    Ok(out)
}

/// The cluster's Runners: of one namespace (the given one, else the kubeconfig's) or all.
pub async fn from_cluster(
    client: &kube::Client,
    namespace: Option<&str>,
    all: bool,
) -> Result<Vec<Runner>, String> {
    let api: Api<Runner> = if all {
        Api::all(client.clone())
    } else {
        Api::namespaced(
            client.clone(),
            namespace.unwrap_or(client.default_namespace()),
        )
    };
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Runners: {e}"))?
        .items;
    list.sort_by_key(|r| (r.namespace(), r.name_any()));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_are_picked_from_mixed_documents_and_lists() {
        let text = r#"
apiVersion: v1
kind: Secret
metadata: {name: s}
---
apiVersion: gitlab.runner-operator.dev/v1alpha1
kind: Runner
metadata: {name: a}
spec: {connectionRef: {name: gitlab}, runnerType: instance_type}
---
apiVersion: v1
kind: List
items:
- apiVersion: gitlab.runner-operator.dev/v1alpha1
  kind: Runner
  metadata: {name: b, namespace: ci}
  spec: {connectionRef: {name: gitlab}, runnerType: instance_type}
"#;
        let runners = with_namespace(parse("t", text).unwrap(), Some("dev"));
        let names: Vec<_> = runners
            .iter()
            .map(|r| format!("{}/{}", r.namespace().unwrap(), r.name_any()))
            .collect();
        assert_eq!(names, ["dev/a", "ci/b"]);
        let bad = "apiVersion: gitlab.runner-operator.dev/v1alpha1\nkind: Runner\nmetadata: {name: x}\nspec: {runnerType: nope}\n";
        let e = parse("f.yaml", bad).unwrap_err();
        assert!(
            e.starts_with("f.yaml: document 1 (Runner x) does not decode"),
            "{e}"
        );
    }
}
