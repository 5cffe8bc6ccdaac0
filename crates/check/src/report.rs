//! A domain's DANE health report: the route, each host and address, findings with the RFC
//! behind each, and verdicts (PRODUCT.md `check --json`); its MTA-STS state next to it
//! (RFC 8461), each MX host matched against the policy and judged by PKIX.
//!
//! In three parts: `model`, what is serialized; `findings`, the pure judgements (tested
//! beside them); `cache`, the probes shared across a scan. [`check_domain`] gathers (route
//! discovery, probes) and calls them.

mod cache;
mod findings;
mod model;

use std::net::IpAddr;

use dns::route::DaneState;
use dns::{DnsName, NextHop, Resolver, Route};

pub use cache::ProbeCache;
pub use findings::ns_findings;
use findings::{
    bounced, dns_findings, mx_lookup_failed, no_usable_host, probe_findings, sts_domain_findings,
    sts_host_findings, too_many_mx,
};
use model::verdict;
pub use model::{
    AddressReport, DomainReport, Finding, HostPkix, HostReport, Level, RouteAction, Verdict,
};

use crate::mta_sts;
use crate::probe::{AddressProbe, ProbeConfig, evaluate, judge_pkix};

/// Checks one domain: its route, and — unless `probe` is `None` (`--no-connect`) — a STARTTLS
/// probe of every address of every host. Its MTA-STS TXT and TLS-RPT records are looked up
/// alongside; with [`ProbeConfig::with_pkix`], the policy is fetched and each presented chain
/// judged by PKIX for its MX host name (RFC 8461 §3.3, §4.2).
pub async fn check_domain<R: Resolver>(
    resolver: &R,
    domain: &DnsName,
    port: u16,
    probe: Option<(&ProbeConfig, &ProbeCache)>,
) -> DomainReport {
    let hop = NextHop::Domain {
        domain: domain.clone(),
        port,
    };
    let limits = dns::route::Limits::DEFAULT;
    let pkix = probe.and_then(|(cfg, _)| cfg.pkix());
    let (discovery, mta_sts) = futures_util::join!(
        dns::discover::discover_with(resolver, &hop, &limits),
        mta_sts::discover(resolver, domain, pkix)
    );
    let hosts_dropped = discovery.hosts_dropped;
    let (mx_dnssec, candidates) = match discovery.route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => (mx_dnssec, candidates),
        Route::Defer { reason, mx_dnssec } => {
            let mut findings = vec![mx_lookup_failed(domain, &reason)];
            findings.extend(sts_domain_findings(domain, &mta_sts, &[]));
            return DomainReport {
                domain: domain.clone(),
                verdict: verdict(&findings),
                route: RouteAction::Defer,
                mx_dnssec,
                reason: Some(reason),
                findings,
                hosts: vec![],
                mta_sts,
            };
        }
        Route::Bounce {
            why,
            reason,
            mx_dnssec,
        } => {
            let mut findings = vec![bounced(why, &reason)];
            findings.extend(sts_domain_findings(domain, &mta_sts, &[]));
            return DomainReport {
                domain: domain.clone(),
                verdict: verdict(&findings),
                route: RouteAction::Bounce,
                mx_dnssec,
                reason: Some(reason),
                findings,
                hosts: vec![],
                mta_sts,
            };
        }
    };
    let mut hosts = Vec::with_capacity(candidates.len());
    let mut pkix_by_host = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let records = match &c.dane {
            DaneState::Usable { records } => records.clone(),
            _ => Vec::new(),
        };
        let mut addresses = Vec::with_capacity(c.addresses.len());
        for a in &c.addresses {
            let tls = match probe {
                Some((cfg, cache)) => {
                    let presented = cache
                        .get(a.address, c.port, c.tlsa_base.as_str(), cfg)
                        .await;
                    let mut tls = evaluate(&presented, &records, &c.reference_names, cfg.when());
                    if let Some(pkix) = cfg.pkix() {
                        // RFC 8461 §4.2: the MX host name, not a CNAME target.
                        judge_pkix(&mut tls, &presented, &c.name, pkix, cfg.when());
                    }
                    Some(tls)
                }
                None => None,
            };
            addresses.push(AddressReport {
                address: a.address,
                dnssec: a.dnssec,
                tls,
            });
        }
        let mut findings = dns_findings(c, mx_dnssec.is_secure());
        if let (Some(owner), Some((cfg, cache))) = (&c.tlsa_name, probe)
            && !c.tlsa.is_empty()
        {
            findings.extend(cache.servers(resolver, owner, cfg.timeouts.command).await);
        }
        if let Some((cfg, _)) = probe {
            let probes: Vec<(IpAddr, &AddressProbe)> = addresses
                .iter()
                .filter_map(|a| Some((a.address, a.tls.as_ref()?)))
                .collect();
            findings.extend(probe_findings(c, &probes, cfg));
        }
        let host_pkix = pkix.map(|_| HostPkix::of(&addresses));
        hosts.push(HostReport {
            name: c.name.clone(),
            preference: c.preference,
            port: c.port,
            tlsa_base: c.tlsa_base.clone(),
            tlsa_name: c.tlsa_name.clone(),
            dane: c.dane.code(),
            dane_detail: c.dane.clone(),
            tlsa_dnssec: c.tlsa_dnssec,
            tlsa: c.tlsa.clone(),
            a_dnssec: c.a_dnssec,
            aaaa_dnssec: c.aaaa_dnssec,
            addresses,
            reference_names: c.reference_names.clone(),
            mta_sts_match: mta_sts
                .active_policy()
                .map(|p| p.matches_mx(c.name.as_str())),
            pkix_valid: host_pkix.as_ref().and_then(HostPkix::summary),
            pkix_error: host_pkix
                .as_ref()
                .and_then(|p| p.failed.first())
                .map(|(address, why)| format!("{address}: {why}")),
            verdict: verdict(&findings),
            findings,
        });
        pkix_by_host.push(host_pkix.unwrap_or_default());
    }
    if let Some(policy) = mta_sts.active_policy() {
        let any_match = hosts.iter().any(|h| h.mta_sts_match == Some(true));
        for (h, host_pkix) in hosts.iter_mut().zip(&pkix_by_host) {
            let found = sts_host_findings(policy, h, host_pkix, any_match);
            if !found.is_empty() {
                h.findings.extend(found);
                h.verdict = verdict(&h.findings);
            }
        }
    }
    let mut findings = Vec::new();
    if hosts_dropped > 0 {
        findings.push(too_many_mx(domain, hosts.len(), hosts_dropped));
    }
    findings.extend(no_usable_host(domain, &candidates));
    findings.extend(sts_domain_findings(domain, &mta_sts, &hosts));
    let verdict = verdict(
        findings
            .iter()
            .chain(hosts.iter().flat_map(|h| &h.findings)),
    );
    DomainReport {
        domain: domain.clone(),
        verdict,
        route: RouteAction::Deliver,
        mx_dnssec: Some(mx_dnssec),
        reason: None,
        findings,
        hosts,
        mta_sts,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use dns::Status;

    fn config() -> ProbeConfig {
        ProbeConfig::new(
            Arc::new(rustls::crypto::ring::default_provider()),
            smtp::Timeouts::uniform(Duration::from_secs(1)),
            "probe.test".into(),
            Duration::ZERO,
        )
    }

    /// MX `h0` … `h{n-1}.example.test` for `example.test`, none with addresses.
    struct ManyMx(u16);

    impl Resolver for ManyMx {
        async fn lookup(&self, name: &DnsName, rtype: dns::RecordType) -> dns::Lookup {
            let outcome = if rtype == dns::RecordType::Mx && name.as_str() == "example.test" {
                dns::Outcome::Records(
                    (0..self.0)
                        .map(|i| {
                            dns::Record::Mx(dns::Mx {
                                preference: i,
                                exchange: format!("h{i}.example.test").parse().unwrap(),
                            })
                        })
                        .collect(),
                )
            } else {
                dns::Outcome::NoData
            };
            dns::testing::lookup(name.clone(), rtype, Status::Secure, outcome, vec![], 60)
        }
    }

    #[test]
    fn a_domain_can_be_checked_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let domain: DnsName = "example.test".parse().unwrap();
        let (cfg, cache) = (config(), ProbeCache::default());
        is_send(&check_domain(&ManyMx(1), &domain, 25, Some((&cfg, &cache))));
    }

    #[tokio::test]
    async fn a_domain_with_too_many_mx_hosts_is_reported_and_checked_within_bounds() {
        let domain: DnsName = "example.test".parse().unwrap();
        let r = check_domain(&ManyMx(1000), &domain, 25, None).await;
        let limit = dns::route::Limits::DEFAULT.max_hosts;
        assert_eq!(r.hosts.len(), limit);
        assert_eq!(r.hosts[0].name.as_str(), "h0.example.test");
        let f: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.code == "too-many-mx")
            .collect();
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].level, Level::Warn);
        assert!(f[0].message.contains("1000 MX hosts"), "{}", f[0].message);
        let r = check_domain(&ManyMx(3), &domain, 25, None).await;
        assert!(r.findings.iter().all(|f| f.code != "too-many-mx"));
    }

    /// A zone as a table: answers for `(name, type)`, and a secure NODATA for the rest.
    struct Zone(Vec<dns::Lookup>);

    impl Resolver for Zone {
        async fn lookup(&self, name: &DnsName, rtype: dns::RecordType) -> dns::Lookup {
            self.0
                .iter()
                .find(|l| l.name() == name && l.rtype() == rtype)
                .cloned()
                .unwrap_or_else(|| {
                    dns::testing::lookup(
                        name.clone(),
                        rtype,
                        Status::Secure,
                        dns::Outcome::NoData,
                        vec![],
                        60,
                    )
                })
        }
    }

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn secure(name: &str, rtype: dns::RecordType, records: Vec<dns::Record>) -> dns::Lookup {
        let outcome = if records.is_empty() {
            dns::Outcome::NxDomain
        } else {
            dns::Outcome::Records(records)
        };
        dns::testing::lookup(n(name), rtype, Status::Secure, outcome, vec![], 60)
    }

    fn mx(exchange: &str) -> dns::Record {
        dns::Record::Mx(dns::Mx {
            preference: 10,
            exchange: n(exchange),
        })
    }

    /// The domain's codes and levels, then those of its hosts.
    async fn checked(zone: Vec<dns::Lookup>) -> (DomainReport, Vec<(&'static str, Level)>) {
        let r = check_domain(&Zone(zone), &n("example.test"), 25, None).await;
        let codes = r
            .findings
            .iter()
            .chain(r.hosts.iter().flat_map(|h| &h.findings))
            .map(|f| (f.code, f.level))
            .collect();
        (r, codes)
    }

    #[tokio::test]
    async fn a_failed_mx_lookup_defers_and_fails() {
        let failed = dns::testing::failed(
            n("example.test"),
            dns::RecordType::Mx,
            dns::Failure::ServFail,
        );
        let (r, codes) = checked(vec![failed]).await;
        assert_eq!(codes, [("mx-lookup-failed", Level::Fail)]);
        assert_eq!((r.route, r.verdict), (RouteAction::Defer, Verdict::Fail));
        assert!(r.reason.is_some() && r.hosts.is_empty());
    }

    #[tokio::test]
    async fn a_domain_that_does_not_exist_bounces_and_fails() {
        let (r, codes) = checked(vec![secure("example.test", dns::RecordType::Mx, vec![])]).await;
        assert_eq!(codes, [("no-such-domain", Level::Fail)]);
        assert_eq!((r.route, r.verdict), (RouteAction::Bounce, Verdict::Fail));
    }

    #[tokio::test]
    async fn a_null_mx_bounces_but_is_no_fault() {
        let null = secure("example.test", dns::RecordType::Mx, vec![mx(".")]);
        let (r, codes) = checked(vec![null]).await;
        assert_eq!(codes, [("null-mx", Level::Info)]);
        assert_eq!((r.route, r.verdict), (RouteAction::Bounce, Verdict::Ok));
    }

    #[tokio::test]
    async fn a_domain_whose_only_host_is_unusable_has_no_usable_host() {
        let zone = vec![
            secure(
                "example.test",
                dns::RecordType::Mx,
                vec![mx("mx.example.test")],
            ),
            secure(
                "mx.example.test",
                dns::RecordType::A,
                vec![dns::Record::Address([192, 0, 2, 1].into())],
            ),
            dns::testing::failed(
                n("_25._tcp.mx.example.test"),
                dns::RecordType::Tlsa,
                dns::Failure::Bogus("expired signature".into()),
            ),
        ];
        let (r, codes) = checked(zone).await;
        assert_eq!(
            codes,
            [
                ("no-usable-host", Level::Fail),
                ("host-unusable", Level::Fail)
            ]
        );
        assert_eq!((r.route, r.verdict), (RouteAction::Deliver, Verdict::Fail));
        assert_eq!(r.hosts[0].dane, "host-unusable");
    }
}
