//! Where each recipient goes: the `[[policy]]` table applied to its domain (the most
//! specific entry wins, [`Config::policy_for`]), giving the TLS level and the next hop, and
//! the recipients of the claimed messages grouped by destination so that one connection
//! carries several messages (RFC 5321 §4.1.1.5).

use std::net::IpAddr;
use std::sync::Arc;

use dane::ReferenceName;
use dns::{Candidate, DaneState, DaneTrust, DnsName, NextHop, Route, Status};
use smtp::Level;

use crate::config::{self, Config, PolicyEntry};

/// A destination: where the mail goes and under which policy. Two recipients with equal
/// destinations share connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Where to connect.
    pub hop: Hop,
    /// The TLS policy level.
    pub level: Level,
    /// Whether a `[[policy]]` entry set the level: it then overrides MTA-STS (PRODUCT.md).
    pub configured: bool,
    /// The `[[policy]]` entry's `match` names (for `verify`/`secure`).
    pub match_names: Vec<DnsName>,
    /// The `[[policy]]` entry's fingerprints (for `fingerprint`).
    pub fingerprints: Vec<String>,
}

/// The next hop of a destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hop {
    /// The domain's MX hosts (RFC 5321 §5.1) on the delivery port.
    Mx(DnsName, u16),
    /// A configured host (`next_hop = "host[:port]"`): its addresses, no MX lookup.
    Host(DnsName, u16),
    /// A configured address (`next_hop = "[address]:port"`): no DNS at all.
    Address(IpAddr, u16),
}

impl Hop {
    /// The next-hop domain: a DANE-TA reference name (RFC 7672 §3.2.3) and the `secure`
    /// level's default match name. For an address literal, the recipient domain.
    pub fn name<'a>(&'a self, domain: &'a DnsName) -> &'a DnsName {
        match self {
            Hop::Mx(name, _) | Hop::Host(name, _) => name,
            Hop::Address(..) => domain,
        }
    }

    /// Whether the route comes from an MX lookup (for the `relay=` and the DANE rules on a
    /// configured host, RFC 7672 §2.2.1).
    pub fn looked_up(&self) -> bool {
        matches!(self, Hop::Mx(..))
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        match self {
            Hop::Mx(_, p) | Hop::Host(_, p) | Hop::Address(_, p) => *p,
        }
    }
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hop::Mx(name, 25) => write!(f, "{name}"),
            Hop::Mx(name, port) => write!(f, "{name}:{port}"),
            Hop::Host(name, port) => write!(f, "[{name}]:{port}"),
            Hop::Address(ip, port) => write!(f, "[{ip}]:{port}"),
        }
    }
}

/// Why a recipient has no destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not `local@domain` with a domain name (the listener checks this; a queue written by
    /// something else may not have).
    #[error("{0:?} has no routable domain")]
    NoDomain(String),
}

/// The destination of `recipient` under `config`'s policy table and `[delivery] port`.
pub fn destination(config: &Config, recipient: &str) -> Result<Destination, DestinationError> {
    let bad = || DestinationError::NoDomain(recipient.to_owned());
    let (_, domain) = recipient.rsplit_once('@').ok_or_else(bad)?;
    let domain: DnsName = domain.parse().map_err(|_| bad())?;
    if domain.is_root() {
        return Err(bad());
    }
    let (level, entry) = config.policy_for(domain.as_str());
    let port = config.delivery.port;
    let hop = match entry.and_then(|e| e.next_hop.as_ref()) {
        Some(config::NextHop::Host(host, p)) => Hop::Host(host.clone(), p.unwrap_or(port)),
        Some(config::NextHop::Address(ip, p)) => Hop::Address(*ip, p.unwrap_or(port)),
        None => Hop::Mx(domain, port),
    };
    Ok(Destination {
        hop,
        level,
        configured: entry.is_some(),
        match_names: entry.map(|e| e.match_names.clone()).unwrap_or_default(),
        fingerprints: entry
            .map(|e: &PolicyEntry| e.fingerprint.clone())
            .unwrap_or_default(),
    })
}

impl Destination {
    /// The question for route discovery, `None` for an address literal (no DNS).
    pub fn next_hop(&self) -> Option<NextHop> {
        match &self.hop {
            Hop::Mx(domain, port) => Some(NextHop::Domain {
                domain: domain.clone(),
                port: *port,
            }),
            Hop::Host(host, port) => Some(NextHop::Host {
                host: host.clone(),
                port: *port,
            }),
            Hop::Address(..) => None,
        }
    }

    /// `verify`/`secure` match names as reference identifiers.
    pub fn reference_names(&self) -> Vec<ReferenceName> {
        self.match_names
            .iter()
            .filter_map(DnsName::reference_name)
            .collect()
    }
}

/// The route to an address literal: one candidate, no DNS, so no TLSA records: DANE does
/// not apply (RFC 7672 §2.2.3 needs a host name to look TLSA up at), and the `dane` level
/// falls back to opportunistic TLS, as Postfix does for `[address]` next hops.
pub fn literal_route(ip: IpAddr, port: u16) -> Route {
    let name: DnsName = match ip.to_string().replace(':', "-").parse() {
        Ok(n) => n,
        Err(_) => DnsName::root(),
    };
    Route::Deliver {
        mx_dnssec: Status::Secure,
        candidates: vec![Candidate {
            tlsa_base: name.clone(),
            name,
            preference: 0,
            port,
            addresses: vec![dns::route::Address {
                address: ip,
                dnssec: Status::Secure,
            }],
            a_dnssec: Status::Secure,
            aaaa_dnssec: Status::Secure,
            tlsa_name: None,
            tlsa_dnssec: None,
            tlsa: Vec::new(),
            dane: DaneState::NotApplicable {
                reason: format!("next hop [{ip}] is an address: no TLSA lookup"),
            },
            reference_names: Vec::new(),
            dane_trust: DaneTrust::Verified,
        }],
    }
}

/// RFC 5321 §5.1: an SMTP client that is itself one of the destination's MX hosts "MUST
/// discard all records with preference values equal to or greater than its own" and deliver
/// to the rest. `me` is this relay's name (`server.hostname`): the MX hosts with that name
/// and every host not preferred to it leave the route; when none is left, the mail would
/// come back here (a domain in `accept_domains` without a `[[policy]] next_hop`) and is
/// deferred, saying so, where Postfix says "mail for DOMAIN loops back to myself". Other
/// routes are unchanged.
pub fn without_self(route: Route, domain: &DnsName, me: &DnsName) -> Route {
    let Route::Deliver {
        mx_dnssec,
        candidates,
    } = route
    else {
        return route;
    };
    let Some(own) = candidates
        .iter()
        .filter(|c| c.name == *me)
        .map(|c| c.preference)
        .min()
    else {
        return Route::Deliver {
            mx_dnssec,
            candidates,
        };
    };
    let better: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| c.preference < own)
        .collect();
    if better.is_empty() {
        return Route::Defer {
            reason: format!(
                "mail for {domain} loops back to myself: {me} is its best MX host (RFC 5321 \
                 §5.1); give {domain} a [[policy]] next_hop"
            ),
            mx_dnssec: Some(mx_dnssec),
        };
    }
    Route::Deliver {
        mx_dnssec,
        candidates: better,
    }
}

/// The reloadable part of the scheduler's settings: the configuration the policy table is
/// read from. SIGHUP swaps it.
pub type Policy = Arc<Config>;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse(toml, std::path::Path::new("test.toml")).unwrap()
    }

    /// MX hosts by name and preference, as route discovery lists them.
    fn mx_route(hosts: &[(&str, u16)]) -> Route {
        let candidates = hosts
            .iter()
            .map(|(name, preference)| {
                let Route::Deliver { candidates, .. } = literal_route([192, 0, 2, 1].into(), 25)
                else {
                    unreachable!()
                };
                let mut c = candidates.into_iter().next().unwrap();
                c.name = name.parse().unwrap();
                c.preference = *preference;
                c
            })
            .collect();
        Route::Deliver {
            mx_dnssec: Status::Secure,
            candidates,
        }
    }

    fn names(route: &Route) -> Vec<String> {
        match route {
            Route::Deliver { candidates, .. } => {
                candidates.iter().map(|c| c.name.to_string()).collect()
            }
            other => panic!("not delivered: {other:?}"),
        }
    }

    #[test]
    fn mx_hosts_not_preferred_to_this_relay_are_discarded() {
        let (domain, me): (DnsName, DnsName) = (
            "example.org".parse().unwrap(),
            "Relay.Example.org".parse().unwrap(),
        );
        // A backup MX delivers to the better hosts only.
        let route = mx_route(&[
            ("mx1.example.org", 10),
            ("relay.example.org", 20),
            ("mx3.example.org", 20),
            ("mx4.example.org", 30),
        ]);
        assert_eq!(
            names(&without_self(route, &domain, &me)),
            ["mx1.example.org"]
        );
        // Not among the MX hosts: the route is unchanged.
        let route = mx_route(&[("mx1.example.org", 10), ("mx2.example.org", 20)]);
        assert_eq!(
            names(&without_self(route.clone(), &domain, &me)),
            names(&route)
        );
        // The best MX: the mail would loop back here.
        let route = mx_route(&[("relay.example.org", 10), ("mx2.example.org", 20)]);
        match without_self(route, &domain, &me) {
            Route::Defer { reason, .. } => {
                assert!(
                    reason.contains("mail for example.org loops back to myself"),
                    "{reason}"
                );
                assert!(reason.contains("next_hop"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Equal preference counts as not better.
        let route = mx_route(&[("mx1.example.org", 10), ("relay.example.org", 10)]);
        assert!(matches!(
            without_self(route, &domain, &me),
            Route::Defer { .. }
        ));
    }

    #[test]
    fn the_policy_table_picks_level_and_next_hop() {
        let c = config(
            r#"
[delivery]
port = 2525
[[policy]]
domain = "example.com"
level = "dane-only"
next_hop = "[192.0.2.25]:26"
[[policy]]
domain = ".example.net"
level = "encrypt"
next_hop = "relay.example.net"
"#,
        );
        let d = destination(&c, "a@Example.COM").unwrap();
        assert_eq!(d.level, Level::DaneOnly);
        assert_eq!(d.hop, Hop::Address("192.0.2.25".parse().unwrap(), 26));
        let d = destination(&c, "a@mx.example.net").unwrap();
        assert_eq!(d.level, Level::Encrypt);
        assert_eq!(d.hop, Hop::Host("relay.example.net".parse().unwrap(), 2525));
        let d = destination(&c, "a@other.test").unwrap();
        assert_eq!(d.level, Level::Dane);
        assert_eq!(d.hop, Hop::Mx("other.test".parse().unwrap(), 2525));
        assert!(d.next_hop().is_some());
        assert!(destination(&c, "no-domain").is_err());
    }

    #[test]
    fn an_address_literal_route_has_no_dane() {
        let Route::Deliver { candidates, .. } = literal_route("192.0.2.1".parse().unwrap(), 25)
        else {
            panic!("not a delivery route");
        };
        assert!(matches!(
            candidates[0].dane,
            DaneState::NotApplicable { .. }
        ));
        assert_eq!(candidates[0].addresses[0].address.to_string(), "192.0.2.1");
    }
}
