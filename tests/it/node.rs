//! The scenarios on a real node (tests/node/e2e.sh): the operator from its own image as the
//! chart deploys it, and runner processes that keep working across a rotation. Each brings up
//! its own one-node cluster (tests/node/up.sh) and restores the host after; one at a time.

use std::process::Command;
use std::sync::Mutex;

static NODE: Mutex<()> = Mutex::new(());

fn scenario(name: &str) {
    let _one_node_at_a_time = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/e2e.sh");
    let status = Command::new(script)
        .arg(name)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        status.success(),
        "tests/node/e2e.sh {name} failed: its output above says where"
    );
}

#[test]
#[ignore = "needs a real node (root, containerd, runc, Go): tests/node/e2e.sh, or cargo test -- --include-ignored (CI does)"]
fn node_helm_upgrade_and_rollback_touch_nothing() {
    scenario("upgrade");
}

#[test]
#[ignore = "needs a real node (root, containerd, runc, Go): tests/node/e2e.sh, or cargo test -- --include-ignored (CI does)"]
fn node_install_restricted_probes_metrics() {
    scenario("install");
}

#[test]
#[ignore = "needs a real node (root, containerd, runc, Go): tests/node/e2e.sh, or cargo test -- --include-ignored (CI does)"]
fn node_rotation_reaches_running_pods() {
    scenario("rotation");
}

#[test]
#[ignore = "needs a real node (root, containerd, runc, Go): tests/node/e2e.sh, or cargo test -- --include-ignored (CI does)"]
fn node_operator_pod_killed_mid_create() {
    scenario("killed");
}
