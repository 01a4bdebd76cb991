//! Validating a request: from a [`RawRequest`] copied out of the ring (once) to an owned
//! [`Request`] whose every field has been checked, or a [`Rejection`] saying why not.
//!
//! # Rules
//!
//! | operation | accepted when |
//! |---|---|
//! | read, write | `nr_segments` in 1..=11 |
//! | write barrier, flush | `nr_segments` in 0..=11 (0: a pure flush, `sector_number` ignored) |
//! | discard | `sector_number + nr_sectors` within the vbd; not secure ([`Reason::SecureDiscard`]) |
//! | indirect | `indirect_op` read or write; `nr_segments` in 1..=[`Limits::max_indirect_segments`]; segments from `ceil(n / 512)` indirect pages |
//! | anything else | never ([`Reason::UnknownOperation`]) |
//!
//! Every segment has `first_sect <= last_sect <= 7`; a request's segments are contiguous on
//! the disk from `sector_number` and their total length must lie within the [`Vbd`]. A
//! request that writes (write, barrier or flush with data, discard) to a read-only vbd is
//! refused with [`Reason::ReadOnly`] after all other checks passed.
//!
//! # Two phases for indirect requests
//!
//! [`parse`] checks the ring entry. For an indirect request it returns an
//! [`IndirectHeader`] naming the grants and lengths of the indirect pages; the caller copies
//! those pages out of the front-end's memory (once) and hands the copies to
//! [`IndirectHeader::complete`], which checks the segments in them.
//!
//! # Hostile or not
//!
//! [`Reason::is_hostile`]: a request no correct front-end sends (unknown operation, bad
//! segment count or bounds, a range outside the vbd) is hostile and the queue is cut off
//! ([`crate::engine`]). A write to a read-only vbd or an unsupported variant is an ordinary
//! refusal, answered with [`Reason::status`].

use alloc::vec::Vec;
use core::fmt;

use crate::vbd::{OutOfRange, Vbd};
use crate::wire::{
    IndirectRequest, RawRequest, Response, RwRequest, Segment, DISCARD_FLAG_SECURE,
    MAX_DIRECT_SEGMENTS, MAX_INDIRECT_PAGES, MAX_INDIRECT_SEGMENTS, OP_FLUSH_DISKCACHE, OP_READ,
    OP_WRITE, OP_WRITE_BARRIER, PAGE_BYTES, SECTORS_PER_PAGE, SECTOR_BYTES,
    SEGMENTS_PER_INDIRECT_PAGE, SEGMENT_BYTES, STATUS_EOPNOTSUPP, STATUS_ERROR,
};

/// The backend's advertised limits that requests are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_indirect_segments: u16,
}

impl Limits {
    /// `feature-max-indirect-segments` by default (what Linux's backend advertises).
    pub const DEFAULT_MAX_INDIRECT_SEGMENTS: u16 = 256;

    /// Limits with at most `max_indirect_segments` segments in an indirect request (0: no
    /// indirect requests at all).
    ///
    /// # Errors
    ///
    /// [`LimitsError`] past the 4096 segments 8 indirect pages can describe.
    pub fn new(max_indirect_segments: u16) -> Result<Self, LimitsError> {
        if usize::from(max_indirect_segments) > MAX_INDIRECT_SEGMENTS {
            return Err(LimitsError {
                max_indirect_segments,
            });
        }
        Ok(Self {
            max_indirect_segments,
        })
    }

    /// The most segments an indirect request may have.
    pub fn max_indirect_segments(&self) -> u16 {
        self.max_indirect_segments
    }

    /// The most segments any request may have.
    pub fn max_segments(&self) -> usize {
        usize::from(self.max_indirect_segments).max(MAX_DIRECT_SEGMENTS)
    }

    /// The largest data transfer of one request.
    pub fn max_request_bytes(&self) -> usize {
        self.max_segments() * PAGE_BYTES
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_indirect_segments: Self::DEFAULT_MAX_INDIRECT_SEGMENTS,
        }
    }
}

/// An indirect-segment limit beyond what the protocol can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsError {
    /// The limit asked for.
    pub max_indirect_segments: u16,
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} indirect segments exceed the protocol's {MAX_INDIRECT_SEGMENTS}",
            self.max_indirect_segments
        )
    }
}

/// A checked segment: bytes `offset_bytes .. offset_bytes + len_bytes` of the granted page,
/// a whole number of 512-byte sectors within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSegment {
    /// The grant of the data page.
    pub gref: u32,
    /// Where the data starts in the page (`first_sect * 512`).
    pub offset_bytes: u16,
    /// How many bytes (`(last_sect - first_sect + 1) * 512`, at most 4096).
    pub len_bytes: u16,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Device to guest.
    Read,
    /// Guest to device.
    Write,
    /// Write the segments (if any), then flush the device's cache. `barrier`: it came as
    /// `WRITE_BARRIER` (same semantics here).
    Flush {
        /// The operation was [`OP_WRITE_BARRIER`] rather than [`OP_FLUSH_DISKCACHE`].
        barrier: bool,
    },
    /// Drop the contents of `sectors` sectors.
    Discard {
        /// Number of 512-byte sectors (may be 0).
        sectors: u64,
    },
}

/// A validated request: everything in it has been checked against the [`Limits`] and the
/// [`Vbd`]; nothing refers back to shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The front-end's id, echoed in the response.
    pub id: u64,
    /// The operation the response carries (an indirect request's `indirect_op`).
    pub operation: u8,
    /// What to do.
    pub kind: Kind,
    /// The first vbd sector (0 for a pure flush).
    pub sector: u64,
    /// The first device sector: `sector` mapped through the vbd.
    pub device_sector: u64,
    /// The data, contiguous on the disk from `device_sector`; empty for a discard or a
    /// pure flush.
    pub segments: Vec<DataSegment>,
}

impl Request {
    /// Total bytes of data the segments carry.
    pub fn data_bytes(&self) -> usize {
        self.segments
            .iter()
            .map(|segment| usize::from(segment.len_bytes))
            .sum()
    }

    /// The response to it with `status`.
    pub fn response(&self, status: i16) -> Response {
        Response {
            id: self.id,
            operation: self.operation,
            status,
        }
    }
}

/// Why a request is not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An operation byte that is not a blkif operation (or is reserved).
    UnknownOperation(u8),
    /// A read or write (direct or indirect) without segments.
    NoSegments {
        /// The operation.
        operation: u8,
    },
    /// More segments than the request type allows.
    TooManySegments {
        /// Segments in the request.
        count: u16,
        /// The limit.
        max: u16,
    },
    /// A segment whose first sector is after its last.
    FirstAfterLast {
        /// Index of the segment in the request.
        segment: usize,
        /// Its `first_sect`.
        first_sect: u8,
        /// Its `last_sect`.
        last_sect: u8,
    },
    /// A segment reaching past its 4096-byte page.
    BeyondPage {
        /// Index of the segment in the request.
        segment: usize,
        /// Its `last_sect`.
        last_sect: u8,
    },
    /// Sectors outside the vbd.
    OutOfRange(OutOfRange),
    /// An indirect request for something other than a read or write.
    IndirectOperation(u8),
    /// A write to a read-only vbd (not hostile).
    ReadOnly,
    /// A secure discard, which the backend does not advertise (not hostile).
    SecureDiscard,
}

impl Reason {
    /// Whether only a broken or hostile front-end sends such a request.
    pub fn is_hostile(&self) -> bool {
        !matches!(self, Self::ReadOnly | Self::SecureDiscard)
    }

    /// The status the refused request is answered with.
    pub fn status(&self) -> i16 {
        match self {
            Self::SecureDiscard => STATUS_EOPNOTSUPP,
            _ => STATUS_ERROR,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownOperation(operation) => write!(f, "unknown operation {operation}"),
            Self::NoSegments { operation } => {
                write!(f, "operation {operation} without segments")
            }
            Self::TooManySegments { count, max } => {
                write!(f, "{count} segments (at most {max})")
            }
            Self::FirstAfterLast {
                segment,
                first_sect,
                last_sect,
            } => write!(
                f,
                "segment {segment}: first_sect {first_sect} after last_sect {last_sect}"
            ),
            Self::BeyondPage { segment, last_sect } => {
                write!(
                    f,
                    "segment {segment}: last_sect {last_sect} beyond the page"
                )
            }
            Self::OutOfRange(range) => range.fmt(f),
            Self::IndirectOperation(operation) => write!(
                f,
                "indirect request for operation {operation} (only read or write)"
            ),
            Self::ReadOnly => f.write_str("write to a read-only vbd"),
            Self::SecureDiscard => f.write_str("secure discard is not supported"),
        }
    }
}

/// A request refused: the response to send, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The request's id.
    pub id: u64,
    /// The operation the response carries.
    pub operation: u8,
    /// Why.
    pub reason: Reason,
}

impl Rejection {
    fn new(raw: &RawRequest, reason: Reason) -> Self {
        Self {
            id: raw.id(),
            operation: raw.response_operation(),
            reason,
        }
    }

    /// The response to the refused request.
    pub fn response(&self) -> Response {
        Response {
            id: self.id,
            operation: self.operation,
            status: self.reason.status(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {:#x}: {}", self.id, self.reason)
    }
}

/// The first phase's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete, valid request.
    Ready(Request),
    /// A valid indirect header: fetch its pages, then [`IndirectHeader::complete`].
    Indirect(IndirectHeader),
}

/// A checked indirect request whose segments are still in the front-end's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectHeader {
    raw: IndirectRequest,
    pages: usize,
}

/// The pages [`IndirectHeader::complete`] reads: the copies of the indirect pages, in
/// order; only the first [`IndirectHeader::pages`] matter.
pub type IndirectPages = [[u8; PAGE_BYTES]; MAX_INDIRECT_PAGES];

impl IndirectHeader {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.raw.id
    }

    /// The response operation (`indirect_op`).
    pub fn operation(&self) -> u8 {
        self.raw.indirect_op
    }

    /// How many indirect pages hold the segments (1..=8).
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The grants of the indirect pages, in order.
    pub fn page_grefs(&self) -> &[u32] {
        &self.raw.indirect_grefs[..self.pages]
    }

    /// How many bytes of indirect page `page` hold segments (8 per segment).
    pub fn page_bytes(&self, page: usize) -> usize {
        let before = page * SEGMENTS_PER_INDIRECT_PAGE;
        let remaining = usize::from(self.raw.nr_segments).saturating_sub(before);
        remaining.min(SEGMENTS_PER_INDIRECT_PAGE) * SEGMENT_BYTES
    }

    /// Checks the segments in the copied indirect pages and the whole request against
    /// `vbd`.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] as for a direct request.
    pub fn complete(&self, pages: &IndirectPages, vbd: &Vbd) -> Result<Request, Rejection> {
        let raw = RawRequest::Indirect(self.raw);
        let count = usize::from(self.raw.nr_segments);
        let segments = (0..count).map(|index| {
            let page = &pages[index / SEGMENTS_PER_INDIRECT_PAGE];
            // In range: the index within a page is below 512.
            Segment::in_page(page, index % SEGMENTS_PER_INDIRECT_PAGE).unwrap_or_default()
        });
        let segments = check_segments(segments).map_err(|reason| Rejection::new(&raw, reason))?;
        let kind = if self.raw.indirect_op == OP_WRITE {
            Kind::Write
        } else {
            Kind::Read
        };
        data_request(&raw, kind, self.raw.sector_number, segments, vbd)
    }
}

/// The first phase: checks a request entry against `limits` and `vbd`.
///
/// # Errors
///
/// A [`Rejection`] with the response to send and the [`Reason`].
pub fn parse(raw: &RawRequest, limits: &Limits, vbd: &Vbd) -> Result<Parsed, Rejection> {
    let reject = |reason| Rejection::new(raw, reason);
    match raw {
        RawRequest::Rw(rw) => parse_rw(raw, rw, vbd).map(Parsed::Ready),
        RawRequest::Discard(discard) => {
            let device_sector = vbd
                .map(discard.sector_number, discard.nr_sectors)
                .map_err(|range| reject(Reason::OutOfRange(range)))?;
            if vbd.is_read_only() {
                return Err(reject(Reason::ReadOnly));
            }
            if discard.flag & DISCARD_FLAG_SECURE != 0 {
                return Err(reject(Reason::SecureDiscard));
            }
            Ok(Parsed::Ready(Request {
                id: discard.id,
                operation: raw.response_operation(),
                kind: Kind::Discard {
                    sectors: discard.nr_sectors,
                },
                sector: discard.sector_number,
                device_sector,
                segments: Vec::new(),
            }))
        }
        RawRequest::Indirect(indirect) => {
            if !matches!(indirect.indirect_op, OP_READ | OP_WRITE) {
                return Err(reject(Reason::IndirectOperation(indirect.indirect_op)));
            }
            let count = indirect.nr_segments;
            if count == 0 {
                return Err(reject(Reason::NoSegments {
                    operation: indirect.indirect_op,
                }));
            }
            if count > limits.max_indirect_segments {
                return Err(reject(Reason::TooManySegments {
                    count,
                    max: limits.max_indirect_segments,
                }));
            }
            Ok(Parsed::Indirect(IndirectHeader {
                raw: *indirect,
                pages: usize::from(count).div_ceil(SEGMENTS_PER_INDIRECT_PAGE),
            }))
        }
        RawRequest::Other { operation, .. } => Err(reject(Reason::UnknownOperation(*operation))),
    }
}

fn parse_rw(raw: &RawRequest, rw: &RwRequest, vbd: &Vbd) -> Result<Request, Rejection> {
    let reject = |reason| Rejection::new(raw, reason);
    let count = usize::from(rw.nr_segments);
    let (kind, min) = match rw.operation {
        OP_READ => (Kind::Read, 1),
        OP_WRITE => (Kind::Write, 1),
        OP_WRITE_BARRIER => (Kind::Flush { barrier: true }, 0),
        OP_FLUSH_DISKCACHE => (Kind::Flush { barrier: false }, 0),
        other => return Err(reject(Reason::UnknownOperation(other))),
    };
    if count < min {
        return Err(reject(Reason::NoSegments {
            operation: rw.operation,
        }));
    }
    if count > MAX_DIRECT_SEGMENTS {
        return Err(reject(Reason::TooManySegments {
            count: u16::from(rw.nr_segments),
            max: MAX_DIRECT_SEGMENTS as u16,
        }));
    }
    let segments = check_segments(rw.segments[..count].iter().copied()).map_err(reject)?;
    if segments.is_empty() {
        // A pure flush: no sectors, nothing to map.
        return Ok(Request {
            id: rw.id,
            operation: rw.operation,
            kind,
            sector: 0,
            device_sector: 0,
            segments,
        });
    }
    data_request(raw, kind, rw.sector_number, segments, vbd)
}

/// Checks each segment's bounds.
fn check_segments(segments: impl Iterator<Item = Segment>) -> Result<Vec<DataSegment>, Reason> {
    let mut checked = Vec::with_capacity(segments.size_hint().0);
    for (index, segment) in segments.enumerate() {
        if segment.last_sect >= SECTORS_PER_PAGE {
            return Err(Reason::BeyondPage {
                segment: index,
                last_sect: segment.last_sect,
            });
        }
        if segment.first_sect > segment.last_sect {
            return Err(Reason::FirstAfterLast {
                segment: index,
                first_sect: segment.first_sect,
                last_sect: segment.last_sect,
            });
        }
        let sectors = u16::from(segment.last_sect - segment.first_sect) + 1;
        checked.push(DataSegment {
            gref: segment.gref,
            offset_bytes: u16::from(segment.first_sect) * SECTOR_BYTES as u16,
            len_bytes: sectors * SECTOR_BYTES as u16,
        });
    }
    Ok(checked)
}

/// A request with data: the range check against the vbd, then the read-only check.
fn data_request(
    raw: &RawRequest,
    kind: Kind,
    sector: u64,
    segments: Vec<DataSegment>,
    vbd: &Vbd,
) -> Result<Request, Rejection> {
    let bytes: u64 = segments
        .iter()
        .map(|segment| u64::from(segment.len_bytes))
        .sum();
    let sectors = bytes / SECTOR_BYTES as u64;
    let device_sector = vbd
        .map(sector, sectors)
        .map_err(|range| Rejection::new(raw, Reason::OutOfRange(range)))?;
    if kind != Kind::Read && vbd.is_read_only() {
        return Err(Rejection::new(raw, Reason::ReadOnly));
    }
    Ok(Request {
        id: raw.id(),
        operation: raw.response_operation(),
        kind,
        sector,
        device_sector,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DiscardRequest, OP_DISCARD, OP_INDIRECT, STATUS_ERROR};
    use alloc::string::ToString;
    use alloc::vec;

    const VBD_SECTORS: u64 = 65536;

    fn vbd() -> Vbd {
        Vbd::slice(1 << 20, 1000, VBD_SECTORS, false).unwrap()
    }

    fn segment(gref: u32, first_sect: u8, last_sect: u8) -> Segment {
        Segment {
            gref,
            first_sect,
            last_sect,
        }
    }

    fn rw(operation: u8, sector: u64, segs: &[Segment]) -> RawRequest {
        let mut segments = [Segment::default(); MAX_DIRECT_SEGMENTS];
        segments[..segs.len()].copy_from_slice(segs);
        RawRequest::Rw(RwRequest {
            operation,
            nr_segments: segs.len() as u8,
            handle: 0,
            id: 0x55,
            sector_number: sector,
            segments,
        })
    }

    fn ready(raw: &RawRequest, vbd: &Vbd) -> Result<Request, Rejection> {
        match parse(raw, &Limits::default(), vbd)? {
            Parsed::Ready(request) => Ok(request),
            Parsed::Indirect(_) => panic!("unexpected indirect"),
        }
    }

    fn reason(raw: &RawRequest, vbd: &Vbd) -> Reason {
        ready(raw, vbd).unwrap_err().reason
    }

    #[test]
    fn a_read_maps_through_the_vbd() {
        let raw = rw(OP_READ, 16, &[segment(8, 0, 7), segment(9, 2, 3)]);
        let request = ready(&raw, &vbd()).unwrap();
        assert_eq!(request.kind, Kind::Read);
        assert_eq!(request.id, 0x55);
        assert_eq!(request.sector, 16);
        assert_eq!(request.device_sector, 1016);
        assert_eq!(
            request.segments,
            vec![
                DataSegment {
                    gref: 8,
                    offset_bytes: 0,
                    len_bytes: 4096
                },
                DataSegment {
                    gref: 9,
                    offset_bytes: 1024,
                    len_bytes: 1024
                }
            ]
        );
        assert_eq!(request.data_bytes(), 5120);
    }

    #[test]
    fn segment_counts() {
        let vbd = vbd();
        assert_eq!(
            reason(&rw(OP_READ, 0, &[]), &vbd),
            Reason::NoSegments { operation: 0 }
        );
        assert_eq!(
            reason(&rw(OP_WRITE, 0, &[]), &vbd),
            Reason::NoSegments { operation: 1 }
        );
        let eleven = [segment(1, 0, 7); 11];
        assert!(ready(&rw(OP_WRITE, 0, &eleven), &vbd).is_ok());
        let RawRequest::Rw(mut twelve) = rw(OP_WRITE, 0, &eleven) else {
            unreachable!()
        };
        twelve.nr_segments = 12;
        let reason = reason(&RawRequest::Rw(twelve), &vbd);
        assert_eq!(reason, Reason::TooManySegments { count: 12, max: 11 });
        assert!(reason.is_hostile());
        assert_eq!(reason.to_string(), "12 segments (at most 11)");
    }

    #[test]
    fn segment_bounds() {
        let vbd = vbd();
        let beyond = rw(
            OP_READ,
            0,
            &[
                segment(1, 0, 7),
                segment(1, 0, 7),
                segment(1, 0, 7),
                segment(1, 0, 9),
            ],
        );
        let reason = reason(&beyond, &vbd);
        assert_eq!(
            reason,
            Reason::BeyondPage {
                segment: 3,
                last_sect: 9
            }
        );
        assert_eq!(reason.to_string(), "segment 3: last_sect 9 beyond the page");
        let backwards = rw(OP_WRITE, 0, &[segment(1, 5, 4)]);
        assert_eq!(
            super::tests::reason(&backwards, &vbd).to_string(),
            "segment 0: first_sect 5 after last_sect 4"
        );
        assert!(ready(&rw(OP_WRITE, 0, &[segment(1, 7, 7)]), &vbd).is_ok());
    }

    #[test]
    fn sector_ranges() {
        let vbd = vbd();
        // The last 8 sectors are readable; one more is not.
        let last = ready(&rw(OP_READ, VBD_SECTORS - 8, &[segment(1, 0, 7)]), &vbd).unwrap();
        assert_eq!(last.device_sector, 1000 + VBD_SECTORS - 8);
        let reason = reason(&rw(OP_READ, VBD_SECTORS - 7, &[segment(1, 0, 7)]), &vbd);
        assert!(reason.is_hostile());
        assert_eq!(
            reason.to_string(),
            "sector 65529+8 outside the vbd (65536 sectors)"
        );
        assert!(matches!(
            super::tests::reason(&rw(OP_READ, u64::MAX, &[segment(1, 0, 0)]), &vbd),
            Reason::OutOfRange(_)
        ));
        assert_eq!(
            super::tests::reason(
                &rw(OP_READ, 12345, &[segment(1, 0, 7)]),
                &Vbd::whole(12349, false)
            )
            .to_string(),
            "sector 12345+8 outside the vbd (12349 sectors)"
        );
    }

    #[test]
    fn flushes_with_and_without_data() {
        let vbd = vbd();
        let pure = ready(&rw(OP_FLUSH_DISKCACHE, u64::MAX, &[]), &vbd).unwrap();
        assert_eq!(pure.kind, Kind::Flush { barrier: false });
        assert!(pure.segments.is_empty());
        let barrier = ready(&rw(OP_WRITE_BARRIER, 8, &[segment(3, 0, 0)]), &vbd).unwrap();
        assert_eq!(barrier.kind, Kind::Flush { barrier: true });
        assert_eq!(barrier.device_sector, 1008);
        assert_eq!(barrier.operation, OP_WRITE_BARRIER);
        // With data, the range is checked like a write's.
        assert!(matches!(
            reason(
                &rw(OP_FLUSH_DISKCACHE, VBD_SECTORS, &[segment(3, 0, 0)]),
                &vbd
            ),
            Reason::OutOfRange(_)
        ));
    }

    #[test]
    fn read_only_refuses_writes_without_hostility() {
        let vbd = Vbd::slice(1 << 20, 0, 1024, true).unwrap();
        assert!(ready(&rw(OP_READ, 0, &[segment(1, 0, 7)]), &vbd).is_ok());
        let refused = ready(&rw(OP_WRITE, 0, &[segment(1, 0, 7)]), &vbd).unwrap_err();
        assert_eq!(refused.reason, Reason::ReadOnly);
        assert!(!refused.reason.is_hostile());
        assert_eq!(refused.response().status, STATUS_ERROR);
        assert_eq!(refused.response().operation, OP_WRITE);
        assert_eq!(
            reason(&rw(OP_FLUSH_DISKCACHE, 0, &[segment(1, 0, 7)]), &vbd),
            Reason::ReadOnly
        );
        // A pure flush writes nothing.
        assert!(ready(&rw(OP_FLUSH_DISKCACHE, 0, &[]), &vbd).is_ok());
        // Malformed stays hostile even on a read-only vbd.
        assert!(reason(&rw(OP_WRITE, 0, &[segment(1, 0, 8)]), &vbd).is_hostile());
        assert!(reason(&rw(OP_WRITE, 1024, &[segment(1, 0, 0)]), &vbd).is_hostile());
    }

    #[test]
    fn discards() {
        let vbd = vbd();
        let discard = |flag, sector, nr_sectors| {
            RawRequest::Discard(DiscardRequest {
                flag,
                handle: 0,
                id: 3,
                sector_number: sector,
                nr_sectors,
            })
        };
        let request = ready(&discard(0, 100, 28), &vbd).unwrap();
        assert_eq!(request.kind, Kind::Discard { sectors: 28 });
        assert_eq!(request.device_sector, 1100);
        assert_eq!(request.operation, OP_DISCARD);
        assert!(ready(&discard(0, VBD_SECTORS, 0), &vbd).is_ok());
        assert!(reason(&discard(0, 1, VBD_SECTORS), &vbd).is_hostile());
        assert!(reason(&discard(0, 1, u64::MAX), &vbd).is_hostile());
        let secure = ready(&discard(DISCARD_FLAG_SECURE, 0, 8), &vbd).unwrap_err();
        assert_eq!(secure.reason, Reason::SecureDiscard);
        assert_eq!(secure.response().status, STATUS_EOPNOTSUPP);
        assert_eq!(
            reason(&discard(0, 0, 8), &Vbd::whole(64, true)),
            Reason::ReadOnly
        );
    }

    #[test]
    fn unknown_operations() {
        for operation in [4u8, 7, 9, 200, 255] {
            let raw = RawRequest::Other { operation, id: 1 };
            let rejection = ready(&raw, &vbd()).unwrap_err();
            assert_eq!(rejection.reason, Reason::UnknownOperation(operation));
            assert_eq!(rejection.response().operation, operation);
        }
        assert_eq!(
            Reason::UnknownOperation(9).to_string(),
            "unknown operation 9"
        );
    }

    fn indirect(indirect_op: u8, nr_segments: u16, sector: u64) -> RawRequest {
        RawRequest::Indirect(IndirectRequest {
            indirect_op,
            nr_segments,
            id: 0x77,
            sector_number: sector,
            handle: 0,
            indirect_grefs: [100, 101, 102, 103, 104, 105, 106, 107],
        })
    }

    fn header(raw: &RawRequest, limits: &Limits) -> Result<IndirectHeader, Rejection> {
        match parse(raw, limits, &vbd())? {
            Parsed::Indirect(header) => Ok(header),
            Parsed::Ready(_) => panic!("not indirect"),
        }
    }

    fn pages_with(segments: &[Segment]) -> alloc::boxed::Box<IndirectPages> {
        let mut pages = alloc::boxed::Box::new([[0u8; PAGE_BYTES]; MAX_INDIRECT_PAGES]);
        for (index, segment) in segments.iter().enumerate() {
            let page = &mut pages[index / 512];
            let at = (index % 512) * 8;
            page[at..at + 8].copy_from_slice(&segment.encode());
        }
        pages
    }

    #[test]
    fn indirect_headers() {
        let limits = Limits::default();
        let one = header(&indirect(OP_WRITE, 40, 0), &limits).unwrap();
        assert_eq!(one.pages(), 1);
        assert_eq!(one.page_grefs(), &[100]);
        assert_eq!(one.page_bytes(0), 320);
        assert_eq!(one.operation(), OP_WRITE);
        let limits = Limits::new(4096).unwrap();
        let many = header(&indirect(OP_READ, 513, 0), &limits).unwrap();
        assert_eq!(many.pages(), 2);
        assert_eq!(many.page_grefs(), &[100, 101]);
        assert_eq!((many.page_bytes(0), many.page_bytes(1)), (4096, 8));
        let all = header(&indirect(OP_READ, 4096, 0), &limits).unwrap();
        assert_eq!(all.pages(), 8);
        assert_eq!(all.page_bytes(7), 4096);
        assert!(Limits::new(4097).is_err());
    }

    #[test]
    fn indirect_header_rejections() {
        let limits = Limits::default();
        let too_many = header(&indirect(OP_READ, 257, 0), &limits).unwrap_err();
        assert_eq!(
            too_many.reason,
            Reason::TooManySegments {
                count: 257,
                max: 256
            }
        );
        assert_eq!(too_many.operation, OP_READ);
        assert_eq!(
            header(&indirect(OP_READ, 0, 0), &limits)
                .unwrap_err()
                .reason,
            Reason::NoSegments { operation: 0 }
        );
        for op in [
            OP_FLUSH_DISKCACHE,
            OP_WRITE_BARRIER,
            OP_DISCARD,
            OP_INDIRECT,
            9,
        ] {
            let rejection = header(&indirect(op, 8, 0), &limits).unwrap_err();
            assert_eq!(rejection.reason, Reason::IndirectOperation(op));
            assert!(rejection.reason.is_hostile());
            assert_eq!(rejection.response().operation, op);
        }
        // No indirect requests at all when the limit is 0.
        let none = Limits::new(0).unwrap();
        assert!(header(&indirect(OP_READ, 1, 0), &none).is_err());
    }

    #[test]
    fn indirect_segments_are_checked_like_direct_ones() {
        let limits = Limits::default();
        let mut segments: Vec<Segment> = (0..40).map(|i| segment(200 + i, 0, 7)).collect();
        let header = header(&indirect(OP_WRITE, 40, 80), &limits).unwrap();
        let request = header.complete(&pages_with(&segments), &vbd()).unwrap();
        assert_eq!(request.kind, Kind::Write);
        assert_eq!(request.operation, OP_WRITE);
        assert_eq!(request.device_sector, 1080);
        assert_eq!(request.segments.len(), 40);
        assert_eq!(request.segments[39].gref, 239);
        assert_eq!(request.data_bytes(), 40 * 4096);
        segments[33].last_sect = 8;
        let rejection = header.complete(&pages_with(&segments), &vbd()).unwrap_err();
        assert_eq!(
            rejection.reason,
            Reason::BeyondPage {
                segment: 33,
                last_sect: 8
            }
        );
        assert_eq!(rejection.id, 0x77);
        // Segments past nr_segments are ignored, whatever they hold.
        segments[33].last_sect = 7;
        segments.push(segment(1, 9, 3));
        assert!(header.complete(&pages_with(&segments), &vbd()).is_ok());
        // 40 full pages end exactly at the vbd's end; one sector later they do not.
        let end = VBD_SECTORS - 320;
        let header_end = super::tests::header(&indirect(OP_READ, 40, end), &limits).unwrap();
        assert!(header_end.complete(&pages_with(&segments), &vbd()).is_ok());
        let past = super::tests::header(&indirect(OP_READ, 40, end + 1), &limits).unwrap();
        assert!(matches!(
            past.complete(&pages_with(&segments), &vbd())
                .unwrap_err()
                .reason,
            Reason::OutOfRange(_)
        ));
        // A read-only vbd refuses the write, after the segments were checked.
        let read_only = Vbd::whole(VBD_SECTORS, true);
        assert_eq!(
            header
                .complete(&pages_with(&segments), &read_only)
                .unwrap_err()
                .reason,
            Reason::ReadOnly
        );
    }
}
