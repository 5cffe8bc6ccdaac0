//! The delivery loop over hand-made routes, against in-process STARTTLS servers (rustls):
//! DANE decides inside the handshake, SNI is the TLSA base domain, a failed authentication
//! moves on to the next MX and never ends in plaintext. (The same paths against Postfix and
//! real DNSSEC are in crates/danemta/tests.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dane::Tlsa;
use dane::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
use rcgen::{CertificateParams, KeyPair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use smtp::{Config, Envelope, Fate, Level, Message, Security, Timeouts};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What a test server saw.
#[derive(Default, Debug)]
struct Seen {
    sni: Option<String>,
    commands: Vec<String>,
    messages: usize,
}

#[derive(Debug)]
struct Recorder {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesServerCert for Recorder {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.seen.lock().unwrap().sni = hello.server_name().map(str::to_owned);
        Some(self.key.clone())
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    leaf: CertificateDer<'static>,
}

/// A self-signed certificate for `name`.
fn cert(name: &str) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.der().clone(), key)
}

/// An SMTP server on a fresh loopback port; `starttls` says whether it offers STARTTLS.
async fn server(starttls: bool) -> Server {
    let (leaf, key) = cert("mx.example.test");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let resolver = Recorder {
        key: Arc::new(CertifiedKey::new(vec![leaf.clone()], signer)),
        seen: seen.clone(),
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                io.get_mut().write_all(b"220 test ESMTP\r\n").await.unwrap();
                if serve(&mut io, starttls, &record).await {
                    let Ok(tls) = acceptor.accept(io.into_inner()).await else {
                        return;
                    };
                    serve(&mut BufReader::new(tls), false, &record).await;
                }
            });
        }
    });
    Server { addr, seen, leaf }
}

/// Serves commands until QUIT or STARTTLS (returns true for STARTTLS).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    offer_tls: bool,
    seen: &Mutex<Seen>,
) -> bool {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let command = line.trim_end().to_owned();
        seen.lock().unwrap().commands.push(command.clone());
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if offer_tls {
                b"250-test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
            } else {
                b"250-test\r\n250 PIPELINING\r\n"
            }
        } else if upper == "STARTTLS" {
            io.get_mut()
                .write_all(b"220 2.0.0 go ahead\r\n")
                .await
                .unwrap();
            return true;
        } else if upper == "DATA" {
            io.get_mut().write_all(b"354 go\r\n").await.unwrap();
            loop {
                let mut body = String::new();
                if io.read_line(&mut body).await.unwrap_or(0) == 0 || body == ".\r\n" {
                    break;
                }
            }
            seen.lock().unwrap().messages += 1;
            b"250 2.0.0 queued\r\n"
        } else if upper == "QUIT" {
            let _ = io.get_mut().write_all(b"221 bye\r\n").await;
            return false;
        } else {
            b"250 2.0.0 ok\r\n"
        };
        io.get_mut().write_all(reply).await.unwrap();
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
    let t = Duration::from_secs(5);
    Config {
        helo_name: "client.test".into(),
        level,
        timeouts: Timeouts {
            connect: t,
            greeting: t,
            command: t,
            data_init: t,
            data_block: t,
            data_end: t,
            tls: t,
        },
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
        s.seen.lock().unwrap().sni.as_deref(),
        Some("mx.provider.test")
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
    let (other, _) = cert("attacker.test");
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
    let seen = wrong.seen.lock().unwrap();
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        seen.commands
    );
    assert_eq!(seen.messages, 0);
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
    assert_eq!(s.seen.lock().unwrap().messages, 0);

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
    assert!(
        s.seen.lock().unwrap().commands.is_empty(),
        "no connection at all"
    );
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
    let (other, _) = cert("x.test");
    cfg.fingerprints = vec![tlsa_for(&other)];
    let d = smtp::deliver(&route, &n("example.test"), true, &envelope, &message, &cfg).await;
    assert_eq!(d.outcome, "deferred");
    assert!(d.recipients.iter().all(|r| r.outcome == Fate::Deferred));
}
