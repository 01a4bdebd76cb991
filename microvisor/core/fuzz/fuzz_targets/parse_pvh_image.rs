//! Fuzz target: `parse_pvh_image` must never panic, and what it accepts must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor_core::image::{parse_pvh_image, MIN_LOAD_PADDR};

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the RAM size, the rest is the image.
    let (ram_bytes, image) = match data.split_first_chunk::<8>() {
        Some((ram, image)) => (u64::from_le_bytes(*ram), image),
        None => (64 << 20, data),
    };
    if let Ok(parsed) = parse_pvh_image(image, ram_bytes) {
        for segment in &parsed.segments {
            assert!(segment.paddr >= MIN_LOAD_PADDR);
            assert!(segment.paddr + segment.mem_bytes <= ram_bytes);
            assert!(segment.file_bytes <= segment.mem_bytes);
            assert!(segment.file_offset + segment.file_bytes <= image.len() as u64);
        }
    }
});
