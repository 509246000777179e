//! Standalone GitLab emulator for manual runs and other tools.
//!
//! ```text
//! cargo run --example gitlab-emulator -- --listen 127.0.0.1:8929 [--seed seed.json]
//! curl -H 'PRIVATE-TOKEN: glpat-emulator-root' http://127.0.0.1:8929/api/v4/version
//! ```
//! Without `--seed` it loads the default seed (users root and platform-bot, tokens
//! glpat-emulator-root and glpat-emulator-bot, groups platform and platform/ci, projects
//! platform/api, platform/web, platform/docs). More can be seeded at run time with
//! `POST /-/emulator/seed`.

use std::process::ExitCode;

use gitlab_emulator::{GitLabEmulator, Seed, default_seed};

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen = "127.0.0.1:8929".to_string();
    let mut seed_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            "--seed" => seed_path = args.next(),
            "-h" | "--help" => {
                println!("usage: gitlab-emulator [--listen ADDR] [--seed FILE.json]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}; see --help");
                return ExitCode::FAILURE;
            }
        }
    }
    let seed: Seed = match seed_path {
        None => default_seed(),
        Some(path) => match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        {
            Ok(seed) => seed,
            Err(e) => {
                eprintln!("cannot load seed {path}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let emulator = match GitLabEmulator::start_on(&listen, &seed).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "GitLab emulator on {} (API at {}/api/v4); Ctrl-C stops it",
        emulator.url(),
        emulator.url()
    );
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
