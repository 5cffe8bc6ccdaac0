//! `danemta tlsa rollover`: publish the next key's TLSA record beside the current one, and
//! say — by asking every authoritative name server — when it is safe to switch keys
//! (RFC 7671 §8.1: both records published everywhere, then at least twice the TTL).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use dane::cert::CertInfo;
use dane::matching::association;
use dane::pki_types::pem::PemObject;
use dane::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use dane::{Matching, Selector, Tlsa, Usage};
use dns::authoritative::{ServerAnswer, ask_all};
use dns::{DnsName, Record, RecordType};
use serde::{Deserialize, Serialize};
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

/// What is remembered between runs.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    owner: String,
    current: String,
    next: String,
    /// Seconds since the epoch when every server was first seen publishing both.
    both_since: u64,
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

fn dane_ee_311(spki: &[u8]) -> Tlsa {
    let digest = association(Matching::Sha256, spki).unwrap_or_default();
    Tlsa::new(Usage::DaneEe, Selector::Spki, Matching::Sha256, digest)
        .expect("a SHA-256 digest is 32 bytes")
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

/// Where the rollover stands.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Stage {
    /// Not every server publishes both records yet.
    Publish,
    /// Every server does; wait until `safe_at`.
    Wait,
    /// Safe to switch keys; afterwards remove the old record.
    Safe,
    /// Some server did not answer: cannot tell.
    Unknown,
}

pub fn run(args: RolloverArgs) -> Result<ExitCode, CliError> {
    let current = dane_ee_311(&spki_of_pem(&args.current)?);
    let next = dane_ee_311(&spki_of_pem(&args.next)?);
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
        .map_err(CliError::Usage)
    })?;
    let has = |a: &ServerAnswer, t: &Tlsa| {
        a.records
            .iter()
            .any(|r| matches!(r, Record::Tlsa(x) if x == t))
    };
    let all_both = answers.iter().all(|a| has(a, &current) && has(a, &next));
    let max_ttl = answers.iter().filter_map(|a| a.ttl).max().unwrap_or(0);
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| default_state(args.port, &args.name));
    let remembered: Option<State> = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|s: &State| {
            s.owner == owner.as_str()
                && s.current == current.to_string()
                && s.next == next.to_string()
        });
    let (stage, safe_at) = if answers.iter().any(|a| a.error.is_some()) {
        (Stage::Unknown, None)
    } else if !all_both {
        let _ = std::fs::remove_file(&state_path);
        (Stage::Publish, None)
    } else {
        let since = match remembered {
            Some(s) => s.both_since,
            None => {
                let s = State {
                    owner: owner.to_string(),
                    current: current.to_string(),
                    next: next.to_string(),
                    both_since: now(),
                };
                if let Some(dir) = state_path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::write(&state_path, serde_json::to_string(&s).unwrap_or_default())
                    .map_err(|source| CliError::Read {
                        path: state_path.display().to_string(),
                        source,
                    })?;
                s.both_since
            }
        };
        let safe_at = since + 2 * u64::from(max_ttl);
        (
            if now() >= safe_at {
                Stage::Safe
            } else {
                Stage::Wait
            },
            Some(safe_at),
        )
    };

    if args.json {
        let servers: Vec<_> = answers
            .iter()
            .map(|a| json!({"server": a.server, "address": a.address, "ttl": a.ttl, "current": has(a, &current), "next": has(a, &next), "error": a.error}))
            .collect();
        println!(
            "{}",
            json!({"owner": owner, "current": current, "next": next, "stage": stage, "ttl": max_ttl,
                   "safe_at": safe_at.map(check::probe::rfc3339), "servers": servers})
        );
    } else {
        println!("\nAuthoritative servers of {owner}:");
        for a in &answers {
            let mark = |b| if b { "yes" } else { "NO" };
            match &a.error {
                Some(e) => println!("  {} [{}]: no answer ({e})", a.server, a.address),
                None => println!(
                    "  {} [{}]: current {}, next {}, TTL {}",
                    a.server,
                    a.address,
                    mark(has(a, &current)),
                    mark(has(a, &next)),
                    a.ttl.map_or("-".into(), |t| t.to_string())
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
                safe_at.map(check::probe::rfc3339).unwrap_or_default()
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
