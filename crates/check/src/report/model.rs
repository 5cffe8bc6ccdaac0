//! The report model: what `check --json` serializes (PRODUCT.md), field for field. Its keys
//! and values are a contract with scripts and monitoring.

use std::net::IpAddr;

use dane::Tlsa;
use dns::route::DaneState;
use dns::{DnsName, Status};
use serde::Serialize;

use crate::probe::AddressProbe;

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
    /// Findings about this host.
    pub findings: Vec<Finding>,
    /// `ok`, `warn` or `fail`.
    pub verdict: &'static str,
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
    pub verdict: &'static str,
    /// `deliver`, `defer` or `bounce`.
    pub route: &'static str,
    /// Status of the MX lookup.
    pub mx_dnssec: Option<Status>,
    /// Why the route defers or bounces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Domain-wide findings.
    pub findings: Vec<Finding>,
    /// The MX hosts, in preference order.
    pub hosts: Vec<HostReport>,
}

/// The verdict of a set of findings: `fail` if any fails, `warn` if any warns, else `ok`.
pub(crate) fn verdict<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> &'static str {
    match findings.into_iter().map(|f| f.level).max() {
        Some(Level::Fail) => "fail",
        Some(Level::Warn) => "warn",
        _ => "ok",
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
        assert_eq!(verdict([]), "ok");
        assert_eq!(verdict(&[finding(Level::Info)]), "ok");
        assert_eq!(
            verdict(&[finding(Level::Info), finding(Level::Warn)]),
            "warn"
        );
        assert_eq!(
            verdict(&[finding(Level::Fail), finding(Level::Warn)]),
            "fail"
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
