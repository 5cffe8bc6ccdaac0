//! The findings: pure functions from what route discovery and the probes saw to what the
//! domain owner should know, each with the rule behind it. No I/O here; `check_domain` calls
//! them with what it gathered.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use dane::{Matching, Selector, Usage};
use dns::route::{Candidate, DaneState};
use dns::{DnsName, NoMail};

use sts::{Mode, Policy};

use super::model::{Finding, HostPkix, HostReport, Level};
use crate::mta_sts::{StsReport, StsStatus};
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

/// Domain-wide MTA-STS findings (RFC 8461), from the domain's [`StsReport`] and its MX hosts
/// (empty when the route defers or bounces):
///
/// * `sts-txt-invalid` (`fail`): the `_mta-sts` TXT record is invalid, or there are several:
///   senders assume there is no policy (RFC 8461 §3.1);
/// * `sts-txt-without-policy` (`fail`): a TXT record announces a policy that cannot be fetched
///   or is invalid: new senders apply none, and those that cached one lose it when it expires
///   (RFC 8461 §3.2, §3.3);
/// * `sts-txt-lookup-failed` (`warn`): the TXT lookup failed or was bogus (RFC 8461 §3.1);
/// * `sts-testing` (`info`, RFC 8461 §5), `sts-mode-none` (`info`, a withdrawn policy,
///   RFC 8461 §8.3);
/// * `sts-testing-without-tls-rpt` (`warn`): a `testing` policy only makes failures known
///   through TLS-RPT reports, and the domain publishes no valid `_smtp._tls` record
///   (RFC 8461 §5, RFC 8460 §3);
/// * `sts-policy-mx-unused` (`warn`): an `mx` pattern that matches no MX host in DNS, a stale
///   or mistyped entry (RFC 8461 §4.1);
/// * `tls-rpt-invalid` (`warn`): the `_smtp._tls` record is unusable (RFC 8460 §3).
pub(crate) fn sts_domain_findings(
    domain: &DnsName,
    sts: &StsReport,
    hosts: &[HostReport],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let error = sts.error.as_deref().unwrap_or("no detail");
    match (sts.status, &sts.txt_id) {
        (StsStatus::Invalid, None) => out.push(Finding {
            level: Level::Fail,
            code: "sts-txt-invalid",
            message: format!(
                "the MTA-STS TXT record of {domain} is unusable ({error}): senders assume there is no policy"
            ),
            rfc: "RFC 8461 §3.1",
        }),
        (StsStatus::Invalid | StsStatus::FetchFailed, Some(id)) => out.push(Finding {
            level: Level::Fail,
            code: "sts-txt-without-policy",
            message: format!(
                "_mta-sts.{domain} announces policy {id}, but {}: {error}; senders apply no MTA-STS policy (and drop a cached one when it expires)",
                if sts.status == StsStatus::Invalid {
                    "the policy is invalid"
                } else {
                    "it cannot be fetched"
                }
            ),
            rfc: if sts.status == StsStatus::Invalid {
                "RFC 8461 §3.2"
            } else {
                "RFC 8461 §3.3"
            },
        }),
        (StsStatus::FetchFailed, None) => out.push(Finding {
            level: Level::Warn,
            code: "sts-txt-lookup-failed",
            message: format!(
                "{error}: senders cannot tell whether {domain} publishes MTA-STS"
            ),
            rfc: "RFC 8461 §3.1",
        }),
        _ => {}
    }
    if let Some(e) = &sts.tls_rpt_error {
        out.push(Finding {
            level: Level::Warn,
            code: "tls-rpt-invalid",
            message: format!("the TLS-RPT record of {domain} is unusable: {e}"),
            rfc: "RFC 8460 §3",
        });
    }
    let Some(policy) = &sts.policy else {
        return out;
    };
    match policy.mode() {
        Mode::None => out.push(Finding {
            level: Level::Info,
            code: "sts-mode-none",
            message: format!("{domain} has withdrawn its MTA-STS policy (mode none)"),
            rfc: "RFC 8461 §8.3",
        }),
        Mode::Testing => {
            out.push(Finding {
                level: Level::Info,
                code: "sts-testing",
                message: format!(
                    "the MTA-STS policy of {domain} is in testing mode: failures are reported, not enforced"
                ),
                rfc: "RFC 8461 §5",
            });
            if sts.tls_rpt.is_none() {
                out.push(Finding {
                    level: Level::Warn,
                    code: "sts-testing-without-tls-rpt",
                    message: format!(
                        "the MTA-STS policy of {domain} is in testing mode, but no valid TLS-RPT record (_smtp._tls.{domain}) says where to report failures: testing shows nothing"
                    ),
                    rfc: "RFC 8460 §3",
                });
            }
        }
        Mode::Enforce => {}
    }
    if policy.mode() != Mode::None && !hosts.is_empty() {
        for pattern in policy.mx() {
            if !hosts.iter().any(|h| pattern.matches(h.name.as_str())) {
                out.push(Finding {
                    level: Level::Warn,
                    code: "sts-policy-mx-unused",
                    message: format!(
                        "the MTA-STS policy of {domain} lists mx {pattern}, which matches none of its MX hosts"
                    ),
                    rfc: "RFC 8461 §4.1",
                });
            }
        }
    }
    out
}

/// MTA-STS findings about one MX host, under a policy in mode `enforce` or `testing`;
/// `any_match`: whether the policy lists any MX host of the domain.
///
/// * `sts-mx-not-in-policy`: the policy lists no pattern matching the host, so senders
///   applying it do not deliver there (RFC 8461 §4.1, §5): under `enforce` a `warn`, or a
///   `fail` when it lists none of the domain's hosts (mail is deferred); under `testing`
///   `info`;
/// * the host is listed, but an address fails PKIX for its name, offers no STARTTLS or fails
///   the handshake (RFC 8461 §4.2, §5):
///   * `sts-enforce-pkix-fail` under `enforce` for a host without usable DANE records: senders
///     applying MTA-STS do not deliver there; `fail` when no address passes, else `warn`;
///   * `sts-dane-disagree` (`warn`) under `enforce` for a host with usable DANE records: DANE
///     senders deliver (DANE takes precedence, RFC 8461 §2), senders using only MTA-STS do
///     not;
///   * `sts-testing-pkix-fail` (`warn`) under `testing`: mail would be deferred in `enforce`
///     mode.
pub(crate) fn sts_host_findings(
    policy: &Policy,
    host: &HostReport,
    pkix: &HostPkix,
    any_match: bool,
) -> Vec<Finding> {
    let mode = policy.mode();
    if mode == Mode::None {
        return Vec::new();
    }
    let name = &host.name;
    if !policy.matches_mx(name.as_str()) {
        let level = match (mode, any_match) {
            (Mode::Enforce, true) => Level::Warn,
            (Mode::Enforce, false) => Level::Fail,
            _ => Level::Info,
        };
        let consequence = match (mode, any_match) {
            (Mode::Enforce, true) => "senders applying it skip this host",
            (Mode::Enforce, false) => {
                "senders applying it skip this host, and the policy lists no other: they defer all mail"
            }
            _ => "in enforce mode, senders applying it would skip this host",
        };
        return vec![Finding {
            level,
            code: "sts-mx-not-in-policy",
            message: format!(
                "MX host {name} matches no mx pattern of the MTA-STS policy ({mode}): {consequence}"
            ),
            rfc: "RFC 8461 §4.1",
        }];
    }
    if pkix.failed.is_empty() {
        return Vec::new();
    }
    let failures: Vec<String> = pkix
        .failed
        .iter()
        .map(|(address, why)| format!("{address}: {why}"))
        .collect();
    let failures = failures.join("; ");
    let (level, code, consequence) = match mode {
        Mode::Enforce if host.dane_usable() => (
            Level::Warn,
            "sts-dane-disagree",
            "senders using DANE authenticate it by its TLSA records (DANE takes precedence), but senders using only MTA-STS (enforce) do not deliver to it",
        ),
        Mode::Enforce if pkix.valid.is_empty() => (
            Level::Fail,
            "sts-enforce-pkix-fail",
            "senders applying the enforce policy do not deliver to it",
        ),
        Mode::Enforce => (
            Level::Warn,
            "sts-enforce-pkix-fail",
            "senders applying the enforce policy do not deliver to those addresses",
        ),
        _ => (
            Level::Warn,
            "sts-testing-pkix-fail",
            "senders report it now, and would not deliver to it in enforce mode",
        ),
    };
    vec![Finding {
        level,
        code,
        message: format!("{name} fails PKIX for its name ({failures}): {consequence}"),
        rfc: if code == "sts-dane-disagree" {
            "RFC 8461 §2"
        } else {
            "RFC 8461 §4.2"
        },
    }]
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
            pkix_valid: None,
            pkix_error: None,
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

    fn policy(mode: &str, mx: &[&str]) -> Policy {
        let mut text = format!("version: STSv1\nmode: {mode}\nmax_age: 86400\n");
        for m in mx {
            text.push_str(&format!("mx: {m}\n"));
        }
        Policy::parse(text.as_bytes(), "1".parse().unwrap()).unwrap()
    }

    fn sts_report(status: StsStatus, policy: Option<Policy>) -> StsReport {
        StsReport {
            status,
            txt_id: Some("1".into()),
            mode: policy.as_ref().map(Policy::mode),
            mx: vec![],
            max_age: None,
            tls_rpt: Some(vec!["mailto:r@example.test".into()]),
            tls_rpt_error: None,
            error: None,
            result_type: None,
            policy,
        }
    }

    fn host(name: &str, dane: DaneState) -> HostReport {
        HostReport {
            name: name.parse().unwrap(),
            preference: 10,
            port: 25,
            tlsa_base: name.parse().unwrap(),
            tlsa_name: None,
            dane: dane.code(),
            dane_detail: dane,
            tlsa_dnssec: None,
            tlsa: vec![],
            a_dnssec: Status::Secure,
            aaaa_dnssec: Status::Secure,
            addresses: vec![],
            reference_names: vec![],
            mta_sts_match: None,
            pkix_valid: None,
            pkix_error: None,
            findings: vec![],
            verdict: super::super::model::Verdict::Ok,
        }
    }

    fn no_dane() -> DaneState {
        DaneState::NotApplicable {
            reason: String::new(),
        }
    }

    fn pkix(valid: usize, failed: usize) -> HostPkix {
        HostPkix {
            valid: (0..valid)
                .map(|i| IpAddr::from([192, 0, 2, i as u8]))
                .collect(),
            failed: (0..failed)
                .map(|i| {
                    (
                        IpAddr::from([198, 51, 100, i as u8]),
                        "UnknownIssuer".into(),
                    )
                })
                .collect(),
        }
    }

    fn host_codes(
        policy: &Policy,
        h: &HostReport,
        p: &HostPkix,
        any_match: bool,
    ) -> Vec<(&'static str, Level)> {
        sts_host_findings(policy, h, p, any_match)
            .into_iter()
            .map(|f| (f.code, f.level))
            .collect()
    }

    #[test]
    fn an_mx_host_outside_the_policy_is_skipped_by_sts_senders() {
        let enforce = policy("enforce", &["mx1.example.test"]);
        let other = host("mx2.example.test", no_dane());
        assert_eq!(
            host_codes(&enforce, &other, &pkix(1, 0), true),
            [("sts-mx-not-in-policy", Level::Warn)]
        );
        // The policy lists none of the domain's hosts: all mail is deferred.
        assert_eq!(
            host_codes(&enforce, &other, &pkix(1, 0), false),
            [("sts-mx-not-in-policy", Level::Fail)]
        );
        let testing = policy("testing", &["mx1.example.test"]);
        assert_eq!(
            host_codes(&testing, &other, &pkix(1, 0), false),
            [("sts-mx-not-in-policy", Level::Info)]
        );
        // Matched (a wildcard, case-insensitive): nothing to say.
        let wildcard = policy("enforce", &["*.Example.test"]);
        assert_eq!(host_codes(&wildcard, &other, &pkix(1, 0), true), []);
        assert_eq!(
            host_codes(&policy("none", &[]), &other, &pkix(0, 1), false),
            []
        );
    }

    #[test]
    fn a_listed_host_failing_pkix_depends_on_mode_and_dane() {
        let enforce = policy("enforce", &["mx.example.test"]);
        let plain = host("mx.example.test", no_dane());
        assert_eq!(host_codes(&enforce, &plain, &pkix(2, 0), true), []);
        assert_eq!(
            host_codes(&enforce, &plain, &pkix(0, 1), true),
            [("sts-enforce-pkix-fail", Level::Fail)]
        );
        assert_eq!(
            host_codes(&enforce, &plain, &pkix(1, 1), true),
            [("sts-enforce-pkix-fail", Level::Warn)]
        );
        let dane = host(
            "mx.example.test",
            DaneState::Usable {
                records: vec![tlsa(A)],
            },
        );
        let f = sts_host_findings(&enforce, &dane, &pkix(0, 1), true);
        assert_eq!(
            f.iter()
                .map(|f| (f.code, f.level, f.rfc))
                .collect::<Vec<_>>(),
            [("sts-dane-disagree", Level::Warn, "RFC 8461 §2")]
        );
        assert!(
            f[0].message.contains("198.51.100.0: UnknownIssuer"),
            "{}",
            f[0].message
        );
        let testing = policy("testing", &["mx.example.test"]);
        assert_eq!(
            host_codes(&testing, &plain, &pkix(0, 1), true),
            [("sts-testing-pkix-fail", Level::Warn)]
        );
    }

    fn domain_codes(sts: &StsReport, hosts: &[HostReport]) -> Vec<(&'static str, Level)> {
        sts_domain_findings(&"example.test".parse().unwrap(), sts, hosts)
            .into_iter()
            .map(|f| (f.code, f.level))
            .collect()
    }

    #[test]
    fn a_txt_record_without_a_usable_policy_fails() {
        let absent = StsReport {
            txt_id: None,
            tls_rpt: None,
            ..sts_report(StsStatus::Absent, None)
        };
        assert_eq!(domain_codes(&absent, &[]), []);
        let fetch = sts_report(StsStatus::FetchFailed, None);
        let f = sts_domain_findings(&"example.test".parse().unwrap(), &fetch, &[]);
        assert_eq!(
            f.iter()
                .map(|f| (f.code, f.level, f.rfc))
                .collect::<Vec<_>>(),
            [("sts-txt-without-policy", Level::Fail, "RFC 8461 §3.3")]
        );
        let invalid = sts_report(StsStatus::Invalid, None);
        let f = sts_domain_findings(&"example.test".parse().unwrap(), &invalid, &[]);
        assert_eq!(
            f.iter()
                .map(|f| (f.code, f.level, f.rfc))
                .collect::<Vec<_>>(),
            [("sts-txt-without-policy", Level::Fail, "RFC 8461 §3.2")]
        );
        let bad_txt = StsReport {
            txt_id: None,
            ..sts_report(StsStatus::Invalid, None)
        };
        assert_eq!(
            domain_codes(&bad_txt, &[]),
            [("sts-txt-invalid", Level::Fail)]
        );
        let lookup = StsReport {
            txt_id: None,
            ..sts_report(StsStatus::FetchFailed, None)
        };
        assert_eq!(
            domain_codes(&lookup, &[]),
            [("sts-txt-lookup-failed", Level::Warn)]
        );
        // Not fetched (--no-connect): nothing is claimed either way.
        assert_eq!(
            domain_codes(&sts_report(StsStatus::NotFetched, None), &[]),
            []
        );
    }

    #[test]
    fn policy_modes_patterns_and_tls_rpt_have_their_findings() {
        let hosts = [host("mx.example.test", no_dane())];
        let enforce = sts_report(
            StsStatus::Valid,
            Some(policy("enforce", &["mx.example.test"])),
        );
        assert_eq!(domain_codes(&enforce, &hosts), []);
        let stale = sts_report(
            StsStatus::Valid,
            Some(policy("enforce", &["mx.example.test", "old.example.test"])),
        );
        let f = sts_domain_findings(&"example.test".parse().unwrap(), &stale, &hosts);
        assert_eq!(
            f.iter().map(|f| (f.code, f.level)).collect::<Vec<_>>(),
            [("sts-policy-mx-unused", Level::Warn)]
        );
        assert!(
            f[0].message.contains("old.example.test"),
            "{}",
            f[0].message
        );
        // Without MX hosts (a deferred route) patterns are not judged.
        assert_eq!(domain_codes(&stale, &[]), []);
        let testing = sts_report(
            StsStatus::Valid,
            Some(policy("testing", &["mx.example.test"])),
        );
        assert_eq!(
            domain_codes(&testing, &hosts),
            [("sts-testing", Level::Info)]
        );
        let unreported = StsReport {
            tls_rpt: None,
            ..testing.clone()
        };
        assert_eq!(
            domain_codes(&unreported, &hosts),
            [
                ("sts-testing", Level::Info),
                ("sts-testing-without-tls-rpt", Level::Warn)
            ]
        );
        let none = sts_report(StsStatus::Valid, Some(policy("none", &[])));
        assert_eq!(
            domain_codes(&none, &hosts),
            [("sts-mode-none", Level::Info)]
        );
        let bad_rpt = StsReport {
            tls_rpt: None,
            tls_rpt_error: Some("no rua".into()),
            ..enforce
        };
        assert_eq!(
            domain_codes(&bad_rpt, &hosts),
            [("tls-rpt-invalid", Level::Warn)]
        );
    }

    #[test]
    fn host_pkix_counts_certificates_and_missing_tls_not_unreachable_addresses() {
        let address = |i: u8, tls: Option<AddressProbe>| super::super::model::AddressReport {
            address: IpAddr::from([192, 0, 2, i]),
            dnssec: Status::Secure,
            tls,
        };
        let judged = |valid: bool| AddressProbe {
            pkix_valid: Some(valid),
            pkix_error: (!valid).then(|| "expired".to_owned()),
            ..probe(None)
        };
        let addresses = [
            address(1, Some(judged(true))),
            address(2, Some(judged(false))),
            address(3, Some(probe(Some(ProbeFailure::StarttlsMissing)))),
            address(4, Some(probe(Some(ProbeFailure::Unreachable)))),
            address(5, None),
        ];
        let p = HostPkix::of(&addresses);
        assert_eq!(p.valid, [IpAddr::from([192, 0, 2, 1])]);
        assert_eq!(
            p.failed,
            [
                (IpAddr::from([192, 0, 2, 2]), "expired".to_owned()),
                (
                    IpAddr::from([192, 0, 2, 3]),
                    "no STARTTLS offered".to_owned()
                )
            ]
        );
        assert_eq!(p.summary(), Some(false));
        assert_eq!(HostPkix::of(&addresses[..1]).summary(), Some(true));
        assert_eq!(HostPkix::of(&addresses[3..]).summary(), None);
    }
}
