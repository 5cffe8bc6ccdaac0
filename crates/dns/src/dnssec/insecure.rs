//! Proving that a name is insecure: the walk down the DS chain (RFC 4035 §4.3, §5.2; RFC 6840
//! §4.4).
//!
//! Starting below the root (the trust anchor), each ancestor of the name is asked for its DS
//! RRset, in order from the top-level domain down to the name itself. A validated DS RRset is
//! a signed delegation; a validated NODATA there is no zone cut; a validated proof of NS
//! without DS (or an NSEC3 opt-out span) is an insecure delegation, which ends the walk: the
//! name is insecure. A validated NXDOMAIN, or reaching the name with every zone signed, proves
//! the opposite. Any step that cannot be validated leaves the question open (bogus or
//! indeterminate), never answered "insecure".

use std::future::Future;

use hickory_proto::rr::Name;

use crate::status::Status;

/// What the DS lookup at one name on the way down shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DsStep {
    /// Validated DS records with an algorithm we can validate: a signed delegation.
    Signed,
    /// A validated NODATA: the name is no zone cut.
    NoCut,
    /// A validated proof of a delegation without DS (RFC 4035 §5.2, RFC 5155 §8.6), or DS
    /// records that all use algorithms or digests we cannot validate (RFC 4035 §5.2, RFC 6840
    /// §5.2): the zone below is insecure.
    Insecure,
    /// A validated NXDOMAIN: the name does not exist.
    NoName,
    /// The DS lookup did not validate (bogus) or failed (indeterminate), and why.
    Failed(Status, String),
}

/// The walk's conclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Insecurity {
    /// Proven insecure: the delegation (or negative trust anchor) at this name.
    Below(Name),
    /// Proven not insecure, and why: an answer claiming otherwise is bogus.
    Signed(String),
    /// Could not be decided.
    Unknown(Status, String),
}

/// The negative trust anchor (RFC 7646 §2) that covers `name`, if any: the name is at or
/// below it, and is treated as insecure whatever its signatures say.
pub(crate) fn negative_anchor<'a>(name: &Name, anchors: &'a [Name]) -> Option<&'a Name> {
    anchors.iter().find(|a| a.zone_of(name))
}

/// Walks from the top-level domain of `name` down to `name`, asking `ds` about each zone cut
/// candidate, and stops at the first insecure delegation.
pub(crate) async fn prove<F, Fut>(name: &Name, mut ds: F) -> Insecurity
where
    F: FnMut(Name) -> Fut,
    Fut: Future<Output = DsStep>,
{
    for labels in 1..=name.num_labels() as usize {
        let candidate = name.trim_to(labels);
        match ds(candidate.clone()).await {
            DsStep::Signed | DsStep::NoCut => continue,
            DsStep::Insecure => return Insecurity::Below(candidate),
            DsStep::NoName => {
                return Insecurity::Signed(format!(
                    "{candidate} provably does not exist (validated NXDOMAIN for its DS)"
                ));
            }
            DsStep::Failed(status, why) => return Insecurity::Unknown(status, why),
        }
    }
    Insecurity::Signed(format!(
        "every zone from the root down to {name} is signed (validated DS records or no zone cut)"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;
    use std::sync::Mutex;

    use super::*;

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    /// Answers DS questions from a table (anything else: no cut), recording what was asked.
    fn walk(name: &str, table: &[(&str, DsStep)]) -> (Insecurity, Vec<String>) {
        let table: HashMap<Name, DsStep> = table.iter().map(|(k, v)| (n(k), v.clone())).collect();
        let asked = Mutex::new(Vec::new());
        let verdict = futures_util::FutureExt::now_or_never(prove(&n(name), |c| {
            asked.lock().unwrap().push(c.to_string());
            let step = table.get(&c).cloned().unwrap_or(DsStep::NoCut);
            async move { step }
        }))
        .expect("the table answers at once");
        (verdict, asked.into_inner().unwrap())
    }

    #[test]
    fn stops_at_the_first_insecure_delegation_from_the_top() {
        let (verdict, asked) = walk(
            "_25._tcp.mx.insecure.test.",
            &[
                ("test.", DsStep::Signed),
                ("insecure.test.", DsStep::Insecure),
            ],
        );
        assert_eq!(verdict, Insecurity::Below(n("insecure.test.")));
        assert_eq!(asked, ["test.", "insecure.test."]);
    }

    #[test]
    fn a_signed_chain_down_to_the_name_is_not_insecure() {
        let (verdict, asked) = walk(
            "_25._tcp.mx.secure.test.",
            &[("test.", DsStep::Signed), ("secure.test.", DsStep::Signed)],
        );
        assert!(matches!(verdict, Insecurity::Signed(_)), "{verdict:?}");
        assert_eq!(asked.len(), 5);
    }

    #[test]
    fn a_step_that_does_not_validate_decides_nothing() {
        let (verdict, _) = walk(
            "mx.secure.test.",
            &[
                ("test.", DsStep::Signed),
                (
                    "secure.test.",
                    DsStep::Failed(Status::Bogus, "forged".into()),
                ),
                ("mx.secure.test.", DsStep::Insecure),
            ],
        );
        assert_eq!(verdict, Insecurity::Unknown(Status::Bogus, "forged".into()));
    }

    #[test]
    fn a_name_that_does_not_exist_is_not_insecure() {
        let (verdict, _) = walk("a.b.secure.test.", &[("b.secure.test.", DsStep::NoName)]);
        assert!(matches!(verdict, Insecurity::Signed(_)), "{verdict:?}");
    }

    #[test]
    fn negative_trust_anchors_cover_their_subtree_only() {
        let anchors = [n("broken.test.")];
        assert_eq!(
            negative_anchor(&n("mx.broken.test."), &anchors),
            Some(&n("broken.test."))
        );
        assert_eq!(
            negative_anchor(&n("broken.test."), &anchors),
            Some(&n("broken.test."))
        );
        assert_eq!(negative_anchor(&n("mx.unbroken.test."), &anchors), None);
        assert_eq!(negative_anchor(&n("test."), &anchors), None);
    }
}
