//! The delivery loop over hand-made routes, against in-process STARTTLS servers (rustls):
//! DANE decides inside the handshake, SNI is the TLSA base domain, a failed authentication
//! moves on to the next MX and never ends in plaintext. (The same paths against Postfix and
//! real DNSSEC are in crates/danemta/tests.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dane::Tlsa;
use dane::pki_types::CertificateDer;
use danemta_lab::SubmissionServer;
use danemta_lab::pki::TestCert;
use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
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
    }
}

fn config(level: Level) -> Config {
    Config {
        helo_name: "client.test".into(),
        level,
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        fingerprints: vec![],
        roots: Arc::new(rustls::RootCertStore::empty()),
        match_names: vec![],
        credentials: None,
    }
}

async fn send(route: &Route, level: Level) -> smtp::Delivery {
    let envelope = Envelope {
        from: "a@client.test".into(),
        to: vec!["b@example.test".into()],
    };
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
    assert_eq!(d.outcome, "delivered", "{d:#?}");
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
    let route = Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &s, usable)],
    };
    let d = send(&route, Level::Dane).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        ("delivered", Security::Trusted)
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
    assert_eq!(d.outcome, "delivered");
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.attempts[0].security, Security::None);
    assert!(
        d.attempts[0].reason.contains("DANE authentication failed"),
        "{}",
        d.attempts[0].reason
    );
    assert!(d.attempts[0].rule.contains("RFC 7672 §3.1"));
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
    assert_eq!((d.outcome, d.exit_code()), ("deferred", 75));
    assert!(
        d.recipients[0]
            .reply
            .contains("STARTTLS is required but not offered"),
        "{}",
        d.recipients[0].reply
    );
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
        ("delivered", Security::Plaintext)
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
    assert_eq!(d.outcome, "deferred");
    assert_eq!(d.attempts[0].security, Security::None);
    assert!(s.inner.seen().commands.is_empty(), "no connection at all");
}

#[tokio::test]
async fn fingerprint_level_matches_configured_digests() {
    let s = server(true).await;
    let na = DaneState::NotApplicable {
        reason: String::new(),
    };
    let route = Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![candidate("mx.example.test", "mx.example.test", &s, na)],
    };
    let envelope = Envelope {
        from: "a@client.test".into(),
        to: vec!["b@example.test".into()],
    };
    let message = Message::new(b"Subject: t\n\nhello\n").unwrap();
    let mut cfg = config(Level::Fingerprint);
    cfg.fingerprints = vec![tlsa_for(&s.leaf)];
    let d = smtp::deliver(&route, &n("example.test"), true, &envelope, &message, &cfg).await;
    assert_eq!(
        (d.outcome, d.attempts[0].security),
        ("delivered", Security::Verified)
    );
    cfg.fingerprints = vec![tlsa_for(&CertificateDer::from(cert("x.test").leaf_der))];
    let d = smtp::deliver(&route, &n("example.test"), true, &envelope, &message, &cfg).await;
    assert_eq!(d.outcome, "deferred");
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
    assert_eq!((d.outcome, d.exit_code()), ("bounced", 69), "{d:#?}");
    assert!(d.recipients[0].reply.starts_with("552 5.3.4"));
}
