//! Explaining a verdict: which failure is reported, where a path breaks, which certificate
//! is out of its validity period, and the text forms used in messages.

use std::fmt;

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};

use super::{Authenticator, VerifyError};
use crate::cert::{CertInfo, sequence_contents};
use crate::record::Usage;

/// Items joined by ", ", for messages.
pub(super) fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The RFC 7218 acronym of a certificate usage (RFC 6698 §2.1.1), e.g. `DANE-EE(3)`.
pub fn usage_name(u: Usage) -> String {
    match u {
        Usage::PkixTa => "PKIX-TA(0)".into(),
        Usage::PkixEe => "PKIX-EE(1)".into(),
        Usage::DaneTa => "DANE-TA(2)".into(),
        Usage::DaneEe => "DANE-EE(3)".into(),
        Usage::Unassigned(n) => format!("usage {n}"),
    }
}

/// Seconds since the Unix epoch as an RFC 3339 timestamp in UTC, e.g.
/// `2027-02-20T00:00:00Z`, as certificate validity dates are shown in messages and JSON.
/// A time that cannot be represented is shown as `@SECONDS`.
///
/// ```
/// assert_eq!(dane::rfc3339(0), "1970-01-01T00:00:00Z");
/// assert_eq!(dane::rfc3339(1_803_513_600), "2027-02-25T00:00:00Z");
/// assert_eq!(dane::rfc3339(u64::MAX), format!("@{}", u64::MAX));
/// ```
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

impl Authenticator {
    /// The failure to report when nothing verified: the one that came closest to success
    /// (a name mismatch after a verified path beats a broken path, which beats no match at
    /// all), the earlier one on a tie; without any, "no usable record matches" with the chain.
    pub(super) fn closest(
        &self,
        failures: Vec<VerifyError>,
        chain: &[CertificateDer<'_>],
    ) -> VerifyError {
        failures
            .into_iter()
            .rev()
            .max_by_key(VerifyError::closeness)
            .unwrap_or_else(|| VerifyError::NoMatch {
                records: self.records.clone(),
                chain: chain
                    .iter()
                    .map(|c| match CertInfo::parse(c) {
                        Ok(info) => info.subject().to_owned(),
                        Err(_) => "(unparsable)".to_owned(),
                    })
                    .collect(),
            })
    }
}

/// The first certificate, leaf upwards, that is outside its validity period at `now`
/// (RFC 5280 §4.1.2.5); DANE-TA and PKIX check validity, DANE-EE does not.
pub(super) fn validity_error(
    leaf: &CertInfo,
    issuers: &[Option<CertInfo>],
    now: UnixTime,
) -> VerifyError {
    let certs = std::iter::once(Some(leaf)).chain(issuers.iter().map(Option::as_ref));
    for (depth, cert) in certs.enumerate() {
        let Some(cert) = cert else { continue };
        if cert.valid_at(now) {
            continue;
        }
        let subject = cert.subject().to_owned();
        let now_text = rfc3339(now.as_secs());
        return if now.as_secs() < cert.not_before() {
            VerifyError::NotYetValid {
                depth,
                subject,
                not_before: rfc3339(cert.not_before()),
                now: now_text,
            }
        } else {
            VerifyError::Expired {
                depth,
                subject,
                not_after: rfc3339(cert.not_after()),
                now: now_text,
            }
        };
    }
    VerifyError::Expired {
        depth: 0,
        subject: leaf.subject().to_owned(),
        not_after: rfc3339(leaf.not_after()),
        now: rfc3339(now.as_secs()),
    }
}

/// Follows issuer names from the leaf through the presented chain and returns the depth of
/// the last certificate reached: the one whose issuer is missing, or whose issuer is an
/// anchor that did not verify it. Only used to explain a failure.
pub(super) fn locate_break(
    leaf: &CertInfo,
    issuers: &[Option<CertInfo>],
    anchors: &[TrustAnchor<'_>],
) -> Option<usize> {
    let certs: Vec<Option<&CertInfo>> = std::iter::once(Some(leaf))
        .chain(issuers.iter().map(Option::as_ref))
        .collect();
    let mut seen = vec![false; certs.len()];
    let mut at = 0;
    loop {
        if let Some(seen) = seen.get_mut(at) {
            *seen = true;
        }
        let issuer = (*certs.get(at)?)?.issuer_der();
        let issuer_contents = sequence_contents(issuer);
        if anchors
            .iter()
            .any(|a| Some(a.subject.as_ref()) == issuer_contents)
        {
            return Some(at);
        }
        let next = certs
            .iter()
            .zip(&seen)
            .position(|(c, seen)| !seen && c.is_some_and(|c| c.subject_der() == issuer));
        match next {
            Some(j) => at = j,
            None => return Some(at),
        }
    }
}
