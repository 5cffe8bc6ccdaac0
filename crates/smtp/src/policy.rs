//! TLS security levels per destination (PRODUCT.md), named and ordered as Postfix orders
//! them: a higher level is stricter.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A destination's TLS policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Plaintext only.
    None,
    /// Opportunistic TLS: STARTTLS when offered, unauthenticated; plaintext retry when the
    /// TLS handshake fails.
    May,
    /// TLS required, unauthenticated.
    Encrypt,
    /// Opportunistic DANE (RFC 7672): DANE where secure TLSA records exist, else `may`.
    #[default]
    Dane,
    /// Mandatory DANE: defer unless usable secure TLSA records authenticate the peer.
    DaneOnly,
    /// TLS required, the peer's certificate or key must match configured digests.
    Fingerprint,
    /// TLS required, PKIX-validated with a name check against configured names.
    Verify,
    /// TLS required, PKIX-validated against the next-hop domain (the MX name is not trusted).
    Secure,
}

const NAMES: [(Level, &str); 8] = [
    (Level::None, "none"),
    (Level::May, "may"),
    (Level::Encrypt, "encrypt"),
    (Level::Dane, "dane"),
    (Level::DaneOnly, "dane-only"),
    (Level::Fingerprint, "fingerprint"),
    (Level::Verify, "verify"),
    (Level::Secure, "secure"),
];

/// A policy name that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown TLS policy {0:?}: expected none, may, encrypt, dane, dane-only, fingerprint, verify or secure"
)]
pub struct LevelError(pub String);

impl FromStr for Level {
    type Err = LevelError;

    fn from_str(s: &str) -> Result<Self, LevelError> {
        NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(l, _)| *l)
            .ok_or_else(|| LevelError(s.to_owned()))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES
            .iter()
            .find(|(l, _)| l == self)
            .map(|(_, n)| *n)
            .unwrap_or("?");
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_strictness() {
        for (level, name) in NAMES {
            assert_eq!(name.parse::<Level>(), Ok(level));
            assert_eq!(level.to_string(), name);
        }
        assert!(Level::None < Level::May && Level::May < Level::Encrypt);
        assert!(Level::Encrypt < Level::Dane && Level::Dane < Level::DaneOnly);
        assert!(Level::DaneOnly < Level::Fingerprint && Level::Verify < Level::Secure);
        assert_eq!(Level::default(), Level::Dane);
        assert!("opportunistic".parse::<Level>().is_err());
    }
}
