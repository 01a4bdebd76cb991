//! One direction of a byte-stream ring in a shared page, as Xen's xenstore and console rings
//! use them: a power-of-two data array and two free-running `u32` indices.
//!
//! | step | who | what |
//! |---|---|---|
//! | produce | producer | read the consumer index (acquire), copy bytes into `data[prod & (size-1)]`…, publish `prod += n` (release) |
//! | consume | consumer | read the producer index (acquire), copy bytes out of `data[cons & (size-1)]`…, publish `cons += n` (release) |
//!
//! All index arithmetic wraps; at every moment `0 <= prod - cons <= size`.
//!
//! # Trust
//!
//! The peer can write anything into the page at any time, *including the index that is
//! ours*. So each end keeps its own index privately (read once from the page when it
//! attaches) and only ever publishes it; the peer's index is read once per operation and
//! checked against the private one before anything is copied. A peer index outside the
//! legal window is a [`StreamError`]: the caller stops using the ring and disconnects the
//! peer. Bytes are copied out once and never re-read; nothing here panics on page contents.

use core::fmt;

use xen_ring::SharedPage;

/// Where one direction of a stream lives in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    /// Offset of the data array.
    pub data_offset: usize,
    /// Size of the data array in bytes: a power of two.
    pub size_bytes: u32,
    /// Offset of the consumer index (`u32`, 4-byte aligned).
    pub cons_offset: usize,
    /// Offset of the producer index (`u32`, 4-byte aligned).
    pub prod_offset: usize,
}

impl StreamLayout {
    /// Whether the layout is usable in a page of `page_bytes`: a power-of-two size, the data
    /// and both (aligned) indices inside the page.
    pub fn fits(&self, page_bytes: usize) -> bool {
        let size = self.size_bytes as usize;
        size.is_power_of_two()
            && self
                .data_offset
                .checked_add(size)
                .is_some_and(|end| end <= page_bytes)
            && [self.cons_offset, self.prod_offset]
                .iter()
                .all(|&at| at % 4 == 0 && at.checked_add(4).is_some_and(|end| end <= page_bytes))
    }

    fn mask(&self) -> u32 {
        self.size_bytes - 1
    }

    /// Copies `out.len()` bytes from the data array starting at index `index`, wrapping.
    fn copy_out(&self, page: &impl SharedPage, index: u32, out: &mut [u8]) {
        let start = (index & self.mask()) as usize;
        let first = out.len().min(self.size_bytes as usize - start);
        let (head, tail) = out.split_at_mut(first);
        page.read_bytes(self.data_offset + start, head);
        if !tail.is_empty() {
            page.read_bytes(self.data_offset, tail);
        }
    }

    /// Copies `data` into the data array starting at index `index`, wrapping.
    fn copy_in(&self, page: &impl SharedPage, index: u32, data: &[u8]) {
        let start = (index & self.mask()) as usize;
        let first = data.len().min(self.size_bytes as usize - start);
        let (head, tail) = data.split_at(first);
        page.write_bytes(self.data_offset + start, head);
        if !tail.is_empty() {
            page.write_bytes(self.data_offset, tail);
        }
    }
}

/// The peer broke the index protocol; the ring must not be used any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The producer index is more than a ring's worth ahead of the consumer index (or
    /// behind it, which wraps to the same thing).
    IndicesOutOfRange {
        /// The producer index (read from the page or private).
        prod: u32,
        /// The consumer index (read from the page or private).
        cons: u32,
        /// The ring's size in bytes.
        size_bytes: u32,
    },
    /// The layout does not fit the page (a bug of the caller, reported rather than panicking).
    BadLayout,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IndicesOutOfRange {
                prod,
                cons,
                size_bytes,
            } => write!(
                f,
                "ring indices prod {prod:#x} cons {cons:#x} are more than {size_bytes} bytes apart"
            ),
            Self::BadLayout => f.write_str("ring layout does not fit the page"),
        }
    }
}

/// Checks `prod - cons <= size` (wrapping).
fn check(prod: u32, cons: u32, size_bytes: u32) -> Result<u32, StreamError> {
    let used = prod.wrapping_sub(cons);
    if used > size_bytes {
        Err(StreamError::IndicesOutOfRange {
            prod,
            cons,
            size_bytes,
        })
    } else {
        Ok(used)
    }
}

/// Reads the stream: owns the consumer index.
#[derive(Debug)]
pub struct StreamConsumer {
    layout: StreamLayout,
    /// Our consumer index: authoritative here, only published to the page.
    cons: u32,
}

impl StreamConsumer {
    /// Takes over the consumer end of a ring, starting at the consumer index the page holds
    /// (0 on a fresh page; where a previous server stopped otherwise). Fails if the indices
    /// are already inconsistent.
    pub fn attach(page: &impl SharedPage, layout: StreamLayout) -> Result<Self, StreamError> {
        if !layout.fits(page.size_bytes()) {
            return Err(StreamError::BadLayout);
        }
        let cons = page.load_u32(layout.cons_offset);
        let prod = page.load_u32(layout.prod_offset);
        check(prod, cons, layout.size_bytes)?;
        Ok(Self { layout, cons })
    }

    /// Our consumer index.
    pub fn index(&self) -> u32 {
        self.cons
    }

    /// Bytes the producer has published and we have not read yet.
    pub fn available(&self, page: &impl SharedPage) -> Result<u32, StreamError> {
        let prod = page.load_u32(self.layout.prod_offset);
        check(prod, self.cons, self.layout.size_bytes)
    }

    /// Copies up to `out.len()` published bytes into `out`, then publishes the new consumer
    /// index. Returns how many bytes were copied (0 if the ring is empty).
    pub fn read(&mut self, page: &impl SharedPage, out: &mut [u8]) -> Result<usize, StreamError> {
        let available = self.available(page)?;
        let count = out.len().min(available as usize);
        if count == 0 {
            return Ok(0);
        }
        self.layout.copy_out(page, self.cons, &mut out[..count]);
        // count <= size_bytes, a u32.
        self.cons = self.cons.wrapping_add(count as u32);
        page.store_u32(self.layout.cons_offset, self.cons);
        Ok(count)
    }
}

/// Writes the stream: owns the producer index.
#[derive(Debug)]
pub struct StreamProducer {
    layout: StreamLayout,
    /// Our producer index: authoritative here, only published to the page.
    prod: u32,
}

impl StreamProducer {
    /// Takes over the producer end of a ring, starting at the producer index the page
    /// holds. Fails if the indices are already inconsistent.
    pub fn attach(page: &impl SharedPage, layout: StreamLayout) -> Result<Self, StreamError> {
        if !layout.fits(page.size_bytes()) {
            return Err(StreamError::BadLayout);
        }
        let prod = page.load_u32(layout.prod_offset);
        let cons = page.load_u32(layout.cons_offset);
        check(prod, cons, layout.size_bytes)?;
        Ok(Self { layout, prod })
    }

    /// Our producer index.
    pub fn index(&self) -> u32 {
        self.prod
    }

    /// Bytes that fit before the ring is full.
    pub fn space(&self, page: &impl SharedPage) -> Result<u32, StreamError> {
        let cons = page.load_u32(self.layout.cons_offset);
        let used = check(self.prod, cons, self.layout.size_bytes)?;
        Ok(self.layout.size_bytes - used)
    }

    /// Copies as much of `data` as fits, then publishes the new producer index. Returns how
    /// many bytes were written (0 if the ring is full).
    pub fn write(&mut self, page: &impl SharedPage, data: &[u8]) -> Result<usize, StreamError> {
        let space = self.space(page)?;
        let count = data.len().min(space as usize);
        if count == 0 {
            return Ok(0);
        }
        self.layout.copy_in(page, self.prod, &data[..count]);
        // count <= size_bytes, a u32.
        self.prod = self.prod.wrapping_add(count as u32);
        page.store_u32(self.layout.prod_offset, self.prod);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_ring::LocalPage;

    const SMALL: StreamLayout = StreamLayout {
        data_offset: 64,
        size_bytes: 16,
        cons_offset: 0,
        prod_offset: 4,
    };

    fn pair(page: &LocalPage) -> (StreamProducer, StreamConsumer) {
        (
            StreamProducer::attach(page, SMALL).unwrap(),
            StreamConsumer::attach(page, SMALL).unwrap(),
        )
    }

    #[test]
    fn bytes_arrive_in_order_across_the_wrap() {
        let page = LocalPage::new();
        let (mut producer, mut consumer) = pair(&page);
        let mut sent = 0u8;
        let mut received = 0u8;
        // Odd chunk sizes walk the indices across the wrap many times.
        for round in 0..200usize {
            let chunk: alloc::vec::Vec<u8> = (0..(round % 7) + 1)
                .map(|i| sent.wrapping_add(i as u8))
                .collect();
            let written = producer.write(&page, &chunk).unwrap();
            sent = sent.wrapping_add(written as u8);
            let mut out = [0u8; 5];
            let read = consumer.read(&page, &mut out).unwrap();
            for &byte in &out[..read] {
                assert_eq!(byte, received);
                received = received.wrapping_add(1);
            }
        }
        assert!(producer.index() > 16, "the test must wrap");
        assert_eq!(page.load_u32(SMALL.prod_offset), producer.index());
        assert_eq!(page.load_u32(SMALL.cons_offset), consumer.index());
    }

    #[test]
    fn a_full_ring_takes_nothing_and_an_empty_one_gives_nothing() {
        let page = LocalPage::new();
        let (mut producer, mut consumer) = pair(&page);
        assert_eq!(producer.write(&page, &[7; 40]).unwrap(), 16);
        assert_eq!(producer.write(&page, &[8]).unwrap(), 0);
        assert_eq!(producer.space(&page).unwrap(), 0);
        let mut out = [0u8; 40];
        assert_eq!(consumer.read(&page, &mut out).unwrap(), 16);
        assert_eq!(consumer.read(&page, &mut out).unwrap(), 0);
        assert_eq!(producer.space(&page).unwrap(), 16);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let page = LocalPage::new();
        page.store_u32(SMALL.prod_offset, u32::MAX - 2);
        page.store_u32(SMALL.cons_offset, u32::MAX - 2);
        let (mut producer, mut consumer) = pair(&page);
        assert_eq!(producer.write(&page, b"abcdefgh").unwrap(), 8);
        assert_eq!(producer.index(), 5);
        let mut out = [0u8; 8];
        assert_eq!(consumer.read(&page, &mut out).unwrap(), 8);
        assert_eq!(&out, b"abcdefgh");
    }

    #[test]
    fn a_producer_running_ahead_is_an_error_and_copies_nothing() {
        let page = LocalPage::new();
        let mut consumer = StreamConsumer::attach(&page, SMALL).unwrap();
        page.write_bytes(SMALL.data_offset, &[0x55; 16]);
        page.store_u32(SMALL.prod_offset, 17);
        let mut out = [0u8; 32];
        assert_eq!(
            consumer.read(&page, &mut out),
            Err(StreamError::IndicesOutOfRange {
                prod: 17,
                cons: 0,
                size_bytes: 16
            })
        );
        assert_eq!(out, [0; 32]);
        assert_eq!(consumer.index(), 0);
        // Behind the consumer wraps to "far ahead" and fails the same way.
        page.store_u32(SMALL.prod_offset, u32::MAX);
        assert!(consumer.read(&page, &mut out).is_err());
    }

    #[test]
    fn a_consumer_index_out_of_range_is_an_error() {
        let page = LocalPage::new();
        let mut producer = StreamProducer::attach(&page, SMALL).unwrap();
        producer.write(&page, b"abc").unwrap();
        // The peer claims to have read more than we wrote.
        page.store_u32(SMALL.cons_offset, 4);
        assert!(producer.write(&page, b"d").is_err());
        assert!(producer.space(&page).is_err());
        assert_eq!(producer.index(), 3);
    }

    #[test]
    fn the_peer_overwriting_our_index_changes_nothing() {
        let page = LocalPage::new();
        let (mut producer, mut consumer) = pair(&page);
        producer.write(&page, b"hello").unwrap();
        // The producer scribbles on the consumer's index; we keep our own.
        page.store_u32(SMALL.cons_offset, 3);
        let mut out = [0u8; 8];
        assert_eq!(consumer.read(&page, &mut out).unwrap(), 5);
        assert_eq!(&out[..5], b"hello");
        assert_eq!(page.load_u32(SMALL.cons_offset), 5);
    }

    #[test]
    fn attach_checks_the_indices_it_finds() {
        let page = LocalPage::new();
        page.store_u32(SMALL.prod_offset, 100);
        page.store_u32(SMALL.cons_offset, 90);
        assert_eq!(StreamConsumer::attach(&page, SMALL).unwrap().index(), 90);
        assert_eq!(StreamProducer::attach(&page, SMALL).unwrap().index(), 100);
        page.store_u32(SMALL.cons_offset, 50);
        assert!(StreamConsumer::attach(&page, SMALL).is_err());
        assert!(StreamProducer::attach(&page, SMALL).is_err());
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let page = LocalPage::new();
        let odd = StreamLayout {
            size_bytes: 24,
            ..SMALL
        };
        let outside = StreamLayout {
            data_offset: 4090,
            ..SMALL
        };
        let unaligned = StreamLayout {
            cons_offset: 2,
            ..SMALL
        };
        for layout in [odd, outside, unaligned] {
            assert_eq!(
                StreamConsumer::attach(&page, layout).unwrap_err(),
                StreamError::BadLayout
            );
            assert_eq!(
                StreamProducer::attach(&page, layout).unwrap_err(),
                StreamError::BadLayout
            );
        }
    }
}
