//! The durable queue through its `Store` trait, on the embedded `LocalStore`.

mod common;
#[path = "common/store.rs"]
mod store;

use common::TempDir;
use store::{attempt, body_of, envelope, lease, outcome, put};

use relay::queue::{LocalStore, QueueError, QueueId, QueueName, RecipientState, Store};
use smtp::Envelope;

const T0: i64 = 1_800_000_000;

fn open(dir: &TempDir, now: i64) -> LocalStore {
    LocalStore::open(dir.path(), now).unwrap().0
}

#[test]
fn a_message_lives_from_accept_to_delivery() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let body = b"Subject: hi\r\n\r\nhello\r\n";
    let id = put(
        &store,
        &envelope(&["b@example.com", "c@example.com"]),
        body,
        T0,
    )
    .unwrap();
    assert_eq!(body_of(&store, &id), body);

    let list = store.list(T0).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].queue_id, id);
    assert_eq!(list[0].queue_name, QueueName::Incoming);
    assert_eq!(list[0].message_size, body.len() as u64);
    assert_eq!(list[0].recipients.len(), 2);
    assert_eq!(store.next_due().unwrap(), Some(T0));

    // First try: b deferred, c delivered.
    let claims = store.due(T0, 10, &lease("w1", T0 + 60)).unwrap();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.recipients, ["b@example.com", "c@example.com"]);
    assert_eq!(store.list(T0).unwrap()[0].queue_name, QueueName::Active);
    let progress = store
        .record_attempt(
            claim,
            &[
                outcome("b@example.com", "deferred", "451 4.3.0 try again later"),
                outcome("c@example.com", "delivered", "250 2.0.0 Ok"),
            ],
            &[attempt("untrusted")],
            T0 + 300,
        )
        .unwrap();
    assert_eq!((progress.pending, progress.delivered), (1, 1));
    // Under the lease, the scheduler looks again when the lease ends (the earliest time the
    // message could be due again).
    assert_eq!(store.next_due().unwrap(), Some(T0 + 60));
    assert!(!store.complete(claim).unwrap());

    let entry = &store.list(T0 + 1).unwrap()[0];
    assert_eq!(entry.queue_name, QueueName::Deferred);
    assert_eq!(entry.recipients.len(), 1);
    let b = &entry.recipients[0];
    assert_eq!(b.address, "b@example.com");
    assert_eq!(b.attempts, 1);
    assert_eq!(b.next_attempt, T0 + 300);
    assert_eq!(b.delay_reason.as_deref(), Some("451 4.3.0 try again later"));
    assert_eq!(b.security, Some(smtp::Security::Untrusted));
    let shown = store.show(&id, T0 + 1).unwrap();
    assert_eq!(shown.recipients.len(), 2);
    assert_eq!(shown.recipients[1].state, RecipientState::Delivered);
    assert_eq!(shown.history.len(), 1);

    // Not due before next_attempt; due after, for the deferred recipient only.
    assert!(
        store
            .due(T0 + 299, 10, &lease("w1", T0 + 400))
            .unwrap()
            .is_empty()
    );
    let claims = store.due(T0 + 300, 10, &lease("w1", T0 + 400)).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].recipients, ["b@example.com"]);
    let progress = store
        .record_attempt(
            &claims[0],
            &[outcome("b@example.com", "delivered", "250 2.0.0 Ok")],
            &[attempt("verified")],
            T0 + 600,
        )
        .unwrap();
    assert!(progress.done());
    assert!(store.complete(&claims[0]).unwrap());
    assert!(store.list(T0 + 300).unwrap().is_empty());
    assert!(matches!(store.body(&id), Err(QueueError::NotFound(_))));
    let spool: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "the body file is removed");
}

#[test]
fn bounced_recipients_are_done_and_shown() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let id = put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let claims = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    let p = store
        .record_attempt(
            &claims[0],
            &[outcome(
                "b@example.com",
                "bounced",
                "550 5.1.1 no such user",
            )],
            &[attempt("verified")],
            T0 + 300,
        )
        .unwrap();
    assert_eq!((p.pending, p.bounced), (0, 1));
    // Before complete, the DSN writer can read what bounced.
    let shown = store.show(&id, T0).unwrap();
    assert_eq!(shown.recipients[0].state, RecipientState::Bounced);
    assert!(store.complete(&claims[0]).unwrap());
    assert!(matches!(store.show(&id, T0), Err(QueueError::NotFound(_))));
}

#[test]
fn hold_release_delete_flush() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let a = put(&store, &envelope(&["b@example.com"]), b"a", T0).unwrap();
    let b = put(&store, &envelope(&["c@example.com"]), b"b", T0).unwrap();
    assert!(a < b, "ids sort by arrival");

    store.hold(&a, "operator").unwrap();
    let list = store.list(T0).unwrap();
    assert_eq!(list[0].queue_name, QueueName::Hold);
    assert_eq!(list[0].hold_reason.as_deref(), Some("operator"));
    let claims = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].id, b);
    // b deferred far into the future.
    store
        .record_attempt(
            &claims[0],
            &[outcome("c@example.com", "deferred", "451 later")],
            &[],
            T0 + 3600,
        )
        .unwrap();
    store.complete(&claims[0]).unwrap();
    assert!(
        store
            .due(T0 + 1, 10, &lease("w", T0 + 60))
            .unwrap()
            .is_empty()
    );

    // flush makes b due now; a stays held.
    assert_eq!(store.flush(&[], T0 + 1).unwrap(), 1);
    let claims = store.due(T0 + 1, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [&b]);
    store.complete(&claims[0]).unwrap();

    // b, released without a new deferral, stays due; a joins it once released.
    store.release(&a).unwrap();
    let claims = store.due(T0 + 2, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [&a, &b]);
    for c in &claims {
        store.complete(c).unwrap();
    }

    store.delete(&a).unwrap();
    assert!(matches!(store.delete(&a), Err(QueueError::NotFound(_))));
    assert!(!dir.path().join("spool").join(a.as_str()).exists());
    assert_eq!(store.list(T0).unwrap().len(), 1);
    assert!(matches!(store.hold(&a, "x"), Err(QueueError::NotFound(_))));
}

#[test]
fn a_claimed_message_is_not_due_for_another_claimer_until_its_lease_expires() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let first = store.due(T0, 10, &lease("node1", T0 + 60)).unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .due(T0 + 59, 10, &lease("node2", T0 + 120))
            .unwrap()
            .is_empty()
    );
    let second = store.due(T0 + 60, 10, &lease("node2", T0 + 120)).unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].token, second[0].token);
    // The first claimer notices it lost the lease.
    let late = store.record_attempt(
        &first[0],
        &[outcome("b@example.com", "delivered", "250 ok")],
        &[],
        T0,
    );
    assert!(matches!(late, Err(QueueError::LeaseLost(_))));
    assert!(matches!(
        store.complete(&first[0]),
        Err(QueueError::LeaseLost(_))
    ));
    // The second one finishes.
    store
        .record_attempt(
            &second[0],
            &[outcome("b@example.com", "delivered", "250 ok")],
            &[],
            T0,
        )
        .unwrap();
    assert!(store.complete(&second[0]).unwrap());
}

#[test]
fn busy_domains_do_not_make_a_message_due() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let a = put(&store, &envelope(&["x@A.example"]), b"a", T0).unwrap();
    let b = put(&store, &envelope(&["y@B.Example"]), b"b", T0).unwrap();
    let both = put(&store, &envelope(&["z@b.example", "w@c.example"]), b"c", T0).unwrap();
    let busy = ["b.example".to_owned()];
    let claims = store
        .due_except(T0, 10, &lease("w", T0 + 60), &busy)
        .unwrap();
    let ids: Vec<_> = claims.iter().map(|c| c.id.clone()).collect();
    // b waits untouched; a message with another, free destination still goes.
    assert_eq!(ids, [a, both]);
    let rest = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(rest.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [b]);
}

#[test]
fn due_respects_the_limit() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    for _ in 0..5 {
        put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    }
    assert_eq!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().len(), 3);
    assert_eq!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().len(), 2);
    assert!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().is_empty());
}

#[test]
fn recovery_quarantines_orphan_bodies_and_holds_rows_without_a_whole_body() {
    let dir = TempDir::new("queue");
    let (kept, lost, cut) = {
        let store = open(&dir, T0);
        let kept = put(&store, &envelope(&["b@example.com"]), b"k", T0).unwrap();
        let lost = put(&store, &envelope(&["c@example.com"]), b"l", T0).unwrap();
        let cut = put(&store, &envelope(&["d@example.com"]), b"a whole body", T0).unwrap();
        (kept, lost, cut)
    };
    let spool = dir.path().join("spool");
    // A crash between body and row; a half-written temporary file; a lost body.
    let orphan = QueueId::generate();
    std::fs::write(spool.join(orphan.as_str()), b"never acknowledged").unwrap();
    std::fs::write(spool.join(format!("{}.tmp", QueueId::generate())), b"half").unwrap();
    std::fs::remove_file(spool.join(lost.as_str())).unwrap();
    // A body cut short (a crash on a file system without a journal, a disk error).
    std::fs::write(spool.join(cut.as_str()), b"a who").unwrap();

    let (store, recovery) = LocalStore::open(dir.path(), T0).unwrap();
    assert_eq!(recovery.orphan_bodies, std::slice::from_ref(&orphan));
    let damaged: Vec<&QueueId> = recovery.damaged_bodies.iter().map(|(id, _)| id).collect();
    assert_eq!(damaged, [&lost, &cut]);
    assert!(recovery.damaged_bodies[0].1.contains("missing"));
    assert!(
        recovery.damaged_bodies[1]
            .1
            .contains("damaged: 5 bytes in the spool, 12 were accepted"),
        "{:?}",
        recovery.damaged_bodies
    );
    assert_eq!(recovery.temporary_files, 1);
    let q = dir.path().join("quarantine");
    assert!(q.join(orphan.as_str()).exists());
    let reason = std::fs::read_to_string(q.join(format!("{orphan}.reason"))).unwrap();
    assert!(reason.contains("without a queue entry"));
    assert!(!spool.join(orphan.as_str()).exists());

    let list = store.list(T0).unwrap();
    assert_eq!(list.len(), 3);
    let held = list.iter().find(|e| e.queue_id == cut).unwrap();
    assert_eq!(held.queue_name, QueueName::Hold);
    // Never released to be delivered cut short.
    assert!(matches!(
        store.release(&cut),
        Err(QueueError::MissingBody(_))
    ));
    let held = list.iter().find(|e| e.queue_id == lost).unwrap();
    assert_eq!(held.queue_name, QueueName::Hold);
    assert!(
        held.hold_reason
            .as_deref()
            .unwrap()
            .contains("body file missing")
    );
    assert!(matches!(store.body(&lost), Err(QueueError::MissingBody(_))));
    assert!(matches!(
        store.release(&lost),
        Err(QueueError::MissingBody(_))
    ));
    assert!(matches!(
        store.release(&QueueId::generate()),
        Err(QueueError::NotFound(_))
    ));
    let claims = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [&kept]);
}

#[test]
fn recovery_by_the_owner_releases_every_lease() {
    let dir = TempDir::new("queue");
    let daemon = open(&dir, T0);
    put(&daemon, &envelope(&["b@example.com"]), b"1", T0).unwrap();
    put(&daemon, &envelope(&["c@example.com"]), b"2", T0).unwrap();
    let a = daemon.due(T0, 1, &lease("dead", T0 + 10)).unwrap();
    let b = daemon.due(T0, 1, &lease("alive", T0 + 1000)).unwrap();
    assert_eq!((a.len(), b.len()), (1, 1));
    // Another process opening the queue while the daemon runs releases only what ran out…
    let (shared, recovery) = LocalStore::open(dir.path(), T0 + 20).unwrap();
    assert!(!recovery.spool_scanned);
    assert_eq!(recovery.expired_leases, 1);
    let names: Vec<_> = shared
        .list(T0 + 20)
        .unwrap()
        .iter()
        .map(|e| e.queue_name)
        .collect();
    assert_eq!(names, [QueueName::Incoming, QueueName::Active]);
    // … while the next daemon (the lock holder) knows every lease was left by a dead one:
    // what was being delivered goes back to the queue at once.
    drop((shared, daemon));
    let (store, recovery) = LocalStore::open(dir.path(), T0 + 30).unwrap();
    assert!(recovery.spool_scanned);
    assert_eq!(recovery.expired_leases, 1);
    assert_eq!(
        store.due(T0 + 30, 10, &lease("w", T0 + 80)).unwrap().len(),
        2
    );
}

/// A crash between recording the last delivery and removing the message (found by the
/// crash soak, serve_crash.rs) must not leave it in the queue for ever.
#[test]
fn a_message_finished_but_not_removed_before_a_crash_is_removed_at_the_next_start() {
    let dir = TempDir::new("queue");
    let daemon = open(&dir, T0);
    let done = put(&daemon, &envelope(&["b@example.com"]), b"1", T0).unwrap();
    let pending = put(
        &daemon,
        &envelope(&["c@example.com", "d@example.com"]),
        b"2",
        T0,
    )
    .unwrap();
    let claims = daemon.due(T0, 10, &lease("dead", T0 + 1000)).unwrap();
    for claim in &claims {
        let outcomes = if claim.id == done {
            vec![outcome("b@example.com", "delivered", "250 ok")]
        } else {
            vec![outcome("c@example.com", "delivered", "250 ok")]
        };
        daemon
            .record_attempt(claim, &outcomes, &[attempt("verified")], T0 + 300)
            .unwrap();
    }
    // Another process (the daemon still holds the lock) must not remove it: the daemon may
    // be between the two steps.
    let (shared, recovery) = LocalStore::open(dir.path(), T0 + 10).unwrap();
    assert!(!recovery.spool_scanned);
    assert!(recovery.finished.is_empty());
    // The crash: no complete(); the next daemon finishes the job.
    drop((shared, daemon));
    let (store, recovery) = LocalStore::open(dir.path(), T0 + 10).unwrap();
    assert_eq!(recovery.finished, std::slice::from_ref(&done));
    let left: Vec<_> = store
        .list(T0 + 10)
        .unwrap()
        .into_iter()
        .map(|e| e.queue_id)
        .collect();
    assert_eq!(
        left,
        [pending],
        "the message with a pending recipient stays"
    );
    assert!(!dir.path().join("spool").join(done.as_str()).exists());
}

#[test]
fn the_body_is_complete_whenever_the_row_is_visible() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let ids: Vec<QueueId> = (0..5)
        .map(|_| put(&store, &envelope(&["b@example.com"]), &body, T0).unwrap())
        .collect();
    // Another connection (another process: `danemta queue`) sees rows only with full bodies.
    let db = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    let mut stmt = db.prepare("SELECT id, size FROM messages").unwrap();
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), ids.len());
    for (id, size) in rows {
        let on_disk = std::fs::read(dir.path().join("spool").join(&id)).unwrap();
        assert_eq!(on_disk.len() as i64, size);
        assert_eq!(on_disk, body);
    }
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn the_queue_view_has_the_postqueue_field_names() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let id = put(&store, &envelope(&["b@example.com"]), b"hello", T0).unwrap();
    let claims = store.due(T0, 1, &lease("w", T0 + 60)).unwrap();
    store
        .record_attempt(
            &claims[0],
            &[outcome(
                "b@example.com",
                "deferred",
                "451 4.7.5 TLSA mismatch",
            )],
            &[attempt("untrusted")],
            T0 + 300,
        )
        .unwrap();
    store.complete(&claims[0]).unwrap();
    let entry = &store.list(T0 + 1).unwrap()[0];
    let v = serde_json::to_value(entry).unwrap();
    assert_eq!(v["queue_name"], "deferred");
    assert_eq!(v["queue_id"], id.as_str());
    assert_eq!(v["arrival_time"], T0);
    assert_eq!(v["message_size"], 5);
    assert_eq!(v["sender"], "alice@example.org");
    let r = &v["recipients"][0];
    assert_eq!(r["address"], "b@example.com");
    assert_eq!(r["delay_reason"], "451 4.7.5 TLSA mismatch");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["next_attempt"], T0 + 300);
    assert_eq!(r["security"], "untrusted");
    assert!(v.get("history").is_none(), "the list view has no history");
    let shown = serde_json::to_value(store.show(&id, T0 + 1).unwrap()).unwrap();
    assert_eq!(shown["history"][0]["security"], "untrusted");
}

#[test]
fn the_null_sender_is_kept() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    let env = Envelope::new("<>", ["b@example.com"]).unwrap();
    put(&store, &env, b"dsn", T0).unwrap();
    assert_eq!(store.list(T0).unwrap()[0].sender, "");
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = TempDir::new("queue");
    drop(open(&dir, T0));
    std::fs::write(
        dir.path().join("queue.sqlite"),
        b"this is not a database at all, truly",
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.path().join("queue.sqlite-wal"));
    let _ = std::fs::remove_file(dir.path().join("queue.sqlite-shm"));
    assert!(LocalStore::open(dir.path(), T0).is_err());
}

#[test]
fn only_the_owning_process_scans_the_spool() {
    let dir = TempDir::new("queue");
    let (daemon, recovery) = LocalStore::open(dir.path(), T0).unwrap();
    assert!(recovery.spool_scanned);
    // A body whose row the daemon is about to write, seen by `danemta queue` opening the
    // queue meanwhile: not an orphan.
    let in_flight = QueueId::generate();
    let spool = dir.path().join("spool");
    std::fs::write(spool.join(in_flight.as_str()), b"being accepted").unwrap();
    let (cli, recovery) = LocalStore::open(dir.path(), T0).unwrap();
    assert!(!recovery.spool_scanned);
    assert!(recovery.orphan_bodies.is_empty());
    assert!(spool.join(in_flight.as_str()).exists());
    // Both see the same queue.
    let id = put(&daemon, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    cli.hold(&id, "operator").unwrap();
    assert_eq!(daemon.list(T0).unwrap()[0].queue_name, QueueName::Hold);
    drop(cli);
    drop(daemon);
    // After the daemon is gone, the next owner quarantines the orphan.
    let (_store, recovery) = LocalStore::open(dir.path(), T0).unwrap();
    assert!(recovery.spool_scanned);
    assert_eq!(recovery.orphan_bodies, [in_flight]);
}

#[test]
fn a_renewed_lease_keeps_other_claimers_out() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let claim = store.due(T0, 1, &lease("slow", T0 + 60)).unwrap().remove(0);
    let claim = store.renew(&claim, T0 + 600).unwrap();
    assert_eq!(claim.lease.until, T0 + 600);
    assert!(
        store
            .due(T0 + 120, 1, &lease("other", T0 + 180))
            .unwrap()
            .is_empty()
    );
    let taken = store.due(T0 + 600, 1, &lease("other", T0 + 660)).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(matches!(
        store.renew(&claim, T0 + 1200),
        Err(QueueError::LeaseLost(_))
    ));
}

#[test]
fn concurrent_claimers_never_get_the_same_message() {
    let dir = TempDir::new("queue");
    let store = open(&dir, T0);
    for _ in 0..40 {
        put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    }
    // Two connections to the same queue (two workers, or two processes), claiming in turns.
    let other = open(&dir, T0);
    fn claim(st: &LocalStore, who: &str) -> Vec<QueueId> {
        let mut got = Vec::new();
        loop {
            let c = st.due(T0, 3, &lease(who, T0 + 60)).unwrap();
            if c.is_empty() {
                break got;
            }
            got.extend(c.into_iter().map(|c| c.id));
        }
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| claim(&store, "a"));
        let b = s.spawn(|| claim(&other, "b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut all: Vec<_> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 40);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "no message claimed twice");
}

/// Group commit: many threads accepting at once each return only when their message is
/// stored, and every one of them is (with its body) in the queue afterwards.
#[test]
fn concurrent_accepts_are_all_stored() {
    let dir = TempDir::new("queue");
    let store = std::sync::Arc::new(open(&dir, T0));
    let threads: Vec<_> = (0..48)
        .map(|n| {
            let store = store.clone();
            std::thread::spawn(move || {
                let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
                let id = put(&*store, &envelope(&["b@example.com"]), body.as_bytes(), T0).unwrap();
                // Visible as soon as accept returned.
                assert_eq!(store.show(&id, T0).unwrap().queue_id, id);
                (id, body)
            })
        })
        .collect();
    let stored: Vec<(QueueId, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(store.list(T0).unwrap().len(), 48);
    for (id, body) in stored {
        assert_eq!(body_of(&*store, &id), body.as_bytes());
    }
}

// The MTA-STS policy cache (RFC 8461 §5.1) kept in the queue store.

mod sts_policies {
    use super::*;

    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use dns::DnsName;
    use relay::sts_cache::{StorePolicies, StsCacheError};
    use sts::{CachedPolicy, Mode, Policy, PolicyStore};

    fn domain(name: &str) -> DnsName {
        name.parse().unwrap()
    }

    /// An `enforce` policy for `mx.<domain>` fetched at `fetched_at` (with a fraction of a
    /// second, which must survive the store).
    fn cached(max_age: u32, fetched_at: i64) -> CachedPolicy {
        let policy = Policy::new(
            "20240101T000000".parse().unwrap(),
            Mode::Enforce,
            vec![
                "mx.example.com".parse().unwrap(),
                "*.example.net".parse().unwrap(),
            ],
            max_age,
        )
        .unwrap();
        CachedPolicy {
            policy,
            fetched_at: UNIX_EPOCH + Duration::new(u64::try_from(fetched_at).unwrap(), 123_456_789),
        }
    }

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
    }

    fn cache(dir: &TempDir) -> StorePolicies<LocalStore> {
        StorePolicies::new(Arc::new(open(dir, T0)))
    }

    /// A second connection to the queue database, as an operator's `sqlite3` would be.
    fn raw(dir: &TempDir) -> rusqlite::Connection {
        rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap()
    }

    fn rows(dir: &TempDir) -> i64 {
        raw(dir)
            .query_row("SELECT count(*) FROM sts_policies", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_policy_round_trips_and_is_replaced_and_removed() {
        let dir = TempDir::new("sts-cache");
        let policies = cache(&dir);
        let d = domain("Example.COM.");
        assert_eq!(policies.get(&d).unwrap(), None);
        let first = cached(86_400, T0);
        policies.put(&d, &first).unwrap();
        assert_eq!(policies.get(&d).unwrap(), Some(first));
        // The key is the normalised name: lower case, no trailing dot.
        let key: String = raw(&dir)
            .query_row("SELECT domain FROM sts_policies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(key, "example.com");
        let second = cached(604_800, T0 + 10);
        policies.put(&domain("example.com"), &second).unwrap();
        assert_eq!(rows(&dir), 1);
        assert_eq!(policies.get(&d).unwrap(), Some(second));
        assert_eq!(policies.get(&domain("example.net")).unwrap(), None);
        policies.remove(&d).unwrap();
        assert_eq!(policies.get(&d).unwrap(), None);
        policies.remove(&d).unwrap();
    }

    /// The point of keeping it in the store (RFC 8461 §5.1): an `enforce` policy is still
    /// there after a restart.
    #[test]
    fn the_cache_survives_a_restart() {
        let dir = TempDir::new("sts-cache");
        let d = domain("example.com");
        let policy = cached(86_400, T0);
        {
            let policies = cache(&dir);
            policies.put(&d, &policy).unwrap();
        }
        let policies = cache(&dir);
        let got = policies.get(&d).unwrap().unwrap();
        assert_eq!(got, policy);
        assert_eq!(got.policy.mode(), Mode::Enforce);
    }

    /// A queue written by the previous build (schema 2) keeps its messages and gains the
    /// cache; a queue written by a newer build is refused, as before.
    #[test]
    fn a_version_2_queue_is_migrated_and_a_newer_one_refused() {
        let dir = TempDir::new("sts-cache");
        let id = {
            let store = open(&dir, T0);
            put(&store, &envelope(&["bob@example.com"]), b"hi\r\n", T0).unwrap()
        };
        // Back to what a version-2 build left.
        raw(&dir)
            .execute_batch(
                "DROP TABLE sts_policies; DROP TABLE tls_counts; DROP TABLE tls_reports; \
                 UPDATE schema_version SET version = 2;",
            )
            .unwrap();
        let store = Arc::new(open(&dir, T0));
        let listed = store.list(T0).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].queue_id, id);
        let version: i64 = raw(&dir)
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
        let policies = StorePolicies::new(Arc::clone(&store));
        policies
            .put(&domain("example.com"), &cached(60, T0))
            .unwrap();
        drop((policies, store));

        raw(&dir)
            .execute("UPDATE schema_version SET version = 5", [])
            .unwrap();
        assert!(matches!(
            LocalStore::open(dir.path(), T0),
            Err(QueueError::SchemaTooNew {
                found: 5,
                supported: 4
            })
        ));
    }

    /// A damaged entry is no policy: dropped, and the other domains' entries are untouched.
    #[test]
    fn a_damaged_entry_is_dropped() {
        let dir = TempDir::new("sts-cache");
        let policies = cache(&dir);
        let (broken, invalid, fine) = (
            domain("broken.example"),
            domain("invalid.example"),
            domain("fine.example"),
        );
        for d in [&broken, &invalid, &fine] {
            policies.put(d, &cached(86_400, T0)).unwrap();
        }
        // Not JSON at all.
        raw(&dir)
            .execute(
                "UPDATE sts_policies SET policy = '{\"policy\": tru' WHERE domain = ?1",
                [broken.as_str()],
            )
            .unwrap();
        // JSON, but a policy RFC 8461 §3.2 forbids: max_age over a year.
        let json: String = raw(&dir)
            .query_row(
                "SELECT policy FROM sts_policies WHERE domain = ?1",
                [invalid.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["policy"]["max_age"] = serde_json::json!(31_557_601);
        raw(&dir)
            .execute(
                "UPDATE sts_policies SET policy = ?2 WHERE domain = ?1",
                [invalid.as_str(), &value.to_string()],
            )
            .unwrap();

        assert_eq!(policies.get(&broken).unwrap(), None);
        assert_eq!(policies.get(&invalid).unwrap(), None);
        assert_eq!(rows(&dir), 1, "both damaged entries removed");
        assert_eq!(policies.get(&fine).unwrap(), Some(cached(86_400, T0)));
        // The domain can be cached again.
        policies.put(&broken, &cached(60, T0)).unwrap();
        assert_eq!(policies.get(&broken).unwrap(), Some(cached(60, T0)));
    }

    /// A store that fails is an error, not an empty cache (which would let a broken disk
    /// downgrade an enforced domain).
    #[test]
    fn a_failing_store_is_an_error_not_an_empty_cache() {
        let dir = TempDir::new("sts-cache");
        let policies = cache(&dir);
        raw(&dir).execute_batch("DROP TABLE sts_policies").unwrap();
        assert!(matches!(
            policies.get(&domain("example.com")),
            Err(StsCacheError::Store(QueueError::Db(_)))
        ));
        assert!(
            policies
                .put(&domain("example.com"), &cached(60, T0))
                .is_err()
        );
    }

    /// Pruning removes exactly the entries whose `max_age` has run out (RFC 8461 §5.1).
    #[test]
    fn expired_entries_are_pruned() {
        let dir = TempDir::new("sts-cache");
        let policies = cache(&dir);
        let (short, long) = (domain("short.example"), domain("long.example"));
        policies.put(&short, &cached(60, T0)).unwrap();
        policies.put(&long, &cached(3600, T0)).unwrap();
        // The short one expires at T0 + 60.123…: not yet at T0 + 60.
        assert_eq!(policies.prune(at(T0 + 60)).unwrap(), 0);
        assert!(policies.get(&short).unwrap().is_some());
        assert_eq!(policies.prune(at(T0 + 61)).unwrap(), 1);
        assert_eq!(policies.get(&short).unwrap(), None);
        assert_eq!(policies.get(&long).unwrap(), Some(cached(3600, T0)));
        assert_eq!(policies.store().prune_sts_policies(T0 + 3601).unwrap(), 1);
        assert_eq!(rows(&dir), 0);
        assert_eq!(policies.prune(at(T0 + 7200)).unwrap(), 0);
    }

    /// The expiry column is what the policy says: `fetched_at + max_age`, rounded up.
    #[test]
    fn the_record_carries_the_policy_times() {
        let dir = TempDir::new("sts-cache");
        let policies = cache(&dir);
        let d = domain("example.com");
        policies.put(&d, &cached(86_400, T0)).unwrap();
        let record = policies.store().sts_policy(&d).unwrap().unwrap();
        assert_eq!(record.fetched_at, T0);
        assert_eq!(record.expires_at, T0 + 86_401);
        let back: CachedPolicy = serde_json::from_str(&record.policy).unwrap();
        assert_eq!(back, cached(86_400, T0));
    }
}

/// The TLS-RPT session counters (RFC 8460 §4.4) and the record of reports done.
mod tls_counts {
    use super::*;

    use dns::DnsName;
    use relay::queue::TlsCountRecord;

    /// Midnight UTC of a day (T0 is 2027-01-15T08:00:00Z).
    const DAY: i64 = T0 - T0 % 86_400;

    fn domain(name: &str) -> DnsName {
        name.parse().unwrap()
    }

    fn count(day: i64, domain_name: &str, result: Option<&str>, sessions: u64) -> TlsCountRecord {
        TlsCountRecord {
            day,
            domain: domain(domain_name),
            policy_type: "sts".into(),
            policy_strings: vec!["version: STSv1".into(), "mode: enforce".into()],
            policy_mx: vec!["mx.example.com".into()],
            result: result.map(str::to_owned),
            receiving_mx: "mx.example.com".into(),
            sending_ip: None,
            receiving_ip: Some("192.0.2.25".parse().unwrap()),
            sessions,
        }
    }

    fn sorted(mut v: Vec<TlsCountRecord>) -> Vec<TlsCountRecord> {
        v.sort_by(|a, b| (&a.result, a.sessions).cmp(&(&b.result, b.sessions)));
        v
    }

    #[test]
    fn counts_with_the_same_key_add_up() {
        let dir = TempDir::new("tls-counts");
        let store = open(&dir, T0);
        let d = domain("example.com");
        assert!(store.tls_counts(&d, DAY).unwrap().is_empty());
        store
            .add_tls_counts(&[count(DAY, "example.com", None, 2)])
            .unwrap();
        store
            .add_tls_counts(&[
                count(DAY, "example.com", None, 3),
                count(DAY, "example.com", Some("certificate-expired"), 1),
            ])
            .unwrap();
        store
            .add_tls_counts(&[count(DAY, "example.com", Some("certificate-expired"), 4)])
            .unwrap();
        store.add_tls_counts(&[]).unwrap();
        let got = sorted(store.tls_counts(&d, DAY).unwrap());
        assert_eq!(
            got,
            vec![
                count(DAY, "example.com", None, 5),
                count(DAY, "example.com", Some("certificate-expired"), 5),
            ]
        );
        // Another key: another counter (here: another receiving address).
        let mut other = count(DAY, "example.com", None, 1);
        other.receiving_ip = Some("2001:db8::25".parse().unwrap());
        store.add_tls_counts(std::slice::from_ref(&other)).unwrap();
        let got = store.tls_counts(&d, DAY).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.contains(&other));
        assert!(
            store
                .tls_counts(&domain("example.net"), DAY)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn days_are_kept_apart() {
        let dir = TempDir::new("tls-counts");
        let store = open(&dir, T0);
        let d = domain("example.com");
        let next = DAY + 86_400;
        store
            .add_tls_counts(&[
                count(DAY, "example.com", None, 7),
                count(next, "example.com", None, 1),
            ])
            .unwrap();
        assert_eq!(
            store.tls_counts(&d, DAY).unwrap(),
            vec![count(DAY, "example.com", None, 7)]
        );
        assert_eq!(
            store.tls_counts(&d, next).unwrap(),
            vec![count(next, "example.com", None, 1)]
        );
        assert!(store.tls_counts(&d, DAY - 86_400).unwrap().is_empty());
    }

    #[test]
    fn reports_are_due_until_finished_and_pruned_with_their_day() {
        let dir = TempDir::new("tls-counts");
        let store = open(&dir, T0);
        let next = DAY + 86_400;
        store
            .add_tls_counts(&[
                count(DAY, "b.example", None, 1),
                count(DAY, "a.example", Some("starttls-not-supported"), 1),
                count(DAY, "a.example", None, 1),
                count(next, "c.example", None, 1),
            ])
            .unwrap();
        assert_eq!(
            store.tls_reports_due(DAY).unwrap(),
            vec![domain("a.example"), domain("b.example")]
        );
        store
            .finish_tls_report(&domain("a.example"), DAY, "sent", T0)
            .unwrap();
        // Finishing twice is no error (a second node, a retry).
        store
            .finish_tls_report(&domain("a.example"), DAY, "sent", T0 + 1)
            .unwrap();
        assert_eq!(
            store.tls_reports_due(DAY).unwrap(),
            vec![domain("b.example")]
        );
        assert_eq!(
            store.tls_reports_due(next).unwrap(),
            vec![domain("c.example")]
        );
        // The counters stay readable after the report is done (`danemta report tls`).
        assert_eq!(
            store.tls_counts(&domain("a.example"), DAY).unwrap().len(),
            2
        );
        assert_eq!(store.prune_tls_counts(next).unwrap(), 3);
        assert!(store.tls_reports_due(DAY).unwrap().is_empty());
        assert_eq!(
            store.tls_reports_due(next).unwrap(),
            vec![domain("c.example")]
        );
    }

    #[test]
    fn counters_survive_a_restart() {
        let dir = TempDir::new("tls-counts");
        {
            let store = open(&dir, T0);
            store
                .add_tls_counts(&[count(DAY, "example.com", None, 3)])
                .unwrap();
        }
        let store = open(&dir, T0);
        assert_eq!(
            store.tls_counts(&domain("example.com"), DAY).unwrap(),
            vec![count(DAY, "example.com", None, 3)]
        );
    }

    /// A queue written by the previous build (schema 3) keeps its messages and cached
    /// policies, and gains the counters.
    #[test]
    fn a_version_3_queue_is_migrated() {
        let dir = TempDir::new("tls-counts");
        let id = {
            let store = open(&dir, T0);
            put(&store, &envelope(&["bob@example.com"]), b"hi\r\n", T0).unwrap()
        };
        let raw = || rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
        raw()
            .execute_batch(
                "DROP TABLE tls_counts; DROP TABLE tls_reports; \
                 INSERT INTO sts_policies VALUES ('example.com', '{}', 1, 2); \
                 UPDATE schema_version SET version = 3;",
            )
            .unwrap();
        let store = open(&dir, T0);
        assert_eq!(store.list(T0).unwrap()[0].queue_id, id);
        assert!(store.sts_policy(&domain("example.com")).unwrap().is_some());
        let version: i64 = raw()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
        store
            .add_tls_counts(&[count(DAY, "example.com", None, 1)])
            .unwrap();
        assert_eq!(
            store.tls_counts(&domain("example.com"), DAY).unwrap().len(),
            1
        );
    }
}
