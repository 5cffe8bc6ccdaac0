//! The metrics endpoint end to end: install the exporter, record values, scrape `/metrics`
//! over a raw HTTP/1.1 connection. `install` sets the process-wide recorder, so every
//! assertion lives in the one test function of this file.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use relay::metrics::{self, MetricsError, Outcome, Rejection};
use smtp::Security;
use smtp::outcome::Rule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A port that was free a moment ago (the exporter cannot report the port of `:0`).
fn free_address() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// `GET /metrics` with HTTP/1.1 and `Connection: close`; the status line and the body.
async fn scrape(address: SocketAddr) -> (String, String) {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the response within 10 s")
        .expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The sample line `series value` is in `body`.
fn has(body: &str, series: &str, value: &str) -> bool {
    body.lines().any(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .is_some_and(|v| v.trim() == value)
    })
}

#[tokio::test]
async fn install_serves_the_recorded_metrics_and_reports_errors() {
    // An address in use is refused with a clear error naming it, and installs nothing.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let taken_address = taken.local_addr().expect("local address");
    let error = metrics::install(taken_address).expect_err("the address is in use");
    assert!(
        matches!(error, MetricsError::Bind { address, .. } if address == taken_address),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&taken_address.to_string()),
        "{error}"
    );
    drop(taken);

    let address = free_address();
    metrics::install(address).expect("install the exporter");

    metrics::delivery(Outcome::Sent, Some(Security::Verified));
    metrics::delivery(Outcome::Sent, Some(Security::Verified));
    metrics::delivery(Outcome::Deferred, None);
    metrics::delivery(Outcome::Expired, Some(Security::Untrusted));
    metrics::dane_failure(Rule::DaneAuth);
    metrics::retry();
    metrics::queue(3, 120);
    metrics::session("smtp");
    metrics::session("submissions");
    metrics::rejection(Rejection::RelayDenied);
    metrics::accepted(2048);

    let (status, body) = scrape(address).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for (series, value) in [
        (
            r#"danemta_deliveries_total{outcome="sent",security="verified"}"#,
            "2",
        ),
        (
            r#"danemta_deliveries_total{outcome="deferred",security="none"}"#,
            "1",
        ),
        (
            r#"danemta_deliveries_total{outcome="expired",security="untrusted"}"#,
            "1",
        ),
        (
            r#"danemta_deliveries_total{outcome="bounced",security="plaintext"}"#,
            "0",
        ),
        (r#"danemta_dane_failures_total{reason="dane-auth"}"#, "1"),
        (
            r#"danemta_dane_failures_total{reason="dane-mandatory"}"#,
            "0",
        ),
        ("danemta_retries_total", "1"),
        ("danemta_queue_messages", "3"),
        ("danemta_queue_oldest_age_seconds", "120"),
        (r#"danemta_smtp_sessions_total{listener="smtp"}"#, "1"),
        (
            r#"danemta_smtp_sessions_total{listener="submissions"}"#,
            "1",
        ),
        (r#"danemta_smtp_sessions_total{listener="submission"}"#, "0"),
        (
            r#"danemta_smtp_rejections_total{reason="relay-denied"}"#,
            "1",
        ),
        (r#"danemta_smtp_rejections_total{reason="too-big"}"#, "0"),
        ("danemta_messages_accepted_total", "1"),
        ("danemta_messages_accepted_bytes_total", "2048"),
        (r#"danemta_dns_lookups_total{dnssec="bogus"}"#, "0"),
        (r#"danemta_dns_cache_requests_total{result="hit"}"#, "0"),
        (r#"danemta_dns_cache_requests_total{result="miss"}"#, "0"),
    ] {
        assert!(
            has(&body, series, value),
            "{series} {value} not in:\n{body}"
        );
    }
    for name in [
        "danemta_deliveries_total",
        "danemta_dane_failures_total",
        "danemta_queue_messages",
        "danemta_smtp_rejections_total",
        "danemta_dns_lookups_total",
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name}:\n{body}"
        );
    }
    assert!(
        body.contains("# TYPE danemta_deliveries_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE danemta_queue_messages gauge"),
        "{body}"
    );

    // The gauges follow the latest pass.
    metrics::queue(0, 0);
    let (_, body) = scrape(address).await;
    assert!(has(&body, "danemta_queue_messages", "0"), "{body}");

    // A second install is refused, and leaves nothing listening on its address.
    let second = free_address();
    let error = metrics::install(second).expect_err("a recorder is installed");
    assert!(matches!(error, MetricsError::AlreadyInstalled), "{error:?}");
    TcpListener::bind(second).expect("the refused install released its address");
}
