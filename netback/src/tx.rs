//! A frame on the tx ring, from the slots the front-end published (each copied out of the
//! ring once, [`xen_ring::BackRing::next_request`]) to a checked [`Frame`].
//!
//! # A frame's slots
//!
//! 1. The first data slot: `size` is the whole frame's length, `offset`/`gref` its first
//!    piece; [`TXF_EXTRA_INFO`] says extra-info slots follow it, [`TXF_MORE_DATA`] that more
//!    data slots follow.
//! 2. Extra-info slots, chained with [`EXTRA_FLAG_MORE`]; each is answered [`RSP_NULL`].
//! 3. Further data slots while the one before had [`TXF_MORE_DATA`]; `size` is that piece's.
//!
//! The first piece is the frame's length minus the later pieces.
//!
//! # Checks
//!
//! | what | outcome |
//! |---|---|
//! | the frame continues past the published slots | [`Parsed::Incomplete`]: wait for more |
//! | more than [`MAX_SLOTS`] data slots, a piece crossing its page (`offset + size > 4096`), an extra of unknown type | [`Fatal`]: the vif is cut off (no correct front-end sends it) |
//! | a frame shorter than an Ethernet header, later pieces longer than the frame, a GSO extra of an unknown GSO type or a zero segment size | [`Parsed::Dropped`]: every slot answered with [`RSP_ERROR`] (or [`RSP_NULL`]), the frame dropped |

use alloc::vec::Vec;
use core::fmt;

use crate::wire::{
    ExtraInfo, TxRequest, TxResponse, EXTRA_FLAG_MORE, EXTRA_TYPE_GSO, EXTRA_TYPE_MAX,
    GSO_TYPE_TCPV4, PAGE_BYTES, RSP_ERROR, RSP_NULL, RSP_OKAY, TXF_CSUM_BLANK, TXF_EXTRA_INFO,
    TXF_MORE_DATA,
};

/// Data slots one frame may take (`XEN_NETBK_LEGACY_SLOTS_MAX`, what netfront keeps to).
pub const MAX_SLOTS: usize = 18;
/// Extra-info slots one frame may carry.
pub const MAX_EXTRAS: usize = 4;
/// An Ethernet header.
pub const ETH_HEADER_BYTES: u16 = 14;

/// A piece of a frame in a granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub gref: u32,
    pub offset: u16,
    pub len: u16,
}

/// A checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its length in bytes (the sum of the pieces).
    pub len: u16,
    pub pieces: Vec<Piece>,
    /// GSO: segment size and type.
    pub gso: Option<(u16, u8)>,
    /// The checksum is to be filled in.
    pub csum_blank: bool,
    /// The responses to give once the frame is sent (or [`Frame::refuse`]d): one per slot.
    pub responses: Vec<TxResponse>,
}

impl Frame {
    /// The responses for a frame that could not be sent after all (device error).
    pub fn refuse(&self) -> Vec<TxResponse> {
        self.responses
            .iter()
            .map(|r| TxResponse {
                id: r.id,
                status: if r.status == RSP_NULL {
                    RSP_NULL
                } else {
                    RSP_ERROR
                },
            })
            .collect()
    }
}

/// What the front-end's next slots hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame, taking `slots` slots.
    Frame { frame: Frame, slots: usize },
    /// A malformed frame of `slots` slots, answered with `responses` and dropped.
    Dropped {
        responses: Vec<TxResponse>,
        slots: usize,
        why: Drop,
    },
    /// The frame goes on past the published slots.
    Incomplete,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    TooShort(u16),
    PiecesLongerThanFrame { frame: u16, pieces: u32 },
    BadGso { size: u16, kind: u8 },
}

/// Why the vif is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    TooManySlots,
    TooManyExtras,
    CrossesPage { offset: u16, size: u16 },
    UnknownExtra(u8),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManySlots => write!(f, "a frame of more than {MAX_SLOTS} slots"),
            Self::TooManyExtras => write!(f, "more than {MAX_EXTRAS} extra-info slots"),
            Self::CrossesPage { offset, size } => {
                write!(
                    f,
                    "a piece of {size} bytes at offset {offset}, across the end of its page"
                )
            }
            Self::UnknownExtra(kind) => write!(f, "an extra-info slot of unknown type {kind}"),
        }
    }
}

fn okay(id: u16) -> TxResponse {
    TxResponse {
        id,
        status: RSP_OKAY,
    }
}

/// Reads the frame at the start of `slots` (the published, not yet consumed tx requests).
///
/// # Errors
///
/// [`Fatal`] for what no correct front-end sends.
pub fn parse(slots: &[TxRequest]) -> Result<Parsed, Fatal> {
    let Some(first) = slots.first() else {
        return Ok(Parsed::Incomplete);
    };
    let mut responses = Vec::new();
    let mut at = 1;
    let mut gso = None;
    let mut bad_gso = None;
    if first.flags & TXF_EXTRA_INFO != 0 {
        loop {
            let Some(slot) = slots.get(at) else {
                return Ok(Parsed::Incomplete);
            };
            let extra = ExtraInfo::from_slot(slot);
            if extra.kind == 0 || extra.kind >= EXTRA_TYPE_MAX {
                return Err(Fatal::UnknownExtra(extra.kind));
            }
            if at > MAX_EXTRAS {
                return Err(Fatal::TooManyExtras);
            }
            if extra.kind == EXTRA_TYPE_GSO {
                let (size, kind) = extra.gso();
                if size == 0 || kind != GSO_TYPE_TCPV4 {
                    bad_gso = Some(Drop::BadGso { size, kind });
                }
                gso = Some((size, kind));
            }
            // The id of an extra slot is not the front-end's to choose: Linux's back-end
            // answers it with the id of the data slot, and netfront expects that.
            responses.push(TxResponse {
                id: first.id,
                status: RSP_NULL,
            });
            at += 1;
            if extra.flags & EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    let mut data = Vec::from([*first]);
    let mut more = first.flags & TXF_MORE_DATA != 0;
    while more {
        let Some(slot) = slots.get(at) else {
            return Ok(Parsed::Incomplete);
        };
        if data.len() >= MAX_SLOTS {
            return Err(Fatal::TooManySlots);
        }
        data.push(*slot);
        more = slot.flags & TXF_MORE_DATA != 0;
        at += 1;
    }
    let later: u32 = data[1..].iter().map(|s| u32::from(s.size)).sum();
    let drop = if first.size < ETH_HEADER_BYTES {
        Some(Drop::TooShort(first.size))
    } else if later > u32::from(first.size) {
        Some(Drop::PiecesLongerThanFrame {
            frame: first.size,
            pieces: later,
        })
    } else {
        bad_gso
    };
    let first_len = first.size.wrapping_sub(later as u16);
    let mut pieces = Vec::new();
    for (index, slot) in data.iter().enumerate() {
        let len = if index == 0 { first_len } else { slot.size };
        if usize::from(slot.offset) + usize::from(len) > PAGE_BYTES && drop.is_none() {
            return Err(Fatal::CrossesPage {
                offset: slot.offset,
                size: len,
            });
        }
        pieces.push(Piece {
            gref: slot.gref,
            offset: slot.offset,
            len,
        });
    }
    // Responses in slot order: the first data slot, its extras, then the rest.
    let mut ordered = Vec::from([okay(first.id)]);
    ordered.extend(responses);
    ordered.extend(data[1..].iter().map(|s| okay(s.id)));
    if let Some(why) = drop {
        let frame = Frame {
            len: 0,
            pieces: Vec::new(),
            gso: None,
            csum_blank: false,
            responses: ordered,
        };
        return Ok(Parsed::Dropped {
            responses: frame.refuse(),
            slots: at,
            why,
        });
    }
    Ok(Parsed::Frame {
        frame: Frame {
            len: first.size,
            pieces,
            gso,
            csum_blank: first.flags & TXF_CSUM_BLANK != 0,
            responses: ordered,
        },
        slots: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EXTRA_TYPE_MCAST_ADD;
    use proptest::prelude::*;

    fn slot(id: u16, gref: u32, offset: u16, size: u16, flags: u16) -> TxRequest {
        TxRequest {
            gref,
            offset,
            flags,
            id,
            size,
            raw: [0; 12],
        }
    }

    fn frame(parsed: Parsed) -> (Frame, usize) {
        match parsed {
            Parsed::Frame { frame, slots } => (frame, slots),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_one_slot_frame() {
        let (f, n) = frame(parse(&[slot(5, 9, 100, 60, TXF_CSUM_BLANK)]).unwrap());
        assert_eq!(n, 1);
        assert_eq!(f.len, 60);
        assert_eq!(
            f.pieces,
            [Piece {
                gref: 9,
                offset: 100,
                len: 60
            }]
        );
        assert!(f.csum_blank);
        assert_eq!(f.responses, [okay(5)]);
    }

    #[test]
    fn a_frame_in_three_slots_with_a_gso_extra() {
        let gso = ExtraInfo {
            kind: EXTRA_TYPE_GSO,
            flags: 0,
            data: [0xb4, 0x05, 1, 0, 0, 0],
        };
        let slots = [
            slot(1, 10, 0, 9000, TXF_EXTRA_INFO | TXF_MORE_DATA),
            gso.to_slot(),
            slot(2, 11, 0, 4096, TXF_MORE_DATA),
            slot(3, 12, 0, 2904, 0),
            slot(4, 13, 0, 60, 0),
        ];
        let (f, n) = frame(parse(&slots).unwrap());
        assert_eq!(n, 4);
        assert_eq!(f.gso, Some((1460, GSO_TYPE_TCPV4)));
        let lens: Vec<u16> = f.pieces.iter().map(|p| p.len).collect();
        assert_eq!(lens, [2000, 4096, 2904]);
        assert_eq!(
            f.responses,
            [
                okay(1),
                TxResponse {
                    id: 1,
                    status: RSP_NULL
                },
                okay(2),
                okay(3)
            ]
        );
        // The next frame starts after it.
        assert_eq!(frame(parse(&slots[n..]).unwrap()).0.len, 60);
    }

    #[test]
    fn a_frame_going_past_the_published_slots_waits() {
        assert_eq!(parse(&[]).unwrap(), Parsed::Incomplete);
        assert_eq!(
            parse(&[slot(1, 1, 0, 100, TXF_MORE_DATA)]).unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(
            parse(&[slot(1, 1, 0, 100, TXF_EXTRA_INFO)]).unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn hostile_frames_are_fatal() {
        let mut many = Vec::from([slot(0, 1, 0, 19 * 60, TXF_MORE_DATA)]);
        for id in 1..19 {
            many.push(slot(id, 1, 0, 60, TXF_MORE_DATA));
        }
        assert_eq!(parse(&many), Err(Fatal::TooManySlots));
        assert_eq!(
            parse(&[slot(0, 1, 4000, 200, 0)]),
            Err(Fatal::CrossesPage {
                offset: 4000,
                size: 200
            })
        );
        let unknown = ExtraInfo {
            kind: 9,
            flags: 0,
            data: [0; 6],
        };
        assert_eq!(
            parse(&[slot(0, 1, 0, 60, TXF_EXTRA_INFO), unknown.to_slot()]),
            Err(Fatal::UnknownExtra(9))
        );
        let chained = ExtraInfo {
            kind: EXTRA_TYPE_MCAST_ADD,
            flags: EXTRA_FLAG_MORE,
            data: [0; 6],
        };
        let mut extras = Vec::from([slot(0, 1, 0, 60, TXF_EXTRA_INFO)]);
        extras.extend([chained.to_slot(); 6]);
        assert_eq!(parse(&extras), Err(Fatal::TooManyExtras));
    }

    #[test]
    fn malformed_frames_are_dropped_with_errors() {
        let short = parse(&[slot(3, 1, 0, 10, 0)]).unwrap();
        assert_eq!(
            short,
            Parsed::Dropped {
                responses: Vec::from([TxResponse {
                    id: 3,
                    status: RSP_ERROR
                }]),
                slots: 1,
                why: Drop::TooShort(10),
            }
        );
        let longer = parse(&[slot(1, 1, 0, 100, TXF_MORE_DATA), slot(2, 1, 0, 200, 0)]).unwrap();
        assert!(matches!(
            longer,
            Parsed::Dropped {
                slots: 2,
                why: Drop::PiecesLongerThanFrame { .. },
                ..
            }
        ));
        let gso = ExtraInfo {
            kind: EXTRA_TYPE_GSO,
            flags: 0,
            data: [0, 0, 1, 0, 0, 0],
        };
        let bad = parse(&[slot(1, 1, 0, 100, TXF_EXTRA_INFO), gso.to_slot()]).unwrap();
        let Parsed::Dropped {
            responses,
            slots: 2,
            why: Drop::BadGso { size: 0, kind: 1 },
        } = bad
        else {
            panic!("{bad:?}");
        };
        assert_eq!(responses[1].status, RSP_NULL);
    }

    proptest! {
        #[test]
        fn any_slots_parse_without_panicking_into_pieces_within_their_pages(
            raw in proptest::collection::vec(any::<[u8; 12]>(), 0..40)
        ) {
            use xen_ring::RingEntry;
            let slots: Vec<TxRequest> = raw.iter().map(|b| TxRequest::decode(b)).collect();
            match parse(&slots) {
                Ok(Parsed::Frame { frame, slots: n }) => {
                    prop_assert!(n <= slots.len() && frame.responses.len() == n);
                    prop_assert!(frame.pieces.len() <= MAX_SLOTS);
                    let total: u32 = frame.pieces.iter().map(|p| u32::from(p.len)).sum();
                    prop_assert_eq!(total, u32::from(frame.len));
                    for p in &frame.pieces {
                        prop_assert!(usize::from(p.offset) + usize::from(p.len) <= PAGE_BYTES);
                    }
                }
                Ok(Parsed::Dropped { responses, slots: n, .. }) => {
                    prop_assert!(n <= slots.len() && responses.len() == n);
                    prop_assert!(responses.iter().all(|r| r.status != RSP_OKAY));
                }
                Ok(Parsed::Incomplete) | Err(_) => {}
            }
        }
    }
}
