//! `dnspolicy`: the user's command line (crd, render, explain, status).
//!
//! Exit codes: 0 success, 2 invalid input (naming the file, line or field),
//! 1 any other failure.

use std::process::ExitCode;

use clap::Parser;

use dnspolicy::cli::{Cli, CliError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dnspolicy::cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Invalid(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
