//! DANE-authenticated TLS to one SMTP server, in one call: the route of the host
//! (RFC 7672 §2.2), then a rustls configuration whose certificate verifier decides by the
//! host's TLSA records (RFC 7672 §3) and the SNI name to send (RFC 7672 §8.1).
//!
//! ```no_run
//! # async fn demo(resolver: dns::Backend, tcp_after_starttls: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use dns::tls::DaneTls;
//!
//! let provider = Arc::new(rustls::crypto::ring::default_provider());
//! let dane = DaneTls::for_host(&resolver, &"mx.example.com".parse()?, 25, provider).await?;
//! // … connect to one of dane.candidate().addresses, EHLO, STARTTLS, then hand the socket to
//! // rustls, e.g. tokio_rustls::TlsConnector::from(dane.config()).connect(dane.server_name(), tcp) …
//! match dane.verified() {
//!     Some(proof) => println!("verified by {} at depth {}", proof.record(), proof.depth()),
//!     None => println!("not authenticated: {:?}", dane.failure()),
//! }
//! # Ok(()) }
//! ```
//!
//! A [`DaneTls`] serves **one** connection: its verifier keeps the verdict of the handshake it
//! took part in (see [`dane::DaneServerVerifier`]). Make a new one for the next connection
//! (the resolver's cache makes the lookups cheap).

use std::sync::Arc;

use dane::{Authenticator, DaneServerVerifier, Tlsa, Verified, VerifyError};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;

use crate::discover::discover;
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::route::{Candidate, DaneState, NextHop, Route};

/// DANE authentication prepared for one connection to one host: the host's route
/// [`Candidate`], a verifier holding its usable TLSA records and reference names, and the
/// rustls configuration that uses it.
#[derive(Debug)]
pub struct DaneTls {
    candidate: Candidate,
    verifier: Arc<DaneServerVerifier>,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

/// Why no DANE verifier can be made for a host.
#[derive(Debug, thiserror::Error)]
pub enum DaneTlsError {
    /// No secure TLSA records (the host's addresses or its TLSA RRset are insecure, or there
    /// are none): DANE does not apply, and an SMTP client falls back to opportunistic TLS
    /// (RFC 7672 §2.2). Nothing can be verified by DANE.
    #[error("DANE does not apply to {host}: {reason}")]
    NotApplicable {
        /// The host.
        host: DnsName,
        /// Why, with the RFC rule.
        reason: String,
    },
    /// Secure TLSA records, none of them usable under the SMTP profile (RFC 7672 §3.1.3,
    /// RFC 7671 §9): TLS is still mandatory, but the server cannot be authenticated
    /// (RFC 7672 §2.2).
    #[error(
        "{host} has secure TLSA records, none usable for SMTP (RFC 7672 §3.1.3): TLS is mandatory but cannot be authenticated (RFC 7672 §2.2)"
    )]
    Unusable {
        /// The host.
        host: DnsName,
        /// The records found.
        records: Vec<Tlsa>,
    },
    /// The host must not be used: a lookup DANE depends on is bogus or indeterminate, or the
    /// host has no addresses (RFC 7672 §2.1.1, §2.2).
    #[error("{host} must not be used: {reason}")]
    HostUnusable {
        /// The host.
        host: DnsName,
        /// Why, with the RFC rule.
        reason: String,
    },
    /// The route of the host could not be made (a route-wide defer or bounce).
    #[error("no route to {host}: {reason}")]
    NoRoute {
        /// The host.
        host: DnsName,
        /// Why.
        reason: String,
    },
    /// The TLSA base domain is not a name rustls can send as SNI, or the crypto provider
    /// offers no safe protocol version.
    #[error("TLS configuration for {host}: {reason}")]
    Config {
        /// The host.
        host: DnsName,
        /// Why.
        reason: String,
    },
}

impl DaneTls {
    /// Looks up `host` as a configured next hop on `port` (its A/AAAA records, then the TLSA
    /// records at `_PORT._tcp` of its TLSA base domain, RFC 7672 §2.2.2 and §2.2.3) and, when
    /// DANE applies, prepares the verifier and configuration for one connection to it.
    ///
    /// The host is taken as given, as a secure MX lookup would have named it (RFC 7672
    /// §2.2.1): a successful verification is `verified`, and DANE-TA certificates may carry
    /// the TLSA base domain or `host` (RFC 7672 §3.2.3). For the hosts of a mail domain, use
    /// [`discover`] and [`DaneTls::for_candidate`] on each candidate.
    pub async fn for_host<R: Resolver>(
        resolver: &R,
        host: &DnsName,
        port: u16,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, DaneTlsError> {
        let hop = NextHop::Host {
            host: host.clone(),
            port,
        };
        match discover(resolver, &hop).await {
            Route::Deliver { candidates, .. } => match candidates.into_iter().next() {
                Some(c) => Self::for_candidate(c, provider),
                None => Err(DaneTlsError::NoRoute {
                    host: host.clone(),
                    reason: "route discovery returned no host".to_owned(),
                }),
            },
            Route::Defer { reason, .. } | Route::Bounce { reason, .. } => {
                Err(DaneTlsError::NoRoute {
                    host: host.clone(),
                    reason,
                })
            }
        }
    }

    /// Prepares the verifier and configuration for one connection to a route candidate, when
    /// its DANE state is usable (RFC 7672 §2.2): the usable TLSA records and the candidate's
    /// reference names (RFC 7672 §3.2.3) go to an [`Authenticator::smtp`], and the SNI name
    /// is the TLSA base domain (RFC 7672 §8.1).
    pub fn for_candidate(
        candidate: Candidate,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, DaneTlsError> {
        let host = candidate.name.clone();
        let records = match &candidate.dane {
            DaneState::Usable { records } => records.clone(),
            DaneState::Unusable => {
                return Err(DaneTlsError::Unusable {
                    host,
                    records: candidate.tlsa,
                });
            }
            DaneState::NotApplicable { reason } => {
                return Err(DaneTlsError::NotApplicable {
                    host,
                    reason: reason.clone(),
                });
            }
            DaneState::HostUnusable { reason } => {
                return Err(DaneTlsError::HostUnusable {
                    host,
                    reason: reason.clone(),
                });
            }
        };
        let config_error = |reason: String| DaneTlsError::Config {
            host: host.clone(),
            reason,
        };
        let server_name = ServerName::try_from(candidate.tlsa_base.as_str().to_owned())
            .map_err(|e| config_error(format!("SNI {}: {e}", candidate.tlsa_base)))?;
        let authenticator = Authenticator::smtp(&records, candidate.reference_names.clone());
        let verifier =
            DaneServerVerifier::new(authenticator, provider.signature_verification_algorithms);
        let config = verifier
            .client_config(provider)
            .map_err(|e| config_error(e.to_string()))?;
        Ok(Self {
            candidate,
            verifier,
            config: Arc::new(config),
            server_name,
        })
    }

    /// The rustls client configuration to connect with: its certificate verifier is this
    /// connection's DANE verifier, and SNI is on.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to send as SNI: the TLSA base domain (RFC 7672 §8.1). It is *not* what the
    /// certificate is checked against; the verifier uses the reference names of the route.
    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }

    /// The host as route discovery found it: addresses with their DNSSEC status, TLSA owner
    /// name, records, reference names.
    pub fn candidate(&self) -> &Candidate {
        &self.candidate
    }

    /// The DANE verifier of this connection.
    pub fn verifier(&self) -> &Arc<DaneServerVerifier> {
        &self.verifier
    }

    /// After the handshake: the proof that the server was authenticated by one of its TLSA
    /// records and signed the handshake with the matching key; `None` otherwise
    /// ([`DaneServerVerifier::verified`]).
    pub fn verified(&self) -> Option<Verified> {
        self.verifier.verified()
    }

    /// After a failed handshake: why the server's certificate chain was rejected, if it was
    /// ([`DaneServerVerifier::outcome`]).
    pub fn failure(&self) -> Option<VerifyError> {
        self.verifier.outcome()?.err()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    use rustls::crypto::ring::default_provider;

    use super::*;
    use crate::lookup::{Lookup, Outcome, Record, RecordType};
    use crate::status::Status;

    /// Answers from a table; anything not in it, or without records, is a NODATA answer.
    struct Table(HashMap<(String, RecordType), (Status, Vec<Record>)>);

    impl Resolver for Table {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
            let (status, outcome) = match self.0.get(&(name.as_str().to_owned(), rtype)) {
                Some((status, records)) if !records.is_empty() => {
                    (*status, Outcome::Records(records.clone()))
                }
                Some((status, _)) => (*status, Outcome::NoData),
                None => (Status::Secure, Outcome::NoData),
            };
            Lookup::new(name.clone(), rtype, status, outcome, vec![], 300)
        }
    }

    const DIGEST: &str = "3 1 1 0000000000000000000000000000000000000000000000000000000000000001";

    fn table(address: Status, tlsa: Status, records: &[&str]) -> Table {
        let mut t = HashMap::new();
        t.insert(
            ("mx.example.test".to_owned(), RecordType::A),
            (
                address,
                vec![Record::Address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))],
            ),
        );
        t.insert(
            ("_25._tcp.mx.example.test".to_owned(), RecordType::Tlsa),
            (
                tlsa,
                records
                    .iter()
                    .map(|r| Record::Tlsa(r.parse().unwrap()))
                    .collect(),
            ),
        );
        Table(t)
    }

    async fn for_host(t: &Table) -> Result<DaneTls, DaneTlsError> {
        let host: DnsName = "mx.example.test".parse().unwrap();
        DaneTls::for_host(t, &host, 25, Arc::new(default_provider())).await
    }

    #[tokio::test]
    async fn secure_usable_records_make_a_verifier_with_sni_at_the_base_domain() {
        let dane = for_host(&table(Status::Secure, Status::Secure, &[DIGEST]))
            .await
            .unwrap();
        assert_eq!(
            dane.server_name(),
            ServerName::try_from("mx.example.test").unwrap()
        );
        assert!(dane.config().enable_sni);
        assert_eq!(dane.candidate().tlsa.len(), 1);
        assert_eq!(dane.candidate().addresses.len(), 1);
        assert_eq!(
            dane.candidate()
                .reference_names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["mx.example.test"]
        );
        // Before any handshake there is neither proof nor failure.
        assert!(dane.verified().is_none());
        assert!(dane.failure().is_none());
    }

    #[tokio::test]
    async fn insecure_addresses_or_tlsa_mean_dane_does_not_apply() {
        for t in [
            table(Status::Insecure, Status::Secure, &[DIGEST]),
            table(Status::Secure, Status::Insecure, &[DIGEST]),
            table(Status::Secure, Status::Secure, &[]),
        ] {
            let err = for_host(&t).await.unwrap_err();
            assert!(matches!(err, DaneTlsError::NotApplicable { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("DANE does not apply to mx.example.test")
            );
        }
    }

    #[tokio::test]
    async fn bogus_tlsa_makes_the_host_unusable() {
        for status in [Status::Bogus, Status::Indeterminate] {
            let err = for_host(&table(Status::Secure, status, &[DIGEST]))
                .await
                .unwrap_err();
            assert!(matches!(err, DaneTlsError::HostUnusable { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn only_unusable_records_are_reported_as_such() {
        // PKIX-EE (usage 1) is not usable for SMTP (RFC 7672 §3.1.3).
        let pkix = "1 1 1 0000000000000000000000000000000000000000000000000000000000000001";
        let err = for_host(&table(Status::Secure, Status::Secure, &[pkix]))
            .await
            .unwrap_err();
        let DaneTlsError::Unusable { records, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(records.len(), 1);
        assert!(err.to_string().contains("none usable"), "{err}");
    }
}
