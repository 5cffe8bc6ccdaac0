//! The scheduler (relay::scheduler) end to end over loopback, without DNS: `[[policy]]`
//! entries send every domain to `[127.0.0.1]:PORT`, where an SMTP sink (the smtp crate's
//! server) accepts, refuses with 550, or defers with 451 by recipient. Checks delivery and
//! removal from the queue, DSNs for permanent failures and for expiry (reaching the sender
//! through the same queue), no DSN for the null sender, back-off, and the policy table.

mod common;

use common::TempDir;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns::{DnsName, Failure, Lookup, RecordType, Resolver};
use relay::config::Config;
use relay::queue::{DsnParams, LocalStore, NewMessage, QueueId, Store};
use relay::scheduler::retry::Retry;
use relay::scheduler::{Policy, Scheduler, Settings, unix_now};
use smtp::reply::{EnhancedStatus, Reply};
use smtp::server::{
    Acceptor, Client, MailFrom, QueueId as SinkId, RcptTo, Server, Transaction, reply,
};
use smtp::{Envelope, HeloName, Timeouts};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Every lookup fails: the tests route by address literal and must never need DNS.
struct NoDns;

impl Resolver for NoDns {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        dns::testing::failed(name.clone(), rtype, Failure::Timeout)
    }
}

/// What the sink got: (MAIL FROM, RCPT TOs, content).
type Got = Arc<Mutex<Vec<(String, Vec<String>, String)>>>;

/// Accepts any recipient except `unknown*` (550 5.1.1) and `later*` (451 4.3.0).
struct Sink {
    got: Got,
    /// The client port of each message's connection.
    ports: Arc<Mutex<Vec<u16>>>,
    /// How long it thinks before answering each message (a slow destination).
    pause: Duration,
}

impl Acceptor for Sink {
    async fn rcpt(&self, _: &Client, _: &MailFrom, rcpt: &RcptTo) -> Result<(), Reply> {
        if rcpt.recipient.starts_with("unknown") {
            return Err(reply(
                550,
                EnhancedStatus::new(5, 1, 1),
                "no such user here",
            ));
        }
        if rcpt.recipient.starts_with("later") {
            return Err(reply(451, EnhancedStatus::new(4, 3, 0), "try again later"));
        }
        Ok(())
    }

    async fn message(&self, c: &Client, t: &Transaction, body: Vec<u8>) -> Result<SinkId, Reply> {
        tokio::time::sleep(self.pause).await;
        self.ports
            .lock()
            .unwrap()
            .push(c.addr.map_or(0, |a| a.port()));
        self.got.lock().unwrap().push((
            t.mail.sender.clone(),
            t.rcpts.iter().map(|r| r.recipient.clone()).collect(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        Ok(SinkId("sink".into()))
    }
}

async fn sink() -> (SocketAddr, Got) {
    let (addr, got, _) = sink_with_ports().await;
    (addr, got)
}

async fn sink_with_ports() -> (SocketAddr, Got, Arc<Mutex<Vec<u16>>>) {
    sink_pausing(Duration::ZERO).await
}

/// A sink that takes `pause` to answer each message.
async fn sink_pausing(pause: Duration) -> (SocketAddr, Got, Arc<Mutex<Vec<u16>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Got::default();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let mut config = smtp::server::Config::new(HeloName::new("sink.test").unwrap());
    config.timeouts = smtp::server::Timeouts::uniform(Duration::from_secs(5));
    let sink = Sink {
        got: got.clone(),
        ports: ports.clone(),
        pause,
    };
    let server = Arc::new(Server::new(config, Arc::new(sink)));
    tokio::spawn(relay::listener::serve_listener(
        listener,
        server,
        relay::listener::ConnectionLimits::overall(10),
        "smtp",
    ));
    (addr, got, ports)
}

struct Relay {
    store: Arc<LocalStore>,
    scheduler: Arc<Scheduler<NoDns>>,
    config: Arc<Config>,
    stop: watch::Sender<bool>,
    _dir: TempDir,
}

/// A scheduler on a fresh queue; `example.test` and `sender.test` go to the sink at
/// `level`; retries after 1 s (then 2 s); the lifetime is `lifetime` seconds.
async fn relay(sink: SocketAddr, level: &str, lifetime: u64) -> Relay {
    relay_with(sink, level, lifetime, "").await
}

/// [`relay`] with `extra` TOML at the top of the configuration.
async fn relay_with(sink: SocketAddr, level: &str, lifetime: u64, extra: &str) -> Relay {
    let dir = TempDir::new("scheduler");
    let toml = format!(
        r#"{extra}
[[policy]]
domain = "example.test"
level = "{level}"
next_hop = "[{ip}]:{port}"
[[policy]]
domain = "sender.test"
level = "may"
next_hop = "[{ip}]:{port}"
"#,
        ip = sink.ip(),
        port = sink.port()
    );
    let config = Arc::new(Config::parse(&toml, std::path::Path::new("test.toml")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path(), unix_now()).unwrap().0);
    let settings = Settings {
        hostname: HeloName::new("relay.test").unwrap(),
        retry: Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
            lifetime: Duration::from_secs(lifetime),
        },
        max_connections: 4,
        max_connections_per_destination: 2,
        max_claimed: 16,
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        owner: "test".into(),
        lease: Duration::from_secs(120),
        dnssec: Err("no DNS in this test".into()),
    };
    let policy = Policy {
        config: Arc::clone(&config),
        roots: Arc::new(rustls::RootCertStore::empty()),
    };
    let scheduler = Arc::new(Scheduler::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoDns),
        settings,
        policy,
    ));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(scheduler.clone().run(stopped));
    Relay {
        store,
        scheduler,
        config,
        stop,
        _dir: dir,
    }
}

impl Relay {
    fn queue(&self, from: &str, to: &[&str], dsn: DsnParams) -> QueueId {
        let id = QueueId::generate();
        let envelope = Envelope::new(from, to.iter().copied()).unwrap();
        let body = format!(
            "From: <{from}>\r\nSubject: test\r\nMessage-ID: <{id}@relay.test>\r\n\r\nhello\r\n"
        );
        self.store
            .accept(
                &NewMessage {
                    id: &id,
                    envelope: &envelope,
                    dsn: &dsn,
                    body: body.as_bytes(),
                },
                unix_now(),
            )
            .unwrap();
        self.scheduler.wake();
        id
    }

    /// The configuration the scheduler runs on.
    fn scheduler_config(&self) -> Config {
        (*self.config).clone()
    }

    fn queued(&self) -> usize {
        self.store.list(unix_now()).unwrap().len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits up to `secs` for `done`.
async fn until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test]
async fn delivered_mail_leaves_the_queue() {
    let (addr, got) = sink().await;
    let r = relay(addr, "may", 60).await;
    r.queue(
        "alice@sender.test",
        &["b@example.test", "c@example.test"],
        DsnParams::default(),
    );
    assert!(until(10, || got.lock().unwrap().len() == 1).await);
    let (from, to, body) = got.lock().unwrap()[0].clone();
    assert_eq!(from, "alice@sender.test");
    assert_eq!(
        to,
        ["b@example.test", "c@example.test"],
        "one transaction for both"
    );
    assert!(body.contains("hello"));
    assert!(
        until(5, || r.queued() == 0).await,
        "a delivered message leaves the queue"
    );
}

#[tokio::test]
async fn a_permanent_failure_bounces_with_a_dsn_to_the_sender() {
    let (addr, got) = sink().await;
    let r = relay(addr, "may", 60).await;
    r.queue(
        "alice@sender.test",
        &["unknown@example.test", "b@example.test"],
        DsnParams::default(),
    );
    // The original for b, then the DSN for unknown, both at the sink.
    assert!(
        until(10, || got.lock().unwrap().len() == 2).await,
        "{:?}",
        got.lock().unwrap()
    );
    let got = got.lock().unwrap().clone();
    let (from, to, dsn) = got
        .iter()
        .find(|(from, ..)| from.is_empty())
        .expect("a DSN from <>");
    assert!(from.is_empty());
    assert_eq!(to, &["alice@sender.test"]);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(
        dsn.contains("report-type=\"delivery-status\"")
            || dsn.contains("report-type=delivery-status"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; unknown@example.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(dsn.contains("550 5.1.1 no such user here"), "{dsn}");
    assert!(
        !dsn.contains("Final-Recipient: rfc822; b@example.test"),
        "only the failure is reported"
    );
    assert!(until(5, || r.queued() == 0).await);
}

#[tokio::test]
async fn a_deferral_is_retried_until_the_lifetime_then_bounced() {
    let (addr, got) = sink().await;
    let r = relay(addr, "may", 4).await;
    let id = r.queue(
        "alice@sender.test",
        &["later@example.test"],
        DsnParams::default(),
    );
    // Deferred and tried again (back-off of 1 s, then 2 s) before it expires.
    assert!(
        until(3, || {
            r.store
                .list(unix_now())
                .unwrap()
                .first()
                .is_some_and(|e| e.recipients[0].attempts >= 2)
        })
        .await
    );
    let entry = r.store.show(&id, unix_now()).unwrap();
    assert!(
        entry.recipients[0]
            .delay_reason
            .as_deref()
            .unwrap()
            .contains("451 4.3.0")
    );
    // At the end of the lifetime: a DSN, and the message leaves the queue.
    assert!(until(10, || !got.lock().unwrap().is_empty()).await);
    let (from, to, dsn) = got.lock().unwrap()[0].clone();
    assert!(from.is_empty());
    assert_eq!(to, ["alice@sender.test"]);
    assert!(
        dsn.contains("Final-Recipient: rfc822; later@example.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Status: 4."), "{dsn}");
    assert!(until(5, || r.queued() == 0).await);
}

#[tokio::test]
async fn no_dsn_goes_to_the_null_sender() {
    let (addr, got) = sink().await;
    let r = relay(addr, "may", 60).await;
    r.queue("", &["unknown@example.test"], DsnParams::default());
    assert!(until(10, || r.queued() == 0).await, "the bounce is dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(got.lock().unwrap().is_empty(), "{:?}", got.lock().unwrap());
}

#[tokio::test]
async fn notify_never_suppresses_the_dsn_and_success_asks_for_one() {
    let (addr, got) = sink().await;
    let r = relay(addr, "may", 60).await;
    let dsn: DsnParams = serde_json::from_value(serde_json::json!({
        "envid": "ENV-42",
        "recipients": [
            { "address": "unknown@example.test", "notify": { "never": true, "success": false, "failure": false, "delay": false } },
            { "address": "b@example.test", "notify": { "never": false, "success": true, "failure": true, "delay": false } },
        ]
    }))
    .unwrap();
    r.queue(
        "alice@sender.test",
        &["unknown@example.test", "b@example.test"],
        dsn,
    );
    assert!(
        until(10, || got.lock().unwrap().len() == 2).await,
        "{:?}",
        got.lock().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "the original and one success DSN: {got:?}");
    let (_, _, dsn) = got.iter().find(|(from, ..)| from.is_empty()).unwrap();
    assert!(
        dsn.contains("Final-Recipient: rfc822; b@example.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: relayed"), "{dsn}");
    assert!(dsn.contains("Original-Envelope-Id: ENV-42"), "{dsn}");
    assert!(!dsn.contains("unknown@example.test"), "NOTIFY=NEVER: {dsn}");
}

/// `dane-only` without working DNSSEC validation (the start-up probe failed) delivers
/// nothing: the mail stays queued, deferred with the reason (RFC 7672 §2.1.1).
#[tokio::test]
async fn dane_only_without_dnssec_defers_and_never_bounces_early() {
    let (addr, got) = sink().await;
    let r = relay(addr, "dane-only", 60).await;
    let id = r.queue(
        "alice@sender.test",
        &["b@example.test"],
        DsnParams::default(),
    );
    assert!(
        until(5, || r
            .store
            .show(&id, unix_now())
            .is_ok_and(|e| e.recipients[0].attempts >= 1))
        .await
    );
    let entry = r.store.show(&id, unix_now()).unwrap();
    assert!(
        entry.recipients[0]
            .delay_reason
            .as_deref()
            .unwrap()
            .contains("dane-only refused"),
        "{entry:?}"
    );
    assert!(got.lock().unwrap().is_empty());
}

/// RFC 5321 §4.1.1.5: messages to one destination share connections: those claimed together
/// go over one connection, and a connection left idle by one job carries the next job's
/// message (within the idle time) instead of a new one.
#[tokio::test]
async fn messages_to_one_destination_share_a_connection() {
    let (addr, got, ports) = sink_with_ports().await;
    let r = relay(addr, "may", 60).await;
    for n in 0..6 {
        r.queue(
            "alice@sender.test",
            &[&format!("b{n}@example.test")],
            DsnParams::default(),
        );
    }
    assert!(until(10, || got.lock().unwrap().len() == 6).await);
    let distinct = |p: &[u16]| {
        let mut p = p.to_vec();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    let first = ports.lock().unwrap().clone();
    assert!(
        distinct(&first) <= 2,
        "at most 2 connections per destination: {first:?}"
    );
    // A message soon after rides on a parked connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.queue(
        "alice@sender.test",
        &["late@example.test"],
        DsnParams::default(),
    );
    assert!(until(10, || got.lock().unwrap().len() == 7).await);
    let all = ports.lock().unwrap().clone();
    assert!(first.contains(all.last().unwrap()), "reused: {all:?}");
}

#[tokio::test]
async fn a_paused_relay_queues_and_delivers_only_once_resumed() {
    let (addr, got) = sink().await;
    let r = relay_with(addr, "may", 60, "[delivery]\npaused = true\n").await;
    for _ in 0..3 {
        r.queue(
            "alice@sender.test",
            &["b@example.test"],
            DsnParams::default(),
        );
    }
    assert!(
        !until(2, || !got.lock().unwrap().is_empty()).await,
        "nothing is delivered while paused"
    );
    assert_eq!(r.queued(), 3);
    // SIGHUP with paused = false.
    let mut config = r.scheduler_config();
    config.delivery.paused = false;
    r.scheduler.reload(Policy {
        config: Arc::new(config),
        roots: Arc::new(rustls::RootCertStore::empty()),
    });
    assert!(until(10, || got.lock().unwrap().len() == 3).await);
    assert!(until(5, || r.queued() == 0).await);
}

/// One slow destination (half a second per message, one connection) with 30 messages queued
/// before one for a fast destination: the slow one may hold only half the 16 claimed places
/// (and a pass overshoots by 2 at most), so the fast message goes out at once instead of
/// waiting for 14 slow deliveries (7 s); the slow mail all arrives, at the slow
/// destination's pace (15 s).
#[tokio::test]
async fn a_slow_destination_cannot_hold_every_claimed_place() {
    let (fast, fast_got) = sink().await;
    let (slow, slow_got, _) = sink_pausing(Duration::from_millis(500)).await;
    let extra = format!(
        "[[policy]]\ndomain = \"slow.test\"\nlevel = \"may\"\nnext_hop = \"[{}]:{}\"\n",
        slow.ip(),
        slow.port()
    );
    let r = relay_with(fast, "may", 600, &extra).await;
    for i in 0..30 {
        r.queue(
            "alice@sender.test",
            &[&format!("user{i}@slow.test")],
            DsnParams::default(),
        );
    }
    r.queue(
        "alice@sender.test",
        &["b@example.test"],
        DsnParams::default(),
    );
    assert!(
        until(4, || !fast_got.lock().unwrap().is_empty()).await,
        "the fast destination waited behind the slow one"
    );
    // The slow destination goes on at its own pace; the messages that waited their turn
    // were left in the queue untouched (no attempt counted) and all arrive.
    assert!(
        until(60, || slow_got.lock().unwrap().len() == 30).await,
        "{} of 30",
        slow_got.lock().unwrap().len()
    );
    assert!(until(10, || r.queued() == 0).await);
}
