//! [`BackRing`]: the back-end's end of a ring. It consumes requests and produces responses.
//!
//! Private state: `req_cons` (next request to consume), `rsp_prod_pvt` (next response
//! slot), `rsp_prod_pushed` (the value last published as `rsp_prod`). A legitimate
//! front-end never has more than a ring's worth of requests unanswered and never moves
//! `req_prod` backwards, so with `published = req_prod - rsp_prod_pvt` and
//! `taken = req_cons - rsp_prod_pvt` (consumed, not yet answered) the back-end requires
//! `taken <= published <= slots`; anything else is
//! [`RingError::RequestProducerOutOfRange`]. The unconsumed count `published - taken` is
//! then also at most the free response slots, `slots - taken`.

use core::marker::PhantomData;

use crate::entry::{read_entry, write_entry, RingEntry};
use crate::error::{LayoutError, ResumeError, RingError, RingFull};
use crate::journal::Journal;
use crate::layout::{
    RingLayout, REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET,
};
use crate::shared_page::SharedPage;
use crate::sring::peer_wants_event;

/// The back-end of a ring of `Req` requests and `Rsp` responses over the region `M`.
pub struct BackRing<Req, Rsp, M> {
    page: M,
    layout: RingLayout,
    req_cons: u32,
    rsp_prod_pvt: u32,
    rsp_prod_pushed: u32,
    /// Set by [`BackRing::journaled`] and [`BackRing::resume`]: every response saves the
    /// slot bytes it overwrites first ([`crate::journal`]).
    journal: Option<Journal>,
    /// A publish forced by a full journal batch found the front-end wanting an event; the
    /// next [`BackRing::push_responses`] says so.
    notify_owed: bool,
    entries: PhantomData<fn(Rsp) -> Req>,
}

impl<Req: RingEntry, Rsp: RingEntry, M: SharedPage> BackRing<Req, Rsp, M> {
    /// Attaches to a ring the front-end initialised with [`crate::Sring::init`].
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
            req_cons: index,
            rsp_prod_pvt: index,
            rsp_prod_pushed: index,
            journal: None,
            notify_owed: false,
            entries: PhantomData,
        })
    }

    /// Like [`BackRing::new`], for a back-end that may restart: responses are journaled
    /// ([`crate::journal`]) so that a later instance can [`BackRing::resume`] the ring.
    /// Produce responses in request order.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the entry types do not fit the region.
    pub fn journaled(page: M) -> Result<Self, LayoutError> {
        let mut ring = Self::attach(page, 0)?;
        ring.journal = Journal::new(&ring.layout, ring.page.size_bytes(), Rsp::SIZE);
        if let Some(journal) = ring.journal.as_mut() {
            journal.open(&ring.page, 0);
        }
        Ok(ring)
    }

    /// Takes over a ring that an earlier instance of this back-end served with
    /// [`BackRing::journaled`] and left at any point: puts back the request bytes of
    /// responses it wrote but did not publish, and starts at the published `rsp_prod`, so
    /// every request not answered yet, including those the earlier instance had taken, is
    /// consumed again. Returns the ring and how many slots were restored.
    ///
    /// # Errors
    ///
    /// [`ResumeError::Layout`] if the entry types do not fit the region;
    /// [`ResumeError::Ring`] if `req_prod` is more than a ring's worth past `rsp_prod`.
    pub fn resume(page: M) -> Result<(Self, u32), ResumeError> {
        let layout = RingLayout::new(page.size_bytes(), Req::SIZE, Rsp::SIZE)
            .map_err(ResumeError::Layout)?;
        let rsp_prod = page.load_u32(RSP_PROD_OFFSET);
        let req_prod = page.load_u32(REQ_PROD_OFFSET);
        if req_prod.wrapping_sub(rsp_prod) > layout.slots() {
            return Err(ResumeError::Ring(RingError::RequestProducerOutOfRange {
                req_prod,
                req_cons: rsp_prod,
                rsp_prod_pvt: rsp_prod,
            }));
        }
        let mut journal = Journal::new(&layout, page.size_bytes(), Rsp::SIZE);
        let restored = journal
            .as_ref()
            .map_or(0, |journal| journal.restore(&page, &layout, rsp_prod));
        if let Some(journal) = journal.as_mut() {
            journal.open(&page, rsp_prod);
        }
        let mut ring = Self::attach(page, rsp_prod).map_err(ResumeError::Layout)?;
        ring.journal = journal;
        Ok((ring, restored))
    }

    /// The ring's shape.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.layout.slots()
    }

    /// The index of the next request to consume.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The index the next response will take.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// The shared region.
    pub fn page(&self) -> &M {
        &self.page
    }

    /// Gives the region back.
    pub fn into_page(self) -> M {
        self.page
    }

    /// The number of published requests not yet consumed, checked against what the
    /// front-end may legitimately have published.
    ///
    /// # Errors
    ///
    /// [`RingError::RequestProducerOutOfRange`] if the front-end published an impossible
    /// `req_prod`; nothing is consumed.
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        let req_prod = self.page.load_u32(REQ_PROD_OFFSET);
        let published = req_prod.wrapping_sub(self.rsp_prod_pvt);
        let taken = self.unanswered_requests();
        if published > self.slots() || published < taken {
            return Err(RingError::RequestProducerOutOfRange {
                req_prod,
                req_cons: self.req_cons,
                rsp_prod_pvt: self.rsp_prod_pvt,
            });
        }
        let free_response_slots = self.slots() - taken;
        Ok((published - taken).min(free_response_slots))
    }

    /// Copies the next published request out of the ring, or `Ok(None)` if there is none.
    /// The slot is read exactly once; validate the returned copy.
    ///
    /// # Errors
    ///
    /// [`RingError::RequestProducerOutOfRange`] if the front-end published an impossible
    /// `req_prod`; nothing is consumed.
    pub fn next_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let request = read_entry(&self.page, &self.layout, self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(request))
    }

    /// The number of consumed requests not yet answered: how many responses can be
    /// produced now.
    pub fn unanswered_requests(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Copies `response` into the slot of the oldest unanswered request. The front-end
    /// sees it after [`BackRing::push_responses`].
    ///
    /// # Errors
    ///
    /// [`RingFull`] when [`BackRing::unanswered_requests`] is 0.
    pub fn produce_response(&mut self, response: &Rsp) -> Result<(), RingFull> {
        if self.unanswered_requests() == 0 {
            return Err(RingFull);
        }
        if self.journal.is_some_and(|journal| journal.is_full()) {
            self.notify_owed |= self.publish();
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.save(&self.page, &self.layout, self.rsp_prod_pvt);
        }
        write_entry(&self.page, &self.layout, self.rsp_prod_pvt, response);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the responses produced so far; returns whether the front-end asked to be
    /// notified (its `rsp_event` was passed), in which case the caller signals its event
    /// channel.
    #[must_use = "when this returns true the front-end sleeps until notified"]
    pub fn push_responses(&mut self) -> bool {
        let wants = self.publish();
        wants || core::mem::take(&mut self.notify_owed)
    }

    fn publish(&mut self) -> bool {
        if let Some(journal) = self.journal.as_mut() {
            journal.published();
        }
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        self.page.store_u32(RSP_PROD_OFFSET, new);
        self.rsp_prod_pushed = new;
        self.page.fence();
        peer_wants_event(new, old, self.page.load_u32(RSP_EVENT_OFFSET))
    }

    /// Checks for requests before sleeping: if there are none, asks the front-end to
    /// notify on the next one (`req_event = req_cons + 1`) and looks again. `Ok(false)`
    /// means it is safe to sleep until the event channel fires.
    ///
    /// # Errors
    ///
    /// [`RingError::RequestProducerOutOfRange`] if the front-end published an impossible
    /// `req_prod`; nothing is consumed.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.page
            .store_u32(REQ_EVENT_OFFSET, self.req_cons.wrapping_add(1));
        self.page.fence();
        Ok(self.unconsumed_requests()? > 0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::test_entries::Message;
    use crate::{LocalPage, Sring};

    type Back<'a> = BackRing<Message, Message, &'a LocalPage>;

    /// Plays a front-end by hand: writes request `id` into its slot.
    fn put_request(page: &LocalPage, index: u32, id: u64) {
        let mut bytes = [0u8; 64];
        Message::new(id, b"req").unwrap().encode(&mut bytes);
        page.write_bytes(64 + (index as usize % 32) * 64, &bytes);
    }

    #[test]
    fn consumes_published_requests_in_order() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        assert_eq!(back.next_request(), Ok(None));
        for index in 0..3 {
            put_request(&page, index, u64::from(index) + 10);
        }
        page.store_u32(REQ_PROD_OFFSET, 3);
        assert_eq!(back.unconsumed_requests(), Ok(3));
        for id in 10..13 {
            assert_eq!(back.next_request().unwrap().unwrap().id, id);
        }
        assert_eq!(back.next_request(), Ok(None));
        assert_eq!(back.req_cons(), 3);
        assert_eq!(back.unanswered_requests(), 3);
    }

    #[test]
    fn answers_only_consumed_requests() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        let reply = Message::new(1, b"rsp").unwrap();
        assert_eq!(back.produce_response(&reply), Err(RingFull));
        put_request(&page, 0, 1);
        page.store_u32(REQ_PROD_OFFSET, 1);
        // Published but not consumed: still nothing to answer.
        assert_eq!(back.produce_response(&reply), Err(RingFull));
        back.next_request().unwrap().unwrap();
        assert_eq!(back.produce_response(&reply), Ok(()));
        assert_eq!(back.produce_response(&reply), Err(RingFull));
        assert_eq!(page.load_u32(RSP_PROD_OFFSET), 0);
        assert!(back.push_responses());
        assert_eq!(page.load_u32(RSP_PROD_OFFSET), 1);
        let mut slot = [0u8; 64];
        page.read_bytes(64, &mut slot);
        assert_eq!(Message::decode(&slot), reply);
    }

    #[test]
    fn unconsumed_requests_are_bounded_by_free_response_slots() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        page.store_u32(REQ_PROD_OFFSET, 32);
        for _ in 0..20 {
            back.next_request().unwrap().unwrap();
        }
        // 20 taken and unanswered, 12 published and unconsumed: exactly the free slots.
        assert_eq!(back.unconsumed_requests(), Ok(12));
        // One more would overwrite an unanswered request's slot.
        page.store_u32(REQ_PROD_OFFSET, 33);
        assert_eq!(
            back.unconsumed_requests(),
            Err(RingError::RequestProducerOutOfRange {
                req_prod: 33,
                req_cons: 20,
                rsp_prod_pvt: 0
            })
        );
        // Answering frees slots for the front-end's next requests.
        let reply = Message::new(0, b"").unwrap();
        back.produce_response(&reply).unwrap();
        assert_eq!(back.unconsumed_requests(), Ok(13));
    }

    #[test]
    fn a_backwards_req_prod_is_an_error() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        page.store_u32(REQ_PROD_OFFSET, 5);
        for _ in 0..5 {
            back.next_request().unwrap().unwrap();
        }
        page.store_u32(REQ_PROD_OFFSET, 3);
        assert!(back.next_request().is_err());
        assert!(back.final_check_for_requests().is_err());
        assert_eq!(back.req_cons(), 5);
    }

    #[test]
    fn push_notifies_only_when_rsp_event_is_passed() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        page.store_u32(REQ_PROD_OFFSET, 4);
        let reply = Message::new(0, b"").unwrap();
        for _ in 0..4 {
            back.next_request().unwrap().unwrap();
        }
        back.produce_response(&reply).unwrap();
        assert!(back.push_responses());
        back.produce_response(&reply).unwrap();
        assert!(!back.push_responses());
        page.store_u32(RSP_EVENT_OFFSET, 4);
        back.produce_response(&reply).unwrap();
        assert!(!back.push_responses());
        back.produce_response(&reply).unwrap();
        assert!(back.push_responses());
        assert!(!back.push_responses());
    }

    #[test]
    fn final_check_arms_req_event_only_when_idle() {
        let page = LocalPage::new();
        Sring::init(&page);
        let mut back = Back::new(&page).unwrap();
        page.store_u32(REQ_EVENT_OFFSET, 99);
        assert_eq!(back.final_check_for_requests(), Ok(false));
        assert_eq!(page.load_u32(REQ_EVENT_OFFSET), 1);
        page.store_u32(REQ_PROD_OFFSET, 1);
        page.store_u32(REQ_EVENT_OFFSET, 42);
        assert_eq!(back.final_check_for_requests(), Ok(true));
        assert_eq!(page.load_u32(REQ_EVENT_OFFSET), 42);
        back.next_request().unwrap().unwrap();
        assert_eq!(back.final_check_for_requests(), Ok(false));
        assert_eq!(page.load_u32(REQ_EVENT_OFFSET), 2);
    }
}
