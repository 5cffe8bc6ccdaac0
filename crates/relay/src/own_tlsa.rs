//! Do the TLSA records published for this host authenticate what it serves?
//!
//! A DANE peer delivering to this relay looks up `_25._tcp.<MX host>` (RFC 7672 §2.2) and
//! defers its mail unless one of the usable records authenticates the chain the relay
//! presents (RFC 7672 §3.1; RFC 7671 §5). After a certificate renewal that changed the key
//! without a new record, or a rollover finished too early, that happens silently: the peers
//! defer, nothing here fails. So the daemon checks itself, at start, after every reload
//! (SIGHUP) and hourly, in a task of its own that never delays or stops anything else: it
//! looks up `_25._tcp.<[server] hostname>` through the daemon's own resolver (the one
//! delivery uses), and authenticates its chains with those records exactly as a peer would
//! ([`dane::Authenticator::smtp`], reference name `[server] hostname`: DANE-EE(3) by key or
//! certificate, DANE-TA(2) by a CA of the chain or one carried in the record, with the name
//! and validity checks of RFC 7672 §3.2; PKIX usages and unknown fields are unusable).
//!
//! **Which chains.** Peers doing DANE send SNI, the TLSA base domain (RFC 7672 §8.1), which
//! is `[server] hostname` when the MX record names this host: they are served the chains
//! valid for that name (or all chains, when none is; see [`smtp::server::tls`]), the first
//! their key type allows. So **every chain served for `[server] hostname`** must be
//! authenticated ([`served_for`]): an RSA-only peer gets the RSA chain, another the ECDSA
//! one. Chains for other names (offered to clients asking for those names) are not checked.
//!
//! **The gauge** `danemta_own_tlsa_match{host="<hostname>"}` ([`crate::metrics`]):
//!
//! | what the lookup finds | gauge | log |
//! | --- | --- | --- |
//! | secure records authenticating every chain served for the name | 1 | info |
//! | secure records not authenticating some chain, or none usable | 0 | warning: which chain, why, the records seen |
//! | a bogus answer (DNSSEC validation failed) | 0 | warning: peers defer, as for a mismatch |
//! | no records (a secure denial), or an insecure zone: DANE is not in use | none (NaN if set before) | info |
//! | no answer (timeout, SERVFAIL, network): nothing known | unchanged | warning |
//!
//! The MX host name in DNS may differ from `[server] hostname` (or be a CNAME to it: RFC
//! 7672 §2.2.2): the check covers the records at `_25._tcp.<[server] hostname>` only
//! (`danemta check <domain>` connects and checks every MX host as a peer would).

use std::sync::Arc;
use std::time::Duration;

use dane::pki_types::{ServerName, UnixTime};
use dane::{Authenticator, Profile, Tlsa};
use dns::{DnsName, Lookup, Outcome, Record, RecordType, Resolver, Status};
use tokio::sync::{Notify, watch};

use crate::certs::{Certs, Offered};
use crate::metrics;

/// The port whose TLSA records peers use: SMTP between MTAs (RFC 7672 §2.2).
pub const PORT: u16 = 25;

/// How often the records are checked again between reloads.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// How long one check may wait for DNS (the resolver has its own `[dns] timeout` per query;
/// this bounds a whole validation chain).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one check found; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// DANE is not in use for the name: no TLSA records (securely denied), or the zone is
    /// insecure. Not a fault: no alert.
    NotInUse {
        /// Why, for the log.
        why: String,
    },
    /// Every chain served for the name is authenticated.
    Match {
        /// Per chain (its label): how (e.g. `matched DANE-EE(3) 3 1 1 … at depth 0`).
        chains: Vec<(String, String)>,
    },
    /// Some chain served for the name is not authenticated, or no record is usable.
    Mismatch {
        /// Per chain that failed (its label): why.
        chains: Vec<(String, String)>,
        /// The published records, as seen (malformed ones by their text).
        records: Vec<String>,
    },
    /// The TLSA answer is bogus: DNSSEC validation failed, so peers defer.
    Bogus {
        /// What failed.
        why: String,
    },
    /// No answer (timeout, SERVFAIL, network): nothing is known, the gauge stays as it was.
    Unknown {
        /// What failed.
        why: String,
    },
}

impl Verdict {
    /// The gauge's new value: `Some(Some(matched))` to set it, `Some(None)` for "not in use",
    /// `None` to leave it unchanged.
    pub fn gauge(&self) -> Option<Option<bool>> {
        match self {
            Verdict::NotInUse { .. } => Some(None),
            Verdict::Match { .. } => Some(Some(true)),
            Verdict::Mismatch { .. } | Verdict::Bogus { .. } => Some(Some(false)),
            Verdict::Unknown { .. } => None,
        }
    }
}

/// The chains a peer asking for `hostname` by SNI may be served, as
/// [`smtp::server::tls::SniResolver`] chooses: those whose leaf is valid for the name, or
/// every chain when none is (the SNI then selects nothing and the key type decides).
pub fn served_for<'a>(hostname: &DnsName, offered: &'a [Offered]) -> Vec<&'a Offered> {
    let name = hostname.to_string();
    let named: Vec<&Offered> = match ServerName::try_from(name.as_str()) {
        Ok(server_name) => offered.iter().filter(|o| serves(o, &server_name)).collect(),
        Err(_) => Vec::new(),
    };
    if named.is_empty() {
        offered.iter().collect()
    } else {
        named
    }
}

fn serves(offered: &Offered, name: &ServerName<'_>) -> bool {
    offered
        .certs
        .first()
        .and_then(|leaf| rustls::server::ParsedCertificate::try_from(leaf).ok())
        .is_some_and(|parsed| rustls::client::verify_server_name(&parsed, name).is_ok())
}

/// Decides what the TLSA lookup `tlsa` (of `_25._tcp.<hostname>`) means for the chains
/// `offered` at time `now`; see the module documentation. Pure: no DNS, no clock.
pub fn check(hostname: &DnsName, tlsa: &Lookup, offered: &[Offered], now: UnixTime) -> Verdict {
    let owner = tlsa.name();
    let records = match tlsa.status() {
        Status::Bogus => {
            return Verdict::Bogus {
                why: match tlsa.failure() {
                    Some(f) => format!("{owner}: {f}"),
                    None => format!("{owner}: the answer does not validate"),
                },
            };
        }
        Status::Indeterminate => {
            return Verdict::Unknown {
                why: match tlsa.failure() {
                    Some(f) => format!("{owner}: {f}"),
                    None => format!("{owner}: no validated answer"),
                },
            };
        }
        Status::Insecure => {
            return Verdict::NotInUse {
                why: format!(
                    "{owner} is in an insecure (unsigned) zone: peers do not use its TLSA records (RFC 7672 §2.2)"
                ),
            };
        }
        Status::Secure => match tlsa.require(Status::SECURE) {
            Ok(Outcome::Records(records)) => records,
            Ok(_) => {
                return Verdict::NotInUse {
                    why: format!("{owner} has no TLSA records"),
                };
            }
            Err(status) => {
                return Verdict::Unknown {
                    why: format!("{owner}: {status:?}"),
                };
            }
        },
    };
    let mut seen: Vec<String> = Vec::new();
    let mut rrset: Vec<Tlsa> = Vec::new();
    for record in records {
        match record {
            Record::Tlsa(t) => {
                seen.push(t.to_string());
                rrset.push(t.clone());
            }
            Record::MalformedTlsa(text) => seen.push(format!("{text} (malformed)")),
            _ => {}
        }
    }
    if rrset.is_empty() && seen.is_empty() {
        return Verdict::NotInUse {
            why: format!("{owner} has no TLSA records"),
        };
    }
    let served = served_for(hostname, offered);
    if Profile::Smtp.usable_records(&rrset).is_empty() {
        return Verdict::Mismatch {
            chains: served
                .iter()
                .map(|o| {
                    (
                        o.label.clone(),
                        "no published record is usable (SMTP uses only DANE-TA(2) and DANE-EE(3) with known selector and matching type: RFC 7672 §3.1.3): peers encrypt but cannot authenticate".to_owned(),
                    )
                })
                .collect(),
            records: seen,
        };
    }
    let names: Vec<_> = hostname.reference_name().into_iter().collect();
    let authenticator = Authenticator::smtp(&rrset, names);
    let mut matched = Vec::new();
    let mut failed = Vec::new();
    for chain in served {
        match authenticator.verify(&chain.certs, now) {
            Ok(verified) => matched.push((chain.label.clone(), verified.to_string())),
            Err(e) => failed.push((chain.label.clone(), e.to_string())),
        }
    }
    if failed.is_empty() {
        Verdict::Match { chains: matched }
    } else {
        Verdict::Mismatch {
            chains: failed,
            records: seen,
        }
    }
}

/// Looks up `_25._tcp.<hostname>` through `resolver` and checks the chains offered now.
pub async fn check_now<R: Resolver>(
    resolver: &R,
    hostname: &DnsName,
    offered: &[Offered],
) -> Verdict {
    let owner = match hostname.tlsa_owner(PORT) {
        Ok(owner) => owner,
        Err(e) => {
            return Verdict::NotInUse {
                why: format!("no TLSA record can exist for {hostname}: {e}"),
            };
        }
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(&owner, RecordType::Tlsa)).await {
        Ok(lookup) => check(hostname, &lookup, offered, UnixTime::now()),
        Err(_) => Verdict::Unknown {
            why: format!("{owner}: no answer within {}s", LOOKUP_TIMEOUT.as_secs()),
        },
    }
}

/// Logs `verdict` for `hostname` and sets the gauge.
pub fn report(hostname: &DnsName, verdict: &Verdict) {
    let owner = format!("_{PORT}._tcp.{hostname}");
    match verdict {
        Verdict::NotInUse { why } => {
            tracing::info!(target: "relay", "own TLSA: DANE not in use for {hostname}: {why}");
        }
        Verdict::Match { chains } => {
            for (chain, how) in chains {
                tracing::info!(target: "relay", "own TLSA: {owner} authenticates chain {chain}: {how}");
            }
        }
        Verdict::Mismatch { chains, records } => {
            for (chain, why) in chains {
                tracing::warn!(
                    target: "relay",
                    "own TLSA mismatch: chain {chain} served for {hostname} is not authenticated by the records at {owner} [{}]: {why}; peers doing DANE defer mail to this host: publish the chain's record (`danemta tlsa generate --cert {chain}`) or serve a chain the records match, then reload",
                    records.join(", ")
                );
            }
        }
        Verdict::Bogus { why } => {
            tracing::warn!(
                target: "relay",
                "own TLSA: the answer for {owner} is bogus ({why}): peers doing DANE defer mail to this host until DNSSEC validates (check the zone's signatures and DS records)"
            );
        }
        Verdict::Unknown { why } => {
            tracing::warn!(
                target: "relay",
                "own TLSA: cannot check {owner} now ({why}); danemta_own_tlsa_match unchanged, checked again in an hour"
            );
        }
    }
    if let Some(value) = verdict.gauge() {
        metrics::own_tlsa_match(&hostname.to_string(), value);
    }
}

/// The daemon's task: checks at once, then whenever `recheck` is notified (after a reload)
/// and every [`INTERVAL`], until `stop` turns true.
pub async fn run<R: Resolver>(
    resolver: Arc<R>,
    hostname: DnsName,
    certs: Arc<Certs>,
    recheck: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let offered = certs.offered();
        let verdict = check_now(resolver.as_ref(), &hostname, &offered).await;
        report(&hostname, &verdict);
        tokio::select! {
            () = recheck.notified() => {}
            () = tokio::time::sleep(INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use dane::pki_types::CertificateDer;
    use dane::{Matching, Selector, Usage};
    use dns::{Failure, testing};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    const HOST: &str = "relay.example.test";

    fn host() -> DnsName {
        HOST.parse().unwrap()
    }

    fn owner() -> DnsName {
        host().tlsa_owner(PORT).unwrap()
    }

    /// A CA (certificate and issuer).
    fn ca(cn: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(p, key))
    }

    /// A leaf for `names`, self-signed or issued by `issuer`.
    fn leaf(names: &[&str], issuer: Option<&Issuer<'_, KeyPair>>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = match issuer {
            Some(issuer) => p.signed_by(&key, issuer).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        cert.der().clone()
    }

    fn offered(label: &str, certs: Vec<CertificateDer<'static>>) -> Offered {
        Offered {
            label: label.to_owned(),
            certs,
            not_after: None,
        }
    }

    fn record(usage: Usage, selector: Selector, cert: &CertificateDer<'_>) -> Record {
        let info = dane::cert::CertInfo::parse(cert).unwrap();
        Record::Tlsa(dane::matching::record_for(usage, selector, Matching::Sha256, &info).unwrap())
    }

    fn secure(records: Vec<Record>) -> Lookup {
        testing::lookup(
            owner(),
            RecordType::Tlsa,
            Status::Secure,
            Outcome::Records(records),
            Vec::new(),
            300,
        )
    }

    fn verdict(lookup: &Lookup, chains: &[Offered]) -> Verdict {
        check(&host(), lookup, chains, UnixTime::now())
    }

    #[test]
    fn a_3_1_1_record_of_the_served_key_matches() {
        let cert = leaf(&[HOST], None);
        let chains = [offered("/etc/danemta/chain.pem", vec![cert.clone()])];
        let v = verdict(
            &secure(vec![record(Usage::DaneEe, Selector::Spki, &cert)]),
            &chains,
        );
        let Verdict::Match { chains: matched } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(matched[0].0, "/etc/danemta/chain.pem");
        assert!(matched[0].1.contains("3 1 1"), "{matched:?}");
        assert_eq!(v.gauge(), Some(Some(true)));
    }

    #[test]
    fn a_record_of_another_key_is_a_mismatch_naming_chain_and_records() {
        let served = leaf(&[HOST], None);
        let published = leaf(&[HOST], None);
        let rec = record(Usage::DaneEe, Selector::Spki, &published);
        let Record::Tlsa(t) = &rec else {
            unreachable!()
        };
        let text = t.to_string();
        let v = verdict(
            &secure(vec![rec]),
            &[offered("/etc/danemta/new.pem", vec![served])],
        );
        assert_eq!(v.gauge(), Some(Some(false)));
        let Verdict::Mismatch { chains, records } = v else {
            panic!("{v:?}")
        };
        assert_eq!(chains[0].0, "/etc/danemta/new.pem");
        assert_eq!(records, [text]);
    }

    #[test]
    fn a_2_1_1_record_of_the_ca_matches_a_chain_valid_for_the_name_only() {
        let (ca_cert, issuer) = ca("Relay CA");
        let good = leaf(&[HOST], Some(&issuer));
        let rec = record(Usage::DaneTa, Selector::Spki, &ca_cert);
        let v = verdict(
            &secure(vec![rec.clone()]),
            &[offered("good", vec![good, ca_cert.clone()])],
        );
        assert_eq!(v.gauge(), Some(Some(true)), "{v:?}");
        // The CA matches but the leaf is for another name: DANE-TA checks names (RFC 7672
        // §3.2.3). No chain is valid for the host, so every chain is served and checked.
        let misnamed = leaf(&["other.example.test"], Some(&issuer));
        let v = verdict(
            &secure(vec![rec]),
            &[offered("misnamed", vec![misnamed, ca_cert])],
        );
        assert_eq!(v.gauge(), Some(Some(false)), "{v:?}");
    }

    #[test]
    fn every_chain_served_for_the_name_must_match_and_others_are_not_checked() {
        let ecdsa = leaf(&[HOST], None);
        let rsa_like = leaf(&[HOST], None);
        let other_name = leaf(&["submit.example.test"], None);
        let chains = [
            offered("ecdsa", vec![ecdsa.clone()]),
            offered("second", vec![rsa_like.clone()]),
            offered("submit", vec![other_name]),
        ];
        assert_eq!(
            served_for(&host(), &chains)
                .iter()
                .map(|o| o.label.as_str())
                .collect::<Vec<_>>(),
            ["ecdsa", "second"]
        );
        let only_first = secure(vec![record(Usage::DaneEe, Selector::Spki, &ecdsa)]);
        let v = verdict(&only_first, &chains);
        let Verdict::Mismatch { chains: failed, .. } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(
            failed.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["second"]
        );
        let both = secure(vec![
            record(Usage::DaneEe, Selector::Spki, &ecdsa),
            record(Usage::DaneEe, Selector::FullCert, &rsa_like),
        ]);
        assert_eq!(verdict(&both, &chains).gauge(), Some(Some(true)));
    }

    #[test]
    fn unusable_records_only_are_a_mismatch() {
        let cert = leaf(&[HOST], None);
        // PKIX-EE(1): unusable for SMTP even though it matches.
        let v = verdict(
            &secure(vec![record(Usage::PkixEe, Selector::Spki, &cert)]),
            &[offered("c", vec![cert])],
        );
        assert!(matches!(v, Verdict::Mismatch { .. }), "{v:?}");
    }

    #[test]
    fn no_records_or_an_insecure_zone_is_not_in_use() {
        let cert = leaf(&[HOST], None);
        let chains = [offered("c", vec![cert.clone()])];
        for outcome in [Outcome::NoData, Outcome::NxDomain] {
            let l = testing::lookup(
                owner(),
                RecordType::Tlsa,
                Status::Secure,
                outcome,
                Vec::new(),
                300,
            );
            assert_eq!(verdict(&l, &chains).gauge(), Some(None));
        }
        let insecure = testing::lookup(
            owner(),
            RecordType::Tlsa,
            Status::Insecure,
            Outcome::Records(vec![record(Usage::DaneEe, Selector::Spki, &cert)]),
            Vec::new(),
            300,
        );
        assert!(matches!(
            verdict(&insecure, &chains),
            Verdict::NotInUse { .. }
        ));
    }

    #[test]
    fn bogus_is_a_mismatch_and_a_failed_lookup_changes_nothing() {
        let chains = [offered("c", vec![leaf(&[HOST], None)])];
        let bogus = testing::failed(
            owner(),
            RecordType::Tlsa,
            Failure::Bogus("RRSIG expired".into()),
        );
        let v = verdict(&bogus, &chains);
        assert!(
            matches!(&v, Verdict::Bogus { why } if why.contains("RRSIG expired")),
            "{v:?}"
        );
        assert_eq!(v.gauge(), Some(Some(false)));
        let timeout = testing::failed(owner(), RecordType::Tlsa, Failure::Timeout);
        let v = verdict(&timeout, &chains);
        assert!(matches!(v, Verdict::Unknown { .. }), "{v:?}");
        assert_eq!(v.gauge(), None);
    }
}
