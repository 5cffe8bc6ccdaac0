//! MTA-STS next to DANE (RFC 8461): what a domain publishes (the `_mta-sts` TXT record, §3.1;
//! the policy, §3.2 and §3.3; the `_smtp._tls` TLS-RPT record, RFC 8460 §3), and whether its
//! MX hosts' certificates pass PKIX for their names (§4.2), judged on the chain the STARTTLS
//! probe already captured.
//!
//! Unlike a sending MTA (the `sts` crate's [`sts::Sts`]), a check caches nothing: it reports
//! what the domain publishes *now*, and a failure is a finding, not a reason to fall back on
//! a policy seen before.

use std::sync::Arc;
use std::time::Duration;

use dane::pki_types::{CertificateDer, ServerName, UnixTime};
use dns::{DnsName, Resolver};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use serde::Serialize;
use sts::{
    DiscoveryError, Fetcher, Mode, Policy, ResolverAddresses, ResolverTxt, StsRecord, TlsRptRecord,
    TxtAnswer, TxtResolver,
};

/// Why PKIX checks cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkixError {
    /// The verifier refused the trust anchors (e.g. none at all).
    #[error("PKIX verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// The policy fetcher's TLS settings could not be built.
    #[error("MTA-STS policy fetcher: {0}")]
    Fetcher(#[from] rustls::Error),
    /// The trust anchors cannot be loaded: a bad CA file, or none at all.
    #[error(transparent)]
    Trust(#[from] sts::trust::TrustError),
}

/// PKIX trust for MTA-STS: the anchors that authenticate both the policy host (RFC 8461 §3.3)
/// and the MX hosts (§4.2), e.g. the system's plus a `--ca-file`.
#[derive(Clone)]
pub struct Pkix {
    verifier: Arc<WebPkiServerVerifier>,
    fetcher: Fetcher,
}

impl std::fmt::Debug for Pkix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkix")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl Pkix {
    /// Trusts `roots`, verifying signatures with `provider`; policy fetches with the defaults
    /// of [`Fetcher`] (port 443, one minute, 64 KiB).
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, PkixError> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider).build()?;
        Ok(Self {
            verifier,
            fetcher: Fetcher::new(roots)?,
        })
    }

    /// Trusts the system's roots plus every certificate of the PEM file `ca_file`
    /// (`--ca-file`). An error for a bad file, or when there is no anchor at all.
    pub fn load(
        ca_file: Option<&std::path::Path>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, PkixError> {
        Self::new(Arc::new(sts::trust::roots(ca_file)?), provider)
    }

    /// The time a whole policy fetch may take.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetcher = self.fetcher.with_timeout(timeout);
        self
    }

    /// Whether `chain` (leaf first) is valid for `host` at `when`: it chains to a trusted
    /// anchor, is within its validity period, and names `host` in a subjectAltName dNSName,
    /// a `*` matching one left-most label (RFC 8461 §4.2, RFC 6125). The error says why not.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        host: &DnsName,
        when: UnixTime,
    ) -> Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no certificate presented".to_owned())?;
        let name = ServerName::try_from(host.as_str())
            .map_err(|e| format!("{host} cannot be a certificate name: {e}"))?;
        self.verifier
            .verify_server_cert(leaf, intermediates, &name, &[], when)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// What a check found at a domain's MTA-STS names (PRODUCT.md `mta_sts.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StsStatus {
    /// A TXT record and a valid policy behind it.
    Valid,
    /// No `v=STSv1` TXT record: the domain does not publish MTA-STS.
    Absent,
    /// The TXT record or the policy is invalid (RFC 8461 §3.1, §3.2): senders use no policy.
    Invalid,
    /// The TXT lookup failed, or the policy could not be fetched (RFC 8461 §3.3), PKIX
    /// failures of the policy host included.
    FetchFailed,
    /// A TXT record, but the policy was not fetched (`--no-connect`, or no trust anchors).
    NotFetched,
}

impl StsStatus {
    /// As in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StsStatus::Valid => "valid",
            StsStatus::Absent => "absent",
            StsStatus::Invalid => "invalid",
            StsStatus::FetchFailed => "fetch-failed",
            StsStatus::NotFetched => "not-fetched",
        }
    }
}

impl std::fmt::Display for StsStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain's MTA-STS state (PRODUCT.md `check --json` `mta_sts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StsReport {
    /// `valid`, `absent`, `invalid`, `fetch-failed` or `not-fetched`.
    pub status: StsStatus,
    /// The TXT record's `id`, when there is one valid record.
    pub txt_id: Option<String>,
    /// The policy's mode, when a valid policy was fetched.
    pub mode: Option<Mode>,
    /// The policy's `mx` patterns.
    pub mx: Vec<String>,
    /// The policy's `max_age`, seconds.
    pub max_age: Option<u32>,
    /// The TLS-RPT report destinations (RFC 8460 §3), when one valid record is published.
    pub tls_rpt: Option<Vec<String>>,
    /// What is wrong with the TLS-RPT record, when it is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_rpt_error: Option<String>,
    /// Why the status is not `valid` or `absent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The TLS-RPT result type of that failure (RFC 8460 §4.3.2.2): `sts-policy-fetch-error`,
    /// `sts-policy-invalid` or `sts-webpki-invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_type: Option<&'static str>,
    /// The policy itself, for the findings.
    #[serde(skip)]
    pub policy: Option<Policy>,
}

impl StsReport {
    fn new(status: StsStatus) -> Self {
        Self {
            status,
            txt_id: None,
            mode: None,
            mx: Vec::new(),
            max_age: None,
            tls_rpt: None,
            tls_rpt_error: None,
            error: None,
            result_type: None,
            policy: None,
        }
    }

    fn failed(mut self, status: StsStatus, error: DiscoveryError) -> Self {
        self.status = status;
        self.result_type = error.result_type().map(|r| r.as_str());
        self.error = Some(error.to_string());
        self
    }

    /// The policy senders apply, when it asks for something: mode `enforce` or `testing`.
    pub fn active_policy(&self) -> Option<&Policy> {
        self.policy.as_ref().filter(|p| p.mode() != Mode::None)
    }
}

/// A resolver borrowed for the `sts` crate's lookups, which want to own theirs.
struct Borrowed<'a, R>(&'a R);

impl<R: Resolver> Resolver for Borrowed<'_, R> {
    fn lookup(
        &self,
        name: &DnsName,
        rtype: dns::RecordType,
    ) -> impl std::future::Future<Output = dns::Lookup> + Send {
        self.0.lookup(name, rtype)
    }
}

/// The MTA-STS state of `domain`: its TXT record (RFC 8461 §3.1), then, with `pkix`, the
/// policy over HTTPS (§3.3); its TLS-RPT record (RFC 8460 §3) either way.
pub async fn discover<R: Resolver>(
    resolver: &R,
    domain: &DnsName,
    pkix: Option<&Pkix>,
) -> StsReport {
    let txt = ResolverTxt(Arc::new(Borrowed(resolver)));
    let (mut report, tls_rpt) = futures_util::join!(
        policy_state(&txt, resolver, domain, pkix),
        tls_rpt_state(&txt, domain)
    );
    match tls_rpt {
        Ok(rua) => report.tls_rpt = rua,
        Err(e) => report.tls_rpt_error = Some(e),
    }
    report
}

async fn policy_state<R: Resolver>(
    txt: &ResolverTxt<Borrowed<'_, R>>,
    resolver: &R,
    domain: &DnsName,
    pkix: Option<&Pkix>,
) -> StsReport {
    let report = StsReport::new(StsStatus::Absent);
    // A name too long to exist has no records.
    let Ok(name) = format!("_mta-sts.{domain}").parse::<DnsName>() else {
        return report;
    };
    let record = match txt.txt(&name).await {
        TxtAnswer::NoRecords => return report,
        TxtAnswer::Failed(failure) => {
            return report.failed(
                StsStatus::FetchFailed,
                DiscoveryError::TxtLookup { name, failure },
            );
        }
        TxtAnswer::Records(records) => match StsRecord::select(&records) {
            Ok(Some(record)) => record,
            Ok(None) => return report,
            Err(e) => return report.failed(StsStatus::Invalid, e.into()),
        },
    };
    let mut report = StsReport {
        txt_id: Some(record.id.to_string()),
        ..StsReport::new(StsStatus::NotFetched)
    };
    let Some(pkix) = pkix else {
        return report;
    };
    let addresses = ResolverAddresses(Arc::new(Borrowed(resolver)));
    let body = match pkix.fetcher.fetch(domain, &addresses).await {
        Ok(body) => body,
        Err(e) => return report.failed(StsStatus::FetchFailed, e.into()),
    };
    match Policy::parse(&body, record.id) {
        Ok(policy) => {
            report.status = StsStatus::Valid;
            report.mode = Some(policy.mode());
            report.mx = policy.mx().iter().map(ToString::to_string).collect();
            report.max_age = Some(policy.max_age());
            report.policy = Some(policy);
            report
        }
        Err(e) => report.failed(StsStatus::Invalid, e.into()),
    }
}

/// The TLS-RPT destinations of `domain` (`Ok(None)`: no record), or why its record is unusable.
async fn tls_rpt_state<R: Resolver>(
    txt: &ResolverTxt<Borrowed<'_, R>>,
    domain: &DnsName,
) -> Result<Option<Vec<String>>, String> {
    let Ok(name) = format!("_smtp._tls.{domain}").parse::<DnsName>() else {
        return Ok(None);
    };
    match txt.txt(&name).await {
        TxtAnswer::NoRecords => Ok(None),
        TxtAnswer::Failed(f) => Err(format!("TXT lookup of {name} failed: {f}")),
        TxtAnswer::Records(records) => match TlsRptRecord::select(&records) {
            Ok(record) => Ok(record.map(|r| r.rua.iter().map(ToString::to_string).collect())),
            Err(e) => Err(format!("{name}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns::{Outcome, Record, RecordType, Status, testing};

    /// TXT answers from a table; everything else a secure NODATA.
    struct Txt(Vec<(&'static str, Status, Outcome)>);

    impl Resolver for Txt {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> dns::Lookup {
            let (status, outcome) = self
                .0
                .iter()
                .find(|(n, _, _)| rtype == RecordType::Txt && *n == name.as_str())
                .map_or((Status::Secure, Outcome::NoData), |(_, s, o)| {
                    (*s, o.clone())
                });
            testing::lookup(name.clone(), rtype, status, outcome, vec![], 60)
        }
    }

    fn txt(texts: &[&str]) -> Outcome {
        Outcome::Records(
            texts
                .iter()
                .map(|t| Record::Txt(t.as_bytes().to_vec()))
                .collect(),
        )
    }

    async fn state(zone: Vec<(&'static str, Status, Outcome)>) -> StsReport {
        discover(&Txt(zone), &"example.test".parse().unwrap(), None).await
    }

    #[tokio::test]
    async fn no_record_is_absent_and_other_txt_records_do_not_count() {
        let r = state(vec![]).await;
        assert_eq!(
            (r.status, r.txt_id, r.tls_rpt),
            (StsStatus::Absent, None, None)
        );
        let r = state(vec![(
            "_mta-sts.example.test",
            Status::Insecure,
            txt(&["google-site-verification=x"]),
        )])
        .await;
        assert_eq!(r.status, StsStatus::Absent);
    }

    #[tokio::test]
    async fn a_record_without_trust_anchors_is_reported_unfetched_with_its_id() {
        let r = state(vec![
            (
                "_mta-sts.example.test",
                Status::Insecure,
                txt(&["v=STSv1; id=20260101"]),
            ),
            (
                "_smtp._tls.example.test",
                Status::Secure,
                txt(&["v=TLSRPTv1; rua=mailto:r@example.test"]),
            ),
        ])
        .await;
        assert_eq!(r.status, StsStatus::NotFetched);
        assert_eq!(r.txt_id.as_deref(), Some("20260101"));
        assert_eq!(r.tls_rpt, Some(vec!["mailto:r@example.test".to_owned()]));
        assert!(r.policy.is_none() && r.error.is_none());
    }

    #[tokio::test]
    async fn two_records_are_invalid_and_a_bogus_answer_a_lookup_failure() {
        let r = state(vec![(
            "_mta-sts.example.test",
            Status::Secure,
            txt(&["v=STSv1; id=a", "v=STSv1; id=b"]),
        )])
        .await;
        assert_eq!(r.status, StsStatus::Invalid);
        assert_eq!(r.result_type, Some("sts-policy-invalid"));
        assert!(r.error.is_some());
        let r = state(vec![(
            "_mta-sts.example.test",
            Status::Bogus,
            txt(&["v=STSv1; id=a"]),
        )])
        .await;
        assert_eq!(r.status, StsStatus::FetchFailed);
        assert_eq!(r.result_type, Some("sts-policy-fetch-error"));
    }

    #[tokio::test]
    async fn an_invalid_tls_rpt_record_is_reported_as_such() {
        let r = state(vec![(
            "_smtp._tls.example.test",
            Status::Secure,
            txt(&["v=TLSRPTv1; rua=ftp://x"]),
        )])
        .await;
        assert_eq!(r.tls_rpt, None);
        assert!(r.tls_rpt_error.is_some(), "{r:?}");
    }

    #[test]
    fn pkix_needs_anchors_and_a_chain() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(matches!(
            Pkix::new(Arc::new(RootCertStore::empty()), provider.clone()),
            Err(PkixError::Verifier(_))
        ));
        let (roots, _) = sts::trust::system_roots();
        if roots.is_empty() {
            return;
        }
        let pkix = Pkix::new(Arc::new(roots), provider).unwrap();
        let host: DnsName = "mx.example.test".parse().unwrap();
        assert_eq!(
            pkix.verify(&[], &host, UnixTime::now()),
            Err("no certificate presented".to_owned())
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(pkix.verify(&[garbage], &host, UnixTime::now()).is_err());
    }
}
