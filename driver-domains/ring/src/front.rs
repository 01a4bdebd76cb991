//! [`FrontRing`]: the front-end's end of a ring. It produces requests and consumes
//! responses.
//!
//! Private state: `req_prod_pvt` (next request slot to fill), `req_prod_pushed` (the value
//! last published as `req_prod`), `rsp_cons` (next response to consume). The back-end
//! answers only published requests, so a published `rsp_prod` with
//! `rsp_prod - rsp_cons > req_prod_pushed - rsp_cons` is a protocol violation
//! ([`RingError::ResponseProducerOutOfRange`]).

use core::marker::PhantomData;

use crate::entry::{read_entry, write_entry, RingEntry};
use crate::error::{LayoutError, RingError, RingFull};
use crate::layout::{
    RingLayout, REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET,
};
use crate::shared_page::SharedPage;
use crate::sring::peer_wants_event;

/// The front-end of a ring of `Req` requests and `Rsp` responses over the region `M`.
pub struct FrontRing<Req, Rsp, M> {
    page: M,
    layout: RingLayout,
    req_prod_pvt: u32,
    req_prod_pushed: u32,
    rsp_cons: u32,
    entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: RingEntry, Rsp: RingEntry, M: SharedPage> FrontRing<Req, Rsp, M> {
    /// Attaches to a ring initialised by [`crate::Sring::init`] (all indices at 0).
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the entry types do not fit the region (see [`RingLayout::new`]).
    pub fn new(page: M) -> Result<Self, LayoutError> {
        Self::attach(page, 0)
    }

    /// Attaches to a ring whose indices all stand at `index` (see [`crate::Sring::init_at`]).
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the entry types do not fit the region (see [`RingLayout::new`]).
    pub fn attach(page: M, index: u32) -> Result<Self, LayoutError> {
        let layout = RingLayout::new(page.size_bytes(), Req::SIZE, Rsp::SIZE)?;
        Ok(Self {
            page,
            layout,
            req_prod_pvt: index,
            req_prod_pushed: index,
            rsp_cons: index,
            entries: PhantomData,
        })
    }

    /// The ring's shape.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.layout.slots()
    }

    /// The index the next request will take.
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The index of the next response to consume.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// The shared region.
    pub fn page(&self) -> &M {
        &self.page
    }

    /// Gives the region back.
    pub fn into_page(self) -> M {
        self.page
    }

    /// How many more requests can be produced before their responses are consumed.
    pub fn free_requests(&self) -> u32 {
        self.slots() - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Whether no request can be produced now.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Copies `request` into the next free slot. The back-end sees it after
    /// [`FrontRing::push_requests`].
    ///
    /// # Errors
    ///
    /// [`RingFull`] when [`FrontRing::free_requests`] is 0.
    pub fn produce_request(&mut self, request: &Req) -> Result<(), RingFull> {
        if self.is_full() {
            return Err(RingFull);
        }
        write_entry(&self.page, &self.layout, self.req_prod_pvt, request);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the requests produced so far; returns whether the back-end asked to be
    /// notified (its `req_event` was passed), in which case the caller signals its event
    /// channel.
    #[must_use = "when this returns true the back-end sleeps until notified"]
    pub fn push_requests(&mut self) -> bool {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        self.page.store_u32(REQ_PROD_OFFSET, new);
        self.req_prod_pushed = new;
        self.page.fence();
        peer_wants_event(new, old, self.page.load_u32(REQ_EVENT_OFFSET))
    }

    /// The number of published responses not yet consumed.
    ///
    /// # Errors
    ///
    /// [`RingError::ResponseProducerOutOfRange`] if the back-end published an impossible
    /// `rsp_prod`; nothing is consumed.
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        let rsp_prod = self.page.load_u32(RSP_PROD_OFFSET);
        let available = rsp_prod.wrapping_sub(self.rsp_cons);
        let outstanding = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if available > outstanding {
            return Err(RingError::ResponseProducerOutOfRange {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pushed,
            });
        }
        Ok(available)
    }

    /// Copies the next published response out of the ring, or `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// [`RingError::ResponseProducerOutOfRange`] if the back-end published an impossible
    /// `rsp_prod`; nothing is consumed.
    pub fn next_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let response = read_entry(&self.page, &self.layout, self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(response))
    }

    /// Checks for responses before sleeping: if there are none, asks the back-end to
    /// notify on the next one (`rsp_event = rsp_cons + 1`) and looks again. `Ok(false)`
    /// means it is safe to sleep until the event channel fires.
    ///
    /// # Errors
    ///
    /// [`RingError::ResponseProducerOutOfRange`] if the back-end published an impossible
    /// `rsp_prod`; nothing is consumed.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.page
            .store_u32(RSP_EVENT_OFFSET, self.rsp_cons.wrapping_add(1));
        self.page.fence();
        Ok(self.unconsumed_responses()? > 0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::test_entries::Message;
    use crate::{LocalPage, Sring};

    type Front<'a> = FrontRing<Message, Message, &'a LocalPage>;

    fn message(id: u64) -> Message {
        Message::new(id, &id.to_le_bytes()).unwrap()
    }

    #[test]
    fn fills_exactly_the_ring() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front = Front::new(&page).unwrap();
        assert_eq!(front.slots(), 32);
        for id in 0..32 {
            assert_eq!(front.free_requests(), 32 - id as u32);
            front.produce_request(&message(id)).unwrap();
        }
        assert!(front.is_full());
        assert_eq!(front.produce_request(&message(99)), Err(RingFull));
        assert_eq!(front.req_prod_pvt(), 32);
    }

    #[test]
    fn requests_are_invisible_until_pushed() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front = Front::new(&page).unwrap();
        front.produce_request(&message(1)).unwrap();
        front.produce_request(&message(2)).unwrap();
        assert_eq!(page.load_u32(REQ_PROD_OFFSET), 0);
        let mut slot = [0u8; 64];
        page.read_bytes(64 + 64, &mut slot);
        assert_eq!(Message::decode(&slot), message(2));
        assert!(front.push_requests());
        assert_eq!(page.load_u32(REQ_PROD_OFFSET), 2);
    }

    #[test]
    fn push_notifies_only_when_req_event_is_passed() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front = Front::new(&page).unwrap();
        // Fresh ring: req_event = 1, so the first push notifies.
        front.produce_request(&message(0)).unwrap();
        assert!(front.push_requests());
        // The back-end has not asked again: no notification.
        front.produce_request(&message(1)).unwrap();
        assert!(!front.push_requests());
        // Nothing new: no notification even if the event index is due.
        page.store_u32(REQ_EVENT_OFFSET, 2);
        assert!(!front.push_requests());
        // The back-end asks to hear about the 4th request; pushing the 3rd stays silent.
        page.store_u32(REQ_EVENT_OFFSET, 4);
        front.produce_request(&message(2)).unwrap();
        assert!(!front.push_requests());
        front.produce_request(&message(3)).unwrap();
        front.produce_request(&message(4)).unwrap();
        assert!(front.push_requests());
    }

    #[test]
    fn final_check_arms_rsp_event_only_when_idle() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front = Front::new(&page).unwrap();
        for id in 0..3 {
            front.produce_request(&message(id)).unwrap();
        }
        let _ = front.push_requests();
        page.store_u32(RSP_EVENT_OFFSET, 77);
        assert_eq!(front.final_check_for_responses(), Ok(false));
        assert_eq!(page.load_u32(RSP_EVENT_OFFSET), 1);
        // A response arrives: the check reports it and leaves rsp_event alone.
        page.write_bytes(64, &[0; 64]);
        page.store_u32(RSP_PROD_OFFSET, 1);
        page.store_u32(RSP_EVENT_OFFSET, 55);
        assert_eq!(front.final_check_for_responses(), Ok(true));
        assert_eq!(page.load_u32(RSP_EVENT_OFFSET), 55);
        assert!(front.next_response().unwrap().is_some());
        assert_eq!(front.final_check_for_responses(), Ok(false));
        assert_eq!(page.load_u32(RSP_EVENT_OFFSET), 2);
    }

    #[test]
    fn responses_beyond_published_requests_are_an_error() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut front = Front::new(&page).unwrap();
        front.produce_request(&message(0)).unwrap();
        front.produce_request(&message(1)).unwrap();
        // Produced but not pushed: the back-end cannot have answered them.
        page.store_u32(RSP_PROD_OFFSET, 1);
        let error = RingError::ResponseProducerOutOfRange {
            rsp_prod: 1,
            rsp_cons: 0,
            req_prod: 0,
        };
        assert_eq!(front.next_response(), Err(error));
        assert_eq!(front.final_check_for_responses(), Err(error));
        let _ = front.push_requests();
        page.store_u32(RSP_PROD_OFFSET, 3);
        assert!(front.next_response().is_err());
        // Moving backwards is as bad as running ahead.
        page.store_u32(RSP_PROD_OFFSET, u32::MAX);
        assert!(front.unconsumed_responses().is_err());
        assert_eq!(front.rsp_cons(), 0);
        // A legal value again: consumption resumes where it was.
        page.store_u32(RSP_PROD_OFFSET, 2);
        assert_eq!(front.unconsumed_responses(), Ok(2));
    }
}
