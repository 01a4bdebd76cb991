//! Cutting a TCP/IPv4 frame that a guest sent with a GSO extra (`feature-gso-tcpv4`) into
//! frames the bridge carries: what a NIC's TCP segmentation offload does.
//!
//! With GSO, Linux's netfront hands over one frame of up to 64 KiB: one Ethernet, IPv4 and
//! TCP header, then the payload of many segments, and the segment size (the MSS) in the
//! extra-info slot. Each segment made here has:
//!
//! | field | value |
//! |---|---|
//! | Ethernet header | the frame's |
//! | IPv4 header | the frame's, options kept, total length of this segment, identification + n, header checksum computed |
//! | TCP header | the frame's, options kept, sequence number + n × MSS, FIN and PSH only on the last segment, CWR only on the first, checksum computed |
//! | payload | at most MSS bytes, in order |
//!
//! Refused ([`Refusal`], the frame is dropped): not TCP over IPv4 over Ethernet II, header
//! lengths that disagree with the frame, an IPv4 fragment, an MSS of 0, a segment longer
//! than [`MAX_FRAME`], more than [`MAX_SEGMENTS`] segments.

use alloc::vec::Vec;
use core::fmt;

use crate::csum;
use crate::handshake::MAX_FRAME;

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The most segments one frame may be cut into (64 KiB of payload at an MSS of 32).
pub const MAX_SEGMENTS: usize = 2048;

/// Why a GSO frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not TCP over IPv4 over Ethernet II.
    NotTcpv4,
    /// The IPv4 or TCP header lengths disagree with the frame.
    BadHeaders,
    /// An IPv4 fragment.
    Fragment,
    /// A segment size of 0, or one whose segments would be longer than [`MAX_FRAME`].
    SegmentSize(u16),
    /// More than [`MAX_SEGMENTS`] segments.
    TooManySegments(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTcpv4 => write!(f, "not TCP over IPv4"),
            Self::BadHeaders => {
                write!(f, "IPv4 or TCP header lengths that disagree with the frame")
            }
            Self::Fragment => write!(f, "an IPv4 fragment"),
            Self::SegmentSize(size) => write!(f, "a segment size of {size}"),
            Self::TooManySegments(n) => write!(f, "{n} segments, over {MAX_SEGMENTS}"),
        }
    }
}

/// Cuts `frame` into segments of at most `mss` payload bytes, appended to `out` with their
/// checksums complete (whatever the frame's checksum fields held). Returns how many.
///
/// # Errors
///
/// A [`Refusal`]; nothing is appended then.
pub fn segment_tcpv4(frame: &[u8], mss: u16, out: &mut Vec<Vec<u8>>) -> Result<usize, Refusal> {
    if frame.len() < ETH_HEADER + 20
        || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4
        || frame[ETH_HEADER] >> 4 != 4
    {
        return Err(Refusal::NotTcpv4);
    }
    let ip = &frame[ETH_HEADER..];
    let ip_header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != PROTO_TCP {
        return Err(Refusal::NotTcpv4);
    }
    if ip_header < 20 || total > ip.len() || total < ip_header + 20 {
        return Err(Refusal::BadHeaders);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(Refusal::Fragment);
    }
    let tcp_header = usize::from(ip[ip_header + 12] >> 4) * 4;
    if tcp_header < 20 || ip_header + tcp_header > total {
        return Err(Refusal::BadHeaders);
    }
    let headers = ETH_HEADER + ip_header + tcp_header;
    let mss_bytes = usize::from(mss);
    if mss == 0 || headers + mss_bytes > MAX_FRAME {
        return Err(Refusal::SegmentSize(mss));
    }
    let payload = &frame[headers..ETH_HEADER + total];
    let count = payload.len().div_ceil(mss_bytes).max(1);
    if count > MAX_SEGMENTS {
        return Err(Refusal::TooManySegments(count));
    }

    let id = u16::from_be_bytes([ip[4], ip[5]]);
    let tcp_at = ETH_HEADER + ip_header;
    let seq = u32::from_be_bytes([
        frame[tcp_at + 4],
        frame[tcp_at + 5],
        frame[tcp_at + 6],
        frame[tcp_at + 7],
    ]);
    let flags = frame[tcp_at + 13];
    out.reserve(count);
    for n in 0..count {
        let start = n * mss_bytes;
        let chunk = &payload[start..payload.len().min(start + mss_bytes)];
        let mut segment = Vec::with_capacity(headers + chunk.len());
        segment.extend_from_slice(&frame[..headers]);
        segment.extend_from_slice(chunk);

        let length = (ip_header + tcp_header + chunk.len()) as u16;
        segment[ETH_HEADER + 2..ETH_HEADER + 4].copy_from_slice(&length.to_be_bytes());
        let segment_id = id.wrapping_add(n as u16);
        segment[ETH_HEADER + 4..ETH_HEADER + 6].copy_from_slice(&segment_id.to_be_bytes());
        csum::fill_ipv4_header(&mut segment[ETH_HEADER..tcp_at]);

        let segment_seq = seq.wrapping_add(start as u32);
        segment[tcp_at + 4..tcp_at + 8].copy_from_slice(&segment_seq.to_be_bytes());
        let mut segment_flags = flags;
        if n + 1 < count {
            segment_flags &= !(TCP_FIN | TCP_PSH);
        }
        if n > 0 {
            segment_flags &= !TCP_CWR;
        }
        segment[tcp_at + 13] = segment_flags;
        // Cannot fail: the headers were checked above.
        csum::complete(&mut segment).map_err(|_| Refusal::BadHeaders)?;
        out.push(segment);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload` and the given TCP flags; the checksum
    /// fields hold junk, as netfront's partial sums would be to us.
    fn tcp(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        f.extend_from_slice(&[0x00, 0x16, 0x3e, 1, 2, 3]);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            6,
        ]);
        f.extend_from_slice(&[0xde, 0xad]);
        f.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
        // ports 1234 -> 80, seq 0xfffffff0 (wraps), ack 7, data offset 5, flags, window.
        f.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 7]);
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0xbe, 0xef, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn a_large_frame_becomes_mss_segments_with_right_headers() {
        let data = body(4000);
        let frame = tcp(&data, TCP_PSH | TCP_FIN | TCP_CWR | 0x10);
        let mut out = Vec::new();
        assert_eq!(segment_tcpv4(&frame, 1448, &mut out), Ok(3));
        let mut joined = Vec::new();
        for (n, segment) in out.iter().enumerate() {
            assert!(segment.len() <= MAX_FRAME);
            let total = u16::from_be_bytes([segment[16], segment[17]]) as usize;
            assert_eq!(total + ETH_HEADER, segment.len());
            assert_eq!(
                u16::from_be_bytes([segment[18], segment[19]]),
                0x1234 + n as u16
            );
            assert!(csum::ipv4_header_ok(&segment[14..34]));
            assert_eq!(csum::verify(segment), Some(true));
            let seq = u32::from_be_bytes([segment[38], segment[39], segment[40], segment[41]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(1448 * n as u32));
            let flags = segment[47];
            assert_eq!(flags & 0x10, 0x10, "ACK stays on every segment");
            assert_eq!(flags & (TCP_PSH | TCP_FIN) != 0, n == 2);
            assert_eq!(flags & TCP_CWR != 0, n == 0);
            joined.extend_from_slice(&segment[54..]);
        }
        assert_eq!(out[2].len(), 54 + 4000 - 2 * 1448);
        assert_eq!(joined, data);
    }

    #[test]
    fn a_frame_within_one_segment_is_passed_with_checksums() {
        let frame = tcp(&body(100), 0x18);
        let mut out = Vec::new();
        assert_eq!(segment_tcpv4(&frame, 1448, &mut out), Ok(1));
        assert_eq!(out[0].len(), frame.len());
        assert_eq!(csum::verify(&out[0]), Some(true));
        assert!(csum::ipv4_header_ok(&out[0][14..34]));
        assert_eq!(out[0][47], 0x18);
    }

    #[test]
    fn what_cannot_be_segmented_is_refused_and_nothing_appended() {
        let frame = tcp(&body(3000), 0x10);
        let mut out = Vec::new();
        assert_eq!(
            segment_tcpv4(&frame, 0, &mut out),
            Err(Refusal::SegmentSize(0))
        );
        assert_eq!(
            segment_tcpv4(&frame, 1500, &mut out),
            Err(Refusal::SegmentSize(1500))
        );
        let mut f = frame.clone();
        f[23] = 17;
        assert_eq!(segment_tcpv4(&f, 1000, &mut out), Err(Refusal::NotTcpv4));
        let mut f = frame.clone();
        f[12] = 0x86;
        assert_eq!(segment_tcpv4(&f, 1000, &mut out), Err(Refusal::NotTcpv4));
        let mut f = frame.clone();
        f[20] = 0x20;
        assert_eq!(segment_tcpv4(&f, 1000, &mut out), Err(Refusal::Fragment));
        let mut f = frame.clone();
        f[16] = 0xff;
        assert_eq!(segment_tcpv4(&f, 1000, &mut out), Err(Refusal::BadHeaders));
        let mut f = frame.clone();
        f[46] = 0xf0; // a 60-byte TCP header, but the IP length is fine: still within
        assert!(segment_tcpv4(&f, 1000, &mut out).is_ok());
        out.clear();
        let mut f = tcp(&[], 0x10);
        f[46] = 0xf0; // a 60-byte TCP header in a 20-byte segment
        assert_eq!(segment_tcpv4(&f, 1000, &mut out), Err(Refusal::BadHeaders));
        let big = tcp(&body(65000), 0x10);
        assert_eq!(
            segment_tcpv4(&big, 16, &mut out),
            Err(Refusal::TooManySegments(4063))
        );
        assert!(out.is_empty());
        assert_eq!(
            segment_tcpv4(&big[..30], 16, &mut out),
            Err(Refusal::NotTcpv4)
        );
        assert!(out.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic_and_segments_fit(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            mss in 0u16..2000,
        ) {
            let mut out = Vec::new();
            if let Ok(n) = segment_tcpv4(&bytes, mss, &mut out) {
                proptest::prop_assert_eq!(n, out.len());
                for segment in &out {
                    proptest::prop_assert!(segment.len() <= MAX_FRAME);
                    proptest::prop_assert_eq!(csum::verify(segment), Some(true));
                }
            }
        }
    }
}
