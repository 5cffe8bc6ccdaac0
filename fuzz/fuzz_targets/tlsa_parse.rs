//! TLSA parsing, both forms: never panics, and whatever parses round-trips through the
//! presentation form (`Display` / `FromStr`) and the wire form (`to_rdata` / `from_rdata`).

#![no_main]

use dane::Tlsa;
use libfuzzer_sys::fuzz_target;

fn assert_round_trips(t: &Tlsa) {
    let text = t.to_string();
    assert_eq!(
        text.parse::<Tlsa>().as_ref(),
        Ok(t),
        "display form {text:?}"
    );
    let wire = t.to_rdata();
    assert_eq!(
        Tlsa::from_rdata(&wire).as_ref(),
        Ok(t),
        "wire form {wire:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tlsa::from_rdata(data) {
        assert_eq!(t.to_rdata(), data, "wire form is not reproduced");
        assert_round_trips(&t);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = text.parse::<Tlsa>() {
            assert_round_trips(&t);
        }
    }
});
