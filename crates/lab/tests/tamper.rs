//! Tests of the DNS tampering proxy ([`DnsTamper`]), the validating forwarder that is its
//! reference, the expired signature copies and the wildcard zones. The attacks themselves are
//! tried against danemta in `crates/dns/tests/tampering.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use danemta_lab::dns::{self, QueryOptions, Response, rcode, rtype};
use danemta_lab::tamper::wildcard_zones;
use danemta_lab::{
    DnsTamper, ExpiredSignatures, Lab, Rule, Signing, Tampering, Target, ZoneSpec, fake_digest,
};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// The wildcard zones, a small NSEC zone, an insecure zone, and expired signature copies.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
    let lab = LAB.get_or_init(|| {
        Lab::builder()
            .zones(wildcard_zones())
            .zone(ZoneSpec::secure(
                "tamper.test",
                format!(
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A 127.0.20.1\nmx2 A 127.0.20.2\n\
                     _25._tcp.mx1 TLSA 3 1 1 {}\n",
                    fake_digest("3:mx1.tamper.test")
                ),
            ))
            .zone(ZoneSpec::new(
                "plain.test",
                "@ MX 10 mx1\nmx1 A 127.0.20.9\n",
                Signing::Unsigned,
            ))
            .expired_signature_copies(true)
            .start()
            .map_err(|e| e.to_string())
    });
    match lab {
        Ok(lab) => lab,
        Err(e) => panic!("the DNSSEC lab did not start: {e}"),
    }
}

fn ask(server: SocketAddr, name: &str, qtype: u16, options: QueryOptions) -> Response {
    dns::query(server, name, qtype, options).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn untouched_answers_are_relayed_as_they_are() {
    let lab = lab();
    // A rule for another name: nothing fires.
    let tamper = lab
        .dns_tamper([Rule::new(
            Target::exact("no-such-name.tamper.test", &[rtype::A]),
            Tampering::StripRrsigs,
        )])
        .unwrap();
    for (name, qtype) in [("tamper.test", rtype::MX), ("mx1.tamper.test", rtype::TXT)] {
        let direct = ask(
            lab.plain_resolver(),
            name,
            qtype,
            QueryOptions::recursive_dnssec(),
        );
        let relayed = ask(tamper.addr(), name, qtype, QueryOptions::recursive_dnssec());
        assert_eq!(relayed.rcode, direct.rcode, "{}", relayed.summary());
        assert_eq!(relayed.answers.len(), direct.answers.len());
        assert_eq!(relayed.authorities.len(), direct.authorities.len());
        assert!(relayed.has_rrsig_for(qtype) || qtype == rtype::TXT);
    }
    assert!(tamper.queries() >= 2);
    assert_eq!(
        (tamper.matched(), tamper.fired()),
        (0, 0),
        "{}",
        tamper.log()
    );

    // And a validating Unbound through it validates everything.
    let unbound = lab.validating_forwarder(tamper.addr()).unwrap();
    let r = ask(
        unbound.addr(),
        "_25._tcp.mx1.tamper.test",
        rtype::TLSA,
        QueryOptions::recursive(),
    );
    assert!(
        r.rcode == rcode::NOERROR && r.authentic_data && r.has_answer(rtype::TLSA),
        "{}\n{}",
        r.summary(),
        unbound.log()
    );
}

#[test]
fn a_forged_nodata_fires_and_the_reference_refuses_it() {
    let lab = lab();
    let tamper = lab
        .dns_tamper([Rule::new(
            Target::exact("_25._tcp.mx1.tamper.test", &[rtype::TLSA]),
            Tampering::ForgedNoDataForeignSoa {
                soa_zone: "plain.test".into(),
            },
        )])
        .unwrap();
    // What the attacker sends.
    let r = ask(
        tamper.addr(),
        "_25._tcp.mx1.tamper.test",
        rtype::TLSA,
        QueryOptions::recursive_dnssec(),
    );
    assert_eq!(r.rcode, rcode::NOERROR);
    assert!(r.answers.is_empty(), "{}", r.summary());
    assert_eq!(r.authorities.len(), 1, "{}", r.summary());
    assert_eq!(
        (r.authorities[0].name.as_str(), r.authorities[0].rtype),
        ("plain.test.", rtype::SOA)
    );
    assert_eq!(tamper.fired(), 1, "{}", tamper.log());
    assert!(tamper.log().contains("forged-nodata-foreign-soa"));

    // The reference: a fresh validating Unbound forwarding through the proxy.
    let unbound = lab.validating_forwarder(tamper.addr()).unwrap();
    let r = ask(
        unbound.addr(),
        "_25._tcp.mx1.tamper.test",
        rtype::TLSA,
        QueryOptions::recursive(),
    );
    assert_eq!(r.rcode, rcode::SERVFAIL, "{}", r.summary());
    assert!(tamper.fired() > 1);
    // Other names of the zone are untouched.
    let r = ask(
        unbound.addr(),
        "tamper.test",
        rtype::MX,
        QueryOptions::recursive(),
    );
    assert!(
        r.rcode == rcode::NOERROR && r.authentic_data,
        "{}",
        r.summary()
    );
}

#[test]
fn forwarders_are_fresh_and_stop_when_dropped() {
    let lab = lab();
    let tamper = lab.dns_tamper([]).unwrap();
    let a = lab.validating_forwarder(tamper.addr()).unwrap();
    let b = lab.validating_forwarder(tamper.addr()).unwrap();
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.addr(), tamper.addr());
    let addr = a.addr();
    drop(a);
    let gone = dns::query(
        addr,
        "localhost.",
        rtype::A,
        QueryOptions::recursive().with_timeout(Duration::from_millis(300)),
    );
    assert!(gone.is_err(), "{gone:?}");
    assert_eq!(
        ask(b.addr(), "localhost.", rtype::A, QueryOptions::recursive()).rcode,
        rcode::NOERROR
    );
}

/// A raw query without EDNS (so the client's UDP limit is 512 bytes).
fn raw_query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.metadata.recursion_desired = true;
    m.to_vec().unwrap()
}

#[test]
fn an_answer_over_the_udp_limit_is_truncated_and_served_over_tcp() {
    let lab = lab();
    // An NSEC3 NXDOMAIN proof (three NSEC3 records and RRSIGs) is over 512 bytes.
    let tamper = lab
        .dns_tamper([Rule::new(
            Target::exact("tamper.test", &[rtype::MX]),
            Tampering::ForeignNsecProof {
                source: "no-such-name.wild3.test".into(),
                source_type: rtype::MX,
            },
        )])
        .unwrap();
    let query = raw_query("tamper.test.", RecordType::MX);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&query, tamper.addr()).unwrap();
    let mut buf = [0u8; 4096];
    let n = udp.recv(&mut buf).unwrap();
    assert!(n <= 512, "{n} bytes over UDP");
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert!(reply.metadata.truncation, "{reply:?}");
    assert!(reply.answers.is_empty() && reply.authorities.is_empty());

    let mut tcp = TcpStream::connect(tamper.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    tcp.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut reply).unwrap();
    assert!(reply.len() > 512);
    let reply = Message::from_vec(&reply).unwrap();
    assert!(!reply.metadata.truncation);
    assert_eq!(
        reply.metadata.response_code.to_string(),
        "Non-Existent Domain"
    );
    let nsec3 = reply
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::NSEC3)
        .count();
    assert!(nsec3 >= 2, "{reply:?}");
    assert_eq!(tamper.fired(), 2, "{}", tamper.log());
    assert!(tamper.log().contains("sent truncated"), "{}", tamper.log());
}

#[test]
fn a_proxy_can_listen_on_a_claimed_peer_address_or_a_given_port() {
    let lab = lab();
    let claimed = DnsTamper::start(
        "0.0.0.0:0".parse().unwrap(),
        lab.plain_resolver(),
        Vec::<Rule>::new(),
    )
    .unwrap();
    assert_eq!(claimed.addr().port(), 53);
    assert!(claimed.addr().ip().is_loopback());
    let any_port = DnsTamper::start(
        "127.0.0.1:0".parse().unwrap(),
        lab.plain_resolver(),
        [Rule::new(
            Target::subtree("tamper.test", &[rtype::A]),
            Tampering::WithAdBit(Box::new(Tampering::StripRrsigs)),
        )],
    )
    .unwrap();
    assert_ne!(any_port.addr().port(), 0);
    let r = ask(
        any_port.addr(),
        "mx1.tamper.test",
        rtype::A,
        QueryOptions::recursive_dnssec(),
    );
    assert!(r.has_answer(rtype::A) && !r.has_rrsig_for(rtype::A));
    assert!(r.authentic_data, "the AD bit is forged: {}", r.summary());
    assert_eq!(any_port.fired(), 1);
    // Bad names are refused at start.
    let bad = DnsTamper::start(
        "127.0.0.1:0".parse().unwrap(),
        lab.plain_resolver(),
        [Rule::new(
            Target::exact("a..b", &[rtype::A]),
            Tampering::StripRrsigs,
        )],
    );
    assert!(bad.is_err());
}

#[test]
fn expired_signature_copies_cover_the_signed_rrsets_and_are_refused() {
    let lab = lab();
    assert!(lab.expired_zone_file("tamper.test").is_some());
    assert!(lab.expired_zone_file("plain.test").is_none(), "unsigned");
    let expired = ExpiredSignatures::from_lab(lab).unwrap();
    for (owner, qtype) in [
        ("tamper.test", rtype::MX),
        ("tamper.test", rtype::DNSKEY),
        ("tamper.test", rtype::DS), // in test.
        ("_25._tcp.mx1.tamper.test", rtype::TLSA),
        ("mx1.wild3.test", rtype::A),
        (".", rtype::DNSKEY),
    ] {
        assert!(
            expired.covers(owner, qtype),
            "{owner} {}",
            rtype::name(qtype)
        );
    }
    assert!(!expired.covers("mx1.plain.test", rtype::A));

    // The genuine zone still validates; the replayed old signatures do not.
    let tamper = lab
        .dns_tamper([Rule::new(
            Target::exact("tamper.test", &[rtype::MX]),
            Tampering::ExpiredSignatures(Arc::new(expired)),
        )])
        .unwrap();
    let unbound = lab.validating_forwarder(tamper.addr()).unwrap();
    let r = ask(
        unbound.addr(),
        "tamper.test",
        rtype::MX,
        QueryOptions::recursive(),
    );
    assert_eq!(r.rcode, rcode::SERVFAIL, "{}", r.summary());
    assert!(tamper.fired() > 0, "{}", tamper.log());
    let r = ask(
        lab.validating_resolver(),
        "tamper.test",
        rtype::MX,
        QueryOptions::recursive(),
    );
    assert!(
        r.rcode == rcode::NOERROR && r.authentic_data,
        "{}",
        r.summary()
    );
}

#[test]
fn a_lab_without_expired_copies_has_none() {
    let lab = danemta_lab::shared().expect("shared lab");
    assert!(lab.expired_zone_file("secure.test").is_none());
    assert!(ExpiredSignatures::from_lab(lab).is_err());
}

#[test]
fn wildcard_zones_answer_as_documented() {
    let lab = lab();
    for zone in ["wild.test", "wild3.test"] {
        let k = if zone == "wild.test" { 18 } else { 19 };
        // Expansions: secure, signed with fewer labels than the owner.
        for (name, qtype) in [
            (format!("x.mail.{zone}"), rtype::MX),
            (format!("a.hosts.{zone}"), rtype::A),
            (format!("_25._tcp.mx2.{zone}"), rtype::TLSA),
            (format!("_99._tcp.mx1.{zone}"), rtype::TLSA),
        ] {
            let v = ask(
                lab.validating_resolver(),
                &name,
                qtype,
                QueryOptions::recursive(),
            );
            assert!(
                v.rcode == rcode::NOERROR && v.authentic_data && v.has_answer(qtype),
                "{name}: {}",
                v.summary()
            );
            let p = ask(
                lab.plain_resolver(),
                &name,
                qtype,
                QueryOptions::recursive_dnssec(),
            );
            let sig = p
                .answers
                .iter()
                .find(|r| r.covered_type() == Some(qtype))
                .unwrap_or_else(|| panic!("{name}: {}", p.summary()));
            let owner_labels = name.trim_end_matches('.').split('.').count();
            assert!(
                usize::from(sig.rdata[3]) < owner_labels,
                "{name}: no expansion"
            );
            assert!(
                p.authorities
                    .iter()
                    .any(|r| r.rtype == rtype::NSEC || r.rtype == rtype::NSEC3),
                "{name}: no proof: {}",
                p.summary()
            );
        }
        // Names with their own data.
        let r = ask(
            lab.validating_resolver(),
            &format!("exact.hosts.{zone}"),
            rtype::A,
            QueryOptions::recursive(),
        );
        let a: Vec<_> = r.answers_of(rtype::A).filter_map(|r| r.address()).collect();
        assert_eq!(a, [std::net::IpAddr::from([127, 0, k, 10])]);
        let r = ask(
            lab.validating_resolver(),
            &format!("a.hosts.{zone}"),
            rtype::A,
            QueryOptions::recursive(),
        );
        let a: Vec<_> = r.answers_of(rtype::A).filter_map(|r| r.address()).collect();
        assert_eq!(a, [std::net::IpAddr::from([127, 0, k, 9])]);
    }
}
