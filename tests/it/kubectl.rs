//! The README's kubectl commands against the sandbox (local API + GitLab emulator + operator),
//! with every kubectl found: 1.32 on PATH and 1.35 from `.ci/install-tools`. Outside CI a missing
//! kubectl skips with a message; in CI (CI set) both must be present.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::cluster::Backend;
use crate::operator::Env;

fn kubectls() -> Vec<(String, PathBuf)> {
    let mut found = vec![];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (label, path) in [
        ("PATH kubectl", PathBuf::from("kubectl")),
        ("kubectl 1.35", root.join(".tools/bin/kubectl-1.35")),
    ] {
        let ok = Command::new(&path)
            .args(["version", "--client"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            found.push((label.to_string(), path));
        } else if std::env::var_os("CI").is_some() {
            panic!(
                "{label} ({}) is missing in CI: .ci/install-tools installs kubectl 1.35; kubectl 1.32 comes with the machine",
                path.display()
            );
        } else {
            eprintln!(
                "SKIPPED for {label}: {} not found (run .ci/install-tools to install kubectl 1.35)",
                path.display()
            );
        }
    }
    found
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let input = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl runs");
            if let Some(i) = input {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(i.as_bytes())
                    .expect("write stdin");
            }
            let out = child.wait_with_output().expect("kubectl finishes");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .expect("joined")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, None).await;
        assert!(ok, "kubectl {} failed: {err}{out}", args.join(" "));
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_workflow_with_every_kubectl() {
    readme_workflow(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn real_readme_workflow_with_every_kubectl() {
    readme_workflow(Backend::Real).await
}

async fn readme_workflow(backend: Backend) {
    for (label, bin) in kubectls() {
        let env = Env::start(backend, None).await;
        let dir = std::env::temp_dir().join(format!(
            "runner-operator-kubectl-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        env.kube.write_kubeconfig(&kubeconfig);
        let k = Kubectl {
            bin,
            kubeconfig,
            cache: dir.join("cache"),
        };
        eprintln!("kubectl scenario with {label}");

        k.ok(&[
            "apply",
            "-f",
            "deploy/examples/project-runner.yaml",
            "-f",
            "deploy/examples/group-runner.yaml",
        ])
        .await;
        k.ok(&[
            "wait",
            "--for=condition=Ready",
            "runner/linux-builders",
            "runner/platform-shared",
            "-n",
            "ci",
            "--timeout=30s",
        ])
        .await;
        let table = k.ok(&["get", "glrunners", "-n", "ci"]).await;
        assert!(
            table.contains("RUNNER ID") && table.contains("TOKEN EXPIRY"),
            "{label}: {table}"
        );
        assert!(
            table.lines().any(|l| l.starts_with("linux-builders")
                && l.contains("project_type")
                && l.contains("True")),
            "{label}: {table}"
        );
        let by_category = k.ok(&["get", "gitlab", "-A"]).await;
        assert!(
            by_category.contains("platform-shared") && by_category.contains("gitlabconnection"),
            "{label}: {by_category}"
        );

        let id = env
            .runners()
            .get("linux-builders")
            .await
            .unwrap()
            .status
            .unwrap()
            .runner_id
            .unwrap();
        let b64 = k
            .ok(&[
                "get",
                "secret",
                "linux-builders-token",
                "-n",
                "ci",
                "-o",
                "jsonpath={.data.runner-token}",
            ])
            .await;
        let token: k8s_openapi::ByteString = serde_json::from_value(json!(b64.trim())).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&token.0),
            env.gitlab.runner(id).unwrap().token,
            "{label}"
        );

        k.ok(&[
            "patch",
            "runner",
            "linux-builders",
            "-n",
            "ci",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"paused":true}}"#,
        ])
        .await;
        env.wait("paused in GitLab", || async {
            env.gitlab.runner(id).filter(|r| r.paused).map(|_| ())
        })
        .await;

        let bad = "apiVersion: gitlab.runner-operator.dev/v1alpha1\nkind: Runner\nmetadata: {name: bad, namespace: ci}\nspec:\n  connectionRef: {name: gitlab}\n  runnerType: project_type\n  project: platform/api\n  maximumTimeout: 10\n";
        let (ok, _, err) = k.run(&["apply", "-f", "-"], Some(bad)).await;
        assert!(!ok && err.contains("maximumTimeout"), "{label}: {err}");
        let (ok, _, err) = k.run(&["patch", "runner", "linux-builders", "-n", "ci", "--type", "merge", "-p", r#"{"spec":{"runnerType":"instance_type","project":null,"assignedProjects":null}}"#], None).await;
        assert!(
            !ok && err.contains("runnerType is immutable"),
            "{label}: {err}"
        );

        let explain = k.ok(&["explain", "runner.spec.deletionPolicy"]).await;
        assert!(explain.contains("Orphan"), "{label}: {explain}");
        let describe = k
            .ok(&["describe", "runner", "linux-builders", "-n", "ci"])
            .await;
        assert!(
            describe.contains("Created") && describe.contains("registered GitLab runner"),
            "{label}: {describe}"
        );

        let before = env.gitlab.runner(id).unwrap().token;
        k.ok(&[
            "annotate",
            "runner",
            "linux-builders",
            "-n",
            "ci",
            "--overwrite",
            "gitlab.runner-operator.dev/rotate-token=now",
        ])
        .await;
        env.wait("rotated on request", || async {
            env.gitlab
                .runner(id)
                .filter(|r| r.token != before)
                .map(|_| ())
        })
        .await;

        k.ok(&[
            "delete",
            "-f",
            "deploy/examples/project-runner.yaml",
            "--timeout=30s",
        ])
        .await;
        assert!(
            env.gitlab.runner(id).is_none(),
            "{label}: deleted in GitLab"
        );
        let (ok, _, err) = k
            .run(&["get", "runner", "linux-builders", "-n", "ci"], None)
            .await;
        assert!(!ok && err.contains("NotFound"), "{label}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
