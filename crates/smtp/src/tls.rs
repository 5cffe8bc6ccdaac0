//! How a connection must be secured, and the rustls configuration for each way.
//!
//! One `ClientConfig` per connection: the DANE verifier carries that connection's TLSA
//! records and reference names (see `dane::DaneServerVerifier`).

use std::sync::Arc;

use dane::{Authenticator, DaneServerVerifier, ReferenceName, Tlsa, Verified};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// How the peer is authenticated once TLS is up.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Not at all: encryption only.
    None,
    /// DANE: TLSA records and reference names (RFC 7672 §3). Whether a success is `verified`
    /// or only `trusted` is the route's finding (`dns::Candidate::dane_trust`), not the
    /// verifier's.
    Dane {
        /// The usable records.
        records: Vec<Tlsa>,
        /// Names a DANE-TA certificate may carry.
        names: Vec<ReferenceName>,
    },
    /// Configured certificate or public-key digests (the `fingerprint` level).
    Fingerprint(Vec<Tlsa>),
    /// PKIX to the given roots, the certificate valid for one of `names`.
    Pkix {
        /// Trust anchors.
        roots: Arc<RootCertStore>,
        /// Accepted names.
        names: Vec<ReferenceName>,
    },
}

/// What one connection must do about TLS.
#[derive(Clone, Debug)]
pub enum Mode {
    /// No STARTTLS.
    Plaintext,
    /// STARTTLS when offered, unauthenticated.
    Opportunistic,
    /// STARTTLS is mandatory; no delivery without it (RFC 7672 §2.2, rule 5).
    Required(Auth),
}

/// The decision on the peer, for the outcome of the attempt.
#[derive(Clone, Debug)]
pub enum PeerAuth {
    /// DANE or fingerprint matched.
    Dane(Verified),
    /// PKIX with a name check passed.
    Pkix,
    /// Nothing was checked.
    Unchecked,
}

/// A verifier for one connection, and how to read its verdict afterwards.
pub struct Prepared {
    /// The client configuration to use.
    pub config: Arc<ClientConfig>,
    dane: Option<Arc<DaneServerVerifier>>,
    pkix: bool,
}

impl Prepared {
    /// The authentication result after a successful handshake.
    pub fn peer_auth(&self) -> PeerAuth {
        match (&self.dane, self.pkix) {
            (Some(v), _) => v.verified().map_or(PeerAuth::Unchecked, PeerAuth::Dane),
            (None, true) => PeerAuth::Pkix,
            (None, false) => PeerAuth::Unchecked,
        }
    }

    /// Why the DANE verifier rejected the peer, if it did.
    pub fn dane_failure(&self) -> Option<dane::VerifyError> {
        self.dane.as_ref()?.outcome()?.err()
    }
}

/// Builds the rustls configuration that implements `auth`.
pub fn prepare(auth: &Auth, provider: &Arc<CryptoProvider>) -> Result<Prepared, Error> {
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous();
    let (verifier, dane, pkix): (Arc<dyn ServerCertVerifier>, _, _) = match auth {
        Auth::None => (Arc::new(AnyCertificate(algorithms)), None, false),
        Auth::Dane { records, names } => {
            let v =
                DaneServerVerifier::new(Authenticator::smtp(records, names.clone()), algorithms);
            (v.clone(), Some(v), false)
        }
        Auth::Fingerprint(records) => {
            let v = DaneServerVerifier::new(Authenticator::smtp(records, Vec::new()), algorithms);
            (v.clone(), Some(v), false)
        }
        Auth::Pkix { roots, names } => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| Error::General(format!("PKIX verifier: {e}")))?;
            (
                Arc::new(AnyName {
                    inner,
                    names: names.clone(),
                }),
                None,
                true,
            )
        }
    };
    let mut config = builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = true;
    Ok(Prepared {
        config: Arc::new(config),
        dane,
        pkix,
    })
}

/// Accepts any certificate (opportunistic TLS: encryption without authentication, RFC 7435),
/// but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// PKIX validation accepting the certificate when it is valid for any of several names
/// (the `verify` and `secure` levels match configured names, not only the SNI name).
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ReferenceName>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut last = Error::General("no name to verify the certificate against".into());
        for name in &self.names {
            let Ok(server_name) = ServerName::try_from(name.as_str().to_owned()) else {
                continue;
            };
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, &server_name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The system's trust anchors (Debian: /etc/ssl/certs) plus those of `extra` PEM files.
pub fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    store.add_parsable_certificates(extra.iter().cloned());
    store
}
