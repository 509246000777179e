//! docs/troubleshooting.md is generated from the reason vocabulary (src/controller/reasons.rs),
//! and that vocabulary covers every reason the controller code uses.

use runner_operator::controller::reasons::{self, ALL, CONDITION_TYPES, ROTATION_REASONS};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// CamelCase words that are not reasons: kinds, printer columns, event actions, JSON values,
/// label-selector operators, derive names, and the crash-test reason.
const NOT_REASONS: &[&str] = &[
    "Runner",
    "GitLabConnection",
    "ClusterGitLabConnection",
    "RunnerStatus",
    "ConnectionStatus",
    "Version",
    "Age",
    "URL",
    "Type",
    "Paused",
    "Managers",
    "Rules",
    "Runners",
    "GitLab",
    "True",
    "False",
    "PartialEq",
    "Opaque",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "Like",
    "Delete",
    "Reconcile",
    "Update",
    "Create",
    "Assign",
    "Unassign",
    "RotateToken",
    "Adopt",
    "TakeOver",
    "RestartConsumers",
    "CheckConnection",
    // a tokenSecret.format value
    "GitLabRunnerOperator",
    // an Event's type
    "Normal",
    // condition.rs unit tests
    "Creating",
    // kstatus' condition types (their reasons are Ready's)
    "Reconciling",
    "Stalled",
    // unit tests: an owner kind, a cluster name that is not a DNS label
    "Deployment",
    "Prod",
];

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn troubleshooting_doc_is_generated_from_the_reasons() {
    let path = root().join("docs/troubleshooting.md");
    let generated = reasons::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/troubleshooting.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/troubleshooting.md is stale: run .ci/generate (UPDATE_DOCS=1 cargo test --test it troubleshooting)"
    );
}

#[test]
fn every_reason_in_the_code_is_explained_and_every_explained_reason_is_used() {
    let mut files = vec![];
    rust_files(&root().join("src/controller"), &mut files);
    rust_files(&root().join("src/crd"), &mut files);
    let known: std::collections::BTreeSet<&str> = ALL
        .iter()
        .map(|r| r.name)
        .chain(CONDITION_TYPES.iter().map(|c| c.0))
        .chain(ROTATION_REASONS.iter().map(|c| c.0))
        .chain(NOT_REASONS.iter().copied())
        .collect();
    let mut unexplained = std::collections::BTreeSet::new();
    let mut code = String::new();
    for f in files.iter().filter(|f| !f.ends_with("reasons.rs")) {
        let text = std::fs::read_to_string(f).expect("source");
        for (i, lit) in text.split('"').enumerate() {
            let camel = lit.len() > 1
                && lit.starts_with(|c: char| c.is_ascii_uppercase())
                && lit.chars().all(|c| c.is_ascii_alphanumeric());
            if i % 2 == 1 && camel && !known.contains(lit) {
                unexplained.insert(format!("{lit} ({})", f.display()));
            }
        }
        code.push_str(&text);
    }
    assert!(
        unexplained.is_empty(),
        "reasons used in the code but not explained in src/controller/reasons.rs (or listed as not reasons): {unexplained:?}"
    );
    let unused: Vec<&str> = ALL
        .iter()
        .map(|r| r.name)
        .filter(|n| !code.contains(&format!("\"{n}\"")))
        .collect();
    assert!(unused.is_empty(), "explained but never used: {unused:?}");
}
