//! netif ring entries (`io/netif.h`, `XEN-ABI.md` §3.6), little-endian, `x86_64` layouts.
//!
//! | entry | bytes | layout |
//! |---|---|---|
//! | tx request ([`TxRequest`]) | 12 | 0 `gref` u32, 4 `offset` u16, 6 `flags` u16, 8 `id` u16, 10 `size` u16 |
//! | tx extra info ([`ExtraInfo`], in a tx request slot) | 12 | 0 `type` u8, 1 `flags` u8, 2 six bytes of the type's data (GSO: `size` u16, `type` u8, pad, `features` u16) |
//! | tx response ([`TxResponse`]) | 4 | 0 `id` u16, 2 `status` i16 |
//! | rx request ([`RxRequest`]) | 8 | 0 `id` u16, 2 pad, 4 `gref` u32 |
//! | rx response ([`RxResponse`]) | 8 | 0 `id` u16, 2 `offset` u16, 4 `flags` u16, 6 `status` i16 (bytes, or a negative status) |
//!
//! A tx ring slot is 12 bytes (the request is the larger), an rx slot 8. Decoding is total.

use xen_ring::RingEntry;

/// `NETTXF_csum_blank`: the checksum is to be filled in.
pub const TXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`.
pub const TXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the frame continues in the next slot.
pub const TXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: an extra-info slot follows this one.
pub const TXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`.
pub const RXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`.
pub const RXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`.
pub const RXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`.
pub const RXF_EXTRA_INFO: u16 = 1 << 3;

/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const EXTRA_TYPE_HASH: u8 = 4;
/// Types above this are unknown.
pub const EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const GSO_TYPE_TCPV4: u8 = 1;

/// `XEN_NETIF_RSP_DROPPED`.
pub const RSP_DROPPED: i16 = -2;
/// `XEN_NETIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `XEN_NETIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `XEN_NETIF_RSP_NULL`: the response to an extra-info slot.
pub const RSP_NULL: i16 = 1;

/// A granted page.
pub const PAGE_BYTES: usize = 4096;
/// Size of a tx slot.
pub const TX_SLOT_BYTES: usize = 12;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A tx request slot as the front-end wrote it: a data request, or (when the slot before
/// had [`TXF_EXTRA_INFO`]) the raw bytes of an extra-info slot, which [`ExtraInfo::from_slot`]
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    /// The first slot of a frame: the whole frame's size; later slots: this fragment's.
    pub size: u16,
    /// The slot's 12 bytes, for an extra-info slot.
    pub raw: [u8; TX_SLOT_BYTES],
}

impl RingEntry for TxRequest {
    const SIZE: usize = TX_SLOT_BYTES;

    fn encode(&self, out: &mut [u8]) {
        put(out, 0, &self.gref.to_le_bytes());
        put(out, 4, &self.offset.to_le_bytes());
        put(out, 6, &self.flags.to_le_bytes());
        put(out, 8, &self.id.to_le_bytes());
        put(out, 10, &self.size.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut raw = [0u8; TX_SLOT_BYTES];
        raw.copy_from_slice(&bytes[..TX_SLOT_BYTES]);
        Self {
            gref: u32_at(bytes, 0),
            offset: u16_at(bytes, 4),
            flags: u16_at(bytes, 6),
            id: u16_at(bytes, 8),
            size: u16_at(bytes, 10),
            raw,
        }
    }
}

/// An extra-info slot (`netif_extra_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraInfo {
    pub kind: u8,
    pub flags: u8,
    /// The type's six bytes.
    pub data: [u8; 6],
}

impl ExtraInfo {
    /// Reads the extra-info view of a tx slot.
    pub fn from_slot(slot: &TxRequest) -> Self {
        let mut data = [0u8; 6];
        data.copy_from_slice(&slot.raw[2..8]);
        Self {
            kind: slot.raw[0],
            flags: slot.raw[1],
            data,
        }
    }

    /// A GSO extra's segment size (the MSS) and GSO type.
    pub fn gso(&self) -> (u16, u8) {
        (
            u16::from_le_bytes([self.data[0], self.data[1]]),
            self.data[2],
        )
    }

    /// The slot bytes of this extra, for a front-end (tests) to write.
    pub fn to_slot(&self) -> TxRequest {
        let mut raw = [0u8; TX_SLOT_BYTES];
        raw[0] = self.kind;
        raw[1] = self.flags;
        raw[2..8].copy_from_slice(&self.data);
        TxRequest::decode(&raw)
    }
}

/// `netif_tx_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxResponse {
    pub id: u16,
    pub status: i16,
}

impl RingEntry for TxResponse {
    const SIZE: usize = 4;

    fn encode(&self, out: &mut [u8]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 2, &self.status.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            id: u16_at(bytes, 0),
            status: u16_at(bytes, 2) as i16,
        }
    }
}

/// `netif_rx_request`: a page the front-end posts for a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxRequest {
    pub id: u16,
    pub gref: u32,
}

impl RingEntry for RxRequest {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut [u8]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 4, &self.gref.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            id: u16_at(bytes, 0),
            gref: u32_at(bytes, 4),
        }
    }
}

/// `netif_rx_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    pub flags: u16,
    /// Bytes written, or a negative status.
    pub status: i16,
}

impl RingEntry for RxResponse {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut [u8]) {
        put(out, 0, &self.id.to_le_bytes());
        put(out, 2, &self.offset.to_le_bytes());
        put(out, 4, &self.flags.to_le_bytes());
        put(out, 6, &self.status.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            id: u16_at(bytes, 0),
            offset: u16_at(bytes, 2),
            flags: u16_at(bytes, 4),
            status: u16_at(bytes, 6) as i16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_the_documented_layout_and_round_trip() {
        let tx = TxRequest::decode(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(tx.gref, 0x0403_0201);
        assert_eq!(
            (tx.offset, tx.flags, tx.id, tx.size),
            (0x0605, 0x0807, 0x0a09, 0x0c0b)
        );
        let mut out = [0u8; 12];
        tx.encode(&mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let rsp = RxResponse {
            id: 7,
            offset: 2,
            flags: RXF_MORE_DATA,
            status: -2,
        };
        let mut out = [0u8; 8];
        rsp.encode(&mut out);
        assert_eq!(out, [7, 0, 2, 0, 4, 0, 0xfe, 0xff]);
        assert_eq!(RxResponse::decode(&out), rsp);
        let rx = RxRequest::decode(&[9, 0, 0xaa, 0xbb, 1, 0, 0, 0]);
        assert_eq!((rx.id, rx.gref), (9, 1));
        let gso = ExtraInfo {
            kind: EXTRA_TYPE_GSO,
            flags: 0,
            data: [0xb4, 0x05, 1, 0, 0, 0],
        };
        assert_eq!(ExtraInfo::from_slot(&gso.to_slot()), gso);
        assert_eq!(gso.gso(), (1460, GSO_TYPE_TCPV4));
    }
}
