//! OpenSSL's DANE test vectors (`danetest.in`, `dane-cross.in`, from `../shared/conformance`),
//! run through the library.
//!
//! Under the general RFC 6698 profile every case must reproduce OpenSSL's outcome: success or
//! the same class of error, and the same match depth. Under the SMTP profile (RFC 7672) the
//! expectations differ where SMTP deliberately differs, as the `rfc7672_smtp_expectation`
//! column of `cases.tsv` says: PKIX-TA(0)/PKIX-EE(1) records are unusable, and DANE-EE never
//! checks names.

use std::path::PathBuf;
use std::time::Duration;

use dane::pki_types::pem::PemObject;
use dane::pki_types::{CertificateDer, UnixTime};
use dane::{Authenticator, PathProblem, ReferenceName, Tlsa, VerifyError};

struct Case {
    file: &'static str,
    number: usize,
    records: Vec<Tlsa>,
    chain: Vec<CertificateDer<'static>>,
    no_name_checks: bool,
    expected_err: u32,
    expected_depth: i64,
}

fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("DANEMTA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("conformance/openssl-dane");
    assert!(
        dir.is_dir(),
        "conformance data not found at {} (set DANEMTA_SHARED to the shared/ folder)",
        dir.display()
    );
    dir
}

/// Parses the upstream format: a header of five integers, exactly TLSA-count record lines,
/// then cert-count PEM certificates with every non-PEM line skipped (see the README, §2).
fn load(file: &'static str) -> Vec<Case> {
    let text = std::fs::read_to_string(conformance_dir().join(file)).unwrap();
    let mut lines = text.lines();
    let mut cases = Vec::new();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let header: Vec<i64> = line
            .split_whitespace()
            .map(|f| {
                f.parse()
                    .unwrap_or_else(|_| panic!("{file}: bad header {line:?}"))
            })
            .collect();
        let [n_tlsa, n_certs, no_names, err, depth] = header[..] else {
            panic!("{file}: header needs 5 fields: {line:?}");
        };
        let records = (0..n_tlsa)
            .map(|_| lines.next().unwrap().parse::<Tlsa>().unwrap())
            .collect();
        let mut pem = String::new();
        let mut found = 0;
        let mut inside = false;
        while found < n_certs {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{file}: ran out of certificates"));
            if line.starts_with("-----BEGIN") {
                inside = true;
            }
            if inside {
                pem.push_str(line);
                pem.push('\n');
            }
            if line.starts_with("-----END") {
                inside = false;
                found += 1;
            }
        }
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap())
            .collect::<Vec<_>>();
        assert_eq!(chain.len() as i64, n_certs);
        cases.push(Case {
            file,
            number: cases.len() + 1,
            records,
            chain,
            no_name_checks: no_names == 1,
            expected_err: err as u32,
            expected_depth: depth,
        });
    }
    cases
}

fn trust_store(file: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(conformance_dir().join(file))
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

fn all_cases() -> Vec<(Case, &'static str, &'static str)> {
    let mut out = Vec::new();
    out.extend(
        load("danetest.in")
            .into_iter()
            .map(|c| (c, "example.com", "danetest.pem")),
    );
    out.extend(
        load("dane-cross.in")
            .into_iter()
            .map(|c| (c, "server.example", "cross-root.pem")),
    );
    out
}

/// 2026-01-01: inside every chain's validity (README §5), so the test does not age.
fn when() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_767_225_600))
}

/// The OpenSSL error code and depth our verdict corresponds to (README §3).
fn as_openssl(result: &Result<dane::Verified, VerifyError>) -> (u32, i64) {
    match result {
        Ok(v) => (0, v.depth() as i64),
        Err(VerifyError::ChainInvalid {
            problem: PathProblem::UnknownIssuer,
            depth,
            ..
        }) => (20, depth.map_or(-1, |d| d as i64)),
        Err(VerifyError::NameMismatch { depth, .. }) => (62, *depth as i64),
        Err(VerifyError::NoMatch { .. }) => (65, -1),
        Err(other) => panic!("verdict with no OpenSSL counterpart: {other:?}"),
    }
}

#[test]
fn every_case_matches_openssl_under_the_general_profile() {
    let cases = all_cases();
    assert_eq!(cases.len(), 55, "54 danetest cases and 1 cross case");
    let mut failures = Vec::new();
    for (case, name, store) in &cases {
        let names: Vec<ReferenceName> = vec![name.parse().unwrap()];
        let auth = Authenticator::general(&case.records, names, &trust_store(store))
            .with_ee_name_checks(!case.no_name_checks);
        let result = auth.verify(&case.chain, when());
        let got = as_openssl(&result);
        if got != (case.expected_err, case.expected_depth) {
            failures.push(format!(
                "{} #{}: expected err {} depth {}, got {:?} from {:?}",
                case.file, case.number, case.expected_err, case.expected_depth, got, result
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_case_matches_rfc7672_under_the_smtp_profile() {
    // The expectation column of cases.tsv, our reading of RFC 7672 (README §6.5).
    let tsv = std::fs::read_to_string(conformance_dir().join("cases.tsv")).unwrap();
    let expectations: Vec<(String, usize, String)> = tsv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].parse().unwrap(), f[12].to_owned())
        })
        .collect();
    let mut failures = Vec::new();
    for (case, name, _) in all_cases() {
        let (_, _, expect) = expectations
            .iter()
            .find(|(f, n, _)| f == case.file && *n == case.number)
            .expect("every case is indexed");
        let auth = Authenticator::smtp(&case.records, vec![name.parse().unwrap()]);
        let result = auth.verify(&case.chain, when());
        let ok = match expect.as_str() {
            "same as OpenSSL" => as_openssl(&result) == (case.expected_err, case.expected_depth),
            "no usable TLSA (usages 0/1 unusable in SMTP)" => {
                !auth.has_usable_records()
                    && matches!(result, Err(VerifyError::NoUsableRecords { .. }))
            }
            "success depth 0 (DANE-EE ignores names in SMTP)" => {
                matches!(&result, Ok(v) if v.depth() == 0 && v.name().is_none())
            }
            other => panic!("unknown expectation {other:?}"),
        };
        if !ok {
            failures.push(format!(
                "{} #{}: expected {expect}, got {result:?}",
                case.file, case.number
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
