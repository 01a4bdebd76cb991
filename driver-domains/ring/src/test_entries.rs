//! Entry types for tests of the rings, on the host and between domains.
//!
//! [`Message`] is a 64-byte entry (32 slots in a page) that carries a check value over its
//! own contents, so a ping-pong test can tell a torn, stale or forged entry from a good one.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | `id` (little-endian) |
//! | 8 | 4 | `len`: bytes of `payload` in use (valid when at most 48) |
//! | 12 | 4 | `checksum`: [`Message::checksum_of`] over `id`, `len` and the used payload |
//! | 16 | 48 | `payload` |

use crate::entry::RingEntry;

/// A test message: an id, up to 48 payload bytes, and a check value over both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Sequence number or request id.
    pub id: u64,
    /// Bytes of `payload` in use.
    pub len: u32,
    /// [`Message::checksum_of`] of the other fields.
    pub checksum: u32,
    /// The payload; bytes past `len` are zero in messages built by [`Message::new`].
    pub payload: [u8; Message::PAYLOAD_BYTES],
}

impl Message {
    /// Payload capacity.
    pub const PAYLOAD_BYTES: usize = 48;

    /// A message with `data` as payload and a matching checksum, or `None` if `data` is
    /// longer than [`Message::PAYLOAD_BYTES`].
    pub fn new(id: u64, data: &[u8]) -> Option<Self> {
        if data.len() > Self::PAYLOAD_BYTES {
            return None;
        }
        let mut payload = [0u8; Self::PAYLOAD_BYTES];
        payload[..data.len()].copy_from_slice(data);
        // Fits: at most 48.
        let len = data.len() as u32;
        Some(Self {
            id,
            len,
            checksum: Self::checksum_of(id, data),
            payload,
        })
    }

    /// The payload bytes in use, or `None` if `len` is out of range.
    pub fn data(&self) -> Option<&[u8]> {
        self.payload.get(..usize::try_from(self.len).ok()?)
    }

    /// Whether `len` is in range and `checksum` matches the contents.
    pub fn is_intact(&self) -> bool {
        self.data()
            .is_some_and(|data| Self::checksum_of(self.id, data) == self.checksum)
    }

    /// The check value: 32-bit FNV-1a over the little-endian `id`, the little-endian length
    /// of `data`, then `data`.
    pub fn checksum_of(id: u64, data: &[u8]) -> u32 {
        const OFFSET_BASIS: u32 = 0x811c_9dc5;
        const PRIME: u32 = 0x0100_0193;
        // Callers pass at most a payload's worth; saturate rather than wrap otherwise.
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        id.to_le_bytes()
            .iter()
            .chain(len.to_le_bytes().iter())
            .chain(data)
            .fold(OFFSET_BASIS, |hash, &byte| {
                (hash ^ u32::from(byte)).wrapping_mul(PRIME)
            })
    }
}

impl RingEntry for Message {
    const SIZE: usize = 64;

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..16].copy_from_slice(&self.checksum.to_le_bytes());
        out[16..64].copy_from_slice(&self.payload);
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut id = [0u8; 8];
        let mut len = [0u8; 4];
        let mut checksum = [0u8; 4];
        let mut payload = [0u8; Self::PAYLOAD_BYTES];
        id.copy_from_slice(&bytes[0..8]);
        len.copy_from_slice(&bytes[8..12]);
        checksum.copy_from_slice(&bytes[12..16]);
        payload.copy_from_slice(&bytes[16..64]);
        Self {
            id: u64::from_le_bytes(id),
            len: u32::from_le_bytes(len),
            checksum: u32::from_le_bytes(checksum),
            payload,
        }
    }
}

const _: () = assert!(Message::SIZE == 16 + Message::PAYLOAD_BYTES);
const _: () = assert!(crate::layout::ring_slots(crate::PAGE_SIZE_BYTES, Message::SIZE) == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let message = Message::new(0x0102_0304_0506_0708, b"ping").unwrap();
        let mut bytes = [0u8; 64];
        message.encode(&mut bytes);
        assert_eq!(&bytes[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[8..12], &[4, 0, 0, 0]);
        assert_eq!(&bytes[16..20], b"ping");
        assert_eq!(Message::decode(&bytes), message);
        assert!(message.is_intact());
        assert_eq!(message.data(), Some(&b"ping"[..]));
    }

    #[test]
    fn detects_damage() {
        let good = Message::new(7, b"hello").unwrap();
        let mut bad = good;
        bad.payload[1] ^= 1;
        assert!(!bad.is_intact());
        let mut bad = good;
        bad.id = 8;
        assert!(!bad.is_intact());
        let mut bad = good;
        bad.len = 49;
        assert!(!bad.is_intact());
        assert_eq!(bad.data(), None);
        let mut bad = good;
        bad.len = u32::MAX;
        assert!(!bad.is_intact());
        assert!(!Message::decode(&[0xff; 64]).is_intact());
    }

    #[test]
    fn payload_capacity_is_enforced() {
        assert!(Message::new(1, &[0; 48]).is_some());
        assert!(Message::new(1, &[0; 49]).is_none());
    }
}
