//! Where the indices and slots sit in a shared ring region (the `x86_64` `io/ring.h` layout).
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | `req_prod`: requests published by the front-end |
//! | 4 | 4 | `req_event`: the back-end wants an event when `req_prod` reaches this |
//! | 8 | 4 | `rsp_prod`: responses published by the back-end |
//! | 12 | 4 | `rsp_event`: the front-end wants an event when `rsp_prod` reaches this |
//! | 16 | 48 | a 4-byte per-protocol field (`pvt`) and padding; zeroed by [`crate::Sring::init`] |
//! | 64 | `slots * slot_bytes` | the slots; each holds a request or the response to it |
//!
//! `slot_bytes = max(request size, response size)`, and `slots` is the largest power of two
//! with `64 + slots * slot_bytes <= region size` (Xen rounds the ring size down the same
//! way). Indices are little-endian `u32`s. Index `i` lives in slot `i & (slots - 1)`.

use crate::error::LayoutError;
use crate::MAX_ENTRY_BYTES;

/// The size of a one-page ring.
pub const PAGE_SIZE_BYTES: usize = 4096;
/// Offset of `req_prod`.
pub const REQ_PROD_OFFSET: usize = 0;
/// Offset of `req_event`.
pub const REQ_EVENT_OFFSET: usize = 4;
/// Offset of `rsp_prod`.
pub const RSP_PROD_OFFSET: usize = 8;
/// Offset of `rsp_event`.
pub const RSP_EVENT_OFFSET: usize = 12;
/// Offset of the first slot.
pub const ENTRIES_OFFSET: usize = 64;
/// The most slots a ring may have: index differences up to this still fit a `u32`.
pub const MAX_SLOTS: u32 = 1 << 31;

/// The shape of one ring: how many slots, and how big each is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    slots: u32,
    slot_bytes: usize,
}

impl RingLayout {
    /// The layout for entries of the given sizes in a region of `region_bytes`.
    ///
    /// # Errors
    ///
    /// [`LayoutError::EmptyEntry`] if both sizes are 0, [`LayoutError::EntryTooLarge`] past
    /// [`MAX_ENTRY_BYTES`], [`LayoutError::RegionTooSmall`] if not one slot fits.
    pub const fn new(
        region_bytes: usize,
        request_bytes: usize,
        response_bytes: usize,
    ) -> Result<Self, LayoutError> {
        let slot_bytes = if request_bytes > response_bytes {
            request_bytes
        } else {
            response_bytes
        };
        if slot_bytes == 0 {
            return Err(LayoutError::EmptyEntry);
        }
        if slot_bytes > MAX_ENTRY_BYTES {
            return Err(LayoutError::EntryTooLarge {
                entry_bytes: slot_bytes,
            });
        }
        let slots = ring_slots(region_bytes, slot_bytes);
        if slots == 0 {
            return Err(LayoutError::RegionTooSmall {
                region_bytes,
                slot_bytes,
            });
        }
        Ok(Self { slots, slot_bytes })
    }

    /// The number of slots, a power of two.
    pub const fn slots(&self) -> u32 {
        self.slots
    }

    /// The size of one slot.
    pub const fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// The region offset of the slot that index `index` lives in.
    pub const fn slot_offset(&self, index: u32) -> usize {
        let slot = (index & (self.slots - 1)) as usize;
        ENTRIES_OFFSET + slot * self.slot_bytes
    }
}

/// The number of `slot_bytes`-sized slots a ring in `region_bytes` has: the largest power
/// of two that fits after the header (at most [`MAX_SLOTS`]), or 0 if none fits.
pub const fn ring_slots(region_bytes: usize, slot_bytes: usize) -> u32 {
    if slot_bytes == 0 || region_bytes < ENTRIES_OFFSET {
        return 0;
    }
    let fitting = (region_bytes - ENTRIES_OFFSET) / slot_bytes;
    if fitting == 0 {
        return 0;
    }
    if fitting >= MAX_SLOTS as usize {
        return MAX_SLOTS;
    }
    // `fitting < 2^31`, so the cast is exact and the power of two is below 2^31.
    let fitting = fitting as u32;
    1 << (u32::BITS - 1 - fitting.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_match_the_xen_protocols() {
        // blkif: 112-byte request, 16-byte response.
        assert_eq!(ring_slots(PAGE_SIZE_BYTES, 112), 32);
        // netif tx: 12-byte request, 4-byte response.
        assert_eq!(
            RingLayout::new(PAGE_SIZE_BYTES, 12, 4).unwrap().slots(),
            256
        );
        // netif rx: 8-byte request and response.
        assert_eq!(RingLayout::new(PAGE_SIZE_BYTES, 8, 8).unwrap().slots(), 256);
        // a 64-byte message: 63 would fit, rounded down to 32.
        assert_eq!(ring_slots(PAGE_SIZE_BYTES, 64), 32);
        // one byte entries: 4032 fit, rounded down to 2048.
        assert_eq!(ring_slots(PAGE_SIZE_BYTES, 1), 2048);
    }

    #[test]
    fn slots_fit_the_region_and_double_would_not() {
        for slot_bytes in 1..=MAX_ENTRY_BYTES {
            for region_bytes in [64 + slot_bytes, 100, 4096, 8192, 3 * 4096] {
                let slots = ring_slots(region_bytes, slot_bytes) as usize;
                if slots == 0 {
                    assert!(region_bytes < 64 + slot_bytes);
                    continue;
                }
                assert!(slots.is_power_of_two());
                assert!(64 + slots * slot_bytes <= region_bytes);
                assert!(64 + 2 * slots * slot_bytes > region_bytes);
            }
        }
    }

    #[test]
    fn slot_size_is_the_larger_entry() {
        let layout = RingLayout::new(PAGE_SIZE_BYTES, 16, 112).unwrap();
        assert_eq!(layout.slot_bytes(), 112);
        assert_eq!(layout.slots(), 32);
    }

    #[test]
    fn bad_layouts_are_errors() {
        assert_eq!(RingLayout::new(4096, 0, 0), Err(LayoutError::EmptyEntry));
        assert_eq!(
            RingLayout::new(4096, MAX_ENTRY_BYTES + 1, 8),
            Err(LayoutError::EntryTooLarge {
                entry_bytes: MAX_ENTRY_BYTES + 1
            })
        );
        assert_eq!(
            RingLayout::new(64 + 15, 16, 8),
            Err(LayoutError::RegionTooSmall {
                region_bytes: 79,
                slot_bytes: 16
            })
        );
        assert_eq!(
            RingLayout::new(10, 4, 4),
            Err(LayoutError::RegionTooSmall {
                region_bytes: 10,
                slot_bytes: 4
            })
        );
        assert_eq!(RingLayout::new(64 + 16, 16, 8).unwrap().slots(), 1);
    }

    #[test]
    fn huge_regions_cap_the_slot_count() {
        assert_eq!(ring_slots(usize::MAX, 1), MAX_SLOTS);
        assert_eq!(ring_slots(64 + (1 << 31) - 1, 1), 1 << 30);
    }

    #[test]
    fn slot_offsets_mask_the_free_running_index() {
        let layout = RingLayout::new(PAGE_SIZE_BYTES, 64, 64).unwrap();
        assert_eq!(layout.slot_offset(0), 64);
        assert_eq!(layout.slot_offset(1), 128);
        assert_eq!(layout.slot_offset(31), 64 + 31 * 64);
        assert_eq!(layout.slot_offset(32), 64);
        assert_eq!(layout.slot_offset(u32::MAX), 64 + 31 * 64);
        for index in [0, 7, 1000, u32::MAX - 3, u32::MAX] {
            assert!(layout.slot_offset(index) + 64 <= PAGE_SIZE_BYTES);
        }
    }
}
