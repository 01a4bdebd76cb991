//! Any text, read as a domain file: an error is fine, a panic is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = manifests::parse_domain_config(Path::new("fuzz.cfg"), &text) {
        // Formatting the message must not panic either.
        let _ = error.to_string();
    }
});
