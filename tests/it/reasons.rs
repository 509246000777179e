//! docs/troubleshooting.md is generated from the reason vocabulary (src/controller/reasons.rs),
//! which the code cannot step outside of: conditions and events take a `Reason`.

use runner_operator::controller::reasons;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
