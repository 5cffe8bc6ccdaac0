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
//!
//! # The shared store (`RELAY_BENCH_STORE=postgres`, issue 14)
//!
//! `bash scripts/bench.sh relay --store postgres` (which sets `RELAY_BENCH_STORE=postgres`)
//! measures what the PostgreSQL queue (`[queue] store = "postgres"`) costs: the same cases,
//! phases, load, receiver and table, but the systems are
//! * `danemta local`: one `danemta serve` on its local store (spool files + SQLite), exactly
//!   as the default mode runs it: the baseline, measured in the same run;
//! * `danemta pg xK` for every K of `RELAY_BENCH_NODES` (default `1,2,3`, at most 8): K
//!   `danemta serve` nodes sharing one queue in one PostgreSQL database, each with its own
//!   lab address (listener and metrics), config file, `queue.dir` and log, and the same `url`.
//!
//! Postfix is not run in this mode. One lab PostgreSQL server (`danemta_lab::postgres`) is
//! started for the whole run, with `fsync = on` (the lab's default is off; the benchmark keeps
//! production durability) and every other setting as the lab helper makes it (PostgreSQL's
//! defaults, `synchronous_commit = on` among them; `shared_buffers = 32MB`); its data lives on
//! the same file system as the local store's spool. The settings in force are printed. Each
//! `danemta pg xK` of each case gets a fresh database (`Postgres::create_database`).
//!
//! Every node is started with `[delivery] paused = true`; phase 2 rewrites every node's
//! config to `paused = false` and sends each a SIGHUP. The client spreads its sessions over
//! the nodes' listeners round-robin (session k talks to node k mod K; a session takes the
//! next message as soon as it is done with one, so a faster node takes more). Receipts are
//! counted at the one receiver, as in the default mode. RSS, PSS and CPU are sums over the
//! nodes (RSS: the sum of each node's `VmHWM`; PSS: the sum of each node's sampled peak, so
//! never below the peak of the sum; CPU: the sum of the nodes' utime + stime), without the
//! database server, whose own CPU seconds per 1,000 messages and peak PSS (the postmaster and
//! its children: background processes, autovacuum workers, the nodes' backends) are printed
//! below each table, with the transactions and WAL bytes per message of the database, the
//! `WARN`/`ERROR` lines of the nodes' logs and the notable lines of the server's log. Ratios are
//! against `danemta local`.

#[path = "relay_vs_postfix/measure.rs"]
mod measure;

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::postgres::{Postgres, PostgresSpec};
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
/// Node counts of the shared-store mode unless `RELAY_BENCH_NODES` says otherwise.
const DEFAULT_NODES: &str = "1,2,3";
/// Most nodes sharing one queue.
const MAX_NODES: usize = 8;
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
    /// Starts a daemon whose config, queue and log are in `home`, named `hostname`; on the
    /// local store, or on the shared one at `url`.
    fn start(
        lab: &Lab,
        home: &Path,
        hostname: &str,
        client: Ipv4Addr,
        url: Option<&str>,
    ) -> Result<Danemta, String> {
        let addr = lab.claim_addr().map_err(|e| e.to_string())?;
        let listen = SocketAddr::new(IpAddr::V4(addr.ip()), RELAY_PORT);
        fs::create_dir_all(home).map_err(|e| e.to_string())?;
        let config = home.join("danemta.toml");
        let store = url.map_or(String::new(), |url| {
            format!("store = \"postgres\"\nurl = \"{url}\"\n")
        });
        let text = format!(
            r#"[server]
hostname = "{hostname}"
relay_networks = ["{client}/32"]
[[server.listen]]
address = "{listen}"
mode = "smtp"
[dns]
resolver = "trust-ad@{resolver}"
[queue]
dir = "{queue}"
{store}[delivery]
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
    /// The relay's listeners (several: nodes sharing a queue); session k uses k mod len.
    relays: Vec<SocketAddr>,
    from: Ipv4Addr,
    tag: String,
    n: usize,
    destinations: usize,
    body: String,
    next: AtomicUsize,
    /// When the `250` after DATA came, per message (epoch seconds; 0 = not yet).
    accepted_at: Mutex<Vec<f64>>,
}

/// Session `k`: takes message numbers until `n`, one transaction each, on listener k mod
/// the number of listeners.
async fn session(load: Arc<Load>, k: usize) -> Result<usize, String> {
    let relay = load.relays[k % load.relays.len()];
    let mut c = Conn::open(relay, load.from).await?;
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
    /// What the database server of a shared store spent meanwhile.
    server: Option<ServerCost>,
}

/// The database server's share of a run (all phases).
struct ServerCost {
    cpu_seconds: f64,
    /// Largest sampled sum of `Pss` over the server's processes, KiB.
    peak_pss_kib: u64,
}

/// Submits messages `0..n` tagged `tag` to `relays` (round-robin) over `sessions`; how long
/// it took and when each `250` after DATA came (epoch seconds).
fn submit(
    rt: &tokio::runtime::Runtime,
    relays: &[SocketAddr],
    client: Ipv4Addr,
    tag: &str,
    case: Case,
    n: usize,
) -> Result<(Duration, Vec<f64>), String> {
    let load = Arc::new(Load {
        relays: relays.to_vec(),
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
            .map(|k| tokio::spawn(session(load.clone(), k)))
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

/// Runs the three phases against `relays` (one relay's listener, or those of nodes sharing a
/// queue; their processes are `watched`, CPU and memory summed over them), started with
/// deliveries paused: (1) submit the case's N messages and time the `250`s; (2) `resume` and
/// time the delivery of the full queue; (3) submit N/2 more with deliveries running and
/// measure each one's latency from `250` to receipt. `server`: the processes of a database
/// the relay uses, measured apart.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Ctx<'_>,
    tag: &str,
    relays: &[SocketAddr],
    watched: &[Watched],
    server: Option<ServerProcs>,
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
    let cpu_ticks = || watched.iter().map(|w| w.cpu_ticks()).sum::<u64>();
    let mems: Vec<MemSampler> = watched.iter().map(|&w| MemSampler::start(w)).collect();
    let server_mem = server.map(ServerSampler::start);
    let server_cpu0 = server.map(ServerProcs::cpu_ticks);
    let cpu0 = cpu_ticks();
    let phases = || -> Result<_, String> {
        let log = watch(&tag);
        let (accepted, _) = submit(ctx.rt, relays, ctx.client, &tag, case, case.n)?;
        let resumed = measure::now();
        resume()?;
        let received = delivered(log, case.n, &tag)?;
        let (last, _) = receipts(&received, &tag, &vec![resumed; case.n])?;
        let live_n = (case.n / 2).max(1);
        let log = watch(&live_tag);
        let live_start = measure::now();
        let (_, at) = submit(ctx.rt, relays, ctx.client, &live_tag, case, live_n)?;
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
    let cpu1 = cpu_ticks();
    let server_cpu1 = server.map(ServerProcs::cpu_ticks);
    let (peak_kib, peak_pss_kib) = mems
        .into_iter()
        .map(MemSampler::stop)
        .fold((0, 0), |(h, p), (h1, p1)| (h + h1, p + p1));
    let server = server_mem.map(|mem| ServerCost {
        cpu_seconds: server_cpu1
            .unwrap_or(0)
            .saturating_sub(server_cpu0.unwrap_or(0)) as f64
            / ctx.ticks,
        peak_pss_kib: mem.stop(),
    });
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
        server,
    })
}

struct Row {
    name: &'static str,
    outcome: Result<Outcome, String>,
    evidence: Option<String>,
    /// `Verified TLS connection established` lines in the relay's log.
    connections: usize,
    /// danemta's TLS handshakes (full, resumed), from its metrics (summed over nodes).
    handshakes: Option<(u64, u64)>,
    /// The shared store's database, for nodes sharing a queue.
    store: Option<StoreReport>,
}

impl Row {
    fn failed(name: &'static str, why: String) -> Row {
        Row {
            name,
            outcome: Err(why),
            evidence: None,
            connections: 0,
            handshakes: None,
            store: None,
        }
    }

    fn from_log(name: &'static str, outcome: Result<Outcome, String>, log: &Path) -> Row {
        Row::from_logs(name, outcome, &[log.to_owned()])
    }

    /// From the logs of a relay's nodes: the first verified line of any, the sum of the counts.
    fn from_logs(name: &'static str, outcome: Result<Outcome, String>, logs: &[PathBuf]) -> Row {
        Row {
            name,
            outcome,
            evidence: logs.iter().find_map(|log| first_line_with(log, VERIFIED)),
            connections: logs.iter().map(|log| count_lines_with(log, VERIFIED)).sum(),
            handshakes: None,
            store: None,
        }
    }
}

/// What the database of a shared queue saw during one system's run, and what its nodes and
/// server logged.
#[derive(Default)]
struct StoreReport {
    /// `pg_stat_database` of the run's database: (xact_commit, xact_rollback, deadlocks).
    transactions: Option<(u64, u64, u64)>,
    /// WAL the server wrote during the run, bytes.
    wal_bytes: Option<u64>,
    /// Per node with `WARN`/`ERROR` lines in its log: how many, and the first.
    node_problems: Vec<String>,
    /// Lines the server logged during the run, by severity (`ERROR`, `FATAL`, `WARNING`, `LOG`…).
    server_log: Vec<(String, usize)>,
    /// The first few lines the server logged during the run other than `LOG`.
    server_examples: Vec<String>,
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
/// The baseline of the shared-store mode: danemta on its local store.
const DANEMTA_LOCAL: &str = "danemta local";
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

/// What the run compares.
#[derive(Clone, Debug)]
enum Mode {
    /// danemta against Postfix, its defaults and tuned (the default).
    Postfix,
    /// danemta on its local store against 1, 2, 3… nodes sharing a queue on PostgreSQL
    /// (`RELAY_BENCH_STORE=postgres`; `RELAY_BENCH_NODES`, default `1,2,3`).
    Shared { nodes: Vec<usize> },
}

fn mode() -> Result<Mode, String> {
    match std::env::var("RELAY_BENCH_STORE").as_deref() {
        Err(_) | Ok("" | "local") => Ok(Mode::Postfix),
        Ok("postgres") => Ok(Mode::Shared {
            nodes: env_list("RELAY_BENCH_NODES", DEFAULT_NODES, |s| {
                s.parse().ok().filter(|k| (1..=MAX_NODES).contains(k))
            })?,
        }),
        Ok(other) => Err(format!(
            "RELAY_BENCH_STORE={other:?}: want postgres (or local, the default: danemta against Postfix)"
        )),
    }
}

/// One system of a case.
#[derive(Clone, Copy)]
enum System {
    /// danemta serve or a Postfix relay, by name ([`run_system`]).
    Compared(&'static str),
    /// danemta on its local store, the shared store's baseline.
    Local,
    /// This many danemta nodes sharing a PostgreSQL queue, and the system's name.
    Shared(usize, &'static str),
}

fn main() {
    let (cases, mode) = match cases().and_then(|c| Ok((c, mode()?))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let code = bench(&cases, &mode);
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
        run_danemta(name, tag, ctx, case, &dir.join("danemta"), None)
    } else {
        match PostfixRelay::start(ctx.lab, dir, ctx.client, name == POSTFIX_TUNED) {
            Ok(mut p) => {
                eprintln!("{}: {name} on {}", case.label(), p.listen);
                let Some(pid) = p.pid() else {
                    return Row::failed(name, "Postfix master has no pid".into());
                };
                let outcome = run(
                    ctx,
                    tag,
                    &[p.listen],
                    &[Watched::Group(pid)],
                    None,
                    case,
                    &|| p.resume(),
                );
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

/// The shared store of a system: the database server, and how many nodes share a database
/// of it.
#[derive(Clone, Copy)]
struct Shared<'a> {
    pg: &'a Postgres,
    nodes: usize,
}

/// Runs danemta on one case: one daemon on its local store (`shared` None), its directory
/// `home`; or `nodes` daemons sharing a fresh database of the server, in `home/node<j>`.
fn run_danemta(
    name: &'static str,
    tag: &str,
    ctx: &Ctx,
    case: Case,
    home: &Path,
    shared: Option<Shared>,
) -> Row {
    let url = match shared.map(|s| s.pg.create_database()).transpose() {
        Ok(url) => url,
        Err(e) => return Row::failed(name, format!("creating the queue's database: {e}")),
    };
    let mut nodes = Vec::new();
    for j in 1..=shared.map_or(1, |s| s.nodes) {
        let (node_home, hostname) = match shared {
            Some(_) => (
                home.join(format!("node{j}")),
                format!("relay-danemta-{j}.bench.test"),
            ),
            None => (home.to_owned(), "relay-danemta.bench.test".to_owned()),
        };
        match Danemta::start(ctx.lab, &node_home, &hostname, ctx.client, url.as_deref()) {
            Ok(d) => {
                match shared {
                    Some(_) => eprintln!(
                        "{}: {name} node {j} on {} (pid {:?})",
                        case.label(),
                        d.listen,
                        d.pid()
                    ),
                    None => eprintln!(
                        "{}: danemta serve on {} (pid {:?})",
                        case.label(),
                        d.listen,
                        d.pid()
                    ),
                }
                nodes.push(d);
            }
            // The nodes started so far stop as they drop.
            Err(e) => return Row::failed(name, e),
        }
    }
    let Some(pids) = nodes.iter().map(Danemta::pid).collect::<Option<Vec<u32>>>() else {
        return Row::failed(name, "danemta serve has no pid".into());
    };
    let watched: Vec<Watched> = pids.into_iter().map(Watched::Process).collect();
    let relays: Vec<SocketAddr> = nodes.iter().map(|d| d.listen).collect();
    let server = shared.and_then(|s| s.pg.pid()).map(ServerProcs);
    let mark = shared.map(|s| ServerMark::now(s.pg));
    let outcome = run(ctx, tag, &relays, &watched, server, case, &|| {
        // Every node, as the single daemon: `paused = false`, then SIGHUP.
        nodes.iter().try_for_each(Danemta::resume)
    });
    let logs: Vec<PathBuf> = nodes.iter().map(|d| d.log.clone()).collect();
    let outcome = outcome.map_err(|e| {
        let count = |needle| -> usize { logs.iter().map(|l| count_lines_with(l, needle)).sum() };
        let tails = match logs.as_slice() {
            [log] => format!("--- danemta log tail ---\n{}", tail(log, 40)),
            logs => logs
                .iter()
                .enumerate()
                .map(|(j, log)| format!("--- node {} log tail ---\n{}", j + 1, tail(log, 20)))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        format!(
            "{e}\n`status=sent` lines: {}, `status=deferred` lines: {}\n{tails}",
            count("status=sent"),
            count("status=deferred"),
        )
    });
    let handshakes = nodes
        .iter()
        .map(|d| handshakes(d.metrics))
        .try_fold((0, 0), |(full, resumed), h| {
            h.map(|(f, r)| (full + f, resumed + r))
        });
    for d in &mut nodes {
        d.stop();
    }
    let store = match (shared, mark, url) {
        (Some(s), Some(mark), Some(url)) => Some(store_report(s.pg, &url, &mark, &logs)),
        _ => None,
    };
    Row {
        handshakes,
        store,
        ..Row::from_logs(name, outcome, &logs)
    }
}

/// A PostgreSQL server's processes: the postmaster and its children. Not a process group:
/// every child of the postmaster (each backend, each background process) makes itself a
/// session leader (`setsid`), so [`Watched::Group`] would see the postmaster alone.
#[derive(Clone, Copy, Debug)]
struct ServerProcs(u32);

/// (ppid, utime + stime, cutime + cstime) of `pid`, from /proc/PID/stat, in clock ticks.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name's closing parenthesis start with field 3 (state).
    let f: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some((
        u32::try_from(field(4)?).ok()?,
        field(14)? + field(15)?,
        field(16)? + field(17)?,
    ))
}

impl ServerProcs {
    /// The postmaster and its live children.
    fn pids(self) -> Vec<u32> {
        let children = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| proc_stat(pid).is_some_and(|(ppid, ..)| ppid == self.0));
        std::iter::once(self.0).chain(children).collect()
    }

    /// CPU so far, in clock ticks: every live process's utime + stime, plus the postmaster's
    /// cutime + cstime (the children it reaped: backends of closed connections, autovacuum
    /// workers). The difference of two readings is what the server spent in between.
    fn cpu_ticks(self) -> u64 {
        let live: u64 = self
            .pids()
            .into_iter()
            .filter_map(proc_stat)
            .map(|(_, own, _)| own)
            .sum();
        live + proc_stat(self.0).map_or(0, |(_, _, reaped)| reaped)
    }

    /// The sum of `Pss` over the live processes, in KiB (shared buffers divided among them).
    fn pss_kib(self) -> u64 {
        self.pids()
            .into_iter()
            .map(|pid| Watched::Process(pid).memory_kib().1)
            .sum()
    }
}

/// Samples [`ServerProcs::pss_kib`] every 100 ms on a thread of its own until stopped.
struct ServerSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl ServerSampler {
    fn start(server: ServerProcs) -> ServerSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = server.pss_kib().max(peak);
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        ServerSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// The largest sum of `Pss` seen, in KiB (one last sample is taken now).
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

/// Where the database server was before a run: its log's length and its WAL position.
struct ServerMark {
    log_len: u64,
    wal_lsn: Option<String>,
}

impl ServerMark {
    fn now(pg: &Postgres) -> ServerMark {
        ServerMark {
            log_len: fs::metadata(pg.dir().join("postgres.out")).map_or(0, |m| m.len()),
            wal_lsn: pg
                .psql("postgres", "SELECT pg_current_wal_lsn()")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// What the database `url` of `pg` and the nodes' `logs` say about a finished run (the nodes
/// stopped) since `mark`.
fn store_report(pg: &Postgres, url: &str, mark: &ServerMark, logs: &[PathBuf]) -> StoreReport {
    // The nodes' backends report their statistics as they exit, just after the nodes do.
    std::thread::sleep(Duration::from_millis(500));
    let db = url.rsplit('/').next().unwrap_or_default();
    let transactions = pg
        .psql(
            db,
            "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .ok()
        .and_then(|out| {
            let v: Vec<u64> = out
                .trim()
                .split('|')
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        });
    let wal_bytes = mark.wal_lsn.as_ref().and_then(|lsn| {
        pg.psql(
            "postgres",
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')::bigint"),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
    });
    let node_problems = logs
        .iter()
        .enumerate()
        .filter_map(|(j, log)| {
            let text = fs::read_to_string(log).ok()?;
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                // Every node says so at its start, as the bench wants.
                .filter(|l| !l.contains("deliveries paused"))
                .collect();
            let first = bad.first()?;
            Some(format!(
                "node {}: {} WARN/ERROR line{}, the first: {}",
                j + 1,
                bad.len(),
                if bad.len() == 1 { "" } else { "s" },
                first.trim()
            ))
        })
        .collect();
    let mut server_log: Vec<(String, usize)> = Vec::new();
    let mut server_examples = Vec::new();
    let text = fs::read(pg.dir().join("postgres.out")).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(mark.log_len as usize..).unwrap_or_default());
    for line in new.lines() {
        // "2026-12-02 07:00:00.000 UTC [123] ERROR:  …" (log_line_prefix '%m [%p] ').
        let Some(severity) = line
            .split_once("] ")
            .and_then(|(_, rest)| rest.split_once(':'))
            .map(|(severity, _)| severity)
            .filter(|s| matches!(*s, "PANIC" | "FATAL" | "ERROR" | "WARNING" | "LOG"))
        else {
            continue;
        };
        match server_log.iter_mut().find(|(s, _)| s == severity) {
            Some((_, n)) => *n += 1,
            None => server_log.push((severity.to_owned(), 1)),
        }
        let notable = severity != "LOG" || line.contains("too frequently");
        if notable && server_examples.len() < 5 {
            server_examples.push(line.trim().to_owned());
        }
    }
    StoreReport {
        transactions,
        wal_bytes,
        node_problems,
        server_log,
        server_examples,
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

/// Prints, after a case's table in the shared-store mode: each shared system's ratios to the
/// local store, its TLS handshakes, and what its database server spent and logged.
fn print_shared(case: Case, rows: &[Row]) {
    // accepted/s, delivered/s, live/s, p50, p99, RSS, PSS, CPU s/1k.
    let figures = |o: &Outcome| -> [f64; 8] {
        [
            case.n as f64 / o.accepted.as_secs_f64(),
            case.n as f64 / o.delivered.as_secs_f64(),
            o.live_n as f64 / o.live.as_secs_f64(),
            measure::quantile(&o.latencies, 0.5).unwrap_or(0.0),
            measure::quantile(&o.latencies, 0.99).unwrap_or(0.0),
            o.peak_kib as f64,
            o.peak_pss_kib as f64,
            o.cpu_seconds * 1000.0 / (case.n + o.live_n) as f64,
        ]
    };
    let local = rows
        .iter()
        .find(|r| r.name == DANEMTA_LOCAL)
        .and_then(|r| r.outcome.as_ref().ok());
    if let Some(base) = local {
        let base = figures(base);
        for row in rows.iter().filter(|r| r.name != DANEMTA_LOCAL) {
            let Ok(o) = &row.outcome else { continue };
            let ratios: Vec<String> = figures(o)
                .iter()
                .zip(base)
                .zip([
                    "accepted",
                    "delivered",
                    "live",
                    "p50",
                    "p99",
                    "RSS",
                    "PSS",
                    "CPU",
                ])
                .map(|((x, y), what)| {
                    if y > 0.0 {
                        format!("{what} {:.2}x", x / y)
                    } else {
                        format!("{what} -")
                    }
                })
                .collect();
            println!("{} / local: {}", row.name, ratios.join(", "));
        }
    }
    for row in rows {
        let Some(((full, resumed), o)) = row
            .handshakes
            .and_then(|h| Some((h, row.outcome.as_ref().ok()?)))
        else {
            continue;
        };
        let all = full + resumed;
        println!(
            "{} TLS handshakes: {all} for {} messages ({full} full, {resumed} resumed: {:.0} % resumed)",
            row.name,
            case.n + o.live_n,
            if all > 0 {
                resumed as f64 * 100.0 / all as f64
            } else {
                0.0
            }
        );
    }
    let local_cpu = local.map(|o| figures(o)[7]);
    for row in rows {
        let (Some(store), Ok(o)) = (&row.store, &row.outcome) else {
            continue;
        };
        let messages = (case.n + o.live_n) as f64;
        let mut parts = Vec::new();
        if let Some(server) = &o.server {
            let server_cpu = server.cpu_seconds * 1000.0 / messages;
            let nodes_cpu = figures(o)[7];
            parts.push(format!(
                "server CPU s/1k {server_cpu:.2} (nodes + server {:.2}{}), server peak PSS {:.1} MiB",
                nodes_cpu + server_cpu,
                local_cpu.map_or(String::new(), |l| format!(
                    " = {:.2}x local's {l:.2}",
                    (nodes_cpu + server_cpu) / l
                )),
                server.peak_pss_kib as f64 / 1024.0
            ));
        }
        if let Some((commits, rollbacks, deadlocks)) = store.transactions {
            parts.push(format!(
                "per message {:.1} commits, {:.2} rollbacks; {deadlocks} deadlocks",
                commits as f64 / messages,
                rollbacks as f64 / messages
            ));
        }
        if let Some(wal) = store.wal_bytes {
            parts.push(format!(
                "WAL {:.1} KiB per message",
                wal as f64 / 1024.0 / messages
            ));
        }
        let log: Vec<String> = store
            .server_log
            .iter()
            .map(|(severity, n)| format!("{n} {severity}"))
            .collect();
        parts.push(format!(
            "server log: {}",
            if log.is_empty() {
                "nothing".to_owned()
            } else {
                log.join(", ")
            }
        ));
        if store.node_problems.is_empty() {
            parts.push("no WARN/ERROR lines in the nodes' logs".to_owned());
        }
        println!("{} PostgreSQL: {}", row.name, parts.join("; "));
        for line in store.server_examples.iter().chain(&store.node_problems) {
            println!("    {line}");
        }
    }
}

/// Everything, with every process owned by a guard dropped before `main` exits.
fn bench(cases: &[Case], mode: &Mode) -> i32 {
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
    // The shared store's server: one for the run, with production durability (fsync on).
    let pg = match mode {
        Mode::Postfix => None,
        Mode::Shared { .. } => match Postgres::start_with(PostgresSpec {
            fsync: true,
            ..PostgresSpec::default()
        }) {
            Ok(pg) => Some(pg),
            Err(e) => {
                eprintln!("relay bench: starting the lab PostgreSQL: {e}");
                return 1;
            }
        },
    };
    let systems: Vec<System> = match mode {
        Mode::Postfix => [DANEMTA, POSTFIX_DEFAULT, POSTFIX_TUNED]
            .into_iter()
            .map(System::Compared)
            .collect(),
        Mode::Shared { nodes } => std::iter::once(System::Local)
            .chain(nodes.iter().map(|&k| {
                // A name for the table; a handful per run, for the life of the process.
                let name: &'static str = Box::leak(format!("danemta pg x{k}").into_boxed_str());
                System::Shared(k, name)
            }))
            .collect(),
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
    if let Some(pg) = &pg {
        let query = |sql: &str| {
            pg.psql("postgres", sql)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|e| format!("? ({e})"))
        };
        println!(
            "shared store: PostgreSQL {} (the lab's server on {}, one for the run, its data on \
             the same file system as the local store's spool; a fresh database per system and \
             case), settings: {}; fsync = on is set for this bench (the lab's default is off), \
             nothing else changed from the lab helper's settings, durability not weakened: the \
             store commits each accepted message and each finished one durably (it forces \
             synchronous_commit = on for those) and, by its design, claims and attempt records \
             with synchronous_commit = off",
            query("SHOW server_version"),
            pg.addr(),
            query(
                "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name) \
                 FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', \
                 'full_page_writes', 'wal_sync_method', 'shared_buffers', 'max_connections', \
                 'max_wal_size', 'checkpoint_timeout')"
            ),
        );
        println!(
            "systems: {DANEMTA_LOCAL} (one daemon on its local store: the baseline), danemta pg xK \
             (K daemons, each with its own address, config and queue.dir, sharing one \
             database; the client's sessions go round-robin over their listeners; every node \
             started paused and resumed by config rewrite + SIGHUP); Postfix is not run"
        );
        println!(
            "latency: client's 250 after DATA -> receiver's cleanup log line for that Message-ID (log polled every 2 ms); \
             RSS: sum of the nodes' VmHWM; PSS: sum of each node's largest sampled Pss \
             (smaps_rollup, 100 ms samples); CPU: utime+stime summed over the nodes per 1,000 \
             messages; RSS, PSS and CPU exclude the PostgreSQL server, reported below each \
             table; verified: `{VERIFIED}` lines in the nodes' logs (one per delivery); \
             ratios against {DANEMTA_LOCAL}: rates > 1 and latency, memory, CPU < 1 favour the \
             shared store"
        );
    } else {
        println!(
            "latency: client's 250 after DATA -> receiver's cleanup log line for that Message-ID (log polled every 2 ms); \
             RSS: largest sum of VmHWM over the relay's processes (100 ms samples; shared pages \
             count once per process), PSS: largest sum of Pss (smaps_rollup; shared pages divided); \
             CPU: utime+stime of the relay's processes per 1,000 messages; verified: `{VERIFIED}` \
             lines in the relay's log (danemta logs one per delivery, Postfix one per TLS handshake); \
             ratios: rates > 1 and latency, memory, CPU < 1 favour danemta"
        );
    }
    let mut ok = true;
    let mut evidence: Vec<(&'static str, String)> = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let dir = work.0.join(case.slug());
        if let Err(e) = fs::create_dir_all(&dir) {
            eprintln!("{}: {e}", dir.display());
            return 1;
        }
        let rows: Vec<Row> = systems
            .iter()
            .map(|system| match *system {
                System::Compared(name) => run_system(name, &ctx, *case, &dir),
                System::Local => run_danemta(
                    DANEMTA_LOCAL,
                    "danemta-local",
                    &ctx,
                    *case,
                    &dir.join("danemta-local"),
                    None,
                ),
                System::Shared(nodes, name) => match &pg {
                    Some(pg) => run_danemta(
                        name,
                        &format!("danemta-pg{nodes}"),
                        &ctx,
                        *case,
                        &dir.join(format!("danemta-pg{nodes}")),
                        Some(Shared { pg, nodes }),
                    ),
                    None => Row::failed(name, "no PostgreSQL server".into()),
                },
            })
            .collect();
        ok &= print_case(*case, &rows);
        if pg.is_some() {
            print_shared(*case, &rows);
        }
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
    drop(pg);
    drop(lab);
    drop(receiver);
    if ok && failures.is_empty() { 0 } else { 1 }
}
