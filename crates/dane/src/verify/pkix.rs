//! PKIX-EE(1) and PKIX-TA(0), general profile only (RFC 6698 §2.1.1, RFC 7671 §5.3–5.4);
//! unusable for SMTP (RFC 7672 §3.1.3).

use std::cell::Cell;

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::explain::{locate_break, validity_error};
use super::{AnchorSource, Authenticator, PathProblem, Verified, VerifyError};
use crate::cert::CertInfo;
use crate::matching::matches;
use crate::record::{Tlsa, Usage};

impl Authenticator {
    /// PKIX-EE(1) and PKIX-TA(0) (RFC 6698 §2.1.1, RFC 7671 §5.3–5.4): a PKIX path to the
    /// caller's roots, with certificates from `x 0 0` records as extra intermediates, plus
    /// the record match: the leaf for PKIX-EE, a CA of the validated path for PKIX-TA.
    /// `None` when no PKIX record applies to this chain.
    pub(super) fn pkix(
        &self,
        leaf_der: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &CertInfo,
        issuers: &[Option<CertInfo>],
        now: UnixTime,
    ) -> Option<Result<Verified, VerifyError>> {
        let ee_hit = self.with_usage(Usage::PkixEe).find(|r| matches(r, leaf));
        let first_ta = self.with_usage(Usage::PkixTa).next();
        if ee_hit.is_none() && first_ta.is_none() {
            return None;
        }
        let ee = match EndEntityCert::try_from(leaf_der) {
            Ok(ee) => ee,
            Err(e) => {
                return Some(Err(VerifyError::BadCertificate {
                    depth: 0,
                    reason: format!("{e:?}"),
                }));
            }
        };
        let roots: Vec<TrustAnchor<'_>> = self.pkix_roots.iter().map(|(_, a)| a.clone()).collect();
        let mut candidates: Vec<CertificateDer<'_>> = intermediates.to_vec();
        candidates.extend(
            self.dns_certs
                .iter()
                .map(|(_, c, _)| c.as_certificate_der()),
        );

        let path_fails = |e: &webpki::Error, record: &Tlsa, depth: Option<usize>| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                validity_error(leaf, issuers, now)
            }
            e => VerifyError::ChainInvalid {
                record: record.clone(),
                depth,
                broken_at: locate_break(leaf, issuers, &roots),
                problem: PathProblem::from_webpki(e),
            },
        };

        if let Some(record) = ee_hit {
            let result = ee.verify_for_usage(
                self.algorithms,
                &roots,
                &candidates,
                now,
                KeyUsage::server_auth(),
                None,
                None,
            );
            return Some(match result {
                Ok(_) => self
                    .name_check(record, 0, leaf)
                    .map(|name| self.verified(record, 0, AnchorSource::Leaf, Some(name))),
                Err(e) => Err(path_fails(&e, record, Some(0))),
            });
        }

        // No PKIX-EE record matched, so there is a PKIX-TA record (checked above).
        let first_ta = first_ta?;
        // PKIX-TA: reject candidate paths in which no certificate matches a PKIX-TA record, so
        // webpki keeps searching (RFC 6698 §2.1.1: the CA must be in the validated path).
        let hit: Cell<Option<(&Tlsa, usize, AnchorSource)>> = Cell::new(None);
        let select = |path: &webpki::VerifiedPath<'_>| {
            let ta_records: Vec<&Tlsa> = self.with_usage(Usage::PkixTa).collect();
            let mut depth = 0;
            for cert in path.intermediate_certificates() {
                depth += 1;
                let Ok(info) = CertInfo::parse(&cert.der()) else {
                    continue;
                };
                if let Some(record) = ta_records.iter().find(|r| matches(r, &info)) {
                    let sent = intermediates.iter().any(|c| c.as_ref() == info.der());
                    let source = if sent {
                        AnchorSource::Chain
                    } else {
                        AnchorSource::Dns
                    };
                    hit.set(Some((record, depth, source)));
                    return Ok(());
                }
            }
            let root = roots
                .iter()
                .position(|t| std::ptr::eq(t, path.anchor()))
                .and_then(|i| self.pkix_roots.get(i))
                .map(|(info, _)| info);
            if let Some(record) = root.and_then(|root| ta_records.iter().find(|r| matches(r, root)))
            {
                hit.set(Some((record, depth + 1, AnchorSource::TrustStore)));
                return Ok(());
            }
            Err(webpki::Error::UnknownIssuer)
        };
        let result = ee.verify_for_usage(
            self.algorithms,
            &roots,
            &candidates,
            now,
            KeyUsage::server_auth(),
            None,
            Some(&select),
        );
        Some(match (result, hit.get()) {
            (Ok(_), Some((record, depth, source))) => self
                .name_check(record, depth, leaf)
                .map(|name| self.verified(record, depth, source, Some(name))),
            // webpki reports our rejection as UnknownIssuer: no PKIX-TA record in any path.
            (Err(webpki::Error::UnknownIssuer), None) | (Ok(_), None) => return None,
            (Err(e), _) => Err(path_fails(&e, first_ta, None)),
        })
    }
}
