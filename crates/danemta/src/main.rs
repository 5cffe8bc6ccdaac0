//! # danemta: the command-line front end
//!
//! Parses the command line (the contract in PRODUCT.md), runs the chosen command from the
//! library crates, and turns the outcome into output and an exit status. No DANE rule lives
//! here.

mod check;
mod dnsopts;
mod doctor;
mod error;
mod tlsa;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

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
    /// Check a domain's DANE health: MX hosts, DNSSEC status, TLSA records, DANE state.
    ///
    /// Exit status: 0 all ok, 1 warnings, 2 failures, 64 usage error.
    Check(check::CheckArgs),
    /// Find out whether this machine can validate DNSSEC, and what to fix if not.
    ///
    /// Exit status: 0 DNSSEC validation works, 1 it does not.
    Doctor(doctor::DoctorArgs),
    /// Make and check TLSA records (RFC 6698) for a certificate chain.
    #[command(subcommand)]
    Tlsa(tlsa::TlsaCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Tlsa(cmd) => tlsa::run(cmd).map_err(CliError::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("danemta: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
