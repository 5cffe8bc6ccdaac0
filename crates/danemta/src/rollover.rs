//! `danemta tlsa rollover`: publish the next key's TLSA record beside the current one, and
//! say — by asking every authoritative name server — when it is safe to switch keys
//! (RFC 7671 §8.1: both records published everywhere, then at least twice the TTL).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use check::rollover::{Remembered, Stage, assess};
use clap::Args;
use dane::cert::CertInfo;
use dane::matching::association;
use dane::pki_types::pem::PemObject;
use dane::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use dane::{Matching, Selector, Tlsa, Usage};
use dns::authoritative::ask_all;
use dns::{DnsName, RecordType};
use serde_json::json;

use crate::dnsopts::{DnsArgs, runtime};
use crate::error::CliError;

/// sysexits EX_TEMPFAIL: not safe yet, try again later.
const NOT_YET: u8 = 75;

#[derive(Debug, Args)]
pub struct RolloverArgs {
    /// The certificate in use now (PEM; its first certificate is the server's).
    #[arg(long, value_name = "PEM")]
    current: PathBuf,
    /// The next certificate, its public key, or its private key (PEM).
    #[arg(long, value_name = "PEM")]
    next: PathBuf,
    /// The MX host whose TLSA records are rolled.
    #[arg(long, value_name = "HOST")]
    name: DnsName,
    /// The TCP port of the TLSA owner name.
    #[arg(long, default_value_t = 25, value_name = "N")]
    port: u16,
    /// Exit 0 only when it is safe to switch to the next key, 75 until then (for renewal
    /// hooks: `danemta tlsa rollover --gate … && install-new-certificate`).
    #[arg(long)]
    gate: bool,
    /// Where to remember since when every server publishes both records
    /// (default: ~/.local/state/danemta/rollover-PORT-HOST.json).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Print the assessment as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dns: DnsArgs,
}

fn spki_of_pem(path: &Path) -> Result<Vec<u8>, CliError> {
    let usage = |why: String| CliError::Usage(format!("{}: {why}", path.display()));
    if let Ok(cert) = CertificateDer::from_pem_file(path) {
        return CertInfo::parse(&cert)
            .map(|c| c.spki().to_vec())
            .map_err(|e| usage(e.to_string()));
    }
    if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_file(path) {
        return Ok(spki.as_ref().to_vec());
    }
    let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    rcgen::KeyPair::from_pem(&text)
        .map(|k| rcgen::PublicKeyData::subject_public_key_info(&k))
        .map_err(|_| usage("holds no certificate, public key or private key in PEM".into()))
}

/// The `3 1 1` record of a public key (its SHA-256 digest can always be made; an error is
/// reported, never a panic, if it ever cannot).
fn dane_ee_311(spki: &[u8]) -> Result<Tlsa, CliError> {
    let digest = association(Matching::Sha256, spki)
        .ok_or_else(|| CliError::Usage("cannot digest the public key with SHA-256".into()))?;
    Tlsa::new(Usage::DaneEe, Selector::Spki, Matching::Sha256, digest)
        .map_err(|e| CliError::Usage(format!("cannot make the 3 1 1 record: {e}")))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn default_state(port: u16, host: &DnsName) -> PathBuf {
    let base = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    base.join(".local/state/danemta")
        .join(format!("rollover-{port}-{host}.json"))
}

pub fn run(args: RolloverArgs) -> Result<ExitCode, CliError> {
    let current = dane_ee_311(&spki_of_pem(&args.current)?)?;
    let next = dane_ee_311(&spki_of_pem(&args.next)?)?;
    let owner = args.name.tlsa_owner(args.port).map_err(|e| {
        CliError::Usage(format!(
            "--name {} with --port {}: no TLSA record can exist there: {e}",
            args.name, args.port
        ))
    })?;
    if !args.json {
        println!("Publish this RRset now (current and next key, RFC 7671 §8.1):");
        println!("{owner}. IN TLSA {current}");
        if next != current {
            println!("{owner}. IN TLSA {next}");
        }
    }
    if next == current {
        if !args.json {
            println!(
                "The next key is the current key: a renewal that keeps the key needs no TLSA change."
            );
        } else {
            println!(
                "{}",
                json!({"owner": owner, "stage": Stage::Safe, "same_key": true})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime().map_err(CliError::Runtime)?;
    let answers = rt.block_on(async {
        let backend = args.dns.backend().await?;
        ask_all(
            &backend,
            &owner,
            RecordType::Tlsa,
            Duration::from_secs(args.dns.dns_timeout.max(1)),
        )
        .await
        .map_err(CliError::Lookup)
    })?;
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| default_state(args.port, &args.name));
    let remembered: Option<Remembered> = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let a = assess(
        &owner,
        &current,
        &next,
        &answers,
        remembered.as_ref(),
        now(),
    );
    match (&a.stage, &a.remember) {
        (Stage::Unknown, _) => {}
        (_, None) => {
            let _ = std::fs::remove_file(&state_path);
        }
        (_, Some(keep)) if Some(keep) != remembered.as_ref() => {
            if let Some(dir) = state_path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&state_path, serde_json::to_string(keep).unwrap_or_default()).map_err(
                |source| CliError::Read {
                    path: state_path.display().to_string(),
                    source,
                },
            )?;
        }
        _ => {}
    }
    let (stage, safe_at, max_ttl) = (a.stage, a.safe_at, a.ttl);

    if args.json {
        println!(
            "{}",
            json!({"owner": owner, "current": current, "next": next, "stage": stage, "ttl": max_ttl,
                   "safe_at": safe_at.map(dane::rfc3339), "servers": a.servers})
        );
    } else {
        println!("\nAuthoritative servers of {owner}:");
        for s in &a.servers {
            let mark = |b| if b { "yes" } else { "NO" };
            match &s.error {
                Some(e) => println!("  {} [{}]: no answer ({e})", s.server, s.address),
                None => println!(
                    "  {} [{}]: current {}, next {}, TTL {}",
                    s.server,
                    s.address,
                    mark(s.current),
                    mark(s.next),
                    s.ttl.map_or("-".into(), |t| t.to_string())
                ),
            }
        }
        println!();
        match stage {
            Stage::Publish => println!(
                "Not safe yet: publish both records at every server (above), then run this again."
            ),
            Stage::Unknown => println!("Cannot tell: some server did not answer."),
            Stage::Wait => println!(
                "Not safe yet: every server publishes both records; caches may still hold the old RRset until {} (twice the TTL of {max_ttl} s).",
                safe_at.map(dane::rfc3339).unwrap_or_default()
            ),
            Stage::Safe => println!(
                "Safe: switch to the next key now; remove the old record ({current}) after twice the TTL."
            ),
        }
    }
    Ok(match (args.gate, stage) {
        (false, _) | (true, Stage::Safe) => ExitCode::SUCCESS,
        _ => ExitCode::from(NOT_YET),
    })
}
