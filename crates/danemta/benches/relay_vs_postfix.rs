//! Relay throughput: `danemta serve` against a Postfix 3.7 relay at
//! `smtp_tls_security_level = dane`, on the same machine, in the same run, with the same load.
//!
//! The DNSSEC lab serves a signed zone `bench.test` (`MX 10 mx`, `mx A`, `_25._tcp.mx TLSA 3 1 1`)
//! whose MX is a lab Postfix receiver storing every message as a Maildir file. The same small
//! async SMTP client (`SESSIONS` concurrent sessions, many transactions per session, no
//! pipelining) submits `RELAY_BENCH_MESSAGES` (default 2000) messages of 2 KiB each to one
//! relay, then to the other (never both at once). For each relay it prints accepted msgs/s
//! (first connection until the last `250` after DATA) and delivered msgs/s (first connection
//! until the receiver's Maildir holds all of them), the ratios danemta / Postfix, danemta's peak
//! RSS (VmHWM of the daemon), and one `Verified TLS connection established` line from each
//! relay's log as evidence that delivery really was DANE-authenticated.
//!
//! The Postfix relay is a private instance (its own config and queue directories) whose
//! `master` runs in the foreground in a private mount namespace where /etc/resolv.conf points
//! at the lab's validating Unbound with `options trust-ad` (Postfix resolves through libc).
//!
//! Exits non-zero when either relay fails to take or deliver every message within
//! `DELIVERY_TIMEOUT`, printing why (its log tail).

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, LabAddr, ZoneSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Messages per relay unless `RELAY_BENCH_MESSAGES` says otherwise.
const DEFAULT_MESSAGES: usize = 2000;
/// Concurrent SMTP sessions of the client.
const SESSIONS: usize = 8;
/// Size of each message body.
const BODY_BYTES: usize = 2048;
/// How long a relay may take to deliver everything.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the client waits for any one SMTP reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where both relays listen (each on an address of its own).
const RELAY_PORT: u16 = 2525;
/// The envelope sender: its domain does not exist, so no DSN can land in the receiver.
const SENDER: &str = "bench@sender.invalid";

const POSTFIX_DAEMON_DIR: &str = "/usr/lib/postfix/sbin";

// ---------------------------------------------------------------------------------------------
// Processes

/// Reads the `VmHWM` (peak resident set) of `pid`, in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends `signal` to `target` (a PID, or `-PGID` for a process group we created).
fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `timeout` for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first line of a file containing `needle`.
fn first_line_with(path: &Path, needle: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
}

/// Lines of a file containing `needle`.
fn count_lines_with(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// Waits until `addr` answers with a `220` greeting; false if `child` exits or time runs out.
fn wait_greeting(addr: SocketAddr, child: &mut Child, timeout: Duration) -> bool {
    use std::io::{BufRead, BufReader as StdBufReader, Write};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            if let Ok(clone) = stream.try_clone()
                && StdBufReader::new(clone).read_line(&mut line).is_ok()
                && line.starts_with("220")
            {
                let mut w = stream;
                let _ = w.write_all(b"QUIT\r\n");
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A directory of this bench under the lab root (mode 0755: Postfix's unprivileged processes
/// walk through it), removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> WorkDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = Path::new(danemta_lab::LAB_ROOT)
            .join(format!("relaybench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("bench directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var("RELAY_BENCH_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("relay bench: kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The danemta daemon, stopped (SIGTERM, then SIGKILL) when dropped.
struct Danemta {
    child: Option<Child>,
    listen: SocketAddr,
    log: PathBuf,
    _addr: LabAddr,
}

impl Danemta {
    fn start(lab: &Lab, dir: &Path, client: Ipv4Addr) -> Result<Danemta, String> {
        let addr = lab.claim_addr().map_err(|e| e.to_string())?;
        let listen = SocketAddr::new(IpAddr::V4(addr.ip()), RELAY_PORT);
        let home = dir.join("danemta");
        fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        let config = home.join("danemta.toml");
        let text = format!(
            r#"[server]
hostname = "relay-danemta.bench.test"
relay_networks = ["{client}/32"]
[[server.listen]]
address = "{listen}"
mode = "smtp"
[dns]
resolver = "trust-ad@{resolver}"
[queue]
dir = "{queue}"
[delivery]
policy = "dane"
port = 25
[metrics]
listen = "{metrics}"
"#,
            resolver = lab.validating_resolver(),
            queue = home.join("queue").display(),
            metrics = SocketAddr::new(listen.ip(), 9325),
        );
        fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = home.join("serve.log");
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("DANEMTA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning danemta serve: {e}"))?;
        let mut d = Danemta {
            child: Some(child),
            listen,
            log,
            _addr: addr,
        };
        let child = d.child.as_mut().expect("child");
        if !wait_greeting(listen, child, Duration::from_secs(30)) {
            return Err(format!(
                "danemta serve does not greet on {listen}:\n{}",
                tail(&d.log, 30)
            ));
        }
        Ok(d)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal("-TERM", &child.id().to_string());
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Danemta {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Postfix relay (`master -d` in a mount namespace of its own, in a process group of
/// its own), stopped when dropped.
struct PostfixRelay {
    master: Option<Child>,
    listen: SocketAddr,
    dir: PathBuf,
    _addr: LabAddr,
}

fn ids(file: &str, name: &str) -> Option<(u32, u32)> {
    fs::read_to_string(file).ok()?.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name)).then(|| {
            let a = f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
            let b = f.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
            (a, b)
        })
    })
}

impl PostfixRelay {
    fn start(lab: &Lab, dir: &Path, client: Ipv4Addr) -> Result<PostfixRelay, String> {
        let master = Path::new(POSTFIX_DAEMON_DIR).join("master");
        if !master.exists() {
            return Err(format!(
                "{} not found (install the Debian package postfix)",
                master.display()
            ));
        }
        let postfix = ids("/etc/passwd", "postfix").ok_or("no user postfix")?;
        let postdrop = ids("/etc/group", "postdrop").ok_or("no group postdrop")?.0;
        let addr = lab.claim_addr().map_err(|e| e.to_string())?;
        let listen = SocketAddr::new(IpAddr::V4(addr.ip()), RELAY_PORT);
        let home = dir.join("postfix");
        let conf = home.join("conf");
        let queue = home.join("queue");
        let mkdir = |path: &Path, mode: u32, owner: Option<(u32, u32)>| -> Result<(), String> {
            fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some((u, g)) = owner {
                std::os::unix::fs::chown(path, Some(u), Some(g))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        };
        mkdir(&home, 0o755, None)?;
        mkdir(&conf, 0o755, None)?;
        mkdir(&queue, 0o755, None)?;
        mkdir(&queue.join("pid"), 0o755, None)?;
        for sub in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace",
        ] {
            mkdir(&queue.join(sub), 0o700, Some(postfix))?;
        }
        mkdir(&queue.join("maildrop"), 0o730, Some((postfix.0, postdrop)))?;
        mkdir(&queue.join("public"), 0o710, Some((postfix.0, postdrop)))?;
        mkdir(&home.join("data"), 0o700, Some(postfix))?;
        let d = home.display();
        let main_cf = format!(
            "# relay_vs_postfix bench: a Postfix relay with DANE\n\
             compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = relay-postfix.bench.test\n\
             myorigin = $myhostname\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = {client}/32\n\
             smtpd_peername_lookup = no\n\
             mydestination =\n\
             relay_domains =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             notify_classes =\n\
             biff = no\n\
             append_dot_mydomain = no\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             smtpd_tls_security_level = none\n\
             smtp_dns_support_level = dnssec\n\
             smtp_tls_security_level = dane\n\
             smtp_tls_loglevel = 1\n\
             smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache\n"
        );
        let master_cf = format!(
            "# service type private unpriv chroot wakeup maxproc command\n\
             {listen} inet n - n - - smtpd\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             tlsmgr unix - - n 1000? 1 tlsmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        // Postfix reads a configuration file only once it is a second old: backdate ours.
        let past = SystemTime::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or(UNIX_EPOCH);
        for (name, text) in [("main.cf", main_cf), ("master.cf", master_cf)] {
            let path = conf.join(name);
            fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(past))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let resolv = home.join("resolv.conf");
        fs::write(
            &resolv,
            format!(
                "nameserver {}\noptions trust-ad\n",
                lab.validating_resolver().ip()
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::set_permissions(&resolv, fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        let out = File::create(home.join("master.out")).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec {} -d -c {}",
            resolv.display(),
            master.display(),
            conf.display()
        );
        // unshare execs sh, which execs master: the child's PID is master's, and the process
        // group (ours alone) holds master and every Postfix daemon it forks.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning Postfix master: {e}"))?;
        let mut relay = PostfixRelay {
            master: Some(child),
            listen,
            dir: home,
            _addr: addr,
        };
        let child = relay.master.as_mut().expect("child");
        if !wait_greeting(listen, child, Duration::from_secs(30)) {
            return Err(format!(
                "the Postfix relay does not greet on {listen}:\n{}\n{}",
                tail(&relay.dir.join("maillog"), 30),
                tail(&relay.dir.join("master.out"), 30)
            ));
        }
        Ok(relay)
    }

    fn maillog(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    fn stop(&mut self) {
        if let Some(mut master) = self.master.take() {
            let group = format!("-{}", master.id());
            signal("-TERM", &group);
            if !wait_exit(&mut master, Duration::from_secs(5)) {
                let _ = master.kill();
            }
            let _ = master.wait();
            // Whatever of the group is left (a daemon that ignored master's SIGTERM).
            std::thread::sleep(Duration::from_millis(200));
            signal("-KILL", &group);
        }
    }
}

impl Drop for PostfixRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The SMTP client

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
        let stream = socket
            .connect(relay)
            .await
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

/// The 2 KiB body: 32 lines of 62 letters and CRLF.
fn body() -> String {
    let line = format!(
        "{}\r\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    );
    line.repeat(BODY_BYTES / line.len())
}

fn message(tag: &str, i: usize, body: &str) -> String {
    format!(
        "From: <{SENDER}>\r\n\
         To: <rcpt{i}@bench.test>\r\n\
         Subject: relay bench {tag} {i}\r\n\
         Date: Wed, 02 Dec 2026 07:00:00 +0000\r\n\
         Message-ID: <{tag}.{i}.{pid}@client.bench.test>\r\n\
         \r\n\
         {body}.\r\n",
        pid = std::process::id()
    )
}

/// One session: takes message numbers from `next` until `n`, one transaction each.
async fn session(
    relay: SocketAddr,
    from: Ipv4Addr,
    tag: Arc<str>,
    next: Arc<AtomicUsize>,
    n: usize,
    body: Arc<str>,
) -> Result<usize, String> {
    let mut c = Conn::open(relay, from).await?;
    c.expect(220, "greeting").await?;
    c.command("EHLO client.bench.test", 250).await?;
    let mut sent = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        let step = async {
            c.command(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
            c.command(&format!("RCPT TO:<rcpt{i}@bench.test>"), 250)
                .await?;
            c.command("DATA", 354).await?;
            c.writer
                .write_all(message(&tag, i, &body).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            c.expect(250, "end of data").await
        };
        step.await.map_err(|e| format!("message {i}: {e}"))?;
        sent += 1;
    }
    let _ = c.command("QUIT", 221).await;
    Ok(sent)
}

// ---------------------------------------------------------------------------------------------
// A run

/// Files in the receiver's Maildir.
fn delivered(receiver: &Receiver) -> usize {
    let inbox = receiver.dir().join("mail/inbox");
    ["new", "cur"]
        .iter()
        .filter_map(|s| fs::read_dir(inbox.join(s)).ok())
        .map(|entries| entries.count())
        .sum()
}

struct Outcome {
    accepted: Duration,
    delivered: Duration,
}

/// Submits `n` messages to `relay` and waits until the receiver has them all.
fn run(
    rt: &tokio::runtime::Runtime,
    tag: &str,
    relay: SocketAddr,
    client: Ipv4Addr,
    receiver: &Receiver,
    n: usize,
) -> Result<Outcome, String> {
    let baseline = delivered(receiver);
    let tag: Arc<str> = Arc::from(tag);
    let body: Arc<str> = Arc::from(body());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..SESSIONS)
            .map(|_| {
                tokio::spawn(session(
                    relay,
                    client,
                    tag.clone(),
                    next.clone(),
                    n,
                    body.clone(),
                ))
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        results
    });
    let accepted = start.elapsed();
    let mut sent = 0;
    for (k, r) in results.into_iter().enumerate() {
        match r {
            Ok(s) => sent += s,
            Err(e) => return Err(format!("submission session {k} failed: {e}")),
        }
    }
    if sent != n {
        return Err(format!("only {sent} of {n} messages were accepted"));
    }
    let deadline = start + DELIVERY_TIMEOUT;
    let mut report = Instant::now() + Duration::from_secs(15);
    loop {
        let got = delivered(receiver) - baseline;
        if got >= n {
            return Ok(Outcome {
                accepted,
                delivered: start.elapsed(),
            });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the receiver has {got} of {n} messages after {DELIVERY_TIMEOUT:?}"
            ));
        }
        if Instant::now() > report {
            eprintln!(
                "  {tag}: {got} of {n} delivered after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            report = Instant::now() + Duration::from_secs(15);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Row {
    name: &'static str,
    outcome: Result<Outcome, String>,
    evidence: Option<String>,
    /// `Verified TLS connection established` and `status=sent` lines in the relay's log.
    connections: usize,
    sent: usize,
}

impl Row {
    fn failed(name: &'static str, why: String) -> Row {
        Row {
            name,
            outcome: Err(why),
            evidence: None,
            connections: 0,
            sent: 0,
        }
    }

    fn from_log(name: &'static str, outcome: Result<Outcome, String>, log: &Path) -> Row {
        const VERIFIED: &str = "Verified TLS connection established";
        Row {
            name,
            outcome,
            evidence: first_line_with(log, VERIFIED),
            connections: count_lines_with(log, VERIFIED),
            sent: count_lines_with(log, "status=sent"),
        }
    }
}

fn main() {
    let n: usize = match std::env::var("RELAY_BENCH_MESSAGES") {
        Ok(v) => match v.trim().parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("RELAY_BENCH_MESSAGES={v:?}: want a positive number");
                std::process::exit(64);
            }
        },
        Err(_) => DEFAULT_MESSAGES,
    };
    let code = bench(n);
    std::process::exit(code);
}

/// Everything, with every process owned by a guard dropped before `main` exits.
fn bench(n: usize) -> i32 {
    let cert = TestCert::self_signed(&["mx.bench.test"]).expect("certificate");
    let receiver =
        Receiver::start(ReceiverSpec::new("mx.bench.test", &["bench.test"]).with_tls(&cert))
            .expect("Postfix receiver");
    let records = format!(
        "@ MX 10 mx\nmx A {}\n_25._tcp.mx TLSA {}\n",
        receiver.addr().ip(),
        tlsa_3_1_1(&cert)
    );
    let lab = Lab::builder()
        .zone(ZoneSpec::secure("bench.test", records))
        .start()
        .expect("lab");
    let work = WorkDir::new();
    let client_addr = lab.claim_addr().expect("client address");
    let client = client_addr.ip();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "{n} messages of {BODY_BYTES} B body, {SESSIONS} client sessions, one DANE-EE (3 1 1) \
         Postfix receiver {} via the lab's validating Unbound {}",
        receiver.addr(),
        lab.validating_resolver()
    );
    let mut rows = Vec::new();
    let mut peak = None;

    // danemta
    let ours = match Danemta::start(&lab, &work.0, client) {
        Ok(mut d) => {
            eprintln!("danemta serve on {} (pid {:?})", d.listen, d.pid());
            let outcome = run(&rt, "danemta", d.listen, client, &receiver, n);
            peak = d.pid().and_then(vm_hwm);
            let outcome = outcome.map_err(|e| {
                format!(
                    "{e}\n`status=sent` lines: {}, `status=deferred` lines: {}\n--- danemta log tail ---\n{}",
                    count_lines_with(&d.log, "status=sent"),
                    count_lines_with(&d.log, "status=deferred"),
                    tail(&d.log, 40)
                )
            });
            d.stop();
            Row::from_log("danemta serve", outcome, &d.log)
        }
        Err(e) => Row::failed("danemta serve", e),
    };
    rows.push(ours);

    // Postfix
    let theirs = match PostfixRelay::start(&lab, &work.0, client) {
        Ok(mut p) => {
            eprintln!("Postfix relay on {}", p.listen);
            let outcome = run(&rt, "postfix", p.listen, client, &receiver, n);
            // The log is written by postlogd; give it a moment to catch up.
            std::thread::sleep(Duration::from_millis(300));
            let log = p.maillog();
            let outcome = outcome.map_err(|e| {
                format!(
                    "{e}\n`status=sent` lines: {}, `status=deferred` lines: {}\n--- Postfix log tail ---\n{}",
                    count_lines_with(&log, "status=sent"),
                    count_lines_with(&log, "status=deferred"),
                    tail(&log, 40)
                )
            });
            p.stop();
            Row::from_log("Postfix 3.7 (dane)", outcome, &log)
        }
        Err(e) => Row::failed("Postfix 3.7 (dane)", e),
    };
    rows.push(theirs);
    drop(rt);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>12}",
        "relay", "accept s", "accepted/s", "deliver s", "delivered/s"
    );
    let mut failed = false;
    for row in &rows {
        match &row.outcome {
            Ok(o) => println!(
                "{:<20} {:>12.2} {:>12.1} {:>12.2} {:>12.1}",
                row.name,
                o.accepted.as_secs_f64(),
                rate(o.accepted),
                o.delivered.as_secs_f64(),
                rate(o.delivered)
            ),
            Err(_) => {
                failed = true;
                println!("{:<20} FAILED (see below)", row.name);
            }
        }
    }
    if let (Ok(a), Ok(b)) = (&rows[0].outcome, &rows[1].outcome) {
        println!(
            "ratio danemta / Postfix: accepted {:.2}x, delivered {:.2}x",
            rate(a.accepted) / rate(b.accepted),
            rate(a.delivered) / rate(b.delivered)
        );
    }
    match peak {
        Some(kib) => println!(
            "danemta peak RSS (VmHWM): {kib} KiB ({:.1} MiB)",
            kib as f64 / 1024.0
        ),
        None => println!("danemta peak RSS: unknown"),
    }
    for row in &rows {
        println!(
            "{}: {} DANE-verified connections, {} `status=sent` log lines",
            row.name, row.connections, row.sent
        );
    }
    for row in &rows {
        match &row.evidence {
            Some(line) => println!("{} says: {}", row.name, line.trim()),
            None => println!(
                "{}: no `Verified TLS connection established` line in its log",
                row.name
            ),
        }
    }
    for row in &rows {
        if let Err(e) = &row.outcome {
            println!("\n{} failed: {e}", row.name);
        }
    }
    let unverified = rows
        .iter()
        .any(|r| r.outcome.is_ok() && r.evidence.is_none());
    if unverified {
        println!("\na relay delivered without logging a DANE-verified connection");
    }
    drop(client_addr);
    drop(work);
    drop(lab);
    drop(receiver);
    if failed || unverified { 1 } else { 0 }
}
