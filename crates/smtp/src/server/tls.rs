//! The certificate chains the server offers with STARTTLS, chosen by SNI (RFC 7672 §3.3,
//! §8.1; PRODUCT.md rule 11).
//!
//! RFC 7672 §8.1: a DANE client sends SNI with the TLSA base domain, and a server with
//! several names may use it to pick the chain that matches the TLSA records published for
//! that name. But SNI is not required of SMTP clients (RFC 7672 §8.1: servers "MUST NOT"
//! depend on it), so a client without SNI, or with a name no chain carries, gets the
//! **default chain, the first configured**. Among the chains for a name (or the default
//! ones), the first whose key the client can use is chosen, so that an RSA-only client still
//! gets the RSA chain when an ECDSA one comes first.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A chain that cannot be offered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// No chain at all: STARTTLS needs one.
    #[error("no certificate chain configured")]
    NoChains,
    /// The PEM holds no certificate.
    #[error("chain {index}: no certificate in the PEM data")]
    NoCertificate {
        /// Which chain (0 = the default).
        index: usize,
    },
    /// The PEM holds no usable private key.
    #[error("chain {index}: no private key in the PEM data: {detail}")]
    NoKey {
        /// Which chain.
        index: usize,
        /// Why.
        detail: String,
    },
    /// The key does not fit the leaf, or cannot sign, or the leaf does not parse.
    #[error("chain {index}: {detail}")]
    Unusable {
        /// Which chain.
        index: usize,
        /// Why.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// One chain with its key, and the leaf parsed for name checks.
#[derive(Debug)]
struct Chain {
    key: Arc<CertifiedKey>,
}

impl Chain {
    /// Whether the leaf is valid for `name` (its subjectAltNames, `*` matching one left-most
    /// label: RFC 6125 §6.4.3 as webpki applies it).
    fn serves(&self, name: &ServerName<'_>) -> bool {
        self.key
            .end_entity_cert()
            .ok()
            .and_then(|leaf| ParsedCertificate::try_from(leaf).ok())
            .is_some_and(|parsed| rustls::client::verify_server_name(&parsed, name).is_ok())
    }
}

/// Chooses a configured chain by SNI; the first chain is the default. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct SniResolver {
    chains: Vec<Chain>,
}

impl SniResolver {
    /// Chains given as PEM (the leaf first, then intermediates; for DANE-TA(2) the trust
    /// anchor certificate too, RFC 7671 §5.2.2) and their PKCS#8, PKCS#1 or SEC1 keys. The
    /// first is the default. Each key must match its leaf.
    pub fn from_pem(
        chains: &[(&[u8], &[u8])],
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let mut ders = Vec::with_capacity(chains.len());
        for (index, (chain, key)) in chains.iter().enumerate() {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(TlsError::NoCertificate { index });
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::NoKey {
                index,
                detail: e.to_string(),
            })?;
            ders.push((certs, key));
        }
        Self::from_der(ders, provider)
    }

    /// Chains as DER certificates (leaf first) with their keys; the first is the default.
    pub fn from_der(
        chains: Vec<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        if chains.is_empty() {
            return Err(TlsError::NoChains);
        }
        let mut out = Vec::with_capacity(chains.len());
        for (index, (certs, key)) in chains.into_iter().enumerate() {
            let unusable = |e: rustls::Error| TlsError::Unusable {
                index,
                detail: e.to_string(),
            };
            let key = CertifiedKey::from_der(certs, key, provider).map_err(unusable)?;
            let leaf = key.end_entity_cert().map_err(unusable)?;
            ParsedCertificate::try_from(leaf).map_err(unusable)?;
            out.push(Chain { key: Arc::new(key) });
        }
        Ok(Self { chains: out })
    }

    /// The chain for a client that sent `sni` (if any) and can verify `schemes`.
    pub fn choose(
        &self,
        sni: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let named: Vec<&Chain> = match sni.and_then(|s| ServerName::try_from(s).ok()) {
            Some(name) => self.chains.iter().filter(|c| c.serves(&name)).collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Chain> = if named.is_empty() {
            self.chains.iter().collect()
        } else {
            named
        };
        candidates
            .iter()
            .find(|c| c.key.key.choose_scheme(schemes).is_some())
            .or(candidates.first())
            .map(|c| c.key.clone())
    }

    /// A rustls server configuration offering these chains (TLS 1.2 and 1.3, no client
    /// certificates), for [`super::Config::tls`].
    pub fn into_server_config(
        self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self));
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name(), hello.signature_schemes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danemta_lab::pki::TestCert;
    use rustls::SignatureScheme as S;

    const RSA: &[S] = &[S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256];
    const ECDSA: &[S] = &[S::ECDSA_NISTP256_SHA256];
    const BOTH: &[S] = &[S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256];

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    /// ECDSA for mx1 first (the default), RSA for mx1 second, ECDSA for mx2 third.
    #[test]
    fn the_chain_follows_sni_then_key_type_and_defaults_to_the_first() {
        let ec1 = TestCert::self_signed(&["mx1.example.test"]).unwrap();
        let rsa1 = TestCert::self_signed_rsa(&["mx1.example.test"]).unwrap();
        let ec2 = TestCert::self_signed(&["mx2.example.test"]).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let pems: Vec<(&[u8], &[u8])> = [&ec1, &rsa1, &ec2]
            .iter()
            .map(|c| (c.chain_pem.as_bytes(), c.key_pem.as_bytes()))
            .collect();
        let r = SniResolver::from_pem(&pems, &provider).unwrap();
        let chosen = |sni: Option<&str>, schemes: &[S]| leaf(&r.choose(sni, schemes).unwrap());
        for (sni, schemes, want) in [
            (Some("mx1.example.test"), BOTH, &ec1),
            (Some("mx1.example.test"), RSA, &rsa1),
            (Some("MX2.example.test"), BOTH, &ec2),
            // No chain for mx2 can do RSA: its own chain still, the handshake will say no.
            (Some("mx2.example.test"), RSA, &ec2),
            (None, BOTH, &ec1),
            (None, ECDSA, &ec1),
            (None, RSA, &rsa1),
            (Some("unknown.example.test"), BOTH, &ec1),
            (Some("not a name"), BOTH, &ec1),
        ] {
            assert!(chosen(sni, schemes) == want.leaf_der, "{sni:?} {schemes:?}");
        }
    }

    #[test]
    fn bad_chains_are_refused_with_their_index() {
        let provider = rustls::crypto::ring::default_provider();
        let a = TestCert::self_signed(&["a.test"]).unwrap();
        let b = TestCert::self_signed(&["b.test"]).unwrap();
        assert_eq!(
            SniResolver::from_pem(&[], &provider).unwrap_err(),
            TlsError::NoChains
        );
        let err = |chains: &[(&[u8], &[u8])]| SniResolver::from_pem(chains, &provider).unwrap_err();
        assert_eq!(
            err(&[(b"junk", a.key_pem.as_bytes())]),
            TlsError::NoCertificate { index: 0 }
        );
        assert!(matches!(
            err(&[
                (a.chain_pem.as_bytes(), a.key_pem.as_bytes()),
                (b.chain_pem.as_bytes(), b"")
            ]),
            TlsError::NoKey { index: 1, .. }
        ));
        // b's key with a's certificate.
        assert!(matches!(
            err(&[(a.chain_pem.as_bytes(), b.key_pem.as_bytes())]),
            TlsError::Unusable { index: 0, .. }
        ));
    }
}
