//! Why a chain is not authenticated: [`VerifyError`] and [`PathProblem`], each carrying the
//! evidence an operator needs to fix the records or the server.

use std::fmt;

use serde::Serialize;

use super::explain::{list, usage_name};
use crate::cert::CertParseError;
use crate::name::ReferenceName;
use crate::record::Tlsa;

/// Why a certification path did not verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathProblem {
    /// No issuer for some certificate among the chain and the anchors.
    UnknownIssuer,
    /// A signature does not verify with its issuer's key.
    BadSignature,
    /// A signature algorithm or key type that is not supported (or too weak).
    UnsupportedAlgorithm,
    /// A certificate's extended key usage excludes TLS server authentication.
    NotForServerAuth,
    /// A CA certificate used as the leaf, or a leaf used as a CA.
    WrongCertificateRole,
    /// The path verified, but to a trust anchor that is none of those the records named (a
    /// contract webpki keeps; reported rather than trusted if it ever did not).
    UnidentifiedAnchor,
    /// Anything else webpki rejected.
    Other(String),
}

impl PathProblem {
    pub(super) fn from_webpki(e: &webpki::Error) -> Self {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::InvalidSignatureForPublicKey => Self::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Self::UnsupportedAlgorithm,
            E::RequiredEkuNotFoundContext(_) => Self::NotForServerAuth,
            E::CaUsedAsEndEntity | E::EndEntityUsedAsCa => Self::WrongCertificateRole,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer => {
                f.write_str("a certificate's issuer is neither in the chain nor the trust anchor")
            }
            Self::BadSignature => f.write_str("a certificate signature does not verify"),
            Self::UnsupportedAlgorithm => {
                f.write_str("unsupported or too weak signature algorithm or key")
            }
            Self::NotForServerAuth => {
                f.write_str("extended key usage does not allow TLS server authentication")
            }
            Self::WrongCertificateRole => {
                f.write_str("a CA certificate is used as leaf, or a leaf as CA")
            }
            Self::UnidentifiedAnchor => {
                f.write_str("the chain verified to a trust anchor that no record names")
            }
            Self::Other(s) => write!(f, "certificate rejected: {s}"),
        }
    }
}

/// Why a chain is not authenticated. Each variant carries the evidence an operator needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum VerifyError {
    /// The server sent no certificate.
    #[error("the server presented no certificate")]
    EmptyChain,
    /// No record of the RRset is usable in this profile (RFC 7672 §3.1.3, RFC 7671 §4). For
    /// SMTP this means TLS is still mandatory, but unauthenticated.
    #[error(
        "none of the {published} TLSA records is usable (only DANE-TA(2) and DANE-EE(3) with known selector and matching type are, RFC 7672 §3.1.3)"
    )]
    NoUsableRecords {
        /// How many records were published.
        published: usize,
    },
    /// The leaf certificate cannot be parsed.
    #[error("the certificate at depth {depth} cannot be parsed: {reason}")]
    BadCertificate {
        /// Its depth.
        depth: usize,
        /// The parser's message.
        reason: String,
    },
    /// No usable record matches any certificate or key of the chain.
    #[error(
        "no usable TLSA record matches the presented chain ({} certificates: {}); records tried: {}",
        chain.len(), chain.join(" <- "), list(records)
    )]
    NoMatch {
        /// The usable records.
        records: Vec<Tlsa>,
        /// Subjects of the presented certificates, leaf first.
        chain: Vec<String>,
    },
    /// A trust-anchor record matched, but the chain does not verify up to it.
    #[error(
        "{} record {record}{} matched, but the chain does not verify up to it: {problem}{}",
        usage_name(record.usage()),
        depth.map(|d| format!(" (depth {d})")).unwrap_or_default(),
        broken_at.map(|d| format!(" (at the certificate at depth {d})")).unwrap_or_default()
    )]
    ChainInvalid {
        /// The record.
        record: Tlsa,
        /// The depth of the certificate it matched, when known.
        depth: Option<usize>,
        /// The certificate where the path breaks, when it could be located.
        broken_at: Option<usize>,
        /// What is wrong.
        problem: PathProblem,
    },
    /// A certificate below the trust anchor is expired (RFC 7671 §5.2.1: DANE-TA checks
    /// validity; DANE-EE does not).
    #[error(
        "the certificate at depth {depth} ({subject}) expired at {not_after}, verification time {now}"
    )]
    Expired {
        /// Its depth.
        depth: usize,
        /// Its subject.
        subject: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
        /// The verification time, RFC 3339.
        now: String,
    },
    /// A certificate below the trust anchor is not yet valid.
    #[error(
        "the certificate at depth {depth} ({subject}) is not valid before {not_before}, verification time {now}"
    )]
    NotYetValid {
        /// Its depth.
        depth: usize,
        /// Its subject.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// The verification time, RFC 3339.
        now: String,
    },
    /// A record matched and the chain verified, but the leaf is not valid for any reference
    /// name (RFC 7672 §3.2.3).
    #[error(
        "{} record {record} matched at depth {depth}, but the certificate names [{}] match none of the reference names [{}]",
        usage_name(record.usage()), presented.join(", "), list(reference_names)
    )]
    NameMismatch {
        /// The record.
        record: Tlsa,
        /// Its match depth.
        depth: usize,
        /// The names tried.
        reference_names: Vec<ReferenceName>,
        /// The names the leaf presents (DNS SANs, or CNs when there are none).
        presented: Vec<String>,
    },
}

impl VerifyError {
    /// How close to success this failure came; the closest one is reported.
    pub(super) fn closeness(&self) -> u8 {
        match self {
            Self::EmptyChain | Self::NoUsableRecords { .. } | Self::BadCertificate { .. } => 0,
            Self::NoMatch { .. } => 1,
            Self::ChainInvalid { .. } => 2,
            Self::Expired { .. } | Self::NotYetValid { .. } => 3,
            Self::NameMismatch { .. } => 4,
        }
    }
}

/// The leaf does not parse: reported at depth 0.
pub(super) fn bad_leaf(e: &CertParseError) -> VerifyError {
    VerifyError::BadCertificate {
        depth: 0,
        reason: e.0.clone(),
    }
}
