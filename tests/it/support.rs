//! Shared fixtures.

use gitlab_emulator::GitLabEmulator;

/// An emulator seeded with every role (`gitlab_emulator::fixtures::seed`).
pub async fn emulator() -> GitLabEmulator {
    GitLabEmulator::start(&gitlab_emulator::fixtures::seed())
        .await
        .expect("emulator starts")
}

/// Polls `f` every 200 ms until it answers Some, or `limit` passes (then None).
pub async fn wait_until<T, F, Fut>(limit: std::time::Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `go run . ARGS` in `dir` (under the repository) with `input` as JSON on stdin; its stdout
/// as a JSON array (the Go helpers under tests/: gopher-lua, kstatus).
pub fn go_run(
    dir: &str,
    args: &[&std::path::Path],
    input: &impl serde::Serialize,
) -> Vec<serde_json::Value> {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new("go")
        .args(["run", "."])
        .args(args)
        .current_dir(root.join(dir))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("go runs (install Go >= 1.25)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(input).expect("json").as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("go finished");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON array")
}
