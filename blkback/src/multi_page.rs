//! [`MultiPage`]: a ring region made of several separately granted pages.
//!
//! With `ring-page-order` = n the front-end grants 2^n pages (`ring-ref0` ..) that are
//! virtually contiguous on its side; the ring is their concatenation in grant order, with
//! the `io/ring.h` header only at the start of page 0 (`XEN-ABI.md` §4.1). The back-end maps
//! each page separately; this wrapper makes them one [`SharedPage`] of `n * 4096` bytes, so
//! [`xen_ring::BackRing`] runs over it unchanged. Entries (112 bytes) straddle page
//! boundaries; byte copies are split at them.

use alloc::vec::Vec;
use core::fmt;

use xen_ring::{SharedPage, PAGE_SIZE_BYTES};

/// Several 4096-byte pages seen as one region, in order.
pub struct MultiPage<M> {
    pages: Vec<M>,
}

/// Why pages cannot form a [`MultiPage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiPageError {
    /// No pages at all.
    NoPages,
    /// A page is not 4096 bytes.
    PageSize {
        /// Its position in the list.
        index: usize,
        /// Its size.
        size_bytes: usize,
    },
}

impl fmt::Display for MultiPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoPages => f.write_str("a ring needs at least one page"),
            Self::PageSize { index, size_bytes } => {
                write!(f, "ring page {index} has {size_bytes} bytes, not 4096")
            }
        }
    }
}

impl<M: SharedPage> MultiPage<M> {
    /// The region made of `pages`, page 0 first.
    ///
    /// # Errors
    ///
    /// [`MultiPageError`] if `pages` is empty or a page is not 4096 bytes.
    pub fn new(pages: Vec<M>) -> Result<Self, MultiPageError> {
        if pages.is_empty() {
            return Err(MultiPageError::NoPages);
        }
        for (index, page) in pages.iter().enumerate() {
            if page.size_bytes() != PAGE_SIZE_BYTES {
                return Err(MultiPageError::PageSize {
                    index,
                    size_bytes: page.size_bytes(),
                });
            }
        }
        Ok(Self { pages })
    }

    /// The pages, in order.
    pub fn pages(&self) -> &[M] {
        &self.pages
    }

    /// Gives the pages back (to unmap them).
    pub fn into_pages(self) -> Vec<M> {
        self.pages
    }

    /// Calls `access(page, offset in page, range in the caller's buffer)` for each piece of
    /// `offset .. offset + len`, split at page boundaries.
    fn pieces(&self, offset: usize, len: usize, mut access: impl FnMut(&M, usize, usize, usize)) {
        let mut done = 0;
        while done < len {
            let at = offset + done;
            let page = &self.pages[at / PAGE_SIZE_BYTES];
            let in_page = at % PAGE_SIZE_BYTES;
            let count = (PAGE_SIZE_BYTES - in_page).min(len - done);
            access(page, in_page, done, done + count);
            done += count;
        }
    }
}

impl<M: SharedPage> SharedPage for MultiPage<M> {
    fn size_bytes(&self) -> usize {
        self.pages.len() * PAGE_SIZE_BYTES
    }

    fn load_u32(&self, offset: usize) -> u32 {
        // 4-byte aligned, so never across a page boundary.
        self.pages[offset / PAGE_SIZE_BYTES].load_u32(offset % PAGE_SIZE_BYTES)
    }

    fn store_u32(&self, offset: usize, value: u32) {
        self.pages[offset / PAGE_SIZE_BYTES].store_u32(offset % PAGE_SIZE_BYTES, value)
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.pieces(offset, out.len(), |page, in_page, from, to| {
            page.read_bytes(in_page, &mut out[from..to])
        });
    }

    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.pieces(offset, data.len(), |page, in_page, from, to| {
            page.write_bytes(in_page, &data[from..to])
        });
    }

    fn fence(&self) {
        // A fence orders all of this CPU's accesses, whichever page they touch.
        self.pages[0].fence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BlkBackRing, RawRequest, Response, RwRequest, OP_READ};
    use alloc::vec;
    use xen_ring::{FrontRing, LocalPage, LocalRegion, RingEntry, Sring};

    fn pages(count: usize) -> Vec<LocalPage> {
        (0..count).map(|_| LocalPage::new()).collect()
    }

    #[test]
    fn rejects_no_pages_and_odd_sizes() {
        assert_eq!(
            MultiPage::<LocalPage>::new(Vec::new()).err(),
            Some(MultiPageError::NoPages)
        );
        let odd = vec![LocalRegion::<1024>::new(), LocalRegion::<1024>::new()];
        assert!(MultiPage::new(odd).is_ok());
        let full = LocalRegion::<1024>::new();
        let small = LocalRegion::<512>::new();
        // Different types cannot share a Vec; references to a trait object can.
        let refs: Vec<&dyn SharedPage> = vec![&full, &small];
        assert_eq!(
            MultiPage::new(refs).err(),
            Some(MultiPageError::PageSize {
                index: 1,
                size_bytes: 2048
            })
        );
    }

    #[test]
    fn bytes_cross_page_boundaries_in_order() {
        let backing = pages(3);
        let region = MultiPage::new(backing.iter().collect()).unwrap();
        assert_eq!(region.size_bytes(), 3 * 4096);
        let data: Vec<u8> = (0..200u8).collect();
        region.write_bytes(4096 - 50, &data);
        let mut tail = [0u8; 50];
        backing[0].read_bytes(4096 - 50, &mut tail);
        assert_eq!(tail[..], data[..50]);
        let mut head = [0u8; 150];
        backing[1].read_bytes(0, &mut head);
        assert_eq!(head[..], data[50..]);
        let mut back = vec![0u8; 200];
        region.read_bytes(4096 - 50, &mut back);
        assert_eq!(back, data);
        // A copy spanning a whole page and two partial ones.
        let big: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
        region.write_bytes(4000, &big);
        let mut out = vec![0u8; 5000];
        region.read_bytes(4000, &mut out);
        assert_eq!(out, big);
        let mut third = [0u8; 4];
        backing[2].read_bytes(0, &mut third);
        assert_eq!(third[..], big[4096 * 2 - 4000..4096 * 2 - 4000 + 4]);
    }

    #[test]
    fn indices_live_in_page_zero() {
        let backing = pages(2);
        let region = MultiPage::new(backing.iter().collect()).unwrap();
        region.store_u32(8, 0xabcd);
        assert_eq!(backing[0].load_u32(8), 0xabcd);
        assert_eq!(backing[1].load_u32(8), 0);
        region.store_u32(4096 + 12, 5);
        assert_eq!(backing[1].load_u32(12), 5);
        assert_eq!(region.load_u32(4096 + 12), 5);
    }

    /// A front-end on one contiguous 8 KiB region and a back-end on two separate pages
    /// that hold the same bytes agree on every slot, including the ones split across the
    /// page boundary.
    #[test]
    fn slots_match_a_contiguous_region() {
        for order in [1usize, 2] {
            let count = 1 << order;
            let backing = pages(count);
            let region = MultiPage::new(backing.iter().collect()).unwrap();
            Sring::init(&region);
            let mut front = FrontRing::<RawRequest, Response, _>::new(&region).unwrap();
            let mut back =
                BlkBackRing::new(MultiPage::new(backing.iter().collect()).unwrap()).unwrap();
            assert_eq!(back.slots(), 32 * count as u32);
            for round in 0..3u64 {
                for id in 0..u64::from(back.slots()) {
                    let request = RawRequest::Rw(RwRequest {
                        operation: OP_READ,
                        nr_segments: 1,
                        id: id + round * 1000,
                        sector_number: id * 8,
                        ..RwRequest::default()
                    });
                    front.produce_request(&request).unwrap();
                }
                let _ = front.push_requests();
                for id in 0..u64::from(back.slots()) {
                    let request = back.next_request().unwrap().unwrap();
                    assert_eq!(request.id(), id + round * 1000);
                    back.produce_response(&request.response(0)).unwrap();
                }
                let _ = back.push_responses();
                for id in 0..u64::from(back.slots()) {
                    assert_eq!(
                        front.next_response().unwrap().unwrap().id,
                        id + round * 1000
                    );
                }
            }
            // With four pages some entry straddles a page boundary (slot 72 spans 8192).
            if count == 4 {
                let straddles = (0..back.slots() as usize).any(|slot| {
                    let start = 64 + slot * RawRequest::SIZE;
                    start / 4096 != (start + RawRequest::SIZE - 1) / 4096
                });
                assert!(straddles);
            }
        }
    }
}
