//! Domain names as the route layer handles them.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A fully qualified domain name, stored lower-case without the trailing dot; the root is
/// `.`. Comparison is therefore case-insensitive, as DNS requires (RFC 4343).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

/// Text that is not a domain name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a domain name: {why}")]
pub struct DnsNameError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub why: &'static str,
}

impl FromStr for DnsName {
    type Err = DnsNameError;

    fn from_str(text: &str) -> Result<Self, DnsNameError> {
        if text == "." {
            return Ok(Self::root());
        }
        dane::name::normalise_name(
            text,
            |b| b.is_ascii_graphic() && b != b'\\',
            "a label has a space, control or non-ASCII character",
        )
        .map(Self)
        .map_err(|why| DnsNameError {
            text: text.to_owned(),
            why,
        })
    }
}

impl DnsName {
    /// The root name, `.`.
    pub fn root() -> Self {
        Self(".".to_owned())
    }

    /// Whether this is the root (the null MX target of RFC 7505).
    pub fn is_root(&self) -> bool {
        self.0 == "."
    }

    /// The name without trailing dot (`.` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `_PORT._tcp.NAME`, the TLSA owner name of RFC 6698 §3, if it is a domain name at all:
    /// a host name of up to 253 characters is valid, but the two labels in front can take its
    /// owner name over the 255 octets of RFC 1035 §2.3.4 (253 characters). No record can exist
    /// at such a name, so the host has no TLSA records: an error here is a sure denial, not a
    /// failure.
    pub fn tlsa_owner(&self, port: u16) -> Result<DnsName, DnsNameError> {
        format!("_{port}._tcp.{}", self.0).parse()
    }

    /// The name as a DANE reference identifier, if it is a host name.
    pub fn reference_name(&self) -> Option<dane::ReferenceName> {
        self.0.parse().ok()
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        let n: DnsName = "MX.Example.COM.".parse().unwrap();
        assert_eq!(n.as_str(), "mx.example.com");
        assert_eq!(n, "mx.example.com".parse().unwrap());
        assert!(".".parse::<DnsName>().unwrap().is_root());
        assert_eq!(
            n.tlsa_owner(25).unwrap().as_str(),
            "_25._tcp.mx.example.com"
        );
    }

    #[test]
    fn a_tlsa_owner_over_255_octets_cannot_exist() {
        // 248 characters: a valid host name, but `_25._tcp.` makes its owner 257.
        let long = format!(
            "{}.{}.long-owner.test",
            vec!["x".repeat(63); 3].join("."),
            "y".repeat(40)
        );
        let host: DnsName = long.parse().unwrap();
        assert_eq!(host.as_str().len(), 248);
        let err = host.tlsa_owner(25).unwrap_err();
        assert!(err.why.contains("253"), "{err}");
        assert!(err.text.starts_with("_25._tcp.x"), "{err}");
        // 244 characters: the owner is exactly 253 characters (255 octets on the wire).
        let edge: DnsName = long[4..].parse().unwrap();
        assert_eq!(edge.tlsa_owner(25).unwrap().as_str().len(), 253);
        // Port 2525 takes two more.
        assert!(edge.tlsa_owner(2525).is_err());
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        for bad in ["", "a..b", "a b.com", &"x".repeat(64), &"a.".repeat(130)] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad:?}");
        }
    }
}
