//! Route discovery against the DNSSEC lab (real NSD, ldns-signzone, Unbound), through both
//! back-ends: in-process validation asking the lab's non-validating Unbound, and trusting
//! the AD bit of the lab's validating Unbound. Both must reach the same decisions.

use std::time::Duration;

use danemta_lab::{Lab, ZoneSpec, fake_digest};
use dns::route::{Candidate, DaneState};
use dns::{Backend, DnsName, NextHop, RecordType, Resolver, ResolverSpec, Route, Status};

const TIMEOUT: Duration = Duration::from_secs(3);

fn lab() -> &'static Lab {
    match danemta_lab::shared() {
        Ok(lab) => lab,
        Err(e) => panic!("the DNSSEC lab did not start: {e}"),
    }
}

async fn backends(lab: &Lab) -> Vec<(&'static str, Backend)> {
    let validating = Backend::open(
        &ResolverSpec::Validating(Some(lab.plain_resolver())),
        Some(lab.trust_anchor_file()),
        TIMEOUT,
    )
    .await
    .expect("validating back-end");
    let trust_ad = Backend::open(
        &ResolverSpec::TrustAd(lab.validating_resolver()),
        None,
        TIMEOUT,
    )
    .await
    .expect("trust-ad back-end");
    vec![("validating", validating), ("trust-ad", trust_ad)]
}

fn n(s: &str) -> DnsName {
    s.parse().unwrap()
}

fn domain(d: &str) -> NextHop {
    NextHop::Domain {
        domain: n(d),
        port: 25,
    }
}

/// What a route means for delivery, without the details in which the back-ends may
/// legitimately differ (bogus vs indeterminate, CNAME link statuses under AD).
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Deliver {
        mx_secure: bool,
        hosts: Vec<HostDecision>,
    },
    Defer,
    Bounce,
}

#[derive(Debug, PartialEq, Eq)]
struct HostDecision {
    name: String,
    tlsa_base: String,
    dane: &'static str,
    usable: Vec<String>,
    addresses: usize,
    a_failed: bool,
    aaaa_failed: bool,
}

fn decision(route: &Route) -> Decision {
    match route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => Decision::Deliver {
            mx_secure: mx_dnssec.is_secure(),
            hosts: candidates.iter().map(host_decision).collect(),
        },
        Route::Defer { .. } => Decision::Defer,
        Route::Bounce { .. } => Decision::Bounce,
    }
}

fn host_decision(c: &Candidate) -> HostDecision {
    let (dane, usable) = match &c.dane {
        DaneState::Usable { records } => {
            let mut usable: Vec<String> = records.iter().map(|r| r.to_string()).collect();
            usable.sort();
            ("usable", usable)
        }
        DaneState::Unusable => ("unusable", vec![]),
        DaneState::NotApplicable { .. } => ("not-applicable", vec![]),
        DaneState::HostUnusable { .. } => ("host-unusable", vec![]),
    };
    HostDecision {
        name: c.name.to_string(),
        tlsa_base: c.tlsa_base.to_string(),
        dane,
        usable,
        addresses: c.addresses.len(),
        a_failed: c.a_dnssec.is_failure(),
        aaaa_failed: c.aaaa_dnssec.is_failure(),
    }
}

/// Discovers the route through both back-ends, checks they agree, returns the decision.
async fn route_both(lab: &Lab, hop: &NextHop) -> (Decision, Route) {
    let mut seen: Option<(Decision, Route)> = None;
    for (label, backend) in backends(lab).await {
        let route = dns::discover(&backend, hop).await;
        let d = decision(&route);
        if let Some((first, _)) = &seen {
            assert_eq!(&d, first, "{label} disagrees for {hop:?}: {route:#?}");
        } else {
            seen = Some((d, route));
        }
    }
    seen.unwrap()
}

fn host(d: &Decision, i: usize) -> &HostDecision {
    match d {
        Decision::Deliver { hosts, .. } => &hosts[i],
        other => panic!("not delivering: {other:?}"),
    }
}

fn digest(seed: &str) -> String {
    format!("3 1 1 {}", fake_digest(seed))
}

#[tokio::test]
async fn secure_domains_give_usable_dane_for_every_host() {
    let lab = lab();
    for zone in ["secure.test", "nsec3.test"] {
        let (d, route) = route_both(lab, &domain(zone)).await;
        let Decision::Deliver { mx_secure, hosts } = &d else {
            panic!("{route:?}")
        };
        assert!(mx_secure, "{zone}");
        assert_eq!(hosts.len(), 2);
        for (i, h) in hosts.iter().enumerate() {
            let name = format!("mx{}.{zone}", i + 1);
            assert_eq!(
                (h.name.as_str(), h.tlsa_base.as_str(), h.dane),
                (name.as_str(), name.as_str(), "usable")
            );
            assert_eq!(h.usable, [digest(&format!("3:{name}"))]);
            assert_eq!(h.addresses, 2, "A and AAAA");
        }
        // Rule 10: the SNI name is the TLSA base domain; rule 8: names include the domain.
        let Route::Deliver { candidates, .. } = &route else {
            unreachable!()
        };
        let names: Vec<&str> = candidates[0]
            .reference_names
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(names, [format!("mx1.{zone}").as_str(), zone]);
    }
}

#[tokio::test]
async fn insecure_domain_has_no_dane() {
    let (d, _) = route_both(lab(), &domain("insecure.test")).await;
    let Decision::Deliver { mx_secure, hosts } = &d else {
        panic!()
    };
    assert!(!mx_secure);
    assert!(
        hosts
            .iter()
            .all(|h| h.dane == "not-applicable" && h.addresses == 2)
    );
}

#[tokio::test]
async fn bogus_mx_lookups_defer() {
    // Rule 2: expired signatures, a DS matching no key: never fall back to no-DANE.
    for zone in ["expired.test", "badds.test"] {
        assert_eq!(
            route_both(lab(), &domain(zone)).await.0,
            Decision::Defer,
            "{zone}"
        );
    }
}

#[tokio::test]
async fn a_bogus_address_family_is_dropped_alone() {
    // badsig.test: mx1's A record was altered after signing; its AAAA is fine.
    let (d, _) = route_both(lab(), &domain("badsig.test")).await;
    let mx1 = host(&d, 0);
    assert!(mx1.a_failed && !mx1.aaaa_failed, "{mx1:?}");
    assert_eq!((mx1.addresses, mx1.dane), (1, "usable"));
    assert_eq!(host(&d, 1).dane, "usable");
}

#[tokio::test]
async fn a_broken_aaaa_denial_does_not_spoil_ipv4() {
    let (d, _) = route_both(lab(), &domain("noaaaa-broken.test")).await;
    let mx1 = host(&d, 0);
    assert!(!mx1.a_failed && mx1.aaaa_failed, "{mx1:?}");
    assert_eq!((mx1.addresses, mx1.dane), (1, "usable"));
}

#[tokio::test]
async fn a_stripped_tlsa_signature_makes_only_that_host_unusable() {
    // Rule 5.
    let (d, _) = route_both(lab(), &domain("striptlsa.test")).await;
    assert_eq!(host(&d, 0).dane, "host-unusable");
    assert_eq!(host(&d, 1).dane, "usable");
}

#[tokio::test]
async fn one_bogus_mx_host_does_not_poison_the_other() {
    let (d, _) = route_both(lab(), &domain("mx-bogus-host.test")).await;
    assert_eq!(host(&d, 0).name, "mx1.expired.test");
    assert_eq!(host(&d, 0).dane, "host-unusable");
    assert_eq!(host(&d, 1).dane, "usable");
}

#[tokio::test]
async fn cname_mx_exchange_uses_the_expanded_base_domain() {
    // Rule 4.
    let (d, _) = route_both(lab(), &domain("cname-mx.test")).await;
    let h = host(&d, 0);
    assert_eq!(
        (h.name.as_str(), h.tlsa_base.as_str(), h.dane),
        ("mail.cname-mx.test", "mx1.secure.test", "usable")
    );
}

#[tokio::test]
async fn tlsa_owners_that_are_cnames_to_a_shared_rrset() {
    let (d, _) = route_both(lab(), &domain("shared-tlsa.test")).await;
    for i in 0..2 {
        let h = host(&d, i);
        assert_eq!(h.dane, "usable");
        assert_eq!(h.usable.len(), 2, "3 1 1 and 2 1 1 via the CNAME: {h:?}");
    }
}

#[tokio::test]
async fn a_cnamed_initial_name_follows_to_the_target_mx() {
    let (d, _) = route_both(lab(), &domain("mail.alias.test")).await;
    let Decision::Deliver { mx_secure, hosts } = &d else {
        panic!()
    };
    assert!(mx_secure);
    assert_eq!(hosts[0].name, "mx1.secure.test");
    let (d, _) = route_both(lab(), &domain("www.alias.test")).await;
    assert_eq!(host(&d, 0).name, "mx1.alias.test");
    assert_eq!(host(&d, 0).dane, "usable");
}

#[tokio::test]
async fn implicit_mx_uses_the_domain_and_its_tlsa() {
    let (d, _) = route_both(lab(), &domain("implicit.test")).await;
    let h = host(&d, 0);
    assert_eq!((h.name.as_str(), h.dane), ("implicit.test", "usable"));
}

#[tokio::test]
async fn null_mx_and_nonexistent_domains_bounce() {
    assert_eq!(
        route_both(lab(), &domain("nullmx.test")).await.0,
        Decision::Bounce
    );
    assert_eq!(
        route_both(lab(), &domain("nosuchdomain.test")).await.0,
        Decision::Bounce
    );
}

#[tokio::test]
async fn secure_denials_of_tlsa_mean_no_dane() {
    let (d, _) = route_both(lab(), &domain("notlsa.test")).await;
    assert_eq!(host(&d, 0).dane, "not-applicable");
    assert_eq!(host(&d, 1).dane, "not-applicable");
}

#[tokio::test]
async fn hosts_behind_insecure_cnames_get_no_dane() {
    // The CNAMEs are secure, so the expanded name is the base domain (RFC 7672 §2.2.2), but
    // the address records there are insecure, so DANE does not apply: the insecure TLSA record
    // at the target is never used, nor the secure one at the unexpanded name.
    for (zone, target) in [
        ("cname-insecure.test", "cname-target.insecure.test"),
        ("unexpanded.test", "target.insecure.test"),
    ] {
        let (d, route) = route_both(lab(), &domain(zone)).await;
        let h = host(&d, 0);
        assert_eq!(
            (h.dane, h.tlsa_base.as_str()),
            ("not-applicable", target),
            "{zone}"
        );
        let Route::Deliver { candidates, .. } = route else {
            unreachable!()
        };
        assert_eq!(candidates[0].tlsa_dnssec, None, "no TLSA lookup for {zone}");
    }
}

/// The standard zones plus two of our own: an unexpanded-name fallback, and a submission
/// domain with `_submission._tcp` SRV records (RFC 6186). Torn down by the lab's watchdog.
fn custom_lab() -> &'static Lab {
    static LAB: std::sync::OnceLock<Lab> = std::sync::OnceLock::new();
    LAB.get_or_init(|| {
        Lab::builder()
            .standard_zones()
            .zone(ZoneSpec::secure(
                "fallback.test",
                format!(
                    "@ MX 10 mx\nmx CNAME mx1.notlsa.test.\n_25._tcp.mx TLSA {}\n",
                    digest("fallback")
                ),
            ))
            .zone(ZoneSpec::secure(
                "submit.test",
                format!(
                    "_submission._tcp SRV 10 1 587 smtp\n_submission._tcp SRV 20 1 465 backup\n\
                     smtp A 127.0.20.1\nbackup A 127.0.20.2\n_587._tcp.smtp TLSA {}\n",
                    digest("submit")
                ),
            ))
            .start()
            .expect("lab with custom zones")
    })
}

#[tokio::test]
async fn unexpanded_name_fallback_when_the_secure_target_has_no_tlsa() {
    // RFC 7672 §2.2.3: mx.fallback.test is a secure CNAME to mx1.notlsa.test, which has no
    // TLSA; the TLSA record at the unexpanded name is used, with that name as base domain.
    let (d, _) = route_both(custom_lab(), &domain("fallback.test")).await;
    let h = host(&d, 0);
    assert_eq!(
        (h.dane, h.tlsa_base.as_str()),
        ("usable", "mx.fallback.test")
    );
    assert_eq!(h.usable, [digest("fallback")]);
}

#[tokio::test]
async fn submission_srv_targets_are_treated_like_mx_hosts_on_their_ports() {
    let hop = NextHop::Submission {
        domain: n("submit.test"),
    };
    let (d, route) = route_both(custom_lab(), &hop).await;
    assert_eq!(host(&d, 0).name, "smtp.submit.test");
    assert_eq!(host(&d, 0).dane, "usable");
    assert_eq!(host(&d, 1).dane, "not-applicable");
    let Route::Deliver { candidates, .. } = route else {
        unreachable!()
    };
    assert_eq!((candidates[0].port, candidates[1].port), (587, 465));
    assert_eq!(
        candidates[0].tlsa_name,
        Some(n("_587._tcp.smtp.submit.test"))
    );
    // A domain without the SRV records has no submission service.
    let none = NextHop::Submission {
        domain: n("secure.test"),
    };
    assert_eq!(route_both(custom_lab(), &none).await.0, Decision::Bounce);
}

#[tokio::test]
async fn lookups_report_statuses_and_denials_distinctly() {
    let lab = lab();
    for (label, backend) in backends(lab).await {
        let secure_nx = backend
            .lookup(&n("nothere.secure.test"), RecordType::A)
            .await;
        assert_eq!(
            (secure_nx.status(), secure_nx.require(Status::ANY).unwrap()),
            (Status::Secure, &dns::Outcome::NxDomain),
            "{label}"
        );
        let insecure_nx = backend
            .lookup(&n("nothere.insecure.test"), RecordType::A)
            .await;
        assert_eq!(
            (
                insecure_nx.status(),
                insecure_nx.require(Status::ANY).unwrap()
            ),
            (Status::Insecure, &dns::Outcome::NxDomain),
            "{label}"
        );
        let nodata = backend
            .lookup(&n("_25._tcp.mx2.notlsa.test"), RecordType::Tlsa)
            .await;
        assert_eq!(
            (nodata.status(), nodata.require(Status::ANY).unwrap()),
            (Status::Secure, &dns::Outcome::NoData),
            "{label}"
        );
        let bogus = backend.lookup(&n("expired.test"), RecordType::Mx).await;
        assert!(bogus.status().is_failure(), "{label}: {bogus:?}");
        let cname = backend
            .lookup(&n("mail.cname-mx.test"), RecordType::A)
            .await;
        assert_eq!(cname.cnames().len(), 1, "{label}");
        assert_eq!(cname.final_name(), &n("mx1.secure.test"));
        assert_eq!(cname.status(), Status::Secure, "{label}");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_indeterminate_never_bogus_or_insecure() {
    // Nothing listens on this lab address: every lookup times out.
    let dead = std::net::SocketAddr::from(([127, 53, 255, 254], 53));
    for spec in [
        ResolverSpec::Validating(Some(dead)),
        ResolverSpec::TrustAd(dead),
    ] {
        let backend = Backend::open(
            &spec,
            Some(lab().trust_anchor_file()),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        let l = backend.lookup(&n("secure.test"), RecordType::Mx).await;
        assert_eq!(l.status(), Status::Indeterminate, "{spec}: {l:?}");
        assert!(matches!(
            dns::discover(&backend, &domain("secure.test")).await,
            Route::Defer { .. }
        ));
    }
}

#[tokio::test]
async fn ds_trust_anchor_file_works_like_dnskey() {
    let lab = lab();
    let backend = Backend::open(
        &ResolverSpec::Validating(Some(lab.plain_resolver())),
        Some(lab.trust_anchor_ds_file()),
        TIMEOUT,
    )
    .await
    .expect("DS anchors");
    let l = backend.lookup(&n("secure.test"), RecordType::Mx).await;
    assert_eq!(l.status(), Status::Secure, "{l:?}");
}

#[tokio::test]
async fn the_iana_anchors_do_not_validate_a_private_root() {
    // Without the lab's anchor, the lab root is not trusted: its answers are bogus, never
    // secure (and never insecure, which would be a downgrade).
    let backend = Backend::open(
        &ResolverSpec::Validating(Some(lab().plain_resolver())),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    let l = backend.lookup(&n("secure.test"), RecordType::Mx).await;
    assert_eq!(l.status(), Status::Bogus, "{l:?}");
}

#[tokio::test]
async fn doctor_passes_on_the_lab_and_fails_without_its_anchor() {
    let lab = lab();
    let probe = n("secure.test");
    for spec in [
        ResolverSpec::Validating(Some(lab.plain_resolver())),
        ResolverSpec::TrustAd(lab.validating_resolver()),
    ] {
        let backend = Backend::open(&spec, Some(lab.trust_anchor_file()), TIMEOUT)
            .await
            .unwrap();
        let checks = dns::doctor::probe(&backend, &spec, &probe).await;
        assert!(dns::doctor::can_validate(&checks), "{spec}: {checks:#?}");
    }
    // IANA anchors against the private root: the root DNSKEY is bogus.
    let spec = ResolverSpec::Validating(Some(lab.plain_resolver()));
    let backend = Backend::open(&spec, None, TIMEOUT).await.unwrap();
    let checks = dns::doctor::probe(&backend, &spec, &probe).await;
    assert!(!dns::doctor::can_validate(&checks));
    // The plain (non-validating) Unbound never sets AD: trust-ad against it must fail.
    let spec = ResolverSpec::TrustAd(lab.plain_resolver());
    let backend = Backend::open(&spec, None, TIMEOUT).await.unwrap();
    let checks = dns::doctor::probe(&backend, &spec, &probe).await;
    assert!(!dns::doctor::can_validate(&checks), "{checks:#?}");
    assert!(checks.iter().any(|c| c.detail.contains("insecure")));
}

#[tokio::test]
async fn a_host_whose_tlsa_owner_cannot_exist_has_no_dane() {
    // A 248-character MX host: valid, but `_25._tcp.` takes its TLSA owner name over 255
    // octets. No TLSA record can exist there: not applicable, not a failed (bogus) lookup.
    let relative = format!("{}.{}", vec!["x".repeat(63); 3].join("."), "y".repeat(40));
    let host = format!("{relative}.long-owner.test");
    assert_eq!(host.len(), 248);
    let lab = Lab::builder()
        .zone(ZoneSpec::secure(
            "long-owner.test",
            format!("@ MX 10 {relative}\n{relative} A 192.0.2.27\n"),
        ))
        .start()
        .expect("the DNSSEC lab did not start");
    let (d, route) = route_both(&lab, &domain("long-owner.test")).await;
    let Decision::Deliver { mx_secure, hosts } = &d else {
        panic!("{route:?}")
    };
    assert!(mx_secure);
    assert_eq!(
        (hosts[0].name.as_str(), hosts[0].dane, hosts[0].addresses),
        (host.as_str(), "not-applicable", 1),
        "{route:#?}"
    );
}

/// RFC 7646: an operator's negative trust anchor makes a broken signed zone (expired
/// signatures) insecure, so its mail goes out without DANE instead of waiting; the zones
/// beside it are still validated.
#[tokio::test]
async fn a_negative_trust_anchor_makes_a_broken_zone_insecure_and_nothing_else() {
    let lab = lab();
    let spec = ResolverSpec::Validating(Some(lab.plain_resolver()));
    let open = || Backend::open(&spec, Some(lab.trust_anchor_file()), TIMEOUT);
    let without = open().await.expect("validating back-end");
    assert!(matches!(
        dns::discover(&without, &domain("expired.test")).await,
        Route::Defer { .. }
    ));
    let mut backend = open().await.expect("validating back-end");
    backend.set_negative_trust_anchors(&[n("expired.test")]);
    let mx = backend.lookup(&n("expired.test"), RecordType::Mx).await;
    assert_eq!(mx.status(), Status::Insecure, "{mx:?}");
    let route = dns::discover(&backend, &domain("expired.test")).await;
    let d = decision(&route);
    let Decision::Deliver { mx_secure, hosts } = &d else {
        panic!("{route:#?}")
    };
    assert!(!mx_secure);
    assert!(
        hosts.iter().all(|h| h.dane == "not-applicable"),
        "{route:#?}"
    );
    // The anchor covers its subtree only.
    let secure = backend.lookup(&n("secure.test"), RecordType::Mx).await;
    assert_eq!(secure.status(), Status::Secure);
    let other = backend.lookup(&n("badds.test"), RecordType::Mx).await;
    assert!(other.status().is_failure(), "{other:?}");
}
