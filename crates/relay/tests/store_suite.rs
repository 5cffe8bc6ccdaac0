//! One test suite, two back-ends: the contract of the queue's `Store` trait (accept, claim,
//! lease, record, complete, hold, release, delete, flush, body, the views, the MTA-STS cache
//! and the TLS-RPT counters), run against the embedded `LocalStore` (module `local`) and
//! against `PgStore` on a private PostgreSQL server of the lab (module `postgres`; one server
//! per test process, a fresh database per test).
//!
//! Each test is a function of a [`Queue`]: a fresh, empty queue of one back-end that can be
//! opened several times, each handle being what another process or another relay node would
//! have (its own connections). What only one back-end has (spool recovery, SQLite's integrity
//! check, PostgreSQL's reconnection) is tested beside it: `tests/queue.rs` and the
//! `postgres_only` module below.

mod common;
#[path = "common/store.rs"]
mod store;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use common::TempDir;
use danemta_lab::postgres::Postgres;
use dns::DnsName;
use relay::queue::postgres::{PgError, PgStore};
use relay::queue::{
    DsnParams, LocalStore, NewMessage, QueueError, QueueId, QueueName, RecipientState, Store,
    StsPolicyRecord, TlsCountRecord,
};
use smtp::Envelope;
use store::{attempt, body_of, envelope, lease, outcome, put};

const T0: i64 = 1_800_000_000;

/// A fresh queue of one back-end (see the module documentation).
struct Queue {
    open: Box<dyn Fn() -> Box<dyn Store> + Send + Sync>,
    _dir: Option<TempDir>,
}

impl Queue {
    /// A new handle on the queue: another process's, or another node's.
    fn open(&self) -> Box<dyn Store> {
        (self.open)()
    }
}

fn local() -> Queue {
    let dir = TempDir::new("store-suite");
    let path = dir.path().to_owned();
    Queue {
        open: Box::new(move || Box::new(LocalStore::open(&path, T0).unwrap().0)),
        _dir: Some(dir),
    }
}

/// The test process's PostgreSQL server (stopped by the lab's watchdog when it exits).
fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start().expect("a private PostgreSQL server"))
}

fn postgres() -> Queue {
    let url = server().create_database().unwrap();
    Queue {
        open: Box::new(move || Box::new(PgStore::open(&url).unwrap())),
        _dir: None,
    }
}

/// Every test of the suite, once per back-end.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name(&super::local()); })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::postgres()); })*
        }
    };
}

suite!(
    a_message_lives_from_accept_to_delivery,
    bounced_recipients_are_done_and_shown,
    hold_release_delete_flush,
    a_claimed_message_is_not_due_for_another_node_until_its_lease_expires,
    a_node_that_lost_its_lease_changes_nothing,
    a_node_whose_message_was_finished_by_another_gets_not_found,
    an_expired_lease_nobody_took_is_still_its_holders,
    a_renewed_lease_keeps_other_claimers_out,
    postpone_moves_the_pending_recipients_and_counts_no_attempt,
    busy_domains_do_not_make_a_message_due,
    due_respects_the_limit_and_takes_the_earliest_first,
    concurrent_claimers_never_get_the_same_message,
    concurrent_accepts_are_all_stored,
    an_existing_id_is_refused,
    next_due_follows_recipients_holds_and_leases,
    stats_count_and_the_oldest,
    bodies_round_trip_byte_for_byte,
    the_queue_view_has_the_postqueue_field_names,
    the_null_sender_is_kept,
    a_large_queue_is_scanned_in_order,
    the_sts_policy_cache,
    tls_counters_add_up_and_reports_finish,
    a_finished_try_queues_its_bounce_and_ends_the_claim,
);

// ---------------------------------------------------------------------------------------

fn ids(claims: &[relay::queue::Claim]) -> Vec<QueueId> {
    claims.iter().map(|c| c.id.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// The suite.

fn a_message_lives_from_accept_to_delivery(q: &Queue) {
    let store = q.open();
    let body = b"Subject: hi\r\n\r\nhello\r\n";
    let id = put(
        &*store,
        &envelope(&["b@example.com", "c@example.com"]),
        body,
        T0,
    )
    .unwrap();
    assert_eq!(body_of(&*store, &id), body);

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
    assert_eq!(claim.attempts, 0);
    assert_eq!(claim.sender, "alice@example.org");
    assert_eq!(claim.arrival_time, T0);
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
    // Under the lease, the scheduler looks again when the lease ends.
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
    assert_eq!(store.next_due().unwrap(), Some(T0 + 300));

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
    assert_eq!(claims[0].attempts, 1);
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
    assert!(matches!(store.show(&id, T0), Err(QueueError::NotFound(_))));
    assert_eq!(store.next_due().unwrap(), None);
}

fn bounced_recipients_are_done_and_shown(q: &Queue) {
    let store = q.open();
    let id = put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
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
    assert_eq!(
        shown.recipients[0].delay_reason.as_deref(),
        Some("550 5.1.1 no such user")
    );
    assert!(store.complete(&claims[0]).unwrap());
    assert!(matches!(store.show(&id, T0), Err(QueueError::NotFound(_))));
}

fn hold_release_delete_flush(q: &Queue) {
    let store = q.open();
    let a = put(&*store, &envelope(&["b@example.com"]), b"a", T0).unwrap();
    let b = put(&*store, &envelope(&["c@example.com"]), b"b", T0).unwrap();
    assert!(a < b, "ids sort by arrival");

    store.hold(&a, "operator").unwrap();
    let list = store.list(T0).unwrap();
    assert_eq!(list[0].queue_name, QueueName::Hold);
    assert_eq!(list[0].hold_reason.as_deref(), Some("operator"));
    let claims = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(ids(&claims), std::slice::from_ref(&b));
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
    assert_eq!(ids(&claims), std::slice::from_ref(&b));
    store.complete(&claims[0]).unwrap();
    // Flushing a held message by id does nothing.
    assert_eq!(store.flush(std::slice::from_ref(&a), T0 + 1).unwrap(), 0);

    // b, released without a new deferral, stays due; a joins it once released.
    store.release(&a).unwrap();
    let claims = store.due(T0 + 2, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(ids(&claims), [a.clone(), b.clone()]);
    for c in &claims {
        store.complete(c).unwrap();
    }
    assert_eq!(store.flush(&[a.clone(), b.clone()], T0 + 2).unwrap(), 2);

    store.delete(&a).unwrap();
    assert!(matches!(store.delete(&a), Err(QueueError::NotFound(_))));
    assert!(matches!(store.body(&a), Err(QueueError::NotFound(_))));
    assert_eq!(store.list(T0).unwrap().len(), 1);
    assert!(matches!(store.hold(&a, "x"), Err(QueueError::NotFound(_))));
    assert!(matches!(store.release(&a), Err(QueueError::NotFound(_))));
    // Another handle (`danemta queue` on another node) sees the same queue and acts on it.
    let other = q.open();
    other.hold(&b, "from elsewhere").unwrap();
    assert_eq!(store.list(T0).unwrap()[0].queue_name, QueueName::Hold);
}

fn a_claimed_message_is_not_due_for_another_node_until_its_lease_expires(q: &Queue) {
    let (node1, node2) = (q.open(), q.open());
    put(&*node1, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let first = node1.due(T0, 10, &lease("node1", T0 + 60)).unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        node2
            .due(T0 + 59, 10, &lease("node2", T0 + 120))
            .unwrap()
            .is_empty()
    );
    let second = node2.due(T0 + 60, 10, &lease("node2", T0 + 120)).unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].token, second[0].token);
    assert_eq!(second[0].lease.owner, "node2");
    // The first claimer notices it lost the lease.
    let late = node1.record_attempt(
        &first[0],
        &[outcome("b@example.com", "delivered", "250 ok")],
        &[],
        T0,
    );
    assert!(matches!(late, Err(QueueError::LeaseLost(_))), "{late:?}");
    assert!(matches!(
        node1.complete(&first[0]),
        Err(QueueError::LeaseLost(_))
    ));
    // The second one finishes.
    node2
        .record_attempt(
            &second[0],
            &[outcome("b@example.com", "delivered", "250 ok")],
            &[],
            T0,
        )
        .unwrap();
    assert!(node2.complete(&second[0]).unwrap());
}

/// A node that stalled past its lease and comes back: every call with its old claim fails
/// with `LeaseLost`, and none of them changes the message (the new holder's work stands).
fn a_node_that_lost_its_lease_changes_nothing(q: &Queue) {
    let (stale, live) = (q.open(), q.open());
    let id = put(
        &*stale,
        &envelope(&["b@example.com", "c@example.com"]),
        b"x",
        T0,
    )
    .unwrap();
    let old = stale
        .due(T0, 1, &lease("stale", T0 + 60))
        .unwrap()
        .remove(0);
    let new = live
        .due(T0 + 61, 1, &lease("live", T0 + 600))
        .unwrap()
        .remove(0);
    let before = live.show(&id, T0 + 61).unwrap();
    assert_eq!(before.queue_name, QueueName::Active);

    let lost =
        |r: Result<(), QueueError>| matches!(r, Err(QueueError::LeaseLost(ref i)) if *i == id);
    assert!(lost(
        stale
            .record_attempt(
                &old,
                &[
                    outcome("b@example.com", "bounced", "550 no"),
                    outcome("c@example.com", "delivered", "250 ok"),
                ],
                &[attempt("verified")],
                T0 + 900,
            )
            .map(|_| ())
    ));
    assert!(lost(stale.renew(&old, T0 + 10_000).map(|_| ())));
    assert!(lost(stale.postpone(&old, T0 + 10_000)));
    assert!(lost(stale.complete(&old).map(|_| ())));
    // Nothing changed: no attempt, no history, the live lease kept.
    let after = live.show(&id, T0 + 61).unwrap();
    assert_eq!(after, before);
    assert!(after.history.is_empty());
    assert!(after.recipients.iter().all(|r| r.attempts == 0));
    assert!(
        live.due(T0 + 599, 1, &lease("third", T0 + 700))
            .unwrap()
            .is_empty(),
        "the live lease still keeps others out"
    );
    // The live holder is unaffected.
    live.record_attempt(
        &new,
        &[
            outcome("b@example.com", "delivered", "250 ok"),
            outcome("c@example.com", "delivered", "250 ok"),
        ],
        &[],
        T0 + 900,
    )
    .unwrap();
    assert!(live.complete(&new).unwrap());
}

/// A DSN as the scheduler makes one: from the null sender to the original sender.
fn notice<'a>(id: &'a QueueId, envelope: &'a Envelope, body: &'a [u8]) -> NewMessage<'a> {
    static DSN: DsnParams = DsnParams {
        ret: None,
        envid: None,
        recipients: Vec::new(),
        tls_request: smtp::TlsRequest::Default,
    };
    NewMessage {
        id,
        envelope,
        dsn: &DSN,
        body,
    }
}

fn a_finished_try_queues_its_bounce_and_ends_the_claim(q: &Queue) {
    let store = q.open();
    let id = put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let claim = store.due(T0, 1, &lease("n1", T0 + 60)).unwrap().remove(0);
    let (dsn_id, dsn_envelope) = (
        QueueId::generate(),
        Envelope::new("", ["alice@example.org"]).unwrap(),
    );
    let removed = store
        .finish_attempt(
            &claim,
            &[outcome("b@example.com", "bounced", "550 no")],
            &[attempt("verified")],
            T0 + 900,
            &[notice(&dsn_id, &dsn_envelope, b"the bounce")],
            T0 + 1,
        )
        .unwrap();
    assert!(removed, "nothing pending: the message left the queue");
    let dsn = store.show(&dsn_id, T0 + 1).unwrap();
    assert_eq!(dsn.sender, "");
    assert_eq!(dsn.recipients[0].address, "alice@example.org");
    assert_eq!(body_of(&*store, &dsn_id), b"the bounce");
    assert!(matches!(
        store.show(&id, T0 + 1),
        Err(QueueError::NotFound(_))
    ));

    // A deferred recipient: the message stays, its claim released, due at the next attempt.
    let id = put(&*store, &envelope(&["c@example.com"]), b"y", T0).unwrap();
    let claim = store.due(T0, 2, &lease("n1", T0 + 60)).unwrap();
    let claim = claim.into_iter().find(|c| c.id == id).unwrap();
    let removed = store
        .finish_attempt(
            &claim,
            &[outcome("c@example.com", "deferred", "451 later")],
            &[attempt("verified")],
            T0 + 900,
            &[],
            T0 + 1,
        )
        .unwrap();
    assert!(!removed);
    let view = store.show(&id, T0 + 1).unwrap();
    assert_eq!(view.queue_name, QueueName::Deferred);
    assert_eq!(view.recipients[0].next_attempt, T0 + 900);
    assert!(
        store
            .due(T0 + 899, 5, &lease("n2", T0 + 960))
            .unwrap()
            .iter()
            .all(|c| c.id != id)
    );
    assert_eq!(
        ids(&store.due(T0 + 900, 5, &lease("n2", T0 + 960)).unwrap()),
        vec![id]
    );
}

fn a_node_whose_message_was_finished_by_another_gets_not_found(q: &Queue) {
    let (stale, live) = (q.open(), q.open());
    put(&*stale, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let old = stale
        .due(T0, 1, &lease("stale", T0 + 60))
        .unwrap()
        .remove(0);
    let new = live
        .due(T0 + 60, 1, &lease("live", T0 + 120))
        .unwrap()
        .remove(0);
    live.record_attempt(
        &new,
        &[outcome("b@example.com", "delivered", "250 ok")],
        &[],
        T0,
    )
    .unwrap();
    assert!(live.complete(&new).unwrap());
    let r = stale.record_attempt(
        &old,
        &[outcome("b@example.com", "delivered", "250 ok")],
        &[],
        T0,
    );
    assert!(matches!(r, Err(QueueError::NotFound(_))), "{r:?}");
    assert!(matches!(stale.complete(&old), Err(QueueError::NotFound(_))));
    // An operator's delete while a worker delivers: the worker learns it the same way.
    let id = put(&*live, &envelope(&["b@example.com"]), b"y", T0).unwrap();
    let claim = live.due(T0, 1, &lease("live", T0 + 60)).unwrap().remove(0);
    stale.delete(&id).unwrap();
    assert!(matches!(
        live.record_attempt(&claim, &[], &[], T0),
        Err(QueueError::NotFound(_))
    ));
}

/// The token, not the clock, proves ownership: a lease that ran out but was not taken over
/// is still its holder's, who may record and finish.
fn an_expired_lease_nobody_took_is_still_its_holders(q: &Queue) {
    let store = q.open();
    put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let claim = store.due(T0, 1, &lease("slow", T0 + 60)).unwrap().remove(0);
    store
        .record_attempt(
            &claim,
            &[outcome("b@example.com", "delivered", "250 ok")],
            &[],
            T0 + 500,
        )
        .unwrap();
    assert!(store.complete(&claim).unwrap());
}

fn a_renewed_lease_keeps_other_claimers_out(q: &Queue) {
    let (store, other) = (q.open(), q.open());
    put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    let claim = store.due(T0, 1, &lease("slow", T0 + 60)).unwrap().remove(0);
    let claim = store.renew(&claim, T0 + 600).unwrap();
    assert_eq!(claim.lease.until, T0 + 600);
    assert_eq!(store.next_due().unwrap(), Some(T0 + 600));
    assert!(
        other
            .due(T0 + 120, 1, &lease("other", T0 + 180))
            .unwrap()
            .is_empty()
    );
    let taken = other.due(T0 + 600, 1, &lease("other", T0 + 660)).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(matches!(
        store.renew(&claim, T0 + 1200),
        Err(QueueError::LeaseLost(_))
    ));
}

fn postpone_moves_the_pending_recipients_and_counts_no_attempt(q: &Queue) {
    let store = q.open();
    let id = put(
        &*store,
        &envelope(&["b@example.com", "c@example.com"]),
        b"x",
        T0,
    )
    .unwrap();
    let claim = store.due(T0, 1, &lease("w", T0 + 60)).unwrap().remove(0);
    store.postpone(&claim, T0 + 30).unwrap();
    let shown = store.show(&id, T0).unwrap();
    assert_eq!(
        shown.queue_name,
        QueueName::Incoming,
        "no lease, no attempt"
    );
    assert!(
        shown
            .recipients
            .iter()
            .all(|r| r.attempts == 0 && r.next_attempt == T0 + 30)
    );
    assert_eq!(store.next_due().unwrap(), Some(T0 + 30));
    assert!(
        store
            .due(T0 + 29, 1, &lease("w", T0 + 90))
            .unwrap()
            .is_empty()
    );
    let again = store.due(T0 + 30, 1, &lease("w", T0 + 90)).unwrap();
    assert_eq!(ids(&again), [id]);
    // A postponed claim is over: its token no longer works.
    assert!(matches!(
        store.complete(&claim),
        Err(QueueError::LeaseLost(_))
    ));
}

fn busy_domains_do_not_make_a_message_due(q: &Queue) {
    let store = q.open();
    let a = put(&*store, &envelope(&["x@A.example"]), b"a", T0).unwrap();
    let b = put(&*store, &envelope(&["y@B.Example"]), b"b", T0).unwrap();
    let both = put(
        &*store,
        &envelope(&["z@b.example", "w@c.example"]),
        b"c",
        T0,
    )
    .unwrap();
    let busy = ["b.example".to_owned()];
    let claims = store
        .due_except(T0, 10, &lease("w", T0 + 60), &busy)
        .unwrap();
    // b waits untouched; a message with another, free destination still goes.
    assert_eq!(ids(&claims), [a, both]);
    let rest = store.due(T0, 10, &lease("w", T0 + 60)).unwrap();
    assert_eq!(ids(&rest), [b]);
}

fn due_respects_the_limit_and_takes_the_earliest_first(q: &Queue) {
    let store = q.open();
    for _ in 0..5 {
        put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    }
    assert_eq!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().len(), 3);
    assert_eq!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().len(), 2);
    assert!(store.due(T0, 3, &lease("w", T0 + 60)).unwrap().is_empty());
    assert!(store.due(T0, 0, &lease("w", T0 + 60)).unwrap().is_empty());

    for entry in store.list(T0).unwrap() {
        store.delete(&entry.queue_id).unwrap();
    }
    // Earliest due first, whatever the arrival order.
    let late = put(&*store, &envelope(&["b@example.com"]), b"l", T0 + 100).unwrap();
    let early = put(&*store, &envelope(&["b@example.com"]), b"e", T0 + 50).unwrap();
    let claims = store.due(T0 + 200, 1, &lease("w", T0 + 260)).unwrap();
    assert_eq!(ids(&claims), [early]);
    let claims = store.due(T0 + 200, 5, &lease("w", T0 + 260)).unwrap();
    assert_eq!(ids(&claims), [late]);
}

fn concurrent_claimers_never_get_the_same_message(q: &Queue) {
    let store = q.open();
    for _ in 0..60 {
        put(&*store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
    }
    // Four handles (four nodes) claiming at once.
    let nodes: Vec<Box<dyn Store>> = (0..4).map(|_| q.open()).collect();
    let claimed: Vec<Vec<QueueId>> = std::thread::scope(|s| {
        let workers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                s.spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let c = node.due(T0, 3, &lease(&format!("n{n}"), T0 + 60)).unwrap();
                        if c.is_empty() && node.next_due().unwrap() != Some(T0) {
                            break got;
                        }
                        got.extend(c.into_iter().map(|c| c.id));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<&QueueId> = claimed.iter().flatten().collect();
    let distinct: BTreeSet<&QueueId> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 60, "every message claimed");
    assert_eq!(all.len(), 60, "no message claimed twice");
}

/// Many threads accepting at once each return only when their message is stored, and every
/// one of them is (with its body) in the queue afterwards.
fn concurrent_accepts_are_all_stored(q: &Queue) {
    let store: Arc<dyn Store> = Arc::from(q.open());
    let threads: Vec<_> = (0..48)
        .map(|n| {
            let store = Arc::clone(&store);
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
    let other = q.open();
    assert_eq!(other.list(T0).unwrap().len(), 48);
    for (id, body) in stored {
        assert_eq!(body_of(&*other, &id), body.as_bytes());
    }
}

fn an_existing_id_is_refused(q: &Queue) {
    let store = q.open();
    let id = QueueId::generate();
    let first = envelope(&["b@example.com"]);
    let dsn = DsnParams::default();
    let message = |envelope, body| NewMessage {
        id: &id,
        envelope,
        dsn: &dsn,
        body,
    };
    store.accept(&message(&first, b"first"), T0).unwrap();
    let second = envelope(&["x@example.net", "y@example.net"]);
    assert!(matches!(
        store.accept(&message(&second, b"second"), T0 + 1),
        Err(QueueError::Exists(_))
    ));
    // The first is intact.
    assert_eq!(body_of(&*store, &id), b"first");
    let shown = store.show(&id, T0).unwrap();
    assert_eq!(shown.recipients.len(), 1);
    assert_eq!(shown.arrival_time, T0);
}

fn next_due_follows_recipients_holds_and_leases(q: &Queue) {
    let store = q.open();
    assert_eq!(store.next_due().unwrap(), None);
    let a = put(&*store, &envelope(&["b@example.com"]), b"a", T0 + 10).unwrap();
    let b = put(&*store, &envelope(&["b@example.com"]), b"b", T0 + 20).unwrap();
    assert_eq!(store.next_due().unwrap(), Some(T0 + 10));
    store.hold(&a, "x").unwrap();
    assert_eq!(store.next_due().unwrap(), Some(T0 + 20));
    let claim = store
        .due(T0 + 20, 1, &lease("w", T0 + 25))
        .unwrap()
        .remove(0);
    assert_eq!(claim.id, b);
    assert_eq!(store.next_due().unwrap(), Some(T0 + 25), "the lease's end");
    store.complete(&claim).unwrap();
    assert_eq!(store.next_due().unwrap(), Some(T0 + 20));
    store.delete(&b).unwrap();
    assert_eq!(store.next_due().unwrap(), None, "only a held message left");
}

fn stats_count_and_the_oldest(q: &Queue) {
    let store = q.open();
    let empty = store.stats().unwrap();
    assert_eq!((empty.messages, empty.oldest_arrival), (0, None));
    put(&*store, &envelope(&["b@example.com"]), b"a", T0 + 5).unwrap();
    put(&*store, &envelope(&["b@example.com"]), b"b", T0 + 1).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.messages, stats.oldest_arrival), (2, Some(T0 + 1)));
}

fn bodies_round_trip_byte_for_byte(q: &Queue) {
    let store = q.open();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let id = put(&*store, &envelope(&["b@example.com"]), &body, T0).unwrap();
    assert_eq!(body_of(&*q.open(), &id), body);
    assert_eq!(store.show(&id, T0).unwrap().message_size, 300_000);
    let empty = put(&*store, &envelope(&["b@example.com"]), b"", T0).unwrap();
    assert!(body_of(&*store, &empty).is_empty());
    assert!(matches!(
        store.body(&QueueId::generate()),
        Err(QueueError::NotFound(_))
    ));
}

fn the_queue_view_has_the_postqueue_field_names(q: &Queue) {
    let store = q.open();
    let id = put(&*store, &envelope(&["b@example.com"]), b"hello", T0).unwrap();
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

fn the_null_sender_is_kept(q: &Queue) {
    let store = q.open();
    let env = Envelope::new("<>", ["b@example.com"]).unwrap();
    put(&*store, &env, b"dsn", T0).unwrap();
    assert_eq!(store.list(T0).unwrap()[0].sender, "");
    assert_eq!(store.due(T0, 1, &lease("w", T0 + 1)).unwrap()[0].sender, "");
}

/// More rows than one read of the PostgreSQL scan (500): every message, once, in id order,
/// with its pending recipients only.
fn a_large_queue_is_scanned_in_order(q: &Queue) {
    let store = q.open();
    let mut queued = Vec::new();
    for _ in 0..520 {
        queued.push(
            put(
                &*store,
                &envelope(&["b@example.com", "c@example.com"]),
                b"x",
                T0,
            )
            .unwrap(),
        );
    }
    let claim = store.due(T0, 1, &lease("w", T0 + 60)).unwrap().remove(0);
    store
        .record_attempt(
            &claim,
            &[outcome("b@example.com", "delivered", "250 ok")],
            &[],
            T0,
        )
        .unwrap();
    let mut seen = Vec::new();
    store
        .scan(T0, &mut |e| {
            assert_eq!(
                e.recipients.len(),
                if e.queue_id == claim.id { 1 } else { 2 },
                "{}",
                e.queue_id
            );
            seen.push(e.queue_id);
        })
        .unwrap();
    assert_eq!(seen, queued);
}

fn the_sts_policy_cache(q: &Queue) {
    let store = q.open();
    let d: DnsName = "example.com".parse().unwrap();
    let record = |policy: &str, expires_at| StsPolicyRecord {
        policy: policy.into(),
        fetched_at: T0,
        expires_at,
    };
    assert_eq!(store.sts_policy(&d).unwrap(), None);
    store
        .put_sts_policy(&d, &record("{\"a\":1}", T0 + 60))
        .unwrap();
    store
        .put_sts_policy(&d, &record("{\"b\":2}", T0 + 120))
        .unwrap();
    // Shared: another node reads what this one cached.
    assert_eq!(
        q.open().sts_policy(&d).unwrap(),
        Some(record("{\"b\":2}", T0 + 120))
    );
    let other: DnsName = "example.net".parse().unwrap();
    store
        .put_sts_policy(&other, &record("{}", T0 + 60))
        .unwrap();
    assert_eq!(store.prune_sts_policies(T0 + 59).unwrap(), 0);
    assert_eq!(
        store.prune_sts_policies(T0 + 60).unwrap(),
        1,
        "expires_at <= now"
    );
    assert_eq!(store.sts_policy(&other).unwrap(), None);
    store.remove_sts_policy(&d).unwrap();
    store.remove_sts_policy(&d).unwrap();
    assert_eq!(store.sts_policy(&d).unwrap(), None);
}

fn tls_counters_add_up_and_reports_finish(q: &Queue) {
    let store = q.open();
    let day = 1_799_971_200; // a UTC midnight
    let d: DnsName = "example.com".parse().unwrap();
    let count = |result: Option<&str>, sessions| TlsCountRecord {
        day,
        domain: d.clone(),
        policy_type: "tlsa".into(),
        policy_strings: vec!["3 1 1 ab".into()],
        policy_mx: vec![],
        result: result.map(str::to_owned),
        receiving_mx: "mx.example.com".into(),
        sending_ip: Some("192.0.2.7".parse().unwrap()),
        receiving_ip: None,
        sessions,
    };
    store
        .add_tls_counts(&[count(None, 2), count(Some("validation-failure"), 1)])
        .unwrap();
    // Another node adds to the same counters.
    q.open()
        .add_tls_counts(&[count(None, 3), count(None, 1)])
        .unwrap();
    let mut got = store.tls_counts(&d, day).unwrap();
    got.sort_by_key(|c| c.result.clone());
    assert_eq!(got, [count(None, 6), count(Some("validation-failure"), 1)]);
    assert_eq!(
        store.tls_reports_due(day).unwrap(),
        std::slice::from_ref(&d)
    );
    store.finish_tls_report(&d, day, "sent", T0).unwrap();
    store
        .finish_tls_report(&d, day, "sent again", T0 + 1)
        .unwrap();
    assert!(store.tls_reports_due(day).unwrap().is_empty());
    assert_eq!(store.prune_tls_counts(day).unwrap(), 0);
    assert_eq!(store.prune_tls_counts(day + 86_400).unwrap(), 2);
    assert!(store.tls_counts(&d, day).unwrap().is_empty());
}

/// A store of one node is not shared: it counts no slots (the scheduler's own limit holds).
#[test]
fn a_local_store_shares_no_slots() {
    let store = local().open();
    assert!(!store.is_shared());
    assert!(store.take_connection_slot("mx.example.com", 1).is_err());
}

// ---------------------------------------------------------------------------------------
// What only the PostgreSQL store has.

mod postgres_only {
    use super::*;

    fn database(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    /// Exactly one node writes each bounce: a node whose lease was taken over queues no
    /// DSN with its refused record (the notice is in the record's transaction).
    #[test]
    fn a_node_that_lost_its_lease_queues_no_bounce() {
        let q = super::postgres();
        let (stale, live) = (q.open(), q.open());
        let id = put(&*stale, &envelope(&["b@example.com"]), b"x", T0).unwrap();
        let old = stale
            .due(T0, 1, &lease("stale", T0 + 60))
            .unwrap()
            .remove(0);
        let new = live
            .due(T0 + 61, 1, &lease("live", T0 + 600))
            .unwrap()
            .remove(0);
        let (dsn_id, dsn_envelope) = (
            QueueId::generate(),
            Envelope::new("", ["alice@example.org"]).unwrap(),
        );
        let bounced = [outcome("b@example.com", "bounced", "550 no")];
        let refused = stale.finish_attempt(
            &old,
            &bounced,
            &[],
            T0 + 900,
            &[notice(&dsn_id, &dsn_envelope, b"stale bounce")],
            T0 + 62,
        );
        assert!(matches!(refused, Err(QueueError::LeaseLost(ref i)) if *i == id));
        assert!(matches!(
            live.show(&dsn_id, T0 + 62),
            Err(QueueError::NotFound(_))
        ));
        assert_eq!(
            live.list(T0 + 62).unwrap().len(),
            1,
            "only the original is queued"
        );
        // The live holder's bounce is queued once.
        let dsn2 = QueueId::generate();
        let removed = live
            .finish_attempt(
                &new,
                &bounced,
                &[],
                T0 + 900,
                &[notice(&dsn2, &dsn_envelope, b"live bounce")],
                T0 + 62,
            )
            .unwrap();
        assert!(removed);
        let left: Vec<QueueId> = live
            .list(T0 + 62)
            .unwrap()
            .into_iter()
            .map(|e| e.queue_id)
            .collect();
        assert_eq!(left, vec![dsn2]);
    }

    /// `max_connections_per_destination` across nodes: the slots of a destination are
    /// shared by every node's handle; a node that goes away (its session ends) holds none.
    #[test]
    fn connection_slots_are_counted_across_nodes() {
        let q = super::postgres();
        let (a, b, c) = (q.open(), q.open(), q.open());
        assert!(a.is_shared());
        let take = |s: &dyn Store, d: &str| s.take_connection_slot(d, 2).unwrap();
        let a1 = take(&*a, "mx.example.com").expect("a first slot");
        let b1 = take(&*b, "mx.example.com").expect("a second slot");
        assert_eq!(
            take(&*c, "mx.example.com"),
            None,
            "two slots for three nodes"
        );
        assert_eq!(
            take(&*a, "mx.example.com"),
            None,
            "a node's own slots count too"
        );
        assert!(
            take(&*c, "other.example").is_some(),
            "another destination has its own"
        );
        a.release_connection_slot(&a1).unwrap();
        let c1 = take(&*c, "mx.example.com").expect("the slot given back");
        // b goes away (a node killed: its session ends): its slot is free for the others.
        drop(b);
        let freed = (0..100).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            take(&*a, "mx.example.com")
        });
        assert!(freed.is_some(), "a gone node's slot is freed");
        let _ = (b1, c1);
    }

    /// One node leads (sends the TLS-RPT reports) until it goes away; then another.
    #[test]
    fn one_node_leads_until_it_is_gone() {
        let q = super::postgres();
        let (a, b) = (q.open(), q.open());
        assert!(a.leads_cluster().unwrap());
        assert!(a.leads_cluster().unwrap(), "and goes on leading");
        assert!(!b.leads_cluster().unwrap(), "one leader at a time");
        drop(a);
        let took_over = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            b.leads_cluster().unwrap()
        });
        assert!(took_over, "the next node leads once the leader is gone");
    }

    /// TLS to the database (`sslmode=verify-full`): the server's certificate is checked
    /// against `sslrootcert` and its name against the URL's host. A server with a
    /// certificate of another CA (an interceptor), or for another name, is refused: the
    /// queue, bodies included, never goes to a database that could not prove who it is.
    #[test]
    fn tls_to_the_database_is_verified() {
        use danemta_lab::pki::{TestCa, TestCert};
        use danemta_lab::postgres::PostgresSpec;

        let ca = TestCa::new("queue database CA").unwrap();
        let start = |names: &[&str]| {
            Postgres::start_with(PostgresSpec {
                tls: Some(TestCert::ca_signed(names, &ca, false).unwrap()),
                ..PostgresSpec::default()
            })
            .unwrap()
        };
        let dir = TempDir::new("pg-tls");
        let roots = |name: &str, ca: &TestCa| {
            let path = dir.path().join(name);
            std::fs::write(&path, ca.cert_pem()).unwrap();
            path
        };
        let ours = roots("ours.pem", &ca);
        let theirs = roots("theirs.pem", &TestCa::new("another CA").unwrap());
        let tls = |url: &str, rootcert: &std::path::Path| {
            format!(
                "{url}?sslmode=verify-full&sslrootcert={}",
                rootcert.display()
            )
        };

        let pg = start(&["127.0.0.1"]);
        let url = pg.create_database().unwrap();
        let store = PgStore::open(&tls(&url, &ours)).unwrap();
        put(&store, &envelope(&["b@example.com"]), b"over TLS", T0).unwrap();
        let over_tls = pg
            .psql(
                database(&url),
                &format!(
                    "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE s.ssl AND a.datname = '{}'",
                    database(&url)
                ),
            )
            .unwrap();
        assert_ne!(over_tls.trim(), "0", "the store's sessions use TLS");
        drop(store);

        // The interceptor: another CA's certificate.
        let refused = PgStore::open(&tls(&url, &theirs)).unwrap_err();
        assert!(matches!(refused, QueueError::Postgres(_)), "{refused}");
        // The right CA, the wrong name.
        let elsewhere = start(&["db.example.org"]);
        let url = elsewhere.create_database().unwrap();
        let refused = PgStore::open(&tls(&url, &ours)).unwrap_err();
        assert!(matches!(refused, QueueError::Postgres(_)), "{refused}");
    }

    /// Nodes starting at the same moment migrate once; a schema from a newer build is
    /// refused.
    #[test]
    fn the_schema_is_migrated_once_and_a_newer_one_refused() {
        let url = server().create_database().unwrap();
        let stores: Vec<PgStore> = std::thread::scope(|s| {
            let opening: Vec<_> = (0..4).map(|_| s.spawn(|| PgStore::open(&url))).collect();
            opening
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        drop(stores);
        let db = database(&url);
        assert_eq!(
            server()
                .psql(db, "SELECT count(*), max(version) FROM schema_version")
                .unwrap()
                .trim(),
            "1|1"
        );
        server()
            .psql(db, "UPDATE schema_version SET version = 99")
            .unwrap();
        assert!(matches!(
            PgStore::open(&url),
            Err(QueueError::SchemaTooNew { found: 99, .. })
        ));
    }

    /// The body is in the database, with the row, not on the node's disk.
    #[test]
    fn bodies_live_in_the_database() {
        let url = server().create_database().unwrap();
        let store = PgStore::open(&url).unwrap();
        let id = put(&store, &envelope(&["b@example.com"]), b"in the db", T0).unwrap();
        let out = server()
            .psql(
                database(&url),
                &format!(
                    "SELECT convert_from(body, 'UTF8') FROM bodies WHERE message = '{}'",
                    id.as_str()
                ),
            )
            .unwrap();
        assert_eq!(out.trim(), "in the db");
    }

    /// The store is safe to call, and to drop, on tokio threads (the MTA-STS cache is read
    /// from async code; the daemon drops its store in async context).
    #[test]
    fn usable_and_droppable_inside_a_tokio_runtime() {
        let url = server().create_database().unwrap();
        for multi in [false, true] {
            let rt = if multi {
                tokio::runtime::Builder::new_multi_thread().build()
            } else {
                tokio::runtime::Builder::new_current_thread().build()
            }
            .unwrap();
            let url = url.clone();
            rt.block_on(async move {
                let store = PgStore::open(&url).unwrap();
                let d: DnsName = "example.com".parse().unwrap();
                assert!(store.sts_policy(&d).unwrap().is_none());
                put(&store, &envelope(&["b@example.com"]), b"x", T0).unwrap();
                drop(store);
            });
        }
    }

    /// A database that goes away: calls fail (never hang past the timeout, never panic)
    /// while it is down, and work again once it is back, without reopening the store.
    #[test]
    fn calls_fail_while_the_database_is_down_and_work_when_it_is_back() {
        let mut pg = Postgres::start().unwrap();
        let url = pg.create_database().unwrap();
        let store = PgStore::open(&url).unwrap();
        let id = put(&store, &envelope(&["b@example.com"]), b"before", T0).unwrap();
        pg.stop().unwrap();
        let down = put(&store, &envelope(&["b@example.com"]), b"during", T0);
        assert!(matches!(down, Err(QueueError::Postgres(_))), "{down:?}");
        assert!(matches!(store.list(T0), Err(QueueError::Postgres(_))));
        pg.restart().unwrap();
        put(&store, &envelope(&["b@example.com"]), b"after", T0).unwrap();
        let listed = store.list(T0).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].queue_id, id);
        // A crash (SIGKILL) loses nothing committed either. The server's processes die a
        // moment after the signal (a backend may still answer one call): calls fail soon.
        pg.kill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.stats().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the store still answers 10 s after the database was killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        pg.restart().unwrap();
        assert_eq!(store.stats().unwrap().messages, 2);
    }

    /// Plaintext is refused off loopback before anything is sent.
    #[test]
    fn plaintext_to_a_remote_database_is_refused() {
        assert!(matches!(
            PgStore::open("postgres://danemta@db.example.org/queue"),
            Err(QueueError::Postgres(PgError::Plaintext(_)))
        ));
    }
}
