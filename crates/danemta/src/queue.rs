//! `danemta queue` (work in progress).

use std::process::ExitCode;

use crate::error::CliError;

/// Options of `danemta queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {}

/// Runs `danemta queue`.
pub fn run(args: QueueArgs) -> Result<ExitCode, CliError> {
    let _ = args;
    Err(CliError::Usage("not implemented yet".into()))
}
