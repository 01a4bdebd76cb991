//! A front-end's tx ring contents, arbitrary, parsed frame after frame as netback will, and
//! every frame that passes sent through the bridge from a vif.
//!
//! Nothing may panic; every accepted frame's pieces lie within their pages and add up to
//! its length, with one response per slot; the bridge never forwards a frame whose source
//! is not the vif's own address. The raw bytes also go through the checksum completion
//! a frame marked `csum_blank` gets: it never panics, and a completed frame verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::bridge::{Bridge, Forward};
use netback::mac::Mac;
use netback::tx::{parse, Parsed};
use netback::wire::{TxRequest, PAGE_BYTES, TX_SLOT_BYTES};
use xen_ring::RingEntry;

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    if netback::csum::complete(&mut frame).is_ok() {
        assert_eq!(netback::csum::verify(&frame), Some(true));
    }
    let slots: Vec<TxRequest> = data
        .chunks_exact(TX_SLOT_BYTES)
        .map(TxRequest::decode)
        .collect();
    let mut bridge = Bridge::new();
    let _uplink = bridge.add_uplink();
    let own = Mac::for_domain("guest", 0);
    let vif = bridge.add_vif(own);
    bridge.set_up(vif, true);
    let mut at = 0;
    while at < slots.len() {
        match parse(&slots[at..]) {
            Ok(Parsed::Frame { frame, slots: n }) => {
                assert!(n >= 1 && frame.responses.len() == n);
                let total: u32 = frame.pieces.iter().map(|p| u32::from(p.len)).sum();
                assert_eq!(total, u32::from(frame.len));
                for piece in &frame.pieces {
                    assert!(usize::from(piece.offset) + usize::from(piece.len) <= PAGE_BYTES);
                }
                // The frame's bytes: here, the slot bytes themselves stand in for page data.
                let bytes: Vec<u8> = data.iter().copied().cycle().skip(at).take(usize::from(frame.len).min(256)).collect();
                if let Forward::To(_) = bridge.forward(vif, &bytes) {
                    assert_eq!(Mac::source(&bytes), Some(own));
                }
                at += n;
            }
            Ok(Parsed::Dropped { responses, slots: n, .. }) => {
                assert!(n >= 1 && responses.len() == n);
                at += n;
            }
            Ok(Parsed::Incomplete) | Err(_) => break,
        }
    }
});
