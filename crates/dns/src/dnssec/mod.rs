//! danemta's DNSSEC verdicts, decided over hickory's signature checks.
//!
//! hickory's validator checks signatures: an RRset it marks *secure* has a valid RRSIG made
//! with a key that chains to a trust anchor. Its other verdicts are taken as input only, since
//! an attacker on the path to the upstream resolver can make it report *insecure* (an unsigned
//! SOA of some other zone in a forged denial is enough). The rules here decide instead:
//!
//! * a record set is *secure* when hickory validated its signature and, if it was synthesised
//!   from a wildcard, a validated NSEC/NSEC3 record proves that no closer name exists
//!   (RFC 4035 §5.3.4, RFC 5155 §8.8);
//! * a NODATA or NXDOMAIN is *secure* only with validated NSEC/NSEC3 records of the zone that
//!   owns the name ([`denial`]; RFC 4035 §5.4, RFC 5155 §8);
//! * anything is *insecure* only when danemta has itself proved that the name lies at or
//!   below an insecure delegation — a secure parent whose validated NSEC/NSEC3 shows no DS at
//!   the cut (RFC 4035 §5.2, RFC 5155 §8.6) — or below a configured negative trust anchor
//!   (RFC 7646) ([`insecure`]);
//! * everything else is *bogus* (or *indeterminate* when the network failed), and the mail
//!   waits.

pub(crate) mod denial;
pub(crate) mod insecure;
