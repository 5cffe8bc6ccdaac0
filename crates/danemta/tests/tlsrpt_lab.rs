//! TLS reporting (RFC 8460), end to end on the relay's side: delivery attempts counted into
//! a real queue store with `relay::tlsrpt::record`, `danemta report tls` reading them back as
//! the report that would be sent, and a report POSTed over HTTPS to a lab host under a
//! private CA (PKIX, as for MTA-STS policy fetches).
//!
//! The attempts are built from JSON, the form the queue stores them in, so that the test
//! states what a delivery recorded rather than how the smtp crate builds it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use danemta_lab::https::{HttpsServer, HttpsSpec, Reply};
use danemta_lab::mta_sts::tls_rpt_txt;
use danemta_lab::pki::{TestCa, TestCert};
use dns::DnsName;
use relay::queue::{LocalStore, Store};
use relay::tlsrpt::{self, Reporter, SendOutcome, Sender, StsState};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use smtp::Attempt;
use sts::report::{PolicyType, Report, ReportDay, ResultType, Uploader};
use sts::{TxtAnswer, TxtResolver};

const DAY: &str = "2027-01-15";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("danemta-tlsrpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// A configuration naming the relay and its queue in here.
    fn config(&self) -> PathBuf {
        let config = self.0.join("danemta.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nhostname = \"relay.example.org\"\n[queue]\ndir = {:?}\n",
                self.queue()
            ),
        )
        .unwrap();
        config
    }

    fn queue(&self) -> PathBuf {
        self.0.join("queue")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

fn day() -> ReportDay {
    DAY.parse().unwrap()
}

/// A time in the middle of the day.
fn during() -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(day().start_unix()).unwrap() + 43_200)
}

/// An attempt as the queue stores it: a verified TLS session that delivered, with `changes`.
fn attempt(changes: Value) -> Attempt {
    let mut a = json!({
        "host": "mx.example.com", "address": "192.0.2.25", "port": 25,
        "sni": "mx.example.com", "security": "verified", "delivered": true,
        "dane": {"state": "not-applicable", "tlsa": []},
        "tls": {"version": "TLSv1.3", "cipher": "TLS13_AES_256_GCM_SHA384"},
        "dnssec": {"mx": "insecure", "a": "insecure", "aaaa": "insecure", "tlsa": null},
        "reason": "message accepted: 250 2.0.0 Ok", "rule_id": "sts-enforce",
        "mechanism": "mta-sts", "replies": [],
    });
    for (k, v) in changes.as_object().unwrap() {
        a[k] = v.clone();
    }
    serde_json::from_value(a).unwrap()
}

/// A PKIX failure under MTA-STS: the certificate expired.
fn expired(address: &str) -> Attempt {
    attempt(json!({
        "address": address, "tls": null, "security": "none", "delivered": false,
        "failure": {"kind": "tls-handshake"},
        "reason": "TLS handshake failed: invalid peer certificate: certificate expired: verification time 1800000000 (UNIX), but certificate is not valid after 1700000000 (100000000 seconds ago)",
    }))
}

fn enforce() -> sts::Policy {
    sts::Policy::new(
        "1".parse().unwrap(),
        sts::Mode::Enforce,
        vec!["mx.example.com".parse().unwrap()],
        604_800,
    )
    .unwrap()
}

/// Counts, for `example.com` on [`DAY`]: 3 good MTA-STS sessions, 2 expired certificates at
/// one address and 1 at another (over three batches, one of them holding a copy of an
/// attempt shared by two messages), a DANE session and a plaintext one to another domain.
fn fill(queue: &Path) {
    let (store, _) = LocalStore::open(queue, 0).unwrap();
    let policy = enforce();
    let sts = StsState::Policy(&policy);
    let d = n("example.com");
    let shared = expired("192.0.2.25");
    let counted = tlsrpt::record(
        &store,
        &d,
        sts,
        &[attempt(json!({})), shared.clone(), shared],
        during(),
    )
    .unwrap();
    assert_eq!(counted, 2, "a copy of the same attempt counts once");
    tlsrpt::record(
        &store,
        &d,
        sts,
        &[
            attempt(json!({"reason": "second"})),
            attempt(json!({"reason": "third"})),
            expired("192.0.2.25"),
            expired("192.0.2.26"),
        ],
        during(),
    )
    .unwrap();
    let tlsa = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";
    tlsrpt::record(
        &store,
        &d,
        StsState::None,
        &[attempt(json!({
            "host": "mx2.example.com", "mechanism": "dane", "rule_id": "dane-auth",
            "dane": {"state": "usable", "tlsa": [tlsa], "matched": tlsa, "depth": 0},
        }))],
        during(),
    )
    .unwrap();
    tlsrpt::record(
        &store,
        &n("other.example"),
        StsState::None,
        &[attempt(json!({
            "host": "mx.other.example", "mechanism": "opportunistic",
            "rule_id": "opportunistic", "security": "plaintext", "tls": null,
        }))],
        during(),
    )
    .unwrap();
}

fn danemta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(args)
        .output()
        .unwrap()
}

fn report_tls(config: &Path, domain: &str, day: &str, json: bool) -> Output {
    let config = config.to_str().unwrap();
    let mut args = vec![
        "report", "tls", "--domain", domain, "--day", day, "--config", config,
    ];
    if json {
        args.push("--json");
    }
    danemta(&args)
}

#[test]
fn report_tls_json_is_the_rfc_8460_report_with_the_counts() {
    let scratch = Scratch::new("report");
    let config = scratch.config();
    fill(&scratch.queue());

    let out = report_tls(&config, "example.com", DAY, true);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The members of RFC 8460 §4.4, and no others at the top.
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "contact-info",
            "date-range",
            "organization-name",
            "policies",
            "report-id"
        ]
    );
    assert_eq!(v["organization-name"], "relay.example.org");
    assert_eq!(v["contact-info"], "postmaster@relay.example.org");
    assert_eq!(v["report-id"], "2027-01-15_example.com@relay.example.org");
    assert_eq!(
        v["date-range"],
        json!({"start-datetime": "2027-01-15T00:00:00Z", "end-datetime": "2027-01-15T23:59:59Z"})
    );
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{v:#}");
    let sts = policies
        .iter()
        .find(|p| p["policy"]["policy-type"] == "sts")
        .unwrap();
    assert_eq!(
        sts["policy"],
        json!({
            "policy-type": "sts",
            "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 604800"],
            "policy-domain": "example.com",
            "mx-host": ["mx.example.com"],
        })
    );
    assert_eq!(
        sts["summary"],
        json!({"total-successful-session-count": 3, "total-failure-session-count": 3})
    );
    let details = sts["failure-details"].as_array().unwrap();
    assert_eq!(
        details,
        &[
            json!({"result-type": "certificate-expired", "receiving-mx-hostname": "mx.example.com",
                   "receiving-ip": "192.0.2.25", "failed-session-count": 2}),
            json!({"result-type": "certificate-expired", "receiving-mx-hostname": "mx.example.com",
                   "receiving-ip": "192.0.2.26", "failed-session-count": 1}),
        ]
    );
    let tlsa = policies
        .iter()
        .find(|p| p["policy"]["policy-type"] == "tlsa")
        .unwrap();
    assert_eq!(tlsa["policy"]["mx-host"], json!(["mx2.example.com"]));
    assert_eq!(tlsa["summary"]["total-successful-session-count"], 1);
    assert!(tlsa.get("failure-details").is_none());
    // The model reads it back: the JSON is the report.
    let report = Report::from_json(&out.stdout).unwrap();
    assert_eq!(report.policies.len(), 2);

    // Another domain, and the human summary.
    let out = report_tls(&config, "other.example", DAY, false);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("TLS report (RFC 8460) for other.example, 2027-01-15"),
        "{text}"
    );
    assert!(
        text.contains("policy no-policy-found: 0 successful, 1 failed"),
        "{text}"
    );
    assert!(
        text.contains("starttls-not-supported mx.other.example [192.0.2.25]: 1 session"),
        "{text}"
    );
}

#[test]
fn report_tls_without_counters_is_an_empty_report_and_bad_input_is_a_usage_error() {
    let scratch = Scratch::new("empty");
    let config = scratch.config();
    fill(&scratch.queue());
    // Another day, another domain: nothing counted, still a valid report.
    for (domain, day) in [("example.com", "2027-01-16"), ("nobody.example", DAY)] {
        let out = report_tls(&config, domain, day, true);
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["policies"], json!([]), "{v}");
        assert_eq!(
            v["date-range"]["start-datetime"],
            format!("{day}T00:00:00Z")
        );
    }
    let out = report_tls(&config, "nobody.example", DAY, false);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no sessions counted"));
    for (domain, day) in [
        ("example.com", "2027-02-30"),
        ("example.com", "15.01.2027"),
        ("bad..name", DAY),
    ] {
        let out = report_tls(&config, domain, day, true);
        assert_eq!(out.status.code(), Some(64), "{domain} {day}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

/// TXT answers from the records a lab zone would hold.
struct ZoneTxt(Vec<(String, Vec<u8>)>);

impl ZoneTxt {
    /// From zone lines `owner. TXT "text"` (the lab's [`tls_rpt_txt`]).
    fn from_lines(lines: &str) -> Self {
        Self(
            lines
                .lines()
                .filter_map(|l| {
                    let (owner, rest) = l.split_once(". TXT ")?;
                    Some((
                        owner.to_owned(),
                        rest.trim().trim_matches('"').as_bytes().to_vec(),
                    ))
                })
                .collect(),
        )
    }
}

impl TxtResolver for ZoneTxt {
    async fn txt(&self, name: &DnsName) -> TxtAnswer {
        let records: Vec<Vec<u8>> = self
            .0
            .iter()
            .filter(|(owner, _)| owner == name.as_str())
            .map(|(_, text)| text.clone())
            .collect();
        if records.is_empty() {
            TxtAnswer::NoRecords
        } else {
            TxtAnswer::Records(records)
        }
    }
}

/// One HTTP request as a minimal HTTPS receiver read it.
struct Received {
    head: String,
    body: Vec<u8>,
}

/// An HTTPS receiver for one POST on 127.0.0.1 with `cert`: reads the request (by its
/// `Content-Length`), answers `204`, and hands the request over. The lab's HTTPS server
/// records requests without their bodies; this one keeps the body.
fn receiver(cert: &TestCert) -> (SocketAddr, mpsc::Receiver<Received>) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else {
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(conn) = rustls::ServerConnection::new(Arc::new(config)) else {
            return;
        };
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if tls.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if tls.read_exact(&mut body).is_err() {
            return;
        }
        let mut tls = tls.into_inner();
        let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let _ = tls.flush();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tx.send(Received { head, body });
    });
    (addr, rx)
}

fn roots(ca: &TestCa) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .unwrap();
    roots
}

/// A report for a finished day goes to the `https:` URI of the domain's `_smtp._tls` record
/// as a POST of `application/tlsrpt+gzip` (RFC 8460 §5.3), the host authenticated with PKIX;
/// the gzip holds the day's counts. Sending again sends nothing: the report is done.
#[tokio::test]
async fn an_https_report_is_posted_gzipped_once() {
    let scratch = Scratch::new("https");
    fill(&scratch.queue());
    let ca = TestCa::new("TLS-RPT lab CA").unwrap();
    let cert = TestCert::ca_signed(&["reports.example.test"], &ca, true).unwrap();
    let (addr, received) = receiver(&cert);
    // The lab's HTTPS server for the other domain: it records the request line and SNI.
    let lab = HttpsServer::start(
        HttpsSpec::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            .host(
                "collector.example.test",
                &TestCert::ca_signed(&["collector.example.test"], &ca, true).unwrap(),
            )
            .route(
                "collector.example.test",
                "/v1/tlsrpt",
                Reply::content(200, Some("text/plain"), "ok"),
            ),
    )
    .unwrap();
    let zone = format!(
        "{}{}",
        tls_rpt_txt(
            "example.com",
            &format!("https://reports.example.test:{}/tlsrpt", addr.port())
        ),
        tls_rpt_txt(
            "other.example",
            &format!(
                "https://collector.example.test:{}/v1/tlsrpt",
                lab.addr().port()
            )
        ),
    );
    let txt = ZoneTxt::from_lines(&zone);
    let uploader = Uploader::new(roots(&ca))
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    let reporter = Reporter::for_host(&n("relay.example.org"));
    let sender = Sender {
        txt: &txt,
        addresses: &sts::FixedAddresses(vec!["127.0.0.1".parse().unwrap()]),
        uploader: &uploader,
        reporter: &reporter,
    };
    let (store, _) = LocalStore::open(&scratch.queue(), 0).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let after = UNIX_EPOCH + Duration::from_secs(u64::try_from(day().end_unix()).unwrap() + 3600);

    let sent = tlsrpt::send_reports_for_day(&store, &sender, day(), after)
        .await
        .unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for s in &sent {
        assert!(
            matches!(&s.outcome, SendOutcome::Sent { queued: None, posted, failed } if posted.len() == 1 && failed.is_empty()),
            "{s:?}"
        );
    }
    let request = received.recv_timeout(Duration::from_secs(10)).unwrap();
    let head = request.head.to_ascii_lowercase();
    assert!(
        head.starts_with("post /tlsrpt http/1.1\r\n"),
        "{}",
        request.head
    );
    assert!(
        head.contains("\r\ncontent-type: application/tlsrpt+gzip\r\n"),
        "{}",
        request.head
    );
    assert!(
        head.contains(&format!(
            "\r\nhost: reports.example.test:{}\r\n",
            addr.port()
        )),
        "{}",
        request.head
    );
    assert_eq!(&request.body[..2], &[0x1f, 0x8b], "gzip");
    let report = Report::from_gzip(&request.body).unwrap();
    assert_eq!(report.report_id, "2027-01-15_example.com@relay.example.org");
    let sts = report
        .policies
        .iter()
        .find(|p| p.policy.policy_type == PolicyType::Sts)
        .unwrap();
    assert_eq!(sts.summary.total_successful_session_count, 3);
    assert_eq!(sts.summary.total_failure_session_count, 3);
    assert!(
        sts.failure_details
            .iter()
            .all(|f| f.result_type == ResultType::CertificateExpired)
    );
    // The lab server saw the other domain's POST, by SNI and path.
    let requests = lab.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/tlsrpt");
    assert_eq!(
        requests[0].server_name.as_deref(),
        Some("collector.example.test")
    );

    // Done: nothing is sent again.
    let again = tlsrpt::send_reports_for_day(&store, &sender, day(), after)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(lab.requests().len(), 1);
}

/// A report host whose certificate does not chain to the trusted roots gets nothing, and the
/// report stays due (RFC 8460 §5.3: try again later).
#[tokio::test]
async fn an_untrusted_report_host_gets_nothing_and_the_report_stays_due() {
    let scratch = Scratch::new("untrusted");
    fill(&scratch.queue());
    let ca = TestCa::new("TLS-RPT lab CA").unwrap();
    let other = TestCa::new("someone else").unwrap();
    let cert = TestCert::ca_signed(&["reports.example.test"], &other, true).unwrap();
    let (addr, received) = receiver(&cert);
    let txt = ZoneTxt::from_lines(&tls_rpt_txt(
        "example.com",
        &format!("https://reports.example.test:{}/tlsrpt", addr.port()),
    ));
    let uploader = Uploader::new(roots(&ca))
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    let reporter = Reporter::for_host(&n("relay.example.org"));
    let sender = Sender {
        txt: &txt,
        addresses: &sts::FixedAddresses(vec!["127.0.0.1".parse().unwrap()]),
        uploader: &uploader,
        reporter: &reporter,
    };
    let (store, _) = LocalStore::open(&scratch.queue(), 0).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let after = UNIX_EPOCH + Duration::from_secs(u64::try_from(day().end_unix()).unwrap() + 3600);
    let sent = tlsrpt::send_reports_for_day(&store, &sender, day(), after)
        .await
        .unwrap();
    let example = sent.iter().find(|s| s.domain == n("example.com")).unwrap();
    assert!(
        matches!(&example.outcome, SendOutcome::Retry(why) if why.contains("TLS")),
        "{example:?}"
    );
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err());
    assert!(
        store
            .tls_reports_due(day().start_unix())
            .unwrap()
            .contains(&n("example.com"))
    );
}
