//! Errors: the peer broke the protocol ([`RingError`]), no slot is free ([`RingFull`]), or
//! the entry types do not fit the region ([`LayoutError`]).

use core::fmt;

/// The peer published a producer index it cannot legitimately have reached.
///
/// The ring's private state is left as it was. The peer is hostile or broken: the caller
/// should stop using the ring and disconnect; no further entry from it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// `req_prod` (as read by the back-end) is behind the requests already consumed, or
    /// more than a ring's worth ahead of the responses produced so far.
    RequestProducerOutOfRange {
        /// The value read from the shared region.
        req_prod: u32,
        /// The back-end's next request to consume.
        req_cons: u32,
        /// The back-end's next response slot.
        rsp_prod_pvt: u32,
    },
    /// `rsp_prod` (as read by the front-end) is behind the responses already consumed, or
    /// ahead of the requests the front-end has published.
    ResponseProducerOutOfRange {
        /// The value read from the shared region.
        rsp_prod: u32,
        /// The front-end's next response to consume.
        rsp_cons: u32,
        /// The requests the front-end has published (`req_prod` as last pushed).
        req_prod: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::RequestProducerOutOfRange {
                req_prod,
                req_cons,
                rsp_prod_pvt,
            } => write!(
                f,
                "front-end published req_prod {req_prod:#x} outside the legal window \
                 (req_cons {req_cons:#x}, rsp_prod_pvt {rsp_prod_pvt:#x})"
            ),
            Self::ResponseProducerOutOfRange {
                rsp_prod,
                rsp_cons,
                req_prod,
            } => write!(
                f,
                "back-end published rsp_prod {rsp_prod:#x} outside the legal window \
                 (rsp_cons {rsp_cons:#x}, req_prod {req_prod:#x})"
            ),
        }
    }
}

/// No slot is available: the front-end has a ring's worth of requests outstanding, or the
/// back-end has no consumed request left to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull;

impl fmt::Display for RingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no free ring slot")
    }
}

/// The request and response types cannot form a ring in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Both entry types have size zero.
    EmptyEntry,
    /// An entry is larger than [`crate::MAX_ENTRY_BYTES`].
    EntryTooLarge {
        /// The larger of the request and response sizes.
        entry_bytes: usize,
    },
    /// Not even one slot fits after the 64-byte header.
    RegionTooSmall {
        /// The region's size.
        region_bytes: usize,
        /// The size of one slot.
        slot_bytes: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EmptyEntry => f.write_str("request and response entries are both empty"),
            Self::EntryTooLarge { entry_bytes } => write!(
                f,
                "entry of {entry_bytes} bytes exceeds the {} byte limit",
                crate::MAX_ENTRY_BYTES
            ),
            Self::RegionTooSmall {
                region_bytes,
                slot_bytes,
            } => write!(
                f,
                "a {region_bytes} byte region has no room for one {slot_bytes} byte slot"
            ),
        }
    }
}

/// A ring a restarted back-end cannot take over ([`crate::BackRing::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// The entry types do not fit the region.
    Layout(LayoutError),
    /// The front-end's indices are impossible.
    Ring(RingError),
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout(e) => write!(f, "{e}"),
            Self::Ring(e) => write!(f, "{e}"),
        }
    }
}
