//! Restarts of a domain built from the manifest: what each instance inherits from the one
//! before it, and when a restart loop is given up on.
//!
//! A domain restarted more than [`RESTART_BURST`] times within [`RESTART_WINDOW_NS`] is in a
//! loop. A service domain is then built once more, told so by [`GIVEN_UP_ARG`] on its
//! command line, only to fail what its peers wait for; when that instance stops it is
//! destroyed.

/// See the module documentation.
pub const RESTART_BURST: usize = 10;
/// See the module documentation: 10 s.
pub const RESTART_WINDOW_NS: u64 = 10_000_000_000;
/// Appended to the command line of a service domain rebuilt after it was given up on.
pub const GIVEN_UP_ARG: &str = " restart=given-up";

/// What a domain rebuilt from its manifest entry inherits from the instance before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The domain id to keep (a service domain keeps its id across restarts, so its peers'
    /// event channels and grants, addressed to that id, reach the new instance).
    pub domid: Option<u16>,
    /// How many times the domain was restarted.
    pub restarts: u32,
    /// The times of the last [`RESTART_BURST`] restarts, by `restarts % RESTART_BURST`.
    pub restart_times: [u64; RESTART_BURST],
    /// Given up on and rebuilt once more only to fail its peers' devices cleanly (its
    /// command line gets [`GIVEN_UP_ARG`]).
    pub given_up: bool,
}

impl Lineage {
    /// The lineage of the next instance, restarted at `now` (ns) and keeping `domid`;
    /// `None` when the last [`RESTART_BURST`] restarts and this one all fall within
    /// [`RESTART_WINDOW_NS`] (a loop: give up).
    pub fn next(&self, domid: Option<u16>, now: u64) -> Option<Self> {
        let slot = self.restarts as usize % RESTART_BURST;
        let oldest = self.restart_times[slot];
        if self.restarts as usize >= RESTART_BURST && now.saturating_sub(oldest) < RESTART_WINDOW_NS
        {
            return None;
        }
        let mut next = *self;
        next.domid = domid;
        next.restarts += 1;
        next.restart_times[slot] = now;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn restarts(times: &[u64]) -> Option<Lineage> {
        times.iter().try_fold(Lineage::default(), |lineage, &now| {
            lineage.next(Some(7), now)
        })
    }

    #[test]
    fn ten_restarts_in_ten_seconds_are_allowed_the_eleventh_is_not() {
        let ten: Vec<u64> = (1..=10).map(|i| i * S / 2).collect();
        let lineage = restarts(&ten).unwrap();
        assert_eq!((lineage.restarts, lineage.domid), (10, Some(7)));
        assert_eq!(lineage.next(Some(7), 6 * S), None);
    }

    #[test]
    fn restarts_spread_out_never_give_up() {
        let spread: Vec<u64> = (1..=100).map(|i| i * 1_100_000_000).collect();
        assert_eq!(restarts(&spread).unwrap().restarts, 100);
    }

    #[test]
    fn the_window_slides() {
        // Ten quick restarts, then one 10 s after the first: the oldest has left the window.
        let mut times: Vec<u64> = (0..10).map(|i| S + i * S / 10).collect();
        times.push(11 * S + 1);
        assert!(restarts(&times).is_some());
        // Another at once makes 11 within 10 s (from the burst's second on): given up.
        let mut quick = times.clone();
        quick.push(11 * S + 2);
        assert!(restarts(&quick).is_none());
        // 10 s after the burst's second, it has left the window too.
        times.push(11 * S + S / 10 + 1);
        assert!(restarts(&times).is_some());
    }
}
