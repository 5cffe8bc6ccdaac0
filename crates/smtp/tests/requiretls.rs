//! REQUIRETLS (RFC 8689) over real sessions, played as the attacker and as the receivers a
//! REQUIRETLS message meets: the crate's own STARTTLS server stands in for receivers that
//! advertise REQUIRETLS (the lab's Postfix 3.7 does not), the lab's proxies for the attacker.
//!
//! A REQUIRETLS message goes, with `REQUIRETLS` on MAIL FROM, only to a receiver authenticated
//! by DANE (under a signed MX) or by PKIX for an MX name an MTA-STS policy lists, that
//! advertises REQUIRETLS after STARTTLS (§4.2.1); every other receiver gets nothing of it. A
//! receiver that refuses it for good makes it bounce with 5.7.30; an attacker's doing
//! (STARTTLS stripped, a certificate swapped) defers it, as DANE failures always do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dane::Tlsa;
use danemta_lab::attack::{Mitm, StripStartTls};
use danemta_lab::pki::{TestCa, TestCert, tlsa_3_1_1};
use dns::route::{Address, Candidate, DaneState, DaneTrust};
use dns::{DnsName, Route, Status};
use smtp::outcome::{Failure, Outcome, Rule};
use smtp::reply::Reply;
use smtp::server::tls::SniResolver;
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction};
use smtp::{Config, Envelope, Fate, Level, Message, Outgoing, Security, Timeouts, TlsRequest};
use tokio::net::TcpListener;

/// What a receiver saw: each MAIL FROM it accepted (sender, REQUIRETLS) and each message.
#[derive(Default)]
struct Recorder {
    /// Whether it honours (and so advertises) REQUIRETLS.
    requiretls: bool,
    mail: Mutex<Vec<(String, bool)>>,
    stored: Mutex<Vec<Vec<u8>>>,
}

impl Acceptor for Recorder {
    fn requiretls(&self) -> bool {
        self.requiretls
    }

    async fn mail(&self, _: &Client, mail: &MailFrom) -> Result<(), Reply> {
        self.mail
            .lock()
            .unwrap()
            .push((mail.sender.clone(), mail.requiretls));
        Ok(())
    }

    async fn rcpt(&self, _: &Client, _: &MailFrom, _: &RcptTo) -> Result<(), Reply> {
        Ok(())
    }

    async fn message(&self, _: &Client, _: &Transaction, body: Vec<u8>) -> Result<QueueId, Reply> {
        let mut stored = self.stored.lock().unwrap();
        stored.push(body);
        Ok(QueueId(format!("Q{}", stored.len())))
    }
}

/// A receiver on a fresh loopback port: STARTTLS with `cert` when given, REQUIRETLS after it
/// when `requiretls`.
struct Receiver {
    addr: SocketAddr,
    cert: Option<TestCert>,
    recorder: Arc<Recorder>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Each MAIL FROM: (sender, with REQUIRETLS).
    fn mail(&self) -> Vec<(String, bool)> {
        self.recorder.mail.lock().unwrap().clone()
    }

    fn stored(&self) -> usize {
        self.recorder.stored.lock().unwrap().len()
    }

    /// The 3 1 1 record of its certificate.
    fn tlsa(&self) -> Tlsa {
        tlsa_3_1_1(self.cert.as_ref().expect("a TLS receiver"))
            .parse()
            .unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn receiver(cert: Option<TestCert>, requiretls: bool) -> Receiver {
    let mut config = smtp::server::Config::new("mx.example.test".parse().unwrap());
    config.timeouts = smtp::server::Timeouts::uniform(Duration::from_secs(5));
    if let Some(cert) = &cert {
        let resolver = SniResolver::from_pem(
            &[(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())],
            &provider(),
        )
        .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.tls = Some(Arc::new(tls));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(Recorder {
        requiretls,
        ..Recorder::default()
    });
    let server = Server::new(config, recorder.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let _ = server.serve(stream, Some(peer)).await;
            });
        }
    });
    Receiver {
        addr,
        cert,
        recorder,
        _task: task,
    }
}

fn self_signed() -> TestCert {
    TestCert::self_signed(&["mx.example.test"]).unwrap()
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

/// One MX host `mx.example.test` at `addr`, with `dane` as its DANE state, named by an MX
/// lookup whose security `trust` says.
fn route(addr: SocketAddr, dane: DaneState, trust: DaneTrust) -> Route {
    Route::Deliver {
        mx_dnssec: match trust {
            DaneTrust::Verified => Status::Secure,
            DaneTrust::Trusted => Status::Insecure,
        },
        candidates: vec![Candidate {
            name: n("mx.example.test"),
            preference: 10,
            port: addr.port(),
            tlsa_base: n("mx.example.test"),
            addresses: vec![Address {
                address: addr.ip(),
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
            reference_names: vec![n("mx.example.test").reference_name().unwrap()],
            dane_trust: trust,
        }],
    }
}

fn usable(records: Vec<Tlsa>) -> DaneState {
    DaneState::Usable { records }
}

fn no_tlsa() -> DaneState {
    DaneState::NotApplicable {
        reason: "no TLSA records".into(),
    }
}

fn config(level: Level) -> Config {
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
        sessions: None,
        level_configured: false,
        mta_sts: None,
    }
}

fn configured(level: Level) -> Config {
    Config {
        level_configured: true,
        ..config(level)
    }
}

fn envelope(from: &str, request: TlsRequest) -> Envelope {
    Envelope::new(from, ["b@example.test"])
        .unwrap()
        .with_tls_request(request)
}

fn message() -> Message {
    Message::new(b"Subject: t\n\nhello\n").unwrap()
}

async fn send(route: &Route, cfg: &Config, envelope: &Envelope) -> smtp::Delivery {
    smtp::deliver(route, &n("example.test"), true, envelope, &message(), cfg).await
}

async fn send_required(route: &Route, cfg: &Config) -> smtp::Delivery {
    send(route, cfg, &envelope("a@client.test", TlsRequest::Required)).await
}

/// The enhanced status of the first recipient's reply.
fn status(d: &smtp::Delivery) -> Option<String> {
    d.recipients[0]
        .reply
        .smtp()
        .and_then(|r| r.enhanced)
        .map(|e| e.to_string())
}

#[tokio::test]
async fn a_dane_authenticated_receiver_that_advertises_requiretls_gets_it_with_requiretls() {
    let r = receiver(Some(self_signed()), true).await;
    let route = route(r.addr, usable(vec![r.tlsa()]), DaneTrust::Verified);
    let d = send_required(&route, &config(Level::Dane)).await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    let a = &d.attempts[0];
    assert_eq!(a.security, Security::Verified);
    assert_eq!(a.tls_request, Some(TlsRequest::Required));
    assert!(a.log_line().contains("(REQUIRETLS)"), "{}", a.log_line());
    assert_eq!(r.mail(), [("a@client.test".to_owned(), true)]);
    assert_eq!(r.stored(), 1);
}

#[tokio::test]
async fn an_sts_authenticated_receiver_that_advertises_requiretls_gets_it_with_requiretls() {
    let ca = TestCa::new("Lab CA").unwrap();
    let cert = TestCert::ca_signed(&["mx.example.test"], &ca, true).unwrap();
    let r = receiver(Some(cert), true).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert_der().to_vec(),
        ))
        .unwrap();
    let policy = |mode: &str| {
        let body = format!("version: STSv1\nmode: {mode}\nmx: *.example.test\nmax_age: 86400\n");
        Arc::new(sts::Policy::parse(body.as_bytes(), "20261202".parse().unwrap()).unwrap())
    };
    // An unsigned MX: the MTA-STS policy vouches for the name, PKIX for the certificate.
    let route = route(r.addr, no_tlsa(), DaneTrust::Trusted);
    for mode in ["enforce", "testing"] {
        let cfg = Config {
            roots: Arc::new(roots.clone()),
            mta_sts: Some(policy(mode)),
            ..config(Level::Dane)
        };
        let d = send_required(&route, &cfg).await;
        assert_eq!(d.outcome, Outcome::Delivered, "{mode}: {d:#?}");
        assert_eq!(d.attempts[0].security, Security::Verified);
        assert_eq!(d.attempts[0].mechanism, smtp::Mechanism::MtaSts);
    }
    assert_eq!(r.mail(), vec![("a@client.test".to_owned(), true); 2]);
    // Without the policy nothing vouches for the name and nothing authenticates the peer:
    // no connection at all, and a bounce for good.
    let d = send_required(&route, &config(Level::Dane)).await;
    assert_eq!(d.outcome, Outcome::Bounced, "{d:#?}");
    assert_eq!(status(&d).as_deref(), Some("5.7.30"));
    assert_eq!(r.mail().len(), 2, "nothing more reached the receiver");
}

/// §4.2.1 step 5: a receiver authenticated by DANE that does not advertise REQUIRETLS gets
/// no MAIL at all, and the message bounces with 5.7.30 (the refusal is the receiver's, over
/// an authenticated session: no attacker could have made it).
#[tokio::test]
async fn a_receiver_without_requiretls_gets_nothing_and_the_message_bounces_with_5_7_30() {
    let r = receiver(Some(self_signed()), false).await;
    let route = route(r.addr, usable(vec![r.tlsa()]), DaneTrust::Verified);
    let d = send_required(&route, &config(Level::Dane)).await;
    assert_eq!(d.outcome, Outcome::Bounced, "{d:#?}");
    assert_eq!(status(&d).as_deref(), Some("5.7.30"));
    assert_eq!(d.recipients[0].reply.smtp().unwrap().code, 550);
    let a = &d.attempts[0];
    assert_eq!(a.security, Security::Verified);
    assert_eq!(a.failure, Some(Failure::RequiretlsUnavailable));
    assert!(
        a.reason.contains("does not advertise REQUIRETLS"),
        "{}",
        a.reason
    );
    assert_eq!(r.mail(), [], "no MAIL FROM reached the receiver");
    assert_eq!(r.stored(), 0);
    // The same receiver takes the same message without REQUIRETLS, without the parameter.
    let d = send(
        &route,
        &config(Level::Dane),
        &envelope("a@client.test", TlsRequest::Default),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(r.mail(), [("a@client.test".to_owned(), false)]);
}

/// A downgrade attacker strips STARTTLS (and so the REQUIRETLS that only follows it): the
/// message is not sent in plaintext, and it waits (DANE failures defer; so do these).
#[tokio::test]
async fn a_starttls_stripper_gets_nothing_and_the_message_waits() {
    let r = receiver(Some(self_signed()), true).await;
    let strip = StripStartTls::start("127.0.0.1:0".parse().unwrap(), r.addr).unwrap();
    let route = route(strip.addr(), usable(vec![r.tlsa()]), DaneTrust::Verified);
    // Whatever the configured level says: `may` would otherwise go on in plaintext.
    for cfg in [config(Level::Dane), configured(Level::May)] {
        let d = send_required(&route, &cfg).await;
        assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
        assert_eq!(d.attempts[0].failure, Some(Failure::StarttlsNotOffered));
        assert_eq!(d.attempts[0].security, Security::None);
    }
    assert!(strip.connections() >= 2);
    assert!(!strip.client_sent_mail(), "{}", strip.transcript());
    assert_eq!(r.mail(), []);
}

/// An attacker in the middle with its own certificate: the handshake fails DANE, nothing is
/// sent, the message waits.
#[tokio::test]
async fn a_man_in_the_middle_gets_nothing() {
    let r = receiver(Some(self_signed()), true).await;
    let attacker = TestCert::self_signed(&["mx.example.test"]).unwrap();
    let mitm = Mitm::start(
        "127.0.0.1:0".parse().unwrap(),
        r.addr,
        &attacker.chain_pem,
        &attacker.key_pem,
    )
    .unwrap();
    let route = route(mitm.addr(), usable(vec![r.tlsa()]), DaneTrust::Verified);
    let d = send_required(&route, &config(Level::Dane)).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(d.attempts[0].rule, Rule::DaneAuth);
    assert!(!mitm.client_sent_mail(), "{}", mitm.transcript());
    assert_eq!(r.mail(), []);
}

/// Peers nothing authenticates get nothing: no TLSA and no MTA-STS (opportunistic TLS would
/// be "untrusted"), `encrypt` (TLS, unauthenticated), `may` or `none` configured, DANE under
/// an unsigned MX. None of them is even connected to, and the message bounces for good.
#[tokio::test]
async fn untrusted_peers_get_nothing_whatever_the_configured_level() {
    let r = receiver(Some(self_signed()), true).await;
    let unauthenticated = route(r.addr, no_tlsa(), DaneTrust::Verified);
    for cfg in [
        config(Level::Dane),
        configured(Level::Encrypt),
        configured(Level::May),
        configured(Level::None),
    ] {
        let d = send_required(&unauthenticated, &cfg).await;
        assert_eq!(d.outcome, Outcome::Bounced, "{}: {d:#?}", cfg.level);
        assert_eq!(status(&d).as_deref(), Some("5.7.30"));
        assert!(
            d.attempts
                .iter()
                .all(|a| a.address.is_none() && a.rule == Rule::RequireTls),
            "{d:#?}"
        );
    }
    // DANE authenticates, but the unsigned MX lookup that named the host vouches for nothing.
    let trusted = route(r.addr, usable(vec![r.tlsa()]), DaneTrust::Trusted);
    let d = send_required(&trusted, &config(Level::Dane)).await;
    assert_eq!(d.outcome, Outcome::Bounced, "{d:#?}");
    assert!(
        d.attempts[0].reason.contains("DNSSEC"),
        "{}",
        d.attempts[0].reason
    );
    assert_eq!(r.mail(), [], "no MAIL FROM reached the receiver");
    // And a message without REQUIRETLS does go to the opportunistic peer, as before.
    let d = send(
        &unauthenticated,
        &config(Level::Dane),
        &envelope("a@client.test", TlsRequest::Default),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(d.attempts[0].security, Security::Untrusted);
}

/// A configured `may` never sends a REQUIRETLS message in plaintext: with DANE records the
/// plan is raised to DANE, and a receiver without STARTTLS gets nothing.
#[tokio::test]
async fn a_configured_may_is_raised_not_obeyed() {
    let tls = receiver(Some(self_signed()), true).await;
    let d = send_required(
        &route(tls.addr, usable(vec![tls.tlsa()]), DaneTrust::Verified),
        &configured(Level::May),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(d.attempts[0].security, Security::Verified);
    assert_eq!(d.attempts[0].rule, Rule::DaneAuth);
    assert_eq!(tls.mail(), [("a@client.test".to_owned(), true)]);

    let plain = receiver(None, true).await;
    let d = send_required(
        &route(plain.addr, usable(vec![tls.tlsa()]), DaneTrust::Verified),
        &configured(Level::May),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert!(d.attempts.iter().all(|a| a.security != Security::Plaintext));
    assert_eq!(plain.mail(), []);
}

/// Messages with and without REQUIRETLS in one batch: each goes only where it may. Over a
/// receiver without REQUIRETLS the plain message goes and the REQUIRETLS one bounces; over
/// one with it both share the connection, each MAIL FROM with its own parameters.
#[tokio::test]
async fn a_batch_sends_each_message_only_where_it_may_go() {
    let body = message();
    let required = envelope("a@client.test", TlsRequest::Required);
    let plain = envelope("c@client.test", TlsRequest::Default);
    let batch = [
        Outgoing {
            envelope: &plain,
            body: &body,
        },
        Outgoing {
            envelope: &required,
            body: &body,
        },
        Outgoing {
            envelope: &plain,
            body: &body,
        },
    ];
    let without = receiver(Some(self_signed()), false).await;
    let route_without = route(
        without.addr,
        usable(vec![without.tlsa()]),
        DaneTrust::Verified,
    );
    let d = smtp::deliver_many(
        &route_without,
        &n("example.test"),
        true,
        &batch,
        &config(Level::Dane),
    )
    .await;
    let outcomes: Vec<Outcome> = d.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Delivered, Outcome::Bounced, Outcome::Delivered],
        "{d:#?}"
    );
    assert_eq!(
        without.mail(),
        [
            ("c@client.test".to_owned(), false),
            ("c@client.test".to_owned(), false)
        ]
    );

    let with = receiver(Some(self_signed()), true).await;
    let route_with = route(with.addr, usable(vec![with.tlsa()]), DaneTrust::Verified);
    let d = smtp::deliver_many(
        &route_with,
        &n("example.test"),
        true,
        &batch,
        &config(Level::Dane),
    )
    .await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Delivered), "{d:#?}");
    assert!(
        d[1].attempts[0].reused && d[2].attempts[0].reused,
        "one connection for all"
    );
    assert_eq!(
        with.mail(),
        [
            ("c@client.test".to_owned(), false),
            ("a@client.test".to_owned(), true),
            ("c@client.test".to_owned(), false)
        ]
    );
}

/// RFC 8689 §5: the bounce of a REQUIRETLS message (null sender) carries REQUIRETLS where the
/// receiver advertises it, and is not held back where it does not.
#[tokio::test]
async fn the_bounce_of_a_requiretls_message_carries_it_where_it_can() {
    let bounce = envelope("", TlsRequest::Required);
    let with = receiver(Some(self_signed()), true).await;
    let d = send(
        &route(with.addr, usable(vec![with.tlsa()]), DaneTrust::Verified),
        &config(Level::Dane),
        &bounce,
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(with.mail(), [(String::new(), true)]);
    let without = receiver(Some(self_signed()), false).await;
    let d = send(
        &route(without.addr, no_tlsa(), DaneTrust::Verified),
        &config(Level::Dane),
        &bounce,
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(d.attempts[0].tls_request, None);
    assert_eq!(without.mail(), [(String::new(), false)]);
}

/// RFC 8689 §4.2.2: `TLS-Required: No` delivers where the recipient's DANE policy would have
/// deferred (here a certificate that does not match the TLSA records), opportunistically,
/// and says so in the attempt; the same message without it waits.
#[tokio::test]
async fn tls_required_no_goes_where_dane_would_wait_and_says_so() {
    let r = receiver(Some(self_signed()), true).await;
    let other = TestCert::self_signed(&["other.test"]).unwrap();
    let wrong: Tlsa = tlsa_3_1_1(&other).parse().unwrap();
    let route = route(r.addr, usable(vec![wrong]), DaneTrust::Verified);
    let d = send(
        &route,
        &config(Level::Dane),
        &envelope("a@client.test", TlsRequest::Default),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(r.stored(), 0);

    let d = send(
        &route,
        &config(Level::Dane),
        &envelope("a@client.test", TlsRequest::Optional),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Delivered, "{d:#?}");
    let a = &d.attempts[0];
    assert_eq!(a.security, Security::Untrusted);
    assert_eq!(a.tls_request, Some(TlsRequest::Optional));
    assert_eq!(a.rule, Rule::TlsRequiredNo);
    assert!(
        a.log_line().contains("(TLS-Required: No)"),
        "{}",
        a.log_line()
    );
    assert_eq!(r.stored(), 1);
    // The operator's configured policy is not relaxed.
    let d = send(
        &route,
        &configured(Level::Dane),
        &envelope("a@client.test", TlsRequest::Optional),
    )
    .await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(r.stored(), 1);
}

/// A REQUIRETLS message never rides a connection `TLS-Required: No` relaxed, nor a plain
/// message one: in a batch, each of these walks for its own connection.
#[tokio::test]
async fn a_relaxed_connection_carries_only_relaxed_messages() {
    let r = receiver(Some(self_signed()), true).await;
    let other = TestCert::self_signed(&["other.test"]).unwrap();
    let wrong: Tlsa = tlsa_3_1_1(&other).parse().unwrap();
    let route = route(r.addr, usable(vec![wrong]), DaneTrust::Verified);
    let body = message();
    let relaxed = envelope("no@client.test", TlsRequest::Optional);
    let plain = envelope("plain@client.test", TlsRequest::Default);
    let required = envelope("req@client.test", TlsRequest::Required);
    let batch = [
        Outgoing {
            envelope: &relaxed,
            body: &body,
        },
        Outgoing {
            envelope: &plain,
            body: &body,
        },
        Outgoing {
            envelope: &required,
            body: &body,
        },
    ];
    let d = smtp::deliver_many(
        &route,
        &n("example.test"),
        true,
        &batch,
        &config(Level::Dane),
    )
    .await;
    let outcomes: Vec<Outcome> = d.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Delivered, Outcome::Deferred, Outcome::Deferred],
        "{d:#?}"
    );
    assert_eq!(r.mail(), [("no@client.test".to_owned(), false)]);
    assert!(d[1].recipients.iter().all(|r| r.outcome == Fate::Deferred));
}
