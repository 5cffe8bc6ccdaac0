//! Receivers that misbehave, scripted over loopback: each ends in the right per-recipient
//! state (RFC 5321 §4.2.5, §4.5.4.1): a connection dropped in DATA or a `421` defers, no
//! reply after the final dot defers and says why the retry may duplicate the message, mixed
//! `5xx`/`4xx`/`250` recipients in one transaction end bounced, deferred and delivered, and
//! replies slower than the timeout defer while slow ones within it deliver, and TLS ended by
//! the server (a `close_notify` alert) in the middle of a transaction defers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
use smtp::{Config, Envelope, Fate, Level, Message, Timeouts};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server does at a step of its script.
#[derive(Clone, Copy)]
enum Act {
    /// Answers this (a whole reply, CRLF included).
    Reply(&'static str),
    /// Answers this after a pause.
    Slow(Duration, &'static str),
    /// Closes the connection.
    Close,
    /// Answers nothing, keeps the connection open.
    Hang,
}

/// A server that greets, then answers each command (the end of DATA counts as one, `"."`)
/// as its script says, checking the command's start; past the script it answers `250`.
/// With `drop_in_data`, it closes the connection that many body lines into DATA.
async fn server(script: Vec<(&'static str, Act)>, drop_in_data: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write
            .write_all(b"220 mx.example.test ESMTP\r\n")
            .await
            .unwrap();
        let mut script = script.into_iter();
        let (mut in_data, mut body_lines) = (false, 0);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if in_data {
                if line != ".\r\n" {
                    body_lines += 1;
                    if drop_in_data == Some(body_lines) {
                        return;
                    }
                    continue;
                }
                in_data = false;
                line = ".".into();
            }
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            let act = match script.next() {
                Some((expect, act)) => {
                    assert!(upper.starts_with(expect), "expected {expect}, got {line:?}");
                    act
                }
                None if upper.starts_with("EHLO") => Act::Reply("250 mx.example.test\r\n"),
                None => Act::Reply("250 ok\r\n"),
            };
            if upper.starts_with("DATA")
                && matches!(act, Act::Reply(r) | Act::Slow(_, r) if r.starts_with("354"))
            {
                in_data = true;
            }
            match act {
                Act::Reply(r) => write.write_all(r.as_bytes()).await.unwrap(),
                Act::Slow(pause, r) => {
                    tokio::time::sleep(pause).await;
                    let _ = write.write_all(r.as_bytes()).await;
                }
                Act::Close => return,
                Act::Hang => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
            }
        }
    });
    addr
}

fn route(addr: SocketAddr) -> Route {
    let name: DnsName = "mx.example.test".parse().unwrap();
    Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![Candidate {
            name: name.clone(),
            preference: 10,
            port: addr.port(),
            tlsa_base: name,
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
        }],
    }
}

/// Delivers one message to `rcpts` through the scripted server (opportunistic TLS, which the
/// server does not offer; timeouts of one second).
async fn deliver(addr: SocketAddr, rcpts: &[&str]) -> smtp::Delivery {
    let cfg = Config {
        helo_name: "client.test".parse().unwrap(),
        level: Level::May,
        timeouts: Timeouts::uniform(Duration::from_secs(1)),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        fingerprints: vec![],
        roots: Arc::new(rustls::RootCertStore::empty()),
        match_names: vec![],
        credentials: None,
        limits: smtp::Limits::default(),
        sessions: None,
        level_configured: false,
        mta_sts: None,
    };
    let envelope = Envelope::new("a@client.test", rcpts.iter().copied()).unwrap();
    let body = format!("Subject: t\n\n{}", "a line of the body\n".repeat(50));
    let message = Message::new(body.as_bytes()).unwrap();
    smtp::deliver(
        &route(addr),
        &"example.test".parse().unwrap(),
        true,
        &envelope,
        &message,
        &cfg,
    )
    .await
}

fn fates(d: &smtp::Delivery) -> Vec<(String, Fate)> {
    d.recipients
        .iter()
        .map(|r| (r.address.clone(), r.outcome))
        .collect()
}

fn reason(d: &smtp::Delivery) -> String {
    d.recipients
        .iter()
        .map(|r| r.reply.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

const EHLO: (&str, Act) = ("EHLO", Act::Reply("250 mx.example.test\r\n"));

#[tokio::test]
async fn a_connection_dropped_in_the_middle_of_data_defers() {
    let addr = server(
        vec![
            EHLO,
            ("MAIL", Act::Reply("250 ok\r\n")),
            ("RCPT", Act::Reply("250 ok\r\n")),
            ("DATA", Act::Reply("354 go\r\n")),
        ],
        Some(10),
    )
    .await;
    let d = deliver(addr, &["b@example.test"]).await;
    assert_eq!(
        fates(&d),
        [("b@example.test".into(), Fate::Deferred)],
        "{}",
        reason(&d)
    );
}

#[tokio::test]
async fn no_reply_after_the_final_dot_defers_and_says_a_duplicate_is_possible() {
    let addr = server(
        vec![
            EHLO,
            ("MAIL", Act::Reply("250 ok\r\n")),
            ("RCPT", Act::Reply("250 ok\r\n")),
            ("DATA", Act::Reply("354 go\r\n")),
            (".", Act::Hang),
        ],
        None,
    )
    .await;
    let d = deliver(addr, &["b@example.test"]).await;
    assert_eq!(fates(&d), [("b@example.test".into(), Fate::Deferred)]);
    let why = reason(&d);
    assert!(why.contains("final dot") && why.contains("twice"), "{why}");
}

#[tokio::test]
async fn a_421_in_the_middle_of_a_session_defers() {
    let addr = server(
        vec![
            EHLO,
            ("MAIL", Act::Reply("250 ok\r\n")),
            (
                "RCPT",
                Act::Reply("421 4.3.2 mx.example.test shutting down\r\n"),
            ),
            ("RCPT", Act::Close),
        ],
        None,
    )
    .await;
    let d = deliver(addr, &["b@example.test"]).await;
    assert_eq!(
        fates(&d),
        [("b@example.test".into(), Fate::Deferred)],
        "{}",
        reason(&d)
    );
    assert!(reason(&d).contains("421"), "{}", reason(&d));
}

#[tokio::test]
async fn mixed_recipient_replies_end_bounced_deferred_and_delivered() {
    let addr = server(
        vec![
            EHLO,
            ("MAIL", Act::Reply("250 ok\r\n")),
            ("RCPT", Act::Reply("550 5.1.1 no such user\r\n")),
            ("RCPT", Act::Reply("452 4.2.2 mailbox full\r\n")),
            ("RCPT", Act::Reply("250 ok\r\n")),
            ("DATA", Act::Reply("354 go\r\n")),
            (".", Act::Reply("250 2.0.0 queued\r\n")),
        ],
        None,
    )
    .await;
    let d = deliver(
        addr,
        &["gone@example.test", "full@example.test", "ok@example.test"],
    )
    .await;
    assert_eq!(
        fates(&d),
        [
            ("gone@example.test".into(), Fate::Bounced),
            ("full@example.test".into(), Fate::Deferred),
            ("ok@example.test".into(), Fate::Delivered),
        ],
        "{}",
        reason(&d)
    );
}

#[tokio::test]
async fn every_recipient_refused_sends_no_data() {
    let addr = server(
        vec![
            EHLO,
            ("MAIL", Act::Reply("250 ok\r\n")),
            ("RCPT", Act::Reply("550 5.1.1 no such user\r\n")),
            ("RCPT", Act::Reply("450 4.2.1 try later\r\n")),
            // Anything but RSET or QUIT now would be a protocol error on our side.
            ("RSET", Act::Reply("250 ok\r\n")),
        ],
        None,
    )
    .await;
    let d = deliver(addr, &["gone@example.test", "later@example.test"]).await;
    assert_eq!(
        fates(&d),
        [
            ("gone@example.test".into(), Fate::Bounced),
            ("later@example.test".into(), Fate::Deferred),
        ],
        "{}",
        reason(&d)
    );
}

#[tokio::test]
async fn replies_slower_than_the_timeout_defer_and_slow_ones_within_it_deliver() {
    let too_slow = server(
        vec![
            EHLO,
            ("MAIL", Act::Slow(Duration::from_secs(3), "250 ok\r\n")),
        ],
        None,
    )
    .await;
    let d = deliver(too_slow, &["b@example.test"]).await;
    assert_eq!(fates(&d), [("b@example.test".into(), Fate::Deferred)]);
    assert!(reason(&d).contains("timed out"), "{}", reason(&d));

    let slow = server(
        vec![
            EHLO,
            ("MAIL", Act::Slow(Duration::from_millis(400), "250 ok\r\n")),
            ("RCPT", Act::Slow(Duration::from_millis(400), "250 ok\r\n")),
            ("DATA", Act::Slow(Duration::from_millis(400), "354 go\r\n")),
            (".", Act::Slow(Duration::from_millis(400), "250 queued\r\n")),
        ],
        None,
    )
    .await;
    let d = deliver(slow, &["b@example.test"]).await;
    assert_eq!(
        fates(&d),
        [("b@example.test".into(), Fate::Delivered)],
        "{}",
        reason(&d)
    );
}

/// A server that offers STARTTLS, completes the handshake, answers EHLO and MAIL inside
/// TLS, then ends TLS (a `close_notify` alert) and the connection in the middle of the
/// transaction.
async fn tls_server_closing_mid_transaction() -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let cert = danemta_lab::pki::TestCert::self_signed(&["mx.example.test"]).unwrap();
    let chain = vec![CertificateDer::from(cert.leaf_der.clone())];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut plain = BufReader::new(stream);
        plain
            .get_mut()
            .write_all(b"220 mx ESMTP\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        plain.read_line(&mut line).await.unwrap(); // EHLO
        plain
            .get_mut()
            .write_all(b"250-mx\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        line.clear();
        plain.read_line(&mut line).await.unwrap(); // STARTTLS
        plain
            .get_mut()
            .write_all(b"220 go ahead\r\n")
            .await
            .unwrap();
        let tls = acceptor.accept(plain.into_inner()).await.unwrap();
        let mut tls = BufReader::new(tls);
        for reply in ["250 mx\r\n", "250 ok\r\n"] {
            line.clear();
            tls.read_line(&mut line).await.unwrap(); // EHLO, MAIL
            tls.get_mut().write_all(reply.as_bytes()).await.unwrap();
        }
        // RCPT arrives; the answer is a TLS close_notify, then the TCP close.
        line.clear();
        let _ = tls.read_line(&mut line).await;
        let _ = tls.get_mut().shutdown().await;
    });
    addr
}

#[tokio::test]
async fn tls_ended_by_the_server_mid_transaction_defers() {
    let addr = tls_server_closing_mid_transaction().await;
    let d = deliver(addr, &["b@example.test"]).await;
    assert_eq!(
        fates(&d),
        [("b@example.test".into(), Fate::Deferred)],
        "{}",
        reason(&d)
    );
    assert!(
        d.attempts.iter().any(|a| a.tls.is_some()),
        "the session was in TLS: {:?}",
        d.attempts
    );
}
