//! `dnspolicy-operator`: the controller (`run`) and the node agent, as the image runs them.
//!
//! Exit codes: 0 success, 2 invalid input (naming the file, line or field),
//! 1 any other failure.

use std::process::ExitCode;

use clap::Parser;

use dnspolicy_operator::cli::{Cli, CliError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dnspolicy_operator::cli::main(cli) {
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
