//! The SMTP server session (smtp::server) over loopback: the state machine, limits,
//! pipelining, STARTTLS with SNI chain selection, SMTP smuggling and hostile clients, against
//! raw byte-level clients, the crate's own client `Session`, and swaks (an independent client,
//! Debian package `swaks`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use danemta_lab::pki::TestCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use smtp::reply::Reply;
use smtp::server::tls::SniResolver;
use smtp::server::{
    Acceptor, Client, Closed, Config, QueueId, RcptTo, Ret, Server, ServerError, Timeouts,
    Transaction, reply,
};
use smtp::session::Session;
use smtp::tls::Mode;
use smtp::{Envelope, HeloName, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the relay would do: refuse recipients at `refused.test` (relay denied), refuse
/// messages whose body says `REFUSE-ME` (disk full), store the rest in memory.
#[derive(Default)]
struct Relay {
    stored: Mutex<Vec<(Client, Transaction, Vec<u8>)>>,
    /// Whether it honours REQUIRETLS (RFC 8689), which the session then offers.
    requiretls: bool,
}

impl Acceptor for Relay {
    fn requiretls(&self) -> bool {
        self.requiretls
    }

    async fn rcpt(
        &self,
        _: &Client,
        _: &smtp::server::MailFrom,
        rcpt: &RcptTo,
    ) -> Result<(), Reply> {
        if rcpt.recipient.ends_with("@refused.test") {
            return Err(reply(
                554,
                smtp::reply::EnhancedStatus::new(5, 7, 1),
                "Relay access denied",
            ));
        }
        Ok(())
    }

    async fn message(
        &self,
        client: &Client,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> Result<QueueId, Reply> {
        if body.windows(9).any(|w| w == b"REFUSE-ME") {
            return Err(reply(
                452,
                smtp::reply::EnhancedStatus::new(4, 3, 1),
                "Insufficient system storage",
            ));
        }
        let mut stored = self.stored.lock().unwrap();
        stored.push((client.clone(), transaction.clone(), body));
        Ok(QueueId(format!("Q{}", stored.len())))
    }

    async fn authenticate(&self, _: &Client, user: &str, password: &str) -> bool {
        user == "alice" && password == "secret"
    }
}

struct Running {
    addr: SocketAddr,
    relay: Arc<Relay>,
    ends: Arc<Mutex<Vec<Result<Closed, String>>>>,
}

impl Running {
    fn stored(&self) -> Vec<(Client, Transaction, Vec<u8>)> {
        self.relay.stored.lock().unwrap().clone()
    }

    /// How the sessions ended so far (waits a little for the last one).
    async fn ends(&self, n: usize) -> Vec<Result<Closed, String>> {
        for _ in 0..100 {
            if self.ends.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ends.lock().unwrap().clone()
    }
}

fn config() -> Config {
    let mut c = Config::new(HeloName::new("mx.example.test").unwrap());
    c.timeouts = Timeouts::uniform(Duration::from_secs(5));
    c
}

async fn start(config: Config) -> Running {
    start_relay(config, Relay::default()).await
}

async fn start_relay(config: Config, relay: Relay) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = Arc::new(relay);
    let server = Server::new(config, relay.clone());
    let ends = Arc::new(Mutex::new(Vec::new()));
    let ends2 = ends.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let server = server.clone();
            let ends = ends2.clone();
            tokio::spawn(async move {
                let end = server.serve(stream, Some(peer)).await;
                ends.lock().unwrap().push(end.map_err(|e| match e {
                    ServerError::Timeout(_) => "timeout".to_owned(),
                    ServerError::TooManyErrors => "too-many-errors".to_owned(),
                    ServerError::Smuggling(_) => "smuggling".to_owned(),
                    ServerError::StartTlsInjection => "injection".to_owned(),
                    ServerError::PreGreeting => "pregreeting".to_owned(),
                    ServerError::Tls(e) => format!("tls: {e}"),
                    ServerError::Io(e) => format!("io: {e}"),
                }));
            });
        }
    });
    Running { addr, relay, ends }
}

/// A byte-level client.
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            io: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    async fn greeted(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        assert_eq!(raw.reply().await.code(), 220);
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), Reply::read(&mut self.io))
            .await
            .expect("a reply in time")
            .expect("a well-formed reply")
    }

    /// Sends one command and returns the reply as `code enhanced text`.
    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// The server closed the connection (after anything still unread).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        ) && rest.is_empty()
    }
}

fn err_of(e: &Result<Closed, String>) -> Option<&str> {
    e.as_ref().err().map(String::as_str)
}

fn status(r: &Reply) -> String {
    match r.enhanced() {
        Some(e) => format!("{} {e}", r.code()),
        None => r.code().to_string(),
    }
}

#[tokio::test]
async fn greeting_and_ehlo_advertise_the_extensions() {
    let s = start(config()).await;
    let mut c = Raw::connect(s.addr).await;
    let greeting = c.reply().await;
    assert_eq!(greeting.to_string(), "220 mx.example.test ESMTP");
    let ehlo = c.cmd("EHLO client.test").await;
    assert_eq!(
        ehlo.lines(),
        [
            "mx.example.test",
            "PIPELINING",
            "SIZE 10485760",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "DSN"
        ]
    );
    // No TLS configured: neither STARTTLS nor AUTH.
    assert_eq!(status(&c.cmd("STARTTLS").await), "502 5.5.1");
    assert_eq!(
        status(&c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await),
        "502 5.5.1"
    );
    assert_eq!(
        c.cmd("HELO client.test").await.to_string(),
        "250 mx.example.test"
    );
    // RFC 5321 §2.2.1: after HELO there are no extensions, so no parameters.
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> SIZE=10").await),
        "555 5.5.4"
    );
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(
        status(&c.cmd("RCPT TO:<b@y.test> NOTIFY=NEVER").await),
        "555 5.5.4"
    );
    assert_eq!(status(&c.cmd("QUIT").await), "221 2.0.0");
    assert!(c.closed().await);
    assert_eq!(s.ends(1).await, [Ok(Closed::Quit)]);
}

/// Every command in and out of sequence, on one connection: (command, reply).
#[tokio::test]
async fn the_state_machine_as_a_table() {
    let mut cfg = config();
    cfg.max_errors = 100;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    for (line, want) in [
        ("MAIL FROM:<a@x.test>", "503 5.5.1"),
        ("RCPT TO:<b@y.test>", "503 5.5.1"),
        ("DATA", "503 5.5.1"),
        ("EHLO", "501 5.5.4"),
        ("EHLO not_a_name", "501 5.5.4"),
        ("EHLO client.test", "250"),
        ("RCPT TO:<b@y.test>", "503 5.5.1"),
        ("DATA", "503 5.5.1"),
        ("MAIL FROM:<a@x.test", "501 5.5.4"),
        ("MAIL FROM:<a@x.test> X-UNKNOWN=1", "555 5.5.4"),
        ("MAIL FROM:<a@x.test> SIZE=10485761", "552 5.3.4"),
        ("MAIL FROM:<a@x.test> BODY=BINARYMIME", "501 5.5.4"),
        ("MAIL FROM:<@relay.test:a@x.test>", "553 5.1.7"),
        ("MAIL FROM:<a@x..test>", "553 5.1.7"),
        ("MAIL FROM:<jösé@x.test>", "553 5.6.7"),
        (
            "MAIL FROM:<a@x.test> SIZE=10485760 BODY=8BITMIME RET=HDRS ENVID=e1",
            "250 2.1.0",
        ),
        ("MAIL FROM:<a@x.test>", "503 5.5.1"),
        ("DATA", "503 5.5.1"),
        ("RCPT TO:<b@refused.test>", "554 5.7.1"),
        ("DATA", "554 5.5.1"),
        ("RCPT TO:<@a.test:b@y.test>", "553 5.1.3"),
        ("RCPT TO:<b@y.test> NOTIFY=NEVER,DELAY", "501 5.5.4"),
        ("RCPT TO:<jösé@y.test>", "553 5.6.7"),
        (
            "RCPT TO:<b@y.test> NOTIFY=FAILURE ORCPT=rfc822;b+40y.test",
            "250 2.1.5",
        ),
        ("STARTTLS", "502 5.5.1"),
        ("RSET", "250 2.0.0"),
        ("RCPT TO:<b@y.test>", "503 5.5.1"),
        ("MAIL FROM:<> SMTPUTF8", "250 2.1.0"),
        ("RCPT TO:<jösé@y.test>", "250 2.1.5"),
        ("RCPT TO:<Postmaster>", "250 2.1.5"),
        ("EHLO again.test", "250"),
        ("DATA", "503 5.5.1"),
        ("VRFY someone", "252 2.0.0"),
        ("EXPN list", "502 5.5.1"),
        ("NOOP", "250 2.0.0"),
        ("HELP", "214 2.0.0"),
        ("BDAT 10 LAST", "502 5.5.1"),
        ("FOO bar", "500 5.5.2"),
        ("GET / HTTP/1.1", "500 5.5.2"),
        ("data now", "501 5.5.4"),
        ("quit", "221 2.0.0"),
    ] {
        assert_eq!(status(&c.cmd(line).await), want, "{line}");
    }
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_transaction_reaches_the_acceptor_with_its_dsn_parameters_and_unstuffed_body() {
    let s = start(config()).await;
    let mut c = Raw::greeted(s.addr).await;
    for (line, want) in [
        ("EHLO client.test", "250"),
        ("MAIL FROM:<a@x.test> RET=FULL ENVID=id+2B1", "250 2.1.0"),
        (
            "RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40y.test",
            "250 2.1.5",
        ),
        ("RCPT TO:<c@refused.test>", "554 5.7.1"),
        ("RCPT TO:<Postmaster>", "250 2.1.5"),
        ("DATA", "354"),
    ] {
        assert_eq!(status(&c.cmd(line).await), want, "{line}");
    }
    c.send(b"Subject: t\r\n\r\n..leading dot\r\n.\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.to_string(), "250 2.0.0 Ok: queued as Q1");
    let stored = s.stored();
    let (client, t, body) = &stored[0];
    assert_eq!(body, b"Subject: t\r\n\r\n.leading dot\r\n");
    assert_eq!(client.helo.as_ref().unwrap().as_str(), "client.test");
    assert!(client.esmtp && client.tls.is_none() && client.addr.is_some());
    assert_eq!(t.mail.sender, "a@x.test");
    assert_eq!(
        (t.mail.ret, t.mail.envid.as_deref()),
        (Some(Ret::Full), Some("id+1"))
    );
    let e = t.envelope().unwrap();
    assert_eq!(e.recipients(), ["b@y.test", "postmaster@mx.example.test"]);
    let n = t.rcpts[0].notify.unwrap();
    assert!(n.success && n.failure && !n.delay);
    assert_eq!(t.rcpts[0].orcpt, Some(("rfc822".into(), "b@y.test".into())));
    // The transaction is over: a new one needs MAIL again.
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "503 5.5.1");
    // The relay's refusal after DATA is passed on, and nothing claims success.
    assert_eq!(status(&c.cmd("MAIL FROM:<>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code(), 354);
    c.send(b"REFUSE-ME\r\n.\r\n").await;
    assert_eq!(status(&c.reply().await), "452 4.3.1");
    assert_eq!(s.stored().len(), 1);
}

/// RFC 2920: a whole transaction in one write gets every reply, in order.
#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let s = start(config()).await;
    let mut c = Raw::greeted(s.addr).await;
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@refused.test>\r\n\
          RCPT TO:<d@y.test>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<e@x.test>\r\n\
          RCPT TO:<f@y.test>\r\nRSET\r\nNOOP\r\nQUIT\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..12 {
        got.push(c.reply().await.code());
    }
    assert_eq!(
        got,
        [250, 250, 250, 554, 250, 354, 250, 250, 250, 250, 250, 221]
    );
    assert!(c.closed().await);
    let stored = s.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].2, b"Subject: p\r\n\r\nbody\r\n");
    assert_eq!(
        stored[0].1.envelope().unwrap().recipients(),
        ["b@y.test", "d@y.test"]
    );
}

#[tokio::test]
async fn recipient_and_size_limits() {
    let mut cfg = config();
    cfg.max_recipients = 2;
    cfg.max_message_size = 100;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    assert!(
        c.cmd("EHLO client.test")
            .await
            .lines()
            .contains(&"SIZE 100".to_owned())
    );
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> SIZE=101").await),
        "552 5.3.4"
    );
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> SIZE=100").await),
        "250 2.1.0"
    );
    for (line, want) in [
        ("RCPT TO:<b1@y.test>", "250 2.1.5"),
        ("RCPT TO:<b2@y.test>", "250 2.1.5"),
        ("RCPT TO:<b3@y.test>", "452 4.5.3"),
        ("DATA", "354"),
    ] {
        assert_eq!(status(&c.cmd(line).await), want, "{line}");
    }
    // The SIZE parameter lied: the content itself is over the limit.
    c.send(&[&b"x".repeat(200)[..], b"\r\n.\r\n"].concat())
        .await;
    assert_eq!(status(&c.reply().await), "552 5.3.4");
    assert!(s.stored().is_empty());
    // The session goes on.
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("RCPT TO:<b1@y.test>").await), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code(), 354);
    c.send(b"small\r\n.\r\n").await;
    assert_eq!(status(&c.reply().await), "250 2.0.0");
    assert_eq!(s.stored()[0].1.rcpts.len(), 1);
}

#[tokio::test]
async fn line_length_limits() {
    let mut cfg = config();
    cfg.max_text_line = 100;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    // 510 octets and CRLF are 512: accepted; 511 are too long, even arriving in pieces.
    let ok = format!("NOOP {}", "x".repeat(505));
    assert_eq!(status(&c.cmd(&ok).await), "250 2.0.0");
    let long = format!("NOOP {}", "x".repeat(506));
    assert_eq!(status(&c.cmd(&long).await), "500 5.5.2");
    c.send(format!("MAIL FROM:<a@x.test> ENVID={}", "e".repeat(5000)).as_bytes())
        .await;
    c.send(b"\r\n").await;
    assert_eq!(status(&c.reply().await), "500 5.5.2");
    assert_eq!(
        status(&c.cmd("RCPT TO:<b@y.test>").await),
        "503 5.5.1",
        "MAIL was dropped"
    );
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code(), 354);
    c.send(&[&b"y".repeat(99)[..], b"\r\n.\r\n"].concat()).await;
    assert_eq!(status(&c.reply().await), "500 5.6.0");
    assert!(s.stored().is_empty());
}

/// Opens a transaction with one recipient and says DATA.
async fn data_phase(c: &mut Raw) {
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code(), 354);
}

/// A header flood within the size limit is refused whole, and the session goes on.
#[tokio::test]
async fn a_header_flood_is_refused() {
    let mut cfg = config();
    cfg.max_header_size = 4096;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    data_phase(&mut c).await;
    let flood = b"X-Flood: 0123456789\r\n".repeat(1000);
    c.send(&[&flood[..], b"\r\nbody\r\n.\r\n"].concat()).await;
    assert_eq!(status(&c.reply().await), "552 5.6.0");
    assert!(s.stored().is_empty());
    // The same octets as a body pass: only the header section is limited.
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "250 2.1.5");
    assert_eq!(c.cmd("DATA").await.code(), 354);
    c.send(&[&b"Subject: x\r\n\r\n"[..], &flood, b".\r\n"].concat())
        .await;
    assert_eq!(status(&c.reply().await), "250 2.0.0");
}

/// Sessions that stall in DATA cannot hold more memory than the shared budget: past it, a
/// message is read but not kept and gets `452 4.3.1`; once the others are gone, the room
/// is back.
#[tokio::test]
async fn stalled_messages_cannot_hold_more_memory_than_the_budget() {
    const UNIT: usize = smtp::server::budget::UNIT;
    let budget = smtp::server::ContentBudget::new(4 * UNIT as u64);
    let mut cfg = config();
    cfg.content_budget = Some(budget.clone());
    let s = start(cfg).await;
    let line = [&b"x".repeat(998)[..], b"\r\n"].concat();
    let chunk = line.repeat(UNIT / 1000 + 1); // just over one unit: two units held
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::greeted(s.addr).await;
        data_phase(&mut c).await;
        c.send(&chunk).await;
        stalled.push(c);
    }
    // Both stalled sessions hold their room (up to four units between them).
    for _ in 0..100 {
        if budget.available() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(budget.available(), 0, "{budget:?}");
    let mut late = Raw::greeted(s.addr).await;
    data_phase(&mut late).await;
    late.send(&[&chunk[..], b".\r\n"].concat()).await;
    assert_eq!(status(&late.reply().await), "452 4.3.1");
    assert!(s.stored().is_empty());
    // One stalled client finishes: its message is stored and its room given back, so the
    // late one gets through on its next try.
    stalled[0].send(b".\r\n").await;
    assert_eq!(status(&stalled[0].reply().await), "250 2.0.0");
    assert_eq!(status(&late.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&late.cmd("RCPT TO:<b@y.test>").await), "250 2.1.5");
    assert_eq!(late.cmd("DATA").await.code(), 354);
    late.send(&[&chunk[..], b".\r\n"].concat()).await;
    assert_eq!(status(&late.reply().await), "250 2.0.0");
    drop(stalled);
    for _ in 0..100 {
        if budget.available() == 4 * UNIT as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        budget.available(),
        4 * UNIT as u64,
        "a closed session gives its room back"
    );
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let mut cfg = config();
    cfg.max_errors = 3;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    c.send(b"\x00\x01\x02 garbage\r\n\xff\xfe\r\nGET / HTTP/1.0\r\nNOOP\r\n")
        .await;
    for _ in 0..3 {
        assert_eq!(c.reply().await.code() / 100, 5);
    }
    assert_eq!(status(&c.reply().await), "421 4.7.0");
    assert!(c.closed().await);
    assert_eq!(s.ends(1).await, [Err("too-many-errors".to_owned())]);
}

/// A bare LF is not a line end in commands either: what follows it up to the CRLF belongs to
/// the refused line and is never run as a command.
#[tokio::test]
async fn bare_line_ends_in_commands_are_refused_whole() {
    let s = start(config()).await;
    let mut c = Raw::greeted(s.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
    c.send(b"RSET\nMAIL FROM:<a@x.test>\r\n").await;
    assert_eq!(status(&c.reply().await), "500 5.5.2");
    c.send(b"NOOP\rMAIL FROM:<a@x.test>\r\n").await;
    assert_eq!(status(&c.reply().await), "500 5.5.2");
    assert_eq!(status(&c.cmd("RCPT TO:<b@y.test>").await), "503 5.5.1");
}

/// Every SMTP smuggling variant: the client ends its message with a fake end-of-data and
/// smuggles a second transaction behind it. The server answers `554 5.5.2` and closes; the
/// relay is never handed either message.
#[tokio::test]
async fn smtp_smuggling_variants_are_refused_and_nothing_is_accepted() {
    let s = start(config()).await;
    let variants: [&[u8]; 12] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\n.\n\r\n",
        b"\r\n\n.\r\n",
        b"\r\n.\n\r\n",
        b"\n\r\n.\r\n",
        b"\r\r\n.\r\n",
    ];
    for (i, fake_end) in variants.iter().enumerate() {
        let mut c = Raw::greeted(s.addr).await;
        for line in [
            "EHLO client.test",
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@y.test>",
        ] {
            assert_eq!(c.cmd(line).await.code(), 250);
        }
        assert_eq!(c.cmd("DATA").await.code(), 354);
        let attack = [
            &b"From: a@x.test\r\nSubject: first\r\n\r\nhello"[..],
            fake_end,
            b"MAIL FROM:<ceo@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n\
              From: ceo@x.test\r\n\r\nsmuggled\r\n.\r\n",
        ]
        .concat();
        c.send(&attack).await;
        let r = c.reply().await;
        assert_eq!(status(&r), "554 5.5.2", "variant {i} {fake_end:?}: {r}");
        assert!(c.closed().await, "variant {i}");
    }
    // `.\n` at the start of the content.
    let mut c = Raw::greeted(s.addr).await;
    for line in [
        "EHLO client.test",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<b@y.test>",
    ] {
        assert_eq!(c.cmd(line).await.code(), 250);
    }
    assert_eq!(c.cmd("DATA").await.code(), 354);
    c.send(b".\nMAIL FROM:<ceo@x.test>\r\n.\r\n").await;
    assert_eq!(status(&c.reply().await), "554 5.5.2");
    assert!(c.closed().await);
    assert!(s.stored().is_empty(), "nothing of any variant was accepted");
    let ends = s.ends(variants.len() + 1).await;
    assert!(
        ends.iter().all(|e| err_of(e) == Some("smuggling")),
        "{ends:?}"
    );
}

#[tokio::test]
async fn slow_clients_time_out() {
    let mut cfg = config();
    cfg.timeouts = Timeouts {
        command: Duration::from_millis(400),
        data_block: Duration::from_millis(300),
        data_total: Duration::from_millis(800),
        tls: Duration::from_millis(400),
        greeting_delay: Duration::ZERO,
    };
    let s = start(cfg).await;
    // Silent after the greeting.
    let mut c = Raw::greeted(s.addr).await;
    let t = std::time::Instant::now();
    assert_eq!(status(&c.reply().await), "421 4.4.2");
    assert!(c.closed().await && t.elapsed() < Duration::from_secs(3));
    // Slow loris: an octet every 100 ms never completes a command line in time.
    let mut c = Raw::greeted(s.addr).await;
    let t = std::time::Instant::now();
    let trickle = async {
        for b in b"EHLO client.test" {
            if c.io.get_mut().write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    trickle.await;
    assert_eq!(status(&c.reply().await), "421 4.4.2");
    assert!(t.elapsed() < Duration::from_secs(3));
    // Slow loris in DATA: each octet within the block timeout, the whole over the total.
    let mut c = Raw::greeted(s.addr).await;
    for line in [
        "EHLO client.test",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<b@y.test>",
    ] {
        assert_eq!(c.cmd(line).await.code(), 250);
    }
    assert_eq!(c.cmd("DATA").await.code(), 354);
    let t = std::time::Instant::now();
    for _ in 0..20 {
        if c.io.get_mut().write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&c.reply().await), "421 4.4.2");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(s.stored().is_empty());
    assert_eq!(
        s.ends(3)
            .await
            .iter()
            .filter(|e| err_of(e) == Some("timeout"))
            .count(),
        3
    );
}

/// RFC 5321 §3.1: with a greeting delay, a client that talks first is dropped.
#[tokio::test]
async fn a_client_talking_before_the_greeting_is_dropped() {
    let mut cfg = config();
    cfg.timeouts.greeting_delay = Duration::from_secs(1);
    let s = start(cfg).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"EHLO early.test\r\nMAIL FROM:<a@x.test>\r\n").await;
    let mut all = String::new();
    c.io.read_to_string(&mut all).await.unwrap();
    assert!(all.starts_with("220-mx.example.test"), "{all}");
    assert!(all.contains("\r\n554 5.5.1 "), "{all}");
    assert!(!all.contains("\r\n250"), "{all}");
    assert_eq!(s.ends(1).await, [Err("pregreeting".to_owned())]);
    // A patient client gets the whole greeting.
    let mut c = Raw::connect(s.addr).await;
    let r = c.reply().await;
    assert_eq!((r.code(), r.lines().len()), (220, 2));
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
}

/// Two chains: the default for mx1 (first), another for mx2.
struct Chains {
    mx1: TestCert,
    mx2: TestCert,
}

fn chains() -> Chains {
    Chains {
        mx1: TestCert::self_signed(&["mx1.example.test"]).unwrap(),
        mx2: TestCert::self_signed(&["mx2.example.test", "*.mx2.example.test"]).unwrap(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(chains: &Chains, auth: bool) -> Config {
    let resolver = SniResolver::from_pem(
        &[
            (
                chains.mx1.chain_pem.as_bytes(),
                chains.mx1.key_pem.as_bytes(),
            ),
            (
                chains.mx2.chain_pem.as_bytes(),
                chains.mx2.key_pem.as_bytes(),
            ),
        ],
        &provider(),
    )
    .unwrap();
    let mut cfg = config();
    cfg.tls = Some(resolver.into_server_config(provider()).unwrap());
    cfg.auth = auth;
    cfg
}

/// The leaf the server presented to our client, asking with `sni` (an IP address sends no
/// SNI: rustls never puts addresses in it).
async fn leaf_for(addr: SocketAddr, sni: &str) -> (Vec<u8>, Session) {
    let session = Session::open(
        addr,
        sni,
        "client.test",
        &Mode::Opportunistic,
        &provider(),
        &smtp::Timeouts::uniform(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert!(session.tls().is_some());
    (session.peer_chain()[0].to_vec(), session)
}

/// RFC 7672 §8.1 / PRODUCT.md rule 11: the chain is chosen by SNI; a client without SNI, or
/// with a name no chain carries, gets the first.
#[tokio::test]
async fn starttls_chooses_the_chain_by_sni_and_defaults_to_the_first() {
    let chains = chains();
    let s = start(tls_config(&chains, false)).await;
    for (sni, want) in [
        ("mx1.example.test", &chains.mx1),
        ("mx2.example.test", &chains.mx2),
        ("a.mx2.example.test", &chains.mx2),
        ("other.example.test", &chains.mx1),
        ("127.0.0.1", &chains.mx1),
    ] {
        let (leaf, session) = leaf_for(s.addr, sni).await;
        assert!(leaf == want.leaf_der, "SNI {sni}");
        session.quit().await;
    }
    let ends = s.ends(5).await;
    assert!(ends.iter().all(|e| *e == Ok(Closed::Quit)), "{ends:?}");
}

/// RFC 3207 §4.2: after the handshake the client must say EHLO again; STARTTLS is no longer
/// offered, AUTH is; the relay sees the TLS state and SNI.
#[tokio::test]
async fn starttls_resets_the_session_and_auth_needs_tls() {
    let chains = chains();
    let s = start(tls_config(&chains, true)).await;
    // In plaintext: STARTTLS offered, AUTH neither offered nor accepted.
    let mut c = Raw::greeted(s.addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().contains(&"STARTTLS".to_owned()));
    assert!(!ehlo.lines().iter().any(|l| l.starts_with("AUTH")));
    assert_eq!(
        status(&c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await),
        "538 5.7.11"
    );
    assert_eq!(status(&c.cmd("STARTTLS now").await), "501 5.5.4");
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(status(&c.cmd("STARTTLS").await), "503 5.5.1");
    // Over TLS with our client: AUTH offered, STARTTLS not, and the session works.
    let (_, mut session) = leaf_for(s.addr, "mx2.example.test").await;
    let caps = session.capabilities().clone();
    assert!(!caps.starttls && caps.auth == ["PLAIN", "LOGIN"]);
    let t = std::time::Instant::now();
    assert!(session.auth_plain("alice", "wrong").await.is_err());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "a failed AUTH is answered slowly"
    );
    session.auth_plain("alice", "secret").await.unwrap();
    let envelope = Envelope::new("a@x.test", ["b@y.test"]).unwrap();
    for n in 1..=2 {
        let message = Message::new(format!("Subject: {n}\n\n.dot\n").as_bytes()).unwrap();
        let t = session.transact(&envelope, &message).await.unwrap();
        assert_eq!(t.data.unwrap().code(), 250, "message {n}");
    }
    session.quit().await;
    let stored = s.stored();
    assert_eq!(stored.len(), 2);
    let (client, _, body) = &stored[1];
    let tls = client.tls.as_ref().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("mx2.example.test"));
    assert_eq!(client.user.as_deref(), Some("alice"));
    assert_eq!(body, b"Subject: 2\r\n\r\n.dot\r\n");
}

/// RFC 8689 §2, §4.1: REQUIRETLS is advertised only after STARTTLS, and only by a relay
/// that honours it; the parameter over plaintext is refused (an attacker in the path could
/// otherwise let a client believe its requirement was taken), and over TLS the message is
/// stored with it.
#[tokio::test]
async fn requiretls_is_offered_and_taken_only_over_tls() {
    let chains = chains();
    let relay = Relay {
        requiretls: true,
        ..Relay::default()
    };
    let s = start_relay(tls_config(&chains, false), relay).await;
    let mut c = Raw::greeted(s.addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        !ehlo
            .lines()
            .iter()
            .any(|l| l.eq_ignore_ascii_case("REQUIRETLS")),
        "{ehlo}"
    );
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> REQUIRETLS").await),
        "530 5.7.10"
    );
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> REQUIRETLS=YES").await),
        "501 5.5.4"
    );
    // The refusal leaves no transaction behind: a MAIL without it is fine.
    assert_eq!(status(&c.cmd("MAIL FROM:<a@x.test>").await), "250 2.1.0");
    assert_eq!(c.cmd("QUIT").await.code(), 221);
    assert!(s.stored().is_empty());

    let (_, mut session) = leaf_for(s.addr, "mx1.example.test").await;
    assert!(session.capabilities().requiretls);
    let message = Message::new(
        b"Subject: r

secret
",
    )
    .unwrap();
    let envelope = Envelope::new("a@x.test", ["b@y.test"])
        .unwrap()
        .with_tls_request(smtp::TlsRequest::Required);
    let t = session.transact(&envelope, &message).await.unwrap();
    assert_eq!(t.data.unwrap().code(), 250);
    assert!(
        session
            .transcript
            .iter()
            .all(|l| !l.starts_with('5') && !l.starts_with('4')),
        "{:?}",
        session.transcript
    );
    session.quit().await;
    let stored = s.stored();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].1.mail.requiretls);
    assert!(stored[0].0.tls.is_some());

    // A relay that does not honour it never offers it, and takes the parameter as unknown,
    // over TLS too; our client then sends nothing of a REQUIRETLS message.
    let s = start(tls_config(&chains, false)).await;
    let (_, mut session) = leaf_for(s.addr, "mx1.example.test").await;
    assert!(!session.capabilities().requiretls);
    let e = session.transact(&envelope, &message).await.unwrap_err();
    assert_eq!(
        e,
        smtp::session::SessionError::RequireTls(smtp::session::RequireTlsRefusal::NotAdvertised)
    );
    assert!(session.is_reusable(), "nothing was sent");
    session.quit().await;
    let mut c = Raw::greeted(s.addr).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(
        status(&c.cmd("MAIL FROM:<a@x.test> REQUIRETLS").await),
        "555 5.5.4"
    );
    assert!(s.stored().is_empty());
}

/// CVE-2011-0411: commands pipelined in plaintext after STARTTLS must never run as if they
/// came over TLS. The server refuses and closes instead of starting TLS.
#[tokio::test]
async fn plaintext_injected_after_starttls_is_refused() {
    let chains = chains();
    let s = start(tls_config(&chains, false)).await;
    let mut c = Raw::greeted(s.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
    c.send(b"STARTTLS\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
        .await;
    assert_eq!(status(&c.reply().await), "554 5.5.1");
    assert!(c.closed().await);
    assert_eq!(s.ends(1).await, [Err("injection".to_owned())]);
    // Plaintext sent after the 220 instead of a ClientHello fails the handshake: closed.
    let mut c = Raw::greeted(s.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code(), 250);
    assert_eq!(c.cmd("STARTTLS").await.code(), 220);
    c.send(b"MAIL FROM:<a@x.test>\r\n").await;
    let mut rest = Vec::new();
    let _ = c.io.read_to_end(&mut rest).await;
    assert!(!String::from_utf8_lossy(&rest).contains("250"), "{rest:?}");
    let ends = s.ends(2).await;
    assert!(
        ends[1].as_ref().is_err_and(|e| e.starts_with("tls")),
        "{ends:?}"
    );
}

/// Garbage of every kind never panics the server, and it never says 250 to it.
#[tokio::test]
async fn hostile_garbage() {
    let mut cfg = config();
    cfg.max_errors = 1000;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    let mut junk = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..20_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        junk.push((x >> 16) as u8);
    }
    c.send(&junk).await;
    c.send(b"\r\nQUIT\r\n").await;
    let mut all = Vec::new();
    c.io.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.ends_with("221 2.0.0 mx.example.test Bye\r\n"),
        "{text}"
    );
    assert!(
        !text.contains("\r\n250 ") && !text.contains("\r\n354"),
        "{text}"
    );
    assert_eq!(s.ends(1).await, [Ok(Closed::Quit)]);
}

/// swaks must be installed (Debian package `swaks`; scripts/test.sh installs it): a missing
/// independent client fails the test rather than skipping it.
fn require_swaks() {
    let found = std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "swaks is not installed (Debian package swaks; scripts/test.sh installs it)"
    );
}

/// An independent client: swaks, plain and pipelined, then over STARTTLS with and without
/// SNI, saving the certificate it was given.
#[tokio::test]
async fn swaks_delivers_plain_pipelined_and_over_starttls_by_sni() {
    require_swaks();
    let chains = chains();
    let s = start(tls_config(&chains, false)).await;
    let server = format!("127.0.0.1:{}", s.addr.port());
    let dir = std::env::temp_dir().join(format!("danemta-swaks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |extra: &[&str]| {
        let server = server.clone();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new("swaks");
                cmd.args([
                    "--server", &server, "--from", "a@x.test", "--to", "b@y.test",
                ])
                .args(["--helo", "client.test", "--timeout", "10"])
                .args(["--body", "line one\n.dot line\nend"])
                .args(&extra);
                let out = cmd.output().unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
            .await
            .unwrap()
        }
    };
    let (ok, out) = run(&[]).await;
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Ok: queued as Q1"), "{out}");
    let (ok, out) = run(&["--pipeline"]).await;
    assert!(ok, "{out}");
    for (sni, cert, want) in [
        (Some("mx2.example.test"), "mx2.pem", &chains.mx2),
        (None, "default.pem", &chains.mx1),
    ] {
        let path = dir.join(cert);
        let path_s = path.to_str().unwrap().to_owned();
        let mut args = vec!["--tls", "--tls-get-peer-cert", &path_s];
        if let Some(sni) = sni {
            args.extend(["--tls-sni", sni]);
        }
        let (ok, out) = run(&args).await;
        assert!(ok, "{out}");
        let pem = std::fs::read(&path).unwrap();
        let leaf = CertificateDer::from_pem_slice(&pem).unwrap();
        assert!(leaf.as_ref() == want.leaf_der.as_slice(), "SNI {sni:?}");
    }
    let stored = s.stored();
    assert_eq!(stored.len(), 4);
    for (_, t, body) in &stored {
        assert_eq!(t.envelope().unwrap().recipients(), ["b@y.test"]);
        assert!(
            body.windows(26)
                .any(|w| w == b"\r\nline one\r\n.dot line\r\nend"),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        stored[2].0.tls.as_ref().unwrap().sni.as_deref(),
        Some("mx2.example.test")
    );
    assert_eq!(stored[3].0.tls.as_ref().unwrap().sni, None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that keeps a session busy with NOOPs (or RSET, VRFY, HELP) without sending mail
/// is cut off once past the junk-command limit.
#[tokio::test]
async fn junk_commands_run_into_the_error_limit() {
    let mut cfg = config();
    cfg.max_junk_commands = 3;
    cfg.max_errors = 2;
    let s = start(cfg).await;
    let mut c = Raw::greeted(s.addr).await;
    c.send(b"NOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nNOOP\r\nNOOP\r\n")
        .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(c.reply().await.code());
    }
    assert_eq!(codes, [250, 250, 252, 214, 250, 421]);
    assert!(c.closed().await);
    assert_eq!(s.ends(1).await, [Err("too-many-errors".to_owned())]);
}

/// RFC 8314 §3.3 (submissions): with implicit TLS the handshake comes first; the greeting
/// comes over TLS, STARTTLS is not offered again, and a plaintext client gets no greeting.
#[tokio::test]
async fn implicit_tls_greets_only_over_tls() {
    let chains = chains();
    let mut cfg = tls_config(&chains, true);
    cfg.implicit_tls = true;
    let s = start(cfg).await;
    // A plaintext client: no SMTP greeting, the session ends in a failed handshake.
    let mut plain = TcpStream::connect(s.addr).await.unwrap();
    plain.write_all(b"EHLO client.test\r\n").await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut seen)).await;
    assert!(
        !seen.starts_with(b"220"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    // A TLS client trusting mx1's (self-signed) certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(chains.mx1.leaf_der.clone()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("mx1.example.test").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut tls = BufReader::new(tls);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut tls, &mut line)
        .await
        .unwrap();
    assert!(line.starts_with("220 "), "{line}");
    tls.get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    let mut ehlo = String::new();
    loop {
        let mut l = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut tls, &mut l)
            .await
            .unwrap();
        ehlo.push_str(&l);
        if l.as_bytes().get(3) == Some(&b' ') || l.is_empty() {
            break;
        }
    }
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
}
