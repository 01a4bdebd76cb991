//! The host frame allocator: one bit per host-physical 4 KiB frame, 1 = in use.
//!
//! The bitmap lives in storage the caller provides (the hardware crate carves it out of
//! RAM at boot and reserves it). Frames `[0, nr_frames)` are tracked; everything starts in
//! use, then boot code calls [`FrameAllocator::free_range`] for every usable RAM region of
//! the firmware memory map and **afterwards** [`FrameAllocator::reserve_range`] for
//! everything that must stay put (the microvisor image, boot modules, firmware tables, the
//! bitmap itself). `free_range` after `reserve_range` would undo the reservation.
//!
//! [`FrameAllocator::alloc`] always returns the lowest free frame. That is a requirement,
//! not an accident: the tests rely on the frames of a destroyed domain being the next ones
//! handed out, so that scrubbing is observable.

/// Size of a frame in bytes.
pub const FRAME_SIZE: u64 = 4096;
const FRAME_SHIFT: u32 = 12;
const BITS_PER_WORD: u64 = 64;

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not a multiple of [`FRAME_SIZE`].
    Unaligned(u64),
    /// The address lies beyond the last tracked frame.
    OutOfRange(u64),
    /// The frame is already free (a double free).
    NotAllocated(u64),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unaligned(pa) => write!(f, "frame address {pa:#x} is not 4 KiB aligned"),
            Self::OutOfRange(pa) => write!(f, "frame address {pa:#x} is beyond the tracked RAM"),
            Self::NotAllocated(pa) => write!(f, "frame {pa:#x} is already free (double free)"),
        }
    }
}

/// Number of `u64` words a bitmap for `nr_frames` frames needs.
pub const fn bitmap_words(nr_frames: u64) -> usize {
    nr_frames.div_ceil(BITS_PER_WORD) as usize
}

/// A lowest-first bitmap allocator over host-physical frames `[0, nr_frames)`.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    bits: &'a mut [u64],
    nr_frames: u64,
    free_frames: u64,
    /// No word below this index has a free bit.
    hint_word: usize,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator over `[0, nr_frames)` with every frame in use.
    ///
    /// `nr_frames` is clamped to what `bits` can hold (`bits.len() * 64`); size the storage
    /// with [`bitmap_words`].
    pub fn new(bits: &'a mut [u64], nr_frames: u64) -> Self {
        let capacity = (bits.len() as u64).saturating_mul(BITS_PER_WORD);
        bits.fill(u64::MAX);
        FrameAllocator {
            bits,
            nr_frames: nr_frames.min(capacity),
            free_frames: 0,
            hint_word: 0,
        }
    }

    /// Number of frames tracked.
    pub fn total_count(&self) -> u64 {
        self.nr_frames
    }

    /// Number of frames currently free.
    pub fn free_count(&self) -> u64 {
        self.free_frames
    }

    /// Whether the frame at `pa` is free (false for unaligned or untracked addresses).
    pub fn is_free(&self, pa: u64) -> bool {
        pa.is_multiple_of(FRAME_SIZE)
            && pa >> FRAME_SHIFT < self.nr_frames
            && !self.bit(pa >> FRAME_SHIFT)
    }

    /// Marks usable RAM `[start_pa, end_pa)` free, rounding inward to whole frames.
    /// Parts beyond the tracked range are ignored.
    pub fn free_range(&mut self, start_pa: u64, end_pa: u64) {
        let first = start_pa.div_ceil(FRAME_SIZE);
        let end = (end_pa / FRAME_SIZE).min(self.nr_frames);
        for frame in first..end {
            if self.bit(frame) {
                self.set_bit(frame, false);
                self.free_frames += 1;
            }
        }
        if first < end {
            self.hint_word = self.hint_word.min(Self::word_of(first));
        }
    }

    /// Marks `[start_pa, end_pa)` in use, rounding outward to whole frames.
    /// Parts beyond the tracked range are ignored.
    pub fn reserve_range(&mut self, start_pa: u64, end_pa: u64) {
        let first = start_pa / FRAME_SIZE;
        let end = end_pa.div_ceil(FRAME_SIZE).min(self.nr_frames);
        for frame in first..end {
            if !self.bit(frame) {
                self.set_bit(frame, true);
                self.free_frames -= 1;
            }
        }
    }

    /// Allocates the lowest free frame and returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let frame = self.lowest_free_from(0)?;
        self.set_bit(frame, true);
        self.free_frames -= 1;
        self.hint_word = Self::word_of(frame);
        Some(frame << FRAME_SHIFT)
    }

    /// Allocates the lowest run of `n` free frames whose first frame number is a multiple of
    /// `align_frames` (0 is treated as 1) and returns the physical address of the first.
    pub fn alloc_contiguous(&mut self, n: u64, align_frames: u64) -> Option<u64> {
        if n == 0 {
            return None;
        }
        let align = align_frames.max(1);
        let mut candidate = round_up(self.lowest_free_from(0)?, align)?;
        'search: loop {
            let end = candidate.checked_add(n)?;
            if end > self.nr_frames {
                return None;
            }
            // Check from the top so a used frame lets us skip as far as possible.
            for frame in (candidate..end).rev() {
                if self.bit(frame) {
                    let next_free = self.lowest_free_from(frame + 1)?;
                    candidate = round_up(next_free, align)?;
                    continue 'search;
                }
            }
            for frame in candidate..end {
                self.set_bit(frame, true);
            }
            self.free_frames -= n;
            return Some(candidate << FRAME_SHIFT);
        }
    }

    /// Returns the frame at `pa` to the pool.
    ///
    /// A single bitmap cannot tell an allocated frame from a reserved one: freeing a
    /// reserved frame succeeds, so only free what `alloc` handed out.
    pub fn free(&mut self, pa: u64) -> Result<(), FrameError> {
        if !pa.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::Unaligned(pa));
        }
        let frame = pa >> FRAME_SHIFT;
        if frame >= self.nr_frames {
            return Err(FrameError::OutOfRange(pa));
        }
        if !self.bit(frame) {
            return Err(FrameError::NotAllocated(pa));
        }
        self.set_bit(frame, false);
        self.free_frames += 1;
        self.hint_word = self.hint_word.min(Self::word_of(frame));
        Ok(())
    }

    /// The lowest free frame number `>= from`, using the hint to skip full words.
    fn lowest_free_from(&self, from: u64) -> Option<u64> {
        if from >= self.nr_frames {
            return None;
        }
        let start_word = Self::word_of(from).max(self.hint_word);
        let last_word = Self::word_of(self.nr_frames - 1);
        for word_index in start_word..=last_word {
            let mut free_bits = !self.bits[word_index];
            let base = word_index as u64 * BITS_PER_WORD;
            if base < from {
                // Only bits at or above `from` count.
                free_bits &= u64::MAX << (from - base);
            }
            if free_bits != 0 {
                let frame = base + u64::from(free_bits.trailing_zeros());
                return (frame < self.nr_frames).then_some(frame);
            }
        }
        None
    }

    fn word_of(frame: u64) -> usize {
        (frame / BITS_PER_WORD) as usize
    }

    fn bit(&self, frame: u64) -> bool {
        self.bits[Self::word_of(frame)] & (1 << (frame % BITS_PER_WORD)) != 0
    }

    fn set_bit(&mut self, frame: u64, used: bool) {
        let mask = 1u64 << (frame % BITS_PER_WORD);
        let word = &mut self.bits[Self::word_of(frame)];
        if used {
            *word |= mask;
        } else {
            *word &= !mask;
        }
    }
}

fn round_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const MIB: u64 = 1 << 20;

    #[test]
    fn starts_all_in_use() {
        let mut bits = [0u64; 4];
        let mut frames = FrameAllocator::new(&mut bits, 200);
        assert_eq!(frames.total_count(), 200);
        assert_eq!(frames.free_count(), 0);
        assert_eq!(frames.alloc(), None);
    }

    #[test]
    fn nr_frames_is_clamped_to_storage() {
        let mut bits = [0u64; 1];
        let mut frames = FrameAllocator::new(&mut bits, 1000);
        assert_eq!(frames.total_count(), 64);
        frames.free_range(0, 1000 * FRAME_SIZE);
        assert_eq!(frames.free_count(), 64);
        assert_eq!(
            frames.free(64 * FRAME_SIZE),
            Err(FrameError::OutOfRange(64 * FRAME_SIZE))
        );
    }

    #[test]
    fn free_range_rounds_inward_and_reserve_rounds_outward() {
        let mut bits = [0u64; 4];
        let mut frames = FrameAllocator::new(&mut bits, 256);
        frames.free_range(0x1001, 0x5fff); // frames 2,3,4
        assert_eq!(frames.free_count(), 3);
        assert!(!frames.is_free(0x1000) && frames.is_free(0x2000) && frames.is_free(0x4000));
        assert!(!frames.is_free(0x5000));
        frames.reserve_range(0x2fff, 0x3001); // frames 2 and 3
        assert_eq!(frames.free_count(), 1);
        assert_eq!(frames.alloc(), Some(0x4000));
        assert_eq!(frames.alloc(), None);
    }

    #[test]
    fn alloc_is_lowest_first_and_reuses_freed_frames() {
        let mut bits = [0u64; 8];
        let mut frames = FrameAllocator::new(&mut bits, 512);
        frames.free_range(MIB / 4, 2 * MIB);
        let first: Vec<u64> = (0..100).map(|_| frames.alloc().unwrap()).collect();
        for (i, pa) in first.iter().enumerate() {
            assert_eq!(*pa, MIB / 4 + i as u64 * FRAME_SIZE);
        }
        // A "destroyed domain" gives back frames 10..20; the next domain gets exactly those.
        for pa in &first[10..20] {
            frames.free(*pa).unwrap();
        }
        let again: Vec<u64> = (0..10).map(|_| frames.alloc().unwrap()).collect();
        assert_eq!(again, first[10..20]);
        assert_eq!(frames.alloc(), Some(MIB / 4 + 100 * FRAME_SIZE));
    }

    #[test]
    fn free_errors() {
        let mut bits = [0u64; 1];
        let mut frames = FrameAllocator::new(&mut bits, 64);
        frames.free_range(0, 64 * FRAME_SIZE);
        let pa = frames.alloc().unwrap();
        assert_eq!(frames.free(pa + 1), Err(FrameError::Unaligned(pa + 1)));
        assert_eq!(frames.free(pa), Ok(()));
        assert_eq!(frames.free(pa), Err(FrameError::NotAllocated(pa)));
        assert_eq!(
            frames.free(!0xfffu64),
            Err(FrameError::OutOfRange(!0xfffu64))
        );
        assert_eq!(frames.free_count(), 64);
    }

    #[test]
    fn contiguous_respects_alignment_and_holes() {
        let mut bits = [0u64; 4];
        let mut frames = FrameAllocator::new(&mut bits, 256);
        frames.free_range(FRAME_SIZE, 256 * FRAME_SIZE);
        frames.reserve_range(20 * FRAME_SIZE, 21 * FRAME_SIZE);
        // 8 frames aligned to 8: frames 8..16 are free.
        assert_eq!(frames.alloc_contiguous(8, 8), Some(8 * FRAME_SIZE));
        // 16 aligned to 16: 16..32 has the hole at 20, so 32..48.
        assert_eq!(frames.alloc_contiguous(16, 16), Some(32 * FRAME_SIZE));
        // Unaligned run of 4: lowest free run is 1..5.
        assert_eq!(frames.alloc_contiguous(4, 0), Some(FRAME_SIZE));
        assert_eq!(frames.alloc_contiguous(0, 1), None);
        assert_eq!(frames.alloc_contiguous(1000, 1), None);
        assert_eq!(frames.alloc_contiguous(1, u64::MAX), None);
        assert_eq!(frames.free_count(), 255 - 1 - 8 - 16 - 4);
        // The run is allocated: each frame can be freed once.
        for frame in 32..48 {
            frames.free(frame * FRAME_SIZE).unwrap();
        }
    }

    #[test]
    fn contiguous_to_the_very_end() {
        let mut bits = [0u64; 2];
        let mut frames = FrameAllocator::new(&mut bits, 100);
        frames.free_range(90 * FRAME_SIZE, 100 * FRAME_SIZE);
        assert_eq!(frames.alloc_contiguous(10, 1), Some(90 * FRAME_SIZE));
        assert_eq!(frames.free_count(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc,
        Contiguous(u64, u64),
        Free(usize),
        Reserve(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Alloc),
            1 => (1u64..6, 0u64..5).prop_map(|(n, a)| Op::Contiguous(n, a)),
            3 => any::<usize>().prop_map(Op::Free),
            1 => (0u64..300, 0u64..40).prop_map(|(s, l)| Op::Reserve(s * 0x800, (s + l) * 0x800)),
        ]
    }

    proptest! {
        /// Against a model: alloc returns the lowest free frame, never a reserved or
        /// allocated one, and the counts agree.
        #[test]
        fn matches_model(
            nr_frames in 1u64..300,
            free_start in 0u64..100,
            free_len in 0u64..300,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut bits = [0u64; 5];
            let mut frames = FrameAllocator::new(&mut bits, nr_frames);
            let mut model_free: BTreeSet<u64> = BTreeSet::new();
            frames.free_range(free_start * FRAME_SIZE, (free_start + free_len) * FRAME_SIZE);
            for f in free_start..(free_start + free_len).min(nr_frames) {
                model_free.insert(f);
            }
            let mut allocated: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc => {
                        let got = frames.alloc().map(|pa| pa / FRAME_SIZE);
                        let want = model_free.iter().next().copied();
                        prop_assert_eq!(got, want);
                        if let Some(f) = got {
                            model_free.remove(&f);
                            allocated.push(f);
                        }
                    }
                    Op::Contiguous(n, align) => {
                        let a = align.max(1);
                        let want = (0..nr_frames)
                            .filter(|s| s % a == 0)
                            .find(|s| (*s..s + n).all(|f| model_free.contains(&f)));
                        let got = frames.alloc_contiguous(n, align).map(|pa| pa / FRAME_SIZE);
                        prop_assert_eq!(got, want);
                        if let Some(s) = got {
                            for f in s..s + n {
                                model_free.remove(&f);
                                allocated.push(f);
                            }
                        }
                    }
                    Op::Free(i) => {
                        if allocated.is_empty() {
                            let pa = (i as u64 % 400) * FRAME_SIZE;
                            let expect_ok = pa / FRAME_SIZE < nr_frames
                                && !model_free.contains(&(pa / FRAME_SIZE));
                            if !expect_ok {
                                prop_assert!(frames.free(pa).is_err());
                            }
                        } else {
                            let f = allocated.swap_remove(i % allocated.len());
                            prop_assert_eq!(frames.free(f * FRAME_SIZE), Ok(()));
                            model_free.insert(f);
                            prop_assert!(frames.free(f * FRAME_SIZE).is_err());
                        }
                    }
                    Op::Reserve(start, end) => {
                        frames.reserve_range(start, end);
                        let first = start / FRAME_SIZE;
                        let last = end.div_ceil(FRAME_SIZE);
                        for f in first..last {
                            model_free.remove(&f);
                        }
                        allocated.retain(|f| !(first..last).contains(f));
                    }
                }
                prop_assert_eq!(frames.free_count(), model_free.len() as u64);
            }
        }
    }
}
