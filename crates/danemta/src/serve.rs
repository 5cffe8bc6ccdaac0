//! `danemta serve`: the relay daemon (PRODUCT.md, "The relay daemon"). Loads and checks the
//! configuration, prints the settings in force, and runs [`relay::daemon`] until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use relay::config::Config;

use crate::error::CliError;
use crate::escape::escape;

/// sysexits EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;
/// sysexits EX_NOPERM: run as root on a spool that is another user's.
const EX_NOPERM: u8 = 77;

/// Options of `danemta serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Default: /etc/danemta/danemta.toml when it exists,
    /// else the embedded defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration (and the certificate, users and CA files it names), print the
    /// settings in force, and exit: 0 when it is usable, 78 when not.
    #[arg(long)]
    check_config: bool,
}

/// Runs `danemta serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("danemta serve: {}", escape(&e.to_string()));
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    let origin = match config.file() {
        Some(file) => format!("from {}", file.display()),
        None => "embedded defaults (no configuration file)".to_owned(),
    };
    eprintln!("danemta serve: settings in force, {origin} (* = set in the file):");
    for s in config.effective() {
        eprintln!(
            "  {} {} = {}",
            if s.from_file { '*' } else { ' ' },
            s.key,
            escape(&s.value)
        );
    }
    for w in config.warnings() {
        eprintln!("danemta serve: warning: {}", escape(&w));
    }
    if args.check_config {
        return Ok(match relay::daemon::check(&config) {
            Ok(()) => {
                eprintln!("danemta serve: the configuration is usable");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("danemta serve: {}", escape(&e.to_string()));
                ExitCode::from(EX_CONFIG)
            }
        });
    }
    if let Some((uid, _)) = crate::queue::foreign_spool_owner(&config.queue.dir) {
        // Files root made there (the queue database's journal, message files, the
        // self-signed certificate) would lock the spool's owner out of its own queue.
        eprintln!(
            "danemta serve: the spool {} belongs to uid {uid}, not root: run the daemon as \
             that user (`systemctl start danemta` for the package's), not as root",
            escape(&config.queue.dir.display().to_string())
        );
        return Ok(ExitCode::from(EX_NOPERM));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let path = config.file().map(PathBuf::from);
    match runtime.block_on(relay::daemon::run(config, path)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("danemta serve: {}", escape(&e.to_string()));
            Ok(ExitCode::from(match e {
                relay::daemon::DaemonError::Listen { .. }
                | relay::daemon::DaemonError::Queue { .. }
                | relay::daemon::DaemonError::AlreadyRunning(_)
                | relay::daemon::DaemonError::Wake(_)
                | relay::daemon::DaemonError::Signals(_) => crate::error::EX_TEMPFAIL,
                _ => EX_CONFIG,
            }))
        }
    }
}
