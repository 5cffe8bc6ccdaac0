//! Errors of the command line, and the exit status each maps to.

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input to `tlsa`.
    #[error(transparent)]
    Tlsa(#[from] crate::tlsa::InputError),
    /// The resolver back-end cannot be set up.
    #[error("{0}")]
    Resolver(#[from] dns::SetupError),
    /// The async runtime cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A command-line usage error found after parsing.
    #[error("{0}")]
    Usage(String),
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// sysexits EX_USAGE.
pub const EX_USAGE: u8 = 64;
/// sysexits EX_TEMPFAIL (the resolver could not be set up: try again later).
pub const EX_TEMPFAIL: u8 = 75;
/// sysexits EX_NOINPUT.
pub const EX_NOINPUT: u8 = 66;

impl CliError {
    /// The exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Tlsa(e) => e.exit_code(),
            CliError::Resolver(_) | CliError::Runtime(_) => EX_TEMPFAIL,
            CliError::Usage(_) => EX_USAGE,
            CliError::Read { .. } => EX_NOINPUT,
        }
    }
}
