//! The SMTP client against scripted servers on loopback: the protocol paths and the bad
//! replies that real servers (or attackers) send. TLS paths are tested against Postfix in the
//! lab (crates/danemta/tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp::session::{AuthUnavailable, Session, SessionError, Stage};
use smtp::tls::{Auth, Mode};
use smtp::{Envelope, Message, Timeouts};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server that answers each client line from a script: (expected prefix, reply to send).
/// Returns its address and, when the session ends, everything the client sent.
async fn scripted(
    greeting: &'static str,
    script: Vec<(&'static str, &'static str)>,
) -> (SocketAddr, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut seen = String::new();
        write.write_all(greeting.as_bytes()).await.unwrap();
        let mut script = script.into_iter();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            seen.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                } else {
                    continue;
                }
            }
            let Some((expect, reply)) = script.next() else {
                break;
            };
            assert!(
                line.starts_with(expect),
                "expected {expect:?}, got {line:?}"
            );
            if expect == "DATA" {
                in_data = true;
            }
            write.write_all(reply.as_bytes()).await.unwrap();
        }
        let _ = tx.send(seen);
    });
    (addr, rx)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn quick() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(2))
}

async fn open(addr: SocketAddr, mode: Mode) -> Result<Session, SessionError> {
    Session::open(
        addr,
        "mx.example.test",
        "client.test",
        &mode,
        &provider(),
        &quick(),
    )
    .await
}

#[tokio::test]
async fn a_plaintext_transaction_with_pipelining_and_dot_stuffing() {
    let (addr, seen) = scripted(
        "220 mx ESMTP\r\n",
        vec![
            (
                "EHLO client.test",
                "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
            ),
            ("MAIL FROM:<a@x.test> SIZE=", "250 2.1.0 Ok\r\n"),
            ("RCPT TO:<b@y.test>", "250 2.1.5 Ok\r\n"),
            ("RCPT TO:<c@y.test>", "550 5.1.1 unknown\r\n"),
            ("DATA", "354 go\r\n"),
            (".", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let mut session = open(addr, Mode::Opportunistic).await.unwrap();
    assert!(session.tls().is_none(), "no STARTTLS offered: plaintext");
    let envelope = Envelope::new("a@x.test", ["b@y.test", "c@y.test"]).unwrap();
    let message = Message::new(b"Subject: t\n\n.dot line\nend").unwrap();
    let t = session.transact(&envelope, &message).await.unwrap();
    assert_eq!(t.rcpt[1].code(), 550);
    assert_eq!(t.data.unwrap().code(), 250);
    session.quit().await;
    let seen = seen.await.unwrap();
    assert!(
        seen.contains(
            "MAIL FROM:<a@x.test> SIZE=31\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
        ),
        "{seen}"
    );
    assert!(seen.contains("\r\n..dot line\r\nend\r\n.\r\n"), "{seen}");
}

#[tokio::test]
async fn helo_fallback_and_required_tls_without_starttls() {
    let (addr, _) = scripted(
        "220 old server\r\n",
        vec![
            ("EHLO", "502 5.5.2 what?\r\n"),
            ("HELO client.test", "250 hello\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let session = open(addr, Mode::Opportunistic).await.unwrap();
    assert!(!session.capabilities().starttls);
    session.quit().await;

    let (addr, _) = scripted("220 mx\r\n", vec![("EHLO", "250-mx\r\n250 PIPELINING\r\n")]).await;
    let err = open(addr, Mode::Required(Auth::None)).await.err().unwrap();
    assert_eq!(err, SessionError::StartTlsNotOffered);
}

#[tokio::test]
async fn data_injected_after_the_starttls_reply_is_refused() {
    let (addr, _) = scripted(
        "220 mx\r\n",
        vec![
            ("EHLO", "250-mx\r\n250 STARTTLS\r\n"),
            ("STARTTLS", "220 go ahead\r\n250 injected\r\n"),
        ],
    )
    .await;
    let err = open(addr, Mode::Required(Auth::None)).await.err().unwrap();
    assert_eq!(err, SessionError::StartTlsInjection);
}

#[tokio::test]
async fn bad_greetings_and_replies_are_clear_errors() {
    for (greeting, want) in [
        ("554 no service here\r\n", "refused"),
        ("hello there\r\n", "protocol error"),
        ("220-a\r\n250 b\r\n", "different codes"),
    ] {
        let (addr, _) = scripted(greeting, vec![]).await;
        let err = open(addr, Mode::Opportunistic).await.err().unwrap();
        assert!(err.to_string().contains(want), "{greeting:?}: {err}");
    }
    // A server that never answers: the greeting timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let _conn = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let err = open(addr, Mode::Opportunistic).await.err().unwrap();
    assert_eq!(err, SessionError::Timeout(Stage::Greeting));
    // Nobody listening.
    let err = open("127.0.0.1:1".parse().unwrap(), Mode::Opportunistic)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SessionError::Connect(_)));
}

#[tokio::test]
async fn internationalised_addresses_need_smtputf8() {
    let (addr, _) = scripted(
        "220 mx\r\n",
        vec![
            ("EHLO", "250-mx\r\n250 PIPELINING\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let mut session = open(addr, Mode::Opportunistic).await.unwrap();
    let envelope = Envelope::new("a@x.test", ["jösé@y.test"]).unwrap();
    let message = Message::new(b"Subject: t\n\nhi\n").unwrap();
    let err = session.transact(&envelope, &message).await.err().unwrap();
    assert_eq!(err, SessionError::SmtpUtf8Unsupported);
    assert_eq!(err.reply().map(|r| r.code()), Some(553));
    assert!(
        err.to_string()
            .starts_with("MAIL FROM refused: 553 5.6.7 the server does not support SMTPUTF8"),
        "{err}"
    );
    session.quit().await;

    let (addr, seen) = scripted(
        "220 mx\r\n",
        vec![
            ("EHLO", "250-mx\r\n250 SMTPUTF8\r\n"),
            ("MAIL FROM:<a@x.test> SMTPUTF8", "250 ok\r\n"),
            ("RCPT TO:<jösé@y.test>", "250 ok\r\n"),
            ("DATA", "354 go\r\n"),
            (".", "250 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let mut session = open(addr, Mode::Opportunistic).await.unwrap();
    assert_eq!(
        session
            .transact(&envelope, &message)
            .await
            .unwrap()
            .data
            .unwrap()
            .code(),
        250
    );
    session.quit().await;
    assert!(seen.await.unwrap().contains("SMTPUTF8"));
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_not_sent() {
    let (addr, seen) = scripted(
        "220 mx\r\n",
        vec![
            ("EHLO", "250-mx\r\n250 SIZE 10\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let mut session = open(addr, Mode::Opportunistic).await.unwrap();
    let envelope = Envelope::new("a@x.test", ["b@y.test"]).unwrap();
    let message = Message::new(b"Subject: too long for ten bytes\n\nbody\n").unwrap();
    let err = session.transact(&envelope, &message).await.err().unwrap();
    assert!(
        matches!(err, SessionError::TooBig { limit: 10, .. }),
        "{err}"
    );
    session.quit().await;
    assert!(!seen.await.unwrap().contains("MAIL FROM"));
}

/// A listener that records whether anyone connected, and what they sent.
async fn watching() -> (SocketAddr, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
        let mut seen = String::new();
        if let Ok(Ok((stream, _))) = accepted {
            seen.push_str("(connected)\n");
            let (read, mut write) = stream.into_split();
            let _ = write.write_all(b"220 mx\r\n").await;
            let mut read = BufReader::new(read);
            let mut line = String::new();
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), read.read_line(&mut line)).await
            {
                if n == 0 {
                    break;
                }
                seen.push_str(&line);
                let _ = write.write_all(b"250 ok\r\n").await;
                line.clear();
            }
        }
        let _ = tx.send(seen);
    });
    (addr, rx)
}

#[tokio::test]
async fn a_helo_name_carrying_a_command_is_refused_before_connecting() {
    for bad in [
        "client.test\r\nMAIL FROM:<forged@x.test>",
        "client.test\nRSET",
        "client.test MAIL",
        "",
    ] {
        let (addr, seen) = watching().await;
        let result = Session::open(
            addr,
            "mx.example.test",
            bad,
            &Mode::Opportunistic,
            &provider(),
            &quick(),
        )
        .await;
        assert!(
            matches!(result, Err(SessionError::InvalidInput(_))),
            "{bad:?}: {:?}",
            result.err()
        );
        assert_eq!(
            seen.await.unwrap(),
            "",
            "{bad:?}: nothing reaches the server"
        );
    }
}

#[tokio::test]
async fn auth_without_starttls_is_a_missing_capability_not_a_failed_handshake() {
    let (addr, seen) = scripted(
        "220 mx\r\n",
        vec![
            ("EHLO", "250-mx\r\n250 AUTH PLAIN\r\n"),
            ("QUIT", "221 bye\r\n"),
        ],
    )
    .await;
    let mut session = open(addr, Mode::Opportunistic).await.unwrap();
    let err = session.auth_plain("alice", "secret").await.unwrap_err();
    assert!(
        !err.is_tls_handshake(),
        "{err}: would trigger the plaintext retry"
    );
    assert_eq!(err, SessionError::AuthUnavailable(AuthUnavailable::NoTls));
    session.quit().await;
    assert!(
        !seen.await.unwrap().contains("AUTH"),
        "no password in the clear"
    );
}

/// Servers count a client's errors per session and slow down past a limit (Postfix: 10),
/// then hang up: a session with 10 refused replies is no longer offered for reuse, one with
/// 9 still is.
#[tokio::test]
async fn a_session_with_ten_refusals_is_not_reused() {
    for (refused, reusable) in [(9, true), (10, false)] {
        let mut script = vec![
            ("EHLO client.test", "250-mx\r\n250 PIPELINING\r\n"),
            ("MAIL FROM:<a@x.test>", "250 2.1.0 Ok\r\n"),
        ];
        script.extend(std::iter::repeat_n(
            ("RCPT TO:", "550 5.1.1 unknown\r\n"),
            refused,
        ));
        script.push(("RCPT TO:", "250 2.1.5 Ok\r\n"));
        script.push(("DATA", "354 go\r\n"));
        script.push((".", "250 2.0.0 queued\r\n"));
        let (addr, _seen) = scripted("220 mx ESMTP\r\n", script).await;
        let mut session = open(addr, Mode::Opportunistic).await.unwrap();
        let rcpts: Vec<String> = (0..=refused).map(|i| format!("r{i}@y.test")).collect();
        let envelope = Envelope::new("a@x.test", rcpts.iter().map(String::as_str)).unwrap();
        let message = Message::new(b"Subject: t\n\nbody\n").unwrap();
        let t = session.transact(&envelope, &message).await.unwrap();
        assert_eq!(t.data.unwrap().code(), 250);
        assert_eq!(session.is_reusable(), reusable, "{refused} refusals");
    }
}
