//! Can this machine validate DNSSEC? The checks behind `danemta doctor`, also run by the
//! commands that deliver mail before they trust DANE (a resolver that does not validate
//! turns DANE off silently; one that strips signatures makes everything look bogus).

use serde::Serialize;

use crate::backend::{Backend, ResolverSpec};
use crate::lookup::RecordType;
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::status::Status;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but weaker than it should be.
    Warn,
    /// DNSSEC cannot be trusted here.
    Fail,
}

/// One check: what was tested, how it went, how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name.
    pub check: &'static str,
    /// Outcome.
    pub level: Level,
    /// What was seen.
    pub detail: String,
    /// What to do about it, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Whether the checks allow trusting DNSSEC (and so DANE) at all.
pub fn can_validate(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.level != Level::Fail)
}

/// Runs the checks against `backend`, set up from `spec`; `probe` is a name known to be in a
/// signed zone (its MX lookup, or secure denial, must validate).
pub async fn probe(backend: &Backend, spec: &ResolverSpec, probe: &DnsName) -> Vec<Check> {
    let mut checks = Vec::new();
    let not_validating_fix = match spec {
        ResolverSpec::TrustAd(addr) => format!(
            "make the resolver at {addr} validate DNSSEC and set the AD bit (unbound: \
             auto-trust-anchor-file; systemd-resolved: DNSSEC=yes), or use --resolver validating"
        ),
        ResolverSpec::Validating(_) => {
            "check the trust anchors (--trust-anchor) and the system clock; \
             signatures are only valid within their dates"
                .to_owned()
        }
    };
    match (spec, backend) {
        (ResolverSpec::TrustAd(addr), _) => checks.push(if !spec.trusts_ad_off_loopback() {
            Check {
                check: "resolver",
                level: Level::Ok,
                detail: format!("trusting the AD bit of {addr} (loopback)"),
                fix: None,
            }
        } else {
            Check {
                check: "resolver",
                level: Level::Warn,
                detail: format!(
                    "trusting the AD bit of {addr}, which is NOT on loopback: anyone on the path can forge it"
                ),
                fix: Some(
                    "run a validating resolver on this machine (e.g. unbound on 127.0.0.1) and use trust-ad@127.0.0.1:53, or --resolver validating"
                        .to_owned(),
                ),
            }
        }),
        (ResolverSpec::Validating(_), Backend::Validating(v)) => {
            let passes = v.inner().upstream_passes_dnssec().await;
            checks.push(Check {
                check: "upstream-dnssec",
                level: if passes { Level::Ok } else { Level::Fail },
                detail: if passes {
                    "the upstream resolver returns DNSSEC signatures".to_owned()
                } else {
                    "the upstream resolver does not return DNSSEC signatures (RRSIG): nothing can be validated".to_owned()
                },
                fix: (!passes).then(|| {
                    "point --resolver validating@IP:PORT at a resolver that passes DNSSEC records (e.g. a local unbound), or use --resolver trust-ad@127.0.0.1:53 with a local validating resolver".to_owned()
                }),
            });
        }
        _ => {}
    }
    let root = backend.lookup(&DnsName::root(), RecordType::Dnskey).await;
    checks.push(status_check(
        "root-dnskey",
        "the root DNSKEY RRset",
        root.status(),
        &not_validating_fix,
    ));
    let signed = backend.lookup(probe, RecordType::Mx).await;
    checks.push(status_check(
        "signed-name",
        &format!("MX of {probe} (a signed zone)"),
        signed.status(),
        &not_validating_fix,
    ));
    checks
}

fn status_check(check: &'static str, what: &str, status: Status, fix: &str) -> Check {
    let level = if status.is_secure() {
        Level::Ok
    } else {
        Level::Fail
    };
    let why = match status {
        Status::Secure => "validates (secure)",
        Status::Insecure => "is not validated (insecure): the resolver does not validate DNSSEC",
        Status::Bogus => "fails validation (bogus)",
        Status::Indeterminate => {
            "could not be looked up (indeterminate: timeout or server failure)"
        }
    };
    Check {
        check,
        level,
        detail: format!("{what} {why}"),
        fix: (level != Level::Ok).then(|| fix.to_owned()),
    }
}

/// The start-up check of the commands that deliver mail: does the root DNSKEY RRset validate?
/// (No network name is needed beyond the root.) Without it DANE cannot be enforced.
pub async fn root_validates(backend: &Backend) -> Result<(), String> {
    let root = backend.lookup(&DnsName::root(), RecordType::Dnskey).await;
    if root.status().is_secure() {
        Ok(())
    } else {
        Err(format!(
            "the root DNSKEY RRset is {} through this resolver, so DNSSEC validation does not work here (run `danemta doctor`)",
            root.status()
        ))
    }
}
