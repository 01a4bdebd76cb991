//! The [`RingEntry`] trait: requests and responses as fixed-size little-endian byte strings,
//! and the copies between a slot and a value.
//!
//! An entry's `SIZE` is the size of the C struct it mirrors (with its tail padding), so the
//! slot size and slot count match the peer's. Encoding writes into a zeroed buffer, so bytes
//! an encoder skips (padding) reach the peer as zero, never as stale memory. Decoding is
//! total: any bytes give a value, and judging that value is the caller's job.

use crate::layout::RingLayout;
use crate::shared_page::SharedPage;

/// The largest entry size supported: values are staged in a stack buffer of this size.
pub const MAX_ENTRY_BYTES: usize = 512;

/// A request or response that travels through a ring slot.
pub trait RingEntry: Sized {
    /// Encoded size in bytes, at most [`MAX_ENTRY_BYTES`].
    const SIZE: usize;
    /// Writes the entry into `out`, which is exactly `SIZE` zero bytes.
    fn encode(&self, out: &mut [u8]);
    /// Reads an entry from `bytes`, exactly `SIZE` bytes copied out of the ring. Must not
    /// panic whatever the bytes are.
    fn decode(bytes: &[u8]) -> Self;
}

/// Copies the entry in the slot of `index` out of the region, once, and decodes the copy.
pub(crate) fn read_entry<E: RingEntry, M: SharedPage>(
    page: &M,
    layout: &RingLayout,
    index: u32,
) -> E {
    let mut buffer = [0u8; MAX_ENTRY_BYTES];
    let bytes = &mut buffer[..E::SIZE];
    page.read_bytes(layout.slot_offset(index), bytes);
    E::decode(bytes)
}

/// Encodes `entry` and copies it into the slot of `index`.
pub(crate) fn write_entry<E: RingEntry, M: SharedPage>(
    page: &M,
    layout: &RingLayout,
    index: u32,
    entry: &E,
) {
    let mut buffer = [0u8; MAX_ENTRY_BYTES];
    let bytes = &mut buffer[..E::SIZE];
    entry.encode(bytes);
    page.write_bytes(layout.slot_offset(index), bytes);
}
