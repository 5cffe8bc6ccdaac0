//! `danemta tlsa rollover` against the lab's authoritative servers: publish, wait two TTLs,
//! then safe — and `--gate` holds a renewal hook back until then.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::{Lab, ZoneSpec};
use serde_json::Value;

struct World {
    lab: Lab,
    current: PathBuf,
    next_key: PathBuf,
    next_tlsa: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let current = TestCert::self_signed(&["mx.roll.test"]).unwrap();
        let next = TestCert::self_signed(&["mx.roll.test"]).unwrap();
        let (cur, nxt) = (tlsa_3_1_1(&current), tlsa_3_1_1(&next));
        let lab = Lab::builder()
            .zone(ZoneSpec::secure(
                "only-current.roll.test",
                format!("mx A 127.0.50.1\n_25._tcp.mx TLSA {cur}\n"),
            ))
            .zone(ZoneSpec::secure(
                "both.roll.test",
                format!("mx A 127.0.50.1\n_25._tcp.mx TLSA {cur}\n_25._tcp.mx TLSA {nxt}\n"),
            ))
            .start()
            .expect("lab");
        let dir = lab.dir().to_owned();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        World {
            current: write("current.pem", &current.chain_pem),
            next_key: write("next-key.pem", &next.key_pem),
            next_tlsa: nxt,
            lab,
        }
    })
}

fn rollover(host: &str, next: &Path, state: &Path, gate: bool) -> (i32, Value) {
    let w = world();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_danemta"));
    cmd.args(["tlsa", "rollover", "--json", "--name", host])
        .arg("--current")
        .arg(&w.current)
        .arg("--next")
        .arg(next)
        .arg("--state")
        .arg(state)
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ));
    if gate {
        cmd.arg("--gate");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn the_next_key_must_be_published_everywhere_first() {
    let w = world();
    let state = w.lab.dir().join("state-only-current.json");
    let (code, v) = rollover("mx.only-current.roll.test", &w.next_key, &state, true);
    assert_eq!((code, v["stage"].as_str()), (75, Some("publish")), "{v:#}");
    assert_eq!(v["next"], w.next_tlsa.as_str());
    let servers = v["servers"].as_array().unwrap();
    assert!(!servers.is_empty());
    assert!(
        servers
            .iter()
            .all(|s| s["current"] == true && s["next"] == false && s["ttl"] == 300),
        "{v:#}"
    );
    // Without --gate the assessment is just reported.
    assert_eq!(
        rollover("mx.only-current.roll.test", &w.next_key, &state, false).0,
        0
    );
}

#[test]
fn both_published_then_two_ttls_then_safe() {
    let w = world();
    let state = w.lab.dir().join("state-both.json");
    let (code, v) = rollover("mx.both.roll.test", &w.next_key, &state, true);
    assert_eq!((code, v["stage"].as_str()), (75, Some("wait")), "{v:#}");
    assert!(v["safe_at"].is_string());
    // Pretend both records were seen at every server two TTLs and a second ago.
    let mut remembered: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let since = remembered["both_since"].as_u64().unwrap();
    remembered["both_since"] = (since - 601).into();
    std::fs::write(&state, remembered.to_string()).unwrap();
    let (code, v) = rollover("mx.both.roll.test", &w.next_key, &state, true);
    assert_eq!((code, v["stage"].as_str()), (0, Some("safe")), "{v:#}");
}

#[test]
fn the_same_key_needs_no_rollover() {
    let w = world();
    let state = w.lab.dir().join("state-same.json");
    let (code, v) = rollover("mx.both.roll.test", &w.current, &state, true);
    assert_eq!((code, v["same_key"].as_bool()), (0, Some(true)));
}

/// A zone whose name servers cannot be found is a temporary failure (75, try again), not a
/// usage error: a renewal hook must be able to tell the two apart. (No DNS server listens on
/// the discard port.)
#[test]
fn name_servers_not_found_is_a_temporary_failure() {
    let w = world();
    let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(["tlsa", "rollover", "--gate", "--name", "mx.both.roll.test"])
        .arg("--current")
        .arg(&w.current)
        .arg("--next")
        .arg(&w.next_key)
        .arg("--state")
        .arg(w.lab.dir().join("state-no-dns.json"))
        .args(["--resolver=trust-ad@127.0.0.1:9", "--dns-timeout", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("DNS lookup failed"), "{stderr}");
}
