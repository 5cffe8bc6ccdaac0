//! DANE inside the rustls handshake.
//!
//! rustls has no DANE hook (rustls#816), but a `ServerCertVerifier` is chosen per
//! `ClientConfig`, so one verifier per connection can carry that connection's TLSA RRset and
//! reference names. The certificate decision is then made *during* the handshake: a peer that
//! fails DANE never completes it. The handshake signatures are still checked, against the
//! leaf's public key, so the peer must prove it holds the key the TLSA record vouches for
//! (RFC 7672 §3.1.1: DANE-EE authenticates the key, which only its holder can use).
//!
//! Like rustls, which only reports a server as authenticated once the handshake signature has
//! verified, [`DaneServerVerifier`] keeps a matching certificate as *pending* and hands out
//! its [`Verified`] proof only after the server signed the handshake with that certificate's
//! key. A man in the middle who replays the genuine certificate without its key gets no proof.

use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use crate::cert::CertInfo;
use crate::verify::{Authenticator, Verified, VerifyError};

/// Where one connection's authentication stands.
#[derive(Debug, Default)]
enum State {
    /// No certificate checked yet.
    #[default]
    Idle,
    /// The certificate was rejected: the handshake is aborted.
    Rejected(VerifyError),
    /// The certificate is authenticated by DANE, but the server has not yet proved, by the
    /// handshake signature, that it holds the leaf's private key.
    Pending {
        /// The proof to release once the key is proved.
        verified: Verified,
        /// The leaf certificate the proof is about, DER.
        leaf: Vec<u8>,
    },
    /// The certificate is authenticated and the handshake signature verified with its key.
    Proved(Verified),
}

/// A rustls server-certificate verifier for one connection, deciding by DANE.
///
/// After the handshake, [`verified`](Self::verified) gives the proof of authentication and
/// [`outcome`](Self::outcome) tells what was decided, for logs.
#[derive(Debug)]
pub struct DaneServerVerifier {
    authenticator: Authenticator,
    algorithms: WebPkiSupportedAlgorithms,
    state: Mutex<State>,
}

impl DaneServerVerifier {
    /// A verifier using `authenticator` for the certificate and `algorithms` (normally
    /// `provider.signature_verification_algorithms`) for chain and handshake signatures.
    pub fn new(authenticator: Authenticator, algorithms: WebPkiSupportedAlgorithms) -> Arc<Self> {
        Arc::new(Self {
            authenticator: authenticator.with_algorithms(algorithms.all),
            algorithms,
            state: Mutex::new(State::Idle),
        })
    }

    /// A rustls client configuration whose certificate decisions are this verifier's: the
    /// usual way to use it, one configuration per connection.
    pub fn client_config(
        self: &Arc<Self>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth())
    }

    /// The decision on the peer: `Some(Err(_))` when its certificate was rejected,
    /// `Some(Ok(_))` when it was authenticated *and* proved it holds the key (the handshake
    /// signature verified), `None` otherwise — before the certificate arrived, or when the
    /// certificate matched but the handshake signature did not verify (or was not reached).
    pub fn outcome(&self) -> Option<Result<Verified, VerifyError>> {
        match &*self.lock() {
            State::Idle | State::Pending { .. } => None,
            State::Rejected(e) => Some(Err(e.clone())),
            State::Proved(v) => Some(Ok(v.clone())),
        }
    }

    /// The proof of authentication: `Some` only when the peer's certificate was authenticated
    /// by DANE and the peer then signed the handshake with that certificate's key.
    pub fn verified(&self) -> Option<Verified> {
        match &*self.lock() {
            State::Proved(v) => Some(v.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One handshake signature, TLS 1.2 or 1.3: `check` verifies it with the public key of
    /// `cert` (the leaf); when it does, a pending proof about that same leaf is released.
    fn handshake_signature(
        &self,
        cert: &CertificateDer<'_>,
        check: impl FnOnce(&SubjectPublicKeyInfoDer<'_>) -> Result<HandshakeSignatureValid, Error>,
    ) -> Result<HandshakeSignatureValid, Error> {
        let valid = check(&Self::leaf_spki(cert)?)?;
        self.key_proved(cert);
        Ok(valid)
    }

    /// Records that the handshake signature by `cert`'s key verified: a pending proof about
    /// that same certificate is released. Anything else leaves the state as it is.
    fn key_proved(&self, cert: &CertificateDer<'_>) {
        let mut state = self.lock();
        if let State::Pending { verified, leaf } = &*state
            && leaf.as_slice() == cert.as_ref()
        {
            *state = State::Proved(verified.clone());
        }
    }

    /// The leaf's public key, for the handshake signature. Working from the key rather than
    /// the certificate keeps DANE-EE servers with X.509 v1 certificates usable.
    fn leaf_spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, Error> {
        CertInfo::parse(cert)
            .map(|c| SubjectPublicKeyInfoDer::from(c.spki().to_vec()))
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
    }

    /// The TLS 1.2 signature check of rustls' `verify_tls12_signature`, against a raw key
    /// (rustls offers the raw-key form for TLS 1.3 only).
    fn tls12_signature_with_raw_key(
        &self,
        message: &[u8],
        spki: &SubjectPublicKeyInfoDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let key = webpki::RawPublicKeyEntity::try_from(spki)
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
}

impl ServerCertVerifier for DaneServerVerifier {
    /// Decides by DANE; the SNI name rustls passes is ignored, because the reference names
    /// were fixed by the route (RFC 7672 §3.2.3), not by what we sent. A success is kept
    /// pending until the handshake signature proves the peer holds the leaf's key.
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
        let (state, reply) = match self.authenticator.verify(&chain, now) {
            Ok(verified) => (
                State::Pending {
                    verified,
                    leaf: end_entity.to_vec(),
                },
                Ok(ServerCertVerified::assertion()),
            ),
            Err(e) => {
                let reply = Err(Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(e.clone())),
                )));
                (State::Rejected(e), reply)
            }
        };
        *self.lock() = state;
        reply
    }

    /// TLS 1.2 signature (RFC 5246 §7.4.3), checked against the leaf's public key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.handshake_signature(cert, |spki| {
            self.tls12_signature_with_raw_key(message, spki, dss)
        })
    }

    /// TLS 1.3 CertificateVerify (RFC 8446 §4.4.3), checked against the leaf's public key.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.handshake_signature(cert, |spki| {
            verify_tls13_signature_with_raw_key(message, spki, dss, &self.algorithms)
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::ring::default_provider;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::version::{TLS12, TLS13};
    use rustls::{ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion};

    use super::*;
    use crate::record::Tlsa;
    use crate::test_pki::{Leaf, ca, tlsa};
    use crate::verify::AnchorSource;

    /// Serves one fixed chain and key, without checking that they belong together, so a
    /// test can play a server that has the certificate but not its private key.
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn server(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> ServerConnection {
        let provider = Arc::new(default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = provider.key_provider.load_private_key(key).unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))));
        ServerConnection::new(Arc::new(config)).unwrap()
    }

    fn client(
        records: &[Tlsa],
        version: &'static SupportedProtocolVersion,
    ) -> (Arc<DaneServerVerifier>, ClientConnection) {
        let provider = default_provider();
        let auth = Authenticator::smtp(records, vec!["mx.example.test".parse().unwrap()]);
        let verifier = DaneServerVerifier::new(auth, provider.signature_verification_algorithms);
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let sni = ServerName::try_from("mx.example.test").unwrap();
        (
            verifier,
            ClientConnection::new(Arc::new(config), sni).unwrap(),
        )
    }

    /// Runs a handshake in memory; the client's error, if any, is returned.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), Error> {
        for _ in 0..16 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                if server.process_new_packets().is_err() {
                    break;
                }
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish")
    }

    #[test]
    fn dane_ee_and_dane_ta_handshakes_succeed_on_tls12_and_tls13() {
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let (leaf, key) = Leaf::default().issue(&inter);
        let chain = vec![leaf.clone(), inter.der().clone()];
        for version in [&TLS12, &TLS13] {
            for (record, depth) in [(tlsa(3, 1, 1, &leaf), 0), (tlsa(2, 0, 1, inter.der()), 1)] {
                let (verifier, mut c) = client(std::slice::from_ref(&record), version);
                let mut s = server(chain.clone(), &key);
                handshake(&mut c, &mut s).unwrap();
                let v = verifier.verified().expect("verified after the handshake");
                assert_eq!((v.record(), v.depth()), (&record, depth));
                let anchor = [AnchorSource::Leaf, AnchorSource::Chain][depth];
                assert_eq!(v.anchor(), anchor);
                assert_eq!(verifier.outcome(), Some(Ok(v)));
                assert_eq!(c.protocol_version(), Some(version.version));
            }
        }
    }

    #[test]
    fn a_certificate_that_does_not_match_aborts_the_handshake() {
        let root = ca("Root", None);
        let (leaf, key) = Leaf::default().issue(&root);
        let (other, _) = Leaf::default().issue(&root);
        let (verifier, mut c) = client(&[tlsa(3, 1, 1, &other)], &TLS13);
        let mut s = server(vec![leaf], &key);
        let err = handshake(&mut c, &mut s).unwrap_err();
        let Error::InvalidCertificate(CertificateError::Other(other)) = &err else {
            panic!("{err:?}")
        };
        assert!(
            other.to_string().contains("no usable TLSA record matches"),
            "{other}"
        );
        assert!(matches!(
            verifier.outcome(),
            Some(Err(VerifyError::NoMatch { .. }))
        ));
        assert!(verifier.verified().is_none());
    }

    #[test]
    fn the_server_must_hold_the_private_key() {
        // The attacker replays the genuine certificate but signs with its own key.
        let root = ca("Root", None);
        let (leaf, _genuine_key) = Leaf::default().issue(&root);
        let attacker_key = rcgen::KeyPair::generate().unwrap();
        for version in [&TLS12, &TLS13] {
            let (verifier, mut c) = client(&[tlsa(3, 1, 1, &leaf)], version);
            let mut s = server(vec![leaf.clone()], &attacker_key);
            let err = handshake(&mut c, &mut s).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidCertificate(CertificateError::BadSignature)
                ),
                "{err:?}"
            );
            // The certificate itself matched, but the handshake signature did not: no proof
            // of authentication may be handed out for this connection.
            assert_eq!(verifier.verified(), None, "{version:?}");
            assert!(
                !matches!(verifier.outcome(), Some(Ok(_))),
                "{:?}",
                verifier.outcome()
            );
        }
    }

    #[test]
    fn a_matching_certificate_alone_proves_nothing() {
        // rustls offers no way to make a handshake signature outside a handshake, so the
        // release of the proof is tested by the handshakes above and below; here, that the
        // certificate check alone does not release it, and that a new check starts over.
        let root = ca("Root", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let (other, _) = Leaf::default().issue(&root);
        let auth = Authenticator::smtp(&[tlsa(3, 1, 1, &leaf)], vec![]);
        let verifier =
            DaneServerVerifier::new(auth, default_provider().signature_verification_algorithms);
        let sni = ServerName::try_from("mx.example.test").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &sni, &[], UnixTime::now())
            .unwrap();
        assert_eq!((verifier.verified(), verifier.outcome()), (None, None));
        verifier
            .verify_server_cert(&other, &[], &sni, &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(verifier.verified(), None);
        assert!(matches!(
            verifier.outcome(),
            Some(Err(VerifyError::NoMatch { .. }))
        ));
    }

    #[test]
    fn client_config_helper_uses_this_verifier() {
        let root = ca("Root", None);
        let (leaf, key) = Leaf::default().issue(&root);
        let auth = Authenticator::smtp(&[tlsa(3, 0, 1, &leaf)], vec![]);
        let provider = Arc::new(default_provider());
        let verifier = DaneServerVerifier::new(auth, provider.signature_verification_algorithms);
        let config = verifier.client_config(provider).unwrap();
        let sni = ServerName::try_from("mx.example.test").unwrap();
        let mut c = ClientConnection::new(Arc::new(config), sni).unwrap();
        let mut s = server(vec![leaf], &key);
        handshake(&mut c, &mut s).unwrap();
        assert!(verifier.verified().is_some());
    }
}
