//! The [`SharedPage`] trait: how the rings read and write the region they share with a peer.
//!
//! The rings never hold a reference into the region. They call these methods with offsets
//! they computed from a validated [`crate::RingLayout`], so every access is in range and
//! index accesses are 4-byte aligned. An implementation over a granted page uses atomic or
//! volatile accesses (the peer writes concurrently); [`crate::LocalRegion`] is the one for
//! host tests.
//!
//! # Ordering contract
//!
//! | method | ordering |
//! |---|---|
//! | [`SharedPage::load_u32`] | acquire: later reads of the region see what the peer wrote before its matching release store |
//! | [`SharedPage::store_u32`] | release: earlier writes to the region are visible to a peer that acquire-loads this value |
//! | [`SharedPage::read_bytes`] / [`SharedPage::write_bytes`] | no ordering of their own (relaxed, byte- or word-wise, never torn beyond a byte) |
//! | [`SharedPage::fence`] | full (sequentially consistent) barrier: orders earlier stores before later loads |

/// Memory shared with a peer domain, accessed by offset.
///
/// Offsets and lengths passed by the rings are always within [`SharedPage::size_bytes`];
/// an implementation may panic on anything else (it would be a bug in this crate).
pub trait SharedPage {
    /// The size of the region in bytes.
    fn size_bytes(&self) -> usize;
    /// Reads the little-endian `u32` at `offset` (4-byte aligned) with acquire ordering.
    fn load_u32(&self, offset: usize) -> u32;
    /// Writes the little-endian `u32` at `offset` (4-byte aligned) with release ordering.
    fn store_u32(&self, offset: usize, value: u32);
    /// Copies `out.len()` bytes starting at `offset` out of the region.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `data` into the region starting at `offset`.
    fn write_bytes(&self, offset: usize, data: &[u8]);
    /// A full memory barrier.
    fn fence(&self);
}

impl<T: SharedPage + ?Sized> SharedPage for &T {
    fn size_bytes(&self) -> usize {
        (**self).size_bytes()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        (**self).load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        (**self).store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        (**self).read_bytes(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        (**self).write_bytes(offset, data)
    }
    fn fence(&self) {
        (**self).fence()
    }
}
