//! The outcome of a delivery: per recipient, and per attempt with its evidence and the rule
//! that decided it. Logs, `danemta send --json`, and the relay's queue (which stores these
//! values: they serialize both ways) are views of the same values.
//!
//! The JSON keys and values are PRODUCT.md's contract for `send --json`; typed fields that
//! print as text there (the rule, a recipient's reply) carry their typed form in extra keys
//! (`rule_id`, `smtp`), from which they are read back.

use std::fmt;
use std::net::IpAddr;

use dane::Tlsa;
use dns::route::DaneState;
use dns::{DnsName, Status};
use serde::{Deserialize, Serialize};

use crate::reply::{EnhancedStatus, Reply};
use crate::session::{SessionError, Stage, TlsInfo};

/// The rules cited in outcomes (PRODUCT.md checklist numbers in brackets). The serialized
/// form is a stable kebab-case id (`dane-mandatory`); [`Rule::citation`] is the text shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Secure TLSA records make TLS and authentication mandatory (RFC 7672 §2.2, rule 5).
    DaneMandatory,
    /// The peer must match a usable TLSA record (RFC 7672 §3.1, rules 7 and 8).
    DaneAuth,
    /// Secure TLSA records, none usable: TLS mandatory, unauthenticated (RFC 7672 §2.2,
    /// rule 6).
    DaneUnusableRecords,
    /// A failed TLSA or address lookup makes the host unusable (RFC 7672 §2.2, rule 5).
    HostUnusable,
    /// No secure TLSA records: opportunistic TLS (RFC 7672 §2.2, RFC 7435).
    Opportunistic,
    /// Opportunistic TLS failed; retried in plaintext (RFC 7435 §4).
    PlaintextRetry,
    /// Policy `dane-only`: no delivery without DANE authentication.
    DaneOnly,
    /// The destination's TLS policy level decided.
    Policy,
    /// The server's reply decided (RFC 5321 §4.2).
    Smtp,
    /// Try the next host, defer when none is left (RFC 5321 §5.1).
    NextMx,
    /// Credentials go only to a server authenticated as the next hop's (RFC 6186 §6,
    /// RFC 7673 §3).
    Credentials,
    /// The configured limit on addresses and sessions per delivery (RFC 5321 §5.1).
    Limits,
    /// An MTA-STS policy in mode `enforce` on a host without secure TLSA records: TLS with a
    /// PKIX certificate valid for the MX host name is mandatory (RFC 8461 §4.2, §5).
    StsEnforce,
    /// An MTA-STS policy in mode `enforce`: an MX host that matches none of its `mx`
    /// patterns is not used (RFC 8461 §4.1, §5).
    StsMxMismatch,
    /// An MTA-STS policy in mode `testing`: delivery goes on as without it (RFC 8461 §5).
    StsTesting,
    /// A REQUIRETLS message goes only over TLS to a server authenticated by DANE or PKIX,
    /// named by a DNSSEC-signed MX lookup or an MTA-STS policy, that advertises REQUIRETLS
    /// (RFC 8689 §4.2.1).
    RequireTls,
    /// `TLS-Required: No`: the recipient domain's DANE or MTA-STS policy is ignored for this
    /// message, TLS is opportunistic (RFC 8689 §4.2.2).
    TlsRequiredNo,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 17] = [
        Rule::DaneMandatory,
        Rule::DaneAuth,
        Rule::DaneUnusableRecords,
        Rule::HostUnusable,
        Rule::Opportunistic,
        Rule::PlaintextRetry,
        Rule::DaneOnly,
        Rule::Policy,
        Rule::Smtp,
        Rule::NextMx,
        Rule::Credentials,
        Rule::Limits,
        Rule::StsEnforce,
        Rule::StsMxMismatch,
        Rule::StsTesting,
        Rule::RequireTls,
        Rule::TlsRequiredNo,
    ];

    /// The RFC text behind the rule, as logs and `send --json` show it.
    pub fn citation(self) -> &'static str {
        match self {
            Rule::DaneMandatory => {
                "RFC 7672 §2.2 [rule 5]: secure TLSA records make TLS and authentication mandatory; try the next MX, never plaintext"
            }
            Rule::DaneAuth => {
                "RFC 7672 §3.1 [rules 7, 8]: the peer must match a usable TLSA record"
            }
            Rule::DaneUnusableRecords => {
                "RFC 7672 §2.2 [rule 6]: secure TLSA records, none usable: TLS mandatory, unauthenticated"
            }
            Rule::HostUnusable => {
                "RFC 7672 §2.2 [rule 5]: a failed TLSA or address lookup makes the host unusable"
            }
            Rule::Opportunistic => {
                "RFC 7672 §2.2 / RFC 7435: no secure TLSA records: opportunistic TLS"
            }
            Rule::PlaintextRetry => "RFC 7435 §4: opportunistic TLS failed; retried in plaintext",
            Rule::DaneOnly => {
                "policy dane-only: defer unless usable secure TLSA records authenticate the peer"
            }
            Rule::Policy => "the destination's TLS policy level",
            Rule::Smtp => "RFC 5321 §4.2: the server's reply decides",
            Rule::NextMx => "RFC 5321 §5.1: try the next host, defer when none is left",
            Rule::Credentials => {
                "RFC 6186 §6, RFC 7673 §3: credentials go only to a server authenticated as the next hop's"
            }
            Rule::Limits => {
                "RFC 5321 §5.1: a configurable limit on the addresses tried (Postfix smtp_mx_address_limit, smtp_mx_session_limit)"
            }
            Rule::StsEnforce => {
                "RFC 8461 §4.2, §5: an MTA-STS policy in enforce mode: TLS with a PKIX certificate valid for the MX host name is mandatory"
            }
            Rule::StsMxMismatch => {
                "RFC 8461 §4.1, §5: an MTA-STS policy in enforce mode: an MX host matching none of its mx patterns is not used"
            }
            Rule::StsTesting => {
                "RFC 8461 §5: an MTA-STS policy in testing mode: failures are reported, delivery goes on"
            }
            Rule::RequireTls => {
                "RFC 8689 §4.2.1: a REQUIRETLS message goes only over TLS to a server authenticated by DANE or PKIX, named by DNSSEC or MTA-STS, that advertises REQUIRETLS"
            }
            Rule::TlsRequiredNo => {
                "RFC 8689 §4.2.2: TLS-Required: No: the recipient domain's DANE and MTA-STS policies are ignored, TLS is opportunistic"
            }
        }
    }
}

/// The mechanism that decided what a connection to a host had to prove (PRODUCT.md: `send
/// --json` attempts carry it): DANE where the host has secure TLSA records (RFC 7672), else
/// MTA-STS where the recipient domain publishes a policy (RFC 8461 §2: DANE takes
/// precedence), else opportunistic TLS; or a policy level configured for the destination,
/// which overrides both (as Postfix's policy table does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// DANE (RFC 7672): secure TLSA records, or `dane-only` without them.
    Dane,
    /// MTA-STS (RFC 8461).
    MtaSts,
    /// Opportunistic TLS (RFC 7435): nothing published asks for more.
    #[default]
    Opportunistic,
    /// The destination's configured policy level (`[[policy]]`, `send --policy`).
    PolicyTable,
}

impl Mechanism {
    /// The name in JSON and logs: `dane`, `mta-sts`, `opportunistic`, `policy-table`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Dane => "dane",
            Mechanism::MtaSts => "mta-sts",
            Mechanism::Opportunistic => "opportunistic",
            Mechanism::PolicyTable => "policy-table",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.citation())
    }
}

/// The security of a connection, in the terms operators know from Postfix logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Security {
    /// Authenticated: DANE with a secure MX lookup, or PKIX with a name check.
    Verified,
    /// Authenticated by DANE, but the MX name itself was not secure (RFC 7672 §2.2.1).
    Trusted,
    /// Encrypted, peer not authenticated.
    Untrusted,
    /// No TLS.
    Plaintext,
    /// No connection was made (or none got as far as a session).
    None,
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::Verified => "Verified",
            Security::Trusted => "Trusted",
            Security::Untrusted => "Untrusted",
            Security::Plaintext => "Plaintext",
            Security::None => "No",
        })
    }
}

/// What became of a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Accepted by the next hop.
    Delivered,
    /// Try again later.
    Deferred,
    /// Returned to the sender.
    Bounced,
}

/// The MTA that sent a reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMta {
    /// Its host name (MX exchange, SRV target, configured host).
    #[serde(with = "text")]
    pub host: DnsName,
    /// The address connected to.
    pub address: IpAddr,
}

/// An SMTP reply (RFC 5321 §4.2), kept typed for the record: what a bounce (RFC 3464
/// `Diagnostic-Code`, `Status`, `Remote-MTA`) or a retry decision needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (RFC 3463), when the reply carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<EnhancedStatus>,
    /// The text lines, without codes.
    pub lines: Vec<String>,
    /// Who sent it; `None` for a reply we made ourselves (e.g. a size refusal, RFC 1870 §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta: Option<RemoteMta>,
}

impl ServerReply {
    /// `reply` as received from `mta`.
    pub fn new(reply: &Reply, mta: Option<RemoteMta>) -> Self {
        Self {
            code: reply.code(),
            enhanced: reply.enhanced(),
            lines: reply.lines().to_vec(),
            mta,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// `250 2.0.0 Ok`, as [`Reply`] shows it (all lines joined by a space).
impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// How a connection failed, typed: what a retry policy, metrics or a TLS report (RFC 8460
/// §4.3 result types) read instead of the attempt's reason text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// The TCP connection failed.
    Connect,
    /// No reply in time.
    Timeout {
        /// What we were waiting for.
        stage: Stage,
    },
    /// A reply that breaks RFC 5321 §4.2.
    Protocol {
        /// What we were waiting for.
        stage: Stage,
    },
    /// The server refused a step of the session (not a recipient).
    Refused {
        /// The step.
        stage: Stage,
        /// Its reply.
        reply: ServerReply,
    },
    /// TLS was required but STARTTLS not offered (RFC 8460 `starttls-not-supported`).
    StarttlsNotOffered,
    /// Plaintext injected after the STARTTLS reply.
    StarttlsInjection,
    /// The TLS handshake failed.
    TlsHandshake,
    /// The peer failed DANE or fingerprint authentication (RFC 8460 `validation-failure`).
    DaneAuthentication,
    /// Writing to the connection failed.
    Io,
    /// Our own input could not go into a command; nothing was sent.
    InvalidInput,
    /// Credentials were not sent (no TLS, no mechanism, or a peer not verified).
    CredentialsNotSent,
    /// The message is larger than the server's SIZE limit (RFC 1870 §6.1).
    TooBig,
    /// The addresses need SMTPUTF8, which the server does not offer (RFC 6531 §3.2).
    Smtputf8Unsupported,
    /// A streamed body turned out unsendable mid-DATA (RFC 5321 §4.5.3.1.6 line length, a
    /// NUL): cut short without its final dot.
    BodyInvalid,
    /// Reading a streamed body from its source failed mid-DATA: cut short without its dot.
    BodyRead,
    /// A reused connection an earlier error had left in an unknown state: nothing was sent.
    Unusable,
    /// The message carries REQUIRETLS and this connection may not carry it (RFC 8689
    /// §4.2.1): nothing of the transaction was sent.
    RequiretlsUnavailable,
}

impl Failure {
    /// The failure `e` on a connection to `mta`.
    pub fn of(e: &SessionError, mta: &RemoteMta) -> Self {
        match e {
            SessionError::Connect(_) => Failure::Connect,
            SessionError::Timeout(stage) => Failure::Timeout { stage: *stage },
            SessionError::Protocol { stage, .. } => Failure::Protocol { stage: *stage },
            SessionError::Refused { stage, reply } => Failure::Refused {
                stage: *stage,
                reply: ServerReply::new(reply, Some(mta.clone())),
            },
            SessionError::StartTlsNotOffered => Failure::StarttlsNotOffered,
            SessionError::StartTlsInjection => Failure::StarttlsInjection,
            SessionError::Tls(_) => Failure::TlsHandshake,
            SessionError::Dane(_) => Failure::DaneAuthentication,
            SessionError::Io(_) => Failure::Io,
            SessionError::InvalidInput(_) => Failure::InvalidInput,
            SessionError::AuthUnavailable(_) => Failure::CredentialsNotSent,
            SessionError::TooBig { .. } => Failure::TooBig,
            SessionError::SmtpUtf8Unsupported => Failure::Smtputf8Unsupported,
            SessionError::Body(_) => Failure::BodyInvalid,
            SessionError::Read(_) => Failure::BodyRead,
            SessionError::Unusable => Failure::Unusable,
            SessionError::RequireTls(_) => Failure::RequiretlsUnavailable,
        }
    }
}

/// What decided a recipient: a server's reply, or our own reason when there was none (a
/// deferral after every host failed, a route that bounced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The reply of a server (or one we made in its form).
    Smtp(ServerReply),
    /// Our reason, without a reply.
    Local(String),
}

impl Response {
    /// The reply, when a server gave one.
    pub fn smtp(&self) -> Option<&ServerReply> {
        match self {
            Response::Smtp(r) => Some(r),
            Response::Local(_) => None,
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Smtp(r) => r.fmt(f),
            Response::Local(text) => f.write_str(text),
        }
    }
}

/// One recipient's result. In JSON: `address`, `outcome`, `reply` (the text, PRODUCT.md) and,
/// when a server replied, `smtp` (the typed reply it is read back from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RecipientWire", from = "RecipientWire")]
pub struct RecipientOutcome {
    /// The address.
    pub address: String,
    /// Delivered, deferred or bounced.
    pub outcome: Fate,
    /// The SMTP reply, or our reason when there was none.
    pub reply: Response,
}

#[derive(Serialize, Deserialize)]
struct RecipientWire {
    address: String,
    outcome: Fate,
    reply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    smtp: Option<ServerReply>,
}

impl From<RecipientOutcome> for RecipientWire {
    fn from(r: RecipientOutcome) -> Self {
        Self {
            address: r.address,
            outcome: r.outcome,
            reply: r.reply.to_string(),
            smtp: r.reply.smtp().cloned(),
        }
    }
}

impl From<RecipientWire> for RecipientOutcome {
    fn from(w: RecipientWire) -> Self {
        Self {
            address: w.address,
            outcome: w.outcome,
            reply: w.smtp.map_or(Response::Local(w.reply), Response::Smtp),
        }
    }
}

/// A host's DANE state (RFC 7672 §2.2), as the attempt reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaneStatus {
    /// Secure TLSA records, at least one usable.
    Usable,
    /// Secure TLSA records, none usable.
    Unusable,
    /// No secure TLSA records.
    NotApplicable,
    /// A failed lookup made the host unusable.
    HostUnusable,
}

impl From<&DaneState> for DaneStatus {
    fn from(s: &DaneState) -> Self {
        match s {
            DaneState::Usable { .. } => DaneStatus::Usable,
            DaneState::Unusable => DaneStatus::Unusable,
            DaneState::NotApplicable { .. } => DaneStatus::NotApplicable,
            DaneState::HostUnusable { .. } => DaneStatus::HostUnusable,
        }
    }
}

/// The DANE side of an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaneReport {
    /// `usable`, `unusable`, `not-applicable` or `host-unusable`.
    pub state: DaneStatus,
    /// The TLSA records found.
    #[serde(with = "text_vec")]
    pub tlsa: Vec<Tlsa>,
    /// The record that authenticated the peer.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "text_opt")]
    pub matched: Option<Tlsa>,
    /// Its match depth (0 = the server's own certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
}

/// The DNSSEC status of each lookup behind an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupStatus {
    /// The MX (or SRV) lookup, if one was made.
    #[serde(with = "status_opt")]
    pub mx: Option<Status>,
    /// The host's A lookup.
    #[serde(with = "status")]
    pub a: Status,
    /// The host's AAAA lookup.
    #[serde(with = "status")]
    pub aaaa: Status,
    /// The TLSA lookup, if one was made.
    #[serde(with = "status_opt")]
    pub tlsa: Option<Status>,
}

/// One connection attempt (or a host skipped before connecting).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The host name (MX exchange, SRV target, configured host).
    #[serde(with = "text")]
    pub host: DnsName,
    /// The address tried; `None` when the host was skipped.
    pub address: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// The TLSA base domain, sent as SNI.
    #[serde(with = "text")]
    pub sni: DnsName,
    /// How the connection was secured.
    pub security: Security,
    /// Whether the message was accepted for at least one recipient on this attempt.
    pub delivered: bool,
    /// DANE details.
    pub dane: DaneReport,
    /// TLS details, when TLS was established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// DNSSEC status of the lookups.
    pub dnssec: LookupStatus,
    /// Why the attempt ended as it did.
    pub reason: String,
    /// How the connection failed, when it did (a transaction that ran has none: its replies
    /// decide the recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The rule behind that: in JSON `rule` (its citation) and `rule_id` (its id, from which
    /// it is read back).
    #[serde(flatten, with = "rule_keys")]
    pub rule: Rule,
    /// The mechanism that decided what the connection had to prove (attempts stored before
    /// it existed read back as `opportunistic`).
    #[serde(default)]
    pub mechanism: Mechanism,
    /// The server's replies, in order.
    pub replies: Vec<String>,
    /// Whether the message went over a connection an earlier message had used (no new
    /// connection, no new TLS handshake for this one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The sender's TLS request when it bore on this attempt (RFC 8689): `requiretls` for a
    /// message sent (or not sent) under REQUIRETLS, `tls-required-no` where the header field
    /// relaxed the recipient domain's DANE or MTA-STS policy for this host. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_request: Option<crate::requiretls::TlsRequest>,
}

impl Attempt {
    /// One line for the log, in the spirit of Postfix's
    /// `Verified TLS connection established to mx[192.0.2.1]:25: TLSv1.3 with cipher …`.
    pub fn log_line(&self) -> String {
        let peer = match self.address {
            Some(a) => format!("{}[{}]:{}", self.host, a, self.port),
            None => format!("{}:{}", self.host, self.port),
        };
        let mut line = match (&self.tls, self.security) {
            // "established" whether or not the session was resumed, as Postfix says it (log
            // readers count these lines); a resumed one says so after the cipher.
            (Some(tls), s) => format!(
                "{s} TLS connection established to {peer}: {} with cipher {}{}",
                tls.version,
                tls.cipher,
                if tls.resumed {
                    " (session resumed)"
                } else {
                    ""
                }
            ),
            (None, Security::Plaintext) => format!("Plaintext connection to {peer}"),
            (None, _) => format!("No connection to {peer}"),
        };
        if let (Some(m), Some(d)) = (&self.dane.matched, self.dane.depth) {
            line.push_str(&format!(" (matched TLSA {m} at depth {d})"));
        }
        match self.tls_request {
            Some(crate::requiretls::TlsRequest::Required) => line.push_str(" (REQUIRETLS)"),
            Some(crate::requiretls::TlsRequest::Optional) => line.push_str(" (TLS-Required: No)"),
            Some(crate::requiretls::TlsRequest::Default) | None => {}
        }
        line.push_str(&format!(": {} [{}]", self.reason, self.rule));
        line
    }
}

/// The recipients' fates summed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every recipient delivered.
    Delivered,
    /// Every recipient deferred.
    Deferred,
    /// Every recipient bounced.
    Bounced,
    /// A mix.
    Partial,
}

/// The outcome of one message to one next hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `delivered`, `deferred`, `bounced` or `partial`.
    pub outcome: Outcome,
    /// Per recipient.
    pub recipients: Vec<RecipientOutcome>,
    /// Per attempt, in order.
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    /// Sums up the recipients' fates.
    pub fn new(recipients: Vec<RecipientOutcome>, attempts: Vec<Attempt>) -> Self {
        let all = |f| recipients.iter().all(|r| r.outcome == f);
        let outcome = if all(Fate::Delivered) {
            Outcome::Delivered
        } else if all(Fate::Deferred) {
            Outcome::Deferred
        } else if all(Fate::Bounced) {
            Outcome::Bounced
        } else {
            Outcome::Partial
        };
        Self {
            outcome,
            recipients,
            attempts,
        }
    }
}

/// Values stored as their presentation text (DNS names, TLSA records), read back with
/// `FromStr`.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A list of [`text`] values.
mod text_vec {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// An optional [`text`] value.
mod text_opt {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A DNSSEC [`Status`] by its kebab-case name (as `dns` serializes it).
mod status {
    use dns::Status;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Status, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn parse<E: serde::de::Error>(text: &str) -> Result<Status, E> {
        Ok(match text {
            "secure" => Status::Secure,
            "insecure" => Status::Insecure,
            "bogus" => Status::Bogus,
            "indeterminate" => Status::Indeterminate,
            other => {
                return Err(E::unknown_variant(
                    other,
                    &["secure", "insecure", "bogus", "indeterminate"],
                ));
            }
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        parse(&String::deserialize(d)?)
    }
}

/// An optional [`status`].
mod status_opt {
    use dns::Status;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Status>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Status>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::status::parse(&t))
            .transpose()
    }
}

/// An attempt's rule as two keys: `rule`, the citation PRODUCT.md's `reason … with the RFC
/// rule` shows, and `rule_id`, the stable id it is read back from.
mod rule_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Rule;

    #[derive(Serialize)]
    struct Out {
        rule: &'static str,
        rule_id: Rule,
    }

    #[derive(Deserialize)]
    struct In {
        rule_id: Rule,
    }

    pub fn serialize<S: Serializer>(rule: &Rule, s: S) -> Result<S::Ok, S::Error> {
        Out {
            rule: rule.citation(),
            rule_id: *rule,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        In::deserialize(d).map(|i| i.rule_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    const EE: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";

    fn attempt(rule: Rule) -> Attempt {
        Attempt {
            host: n("mx.example.test"),
            address: Some("192.0.2.1".parse().unwrap()),
            port: 25,
            sni: n("mx.example.test"),
            security: Security::Verified,
            delivered: true,
            dane: DaneReport {
                state: DaneStatus::Usable,
                tlsa: vec![EE.parse().unwrap()],
                matched: Some(EE.parse().unwrap()),
                depth: Some(0),
            },
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                resumed: false,
            }),
            dnssec: LookupStatus {
                mx: Some(Status::Secure),
                a: Status::Secure,
                aaaa: Status::Insecure,
                tlsa: None,
            },
            reason: "message accepted: 250 2.0.0 Ok".into(),
            failure: None,
            rule,
            replies: vec!["220 mx".into(), "250 2.0.0 Ok".into()],
            reused: false,
            tls_request: None,
            mechanism: Mechanism::Opportunistic,
        }
    }

    fn delivery() -> Delivery {
        let reply = Reply::new(250, vec!["2.0.0 Ok".into()]);
        let mta = RemoteMta {
            host: n("mx.example.test"),
            address: "192.0.2.1".parse().unwrap(),
        };
        Delivery::new(
            vec![
                RecipientOutcome {
                    address: "b@example.test".into(),
                    outcome: Fate::Delivered,
                    reply: Response::Smtp(ServerReply::new(&reply, Some(mta))),
                },
                RecipientOutcome {
                    address: "c@example.test".into(),
                    outcome: Fate::Deferred,
                    reply: Response::Local("no usable host".into()),
                },
            ],
            Rule::ALL.into_iter().map(attempt).collect(),
        )
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let d = delivery();
        let json = serde_json::to_string(&d).unwrap();
        let back: Delivery = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        // A skipped host: no address, TLS or match.
        let mut skipped = attempt(Rule::HostUnusable);
        skipped.address = None;
        skipped.tls = None;
        skipped.dane.matched = None;
        skipped.dane.depth = None;
        skipped.dnssec.mx = None;
        let json = serde_json::to_string(&skipped).unwrap();
        assert_eq!(serde_json::from_str::<Attempt>(&json).unwrap(), skipped);
        // Failed attempts, each kind.
        let mta = RemoteMta {
            host: n("mx.example.test"),
            address: "192.0.2.1".parse().unwrap(),
        };
        for e in [
            SessionError::Connect("refused".into()),
            SessionError::Timeout(Stage::Greeting),
            SessionError::Protocol {
                stage: Stage::Ehlo,
                error: crate::reply::ReplyError::Closed,
            },
            SessionError::Refused {
                stage: Stage::Mail,
                reply: Reply::new(451, vec!["4.3.0 later".into()]),
            },
            SessionError::StartTlsNotOffered,
            SessionError::StartTlsInjection,
            SessionError::Tls("alert".into()),
            SessionError::Dane(dane::VerifyError::EmptyChain),
            SessionError::Io("reset".into()),
            SessionError::AuthUnavailable(crate::session::AuthUnavailable::NoTls),
            SessionError::TooBig { size: 2, limit: 1 },
            SessionError::SmtpUtf8Unsupported,
        ] {
            let mut failed = attempt(Rule::NextMx);
            failed.delivered = false;
            failed.reason = e.to_string();
            failed.failure = Some(Failure::of(&e, &mta));
            let json = serde_json::to_string(&failed).unwrap();
            assert_eq!(
                serde_json::from_str::<Attempt>(&json).unwrap(),
                failed,
                "{json}"
            );
        }
        let refused = Failure::of(
            &SessionError::Refused {
                stage: Stage::Mail,
                reply: Reply::new(451, vec!["4.3.0 later".into()]),
            },
            &mta,
        );
        assert_eq!(
            serde_json::to_value(&refused).unwrap()["stage"],
            serde_json::json!("mail")
        );
        assert_eq!(serde_json::to_value(&refused).unwrap()["kind"], "refused");
    }

    #[test]
    fn json_keeps_the_send_contract() {
        let v = serde_json::to_value(delivery()).unwrap();
        assert_eq!(v["outcome"], "partial");
        let r = &v["recipients"][0];
        assert_eq!(
            (&r["address"], &r["outcome"]),
            (&"b@example.test".into(), &"delivered".into())
        );
        assert_eq!(r["reply"], "250 2.0.0 Ok");
        assert_eq!(r["smtp"]["code"], 250);
        assert_eq!(
            r["smtp"]["enhanced"],
            serde_json::json!({"class": 2, "subject": 0, "detail": 0})
        );
        assert_eq!(r["smtp"]["mta"]["address"], "192.0.2.1");
        assert_eq!(v["recipients"][1]["reply"], "no usable host");
        assert!(v["recipients"][1].get("smtp").is_none());
        let a = &v["attempts"][0];
        assert_eq!(a["host"], "mx.example.test");
        assert_eq!(a["security"], "verified");
        assert_eq!(a["dane"]["state"], "usable");
        assert_eq!(a["dane"]["tlsa"][0], EE);
        assert_eq!(a["dane"]["matched"], EE);
        assert_eq!(a["tls"]["version"], "TLSv1.3");
        assert_eq!(a["dnssec"]["aaaa"], "insecure");
        assert_eq!(a["rule"], Rule::DaneMandatory.citation());
        assert_eq!(a["rule_id"], "dane-mandatory");
    }

    #[test]
    fn rules_have_distinct_ids_and_citations() {
        let ids: std::collections::HashSet<_> = Rule::ALL
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let citations: std::collections::HashSet<_> =
            Rule::ALL.iter().map(|r| r.citation()).collect();
        assert_eq!(
            (ids.len(), citations.len()),
            (Rule::ALL.len(), Rule::ALL.len())
        );
        assert_eq!(
            serde_json::to_value(Rule::DaneUnusableRecords).unwrap(),
            "dane-unusable-records"
        );
        assert!(Rule::DaneMandatory.citation().contains("rule 5"));
    }

    #[test]
    fn the_summary_of_fates() {
        let r = |outcome| RecipientOutcome {
            address: "x@y".into(),
            outcome,
            reply: Response::Local(String::new()),
        };
        let d =
            |fates: &[Fate]| Delivery::new(fates.iter().map(|f| r(*f)).collect(), vec![]).outcome;
        assert_eq!(d(&[Fate::Delivered, Fate::Delivered]), Outcome::Delivered);
        assert_eq!(d(&[Fate::Delivered, Fate::Deferred]), Outcome::Partial);
        assert_eq!(d(&[Fate::Deferred, Fate::Bounced]), Outcome::Partial);
        assert_eq!(d(&[Fate::Bounced]), Outcome::Bounced);
        assert_eq!(d(&[Fate::Deferred]), Outcome::Deferred);
    }
}
