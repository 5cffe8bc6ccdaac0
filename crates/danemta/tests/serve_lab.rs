//! `danemta serve` end to end: swaks submits to the relay daemon, which delivers through the
//! DNSSEC lab to real Postfix receivers (DANE-EE, DANE-TA, no DANE) or meets attackers
//! (STARTTLS stripped, a man in the middle, a bogus TLSA answer, a forged MX). Each outcome is
//! asserted from what the receivers and attackers saw, from the daemon's Postfix-style log and
//! from `danemta queue list --json`, and compared with what `danemta send` decides for the same
//! destination.
//!
//! One daemon serves most tests (a shared world, started on first use); the restart test and
//! the lifetime test run daemons of their own. Every daemon is stopped by a Drop guard, and a
//! watchdog shell kills the shared one when the test process exits (statics are never
//! dropped).

use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danemta_lab::pki::{TestCa, TestCert, tlsa_2_x_1, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, LabAddr, Mitm, Signing, StripStartTls, ZoneSpec};
use serde_json::Value;

/// Domains every receiver accepts (only routing decides who gets what). `reject.dane.test` is
/// not among them: its MX (the DANE-EE receiver) refuses it with `554 5.7.1`.
const DOMAINS: &[&str] = &[
    "ee.dane.test",
    "ta.dane.test",
    "nodane.test",
    "strip.dane.test",
    "mitm.dane.test",
    "forged-mx.dane.test",
    "bogus-tlsa.dane.test",
    "multi-fail.dane.test",
    "sender.dane.test",
];

/// The envelope sender of the tests: its domain's MX is `mbox`, which gets only DSNs.
const SENDER: &str = "alice@sender.dane.test";

/// How long to wait for anything asynchronous (deliveries, retries, DSNs).
const WAIT: Duration = Duration::from_secs(60);

struct World {
    lab: Lab,
    ee: Receiver,
    ta: Receiver,
    plain: Receiver,
    wrongname: Receiver,
    /// The sender's mailbox (sender.dane.test): DSNs land here.
    mbox: Receiver,
    strip: StripStartTls,
    mitm: Mitm,
    /// The daemon's default chain (leaf signed by a CA, CA included) and its SNI chain.
    relay_chain: TestCert,
    other_chain: TestCert,
    tls_files: [(PathBuf, PathBuf); 2],
    /// A client address inside `relay_networks`, and one outside.
    client_in: LabAddr,
    client_out: LabAddr,
}

fn zone(ip: IpAddr, tlsa: Option<&str>) -> String {
    let mut z = format!("@ MX 10 mx\nmx A {ip}\n");
    if let Some(t) = tlsa {
        z.push_str(&format!("_25._tcp.mx TLSA {t}\n"));
    }
    z
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let ca = TestCa::new("Lab DANE-TA CA").unwrap();
        let ee_cert = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
        let ta_cert = TestCert::ca_signed(&["mx.ta.dane.test"], &ca, true).unwrap();
        let wrong_cert = TestCert::ca_signed(&["other.example"], &ca, true).unwrap();
        let mbox_cert = TestCert::self_signed(&["mx.sender.dane.test"]).unwrap();
        let attacker = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
        let receiver = |name: &str, cert: Option<&TestCert>| {
            let spec = ReceiverSpec::new(name, DOMAINS);
            let spec = match cert {
                Some(c) => spec.with_tls(c),
                None => spec,
            };
            Receiver::start(spec).unwrap_or_else(|e| panic!("receiver {name}: {e}"))
        };
        let ee = receiver("mx.ee.dane.test", Some(&ee_cert));
        let ta = receiver("mx.ta.dane.test", Some(&ta_cert));
        let plain = receiver("mx.plain.test", None);
        let wrongname = receiver("other.example", Some(&wrong_cert));
        let mbox = receiver("mx.sender.dane.test", Some(&mbox_cert));
        let any = SocketAddr::from(([0, 0, 0, 0], 25));
        let strip = StripStartTls::start(any, ee.addr()).unwrap();
        let mitm = Mitm::start(any, ee.addr(), &attacker.chain_pem, &attacker.key_pem).unwrap();

        let ee311 = tlsa_3_1_1(&ee_cert);
        let ta201 = tlsa_2_x_1(&ca, 0);
        let ip = |a: SocketAddr| a.ip();
        let secure = |name: &str, records: String| ZoneSpec::secure(name, records);
        let zones = vec![
            secure("ee.dane.test", zone(ip(ee.addr()), Some(&ee311))),
            secure("ta.dane.test", zone(ip(ta.addr()), Some(&ta201))),
            secure("nodane.test", zone(ip(plain.addr()), None)),
            secure("strip.dane.test", zone(ip(strip.addr()), Some(&ee311))),
            secure("mitm.dane.test", zone(ip(mitm.addr()), Some(&ee311))),
            ZoneSpec::new(
                "forged-mx.dane.test",
                zone(ip(plain.addr()), None),
                Signing::ExpiredSignatures,
            ),
            ZoneSpec::new(
                "bogus-tlsa.dane.test",
                zone(ip(ee.addr()), Some(&ee311)),
                Signing::StripSignature {
                    owner: "_25._tcp.mx".into(),
                    rtype: "TLSA".into(),
                },
            ),
            secure(
                "multi-fail.dane.test",
                format!(
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n_25._tcp.mx1 TLSA {ta201}\n_25._tcp.mx2 TLSA {ee311}\n",
                    ip(wrongname.addr()),
                    ip(ee.addr())
                ),
            ),
            // The relay itself (`server.hostname`) is the best MX: the mail would loop.
            secure("loop.dane.test", "@ MX 10 relay.lab.test.\n".into()),
            secure("lab.test", format!("relay A {}\n", ip(plain.addr()))),
            // DANE-verified, but the receiver does not accept the domain: 554 5.7.1.
            secure("reject.dane.test", zone(ip(ee.addr()), Some(&ee311))),
            secure(
                "sender.dane.test",
                zone(ip(mbox.addr()), Some(&tlsa_3_1_1(&mbox_cert))),
            ),
        ];
        let lab = Lab::builder().zones(zones).start().expect("the DNSSEC lab");

        let relay_ca = TestCa::new("Relay Lab CA").unwrap();
        let relay_chain = TestCert::ca_signed(&["relay.lab.test"], &relay_ca, true).unwrap();
        let other_chain = TestCert::self_signed(&["other.lab.test"]).unwrap();
        let write_pair = |name: &str, c: &TestCert| {
            let cert = lab.dir().join(format!("{name}-chain.pem"));
            let key = lab.dir().join(format!("{name}-key.pem"));
            fs::write(&cert, &c.chain_pem).unwrap();
            fs::write(&key, &c.key_pem).unwrap();
            (cert, key)
        };
        let tls_files = [
            write_pair("relay", &relay_chain),
            write_pair("other", &other_chain),
        ];
        let client_in = lab.claim_addr().unwrap();
        let client_out = lab.claim_addr().unwrap();
        World {
            lab,
            ee,
            ta,
            plain,
            wrongname,
            mbox,
            strip,
            mitm,
            relay_chain,
            other_chain,
            tls_files,
            client_in,
            client_out,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The daemon

#[derive(Clone)]
struct Opts {
    lifetime: &'static str,
    /// In-process validation against the plain resolver instead of trusting the AD bit.
    validating: bool,
    accept_domains: &'static [&'static str],
}

struct Daemon {
    name: String,
    config: PathBuf,
    log: PathBuf,
    listen: SocketAddr,
    child: Option<Child>,
    watchdog: Option<Child>,
    _addr: LabAddr,
}

fn config_text(w: &World, listen: SocketAddr, queue: &Path, opts: &Opts) -> String {
    let [(c1, k1), (c2, k2)] = &w.tls_files;
    let dns = if opts.validating {
        format!(
            "resolver = \"validating@{}\"\ntrust_anchor = \"{}\"\n",
            w.lab.plain_resolver(),
            w.lab.trust_anchor_file().display()
        )
    } else {
        format!("resolver = \"trust-ad@{}\"\n", w.lab.validating_resolver())
    };
    let accept: Vec<String> = opts
        .accept_domains
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    format!(
        r#"[server]
hostname = "relay.lab.test"
relay_networks = ["{client_in}/32"]
accept_domains = [{accept}]
[[server.listen]]
address = "{listen}"
mode = "smtp"
[[server.tls]]
cert = "{c1}"
key = "{k1}"
[[server.tls]]
cert = "{c2}"
key = "{k2}"
[dns]
{dns}timeout = "5s"
[queue]
dir = "{queue}"
retry_first = "1s"
retry_max = "2s"
lifetime = "{lifetime}"
[delivery]
policy = "dane"
port = 25
[metrics]
listen = "{metrics}"
"#,
        client_in = w.client_in.ip(),
        accept = accept.join(", "),
        c1 = c1.display(),
        k1 = k1.display(),
        c2 = c2.display(),
        k2 = k2.display(),
        queue = queue.display(),
        lifetime = opts.lifetime,
        metrics = SocketAddr::new(listen.ip(), 9325),
    )
}

impl Daemon {
    /// Writes a config for a new daemon `name` (its own listen address and spool) and starts it.
    fn start(name: &str, opts: Opts) -> Daemon {
        let w = world();
        let addr = w.lab.claim_addr().unwrap();
        let listen = SocketAddr::new(IpAddr::V4(addr.ip()), 2525);
        let dir = w.lab.dir().join(format!("serve-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let queue = dir.join("queue");
        let config = dir.join("danemta.toml");
        fs::write(&config, config_text(w, listen, &queue, &opts)).unwrap();
        let mut d = Daemon {
            name: name.to_owned(),
            log: dir.join("serve.log"),
            config,
            listen,
            child: None,
            watchdog: None,
            _addr: addr,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "==== serve_lab: starting daemon {} ====", self.name).unwrap();
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
        let pid = child.id();
        // Kills the daemon when this test process is gone (a static is never dropped).
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.3; done; \
                 kill -TERM {pid} 2>/dev/null; sleep 5; kill -KILL {pid} 2>/dev/null",
                parent = std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.watchdog = Some(watchdog);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon {} exited during startup ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon {} does not listen on {} after 30 s:\n{}",
                    self.name,
                    self.listen,
                    self.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; SIGKILL after that.
    fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            sleep(Duration::from_millis(50));
        };
        if let Some(mut wd) = self.watchdog.take() {
            let _ = wd.kill();
            let _ = wd.wait();
        }
        status
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's log lines for `rcpt` (`…: to=<rcpt>, …`).
    fn lines_for(&self, rcpt: &str) -> Vec<String> {
        let needle = format!("to=<{rcpt}>");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    fn wait_line(&self, rcpt: &str, status: &str, timeout: Duration) -> String {
        let needle = format!("status={status}");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines_for(rcpt)
                .into_iter()
                .find(|l| l.contains(&needle))
            {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "no `to=<{rcpt}>, … {needle}` line in the log of daemon {} within {timeout:?}; \
                     its lines for {rcpt}: {:#?}\nqueue: {:#?}\nlog tail:\n{}",
                    self.name,
                    self.lines_for(rcpt),
                    self.queue(),
                    self.tail(40)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn queue_cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("queue")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// `danemta queue list --json`, one object per message.
    fn queue(&self) -> Vec<Value> {
        let out = self.queue_cmd(&["list", "--json"]);
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

    /// The queued message with recipient `rcpt`, and that recipient's object.
    fn queued(&self, rcpt: &str) -> Option<(Value, Value)> {
        self.queue().into_iter().find_map(|m| {
            let r = m["recipients"]
                .as_array()?
                .iter()
                .find(|r| r["address"] == rcpt)?
                .clone();
            Some((m, r))
        })
    }

    /// Waits until `rcpt` is queued as deferred after at least `min_attempts` attempts.
    fn wait_deferred(&self, rcpt: &str, min_attempts: u64) -> (Value, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((m, r)) = self.queued(rcpt)
                && m["queue_name"] == "deferred"
                && r["attempts"].as_u64().unwrap_or(0) >= min_attempts
                && r["delay_reason"].as_str().is_some_and(|s| !s.is_empty())
            {
                return (m, r);
            }
            if Instant::now() > deadline {
                panic!(
                    "{rcpt} not deferred (attempts >= {min_attempts}, a delay_reason) in daemon {}'s queue \
                     within {WAIT:?}: {:#?}\nlog lines: {:#?}\nlog tail:\n{}",
                    self.name,
                    self.queued(rcpt),
                    self.lines_for(rcpt),
                    self.tail(40)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Waits until no queued message has `rcpt` among its recipients.
    fn wait_gone(&self, rcpt: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(q) = self.queued(rcpt) {
            if Instant::now() > deadline {
                panic!(
                    "{rcpt} is still queued in daemon {} after {timeout:?}: {q:#?}\nlog lines: {:#?}",
                    self.name,
                    self.lines_for(rcpt)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The daemon most tests share: relays for `client_in`, accepts `ee.dane.test` from anyone,
/// retries after 1-2 s, and gives up only after an hour (no test waits that long).
fn shared() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    DAEMON.get_or_init(|| {
        Daemon::start(
            "shared",
            Opts {
                lifetime: "1h",
                validating: false,
                accept_domains: &["ee.dane.test"],
            },
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Clients

struct Swaks {
    code: i32,
    transcript: String,
}

impl Swaks {
    fn queue_id(&self) -> Option<String> {
        let i = self.transcript.find("queued as ")?;
        Some(
            self.transcript[i + 10..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect(),
        )
    }
}

/// swaks from `local` to the daemon; `extra` e.g. `--quit-after RCPT`.
fn swaks(d: &Daemon, local: IpAddr, from: &str, to: &str, body: &str, extra: &[&str]) -> Swaks {
    let out = Command::new("swaks")
        .args(["--server", &d.listen.to_string()])
        .args(["--local-interface", &local.to_string()])
        .args(["--from", from, "--to", to])
        .args(["--ehlo", "client.lab.test"])
        .args(["--header", &format!("Subject: serve_lab {to}")])
        .args(["--body", body])
        .args(["--timeout", "30"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Swaks {
        code: out.status.code().unwrap_or(-1),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn body(rcpt: &str) -> String {
    format!("hello {rcpt} via serve")
}

/// Submits a message for `rcpt` from a relay client; asserts the daemon took it (250 at the
/// end of data); returns swaks' transcript.
fn submit(d: &Daemon, from: &str, rcpt: &str) -> Swaks {
    let s = swaks(
        d,
        IpAddr::V4(world().client_in.ip()),
        from,
        rcpt,
        &body(rcpt),
        &[],
    );
    assert_eq!(
        s.code,
        0,
        "swaks to daemon {} for {rcpt}: {}\nlog tail:\n{}",
        d.name,
        s.transcript,
        d.tail(30)
    );
    s
}

struct Sent {
    json: Value,
    stderr: String,
}

/// `danemta send` for `rcpt` with the resolver the shared daemon uses.
fn send(rcpt: &str) -> Sent {
    let w = world();
    let mut child = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["send", "--from", "a@client.test", "--to", rcpt, "--json"])
        .args(["--smtp-timeout", "10", "--helo", "client.test"])
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("Subject: twin\n\nhello {rcpt} via send\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Sent {
        json: serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}")),
        stderr,
    }
}

/// The messages at `r` whose body has `needle`.
fn at(r: &Receiver, needle: &str) -> Vec<String> {
    r.delivered()
        .into_iter()
        .filter(|m| m.contains(needle))
        .collect()
}

fn wait_at(r: &Receiver, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = at(r, needle).into_iter().next() {
            return Some(m);
        }
        if Instant::now() > deadline {
            return None;
        }
        sleep(Duration::from_millis(200));
    }
}

/// No receiver but the sender's mailbox (where a DSN may quote the message) got `needle`.
fn nobody_got(needle: &str) {
    let w = world();
    for r in [&w.ee, &w.ta, &w.plain, &w.wrongname] {
        assert!(
            at(r, needle).is_empty(),
            "{} received {needle:?}",
            r.hostname()
        );
    }
}

fn security_of(v: &Value) -> String {
    v.as_str().unwrap_or("none").to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Scenarios: the daemon decides as `send` does

enum Want {
    Sent {
        host: &'static str,
        security: &'static str,
    },
    /// Deferred, with this phrase in the daemon's `delay_reason` and in `send`'s reply.
    Deferred(&'static str),
}

/// Submits `serve-LOCAL@DOMAIN` through the shared daemon and sends `send-LOCAL@DOMAIN` with
/// `danemta send`; asserts both end as `want`. Returns the daemon's queue entry for a
/// deferral.
fn scenario(domain: &str, want: Want, receiver: Option<&Receiver>) -> Option<(Value, Value)> {
    scenario_with(domain, want, receiver, |_| {})
}

/// [`scenario`], calling `after_daemon` with the daemon's queue entry once it deferred (before
/// `send` runs).
fn scenario_with(
    domain: &str,
    want: Want,
    receiver: Option<&Receiver>,
    after_daemon: impl FnOnce(&Value),
) -> Option<(Value, Value)> {
    let d = shared();
    let rcpt = format!("serve@{domain}");
    let s = submit(d, SENDER, &rcpt);
    let needle = body(&rcpt);
    match want {
        Want::Sent { host, security } => {
            let r = receiver.unwrap();
            let m = wait_at(r, &needle, WAIT).unwrap_or_else(|| {
                panic!(
                    "{} did not get {rcpt} within {WAIT:?}; daemon lines: {:#?}\nqueue: {:#?}\n\
                     swaks: {}\nlog tail:\n{}",
                    r.hostname(),
                    d.lines_for(&rcpt),
                    d.queued(&rcpt),
                    s.transcript,
                    d.tail(40)
                )
            });
            let line = d.wait_line(&rcpt, "sent", Duration::from_secs(15));
            assert!(line.contains(&format!("relay={host}[")), "{line}");
            assert!(line.contains("dsn=2."), "{line}");
            let log = d.log();
            let verified = format!("Verified TLS connection established to {host}[");
            if security == "verified" {
                assert!(log.contains(&verified), "no `{verified}` in:\n{log}");
            } else {
                assert!(!log.contains(&verified), "{log}");
            }
            assert_eq!(
                m.contains("(using TLSv1."),
                security != "plaintext",
                "the receiver's view of TLS for a {security} delivery:\n{m}"
            );
            // The Received: line the daemon added names it and the queue id of the log line.
            let qid = queue_id_of(&line);
            let received = unfold(&m);
            assert!(
                received.contains(&format!("by relay.lab.test with ESMTP id {qid}")),
                "a Received: header by relay.lab.test with id {qid}:\n{m}"
            );
            // One connection line per connection: the receiver's reply (`queued as …`) is in
            // exactly one line besides the recipient's status line.
            let rid = line
                .split("queued as ")
                .nth(1)
                .map(|t| t.trim_end_matches(')').to_owned())
                .unwrap_or_else(|| panic!("the receiver's queue id in {line}"));
            let per_connection: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&format!("queued as {rid}")) && !l.contains("status="))
                .collect();
            assert_eq!(
                per_connection.len(),
                1,
                "one connection, one `… connection … to {host}` line: {per_connection:#?}"
            );
            if let Some(id) = s.queue_id().filter(|id| id.len() == 24) {
                assert!(
                    line.starts_with(&id) || line.contains(&format!("{id}:")),
                    "{id}: {line}"
                );
            }
            d.wait_gone(&rcpt, Duration::from_secs(15));
            assert!(
                d.lines_for(&rcpt)
                    .iter()
                    .all(|l| !l.contains("status=bounced"))
            );
            assert_eq!(at(r, &needle).len(), 1, "delivered once");
            // The twin through `send`.
            let twin = format!("send@{domain}");
            let t = send(&twin);
            assert_eq!(t.json["outcome"], "delivered", "{:#}\n{}", t.json, t.stderr);
            let last = t.json["attempts"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(last["security"], security, "send: {:#}", t.json);
            assert_eq!(last["host"], host, "send: {:#}", t.json);
            None
        }
        Want::Deferred(phrase) => {
            let (m, r) = d.wait_deferred(&rcpt, 1);
            let line = d.wait_line(&rcpt, "deferred", Duration::from_secs(10));
            assert!(line.contains("dsn=4."), "{line}");
            let lines = d.lines_for(&rcpt);
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains("status=sent") && !l.contains("status=bounced")),
                "{lines:#?}"
            );
            nobody_got(&needle);
            after_daemon(&r);
            let twin = format!("send@{domain}");
            let t = send(&twin);
            assert_eq!(t.json["outcome"], "deferred", "{:#}\n{}", t.json, t.stderr);
            let reply = t.json["recipients"][0]["reply"].as_str().unwrap_or("");
            assert!(reply.contains(phrase), "send's reply: {reply}");
            let reason = r["delay_reason"].as_str().unwrap();
            assert!(
                reason.contains(phrase),
                "the daemon's delay_reason {reason:?} vs send's reply {reply:?}"
            );
            let send_security = t.json["attempts"]
                .as_array()
                .unwrap()
                .last()
                .map(|a| security_of(&a["security"]))
                .unwrap_or_else(|| "none".into());
            assert_eq!(
                security_of(&r["security"]),
                send_security,
                "the daemon's last attempt vs send's: queue {r:#}\nsend {:#}",
                t.json
            );
            // Still deferred afterwards: a DANE failure is never a bounce before lifetime.
            sleep(Duration::from_secs(3));
            let (_, again) = d.queued(&rcpt).expect("still queued");
            assert!(again["attempts"].as_u64() >= r["attempts"].as_u64());
            nobody_got(&needle);
            eprintln!(
                "{rcpt}: daemon delay_reason {:?} (security {:?}); send reply {:?}",
                r["delay_reason"], r["security"], t.json["recipients"][0]["reply"]
            );
            Some((m, r))
        }
    }
}

#[test]
fn dane_ee_is_delivered_verified() {
    let w = world();
    scenario(
        "ee.dane.test",
        Want::Sent {
            host: "mx.ee.dane.test",
            security: "verified",
        },
        Some(&w.ee),
    );
}

#[test]
fn dane_ta_is_delivered_verified() {
    let w = world();
    scenario(
        "ta.dane.test",
        Want::Sent {
            host: "mx.ta.dane.test",
            security: "verified",
        },
        Some(&w.ta),
    );
}

#[test]
fn no_dane_is_delivered_opportunistically() {
    let w = world();
    scenario(
        "nodane.test",
        Want::Sent {
            host: "mx.nodane.test",
            security: "plaintext",
        },
        Some(&w.plain),
    );
}

#[test]
fn the_best_mx_failing_dane_falls_through_to_the_second() {
    let w = world();
    scenario(
        "multi-fail.dane.test",
        Want::Sent {
            host: "mx2.multi-fail.dane.test",
            security: "verified",
        },
        Some(&w.ee),
    );
    assert!(at(&w.wrongname, "hello serve@multi-fail.dane.test").is_empty());
}

#[test]
fn stripped_starttls_on_a_dane_domain_is_deferred_and_the_attacker_sees_no_mail() {
    let w = world();
    scenario(
        "strip.dane.test",
        Want::Deferred("STARTTLS is required but not offered"),
        None,
    )
    .unwrap();
    assert!(
        w.strip.connections() > 0,
        "the daemon did connect through the attacker"
    );
    assert!(
        !w.strip.client_sent_mail(),
        "MAIL/RCPT/DATA passed the attacker: {}",
        w.strip.transcript()
    );
    assert!(!w.strip.transcript().contains("hello serve@strip"));
}

#[test]
fn a_mitm_certificate_on_a_dane_domain_is_deferred() {
    let w = world();
    let (_, r) = scenario_with(
        "mitm.dane.test",
        Want::Deferred("DANE authentication failed"),
        None,
        |_| {
            // The daemon's own attempt reached the attacker's TLS (counted before `send` runs).
            assert!(
                w.mitm.client_hellos() > 0,
                "the daemon tried TLS with the attacker"
            );
            assert!(
                w.mitm
                    .server_names()
                    .contains(&Some("mx.mitm.dane.test".to_owned())),
                "SNI is the TLSA base domain: {:?}",
                w.mitm.server_names()
            );
        },
    )
    .unwrap();
    assert!(!w.mitm.client_sent_mail(), "{}", w.mitm.transcript());
    eprintln!("mitm delay_reason: {}", r["delay_reason"]);
}

#[test]
fn a_bogus_tlsa_answer_is_deferred_without_connecting() {
    let w = world();
    let before = at(&w.ee, "hello serve@bogus-tlsa").len();
    scenario(
        "bogus-tlsa.dane.test",
        Want::Deferred("TLSA lookup for _25._tcp.mx.bogus-tlsa.dane.test is indeterminate"),
        None,
    );
    assert_eq!(at(&w.ee, "hello serve@bogus-tlsa").len(), before);
}

/// A domain whose best MX is this relay (an `accept_domains` entry without a `next_hop`) is
/// deferred as looping back (RFC 5321 §5.1), never sent to its MX, i.e. back to us.
#[test]
fn mail_whose_best_mx_is_this_relay_is_deferred_as_a_loop() {
    let d = shared();
    let rcpt = "serve@loop.dane.test";
    submit(d, SENDER, rcpt);
    let (_, r) = d.wait_deferred(rcpt, 1);
    let reason = r["delay_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("mail for loop.dane.test loops back to myself"),
        "{r:#}"
    );
    nobody_got(&body(rcpt));
}

#[test]
fn a_forged_mx_answer_is_deferred() {
    scenario(
        "forged-mx.dane.test",
        Want::Deferred("MX lookup for forged-mx.dane.test is indeterminate"),
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// 2. DSNs

/// The queue id at the start of a `QUEUEID: to=<…>, …` line (after any timestamp and level).
fn queue_id_of(line: &str) -> String {
    let head = &line[..line
        .find(": to=<")
        .unwrap_or_else(|| panic!("not a recipient line: {line}"))];
    head.rsplit(' ').next().unwrap().to_owned()
}

/// Unfolds header continuation lines and normalises line ends.
fn unfold(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ")
}

/// The DSNs at the sender's mailbox that name `rcpt`.
fn dsns_for(rcpt: &str) -> Vec<String> {
    world()
        .mbox
        .delivered()
        .into_iter()
        .map(|m| unfold(&m))
        .filter(|m| m.to_ascii_lowercase().contains(&rcpt.to_ascii_lowercase()))
        .collect()
}

fn wait_dsn(d: &Daemon, rcpt: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = dsns_for(rcpt).into_iter().next() {
            return m;
        }
        if Instant::now() > deadline {
            panic!(
                "no DSN for {rcpt} at {SENDER} within {WAIT:?}; daemon lines for {rcpt}: {:#?}\n\
                 lines for {SENDER}: {:#?}\nqueue: {:#?}\nlog tail:\n{}",
                d.lines_for(rcpt),
                d.lines_for(SENDER),
                d.queue(),
                d.tail(40)
            );
        }
        sleep(Duration::from_millis(250));
    }
}

/// The value of the first `Field:` line (case-insensitive name) in `text`.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().to_ascii_lowercase() == lower).then(|| v.trim())
    })
}

fn assert_dsn_shape(dsn: &str, rcpt: &str) {
    let lower = dsn.to_ascii_lowercase();
    assert!(lower.contains("multipart/report"), "{dsn}");
    assert!(
        lower.contains("report-type=delivery-status")
            || lower.contains("report-type=\"delivery-status\""),
        "{dsn}"
    );
    assert!(lower.contains("message/delivery-status"), "{dsn}");
    assert!(
        lower.contains("return-path: <>"),
        "a DSN comes from the null sender: {dsn}"
    );
    assert!(
        lower.contains(&format!("delivered-to: {}", SENDER)),
        "{dsn}"
    );
    let reporting = field(dsn, "Reporting-MTA").unwrap_or_else(|| panic!("Reporting-MTA: {dsn}"));
    assert!(
        reporting.to_ascii_lowercase().contains("relay.lab.test"),
        "{reporting}"
    );
    let fr = field(dsn, "Final-Recipient").unwrap_or_else(|| panic!("Final-Recipient: {dsn}"));
    assert!(fr.to_ascii_lowercase().starts_with("rfc822"), "{fr}");
    assert!(fr.to_ascii_lowercase().contains(rcpt), "{fr}");
    assert_eq!(
        field(dsn, "Action").map(str::to_ascii_lowercase).as_deref(),
        Some("failed"),
        "{dsn}"
    );
}

#[test]
fn a_5xx_reply_bounces_with_a_dsn_to_the_sender() {
    let d = shared();
    let rcpt = "bounce-5xx@reject.dane.test";
    submit(d, SENDER, rcpt);
    let line = d.wait_line(rcpt, "bounced", WAIT);
    assert!(line.contains("dsn=5."), "{line}");
    assert!(line.contains("relay=mx.reject.dane.test["), "{line}");
    let dsn = wait_dsn(d, rcpt);
    assert_dsn_shape(&dsn, rcpt);
    let status = field(&dsn, "Status").unwrap();
    assert!(status.starts_with("5."), "Status: {status}\n{dsn}");
    let diag = field(&dsn, "Diagnostic-Code").unwrap_or_else(|| panic!("Diagnostic-Code: {dsn}"));
    assert!(diag.to_ascii_lowercase().starts_with("smtp;"), "{diag}");
    assert!(
        diag.contains("554") && diag.contains("Relay access denied"),
        "the receiver's reply in the DSN: {diag}"
    );
    nobody_got(&body(rcpt));
    d.wait_gone(rcpt, Duration::from_secs(15));
    // Exactly one DSN, and the DSN itself was delivered (it leaves the queue too).
    sleep(Duration::from_secs(3));
    assert_eq!(dsns_for(rcpt).len(), 1, "one DSN");
    let stuck: Vec<Value> = d
        .queue()
        .into_iter()
        .filter(|m| m["sender"] == "" && m.to_string().contains(SENDER))
        .collect();
    assert!(stuck.is_empty(), "the DSN is still queued: {stuck:#?}");
}

#[test]
fn a_deferral_past_lifetime_bounces_with_a_dsn() {
    let lifetime = 12;
    let mut d = Daemon::start(
        "lifetime",
        Opts {
            lifetime: "12s",
            validating: false,
            accept_domains: &[],
        },
    );
    let w = world();
    let rcpt = "expire@strip.dane.test";
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    submit(&d, SENDER, rcpt);
    let (m, _) = d.wait_deferred(rcpt, 1);
    let arrival = m["arrival_time"].as_i64().expect("arrival_time");
    assert!(
        (arrival - t0).abs() <= 2,
        "arrival_time {arrival} vs now {t0}"
    );
    let id = m["queue_id"].as_str().unwrap().to_owned();
    // Until the lifetime is over: retried, never bounced, never delivered.
    let mut max_attempts = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let queued = d.queued(rcpt);
        let bounced = d
            .lines_for(rcpt)
            .iter()
            .any(|l| l.contains("status=bounced"));
        if now < arrival + lifetime - 1 {
            assert!(
                !bounced,
                "bounced before lifetime: {:#?}",
                d.lines_for(rcpt)
            );
            assert!(dsns_for(rcpt).is_empty(), "a DSN before lifetime");
            assert!(
                queued.is_some(),
                "left the queue before lifetime: {:#?}",
                d.lines_for(rcpt)
            );
        }
        if let Some((_, r)) = &queued {
            max_attempts = max_attempts.max(r["attempts"].as_u64().unwrap_or(0));
        } else {
            assert!(
                now >= arrival + lifetime - 1,
                "gone after {}s: {:#?}",
                now - arrival,
                d.lines_for(rcpt)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still queued after {WAIT:?}: {queued:#?}"
        );
        sleep(Duration::from_millis(300));
    }
    assert!(
        max_attempts >= 2,
        "retried before expiry: {max_attempts} attempts"
    );
    let dsn = wait_dsn(&d, rcpt);
    assert_dsn_shape(&dsn, rcpt);
    let status = field(&dsn, "Status").unwrap();
    assert!(
        status.starts_with("4.") || status.ends_with(".4.7"),
        "Status of an expired deferral: {status}\n{dsn}"
    );
    assert!(!w.strip.client_sent_mail(), "{}", w.strip.transcript());
    nobody_got(&body(rcpt));
    let lines = d.lines_for(rcpt);
    assert!(
        lines.iter().any(|l| l.contains("status=bounced")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("status=sent")),
        "{lines:#?}"
    );
    assert!(
        d.queue().iter().all(|m| m["queue_id"] != id.as_str()),
        "the message left the queue"
    );
    assert_eq!(
        d.stop(Duration::from_secs(30)).map(|s| s.code()),
        Some(Some(0))
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Never an open relay

#[test]
fn a_client_outside_relay_networks_cannot_relay() {
    let w = world();
    let d = shared();
    let outside = IpAddr::V4(w.client_out.ip());
    let rcpt = "openrelay@nodane.test";
    let s = swaks(d, outside, "mallory@client.test", rcpt, &body(rcpt), &[]);
    assert_ne!(s.code, 0, "{}", s.transcript);
    assert!(
        s.transcript.contains("<** 554 5.7.1"),
        "554 5.7.1 at RCPT: {}",
        s.transcript
    );
    // Contrast: the same client may send to an accepted domain (an inbound gateway) …
    let inbound = "inbound@ee.dane.test";
    let s = swaks(
        d,
        outside,
        "mallory@client.test",
        inbound,
        &body(inbound),
        &[],
    );
    assert_eq!(s.code, 0, "{}", s.transcript);
    assert!(
        wait_at(&w.ee, &body(inbound), WAIT).is_some(),
        "{}",
        d.tail(30)
    );
    // … and a relay client may send to the refused domain (RCPT accepted, then QUIT).
    let s = swaks(
        d,
        IpAddr::V4(w.client_in.ip()),
        SENDER,
        "openrelay-inside@nodane.test",
        "x",
        &["--quit-after", "RCPT"],
    );
    assert_eq!(s.code, 0, "{}", s.transcript);
    sleep(Duration::from_secs(2));
    assert!(d.queued(rcpt).is_none(), "{:#?}", d.queue());
    assert!(
        d.queue()
            .iter()
            .all(|m| m["sender"] != "mallory@client.test"),
        "{:#?}",
        d.queue()
    );
    assert!(d.lines_for(rcpt).is_empty(), "{:#?}", d.lines_for(rcpt));
    nobody_got(&body(rcpt));
}

#[test]
fn routing_tricks_from_outside_are_refused() {
    let w = world();
    let d = shared();
    let outside = IpAddr::V4(w.client_out.ip());
    for rcpt in [
        "u%nodane.test@ee.dane.test",
        "nodane.test!u@ee.dane.test",
        "@ee.dane.test:u@nodane.test",
    ] {
        let s = swaks(
            d,
            outside,
            "mallory@client.test",
            rcpt,
            "x",
            &["--quit-after", "RCPT"],
        );
        assert!(
            s.transcript.contains("<** 5"),
            "{rcpt} from outside relay_networks must be refused at RCPT: {}",
            s.transcript
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. SNI

/// The certificates `openssl s_client` got after STARTTLS, PEM blocks in order.
fn served_chain(d: &Daemon, sni: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20",
        "openssl",
        "s_client",
        "-starttls",
        "smtp",
        "-showcerts",
    ])
    .args(["-name", "client.lab.test"])
    .args(["-connect", &d.listen.to_string()]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let blocks = pem_blocks(&text);
    assert!(
        !blocks.is_empty(),
        "no certificate from STARTTLS (SNI {sni:?}): {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    blocks
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for l in text.lines() {
        let l = l.trim();
        if l == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if l == "-----END CERTIFICATE-----" {
            out.extend(cur.take());
        } else if let Some(c) = cur.as_mut() {
            c.push_str(l);
        }
    }
    out
}

#[test]
fn starttls_chooses_the_chain_by_sni_and_never_requires_it() {
    let w = world();
    let d = shared();
    let relay = pem_blocks(&w.relay_chain.chain_pem);
    let other = pem_blocks(&w.other_chain.chain_pem);
    assert_eq!(relay.len(), 2);
    assert_eq!(
        served_chain(d, Some("other.lab.test")),
        other,
        "SNI other.lab.test"
    );
    assert_eq!(
        served_chain(d, None),
        relay,
        "no SNI: the default chain, CA included"
    );
    assert_eq!(
        served_chain(d, Some("relay.lab.test")),
        relay,
        "SNI relay.lab.test"
    );
    assert_eq!(
        served_chain(d, Some("unknown.lab.test")),
        relay,
        "an SNI name matching no chain: the default"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Restart

#[test]
fn a_restart_keeps_the_queue_and_delivers_nothing_twice() {
    let w = world();
    let mut d = Daemon::start(
        "restart",
        Opts {
            lifetime: "1h",
            validating: true,
            accept_domains: &[],
        },
    );
    let deferring = [
        "restart-1@bogus-tlsa.dane.test",
        "restart-2@bogus-tlsa.dane.test",
    ];
    let good = "restart-good@ee.dane.test";
    for r in deferring {
        submit(&d, SENDER, r);
    }
    submit(&d, SENDER, good);
    assert!(
        wait_at(&w.ee, &body(good), WAIT).is_some(),
        "{}",
        d.tail(40)
    );
    d.wait_line(good, "sent", Duration::from_secs(15));
    assert!(
        d.log()
            .contains("Verified TLS connection established to mx.ee.dane.test["),
        "verified through the in-process validating resolver: {}",
        d.tail(40)
    );
    let mut ids = Vec::new();
    for r in deferring {
        let (m, _) = d.wait_deferred(r, 1);
        ids.push(m["queue_id"].as_str().unwrap().to_owned());
    }
    d.wait_gone(good, Duration::from_secs(15));
    // A message in flight at SIGTERM: finished or requeued, never lost, never doubled.
    let inflight = "restart-inflight@ee.dane.test";
    submit(&d, SENDER, inflight);
    let status = d.stop(Duration::from_secs(30));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "SIGTERM: exit 0 within 30 s\n{}",
        d.tail(40)
    );
    // The spool, read while the daemon is down: the same ids, and the attempts made so far.
    let down = d.queue();
    let mut attempts = Vec::new();
    for (r, id) in deferring.iter().zip(&ids) {
        let m = down
            .iter()
            .find(|m| m["queue_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} ({r}) not listed after SIGTERM: {down:#?}"));
        let rv = m["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["address"] == *r)
            .unwrap_or_else(|| panic!("{r} not in {m:#}"));
        attempts.push(rv["attempts"].as_u64().unwrap());
    }
    d.spawn();
    // Picked up again: retried after the restart, same ids.
    let deadline = Instant::now() + WAIT;
    for (r, (id, before)) in deferring.iter().zip(ids.iter().zip(&attempts)) {
        loop {
            let (m, rv) = d
                .queued(r)
                .unwrap_or_else(|| panic!("{r} lost after restart: {}", d.tail(40)));
            assert_eq!(m["queue_id"].as_str(), Some(id.as_str()), "{r} kept its id");
            if rv["attempts"].as_u64().unwrap() > *before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{r} not retried after restart (attempts {before}): {}",
                d.tail(40)
            );
            sleep(Duration::from_millis(300));
        }
    }
    assert!(
        wait_at(&w.ee, &body(inflight), WAIT).is_some(),
        "the in-flight message was lost: {}",
        d.tail(40)
    );
    d.wait_gone(inflight, Duration::from_secs(15));
    sleep(Duration::from_secs(3));
    assert_eq!(at(&w.ee, &body(good)).len(), 1, "delivered exactly once");
    assert_eq!(
        at(&w.ee, &body(inflight)).len(),
        1,
        "in-flight delivered exactly once"
    );
    assert_eq!(
        d.queue()
            .iter()
            .filter(|m| ids.iter().any(|id| m["queue_id"] == id.as_str()))
            .count(),
        2
    );
    assert_eq!(d.queue().len(), 2, "nothing else queued: {:#?}", d.queue());
}

// ---------------------------------------------------------------------------------------------
// 6. The null sender

#[test]
fn no_dsn_for_the_null_sender() {
    let d = shared();
    let rcpt = "null-5xx@reject.dane.test";
    let s = submit(d, "<>", rcpt);
    assert!(s.transcript.contains("MAIL FROM:<>"), "{}", s.transcript);
    let line = d.wait_line(rcpt, "bounced", WAIT);
    assert!(line.contains("dsn=5."), "{line}");
    d.wait_gone(rcpt, Duration::from_secs(15));
    assert!(
        d.lines_for(rcpt)
            .iter()
            .any(|l| l.to_ascii_lowercase().contains("dropped")),
        "a log line says the bounce is dropped: {:#?}",
        d.lines_for(rcpt)
    );
    // Give a DSN time to be queued and tried.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for m in d.queue() {
            for r in m["recipients"].as_array().unwrap() {
                let a = r["address"].as_str().unwrap_or("");
                assert!(
                    a.contains('@') && a != "<>",
                    "a message to {a:?} was queued: {m:#}"
                );
            }
            assert!(
                !m.to_string().contains("null-5xx"),
                "something about the bounced null-sender message is queued: {m:#}"
            );
        }
        sleep(Duration::from_millis(250));
    }
    assert!(dsns_for(rcpt).is_empty(), "a DSN reached {SENDER}");
    assert!(!d.log().contains("to=<>"), "{}", d.tail(40));
    nobody_got(&body(rcpt));
}

// ---------------------------------------------------------------------------------------------
// 7. --check-config

#[test]
fn check_config_names_the_file_and_the_key() {
    let w = world();
    let dir = w.lab.dir().join("serve-check");
    fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    let listen: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let opts = Opts {
        lifetime: "1h",
        validating: false,
        accept_domains: &[],
    };
    let text = config_text(w, listen, &dir.join("queue"), &opts);
    fs::write(&good, &text).unwrap();
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_danemta"))
            .args(["serve", "--config"])
            .arg(path)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = check(&good);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("relay.lab.test"), "effective settings: {all}");
    assert!(
        all.contains(&w.client_in.ip().to_string()),
        "effective settings: {all}"
    );

    for (name, bad, key) in [
        (
            "unknown-key.toml",
            text.replace("hostname = ", "frobnicate = true\nhostname = "),
            "frobnicate",
        ),
        (
            "bad-value.toml",
            text.replace("retry_first = \"1s\"", "retry_first = \"soon\""),
            "retry_first",
        ),
    ] {
        let path = dir.join(name);
        fs::write(&path, bad).unwrap();
        let out = check(&path);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{name}: {all}");
        assert!(
            all.contains(&path.display().to_string()),
            "{name}: the file in {all}"
        );
        assert!(all.contains(key), "{name}: the key in {all}");
    }
}
