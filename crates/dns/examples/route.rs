//! The DANE route of a mail domain (RFC 7672 §2.2): its MX hosts in the order to try them,
//! the DNSSEC status of every lookup, each host's TLSA records and what DANE means for it.
//!
//! ```text
//! cargo run -p danemta-dns --example route -- DOMAIN [--port N] [--json]
//!     [--resolver validating|validating@IP:PORT|trust-ad@IP:PORT] [--trust-anchor FILE]
//! ```
//!
//! No connection is made. Exit status: 0 the domain has a route (whether or not DANE
//! applies to its hosts); 1 no route: the domain's mail is deferred (e.g. a bogus MX
//! lookup, RFC 7672 §2.2.1) or bounced (no such domain, null MX); 64 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dns::{Backend, DnsName, NextHop, ResolverSpec, Route, discover_with};

const USAGE: &str = "usage: route DOMAIN [--port N] [--json] [--resolver validating|validating@IP:PORT|trust-ad@IP:PORT] [--trust-anchor FILE]";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    domain: DnsName,
    port: u16,
    json: bool,
    resolver: ResolverSpec,
    trust_anchor: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("route: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let resolver = match Backend::open(&args.resolver, args.trust_anchor.as_deref(), TIMEOUT).await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("FAILED: resolver {}: {e}", args.resolver);
            return ExitCode::from(1);
        }
    };
    let hop = NextHop::Domain {
        domain: args.domain.clone(),
        port: args.port,
    };
    let discovery = discover_with(&resolver, &hop, &dns::Limits::DEFAULT).await;
    if args.json {
        match serde_json::to_string_pretty(&discovery) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("FAILED: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match &discovery.route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => {
            if !args.json {
                println!("{}: MX lookup {mx_dnssec}", args.domain);
                for c in candidates {
                    print_host(c);
                }
                if discovery.hosts_dropped > 0 {
                    println!("({} more MX hosts not looked up)", discovery.hosts_dropped);
                }
            }
            ExitCode::SUCCESS
        }
        Route::Defer { reason, mx_dnssec } => {
            eprintln!(
                "no route: deferred (MX lookup {}): {reason}",
                mx_dnssec.map_or("not made".into(), |s| s.to_string())
            );
            ExitCode::from(1)
        }
        Route::Bounce {
            reason, mx_dnssec, ..
        } => {
            eprintln!(
                "no route: bounced (MX lookup {}): {reason}",
                mx_dnssec.map_or("not made".into(), |s| s.to_string())
            );
            ExitCode::from(1)
        }
    }
}

fn print_host(c: &dns::Candidate) {
    println!(
        "  MX {} {} port {} (A {}, AAAA {})",
        c.preference, c.name, c.port, c.a_dnssec, c.aaaa_dnssec
    );
    for a in &c.addresses {
        println!("    address {} ({})", a.address, a.dnssec);
    }
    println!("    TLSA base domain (and SNI) {}", c.tlsa_base);
    if let (Some(name), Some(status)) = (&c.tlsa_name, c.tlsa_dnssec) {
        println!("    TLSA lookup {name} ({status})");
    }
    for t in &c.tlsa {
        println!("      TLSA {t}");
    }
    let names: Vec<String> = c.reference_names.iter().map(|n| n.to_string()).collect();
    let detail = match &c.dane {
        dns::DaneState::Usable { records } => format!(
            "{} usable record(s), TLS mandatory and authenticated ({:?}); reference names {}",
            records.len(),
            c.dane_trust,
            names.join(", ")
        ),
        dns::DaneState::Unusable => {
            "no usable record: TLS mandatory, unauthenticated (RFC 7672 §2.2)".to_owned()
        }
        dns::DaneState::NotApplicable { reason } | dns::DaneState::HostUnusable { reason } => {
            reason.clone()
        }
    };
    println!("    DANE {}: {detail}", c.dane.code());
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut domain = None;
    let mut args = Args {
        domain: DnsName::root(),
        port: 25,
        json: false,
        resolver: ResolverSpec::default(),
        trust_anchor: None,
    };
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--json" => args.json = true,
            "--resolver" => args.resolver = value()?.parse().map_err(|e| format!("{e}"))?,
            "--trust-anchor" => args.trust_anchor = Some(value()?.into()),
            "-h" | "--help" => return Err("help".into()),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ if domain.is_none() => domain = Some(arg.parse().map_err(|e| format!("{e}"))?),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    args.domain = domain.ok_or("DOMAIN is missing")?;
    Ok(args)
}
