//! What one DNS lookup returns: records or a denial or a failure, always with its DNSSEC
//! status and the CNAME links followed on the way.

use std::net::IpAddr;

use dane::Tlsa;
use serde::Serialize;

use crate::name::DnsName;
use crate::status::Status;

/// The record types the route layer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    /// IPv4 address (RFC 1035 §3.4.1).
    A,
    /// IPv6 address (RFC 3596).
    Aaaa,
    /// Mail exchanger (RFC 5321 §5.1).
    Mx,
    /// Service locator (RFC 2782), for RFC 6186 submission.
    Srv,
    /// TLSA (RFC 6698 §2), asked at `_PORT._tcp.BASE` (RFC 6698 §3, RFC 7672 §2.2.2).
    Tlsa,
    /// DNSKEY, for resolver self-tests.
    Dnskey,
    /// CNAME itself, to learn one alias's own status.
    Cname,
    /// Name servers of a zone.
    Ns,
    /// Text (RFC 1035 §3.3.14), for MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3).
    Txt,
}

/// A mail exchanger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange host; the root for a null MX (RFC 7505).
    pub exchange: DnsName,
}

/// A service location (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Load-balancing weight among equal priorities.
    pub weight: u16,
    /// The TCP port.
    pub port: u16,
    /// The target host; the root means "no service" (RFC 2782).
    pub target: DnsName,
}

/// One record of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Record {
    /// An A or AAAA record: the host's address.
    Address(IpAddr),
    /// An MX record (RFC 1035 §3.3.9, RFC 5321 §5.1).
    Mx(Mx),
    /// An SRV record (RFC 2782).
    Srv(Srv),
    /// NS: a name server of the zone.
    Ns(DnsName),
    /// A TLSA record that parsed.
    Tlsa(Tlsa),
    /// A TLSA record whose RDATA is malformed (RFC 7671 §4: unusable, never fatal).
    MalformedTlsa(String),
    /// A TXT record: its character-strings joined in order (RFC 7208 §3.3 and RFC 8461
    /// §3.1 read a record that way).
    Txt(Vec<u8>),
    /// Any other type that was asked for (e.g. DNSKEY); only counted.
    Other,
}

/// How a lookup ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// The name has records of the type asked for.
    Records(Vec<Record>),
    /// The name exists but has no records of that type.
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// No usable answer: the status is then bogus or indeterminate.
    Failed(Failure),
}

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "failure", content = "detail", rename_all = "kebab-case")]
pub enum Failure {
    /// The data did not validate.
    #[error("DNSSEC validation failed: {0}")]
    Bogus(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The server answered SERVFAIL (for a validating resolver: bogus or unreachable data).
    #[error("server failure (SERVFAIL)")]
    ServFail,
    /// The server refused the query.
    #[error("query refused")]
    Refused,
    /// A reply that cannot be parsed, or is not an answer to our question.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The upstream resolver does not return DNSSEC records, so nothing can be validated.
    #[error("upstream resolver does not support DNSSEC (no RRSIG records returned)")]
    NoDnssec,
    /// Anything else on the network path.
    #[error("network error: {0}")]
    Network(String),
}

/// One CNAME link followed while answering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CnameLink {
    /// The alias (the owner of the CNAME record).
    pub from: DnsName,
    /// Its target (RFC 1034 §3.6.2).
    pub to: DnsName,
    /// The DNSSEC status of this link: the TLSA base domain follows a CNAME only when every
    /// link is secure (RFC 7672 §2.2.2).
    pub status: Status,
}

/// The result of looking up `name`/`rtype`.
///
/// The records cannot be had without naming the statuses accepted: [`Lookup::require`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookup {
    name: DnsName,
    rtype: RecordType,
    status: Status,
    outcome: Outcome,
    cnames: Vec<CnameLink>,
    ttl: u32,
}

impl Lookup {
    /// A lookup result. `status` is that of the final answer; it is combined with every CNAME
    /// link's status, so a chain is only as secure as its weakest link.
    ///
    /// Only the back-ends of this crate make lookups: a status is a verdict, never an input.
    /// Other crates' tests build them with [`testing`] (feature `testing`).
    pub(crate) fn new(
        name: DnsName,
        rtype: RecordType,
        status: Status,
        outcome: Outcome,
        cnames: Vec<CnameLink>,
        ttl: u32,
    ) -> Self {
        let status = cnames.iter().fold(status, |s, l| s.and(l.status));
        let status = match &outcome {
            Outcome::Failed(
                Failure::Timeout
                | Failure::Network(_)
                | Failure::ServFail
                | Failure::Refused
                | Failure::NoDnssec,
            ) => status.and(Status::Indeterminate),
            Outcome::Failed(_) => status.and(Status::Bogus),
            _ => status,
        };
        Self {
            name,
            rtype,
            status,
            outcome,
            cnames,
            ttl,
        }
    }

    /// A failed lookup.
    pub(crate) fn failed(name: DnsName, rtype: RecordType, failure: Failure) -> Self {
        Self::new(
            name,
            rtype,
            Status::Indeterminate,
            Outcome::Failed(failure),
            Vec::new(),
            0,
        )
    }

    /// The outcome, if the lookup's status is one of `accept` (e.g. [`Status::USABLE`]);
    /// else the status it has. Every read of the data names the statuses it accepts, so that
    /// bogus data or an unproved denial cannot be used by mistake (as hickory's
    /// `Proven::require`).
    pub fn require(&self, accept: &[Status]) -> Result<&Outcome, Status> {
        if accept.contains(&self.status) {
            Ok(&self.outcome)
        } else {
            Err(self.status)
        }
    }

    /// The records (none for a denial), if the status is one of `accept`.
    pub fn records_if(&self, accept: &[Status]) -> Result<&[Record], Status> {
        self.require(accept).map(|outcome| match outcome {
            Outcome::Records(records) => records.as_slice(),
            _ => &[],
        })
    }

    /// The outcome whatever the status, for code in this crate that passes a lookup on
    /// without using its data (e.g. into a longer CNAME chain, whose status it keeps).
    pub(crate) fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Why the lookup failed, if it did (no data to misuse here).
    pub fn failure(&self) -> Option<&Failure> {
        match &self.outcome {
            Outcome::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// The status alone.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The name asked for.
    pub fn name(&self) -> &DnsName {
        &self.name
    }

    /// The type asked for.
    pub fn rtype(&self) -> RecordType {
        self.rtype
    }

    /// The CNAME links followed, in order.
    pub fn cnames(&self) -> &[CnameLink] {
        &self.cnames
    }

    /// The name the answer is for: the end of the CNAME chain, or the name asked for.
    pub fn final_name(&self) -> &DnsName {
        self.cnames.last().map_or(&self.name, |l| &l.to)
    }

    /// Seconds the answer may be cached.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }
}

/// Lookup results for other crates' tests, which need routes and reports with chosen
/// statuses (feature `testing`; never in a build that resolves for real).
#[cfg(feature = "testing")]
pub mod testing {
    use super::*;

    /// A lookup of `name`/`rtype` with the given status and outcome (see `Lookup::new`).
    pub fn lookup(
        name: DnsName,
        rtype: RecordType,
        status: Status,
        outcome: Outcome,
        cnames: Vec<CnameLink>,
        ttl: u32,
    ) -> Lookup {
        Lookup::new(name, rtype, status, outcome, cnames, ttl)
    }

    /// A failed lookup.
    pub fn failed(name: DnsName, rtype: RecordType, failure: Failure) -> Lookup {
        Lookup::failed(name, rtype, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    #[test]
    fn a_cname_chain_is_as_secure_as_its_weakest_link() {
        let l = Lookup::new(
            n("a.example"),
            RecordType::A,
            Status::Secure,
            Outcome::NoData,
            vec![CnameLink {
                from: n("a.example"),
                to: n("b.example"),
                status: Status::Insecure,
            }],
            60,
        );
        assert_eq!(l.status(), Status::Insecure);
        assert_eq!(l.final_name(), &n("b.example"));
    }

    #[test]
    fn failures_never_read_as_secure() {
        let l = Lookup::failed(n("a.example"), RecordType::Tlsa, Failure::Timeout);
        assert_eq!(l.status(), Status::Indeterminate);
        let l = Lookup::new(
            n("a.example"),
            RecordType::Tlsa,
            Status::Secure,
            Outcome::Failed(Failure::Bogus("x".into())),
            vec![],
            0,
        );
        assert_eq!(l.status(), Status::Bogus);
        assert!(l.records_if(Status::ANY).unwrap().is_empty());
    }
}
