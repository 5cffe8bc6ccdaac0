//! SMTP receivers: real Postfix instances on loopback, one per [`Receiver`].
//!
//! Each receiver is a Postfix of its own: its `main.cf`/`master.cf`, queue, data directory,
//! mailboxes and log live in `/tmp/danemta-lab/smtp-<pid>-…`, and its `master` runs in the
//! foreground (`master -d -c <dir>/conf`) as a child of the test process, in a process group of
//! its own, watched by a lab watchdog. Nothing of the system Postfix (`/etc/postfix`, port 25 on
//! other addresses) is used or needed.
//!
//! * **Listener**: one `smtpd` bound to exactly [`ReceiverSpec::addr`] (a `master.cf` service
//!   `IP:PORT`); `inet_interfaces = loopback-only`, `inet_protocols` of the address family.
//! * **TLS**: with [`ReceiverTls::Cert`], `smtpd_tls_security_level = may` and
//!   `smtpd_tls_chain_files` (key and chain): STARTTLS is offered. With [`ReceiverTls::None`],
//!   no TLS at all, so EHLO does not advertise STARTTLS. `smtpd_tls_loglevel = 1` logs
//!   `Anonymous TLS connection established from …: TLSv1.3 with cipher …`, and
//!   `smtpd_tls_received_header = yes` puts `(using TLSv1.3 with cipher …)` in the `Received`
//!   header of delivered mail.
//! * **Delivery**: recipients in [`ReceiverSpec::accept_domains`] are virtual mailbox domains
//!   with a catch-all (`virtual_mailbox_maps = static:inbox/`): every message lands as one file
//!   in the Maildir `<dir>/mail/inbox/new/`, owned by `nobody`. Every other recipient is refused
//!   with `554 5.7.1 … Relay access denied` (`smtpd_relay_restrictions =
//!   reject_unauth_destination`, no `permit_mynetworks`), except a bare `RCPT TO:<postmaster>`,
//!   which Postfix always accepts (RFC 5321 §4.5.1); `default_transport`, `relay_transport`
//!   and `local_transport` are `error:`, so the receiver never sends mail on (such a message
//!   bounces, and the bounce fails too).
//! * **Discarding** ([`Receiver::start_discarding`], for benchmarks): the same, except that
//!   mail for the accepted domains goes to Postfix's `discard` transport (`virtual_transport =
//!   discard`) instead of the Maildir, and the queue is a tmpfs (mounted in a private mount
//!   namespace of its `master`, gone with it), so that the receiver costs little: a sink for
//!   benchmarks, not a system under test. Each message is still confirmed in the log:
//!   cleanup's `<queue id>: message-id=<…>` and discard's `<queue id>: to=<…>, relay=none, …
//!   status=sent (<domain>)`, joined by the queue id.
//! * **Log**: `maillog_file = <dir>/maillog`, written by Postfix's `postlogd`. [`Receiver::log`]
//!   first sends a marker line through the same `postlogd` socket and waits until it appears,
//!   so the text returned holds every line Postfix logged before the call.
//! * **No DNS**: `smtpd_peername_lookup = no`; clients show as `unknown[127.0.0.1]`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::LabError;
use crate::pki::TestCert;
use crate::process;

/// Whether a receiver offers STARTTLS, and with which certificate.
#[derive(Clone, Debug, Default)]
pub enum ReceiverTls {
    /// No TLS at all: EHLO does not advertise STARTTLS.
    #[default]
    None,
    /// STARTTLS offered (`smtpd_tls_security_level = may`), presenting this chain.
    Cert {
        /// The chain, PEM: leaf first, then intermediates / the trust anchor.
        chain_pem: String,
        /// The leaf's private key, PEM (PKCS#8, SEC1 or PKCS#1).
        key_pem: String,
    },
    /// STARTTLS offered with several certificates (e.g. ECDSA and RSA): OpenSSL picks the one
    /// matching the client's signature algorithms.
    Several(Vec<TestCert>),
}

impl From<&TestCert> for ReceiverTls {
    fn from(cert: &TestCert) -> Self {
        ReceiverTls::Cert {
            chain_pem: cert.chain_pem.clone(),
            key_pem: cert.key_pem.clone(),
        }
    }
}

/// What a [`Receiver`] looks like.
#[derive(Clone, Debug)]
pub struct ReceiverSpec {
    /// Where it listens: a loopback address and port, e.g. `127.0.30.1:25` (see the crate
    /// documentation for the address convention). An unspecified IP (`0.0.0.0`) means "claim a
    /// free one" with [`claim_peer_addr`] (port 0 then means 25).
    pub addr: SocketAddr,
    /// Its name (`myhostname`), in the greeting and EHLO reply, e.g. `mx.dane.test`.
    pub hostname: String,
    /// STARTTLS or not.
    pub tls: ReceiverTls,
    /// Recipient domains it accepts mail for (any local part); all others are refused.
    pub accept_domains: Vec<String>,
}

impl ReceiverSpec {
    /// A spec with a claimed free address on port 25, no TLS, accepting `accept_domains`.
    pub fn new(hostname: &str, accept_domains: &[&str]) -> ReceiverSpec {
        ReceiverSpec {
            addr: SocketAddr::from(([0, 0, 0, 0], 25)),
            hostname: hostname.to_string(),
            tls: ReceiverTls::None,
            accept_domains: accept_domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// The same spec listening on `addr`.
    pub fn at(mut self, addr: SocketAddr) -> ReceiverSpec {
        self.addr = addr;
        self
    }

    /// The same spec offering STARTTLS with `tls` (e.g. `&TestCert`).
    pub fn with_tls(mut self, tls: impl Into<ReceiverTls>) -> ReceiverSpec {
        self.tls = tls.into();
        self
    }
}

/// A loopback address claimed for an SMTP peer: no other claim (in this or any other process)
/// gets it while this value lives. See [`claim_peer_addr`].
#[derive(Debug)]
pub struct PeerAddr {
    addr: SocketAddr,
    _lock: File,
}

impl PeerAddr {
    /// The claimed address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Claims a free address `127.0.K.H:port` (K = 40…49) for an SMTP peer, so that tests running
/// at the same time (`cargo nextest` runs them in parallel processes) never collide. Receivers
/// and proxies given an unspecified address (`0.0.0.0`) do this themselves and keep the claim.
pub fn claim_peer_addr(port: u16) -> Result<PeerAddr, LabError> {
    let (addr, lock) = process::claim_peer_addr(port)?;
    Ok(PeerAddr {
        addr: SocketAddr::V4(addr),
        _lock: lock,
    })
}

/// The address to use for `requested`: a claimed one when its IP is unspecified, else itself,
/// locked so that no other lab peer takes it meanwhile.
pub(crate) fn resolve_addr(
    requested: SocketAddr,
    default_port: u16,
) -> Result<(SocketAddr, Option<PeerAddr>), LabError> {
    if requested.ip().is_unspecified() {
        let port = match requested.port() {
            0 => default_port,
            p => p,
        };
        let claim = claim_peer_addr(port)?;
        Ok((claim.addr(), Some(claim)))
    } else if requested.port() == 0 {
        Ok((requested, None))
    } else {
        match process::lock_peer_addr(requested)? {
            Some(lock) => Ok((
                requested,
                Some(PeerAddr {
                    addr: requested,
                    _lock: lock,
                }),
            )),
            None => Err(LabError::PeerAddrInUse { addr: requested }),
        }
    }
}

/// Where the Postfix programs are (Debian: `/usr/lib/postfix/sbin`).
const DAEMON_DIRS: [&str; 3] = [
    "/usr/lib/postfix/sbin",
    "/usr/libexec/postfix",
    "/usr/lib/postfix",
];

fn find_master() -> Result<PathBuf, LabError> {
    DAEMON_DIRS
        .iter()
        .map(|d| Path::new(d).join("master"))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| LabError::MissingPrograms {
            missing: "postfix (its master daemon)".into(),
            packages: "postfix".into(),
        })
}

/// `(uid, gid)` of `user` in /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// The gid of `group` in /etc/group.
fn group_id(group: &str) -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != group {
            return None;
        }
        let _password = f.next()?;
        f.next()?.parse().ok()
    })
}

/// Whether `name` is a plain host or domain name (letters, digits, `-`, `.`, `_`), safe to
/// write into main.cf.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The accounts a receiver uses.
struct Accounts {
    /// `mail_owner` (Postfix's own user).
    postfix: (u32, u32),
    /// `setgid_group`.
    postdrop: u32,
    /// Who owns delivered mail.
    mailbox: (u32, u32),
}

fn accounts() -> Result<Accounts, LabError> {
    let missing = |what: &str| LabError::MissingPrograms {
        missing: format!("the {what} of the Postfix package"),
        packages: "postfix".into(),
    };
    let postfix = user_ids("postfix").ok_or_else(|| missing("user `postfix`"))?;
    let postdrop = group_id("postdrop").ok_or_else(|| missing("group `postdrop`"))?;
    let mailbox = user_ids("nobody")
        .filter(|&(uid, _)| uid != 0)
        .unwrap_or(postfix);
    Ok(Accounts {
        postfix,
        postdrop,
        mailbox,
    })
}

/// A running Postfix instance (see the [module documentation](self)).
///
/// Dropping it kills its processes (SIGTERM, then SIGKILL, by process group) and removes its
/// directory (kept as `/tmp/danemta-lab/kept-smtp-…` with `DANEMTA_LAB_KEEP=1`).
pub struct Receiver {
    addr: SocketAddr,
    hostname: String,
    dir: PathBuf,
    master: Option<Child>,
    watchdog: Option<Child>,
    claim: Option<PeerAddr>,
    keep: bool,
    startup: Duration,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("hostname", &self.hostname)
            .field("dir", &self.dir)
            .field("startup", &self.startup)
            .finish()
    }
}

/// How long [`Receiver::start`] waits for the greeting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Receiver {
    /// Writes the configuration, starts Postfix's `master` and returns once `spec.addr` answers
    /// with a `220` greeting.
    pub fn start(spec: ReceiverSpec) -> Result<Receiver, LabError> {
        Receiver::start_with(spec, false)
    }

    /// Like [`start`](Self::start), but mail for the accepted domains is discarded (Postfix's
    /// `discard` transport) instead of stored: nothing lands in the Maildir, delivery shows
    /// only in the log, and the queue is in memory (see the [module documentation](self)).
    pub fn start_discarding(spec: ReceiverSpec) -> Result<Receiver, LabError> {
        Receiver::start_with(spec, true)
    }

    fn start_with(spec: ReceiverSpec, discard: bool) -> Result<Receiver, LabError> {
        let t0 = Instant::now();
        let invalid = |addr: SocketAddr, detail: String| LabError::Receiver {
            addr,
            detail,
            log: String::new(),
        };
        let requested = spec.addr;
        if !requested.ip().is_unspecified() && !requested.ip().is_loopback() {
            return Err(invalid(
                requested,
                "not a loopback address: lab receivers listen on 127.0.0.0/8 (or ::1) only".into(),
            ));
        }
        if !requested.ip().is_unspecified() && requested.port() == 0 {
            return Err(invalid(
                requested,
                "port 0: give the receiver a port".into(),
            ));
        }
        if !is_plain_name(&spec.hostname) {
            return Err(invalid(
                requested,
                format!("invalid hostname {:?}", spec.hostname),
            ));
        }
        if let Some(d) = spec.accept_domains.iter().find(|d| !is_plain_name(d)) {
            return Err(invalid(requested, format!("invalid accept domain {d:?}")));
        }
        let (addr, claim) = resolve_addr(requested, 25)?;
        let invalid = |detail: String| invalid(addr, detail);
        if let Err(e) = process::bind_listener(addr) {
            return Err(invalid(format!("cannot listen there: {e}")));
        }
        let master = find_master()?;
        let accounts = accounts()?;
        let keep = std::env::var("DANEMTA_LAB_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
        let dir = process::instance_dir("smtp")?;
        let mut receiver = Receiver {
            addr,
            hostname: spec.hostname.clone(),
            dir,
            master: None,
            watchdog: None,
            claim,
            keep,
            startup: Duration::ZERO,
        };
        // From here on, errors drop `receiver`, which cleans up.
        receiver.watchdog = Some(process::spawn_watchdog(&receiver.dir, keep)?);
        receiver.write_instance(&spec, &accounts, discard)?;
        let conf = receiver.dir.join("conf");
        let child = if discard {
            // The queue in memory: a tmpfs with a copy of the queue layout, bound over
            // `queue/` in a mount namespace of master's own.
            let memory = receiver.dir.join("queue-tmpfs");
            fs::create_dir_all(&memory)
                .map_err(|e| LabError::io(format!("creating {}", memory.display()), e))?;
            let script = r#"mount -t tmpfs -o mode=0755 danemta-lab-queue "$1" && cp -a "$2"/. "$1"/ && mount --bind "$1" "$2" && exec "$3" -d -c "$4""#;
            process::spawn_server(
                "master",
                Path::new("unshare"),
                &[
                    "--mount".as_ref(),
                    "--propagation".as_ref(),
                    "private".as_ref(),
                    "sh".as_ref(),
                    "-c".as_ref(),
                    script.as_ref(),
                    "sh".as_ref(),
                    memory.as_os_str(),
                    receiver.dir.join("queue").as_os_str(),
                    master.as_os_str(),
                    conf.as_os_str(),
                ],
                &receiver.dir,
            )?
        } else {
            process::spawn_server(
                "master",
                &master,
                &[
                    std::ffi::OsStr::new("-d"),
                    std::ffi::OsStr::new("-c"),
                    conf.as_os_str(),
                ],
                &receiver.dir,
            )?
        };
        let pgid = child.id();
        receiver.master = Some(child);
        process::record_pgid(&receiver.dir, pgid)?;
        receiver.wait_greeting(START_TIMEOUT)?;
        receiver.startup = t0.elapsed();
        Ok(receiver)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `myhostname`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Its directory: `conf/` (main.cf, master.cf, tls.pem), `queue/`, `data/`, `mail/`,
    /// `maillog`, `master.out`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long [`Receiver::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The PIDs of its live processes (master, its children, the watchdog).
    pub fn pids(&self) -> Vec<u32> {
        let groups: Vec<u32> = self
            .master
            .iter()
            .chain(self.watchdog.iter())
            .map(Child::id)
            .collect();
        let mut pids = process::group_members(&groups);
        pids.sort_unstable();
        pids
    }

    /// Postfix's log of this instance, complete up to now: a marker is sent through Postfix's
    /// own log service (`postlogd`, which writes lines in the order it receives them) and the
    /// log is read once the marker is in it (markers are left out). Waits at most a second for
    /// the marker, then returns what is there.
    pub fn log(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = self.dir.join("maillog");
        let marker = format!(
            "{MARKER_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let socket = self.dir.join("queue/public/postlog");
        let sent = UnixDatagram::unbound()
            .and_then(|s| s.send_to(marker.as_bytes(), &socket))
            .is_ok();
        let read = || {
            fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let mut text = read();
        if sent {
            let deadline = crate::deadline(Duration::from_secs(1));
            while !text.contains(&marker) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
                text = read();
            }
        }
        text.lines().filter(|l| !l.starts_with(MARKER_PREFIX)).fold(
            String::with_capacity(text.len()),
            |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            },
        )
    }

    /// Polls [`log`](Self::log) until it contains `needle`; whether it did within `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        process::wait_until(timeout, || self.log().contains(needle))
    }

    /// The full text of every message delivered so far (headers added by Postfix included:
    /// `Return-Path`, `Delivered-To`, `Received`), oldest first.
    pub fn delivered(&self) -> Vec<String> {
        let inbox = self.dir.join("mail/inbox");
        let mut files: Vec<(SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|sub| fs::read_dir(inbox.join(sub)).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, e.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| fs::read(path).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    /// Polls [`delivered`](Self::delivered) until it holds at least `n` messages or `timeout`
    /// passes; returns what it holds then (possibly fewer than `n`).
    pub fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = crate::deadline(timeout);
        loop {
            let messages = self.delivered();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of the log and of master's output, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for name in ["maillog", "master.out"] {
            let path = self.dir.join(name);
            let t = process::tail(&path, lines);
            if !t.trim().is_empty() {
                s.push_str(&format!("--- {} ---\n{t}\n", path.display()));
            }
        }
        if s.is_empty() {
            s.push_str("(no Postfix log yet)\n");
        }
        s
    }

    fn write_instance(
        &self,
        spec: &ReceiverSpec,
        accounts: &Accounts,
        discard: bool,
    ) -> Result<(), LabError> {
        let dir = &self.dir;
        let (postfix_uid, _) = accounts.postfix;
        let mkdir = |path: &Path, mode: u32, owner: Option<(u32, u32)>| -> Result<(), LabError> {
            fs::create_dir_all(path)
                .map_err(|e| LabError::io(format!("creating {}", path.display()), e))?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| LabError::io(format!("setting the mode of {}", path.display()), e))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| LabError::io(format!("chown {}", path.display()), e))?;
            }
            Ok(())
        };
        let conf = dir.join("conf");
        let queue = dir.join("queue");
        mkdir(&conf, 0o755, None)?;
        // The queue layout of Postfix's postfix-files.
        mkdir(&queue, 0o755, None)?;
        mkdir(&queue.join("pid"), 0o755, None)?;
        for sub in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace",
        ] {
            mkdir(&queue.join(sub), 0o700, Some(accounts.postfix))?;
        }
        mkdir(
            &queue.join("maildrop"),
            0o730,
            Some((postfix_uid, accounts.postdrop)),
        )?;
        mkdir(
            &queue.join("public"),
            0o710,
            Some((postfix_uid, accounts.postdrop)),
        )?;
        mkdir(&dir.join("data"), 0o700, Some(accounts.postfix))?;
        mkdir(&dir.join("mail"), 0o700, Some(accounts.mailbox))?;

        let pairs: Vec<(&str, &str)> = match &spec.tls {
            ReceiverTls::None => Vec::new(),
            ReceiverTls::Cert { chain_pem, key_pem } => {
                vec![(chain_pem.as_str(), key_pem.as_str())]
            }
            ReceiverTls::Several(certs) => certs
                .iter()
                .map(|c| (c.chain_pem.as_str(), c.key_pem.as_str()))
                .collect(),
        };
        let mut tls_files = Vec::new();
        for (i, (chain_pem, key_pem)) in pairs.iter().enumerate() {
            let path = conf.join(format!("tls{i}.pem"));
            let mut text = key_pem.trim_end().to_string();
            text.push('\n');
            text.push_str(chain_pem.trim_end());
            text.push('\n');
            write_file(&path, &text, 0o600)?;
            tls_files.push(path.display().to_string());
        }
        let tls_file = (!tls_files.is_empty()).then(|| PathBuf::from(tls_files.join(", ")));
        let mut main_cf = main_cf(dir, spec, self.addr, accounts.mailbox, tls_file.as_deref());
        if discard {
            main_cf.push_str("virtual_transport = discard\n");
        }
        write_file(&conf.join("main.cf"), &main_cf, 0o644)?;
        write_file(&conf.join("master.cf"), &master_cf(self.addr), 0o644)?;
        // Postfix reads a configuration file only once it is a second old (a guard against
        // half-written files: it polls every 300 ms); backdate ours so master starts at once.
        let past = SystemTime::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for name in ["main.cf", "master.cf"] {
            let path = conf.join(name);
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(past))
                .map_err(|e| LabError::io(format!("backdating {}", path.display()), e))?;
        }
        Ok(())
    }

    fn wait_greeting(&mut self, timeout: Duration) -> Result<(), LabError> {
        let deadline = crate::deadline(timeout);
        loop {
            if let Some(child) = self.master.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(LabError::Receiver {
                    addr: self.addr,
                    detail: format!("Postfix master exited during startup ({status})"),
                    log: self.log_tail(30),
                });
            }
            let last = match greeting(self.addr) {
                Ok(line) if line.starts_with("220") => return Ok(()),
                Ok(line) => format!("greeting {line:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LabError::Receiver {
                    addr: self.addr,
                    detail: format!("no 220 greeting within {timeout:?} (last: {last})"),
                    log: self.log_tail(30),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops everything and removes (or keeps) the directory. Idempotent.
    fn shutdown(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut master) = self.master.take() {
            process::terminate_groups(&[master.id()], Duration::from_secs(3));
            let _ = master.kill();
            let _ = master.wait();
        }
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.keep {
            if let Some(name) = self.dir.file_name() {
                let kept =
                    Path::new(process::LAB_ROOT).join(format!("kept-{}", name.to_string_lossy()));
                if fs::rename(&self.dir, &kept).is_ok() {
                    eprintln!(
                        "danemta-lab: kept the receiver directory at {}",
                        kept.display()
                    );
                }
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        self.dir = PathBuf::new();
        self.claim = None;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Log lines [`Receiver::log`] sends to synchronise with `postlogd`.
const MARKER_PREFIX: &str = "danemta-lab-log-sync ";

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), LabError> {
    fs::write(path, text).map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(format!("setting the mode of {}", path.display()), e))
}

/// Connects, reads the greeting line, says QUIT.
fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut w = stream;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}

/// The `master.cf` service name of an address: `127.0.30.1:25`, `[::1]:25`.
fn service_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

fn main_cf(
    dir: &Path,
    spec: &ReceiverSpec,
    addr: SocketAddr,
    mailbox: (u32, u32),
    tls_file: Option<&Path>,
) -> String {
    let d = dir.display();
    let hostname = &spec.hostname;
    let mydomain = match hostname.split_once('.') {
        Some((_, rest)) if !rest.is_empty() => rest,
        _ => hostname.as_str(),
    };
    let protocols = match addr.ip() {
        IpAddr::V4(_) => "ipv4",
        IpAddr::V6(_) => "ipv6",
    };
    let domains = spec.accept_domains.join(", ");
    let tls = match tls_file {
        Some(path) => format!(
            "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}\n",
            path.display()
        ),
        None => "smtpd_tls_security_level = none\n".to_string(),
    };
    format!(
        "# danemta-lab SMTP receiver {addr} ({hostname}); generated, see crates/lab/src/smtp.rs\n\
         compatibility_level = 3.6\n\
         queue_directory = {d}/queue\n\
         data_directory = {d}/data\n\
         mail_owner = postfix\n\
         setgid_group = postdrop\n\
         myhostname = {hostname}\n\
         mydomain = {mydomain}\n\
         myorigin = $myhostname\n\
         smtpd_banner = $myhostname ESMTP Postfix (danemta-lab)\n\
         inet_interfaces = loopback-only\n\
         inet_protocols = {protocols}\n\
         mynetworks = 127.0.0.0/8 [::1]/128\n\
         smtpd_peername_lookup = no\n\
         mydestination =\n\
         relay_domains =\n\
         local_recipient_maps =\n\
         alias_maps =\n\
         alias_database =\n\
         smtpd_relay_restrictions = reject_unauth_destination\n\
         smtpd_recipient_restrictions =\n\
         local_transport = error:5.1.1 this lab receiver has no local mailboxes\n\
         default_transport = error:5.7.1 this lab receiver does not relay\n\
         relay_transport = error:5.7.1 this lab receiver does not relay\n\
         virtual_mailbox_domains = {domains}\n\
         virtual_mailbox_base = {d}/mail\n\
         virtual_mailbox_maps = static:inbox/\n\
         virtual_uid_maps = static:{uid}\n\
         virtual_gid_maps = static:{gid}\n\
         virtual_minimum_uid = 1\n\
         notify_classes =\n\
         biff = no\n\
         append_dot_mydomain = no\n\
         maillog_file = {d}/maillog\n\
         maillog_file_prefixes = {d}\n\
         {tls}\
         smtpd_tls_loglevel = 1\n\
         smtpd_tls_received_header = yes\n\
         smtp_tls_security_level = none\n",
        uid = mailbox.0,
        gid = mailbox.1,
    )
}

/// Only what receiving and local (virtual) delivery need; no pickup, no SMTP client. Nothing is
/// chrooted (the instance lives in a plain directory).
fn master_cf(addr: SocketAddr) -> String {
    format!(
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
         error unix - - n - - error\n\
         retry unix - - n - - error\n\
         discard unix - - n - - discard\n\
         virtual unix - n n - - virtual\n\
         anvil unix - - n - 1 anvil\n\
         scache unix - - n - 1 scache\n\
         postlog unix-dgram n - n - 1 postlogd\n",
        listen = service_addr(addr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(is_plain_name("mx.dane.test"));
        assert!(!is_plain_name("a b"));
        assert!(!is_plain_name("a\nrelay_domains = *"));
        assert!(!is_plain_name(""));
        assert_eq!(
            service_addr("127.0.30.1:25".parse().expect("addr")),
            "127.0.30.1:25"
        );
        assert_eq!(
            service_addr("[::1]:2525".parse().expect("addr")),
            "[::1]:2525"
        );
    }

    #[test]
    fn config_has_no_tls_without_a_certificate() {
        let spec = ReceiverSpec::new("mx.a.test", &["a.test", "b.test"]);
        let addr = "127.0.30.9:25".parse().expect("addr");
        let text = main_cf(Path::new("/x"), &spec, addr, (65534, 65534), None);
        assert!(text.contains("smtpd_tls_security_level = none\n"));
        assert!(!text.contains("smtpd_tls_chain_files"));
        assert!(text.contains("virtual_mailbox_domains = a.test, b.test\n"));
        let text = main_cf(
            Path::new("/x"),
            &spec,
            addr,
            (65534, 65534),
            Some(Path::new("/x/conf/tls.pem")),
        );
        assert!(text.contains("smtpd_tls_chain_files = /x/conf/tls.pem\n"));
        assert!(master_cf(addr).starts_with("# service"));
        assert!(master_cf(addr).contains("\n127.0.30.9:25 inet n - n - - smtpd\n"));
    }
}
