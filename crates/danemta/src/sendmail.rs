//! `danemta sendmail` (work in progress).

use std::process::ExitCode;

use crate::error::CliError;

/// Options of `danemta sendmail`.
#[derive(Debug, clap::Args)]
pub struct SendmailArgs {}

/// Runs `danemta sendmail`.
pub fn run(args: SendmailArgs) -> Result<ExitCode, CliError> {
    let _ = args;
    Err(CliError::Usage("not implemented yet".into()))
}
