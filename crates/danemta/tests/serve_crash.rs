//! `danemta serve` under crashes (issue 12, item 1): a continuous load of submissions while the
//! daemon is killed with SIGKILL ten times at random moments (during DATA, between the `250`
//! and the delivery, in the middle of a delivery, while writing a bounce) and restarted on the
//! same queue each time.
//!
//! The load: 8 SMTP sessions submitting one message after another, each with a Message-ID
//! `<crash-N@test>` of its own (a new N for every attempt), 5 % of them to refused domains;
//! failures while the daemon is down are expected (reconnect, go on). The kill moments come
//! from a xorshift seeded from the clock (printed; `SERVE_CRASH_SEED=…` repeats them).
//! `SERVE_CRASH_KILLS=N` runs N cycles instead of 10 (`bash scripts/bench.sh soak`).
//!
//! The verdict: every message that got `250` after DATA is delivered at least once (its
//! Message-ID in the receiver's Maildir), or, for a refused domain, bounced (`status=bounced`
//! in the daemon's log) with a DSN that reached the sender; duplicates only for messages in
//! delivery at a kill (leased in the queue database then: a message delivered k+1 times must
//! have been leased at k kills), counted, reported and loosely bounded; nothing stuck in the
//! queue at the end; the queue database passes SQLite's integrity check after every kill
//! (checked on a copy while the daemon is down, and by the daemon itself, which refuses to
//! start on a damaged database).
//!
//! The lab: `ee.crash.test` (DANE-EE, `3 1 1`) and `sender.crash.test` (the sender's domain,
//! where DSNs go) have one Postfix receiver as MX, which stores everything in a Maildir;
//! `d0.reject.crash.test` … `d24.reject.crash.test` have the same MX, which refuses them at
//! RCPT with `554 5.7.1`.
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
/// The zone of the refused domains `d0.reject.crash.test` … : their MX is the receiver, which
/// refuses them at RCPT.
const REFUSED_ZONE: &str = "reject.crash.test";
/// How many refused domains the refused messages are spread over. One would do, except that
/// the daemon carries a destination's messages over one connection, and Postfix's smtpd slows
/// a session down after 10 refused RCPTs (`smtpd_soft_error_limit`, `smtpd_error_sleep_time`)
/// and drops it after 20: a single refused domain under load delivers one message every few
/// seconds, and its claimed messages fill the daemon's window of claimed messages (4 per
/// outgoing connection), which starves every other destination.
const REFUSED_DOMAINS: u64 = 25;
const SENDER: &str = "alice@sender.crash.test";

/// Kill-and-restart cycles: 10, or `SERVE_CRASH_KILLS` (the long soak of
/// `bash scripts/bench.sh soak`).
fn kills() -> usize {
    std::env::var("SERVE_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10)
}
/// Concurrent submission sessions.
const SESSIONS: usize = 8;
/// `[delivery] max_connections`: the most deliveries the daemon runs at once.
const MAX_PARALLEL_DELIVERIES: usize = 8;
/// The most messages that can be delivered and not yet recorded at a kill, and so delivered
/// again after the restart: a delivery job sends a batch of up to
/// `relay::scheduler::MESSAGES_PER_BATCH` messages over its connection before it records
/// their outcomes, and at most `max_connections` jobs run at once.
const MAX_IN_FLIGHT: usize = relay::scheduler::MESSAGES_PER_BATCH * MAX_PARALLEL_DELIVERIES;
/// How long the daemon gets to deliver everything after the load stops.
const DRAIN: Duration = Duration::from_secs(90);
/// How long a reply of the daemon may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

fn zone(ip: IpAddr, tlsa: &str) -> String {
    format!("@ MX 10 mx\nmx A {ip}\n_25._tcp.mx TLSA {tlsa}\n")
}

/// Now, as the daemon's log writes it (RFC 3339, UTC).
fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
        writeln!(
            log,
            "==== serve_crash: start {} ({}) ====",
            self.starts,
            utc_now()
        )
        .unwrap();
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
        let killed_at = utc_now();
        child.wait().unwrap();
        if let Ok(mut log) = File::options().append(true).open(&self.log) {
            let _ = writeln!(
                log,
                "==== serve_crash: start {} killed with SIGKILL ({killed_at}) ====",
                self.starts
            );
        }
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

    /// The queue database and its WAL copied to `scratch` (so that nothing touches the state
    /// the next start recovers from); the copy's path.
    fn copy_db(&self, scratch: &Path) -> PathBuf {
        let _ = fs::remove_dir_all(scratch);
        fs::create_dir_all(scratch).unwrap();
        for name in ["queue.sqlite", "queue.sqlite-wal"] {
            let from = self.queue.join(name);
            if from.exists() {
                fs::copy(&from, scratch.join(name)).unwrap();
            }
        }
        scratch.join("queue.sqlite")
    }

    /// While the daemon is down (killed): `PRAGMA integrity_check` on a copy of the queue
    /// database (panics unless `ok`), and what the daemon had queued and leased then.
    fn state_at_kill(&self, scratch: &Path) -> KillState {
        let db = self.copy_db(scratch);
        let report = sql(&db, "PRAGMA integrity_check;");
        assert!(
            report.trim() == "ok",
            "the queue database after kill {} fails its integrity check: {report:?}",
            self.starts
        );
        let counts = sql(
            &db,
            "SELECT count(*), count(lease_owner), total(sender = '') FROM messages;",
        );
        let mut leased = BTreeSet::new();
        // Leased messages: claimed by the dead daemon for a delivery (possibly done already,
        // not recorded yet).
        for address in sql(
            &db,
            "SELECT r.address FROM recipients r JOIN messages m ON m.id = r.message \
             WHERE m.lease_owner IS NOT NULL AND m.sender <> '';",
        )
        .lines()
        {
            leased.extend(number_of(address));
        }
        // Leased DSNs: the message numbers they quote.
        for id in sql(
            &db,
            "SELECT id FROM messages WHERE lease_owner IS NOT NULL AND sender = '';",
        )
        .lines()
        {
            if let Ok(body) = fs::read(self.queue.join("spool").join(id.trim())) {
                leased.extend(crash_ids(&String::from_utf8_lossy(&body)));
            }
        }
        KillState {
            summary: format!("queued, leased, DSNs: {}", counts.trim().replace('|', ", ")),
            leased,
        }
    }
}

/// What the daemon had at a kill.
struct KillState {
    summary: String,
    /// Message numbers whose message (or a DSN about it) was leased, i.e. in delivery.
    leased: BTreeSet<u64>,
}

/// `sqlite3 DB QUERY`: its output (rows of `|`-separated fields); panics if it fails.
fn sql(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("sqlite3 (the sqlite3 package)");
    assert!(
        out.status.success(),
        "sqlite3 {} {query:?}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    if refused(n) {
        format!("r{n}@d{}.{REFUSED_ZONE}", (n / 20) % REFUSED_DOMAINS)
    } else {
        format!("r{n}@{GOOD_DOMAIN}")
    }
}

/// The message number of a recipient address `rN@…`.
fn number_of(address: &str) -> Option<u64> {
    address.strip_prefix('r')?.split('@').next()?.parse().ok()
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

/// The daemon's `status=bounced` lines, by message number (`to=<rN@dK.reject…>`).
fn bounced_lines(log: &str) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    let suffix = format!(".{REFUSED_ZONE}");
    for l in log.lines().filter(|l| l.contains("status=bounced")) {
        let Some(i) = l.find("to=<") else { continue };
        let Some(address) = l[i + 4..].split('>').next() else {
            continue;
        };
        if address.ends_with(&suffix)
            && let Some(n) = number_of(address)
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
    let mut refused_zone = format!("mx A {ip}\n_25._tcp.mx TLSA {tlsa}\n");
    for k in 0..REFUSED_DOMAINS {
        refused_zone.push_str(&format!("d{k} MX 10 mx\n"));
    }
    let lab = Lab::builder()
        .zones(vec![
            ZoneSpec::secure(GOOD_DOMAIN, zone(ip, &tlsa)),
            // DANE-verified, but the receiver refuses the domain: 554 5.7.1 at RCPT.
            ZoneSpec::secure(REFUSED_ZONE, refused_zone),
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
    // Message number -> at how many kills it (or a DSN about it) was leased.
    let mut leased_at_kills: BTreeMap<u64, usize> = BTreeMap::new();
    let kills = kills();
    for k in 1..=kills {
        let wait = rng.range(200, 1500);
        sleep(Duration::from_millis(wait));
        let acked = load.acked.lock().unwrap().len();
        let in_data = load.in_data.load(Ordering::Relaxed);
        daemon.kill9();
        let state = daemon.state_at_kill(&scratch);
        eprintln!(
            "serve_crash: kill {k} after {wait} ms: {acked} acknowledged so far, {in_data} \
             sessions in DATA; in the queue then: {} ({} message numbers in delivery); \
             integrity ok",
            state.summary,
            state.leased.len()
        );
        for n in state.leased {
            *leased_at_kills.entry(n).or_default() += 1;
        }
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
    // Since when everything is delivered and only messages without a pending recipient are
    // queued (nothing the daemon would ever do anything about).
    let mut only_finished_since: Option<Instant> = None;
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
        if missing == 0 && no_dsn == 0 && queued.iter().all(|m| pending(m) == 0) {
            let since = *only_finished_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                break (mailbox, queued);
            }
        } else {
            only_finished_since = None;
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
    // What the stuck messages are, from the database (the daemon stopped first).
    let stuck_detail = if queued.is_empty() {
        String::new()
    } else {
        daemon.stop(Duration::from_secs(30));
        let db = daemon.copy_db(&scratch);
        let mut text = String::new();
        for m in queued.iter().take(10) {
            let id = m["queue_id"].as_str().unwrap_or("?");
            let rows = sql(
                &db,
                &format!(
                    "SELECT r.address, r.state, r.attempts, coalesce(m.hold_reason, '') \
                     FROM messages m LEFT JOIN recipients r ON r.message = m.id \
                     WHERE m.id = '{id}';"
                ),
            );
            let lines = lines_with_start(&log, id);
            text.push_str(&format!(
                "\n{id} ({} pending recipients listed; queue_name {}): recipients in the \
                 database (address|state|attempts|hold_reason): {:?}\n  log lines with its \
                 id: {lines:#?}",
                pending(m),
                m["queue_name"],
                rows.trim()
            ));
        }
        text
    };
    let finished_but_queued = queued.iter().filter(|m| pending(m) == 0).count();

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
    // Repeated more often than it was in delivery at a kill: a duplicate without excuse.
    let unexcused = |copies: &BTreeMap<u64, usize>| -> Vec<(u64, usize, usize)> {
        copies
            .iter()
            .filter(|&(_, &c)| c > 1)
            .map(|(&n, &c)| (n, c, leased_at_kills.get(&n).copied().unwrap_or(0)))
            .filter(|&(_, c, leased)| c - 1 > leased)
            .collect()
    };
    let unexcused_deliveries = unexcused(&mailbox.delivered);
    let unexcused_dsns = unexcused(&mailbox.dsns);
    let unacked_delivered = mailbox
        .delivered
        .keys()
        .filter(|n| !acked_set.contains(n))
        .count();
    let delivered_copies: usize = mailbox.delivered.values().sum();
    let dsn_copies: usize = mailbox.dsns.values().sum();

    eprintln!(
        "serve_crash: totals after {kills} kills (drained in {drained_in:.1?}, whole test \
         {:.1?}):\n  acknowledged {} ({} to {GOOD_DOMAIN}, {} to {REFUSED_ZONE})\n  delivered \
         {} distinct messages in {delivered_copies} copies ({unacked_delivered} of them never \
         acknowledged: the connection broke after the final dot)\n  duplicates {duplicates} \
         ({} messages delivered more than once: {:?})\n  bounced {} distinct, DSNs {} distinct \
         in {dsn_copies} copies ({dsn_duplicates} duplicate DSNs)\n  in delivery at a kill: {} \
         message numbers\n  still queued {} ({finished_but_queued} of them without a pending \
         recipient)\n  mailbox files {}, others {:?}",
        t_start.elapsed(),
        acked.len(),
        acked_good.len(),
        acked_refused.len(),
        mailbox.delivered.len(),
        duplicated.len(),
        duplicated.iter().take(30).collect::<Vec<_>>(),
        bounced.len(),
        mailbox.dsns.len(),
        leased_at_kills.len(),
        queued.len(),
        mailbox.files,
        mailbox.other.iter().take(5).collect::<Vec<_>>(),
    );

    let mut failures: Vec<String> = Vec::new();
    check(
        &mut failures,
        missing.is_empty(),
        format!(
            "LOST: {} acknowledged messages to {GOOD_DOMAIN} never reached the receiver within \
             {DRAIN:?} after the load stopped: {}\nthe daemon's lines about the first of them:\n{}\n\
             queue: {:#?}\nlog tail:\n{}\nreceiver:\n{}",
            missing.len(),
            abbreviated(&missing),
            lines_about(&log, &missing, 40),
            queued.iter().take(10).collect::<Vec<_>>(),
            daemon.tail(60),
            receiver.log_tail(20)
        ),
    );
    check(
        &mut failures,
        refused_delivered.is_empty(),
        format!(
            "messages to the refused domain were delivered: {}",
            abbreviated(&refused_delivered)
        ),
    );
    check(
        &mut failures,
        no_bounce_line.is_empty(),
        format!(
            "acknowledged messages to {REFUSED_ZONE} without a `status=bounced` line: {}\n{}\nlog \
             tail:\n{}",
            abbreviated(&no_bounce_line),
            lines_about(&log, &no_bounce_line, 40),
            daemon.tail(60)
        ),
    );
    check(
        &mut failures,
        no_dsn.is_empty(),
        format!(
            "bounces without a DSN at {SENDER} within {DRAIN:?}: {}\n{}\nqueue: {:#?}\nlog tail:\n{}",
            abbreviated(&no_dsn),
            lines_about(&log, &no_dsn, 40),
            queued.iter().take(10).collect::<Vec<_>>(),
            daemon.tail(60)
        ),
    );
    check(
        &mut failures,
        queued.is_empty(),
        format!(
            "STUCK: {} messages still queued after everything acknowledged was delivered or \
             bounced ({finished_but_queued} of them with no pending recipient left: every \
             recipient delivered or bounced, yet the message was never removed, so no delivery \
             will ever remove it). Daemon starts 1 to {kills} ended with kill -9, start {} with \
             SIGTERM. The first of them:{stuck_detail}\n(DANEMTA_LAB_KEEP=1 keeps the lab \
             directory {} with the queue and serve.log)",
            queued.len(),
            kills + 1,
            lab.dir().display()
        ),
    );
    check(
        &mut failures,
        unexcused_deliveries.is_empty(),
        format!(
            "delivered more often than in delivery at a kill (message number, copies, kills at \
             which it was leased): {unexcused_deliveries:?}"
        ),
    );
    check(
        &mut failures,
        unexcused_dsns.is_empty(),
        format!(
            "DSNs repeated more often than the message or its DSN was in delivery at a kill \
             (message number, DSNs, kills at which it was leased): {unexcused_dsns:?}"
        ),
    );
    let bound = kills * MAX_IN_FLIGHT;
    check(
        &mut failures,
        duplicates <= bound,
        format!(
            "{duplicates} duplicate deliveries, more than {kills} kills x {MAX_IN_FLIGHT} messages \
             in delivery = {bound}: {:?}",
            duplicated.iter().take(50).collect::<Vec<_>>()
        ),
    );
    check(
        &mut failures,
        dsn_duplicates <= bound,
        format!("{dsn_duplicates} duplicate DSNs, more than {bound}"),
    );
    assert!(
        failures.is_empty(),
        "{} of the crash test's checks failed (seed {seed}):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    daemon.stop(Duration::from_secs(30));
}

/// The log lines containing `needle`, each with the daemon start that wrote it (`start K`;
/// every start but the last ended with a kill).
fn lines_with_start(log: &str, needle: &str) -> Vec<String> {
    let mut start = 0;
    let mut out = Vec::new();
    // Whether a line with `needle` came since the last kill marker.
    let mut since_kill = false;
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix("==== serve_crash: start ") {
            if rest.contains("killed") {
                if since_kill {
                    out.push(l.to_owned());
                }
            } else {
                start = rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
            since_kill = false;
        } else if l.contains(needle) {
            out.push(format!("[start {start}] {l}"));
            since_kill = true;
        }
    }
    out
}

/// Notes `message` among the failures unless `ok`.
fn check(failures: &mut Vec<String>, ok: bool, message: String) {
    if !ok {
        failures.push(message);
    }
}

/// How many recipients `danemta queue list --json` lists for a message (the pending ones).
fn pending(m: &Value) -> usize {
    m["recipients"].as_array().map_or(0, Vec::len)
}
