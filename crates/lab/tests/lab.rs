//! Tests of the lab itself: the standard scenarios must come out secure, insecure or bogus as
//! documented, through both resolvers, and a lab must leave no process behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use danemta_lab::dns::{self, QueryOptions, Response, rcode, rtype};
use danemta_lab::{Lab, LabError, Signing, ZoneSpec};

fn lab() -> &'static Lab {
    match danemta_lab::shared() {
        Ok(lab) => lab,
        Err(e) => panic!("the shared DNSSEC lab did not start: {e}"),
    }
}

fn ask(server: std::net::SocketAddr, name: &str, qtype: u16, options: QueryOptions) -> Response {
    match dns::query(server, name, qtype, options) {
        Ok(r) => r,
        Err(e) => panic!("{e}\n{}", lab().logs()),
    }
}

/// Through the validating resolver (RD, AD in the query, no DO).
fn validated(name: &str, qtype: u16) -> Response {
    ask(
        lab().validating_resolver(),
        name,
        qtype,
        QueryOptions::recursive(),
    )
}

/// Through the plain resolver, with DO=1.
fn plain(name: &str, qtype: u16) -> Response {
    ask(
        lab().plain_resolver(),
        name,
        qtype,
        QueryOptions::recursive_dnssec(),
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// NOERROR, AD=1, an answer of the queried type.
    Secure,
    /// NOERROR, AD=1, no answer of the queried type (NODATA or a CNAME only).
    SecureNoData,
    /// NXDOMAIN, AD=1.
    SecureNxDomain,
    /// NOERROR, AD=0, an answer of the queried type.
    Insecure,
    /// SERVFAIL.
    Bogus,
}

fn check(name: &str, qtype: u16, want: Want) {
    let r = validated(name, qtype);
    let ok = match want {
        Want::Secure => r.rcode == rcode::NOERROR && r.authentic_data && r.has_answer(qtype),
        Want::SecureNoData => r.rcode == rcode::NOERROR && r.authentic_data && !r.has_answer(qtype),
        Want::SecureNxDomain => r.rcode == rcode::NXDOMAIN && r.authentic_data,
        Want::Insecure => r.rcode == rcode::NOERROR && !r.authentic_data && r.has_answer(qtype),
        Want::Bogus => r.rcode == rcode::SERVFAIL,
    };
    assert!(
        ok,
        "{name} {}: wanted {want:?}, got {}\n{}",
        rtype::name(qtype),
        r.summary(),
        lab().logs()
    );
}

#[test]
fn secure_mx_has_ad() {
    check("secure.test", rtype::MX, Want::Secure);
    let r = validated("secure.test", rtype::MX);
    assert_eq!(r.answers_of(rtype::MX).count(), 2, "{}", r.summary());
}

#[test]
fn insecure_mx_has_no_ad() {
    check("insecure.test", rtype::MX, Want::Insecure);
    check("mx1.insecure.test", rtype::A, Want::Insecure);
    check("_25._tcp.mx1.insecure.test", rtype::TLSA, Want::Insecure);
}

#[test]
fn bogus_answers_are_servfail() {
    check("expired.test", rtype::MX, Want::Bogus);
    check("badds.test", rtype::MX, Want::Bogus);
    check("mx1.badsig.test", rtype::A, Want::Bogus);
    check("_25._tcp.mx1.striptlsa.test", rtype::TLSA, Want::Bogus);
}

#[test]
fn breakage_is_confined_to_one_rrset() {
    check("badsig.test", rtype::MX, Want::Secure);
    check("mx2.badsig.test", rtype::A, Want::Secure);
    check("mx1.badsig.test", rtype::AAAA, Want::Secure);
    check("_25._tcp.mx1.badsig.test", rtype::TLSA, Want::Secure);
    check("striptlsa.test", rtype::MX, Want::Secure);
    check("_25._tcp.mx2.striptlsa.test", rtype::TLSA, Want::Secure);
}

#[test]
fn secure_nxdomain_has_ad() {
    check("nx.secure.test", rtype::A, Want::SecureNxDomain);
    check("nx.nsec3.test", rtype::A, Want::SecureNxDomain);
    check("nsec3.test", rtype::MX, Want::Secure);
    check("_25._tcp.mx1.nsec3.test", rtype::TLSA, Want::Secure);
    check("mx1.nsec3.test", rtype::TXT, Want::SecureNoData);
}

/// Every row of the scenario table in the crate documentation.
#[test]
fn standard_scenarios_validate_as_documented() {
    use Want::*;
    let table: &[(&str, u16, Want)] = &[
        ("secure.test", rtype::MX, Secure),
        ("mx1.secure.test", rtype::A, Secure),
        ("mx2.secure.test", rtype::AAAA, Secure),
        ("_25._tcp.mx1.secure.test", rtype::TLSA, Secure),
        ("_25._tcp.mx2.secure.test", rtype::TLSA, Secure),
        ("_25._tcp.nx.secure.test", rtype::TLSA, SecureNxDomain),
        ("nsec3.test", rtype::MX, Secure),
        ("mx2.nsec3.test", rtype::AAAA, Secure),
        ("_25._tcp.nx.nsec3.test", rtype::TLSA, SecureNxDomain),
        ("insecure.test", rtype::MX, Insecure),
        ("target.insecure.test", rtype::A, Insecure),
        ("_25._tcp.cname-target.insecure.test", rtype::TLSA, Insecure),
        ("expired.test", rtype::MX, Bogus),
        ("mx1.expired.test", rtype::A, Bogus),
        ("badds.test", rtype::MX, Bogus),
        ("_25._tcp.mx1.badds.test", rtype::TLSA, Bogus),
        ("mx1.badsig.test", rtype::A, Bogus),
        ("_25._tcp.mx1.striptlsa.test", rtype::TLSA, Bogus),
        ("cname-mx.test", rtype::MX, Secure),
        ("mail.cname-mx.test", rtype::A, Secure), // CNAME + A of mx1.secure.test
        ("mail.cname-mx.test", rtype::CNAME, Secure),
        ("shared-tlsa.test", rtype::MX, Secure),
        ("_25._tcp.mx1.shared-tlsa.test", rtype::TLSA, Secure),
        ("_25._tcp.mx2.shared-tlsa.test", rtype::TLSA, Secure),
        ("mail.alias.test", rtype::MX, Secure),
        ("www.alias.test", rtype::MX, Secure),
        ("_25._tcp.mx1.alias.test", rtype::TLSA, Secure),
        ("implicit.test", rtype::MX, SecureNoData),
        ("implicit.test", rtype::A, Secure),
        ("implicit.test", rtype::AAAA, Secure),
        ("_25._tcp.implicit.test", rtype::TLSA, Secure),
        ("nullmx.test", rtype::MX, Secure),
        ("unexpanded.test", rtype::MX, Secure),
        ("mx.unexpanded.test", rtype::CNAME, Secure),
        ("_25._tcp.mx.unexpanded.test", rtype::TLSA, Secure),
        ("_25._tcp.target.insecure.test", rtype::TLSA, SecureNoData), // insecure NXDOMAIN: see below
        ("cname-insecure.test", rtype::MX, Secure),
        ("mx.cname-insecure.test", rtype::CNAME, Secure),
        (
            "_25._tcp.mx.cname-insecure.test",
            rtype::TLSA,
            SecureNxDomain,
        ),
        ("noaaaa-broken.test", rtype::MX, Secure),
        ("mx1.noaaaa-broken.test", rtype::A, Secure),
        ("_25._tcp.mx1.noaaaa-broken.test", rtype::TLSA, Secure),
        ("mx1.noaaaa-broken.test", rtype::AAAA, Bogus),
        ("notlsa.test", rtype::MX, Secure),
        ("mx1.notlsa.test", rtype::A, Secure),
        ("_25._tcp.mx1.notlsa.test", rtype::TLSA, SecureNxDomain),
        ("_25._tcp.mx2.notlsa.test", rtype::TLSA, SecureNoData),
        ("mx-bogus-host.test", rtype::MX, Secure),
        ("mx1.secure.test", rtype::A, Secure),
    ];
    let mut failures = Vec::new();
    for &(name, qtype, want) in table {
        if want == SecureNoData && name.ends_with(".insecure.test") {
            // Denials in an unsigned zone: NXDOMAIN without AD.
            let r = validated(name, qtype);
            if r.rcode != rcode::NXDOMAIN || r.authentic_data {
                failures.push(format!(
                    "{name}: wanted insecure NXDOMAIN, got {}",
                    r.summary()
                ));
            }
            continue;
        }
        if let Err(e) = std::panic::catch_unwind(|| check(name, qtype, want)) {
            let msg = e
                .downcast_ref::<String>()
                .map(|s| s.lines().next().unwrap_or_default().to_string())
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        lab().logs()
    );
}

#[test]
fn cname_answers_carry_the_chain() {
    let r = validated("mail.alias.test", rtype::MX);
    assert!(
        r.has_answer(rtype::CNAME) && r.has_answer(rtype::MX),
        "{}",
        r.summary()
    );
    let r = validated("_25._tcp.mx2.shared-tlsa.test", rtype::TLSA);
    assert!(r.has_answer(rtype::CNAME), "{}", r.summary());
    assert_eq!(r.answers_of(rtype::TLSA).count(), 2, "{}", r.summary());
    let r = validated("mx.unexpanded.test", rtype::A);
    assert_eq!(r.rcode, rcode::NOERROR, "{}", r.summary());
    assert!(
        !r.authentic_data,
        "CNAME into an insecure zone: {}",
        r.summary()
    );
    assert!(
        r.has_answer(rtype::CNAME) && r.has_answer(rtype::A),
        "{}",
        r.summary()
    );
}

#[test]
fn null_mx_and_addresses() {
    let r = validated("nullmx.test", rtype::MX);
    let mx = r.answers_of(rtype::MX).next().expect("an MX record");
    assert_eq!(mx.rdata, [0, 0, 0], "MX 0 .: {}", r.summary());
    let r = validated("mx2.secure.test", rtype::A);
    let a = r.answers_of(rtype::A).next().and_then(|a| a.address());
    assert_eq!(a, Some("127.0.1.2".parse().unwrap()));
    let r = validated("mx2.secure.test", rtype::AAAA);
    let aaaa = r.answers_of(rtype::AAAA).next().and_then(|a| a.address());
    assert_eq!(aaaa, Some("::ffff:127.0.1.2".parse().unwrap()));
}

#[test]
fn plain_resolver_passes_dnssec_records_through() {
    let r = plain("secure.test", rtype::MX);
    assert_eq!(r.rcode, rcode::NOERROR, "{}", r.summary());
    assert!(
        !r.authentic_data,
        "the plain resolver must not validate: {}",
        r.summary()
    );
    assert!(
        r.has_answer(rtype::MX) && r.has_rrsig_for(rtype::MX),
        "{}",
        r.summary()
    );

    // The keys a validator needs.
    let r = plain("secure.test", rtype::DNSKEY);
    assert!(
        r.has_answer(rtype::DNSKEY) && r.has_rrsig_for(rtype::DNSKEY),
        "{}",
        r.summary()
    );
    let r = plain("secure.test", rtype::DS);
    assert!(
        r.has_answer(rtype::DS) && r.has_rrsig_for(rtype::DS),
        "{}",
        r.summary()
    );

    // Denials come with their NSEC / NSEC3 records and signatures.
    let r = plain("nx.secure.test", rtype::A);
    assert_eq!(r.rcode, rcode::NXDOMAIN, "{}", r.summary());
    assert!(
        r.authorities.iter().any(|a| a.rtype == rtype::NSEC),
        "{}",
        r.summary()
    );
    let r = plain("nx.nsec3.test", rtype::A);
    assert_eq!(r.rcode, rcode::NXDOMAIN, "{}", r.summary());
    assert!(
        r.authorities.iter().any(|a| a.rtype == rtype::NSEC3),
        "{}",
        r.summary()
    );
    // No DS for the insecure delegation, proven by an NSEC of test.
    let r = plain("insecure.test", rtype::DS);
    assert!(!r.has_answer(rtype::DS), "{}", r.summary());
    assert!(
        r.authorities.iter().any(|a| a.rtype == rtype::NSEC),
        "{}",
        r.summary()
    );
}

#[test]
fn plain_resolver_passes_bogus_answers() {
    for (name, qtype) in [
        ("expired.test", rtype::MX),
        ("badds.test", rtype::MX),
        ("mx1.badsig.test", rtype::A),
        ("_25._tcp.mx1.striptlsa.test", rtype::TLSA),
        ("mx1.noaaaa-broken.test", rtype::AAAA),
    ] {
        let r = plain(name, qtype);
        assert_ne!(r.rcode, rcode::SERVFAIL, "{name}: {}", r.summary());
        assert!(!r.authentic_data, "{name}: {}", r.summary());
    }
    let r = plain("expired.test", rtype::MX);
    assert!(
        r.has_answer(rtype::MX) && r.has_rrsig_for(rtype::MX),
        "{}",
        r.summary()
    );
    let r = plain("mx1.badsig.test", rtype::A);
    let a = r.answers_of(rtype::A).next().and_then(|a| a.address());
    assert_eq!(
        a,
        Some("127.0.6.0".parse().unwrap()),
        "tampered: {}",
        r.summary()
    );
    let r = plain("_25._tcp.mx1.striptlsa.test", rtype::TLSA);
    assert!(
        r.has_answer(rtype::TLSA) && !r.has_rrsig_for(rtype::TLSA),
        "{}",
        r.summary()
    );
    let r = plain("mx1.noaaaa-broken.test", rtype::AAAA);
    assert_eq!(r.rcode, rcode::NOERROR, "{}", r.summary());
    assert!(
        r.authorities.iter().any(|a| a.rtype == rtype::NSEC)
            && !r
                .authorities
                .iter()
                .any(|a| a.covered_type() == Some(rtype::NSEC)),
        "NSEC without its RRSIG: {}",
        r.summary()
    );
}

#[test]
fn trust_anchor_is_the_root_dnskey() {
    let lab = lab();
    let ta = std::fs::read_to_string(lab.trust_anchor_file()).unwrap();
    assert!(ta.starts_with(". 3600 IN DNSKEY 257 3 13 "), "{ta}");
    let ds = std::fs::read_to_string(lab.trust_anchor_ds_file()).unwrap();
    assert!(ds.starts_with(". 3600 IN DS "), "{ds}");
    // It is the key the root actually serves.
    let root = lab.authoritative_server(".").unwrap();
    let r = dns::query(root, ".", rtype::DNSKEY, QueryOptions::authoritative()).unwrap();
    assert!(
        r.authoritative && r.has_answer(rtype::DNSKEY),
        "{}",
        r.summary()
    );
}

/// drill (ldnsutils) as an independent client: it sees the AD bit, and it can chase the
/// signatures of an answer from the plain resolver down from our trust anchor.
#[test]
fn drill_agrees() {
    let lab = lab();
    let out = Command::new("drill")
        .arg(format!("@{}", lab.validating_resolver().ip()))
        .args(["-D", "secure.test", "MX"])
        .output()
        .expect("drill (ldnsutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rcode: NOERROR"), "{text}");
    let flags = text
        .lines()
        .find(|l| l.contains(";; flags:"))
        .unwrap_or_default();
    assert!(flags.contains(" ad"), "{text}");

    let out = Command::new("drill")
        .arg("-k")
        .arg(lab.trust_anchor_file())
        .arg("-S")
        .arg(format!("@{}", lab.plain_resolver().ip()))
        .args(["mx1.secure.test", "A"])
        .output()
        .expect("drill (ldnsutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Chase successful"),
        "drill -S: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn servers_answer_on_their_own_addresses() {
    let lab = lab();
    let v = lab.validating_resolver();
    let p = lab.plain_resolver();
    assert_ne!(v, p);
    assert_eq!(v.port(), 53);
    assert!(v.ip().is_loopback() && p.ip().is_loopback());
    assert_ne!(v.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    for zone in ["secure.test", "test", "."] {
        let server = lab.authoritative_server(zone).unwrap();
        let r = dns::query(server, zone, rtype::SOA, QueryOptions::authoritative()).unwrap();
        assert!(
            r.authoritative && r.rcode == rcode::NOERROR,
            "{zone}: {}",
            r.summary()
        );
    }
    assert!(lab.authoritative_server("nope.test").is_none());
    assert!(lab.zones().any(|z| z == "mx-bogus-host.test."));
    eprintln!("standard lab: startup {:?}", lab.startup_time());
    assert!(
        lab.startup_time() < Duration::from_secs(10),
        "{:?}",
        lab.startup_time()
    );
}

/// A small custom lab of its own: free-form records, then nothing may survive the drop.
#[test]
fn custom_lab_starts_and_leaves_nothing_behind() {
    let lab = Lab::builder()
        .zone(ZoneSpec::secure(
            "mine.test",
            "@ MX 10 mx\nmx A 127.0.0.77\n_25._tcp.mx TLSA 3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        ))
        .zone(ZoneSpec::new("plain.example", "www A 127.0.0.78\n", Signing::Unsigned))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = dns::query(
        lab.validating_resolver(),
        "_25._tcp.mx.mine.test",
        rtype::TLSA,
        QueryOptions::recursive(),
    )
    .unwrap();
    assert!(
        r.authentic_data && r.has_answer(rtype::TLSA),
        "{}",
        r.summary()
    );
    let r = dns::query(
        lab.validating_resolver(),
        "www.plain.example",
        rtype::A,
        QueryOptions::recursive(),
    )
    .unwrap();
    assert!(
        r.rcode == rcode::NOERROR && !r.authentic_data,
        "{}",
        r.summary()
    );
    assert!(
        lab.zones().any(|z| z == "example."),
        "TLD added automatically"
    );

    let pids = lab.pids();
    let dir = lab.dir().to_path_buf();
    let resolver = lab.validating_resolver();
    // NSD x3 (each with forked children), Unbound x2, the watchdog.
    assert!(pids.len() >= 6, "{pids:?}");
    assert!(pids.iter().all(|&p| danemta_lab::is_alive(p)));
    eprintln!(
        "custom lab: startup {:?}, pids {pids:?}",
        lab.startup_time()
    );
    let t = std::time::Instant::now();
    drop(lab);
    eprintln!("custom lab: drop took {:?}", t.elapsed());
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| danemta_lab::is_alive(p))
        .collect();
    assert!(alive.is_empty(), "still running after drop: {alive:?}");
    assert!(!dir.exists(), "{} still exists", dir.display());
    let after = dns::query(
        resolver,
        "mine.test",
        rtype::MX,
        QueryOptions::recursive().with_timeout(Duration::from_millis(300)),
    );
    assert!(after.is_err(), "resolver still answers: {after:?}");
}

#[test]
fn bad_specs_fail_cleanly() {
    let err = Lab::builder()
        .zone(ZoneSpec::new(
            "oops.test",
            "mx A 127.0.0.1\n",
            Signing::StripSignature {
                owner: "nothere".into(),
                rtype: "A".into(),
            },
        ))
        .start()
        .unwrap_err();
    assert!(matches!(err, LabError::Zone { .. }), "{err}");
    assert!(err.to_string().contains("nothere"), "{err}");

    let err = Lab::builder()
        .zone(ZoneSpec::secure("syntax.test", "this is not a record\n"))
        .start()
        .unwrap_err();
    assert!(matches!(err, LabError::Tool { .. }), "{err}");
    assert!(err.to_string().contains("ldns-signzone"), "{err}");
    assert!(!Path::new("/tmp/danemta-lab").join("nonexistent").exists());
}

/// A zone NSD refuses to load (ldns-signzone signs it anyway): start fails fast, with NSD's
/// reason in the error, and leaves nothing behind.
#[test]
fn zone_nsd_rejects_fails_fast_with_logs() {
    let t = std::time::Instant::now();
    let err = Lab::builder()
        .zone(ZoneSpec::secure(
            "cname-clash.test",
            "www CNAME mx1.secure.test.\nwww A 127.0.0.1\n",
        ))
        .start()
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("expected startup error:\n{msg}");
    assert!(msg.contains("cname-clash.test"), "{msg}");
    assert!(msg.contains("CNAME and other data"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
