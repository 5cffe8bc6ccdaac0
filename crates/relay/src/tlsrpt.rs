//! TLS-RPT for the relay (RFC 8460), the sending side: delivery attempts become session
//! counters in the queue store, the counters of a finished UTC day become one report per
//! policy domain, and the report goes to the `rua` of the domain's `_smtp._tls` record.
//!
//! ```text
//! Attempt ──record──▶ Store::add_tls_counts          (after each delivery batch)
//!                       │
//!     report ◀──────────┤ Store::tls_counts          (`danemta report tls`, and sending)
//!                       │
//! send_due_reports ─────┘ _smtp._tls TXT ─▶ mailto: (into this relay's queue)
//!                                        └▶ https: (POST application/tlsrpt+gzip)
//! ```
//!
//! The attempts are the typed values of `smtp::outcome` (ARCHITECTURE.md: logs, metrics and
//! TLS-RPT are views of the same value). Which attempts count, and as what, is decided by
//! [`session_result`] and the policy by [`policy_of`]:
//!
//! | attempt | counted as |
//! |---|---|
//! | TLS established, the policy met | success |
//! | STARTTLS required and not offered; plaintext where TLS was only opportunistic | `starttls-not-supported` |
//! | DANE: no usable record matched | `validation-failure` |
//! | DANE: secure TLSA records, none usable | `tlsa-invalid` |
//! | a host skipped for a bogus or unresolvable TLSA lookup | `dnssec-invalid` |
//! | `dane-only` and no TLSA records | `dane-required` |
//! | PKIX (MTA-STS): wrong name, expired, unknown issuer | `certificate-host-mismatch`, `certificate-expired`, `certificate-not-trusted` |
//! | MTA-STS `enforce`: an MX host outside the policy | `validation-failure` |
//! | any other TLS failure (handshake, injection after STARTTLS, a handshake timeout) | `validation-failure` |
//! | MTA-STS discovery failed, no cached policy | the `sts-*` type of the failure (policy type `sts`) |
//! | a connection that failed before any TLS question (refused, timeout, …), a reused connection, `TLS-Required: No` | not counted |
//!
//! The policy is `tlsa` (the TLSA records of the host, RFC 8460 §4.4) where the attempt's
//! mechanism was DANE, `sts` (the policy's lines) where it was MTA-STS, else
//! `no-policy-found`.
//!
//! The sending MTA's address (`sending-mta-ip`) is not in an attempt yet; failure details
//! leave it out until it is.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns::{DnsName, Status};
use rustls::RootCertStore;
use smtp::outcome::{DaneStatus, Failure, Mechanism, Rule, Security};
use smtp::{Attempt, Envelope, Stage, TlsRequest};
use sts::report::{
    FailureDetails, PolicyDetails, PolicyReport, PolicyType, Report, ReportDay, ReportError,
    ReportMail, ResultType, Summary, Uploader, sts_policy_strings,
};
use sts::{AddressSource, ReportUri, TlsRptRecord, TxtAnswer, TxtResolver};

use crate::queue::{DsnParams, NewMessage, QueueError, QueueId, Store, Timestamp, TlsCountRecord};

/// How many finished days [`send_due_reports`] looks back: yesterday, and the day before for
/// a relay that was down at the turn of the day.
pub const CATCH_UP_DAYS: i64 = 2;
/// Counters are kept this many days (for `danemta report tls`), then pruned.
pub const RETENTION_DAYS: i64 = 31;
/// A report that could not be sent is tried again on later calls until its day is this many
/// days old (RFC 8460 §5.3: the sender SHOULD try again), then given up.
pub const GIVE_UP_DAYS: i64 = 3;

/// The MTA-STS side of a delivery, as the scheduler knew it.
#[derive(Clone, Copy, Debug, Default)]
pub enum StsState<'a> {
    /// No MTA-STS for this delivery (the domain publishes none, or it does not apply).
    #[default]
    None,
    /// This policy applied (any mode; `none` counts as no policy).
    Policy(&'a sts::Policy),
    /// The domain announces MTA-STS, but discovery failed and no cached policy applied
    /// (RFC 8460 §4.3.2.2; [`sts::DiscoveryError::result_type`]).
    Failed(ResultType),
}

impl<'a> From<Option<&'a sts::Policy>> for StsState<'a> {
    fn from(policy: Option<&'a sts::Policy>) -> Self {
        policy.map_or(StsState::None, StsState::Policy)
    }
}

/// A report's policy (RFC 8460 §4.4 `policy`): its type, `policy-string` and `mx-host`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyKey {
    /// `policy-type`.
    pub policy_type: PolicyType,
    /// `policy-string`.
    pub strings: Vec<String>,
    /// `mx-host`.
    pub mx: Vec<String>,
}

impl PolicyKey {
    fn tlsa(a: &Attempt) -> Self {
        Self {
            policy_type: PolicyType::Tlsa,
            strings: a.dane.tlsa.iter().map(ToString::to_string).collect(),
            mx: vec![a.host.to_string()],
        }
    }

    fn sts(policy: Option<&sts::Policy>) -> Self {
        Self {
            policy_type: PolicyType::Sts,
            strings: policy.map(sts_policy_strings).unwrap_or_default(),
            mx: policy
                .map(|p| p.mx().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }

    fn none() -> Self {
        Self {
            policy_type: PolicyType::NoPolicyFound,
            strings: Vec::new(),
            mx: Vec::new(),
        }
    }
}

/// What one attempt counts as (RFC 8460 §4.4): `Some(None)` a successful session,
/// `Some(Some(r))` a failure of result type `r`, `None` not counted (see the module
/// documentation's table). Pure.
pub fn session_result(a: &Attempt) -> Option<Option<ResultType>> {
    if a.reused || a.tls_request == Some(TlsRequest::Optional) {
        return None;
    }
    if a.address.is_none() {
        // No connection: only the policy failures that kept us from making one.
        return match a.rule {
            Rule::HostUnusable
                if matches!(a.dnssec.tlsa, Some(Status::Bogus | Status::Indeterminate)) =>
            {
                Some(Some(ResultType::DnssecInvalid))
            }
            Rule::DaneOnly if a.dane.tlsa.is_empty() => Some(Some(ResultType::DaneRequired)),
            Rule::StsMxMismatch => Some(Some(ResultType::ValidationFailure)),
            _ => None,
        };
    }
    match &a.failure {
        Some(Failure::StarttlsNotOffered) => return Some(Some(ResultType::StarttlsNotSupported)),
        Some(Failure::StarttlsInjection) => return Some(Some(ResultType::ValidationFailure)),
        Some(Failure::DaneAuthentication) => {
            return Some(Some(if a.dane.state == DaneStatus::Unusable {
                ResultType::TlsaInvalid
            } else {
                ResultType::ValidationFailure
            }));
        }
        Some(Failure::TlsHandshake)
        | Some(Failure::Timeout {
            stage: Stage::TlsHandshake,
        }) => {
            return Some(Some(
                pkix_problem(&a.reason).unwrap_or(ResultType::ValidationFailure),
            ));
        }
        _ => {}
    }
    if a.tls.is_some() {
        // RFC 7672 §2.2: secure TLSA records none of which is usable make TLS mandatory but
        // unauthenticated; the domain's records are broken all the same.
        if a.mechanism == Mechanism::Dane && a.dane.state == DaneStatus::Unusable {
            return Some(Some(ResultType::TlsaInvalid));
        }
        return Some(None);
    }
    // A plaintext session that got as far as a transaction: the server offered no STARTTLS
    // (a failed handshake was counted above; its plaintext retry is not counted again). A
    // level configured without TLS is not the server's failure.
    let offered_no_tls = a.security == Security::Plaintext
        && a.rule != Rule::PlaintextRetry
        && matches!(a.mechanism, Mechanism::Opportunistic | Mechanism::MtaSts)
        && reached_transaction(a.failure.as_ref());
    offered_no_tls.then_some(Some(ResultType::StarttlsNotSupported))
}

/// Whether a session got past EHLO (and so past the STARTTLS question): no failure, or one
/// in or after the mail transaction.
fn reached_transaction(failure: Option<&Failure>) -> bool {
    match failure {
        None => true,
        Some(
            Failure::Refused { stage, .. }
            | Failure::Timeout { stage }
            | Failure::Protocol { stage },
        ) => matches!(
            stage,
            Stage::Mail
                | Stage::Rcpt
                | Stage::Rset
                | Stage::Data
                | Stage::Body
                | Stage::EndOfData
                | Stage::Quit
        ),
        Some(
            Failure::TooBig
            | Failure::Smtputf8Unsupported
            | Failure::BodyInvalid
            | Failure::BodyRead
            | Failure::RequiretlsUnavailable,
        ) => true,
        Some(_) => false,
    }
}

/// The RFC 8460 §4.3.1 certificate result of a PKIX failure, from rustls' words in the
/// attempt's reason (`invalid peer certificate: …`); `None` when it is not one.
///
/// The attempt's typed [`Failure`] says only "TLS handshake"; this reads the text rustls
/// gives until the smtp crate carries the certificate problem typed.
pub fn pkix_problem(reason: &str) -> Option<ResultType> {
    const MARK: &str = "invalid peer certificate: ";
    let problem = &reason[reason.find(MARK)? + MARK.len()..];
    let starts = |prefix: &str| problem.starts_with(prefix);
    Some(
        if starts("certificate not valid for name") || starts("NotValidForName") {
            ResultType::CertificateHostMismatch
        } else if starts("certificate expired") || starts("Expired") {
            ResultType::CertificateExpired
        } else if starts("UnknownIssuer") {
            ResultType::CertificateNotTrusted
        } else {
            ResultType::ValidationFailure
        },
    )
}

/// The policy an attempt was made under (RFC 8460 §4.4), given the MTA-STS side of its
/// delivery and what the attempt counted as. Pure.
pub fn policy_of(a: &Attempt, sts: StsState<'_>, result: Option<ResultType>) -> PolicyKey {
    match result {
        // DANE's own result types are about TLSA records, whatever the mechanism said.
        Some(ResultType::DnssecInvalid | ResultType::DaneRequired | ResultType::TlsaInvalid) => {
            return PolicyKey::tlsa(a);
        }
        Some(ResultType::StsPolicyFetchError)
        | Some(ResultType::StsPolicyInvalid)
        | Some(ResultType::StsWebpkiInvalid) => return PolicyKey::sts(None),
        _ => {}
    }
    let policy = match sts {
        StsState::Policy(p) => Some(p),
        _ => None,
    };
    match a.mechanism {
        Mechanism::Dane => PolicyKey::tlsa(a),
        Mechanism::MtaSts => PolicyKey::sts(policy),
        Mechanism::Opportunistic | Mechanism::PolicyTable => PolicyKey::none(),
    }
}

/// The counters for `attempts`, one delivery batch to `domain` on `day` (pure). Attempts
/// that are equal in every field are counted once: a batch hands each of its messages a copy
/// of the attempts they shared. When MTA-STS discovery failed ([`StsState::Failed`]), each
/// session to a host without DANE counts as that failure, under policy type `sts`.
pub fn counts(
    domain: &DnsName,
    sts: StsState<'_>,
    attempts: &[Attempt],
    day: ReportDay,
) -> Vec<TlsCountRecord> {
    let mut seen: Vec<&Attempt> = Vec::new();
    let mut sums: BTreeMap<(PolicyKey, Option<ResultType>, String, Option<IpAddr>), u64> =
        BTreeMap::new();
    for a in attempts {
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        let Some(mut result) = session_result(a) else {
            continue;
        };
        if let StsState::Failed(kind) = sts
            && a.mechanism != Mechanism::Dane
            && !matches!(
                result,
                Some(
                    ResultType::DnssecInvalid | ResultType::DaneRequired | ResultType::TlsaInvalid
                )
            )
        {
            result = Some(kind);
        }
        let policy = policy_of(a, sts, result);
        let key = (policy, result, a.host.to_string(), a.address);
        *sums.entry(key).or_default() += 1;
    }
    sums.into_iter()
        .map(
            |((policy, result, receiving_mx, receiving_ip), sessions)| TlsCountRecord {
                day: day.start_unix(),
                domain: domain.clone(),
                policy_type: policy.policy_type.as_str().to_owned(),
                policy_strings: policy.strings,
                policy_mx: policy.mx,
                result: result.map(|r| r.as_str().to_owned()),
                receiving_mx,
                sending_ip: None,
                receiving_ip,
                sessions,
            },
        )
        .collect()
}

/// Counts one delivery batch to `domain` (see [`counts`]) in `store`, on the UTC day of
/// `now`: one small write. Returns how many sessions were counted. Call it from where
/// blocking is allowed (the store is synchronous).
pub fn record(
    store: &dyn Store,
    domain: &DnsName,
    sts: StsState<'_>,
    attempts: &[Attempt],
    now: SystemTime,
) -> Result<u64, QueueError> {
    let records = counts(domain, sts, attempts, ReportDay::containing(now));
    if records.is_empty() {
        return Ok(0);
    }
    store.add_tls_counts(&records)?;
    Ok(records.iter().map(|r| r.sessions).sum())
}

/// Who sends the reports (RFC 8460 §4.4 `organization-name`, `contact-info`; §5.3
/// `TLS-Report-Submitter` and the mail's sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// `organization-name`.
    pub organization_name: String,
    /// The sending MTA's domain: `TLS-Report-Submitter`, the file name's `sender`.
    pub submitter: DnsName,
    /// `contact-info`.
    pub contact_info: String,
    /// The report mail's envelope sender and `From:`.
    pub mail_from: String,
}

impl Reporter {
    /// Reports from the relay `hostname`: organisation and submitter `hostname`, contact and
    /// sender `postmaster@hostname`.
    pub fn for_host(hostname: &DnsName) -> Self {
        Self {
            organization_name: hostname.to_string(),
            submitter: hostname.clone(),
            contact_info: format!("postmaster@{hostname}"),
            mail_from: format!("postmaster@{hostname}"),
        }
    }

    /// The `report-id` of `domain`'s report for `day`: the same for the same report, so that
    /// a receiver can tell a repeat.
    pub fn report_id(&self, domain: &DnsName, day: ReportDay) -> String {
        format!("{day}_{domain}@{}", self.submitter)
    }
}

/// The report (RFC 8460 §4.4) of `records`, the counters of `domain` on `day` (pure):
/// policies and failure details in a stable order, sums per policy. Counters whose policy
/// or result type this build does not know are left out (and logged).
pub fn build_report(
    reporter: &Reporter,
    domain: &DnsName,
    day: ReportDay,
    records: &[TlsCountRecord],
) -> Report {
    type Details = BTreeMap<(ResultType, Option<IpAddr>, String, Option<IpAddr>), u64>;
    let mut policies: BTreeMap<PolicyKey, (Summary, Details)> = BTreeMap::new();
    for r in records {
        let Ok(policy_type) = r.policy_type.parse::<PolicyType>() else {
            tracing::warn!(target: "relay", "TLS-RPT: {domain}: unknown policy type {:?} in the store; left out", r.policy_type);
            continue;
        };
        let result = match r.result.as_deref().map(str::parse::<ResultType>) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                tracing::warn!(target: "relay", "TLS-RPT: {domain}: {e} in the store; left out");
                continue;
            }
        };
        let key = PolicyKey {
            policy_type,
            strings: r.policy_strings.clone(),
            mx: r.policy_mx.clone(),
        };
        let (summary, details) = policies.entry(key).or_default();
        match result {
            None => {
                summary.total_successful_session_count = summary
                    .total_successful_session_count
                    .saturating_add(r.sessions);
            }
            Some(t) => {
                summary.total_failure_session_count = summary
                    .total_failure_session_count
                    .saturating_add(r.sessions);
                let n = details
                    .entry((t, r.sending_ip, r.receiving_mx.clone(), r.receiving_ip))
                    .or_default();
                *n = n.saturating_add(r.sessions);
            }
        }
    }
    Report {
        organization_name: reporter.organization_name.clone(),
        date_range: day.date_range(),
        contact_info: reporter.contact_info.clone(),
        report_id: reporter.report_id(domain, day),
        policies: policies
            .into_iter()
            .map(|(key, (summary, details))| PolicyReport {
                policy: PolicyDetails {
                    policy_type: key.policy_type,
                    policy_string: key.strings,
                    policy_domain: domain.to_string(),
                    mx_host: key.mx,
                },
                summary,
                failure_details: details
                    .into_iter()
                    .map(|((t, sending, mx, receiving), n)| FailureDetails {
                        result_type: t,
                        sending_mta_ip: sending,
                        receiving_mx_hostname: (!mx.is_empty()).then_some(mx),
                        receiving_mx_helo: None,
                        receiving_ip: receiving,
                        failed_session_count: n,
                        additional_information: None,
                        failure_reason_code: None,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `domain`'s report for `day` from the counters in `store` (an empty `policies` list when
/// there are none).
pub fn report(
    store: &dyn Store,
    reporter: &Reporter,
    domain: &DnsName,
    day: ReportDay,
) -> Result<Report, QueueError> {
    let records = store.tls_counts(domain, day.start_unix())?;
    Ok(build_report(reporter, domain, day, &records))
}

/// Why reports could not be sent at all (a single domain's failure is a [`Sent`] outcome).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRptError {
    /// The store failed.
    #[error("TLS-RPT: {0}")]
    Store(#[from] QueueError),
    /// The day is not over yet: its report would be incomplete (RFC 8460 §4.1).
    #[error("TLS-RPT: the day {0} is not over yet")]
    DayNotOver(ReportDay),
    /// A blocking store task panicked or was cancelled.
    #[error("TLS-RPT: a store task failed: {0}")]
    Task(String),
}

/// What became of one domain's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The policy domain.
    pub domain: DnsName,
    /// The day.
    pub day: ReportDay,
    /// What happened.
    pub outcome: SendOutcome,
}

/// What became of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Delivered to at least one `rua`: mailed reports are queued under `queued` (one
    /// message to all `mailto:` addresses), `posted` are the `https:` URLs that took it.
    Sent {
        /// The queue id of the report mail, if one was queued.
        queued: Option<QueueId>,
        /// The `https:` URLs that answered 2xx.
        posted: Vec<String>,
        /// The `rua` URIs that failed, with why.
        failed: Vec<(String, String)>,
    },
    /// The domain publishes no TLS-RPT record (or an invalid one): nothing to send to.
    NoRecord(String),
    /// Nothing could be sent this time; tried again on a later call.
    Retry(String),
    /// Nothing could be sent, and the day is too old to try again.
    GaveUp(String),
}

impl SendOutcome {
    /// The word the store records for a finished report; `None` while it is still due.
    fn finished_as(&self) -> Option<&'static str> {
        match self {
            SendOutcome::Sent { .. } => Some("sent"),
            SendOutcome::NoRecord(_) => Some("no-record"),
            SendOutcome::GaveUp(_) => Some("gave-up"),
            SendOutcome::Retry(_) => None,
        }
    }
}

/// How reports are delivered: the TXT lookups of `_smtp._tls` records, the addresses and
/// client for `https:` URIs, and who sends them.
pub struct Sender<'a, T, A> {
    /// `_smtp._tls` TXT lookups (RFC 8460 §3), e.g. [`sts::ResolverTxt`].
    pub txt: &'a T,
    /// Addresses of `https:` report hosts, e.g. [`sts::ResolverAddresses`].
    pub addresses: &'a A,
    /// The HTTPS client (PKIX over the MTA-STS roots).
    pub uploader: &'a Uploader,
    /// Who reports.
    pub reporter: &'a Reporter,
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, TlsRptError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| TlsRptError::Task(e.to_string()))?
        .map_err(TlsRptError::Store)
}

fn unix(t: SystemTime) -> Timestamp {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        Timestamp::try_from(d.as_secs()).unwrap_or(Timestamp::MAX)
    })
}

/// Sends the report of every domain with counters on `day` (a finished UTC day) whose
/// report is not done yet (RFC 8460 §4.1, §5): looks up its `_smtp._tls` record, mails the
/// report to its `mailto:` URIs through this relay's own queue (a new message, delivered by
/// the scheduler like any other: wake it when [`SendOutcome::Sent`] has `queued`) and POSTs
/// it to its `https:` URIs. Idempotent: a report done (sent, or no record) is recorded in
/// the store and not sent again; one that failed is tried again by later calls until
/// [`GIVE_UP_DAYS`] after its day.
pub async fn send_reports_for_day<T: TxtResolver, A: AddressSource>(
    store: &Arc<dyn Store>,
    sender: &Sender<'_, T, A>,
    day: ReportDay,
    now: SystemTime,
) -> Result<Vec<Sent>, TlsRptError> {
    let now_unix = unix(now);
    if now_unix <= day.end_unix() {
        return Err(TlsRptError::DayNotOver(day));
    }
    let start = day.start_unix();
    let due = blocking(store, move |s| s.tls_reports_due(start)).await?;
    let too_old = now_unix > day.end_unix().saturating_add(GIVE_UP_DAYS * 86_400);
    let mut done = Vec::with_capacity(due.len());
    for domain in due {
        let d = domain.clone();
        let reporter = sender.reporter.clone();
        let report = blocking(store, move |s| report(s, &reporter, &d, day)).await?;
        let mut outcome = if report.policies.is_empty() {
            SendOutcome::NoRecord("no counters".into())
        } else {
            send_one(store, sender, &domain, &report, now).await
        };
        if let (SendOutcome::Retry(why), true) = (&outcome, too_old) {
            outcome = SendOutcome::GaveUp(why.clone());
        }
        match &outcome {
            SendOutcome::Sent { failed, .. } => {
                for (uri, why) in failed {
                    tracing::warn!(target: "relay", "TLS-RPT: report for {domain} ({day}) not delivered to {uri}: {why}");
                }
                tracing::info!(target: "relay", "TLS-RPT: report for {domain} ({day}) sent");
            }
            SendOutcome::NoRecord(_) => {}
            SendOutcome::Retry(why) => {
                tracing::warn!(target: "relay", "TLS-RPT: report for {domain} ({day}) not sent: {why}; will retry")
            }
            SendOutcome::GaveUp(why) => {
                tracing::warn!(target: "relay", "TLS-RPT: report for {domain} ({day}) not sent: {why}; giving up")
            }
        }
        if let Some(word) = outcome.finished_as() {
            let d = domain.clone();
            blocking(store, move |s| {
                s.finish_tls_report(&d, start, word, now_unix)
            })
            .await?;
        }
        done.push(Sent {
            domain,
            day,
            outcome,
        });
    }
    Ok(done)
}

/// The `_smtp._tls` record of `domain`, then the report to each of its URIs.
async fn send_one<T: TxtResolver, A: AddressSource>(
    store: &Arc<dyn Store>,
    sender: &Sender<'_, T, A>,
    domain: &DnsName,
    report: &Report,
    now: SystemTime,
) -> SendOutcome {
    let Ok(name) = format!("_smtp._tls.{domain}").parse::<DnsName>() else {
        return SendOutcome::NoRecord("the _smtp._tls name is too long".into());
    };
    let record = match sender.txt.txt(&name).await {
        TxtAnswer::Records(records) => match TlsRptRecord::select(&records) {
            Ok(Some(record)) => record,
            Ok(None) => return SendOutcome::NoRecord(format!("no TLS-RPT record at {name}")),
            Err(e) => return SendOutcome::NoRecord(format!("{name}: {e}")),
        },
        TxtAnswer::NoRecords => return SendOutcome::NoRecord(format!("no TXT record at {name}")),
        TxtAnswer::Failed(f) => return SendOutcome::Retry(format!("TXT lookup of {name}: {f}")),
    };
    let mut failed = Vec::new();
    let mut posted = Vec::new();
    let mailto: Vec<String> = record
        .rua
        .iter()
        .filter_map(|u| match u {
            ReportUri::Mailto(address) => Some(address.clone()),
            ReportUri::Https(_) => None,
        })
        .collect();
    let mut queued = None;
    if !mailto.is_empty() {
        match queue_mail(store, sender.reporter, domain, report, &mailto, now).await {
            Ok(id) => queued = Some(id),
            Err(why) => failed.extend(mailto.iter().map(|a| (format!("mailto:{a}"), why.clone()))),
        }
    }
    let https: Vec<&String> = record
        .rua
        .iter()
        .filter_map(|u| match u {
            ReportUri::Https(url) => Some(url),
            ReportUri::Mailto(_) => None,
        })
        .collect();
    if !https.is_empty() {
        match report.gzip() {
            Ok(gzip) => {
                for url in https {
                    match sender.uploader.post(url, &gzip, sender.addresses).await {
                        Ok(()) => posted.push(url.clone()),
                        Err(e) => failed.push((url.clone(), e.to_string())),
                    }
                }
            }
            Err(e) => failed.extend(https.into_iter().map(|u| (u.clone(), e.to_string()))),
        }
    }
    if queued.is_none() && posted.is_empty() {
        let why = failed
            .iter()
            .map(|(uri, why)| format!("{uri}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        return SendOutcome::Retry(why);
    }
    SendOutcome::Sent {
        queued,
        posted,
        failed,
    }
}

/// Queues the report mail (RFC 8460 §5.3) to `to` in this relay's own queue.
async fn queue_mail(
    store: &Arc<dyn Store>,
    reporter: &Reporter,
    domain: &DnsName,
    report: &Report,
    to: &[String],
    now: SystemTime,
) -> Result<QueueId, String> {
    let body = report
        .mail(&ReportMail {
            from: &reporter.mail_from,
            to,
            policy_domain: domain,
            submitter: &reporter.submitter,
            date: now,
        })
        .map_err(|e: ReportError| e.to_string())?;
    let envelope =
        Envelope::new(reporter.mail_from.clone(), to.iter().cloned()).map_err(|e| e.to_string())?;
    let id = QueueId::generate();
    let queued = id.clone();
    let now = unix(now);
    blocking(store, move |s| {
        s.accept(
            &NewMessage {
                id: &queued,
                envelope: &envelope,
                dsn: &DsnParams::default(),
                body: &body,
            },
            now,
        )
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(id)
}

/// What the daemon calls, say once an hour: sends the reports of the last
/// [`CATCH_UP_DAYS`] finished days that are not done yet ([`send_reports_for_day`]), then
/// prunes counters older than [`RETENTION_DAYS`]. Cheap when there is nothing to do (one
/// indexed query per day).
pub async fn send_due_reports<T: TxtResolver, A: AddressSource>(
    store: &Arc<dyn Store>,
    sender: &Sender<'_, T, A>,
    now: SystemTime,
) -> Result<Vec<Sent>, TlsRptError> {
    let today = ReportDay::containing(now);
    let mut sent = Vec::new();
    let mut day = today;
    for _ in 0..CATCH_UP_DAYS {
        day = day.previous();
        sent.extend(send_reports_for_day(store, sender, day, now).await?);
    }
    let before = today.start_unix().saturating_sub(RETENTION_DAYS * 86_400);
    blocking(store, move |s| s.prune_tls_counts(before)).await?;
    Ok(sent)
}

/// How long after midnight UTC the daemon may wait before sending: any time in the next
/// hours is fine (RFC 8460 §4.1 asks for reports covering whole days, not for a time).
pub const SEND_INTERVAL: Duration = Duration::from_secs(3600);

/// The daemon's reporting task: at start and then every [`SEND_INTERVAL`] until `shutdown`
/// turns true, [`send_due_reports`] with an HTTPS client over the current `roots` (read each
/// time: a reload may change `[delivery] ca_file`); `on_queued` is called when a report mail
/// went into the queue (to wake the scheduler). Failures are logged and tried again next time.
pub async fn run<T: TxtResolver, A: AddressSource>(
    store: Arc<dyn Store>,
    txt: T,
    addresses: A,
    reporter: Reporter,
    roots: impl Fn() -> Arc<RootCertStore>,
    on_queued: impl Fn(),
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        // Nodes sharing a queue count into the same counters; one of them sends the reports.
        let leads = blocking(&store, |s| s.leads_cluster()).await;
        match leads {
            Ok(true) => send_due(&store, &txt, &addresses, &reporter, roots(), &on_queued).await,
            Ok(false) => {
                tracing::debug!(target: "relay", "TLS-RPT: another node sends the reports")
            }
            Err(e) => {
                tracing::warn!(target: "relay", "TLS-RPT: cannot tell which node sends the reports: {e}")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SEND_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One round of [`run`]: every finished day's reports not sent yet.
async fn send_due<T: TxtResolver, A: AddressSource>(
    store: &Arc<dyn Store>,
    txt: &T,
    addresses: &A,
    reporter: &Reporter,
    roots: Arc<RootCertStore>,
    on_queued: &impl Fn(),
) {
    match Uploader::new(roots) {
        Ok(uploader) => {
            let sender = Sender {
                txt,
                addresses,
                uploader: &uploader,
                reporter,
            };
            match send_due_reports(store, &sender, SystemTime::now()).await {
                Ok(sent) => {
                    for s in &sent {
                        tracing::info!(target: "relay", "TLS-RPT report for {} of {}: {:?}", s.domain, s.day, s.outcome);
                    }
                    if sent.iter().any(|s| {
                        matches!(
                            &s.outcome,
                            SendOutcome::Sent {
                                queued: Some(_),
                                ..
                            }
                        )
                    }) {
                        on_queued();
                    }
                }
                Err(e) => tracing::warn!(target: "relay", "{e}"),
            }
        }
        Err(e) => tracing::warn!(target: "relay", "TLS-RPT: no HTTPS client: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mail_parser::MimeHeaders;
    use serde_json::{Value, json};

    use crate::queue::LocalStore;

    const EE: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    /// A verified TLS session over which the message was delivered, with `changes` applied:
    /// built from JSON so that fields added to `Attempt` later keep their defaults.
    fn attempt(changes: Value) -> Attempt {
        let mut a = json!({
            "host": "mx.example.com", "address": "192.0.2.25", "port": 25,
            "sni": "mx.example.com", "security": "verified", "delivered": true,
            "dane": {"state": "not-applicable", "tlsa": []},
            "tls": {"version": "TLSv1.3", "cipher": "TLS13_AES_256_GCM_SHA384"},
            "dnssec": {"mx": "secure", "a": "secure", "aaaa": "insecure", "tlsa": null},
            "reason": "message accepted: 250 2.0.0 Ok", "rule_id": "opportunistic",
            "mechanism": "opportunistic", "replies": [],
        });
        for (k, v) in changes.as_object().unwrap() {
            a[k] = v.clone();
        }
        serde_json::from_value(a).unwrap()
    }

    /// A DANE attempt with one usable record.
    fn dane(changes: Value) -> Attempt {
        let mut a = attempt(json!({
            "mechanism": "dane", "rule_id": "dane-auth",
            "dane": {"state": "usable", "tlsa": [EE], "matched": EE, "depth": 0},
            "dnssec": {"mx": "secure", "a": "secure", "aaaa": "secure", "tlsa": "secure"},
        }));
        let mut v = serde_json::to_value(&a).unwrap();
        for (k, val) in changes.as_object().unwrap() {
            v[k] = val.clone();
        }
        a = serde_json::from_value(v).unwrap();
        a
    }

    /// A failed connection: no TLS, not delivered.
    fn failed(base: Attempt, failure: Value, reason: &str, rule: &str) -> Attempt {
        let mut v = serde_json::to_value(&base).unwrap();
        v["tls"] = Value::Null;
        v["delivered"] = json!(false);
        v["security"] = json!("none");
        v["failure"] = failure;
        v["reason"] = json!(reason);
        v["rule_id"] = json!(rule);
        serde_json::from_value(v).unwrap()
    }

    fn policy(mode: sts::Mode) -> sts::Policy {
        sts::Policy::new(
            "1".parse().unwrap(),
            mode,
            vec!["mx.example.com".parse().unwrap()],
            86_400,
        )
        .unwrap()
    }

    fn sts_attempt(changes: Value) -> Attempt {
        let mut a = serde_json::to_value(attempt(json!({
            "mechanism": "mta-sts", "rule_id": "sts-enforce",
        })))
        .unwrap();
        for (k, v) in changes.as_object().unwrap() {
            a[k] = v.clone();
        }
        serde_json::from_value(a).unwrap()
    }

    fn result(a: &Attempt) -> Option<Option<ResultType>> {
        session_result(a)
    }

    #[test]
    fn a_verified_session_is_a_success_under_its_mechanism() {
        let a = dane(json!({}));
        assert_eq!(result(&a), Some(None));
        let key = policy_of(&a, StsState::None, None);
        assert_eq!(key.policy_type, PolicyType::Tlsa);
        assert_eq!(key.strings, [EE]);
        assert_eq!(key.mx, ["mx.example.com"]);
        let p = policy(sts::Mode::Enforce);
        let key = policy_of(&sts_attempt(json!({})), StsState::Policy(&p), None);
        assert_eq!(key.policy_type, PolicyType::Sts);
        assert_eq!(
            key.strings,
            [
                "version: STSv1",
                "mode: enforce",
                "mx: mx.example.com",
                "max_age: 86400"
            ]
        );
        assert_eq!(key.mx, ["mx.example.com"]);
        let key = policy_of(&attempt(json!({})), StsState::None, None);
        assert_eq!(key, PolicyKey::none());
        // A transaction refused after TLS is still a good TLS session.
        let refused = attempt(json!({
            "delivered": false,
            "failure": {"kind": "refused", "stage": "rcpt",
                        "reply": {"code": 550, "lines": ["no such user"]}},
        }));
        assert_eq!(result(&refused), Some(None));
    }

    #[test]
    fn starttls_not_offered_is_starttls_not_supported() {
        let required = failed(
            dane(json!({})),
            json!({"kind": "starttls-not-offered"}),
            "STARTTLS is required but not offered",
            "dane-mandatory",
        );
        assert_eq!(
            result(&required),
            Some(Some(ResultType::StarttlsNotSupported))
        );
        // Opportunistic (and MTA-STS testing): delivered in plaintext.
        for mechanism in ["opportunistic", "mta-sts"] {
            let plain = attempt(json!({
                "security": "plaintext", "tls": null, "mechanism": mechanism,
            }));
            assert_eq!(
                result(&plain),
                Some(Some(ResultType::StarttlsNotSupported)),
                "{mechanism}"
            );
        }
        // A level configured without TLS is nobody's failure.
        let configured = attempt(json!({
            "security": "plaintext", "tls": null, "mechanism": "policy-table", "rule_id": "policy",
        }));
        assert_eq!(result(&configured), None);
        // A plaintext retry after a failed handshake is not counted twice.
        let retry = attempt(json!({
            "security": "plaintext", "tls": null, "rule_id": "plaintext-retry",
        }));
        assert_eq!(result(&retry), None);
        // Refused at the greeting: nobody knows whether STARTTLS would have been offered.
        let greeting = attempt(json!({
            "security": "plaintext", "tls": null, "delivered": false,
            "failure": {"kind": "refused", "stage": "greeting",
                        "reply": {"code": 554, "lines": ["go away"]}},
        }));
        assert_eq!(result(&greeting), None);
    }

    #[test]
    fn dane_failures_map_to_the_dane_types() {
        let mismatch = failed(
            dane(json!({})),
            json!({"kind": "dane-authentication"}),
            "DANE authentication failed: no usable TLSA record matches",
            "dane-auth",
        );
        assert_eq!(result(&mismatch), Some(Some(ResultType::ValidationFailure)));
        let unusable = dane(json!({
            "dane": {"state": "unusable", "tlsa": ["0 0 1 0101010101010101010101010101010101010101010101010101010101010101"]},
            "security": "untrusted", "rule_id": "dane-unusable-records",
        }));
        assert_eq!(result(&unusable), Some(Some(ResultType::TlsaInvalid)));
        assert_eq!(
            policy_of(&unusable, StsState::None, Some(ResultType::TlsaInvalid)).policy_type,
            PolicyType::Tlsa
        );
        let bogus = dane(json!({
            "address": null, "tls": null, "security": "none", "delivered": false,
            "rule_id": "host-unusable",
            "dane": {"state": "host-unusable", "tlsa": []},
            "dnssec": {"mx": "secure", "a": "secure", "aaaa": "secure", "tlsa": "bogus"},
        }));
        assert_eq!(result(&bogus), Some(Some(ResultType::DnssecInvalid)));
        // A host unusable for its address lookups is no TLS matter.
        let no_address = dane(json!({
            "address": null, "tls": null, "security": "none", "delivered": false,
            "rule_id": "host-unusable",
            "dnssec": {"mx": "secure", "a": "bogus", "aaaa": "bogus", "tlsa": "secure"},
        }));
        assert_eq!(result(&no_address), None);
        let dane_only = attempt(json!({
            "address": null, "tls": null, "security": "none", "delivered": false,
            "rule_id": "dane-only", "mechanism": "dane",
        }));
        assert_eq!(result(&dane_only), Some(Some(ResultType::DaneRequired)));
        let key = policy_of(&dane_only, StsState::None, Some(ResultType::DaneRequired));
        assert_eq!((key.policy_type, key.strings.len()), (PolicyType::Tlsa, 0));
    }

    #[test]
    fn pkix_failures_map_to_the_certificate_types() {
        let p = policy(sts::Mode::Enforce);
        for (reason, expected) in [
            (
                "TLS handshake failed: invalid peer certificate: certificate not valid for name \"mx.example.com\"; certificate is only valid for other.example",
                ResultType::CertificateHostMismatch,
            ),
            (
                "TLS handshake failed: invalid peer certificate: NotValidForName",
                ResultType::CertificateHostMismatch,
            ),
            (
                "TLS handshake failed: invalid peer certificate: certificate expired: verification time 1800000000 (UNIX), but certificate is not valid after 1700000000 (100000000 seconds ago)",
                ResultType::CertificateExpired,
            ),
            (
                "TLS handshake failed: invalid peer certificate: UnknownIssuer",
                ResultType::CertificateNotTrusted,
            ),
            (
                "TLS handshake failed: invalid peer certificate: BadSignature",
                ResultType::ValidationFailure,
            ),
            (
                "TLS handshake failed: received fatal alert: HandshakeFailure",
                ResultType::ValidationFailure,
            ),
        ] {
            let a = failed(
                sts_attempt(json!({})),
                json!({"kind": "tls-handshake"}),
                reason,
                "sts-enforce",
            );
            assert_eq!(result(&a), Some(Some(expected)), "{reason}");
            assert_eq!(
                policy_of(&a, StsState::Policy(&p), Some(expected)).policy_type,
                PolicyType::Sts
            );
        }
        let timeout = failed(
            sts_attempt(json!({})),
            json!({"kind": "timeout", "stage": "tls-handshake"}),
            "timed out",
            "sts-enforce",
        );
        assert_eq!(result(&timeout), Some(Some(ResultType::ValidationFailure)));
        let injection = failed(
            sts_attempt(json!({})),
            json!({"kind": "starttls-injection"}),
            "the server sent data after its STARTTLS reply",
            "sts-enforce",
        );
        assert_eq!(
            result(&injection),
            Some(Some(ResultType::ValidationFailure))
        );
        let outside = sts_attempt(json!({
            "address": null, "tls": null, "security": "none", "delivered": false,
            "rule_id": "sts-mx-mismatch",
        }));
        assert_eq!(result(&outside), Some(Some(ResultType::ValidationFailure)));
    }

    #[test]
    fn connection_failures_reuse_and_tls_required_no_are_not_counted() {
        let refused = failed(
            attempt(json!({})),
            json!({"kind": "connect"}),
            "connection refused",
            "next-mx",
        );
        assert_eq!(result(&refused), None);
        assert_eq!(result(&attempt(json!({"reused": true}))), None);
        assert_eq!(
            result(&attempt(json!({"tls_request": "tls-required-no"}))),
            None
        );
    }

    #[test]
    fn sts_discovery_failures_count_each_session_under_sts() {
        let d = n("example.com");
        let day: ReportDay = "2027-01-15".parse().unwrap();
        let plain = attempt(json!({}));
        let on_dane = dane(json!({"host": "mx2.example.com", "address": "192.0.2.26"}));
        for kind in [
            ResultType::StsPolicyFetchError,
            ResultType::StsPolicyInvalid,
            ResultType::StsWebpkiInvalid,
        ] {
            let records = counts(
                &d,
                StsState::Failed(kind),
                &[plain.clone(), on_dane.clone()],
                day,
            );
            assert_eq!(records.len(), 2, "{records:?}");
            let sts = records.iter().find(|r| r.policy_type == "sts").unwrap();
            assert_eq!(sts.result.as_deref(), Some(kind.as_str()));
            assert!(sts.policy_strings.is_empty());
            // DANE takes precedence (RFC 8461 §2): that host is counted under its TLSA.
            let tlsa = records.iter().find(|r| r.policy_type == "tlsa").unwrap();
            assert_eq!(tlsa.result, None);
        }
    }

    #[test]
    fn counts_sum_per_key_and_copies_count_once() {
        let d = n("example.com");
        let day: ReportDay = "2027-01-15".parse().unwrap();
        let ok = attempt(json!({}));
        let ok2 = attempt(json!({"reason": "another message"}));
        let bad = failed(
            attempt(json!({"address": "192.0.2.26"})),
            json!({"kind": "tls-handshake"}),
            "TLS handshake failed: received fatal alert",
            "opportunistic",
        );
        // `bad` twice as the same value: a batch's shared attempt, counted once.
        let records = counts(&d, StsState::None, &[ok, ok2, bad.clone(), bad], day);
        assert_eq!(records.len(), 2);
        let success = records.iter().find(|r| r.result.is_none()).unwrap();
        assert_eq!(success.sessions, 2);
        assert_eq!(success.day, day.start_unix());
        assert_eq!(success.policy_type, "no-policy-found");
        let failure = records.iter().find(|r| r.result.is_some()).unwrap();
        assert_eq!(
            (failure.sessions, failure.receiving_ip),
            (1, Some("192.0.2.26".parse().unwrap()))
        );
        assert_eq!(failure.result.as_deref(), Some("validation-failure"));
    }

    #[test]
    fn a_report_sums_per_policy_and_keeps_failure_details() {
        let d = n("example.com");
        let day: ReportDay = "2027-01-15".parse().unwrap();
        let reporter = Reporter::for_host(&n("relay.example.org"));
        let p = policy(sts::Mode::Testing);
        let expired = failed(
            sts_attempt(json!({"rule_id": "sts-testing"})),
            json!({"kind": "tls-handshake"}),
            "TLS handshake failed: invalid peer certificate: Expired",
            "sts-testing",
        );
        let mut records = counts(
            &d,
            StsState::Policy(&p),
            &[sts_attempt(json!({})), expired.clone(), dane(json!({}))],
            day,
        );
        records.extend(counts(&d, StsState::Policy(&p), &[expired], day));
        let report = build_report(&reporter, &d, day, &records);
        assert_eq!(report.report_id, "2027-01-15_example.com@relay.example.org");
        assert_eq!(report.contact_info, "postmaster@relay.example.org");
        assert_eq!(report.policies.len(), 2);
        let sts = report
            .policies
            .iter()
            .find(|p| p.policy.policy_type == PolicyType::Sts)
            .unwrap();
        assert_eq!(sts.policy.policy_domain, "example.com");
        assert_eq!(sts.summary.total_successful_session_count, 1);
        assert_eq!(sts.summary.total_failure_session_count, 2);
        assert_eq!(sts.failure_details.len(), 1);
        let f = &sts.failure_details[0];
        assert_eq!(f.result_type, ResultType::CertificateExpired);
        assert_eq!(f.failed_session_count, 2);
        assert_eq!(f.receiving_mx_hostname.as_deref(), Some("mx.example.com"));
        assert_eq!(f.receiving_ip, Some("192.0.2.25".parse().unwrap()));
        let tlsa = report
            .policies
            .iter()
            .find(|p| p.policy.policy_type == PolicyType::Tlsa)
            .unwrap();
        assert_eq!(tlsa.summary.total_successful_session_count, 1);
        // Unknown names from a newer build are left out, not a failure.
        let mut odd = records[0].clone();
        odd.policy_type = "quantum".into();
        assert_eq!(build_report(&reporter, &d, day, &[odd]).policies.len(), 0);
    }

    /// TXT answers from a fixed table.
    struct Txt(Vec<(String, TxtAnswer)>);

    impl TxtResolver for Txt {
        async fn txt(&self, name: &DnsName) -> TxtAnswer {
            self.0
                .iter()
                .find(|(n, _)| n == name.as_str())
                .map_or(TxtAnswer::NoRecords, |(_, a)| a.clone())
        }
    }

    fn txt_record(name: &str, text: &str) -> (String, TxtAnswer) {
        (
            name.to_owned(),
            TxtAnswer::Records(vec![text.as_bytes().to_vec()]),
        )
    }

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("danemta-tlsrpt-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_mailto_report_is_queued_once_and_other_domains_are_finished() {
        let dir = Dir::new("mailto");
        let day: ReportDay = "2027-01-15".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(u64::try_from(day.end_unix()).unwrap() + 3600);
        let (local, _) = LocalStore::open(&dir.0, unix(now)).unwrap();
        let store: Arc<dyn Store> = Arc::new(local);
        let p = policy(sts::Mode::Enforce);
        let during =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(day.start_unix()).unwrap() + 60);
        for domain in ["example.com", "norecord.example", "broken.example"] {
            record(
                &*store,
                &n(domain),
                StsState::Policy(&p),
                &[sts_attempt(json!({}))],
                during,
            )
            .unwrap();
        }
        let txt = Txt(vec![
            txt_record(
                "_smtp._tls.example.com",
                "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,mailto:copy@example.net",
            ),
            (
                "_smtp._tls.broken.example".into(),
                TxtAnswer::Failed(dns::Failure::Network("timeout".into())),
            ),
        ]);
        let uploader = Uploader::new(rustls::RootCertStore::empty()).unwrap();
        let reporter = Reporter::for_host(&n("relay.example.org"));
        let sender = Sender {
            txt: &txt,
            addresses: &sts::FixedAddresses(vec![]),
            uploader: &uploader,
            reporter: &reporter,
        };
        // Not before the day is over.
        assert!(matches!(
            send_reports_for_day(&store, &sender, day, during).await,
            Err(TlsRptError::DayNotOver(_))
        ));
        let sent = send_reports_for_day(&store, &sender, day, now)
            .await
            .unwrap();
        assert_eq!(sent.len(), 3, "{sent:?}");
        let by = |d: &str| {
            sent.iter()
                .find(|s| s.domain == n(d))
                .unwrap()
                .outcome
                .clone()
        };
        let SendOutcome::Sent {
            queued: Some(id),
            posted,
            failed,
        } = by("example.com")
        else {
            panic!("{sent:?}");
        };
        assert!(posted.is_empty() && failed.is_empty());
        assert!(matches!(by("norecord.example"), SendOutcome::NoRecord(_)));
        assert!(matches!(by("broken.example"), SendOutcome::Retry(_)));
        // The report is a message in the relay's own queue, to both addresses.
        let entry = store.show(&id, unix(now)).unwrap();
        assert_eq!(entry.sender, "postmaster@relay.example.org");
        let to: Vec<&str> = entry
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(to, ["tlsrpt@example.com", "copy@example.net"]);
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut store.body(&id).unwrap(), &mut body).unwrap();
        let message = mail_parser::MessageParser::default().parse(&body).unwrap();
        assert_eq!(
            message.header_raw("TLS-Report-Domain").map(str::trim),
            Some("example.com")
        );
        let attachment = message.attachment(0).unwrap();
        assert_eq!(
            attachment.content_type().map(|c| (c.ctype(), c.subtype())),
            Some(("application", Some("tlsrpt+gzip")))
        );
        let report = Report::from_gzip(attachment.contents()).unwrap();
        assert_eq!(report.policies.len(), 1);
        assert_eq!(report.policies[0].summary.total_successful_session_count, 1);
        assert_eq!(report.policies[0].policy.policy_type, PolicyType::Sts);
        // Idempotent: a second run sends nothing new; the failed lookup is tried again.
        let again = send_reports_for_day(&store, &sender, day, now)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].domain, n("broken.example"));
        assert_eq!(store.list(unix(now)).unwrap().len(), 1);
        // Days later it is given up, and then no longer due.
        let later = now + Duration::from_secs(u64::try_from(GIVE_UP_DAYS * 86_400).unwrap());
        let last = send_reports_for_day(&store, &sender, day, later)
            .await
            .unwrap();
        assert!(
            matches!(last[0].outcome, SendOutcome::GaveUp(_)),
            "{last:?}"
        );
        assert!(
            send_reports_for_day(&store, &sender, day, later)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn send_due_reports_covers_the_last_days_and_prunes() {
        let dir = Dir::new("due");
        let today: ReportDay = "2027-01-20".parse().unwrap();
        let now =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(today.start_unix()).unwrap() + 7200);
        let (local, _) = LocalStore::open(&dir.0, unix(now)).unwrap();
        let store: Arc<dyn Store> = Arc::new(local);
        let at = |day: ReportDay| {
            UNIX_EPOCH + Duration::from_secs(u64::try_from(day.start_unix()).unwrap() + 10)
        };
        let ancient = ReportDay::from_unix(today.start_unix() - (RETENTION_DAYS + 1) * 86_400);
        for day in [
            today.previous(),
            today.previous().previous(),
            today,
            ancient,
        ] {
            record(
                &*store,
                &n("example.com"),
                StsState::None,
                &[attempt(json!({}))],
                at(day),
            )
            .unwrap();
        }
        let txt = Txt(vec![]);
        let uploader = Uploader::new(rustls::RootCertStore::empty()).unwrap();
        let reporter = Reporter::for_host(&n("relay.example.org"));
        let sender = Sender {
            txt: &txt,
            addresses: &sts::FixedAddresses(vec![]),
            uploader: &uploader,
            reporter: &reporter,
        };
        let sent = send_due_reports(&store, &sender, now).await.unwrap();
        let days: Vec<String> = sent.iter().map(|s| s.day.to_string()).collect();
        assert_eq!(days, ["2027-01-19", "2027-01-18"]);
        assert!(
            store
                .tls_counts(&n("example.com"), ancient.start_unix())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .tls_counts(&n("example.com"), today.start_unix())
                .unwrap()
                .len(),
            1
        );
    }
}
