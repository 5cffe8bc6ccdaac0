//! Value types of the configuration that are not plain strings: IP networks, policy domains
//! and next hops.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use dns::DnsName;

/// An IP network written `address/prefix` (`127.0.0.0/8`, `::1/128`); a bare address is a
/// single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    /// The address as written.
    pub address: IpAddr,
    /// The prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix: u8,
}

/// Text that is not an IP network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP network: expected ADDRESS/PREFIX, e.g. 192.0.2.0/24 or 2001:db8::/32")]
pub struct IpNetworkError(pub String);

impl FromStr for IpNetwork {
    type Err = IpNetworkError;

    fn from_str(text: &str) -> Result<Self, IpNetworkError> {
        let bad = || IpNetworkError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNetwork { address, prefix })
    }
}

impl IpNetwork {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The `domain` of a `[[policy]]` entry: `example.com` matches that domain only,
/// `.example.com` matches its subdomains (not the domain itself), as in Postfix's TLS policy
/// table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PolicyDomain {
    /// The domain itself.
    Exact(DnsName),
    /// Every name below it.
    Suffix(DnsName),
}

/// A `[[policy]]` domain that is not a domain name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a policy domain: expected a domain (example.com) or a suffix (.example.com)")]
pub struct PolicyDomainError(pub String);

impl FromStr for PolicyDomain {
    type Err = PolicyDomainError;

    fn from_str(text: &str) -> Result<Self, PolicyDomainError> {
        let bad = || PolicyDomainError(text.to_owned());
        let (suffix, name) = match text.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name: DnsName = name.parse().map_err(|_| bad())?;
        if name.is_root() {
            return Err(bad());
        }
        Ok(if suffix {
            PolicyDomain::Suffix(name)
        } else {
            PolicyDomain::Exact(name)
        })
    }
}

impl fmt::Display for PolicyDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyDomain::Exact(n) => write!(f, "{n}"),
            PolicyDomain::Suffix(n) => write!(f, ".{n}"),
        }
    }
}

/// A `[[policy]]` `next_hop`: where mail for the domain goes instead of its MX hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// `host` or `host:port`: this host's addresses, MX lookup skipped (port: `[delivery]
    /// port` when absent).
    Host(DnsName, Option<u16>),
    /// `[address]:port` or `[address]`: this address, no DNS at all.
    Address(IpAddr, Option<u16>),
}

/// A `next_hop` that is neither form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a next hop: expected a host name, host:port, [address] or [address]:port")]
pub struct NextHopError(pub String);

impl FromStr for NextHop {
    type Err = NextHopError;

    fn from_str(text: &str) -> Result<Self, NextHopError> {
        let bad = || NextHopError(text.to_owned());
        let port = |p: &str| -> Result<u16, NextHopError> {
            match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(bad()),
            }
        };
        if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            return match after {
                "" => Ok(NextHop::Address(ip, None)),
                _ => match after.strip_prefix(':') {
                    Some(p) => Ok(NextHop::Address(ip, Some(port(p)?))),
                    None => Err(bad()),
                },
            };
        }
        if text.parse::<IpAddr>().is_ok() || text.parse::<SocketAddr>().is_ok() {
            // An address without brackets would be looked up as a name: refuse it.
            return Err(bad());
        }
        let (host, p) = match text.split_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (text, None),
        };
        let name: DnsName = host.parse().map_err(|_| bad())?;
        if name.is_root() {
            return Err(bad());
        }
        Ok(NextHop::Host(name, p))
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Host(h, None) => write!(f, "{h}"),
            NextHop::Host(h, Some(p)) => write!(f, "{h}:{p}"),
            NextHop::Address(a, None) => write!(f, "[{a}]"),
            NextHop::Address(a, Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n: IpNetwork = "127.0.0.0/8".parse().unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        let v6: IpNetwork = "::1/128".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("::2".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let host: IpNetwork = "192.0.2.1".parse().unwrap();
        assert_eq!(host.prefix, 32);
        for bad in [
            "",
            "/8",
            "127.0.0.0/33",
            "::/129",
            "127.0.0.0/",
            "127.0.0.0/+8",
            "x/8",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn next_hops() {
        assert_eq!(
            "[192.0.2.25]:25".parse(),
            Ok(NextHop::Address("192.0.2.25".parse().unwrap(), Some(25)))
        );
        assert_eq!(
            "[2001:db8::1]".parse(),
            Ok(NextHop::Address("2001:db8::1".parse().unwrap(), None))
        );
        assert_eq!(
            "mx.example.com:587".parse(),
            Ok(NextHop::Host("mx.example.com".parse().unwrap(), Some(587)))
        );
        for bad in [
            "",
            "192.0.2.1",
            "[192.0.2.1]:0",
            "[192.0.2.1]x",
            "[x]:25",
            "mx:",
            "mx:99999",
            ".",
        ] {
            assert!(bad.parse::<NextHop>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_domains() {
        assert_eq!(
            ".Example.COM".parse(),
            Ok(PolicyDomain::Suffix("example.com".parse().unwrap()))
        );
        for bad in ["", ".", "..", "a b"] {
            assert!(bad.parse::<PolicyDomain>().is_err(), "{bad:?}");
        }
    }
}
