//! Denial proofs over small, consistent NSEC and NSEC3 chains built here, and the forgeries an
//! attacker can assemble from genuinely signed records.

use std::str::FromStr;

use hickory_proto::dnssec::rdata::{NSEC, NSEC3, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, Nsec3HashAlgorithm};
use hickory_proto::rr::SerialNumber;

use super::*;

fn n(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// What [`super::prove`] proved, without the zone.
fn prove(
    qname: &Name,
    qtype: RecordType,
    nx: bool,
    authority: &[Record],
) -> Result<Denial, String> {
    super::prove(qname, qtype, nx, authority).map(|(denial, _)| denial)
}

/// `data` at `owner` as validated by hickory (proof Secure), with the RRSIG of `signer` that
/// validated it (`labels` as in the RRSIG; the owner's label count unless a wildcard).
fn signed(owner: &Name, data: RData, signer: &Name, labels: u8, proof: Proof) -> Vec<Record> {
    let rtype = data.record_type();
    let mut record = Record::from_rdata(owner.clone(), 300, data);
    record.proof = proof;
    let input = SigInput {
        type_covered: rtype,
        algorithm: Algorithm::ECDSAP256SHA256,
        num_labels: labels,
        original_ttl: 300,
        sig_expiration: SerialNumber::new(u32::MAX),
        sig_inception: SerialNumber::new(0),
        key_tag: 1,
        signer_name: signer.clone(),
    };
    let mut sig = Record::from_rdata(
        owner.clone(),
        300,
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![0; 64]))),
    );
    sig.proof = proof;
    vec![record, sig]
}

/// The NSEC chain of `zone` holding `names` (with their types), every record signed.
fn nsec_chain(zone: &str, names: &[(&str, &[RecordType])]) -> Vec<Record> {
    let zone = n(zone);
    let mut owners: Vec<(Name, Vec<RecordType>)> =
        names.iter().map(|(o, t)| (n(o), t.to_vec())).collect();
    owners.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (i, (owner, types)) in owners.iter().enumerate() {
        let next = owners[(i + 1) % owners.len()].0.clone();
        let nsec = NSEC::new_cover_self(next, types.iter().copied());
        out.extend(signed(
            owner,
            RData::DNSSEC(DNSSECRData::NSEC(nsec)),
            &zone,
            owner.num_labels(),
            Proof::Secure,
        ));
    }
    out
}

/// The NSEC3 chain (no salt, no iterations) of `zone` holding `names`.
fn nsec3_chain(zone: &str, names: &[(&str, &[RecordType])], opt_out: bool) -> Vec<Record> {
    let zone = n(zone);
    let mut hashed: Vec<(Vec<u8>, Vec<RecordType>)> = names
        .iter()
        .map(|(o, t)| {
            let h = Nsec3HashAlgorithm::SHA1.hash(&[], &n(o), 0).unwrap();
            (h.as_ref().to_vec(), t.to_vec())
        })
        .collect();
    hashed.sort();
    let mut out = Vec::new();
    for (i, (hash, types)) in hashed.iter().enumerate() {
        let next = hashed[(i + 1) % hashed.len()].0.clone();
        let owner = zone
            .prepend_label(BASE32HEX_NOPAD.encode(hash).to_ascii_lowercase())
            .unwrap();
        let nsec3 = NSEC3::new(
            Nsec3HashAlgorithm::SHA1,
            opt_out,
            0,
            Vec::new(),
            next,
            types.iter().copied(),
        );
        out.extend(signed(
            &owner,
            RData::DNSSEC(DNSSECRData::NSEC3(nsec3)),
            &zone,
            owner.num_labels(),
            Proof::Secure,
        ));
    }
    out
}

use RecordType::{A, AAAA, CNAME, DS, MX, NS, SOA, TLSA, TXT};

/// `example.test`: apex, `mx` with A, `_25._tcp.mx` TLSA (so `_tcp.mx` is an empty
/// non-terminal), `sub` an insecure delegation, `signed` a secure one, `*.wild` TXT.
const EXAMPLE: &[(&str, &[RecordType])] = &[
    ("example.test.", &[SOA, NS, MX]),
    ("mx.example.test.", &[A, AAAA]),
    ("_25._tcp.mx.example.test.", &[TLSA]),
    ("sub.example.test.", &[NS]),
    ("signed.example.test.", &[NS, DS]),
    ("*.wild.example.test.", &[TXT]),
];

#[test]
fn nsec_nodata_at_the_name() {
    let chain = nsec_chain("example.test.", EXAMPLE);
    assert_eq!(
        super::prove(&n("mx.example.test."), TLSA, false, &chain),
        Ok((Denial::NoData, n("example.test."))),
        "the zone whose keys must be sound"
    );
    assert_eq!(
        prove(&n("mx.example.test."), TLSA, false, &chain),
        Ok(Denial::NoData)
    );
    // The type is there: no denial.
    assert!(prove(&n("mx.example.test."), A, false, &chain).is_err());
    // A NODATA proof does not make an NXDOMAIN.
    assert!(prove(&n("mx.example.test."), TLSA, true, &chain).is_err());
}

#[test]
fn nsec_nxdomain_needs_the_wildcard_denied_too() {
    let chain = nsec_chain("example.test.", EXAMPLE);
    assert_eq!(
        prove(&n("nope.example.test."), MX, true, &chain),
        Ok(Denial::NxDomain)
    );
    // Only the NSEC covering the name, not the one denying `*.example.test`.
    let qname = n("nope.example.test.");
    let cover: Vec<Record> = chain
        .chunks(2)
        .filter(|pair| match &pair[0].data {
            RData::DNSSEC(DNSSECRData::NSEC(nsec)) => {
                pair[0].name < qname && qname < *nsec.next_domain_name()
            }
            _ => false,
        })
        .flatten()
        .cloned()
        .collect();
    assert_eq!(cover.len(), 2);
    assert!(prove(&qname, MX, true, &cover).is_err());
    // An NXDOMAIN proof does not make a NODATA.
    assert!(prove(&qname, MX, false, &chain).is_err());
}

#[test]
fn empty_non_terminals_are_nodata_not_nxdomain() {
    let chain = nsec_chain("example.test.", EXAMPLE);
    let ent = n("_tcp.mx.example.test.");
    assert_eq!(prove(&ent, TLSA, false, &chain), Ok(Denial::NoData));
    assert!(prove(&ent, TLSA, true, &chain).is_err());
}

#[test]
fn a_wildcard_without_the_type_is_nodata() {
    let chain = nsec_chain("example.test.", EXAMPLE);
    assert_eq!(
        prove(&n("x.wild.example.test."), TLSA, false, &chain),
        Ok(Denial::NoData)
    );
    // The wildcard has TXT: a TXT denial is false.
    assert!(prove(&n("x.wild.example.test."), TXT, false, &chain).is_err());
    // And with the wildcard there, no name below `wild` is NXDOMAIN.
    assert!(prove(&n("x.wild.example.test."), TXT, true, &chain).is_err());
}

#[test]
fn records_that_did_not_validate_or_come_from_another_zone_prove_nothing() {
    let qname = n("mx.example.test.");
    // Not validated.
    let mut chain = nsec_chain("example.test.", EXAMPLE);
    for r in &mut chain {
        r.proof = Proof::Insecure;
    }
    assert!(prove(&qname, TLSA, false, &chain).is_err());
    // Validly signed by another zone, which happens to hold a name `mx.example.test.`-like
    // ordering: signed by `other.test.`.
    let foreign = nsec_chain(
        "other.test.",
        &[("other.test.", &[SOA, NS]), ("a.other.test.", &[A])],
    );
    assert!(prove(&qname, TLSA, false, &foreign).is_err());
    assert!(prove(&n("zzz.example.test."), TLSA, true, &foreign).is_err());
    // The last NSEC of the other zone wraps around to its apex; its span must not cover
    // names of other zones.
    assert!(prove(&n("zzz.other.test.example.test."), TLSA, true, &foreign).is_err());
}

#[test]
fn a_foreign_unsigned_soa_is_no_proof() {
    let mut soa = Record::from_rdata(
        n("insecure.test."),
        300,
        RData::SOA(hickory_proto::rr::rdata::SOA::new(
            n("ns.insecure.test."),
            n("hostmaster.insecure.test."),
            1,
            3600,
            600,
            86400,
            300,
        )),
    );
    soa.proof = Proof::Insecure;
    let err = prove(&n("_25._tcp.mx.example.test."), TLSA, false, &[soa]).unwrap_err();
    assert!(err.contains("no validated NSEC"), "{err}");
}

#[test]
fn the_parent_side_of_a_delegation_proves_only_the_missing_ds() {
    let chain = nsec_chain("example.test.", EXAMPLE);
    // Names below the cut belong to the child zone (RFC 6840 §4.1).
    assert!(prove(&n("mx.sub.example.test."), A, true, &chain).is_err());
    assert!(prove(&n("mx.sub.example.test."), A, false, &chain).is_err());
    // The cut itself: only DS can be denied, and that makes it an insecure delegation.
    assert!(prove(&n("sub.example.test."), A, false, &chain).is_err());
    assert_eq!(
        prove(&n("sub.example.test."), DS, false, &chain),
        Ok(Denial::InsecureDelegation)
    );
    // A signed delegation has DS: no denial.
    assert!(prove(&n("signed.example.test."), DS, false, &chain).is_err());
    // DS at a name that is no cut: NODATA, not a delegation.
    assert_eq!(
        prove(&n("mx.example.test."), DS, false, &chain),
        Ok(Denial::NoData)
    );
}

#[test]
fn the_child_apex_cannot_deny_its_own_ds() {
    let child = nsec_chain(
        "sub.example.test.",
        &[
            ("sub.example.test.", &[SOA, NS]),
            ("mx.sub.example.test.", &[A]),
        ],
    );
    assert!(prove(&n("sub.example.test."), DS, false, &child).is_err());
}

#[test]
fn a_cname_at_the_name_is_not_denied() {
    let chain = nsec_chain(
        "example.test.",
        &[
            ("example.test.", &[SOA, NS]),
            ("alias.example.test.", &[CNAME]),
        ],
    );
    assert!(prove(&n("alias.example.test."), TLSA, false, &chain).is_err());
}

#[test]
fn nsec3_nodata_and_nxdomain() {
    let chain = nsec3_chain("example.test.", EXAMPLE_NSEC3, false);
    assert_eq!(
        prove(&n("mx.example.test."), TLSA, false, &chain),
        Ok(Denial::NoData)
    );
    assert!(prove(&n("mx.example.test."), A, false, &chain).is_err());
    assert_eq!(
        prove(&n("nope.example.test."), MX, true, &chain),
        Ok(Denial::NxDomain)
    );
    assert!(prove(&n("nope.example.test."), MX, false, &chain).is_err());
    // Empty non-terminals have NSEC3 records of their own.
    assert_eq!(
        prove(&n("_tcp.mx.example.test."), TLSA, false, &chain),
        Ok(Denial::NoData)
    );
    // Wildcard NODATA.
    assert_eq!(
        prove(&n("x.wild.example.test."), TLSA, false, &chain),
        Ok(Denial::NoData)
    );
    assert!(prove(&n("x.wild.example.test."), TXT, true, &chain).is_err());
    // Below an insecure delegation nothing is provable from the parent.
    assert!(prove(&n("mx.sub.example.test."), A, true, &chain).is_err());
    assert_eq!(
        prove(&n("sub.example.test."), DS, false, &chain),
        Ok(Denial::InsecureDelegation)
    );
    assert!(prove(&n("signed.example.test."), DS, false, &chain).is_err());
}

/// `EXAMPLE` with its empty non-terminals spelled out (NSEC3 chains hold them).
const EXAMPLE_NSEC3: &[(&str, &[RecordType])] = &[
    ("example.test.", &[SOA, NS, MX]),
    ("mx.example.test.", &[A, AAAA]),
    ("_tcp.mx.example.test.", &[]),
    ("_25._tcp.mx.example.test.", &[TLSA]),
    ("sub.example.test.", &[NS]),
    ("signed.example.test.", &[NS, DS]),
    ("wild.example.test.", &[]),
    ("*.wild.example.test.", &[TXT]),
];

#[test]
fn nsec3_opt_out_spans_are_insecure_delegations_for_ds_only() {
    let chain = nsec3_chain("example.test.", EXAMPLE_NSEC3, true);
    // An unsigned delegation may hide in the span: DS is insecure...
    assert_eq!(
        prove(&n("unsigned.example.test."), DS, false, &chain),
        Ok(Denial::InsecureDelegation)
    );
    assert_eq!(
        prove(&n("unsigned.example.test."), DS, true, &chain),
        Ok(Denial::InsecureDelegation)
    );
    // ...and no other denial there is proved.
    assert!(prove(&n("unsigned.example.test."), A, true, &chain).is_err());
}

#[test]
fn nsec3_from_another_zone_or_hashed_otherwise_proves_nothing() {
    let foreign = nsec3_chain("other.test.", EXAMPLE_NSEC3, false);
    assert!(prove(&n("mx.example.test."), TLSA, false, &foreign).is_err());
    assert!(prove(&n("nope.example.test."), MX, true, &foreign).is_err());
}

#[test]
fn wildcard_expansions_need_a_proof_that_no_closer_name_exists() {
    let owner = n("x.wild.example.test.");
    // RRSIG labels 3: synthesised from `*.wild.example.test`.
    for chain in [
        nsec_chain("example.test.", EXAMPLE),
        nsec3_chain("example.test.", EXAMPLE_NSEC3, false),
    ] {
        assert_eq!(prove_wildcard_expansion(&owner, 3, &chain), Ok(()));
        assert!(prove_wildcard_expansion(&owner, 3, &[]).is_err());
        // Replayed onto a name that exists: `mx.example.test` from `*.example.test`.
        assert!(prove_wildcard_expansion(&n("mx.example.test."), 2, &chain).is_err());
    }
}
