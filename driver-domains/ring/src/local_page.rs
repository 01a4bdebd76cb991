//! [`LocalRegion`]: a [`SharedPage`] in this process's memory, for host and loom tests.
//!
//! The region is an array of `AtomicU32` words; bytes are little-endian within a word.
//! Index words use acquire/release, entry bytes relaxed word accesses (partial words are
//! updated with atomic and/or so a neighbouring slot written by the other thread is never
//! clobbered). Under `--cfg loom` the atomics and the fence are loom's, so loom explores
//! the orderings the rings rely on. Out-of-range offsets panic: the rings never make them,
//! so a panic here is a bug the tests are meant to catch.

use crate::shared_page::SharedPage;

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// A region of `WORDS` 32-bit words (`4 * WORDS` bytes) shared between threads.
pub struct LocalRegion<const WORDS: usize> {
    words: [AtomicU32; WORDS],
}

/// A one-page region (4096 bytes).
pub type LocalPage = LocalRegion<1024>;

impl<const WORDS: usize> LocalRegion<WORDS> {
    /// A zero-filled region.
    pub fn new() -> Self {
        Self {
            words: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        &self.words[offset / 4]
    }
}

impl<const WORDS: usize> Default for LocalRegion<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> SharedPage for LocalRegion<WORDS> {
    fn size_bytes(&self) -> usize {
        WORDS * 4
    }

    fn load_u32(&self, offset: usize) -> u32 {
        assert_eq!(offset % 4, 0, "unaligned index offset {offset}");
        self.word(offset).load(Ordering::Acquire)
    }

    fn store_u32(&self, offset: usize, value: u32) {
        assert_eq!(offset % 4, 0, "unaligned index offset {offset}");
        self.word(offset).store(value, Ordering::Release)
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done;
            let start = at % 4;
            let count = (4 - start).min(out.len() - done);
            let word = self.word(at).load(Ordering::Relaxed).to_le_bytes();
            out[done..done + count].copy_from_slice(&word[start..start + count]);
            done += count;
        }
    }

    fn write_bytes(&self, offset: usize, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done;
            let start = at % 4;
            let count = (4 - start).min(data.len() - done);
            let word = self.word(at);
            if count == 4 {
                let bytes = [data[done], data[done + 1], data[done + 2], data[done + 3]];
                word.store(u32::from_le_bytes(bytes), Ordering::Relaxed);
            } else {
                let mut mask = [0u8; 4];
                let mut bits = [0u8; 4];
                mask[start..start + count].fill(0xff);
                bits[start..start + count].copy_from_slice(&data[done..done + count]);
                word.fetch_and(!u32::from_le_bytes(mask), Ordering::Relaxed);
                word.fetch_or(u32::from_le_bytes(bits), Ordering::Relaxed);
            }
            done += count;
        }
    }

    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_words_agree_little_endian() {
        let page = LocalRegion::<4>::new();
        page.store_u32(4, 0x4433_2211);
        let mut out = [0u8; 4];
        page.read_bytes(4, &mut out);
        assert_eq!(out, [0x11, 0x22, 0x33, 0x44]);
        page.write_bytes(8, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(page.load_u32(8), 0xddcc_bbaa);
    }

    #[test]
    fn unaligned_writes_keep_their_neighbours() {
        let page = LocalRegion::<4>::new();
        page.write_bytes(0, &[0x55; 16]);
        page.write_bytes(3, &[1, 2, 3, 4, 5, 6]);
        let mut out = [0u8; 16];
        page.read_bytes(0, &mut out);
        assert_eq!(
            out,
            [0x55, 0x55, 0x55, 1, 2, 3, 4, 5, 6, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55]
        );
        let mut middle = [0u8; 3];
        page.read_bytes(5, &mut middle);
        assert_eq!(middle, [3, 4, 5]);
    }

    #[test]
    fn reports_its_size() {
        assert_eq!(LocalPage::new().size_bytes(), 4096);
        assert_eq!(LocalRegion::<20>::new().size_bytes(), 80);
    }

    #[test]
    #[should_panic]
    fn out_of_range_reads_panic() {
        let page = LocalRegion::<4>::new();
        let mut out = [0u8; 2];
        page.read_bytes(15, &mut out);
    }

    #[test]
    #[should_panic]
    fn out_of_range_writes_panic() {
        LocalRegion::<4>::new().write_bytes(16, &[1]);
    }

    #[test]
    #[should_panic]
    fn unaligned_index_access_panics() {
        LocalRegion::<4>::new().load_u32(2);
    }
}
