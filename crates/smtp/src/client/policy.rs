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

/// A `fingerprint` digest that is not a SHA-256 or SHA-512 digest in hex.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint {0:?}: expected a SHA-256 or SHA-512 digest in hex")]
pub struct FingerprintError(pub String);

/// The `fingerprint` level's digests (hex, `:` separators allowed, as Postfix's
/// `smtp_tls_fingerprint_cert_match` takes them) as DANE-EE records of both selectors: a
/// digest matches the server's certificate (`3 0 m`) or its public key (`3 1 m`), `m` from its
/// length (1 SHA-256, 2 SHA-512). Matching is then DANE-EE's (RFC 7671 §5.1).
pub fn fingerprint_records(digests: &[String]) -> Result<Vec<dane::Tlsa>, FingerprintError> {
    let mut out = Vec::new();
    for text in digests {
        let bad = || FingerprintError(text.clone());
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let matching = match hex.len() {
            64 => 1,
            128 => 2,
            _ => return Err(bad()),
        };
        for selector in [0, 1] {
            out.push(
                format!("3 {selector} {matching} {hex}")
                    .parse()
                    .map_err(|_| bad())?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_become_dane_ee_records_of_both_selectors() {
        let sha256 = "ab".repeat(32);
        let with_colons: String = sha256
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let records = fingerprint_records(&[with_colons, "cd".repeat(64)]).unwrap();
        let shown: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown.len(), 4);
        assert!(shown[0].starts_with("3 0 1 abab") && shown[1].starts_with("3 1 1 abab"));
        assert!(shown[2].starts_with("3 0 2 cdcd") && shown[3].starts_with("3 1 2 cdcd"));
        for bad in ["abc", "zz".repeat(32).as_str(), ""] {
            assert!(fingerprint_records(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

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
