//! How a connection must be secured, and the rustls configuration for each way.
//!
//! One certificate verifier per connection: the DANE verifier carries that connection's TLSA
//! records and reference names (see `dane::DaneServerVerifier`). Without session resumption
//! the `ClientConfig` is the connection's own too ([`prepare`]); with it, the configuration is
//! the one of the connection's [`SessionKey`](crate::resume::SessionKey), whose verifier hands
//! each call to the connection's (`prepare_keyed`, [`Prepared::connect`]).

use std::io;
use std::sync::{Arc, Mutex};

use dane::{Authenticator, DaneServerVerifier, ReferenceName, Tlsa, Verified};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::resume::with_verifier;

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

/// The decision on the peer, for the outcome of the attempt. The authenticating variants
/// carry their proof: a [`dane::Verified`] only the DANE verifier makes, or a
/// [`PkixVerified`] only this module makes, both after a completed handshake.
#[derive(Clone, Debug)]
pub enum PeerAuth {
    /// DANE or fingerprint matched.
    Dane(Verified),
    /// PKIX with a name check passed.
    Pkix(PkixVerified),
    /// Nothing was checked.
    Unchecked,
}

/// Proof that PKIX validation (RFC 5280, via webpki, to the configured roots) accepted the
/// peer's chain for one of the configured names (RFC 6125 §6), and that the peer proved its
/// key in the handshake. Made only here, by the verifier of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkixVerified {
    name: ReferenceName,
}

impl PkixVerified {
    /// The reference name the certificate was found valid for.
    pub fn name(&self) -> &ReferenceName {
        &self.name
    }

    /// A proof for unit tests of the decisions that read one.
    #[cfg(test)]
    pub(crate) fn for_tests(name: ReferenceName) -> Self {
        Self { name }
    }
}

impl Mode {
    /// Whether a completed handshake must have produced a proof of the peer's identity
    /// ([`PeerAuth::Dane`] or [`PeerAuth::Pkix`]): DANE, fingerprint and PKIX.
    pub fn authenticates(&self) -> bool {
        matches!(
            self,
            Mode::Required(Auth::Dane { .. } | Auth::Fingerprint(_) | Auth::Pkix { .. })
        )
    }

    /// Whether `peer` is the authentication this mode demands: a DANE proof for DANE and
    /// fingerprint, a PKIX proof for PKIX, anything for the modes that check nothing.
    pub fn satisfied_by(&self, peer: &PeerAuth) -> bool {
        match (self, peer) {
            (Mode::Required(Auth::Dane { .. } | Auth::Fingerprint(_)), PeerAuth::Dane(_)) => true,
            (Mode::Required(Auth::Pkix { .. }), PeerAuth::Pkix(_)) => true,
            _ => !self.authenticates(),
        }
    }
}

/// A verifier for one connection, and how to read its verdict afterwards.
pub struct Prepared {
    /// The client configuration to use (through [`Prepared::connect`], which puts this
    /// connection's verifier in charge).
    pub config: Arc<ClientConfig>,
    verifier: Arc<dyn ServerCertVerifier>,
    dane: Option<Arc<DaneServerVerifier>>,
    pkix: Option<Arc<AnyName>>,
}

impl Prepared {
    /// The authentication result after a successful full handshake. A resumed handshake
    /// checks no certificate (RFC 8446 §2.2): its proof is the full handshake's, kept by the
    /// session cache.
    pub fn peer_auth(&self) -> PeerAuth {
        match (&self.dane, &self.pkix) {
            (Some(v), _) => v.verified().map_or(PeerAuth::Unchecked, PeerAuth::Dane),
            (None, Some(v)) => v.verified().map_or(PeerAuth::Unchecked, PeerAuth::Pkix),
            (None, None) => PeerAuth::Unchecked,
        }
    }

    /// Why the DANE verifier rejected the peer, if it did.
    pub fn dane_failure(&self) -> Option<dane::VerifyError> {
        self.dane.as_ref()?.outcome()?.err()
    }

    /// The TLS handshake as a client on `io`, sending `name` as SNI, with this connection's
    /// verifier deciding on the certificate.
    pub async fn connect<IO>(&self, name: ServerName<'static>, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = TlsConnector::from(self.config.clone());
        with_verifier(self.verifier.clone(), async move {
            connector.connect(name, io).await
        })
        .await
    }
}

/// The verifier that implements `auth` for one connection, and its typed halves.
type Verifiers = (
    Arc<dyn ServerCertVerifier>,
    Option<Arc<DaneServerVerifier>>,
    Option<Arc<AnyName>>,
);

fn verifiers(auth: &Auth, provider: &Arc<CryptoProvider>) -> Result<Verifiers, Error> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(match auth {
        Auth::None => (Arc::new(AnyCertificate(algorithms)), None, None),
        Auth::Dane { records, names } => {
            let v =
                DaneServerVerifier::new(Authenticator::smtp(records, names.clone()), algorithms);
            (v.clone(), Some(v), None)
        }
        Auth::Fingerprint(records) => {
            let v = DaneServerVerifier::new(Authenticator::smtp(records, Vec::new()), algorithms);
            (v.clone(), Some(v), None)
        }
        Auth::Pkix { roots, names } => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| Error::General(format!("PKIX verifier: {e}")))?;
            let v = Arc::new(AnyName {
                inner,
                names: names.clone(),
                state: Mutex::new(PkixState::default()),
            });
            (v.clone(), None, Some(v))
        }
    })
}

/// Builds the rustls configuration that implements `auth`, the connection's own, without
/// session resumption.
pub fn prepare(auth: &Auth, provider: &Arc<CryptoProvider>) -> Result<Prepared, Error> {
    let (verifier, dane, pkix) = verifiers(auth, provider)?;
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.enable_sni = true;
    config.resumption = Resumption::disabled();
    Ok(Prepared {
        config: Arc::new(config),
        verifier,
        dane,
        pkix,
    })
}

/// A verifier implementing `auth` for one connection made with `config`, the configuration
/// of the connection's session-cache key: its sessions may be resumed (RFC 8446 §2.2, RFC
/// 5077), and [`Prepared::connect`] has this connection's verifier decide on a full
/// handshake.
pub(crate) fn prepare_keyed(
    auth: &Auth,
    provider: &Arc<CryptoProvider>,
    config: Arc<ClientConfig>,
) -> Result<Prepared, Error> {
    let (verifier, dane, pkix) = verifiers(auth, provider)?;
    Ok(Prepared {
        config,
        verifier,
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
    state: Mutex<PkixState>,
}

/// What the PKIX verifier of one connection has seen.
#[derive(Debug, Default)]
struct PkixState {
    /// The name the chain was valid for.
    name: Option<ReferenceName>,
    /// Whether the peer's handshake signature checked out with that chain's key.
    signed: bool,
}

impl AnyName {
    /// The proof, once the chain was valid for a name and the handshake signature verified.
    fn verified(&self) -> Option<PkixVerified> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&state.name, state.signed) {
            (Some(name), true) => Some(PkixVerified { name: name.clone() }),
            _ => None,
        }
    }

    fn record(&self, update: impl FnOnce(&mut PkixState)) {
        update(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }
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
                Ok(v) => {
                    self.record(|s| s.name = Some(name.clone()));
                    return Ok(v);
                }
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
        let valid = self.inner.verify_tls12_signature(message, cert, dss)?;
        self.record(|s| s.signed = true);
        Ok(valid)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let valid = self.inner.verify_tls13_signature(message, cert, dss)?;
        self.record(|s| s.signed = true);
        Ok(valid)
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
