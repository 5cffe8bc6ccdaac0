//! `danemta check`: the DANE health of destinations, and their MTA-STS state next to it, for
//! domain owners and monitoring.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use check::probe::ProbeFailure;
use check::report::{DomainReport, HostReport, Level, Verdict};
use check::{Pkix, ProbeCache, ProbeConfig, StsStatus, check_domain};
use clap::Args;
use dns::DnsName;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;
use smtp::Timeouts;

use crate::dnsopts::{DnsArgs, runtime};
use crate::error::CliError;
use crate::escape::escape;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Domains to check (recipient domains, as mail is addressed).
    #[arg(value_name = "DOMAIN", required_unless_present = "from_file")]
    domains: Vec<DnsName>,
    /// Read domains from a file, one per line (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE", conflicts_with = "domains")]
    from_file: Option<PathBuf>,
    /// SMTP port whose TLSA records to check (25 for MX delivery).
    #[arg(long, default_value_t = 25, value_name = "N")]
    port: u16,
    /// One JSON object per domain (JSON Lines, then a summary object, with --from-file).
    #[arg(long)]
    json: bool,
    /// Only look at DNS: MX, addresses, TLSA records and their DNSSEC status; no connections.
    #[arg(long)]
    no_connect: bool,
    /// Judge certificate expiry as of N days from now (will it still work then?).
    #[arg(long, value_name = "N", default_value_t = 0)]
    days: u64,
    /// Domains checked at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    concurrency: usize,
    /// Seconds to wait for each SMTP reply or TLS handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    smtp_timeout: u64,
    /// Our name in EHLO: a domain name or an address literal such as [192.0.2.1].
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    helo: String,
    /// Extra PKIX trust anchors (PEM), besides the system's, for the MTA-STS policy fetch and
    /// the MX certificates (RFC 8461 §3.3, §4.2).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    dns: DnsArgs,
}

/// One line of a domain list: a domain, or the text that is not one.
enum Entry {
    Domain(DnsName),
    Bad {
        line: usize,
        text: String,
        error: String,
    },
}

/// The domains of `path`, one per line (blank lines and # comments skipped), read as they are
/// needed, so that memory does not grow with the list.
fn domain_file(path: &PathBuf) -> Result<(usize, impl Iterator<Item = Entry>), CliError> {
    use std::io::BufRead;
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|source| CliError::Read {
                path: path.display().to_string(),
                source,
            })
    };
    let wanted = |l: &str| {
        let l = l.split('#').next().unwrap_or_default().trim();
        (!l.is_empty()).then(|| l.to_owned())
    };
    let count = open()?
        .lines()
        .map_while(Result::ok)
        .filter(|l| wanted(l).is_some())
        .count();
    let entries = open()?
        .lines()
        .map_while(Result::ok)
        .enumerate()
        .filter_map(move |(i, l)| {
            let text = wanted(&l)?;
            Some(match text.parse() {
                Ok(d) => Entry::Domain(d),
                Err(e) => Entry::Bad {
                    line: i + 1,
                    text,
                    error: format!("{e}"),
                },
            })
        });
    Ok((count, entries))
}

/// Terminal colours, only when standard output is a terminal.
struct Paint(bool);

impl Paint {
    fn verdict(&self, v: &str) -> String {
        let code = match v {
            "ok" => "32",
            "warn" => "33",
            _ => "31",
        };
        self.wrap(code, v)
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// One row of the address table.
fn address_row(h: &HostReport, a: &check::report::AddressReport) -> [String; 7] {
    let short = |t: &dane::Tlsa| {
        let text = t.to_string();
        if text.len() > 22 {
            format!("{}…", &text[..21])
        } else {
            text
        }
    };
    let (tls, cert, matched) = match &a.tls {
        None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        Some(p) if p.chain.is_empty() => {
            let what = match p.error_kind {
                Some(ProbeFailure::Unreachable) => "unreachable",
                Some(ProbeFailure::SmtpFailed) => "SMTP failed",
                Some(ProbeFailure::TlsHandshakeFailed) => "TLS failed",
                Some(ProbeFailure::StarttlsMissing) => "no STARTTLS",
                None if !p.starttls => "no STARTTLS",
                None => "failed",
            };
            (what.to_owned(), "-".to_owned(), "-".to_owned())
        }
        Some(p) => {
            let tls = p
                .tls
                .as_ref()
                .map_or("TLS".to_owned(), |t| t.version.clone());
            let cert = p.chain.first().map_or(String::new(), |c| {
                let until = c.not_after.split('T').next().unwrap_or_default();
                // Certificate names are the peer's text.
                format!(
                    "{} (to {})",
                    escape(c.names.first().map_or("?", String::as_str)),
                    escape(until)
                )
            });
            let matched = match (&p.matched, p.depth) {
                (Some(m), Some(d)) => format!("{} @{d}", short(m)),
                _ if h.dane_usable() => "NO MATCH".to_owned(),
                _ => "-".to_owned(),
            };
            (tls, cert, matched)
        }
    };
    [
        h.preference.to_string(),
        escape(h.name.as_str()).into_owned(),
        a.address.to_string(),
        a.dnssec.to_string(),
        escape(&tls).into_owned(),
        cert,
        matched,
    ]
}

/// The hosts and addresses of a domain as a table, then each host's TLSA records, DANE
/// state and findings.
fn print_hosts(hosts: &[HostReport], paint: &Paint) {
    const HEAD: [&str; 7] = [
        "PREF",
        "HOST",
        "ADDRESS",
        "DNSSEC",
        "TLS",
        "CERTIFICATE",
        "TLSA MATCH",
    ];
    let rows: Vec<([String; 7], &str)> = hosts
        .iter()
        .flat_map(|h| {
            let mut rows: Vec<([String; 7], &str)> = h
                .addresses
                .iter()
                .map(|a| (address_row(h, a), h.verdict.as_str()))
                .collect();
            if rows.is_empty() {
                rows.push((
                    [
                        h.preference.to_string(),
                        escape(h.name.as_str()).into_owned(),
                        "(none)".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ],
                    h.verdict.as_str(),
                ));
            }
            rows
        })
        .collect();
    let mut widths = HEAD.map(|h| h.chars().count());
    for (row, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("  {}  VERDICT", line(&HEAD.map(str::to_owned)));
    for (row, verdict) in &rows {
        println!("  {}  {}", line(row), paint.verdict(verdict));
    }
    for h in hosts {
        let dane = match &h.dane_detail {
            dns::DaneState::Usable { records } => format!(
                "usable — TLS required, authenticated by {} record(s)",
                records.len()
            ),
            dns::DaneState::Unusable => {
                "records present, none usable — TLS required, unauthenticated".into()
            }
            dns::DaneState::NotApplicable { reason } => format!("not applicable — {reason}"),
            dns::DaneState::HostUnusable { reason } => format!("HOST UNUSABLE — {reason}"),
        };
        // Names and reasons can carry DNS data: escaped, like everything from the network.
        println!(
            "  {} (TLSA base {}): DANE {}",
            escape(h.name.as_str()),
            escape(h.tlsa_base.as_str()),
            escape(&dane)
        );
        if let (Some(name), Some(st)) = (&h.tlsa_name, h.tlsa_dnssec) {
            let none = if h.tlsa.is_empty() { " none" } else { "" };
            println!("    TLSA {} ({st}):{none}", escape(name.as_str()));
            for t in &h.tlsa {
                println!("      {t}");
            }
        }
        for a in &h.addresses {
            let Some(p) = &a.tls else { continue };
            if let Some(e) = p.error.as_ref().filter(|_| p.starttls || !h.dane_usable()) {
                // The error quotes the server's replies.
                println!("    {}: {}", a.address, escape(e));
            }
            if let Some(other) = p.other_certificate.as_deref() {
                let key = other.key.map_or("other".to_owned(), |k| {
                    format!("{k:?}").to_ascii_uppercase()
                });
                let verdict = match (&other.matched, other.depth) {
                    (Some(m), Some(d)) => format!("matches {m} at depth {d}"),
                    _ => "matches no TLSA record".to_owned(),
                };
                println!(
                    "    {}: also an {key} certificate, which {verdict}",
                    a.address
                );
            }
        }
        for f in h
            .findings
            .iter()
            .filter(|f| f.level > Level::Info && f.code != "host-unusable")
        {
            let level = if f.level == Level::Fail {
                paint.wrap("31", "fail")
            } else {
                paint.wrap("33", "warn")
            };
            println!("    {level} {}: {} ({})", f.code, escape(&f.message), f.rfc);
        }
    }
}

/// The MTA-STS section: the TXT record and the policy, then each MX host against it.
fn print_mta_sts(r: &DomainReport) {
    let sts = &r.mta_sts;
    // The id, patterns, errors and report addresses come from DNS and the policy host.
    let id = sts
        .txt_id
        .as_deref()
        .map_or(String::new(), |id| format!(", id {}", escape(id)));
    let line = match (&sts.status, &sts.policy) {
        (StsStatus::Absent, _) => "absent (no _mta-sts TXT record)".to_owned(),
        (StsStatus::NotFetched, _) => format!("TXT record{id}, policy not fetched"),
        (StsStatus::Valid, Some(p)) => format!(
            "valid — mode {}{id}, max_age {}, mx {}",
            p.mode(),
            p.max_age(),
            escape(&sts.mx.join(", "))
        ),
        (status, _) => format!(
            "{}{id} — {}",
            status.as_str().to_ascii_uppercase(),
            escape(sts.error.as_deref().unwrap_or(""))
        ),
    };
    println!("  MTA-STS: {line}");
    match (&sts.tls_rpt, &sts.tls_rpt_error) {
        (Some(rua), _) => println!("    TLS-RPT: {}", escape(&rua.join(", "))),
        (None, Some(e)) => println!("    TLS-RPT: INVALID — {}", escape(e)),
        (None, None) if sts.status != StsStatus::Absent => println!("    TLS-RPT: none"),
        (None, None) => {}
    }
    if sts.active_policy().is_none() {
        return;
    }
    for h in &r.hosts {
        let listed = if h.mta_sts_match == Some(true) {
            "in policy"
        } else {
            "NOT in policy"
        };
        let pkix = match (h.pkix_valid, &h.pkix_error) {
            (Some(true), _) => ", PKIX valid".to_owned(),
            (Some(false), e) => format!(", PKIX FAILS — {}", escape(e.as_deref().unwrap_or(""))),
            (None, _) => String::new(),
        };
        println!("    {}: {listed}{pkix}", escape(h.name.as_str()));
    }
}

fn print_human(r: &DomainReport, paint: &Paint) {
    let mx = r
        .mx_dnssec
        .map_or(String::new(), |s| format!(", MX lookup {s}"));
    println!(
        "{}: {} — {}{mx}",
        escape(r.domain.as_str()),
        paint.verdict(r.verdict.as_str()),
        r.route
    );
    if let Some(reason) = &r.reason {
        println!("  {}", escape(reason));
    }
    if !r.hosts.is_empty() {
        print_hosts(&r.hosts, paint);
    }
    print_mta_sts(r);
    for f in r.findings.iter().filter(|f| f.level > Level::Info) {
        let level = if f.level == Level::Fail {
            "fail"
        } else {
            "warn"
        };
        println!(
            "  {} {}: {} ({})",
            paint.verdict(level),
            f.code,
            escape(&f.message),
            f.rfc
        );
    }
    println!();
}

/// Exit status: 0 all ok, 1 warnings, 2 failures, 64 usage.
pub fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    let (total, entries): (usize, Box<dyn Iterator<Item = Entry>>) = match &args.from_file {
        Some(path) => {
            let (count, entries) = domain_file(path)?;
            (count, Box::new(entries))
        }
        None => (
            args.domains.len(),
            Box::new(args.domains.clone().into_iter().map(Entry::Domain)),
        ),
    };
    if args.concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    let helo =
        smtp::HeloName::new(&args.helo).map_err(|e| CliError::Usage(format!("--helo: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let timeout = Duration::from_secs(args.smtp_timeout.max(1));
    let mut probe = ProbeConfig::new(
        provider.clone(),
        Timeouts::uniform(timeout),
        helo.to_string(),
        Duration::from_secs(args.days.saturating_mul(86400)),
    );
    match Pkix::load(args.ca_file.as_deref(), provider) {
        Ok(pkix) => probe = probe.with_pkix(pkix.with_fetch_timeout(timeout)),
        Err(e) if args.ca_file.is_some() => {
            return Err(CliError::Usage(format!("--ca-file: {e}")));
        }
        // No anchors at all: DANE is still checked; MTA-STS policies are not fetched.
        Err(e) => eprintln!(
            "danemta check: {e}; MTA-STS policies are not fetched and certificates not judged by PKIX (--ca-file adds anchors)"
        ),
    }
    let cache = ProbeCache::default();
    let paint = Paint(std::io::stdout().is_terminal() && !args.json);
    let rt = runtime().map_err(CliError::Runtime)?;
    rt.block_on(async {
        let backend = args.dns.backend().await?;
        let probing = (!args.no_connect).then_some((&probe, &cache));
        let mut summary = BTreeMap::<&str, usize>::new();
        let mut worst = 0u8;
        let mut findings = BTreeMap::<&str, usize>::new();
        let mut checked = 0usize;
        // Reports come out in input order; memory stays bounded by the concurrency.
        let mut reports = stream::iter(entries)
            .map(|entry| async {
                match entry {
                    Entry::Domain(d) => Ok(check_domain(&backend, &d, args.port, probing).await),
                    Entry::Bad { line, text, error } => Err(
                        json!({"domain": text, "verdict": "fail", "line": line, "error": error}),
                    ),
                }
            })
            .buffered(args.concurrency);
        // A progress bar for bulk scans, on standard error, only on a terminal.
        let progress = (args.from_file.is_some() && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} domains, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        while let Some(result) = reports.next().await {
            checked += 1;
            if let Some(bar) = &progress {
                bar.inc(1);
            }
            let report = match result {
                Ok(report) => report,
                Err(bad) => {
                    *summary.entry("fail").or_default() += 1;
                    *findings.entry("not-a-domain").or_default() += 1;
                    worst = 2;
                    if args.json {
                        println!("{bad}");
                    } else {
                        let text = |k: &str| bad[k].as_str().unwrap_or_default().to_owned();
                        println!(
                            "\"{}\": {} — \"{}\"",
                            escape(&text("domain")),
                            paint.verdict("fail"),
                            escape(&text("error"))
                        );
                    }
                    continue;
                }
            };
            *summary.entry(report.verdict.as_str()).or_default() += 1;
            if report.hosts.iter().any(|h| h.dane_usable()) {
                *summary.entry("dane").or_default() += 1;
            }
            if report.mta_sts.active_policy().is_some() {
                *summary.entry("mta_sts").or_default() += 1;
            }
            for f in report
                .findings
                .iter()
                .chain(report.hosts.iter().flat_map(|h| &h.findings))
            {
                if f.level > Level::Info {
                    *findings.entry(f.code).or_default() += 1;
                }
            }
            worst = worst.max(match report.verdict {
                Verdict::Fail => 2,
                Verdict::Warn => 1,
                Verdict::Ok => 0,
            });
            if args.json {
                println!("{}", json!(report));
            } else {
                print_human(&report, &paint);
            }
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        if args.from_file.is_some() {
            let count = |k| summary.get(k).copied().unwrap_or(0);
            let line = json!({"summary": {
                "domains": checked, "dane": count("dane"), "mta_sts": count("mta_sts"),
                "ok": count("ok"), "warn": count("warn"), "fail": count("fail"),
                "probes": cache.len(), "findings": findings,
            }});
            if args.json {
                println!("{line}");
            } else {
                println!("summary: {}", line["summary"]);
            }
        }
        Ok(ExitCode::from(worst))
    })
}
