//! Upstream resolvers that misbehave: garbage, cut-off answers, SERVFAIL, and one that strips
//! DNSSEC signatures. Every lookup must end with a clear status, never a panic, never
//! "secure" and never "insecure" (which would turn DANE off).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dns::doctor::{Level, probe};
use dns::{Backend, DnsName, Failure, Outcome, RecordType, Resolver, ResolverSpec, Status};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType as HType;
use tokio::net::UdpSocket;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Bytes that are not a DNS message.
    Garbage,
    /// The first 12 bytes of a header, nothing more.
    CutOff,
    /// A well-formed SERVFAIL.
    ServFail,
    /// Forwards to a real resolver and removes every RRSIG from the answer.
    StripSignatures(SocketAddr),
    /// Forwards to a real resolver, but never answers DS queries (a key fetch that times out
    /// in the middle of validation).
    DropKeyQueries(SocketAddr),
}

/// Serves `fault` on a fresh loopback port until the test ends.
async fn faulty(fault: Fault) -> SocketAddr {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let query = buf[..len].to_vec();
            let reply = match fault {
                Fault::Garbage => b"\xff\x00this is not DNS".to_vec(),
                Fault::CutOff => query[..12.min(query.len())].to_vec(),
                Fault::ServFail => {
                    let Ok(mut m) = Message::from_vec(&query) else {
                        continue;
                    };
                    m.metadata.message_type = hickory_proto::op::MessageType::Response;
                    m.metadata.response_code = ResponseCode::ServFail;
                    m.to_vec().unwrap()
                }
                Fault::DropKeyQueries(upstream) => {
                    let Ok(m) = Message::from_vec(&query) else {
                        continue;
                    };
                    if m.queries
                        .iter()
                        .any(|q| matches!(q.query_type(), HType::DS))
                    {
                        continue;
                    }
                    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    relay.send_to(&query, upstream).await.unwrap();
                    let mut answer = vec![0u8; 65535];
                    let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), relay.recv(&mut answer)).await
                    else {
                        continue;
                    };
                    answer[..n].to_vec()
                }
                Fault::StripSignatures(upstream) => {
                    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    relay.send_to(&query, upstream).await.unwrap();
                    let mut answer = vec![0u8; 65535];
                    let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), relay.recv(&mut answer)).await
                    else {
                        continue;
                    };
                    let Ok(mut m) = Message::from_vec(&answer[..n]) else {
                        continue;
                    };
                    for section in [&mut m.answers, &mut m.authorities, &mut m.additionals] {
                        section.retain(|r| r.record_type() != HType::RRSIG);
                    }
                    m.to_vec().unwrap()
                }
            };
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

async fn both(upstream: SocketAddr, anchors: Option<&std::path::Path>) -> Vec<Backend> {
    let timeout = Duration::from_millis(400);
    vec![
        Backend::open(&ResolverSpec::Validating(Some(upstream)), anchors, timeout)
            .await
            .unwrap(),
        Backend::open(&ResolverSpec::TrustAd(upstream), None, timeout)
            .await
            .unwrap(),
    ]
}

#[tokio::test]
async fn garbage_cut_off_answers_and_servfail_are_indeterminate() {
    for fault in [Fault::Garbage, Fault::CutOff, Fault::ServFail] {
        let upstream = faulty(fault).await;
        for backend in both(upstream, None).await {
            for rtype in [RecordType::Mx, RecordType::Tlsa, RecordType::A] {
                let l = backend.lookup(&n("example.test"), rtype).await;
                assert_eq!(
                    l.status(),
                    Status::Indeterminate,
                    "{fault:?} {rtype:?}: {l:?}"
                );
                assert!(
                    matches!(l.require(Status::ANY).unwrap(), Outcome::Failed(_)),
                    "{fault:?}: {l:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_that_strips_signatures_is_named_as_the_cause() {
    let lab = danemta_lab::shared().unwrap_or_else(|e| panic!("lab: {e}"));
    let upstream = faulty(Fault::StripSignatures(lab.plain_resolver())).await;
    let spec = ResolverSpec::Validating(Some(upstream));
    let backend = Backend::open(&spec, Some(lab.trust_anchor_file()), Duration::from_secs(2))
        .await
        .unwrap();
    let l = backend.lookup(&n("secure.test"), RecordType::Mx).await;
    // Indeterminate, not bogus: the zone is fine, the path to it cannot be validated.
    assert_eq!(
        (l.status(), l.require(Status::ANY).unwrap()),
        (Status::Indeterminate, &Outcome::Failed(Failure::NoDnssec)),
        "{l:?}"
    );
    // Without signatures even an insecure delegation cannot be proven (its NSEC proof is
    // signed): it must not read as insecure either, which would switch DANE off.
    let l = backend.lookup(&n("insecure.test"), RecordType::Mx).await;
    assert_eq!(
        (l.status(), l.require(Status::ANY).unwrap()),
        (Status::Indeterminate, &Outcome::Failed(Failure::NoDnssec)),
        "{l:?}"
    );
    // doctor says what is wrong.
    let checks = probe(&backend, &spec, &n("secure.test")).await;
    let upstream_check = checks
        .iter()
        .find(|c| c.check == "upstream-dnssec")
        .unwrap();
    assert_eq!(upstream_check.level, Level::Fail);
    assert!(
        upstream_check
            .detail
            .contains("does not return DNSSEC signatures")
    );
}

#[tokio::test]
async fn a_key_fetch_that_times_out_is_indeterminate_not_bogus() {
    // hickory reports a failed DNSKEY/DS fetch as bogus (hickory-dns#3932); the validating
    // back-end must re-check and call it indeterminate: a network hiccup is not an attack.
    let lab = danemta_lab::shared().unwrap_or_else(|e| panic!("lab: {e}"));
    let upstream = faulty(Fault::DropKeyQueries(lab.plain_resolver())).await;
    let backend = Backend::open(
        &ResolverSpec::Validating(Some(upstream)),
        Some(lab.trust_anchor_file()),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let l = backend.lookup(&n("secure.test"), RecordType::Mx).await;
    assert_eq!(l.status(), Status::Indeterminate, "{l:?}");
    // Reached through the re-check (hickory itself says bogus here).
    assert!(
        matches!(
            l.require(Status::ANY).unwrap(),
            Outcome::Failed(Failure::Network(_))
        ),
        "{l:?}"
    );
}
