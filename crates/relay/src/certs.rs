//! The certificates the listeners offer: the `[[server.tls]]` chains (chosen by SNI, the
//! first for clients without it: RFC 7672 §8.1, PRODUCT.md rule 11), or, with none
//! configured, a self-signed certificate made at first start and kept in the spool, whose
//! `3 1 1` TLSA record the daemon logs so that it can be published at once.
//!
//! [`Certs`] is the rustls certificate resolver of every listener; [`Certs::reload`] swaps
//! the chains (SIGHUP) without restarting listeners: new handshakes get the new chains.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use dane::cert::CertInfo;
use dane::matching::record_for;
use dane::pki_types::CertificateDer;
use dane::{Matching, Selector, Tlsa, Usage};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use smtp::server::tls::{SniResolver, TlsError};

use crate::config::TlsChain;

/// Why the listeners' certificates cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A configured file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate cannot be written to the spool.
    #[error("{path}: cannot write the self-signed certificate: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate cannot be made.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A chain or key is unusable (`[[server.tls]]` entry numbers count from 1).
    #[error("[[server.tls]]: {0}")]
    Tls(#[from] TlsError),
    /// rustls refused the server configuration.
    #[error("TLS server configuration: {0}")]
    Config(String),
}

/// Where the chains come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `[[server.tls]]`.
    Configured(Vec<TlsChain>),
    /// The self-signed certificate in the spool (`DIR/tls/`), for this host name.
    SelfSigned {
        /// The spool directory.
        dir: PathBuf,
        /// The name the certificate is made for.
        hostname: String,
    },
}

/// The listeners' certificate resolver; see the module documentation.
#[derive(Debug)]
pub struct Certs {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<SniResolver>>,
    offered: RwLock<Arc<Vec<Offered>>>,
}

/// One chain the listeners offer, as the metrics and the own-TLSA check see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    /// The `chain` label of `danemta_tls_certificate_expiry_timestamp_seconds`: the
    /// certificate file as configured (`[[server.tls]] cert`), or `self-signed` for the
    /// certificate the daemon made itself.
    pub label: String,
    /// The certificates, leaf first, as sent in the handshake.
    pub certs: Vec<CertificateDer<'static>>,
    /// The earliest notAfter (Unix seconds) among them; `None` if none parses (rustls
    /// refused such a chain already, so only in theory).
    pub not_after: Option<u64>,
}

impl Offered {
    fn new(label: String, pem: &[u8]) -> Offered {
        use dane::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .collect();
        let not_after = certs
            .iter()
            .filter_map(|c| CertInfo::parse(c).ok())
            .map(|info| info.not_after())
            .min();
        Offered {
            label,
            certs,
            not_after,
        }
    }
}

/// The `chain` label of the self-signed certificate.
pub const SELF_SIGNED_LABEL: &str = "self-signed";

/// What loading found, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The files of the default chain.
    pub default_chain: PathBuf,
    /// Whether the self-signed certificate was made just now.
    pub made: bool,
    /// The `3 1 1` record of the default chain's leaf (DANE-EE, SPKI, SHA-256).
    pub tlsa: Option<Tlsa>,
    /// Every chain offered, the default first.
    pub offered: Vec<Offered>,
}

impl Certs {
    /// Loads the chains of `source` (making the self-signed certificate if it is missing).
    pub fn load(
        source: &Source,
        provider: Arc<CryptoProvider>,
    ) -> Result<(Certs, Loaded), CertError> {
        let (resolver, loaded) = resolver(source, &provider)?;
        Ok((
            Certs {
                provider,
                current: RwLock::new(Arc::new(resolver)),
                offered: RwLock::new(Arc::new(loaded.offered.clone())),
            },
            loaded,
        ))
    }

    /// Replaces the chains; on error the old ones stay.
    pub fn reload(&self, source: &Source) -> Result<Loaded, CertError> {
        let (resolver, loaded) = resolver(source, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(resolver);
        }
        if let Ok(mut offered) = self.offered.write() {
            *offered = Arc::new(loaded.offered.clone());
        }
        Ok(loaded)
    }

    /// The chains offered now, the default first.
    pub fn offered(&self) -> Arc<Vec<Offered>> {
        match self.offered.read() {
            Ok(o) => Arc::clone(&o),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// A rustls server configuration whose certificates come from `self` (TLS 1.2 and 1.3,
    /// no client certificates).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, CertError> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        current.choose(hello.server_name(), hello.signature_schemes())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn resolver(
    source: &Source,
    provider: &CryptoProvider,
) -> Result<(SniResolver, Loaded), CertError> {
    let (files, made) = match source {
        Source::Configured(chains) => (
            chains
                .iter()
                .map(|c| (c.cert.clone(), c.key.clone()))
                .collect::<Vec<_>>(),
            false,
        ),
        Source::SelfSigned { dir, hostname } => {
            let (cert, key, made) = self_signed(dir, hostname)?;
            (vec![(cert, key)], made)
        }
    };
    let mut pems = Vec::with_capacity(files.len());
    for (cert, key) in &files {
        pems.push((read(cert)?, read(key)?));
    }
    let slices: Vec<(&[u8], &[u8])> = pems
        .iter()
        .map(|(c, k)| (c.as_slice(), k.as_slice()))
        .collect();
    let resolver = SniResolver::from_pem(&slices, provider)?;
    let tlsa = pems.first().and_then(|(chain, _)| tlsa_3_1_1(chain));
    let offered = files
        .iter()
        .zip(&pems)
        .map(|((path, _), (chain, _))| {
            let label = match source {
                Source::Configured(_) => path.display().to_string(),
                Source::SelfSigned { .. } => SELF_SIGNED_LABEL.to_owned(),
            };
            Offered::new(label, chain)
        })
        .collect();
    Ok((
        resolver,
        Loaded {
            default_chain: files.first().map(|(c, _)| c.clone()).unwrap_or_default(),
            made,
            tlsa,
            offered,
        },
    ))
}

/// The `3 1 1` record (DANE-EE, SPKI, SHA-256: RFC 7671 §5.1's recommendation) of the first
/// certificate in a PEM chain.
pub fn tlsa_3_1_1(chain_pem: &[u8]) -> Option<Tlsa> {
    use dane::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(chain_pem).next()?.ok()?;
    let info = CertInfo::parse(&leaf).ok()?;
    record_for(Usage::DaneEe, Selector::Spki, Matching::Sha256, &info)
}

/// `DIR/tls/self-signed.pem` and `DIR/tls/self-signed.key`, made (ECDSA P-256, valid for
/// `hostname`, ten years: DANE-EE ignores validity, RFC 7671 §5.1) when missing. The key is
/// written mode 0600 before the certificate, each durably; `true` when made now.
fn self_signed(dir: &Path, hostname: &str) -> Result<(PathBuf, PathBuf, bool), CertError> {
    let tls_dir = dir.join("tls");
    let cert = tls_dir.join("self-signed.pem");
    let key = tls_dir.join("self-signed.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Write { path, source }
    };
    std::fs::create_dir_all(&tls_dir).map_err(write_err(&tls_dir))?;
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let certificate = params.self_signed(&key_pair)?;
    write_private(&key, key_pair.serialize_pem().as_bytes()).map_err(write_err(&key))?;
    write_private(&cert, certificate.pem().as_bytes()).map_err(write_err(&cert))?;
    Ok((cert, key, true))
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file, fsync and rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn the_self_signed_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("danemta-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = Source::SelfSigned {
            dir: dir.clone(),
            hostname: "relay.example.test".into(),
        };
        let (certs, first) = Certs::load(&source, provider()).unwrap();
        assert!(first.made);
        let record = first.tlsa.clone().unwrap();
        assert_eq!(
            record.to_string().split(' ').take(3).collect::<Vec<_>>(),
            ["3", "1", "1"]
        );
        let again = certs.reload(&source).unwrap();
        assert!(!again.made);
        assert_eq!(again.tlsa, Some(record));
        // The made certificate is offered as `self-signed`, valid for ten years.
        assert_eq!(again.offered.len(), 1);
        assert_eq!(again.offered[0].label, SELF_SIGNED_LABEL);
        let ten_years = 3650 * 86_400;
        let not_after = again.offered[0].not_after.unwrap();
        let now = time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .unsigned_abs();
        assert!(not_after.abs_diff(now + ten_years) < 86_400, "{not_after}");
        assert_eq!(*certs.offered(), again.offered);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/self-signed.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A PEM file holding `certs`, and one holding the leaf's key.
    fn write_chain(
        dir: &Path,
        name: &str,
        certs: &[&rcgen::Certificate],
        key: &rcgen::KeyPair,
    ) -> TlsChain {
        let pem: String = certs.iter().map(|c| c.pem()).collect();
        let cert = dir.join(format!("{name}-chain.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TlsChain {
            cert,
            key: key_path,
        }
    }

    fn cert_until(
        name: &str,
        not_after: time::OffsetDateTime,
        ca: bool,
        issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
    ) -> (rcgen::Certificate, rcgen::KeyPair, rcgen::CertificateParams) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = not_after;
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = match issuer {
            Some(issuer) => p.signed_by(&key, issuer).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        (cert, key, p)
    }

    #[test]
    fn configured_chains_are_offered_by_file_with_their_earliest_not_after() {
        let dir =
            std::env::temp_dir().join(format!("danemta-certs-offered-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let day = |d: i64| {
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
                + time::Duration::days(d)
        };
        // A CA expiring before its leaf: the chain's expiry is the CA's.
        let (ca_cert, ca_key, ca_params) = cert_until("Test CA", day(400), true, None);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let (leaf, leaf_key, _) = cert_until("relay.example.test", day(500), false, Some(&issuer));
        let (other, other_key, _) = cert_until("other.example.test", day(90), false, None);
        let first = write_chain(&dir, "first", &[&leaf, &ca_cert], &leaf_key);
        let second = write_chain(&dir, "second", &[&other], &other_key);
        let source = Source::Configured(vec![first.clone(), second.clone()]);
        let (_, loaded) = Certs::load(&source, provider()).unwrap();
        let got: Vec<_> = loaded
            .offered
            .iter()
            .map(|o| (o.label.clone(), o.certs.len(), o.not_after))
            .collect();
        let secs = |t: time::OffsetDateTime| Some(t.unix_timestamp().unsigned_abs());
        assert_eq!(
            got,
            [
                (first.cert.display().to_string(), 2, secs(day(400))),
                (second.cert.display().to_string(), 1, secs(day(90))),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_configured_file_is_named() {
        let source = Source::Configured(vec![TlsChain {
            cert: "/nonexistent/chain.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }]);
        let err = Certs::load(&source, provider()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/chain.pem"), "{err}");
    }
}
