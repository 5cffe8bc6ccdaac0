//! One message to many recipients: which next hop each recipient goes to (RFC 5321 §5.1),
//! whether the policy level lets delivery start without working DNSSEC, and delivery to each
//! next hop in turn. What `danemta send` does, as a library; the relay groups its queue the
//! same way.

use dns::{DnsName, DnsNameError, NextHop, Resolver};

use crate::deliver::{Config, deliver};
use crate::envelope::{Envelope, EnvelopeError};
use crate::message::Message;
use crate::outcome::{Delivery, Fate, RecipientOutcome, Response};
use crate::policy::Level;

/// Where the recipients' mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// Each recipient domain's MX hosts (RFC 5321 §5.1) on this port.
    Mx {
        /// The SMTP port, 25 unless configured otherwise.
        port: u16,
    },
    /// One configured host for everyone (a smarthost): no MX lookup.
    Relay {
        /// The host.
        host: DnsName,
        /// Its port.
        port: u16,
    },
    /// The submission server named by a domain's `_submission._tcp` SRV records (RFC 6186).
    Submission {
        /// The domain.
        domain: DnsName,
    },
}

/// Recipients or a relay that cannot be routed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Not `local@domain`.
    #[error("{0:?}: not an address (local@domain)")]
    NotAnAddress(String),
    /// The part after `@` is no domain name.
    #[error("{address:?}: {source}")]
    BadDomain {
        /// The address.
        address: String,
        /// Why its domain is not a name.
        source: DnsNameError,
    },
    /// A relay that is not `HOST` or `HOST:PORT`.
    #[error("{0:?}: expected HOST or HOST:PORT")]
    BadRelay(String),
}

/// The recipients grouped by next hop, hops and recipients in the order given: one
/// delivery (and one envelope) per next hop.
pub fn next_hops(
    recipients: &[String],
    via: &Via,
) -> Result<Vec<(NextHop, Vec<String>)>, DispatchError> {
    let mut hops: Vec<(NextHop, Vec<String>)> = Vec::new();
    for to in recipients {
        let domain = domain_of(to)?;
        let hop = match via {
            Via::Mx { port } => NextHop::Domain {
                domain,
                port: *port,
            },
            Via::Relay { host, port } => NextHop::Host {
                host: host.clone(),
                port: *port,
            },
            Via::Submission { domain } => NextHop::Submission {
                domain: domain.clone(),
            },
        };
        match hops.iter_mut().find(|(h, _)| *h == hop) {
            Some((_, list)) => list.push(to.clone()),
            None => hops.push((hop, vec![to.clone()])),
        }
    }
    Ok(hops)
}

/// The domain of `local@domain`.
fn domain_of(address: &str) -> Result<DnsName, DispatchError> {
    let not_one = || DispatchError::NotAnAddress(address.to_owned());
    let (local, domain) = address.rsplit_once('@').ok_or_else(not_one)?;
    if local.is_empty() || address.contains(['<', '>', ' ', '\r', '\n']) {
        return Err(not_one());
    }
    domain.parse().map_err(|source| DispatchError::BadDomain {
        address: address.to_owned(),
        source,
    })
}

/// A relay given as `HOST`, `HOST:PORT` or `[HOST]:PORT`; `default_port` when none is given.
pub fn relay(text: &str, default_port: u16) -> Result<Via, DispatchError> {
    let bad = || DispatchError::BadRelay(text.to_owned());
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
        None => (text, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Via::Relay {
        host: host.parse().map_err(|_| bad())?,
        port,
    })
}

/// Whether delivery may start, given the start-up probe of DNSSEC validation (`Ok` when the
/// root validates through the resolver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Validation works, or the level does not need it.
    Deliver,
    /// `dane` without validation: deliver, but no TLSA record can be trusted, so DANE
    /// protects nothing: say so.
    DeliverUnprotected(String),
    /// `dane-only` without validation: nothing can be delivered (RFC 7672 §2.1.1).
    Refuse(String),
}

/// RFC 7672 §2.1.1: without DNSSEC validation no TLSA record is secure. `dane-only` then
/// refuses to deliver anything; `dane` delivers as `may` would, with a warning.
pub fn dnssec_gate(level: Level, probe: Result<(), String>) -> Gate {
    match (probe, level) {
        (Ok(()), _) => Gate::Deliver,
        (Err(why), Level::DaneOnly) => Gate::Refuse(why),
        (Err(why), Level::Dane) => Gate::DeliverUnprotected(why),
        (Err(_), _) => Gate::Deliver,
    }
}

/// Every recipient deferred for `reason`, with no attempt made.
pub fn deferred(to: &[String], reason: &str) -> Delivery {
    Delivery::new(
        to.iter()
            .map(|address| RecipientOutcome {
                address: address.clone(),
                outcome: Fate::Deferred,
                reply: Response::Local(reason.to_owned()),
            })
            .collect(),
        Vec::new(),
    )
}

/// Delivers `message` from `from` to each next hop in turn: route discovery, then
/// [`deliver`]. One [`Delivery`] per hop, in order.
pub async fn dispatch<R: Resolver>(
    resolver: &R,
    hops: &[(NextHop, Vec<String>)],
    from: &str,
    message: &Message,
    cfg: &Config,
) -> Result<Vec<Delivery>, EnvelopeError> {
    let mut out = Vec::with_capacity(hops.len());
    for (hop, to) in hops {
        let envelope = Envelope::new(from, to)?;
        let route = dns::discover(resolver, hop).await;
        let looked_up = !matches!(hop, NextHop::Host { .. });
        out.push(deliver(&route, hop.domain(), looked_up, &envelope, message, cfg).await);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn to(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipients_are_grouped_by_next_hop_in_order() {
        let rcpts = to(&["a@x.test", "b@y.test", "c@x.test"]);
        let hops = next_hops(&rcpts, &Via::Mx { port: 25 }).unwrap();
        assert_eq!(
            hops,
            vec![
                (
                    NextHop::Domain {
                        domain: n("x.test"),
                        port: 25
                    },
                    to(&["a@x.test", "c@x.test"])
                ),
                (
                    NextHop::Domain {
                        domain: n("y.test"),
                        port: 25
                    },
                    to(&["b@y.test"])
                ),
            ]
        );
        // Through a relay or a submission server, everyone shares one hop.
        let via = relay("smart.test:2525", 25).unwrap();
        assert_eq!(next_hops(&rcpts, &via).unwrap().len(), 1);
        let via = Via::Submission {
            domain: n("x.test"),
        };
        assert_eq!(next_hops(&rcpts, &via).unwrap()[0].1.len(), 3);
    }

    #[test]
    fn bad_recipients_and_relays_are_refused() {
        for bad in ["nobody", "@x.test", "a@x.test>", "a@", "a@x..test"] {
            assert!(
                next_hops(&to(&[bad]), &Via::Mx { port: 25 }).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            relay("[smart.test]:587", 25),
            Ok(Via::Relay {
                host: n("smart.test"),
                port: 587
            })
        );
        assert_eq!(
            relay("smart.test", 26),
            Ok(Via::Relay {
                host: n("smart.test"),
                port: 26
            })
        );
        assert!(relay("smart.test:port", 25).is_err());
        assert!(relay("", 25).is_err());
    }

    #[test]
    fn only_the_dane_levels_care_whether_dnssec_validates() {
        let broken = || Err("no validation".to_owned());
        assert_eq!(
            dnssec_gate(Level::DaneOnly, broken()),
            Gate::Refuse("no validation".into())
        );
        assert_eq!(
            dnssec_gate(Level::Dane, broken()),
            Gate::DeliverUnprotected("no validation".into())
        );
        for level in [Level::None, Level::May, Level::Encrypt, Level::Verify] {
            assert_eq!(dnssec_gate(level, broken()), Gate::Deliver);
        }
        assert_eq!(dnssec_gate(Level::DaneOnly, Ok(())), Gate::Deliver);
    }
}
