//! MTA-STS and TLS-RPT parsing (crate `sts`): the policy file (RFC 8461 §3.2), the
//! `_mta-sts` and `_smtp._tls` TXT records and their selection among several (RFC 8461 §3.1,
//! RFC 8460 §3), and `mx` patterns (RFC 8461 §4.1). Never panics; whatever parses survives a
//! serde round trip (what the policy cache stores) and its patterns match their own domain.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sts::{MxPattern, Policy, StsId, StsRecord, TlsRptRecord};

fuzz_target!(|data: &[u8]| {
    let id: StsId = "fuzz1".parse().expect("a valid id");
    if let Ok(policy) = Policy::parse(data, id) {
        let json = serde_json::to_string(&policy).expect("a policy serialises");
        let back: Policy = serde_json::from_str(&json).expect("a stored policy reads back");
        assert_eq!(back, policy, "{json}");
        for pattern in policy.mx() {
            let host = if pattern.is_wildcard() {
                format!("mx.{}", pattern.domain())
            } else {
                pattern.domain().to_owned()
            };
            assert!(pattern.matches(&host), "{pattern} does not match {host}");
            assert!(!pattern.matches(&format!("a.b.{}", pattern.domain())));
        }
    }

    // The input as one record, and as several (one per line).
    let _ = StsRecord::parse(data);
    let _ = TlsRptRecord::parse(data);
    let records: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if let Ok(Some(record)) = StsRecord::select(&records) {
        assert_eq!(record.id.as_str().parse::<StsId>().as_ref(), Ok(&record.id));
    }
    if let Ok(Some(record)) = TlsRptRecord::select(&records) {
        assert!(!record.rua.is_empty());
    }

    // An mx pattern and a host name from the two halves of the input.
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, host) = text.split_once('\n').unwrap_or((text, text));
        if let Ok(p) = pattern.parse::<MxPattern>() {
            let _ = p.matches(host);
            assert_eq!(p.to_string().parse::<MxPattern>().as_ref(), Ok(&p));
        }
    }
});
