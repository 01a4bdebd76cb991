//! Any text, read as a system file: an error is fine, a panic is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = manifests::parse_system_config(Path::new("fuzz/system.cfg"), &text) {
        let _ = error.to_string();
    }
});
