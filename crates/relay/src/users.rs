//! `[auth] users_file`: who may authenticate on submission listeners (RFC 4954), as
//! `user:password-hash` lines.
//!
//! # Format
//!
//! One `user:hash` per line; blank lines and lines whose first non-blank character is `#`
//! are ignored. The user is everything before the first `:` (it may not be empty, and may not
//! appear twice); the hash is the rest of the line, surrounding blanks removed. Accepted
//! hashes, as `doveadm pw`, `mkpasswd` and the `argon2` tool write them:
//!
//! * Argon2 PHC strings (RFC 9106): `$argon2id$v=19$m=…,t=…,p=…$salt$hash`, and `$argon2i$…`;
//! * SHA-crypt (Drepper's "Unix crypt using SHA-256 and SHA-512", the `$5$`/`$6$` of glibc's
//!   `crypt(3)`): `$6$[rounds=N$]salt$hash` and `$5$…`;
//! * either of them behind a Dovecot scheme prefix: `{ARGON2ID}`, `{ARGON2I}`,
//!   `{SHA512-CRYPT}`, `{SHA256-CRYPT}` (the prefix must name the hash that follows).
//!
//! Everything else is refused when the file is loaded, with the file, the line and the
//! reason: plaintext (`{PLAIN}` or a bare password), weak schemes (MD5-crypt `$1$`, Apache's
//! `$apr1$`, traditional DES crypt, unsalted or salted SHA-1/SHA-2 digests), unknown schemes and
//! malformed hashes. A file that loads therefore never holds a hash that [`Users::verify`]
//! cannot check.
//!
//! # Timing
//!
//! [`Users::verify`] compares through the hash crates' verifiers, which compare the computed
//! and the stored digest in constant time. A user that does not exist still costs one
//! verification (against another user's hash, whose answer is ignored), so that the time an
//! `AUTH` takes does not tell which users exist.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use argon2::{Argon2, PasswordVerifier as _};
use sha_crypt::ShaCrypt;

/// The largest Argon2 memory cost accepted, in KiB (1 GiB): every login allocates that much,
/// so a larger cost is more likely a typo than a choice, and would let a few clients exhaust
/// the daemon's memory.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;

/// The largest Argon2 time cost (passes over memory) accepted.
pub const MAX_ARGON2_TIME_COST: u32 = 64;

/// Salt and digest lengths of SHA-crypt, in crypt-base64 characters.
const SHA_CRYPT_MAX_SALT: usize = 16;
const SHA512_CRYPT_DIGEST: usize = 86;
const SHA256_CRYPT_DIGEST: usize = 43;

/// The users of `[auth] users_file`.
#[derive(Debug)]
pub struct Users {
    entries: HashMap<String, Hash>,
    /// Verified when the user is unknown, so that an unknown user costs what a known one does.
    dummy: Hash,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            entries: HashMap::new(),
            dummy: Hash::dummy(),
        }
    }
}

/// A checked password hash.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    /// An Argon2 PHC string.
    Argon2(String),
    /// A SHA-crypt string (`$5$` or `$6$`).
    ShaCrypt(String),
}

impl fmt::Debug for Hash {
    // The hash is not printed: a log of the configuration must not hand out offline-crackable
    // material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hash::Argon2(_) => f.write_str("Argon2(…)"),
            Hash::ShaCrypt(_) => f.write_str("ShaCrypt(…)"),
        }
    }
}

impl Hash {
    /// `$6$saltsalt$…` for `secret` (`mkpasswd -m sha-512 -S saltsalt secret`): what an
    /// unknown user is checked against when the file has no user at all.
    fn dummy() -> Hash {
        Hash::ShaCrypt(
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"
                .to_owned(),
        )
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Argon2(phc) => Argon2::default().verify_password(password, phc.as_str()),
            Hash::ShaCrypt(mcf) => ShaCrypt::default().verify_password(password, mcf.as_str()),
        }
        .is_ok()
    }
}

/// A users file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is refused.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: LineError,
    },
}

/// Why one line of a users file is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No `:` between user and hash.
    #[error("expected user:password-hash")]
    NoSeparator,
    /// Nothing before the `:`.
    #[error("empty user name")]
    EmptyUser,
    /// A user name with blanks or control characters (SASL PLAIN could not carry it intact).
    #[error("user name {0:?} contains a blank or a control character")]
    BadUser(String),
    /// The same user twice.
    #[error("user {user:?} already defined on line {first}")]
    Duplicate {
        /// The user.
        user: String,
        /// The line of the first definition.
        first: usize,
    },
    /// No hash after the `:`.
    #[error("empty password hash")]
    EmptyHash,
    /// A password in clear.
    #[error(
        "a plaintext password, not a hash: store an Argon2id or SHA512-CRYPT hash (`doveadm pw -s ARGON2ID`, `mkpasswd -m sha-512`)"
    )]
    Plaintext,
    /// A scheme known to be too weak to store passwords.
    #[error(
        "{scheme} is too weak to store passwords: use Argon2id or SHA512-CRYPT (`doveadm pw -s ARGON2ID`, `mkpasswd -m sha-512`)"
    )]
    Weak {
        /// The scheme.
        scheme: String,
    },
    /// A scheme this build does not know.
    #[error("unsupported password scheme {scheme:?}: use Argon2id or SHA512-CRYPT")]
    Unknown {
        /// The scheme.
        scheme: String,
    },
    /// A `{SCHEME}` prefix that does not name the hash behind it.
    #[error("the prefix {{{prefix}}} does not match the {found} hash that follows it")]
    PrefixMismatch {
        /// The Dovecot prefix.
        prefix: String,
        /// The hash's own scheme.
        found: &'static str,
    },
    /// A hash of a supported scheme that does not parse.
    #[error("malformed {scheme} hash: {detail}")]
    Malformed {
        /// The scheme.
        scheme: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl Users {
    /// Reads and checks `path` (see the [module documentation](self) for the format).
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| UsersError::Line {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of a users file; an error carries the 1-based line number.
    fn parse(text: &str) -> Result<Users, (usize, LineError)> {
        let mut entries = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        let mut dummy = None;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or((number, LineError::NoSeparator))?;
            if user.is_empty() {
                return Err((number, LineError::EmptyUser));
            }
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((number, LineError::BadUser(user.to_owned())));
            }
            if let Some(&first) = lines_of.get(user) {
                return Err((
                    number,
                    LineError::Duplicate {
                        user: user.to_owned(),
                        first,
                    },
                ));
            }
            let hash = parse_hash(hash.trim()).map_err(|e| (number, e))?;
            dummy.get_or_insert_with(|| hash.clone());
            lines_of.insert(user.to_owned(), number);
            entries.insert(user.to_owned(), hash);
        }
        Ok(Users {
            entries,
            dummy: dummy.unwrap_or_else(Hash::dummy),
        })
    }

    /// How many users the file defines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file defines no user (nobody can authenticate).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `password` is `user`'s. The user name is compared exactly (case matters, as
    /// in Dovecot's passwd-file). An unknown user costs one verification all the same.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.entries.get(user) {
            Some(hash) => hash.verify(password.as_bytes()),
            None => {
                // Same work, answer ignored: the dummy may well be this password's hash.
                let _ = self.dummy.verify(password.as_bytes());
                false
            }
        }
    }
}

/// Dovecot scheme prefixes (`{SCHEME}hash`) and what they are.
enum Prefix {
    Argon2,
    ShaCrypt,
    Plain,
    Weak,
}

fn prefix_kind(name: &str) -> Option<Prefix> {
    Some(match name.to_ascii_uppercase().as_str() {
        "ARGON2ID" | "ARGON2I" => Prefix::Argon2,
        "SHA512-CRYPT" | "SHA256-CRYPT" => Prefix::ShaCrypt,
        "PLAIN" | "CLEAR" | "CLEARTEXT" | "PLAIN-TRUNC" => Prefix::Plain,
        "CRYPT" | "DES-CRYPT" | "MD5-CRYPT" | "MD5" | "PLAIN-MD5" | "LDAP-MD5" | "SMD5" | "SHA"
        | "SSHA" | "SHA1" | "SHA256" | "SSHA256" | "SHA512" | "SSHA512" | "CRAM-MD5"
        | "DIGEST-MD5" | "NTLM" | "LANMAN" | "RPA" | "OTP" | "SKEY" => Prefix::Weak,
        _ => return None,
    })
}

/// Checks one hash, with or without a Dovecot prefix.
fn parse_hash(text: &str) -> Result<Hash, LineError> {
    if text.is_empty() {
        return Err(LineError::EmptyHash);
    }
    let (prefix, hash) = match text.strip_prefix('{').and_then(|t| t.split_once('}')) {
        Some((name, rest)) => (Some(name), rest),
        None => (None, text),
    };
    let parsed = parse_bare(hash);
    let Some(name) = prefix else {
        return parsed;
    };
    match prefix_kind(name) {
        None => Err(LineError::Unknown {
            scheme: format!("{{{name}}}"),
        }),
        Some(Prefix::Plain) => Err(LineError::Plaintext),
        Some(Prefix::Weak) => Err(LineError::Weak {
            scheme: format!("{{{}}}", name.to_ascii_uppercase()),
        }),
        Some(kind) => {
            let hash = parsed?;
            let upper = name.to_ascii_uppercase();
            let matches = match (&kind, &hash) {
                (Prefix::Argon2, Hash::Argon2(s)) => s
                    .get(1..)
                    .is_some_and(|s| s.split('$').next() == Some(&*upper.to_ascii_lowercase())),
                (Prefix::ShaCrypt, Hash::ShaCrypt(s)) => {
                    (upper == "SHA512-CRYPT") == s.starts_with("$6$")
                }
                _ => false,
            };
            if matches {
                Ok(hash)
            } else {
                Err(LineError::PrefixMismatch {
                    prefix: upper,
                    found: hash.scheme(),
                })
            }
        }
    }
}

impl Hash {
    fn scheme(&self) -> &'static str {
        match self {
            Hash::Argon2(s) if s.starts_with("$argon2i$") => "Argon2i",
            Hash::Argon2(_) => "Argon2id",
            Hash::ShaCrypt(s) if s.starts_with("$5$") => "SHA256-CRYPT",
            Hash::ShaCrypt(_) => "SHA512-CRYPT",
        }
    }
}

/// Checks a hash without prefix, by its Modular Crypt Format id (`$id$`).
fn parse_bare(hash: &str) -> Result<Hash, LineError> {
    let Some(rest) = hash.strip_prefix('$') else {
        // Traditional crypt(3): 13 characters of the crypt alphabet (DES, 56-bit keys and
        // passwords cut at 8 characters).
        if hash.len() == 13 && hash.bytes().all(is_crypt64) {
            return Err(LineError::Weak {
                scheme: "DES crypt".into(),
            });
        }
        return Err(LineError::Plaintext);
    };
    let id = rest.split('$').next().unwrap_or_default();
    match id {
        "argon2id" | "argon2i" => parse_argon2(hash),
        "5" | "6" => parse_sha_crypt(hash),
        "1" => Err(LineError::Weak {
            scheme: "MD5-crypt ($1$)".into(),
        }),
        "apr1" => Err(LineError::Weak {
            scheme: "Apache MD5 ($apr1$)".into(),
        }),
        "argon2d" => Err(LineError::Unknown {
            scheme: "$argon2d$ (Argon2d is for settings without side channels, not passwords; use Argon2id)".into(),
        }),
        _ => Err(LineError::Unknown {
            scheme: format!("${id}$"),
        }),
    }
}

fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// An Argon2 PHC string: parses, has a salt and an output, and parameters this build can
/// verify within the limits above.
fn parse_argon2(text: &str) -> Result<Hash, LineError> {
    let malformed = |detail: String| LineError::Malformed {
        scheme: "Argon2",
        detail,
    };
    let phc = argon2::PasswordHash::new(text).map_err(|e| malformed(e.to_string()))?;
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err(malformed("no salt or no hash".into()));
    }
    argon2::Algorithm::try_from(phc.algorithm.as_str()).map_err(|e| malformed(e.to_string()))?;
    if let Some(v) = phc.version {
        argon2::Version::try_from(v).map_err(|e| malformed(e.to_string()))?;
    }
    let params = argon2::Params::try_from(&phc).map_err(|e| malformed(e.to_string()))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(malformed(format!(
            "memory cost m={} KiB is over the limit of {MAX_ARGON2_MEMORY_KIB} KiB",
            params.m_cost()
        )));
    }
    if params.t_cost() > MAX_ARGON2_TIME_COST {
        return Err(malformed(format!(
            "time cost t={} is over the limit of {MAX_ARGON2_TIME_COST}",
            params.t_cost()
        )));
    }
    Ok(Hash::Argon2(text.to_owned()))
}

/// A SHA-crypt string: `$5$` or `$6$`, an optional `rounds=N` (1000 to 999999999), a salt of
/// at most 16 characters and the digest (43 or 86 characters of the crypt alphabet).
fn parse_sha_crypt(text: &str) -> Result<Hash, LineError> {
    let (scheme, digest_len) = if text.starts_with("$6$") {
        ("SHA512-CRYPT", SHA512_CRYPT_DIGEST)
    } else {
        ("SHA256-CRYPT", SHA256_CRYPT_DIGEST)
    };
    let malformed = |detail: &str| LineError::Malformed {
        scheme,
        detail: detail.to_owned(),
    };
    let mut fields: Vec<&str> = text.get(3..).unwrap_or_default().split('$').collect();
    if let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| malformed("rounds= is not a number"))?;
        sha_crypt::Params::new(rounds).map_err(|_| {
            malformed("rounds= must be between 1000 and 999999999 (as glibc writes it)")
        })?;
        fields.remove(0);
    }
    let [salt, digest] = fields[..] else {
        return Err(malformed("expected $id$[rounds=N$]salt$hash"));
    };
    if salt.is_empty() || salt.len() > SHA_CRYPT_MAX_SALT {
        return Err(malformed("the salt must have 1 to 16 characters"));
    }
    if salt
        .bytes()
        .any(|b| b == b':' || b.is_ascii_control() || b == b' ')
    {
        return Err(malformed("the salt has a forbidden character"));
    }
    if digest.len() != digest_len || !digest.bytes().all(is_crypt64) {
        return Err(malformed(&format!(
            "the hash must be {digest_len} characters of [./0-9A-Za-z]"
        )));
    }
    Ok(Hash::ShaCrypt(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher as _;

    /// `mkpasswd -m sha-512 -S saltsalt secret`
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    /// `mkpasswd -m sha-256 -S saltsalt secret`
    const SHA256: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
    /// `mkpasswd -m sha-512 -R 10000 -S saltsaltsaltsalt secret`
    const SHA512_ROUNDS: &str = "$6$rounds=10000$saltsaltsaltsalt$JfKXl4x07umbXIGXrz4jYnDtZt8fIFlNSby2poRKPSFD4PbiQHTxb2NLQPGuaML.ZXPWXKfgxibKFGp.yXoha.";

    /// An Argon2id hash of `password` with low costs, so that tests stay fast.
    fn argon2id(password: &str) -> String {
        let params = argon2::Params::new(64, 1, 1, None).expect("params");
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        hasher
            .hash_password_with_salt(password.as_bytes(), b"0123456789abcdef")
            .expect("hash")
            .to_string()
    }

    fn line_error(text: &str) -> (usize, LineError) {
        Users::parse(text).expect_err("must be refused")
    }

    #[test]
    fn sha_crypt_vectors_from_mkpasswd_verify() {
        let users = Users::parse(&format!(
            "# users\n\nalice:{SHA512}\n  bob : {SHA256}\ncarol:{SHA512_ROUNDS}\n"
        ));
        // `bob ` with a blank before the colon is refused: user names have no blanks.
        assert!(users.is_err());
        let users = Users::parse(&format!(
            "# users\n\nalice:{SHA512}\nbob:{{SHA256-CRYPT}}{SHA256}\ncarol:{{sha512-crypt}}{SHA512_ROUNDS}\n"
        ))
        .expect("loads");
        assert_eq!(users.len(), 3);
        for user in ["alice", "bob", "carol"] {
            assert!(users.verify(user, "secret"), "{user}");
            assert!(!users.verify(user, "Secret"), "{user}");
            assert!(!users.verify(user, ""), "{user}");
        }
        assert!(!users.verify("ALICE", "secret"));
    }

    #[test]
    fn argon2id_with_and_without_prefix_verifies() {
        let hash = argon2id("hunter2");
        let users = Users::parse(&format!("a:{hash}\nb:{{ARGON2ID}}{hash}\n")).expect("loads");
        assert!(users.verify("a", "hunter2"));
        assert!(users.verify("b", "hunter2"));
        assert!(!users.verify("a", "hunter3"));
        assert!(!users.verify("nobody", "hunter2"));
    }

    #[test]
    fn an_unknown_user_is_checked_against_a_real_hash_and_refused() {
        // The dummy is the first user's hash: the right password for it must not let an
        // unknown name in.
        let users = Users::parse(&format!("alice:{SHA512}\n")).expect("loads");
        assert!(!users.verify("mallory", "secret"));
        let empty = Users::parse("# nobody\n").expect("loads");
        assert!(empty.is_empty());
        assert!(!empty.verify("mallory", "secret"));
        assert!(!Users::default().verify("", ""));
    }

    #[test]
    fn refusals_name_the_line_and_the_reason() {
        assert_eq!(line_error("\n\nalice\n"), (3, LineError::NoSeparator));
        assert_eq!(line_error(&format!(":{SHA512}")), (1, LineError::EmptyUser));
        assert_eq!(line_error("alice:"), (1, LineError::EmptyHash));
        assert_eq!(line_error("alice:secret"), (1, LineError::Plaintext));
        assert_eq!(line_error("alice:{PLAIN}secret"), (1, LineError::Plaintext));
        assert_eq!(
            line_error(&format!("alice:{SHA512}\n# again\nalice:{SHA256}")),
            (
                3,
                LineError::Duplicate {
                    user: "alice".into(),
                    first: 1
                }
            )
        );
        for weak in [
            "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",
            "$apr1$salt$abcdefghijklmnopqrstuv",
            "sa3tHJ3/KuYvI",
            "{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",
            "{SSHA}abcdefgh",
            "{CRYPT}sa3tHJ3/KuYvI",
        ] {
            let (_, e) = line_error(&format!("alice:{weak}"));
            assert!(matches!(e, LineError::Weak { .. }), "{weak}: {e}");
        }
        for unknown in [
            "$2y$10$abcdefghijklmnopqrstuv",
            "{BLF-CRYPT}$2y$10$x",
            "$argon2d$x",
        ] {
            let (_, e) = line_error(&format!("alice:{unknown}"));
            assert!(matches!(e, LineError::Unknown { .. }), "{unknown}: {e}");
        }
        assert!(matches!(
            line_error(&format!("alice:{{SHA256-CRYPT}}{SHA512}")).1,
            LineError::PrefixMismatch { .. }
        ));
        assert!(matches!(
            line_error(&format!("alice:{{ARGON2I}}{}", argon2id("x"))).1,
            LineError::PrefixMismatch { .. }
        ));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "$6$saltsalt$tooshort",
            "$6$saltsalt",
            "$6$$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=10$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=x$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$saltsaltsaltsaltX$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5s!",
            "$argon2id$v=19$m=64,t=1,p=1",
            "$argon2id$v=19$m=4294967295,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$garbage",
        ] {
            let (_, e) = line_error(&format!("alice:{bad}"));
            assert!(matches!(e, LineError::Malformed { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn the_file_error_names_path_and_line() {
        let dir = std::env::temp_dir().join(format!("danemta-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("users");
        std::fs::write(&path, "# x\nalice:secret\n").expect("write");
        let e = Users::load(&path).expect_err("plaintext");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{}:2: a plaintext password", path.display())));
        assert!(matches!(
            Users::load(&dir.join("missing")),
            Err(UsersError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // Debug does not print hashes.
        let users = Users::parse(&format!("alice:{SHA512}")).expect("loads");
        assert!(!format!("{users:?}").contains("saltsalt"));
    }
}
