//! The report model: what `check --json` serializes (PRODUCT.md), field for field. Its keys
//! and values are a contract with scripts and monitoring.

use std::net::IpAddr;

use dane::Tlsa;
use dns::route::DaneState;
use dns::{DnsName, Status};
use serde::Serialize;

use crate::mta_sts::StsReport;
use crate::probe::{AddressProbe, ProbeFailure};

/// Severity of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Works, but is fragile or weaker than it should be.
    Warn,
    /// Senders using DANE cannot deliver (or an attacker could interfere).
    Fail,
}

/// The sum of a set of findings: the worst level that counts (`info` does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing above `info`.
    Ok,
    /// At least one `warn`, no `fail`.
    Warn,
    /// At least one `fail`.
    Fail,
}

impl Verdict {
    /// As in the JSON: `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sender does with mail to the domain (RFC 7672 §2.2, RFC 5321 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    /// Deliver to the MX hosts.
    Deliver,
    /// Retry later: the MX lookup failed.
    Defer,
    /// Return the mail: no such domain, or a null MX.
    Bounce,
}

impl RouteAction {
    /// As in the JSON: `deliver`, `defer` or `bounce`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAction::Deliver => "deliver",
            RouteAction::Defer => "defer",
            RouteAction::Bounce => "bounce",
        }
    }
}

impl std::fmt::Display for RouteAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something to tell the domain owner, with the rule behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// Stable code, e.g. `single-key`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The rule.
    pub rfc: &'static str,
}

/// One address of a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressReport {
    /// The address.
    pub address: IpAddr,
    /// DNSSEC status of its lookup.
    pub dnssec: Status,
    /// The STARTTLS probe (absent with `--no-connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<AddressProbe>,
}

/// One MX host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The MX exchange.
    pub name: DnsName,
    /// Its preference.
    pub preference: u16,
    /// Its port.
    pub port: u16,
    /// The TLSA base domain (and SNI name).
    pub tlsa_base: DnsName,
    /// The TLSA owner looked up.
    pub tlsa_name: Option<DnsName>,
    /// `usable`, `unusable`, `not-applicable`, `host-unusable`.
    pub dane: &'static str,
    /// The route layer's DANE state, with its reason.
    pub dane_detail: DaneState,
    /// Status of the TLSA lookup.
    pub tlsa_dnssec: Option<Status>,
    /// The TLSA records found.
    pub tlsa: Vec<Tlsa>,
    /// Status of the A lookup.
    pub a_dnssec: Status,
    /// Status of the AAAA lookup.
    pub aaaa_dnssec: Status,
    /// Addresses, each with its probe.
    pub addresses: Vec<AddressReport>,
    /// Names a DANE-TA certificate may carry.
    pub reference_names: Vec<dane::ReferenceName>,
    /// Whether the domain's MTA-STS policy (mode `enforce` or `testing`) lists this host
    /// (RFC 8461 §4.1); `null` without such a policy.
    pub mta_sts_match: Option<bool>,
    /// Whether every address that answered presented a certificate valid by PKIX for the host
    /// name (RFC 8461 §4.2); `null` when nothing was judged (no probe, no trust anchors).
    pub pkix_valid: Option<bool>,
    /// Why not, for the first address that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkix_error: Option<String>,
    /// Findings about this host.
    pub findings: Vec<Finding>,
    /// `ok`, `warn` or `fail`.
    pub verdict: Verdict,
}

impl HostReport {
    /// Whether DANE applies to the host with usable records: senders must use TLS and
    /// authenticate it by them (RFC 7672 §2.2).
    pub fn dane_usable(&self) -> bool {
        matches!(self.dane_detail, DaneState::Usable { .. })
    }
}

/// One domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainReport {
    /// The domain.
    pub domain: DnsName,
    /// `ok`, `warn` or `fail`.
    pub verdict: Verdict,
    /// `deliver`, `defer` or `bounce`.
    pub route: RouteAction,
    /// Status of the MX lookup.
    pub mx_dnssec: Option<Status>,
    /// Why the route defers or bounces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Domain-wide findings.
    pub findings: Vec<Finding>,
    /// The MX hosts, in preference order.
    pub hosts: Vec<HostReport>,
    /// The domain's MTA-STS state (RFC 8461).
    pub mta_sts: StsReport,
}

/// The PKIX verdicts on a host's addresses (RFC 8461 §4.2), from their probes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostPkix {
    /// Addresses whose certificate is valid for the host.
    pub valid: Vec<IpAddr>,
    /// Addresses that fail, and why: an invalid certificate, no STARTTLS, a failed handshake.
    pub failed: Vec<(IpAddr, String)>,
}

impl HostPkix {
    /// The verdicts of `addresses`. An address that could not be reached, or whose SMTP
    /// dialogue failed before STARTTLS, is neither: other findings report it.
    pub fn of(addresses: &[AddressReport]) -> HostPkix {
        let mut out = HostPkix::default();
        for a in addresses {
            let Some(p) = &a.tls else { continue };
            match (p.pkix_valid, p.error_kind) {
                (Some(true), _) => out.valid.push(a.address),
                (Some(false), _) => out.failed.push((
                    a.address,
                    p.pkix_error.clone().unwrap_or_else(|| "invalid".into()),
                )),
                (None, Some(ProbeFailure::StarttlsMissing)) => out
                    .failed
                    .push((a.address, "no STARTTLS offered".to_owned())),
                (None, Some(ProbeFailure::TlsHandshakeFailed)) => out.failed.push((
                    a.address,
                    format!(
                        "TLS handshake failed: {}",
                        p.error.as_deref().unwrap_or("no detail")
                    ),
                )),
                (None, _) => {}
            }
        }
        out
    }

    /// `pkix_valid` of the host: `null` when no address was judged.
    pub fn summary(&self) -> Option<bool> {
        (!self.valid.is_empty() || !self.failed.is_empty()).then_some(self.failed.is_empty())
    }
}

/// The verdict of a set of findings: `fail` if any fails, `warn` if any warns, else `ok`.
pub(crate) fn verdict<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Verdict {
    match findings.into_iter().map(|f| f.level).max() {
        Some(Level::Fail) => Verdict::Fail,
        Some(Level::Warn) => Verdict::Warn,
        _ => Verdict::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(level: Level) -> Finding {
        Finding {
            level,
            code: "x",
            message: String::new(),
            rfc: "RFC 0",
        }
    }

    #[test]
    fn the_verdict_is_the_worst_level() {
        assert_eq!(verdict([]), Verdict::Ok);
        assert_eq!(verdict(&[finding(Level::Info)]), Verdict::Ok);
        assert_eq!(
            verdict(&[finding(Level::Info), finding(Level::Warn)]),
            Verdict::Warn
        );
        assert_eq!(
            verdict(&[finding(Level::Fail), finding(Level::Warn)]),
            Verdict::Fail
        );
    }

    #[test]
    fn verdicts_and_routes_serialize_as_their_names() {
        for v in [Verdict::Ok, Verdict::Warn, Verdict::Fail] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for r in [
            RouteAction::Deliver,
            RouteAction::Defer,
            RouteAction::Bounce,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(
            (Verdict::Ok.to_string(), RouteAction::Bounce.to_string()),
            ("ok".to_owned(), "bounce".to_owned())
        );
    }

    #[test]
    fn levels_serialize_as_the_contract_says() {
        let json = serde_json::to_string(&finding(Level::Warn)).unwrap();
        assert_eq!(
            json,
            r#"{"level":"warn","code":"x","message":"","rfc":"RFC 0"}"#
        );
    }
}
