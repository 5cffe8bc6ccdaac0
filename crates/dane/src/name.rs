//! Reference identifiers and the host-name check of DANE-TA (RFC 7672 §3.2.3, RFC 6125 §6.4).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::cert::CertInfo;

/// A DNS name the server certificate must carry under DANE-TA: the TLSA base domain, the MX
/// exchange name, or the next-hop domain (RFC 7672 §3.2.3). Stored lower-case, without the
/// trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReferenceName(String);

/// A reference name that is not a DNS host name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a DNS host name: {why}")]
pub struct NameError {
    /// The offending text.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The RFC 1035 §2.3.4 limits on a domain name in text, common to every name type: the name
/// lower-cased and without its trailing dot, or why it is not a name. `byte_ok` says which
/// bytes a label may hold; `byte_rule` says so in words.
pub fn normalise_name(
    text: &str,
    byte_ok: impl Fn(u8) -> bool,
    byte_rule: &'static str,
) -> Result<String, &'static str> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label.bytes().all(&byte_ok) {
            return Err(byte_rule);
        }
    }
    Ok(name)
}

impl FromStr for ReferenceName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, NameError> {
        normalise_name(
            text,
            |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
            "only letters, digits, '-' and '_' are allowed (use the A-label of IDNs)",
        )
        .map(Self)
        .map_err(|why| NameError {
            text: text.to_owned(),
            why,
        })
    }
}

impl ReferenceName {
    /// The name, lower-case, without trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReferenceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ReferenceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The names a certificate presents for the host-name check: its DNS subjectAltNames, or,
/// only when it has none, its subject common names (RFC 6125 §6.4.4).
pub fn presented_names(cert: &CertInfo) -> &[String] {
    if cert.dns_names().is_empty() {
        cert.common_names()
    } else {
        cert.dns_names()
    }
}

/// The first reference name that `cert` is valid for, if any.
pub fn find_match<'r>(cert: &CertInfo, names: &'r [ReferenceName]) -> Option<&'r ReferenceName> {
    let presented = presented_names(cert);
    names
        .iter()
        .find(|r| presented.iter().any(|p| name_matches(p, r.as_str())))
}

/// Whether one presented identifier matches a reference name (RFC 6125 §6.4.3): an exact
/// case-insensitive match, or a `*` that is the whole left-most label and stands for exactly
/// one label. A wildcard needs at least two labels after it (`*.com` matches nothing).
pub fn name_matches(presented: &str, reference: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    match presented.strip_prefix("*.") {
        Some(parent) => {
            !parent.contains('*')
                && parent.contains('.')
                && reference.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && rest.eq_ignore_ascii_case(parent)
                })
        }
        None => !presented.contains('*') && presented.eq_ignore_ascii_case(reference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_are_normalised_and_checked() {
        let n: ReferenceName = "MX.Example.COM.".parse().unwrap();
        assert_eq!(n.as_str(), "mx.example.com");
        assert!("".parse::<ReferenceName>().is_err());
        assert!(".".parse::<ReferenceName>().is_err());
        assert!("a..b".parse::<ReferenceName>().is_err());
        assert!("a b.example".parse::<ReferenceName>().is_err());
        assert!("*.example.com".parse::<ReferenceName>().is_err());
        assert!(
            format!("{}.com", "a".repeat(64))
                .parse::<ReferenceName>()
                .is_err()
        );
    }

    #[test]
    fn exact_names_match_case_insensitively() {
        assert!(name_matches("MX.example.com", "mx.example.com"));
        assert!(name_matches("mx.example.com.", "mx.example.com"));
        assert!(!name_matches("mx.example.com", "mx2.example.com"));
        assert!(!name_matches("example.com", "mx.example.com"));
    }

    #[test]
    fn wildcard_is_one_whole_left_most_label() {
        assert!(name_matches("*.example.com", "mx.example.com"));
        assert!(name_matches(
            "*.Example.com",
            "MX.example.com".to_ascii_lowercase().as_str()
        ));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.mx.example.com"));
        assert!(!name_matches("m*.example.com", "mx.example.com"));
        assert!(!name_matches("*x.example.com", "mx.example.com"));
        assert!(!name_matches("mx.*.com", "mx.example.com"));
        assert!(!name_matches("*.*.com", "a.example.com"));
        assert!(!name_matches("*.com", "example.com"));
        assert!(!name_matches("*", "example"));
    }
}
