//! Authenticated denial of existence (RFC 4035 §5.4, RFC 5155 §8, RFC 6840 §4), decided by
//! danemta from NSEC and NSEC3 records whose signatures hickory has checked.
//!
//! Only records that carry a validated signature count, and only those signed by a zone that
//! is an ancestor of (or is) the queried name: a proof from another zone proves nothing about
//! this name. The parent side of a delegation (NS without SOA, or a DNAME) proves nothing
//! below it (RFC 6840 §4.1) and, for a DS query, the child side proves nothing (RFC 6840
//! §4.4). Whatever cannot be proved here is reported as not proved, with the reason; the
//! caller then needs a proof of an insecure delegation, or the answer is bogus.

use data_encoding::BASE32HEX_NOPAD;
use hickory_proto::dnssec::Proof;
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, NSEC3};
use hickory_proto::rr::{Name, RData, Record, RecordType, RecordTypeSet};

/// NSEC3 records with more iterations than this are not used (RFC 9276 §3.2 lets a validator
/// refuse them; hickory's hard limit is the same). Refusing makes the proof fail, which defers
/// the mail: treating them as "insecure" would let an attacker replay any such record of the
/// zone as a proof that DANE does not apply.
pub(crate) const MAX_NSEC3_ITERATIONS: u16 = 500;

/// What a set of NSEC/NSEC3 records proves about `qname`/`qtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denial {
    /// The name exists without records of the type (possibly as an empty non-terminal or
    /// through a wildcard that lacks the type).
    NoData,
    /// The name does not exist, nor a wildcard that would match it.
    NxDomain,
    /// Only for DS: the name is a delegation without DS records (NSEC/NSEC3 with NS and no
    /// DS, RFC 4035 §5.2, RFC 5155 §8.6) or may be one inside an NSEC3 opt-out span (RFC 5155
    /// §8.6, §6): the zone below is insecure.
    InsecureDelegation,
}

/// The RRSIG that validated the RRset `owner`/`rtype` in `section`, if hickory marked one.
pub(crate) fn validating_rrsig<'a>(
    section: &'a [Record],
    owner: &Name,
    rtype: RecordType,
) -> Option<&'a hickory_proto::dnssec::rdata::RRSIG> {
    section.iter().find_map(|r| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(sig))
            if r.proof == Proof::Secure
                && r.name == *owner
                && sig.input().type_covered == rtype =>
        {
            Some(sig)
        }
        _ => None,
    })
}

/// One validated NSEC or NSEC3 record and the zone whose key signed it.
#[derive(Clone, Copy)]
struct Signed<'a, T> {
    owner: &'a Name,
    zone: &'a Name,
    data: &'a T,
}

/// The validated NSEC and NSEC3 records of `authority`, each with its signer, keeping only
/// records signed by a zone at or above `qname` and not themselves wildcard expansions.
fn signed_records<'a>(
    authority: &'a [Record],
    qname: &Name,
) -> (Vec<Signed<'a, NSEC>>, Vec<Signed<'a, NSEC3>>) {
    let mut nsecs = Vec::new();
    let mut nsec3s = Vec::new();
    for record in authority.iter().filter(|r| r.proof == Proof::Secure) {
        let rtype = record.record_type();
        if !matches!(rtype, RecordType::NSEC | RecordType::NSEC3) {
            continue;
        }
        let Some(sig) = validating_rrsig(authority, &record.name, rtype) else {
            continue;
        };
        let zone = &sig.input().signer_name;
        // RFC 4035 §5.3.1 (signer above the owner) is hickory's; ours: the zone owns qname,
        // and the record is no wildcard expansion (RRSIG labels = owner labels, §5.3.4).
        if !zone.zone_of(qname)
            || !zone.zone_of(&record.name)
            || sig.input().num_labels != record.name.num_labels()
        {
            continue;
        }
        match &record.data {
            RData::DNSSEC(DNSSECRData::NSEC(data)) => nsecs.push(Signed {
                owner: &record.name,
                zone,
                data,
            }),
            RData::DNSSEC(DNSSECRData::NSEC3(data)) => nsec3s.push(Signed {
                owner: &record.name,
                zone,
                data,
            }),
            _ => {}
        }
    }
    (nsecs, nsec3s)
}

/// Proves a denial for `qname`/`qtype` from the `authority` section of a response whose
/// response code was NXDOMAIN (`nx`) or NOERROR without records. The proof must show what the
/// response code claims: a NODATA proof does not make an NXDOMAIN secure, nor the reverse.
/// Returns what was proved and the zone whose records proved it (whose keys the caller must
/// still hold sound). Each zone's records are tried on their own: a proof never mixes zones.
pub(crate) fn prove(
    qname: &Name,
    qtype: RecordType,
    nx: bool,
    authority: &[Record],
) -> Result<(Denial, Name), String> {
    let (nsecs, nsec3s) = signed_records(authority, qname);
    if nsecs.is_empty() && nsec3s.is_empty() {
        return Err(format!(
            "no validated NSEC or NSEC3 record from a zone at or above {qname}"
        ));
    }
    let mut zones: Vec<&Name> = nsecs.iter().map(|n| n.zone).collect();
    zones.extend(nsec3s.iter().map(|n| n.zone));
    zones.sort();
    zones.dedup();
    for zone in zones {
        let nsecs: Vec<_> = nsecs.iter().filter(|n| n.zone == zone).cloned().collect();
        let nsec3s: Vec<_> = nsec3s.iter().filter(|n| n.zone == zone).cloned().collect();
        let found = if nx {
            nsec::nxdomain(qname, &nsecs).or_else(|| nsec3::nxdomain(qname, qtype, &nsec3s))
        } else {
            nsec::nodata(qname, qtype, &nsecs).or_else(|| nsec3::nodata(qname, qtype, &nsec3s))
        };
        if let Some(denial) = found {
            return Ok((denial, zone.clone()));
        }
    }
    Err(format!(
        "the NSEC/NSEC3 records do not prove {} for {qname} {qtype}",
        if nx { "NXDOMAIN" } else { "NODATA" }
    ))
}

/// RFC 4035 §5.3.4, RFC 5155 §8.8: a positive answer at `owner` synthesised from a wildcard
/// (its RRSIG has `labels` fewer than the owner) is secure only with a proof that no closer
/// name exists: that `owner` itself does not exist below the wildcard's closest encloser.
pub(crate) fn prove_wildcard_expansion(
    owner: &Name,
    labels: u8,
    authority: &[Record],
) -> Result<(), String> {
    let encloser = owner.trim_to(labels as usize);
    let (nsecs, nsec3s) = signed_records(authority, owner);
    let by_nsec = nsecs.iter().any(|n| {
        n.zone.zone_of(&encloser)
            && nsec::no_name(owner, n)
            && nsec::closest_encloser(owner, n) == encloser
    });
    let next_closer = owner.trim_to(labels as usize + 1);
    let by_nsec3 = nsec3s
        .iter()
        .any(|n| n.zone.zone_of(&encloser) && nsec3::covers(n, &next_closer));
    if by_nsec || by_nsec3 {
        Ok(())
    } else {
        Err(format!(
            "wildcard answer for {owner} without a validated proof that {owner} does not exist (RFC 4035 §5.3.4)"
        ))
    }
}

/// The longest common ancestor of two names.
fn common_ancestor(a: &Name, b: &Name) -> Name {
    let mut labels = a.num_labels().min(b.num_labels()) as usize;
    loop {
        let candidate = a.trim_to(labels);
        if candidate.zone_of(b) || labels == 0 {
            return candidate;
        }
        labels -= 1;
    }
}

/// Whether `a` is a proper ancestor of `b`.
fn above(a: &Name, b: &Name) -> bool {
    a.zone_of(b) && a.num_labels() < b.num_labels()
}

/// Whether the type bitmap of an NSEC/NSEC3 record at the queried name proves `qtype` absent
/// (RFC 4035 §5.4, RFC 5155 §8.5, RFC 6840 §4.3): neither the type nor a CNAME is there, and
/// the record comes from the zone that holds that type at this name. For DS that is the
/// parent, so the child's apex record (SOA set) cannot deny it (RFC 6840 §4.4); for any other
/// type it is the child, so the parent side of a delegation (NS set, SOA clear) cannot deny
/// it (RFC 6840 §4.1). The root has no parent: its DS is never asked.
fn absent(types: &RecordTypeSet, qtype: RecordType) -> bool {
    let has = |t| types.contains(t);
    if has(qtype) || has(RecordType::CNAME) {
        return false;
    }
    if qtype == RecordType::DS {
        !has(RecordType::SOA)
    } else {
        !has(RecordType::NS) || has(RecordType::SOA)
    }
}

/// What an NSEC/NSEC3 record at the queried name itself proves: NODATA when it shows the type
/// absent ([`absent`]); for DS with NS set, a delegation without DS, i.e. an insecure one
/// (RFC 4035 §5.2, RFC 5155 §8.6).
fn denial_at_name(types: &RecordTypeSet, qtype: RecordType) -> Option<Denial> {
    if !absent(types, qtype) {
        return None;
    }
    Some(
        if qtype == RecordType::DS && types.contains(RecordType::NS) {
            Denial::InsecureDelegation
        } else {
            Denial::NoData
        },
    )
}

/// The wildcard at `encloser`: `*.encloser`.
fn wildcard(encloser: &Name) -> Option<Name> {
    encloser.prepend_label("*").ok()
}

mod nsec {
    //! NSEC proofs (RFC 4035 §5.4, RFC 6840 §4.1, §4.3, §4.4).

    use super::*;

    /// Whether `name` lies strictly between the NSEC's owner and its next name, in canonical
    /// order (RFC 4034 §6.1); the zone's last NSEC wraps around to the apex.
    pub(super) fn covers(n: &Signed<'_, NSEC>, name: &Name) -> bool {
        let next = n.data.next_domain_name();
        n.owner < name && (name < next || next <= n.owner)
    }

    /// The NSEC's owner is the parent side of a zone cut (or a DNAME) above `name`: it says
    /// nothing about names below it (RFC 6840 §4.1).
    fn delegation_above(n: &Signed<'_, NSEC>, name: &Name) -> bool {
        above(n.owner, name) && n.data.is_ancestor_delegation()
    }

    /// The NSEC proves that `name` does not exist: it covers the name, its next name is no
    /// descendant of it (that would make `name` an empty non-terminal), and it is not the
    /// parent side of a cut above the name.
    pub(super) fn no_name(name: &Name, n: &Signed<'_, NSEC>) -> bool {
        let next = n.data.next_domain_name();
        covers(n, name) && !above(name, next) && !delegation_above(n, name)
    }

    /// The closest encloser of a non-existent `name` given the NSEC that covers it: the
    /// longest ancestor of `name` shared with the owner or the next name (RFC 4035 §5.4).
    pub(super) fn closest_encloser(name: &Name, n: &Signed<'_, NSEC>) -> Name {
        let a = common_ancestor(name, n.owner);
        let b = common_ancestor(name, n.data.next_domain_name());
        if a.num_labels() >= b.num_labels() {
            a
        } else {
            b
        }
    }

    fn lacks(n: &Signed<'_, NSEC>, qtype: RecordType) -> bool {
        absent(n.data.type_set(), qtype)
    }

    fn at_name(n: &Signed<'_, NSEC>, qtype: RecordType) -> Option<Denial> {
        denial_at_name(n.data.type_set(), qtype)
    }

    /// NODATA: an NSEC at the name without the type; or the name is an empty non-terminal;
    /// or the name does not exist and the wildcard that matches it lacks the type (RFC 4035
    /// §3.1.3.4). For DS, an NSEC at the name with NS set is an insecure delegation.
    pub(super) fn nodata(
        qname: &Name,
        qtype: RecordType,
        nsecs: &[Signed<'_, NSEC>],
    ) -> Option<Denial> {
        if let Some(n) = nsecs.iter().find(|n| n.owner == qname) {
            return at_name(n, qtype);
        }
        let empty_non_terminal = nsecs.iter().any(|n| {
            covers(n, qname)
                && above(qname, n.data.next_domain_name())
                && !delegation_above(n, qname)
        });
        if empty_non_terminal {
            return Some(Denial::NoData);
        }
        for cover in nsecs.iter().filter(|n| no_name(qname, n)) {
            let Some(star) = wildcard(&closest_encloser(qname, cover)) else {
                continue;
            };
            if nsecs
                .iter()
                .any(|n| n.zone == cover.zone && *n.owner == star && lacks(n, qtype))
            {
                return Some(Denial::NoData);
            }
        }
        None
    }

    /// NXDOMAIN: an NSEC proves the name does not exist and one (the same or another of the
    /// same zone) proves that no wildcard at its closest encloser exists (RFC 4035 §5.4).
    pub(super) fn nxdomain(qname: &Name, nsecs: &[Signed<'_, NSEC>]) -> Option<Denial> {
        nsecs
            .iter()
            .filter(|n| no_name(qname, n))
            .find_map(|cover| {
                let encloser = closest_encloser(qname, cover);
                if !cover.zone.zone_of(&encloser) {
                    return None;
                }
                let star = wildcard(&encloser)?;
                nsecs
                    .iter()
                    .any(|n| n.zone == cover.zone && covers(n, &star))
                    .then_some(Denial::NxDomain)
            })
    }
}

mod nsec3 {
    //! NSEC3 proofs (RFC 5155 §8).

    use super::*;

    /// The hash in the owner name's first label, if the owner is `<base32hex>.<zone>`.
    fn owner_hash(n: &Signed<'_, NSEC3>) -> Option<Vec<u8>> {
        if n.owner.base_name() != *n.zone {
            return None;
        }
        let label = n.owner.iter().next()?.to_ascii_uppercase();
        BASE32HEX_NOPAD.decode(&label).ok()
    }

    /// The NSEC3 hash of `name` with this record's parameters; `None` for parameters we do
    /// not use (RFC 5155 §8.1, §8.2; RFC 9276 §3.2).
    fn hash(n: &Signed<'_, NSEC3>, name: &Name) -> Option<Vec<u8>> {
        if n.data.iterations() > MAX_NSEC3_ITERATIONS || !n.zone.zone_of(name) {
            return None;
        }
        let digest = n
            .data
            .hash_algorithm()
            .hash(n.data.salt(), name, n.data.iterations())
            .ok()?;
        Some(digest.as_ref().to_vec())
    }

    /// The record's owner is the hash of `name`.
    pub(super) fn matches(n: &Signed<'_, NSEC3>, name: &Name) -> bool {
        match (owner_hash(n), hash(n, name)) {
            (Some(owner), Some(h)) => owner == h,
            _ => false,
        }
    }

    /// The hash of `name` lies strictly between the owner's hash and the next hash; the last
    /// record of the chain wraps around.
    pub(super) fn covers(n: &Signed<'_, NSEC3>, name: &Name) -> bool {
        let (Some(owner), Some(h)) = (owner_hash(n), hash(n, name)) else {
            return false;
        };
        let next = n.data.next_hashed_owner_name();
        owner.as_slice() < h.as_slice() && (h.as_slice() < next || next <= owner.as_slice())
    }

    /// RFC 5155 §8.3, closest encloser proof: the longest ancestor of `qname` with a
    /// matching NSEC3 (neither a delegation's parent side nor a DNAME) and an NSEC3 covering
    /// the next closer name. Returns the closest encloser and the covering record.
    fn closest_encloser<'a>(
        qname: &Name,
        nsec3s: &'a [Signed<'a, NSEC3>],
    ) -> Option<(Name, &'a Signed<'a, NSEC3>)> {
        for labels in (0..qname.num_labels()).rev() {
            let encloser = qname.trim_to(labels as usize);
            let Some(at) = nsec3s.iter().find(|n| matches(n, &encloser)) else {
                continue;
            };
            if at.data.is_ancestor_delegation() {
                return None;
            }
            let next_closer = qname.trim_to(labels as usize + 1);
            return nsec3s
                .iter()
                .find(|n| n.zone == at.zone && covers(n, &next_closer))
                .map(|cover| (encloser, cover));
        }
        None
    }

    fn lacks(n: &Signed<'_, NSEC3>, qtype: RecordType) -> bool {
        absent(n.data.type_set(), qtype)
    }

    fn at_name(n: &Signed<'_, NSEC3>, qtype: RecordType) -> Option<Denial> {
        denial_at_name(n.data.type_set(), qtype)
    }

    /// NODATA (RFC 5155 §8.5–§8.7): a matching NSEC3 without the type (for DS, with NS: an
    /// insecure delegation, §8.6); for DS, a closest encloser proof whose next closer name
    /// is covered by an opt-out record (§8.6); or a closest encloser proof and a matching
    /// wildcard NSEC3 without the type (§8.7).
    pub(super) fn nodata(
        qname: &Name,
        qtype: RecordType,
        nsec3s: &[Signed<'_, NSEC3>],
    ) -> Option<Denial> {
        if let Some(n) = nsec3s.iter().find(|n| matches(n, qname)) {
            return at_name(n, qtype);
        }
        let (encloser, cover) = closest_encloser(qname, nsec3s)?;
        if qtype == RecordType::DS && cover.data.opt_out() {
            return Some(Denial::InsecureDelegation);
        }
        let star = wildcard(&encloser)?;
        nsec3s
            .iter()
            .any(|n| n.zone == cover.zone && matches(n, &star) && lacks(n, qtype))
            .then_some(Denial::NoData)
    }

    /// NXDOMAIN (RFC 5155 §8.4): a closest encloser proof and an NSEC3 covering the wildcard
    /// at the closest encloser. An opt-out record covering the next closer name does not
    /// prove the name absent (an unsigned delegation may hide there, RFC 5155 §6): for DS
    /// that is an insecure delegation, for anything else no proof.
    pub(super) fn nxdomain(
        qname: &Name,
        qtype: RecordType,
        nsec3s: &[Signed<'_, NSEC3>],
    ) -> Option<Denial> {
        let (encloser, cover) = closest_encloser(qname, nsec3s)?;
        if cover.data.opt_out() {
            return (qtype == RecordType::DS).then_some(Denial::InsecureDelegation);
        }
        let star = wildcard(&encloser)?;
        nsec3s
            .iter()
            .any(|n| n.zone == cover.zone && covers(n, &star))
            .then_some(Denial::NxDomain)
    }
}

#[cfg(test)]
mod tests;
