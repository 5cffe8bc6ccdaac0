//! The route-discovery driver: performs the lookups that the pure steps of
//! [`crate::route`] ask for, concurrently where the RFC allows.

use futures_util::future::join_all;
use rand::seq::SliceRandom;

use crate::lookup::RecordType;
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::route::{
    HostLookups, HostRef, HostsStep, NextHop, Route, address_chain, host_state, mx_step, srv_step,
    tlsa_base, try_unexpanded, wants_tlsa,
};
use crate::status::Status;

/// Discovers the route for `next_hop` (RFC 7672 §2.2): the hosts in order, each with its
/// addresses, TLSA records and DANE state; or a route-wide defer or bounce.
///
/// The A and AAAA lookups of all hosts run concurrently; each host's TLSA lookup follows its
/// address lookups, which decide whether DANE can apply and what the base domain is.
pub async fn discover<R: Resolver>(resolver: &R, next_hop: &NextHop) -> Route {
    let mut rng = rand::rng();
    let (step, looked_up) = match next_hop {
        NextHop::Domain { domain, port } => {
            let mx = resolver.lookup(domain, RecordType::Mx).await;
            let step = mx_step(domain, *port, &mx, &mut |run| run.shuffle(&mut rng));
            (step, Some(mx.status()))
        }
        NextHop::Submission { domain } => {
            let owner: DnsName = match format!("_submission._tcp.{domain}").parse() {
                Ok(n) => n,
                Err(e) => {
                    return Route::Defer {
                        reason: e.to_string(),
                        mx_dnssec: None,
                    };
                }
            };
            let srv = resolver.lookup(&owner, RecordType::Srv).await;
            let step = srv_step(domain, &srv, &mut |run| run.shuffle(&mut rng));
            (step, Some(srv.status()))
        }
        // A configured next hop is the operator's choice, not an answer an attacker could
        // forge: it is as good as a secure MX (RFC 7672 §2.2.1).
        NextHop::Host { host, port } => {
            let host = HostRef {
                name: host.clone(),
                preference: 0,
                port: *port,
            };
            let step = HostsStep::Hosts {
                hosts: vec![host],
                status: Status::Secure,
            };
            (step, None)
        }
    };
    let (hosts, mx_dnssec) = match step {
        HostsStep::Hosts { hosts, status } => (hosts, status),
        HostsStep::Defer(reason) => {
            return Route::Defer {
                reason,
                mx_dnssec: looked_up,
            };
        }
        HostsStep::Bounce(reason) => {
            return Route::Bounce {
                reason,
                mx_dnssec: looked_up,
            };
        }
    };
    let domain = next_hop.domain();
    let candidates = join_all(hosts.iter().map(|host| async move {
        let lookups = host_lookups(resolver, host).await;
        host_state(host, domain, mx_dnssec.is_secure(), &lookups)
    }))
    .await;
    Route::Deliver {
        mx_dnssec,
        candidates,
    }
}

/// The lookups for one host: A and AAAA together, then TLSA at the base domain when the
/// addresses are secure, then at the unexpanded name when the base had none.
async fn host_lookups<R: Resolver>(resolver: &R, host: &HostRef) -> HostLookups {
    let (a, aaaa) = futures_util::join!(
        resolver.lookup(&host.name, RecordType::A),
        resolver.lookup(&host.name, RecordType::Aaaa)
    );
    let tlsa = if wants_tlsa(&a, &aaaa) {
        let base = tlsa_base(&host.name, address_chain(&a, &aaaa));
        let at_base = resolver
            .lookup(&base.tlsa_owner(host.port), RecordType::Tlsa)
            .await;
        let unexpanded = match try_unexpanded(&host.name, &base, &at_base) {
            Some(name) => Some(
                resolver
                    .lookup(&name.tlsa_owner(host.port), RecordType::Tlsa)
                    .await,
            ),
            None => None,
        };
        Some((at_base, unexpanded))
    } else {
        None
    };
    HostLookups { a, aaaa, tlsa }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::lookup::{CnameLink, Lookup, Mx, Outcome, Record};
    use crate::resolver::testing::Table;
    use crate::route::DaneState;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    const EE: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";

    fn records(
        name: &str,
        rtype: RecordType,
        status: Status,
        records: Vec<Record>,
        cnames: Vec<CnameLink>,
    ) -> Lookup {
        Lookup::new(
            n(name),
            rtype,
            status,
            Outcome::Records(records),
            cnames,
            300,
        )
    }

    fn a(name: &str, status: Status, ip: &str, cnames: Vec<CnameLink>) -> Lookup {
        let ip: IpAddr = ip.parse().unwrap();
        records(
            name,
            RecordType::A,
            status,
            vec![Record::Address(ip)],
            cnames,
        )
    }

    fn nodata(name: &str, rtype: RecordType, status: Status) -> Lookup {
        Lookup::new(n(name), rtype, status, Outcome::NoData, vec![], 300)
    }

    fn tlsa(owner: &str, status: Status) -> Lookup {
        records(
            owner,
            RecordType::Tlsa,
            status,
            vec![Record::Tlsa(EE.parse().unwrap())],
            vec![],
        )
    }

    fn mx(domain: &str, status: Status, list: &[(u16, &str)]) -> Lookup {
        let rs = list
            .iter()
            .map(|(p, e)| {
                Record::Mx(Mx {
                    preference: *p,
                    exchange: n(e),
                })
            })
            .collect();
        records(domain, RecordType::Mx, status, rs, vec![])
    }

    fn deliver(route: Route) -> (Status, Vec<crate::route::Candidate>) {
        match route {
            Route::Deliver {
                mx_dnssec,
                candidates,
            } => (mx_dnssec, candidates),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn secure_domain_with_two_hosts_one_without_tlsa() {
        let table = Table::default()
            .with(mx(
                "example.test",
                Status::Secure,
                &[(20, "mx2.example.test"), (10, "mx1.example.test")],
            ))
            .with(a("mx1.example.test", Status::Secure, "192.0.2.1", vec![]))
            .with(nodata("mx1.example.test", RecordType::Aaaa, Status::Secure))
            .with(a("mx2.example.test", Status::Secure, "192.0.2.2", vec![]))
            .with(nodata("mx2.example.test", RecordType::Aaaa, Status::Secure))
            .with(tlsa("_25._tcp.mx2.example.test", Status::Secure));
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let (status, hosts) = deliver(discover(&table, &hop).await);
        assert_eq!(status, Status::Secure);
        // Rule 3: mx1 stays first although only mx2 has TLSA records.
        assert_eq!(hosts[0].name, n("mx1.example.test"));
        assert!(matches!(hosts[0].dane, DaneState::NotApplicable { .. }));
        assert!(matches!(hosts[1].dane, DaneState::Usable { .. }));
        assert_eq!(hosts[1].tlsa_base, n("mx2.example.test"));
    }

    #[tokio::test]
    async fn cname_expanded_base_then_unexpanded_fallback() {
        let link = CnameLink {
            from: n("mail.example.test"),
            to: n("mx.provider.test"),
            status: Status::Secure,
        };
        let table = Table::default()
            .with(mx(
                "example.test",
                Status::Secure,
                &[(10, "mail.example.test")],
            ))
            .with(a(
                "mail.example.test",
                Status::Secure,
                "192.0.2.9",
                vec![link.clone()],
            ))
            .with(Lookup::new(
                n("mail.example.test"),
                RecordType::Aaaa,
                Status::Secure,
                Outcome::NoData,
                vec![link],
                300,
            ))
            .with(nodata(
                "_25._tcp.mx.provider.test",
                RecordType::Tlsa,
                Status::Secure,
            ))
            .with(tlsa("_25._tcp.mail.example.test", Status::Secure));
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let (_, hosts) = deliver(discover(&table, &hop).await);
        assert!(
            matches!(hosts[0].dane, DaneState::Usable { .. }),
            "{:?}",
            hosts[0].dane
        );
        assert_eq!(hosts[0].tlsa_name, Some(n("_25._tcp.mail.example.test")));
        assert_eq!(hosts[0].tlsa_base, n("mail.example.test"));
    }

    #[tokio::test]
    async fn configured_host_skips_mx_and_uses_its_port() {
        let table = Table::default()
            .with(a("relay.test", Status::Secure, "192.0.2.3", vec![]))
            .with(nodata("relay.test", RecordType::Aaaa, Status::Secure))
            .with(tlsa("_2525._tcp.relay.test", Status::Secure));
        let hop = NextHop::Host {
            host: n("relay.test"),
            port: 2525,
        };
        let (status, hosts) = deliver(discover(&table, &hop).await);
        assert_eq!(status, Status::Secure);
        assert!(matches!(hosts[0].dane, DaneState::Usable { .. }));
    }

    #[tokio::test]
    async fn insecure_addresses_skip_the_tlsa_lookup() {
        let table = Table::default()
            .with(mx("example.test", Status::Secure, &[(10, "mx.other.test")]))
            .with(a("mx.other.test", Status::Insecure, "192.0.2.4", vec![]))
            .with(nodata("mx.other.test", RecordType::Aaaa, Status::Insecure));
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let (_, hosts) = deliver(discover(&table, &hop).await);
        assert_eq!(hosts[0].tlsa_dnssec, None);
        // MX + A + AAAA, no TLSA.
        assert_eq!(table.asked.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn equal_preference_hosts_come_in_random_order() {
        let table = Table::default().with(mx(
            "example.test",
            Status::Secure,
            &[
                (10, "a.example.test"),
                (10, "b.example.test"),
                (5, "first.example.test"),
            ],
        ));
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let (_, hosts) = deliver(discover(&table, &hop).await);
            assert_eq!(hosts[0].name, n("first.example.test"));
            seen.insert(hosts[1].name.clone());
        }
        assert_eq!(seen.len(), 2, "both orders of the tie occur");
    }

    #[tokio::test]
    async fn bogus_mx_defers_and_null_mx_bounces() {
        let table = Table::default()
            .with(mx("bogus.test", Status::Bogus, &[(10, "mx.bogus.test")]))
            .with(mx("null.test", Status::Secure, &[(0, ".")]));
        let hop = |d: &str| NextHop::Domain {
            domain: n(d),
            port: 25,
        };
        assert!(matches!(
            discover(&table, &hop("bogus.test")).await,
            Route::Defer { .. }
        ));
        assert!(matches!(
            discover(&table, &hop("null.test")).await,
            Route::Bounce { .. }
        ));
    }
}
