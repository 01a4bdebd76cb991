//! Index arithmetic of Xen's byte-stream rings: the xenstore ring (`req[1024]`/`rsp[1024]`,
//! see [`crate::xenstore`]) and the console ring (`out[2048]`, see [`crate::console_ring`]).
//!
//! Each direction is a power-of-two array of bytes with two free-running `u32` indices: the
//! producer's `prod` and the consumer's `cons`. Byte `i` of the stream lives at
//! `ring[i & (size - 1)]`, so `prod - cons` (wrapping) is the number of bytes written and not
//! yet read. A peer that publishes an index more than `size` away from the other one has
//! broken the protocol; these functions report that as `None` instead of computing nonsense.
//!
//! [`produce`] and [`consume`] move bytes through one direction of such a ring in a
//! [`SharedPage`]: the producer reads the consumer's index (acquire), copies, then publishes
//! its own index (release); the consumer reads the producer's index (acquire), copies out,
//! then publishes its own (release). Notifying the peer is the caller's job.

use xen_ring::SharedPage;

/// One direction of a byte ring inside a shared page: where its array and indices are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Offset of the byte array.
    pub data: usize,
    /// Size of the array, a power of two.
    pub size: u32,
    /// Offset of the producer's index.
    pub prod: usize,
    /// Offset of the consumer's index.
    pub cons: usize,
}

/// The peer published indices more than a ring apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt {
    pub prod: u32,
    pub cons: u32,
}

/// Copies as much of `data` as there is room for into the ring and publishes it; returns
/// how many bytes went in (0 if the ring is full).
pub fn produce<P: SharedPage + ?Sized>(
    page: &P,
    spec: &Spec,
    data: &[u8],
) -> Result<usize, Corrupt> {
    let cons = page.load_u32(spec.cons);
    let prod = page.load_u32(spec.prod);
    let room = free(prod, cons, spec.size).ok_or(Corrupt { prod, cons })?;
    let n = room.min(u32::try_from(data.len()).unwrap_or(u32::MAX));
    if n == 0 {
        return Ok(0);
    }
    let mut from = 0;
    for (offset, len) in pieces(prod, n, spec.size) {
        page.write_bytes(spec.data + offset, &data[from..from + len]);
        from += len;
    }
    page.store_u32(spec.prod, prod.wrapping_add(n));
    Ok(n as usize)
}

/// Copies as many published bytes as fit into `out` and frees their room; returns how many
/// (0 if the ring is empty).
pub fn consume<P: SharedPage + ?Sized>(
    page: &P,
    spec: &Spec,
    out: &mut [u8],
) -> Result<usize, Corrupt> {
    let prod = page.load_u32(spec.prod);
    let cons = page.load_u32(spec.cons);
    let available = used(prod, cons, spec.size).ok_or(Corrupt { prod, cons })?;
    let n = available.min(u32::try_from(out.len()).unwrap_or(u32::MAX));
    if n == 0 {
        return Ok(0);
    }
    let mut to = 0;
    for (offset, len) in pieces(cons, n, spec.size) {
        page.read_bytes(spec.data + offset, &mut out[to..to + len]);
        to += len;
    }
    page.store_u32(spec.cons, cons.wrapping_add(n));
    Ok(n as usize)
}

/// Bytes written and not yet read, or `None` if the indices are more than `size` apart.
pub fn used(prod: u32, cons: u32, size: u32) -> Option<u32> {
    let n = prod.wrapping_sub(cons);
    (n <= size).then_some(n)
}

/// Bytes that can still be written, or `None` if the indices are more than `size` apart.
pub fn free(prod: u32, cons: u32, size: u32) -> Option<u32> {
    used(prod, cons, size).map(|n| size - n)
}

/// Where `len` bytes starting at free-running index `index` lie in a ring of `size` bytes
/// (a power of two, `len <= size`): up to two contiguous pieces `(offset, len)`; the second
/// has length 0 unless the bytes wrap around the end of the array.
pub fn pieces(index: u32, len: u32, size: u32) -> [(usize, usize); 2] {
    debug_assert!(size.is_power_of_two() && len <= size);
    let start = index & (size - 1);
    let first = len.min(size - start);
    [
        (start as usize, first as usize),
        (0, (len - first) as usize),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_ring::LocalPage;

    /// The request direction of the xenstore ring.
    const XS_REQ: Spec = Spec {
        data: 0,
        size: 1024,
        prod: 2052,
        cons: 2048,
    };
    /// The output direction of the console ring.
    const CONS_OUT: Spec = Spec {
        data: 1024,
        size: 2048,
        prod: 3084,
        cons: 3080,
    };

    #[test]
    fn produce_and_consume_round_trip_across_the_wrap() {
        for spec in [XS_REQ, CONS_OUT] {
            for start in [0u32, 1000, u32::MAX - 100] {
                let page = LocalPage::new();
                page.store_u32(spec.prod, start);
                page.store_u32(spec.cons, start);
                let mut next = 0u8;
                let mut expect = 0u8;
                for chunk in [1usize, 700, 300, 1024, 5, 2048, 999] {
                    let data: Vec<u8> = (0..chunk)
                        .map(|_| {
                            next = next.wrapping_add(7);
                            next
                        })
                        .collect();
                    let n = produce(&page, &spec, &data).unwrap();
                    assert_eq!(n, chunk.min(spec.size as usize));
                    let mut out = vec![0u8; 4096];
                    let got = consume(&page, &spec, &mut out).unwrap();
                    assert_eq!(got, n);
                    for &b in &out[..got] {
                        expect = expect.wrapping_add(7);
                        assert_eq!(b, expect);
                    }
                    // Bytes that did not fit are produced again next round.
                    next = expect;
                }
                // Only the array and the indices were touched.
                let mut outside = vec![0u8; 4096];
                page.read_bytes(0, &mut outside);
                let arrays = spec.data..spec.data + spec.size as usize;
                for (i, &b) in outside.iter().enumerate() {
                    if !arrays.contains(&i)
                        && !(spec.cons..spec.cons + 4).contains(&i)
                        && !(spec.prod..spec.prod + 4).contains(&i)
                    {
                        assert_eq!(b, 0, "byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn full_and_empty_rings_move_nothing() {
        let page = LocalPage::new();
        assert_eq!(produce(&page, &XS_REQ, &[1; 1024]), Ok(1024));
        assert_eq!(produce(&page, &XS_REQ, &[1; 10]), Ok(0));
        let mut out = [0u8; 100];
        assert_eq!(consume(&page, &XS_REQ, &mut out), Ok(100));
        assert_eq!(produce(&page, &XS_REQ, &[1; 200]), Ok(100));
        let mut all = [0u8; 2048];
        assert_eq!(consume(&page, &XS_REQ, &mut all), Ok(1024));
        assert_eq!(consume(&page, &XS_REQ, &mut all), Ok(0));
    }

    #[test]
    fn impossible_indices_are_reported_and_nothing_moves() {
        let page = LocalPage::new();
        page.store_u32(XS_REQ.prod, 5000);
        page.store_u32(XS_REQ.cons, 10);
        assert_eq!(
            produce(&page, &XS_REQ, b"x"),
            Err(Corrupt {
                prod: 5000,
                cons: 10
            })
        );
        let mut out = [0u8; 8];
        assert_eq!(
            consume(&page, &XS_REQ, &mut out),
            Err(Corrupt {
                prod: 5000,
                cons: 10
            })
        );
        assert_eq!(page.load_u32(XS_REQ.prod), 5000);
        assert_eq!(page.load_u32(XS_REQ.cons), 10);
        // A consumer ahead of the producer.
        page.store_u32(XS_REQ.prod, 3);
        page.store_u32(XS_REQ.cons, 4);
        assert!(produce(&page, &XS_REQ, b"x").is_err());
    }

    #[test]
    fn a_stream_between_two_threads_arrives_intact() {
        let page = std::sync::Arc::new(LocalPage::new());
        page.store_u32(XS_REQ.prod, u32::MAX - 3000);
        page.store_u32(XS_REQ.cons, u32::MAX - 3000);
        const TOTAL: usize = 200_000;
        let stream: Vec<u8> = (0..TOTAL).map(|i| (i * 131 % 251) as u8).collect();
        let producer = {
            let page = page.clone();
            let stream = stream.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut chunk = 1;
                while sent < TOTAL {
                    let end = (sent + chunk).min(TOTAL);
                    sent += produce(&*page, &XS_REQ, &stream[sent..end]).unwrap();
                    chunk = chunk % 1500 + 97;
                    std::thread::yield_now();
                }
            })
        };
        let mut received = Vec::with_capacity(TOTAL);
        let mut buffer = [0u8; 333];
        while received.len() < TOTAL {
            let n = consume(&*page, &XS_REQ, &mut buffer).unwrap();
            received.extend_from_slice(&buffer[..n]);
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(received, stream);
    }

    #[test]
    fn used_and_free_wrap_and_reject_impossible_indices() {
        assert_eq!(used(0, 0, 1024), Some(0));
        assert_eq!(free(0, 0, 1024), Some(1024));
        assert_eq!(used(1024, 0, 1024), Some(1024));
        assert_eq!(free(1024, 0, 1024), Some(0));
        assert_eq!(used(1025, 0, 1024), None);
        assert_eq!(free(1025, 0, 1024), None);
        // The consumer ahead of the producer is as impossible as a too-far producer.
        assert_eq!(used(5, 6, 1024), None);
        // Across the u32 wrap.
        assert_eq!(used(3, u32::MAX - 4, 2048), Some(8));
        assert_eq!(free(3, u32::MAX - 4, 2048), Some(2040));
    }

    #[test]
    fn pieces_split_at_the_end_of_the_array() {
        assert_eq!(pieces(0, 10, 1024), [(0, 10), (0, 0)]);
        assert_eq!(pieces(1020, 10, 1024), [(1020, 4), (0, 6)]);
        assert_eq!(pieces(1024 + 3, 5, 1024), [(3, 5), (0, 0)]);
        assert_eq!(pieces(u32::MAX, 2, 2048), [(2047, 1), (0, 1)]);
        assert_eq!(pieces(512, 1024, 1024), [(512, 512), (0, 512)]);
        assert_eq!(pieces(7, 0, 1024), [(7, 0), (0, 0)]);
    }

    #[test]
    fn pieces_cover_exactly_the_requested_bytes() {
        for size in [1024u32, 2048] {
            for index in [0u32, 1, size - 1, size, u32::MAX - 5, u32::MAX] {
                for len in [0u32, 1, 17, size / 2, size] {
                    let [(a, la), (b, lb)] = pieces(index, len, size);
                    assert_eq!(la + lb, len as usize);
                    assert!(a + la <= size as usize);
                    assert!(b + lb <= size as usize);
                    if lb > 0 {
                        assert_eq!(a + la, size as usize);
                        assert_eq!(b, 0);
                    }
                }
            }
        }
    }
}
