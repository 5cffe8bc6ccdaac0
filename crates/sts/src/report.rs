//! TLS-RPT reports, the sending side (RFC 8460 §4, §5): the aggregate report a sending MTA
//! writes for one policy domain and one day, its JSON, its gzip, its file name, the mail that
//! carries it and the HTTPS upload.
//!
//! | item | here | RFC 8460 |
//! |---|---|---|
//! | the report and its JSON member names | [`Report`], [`PolicyReport`], [`FailureDetails`] | §4.1–§4.4 |
//! | the result types | [`ResultType`] | §4.3 |
//! | the policy types | [`PolicyType`] | §4.4 |
//! | the reporting day | [`ReportDay`] | §4.1 (`date-range`), §5.1 |
//! | gzip and the file name | [`Report::gzip`], [`Report::file_name`] | §5.1 |
//! | the report mail | [`Report::mail`] | §5.3 |
//! | the HTTPS POST | [`Uploader`] | §5.3 |
//!
//! Nothing here counts sessions or decides what a failure was: the caller maps its delivery
//! attempts to counts and hands them over as a [`Report`]. Everything is deterministic given
//! its inputs (no clock is read), so that tests and a report printed by an operator agree
//! with the report sent.
//!
//! ```
//! use sts::report::{PolicyDetails, PolicyReport, PolicyType, Report, ReportDay, Summary};
//! let day: ReportDay = "2016-04-01".parse()?;
//! let report = Report {
//!     organization_name: "Company-X".into(),
//!     date_range: day.date_range(),
//!     contact_info: "sts-reporting@company-x.example".into(),
//!     report_id: "2016-04-01_company-y.example@mx.company-x.example".into(),
//!     policies: vec![PolicyReport {
//!         policy: PolicyDetails::no_policy_found("company-y.example"),
//!         summary: Summary { total_successful_session_count: 5, total_failure_session_count: 0 },
//!         failure_details: vec![],
//!     }],
//! };
//! let json = String::from_utf8(report.to_json()?)?;
//! assert!(json.contains(r#""start-datetime":"2016-04-01T00:00:00Z""#));
//! assert_eq!(Report::from_gzip(&report.gzip()?)?, report);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns::DnsName;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::fetch::{AddressError, AddressSource};
use crate::policy::Policy;

/// The media type of a gzip-compressed report (RFC 8460 §6.4), for the mail attachment and
/// the HTTPS `Content-Type`.
pub const MEDIA_TYPE_GZIP: &str = "application/tlsrpt+gzip";
/// The media type of an uncompressed report (RFC 8460 §6.3).
pub const MEDIA_TYPE_JSON: &str = "application/tlsrpt+json";
/// The largest decompressed report [`Report::from_gzip`] reads: a report is a few kilobytes;
/// a gzip that expands further is a bomb, not a report.
pub const MAX_REPORT_SIZE: usize = 16 * 1024 * 1024;
/// How long an upload may take by default (connection, TLS, request and answer).
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

const SECONDS_PER_DAY: i64 = 86_400;

/// The `result-type` of a failure (RFC 8460 §4.3; the IANA "STARTTLS Validation Result
/// Types" registry, §6.6): what went wrong with a session, or with the policy behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ResultType {
    /// `starttls-not-supported`: the MX did not offer STARTTLS (§4.3.1).
    StarttlsNotSupported,
    /// `certificate-host-mismatch`: the certificate is not valid for the MX host name
    /// (§4.3.1).
    CertificateHostMismatch,
    /// `certificate-expired`: the certificate has expired (§4.3.1).
    CertificateExpired,
    /// `certificate-not-trusted`: the certificate does not chain to a trusted root (§4.3.1).
    CertificateNotTrusted,
    /// `validation-failure`: any other failure to negotiate or authenticate TLS, a DANE
    /// mismatch among them (§4.3.1).
    ValidationFailure,
    /// `tlsa-invalid`: the TLSA RRset holds no valid record (§4.3.2.1).
    TlsaInvalid,
    /// `dnssec-invalid`: the resolver returned no valid (DNSSEC-validated) records
    /// (§4.3.2.1).
    DnssecInvalid,
    /// `dane-required`: the sender requires DANE and the MX has no TLSA records
    /// (§4.3.2.1).
    DaneRequired,
    /// `sts-policy-fetch-error`: the MTA-STS policy could not be retrieved (§4.3.2.2).
    StsPolicyFetchError,
    /// `sts-policy-invalid`: the retrieved MTA-STS policy (or its TXT record) is invalid
    /// (§4.3.2.2).
    StsPolicyInvalid,
    /// `sts-webpki-invalid`: the MTA-STS policy host failed PKIX authentication
    /// (§4.3.2.2).
    StsWebpkiInvalid,
}

impl ResultType {
    /// Every result type, in the order of RFC 8460 §4.3.
    pub const ALL: [ResultType; 11] = [
        ResultType::StarttlsNotSupported,
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::TlsaInvalid,
        ResultType::DnssecInvalid,
        ResultType::DaneRequired,
        ResultType::StsPolicyFetchError,
        ResultType::StsPolicyInvalid,
        ResultType::StsWebpkiInvalid,
    ];

    /// The `result-type` string of RFC 8460 §4.3.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a result type of RFC 8460 §4.3, nor a policy type of §4.4.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS-RPT {what} {value:?}")]
pub struct UnknownName {
    /// `result-type` or `policy-type`.
    pub what: &'static str,
    /// The string.
    pub value: String,
}

impl FromStr for ResultType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        ResultType::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "result-type",
                value: s.to_owned(),
            })
    }
}

/// The kind of policy a report section is about (RFC 8460 §4.4, `policy-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    /// `tlsa`: DANE (RFC 7672); the policy string is the TLSA RRset.
    #[serde(rename = "tlsa")]
    Tlsa,
    /// `sts`: MTA-STS (RFC 8461); the policy string is the policy file's lines.
    #[serde(rename = "sts")]
    Sts,
    /// `no-policy-found`: neither applied.
    #[serde(rename = "no-policy-found")]
    NoPolicyFound,
}

impl PolicyType {
    /// Every policy type.
    pub const ALL: [PolicyType; 3] = [PolicyType::Tlsa, PolicyType::Sts, PolicyType::NoPolicyFound];

    /// The `policy-type` string of RFC 8460 §4.4.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        PolicyType::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "policy-type",
                value: s.to_owned(),
            })
    }
}

/// The lines of an MTA-STS policy as a report's `policy-string` (RFC 8460 §4.4: "the applied
/// policy", one JSON string per line, as in its §4.5 example): `version: STSv1`, `mode`,
/// each `mx` and `max_age`.
pub fn sts_policy_strings(policy: &Policy) -> Vec<String> {
    let mut lines = vec![
        "version: STSv1".to_owned(),
        format!("mode: {}", policy.mode()),
    ];
    lines.extend(policy.mx().iter().map(|mx| format!("mx: {mx}")));
    lines.push(format!("max_age: {}", policy.max_age()));
    lines
}

/// One UTC day, the period of a daily report (RFC 8460 §4.1 `date-range`; §5.1: reports
/// cover a day, starting and ending at midnight UTC). Written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportDay {
    /// Days since 1970-01-01.
    days: i64,
}

/// Not a `YYYY-MM-DD` date.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date as YYYY-MM-DD")]
pub struct BadDay(pub String);

impl ReportDay {
    /// The day that holds `t` (UTC); times before 1970 give 1970-01-01.
    pub fn containing(t: SystemTime) -> Self {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self::from_unix(secs)
    }

    /// The day that holds the Unix time `secs` (UTC).
    pub fn from_unix(secs: i64) -> Self {
        Self {
            days: secs.div_euclid(SECONDS_PER_DAY),
        }
    }

    /// The day before.
    pub fn previous(self) -> Self {
        Self {
            days: self.days.saturating_sub(1),
        }
    }

    /// Its first second, 00:00:00Z, as Unix seconds.
    pub fn start_unix(self) -> i64 {
        self.days.saturating_mul(SECONDS_PER_DAY)
    }

    /// Its last second, 23:59:59Z, as Unix seconds (the end of `date-range`, as in the
    /// example of RFC 8460 §4.5).
    pub fn end_unix(self) -> i64 {
        self.start_unix().saturating_add(SECONDS_PER_DAY - 1)
    }

    /// The `date-range` of its report.
    pub fn date_range(self) -> DateRange {
        DateRange {
            start: unix_time(self.start_unix()),
            end: unix_time(self.end_unix()),
        }
    }
}

impl fmt::Display for ReportDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp(self.start_unix()) {
            Ok(t) => {
                let d = t.date();
                write!(
                    f,
                    "{:04}-{:02}-{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                )
            }
            Err(_) => write!(f, "day {}", self.days),
        }
    }
}

impl FromStr for ReportDay {
    type Err = BadDay;

    fn from_str(s: &str) -> Result<Self, BadDay> {
        let bad = || BadDay(s.to_owned());
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(bad());
        }
        if !digits(8..10) {
            return Err(bad());
        }
        let year: i32 = s[0..4].parse().map_err(|_| bad())?;
        let month: u8 = s[5..7].parse().map_err(|_| bad())?;
        let day: u8 = s[8..10].parse().map_err(|_| bad())?;
        let month = time::Month::try_from(month).map_err(|_| bad())?;
        let date = time::Date::from_calendar_date(year, month, day).map_err(|_| bad())?;
        Ok(Self::from_unix(
            date.midnight().assume_utc().unix_timestamp(),
        ))
    }
}

/// `SystemTime` of Unix seconds (clamped at the epoch).
fn unix_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The period a report covers (RFC 8460 §4.4 `date-range`), each end an RFC 3339 UTC
/// date-time in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    /// `start-datetime`.
    #[serde(rename = "start-datetime", with = "rfc3339")]
    pub start: SystemTime,
    /// `end-datetime`.
    #[serde(rename = "end-datetime", with = "rfc3339")]
    pub end: SystemTime,
}

/// An aggregate report (RFC 8460 §4.4): one reporting organisation, one period, one policy
/// domain's sessions grouped by the policy applied to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `organization-name`: who sends the report.
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    /// `date-range`: the period covered.
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    /// `contact-info`: an address to reach the sender about the report.
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    /// `report-id`: unique to this report.
    #[serde(rename = "report-id")]
    pub report_id: String,
    /// `policies`: one entry per policy applied (RFC 8460 §4.4); empty when there is
    /// nothing to report.
    pub policies: Vec<PolicyReport>,
}

/// One policy's part of a report (RFC 8460 §4.4, an element of `policies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// `policy`: the policy applied.
    pub policy: PolicyDetails,
    /// `summary`: the sessions counted under it.
    pub summary: Summary,
    /// `failure-details`: the failed sessions, grouped (omitted when there are none).
    #[serde(
        rename = "failure-details",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failure_details: Vec<FailureDetails>,
}

/// The policy applied (RFC 8460 §4.4, `policy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDetails {
    /// `policy-type`: `tlsa`, `sts` or `no-policy-found`.
    #[serde(rename = "policy-type")]
    pub policy_type: PolicyType,
    /// `policy-string`: the policy, one string per line (a TLSA RRset in presentation form,
    /// or the MTA-STS policy's lines); omitted when empty (`no-policy-found`, or a policy
    /// that could not be retrieved).
    #[serde(
        rename = "policy-string",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_string: Vec<String>,
    /// `policy-domain`: the domain the policy is for.
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    /// `mx-host`: for `sts`, the policy's `mx` patterns; for `tlsa`, the MX host the TLSA
    /// records belong to; omitted when empty.
    #[serde(rename = "mx-host", default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl PolicyDetails {
    /// `no-policy-found` for `domain`.
    pub fn no_policy_found(domain: &str) -> Self {
        Self {
            policy_type: PolicyType::NoPolicyFound,
            policy_string: Vec::new(),
            policy_domain: domain.to_owned(),
            mx_host: Vec::new(),
        }
    }
}

/// Session counts under one policy (RFC 8460 §4.4, `summary`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `total-successful-session-count`: sessions whose TLS met the policy.
    #[serde(rename = "total-successful-session-count")]
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`: sessions that failed it.
    #[serde(rename = "total-failure-session-count")]
    pub total_failure_session_count: u64,
}

/// Failed sessions with the same result, sending and receiving side (RFC 8460 §4.4, an
/// element of `failure-details`). Optional members are omitted when unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// `result-type`.
    #[serde(rename = "result-type")]
    pub result_type: ResultType,
    /// `sending-mta-ip`: the address the sessions came from.
    #[serde(
        rename = "sending-mta-ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`: the MX host tried.
    #[serde(
        rename = "receiving-mx-hostname",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-mx-helo`: the name the MX greeted with.
    #[serde(
        rename = "receiving-mx-helo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub receiving_mx_helo: Option<String>,
    /// `receiving-ip`: the MX address connected to.
    #[serde(
        rename = "receiving-ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub receiving_ip: Option<IpAddr>,
    /// `failed-session-count`.
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
    /// `additional-information`: a URI with more about the failure.
    #[serde(
        rename = "additional-information",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_information: Option<String>,
    /// `failure-reason-code`: free text, e.g. the TLS library's error.
    #[serde(
        rename = "failure-reason-code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_reason_code: Option<String>,
}

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The JSON could not be written or parsed.
    #[error("TLS-RPT report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Compressing or decompressing failed (not gzip, or truncated).
    #[error("TLS-RPT report gzip: {0}")]
    Gzip(#[source] io::Error),
    /// The decompressed report is larger than [`MAX_REPORT_SIZE`].
    #[error("the decompressed TLS-RPT report is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A file name's unique id is not 1 or more ASCII letters and digits (RFC 8460 §5.1).
    #[error("invalid report file name unique-id {0:?}: ASCII letters and digits only")]
    BadUniqueId(String),
    /// The report mail could not be written.
    #[error("TLS-RPT report mail: {0}")]
    Mail(#[source] io::Error),
}

impl Report {
    /// The report as compact JSON (RFC 8460 §4.4).
    pub fn to_json(&self) -> Result<Vec<u8>, ReportError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// The report as indented JSON, for people.
    pub fn to_json_pretty(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parses a report's JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, ReportError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// The JSON, gzip-compressed (RFC 8460 §5.1: reports are sent compressed, as
    /// `application/tlsrpt+gzip`).
    pub fn gzip(&self) -> Result<Vec<u8>, ReportError> {
        let json = self.to_json()?;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 4 + 64),
            flate2::Compression::default(),
        );
        encoder.write_all(&json).map_err(ReportError::Gzip)?;
        encoder.finish().map_err(ReportError::Gzip)
    }

    /// Parses a gzip-compressed report, reading at most [`MAX_REPORT_SIZE`] bytes of JSON.
    pub fn from_gzip(gzip: &[u8]) -> Result<Self, ReportError> {
        let limit = MAX_REPORT_SIZE;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(gzip)
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut json)
            .map_err(ReportError::Gzip)?;
        if json.len() > limit {
            return Err(ReportError::TooLarge { limit });
        }
        Self::from_json(&json)
    }

    /// The file name of the gzip report (RFC 8460 §5.1): `sender!policy-domain!begin!end`,
    /// then `!unique-id` when given, then `.json.gz`; `begin` and `end` are the Unix times of
    /// the `date-range`. `sender` is the domain of the sending MTA.
    pub fn file_name(
        &self,
        sender: &DnsName,
        policy_domain: &DnsName,
        unique_id: Option<&str>,
    ) -> Result<String, ReportError> {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut name = format!(
            "{sender}!{policy_domain}!{}!{}",
            secs(self.date_range.start),
            secs(self.date_range.end)
        );
        if let Some(id) = unique_id {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ReportError::BadUniqueId(id.to_owned()));
            }
            name.push('!');
            name.push_str(id);
        }
        name.push_str(".json.gz");
        Ok(name)
    }

    /// The report mail (RFC 8460 §5.3): `multipart/report; report-type="tlsrpt"` with a
    /// short text part and the gzip report as an `application/tlsrpt+gzip` attachment named
    /// as [`Report::file_name`] says; `TLS-Report-Domain`, `TLS-Report-Submitter` and the
    /// subject `Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>` in the
    /// header. The message is not DKIM-signed here.
    pub fn mail(&self, mail: &ReportMail<'_>) -> Result<Vec<u8>, ReportError> {
        let gzip = self.gzip()?;
        let file_name = self.file_name(mail.submitter, mail.policy_domain, None)?;
        let text = format!(
            "This is an aggregate TLS report (RFC 8460) from {} for {}, covering {} to {}.\r\n",
            mail.submitter,
            mail.policy_domain,
            rfc3339::text(self.date_range.start),
            rfc3339::text(self.date_range.end),
        );
        let text_part = MimePart::new(
            ContentType::new("text/plain").attribute("charset", "us-ascii"),
            BodyPart::Text(text.into()),
        )
        .transfer_encoding("7bit");
        let report_part = MimePart::new(
            ContentType::new(MEDIA_TYPE_GZIP),
            BodyPart::Binary(gzip.into()),
        )
        .attachment(file_name);
        let body = MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
            vec![text_part, report_part],
        );
        let secs = mail
            .date
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let subject = format!(
            "Report Domain: {} Submitter: {} Report-ID: <{}>",
            mail.policy_domain, mail.submitter, self.report_id
        );
        let mut builder = MessageBuilder::new()
            .from(Address::new_address(None::<&str>, mail.from.to_owned()))
            // Raw: the subject is ASCII, and RFC 8460 §5.3 gives it in this form (an
            // encoded-word would hide it from filters).
            .header("Subject", Raw::new(subject))
            .date(Date::new(secs))
            .message_id(MessageId::new(format!(
                "{}.{secs}.tlsrpt@{}",
                message_id_part(&self.report_id),
                mail.submitter
            )))
            .header(
                "TLS-Report-Domain",
                Raw::new(mail.policy_domain.to_string()),
            )
            .header("TLS-Report-Submitter", Raw::new(mail.submitter.to_string()))
            .header("Auto-Submitted", Raw::new("auto-generated"))
            // RFC 8460 §5.3: a report goes out despite TLS failures (it may be about them);
            // RFC 8689 §4.2.2 is how a relay is told so.
            .header("TLS-Required", Raw::new("No"))
            .header("MIME-Version", Raw::new("1.0"))
            .body(body);
        let to: Vec<Address<'_>> = mail
            .to
            .iter()
            .map(|a| Address::new_address(None::<&str>, a.as_str()))
            .collect();
        builder = builder.to(Address::new_list(to));
        let mut out = Vec::new();
        builder.write_to(&mut out).map_err(ReportError::Mail)?;
        Ok(out)
    }
}

/// The report id with only what a `Message-ID` left part may hold (RFC 5322 `dot-atom-text`
/// less a few): anything else becomes `-`.
fn message_id_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// What the report mail needs besides the report (RFC 8460 §5.3).
#[derive(Clone, Copy, Debug)]
pub struct ReportMail<'a> {
    /// `From:` (and, by convention, the envelope sender).
    pub from: &'a str,
    /// `To:`: the `mailto:` addresses of the domain's `rua`.
    pub to: &'a [String],
    /// The policy domain (`TLS-Report-Domain`).
    pub policy_domain: &'a DnsName,
    /// The sending MTA's domain (`TLS-Report-Submitter`, and the file name's `sender`).
    pub submitter: &'a DnsName,
    /// `Date:`.
    pub date: SystemTime,
}

/// RFC 3339 UTC date-times (`2016-04-01T00:00:00Z`) for serde.
mod rfc3339 {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    /// `t` as RFC 3339 UTC, whole seconds.
    pub fn text(t: SystemTime) -> String {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        let t = time::OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        let secs = u64::try_from(t.unix_timestamp())
            .map_err(|_| serde::de::Error::custom("a date-time before 1970"))?;
        Ok(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

/// Why an HTTPS upload failed (RFC 8460 §5.3: the sender may try again later).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The `rua` URI is not an `https:` URL this client can use.
    #[error("invalid report URL {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The host has no usable address.
    #[error("no address for {host}: {source}")]
    Addresses {
        /// The host.
        host: String,
        /// Why.
        source: AddressError,
    },
    /// No address accepted a TCP connection.
    #[error("cannot connect to {host} (last tried {addr}): {source}")]
    Connect {
        /// The host.
        host: String,
        /// The last address tried.
        addr: SocketAddr,
        /// Its error.
        source: io::Error,
    },
    /// The TLS handshake failed, the certificate included (PKIX for the host name).
    #[error("TLS with {host} at {addr}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// An HTTP protocol error.
    #[error("HTTP with {host}: {source}")]
    Http {
        /// The host.
        host: String,
        /// The error.
        source: hyper::Error,
    },
    /// The server answered with a status other than 2xx (redirects are not followed).
    #[error("HTTP status {0} (2xx expected)")]
    Status(u16),
    /// The upload took longer than the limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where an upload goes, from an `https:` URL.
struct Target {
    /// The host as in the URL (no brackets around an IPv6 literal).
    host: String,
    port: u16,
    /// The `Host` header: the authority without user information.
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, UploadError> {
    let bad = |why| UploadError::BadUrl {
        url: url.to_owned(),
        why,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        return Err(bad("not https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information in the URL"));
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Target {
        host,
        port: authority.port_u16().unwrap_or(443),
        authority: authority.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// Uploads reports over HTTPS (RFC 8460 §5.3): `POST` of the gzip report as
/// `application/tlsrpt+gzip` to an `https:` `rua`, the server authenticated with PKIX for
/// the URL's host over the caller's trust anchors (the roots of the MTA-STS fetch), no
/// redirects followed, all within a time limit. Built once and shared.
#[derive(Clone)]
pub struct Uploader {
    tls: TlsConnector,
    timeout: Duration,
}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploader")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// An uploader that trusts `roots` (see [`crate::trust`]). An error only when rustls'
    /// ring provider supports no TLS version.
    pub fn new(roots: impl Into<Arc<RootCertStore>>) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout: DEFAULT_UPLOAD_TIMEOUT,
        })
    }

    /// The time a whole upload may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// POSTs `gzip` (a [`Report::gzip`]) to the `https:` URL `url`, connecting to the
    /// addresses `addresses` gives for its host (or to the host itself when it is an IP
    /// literal). `Ok` on a 2xx answer.
    pub async fn post(
        &self,
        url: &str,
        gzip: &[u8],
        addresses: &impl AddressSource,
    ) -> Result<(), UploadError> {
        let target = target(url)?;
        tokio::time::timeout(self.timeout, self.post_to(&target, url, gzip, addresses))
            .await
            .unwrap_or(Err(UploadError::Timeout(self.timeout)))
    }

    async fn post_to(
        &self,
        target: &Target,
        url: &str,
        gzip: &[u8],
        addresses: &impl AddressSource,
    ) -> Result<(), UploadError> {
        let bad = |why| UploadError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let server_name =
            ServerName::try_from(target.host.clone()).map_err(|_| bad("invalid host name"))?;
        let host_header =
            HeaderValue::from_str(&target.authority).map_err(|_| bad("invalid host name"))?;
        let ips = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let name: DnsName = target.host.parse().map_err(|_| bad("invalid host name"))?;
                addresses
                    .addresses(&name)
                    .await
                    .map_err(|source| UploadError::Addresses {
                        host: target.host.clone(),
                        source,
                    })?
            }
        };
        match crate::fetch::connect_first(&ips, target.port).await {
            Ok((addr, tcp)) => {
                self.exchange(target, addr, server_name, host_header, tcp, gzip)
                    .await
            }
            Err(Some((addr, source))) => Err(UploadError::Connect {
                host: target.host.clone(),
                addr,
                source,
            }),
            Err(None) => Err(UploadError::Addresses {
                host: target.host.clone(),
                source: AddressError::NoAddresses,
            }),
        }
    }

    async fn exchange(
        &self,
        target: &Target,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        host_header: HeaderValue,
        tcp: TcpStream,
        gzip: &[u8],
    ) -> Result<(), UploadError> {
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|source| UploadError::Tls {
                host: target.host.clone(),
                addr,
                source,
            })?;
        let http = |source| UploadError::Http {
            host: target.host.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(gzip)));
        *request.method_mut() = Method::POST;
        let result = match target.path.parse::<Uri>() {
            Ok(path) => {
                *request.uri_mut() = path;
                let headers = request.headers_mut();
                headers.insert(HOST, host_header);
                headers.insert(USER_AGENT, HeaderValue::from_static("danemta"));
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE_GZIP));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(gzip.len()));
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        // Read the (small) answer so the connection ends cleanly; its
                        // content does not matter.
                        let _ = response.into_body().collect().await;
                        if status.is_success() {
                            Ok(())
                        } else {
                            Err(UploadError::Status(status.as_u16()))
                        }
                    }
                    Err(e) => Err(http(e)),
                }
            }
            Err(_) => Err(UploadError::BadUrl {
                url: target.path.clone(),
                why: "invalid path",
            }),
        };
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

    /// The example report of RFC 8460 §4.5.
    const RFC_EXAMPLE: &str = r#"{
     "organization-name": "Company-X",
     "date-range": {
       "start-datetime": "2016-04-01T00:00:00Z",
       "end-datetime": "2016-04-01T23:59:59Z"
     },
     "contact-info": "sts-reporting@company-x.example",
     "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
     "policies": [{
       "policy": {
         "policy-type": "sts",
         "policy-string": ["version: STSv1","mode: testing",
               "mx: *.mail.company-y.example","max_age: 86400"],
         "policy-domain": "company-y.example",
         "mx-host": ["*.mail.company-y.example"]
       },
       "summary": {
         "total-successful-session-count": 5326,
         "total-failure-session-count": 303
       },
       "failure-details": [{
         "result-type": "certificate-expired",
         "sending-mta-ip": "2001:db8:abcd:0012::1",
         "receiving-mx-hostname": "mx1.mail.company-y.example",
         "failed-session-count": 100
       }, {
         "result-type": "starttls-not-supported",
         "sending-mta-ip": "2001:db8:abcd:0013::1",
         "receiving-mx-hostname": "mx2.mail.company-y.example",
         "receiving-ip": "203.0.113.56",
         "failed-session-count": 200,
         "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"
       }, {
         "result-type": "validation-failure",
         "sending-mta-ip": "198.51.100.62",
         "receiving-ip": "203.0.113.58",
         "receiving-mx-hostname": "mx-backup.mail.company-y.example",
         "failed-session-count": 3,
         "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
       }]
     }]
   }"#;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn example() -> Report {
        Report::from_json(RFC_EXAMPLE.as_bytes()).unwrap()
    }

    #[test]
    fn the_rfc_example_parses_and_round_trips() {
        let r = example();
        assert_eq!(r.organization_name, "Company-X");
        assert_eq!(
            r.date_range,
            "2016-04-01".parse::<ReportDay>().unwrap().date_range()
        );
        let p = &r.policies[0];
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        assert_eq!(p.policy.mx_host, ["*.mail.company-y.example"]);
        assert_eq!(p.summary.total_successful_session_count, 5326);
        assert_eq!(p.summary.total_failure_session_count, 303);
        let kinds: Vec<ResultType> = p.failure_details.iter().map(|f| f.result_type).collect();
        assert_eq!(
            kinds,
            [
                ResultType::CertificateExpired,
                ResultType::StarttlsNotSupported,
                ResultType::ValidationFailure
            ]
        );
        assert_eq!(
            p.failure_details[1].receiving_ip,
            Some("203.0.113.56".parse().unwrap())
        );
        assert_eq!(
            p.failure_details[2].failure_reason_code.as_deref(),
            Some("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
        );
        // Written back, the same members with the same values (JSON, not bytes: IPv6 text
        // is normalised).
        let again = Report::from_json(&r.to_json().unwrap()).unwrap();
        assert_eq!(again, r);
        let ours: serde_json::Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(RFC_EXAMPLE).unwrap();
        assert_eq!(ours["date-range"], theirs["date-range"]);
        assert_eq!(
            ours["policies"][0]["policy"],
            theirs["policies"][0]["policy"]
        );
        assert_eq!(
            ours["policies"][0]["summary"],
            theirs["policies"][0]["summary"]
        );
        assert_eq!(
            ours["policies"][0]["failure-details"][2],
            theirs["policies"][0]["failure-details"][2]
        );
        // Absent optional members are left out, never `null`.
        let first = &ours["policies"][0]["failure-details"][0];
        assert!(first.get("receiving-ip").is_none(), "{first}");
        assert!(first.get("receiving-mx-helo").is_none(), "{first}");
    }

    #[test]
    fn the_policy_string_of_an_sts_policy_is_its_lines() {
        let policy = Policy::new(
            "1".parse().unwrap(),
            Mode::Testing,
            vec!["*.mail.company-y.example".parse().unwrap()],
            86_400,
        )
        .unwrap();
        assert_eq!(
            sts_policy_strings(&policy),
            example().policies[0].policy.policy_string
        );
    }

    #[test]
    fn result_and_policy_types_have_the_rfc_names() {
        for r in ResultType::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.as_str().parse::<ResultType>().unwrap(), r);
        }
        let names: std::collections::HashSet<_> =
            ResultType::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), 11);
        assert!("certificate-revoked".parse::<ResultType>().is_err());
        for p in PolicyType::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.as_str().parse::<PolicyType>().unwrap(), p);
        }
        assert_eq!(PolicyType::NoPolicyFound.as_str(), "no-policy-found");
    }

    #[test]
    fn days_are_utc_and_parse_strictly() {
        let day: ReportDay = "2016-04-01".parse().unwrap();
        assert_eq!(day.start_unix(), 1_459_468_800);
        assert_eq!(day.end_unix(), 1_459_468_800 + 86_399);
        assert_eq!(day.to_string(), "2016-04-01");
        assert_eq!(day.previous().to_string(), "2016-03-31");
        assert_eq!(ReportDay::from_unix(1_459_468_800 + 86_399), day);
        assert_eq!(
            ReportDay::from_unix(1_459_468_800 + 86_400),
            "2016-04-02".parse().unwrap()
        );
        assert_eq!(ReportDay::containing(unix_time(1_459_468_800 + 5)), day);
        for bad in [
            "2016-4-1",
            "2016-02-30",
            "yesterday",
            "",
            "2016-04-01T00:00:00Z",
        ] {
            assert!(bad.parse::<ReportDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gzip_round_trips_and_garbage_is_an_error() {
        let r = example();
        let gz = r.gzip().unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        assert_eq!(Report::from_gzip(&gz).unwrap(), r);
        assert!(matches!(
            Report::from_gzip(b"not gzip"),
            Err(ReportError::Gzip(_))
        ));
        assert!(matches!(
            Report::from_gzip(&gz[..gz.len() / 2]),
            Err(ReportError::Gzip(_))
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..17 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(matches!(
            Report::from_gzip(&bomb),
            Err(ReportError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_file_name_follows_section_5_1() {
        let r = example();
        let name = r
            .file_name(&n("mail.sender.example"), &n("company-y.example"), None)
            .unwrap();
        assert_eq!(
            name,
            "mail.sender.example!company-y.example!1459468800!1459555199.json.gz"
        );
        let with_id = r
            .file_name(
                &n("mail.sender.example"),
                &n("company-y.example"),
                Some("a1"),
            )
            .unwrap();
        assert!(with_id.ends_with("!1459555199!a1.json.gz"), "{with_id}");
        for bad in ["", "a!b", "a.b", "é"] {
            assert!(matches!(
                r.file_name(&n("s.example"), &n("d.example"), Some(bad)),
                Err(ReportError::BadUniqueId(_))
            ));
        }
    }

    #[test]
    fn the_mail_follows_section_5_3() {
        let r = example();
        let to = vec!["tlsrpt@company-y.example".to_owned()];
        let raw = r
            .mail(&ReportMail {
                from: "postmaster@mail.sender.example",
                to: &to,
                policy_domain: &n("company-y.example"),
                submitter: &n("mail.sender.example"),
                date: unix_time(1_459_555_300),
            })
            .unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        // Unfolded (RFC 5322 §2.2.3): long fields may be folded.
        let header = text.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ");
        assert!(
            header.contains("TLS-Report-Domain: company-y.example\r\n"),
            "{header}"
        );
        assert!(
            header.contains("TLS-Report-Submitter: mail.sender.example\r\n"),
            "{header}"
        );
        assert!(
            header.contains(
                "Subject: Report Domain: company-y.example Submitter: mail.sender.example Report-ID: <5065427c-23d3-47ca-b6e0-946ea0e8c4be>"
            ),
            "{header}"
        );
        assert!(header.contains("multipart/report"), "{header}");
        assert!(header.contains("TLS-Required: No\r\n"), "{header}");
        assert!(header.contains("report-type=\"tlsrpt\""), "{header}");
        assert!(
            header.contains("To: <tlsrpt@company-y.example>"),
            "{header}"
        );
        assert!(
            text.contains("Content-Type: application/tlsrpt+gzip"),
            "{text}"
        );
        assert!(
            text.contains("mail.sender.example!company-y.example!1459468800!1459555199.json.gz"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() <= 998),
            "line length (RFC 5322 §2.1.1)"
        );
        assert!(raw.iter().all(u8::is_ascii), "7-bit clean");
        // The attachment decodes back to the report.
        let b64: String = text
            .split("Content-Type: application/tlsrpt+gzip")
            .nth(1)
            .and_then(|rest| rest.split("\r\n\r\n").nth(1))
            .and_then(|body| body.split("\r\n--").next())
            .unwrap()
            .split_whitespace()
            .collect();
        let gz = base64_decode(&b64);
        assert_eq!(Report::from_gzip(&gz).unwrap(), r);
    }

    /// A plain base64 decoder for the test (standard alphabet, padding).
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn upload_urls_must_be_https_with_a_host() {
        let t = target("https://reports.example.net/tlsrpt?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("reports.example.net", 443, "/tlsrpt?x=1")
        );
        let t = target("https://[2001:db8::1]:8443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("2001:db8::1", 8443, "/")
        );
        assert_eq!(t.authority, "[2001:db8::1]:8443");
        for bad in [
            "http://reports.example.net/",
            "mailto:a@example.net",
            "https://user:pw@reports.example.net/",
            "https:///path",
            "not a url",
        ] {
            assert!(
                matches!(target(bad), Err(UploadError::BadUrl { .. })),
                "{bad}"
            );
        }
    }
}
