//! Tests of the SMTP peers: Postfix receivers with and without STARTTLS, the STARTTLS-stripping
//! and MITM proxies, and the test certificates, driven by a tiny SMTP client written here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use danemta_lab::dns::{self, QueryOptions, rcode, rtype};
use danemta_lab::pki::{self, TestCa, TestCert};
use danemta_lab::{
    Lab, LabError, Mitm, Receiver, ReceiverSpec, ReceiverTls, StripStartTls, ZoneSpec, is_alive,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

const WAIT: Duration = Duration::from_secs(15);

fn ok<T>(r: Result<T, LabError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn receiver(hostname: &str, domains: &[&str], tls: ReceiverTls) -> Receiver {
    let r = ok(Receiver::start(
        ReceiverSpec::new(hostname, domains).with_tls(tls),
    ));
    eprintln!(
        "receiver {} ({hostname}) started in {:?}",
        r.addr(),
        r.startup_time()
    );
    assert!(
        r.startup_time() < Duration::from_secs(3),
        "slow start: {:?}",
        r.startup_time()
    );
    r
}

// ---------------------------------------------------------------------------------------------
// A tiny SMTP client. TLS accepts any certificate: it is for these tests only.

/// Accepts every certificate (the tests look at the certificate themselves).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Closed,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Closed => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Closed => Ok(()),
        }
    }
}

/// A reply: its code and its lines (text after the code and separator).
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
    raw: String,
}

impl Reply {
    fn has_line(&self, keyword: &str) -> bool {
        self.lines.iter().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        })
    }
}

struct Client {
    stream: Stream,
    greeting: Reply,
    peer_certs: Vec<Vec<u8>>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = Client {
            stream: Stream::Plain(tcp),
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
                raw: String::new(),
            },
            peer_certs: Vec::new(),
        };
        c.greeting = c.reply();
        assert_eq!(c.greeting.code, 220, "greeting {:?}", c.greeting.raw);
        c
    }

    fn line(&mut self) -> String {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {
                    bytes.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                }
                Err(e) => panic!(
                    "reading a reply: {e} (so far {:?})",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        let mut raw = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed; reply so far {raw:?}");
            raw.push_str(&line);
            let text = line.trim_end();
            lines.push(text.get(4..).unwrap_or("").to_string());
            if text.as_bytes().get(3) != Some(&b'-') {
                let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Reply { code, lines, raw };
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("sending {text:?}: {e}"));
    }

    fn cmd(&mut self, command: &str) -> Reply {
        self.send(&format!("{command}\r\n"));
        self.reply()
    }

    fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.lab.test");
        assert_eq!(r.code, 250, "EHLO: {:?}", r.raw);
        r
    }

    /// STARTTLS and the handshake (no certificate check); SNI `server_name`.
    fn starttls(&mut self, server_name: &str) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        if let Err(e) = self.starttls_with(config, server_name) {
            panic!("TLS handshake: {e}");
        }
    }

    /// STARTTLS and the handshake with `config`.
    fn starttls_with(&mut self, config: ClientConfig, server_name: &str) -> Result<(), String> {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.code, 220, "STARTTLS: {:?}", r.raw);
        let name = ServerName::try_from(server_name.to_string()).expect("server name");
        let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            panic!("STARTTLS twice");
        };
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        self.peer_certs = tls
            .conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// MAIL, RCPT, DATA with `body`; the final reply.
    fn mail(&mut self, from: &str, to: &str, body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "MAIL: {:?}", r.raw);
        let r = self.cmd(&format!("RCPT TO:<{to}>"));
        assert_eq!(r.code, 250, "RCPT: {:?}", r.raw);
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {:?}", r.raw);
        self.send(&format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: lab test\r\n\r\n{body}\r\n.\r\n"
        ));
        self.reply()
    }

    fn quit(mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n");
        let _ = self.stream.flush();
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn tls_receiver_offers_starttls_and_delivers_over_tls() {
    let cert = ok(TestCert::self_signed(&["mx.tls.test"]));
    let rx = receiver("mx.tls.test", &["tls.test"], (&cert).into());
    let mut c = Client::connect(rx.addr());
    assert!(
        c.greeting.raw.contains("mx.tls.test"),
        "{:?}",
        c.greeting.raw
    );
    let ehlo = c.ehlo();
    assert!(ehlo.has_line("STARTTLS"), "{:?}", ehlo.raw);
    c.starttls("mx.tls.test");
    assert_eq!(
        c.peer_certs.first(),
        Some(&cert.leaf_der),
        "the receiver's leaf"
    );
    let ehlo = c.ehlo();
    assert!(!ehlo.has_line("STARTTLS"), "offered twice: {:?}", ehlo.raw);
    let r = c.mail("alice@sender.test", "bob@tls.test", "hello over TLS");
    assert_eq!(r.code, 250, "{:?}", r.raw);
    c.quit();

    let mail = rx.wait_delivered(1, WAIT);
    assert_eq!(mail.len(), 1, "{}", rx.log());
    let m = &mail[0];
    assert!(m.contains("hello over TLS"), "{m}");
    assert!(m.contains("Delivered-To: bob@tls.test"), "{m}");
    assert!(m.contains("Received: from client.lab.test"), "{m}");
    assert!(m.contains("(using TLSv1.3 with cipher"), "{m}");
    let log = rx.log();
    assert!(
        log.contains("Anonymous TLS connection established from")
            && log.contains("TLSv1.3 with cipher"),
        "{log}"
    );
    assert!(
        rx.wait_log("status=sent (delivered to maildir)", WAIT),
        "{}",
        rx.log()
    );
}

#[test]
fn plain_receiver_has_no_starttls_and_delivers_in_plaintext() {
    let rx = receiver("mx.plain.test", &["plain.test"], ReceiverTls::None);
    let mut c = Client::connect(rx.addr());
    let ehlo = c.ehlo();
    assert!(!ehlo.has_line("STARTTLS"), "{:?}", ehlo.raw);
    assert!(ehlo.has_line("PIPELINING"), "{:?}", ehlo.raw);
    let r = c.cmd("STARTTLS");
    assert_eq!(r.code / 100, 5, "STARTTLS without TLS: {:?}", r.raw);
    let r = c.mail(
        "alice@sender.test",
        "carol@plain.test",
        "hello in plaintext",
    );
    assert_eq!(r.code, 250, "{:?}", r.raw);
    c.quit();

    let mail = rx.wait_delivered(1, WAIT);
    assert_eq!(mail.len(), 1, "{}", rx.log());
    assert!(mail[0].contains("hello in plaintext"), "{}", mail[0]);
    assert!(!mail[0].contains("using TLS"), "{}", mail[0]);
    let log = rx.log();
    assert!(log.contains("client=unknown[127.0.0.1]"), "{log}");
    assert!(!log.contains("TLS connection established"), "{log}");
}

#[test]
fn recipients_outside_accept_domains_are_refused() {
    let rx = receiver(
        "mx.only.test",
        &["only.test", "also.test"],
        ReceiverTls::None,
    );
    let mut c = Client::connect(rx.addr());
    c.ehlo();
    let r = c.cmd("MAIL FROM:<alice@sender.test>");
    assert_eq!(r.code, 250, "{:?}", r.raw);
    // (A bare `postmaster` is accepted, as RFC 5321 §4.5.1 requires, and bounced by the error
    // transport.)
    for foreign in [
        "x@other.test",
        "x@sub.only.test",
        "x@example.com",
        "x@mx.only.test",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{foreign}>"));
        assert!(
            r.code == 554 || r.code == 550,
            "{foreign} accepted: {:?}",
            r.raw
        );
    }
    for local in ["anyone@only.test", "ANY.ONE@Also.Test"] {
        let r = c.cmd(&format!("RCPT TO:<{local}>"));
        assert_eq!(r.code, 250, "{local}: {:?}", r.raw);
    }
    c.cmd("RSET");
    c.quit();
    assert!(rx.wait_log("Relay access denied", WAIT), "{}", rx.log());
    assert!(rx.delivered().is_empty());
}

#[test]
fn strip_starttls_hides_starttls() {
    let cert = ok(TestCert::self_signed(&["mx.strip.test"]));
    let rx = receiver("mx.strip.test", &["strip.test"], (&cert).into());
    let proxy = ok(StripStartTls::start(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        rx.addr(),
    ));
    assert_ne!(proxy.addr(), rx.addr());

    // A DANE client: sees no STARTTLS, tries it anyway, gives up.
    let mut c = Client::connect(proxy.addr());
    let ehlo = c.ehlo();
    assert!(!ehlo.has_line("STARTTLS"), "{:?}", ehlo.raw);
    let raw_lines: Vec<&str> = ehlo.raw.lines().collect();
    for (i, l) in raw_lines.iter().enumerate() {
        let sep = if i + 1 == raw_lines.len() { ' ' } else { '-' };
        assert_eq!(l.as_bytes().get(3), Some(&(sep as u8)), "{:?}", ehlo.raw);
    }
    let r = c.cmd("STARTTLS");
    assert_eq!(r.raw, "502 5.5.1 not implemented\r\n");
    c.quit();
    let deadline = std::time::Instant::now() + WAIT;
    while !proxy.transcript().contains("QUIT") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = proxy.transcript();
    assert!(t.contains("EHLO client.lab.test\nSTARTTLS\n"), "{t}");
    assert!(t.contains("QUIT"), "{t}");
    assert!(!t.to_ascii_uppercase().contains("MAIL FROM"), "{t}");
    assert!(!proxy.client_sent_mail(), "{t}");
    // Postfix never saw STARTTLS.
    assert!(!rx.log().contains("STARTTLS"), "{}", rx.log());

    // A client that falls back to plaintext gets its mail through, in plaintext.
    let mut c = Client::connect(proxy.addr());
    c.ehlo();
    let r = c.mail("alice@sender.test", "dave@strip.test", "stripped body");
    assert_eq!(r.code, 250, "{:?}", r.raw);
    c.quit();
    let mail = rx.wait_delivered(1, WAIT);
    assert_eq!(mail.len(), 1, "{}", rx.log());
    assert!(!mail[0].contains("using TLS"), "{}", mail[0]);
    assert!(proxy.client_sent_mail());
    assert!(proxy.transcript().contains("stripped body"));
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn mitm_presents_the_attacker_certificate() {
    let ca = ok(TestCa::new("Real CA"));
    let real = ok(TestCert::ca_signed(&["mx.mitm.test"], &ca, true));
    let attacker = ok(TestCert::self_signed(&["mx.mitm.test"]));
    let rx = receiver("mx.mitm.test", &["mitm.test"], (&real).into());
    let mitm = ok(Mitm::start(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        rx.addr(),
        &attacker.chain_pem,
        &attacker.key_pem,
    ));

    // A client that checks the certificate: sees the attacker's leaf and quits.
    let mut c = Client::connect(mitm.addr());
    assert!(c.ehlo().has_line("STARTTLS"));
    c.starttls("mx.mitm.test");
    assert_eq!(c.peer_certs.first(), Some(&attacker.leaf_der));
    assert_ne!(c.peer_certs.first(), Some(&real.leaf_der));
    assert_eq!(c.peer_certs.len(), 1, "the attacker's chain");
    let ehlo = c.ehlo();
    assert!(!ehlo.has_line("STARTTLS"), "{:?}", ehlo.raw);
    c.quit();
    let deadline = std::time::Instant::now() + WAIT;
    while !mitm.transcript().contains("QUIT") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mitm.handshakes(), 1);
    assert_eq!(mitm.client_hellos(), 1);
    assert_eq!(mitm.server_names(), vec![Some("mx.mitm.test".to_string())]);
    assert!(!mitm.client_sent_mail(), "{}", mitm.transcript());
    assert!(
        !rx.log().contains("TLS connection established"),
        "{}",
        rx.log()
    );

    // A client that verifies against the real CA aborts the handshake.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .expect("CA");
    let verifying =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut c = Client::connect(mitm.addr());
    c.ehlo();
    let err = c
        .starttls_with(verifying, "mx.mitm.test")
        .expect_err("the attacker's certificate was accepted");
    assert!(err.contains("certificate"), "{err}");
    drop(c);
    let deadline = std::time::Instant::now() + WAIT;
    while !mitm
        .transcript()
        .contains("handshake with the client failed")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        mitm.transcript()
            .contains("handshake with the client failed"),
        "{}",
        mitm.transcript()
    );
    assert_eq!((mitm.client_hellos(), mitm.handshakes()), (2, 1));
    assert!(!mitm.client_sent_mail());

    // A client that does not check: its mail is read by the attacker and relayed in plaintext.
    let mut c = Client::connect(mitm.addr());
    c.ehlo();
    c.starttls("mx.mitm.test");
    c.ehlo();
    let r = c.mail("alice@sender.test", "erin@mitm.test", "secret body");
    assert_eq!(r.code, 250, "{:?}", r.raw);
    c.quit();
    let mail = rx.wait_delivered(1, WAIT);
    assert_eq!(mail.len(), 1, "{}", rx.log());
    assert!(mail[0].contains("secret body"));
    assert!(
        !mail[0].contains("using TLS"),
        "upstream leg is plaintext: {}",
        mail[0]
    );
    let t = mitm.transcript();
    assert!(
        t.contains("MAIL FROM:<alice@sender.test>") && t.contains("secret body"),
        "{t}"
    );
    assert!(mitm.client_sent_mail());
    assert_eq!((mitm.client_hellos(), mitm.handshakes()), (3, 2));
}

#[test]
fn mitm_lures_clients_of_a_server_without_tls() {
    let attacker = ok(TestCert::self_signed(&["mx.lure.test"]));
    let rx = receiver("mx.lure.test", &["lure.test"], ReceiverTls::None);
    let mitm = ok(Mitm::start(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        rx.addr(),
        &attacker.chain_pem,
        &attacker.key_pem,
    ));
    let mut c = Client::connect(mitm.addr());
    assert!(c.ehlo().has_line("STARTTLS"));
    c.starttls("mx.lure.test");
    assert_eq!(c.peer_certs.first(), Some(&attacker.leaf_der));
    c.quit();
}

#[test]
fn drop_leaves_no_process() {
    let cert = ok(TestCert::self_signed(&["mx.drop.test"]));
    let rx = receiver("mx.drop.test", &["drop.test"], (&cert).into());
    let dir = rx.dir().to_path_buf();
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let strip = ok(StripStartTls::start(any, rx.addr()));
    let mitm = ok(Mitm::start(any, rx.addr(), &cert.chain_pem, &cert.key_pem));
    // An open connection through each proxy: Drop must not wait for it.
    let mut through_strip = Client::connect(strip.addr());
    let mut through_mitm = Client::connect(mitm.addr());
    let pids = rx.pids();
    assert!(
        pids.len() >= 3,
        "master, its children, the watchdog: {pids:?}"
    );
    assert!(pids.iter().all(|&p| is_alive(p)));
    let (strip_addr, mitm_addr) = (strip.addr(), mitm.addr());
    // The proxies' listening sockets (inodes): other tests may claim the addresses once free.
    let proxy_sockets: Vec<u64> = own_listeners()
        .into_iter()
        .filter(|(a, _)| *a == strip_addr || *a == mitm_addr)
        .map(|(_, inode)| inode)
        .collect();
    assert_eq!(proxy_sockets.len(), 2, "{:?}", own_listeners());
    drop(strip);
    drop(mitm);
    drop(rx);
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(alive.is_empty(), "still alive: {alive:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let listening = own_listeners();
    assert!(
        !listening
            .iter()
            .any(|(_, inode)| proxy_sockets.contains(inode)),
        "{listening:?}"
    );
    // The relayed connections were closed.
    for c in [&mut through_strip, &mut through_mitm] {
        let mut buf = [0u8; 64];
        assert!(matches!(c.stream.read(&mut buf), Ok(0) | Err(_)));
    }
}

/// The local addresses and inodes of the TCP sockets this process has listening.
fn own_listeners() -> Vec<(SocketAddr, u64)> {
    let inodes: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            if *f.get(3)? != "0A" || !inodes.contains(&inode) {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((SocketAddr::from((ip, port)), inode))
        })
        .collect()
}

#[test]
fn explicit_address_and_invalid_specs() {
    let addr: SocketAddr = "127.0.30.77:2525".parse().expect("addr");
    let spec = ReceiverSpec {
        addr,
        hostname: "mx.explicit.test".into(),
        tls: ReceiverTls::None,
        accept_domains: vec!["explicit.test".into()],
    };
    let rx = ok(Receiver::start(spec.clone()));
    assert_eq!(rx.addr(), addr);
    // The address is taken now.
    assert!(matches!(
        Receiver::start(spec.clone()),
        Err(LabError::PeerAddrInUse { .. })
    ));
    assert!(matches!(
        StripStartTls::start(addr, "127.0.30.77:25".parse().expect("addr")),
        Err(LabError::PeerAddrInUse { .. })
    ));
    let bad = [
        ReceiverSpec {
            addr: "192.0.2.1:25".parse().expect("addr"),
            ..spec.clone()
        },
        ReceiverSpec {
            hostname: "mx\nrelay_domains = *".into(),
            ..spec.clone()
        },
        ReceiverSpec {
            accept_domains: vec!["a.test, b.test".into()],
            ..spec.clone()
        },
    ];
    for spec in bad {
        match Receiver::start(spec) {
            Err(LabError::Receiver { detail, .. }) => eprintln!("refused: {detail}"),
            other => panic!("accepted a bad spec: {other:?}"),
        }
    }
    assert!(matches!(
        StripStartTls::start(
            SocketAddr::from(([0, 0, 0, 0], 0)),
            "192.0.2.1:25".parse().expect("addr")
        ),
        Err(LabError::Proxy { .. })
    ));
}

#[test]
fn receivers_run_together_and_alongside_the_dns_lab() {
    let certs: Vec<TestCert> = (1..=3)
        .map(|i| ok(TestCert::self_signed(&[&format!("mx{i}.peers.test")])))
        .collect();
    let receivers: Vec<Receiver> = std::thread::scope(|s| {
        let handles: Vec<_> = certs
            .iter()
            .enumerate()
            .map(|(i, cert)| {
                s.spawn(move || {
                    receiver(
                        &format!("mx{}.peers.test", i + 1),
                        &["peers.test"],
                        cert.into(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("receiver thread"))
            .collect()
    });
    let mut addrs: Vec<SocketAddr> = receivers.iter().map(Receiver::addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);

    // A signed zone whose MX hosts are these receivers, with their TLSA records.
    let mut records = String::new();
    for (i, (rx, cert)) in receivers.iter().zip(&certs).enumerate() {
        let n = i + 1;
        records.push_str(&format!(
            "@ MX {} mx{n}\nmx{n} A {}\n_25._tcp.mx{n} TLSA {}\n",
            n * 10,
            rx.addr().ip(),
            pki::tlsa_3_1_1(cert)
        ));
    }
    let lab = ok(Lab::builder()
        .zone(ZoneSpec::secure("peers.test", records))
        .start());
    for (i, (rx, cert)) in receivers.iter().zip(&certs).enumerate() {
        let host = format!("mx{}.peers.test", i + 1);
        let a = ok(dns::query(
            lab.validating_resolver(),
            &host,
            rtype::A,
            QueryOptions::recursive(),
        ));
        assert!(
            a.rcode == rcode::NOERROR && a.authentic_data,
            "{}",
            a.summary()
        );
        assert_eq!(
            a.answers_of(rtype::A).next().and_then(|r| r.address()),
            Some(rx.addr().ip())
        );
        let tlsa = ok(dns::query(
            lab.validating_resolver(),
            &format!("_25._tcp.{host}"),
            rtype::TLSA,
            QueryOptions::recursive(),
        ));
        assert!(tlsa.authentic_data, "{}", tlsa.summary());
        let rdata = &tlsa.answers_of(rtype::TLSA).next().expect("TLSA").rdata;
        assert_eq!(&rdata[..3], &[3, 1, 1]);
        assert_eq!(pki::sha256_hex(&cert.spki_der), hex(&rdata[3..]));
        // And the receiver presents that key.
        let mut c = Client::connect(rx.addr());
        c.ehlo();
        c.starttls(&host);
        assert_eq!(c.peer_certs.first(), Some(&cert.leaf_der));
        c.quit();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn ipv6_receiver_listens_on_exactly_its_address() {
    let addr: SocketAddr = "[::1]:2526".parse().expect("addr");
    let cert = ok(TestCert::self_signed(&["mx.v6.test"]));
    let rx = ok(Receiver::start(
        ReceiverSpec::new("mx.v6.test", &["v6.test"])
            .at(addr)
            .with_tls(&cert),
    ));
    let mut c = Client::connect(addr);
    assert!(c.ehlo().has_line("STARTTLS"));
    c.starttls("mx.v6.test");
    c.ehlo();
    let r = c.mail("alice@sender.test", "frank@v6.test", "hello over IPv6");
    assert_eq!(r.code, 250, "{:?}", r.raw);
    c.quit();
    let mail = rx.wait_delivered(1, WAIT);
    assert!(
        mail.first().is_some_and(|m| m.contains("hello over IPv6")),
        "{}",
        rx.log()
    );
    assert!(rx.log().contains("client=unknown[::1]"), "{}", rx.log());
    // Nothing on the IPv4 side.
    assert!(
        TcpStream::connect_timeout(
            &"127.0.0.1:2526".parse().expect("addr"),
            Duration::from_millis(300)
        )
        .is_err()
    );
}
