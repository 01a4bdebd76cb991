//! The response journal: what a back-end that restarts needs to resume a ring exactly.
//!
//! A response is written over the slot of the request it answers, and only published later
//! (`rsp_prod`). A back-end that dies between the two leaves slots whose request is gone but
//! whose response the front-end never saw. A new instance of the back-end, which remembers
//! nothing, could then neither answer those requests nor know they were there.
//!
//! So before a response overwrites a slot, the back-end saves the bytes it will overwrite
//! (the response's size, from the slot's start) in the spare bytes after the last slot of
//! the ring region, which no front-end uses (a ring's slot count is rounded down to a power
//! of two, so a blkif page keeps 448 spare bytes, a netif tx page 960, an rx page 1984).
//!
//! | offset in the spare area | bytes | field |
//! |---|---|---|
//! | 0 | 4 | [`JOURNAL_MAGIC`], written when the back-end attaches |
//! | 4 | 4 | `start & 0xff_ffff` (index of the batch's first response) and `count << 24` |
//! | 8 | `count * entry` | the saved bytes of slots `start .. start + count`, in order |
//!
//! The header is one `u32` store, made after the bytes it covers and before the response is
//! written, so a back-end killed at any instruction leaves a journal that covers every slot
//! it overwrote and did not publish. A batch begins at the published `rsp_prod`; publishing
//! ends it.
//!
//! To resume ([`crate::BackRing::resume`]), the new instance reads `rsp_prod`, puts the saved
//! bytes back into every journaled slot at or after it, and starts consuming at `rsp_prod`:
//! every request in `rsp_prod .. req_prod` is in its slot again, answered or not. This is
//! exact only if responses are produced in request order (response `i` answers request `i`);
//! a back-end that completes out of order must reorder before producing.
//!
//! The front-end can write the spare area too; all it can do is hand the back-end different
//! request bytes for its own unanswered slots, which it can do anyway. The back-end validates
//! every request it takes, resumed or not.

use crate::layout::RingLayout;
use crate::shared_page::SharedPage;

/// Marks a spare area a back-end journals into: "RJN1".
pub const JOURNAL_MAGIC: u32 = 0x314e_4a52;
/// Bytes before the saved entries.
const HEADER_BYTES: usize = 8;
/// The most entries one batch holds (the count is 8 bits).
const MAX_ENTRIES: usize = 255;
/// The index bits the header keeps.
const START_MASK: u32 = 0x00ff_ffff;

/// A journal in the spare area of one ring region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journal {
    offset: usize,
    entry_bytes: usize,
    capacity: usize,
    start: u32,
    count: usize,
}

impl Journal {
    /// The journal of a region of `region_bytes` with `layout`, saving `entry_bytes` per
    /// slot; `None` if the spare area holds no entry.
    pub fn new(layout: &RingLayout, region_bytes: usize, entry_bytes: usize) -> Option<Self> {
        let offset = (layout.slot_offset(0) + layout.slots() as usize * layout.slot_bytes())
            .next_multiple_of(4);
        let stride = entry_bytes.next_multiple_of(4);
        let room = region_bytes.checked_sub(offset + HEADER_BYTES)?;
        let capacity = (room / stride).min(MAX_ENTRIES);
        (capacity > 0).then_some(Self {
            offset,
            entry_bytes,
            capacity,
            start: 0,
            count: 0,
        })
    }

    /// How many responses one batch may hold before it must be published.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the open batch is full.
    pub fn is_full(&self) -> bool {
        self.count == self.capacity
    }

    /// Marks the area as a journal with an empty batch at `index`.
    pub fn open<M: SharedPage>(&mut self, page: &M, index: u32) {
        self.start = index;
        self.count = 0;
        page.store_u32(self.offset + 4, index & START_MASK);
        page.store_u32(self.offset, JOURNAL_MAGIC);
        page.fence();
    }

    /// Saves the bytes of slot `index` that a response is about to overwrite. `index` is
    /// the next response's: `start + count`, a new batch starting when the last one was
    /// published.
    pub fn save<M: SharedPage>(&mut self, page: &M, layout: &RingLayout, index: u32) {
        if self.count == 0 {
            self.start = index;
        }
        debug_assert_eq!(index, self.start.wrapping_add(self.count as u32));
        let mut bytes = [0u8; crate::entry::MAX_ENTRY_BYTES];
        let bytes = &mut bytes[..self.entry_bytes];
        page.read_bytes(layout.slot_offset(index), bytes);
        page.write_bytes(self.entry_offset(self.count), bytes);
        self.count += 1;
        page.store_u32(
            self.offset + 4,
            (self.start & START_MASK) | ((self.count as u32) << 24),
        );
        // The saved bytes and the header are in memory before the response goes over them.
        page.fence();
    }

    /// The batch was published.
    pub fn published(&mut self) {
        self.count = 0;
    }

    /// After a restart: puts the saved bytes of every journaled slot at or after `rsp_prod`
    /// back. Returns how many slots were restored (0 without a valid journal).
    pub fn restore<M: SharedPage>(&self, page: &M, layout: &RingLayout, rsp_prod: u32) -> u32 {
        if page.load_u32(self.offset) != JOURNAL_MAGIC {
            return 0;
        }
        let header = page.load_u32(self.offset + 4);
        let count = (header >> 24) as usize;
        // The batch began at or before rsp_prod, within 2^24 indices of it.
        let behind = rsp_prod.wrapping_sub(header) & START_MASK;
        let start = rsp_prod.wrapping_sub(behind);
        let count = count.min(self.capacity);
        let mut restored = 0;
        for k in (behind as usize)..count {
            let mut bytes = [0u8; crate::entry::MAX_ENTRY_BYTES];
            let bytes = &mut bytes[..self.entry_bytes];
            page.read_bytes(self.entry_offset(k), bytes);
            page.write_bytes(layout.slot_offset(start.wrapping_add(k as u32)), bytes);
            restored += 1;
        }
        page.fence();
        restored
    }

    fn entry_offset(&self, k: usize) -> usize {
        self.offset + HEADER_BYTES + k * self.entry_bytes.next_multiple_of(4)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{BackRing, FrontRing, LocalPage, RingEntry, SharedPage, Sring};

    /// A blkif-shaped request: 112 bytes, so 32 slots and 448 spare bytes in a page.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Req {
        id: u64,
        fill: u8,
    }
    impl RingEntry for Req {
        const SIZE: usize = 112;
        fn encode(&self, out: &mut [u8]) {
            out[8..16].copy_from_slice(&self.id.to_le_bytes());
            out[16..112].fill(self.fill);
            out[0] = 0xaa;
        }
        fn decode(bytes: &[u8]) -> Self {
            let mut id = [0u8; 8];
            id.copy_from_slice(&bytes[8..16]);
            let fill = bytes[16];
            let intact = bytes[0] == 0xaa && bytes[16..112].iter().all(|&b| b == fill);
            Self {
                id: u64::from_le_bytes(id),
                fill: if intact { fill } else { 0xff },
            }
        }
    }
    /// A blkif-shaped response: 16 bytes over the request's first 16.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Rsp {
        id: u64,
    }
    impl RingEntry for Rsp {
        const SIZE: usize = 16;
        fn encode(&self, out: &mut [u8]) {
            out[0..8].copy_from_slice(&self.id.to_le_bytes());
            out[8..16].fill(0x55);
        }
        fn decode(bytes: &[u8]) -> Self {
            let mut id = [0u8; 8];
            id.copy_from_slice(&bytes[0..8]);
            Self {
                id: u64::from_le_bytes(id),
            }
        }
    }

    fn request(id: u64) -> Req {
        Req {
            id,
            fill: (id % 200) as u8 + 1,
        }
    }

    /// A back-end dies after producing `produced` responses of which the first `pushed` were
    /// published (responses in request order); a new instance resumes. Every request is
    /// answered exactly once in all, each taken again intact when it was not answered.
    fn die_and_resume(outstanding: u64, produced: u64, pushed: u64, base: u32) {
        let page = LocalPage::new();
        Sring::init_at(&page, base);
        let mut front: FrontRing<Req, Rsp, _> = FrontRing::attach(&page, base).unwrap();
        // A ring an earlier instance left at `base` (nothing outstanding): resume there.
        let (mut back, _) = BackRing::<Req, Rsp, _>::resume(&page).unwrap();
        for id in 0..outstanding {
            front.produce_request(&request(id)).unwrap();
        }
        let _ = front.push_requests();
        let mut taken = alloc_vec();
        while let Some(req) = back.next_request().unwrap() {
            taken.push(req);
        }
        assert_eq!(taken.len() as u64, outstanding);
        for (n, req) in taken.iter().enumerate().take(produced as usize) {
            back.produce_response(&Rsp { id: req.id }).unwrap();
            if n as u64 + 1 == pushed {
                let _ = back.push_responses();
            }
        }
        drop(back);
        // The front-end sees only what was published.
        let mut answered = alloc_vec();
        while let Some(rsp) = front.next_response().unwrap() {
            answered.push(rsp.id);
        }
        let (mut back, _restored) = BackRing::<Req, Rsp, _>::resume(&page).unwrap();
        let mut again = alloc_vec();
        while let Some(req) = back.next_request().unwrap() {
            assert_eq!(req, request(req.id), "request {} not intact", req.id);
            again.push(req.id);
        }
        for id in &again {
            back.produce_response(&Rsp { id: *id }).unwrap();
        }
        let _ = back.push_responses();
        while let Some(rsp) = front.next_response().unwrap() {
            answered.push(rsp.id);
        }
        let expected: std::vec::Vec<u64> = (0..outstanding).collect();
        assert_eq!(
            answered, expected,
            "outstanding {outstanding} produced {produced} pushed {pushed}"
        );
    }

    fn alloc_vec<T>() -> std::vec::Vec<T> {
        std::vec::Vec::new()
    }

    #[test]
    fn a_back_end_killed_anywhere_loses_and_repeats_nothing() {
        for base in [0u32, 30, u32::MAX - 3] {
            for outstanding in [1u64, 5, 27, 28, 32] {
                for produced in 0..=outstanding {
                    for pushed in 0..=produced {
                        die_and_resume(outstanding, produced, pushed, base);
                    }
                }
            }
        }
    }

    #[test]
    fn a_full_batch_is_published_and_its_event_owed() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front: FrontRing<Req, Rsp, _> = FrontRing::new(&page).unwrap();
        let mut back: BackRing<Req, Rsp, _> = BackRing::journaled(&page).unwrap();
        for id in 0..32 {
            front.produce_request(&request(id)).unwrap();
        }
        let _ = front.push_requests();
        // The front-end waits for the first response.
        assert!(!front.final_check_for_responses().unwrap());
        while back.next_request().unwrap().is_some() {}
        for id in 0..32 {
            back.produce_response(&Rsp { id }).unwrap();
        }
        // 27 fit a blkif page's journal: the 28th forced a publish, which wanted an event.
        assert_eq!(page.load_u32(crate::layout::RSP_PROD_OFFSET), 27);
        assert!(back.push_responses());
        assert_eq!(page.load_u32(crate::layout::RSP_PROD_OFFSET), 32);
    }

    #[test]
    fn spare_room_of_the_xen_rings() {
        use crate::layout::RingLayout;
        let journal = |req: usize, rsp: usize, pages: usize| {
            let layout = RingLayout::new(4096 * pages, req, rsp).unwrap();
            super::Journal::new(&layout, 4096 * pages, rsp).map_or(0, |j| j.capacity())
        };
        assert_eq!(journal(112, 16, 1), 27); // blkif
        assert_eq!(journal(112, 16, 2), 59);
        assert_eq!(journal(12, 4, 1), 238); // netif tx
        assert_eq!(journal(8, 8, 1), 247); // netif rx
    }
}
