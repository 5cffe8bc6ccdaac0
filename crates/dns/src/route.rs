//! RFC 7672 §2.2 route discovery as pure decisions over lookup results.
//!
//! The driver ([`crate::discover()`]) performs the lookups; every decision lives here, one
//! function per RFC step, so each rule of the PRODUCT.md checklist is a unit test away:
//!
//! | step | function | rule |
//! | --- | --- | --- |
//! | MX / SRV / fixed next hop → hosts | [`mx_step`], [`srv_step`] | 2, 3 |
//! | at most [`Limits::max_hosts`] hosts | [`limit_hosts`] | RFC 5321 §5.1 |
//! | TLSA base domain | [`tlsa_base`], [`tlsa_question`], [`try_unexpanded`] | 4 |
//! | per-host DANE state | [`host_state`] | 1, 5, 6 |
//! | SNI and reference names | [`Candidate`] fields | 8, 10 |

use std::net::IpAddr;

use dane::{Profile, ReferenceName, Tlsa};
use serde::Serialize;

use crate::lookup::{Lookup, Outcome, Record};
use crate::name::{DnsName, DnsNameError};
use crate::status::Status;

/// Where a message goes next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NextHop {
    /// A recipient domain, subject to MX lookup (RFC 5321 §5.1).
    Domain {
        /// The domain.
        domain: DnsName,
        /// The SMTP port, 25 unless configured otherwise.
        port: u16,
    },
    /// A configured `[host]:port`: exempt from MX lookup.
    Host {
        /// The host.
        host: DnsName,
        /// The port.
        port: u16,
    },
    /// A submission domain: its `_submission._tcp` SRV targets (RFC 6186) are treated like MX
    /// hosts on their own ports.
    Submission {
        /// The domain.
        domain: DnsName,
    },
}

impl NextHop {
    /// The domain the message is addressed to, a DANE-TA reference name (RFC 7672 §3.2.3).
    pub fn domain(&self) -> &DnsName {
        match self {
            NextHop::Domain { domain, .. } | NextHop::Submission { domain } => domain,
            NextHop::Host { host, .. } => host,
        }
    }
}

/// A host to try, before its address and TLSA lookups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRef {
    /// The MX exchange, SRV target or configured host.
    pub name: DnsName,
    /// MX preference or SRV priority (0 for implicit MX and fixed hosts).
    pub preference: u16,
    /// The TCP port.
    pub port: u16,
}

/// The first step's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostsStep {
    /// Hosts to try in this order; `status` tells whether the lookup that named them was
    /// secure (RFC 7672 §2.2.1).
    Hosts {
        /// Hosts in order.
        hosts: Vec<HostRef>,
        /// DNSSEC status of the MX/SRV lookup (with its CNAMEs); `Secure` for a configured host.
        status: Status,
    },
    /// Retry later, e.g. when the MX (or SRV) lookup failed or is bogus, so nothing from it may
    /// be used (RFC 7672 §2.2.1); why, in words.
    Defer(String),
    /// Give up: the destination does not accept mail (NXDOMAIN, null MX of RFC 7505, no
    /// submission service); why, for code and in words.
    Bounce(NoMail, String),
}

/// Why a destination accepts no mail (a route that bounces), for code to match on; the
/// route's `reason` says it in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoMail {
    /// The domain does not exist: NXDOMAIN for its MX lookup (RFC 5321 §5.1).
    NoSuchDomain,
    /// The domain publishes a null MX (RFC 7505 §3).
    NullMx,
    /// The domain publishes no submission service: no `_submission._tcp` SRV, or only `.`
    /// (RFC 6186 §3).
    NoSubmissionService,
}

impl NoMail {
    /// The RFC that says so.
    pub fn citation(self) -> &'static str {
        match self {
            NoMail::NoSuchDomain => "RFC 5321 §5.1",
            NoMail::NullMx => "RFC 7505",
            NoMail::NoSubmissionService => "RFC 6186 §3",
        }
    }
}

/// Bounds on the work of one route discovery, so that a hostile domain publishing thousands
/// of MX (or SRV) records can neither tie a delivery up nor flood the resolver.
///
/// RFC 5321 §5.1 lets a client bound the hosts and addresses it tries. Postfix bounds a
/// delivery by addresses (`smtp_mx_address_limit` = 5) and sessions (`smtp_mx_session_limit`
/// = 2) and Exim by hosts (`hosts_max_try` = 5, `hosts_max_try_hardlimit` = 50); those bound
/// the connections, which the SMTP layer does. These bound the DNS work before them: how many
/// hosts are resolved at all, and how many at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most MX (or SRV) hosts considered, in preference order after the shuffle of equal
    /// preferences; the rest are dropped (and counted, [`limit_hosts`]). 10 by default: twice
    /// Exim's `hosts_max_try`, and more than Postfix's 5 addresses can use, so no real
    /// destination loses a host it needs, while a hostile one costs at most 10 hosts' lookups.
    pub max_hosts: usize,
    /// Most hosts whose lookups (A and AAAA together, then TLSA) are in flight at once in one
    /// route discovery: at most twice this many questions at once. 4 by default: the first
    /// hosts, the ones a delivery tries first, are resolved without waiting for the others,
    /// and the resolver never sees a burst from one destination.
    pub concurrent_hosts: usize,
}

impl Limits {
    /// The defaults: 10 hosts, 4 at a time.
    pub const DEFAULT: Limits = Limits {
        max_hosts: 10,
        concurrent_hosts: 4,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Keeps the first `max` of `hosts` (at least one), which [`mx_step`] and [`srv_step`] put in
/// the order to try them (RFC 5321 §5.1 allows a client to limit the hosts it tries); returns
/// how many were dropped.
pub fn limit_hosts(hosts: &mut Vec<HostRef>, max: usize) -> usize {
    let keep = max.max(1);
    let dropped = hosts.len().saturating_sub(keep);
    hosts.truncate(keep);
    dropped
}

/// Reorders one run of records of equal preference (randomly, in production).
pub type Shuffle<'a, T> = dyn FnMut(&mut [(u16, T)]) + 'a;

/// Sorts records by preference, shuffling ties with `shuffle` so load spreads across
/// equal-preference hosts (RFC 5321 §5.1). `shuffle` receives each run of equal preference.
fn order<T>(mut items: Vec<(u16, T)>, shuffle: &mut Shuffle<'_, T>) -> Vec<(u16, T)> {
    items.sort_by_key(|(p, _)| *p);
    let mut start = 0;
    while start < items.len() {
        let end = start
            + items[start..]
                .iter()
                .take_while(|(p, _)| *p == items[start].0)
                .count();
        shuffle(&mut items[start..end]);
        start = end;
    }
    items
}

/// RFC 7672 §2.2.1 with RFC 5321 §5.1 and RFC 7505: from the MX lookup of `domain` to hosts.
///
/// * Bogus or failed MX lookup: defer (checklist rule 2). Nothing from it may be used, and
///   falling back to the domain's address would let an attacker choose the host.
/// * NXDOMAIN: the domain does not exist: bounce.
/// * A null MX (`0 .`): the domain accepts no mail: bounce.
/// * No MX records: the domain itself is the one host (implicit MX), with the MX lookup's
///   status (a secure denial keeps DANE applicable, rule 4).
/// * Otherwise the exchanges in preference order, ties shuffled (rule 3: no host is promoted
///   for having TLSA records).
pub fn mx_step(
    domain: &DnsName,
    port: u16,
    mx: &Lookup,
    shuffle: &mut Shuffle<'_, DnsName>,
) -> HostsStep {
    let outcome = match mx.require(Status::USABLE) {
        Ok(outcome) => outcome,
        Err(status) => {
            return HostsStep::Defer(format!(
                "MX lookup for {domain} is {status}{} (RFC 7672 §2.2.1)",
                mx.failure().map(|f| format!(": {f}")).unwrap_or_default()
            ));
        }
    };
    let status = mx.status();
    match outcome {
        Outcome::NxDomain => HostsStep::Bounce(
            NoMail::NoSuchDomain,
            format!("domain {domain} does not exist (NXDOMAIN, {status})"),
        ),
        Outcome::NoData => HostsStep::Hosts {
            hosts: vec![HostRef {
                name: mx.final_name().clone(),
                preference: 0,
                port,
            }],
            status,
        },
        Outcome::Records(records) => {
            let mxs: Vec<(u16, DnsName)> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Mx(mx) => Some((mx.preference, mx.exchange.clone())),
                    _ => None,
                })
                .collect();
            // RFC 7505 §3: a null MX is the only MX record of its domain.
            if mxs.iter().any(|(_, exchange)| exchange.is_root()) {
                return HostsStep::Bounce(
                    NoMail::NullMx,
                    format!("domain {domain} publishes a null MX: it accepts no mail (RFC 7505)"),
                );
            }
            if mxs.is_empty() {
                return HostsStep::Defer(format!("MX answer for {domain} holds no MX record"));
            }
            let hosts = order(mxs, shuffle)
                .into_iter()
                .map(|(preference, name)| HostRef {
                    name,
                    preference,
                    port,
                })
                .collect();
            HostsStep::Hosts { hosts, status }
        }
        Outcome::Failed(f) => HostsStep::Defer(format!("MX lookup for {domain} failed: {f}")),
    }
}

/// RFC 6186 §3 with RFC 2782: from the `_submission._tcp` SRV lookup to hosts on their ports,
/// treated like MX hosts (RFC 7673 §3). A lone target of `.` means no service.
pub fn srv_step(
    domain: &DnsName,
    srv: &Lookup,
    shuffle: &mut Shuffle<'_, (DnsName, u16)>,
) -> HostsStep {
    let records = match srv.records_if(Status::USABLE) {
        Ok(records) => records,
        Err(status) => {
            return HostsStep::Defer(format!(
                "SRV lookup for _submission._tcp.{domain} is {status}"
            ));
        }
    };
    let status = srv.status();
    let targets: Vec<(u16, (DnsName, u16))> = records
        .iter()
        .filter_map(|r| match r {
            Record::Srv(s) => Some((s.priority, (s.target.clone(), s.port))),
            _ => None,
        })
        .collect();
    if targets.is_empty() || targets.iter().all(|(_, (t, _))| t.is_root()) {
        return HostsStep::Bounce(
            NoMail::NoSubmissionService,
            format!("{domain} publishes no submission service (_submission._tcp SRV, RFC 6186)"),
        );
    }
    let hosts = order(targets, shuffle)
        .into_iter()
        .filter(|(_, (t, _))| !t.is_root())
        .map(|(preference, (name, port))| HostRef {
            name,
            preference,
            port,
        })
        .collect();
    HostsStep::Hosts { hosts, status }
}

/// RFC 7672 §2.2.2 (checklist rule 4): the TLSA base domain of a host is its CNAME-expanded
/// name when every CNAME link on the way is secure, else the name as given. `addresses` is
/// the host's address lookup, which followed the CNAMEs.
pub fn tlsa_base(host: &DnsName, addresses: &Lookup) -> DnsName {
    let links = addresses.cnames();
    if !links.is_empty() && links.iter().all(|l| l.status.is_secure()) {
        addresses.final_name().clone()
    } else {
        host.clone()
    }
}

/// The TLSA lookup at one owner name; or, when the owner name `_PORT._tcp.BASE` would be
/// longer than DNS allows ([`DnsName::tlsa_owner`]), why none was made: no record can
/// exist there, a sure "no TLSA records", never a failure.
pub type TlsaAnswer = Result<Lookup, DnsNameError>;

/// RFC 7672 §2.2.3: when the TLSA lookup at the CNAME-expanded base finds nothing (a denial
/// that is not a failure, or an owner name too long to exist), the client tries the
/// unexpanded name. `Some(name)` to try.
pub fn try_unexpanded(host: &DnsName, base: &DnsName, tlsa: &TlsaAnswer) -> Option<DnsName> {
    let nothing = match tlsa {
        Ok(tlsa) => matches!(
            tlsa.require(Status::USABLE),
            Ok(Outcome::NoData | Outcome::NxDomain)
        ),
        Err(_) => true,
    };
    (nothing && base != host).then(|| host.clone())
}

/// The DANE state of one host (RFC 7672 §2.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DaneState {
    /// Secure TLSA records, some usable: TLS is mandatory and authenticated by them
    /// (RFC 7672 §2.2, §3).
    Usable {
        /// The usable records after RFC 7671 §9 digest agility.
        records: Vec<Tlsa>,
    },
    /// Secure TLSA records, none usable: TLS is mandatory but unauthenticated (RFC 7672 §2.2,
    /// rule 6).
    Unusable,
    /// No secure TLSA records (insecure addresses or TLSA RRset, or a secure denial): DANE
    /// does not apply; opportunistic TLS (RFC 7672 §2.2).
    NotApplicable {
        /// Why, with the RFC rule.
        reason: String,
    },
    /// The host must not be used (a bogus or indeterminate lookup, RFC 7672 §2.1.1 and §2.2;
    /// or no addresses): try the next, defer when none is left.
    HostUnusable {
        /// Why, with the RFC rule.
        reason: String,
    },
}

impl DaneState {
    /// The stable name of the state, as in JSON and reports (PRODUCT.md).
    pub fn code(&self) -> &'static str {
        match self {
            DaneState::Usable { .. } => "usable",
            DaneState::Unusable => "unusable",
            DaneState::NotApplicable { .. } => "not-applicable",
            DaneState::HostUnusable { .. } => "host-unusable",
        }
    }
}

/// What a successful DANE authentication of a host proves (PRODUCT.md checklist rule 2,
/// RFC 7672 §2.2.1), decided once, here, from the lookup that named the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaneTrust {
    /// A secure MX/SRV lookup named the host (or the operator configured it): a peer that
    /// DANE authenticates is the destination's server, `verified`.
    Verified,
    /// The MX/SRV lookup was insecure: secure TLSA records still authenticate the host, but
    /// nothing proved that the host serves the domain, so the peer is only `trusted`.
    Trusted,
}

impl DaneTrust {
    /// `Verified` when the lookup that named the host was secure.
    pub fn of(route_secure: bool) -> Self {
        if route_secure {
            DaneTrust::Verified
        } else {
            DaneTrust::Trusted
        }
    }
}

/// One address of a host, with the status of the lookup that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The address.
    pub address: IpAddr,
    /// DNSSEC status of its A or AAAA lookup.
    pub dnssec: Status,
}

/// A host as the SMTP client should try it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The MX exchange, SRV target or configured host.
    pub name: DnsName,
    /// MX preference or SRV priority.
    pub preference: u16,
    /// The TCP port.
    pub port: u16,
    /// The TLSA base domain (rule 4); also the SNI name to send (rule 10).
    pub tlsa_base: DnsName,
    /// Usable addresses: those of families whose lookup did not fail (a broken AAAA
    /// lookup does not spoil a secure A lookup).
    pub addresses: Vec<Address>,
    /// Status of the A lookup.
    pub a_dnssec: Status,
    /// Status of the AAAA lookup.
    pub aaaa_dnssec: Status,
    /// The TLSA owner name that was looked up, if any.
    pub tlsa_name: Option<DnsName>,
    /// Status of the TLSA lookup, if one was made.
    pub tlsa_dnssec: Option<Status>,
    /// All TLSA records found (usable or not), for reports.
    pub tlsa: Vec<Tlsa>,
    /// What DANE means for this host.
    pub dane: DaneState,
    /// The names a DANE-TA certificate may carry (RFC 7672 §3.2.3, rule 8).
    pub reference_names: Vec<ReferenceName>,
    /// What DANE authentication of this host proves: `verified` or only `trusted` (rule 2).
    pub dane_trust: DaneTrust,
}

/// The lookups made for one host.
#[derive(Clone, Debug)]
pub struct HostLookups {
    /// The host's A lookup.
    pub a: Lookup,
    /// The host's AAAA lookup.
    pub aaaa: Lookup,
    /// The TLSA lookups, when [`tlsa_question`] asked for them.
    pub tlsa: Option<TlsaLookups>,
}

/// The TLSA lookups of one host.
#[derive(Clone, Debug)]
pub struct TlsaLookups {
    /// The TLSA base domain they were asked for ([`tlsa_question`]).
    pub base: DnsName,
    /// The lookup at `_PORT._tcp.base`.
    pub at_base: TlsaAnswer,
    /// The one at the unexpanded name, if [`try_unexpanded`] asked for it.
    pub unexpanded: Option<TlsaAnswer>,
}

/// Whether the address lookups make a TLSA lookup worthwhile: RFC 7672 §2.2.2 applies DANE
/// only to hosts whose address records are secure.
pub fn wants_tlsa(a: &Lookup, aaaa: &Lookup) -> bool {
    let has = |l: &Lookup| l.records_if(Status::SECURE).is_ok_and(|r| !r.is_empty());
    has(a) || has(aaaa)
}

/// RFC 7672 §2.2.2: the TLSA base domain to ask `_PORT._tcp.BASE` at, when DANE can apply
/// to the host at all ([`wants_tlsa`]); `None` when it cannot.
pub fn tlsa_question(host: &DnsName, a: &Lookup, aaaa: &Lookup) -> Option<DnsName> {
    wants_tlsa(a, aaaa).then(|| tlsa_base(host, address_chain(a, aaaa)))
}

/// RFC 7672 §2.2 (checklist rules 1, 5, 6): the DANE state and usable addresses of a host.
///
/// `route_secure` is whether the MX (or SRV) lookup was secure. When it is not, a host with
/// secure TLSA records is still authenticated by them (RFC 7672 §2.2.1; the outcome is
/// reported as `trusted`), but only the TLSA base domain is a reference name, since nothing
/// authenticated the MX name or the domain.
pub fn host_state(
    host: &HostRef,
    next_hop: &DnsName,
    route_secure: bool,
    lookups: &HostLookups,
) -> Candidate {
    // After a fallback to the unexpanded name (RFC 7672 §2.2.3), that name is the base.
    let base = match &lookups.tlsa {
        Some(TlsaLookups {
            unexpanded: Some(_),
            ..
        }) => host.name.clone(),
        Some(t) => t.base.clone(),
        // No TLSA question: the base still names the SNI (rule 10).
        None => tlsa_base(&host.name, address_chain(&lookups.a, &lookups.aaaa)),
    };
    let addresses: Vec<Address> = [&lookups.a, &lookups.aaaa]
        .into_iter()
        .flat_map(|l| {
            let dnssec = l.status();
            let records = l.records_if(Status::USABLE).unwrap_or_default();
            records.iter().filter_map(move |r| match r {
                Record::Address(address) => Some(Address {
                    address: *address,
                    dnssec,
                }),
                _ => None,
            })
        })
        .collect();

    let mut names: Vec<ReferenceName> = Vec::new();
    let mut add = |n: &DnsName| {
        if let Some(r) = n.reference_name().filter(|r| !names.contains(r)) {
            names.push(r);
        }
    };
    add(&base);
    if route_secure {
        add(&host.name);
        add(next_hop);
    }

    let mut candidate = Candidate {
        name: host.name.clone(),
        preference: host.preference,
        port: host.port,
        tlsa_base: base,
        addresses,
        a_dnssec: lookups.a.status(),
        aaaa_dnssec: lookups.aaaa.status(),
        tlsa_name: None,
        tlsa_dnssec: None,
        tlsa: Vec::new(),
        dane: DaneState::NotApplicable {
            reason: String::new(),
        },
        reference_names: names,
        dane_trust: DaneTrust::of(route_secure),
    };

    if candidate.addresses.is_empty() {
        let failed = [&lookups.a, &lookups.aaaa]
            .iter()
            .any(|l| l.status().is_failure());
        candidate.dane = DaneState::HostUnusable {
            reason: if failed {
                format!(
                    "address lookup failed (A {}, AAAA {})",
                    lookups.a.status(),
                    lookups.aaaa.status()
                )
            } else {
                "the host has no A or AAAA records".to_owned()
            },
        };
        return candidate;
    }

    let Some(TlsaLookups {
        at_base,
        unexpanded,
        ..
    }) = &lookups.tlsa
    else {
        candidate.dane = DaneState::NotApplicable {
            reason: format!(
                "address records of {} are not secure (A {}, AAAA {}): DANE does not apply (RFC 7672 §2.2.2)",
                host.name,
                lookups.a.status(),
                lookups.aaaa.status()
            ),
        };
        return candidate;
    };
    let tlsa = match unexpanded.as_ref().unwrap_or(at_base) {
        Ok(tlsa) => tlsa,
        Err(_) => {
            candidate.dane = DaneState::NotApplicable {
                reason: format!(
                    "the TLSA owner name of {} for port {} would be longer than 255 octets: no TLSA records can exist, DANE does not apply (RFC 1035 §2.3.4, RFC 6698 §3)",
                    candidate.tlsa_base, host.port
                ),
            };
            return candidate;
        }
    };
    candidate.tlsa_name = Some(tlsa.name().clone());
    candidate.tlsa_dnssec = Some(tlsa.status());
    candidate.dane = match tlsa.records_if(Status::SECURE) {
        Ok([]) => DaneState::NotApplicable {
            reason: format!("{} has no TLSA records (secure denial)", tlsa.name()),
        },
        Ok(records) => {
            candidate.tlsa = records
                .iter()
                .filter_map(|r| match r {
                    Record::Tlsa(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            let usable = Profile::Smtp.usable_records(&candidate.tlsa);
            if usable.is_empty() {
                DaneState::Unusable
            } else {
                DaneState::Usable { records: usable }
            }
        }
        Err(s) if s.is_failure() => DaneState::HostUnusable {
            reason: format!(
                "TLSA lookup for {} is {s}{} (RFC 7672 §2.2, rule 5)",
                tlsa.name(),
                tlsa.failure().map(|f| format!(": {f}")).unwrap_or_default()
            ),
        },
        Err(s) => DaneState::NotApplicable {
            reason: format!(
                "TLSA records of {} are {s}: ignored (RFC 7672 §2.2)",
                tlsa.name()
            ),
        },
    };
    candidate
}

/// The address lookup whose CNAME chain decides the base domain: A, unless it failed and
/// AAAA did not.
pub fn address_chain<'l>(a: &'l Lookup, aaaa: &'l Lookup) -> &'l Lookup {
    if a.status().is_failure() && !aaaa.status().is_failure() {
        aaaa
    } else {
        a
    }
}

/// The outcome of route discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "route", rename_all = "kebab-case")]
pub enum Route {
    /// Try these hosts in order.
    Deliver {
        /// DNSSEC status of the MX (or SRV) lookup; `Secure` for a configured host.
        mx_dnssec: Status,
        /// The hosts, in the order to try them.
        candidates: Vec<Candidate>,
    },
    /// Keep the message and retry later, e.g. after a bogus or failed MX lookup (RFC 7672
    /// §2.2.1).
    Defer {
        /// Why, in words.
        reason: String,
        /// DNSSEC status of the MX (or SRV) lookup, if one was made.
        mx_dnssec: Option<Status>,
    },
    /// Return the message to its sender.
    Bounce {
        /// Why, for code.
        why: NoMail,
        /// Why, in words.
        reason: String,
        /// DNSSEC status of the MX (or SRV) lookup, if one was made.
        mx_dnssec: Option<Status>,
    },
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::lookup::{CnameLink, Failure, Mx, RecordType};

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn lookup(name: &str, rtype: RecordType, status: Status, outcome: Outcome) -> Lookup {
        Lookup::new(n(name), rtype, status, outcome, vec![], 300)
    }

    fn mx(status: Status, list: &[(u16, &str)]) -> Lookup {
        let records = list
            .iter()
            .map(|(p, e)| {
                Record::Mx(Mx {
                    preference: *p,
                    exchange: n(e),
                })
            })
            .collect();
        lookup(
            "example.test",
            RecordType::Mx,
            status,
            Outcome::Records(records),
        )
    }

    fn keep(_: &mut [(u16, DnsName)]) {}

    fn hosts(step: HostsStep) -> (Vec<String>, Status) {
        match step {
            HostsStep::Hosts { hosts, status } => (
                hosts.into_iter().map(|h| h.name.to_string()).collect(),
                status,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bogus_or_failed_mx_defers() {
        // Rule 1 and 2: indeterminate is handled like bogus, and both defer.
        for l in [
            mx(Status::Bogus, &[(10, "mx.example.test")]),
            Lookup::failed(n("example.test"), RecordType::Mx, Failure::Timeout),
            Lookup::failed(n("example.test"), RecordType::Mx, Failure::ServFail),
        ] {
            assert!(matches!(
                mx_step(&n("example.test"), 25, &l, &mut keep),
                HostsStep::Defer(_)
            ));
        }
    }

    #[test]
    fn mx_hosts_in_preference_order_with_status() {
        let l = mx(
            Status::Insecure,
            &[(20, "b.test"), (10, "a.test"), (30, "c.test")],
        );
        let (names, status) = hosts(mx_step(&n("example.test"), 25, &l, &mut keep));
        assert_eq!(names, ["a.test", "b.test", "c.test"]);
        assert_eq!(status, Status::Insecure);
    }

    #[test]
    fn equal_preferences_are_shuffled_only_among_themselves() {
        let l = mx(
            Status::Secure,
            &[(10, "a.test"), (20, "c.test"), (10, "b.test")],
        );
        let mut reverse = |run: &mut [(u16, DnsName)]| run.reverse();
        let (names, _) = hosts(mx_step(&n("example.test"), 25, &l, &mut reverse));
        assert_eq!(names, ["b.test", "a.test", "c.test"]);
    }

    #[test]
    fn null_mx_and_nxdomain_bounce() {
        let null = mx(Status::Secure, &[(0, ".")]);
        assert!(matches!(
            mx_step(&n("example.test"), 25, &null, &mut keep),
            HostsStep::Bounce(..)
        ));
        let nx = lookup("nx.test", RecordType::Mx, Status::Secure, Outcome::NxDomain);
        assert!(matches!(
            mx_step(&n("nx.test"), 25, &nx, &mut keep),
            HostsStep::Bounce(..)
        ));
    }

    #[test]
    fn no_mx_means_the_domain_itself_with_the_denial_status() {
        let l = Lookup::new(
            n("alias.test"),
            RecordType::Mx,
            Status::Secure,
            Outcome::NoData,
            vec![CnameLink {
                from: n("alias.test"),
                to: n("target.test"),
                status: Status::Secure,
            }],
            300,
        );
        // The implicit MX is the CNAME-expanded domain (RFC 5321 §5.1).
        let (names, status) = hosts(mx_step(&n("alias.test"), 25, &l, &mut keep));
        assert_eq!(
            (names, status),
            (vec!["target.test".to_owned()], Status::Secure)
        );
    }

    #[test]
    fn srv_targets_keep_their_ports_and_dot_means_no_service() {
        let srv = |list: &[(u16, &str, u16)]| {
            lookup(
                "_submission._tcp.example.test",
                RecordType::Srv,
                Status::Secure,
                Outcome::Records(
                    list.iter()
                        .map(|(p, t, port)| {
                            Record::Srv(crate::lookup::Srv {
                                priority: *p,
                                weight: 0,
                                port: *port,
                                target: n(t),
                            })
                        })
                        .collect(),
                ),
            )
        };
        let step = srv_step(
            &n("example.test"),
            &srv(&[(1, "sub.test", 587)]),
            &mut |_| {},
        );
        let HostsStep::Hosts { hosts, .. } = step else {
            panic!()
        };
        assert_eq!((hosts[0].name.as_str(), hosts[0].port), ("sub.test", 587));
        assert!(matches!(
            srv_step(&n("example.test"), &srv(&[(0, ".", 0)]), &mut |_| {}),
            HostsStep::Bounce(..)
        ));
    }

    fn addr(name: &str, status: Status, ip: IpAddr, cnames: Vec<CnameLink>) -> Lookup {
        let rtype = if ip.is_ipv4() {
            RecordType::A
        } else {
            RecordType::Aaaa
        };
        Lookup::new(
            n(name),
            rtype,
            status,
            Outcome::Records(vec![Record::Address(ip)]),
            cnames,
            300,
        )
    }

    fn v4() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    }

    fn v6() -> IpAddr {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    }

    fn link(from: &str, to: &str, status: Status) -> CnameLink {
        CnameLink {
            from: n(from),
            to: n(to),
            status,
        }
    }

    #[test]
    fn tlsa_base_is_the_expanded_name_only_when_every_cname_is_secure() {
        let host = n("mx.example.test");
        let secure = addr(
            "mx.example.test",
            Status::Secure,
            v4(),
            vec![
                link("mx.example.test", "a.test", Status::Secure),
                link("a.test", "b.test", Status::Secure),
            ],
        );
        assert_eq!(tlsa_base(&host, &secure), n("b.test"));
        let broken = addr(
            "mx.example.test",
            Status::Insecure,
            v4(),
            vec![
                link("mx.example.test", "a.test", Status::Secure),
                link("a.test", "b.test", Status::Insecure),
            ],
        );
        assert_eq!(tlsa_base(&host, &broken), host);
        assert_eq!(
            tlsa_base(
                &host,
                &addr("mx.example.test", Status::Secure, v4(), vec![])
            ),
            host
        );
    }

    #[test]
    fn unexpanded_name_is_tried_only_after_a_clean_denial() {
        let host = n("mx.example.test");
        let base = n("b.test");
        let nodata = lookup(
            "_25._tcp.b.test",
            RecordType::Tlsa,
            Status::Secure,
            Outcome::NoData,
        );
        assert_eq!(
            try_unexpanded(&host, &base, &Ok(nodata.clone())),
            Some(host.clone())
        );
        let insecure_nx = lookup(
            "_25._tcp.b.test",
            RecordType::Tlsa,
            Status::Insecure,
            Outcome::NxDomain,
        );
        assert_eq!(
            try_unexpanded(&host, &base, &Ok(insecure_nx)),
            Some(host.clone())
        );
        let bogus = lookup(
            "_25._tcp.b.test",
            RecordType::Tlsa,
            Status::Bogus,
            Outcome::NoData,
        );
        assert_eq!(try_unexpanded(&host, &base, &Ok(bogus)), None);
        assert_eq!(try_unexpanded(&host, &host, &Ok(nodata)), None);
    }

    fn tlsa_lookup(status: Status, records: Vec<&str>) -> Lookup {
        let outcome = if records.is_empty() {
            Outcome::NoData
        } else {
            Outcome::Records(
                records
                    .iter()
                    .map(|r| Record::Tlsa(r.parse().unwrap()))
                    .collect(),
            )
        };
        lookup(
            "_25._tcp.mx.example.test",
            RecordType::Tlsa,
            status,
            outcome,
        )
    }

    const EE: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";
    const PKIX: &str = "1 1 1 0101010101010101010101010101010101010101010101010101010101010101";

    fn host_ref() -> HostRef {
        HostRef {
            name: n("mx.example.test"),
            preference: 10,
            port: 25,
        }
    }

    fn state_with(tlsa: Option<Lookup>, route_secure: bool) -> Candidate {
        let lookups = HostLookups {
            a: addr("mx.example.test", Status::Secure, v4(), vec![]),
            aaaa: addr("mx.example.test", Status::Secure, v6(), vec![]),
            tlsa: tlsa.map(|t| TlsaLookups {
                base: n("mx.example.test"),
                at_base: Ok(t),
                unexpanded: None,
            }),
        };
        host_state(&host_ref(), &n("example.test"), route_secure, &lookups)
    }

    #[test]
    fn secure_usable_tlsa_makes_dane_mandatory() {
        let c = state_with(Some(tlsa_lookup(Status::Secure, vec![EE, PKIX])), true);
        assert_eq!(
            c.dane,
            DaneState::Usable {
                records: vec![EE.parse().unwrap()]
            }
        );
        assert_eq!(c.tlsa.len(), 2);
        assert_eq!(c.tlsa_base, n("mx.example.test"));
        let names: Vec<&str> = c.reference_names.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["mx.example.test", "example.test"]);
    }

    #[test]
    fn bogus_or_failed_tlsa_makes_the_host_unusable() {
        // Rule 5: never treat a failed TLSA lookup as "no TLSA".
        for t in [
            tlsa_lookup(Status::Bogus, vec![EE]),
            Lookup::failed(
                n("_25._tcp.mx.example.test"),
                RecordType::Tlsa,
                Failure::Timeout,
            ),
            Lookup::failed(
                n("_25._tcp.mx.example.test"),
                RecordType::Tlsa,
                Failure::ServFail,
            ),
        ] {
            let c = state_with(Some(t), true);
            assert!(
                matches!(c.dane, DaneState::HostUnusable { .. }),
                "{:?}",
                c.dane
            );
        }
    }

    #[test]
    fn secure_records_none_usable_mean_unauthenticated_mandatory_tls() {
        // Rule 6.
        let c = state_with(Some(tlsa_lookup(Status::Secure, vec![PKIX])), true);
        assert_eq!(c.dane, DaneState::Unusable);
    }

    #[test]
    fn insecure_tlsa_or_secure_denial_means_no_dane() {
        for t in [
            tlsa_lookup(Status::Insecure, vec![EE]),
            tlsa_lookup(Status::Secure, vec![]),
        ] {
            let c = state_with(Some(t), true);
            assert!(
                matches!(c.dane, DaneState::NotApplicable { .. }),
                "{:?}",
                c.dane
            );
        }
    }

    #[test]
    fn insecure_mx_keeps_dane_but_only_the_base_domain_as_reference_name() {
        // Rule 2: an insecure MX with secure host records still uses the TLSA records.
        let c = state_with(Some(tlsa_lookup(Status::Secure, vec![EE])), false);
        assert!(matches!(c.dane, DaneState::Usable { .. }));
        let names: Vec<&str> = c.reference_names.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["mx.example.test"]);
    }

    #[test]
    fn a_broken_aaaa_lookup_does_not_spoil_the_ipv4_path() {
        let lookups = HostLookups {
            a: addr("mx.example.test", Status::Secure, v4(), vec![]),
            aaaa: Lookup::failed(
                n("mx.example.test"),
                RecordType::Aaaa,
                Failure::Bogus("bad NSEC".into()),
            ),
            tlsa: Some(TlsaLookups {
                base: n("mx.example.test"),
                at_base: Ok(tlsa_lookup(Status::Secure, vec![EE])),
                unexpanded: None,
            }),
        };
        assert!(wants_tlsa(&lookups.a, &lookups.aaaa));
        let c = host_state(&host_ref(), &n("example.test"), true, &lookups);
        assert_eq!(
            c.addresses,
            vec![Address {
                address: v4(),
                dnssec: Status::Secure
            }]
        );
        assert_eq!(c.aaaa_dnssec, Status::Bogus);
        assert!(matches!(c.dane, DaneState::Usable { .. }));
    }

    #[test]
    fn insecure_addresses_mean_no_tlsa_lookup_and_no_dane() {
        let a = addr("mx.example.test", Status::Insecure, v4(), vec![]);
        let aaaa = lookup(
            "mx.example.test",
            RecordType::Aaaa,
            Status::Insecure,
            Outcome::NoData,
        );
        assert!(!wants_tlsa(&a, &aaaa));
        let c = host_state(
            &host_ref(),
            &n("example.test"),
            true,
            &HostLookups {
                a,
                aaaa,
                tlsa: None,
            },
        );
        assert!(matches!(c.dane, DaneState::NotApplicable { .. }));
        assert_eq!(c.addresses.len(), 1);
    }

    #[test]
    fn a_host_without_addresses_is_unusable() {
        let a = Lookup::failed(n("mx.example.test"), RecordType::A, Failure::Timeout);
        let aaaa = lookup(
            "mx.example.test",
            RecordType::Aaaa,
            Status::Secure,
            Outcome::NoData,
        );
        let c = host_state(
            &host_ref(),
            &n("example.test"),
            true,
            &HostLookups {
                a,
                aaaa,
                tlsa: None,
            },
        );
        assert!(matches!(c.dane, DaneState::HostUnusable { .. }));
    }

    /// A 248-character host name: valid, but `_25._tcp.` makes its TLSA owner 257.
    fn long_name() -> DnsName {
        n(&format!(
            "{}.{}.example.test",
            vec!["x".repeat(63); 3].join("."),
            "y".repeat(43)
        ))
    }

    #[test]
    fn a_tlsa_owner_too_long_to_exist_is_no_tlsa() {
        let host = HostRef {
            name: long_name(),
            preference: 10,
            port: 25,
        };
        let Err(owner) = host.name.tlsa_owner(25) else {
            panic!("the owner name must be too long")
        };
        let lookups = HostLookups {
            a: addr(host.name.as_str(), Status::Secure, v4(), vec![]),
            aaaa: lookup(
                host.name.as_str(),
                RecordType::Aaaa,
                Status::Secure,
                Outcome::NoData,
            ),
            tlsa: Some(TlsaLookups {
                base: host.name.clone(),
                at_base: Err(owner.clone()),
                unexpanded: None,
            }),
        };
        let c = host_state(&host, &n("example.test"), true, &lookups);
        assert!(
            matches!(&c.dane, DaneState::NotApplicable { reason } if reason.contains("255 octets")),
            "{:?}",
            c.dane
        );
        assert_eq!(
            (c.tlsa_name, c.tlsa_dnssec, c.addresses.len()),
            (None, None, 1)
        );
        // At a CNAME-expanded base, it is nothing there: the unexpanded name is tried.
        let short = n("mx.example.test");
        let at_long = Err(owner);
        assert_eq!(
            try_unexpanded(&short, &long_name(), &at_long),
            Some(short.clone())
        );
        assert_eq!(try_unexpanded(&long_name(), &long_name(), &at_long), None);
    }

    #[test]
    fn hosts_beyond_the_limit_are_dropped_and_counted() {
        let l = mx(
            Status::Secure,
            &[
                (30, "c.test"),
                (10, "a.test"),
                (20, "b.test"),
                (40, "d.test"),
            ],
        );
        let HostsStep::Hosts { mut hosts, .. } = mx_step(&n("example.test"), 25, &l, &mut keep)
        else {
            panic!()
        };
        assert_eq!(limit_hosts(&mut hosts, 2), 2);
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a.test", "b.test"], "the most preferred are kept");
        assert_eq!(limit_hosts(&mut hosts, 10), 0);
        assert_eq!(limit_hosts(&mut hosts, 0), 1, "at least one host is kept");
        assert_eq!(hosts.len(), 1);
        assert_eq!(Limits::default(), Limits::DEFAULT);
    }

    #[test]
    fn the_unexpanded_lookup_is_used_when_made() {
        let lookups = HostLookups {
            a: addr(
                "mx.example.test",
                Status::Secure,
                v4(),
                vec![link("mx.example.test", "b.test", Status::Secure)],
            ),
            aaaa: lookup(
                "mx.example.test",
                RecordType::Aaaa,
                Status::Secure,
                Outcome::NoData,
            ),
            tlsa: Some(TlsaLookups {
                base: n("b.test"),
                at_base: Ok(lookup(
                    "_25._tcp.b.test",
                    RecordType::Tlsa,
                    Status::Secure,
                    Outcome::NoData,
                )),
                unexpanded: Some(Ok(tlsa_lookup(Status::Secure, vec![EE]))),
            }),
        };
        let c = host_state(&host_ref(), &n("example.test"), true, &lookups);
        assert_eq!(c.tlsa_base, n("mx.example.test"));
        assert_eq!(c.tlsa_name, Some(n("_25._tcp.mx.example.test")));
        assert!(matches!(c.dane, DaneState::Usable { .. }));
    }
}
