//! MTA-STS (RFC 8461) in `danemta send`, end to end: policies served over HTTPS under a
//! private CA, real Postfix receivers with certificates that pass or fail PKIX, a STARTTLS
//! stripper, and DANE next to MTA-STS. Each test checks the precedence rules as the JSON
//! records them (`mechanism`, `rule_id`) and what the receivers saw.
//!
//! | domain | published | MX |
//! |---|---|---|
//! | `enforce.sts.test` | enforce, mx `mx.enforce.sts.test`; TLS-RPT to `tlsrpt@` itself | valid PKIX certificate |
//! | `badcert.sts.test` | enforce | certificate of another CA |
//! | `mismatch.sts.test` | enforce, mx `mx.elsewhere.test` | valid, but not in the policy |
//! | `testing.sts.test` | testing | certificate of another CA |
//! | `dane.sts.test` | enforce + DANE-EE TLSA | certificate of another CA (DANE matches) |
//! | `strip.sts.test` | enforce | behind a STARTTLS stripper |
//! | `broken.sts.test` | TXT, but the policy host answers 404 | certificate of another CA |
//! | `withdrawn.sts.test` | mode none | certificate of another CA |
//! | `cached.sts.test` | enforce (then an attacker blocks the policy host) | certificate of another CA |
//!
//! The last one is for `danemta serve`: its policy cache lives in the queue store, so a
//! cached `enforce` policy still protects mail after a restart while the policy cannot be
//! fetched (RFC 8461 §5.1, §10.2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use danemta_lab::https::Reply;
use danemta_lab::mta_sts::{MtaSts, StsDomain};
use danemta_lab::pki::tlsa_3_1_1;
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, Signing, StripStartTls, ZoneSpec};
use serde_json::Value;

const DOMAINS: &[&str] = &[
    "enforce.sts.test",
    "badcert.sts.test",
    "mismatch.sts.test",
    "testing.sts.test",
    "dane.sts.test",
    "strip.sts.test",
    "broken.sts.test",
    "withdrawn.sts.test",
    "cached.sts.test",
];

struct World {
    lab: Lab,
    sts: MtaSts,
    ca_file: PathBuf,
    valid: Receiver,
    foreign: Receiver,
    _strip: StripStartTls,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let sts = MtaSts::start([
            StsDomain::enforce("enforce.sts.test", &["mx.enforce.sts.test"])
                .tls_rpt("mailto:tlsrpt@enforce.sts.test"),
            StsDomain::enforce("badcert.sts.test", &["mx.badcert.sts.test"]),
            StsDomain::enforce("mismatch.sts.test", &["mx.elsewhere.test"]),
            StsDomain::testing("testing.sts.test", &["mx.testing.sts.test"]),
            StsDomain::enforce("dane.sts.test", &["mx.dane.sts.test"]),
            StsDomain::enforce("strip.sts.test", &["*.strip.sts.test"]),
            StsDomain::serving(
                "broken.sts.test",
                Reply::content(404, Some("text/plain"), "no policy here"),
            ),
            StsDomain::mode_none("withdrawn.sts.test"),
            StsDomain::enforce("cached.sts.test", &["mx.cached.sts.test"]),
        ])
        .expect("the MTA-STS policy host");
        let valid_cert = sts
            .mx_cert(&[
                "mx.enforce.sts.test",
                "mx.mismatch.sts.test",
                "mx.strip.sts.test",
            ])
            .unwrap();
        let foreign_cert = sts
            .foreign_cert(&[
                "mx.badcert.sts.test",
                "mx.testing.sts.test",
                "mx.dane.sts.test",
                "mx.broken.sts.test",
                "mx.withdrawn.sts.test",
                "mx.cached.sts.test",
            ])
            .unwrap();
        let receiver = |name: &str, cert| {
            Receiver::start(ReceiverSpec::new(name, DOMAINS).with_tls(cert))
                .unwrap_or_else(|e| panic!("receiver {name}: {e}"))
        };
        let valid = receiver("mx.enforce.sts.test", &valid_cert);
        let foreign = receiver("mx.badcert.sts.test", &foreign_cert);
        let strip = StripStartTls::start(SocketAddr::from(([0, 0, 0, 0], 25)), valid.addr())
            .expect("the STARTTLS stripper");
        let zone = |domain: &str, mx: SocketAddr, extra: &str| {
            format!(
                "@ MX 10 mx\nmx A {}\n{extra}{}",
                mx.ip(),
                sts.zone_records(domain).unwrap()
            )
        };
        // MTA-STS needs no DNSSEC: the domains are unsigned, but for the DANE one.
        let unsigned =
            |domain: &str, records: String| ZoneSpec::new(domain, records, Signing::Unsigned);
        let lab = Lab::builder()
            .zones(vec![
                unsigned(
                    "enforce.sts.test",
                    zone("enforce.sts.test", valid.addr(), ""),
                ),
                unsigned(
                    "badcert.sts.test",
                    zone("badcert.sts.test", foreign.addr(), ""),
                ),
                unsigned(
                    "mismatch.sts.test",
                    zone("mismatch.sts.test", valid.addr(), ""),
                ),
                unsigned(
                    "testing.sts.test",
                    zone("testing.sts.test", foreign.addr(), ""),
                ),
                ZoneSpec::secure(
                    "dane.sts.test",
                    zone(
                        "dane.sts.test",
                        foreign.addr(),
                        &format!("_25._tcp.mx TLSA {}\n", tlsa_3_1_1(&foreign_cert)),
                    ),
                ),
                unsigned("strip.sts.test", zone("strip.sts.test", strip.addr(), "")),
                unsigned(
                    "broken.sts.test",
                    zone("broken.sts.test", foreign.addr(), ""),
                ),
                unsigned(
                    "withdrawn.sts.test",
                    zone("withdrawn.sts.test", foreign.addr(), ""),
                ),
                unsigned(
                    "cached.sts.test",
                    zone("cached.sts.test", foreign.addr(), ""),
                ),
            ])
            .start()
            .expect("the DNSSEC lab");
        World {
            lab,
            ca_file: sts.ca_file().to_owned(),
            sts,
            valid,
            foreign,
            _strip: strip,
        }
    })
}

struct Sent {
    code: i32,
    json: Value,
    stderr: String,
}

fn send(rcpt: &str, extra: &[&str]) -> Sent {
    let w = world();
    let message = format!("From: a@client.test\nTo: {rcpt}\nSubject: sts\n\nhello {rcpt}\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["send", "--from", "a@client.test", "--to", rcpt, "--json"])
        .args(["--smtp-timeout", "10", "--helo", "client.test"])
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .arg("--ca-file")
        .arg(&w.ca_file)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Sent {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}")),
        stderr,
    }
}

/// Whether `receiver` got the message for `rcpt`, waiting a little for Postfix.
fn got(receiver: &Receiver, rcpt: &str) -> bool {
    (0..50).any(|_| {
        let found = receiver
            .delivered()
            .iter()
            .any(|m| m.contains(&format!("hello {rcpt}")));
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    })
}

fn nobody_got(rcpt: &str) {
    let w = world();
    for r in [&w.valid, &w.foreign] {
        assert!(
            !r.delivered()
                .iter()
                .any(|m| m.contains(&format!("hello {rcpt}"))),
            "{} received mail for {rcpt}",
            r.hostname()
        );
    }
}

/// Sends to `rcpt` and asserts the outcome, and the last attempt's security, mechanism and
/// `rule_id`.
fn send_expecting(rcpt: &str, extra: &[&str], want: [&str; 4]) -> Sent {
    let s = send(rcpt, extra);
    let last = s.json["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .unwrap_or_else(|| panic!("no attempt: {:#}\n{}", s.json, s.stderr));
    let got = [
        &s.json["outcome"],
        &last["security"],
        &last["mechanism"],
        &last["rule_id"],
    ]
    .map(|v| v.as_str().unwrap_or("?").to_owned());
    assert_eq!(got, want, "{:#}\n{}", s.json, s.stderr);
    s
}

#[test]
fn an_enforce_policy_delivers_over_pkix_verified_tls() {
    let rcpt = "u@enforce.sts.test";
    let s = send_expecting(
        rcpt,
        &[],
        ["delivered", "verified", "mta-sts", "sts-enforce"],
    );
    assert_eq!(s.code, 0);
    assert!(got(&world().valid, rcpt));
}

/// RFC 8461 §4.2: under enforce, a certificate that fails PKIX defers; nothing is sent in
/// plaintext or to the unauthenticated host.
#[test]
fn an_enforce_policy_defers_when_the_mx_certificate_fails_pkix() {
    let rcpt = "u@badcert.sts.test";
    let s = send_expecting(rcpt, &[], ["deferred", "none", "mta-sts", "sts-enforce"]);
    assert_eq!(s.code, 75);
    nobody_got(rcpt);
}

/// RFC 8461 §4.1: an MX host the enforce policy does not list is not used at all.
#[test]
fn an_enforce_policy_skips_mx_hosts_it_does_not_list() {
    let rcpt = "u@mismatch.sts.test";
    let s = send_expecting(
        rcpt,
        &[],
        ["deferred", "none", "mta-sts", "sts-mx-mismatch"],
    );
    assert!(
        s.json["attempts"][0]["address"].is_null(),
        "not even connected: {:#}",
        s.json
    );
    nobody_got(rcpt);
}

/// A STARTTLS stripper on the path gets nothing from an enforce domain.
#[test]
fn stripping_starttls_gets_nothing_from_an_enforce_domain() {
    let rcpt = "u@strip.sts.test";
    let s = send_expecting(rcpt, &[], ["deferred", "none", "mta-sts", "sts-enforce"]);
    for a in s.json["attempts"].as_array().unwrap() {
        assert_ne!(a["security"], "plaintext", "{a:#}");
    }
    nobody_got(rcpt);
}

/// RFC 8461 §5: a testing policy reports, it does not block.
#[test]
fn a_testing_policy_does_not_block_delivery() {
    let rcpt = "u@testing.sts.test";
    send_expecting(
        rcpt,
        &[],
        ["delivered", "untrusted", "mta-sts", "sts-testing"],
    );
    assert!(got(&world().foreign, rcpt));
}

/// RFC 8461 §2: where the MX host has secure TLSA records, DANE decides; the certificate
/// that PKIX would refuse is the one the TLSA record pins.
#[test]
fn dane_takes_precedence_over_an_enforce_policy() {
    let rcpt = "u@dane.sts.test";
    send_expecting(rcpt, &[], ["delivered", "verified", "dane", "dane-auth"]);
    assert!(got(&world().foreign, rcpt));
}

/// A policy level given for the destination overrides MTA-STS, as Postfix's policy table
/// does.
#[test]
fn a_configured_level_overrides_the_policy() {
    let rcpt = "v@badcert.sts.test";
    send_expecting(
        rcpt,
        &["--policy", "may"],
        ["delivered", "untrusted", "policy-table", "policy"],
    );
    assert!(got(&world().foreign, rcpt));
}

/// RFC 8461 §5.1: with no cached policy, a policy that cannot be fetched is no policy: the
/// message goes as it would without MTA-STS, and the failure is reported.
#[test]
fn a_policy_that_cannot_be_fetched_is_no_policy() {
    let rcpt = "u@broken.sts.test";
    let s = send_expecting(
        rcpt,
        &[],
        ["delivered", "untrusted", "opportunistic", "opportunistic"],
    );
    assert!(
        s.stderr.contains("MTA-STS for broken.sts.test"),
        "{}",
        s.stderr
    );
}

/// Mode `none` withdraws a policy (RFC 8461 §8.3): opportunistic delivery.
#[test]
fn mode_none_is_opportunistic() {
    let rcpt = "u@withdrawn.sts.test";
    send_expecting(
        rcpt,
        &[],
        ["delivered", "untrusted", "opportunistic", "opportunistic"],
    );
}

// ---------------------------------------------------------------------------------------------
// `danemta serve`

/// A `danemta serve` on a queue directory of its own, killed when dropped.
struct Serve {
    child: std::process::Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Starts a daemon on `queue` (created if missing) that relays for loopback clients and
    /// delivers with the lab's resolver and the MTA-STS CA as an extra PKIX anchor.
    fn start(queue: &std::path::Path) -> Serve {
        let w = world();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
        };
        let (listen, metrics) = (free(), free());
        std::fs::create_dir_all(queue).unwrap();
        let config = queue.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
hostname = "relay.sts.test"
[[server.listen]]
address = "{listen}"
mode = "smtp"
[dns]
resolver = "trust-ad@{resolver}"
timeout = "5s"
[queue]
dir = "{queue}"
retry_first = "1s"
retry_max = "2s"
[delivery]
port = 25
ca_file = "{ca}"
[metrics]
listen = "{metrics}"
"#,
                resolver = w.lab.validating_resolver(),
                queue = queue.display(),
                ca = w.ca_file.display(),
            ),
        )
        .unwrap();
        let log = queue.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("DANEMTA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let serve = Serve { child, listen, log };
        let ready = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(listen).is_ok()
        });
        assert!(ready, "serve does not listen:\n{}", serve.log());
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `needle` more than `before` times.
    fn wait_for(&self, needle: &str, before: usize) {
        let seen = (0..200).any(|_| {
            let n = self.log().matches(needle).count();
            if n <= before {
                std::thread::sleep(Duration::from_millis(100));
            }
            n > before
        });
        assert!(seen, "no new {needle:?} in the log:\n{}", self.log());
    }

    /// Submits one message for `rcpt` over SMTP; asserts `250` after the data.
    fn submit(&self, rcpt: &str) {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(self.listen).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut io = BufReader::new(stream);
        let mut expect = |send: &str, code: &str| {
            io.get_mut().write_all(send.as_bytes()).unwrap();
            loop {
                let mut line = String::new();
                io.read_line(&mut line).unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    assert!(line.starts_with(code), "{send:?}: {line:?}");
                    return;
                }
            }
        };
        expect("", "220");
        expect("EHLO client.test\r\n", "250");
        expect("MAIL FROM:<a@client.test>\r\n", "250");
        expect(&format!("RCPT TO:<{rcpt}>\r\n"), "250");
        expect("DATA\r\n", "354");
        expect(&format!("Subject: sts\r\n\r\nhello {rcpt}\r\n.\r\n"), "250");
        expect("QUIT\r\n", "221");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The downgrade attack on a cached policy (RFC 8461 §10.2): once the daemon has an
/// `enforce` policy in its queue store, an attacker who blocks the policy host cannot make it
/// deliver to a host that fails PKIX — not even after a restart. A daemon without the cached
/// policy, under the same attack, delivers opportunistically: the cache is what protects.
#[test]
fn serve_keeps_a_cached_enforce_policy_across_a_restart_and_a_blocked_policy_host() {
    let w = world();
    let dir = tempdir("serve-cached");
    let cited = "RFC 8461 §4.2";

    // The policy is fetched and cached; the MX fails PKIX: deferred.
    let first = Serve::start(&dir.join("queue"));
    first.submit("u@cached.sts.test");
    first.wait_for(cited, 0);
    drop(first);

    // The attacker blocks the policy host; the daemon restarts on the same queue.
    w.sts.set_policy(
        "cached.sts.test",
        Reply::content(503, Some("text/plain"), "blocked"),
    );
    let again = Serve::start(&dir.join("queue"));
    let before = again.log().matches(cited).count();
    again.wait_for(cited, before);
    assert!(
        !got(&w.foreign, "u@cached.sts.test"),
        "delivered to a host that fails PKIX:\n{}",
        again.log()
    );

    // Without the cache, the blocked fetch is no policy: delivered opportunistically.
    let fresh = Serve::start(&dir.join("fresh"));
    fresh.submit("v@cached.sts.test");
    assert!(got(&w.foreign, "v@cached.sts.test"), "{}", fresh.log());
    assert!(
        fresh.log().contains("MTA-STS for cached.sts.test"),
        "{}",
        fresh.log()
    );
    assert!(!got(&w.foreign, "u@cached.sts.test"), "{}", again.log());
    drop((again, fresh));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory under the lab's temporary root, emptied first.
fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("danemta-mta-sts-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `danemta report tls` for `domain` today, from the daemon's queue: the RFC 8460 JSON.
fn tls_report(queue: &std::path::Path, domain: &str) -> Value {
    let day = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "report",
            "tls",
            "--json",
            "--domain",
            domain,
            "--day",
            day.trim(),
        ])
        .arg("--config")
        .arg(queue.with_extension("toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The daemon counts each delivery's sessions for TLS-RPT (RFC 8460 §4) as it goes: a
/// PKIX-verified session to an enforce domain is a success under policy type `sts`, a
/// certificate of another CA a `certificate-not-trusted` failure with the MX host and
/// address, and a DANE domain's sessions count under `tlsa`.
#[test]
fn serve_counts_the_sessions_of_each_policy_for_tls_rpt() {
    let dir = tempdir("serve-tlsrpt");
    let queue = dir.join("queue");
    let serve = Serve::start(&queue);
    serve.submit("t@enforce.sts.test");
    serve.submit("t@badcert.sts.test");
    serve.submit("t@dane.sts.test");
    assert!(got(&world().valid, "t@enforce.sts.test"), "{}", serve.log());
    assert!(got(&world().foreign, "t@dane.sts.test"), "{}", serve.log());
    serve.wait_for("RFC 8461 §4.2", 0);
    // Counting runs after each batch, off the delivery path: give it a moment.
    let policy = |domain: &str| {
        let mut last = Value::Null;
        for _ in 0..50 {
            last = tls_report(&queue, domain);
            if last["policies"].as_array().is_some_and(|p| !p.is_empty()) {
                return last["policies"][0].clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no policy counted for {domain}: {last:#}\n{}", serve.log());
    };
    let ok = policy("enforce.sts.test");
    assert_eq!(ok["policy"]["policy-type"], "sts", "{ok:#}");
    assert_eq!(ok["summary"]["total-successful-session-count"], 1, "{ok:#}");
    assert_eq!(ok["summary"]["total-failure-session-count"], 0, "{ok:#}");

    let bad = policy("badcert.sts.test");
    assert_eq!(bad["policy"]["policy-type"], "sts", "{bad:#}");
    assert!(
        bad["summary"]["total-failure-session-count"].as_u64() >= Some(1),
        "{bad:#}"
    );
    let detail = &bad["failure-details"][0];
    assert_eq!(detail["result-type"], "certificate-not-trusted", "{bad:#}");
    assert_eq!(
        detail["receiving-mx-hostname"], "mx.badcert.sts.test",
        "{bad:#}"
    );

    let dane = policy("dane.sts.test");
    assert_eq!(dane["policy"]["policy-type"], "tlsa", "{dane:#}");
    assert_eq!(
        dane["summary"]["total-successful-session-count"], 1,
        "{dane:#}"
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A finished day's report reaches the domain's TLS-RPT mailbox (RFC 8460 §5.3): the daemon
/// finds yesterday's counters at start, looks up `_smtp._tls`, queues the report mail
/// through itself, and a real Postfix receives it with its gzip attachment.
#[test]
fn serve_mails_yesterdays_report_to_the_tls_rpt_address() {
    let dir = tempdir("serve-report-mail");
    let queue = dir.join("queue");
    let yesterday = relay::queue::now() - 86_400;
    let day = yesterday - yesterday.rem_euclid(86_400);
    {
        let (store, _) = relay::queue::LocalStore::open(&queue, relay::queue::now()).unwrap();
        use relay::queue::Store as _;
        store
            .add_tls_counts(&[relay::queue::TlsCountRecord {
                day,
                domain: "enforce.sts.test".parse().unwrap(),
                policy_type: "sts".into(),
                policy_strings: vec!["version: STSv1".into(), "mode: enforce".into()],
                policy_mx: vec!["mx.enforce.sts.test".into()],
                result: Some("certificate-not-trusted".into()),
                receiving_mx: "mx.enforce.sts.test".into(),
                sending_ip: None,
                receiving_ip: Some([127, 0, 0, 1].into()),
                sessions: 3,
            }])
            .unwrap();
    }
    let serve = Serve::start(&queue);
    let w = world();
    let report = (0..100).find_map(|_| {
        let found = w.valid.delivered().into_iter().find(|m| {
            m.contains("Report Domain: enforce.sts.test") && m.contains("application/tlsrpt+gzip")
        });
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    let report = report.unwrap_or_else(|| panic!("no report mail arrived:\n{}", serve.log()));
    assert!(
        report.contains("TLS-Report-Domain: enforce.sts.test"),
        "{report}"
    );
    assert!(report.contains("TLS-Required: No"), "{report}");
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
