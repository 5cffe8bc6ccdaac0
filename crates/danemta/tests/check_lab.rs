//! `danemta check` with STARTTLS probes against Postfix receivers in the DNSSEC lab: each
//! finding is shown present where the setup is wrong and absent where it is right; and its
//! MTA-STS report (RFC 8461) against the lab's policy host, next to DANE.

use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;

use dane::cert::CertInfo;
use dane::matching::record_for;
use danemta_lab::mta_sts::{self, MtaSts, StsDomain};
use danemta_lab::pki::{TestCa, TestCert, tlsa_2_x_1};
use danemta_lab::smtp::{PeerAddr, Receiver, ReceiverSpec, ReceiverTls, claim_peer_addr};
use danemta_lab::{Lab, Signing, ZoneSpec};
use serde_json::Value;

struct World {
    lab: Lab,
    _receivers: Vec<Receiver>,
    /// An address on which nothing listens, claimed so no other lab peer takes it.
    _down: PeerAddr,
}

/// A TLSA record `u s m` for the leaf of `cert`.
fn tlsa(u: u8, s: u8, m: u8, cert: &TestCert) -> String {
    let info = CertInfo::parse(&cert.leaf_der).unwrap();
    record_for(u.into(), s.into(), m.into(), &info)
        .unwrap()
        .to_string()
}

fn zone(ips: &[IpAddr], records: &[String]) -> String {
    let mut z = String::from("@ MX 10 mx\n");
    for ip in ips {
        z.push_str(&format!("mx A {ip}\n"));
    }
    for r in records {
        z.push_str(&format!("_25._tcp.mx TLSA {r}\n"));
    }
    z
}

const SHARED: usize = 20;
const BULK: usize = 2000;

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key_a = TestCert::self_signed(&["mx.good.check.test"]).unwrap();
        let key_b = TestCert::self_signed(&["next-key.example"]).unwrap();
        let other = TestCert::self_signed(&["other.example"]).unwrap();
        let ca = TestCa::new("Check CA").unwrap();
        let ta_leaf =
            TestCert::ca_signed(&["mx.ta.check.test", "mx.ta-nochain.check.test"], &ca, true)
                .unwrap();
        let ta_nochain = TestCert::ca_signed(&["mx.ta-nochain.check.test"], &ca, false).unwrap();
        let start = |name: &str, cert: Option<&TestCert>| {
            let spec = ReceiverSpec::new(name, &["check.test"]);
            Receiver::start(match cert {
                Some(c) => spec.with_tls(c),
                None => spec,
            })
            .unwrap()
        };
        let good = start("mx.good.check.test", Some(&key_a));
        let wrong = start("mx.wrong.check.test", Some(&other));
        let plain = start("mx.plain.check.test", None);
        let ta = start("mx.ta.check.test", Some(&ta_leaf));
        let nochain = start("mx.ta-nochain.check.test", Some(&ta_nochain));
        let dual_ec = TestCert::self_signed(&["mx.dual.check.test"]).unwrap();
        let dual_rsa = TestCert::self_signed_rsa(&["mx.dual.check.test"]).unwrap();
        let dual = Receiver::start(
            ReceiverSpec::new("mx.dual.check.test", &["check.test"]).with_tls(
                ReceiverTls::Several(vec![dual_ec.clone(), dual_rsa.clone()]),
            ),
        )
        .unwrap();
        let ip = |r: &Receiver| r.addr().ip();
        let down = claim_peer_addr(25).unwrap();

        let a311 = tlsa(3, 1, 1, &key_a);
        let b311 = tlsa(3, 1, 1, &key_b);
        let mut zones = vec![
            ZoneSpec::secure(
                "good.check.test",
                zone(&[ip(&good)], &[a311.clone(), b311.clone()]),
            ),
            ZoneSpec::secure(
                "single.check.test",
                zone(&[ip(&good)], std::slice::from_ref(&a311)),
            ),
            ZoneSpec::secure(
                "wrong.check.test",
                zone(&[ip(&wrong)], &[a311.clone(), b311.clone()]),
            ),
            ZoneSpec::secure(
                "plain.check.test",
                zone(&[ip(&plain)], &[a311.clone(), b311.clone()]),
            ),
            ZoneSpec::secure(
                "mixed.check.test",
                zone(&[ip(&good), ip(&wrong)], &[a311.clone(), b311.clone()]),
            ),
            ZoneSpec::secure(
                "full.check.test",
                zone(&[ip(&good)], &[tlsa(3, 0, 1, &key_a), b311.clone()]),
            ),
            ZoneSpec::secure(
                "pkix.check.test",
                zone(
                    &[ip(&good)],
                    &[tlsa(1, 1, 1, &key_a), a311.clone(), b311.clone()],
                ),
            ),
            ZoneSpec::secure(
                "sha512.check.test",
                zone(
                    &[ip(&good)],
                    &[tlsa(3, 1, 2, &key_a), tlsa(3, 1, 2, &key_b)],
                ),
            ),
            ZoneSpec::secure(
                "many.check.test",
                zone(
                    &[ip(&good)],
                    &(0..13)
                        .map(|i| {
                            tlsa(
                                3,
                                1,
                                1,
                                &TestCert::self_signed(&[&format!("k{i}.example")]).unwrap(),
                            )
                        })
                        .chain([a311.clone()])
                        .collect::<Vec<_>>(),
                ),
            ),
            ZoneSpec::secure(
                "dual-ok.check.test",
                zone(
                    &[ip(&dual)],
                    &[tlsa(3, 1, 1, &dual_ec), tlsa(3, 1, 1, &dual_rsa)],
                ),
            ),
            ZoneSpec::secure(
                "dual-half.check.test",
                zone(&[ip(&dual)], &[tlsa(3, 1, 1, &dual_ec), b311.clone()]),
            ),
            ZoneSpec::secure(
                "down.check.test",
                zone(&[down.addr().ip()], &[a311.clone(), b311.clone()]),
            ),
            ZoneSpec::secure(
                "ta.check.test",
                zone(&[ip(&ta)], &[tlsa_2_x_1(&ca, 1), tlsa_2_x_1(&ca, 0)]),
            ),
            ZoneSpec::secure(
                "ta-nochain.check.test",
                zone(&[ip(&nochain)], &[tlsa_2_x_1(&ca, 1), tlsa_2_x_1(&ca, 0)]),
            ),
        ];
        // Hosting is concentrated: many domains, one MX host.
        for i in 0..SHARED {
            zones.push(ZoneSpec::secure(
                format!("shared{i}.check.test"),
                "@ MX 10 mx.good.check.test.\n",
            ));
        }
        // A bulk list: names in one zone, three of four to the good host, one to the wrong.
        let bulk: String = (0..BULK)
            .map(|i| {
                format!(
                    "d{i} MX 10 mx.{}.check.test.\n",
                    if i % 4 == 3 { "wrong" } else { "good" }
                )
            })
            .collect();
        zones.push(ZoneSpec::secure("bulk.check.test", bulk));
        let lab = Lab::builder().zones(zones).start().expect("lab");
        World {
            lab,
            _receivers: vec![good, wrong, plain, ta, nochain, dual],
            _down: down,
        }
    })
}

fn check(args: &[&str]) -> (i32, Vec<Value>) {
    let w = world();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["check", "--json", "--smtp-timeout", "10"])
        .args(args)
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{e}: {l}\n{}", String::from_utf8_lossy(&out.stderr)))
        })
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

fn codes(report: &Value) -> Vec<String> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["findings"].as_array().unwrap().iter())
        .chain(report["findings"].as_array().unwrap().iter())
        .filter(|f| f["level"] != "info")
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

fn one(domain: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![domain];
    args.extend_from_slice(extra);
    let (code, mut lines) = check(&args);
    (code, lines.remove(0))
}

#[test]
fn a_correct_setup_is_ok_with_the_match_and_tls_details() {
    let (code, r) = one("good.check.test", &[]);
    assert_eq!((code, r["verdict"].as_str()), (0, Some("ok")), "{r:#}");
    assert!(codes(&r).is_empty(), "{:?}", codes(&r));
    let tls = &r["hosts"][0]["addresses"][0]["tls"];
    assert_eq!(tls["starttls"], true);
    assert!(tls["version"].as_str().unwrap().starts_with("TLSv1."));
    assert!(tls["matched"].as_str().unwrap().starts_with("3 1 1 "));
    assert_eq!(tls["depth"], 0);
    assert_eq!(tls["chain"][0]["names"][0], "mx.good.check.test");
    // One record of the two matches, the other (the next key) does not yet.
    let records = tls["records"].as_array().unwrap();
    assert_eq!(
        records.iter().filter(|m| m.get("depth").is_some()).count(),
        1
    );
}

#[test]
fn each_finding_appears_where_the_setup_is_wrong() {
    for (domain, finding, exit) in [
        ("single.check.test", "single-key", 1),
        ("wrong.check.test", "no-tlsa-match", 2),
        ("plain.check.test", "starttls-missing", 2),
        ("mixed.check.test", "addresses-disagree", 1),
        ("full.check.test", "ee-full-certificate", 1),
        ("pkix.check.test", "pkix-usage", 1),
        ("sha512.check.test", "no-sha256", 1),
        ("many.check.test", "too-many-tlsa", 1),
        ("ta-nochain.check.test", "ta-not-in-chain", 2),
        ("shared0.check.test", "mx-cname", 0),
    ] {
        let (code, r) = one(domain, &[]);
        let found = codes(&r);
        if finding == "mx-cname" {
            // An MX pointing into another zone is not a CNAME: no finding.
            assert!(!found.contains(&finding.to_owned()), "{domain}: {found:?}");
            continue;
        }
        assert!(
            found.contains(&finding.to_owned()),
            "{domain}: expected {finding} in {found:?}\n{r:#}"
        );
        assert_eq!(code, exit, "{domain}: {found:?}");
    }
}

#[test]
fn dane_ta_expiry_is_judged_days_ahead() {
    let (code, r) = one("ta.check.test", &[]);
    assert_eq!(code, 0, "{:?}", codes(&r));
    assert_eq!(r["hosts"][0]["addresses"][0]["tls"]["depth"], 1);
    // The leaf is valid for a year: in 350 days it expires within 30 days.
    let (code, r) = one("ta.check.test", &["--days", "350"]);
    assert_eq!((code, codes(&r)), (1, vec!["ta-leaf-expiring".to_owned()]));
    // In 400 days it has expired: DANE-TA fails.
    let (code, r) = one("ta.check.test", &["--days", "400"]);
    assert_eq!(code, 2);
    assert!(codes(&r).contains(&"no-tlsa-match".to_owned()));
    assert!(
        r["hosts"][0]["addresses"][0]["tls"]["failure"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[test]
fn a_bulk_scan_probes_each_shared_host_once() {
    let file = world().lab.dir().join("domains.txt");
    let mut list: String = (0..SHARED)
        .map(|i| format!("shared{i}.check.test\n"))
        .collect();
    list.push_str("# and two of their own\ngood.check.test\nwrong.check.test\nnot a domain\n");
    std::fs::write(&file, list).unwrap();
    let (code, lines) = check(&["--from-file", file.to_str().unwrap(), "--concurrency", "8"]);
    assert_eq!(code, 2, "wrong.check.test fails");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["domains"], SHARED + 3);
    assert_eq!(
        summary["fail"], 2,
        "wrong.check.test and the line that is not a domain"
    );
    assert_eq!(summary["findings"]["not-a-domain"], 1);
    assert!(
        lines[SHARED + 2]["error"]
            .as_str()
            .unwrap()
            .contains("not a domain")
    );
    assert_eq!(
        summary["dane"],
        SHARED + 2,
        "every domain's MX host has usable TLSA records"
    );
    // 22 domains, 2 distinct MX hosts: 2 probes, not 22.
    assert_eq!(summary["probes"], 2, "{summary}");
    assert_eq!(lines.len(), SHARED + 4);
    assert_eq!(
        lines[0]["domain"], "shared0.check.test",
        "reports keep the input order"
    );
}

#[test]
fn a_port_without_a_server_is_reported_not_a_panic() {
    // No TLSA at _2525._tcp: DANE does not apply; the probe cannot connect and says so.
    let (code, r) = one("good.check.test", &["--port", "2525"]);
    assert_eq!(code, 0, "{r:#}");
    assert!(
        r["hosts"][0]["addresses"][0]["tls"]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{r:#}"
    );
}

#[test]
fn a_bulk_scan_of_two_thousand_domains() {
    let file = world().lab.dir().join("bulk.txt");
    let list: String = (0..BULK)
        .map(|i| format!("d{i}.bulk.check.test\n"))
        .collect();
    std::fs::write(&file, list).unwrap();
    let (code, lines) = check(&["--from-file", file.to_str().unwrap(), "--concurrency", "64"]);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), BULK + 1);
    let summary = &lines[BULK]["summary"];
    assert_eq!(summary["domains"], BULK);
    assert_eq!(summary["dane"], BULK);
    assert_eq!(summary["fail"], BULK / 4, "{summary}");
    assert_eq!(summary["ok"], BULK - BULK / 4, "{summary}");
    assert_eq!(
        summary["probes"], 2,
        "one probe per MX host, not per domain"
    );
    // And why they fail.
    assert_eq!(summary["findings"]["no-tlsa-match"], BULK / 4, "{summary}");
}

#[test]
fn servers_with_ecdsa_and_rsa_certificates_are_probed_for_each() {
    let (code, r) = one("dual-ok.check.test", &[]);
    assert_eq!(code, 0, "{:?}", codes(&r));
    let tls = &r["hosts"][0]["addresses"][0]["tls"];
    let other = &tls["other_certificate"];
    assert_ne!(tls["key"], other["key"], "{tls:#}");
    assert!(other["matched"].is_string(), "{other:#}");
    // Only the ECDSA key published: RSA-preferring clients would fail.
    let (code, r) = one("dual-half.check.test", &[]);
    assert_eq!(code, 2);
    let found = codes(&r);
    assert!(found.contains(&"no-tlsa-match".to_owned()), "{found:?}");
    let message = r["hosts"][0]["findings"].to_string();
    assert!(message.contains("RSA certificate"), "{message}");
}

#[test]
fn an_unreachable_host_is_reported_as_such_not_as_missing_starttls() {
    let (code, r) = one("down.check.test", &[]);
    assert_eq!(
        (code, codes(&r)),
        (2, vec!["unreachable".to_owned()]),
        "{r:#}"
    );
    let tls = &r["hosts"][0]["addresses"][0]["tls"];
    assert_eq!(tls["error_kind"], "unreachable", "{tls:#}");
    // Human output: the finding with its code.
    let w = world();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["check", "--smtp-timeout", "10", "down.check.test"])
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fail unreachable: "), "{text}");
    assert!(!text.contains("starttls-missing"), "{text}");
    // The table's TLS column says the same, not "no STARTTLS".
    assert!(text.contains(" unreachable "), "{text}");
    assert!(!text.contains("no STARTTLS"), "{text}");
    // A server without STARTTLS is still reported as one.
    let (_, r) = one("plain.check.test", &[]);
    assert_eq!(
        r["hosts"][0]["addresses"][0]["tls"]["error_kind"],
        "starttls-missing"
    );
}

/// The standard DNSSEC scenarios, and a few more, for findings that depend only on DNS.
fn dns_lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let pkix_only = format!(
            "@ MX 10 mx\nmx A 127.0.17.200\n_25._tcp.mx TLSA 1 1 1 {}\n",
            "07".repeat(32)
        );
        Lab::builder()
            .standard_zones()
            // An unsigned domain whose MX host has secure TLSA records.
            .zone(ZoneSpec::new(
                "unsigned-mx.test",
                "@ MX 10 mx1.secure.test.\n",
                Signing::Unsigned,
            ))
            // A secure domain whose only MX host is bogus.
            .zone(ZoneSpec::secure(
                "all-bogus.test",
                "@ MX 10 mx1.expired.test.\n",
            ))
            // Secure TLSA records, none usable for SMTP.
            .zone(ZoneSpec::secure("pkix-only.test", pkix_only))
            .start()
            .expect("lab")
    })
}

/// `check --json --no-connect DOMAIN` against [`dns_lab`]: exit code, report, and every
/// finding (info too) as `(code, level)`.
fn dns_only(domain: &str) -> (i32, Value, Vec<(String, String)>) {
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["check", "--json", "--no-connect", domain])
        .arg(format!(
            "--resolver=trust-ad@{}",
            dns_lab().validating_resolver()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let findings = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            r["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|h| h["findings"].as_array().unwrap().iter()),
        )
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (out.status.code().unwrap_or(-1), r, findings)
}

#[test]
fn each_dns_finding_appears_where_the_dns_is_wrong() {
    // (domain, finding, its level, route, exit status)
    for (domain, finding, level, route, exit) in [
        ("nullmx.test", "null-mx", "info", "bounce", 0),
        ("nosuch.secure.test", "no-such-domain", "fail", "bounce", 2),
        ("expired.test", "mx-lookup-failed", "fail", "defer", 2),
        ("mx-bogus-host.test", "host-unusable", "fail", "deliver", 2),
        ("all-bogus.test", "no-usable-host", "fail", "deliver", 2),
        ("cname-mx.test", "mx-cname", "warn", "deliver", 1),
        ("unsigned-mx.test", "insecure-mx", "warn", "deliver", 1),
        ("insecure.test", "no-dane", "info", "deliver", 0),
        ("pkix-only.test", "no-usable-tlsa", "warn", "deliver", 1),
        ("badsig.test", "address-lookup-failed", "warn", "deliver", 1),
    ] {
        let (code, r, found) = dns_only(domain);
        assert!(
            found.contains(&(finding.to_owned(), level.to_owned())),
            "{domain}: expected {finding} ({level}) in {found:?}\n{r:#}"
        );
        assert_eq!(r["route"], route, "{domain}: {r:#}");
        assert_eq!(code, exit, "{domain}: {found:?}");
    }
}

#[test]
fn a_secure_setup_has_none_of_the_dns_findings() {
    let (code, r, found) = dns_only("secure.test");
    // The lab's made-up digests are one record per host: single-key is expected, nothing else.
    assert!(
        found.iter().all(|(c, _)| c == "single-key"),
        "{found:?}\n{r:#}"
    );
    assert_eq!((code, &r["route"]), (1, &Value::from("deliver")));
    // Only the bogus host of mx-bogus-host.test is unusable: the domain still has one.
    let (_, _, found) = dns_only("mx-bogus-host.test");
    assert!(
        !found.iter().any(|(c, _)| c == "no-usable-host"),
        "{found:?}"
    );
}

/// MTA-STS domains (RFC 8461) next to DANE: one policy host for all of them, a private CA
/// (passed with `--ca-file`) that signs it and the "good" MX certificate, and a receiver whose
/// certificate comes from another CA.
struct StsWorld {
    lab: Lab,
    sts: MtaSts,
    _receivers: Vec<Receiver>,
}

/// The MX host of `domain`: `mx.<domain>`.
fn mx_of(domain: &str) -> String {
    format!("mx.{domain}")
}

fn sts_world() -> &'static StsWorld {
    static WORLD: OnceLock<StsWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let sts = MtaSts::start([
            StsDomain::enforce("enforce.sts.test", &["mx.enforce.sts.test"])
                .tls_rpt("mailto:tlsrpt@enforce.sts.test"),
            StsDomain::enforce("foreign.sts.test", &["mx.foreign.sts.test"]),
            StsDomain::testing("testing.sts.test", &["mx.testing.sts.test"])
                .id("20260101")
                .tls_rpt("mailto:tlsrpt@testing.sts.test"),
            StsDomain::enforce(
                "stale.sts.test",
                &["mx.stale.sts.test", "old-mx.stale.sts.test"],
            ),
            StsDomain::enforce("unlisted.sts.test", &["mx.elsewhere.test"]),
            StsDomain::enforce("dane.sts.test", &["*.dane.sts.test"]),
            StsDomain::enforce("dane-foreign.sts.test", &["mx.dane-foreign.sts.test"]),
        ])
        .expect("MTA-STS policy host");
        let good_names = [
            "enforce.sts.test",
            "testing.sts.test",
            "stale.sts.test",
            "unlisted.sts.test",
            "dane.sts.test",
            "absent.sts.test",
            "nopolicy.sts.test",
        ]
        .map(mx_of);
        let good_cert = sts
            .mx_cert(&good_names.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
        let foreign_cert = sts
            .foreign_cert(&["mx.foreign.sts.test", "mx.dane-foreign.sts.test"])
            .unwrap();
        let good = Receiver::start(
            ReceiverSpec::new("mx.enforce.sts.test", &["sts.test"]).with_tls(&good_cert),
        )
        .unwrap();
        let foreign = Receiver::start(
            ReceiverSpec::new("mx.foreign.sts.test", &["sts.test"]).with_tls(&foreign_cert),
        )
        .unwrap();
        let next_key = TestCert::self_signed(&["next-key.example"]).unwrap();
        let zone = |domain: &str, rx: &Receiver, tlsa: &[String]| {
            let mut z = zone(&[rx.addr().ip()], tlsa);
            z.push_str(&sts.zone_records(domain).unwrap_or_default());
            ZoneSpec::secure(domain, z)
        };
        let two_keys = |cert: &TestCert| [tlsa(3, 1, 1, cert), tlsa(3, 1, 1, &next_key)];
        let zones = vec![
            zone("enforce.sts.test", &good, &[]),
            zone("foreign.sts.test", &foreign, &[]),
            zone("testing.sts.test", &good, &[]),
            zone("stale.sts.test", &good, &[]),
            zone("unlisted.sts.test", &good, &[]),
            zone("absent.sts.test", &good, &[]),
            zone("dane.sts.test", &good, &two_keys(&good_cert)),
            zone("dane-foreign.sts.test", &foreign, &two_keys(&foreign_cert)),
            // A TXT record announcing a policy, and no policy host at all.
            {
                let mut z = zone_text(&good);
                z.push_str(&mta_sts::sts_txt("nopolicy.sts.test", "7"));
                ZoneSpec::secure("nopolicy.sts.test", z)
            },
        ];
        let lab = Lab::builder().zones(zones).start().expect("lab");
        StsWorld {
            lab,
            sts,
            _receivers: vec![good, foreign],
        }
    })
}

/// MX `mx` with the address of `rx`, no TLSA records.
fn zone_text(rx: &Receiver) -> String {
    zone(&[rx.addr().ip()], &[])
}

/// `danemta check --json DOMAIN` against [`sts_world`], trusting its CA unless `no_ca`.
fn sts_check(domain: &str, extra: &[&str], trust_ca: bool) -> (i32, Value) {
    let w = sts_world();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_danemta"));
    cmd.args(["check", "--json", "--smtp-timeout", "10", domain])
        .args(extra)
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ));
    if trust_ca {
        cmd.arg("--ca-file").arg(w.sts.ca_file());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), r)
}

/// Every finding of a report, info too, as `(code, level)`.
fn all_findings(r: &Value) -> Vec<(String, String)> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            r["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|h| h["findings"].as_array().unwrap().iter()),
        )
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sts_codes(r: &Value) -> Vec<(String, String)> {
    all_findings(r)
        .into_iter()
        .filter(|(c, _)| c.starts_with("sts-") || c.starts_with("tls-rpt"))
        .collect()
}

#[test]
fn an_enforce_policy_with_pkix_valid_mx_hosts_is_ok() {
    let (code, r) = sts_check("enforce.sts.test", &[], true);
    assert_eq!((code, r["verdict"].as_str()), (0, Some("ok")), "{r:#}");
    let sts = &r["mta_sts"];
    assert_eq!(sts["status"], "valid", "{sts:#}");
    assert_eq!(sts["mode"], "enforce");
    assert_eq!(sts["txt_id"], "1");
    assert_eq!(sts["mx"], serde_json::json!(["mx.enforce.sts.test"]));
    assert_eq!(sts["max_age"], 86400);
    assert_eq!(
        sts["tls_rpt"],
        serde_json::json!(["mailto:tlsrpt@enforce.sts.test"])
    );
    let host = &r["hosts"][0];
    assert_eq!(host["mta_sts_match"], true, "{host:#}");
    assert_eq!(host["pkix_valid"], true, "{host:#}");
    assert_eq!(host["addresses"][0]["tls"]["pkix_valid"], true);
    assert_eq!(sts_codes(&r), [] as [(String, String); 0]);
    // The policy host was asked with its own name, on the right path.
    let requests = sts_world().sts.server().requests();
    assert!(
        requests.iter().any(
            |q| q.server_name.as_deref() == Some("mta-sts.enforce.sts.test")
                && q.path == "/.well-known/mta-sts.txt"
        ),
        "{requests:?}"
    );
}

#[test]
fn without_the_private_ca_the_policy_host_fails_pkix() {
    // The same domain, trusting only the system's roots: the policy host is not authenticated
    // (RFC 8461 §3.3), so there is no policy, and the MX certificate fails PKIX too.
    let (code, r) = sts_check("enforce.sts.test", &[], false);
    let sts = &r["mta_sts"];
    assert_eq!(sts["status"], "fetch-failed", "{sts:#}");
    assert_eq!(sts["result_type"], "sts-webpki-invalid", "{sts:#}");
    assert_eq!(sts["txt_id"], "1");
    assert!(sts["mode"].is_null());
    assert_eq!(
        sts_codes(&r),
        [("sts-txt-without-policy".to_owned(), "fail".to_owned())]
    );
    assert_eq!(code, 2);
    let host = &r["hosts"][0];
    assert!(
        host["mta_sts_match"].is_null(),
        "no policy applies: {host:#}"
    );
    assert_eq!(host["pkix_valid"], false, "{host:#}");
}

#[test]
fn an_enforce_policy_whose_mx_certificate_fails_pkix_is_a_failure() {
    let (code, r) = sts_check("foreign.sts.test", &[], true);
    assert_eq!(r["mta_sts"]["status"], "valid", "{r:#}");
    let host = &r["hosts"][0];
    assert_eq!(host["mta_sts_match"], true);
    assert_eq!(host["pkix_valid"], false, "{host:#}");
    let why = host["addresses"][0]["tls"]["pkix_error"].as_str().unwrap();
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert!(host["pkix_error"].as_str().unwrap().contains(why));
    assert_eq!(
        sts_codes(&r),
        [("sts-enforce-pkix-fail".to_owned(), "fail".to_owned())]
    );
    assert_eq!((code, r["verdict"].as_str()), (2, Some("fail")));
}

#[test]
fn a_testing_policy_is_reported_but_not_a_fault() {
    let (code, r) = sts_check("testing.sts.test", &[], true);
    let sts = &r["mta_sts"];
    assert_eq!(
        (&sts["status"], &sts["mode"], &sts["txt_id"]),
        (
            &Value::from("valid"),
            &Value::from("testing"),
            &Value::from("20260101")
        ),
        "{sts:#}"
    );
    assert_eq!(r["hosts"][0]["mta_sts_match"], true);
    assert_eq!(
        sts_codes(&r),
        [("sts-testing".to_owned(), "info".to_owned())]
    );
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn a_policy_listing_an_mx_host_not_in_dns_is_a_warning() {
    let (code, r) = sts_check("stale.sts.test", &[], true);
    assert_eq!(
        sts_codes(&r),
        [("sts-policy-mx-unused".to_owned(), "warn".to_owned())],
        "{r:#}"
    );
    let message = r["findings"].to_string();
    assert!(message.contains("old-mx.stale.sts.test"), "{message}");
    assert_eq!(r["hosts"][0]["mta_sts_match"], true);
    assert_eq!(code, 1);
}

#[test]
fn an_enforce_policy_listing_none_of_the_mx_hosts_defers_all_mail() {
    let (code, r) = sts_check("unlisted.sts.test", &[], true);
    assert_eq!(r["hosts"][0]["mta_sts_match"], false, "{r:#}");
    let found = sts_codes(&r);
    assert!(
        found.contains(&("sts-mx-not-in-policy".to_owned(), "fail".to_owned())),
        "{found:?}"
    );
    assert!(
        found.contains(&("sts-policy-mx-unused".to_owned(), "warn".to_owned())),
        "{found:?}"
    );
    // An unlisted host is not judged for PKIX under the policy: its certificate is fine.
    assert!(
        !found.iter().any(|(c, _)| c == "sts-enforce-pkix-fail"),
        "{found:?}"
    );
    assert_eq!(code, 2);
}

#[test]
fn a_txt_record_without_a_reachable_policy_fails() {
    let (code, r) = sts_check("nopolicy.sts.test", &[], true);
    let sts = &r["mta_sts"];
    assert_eq!(sts["status"], "fetch-failed", "{sts:#}");
    assert_eq!(sts["txt_id"], "7");
    assert_eq!(sts["result_type"], "sts-policy-fetch-error");
    assert!(
        sts["error"]
            .as_str()
            .unwrap()
            .contains("mta-sts.nopolicy.sts.test"),
        "{sts:#}"
    );
    assert_eq!(
        sts_codes(&r),
        [("sts-txt-without-policy".to_owned(), "fail".to_owned())]
    );
    assert_eq!(code, 2);
    assert!(r["hosts"][0]["mta_sts_match"].is_null());
}

#[test]
fn a_domain_without_mta_sts_is_absent_with_no_finding() {
    let (code, r) = sts_check("absent.sts.test", &[], true);
    let sts = &r["mta_sts"];
    assert_eq!(sts["status"], "absent", "{sts:#}");
    assert!(sts["txt_id"].is_null() && sts["mode"].is_null() && sts["tls_rpt"].is_null());
    assert_eq!(sts["mx"], serde_json::json!([]));
    assert!(r["hosts"][0]["mta_sts_match"].is_null());
    // PKIX is still reported: the certificate is valid for the MX name.
    assert_eq!(r["hosts"][0]["pkix_valid"], true);
    assert_eq!(sts_codes(&r), [] as [(String, String); 0]);
    assert_eq!(code, 0, "{r:#}");
    // The existing DANE report is unchanged for domains without MTA-STS.
    let (_, good) = one("good.check.test", &[]);
    assert_eq!(good["mta_sts"]["status"], "absent");
}

#[test]
fn dane_and_mta_sts_consistent_is_ok_and_disagreeing_is_a_warning() {
    let (code, r) = sts_check("dane.sts.test", &[], true);
    let host = &r["hosts"][0];
    assert_eq!(host["dane"], "usable", "{host:#}");
    assert!(
        host["addresses"][0]["tls"]["matched"]
            .as_str()
            .unwrap()
            .starts_with("3 1 1 ")
    );
    assert_eq!(
        (&host["mta_sts_match"], &host["pkix_valid"]),
        (&Value::from(true), &Value::from(true)),
        "a wildcard pattern matches: {host:#}"
    );
    assert_eq!(sts_codes(&r), [] as [(String, String); 0]);
    assert_eq!((code, r["verdict"].as_str()), (0, Some("ok")), "{r:#}");

    // DANE authenticates the host; MTA-STS senders would defer: a warning, not a failure.
    let (code, r) = sts_check("dane-foreign.sts.test", &[], true);
    let host = &r["hosts"][0];
    assert!(
        host["addresses"][0]["tls"]["matched"].is_string(),
        "{host:#}"
    );
    assert_eq!(host["pkix_valid"], false);
    assert_eq!(
        sts_codes(&r),
        [("sts-dane-disagree".to_owned(), "warn".to_owned())]
    );
    assert_eq!(code, 1);
}

#[test]
fn no_connect_reads_the_txt_record_but_fetches_nothing() {
    let before = sts_world().sts.server().requests().len();
    let (code, r) = sts_check("testing.sts.test", &["--no-connect"], true);
    let sts = &r["mta_sts"];
    assert_eq!(
        (&sts["status"], &sts["txt_id"]),
        (&Value::from("not-fetched"), &Value::from("20260101")),
        "{sts:#}"
    );
    assert!(r["hosts"][0]["pkix_valid"].is_null());
    assert_eq!(code, 0);
    let after: Vec<_> = sts_world()
        .sts
        .server()
        .requests()
        .into_iter()
        .skip(before)
        .filter(|q| q.server_name.as_deref() == Some("mta-sts.testing.sts.test"))
        .collect();
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn the_human_report_has_an_mta_sts_section() {
    let w = sts_world();
    let run = |domain: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .args(["check", "--smtp-timeout", "10", domain, "--ca-file"])
            .arg(w.sts.ca_file())
            .arg(format!(
                "--resolver=trust-ad@{}",
                w.lab.validating_resolver()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run("foreign.sts.test");
    assert!(
        text.contains("MTA-STS: valid — mode enforce, id 1, max_age 86400, mx mx.foreign.sts.test"),
        "{text}"
    );
    assert!(
        text.contains("mx.foreign.sts.test: in policy, PKIX FAILS"),
        "{text}"
    );
    assert!(text.contains("fail sts-enforce-pkix-fail: "), "{text}");
    let text = run("absent.sts.test");
    assert!(
        text.contains("MTA-STS: absent (no _mta-sts TXT record)"),
        "{text}"
    );
}

#[test]
fn a_bad_ca_file_is_a_usage_error() {
    let w = sts_world();
    let bad = w.lab.dir().join("not-a-ca.pem");
    std::fs::write(&bad, "no certificates here\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["check", "--json", "enforce.sts.test", "--ca-file"])
        .arg(&bad)
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ca-file"), "{stderr}");
}
