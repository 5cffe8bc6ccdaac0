//! `danemta tlsa generate` and `danemta tlsa verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use dane::cert::CertInfo;
use dane::matching::record_for;
use dane::pki_types::pem::PemObject;
use dane::pki_types::{CertificateDer, UnixTime};
use dane::{Authenticator, Matching, ReferenceName, Selector, Tlsa, Usage, VerifyError};
use serde_json::json;

/// Exit status of `tlsa verify` when the chain is not authenticated.
const NOT_VERIFIED: u8 = 1;

#[derive(Debug, Subcommand)]
pub enum TlsaCommand {
    /// Print the TLSA record to publish for a certificate.
    ///
    /// The default, "3 1 1" (DANE-EE, public key, SHA-256) of the leaf, keeps matching across
    /// certificate renewals that reuse the key (RFC 7671 §8.1). With --usage 2 the record
    /// names the top CA certificate of the chain in --cert, which the server must then send.
    Generate(GenerateArgs),
    /// Check whether a certificate chain is authenticated by TLSA records.
    ///
    /// Exit status: 0 verified, 1 not verified, 2 bad input.
    Verify(VerifyArgs),
    /// Roll a DANE-EE key over safely: print the RRset to publish (current + next), check it
    /// at every authoritative name server, and say when switching keys is safe.
    ///
    /// Exit status: 0; with --gate, 0 only when safe and 75 until then.
    Rollover(crate::rollover::RolloverArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// PEM file: the server certificate first, then its issuers (as the server sends them).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// Certificate usage: 3 DANE-EE (the server's own key), 2 DANE-TA (its CA).
    #[arg(long, default_value_t = 3, value_name = "U")]
    usage: u8,
    /// Selector: 1 the public key (survives renewal with the same key), 0 the whole certificate.
    #[arg(long, default_value_t = 1, value_name = "S")]
    selector: u8,
    /// Matching type: 1 SHA-256, 2 SHA-512, 0 the full data.
    #[arg(long, default_value_t = 1, value_name = "M")]
    matching: u8,
    /// Print a zone-file line for this MX host: _PORT._tcp.HOST. IN TLSA …
    #[arg(long, value_name = "HOST")]
    name: Option<String>,
    /// The TCP port for the owner name (25 for MX delivery, 587/465 for submission).
    #[arg(long, default_value_t = 25, value_name = "N")]
    port: u16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    /// RFC 7672 (SMTP): only DANE-TA(2) and DANE-EE(3) count.
    Smtp,
    /// RFC 6698: PKIX-TA(0) and PKIX-EE(1) too, against the roots in --ca-file.
    General,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// PEM file with the chain as the server presents it, leaf first.
    #[arg(long, value_name = "PEM")]
    chain: PathBuf,
    /// A TLSA record, "U S M HEX" (repeat for each record of the RRset).
    #[arg(long = "tlsa", value_name = "U S M HEX", required = true)]
    records: Vec<String>,
    /// A reference name the certificate must match under DANE-TA: the TLSA base domain, the
    /// MX host name, the recipient domain (repeat for each).
    #[arg(long = "name", value_name = "REF", required = true)]
    names: Vec<String>,
    /// Print the verdict as one JSON object.
    #[arg(long)]
    json: bool,
    /// Which rules apply.
    #[arg(long, value_enum, default_value_t = ProfileArg::Smtp)]
    profile: ProfileArg,
    /// PEM file of PKIX roots, for --profile general.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Verify as of this time (RFC 3339, e.g. 2027-01-31T00:00:00Z) instead of now: will the
    /// chain still verify after that date?
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

/// Bad input to a `tlsa` command; exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read certificates from {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificates { path: PathBuf },
    #[error("the certificate at position {position} in {path} cannot be parsed: {reason}")]
    BadCertificate {
        path: PathBuf,
        position: usize,
        reason: String,
    },
    #[error(
        "usage 2 (DANE-TA) names a CA certificate, but {path} holds only the server certificate; give the chain (server certificate first, then its issuers)"
    )]
    NoCaCertificate { path: PathBuf },
    #[error("--{field} {value} is not a defined value ({allowed})")]
    Field {
        field: &'static str,
        value: u8,
        allowed: &'static str,
    },
    #[error("--tlsa {text:?}: {source}")]
    Tlsa {
        text: String,
        source: dane::TlsaError,
    },
    #[error("--name: {0}")]
    Name(#[from] dane::NameError),
    #[error("--at {text:?} is not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z)")]
    Time { text: String },
    #[error("--profile general needs --ca-file for PKIX-TA(0)/PKIX-EE(1) records")]
    NoRoots,
}

impl InputError {
    pub fn exit_code(&self) -> u8 {
        2
    }
}

pub fn run(cmd: TlsaCommand) -> Result<ExitCode, crate::error::CliError> {
    match cmd {
        TlsaCommand::Generate(args) => Ok(generate(&args)?),
        TlsaCommand::Verify(args) => Ok(verify(&args)?),
        TlsaCommand::Rollover(args) => crate::rollover::run(args),
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, InputError> {
    let pem_error = |reason: String| InputError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(InputError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn parse_cert(path: &Path, position: usize, der: &[u8]) -> Result<CertInfo, InputError> {
    CertInfo::parse(der).map_err(|e| InputError::BadCertificate {
        path: path.to_owned(),
        position: position + 1,
        reason: e.0,
    })
}

fn known<T: From<u8>>(
    field: &'static str,
    value: u8,
    max: u8,
    allowed: &'static str,
) -> Result<T, InputError> {
    if value > max {
        return Err(InputError::Field {
            field,
            value,
            allowed,
        });
    }
    Ok(T::from(value))
}

fn generate(args: &GenerateArgs) -> Result<ExitCode, InputError> {
    let usage: Usage = known("usage", args.usage, 3, "0, 1, 2 or 3")?;
    let selector: Selector = known("selector", args.selector, 1, "0 or 1")?;
    let matching: Matching = known("matching", args.matching, 2, "0, 1 or 2")?;
    let chain = load_chain(&args.cert)?;

    // End-entity usages take the server certificate; CA usages the top of the chain.
    let index = match usage {
        Usage::DaneEe | Usage::PkixEe => 0,
        _ => chain.len() - 1,
    };
    let cert = parse_cert(&args.cert, index, &chain[index])?;
    if matches!(usage, Usage::DaneTa | Usage::PkixTa) && !cert.is_ca() {
        return Err(InputError::NoCaCertificate {
            path: args.cert.clone(),
        });
    }
    let name = args
        .name
        .as_deref()
        .map(str::parse::<ReferenceName>)
        .transpose()?;
    let record = record_for(usage, selector, matching, &cert)
        .expect("selector and matching were checked to be defined");

    for note in advice(&record) {
        eprintln!("note: {note}");
    }
    match name {
        Some(host) => println!("_{}._tcp.{host}. IN TLSA {record}", args.port),
        None => println!("{record}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Operational advice on a record a user is about to publish (RFC 7671, RFC 7672).
fn advice(record: &Tlsa) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if matches!(record.usage(), Usage::PkixTa | Usage::PkixEe) {
        notes.push("usages 0 and 1 (PKIX-TA/PKIX-EE) are unusable for SMTP (RFC 7672 §3.1.3); publish 3 1 1 or 2 1 1");
    }
    if record.usage() == Usage::DaneEe && record.selector() == Selector::FullCert {
        notes.push("3 0 x changes with every certificate renewal; 3 1 x survives renewals that keep the key (RFC 7671 §8.1)");
    }
    if record.matching() == Matching::Full {
        notes.push("matching type 0 publishes the whole object; a SHA-256 digest (matching 1) is the usual choice (RFC 7671 §10.1.2)");
    }
    if record.usage() == Usage::DaneTa {
        notes.push(
            "with usage 2 the server must send this CA certificate in its chain (RFC 7671 §5.2.1)",
        );
    }
    notes.push("publish the record for the next key too before renewing, and wait two TTLs before switching (RFC 7671 §8.1)");
    notes
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, InputError> {
    let chain = load_chain(&args.chain)?;
    let records = args
        .records
        .iter()
        .map(|text| {
            text.parse::<Tlsa>().map_err(|source| InputError::Tlsa {
                text: text.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names = args
        .names
        .iter()
        .map(|n| n.parse())
        .collect::<Result<Vec<ReferenceName>, _>>()?;
    let now = match &args.at {
        Some(text) => parse_time(text)?,
        None => UnixTime::now(),
    };
    let authenticator = match args.profile {
        ProfileArg::Smtp => Authenticator::smtp(&records, names),
        ProfileArg::General => {
            let roots = match &args.ca_file {
                Some(path) => load_chain(path)?,
                None if records
                    .iter()
                    .any(|r| matches!(r.usage(), Usage::PkixTa | Usage::PkixEe)) =>
                {
                    return Err(InputError::NoRoots);
                }
                None => Vec::new(),
            };
            Authenticator::general(&records, names, &roots)
        }
    };
    let result = authenticator.verify(&chain, now);

    if args.json {
        println!("{}", verdict_json(&authenticator, &chain, &result));
    } else {
        print_verdict(&authenticator, &result);
    }
    Ok(match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(NOT_VERIFIED),
    })
}

fn parse_time(text: &str) -> Result<UnixTime, InputError> {
    let bad = || InputError::Time {
        text: text.to_owned(),
    };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| bad())?;
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
}

fn print_verdict(auth: &Authenticator, result: &Result<dane::Verified, VerifyError>) {
    match result {
        Ok(v) => println!("verified: {v}"),
        Err(e) => println!("not verified: {e}"),
    }
    if auth.has_usable_records() {
        let used: Vec<String> = auth.records().iter().map(Tlsa::to_string).collect();
        println!("records in use: {}", used.join(", "));
    }
}

fn verdict_json(
    auth: &Authenticator,
    chain: &[CertificateDer<'_>],
    result: &Result<dane::Verified, VerifyError>,
) -> serde_json::Value {
    let subjects: Vec<String> = chain
        .iter()
        .map(|c| CertInfo::parse(c).map_or_else(|_| "(unparsable)".into(), |c| c.subject().into()))
        .collect();
    let mut out = json!({
        "verified": result.is_ok(),
        "records_in_use": auth.records(),
        "reference_names": auth.names(),
        "chain": subjects,
    });
    match result {
        Ok(v) => {
            out["matched"] = json!(v.record());
            out["usage"] = json!(dane::verify::usage_name(v.record().usage()));
            out["depth"] = json!(v.depth());
            out["anchor"] = json!(v.anchor());
            out["name"] = json!(v.name());
        }
        Err(e) => {
            out["reason"] = json!(e.to_string());
            out["error"] = json!(e);
        }
    }
    out
}
