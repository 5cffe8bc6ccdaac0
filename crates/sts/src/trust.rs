//! The PKIX trust anchors a policy fetch verifies the policy host against (RFC 8461 §3.3: the
//! certificate must chain to a trusted root and be valid for `mta-sts.<domain>`): the
//! system's roots, plus extra anchors from a PEM file (a private CA in tests, `--ca-file`).

use std::io;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The PEM file cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The PEM file is malformed.
    #[error("{}: malformed PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// The PEM file holds no certificate.
    #[error("{}: no CERTIFICATE in the file", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the file cannot be a trust anchor (not a parsable X.509 certificate).
    #[error("{}: certificate {index} is not a usable trust anchor: {source}", path.display())]
    BadAnchor {
        /// The file.
        path: PathBuf,
        /// Its position among the file's certificates, from 0.
        index: usize,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// Neither the system nor a file gave a single trust anchor: every fetch would fail.
    #[error(
        "no trust anchors: the system store is empty or unreadable ({system_errors} errors) and no CA file was given"
    )]
    NoAnchors {
        /// How many errors loading the system store reported.
        system_errors: usize,
    },
}

/// Adds every certificate of the PEM file `path` to `store` as a trust anchor; how many.
/// A file without certificates, or with one that cannot be an anchor, is an error: a
/// `--ca-file` that silently adds nothing would only show up as failed fetches.
pub fn add_pem_file(store: &mut RootCertStore, path: &Path) -> Result<usize, TrustError> {
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TrustError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificates {
            path: path.to_owned(),
        });
    }
    let count = certs.len();
    for (index, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|source| TrustError::BadAnchor {
            path: path.to_owned(),
            index,
            source,
        })?;
    }
    Ok(count)
}

/// The system's trust anchors (Debian: `/etc/ssl/certs`, through `rustls-native-certs`) and
/// how many errors loading them reported; unparsable ones are skipped.
pub fn system_roots() -> (RootCertStore, usize) {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    (store, native.errors.len())
}

/// The anchors for policy fetches: the system's, plus those of `ca_file` when given. An
/// error when the file is bad, or when the result is empty.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TrustError> {
    let (mut store, system_errors) = system_roots();
    if let Some(path) = ca_file {
        add_pem_file(&mut store, path)?;
    }
    if store.is_empty() {
        return Err(TrustError::NoAnchors { system_errors });
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use danemta_lab::pki::TestCa;

    use super::*;

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("danemta-sts-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_pem_file_adds_its_certificates() {
        let (a, b) = (TestCa::new("A").unwrap(), TestCa::new("B").unwrap());
        let file = TempFile::new("two.pem", &format!("{}{}", a.cert_pem(), b.cert_pem()));
        let mut store = RootCertStore::empty();
        assert_eq!(add_pem_file(&mut store, &file.0).unwrap(), 2);
        assert_eq!(store.len(), 2);
        let with_system = roots(Some(&file.0)).unwrap();
        assert!(with_system.len() >= 2);
    }

    #[test]
    fn bad_pem_files_are_errors() {
        let mut store = RootCertStore::empty();
        let missing = std::env::temp_dir().join("danemta-sts-no-such-file.pem");
        assert!(matches!(
            add_pem_file(&mut store, &missing),
            Err(TrustError::Read { .. })
        ));
        let empty = TempFile::new("empty.pem", "just text\n");
        assert!(matches!(
            add_pem_file(&mut store, &empty.0),
            Err(TrustError::NoCertificates { .. })
        ));
        let garbage = TempFile::new(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(
            add_pem_file(&mut store, &garbage.0),
            Err(TrustError::BadAnchor { index: 0, .. })
        ));
        let broken = TempFile::new("broken.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
        assert!(matches!(
            add_pem_file(&mut store, &broken.0),
            Err(TrustError::Pem { .. })
        ));
        assert!(roots(Some(&missing)).is_err());
        assert!(store.is_empty());
    }
}
