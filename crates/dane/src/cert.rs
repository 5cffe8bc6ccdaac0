//! The few facts about a certificate that DANE needs, read once with `x509-parser`.
//!
//! Selector SPKI(1) must hash the SubjectPublicKeyInfo exactly as it appears in the
//! certificate (RFC 6698 §2.1.2), so we keep raw slices of the DER rather than re-encoding.

use std::ops::Range;

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A parsed certificate: the DER and the byte ranges and names DANE looks at.
#[derive(Clone, Debug)]
pub struct CertInfo {
    der: Vec<u8>,
    spki: Range<usize>,
    subject: Range<usize>,
    issuer: Range<usize>,
    subject_text: String,
    dns_names: Vec<String>,
    common_names: Vec<String>,
    not_before: u64,
    not_after: u64,
    is_ca: bool,
}

/// A certificate that `x509-parser` cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("certificate does not parse as X.509 DER: {0}")]
pub struct CertParseError(pub String);

/// Where `inner`, a slice the parser returned, lies within `outer`; an error if it does not
/// (the accessors below index `der` with these ranges, so they must hold).
fn range_of(outer: &[u8], inner: &[u8]) -> Result<Range<usize>, CertParseError> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize);
    start
        .map(|start| start..start + inner.len())
        .filter(|r| r.end <= outer.len())
        .ok_or_else(|| CertParseError("parser returned a field outside the certificate".into()))
}

impl CertInfo {
    /// Parses one DER certificate. Trailing data after the certificate is an error.
    pub fn parse(der: &[u8]) -> Result<Self, CertParseError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertParseError(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertParseError(format!(
                "{} bytes of trailing data",
                rest.len()
            )));
        }
        let tbs = &cert.tbs_certificate;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = tbs.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_string());
                }
            }
        }
        let common_names = tbs
            .subject
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        let time = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
        Ok(Self {
            spki: range_of(der, tbs.subject_pki.raw)?,
            subject: range_of(der, tbs.subject.as_raw())?,
            issuer: range_of(der, tbs.issuer.as_raw())?,
            subject_text: tbs.subject.to_string(),
            dns_names,
            common_names,
            not_before: time(tbs.validity.not_before),
            not_after: time(tbs.validity.not_after),
            is_ca: matches!(tbs.basic_constraints(), Ok(Some(bc)) if bc.value.ca),
            der: der.to_vec(),
        })
    }

    /// The whole certificate, DER (what selector Cert(0) selects).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SubjectPublicKeyInfo, DER, as it appears in the certificate (selector SPKI(1)).
    pub fn spki(&self) -> &[u8] {
        &self.der[self.spki.clone()]
    }

    /// The subject Name, DER.
    pub fn subject_der(&self) -> &[u8] {
        &self.der[self.subject.clone()]
    }

    /// The issuer Name, DER.
    pub fn issuer_der(&self) -> &[u8] {
        &self.der[self.issuer.clone()]
    }

    /// The subject in RFC 4514 text, for messages.
    pub fn subject(&self) -> &str {
        &self.subject_text
    }

    /// dNSName entries of the subjectAltName extension.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// Common names of the subject.
    pub fn common_names(&self) -> &[String] {
        &self.common_names
    }

    /// notAfter, seconds since the epoch.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// Whether `now` lies inside notBefore..=notAfter (RFC 5280 §4.1.2.5).
    pub fn valid_at(&self, now: UnixTime) -> bool {
        (self.not_before..=self.not_after).contains(&now.as_secs())
    }

    /// Whether basicConstraints marks this as a CA certificate.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// notBefore, seconds since the epoch.
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// The DER as a rustls type.
    pub fn as_certificate_der(&self) -> CertificateDer<'_> {
        CertificateDer::from(self.der.as_slice())
    }
}

/// The contents of a DER SEQUENCE (tag 0x30), without its header; webpki's `TrustAnchor`
/// holds the subject and SPKI in this form. `None` when `der` is not exactly one SEQUENCE.
pub(crate) fn sequence_contents(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(n)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    (rest.len() == len).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_contents_reads_short_and_long_lengths() {
        assert_eq!(sequence_contents(&[0x30, 2, 1, 2]), Some(&[1u8, 2][..]));
        let mut long = vec![0x30, 0x81, 200];
        long.extend([7u8; 200]);
        assert_eq!(sequence_contents(&long).map(<[u8]>::len), Some(200));
        assert_eq!(sequence_contents(&[0x31, 0]), None);
        assert_eq!(sequence_contents(&[0x30, 3, 1]), None);
        assert_eq!(sequence_contents(&[0x30, 0x85, 0, 0, 0, 0, 0]), None);
        assert_eq!(sequence_contents(&[]), None);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(CertInfo::parse(b"not a certificate").is_err());
        assert!(CertInfo::parse(&[]).is_err());
    }
}
