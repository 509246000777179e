//! The README's kubectl commands against the sandbox (local API + GitLab emulator + operator),
//! with kubectl 1.35 from `.ci/install-tools` (required: these tests are `#[ignore]`d, so plain
//! `cargo test` reports them as ignored, and fail when asked for without it) and, as extra
//! coverage, whatever kubectl the machine has on PATH.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::cluster::Backend;
use crate::operator::Env;

fn kubectls() -> Vec<(String, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let works = |path: &PathBuf| {
        Command::new(path)
            .args(["version", "--client"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let pinned = root.join(".tools/bin/kubectl-1.35");
    assert!(
        works(&pinned),
        "{} not found: run .ci/install-tools (installs kubectl 1.35)",
        pinned.display()
    );
    let mut found = vec![("kubectl 1.35".to_string(), pinned)];
    let on_path = PathBuf::from("kubectl");
    if works(&on_path) {
        found.push(("PATH kubectl".to_string(), on_path));
    } else {
        eprintln!("no kubectl on PATH: only kubectl 1.35 is exercised");
    }
    found
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// `bin` against the Env's API, with its own kubeconfig and cache in a fresh directory
    /// (returned, for the caller to remove).
    fn for_env(env: &Env, bin: PathBuf) -> (Kubectl, PathBuf) {
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
        (k, dir)
    }

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
#[ignore = "needs kubectl 1.35 from .ci/install-tools: cargo test -- --include-ignored runs it (CI does)"]
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
        let env = Env::start(backend).await;
        let (k, dir) = Kubectl::for_env(&env, bin);
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
            "glrunner/linux-builders",
            "glrunner/platform-shared",
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
            "glrunner",
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
        let (ok, _, err) = k.run(&["patch", "glrunner", "linux-builders", "-n", "ci", "--type", "merge", "-p", r#"{"spec":{"runnerType":"instance_type","project":null,"assignedProjects":null}}"#], None).await;
        assert!(
            !ok && err.contains("runnerType is immutable"),
            "{label}: {err}"
        );

        let explain = k.ok(&["explain", "glrunner.spec.deletionPolicy"]).await;
        assert!(explain.contains("Orphan"), "{label}: {explain}");
        let describe = k
            .ok(&["describe", "glrunner", "linux-builders", "-n", "ci"])
            .await;
        assert!(
            describe.contains("Created") && describe.contains("registered GitLab runner"),
            "{label}: {describe}"
        );

        let before = env.gitlab.runner(id).unwrap().token;
        k.ok(&[
            "annotate",
            "glrunner",
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
            .run(&["get", "glrunner", "linux-builders", "-n", "ci"], None)
            .await;
        assert!(!ok && err.contains("NotFound"), "{label}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// GitLab's own Runner Operator defines kind `Runner` too (group apps.gitlab.com): a minimal
/// stand-in of its CRD, to see what `kubectl get runner` resolves to when both are installed.
const GITLAB_RUNNER_CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "runners.apps.gitlab.com"},
 "spec": {"group": "apps.gitlab.com", "scope": "Namespaced",
  "names": {"kind": "Runner", "plural": "runners", "singular": "runner", "listKind": "RunnerList"},
  "versions": [{"name": "v1beta2", "served": true, "storage": true,
   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;

/// One step of the script: the command, and whether it must succeed.
struct Step {
    args: Vec<String>,
    stdin: Option<String>,
}

fn step(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    }
}

/// The same kubectl script on a backend; returns (command, success, normalized output) per step.
async fn kubectl_script(backend: Backend, bin: &std::path::Path) -> Vec<(String, bool, String)> {
    let env = Env::start(backend).await;
    let (k, dir) = Kubectl::for_env(&env, bin.to_path_buf());
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/examples/project-runner.yaml"),
    )
    .unwrap();
    let edited = example.replace("description: Linux builders", "description: Edited");
    let fresh = example.replace("name: linux-builders\n", "name: dry-only\n");
    let full = "runners.gitlab.runner-operator.dev";
    let steps = vec![
        step(&["apply", "-f", "deploy/examples/project-runner.yaml"]),
        step(&[
            "wait",
            "--for=condition=Ready",
            &format!("{full}/linux-builders"),
            "-n",
            "ci",
            "--timeout=60s",
        ]),
        step(&["get", "glrunners", "-n", "ci", "-o", "wide"]),
        step(&[
            "get",
            "glrunner",
            "linux-builders",
            "-n",
            "ci",
            "-o",
            "jsonpath={.spec.description} {.status.conditions[?(@.type==\"Ready\")].status}",
        ]),
        Step {
            args: vec!["diff".into(), "-f".into(), "-".into()],
            stdin: Some(edited.clone()),
        },
        Step {
            args: vec![
                "apply".into(),
                "--dry-run=server".into(),
                "-f".into(),
                "-".into(),
            ],
            stdin: Some(edited),
        },
        Step {
            args: vec![
                "apply".into(),
                "--server-side".into(),
                "--dry-run=server".into(),
                "-f".into(),
                "-".into(),
            ],
            stdin: Some(fresh.clone()),
        },
        Step {
            args: vec![
                "create".into(),
                "--dry-run=server".into(),
                "-f".into(),
                "-".into(),
            ],
            stdin: Some(fresh),
        },
        step(&[
            "get",
            "glrunner",
            "linux-builders",
            "-n",
            "ci",
            "-o",
            "jsonpath={.spec.description}",
        ]),
        step(&["get", "glrunner", "dry-only", "-n", "ci"]),
        step(&["explain", &format!("{full}.spec.tags")]),
        step(&["describe", "glrunner", "linux-builders", "-n", "ci"]),
        Step {
            args: vec!["apply".into(), "-f".into(), "-".into()],
            stdin: Some(GITLAB_RUNNER_CRD.into()),
        },
        step(&[
            "wait",
            "--for=condition=Established",
            "crd/runners.apps.gitlab.com",
            "--timeout=30s",
        ]),
        step(&["get", "runner", "-n", "ci"]),
        step(&["get", "runners", "-n", "ci"]),
        step(&["get", "glrunners", "-n", "ci"]),
        step(&["get", full, "-n", "ci"]),
        step(&[
            "delete",
            "-f",
            "deploy/examples/project-runner.yaml",
            "--timeout=60s",
        ]),
        step(&["get", "glrunners", "-n", "ci"]),
    ];
    let mut out = vec![];
    for s in steps {
        let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        if args[0] == "get" && args[1] == "runner" {
            // Discovery was cached before the second CRD: forget it, as a new shell would.
            let _ = std::fs::remove_dir_all(&k.cache);
        }
        let (ok, stdout, stderr) = k.run(&args, s.stdin.as_deref()).await;
        out.push((
            s.args.join(" "),
            ok,
            normalize(&format!("{stdout}{stderr}")),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Masks what differs between any two runs: ages, times, uids, ids, versions, tokens' hashes.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        // kubectl diff's headers carry file times.
        if line.starts_with("--- ") || line.starts_with("+++ ") {
            out.push_str(&line[..4]);
            out.push_str("<diff-file>\n");
            continue;
        }
        let mut words: Vec<String> = vec![];
        for w in line.split(' ') {
            let w = w.trim_matches('"');
            let masked = if w.starts_with("/tmp/LIVE-") || w.starts_with("/tmp/MERGED-") {
                "<diff-file>".to_string()
            } else if w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                "<hash>".to_string()
            } else if w.len() >= 20 && w.chars().filter(|c| *c == '-').count() == 4 {
                "<uid>".to_string()
            } else if w.ends_with('Z') && w.contains('T') && w.contains(':') {
                "<time>".to_string()
            } else if w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty() && w.len() < 8 {
                "<n>".to_string()
            } else if w.len() > 1
                && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit())
                && matches!(w.chars().last(), Some('s' | 'm' | 'h' | 'd'))
            {
                "<age>".to_string()
            } else {
                w.to_string()
            };
            words.push(masked);
        }
        out.push_str(words.join(" ").trim_end());
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real control plane: tests/control-plane/e2e.sh runs it (needs Go), or cargo test -- --include-ignored"]
async fn the_same_kubectl_script_on_both_backends() {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl-1.35");
    assert!(bin.exists(), "kubectl 1.35 missing: run .ci/install-tools");
    let local = kubectl_script(Backend::Local, &bin).await;
    let real = kubectl_script(Backend::Real, &bin).await;
    let dump = |steps: &[(String, bool, String)]| {
        steps
            .iter()
            .map(|(c, ok, o)| {
                format!(
                    "$ kubectl {c}   [{}]\n{o}",
                    if *ok { "ok" } else { "failed" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(target.join("kubectl-local.txt"), dump(&local)).unwrap();
    std::fs::write(target.join("kubectl-real.txt"), dump(&real)).unwrap();
    let differences: Vec<String> = local
        .iter()
        .zip(&real)
        .filter(|(l, r)| l != r)
        .map(|(l, r)| {
            format!(
                "$ kubectl {}\n-- in-memory API ({}):\n{}-- kube-apiserver ({}):\n{}",
                l.0, l.1, l.2, r.1, r.2
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "the in-memory API and kube-apiserver disagree (transcripts in {}):\n{}",
        target.display(),
        differences.join("\n")
    );
    // What the script proves on both: dry runs change nothing, and `runner` alone is ambiguous
    // once GitLab's Runner Operator is installed (it wins: apps.gitlab.com sorts first).
    let out = |cmd: &str| {
        real.iter()
            .find(|(c, _, _)| c == cmd)
            .map(|(_, ok, o)| (*ok, o.clone()))
            .unwrap_or_else(|| panic!("no step {cmd}"))
    };
    assert!(
        out("apply --dry-run=server -f -")
            .1
            .contains("configured (server dry run)")
    );
    assert_eq!(
        out("get glrunner linux-builders -n ci -o jsonpath={.spec.description}")
            .1
            .trim(),
        "Linux builders"
    );
    assert!(out("get glrunner dry-only -n ci").1.contains("NotFound"));
    assert!(out("get runner -n ci").1.contains("No resources found"));
    assert!(out("get glrunners -n ci").1.contains("linux-builders"));
}

/// Every kubectl command users are shown names the resource unambiguously (`glrunner` or
/// `runners.gitlab.runner-operator.dev`): with GitLab's Runner Operator installed, `runner`
/// means its kind (see `the_same_kubectl_script_on_both_backends`).
#[test]
fn documented_kubectl_commands_are_unambiguous() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("charts/runner-operator/templates/NOTES.txt"),
        root.join("charts/runner-operator/README.md"),
        root.join("src/sandbox.rs"),
    ];
    for dir in ["docs", "deploy/examples"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            files.push(e.path());
        }
    }
    let mut bad = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            let line = line.split(" # ").next().unwrap_or_default();
            for cmd in line.split("kubectl ").skip(1) {
                let words: Vec<&str> = cmd.split_whitespace().take(6).collect();
                let ambiguous = words.iter().any(|w| {
                    let w = w.trim_matches(|c: char| c == '`' || c == '"' || c == '\'');
                    w == "runner"
                        || w == "runners"
                        || w.starts_with("runner/")
                        || w.starts_with("runners/")
                        || w.starts_with("runner.spec")
                });
                if ambiguous {
                    bad.push(format!("{}: {}", f.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "ambiguous kubectl commands:\n{}",
        bad.join("\n")
    );
}
