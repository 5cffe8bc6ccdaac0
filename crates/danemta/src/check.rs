//! `danemta check DOMAIN… --no-connect`: the DNS view of a destination's DANE health — the
//! route layer's result, with findings and a verdict per domain.
//!
//! Probing the hosts over STARTTLS (without `--no-connect`) is not implemented yet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dane::Usage;
use dns::route::{Candidate, DaneState};
use dns::{Backend, DnsName, NextHop, Route, Status};
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::{Value, json};

use crate::dnsopts::{DnsArgs, runtime};
use crate::error::CliError;

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
    /// One JSON object per domain (JSON Lines with --from-file).
    #[arg(long)]
    json: bool,
    /// Only look at DNS: MX, addresses, TLSA records and their DNSSEC status; no connections.
    #[arg(long)]
    no_connect: bool,
    /// Domains checked at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    concurrency: usize,
    #[command(flatten)]
    dns: DnsArgs,
}

/// Severity of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Level {
    Info,
    Warn,
    Fail,
}

/// Something worth telling the domain owner, with the rule behind it.
#[derive(Debug, Serialize)]
struct Finding {
    level: Level,
    code: &'static str,
    message: String,
    rfc: &'static str,
}

/// The verdict of a domain: the worst finding (PRODUCT.md: ok | warn | fail).
fn verdict(findings: &[&Finding]) -> &'static str {
    match findings.iter().map(|f| f.level).max() {
        Some(Level::Fail) => "fail",
        Some(Level::Warn) => "warn",
        _ => "ok",
    }
}

/// Findings about one host, from the route layer's view of it.
fn host_findings(c: &Candidate, mx_secure: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, code, message: String, rfc| {
        out.push(Finding {
            level,
            code,
            message,
            rfc,
        })
    };
    match &c.dane {
        DaneState::HostUnusable { reason } => add(
            Level::Fail,
            "host-unusable",
            format!(
                "{}: {reason}; senders using DANE will not deliver to it",
                c.name
            ),
            "RFC 7672 §2.2",
        ),
        DaneState::Unusable => add(
            Level::Warn,
            "no-usable-tlsa",
            format!(
                "{} has TLSA records but none usable for SMTP: TLS is required but unauthenticated",
                c.name
            ),
            "RFC 7672 §3.1.3",
        ),
        DaneState::NotApplicable { reason } => {
            add(Level::Info, "no-dane", reason.clone(), "RFC 7672 §2.2")
        }
        DaneState::Usable { .. } if !mx_secure => add(
            Level::Warn,
            "insecure-mx",
            format!(
                "{} has secure TLSA records, but the MX lookup is not secure: senders can only reach 'trusted', not 'verified'",
                c.name
            ),
            "RFC 7672 §2.2.1",
        ),
        DaneState::Usable { .. } => {}
    }
    if c.tlsa
        .iter()
        .any(|t| matches!(t.usage(), Usage::PkixTa | Usage::PkixEe))
    {
        add(
            Level::Warn,
            "pkix-usage",
            format!(
                "{} publishes PKIX-TA(0)/PKIX-EE(1) records, which SMTP clients ignore",
                c.tlsa_name.as_ref().map_or(&c.name, |n| n)
            ),
            "RFC 7672 §3.1.3",
        );
    }
    for (family, st) in [("A", c.a_dnssec), ("AAAA", c.aaaa_dnssec)] {
        if st.is_failure() {
            add(
                Level::Warn,
                "address-lookup-failed",
                format!(
                    "the {family} lookup of {} is {st}: senders skip those addresses",
                    c.name
                ),
                "RFC 7672 §2.2.2",
            );
        }
    }
    if c.tlsa_base != c.name {
        add(
            Level::Warn,
            "mx-cname",
            format!("MX exchange {} is a CNAME (to {})", c.name, c.tlsa_base),
            "RFC 2181 §10.3",
        );
    }
    out
}

fn status(s: Status) -> Value {
    json!(s)
}

fn host_json(c: &Candidate, findings: &[Finding]) -> Value {
    let dane = match &c.dane {
        DaneState::Usable { .. } => "usable",
        DaneState::Unusable => "unusable",
        DaneState::NotApplicable { .. } => "not-applicable",
        DaneState::HostUnusable { .. } => "host-unusable",
    };
    json!({
        "name": c.name,
        "preference": c.preference,
        "port": c.port,
        "tlsa_base": c.tlsa_base,
        "tlsa_name": c.tlsa_name,
        "dane": dane,
        "dane_detail": c.dane,
        "tlsa_dnssec": c.tlsa_dnssec,
        "tlsa": c.tlsa,
        "a_dnssec": status(c.a_dnssec),
        "aaaa_dnssec": status(c.aaaa_dnssec),
        "addresses": c.addresses.iter().map(|a| json!({"address": a.address, "dnssec": a.dnssec})).collect::<Vec<_>>(),
        "reference_names": c.reference_names,
        "findings": findings,
    })
}

/// The report of one domain: its JSON object and its verdict.
fn report(domain: &DnsName, route: &Route) -> (Value, &'static str) {
    match route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => {
            let per_host: Vec<Vec<Finding>> = candidates
                .iter()
                .map(|c| host_findings(c, mx_dnssec.is_secure()))
                .collect();
            let mut all: Vec<&Finding> = per_host.iter().flatten().collect();
            let unusable = candidates
                .iter()
                .filter(|c| matches!(c.dane, DaneState::HostUnusable { .. }))
                .count();
            // Every host unusable: nothing can be delivered, whatever the findings say.
            let none_left = Finding {
                level: Level::Fail,
                code: "no-usable-host",
                message: "no MX host can be used: mail to this domain is deferred".into(),
                rfc: "RFC 7672 §2.2",
            };
            if unusable == candidates.len() {
                all.push(&none_left);
            }
            let verdict = verdict(&all);
            let hosts: Vec<Value> = candidates
                .iter()
                .zip(&per_host)
                .map(|(c, f)| host_json(c, f))
                .collect();
            (
                json!({"domain": domain, "verdict": verdict, "route": "deliver", "mx_dnssec": mx_dnssec, "hosts": hosts}),
                verdict,
            )
        }
        Route::Defer { reason, mx_dnssec } => (
            json!({"domain": domain, "verdict": "fail", "route": "defer", "mx_dnssec": mx_dnssec, "reason": reason, "hosts": []}),
            "fail",
        ),
        Route::Bounce { reason, mx_dnssec } => {
            // A null MX is a domain's deliberate "no mail here"; a missing domain is an error.
            let verdict = if reason.contains("null MX") {
                "ok"
            } else {
                "fail"
            };
            (
                json!({"domain": domain, "verdict": verdict, "route": "bounce", "mx_dnssec": mx_dnssec, "reason": reason, "hosts": []}),
                verdict,
            )
        }
    }
}

fn print_human(domain: &DnsName, route: &Route, verdict: &str) {
    match route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => {
            println!("{domain}: {verdict} — deliver, MX lookup {mx_dnssec}");
            for c in candidates {
                println!(
                    "  {:>5} {}  (TLSA base {})",
                    c.preference, c.name, c.tlsa_base
                );
                let addrs: Vec<String> = c
                    .addresses
                    .iter()
                    .map(|a| format!("{} ({})", a.address, a.dnssec))
                    .collect();
                println!(
                    "        addresses: {} [A {}, AAAA {}]",
                    if addrs.is_empty() {
                        "none".to_owned()
                    } else {
                        addrs.join(", ")
                    },
                    c.a_dnssec,
                    c.aaaa_dnssec
                );
                if let (Some(name), Some(st)) = (&c.tlsa_name, c.tlsa_dnssec) {
                    let none = if c.tlsa.is_empty() { " none" } else { "" };
                    println!("        TLSA {name} ({st}):{none}");
                    for t in &c.tlsa {
                        println!("          {t}");
                    }
                }
                let dane = match &c.dane {
                    DaneState::Usable { records } => format!(
                        "usable — TLS required, authenticated by {} record(s)",
                        records.len()
                    ),
                    DaneState::Unusable => {
                        "records present, none usable — TLS required, unauthenticated".into()
                    }
                    DaneState::NotApplicable { reason } => format!("not applicable — {reason}"),
                    DaneState::HostUnusable { reason } => format!("HOST UNUSABLE — {reason}"),
                };
                println!("        DANE: {dane}");
                for f in host_findings(c, mx_dnssec.is_secure()) {
                    // The DANE line above already says why a host is unusable.
                    if f.level > Level::Info && f.code != "host-unusable" {
                        println!("        {:?}: {} ({})", f.level, f.message, f.rfc);
                    }
                }
            }
        }
        Route::Defer { reason, .. } => println!("{domain}: {verdict} — defer: {reason}"),
        Route::Bounce { reason, .. } => println!("{domain}: {verdict} — bounce: {reason}"),
    }
}

fn read_domains(path: &PathBuf) -> Result<Vec<DnsName>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.split('#').next().unwrap_or_default().trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            l.parse()
                .map_err(|e| CliError::Usage(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Exit status: 0 all ok, 1 warnings, 2 failures, 64 usage.
pub fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    if !args.no_connect {
        return Err(CliError::Usage(
            "probing hosts over STARTTLS is not implemented yet; add --no-connect for the DNS view"
                .into(),
        ));
    }
    let domains = match &args.from_file {
        Some(path) => read_domains(path)?,
        None => args.domains.clone(),
    };
    if args.concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    let rt = runtime().map_err(CliError::Runtime)?;
    rt.block_on(async {
        let backend: Backend = args.dns.backend().await?;
        let mut worst = 0u8;
        let mut summary = std::collections::BTreeMap::<&str, usize>::new();
        for chunk in domains.chunks(args.concurrency) {
            let routes = discover_all(&backend, chunk, args.port).await;
            for (domain, route) in chunk.iter().zip(routes) {
                let (value, verdict) = report(domain, &route);
                *summary.entry(verdict).or_default() += 1;
                worst = worst.max(match verdict {
                    "fail" => 2,
                    "warn" => 1,
                    _ => 0,
                });
                if args.json {
                    println!("{value}");
                } else {
                    print_human(domain, &route, verdict);
                }
            }
        }
        if args.from_file.is_some() {
            let line = json!({"summary": {"domains": domains.len(), "ok": summary.get("ok").copied().unwrap_or(0),
                "warn": summary.get("warn").copied().unwrap_or(0), "fail": summary.get("fail").copied().unwrap_or(0)}});
            if args.json {
                println!("{line}");
            } else {
                println!("summary: {}", line["summary"]);
            }
        }
        Ok(ExitCode::from(worst))
    })
}

/// Discovers the routes of `domains` concurrently.
async fn discover_all(backend: &Backend, domains: &[DnsName], port: u16) -> Vec<Route> {
    let hops: Vec<NextHop> = domains
        .iter()
        .map(|d| NextHop::Domain {
            domain: d.clone(),
            port,
        })
        .collect();
    join_all(hops.iter().map(|hop| dns::discover(backend, hop))).await
}
