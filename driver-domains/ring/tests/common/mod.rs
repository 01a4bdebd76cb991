//! Entry types shared by the integration tests: a netif-tx-like pair with odd sizes (so
//! slots straddle 4-byte words) and a one-word entry for small rings.
#![allow(dead_code)]

use xen_ring::RingEntry;

/// A 12-byte request shaped like `netif_tx_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

impl RingEntry for TxRequest {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.gref.to_le_bytes());
        out[4..6].copy_from_slice(&self.offset.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..10].copy_from_slice(&self.id.to_le_bytes());
        out[10..12].copy_from_slice(&self.size.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Self {
            gref: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            offset: u16_at(4),
            flags: u16_at(6),
            id: u16_at(8),
            size: u16_at(10),
        }
    }
}

impl TxRequest {
    /// A request whose fields are all derived from `sequence`, so a copy can be checked.
    pub fn numbered(sequence: u64) -> Self {
        let low = sequence as u16;
        Self {
            gref: (sequence as u32) ^ 0x5a5a_0000,
            offset: low.wrapping_mul(3),
            flags: low ^ 0xffff,
            id: low,
            size: low.wrapping_add(7),
        }
    }
}

/// A 4-byte response shaped like `netif_tx_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxResponse {
    pub id: u16,
    pub status: i16,
}

impl RingEntry for TxResponse {
    const SIZE: usize = 4;

    fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.id.to_le_bytes());
        out[2..4].copy_from_slice(&self.status.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            id: u16::from_le_bytes([bytes[0], bytes[1]]),
            status: i16::from_le_bytes([bytes[2], bytes[3]]),
        }
    }
}

/// A one-word entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word(pub u32);

impl RingEntry for Word {
    const SIZE: usize = 4;

    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.0.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}
