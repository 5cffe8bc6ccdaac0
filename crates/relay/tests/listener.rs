//! The listener (relay::listener) over loopback: relay permission (never an open relay),
//! `%`/`!` refusal, `250` only once the store accepted, `451` when it fails, `452 4.3.1` on
//! a full file system (a small tmpfs) and acceptance again once space returns, and the
//! `Received:` field in what is stored; against a raw line client and swaks.

mod common;

use common::TempDir;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay::config::{self, IpNetwork};
use relay::listener::{ConnectionLimits, RelayAcceptor, serve_listener};
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
    fn due_except(
        &self,
        _: Timestamp,
        _: usize,
        _: &Lease,
        _: &[String],
    ) -> Result<Vec<Claim>, QueueError> {
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
    fn postpone(&self, _: &Claim, _: Timestamp) -> Result<(), QueueError> {
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
    start_limited(store, loopback_relays, 100, 50).await
}

/// [`start`] with `overall` and `per_client` connection limits (no client exempt).
async fn start_limited(
    store: Arc<dyn Store>,
    loopback_relays: bool,
    overall: usize,
    per_client: usize,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::new(HeloName::new("mx.example.test").unwrap());
    config.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let acceptor = RelayAcceptor::new(store, "mx.example.test", &server_config(loopback_relays));
    let server = Arc::new(Server::new(config, Arc::new(acceptor)));
    tokio::spawn(serve_listener(
        listener,
        server,
        ConnectionLimits {
            overall,
            per_client,
            exempt: Vec::new(),
            plaintext_refusal: true,
        },
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
async fn sender_specified_routing_is_refused() {
    let dir = TempDir::new("listener");
    let (store, _) = LocalStore::open(dir.path(), 0).unwrap();
    let store = Arc::new(store);
    // Even for a client that may relay, and even to an accepted domain.
    for relays in [true, false] {
        let addr = start(store.clone(), relays).await;
        for rcpt in [
            "bob%far.example@inbound.example",
            "far.example!bob@inbound.example",
            "\"bob@far.example\"@inbound.example",
            "\"far.example!bob\"@inbound.example",
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

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped (needs root, as
/// the rest of the test suite).
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = TempDir::new("small-disk");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "danemta-test"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs needs root");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the listener task still holds the store's files until the runtime ends.
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// One transaction with a body of `size` bytes; the reply to end-of-data.
async fn send_sized(addr: SocketAddr, size: usize) -> String {
    let line = format!("{}\r\n", "x".repeat(78));
    let body = line.repeat(size / line.len());
    send_content(addr, &format!("Subject: big\r\n\r\n{body}")).await
}

/// One transaction from a relay client to `bob@far.example` with `content` (CRLF lines); the
/// reply to end-of-data.
async fn send_content(addr: SocketAddr, content: &str) -> String {
    let mut c = Raw::connect(addr).await;
    for (command, want) in [
        ("EHLO client.example\r\n", "250"),
        ("MAIL FROM:<alice@client.example>\r\n", "250"),
        ("RCPT TO:<bob@far.example>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        let reply = c.send(command).await;
        assert!(reply.starts_with(want), "{command:?}: {reply}");
    }
    let end = c.send(&format!("{content}.\r\n")).await;
    let _ = c.send("QUIT\r\n").await;
    end
}

#[tokio::test]
async fn a_full_file_system_gets_452_never_250_and_acceptance_resumes_by_itself() {
    let disk = SmallDisk::mount("3m");
    let (store, _) = LocalStore::open(disk.dir.path(), 0).unwrap();
    let store = Arc::new(store);
    let addr = start(store.clone(), true).await;

    let mut accepted = 0;
    let full = loop {
        let end = send_sized(addr, 300 * 1024).await;
        if end.starts_with("250") {
            accepted += 1;
            assert!(
                accepted < 20,
                "a 3 MB file system took {accepted} messages of 300 KB"
            );
            continue;
        }
        break end;
    };
    assert!(full.starts_with("452 4.3.1"), "{full}");
    assert!(accepted >= 1, "nothing fitted at all: {full}");
    // Every message that got 250 is queued whole; the refused one left nothing behind.
    let entries = queued(&store);
    assert_eq!(entries.len(), accepted);
    for e in &entries {
        let mut body = Vec::new();
        store
            .body(&e.queue_id)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body.len() as u64, e.message_size, "{} is whole", e.queue_id);
    }
    let spool: Vec<_> = std::fs::read_dir(disk.dir.path().join("spool"))
        .unwrap()
        .collect();
    assert_eq!(spool.len(), accepted, "no partial body left in the spool");

    // Space comes back (a message is delivered, here deleted): acceptance resumes, nothing
    // to restart.
    store.delete(&entries[0].queue_id).unwrap();
    let end = send_sized(addr, 300 * 1024).await;
    assert!(end.starts_with("250"), "{end}");
    assert_eq!(queued(&store).len(), accepted);
}

/// Reads whatever the server says first on a fresh connection (its greeting or a refusal).
async fn first_line(addr: SocketAddr) -> (TcpStream, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut io = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    (io.into_inner(), line.trim_end().to_owned())
}

#[tokio::test]
async fn connections_past_the_per_client_and_overall_limits_get_421() {
    let dir = TempDir::new("limits");
    let store = Arc::new(LocalStore::open(dir.path(), 0).unwrap().0);
    // Per client: 2 sessions from 127.0.0.1, the third is refused; one ending frees a place.
    let addr = start_limited(store.clone(), true, 100, 2).await;
    let (a, greeting) = first_line(addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let (_b, greeting) = first_line(addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let (_, refused) = first_line(addr).await;
    assert!(
        refused.starts_with("421 4.7.0 Too many connections from 127.0.0.1"),
        "{refused}"
    );
    drop(a);
    let mut greeted = false;
    for _ in 0..50 {
        let (_c, line) = first_line(addr).await;
        if line.starts_with("220") {
            greeted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(greeted, "a closed session gives its place back");

    // Overall: 3 sessions at once, whoever the clients are.
    let addr = start_limited(store, true, 3, 50).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (s, greeting) = first_line(addr).await;
        assert!(greeting.starts_with("220"), "{greeting}");
        open.push(s);
    }
    let (_, refused) = first_line(addr).await;
    assert!(refused.starts_with("421 4.3.2"), "{refused}");
    // A burst of 200 more is refused as fast as it comes, and the limit still holds.
    let burst: Vec<_> = (0..200).map(|_| tokio::spawn(first_line(addr))).collect();
    for b in burst {
        let (_, line) = b.await.unwrap();
        assert!(line.starts_with("421"), "{line}");
    }
}

#[tokio::test]
async fn an_outsider_cannot_relay_by_any_address_form() {
    let dir = TempDir::new("listener");
    let store = Arc::new(LocalStore::open(dir.path(), 0).unwrap().0);
    let addr = start(store.clone(), false).await;
    for rcpt in [
        // Address literals, our own address among them.
        "bob@[192.0.2.1]",
        "bob@[127.0.0.1]",
        "bob@[IPv6:2001:db8::1]",
        // No domain at all, a foreign one, a subdomain or a look-alike of the accepted one.
        "bob",
        "bob@far.example",
        "bob@sub.inbound.example",
        "bob@inbound.example.far.example",
        "bob@xinbound.example",
    ] {
        let (to, end) = send_one(addr, rcpt).await;
        assert!(
            to.starts_with("554 5.7.1") || to.starts_with("553") || to.starts_with("501"),
            "{rcpt}: {to}"
        );
        assert!(end.is_none(), "{rcpt}");
    }
    // Source routes, even ending in the accepted domain, never get past RCPT.
    for rcpt in [
        "@far.example:bob@inbound.example",
        "@inbound.example:bob@far.example",
        "@a.example,@b.example:bob@inbound.example",
    ] {
        let (to, _) = send_one(addr, rcpt).await;
        assert!(to.starts_with("553"), "{rcpt}: {to}");
    }
    assert!(queued(&store).is_empty(), "nothing queued");
}

#[tokio::test]
async fn a_message_looping_through_too_many_relays_is_refused() {
    let dir = TempDir::new("listener");
    let store = Arc::new(LocalStore::open(dir.path(), 0).unwrap().0);
    let addr = start(store.clone(), true).await;
    for (hops, want) in [(49, "250"), (50, "554 5.4.6")] {
        let received = "Received: from a.example by b.example; Wed, 2 Dec 2026 10:00:00 +0000\r\n"
            .repeat(hops);
        let end = send_content(addr, &format!("{received}Subject: loop\r\n\r\nbody\r\n")).await;
        assert!(end.starts_with(want), "{hops} hops: {end}");
    }
    assert_eq!(queued(&store).len(), 1, "only the message under the limit");
}

/// RFC 8689 end to end through the relay: REQUIRETLS is not offered and refused in
/// plaintext, offered and taken over STARTTLS; the message is stored with its tag (as is a
/// `TLS-Required: No` one); and when the only next hop cannot be authenticated (an address
/// literal under a configured `may`: no DANE, no MTA-STS), the message is never sent but
/// bounced with 5.7.30, in a DSN that returns the headers only and itself carries
/// REQUIRETLS.
#[tokio::test]
async fn requiretls_is_taken_over_starttls_stored_and_bounced_with_5_7_30_when_no_host_qualifies() {
    use relay::queue::{DsnParams, Lease};
    use smtp::TlsRequest;

    let dir = TempDir::new("listener-requiretls");
    let store = Arc::new(
        LocalStore::open(dir.path(), relay::scheduler::unix_now())
            .unwrap()
            .0,
    );
    // The listener, with STARTTLS.
    let cert = danemta_lab::pki::TestCert::self_signed(&["mx.example.test"]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = smtp::server::tls::SniResolver::from_pem(
        &[(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())],
        &provider,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::new(HeloName::new("mx.example.test").unwrap());
    config.timeouts = Timeouts::uniform(Duration::from_secs(5));
    config.tls = Some(resolver.into_server_config(provider.clone()).unwrap());
    let acceptor = RelayAcceptor::new(
        store.clone() as Arc<dyn Store>,
        "mx.example.test",
        &server_config(true),
    );
    tokio::spawn(serve_listener(
        listener,
        Arc::new(Server::new(config, Arc::new(acceptor))),
        ConnectionLimits {
            overall: 10,
            per_client: 10,
            exempt: Vec::new(),
            plaintext_refusal: true,
        },
        "smtp",
    ));

    // Plaintext: not offered, refused; a TLS-Required: No message is tagged.
    let mut c = Raw::connect(addr).await;
    let mut ehlo = String::new();
    c.io.get_mut()
        .write_all(b"EHLO client.example\r\n")
        .await
        .unwrap();
    loop {
        let mut line = String::new();
        c.io.read_line(&mut line).await.unwrap();
        ehlo.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("REQUIRETLS"),
        "{ehlo}"
    );
    let refused = c
        .send("MAIL FROM:<alice@client.example> REQUIRETLS\r\n")
        .await;
    assert!(refused.starts_with("530 5.7.10"), "{refused}");
    assert!(
        c.send("MAIL FROM:<alice@client.example>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        c.send("RCPT TO:<carol@example.test>\r\n")
            .await
            .starts_with("250")
    );
    assert!(c.send("DATA\r\n").await.starts_with("354"));
    let accepted = c
        .send("Subject: relaxed\r\nTLS-Required: No\r\n\r\nanything goes\r\n.\r\n")
        .await;
    assert!(accepted.starts_with("250"), "{accepted}");
    let _ = c.send("QUIT\r\n").await;

    // Over STARTTLS: offered and taken.
    let mut session = smtp::session::Session::open(
        addr,
        "mx.example.test",
        "client.example",
        &smtp::tls::Mode::Opportunistic,
        &provider,
        &smtp::Timeouts::uniform(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert!(session.tls().is_some() && session.capabilities().requiretls);
    let envelope = smtp::Envelope::new("alice@client.example", ["bob@example.test"])
        .unwrap()
        .with_tls_request(TlsRequest::Required);
    let secret = smtp::Message::new(b"Subject: secret plans\n\nthe secret body\n").unwrap();
    let t = session.transact(&envelope, &secret).await.unwrap();
    assert_eq!(t.data.unwrap().code(), 250);
    session.quit().await;

    // Both are stored with their tags, read back from the queue database.
    let lease = Lease {
        owner: "test".into(),
        until: i64::MAX / 4,
    };
    let claims = store.due(i64::MAX / 4, 10, &lease).unwrap();
    let tag = |rcpt: &str| {
        claims
            .iter()
            .find(|c| c.recipients == [rcpt])
            .map(|c| c.dsn.tls_request)
    };
    assert_eq!(tag("bob@example.test"), Some(TlsRequest::Required));
    assert_eq!(tag("carol@example.test"), Some(TlsRequest::Optional));
    for claim in &claims {
        store.complete(claim).unwrap();
        store.delete(&claim.id).unwrap();
    }

    // The only next hop cannot be authenticated: a sink in plaintext, at an address
    // literal, under a configured `may`.
    let sink_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink_listener.local_addr().unwrap();
    let sink_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sink_connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = sink_listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = stream.write_all(b"554 5.7.1 not expected\r\n").await;
        }
    });
    let toml = format!(
        "[[policy]]\ndomain = \"example.test\"\nlevel = \"may\"\nnext_hop = \"[{}]:{}\"\n",
        sink_addr.ip(),
        sink_addr.port()
    );
    let relay_config =
        Arc::new(relay::config::Config::parse(&toml, std::path::Path::new("test.toml")).unwrap());
    let settings = relay::scheduler::Settings {
        hostname: HeloName::new("relay.test").unwrap(),
        retry: relay::scheduler::retry::Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
            lifetime: Duration::from_secs(3600),
        },
        max_connections: 4,
        max_connections_per_destination: 2,
        max_claimed: 16,
        timeouts: smtp::Timeouts::uniform(Duration::from_secs(5)),
        owner: "test".into(),
        lease: Duration::from_secs(120),
        dnssec: Err("no DNS in this test".into()),
    };
    let policy = relay::scheduler::Policy {
        config: relay_config,
        roots: Arc::new(rustls::RootCertStore::empty()),
    };
    // Only bob's message is queued now; the relay takes it.
    let id = QueueId::generate();
    store
        .accept(
            &NewMessage {
                id: &id,
                envelope: &envelope,
                dsn: &DsnParams {
                    ret: Some(smtp::server::Ret::Full),
                    tls_request: TlsRequest::Required,
                    ..DsnParams::default()
                },
                body: b"From: <alice@client.example>\r\nSubject: secret plans\r\n\r\nthe secret body\r\n",
            },
            relay::scheduler::unix_now(),
        )
        .unwrap();
    let scheduler = Arc::new(relay::scheduler::Scheduler::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoDns),
        settings,
        policy,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(scheduler.clone().run(stopped));
    scheduler.wake();
    // The message is bounced (gone from the queue), and a DSN to alice takes its place.
    let mut dsn = None;
    for _ in 0..200 {
        let entries = queued(&store);
        if !entries.iter().any(|e| e.queue_id == id)
            && let Some(e) = entries.iter().find(|e| e.sender.is_empty())
        {
            dsn = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    let dsn = dsn.expect("a DSN in place of the bounced message");
    assert_eq!(
        sink_connections.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(dsn.recipients[0].address, "alice@client.example");
    let body = body_of(&store, &dsn.queue_id);
    assert!(body.contains("Status: 5.7.30"), "{body}");
    assert!(body.contains("REQUIRETLS"), "{body}");
    assert!(body.contains("Subject: secret plans"), "{body}");
    assert!(
        !body.contains("the secret body"),
        "RET=FULL is disregarded: {body}"
    );
    // The DSN itself is queued with REQUIRETLS (RFC 8689 §5).
    let claims = store.due(i64::MAX / 4, 10, &lease).unwrap();
    let claim = claims.iter().find(|c| c.id == dsn.queue_id).unwrap();
    assert_eq!(claim.dsn.tls_request, TlsRequest::Required);
}

/// Every lookup fails: the REQUIRETLS test routes by address literal.
struct NoDns;

impl dns::Resolver for NoDns {
    async fn lookup(&self, name: &dns::DnsName, rtype: dns::RecordType) -> dns::Lookup {
        dns::testing::failed(name.clone(), rtype, dns::Failure::Timeout)
    }
}
