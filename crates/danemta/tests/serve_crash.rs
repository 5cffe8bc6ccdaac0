//! `danemta serve` under crashes (issue 12, item 1): a continuous load of submissions while the
//! daemon is killed with SIGKILL ten times at random moments (during DATA, between the `250`
//! and the delivery, in the middle of a delivery, while writing a bounce) and restarted on the
//! same queue each time.
//!
//! The verdict: every message that got `250` after DATA is delivered at least once (its
//! Message-ID at the receiver), or, for the refused domain, bounced with a DSN that reached the
//! sender; duplicates only for deliveries in flight at a kill (counted, reported, loosely
//! bounded); nothing stuck in the queue at the end; the queue database passes SQLite's
//! integrity check after every kill (checked on a copy while the daemon is down, and by the
//! daemon itself, which refuses to start on a damaged database).
//!
//! The lab: `ee.crash.test` (DANE-EE, `3 1 1`) and `sender.crash.test` (the sender's domain,
//! where DSNs go) have one Postfix receiver as MX, which stores everything in a Maildir;
//! `reject.crash.test` has the same MX, which refuses it at RCPT with `554 5.7.1`.
//!
//! The daemon is stopped by a Drop guard even when the test fails; the lab servers stop through
//! their own guards.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader as StdBufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, LabAddr, ZoneSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const GOOD_DOMAIN: &str = "ee.crash.test";
const REFUSED_DOMAIN: &str = "reject.crash.test";
const SENDER: &str = "alice@sender.crash.test";

/// Kill-and-restart cycles.
const KILLS: usize = 10;
/// Concurrent submission sessions.
const SESSIONS: usize = 8;
/// `[delivery] max_connections`: the most deliveries the daemon runs at once.
const MAX_PARALLEL_DELIVERIES: usize = 8;
/// How long the daemon gets to deliver everything after the load stops.
const DRAIN: Duration = Duration::from_secs(90);
/// How long a reply of the daemon may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

fn zone(ip: IpAddr, tlsa: &str) -> String {
    format!("@ MX 10 mx\nmx A {ip}\n_25._tcp.mx TLSA {tlsa}\n")
}

fn now_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Xorshift64: random enough for picking kill moments, and reproducible from its printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Daemon {
    config: PathBuf,
    queue: PathBuf,
    log: PathBuf,
    listen: SocketAddr,
    child: Option<Child>,
    starts: usize,
}

impl Daemon {
    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "==== serve_crash: start {} ====", self.starts).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env_remove("DANEMTA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the daemon greets with `220`; panics (with its log) if it exits or does not
    /// greet within 30 s: a daemon that refuses to start after a crash (e.g. on a database
    /// that fails its integrity check) fails the test.
    fn wait_ready(&mut self) -> Duration {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon start {} exited during startup ({status}):\n{}",
                    self.starts,
                    self.tail(80)
                );
            }
            if let Ok(s) = TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if StdBufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220") {
                    let _ = (&s).write_all(b"QUIT\r\n");
                    return t0.elapsed();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon start {} does not greet on {} after 30 s:\n{}",
                    self.starts,
                    self.listen,
                    self.tail(80)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (what `Child::kill` sends) and reaps it.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("a running daemon");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, up to `timeout` for the exit, then SIGKILL.
    fn stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, n: usize) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `danemta queue list --json`, one object per message.
    fn queue_list(&self) -> Vec<Value> {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("queue")
            .arg("--config")
            .arg(&self.config)
            .args(["list", "--json"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "queue list --json failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// While the daemon is down: the queue database and its WAL copied aside (so that
    /// nothing touches the state the next start recovers from), then `PRAGMA integrity_check`
    /// and a few counts on the copy. Panics unless the check says `ok`.
    fn check_copy(&self, scratch: &Path) -> String {
        let _ = fs::remove_dir_all(scratch);
        fs::create_dir_all(scratch).unwrap();
        for name in ["queue.sqlite", "queue.sqlite-wal"] {
            let from = self.queue.join(name);
            if from.exists() {
                fs::copy(&from, scratch.join(name)).unwrap();
            }
        }
        let db = scratch.join("queue.sqlite");
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("PRAGMA integrity_check;")
            .output()
            .expect("sqlite3 (the sqlite3 package)");
        let report = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && report == "ok",
            "the queue database after kill {} fails its integrity check: {report:?} {}",
            self.starts,
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = Command::new("sqlite3")
            .arg(&db)
            .arg(
                "SELECT count(*), count(lease_owner), sum(sender = '') FROM messages; \
                 SELECT count(*) FROM recipients;",
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&counts.stdout);
        let mut lines = text.lines();
        let (msgs, leased, dsns) = lines
            .next()
            .and_then(|l| {
                let f: Vec<&str> = l.split('|').collect();
                Some((*f.first()?, *f.get(1)?, *f.get(2)?))
            })
            .unwrap_or(("?", "?", "?"));
        format!(
            "queued {msgs} (leased, i.e. in delivery: {leased}; DSNs: {})",
            if dsns.is_empty() { "0" } else { dsns }
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The load: a small SMTP client (after benches/relay_vs_postfix.rs)

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn open(relay: SocketAddr, from: Ipv4Addr) -> Result<Conn, String> {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(from), 0))
            .map_err(|e| format!("binding {from}: {e}"))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(relay))
            .await
            .map_err(|_| format!("connecting to {relay}: timeout"))?
            .map_err(|e| format!("connecting to {relay}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Reads one (possibly multi-line) reply; its code and last line.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| format!("no reply within {REPLY_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("connection closed".into());
            }
            let bytes = line.as_bytes();
            if bytes.len() < 4 || bytes[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, line.trim_end().to_owned()));
            }
        }
    }

    async fn expect(&mut self, want: u16, what: &str) -> Result<(), String> {
        let (code, text) = self.reply().await?;
        if code == want {
            Ok(())
        } else {
            Err(format!("{what}: expected {want}, got {text:?}"))
        }
    }

    async fn command(&mut self, line: &str, want: u16) -> Result<(), String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.expect(want, line).await
    }
}

/// Every 20th message goes to the refused domain (5 %).
fn refused(n: u64) -> bool {
    n % 20 == 7
}

fn recipient(n: u64) -> String {
    let domain = if refused(n) {
        REFUSED_DOMAIN
    } else {
        GOOD_DOMAIN
    };
    format!("r{n}@{domain}")
}

fn message(n: u64) -> String {
    format!(
        "From: <{SENDER}>\r\n\
         To: <{rcpt}>\r\n\
         Subject: serve_crash {n}\r\n\
         Date: Wed, 02 Dec 2026 07:00:00 +0000\r\n\
         Message-ID: <crash-{n}@test>\r\n\
         \r\n\
         crash test message {n}\r\n\
         0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n\
         .\r\n",
        rcpt = recipient(n),
    )
}

/// What the sessions share.
struct Load {
    relay: SocketAddr,
    from: Ipv4Addr,
    stop: AtomicBool,
    /// The next message number: every attempt takes a new one, never re-sent.
    next: AtomicU64,
    /// Message numbers that got `250` after DATA.
    acked: Mutex<Vec<u64>>,
    /// Sessions between DATA and the reply to the final dot, now.
    in_data: AtomicUsize,
    /// Transactions that failed (connection refused, closed, timed out, unexpected reply).
    failures: AtomicU64,
    /// The last failure, for the report.
    last_failure: Mutex<String>,
}

impl Load {
    fn fail(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_failure.lock() {
            *l = why;
        }
    }
}

/// One session: connects (again and again), then one transaction after another until
/// stopped; any failure means a new connection after a short back-off.
async fn session(load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let mut c = match Conn::open(load.relay, load.from).await {
            Ok(c) => c,
            Err(e) => {
                load.fail(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hello = async {
            c.expect(220, "greeting").await?;
            c.command("EHLO client.crash.test", 250).await
        };
        if let Err(e) = hello.await {
            load.fail(e);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        while !load.stop.load(Ordering::Relaxed) {
            let n = load.next.fetch_add(1, Ordering::Relaxed);
            let mut in_data = false;
            let step = async {
                c.command(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
                c.command(&format!("RCPT TO:<{}>", recipient(n)), 250)
                    .await?;
                c.command("DATA", 354).await?;
                load.in_data.fetch_add(1, Ordering::Relaxed);
                in_data = true;
                c.writer
                    .write_all(message(n).as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                c.expect(250, "end of data").await
            };
            let result = step.await;
            if in_data {
                load.in_data.fetch_sub(1, Ordering::Relaxed);
            }
            match result {
                Ok(()) => load.acked.lock().unwrap().push(n),
                Err(e) => {
                    load.fail(format!("message {n}: {e}"));
                    break;
                }
            }
        }
        if load.stop.load(Ordering::Relaxed) {
            let _ = c.command("QUIT", 221).await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver's Maildir

#[derive(Default)]
struct Mailbox {
    /// Message number → how many copies were delivered.
    delivered: BTreeMap<u64, usize>,
    /// Message number → how many DSNs quote it.
    dsns: BTreeMap<u64, usize>,
    files: usize,
    /// Files that are neither one of ours nor a DSN about one of ours.
    other: Vec<String>,
}

/// `crash-N@test` occurrences in `text`: the Ns.
fn crash_ids(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<crash-") {
        rest = &rest[i + 7..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if rest[digits.len()..].starts_with("@test>")
            && let Ok(n) = digits.parse()
        {
            out.push(n);
        }
    }
    out
}

fn read_mailbox(r: &Receiver) -> Mailbox {
    let mut m = Mailbox::default();
    let inbox = r.dir().join("mail/inbox");
    for sub in ["new", "cur"] {
        let Ok(entries) = fs::read_dir(inbox.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(bytes) = fs::read(e.path()) else {
                continue;
            };
            m.files += 1;
            let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
            let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
            let is_dsn = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("Return-Path: <>"));
            if is_dsn {
                // A DSN: the original's header section (with its Message-ID) is quoted.
                let ids: BTreeSet<u64> = crash_ids(body).into_iter().collect();
                if ids.is_empty() {
                    m.other.push(e.path().display().to_string());
                }
                for n in ids {
                    *m.dsns.entry(n).or_default() += 1;
                }
                continue;
            }
            let id = head
                .lines()
                .find(|l| {
                    l.get(..11)
                        .is_some_and(|p| p.eq_ignore_ascii_case("message-id:"))
                })
                .and_then(|l| crash_ids(l).first().copied());
            match id {
                Some(n) => *m.delivered.entry(n).or_default() += 1,
                None => m.other.push(e.path().display().to_string()),
            }
        }
    }
    m
}

/// The daemon's `status=bounced` lines, by message number (`to=<rN@reject…>`).
fn bounced_lines(log: &str) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    let needle = format!("@{REFUSED_DOMAIN}>");
    for l in log.lines().filter(|l| l.contains("status=bounced")) {
        let Some(i) = l.find("to=<r") else { continue };
        let rest = &l[i + 5..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if rest[digits.len()..].starts_with(&needle)
            && let Ok(n) = digits.parse::<u64>()
        {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

fn abbreviated(ids: &[u64]) -> String {
    let shown: Vec<String> = ids
        .iter()
        .take(50)
        .map(|n| format!("<crash-{n}@test>"))
        .collect();
    if ids.len() > shown.len() {
        format!("{} … ({} in all)", shown.join(" "), ids.len())
    } else {
        shown.join(" ")
    }
}

/// The daemon's log lines about message numbers `ids` (by recipient), at most `max`.
fn lines_about(log: &str, ids: &[u64], max: usize) -> String {
    let needles: Vec<String> = ids
        .iter()
        .take(10)
        .map(|&n| format!("to=<{}>", recipient(n)))
        .collect();
    log.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        .take(max)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let t_start = Instant::now();
    let cert = TestCert::self_signed(&["mx.ee.crash.test"]).unwrap();
    let receiver = Receiver::start(
        ReceiverSpec::new("mx.ee.crash.test", &[GOOD_DOMAIN, "sender.crash.test"]).with_tls(&cert),
    )
    .expect("the Postfix receiver");
    let ip = receiver.addr().ip();
    let tlsa = tlsa_3_1_1(&cert);
    let lab = Lab::builder()
        .zones(vec![
            ZoneSpec::secure(GOOD_DOMAIN, zone(ip, &tlsa)),
            // DANE-verified, but the receiver refuses the domain: 554 5.7.1 at RCPT.
            ZoneSpec::secure(REFUSED_DOMAIN, zone(ip, &tlsa)),
            ZoneSpec::secure("sender.crash.test", zone(ip, &tlsa)),
        ])
        .start()
        .expect("the DNSSEC lab");

    let client: LabAddr = lab.claim_addr().unwrap();
    let daemon_addr: LabAddr = lab.claim_addr().unwrap();
    let listen = SocketAddr::new(IpAddr::V4(daemon_addr.ip()), 2525);
    let dir = lab.dir().join("serve-crash");
    fs::create_dir_all(&dir).unwrap();
    let queue = dir.join("queue");
    let config = dir.join("danemta.toml");
    fs::write(
        &config,
        format!(
            r#"[server]
hostname = "relay.crash.test"
relay_networks = ["{client}/32"]
[[server.listen]]
address = "{listen}"
mode = "smtp"
[dns]
resolver = "trust-ad@{resolver}"
timeout = "5s"
[queue]
dir = "{queue}"
retry_first = "2s"
retry_max = "4s"
lifetime = "1h"
[delivery]
policy = "dane"
port = 25
max_connections = {MAX_PARALLEL_DELIVERIES}
max_connections_per_destination = {MAX_PARALLEL_DELIVERIES}
[metrics]
listen = "{metrics}"
"#,
            client = client.ip(),
            resolver = lab.validating_resolver(),
            queue = queue.display(),
            metrics = SocketAddr::new(listen.ip(), 9325),
        ),
    )
    .unwrap();
    let mut daemon = Daemon {
        config,
        queue,
        log: dir.join("serve.log"),
        listen,
        child: None,
        starts: 0,
    };
    daemon.spawn();
    daemon.wait_ready();

    let seed = match std::env::var("SERVE_CRASH_SEED") {
        Ok(s) => s.parse().expect("SERVE_CRASH_SEED: a number"),
        Err(_) => (now_epoch().as_nanos() as u64) | 1,
    };
    eprintln!("serve_crash: seed {seed} (SERVE_CRASH_SEED={seed} repeats the kill moments)");
    let mut rng = XorShift(seed);

    let load = Arc::new(Load {
        relay: listen,
        from: client.ip(),
        stop: AtomicBool::new(false),
        next: AtomicU64::new(0),
        acked: Mutex::new(Vec::new()),
        in_data: AtomicUsize::new(0),
        failures: AtomicU64::new(0),
        last_failure: Mutex::new(String::new()),
    });
    let generator = {
        let load = Arc::clone(&load);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..SESSIONS)
                    .map(|_| tokio::spawn(session(Arc::clone(&load))))
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };

    // The killer.
    let scratch = dir.join("integrity-copy");
    let mut restarts = Vec::new();
    for k in 1..=KILLS {
        let wait = rng.range(200, 1500);
        sleep(Duration::from_millis(wait));
        let acked = load.acked.lock().unwrap().len();
        let in_data = load.in_data.load(Ordering::Relaxed);
        daemon.kill9();
        let state = daemon.check_copy(&scratch);
        eprintln!(
            "serve_crash: kill {k} after {wait} ms: {acked} acknowledged so far, {in_data} \
             sessions in DATA; at the kill: {state}; integrity ok"
        );
        daemon.spawn();
        restarts.push(daemon.wait_ready());
    }
    // Some load after the last restart, then stop it.
    sleep(Duration::from_millis(1000));
    load.stop.store(true, Ordering::Relaxed);
    generator.join().expect("the load generator");
    let acked: Vec<u64> = load.acked.lock().unwrap().clone();
    let attempts = load.next.load(Ordering::Relaxed);
    let failures = load.failures.load(Ordering::Relaxed);
    eprintln!(
        "serve_crash: load stopped after {:.1?}: {attempts} transactions begun, {} acknowledged, \
         {failures} failed (last: {}); restarts took {:?}",
        t_start.elapsed(),
        acked.len(),
        load.last_failure.lock().unwrap(),
        restarts
    );
    assert!(
        acked.len() >= 500,
        "too little load to mean anything: {} acknowledged; log tail:\n{}",
        acked.len(),
        daemon.tail(40)
    );
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(
        acked_set.len(),
        acked.len(),
        "a message number acknowledged twice"
    );
    let (acked_refused, acked_good): (Vec<u64>, Vec<u64>) =
        acked.iter().copied().partition(|&n| refused(n));
    assert!(
        !acked_refused.is_empty(),
        "no message to the refused domain was acknowledged"
    );

    // Drain: until every acknowledged message is delivered (or bounced with a DSN at the
    // sender) and the queue is empty.
    let drain_start = Instant::now();
    let deadline = drain_start + DRAIN;
    let (mailbox, queued) = loop {
        let mailbox = read_mailbox(&receiver);
        let missing = acked_good
            .iter()
            .filter(|n| !mailbox.delivered.contains_key(n))
            .count();
        let no_dsn = acked_refused
            .iter()
            .filter(|n| !mailbox.dsns.contains_key(n))
            .count();
        let queued = daemon.queue_list();
        if (missing == 0 && no_dsn == 0 && queued.is_empty()) || Instant::now() > deadline {
            break (mailbox, queued);
        }
        sleep(Duration::from_millis(500));
    };
    let drained_in = drain_start.elapsed();
    // Let late duplicates land before counting them.
    sleep(Duration::from_secs(2));
    let mailbox = {
        let later = read_mailbox(&receiver);
        if later.files >= mailbox.files {
            later
        } else {
            mailbox
        }
    };
    let log = daemon.log_text();
    let bounced = bounced_lines(&log);

    let missing: Vec<u64> = acked_good
        .iter()
        .copied()
        .filter(|n| !mailbox.delivered.contains_key(n))
        .collect();
    let refused_delivered: Vec<u64> = acked_refused
        .iter()
        .copied()
        .filter(|n| mailbox.delivered.contains_key(n))
        .collect();
    let no_dsn: Vec<u64> = acked_refused
        .iter()
        .copied()
        .filter(|n| !mailbox.dsns.contains_key(n))
        .collect();
    let no_bounce_line: Vec<u64> = acked_refused
        .iter()
        .copied()
        .filter(|n| !bounced.contains_key(n))
        .collect();
    let duplicated: Vec<(u64, usize)> = mailbox
        .delivered
        .iter()
        .filter(|&(_, &c)| c > 1)
        .map(|(&n, &c)| (n, c))
        .collect();
    let duplicates: usize = duplicated.iter().map(|(_, c)| c - 1).sum();
    let dsn_duplicates: usize = mailbox.dsns.values().map(|c| c - 1).sum();
    let unacked_delivered = mailbox
        .delivered
        .keys()
        .filter(|n| !acked_set.contains(n))
        .count();
    let delivered_copies: usize = mailbox.delivered.values().sum();
    let dsn_copies: usize = mailbox.dsns.values().sum();

    eprintln!(
        "serve_crash: totals after {KILLS} kills (drained in {drained_in:.1?}, whole test \
         {:.1?}):\n  acknowledged {} ({} to {GOOD_DOMAIN}, {} to {REFUSED_DOMAIN})\n  delivered \
         {} distinct messages in {delivered_copies} copies ({unacked_delivered} of them never \
         acknowledged: the connection broke after the final dot)\n  duplicates {duplicates} \
         ({} messages delivered more than once: {:?})\n  bounced {} distinct, DSNs {} distinct \
         in {dsn_copies} copies ({dsn_duplicates} duplicate DSNs)\n  mailbox files {}, others \
         {:?}",
        t_start.elapsed(),
        acked.len(),
        acked_good.len(),
        acked_refused.len(),
        mailbox.delivered.len(),
        duplicated.len(),
        duplicated.iter().take(30).collect::<Vec<_>>(),
        bounced.len(),
        mailbox.dsns.len(),
        mailbox.files,
        mailbox.other.iter().take(5).collect::<Vec<_>>(),
    );

    assert!(
        missing.is_empty(),
        "LOST: {} acknowledged messages to {GOOD_DOMAIN} never reached the receiver within \
         {DRAIN:?} after the load stopped: {}\nthe daemon's lines about the first of them:\n{}\n\
         queue: {:#?}\nlog tail:\n{}\nreceiver:\n{}",
        missing.len(),
        abbreviated(&missing),
        lines_about(&log, &missing, 40),
        queued.iter().take(10).collect::<Vec<_>>(),
        daemon.tail(60),
        receiver.log_tail(20)
    );
    assert!(
        refused_delivered.is_empty(),
        "messages to the refused domain were delivered: {}",
        abbreviated(&refused_delivered)
    );
    assert!(
        no_bounce_line.is_empty(),
        "acknowledged messages to {REFUSED_DOMAIN} without a `status=bounced` line: {}\n{}\nlog \
         tail:\n{}",
        abbreviated(&no_bounce_line),
        lines_about(&log, &no_bounce_line, 40),
        daemon.tail(60)
    );
    assert!(
        no_dsn.is_empty(),
        "bounces without a DSN at {SENDER} within {DRAIN:?}: {}\n{}\nqueue: {:#?}\nlog tail:\n{}",
        abbreviated(&no_dsn),
        lines_about(&log, &no_dsn, 40),
        queued.iter().take(10).collect::<Vec<_>>(),
        daemon.tail(60)
    );
    assert!(
        queued.is_empty(),
        "STUCK: {} messages still queued {DRAIN:?} after the load stopped: {:#?}\nlog tail:\n{}",
        queued.len(),
        queued.iter().take(20).collect::<Vec<_>>(),
        daemon.tail(60)
    );
    let bound = KILLS * MAX_PARALLEL_DELIVERIES;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicate deliveries, more than {KILLS} kills x {MAX_PARALLEL_DELIVERIES} \
         deliveries in flight = {bound}: {:?}",
        duplicated.iter().take(50).collect::<Vec<_>>()
    );
    assert!(
        dsn_duplicates <= bound,
        "{dsn_duplicates} duplicate DSNs, more than {bound}"
    );
    daemon.stop(Duration::from_secs(30));
}
