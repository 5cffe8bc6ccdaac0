//! `[auth] users_file` through the public API: a file as `doveadm pw` and `mkpasswd` write
//! it loads and verifies; a file with one bad line is refused whole, naming the line.

mod common;

use argon2::PasswordHasher as _;
use common::TempDir;
use relay::users::{LineError, Users, UsersError};

/// `mkpasswd -m sha-512 -S saltsalt secret`
const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

fn argon2id(password: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"saltsaltsaltsalt")
        .expect("hash")
        .to_string()
}

#[test]
fn a_mixed_file_loads_and_verifies() {
    let dir = TempDir::new("users");
    let path = dir.path().join("users");
    std::fs::write(
        &path,
        format!(
            "# submission users\n\nalice:{SHA512}\nbob:{{ARGON2ID}}{}\n",
            argon2id("correct horse")
        ),
    )
    .expect("write");
    let users = Users::load(&path).expect("loads");
    assert_eq!(users.len(), 2);
    assert!(users.verify("alice", "secret"));
    assert!(users.verify("bob", "correct horse"));
    assert!(!users.verify("bob", "secret"));
    assert!(!users.verify("carol", "secret"));
}

#[test]
fn one_bad_line_refuses_the_file() {
    let dir = TempDir::new("users-bad");
    let path = dir.path().join("users");
    std::fs::write(
        &path,
        format!("alice:{SHA512}\nbob:$1$saltsalt$qjXMvbEw8oaL.CzflDugX/\n"),
    )
    .expect("write");
    match Users::load(&path) {
        Err(UsersError::Line { line, reason, .. }) => {
            assert_eq!(line, 2);
            assert!(matches!(reason, LineError::Weak { .. }), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
