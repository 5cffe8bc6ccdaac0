//! `danemta report tls`: the TLS report (RFC 8460) the relay would send for one policy
//! domain and one UTC day, from the session counters in its queue store. Safe while the
//! daemon runs: the store is opened as `danemta queue` opens it, and only read.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use dns::DnsName;
use relay::config::Config;
use relay::tlsrpt::{self, Reporter};
use sts::report::{Report, ReportDay};

use crate::error::CliError;
use crate::escape::escape;

/// `danemta report …`.
#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Print the TLS report (RFC 8460) that would be sent to a domain for a day: the
    /// sessions to it by policy (tlsa, sts, no-policy-found), with their failures.
    ///
    /// Exit status: 0 printed (a report without policies when nothing was counted); 64 usage
    /// error; 75 the queue cannot be read; 78 bad configuration.
    Tls(TlsArgs),
}

/// Options of `danemta report tls`.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// The policy domain (the recipient domain).
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// The UTC day, YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    day: String,
    /// Print the report's JSON exactly as it would be sent (RFC 8460 §4.4).
    #[arg(long)]
    json: bool,
    /// The configuration file; default /etc/danemta/danemta.toml when present, else the
    /// embedded defaults (as `serve`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `danemta report`.
pub fn run(command: ReportCommand) -> Result<ExitCode, CliError> {
    match command {
        ReportCommand::Tls(args) => tls(&args),
    }
}

fn tls(args: &TlsArgs) -> Result<ExitCode, CliError> {
    let domain: DnsName = args
        .domain
        .parse()
        .map_err(|e| CliError::Usage(format!("--domain {:?}: {e}", args.domain)))?;
    let day: ReportDay = args
        .day
        .parse()
        .map_err(|e| CliError::Usage(format!("--day: {e}")))?;
    let config = Config::load(args.config.as_deref())?;
    let store = crate::queue::open_queue(&config)?;
    let reporter = Reporter::for_host(&submitter(&config));
    let report = tlsrpt::report(&*store, &reporter, &domain, day)?;
    let text = if args.json {
        let json = report
            .to_json()
            .map_err(|e| CliError::Data(e.to_string()))?;
        let mut text = String::from_utf8_lossy(&json).into_owned();
        text.push('\n');
        text
    } else {
        summary(&report, &domain, day)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// The relay's name as the daemon uses it ([`relay::daemon::hostname`]); `localhost` when
/// that is not a usable name (the daemon would refuse to start; the report is still shown).
fn submitter(config: &Config) -> DnsName {
    relay::daemon::hostname(config)
        .ok()
        .and_then(|h| h.as_str().parse().ok())
        .unwrap_or_else(|| {
            eprintln!("danemta: warning: no usable host name; the report names localhost");
            "localhost".parse().unwrap_or_else(|_| DnsName::root())
        })
}

/// The report for people: one block per policy, one line per failure detail.
fn summary(report: &Report, domain: &DnsName, day: ReportDay) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "TLS report (RFC 8460) for {domain}, {day} (00:00:00Z to 23:59:59Z)"
    );
    let _ = writeln!(
        out,
        "report-id {}, from {} <{}>",
        escape(&report.report_id),
        escape(&report.organization_name),
        escape(&report.contact_info)
    );
    if report.policies.is_empty() {
        let _ = writeln!(out, "no sessions counted");
        return out;
    }
    for p in &report.policies {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "policy {}: {} successful, {} failed",
            p.policy.policy_type,
            p.summary.total_successful_session_count,
            p.summary.total_failure_session_count
        );
        for line in &p.policy.policy_string {
            let _ = writeln!(out, "  {}", escape(line));
        }
        if !p.policy.mx_host.is_empty() {
            let _ = writeln!(out, "  mx-host: {}", escape(&p.policy.mx_host.join(", ")));
        }
        for f in &p.failure_details {
            let mx = f.receiving_mx_hostname.as_deref().unwrap_or("-");
            let ip = f
                .receiving_ip
                .map_or_else(String::new, |ip| format!(" [{ip}]"));
            let _ = writeln!(
                out,
                "  {} {}{ip}: {} session{}",
                f.result_type,
                escape(mx),
                f.failed_session_count,
                if f.failed_session_count == 1 { "" } else { "s" }
            );
        }
    }
    out
}
