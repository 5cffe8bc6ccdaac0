//! DANE inside the rustls handshake.
//!
//! rustls has no DANE hook (rustls#816), but a `ServerCertVerifier` is chosen per
//! `ClientConfig`, so one verifier per connection can carry that connection's TLSA RRset and
//! reference names. The certificate decision is then made *during* the handshake: a peer that
//! fails DANE never completes it. The handshake signatures are still checked, against the
//! leaf's public key, so the peer must prove it holds the key the TLSA record vouches for.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use crate::cert::CertInfo;
use crate::verify::{Authenticator, Verified, VerifyError};

/// A rustls server-certificate verifier for one connection, deciding by DANE.
///
/// After the handshake, [`outcome`](Self::outcome) tells what was decided, for logs.
#[derive(Debug)]
pub struct DaneServerVerifier {
    authenticator: Authenticator,
    algorithms: WebPkiSupportedAlgorithms,
    outcome: Mutex<Option<Result<Verified, VerifyError>>>,
}

impl DaneServerVerifier {
    /// A verifier using `authenticator` for the certificate and `algorithms` (normally
    /// `provider.signature_verification_algorithms`) for chain and handshake signatures.
    pub fn new(authenticator: Authenticator, algorithms: WebPkiSupportedAlgorithms) -> Arc<Self> {
        Arc::new(Self {
            authenticator: authenticator.with_algorithms(algorithms.all),
            algorithms,
            outcome: Mutex::new(None),
        })
    }

    /// The verdict of the last certificate check: `None` before the server's certificate
    /// arrived.
    pub fn outcome(&self) -> Option<Result<Verified, VerifyError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The proof of authentication, if the peer was authenticated.
    pub fn verified(&self) -> Option<Verified> {
        self.outcome().and_then(Result::ok)
    }

    fn leaf_spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, Error> {
        CertInfo::parse(cert)
            .map(|c| SubjectPublicKeyInfoDer::from(c.spki().to_vec()))
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
    }
}

impl ServerCertVerifier for DaneServerVerifier {
    /// Decides by DANE; the SNI name rustls passes is ignored, because the reference names
    /// were fixed by the route (RFC 7672 §3.2.3), not by what we sent.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let result = self.authenticator.verify(&chain, now);
        let reply = match &result {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(e.clone())),
            ))),
        };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        reply
    }

    /// TLS 1.2 signature, checked against the leaf's public key. Working from the key rather
    /// than the certificate keeps DANE-EE servers with X.509 v1 certificates usable.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let spki = Self::leaf_spki(cert)?;
        let key = webpki::RawPublicKeyEntity::try_from(&spki)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        for alg in candidates {
            match key.verify_signature(*alg, message, dss.signature()) {
                Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
                Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {}
                Err(_) => break,
            }
        }
        Err(Error::InvalidCertificate(CertificateError::BadSignature))
    }

    /// TLS 1.3 signature, checked against the leaf's public key.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let spki = Self::leaf_spki(cert)?;
        verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
