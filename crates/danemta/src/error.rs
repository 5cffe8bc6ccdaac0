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
    /// A file cannot be written (`manpages`, `completions`).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is refused (it names the file, the key and the reason).
    #[error("{0}")]
    Config(#[from] relay::config::ConfigError),
    /// The queue cannot be opened, read or written.
    #[error("{0}")]
    Queue(#[from] relay::queue::QueueError),
    /// A DNS question could not be answered (try again later).
    #[error("DNS lookup failed: {0}")]
    Lookup(String),
    /// sendmail could neither write the queue nor hand the message to the daemon.
    #[error("cannot queue the message: {0}")]
    Submit(String),
    /// The message given on input is refused (sendmail).
    #[error("{0}")]
    Data(String),
    /// A TLS client configuration cannot be built (no usable trust anchors).
    #[error("cannot set up TLS: {0}")]
    Tls(rustls::Error),
    /// Run as root, the command could not become the owner of the spool.
    #[error("cannot become the owner of the spool {dir} (uid {uid}, gid {gid}): {source}")]
    Privileges {
        /// The spool directory.
        dir: String,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
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
/// sysexits EX_DATAERR (bad message input).
pub const EX_DATAERR: u8 = 65;
/// sysexits EX_NOUSER (`queue`: no message with that id).
pub const EX_NOUSER: u8 = 67;
/// sysexits EX_CANTCREAT (an output file cannot be written).
pub const EX_CANTCREAT: u8 = 73;
/// sysexits EX_OSERR (a system call failed: switching users).
pub const EX_OSERR: u8 = 71;
/// sysexits EX_CONFIG.
pub const EX_CONFIG: u8 = 78;

impl CliError {
    /// The exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Tlsa(e) => e.exit_code(),
            CliError::Resolver(_) | CliError::Runtime(_) => EX_TEMPFAIL,
            CliError::Usage(_) => EX_USAGE,
            CliError::Read { .. } => EX_NOINPUT,
            CliError::Write { .. } => EX_CANTCREAT,
            CliError::Config(_) => EX_CONFIG,
            CliError::Queue(relay::queue::QueueError::NotFound(_)) => EX_NOUSER,
            CliError::Queue(_) => EX_TEMPFAIL,
            CliError::Data(_) => EX_DATAERR,
            CliError::Submit(_) | CliError::Lookup(_) => EX_TEMPFAIL,
            CliError::Tls(_) => EX_CONFIG,
            CliError::Privileges { .. } => EX_OSERR,
        }
    }
}
