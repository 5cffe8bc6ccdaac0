//! The daemon's metrics, served in the Prometheus text format.
//!
//! [`install`] puts a Prometheus recorder behind the [`metrics`] facade and serves it over
//! HTTP (`[metrics] listen`, `127.0.0.1:9325` by default, scraped at `/metrics`). The other
//! functions record what the scheduler and the listeners see; before `install` (and in tests
//! that do not install) they are no-ops, as the facade is without a recorder.
//!
//! Every label takes its value from a closed set of typed values — never a host name, an
//! address or a reply text — so that the number of series stays bounded whatever the mail.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `danemta_deliveries_total` | counter | `outcome` (`sent`, `deferred`, `bounced`, `expired`), `security` (`verified`, `trusted`, `untrusted`, `plaintext`, `none`) |
//! | `danemta_dane_failures_total` | counter | `reason`: the rule id ([`Rule`], e.g. `dane-auth`) |
//! | `danemta_retries_total` | counter | |
//! | `danemta_queue_messages` | gauge | |
//! | `danemta_queue_oldest_age_seconds` | gauge | |
//! | `danemta_cluster_leader` | gauge | |
//! | `danemta_smtp_sessions_total` | counter | `listener` (`smtp`, `submission`, `submissions`) |
//! | `danemta_smtp_rejections_total` | counter | `reason` (`relay-denied`, `auth-failed`, `too-big`, `other`) |
//! | `danemta_messages_accepted_total` | counter | |
//! | `danemta_messages_accepted_bytes_total` | counter | |
//! | `danemta_tls_handshakes_total` | counter | `resumed` (`true`, `false`) |
//! | `danemta_dns_lookups_total` | counter | `dnssec` (`secure`, `insecure`, `bogus`, `indeterminate`) |
//! | `danemta_dns_cache_requests_total` | counter | `result` (`hit`, `miss`) |
//! | `danemta_tls_certificate_expiry_timestamp_seconds` | gauge | `chain`: the chain's certificate file as configured in `[[server.tls]] cert`, or `self-signed` |
//! | `danemta_own_tlsa_match` | gauge | `host`: `[server] hostname` |
//!
//! The `chain` and `host` labels come from the configuration, not from the mail: their number
//! is that of the configured chains (and one host).
//!
//! `danemta_tls_certificate_expiry_timestamp_seconds` is the earliest notAfter (Unix
//! seconds) among the certificates of each chain the listeners offer, set at start and at
//! every reload (SIGHUP); `(value - time()) / 86400` is the days left. The metrics crate
//! cannot remove a series: a chain that a reload dropped from the configuration keeps its
//! series until the next restart, with the value NaN (no expiry alert compares true on it).
//!
//! `danemta_own_tlsa_match` says whether the TLSA records published for the daemon's own
//! name (`_25._tcp.<hostname>`) authenticate the chains it serves to DANE peers (see
//! [`crate::own_tlsa`]): 1 yes, 0 no (a mismatch or a bogus answer: peers doing DANE defer
//! mail to this host). There is no series while DANE is not in use for the name (no TLSA
//! records, or an insecure zone); if it was set before, it reads NaN from then on.
//!
//! The two DNS counters are recorded by `danemta-dns` (see [`dns::resolver::describe_metrics`]).
//!
//! Nodes sharing a queue (`[queue] store = "postgres"`): counters are each node's own work
//! (sum them over the nodes); the two queue gauges are the whole queue's, the same on every
//! node (take one, or `max`, never the sum); `danemta_cluster_leader` is 1 on the node that
//! sends the TLS-RPT reports ([`crate::queue::Store::leads_cluster`]), 0 on the others.

use std::net::SocketAddr;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use smtp::Security;
use smtp::outcome::Rule;
use thiserror::Error;

/// Counter: recipients whose delivery was decided, by outcome and security.
pub const DELIVERIES: &str = "danemta_deliveries_total";
/// Counter: DANE-protected hosts that could not be used or authenticated, by rule.
pub const DANE_FAILURES: &str = "danemta_dane_failures_total";
/// Counter: messages taken up again after a deferral.
pub const RETRIES: &str = "danemta_retries_total";
/// Gauge: messages in the queue.
pub const QUEUE_MESSAGES: &str = "danemta_queue_messages";
/// Gauge: age in seconds of the oldest queued message.
pub const QUEUE_OLDEST_AGE: &str = "danemta_queue_oldest_age_seconds";
/// Gauge: 1 on the node that leads the nodes sharing the queue, else 0.
pub const CLUSTER_LEADER: &str = "danemta_cluster_leader";
/// Counter: SMTP sessions opened, by listener mode.
pub const SESSIONS: &str = "danemta_smtp_sessions_total";
/// Counter: commands rejected by a listener, by reason.
pub const REJECTIONS: &str = "danemta_smtp_rejections_total";
/// Counter: messages accepted (queued) by a listener.
pub const ACCEPTED: &str = "danemta_messages_accepted_total";
/// Counter: bytes of the messages accepted by a listener.
pub const ACCEPTED_BYTES: &str = "danemta_messages_accepted_bytes_total";
/// Counter: outgoing attempts over TLS, by whether the session was resumed (RFC 8446 §2.2,
/// RFC 5077) or came from a full handshake.
pub const TLS_HANDSHAKES: &str = "danemta_tls_handshakes_total";

/// Gauge: the earliest notAfter (Unix seconds) of the certificates of an offered chain.
pub const CERT_EXPIRY: &str = "danemta_tls_certificate_expiry_timestamp_seconds";
/// Gauge: 1 when the TLSA records published for the daemon's own name authenticate the
/// chains it serves, 0 when not.
pub const OWN_TLSA_MATCH: &str = "danemta_own_tlsa_match";

/// Why [`install`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The metrics address could not be bound (in use, not local, not permitted).
    #[error("cannot serve metrics on {address}: {source}")]
    Bind {
        /// The `[metrics] listen` address.
        address: SocketAddr,
        /// What the exporter reported.
        #[source]
        source: BuildError,
    },
    /// A metrics recorder is already installed in this process.
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
    /// `install` was called outside a tokio runtime.
    #[error("metrics can only be served from within a tokio runtime")]
    NoRuntime,
    /// The exporter could not be set up for another reason.
    #[error("cannot set up the metrics exporter: {0}")]
    Exporter(#[source] BuildError),
}

/// Installs the global recorder and serves Prometheus text format at `http://LISTEN/metrics`
/// (the exporter answers any path but `/health` with the metrics, and `/health` with `OK`).
///
/// Must be called from within a tokio runtime: the HTTP server is spawned onto it. Every
/// metric is described, and every series of a closed label set registered at zero, so that
/// a scrape shows them all from the start.
///
/// # Errors
///
/// [`MetricsError::Bind`] when `listen` cannot be bound, [`MetricsError::AlreadyInstalled`]
/// when a recorder is already installed (nothing is then left listening),
/// [`MetricsError::NoRuntime`] outside a tokio runtime.
pub fn install(listen: SocketAddr) -> Result<(), MetricsError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| MetricsError::NoRuntime)?;
    let (recorder, exporter) = {
        let _entered = runtime.enter();
        PrometheusBuilder::new()
            .with_http_listener(listen)
            .build()
            .map_err(|e| match e {
                BuildError::FailedToCreateHTTPListener(_) => MetricsError::Bind {
                    address: listen,
                    source: e,
                },
                other => MetricsError::Exporter(other),
            })?
    };
    // Only serve once the recorder is ours: on failure the exporter (and its socket) is
    // dropped here, unlike `PrometheusBuilder::install`, which would keep serving it.
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    runtime.spawn(exporter);
    describe();
    Ok(())
}

/// Describes every metric and registers the closed label sets at zero.
fn describe() {
    describe_counter!(
        DELIVERIES,
        Unit::Count,
        "Recipients whose delivery was decided, by outcome and by the security of the attempt that decided it"
    );
    describe_counter!(
        DANE_FAILURES,
        Unit::Count,
        "DANE-protected hosts that could not be used or authenticated, by the rule id that applied"
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Messages taken up again after a deferral"
    );
    describe_gauge!(QUEUE_MESSAGES, Unit::Count, "Messages in the queue");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest message in the queue"
    );
    describe_gauge!(
        CLUSTER_LEADER,
        "1 on the node that sends the TLS-RPT reports for the nodes sharing the queue"
    );
    describe_counter!(
        SESSIONS,
        Unit::Count,
        "SMTP sessions opened, by listener mode"
    );
    describe_counter!(
        REJECTIONS,
        Unit::Count,
        "SMTP commands rejected by a listener, by reason"
    );
    describe_counter!(
        ACCEPTED,
        Unit::Count,
        "Messages accepted (queued) by a listener"
    );
    describe_counter!(
        ACCEPTED_BYTES,
        Unit::Bytes,
        "Bytes of the messages accepted (queued) by a listener"
    );
    describe_counter!(
        TLS_HANDSHAKES,
        Unit::Count,
        "Outgoing delivery attempts over TLS, by whether the TLS session was resumed"
    );
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "Earliest notAfter (Unix time) of the certificates of each chain the listeners offer, by chain (certificate file, or self-signed)"
    );
    describe_gauge!(
        OWN_TLSA_MATCH,
        "1 when the TLSA records published at _25._tcp.<host> authenticate the chains the listeners serve for it, 0 on a mismatch or a bogus answer; absent while DANE is not in use for the name"
    );
    dns::resolver::describe_metrics();

    for outcome in Outcome::ALL {
        for security in SECURITIES {
            counter!(DELIVERIES, "outcome" => outcome.label(), "security" => security_label(security))
                .increment(0);
        }
    }
    for rule in Rule::ALL {
        counter!(DANE_FAILURES, "reason" => rule_id(rule)).increment(0);
    }
    for mode in LISTENER_MODES {
        counter!(SESSIONS, "listener" => mode).increment(0);
    }
    for kind in Rejection::ALL {
        counter!(REJECTIONS, "reason" => kind.label()).increment(0);
    }
    counter!(RETRIES).increment(0);
    counter!(ACCEPTED).increment(0);
    counter!(ACCEPTED_BYTES).increment(0);
    for resumed in [false, true] {
        counter!(TLS_HANDSHAKES, "resumed" => resumed_label(resumed)).increment(0);
    }
}

fn resumed_label(resumed: bool) -> &'static str {
    if resumed { "true" } else { "false" }
}

/// What became of one recipient, as counted in `danemta_deliveries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted by the next hop.
    Sent,
    /// To be tried again later.
    Deferred,
    /// Failed permanently; a delivery status notification goes to the sender.
    Bounced,
    /// Deferred past the queue lifetime, then bounced.
    Expired,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::Sent,
        Outcome::Deferred,
        Outcome::Bounced,
        Outcome::Expired,
    ];

    /// The `outcome` label value (Postfix's `status=` words, and `expired`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::Expired => "expired",
        }
    }
}

/// Why a listener rejected a command, as counted in `danemta_smtp_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A recipient the client may not relay to (`554 5.7.1`).
    RelayDenied,
    /// Authentication failed (`535 5.7.8`).
    AuthFailed,
    /// The message is larger than `max_message_size` (`552 5.3.4`).
    TooBig,
    /// A connection past `max_connections` or `max_connections_per_client` (`421`).
    TooManyConnections,
    /// The queue's file system is (nearly) full (`452 4.3.1`).
    InsufficientStorage,
    /// Any other rejection.
    Other,
}

impl Rejection {
    /// Every kind of rejection.
    pub const ALL: [Rejection; 6] = [
        Rejection::RelayDenied,
        Rejection::AuthFailed,
        Rejection::TooBig,
        Rejection::TooManyConnections,
        Rejection::InsufficientStorage,
        Rejection::Other,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::RelayDenied => "relay-denied",
            Rejection::AuthFailed => "auth-failed",
            Rejection::TooBig => "too-big",
            Rejection::TooManyConnections => "too-many-connections",
            Rejection::InsufficientStorage => "insufficient-storage",
            Rejection::Other => "other",
        }
    }
}

/// Every security level, for registering the series.
const SECURITIES: [Option<Security>; 5] = [
    Some(Security::Verified),
    Some(Security::Trusted),
    Some(Security::Untrusted),
    Some(Security::Plaintext),
    Some(Security::None),
];

/// The listener modes of `[[server.listen]] mode`.
const LISTENER_MODES: [&str; 3] = ["smtp", "submission", "submissions"];

/// The `security` label value: the serialized [`Security`]; no attempt counts as `none`.
fn security_label(security: Option<Security>) -> &'static str {
    match security {
        Some(Security::Verified) => "verified",
        Some(Security::Trusted) => "trusted",
        Some(Security::Untrusted) => "untrusted",
        Some(Security::Plaintext) => "plaintext",
        Some(Security::None) | None => "none",
    }
}

/// The stable id of a rule: its serialized form, as in the queue and `send --json`.
fn rule_id(rule: Rule) -> &'static str {
    match rule {
        Rule::DaneMandatory => "dane-mandatory",
        Rule::DaneAuth => "dane-auth",
        Rule::DaneUnusableRecords => "dane-unusable-records",
        Rule::HostUnusable => "host-unusable",
        Rule::Opportunistic => "opportunistic",
        Rule::PlaintextRetry => "plaintext-retry",
        Rule::DaneOnly => "dane-only",
        Rule::Policy => "policy",
        Rule::Smtp => "smtp",
        Rule::NextMx => "next-mx",
        Rule::Credentials => "credentials",
        Rule::Limits => "limits",
        Rule::StsEnforce => "sts-enforce",
        Rule::StsMxMismatch => "sts-mx-mismatch",
        Rule::StsTesting => "sts-testing",
        Rule::RequireTls => "require-tls",
        Rule::TlsRequiredNo => "tls-required-no",
    }
}

/// The `listener` label value of a mode; anything but the three modes counts as `other`.
fn listener_label(mode: &'static str) -> &'static str {
    LISTENER_MODES
        .into_iter()
        .find(|known| *known == mode)
        .unwrap_or("other")
}

/// One recipient's delivery result: `outcome`, and the security of the attempt that decided
/// it (`None`, no attempt, counts as `none`).
pub fn delivery(outcome: Outcome, security: Option<Security>) {
    counter!(DELIVERIES, "outcome" => outcome.label(), "security" => security_label(security))
        .increment(1);
}

/// A DANE-protected host that could not be used or authenticated, and the rule that applied.
pub fn dane_failure(rule: Rule) {
    counter!(DANE_FAILURES, "reason" => rule_id(rule)).increment(1);
}

/// A message taken up again after a deferral.
pub fn retry() {
    counter!(RETRIES).increment(1);
}

/// The queue after a scheduler pass: `messages` queued, the oldest `oldest_age_seconds` old.
pub fn queue(messages: u64, oldest_age_seconds: u64) {
    // Gauges are f64: exact up to 2^53, far beyond any queue.
    #[allow(clippy::cast_precision_loss)]
    {
        gauge!(QUEUE_MESSAGES).set(messages as f64);
        gauge!(QUEUE_OLDEST_AGE).set(oldest_age_seconds as f64);
    }
}

/// Whether this node leads the nodes sharing the queue.
pub fn leader(leads: bool) {
    gauge!(CLUSTER_LEADER).set(if leads { 1.0 } else { 0.0 });
}

/// A session opened on a listener of `mode` (`smtp`, `submission` or `submissions`; any
/// other value counts as `other`).
pub fn session(mode: &'static str) {
    counter!(SESSIONS, "listener" => listener_label(mode)).increment(1);
}

/// A command rejected by a listener.
pub fn rejection(kind: Rejection) {
    counter!(REJECTIONS, "reason" => kind.label()).increment(1);
}

/// An outgoing TLS handshake (once per connection, not per message carried over it):
/// `resumed` when it resumed an earlier session (the peer authenticated by that session's
/// full handshake), else a full handshake.
pub fn tls_handshake(resumed: bool) {
    counter!(TLS_HANDSHAKES, "resumed" => resumed_label(resumed)).increment(1);
}

/// A message of `bytes` accepted (queued) by a listener.
pub fn accepted(bytes: u64) {
    counter!(ACCEPTED).increment(1);
    counter!(ACCEPTED_BYTES).increment(bytes);
}

/// The chains offered now, each with the earliest notAfter (Unix seconds) of its
/// certificates, by `chain` label. Labels set by an earlier call and absent now read NaN
/// (the series cannot be removed; see the module documentation).
pub fn certificate_expiry<'a>(chains: impl IntoIterator<Item = (&'a str, u64)>) {
    let mut now: Vec<String> = Vec::new();
    for (label, not_after) in chains {
        // Unix seconds are exact in f64 far beyond the year 9999.
        #[allow(clippy::cast_precision_loss)]
        gauge!(CERT_EXPIRY, "chain" => label.to_owned()).set(not_after as f64);
        now.push(label.to_owned());
    }
    let mut previous = match EXPIRY_LABELS.lock() {
        Ok(p) => p,
        Err(poisoned) => poisoned.into_inner(),
    };
    for gone in previous.iter().filter(|l| !now.contains(l)) {
        gauge!(CERT_EXPIRY, "chain" => gone.clone()).set(f64::NAN);
    }
    // A dropped chain stays NaN until it is configured again.
    previous.retain(|l| !now.contains(l));
    previous.extend(now);
}

/// The `chain` labels of `danemta_tls_certificate_expiry_timestamp_seconds` set so far.
static EXPIRY_LABELS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether the TLSA records published for `host` authenticate the chains served for it:
/// `Some(true)` 1, `Some(false)` 0, `None` DANE not in use for the name (no TLSA records, or
/// an insecure zone): NaN if the series exists already, else nothing is recorded.
pub fn own_tlsa_match(host: &str, matched: Option<bool>) {
    let mut shown = match OWN_TLSA_HOSTS.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    let value = match matched {
        Some(true) => 1.0,
        Some(false) => 0.0,
        None if shown.iter().any(|h| h == host) => f64::NAN,
        None => return,
    };
    gauge!(OWN_TLSA_MATCH, "host" => host.to_owned()).set(value);
    if !shown.iter().any(|h| h == host) {
        shown.push(host.to_owned());
    }
}

/// The `host` labels of `danemta_own_tlsa_match` set so far.
static OWN_TLSA_HOSTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};

    use super::*;

    /// Recorded values by (name, sorted labels).
    type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

    /// The recorded values by (name, sorted labels).
    fn values(snapshot: Snapshot) -> Values {
        snapshot
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                ((key.name().to_owned(), labels), value)
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rule_ids_are_the_serialized_rules() {
        for rule in Rule::ALL {
            assert_eq!(
                serde_json::to_value(rule).unwrap(),
                serde_json::Value::from(rule_id(rule)),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn security_labels_are_the_serialized_levels() {
        for security in SECURITIES.into_iter().flatten() {
            assert_eq!(
                serde_json::to_value(security).unwrap(),
                serde_json::Value::from(security_label(Some(security))),
            );
        }
        assert_eq!(security_label(None), "none");
    }

    #[test]
    fn label_sets_are_closed_and_distinct() {
        let outcomes: HashSet<_> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(
            outcomes,
            HashSet::from(["sent", "deferred", "bounced", "expired"])
        );
        let rejections: HashSet<_> = Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            rejections,
            HashSet::from([
                "relay-denied",
                "auth-failed",
                "too-big",
                "too-many-connections",
                "insufficient-storage",
                "other"
            ])
        );
        for mode in ["smtp", "submission", "submissions"] {
            assert_eq!(listener_label(mode), mode);
        }
        assert_eq!(listener_label("lmtp"), "other");
        assert_eq!(listener_label(""), "other");
    }

    #[test]
    fn recording_functions_use_the_documented_names_and_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            describe();
            delivery(Outcome::Sent, Some(Security::Verified));
            delivery(Outcome::Sent, Some(Security::Verified));
            delivery(Outcome::Deferred, None);
            dane_failure(Rule::DaneAuth);
            retry();
            queue(7, 3600);
            leader(true);
            session("submission");
            rejection(Rejection::RelayDenied);
            accepted(1000);
            accepted(24);
            tls_handshake(true);
            tls_handshake(false);
            tls_handshake(false);
        });
        let values = values(snapshotter.snapshot());
        let value = |name: &str, pairs: &[(&str, &str)]| {
            values
                .get(&(name.to_owned(), labels(pairs)))
                .unwrap_or_else(|| panic!("{name} {pairs:?} not recorded"))
        };
        assert_eq!(
            value(DELIVERIES, &[("outcome", "sent"), ("security", "verified")]),
            &DebugValue::Counter(2)
        );
        assert_eq!(
            value(DELIVERIES, &[("outcome", "deferred"), ("security", "none")]),
            &DebugValue::Counter(1)
        );
        assert_eq!(
            value(
                DELIVERIES,
                &[("outcome", "expired"), ("security", "trusted")]
            ),
            &DebugValue::Counter(0)
        );
        assert_eq!(
            value(DANE_FAILURES, &[("reason", "dane-auth")]),
            &DebugValue::Counter(1)
        );
        assert_eq!(value(RETRIES, &[]), &DebugValue::Counter(1));
        assert_eq!(
            value(TLS_HANDSHAKES, &[("resumed", "true")]),
            &DebugValue::Counter(1)
        );
        assert_eq!(
            value(TLS_HANDSHAKES, &[("resumed", "false")]),
            &DebugValue::Counter(2)
        );
        assert_eq!(value(QUEUE_MESSAGES, &[]), &DebugValue::Gauge(7.0.into()));
        assert_eq!(value(CLUSTER_LEADER, &[]), &DebugValue::Gauge(1.0.into()));
        assert_eq!(
            value(QUEUE_OLDEST_AGE, &[]),
            &DebugValue::Gauge(3600.0.into())
        );
        assert_eq!(
            value(SESSIONS, &[("listener", "submission")]),
            &DebugValue::Counter(1)
        );
        assert_eq!(
            value(REJECTIONS, &[("reason", "relay-denied")]),
            &DebugValue::Counter(1)
        );
        assert_eq!(value(ACCEPTED, &[]), &DebugValue::Counter(2));
        assert_eq!(value(ACCEPTED_BYTES, &[]), &DebugValue::Counter(1024));
        assert_eq!(
            value(dns::resolver::CACHE_REQUESTS_METRIC, &[("result", "hit")]),
            &DebugValue::Counter(0)
        );
        // Every series is of a closed set: 4×5 deliveries, a series per rule, 3 listeners,
        // 6 rejections, 3 unlabelled counters, 3 gauges, 4 + 2 DNS series, 2 TLS handshakes.
        assert_eq!(
            values.len(),
            20 + Rule::ALL.len() + 3 + 6 + 3 + 3 + 4 + 2 + 2
        );
    }

    fn gauge(values: &Values, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        match values.get(&(name.to_owned(), labels(pairs)))? {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    #[test]
    fn certificate_expiry_is_set_per_chain_and_a_dropped_chain_reads_nan() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            certificate_expiry([
                ("/etc/danemta/test-a-chain.pem", 1_900_000_000),
                ("self-signed-test", 2_000_000_000),
            ]);
        });
        let first = values(snapshotter.snapshot());
        let a = [("chain", "/etc/danemta/test-a-chain.pem")];
        let b = [("chain", "self-signed-test")];
        assert_eq!(gauge(&first, CERT_EXPIRY, &a), Some(1_900_000_000.0));
        assert_eq!(gauge(&first, CERT_EXPIRY, &b), Some(2_000_000_000.0));
        // A reload that drops chain b and renews chain a.
        metrics::with_local_recorder(&recorder, || {
            certificate_expiry([("/etc/danemta/test-a-chain.pem", 1_950_000_000)]);
        });
        let second = values(snapshotter.snapshot());
        assert_eq!(gauge(&second, CERT_EXPIRY, &a), Some(1_950_000_000.0));
        assert!(gauge(&second, CERT_EXPIRY, &b).unwrap().is_nan());
        // Configured again, it has a value again.
        metrics::with_local_recorder(&recorder, || {
            certificate_expiry([("self-signed-test", 2_000_000_001)]);
        });
        let third = values(snapshotter.snapshot());
        assert_eq!(gauge(&third, CERT_EXPIRY, &b), Some(2_000_000_001.0));
        assert!(gauge(&third, CERT_EXPIRY, &a).unwrap().is_nan());
    }

    #[test]
    fn own_tlsa_match_is_absent_until_dane_is_in_use() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let host = [("host", "own-tlsa-test.example")];
        metrics::with_local_recorder(&recorder, || {
            own_tlsa_match("own-tlsa-test.example", None);
        });
        assert_eq!(
            gauge(&values(snapshotter.snapshot()), OWN_TLSA_MATCH, &host),
            None
        );
        metrics::with_local_recorder(&recorder, || {
            own_tlsa_match("own-tlsa-test.example", Some(true));
        });
        assert_eq!(
            gauge(&values(snapshotter.snapshot()), OWN_TLSA_MATCH, &host),
            Some(1.0)
        );
        metrics::with_local_recorder(&recorder, || {
            own_tlsa_match("own-tlsa-test.example", Some(false));
        });
        assert_eq!(
            gauge(&values(snapshotter.snapshot()), OWN_TLSA_MATCH, &host),
            Some(0.0)
        );
        metrics::with_local_recorder(&recorder, || {
            own_tlsa_match("own-tlsa-test.example", None);
        });
        let v = gauge(&values(snapshotter.snapshot()), OWN_TLSA_MATCH, &host);
        assert!(v.unwrap().is_nan(), "{v:?}");
    }
}
