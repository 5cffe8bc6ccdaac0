//! Why a STARTTLS probe failed, over the wire: a closed port, a server that never greets or
//! hangs up before greeting, one that refuses service, one that offers no STARTTLS, and one
//! whose TLS handshake fails. Each has its own finding; none of the first four is reported as
//! "STARTTLS missing".

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use check::report::{DomainReport, Finding, Level, Verdict};
use check::{ProbeCache, ProbeConfig, check_domain};
use dns::{DnsName, Lookup, Mx, Outcome, Record, RecordType, Resolver, Status};
use smtp::Timeouts;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Two records (the current and the next key), so no `single-key` warning.
const EE: [&str; 2] = [
    "3 1 1 0101010101010101010101010101010101010101010101010101010101010101",
    "3 1 1 0202020202020202020202020202020202020202020202020202020202020202",
];

/// Secure DNS for `<domain>`: MX `mx.<domain>` at 127.0.0.1, with usable TLSA records when
/// `dane`, with a secure denial of TLSA records otherwise.
struct Dns {
    dane: bool,
}

impl Resolver for Dns {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        let text = name.as_str();
        let records = match rtype {
            RecordType::Mx if !text.starts_with("mx.") => vec![Record::Mx(Mx {
                preference: 10,
                exchange: format!("mx.{text}").parse().unwrap(),
            })],
            RecordType::A if text.starts_with("mx.") => vec![Record::Address(LOCALHOST)],
            RecordType::Tlsa if self.dane => EE
                .iter()
                .map(|r| Record::Tlsa(r.parse().unwrap()))
                .collect(),
            _ => Vec::new(),
        };
        let outcome = if records.is_empty() {
            Outcome::NoData
        } else {
            Outcome::Records(records)
        };
        dns::testing::lookup(name.clone(), rtype, Status::Secure, outcome, vec![], 60)
    }
}

/// How a test server behaves.
#[derive(Clone, Copy)]
enum Server {
    /// Accepts the connection and never says anything.
    Silent,
    /// Accepts the connection and closes it before the greeting.
    HangsUp,
    /// Greets with 554: no service here (RFC 5321 §3.1).
    Refuses,
    /// An SMTP server without STARTTLS.
    NoStartTls,
    /// Offers STARTTLS, agrees to it, then answers the TLS ClientHello with plaintext.
    BrokenTls,
}

/// Starts `server` on a free loopback port; returns the port.
async fn start(server: Server) -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                match server {
                    Server::Silent => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    Server::HangsUp => return,
                    Server::Refuses => {
                        let _ = write.write_all(b"554 no service for you\r\n").await;
                        let _ = lines.next_line().await;
                        return;
                    }
                    Server::NoStartTls | Server::BrokenTls => {
                        let _ = write.write_all(b"220 mx ESMTP\r\n").await;
                    }
                }
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match (verb.as_str(), server) {
                        ("EHLO", Server::BrokenTls) => b"250-mx\r\n250 STARTTLS\r\n",
                        ("EHLO", _) => b"250-mx\r\n250 SIZE 1000000\r\n",
                        ("STAR", Server::BrokenTls) => {
                            let _ = write.write_all(b"220 go ahead\r\n").await;
                            // Wait for the ClientHello, then answer it with plaintext.
                            let _ = lines.next_line().await;
                            let _ = write.write_all(b"this is not TLS\r\n").await;
                            return;
                        }
                        ("QUIT", _) => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 no\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A port on which nothing listens.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

fn config() -> ProbeConfig {
    ProbeConfig::new(
        Arc::new(rustls::crypto::ring::default_provider()),
        Timeouts::uniform(Duration::from_secs(1)),
        "probe.test".into(),
        Duration::ZERO,
    )
}

async fn report(domain: &str, dane: bool, port: u16) -> DomainReport {
    let cfg = config();
    let cache = ProbeCache::default();
    check_domain(
        &Dns { dane },
        &domain.parse().unwrap(),
        port,
        Some((&cfg, &cache)),
    )
    .await
}

/// The host's findings above info, as (code, level).
fn findings(r: &DomainReport) -> Vec<(&'static str, Level)> {
    r.hosts[0]
        .findings
        .iter()
        .filter(|f| f.level > Level::Info)
        .map(|f: &Finding| (f.code, f.level))
        .collect()
}

/// The `error_kind` of the first address's probe, as JSON shows it.
fn error_kind(r: &DomainReport) -> serde_json::Value {
    serde_json::to_value(r).unwrap()["hosts"][0]["addresses"][0]["tls"]["error_kind"].clone()
}

#[tokio::test]
async fn a_closed_port_is_unreachable_not_missing_starttls() {
    let r = report("closed.test", true, closed_port().await).await;
    assert_eq!(findings(&r), [("unreachable", Level::Fail)], "{r:#?}");
    assert_eq!(error_kind(&r), "unreachable");
    assert_eq!(r.verdict, Verdict::Fail);
    // Without DANE, the report says so (info) but judges only DANE: still ok.
    let r = report("closed-plain.test", false, closed_port().await).await;
    assert_eq!(findings(&r), [], "{r:#?}");
    assert!(r.hosts[0].findings.iter().any(|f| f.code == "unreachable"));
    assert_eq!(r.verdict, Verdict::Ok);
}

#[tokio::test]
async fn no_greeting_is_unreachable() {
    for server in [Server::Silent, Server::HangsUp] {
        let r = report("silent.test", true, start(server).await).await;
        assert_eq!(findings(&r), [("unreachable", Level::Fail)], "{r:#?}");
        assert_eq!(error_kind(&r), "unreachable");
    }
}

#[tokio::test]
async fn a_refusing_greeting_is_an_smtp_failure() {
    let r = report("refuses.test", true, start(Server::Refuses).await).await;
    assert_eq!(findings(&r), [("smtp-failed", Level::Fail)], "{r:#?}");
    assert_eq!(error_kind(&r), "smtp-failed");
    let message = &r.hosts[0].findings.iter().find(|f| f.code == "smtp-failed");
    assert!(message.unwrap().message.contains("554"), "{r:#?}");
}

#[tokio::test]
async fn a_server_without_starttls_is_missing_starttls() {
    let port = start(Server::NoStartTls).await;
    let r = report("nostarttls.test", true, port).await;
    assert_eq!(findings(&r), [("starttls-missing", Level::Fail)], "{r:#?}");
    assert_eq!(error_kind(&r), "starttls-missing");
    let tls = serde_json::to_value(&r).unwrap()["hosts"][0]["addresses"][0]["tls"].clone();
    assert_eq!(tls["starttls"], false);
    // Without TLSA records nobody requires TLS of it: nothing to report.
    let r = report("nostarttls-plain.test", false, port).await;
    assert_eq!(findings(&r), [], "{r:#?}");
}

#[tokio::test]
async fn a_failed_tls_handshake_has_its_own_finding() {
    let port = start(Server::BrokenTls).await;
    let r = report("badtls.test", true, port).await;
    assert_eq!(
        findings(&r),
        [("tls-handshake-failed", Level::Fail)],
        "{r:#?}"
    );
    assert_eq!(error_kind(&r), "tls-handshake-failed");
    let tls = serde_json::to_value(&r).unwrap()["hosts"][0]["addresses"][0]["tls"].clone();
    assert_eq!(tls["starttls"], true, "STARTTLS was offered");
    // Without DANE, senders fall back to plaintext: a warning.
    let r = report("badtls-plain.test", false, port).await;
    assert_eq!(
        findings(&r),
        [("tls-handshake-failed", Level::Warn)],
        "{r:#?}"
    );
}
