//! `danemta send` end to end: real Postfix receivers, real signed zones under the lab's
//! private root, validated DNSSEC, and attackers in the path. Every outcome is asserted from
//! `send`'s JSON and from what the receivers (or the attackers) saw.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use danemta_lab::pki::{TestCa, TestCert, tlsa_2_x_1, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, Mitm, Signing, StripStartTls, SubmissionServer, ZoneSpec};
use serde_json::Value;

/// Every test domain; each receiver accepts them all, so only routing decides who gets what.
const DOMAINS: &[&str] = &[
    "ee.dane.test",
    "ta.dane.test",
    "ta-spki.dane.test",
    "ta-nochain.dane.test",
    "expired-ta.dane.test",
    "expired-ee.dane.test",
    "wrongname-ta.dane.test",
    "wrongname-ee.dane.test",
    "nostarttls.dane.test",
    "nodane.test",
    "strip.dane.test",
    "strip-nodane.test",
    "mitm.dane.test",
    "mitm-nodane.test",
    "forged-mx.dane.test",
    "forged-mx-nodane.test",
    "bogus-tlsa.dane.test",
    "bogus-tlsa-nodane.test",
    "multi-fail.dane.test",
    "multi-best.dane.test",
    "submit.dane.test",
];

struct World {
    lab: Lab,
    ee: Receiver,
    ta: Receiver,
    ta_nochain: Receiver,
    expired: Receiver,
    wrongname: Receiver,
    plain: Receiver,
    strip: StripStartTls,
    mitm: Mitm,
    /// The DANE-TA CA as a PEM file, for the PKIX levels' --ca-file.
    ca_file: std::path::PathBuf,
    /// The submission server of submit.dane.test (user alice, password secret).
    submission: SubmissionServer,
    /// Submission servers that must never see credentials (user alice, password secret):
    /// behind a secure SRV without TLSA, behind an insecure SRV (with a forged TLSA), and an
    /// attacker's DANE-protected host that an insecure SRV points at.
    sub_no_tlsa: SubmissionServer,
    sub_insecure: SubmissionServer,
    sub_attacker: SubmissionServer,
    /// A plaintext server (MX of inject.dane.test) that records every command line.
    recorder: SubmissionServer,
}

fn ip(r: SocketAddr) -> IpAddr {
    r.ip()
}

/// `@ MX 10 mx`, `mx A ip`, and the TLSA record when given.
fn zone(ip: IpAddr, tlsa: Option<&str>) -> String {
    let mut z = format!("@ MX 10 mx\nmx A {ip}\n");
    if let Some(t) = tlsa {
        z.push_str(&format!("_25._tcp.mx TLSA {t}\n"));
    }
    z
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let ca = TestCa::new("Lab DANE-TA CA").unwrap();
        let ee_cert = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();
        let ta_cert = TestCert::ca_signed(&["mx.ta.dane.test", "mx.ta-spki.dane.test", "mx.multi-best.dane.test"], &ca, true).unwrap();
        let nochain_cert = TestCert::ca_signed(&["mx.ta-nochain.dane.test"], &ca, false).unwrap();
        let expired_cert = TestCert::expired(&["mx.expired-ta.dane.test", "mx.expired-ee.dane.test"], Some(&ca)).unwrap();
        let wrong_cert = TestCert::ca_signed(&["other.example"], &ca, true).unwrap();
        let attacker = TestCert::self_signed(&["mx.ee.dane.test"]).unwrap();

        let receiver = |name: &str, cert: Option<&TestCert>| {
            let spec = ReceiverSpec::new(name, DOMAINS);
            let spec = match cert {
                Some(c) => spec.with_tls(c),
                None => spec,
            };
            Receiver::start(spec).unwrap_or_else(|e| panic!("receiver {name}: {e}"))
        };
        let ee = receiver("mx.ee.dane.test", Some(&ee_cert));
        let ta = receiver("mx.ta.dane.test", Some(&ta_cert));
        let ta_nochain = receiver("mx.ta-nochain.dane.test", Some(&nochain_cert));
        let expired = receiver("mx.expired.dane.test", Some(&expired_cert));
        let wrongname = receiver("other.example", Some(&wrong_cert));
        let plain = receiver("mx.plain.test", None);
        let any = SocketAddr::from(([0, 0, 0, 0], 25));
        let strip = StripStartTls::start(any, ee.addr()).unwrap();
        let mitm = Mitm::start(any, ee.addr(), &attacker.chain_pem, &attacker.key_pem).unwrap();
        let submit_cert = TestCert::self_signed(&["smtp.submit.dane.test"]).unwrap();
        let submission =
            SubmissionServer::start(SocketAddr::from(([0, 0, 0, 0], 0)), Some(&submit_cert), Some(("alice", "secret"))).unwrap();
        let sub = submission.addr();
        let credentialed = |cert: &TestCert| {
            SubmissionServer::start(SocketAddr::from(([0, 0, 0, 0], 0)), Some(cert), Some(("alice", "secret"))).unwrap()
        };
        let no_tlsa_cert = TestCert::self_signed(&["smtp.submit-notlsa.dane.test"]).unwrap();
        let sub_no_tlsa = credentialed(&no_tlsa_cert);
        let insecure_cert = TestCert::self_signed(&["smtp.submit-insecure.test"]).unwrap();
        let sub_insecure = credentialed(&insecure_cert);
        let attacker_sub_cert = TestCert::self_signed(&["smtp.attacker.dane.test"]).unwrap();
        let sub_attacker = credentialed(&attacker_sub_cert);
        let recorder = SubmissionServer::start(SocketAddr::from(([0, 0, 0, 0], 25)), None, None).unwrap();
        // `_submission._tcp SRV` to `target` on the server's port, with its A record when the
        // target is relative, and a TLSA record for it when given.
        let srv = |server: &SubmissionServer, target: &str, tlsa: Option<String>| {
            let a = server.addr();
            let mut z = format!("_submission._tcp SRV 0 1 {} {target}\n", a.port());
            if !target.ends_with('.') {
                z.push_str(&format!("{target} A {}\n", a.ip()));
            }
            if let Some(t) = tlsa {
                z.push_str(&format!("_{}._tcp.{target} TLSA {t}\n", a.port()));
            }
            z
        };

        let ee311 = tlsa_3_1_1(&ee_cert);
        let ta201 = tlsa_2_x_1(&ca, 0);
        let ta211 = tlsa_2_x_1(&ca, 1);
        let secure = |name: &str, records: String| ZoneSpec::secure(name, records);
        let zones = vec![
            secure("ee.dane.test", zone(ip(ee.addr()), Some(&ee311))),
            secure("ta.dane.test", zone(ip(ta.addr()), Some(&ta201))),
            secure("ta-spki.dane.test", zone(ip(ta.addr()), Some(&ta211))),
            secure("ta-nochain.dane.test", zone(ip(ta_nochain.addr()), Some(&ta211))),
            secure("expired-ta.dane.test", zone(ip(expired.addr()), Some(&ta201))),
            secure("expired-ee.dane.test", zone(ip(expired.addr()), Some(&tlsa_3_1_1(&expired_cert)))),
            secure("wrongname-ta.dane.test", zone(ip(wrongname.addr()), Some(&ta201))),
            secure("wrongname-ee.dane.test", zone(ip(wrongname.addr()), Some(&tlsa_3_1_1(&wrong_cert)))),
            secure("nostarttls.dane.test", zone(ip(plain.addr()), Some(&ee311))),
            secure("nodane.test", zone(ip(plain.addr()), None)),
            secure("strip.dane.test", zone(ip(strip.addr()), Some(&ee311))),
            secure("strip-nodane.test", zone(ip(strip.addr()), None)),
            secure("mitm.dane.test", zone(ip(mitm.addr()), Some(&ee311))),
            secure("mitm-nodane.test", zone(ip(mitm.addr()), None)),
            // A forged MX: the attacker's host, in a zone whose signatures do not validate …
            ZoneSpec::new("forged-mx.dane.test", zone(ip(plain.addr()), None), Signing::ExpiredSignatures),
            // … and the same forgery where nothing is signed.
            ZoneSpec::new("forged-mx-nodane.test", zone(ip(plain.addr()), None), Signing::Unsigned),
            // A TLSA answer whose signature was stripped, and a forged TLSA in an unsigned zone.
            ZoneSpec::new(
                "bogus-tlsa.dane.test",
                zone(ip(ee.addr()), Some(&ee311)),
                Signing::StripSignature { owner: "_25._tcp.mx".into(), rtype: "TLSA".into() },
            ),
            ZoneSpec::new("bogus-tlsa-nodane.test", zone(ip(ee.addr()), Some(&tlsa_3_1_1(&attacker))), Signing::Unsigned),
            // Best MX fails DANE-TA (wrong name); the next one is good.
            secure(
                "multi-fail.dane.test",
                format!(
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n_25._tcp.mx1 TLSA {ta201}\n_25._tcp.mx2 TLSA {ee311}\n",
                    ip(wrongname.addr()),
                    ip(ee.addr())
                ),
            ),
            // RFC 6186 submission: SRV to a DANE-protected host on its own port.
            secure(
                "submit.dane.test",
                format!(
                    "_submission._tcp SRV 0 1 {} smtp\nsmtp A {}\n_{}._tcp.smtp TLSA {}\n",
                    sub.port(),
                    sub.ip(),
                    sub.port(),
                    tlsa_3_1_1(&submit_cert)
                ),
            ),
            // Submission where credentials must not go: a secure SRV without TLSA …
            secure("submit-notlsa.dane.test", srv(&sub_no_tlsa, "smtp", None)),
            // … an insecure SRV, with a (forged, hence ignored) TLSA record …
            ZoneSpec::new(
                "submit-insecure.test",
                srv(&sub_insecure, "smtp", Some(tlsa_3_1_1(&insecure_cert))),
                Signing::Unsigned,
            ),
            // … and an insecure SRV naming an attacker's host, whose own zone is signed and
            // has a valid TLSA record: DANE succeeds, but for the attacker's name only.
            ZoneSpec::new(
                "submit-attacker.test",
                srv(&sub_attacker, "smtp.attacker.dane.test.", None),
                Signing::Unsigned,
            ),
            secure(
                "attacker.dane.test",
                format!(
                    "smtp A {}\n_{}._tcp.smtp TLSA {}\n",
                    sub_attacker.addr().ip(),
                    sub_attacker.addr().port(),
                    tlsa_3_1_1(&attacker_sub_cert)
                ),
            ),
            // A plaintext server recording every command line it gets.
            secure("inject.dane.test", zone(ip(recorder.addr()), None)),
            // Best MX has no TLSA, a worse one has: the best is still used (rule 3).
            secure(
                "multi-best.dane.test",
                format!(
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n_25._tcp.mx2 TLSA {ta201}\n",
                    ip(plain.addr()),
                    ip(ta.addr())
                ),
            ),
        ];
        let lab = Lab::builder().zones(zones).start().expect("the DNSSEC lab");
        let ca_file = lab.dir().join("dane-ta-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        World {
            lab,
            ee,
            ta,
            ta_nochain,
            expired,
            wrongname,
            plain,
            strip,
            mitm,
            ca_file,
            submission,
            sub_no_tlsa,
            sub_insecure,
            sub_attacker,
            recorder,
        }
    })
}

/// The resolver options: both back-ends in turn would double the run time, so the SMTP
/// tests use trust-ad; `a_verified_delivery_through_either_back_end` covers the other.
fn trust_ad(w: &World) -> Vec<String> {
    vec![format!(
        "--resolver=trust-ad@{}",
        w.lab.validating_resolver()
    )]
}

fn validating(w: &World) -> Vec<String> {
    vec![
        format!("--resolver=validating@{}", w.lab.plain_resolver()),
        format!("--trust-anchor={}", w.lab.trust_anchor_file().display()),
    ]
}

struct Sent {
    code: i32,
    json: Value,
    stderr: String,
}

fn send_to(rcpt: &str, extra: &[&str], resolver: &[String]) -> Sent {
    send_env(rcpt, extra, resolver, &[])
}

fn send_env(rcpt: &str, extra: &[&str], resolver: &[String], env: &[(&str, &str)]) -> Sent {
    let message =
        format!("From: a@client.test\nTo: {rcpt}\nSubject: lab test for {rcpt}\n\nhello {rcpt}\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "send",
            "--from",
            "a@client.test",
            "--to",
            rcpt,
            "--json",
            "--smtp-timeout",
            "10",
            "--helo",
            "client.test",
        ])
        .args(extra)
        .args(resolver)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let sent = Sent {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr))),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    stored_as_printed(&sent.json);
    sent
}

/// What `send --json` prints is the outcome the relay's queue stores: it reads back into the
/// typed value and prints the same again, and each typed key agrees with its text.
fn stored_as_printed(json: &Value) {
    let typed: smtp::Delivery =
        serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json:#}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), json);
    for (r, printed) in typed
        .recipients
        .iter()
        .zip(json["recipients"].as_array().unwrap())
    {
        assert_eq!(printed["reply"], r.reply.to_string());
        if let Some(reply) = r.reply.smtp() {
            assert!(
                printed["reply"]
                    .as_str()
                    .unwrap()
                    .starts_with(&reply.code.to_string())
            );
            if let Some(mta) = &reply.mta {
                // A server's reply names the server of an attempt.
                assert!(
                    typed
                        .attempts
                        .iter()
                        .any(|a| a.host == mta.host && a.address == Some(mta.address)),
                    "{json:#}"
                );
            }
        }
    }
    for (a, printed) in typed
        .attempts
        .iter()
        .zip(json["attempts"].as_array().unwrap())
    {
        assert_eq!(printed["rule"], a.rule.citation());
    }
}

fn send(rcpt: &str) -> Sent {
    send_to(rcpt, &[], &trust_ad(world()))
}

/// Whether `receiver` got the message addressed to `rcpt` (waiting a little for delivery).
fn got(receiver: &Receiver, rcpt: &str) -> Option<String> {
    for _ in 0..50 {
        if let Some(m) = receiver
            .delivered()
            .into_iter()
            .find(|m| m.contains(&format!("hello {rcpt}")))
        {
            return Some(m);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn nobody_got(rcpt: &str) {
    let w = world();
    for r in [
        &w.ee,
        &w.ta,
        &w.ta_nochain,
        &w.expired,
        &w.wrongname,
        &w.plain,
    ] {
        assert!(
            !r.delivered()
                .iter()
                .any(|m| m.contains(&format!("hello {rcpt}"))),
            "{} received mail for {rcpt}",
            r.hostname()
        );
    }
}

fn attempt(s: &Sent, i: usize) -> &Value {
    &s.json["attempts"][i]
}

fn assert_delivered(s: &Sent, security: &str) {
    assert_eq!(
        (s.code, s.json["outcome"].as_str()),
        (0, Some("delivered")),
        "{:#}\n{}",
        s.json,
        s.stderr
    );
    let last = s.json["attempts"].as_array().unwrap().last().unwrap();
    assert_eq!(last["security"], security, "{:#}", s.json);
    assert_eq!(last["delivered"], true);
}

fn assert_deferred(s: &Sent) {
    assert_eq!(
        (s.code, s.json["outcome"].as_str()),
        (75, Some("deferred")),
        "{:#}\n{}",
        s.json,
        s.stderr
    );
    assert_eq!(s.json["recipients"][0]["outcome"], "deferred");
    for a in s.json["attempts"].as_array().unwrap() {
        assert_eq!(a["delivered"], false);
        assert_ne!(
            a["security"], "plaintext",
            "no plaintext where DANE applies: {a:#}"
        );
    }
}

#[test]
fn dane_ee_self_signed_key_is_verified() {
    let s = send("u@ee.dane.test");
    assert_delivered(&s, "verified");
    let a = attempt(&s, 0);
    assert_eq!(a["dane"]["state"], "usable");
    assert_eq!(a["dane"]["depth"], 0);
    assert!(a["dane"]["matched"].as_str().unwrap().starts_with("3 1 1 "));
    assert_eq!(a["dnssec"]["mx"], "secure");
    assert_eq!(a["dnssec"]["tlsa"], "secure");
    assert!(a["tls"]["version"].as_str().unwrap().starts_with("TLSv1."));
    assert!(
        s.stderr
            .contains("Verified TLS connection established to mx.ee.dane.test["),
        "{}",
        s.stderr
    );
    let m = got(&world().ee, "u@ee.dane.test").expect("delivered to the receiver");
    assert!(m.contains("(using TLSv1."), "the receiver saw TLS: {m}");
    assert!(world().ee.log().contains("TLS connection established from"));
}

#[test]
fn dane_ta_with_the_ca_in_the_chain_is_verified_at_depth_one() {
    for rcpt in ["u@ta.dane.test", "u@ta-spki.dane.test"] {
        let s = send(rcpt);
        assert_delivered(&s, "verified");
        assert_eq!(attempt(&s, 0)["dane"]["depth"], 1);
        assert!(got(&world().ta, rcpt).is_some());
    }
}

#[test]
fn dane_ta_digest_without_the_ca_in_the_chain_defers() {
    let s = send("u@ta-nochain.dane.test");
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("DANE authentication failed")
    );
    nobody_got("u@ta-nochain.dane.test");
}

#[test]
fn an_expired_leaf_fails_dane_ta_but_not_dane_ee() {
    let s = send("u@expired-ta.dane.test");
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{:#}",
        s.json
    );
    nobody_got("u@expired-ta.dane.test");
    let s = send("u@expired-ee.dane.test");
    assert_delivered(&s, "verified");
}

#[test]
fn a_wrong_name_fails_dane_ta_but_not_dane_ee() {
    let s = send("u@wrongname-ta.dane.test");
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("match none of the reference names"),
        "{:#}",
        s.json
    );
    nobody_got("u@wrongname-ta.dane.test");
    assert_delivered(&send("u@wrongname-ee.dane.test"), "verified");
}

#[test]
fn no_starttls_with_tlsa_defers_without_it_delivers_in_plaintext() {
    let s = send("u@nostarttls.dane.test");
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("STARTTLS is required but not offered")
    );
    nobody_got("u@nostarttls.dane.test");
    let s = send("u@nodane.test");
    assert_delivered(&s, "plaintext");
    assert!(got(&world().plain, "u@nodane.test").is_some());
}

#[test]
fn stripping_starttls_gets_nothing_from_a_dane_domain() {
    let w = world();
    let s = send("u@strip.dane.test");
    assert_deferred(&s);
    assert!(
        !w.strip.client_sent_mail(),
        "no MAIL/RCPT/DATA passed the attacker: {}",
        w.strip.transcript()
    );
    nobody_got("u@strip.dane.test");
    // Contrast: without DANE, opportunistic TLS is stripped and mail flows in plaintext.
    let s = send("u@strip-nodane.test");
    assert_delivered(&s, "plaintext");
    assert!(w.strip.client_sent_mail());
}

#[test]
fn a_man_in_the_middle_with_its_own_certificate_is_refused() {
    let w = world();
    let s = send("u@mitm.dane.test");
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("DANE authentication failed")
    );
    assert!(
        w.mitm.client_hellos() > 0,
        "the client did try TLS with the attacker"
    );
    nobody_got("u@mitm.dane.test");
    // Contrast: without DANE the attacker's certificate is accepted (unauthenticated TLS).
    let s = send("u@mitm-nodane.test");
    assert_delivered(&s, "untrusted");
    assert!(w.mitm.client_sent_mail());
}

#[test]
fn a_forged_mx_answer_defers_where_dnssec_applies() {
    let s = send("u@forged-mx.dane.test");
    assert_deferred(&s);
    assert!(
        s.json["attempts"].as_array().unwrap().is_empty(),
        "no connection at all: {:#}",
        s.json
    );
    assert!(
        s.json["recipients"][0]["reply"]
            .as_str()
            .unwrap()
            .contains("MX lookup")
    );
    nobody_got("u@forged-mx.dane.test");
    // Contrast: an unsigned domain's MX can be forged, and mail goes where it points.
    assert_delivered(&send("u@forged-mx-nodane.test"), "plaintext");
}

#[test]
fn a_bogus_tlsa_answer_makes_the_host_unusable() {
    let s = send("u@bogus-tlsa.dane.test");
    assert_deferred(&s);
    let a = attempt(&s, 0);
    assert_eq!(
        (a["security"].as_str(), a["dane"]["state"].as_str()),
        (Some("none"), Some("host-unusable"))
    );
    assert!(a["rule"].as_str().unwrap().contains("rule 5"));
    nobody_got("u@bogus-tlsa.dane.test");
    // Contrast: a (forged) TLSA record in an unsigned zone is ignored: opportunistic TLS.
    let s = send("u@bogus-tlsa-nodane.test");
    assert_delivered(&s, "untrusted");
    assert_eq!(attempt(&s, 0)["dane"]["state"], "not-applicable");
}

#[test]
fn the_best_mx_failing_authentication_falls_through_to_the_next() {
    let s = send("u@multi-fail.dane.test");
    assert_delivered(&s, "verified");
    assert_eq!(attempt(&s, 0)["host"], "mx1.multi-fail.dane.test");
    assert_eq!(attempt(&s, 0)["delivered"], false);
    assert_eq!(attempt(&s, 1)["host"], "mx2.multi-fail.dane.test");
    assert!(got(&world().ee, "u@multi-fail.dane.test").is_some());
    nobody_got_at(&world().wrongname, "u@multi-fail.dane.test");
}

fn nobody_got_at(r: &Receiver, rcpt: &str) {
    assert!(
        !r.delivered()
            .iter()
            .any(|m| m.contains(&format!("hello {rcpt}")))
    );
}

#[test]
fn a_worse_mx_with_tlsa_never_preempts_a_better_one_without() {
    let s = send("u@multi-best.dane.test");
    assert_delivered(&s, "plaintext");
    assert_eq!(s.json["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(attempt(&s, 0)["host"], "mx1.multi-best.dane.test");
    assert!(got(&world().plain, "u@multi-best.dane.test").is_some());
}

#[test]
fn a_verified_delivery_through_either_back_end() {
    let w = world();
    let s = send_to("v@ee.dane.test", &[], &validating(w));
    assert_delivered(&s, "verified");
}

#[test]
fn dane_only_defers_a_domain_without_dane_and_delivers_one_with_it() {
    let w = world();
    let s = send_to("o@nodane.test", &["--policy", "dane-only"], &trust_ad(w));
    assert_deferred(&s);
    assert!(
        attempt(&s, 0)["rule"]
            .as_str()
            .unwrap()
            .contains("dane-only")
    );
    let s = send_to("o@ee.dane.test", &["--policy", "dane-only"], &trust_ad(w));
    assert_delivered(&s, "verified");
    // dane-only refuses to run when DNSSEC cannot be validated here: the plain Unbound sets
    // no AD bit, so trusting it validates nothing.
    let s = send_to(
        "o2@ee.dane.test",
        &["--policy", "dane-only"],
        &[format!("--resolver=trust-ad@{}", w.lab.plain_resolver())],
    );
    assert_eq!(s.code, 75);
    assert!(s.stderr.contains("refusing dane-only"), "{}", s.stderr);
    nobody_got("o2@ee.dane.test");
}

#[test]
fn may_and_encrypt_ignore_dane() {
    let w = world();
    // `may` goes to a DANE host with unauthenticated TLS.
    let s = send_to("m@ta-nochain.dane.test", &["--policy", "may"], &trust_ad(w));
    assert_delivered(&s, "untrusted");
    // `encrypt` refuses a host without STARTTLS even where no TLSA exist.
    let s = send_to("m@nodane.test", &["--policy", "encrypt"], &trust_ad(w));
    assert_eq!(s.json["outcome"], "deferred");
    // `none` sends in plaintext even to a DANE host.
    let s = send_to("n@ee.dane.test", &["--policy", "none"], &trust_ad(w));
    assert_delivered(&s, "plaintext");
}

#[test]
fn verify_and_secure_use_pkix_with_the_given_roots() {
    let w = world();
    let ca = format!("--ca-file={}", w.ca_file.display());
    // verify: PKIX to the roots, the certificate valid for the MX host name.
    let s = send_to("p@ta.dane.test", &["--policy", "verify", &ca], &trust_ad(w));
    assert_delivered(&s, "verified");
    // Without the lab CA among the roots, nothing verifies.
    let s = send_to("p2@ta.dane.test", &["--policy", "verify"], &trust_ad(w));
    assert_eq!(s.json["outcome"], "deferred", "{:#}", s.json);
    // secure: the name must be the recipient domain (the MX name is not trusted) …
    let s = send_to(
        "p3@ta.dane.test",
        &["--policy", "secure", &ca],
        &trust_ad(w),
    );
    assert_eq!(s.json["outcome"], "deferred", "{:#}", s.json);
    // … or a configured one.
    let s = send_to(
        "p4@ta.dane.test",
        &["--policy", "secure", &ca, "--match", "mx.ta.dane.test"],
        &trust_ad(w),
    );
    assert_delivered(&s, "verified");
}

#[test]
fn bad_message_and_usage_errors() {
    let w = world();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "send",
            "--from",
            "a@client.test",
            "--to",
            "u@ee.dane.test",
            "--message",
            "/nonexistent/message",
        ])
        .args(trust_ad(w))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "send",
            "--from",
            "a@client.test",
            "--to",
            "not-an-address",
            "--message",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(65),
        "an empty message is refused first"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "send",
            "--from",
            "a@client.test",
            "--to",
            "not-an-address",
            "--policy",
            "sometimes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn submission_through_srv_with_dane_and_auth_plain() {
    let w = world();
    let via = ["--submission", "submit.dane.test", "--auth-user", "alice"];
    let s = send_env(
        "far@elsewhere.example",
        &via,
        &trust_ad(w),
        &[("DANEMTA_PASSWORD", "secret")],
    );
    assert_delivered(&s, "verified");
    let a = attempt(&s, 0);
    assert_eq!(
        (a["host"].as_str(), a["port"].as_u64()),
        (
            Some("smtp.submit.dane.test"),
            Some(u64::from(w.submission.addr().port()))
        )
    );
    let seen = w.submission.seen();
    assert!(seen.authenticated);
    assert!(
        seen.server_names
            .contains(&Some("smtp.submit.dane.test".to_owned())),
        "SNI: {:?}",
        seen.server_names
    );
    assert!(
        seen.messages
            .iter()
            .any(|m| m.contains("hello far@elsewhere.example"))
    );
    // The password never appears in what we report.
    assert!(!s.stderr.contains("secret") && !s.json.to_string().contains("secret"));

    // A wrong password: not delivered, deferred (the operator must fix it, the mail waits).
    let s = send_env(
        "far2@elsewhere.example",
        &via,
        &trust_ad(w),
        &[("DANEMTA_PASSWORD", "wrong")],
    );
    assert_eq!(s.json["outcome"], "deferred", "{:#}", s.json);
    assert!(
        !w.submission
            .seen()
            .messages
            .iter()
            .any(|m| m.contains("far2@"))
    );

    // No password in the environment: a usage error, nothing sent.
    let message = w.lab.dir().join("submission-message.eml");
    std::fs::write(&message, "Subject: x\n\nhello nopass\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args([
            "send",
            "--from",
            "a@client.test",
            "--to",
            "x@y.example",
            "--message",
        ])
        .arg(&message)
        .args(via)
        .args(trust_ad(w))
        .env_remove("DANEMTA_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("DANEMTA_PASSWORD"));
    assert!(
        !w.submission
            .seen()
            .messages
            .iter()
            .any(|m| m.contains("hello nopass"))
    );
}

/// Whether `server` ever received an AUTH command (the lab server records every command line,
/// AUTH lines with their credentials masked).
fn saw_auth(server: &SubmissionServer) -> bool {
    server
        .seen()
        .commands
        .iter()
        .any(|c| c.to_ascii_uppercase().starts_with("AUTH"))
}

/// The attack: make the client hand its submission password to a server that is not proven to
/// be the submission domain's. Each variant must defer, and the server must never get AUTH.
fn credentials_are_withheld_from(domain: &str, server: &SubmissionServer, rcpt: &str) -> Sent {
    let w = world();
    let s = send_env(
        rcpt,
        &["--submission", domain, "--auth-user", "alice"],
        &trust_ad(w),
        &[("DANEMTA_PASSWORD", "secret")],
    );
    assert_deferred(&s);
    assert!(
        !saw_auth(server),
        "AUTH reached {domain}'s server: {:?}",
        server.seen().commands
    );
    let seen = server.seen();
    assert!(!seen.authenticated);
    assert!(
        !seen.messages.iter().any(|m| m.contains(rcpt)),
        "{:?}",
        seen.messages
    );
    let reply = s.json["recipients"][0]["reply"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reply.contains("credentials"), "a clear reason: {reply}");
    assert!(!s.stderr.contains("secret") && !s.json.to_string().contains("secret"));
    s
}

#[test]
fn credentials_are_not_sent_behind_a_secure_srv_without_tlsa() {
    let w = world();
    let s = credentials_are_withheld_from(
        "submit-notlsa.dane.test",
        &w.sub_no_tlsa,
        "n1@elsewhere.example",
    );
    assert_eq!(attempt(&s, 0)["dane"]["state"], "not-applicable");
}

#[test]
fn credentials_are_not_sent_behind_an_insecure_srv() {
    let w = world();
    let s = credentials_are_withheld_from(
        "submit-insecure.test",
        &w.sub_insecure,
        "n2@elsewhere.example",
    );
    assert_eq!(attempt(&s, 0)["dnssec"]["mx"], "insecure");
}

#[test]
fn credentials_are_not_sent_to_an_attackers_dane_host_named_by_an_insecure_srv() {
    let w = world();
    let s = credentials_are_withheld_from(
        "submit-attacker.test",
        &w.sub_attacker,
        "n3@elsewhere.example",
    );
    let a = attempt(&s, 0);
    assert_eq!(a["host"], "smtp.attacker.dane.test");
    assert_eq!(
        a["dane"]["state"], "usable",
        "DANE itself would succeed: {a:#}"
    );
    assert_eq!(a["dnssec"]["mx"], "insecure");
}

/// Runs `danemta send` with the given envelope options (no --json: a usage error prints none).
fn send_raw(args: &[&str]) -> Output {
    let w = world();
    let message = w.lab.dir().join("inject-message.eml");
    std::fs::write(&message, "Subject: x\n\nhello inject\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_danemta"))
        .arg("send")
        .args(args)
        .arg("--message")
        .arg(&message)
        .args(["--smtp-timeout", "10"])
        .args(trust_ad(w))
        .output()
        .unwrap()
}

#[test]
fn command_injection_through_the_envelope_or_helo_is_refused() {
    let w = world();
    for attack in [
        // An extra RCPT smuggled in through MAIL FROM …
        vec![
            "--from",
            "a@x.test>\r\nRCPT TO:<victim@elsewhere.example",
            "--to",
            "i@inject.dane.test",
        ],
        // … through a bare LF, which some servers also take as a line end …
        vec!["--from", "a@x.test>\nRSET", "--to", "i@inject.dane.test"],
        // … through the recipient …
        vec![
            "--from",
            "a@x.test",
            "--to",
            "i@inject.dane.test>\r\nRCPT TO:<v@x.test",
        ],
        // … an ESMTP parameter injected after the path …
        vec!["--from", "a@x.test> SMTPUTF8", "--to", "i@inject.dane.test"],
        // … and a whole command through the HELO name.
        vec![
            "--from",
            "a@x.test",
            "--to",
            "i@inject.dane.test",
            "--helo",
            "client.test\r\nMAIL FROM:<forged@x.test>",
        ],
        vec![
            "--from",
            "a@x.test",
            "--to",
            "i@inject.dane.test",
            "--helo",
            "not a name",
        ],
    ] {
        let out = send_raw(&attack);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{attack:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            w.recorder.seen().commands.is_empty(),
            "{attack:?} reached the server: {:?}",
            w.recorder.seen().commands
        );
    }
    // Contrast: the null sender is a valid reverse path, and reaches the server as `<>`.
    let out = send_raw(&[
        "--from",
        "",
        "--to",
        "ok@inject.dane.test",
        "--helo",
        "client.test",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands = w.recorder.seen().commands;
    assert!(
        commands.contains(&"MAIL FROM:<>".to_owned()),
        "{commands:?}"
    );
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("victim") || c.contains("forged") || c == "RSET")
    );
}
