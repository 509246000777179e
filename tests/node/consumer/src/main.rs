//! A runner process for the real-node tests, run as the gitlab-runner Helm chart runs the agent:
//! it verifies its token (`gitlab-runner register --token`), then polls for jobs (`run`).
//!
//! Environment: `RUNNER_TOKEN` (or `RUNNER_TOKEN_FILE`), `GITLAB_URL`, optional
//! `POLL_INTERVAL_SECONDS` (default 3) and `LISTEN_PORT` (default 8080, serving `/readyz`:
//! 200 only while GitLab accepted the last poll). Like the real agent it does not exit when
//! GitLab refuses its token after start: it logs `forbidden` and stays unready until it is
//! restarted with the new token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gitlab_runner::job::Job;
use gitlab_runner::{GitlabLayer, JobHandler, JobResult, Phase, RunnerBuilder, outputln};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::prelude::*;
use url::Url;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One line per event, with a Unix time in milliseconds the tests read; never the token.
macro_rules! say {
    ($($arg:tt)*) => { println!("{} {}", now_ms(), format!($($arg)*)) };
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn token() -> Result<String, String> {
    if let Some(t) = env("RUNNER_TOKEN") {
        return Ok(t.trim().to_string());
    }
    let path = env("RUNNER_TOKEN_FILE").ok_or("RUNNER_TOKEN is not set")?;
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("reading {path}: {e}"))
}

/// Runs a job's script lines with /bin/sh, as gitlab-runner's shell executor does.
struct Shell;

#[async_trait::async_trait]
impl JobHandler for Shell {
    async fn step(&mut self, script: &[String], phase: Phase) -> JobResult {
        for line in script {
            outputln!("$ {line}");
            let out = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(line)
                .output()
                .await
                .map_err(|_| ())?;
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                outputln!("{l}");
            }
            for l in String::from_utf8_lossy(&out.stderr).lines() {
                outputln!("{l}");
            }
            if !out.status.success() {
                say!("job step {phase:?} failed: {line}");
                return Err(());
            }
        }
        Ok(())
    }
}

async fn serve_ready(port: u16, ready: Arc<AtomicBool>) {
    let Ok(listener) = tokio::net::TcpListener::bind(("0.0.0.0", port)).await else {
        say!("cannot listen on port {port}");
        std::process::exit(1);
    };
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let (status, body) = if ready.load(Ordering::Relaxed) {
                ("200 OK", "ok\n")
            } else {
                (
                    "503 Service Unavailable",
                    "token refused or not yet verified\n",
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        });
    }
}

fn system_id() -> String {
    // gitlab-runner derives s_<12 hex> from the machine id; a pod has none, so the pod's name
    // (its hostname) keeps one manager per pod, as the real agent's config file would.
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let digest: u64 = host.trim().bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("s_{:012x}", digest & 0xffff_ffff_ffff)
}

#[tokio::main]
async fn main() {
    let token = match token() {
        Ok(t) => t,
        Err(e) => {
            say!("ERROR: {e}");
            std::process::exit(1)
        }
    };
    let url = match env("GITLAB_URL").map(|u| Url::parse(&u)) {
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            say!("ERROR: GITLAB_URL is not a URL: {e}");
            std::process::exit(1)
        }
        None => {
            say!("ERROR: GITLAB_URL is not set");
            std::process::exit(1)
        }
    };
    let interval = env("POLL_INTERVAL_SECONDS")
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    let port = env("LISTEN_PORT")
        .and_then(|s| s.parse().ok())
        .unwrap_or(8080);
    let sid = system_id();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve_ready(port, ready.clone()));

    // register: the agent verifies the token first and stops if GitLab refuses it.
    let http = reqwest::Client::new();
    let verify = url
        .join("api/v4/runners/verify")
        .expect("static path joins");
    match http
        .post(verify)
        .form(&[("token", token.as_str()), ("system_id", sid.as_str())])
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => say!("verified system_id={sid}"),
        Ok(r) => {
            say!("ERROR: verifying runner: {} (token refused)", r.status());
            std::process::exit(1)
        }
        Err(e) => {
            say!("ERROR: verifying runner: {e}");
            std::process::exit(1)
        }
    }

    let (layer, jobs) = GitlabLayer::new();
    tracing_subscriber::registry().with(layer).init();
    let dir = std::env::temp_dir().join("builds");
    let mut runner = RunnerBuilder::new(url, token, dir, jobs)
        .system_id(sid)
        .version(env!("CARGO_PKG_VERSION"))
        .revision("runner-consumer")
        .platform("linux")
        .architecture(std::env::consts::ARCH)
        .build()
        .await;
    let mut refused = 0u32;
    let mut accepted_once = false;
    loop {
        match runner.request_job(|_job: Job| async { Ok(Shell) }).await {
            Ok(got) => {
                if !accepted_once || refused > 0 {
                    say!("poll accepted");
                }
                accepted_once = true;
                refused = 0;
                ready.store(true, Ordering::Relaxed);
                if got {
                    say!("job received");
                }
            }
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                let forbidden = e.to_string().contains("403");
                if forbidden {
                    refused += 1;
                    say!("forbidden: GitLab refused the token ({refused} in a row)");
                    if refused == 3 {
                        say!("runner is unhealthy; restart it with the new token");
                    }
                } else {
                    say!("poll failed: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
    }
}
