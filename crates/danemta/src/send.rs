//! `danemta send`: deliver one message now and show exactly what security it got.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dane::pki_types::CertificateDer;
use dane::pki_types::pem::PemObject;
use dane::{ReferenceName, Tlsa};
use dns::{DnsName, NextHop};
use serde_json::json;
use smtp::{Config, Delivery, Envelope, Fate, HeloName, Level, Limits, Message, Timeouts};

use crate::dnsopts::{DnsArgs, runtime};
use crate::error::CliError;
use crate::escape::escape;

/// sysexits EX_DATAERR: the message cannot be sent as it is.
const EX_DATAERR: u8 = 65;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Envelope sender (MAIL FROM); empty (or `<>`) for a null sender.
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// Recipient (repeat for each); recipients of different domains are routed separately.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// The message (headers and body, RFC 5322) from FILE, or `-` for standard input.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    message: String,
    /// TLS policy: none, may, encrypt, dane (default: DANE where secure TLSA records exist,
    /// else opportunistic TLS), dane-only, fingerprint, verify, secure.
    #[arg(long, value_name = "LEVEL", default_value = "dane")]
    policy: Level,
    /// SMTP port of the MX hosts.
    #[arg(long, default_value_t = 25, value_name = "N")]
    port: u16,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    /// Send through the submission server named by DOMAIN's _submission._tcp SRV records
    /// (RFC 6186), on their port, DANE-authenticated.
    #[arg(long, value_name = "DOMAIN")]
    submission: Option<DnsName>,
    /// Authenticate with AUTH PLAIN after TLS (submission); the password is read from the
    /// DANEMTA_PASSWORD environment variable, never from the command line.
    #[arg(long, value_name = "USER", requires = "submission")]
    auth_user: Option<String>,
    /// Deliver to this host instead of looking up MX records: HOST or HOST:PORT (a relay).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "submission")]
    relay: Option<String>,
    /// Our name in EHLO: a domain name or an address literal such as [192.0.2.1].
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    helo: String,
    /// For --policy fingerprint: a SHA-256 or SHA-512 digest (hex) of the server's
    /// certificate or public key (repeat for several).
    #[arg(long = "fingerprint", value_name = "HEX")]
    fingerprints: Vec<String>,
    /// For --policy verify/secure: extra trusted CA certificates (PEM), besides the system's.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// For --policy verify/secure: a name the certificate must carry (repeat for several);
    /// default: the MX host name (verify) or the recipient domain (secure).
    #[arg(long = "match", value_name = "NAME")]
    match_names: Vec<String>,
    /// Seconds to wait for each SMTP reply (default: the RFC 5321 §4.5.3.2 timeouts).
    #[arg(long, value_name = "SECONDS")]
    smtp_timeout: Option<u64>,
    #[command(flatten)]
    dns: DnsArgs,
}

fn usage(text: String) -> CliError {
    CliError::Usage(text)
}

/// The domain of an address (`local@domain`), or a usage error.
fn domain_of(address: &str) -> Result<DnsName, CliError> {
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| usage(format!("--to {address:?}: not an address (local@domain)")))?;
    if local.is_empty() || address.contains(['<', '>', ' ', '\r', '\n']) {
        return Err(usage(format!(
            "--to {address:?}: not an address (local@domain)"
        )));
    }
    domain
        .parse()
        .map_err(|e| usage(format!("--to {address:?}: {e}")))
}

/// `--fingerprint HEX` as DANE-EE records of both selectors (certificate and public key).
fn fingerprint_records(list: &[String]) -> Result<Vec<Tlsa>, CliError> {
    let mut out = Vec::new();
    for text in list {
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let matching = match hex.len() {
            64 => 1,
            128 => 2,
            _ => {
                return Err(usage(format!(
                    "--fingerprint {text:?}: expected a SHA-256 or SHA-512 digest in hex"
                )));
            }
        };
        for selector in [0, 1] {
            let record: Tlsa = format!("3 {selector} {matching} {hex}")
                .parse()
                .map_err(|e| usage(format!("--fingerprint {text:?}: {e}")))?;
            out.push(record);
        }
    }
    Ok(out)
}

fn read_message(source: &str) -> Result<Vec<u8>, CliError> {
    let mut raw = Vec::new();
    let result = if source == "-" {
        std::io::stdin().read_to_end(&mut raw).map(|_| ())
    } else {
        std::fs::File::open(source).and_then(|mut f| f.read_to_end(&mut raw).map(|_| ()))
    };
    result.map_err(|source_err| CliError::Read {
        path: source.to_owned(),
        source: source_err,
    })?;
    Ok(raw)
}

fn parse_relay(text: &str) -> Result<(DnsName, Option<u16>), CliError> {
    let text = text.trim_start_matches('[');
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_end_matches(']'),
            Some(
                p.parse()
                    .map_err(|_| usage(format!("--relay {text:?}: bad port")))?,
            ),
        ),
        None => (text.trim_end_matches(']'), None),
    };
    Ok((
        host.parse().map_err(|e| usage(format!("--relay: {e}")))?,
        port,
    ))
}

/// Exit status (sysexits): 0 delivered to every recipient, 75 some deferred and none
/// bounced, 69 some bounced, 64 usage, 65 bad message.
pub fn run(args: SendArgs) -> Result<ExitCode, CliError> {
    let raw = match read_message(&args.message) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("danemta: error: {e}");
            return Ok(ExitCode::from(EX_DATAERR));
        }
    };
    let message = match Message::new(&raw) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("danemta: error: the message cannot be sent: {e}");
            return Ok(ExitCode::from(EX_DATAERR));
        }
    };
    // Everything that goes into a command line is checked before anything is sent (the
    // library checks again; its errors quote the values escaped).
    Envelope::new(&args.from, &args.to).map_err(|e| usage(e.to_string()))?;
    let helo_name = HeloName::new(&args.helo).map_err(|e| usage(format!("--helo: {e}")))?;
    // Recipients grouped by next hop, in the order given.
    let mut hops: Vec<(NextHop, Vec<String>)> = Vec::new();
    for to in &args.to {
        let domain = domain_of(to)?;
        let hop = match (&args.submission, &args.relay) {
            (Some(d), _) => NextHop::Submission { domain: d.clone() },
            (None, Some(relay)) => {
                let (host, port) = parse_relay(relay)?;
                NextHop::Host {
                    host,
                    port: port.unwrap_or(args.port),
                }
            }
            (None, None) => NextHop::Domain {
                domain,
                port: args.port,
            },
        };
        match hops.iter_mut().find(|(h, _)| *h == hop) {
            Some((_, list)) => list.push(to.clone()),
            None => hops.push((hop, vec![to.clone()])),
        }
    }
    let credentials = match &args.auth_user {
        Some(user) => Some((
            user.clone(),
            std::env::var("DANEMTA_PASSWORD")
                .map_err(|_| usage("--auth-user needs the password in DANEMTA_PASSWORD".into()))?,
        )),
        None => None,
    };
    if args.policy == Level::Fingerprint && args.fingerprints.is_empty() {
        return Err(usage(
            "--policy fingerprint needs at least one --fingerprint".into(),
        ));
    }
    let extra_roots: Vec<CertificateDer<'static>> = match &args.ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| usage(format!("--ca-file {}: {e}", path.display())))?,
        None => Vec::new(),
    };
    let match_names = args
        .match_names
        .iter()
        .map(|n| {
            n.parse::<ReferenceName>()
                .map_err(|e| usage(format!("--match: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeouts = args.smtp_timeout.map_or_else(Timeouts::default, |secs| {
        Timeouts::uniform(Duration::from_secs(secs.max(1)))
    });
    let config = Config {
        helo_name,
        level: args.policy,
        timeouts,
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        fingerprints: fingerprint_records(&args.fingerprints)?,
        roots: Arc::new(smtp::tls::roots(&extra_roots)),
        match_names,
        credentials,
        limits: Limits::default(),
    };

    let rt = runtime().map_err(CliError::Runtime)?;
    let deliveries: Vec<Delivery> = rt.block_on(async {
        let backend = args.dns.backend().await?;
        // The start-up probe: without DNSSEC validation, DANE cannot be enforced.
        if let Err(why) = dns::doctor::root_validates(&backend).await {
            if args.policy == Level::DaneOnly {
                eprintln!(
                    "danemta: refusing dane-only delivery: {}",
                    escape(&why.to_string())
                );
                return Ok::<_, CliError>(
                    hops.iter()
                        .map(|(_, to)| refused(to, &format!("dane-only refused: {why}")))
                        .collect(),
                );
            }
            if args.policy == Level::Dane {
                eprintln!(
                    "danemta: WARNING: {}; delivering without DANE protection",
                    escape(&why.to_string())
                );
            }
        }
        let mut out = Vec::new();
        for (hop, to) in &hops {
            let route = dns::discover(&backend, hop).await;
            let envelope = Envelope::new(&args.from, to).map_err(|e| usage(e.to_string()))?;
            let looked_up = !matches!(hop, NextHop::Host { .. });
            out.push(
                smtp::deliver(
                    &route,
                    hop.domain(),
                    looked_up,
                    &envelope,
                    &message,
                    &config,
                )
                .await,
            );
        }
        Ok(out)
    })?;

    let recipients: Vec<_> = deliveries
        .iter()
        .flat_map(|d| d.recipients.clone())
        .collect();
    let attempts: Vec<_> = deliveries.iter().flat_map(|d| d.attempts.clone()).collect();
    let all = Delivery::new(recipients, attempts);
    if args.json {
        println!("{}", json!(all));
    } else {
        for r in &all.recipients {
            let what = match r.outcome {
                Fate::Delivered => "delivered",
                Fate::Deferred => "deferred",
                Fate::Bounced => "bounced",
            };
            // The reply is the server's text: it must not reach the terminal raw.
            println!(
                "{}: {what} ({})",
                escape(&r.address),
                escape(&r.reply.to_string())
            );
        }
    }
    Ok(ExitCode::from(exit_code(&all)))
}

/// sysexits status for `danemta send` (PRODUCT.md): 0 all delivered, 69 (EX_UNAVAILABLE)
/// when any recipient bounced, 75 (EX_TEMPFAIL) when any was deferred and none bounced.
fn exit_code(delivery: &Delivery) -> u8 {
    let any = |fate| delivery.recipients.iter().any(|r| r.outcome == fate);
    if any(Fate::Bounced) {
        69
    } else if any(Fate::Deferred) {
        75
    } else {
        0
    }
}

fn refused(to: &[String], reason: &str) -> Delivery {
    Delivery::new(
        to.iter()
            .map(|address| smtp::outcome::RecipientOutcome {
                address: address.clone(),
                outcome: Fate::Deferred,
                reply: smtp::Response::Local(reason.to_owned()),
            })
            .collect(),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp::Response;
    use smtp::outcome::RecipientOutcome;

    #[test]
    fn exit_codes_follow_sysexits() {
        let r = |outcome| RecipientOutcome {
            address: "x@y".into(),
            outcome,
            reply: Response::Local(String::new()),
        };
        for (fates, code) in [
            (vec![Fate::Delivered, Fate::Delivered], 0),
            (vec![Fate::Delivered, Fate::Deferred], 75),
            (vec![Fate::Deferred], 75),
            (vec![Fate::Deferred, Fate::Bounced], 69),
            (vec![Fate::Delivered, Fate::Bounced], 69),
            (vec![Fate::Bounced], 69),
        ] {
            let d = Delivery::new(fates.iter().map(|f| r(*f)).collect(), vec![]);
            assert_eq!(exit_code(&d), code, "{fates:?}");
        }
    }
}
