//! The `runner-operator sandbox` binary as a user runs it: starts, serves the examples, and
//! stops cleanly on SIGTERM (graceful shutdown of the controllers).

use std::process::{Command, Stdio};
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use runner_operator::crd::Runner;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_runs_the_examples_and_stops_on_sigterm() {
    runner_operator::tls::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!(
        "runner-operator-sandbox-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let gitlab = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner-operator"))
        .args(["sandbox", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--gitlab-listen",
            &gitlab,
            "--kube-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--resync-interval",
            "5s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/project-runner.yaml"
    ))
    .unwrap();
    let runner: Runner = serde_saphyr::from_str(&text).unwrap();
    let runners: Api<Runner> = Api::namespaced(client, "ci");
    runners
        .create(&PostParams::default(), &runner)
        .await
        .unwrap();
    let ready = loop {
        let r = runners.get("linux-builders").await.unwrap();
        if r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        }) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the example never became Ready: {:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = ready.status.unwrap().runner_id.unwrap();
    let all: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{gitlab}/api/v4/runners/all"))
        .header("PRIVATE-TOKEN", "glpat-emulator-root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all[0]["id"], id, "the runner exists in the emulated GitLab");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(
        exit.is_some_and(|s| s.success()),
        "sandbox did not stop cleanly on SIGTERM: {exit:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
