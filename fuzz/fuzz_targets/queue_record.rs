//! The JSON records the queue stores and reads back: an attempt (`smtp::Attempt`), a
//! recipient's outcome (`smtp::outcome::RecipientOutcome`), a message's DSN parameters
//! (`relay::queue::DsnParams`) and a connection's security (`smtp::Security`). Decoding any
//! bytes never panics; whatever decodes encodes, and the encoding decodes to the same value
//! and encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::queue::DsnParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use smtp::Security;
use smtp::outcome::{Attempt, RecipientOutcome};
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let json = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(again, value, "{}", String::from_utf8_lossy(&json));
    assert_eq!(serde_json::to_vec(&again).unwrap(), json);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Attempt>(data);
    round_trip::<RecipientOutcome>(data);
    round_trip::<DsnParams>(data);
    round_trip::<Security>(data);
});
