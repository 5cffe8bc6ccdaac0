//! The outcome of a delivery: per recipient, and per attempt with its evidence and the rule
//! that decided it. Logs, `danemta send --json` and later reports are views of these values.

use std::fmt;
use std::net::IpAddr;

use dane::Tlsa;
use dns::{DnsName, Status};
use serde::Serialize;

use crate::session::TlsInfo;

/// The security of a connection, in the terms operators know from Postfix logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Accepted by the next hop.
    Delivered,
    /// Try again later.
    Deferred,
    /// Returned to the sender.
    Bounced,
}

/// One recipient's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecipientOutcome {
    /// The address.
    pub address: String,
    /// Delivered, deferred or bounced.
    pub outcome: Fate,
    /// The SMTP reply, or our reason when there was none.
    pub reply: String,
}

/// The DANE side of an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaneReport {
    /// `usable`, `unusable`, `not-applicable` or `host-unusable`.
    pub state: &'static str,
    /// The TLSA records found.
    pub tlsa: Vec<Tlsa>,
    /// The record that authenticated the peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<Tlsa>,
    /// Its match depth (0 = the server's own certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
}

/// The DNSSEC status of each lookup behind an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LookupStatus {
    /// The MX (or SRV) lookup, if one was made.
    pub mx: Option<Status>,
    /// The host's A lookup.
    pub a: Status,
    /// The host's AAAA lookup.
    pub aaaa: Status,
    /// The TLSA lookup, if one was made.
    pub tlsa: Option<Status>,
}

/// One connection attempt (or a host skipped before connecting).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The host name (MX exchange, SRV target, configured host).
    pub host: DnsName,
    /// The address tried; `None` when the host was skipped.
    pub address: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// The TLSA base domain, sent as SNI.
    pub sni: DnsName,
    /// How the connection was secured.
    pub security: Security,
    /// Whether the message was accepted for at least one recipient on this attempt.
    pub delivered: bool,
    /// DANE details.
    pub dane: DaneReport,
    /// TLS details, when TLS was established.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// DNSSEC status of the lookups.
    pub dnssec: LookupStatus,
    /// Why the attempt ended as it did.
    pub reason: String,
    /// The rule (RFC section) behind that.
    pub rule: &'static str,
    /// The server's replies, in order.
    pub replies: Vec<String>,
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
            (Some(tls), s) => format!(
                "{s} TLS connection established to {peer}: {} with cipher {}",
                tls.version, tls.cipher
            ),
            (None, Security::Plaintext) => format!("Plaintext connection to {peer}"),
            (None, _) => format!("No connection to {peer}"),
        };
        if let (Some(m), Some(d)) = (&self.dane.matched, self.dane.depth) {
            line.push_str(&format!(" (matched TLSA {m} at depth {d})"));
        }
        line.push_str(&format!(": {} [{}]", self.reason, self.rule));
        line
    }
}

/// The outcome of one message to one next hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// `delivered`, `deferred`, `bounced` or `partial`.
    pub outcome: &'static str,
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
            "delivered"
        } else if all(Fate::Deferred) {
            "deferred"
        } else if all(Fate::Bounced) {
            "bounced"
        } else {
            "partial"
        };
        Self {
            outcome,
            recipients,
            attempts,
        }
    }

    /// sysexits status for `danemta send`: 0 all delivered, 69 (EX_UNAVAILABLE) when any
    /// recipient bounced, 75 (EX_TEMPFAIL) when any was deferred and none bounced.
    pub fn exit_code(&self) -> u8 {
        if self.recipients.iter().any(|r| r.outcome == Fate::Bounced) {
            69
        } else if self.recipients.iter().any(|r| r.outcome == Fate::Deferred) {
            75
        } else {
            0
        }
    }
}
