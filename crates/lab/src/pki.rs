//! Test certificates for SMTP peers, made on the fly with rcgen, and the TLSA records that match
//! them.
//!
//! Keys are ECDSA P-256 (PKCS#8 PEM), which Postfix, OpenSSL and rustls all accept.
//!
//! ```
//! use danemta_lab::pki::{self, TestCa, TestCert};
//! let ca = TestCa::new("Lab CA")?;
//! let cert = TestCert::ca_signed(&["mx.secure.test"], &ca, true)?;
//! let ee = pki::tlsa_3_1_1(&cert); // "3 1 1 <64 hex digits>"
//! let ta = pki::tlsa_2_x_1(&ca, 1); // "2 1 1 <64 hex digits>"
//! assert!(ee.starts_with("3 1 1 ") && ta.starts_with("2 1 1 "));
//! # Ok::<(), danemta_lab::LabError>(())
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

use crate::LabError;

/// A server certificate with its key, ready for a [`Receiver`](crate::Receiver) or a
/// [`Mitm`](crate::Mitm).
#[derive(Clone, Debug)]
pub struct TestCert {
    /// The chain the server presents, PEM: the leaf first, then the CA certificate when it is
    /// included.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// The issuing CA's certificate, DER (`None` for a self-signed leaf).
    pub ca_der: Option<Vec<u8>>,
    /// The leaf's SubjectPublicKeyInfo, DER (what TLSA selector 1 digests).
    pub spki_der: Vec<u8>,
}

/// A certificate authority that signs [`TestCert`]s (for DANE-TA(2) scenarios).
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_der_len", &self.cert_der().len())
            .finish()
    }
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Certificate {
        detail: format!("{what}: {e}"),
    }
}

/// Now plus `days` (UTC), saturating instead of overflowing.
fn days_from_now(days: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.checked_add(Duration::days(days)).unwrap_or(now)
}

impl TestCa {
    /// A self-signed CA named `cn`, valid from a year ago to ten years ahead.
    pub fn new(cn: &str) -> Result<TestCa, LabError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| cert_error("CA parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = days_from_now(-365);
        params.not_after = days_from_now(3650);
        let key = KeyPair::generate().map_err(|e| cert_error("CA key", e))?;
        let spki_der = key.subject_public_key_info();
        let issuer = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| cert_error("signing the CA", e))?;
        Ok(TestCa { issuer, spki_der })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        self.issuer.der()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Validity of a leaf, in days relative to now.
#[derive(Clone, Copy)]
struct Validity {
    from: i64,
    to: i64,
}

const CURRENT: Validity = Validity { from: -30, to: 365 };
const EXPIRED: Validity = Validity { from: -90, to: -30 };

fn leaf_params(names: &[&str], validity: Validity) -> Result<CertificateParams, LabError> {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).map_err(|e| cert_error("leaf parameters", e))?;
    if let Some(cn) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *cn);
    }
    params.not_before = days_from_now(validity.from);
    params.not_after = days_from_now(validity.to);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn make_leaf(
    names: &[&str],
    issuer: Option<&TestCa>,
    include_ca_in_chain: bool,
    validity: Validity,
) -> Result<TestCert, LabError> {
    let params = leaf_params(names, validity)?;
    let key = KeyPair::generate().map_err(|e| cert_error("leaf key", e))?;
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, &ca.issuer),
        None => params.self_signed(&key),
    }
    .map_err(|e| cert_error("signing the leaf", e))?;
    let mut chain_pem = cert.pem();
    if let (Some(ca), true) = (issuer, include_ca_in_chain) {
        chain_pem.push_str(&ca.cert_pem());
    }
    Ok(TestCert {
        chain_pem,
        key_pem: key.serialize_pem(),
        leaf_der: cert.der().to_vec(),
        ca_der: issuer.map(|ca| ca.cert_der().to_vec()),
        spki_der: key.subject_public_key_info(),
    })
}

/// An RSA-2048 key pair: ring cannot generate RSA keys, so OpenSSL's command line does.
fn rsa_key() -> Result<KeyPair, LabError> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .map_err(|e| cert_error("running openssl genpkey (Debian package openssl)", e))?;
    let pem = String::from_utf8_lossy(&out.stdout);
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| cert_error("loading the RSA key", e))
}

impl TestCert {
    /// A self-signed RSA-2048 leaf for `names` (for servers with both an ECDSA and an RSA
    /// certificate), valid from 30 days ago to a year ahead.
    pub fn self_signed_rsa(names: &[&str]) -> Result<TestCert, LabError> {
        let params = leaf_params(names, CURRENT)?;
        let key = rsa_key()?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| cert_error("signing the RSA leaf", e))?;
        Ok(TestCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
            ca_der: None,
            spki_der: key.subject_public_key_info(),
        })
    }

    /// A self-signed leaf for `names` (DNS names or IP addresses; the first is also the subject
    /// CN), valid from 30 days ago to a year ahead. Good for DANE-EE(3).
    pub fn self_signed(names: &[&str]) -> Result<TestCert, LabError> {
        make_leaf(names, None, false, CURRENT)
    }

    /// A leaf for `names` signed by `ca`; the chain holds the CA certificate after the leaf when
    /// `include_ca_in_chain` (a DANE-TA(2) server must send it, RFC 7671 §5.2.2).
    pub fn ca_signed(
        names: &[&str],
        ca: &TestCa,
        include_ca_in_chain: bool,
    ) -> Result<TestCert, LabError> {
        make_leaf(names, Some(ca), include_ca_in_chain, CURRENT)
    }

    /// A leaf that expired 30 days ago (valid from 90 to 30 days ago): self-signed when `issuer`
    /// is `None`, else signed by it, with the CA certificate in the chain. DANE-EE(3) must still
    /// accept it (no expiry check); DANE-TA(2) must not.
    pub fn expired(names: &[&str], issuer: Option<&TestCa>) -> Result<TestCert, LabError> {
        make_leaf(names, issuer, true, EXPIRED)
    }
}

/// `"3 1 1 <hex>"`: DANE-EE, SubjectPublicKeyInfo, SHA-256 of the leaf of `cert`.
pub fn tlsa_3_1_1(cert: &TestCert) -> String {
    format!("3 1 1 {}", sha256_hex(&cert.spki_der))
}

/// `"3 0 1 <hex>"`: DANE-EE, full certificate, SHA-256 of the leaf of `cert`.
pub fn tlsa_3_0_1(cert: &TestCert) -> String {
    format!("3 0 1 {}", sha256_hex(&cert.leaf_der))
}

/// `"2 <selector> 1 <hex>"`: DANE-TA, SHA-256 of the CA's certificate (selector 0) or of its
/// SubjectPublicKeyInfo (selector 1). Any other selector is written as given with the SPKI
/// digest: a record with an unknown selector, which clients must treat as unusable.
pub fn tlsa_2_x_1(ca: &TestCa, selector: u8) -> String {
    let data = match selector {
        0 => ca.cert_der(),
        _ => ca.spki_der(),
    };
    format!("2 {selector} 1 {}", sha256_hex(data))
}

/// Lower-case hex of the SHA-256 digest of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_chains() {
        let ca = TestCa::new("Lab CA").expect("CA");
        let with_ca = TestCert::ca_signed(&["mx.a.test"], &ca, true).expect("leaf");
        let without = TestCert::ca_signed(&["mx.a.test"], &ca, false).expect("leaf");
        assert_eq!(with_ca.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(without.chain_pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(with_ca.ca_der.as_deref(), Some(ca.cert_der()));
        let self_signed = TestCert::self_signed(&["mx.b.test"]).expect("leaf");
        assert!(self_signed.ca_der.is_none());
        let record = tlsa_3_1_1(&self_signed);
        assert_eq!(record.len(), "3 1 1 ".len() + 64);
        assert_ne!(tlsa_2_x_1(&ca, 0), tlsa_2_x_1(&ca, 1));
        assert!(tlsa_2_x_1(&ca, 0).starts_with("2 0 1 "));
        // The SPKI is inside the certificate.
        let spki = &self_signed.spki_der;
        assert!(
            self_signed
                .leaf_der
                .windows(spki.len())
                .any(|w| w == spki.as_slice())
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let expired = TestCert::expired(&["mx.c.test"], Some(&ca)).expect("leaf");
        assert_eq!(expired.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }
}
