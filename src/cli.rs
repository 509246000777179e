//! The command line: `run`, `crd`, `version` (and `sandbox` with the `emulator` feature).

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
    /// Print the version.
    Version,
    /// Run a local Kubernetes API, a GitLab emulator and the operator together (no cluster needed).
    #[cfg(feature = "emulator")]
    Sandbox(crate::sandbox::SandboxArgs),
}

/// Runs the parsed command line and maps failures to a message and exit code 1.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Version => {
            println!("runner-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Crd { output_dir } => print_crds(output_dir),
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
