//! Property: any interleaving of produce / push / consume / final-check on the two ends
//! delivers every request and every response exactly once and in order, the indices never
//! overtake one another, a side that went to sleep is never left with work it was not
//! woken for, and each arming of an event index yields at most one notification.
#![cfg(not(loom))]

mod common;

use std::collections::VecDeque;
use std::fmt::Debug;

use common::{TxRequest, TxResponse, Word};
use proptest::prelude::*;
use xen_ring::layout::{REQ_PROD_OFFSET, RSP_PROD_OFFSET};
use xen_ring::test_entries::Message;
use xen_ring::{BackRing, FrontRing, LocalPage, LocalRegion, RingEntry, SharedPage, Sring};

/// What travels through one kind of ring: the request and response for sequence number `n`.
trait Traffic {
    type Req: RingEntry + PartialEq + Debug;
    type Rsp: RingEntry + PartialEq + Debug;
    fn request(sequence: u64) -> Self::Req;
    fn response(sequence: u64) -> Self::Rsp;
}

/// 64-byte messages in a page: 32 slots.
struct Messages;
impl Traffic for Messages {
    type Req = Message;
    type Rsp = Message;
    fn request(sequence: u64) -> Message {
        Message::new(sequence, b"ping").unwrap()
    }
    fn response(sequence: u64) -> Message {
        Message::new(!sequence, b"pong").unwrap()
    }
}

/// 12-byte requests, 4-byte responses in 128 bytes: 4 slots straddling words.
struct Tx;
impl Traffic for Tx {
    type Req = TxRequest;
    type Rsp = TxResponse;
    fn request(sequence: u64) -> TxRequest {
        TxRequest::numbered(sequence)
    }
    fn response(sequence: u64) -> TxResponse {
        TxResponse {
            id: sequence as u16,
            status: (sequence as i16).wrapping_neg(),
        }
    }
}

/// One-word entries in 68 bytes: a single slot.
struct Words;
impl Traffic for Words {
    type Req = Word;
    type Rsp = Word;
    fn request(sequence: u64) -> Word {
        Word(sequence as u32)
    }
    fn response(sequence: u64) -> Word {
        Word(!(sequence as u32))
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Produce(u8),
    PushRequests,
    ConsumeResponses(u8),
    FrontFinalCheck,
    ConsumeRequests(u8),
    Respond(u8),
    PushResponses,
    BackFinalCheck,
}

fn ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..=8).prop_map(Op::Produce),
        2 => Just(Op::PushRequests),
        2 => (1u8..=8).prop_map(Op::ConsumeResponses),
        1 => Just(Op::FrontFinalCheck),
        2 => (1u8..=8).prop_map(Op::ConsumeRequests),
        2 => (1u8..=8).prop_map(Op::Respond),
        2 => Just(Op::PushResponses),
        1 => Just(Op::BackFinalCheck),
    ]
}

fn starts() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX, 0u32..40]
}

/// Both ends and what the test knows they should have done.
struct Harness<'a, T: Traffic, M: SharedPage> {
    page: &'a M,
    front: FrontRing<T::Req, T::Rsp, &'a M>,
    back: BackRing<T::Req, T::Rsp, &'a M>,
    start: u32,
    sent: u64,
    back_received: u64,
    unanswered: VecDeque<u64>,
    front_received: u64,
    back_asleep: bool,
    front_asleep: bool,
    back_armings: u64,
    front_armings: u64,
    events_to_back: u64,
    events_to_front: u64,
}

impl<'a, T: Traffic, M: SharedPage> Harness<'a, T, M> {
    fn new(page: &'a M, start: u32) -> Self {
        Sring::init_at(page, start);
        Self {
            page,
            front: FrontRing::attach(page, start).unwrap(),
            back: BackRing::attach(page, start).unwrap(),
            start,
            sent: 0,
            back_received: 0,
            unanswered: VecDeque::new(),
            front_received: 0,
            back_asleep: false,
            front_asleep: false,
            // The initial event indices (start + 1) count as one arming each.
            back_armings: 1,
            front_armings: 1,
            events_to_back: 0,
            events_to_front: 0,
        }
    }

    fn produce(&mut self, count: u8) {
        for _ in 0..count {
            let free = self.front.free_requests();
            match self.front.produce_request(&T::request(self.sent)) {
                Ok(()) => self.sent += 1,
                Err(_) => assert_eq!(free, 0, "refused with free slots"),
            }
        }
    }

    fn push_requests(&mut self) {
        if self.front.push_requests() {
            self.events_to_back += 1;
            self.back_asleep = false;
        }
    }

    fn consume_responses(&mut self, count: u8) {
        for _ in 0..count {
            match self.front.next_response().unwrap() {
                Some(response) => {
                    assert_eq!(response, T::response(self.front_received));
                    self.front_received += 1;
                }
                None => break,
            }
        }
    }

    fn consume_requests(&mut self, count: u8) {
        for _ in 0..count {
            match self.back.next_request().unwrap() {
                Some(request) => {
                    assert_eq!(request, T::request(self.back_received));
                    self.unanswered.push_back(self.back_received);
                    self.back_received += 1;
                }
                None => break,
            }
        }
    }

    fn respond(&mut self, count: u8) {
        for _ in 0..count {
            let Some(&sequence) = self.unanswered.front() else {
                assert!(self.back.produce_response(&T::response(0)).is_err());
                break;
            };
            self.back.produce_response(&T::response(sequence)).unwrap();
            self.unanswered.pop_front();
        }
    }

    fn push_responses(&mut self) {
        if self.back.push_responses() {
            self.events_to_front += 1;
            self.front_asleep = false;
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Produce(_) | Op::PushRequests | Op::ConsumeResponses(_) | Op::FrontFinalCheck => {
                self.front_asleep = false
            }
            _ => self.back_asleep = false,
        }
        match op {
            Op::Produce(count) => self.produce(count),
            Op::PushRequests => self.push_requests(),
            Op::ConsumeResponses(count) => self.consume_responses(count),
            Op::FrontFinalCheck => {
                if !self.front.final_check_for_responses().unwrap() {
                    self.front_armings += 1;
                    self.front_asleep = true;
                }
            }
            Op::ConsumeRequests(count) => self.consume_requests(count),
            Op::Respond(count) => self.respond(count),
            Op::PushResponses => self.push_responses(),
            Op::BackFinalCheck => {
                if !self.back.final_check_for_requests().unwrap() {
                    self.back_armings += 1;
                    self.back_asleep = true;
                }
            }
        }
    }

    fn check_invariants(&self) {
        let rel = |index: u32| u64::from(index.wrapping_sub(self.start));
        let slots = u64::from(self.front.slots());
        let chain = [
            rel(self.front.rsp_cons()),
            rel(self.page.load_u32(RSP_PROD_OFFSET)),
            rel(self.back.rsp_prod_pvt()),
            rel(self.back.req_cons()),
            rel(self.page.load_u32(REQ_PROD_OFFSET)),
            rel(self.front.req_prod_pvt()),
        ];
        assert!(
            chain.windows(2).all(|pair| pair[0] <= pair[1]),
            "indices overtook: {chain:?}"
        );
        assert!(
            chain[5] - chain[0] <= slots,
            "more than a ring outstanding: {chain:?}"
        );
        assert_eq!(chain[5], self.sent);
        assert_eq!(chain[3], self.back_received);
        assert_eq!(chain[0], self.front_received);
        if self.back_asleep {
            assert_eq!(
                self.back.unconsumed_requests(),
                Ok(0),
                "lost wake-up of the back-end"
            );
        }
        if self.front_asleep {
            assert_eq!(
                self.front.unconsumed_responses(),
                Ok(0),
                "lost wake-up of the front-end"
            );
        }
        assert!(
            self.events_to_back <= self.back_armings,
            "unrequested event to the back-end"
        );
        assert!(
            self.events_to_front <= self.front_armings,
            "unrequested event to the front-end"
        );
    }

    /// Lets both ends run until everything produced has come back.
    fn drain(&mut self) {
        self.push_requests();
        self.consume_requests(u8::MAX);
        self.respond(u8::MAX);
        self.push_responses();
        self.consume_responses(u8::MAX);
        self.check_invariants();
        assert_eq!(self.back_received, self.sent);
        assert_eq!(self.front_received, self.sent);
        assert!(self.unanswered.is_empty());
    }
}

fn run<T: Traffic, M: SharedPage>(page: &M, start: u32, script: &[Op]) {
    let mut harness = Harness::<T, M>::new(page, start);
    for &op in script {
        harness.apply(op);
        harness.check_invariants();
    }
    harness.drain();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn messages_in_a_page(start in starts(), script in proptest::collection::vec(ops(), 0..300)) {
        run::<Messages, _>(&LocalPage::new(), start, &script);
    }

    #[test]
    fn odd_sized_entries_in_four_slots(
        start in starts(),
        script in proptest::collection::vec(ops(), 0..300),
    ) {
        let page = LocalRegion::<32>::new();
        run::<Tx, _>(&page, start, &script);
    }

    #[test]
    fn words_in_a_single_slot(start in starts(), script in proptest::collection::vec(ops(), 0..300)) {
        let page = LocalRegion::<17>::new();
        run::<Words, _>(&page, start, &script);
    }
}

#[test]
fn the_shapes_are_what_the_properties_assume() {
    let page = LocalRegion::<32>::new();
    assert_eq!(Harness::<Tx, _>::new(&page, 0).front.slots(), 4);
    let page = LocalRegion::<17>::new();
    assert_eq!(Harness::<Words, _>::new(&page, 0).front.slots(), 1);
    let page = LocalPage::new();
    assert_eq!(Harness::<Messages, _>::new(&page, 0).front.slots(), 32);
}
