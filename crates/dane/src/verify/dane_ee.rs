//! DANE-EE(3): the server's own certificate or public key (RFC 7671 §5.1, RFC 7672 §3.1.1).

use rustls::pki_types::CertificateDer;

use super::error::bad_leaf;
use super::{AnchorSource, Authenticator, Verified, VerifyError};
use crate::cert::{CertInfo, CertParseError};
use crate::matching::{association, matches};
use crate::record::{Selector, Tlsa, Usage};

impl Authenticator {
    /// DANE-EE(3), RFC 7671 §5.1 and RFC 7672 §3.1.1: the leaf alone must match the record;
    /// no chain, no name and no validity checks (names only with
    /// [`with_ee_name_checks`](Authenticator::with_ee_name_checks), OpenSSL's default).
    /// Cert(0) matching needs no parse, so even a certificate our parser rejects matches.
    /// The proof on the first match; name-check failures are added to `failures`.
    pub(super) fn dane_ee(
        &self,
        leaf_der: &CertificateDer<'_>,
        leaf: &Result<CertInfo, CertParseError>,
        failures: &mut Vec<VerifyError>,
    ) -> Option<Verified> {
        for r in self.with_usage(Usage::DaneEe) {
            let hit = match (leaf, r.selector()) {
                (Ok(leaf), _) => matches(r, leaf),
                (Err(_), Selector::FullCert) => full_cert_matches(r, leaf_der),
                (Err(_), _) => false,
            };
            if !hit {
                continue;
            }
            match (leaf, self.ee_name_checks) {
                (_, false) => return Some(self.verified(r, 0, AnchorSource::Leaf, None)),
                (Ok(leaf), true) => match self.name_check(r, 0, leaf) {
                    Ok(name) => return Some(self.verified(r, 0, AnchorSource::Leaf, Some(name))),
                    Err(e) => failures.push(e),
                },
                (Err(e), true) => failures.push(bad_leaf(e)),
            }
        }
        None
    }
}

/// Whether a Cert(0) record matches these exact certificate bytes (RFC 6698 §2.1.3), without
/// parsing them.
fn full_cert_matches(r: &Tlsa, der: &[u8]) -> bool {
    association(r.matching(), der).is_some_and(|a| a == r.data())
}
