//! `danemta serve` over loopback, without the DNS lab: `[[policy]]` entries route
//! `example.test` to `[127.0.0.1]:PORT`, where an in-process SMTP sink (the smtp crate's
//! server behind relay's accept loop) records what it gets. swaks submits, openssl checks the
//! daemon's self-signed certificate, and the daemon's stderr, its `/metrics` and what the
//! sinks received are the evidence.
//!
//! Covered: SIGHUP reloads the policy table (and refuses a broken file, keeping the running
//! one), SIGTERM exits 0; JSON logs carry the delivery fields; a submission listener wants
//! AUTH, and AUTH only after STARTTLS; the metrics count sessions, acceptances and
//! deliveries; a second daemon on the same queue is refused; sendmail from a user who cannot
//! write the spool goes through the daemon.
//!
//! Every daemon is stopped by a Drop guard (SIGTERM, then SIGKILL); every sink thread stops
//! when its guard is dropped.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use smtp::HeloName;
use smtp::reply::Reply;
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction};

/// How long to wait for anything asynchronous (a delivery, a log line).
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers: temporary directories, ports, waiting

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "danemta-serve-daemon-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A loopback address whose port was free a moment ago.
fn free_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `done` every 50 ms for up to `limit`.
fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    done()
}

// ---------------------------------------------------------------------------------------------
// The SMTP sink

/// One received message: MAIL FROM, RCPT TOs, content.
#[derive(Clone, Debug)]
struct Got {
    from: String,
    to: Vec<String>,
    body: String,
}

type Inbox = Arc<Mutex<Vec<Got>>>;

/// Accepts every recipient and records every message.
struct Recorder {
    inbox: Inbox,
}

impl Acceptor for Recorder {
    async fn rcpt(&self, _: &Client, _: &MailFrom, _: &RcptTo) -> Result<(), Reply> {
        Ok(())
    }

    async fn message(&self, _: &Client, t: &Transaction, body: Vec<u8>) -> Result<QueueId, Reply> {
        self.inbox.lock().unwrap().push(Got {
            from: t.mail.sender.clone(),
            to: t.rcpts.iter().map(|r| r.recipient.clone()).collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        Ok(QueueId("sink".into()))
    }
}

/// An SMTP sink on 127.0.0.1 (no TLS), run by a thread of its own with its own runtime, so
/// that the tests can block freely.
struct Sink {
    addr: SocketAddr,
    inbox: Inbox,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let std_listener = StdListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let inbox = Inbox::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorder = Recorder {
            inbox: inbox.clone(),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let mut config = smtp::server::Config::new(HeloName::new("sink.test").unwrap());
                config.timeouts = smtp::server::Timeouts::uniform(Duration::from_secs(10));
                let server = Arc::new(Server::new(config, Arc::new(recorder)));
                tokio::select! {
                    _ = relay::listener::serve_listener(listener, server, relay::listener::ConnectionLimits::overall(10), "smtp") => {}
                    _ = stopped => {}
                }
            });
        });
        Sink {
            addr,
            inbox,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.inbox.lock().unwrap().len()
    }

    /// Waits until the sink holds `n` messages; panics with `context` otherwise.
    fn wait_for(&self, n: usize, context: impl Fn() -> String) {
        assert!(
            until(WAIT, || self.count() >= n),
            "sink {} has {} message(s), expected {n} within {WAIT:?}\n{}",
            self.addr,
            self.count(),
            context()
        );
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Listen {
    addr: SocketAddr,
    mode: &'static str,
}

/// A configuration: `example.test` goes to `route` at level `may`; listeners as given;
/// `extra` is appended verbatim (e.g. an `[auth]` table).
fn config_text(
    queue: &Path,
    listen: &[Listen],
    metrics: SocketAddr,
    route: SocketAddr,
    extra: &str,
) -> String {
    let mut text = String::from("[server]\nhostname = \"relay.test\"\n");
    for l in listen {
        text.push_str(&format!(
            "[[server.listen]]\naddress = \"{}\"\nmode = \"{}\"\n",
            l.addr, l.mode
        ));
    }
    text.push_str(&format!(
        r#"[dns]
resolver = "validating@127.0.0.1:9"
timeout = "1s"
[queue]
dir = "{queue}"
retry_first = "1s"
retry_max = "2s"
[metrics]
listen = "{metrics}"
[[policy]]
domain = "example.test"
level = "may"
next_hop = "[{ip}]:{port}"
"#,
        queue = queue.display(),
        ip = route.ip(),
        port = route.port(),
    ));
    text.push_str(extra);
    text
}

struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
}

impl Daemon {
    /// Starts `danemta serve --config DIR/NAME.toml` (written from `config`), stderr and
    /// stdout to `DIR/NAME.log`, and waits until `listen` accepts TCP.
    fn start(
        dir: &Path,
        name: &str,
        config: &str,
        listen: SocketAddr,
        metrics: SocketAddr,
        env: &[(&str, &str)],
    ) -> Daemon {
        let config_path = dir.join(format!("{name}.toml"));
        fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut d = Daemon {
            name: name.to_owned(),
            child: Some(spawn_serve(&config_path, &log, env)),
            log,
            config: config_path,
            listen,
            metrics,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
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
            assert!(
                Instant::now() < deadline,
                "daemon {} does not listen on {} after {WAIT:?}:\n{}",
                self.name,
                self.listen,
                self.log()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {}", self.pid());
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, then waits up to `limit` for the exit (SIGKILL after that: `None`).
    fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` that was not among the first `skip` lines.
    fn wait_line(&self, needle: &str, skip: usize) -> String {
        let mut found = None;
        until(WAIT, || {
            found = self
                .log()
                .lines()
                .skip(skip)
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no log line with {needle:?} from daemon {} within {WAIT:?}:\n{}",
                self.name,
                self.log()
            )
        })
    }

    fn log_lines(&self) -> usize {
        self.log().lines().count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn spawn_serve(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let out = File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_danemta"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("DANEMTA_LOG_FORMAT")
        .env_remove("DANEMTA_LOG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Clients: swaks, openssl, HTTP

struct Swaks {
    ok: bool,
    code: i32,
    transcript: String,
}

impl Swaks {
    /// The id of `250 2.0.0 Ok: queued as ID`.
    fn queue_id(&self) -> String {
        let at = self
            .transcript
            .find("queued as ")
            .unwrap_or_else(|| panic!("no `queued as` in:\n{}", self.transcript));
        self.transcript[at + "queued as ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

fn swaks(server: SocketAddr, body: &str, extra: &[&str]) -> Swaks {
    let out = Command::new("swaks")
        .args(["--server", &server.to_string()])
        .args(["--from", "a@sender.test", "--to", "b@example.test"])
        .args(["--ehlo", "client.test"])
        .args(["--header", "Subject: serve_daemon"])
        .args(["--body", body])
        .args(["--timeout", "20"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Swaks {
        ok: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The server replies in a swaks transcript (`<-  250 …`, `<~* 535 …`), without the prefix.
fn replies(transcript: &str) -> impl Iterator<Item = &str> {
    transcript
        .lines()
        .filter(|l| l.starts_with('<'))
        .map(|l| l.trim_start_matches(['<', '-', '~', '*', ' ']))
}

/// Submits to `d` and asserts `250` at the end of data.
fn submit(d: &Daemon, body: &str) -> Swaks {
    let s = swaks(d.listen, body, &[]);
    assert!(
        s.ok,
        "swaks to {} failed (exit {}):\n{}\ndaemon log:\n{}",
        d.listen,
        s.code,
        s.transcript,
        d.log()
    );
    s
}

/// Runs `sh -c script`; asserts success; returns stdout.
fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /metrics` over plain HTTP/1.1; returns the body.
fn get_metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "GET /metrics: {response}"
    );
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_owned(),
        None => response,
    }
}

/// The sum of the samples whose line starts with `prefix` (a metric name, perhaps with the
/// start of its labels).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

// ---------------------------------------------------------------------------------------------
// Tests

/// SIGHUP reads the file again: a new `next_hop` takes effect for the next message and
/// nothing queued is lost; a broken file is refused and the running table kept; SIGTERM ends
/// the daemon with status 0.
#[test]
fn sighup_reloads_the_policy_table_without_losing_mail() {
    let dir = TempDir::new("sighup");
    let (a, b) = (Sink::start(), Sink::start());
    let (listen, metrics) = (free_addr(), free_addr());
    let queue = dir.path().join("queue");
    let listeners = [Listen {
        addr: listen,
        mode: "smtp",
    }];
    let mut d = Daemon::start(
        dir.path(),
        "sighup",
        &config_text(&queue, &listeners, metrics, a.addr, ""),
        listen,
        metrics,
        &[],
    );

    submit(&d, "first message");
    a.wait_for(1, || d.log());
    let first = &a.got()[0];
    assert_eq!(first.from, "a@sender.test");
    assert_eq!(first.to, ["b@example.test"]);
    assert!(first.body.contains("first message"), "{}", first.body);

    // Rewrite the file: example.test now goes to B.
    fs::write(
        &d.config,
        config_text(&queue, &listeners, metrics, b.addr, ""),
    )
    .unwrap();
    let before = d.log_lines();
    d.signal("-HUP");
    let line = d.wait_line("reloaded", before);
    assert!(line.contains("policy table"), "{line}");

    submit(&d, "second message");
    b.wait_for(1, || d.log());
    assert!(b.got()[0].body.contains("second message"), "{:?}", b.got());
    sleep(Duration::from_millis(300));
    assert_eq!(a.count(), 1, "A got mail after the reload: {:?}", a.got());

    // A broken file (unknown key) is refused; the running table (to B) stays.
    let broken = config_text(&queue, &listeners, metrics, a.addr, "")
        .replace("[server]\n", "[server]\nno_such_key = 1\n");
    fs::write(&d.config, broken).unwrap();
    let before = d.log_lines();
    d.signal("-HUP");
    let line = d.wait_line("reload refused", before);
    assert!(
        line.contains("no_such_key"),
        "the refusal names the key: {line}"
    );
    sleep(Duration::from_millis(300));
    assert!(d.running(), "the daemon died on a bad reload:\n{}", d.log());

    submit(&d, "third message");
    b.wait_for(2, || d.log());
    assert!(b.got()[1].body.contains("third message"), "{:?}", b.got());
    assert_eq!(a.count(), 1, "A got mail after a refused reload");

    let status = d.stop(Duration::from_secs(40));
    match status {
        Some(s) => assert!(s.success(), "SIGTERM: exit {s}\n{}", d.log()),
        None => panic!(
            "the daemon did not exit within 40 s of SIGTERM:\n{}",
            d.log()
        ),
    }
    assert!(d.log().contains("stopped"), "{}", d.log());
}

/// With `DANEMTA_LOG_FORMAT=json` the delivery line is a JSON object with `status`,
/// `queue_id` (the id swaks was told), `to` and `dsn`; the delivered message's `Received:`
/// field names the relay and carries the same id.
#[test]
fn json_logs_carry_the_delivery_fields() {
    let dir = TempDir::new("json");
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let d = Daemon::start(
        dir.path(),
        "json",
        &config_text(
            &dir.path().join("queue"),
            &[Listen {
                addr: listen,
                mode: "smtp",
            }],
            metrics,
            sink.addr,
            "",
        ),
        listen,
        metrics,
        &[("DANEMTA_LOG_FORMAT", "json")],
    );
    let id = submit(&d, "json logs").queue_id();
    sink.wait_for(1, || d.log());

    let mut sent = None;
    until(WAIT, || {
        let log = d.log();
        let mut json = Vec::new();
        for line in log.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a JSON log line does not parse ({e}): {line}"));
            json.push(v);
        }
        sent = json.into_iter().find(|v| v["status"] == "sent");
        sent.is_some()
    });
    let sent = sent.unwrap_or_else(|| panic!("no JSON line with status \"sent\":\n{}", d.log()));
    assert_eq!(sent["queue_id"], id.as_str(), "{sent}");
    assert_eq!(sent["to"], "b@example.test", "{sent}");
    let dsn = sent["dsn"].as_str().unwrap_or_default();
    assert!(dsn.starts_with("2."), "dsn {dsn:?} in {sent}");

    // The Received: field the relay prepended, unfolded.
    let got = &sink.got()[0];
    let header = got
        .body
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("\r\n\t", " ");
    let received = header
        .lines()
        .find(|l| l.starts_with("Received:"))
        .unwrap_or_else(|| panic!("no Received: field:\n{}", got.body));
    assert!(received.contains("by relay.test"), "{received}");
    assert!(
        received.contains(&format!("id {id}")),
        "{id} not in {received}"
    );
}

/// A submission listener: AUTH PLAIN after STARTTLS with the right password is accepted and
/// delivered; no AUTH gets `530 5.7.0` at MAIL; a wrong password `535`, and after 10 wrong
/// ones from the address even the right one; AUTH is not offered before STARTTLS. The STARTTLS certificate is the self-signed one made in the queue
/// directory, and the logged `3 1 1` record is its SPKI digest.
#[test]
fn submission_requires_auth_after_starttls() {
    let dir = TempDir::new("submission");
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let hash = sh("openssl passwd -6 -salt saltsalt secret");
    let users = dir.path().join("users");
    fs::write(&users, format!("# test users\nalice:{}\n", hash.trim())).unwrap();
    let queue = dir.path().join("queue");
    let d = Daemon::start(
        dir.path(),
        "submission",
        &config_text(
            &queue,
            &[Listen {
                addr: listen,
                mode: "submission",
            }],
            metrics,
            sink.addr,
            &format!("[auth]\nusers_file = \"{}\"\n", users.display()),
        ),
        listen,
        metrics,
        &[],
    );

    // Authenticated over TLS: accepted and delivered.
    let auth = [
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
    ];
    let ok = swaks(listen, "submitted with auth", &auth);
    assert!(ok.ok, "authenticated submission failed:\n{}", ok.transcript);
    assert!(
        ok.transcript.contains("250 2.0.0 Ok: queued as"),
        "{}",
        ok.transcript
    );
    sink.wait_for(1, || d.log());
    assert!(sink.got()[0].body.contains("submitted with auth"));

    // TLS without AUTH: MAIL is refused.
    let no_auth = swaks(listen, "no auth", &["--tls"]);
    assert!(!no_auth.ok, "{}", no_auth.transcript);
    assert!(
        replies(&no_auth.transcript).any(|r| r.starts_with("530 5.7.0")),
        "{}",
        no_auth.transcript
    );

    // A wrong password.
    let mut wrong = auth;
    wrong[6] = "wrong";
    let wrong_try = swaks(listen, "wrong password", &wrong);
    assert!(!wrong_try.ok, "{}", wrong_try.transcript);
    assert!(
        replies(&wrong_try.transcript).any(|r| r.starts_with("535 ")),
        "{}",
        wrong_try.transcript
    );

    // Before STARTTLS, AUTH is not offered: swaks gives up.
    let plain = swaks(
        listen,
        "auth without tls",
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "secret",
        ],
    );
    assert!(!plain.ok, "{}", plain.transcript);
    assert!(
        !plain.transcript.contains("250-AUTH") && !plain.transcript.contains("250 AUTH"),
        "AUTH offered without TLS:\n{}",
        plain.transcript
    );
    assert!(
        !plain.transcript.contains("queued as"),
        "{}",
        plain.transcript
    );
    assert!(
        !plain.transcript.contains("235 "),
        "authenticated without TLS:\n{}",
        plain.transcript
    );

    // Guessing: after 10 failures from one address, even the right password fails (it is
    // not even checked) for the rest of the window.
    for _ in 1..10 {
        assert!(!swaks(listen, "guess", &wrong).ok);
    }
    let locked = swaks(listen, "right password, locked out", &auth);
    assert!(
        !locked.ok,
        "authenticated after 10 failures:\n{}",
        locked.transcript
    );
    assert!(
        replies(&locked.transcript).any(|r| r.starts_with("535 ")),
        "{}",
        locked.transcript
    );
    d.wait_line("refused unchecked", 0);

    sleep(Duration::from_millis(300));
    assert_eq!(
        sink.count(),
        1,
        "only the authenticated message: {:?}",
        sink.got()
    );

    // The self-signed certificate and its logged TLSA record.
    let pem = queue.join("tls").join("self-signed.pem");
    assert!(pem.exists(), "{} missing:\n{}", pem.display(), d.log());
    let line = d.wait_line("IN TLSA 3 1 1", 0);
    let logged = line
        .split("IN TLSA 3 1 1 ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_ascii_lowercase();
    let pem = pem.display();
    let subject = sh(&format!("openssl x509 -in '{pem}' -noout -subject"));
    assert!(
        subject.contains("CN") && subject.contains("relay.test"),
        "{subject}"
    );
    let san = sh(&format!(
        "openssl x509 -in '{pem}' -noout -ext subjectAltName"
    ));
    assert!(san.contains("DNS:relay.test"), "{san}");
    let digest = sh(&format!(
        "openssl x509 -in '{pem}' -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum"
    ));
    let digest = digest.split_whitespace().next().unwrap();
    assert_eq!(
        logged, digest,
        "logged TLSA vs the certificate's key: {line}"
    );
}

/// One delivery shows in `/metrics`: sessions of the `smtp` listener, accepted messages,
/// `sent` deliveries.
#[test]
fn metrics_count_sessions_and_deliveries() {
    let dir = TempDir::new("metrics");
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let d = Daemon::start(
        dir.path(),
        "metrics",
        &config_text(
            &dir.path().join("queue"),
            &[Listen {
                addr: listen,
                mode: "smtp",
            }],
            metrics,
            sink.addr,
            "",
        ),
        listen,
        metrics,
        &[],
    );
    submit(&d, "metrics");
    sink.wait_for(1, || d.log());
    d.wait_line("status=sent", 0);

    let checks: [(&str, &str); 3] = [
        (
            "danemta_deliveries_total{outcome=\"sent\",security=",
            "deliveries",
        ),
        ("danemta_smtp_sessions_total{listener=\"smtp\"}", "sessions"),
        ("danemta_messages_accepted_total", "accepted"),
    ];
    let mut text = String::new();
    let all = until(WAIT, || {
        text = get_metrics(d.metrics);
        checks
            .iter()
            .all(|(prefix, _)| metric(&text, prefix).is_some_and(|v| v >= 1.0))
    });
    assert!(
        all,
        "{:?} in /metrics of {}:\n{text}",
        checks
            .iter()
            .map(|(p, what)| (what, metric(&text, p)))
            .collect::<Vec<_>>(),
        d.metrics
    );
}

/// `sendmail` run by a user who may not write the spool (the daemon's, mode 0700) hands the
/// message to the daemon over loopback SMTP, and it is delivered; with the daemon down it
/// exits 75 (try later) naming both failures, and nothing is lost silently.
#[test]
fn sendmail_without_spool_access_submits_to_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("sendmail-nobody");
    // `nobody` must read the configuration and reach it; the spool stays root's.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let queue = dir.path().join("queue");
    fs::create_dir(&queue).unwrap();
    fs::set_permissions(&queue, fs::Permissions::from_mode(0o700)).unwrap();
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let text = config_text(
        &queue,
        &[Listen {
            addr: listen,
            mode: "smtp",
        }],
        metrics,
        sink.addr,
        "",
    );
    let mut d = Daemon::start(dir.path(), "sendmail-nobody", &text, listen, metrics, &[]);
    let config = d.config.clone();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let sendmail_as_nobody = |body: &str| {
        let mut child = Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                env!("CARGO_BIN_EXE_danemta"),
                "sendmail",
                "-C",
            ])
            .arg(&config)
            .args(["-v", "rcpt@example.test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runuser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    let out = sendmail_as_nobody("Subject: from nobody\n\nhello\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("handed to the daemon: 250"),
        "{out:?}\n{}",
        d.log()
    );
    sink.wait_for(1, || d.log());
    let got = &sink.got()[0];
    assert_eq!(got.to, ["rcpt@example.test"]);
    assert!(got.from.starts_with("nobody@"), "{}", got.from);
    assert!(got.body.contains("Subject: from nobody"), "{}", got.body);
    // The intake is logged as Postfix does, with the queue id the client was given.
    let log = d.log();
    assert!(
        log.contains(": queued from=<nobody@") && log.contains("nrcpt=1, size="),
        "{log}"
    );

    d.stop(WAIT);
    let out = sendmail_as_nobody("Subject: daemon down\n\nhello\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("Permission denied") && stderr.contains("did not take it"),
        "{stderr}"
    );
}

/// `sendmail` and `queue` run as root on a spool that belongs to the daemon's user (the
/// package's `danemta`) work as that user: a queue database journal or message file made by
/// root would be unreadable or unwritable to the daemon.
#[test]
fn root_writes_the_spool_as_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "nobody"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let dir = TempDir::new("sendmail-root");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let queue = dir.path().join("queue");
    fs::create_dir(&queue).unwrap();
    fs::set_permissions(&queue, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&queue, Some(uid), Some(gid)).unwrap();
    let (listen, metrics, sink) = (free_addr(), free_addr(), free_addr());
    let listens = [Listen {
        addr: listen,
        mode: "smtp",
    }];
    let config = dir.path().join("danemta.toml");
    fs::write(&config, config_text(&queue, &listens, metrics, sink, "")).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["sendmail", "-C"])
        .arg(&config)
        .arg("rcpt@example.test")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: from root\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut pending = vec![queue.clone()];
    let mut files = 0;
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} is not nobody's",
            path.display()
        );
        files += 1;
        if meta.is_dir() {
            pending.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(files > 2, "the spool holds the queue and the message");
    // The owner sees the message root queued.
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            env!("CARGO_BIN_EXE_danemta"),
            "queue",
            "list",
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("rcpt@example.test"),
        "{out:?}"
    );
    // The daemon itself is not started as root there: it says as whom to run it.
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(
        stderr.contains(&format!("belongs to uid {uid}")),
        "{stderr}"
    );
}

/// A second daemon on a queue in use exits non-zero and says why.
#[test]
fn a_second_daemon_on_the_same_queue_is_refused() {
    let dir = TempDir::new("second");
    let sink = Sink::start();
    let queue = dir.path().join("queue");
    let (listen, metrics) = (free_addr(), free_addr());
    let mut first = Daemon::start(
        dir.path(),
        "first",
        &config_text(
            &queue,
            &[Listen {
                addr: listen,
                mode: "smtp",
            }],
            metrics,
            sink.addr,
            "",
        ),
        listen,
        metrics,
        &[],
    );

    let (listen2, metrics2) = (free_addr(), free_addr());
    let config2 = dir.path().join("second.toml");
    fs::write(
        &config2,
        config_text(
            &queue,
            &[Listen {
                addr: listen2,
                mode: "smtp",
            }],
            metrics2,
            sink.addr,
            "",
        ),
    )
    .unwrap();
    let log2 = dir.path().join("second.log");
    let mut second = spawn_serve(&config2, &log2, &[]);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!(
                "the second daemon still runs after {WAIT:?}:\n{}",
                fs::read_to_string(&log2).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(50));
    };
    let log = fs::read_to_string(&log2).unwrap_or_default();
    assert!(!status.success(), "second daemon: {status}\n{log}");
    assert!(
        log.contains("another danemta serve is running"),
        "the refusal says why:\n{log}"
    );

    // The first one is unaffected.
    assert!(first.running(), "{}", first.log());
    submit(&first, "still served");
    sink.wait_for(1, || first.log());
    let s = first.stop(Duration::from_secs(40));
    assert!(s.is_some_and(|s| s.success()), "{s:?}\n{}", first.log());
}

// ---------------------------------------------------------------------------------------------
// DNS faults

/// How a fake DNS server on UDP treats queries.
#[derive(Clone, Copy, Debug)]
enum DnsFault {
    /// Answers every query with SERVFAIL.
    ServFail,
    /// Reads every query and never answers.
    Silent,
}

/// The end of the question section of a DNS message (after QNAME, QTYPE and QCLASS).
fn question_end(query: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    (at + 4 <= query.len()).then_some(at + 4)
}

/// A fake DNS server on a free loopback UDP port, counting the queries it gets; it lives as
/// long as the test process (a thread blocked on its socket).
fn fake_dns(fault: DnsFault) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&queries);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            counted.fetch_add(1, Ordering::SeqCst);
            let query = &buf[..n];
            let (DnsFault::ServFail, Some(end)) = (fault, question_end(query)) else {
                continue;
            };
            // Header: the query's id, QR, its opcode and RD, RA, rcode 2; one question, no
            // records; then the question itself.
            let mut reply = vec![
                query[0],
                query[1],
                0x80 | (query[2] & 0x79),
                0x82,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            reply.extend_from_slice(&query[12..end]);
            let _ = socket.send_to(&reply, from);
        }
    });
    (addr, queries)
}

/// The resolver down (nothing listens), SERVFAIL, and no answer at all: mail to a domain
/// that needs an MX lookup is deferred with a DNS reason, retried with back-off (1 s, then
/// 2 s here), never bounced, and nothing spins: a handful of attempts and a bounded number of
/// queries in the time.
#[test]
fn dns_faults_defer_with_the_reason_and_back_off() {
    let dir = TempDir::new("dns-faults");
    let sink = Sink::start();
    let closed = free_addr();
    let faults: Vec<(&str, SocketAddr, Option<Arc<AtomicUsize>>)> = {
        let (servfail, servfail_queries) = fake_dns(DnsFault::ServFail);
        let (silent, silent_queries) = fake_dns(DnsFault::Silent);
        vec![
            ("down", closed, None),
            ("servfail", servfail, Some(servfail_queries)),
            ("timeout", silent, Some(silent_queries)),
        ]
    };
    for (name, resolver, queries) in faults {
        let (listen, metrics) = (free_addr(), free_addr());
        let queue = dir.path().join(name);
        let text = config_text(
            &queue,
            &[Listen {
                addr: listen,
                mode: "smtp",
            }],
            metrics,
            sink.addr,
            "",
        )
        .replace(
            "resolver = \"validating@127.0.0.1:9\"",
            &format!("resolver = \"trust-ad@{resolver}\""),
        );
        let d = Daemon::start(dir.path(), name, &text, listen, metrics, &[]);
        let sent = swaks(listen, "dns fault", &["--to", "bob@far.test"]);
        assert!(sent.ok, "{name}: {}", sent.transcript);
        let first = d.wait_line("to=<bob@far.test>", 0);
        eprintln!("{name}: {first}");
        assert!(first.contains("status=deferred"), "{name}: {first}");
        assert!(
            first.to_ascii_lowercase().contains("dns") || first.contains("MX"),
            "{name}: the reason names the DNS failure: {first}"
        );
        // Over the next 5 seconds: retries at the back-off, not a loop.
        sleep(Duration::from_secs(5));
        let log = d.log();
        let tries = log
            .lines()
            .filter(|l| l.contains("to=<bob@far.test>"))
            .count();
        assert!(
            (2..=6).contains(&tries),
            "{name}: {tries} attempts in about 6 s with retries after 1 s and 2 s:\n{log}"
        );
        assert!(
            !log.contains("status=bounced"),
            "{name}: never bounced:\n{log}"
        );
        if let Some(q) = queries {
            let n = q.load(Ordering::SeqCst);
            assert!(
                (1..200).contains(&n),
                "{name}: {n} queries for {tries} attempts"
            );
        }
    }
    assert_eq!(sink.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// A nearly full disk

/// A tmpfs of `size` mounted on `dir`, unmounted (lazily: the daemon may still hold files)
/// when dropped. Needs root, as the rest of the suite.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> SmallDisk {
        fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "danemta-test"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs needs root");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// The queue on an 8 MB file system keeping 2 MB free (`[queue] min_free`), deliveries
/// paused: 500 KB messages are taken until the reserve is reached, then MAIL FROM gets
/// `452 4.3.1` (never a `250` for mail that was not stored). Resumed, the daemon delivers
/// everything it took (its database writes fit in the reserve) and takes mail again by
/// itself.
#[test]
fn a_nearly_full_queue_disk_refuses_new_mail_and_deliveries_go_on() {
    let dir = TempDir::new("full-disk");
    let sink = Sink::start();
    let queue = dir.path().join("queue");
    let _disk = SmallDisk::mount(queue.clone(), "8m");
    let (listen, metrics) = (free_addr(), free_addr());
    let listeners = [Listen {
        addr: listen,
        mode: "smtp",
    }];
    let text = |paused: bool| {
        config_text(&queue, &listeners, metrics, sink.addr, "")
            .replace(
                "retry_max = \"2s\"\n",
                "retry_max = \"2s\"\nmin_free = \"2MB\"\n",
            )
            .replace(
                "[metrics]",
                &format!("[delivery]\npaused = {paused}\n[metrics]"),
            )
    };
    let d = Daemon::start(dir.path(), "full-disk", &text(true), listen, metrics, &[]);
    let body = dir.path().join("body.txt");
    fs::write(
        &body,
        format!("{}\n", "x".repeat(76)).repeat(500 * 1024 / 77),
    )
    .unwrap();
    let body = format!("@{}", body.display());
    let mut accepted = 0;
    let refused = loop {
        let s = swaks(listen, &body, &[]);
        if s.ok {
            accepted += 1;
            assert!(
                accepted < 20,
                "an 8 MB disk took {accepted} messages of 500 KB"
            );
            continue;
        }
        break s;
    };
    assert!(
        replies(&refused.transcript).any(|r| r.starts_with("452 4.3.1")),
        "{}",
        refused.transcript
    );
    assert!(accepted >= 3, "only {accepted} messages before the reserve");
    d.wait_line("min_free", 0);

    // Resume: everything taken is delivered; then mail is taken again, with no restart.
    fs::write(&d.config, text(false)).unwrap();
    d.signal("-HUP");
    sink.wait_for(accepted, || d.log());
    let again = submit(&d, "after the disk emptied");
    assert!(again.ok);
    sink.wait_for(accepted + 1, || d.log());
    assert!(!d.log().contains("cannot record"), "{}", d.log());
}

/// `VmHWM` (peak resident memory) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 3,000 connections at once: the first `max_connections` (100) are greeted and held, every
/// other one hears `421 4.3.2` at once; the daemon's memory stays small, and once the crowd
/// is gone mail flows again.
#[test]
fn thousands_of_connections_get_421_past_the_limit_and_memory_stays_bounded() {
    let dir = TempDir::new("crowd");
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let queue = dir.path().join("queue");
    let listeners = [Listen {
        addr: listen,
        mode: "smtp",
    }];
    let d = Daemon::start(
        dir.path(),
        "crowd",
        &config_text(&queue, &listeners, metrics, sink.addr, ""),
        listen,
        metrics,
        &[],
    );
    let before = peak_kib(d.pid());
    let mut held = Vec::new();
    let (mut greeted, mut refused) = (0, 0);
    for _ in 0..3000 {
        let stream = TcpStream::connect(listen).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line).unwrap();
        if line.starts_with("220") {
            greeted += 1;
            held.push(stream);
        } else {
            assert!(line.starts_with("421 4.3.2"), "{line:?}");
            refused += 1;
        }
    }
    assert_eq!(greeted, 100, "max_connections greeted, {refused} refused");
    let peak = peak_kib(d.pid());
    eprintln!(
        "crowd: {greeted} greeted, {refused} refused; peak RSS {} KiB (before: {before} KiB)",
        peak
    );
    assert!(
        peak < 100 * 1024,
        "peak RSS {} MiB (was {} MiB before the crowd)",
        peak / 1024,
        before / 1024
    );
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if swaks(listen, "after the crowd", &[]).ok {
            ok = true;
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert!(ok, "mail flows again after the crowd:\n{}", d.log());
    sink.wait_for(1, || d.log());
}

/// The last line of the next reply (`250 2.0.0 Ok: …`), without its CRLF.
fn last_reply_line(io: &mut std::io::BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(io, &mut line).unwrap();
        if line.is_empty() || line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_owned();
        }
    }
}

/// A plain SMTP client on `addr` that has said DATA (and had its `354`).
fn in_data(addr: SocketAddr) -> std::io::BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut io = std::io::BufReader::new(stream);
    let mut expect = |send: &str, code: &str| {
        if !send.is_empty() {
            io.get_mut().write_all(send.as_bytes()).unwrap();
        }
        let reply = last_reply_line(&mut io);
        assert!(reply.starts_with(code), "{send:?}: {reply:?}");
    };
    expect("", "220");
    expect("EHLO client.test\r\n", "250");
    expect("MAIL FROM:<a@sender.test>\r\n", "250");
    expect("RCPT TO:<b@example.test>\r\n", "250");
    expect("DATA\r\n", "354");
    io
}

/// Clients stalled in DATA with most of a big message (a slow-loris on content), and header
/// floods: the daemon's memory stays within `max_content_memory` plus a margin, the late
/// messages get `452 4.3.1` or `552 5.6.0`, and once the clients are gone mail flows again.
#[test]
fn stalled_clients_and_header_floods_cannot_grow_memory() {
    let dir = TempDir::new("hostile-memory");
    let sink = Sink::start();
    let (listen, metrics) = (free_addr(), free_addr());
    let listeners = [Listen {
        addr: listen,
        mode: "smtp",
    }];
    let limits = "[server]\nmax_message_size = \"4MB\"\nmax_content_memory = \"16MB\"\nmax_header_size = \"64kB\"\n";
    let text = config_text(
        &dir.path().join("queue"),
        &listeners,
        metrics,
        sink.addr,
        "",
    )
    .replacen("[server]\n", limits, 1);
    let d = Daemon::start(dir.path(), "hostile-memory", &text, listen, metrics, &[]);
    let before = peak_kib(d.pid());

    // 60 clients each send 3 MB and stall: 180 MB (and more with buffer growth) if each kept
    // its content.
    let line = format!("{}\r\n", "x".repeat(998));
    let part = line.repeat(3000);
    let stalled: Vec<_> = (0..60)
        .map(|_| {
            let mut io = in_data(listen);
            io.get_mut().write_all(b"Subject: stall\r\n\r\n").unwrap();
            io.get_mut().write_all(part.as_bytes()).unwrap();
            io
        })
        .collect();
    // 20 header floods of 3 MB each, refused whole.
    let flood = "X-Flood: 0123456789012345678901234567890123456789\r\n".repeat(60_000);
    for _ in 0..20 {
        let mut io = in_data(listen);
        io.get_mut().write_all(flood.as_bytes()).unwrap();
        io.get_mut().write_all(b"\r\nbody\r\n.\r\n").unwrap();
        let reply = last_reply_line(&mut io);
        assert!(reply.starts_with("552 5.6.0"), "{reply:?}");
    }
    // The stalled ones that found no room are refused at their end; at most 16 MB's worth
    // were kept.
    let peak = peak_kib(d.pid());
    eprintln!(
        "hostile memory: peak RSS {} KiB (before: {before} KiB)",
        peak
    );
    assert!(
        peak - before < 64 * 1024,
        "peak RSS grew by {} MiB under 60 stalled 3 MB messages and 20 header floods",
        (peak - before) / 1024
    );
    let (mut stored, mut no_room) = (0, 0);
    for mut io in stalled {
        io.get_mut().write_all(b".\r\n").unwrap();
        let reply = last_reply_line(&mut io);
        if reply.starts_with("250") {
            stored += 1;
        } else {
            assert!(reply.starts_with("452 4.3.1"), "{reply:?}");
            no_room += 1;
        }
    }
    eprintln!("hostile memory: {stored} stalled messages kept, {no_room} refused for room");
    assert!(
        stored >= 2 && no_room > 0,
        "{stored} kept, {no_room} refused"
    );
    submit(&d, "after the stall");
    sink.wait_for(stored + 1, || d.log());
}
