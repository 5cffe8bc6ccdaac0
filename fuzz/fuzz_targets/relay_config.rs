//! The relay's configuration (`relay::config::Config::parse`): never panics on any text, is
//! deterministic, and every error names the file and says something.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::config::Config;
use std::path::Path;

const FILE: &str = "/etc/danemta/fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new(FILE)) {
        Ok(config) => {
            let _ = format!("{config:?}");
            // Deterministic: the same text gives the same configuration.
            let again = Config::parse(text, Path::new(FILE)).expect("parsed once, not twice");
            assert_eq!(format!("{again:?}"), format!("{config:?}"));
        }
        Err(e) => {
            let message = e.to_string();
            // "each message names the file, the key and the reason"
            assert!(message.starts_with(FILE), "{message:?}");
            assert!(message.len() > FILE.len() + 2, "{message:?}");
            let again = Config::parse(text, Path::new(FILE)).expect_err("refused once, not twice");
            assert_eq!(again.to_string(), message);
        }
    }
});
