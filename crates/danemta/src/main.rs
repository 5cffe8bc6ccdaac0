//! # danemta: the command-line front end
//!
//! Parses the command line (the contract in PRODUCT.md), runs the chosen command from the
//! library crates, and turns the outcome into output and an exit status. No DANE rule lives
//! here.

mod check;
mod dnsopts;
mod doctor;
mod error;
mod escape;
mod manual;
mod queue;
mod report;
mod rollover;
mod send;
mod sendmail;
mod serve;
mod tlsa;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// danemta: SMTP delivery secured by opportunistic DANE TLS (RFC 7672).
///
/// A DNSSEC-validated TLSA record at _25._tcp.<mx-host> tells a sending MTA that the server
/// supports STARTTLS and how to authenticate its certificate, so that no attacker can strip
/// STARTTLS or substitute a certificate.
#[derive(Debug, Parser)]
#[command(name = "danemta", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay daemon: accept mail over SMTP, queue it durably, deliver it with DANE.
    ///
    /// Without --config it reads /etc/danemta/danemta.toml when present, else runs on the
    /// embedded defaults (listen on 127.0.0.1:2525, relay for loopback clients, spool in
    /// /var/spool/danemta as root). SIGHUP reloads policies and certificates; SIGTERM stops.
    Serve(serve::ServeArgs),
    /// Inspect and manage the relay's queue (safe while the daemon runs).
    Queue(queue::QueueArgs),
    /// sendmail(1)-compatible submission to the local relay: reads the message on standard
    /// input. Install as /usr/sbin/sendmail for applications.
    ///
    /// Called by the name `sendmail` (a link to the danemta binary, e.g. /usr/sbin/sendmail),
    /// danemta acts as `danemta sendmail`; called as `mailq`, as `danemta queue list`.
    #[command(after_long_help = sendmail::USAGE)]
    Sendmail(sendmail::SendmailArgs),
    /// Check a domain's DANE health: MX hosts, DNSSEC status, TLSA records, DANE state.
    ///
    /// Exit status: 0 all ok, 1 warnings, 2 failures, 64 usage error.
    Check(check::CheckArgs),
    /// Deliver one message now, and show exactly what security each attempt got.
    ///
    /// Exit status (sysexits): 0 delivered to every recipient, 75 some deferred and none
    /// bounced, 69 some bounced, 64 usage error, 65 bad message. Each attempt is logged on
    /// standard error (DANEMTA_LOG=debug for more).
    Send(send::SendArgs),
    /// Find out whether this machine can validate DNSSEC, and what to fix if not.
    ///
    /// Exit status: 0 DNSSEC validation works, 1 it does not.
    Doctor(doctor::DoctorArgs),
    /// Make and check TLSA records (RFC 6698) for a certificate chain.
    #[command(subcommand)]
    Tlsa(tlsa::TlsaCommand),
    /// Show the reports the relay sends: `report tls` for TLS reporting (RFC 8460).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on standard output.
    ///
    /// For example: `danemta completions bash > /etc/bash_completion.d/danemta`.
    Completions(manual::CompletionsArgs),
    /// Write the manual pages (danemta(8) and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages(manual::ManpagesArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(command_line(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.exit_code() {
                0 => 0,
                // `tlsa verify` promises 2 for bad input; the other commands follow sysexits.
                _ if std::env::args().nth(1).as_deref() == Some("tlsa") => 2,
                _ => error::EX_USAGE,
            });
        }
    };
    init_logging(matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Send(args) => send::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Tlsa(cmd) => tlsa::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Sendmail(args) => sendmail::run(args),
        Command::Report(cmd) => report::run(cmd),
        Command::Completions(args) => manual::completions(args),
        Command::Manpages(args) => manual::manpages(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Error messages may quote peer or DNS data.
            eprintln!("danemta: error: {}", escape::escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command line as danemta reads it. Installed under the names applications call, the
/// binary takes the role they expect, as Postfix's and Exim's do: `sendmail ARGS…` (e.g. a
/// /usr/sbin/sendmail link) is `danemta sendmail ARGS…`, and `mailq` is `danemta queue list`.
fn command_line(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let called_as = args
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("danemta")
        .to_owned();
    let role: &[&str] = match called_as.as_str() {
        "sendmail" => &["sendmail"],
        "mailq" => &["queue", "list"],
        _ => &[],
    };
    if !role.is_empty() {
        args.splice(
            0..1.min(args.len()),
            std::iter::once("danemta")
                .chain(role.iter().copied())
                .map(Into::into),
        );
    }
    args
}

/// Logs go to standard error. Commands log one line per delivery attempt at `info`;
/// `DANEMTA_LOG` (tracing's env-filter syntax) changes what is shown. Every field is escaped
/// ([`escape::escape`]): attempt lines quote server replies, and CR or ESC in them must not
/// rewrite the terminal.
///
/// The daemon (`serve`) logs every event at `info` with a timestamp, in Postfix's words
/// (PRODUCT.md); `DANEMTA_LOG_FORMAT=json` makes each line a JSON object with the event's
/// fields (`queue_id`, `to`, `relay`, `delay`, `dsn`, `status`, …) instead.
fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::field::MakeExt;
    // hickory's own warnings (e.g. a response without NSEC records) are about answers our
    // DNSSEC code judges and reports itself, in the lookup's status and reason.
    let default = if daemon {
        "warn,hickory_proto=error,hickory_net=error,hickory_resolver=error,relay=info,smtp=info"
    } else {
        "warn,hickory_proto=error,hickory_net=error,hickory_resolver=error,smtp=info"
    };
    let filter = EnvFilter::try_from_env("DANEMTA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    if daemon && std::env::var("DANEMTA_LOG_FORMAT").is_ok_and(|v| v == "json") {
        // JSON strings are escaped by serde_json; no terminal escapes get through.
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: piped logs stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if daemon {
        // The daemon's lines are the message alone: its fields are in the text already.
        let message =
            tracing_subscriber::fmt::format::debug_fn(|writer, field, value| match field.name() {
                "message" => write!(writer, "{}", escape::escape(&format!("{value:?}"))),
                _ => Ok(()),
            });
        let _ = builder.fmt_fields(message).try_init();
    } else {
        let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
            let text = format!("{value:?}");
            match field.name() {
                "message" => write!(writer, "{}", escape::escape(&text)),
                name => write!(writer, "{name}={}", escape::escape(&text)),
            }
        })
        .delimited(" ");
        let _ = builder.fmt_fields(fields).without_time().try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::command_line;

    fn line(args: &[&str]) -> Vec<String> {
        command_line(args.iter().map(Into::into))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn called_as_sendmail_or_mailq_it_takes_their_role() {
        assert_eq!(
            line(&["/usr/sbin/sendmail", "-t", "-i"]),
            ["danemta", "sendmail", "-t", "-i"]
        );
        assert_eq!(line(&["sendmail"]), ["danemta", "sendmail"]);
        assert_eq!(line(&["/usr/bin/mailq"]), ["danemta", "queue", "list"]);
        assert_eq!(
            line(&["/usr/bin/danemta", "check", "example.com"]),
            ["/usr/bin/danemta", "check", "example.com"]
        );
        assert_eq!(
            line(&["/opt/sendmail-tools/danemta", "serve"]),
            ["/opt/sendmail-tools/danemta", "serve"]
        );
        assert!(line(&[]).is_empty());
    }
}
