//! The queue tests' shared helpers: envelopes, messages, leases and outcomes for any
//! [`Store`] (included by `queue.rs` and `store_suite.rs`).

use std::io::Read;

use relay::queue::{DsnParams, Lease, NewMessage, QueueError, QueueId, Store};
use smtp::outcome::RecipientOutcome;
use smtp::{Attempt, Envelope};

pub fn envelope(to: &[&str]) -> Envelope {
    Envelope::new("alice@example.org", to.iter().copied()).unwrap()
}

/// Queues `body` for `envelope` under a fresh id.
pub fn put(
    store: &dyn Store,
    envelope: &Envelope,
    body: &[u8],
    now: i64,
) -> Result<QueueId, QueueError> {
    let id = QueueId::generate();
    store.accept(
        &NewMessage {
            id: &id,
            envelope,
            dsn: &DsnParams::default(),
            body,
        },
        now,
    )?;
    Ok(id)
}

pub fn lease(owner: &str, until: i64) -> Lease {
    Lease {
        owner: owner.into(),
        until,
    }
}

pub fn outcome(address: &str, fate: &str, reply: &str) -> RecipientOutcome {
    serde_json::from_value(serde_json::json!({
        "address": address, "outcome": fate, "reply": reply,
    }))
    .unwrap()
}

pub fn attempt(security: &str) -> Attempt {
    serde_json::from_value(serde_json::json!({
        "host": "mx.example.com", "address": "192.0.2.1", "port": 25,
        "sni": "mx.example.com", "security": security, "delivered": false,
        "dane": { "state": "not-applicable", "tlsa": [] },
        "dnssec": { "mx": "insecure", "a": "insecure", "aaaa": "insecure", "tlsa": null },
        "reason": "451 4.3.0 try again later",
        "rule": "RFC 7672 §2.2", "rule_id": "dane-mandatory",
        "replies": ["451 4.3.0 try again later"],
    }))
    .unwrap()
}

pub fn body_of(store: &dyn Store, id: &QueueId) -> Vec<u8> {
    let mut v = Vec::new();
    store.body(id).unwrap().read_to_end(&mut v).unwrap();
    v
}
