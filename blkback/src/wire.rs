//! The blkif wire format (`io/blkif.h`, `XEN-ABI.md` §4.2): operations, statuses, limits,
//! the request and response ring entries (`x86_64` layouts), and the ring type.
//!
//! # Request entry (112 bytes, one ring slot)
//!
//! Byte 0 is the operation; the rest depends on it. All integers little-endian.
//!
//! | variant | 0 | 1 | 2 | 8 | 16 | 24 | 28 |
//! |---|---|---|---|---|---|---|---|
//! | read, write, barrier, flush ([`RwRequest`]) | operation | `nr_segments` u8 | `handle` u16 | `id` u64 | `sector_number` u64 | 11 segments of 8 bytes, to 112 | |
//! | discard ([`DiscardRequest`]) | 5 | `flag` u8 (bit 0 secure) | `handle` u16 | `id` | `sector_number` | `nr_sectors` u64 | |
//! | indirect ([`IndirectRequest`]) | 6 | `indirect_op` u8 | `nr_segments` u16 | `id` | `sector_number` | `handle` u16 | 8 `indirect_grefs` u32, to 60 |
//!
//! A segment ([`Segment`], 8 bytes): 0 `gref` u32, 4 `first_sect` u8, 5 `last_sect` u8,
//! 6 padding. It covers bytes `first_sect * 512 .. (last_sect + 1) * 512` of the granted
//! page. An indirect page is an array of [`SEGMENTS_PER_INDIRECT_PAGE`] segments.
//!
//! # Response entry (16 bytes)
//!
//! 0 `id` u64 (the request's, echoed), 8 `operation` u8 (the request's; for an indirect
//! request its `indirect_op`), 9 padding, 10 `status` i16 ([`STATUS_OKAY`],
//! [`STATUS_ERROR`], [`STATUS_EOPNOTSUPP`]), 12 padding.
//!
//! Decoding is total: any 112 bytes give a [`RawRequest`]; judging it is [`crate::request`]'s
//! job.

use xen_ring::{BackRing, RingEntry};

/// `BLKIF_OP_READ`: device to guest.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`: guest to device.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: a write (or nothing) made durable with everything before it.
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`: a write (or nothing), then a flush of the device's cache.
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`: never valid.
pub const OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`: the sectors' contents may be dropped.
pub const OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`: a read or write whose segments are in separately granted pages.
pub const OP_INDIRECT: u8 = 6;

/// `BLKIF_RSP_OKAY`.
pub const STATUS_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`.
pub const STATUS_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP`: the front-end stops using the operation.
pub const STATUS_EOPNOTSUPP: i16 = -2;

/// `BLKIF_DISCARD_SECURE`: bit 0 of a discard's `flag`.
pub const DISCARD_FLAG_SECURE: u8 = 1;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments in a direct request.
pub const MAX_DIRECT_SEGMENTS: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: grant refs in an indirect request.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segments in one indirect page (4096 / 8).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_BYTES / SEGMENT_BYTES;
/// The most segments an indirect request can describe at all.
pub const MAX_INDIRECT_SEGMENTS: usize = MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE;

/// A granted page.
pub const PAGE_BYTES: usize = 4096;
/// The unit of `sector_number`, `nr_sectors`, `first_sect` and `last_sect`, whatever the
/// device's sector size.
pub const SECTOR_BYTES: usize = 512;
/// 512-byte sectors in a page: `last_sect` is at most this minus one.
pub const SECTORS_PER_PAGE: u8 = (PAGE_BYTES / SECTOR_BYTES) as u8;

/// `VDISK_CDROM` in the backend's `info` key.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE`.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY`: the front-end makes the disk read-only.
pub const VDISK_READONLY: u32 = 0x4;

/// Size of a request entry.
pub const REQUEST_BYTES: usize = 112;
/// Size of a response entry.
pub const RESPONSE_BYTES: usize = 16;
/// Size of a segment.
pub const SEGMENT_BYTES: usize = 8;

const OPERATION_OFFSET: usize = 0;
const NR_SEGMENTS_OFFSET: usize = 1;
const HANDLE_OFFSET: usize = 2;
const ID_OFFSET: usize = 8;
const SECTOR_OFFSET: usize = 16;
const SEGMENTS_OFFSET: usize = 24;
const DISCARD_FLAG_OFFSET: usize = 1;
const DISCARD_NR_SECTORS_OFFSET: usize = 24;
const INDIRECT_OP_OFFSET: usize = 1;
const INDIRECT_NR_SEGMENTS_OFFSET: usize = 2;
const INDIRECT_HANDLE_OFFSET: usize = 24;
const INDIRECT_GREFS_OFFSET: usize = 28;
const RESPONSE_ID_OFFSET: usize = 0;
const RESPONSE_OPERATION_OFFSET: usize = 8;
const RESPONSE_STATUS_OFFSET: usize = 10;

// The direct segments end exactly at the end of the entry, the indirect refs inside it.
const _: () = assert!(SEGMENTS_OFFSET + MAX_DIRECT_SEGMENTS * SEGMENT_BYTES == REQUEST_BYTES);
const _: () = assert!(INDIRECT_GREFS_OFFSET + MAX_INDIRECT_PAGES * 4 == 60);
const _: () = assert!(DISCARD_NR_SECTORS_OFFSET + 8 <= REQUEST_BYTES);
const _: () = assert!(SEGMENTS_PER_INDIRECT_PAGE == 512);

/// The ring a back-end serves: blkif requests in, responses out, over the region `M`.
pub type BlkBackRing<M> = BackRing<RawRequest, Response, M>;

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    out[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// One `blkif_request_segment`, as the front-end wrote it (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// The grant of the data page.
    pub gref: u32,
    /// The first 512-byte sector of the page the segment covers.
    pub first_sect: u8,
    /// The last 512-byte sector of the page the segment covers (inclusive).
    pub last_sect: u8,
}

impl Segment {
    /// Reads a segment from its 8 bytes.
    pub fn decode(bytes: &[u8; SEGMENT_BYTES]) -> Self {
        Self {
            gref: u32_at(bytes, 0),
            first_sect: bytes[4],
            last_sect: bytes[5],
        }
    }

    /// Its 8 bytes (padding zero).
    pub fn encode(&self) -> [u8; SEGMENT_BYTES] {
        let mut out = [0u8; SEGMENT_BYTES];
        put(&mut out, 0, &self.gref.to_le_bytes());
        out[4] = self.first_sect;
        out[5] = self.last_sect;
        out
    }

    /// Segment `index` of an indirect page's bytes, or `None` past the end of `page`.
    pub fn in_page(page: &[u8], index: usize) -> Option<Self> {
        let start = index.checked_mul(SEGMENT_BYTES)?;
        let bytes = page.get(start..start.checked_add(SEGMENT_BYTES)?)?;
        let mut array = [0u8; SEGMENT_BYTES];
        array.copy_from_slice(bytes);
        Some(Self::decode(&array))
    }
}

/// A read, write, write-barrier or flush request (`blkif_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RwRequest {
    /// [`OP_READ`], [`OP_WRITE`], [`OP_WRITE_BARRIER`] or [`OP_FLUSH_DISKCACHE`].
    pub operation: u8,
    /// How many of `segments` are used.
    pub nr_segments: u8,
    /// The front-end's device id.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector, relative to the virtual disk.
    pub sector_number: u64,
    /// The segments (all 11 slots as they were in the entry).
    pub segments: [Segment; MAX_DIRECT_SEGMENTS],
}

/// A discard request (`blkif_request_discard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscardRequest {
    /// [`DISCARD_FLAG_SECURE`] or 0.
    pub flag: u8,
    /// The front-end's device id.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector.
    pub sector_number: u64,
    /// Number of 512-byte sectors.
    pub nr_sectors: u64,
}

/// An indirect request (`blkif_request_indirect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndirectRequest {
    /// The real operation: [`OP_READ`] or [`OP_WRITE`]; also the response's operation.
    pub indirect_op: u8,
    /// Segments, in `ceil(nr_segments / 512)` indirect pages.
    pub nr_segments: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector.
    pub sector_number: u64,
    /// The front-end's device id.
    pub handle: u16,
    /// Grants of the indirect pages (only the first `ceil(nr_segments / 512)` are used).
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
}

/// A request entry copied out of the ring, decoded by its operation byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawRequest {
    /// Operations 0 to 3.
    Rw(RwRequest),
    /// Operation 5.
    Discard(DiscardRequest),
    /// Operation 6.
    Indirect(IndirectRequest),
    /// Any other operation: only the id is known.
    Other {
        /// The operation byte.
        operation: u8,
        /// The id at offset 8.
        id: u64,
    },
}

impl RawRequest {
    /// The operation byte of the entry.
    pub fn operation(&self) -> u8 {
        match self {
            Self::Rw(rw) => rw.operation,
            Self::Discard(_) => OP_DISCARD,
            Self::Indirect(_) => OP_INDIRECT,
            Self::Other { operation, .. } => *operation,
        }
    }

    /// The request's id (offset 8 in every variant).
    pub fn id(&self) -> u64 {
        match self {
            Self::Rw(rw) => rw.id,
            Self::Discard(discard) => discard.id,
            Self::Indirect(indirect) => indirect.id,
            Self::Other { id, .. } => *id,
        }
    }

    /// The operation a response to this request carries: the `indirect_op` for an
    /// indirect request (the front-end checks it), the operation byte otherwise.
    pub fn response_operation(&self) -> u8 {
        match self {
            Self::Indirect(indirect) => indirect.indirect_op,
            other => other.operation(),
        }
    }

    /// The response to this request with `status`.
    pub fn response(&self, status: i16) -> Response {
        Response {
            id: self.id(),
            operation: self.response_operation(),
            status,
        }
    }
}

impl RingEntry for RawRequest {
    const SIZE: usize = REQUEST_BYTES;

    fn encode(&self, out: &mut [u8]) {
        match self {
            Self::Rw(rw) => {
                out[OPERATION_OFFSET] = rw.operation;
                out[NR_SEGMENTS_OFFSET] = rw.nr_segments;
                put(out, HANDLE_OFFSET, &rw.handle.to_le_bytes());
                put(out, ID_OFFSET, &rw.id.to_le_bytes());
                put(out, SECTOR_OFFSET, &rw.sector_number.to_le_bytes());
                for (index, segment) in rw.segments.iter().enumerate() {
                    put(
                        out,
                        SEGMENTS_OFFSET + index * SEGMENT_BYTES,
                        &segment.encode(),
                    );
                }
            }
            Self::Discard(discard) => {
                out[OPERATION_OFFSET] = OP_DISCARD;
                out[DISCARD_FLAG_OFFSET] = discard.flag;
                put(out, HANDLE_OFFSET, &discard.handle.to_le_bytes());
                put(out, ID_OFFSET, &discard.id.to_le_bytes());
                put(out, SECTOR_OFFSET, &discard.sector_number.to_le_bytes());
                put(
                    out,
                    DISCARD_NR_SECTORS_OFFSET,
                    &discard.nr_sectors.to_le_bytes(),
                );
            }
            Self::Indirect(indirect) => {
                out[OPERATION_OFFSET] = OP_INDIRECT;
                out[INDIRECT_OP_OFFSET] = indirect.indirect_op;
                put(
                    out,
                    INDIRECT_NR_SEGMENTS_OFFSET,
                    &indirect.nr_segments.to_le_bytes(),
                );
                put(out, ID_OFFSET, &indirect.id.to_le_bytes());
                put(out, SECTOR_OFFSET, &indirect.sector_number.to_le_bytes());
                put(out, INDIRECT_HANDLE_OFFSET, &indirect.handle.to_le_bytes());
                for (index, gref) in indirect.indirect_grefs.iter().enumerate() {
                    put(out, INDIRECT_GREFS_OFFSET + index * 4, &gref.to_le_bytes());
                }
            }
            Self::Other { operation, id } => {
                out[OPERATION_OFFSET] = *operation;
                put(out, ID_OFFSET, &id.to_le_bytes());
            }
        }
    }

    fn decode(bytes: &[u8]) -> Self {
        let operation = bytes[OPERATION_OFFSET];
        let id = u64_at(bytes, ID_OFFSET);
        let sector_number = u64_at(bytes, SECTOR_OFFSET);
        match operation {
            OP_READ | OP_WRITE | OP_WRITE_BARRIER | OP_FLUSH_DISKCACHE => {
                let segments = core::array::from_fn(|index| {
                    let start = SEGMENTS_OFFSET + index * SEGMENT_BYTES;
                    let mut segment = [0u8; SEGMENT_BYTES];
                    segment.copy_from_slice(&bytes[start..start + SEGMENT_BYTES]);
                    Segment::decode(&segment)
                });
                Self::Rw(RwRequest {
                    operation,
                    nr_segments: bytes[NR_SEGMENTS_OFFSET],
                    handle: u16_at(bytes, HANDLE_OFFSET),
                    id,
                    sector_number,
                    segments,
                })
            }
            OP_DISCARD => Self::Discard(DiscardRequest {
                flag: bytes[DISCARD_FLAG_OFFSET],
                handle: u16_at(bytes, HANDLE_OFFSET),
                id,
                sector_number,
                nr_sectors: u64_at(bytes, DISCARD_NR_SECTORS_OFFSET),
            }),
            OP_INDIRECT => Self::Indirect(IndirectRequest {
                indirect_op: bytes[INDIRECT_OP_OFFSET],
                nr_segments: u16_at(bytes, INDIRECT_NR_SEGMENTS_OFFSET),
                id,
                sector_number,
                handle: u16_at(bytes, INDIRECT_HANDLE_OFFSET),
                indirect_grefs: core::array::from_fn(|index| {
                    u32_at(bytes, INDIRECT_GREFS_OFFSET + index * 4)
                }),
            }),
            _ => Self::Other { operation, id },
        }
    }
}

/// A response entry (`blkif_response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The request's operation (an indirect request's `indirect_op`).
    pub operation: u8,
    /// [`STATUS_OKAY`], [`STATUS_ERROR`] or [`STATUS_EOPNOTSUPP`].
    pub status: i16,
}

impl RingEntry for Response {
    const SIZE: usize = RESPONSE_BYTES;

    fn encode(&self, out: &mut [u8]) {
        put(out, RESPONSE_ID_OFFSET, &self.id.to_le_bytes());
        out[RESPONSE_OPERATION_OFFSET] = self.operation;
        put(out, RESPONSE_STATUS_OFFSET, &self.status.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            id: u64_at(bytes, RESPONSE_ID_OFFSET),
            operation: bytes[RESPONSE_OPERATION_OFFSET],
            status: u16_at(bytes, RESPONSE_STATUS_OFFSET) as i16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_ring::{LocalPage, LocalRegion, RingLayout, PAGE_SIZE_BYTES};

    fn encode<E: RingEntry>(entry: &E) -> [u8; REQUEST_BYTES] {
        let mut out = [0u8; REQUEST_BYTES];
        entry.encode(&mut out[..E::SIZE]);
        out
    }

    #[test]
    fn a_page_holds_32_slots_and_two_pages_64() {
        let one = RingLayout::new(PAGE_SIZE_BYTES, RawRequest::SIZE, Response::SIZE).unwrap();
        assert_eq!((one.slots(), one.slot_bytes()), (32, 112));
        let two = RingLayout::new(2 * PAGE_SIZE_BYTES, REQUEST_BYTES, RESPONSE_BYTES).unwrap();
        assert_eq!(two.slots(), 64);
        let four = RingLayout::new(4 * PAGE_SIZE_BYTES, REQUEST_BYTES, RESPONSE_BYTES).unwrap();
        assert_eq!(four.slots(), 128);
        // The alias attaches to real regions with the same shape.
        let page = LocalPage::new();
        assert_eq!(BlkBackRing::new(&page).unwrap().slots(), 32);
        let pages = LocalRegion::<2048>::new();
        assert_eq!(BlkBackRing::new(&pages).unwrap().slots(), 64);
    }

    #[test]
    fn rw_request_bytes_sit_at_the_abi_offsets() {
        let mut segments = [Segment::default(); MAX_DIRECT_SEGMENTS];
        segments[0] = Segment {
            gref: 0x1122_3344,
            first_sect: 1,
            last_sect: 6,
        };
        segments[10] = Segment {
            gref: 0xdead_beef,
            first_sect: 7,
            last_sect: 7,
        };
        let request = RawRequest::Rw(RwRequest {
            operation: OP_WRITE,
            nr_segments: 11,
            handle: 0xca00,
            id: 0x0102_0304_0506_0708,
            sector_number: 0x1_0000_0002,
            segments,
        });
        let bytes = encode(&request);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1], 11);
        assert_eq!(bytes[2..4], [0x00, 0xca]);
        assert_eq!(bytes[4..8], [0; 4]);
        assert_eq!(bytes[8..16], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bytes[16..24], 0x1_0000_0002u64.to_le_bytes());
        assert_eq!(bytes[24..32], [0x44, 0x33, 0x22, 0x11, 1, 6, 0, 0]);
        assert_eq!(bytes[104..112], [0xef, 0xbe, 0xad, 0xde, 7, 7, 0, 0]);
        assert_eq!(RawRequest::decode(&bytes), request);
    }

    #[test]
    fn discard_and_indirect_bytes_sit_at_the_abi_offsets() {
        let discard = RawRequest::Discard(DiscardRequest {
            flag: DISCARD_FLAG_SECURE,
            handle: 7,
            id: 9,
            sector_number: 100,
            nr_sectors: 0x55,
        });
        let bytes = encode(&discard);
        assert_eq!(bytes[..4], [5, 1, 7, 0]);
        assert_eq!(bytes[24..32], 0x55u64.to_le_bytes());
        assert_eq!(RawRequest::decode(&bytes), discard);

        let indirect = RawRequest::Indirect(IndirectRequest {
            indirect_op: OP_READ,
            nr_segments: 0x0203,
            id: 77,
            sector_number: 8,
            handle: 0x0506,
            indirect_grefs: [10, 11, 12, 13, 14, 15, 16, 0x0a0b_0c0d],
        });
        let bytes = encode(&indirect);
        assert_eq!(bytes[..4], [6, 0, 0x03, 0x02]);
        assert_eq!(bytes[8..16], 77u64.to_le_bytes());
        assert_eq!(bytes[24..28], [0x06, 0x05, 0, 0]);
        assert_eq!(bytes[28..32], 10u32.to_le_bytes());
        assert_eq!(bytes[56..60], [0x0d, 0x0c, 0x0b, 0x0a]);
        assert!(bytes[60..].iter().all(|&byte| byte == 0));
        assert_eq!(RawRequest::decode(&bytes), indirect);
        assert_eq!(indirect.response_operation(), OP_READ);
        assert_eq!(indirect.operation(), OP_INDIRECT);
    }

    #[test]
    fn unknown_operations_keep_their_id() {
        let mut bytes = [0xffu8; REQUEST_BYTES];
        bytes[0] = 9;
        bytes[8..16].copy_from_slice(&42u64.to_le_bytes());
        let request = RawRequest::decode(&bytes);
        assert_eq!(
            request,
            RawRequest::Other {
                operation: 9,
                id: 42
            }
        );
        assert_eq!(
            request.response(STATUS_ERROR),
            Response {
                id: 42,
                operation: 9,
                status: -1
            }
        );
        bytes[0] = OP_RESERVED_1;
        assert!(matches!(
            RawRequest::decode(&bytes),
            RawRequest::Other { operation: 4, .. }
        ));
    }

    #[test]
    fn response_layout() {
        let response = Response {
            id: 0x1122_3344_5566_7788,
            operation: OP_FLUSH_DISKCACHE,
            status: STATUS_EOPNOTSUPP,
        };
        let mut bytes = [0u8; RESPONSE_BYTES];
        response.encode(&mut bytes);
        assert_eq!(
            bytes,
            [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 3, 0, 0xfe, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(Response::decode(&bytes), response);
    }

    #[test]
    fn segments_in_an_indirect_page() {
        let mut page = [0u8; PAGE_BYTES];
        let last = Segment {
            gref: 99,
            first_sect: 2,
            last_sect: 3,
        };
        page[511 * 8..].copy_from_slice(&last.encode());
        assert_eq!(Segment::in_page(&page, 511), Some(last));
        assert_eq!(Segment::in_page(&page, 0), Some(Segment::default()));
        assert_eq!(Segment::in_page(&page, 512), None);
        assert_eq!(Segment::in_page(&page, usize::MAX), None);
    }
}
