//! Filling in the checksum of a frame a guest sent with `NETTXF_csum_blank`.
//!
//! Linux's netfront always offloads the IPv4 TCP and UDP checksums: such a frame's L4
//! checksum field holds only the pseudo-header sum. The NIC here is given whole frames (no
//! offloads are negotiated with it), and other guests expect correct checksums, so the
//! backend computes the checksum over the pseudo-header and the whole L4 segment.
//!
//! Handled: Ethernet II with an IPv4 header (any options) carrying TCP or UDP, not a
//! fragment. Anything else marked blank cannot be completed ([`Incomplete`]) and the frame
//! is dropped.

use core::fmt;

/// Ethertype of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETH_HEADER: usize = 14;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Why a blank checksum could not be filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// Not IPv4 over Ethernet II.
    NotIpv4,
    /// The IPv4 header is cut short or its lengths disagree with the frame.
    BadIpHeader,
    /// A fragment: the checksum covers data not in this frame.
    Fragment,
    /// Neither TCP nor UDP.
    Protocol(u8),
    /// The L4 header is cut short.
    Short,
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotIpv4 => write!(f, "not IPv4"),
            Self::BadIpHeader => write!(f, "a malformed IPv4 header"),
            Self::Fragment => write!(f, "an IPv4 fragment"),
            Self::Protocol(p) => write!(f, "IP protocol {p}, neither TCP nor UDP"),
            Self::Short => write!(f, "a cut-short TCP or UDP header"),
        }
    }
}

/// The one's-complement sum of `bytes` (big-endian 16-bit words, an odd last byte padded),
/// added to `sum`, not folded.
fn add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut words = bytes.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Computes and writes the TCP or UDP checksum of `frame` (see the module documentation).
///
/// # Errors
///
/// [`Incomplete`] if the frame is not one this can complete; it is left unchanged.
pub fn complete(frame: &mut [u8]) -> Result<(), Incomplete> {
    if frame.len() < ETH_HEADER + 20 || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4
    {
        return Err(Incomplete::NotIpv4);
    }
    let ip = &frame[ETH_HEADER..];
    if ip[0] >> 4 != 4 {
        return Err(Incomplete::NotIpv4);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return Err(Incomplete::BadIpHeader);
    }
    let fragment = u16::from_be_bytes([ip[6], ip[7]]);
    // More-fragments flag, or a fragment offset.
    if fragment & 0x3fff != 0 {
        return Err(Incomplete::Fragment);
    }
    let protocol = ip[9];
    let field = match protocol {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        other => return Err(Incomplete::Protocol(other)),
    };
    let l4_len = total_len - header_len;
    if l4_len < field + 2 || (protocol == PROTO_TCP && l4_len < 20) {
        return Err(Incomplete::Short);
    }
    let mut sum = add(0, &ip[12..20]);
    sum += u32::from(protocol);
    sum += l4_len as u32;
    let l4_start = ETH_HEADER + header_len;
    let at = l4_start + field;
    frame[at] = 0;
    frame[at + 1] = 0;
    sum = add(sum, &frame[l4_start..l4_start + l4_len]);
    let mut checksum = !fold(sum);
    if protocol == PROTO_UDP && checksum == 0 {
        // UDP sends a computed zero as all ones (zero means "no checksum").
        checksum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

/// Writes the header checksum of the IPv4 header `header` (its length is the header's,
/// options included).
pub fn fill_ipv4_header(header: &mut [u8]) {
    header[10] = 0;
    header[11] = 0;
    let checksum = !fold(add(0, header));
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
}

/// Whether the IPv4 header `header` carries a right header checksum.
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    fold(add(0, header)) == 0xffff
}

/// Whether the TCP or UDP checksum of `frame` (IPv4) is right: `None` if the frame is not
/// one [`complete`] handles. For tests and the receive path's statistics.
pub fn verify(frame: &[u8]) -> Option<bool> {
    let mut copy = alloc::vec::Vec::from(frame);
    complete(&mut copy).ok()?;
    Some(copy == frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// An Ethernet + IPv4 + UDP frame with `payload`, checksum field 0.
    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[0x00, 0x16, 0x3e, 1, 2, 3]);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            17,
        ]);
        f.extend_from_slice(&[0, 0]); // IP header checksum: not our business
        f.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
        let ulen = (8 + payload.len()) as u16;
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn udp_checksum_matches_a_hand_computed_one() {
        let mut frame = udp(b"hi");
        complete(&mut frame).unwrap();
        // Pseudo-header: 0x0a00+0x020f+0x0a00+0x0202+0x0011+0x000a; UDP header with zero
        // checksum: 0x3039+0x0035+0x000a; data: 0x6869.
        let sum: u32 =
            0x0a00 + 0x020f + 0x0a00 + 0x0202 + 0x0011 + 0x000a + 0x3039 + 0x0035 + 0x000a + 0x6869;
        let expected = !fold(sum);
        assert_eq!(&frame[40..42], &expected.to_be_bytes());
        assert_eq!(verify(&frame), Some(true));
        frame[42] ^= 1;
        assert_eq!(verify(&frame), Some(false));
    }

    #[test]
    fn a_partial_pseudo_header_sum_is_replaced_and_odd_lengths_pad() {
        let mut a = udp(b"odd");
        let mut b = a.clone();
        b[40] = 0x12; // what netfront leaves there
        b[41] = 0x34;
        complete(&mut a).unwrap();
        complete(&mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(verify(&a), Some(true));
    }

    #[test]
    fn tcp_field_is_at_sixteen() {
        let mut f = udp(&[0u8; 20]);
        f[23] = 6; // protocol TCP; the "UDP header" and payload become a 28-byte TCP segment
        complete(&mut f).unwrap();
        assert_eq!(verify(&f), Some(true));
        assert_eq!(&f[38..40], &[0x00, 0x1c]); // the UDP length bytes, untouched
    }

    #[test]
    fn what_cannot_be_completed_is_refused_unchanged() {
        let frame = udp(b"x");
        let mut f = frame.clone();
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(complete(&mut f), Err(Incomplete::NotIpv4));
        let mut f = frame.clone();
        f[20] = 0x20; // more fragments
        assert_eq!(complete(&mut f), Err(Incomplete::Fragment));
        let mut f = frame.clone();
        f[23] = 1;
        assert_eq!(complete(&mut f), Err(Incomplete::Protocol(1)));
        let mut f = frame.clone();
        f[17] = 0xff; // total length past the frame
        assert_eq!(complete(&mut f), Err(Incomplete::BadIpHeader));
        let mut f = frame[..20].to_vec();
        assert_eq!(complete(&mut f), Err(Incomplete::NotIpv4));
        let mut f = frame.clone();
        f[23] = 6; // TCP, but only 9 bytes of segment
        assert_eq!(complete(&mut f.clone()), Err(Incomplete::Short));
        assert_eq!(complete(&mut f), Err(Incomplete::Short));
    }
}
