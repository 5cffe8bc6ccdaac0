//! `danemta tlsa generate|verify` run as a user runs them: the real binary, real PEM files,
//! and OpenSSL as an independent check of the digests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("danemta-cli-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PEM of a leaf for `mx.example.test` and of its CA.
fn pki() -> (String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "mx.example.test");
    let leaf = leaf.signed_by(&KeyPair::generate().unwrap(), &ca).unwrap();
    (leaf.pem(), ca.pem())
}

fn danemta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SHA-256 of the DER of `what` ("pubkey" or "cert") of a PEM certificate, by OpenSSL.
fn openssl_sha256(pem: &Path, what: &str) -> String {
    let der = match what {
        "pubkey" => {
            let pubkey = Command::new("openssl")
                .args(["x509", "-noout", "-pubkey", "-in", path(pem)])
                .output()
                .expect("openssl is installed by scripts/test.sh");
            let mut child = Command::new("openssl")
                .args(["pkey", "-pubin", "-outform", "DER"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(&pubkey.stdout)
                .unwrap();
            child.wait_with_output().unwrap().stdout
        }
        _ => {
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in", path(pem)])
                .output()
                .unwrap()
                .stdout
        }
    };
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&der).unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    out.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn generate_defaults_to_3_1_1_of_the_leaf_key_as_openssl_computes_it() {
    let files = Files::new("gen-default");
    let (leaf, ca) = pki();
    let chain = files.write("chain.pem", &format!("{leaf}{ca}"));
    let leaf_pem = files.write("leaf.pem", &leaf);
    let out = danemta(&["tlsa", "generate", "--cert", path(&chain)]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("3 1 1 {}", openssl_sha256(&leaf_pem, "pubkey"))
    );
}

#[test]
fn generate_usage_2_names_the_top_ca_certificate() {
    let files = Files::new("gen-ta");
    let (leaf, ca) = pki();
    let chain = files.write("chain.pem", &format!("{leaf}{ca}"));
    let ca_pem = files.write("ca.pem", &ca);
    let out = danemta(&[
        "tlsa",
        "generate",
        "--cert",
        path(&chain),
        "--usage",
        "2",
        "--selector",
        "0",
    ]);
    assert_eq!(
        stdout(&out),
        format!("2 0 1 {}", openssl_sha256(&ca_pem, "cert"))
    );

    // The server certificate alone has no CA to name: a clear error, exit 2.
    let leaf_only = files.write("leaf.pem", &leaf);
    let out = danemta(&[
        "tlsa",
        "generate",
        "--cert",
        path(&leaf_only),
        "--usage",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds only the server certificate"));
}

#[test]
fn generate_prints_a_zone_file_line_for_a_host_and_port() {
    let files = Files::new("gen-name");
    let (leaf, _) = pki();
    let cert = files.write("leaf.pem", &leaf);
    let out = danemta(&[
        "tlsa",
        "generate",
        "--cert",
        path(&cert),
        "--name",
        "MX.Example.Test.",
        "--port",
        "587",
        "--matching",
        "2",
    ]);
    let line = stdout(&out);
    assert!(
        line.starts_with("_587._tcp.mx.example.test. IN TLSA 3 1 2 "),
        "{line}"
    );
    assert_eq!(line.split_whitespace().last().unwrap().len(), 128);
}

#[test]
fn generate_rejects_undefined_field_values_and_missing_files() {
    let files = Files::new("gen-bad");
    let (leaf, _) = pki();
    let cert = files.write("leaf.pem", &leaf);
    let out = danemta(&["tlsa", "generate", "--cert", path(&cert), "--selector", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--selector 2"));
    let out = danemta(&["tlsa", "generate", "--cert", "/nonexistent.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pem"));
    let empty = files.write("empty.pem", "no certificates here\n");
    let out = danemta(&["tlsa", "generate", "--cert", path(&empty)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no certificate"));
}

#[test]
fn every_generated_record_verifies_its_own_chain() {
    let files = Files::new("roundtrip");
    let (leaf, ca) = pki();
    let chain = files.write("chain.pem", &format!("{leaf}{ca}"));
    for usage in ["2", "3"] {
        for selector in ["0", "1"] {
            for matching in ["0", "1", "2"] {
                let generated = danemta(&[
                    "tlsa",
                    "generate",
                    "--cert",
                    path(&chain),
                    "--usage",
                    usage,
                    "--selector",
                    selector,
                    "--matching",
                    matching,
                ]);
                let record = stdout(&generated);
                let out = danemta(&[
                    "tlsa",
                    "verify",
                    "--chain",
                    path(&chain),
                    "--tlsa",
                    &record,
                    "--name",
                    "mx.example.test",
                ]);
                assert_eq!(out.status.code(), Some(0), "{record}: {}", stdout(&out));
            }
        }
    }
}

#[test]
fn verify_exit_status_and_json_verdict() {
    let files = Files::new("verify");
    let (leaf, ca) = pki();
    let chain = files.write("chain.pem", &format!("{leaf}{ca}"));
    let ta = stdout(&danemta(&[
        "tlsa",
        "generate",
        "--cert",
        path(&chain),
        "--usage",
        "2",
    ]));

    let ok = danemta(&[
        "tlsa",
        "verify",
        "--chain",
        path(&chain),
        "--tlsa",
        &ta,
        "--name",
        "mx.example.test",
        "--json",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["matched"], ta.as_str());
    assert_eq!(v["depth"], 1);
    assert_eq!(v["usage"], "DANE-TA(2)");
    assert_eq!(v["name"], "mx.example.test");

    // Wrong name under DANE-TA: not verified, exit 1, with the names in the verdict.
    let bad = danemta(&[
        "tlsa",
        "verify",
        "--chain",
        path(&chain),
        "--tlsa",
        &ta,
        "--name",
        "other.test",
        "--json",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&bad)).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["error"]["error"], "name-mismatch");
    assert_eq!(v["error"]["presented"][0], "mx.example.test");
    assert!(v["reason"].as_str().unwrap().contains("other.test"));

    // PKIX usages are unusable for SMTP: not verified.
    let pkix = ta.replacen('2', "0", 1);
    let out = danemta(&[
        "tlsa",
        "verify",
        "--chain",
        path(&chain),
        "--tlsa",
        &pkix,
        "--name",
        "mx.example.test",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("none of the 1 TLSA records is usable"));

    // Malformed record: bad input, exit 2, naming the field.
    let out = danemta(&[
        "tlsa",
        "verify",
        "--chain",
        path(&chain),
        "--tlsa",
        "3 1 1 abc",
        "--name",
        "mx.example.test",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("odd number of hex digits"));

    // A verification time after the leaf's expiry fails DANE-TA.
    let out = danemta(&[
        "tlsa",
        "verify",
        "--chain",
        path(&chain),
        "--tlsa",
        &ta,
        "--name",
        "mx.example.test",
        "--at",
        "4100-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("expired"));
}
