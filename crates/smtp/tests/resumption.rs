//! TLS session resumption (RFC 8446 §2.2 and §4.6.1; RFC 5077 for TLS 1.2) in deliveries,
//! against the crate's own STARTTLS server (rustls, whose in-memory session cache resumes by
//! default), played as an attacker would: a session is resumed only under the key it was made
//! under (host, address, port, SNI, mode and everything the authentication depends on, RFC
//! 7672 §3.1), and a resumed connection is labelled only by the proof of the full handshake
//! that made its session.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dane::Tlsa;
use danemta_lab::pki::{TestCa, TestCert, tlsa_3_1_1};
use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
use smtp::outcome::{Attempt, Failure, Outcome, Rule};
use smtp::reply::Reply;
use smtp::server::tls::SniResolver;
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction};
use smtp::{Config, Envelope, Level, Message, Security, SessionCache, Timeouts};
use tokio::net::TcpListener;

/// Stores every message it is given.
#[derive(Default)]
struct Sink {
    stored: Mutex<usize>,
}

impl Acceptor for Sink {
    async fn rcpt(&self, _: &Client, _: &MailFrom, _: &RcptTo) -> Result<(), Reply> {
        Ok(())
    }

    async fn message(&self, _: &Client, _: &Transaction, _: Vec<u8>) -> Result<QueueId, Reply> {
        let mut n = self.stored.lock().unwrap();
        *n += 1;
        Ok(QueueId(format!("Q{n}")))
    }
}

/// A STARTTLS server presenting `cert` on every address of the loopback network (so that
/// 127.0.0.1 and 127.0.0.2 reach the same server, with one session cache).
struct Lab {
    port: u16,
    sink: Arc<Sink>,
    listener: tokio::task::JoinHandle<()>,
}

impl Lab {
    fn stored(&self) -> usize {
        *self.sink.stored.lock().unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn lab(cert: &TestCert, versions: &[&'static rustls::SupportedProtocolVersion]) -> Lab {
    lab_on(0, cert, versions).await
}

/// [`lab`] on `port` (0: any).
async fn lab_on(
    port: u16,
    cert: &TestCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Lab {
    let resolver = SniResolver::from_pem(
        &[(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())],
        &provider(),
    )
    .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let mut config = smtp::server::Config::new("mx.example.test".parse().unwrap());
    config.timeouts = smtp::server::Timeouts::uniform(Duration::from_secs(5));
    config.tls = Some(Arc::new(tls));
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = Arc::new(Sink::default());
    let server = Server::new(config, sink.clone());
    let listener = tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let _ = server.serve(stream, Some(peer)).await;
            });
        }
    });
    Lab {
        port,
        sink,
        listener,
    }
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tlsa(cert: &TestCert) -> Tlsa {
    tlsa_3_1_1(cert).parse().unwrap()
}

/// One host `name` at `address`:`lab.port`, SNI `base`, with `records` as its usable TLSA
/// RRset (none: not DANE), named by a secure lookup.
fn route(lab: &Lab, name: &str, base: &str, address: IpAddr, records: &[Tlsa]) -> Route {
    let dane = if records.is_empty() {
        DaneState::NotApplicable {
            reason: "no TLSA records".into(),
        }
    } else {
        DaneState::Usable {
            records: records.to_vec(),
        }
    };
    Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![Candidate {
            name: n(name),
            preference: 10,
            port: lab.port,
            tlsa_base: n(base),
            addresses: vec![Address {
                address,
                dnssec: Status::Secure,
            }],
            a_dnssec: Status::Secure,
            aaaa_dnssec: Status::Secure,
            tlsa_name: None,
            tlsa_dnssec: Some(Status::Secure),
            tlsa: records.to_vec(),
            dane,
            reference_names: vec![n(base).reference_name().unwrap()],
            dane_trust: dns::DaneTrust::Verified,
        }],
    }
}

fn config(level: Level, sessions: Option<&Arc<SessionCache>>) -> Config {
    Config {
        helo_name: "client.test".parse().unwrap(),
        level,
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        provider: provider(),
        fingerprints: vec![],
        roots: Arc::new(rustls::RootCertStore::empty()),
        match_names: vec![],
        credentials: None,
        limits: smtp::Limits::default(),
        sessions: sessions.cloned(),
        level_configured: false,
        mta_sts: None,
    }
}

async fn send(route: &Route, cfg: &Config) -> smtp::Delivery {
    let envelope = Envelope::new("a@client.test", ["b@example.test"]).unwrap();
    let message = Message::new(b"Subject: t\n\nhello\n").unwrap();
    smtp::deliver(route, &n("example.test"), true, &envelope, &message, cfg).await
}

/// The one attempt of a delivery.
fn only(d: &smtp::Delivery) -> &Attempt {
    assert_eq!(d.attempts.len(), 1, "{d:#?}");
    &d.attempts[0]
}

fn resumed(a: &Attempt) -> bool {
    a.tls.as_ref().expect("TLS").resumed
}

/// A delivery that went through: its attempt.
async fn delivered(route: &Route, cfg: &Config) -> Attempt {
    let d = send(route, cfg).await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    only(&d).clone()
}

const LOCAL: &str = "127.0.0.1";

/// Test 1: the second delivery under the same TLSA RRset to the same server resumes, and is
/// still `verified` with the record the full handshake matched, for TLS 1.3 and TLS 1.2.
#[tokio::test]
async fn a_dane_session_resumes_with_its_proof() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let cert = TestCert::self_signed(&["mx.example.test"]).unwrap();
        let lab = lab(&cert, &[version]).await;
        let cache = Arc::new(SessionCache::default());
        let cfg = config(Level::Dane, Some(&cache));
        let r = route(
            &lab,
            "mx.example.test",
            "mx.example.test",
            ip(LOCAL),
            &[tlsa(&cert)],
        );
        let first = delivered(&r, &cfg).await;
        assert!(!resumed(&first), "{first:#?}");
        for _ in 0..2 {
            let again = delivered(&r, &cfg).await;
            assert!(resumed(&again), "{version:?}: {again:#?}");
            assert_eq!(again.security, Security::Verified);
            assert_eq!(again.rule, Rule::DaneAuth);
            assert_eq!(again.dane.matched, Some(tlsa(&cert)));
            assert_eq!(again.dane.depth, Some(0));
            assert_eq!(again.tls, {
                let mut t = first.tls.clone().unwrap();
                t.resumed = true;
                Some(t)
            });
            assert!(
                again
                    .log_line()
                    .starts_with("Verified TLS connection established to ")
            );
            assert!(again.log_line().contains("(session resumed)"));
        }
        assert_eq!(lab.stored(), 3);
        // The attempt's record says so in JSON, and only when it is so.
        let json = serde_json::to_value(&first).unwrap();
        assert!(json["tls"].get("resumed").is_none(), "{json}");
    }
}

/// Test 2, the attack: a session made under `may` (nothing authenticated) with server X must
/// never carry a DANE delivery to X's address whose TLSA records do not match X: that
/// delivery does a full handshake, fails DANE, and delivers nothing.
#[tokio::test]
async fn an_opportunistic_session_never_resumes_into_dane() {
    let x = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let genuine = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let lab = lab(&x, &[&rustls::version::TLS13, &rustls::version::TLS12]).await;
    let cache = Arc::new(SessionCache::default());
    let host = |records: &[Tlsa]| {
        route(
            &lab,
            "mx.example.test",
            "mx.example.test",
            ip(LOCAL),
            records,
        )
    };
    // X's session under `may`, twice: opportunistic sessions do resume among themselves.
    let may = config(Level::May, Some(&cache));
    let a = delivered(&host(&[]), &may).await;
    assert_eq!((a.security, resumed(&a)), (Security::Untrusted, false));
    let a = delivered(&host(&[]), &may).await;
    assert_eq!(
        (a.security, resumed(&a)),
        (Security::Untrusted, true),
        "{a:#?}"
    );
    assert_eq!(lab.stored(), 2);
    // Now DANE, with the records of the genuine server, not X's.
    let d = send(&host(&[tlsa(&genuine)]), &config(Level::Dane, Some(&cache))).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    let a = only(&d);
    assert_eq!(a.tls, None, "no TLS session was established: {a:#?}");
    assert_eq!(a.security, Security::None);
    // The DANE verifier saw X's certificate (a full handshake) and rejected it.
    assert_eq!(a.rule, Rule::DaneAuth, "{a:#?}");
    assert_eq!(a.failure, Some(Failure::DaneAuthentication), "{a:#?}");
    assert!(a.reason.starts_with("DANE authentication failed"), "{a:#?}");
    assert_eq!(lab.stored(), 2, "nothing was delivered");
    // `encrypt` is unauthenticated too, but its own key: no `may` session crosses into it.
    let a = delivered(&host(&[]), &config(Level::Encrypt, Some(&cache))).await;
    assert_eq!((a.security, resumed(&a)), (Security::Untrusted, false));
}

/// Test 3: a changed TLSA RRset (a key rollover, or an attacker's records) is another key:
/// full handshake, verified against the new records; then that key's session resumes. A
/// failed full handshake under a key drops what the key held.
#[tokio::test]
async fn a_changed_rrset_does_not_resume() {
    let cert = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let next = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let lab = lab(&cert, &[&rustls::version::TLS13]).await;
    let cache = Arc::new(SessionCache::default());
    let cfg = config(Level::Dane, Some(&cache));
    let host = |records: &[Tlsa]| {
        route(
            &lab,
            "mx.example.test",
            "mx.example.test",
            ip(LOCAL),
            records,
        )
    };
    let old = [tlsa(&cert)];
    let rollover = [tlsa(&next), tlsa(&cert)];
    assert!(!resumed(&delivered(&host(&old), &cfg).await));
    assert!(resumed(&delivered(&host(&old), &cfg).await));
    let a = delivered(&host(&rollover), &cfg).await;
    assert!(!resumed(&a), "{a:#?}");
    assert_eq!(a.security, Security::Verified);
    assert_eq!(a.dane.matched, Some(tlsa(&cert)));
    let a = delivered(&host(&rollover), &cfg).await;
    assert!(resumed(&a), "{a:#?}");
    assert_eq!(a.dane.matched, Some(tlsa(&cert)));
    // The same RRset in another order is the same RRset.
    let reordered = [tlsa(&cert), tlsa(&next)];
    assert!(resumed(&delivered(&host(&reordered), &cfg).await));
    // An attacker's records: no resumption, the full handshake fails.
    let d = send(&host(&[tlsa(&next)]), &cfg).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(only(&d).rule, Rule::DaneAuth);
    assert_eq!(lab.stored(), 5);
}

/// Test 4: another address, SNI name or host name is another key.
#[tokio::test]
async fn another_address_sni_or_host_does_not_resume() {
    let cert = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let lab = lab(&cert, &[&rustls::version::TLS13]).await;
    let cache = Arc::new(SessionCache::default());
    let cfg = config(Level::Dane, Some(&cache));
    let records = [tlsa(&cert)];
    let first = route(
        &lab,
        "mx.example.test",
        "mx.example.test",
        ip(LOCAL),
        &records,
    );
    assert!(!resumed(&delivered(&first, &cfg).await));
    for other in [
        route(
            &lab,
            "mx.example.test",
            "mx.example.test",
            ip("127.0.0.2"),
            &records,
        ),
        route(
            &lab,
            "mx.example.test",
            "mx2.example.test",
            ip(LOCAL),
            &records,
        ),
        route(
            &lab,
            "mx2.example.test",
            "mx.example.test",
            ip(LOCAL),
            &records,
        ),
    ] {
        let a = delivered(&other, &cfg).await;
        assert!(!resumed(&a), "{a:#?}");
        assert_eq!(a.security, Security::Verified);
    }
    // The first key still resumes.
    assert!(resumed(&delivered(&first, &cfg).await));
}

/// Test 5: without a cache nothing is resumed (as `danemta send` delivers).
#[tokio::test]
async fn without_a_cache_nothing_resumes() {
    let cert = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let lab = lab(&cert, &[&rustls::version::TLS13, &rustls::version::TLS12]).await;
    let r = route(
        &lab,
        "mx.example.test",
        "mx.example.test",
        ip(LOCAL),
        &[tlsa(&cert)],
    );
    for level in [Level::Dane, Level::May] {
        for _ in 0..3 {
            let a = delivered(&r, &config(level, None)).await;
            assert!(!resumed(&a), "{a:#?}");
        }
    }
}

/// PKIX (`verify`): a session resumes under the same trust anchors and names, with the name
/// the full handshake proved; another root store (even with the same anchors) is another key.
#[tokio::test]
async fn a_pkix_session_resumes_only_under_the_same_anchors() {
    let ca = TestCa::new("Lab CA").unwrap();
    let cert = TestCert::ca_signed(&["mx.example.test"], &ca, true).unwrap();
    let lab = lab(&cert, &[&rustls::version::TLS13]).await;
    let anchors = || {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ca.cert_der().to_vec(),
            ))
            .unwrap();
        Arc::new(roots)
    };
    let cache = Arc::new(SessionCache::default());
    let mut cfg = config(Level::Verify, Some(&cache));
    cfg.roots = anchors();
    let r = route(&lab, "mx.example.test", "mx.example.test", ip(LOCAL), &[]);
    let a = delivered(&r, &cfg).await;
    assert_eq!(
        (a.security, resumed(&a)),
        (Security::Verified, false),
        "{a:#?}"
    );
    let a = delivered(&r, &cfg).await;
    assert_eq!(
        (a.security, resumed(&a)),
        (Security::Verified, true),
        "{a:#?}"
    );
    cfg.roots = anchors();
    let a = delivered(&r, &cfg).await;
    assert_eq!(
        (a.security, resumed(&a)),
        (Security::Verified, false),
        "{a:#?}"
    );
    // An opportunistic session to the same server does not resume into PKIX either.
    let may = config(Level::May, Some(&cache));
    let r2 = route(
        &lab,
        "mx.example.test",
        "mx.example.test",
        ip("127.0.0.3"),
        &[],
    );
    delivered(&r2, &may).await;
    assert!(resumed(&delivered(&r2, &may).await));
    cfg.roots = anchors();
    let a = delivered(&r2, &cfg).await;
    assert_eq!(
        (a.security, resumed(&a)),
        (Security::Verified, false),
        "{a:#?}"
    );
}

/// A failed DANE check on a full handshake under a key drops what the key held; a cache
/// entry past its maximum age is not resumed either.
#[tokio::test]
async fn a_failed_handshake_or_age_drops_the_key() {
    let x = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let y = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let first = lab(&x, &[&rustls::version::TLS13]).await;
    let port = first.port;
    let cache = Arc::new(SessionCache::default());
    let cfg = config(Level::Dane, Some(&cache));
    let r = route(
        &first,
        "mx.example.test",
        "mx.example.test",
        ip(LOCAL),
        &[tlsa(&x)],
    );
    assert!(!resumed(&delivered(&r, &cfg).await));
    assert!(resumed(&delivered(&r, &cfg).await));
    assert_eq!(cache.len(), 1);
    // Another server (certificate Y) takes over the address: the same key, but its full
    // handshake fails DANE, and the key's entry goes.
    first.listener.abort();
    let _ = first.listener.await;
    let second = lab_on(port, &y, &[&rustls::version::TLS13]).await;
    let d = send(&r, &cfg).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(only(&d).rule, Rule::DaneAuth);
    assert_eq!(cache.len(), 0);
    assert_eq!(second.stored(), 0);
    // Age: with a maximum age of zero, nothing is ever resumed.
    let aged = Arc::new(SessionCache::default().with_max_age(Duration::ZERO));
    let cfg = config(Level::Dane, Some(&aged));
    let r = route(
        &second,
        "mx.example.test",
        "mx.example.test",
        ip(LOCAL),
        &[tlsa(&y)],
    );
    for _ in 0..3 {
        assert!(!resumed(&delivered(&r, &cfg).await));
    }
}
