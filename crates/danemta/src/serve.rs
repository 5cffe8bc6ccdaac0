//! `danemta serve` (work in progress).

use std::process::ExitCode;

use crate::error::CliError;

/// Options of `danemta serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs `danemta serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    let _ = args;
    Err(CliError::Usage("not implemented yet".into()))
}
