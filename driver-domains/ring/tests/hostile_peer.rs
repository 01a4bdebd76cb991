//! A peer that writes garbage into the shared page: the other end reports
//! [`RingError`]s, never panics, never reads or writes outside the region, and never
//! accepts more entries than the peer may legitimately have produced.
#![cfg(not(loom))]

mod common;

use common::{TxRequest, TxResponse};
use proptest::prelude::*;
use xen_ring::layout::{REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET};
use xen_ring::test_entries::Message;
use xen_ring::{BackRing, FrontRing, LocalPage, LocalRegion, RingError, SharedPage, Sring};

type Back<'a> = BackRing<Message, Message, &'a LocalPage>;

#[test]
fn garbage_req_prod_values_are_rejected_exactly_outside_the_window() {
    for start in [0u32, 17, u32::MAX - 5] {
        let page = LocalPage::new();
        Sring::init_at(&page, start);
        let mut back = Back::attach(&page, start).unwrap();
        // 10 consumed, 4 of them answered: taken = 6, and req_prod may be 10..=36 past start.
        page.store_u32(REQ_PROD_OFFSET, start.wrapping_add(10));
        for _ in 0..10 {
            back.next_request().unwrap().unwrap();
        }
        for _ in 0..4 {
            back.produce_response(&Message::new(0, b"").unwrap())
                .unwrap();
        }
        let legal = 10..=36u32;
        let probes =
            (0..=100u32).chain([u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) + 1, 0x8000_0024]);
        for ahead in probes {
            page.store_u32(REQ_PROD_OFFSET, start.wrapping_add(ahead));
            let result = back.unconsumed_requests();
            if legal.contains(&ahead) {
                assert_eq!(result, Ok(ahead - 10), "ahead {ahead}");
            } else {
                assert_eq!(
                    result,
                    Err(RingError::RequestProducerOutOfRange {
                        req_prod: start.wrapping_add(ahead),
                        req_cons: start.wrapping_add(10),
                        rsp_prod_pvt: start.wrapping_add(4),
                    }),
                    "ahead {ahead}"
                );
                assert!(back.next_request().is_err());
                assert!(back.final_check_for_requests().is_err());
            }
            assert_eq!(back.req_cons(), start.wrapping_add(10));
        }
    }
}

#[test]
fn a_full_sweep_of_req_prod_never_panics() {
    let page = LocalPage::new();
    Sring::init(&page);
    let mut back = Back::new(&page).unwrap();
    let mut accepted = 0u64;
    for step in 0..=u16::MAX as u32 {
        let req_prod = step.wrapping_mul(0x0001_0001).rotate_left(step % 32);
        page.store_u32(REQ_PROD_OFFSET, req_prod);
        if let Ok(count) = back.unconsumed_requests() {
            assert!(count <= back.slots());
            accepted += 1;
        }
        // Drain whatever is accepted, answering so the window keeps moving.
        while let Ok(Some(_)) = back.next_request() {
            back.produce_response(&Message::new(0, b"").unwrap())
                .unwrap();
        }
        let _ = back.push_responses();
        assert!(back.unanswered_requests() == 0);
    }
    assert!(accepted > 0);
}

#[test]
fn garbage_entries_are_copied_out_not_trusted() {
    let page = LocalPage::new();
    Sring::init(&page);
    let mut back = Back::new(&page).unwrap();
    page.write_bytes(64, &[0xff; 64 * 32]);
    page.store_u32(REQ_PROD_OFFSET, 32);
    let mut count = 0;
    while let Some(request) = back.next_request().unwrap() {
        // Decoding is total; judging the copy is the caller's job.
        assert!(!request.is_intact());
        assert_eq!(request.id, u64::MAX);
        count += 1;
    }
    assert_eq!(count, 32);
}

#[test]
fn a_hostile_back_end_cannot_push_responses_that_were_never_requested() {
    let page = LocalPage::new();
    Sring::init_at(&page, u32::MAX - 2);
    let mut front = FrontRing::<TxRequest, TxResponse, _>::attach(&page, u32::MAX - 2).unwrap();
    for sequence in 0..5 {
        front
            .produce_request(&TxRequest::numbered(sequence))
            .unwrap();
    }
    let _ = front.push_requests();
    for rsp_prod in [
        u32::MAX - 3,
        3,
        4,
        1 << 31,
        (u32::MAX - 2).wrapping_add(200),
    ] {
        page.store_u32(RSP_PROD_OFFSET, rsp_prod);
        assert!(
            front.unconsumed_responses().is_err(),
            "rsp_prod {rsp_prod:#x}"
        );
        assert!(front.next_response().is_err());
        assert!(front.final_check_for_responses().is_err());
        assert_eq!(front.rsp_cons(), u32::MAX - 2);
    }
    page.store_u32(RSP_PROD_OFFSET, 2);
    assert_eq!(front.unconsumed_responses(), Ok(5));
}

#[test]
fn garbage_event_indices_only_change_a_bool() {
    let page = LocalPage::new();
    Sring::init(&page);
    let mut front = FrontRing::<Message, Message, _>::new(&page).unwrap();
    let mut back = BackRing::<Message, Message, _>::new(&page).unwrap();
    for event in [0, 1, 2, u32::MAX, 1 << 31] {
        page.store_u32(REQ_EVENT_OFFSET, event);
        page.store_u32(RSP_EVENT_OFFSET, event);
        front
            .produce_request(&Message::new(1, b"").unwrap())
            .unwrap();
        let _ = front.push_requests();
        back.next_request().unwrap().unwrap();
        back.produce_response(&Message::new(1, b"").unwrap())
            .unwrap();
        let _ = back.push_responses();
        front.next_response().unwrap().unwrap();
    }
}

/// One move of a hostile front-end or of the back-end under test.
#[derive(Debug, Clone)]
enum Move {
    WriteIndex { offset_word: u8, value: u32 },
    WriteBytes { offset: u16, bytes: Vec<u8> },
    Consume,
    Respond,
    Push,
    FinalCheck,
}

fn moves() -> impl Strategy<Value = Move> {
    prop_oneof![
        (0u8..4, any::<u32>())
            .prop_map(|(offset_word, value)| Move::WriteIndex { offset_word, value }),
        (0u16..128, proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(offset, bytes)| Move::WriteBytes { offset, bytes }),
        Just(Move::Consume),
        Just(Move::Respond),
        Just(Move::Push),
        Just(Move::FinalCheck),
    ]
}

proptest! {
    /// A small (4-slot, odd-sized entry) ring, arbitrary writes from the front-end side.
    #[test]
    fn a_back_end_survives_any_front_end(
        start in any::<u32>(),
        script in proptest::collection::vec(moves(), 0..200),
    ) {
        let page = LocalRegion::<32>::new();
        Sring::init_at(&page, start);
        let mut back = BackRing::<TxRequest, TxResponse, _>::attach(&page, start).unwrap();
        prop_assert_eq!(back.slots(), 4);
        for step in script {
            match step {
                Move::WriteIndex { offset_word, value } => {
                    page.store_u32(usize::from(offset_word) * 4, value)
                }
                Move::WriteBytes { offset, bytes } => {
                    let offset = usize::from(offset).min(128 - bytes.len());
                    page.write_bytes(offset, &bytes)
                }
                Move::Consume => {
                    if let Ok(Some(_)) = back.next_request() {}
                }
                Move::Respond => {
                    let _ = back.produce_response(&TxResponse { id: 1, status: 0 });
                }
                Move::Push => {
                    let _ = back.push_responses();
                }
                Move::FinalCheck => {
                    let _ = back.final_check_for_requests();
                }
            }
            // Whatever the front-end did, the back-end's own accounting stays sane.
            prop_assert!(back.unanswered_requests() <= back.slots());
            if let Ok(count) = back.unconsumed_requests() {
                prop_assert!(count + back.unanswered_requests() <= back.slots());
            }
        }
    }
}
