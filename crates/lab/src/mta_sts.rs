//! MTA-STS domains for tests (RFC 8461): a private CA, its PEM file for `--ca-file`, one
//! HTTPS server publishing the policy of several domains, the DNS records each domain needs,
//! and MX host certificates that pass or fail PKIX (RFC 8461 §4.2).
//!
//! * [`MtaSts::start`] makes a private CA ([`MtaSts::ca`]), writes its certificate to
//!   [`MtaSts::ca_file`], and starts an [`HttpsServer`] on a claimed lab address, port 443
//!   ([`MtaSts::addr`]), serving `https://mta-sts.<domain>/.well-known/mta-sts.txt` for every
//!   [`StsDomain`] with a certificate for `mta-sts.<domain>` from that CA, chosen by SNI
//!   (RFC 8461 §3.3).
//! * [`MtaSts::zone_records`] gives the records a domain publishes: `_mta-sts` TXT (RFC 8461
//!   §3.1), the policy host's address, and `_smtp._tls` TXT (RFC 8460 §3) when asked for. The
//!   free functions [`sts_txt`], [`policy_host_address`] and [`tls_rpt_txt`] write them one by
//!   one, e.g. a TXT record whose policy host does not exist.
//! * [`MtaSts::mx_cert`] signs an MX host certificate with the CA (PKIX valid for the names
//!   given); [`MtaSts::foreign_cert`] with another CA (PKIX fails: unknown issuer).
//!
//! Owner names are absolute (`_mta-sts.example.test.`), so the lines fit in any zone that
//! holds the names, the domain's own or a parent's.
//!
//! ```no_run
//! use danemta_lab::mta_sts::{MtaSts, StsDomain};
//! use danemta_lab::{Lab, Receiver, ReceiverSpec, ZoneSpec};
//! // The policy host first: the zones need its address.
//! let sts = MtaSts::start([
//!     StsDomain::enforce("good.test", &["mx.good.test"]).tls_rpt("mailto:tlsrpt@good.test"),
//!     StsDomain::testing("trial.test", &["mx.trial.test"]).id("20260101"),
//! ])?;
//! // An MX host whose certificate chains to the private CA and names it.
//! let rx = Receiver::start(
//!     ReceiverSpec::new("mx.good.test", &["good.test"]).with_tls(&sts.mx_cert(&["mx.good.test"])?),
//! )?;
//! let zone = format!("@ MX 10 mx\nmx A {}\n{}", rx.addr().ip(), sts.zone_records("good.test").unwrap());
//! let lab = Lab::builder().zone(ZoneSpec::secure("good.test", zone)).start()?;
//! // … run `danemta check good.test --ca-file <sts.ca_file()>` against lab.validating_resolver() …
//! assert!(sts.ca_file().is_file());
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! Dropping the [`MtaSts`] stops the server and removes the CA file's directory.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::LabError;
use crate::https::{HttpsServer, HttpsSpec, Reply};
use crate::pki::{TestCa, TestCert};

/// The path of the policy file on the policy host (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// The `max_age` of generated policies: one day.
pub const DEFAULT_MAX_AGE: u32 = 86_400;
/// The TXT `id` of a domain unless [`StsDomain::id`] sets another.
pub const DEFAULT_ID: &str = "1";

/// A policy file (RFC 8461 §3.2): `version: STSv1`, `mode`, one `mx` line per pattern and
/// `max_age`, each line ending in CRLF. `mode` is written as given, so invalid policies can be
/// made too.
pub fn policy_text(mode: &str, mx: &[&str], max_age: u32) -> String {
    let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
    for pattern in mx {
        text.push_str(&format!("mx: {pattern}\r\n"));
    }
    text.push_str(&format!("max_age: {max_age}\r\n"));
    text
}

/// `_mta-sts.<domain>. TXT "v=STSv1; id=<id>"` and a newline: the record announcing a
/// policy (RFC 8461 §3.1).
pub fn sts_txt(domain: &str, id: &str) -> String {
    format!("_mta-sts.{}. TXT \"v=STSv1; id={id}\"\n", fqdn(domain))
}

/// `mta-sts.<domain>. A <ip>` (AAAA for an IPv6 address) and a newline: where the policy host
/// is (RFC 8461 §3.3).
pub fn policy_host_address(domain: &str, ip: IpAddr) -> String {
    let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
    format!("mta-sts.{}. {rtype} {ip}\n", fqdn(domain))
}

/// `_smtp._tls.<domain>. TXT "v=TLSRPTv1; rua=<rua>"` and a newline: where TLS reports go
/// (RFC 8460 §3). `rua` is written as given (`mailto:tlsrpt@example.test`).
pub fn tls_rpt_txt(domain: &str, rua: &str) -> String {
    format!(
        "_smtp._tls.{}. TXT \"v=TLSRPTv1; rua={rua}\"\n",
        fqdn(domain)
    )
}

/// `domain` without a trailing dot, lower-case.
fn fqdn(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// One domain [`MtaSts`] serves a policy for: what its policy host answers, its TXT `id`, an
/// optional TLS-RPT address, and optionally another certificate for its policy host.
#[derive(Clone, Debug)]
pub struct StsDomain {
    domain: String,
    id: String,
    reply: Reply,
    tls_rpt: Option<String>,
    policy_cert: Option<TestCert>,
}

impl StsDomain {
    /// A domain with a valid `enforce` policy listing `mx` (RFC 8461 §5: senders deliver only
    /// to those hosts, and only over PKIX-authenticated TLS).
    pub fn enforce(domain: &str, mx: &[&str]) -> Self {
        Self::serving(
            domain,
            Reply::text(&policy_text("enforce", mx, DEFAULT_MAX_AGE)),
        )
    }

    /// A domain with a valid `testing` policy listing `mx` (failures reported, not enforced).
    pub fn testing(domain: &str, mx: &[&str]) -> Self {
        Self::serving(
            domain,
            Reply::text(&policy_text("testing", mx, DEFAULT_MAX_AGE)),
        )
    }

    /// A domain with a `mode: none` policy (a withdrawn policy, RFC 8461 §8.3).
    pub fn mode_none(domain: &str) -> Self {
        Self::serving(
            domain,
            Reply::text(&policy_text("none", &[], DEFAULT_MAX_AGE)),
        )
    }

    /// A domain whose policy host answers `reply`: a policy of your own
    /// (`Reply::text(&policy_text(…))`), an error status, a redirect, a stall.
    pub fn serving(domain: &str, reply: Reply) -> Self {
        Self {
            domain: fqdn(domain),
            id: DEFAULT_ID.to_owned(),
            reply,
            tls_rpt: None,
            policy_cert: None,
        }
    }

    /// The TXT record's `id` (1 to 32 letters and digits; not checked, to allow invalid ones).
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }

    /// Publishes a TLS-RPT record sending reports to `rua` (e.g. `mailto:tlsrpt@example.test`).
    pub fn tls_rpt(mut self, rua: &str) -> Self {
        self.tls_rpt = Some(rua.to_owned());
        self
    }

    /// Serves `cert` for `mta-sts.<domain>` instead of one from the private CA (e.g. one of
    /// [`MtaSts::foreign_cert`]: the policy fetch then fails PKIX, TLS-RPT
    /// `sts-webpki-invalid`).
    pub fn policy_cert(mut self, cert: TestCert) -> Self {
        self.policy_cert = Some(cert);
        self
    }

    /// The domain, lower-case, without a trailing dot.
    pub fn name(&self) -> &str {
        &self.domain
    }

    /// The policy host, `mta-sts.<domain>`.
    pub fn policy_host(&self) -> String {
        format!("mta-sts.{}", self.domain)
    }
}

/// A private CA and the policy host of several MTA-STS domains. See the
/// [module documentation](self).
pub struct MtaSts {
    ca: TestCa,
    other_ca: TestCa,
    dir: PathBuf,
    ca_file: PathBuf,
    server: HttpsServer,
    domains: BTreeMap<String, StsDomain>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("addr", &self.server.addr())
            .field("ca_file", &self.ca_file)
            .field("domains", &self.domains.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MtaSts {
    /// Makes the private CA, writes its PEM file, and starts the policy host of `domains` on a
    /// claimed lab address `127.0.4x.y:443`. A domain given twice: the last one counts.
    pub fn start(domains: impl IntoIterator<Item = StsDomain>) -> Result<Self, LabError> {
        let ca = TestCa::new("danemta lab MTA-STS CA")?;
        let other_ca = TestCa::new("danemta lab foreign CA")?;
        let domains: BTreeMap<String, StsDomain> =
            domains.into_iter().map(|d| (d.domain.clone(), d)).collect();
        let mut spec = HttpsSpec::new(SocketAddr::from(([0, 0, 0, 0], 443)));
        for d in domains.values() {
            let host = d.policy_host();
            let cert = match &d.policy_cert {
                Some(cert) => cert.clone(),
                None => TestCert::ca_signed(&[&host], &ca, false)?,
            };
            spec = spec
                .host(&host, &cert)
                .route(&host, POLICY_PATH, d.reply.clone());
        }
        let dir = crate::process::instance_dir("sts")?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem())
            .map_err(|e| LabError::io(format!("writing {}", ca_file.display()), e))?;
        let server = match HttpsServer::start(spec) {
            Ok(server) => server,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Self {
            ca,
            other_ca,
            dir,
            ca_file,
            server,
            domains,
        })
    }

    /// The private CA: it signs the policy hosts' certificates and [`MtaSts::mx_cert`]s.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate as a PEM file, for `--ca-file` (or `[delivery] ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Where the policy host listens (port 443).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The HTTPS server: what clients asked ([`HttpsServer::requests`]), or
    /// [`HttpsServer::set_reply`] for routes of your own.
    pub fn server(&self) -> &HttpsServer {
        &self.server
    }

    /// Serves `reply` as the policy of `domain` from now on (a new policy, a broken one); the
    /// domain must be one of those given to [`MtaSts::start`] (its certificate is chosen
    /// then). Change the TXT `id` too if clients should fetch it again (RFC 8461 §3.1).
    pub fn set_policy(&self, domain: &str, reply: Reply) {
        let host = format!("mta-sts.{}", fqdn(domain));
        self.server.set_reply(&host, POLICY_PATH, reply);
    }

    /// A leaf for `names` signed by the private CA, the CA certificate after it in the chain:
    /// PKIX-valid for those names under [`MtaSts::ca_file`] (RFC 8461 §4.2). Its `3 1 1` and
    /// `2 x 1` TLSA records are [`pki::tlsa_3_1_1`](crate::pki::tlsa_3_1_1) and
    /// [`pki::tlsa_2_x_1`](crate::pki::tlsa_2_x_1) of [`MtaSts::ca`].
    pub fn mx_cert(&self, names: &[&str]) -> Result<TestCert, LabError> {
        TestCert::ca_signed(names, &self.ca, true)
    }

    /// A leaf for `names` signed by another CA, not in [`MtaSts::ca_file`]: PKIX fails
    /// (unknown issuer), whatever the names.
    pub fn foreign_cert(&self, names: &[&str]) -> Result<TestCert, LabError> {
        TestCert::ca_signed(names, &self.other_ca, true)
    }

    /// The records `domain` publishes, one per line with absolute owner names: its `_mta-sts`
    /// TXT record, the policy host's address ([`MtaSts::addr`]), and its `_smtp._tls` TXT
    /// record when [`StsDomain::tls_rpt`] was set. `None` for a domain not given to
    /// [`MtaSts::start`].
    pub fn zone_records(&self, domain: &str) -> Option<String> {
        let d = self.domains.get(&fqdn(domain))?;
        let mut records = sts_txt(&d.domain, &d.id);
        records.push_str(&policy_host_address(&d.domain, self.addr().ip()));
        if let Some(rua) = &d.tls_rpt {
            records.push_str(&tls_rpt_txt(&d.domain, rua));
        }
        Some(records)
    }

    /// The domains served, lower-case.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }
}

impl Drop for MtaSts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_policies_are_written_as_the_rfcs_say() {
        assert_eq!(
            policy_text("enforce", &["mx.a.test", "*.b.test"], 600),
            "version: STSv1\r\nmode: enforce\r\nmx: mx.a.test\r\nmx: *.b.test\r\nmax_age: 600\r\n"
        );
        assert_eq!(
            sts_txt("A.test.", "20260101"),
            "_mta-sts.a.test. TXT \"v=STSv1; id=20260101\"\n"
        );
        assert_eq!(
            policy_host_address("a.test", IpAddr::from([127, 0, 40, 1])),
            "mta-sts.a.test. A 127.0.40.1\n"
        );
        assert_eq!(
            policy_host_address("a.test", "::1".parse().unwrap()),
            "mta-sts.a.test. AAAA ::1\n"
        );
        assert_eq!(
            tls_rpt_txt("a.test", "mailto:r@a.test"),
            "_smtp._tls.a.test. TXT \"v=TLSRPTv1; rua=mailto:r@a.test\"\n"
        );
        let d = StsDomain::enforce("A.Test", &["mx.a.test"]).id("7");
        assert_eq!(
            (d.name(), d.policy_host().as_str()),
            ("a.test", "mta-sts.a.test")
        );
        assert_eq!(d.id, "7");
    }

    /// Whether `cert` is PKIX-valid for `name` under the file's anchors (rustls' verifier).
    fn pkix_valid(ca_file: &Path, cert: &TestCert, name: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca_file).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn the_ca_file_makes_mx_certs_valid_and_foreign_ones_not() {
        let sts = MtaSts::start([
            StsDomain::enforce("a.test", &["mx.a.test"]).tls_rpt("mailto:r@a.test"),
            StsDomain::testing("b.test", &["mx.b.test"]).id("9"),
        ])
        .unwrap();
        assert_eq!(sts.addr().port(), 443);
        assert_eq!(sts.domains().collect::<Vec<_>>(), ["a.test", "b.test"]);
        let records = sts.zone_records("A.test").unwrap();
        assert_eq!(
            records,
            format!(
                "{}{}{}",
                sts_txt("a.test", DEFAULT_ID),
                policy_host_address("a.test", sts.addr().ip()),
                tls_rpt_txt("a.test", "mailto:r@a.test")
            )
        );
        assert!(sts.zone_records("b.test").unwrap().contains("id=9"));
        assert!(!sts.zone_records("b.test").unwrap().contains("_smtp._tls"));
        assert!(sts.zone_records("c.test").is_none());

        let good = sts.mx_cert(&["mx.a.test"]).unwrap();
        assert!(pkix_valid(sts.ca_file(), &good, "mx.a.test"));
        assert!(!pkix_valid(sts.ca_file(), &good, "mx.b.test"), "wrong name");
        let foreign = sts.foreign_cert(&["mx.a.test"]).unwrap();
        assert!(!pkix_valid(sts.ca_file(), &foreign, "mx.a.test"));

        let dir = sts.ca_file().parent().unwrap().to_owned();
        drop(sts);
        assert!(!dir.exists(), "the CA file's directory is removed");
    }
}
