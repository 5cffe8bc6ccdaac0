//! `danemta doctor`: can this machine validate DNSSEC, and what to fix if not.

use std::process::ExitCode;

use clap::Args;
use dns::DnsName;
use dns::doctor::{Level, can_validate, probe};

use crate::dnsopts::{DnsArgs, runtime};
use crate::error::CliError;
use crate::escape::escape;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    dns: DnsArgs,
    /// A name in a DNSSEC-signed zone to test validation with.
    #[arg(long, value_name = "NAME", default_value = "ietf.org")]
    probe: DnsName,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status 0 when DNSSEC validation works, 1 when it does not.
pub fn run(args: DoctorArgs) -> Result<ExitCode, CliError> {
    let rt = runtime().map_err(CliError::Runtime)?;
    rt.block_on(async {
        let backend = args.dns.backend().await?;
        let checks = probe(&backend, &args.dns.resolver, &args.probe).await;
        let ok = can_validate(&checks);
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "resolver": args.dns.resolver.to_string(), "can_validate": ok, "checks": checks })
            );
        } else {
            println!("resolver: {}", escape(&args.dns.resolver.to_string()));
            for c in &checks {
                let tag = match c.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                // Details may quote DNS data or resolver errors.
                println!("{tag} {}: {}", c.check, escape(&c.detail));
                if let Some(fix) = &c.fix {
                    println!("     fix: {}", escape(fix));
                }
            }
            println!(
                "{}",
                if ok {
                    "DNSSEC validation works: DANE can be trusted here."
                } else {
                    "DNSSEC validation does NOT work here: DANE cannot be trusted (dane-only delivery is refused)."
                }
            );
        }
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
