//! A front-end fills the ring with arbitrary request entries (and arbitrary granted pages,
//! some used as indirect segment pages), in batches, and the engine serves them while the
//! simulated device finishes the requests on it in an order the input picks.
//!
//! Whatever arrives, the engine must not panic; it answers only requests it took, each
//! with the id of a request still unanswered, at most once; it never touches the disk
//! outside the vbd's slice and never writes a read-only vbd; once it cuts the queue off it
//! answers nothing more.
#![no_main]

use blkback::engine::Queue;
use blkback::request::Limits;
use blkback::sim::{front_ring, SimPlatform};
use blkback::slots::Slot;
use blkback::vbd::Vbd;
use blkback::wire::{BlkBackRing, RawRequest, REQUEST_BYTES, SECTOR_BYTES};
use libfuzzer_sys::fuzz_target;
use xen_ring::{LocalPage, RingEntry};

const DISK_SECTORS: u64 = 512;
const SLICE_START: u64 = 128;
const SLICE_SECTORS: u64 = 64;

/// Takes the next `n` bytes of input (zero-padded at the end).
fn take(input: &mut &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let count = n.min(input.len());
    out[..count].copy_from_slice(&input[..count]);
    *input = &input[count..];
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let head = take(&mut input, 4);
    let read_only = head[0] & 1 != 0;
    let max_indirect = u16::from_le_bytes([head[1], head[2]]) % 600;
    let Ok(limits) = Limits::new(max_indirect) else {
        return;
    };
    let vbd = Vbd::slice(DISK_SECTORS, SLICE_START, SLICE_SECTORS, read_only).expect("slice fits");
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = Queue::new(BlkBackRing::new(&page).expect("ring fits"), vbd, limits);
    let mut sim = SimPlatform::new(DISK_SECTORS, &limits);
    // A recognisable disk, so any write shows.
    for (index, byte) in sim.disk.iter_mut().enumerate() {
        *byte = (index / SECTOR_BYTES) as u8 ^ 0x5a;
    }
    let before = sim.disk.clone();
    // Granted pages 1..=(head[3] % 8): arbitrary contents (segments for indirect requests).
    for gref in 1..=u32::from(head[3] % 8) {
        let contents = take(&mut input, 4096);
        sim.grant(gref, 0);
        sim.grants.get_mut(&gref).expect("granted").copy_from_slice(&contents);
    }

    let mut sent: Vec<u64> = Vec::new();
    // Ids sent and not yet answered (a multiset: a front-end may send an id twice).
    let mut unanswered: Vec<u64> = Vec::new();
    let mut answered = 0usize;
    let mut cut_off = false;
    while !input.is_empty() {
        let batch = usize::from(take(&mut input, 1)[0] % 8) + 1;
        for _ in 0..batch {
            let bytes = take(&mut input, REQUEST_BYTES);
            let request = RawRequest::decode(&bytes);
            if front.produce_request(&request).is_err() {
                break;
            }
            sent.push(request.id());
            unanswered.push(request.id());
        }
        let _ = front.push_requests();
        if cut_off {
            continue;
        }
        if queue.service(&mut sim).is_err() {
            cut_off = true;
        }
        // The device finishes some of what it has, in an order the input picks.
        let finish = usize::from(take(&mut input, 1)[0]);
        for _ in 0..finish % 8 {
            if cut_off || sim.device.is_empty() {
                break;
            }
            let pick = usize::from(take(&mut input, 1)[0]) % sim.device.len();
            let slot: Slot = sim.on_device()[pick];
            let done = sim.finish(slot);
            if queue.complete(&[done], &mut sim).is_err() || queue.progress(&mut sim).is_err() {
                cut_off = true;
            }
        }
        // Responses only for requests taken and unanswered, each once.
        while let Some(response) = front.next_response().expect("the engine keeps the ring sane") {
            assert!(answered < sent.len(), "a response nobody asked for");
            let at = unanswered
                .iter()
                .position(|id| *id == response.id)
                .expect("a response with the id of an unanswered request");
            unanswered.swap_remove(at);
            answered += 1;
        }
        if cut_off {
            // Nothing more is answered once the queue is cut off.
            assert!(queue.counters().requests >= answered as u64);
        }
    }
    let start = (SLICE_START as usize) * SECTOR_BYTES;
    let end = ((SLICE_START + SLICE_SECTORS) as usize) * SECTOR_BYTES;
    assert_eq!(&sim.disk[..start], &before[..start], "written before the slice");
    assert_eq!(&sim.disk[end..], &before[end..], "written after the slice");
    if read_only {
        assert_eq!(sim.disk, before, "a read-only vbd was written");
    }
});
