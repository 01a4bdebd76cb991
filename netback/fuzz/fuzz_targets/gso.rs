//! A frame a front-end sent with a GSO extra, arbitrary, cut into segments as netback does
//! (`netback::gso`): the first two bytes are the segment size, the rest the frame.
//!
//! Nothing may panic. When the frame is accepted, every segment fits the bridge, carries
//! right IPv4 header and TCP checksums, and the segments' payloads put together are the
//! frame's payload; when it is refused, nothing is appended.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::gso::segment_tcpv4;
use netback::handshake::MAX_FRAME;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mss = u16::from_le_bytes([data[0], data[1]]);
    let frame = &data[2..];
    let mut out = Vec::new();
    match segment_tcpv4(frame, mss, &mut out) {
        Ok(count) => {
            assert_eq!(count, out.len());
            let ip_header = usize::from(frame[14] & 0x0f) * 4;
            let tcp_header = usize::from(frame[14 + ip_header + 12] >> 4) * 4;
            let headers = 14 + ip_header + tcp_header;
            let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            let mut payload = Vec::new();
            for segment in &out {
                assert!(segment.len() <= MAX_FRAME);
                assert!(netback::csum::ipv4_header_ok(&segment[14..14 + ip_header]));
                assert_eq!(netback::csum::verify(segment), Some(true));
                payload.extend_from_slice(&segment[headers..]);
            }
            assert_eq!(payload, &frame[headers..14 + total]);
        }
        Err(_) => assert!(out.is_empty()),
    }
});
