//! # danemta: the command-line front end
//!
//! Parses the command line (the contract in PRODUCT.md), runs the chosen command from the
//! library crates, and turns the outcome into output and an exit status. No DANE rule lives
//! here.

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
    /// Make and check TLSA records (RFC 6698) for a certificate chain.
    #[command(subcommand)]
    Tlsa(tlsa::TlsaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tlsa(cmd) => tlsa::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("danemta: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
