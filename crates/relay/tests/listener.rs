//! The listener (relay::listener) over loopback: relay permission (never an open relay),
//! `%`/`!` refusal, `250` only once the store accepted, `451` when it fails, and the
//! `Received:` field in what is stored; against a raw line client and swaks.

mod common;

use common::TempDir;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay::config::{self, IpNetwork};
use relay::listener::{DEFAULT_MAX_CONNECTIONS, RelayAcceptor, serve_listener};
use relay::queue::{
    Claim, Lease, LocalStore, NewMessage, Progress, QueueEntry, QueueError, QueueId, QueueStats,
    Store, Timestamp,
};
use smtp::outcome::RecipientOutcome;
use smtp::server::{Config, Server, Timeouts};
use smtp::{Attempt, HeloName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A store whose every operation fails, as a full or broken disk would.
struct FailingStore;

fn broken() -> QueueError {
    QueueError::Poisoned
}

impl Store for FailingStore {
    fn accept(&self, _: &NewMessage<'_>, _: Timestamp) -> Result<(), QueueError> {
        Err(broken())
    }
    fn due(&self, _: Timestamp, _: usize, _: &Lease) -> Result<Vec<Claim>, QueueError> {
        Err(broken())
    }
    fn next_due(&self) -> Result<Option<Timestamp>, QueueError> {
        Err(broken())
    }
    fn record_attempt(
        &self,
        _: &Claim,
        _: &[RecipientOutcome],
        _: &[Attempt],
        _: Timestamp,
    ) -> Result<Progress, QueueError> {
        Err(broken())
    }
    fn renew(&self, _: &Claim, _: Timestamp) -> Result<Claim, QueueError> {
        Err(broken())
    }
    fn complete(&self, _: &Claim) -> Result<bool, QueueError> {
        Err(broken())
    }
    fn scan(&self, _: Timestamp, _: &mut dyn FnMut(QueueEntry)) -> Result<(), QueueError> {
        Err(broken())
    }
    fn stats(&self) -> Result<QueueStats, QueueError> {
        Err(broken())
    }
    fn show(&self, _: &QueueId, _: Timestamp) -> Result<QueueEntry, QueueError> {
        Err(broken())
    }
    fn hold(&self, _: &QueueId, _: &str) -> Result<(), QueueError> {
        Err(broken())
    }
    fn release(&self, _: &QueueId) -> Result<(), QueueError> {
        Err(broken())
    }
    fn delete(&self, _: &QueueId) -> Result<(), QueueError> {
        Err(broken())
    }
    fn flush(&self, _: &[QueueId], _: Timestamp) -> Result<usize, QueueError> {
        Err(broken())
    }
    fn body(&self, _: &QueueId) -> Result<Box<dyn Read + Send>, QueueError> {
        Err(broken())
    }
}

/// `relay_networks` with loopback in it (the client relays), or without (it does not).
fn server_config(loopback_relays: bool) -> config::Server {
    let mut s = config::Server::default();
    if !loopback_relays {
        s.relay_networks = vec![IpNetwork {
            address: [10, 0, 0, 0].into(),
            prefix: 8,
        }];
    }
    s.accept_domains = vec!["Inbound.Example".parse().unwrap()];
    s
}

async fn start(store: Arc<dyn Store>, loopback_relays: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::new(HeloName::new("mx.example.test").unwrap());
    config.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let acceptor = RelayAcceptor::new(store, "mx.example.test", &server_config(loopback_relays));
    let server = Arc::new(Server::new(config, Arc::new(acceptor)));
    tokio::spawn(serve_listener(
        listener,
        server,
        DEFAULT_MAX_CONNECTIONS,
        "smtp",
    ));
    addr
}

/// A line client.
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    /// Connects and reads the greeting.
    async fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw {
            io: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        };
        assert!(raw.reply().await.starts_with("220"));
        raw
    }

    /// The last line of the next reply.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn send(&mut self, text: &str) -> String {
        self.io.get_mut().write_all(text.as_bytes()).await.unwrap();
        self.reply().await
    }
}

fn queued(store: &LocalStore) -> Vec<QueueEntry> {
    store.list(i64::MAX / 2).unwrap()
}

fn body_of(store: &LocalStore, id: &QueueId) -> String {
    let mut body = String::new();
    store.body(id).unwrap().read_to_string(&mut body).unwrap();
    body
}

/// One transaction; the reply to RCPT, then (if it was 250) the reply to end-of-data.
async fn send_one(addr: SocketAddr, rcpt: &str) -> (String, Option<String>) {
    let mut c = Raw::connect(addr).await;
    assert!(c.send("EHLO client.example\r\n").await.starts_with("250"));
    assert!(
        c.send("MAIL FROM:<alice@client.example>\r\n")
            .await
            .starts_with("250")
    );
    let to = c.send(&format!("RCPT TO:<{rcpt}>\r\n")).await;
    if !to.starts_with("250") {
        let _ = c.send("QUIT\r\n").await;
        return (to, None);
    }
    assert!(c.send("DATA\r\n").await.starts_with("354"));
    let end = c
        .send("Subject: hello\r\n\r\nThe original text.\r\n.\r\n")
        .await;
    let _ = c.send("QUIT\r\n").await;
    (to, Some(end))
}

#[tokio::test]
async fn relay_client_is_queued_with_received() {
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    let addr = start(store.clone(), true).await;

    let (to, end) = send_one(addr, "bob@far.example").await;
    assert!(to.starts_with("250"), "{to}");
    let end = end.unwrap();
    assert!(end.starts_with("250 2.0.0"), "{end}");

    let entries = queued(&store);
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert!(end.contains(entry.queue_id.as_str()), "{end}");
    assert_eq!(entry.sender, "alice@client.example");
    assert_eq!(entry.recipients.len(), 1);
    assert_eq!(entry.recipients[0].address, "bob@far.example");

    let body = body_of(&store, &entry.queue_id);
    assert!(
        body.starts_with(
            "Received: from client.example ([127.0.0.1])\r\n\tby mx.example.test with ESMTP id "
        ),
        "{body}"
    );
    assert!(
        body.contains("\r\n\tfor <bob@far.example>;\r\n\t"),
        "{body}"
    );
    assert!(body.contains(" +0000\r\nSubject: hello\r\n\r\nThe original text.\r\n"));
}

#[tokio::test]
async fn outsider_to_foreign_domain_is_denied() {
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    let addr = start(store.clone(), false).await;

    let (to, end) = send_one(addr, "bob@far.example").await;
    assert!(to.starts_with("554 5.7.1"), "{to}");
    assert!(to.contains("Relay access denied"), "{to}");
    assert!(end.is_none());
    assert!(queued(&store).is_empty());
}

#[tokio::test]
async fn outsider_to_accept_domain_is_queued() {
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    let addr = start(store.clone(), false).await;

    // accept_domains compares case-insensitively, and exactly: no subdomains.
    let (to, end) = send_one(addr, "carol@INBOUND.example").await;
    assert!(to.starts_with("250"), "{to}");
    assert!(end.unwrap().starts_with("250 2.0.0"));
    let (to, _) = send_one(addr, "carol@sub.inbound.example").await;
    assert!(to.starts_with("554 5.7.1"), "{to}");

    let entries = queued(&store);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].recipients[0].address, "carol@INBOUND.example");
}

#[tokio::test]
async fn percent_and_bang_are_refused() {
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    // Even for a client that may relay, and even to an accepted domain.
    for relays in [true, false] {
        let addr = start(store.clone(), relays).await;
        for rcpt in [
            "bob%far.example@inbound.example",
            "far.example!bob@inbound.example",
        ] {
            let (to, end) = send_one(addr, rcpt).await;
            assert!(to.starts_with("550 5.7.1"), "{rcpt}: {to}");
            assert!(end.is_none());
        }
        // A source route never gets this far.
        let (to, _) = send_one(addr, "@relay.example:bob@inbound.example").await;
        assert!(to.starts_with("553"), "{to}");
    }
    assert!(queued(&store).is_empty());
}

#[tokio::test]
async fn failing_store_gives_451() {
    let addr = start(Arc::new(FailingStore), true).await;
    let (to, end) = send_one(addr, "bob@far.example").await;
    assert!(to.starts_with("250"), "{to}");
    let end = end.unwrap();
    assert!(end.starts_with("451 4.3.0"), "{end}");
}

#[tokio::test]
async fn swaks_relays_through_the_listener() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("swaks not installed; skipped");
        return;
    }
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    let addr = start(store.clone(), true).await;
    let server = addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("swaks")
            .args([
                "--server",
                &server,
                "--from",
                "alice@client.example",
                "--to",
                "bob@far.example",
                "--helo",
                "client.example",
                "--body",
                "Sent by swaks.",
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
    let entries = queued(&store);
    assert_eq!(entries.len(), 1);
    let body = body_of(&store, &entries[0].queue_id);
    assert!(body.starts_with("Received: from client.example"), "{body}");
    assert!(body.contains("Sent by swaks."), "{body}");
}

/// The decision itself, for clients a loopback test cannot be: an authenticated client
/// outside `relay_networks` relays; an unauthenticated one does not; an IPv4-mapped IPv6
/// address counts as its IPv4 address.
#[tokio::test]
async fn rcpt_decision_for_authenticated_and_mapped_clients() {
    use smtp::server::{Acceptor, Client, MailFrom, RcptTo};

    let acceptor = RelayAcceptor::new(Arc::new(FailingStore), "mx.example.test", &{
        let mut s = server_config(false);
        s.relay_networks = vec![IpNetwork {
            address: [192, 0, 2, 0].into(),
            prefix: 24,
        }];
        s
    });
    let mail = MailFrom {
        sender: "alice@client.example".to_owned(),
        ..MailFrom::default()
    };
    let rcpt = RcptTo {
        recipient: "bob@far.example".to_owned(),
        notify: None,
        orcpt: None,
    };
    let outsider = Client {
        addr: Some("198.51.100.7:40000".parse().unwrap()),
        esmtp: true,
        ..Client::default()
    };
    let denied = acceptor.rcpt(&outsider, &mail, &rcpt).await.unwrap_err();
    assert!(denied.to_string().starts_with("554 5.7.1"), "{denied}");

    let authenticated = Client {
        user: Some("alice".to_owned()),
        ..outsider.clone()
    };
    assert!(acceptor.rcpt(&authenticated, &mail, &rcpt).await.is_ok());

    let mapped = Client {
        addr: Some("[::ffff:192.0.2.9]:40000".parse().unwrap()),
        ..outsider.clone()
    };
    assert!(acceptor.rcpt(&mapped, &mail, &rcpt).await.is_ok());

    let unknown = Client {
        addr: None,
        ..outsider
    };
    assert!(acceptor.rcpt(&unknown, &mail, &rcpt).await.is_err());
}
