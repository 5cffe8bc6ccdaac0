//! Comparing a zone's authoritative servers over the wire: two small UDP DNS servers on
//! loopback publish different TLSA RRsets, and the report says so (`ns-disagree`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use check::report::ns_findings;
use dns::authoritative::ask_all;
use dns::{DnsName, Lookup, Outcome, Record, RecordType, Resolver, Status};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
use hickory_proto::rr::{RData, Record as HRecord};

/// Answers the NS and address lookups `ask_all` needs: zone `disagree.test` served by
/// ns1/ns2 at the given addresses.
struct Zone {
    ns1: IpAddr,
    ns2: IpAddr,
}

impl Resolver for Zone {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        let n = |s: &str| s.parse::<DnsName>().unwrap();
        let records = match (name.as_str(), rtype) {
            ("disagree.test", RecordType::Ns) => vec![
                Record::Ns(n("ns1.disagree.test")),
                Record::Ns(n("ns2.disagree.test")),
            ],
            ("ns1.disagree.test", RecordType::A) => vec![Record::Address(self.ns1)],
            ("ns2.disagree.test", RecordType::A) => vec![Record::Address(self.ns2)],
            _ => {
                return dns::testing::lookup(
                    name.clone(),
                    rtype,
                    Status::Secure,
                    Outcome::NxDomain,
                    vec![],
                    60,
                );
            }
        };
        dns::testing::lookup(
            name.clone(),
            rtype,
            Status::Secure,
            Outcome::Records(records),
            vec![],
            60,
        )
    }
}

/// An authoritative server on `addr`:53 answering every TLSA question with one record whose
/// data is `fill` repeated. Runs until the process ends.
fn server(addr: IpAddr, fill: u8) {
    let socket =
        UdpSocket::bind(SocketAddr::new(addr, 53)).expect("bind port 53 (the tests run as root)");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut reply = query.clone();
            reply.metadata.message_type = MessageType::Response;
            reply.metadata.authoritative = true;
            reply.metadata.response_code = ResponseCode::NoError;
            if let Some(q) = query.queries.first() {
                let tlsa = TLSA::new(
                    CertUsage::DaneEe,
                    Selector::Spki,
                    Matching::Sha256,
                    vec![fill; 32],
                );
                reply.answers.push(HRecord::from_rdata(
                    q.name().clone(),
                    300,
                    RData::TLSA(tlsa),
                ));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer);
            }
        }
    });
}

#[tokio::test]
async fn servers_that_publish_different_rrsets_are_reported() {
    let (ns1, ns2, ns3): (IpAddr, IpAddr, IpAddr) = (
        "127.0.61.1".parse().unwrap(),
        "127.0.61.2".parse().unwrap(),
        "127.0.61.3".parse().unwrap(),
    );
    server(ns1, 1);
    server(ns2, 2);
    server(ns3, 1);
    let owner: DnsName = "_25._tcp.mx.disagree.test".parse().unwrap();

    let answers = ask_all(
        &Zone { ns1, ns2 },
        &owner,
        RecordType::Tlsa,
        Duration::from_secs(2),
    )
    .await;
    let list = answers.as_ref().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|a| a.error.is_none() && a.ttl == Some(300)),
        "{list:?}"
    );
    let findings = ns_findings(&owner, &answers);
    assert_eq!(
        findings.iter().map(|f| f.code).collect::<Vec<_>>(),
        ["ns-disagree"],
        "{findings:?}"
    );

    // Two servers with the same RRset: nothing to report.
    let answers = ask_all(
        &Zone { ns1, ns2: ns3 },
        &owner,
        RecordType::Tlsa,
        Duration::from_secs(2),
    )
    .await;
    assert!(ns_findings(&owner, &answers).is_empty());
}
