//! Authenticating a presented certificate chain with a TLSA RRset (RFC 6698 §2.1.1,
//! RFC 7671 §5, RFC 7672 §3).
//!
//! The order of trial follows the strength of the binding: DANE-EE(3), then DANE-TA(2), then
//! (general profile only) PKIX-EE(1) and PKIX-TA(0). The first success wins; when nothing
//! succeeds, the failure that came closest to success is reported.
//!
//! One module per part: `dane_ee` (RFC 7671 §5.1, RFC 7672 §3.1.1), `dane_ta` (RFC 7671
//! §5.2, RFC 7672 §3.1.2), `pkix` (RFC 6698 §2.1.1, RFC 7671 §5.3–5.4; general profile only),
//! `error` ([`VerifyError`], [`PathProblem`]) and `explain` (what a failure reports: the
//! closest failure, where a path breaks, which certificate is out of date, and the text
//! helpers [`usage_name`] and [`rfc3339`]).

mod dane_ee;
mod dane_ta;
mod error;
mod explain;
mod pkix;
#[cfg(test)]
mod tests;

use std::fmt;

use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::Serialize;

use crate::cert::CertInfo;
use crate::matching::Profile;
use crate::name::{ReferenceName, find_match, presented_names};
use crate::record::{Matching, Selector, Tlsa, Usage};

use error::bad_leaf;
pub use error::{PathProblem, VerifyError};
pub use explain::{rfc3339, usage_name};

/// Where the certificate or key that a matching record names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnchorSource {
    /// The server's own certificate (DANE-EE or PKIX-EE).
    Leaf,
    /// A CA certificate the server sent.
    Chain,
    /// A certificate or bare public key carried whole in the TLSA record (`2 0 0`, `2 1 0`).
    Dns,
    /// A root of the caller's PKIX trust store (general profile, PKIX-TA).
    TrustStore,
}

/// Proof that a chain was authenticated by a TLSA record. Only [`Authenticator::verify`]
/// constructs it (it has no public constructor and is not deserializable); in a handshake,
/// [`DaneServerVerifier::verified`](crate::DaneServerVerifier::verified) hands it out only
/// once the server has also proved it holds the leaf's private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    record: Tlsa,
    depth: usize,
    anchor: AnchorSource,
    name: Option<ReferenceName>,
}

impl Verified {
    /// The TLSA record that matched.
    pub fn record(&self) -> &Tlsa {
        &self.record
    }

    /// The match depth in the verified chain, leaf = 0 (OpenSSL's `SSL_get0_dane_authority`).
    /// For a bare public key from DNS it is the depth of the certificate that key signed.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Where the matched certificate or key came from.
    pub fn anchor(&self) -> AnchorSource {
        self.anchor
    }

    /// The reference name the leaf was found valid for; `None` for DANE-EE, which checks no
    /// names (RFC 7672 §3.1.1).
    pub fn name(&self) -> Option<&ReferenceName> {
        self.name.as_ref()
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "matched {} {} at depth {}",
            usage_name(self.record.usage()),
            self.record,
            self.depth
        )?;
        if let Some(name) = &self.name {
            write!(f, ", certificate valid for {name}")?;
        }
        Ok(())
    }
}

/// Decides whether certificate chains are authenticated by one TLSA RRset for one set of
/// reference names: the DANE state of one connection.
#[derive(Clone, Debug)]
pub struct Authenticator {
    published: usize,
    records: Vec<Tlsa>,
    /// Certificates carried whole in `x 0 0` records, parsed once, with their anchor form.
    dns_certs: Vec<(Tlsa, CertInfo, Option<TrustAnchor<'static>>)>,
    names: Vec<ReferenceName>,
    profile: Profile,
    pkix_roots: Vec<(CertInfo, TrustAnchor<'static>)>,
    ee_name_checks: bool,
    algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
}

impl Authenticator {
    /// An authenticator under the SMTP profile of RFC 7672: DANE-TA and DANE-EE only, digest
    /// agility applied, no name or validity checks for DANE-EE.
    pub fn smtp(rrset: &[Tlsa], names: Vec<ReferenceName>) -> Self {
        Self::build(rrset, names, Profile::Smtp, Vec::new())
    }

    /// An authenticator under the general RFC 6698 profile: PKIX-TA and PKIX-EE records are
    /// honoured too, validated against `pkix_roots`. Roots that do not parse are skipped.
    pub fn general(
        rrset: &[Tlsa],
        names: Vec<ReferenceName>,
        pkix_roots: &[CertificateDer<'_>],
    ) -> Self {
        let roots = pkix_roots
            .iter()
            .filter_map(|c| {
                let info = CertInfo::parse(c).ok()?;
                let anchor = cert_anchor(&info)?;
                Some((info, anchor))
            })
            .collect();
        Self::build(rrset, names, Profile::General, roots)
    }

    fn build(
        rrset: &[Tlsa],
        names: Vec<ReferenceName>,
        profile: Profile,
        pkix_roots: Vec<(CertInfo, TrustAnchor<'static>)>,
    ) -> Self {
        let records = profile.usable_records(rrset);
        let dns_certs = records
            .iter()
            .filter(|r| r.selector() == Selector::FullCert && r.matching() == Matching::Full)
            .filter_map(|r| {
                let info = CertInfo::parse(r.data()).ok()?;
                let anchor = cert_anchor(&info);
                Some((r.clone(), info, anchor))
            })
            .collect();
        Self {
            published: rrset.len(),
            records,
            dns_certs,
            names,
            profile,
            pkix_roots,
            ee_name_checks: false,
            algorithms: rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
        }
    }

    /// Also require a name match for DANE-EE (OpenSSL's default; RFC 7672 §3.1.1 says SMTP
    /// clients must not). Used by the OpenSSL conformance data.
    pub fn with_ee_name_checks(mut self, on: bool) -> Self {
        self.ee_name_checks = on;
        self
    }

    /// Use these signature algorithms for chain verification instead of ring's defaults,
    /// e.g. those of the rustls `CryptoProvider` in use.
    pub fn with_algorithms(
        mut self,
        algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
    ) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// The records in use after the usability rules and digest agility.
    pub fn records(&self) -> &[Tlsa] {
        &self.records
    }

    /// The reference names.
    pub fn names(&self) -> &[ReferenceName] {
        &self.names
    }

    /// Whether any record is usable; when not, SMTP still requires TLS but cannot
    /// authenticate the peer (RFC 7672 §2.2, "TLSA records present but none usable").
    pub fn has_usable_records(&self) -> bool {
        !self.records.is_empty()
    }

    /// Authenticates `chain` (leaf first, as the server sent it) at time `now`: DANE-EE(3),
    /// then DANE-TA(2), then (general profile) PKIX-EE(1) and PKIX-TA(0), as RFC 6698 §2.1.1
    /// defines them and RFC 7671 §5 refines them; under the SMTP profile only the first two,
    /// RFC 7672 §3.1. The first success wins; otherwise the failure that came closest to
    /// success is returned.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Verified, VerifyError> {
        let Some((leaf_der, intermediates)) = chain.split_first() else {
            return Err(VerifyError::EmptyChain);
        };
        if self.records.is_empty() {
            return Err(VerifyError::NoUsableRecords {
                published: self.published,
            });
        }
        let leaf = CertInfo::parse(leaf_der);
        let mut failures = Vec::new();

        // DANE-EE(3) first: the strongest binding.
        if let Some(v) = self.dane_ee(leaf_der, &leaf, &mut failures) {
            return Ok(v);
        }

        let leaf = match leaf {
            Ok(leaf) => leaf,
            Err(e) => {
                failures.push(bad_leaf(&e));
                return Err(self.closest(failures, chain));
            }
        };
        let issuers: Vec<Option<CertInfo>> = intermediates
            .iter()
            .map(|c| CertInfo::parse(c).ok())
            .collect();

        // Then DANE-TA(2), and in the general profile PKIX-EE(1) and PKIX-TA(0).
        match self.dane_ta(leaf_der, intermediates, &leaf, &issuers, now) {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) => failures.push(e),
            None => {}
        }
        if self.profile == Profile::General {
            match self.pkix(leaf_der, intermediates, &leaf, &issuers, now) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => failures.push(e),
                None => {}
            }
        }
        Err(self.closest(failures, chain))
    }

    /// The records in use with one certificate usage.
    fn with_usage(&self, usage: Usage) -> impl Iterator<Item = &Tlsa> {
        self.records.iter().filter(move |r| r.usage() == usage)
    }

    /// The proof for a success: the only place a [`Verified`] is made.
    fn verified(
        &self,
        record: &Tlsa,
        depth: usize,
        anchor: AnchorSource,
        name: Option<ReferenceName>,
    ) -> Verified {
        Verified {
            record: record.clone(),
            depth,
            anchor,
            name,
        }
    }

    /// The host-name check of RFC 7672 §3.2.3 (and RFC 6125 §6.4).
    fn name_check(
        &self,
        record: &Tlsa,
        depth: usize,
        leaf: &CertInfo,
    ) -> Result<ReferenceName, VerifyError> {
        find_match(leaf, &self.names)
            .cloned()
            .ok_or_else(|| VerifyError::NameMismatch {
                record: record.clone(),
                depth,
                reference_names: self.names.clone(),
                presented: presented_names(leaf).to_vec(),
            })
    }
}

/// A certificate in the form webpki takes a trust anchor in; `None` if webpki cannot read it.
fn cert_anchor(cert: &CertInfo) -> Option<TrustAnchor<'static>> {
    let der: &[u8] = cert.der();
    webpki::anchor_from_trusted_cert(&CertificateDer::from(der))
        .ok()
        .map(|ta| ta.to_owned())
}
