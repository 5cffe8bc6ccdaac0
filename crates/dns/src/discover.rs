//! The route-discovery driver: performs the lookups that the pure steps of
//! [`crate::route`] ask for, concurrently where the RFC allows, within [`Limits`].

use futures_util::StreamExt;
use futures_util::stream;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::lookup::RecordType;
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::route::{
    HostLookups, HostRef, HostsStep, Limits, NextHop, Route, TlsaAnswer, TlsaLookups, host_state,
    limit_hosts, mx_step, srv_step, tlsa_question, try_unexpanded,
};
use crate::status::Status;

/// Discovers the route for `next_hop` (RFC 7672 §2.2) within the default [`Limits`]: the
/// hosts in order, each with its addresses, TLSA records and DANE state; or a route-wide defer
/// or bounce. [`discover_with`] also tells how many hosts the limits dropped.
pub async fn discover<R: Resolver>(resolver: &R, next_hop: &NextHop) -> Route {
    discover_with(resolver, next_hop, &Limits::DEFAULT)
        .await
        .route
}

/// A route, and what the [`Limits`] left out of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// The route.
    pub route: Route,
    /// MX (or SRV) hosts beyond [`Limits::max_hosts`], dropped without a lookup.
    pub hosts_dropped: usize,
}

/// Discovers the route for `next_hop` (RFC 7672 §2.2) within `limits`.
///
/// Only the first [`Limits::max_hosts`] hosts in preference order are looked up, at most
/// [`Limits::concurrent_hosts`] of them at once, and the route keeps their order. For each
/// host, A and AAAA run together; its TLSA lookup follows them, since they decide whether
/// DANE can apply and what the base domain is.
pub async fn discover_with<R: Resolver>(
    resolver: &R,
    next_hop: &NextHop,
    limits: &Limits,
) -> Discovery {
    let route = |route| Discovery {
        route,
        hosts_dropped: 0,
    };
    // A fresh rng handle per shuffle: a ThreadRng held across an await would make the future
    // not Send, and the relay will run discoveries on spawned tasks.
    let (step, looked_up) = match next_hop {
        NextHop::Domain { domain, port } => {
            let mx = resolver.lookup(domain, RecordType::Mx).await;
            let step = mx_step(domain, *port, &mx, &mut |run| run.shuffle(&mut rand::rng()));
            (step, Some(mx.status()))
        }
        NextHop::Submission { domain } => {
            let owner: DnsName = match format!("_submission._tcp.{domain}").parse() {
                Ok(n) => n,
                Err(e) => {
                    return route(Route::Defer {
                        reason: e.to_string(),
                        mx_dnssec: None,
                    });
                }
            };
            let srv = resolver.lookup(&owner, RecordType::Srv).await;
            let step = srv_step(domain, &srv, &mut |run| run.shuffle(&mut rand::rng()));
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
    let (mut hosts, mx_dnssec) = match step {
        HostsStep::Hosts { hosts, status } => (hosts, status),
        HostsStep::Defer(reason) => {
            return route(Route::Defer {
                reason,
                mx_dnssec: looked_up,
            });
        }
        HostsStep::Bounce(why, reason) => {
            return route(Route::Bounce {
                why,
                reason,
                mx_dnssec: looked_up,
            });
        }
    };
    let hosts_dropped = limit_hosts(&mut hosts, limits.max_hosts);
    let domain = next_hop.domain();
    // `buffered` keeps the hosts' order, whichever lookups finish first.
    // Owned hosts: a stream of borrowed ones makes the future not Send (rust#64552).
    let candidates = stream::iter(hosts)
        .map(|host| async move {
            let lookups = host_lookups(resolver, &host).await;
            host_state(&host, domain, mx_dnssec.is_secure(), &lookups)
        })
        .buffered(limits.concurrent_hosts.max(1))
        .collect()
        .await;
    Discovery {
        route: Route::Deliver {
            mx_dnssec,
            candidates,
        },
        hosts_dropped,
    }
}

/// The TLSA lookup for `host` on `port`, unless its owner name cannot exist (RFC 1035
/// §2.3.4): then no question is asked, since no back-end could put it on the wire.
async fn tlsa_at<R: Resolver>(resolver: &R, host: &DnsName, port: u16) -> TlsaAnswer {
    let owner = host.tlsa_owner(port)?;
    Ok(resolver.lookup(&owner, RecordType::Tlsa).await)
}

/// The lookups for one host: A and AAAA together, then TLSA at the base domain when the
/// addresses are secure, then at the unexpanded name when the base had none.
async fn host_lookups<R: Resolver>(resolver: &R, host: &HostRef) -> HostLookups {
    let (a, aaaa) = futures_util::join!(
        resolver.lookup(&host.name, RecordType::A),
        resolver.lookup(&host.name, RecordType::Aaaa)
    );
    let tlsa = match tlsa_question(&host.name, &a, &aaaa) {
        Some(base) => {
            let at_base = tlsa_at(resolver, &base, host.port).await;
            let unexpanded = match try_unexpanded(&host.name, &base, &at_base) {
                Some(name) => Some(tlsa_at(resolver, &name, host.port).await),
                None => None,
            };
            Some(TlsaLookups {
                base,
                at_base,
                unexpanded,
            })
        }
        None => None,
    };
    HostLookups { a, aaaa, tlsa }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// The back-ends cannot put a name over 255 octets on the wire (hickory refuses it):
    /// such a question fails, as it would in production.
    struct OnTheWire(Table);

    impl Resolver for OnTheWire {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
            if name.as_str().len() > 253 {
                self.0
                    .asked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let why = format!("name {name}: longer than 255 octets");
                return Lookup::failed(name.clone(), rtype, crate::lookup::Failure::Malformed(why));
            }
            self.0.lookup(name, rtype).await
        }
    }

    /// A 248-character host name: valid, but `_25._tcp.` makes its TLSA owner 257.
    fn long_host() -> String {
        format!(
            "{}.{}.example.test",
            vec!["x".repeat(63); 3].join("."),
            "y".repeat(43)
        )
    }

    #[tokio::test]
    async fn a_tlsa_owner_too_long_to_exist_means_no_dane_not_a_bogus_host() {
        let host = long_host();
        assert_eq!(host.len(), 248);
        let table = OnTheWire(
            Table::default()
                .with(mx("example.test", Status::Secure, &[(10, &host)]))
                .with(a(&host, Status::Secure, "192.0.2.5", vec![]))
                .with(nodata(&host, RecordType::Aaaa, Status::Secure)),
        );
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let (_, hosts) = deliver(discover(&table, &hop).await);
        match &hosts[0].dane {
            DaneState::NotApplicable { reason } => {
                assert!(reason.contains("255 octets"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            (hosts[0].tlsa_name.as_ref(), hosts[0].tlsa_dnssec),
            (None, None)
        );
        assert_eq!(hosts[0].addresses.len(), 1);
        // MX, A and AAAA: no TLSA question that could only fail.
        assert_eq!(table.0.asked.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn an_expanded_base_too_long_for_tlsa_falls_back_to_the_unexpanded_name() {
        // RFC 7672 §2.2.3: nothing can exist at the expanded name, so the unexpanded is tried.
        let target = long_host();
        let link = CnameLink {
            from: n("mail.example.test"),
            to: n(&target),
            status: Status::Secure,
        };
        let table = OnTheWire(
            Table::default()
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
                .with(tlsa("_25._tcp.mail.example.test", Status::Secure)),
        );
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
        assert_eq!(hosts[0].tlsa_base, n("mail.example.test"));
        assert_eq!(hosts[0].tlsa_name, Some(n("_25._tcp.mail.example.test")));
    }

    /// A table whose answers take a moment, as on the network, counting the questions in
    /// flight at once.
    #[derive(Default)]
    struct Slow {
        table: Table,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl Resolver for Slow {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let answer = self.table.lookup(name, rtype).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        }
    }

    #[tokio::test]
    async fn a_thousand_mx_hosts_cost_ten_hosts_lookups_four_at_a_time() {
        // Listed from the least preferred: h0 (preference 0) comes last in the answer.
        let list: Vec<(u16, String)> = (0..1000u16)
            .rev()
            .map(|i| (i, format!("h{i}.example.test")))
            .collect();
        let refs: Vec<(u16, &str)> = list.iter().map(|(p, h)| (*p, h.as_str())).collect();
        let mut table = Table::default().with(mx("example.test", Status::Secure, &refs));
        for (i, (_, host)) in list.iter().enumerate() {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            table = table.with(a(host, Status::Secure, &ip, vec![]));
        }
        let slow = Slow {
            table,
            ..Slow::default()
        };
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        let found = discover_with(&slow, &hop, &Limits::DEFAULT).await;
        assert_eq!(found.hosts_dropped, 990);
        let (_, hosts) = deliver(found.route);
        let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
        let first_ten: Vec<String> = (0..10).map(|i| format!("h{i}.example.test")).collect();
        assert_eq!(names, first_ten, "the most preferred, in preference order");
        assert!(hosts.iter().all(|h| h.addresses.len() == 1));
        // MX, then A, AAAA and TLSA for each of the ten.
        assert_eq!(slow.table.asked.load(Ordering::SeqCst), 1 + 10 * 3);
        // A and AAAA of four hosts at most; and more than one host at a time.
        let most = slow.most_in_flight.load(Ordering::SeqCst);
        assert!((3..=8).contains(&most), "{most} questions at once");

        // The plain entry point keeps the same bounds.
        let (_, hosts) = deliver(discover(&slow, &hop).await);
        assert_eq!(hosts.len(), 10);
    }

    #[tokio::test]
    async fn srv_targets_are_bounded_too() {
        let srvs = (0..50u16)
            .map(|i| {
                Record::Srv(crate::lookup::Srv {
                    priority: i,
                    weight: 0,
                    port: 587,
                    target: n(&format!("s{i}.example.test")),
                })
            })
            .collect();
        let table = Table::default().with(records(
            "_submission._tcp.example.test",
            RecordType::Srv,
            Status::Secure,
            srvs,
            vec![],
        ));
        let hop = NextHop::Submission {
            domain: n("example.test"),
        };
        let limits = Limits {
            max_hosts: 3,
            concurrent_hosts: 2,
        };
        let found = discover_with(&table, &hop, &limits).await;
        assert_eq!(found.hosts_dropped, 47);
        let (_, hosts) = deliver(found.route);
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["s0.example.test", "s1.example.test", "s2.example.test"]
        );
    }

    #[test]
    fn discovery_can_run_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let table = Table::default();
        let hop = NextHop::Domain {
            domain: n("example.test"),
            port: 25,
        };
        is_send(&discover_with(&table, &hop, &Limits::DEFAULT));
        is_send(&discover(&table, &hop));
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
