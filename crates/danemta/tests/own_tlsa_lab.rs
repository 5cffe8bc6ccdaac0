//! `danemta serve` checks its own TLSA records (crates/relay/src/own_tlsa.rs) through the
//! DNSSEC lab, and reports them and its certificates' expiry at `/metrics`:
//!
//! * serving the chain whose `3 1 1` record the lab publishes at `_25._tcp.<hostname>`:
//!   `danemta_own_tlsa_match{host}` is 1, and
//!   `danemta_tls_certificate_expiry_timestamp_seconds{chain}` is the chain's notAfter;
//! * serving another key: 0, with a warning naming the chain and the records; after the
//!   configuration is pointed at the published chain and the daemon reloaded (SIGHUP): 1, and
//!   the dropped chain's expiry series reads NaN;
//! * a bogus TLSA answer (its signature stripped): 0, with a warning saying so.
//!
//! Each daemon runs in-process DNSSEC validation against the lab's plain resolver, with the
//! lab's trust anchor, and is stopped by a Drop guard (a watchdog shell kills it if the test
//! process dies first).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::{Lab, LabAddr, Signing, ZoneSpec};

const HOST: &str = "relay.own.lab.test";
const BOGUS_HOST: &str = "relay.bogus-own.lab.test";
const WAIT: Duration = Duration::from_secs(45);

struct World {
    lab: Lab,
    /// The published chain: its `3 1 1` record is at `_25._tcp.relay` in both zones.
    published: (PathBuf, PathBuf),
    published_not_after: u64,
    /// Another key for the same names, not published.
    other: (PathBuf, PathBuf),
}

fn not_after(cert: &TestCert) -> u64 {
    dane::cert::CertInfo::parse(&cert.leaf_der)
        .unwrap()
        .not_after()
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let published = TestCert::self_signed(&[HOST, BOGUS_HOST]).unwrap();
        let other = TestCert::self_signed(&[HOST, BOGUS_HOST]).unwrap();
        let records = format!(
            "relay A 127.0.0.1\n_25._tcp.relay TLSA {}\n",
            tlsa_3_1_1(&published)
        );
        let lab = Lab::builder()
            .zone(ZoneSpec::secure("own.lab.test", records.clone()))
            .zone(ZoneSpec::new(
                "bogus-own.lab.test",
                records,
                Signing::StripSignature {
                    owner: "_25._tcp.relay".into(),
                    rtype: "TLSA".into(),
                },
            ))
            .start()
            .expect("the DNSSEC lab");
        let write_pair = |name: &str, c: &TestCert| {
            let cert = lab.dir().join(format!("{name}-chain.pem"));
            let key = lab.dir().join(format!("{name}-key.pem"));
            fs::write(&cert, &c.chain_pem).unwrap();
            fs::write(&key, &c.key_pem).unwrap();
            (cert, key)
        };
        World {
            published: write_pair("published", &published),
            published_not_after: not_after(&published),
            other: write_pair("other", &other),
            lab,
        }
    })
}

struct Daemon {
    name: String,
    dir: PathBuf,
    log: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
    child: Option<Child>,
    watchdog: Option<Child>,
    _addr: LabAddr,
}

fn config_text(w: &World, hostname: &str, chain: &(PathBuf, PathBuf), d: &Daemon) -> String {
    format!(
        r#"[server]
hostname = "{hostname}"
[[server.listen]]
address = "{listen}"
mode = "smtp"
[[server.tls]]
cert = "{cert}"
key = "{key}"
[dns]
resolver = "validating@{resolver}"
trust_anchor = "{anchor}"
timeout = "5s"
[queue]
dir = "{queue}"
[metrics]
listen = "{metrics}"
"#,
        listen = d.listen,
        cert = chain.0.display(),
        key = chain.1.display(),
        resolver = w.lab.plain_resolver(),
        anchor = w.lab.trust_anchor_file().display(),
        queue = d.dir.join("queue").display(),
        metrics = d.metrics,
    )
}

impl Daemon {
    fn start(name: &str, hostname: &str, chain: &(PathBuf, PathBuf)) -> Daemon {
        let w = world();
        let addr = w.lab.claim_addr().unwrap();
        let dir = w.lab.dir().join(format!("own-tlsa-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let mut d = Daemon {
            name: name.to_owned(),
            log: dir.join("serve.log"),
            listen: SocketAddr::new(IpAddr::V4(addr.ip()), 2525),
            metrics: SocketAddr::new(IpAddr::V4(addr.ip()), 9325),
            dir,
            child: None,
            watchdog: None,
            _addr: addr,
        };
        d.configure(hostname, chain);
        let log = File::create(&d.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("serve")
            .arg("--config")
            .arg(d.config())
            .env_remove("DANEMTA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
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
        d.child = Some(child);
        d.watchdog = Some(watchdog);
        d.wait_ready();
        d
    }

    fn config(&self) -> PathBuf {
        self.dir.join("danemta.toml")
    }

    fn configure(&self, hostname: &str, chain: &(PathBuf, PathBuf)) {
        fs::write(self.config(), config_text(world(), hostname, chain, self)).unwrap();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon {} exited ({status}):\n{}", self.name, self.log());
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok()
                && TcpStream::connect_timeout(&self.metrics, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} not ready after 30 s:\n{}",
                self.name,
                self.log()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn reload(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics`: the body.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("metrics at {}: {e}", self.metrics));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map_or(response.clone(), |(_, b)| b.to_owned())
    }

    /// Waits until the sample `series` (name and labels, exactly as exposed) satisfies
    /// `want`; returns its value.
    fn wait_sample(&self, series: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.scrape();
            if let Some(v) = sample(&text, series).filter(|v| want(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {}: {series} is {:?} after {WAIT:?}\nmetrics:\n{text}\nlog:\n{}",
                self.name,
                sample(&text, series),
                self.log()
            );
            sleep(Duration::from_millis(200));
        }
    }

    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return l.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "daemon {}: no log line with {needle:?}:\n{}",
                self.name,
                self.log()
            );
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut wd) = self.watchdog.take() {
            let _ = wd.kill();
            let _ = wd.wait();
        }
    }
}

/// The value of the sample line `series value`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn own_match(host: &str) -> String {
    format!("danemta_own_tlsa_match{{host=\"{host}\"}}")
}

fn expiry(chain: &Path) -> String {
    format!(
        "danemta_tls_certificate_expiry_timestamp_seconds{{chain=\"{}\"}}",
        chain.display()
    )
}

#[test]
fn serving_the_published_chain_matches_and_its_expiry_is_exported() {
    let w = world();
    let d = Daemon::start("published", HOST, &w.published);
    assert_eq!(d.wait_sample(&own_match(HOST), |_| true), 1.0);
    // Exact: Unix seconds are integers well within f64's precision.
    #[allow(clippy::cast_precision_loss)]
    let want = w.published_not_after as f64;
    assert_eq!(d.wait_sample(&expiry(&w.published.0), |_| true), want);
    d.wait_log(&format!(
        "own TLSA: _25._tcp.{HOST} authenticates chain {}",
        w.published.0.display()
    ));
}

#[test]
fn serving_another_key_mismatches_until_reloaded_with_the_published_chain() {
    let w = world();
    let d = Daemon::start("other", HOST, &w.other);
    assert_eq!(d.wait_sample(&own_match(HOST), |_| true), 0.0);
    let line = d.wait_log("own TLSA mismatch");
    assert!(
        line.contains(&format!("chain {}", w.other.0.display())),
        "{line}"
    );
    assert!(line.contains("[3 1 1 "), "the records seen: {line}");
    // The operator points the configuration at the published chain and reloads.
    d.configure(HOST, &w.published);
    d.reload();
    assert_eq!(d.wait_sample(&own_match(HOST), |v| v != 0.0), 1.0);
    #[allow(clippy::cast_precision_loss)]
    let want = w.published_not_after as f64;
    assert_eq!(d.wait_sample(&expiry(&w.published.0), |_| true), want);
    assert!(d.wait_sample(&expiry(&w.other.0), f64::is_nan).is_nan());
}

#[test]
fn a_bogus_tlsa_answer_is_a_mismatch() {
    let w = world();
    let d = Daemon::start("bogus", BOGUS_HOST, &w.published);
    assert_eq!(d.wait_sample(&own_match(BOGUS_HOST), |_| true), 0.0);
    let line = d.wait_log("own TLSA: the answer for");
    assert!(line.contains("is bogus"), "{line}");
}
