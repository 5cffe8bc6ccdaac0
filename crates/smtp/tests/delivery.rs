//! The delivery loop over hand-made routes, against in-process STARTTLS servers (rustls):
//! DANE decides inside the handshake, SNI is the TLSA base domain, a failed authentication
//! moves on to the next MX and never ends in plaintext. (The same paths against Postfix and
//! real DNSSEC are in crates/danemta/tests.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dane::Tlsa;
use dane::pki_types::CertificateDer;
use danemta_lab::SubmissionServer;
use danemta_lab::pki::TestCert;
use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
use smtp::outcome::{Failure, Outcome, Rule};
use smtp::{Config, Envelope, Fate, Level, Message, Security, Timeouts};

struct Server {
    inner: SubmissionServer,
    addr: SocketAddr,
    leaf: CertificateDer<'static>,
}

/// A self-signed certificate for `name`.
fn cert(name: &str) -> TestCert {
    TestCert::self_signed(&[name]).unwrap()
}

/// An SMTP server on a fresh loopback port (the lab's in-process one, which records the SNI
/// name); `starttls` says whether it offers STARTTLS.
async fn server(starttls: bool) -> Server {
    let c = cert("mx.example.test");
    let inner =
        SubmissionServer::start("127.0.0.1:0".parse().unwrap(), starttls.then_some(&c), None)
            .unwrap();
    Server {
        addr: inner.addr(),
        inner,
        leaf: CertificateDer::from(c.leaf_der.clone()),
    }
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

fn tlsa_for(leaf: &CertificateDer<'_>) -> Tlsa {
    let info = dane::cert::CertInfo::parse(leaf).unwrap();
    dane::matching::record_for(3u8.into(), 1u8.into(), 1u8.into(), &info).unwrap()
}

fn candidate(name: &str, base: &str, server: &Server, dane: DaneState) -> Candidate {
    Candidate {
        name: n(name),
        preference: 10,
        port: server.addr.port(),
        tlsa_base: n(base),
        addresses: vec![Address {
            address: server.addr.ip(),
            dnssec: Status::Secure,
        }],
        a_dnssec: Status::Secure,
        aaaa_dnssec: Status::Secure,
        tlsa_name: None,
        tlsa_dnssec: Some(Status::Secure),
        tlsa: match &dane {
            DaneState::Usable { records } => records.clone(),
            _ => vec![],
        },
        dane,
        reference_names: vec![n(base).reference_name().unwrap()],
        dane_trust: dns::DaneTrust::Verified,
    }
}

fn config(level: Level) -> Config {
    Config {
        helo_name: "client.test".parse().unwrap(),
        level,
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        fingerprints: vec![],
        roots: Arc::new(rustls::RootCertStore::empty()),
        match_names: vec![],
        credentials: None,
        limits: smtp::Limits::default(),
        sessions: None,
        level_configured: false,
        mta_sts: None,
    }
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(from, [to]).unwrap()
}

async fn send(route: &Route, level: Level) -> smtp::Delivery {
    let envelope = envelope("a@client.test", "b@example.test");
    let message = Message::new(b"Subject: t\n\nhello\n").unwrap();
    smtp::deliver(
        route,
        &n("example.test"),
        true,
        &envelope,
        &message,
        &config(level),
    )
    .await
}

#[tokio::test]
async fn dane_ee_delivery_is_verified_and_sends_the_base_domain_as_sni() {
    let s = server(true).await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![candidate(
            "mail.example.test",
            "mx.provider.test",
            &s,
            usable,
        )],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    let a = &d.attempts[0];
    assert_eq!(a.security, Security::Verified);
    assert_eq!(
        (a.dane.matched.as_ref(), a.dane.depth),
        (Some(&tlsa_for(&s.leaf)), Some(0))
    );
    assert!(a.tls.as_ref().unwrap().version.starts_with("TLSv1."));
    assert!(
        a.log_line()
            .starts_with("Verified TLS connection established to mail.example.test["),
        "{}",
        a.log_line()
    );
    // Rule 10: SNI is the TLSA base domain, not the MX name.
    assert_eq!(
        s.inner.seen().server_names,
        [Some("mx.provider.test".to_owned())]
    );
}

#[tokio::test]
async fn insecure_mx_with_secure_tlsa_is_trusted_not_verified() {
    let s = server(true).await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let mut c = candidate("mx.example.test", "mx.example.test", &s, usable);
    c.dane_trust = dns::DaneTrust::Trusted;
    let route = Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![c],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        (Outcome::Delivered, Security::Trusted)
    );
}

#[tokio::test]
async fn a_wrong_certificate_moves_to_the_next_mx_and_never_sends_mail() {
    let wrong = server(true).await;
    let good = server(true).await;
    let other = CertificateDer::from(cert("attacker.test").leaf_der);
    let records_wrong = DaneState::Usable {
        records: vec![tlsa_for(&other)],
    };
    let records_good = DaneState::Usable {
        records: vec![tlsa_for(&good.leaf)],
    };
    let mut second = candidate("mx2.example.test", "mx2.example.test", &good, records_good);
    second.preference = 20;
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![
            candidate(
                "mx1.example.test",
                "mx1.example.test",
                &wrong,
                records_wrong,
            ),
            second,
        ],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.attempts[0].security, Security::None);
    assert!(
        d.attempts[0].reason.contains("DANE authentication failed"),
        "{}",
        d.attempts[0].reason
    );
    assert_eq!(d.attempts[0].rule, Rule::DaneAuth);
    assert!(d.attempts[0].rule.citation().contains("RFC 7672 §3.1"));
    assert_eq!(d.attempts[1].security, Security::Verified);
    let seen = wrong.inner.seen();
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        seen.commands
    );
    assert!(seen.messages.is_empty());
}

#[tokio::test]
async fn dane_without_starttls_defers_and_opportunistic_sends_plaintext() {
    let s = server(false).await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &s, usable)],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    assert!(
        d.recipients[0]
            .reply
            .to_string()
            .contains("STARTTLS is required but not offered"),
        "{}",
        d.recipients[0].reply
    );
    assert_eq!(d.attempts[0].failure, Some(Failure::StarttlsNotOffered));
    assert!(s.inner.seen().messages.is_empty());

    let na = DaneState::NotApplicable {
        reason: "no TLSA".into(),
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &s, na)],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        (Outcome::Delivered, Security::Plaintext)
    );
}

#[tokio::test]
async fn dane_only_skips_hosts_without_usable_records() {
    let s = server(true).await;
    let na = DaneState::NotApplicable {
        reason: "no TLSA".into(),
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &s, na)],
    };
    let d = send(&route, Level::DaneOnly).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    assert_eq!(d.attempts[0].security, Security::None);
    assert!(s.inner.seen().commands.is_empty(), "no connection at all");
}

#[tokio::test]
async fn fingerprint_level_matches_configured_digests() {
    let s = server(true).await;
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let mut c = candidate("mx.example.test", "mx.example.test", &s, na);
    c.dane_trust = dns::DaneTrust::Trusted;
    let route = Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![c],
    };
    let envelope = envelope("a@client.test", "b@example.test");
    let message = Message::new(b"Subject: t\n\nhello\n").unwrap();
    let mut cfg = config(Level::Fingerprint);
    cfg.fingerprints = vec![tlsa_for(&s.leaf)];
    let d = smtp::deliver(&route, &n("example.test"), true, &envelope, &message, &cfg).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        (Outcome::Delivered, Security::Verified)
    );
    cfg.fingerprints = vec![tlsa_for(&CertificateDer::from(cert("x.test").leaf_der))];
    let d = smtp::deliver(&route, &n("example.test"), true, &envelope, &message, &cfg).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    assert!(d.recipients.iter().all(|r| r.outcome == Fate::Deferred));
}

#[tokio::test]
async fn a_message_over_the_size_limit_bounces_instead_of_trying_the_next_mx() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        io.get_mut().write_all(b"220 small\r\n").await.unwrap();
        let mut line = String::new();
        while io.read_line(&mut line).await.unwrap_or(0) > 0 {
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-small\r\n250 SIZE 10\r\n"
            } else {
                b"221 bye\r\n"
            };
            io.get_mut().write_all(reply).await.unwrap();
            line.clear();
        }
    });
    let server = Server {
        inner: SubmissionServer::start("127.0.0.1:0".parse().unwrap(), None, None).unwrap(),
        addr,
        leaf: CertificateDer::from(Vec::new()),
    };
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &server, na)],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Bounced, "{d:#?}");
    assert!(d.recipients[0].reply.to_string().starts_with("552 5.3.4"));
}

/// A submission server offering STARTTLS (self-signed certificate for `mx.example.test`) and
/// AUTH PLAIN for alice/secret after it.
async fn credentialed_server() -> Server {
    let c = cert("mx.example.test");
    let inner = SubmissionServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(&c),
        Some(("alice", "secret")),
    )
    .unwrap();
    Server {
        addr: inner.addr(),
        inner,
        leaf: CertificateDer::from(c.leaf_der.clone()),
    }
}

/// Delivers through `route` with alice's credentials at `level`.
async fn submit(route: &Route, level: Level, tweak: impl FnOnce(&mut Config)) -> smtp::Delivery {
    let envelope = envelope("a@client.test", "b@example.test");
    let message = Message::new(b"Subject: t\n\nhello\n").unwrap();
    let mut cfg = config(level);
    cfg.credentials = Some(("alice".into(), "secret".into()));
    tweak(&mut cfg);
    smtp::deliver(route, &n("example.test"), true, &envelope, &message, &cfg).await
}

/// Whether the server ever got an AUTH command.
fn saw_auth(s: &Server) -> bool {
    s.inner
        .seen()
        .commands
        .iter()
        .any(|c| c.to_ascii_uppercase().starts_with("AUTH"))
}

fn one_host(s: &Server, dane: DaneState, mx_dnssec: Status) -> Route {
    let mut c = candidate("mx.example.test", "mx.example.test", s, dane);
    // As route discovery decides it (RFC 7672 §2.2.1).
    c.dane_trust = dns::DaneTrust::of(mx_dnssec.is_secure());
    Route::Deliver {
        mx_dnssec,
        candidates: vec![c],
    }
}

#[tokio::test]
async fn credentials_never_go_to_an_unauthenticated_server() {
    let na = || DaneState::NotApplicable {
        reason: "no TLSA".into(),
    };
    // Opportunistic TLS (no TLSA), TLS without authentication, and opportunistic `may`.
    for (level, dane) in [
        (Level::Dane, na()),
        (Level::Encrypt, na()),
        (Level::May, na()),
        (Level::Dane, DaneState::Unusable),
    ] {
        let s = credentialed_server().await;
        let d = submit(&one_host(&s, dane.clone(), Status::Secure), level, |_| {}).await;
        assert_eq!(d.outcome, Outcome::Deferred, "{level}: {d:#?}");
        assert!(!saw_auth(&s), "{level}: {:?}", s.inner.seen().commands);
        assert!(s.inner.seen().messages.is_empty());
        assert!(
            d.recipients[0]
                .reply
                .to_string()
                .contains("credentials not sent"),
            "{}",
            d.recipients[0].reply
        );
    }
}

#[tokio::test]
async fn credentials_never_go_to_a_dane_host_named_by_an_insecure_lookup() {
    // DANE succeeds for the host, but an attacker may have chosen the host (insecure SRV):
    // `trusted`, not `verified`.
    let s = credentialed_server().await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let d = submit(&one_host(&s, usable, Status::Insecure), Level::Dane, |_| {}).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert!(!saw_auth(&s), "{:?}", s.inner.seen().commands);
    assert!(
        d.attempts[0].reason.contains("insecure"),
        "{:#?}",
        d.attempts
    );
}

#[tokio::test]
async fn credentials_never_go_to_a_pkix_name_from_an_insecure_lookup() {
    // `verify` checks the certificate against the host name, which the insecure SRV chose.
    let s = credentialed_server().await;
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let d = submit(&one_host(&s, na, Status::Insecure), Level::Verify, |_| {}).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert!(s.inner.seen().commands.is_empty(), "not even connected to");
}

#[tokio::test]
async fn credentials_go_to_a_verified_dane_server() {
    let s = credentialed_server().await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let d = submit(&one_host(&s, usable, Status::Secure), Level::Dane, |_| {}).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        (Outcome::Delivered, Security::Verified),
        "{d:#?}"
    );
    assert!(saw_auth(&s) && s.inner.seen().authenticated);
    // A pinned fingerprint is a verified peer too.
    let s = credentialed_server().await;
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let leaf = s.leaf.clone();
    let d = submit(
        &one_host(&s, na, Status::Insecure),
        Level::Fingerprint,
        |cfg| {
            cfg.fingerprints = vec![tlsa_for(&leaf)];
        },
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    assert!(s.inner.seen().authenticated);
}

#[tokio::test]
async fn no_plaintext_retry_for_auth_on_a_server_without_starttls() {
    // `may` retries in plaintext after a failed handshake; a server without STARTTLS (or
    // without AUTH) is no failed handshake, and a plaintext session cannot carry the password.
    let s = server(false).await;
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let d = submit(&one_host(&s, na, Status::Secure), Level::May, |_| {}).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    let ehlos = s
        .inner
        .seen()
        .commands
        .iter()
        .filter(|c| c.starts_with("EHLO"))
        .count();
    assert!(
        ehlos <= 1,
        "{ehlos} connections: {:?}",
        s.inner.seen().commands
    );
    assert!(!saw_auth(&s));
}

/// A server that counts its connections, greets each with `greeting` and answers MAIL with
/// `mail` (everything else with 250).
async fn counting(greeting: &'static str, mail: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                if io.get_mut().write_all(greeting.as_bytes()).await.is_err()
                    || !greeting.starts_with("220")
                {
                    return;
                }
                let mut line = String::new();
                while io.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let reply = if line.starts_with("MAIL") {
                        mail
                    } else if line.starts_with("QUIT") {
                        "221 bye\r\n"
                    } else {
                        "250 ok\r\n"
                    };
                    if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (addr, count)
}

/// A route of `hosts` MX hosts, every one at `addr`, without DANE.
fn many_hosts(hosts: usize, addr: SocketAddr) -> Route {
    let candidates = (0..hosts)
        .map(|i| Candidate {
            name: n(&format!("mx{i}.example.test")),
            preference: 10,
            port: addr.port(),
            tlsa_base: n(&format!("mx{i}.example.test")),
            addresses: vec![Address {
                address: addr.ip(),
                dnssec: Status::Insecure,
            }],
            a_dnssec: Status::Insecure,
            aaaa_dnssec: Status::Insecure,
            tlsa_name: None,
            tlsa_dnssec: Some(Status::Insecure),
            tlsa: vec![],
            dane: DaneState::NotApplicable {
                reason: "insecure".into(),
            },
            reference_names: vec![],
            dane_trust: dns::DaneTrust::Trusted,
        })
        .collect();
    Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates,
    }
}

#[tokio::test]
async fn a_domain_with_many_hosts_costs_at_most_five_connections() {
    // Every host refuses at the greeting (421): ten hosts, but only five addresses are tried.
    let (addr, connections) = counting("421 4.3.2 busy\r\n", "").await;
    let d = send(&many_hosts(10, addr), Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    assert_eq!(connections.load(Ordering::SeqCst), 5, "{d:#?}");
    let last = d.attempts.last().unwrap();
    assert_eq!(last.security, Security::None);
    assert!(
        last.reason.contains("limit of 5 addresses"),
        "{}",
        last.reason
    );
    assert!(
        d.recipients[0]
            .reply
            .to_string()
            .contains("limit of 5 addresses"),
        "{}",
        d.recipients[0].reply
    );
}

#[tokio::test]
async fn a_domain_with_many_hosts_costs_at_most_two_sessions() {
    // Every host greets and then defers the transaction (451 on MAIL): two sessions, then stop.
    let (addr, connections) = counting("220 ok\r\n", "451 4.3.0 try later\r\n").await;
    let d = send(&many_hosts(10, addr), Level::Dane).await;
    assert_eq!(d.outcome, Outcome::Deferred);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "{d:#?}");
    assert!(
        d.recipients[0]
            .reply
            .to_string()
            .contains("limit of 2 sessions"),
        "{}",
        d.recipients[0].reply
    );
}

/// Three messages for `route` as one batch under `cfg`.
async fn three(route: &Route, cfg: &Config) -> Vec<smtp::Delivery> {
    let envelopes: Vec<Envelope> = (1..=3)
        .map(|i| envelope("a@client.test", &format!("r{i}@example.test")))
        .collect();
    let messages: Vec<Message> = (1..=3)
        .map(|i| Message::new(format!("Subject: {i}\n\nhello {i}\n").as_bytes()).unwrap())
        .collect();
    let batch: Vec<smtp::Outgoing> = envelopes
        .iter()
        .zip(&messages)
        .map(|(envelope, m)| smtp::Outgoing { envelope, body: m })
        .collect();
    smtp::deliver_many(route, &n("example.test"), true, &batch, cfg).await
}

#[tokio::test]
async fn a_batch_goes_over_one_dane_verified_connection() {
    let s = server(true).await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let d = three(&one_host(&s, usable, Status::Secure), &config(Level::Dane)).await;
    for d in &d {
        assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
        let a = &d.attempts[0];
        assert_eq!((d.attempts.len(), a.security), (1, Security::Verified));
        assert_eq!(a.dane.matched.as_ref(), Some(&tlsa_for(&s.leaf)));
        assert!(a.tls.is_some());
    }
    // The first message opened the connection; the others reused it (no new handshake).
    let reused: Vec<bool> = d.iter().map(|d| d.attempts[0].reused).collect();
    assert_eq!(reused, [false, true, true]);
    let seen = s.inner.seen();
    // One TLS handshake, three messages, RSET between them.
    assert_eq!(seen.server_names.len(), 1, "{seen:#?}");
    assert_eq!(seen.messages.len(), 3);
    let rsets = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("RSET"))
        .count();
    assert_eq!(rsets, 2, "{seen:#?}");
}

#[tokio::test]
async fn a_submission_batch_authenticates_once() {
    let s = credentialed_server().await;
    let usable = DaneState::Usable {
        records: vec![tlsa_for(&s.leaf)],
    };
    let mut cfg = config(Level::Dane);
    cfg.credentials = Some(("alice".into(), "secret".into()));
    let d = three(&one_host(&s, usable, Status::Secure), &cfg).await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Delivered), "{d:#?}");
    let seen = s.inner.seen();
    let auths = seen
        .commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("AUTH"))
        .count();
    assert_eq!((auths, seen.messages.len()), (1, 3), "{seen:#?}");
    assert_eq!(seen.server_names.len(), 1);
}
