//! Which records count, and whether a record matches a certificate.
//!
//! RFC 6698 §2.1.2–2.1.3 define selection and matching; RFC 7672 §3.1.3 makes PKIX-TA(0) and
//! PKIX-EE(1) unusable for SMTP; RFC 7671 §9 restricts a client to the strongest digest among
//! records of the same usage and selector.

use ring::digest;

use crate::cert::CertInfo;
use crate::record::{Matching, Selector, Tlsa, Usage};

/// Which usages a verifier honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3); PKIX-TA(0)/PKIX-EE(1) are unusable
    /// because an SMTP client has no agreed set of public CAs.
    #[default]
    Smtp,
    /// RFC 6698 as a whole: all four usages, PKIX ones against a caller-given root store.
    General,
}

impl Profile {
    /// Whether this profile can use `record` at all (RFC 7671 §4, RFC 7672 §3.1.3): a known
    /// selector and matching type, and a usage the profile honours.
    pub fn is_usable(self, record: &Tlsa) -> bool {
        let usage_ok = match record.usage() {
            Usage::DaneTa | Usage::DaneEe => true,
            Usage::PkixTa | Usage::PkixEe => self == Profile::General,
            Usage::Unassigned(_) => false,
        };
        usage_ok
            && !matches!(record.selector(), Selector::Unassigned(_))
            && !matches!(record.matching(), Matching::Unassigned(_))
    }

    /// The records a client uses from an RRset: the usable ones, minus those whose digest is
    /// weaker than another digest published for the same usage and selector (RFC 7671 §9,
    /// digest algorithm agility: SHA2-512 is preferred over SHA2-256). Full(0) is not a digest
    /// and is never dropped. Duplicates are removed; order is otherwise kept.
    pub fn usable_records<'a>(self, rrset: impl IntoIterator<Item = &'a Tlsa>) -> Vec<Tlsa> {
        let usable: Vec<&Tlsa> = rrset.into_iter().filter(|r| self.is_usable(r)).collect();
        let mut out: Vec<Tlsa> = Vec::with_capacity(usable.len());
        for r in &usable {
            let weaker = usable.iter().any(|o| {
                o.usage() == r.usage()
                    && o.selector() == r.selector()
                    && digest_strength(o.matching()) > digest_strength(r.matching())
                    && r.matching() != Matching::Full
            });
            if !weaker && !out.contains(r) {
                out.push((*r).clone());
            }
        }
        out
    }
}

/// Digest preference order for RFC 7671 §9 (higher is stronger).
fn digest_strength(m: Matching) -> u8 {
    match m {
        Matching::Sha512 => 2,
        Matching::Sha256 => 1,
        Matching::Full | Matching::Unassigned(_) => 0,
    }
}

/// The bytes a selector picks from a certificate (RFC 6698 §2.1.2).
pub fn selected(selector: Selector, cert: &CertInfo) -> Option<&[u8]> {
    match selector {
        Selector::FullCert => Some(cert.der()),
        Selector::Spki => Some(cert.spki()),
        Selector::Unassigned(_) => None,
    }
}

/// The association data for `content` under a matching type (RFC 6698 §2.1.3).
pub fn association(matching: Matching, content: &[u8]) -> Option<Vec<u8>> {
    match matching {
        Matching::Full => Some(content.to_vec()),
        Matching::Sha256 => Some(digest::digest(&digest::SHA256, content).as_ref().to_vec()),
        Matching::Sha512 => Some(digest::digest(&digest::SHA512, content).as_ref().to_vec()),
        Matching::Unassigned(_) => None,
    }
}

/// The record of the given usage, selector and matching type that matches `cert`, as a
/// domain owner would publish it; `None` for unassigned selector or matching values.
pub fn record_for(
    usage: Usage,
    selector: Selector,
    matching: Matching,
    cert: &CertInfo,
) -> Option<Tlsa> {
    let data = association(matching, selected(selector, cert)?)?;
    Tlsa::new(usage, selector, matching, data).ok()
}

/// Whether `record` matches `cert`, ignoring the usage (RFC 6698 §2.1.2–2.1.3).
pub fn matches(record: &Tlsa, cert: &CertInfo) -> bool {
    let Some(content) = selected(record.selector(), cert) else {
        return false;
    };
    match record.matching() {
        Matching::Full => content == record.data(),
        Matching::Sha256 => digest::digest(&digest::SHA256, content).as_ref() == record.data(),
        Matching::Sha512 => digest::digest(&digest::SHA512, content).as_ref() == record.data(),
        Matching::Unassigned(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(u: u8, s: u8, m: u8) -> Tlsa {
        let len = Matching::from(m).digest_len().unwrap_or(4);
        Tlsa::new(u.into(), s.into(), m.into(), vec![u ^ s ^ m; len]).unwrap()
    }

    #[test]
    fn smtp_profile_drops_pkix_usages_and_unknown_fields() {
        let p = Profile::Smtp;
        assert!(p.is_usable(&rec(3, 1, 1)));
        assert!(p.is_usable(&rec(2, 0, 2)));
        assert!(p.is_usable(&rec(3, 0, 0)));
        assert!(!p.is_usable(&rec(0, 0, 1)));
        assert!(!p.is_usable(&rec(1, 1, 1)));
        assert!(!p.is_usable(&rec(4, 1, 1)));
        assert!(!p.is_usable(&rec(3, 2, 1)));
        assert!(!p.is_usable(&rec(3, 1, 3)));
        assert!(Profile::General.is_usable(&rec(0, 0, 1)));
        assert!(Profile::General.is_usable(&rec(1, 1, 1)));
        assert!(!Profile::General.is_usable(&rec(4, 1, 1)));
    }

    #[test]
    fn digest_agility_keeps_only_the_strongest_digest_per_usage_and_selector() {
        let set = [
            rec(3, 1, 1),
            rec(3, 1, 2),
            rec(3, 0, 1),
            rec(2, 1, 1),
            rec(3, 1, 0),
        ];
        let used = Profile::Smtp.usable_records(&set);
        assert_eq!(
            used,
            vec![rec(3, 1, 2), rec(3, 0, 1), rec(2, 1, 1), rec(3, 1, 0)]
        );
    }

    #[test]
    fn unusable_stronger_digests_do_not_shadow_usable_ones() {
        // A PKIX-EE SHA-512 record must not knock out DANE-EE SHA-256 in the SMTP profile.
        let set = [rec(1, 1, 2), rec(3, 1, 1)];
        assert_eq!(Profile::Smtp.usable_records(&set), vec![rec(3, 1, 1)]);
    }

    #[test]
    fn duplicates_are_collapsed() {
        let set = [rec(3, 1, 1), rec(3, 1, 1)];
        assert_eq!(Profile::Smtp.usable_records(&set).len(), 1);
    }

    #[test]
    fn association_data_per_matching_type() {
        assert_eq!(association(Matching::Full, b"ab").unwrap(), b"ab");
        assert_eq!(
            crate::record::to_hex(&association(Matching::Sha256, b"abc").unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(association(Matching::Sha512, b"abc").unwrap().len(), 64);
        assert_eq!(association(Matching::Unassigned(9), b"abc"), None);
    }
}
