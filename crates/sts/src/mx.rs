//! The `mx` patterns of a policy (RFC 8461 §3.2) and how an MX host name is matched against
//! them (RFC 8461 §4.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest domain name in text form, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Why an `mx` value is not a pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MxPatternError {
    /// Nothing (or only `*.`).
    #[error("empty domain")]
    Empty,
    /// A label that is not letters, digits and inner hyphens (RFC 5321 §4.1.2 `sub-domain`),
    /// or longer than 63 characters; a `*` anywhere but as the whole leftmost label.
    #[error("invalid label {0:?}")]
    BadLabel(String),
    /// Longer than 253 characters.
    #[error("longer than {MAX_NAME_LEN} characters")]
    TooLong,
}

/// One `mx` pattern of a policy: a domain name, or `*.` and a domain for any host exactly one
/// label below it (RFC 8461 §3.2, `sts-policy-mx-value = ["*."] Domain`). Stored lower-case
/// without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxPattern {
    wildcard: bool,
    domain: String,
}

impl MxPattern {
    /// Whether the pattern starts with `*.`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The domain after any `*.`, lower-case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the MX host `host` (the MX record's exchange name, not a CNAME target) matches
    /// (RFC 8461 §4.1): ASCII case-insensitive, a trailing dot ignored; `*.example.com`
    /// matches a host with exactly one more label on the left (`mx.example.com`), not
    /// `example.com` nor `a.mx.example.com` (the RFC 6125 §6.4.3 rule for wildcards).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.domain);
        }
        let Some(label_len) = host.len().checked_sub(self.domain.len() + 1) else {
            return false;
        };
        let (label, rest) = host.split_at_checked(label_len).unwrap_or_default();
        !label.is_empty()
            && !label.contains('.')
            && rest
                .strip_prefix('.')
                .is_some_and(|parent| parent.eq_ignore_ascii_case(&self.domain))
    }
}

impl FromStr for MxPattern {
    type Err = MxPatternError;

    /// Parses an `mx` value (RFC 8461 §3.2): `["*."] Domain`, the domain as in RFC 5321
    /// §4.1.2 (letters, digits, inner hyphens; A-labels for internationalised names). One
    /// trailing dot is accepted and dropped.
    fn from_str(text: &str) -> Result<Self, MxPatternError> {
        let (wildcard, domain) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() {
            return Err(MxPatternError::Empty);
        }
        if domain.len() > MAX_NAME_LEN {
            return Err(MxPatternError::TooLong);
        }
        if let Some(bad) = domain.split('.').find(|label| !is_label(label)) {
            return Err(MxPatternError::BadLabel(bad.to_owned()));
        }
        Ok(Self {
            wildcard,
            domain: domain.to_ascii_lowercase(),
        })
    }
}

/// RFC 5321 §4.1.2 `sub-domain = Let-dig [Ldh-str]`, at most 63 characters.
fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

impl TryFrom<String> for MxPattern {
    type Error = MxPatternError;

    fn try_from(s: String) -> Result<Self, MxPatternError> {
        s.parse()
    }
}

impl From<MxPattern> for String {
    fn from(p: MxPattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> MxPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_patterns_match_case_insensitively_with_or_without_trailing_dot() {
        let pat = p("mx1.Example.com");
        assert_eq!(pat.to_string(), "mx1.example.com");
        for host in ["mx1.example.com", "MX1.EXAMPLE.COM", "mx1.example.com."] {
            assert!(pat.matches(host), "{host}");
        }
        for host in [
            "mx2.example.com",
            "a.mx1.example.com",
            "example.com",
            "mx1.example.com..",
            "",
        ] {
            assert!(!pat.matches(host), "{host}");
        }
        assert!(p("mx1.example.com.").matches("mx1.example.com"));
    }

    #[test]
    fn a_wildcard_matches_exactly_one_leftmost_label() {
        let pat = p("*.example.com");
        assert!(pat.is_wildcard());
        assert_eq!(pat.domain(), "example.com");
        for host in ["mx.example.com", "MX.example.COM.", "a-b.example.com"] {
            assert!(pat.matches(host), "{host}");
        }
        for host in [
            "example.com",
            ".example.com",
            "a.b.example.com",
            "mxexample.com",
            "mx.example.org",
            "mx.example.com.evil.test",
            "com",
            "",
        ] {
            assert!(!pat.matches(host), "{host}");
        }
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        assert_eq!("".parse::<MxPattern>(), Err(MxPatternError::Empty));
        assert_eq!("*.".parse::<MxPattern>(), Err(MxPatternError::Empty));
        for (text, label) in [
            ("*", "*"),
            ("a.*.example.com", "*"),
            ("*mx.example.com", "*mx"),
            ("**.example.com", "**"),
            ("*.*.example.com", "*"),
            ("mx..example.com", ""),
            ("-mx.example.com", "-mx"),
            ("mx-.example.com", "mx-"),
            ("mx_1.example.com", "mx_1"),
            ("mx 1.example.com", "mx 1"),
            ("mx.exämple.com", "exämple"),
        ] {
            assert_eq!(
                text.parse::<MxPattern>(),
                Err(MxPatternError::BadLabel(label.into())),
                "{text}"
            );
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(
            long_label.parse::<MxPattern>(),
            Err(MxPatternError::BadLabel(_))
        ));
        let long_name = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long_name.parse::<MxPattern>(), Err(MxPatternError::TooLong));
    }

    #[test]
    fn patterns_round_trip_through_serde() {
        let pat = p("*.Example.com");
        let json = serde_json::to_string(&pat).unwrap();
        assert_eq!(json, "\"*.example.com\"");
        assert_eq!(serde_json::from_str::<MxPattern>(&json).unwrap(), pat);
        assert!(serde_json::from_str::<MxPattern>("\"bad_label.com\"").is_err());
    }
}
