//! Test certificates made on the fly with rcgen: a CA hierarchy and leaves with chosen names,
//! validity and usages.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};

use crate::cert::CertInfo;
use crate::matching::record_for;
use crate::record::Tlsa;

/// A certificate authority with its certificate.
pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// The verification time of these tests: the real clock, which rustls handshakes use too.
/// Certificate validity is set relative to it.
pub fn now() -> UnixTime {
    UnixTime::now()
}

fn at(offset_days: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(now().as_secs() as i64).unwrap()
        + Duration::days(offset_days)
}

/// A CA named `cn`, self-signed or signed by `parent`.
pub fn ca(cn: &str, parent: Option<&Ca>) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = at(-1000);
    p.not_after = at(1000);
    let key = KeyPair::generate().unwrap();
    match parent {
        None => CertifiedIssuer::self_signed(p, key).unwrap(),
        Some(parent) => CertifiedIssuer::signed_by(p, key, parent).unwrap(),
    }
}

/// How to make a leaf.
pub struct Leaf<'a> {
    /// DNS subjectAltNames.
    pub sans: &'a [&'a str],
    /// Subject common name.
    pub cn: &'a str,
    /// Validity, in days relative to [`now`].
    pub valid_days: (i64, i64),
    /// Extended key usages (empty: extension absent).
    pub eku: Vec<ExtendedKeyUsagePurpose>,
}

impl Default for Leaf<'_> {
    fn default() -> Self {
        Self {
            sans: &["mx.example.test"],
            cn: "mx.example.test",
            valid_days: (-10, 80),
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
        }
    }
}

impl Leaf<'_> {
    /// Issues the leaf; returns its certificate and key.
    pub fn issue(&self, issuer: &Ca) -> (CertificateDer<'static>, KeyPair) {
        let mut p =
            CertificateParams::new(self.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(DnType::CommonName, self.cn);
        p.not_before = at(self.valid_days.0);
        p.not_after = at(self.valid_days.1);
        p.extended_key_usages = self.eku.clone();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.der().clone(), key)
    }
}

/// A TLSA record of `usage`, `selector`, `matching` for `cert`.
pub fn tlsa(usage: u8, selector: u8, matching: u8, cert: &CertificateDer<'_>) -> Tlsa {
    let info = CertInfo::parse(cert).unwrap();
    record_for(usage.into(), selector.into(), matching.into(), &info).unwrap()
}
