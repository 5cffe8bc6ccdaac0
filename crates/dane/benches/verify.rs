//! What DANE authentication costs next to plain WebPKI validation of the same chain.
//!
//! One ECDSA P-256 chain, root → intermediate → leaf (SAN `mx.example.test`), made with rcgen,
//! is checked four ways in the same run:
//!
//! * `webpki-baseline`: rustls-webpki alone, `EndEntityCert::verify_for_usage` (leaf +
//!   intermediate, root as trust anchor, server-auth EKU, ring's algorithms) plus
//!   `verify_is_valid_for_subject_name`: what a PKIX client does.
//! * `dane-ee-311`: `Authenticator::verify` with DANE-EE `3 1 1` of the leaf.
//! * `dane-ta-depth1`: DANE-TA `2 0 1` of the intermediate, chain leaf + intermediate.
//! * `dane-ta-depth2`: DANE-TA `2 0 1` of the root, chain leaf + intermediate + root.
//!
//! The `Authenticator` is built once per case, outside the timed loop, as the trust anchor is
//! for the baseline; each iteration includes parsing the presented certificates. After
//! criterion has run, the mean of every case measured in this run is read back from
//! criterion's `estimates.json` and printed with its ratio to the baseline.
//!
//! Run with `scripts/bench.sh` or `cargo bench -p danemta-dane --bench verify`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use dane::pki_types::{CertificateDer, ServerName, UnixTime};
use dane::{Authenticator, ReferenceName, Tlsa};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use ring::digest;
use webpki::{EndEntityCert, KeyUsage};

const GROUP: &str = "verify";
const BASELINE: &str = "webpki-baseline";
const NAME: &str = "mx.example.test";

/// Leaf, intermediate, root, in the order a server sends them, and the leaf's SPKI.
fn make_chain() -> ([CertificateDer<'static>; 3], Vec<u8>) {
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Bench Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::from_params(&root_params, &root_key);

    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca_params("Bench Intermediate");
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::from_params(&inter_params, &inter_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec![NAME.to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, NAME);
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &inter_issuer).unwrap();

    (
        [leaf.der().clone(), inter.der().clone(), root.der().clone()],
        leaf_key.subject_public_key_info(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn benches(c: &mut Criterion) {
    let ([leaf, inter, root], leaf_spki) = make_chain();
    let now = UnixTime::now();
    let names: Vec<ReferenceName> = vec![NAME.parse().unwrap()];
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;

    let ee: Tlsa = format!("3 1 1 {}", sha256_hex(&leaf_spki)).parse().unwrap();
    let ta1: Tlsa = format!("2 0 1 {}", sha256_hex(&inter)).parse().unwrap();
    let ta2: Tlsa = format!("2 0 1 {}", sha256_hex(&root)).parse().unwrap();

    let chain_ee = vec![leaf.clone()];
    let chain_ta1 = vec![leaf.clone(), inter.clone()];
    let chain_ta2 = vec![leaf.clone(), inter.clone(), root.clone()];
    let cases = [
        ("dane-ee-311", ee, chain_ee),
        ("dane-ta-depth1", ta1, chain_ta1),
        ("dane-ta-depth2", ta2, chain_ta2),
    ];
    // Sanity: every case really authenticates, at the depth its name says.
    for (id, record, chain) in &cases {
        let v = Authenticator::smtp(std::slice::from_ref(record), names.clone())
            .verify(chain, now)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        println!("{id}: {v}");
    }

    let mut group = c.benchmark_group(GROUP);

    let anchors = vec![webpki::anchor_from_trusted_cert(&root).unwrap().to_owned()];
    let intermediates = vec![inter.clone()];
    let server_name = ServerName::try_from(NAME).unwrap();
    let webpki_verify = |leaf: &CertificateDer<'_>| {
        let ee = EndEntityCert::try_from(leaf).unwrap();
        ee.verify_for_usage(
            algorithms,
            &anchors,
            &intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        ee.verify_is_valid_for_subject_name(&server_name).unwrap();
    };
    webpki_verify(&leaf);
    group.bench_function(BASELINE, |b| b.iter(|| webpki_verify(black_box(&leaf))));

    for (id, record, chain) in &cases {
        let auth = Authenticator::smtp(std::slice::from_ref(record), names.clone());
        group.bench_function(*id, |b| {
            b.iter(|| auth.verify(black_box(chain), now).unwrap())
        });
    }
    group.finish();
}

/// Where criterion writes its results: the same rule criterion itself follows.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|m| m["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

/// A case's mean time and its 95% confidence interval, in nanoseconds.
struct Mean {
    point: f64,
    lower: f64,
    upper: f64,
}

/// The mean of one case, if it was measured in this run.
fn mean_ns(home: &Path, id: &str, since: SystemTime) -> Option<Mean> {
    let path = home.join(GROUP).join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let mean = &json["mean"];
    Some(Mean {
        point: mean["point_estimate"].as_f64()?,
        lower: mean["confidence_interval"]["lower_bound"].as_f64()?,
        upper: mean["confidence_interval"]["upper_bound"].as_f64()?,
    })
}

fn print_table(since: SystemTime) {
    let home = criterion_home();
    let ids = [BASELINE, "dane-ee-311", "dane-ta-depth1", "dane-ta-depth2"];
    let means: Vec<(&str, Option<Mean>)> = ids
        .iter()
        .map(|id| (*id, mean_ns(&home, id, since)))
        .collect();
    let base = means[0].1.as_ref().map(|m| m.point);
    println!();
    println!("Authenticator::verify vs. webpki alone (mean of this run, 95% CI)");
    println!(
        "{:<16} {:>12} {:>25} {:>12}",
        "case", "mean", "95% CI", "vs webpki"
    );
    for (id, mean) in means {
        match mean {
            Some(m) => {
                let ratio = base.map_or("n/a".to_owned(), |b| format!("{:.2}x", m.point / b));
                println!(
                    "{id:<16} {:>12} {:>25} {ratio:>12}",
                    micros(m.point),
                    format!("[{} {}]", micros(m.lower), micros(m.upper))
                );
            }
            None => println!("{id:<16} {:>12}", "not measured in this run"),
        }
    }
    println!("(results read from {})", home.join(GROUP).display());
}

fn micros(ns: f64) -> String {
    format!("{:.2} µs", ns / 1000.0)
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `cargo test --benches` and `--list` run each case once or not at all: no table then.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--test" || a == "--list") {
        print_table(started);
    }
}
