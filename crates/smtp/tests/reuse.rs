//! Several messages per connection (RSET between them, RFC 5321 §4.1.1.5) and bodies streamed
//! in blocks (RFC 5321 §4.5.3.2.5), against an in-process plaintext SMTP server that counts
//! connections, RSETs and messages, and can die between messages.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dns::route::{Address, Candidate, DaneState};
use dns::{DnsName, Route, Status};
use smtp::deliver::{Outgoing, deliver_many};
use smtp::message::{Body, BodySource};
use smtp::outcome::Outcome;
use smtp::session::{BLOCK, Session, SessionError, Stage};
use smtp::tls::Mode;
use smtp::{Config, Envelope, Fate, Level, Message, Timeouts};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpListener;

/// How the lab server misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// Never.
    None,
    /// The first connection closes when it receives its first RSET (an idle connection the
    /// server dropped).
    DropAtRset,
    /// The first connection answers its second MAIL with 421 and closes.
    Busy421,
    /// As `DropAtRset`, and every later connection is greeted with 421.
    DropThenRefuse,
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    rsets: AtomicUsize,
    /// Each message received up to its final dot, as it came over the wire (dot-stuffed).
    messages: Mutex<Vec<Vec<u8>>>,
}

/// A plaintext ESMTP server (PIPELINING, SIZE) on a fresh loopback port.
async fn lab(trouble: Trouble) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let index = shared.connections.fetch_add(1, Ordering::SeqCst);
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                if trouble == Trouble::DropThenRefuse && index > 0 {
                    let _ = io.get_mut().write_all(b"421 4.3.2 go away\r\n").await;
                    return;
                }
                let _ = io.get_mut().write_all(b"220 lab ESMTP\r\n").await;
                let mut mails = 0;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if io.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if line.starts_with(b"EHLO") {
                        b"250-lab\r\n250-PIPELINING\r\n250 SIZE 100000000\r\n"
                    } else if line.starts_with(b"MAIL") {
                        mails += 1;
                        if trouble == Trouble::Busy421 && index == 0 && mails == 2 {
                            let _ = io.get_mut().write_all(b"421 4.3.2 closing\r\n").await;
                            return;
                        }
                        b"250 2.1.0 ok\r\n"
                    } else if line.starts_with(b"RSET") {
                        seen.rsets.fetch_add(1, Ordering::SeqCst);
                        if matches!(trouble, Trouble::DropAtRset | Trouble::DropThenRefuse)
                            && index == 0
                        {
                            return;
                        }
                        b"250 2.0.0 ok\r\n"
                    } else if line.starts_with(b"DATA") {
                        io.get_mut().write_all(b"354 go\r\n").await.unwrap();
                        let mut data = Vec::new();
                        loop {
                            line.clear();
                            if io.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                                return; // cut short: no message
                            }
                            if line == b".\r\n" {
                                break;
                            }
                            data.extend_from_slice(&line);
                        }
                        seen.messages.lock().unwrap().push(data);
                        b"250 2.0.0 queued\r\n"
                    } else if line.starts_with(b"QUIT") {
                        let _ = io.get_mut().write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if io.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

/// A route with one host without DANE at `addr`.
fn route(addr: SocketAddr) -> Route {
    Route::Deliver {
        mx_dnssec: Status::Insecure,
        candidates: vec![Candidate {
            name: n("mx.example.test"),
            preference: 10,
            port: addr.port(),
            tlsa_base: n("mx.example.test"),
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

fn config() -> Config {
    Config {
        helo_name: "client.test".parse().unwrap(),
        level: Level::Dane,
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
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

/// Three messages, each to its own recipient, delivered as a batch.
async fn three(addr: SocketAddr) -> Vec<smtp::Delivery> {
    let envelopes: Vec<Envelope> = (1..=3)
        .map(|i| Envelope::new("a@client.test", [format!("r{i}@example.test")]).unwrap())
        .collect();
    let messages: Vec<Message> = (1..=3)
        .map(|i| Message::new(format!("Subject: {i}\n\nmessage {i}\n").as_bytes()).unwrap())
        .collect();
    let batch: Vec<Outgoing> = envelopes
        .iter()
        .zip(&messages)
        .map(|(envelope, m)| Outgoing { envelope, body: m })
        .collect();
    deliver_many(&route(addr), &n("example.test"), true, &batch, &config()).await
}

fn bodies(seen: &Seen) -> Vec<String> {
    seen.messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

#[tokio::test]
async fn three_messages_go_over_one_connection_with_rset_between() {
    let (addr, seen) = lab(Trouble::None).await;
    let d = three(addr).await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Delivered), "{d:#?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.rsets.load(Ordering::SeqCst), 2);
    assert_eq!(
        bodies(&seen),
        (1..=3)
            .map(|i| format!("Subject: {i}\r\n\r\nmessage {i}\r\n"))
            .collect::<Vec<_>>()
    );
    // Each message has its own outcome and one attempt, whose replies end with its own.
    for (i, d) in d.iter().enumerate() {
        assert_eq!(d.recipients[0].address, format!("r{}@example.test", i + 1));
        assert_eq!(d.attempts.len(), 1, "{d:#?}");
        assert!(d.attempts[0].delivered);
        assert_eq!(d.attempts[0].replies[0], "220 lab ESMTP");
        assert_eq!(
            d.attempts[0].replies.last().map(String::as_str),
            Some("250 2.0.0 queued")
        );
    }
    assert!(d[1].attempts[0].replies.iter().any(|r| r == "250 2.0.0 ok"));
}

#[tokio::test]
async fn a_connection_dropped_while_idle_costs_the_next_message_nothing() {
    let (addr, seen) = lab(Trouble::DropAtRset).await;
    let d = three(addr).await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Delivered), "{d:#?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(bodies(&seen).len(), 3);
    // The dead connection is not an attempt of the message that found it dead.
    assert_eq!(d[1].attempts.len(), 1, "{d:#?}");
}

#[tokio::test]
async fn a_421_mid_batch_sends_the_rest_over_a_new_connection() {
    let (addr, seen) = lab(Trouble::Busy421).await;
    let d = three(addr).await;
    assert!(d.iter().all(|d| d.outcome == Outcome::Delivered), "{d:#?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(bodies(&seen).len(), 3);
    // The 421 is on the second message's record, before its delivery.
    let a = &d[1].attempts;
    assert_eq!(a.len(), 2, "{d:#?}");
    assert!(!a[0].delivered && a[0].reason.contains("421"), "{a:#?}");
    assert!(a[1].delivered);
}

#[tokio::test]
async fn a_destination_that_dies_mid_batch_defers_the_rest() {
    let (addr, seen) = lab(Trouble::DropThenRefuse).await;
    let d = three(addr).await;
    assert_eq!(d[0].outcome, Outcome::Delivered, "{d:#?}");
    for d in &d[1..] {
        assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
        assert_eq!(d.recipients[0].outcome, Fate::Deferred);
        assert!(
            d.recipients[0].reply.to_string().contains("421"),
            "{}",
            d.recipients[0].reply
        );
    }
    // One new connection for the second message; the third is deferred with it.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(bodies(&seen).len(), 1);
}

fn quick(data_block: Duration) -> Timeouts {
    Timeouts {
        data_block,
        ..Timeouts::uniform(Duration::from_secs(5))
    }
}

async fn open(addr: SocketAddr, timeouts: &Timeouts) -> Session {
    Session::open(
        addr,
        "mx.example.test",
        "client.test",
        &Mode::Plaintext,
        &Arc::new(rustls::crypto::ring::default_provider()),
        timeouts,
    )
    .await
    .unwrap()
}

fn envelope() -> Envelope {
    Envelope::new("a@client.test", ["b@example.test"]).unwrap()
}

/// A body written into a pipe by a task, chunk by chunk, `pause` before each.
fn piped(chunks: Vec<Vec<u8>>, pause: Duration) -> Body<'static> {
    let (reader, mut writer) = tokio::io::duplex(64);
    tokio::spawn(async move {
        for chunk in chunks {
            tokio::time::sleep(pause).await;
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    Body::stream(reader, None, false)
}

#[tokio::test]
async fn streamed_bodies_are_dot_stuffed_with_crlf_on_the_fly() {
    let (addr, seen) = lab(Trouble::None).await;
    let mut session = open(addr, &quick(Duration::from_secs(5))).await;
    let raw = b"Subject: dots\n\n.one\r\n..two\n.\nbare LF\nbare CR\rno final line ending";
    // Split at every awkward place: after a CR, before a dot, inside a CRLF.
    let chunks: Vec<Vec<u8>> = raw.chunks(3).map(<[u8]>::to_vec).collect();
    let t = session
        .transact_body(&envelope(), piped(chunks, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(t.data.unwrap().code(), 250);
    // A second streamed message on the same connection: RSET first.
    let t = session
        .transact_body(
            &envelope(),
            Body::stream(&b"Subject: 2\n\n.\n"[..], Some(13), false),
        )
        .await
        .unwrap();
    assert_eq!(t.data.unwrap().code(), 250);
    assert_eq!(session.transactions(), 2);
    session.quit().await;
    assert_eq!(seen.rsets.load(Ordering::SeqCst), 1);
    let expected = [
        String::from_utf8(Message::new(raw).unwrap().wire().to_vec()).unwrap(),
        "Subject: 2\r\n\r\n..\r\n".to_owned(),
    ];
    assert_eq!(
        expected[0],
        "Subject: dots\r\n\r\n..one\r\n...two\r\n..\r\nbare LF\r\nbare CR\r\nno final line ending\r\n"
    );
    assert_eq!(bodies(&seen), expected);
}

#[tokio::test]
async fn a_slow_but_steady_body_is_sent_and_a_stalled_one_is_cut_short() {
    let block = Duration::from_millis(300);
    let (addr, seen) = lab(Trouble::None).await;
    let mut session = open(addr, &quick(block)).await;
    // 12 chunks, 100 ms apart: 1.2 s in all, four times the per-block limit.
    let mut chunks = vec![b"Subject: slow\n\n".to_vec()];
    chunks.extend((0..11).map(|i| format!("line {i}\n").into_bytes()));
    let t = session
        .transact_body(&envelope(), piped(chunks, Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(t.data.unwrap().code(), 250);
    assert!(session.is_reusable());
    // One chunk, then nothing for 1 s: more than one block's limit.
    let stalled = vec![b"Subject: stalled\n\n".to_vec(), b"never\n".to_vec()];
    let err = session
        .transact_body(&envelope(), piped(stalled, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err, SessionError::Timeout(Stage::Body));
    assert!(!session.is_reusable());
    assert_eq!(
        session
            .transact(&envelope(), &Message::new(b"Subject: x\n\ny").unwrap())
            .await
            .unwrap_err(),
        SessionError::Unusable
    );
    session.quit().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Only the steady message arrived; the stalled one never got its final dot.
    let got = bodies(&seen);
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with("line 10\r\n"), "{}", got[0]);
}

/// A file read without tokio's `fs` feature (blocking reads are fine in a test), recording
/// the largest read the session asked for.
struct FileReader {
    file: std::fs::File,
    largest: Arc<AtomicUsize>,
}

impl AsyncRead for FileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::io::Read;
        self.largest.fetch_max(buf.remaining(), Ordering::SeqCst);
        let n = self.file.read(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// A spool file as a [`BodySource`].
struct Spool {
    path: std::path::PathBuf,
    largest: Arc<AtomicUsize>,
}

impl BodySource for Spool {
    fn open(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Body<'_>>> + Send + '_>> {
        Box::pin(async move {
            let file = std::fs::File::open(&self.path)?;
            let size = file.metadata()?.len();
            let reader = FileReader {
                file,
                largest: self.largest.clone(),
            };
            Ok(Body::stream(reader, Some(size), false))
        })
    }
}

#[tokio::test]
async fn a_20_mb_file_is_streamed_in_blocks() {
    let (addr, seen) = lab(Trouble::None).await;
    let dir = std::env::temp_dir().join(format!("danemta-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.eml");
    let mut raw = b"Subject: big\n\n".to_vec();
    let mut i = 0;
    while raw.len() < 20 * 1024 * 1024 {
        // Every seventh line starts with a dot; LF line endings, stuffed on the way.
        let dot = if i % 7 == 0 { "." } else { "" };
        raw.extend_from_slice(format!("{dot}line {i} of a large message body\n").as_bytes());
        i += 1;
    }
    std::fs::write(&path, &raw).unwrap();
    let largest = Arc::new(AtomicUsize::new(0));
    let spool = Spool {
        path: path.clone(),
        largest: largest.clone(),
    };
    let envelope = envelope();
    let batch = [Outgoing {
        envelope: &envelope,
        body: &spool,
    }];
    let d = deliver_many(&route(addr), &n("example.test"), true, &batch, &config()).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(d[0].outcome, Outcome::Delivered, "{d:#?}");
    // The session never asked for more than one block of the file at once.
    let largest = largest.load(Ordering::SeqCst);
    assert!(largest > 0 && largest <= BLOCK, "{largest}");
    let got = seen.messages.lock().unwrap();
    let expected = Message::new(&raw).unwrap();
    assert_eq!(got[0].len(), expected.len());
    assert!(got[0] == expected.wire(), "the streamed wire form differs");
}

/// A raw message in memory, streamed (not prepared beforehand).
struct Raw(Vec<u8>);

impl BodySource for Raw {
    fn open(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Body<'_>>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(Body::stream(
            &self.0[..],
            Some(self.0.len() as u64),
            false,
        ))))
    }
}

#[tokio::test]
async fn a_streamed_body_smtp_cannot_carry_bounces_and_the_rest_go_on() {
    let (addr, seen) = lab(Trouble::None).await;
    let envelope = envelope();
    let good = Raw(b"Subject: good\n\nfine\n".to_vec());
    // Past the first block, a line longer than RFC 5321 §4.5.3.1.6 allows.
    let mut bad = b"Subject: bad\n\n".to_vec();
    bad.extend(std::iter::repeat_n(b"ok\n".to_vec(), 30_000).flatten());
    bad.extend(std::iter::repeat_n(b'x', 2000));
    let bad = Raw(bad);
    let batch = [
        Outgoing {
            envelope: &envelope,
            body: &good,
        },
        Outgoing {
            envelope: &envelope,
            body: &bad,
        },
        Outgoing {
            envelope: &envelope,
            body: &good,
        },
    ];
    let d = deliver_many(&route(addr), &n("example.test"), true, &batch, &config()).await;
    assert_eq!(d[0].outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(d[1].outcome, Outcome::Bounced, "{d:#?}");
    let reply = d[1].recipients[0].reply.to_string();
    assert!(
        reply.starts_with("554 5.6.0") && reply.contains("998"),
        "{reply}"
    );
    assert_eq!(d[2].outcome, Outcome::Delivered, "{d:#?}");
    // The cut-short body was never accepted; its connection was not reused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bodies(&seen).len(), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// One message as a batch, reusing `reuse`; returns the delivery and the connection left.
async fn one_batch(
    route: &Route,
    cfg: &Config,
    reuse: Option<smtp::deliver::Connection>,
) -> (smtp::Delivery, Option<smtp::deliver::Connection>) {
    let envelope = envelope();
    let message = Message::new(b"Subject: cached\n\nhello\n").unwrap();
    let batch = [Outgoing {
        envelope: &envelope,
        body: &message,
    }];
    let mut b =
        smtp::deliver::deliver_batch(route, &n("example.test"), true, &batch, cfg, reuse).await;
    (b.deliveries.remove(0), b.connection)
}

#[tokio::test]
async fn a_cached_connection_serves_only_the_route_and_policy_it_was_opened_under() {
    let (addr, seen) = lab(Trouble::None).await;
    let r = route(addr);
    let (d, kept) = one_batch(&r, &config(), None).await;
    assert_eq!(d.outcome, Outcome::Delivered);
    let kept = kept.expect("an idle, reusable connection comes back");
    assert!(kept.is_reusable());
    assert_eq!(kept.security(), smtp::Security::Plaintext);
    assert_eq!(kept.address(), addr.ip());
    assert_eq!(kept.candidate().name, n("mx.example.test"));
    // The same route and policy: the cached connection carries it (RSET first).
    let (d, kept) = one_batch(&r, &config(), Some(kept)).await;
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.rsets.load(Ordering::SeqCst), 1);
    // The host's DANE state changed since (now secure TLSA records, unusable ones): not
    // reused under the old state.
    let Route::Deliver {
        mx_dnssec,
        mut candidates,
    } = route(addr)
    else {
        unreachable!()
    };
    candidates[0].dane = DaneState::Unusable;
    let changed = Route::Deliver {
        mx_dnssec,
        candidates,
    };
    let (d, kept) = one_batch(&changed, &config(), kept).await;
    // TLS is now mandatory and the lab offers no STARTTLS: deferred, on a new connection.
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert!(kept.is_none());
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    // Another policy level: not reused, a new connection.
    let (_, kept) = one_batch(&r, &config(), None).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    let mut may = config();
    may.level = Level::May;
    let (d, _) = one_batch(&r, &may, kept).await;
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    // The domain now has an MTA-STS enforce policy: the plaintext connection opened without
    // it must not carry the message (that would be the downgrade); a new connection finds
    // no STARTTLS and the message is deferred.
    // (The same trust anchors, so that only the policy tells the two apart.)
    let base = config();
    let (_, kept) = one_batch(&r, &base, None).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
    let policy = b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";
    let mut enforce = base.clone();
    enforce.mta_sts = Some(Arc::new(
        sts::Policy::parse(policy, "1".parse().unwrap()).unwrap(),
    ));
    let (d, kept) = one_batch(&r, &enforce, kept).await;
    assert_eq!(d.outcome, Outcome::Deferred, "{d:#?}");
    assert_eq!(d.attempts[0].rule, smtp::Rule::StsEnforce, "{d:#?}");
    assert!(kept.is_none());
    assert_eq!(seen.connections.load(Ordering::SeqCst), 6);
    assert_eq!(
        bodies(&seen).len(),
        5,
        "nothing went over the old connection"
    );
}

/// The relay spawns deliveries on a multi-threaded runtime and keeps connections in a cache
/// shared between tasks.
#[test]
fn batches_and_connections_can_move_between_threads() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Sync>() {}
    let route = route("127.0.0.1:1".parse().unwrap());
    let cfg = config();
    let batch: [Outgoing; 0] = [];
    let next_hop = n("example.test");
    let future = smtp::deliver::deliver_batch(&route, &next_hop, true, &batch, &cfg, None);
    send(&future);
    fn connection_is_send(c: smtp::deliver::Connection) -> impl Send {
        c
    }
    let _ = connection_is_send;
    sync::<Message>();
}

/// A spool file that is gone.
struct Gone;

impl BodySource for Gone {
    fn open(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Body<'_>>> + Send + '_>> {
        Box::pin(std::future::ready(Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "spool file gone",
        ))))
    }
}

#[tokio::test]
async fn an_unreadable_body_is_deferred_without_costing_the_connection() {
    let (addr, seen) = lab(Trouble::None).await;
    let envelope = envelope();
    let good = Raw(b"Subject: good\n\nfine\n".to_vec());
    let batch = [
        Outgoing {
            envelope: &envelope,
            body: &good,
        },
        Outgoing {
            envelope: &envelope,
            body: &Gone,
        },
        Outgoing {
            envelope: &envelope,
            body: &good,
        },
    ];
    let d = deliver_many(&route(addr), &n("example.test"), true, &batch, &config()).await;
    assert_eq!(d[0].outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(d[1].outcome, Outcome::Deferred, "{d:#?}");
    assert!(
        d[1].recipients[0]
            .reply
            .to_string()
            .contains("spool file gone")
    );
    assert_eq!(d[2].outcome, Outcome::Delivered, "{d:#?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(bodies(&seen).len(), 2);
}
