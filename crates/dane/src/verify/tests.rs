//! Chain verification, usage by usage.

use rcgen::ExtendedKeyUsagePurpose;

use super::*;
use crate::test_pki::{Leaf, ca, now, tlsa};

fn names(list: &[&str]) -> Vec<ReferenceName> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn smtp(records: &[Tlsa]) -> Authenticator {
    Authenticator::smtp(records, names(&["mx.example.test"]))
}

#[test]
fn dane_ee_ignores_names_and_validity() {
    // RFC 7672 §3.1.1: an expired leaf for another name still matches DANE-EE.
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        sans: &["other.test"],
        valid_days: (-400, -30),
        ..Leaf::default()
    }
    .issue(&root);
    for (s, m) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)] {
        let v = smtp(&[tlsa(3, s, m, &leaf)])
            .verify(std::slice::from_ref(&leaf), now())
            .unwrap();
        assert_eq!(
            (v.depth(), v.anchor(), v.name()),
            (0, AnchorSource::Leaf, None)
        );
        assert_eq!(v.record(), &tlsa(3, s, m, &leaf));
    }
}

#[test]
fn dane_ee_does_not_match_another_key() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf::default().issue(&root);
    let (other, _) = Leaf::default().issue(&root);
    let err = smtp(&[tlsa(3, 1, 1, &other)])
        .verify(&[leaf], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
}

#[test]
fn dane_ee_does_not_match_an_issuer() {
    // A 3 x x record for the intermediate must not authenticate its leaf.
    let root = ca("Root", None);
    let inter = ca("Inter", Some(&root));
    let (leaf, _) = Leaf::default().issue(&inter);
    let err = smtp(&[tlsa(3, 1, 1, inter.der())])
        .verify(&[leaf, inter.der().clone()], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
}

#[test]
fn dane_ta_at_depth_one_and_two() {
    let root = ca("Root", None);
    let inter = ca("Inter", Some(&root));
    let (leaf, _) = Leaf::default().issue(&inter);
    let chain = [leaf, inter.der().clone(), root.der().clone()];
    for (cert, depth) in [(inter.der(), 1), (root.der(), 2)] {
        for (s, m) in [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0), (1, 0)] {
            let v = smtp(&[tlsa(2, s, m, cert)]).verify(&chain, now()).unwrap();
            assert_eq!(v.depth(), depth, "2 {s} {m}");
            assert_eq!(v.name().map(|n| n.as_str()), Some("mx.example.test"));
        }
    }
}

#[test]
fn dane_ta_never_matches_the_leaf_itself() {
    // RFC 7671 §5.2: the trust anchor is an issuer (depth ≥ 1), never the leaf.
    let root = ca("Root", None);
    let (leaf, _) = Leaf::default().issue(&root);
    let err = smtp(&[tlsa(2, 1, 1, &leaf)])
        .verify(&[leaf], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
}

#[test]
fn dane_ta_digest_needs_the_anchor_in_the_chain() {
    // RFC 7671 §5.2.1: a 2 x 1 anchor the server does not send cannot be used.
    let root = ca("Root", None);
    let inter = ca("Inter", Some(&root));
    let (leaf, _) = Leaf::default().issue(&inter);
    let err = smtp(&[tlsa(2, 0, 1, root.der())])
        .verify(&[leaf, inter.der().clone()], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
}

#[test]
fn dane_ta_full_key_or_certificate_from_dns_need_not_be_sent() {
    let root = ca("Root", None);
    let inter = ca("Inter", Some(&root));
    let (leaf, _) = Leaf::default().issue(&inter);
    let chain = [leaf, inter.der().clone()];
    let v = smtp(&[tlsa(2, 1, 0, root.der())])
        .verify(&chain, now())
        .unwrap();
    assert_eq!((v.depth(), v.anchor()), (1, AnchorSource::Dns));
    let v = smtp(&[tlsa(2, 0, 0, root.der())])
        .verify(&chain, now())
        .unwrap();
    assert_eq!((v.depth(), v.anchor()), (2, AnchorSource::Dns));
}

#[test]
fn dane_ta_bare_key_that_signed_nothing_is_no_match() {
    let root = ca("Root", None);
    let stranger = ca("Stranger", None);
    let (leaf, _) = Leaf::default().issue(&root);
    let err = smtp(&[tlsa(2, 1, 0, stranger.der())])
        .verify(&[leaf], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoMatch { .. }), "{err:?}");
}

#[test]
fn dane_ta_checks_the_reference_names() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        sans: &["mail.other.test", "smtp.other.test"],
        ..Leaf::default()
    }
    .issue(&root);
    let chain = [leaf, root.der().clone()];
    let err = Authenticator::smtp(
        &[tlsa(2, 0, 1, root.der())],
        names(&["mx.example.test", "example.test"]),
    )
    .verify(&chain, now())
    .unwrap_err();
    let VerifyError::NameMismatch {
        depth,
        reference_names,
        presented,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*depth, 1);
    assert_eq!(
        reference_names,
        &names(&["mx.example.test", "example.test"])
    );
    assert_eq!(presented, &["mail.other.test", "smtp.other.test"]);
    assert!(err.to_string().contains("mail.other.test"));

    // Any of the reference names will do: the MX name, the base domain, the next hop.
    let v = Authenticator::smtp(
        &[tlsa(2, 0, 1, root.der())],
        names(&["mx.example.test", "smtp.other.test"]),
    )
    .verify(&chain, now())
    .unwrap();
    assert_eq!(v.name().unwrap().as_str(), "smtp.other.test");
}

#[test]
fn dane_ta_wildcard_covers_one_label() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        sans: &["*.example.test"],
        ..Leaf::default()
    }
    .issue(&root);
    let chain = [leaf, root.der().clone()];
    let records = [tlsa(2, 0, 1, root.der())];
    assert!(
        Authenticator::smtp(&records, names(&["mx.example.test"]))
            .verify(&chain, now())
            .is_ok()
    );
    for bad in ["a.mx.example.test", "example.test"] {
        assert!(matches!(
            Authenticator::smtp(&records, names(&[bad])).verify(&chain, now()),
            Err(VerifyError::NameMismatch { .. })
        ));
    }
}

#[test]
fn dane_ta_uses_the_common_name_only_without_dns_sans() {
    let root = ca("Root", None);
    let records = [tlsa(2, 0, 1, root.der())];
    let (cn_only, _) = Leaf {
        sans: &[],
        cn: "mx.example.test",
        ..Leaf::default()
    }
    .issue(&root);
    assert!(
        smtp(&records)
            .verify(&[cn_only, root.der().clone()], now())
            .is_ok()
    );
    let (with_san, _) = Leaf {
        sans: &["other.test"],
        cn: "mx.example.test",
        ..Leaf::default()
    }
    .issue(&root);
    assert!(matches!(
        smtp(&records).verify(&[with_san, root.der().clone()], now()),
        Err(VerifyError::NameMismatch { .. })
    ));
}

#[test]
fn dane_ta_checks_the_leaf_validity_period() {
    let root = ca("Root", None);
    let records = [tlsa(2, 0, 1, root.der())];
    let (expired, _) = Leaf {
        valid_days: (-100, -1),
        ..Leaf::default()
    }
    .issue(&root);
    let err = smtp(&records)
        .verify(&[expired, root.der().clone()], now())
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Expired { depth: 0, subject, .. } if subject.contains("mx.example.test")),
        "{err:?}"
    );
    let (future, _) = Leaf {
        valid_days: (5, 100),
        ..Leaf::default()
    }
    .issue(&root);
    let err = smtp(&records)
        .verify(&[future, root.der().clone()], now())
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::NotYetValid { depth: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn dane_ta_requires_the_chain_to_reach_the_anchor() {
    let root = ca("Root", None);
    let inter = ca("Inter", Some(&root));
    let other = ca("Other", None);
    let (leaf, _) = Leaf::default().issue(&inter);
    // The TA record names a CA the server sent, but the leaf does not chain to it.
    let err = smtp(&[tlsa(2, 0, 1, other.der())])
        .verify(&[leaf.clone(), other.der().clone()], now())
        .unwrap_err();
    let VerifyError::ChainInvalid {
        depth,
        broken_at,
        problem,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*depth, *broken_at), (Some(1), Some(0)));
    assert_eq!(*problem, PathProblem::UnknownIssuer);

    // A forged intermediate: same name as the real one, different key.
    let forged = ca("Inter", Some(&root));
    let err = smtp(&[tlsa(2, 0, 1, root.der())])
        .verify(&[leaf, forged.der().clone(), root.der().clone()], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::ChainInvalid { .. }), "{err:?}");
}

#[test]
fn dane_ta_requires_server_auth_usage() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
        ..Leaf::default()
    }
    .issue(&root);
    let err = smtp(&[tlsa(2, 0, 1, root.der())])
        .verify(&[leaf.clone(), root.der().clone()], now())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::ChainInvalid {
                problem: PathProblem::NotForServerAuth,
                ..
            }
        ),
        "{err:?}"
    );
    // DANE-EE does not look at the certificate's contents at all.
    assert!(smtp(&[tlsa(3, 1, 1, &leaf)]).verify(&[leaf], now()).is_ok());
}

#[test]
fn ee_is_tried_before_ta() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        sans: &["other.test"],
        ..Leaf::default()
    }
    .issue(&root);
    let v = smtp(&[tlsa(2, 0, 1, root.der()), tlsa(3, 1, 1, &leaf)])
        .verify(&[leaf, root.der().clone()], now())
        .unwrap();
    assert_eq!(v.record().usage(), Usage::DaneEe);
}

#[test]
fn closest_failure_is_reported() {
    // EE mismatch plus a TA whose name check fails: the name mismatch is the news.
    let root = ca("Root", None);
    let (leaf, _) = Leaf {
        sans: &["other.test"],
        ..Leaf::default()
    }
    .issue(&root);
    let (unrelated, _) = Leaf::default().issue(&root);
    let err = smtp(&[tlsa(3, 1, 1, &unrelated), tlsa(2, 0, 1, root.der())])
        .verify(&[leaf, root.der().clone()], now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::NameMismatch { .. }), "{err:?}");
}

#[test]
fn digest_agility_ignores_the_weaker_digest() {
    // RFC 7671 §9: with a 3 1 2 published, a matching 3 1 1 is not consulted.
    let root = ca("Root", None);
    let (leaf, _) = Leaf::default().issue(&root);
    let (other, _) = Leaf::default().issue(&root);
    let records = [tlsa(3, 1, 2, &other), tlsa(3, 1, 1, &leaf)];
    assert!(matches!(
        smtp(&records).verify(std::slice::from_ref(&leaf), now()),
        Err(VerifyError::NoMatch { .. })
    ));
    let records = [tlsa(3, 1, 2, &leaf), tlsa(3, 1, 1, &other)];
    assert!(smtp(&records).verify(&[leaf], now()).is_ok());
}

#[test]
fn smtp_profile_has_no_use_for_pkix_records() {
    let root = ca("Root", None);
    let (leaf, _) = Leaf::default().issue(&root);
    let auth = smtp(&[tlsa(1, 1, 1, &leaf), tlsa(0, 0, 1, root.der())]);
    assert!(!auth.has_usable_records());
    assert_eq!(
        auth.verify(&[leaf, root.der().clone()], now()),
        Err(VerifyError::NoUsableRecords { published: 2 })
    );
}

#[test]
fn empty_and_unparsable_chains() {
    let auth = smtp(&[
        "3 0 1 0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap(),
    ]);
    assert_eq!(auth.verify(&[], now()), Err(VerifyError::EmptyChain));
    let junk = CertificateDer::from(b"junk".to_vec());
    assert!(matches!(
        auth.verify(std::slice::from_ref(&junk), now()),
        Err(VerifyError::BadCertificate { depth: 0, .. })
    ));
    // DANE-EE Cert(0) compares bytes: it needs no certificate parser.
    let exact = Tlsa::new(Usage::DaneEe, Selector::FullCert, Matching::Sha256, {
        crate::matching::association(Matching::Sha256, b"junk").unwrap()
    })
    .unwrap();
    assert!(smtp(&[exact]).verify(&[junk], now()).is_ok());
}
