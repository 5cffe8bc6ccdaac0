//! The tampering matrix (issue 8): an attacker on the path between danemta and its upstream
//! resolver ([`danemta_lab::DnsTamper`]) rewrites answers, one attack per test, for each
//! lookup kind of the signed lab domains — the MX of the domain, the A/AAAA of an MX host,
//! the TLSA of `_25._tcp.<host>`, and the DS (and DNSKEY) of the zone, which every lookup in
//! the zone depends on.
//!
//! For every combination:
//! * **it is a forgery**: a fresh validating Unbound forwarding through the same proxy (the
//!   reference, [`Lab::validating_forwarder`]) answers SERVFAIL;
//! * **danemta does not downgrade**: the `validating` back-end asking the proxy calls the
//!   tampered lookup bogus or indeterminate (never secure with forged data, never insecure),
//!   and route discovery defers or makes the affected host unusable (never "DANE not
//!   applicable", never a bounce);
//! * **the attack happened**: the proxy rewrote answers for Unbound and for danemta.
//!
//! A control test sends the same lookups through the proxy with a tampering that only
//! re-encodes answers: everything must stay secure, so the failures above come from the
//! attacks and not from the proxy. Every failing combination of a test is reported at once,
//! tagged `[DOWNGRADE]` (danemta accepted a forgery), `[NOT A FORGERY]` (the reference
//! accepted it: the test is wrong) or `[NOT FIRED]` (the attack did not happen).
//! `TAMPERING_VERBOSE=1 cargo test -p danemta-dns --test tampering -- --nocapture` prints what
//! the proxy did in every case.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use danemta_lab::dns::{self as labdns, QueryOptions, rcode, rtype};
use danemta_lab::tamper::wildcard_zones;
use danemta_lab::{ExpiredSignatures, Lab, Rule, Tampering, Target};
use dns::route::{Candidate, DaneState};
use dns::{Backend, DnsName, NextHop, RecordType, Resolver, ResolverSpec, Route};

/// danemta's per-query timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Cases run at once within a test.
const PARALLEL: usize = 4;
/// The signed standard domains: NSEC and NSEC3.
const SIGNED: [&str; 2] = ["secure.test", "nsec3.test"];
/// The wildcard zones ([`wildcard_zones`]): NSEC and NSEC3.
const WILD: [&str; 2] = ["wild.test", "wild3.test"];
/// An insecure zone: its SOA is the "foreign unsigned SOA"; its data is unsigned.
const INSECURE: &str = "insecure.test";

/// The standard zones, the wildcard zones, and expired signature copies of every zone.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
    let lab = LAB.get_or_init(|| {
        Lab::builder()
            .standard_zones()
            .zones(wildcard_zones())
            .expired_signature_copies(true)
            .start()
            .map_err(|e| e.to_string())
    });
    match lab {
        Ok(lab) => lab,
        Err(e) => panic!("the DNSSEC lab did not start: {e}"),
    }
}

fn expired() -> Arc<ExpiredSignatures> {
    static EXPIRED: OnceLock<Arc<ExpiredSignatures>> = OnceLock::new();
    EXPIRED
        .get_or_init(|| {
            Arc::new(ExpiredSignatures::from_lab(lab()).expect("expired signature copies"))
        })
        .clone()
}

/// What one lookup kind asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The MX RRset of the domain.
    Mx,
    /// A and AAAA of the first MX host.
    Address,
    /// TLSA at `_25._tcp.<first MX host>`.
    Tlsa,
    /// The DS RRset of the zone (in its parent): every lookup in the zone depends on it.
    Ds,
    /// The DNSKEY RRset of the zone: the same.
    Dnskey,
}

const ALL_KINDS: [Kind; 5] = [Kind::Mx, Kind::Address, Kind::Tlsa, Kind::Ds, Kind::Dnskey];
const DATA_AND_DS: [Kind; 4] = [Kind::Mx, Kind::Address, Kind::Tlsa, Kind::Ds];

/// What the route to the case's domain must be.
#[derive(Clone, Debug)]
enum Expect {
    /// Defer (the MX lookup, or the whole zone, is bogus).
    Defer,
    /// Defer, or these hosts are [`DaneState::HostUnusable`] because the lookups that were
    /// tampered with failed (not, say, because a forged denial left the host without
    /// addresses).
    HostsUnusable(Vec<String>, Because),
    /// (The control) a route to deliver with no unusable host.
    Deliverable,
}

/// Which lookups of an unusable host must have failed.
#[derive(Clone, Copy, Debug)]
enum Because {
    /// A and AAAA.
    Addresses,
    /// The TLSA lookup.
    Tlsa,
}

/// One combination: the rules of the proxy, what the reference must refuse, what danemta
/// must not accept.
#[derive(Clone, Debug)]
struct Case {
    what: String,
    rules: Vec<Rule>,
    /// Questions the validating Unbound must answer SERVFAIL (the control: secure, AD=1).
    probes: Vec<(String, u16)>,
    /// danemta lookups that must be bogus or indeterminate (the control: secure).
    lookups: Vec<(String, RecordType)>,
    /// The domain whose route is discovered, and what it must be.
    route: (String, Expect),
}

fn rule(target: Target, tampering: Tampering) -> Vec<Rule> {
    vec![Rule::new(target, tampering)]
}

/// The other signed standard domain (its records replayed, its DS and keys shown).
fn other(domain: &str) -> &'static str {
    if domain == "secure.test" {
        "nsec3.test"
    } else {
        "secure.test"
    }
}

/// The standard case for `kind` of a two-MX domain: the rule's target, the reference probes,
/// danemta's lookups and the route expectation.
fn case(domain: &str, kind: Kind, tampering: Tampering) -> Case {
    let mx1 = format!("mx1.{domain}");
    let tlsa = format!("_25._tcp.mx1.{domain}");
    let s = |x: &str| x.to_string();
    match kind {
        Kind::Mx => Case {
            what: format!("{domain} MX"),
            rules: rule(Target::exact(domain, &[rtype::MX]), tampering),
            probes: vec![(s(domain), rtype::MX)],
            lookups: vec![(s(domain), RecordType::Mx)],
            route: (s(domain), Expect::Defer),
        },
        Kind::Address => Case {
            what: format!("{mx1} A/AAAA"),
            rules: rule(Target::exact(&mx1, &[rtype::A, rtype::AAAA]), tampering),
            probes: vec![(mx1.clone(), rtype::A), (mx1.clone(), rtype::AAAA)],
            lookups: vec![
                (mx1.clone(), RecordType::A),
                (mx1.clone(), RecordType::Aaaa),
            ],
            route: (
                s(domain),
                Expect::HostsUnusable(vec![mx1], Because::Addresses),
            ),
        },
        Kind::Tlsa => Case {
            what: format!("{tlsa} TLSA"),
            rules: rule(Target::exact(&tlsa, &[rtype::TLSA]), tampering),
            probes: vec![(tlsa.clone(), rtype::TLSA)],
            lookups: vec![(tlsa, RecordType::Tlsa)],
            route: (s(domain), Expect::HostsUnusable(vec![mx1], Because::Tlsa)),
        },
        Kind::Ds | Kind::Dnskey => {
            let (qtype, name) = match kind {
                Kind::Ds => (rtype::DS, "DS"),
                _ => (rtype::DNSKEY, "DNSKEY"),
            };
            Case {
                what: format!("{domain} {name} (then its MX and TLSA)"),
                rules: rule(Target::exact(domain, &[qtype]), tampering),
                probes: vec![(s(domain), qtype), (s(domain), rtype::MX)],
                lookups: vec![(s(domain), RecordType::Mx), (tlsa, RecordType::Tlsa)],
                route: (s(domain), Expect::Defer),
            }
        }
    }
}

/// `case` for every signed standard domain and every kind in `kinds`.
fn matrix(kinds: &[Kind], tampering: impl Fn(&str, Kind) -> Tampering) -> Vec<Case> {
    SIGNED
        .iter()
        .flat_map(|d| kinds.iter().map(|k| case(d, *k, tampering(d, *k))))
        .collect()
}

/// The same with a variant label (several tamperings of one attack).
fn labelled(label: &str, mut cases: Vec<Case>) -> Vec<Case> {
    for c in &mut cases {
        c.what = format!("{} [{label}]", c.what);
    }
    cases
}

/// The first type the case's rule targets, e.g. for the source of a foreign denial.
fn kind_type(kind: Kind) -> u16 {
    match kind {
        Kind::Mx => rtype::MX,
        Kind::Address => rtype::A,
        Kind::Tlsa => rtype::TLSA,
        Kind::Ds => rtype::DS,
        Kind::Dnskey => rtype::DNSKEY,
    }
}

// ---------------------------------------------------------------------------------------------
// The runner.

async fn backend(upstream: SocketAddr) -> Result<Backend, String> {
    Backend::open(
        &ResolverSpec::Validating(Some(upstream)),
        Some(lab().trust_anchor_file()),
        TIMEOUT,
    )
    .await
    .map_err(|e| format!("validating back-end: {e}"))
}

fn name(s: &str) -> DnsName {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test name {s:?}: {e}"))
}

fn describe_candidate(c: &Candidate) -> String {
    let dane = match &c.dane {
        DaneState::Usable { records } => format!("usable ({} records)", records.len()),
        DaneState::Unusable => "unusable".into(),
        DaneState::NotApplicable { reason } => format!("NOT-APPLICABLE ({reason})"),
        DaneState::HostUnusable { reason } => format!("host-unusable ({reason})"),
    };
    format!(
        "{}: {dane}; A {}, AAAA {}, TLSA {:?}",
        c.name.as_str(),
        c.a_dnssec,
        c.aaaa_dnssec,
        c.tlsa_dnssec
    )
}

fn describe_route(route: &Route) -> String {
    match route {
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => {
            let hosts: Vec<String> = candidates.iter().map(describe_candidate).collect();
            format!("DELIVER (MX {mx_dnssec}) [{}]", hosts.join("; "))
        }
        Route::Defer { reason, .. } => format!("defer ({reason})"),
        Route::Bounce { reason, .. } => format!("BOUNCE ({reason})"),
    }
}

/// Whether the route meets the expectation; `Err` says how it does not.
fn check_route(route: &Route, expect: &Expect) -> Result<(), String> {
    let fail = || Err(describe_route(route));
    match (route, expect) {
        (Route::Bounce { .. }, _) => fail(),
        (Route::Defer { .. }, Expect::Deliverable) => fail(),
        (Route::Defer { .. }, _) => Ok(()),
        (Route::Deliver { .. }, Expect::Defer) => fail(),
        (Route::Deliver { candidates, .. }, Expect::Deliverable) => {
            if candidates.is_empty()
                || candidates
                    .iter()
                    .any(|c| matches!(c.dane, DaneState::HostUnusable { .. }))
            {
                return fail();
            }
            Ok(())
        }
        (Route::Deliver { candidates, .. }, Expect::HostsUnusable(hosts, because)) => {
            for host in hosts {
                let unusable = candidates.iter().any(|c| {
                    c.name.as_str() == host
                        && matches!(c.dane, DaneState::HostUnusable { .. })
                        && match because {
                            Because::Addresses => {
                                c.a_dnssec.is_failure() && c.aaaa_dnssec.is_failure()
                            }
                            Because::Tlsa => c.tlsa_dnssec.is_some_and(|s| s.is_failure()),
                        }
                });
                if !unusable {
                    return fail();
                }
            }
            Ok(())
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs one case; the problems found (empty: it passed). `forgery` false: the control.
fn run_case(case: &Case, forgery: bool) -> Vec<String> {
    let lab = lab();
    let mut problems = Vec::new();
    let tamper = match lab.dns_tamper(case.rules.clone()) {
        Ok(t) => t,
        Err(e) => return vec![format!("[setup] proxy: {e}")],
    };

    // (a) The reference: a fresh validating Unbound through the proxy.
    let mut unbound_log = String::new();
    match lab.validating_forwarder(tamper.addr()) {
        Err(e) => problems.push(format!("[setup] validating forwarder: {e}")),
        Ok(unbound) => {
            for (qname, qtype) in &case.probes {
                let options = QueryOptions::recursive().with_timeout(Duration::from_secs(5));
                let what = format!("{qname} {}", rtype::name(*qtype));
                match labdns::query(unbound.addr(), qname, *qtype, options) {
                    Ok(r) if forgery && r.rcode == rcode::SERVFAIL => {}
                    Ok(r) if !forgery && r.rcode != rcode::SERVFAIL && r.authentic_data => {}
                    Ok(r) if forgery => problems.push(format!(
                        "[NOT A FORGERY] the validating Unbound accepted {what}: {}",
                        r.summary()
                    )),
                    Ok(r) => problems.push(format!(
                        "[CONTROL] the validating Unbound did not validate {what}: {}",
                        r.summary()
                    )),
                    Err(e) => problems.push(format!("[reference] {what}: {e}")),
                }
            }
            if !problems.is_empty() {
                unbound_log = unbound.log();
            }
        }
    }
    let fired_for_unbound = tamper.fired();
    if fired_for_unbound == 0 {
        problems.push("[NOT FIRED] no answer to the validating Unbound was tampered with".into());
    }

    // (b) danemta's validating back-end through the same proxy, a fresh one (and cache) each.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        for (qname, qtype) in &case.lookups {
            let backend = match backend(tamper.addr()).await {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("[setup] {e}"));
                    return;
                }
            };
            let lookup = backend.lookup(&name(qname), *qtype).await;
            let (status, outcome) = (lookup.status(), lookup.require(dns::Status::ANY).unwrap());
            let ok = match forgery {
                true => status.is_failure(),
                false => status.is_secure(),
            };
            if !ok {
                problems.push(format!(
                    "[{}] danemta: {qname} {qtype:?} is {status}: {outcome:?}",
                    if forgery { "DOWNGRADE" } else { "CONTROL" }
                ));
            }
        }
        let (domain, expect) = &case.route;
        let backend = match backend(tamper.addr()).await {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("[setup] {e}"));
                return;
            }
        };
        let hop = NextHop::Domain {
            domain: name(domain),
            port: 25,
        };
        let route = dns::discover(&backend, &hop).await;
        if let Err(e) = check_route(&route, expect) {
            problems.push(format!(
                "[{}] danemta: route for {domain} (want {expect:?}): {e}",
                if forgery { "DOWNGRADE" } else { "CONTROL" }
            ));
        }
    });
    if tamper.fired() == fired_for_unbound {
        problems.push("[NOT FIRED] no answer to danemta was tampered with".into());
    }
    if std::env::var_os("TAMPERING_VERBOSE").is_some() {
        eprintln!("=== {}\n{}", case.what, tamper.log());
    }
    if !problems.is_empty() {
        problems.push(format!(
            "proxy log (last lines):\n{}",
            tail(&tamper.log(), 25)
        ));
        if !unbound_log.is_empty() {
            problems.push(format!(
                "validating Unbound log:\n{}",
                tail(&unbound_log, 15)
            ));
        }
    }
    problems
}

/// Runs every case (a few at a time) and fails with every failing combination.
fn run(attack: &str, cases: Vec<Case>, forgery: bool) {
    assert!(!cases.is_empty());
    let t0 = Instant::now();
    let _ = lab();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL.min(cases.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else {
                        break;
                    };
                    let problems = run_case(case, forgery);
                    let verdict = if problems.is_empty() { "ok" } else { "FAILED" };
                    eprintln!("{attack}: {} … {verdict}", case.what);
                    if !problems.is_empty() {
                        let text = format!(
                            "--- {} (rules: {})\n{}",
                            case.what,
                            case.rules
                                .iter()
                                .map(|r| format!("{} -> {}", r.target, r.tampering.label()))
                                .collect::<Vec<_>>()
                                .join(", "),
                            problems.join("\n")
                        );
                        failures.lock().unwrap().push((i, text));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(i, _)| *i);
    eprintln!(
        "{attack}: {} cases, {} failed, {:.1?}",
        cases.len(),
        failures.len(),
        t0.elapsed()
    );
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().map(|(_, t)| t.as_str()).collect();
        panic!(
            "{attack}: {} of {} combinations failed:\n{}",
            failures.len(),
            cases.len(),
            shown.join("\n")
        );
    }
}

fn forgery(attack: &str, cases: Vec<Case>) {
    run(attack, cases, true);
}

// ---------------------------------------------------------------------------------------------
// The control.

/// The proxy decodes and re-encodes every answer it touches; nothing else changes. Every
/// lookup kind, NSEC and NSEC3 denials, wildcard answers and CNAME chains must stay secure,
/// or the attack tests below would prove nothing.
#[test]
fn untampered_answers_through_the_proxy_stay_secure() {
    let mut cases = Vec::new();
    for domain in SIGNED {
        let mx1 = format!("mx1.{domain}");
        let tlsa = format!("_25._tcp.mx1.{domain}");
        let mut rules = vec![
            Rule::new(
                Target::exact(domain, &[rtype::MX, rtype::DS, rtype::DNSKEY]),
                Tampering::Identity,
            ),
            Rule::new(
                Target::subtree(domain, &[rtype::A, rtype::AAAA, rtype::TLSA]),
                Tampering::Identity,
            ),
        ];
        rules.push(Rule::new(
            Target::subtree("test", &[rtype::DS, rtype::DNSKEY, rtype::TXT]),
            Tampering::Identity,
        ));
        cases.push(Case {
            what: format!("{domain}: MX, DS, DNSKEY, A, AAAA, TLSA, a NODATA and an NXDOMAIN"),
            rules,
            probes: vec![
                (domain.to_string(), rtype::MX),
                (domain.to_string(), rtype::DS),
                (mx1.clone(), rtype::A),
                (mx1.clone(), rtype::AAAA),
                (tlsa.clone(), rtype::TLSA),
                // A NODATA and an NXDOMAIN, re-encoded.
                (mx1.clone(), rtype::TXT),
                (format!("no-such-name.{domain}"), rtype::A),
            ],
            lookups: vec![
                (domain.to_string(), RecordType::Mx),
                (mx1.clone(), RecordType::A),
                (mx1.clone(), RecordType::Aaaa),
                (tlsa, RecordType::Tlsa),
                (format!("_25._tcp.mx2.{domain}"), RecordType::Tlsa),
            ],
            route: (domain.to_string(), Expect::Deliverable),
        });
    }
    for zone in WILD {
        cases.push(Case {
            what: format!("{zone}: wildcard MX, A/AAAA and TLSA"),
            rules: vec![Rule::new(
                Target::subtree(zone, &[rtype::MX, rtype::A, rtype::AAAA, rtype::TLSA]),
                Tampering::Identity,
            )],
            probes: vec![
                (format!("x.mail.{zone}"), rtype::MX),
                (format!("a.hosts.{zone}"), rtype::A),
                (format!("_25._tcp.mx2.{zone}"), rtype::TLSA),
                (format!("exact.hosts.{zone}"), rtype::A),
            ],
            lookups: vec![
                (format!("x.mail.{zone}"), RecordType::Mx),
                (format!("a.hosts.{zone}"), RecordType::A),
                (format!("_25._tcp.mx2.{zone}"), RecordType::Tlsa),
            ],
            route: (zone.to_string(), Expect::Deliverable),
        });
    }
    cases.push(Case {
        what: "CNAME chains: cname-mx.test, shared-tlsa.test, mail.alias.test".into(),
        rules: vec![Rule::new(
            Target::subtree("test", &[rtype::MX, rtype::A, rtype::AAAA, rtype::TLSA]),
            Tampering::Identity,
        )],
        probes: vec![
            ("mail.cname-mx.test".into(), rtype::A),
            ("_25._tcp.mx1.shared-tlsa.test".into(), rtype::TLSA),
            ("mail.alias.test".into(), rtype::MX),
        ],
        lookups: vec![
            ("mail.cname-mx.test".into(), RecordType::A),
            ("_25._tcp.mx1.shared-tlsa.test".into(), RecordType::Tlsa),
            ("mail.alias.test".into(), RecordType::Mx),
        ],
        route: ("shared-tlsa.test".into(), Expect::Deliverable),
    });
    run("control (identity)", cases, false);
}

// ---------------------------------------------------------------------------------------------
// The attacks.

/// Issue 8, finding 1: NODATA with the unsigned SOA of another, insecure zone.
#[test]
fn forged_nodata_with_foreign_unsigned_soa_is_bogus() {
    forgery(
        "forged NODATA + foreign unsigned SOA",
        matrix(&ALL_KINDS, |_, _| Tampering::ForgedNoDataForeignSoa {
            soa_zone: INSECURE.into(),
        }),
    );
}

/// Issue 8, finding 2: NXDOMAIN with a foreign unsigned SOA; for the MX, a bounce if believed.
#[test]
fn forged_nxdomain_with_foreign_unsigned_soa_is_bogus() {
    forgery(
        "forged NXDOMAIN + foreign unsigned SOA",
        matrix(&ALL_KINDS, |_, _| Tampering::ForgedNxDomainForeignSoa {
            soa_zone: INSECURE.into(),
        }),
    );
}

/// A denial with the zone's genuine signed SOA but no NSEC/NSEC3 proving anything.
#[test]
fn forged_denial_with_a_signed_soa_but_no_nsec_proof_is_bogus() {
    let soa_zone = |d: &str, k: Kind| {
        if matches!(k, Kind::Ds) {
            "test".to_string()
        } else {
            d.to_string()
        }
    };
    let mut cases = labelled(
        "NODATA",
        matrix(&DATA_AND_DS, |d, k| {
            Tampering::ForgedDenialSignedSoaWithoutProof {
                soa_zone: soa_zone(d, k),
                nxdomain: false,
            }
        }),
    );
    cases.extend(labelled(
        "NXDOMAIN",
        matrix(&DATA_AND_DS, |d, k| {
            Tampering::ForgedDenialSignedSoaWithoutProof {
                soa_zone: soa_zone(d, k),
                nxdomain: true,
            }
        }),
    ));
    forgery("forged denial + signed SOA, no proof", cases);
}

/// Issue 8, finding 1 (second part): the signed CNAME kept, the data at its target removed,
/// with a foreign unsigned SOA or nothing in the authority section.
#[test]
fn data_stripped_behind_a_signed_cname_is_bogus() {
    let mut cases = Vec::new();
    for (label, foreign_soa) in [
        ("foreign unsigned SOA", Some(INSECURE.to_string())),
        ("empty authority", None),
    ] {
        let strip = || Tampering::StripBehindCname {
            foreign_soa: foreign_soa.clone(),
        };
        cases.extend(labelled(
            label,
            vec![
                // mail.cname-mx.test CNAME mx1.secure.test: its addresses.
                Case {
                    what: "mail.cname-mx.test A/AAAA -> mx1.secure.test".into(),
                    rules: rule(
                        Target::exact("mx1.secure.test", &[rtype::A, rtype::AAAA]),
                        strip(),
                    ),
                    probes: vec![
                        ("mail.cname-mx.test".into(), rtype::A),
                        ("mail.cname-mx.test".into(), rtype::AAAA),
                    ],
                    lookups: vec![
                        ("mail.cname-mx.test".into(), RecordType::A),
                        ("mail.cname-mx.test".into(), RecordType::Aaaa),
                    ],
                    route: (
                        "cname-mx.test".into(),
                        Expect::HostsUnusable(
                            vec!["mail.cname-mx.test".into()],
                            Because::Addresses,
                        ),
                    ),
                },
                // _25._tcp.mx{1,2}.shared-tlsa.test CNAME _tlsa.shared-tlsa.test: the TLSA.
                Case {
                    what: "_25._tcp.mx1.shared-tlsa.test TLSA -> _tlsa.shared-tlsa.test".into(),
                    rules: rule(
                        Target::exact("_tlsa.shared-tlsa.test", &[rtype::TLSA]),
                        strip(),
                    ),
                    probes: vec![("_25._tcp.mx1.shared-tlsa.test".into(), rtype::TLSA)],
                    lookups: vec![("_25._tcp.mx1.shared-tlsa.test".into(), RecordType::Tlsa)],
                    route: (
                        "shared-tlsa.test".into(),
                        Expect::HostsUnusable(
                            vec!["mx1.shared-tlsa.test".into(), "mx2.shared-tlsa.test".into()],
                            Because::Tlsa,
                        ),
                    ),
                },
                // mail.alias.test CNAME secure.test: the MX.
                Case {
                    what: "mail.alias.test MX -> secure.test".into(),
                    rules: rule(Target::exact("secure.test", &[rtype::MX]), strip()),
                    probes: vec![("mail.alias.test".into(), rtype::MX)],
                    lookups: vec![("mail.alias.test".into(), RecordType::Mx)],
                    route: ("mail.alias.test".into(), Expect::Defer),
                },
            ],
        ));
    }
    forgery("data stripped behind a signed CNAME", cases);
}

#[test]
fn stripped_rrsigs_are_bogus() {
    forgery(
        "RRSIGs stripped",
        matrix(&DATA_AND_DS, |_, _| Tampering::StripRrsigs),
    );
}

#[test]
fn truncated_rrsig_signatures_are_bogus() {
    forgery(
        "RRSIG signatures truncated",
        matrix(&DATA_AND_DS, |_, _| Tampering::TruncateRrsigs),
    );
}

#[test]
fn corrupted_rrsig_signatures_are_bogus() {
    forgery(
        "RRSIG signatures corrupted",
        matrix(&DATA_AND_DS, |_, _| Tampering::CorruptRrsigs),
    );
}

/// The validly signed RRset of another owner of the same type: the other MX host's A/AAAA
/// or TLSA, the other domain's MX, DS or DNSKEY.
fn other_owner(domain: &str, kind: Kind) -> String {
    match kind {
        Kind::Address => format!("mx2.{domain}"),
        Kind::Tlsa => format!("_25._tcp.mx2.{domain}"),
        Kind::Mx | Kind::Ds | Kind::Dnskey => other(domain).to_string(),
    }
}

#[test]
fn signed_rrset_of_another_owner_is_bogus() {
    forgery(
        "signed RRset of another owner",
        matrix(&ALL_KINDS, |d, k| Tampering::ReplayOtherOwner {
            source: other_owner(d, k),
            rename: false,
        }),
    );
}

#[test]
fn signed_rrset_of_another_owner_renamed_to_the_question_is_bogus() {
    forgery(
        "signed RRset of another owner, renamed",
        matrix(&ALL_KINDS, |d, k| Tampering::ReplayOtherOwner {
            source: other_owner(d, k),
            rename: true,
        }),
    );
}

/// Unsigned records in a signed zone: the same names' data from the insecure zone (MX, A,
/// TLSA), or the other domain's DS and DNSKEY without their RRSIGs.
#[test]
fn unsigned_data_in_a_signed_zone_is_bogus() {
    forgery(
        "unsigned data",
        matrix(&ALL_KINDS, |d, k| Tampering::ForgedUnsignedData {
            source: match k {
                Kind::Mx => INSECURE.to_string(),
                Kind::Address => format!("mx1.{INSECURE}"),
                Kind::Tlsa => format!("_25._tcp.mx1.{INSECURE}"),
                Kind::Ds | Kind::Dnskey => other(d).to_string(),
            },
        }),
    );
}

/// A real denial (NXDOMAIN and NODATA) from another zone of the given flavour.
fn foreign_denial_cases(source_zone: impl Fn(&str) -> &'static str) -> Vec<Case> {
    let mut cases = labelled(
        "NXDOMAIN",
        matrix(&DATA_AND_DS, |d, k| Tampering::ForeignNsecProof {
            source: format!("no-such-name.{}", source_zone(d)),
            source_type: kind_type(k),
        }),
    );
    cases.extend(labelled(
        "NODATA",
        matrix(&DATA_AND_DS, |d, _| Tampering::ForeignNsecProof {
            source: format!("mx1.{}", source_zone(d)),
            source_type: rtype::TXT,
        }),
    ));
    cases
}

#[test]
fn nsec_denial_from_another_zone_is_bogus() {
    forgery(
        "NSEC denial from another zone",
        foreign_denial_cases(|d| {
            if d == "secure.test" {
                "notlsa.test"
            } else {
                "secure.test"
            }
        }),
    );
}

#[test]
fn nsec3_denial_from_another_zone_is_bogus() {
    forgery(
        "NSEC3 denial from another zone",
        foreign_denial_cases(|d| {
            if d == "secure.test" {
                "nsec3.test"
            } else {
                "wild3.test"
            }
        }),
    );
}

/// A real, validly signed denial of another name of the same zone (it does not cover the
/// question), and for the DS the parent's real proof that another child (`insecure.test`)
/// has no DS.
#[test]
fn denial_of_another_name_in_the_same_zone_is_bogus() {
    let nodata_source = |d: &str, k: Kind| match k {
        Kind::Mx => (format!("mx1.{d}"), rtype::MX),
        Kind::Address => (format!("_25._tcp.mx1.{d}"), rtype::A),
        Kind::Tlsa => (format!("mx1.{d}"), rtype::TLSA),
        Kind::Ds | Kind::Dnskey => (format!("mx1.{d}"), kind_type(k)),
    };
    let mut cases = labelled(
        "NODATA of another name",
        matrix(&DATA_AND_DS, |d, k| {
            let (source, source_type) = nodata_source(d, k);
            Tampering::ForeignNsecProof {
                source,
                source_type,
            }
        }),
    );
    cases.extend(labelled(
        "NXDOMAIN of another name",
        matrix(&DATA_AND_DS, |d, k| Tampering::ForeignNsecProof {
            source: match k {
                Kind::Tlsa => format!("_25._tcp.no-such-name.{d}"),
                _ => format!("no-such-name.{d}"),
            },
            source_type: kind_type(k),
        }),
    ));
    cases.extend(labelled(
        "the parent's no-DS proof for insecure.test",
        matrix(&[Kind::Ds], |_, _| Tampering::ForeignNsecProof {
            source: INSECURE.into(),
            source_type: rtype::DS,
        }),
    ));
    forgery("denial of another name", cases);
}

/// The child zone's own apex NODATA proof (NSEC or NSEC3 at the apex, no DS bit, signed by
/// the child) offered as the proof that the delegation has no DS: it comes from the wrong
/// side of the zone cut (RFC 4035 §5.4; RFC 5155 §8.6).
#[test]
fn child_side_apex_denial_offered_for_the_ds_is_bogus() {
    forgery(
        "child-side apex denial for the DS",
        matrix(&[Kind::Ds], |d, _| Tampering::ForeignNsecProof {
            source: d.to_string(),
            source_type: rtype::TXT,
        }),
    );
}

/// Genuine records with RRSIGs by the zone's own key whose validity ended 30 days ago.
#[test]
fn expired_signatures_are_bogus() {
    let expired = expired();
    forgery(
        "expired signatures",
        matrix(&DATA_AND_DS, |_, _| {
            Tampering::ExpiredSignatures(expired.clone())
        }),
    );
}

/// The zone's DNSKEY RRset (every key matching a DS in the parent) with its self-signature
/// stripped, cut, corrupted or expired. RFC 4035 §5.2 accepts a DNSKEY RRset only when a key
/// matching a DS signs it, within the signature's validity window; hickory's validator
/// accepts the whole set without any RRSIG when every key matches a DS
/// (`verify_dnskey_rrset` in hickory-net 0.26.3, "we'll accept the entire set"), so an
/// attacker can replay an old key set whatever its signatures say.
#[test]
fn dnskey_rrset_with_stripped_damaged_or_expired_signatures_is_bogus() {
    let expired = expired();
    let mut cases = Vec::new();
    for (label, tampering) in [
        ("RRSIGs stripped", Tampering::StripRrsigs),
        ("RRSIG signatures truncated", Tampering::TruncateRrsigs),
        ("RRSIG signatures corrupted", Tampering::CorruptRrsigs),
        ("expired signatures", Tampering::ExpiredSignatures(expired)),
    ] {
        cases.extend(labelled(
            label,
            matrix(&[Kind::Dnskey], |_, _| tampering.clone()),
        ));
    }
    forgery("DNSKEY RRset with bad signatures", cases);
}

/// The same attack one level up, on the proof that a zone is *insecure*: the parent's
/// (`test.`) DNSKEY RRset without valid signatures. The NSEC that shows `insecure.test` has no
/// DS is signed with those keys, so a key set whose signatures do not validate proves nothing:
/// the insecure domain's lookups are bogus (deferred), not insecure.
#[test]
fn parent_dnskey_rrset_with_bad_signatures_proves_no_insecure_delegation() {
    let mut cases = Vec::new();
    for (label, tampering) in [
        ("RRSIGs stripped", Tampering::StripRrsigs),
        ("RRSIG signatures corrupted", Tampering::CorruptRrsigs),
    ] {
        cases.push(Case {
            what: format!("{INSECURE}: the DNSKEY of test. [{label}]"),
            rules: rule(Target::exact("test", &[rtype::DNSKEY]), tampering),
            probes: vec![(INSECURE.to_string(), rtype::MX)],
            lookups: vec![(INSECURE.to_string(), RecordType::Mx)],
            route: (INSECURE.to_string(), Expect::Defer),
        });
    }
    forgery("parent DNSKEY RRset with bad signatures", cases);
}

/// The MX, A/AAAA and TLSA cases of a wildcard zone.
fn wildcard_case(zone: &str, kind: Kind, owner: &str, tampering: Tampering) -> Case {
    let s = |x: &str| x.to_string();
    let (qtypes, probes, lookups, route): (Vec<u16>, Vec<u16>, Vec<RecordType>, (String, Expect)) =
        match kind {
            Kind::Mx => (
                vec![rtype::MX],
                vec![rtype::MX],
                vec![RecordType::Mx],
                (s(owner), Expect::Defer),
            ),
            Kind::Address => {
                // A domain whose only MX is the host.
                let domain = if owner.starts_with("exact.") {
                    format!("viaexact.{zone}")
                } else {
                    format!("viahosts.{zone}")
                };
                (
                    vec![rtype::A, rtype::AAAA],
                    vec![rtype::A, rtype::AAAA],
                    vec![RecordType::A, RecordType::Aaaa],
                    (
                        domain,
                        Expect::HostsUnusable(vec![s(owner)], Because::Addresses),
                    ),
                )
            }
            Kind::Tlsa => {
                let host = owner.trim_start_matches("_25._tcp.");
                (
                    vec![rtype::TLSA],
                    vec![rtype::TLSA],
                    vec![RecordType::Tlsa],
                    (s(zone), Expect::HostsUnusable(vec![s(host)], Because::Tlsa)),
                )
            }
            Kind::Ds | Kind::Dnskey => unreachable!("no wildcard DS or DNSKEY"),
        };
    Case {
        what: format!("{owner} {kind:?}"),
        rules: rule(Target::exact(owner, &qtypes), tampering),
        probes: probes.into_iter().map(|t| (s(owner), t)).collect(),
        lookups: lookups.into_iter().map(|t| (s(owner), t)).collect(),
        route,
    }
}

/// A genuine wildcard expansion (`x.mail` MX, `a.hosts` A/AAAA, `_25._tcp.mx2` TLSA) without
/// the NSEC/NSEC3 proof that the name does not exist (RFC 4035 §5.3.4, RFC 5155 §8.8).
#[test]
fn wildcard_answer_without_nsec_proof_is_bogus() {
    let mut cases = Vec::new();
    for zone in WILD {
        for (kind, owner) in [
            (Kind::Mx, format!("x.mail.{zone}")),
            (Kind::Address, format!("a.hosts.{zone}")),
            (Kind::Tlsa, format!("_25._tcp.mx2.{zone}")),
        ] {
            cases.push(wildcard_case(
                zone,
                kind,
                &owner,
                Tampering::WildcardWithoutProof,
            ));
        }
    }
    forgery("wildcard answer without proof", cases);
}

/// The validly signed wildcard expansion for a non-existent name, renamed to a name that has
/// its own, different data (`exact.mail` MX, `exact.hosts` A/AAAA, `_25._tcp.mx1` TLSA), with
/// the source's non-existence proof or with none.
#[test]
fn wildcard_expansion_replayed_over_a_name_with_its_own_data_is_bogus() {
    let mut cases = Vec::new();
    for keep_proof in [true, false] {
        for zone in WILD {
            for (kind, owner, source) in [
                (
                    Kind::Mx,
                    format!("exact.mail.{zone}"),
                    format!("zz.mail.{zone}"),
                ),
                (
                    Kind::Address,
                    format!("exact.hosts.{zone}"),
                    format!("zz.hosts.{zone}"),
                ),
                (
                    Kind::Tlsa,
                    format!("_25._tcp.mx1.{zone}"),
                    format!("_99._tcp.mx1.{zone}"),
                ),
            ] {
                let mut c = wildcard_case(
                    zone,
                    kind,
                    &owner,
                    Tampering::WildcardReplay { source, keep_proof },
                );
                c.what = format!(
                    "{} [{}]",
                    c.what,
                    if keep_proof {
                        "with the source's proof"
                    } else {
                        "no proof"
                    }
                );
                cases.push(c);
            }
        }
    }
    forgery("wildcard expansion replayed", cases);
}

/// An unsigned CNAME in a signed zone, leading into the insecure zone and its unsigned data.
#[test]
fn unsigned_cname_into_an_insecure_zone_is_bogus() {
    forgery(
        "unsigned CNAME into an insecure zone",
        matrix(&[Kind::Mx, Kind::Address, Kind::Tlsa], |_, k| {
            Tampering::ForgedCnameToInsecure {
                target: match k {
                    Kind::Address => format!("mx1.{INSECURE}"),
                    Kind::Tlsa => format!("_25._tcp.mx1.{INSECURE}"),
                    _ => INSECURE.to_string(),
                },
            }
        }),
    );
}

/// Stripped signatures and a forged denial, with AD=1 in the forged header: the validating
/// back-end must not trust the upstream's AD bit.
#[test]
fn stripped_answers_with_the_ad_bit_set_are_bogus() {
    let mut cases = labelled(
        "RRSIGs stripped, AD=1",
        matrix(&DATA_AND_DS, |_, _| {
            Tampering::WithAdBit(Box::new(Tampering::StripRrsigs))
        }),
    );
    cases.extend(labelled(
        "forged NODATA, AD=1",
        matrix(&DATA_AND_DS, |_, _| {
            Tampering::WithAdBit(Box::new(Tampering::ForgedNoDataForeignSoa {
                soa_zone: INSECURE.into(),
            }))
        }),
    ));
    forgery("AD bit on stripped answers", cases);
}
