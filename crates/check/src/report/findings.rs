//! The findings: pure functions from what route discovery and the probes saw to what the
//! domain owner should know, each with the rule behind it. No I/O here; `check_domain` calls
//! them with what it gathered.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use dane::{Matching, Selector, Usage};
use dns::route::{Candidate, DaneState};
use dns::{DnsName, NoMail};

use super::model::{Finding, Level};
use crate::probe::{AddressProbe, ProbeConfig, ProbeFailure};

/// Most records a large sender is known to consider at one name.
const MANY_TLSA: usize = 12;
/// A DANE-TA leaf closer than this to its expiry is reported.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);

/// The route defers: the MX lookup failed or its answer cannot be trusted (bogus,
/// indeterminate), so senders using DANE wait and retry (RFC 7672 §2.2.1).
pub(crate) fn mx_lookup_failed(domain: &DnsName, reason: &str) -> Finding {
    Finding {
        level: Level::Fail,
        code: "mx-lookup-failed",
        message: format!("{reason}: mail to {domain} is deferred"),
        rfc: "RFC 7672 §2.2.1",
    }
}

/// The route bounces. A null MX (RFC 7505) is a deliberate "no mail here", only `info`; a
/// domain that does not exist (RFC 5321 §5.1) is a `fail`. `reason` is the route's words.
pub(crate) fn bounced(why: NoMail, reason: &str) -> Finding {
    let (level, code) = match why {
        NoMail::NullMx => (Level::Info, "null-mx"),
        NoMail::NoSuchDomain | NoMail::NoSubmissionService => (Level::Fail, "no-such-domain"),
    };
    Finding {
        level,
        code,
        message: reason.to_owned(),
        rfc: why.citation(),
    }
}

/// Every MX host of `domain` is unusable (a bogus or indeterminate lookup): senders using
/// DANE can deliver to none of them, and defer (RFC 7672 §2.2). `None` while one is usable.
pub(crate) fn no_usable_host(domain: &DnsName, hosts: &[Candidate]) -> Option<Finding> {
    hosts
        .iter()
        .all(|c| matches!(c.dane, DaneState::HostUnusable { .. }))
        .then(|| Finding {
            level: Level::Fail,
            code: "no-usable-host",
            message: format!("no MX host of {domain} can be used: mail to it is deferred"),
            rfc: "RFC 7672 §2.2",
        })
}

/// Findings from the DNS view of a host (no connection needed):
///
/// * from its DANE state (RFC 7672 §2.2): `host-unusable` (a bogus or indeterminate lookup:
///   senders skip or defer, `fail`), `no-usable-tlsa` (records, none usable: TLS required but
///   unauthenticated, RFC 7672 §3.1.3, `warn`), `no-dane` (`info`), and `insecure-mx` (usable
///   records behind an insecure MX lookup: senders reach "trusted", not "verified",
///   RFC 7672 §2.2.1, `warn`);
/// * `address-lookup-failed`: a failed A or AAAA lookup, whose addresses senders skip
///   (RFC 7672 §2.2.2);
/// * `mx-cname`: an MX exchange that is a CNAME, which RFC 2181 §10.3 forbids;
/// * from the TLSA RRset (RFC 7671): `pkix-usage` (§3.1.3 of RFC 7672: ignored by SMTP),
///   `too-many-tlsa` (§8), `ee-full-certificate` and `single-key` (§8.1: rollovers),
///   `no-sha256` (§10.1.2: the digest every client supports).
pub(crate) fn dns_findings(c: &Candidate, mx_secure: bool) -> Vec<Finding> {
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
                "{} has secure TLSA records, but the MX lookup is not secure: senders reach only 'trusted', not 'verified'",
                c.name
            ),
            "RFC 7672 §2.2.1",
        ),
        DaneState::Usable { .. } => {}
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
    let tlsa_name = c.tlsa_name.as_ref().unwrap_or(&c.name);
    if c.tlsa
        .iter()
        .any(|t| matches!(t.usage(), Usage::PkixTa | Usage::PkixEe))
    {
        add(
            Level::Warn,
            "pkix-usage",
            format!(
                "{tlsa_name} publishes PKIX-TA(0)/PKIX-EE(1) records, which SMTP clients ignore"
            ),
            "RFC 7672 §3.1.3",
        );
    }
    if c.tlsa.len() > MANY_TLSA {
        add(
            Level::Warn,
            "too-many-tlsa",
            format!(
                "{tlsa_name} has {} TLSA records; some large senders consider only the first {MANY_TLSA}",
                c.tlsa.len()
            ),
            "RFC 7671 §8",
        );
    }
    if let DaneState::Usable { records } = &c.dane {
        if records
            .iter()
            .any(|t| t.usage() == Usage::DaneEe && t.selector() == Selector::FullCert)
        {
            add(
                Level::Warn,
                "ee-full-certificate",
                format!(
                    "{tlsa_name} has DANE-EE records of the whole certificate (3 0 x): they break at every renewal, 3 1 x (the key) survives renewals that keep it"
                ),
                "RFC 7671 §8.1",
            );
        }
        let distinct: HashSet<(Usage, &[u8])> =
            records.iter().map(|t| (t.usage(), t.data())).collect();
        if distinct.len() == 1 {
            add(
                Level::Warn,
                "single-key",
                format!(
                    "{tlsa_name} has a single TLSA record: publish the next key (or CA) too before rolling over, or mail will defer during the change"
                ),
                "RFC 7671 §8.1",
            );
        }
        if !records.iter().any(|t| t.matching() == Matching::Sha256) {
            add(
                Level::Warn,
                "no-sha256",
                format!(
                    "{tlsa_name} has no SHA2-256 (x x 1) record, the digest every client supports"
                ),
                "RFC 7671 §10.1.2",
            );
        }
    }
    out
}

/// A domain with more MX hosts than senders consider: the first `kept` (in preference order)
/// were checked, `dropped` more were not.
pub(crate) fn too_many_mx(domain: &DnsName, kept: usize, dropped: usize) -> Finding {
    Finding {
        level: Level::Warn,
        code: "too-many-mx",
        message: format!(
            "{domain} publishes {} MX hosts: only the first {kept} by preference were checked, and senders try no more than a few (danemta {kept}, Exim 5 hosts, Postfix 5 addresses); the other {dropped} are reached by no sender that bounds its attempts",
            kept + dropped
        ),
        rfc: "RFC 5321 §5.1",
    }
}

/// Findings from the probes of a host's addresses, each with its address.
///
/// Why a probe failed decides the finding ([`ProbeFailure`]):
///
/// * `unreachable` (no greeting) and `smtp-failed` (no session up to STARTTLS), for a host
///   with TLSA records: a `fail` when no address of the host got that far, since senders
///   using DANE then cannot deliver to it (RFC 5321 §5.1); a `warn` when another address did,
///   since senders lose time on this one but deliver. For a host without DANE, `info`: this
///   report judges DANE, and the probe only says why it could not look at TLS.
/// * `starttls-missing`: a `fail` for a host with TLSA records, which senders must reach over
///   TLS (RFC 7672 §2.2); nothing for others, which opportunistic senders reach in plaintext.
/// * `tls-handshake-failed`: a `fail` with TLSA records (senders defer, RFC 7672 §2.2); a
///   `warn` without (senders fall back to plaintext, which an attacker can also force,
///   RFC 7435 §4).
pub(crate) fn probe_findings(
    c: &Candidate,
    probes: &[(IpAddr, &AddressProbe)],
    cfg: &ProbeConfig,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, code, message: String, rfc| {
        out.push(Finding {
            level,
            code,
            message,
            rfc,
        })
    };
    let tls_required = matches!(c.dane, DaneState::Usable { .. } | DaneState::Unusable);
    let reached = probes
        .iter()
        .filter(|(_, p)| p.error_kind.is_none_or(ProbeFailure::reached_smtp))
        .count();
    for (address, p) in probes {
        let Some(kind) = p.error_kind else { continue };
        let error = p.error.as_deref().unwrap_or("");
        let at = format!("{} [{address}]:{}", c.name, c.port);
        match kind {
            ProbeFailure::Unreachable | ProbeFailure::SmtpFailed => {
                let (level, consequence) = if !tls_required {
                    (
                        Level::Info,
                        "its TLS could not be checked (DANE does not apply to it)".to_owned(),
                    )
                } else if reached == 0 {
                    (
                        Level::Fail,
                        format!(
                            "no address of {} does, so senders cannot deliver to it (if no host of any domain is reachable, this machine's network may block port {})",
                            c.name, c.port
                        ),
                    )
                } else {
                    (
                        Level::Warn,
                        format!(
                            "senders lose time on it before trying another address of {}",
                            c.name
                        ),
                    )
                };
                let what = if kind == ProbeFailure::Unreachable {
                    "accepts no SMTP connection"
                } else {
                    "does not complete the SMTP greeting and EHLO"
                };
                let rfc = if kind == ProbeFailure::Unreachable {
                    "RFC 5321 §5.1"
                } else {
                    "RFC 5321 §3.1"
                };
                add(
                    level,
                    kind.code(),
                    format!("{at} {what} ({error}): {consequence}"),
                    rfc,
                );
            }
            ProbeFailure::StarttlsMissing if tls_required => add(
                Level::Fail,
                kind.code(),
                format!(
                    "{at}: {} publishes TLSA records but did not offer STARTTLS: {error}",
                    c.name
                ),
                "RFC 7672 §2.2",
            ),
            ProbeFailure::StarttlsMissing => {}
            ProbeFailure::TlsHandshakeFailed if tls_required => add(
                Level::Fail,
                kind.code(),
                format!(
                    "{at} offers STARTTLS but TLS fails ({error}): senders using DANE must use TLS with {} and defer",
                    c.name
                ),
                "RFC 7672 §2.2",
            ),
            ProbeFailure::TlsHandshakeFailed => add(
                Level::Warn,
                kind.code(),
                format!(
                    "{at} offers STARTTLS but TLS fails ({error}): senders fall back to plaintext"
                ),
                "RFC 7435 §4",
            ),
        }
    }
    let probes: Vec<&AddressProbe> = probes.iter().map(|(_, p)| *p).collect();
    let DaneState::Usable { records } = &c.dane else {
        return out;
    };
    // A second certificate of the other key family must match too: clients that prefer it
    // see only that one.
    for p in &probes {
        let other = p
            .other_certificate
            .as_deref()
            .filter(|o| o.matched.is_none() && !o.chain.is_empty());
        if let Some(other) = other {
            let family = other.key.map_or("other".to_owned(), |k| {
                format!("{k:?}").to_ascii_uppercase()
            });
            add(
                Level::Fail,
                "no-tlsa-match",
                format!(
                    "{} also presents an {family} certificate, which no TLSA record matches: {}",
                    c.name,
                    other.failure.as_deref().unwrap_or("")
                ),
                "RFC 7672 §3",
            );
        }
    }
    let connected: Vec<&&AddressProbe> = probes.iter().filter(|p| !p.chain.is_empty()).collect();
    let matched = connected.iter().filter(|p| p.matched.is_some()).count();
    if !connected.is_empty() && matched == 0 {
        let why = connected
            .first()
            .and_then(|p| p.failure.clone())
            .unwrap_or_default();
        add(
            Level::Fail,
            "no-tlsa-match",
            format!(
                "no TLSA record of {} matches the presented chain: {why}",
                c.name
            ),
            "RFC 7672 §3",
        );
    } else if matched > 0 && matched < connected.len() {
        add(
            Level::Warn,
            "addresses-disagree",
            format!(
                "{matched} of {} addresses of {} present a chain that matches the TLSA records",
                connected.len(),
                c.name
            ),
            "RFC 7672 §2.2",
        );
    }
    // 2 x 1/2 names a CA the server must send (RFC 7671 §5.2.2).
    for record in records
        .iter()
        .filter(|r| r.usage() == Usage::DaneTa && r.matching() != Matching::Full)
    {
        let absent = connected.iter().any(|p| {
            p.records
                .iter()
                .find(|m| &m.record == record)
                .is_some_and(|m| matches!(m.failure, Some(dane::VerifyError::NoMatch { .. })))
        });
        if absent {
            add(
                Level::Warn,
                "ta-not-in-chain",
                format!(
                    "the CA named by {record} is not in the chain {} presents; servers must send it",
                    c.name
                ),
                "RFC 7671 §5.2.2",
            );
        }
    }
    let limit = cfg.when().as_secs() + EXPIRY_WARNING.as_secs();
    for p in connected.iter().filter(|p| {
        p.matched
            .as_ref()
            .is_some_and(|m| m.usage() == Usage::DaneTa)
    }) {
        if let Some(not_after) = p.leaf_not_after.filter(|t| *t < limit) {
            add(
                Level::Warn,
                "ta-leaf-expiring",
                format!(
                    "the certificate of {} expires at {} (DANE-TA checks expiry)",
                    c.name,
                    dane::rfc3339(not_after)
                ),
                "RFC 7671 §5.2",
            );
        }
    }
    out
}

/// Findings from what the authoritative servers answered at `owner`: servers that publish
/// different RRsets (some senders see one, some the other: a half-finished change), and
/// servers that did not answer.
pub fn ns_findings(
    owner: &DnsName,
    answers: &Result<Vec<dns::authoritative::ServerAnswer>, String>,
) -> Vec<Finding> {
    let answers = match answers {
        Ok(a) => a,
        Err(e) => {
            return vec![Finding {
                level: Level::Info,
                code: "ns-unchecked",
                message: format!("the authoritative servers of {owner} could not be compared: {e}"),
                rfc: "RFC 7671 §8.1",
            }];
        }
    };
    let rrset = |a: &dns::authoritative::ServerAnswer| {
        let mut v: Vec<String> = a.records.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    let answered: Vec<_> = answers.iter().filter(|a| a.error.is_none()).collect();
    let first = answered.first().map(|a| rrset(a));
    let mut out = Vec::new();
    if answered.iter().any(|a| Some(rrset(a)) != first) {
        let servers: Vec<String> = answered
            .iter()
            .map(|a| format!("{} [{}]: {} records", a.server, a.address, a.records.len()))
            .collect();
        out.push(Finding {
            level: Level::Warn,
            code: "ns-disagree",
            message: format!(
                "the authoritative servers disagree on the TLSA RRset at {owner}: {}",
                servers.join("; ")
            ),
            rfc: "RFC 7671 §8.1",
        });
    }
    for a in answers.iter().filter(|a| a.error.is_some()) {
        out.push(Finding {
            level: Level::Warn,
            code: "ns-unreachable",
            message: format!(
                "name server {} [{}] of {owner} did not answer: {}",
                a.server,
                a.address,
                a.error.as_deref().unwrap_or("")
            ),
            rfc: "RFC 7671 §8.1",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use dns::Status;
    use dns::authoritative::ServerAnswer;

    fn answer(server: &str, records: &[&str]) -> ServerAnswer {
        ServerAnswer {
            server: server.parse().unwrap(),
            address: "192.0.2.53".parse().unwrap(),
            records: records
                .iter()
                .map(|r| dns::Record::Tlsa(r.parse().unwrap()))
                .collect(),
            ttl: Some(300),
            error: None,
        }
    }

    const A: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";
    const B: &str = "3 1 1 0202020202020202020202020202020202020202020202020202020202020202";

    fn candidate(dane: DaneState) -> Candidate {
        Candidate {
            name: "mx.example.test".parse().unwrap(),
            preference: 10,
            port: 25,
            tlsa_base: "mx.example.test".parse().unwrap(),
            addresses: vec![],
            a_dnssec: Status::Secure,
            aaaa_dnssec: Status::Secure,
            tlsa_name: None,
            tlsa_dnssec: None,
            tlsa: vec![],
            dane,
            reference_names: vec![],
            dane_trust: dns::DaneTrust::Verified,
        }
    }

    fn probe(kind: Option<ProbeFailure>) -> AddressProbe {
        AddressProbe {
            starttls: kind.is_none_or(|k| k == ProbeFailure::TlsHandshakeFailed),
            tls: None,
            matched: None,
            depth: None,
            failure: None,
            chain: vec![],
            records: vec![],
            error: kind.map(|k| format!("{k:?}")),
            error_kind: kind,
            leaf_not_after: None,
            key: None,
            other_certificate: None,
        }
    }

    fn config() -> ProbeConfig {
        ProbeConfig::new(
            Arc::new(rustls::crypto::ring::default_provider()),
            smtp::Timeouts::uniform(Duration::from_secs(1)),
            "probe.test".into(),
            Duration::ZERO,
        )
    }

    fn levels(dane: DaneState, kinds: &[Option<ProbeFailure>]) -> Vec<(&'static str, Level)> {
        let probes: Vec<AddressProbe> = kinds.iter().map(|k| probe(*k)).collect();
        let with_addresses: Vec<(IpAddr, &AddressProbe)> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| (IpAddr::from([192, 0, 2, i as u8]), p))
            .collect();
        probe_findings(&candidate(dane), &with_addresses, &config())
            .into_iter()
            .map(|f| (f.code, f.level))
            .collect()
    }

    #[test]
    fn an_unreachable_dane_host_fails_only_when_no_address_of_it_answers() {
        let dane = || DaneState::Unusable;
        let down = Some(ProbeFailure::Unreachable);
        let refused = Some(ProbeFailure::SmtpFailed);
        assert_eq!(
            levels(dane(), &[down, refused]),
            [("unreachable", Level::Fail), ("smtp-failed", Level::Fail)]
        );
        assert_eq!(
            levels(dane(), &[down, None]),
            [("unreachable", Level::Warn)]
        );
        // An address that answered SMTP but not STARTTLS was reached.
        let no_tls = Some(ProbeFailure::StarttlsMissing);
        assert_eq!(
            levels(dane(), &[no_tls, down]),
            [
                ("starttls-missing", Level::Fail),
                ("unreachable", Level::Warn)
            ]
        );
        // Without DANE the report only says why TLS could not be looked at.
        let na = DaneState::NotApplicable {
            reason: String::new(),
        };
        assert_eq!(
            levels(na, &[down, refused, no_tls]),
            [("unreachable", Level::Info), ("smtp-failed", Level::Info)]
        );
    }

    #[test]
    fn a_failed_handshake_fails_only_where_tls_is_required() {
        let broken = Some(ProbeFailure::TlsHandshakeFailed);
        assert_eq!(
            levels(DaneState::Unusable, &[broken]),
            [("tls-handshake-failed", Level::Fail)]
        );
        let na = DaneState::NotApplicable {
            reason: String::new(),
        };
        assert_eq!(
            levels(na, &[broken]),
            [("tls-handshake-failed", Level::Warn)]
        );
    }

    fn tlsa(s: &str) -> dane::Tlsa {
        s.parse().unwrap()
    }

    /// A host with the secure TLSA `records`, all usable for SMTP unless PKIX.
    fn with_records(records: &[&str]) -> Candidate {
        let records: Vec<dane::Tlsa> = records.iter().map(|r| tlsa(r)).collect();
        let mut c = candidate(DaneState::Usable {
            records: records
                .iter()
                .filter(|t| !matches!(t.usage(), Usage::PkixTa | Usage::PkixEe))
                .cloned()
                .collect(),
        });
        c.tlsa_name = Some("_25._tcp.mx.example.test".parse().unwrap());
        c.tlsa_dnssec = Some(Status::Secure);
        c.tlsa = records;
        c
    }

    fn dns_codes(c: &Candidate, mx_secure: bool) -> Vec<(&'static str, Level)> {
        dns_findings(c, mx_secure)
            .into_iter()
            .map(|f| (f.code, f.level))
            .collect()
    }

    #[test]
    fn a_host_with_two_secure_keys_and_a_secure_mx_has_no_finding() {
        assert_eq!(dns_codes(&with_records(&[A, B]), true), []);
    }

    #[test]
    fn each_dane_state_has_its_finding() {
        let host_unusable = candidate(DaneState::HostUnusable {
            reason: "TLSA lookup bogus".into(),
        });
        assert_eq!(
            dns_codes(&host_unusable, true),
            [("host-unusable", Level::Fail)]
        );
        assert_eq!(
            dns_codes(&candidate(DaneState::Unusable), true),
            [("no-usable-tlsa", Level::Warn)]
        );
        let na = candidate(DaneState::NotApplicable {
            reason: "no TLSA records".into(),
        });
        let f = dns_findings(&na, true);
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("no-dane", Level::Info)]
        );
        assert_eq!(f[0].message, "no TLSA records");
    }

    #[test]
    fn secure_tlsa_behind_an_insecure_mx_is_reported() {
        let f = dns_findings(&with_records(&[A, B]), false);
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("insecure-mx", Level::Warn)]
        );
        assert_eq!(f[0].rfc, "RFC 7672 §2.2.1");
        // Without usable records there is nothing an insecure MX weakens.
        let na = candidate(DaneState::NotApplicable {
            reason: String::new(),
        });
        assert!(
            dns_codes(&na, false)
                .iter()
                .all(|(c, _)| *c != "insecure-mx")
        );
    }

    #[test]
    fn a_failed_address_lookup_is_reported_per_family() {
        let mut c = with_records(&[A, B]);
        c.a_dnssec = Status::Bogus;
        let f = dns_findings(&c, true);
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("address-lookup-failed", Level::Warn)]
        );
        assert!(f[0].message.contains("the A lookup"), "{}", f[0].message);
        c.aaaa_dnssec = Status::Indeterminate;
        assert_eq!(
            dns_codes(&c, true),
            [
                ("address-lookup-failed", Level::Warn),
                ("address-lookup-failed", Level::Warn)
            ]
        );
        // Insecure is not a failure: those addresses are used, without DANE.
        c.a_dnssec = Status::Insecure;
        c.aaaa_dnssec = Status::Insecure;
        assert_eq!(dns_codes(&c, true), []);
    }

    #[test]
    fn an_mx_exchange_that_is_a_cname_is_reported() {
        let mut c = with_records(&[A, B]);
        c.tlsa_base = "mx1.provider.test".parse().unwrap();
        let f = dns_findings(&c, true);
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("mx-cname", Level::Warn)]
        );
        assert!(
            f[0].message.contains("mx1.provider.test"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn record_set_findings_each_have_their_case() {
        const FULL: &str = "3 0 1 0303030303030303030303030303030303030303030303030303030303030303";
        const PKIX: &str = "1 1 1 0404040404040404040404040404040404040404040404040404040404040404";
        const SHA512: &str = "3 1 2 05050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505";
        const SHA512_B: &str = "3 1 2 06060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606060606";
        assert_eq!(
            dns_codes(&with_records(&[A]), true),
            [("single-key", Level::Warn)]
        );
        assert_eq!(
            dns_codes(&with_records(&[FULL, B]), true),
            [("ee-full-certificate", Level::Warn)]
        );
        assert_eq!(
            dns_codes(&with_records(&[PKIX, A, B]), true),
            [("pkix-usage", Level::Warn)]
        );
        assert_eq!(
            dns_codes(&with_records(&[SHA512, SHA512_B]), true),
            [("no-sha256", Level::Warn)]
        );
        let many: Vec<String> = (0..=MANY_TLSA)
            .map(|i| format!("3 1 1 {}", format!("{:02x}", i + 16).repeat(32)))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            dns_codes(&with_records(&many), true),
            [("too-many-tlsa", Level::Warn)]
        );
        let exactly: Vec<&str> = many[..MANY_TLSA].to_vec();
        assert_eq!(dns_codes(&with_records(&exactly), true), []);
    }

    #[test]
    fn a_deferred_route_is_an_mx_lookup_failure() {
        let domain: DnsName = "example.test".parse().unwrap();
        let f = mx_lookup_failed(&domain, "MX lookup of example.test is bogus");
        assert_eq!(
            (f.code, f.level, f.rfc),
            ("mx-lookup-failed", Level::Fail, "RFC 7672 §2.2.1")
        );
        assert_eq!(
            f.message,
            "MX lookup of example.test is bogus: mail to example.test is deferred"
        );
    }

    #[test]
    fn a_null_mx_is_information_a_missing_domain_a_failure() {
        let f = bounced(NoMail::NullMx, "publishes a null MX");
        assert_eq!(
            (f.code, f.level, f.rfc),
            ("null-mx", Level::Info, "RFC 7505")
        );
        assert_eq!(f.message, "publishes a null MX");
        let f = bounced(NoMail::NoSuchDomain, "does not exist");
        assert_eq!(
            (f.code, f.level, f.rfc),
            ("no-such-domain", Level::Fail, "RFC 5321 §5.1")
        );
    }

    #[test]
    fn no_usable_host_only_when_every_host_is_unusable() {
        let domain: DnsName = "example.test".parse().unwrap();
        let unusable = || {
            candidate(DaneState::HostUnusable {
                reason: String::new(),
            })
        };
        let f = no_usable_host(&domain, &[unusable(), unusable()]).unwrap();
        assert_eq!(
            (f.code, f.level, f.rfc),
            ("no-usable-host", Level::Fail, "RFC 7672 §2.2")
        );
        assert!(no_usable_host(&domain, &[unusable(), with_records(&[A, B])]).is_none());
        let na = candidate(DaneState::NotApplicable {
            reason: String::new(),
        });
        assert!(no_usable_host(&domain, &[na]).is_none());
    }

    #[test]
    fn servers_that_cannot_be_compared_are_noted() {
        let owner: DnsName = "_25._tcp.mx.example.test".parse().unwrap();
        let f = ns_findings(&owner, &Err("no NS records".into()));
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("ns-unchecked", Level::Info)]
        );
        assert!(f[0].message.contains("no NS records"), "{}", f[0].message);
    }

    #[test]
    fn servers_that_disagree_are_reported() {
        let owner: DnsName = "_25._tcp.mx.example.test".parse().unwrap();
        let same = Ok(vec![
            answer("ns1.test", &[A, B]),
            answer("ns2.test", &[B, A]),
        ]);
        assert!(ns_findings(&owner, &same).is_empty());
        let differ = Ok(vec![answer("ns1.test", &[A, B]), answer("ns2.test", &[A])]);
        let f = ns_findings(&owner, &differ);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            ["ns-disagree"]
        );
        assert!(f[0].message.contains("ns2.test"));
        let mut down = answer("ns3.test", &[]);
        down.error = Some("timed out".into());
        let f = ns_findings(&owner, &Ok(vec![answer("ns1.test", &[A]), down]));
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            ["ns-unreachable"]
        );
    }
}
