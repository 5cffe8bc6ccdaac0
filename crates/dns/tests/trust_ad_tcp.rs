//! The `trust-ad` back-end over TCP (RFC 7766 §5): an answer larger than the UDP payload
//! size comes back truncated, and the back-end must ask again over TCP and get it whole.
//!
//! Against the DNSSEC lab: a signed zone whose TLSA RRset (three `3 0 0` records, each a full
//! RSA certificate) is well over 1,232 octets. And against a small fake resolver that answers
//! one question per TCP connection and then hangs up, as resolvers closing idle connections
//! do (RFC 7766 §6.2.3): the connection must be opened again, not reported as a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use danemta_lab::pki::TestCert;
use danemta_lab::{Lab, ZoneSpec};
use dns::route::DaneState;
use dns::{
    Backend, DnsName, NextHop, Outcome, RecordType, Resolver, ResolverSpec, Route, Status, TrustAd,
};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
use hickory_proto::rr::{RData, Record as HRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

/// A lab with `big-tlsa.test`: one MX host whose TLSA RRset holds three full RSA certificates.
fn big_lab() -> (Lab, usize) {
    let certs: Vec<TestCert> = (0..3)
        .map(|i| TestCert::self_signed_rsa(&[&format!("k{i}.big-tlsa.test")]).unwrap())
        .collect();
    let size: usize = certs.iter().map(|c| c.leaf_der.len()).sum();
    assert!(size > 1232, "the RRset must not fit in one UDP answer");
    let mut zone = String::from("@ MX 10 mx\nmx A 192.0.2.25\n");
    for c in &certs {
        zone.push_str(&format!("_25._tcp.mx TLSA 3 0 0 {}\n", hex(&c.leaf_der)));
    }
    let lab = Lab::builder()
        .zone(ZoneSpec::secure("big-tlsa.test", zone))
        .start()
        .expect("the DNSSEC lab did not start");
    (lab, certs.len())
}

#[tokio::test]
async fn an_rrset_over_the_udp_size_comes_back_secure_over_tcp() {
    let (lab, count) = big_lab();
    let backend = TrustAd::new(lab.validating_resolver(), TIMEOUT);
    // Twice: the second question goes over the connection the first one opened.
    for _ in 0..2 {
        let tlsa = backend
            .lookup(&n("_25._tcp.mx.big-tlsa.test"), RecordType::Tlsa)
            .await;
        let (status, records) = (tlsa.status(), tlsa.records_if(Status::ANY).unwrap());
        assert_eq!(status, Status::Secure, "{tlsa:?}");
        assert_eq!(records.len(), count, "{tlsa:?}");
    }

    // The whole route: the host is DANE-usable with every record, not indeterminate.
    let backend = Backend::open(
        &ResolverSpec::TrustAd(lab.validating_resolver()),
        None,
        TIMEOUT,
    )
    .await
    .expect("trust-ad back-end");
    let hop = NextHop::Domain {
        domain: n("big-tlsa.test"),
        port: 25,
    };
    let route = dns::discover(&backend, &hop).await;
    let Route::Deliver { candidates, .. } = &route else {
        panic!("{route:?}")
    };
    match &candidates[0].dane {
        DaneState::Usable { records } => assert_eq!(records.len(), count),
        other => panic!("{other:?}"),
    }
}

/// A resolver on loopback: every UDP answer is truncated (TC, no records); over TCP it answers
/// one question with a secure (AD) TLSA record, then closes the connection. Returns its
/// address and the count of TCP connections accepted.
async fn hanging_up_resolver() -> (SocketAddr, Arc<AtomicUsize>) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let reply = |query: &Message, truncated: bool| {
        let mut reply = query.clone();
        reply.metadata.message_type = MessageType::Response;
        reply.metadata.response_code = ResponseCode::NoError;
        reply.metadata.recursion_available = true;
        if truncated {
            reply.metadata.truncation = true;
        } else {
            reply.metadata.authentic_data = true;
            if let Some(q) = query.queries.first() {
                let tlsa = TLSA::new(
                    CertUsage::DaneEe,
                    Selector::Spki,
                    Matching::Sha256,
                    vec![7; 32],
                );
                reply.answers.push(HRecord::from_rdata(
                    q.name().clone(),
                    300,
                    RData::TLSA(tlsa),
                ));
            }
        }
        reply.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            if let Ok(query) = Message::from_vec(&buf[..len]) {
                let _ = udp.send_to(&reply(&query, true), peer).await;
            }
        }
    });
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Ok(query) = Message::from_vec(&query) else {
                    return;
                };
                let answer = reply(&query, false);
                let mut framed = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                let _ = stream.write_all(&framed).await;
                // Hang up, as a resolver closing an idle connection does.
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_tcp_connection_the_resolver_closed_is_opened_again() {
    let (addr, accepted) = hanging_up_resolver().await;
    let backend = TrustAd::new(addr, TIMEOUT);
    for i in 0..3 {
        let tlsa = backend
            .lookup(&n("_25._tcp.mx.example.test"), RecordType::Tlsa)
            .await;
        assert_eq!(tlsa.status(), Status::Secure, "question {i}: {tlsa:?}");
        assert!(
            matches!(tlsa.require(Status::ANY).unwrap(), Outcome::Records(r) if r.len() == 1),
            "{tlsa:?}"
        );
        // Give the closed connection's end time to be noticed, as between two deliveries.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 3);
}
