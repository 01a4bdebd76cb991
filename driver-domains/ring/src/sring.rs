//! [`Sring`]: initialising the shared part of a ring, and the event-index rule both ends
//! use to decide whether the peer wants a notification.

use crate::layout::{REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET};
use crate::shared_page::SharedPage;

/// The shared ring header and slots, as a set of operations on a region.
pub struct Sring;

impl Sring {
    /// Prepares a fresh region for a ring: the front-end calls this before granting it.
    ///
    /// Zeroes the whole region (so nothing stale reaches the back-end), then sets
    /// `req_prod = rsp_prod = 0` and `req_event = rsp_event = 1`.
    pub fn init<M: SharedPage + ?Sized>(page: &M) {
        Self::init_at(page, 0);
    }

    /// Like [`Sring::init`], but with both producer indices at `index` and both event
    /// indices at `index + 1`. Rings attached with the same `index` behave exactly like
    /// fresh ones; tests use it to start near `u32::MAX` and exercise wrap-around.
    pub fn init_at<M: SharedPage + ?Sized>(page: &M, index: u32) {
        const ZEROES: [u8; 64] = [0; 64];
        let size_bytes = page.size_bytes();
        let mut offset = 0;
        while offset < size_bytes {
            let count = ZEROES.len().min(size_bytes - offset);
            page.write_bytes(offset, &ZEROES[..count]);
            offset += count;
        }
        page.store_u32(REQ_EVENT_OFFSET, index.wrapping_add(1));
        page.store_u32(RSP_EVENT_OFFSET, index.wrapping_add(1));
        page.store_u32(RSP_PROD_OFFSET, index);
        page.store_u32(REQ_PROD_OFFSET, index);
    }
}

/// Whether a producer that moved its index from `old` to `new` must notify a peer whose
/// event index is `event`: true iff `event` lies in `(old, new]`, in wrapping arithmetic.
pub(crate) fn peer_wants_event(new: u32, old: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::LocalPage;

    #[test]
    fn init_sets_indices_and_zeroes_everything_else() {
        let page = LocalPage::new();
        page.write_bytes(0, &[0xa5; 4096]);
        Sring::init(&page);
        assert_eq!(page.load_u32(REQ_PROD_OFFSET), 0);
        assert_eq!(page.load_u32(REQ_EVENT_OFFSET), 1);
        assert_eq!(page.load_u32(RSP_PROD_OFFSET), 0);
        assert_eq!(page.load_u32(RSP_EVENT_OFFSET), 1);
        let mut rest = [0xffu8; 4096 - 16];
        page.read_bytes(16, &mut rest);
        assert!(rest.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn init_at_wraps_the_event_index() {
        let page = LocalPage::new();
        Sring::init_at(&page, u32::MAX);
        assert_eq!(page.load_u32(REQ_PROD_OFFSET), u32::MAX);
        assert_eq!(page.load_u32(RSP_PROD_OFFSET), u32::MAX);
        assert_eq!(page.load_u32(REQ_EVENT_OFFSET), 0);
        assert_eq!(page.load_u32(RSP_EVENT_OFFSET), 0);
    }

    #[test]
    fn event_rule_fires_only_when_the_event_index_is_passed() {
        // event in (old, new]
        assert!(peer_wants_event(1, 0, 1));
        assert!(peer_wants_event(5, 0, 1));
        assert!(peer_wants_event(5, 2, 5));
        // event not yet reached, already passed before, or nothing new
        assert!(!peer_wants_event(5, 2, 6));
        assert!(!peer_wants_event(5, 2, 2));
        assert!(!peer_wants_event(5, 2, 1));
        assert!(!peer_wants_event(3, 3, 3));
        // across the u32 wrap
        assert!(peer_wants_event(2, u32::MAX - 1, u32::MAX));
        assert!(peer_wants_event(2, u32::MAX - 1, 0));
        assert!(peer_wants_event(2, u32::MAX - 1, 2));
        assert!(!peer_wants_event(2, u32::MAX - 1, 3));
        assert!(!peer_wants_event(2, u32::MAX - 1, u32::MAX - 1));
    }
}
