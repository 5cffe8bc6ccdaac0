//! `danemta send`: deliver one message now and show exactly what security it got.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use dane::ReferenceName;
use dane::pki_types::CertificateDer;
use dane::pki_types::pem::PemObject;
use dns::{DnsName, NextHop};
use serde_json::json;
use smtp::{
    Config, Delivery, Envelope, Fate, Gate, HeloName, Level, Limits, Message, Timeouts, Via,
    dispatch, dnssec_gate, fingerprint_records, next_hops,
};
use sts::{Discovery, Fetcher, MemoryStore, ResolverAddresses, ResolverTxt, Sts};

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
    /// TLS policy: none, may, encrypt, dane, dane-only, fingerprint, verify, secure. Without
    /// it: DANE where secure TLSA records exist, else the recipient domain's MTA-STS policy
    /// (RFC 8461), else opportunistic TLS; a policy given here overrides MTA-STS.
    #[arg(long, value_name = "LEVEL")]
    policy: Option<Level>,
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
    /// Extra trusted CA certificates (PEM), besides the system's: for --policy verify/secure,
    /// and for MTA-STS (the policy fetch and the MX certificates).
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
    let via = match (&args.submission, &args.relay) {
        (Some(domain), _) => Via::Submission {
            domain: domain.clone(),
        },
        (None, Some(relay)) => {
            smtp::dispatch::relay(relay, args.port).map_err(|e| usage(format!("--relay {e}")))?
        }
        (None, None) => Via::Mx { port: args.port },
    };
    let hops = next_hops(&args.to, &via).map_err(|e| usage(format!("--to {e}")))?;
    let credentials = match &args.auth_user {
        Some(user) => Some((
            user.clone(),
            std::env::var("DANEMTA_PASSWORD")
                .map_err(|_| usage("--auth-user needs the password in DANEMTA_PASSWORD".into()))?,
        )),
        None => None,
    };
    let level = args.policy.unwrap_or_default();
    // MTA-STS applies to MX delivery at the default level (RFC 8461; PRODUCT.md).
    let mta_sts = args.policy.is_none() && matches!(via, Via::Mx { .. });
    if level == Level::Fingerprint && args.fingerprints.is_empty() {
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
        level,
        timeouts,
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        fingerprints: fingerprint_records(&args.fingerprints)
            .map_err(|e| usage(format!("--{e}")))?,
        roots: Arc::new(smtp::tls::roots(&extra_roots)),
        match_names,
        credentials,
        limits: Limits::default(),
        // One delivery: no session to resume.
        sessions: None,
        level_configured: args.policy.is_some(),
        mta_sts: None,
    };

    let rt = runtime().map_err(CliError::Runtime)?;
    let deliveries: Vec<Delivery> = rt.block_on(async {
        let backend = args.dns.backend().await?;
        // The start-up probe: without DNSSEC validation, DANE cannot be enforced.
        let probe = dns::doctor::root_validates(&backend).await;
        match dnssec_gate(level, probe) {
            Gate::Deliver => {}
            Gate::DeliverUnprotected(why) => eprintln!(
                "danemta: WARNING: {}; delivering without DANE protection",
                escape(&why)
            ),
            Gate::Refuse(why) => {
                eprintln!("danemta: refusing dane-only delivery: {}", escape(&why));
                let reason = format!("dane-only refused: {why}");
                return Ok::<_, CliError>(
                    hops.iter()
                        .map(|(_, to)| smtp::dispatch::deferred(to, &reason))
                        .collect(),
                );
            }
        }
        let backend = Arc::new(backend);
        let sts = match mta_sts {
            true => Some(Sts::new(
                ResolverTxt(Arc::clone(&backend)),
                ResolverAddresses(Arc::clone(&backend)),
                MemoryStore::new(),
                Fetcher::new(Arc::clone(&config.roots)).map_err(CliError::Tls)?,
            )),
            false => None,
        };
        let mut deliveries = Vec::with_capacity(hops.len());
        for hop in &hops {
            let mut config = config.clone();
            if let (Some(sts), NextHop::Domain { domain, .. }) = (&sts, &hop.0) {
                config.mta_sts = mta_sts_policy(sts, domain).await;
            }
            let delivered = dispatch(
                &*backend,
                std::slice::from_ref(hop),
                &args.from,
                &message,
                &config,
            )
            .await
            .map_err(|e| usage(e.to_string()))?;
            deliveries.extend(delivered);
        }
        Ok(deliveries)
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

/// The MTA-STS policy of `domain` (RFC 8461 §3, §5), if one applies; a failed discovery is
/// reported and delivery goes on as without a policy (§5: no policy is found).
async fn mta_sts_policy<T, A, S>(sts: &Sts<T, A, S>, domain: &DnsName) -> Option<Arc<sts::Policy>>
where
    T: sts::TxtResolver,
    A: sts::AddressSource,
    S: sts::PolicyStore,
{
    match sts.policy_for(domain, SystemTime::now()).await {
        Ok(Discovery::Policy { policy, .. }) => Some(Arc::new(policy)),
        Ok(Discovery::NoPolicy(sts::DiscoveryError::NoRecord)) => None,
        Ok(Discovery::NoPolicy(why)) => {
            eprintln!(
                "danemta: MTA-STS for {domain}: {}; delivering as without a policy",
                escape(&why.to_string())
            );
            None
        }
        Err(e) => {
            eprintln!("danemta: MTA-STS for {domain}: {}", escape(&e.to_string()));
            None
        }
    }
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
