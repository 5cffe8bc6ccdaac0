//! Choosing a back-end from the `--resolver` option (PRODUCT.md).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::dnssec::TrustAnchors;

use crate::lookup::{Lookup, RecordType};
use crate::name::DnsName;
use crate::resolver::{Cached, Resolver};
use crate::trust_ad::TrustAd;
use crate::validating::{SetupError, Validating};

/// The `--resolver` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverSpec {
    /// `validating` (upstream from /etc/resolv.conf) or `validating@IP:PORT`.
    Validating(Option<SocketAddr>),
    /// `trust-ad@IP:PORT`.
    TrustAd(SocketAddr),
}

impl Default for ResolverSpec {
    fn default() -> Self {
        ResolverSpec::Validating(None)
    }
}

impl ResolverSpec {
    /// Whether this trusts the AD bit of a resolver that is not on loopback: without an
    /// authenticated channel, anyone on the network path can forge it (RFC 6698 §4.1,
    /// RFC 7672 §2.1.1), so callers warn.
    pub fn trusts_ad_off_loopback(&self) -> bool {
        matches!(self, ResolverSpec::TrustAd(a) if !a.ip().is_loopback())
    }
}

/// A `--resolver` value that is not one of the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--resolver {0:?}: expected validating, validating@IP:PORT or trust-ad@IP:PORT")]
pub struct SpecError(pub String);

impl FromStr for ResolverSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let bad = || SpecError(text.to_owned());
        let addr = |a: &str| -> Result<SocketAddr, SpecError> {
            a.parse()
                .or_else(|_| {
                    a.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| bad())
        };
        match text.split_once('@') {
            None if text == "validating" => Ok(ResolverSpec::Validating(None)),
            Some(("validating", a)) => Ok(ResolverSpec::Validating(Some(addr(a)?))),
            Some(("trust-ad", a)) => Ok(ResolverSpec::TrustAd(addr(a)?)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ResolverSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverSpec::Validating(None) => f.write_str("validating"),
            ResolverSpec::Validating(Some(a)) => write!(f, "validating@{a}"),
            ResolverSpec::TrustAd(a) => write!(f, "trust-ad@{a}"),
        }
    }
}

/// Answers kept at most this long, whatever the TTL says.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Answers kept at most.
const CACHE_ENTRIES: usize = 100_000;

/// One of the two back-ends, behind the answer cache.
pub enum Backend {
    /// In-process validation.
    Validating(Box<Cached<Validating>>),
    /// The upstream's AD bit.
    TrustAd(Cached<TrustAd>),
}

impl Backend {
    /// Sets up the back-end `spec` names; `anchor_file` replaces the IANA root anchors (only
    /// meaningful for the validating back-end). Must be called inside a tokio runtime.
    pub async fn open(
        spec: &ResolverSpec,
        anchor_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        Ok(match spec {
            ResolverSpec::Validating(upstream) => {
                let mut v = match upstream {
                    Some(a) => Validating::new(&[*a], TrustAnchors::default(), timeout)?,
                    None => Validating::from_system(TrustAnchors::default(), timeout)?,
                };
                if let Some(path) = anchor_file {
                    v = v.with_anchor_file(path).await?;
                }
                Backend::Validating(Box::new(Cached::new(v, CACHE_ENTRIES, MAX_CACHE_TTL)))
            }
            ResolverSpec::TrustAd(a) => Backend::TrustAd(Cached::new(
                TrustAd::new(*a, timeout),
                CACHE_ENTRIES,
                MAX_CACHE_TTL,
            )),
        })
    }
}

impl Backend {
    /// Negative trust anchors (RFC 7646) for the validating back-end: names at or below them
    /// are treated as insecure. The trust-ad back-end leaves them to its resolver (Unbound's
    /// `domain-insecure`), so they are ignored there.
    pub fn set_negative_trust_anchors(&mut self, names: &[DnsName]) {
        if let Backend::Validating(v) = self {
            v.inner_mut().set_negative_trust_anchors(names);
        }
    }

    /// DNS queries sent upstream so far (cache hits send none).
    pub fn queries_sent(&self) -> u64 {
        match self {
            Backend::Validating(v) => v.inner().queries_sent(),
            Backend::TrustAd(t) => t.inner().queries_sent(),
        }
    }
}

impl Resolver for Backend {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        match self {
            Backend::Validating(v) => v.lookup(name, rtype).await,
            Backend::TrustAd(t) => t.lookup(name, rtype).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_option_forms() {
        assert_eq!("validating".parse(), Ok(ResolverSpec::Validating(None)));
        assert_eq!(
            "validating@127.0.0.1:5353".parse(),
            Ok(ResolverSpec::Validating(Some(
                "127.0.0.1:5353".parse().unwrap()
            )))
        );
        assert_eq!(
            "trust-ad@127.0.0.53".parse(),
            Ok(ResolverSpec::TrustAd("127.0.0.53:53".parse().unwrap()))
        );
        assert_eq!(
            "trust-ad@[::1]:53".parse(),
            Ok(ResolverSpec::TrustAd("[::1]:53".parse().unwrap()))
        );
        for bad in [
            "",
            "trust-ad",
            "trust-ad@",
            "validating@x",
            "unbound@127.0.0.1",
        ] {
            assert!(bad.parse::<ResolverSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            ResolverSpec::TrustAd("127.0.0.1:53".parse().unwrap()).to_string(),
            "trust-ad@127.0.0.1:53"
        );
        let off: ResolverSpec = "trust-ad@192.0.2.53".parse().unwrap();
        assert!(off.trusts_ad_off_loopback());
        for on in [
            "trust-ad@127.0.0.53",
            "trust-ad@[::1]:53",
            "validating@192.0.2.53",
        ] {
            assert!(
                !on.parse::<ResolverSpec>().unwrap().trusts_ad_off_loopback(),
                "{on}"
            );
        }
    }
}
