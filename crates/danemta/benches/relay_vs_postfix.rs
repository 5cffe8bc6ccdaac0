//! Relay performance (issue 11): `danemta serve` against Postfix 3.7 relays at
//! `smtp_tls_security_level = dane`, on the same machine, in the same run, with the same load
//! and the same receiver.
//!
//! Systems, one after the other (never two at once), each freshly started for each case:
//! * `danemta serve` (its defaults, `policy = "dane"`);
//! * Postfix with its defaults (`smtp_connection_cache_on_demand = yes` is a default, but
//!   without `smtp_tls_connection_reuse` a TLS connection is never reused, and there is no TLS
//!   session cache);
//! * Postfix tuned, its fastest honest configuration: `smtp_connection_cache_on_demand = yes`,
//!   `smtp_tls_connection_reuse = yes` (with the `tlsproxy` service in master.cf) and the TLS
//!   session cache `smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache`
//!   (with `tlsmgr`, in both Postfix configurations' master.cf).
//!
//! Cases: every message size of `RELAY_BENCH_SIZES` (default `2k,100k`) times every number of
//! destinations of `RELAY_BENCH_DESTINATIONS` (default `20,1`). Messages per case:
//! `RELAY_BENCH_MESSAGES` (default 2000) for sizes up to 16 KiB, a quarter of it for larger
//! sizes (so that the default matrix stays under ~10 minutes; the output says so).
//!
//! The DNSSEC lab serves a signed zone `bench.test` with 20 destination domains
//! `d0.bench.test` … `d19.bench.test`, each with an MX host of its own (`d7 MX 10 mx.d7`,
//! `mx.d7 A …`, `_25._tcp.mx.d7 TLSA 3 1 1 …`); every MX host is the same lab Postfix receiver
//! with the discard transport and its queue on a tmpfs (`Receiver::start_discarding`, so
//! that the receiver, which shares the machine's cores with the relay under test, costs
//! little; `RELAY_BENCH_RECEIVER=maildir` makes it store every message in a Maildir instead). With D destinations, message i goes to `rcpt<i>@d<i mod D>.bench.test`.
//!
//! The load: one small async SMTP client, `RELAY_BENCH_SESSIONS` (default 32) concurrent
//! sessions, as a busy relay sees from its clients, one transaction after
//! another per session (no pipelining), one recipient per message.
//!
//! Each system runs three phases per case, started with deliveries paused (danemta:
//! `[delivery] paused = true`; Postfix: `smtpd_data_restrictions = check_client_access
//! static:HOLD`, so that cleanup puts each message straight on hold and nothing else touches
//! it):
//! 1. accept: N messages submitted; accepted msgs/s = N / (first connection … the last `250`
//!    after DATA), every one durable in the relay's queue;
//! 2. deliver from the full queue: deliveries resumed (danemta: `paused = false` and SIGHUP;
//!    Postfix: the hold rule removed, `postfix reload`, `postsuper -H ALL`, `postqueue -f`);
//!    delivered msgs/s = N / (resumption … the receiver's receipt of the last message);
//! 3. live: N/2 more messages with deliveries running; live msgs/s = N/2 / (first connection
//!    … last receipt), and the latency p50 / p99 from the `250` after DATA (the client notes
//!    the wall-clock time of each, per Message-ID) to the receipt of that message by the
//!    receiver: when the bench first reads the receiver's cleanup line `<queue id>:
//!    message-id=<…>` (logged while the receiver takes the message in) in its log, which a
//!    thread polls every 2 ms (Postfix 3.7 stamps its log lines to the second only).
//!
//! A message counts as delivered once the receiver also logs `status=sent` for that queue id
//! (its discard, or Maildir, delivery). Also printed:
//! * peak RSS: danemta, the daemon's `VmHWM`; Postfix, the largest sum over the instance's live
//!   processes of their `VmHWM`, sampled every 100 ms (shared pages, e.g. libraries, count once
//!   per process, so this overstates Postfix's real footprint); and peak PSS, the largest
//!   sampled sum of `Pss` (/proc/PID/smaps_rollup: each shared page divided among the
//!   processes mapping it), the fairer footprint of a multi-process system (a sample, so it
//!   may miss a short peak);
//! * CPU seconds per 1,000 messages (the three phases, N + N/2 messages): the difference,
//!   between the start of phase 1 and the end of phase 3, of utime + stime (/proc/PID/stat)
//!   of danemta's daemon; for Postfix, of the sum over every live process of the instance's process group plus `master`'s cutime +
//!   cstime (Postfix daemons that exited meanwhile: master reaps them all);
//! * `Verified TLS connection established` lines in the relay's log (danemta logs one per
//!   delivery, Postfix one per TLS handshake: fewer than N when it reuses connections);
//! * then the ratios danemta / Postfix(best), the best Postfix per column (the higher rate, the
//!   lower latency, memory and CPU), and one `Verified TLS connection established` line of each
//!   system's log as evidence.
//!
//! The Postfix relays are private instances (their own config and queue directories) whose
//! `master` runs in the foreground in a private mount namespace where /etc/resolv.conf points
//! at the lab's validating Unbound with `options trust-ad` (Postfix resolves through libc).
//!
//! Exits non-zero when a relay fails to take or deliver every message within
//! `DELIVERY_TIMEOUT`, printing why (its log tail), or delivers without a DANE-verified
//! connection in its log.

#[path = "relay_vs_postfix/measure.rs"]
mod measure;

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, LabAddr, ZoneSpec};
use measure::{MemSampler, ReceiverLog, ReceiverLogWatch, Watched};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Messages per case unless `RELAY_BENCH_MESSAGES` says otherwise.
const DEFAULT_MESSAGES: usize = 2000;
/// Message sizes per case unless `RELAY_BENCH_SIZES` says otherwise.
const DEFAULT_SIZES: &str = "2k,100k";
/// Destination counts per case unless `RELAY_BENCH_DESTINATIONS` says otherwise.
const DEFAULT_DESTINATIONS: &str = "20,1";
/// Most destinations the lab zone has.
const MAX_DESTINATIONS: usize = 20;
/// Messages larger than this are sent `LARGE_DIVISOR` times fewer.
const LARGE_BYTES: usize = 16 * 1024;
const LARGE_DIVISOR: usize = 4;
/// Concurrent SMTP sessions of the client unless `RELAY_BENCH_SESSIONS` says otherwise.
const DEFAULT_SESSIONS: usize = 32;
/// How long a relay may take to deliver everything.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the client waits for any one SMTP reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the relays listen (each on an address of its own).
const RELAY_PORT: u16 = 2525;
/// The envelope sender: its domain does not exist, so no DSN can land in the receiver.
const SENDER: &str = "bench@sender.invalid";

const POSTFIX_DAEMON_DIR: &str = "/usr/lib/postfix/sbin";

/// What the tuned Postfix adds to its main.cf.
const TUNED_MAIN_CF: &str = "smtp_connection_cache_on_demand = yes\n\
                             smtp_tls_connection_reuse = yes\n\
                             smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache\n";

const VERIFIED: &str = "Verified TLS connection established";

// ---------------------------------------------------------------------------------------------
// Processes

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
    metrics: SocketAddr,
    log: PathBuf,
    config: PathBuf,
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
paused = true
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
            metrics: SocketAddr::new(listen.ip(), 9325),
            log,
            config,
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

    /// Resumes deliveries: `paused = false`, then SIGHUP.
    fn resume(&self) -> Result<(), String> {
        let text = fs::read_to_string(&self.config).map_err(|e| e.to_string())?;
        fs::write(
            &self.config,
            text.replace("paused = true", "paused = false"),
        )
        .map_err(|e| e.to_string())?;
        let pid = self.pid().ok_or("danemta serve is not running")?;
        signal("-HUP", &pid.to_string());
        Ok(())
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

/// What a Postfix relay's main.cf adds while deliveries are paused: every message goes
/// straight to the hold queue (cleanup writes it there; qmgr never sees it), the cheapest
/// way for Postfix to take mail without delivering it.
const POSTFIX_HOLD: &str = "smtpd_data_restrictions = check_client_access static:HOLD\n";

/// Writes a Postfix configuration file, backdated: Postfix reads a file only once it is a
/// second old.
fn write_postfix_file(path: &Path, text: &str) -> Result<(), String> {
    let past = SystemTime::now()
        .checked_sub(Duration::from_secs(60))
        .unwrap_or(UNIX_EPOCH);
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(past))
        .map_err(|e| format!("{}: {e}", path.display()))
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
    /// `tuned`: Postfix's fastest honest configuration (TLS connection reuse through
    /// `tlsproxy`, TLS session cache); otherwise its defaults.
    fn start(lab: &Lab, dir: &Path, client: Ipv4Addr, tuned: bool) -> Result<PostfixRelay, String> {
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
        let home = dir.join(if tuned { "postfix-tuned" } else { "postfix" });
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
             {tuning}{POSTFIX_HOLD}",
            tuning = if tuned { TUNED_MAIN_CF } else { "" },
        );
        let master_cf = format!(
            "# service type private unpriv chroot wakeup maxproc command\n\
             {listen} inet n - n - - smtpd\n\
             pickup fifo n - n 60 1 pickup\n\
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
             postlog unix-dgram n - n - 1 postlogd\n\
             {tlsproxy}",
            tlsproxy = if tuned {
                "tlsproxy unix - - n - 0 tlsproxy\n"
            } else {
                ""
            },
        );
        for (name, text) in [("main.cf", main_cf), ("master.cf", master_cf)] {
            write_postfix_file(&conf.join(name), &text)?;
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

    fn pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// Resumes deliveries: main.cf without the hold rule, `postfix reload` (SIGHUP to
    /// master), then the held mail released (`postsuper -H ALL`) and the deferred queue
    /// flushed (`postqueue -f`).
    fn resume(&self) -> Result<(), String> {
        let conf = self.dir.join("conf");
        let main_cf = conf.join("main.cf");
        let text = fs::read_to_string(&main_cf).map_err(|e| e.to_string())?;
        write_postfix_file(&main_cf, &text.replace(POSTFIX_HOLD, ""))?;
        let pid = self.pid().ok_or("Postfix master is not running")?;
        signal("-HUP", &pid.to_string());
        for (program, arg) in [("postsuper", "-H"), ("postqueue", "-f")] {
            let mut command = Command::new(program);
            command.arg("-c").arg(&conf).arg(arg);
            if program == "postsuper" {
                command.arg("ALL");
            }
            let out = command.output().map_err(|e| format!("{program}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{program} {arg}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
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

/// A body of about `bytes` bytes: lines of 62 letters and CRLF.
fn body(bytes: usize) -> String {
    let line = format!(
        "{}\r\n",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    );
    line.repeat((bytes / line.len()).max(1))
}

/// The Message-ID (without brackets) of message `i` of a run.
fn message_id(tag: &str, i: usize) -> String {
    format!("{tag}.{i}@client.bench.test")
}

fn recipient(i: usize, destinations: usize) -> String {
    format!("rcpt{i}@d{}.bench.test", i % destinations)
}

fn message(tag: &str, i: usize, destinations: usize, body: &str) -> String {
    format!(
        "From: <{SENDER}>\r\n\
         To: <{rcpt}>\r\n\
         Subject: relay bench {tag} {i}\r\n\
         Date: Wed, 02 Dec 2026 07:00:00 +0000\r\n\
         Message-ID: <{id}>\r\n\
         \r\n\
         {body}.\r\n",
        rcpt = recipient(i, destinations),
        id = message_id(tag, i),
    )
}

/// What the sessions of one run share.
struct Load {
    relay: SocketAddr,
    from: Ipv4Addr,
    tag: String,
    n: usize,
    destinations: usize,
    body: String,
    next: AtomicUsize,
    /// When the `250` after DATA came, per message (epoch seconds; 0 = not yet).
    accepted_at: Mutex<Vec<f64>>,
}

/// One session: takes message numbers until `n`, one transaction each.
async fn session(load: Arc<Load>) -> Result<usize, String> {
    let mut c = Conn::open(load.relay, load.from).await?;
    c.expect(220, "greeting").await?;
    c.command("EHLO client.bench.test", 250).await?;
    let mut sent = 0;
    loop {
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        if i >= load.n {
            break;
        }
        let step = async {
            c.command(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
            c.command(
                &format!("RCPT TO:<{}>", recipient(i, load.destinations)),
                250,
            )
            .await?;
            c.command("DATA", 354).await?;
            c.writer
                .write_all(message(&load.tag, i, load.destinations, &load.body).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            c.expect(250, "end of data").await
        };
        step.await.map_err(|e| format!("message {i}: {e}"))?;
        if let Ok(mut at) = load.accepted_at.lock() {
            at[i] = measure::now();
        }
        sent += 1;
    }
    let _ = c.command("QUIT", 221).await;
    Ok(sent)
}

// ---------------------------------------------------------------------------------------------
// A run

/// One case: N messages of a size to some destinations.
#[derive(Clone, Copy, Debug)]
struct Case {
    size: usize,
    destinations: usize,
    n: usize,
    sessions: usize,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} KiB x {} destination{}",
            self.size / 1024,
            self.destinations,
            if self.destinations == 1 { "" } else { "s" }
        )
    }

    fn slug(&self) -> String {
        format!("{}k-{}d", self.size / 1024, self.destinations)
    }
}

struct Outcome {
    /// Phase 1, deliveries paused: from the first connection to the last `250` after DATA.
    accepted: Duration,
    /// Phase 2, from the resumption to the receiver's receipt of the last queued message.
    delivered: Duration,
    /// Phase 3 (`live` messages, deliveries running): first connection to last receipt.
    live: Duration,
    live_n: usize,
    /// Phase 3: seconds from each message's `250` to its receipt, sorted.
    latencies: Vec<f64>,
    /// All phases.
    cpu_seconds: f64,
    /// Largest sampled sum of `VmHWM` over the relay's processes, KiB.
    peak_kib: u64,
    /// Largest sampled sum of `Pss` over the relay's processes, KiB.
    peak_pss_kib: u64,
}

/// Submits messages `0..n` tagged `tag` to `relay` over `sessions`; how long it took
/// and when each `250` after DATA came (epoch seconds).
fn submit(
    rt: &tokio::runtime::Runtime,
    relay: SocketAddr,
    client: Ipv4Addr,
    tag: &str,
    case: Case,
    n: usize,
) -> Result<(Duration, Vec<f64>), String> {
    let load = Arc::new(Load {
        relay,
        from: client,
        tag: tag.to_owned(),
        n,
        destinations: case.destinations,
        body: body(case.size),
        next: AtomicUsize::new(0),
        accepted_at: Mutex::new(vec![0.0; n]),
    });
    let start = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..case.sessions)
            .map(|_| tokio::spawn(session(load.clone())))
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        results
    });
    let took = start.elapsed();
    let mut sent = 0;
    for (k, r) in results.into_iter().enumerate() {
        sent += r.map_err(|e| format!("{tag}: submission session {k} failed: {e}"))?;
    }
    if sent != n {
        return Err(format!("{tag}: only {sent} of {n} messages were accepted"));
    }
    let at = load
        .accepted_at
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    Ok((took, at))
}

/// Waits until the receiver has confirmed `n` messages of `log`; returns the receipts
/// (Message-ID → epoch seconds).
fn delivered(log: ReceiverLogWatch, n: usize, tag: &str) -> Result<HashMap<String, f64>, String> {
    let start = Instant::now();
    let mut report = start + Duration::from_secs(15);
    loop {
        let got = log.sent();
        if got >= n {
            return Ok(log.stop());
        }
        if start.elapsed() > DELIVERY_TIMEOUT {
            return Err(format!(
                "{tag}: the receiver confirms {got} of {n} messages after {DELIVERY_TIMEOUT:?}"
            ));
        }
        if Instant::now() > report {
            eprintln!(
                "  {tag}: {got} of {n} delivered after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            report = Instant::now() + Duration::from_secs(15);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The latest receipt of messages `0..n` of `tag`, and each one's latency from its `250`.
fn receipts(
    received: &HashMap<String, f64>,
    tag: &str,
    accepted_at: &[f64],
) -> Result<(f64, Vec<f64>), String> {
    let mut last = 0.0f64;
    let mut latencies = Vec::with_capacity(accepted_at.len());
    for (i, at) in accepted_at.iter().enumerate() {
        let id = message_id(tag, i);
        let Some(&r) = received.get(&id) else {
            return Err(format!("no receipt of <{id}> in the receiver's log"));
        };
        last = last.max(r);
        latencies.push(r - at);
    }
    latencies.sort_by(f64::total_cmp);
    Ok((last, latencies))
}

/// Runs the three phases against `relay` (whose processes are `watched`), started with
/// deliveries paused: (1) submit the case's N messages and time the `250`s; (2) `resume` and
/// time the delivery of the full queue; (3) submit N/2 more with deliveries running and
/// measure each one's latency from `250` to receipt.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Ctx<'_>,
    tag: &str,
    relay: SocketAddr,
    watched: Watched,
    case: Case,
    resume: &dyn Fn() -> Result<(), String>,
) -> Result<Outcome, String> {
    let tag = format!("{tag}-{}-{}", case.slug(), std::process::id());
    let live_tag = format!("{tag}-live");
    let watch = |tag: &str| {
        ReceiverLogWatch::start(ReceiverLog::new(
            ctx.receiver.dir().join("maillog"),
            &format!("{tag}."),
        ))
    };
    let mem = MemSampler::start(watched);
    let cpu0 = watched.cpu_ticks();
    let phases = || -> Result<_, String> {
        let log = watch(&tag);
        let (accepted, _) = submit(ctx.rt, relay, ctx.client, &tag, case, case.n)?;
        let resumed = measure::now();
        resume()?;
        let received = delivered(log, case.n, &tag)?;
        let (last, _) = receipts(&received, &tag, &vec![resumed; case.n])?;
        let live_n = (case.n / 2).max(1);
        let log = watch(&live_tag);
        let live_start = measure::now();
        let (_, at) = submit(ctx.rt, relay, ctx.client, &live_tag, case, live_n)?;
        let received = delivered(log, live_n, &live_tag)?;
        let (live_last, latencies) = receipts(&received, &live_tag, &at)?;
        Ok((
            accepted,
            last - resumed,
            live_n,
            live_last - live_start,
            latencies,
        ))
    };
    let result = phases();
    let cpu1 = watched.cpu_ticks();
    let (peak_kib, peak_pss_kib) = mem.stop();
    let (accepted, delivered, live_n, live, latencies) = result?;
    Ok(Outcome {
        accepted,
        delivered: Duration::from_secs_f64(delivered.max(1e-6)),
        live: Duration::from_secs_f64(live.max(1e-6)),
        live_n,
        latencies,
        cpu_seconds: cpu1.saturating_sub(cpu0) as f64 / ctx.ticks,
        peak_kib,
        peak_pss_kib,
    })
}

struct Row {
    name: &'static str,
    outcome: Result<Outcome, String>,
    evidence: Option<String>,
    /// `Verified TLS connection established` lines in the relay's log.
    connections: usize,
    /// danemta's TLS handshakes (full, resumed), from its metrics.
    handshakes: Option<(u64, u64)>,
}

impl Row {
    fn failed(name: &'static str, why: String) -> Row {
        Row {
            name,
            outcome: Err(why),
            evidence: None,
            connections: 0,
            handshakes: None,
        }
    }

    fn from_log(name: &'static str, outcome: Result<Outcome, String>, log: &Path) -> Row {
        Row {
            name,
            outcome,
            evidence: first_line_with(log, VERIFIED),
            connections: count_lines_with(log, VERIFIED),
            handshakes: None,
        }
    }
}

/// danemta's outgoing TLS handshakes so far, (full, resumed), read from its Prometheus
/// endpoint (`danemta_tls_handshakes_total{resumed="…"}`).
fn handshakes(metrics: SocketAddr) -> Option<(u64, u64)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let count = |resumed: &str| {
        let key = format!("danemta_tls_handshakes_total{{resumed=\"{resumed}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((count("false")?, count("true")?))
}

const DANEMTA: &str = "danemta serve";
const POSTFIX_DEFAULT: &str = "Postfix defaults";
const POSTFIX_TUNED: &str = "Postfix tuned";

/// Parses a positive number from the environment.
fn env_number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={v:?}: want a positive number")),
        },
        Err(_) => Ok(default),
    }
}

/// Parses a comma-separated list from the environment, each item by `parse`.
fn env_list(
    name: &str,
    default: &str,
    parse: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<usize>, String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| format!("{name}: cannot use {s:?}")))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err(format!("{name} is empty"))
            } else {
                Ok(v)
            }
        })
}

/// `2k`, `100k`, `1m` or plain bytes.
fn parse_size(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 1024),
        b'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    let n: usize = digits.parse().ok()?;
    (n > 0).then_some(n * unit)
}

fn cases() -> Result<Vec<Case>, String> {
    let n = env_number("RELAY_BENCH_MESSAGES", DEFAULT_MESSAGES)?;
    let sessions = env_number("RELAY_BENCH_SESSIONS", DEFAULT_SESSIONS)?;
    let sizes = env_list("RELAY_BENCH_SIZES", DEFAULT_SIZES, parse_size)?;
    let destinations = env_list("RELAY_BENCH_DESTINATIONS", DEFAULT_DESTINATIONS, |s| {
        s.parse()
            .ok()
            .filter(|d| (1..=MAX_DESTINATIONS).contains(d))
    })?;
    let mut cases = Vec::new();
    for &size in &sizes {
        for &d in &destinations {
            let n = if size > LARGE_BYTES {
                (n / LARGE_DIVISOR).max(1)
            } else {
                n
            };
            cases.push(Case {
                size,
                destinations: d,
                n,
                sessions,
            });
        }
    }
    Ok(cases)
}

fn main() {
    let cases = match cases() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let code = bench(&cases);
    std::process::exit(code);
}

/// Runs one system on one case: start it, load it, stop it.
fn run_system(name: &'static str, ctx: &Ctx, case: Case, dir: &Path) -> Row {
    let tag = match name {
        DANEMTA => "danemta",
        POSTFIX_DEFAULT => "postfix",
        _ => "postfix-tuned",
    };
    if name == DANEMTA {
        match Danemta::start(ctx.lab, dir, ctx.client) {
            Ok(mut d) => {
                eprintln!(
                    "{}: danemta serve on {} (pid {:?})",
                    case.label(),
                    d.listen,
                    d.pid()
                );
                let Some(pid) = d.pid() else {
                    return Row::failed(name, "danemta serve has no pid".into());
                };
                let outcome = run(ctx, tag, d.listen, Watched::Process(pid), case, &|| {
                    d.resume()
                });
                let outcome = outcome.map_err(|e| {
                    format!(
                        "{e}\n`status=sent` lines: {}, `status=deferred` lines: {}\n--- danemta log tail ---\n{}",
                        count_lines_with(&d.log, "status=sent"),
                        count_lines_with(&d.log, "status=deferred"),
                        tail(&d.log, 40)
                    )
                });
                let handshakes = handshakes(d.metrics);
                d.stop();
                Row {
                    handshakes,
                    ..Row::from_log(name, outcome, &d.log)
                }
            }
            Err(e) => Row::failed(name, e),
        }
    } else {
        match PostfixRelay::start(ctx.lab, dir, ctx.client, name == POSTFIX_TUNED) {
            Ok(mut p) => {
                eprintln!("{}: {name} on {}", case.label(), p.listen);
                let Some(pid) = p.pid() else {
                    return Row::failed(name, "Postfix master has no pid".into());
                };
                let outcome = run(ctx, tag, p.listen, Watched::Group(pid), case, &|| {
                    p.resume()
                });
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
                Row::from_log(name, outcome, &log)
            }
            Err(e) => Row::failed(name, e),
        }
    }
}

/// What every run shares.
struct Ctx<'a> {
    lab: &'a Lab,
    receiver: &'a Receiver,
    rt: &'a tokio::runtime::Runtime,
    client: Ipv4Addr,
    ticks: f64,
}

fn ms(seconds: f64) -> String {
    format!("{:.1}", seconds * 1000.0)
}

/// Prints one case's table; whether every system succeeded with DANE evidence.
fn print_case(case: Case, rows: &[Row]) -> bool {
    println!();
    println!("== {} (N = {}) ==", case.label(), case.n);
    println!(
        "{:<17} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "system",
        "accepted/s",
        "delivered/s",
        "live/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "PSS MiB",
        "CPU s/1k",
        "verified"
    );
    let rate = |d: Duration| case.n as f64 / d.as_secs_f64();
    let live_rate = |o: &Outcome| o.live_n as f64 / o.live.as_secs_f64();
    let cpu_per_1k = |o: &Outcome| o.cpu_seconds * 1000.0 / (case.n + o.live_n) as f64;
    let mut ok = true;
    for row in rows {
        match &row.outcome {
            Ok(o) => {
                let q = |p| measure::quantile(&o.latencies, p).map_or("-".into(), ms);
                println!(
                    "{:<17} {:>11.1} {:>11.1} {:>9.1} {:>9} {:>9} {:>9.1} {:>9.1} {:>10.2} {:>9}",
                    row.name,
                    rate(o.accepted),
                    rate(o.delivered),
                    live_rate(o),
                    q(0.5),
                    q(0.99),
                    o.peak_kib as f64 / 1024.0,
                    o.peak_pss_kib as f64 / 1024.0,
                    cpu_per_1k(o),
                    row.connections
                );
                if row.evidence.is_none() {
                    ok = false;
                }
            }
            Err(_) => {
                ok = false;
                println!("{:<17} FAILED (see below)", row.name);
            }
        }
    }
    let ours = rows
        .iter()
        .find(|r| r.name == DANEMTA)
        .and_then(|r| r.outcome.as_ref().ok());
    let theirs: Vec<&Outcome> = rows
        .iter()
        .filter(|r| r.name != DANEMTA)
        .filter_map(|r| r.outcome.as_ref().ok())
        .collect();
    if let Some(a) = ours
        && !theirs.is_empty()
    {
        let best = |f: &dyn Fn(&Outcome) -> f64, higher: bool| {
            theirs
                .iter()
                .map(|o| f(o))
                .fold(if higher { f64::MIN } else { f64::MAX }, |x, y| {
                    if higher { x.max(y) } else { x.min(y) }
                })
        };
        let acc = |o: &Outcome| rate(o.accepted);
        let del = |o: &Outcome| rate(o.delivered);
        let p50 = |o: &Outcome| measure::quantile(&o.latencies, 0.5).unwrap_or(0.0);
        let p99 = |o: &Outcome| measure::quantile(&o.latencies, 0.99).unwrap_or(0.0);
        let rss = |o: &Outcome| o.peak_kib as f64;
        let pss = |o: &Outcome| o.peak_pss_kib as f64;
        let live = |o: &Outcome| live_rate(o);
        let cpu = |o: &Outcome| cpu_per_1k(o);
        let ratio = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.2}x", x / y)
            } else {
                "-".into()
            }
        };
        println!(
            "danemta / Postfix(best): accepted {}, delivered {}, live {}, p50 {}, p99 {}, RSS {}, \
             PSS {}, CPU {}",
            ratio(acc(a), best(&acc, true)),
            ratio(del(a), best(&del, true)),
            ratio(live(a), best(&live, true)),
            ratio(p50(a), best(&p50, false)),
            ratio(p99(a), best(&p99, false)),
            ratio(rss(a), best(&rss, false)),
            ratio(pss(a), best(&pss, false)),
            ratio(cpu(a), best(&cpu, false)),
        );
    }
    if let Some(((full, resumed), o)) = rows
        .iter()
        .find(|r| r.name == DANEMTA)
        .and_then(|r| Some((r.handshakes?, r.outcome.as_ref().ok()?)))
    {
        let all = full + resumed;
        println!(
            "danemta TLS handshakes: {all} for {} messages ({full} full, {resumed} resumed: {:.0} % resumed)",
            case.n + o.live_n,
            if all > 0 {
                resumed as f64 * 100.0 / all as f64
            } else {
                0.0
            }
        );
    }
    ok
}

/// Everything, with every process owned by a guard dropped before `main` exits.
fn bench(cases: &[Case]) -> i32 {
    let cert = TestCert::self_signed(&["mx.bench.test"]).expect("certificate");
    let mut domains = vec!["bench.test".to_owned()];
    domains.extend((0..MAX_DESTINATIONS).map(|k| format!("d{k}.bench.test")));
    let domain_refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let spec = ReceiverSpec::new("mx.bench.test", &domain_refs).with_tls(&cert);
    let maildir = std::env::var("RELAY_BENCH_RECEIVER").is_ok_and(|v| v == "maildir");
    let receiver = if maildir {
        Receiver::start(spec)
    } else {
        Receiver::start_discarding(spec)
    }
    .expect("Postfix receiver");
    let tlsa = tlsa_3_1_1(&cert);
    let ip = receiver.addr().ip();
    let mut records = format!("@ MX 10 mx\nmx A {ip}\n_25._tcp.mx TLSA {tlsa}\n");
    for k in 0..MAX_DESTINATIONS {
        records.push_str(&format!(
            "d{k} MX 10 mx.d{k}\nmx.d{k} A {ip}\n_25._tcp.mx.d{k} TLSA {tlsa}\n"
        ));
    }
    let lab = Lab::builder()
        .zone(ZoneSpec::secure("bench.test", records))
        .start()
        .expect("lab");
    let work = WorkDir::new();
    let client_addr = lab.claim_addr().expect("client address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ctx = Ctx {
        lab: &lab,
        receiver: &receiver,
        rt: &rt,
        client: client_addr.ip(),
        ticks: measure::clock_ticks(),
    };

    println!(
        "{} client sessions; destinations d<k>.bench.test, each with its own MX host and \
         DANE-EE (3 1 1) TLSA, all served by one Postfix receiver {} ({}) via the lab's \
         validating Unbound {}",
        cases.first().map_or(DEFAULT_SESSIONS, |c| c.sessions),
        receiver.addr(),
        if maildir {
            "Maildir"
        } else {
            "discard transport, queue on tmpfs"
        },
        lab.validating_resolver()
    );
    if cases.iter().any(|c| c.size > LARGE_BYTES) {
        println!(
            "messages over {} KiB: N is RELAY_BENCH_MESSAGES / {LARGE_DIVISOR}, to keep the run short",
            LARGE_BYTES / 1024
        );
    }
    println!(
        "latency: client's 250 after DATA -> receiver's cleanup log line for that Message-ID (log polled every 2 ms); \
         RSS: largest sum of VmHWM over the relay's processes (100 ms samples; shared pages \
         count once per process), PSS: largest sum of Pss (smaps_rollup; shared pages divided); \
         CPU: utime+stime of the relay's processes per 1,000 messages; verified: `{VERIFIED}` \
         lines in the relay's log (danemta logs one per delivery, Postfix one per TLS handshake); \
         ratios: rates > 1 and latency, memory, CPU < 1 favour danemta"
    );
    let mut ok = true;
    let mut evidence: Vec<(&'static str, String)> = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let dir = work.0.join(case.slug());
        if let Err(e) = fs::create_dir_all(&dir) {
            eprintln!("{}: {e}", dir.display());
            return 1;
        }
        let rows: Vec<Row> = [DANEMTA, POSTFIX_DEFAULT, POSTFIX_TUNED]
            .into_iter()
            .map(|name| run_system(name, &ctx, *case, &dir))
            .collect();
        ok &= print_case(*case, &rows);
        for row in rows {
            match (&row.outcome, row.evidence) {
                (Err(e), _) => failures.push(format!("{} {}: {e}", case.label(), row.name)),
                (Ok(_), None) => failures.push(format!(
                    "{} {}: delivered without logging a DANE-verified connection",
                    case.label(),
                    row.name
                )),
                (Ok(_), Some(line)) => {
                    if !evidence.iter().any(|(n, _)| *n == row.name) {
                        evidence.push((row.name, line));
                    }
                }
            }
        }
    }
    drop(rt);
    println!();
    for (name, line) in &evidence {
        println!("{name} says: {}", line.trim());
    }
    for f in &failures {
        println!("\nFAILED {f}");
    }
    drop(client_addr);
    drop(work);
    drop(lab);
    drop(receiver);
    if ok && failures.is_empty() { 0 } else { 1 }
}
