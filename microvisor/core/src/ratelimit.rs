//! A log-line rate limit: at most `burst` lines per `window_ns`, and one line saying how
//! many were dropped when the next window opens. Used for the lines a device or a domain
//! can cause at will (IOMMU faults), so it cannot flood the UART, which every CPU shares.

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Print it.
    Log,
    /// Print it, after a line saying that this many were dropped in the last window.
    LogAfterDropping(u64),
    /// Drop it (it is counted).
    Drop,
}

/// The limiter's state; `const`-constructible for a static.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    window_ns: u64,
    burst: u32,
    window_start: u64,
    in_window: u32,
    dropped: u64,
}

impl RateLimit {
    pub const fn new(window_ns: u64, burst: u32) -> Self {
        RateLimit {
            window_ns,
            burst,
            window_start: 0,
            in_window: 0,
            dropped: 0,
        }
    }

    /// Judges one line at time `now_ns`.
    pub fn admit(&mut self, now_ns: u64) -> Admit {
        if now_ns.saturating_sub(self.window_start) >= self.window_ns || now_ns < self.window_start
        {
            self.window_start = now_ns;
            self.in_window = 0;
        }
        if self.in_window >= self.burst {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.in_window += 1;
        match core::mem::take(&mut self.dropped) {
            0 => Admit::Log,
            dropped => Admit::LogAfterDropping(dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_passes_then_lines_are_dropped_and_counted() {
        let mut limit = RateLimit::new(1000 * MS, 3);
        assert_eq!(limit.admit(5 * MS), Admit::Log);
        assert_eq!(limit.admit(6 * MS), Admit::Log);
        assert_eq!(limit.admit(7 * MS), Admit::Log);
        for t in 8..100 {
            assert_eq!(limit.admit(t * MS), Admit::Drop);
        }
        // The next window: the first line says how many were dropped.
        assert_eq!(limit.admit(1005 * MS), Admit::LogAfterDropping(92));
        assert_eq!(limit.admit(1006 * MS), Admit::Log);
    }

    #[test]
    fn a_steady_trickle_is_never_dropped() {
        let mut limit = RateLimit::new(1000 * MS, 2);
        for second in 0..50u64 {
            assert_eq!(limit.admit(second * 1000 * MS + 1), Admit::Log);
        }
    }

    #[test]
    fn a_clock_going_back_opens_a_new_window() {
        let mut limit = RateLimit::new(1000 * MS, 1);
        assert_eq!(limit.admit(5000 * MS), Admit::Log);
        assert_eq!(limit.admit(5001 * MS), Admit::Drop);
        assert_eq!(limit.admit(10 * MS), Admit::LogAfterDropping(1));
    }
}
