//! Authenticating a presented certificate chain with a TLSA RRset (RFC 6698 §2.1.1,
//! RFC 7671 §5, RFC 7672 §3).
//!
//! The order of trial follows the strength of the binding: DANE-EE(3), then DANE-TA(2), then
//! (general profile only) PKIX-EE(1) and PKIX-TA(0). The first success wins; when nothing
//! succeeds, the failure that came closest to success is reported.

use std::cell::Cell;
use std::fmt;

use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::Serialize;
use webpki::{EndEntityCert, KeyUsage};

use crate::cert::{CertInfo, sequence_contents};
use crate::matching::{Profile, matches};
use crate::name::{ReferenceName, find_match, presented_names};
use crate::record::{Matching, Selector, Tlsa, Usage};

/// Where the certificate or key that a matching record names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnchorSource {
    /// The server's own certificate (DANE-EE or PKIX-EE).
    Leaf,
    /// A CA certificate the server sent.
    Chain,
    /// A certificate or bare public key carried whole in the TLSA record (`2 0 0`, `2 1 0`).
    Dns,
    /// A root of the caller's PKIX trust store (general profile, PKIX-TA).
    TrustStore,
}

/// Proof that a chain was authenticated by a TLSA record. Only [`Authenticator::verify`]
/// constructs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    record: Tlsa,
    depth: usize,
    anchor: AnchorSource,
    name: Option<ReferenceName>,
}

impl Verified {
    /// The TLSA record that matched.
    pub fn record(&self) -> &Tlsa {
        &self.record
    }

    /// The match depth in the verified chain, leaf = 0 (OpenSSL's `SSL_get0_dane_authority`).
    /// For a bare public key from DNS it is the depth of the certificate that key signed.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Where the matched certificate or key came from.
    pub fn anchor(&self) -> AnchorSource {
        self.anchor
    }

    /// The reference name the leaf was found valid for; `None` for DANE-EE, which checks no
    /// names (RFC 7672 §3.1.1).
    pub fn name(&self) -> Option<&ReferenceName> {
        self.name.as_ref()
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "matched {} {} at depth {}",
            usage_name(self.record.usage()),
            self.record,
            self.depth
        )?;
        if let Some(name) = &self.name {
            write!(f, ", certificate valid for {name}")?;
        }
        Ok(())
    }
}

/// Why a certification path did not verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathProblem {
    /// No issuer for some certificate among the chain and the anchors.
    UnknownIssuer,
    /// A signature does not verify with its issuer's key.
    BadSignature,
    /// A signature algorithm or key type that is not supported (or too weak).
    UnsupportedAlgorithm,
    /// A certificate's extended key usage excludes TLS server authentication.
    NotForServerAuth,
    /// A CA certificate used as the leaf, or a leaf used as a CA.
    WrongCertificateRole,
    /// The path verified, but to a trust anchor that is none of those the records named (a
    /// contract webpki keeps; reported rather than trusted if it ever did not).
    UnidentifiedAnchor,
    /// Anything else webpki rejected.
    Other(String),
}

impl PathProblem {
    fn from_webpki(e: &webpki::Error) -> Self {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::InvalidSignatureForPublicKey => Self::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Self::UnsupportedAlgorithm,
            E::RequiredEkuNotFoundContext(_) => Self::NotForServerAuth,
            E::CaUsedAsEndEntity | E::EndEntityUsedAsCa => Self::WrongCertificateRole,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer => {
                f.write_str("a certificate's issuer is neither in the chain nor the trust anchor")
            }
            Self::BadSignature => f.write_str("a certificate signature does not verify"),
            Self::UnsupportedAlgorithm => {
                f.write_str("unsupported or too weak signature algorithm or key")
            }
            Self::NotForServerAuth => {
                f.write_str("extended key usage does not allow TLS server authentication")
            }
            Self::WrongCertificateRole => {
                f.write_str("a CA certificate is used as leaf, or a leaf as CA")
            }
            Self::UnidentifiedAnchor => {
                f.write_str("the chain verified to a trust anchor that no record names")
            }
            Self::Other(s) => write!(f, "certificate rejected: {s}"),
        }
    }
}

/// Why a chain is not authenticated. Each variant carries the evidence an operator needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum VerifyError {
    /// The server sent no certificate.
    #[error("the server presented no certificate")]
    EmptyChain,
    /// No record of the RRset is usable in this profile (RFC 7672 §3.1.3, RFC 7671 §4). For
    /// SMTP this means TLS is still mandatory, but unauthenticated.
    #[error(
        "none of the {published} TLSA records is usable (only DANE-TA(2) and DANE-EE(3) with known selector and matching type are, RFC 7672 §3.1.3)"
    )]
    NoUsableRecords {
        /// How many records were published.
        published: usize,
    },
    /// The leaf certificate cannot be parsed.
    #[error("the certificate at depth {depth} cannot be parsed: {reason}")]
    BadCertificate {
        /// Its depth.
        depth: usize,
        /// The parser's message.
        reason: String,
    },
    /// No usable record matches any certificate or key of the chain.
    #[error(
        "no usable TLSA record matches the presented chain ({} certificates: {}); records tried: {}",
        chain.len(), chain.join(" <- "), list(records)
    )]
    NoMatch {
        /// The usable records.
        records: Vec<Tlsa>,
        /// Subjects of the presented certificates, leaf first.
        chain: Vec<String>,
    },
    /// A trust-anchor record matched, but the chain does not verify up to it.
    #[error(
        "{} record {record}{} matched, but the chain does not verify up to it: {problem}{}",
        usage_name(record.usage()),
        depth.map(|d| format!(" (depth {d})")).unwrap_or_default(),
        broken_at.map(|d| format!(" (at the certificate at depth {d})")).unwrap_or_default()
    )]
    ChainInvalid {
        /// The record.
        record: Tlsa,
        /// The depth of the certificate it matched, when known.
        depth: Option<usize>,
        /// The certificate where the path breaks, when it could be located.
        broken_at: Option<usize>,
        /// What is wrong.
        problem: PathProblem,
    },
    /// A certificate below the trust anchor is expired (RFC 7671 §5.2.1: DANE-TA checks
    /// validity; DANE-EE does not).
    #[error(
        "the certificate at depth {depth} ({subject}) expired at {not_after}, verification time {now}"
    )]
    Expired {
        /// Its depth.
        depth: usize,
        /// Its subject.
        subject: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
        /// The verification time, RFC 3339.
        now: String,
    },
    /// A certificate below the trust anchor is not yet valid.
    #[error(
        "the certificate at depth {depth} ({subject}) is not valid before {not_before}, verification time {now}"
    )]
    NotYetValid {
        /// Its depth.
        depth: usize,
        /// Its subject.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// The verification time, RFC 3339.
        now: String,
    },
    /// A record matched and the chain verified, but the leaf is not valid for any reference
    /// name (RFC 7672 §3.2.3).
    #[error(
        "{} record {record} matched at depth {depth}, but the certificate names [{}] match none of the reference names [{}]",
        usage_name(record.usage()), presented.join(", "), list(reference_names)
    )]
    NameMismatch {
        /// The record.
        record: Tlsa,
        /// Its match depth.
        depth: usize,
        /// The names tried.
        reference_names: Vec<ReferenceName>,
        /// The names the leaf presents (DNS SANs, or CNs when there are none).
        presented: Vec<String>,
    },
}

impl VerifyError {
    /// How close to success this failure came; the closest one is reported.
    fn closeness(&self) -> u8 {
        match self {
            Self::EmptyChain | Self::NoUsableRecords { .. } | Self::BadCertificate { .. } => 0,
            Self::NoMatch { .. } => 1,
            Self::ChainInvalid { .. } => 2,
            Self::Expired { .. } | Self::NotYetValid { .. } => 3,
            Self::NameMismatch { .. } => 4,
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The RFC 7218 acronym of a usage.
pub fn usage_name(u: Usage) -> String {
    match u {
        Usage::PkixTa => "PKIX-TA(0)".into(),
        Usage::PkixEe => "PKIX-EE(1)".into(),
        Usage::DaneTa => "DANE-TA(2)".into(),
        Usage::DaneEe => "DANE-EE(3)".into(),
        Usage::Unassigned(n) => format!("usage {n}"),
    }
}

fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Decides whether certificate chains are authenticated by one TLSA RRset for one set of
/// reference names: the DANE state of one connection.
#[derive(Clone, Debug)]
pub struct Authenticator {
    published: usize,
    records: Vec<Tlsa>,
    /// Certificates carried whole in `x 0 0` records, parsed once, with their anchor form.
    dns_certs: Vec<(Tlsa, CertInfo, Option<TrustAnchor<'static>>)>,
    names: Vec<ReferenceName>,
    profile: Profile,
    pkix_roots: Vec<(CertInfo, TrustAnchor<'static>)>,
    ee_name_checks: bool,
    algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
}

impl Authenticator {
    /// An authenticator under the SMTP profile of RFC 7672: DANE-TA and DANE-EE only, digest
    /// agility applied, no name or validity checks for DANE-EE.
    pub fn smtp(rrset: &[Tlsa], names: Vec<ReferenceName>) -> Self {
        Self::build(rrset, names, Profile::Smtp, Vec::new())
    }

    /// An authenticator under the general RFC 6698 profile: PKIX-TA and PKIX-EE records are
    /// honoured too, validated against `pkix_roots`. Roots that do not parse are skipped.
    pub fn general(
        rrset: &[Tlsa],
        names: Vec<ReferenceName>,
        pkix_roots: &[CertificateDer<'_>],
    ) -> Self {
        let roots = pkix_roots
            .iter()
            .filter_map(|c| {
                let info = CertInfo::parse(c).ok()?;
                let anchor = cert_anchor(&info)?;
                Some((info, anchor))
            })
            .collect();
        Self::build(rrset, names, Profile::General, roots)
    }

    fn build(
        rrset: &[Tlsa],
        names: Vec<ReferenceName>,
        profile: Profile,
        pkix_roots: Vec<(CertInfo, TrustAnchor<'static>)>,
    ) -> Self {
        let records = profile.usable_records(rrset);
        let dns_certs = records
            .iter()
            .filter(|r| r.selector() == Selector::FullCert && r.matching() == Matching::Full)
            .filter_map(|r| {
                let info = CertInfo::parse(r.data()).ok()?;
                let anchor = cert_anchor(&info);
                Some((r.clone(), info, anchor))
            })
            .collect();
        Self {
            published: rrset.len(),
            records,
            dns_certs,
            names,
            profile,
            pkix_roots,
            ee_name_checks: false,
            algorithms: rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
        }
    }

    /// Also require a name match for DANE-EE (OpenSSL's default; RFC 7672 §3.1.1 says SMTP
    /// clients must not). Used by the OpenSSL conformance data.
    pub fn with_ee_name_checks(mut self, on: bool) -> Self {
        self.ee_name_checks = on;
        self
    }

    /// Use these signature algorithms for chain verification instead of ring's defaults,
    /// e.g. those of the rustls `CryptoProvider` in use.
    pub fn with_algorithms(
        mut self,
        algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
    ) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// The records in use after the usability rules and digest agility.
    pub fn records(&self) -> &[Tlsa] {
        &self.records
    }

    /// The reference names.
    pub fn names(&self) -> &[ReferenceName] {
        &self.names
    }

    /// Whether any record is usable; when not, SMTP still requires TLS but cannot
    /// authenticate the peer (RFC 7672 §2.2, "TLSA records present but none usable").
    pub fn has_usable_records(&self) -> bool {
        !self.records.is_empty()
    }

    /// Authenticates `chain` (leaf first, as the server sent it) at time `now`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Verified, VerifyError> {
        let Some((leaf_der, intermediates)) = chain.split_first() else {
            return Err(VerifyError::EmptyChain);
        };
        if self.records.is_empty() {
            return Err(VerifyError::NoUsableRecords {
                published: self.published,
            });
        }
        let leaf = CertInfo::parse(leaf_der);
        let mut failures = Vec::new();

        // DANE-EE(3), RFC 7672 §3.1.1: the leaf alone; no chain, name or validity checks.
        // Cert(0) matching needs no parse, so even a certificate our parser rejects matches.
        for r in self.with_usage(Usage::DaneEe) {
            let hit = match (&leaf, r.selector()) {
                (Ok(leaf), _) => matches(r, leaf),
                (Err(_), Selector::FullCert) => full_cert_matches(r, leaf_der),
                (Err(_), _) => false,
            };
            if !hit {
                continue;
            }
            match (&leaf, self.ee_name_checks) {
                (_, false) => return Ok(self.verified(r, 0, AnchorSource::Leaf, None)),
                (Ok(leaf), true) => match self.name_check(r, 0, leaf) {
                    Ok(name) => return Ok(self.verified(r, 0, AnchorSource::Leaf, Some(name))),
                    Err(e) => failures.push(e),
                },
                (Err(e), true) => failures.push(bad_leaf(e)),
            }
        }

        let leaf = match leaf {
            Ok(leaf) => leaf,
            Err(e) => {
                failures.push(bad_leaf(&e));
                return Err(self.closest(failures, chain));
            }
        };
        let issuers: Vec<Option<CertInfo>> = intermediates
            .iter()
            .map(|c| CertInfo::parse(c).ok())
            .collect();

        // DANE-TA(2), RFC 7671 §5.2 and RFC 7672 §3.1.2.
        match self.dane_ta(leaf_der, intermediates, &leaf, &issuers, now) {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) => failures.push(e),
            None => {}
        }
        if self.profile == Profile::General {
            match self.pkix(leaf_der, intermediates, &leaf, &issuers, now) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => failures.push(e),
                None => {}
            }
        }
        Err(self.closest(failures, chain))
    }

    fn with_usage(&self, usage: Usage) -> impl Iterator<Item = &Tlsa> {
        self.records.iter().filter(move |r| r.usage() == usage)
    }

    fn verified(
        &self,
        record: &Tlsa,
        depth: usize,
        anchor: AnchorSource,
        name: Option<ReferenceName>,
    ) -> Verified {
        Verified {
            record: record.clone(),
            depth,
            anchor,
            name,
        }
    }

    fn closest(&self, failures: Vec<VerifyError>, chain: &[CertificateDer<'_>]) -> VerifyError {
        failures
            .into_iter()
            .rev()
            .max_by_key(VerifyError::closeness)
            .unwrap_or_else(|| VerifyError::NoMatch {
                records: self.records.clone(),
                chain: chain
                    .iter()
                    .map(|c| match CertInfo::parse(c) {
                        Ok(info) => info.subject().to_owned(),
                        Err(_) => "(unparsable)".to_owned(),
                    })
                    .collect(),
            })
    }

    /// The host-name check of RFC 7672 §3.2.3 (and RFC 6125 §6.4).
    fn name_check(
        &self,
        record: &Tlsa,
        depth: usize,
        leaf: &CertInfo,
    ) -> Result<ReferenceName, VerifyError> {
        find_match(leaf, &self.names)
            .cloned()
            .ok_or_else(|| VerifyError::NameMismatch {
                record: record.clone(),
                depth,
                reference_names: self.names.clone(),
                presented: presented_names(leaf).to_vec(),
            })
    }

    /// DANE-TA: the matched certificate or key is the only trust anchor; the path from the
    /// leaf must verify up to it, with validity periods checked below it; then the names.
    /// `None` when no DANE-TA record can serve as an anchor for this chain.
    fn dane_ta(
        &self,
        leaf_der: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &CertInfo,
        issuers: &[Option<CertInfo>],
        now: UnixTime,
    ) -> Option<Result<Verified, VerifyError>> {
        let mut anchors: Vec<Candidate<'_>> = Vec::new();
        for r in self.with_usage(Usage::DaneTa) {
            // A CA certificate the server sent (depth ≥ 1; a leaf cannot be its own TA).
            for (i, (cert, der)) in issuers.iter().zip(intermediates).enumerate() {
                if !cert.as_ref().is_some_and(|c| matches(r, c)) {
                    continue;
                }
                if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
                    anchors.push(Candidate {
                        anchor,
                        record: r,
                        source: AnchorSource::Chain,
                        chain_depth: Some(i + 1),
                        is_cert: true,
                    });
                }
            }
            if r.matching() != Matching::Full {
                continue;
            }
            match r.selector() {
                // `2 0 0`: a whole certificate from DNS, used even when the server omits it.
                Selector::FullCert => {
                    let from_dns = self.dns_certs.iter().find(|(d, _, _)| d == r);
                    if let Some(anchor) = from_dns.and_then(|(_, _, a)| a.clone()) {
                        anchors.push(Candidate {
                            anchor,
                            record: r,
                            source: AnchorSource::Dns,
                            chain_depth: None,
                            is_cert: true,
                        });
                    }
                }
                // `2 1 0`: a bare public key. It has no name, so offer it as the issuer of every
                // certificate in the chain; the signature check decides.
                Selector::Spki => {
                    let Some(spki) = sequence_contents(r.data()) else {
                        continue;
                    };
                    let names = std::iter::once(Some(leaf))
                        .chain(issuers.iter().map(Option::as_ref))
                        .flatten()
                        .filter_map(|c| sequence_contents(c.issuer_der()));
                    for subject in names {
                        anchors.push(Candidate {
                            anchor: TrustAnchor {
                                subject: subject.into(),
                                subject_public_key_info: spki.into(),
                                name_constraints: None,
                            },
                            record: r,
                            source: AnchorSource::Dns,
                            chain_depth: None,
                            is_cert: false,
                        });
                    }
                }
                Selector::Unassigned(_) => {}
            }
        }
        let first_record = anchors.first()?.record;
        let ee = match EndEntityCert::try_from(leaf_der) {
            Ok(ee) => ee,
            Err(e) => {
                return Some(Err(VerifyError::BadCertificate {
                    depth: 0,
                    reason: format!("{e:?}"),
                }));
            }
        };
        let trust: Vec<TrustAnchor<'_>> = anchors.iter().map(|c| c.anchor.clone()).collect();
        let result = ee.verify_for_usage(
            self.algorithms,
            &trust,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            None,
        );
        Some(match result {
            Ok(path) => {
                // webpki returns a reference to the anchor of the path, one of `trust`.
                let used = trust
                    .iter()
                    .position(|t| std::ptr::eq(t, path.anchor()))
                    .and_then(|i| anchors.get(i));
                let Some(c) = used else {
                    return Some(Err(VerifyError::ChainInvalid {
                        record: first_record.clone(),
                        depth: None,
                        broken_at: None,
                        problem: PathProblem::UnidentifiedAnchor,
                    }));
                };
                let depth = path.intermediate_certificates().count() + usize::from(c.is_cert);
                self.name_check(c.record, depth, leaf)
                    .map(|name| self.verified(c.record, depth, c.source, Some(name)))
            }
            Err(e) => {
                let chain_hit = anchors.iter().find(|c| c.chain_depth.is_some());
                match (&e, chain_hit) {
                    (
                        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. },
                        _,
                    ) => Err(validity_error(leaf, issuers, now)),
                    (_, Some(c)) => Err(VerifyError::ChainInvalid {
                        record: c.record.clone(),
                        depth: c.chain_depth,
                        broken_at: locate_break(leaf, issuers, &trust),
                        problem: PathProblem::from_webpki(&e),
                    }),
                    // Only DNS-supplied anchors, none of which signed anything in the chain.
                    (
                        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey,
                        None,
                    ) => {
                        return None;
                    }
                    (_, None) => Err(VerifyError::ChainInvalid {
                        record: first_record.clone(),
                        depth: None,
                        broken_at: locate_break(leaf, issuers, &trust),
                        problem: PathProblem::from_webpki(&e),
                    }),
                }
            }
        })
    }

    /// PKIX-EE(1) and PKIX-TA(0) (RFC 6698 §2.1.1): a PKIX path to the caller's roots, with
    /// certificates from `x 0 0` records as extra intermediates, plus the record match.
    fn pkix(
        &self,
        leaf_der: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &CertInfo,
        issuers: &[Option<CertInfo>],
        now: UnixTime,
    ) -> Option<Result<Verified, VerifyError>> {
        let ee_hit = self.with_usage(Usage::PkixEe).find(|r| matches(r, leaf));
        let first_ta = self.with_usage(Usage::PkixTa).next();
        if ee_hit.is_none() && first_ta.is_none() {
            return None;
        }
        let ee = match EndEntityCert::try_from(leaf_der) {
            Ok(ee) => ee,
            Err(e) => {
                return Some(Err(VerifyError::BadCertificate {
                    depth: 0,
                    reason: format!("{e:?}"),
                }));
            }
        };
        let roots: Vec<TrustAnchor<'_>> = self.pkix_roots.iter().map(|(_, a)| a.clone()).collect();
        let mut candidates: Vec<CertificateDer<'_>> = intermediates.to_vec();
        candidates.extend(
            self.dns_certs
                .iter()
                .map(|(_, c, _)| c.as_certificate_der()),
        );

        let path_fails = |e: &webpki::Error, record: &Tlsa, depth: Option<usize>| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                validity_error(leaf, issuers, now)
            }
            e => VerifyError::ChainInvalid {
                record: record.clone(),
                depth,
                broken_at: locate_break(leaf, issuers, &roots),
                problem: PathProblem::from_webpki(e),
            },
        };

        if let Some(record) = ee_hit {
            let result = ee.verify_for_usage(
                self.algorithms,
                &roots,
                &candidates,
                now,
                KeyUsage::server_auth(),
                None,
                None,
            );
            return Some(match result {
                Ok(_) => self
                    .name_check(record, 0, leaf)
                    .map(|name| self.verified(record, 0, AnchorSource::Leaf, Some(name))),
                Err(e) => Err(path_fails(&e, record, Some(0))),
            });
        }

        // No PKIX-EE record matched, so there is a PKIX-TA record (checked above).
        let first_ta = first_ta?;
        // PKIX-TA: reject candidate paths in which no certificate matches a PKIX-TA record, so
        // webpki keeps searching (RFC 6698 §2.1.1: the CA must be in the validated path).
        let hit: Cell<Option<(&Tlsa, usize, AnchorSource)>> = Cell::new(None);
        let select = |path: &webpki::VerifiedPath<'_>| {
            let ta_records: Vec<&Tlsa> = self.with_usage(Usage::PkixTa).collect();
            let mut depth = 0;
            for cert in path.intermediate_certificates() {
                depth += 1;
                let Ok(info) = CertInfo::parse(&cert.der()) else {
                    continue;
                };
                if let Some(record) = ta_records.iter().find(|r| matches(r, &info)) {
                    let sent = intermediates.iter().any(|c| c.as_ref() == info.der());
                    let source = if sent {
                        AnchorSource::Chain
                    } else {
                        AnchorSource::Dns
                    };
                    hit.set(Some((record, depth, source)));
                    return Ok(());
                }
            }
            let root = roots
                .iter()
                .position(|t| std::ptr::eq(t, path.anchor()))
                .and_then(|i| self.pkix_roots.get(i))
                .map(|(info, _)| info);
            if let Some(record) = root.and_then(|root| ta_records.iter().find(|r| matches(r, root)))
            {
                hit.set(Some((record, depth + 1, AnchorSource::TrustStore)));
                return Ok(());
            }
            Err(webpki::Error::UnknownIssuer)
        };
        let result = ee.verify_for_usage(
            self.algorithms,
            &roots,
            &candidates,
            now,
            KeyUsage::server_auth(),
            None,
            Some(&select),
        );
        Some(match (result, hit.get()) {
            (Ok(_), Some((record, depth, source))) => self
                .name_check(record, depth, leaf)
                .map(|name| self.verified(record, depth, source, Some(name))),
            // webpki reports our rejection as UnknownIssuer: no PKIX-TA record in any path.
            (Err(webpki::Error::UnknownIssuer), None) | (Ok(_), None) => return None,
            (Err(e), _) => Err(path_fails(&e, first_ta, None)),
        })
    }
}

fn bad_leaf(e: &crate::cert::CertParseError) -> VerifyError {
    VerifyError::BadCertificate {
        depth: 0,
        reason: e.0.clone(),
    }
}

fn full_cert_matches(r: &Tlsa, der: &[u8]) -> bool {
    crate::matching::association(r.matching(), der).is_some_and(|a| a == r.data())
}

/// A DANE-TA candidate trust anchor and what it stands for.
struct Candidate<'a> {
    anchor: TrustAnchor<'a>,
    record: &'a Tlsa,
    source: AnchorSource,
    /// Depth of the presented certificate the record matched, if it matched one.
    chain_depth: Option<usize>,
    /// A certificate (counts as a level of the chain) rather than a bare key.
    is_cert: bool,
}

fn cert_anchor(cert: &CertInfo) -> Option<TrustAnchor<'static>> {
    let der: &[u8] = cert.der();
    webpki::anchor_from_trusted_cert(&CertificateDer::from(der))
        .ok()
        .map(|ta| ta.to_owned())
}

/// The first certificate, leaf upwards, that is outside its validity period at `now`.
fn validity_error(leaf: &CertInfo, issuers: &[Option<CertInfo>], now: UnixTime) -> VerifyError {
    let certs = std::iter::once(Some(leaf)).chain(issuers.iter().map(Option::as_ref));
    for (depth, cert) in certs.enumerate() {
        let Some(cert) = cert else { continue };
        if cert.valid_at(now) {
            continue;
        }
        let subject = cert.subject().to_owned();
        let now_text = rfc3339(now.as_secs());
        return if now.as_secs() < cert.not_before() {
            VerifyError::NotYetValid {
                depth,
                subject,
                not_before: rfc3339(cert.not_before()),
                now: now_text,
            }
        } else {
            VerifyError::Expired {
                depth,
                subject,
                not_after: rfc3339(cert.not_after()),
                now: now_text,
            }
        };
    }
    VerifyError::Expired {
        depth: 0,
        subject: leaf.subject().to_owned(),
        not_after: rfc3339(leaf.not_after()),
        now: rfc3339(now.as_secs()),
    }
}

/// Follows issuer names from the leaf through the presented chain and returns the depth of
/// the last certificate reached: the one whose issuer is missing, or whose issuer is an
/// anchor that did not verify it. Only used to explain a failure.
fn locate_break(
    leaf: &CertInfo,
    issuers: &[Option<CertInfo>],
    anchors: &[TrustAnchor<'_>],
) -> Option<usize> {
    let certs: Vec<Option<&CertInfo>> = std::iter::once(Some(leaf))
        .chain(issuers.iter().map(Option::as_ref))
        .collect();
    let mut seen = vec![false; certs.len()];
    let mut at = 0;
    loop {
        if let Some(seen) = seen.get_mut(at) {
            *seen = true;
        }
        let issuer = (*certs.get(at)?)?.issuer_der();
        let issuer_contents = sequence_contents(issuer);
        if anchors
            .iter()
            .any(|a| Some(a.subject.as_ref()) == issuer_contents)
        {
            return Some(at);
        }
        let next = certs
            .iter()
            .zip(&seen)
            .position(|(c, seen)| !seen && c.is_some_and(|c| c.subject_der() == issuer));
        match next {
            Some(j) => at = j,
            None => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::ExtendedKeyUsagePurpose;

    use super::*;
    use crate::test_pki::{Leaf, ca, now, tlsa};

    fn names(list: &[&str]) -> Vec<ReferenceName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn smtp(records: &[Tlsa]) -> Authenticator {
        Authenticator::smtp(records, names(&["mx.example.test"]))
    }

    #[test]
    fn dane_ee_ignores_names_and_validity() {
        // RFC 7672 §3.1.1: an expired leaf for another name still matches DANE-EE.
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            sans: &["other.test"],
            valid_days: (-400, -30),
            ..Leaf::default()
        }
        .issue(&root);
        for (s, m) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)] {
            let v = smtp(&[tlsa(3, s, m, &leaf)])
                .verify(std::slice::from_ref(&leaf), now())
                .unwrap();
            assert_eq!(
                (v.depth(), v.anchor(), v.name()),
                (0, AnchorSource::Leaf, None)
            );
            assert_eq!(v.record(), &tlsa(3, s, m, &leaf));
        }
    }

    #[test]
    fn dane_ee_does_not_match_another_key() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let (other, _) = Leaf::default().issue(&root);
        let err = smtp(&[tlsa(3, 1, 1, &other)])
            .verify(&[leaf], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
    }

    #[test]
    fn dane_ee_does_not_match_an_issuer() {
        // A 3 x x record for the intermediate must not authenticate its leaf.
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let (leaf, _) = Leaf::default().issue(&inter);
        let err = smtp(&[tlsa(3, 1, 1, inter.der())])
            .verify(&[leaf, inter.der().clone()], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
    }

    #[test]
    fn dane_ta_at_depth_one_and_two() {
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let (leaf, _) = Leaf::default().issue(&inter);
        let chain = [leaf, inter.der().clone(), root.der().clone()];
        for (cert, depth) in [(inter.der(), 1), (root.der(), 2)] {
            for (s, m) in [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0), (1, 0)] {
                let v = smtp(&[tlsa(2, s, m, cert)]).verify(&chain, now()).unwrap();
                assert_eq!(v.depth(), depth, "2 {s} {m}");
                assert_eq!(v.name().map(|n| n.as_str()), Some("mx.example.test"));
            }
        }
    }

    #[test]
    fn dane_ta_never_matches_the_leaf_itself() {
        // RFC 7671 §5.2: the trust anchor is an issuer (depth ≥ 1), never the leaf.
        let root = ca("Root", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let err = smtp(&[tlsa(2, 1, 1, &leaf)])
            .verify(&[leaf], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
    }

    #[test]
    fn dane_ta_digest_needs_the_anchor_in_the_chain() {
        // RFC 7671 §5.2.1: a 2 x 1 anchor the server does not send cannot be used.
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let (leaf, _) = Leaf::default().issue(&inter);
        let err = smtp(&[tlsa(2, 0, 1, root.der())])
            .verify(&[leaf, inter.der().clone()], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
    }

    #[test]
    fn dane_ta_full_key_or_certificate_from_dns_need_not_be_sent() {
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let (leaf, _) = Leaf::default().issue(&inter);
        let chain = [leaf, inter.der().clone()];
        let v = smtp(&[tlsa(2, 1, 0, root.der())])
            .verify(&chain, now())
            .unwrap();
        assert_eq!((v.depth(), v.anchor()), (1, AnchorSource::Dns));
        let v = smtp(&[tlsa(2, 0, 0, root.der())])
            .verify(&chain, now())
            .unwrap();
        assert_eq!((v.depth(), v.anchor()), (2, AnchorSource::Dns));
    }

    #[test]
    fn dane_ta_bare_key_that_signed_nothing_is_no_match() {
        let root = ca("Root", None);
        let stranger = ca("Stranger", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let err = smtp(&[tlsa(2, 1, 0, stranger.der())])
            .verify(&[leaf], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
    }

    #[test]
    fn dane_ta_checks_the_reference_names() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            sans: &["mail.other.test", "smtp.other.test"],
            ..Leaf::default()
        }
        .issue(&root);
        let chain = [leaf, root.der().clone()];
        let err = Authenticator::smtp(
            &[tlsa(2, 0, 1, root.der())],
            names(&["mx.example.test", "example.test"]),
        )
        .verify(&chain, now())
        .unwrap_err();
        let VerifyError::NameMismatch {
            depth,
            reference_names,
            presented,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*depth, 1);
        assert_eq!(
            reference_names,
            &names(&["mx.example.test", "example.test"])
        );
        assert_eq!(presented, &["mail.other.test", "smtp.other.test"]);
        assert!(err.to_string().contains("mail.other.test"));

        // Any of the reference names will do: the MX name, the base domain, the next hop.
        let v = Authenticator::smtp(
            &[tlsa(2, 0, 1, root.der())],
            names(&["mx.example.test", "smtp.other.test"]),
        )
        .verify(&chain, now())
        .unwrap();
        assert_eq!(v.name().unwrap().as_str(), "smtp.other.test");
    }

    #[test]
    fn dane_ta_wildcard_covers_one_label() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            sans: &["*.example.test"],
            ..Leaf::default()
        }
        .issue(&root);
        let chain = [leaf, root.der().clone()];
        let records = [tlsa(2, 0, 1, root.der())];
        assert!(
            Authenticator::smtp(&records, names(&["mx.example.test"]))
                .verify(&chain, now())
                .is_ok()
        );
        for bad in ["a.mx.example.test", "example.test"] {
            assert!(matches!(
                Authenticator::smtp(&records, names(&[bad])).verify(&chain, now()),
                Err(VerifyError::NameMismatch { .. })
            ));
        }
    }

    #[test]
    fn dane_ta_uses_the_common_name_only_without_dns_sans() {
        let root = ca("Root", None);
        let records = [tlsa(2, 0, 1, root.der())];
        let (cn_only, _) = Leaf {
            sans: &[],
            cn: "mx.example.test",
            ..Leaf::default()
        }
        .issue(&root);
        assert!(
            smtp(&records)
                .verify(&[cn_only, root.der().clone()], now())
                .is_ok()
        );
        let (with_san, _) = Leaf {
            sans: &["other.test"],
            cn: "mx.example.test",
            ..Leaf::default()
        }
        .issue(&root);
        assert!(matches!(
            smtp(&records).verify(&[with_san, root.der().clone()], now()),
            Err(VerifyError::NameMismatch { .. })
        ));
    }

    #[test]
    fn dane_ta_checks_the_leaf_validity_period() {
        let root = ca("Root", None);
        let records = [tlsa(2, 0, 1, root.der())];
        let (expired, _) = Leaf {
            valid_days: (-100, -1),
            ..Leaf::default()
        }
        .issue(&root);
        let err = smtp(&records)
            .verify(&[expired, root.der().clone()], now())
            .unwrap_err();
        assert!(
            matches!(&err, VerifyError::Expired { depth: 0, subject, .. } if subject.contains("mx.example.test")),
            "{err:?}"
        );
        let (future, _) = Leaf {
            valid_days: (5, 100),
            ..Leaf::default()
        }
        .issue(&root);
        let err = smtp(&records)
            .verify(&[future, root.der().clone()], now())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::NotYetValid { depth: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn dane_ta_requires_the_chain_to_reach_the_anchor() {
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let other = ca("Other", None);
        let (leaf, _) = Leaf::default().issue(&inter);
        // The TA record names a CA the server sent, but the leaf does not chain to it.
        let err = smtp(&[tlsa(2, 0, 1, other.der())])
            .verify(&[leaf.clone(), other.der().clone()], now())
            .unwrap_err();
        let VerifyError::ChainInvalid {
            depth,
            broken_at,
            problem,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*depth, *broken_at), (Some(1), Some(0)));
        assert_eq!(*problem, PathProblem::UnknownIssuer);

        // A forged intermediate: same name as the real one, different key.
        let forged = ca("Inter", Some(&root));
        let err = smtp(&[tlsa(2, 0, 1, root.der())])
            .verify(&[leaf, forged.der().clone(), root.der().clone()], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::ChainInvalid { .. }), "{err:?}");
    }

    #[test]
    fn dane_ta_requires_server_auth_usage() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            ..Leaf::default()
        }
        .issue(&root);
        let err = smtp(&[tlsa(2, 0, 1, root.der())])
            .verify(&[leaf.clone(), root.der().clone()], now())
            .unwrap_err();
        assert!(
            matches!(
                &err,
                VerifyError::ChainInvalid {
                    problem: PathProblem::NotForServerAuth,
                    ..
                }
            ),
            "{err:?}"
        );
        // DANE-EE does not look at the certificate's contents at all.
        assert!(smtp(&[tlsa(3, 1, 1, &leaf)]).verify(&[leaf], now()).is_ok());
    }

    #[test]
    fn ee_is_tried_before_ta() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            sans: &["other.test"],
            ..Leaf::default()
        }
        .issue(&root);
        let v = smtp(&[tlsa(2, 0, 1, root.der()), tlsa(3, 1, 1, &leaf)])
            .verify(&[leaf, root.der().clone()], now())
            .unwrap();
        assert_eq!(v.record().usage(), Usage::DaneEe);
    }

    #[test]
    fn closest_failure_is_reported() {
        // EE mismatch plus a TA whose name check fails: the name mismatch is the news.
        let root = ca("Root", None);
        let (leaf, _) = Leaf {
            sans: &["other.test"],
            ..Leaf::default()
        }
        .issue(&root);
        let (unrelated, _) = Leaf::default().issue(&root);
        let err = smtp(&[tlsa(3, 1, 1, &unrelated), tlsa(2, 0, 1, root.der())])
            .verify(&[leaf, root.der().clone()], now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::NameMismatch { .. }), "{err:?}");
    }

    #[test]
    fn digest_agility_ignores_the_weaker_digest() {
        // RFC 7671 §9: with a 3 1 2 published, a matching 3 1 1 is not consulted.
        let root = ca("Root", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let (other, _) = Leaf::default().issue(&root);
        let records = [tlsa(3, 1, 2, &other), tlsa(3, 1, 1, &leaf)];
        assert!(matches!(
            smtp(&records).verify(std::slice::from_ref(&leaf), now()),
            Err(VerifyError::NoMatch { .. })
        ));
        let records = [tlsa(3, 1, 2, &leaf), tlsa(3, 1, 1, &other)];
        assert!(smtp(&records).verify(&[leaf], now()).is_ok());
    }

    #[test]
    fn smtp_profile_has_no_use_for_pkix_records() {
        let root = ca("Root", None);
        let (leaf, _) = Leaf::default().issue(&root);
        let auth = smtp(&[tlsa(1, 1, 1, &leaf), tlsa(0, 0, 1, root.der())]);
        assert!(!auth.has_usable_records());
        assert_eq!(
            auth.verify(&[leaf, root.der().clone()], now()),
            Err(VerifyError::NoUsableRecords { published: 2 })
        );
    }

    #[test]
    fn empty_and_unparsable_chains() {
        let auth = smtp(&[
            "3 0 1 0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
        ]);
        assert_eq!(auth.verify(&[], now()), Err(VerifyError::EmptyChain));
        let junk = CertificateDer::from(b"junk".to_vec());
        assert!(matches!(
            auth.verify(std::slice::from_ref(&junk), now()),
            Err(VerifyError::BadCertificate { depth: 0, .. })
        ));
        // DANE-EE Cert(0) compares bytes: it needs no certificate parser.
        let exact = Tlsa::new(Usage::DaneEe, Selector::FullCert, Matching::Sha256, {
            crate::matching::association(Matching::Sha256, b"junk").unwrap()
        })
        .unwrap();
        assert!(smtp(&[exact]).verify(&[junk], now()).is_ok());
    }
}
