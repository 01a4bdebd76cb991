//! Fuzz target: the input plays a hostile front-end (arbitrary index and slot writes, at any
//! moment) against a `BackRing` consumer. The back-end must never panic, never access
//! memory outside the region (the region panics if it does), and its own accounting must
//! stay within the ring whatever it reads.
//!
//! The back-end journals its responses and may die at any step: a new instance then
//! resumes the ring ([`BackRing::resume`]) from whatever the region holds, including a
//! journal the front-end scribbled over.
//!
//! Input: byte 0 picks the ring shape, bytes 1..5 the starting index, the rest is a script
//! of one-byte opcodes with their operands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_ring::layout::REQ_PROD_OFFSET;
use xen_ring::test_entries::Message;
use xen_ring::{BackRing, LocalPage, LocalRegion, RingEntry, SharedPage, Sring};

/// A 12-byte entry, so slots straddle 4-byte words.
struct Odd([u8; 12]);

impl RingEntry for Odd {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut copy = [0; 12];
        copy.copy_from_slice(bytes);
        Self(copy)
    }
}

/// A 3-byte entry.
struct Tiny([u8; 3]);

impl RingEntry for Tiny {
    const SIZE: usize = 3;
    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Self {
        Self([bytes[0], bytes[1], bytes[2]])
    }
}

/// Reads operands off the script; a short script reads as zeros.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn run<Req: RingEntry, Rsp: RingEntry, M: SharedPage>(
    page: &M,
    start: u32,
    mut script: Script<'_>,
    response: impl Fn(u8) -> Rsp,
) {
    Sring::init_at(page, start);
    // A fresh ring at `start`: resuming it is attaching there, journaled.
    let (mut back, restored) = BackRing::<Req, Rsp, _>::resume(page).unwrap();
    assert_eq!(restored, 0);
    let size_bytes = page.size_bytes();
    let mut base = start;
    let mut consumed: u64 = 0;
    while !script.is_empty() {
        match script.byte() % 10 {
            // The front-end writes an index word (or any header word).
            0 => {
                let word = usize::from(script.byte() % 16);
                page.store_u32(word * 4, script.u32());
            }
            // The front-end writes arbitrary bytes anywhere in the region.
            1 => {
                let offset = usize::from(script.u16()) % size_bytes;
                let count = usize::from(script.byte()).min(size_bytes - offset);
                let mut bytes = [0u8; 256];
                for byte in &mut bytes[..count] {
                    *byte = script.byte();
                }
                page.write_bytes(offset, &bytes[..count]);
            }
            // The front-end moves req_prod by a small step, forwards or backwards.
            2 => {
                let step = i32::from(script.byte() as i8);
                let req_prod = page.load_u32(REQ_PROD_OFFSET);
                page.store_u32(REQ_PROD_OFFSET, req_prod.wrapping_add_signed(step));
            }
            3 | 4 => {
                if let Ok(Some(_)) = back.next_request() {
                    consumed += 1;
                }
            }
            5 => {
                let _ = back.produce_response(&response(script.byte()));
            }
            6 => {
                let _ = back.push_responses();
            }
            7 => {
                let _ = back.final_check_for_requests();
            }
            // The back-end dies here; a new instance takes the ring over.
            8 => {
                if let Ok((resumed, restored)) = BackRing::<Req, Rsp, _>::resume(page) {
                    assert!(restored <= resumed.slots().max(255));
                    back = resumed;
                    base = back.req_cons();
                    consumed = 0;
                }
            }
            _ => {
                let _ = back.unconsumed_requests();
            }
        }
        let slots = back.slots();
        assert!(back.unanswered_requests() <= slots);
        if let Ok(count) = back.unconsumed_requests() {
            assert!(count + back.unanswered_requests() <= slots);
        }
        assert_eq!(
            u64::from(back.req_cons().wrapping_sub(base)),
            consumed % (1 << 32)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let shape = script.byte();
    let start = script.u32();
    match shape % 3 {
        0 => run::<Message, Message, _>(&LocalPage::new(), start, script, |byte| {
            Message::new(u64::from(byte), &[byte]).unwrap()
        }),
        1 => run::<Odd, Tiny, _>(&LocalRegion::<32>::new(), start, script, |byte| {
            Tiny([byte; 3])
        }),
        _ => run::<Tiny, Tiny, _>(&LocalRegion::<17>::new(), start, script, |byte| {
            Tiny([byte; 3])
        }),
    }
});
