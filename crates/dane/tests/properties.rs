//! Property tests: the parsers and the verifier never panic, whatever they are fed, and the
//! presentation and wire forms of a TLSA record round-trip.
//!
//! Inputs are either plain noise or built to get past the first checks: strings from the
//! zone-file grammar (digits, hex, whitespace, parentheses, comments, `\#`), RDATA with
//! plausible field values and digest lengths, and certificate chains made of a real
//! rcgen root → intermediate → leaf with bytes flipped, cut off, dropped or reordered,
//! checked against TLSA sets that often really match one of the certificates.

use std::sync::LazyLock;
use std::time::Duration;

use dane::pki_types::{CertificateDer, UnixTime};
use dane::{Authenticator, ReferenceName, Tlsa};
use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use ring::digest;

// ---------------------------------------------------------------------------------------------
// The real chain
// ---------------------------------------------------------------------------------------------

/// One certificate of the test chain: its DER and its SubjectPublicKeyInfo.
struct Cert {
    der: Vec<u8>,
    spki: Vec<u8>,
}

/// ECDSA P-256 root → intermediate → leaf, leaf valid for `mx.example.test`. Index 0 is the
/// leaf, 1 the intermediate, 2 the root: the order a server sends them in.
static CHAIN: LazyLock<[Cert; 3]> = LazyLock::new(|| {
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Property Test Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::from_params(&root_params, &root_key);

    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca_params("Property Test Intermediate");
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::from_params(&inter_params, &inter_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["mx.example.test".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "mx.example.test");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &inter_issuer).unwrap();

    let cert = |c: &rcgen::Certificate, k: &KeyPair| Cert {
        der: c.der().to_vec(),
        spki: k.subject_public_key_info(),
    };
    [
        cert(&leaf, &leaf_key),
        cert(&inter, &inter_key),
        cert(&root, &root_key),
    ]
});

fn root_der() -> CertificateDer<'static> {
    CertificateDer::from(CHAIN[2].der.clone())
}

/// A time inside the validity of the rcgen certificates (1975 to 4096).
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_750_000_000))
}

fn reference_names() -> Vec<ReferenceName> {
    vec!["mx.example.test".parse().unwrap()]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn association(matching: u8, content: &[u8]) -> Vec<u8> {
    match matching {
        1 => digest::digest(&digest::SHA256, content).as_ref().to_vec(),
        2 => digest::digest(&digest::SHA512, content).as_ref().to_vec(),
        _ => content.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// One token of the zone-file grammar.
fn grammar_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,4}",
        4 => "[0-9a-fA-F]{1,72}",
        4 => "[ \t]{1,3}",
        1 => "\r?\n",
        2 => Just("(".to_owned()),
        2 => Just(")".to_owned()),
        1 => ";[ -~]{0,8}",
        1 => Just("\\#".to_owned()),
        1 => "[g-zG-Z+\\-.\\\\#]{1,2}",
        1 => "\\PC",
    ]
}

/// Strings assembled from the grammar: free token soup, or shaped like a record (three
/// numbers, then hex split by whitespace, comments and line breaks, inside parentheses or
/// not), or shaped like the RFC 3597 generic form with a length that is right or off by one.
fn grammar_string() -> impl Strategy<Value = String> {
    let free = prop::collection::vec(grammar_token(), 0..16).prop_map(|t| t.concat());

    let number = prop_oneof![
        3 => "0{0,2}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])",
        1 => "[0-9]{1,4}",
    ];
    let numbers = prop_oneof![
        4 => prop::collection::vec(number.clone(), 3),
        1 => prop::collection::vec(number, 0..=4),
    ];
    let body_token = prop_oneof![
        6 => "[0-9a-fA-F]{2,16}",
        3 => "[ \t]{1,2}",
        1 => "\r?\n",
        1 => ";[ -~]{0,8}\n",
        1 => grammar_token(),
    ];
    let parens = prop_oneof![
        3 => Just((" (", " )")),
        3 => Just((" ", "")),
        1 => Just((" (", "")),
        1 => Just((" ", " )")),
    ];
    let record = (numbers, parens, prop::collection::vec(body_token, 0..8)).prop_map(
        |(nums, (open, close), body)| format!("{}{open}{}{close}", nums.join(" "), body.concat()),
    );

    let generic = (
        prop::collection::vec("[0-9a-fA-F]{2}", 0..40),
        -1i64..=1,
        any::<bool>(),
    )
        .prop_map(|(bytes, delta, spaced)| {
            let stated = (bytes.len() as i64 + delta).max(0);
            let sep = if spaced { " " } else { "" };
            format!("\\# {stated} {}", bytes.join(sep))
        });

    prop_oneof![2 => free, 3 => record, 1 => generic]
}

/// Field values: mostly the assigned ones, sometimes anything.
fn field(assigned: u8) -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0..=assigned, 1 => any::<u8>()]
}

/// Association data of the length the matching type requires, or of any length.
fn data_for(matching: u8) -> BoxedStrategy<Vec<u8>> {
    match matching {
        1 => prop::collection::vec(any::<u8>(), 32).boxed(),
        2 => prop::collection::vec(any::<u8>(), 64).boxed(),
        _ => prop::collection::vec(any::<u8>(), 0..48).boxed(),
    }
}

/// A record that parses: fields and data consistent with each other.
fn valid_tlsa() -> impl Strategy<Value = Tlsa> {
    (field(3), field(2), field(3))
        .prop_flat_map(|(u, s, m)| {
            let data = data_for(m).prop_filter("data must not be empty", |d| !d.is_empty());
            (Just(u), Just(s), Just(m), data)
        })
        .prop_map(|(u, s, m, d)| Tlsa::new(u.into(), s.into(), m.into(), d).unwrap())
}

/// Wire RDATA: noise, or three plausible fields and data of a plausible length.
fn rdata() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (field(3), field(2), field(3))
        .prop_flat_map(|(u, s, m)| (Just([u, s, m]), data_for(m)))
        .prop_map(|(head, data)| [head.as_slice(), &data].concat());
    prop_oneof![prop::collection::vec(any::<u8>(), 0..80), shaped]
}

/// How to damage a certificate.
#[derive(Clone, Debug)]
enum Damage {
    None,
    /// XOR the byte at (index modulo length) with a non-zero mask.
    Flip(Vec<(usize, u8)>),
    /// Keep only the first (index modulo length) bytes.
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
}

/// Damage of a certificate; `intact` weighs how often it stays whole.
fn damage(intact: u32) -> impl Strategy<Value = Damage> {
    prop_oneof![
        intact => Just(Damage::None),
        3 => prop::collection::vec((any::<usize>(), 1..=255u8), 1..4).prop_map(Damage::Flip),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Extend),
    ]
}

fn apply(der: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = der.to_vec();
    match damage {
        Damage::None => {}
        Damage::Flip(flips) => {
            for &(at, mask) in flips {
                let at = at % out.len();
                out[at] ^= mask;
            }
        }
        Damage::Truncate(at) => out.truncate(at % out.len()),
        Damage::Extend(tail) => out.extend_from_slice(tail),
    }
    out
}

/// A presented chain: random byte strings, or real certificates (any subset, any order,
/// possibly repeated) each possibly damaged, with an occasional random string mixed in.
fn chain() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let noise = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4);
    let der_like = prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| {
            // A DER SEQUENCE header, so parsers get past the first byte.
            v.insert(0, 0x30);
            v.insert(1, v.len().saturating_sub(1).min(0x7f) as u8);
            v
        }),
        0..4,
    );
    let cert = prop_oneof![
        8 => (0..3usize, damage(4)).prop_map(|(i, d)| apply(&CHAIN[i].der, &d)),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let shuffled = prop::collection::vec(cert, 0..5);
    // The chain as a server sends it, leaf first, possibly cut short.
    let ordered = (1..=3usize, prop::collection::vec(damage(8), 3)).prop_map(|(len, damage)| {
        (0..len)
            .map(|i| apply(&CHAIN[i].der, &damage[i]))
            .collect::<Vec<_>>()
    });
    let real = prop_oneof![shuffled, ordered];
    prop_oneof![1 => noise, 1 => der_like, 6 => real]
}

/// A TLSA record for the verifier: usage 0..=4, selector 0..=2, matching 0..=3, with data of
/// the right digest length; often the true association of one of the real certificates
/// (sometimes damaged), so that matching and path building are exercised, not just rejection.
fn verify_tlsa() -> impl Strategy<Value = Tlsa> {
    let usage = prop_oneof![8 => 2..=3u8, 3 => 0..=1u8, 1 => Just(4u8)];
    let selector = prop_oneof![6 => 0..=1u8, 1 => Just(2u8)];
    let matching = prop_oneof![6 => 0..=2u8, 1 => Just(3u8)];
    (usage, selector, matching)
        .prop_flat_map(|(u, s, m)| {
            let random = data_for(m).prop_map(Some);
            let real = (0..3usize, damage(12)).prop_map(move |(i, d)| {
                let cert = &CHAIN[i];
                let content = match s {
                    1 => apply(&cert.spki, &d),
                    _ => apply(&cert.der, &d),
                };
                Some(association(m, &content))
            });
            (
                Just(u),
                Just(s),
                Just(m),
                prop_oneof![1 => random, 2 => real],
            )
        })
        .prop_filter_map("data must not be empty", |(u, s, m, d)| {
            Tlsa::new(u.into(), s.into(), m.into(), d?).ok()
        })
}

fn unix_time() -> impl Strategy<Value = UnixTime> {
    let at = |s| UnixTime::since_unix_epoch(Duration::from_secs(s));
    prop_oneof![
        6 => Just(now()),
        1 => (0..=u64::from(u32::MAX)).prop_map(at),
        1 => any::<u64>().prop_map(at),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// When a parse succeeded, every other form of the record gives it back.
fn assert_round_trips(t: &Tlsa) -> Result<(), TestCaseError> {
    let text = t.to_string();
    let reparsed = text.parse::<Tlsa>();
    prop_assert_eq!(reparsed.as_ref(), Ok(t), "display form {:?}", text);
    let wire = t.to_rdata();
    let from_wire = Tlsa::from_rdata(&wire);
    prop_assert_eq!(from_wire.as_ref(), Ok(t), "wire form {:?}", wire);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn from_str_never_panics_on_any_string(text in any::<String>()) {
        if let Ok(t) = text.parse::<Tlsa>() {
            assert_round_trips(&t)?;
        }
    }

    #[test]
    fn from_str_never_panics_on_grammar_strings(text in grammar_string()) {
        if let Ok(t) = text.parse::<Tlsa>() {
            assert_round_trips(&t)?;
        }
    }

    #[test]
    fn from_rdata_never_panics_and_round_trips(bytes in rdata()) {
        if let Ok(t) = Tlsa::from_rdata(&bytes) {
            prop_assert_eq!(t.to_rdata(), bytes);
            assert_round_trips(&t)?;
        }
    }

    /// Any zone-file layout of a valid record, and its RFC 3597 generic form, parse back to it.
    #[test]
    fn zone_file_layouts_parse_to_the_same_record(
        t in valid_tlsa(),
        splits in prop::collection::vec(any::<usize>(), 0..4),
        upper in any::<bool>(),
        parens in any::<bool>(),
        comment in "[ -~]{0,10}",
    ) {
        let mut digits = hex(t.data());
        if upper {
            digits = digits.to_uppercase();
        }
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (digits.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts.into_iter().rev() {
            digits.insert_str(cut, " \n\t");
        }
        let fields = format!(
            "{} {} {}",
            u8::from(t.usage()),
            u8::from(t.selector()),
            u8::from(t.matching())
        );
        let text = if parens {
            format!("{fields} ( {digits} ; {comment}\n )")
        } else {
            format!("{fields} {}", digits.replace('\n', " "))
        };
        prop_assert_eq!(text.parse::<Tlsa>(), Ok(t.clone()), "text {:?}", text);

        let wire = t.to_rdata();
        let generic = format!("\\# {} {}", wire.len(), hex(&wire));
        prop_assert_eq!(generic.parse::<Tlsa>(), Ok(t), "text {:?}", generic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics(
        chain in chain(),
        records in prop::collection::vec(verify_tlsa(), 0..6),
        general in any::<bool>(),
        ee_name_checks in any::<bool>(),
        junk_root in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        now in unix_time(),
    ) {
        let chain: Vec<CertificateDer<'_>> = chain.into_iter().map(CertificateDer::from).collect();
        let auth = if general {
            let mut roots = vec![root_der()];
            roots.extend(junk_root.map(CertificateDer::from));
            Authenticator::general(&records, reference_names(), &roots)
        } else {
            Authenticator::smtp(&records, reference_names())
        }
        .with_ee_name_checks(ee_name_checks);
        match auth.verify(&chain, now) {
            Ok(v) => {
                prop_assert!(auth.records().contains(v.record()), "{v}: not a usable record");
                let _ = v.to_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    /// The undamaged chain with a true DANE-EE `3 1 1` record of its leaf always verifies,
    /// whatever else is in the RRset and whatever the time.
    #[test]
    fn true_dane_ee_record_always_verifies(
        others in prop::collection::vec(verify_tlsa(), 0..4),
        general in any::<bool>(),
        now in unix_time(),
    ) {
        let digest = hex(&association(1, &CHAIN[0].spki));
        let ee: Tlsa = format!("3 1 1 {digest}").parse().unwrap();
        let mut records = others;
        // Digest agility: a `3 1 2` record would rightly shadow `3 1 1`.
        records.retain(|r| !r.to_string().starts_with("3 1 2 "));
        records.push(ee);
        let chain: Vec<CertificateDer<'_>> =
            CHAIN.iter().map(|c| CertificateDer::from(c.der.clone())).collect();
        let auth = if general {
            Authenticator::general(&records, reference_names(), &[root_der()])
        } else {
            Authenticator::smtp(&records, reference_names())
        };
        let result = auth.verify(&chain, now);
        prop_assert!(result.is_ok(), "{:?}", result);
    }
}

/// The fixture itself is sound: each documented case verifies with the real chain.
#[test]
fn fixture_chain_verifies() {
    let chain: Vec<CertificateDer<'_>> = CHAIN
        .iter()
        .map(|c| CertificateDer::from(c.der.clone()))
        .collect();
    let ta_inter: Tlsa = format!("2 0 1 {}", hex(&association(1, &CHAIN[1].der)))
        .parse()
        .unwrap();
    let ta_root: Tlsa = format!("2 1 2 {}", hex(&association(2, &CHAIN[2].spki)))
        .parse()
        .unwrap();
    for (record, depth) in [(ta_inter, 1), (ta_root, 2)] {
        let v = Authenticator::smtp(std::slice::from_ref(&record), reference_names())
            .verify(&chain, now())
            .unwrap();
        assert_eq!(v.depth(), depth, "{record}");
    }
    let pkix_ta: Tlsa = format!("0 0 1 {}", hex(&association(1, &CHAIN[2].der)))
        .parse()
        .unwrap();
    let v = Authenticator::general(&[pkix_ta], reference_names(), &[root_der()])
        .verify(&chain[..2], now())
        .unwrap();
    assert_eq!(v.depth(), 2);
}
