//! The bookkeeping of [`crate::grant_table`], pure so it is tested on the host:
//!
//! - [`RefAllocator`]: which grant references of the domain's own table are in use. Refs
//!   0..8 are reserved (the builder fills 0 for the console and 1 for xenstore); the rest
//!   are handed out lowest first, so the table grows one frame at a time.
//! - [`PageWindow`]: which pages of the guest-physical window where foreign grants are
//!   mapped are in use (the microvisor maps a grant only outside the mapper's RAM).

/// The first grant reference the allocator hands out (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const FIRST_REF: u32 = 8;

/// Grant references `FIRST_REF..limit`, `limit <= 64 * WORDS`.
pub struct RefAllocator<const WORDS: usize> {
    used: [u64; WORDS],
    limit: u32,
    count: u32,
}

impl<const WORDS: usize> RefAllocator<WORDS> {
    /// An allocator of refs below `limit` (clamped to what `WORDS` words can track).
    pub const fn new(limit: u32) -> Self {
        let max = (WORDS * 64) as u32;
        Self {
            used: [0; WORDS],
            limit: if limit < max { limit } else { max },
            count: 0,
        }
    }

    /// The lowest free reference, now marked used.
    pub fn alloc(&mut self) -> Option<u32> {
        for (w, word) in self.used.iter_mut().enumerate() {
            let base = (w * 64) as u32;
            if base >= self.limit {
                break;
            }
            let mut candidates = !*word;
            if base < FIRST_REF {
                candidates &= !((1u64 << (FIRST_REF - base).min(63)) - 1);
            }
            if candidates == 0 {
                continue;
            }
            let bit = candidates.trailing_zeros();
            let r = base + bit;
            if r >= self.limit {
                return None;
            }
            *word |= 1 << bit;
            self.count += 1;
            return Some(r);
        }
        None
    }

    /// Whether `r` is handed out.
    pub fn is_allocated(&self, r: u32) -> bool {
        r >= FIRST_REF && r < self.limit && self.used[(r / 64) as usize] & (1 << (r % 64)) != 0
    }

    /// Returns `r` to the pool; false if it was not handed out.
    pub fn free(&mut self, r: u32) -> bool {
        if !self.is_allocated(r) {
            return false;
        }
        self.used[(r / 64) as usize] &= !(1 << (r % 64));
        self.count -= 1;
        true
    }

    /// References handed out now.
    pub fn in_use(&self) -> u32 {
        self.count
    }
}

const PAGE: u64 = 4096;

/// A range of guest-physical pages `[base, base + pages * 4096)`, `pages <= 64 * WORDS`,
/// handed out one page at a time (next fit).
pub struct PageWindow<const WORDS: usize> {
    base: u64,
    pages: u32,
    used: [u64; WORDS],
    next: u32,
    count: u32,
}

impl<const WORDS: usize> PageWindow<WORDS> {
    /// A window of `pages` pages from the page-aligned `base` (clamped to what `WORDS`
    /// words can track).
    pub const fn new(base: u64, pages: u32) -> Self {
        let max = (WORDS * 64) as u32;
        Self {
            base,
            pages: if pages < max { pages } else { max },
            used: [0; WORDS],
            next: 0,
            count: 0,
        }
    }

    /// The window as `[start, end)`.
    pub const fn range(&self) -> (u64, u64) {
        (self.base, self.base + self.pages as u64 * PAGE)
    }

    fn is_used(&self, page: u32) -> bool {
        self.used[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, page: u32, used: bool) {
        let word = &mut self.used[(page / 64) as usize];
        if used {
            *word |= 1 << (page % 64);
        } else {
            *word &= !(1 << (page % 64));
        }
    }

    /// A free page's address, now marked used.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.count >= self.pages {
            return None;
        }
        for i in 0..self.pages {
            let page = (self.next + i) % self.pages;
            if !self.is_used(page) {
                self.set(page, true);
                self.count += 1;
                self.next = (page + 1) % self.pages;
                return Some(self.base + u64::from(page) * PAGE);
            }
        }
        None
    }

    fn page_of(&self, addr: u64) -> Option<u32> {
        let (start, end) = self.range();
        if addr < start || addr >= end || addr & (PAGE - 1) != 0 {
            return None;
        }
        Some(((addr - start) / PAGE) as u32)
    }

    /// Whether `addr` is a page of the window that is handed out.
    pub fn is_allocated(&self, addr: u64) -> bool {
        self.page_of(addr).is_some_and(|p| self.is_used(p))
    }

    /// Returns the page at `addr`; false if it is not a handed-out page of the window.
    pub fn free(&mut self, addr: u64) -> bool {
        match self.page_of(addr) {
            Some(page) if self.is_used(page) => {
                self.set(page, false);
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    /// Takes every page below `limit` out of use for good (say, the part of the window that
    /// overlaps the domain's RAM, where the microvisor refuses to map).
    pub fn reserve_below(&mut self, limit: u64) {
        for page in 0..self.pages {
            let addr = self.base + u64::from(page) * PAGE;
            if addr >= limit {
                break;
            }
            if !self.is_used(page) {
                self.set(page, true);
                self.count += 1;
            }
        }
    }

    /// Pages handed out (or reserved) now.
    pub fn in_use(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_start_at_eight_lowest_first() {
        let mut refs = RefAllocator::<2>::new(128);
        assert_eq!(refs.alloc(), Some(8));
        assert_eq!(refs.alloc(), Some(9));
        assert_eq!(refs.alloc(), Some(10));
        assert!(refs.free(9));
        assert!(!refs.free(9));
        assert_eq!(refs.alloc(), Some(9));
        assert_eq!(refs.in_use(), 3);
        assert!(!refs.free(0));
        assert!(!refs.free(1));
        assert!(!refs.free(7));
        assert!(!refs.free(500));
        assert!(refs.is_allocated(8));
        assert!(!refs.is_allocated(11));
    }

    #[test]
    fn refs_run_out_at_the_limit() {
        let mut refs = RefAllocator::<2>::new(70);
        let got: Vec<u32> = core::iter::from_fn(|| refs.alloc()).collect();
        assert_eq!(got, (8..70).collect::<Vec<_>>());
        assert_eq!(refs.alloc(), None);
        assert!(refs.free(64));
        assert_eq!(refs.alloc(), Some(64));
        // A limit beyond the words is clamped.
        let mut refs = RefAllocator::<1>::new(1000);
        assert_eq!(core::iter::from_fn(|| refs.alloc()).count(), 56);
    }

    const BASE: u64 = 0xc000_0000;

    #[test]
    fn window_hands_out_each_page_once() {
        let mut window = PageWindow::<2>::new(BASE, 100);
        assert_eq!(window.range(), (BASE, BASE + 100 * 4096));
        let mut pages: Vec<u64> = core::iter::from_fn(|| window.alloc()).collect();
        assert_eq!(pages.len(), 100);
        assert_eq!(window.alloc(), None);
        pages.sort_unstable();
        pages.dedup();
        assert_eq!(pages.len(), 100);
        assert!(pages
            .iter()
            .all(|&p| (BASE..BASE + 100 * 4096).contains(&p) && p % 4096 == 0));
        assert!(window.free(BASE + 42 * 4096));
        assert_eq!(window.alloc(), Some(BASE + 42 * 4096));
    }

    #[test]
    fn window_is_next_fit_and_rejects_bad_frees() {
        let mut window = PageWindow::<1>::new(BASE, 4);
        let a = window.alloc().unwrap();
        let b = window.alloc().unwrap();
        assert_eq!((a, b), (BASE, BASE + 4096));
        assert!(window.free(a));
        // Next fit: a freed page is not reused at once.
        assert_eq!(window.alloc(), Some(BASE + 2 * 4096));
        assert!(!window.free(a));
        assert!(!window.free(BASE + 1));
        assert!(!window.free(BASE - 4096));
        assert!(!window.free(BASE + 4 * 4096));
        assert!(!window.free(BASE + 3 * 4096));
        assert_eq!(window.in_use(), 2);
        assert!(window.is_allocated(b));
        assert!(!window.is_allocated(a));
    }

    #[test]
    fn window_can_reserve_pages_below_a_limit() {
        let mut window = PageWindow::<1>::new(BASE, 8);
        window.reserve_below(BASE + 3 * 4096 + 1);
        assert_eq!(window.in_use(), 4);
        let got: Vec<u64> = core::iter::from_fn(|| window.alloc()).collect();
        assert_eq!(got, (4..8).map(|p| BASE + p * 4096).collect::<Vec<_>>());
    }
}
