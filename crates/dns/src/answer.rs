//! Turning a DNS response into a [`Lookup`]: CNAME chasing within the answer, record
//! conversion, the response code. Shared by both back-ends; each supplies how a record's
//! DNSSEC status is known (the in-process validator's proof, or the upstream's AD bit).

use std::net::IpAddr;

use dane::Tlsa;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record as HRecord, RecordType as HType};

use crate::lookup::{CnameLink, Failure, Lookup, Mx, Outcome, Record, RecordType, Srv};
use crate::name::DnsName;
use crate::status::Status;

/// CNAME links followed within one answer before giving up (RFC 1034 §3.6.2 has no limit;
/// resolvers use 8 to 16).
const MAX_CNAMES: usize = 16;

impl RecordType {
    /// The hickory record type.
    pub(crate) fn to_hickory(self) -> HType {
        match self {
            RecordType::A => HType::A,
            RecordType::Aaaa => HType::AAAA,
            RecordType::Mx => HType::MX,
            RecordType::Srv => HType::SRV,
            RecordType::Tlsa => HType::TLSA,
            RecordType::Dnskey => HType::DNSKEY,
            RecordType::Cname => HType::CNAME,
            RecordType::Ns => HType::NS,
            RecordType::Txt => HType::TXT,
        }
    }
}

/// Our name for a hickory name; `None` for names outside host-name syntax (hickory escapes
/// odd bytes as `\DDD`), which must never be mistaken for anything else — least of all for
/// the root, which as an MX exchange would mean "no mail here" (RFC 7505).
pub(crate) fn dns_name(name: &Name) -> Option<DnsName> {
    if name.is_root() {
        return Some(DnsName::root());
    }
    name.to_ascii().parse().ok()
}

/// The hickory name for ours (fully qualified).
pub(crate) fn hickory_name(name: &DnsName) -> Result<Name, Failure> {
    let text = if name.is_root() {
        ".".to_owned()
    } else {
        format!("{}.", name.as_str())
    };
    Name::from_ascii(&text).map_err(|e| Failure::Malformed(format!("name {name}: {e}")))
}

/// One record in our terms. An MX or SRV whose target is not a usable host name becomes
/// [`Record::Other`] and is ignored (a route with none left defers).
fn convert(data: &RData) -> Record {
    match data {
        RData::A(a) => Record::Address(IpAddr::V4(a.0)),
        RData::AAAA(a) => Record::Address(IpAddr::V6(a.0)),
        RData::MX(mx) => dns_name(&mx.exchange).map_or(Record::Other, |exchange| {
            Record::Mx(Mx {
                preference: mx.preference,
                exchange,
            })
        }),
        RData::NS(ns) => dns_name(&ns.0).map_or(Record::Other, Record::Ns),
        RData::SRV(srv) => dns_name(&srv.target).map_or(Record::Other, |target| {
            Record::Srv(Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target,
            })
        }),
        RData::TLSA(t) => {
            let parsed = Tlsa::new(
                u8::from(t.cert_usage).into(),
                u8::from(t.selector).into(),
                u8::from(t.matching).into(),
                t.cert_data.clone(),
            );
            match parsed {
                Ok(t) => Record::Tlsa(t),
                Err(e) => Record::MalformedTlsa(e.to_string()),
            }
        }
        RData::TXT(txt) => Record::Txt(
            txt.txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect(),
        ),
        _ => Record::Other,
    }
}

/// Builds the lookup for `qname`/`qtype` from a response's answer section.
///
/// The CNAME chain is followed from `qname`; each link gets `status_of` its record, the final
/// records the weakest `status_of` among them. When the final name has no records of the
/// type, the response is a denial whose status is `denial_status` (the validating back-end's
/// verdict on the NSEC/NSEC3 proof, see [`crate::dnssec`], or the AD bit).
pub(crate) fn build(
    qname: &DnsName,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: &[HRecord],
    status_of: impl Fn(&HRecord) -> Status,
    denial_status: Status,
) -> Lookup {
    let htype = qtype.to_hickory();
    let Ok(mut current) = hickory_name(qname) else {
        return Lookup::failed(
            qname.clone(),
            qtype,
            Failure::Malformed(format!("bad name {qname}")),
        );
    };
    let mut links = Vec::new();
    let mut ttl = u32::MAX;
    loop {
        let cname = answers.iter().find(|r| {
            r.name == current && r.record_type() == HType::CNAME && htype != HType::CNAME
        });
        let Some(record) = cname else { break };
        let RData::CNAME(target) = &record.data else {
            break;
        };
        if links.len() == MAX_CNAMES {
            return Lookup::failed(
                qname.clone(),
                qtype,
                Failure::Malformed(format!("CNAME chain from {qname} longer than {MAX_CNAMES}")),
            );
        }
        ttl = ttl.min(record.ttl);
        let (Some(from), Some(to)) = (dns_name(&current), dns_name(&target.0)) else {
            return Lookup::failed(
                qname.clone(),
                qtype,
                Failure::Malformed(format!(
                    "CNAME {} -> {} is not a host name",
                    current, target.0
                )),
            );
        };
        links.push(CnameLink {
            from,
            to,
            status: status_of(record),
        });
        current = target.0.clone();
    }
    let data: Vec<&HRecord> = answers
        .iter()
        .filter(|r| r.name == current && r.record_type() == htype)
        .collect();
    let (status, outcome) = if !data.is_empty() {
        ttl = data.iter().fold(ttl, |t, r| t.min(r.ttl));
        let status = data.iter().fold(Status::Secure, |s, r| s.and(status_of(r)));
        (
            status,
            Outcome::Records(data.iter().map(|r| convert(&r.data)).collect()),
        )
    } else {
        match rcode {
            ResponseCode::NoError => (denial_status, Outcome::NoData),
            ResponseCode::NXDomain => (denial_status, Outcome::NxDomain),
            ResponseCode::ServFail => (Status::Indeterminate, Outcome::Failed(Failure::ServFail)),
            ResponseCode::Refused => (Status::Indeterminate, Outcome::Failed(Failure::Refused)),
            other => (
                Status::Indeterminate,
                Outcome::Failed(Failure::Malformed(format!("response code {other}"))),
            ),
        }
    };
    let ttl = if ttl == u32::MAX { 60 } else { ttl };
    Lookup::new(qname.clone(), qtype, status, outcome, links, ttl)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, CNAME, MX};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn rec(owner: &str, data: RData) -> HRecord {
        HRecord::from_rdata(name(owner), 300, data)
    }

    #[test]
    fn follows_cnames_and_keeps_each_link_status() {
        let answers = vec![
            rec("mx.a.test.", RData::CNAME(CNAME(name("mx.b.test.")))),
            rec("mx.b.test.", RData::CNAME(CNAME(name("mx.c.test.")))),
            rec("mx.c.test.", RData::A(A::new(192, 0, 2, 7))),
        ];
        let status_of = |r: &HRecord| {
            if r.name == name("mx.b.test.") {
                Status::Insecure
            } else {
                Status::Secure
            }
        };
        let l = build(
            &"mx.a.test".parse().unwrap(),
            RecordType::A,
            ResponseCode::NoError,
            &answers,
            status_of,
            Status::Secure,
        );
        assert_eq!(l.cnames().len(), 2);
        assert_eq!(l.cnames()[1].status, Status::Insecure);
        assert_eq!(l.final_name().as_str(), "mx.c.test");
        assert_eq!(l.status(), Status::Insecure);
        assert_eq!(
            l.records_if(Status::ANY).unwrap(),
            &[Record::Address("192.0.2.7".parse().unwrap())]
        );
    }

    #[test]
    fn denials_and_failures() {
        let qname = "x.test".parse().unwrap();
        let l = build(
            &qname,
            RecordType::Mx,
            ResponseCode::NXDomain,
            &[],
            |_| Status::Secure,
            Status::Secure,
        );
        assert_eq!(
            (l.status(), l.outcome()),
            (Status::Secure, &Outcome::NxDomain)
        );
        let l = build(
            &qname,
            RecordType::Mx,
            ResponseCode::NoError,
            &[],
            |_| Status::Secure,
            Status::Insecure,
        );
        assert_eq!(
            (l.status(), l.outcome()),
            (Status::Insecure, &Outcome::NoData)
        );
        let l = build(
            &qname,
            RecordType::Mx,
            ResponseCode::ServFail,
            &[],
            |_| Status::Secure,
            Status::Secure,
        );
        assert_eq!(
            (l.status(), l.outcome()),
            (Status::Indeterminate, &Outcome::Failed(Failure::ServFail))
        );
    }

    #[test]
    fn records_of_other_names_are_ignored() {
        let answers = vec![rec(
            "other.test.",
            RData::MX(MX::new(10, name("mx.other.test."))),
        )];
        let l = build(
            &"x.test".parse().unwrap(),
            RecordType::Mx,
            ResponseCode::NoError,
            &answers,
            |_| Status::Secure,
            Status::Secure,
        );
        assert_eq!(l.outcome(), &Outcome::NoData);
    }

    #[test]
    fn an_mx_exchange_that_is_no_host_name_is_never_a_null_mx() {
        let odd = Name::from_labels(vec![b"bad name".to_vec(), b"test".to_vec()]).unwrap();
        let answers = vec![rec("x.test.", RData::MX(MX::new(10, odd)))];
        let qname = "x.test".parse().unwrap();
        let l = build(
            &qname,
            RecordType::Mx,
            ResponseCode::NoError,
            &answers,
            |_| Status::Secure,
            Status::Secure,
        );
        assert_eq!(l.records_if(Status::ANY).unwrap(), &[Record::Other]);
        let step = crate::route::mx_step(&qname, 25, &l, &mut |_| {});
        assert!(
            matches!(step, crate::route::HostsStep::Defer(_)),
            "{step:?}"
        );
    }

    #[test]
    fn cname_loops_end_as_malformed() {
        let answers = vec![
            rec("a.test.", RData::CNAME(CNAME(name("b.test.")))),
            rec("b.test.", RData::CNAME(CNAME(name("a.test.")))),
        ];
        let l = build(
            &"a.test".parse().unwrap(),
            RecordType::A,
            ResponseCode::NoError,
            &answers,
            |_| Status::Secure,
            Status::Secure,
        );
        assert!(matches!(
            l.outcome(),
            Outcome::Failed(Failure::Malformed(_))
        ));
        assert!(l.status().is_failure());
    }
}
