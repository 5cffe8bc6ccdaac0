//! `danemta sendmail` and `danemta queue` against a queue in a temporary directory, with no
//! daemon running: what an application submits is queued as it should be, and the operator
//! commands change what the queue shows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "danemta-{what}-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A queue directory and a configuration file pointing at it.
struct Setup {
    dir: TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(what: &str, extra: &str) -> Setup {
        let dir = TempDir::new(what);
        let queue = dir.path().join("queue");
        let config = dir.path().join("danemta.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nhostname = \"relay.example.org\"\n{extra}\n[queue]\ndir = {:?}\n",
                queue.display().to_string()
            ),
        )
        .expect("config");
        Setup { dir, config }
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .args(args)
            .env("DANEMTA_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run danemta");
        let written = child.stdin.take().expect("stdin").write_all(stdin);
        // A command may refuse (a usage error) and exit before it reads its input.
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        child.wait_with_output().expect("wait")
    }

    fn queue(&self, args: &[&str]) -> Output {
        let config = self.config.to_str().expect("utf-8 path");
        let mut all = vec!["queue", "--config", config];
        all.extend_from_slice(args);
        self.run(&all, b"")
    }

    fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        let config = self.config.to_str().expect("utf-8 path");
        let mut all = vec!["sendmail", "-C", config];
        all.extend_from_slice(args);
        self.run(&all, message)
    }

    fn list_json(&self) -> Vec<serde_json::Value> {
        let out = self.queue(&["list", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MESSAGE: &[u8] = b"From: Alice <a@example.org>\n\
To: \"Bob, B.\" <b@example.com>, team: c@example.net, (boss) d@example.net;\n\
Cc: e@example.com (Eve)\n\
Bcc: hidden@example.com,\n\
\x20 also-hidden@example.com\n\
Subject: hello\n\
\n\
Body line\n\
.\n\
after the dot, kept with -i\n";

#[test]
fn sendmail_queues_and_queue_commands_manage_it() {
    let setup = Setup::new("queue-cli", "");

    let empty = setup.queue(&["list"]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert_eq!(text(&empty.stdout), "Mail queue is empty\n");

    let out = setup.sendmail(&["-t", "-i", "-f", "a@example.org", "-v"], MESSAGE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("queued"), "{stdout}");
    assert!(stdout.contains("no daemon is running"), "{stdout}");

    let list = setup.list_json();
    assert_eq!(list.len(), 1);
    let entry = &list[0];
    assert_eq!(entry["queue_name"], "incoming");
    assert_eq!(entry["sender"], "a@example.org");
    let id = entry["queue_id"].as_str().expect("queue_id").to_owned();
    assert!(entry["arrival_time"].as_i64().expect("arrival_time") > 0);
    let recipients: Vec<&str> = entry["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        recipients,
        [
            "b@example.com",
            "c@example.net",
            "d@example.net",
            "e@example.com",
            "hidden@example.com",
            "also-hidden@example.com"
        ]
    );
    for r in entry["recipients"].as_array().expect("recipients") {
        assert_eq!(r["attempts"], 0);
        assert!(r.get("next_attempt").is_some());
    }

    // The stored body: CRLF, no Bcc, trace and missing fields added, -i kept the dot line.
    let body = std::fs::read(setup.queue_dir().join("spool").join(&id)).expect("spool file");
    let body = text(&body);
    assert_eq!(
        entry["message_size"].as_u64(),
        Some(body.len() as u64),
        "message_size"
    );
    assert!(!body.to_ascii_lowercase().contains("bcc"), "{body}");
    assert!(!body.contains("hidden@"), "{body}");
    assert!(
        body.starts_with("Received: by relay.example.org (danemta, from userid "),
        "{body}"
    );
    assert!(body.contains(&format!("\tid {id}; ")), "{body}");
    assert!(
        body.contains("\r\nFrom: Alice <a@example.org>\r\n"),
        "{body}"
    );
    assert!(body.contains("\r\nDate: "), "{body}");
    assert!(
        body.contains(&format!("\r\nMessage-ID: <{id}@relay.example.org>\r\n")),
        "{body}"
    );
    assert!(
        body.ends_with("\r\n\r\nBody line\r\n.\r\nafter the dot, kept with -i\r\n"),
        "{body}"
    );
    assert!(
        !body.replace("\r\n", "").contains('\n'),
        "only CRLF line ends"
    );

    let show = setup.queue(&["show", &id]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("show is JSON");
    assert_eq!(shown["queue_id"], id.as_str());

    let human = setup.queue(&["list"]);
    let listing = text(&human.stdout);
    assert!(listing.contains(&id), "{listing}");
    assert!(listing.contains("a@example.org"), "{listing}");
    assert!(
        listing.contains("\n-- 1 Kbytes in 1 Request.\n"),
        "{listing}"
    );

    // hold / release / delete change the listing.
    let held = setup.queue(&["hold", &id]);
    assert!(held.status.success(), "{}", text(&held.stderr));
    assert_eq!(setup.list_json()[0]["queue_name"], "hold");
    assert!(text(&setup.queue(&["list"]).stdout).contains(&format!("{id}!")));
    let released = setup.queue(&["release", &id]);
    assert!(released.status.success(), "{}", text(&released.stderr));
    assert_eq!(setup.list_json()[0]["queue_name"], "incoming");

    let flushed = setup.queue(&["flush", &id]);
    assert!(flushed.status.success(), "{}", text(&flushed.stderr));
    assert!(
        text(&flushed.stdout).starts_with("1 message flushed; no daemon is running"),
        "{}",
        text(&flushed.stdout)
    );

    // Unknown ids: an error naming them, exit 67 (EX_NOUSER); malformed ones: 64.
    let unknown = "000000000000000000000000";
    for command in ["flush", "delete", "hold", "release"] {
        let out = setup.queue(&[command, unknown]);
        assert_eq!(out.status.code(), Some(67), "{command}");
        assert!(text(&out.stderr).contains(unknown), "{}", text(&out.stderr));
    }
    assert_eq!(setup.queue(&["show", unknown]).status.code(), Some(67));
    assert_eq!(
        setup.queue(&["delete", "not-an-id"]).status.code(),
        Some(64)
    );

    let deleted = setup.queue(&["delete", &id]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert!(setup.list_json().is_empty());
    assert_eq!(
        text(&setup.queue(&["list"]).stdout),
        "Mail queue is empty\n"
    );
    assert!(!setup.queue_dir().join("spool").join(&id).exists());
}

#[test]
fn sendmail_refuses_bad_input_with_sysexits() {
    let setup = Setup::new("sendmail-refusals", "max_message_size = \"1KB\"");
    // No recipient and no -t: usage.
    assert_eq!(setup.sendmail(&[], b"x\n").status.code(), Some(64));
    // Unsupported mode.
    assert_eq!(setup.sendmail(&["-bs"], b"").status.code(), Some(64));
    // A bad command-line address: usage.
    assert_eq!(
        setup.sendmail(&["b@exa mple.com"], b"x\n").status.code(),
        Some(64)
    );
    // Bare CR, NUL, too large: data errors.
    for bad in [&b"Subject: a\rb\n\nx\n"[..], b"Subject: x\n\na\0b\n"] {
        let out = setup.sendmail(&["b@example.com"], bad);
        assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    }
    let big = vec![b'a'; 2000];
    let out = setup.sendmail(&["-i", "b@example.com"], &big);
    assert_eq!(out.status.code(), Some(65));
    assert!(text(&out.stderr).contains("max_message_size"));
    // -t with a broken header address: data error.
    let out = setup.sendmail(&["-t"], b"To: <b@example.com\n\nx\n");
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(setup.list_json().is_empty(), "nothing was queued");

    // Without -i, a lone dot ends the message; the sender defaults to LOGIN@HOSTNAME.
    let out = setup.sendmail(&["b@example.com"], b"Subject: x\n\nbody\n.\nnot read\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = setup.list_json();
    assert_eq!(list.len(), 1);
    let sender = list[0]["sender"].as_str().expect("sender");
    assert!(sender.ends_with("@relay.example.org"), "{sender}");
    let id = list[0]["queue_id"].as_str().expect("id");
    let body = text(&std::fs::read(setup.queue_dir().join("spool").join(id)).expect("spool"));
    assert!(body.ends_with("\r\n\r\nbody\r\n"), "{body}");
    assert!(body.contains("\r\nFrom: "), "{body}");
}

/// `store = "postgres"` opens the shared queue; a database that cannot be reached is a
/// temporary failure (75), named as the queue database (the store's own tests, and two
/// daemons sharing one, are in `crates/relay/tests/store_suite.rs` and `serve_cluster.rs`).
#[test]
fn an_unreachable_postgres_store_is_a_temporary_failure() {
    let setup = Setup::new("queue-postgres", "");
    let config = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        format!("{config}store = \"postgres\"\nurl = \"postgres://danemta@127.0.0.1:1/danemta\"\n"),
    )
    .expect("config");
    let out = setup.queue(&["list"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("queue database"),
        "{}",
        text(&out.stderr)
    );
}
