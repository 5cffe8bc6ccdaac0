//! The crate's examples (`starttls_dane`, `route`) run as a user runs them (built by cargo,
//! run with arguments, judged by exit status and output), against the DNSSEC lab: signed and unsigned zones under the lab's
//! private root, and a real Postfix receiver offering STARTTLS with a test certificate.
//!
//! Needs root and the lab's Debian packages (nsd, unbound, ldnsutils, postfix; see
//! `scripts/test.sh`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, Mitm, Signing, StripStartTls, ZoneSpec};

struct World {
    lab: Lab,
    receiver: Receiver,
    /// The TLSA record (`3 1 1 …`) of the receiver's certificate.
    tlsa: String,
}

/// `@ MX 10 mx`, `mx A ip` and `_25._tcp.mx TLSA tlsa`.
fn zone(addr: SocketAddr, tlsa: &str) -> String {
    format!("@ MX 10 mx\nmx A {}\n_25._tcp.mx TLSA {tlsa}\n", addr.ip())
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let domains = [
            "ee.dane.test",
            "mismatch.dane.test",
            "bogus.dane.test",
            "unsigned.test",
        ];
        let cert = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
        let other = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
        let receiver =
            Receiver::start(ReceiverSpec::new("mx.ee.dane.test", &domains).with_tls(&cert))
                .unwrap_or_else(|e| panic!("Postfix receiver: {e}"));
        let at = receiver.addr();
        let tlsa = tlsa_3_1_1(&cert);
        let zones = vec![
            ZoneSpec::secure("ee.dane.test", zone(at, &tlsa)),
            // A TLSA record for another key: the receiver's certificate does not match.
            ZoneSpec::secure("mismatch.dane.test", zone(at, &tlsa_3_1_1(&other))),
            // The TLSA RRset's signature removed: bogus.
            ZoneSpec::new(
                "bogus.dane.test",
                zone(at, &tlsa),
                Signing::StripSignature {
                    owner: "_25._tcp.mx".into(),
                    rtype: "TLSA".into(),
                },
            ),
            // A matching TLSA record, but in an unsigned zone: DANE does not apply.
            ZoneSpec::new("unsigned.test", zone(at, &tlsa), Signing::Unsigned),
        ];
        let lab = Lab::builder().zones(zones).start().expect("the DNSSEC lab");
        World {
            lab,
            receiver,
            tlsa,
        }
    })
}

/// Runs the example `name` with `args`, as `cargo run --example name -- args` would. The
/// examples are built once per test process with `cargo build --examples` (a no-op when
/// they are fresh), which reports where their executables are; running those directly keeps
/// the tests off cargo's build lock.
fn example(name: &str, args: &[String]) -> Output {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let out = Command::new(cargo)
            .args([
                "build",
                "-q",
                "--examples",
                "--message-format=json",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .expect("cargo build --examples");
        assert!(
            out.status.success(),
            "cargo build --examples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["target"]["kind"][0] == "example")
            .filter_map(|m| {
                let exe = m["executable"].as_str()?.into();
                Some((m["target"]["name"].as_str()?.to_owned(), exe))
            })
            .collect()
    });
    let exe = built
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no example {name}: {built:?}"));
    Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
}

/// The validating back-end asking the lab's non-validating Unbound, anchored at the lab root.
fn validating(w: &World) -> Vec<String> {
    vec![
        format!("--resolver=validating@{}", w.lab.plain_resolver()),
        format!("--trust-anchor={}", w.lab.trust_anchor_file().display()),
    ]
}

/// Trusting the AD bit of the lab's validating Unbound.
fn trust_ad(w: &World) -> Vec<String> {
    vec![format!(
        "--resolver=trust-ad@{}",
        w.lab.validating_resolver()
    )]
}

fn run(name: &str, first: &str, options: Vec<String>) -> (i32, String) {
    let mut args = vec![first.to_owned()];
    args.extend(options);
    let out = example(name, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn starttls_dane_verifies_a_matching_server_through_either_back_end() {
    let w = world();
    for options in [validating(w), trust_ad(w)] {
        let (code, out) = run("starttls_dane", "mx.ee.dane.test", options);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("verified: mx.ee.dane.test"), "{out}");
        assert!(
            out.contains(&format!("matched: {} at depth 0", w.tlsa)),
            "{out}"
        );
        assert!(out.contains(&w.receiver.addr().ip().to_string()), "{out}");
    }
}

#[test]
fn starttls_dane_fails_on_a_tlsa_mismatch() {
    let w = world();
    let (code, out) = run("starttls_dane", "mx.mismatch.dane.test", trust_ad(w));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DANE verification of mx.mismatch.dane.test failed")
            && out.contains("no usable TLSA record matches"),
        "{out}"
    );
    assert!(!out.contains("verified:"), "{out}");
}

/// An attacker on the path to a DANE host: one strips STARTTLS from the EHLO reply, one
/// answers STARTTLS with its own certificate for the same name. Neither gets a session.
#[test]
fn starttls_dane_refuses_an_attacker_on_the_path() {
    let w = world();
    let any = SocketAddr::from(([0, 0, 0, 0], 25));
    let strip = StripStartTls::start(any, w.receiver.addr()).unwrap();
    let mut options = trust_ad(w);
    options.push(format!("--connect={}", strip.addr()));
    let (code, out) = run("starttls_dane", "mx.ee.dane.test", options);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not offer STARTTLS"), "{out}");
    assert!(strip.connections() >= 1, "{}", strip.transcript());

    let attacker = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
    let mitm = Mitm::start(
        any,
        w.receiver.addr(),
        &attacker.chain_pem,
        &attacker.key_pem,
    )
    .unwrap();
    let mut options = trust_ad(w);
    options.push(format!("--connect={}", mitm.addr()));
    let (code, out) = run("starttls_dane", "mx.ee.dane.test", options);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DANE verification of mx.ee.dane.test failed"),
        "{out}"
    );
    assert!(!out.contains("verified:"), "{out}");
    assert_eq!(mitm.handshakes(), 0, "{}", mitm.transcript());
    assert!(mitm.client_hellos() >= 1, "{}", mitm.transcript());
}

#[test]
fn starttls_dane_refuses_a_host_with_bogus_tlsa() {
    let w = world();
    let (code, out) = run("starttls_dane", "mx.bogus.dane.test", validating(w));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mx.bogus.dane.test must not be used") && out.contains("bogus"),
        "{out}"
    );
}

#[test]
fn starttls_dane_says_dane_does_not_apply_to_an_unsigned_domain() {
    let w = world();
    let (code, out) = run("starttls_dane", "mx.unsigned.test", trust_ad(w));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DANE does not apply to mx.unsigned.test") && out.contains("insecure"),
        "{out}"
    );
}

#[test]
fn starttls_dane_rejects_bad_input_without_panicking() {
    for args in [
        vec![],
        vec!["bad host name".to_owned()],
        vec![
            "mx.ee.dane.test".to_owned(),
            "--port".to_owned(),
            "x".to_owned(),
        ],
        vec![
            "mx.ee.dane.test".to_owned(),
            "--resolver=nonsense".to_owned(),
        ],
    ] {
        let out = example("starttls_dane", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("usage:") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn route_lists_the_mx_host_and_its_tlsa_records() {
    let w = world();
    for options in [validating(w), trust_ad(w)] {
        let (code, out) = run("route", "ee.dane.test", options);
        assert_eq!(code, 0, "{out}");
        for needle in [
            "ee.dane.test: MX lookup secure".to_owned(),
            "MX 10 mx.ee.dane.test port 25 (A secure".to_owned(),
            format!("address {} (secure)", w.receiver.addr().ip()),
            "TLSA lookup _25._tcp.mx.ee.dane.test (secure)".to_owned(),
            format!("TLSA {}", w.tlsa),
            "DANE usable: 1 usable record(s)".to_owned(),
        ] {
            assert!(out.contains(&needle), "{needle:?} in:\n{out}");
        }
    }
}

#[test]
fn route_of_an_unsigned_domain_says_dane_does_not_apply() {
    let w = world();
    let (code, out) = run("route", "unsigned.test", trust_ad(w));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unsigned.test: MX lookup insecure"), "{out}");
    assert!(out.contains("DANE not-applicable"), "{out}");
    assert!(!out.contains("      TLSA "), "{out}");
}

#[test]
fn route_json_is_the_discovery_value() {
    let w = world();
    let mut options = trust_ad(w);
    options.push("--json".into());
    let mut args = vec!["ee.dane.test".to_owned()];
    args.extend(options);
    let out = example("route", &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let host = &json["route"]["candidates"][0];
    assert_eq!(host["name"], "mx.ee.dane.test", "{json}");
    assert_eq!(host["dane"]["state"], "usable", "{json}");
    assert_eq!(host["tlsa"][0], w.tlsa.as_str(), "{json}");
}

#[test]
fn route_of_a_domain_that_does_not_exist_exits_non_zero() {
    let w = world();
    let (code, out) = run("route", "nxdomain.dane.test", trust_ad(w));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no route: bounced"), "{out}");
}

#[test]
fn starttls_dane_connects_where_told() {
    let w = world();
    // The receiver's own address, given explicitly: verified as before.
    let mut options = trust_ad(w);
    options.push(format!("--connect={}", w.receiver.addr()));
    let (code, out) = run("starttls_dane", "mx.ee.dane.test", options);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "verified: mx.ee.dane.test at {}",
            w.receiver.addr()
        )),
        "{out}"
    );
    // An address where nothing listens: a failure, not a panic. (--port would also change the
    // TLSA owner name, _PORT._tcp.HOST; a port in --connect changes only where to connect.)
    let mut options = trust_ad(w);
    options.extend(["--connect".into(), "127.0.39.254:9".into()]);
    let (code, out) = run("starttls_dane", "mx.ee.dane.test", options);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED") && !out.contains("panicked"), "{out}");
}
