//! The command line: `run`, `plan`, `prune`, `import`, `crd`, `jobs`, `version`, `completions` (and `sandbox` with the `emulator`
//! feature).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Manage GitLab CI runners declaratively from Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "runner-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<crate::run::RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Show what the operator would do for each Runner (read-only). Exit code: 0 no changes,
    /// 2 changes pending, 1 a blocked Runner or an error.
    Plan(Box<crate::preview::PlanArgs>),
    /// List the GitLab runners this cluster (--cluster-name) marked that no Runner claims, and
    /// with --yes delete those unused for --min-idle.
    Prune(Box<crate::prune::PruneArgs>),
    /// Write Runner manifests for runners that already exist in GitLab (read-only).
    Import(Box<crate::import::ImportArgs>),
    /// List a Runner's recent jobs from GitLab (read-only), through the Runner's connection.
    Jobs(crate::jobs::JobsArgs),
    /// Print the version, git commit, build date and cluster name.
    Version {
        /// The cluster name the operator runs with (as `run --cluster-name`).
        #[arg(long, env = "RUNNER_OPERATOR_CLUSTER_NAME")]
        cluster_name: Option<crate::controller::identity::ClusterName>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Run a local Kubernetes API, a GitLab emulator and the operator together (no cluster needed).
    #[cfg(feature = "emulator")]
    Sandbox(crate::sandbox::SandboxArgs),
}

/// Runs the parsed command line and maps failures to a message and exit code 1.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Version { cluster_name } => {
            print!("{}", version_text());
            match cluster_name {
                Some(c) => println!("cluster: {c}"),
                None => println!(
                    "cluster: (none: set --cluster-name so a rebuilt cluster takes over its runners)"
                ),
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "runner-operator", &mut std::io::stdout());
            Ok(())
        }
        Command::Crd { output_dir } => print_crds(output_dir),
        Command::Jobs(args) => crate::jobs::run(args),
        Command::Plan(args) => {
            return match crate::preview::run(*args) {
                Ok(code) => ExitCode::from(code),
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Import(args) => crate::import::run(*args),
        Command::Prune(args) => crate::prune::run(*args),
        Command::Run(args) => crate::run::run(*args),
        #[cfg(feature = "emulator")]
        Command::Sandbox(args) => crate::sandbox::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What this binary is: version, commit, build date, target and features.
pub fn version_text() -> String {
    let features = if cfg!(feature = "emulator") {
        "emulator (sandbox, test doubles)"
    } else {
        "none (production build)"
    };
    format!(
        "runner-operator {}\ncommit: {}\nbuilt: {}\ntarget: {}-{}\nfeatures: {features}\n",
        env!("CARGO_PKG_VERSION"),
        crate::build::COMMIT,
        crate::build::DATE,
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// Runs a one-shot command's async body (the read-only commands, `prune`) on a
/// single-threaded runtime, TLS ready.
pub fn block_on<T>(
    body: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(async {
        crate::tls::install_crypto_provider();
        body.await
    })
}

fn print_crds(output_dir: Option<PathBuf>) -> Result<(), String> {
    match output_dir {
        None => {
            let yaml = crate::crd::all_yaml().map_err(|e| format!("rendering CRDs: {e}"))?;
            print!("{yaml}");
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for crd in crate::crd::all() {
                let path = dir.join(crate::crd::file_name(&crd));
                let yaml = crate::crd::to_yaml(&crd).map_err(|e| format!("rendering CRD: {e}"))?;
                std::fs::write(&path, yaml)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
