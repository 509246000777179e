use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    runner_operator::cli::main(runner_operator::cli::Cli::parse())
}
