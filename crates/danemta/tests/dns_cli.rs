//! `danemta check --no-connect` and `danemta doctor` against the DNSSEC lab, through both
//! resolver back-ends.

use std::process::{Command, Output};

use danemta_lab::Lab;

fn lab() -> &'static Lab {
    danemta_lab::shared().unwrap_or_else(|e| panic!("the DNSSEC lab did not start: {e}"))
}

/// The resolver options of both back-ends.
fn resolvers(lab: &Lab) -> Vec<Vec<String>> {
    vec![
        vec![
            format!("--resolver=validating@{}", lab.plain_resolver()),
            format!("--trust-anchor={}", lab.trust_anchor_file().display()),
        ],
        vec![format!("--resolver=trust-ad@{}", lab.validating_resolver())],
    ]
}

fn danemta(args: &[&str], resolver: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(args)
        .args(resolver)
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn check_no_connect_reports_the_dane_state_per_host() {
    let lab = lab();
    for resolver in resolvers(lab) {
        let out = danemta(
            &["check", "--no-connect", "--json", "secure.test"],
            &resolver,
        );
        // One TLSA record per host: a warning (no next key staged for rollover).
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = &json_lines(&out)[0];
        assert_eq!(v["domain"], "secure.test");
        assert_eq!(v["verdict"], "warn");
        assert_eq!(v["hosts"][0]["findings"][0]["code"], "single-key");
        assert_eq!(v["route"], "deliver");
        assert_eq!(v["mx_dnssec"], "secure");
        let host = &v["hosts"][0];
        assert_eq!(host["name"], "mx1.secure.test");
        assert_eq!(host["preference"], 10);
        assert_eq!(host["tlsa_base"], "mx1.secure.test");
        assert_eq!(host["dane"], "usable");
        assert_eq!(host["tlsa_dnssec"], "secure");
        assert!(host["tlsa"][0].as_str().unwrap().starts_with("3 1 1 "));
        assert_eq!(host["addresses"][0]["dnssec"], "secure");
    }
}

#[test]
fn check_exit_status_follows_the_worst_verdict() {
    let lab = lab();
    for resolver in resolvers(lab) {
        // Bogus MX: fail (2). A stripped TLSA signature: one host unusable, fail.
        for bad in ["expired.test", "striptlsa.test"] {
            let out = danemta(&["check", "--no-connect", bad], &resolver);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{bad}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        // A CNAME'd MX exchange: a warning (1).
        let out = danemta(&["check", "--no-connect", "cname-mx.test"], &resolver);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("mail.cname-mx.test") && text.contains("RFC 2181"),
            "{text}"
        );
        // A null MX is a deliberate "no mail": ok.
        let out = danemta(
            &["check", "--no-connect", "--json", "nullmx.test"],
            &resolver,
        );
        assert_eq!(json_lines(&out)[0]["route"], "bounce");
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn check_reads_domains_from_a_file_and_ends_with_a_summary() {
    let lab = lab();
    let file = std::env::temp_dir().join(format!("danemta-domains-{}", std::process::id()));
    std::fs::write(
        &file,
        "# lab domains\nsecure.test\n\ninsecure.test\nbadds.test\n",
    )
    .unwrap();
    let out = danemta(
        &[
            "check",
            "--no-connect",
            "--json",
            "--from-file",
            file.to_str().unwrap(),
        ],
        &resolvers(lab)[1],
    );
    let _ = std::fs::remove_file(&file);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["summary"]["domains"], 3);
    assert_eq!(lines[3]["summary"]["fail"], 1);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_is_a_usage_error() {
    let out = danemta(&["check", "--no-connect", "bad domain"], &[]);
    assert_eq!(out.status.code(), Some(64));
    let out = danemta(
        &["check", "--no-connect", "x.test", "--resolver", "nonsense"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trust-ad@IP:PORT"));
}

#[test]
fn doctor_says_whether_dnssec_validation_works() {
    let lab = lab();
    for resolver in resolvers(lab) {
        let out = danemta(&["doctor", "--probe", "secure.test"], &resolver);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("DNSSEC validation works"), "{text}");
    }
    // A resolver that does not validate: trusting its AD bit gets nothing secure.
    let out = danemta(
        &["doctor", "--probe", "secure.test", "--json"],
        &[format!("--resolver=trust-ad@{}", lab.plain_resolver())],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = &json_lines(&out)[0];
    assert_eq!(v["can_validate"], false);
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["level"] == "fail" && c.get("fix").is_some())
    );
}

#[test]
fn a_negative_trust_anchor_on_the_command_line_makes_a_broken_zone_insecure() {
    let lab = lab();
    let validating = &resolvers(lab)[0];
    let out = danemta(
        &["check", "--no-connect", "--json", "expired.test"],
        validating,
    );
    assert_eq!(json_lines(&out)[0]["route"], "defer");
    let mut with_anchor = validating.clone();
    with_anchor.push("--negative-trust-anchor=expired.test".into());
    let out = danemta(
        &["check", "--no-connect", "--json", "expired.test"],
        &with_anchor,
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["route"], "deliver", "{v:#}");
    assert_eq!(v["mx_dnssec"], "insecure", "{v:#}");
    assert_eq!(v["hosts"][0]["dane"], "not-applicable", "{v:#}");
}
