//! DANE-TA(2): a trust anchor for this service, sent by the server or carried in the record
//! (RFC 7671 §5.2, RFC 7672 §3.1.2), with the name checks of RFC 7672 §3.2.3.

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::explain::{locate_break, validity_error};
use super::{AnchorSource, Authenticator, PathProblem, Verified, VerifyError};
use crate::cert::{CertInfo, sequence_contents};
use crate::matching::matches;
use crate::record::{Matching, Selector, Tlsa, Usage};

impl Authenticator {
    /// DANE-TA(2), RFC 7671 §5.2 and RFC 7672 §3.1.2: the matched certificate or key is the
    /// only trust anchor; the path from the leaf must verify up to it, with the validity of
    /// the certificates below it checked; then the names (RFC 7672 §3.2.3). A digest record
    /// can only name a certificate the server sent, at depth ≥ 1 (RFC 7671 §5.2.1); `2 0 0`
    /// and `2 1 0` carry the anchor whole. `None` when no DANE-TA record can serve as an
    /// anchor for this chain.
    pub(super) fn dane_ta(
        &self,
        leaf_der: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &CertInfo,
        issuers: &[Option<CertInfo>],
        now: UnixTime,
    ) -> Option<Result<Verified, VerifyError>> {
        let mut anchors: Vec<Candidate<'_>> = Vec::new();
        for r in self.with_usage(Usage::DaneTa) {
            // A CA certificate the server sent (depth ≥ 1; a leaf cannot be its own TA).
            for (i, (cert, der)) in issuers.iter().zip(intermediates).enumerate() {
                if !cert.as_ref().is_some_and(|c| matches(r, c)) {
                    continue;
                }
                if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
                    anchors.push(Candidate {
                        anchor,
                        record: r,
                        source: AnchorSource::Chain,
                        chain_depth: Some(i + 1),
                        is_cert: true,
                    });
                }
            }
            if r.matching() != Matching::Full {
                continue;
            }
            match r.selector() {
                // `2 0 0`: a whole certificate from DNS, used even when the server omits it.
                Selector::FullCert => {
                    let from_dns = self.dns_certs.iter().find(|(d, _, _)| d == r);
                    if let Some(anchor) = from_dns.and_then(|(_, _, a)| a.clone()) {
                        anchors.push(Candidate {
                            anchor,
                            record: r,
                            source: AnchorSource::Dns,
                            chain_depth: None,
                            is_cert: true,
                        });
                    }
                }
                // `2 1 0`: a bare public key. It has no name, so offer it as the issuer of every
                // certificate in the chain; the signature check decides.
                Selector::Spki => {
                    let Some(spki) = sequence_contents(r.data()) else {
                        continue;
                    };
                    let names = std::iter::once(Some(leaf))
                        .chain(issuers.iter().map(Option::as_ref))
                        .flatten()
                        .filter_map(|c| sequence_contents(c.issuer_der()));
                    for subject in names {
                        anchors.push(Candidate {
                            anchor: TrustAnchor {
                                subject: subject.into(),
                                subject_public_key_info: spki.into(),
                                name_constraints: None,
                            },
                            record: r,
                            source: AnchorSource::Dns,
                            chain_depth: None,
                            is_cert: false,
                        });
                    }
                }
                Selector::Unassigned(_) => {}
            }
        }
        let first_record = anchors.first()?.record;
        let ee = match EndEntityCert::try_from(leaf_der) {
            Ok(ee) => ee,
            Err(e) => {
                return Some(Err(VerifyError::BadCertificate {
                    depth: 0,
                    reason: format!("{e:?}"),
                }));
            }
        };
        let trust: Vec<TrustAnchor<'_>> = anchors.iter().map(|c| c.anchor.clone()).collect();
        let result = ee.verify_for_usage(
            self.algorithms,
            &trust,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            None,
        );
        Some(match result {
            Ok(path) => {
                // webpki returns a reference to the anchor of the path, one of `trust`.
                let used = trust
                    .iter()
                    .position(|t| std::ptr::eq(t, path.anchor()))
                    .and_then(|i| anchors.get(i));
                let Some(c) = used else {
                    return Some(Err(VerifyError::ChainInvalid {
                        record: first_record.clone(),
                        depth: None,
                        broken_at: None,
                        problem: PathProblem::UnidentifiedAnchor,
                    }));
                };
                let depth = path.intermediate_certificates().count() + usize::from(c.is_cert);
                self.name_check(c.record, depth, leaf)
                    .map(|name| self.verified(c.record, depth, c.source, Some(name)))
            }
            Err(e) => {
                let chain_hit = anchors.iter().find(|c| c.chain_depth.is_some());
                match (&e, chain_hit) {
                    (
                        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. },
                        _,
                    ) => Err(validity_error(leaf, issuers, now)),
                    (_, Some(c)) => Err(VerifyError::ChainInvalid {
                        record: c.record.clone(),
                        depth: c.chain_depth,
                        broken_at: locate_break(leaf, issuers, &trust),
                        problem: PathProblem::from_webpki(&e),
                    }),
                    // Only DNS-supplied anchors, none of which signed anything in the chain.
                    (
                        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey,
                        None,
                    ) => {
                        return None;
                    }
                    (_, None) => Err(VerifyError::ChainInvalid {
                        record: first_record.clone(),
                        depth: None,
                        broken_at: locate_break(leaf, issuers, &trust),
                        problem: PathProblem::from_webpki(&e),
                    }),
                }
            }
        })
    }
}

/// A DANE-TA candidate trust anchor and what it stands for.
struct Candidate<'a> {
    anchor: TrustAnchor<'a>,
    record: &'a Tlsa,
    source: AnchorSource,
    /// Depth of the presented certificate the record matched, if it matched one.
    chain_depth: Option<usize>,
    /// A certificate (counts as a level of the chain) rather than a bare key.
    is_cert: bool,
}
