//! A STARTTLS probe of one address: what the server presents, and which TLSA records match
//! it (RFC 7671 §5, RFC 7672 §3), at a chosen time (`--days N` looks ahead).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dane::cert::CertInfo;
use dane::pki_types::{CertificateDer, UnixTime};
use dane::{Authenticator, ReferenceName, Tlsa, VerifyError};
use dns::DnsName;
use rustls::SignatureScheme;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use serde::Serialize;
use smtp::Timeouts;
use smtp::session::{Session, SessionError, Stage, TlsInfo};
use smtp::tls::{Auth, Mode};

use crate::mta_sts::Pkix;

/// One certificate of the presented chain, as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    /// Subject (RFC 4514).
    pub subject: String,
    /// DNS names (SAN, or CN without SAN).
    pub names: Vec<String>,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Whether it is a CA certificate.
    pub ca: bool,
}

/// How one TLSA record fared against the presented chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordMatch {
    /// The record.
    pub record: Tlsa,
    /// The depth it authenticated the chain at, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Why it did not, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The typed reason.
    #[serde(skip)]
    pub failure: Option<VerifyError>,
}

/// The kind of key a certificate holds: servers may have one of each, and choose by the
/// signature algorithms the client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFamily {
    /// ECDSA (or EdDSA).
    Ecdsa,
    /// RSA.
    Rsa,
}

impl KeyFamily {
    /// The family of a DER SubjectPublicKeyInfo, by its algorithm OID.
    pub fn of(spki: &[u8]) -> Option<KeyFamily> {
        const RSA: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
        ];
        const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
        let has = |oid: &[u8]| spki.windows(oid.len()).take(24).any(|w| w == oid);
        if has(RSA) {
            Some(KeyFamily::Rsa)
        } else if has(EC) || has(ED25519) {
            Some(KeyFamily::Ecdsa)
        } else {
            None
        }
    }

    fn other(self) -> KeyFamily {
        match self {
            KeyFamily::Ecdsa => KeyFamily::Rsa,
            KeyFamily::Rsa => KeyFamily::Ecdsa,
        }
    }

    /// Whether a handshake signature of `scheme` is made with a key of this family: the RSA
    /// schemes (PKCS#1 v1.5 and PSS, RFC 8446 §4.2.3) are RSA's, all others ECDSA's (which
    /// stands for EdDSA too).
    fn allows(self, scheme: SignatureScheme) -> bool {
        let rsa = matches!(
            scheme,
            SignatureScheme::RSA_PKCS1_SHA1
                | SignatureScheme::RSA_PKCS1_SHA256
                | SignatureScheme::RSA_PKCS1_SHA384
                | SignatureScheme::RSA_PKCS1_SHA512
                | SignatureScheme::RSA_PSS_SHA256
                | SignatureScheme::RSA_PSS_SHA384
                | SignatureScheme::RSA_PSS_SHA512
        );
        rsa == (self == KeyFamily::Rsa)
    }
}

/// `base` restricted to the signature schemes of one key family, so a server with two
/// certificates must present that family's.
///
/// rustls wants the table `'static`; the providers' tables list each family's schemes in one
/// run (ECDSA and EdDSA, then RSA), so the restricted table is that part of `base`'s own
/// static table: nothing is allocated or leaked. A provider whose table mixes the families
/// gets `base` unrestricted for that family (the probe then cannot force it).
fn restricted(base: &CryptoProvider, family: KeyFamily) -> Arc<CryptoProvider> {
    let mut provider = base.clone();
    if let Some(mapping) = family_run(base.signature_verification_algorithms.mapping, family) {
        provider.signature_verification_algorithms = WebPkiSupportedAlgorithms {
            all: base.signature_verification_algorithms.all,
            mapping,
        };
    }
    Arc::new(provider)
}

/// The one contiguous run of `mapping` whose schemes belong to `family`, if there is one.
fn family_run<T>(
    mapping: &'static [(SignatureScheme, T)],
    family: KeyFamily,
) -> Option<&'static [(SignatureScheme, T)]> {
    let start = mapping.iter().position(|(s, _)| family.allows(*s))?;
    let len = mapping[start..]
        .iter()
        .take_while(|(s, _)| family.allows(*s))
        .count();
    let rest = &mapping[start + len..];
    (!rest.iter().any(|(s, _)| family.allows(*s))).then_some(&mapping[start..start + len])
}

/// How far a probe got before it failed; each has its own finding (see `report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeFailure {
    /// No SMTP greeting: the connection was refused, timed out, or was closed or reset before
    /// the server greeted (RFC 5321 §3.1).
    Unreachable,
    /// The server greeted, but the dialogue failed before STARTTLS could be tried: a greeting
    /// other than 220 (RFC 5321 §3.1), EHLO and HELO refused, a protocol error.
    SmtpFailed,
    /// The server does not offer STARTTLS in its EHLO reply (RFC 3207 §2).
    StarttlsMissing,
    /// The server offered STARTTLS, but TLS could not be established: the command refused
    /// (RFC 3207 §4), the handshake failed or timed out, or plaintext was injected after it.
    TlsHandshakeFailed,
}

impl ProbeFailure {
    /// How far the session in error `e` got. The smtp crate names the step that failed
    /// (`Timeout`, `Protocol`): the TCP connection and the greeting are before SMTP.
    pub fn of(e: &SessionError) -> ProbeFailure {
        match e {
            SessionError::Connect(_) => ProbeFailure::Unreachable,
            SessionError::Timeout(stage) | SessionError::Protocol { stage, .. }
                if stage.before_greeting() =>
            {
                ProbeFailure::Unreachable
            }
            SessionError::Timeout(Stage::TlsHandshake)
            | SessionError::Refused {
                stage: Stage::StartTls,
                ..
            }
            | SessionError::Tls(_)
            | SessionError::Dane(_)
            | SessionError::StartTlsInjection => ProbeFailure::TlsHandshakeFailed,
            SessionError::StartTlsNotOffered => ProbeFailure::StarttlsMissing,
            _ => ProbeFailure::SmtpFailed,
        }
    }

    /// The stable code, as in JSON and in the finding.
    pub fn code(self) -> &'static str {
        match self {
            ProbeFailure::Unreachable => "unreachable",
            ProbeFailure::SmtpFailed => "smtp-failed",
            ProbeFailure::StarttlsMissing => "starttls-missing",
            ProbeFailure::TlsHandshakeFailed => "tls-handshake-failed",
        }
    }

    /// Whether an SMTP server answered (the greeting and EHLO went through).
    pub fn reached_smtp(self) -> bool {
        !matches!(self, ProbeFailure::Unreachable | ProbeFailure::SmtpFailed)
    }
}

/// What a server presented on one address: the part of a probe that does not depend on the
/// TLSA records, so it can be shared by every domain whose MX is that host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// Whether the server offered STARTTLS.
    pub starttls: bool,
    /// TLS version and cipher, when the handshake succeeded.
    pub tls: Option<TlsInfo>,
    /// The presented chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Why the probe could not complete (connection, greeting, handshake).
    pub error: Option<String>,
    /// How far it got, when it could not complete.
    pub error_kind: Option<ProbeFailure>,
    /// A different chain the server presents to a client that offers only the other key
    /// family's signature algorithms (a server with RSA and ECDSA certificates).
    pub other: Option<Box<Presented>>,
}

/// The result of probing one address for one host: the presented chain judged against the
/// host's TLSA records (PRODUCT.md `addresses[].tls`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressProbe {
    /// Whether the server offered STARTTLS.
    pub starttls: bool,
    /// TLS version and cipher.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// The record that authenticates the chain as a sender would decide (RFC 7672 §3), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<Tlsa>,
    /// Its depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Why no record authenticates the chain, when records exist and none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The presented chain, leaf first.
    pub chain: Vec<CertSummary>,
    /// Each usable TLSA record on its own against the chain.
    pub records: Vec<RecordMatch>,
    /// Why the probe could not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How far it got, when it could not complete: `unreachable`, `smtp-failed`,
    /// `starttls-missing` or `tls-handshake-failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ProbeFailure>,
    /// The leaf's notAfter, seconds since the epoch.
    #[serde(skip)]
    pub leaf_not_after: Option<u64>,
    /// The leaf's key family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFamily>,
    /// The probe of the server's other certificate, when it has one of the other key family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_certificate: Option<Box<AddressProbe>>,
    /// Whether the chain passes PKIX for the MX host name (RFC 8461 §4.2): absent when no
    /// chain was presented or no trust anchors were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkix_valid: Option<bool>,
    /// Why it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkix_error: Option<String>,
}

/// What to probe with.
#[derive(Clone)]
pub struct ProbeConfig {
    provider: Arc<CryptoProvider>,
    /// The provider restricted to ECDSA and to RSA signature schemes.
    by_family: [Arc<CryptoProvider>; 2],
    /// SMTP timeouts.
    pub timeouts: Timeouts,
    /// Our EHLO name.
    pub helo_name: String,
    /// Evaluate certificate validity this much later than now (`--days`).
    pub ahead: Duration,
    /// PKIX trust for MTA-STS (the policy fetch and the MX certificates), if any.
    pkix: Option<Pkix>,
}

impl ProbeConfig {
    /// Probes with `provider`, `timeouts` and `helo_name`, judging expiry `ahead` of now.
    pub fn new(
        provider: Arc<CryptoProvider>,
        timeouts: Timeouts,
        helo_name: String,
        ahead: Duration,
    ) -> Self {
        let by_family = [
            restricted(&provider, KeyFamily::Ecdsa),
            restricted(&provider, KeyFamily::Rsa),
        ];
        Self {
            provider,
            by_family,
            timeouts,
            helo_name,
            ahead,
            pkix: None,
        }
    }

    /// The same, fetching MTA-STS policies and judging MX certificates by PKIX with `pkix`
    /// (RFC 8461 §3.3, §4.2). Without it, MTA-STS policies are not fetched.
    pub fn with_pkix(mut self, pkix: Pkix) -> Self {
        self.pkix = Some(pkix);
        self
    }

    /// The PKIX trust, if any.
    pub fn pkix(&self) -> Option<&Pkix> {
        self.pkix.as_ref()
    }

    fn only(&self, family: KeyFamily) -> &Arc<CryptoProvider> {
        match family {
            KeyFamily::Ecdsa => &self.by_family[0],
            KeyFamily::Rsa => &self.by_family[1],
        }
    }

    /// The verification time: now plus [`ProbeConfig::ahead`].
    pub fn when(&self) -> UnixTime {
        let now = UnixTime::now().as_secs();
        UnixTime::since_unix_epoch(Duration::from_secs(now + self.ahead.as_secs()))
    }
}

fn summary(der: &CertificateDer<'_>) -> CertSummary {
    match CertInfo::parse(der) {
        Ok(c) => CertSummary {
            subject: c.subject().to_owned(),
            names: dane::name::presented_names(&c).to_vec(),
            not_after: dane::rfc3339(c.not_after()),
            ca: c.is_ca(),
        },
        Err(e) => CertSummary {
            subject: format!("(unparsable: {e})"),
            names: Vec::new(),
            not_after: String::new(),
            ca: false,
        },
    }
}

/// Connects to `address`:`port` and does STARTTLS without authenticating (the chain is judged
/// afterwards, record by record), sending `sni`; then again offering only the other key
/// family's signature algorithms, to find a second certificate.
pub async fn connect(address: IpAddr, port: u16, sni: &str, cfg: &ProbeConfig) -> Presented {
    let mut first = connect_with(address, port, sni, cfg, &cfg.provider).await;
    let family = first
        .chain
        .first()
        .and_then(|c| CertInfo::parse(c).ok())
        .and_then(|c| KeyFamily::of(c.spki()));
    if let Some(family) = family {
        let other = connect_with(address, port, sni, cfg, cfg.only(family.other())).await;
        if !other.chain.is_empty() && other.chain.first() != first.chain.first() {
            first.other = Some(Box::new(other));
        }
    }
    first
}

async fn connect_with(
    address: IpAddr,
    port: u16,
    sni: &str,
    cfg: &ProbeConfig,
    provider: &Arc<CryptoProvider>,
) -> Presented {
    let addr = SocketAddr::new(address, port);
    let mode = Mode::Required(Auth::None);
    match Session::open(addr, sni, &cfg.helo_name, &mode, provider, &cfg.timeouts).await {
        Ok(session) => {
            let presented = Presented {
                starttls: true,
                tls: session.tls().cloned(),
                chain: session.peer_chain().to_vec(),
                error: None,
                error_kind: None,
                other: None,
            };
            session.quit().await;
            presented
        }
        Err(e) => {
            let kind = ProbeFailure::of(&e);
            Presented {
                starttls: kind == ProbeFailure::TlsHandshakeFailed,
                tls: None,
                chain: Vec::new(),
                error: Some(e.to_string()),
                error_kind: Some(kind),
                other: None,
            }
        }
    }
}

/// Judges what was presented against the host's usable `records` and reference `names` at
/// time `when`: as a sender would (the whole RRset), and record by record.
pub fn evaluate(
    presented: &Presented,
    records: &[Tlsa],
    names: &[ReferenceName],
    when: UnixTime,
) -> AddressProbe {
    let leaf = presented
        .chain
        .first()
        .and_then(|c| CertInfo::parse(c).ok());
    let mut out = AddressProbe {
        starttls: presented.starttls,
        tls: presented.tls.clone(),
        matched: None,
        depth: None,
        failure: None,
        chain: presented.chain.iter().map(summary).collect(),
        records: Vec::new(),
        error: presented.error.clone(),
        error_kind: presented.error_kind,
        leaf_not_after: leaf.as_ref().map(CertInfo::not_after),
        key: leaf.as_ref().and_then(|c| KeyFamily::of(c.spki())),
        other_certificate: presented
            .other
            .as_ref()
            .map(|o| Box::new(evaluate(o, records, names, when))),
        pkix_valid: None,
        pkix_error: None,
    };
    if presented.chain.is_empty() || records.is_empty() {
        return out;
    }
    match Authenticator::smtp(records, names.to_vec()).verify(&presented.chain, when) {
        Ok(v) => {
            out.matched = Some(v.record().clone());
            out.depth = Some(v.depth());
        }
        Err(e) => out.failure = Some(e.to_string()),
    }
    for record in records {
        let verdict = Authenticator::smtp(std::slice::from_ref(record), names.to_vec())
            .verify(&presented.chain, when);
        let (depth, failure) = match verdict {
            Ok(v) => (Some(v.depth()), None),
            Err(e) => (None, Some(e)),
        };
        out.records.push(RecordMatch {
            record: record.clone(),
            depth,
            error: failure.as_ref().map(ToString::to_string),
            failure,
        });
    }
    out
}

/// Judges the chain of `presented` (and of its other certificate) by PKIX for the MX host
/// `host` at `when` (RFC 8461 §4.2: a trusted chain, in its validity period, naming the MX
/// host), into `probe`, which [`evaluate`] made from the same `presented`. Nothing is judged
/// without a chain. The chain is the one the probe captured: it was asked for with the TLSA
/// base domain as SNI, which is the MX host name unless the MX exchange is a CNAME.
pub fn judge_pkix(
    probe: &mut AddressProbe,
    presented: &Presented,
    host: &DnsName,
    pkix: &Pkix,
    when: UnixTime,
) {
    if !presented.chain.is_empty() {
        let verdict = pkix.verify(&presented.chain, host, when);
        probe.pkix_valid = Some(verdict.is_ok());
        probe.pkix_error = verdict.err();
    }
    if let (Some(probe), Some(presented)) = (&mut probe.other_certificate, &presented.other) {
        judge_pkix(probe, presented, host, pkix, when);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_error_says_how_far_the_probe_got() {
        for (e, kind) in [
            (
                SessionError::Connect("refused".into()),
                ProbeFailure::Unreachable,
            ),
            (
                SessionError::Timeout(Stage::Connect),
                ProbeFailure::Unreachable,
            ),
            (
                SessionError::Timeout(Stage::Greeting),
                ProbeFailure::Unreachable,
            ),
            (SessionError::Timeout(Stage::Ehlo), ProbeFailure::SmtpFailed),
            (SessionError::Io("reset".into()), ProbeFailure::SmtpFailed),
            (
                SessionError::StartTlsNotOffered,
                ProbeFailure::StarttlsMissing,
            ),
            (
                SessionError::Timeout(Stage::TlsHandshake),
                ProbeFailure::TlsHandshakeFailed,
            ),
            (
                SessionError::Tls("bad record".into()),
                ProbeFailure::TlsHandshakeFailed,
            ),
            (
                SessionError::StartTlsInjection,
                ProbeFailure::TlsHandshakeFailed,
            ),
            (
                SessionError::Refused {
                    stage: Stage::StartTls,
                    reply: smtp::reply::Reply::new(454, vec!["4.7.0 not now".into()]),
                },
                ProbeFailure::TlsHandshakeFailed,
            ),
            (
                SessionError::Refused {
                    stage: Stage::Greeting,
                    reply: smtp::reply::Reply::new(554, vec!["go away".into()]),
                },
                ProbeFailure::SmtpFailed,
            ),
            (
                SessionError::Protocol {
                    stage: Stage::Greeting,
                    error: smtp::reply::ReplyError::Closed,
                },
                ProbeFailure::Unreachable,
            ),
        ] {
            assert_eq!(ProbeFailure::of(&e), kind, "{e}");
        }
        assert_eq!(
            serde_json::to_value(ProbeFailure::TlsHandshakeFailed).unwrap(),
            "tls-handshake-failed"
        );
        assert!(ProbeFailure::StarttlsMissing.reached_smtp());
        assert!(!ProbeFailure::SmtpFailed.reached_smtp());
    }

    #[test]
    fn each_family_gets_its_own_schemes_without_leaking() {
        let base = rustls::crypto::ring::default_provider();
        for family in [KeyFamily::Ecdsa, KeyFamily::Rsa] {
            let p = restricted(&base, family);
            let mapping = p.signature_verification_algorithms.mapping;
            assert!(!mapping.is_empty(), "{family:?}");
            assert!(mapping.iter().all(|(s, _)| family.allows(*s)), "{family:?}");
            assert!(
                mapping.iter().all(|(s, _)| !family.other().allows(*s)),
                "{family:?}"
            );
            // A part of the provider's own static table.
            let all = base
                .signature_verification_algorithms
                .mapping
                .as_ptr_range();
            assert!(all.contains(&mapping.as_ptr()));
        }
        assert!(KeyFamily::Rsa.allows(SignatureScheme::RSA_PSS_SHA256));
        assert!(KeyFamily::Ecdsa.allows(SignatureScheme::ED25519));
        assert!(!KeyFamily::Ecdsa.allows(SignatureScheme::RSA_PKCS1_SHA1));
        // A table that mixes the families has no run to cut out.
        static MIXED: [(SignatureScheme, ()); 3] = [
            (SignatureScheme::RSA_PSS_SHA256, ()),
            (SignatureScheme::ECDSA_NISTP256_SHA256, ()),
            (SignatureScheme::RSA_PKCS1_SHA256, ()),
        ];
        assert!(family_run(&MIXED, KeyFamily::Rsa).is_none());
        assert_eq!(
            family_run(&MIXED, KeyFamily::Ecdsa).map(<[_]>::len),
            Some(1)
        );
    }
}
