//! A front-end and a back-end over one page: every request arrives once and in order, every
//! response comes back, across the `u32` wrap, with notifications exactly when asked for.
#![cfg(not(loom))]

mod common;

use common::{TxRequest, TxResponse};
use xen_ring::test_entries::Message;
use xen_ring::{BackRing, FrontRing, LocalPage, RingEntry, SharedPage, Sring};

type Front<'a, Req, Rsp> = FrontRing<Req, Rsp, &'a LocalPage>;
type Back<'a, Req, Rsp> = BackRing<Req, Rsp, &'a LocalPage>;

/// Sends `total` requests in batches of `batch`, answering each batch before the next.
fn pump<Req, Rsp>(
    start: u32,
    total: u64,
    batch: u64,
    request: impl Fn(u64) -> Req,
    respond: impl Fn(&Req) -> Rsp,
    check: impl Fn(u64, &Rsp),
) where
    Req: RingEntry + PartialEq + core::fmt::Debug,
    Rsp: RingEntry,
{
    let page = LocalPage::new();
    Sring::init_at(&page, start);
    let mut front = Front::<Req, Rsp>::attach(&page, start).unwrap();
    let mut back = Back::<Req, Rsp>::attach(&page, start).unwrap();
    let (mut sent, mut received, mut answered) = (0u64, 0u64, 0u64);
    while received < total {
        while sent < total && sent - received < batch {
            if front.produce_request(&request(sent)).is_err() {
                break;
            }
            sent += 1;
        }
        let _ = front.push_requests();
        while let Some(req) = back.next_request().unwrap() {
            assert_eq!(req, request(answered));
            back.produce_response(&respond(&req)).unwrap();
            answered += 1;
        }
        let _ = back.push_responses();
        while let Some(rsp) = front.next_response().unwrap() {
            check(received, &rsp);
            received += 1;
        }
    }
    assert_eq!((sent, answered, received), (total, total, total));
    assert_eq!(front.req_prod_pvt(), start.wrapping_add(total as u32));
    assert_eq!(back.req_cons(), front.req_prod_pvt());
    assert_eq!(front.rsp_cons(), back.rsp_prod_pvt());
}

#[test]
fn messages_round_trip_across_the_index_wrap() {
    for start in [0, 1000, u32::MAX - 100, u32::MAX - 31, u32::MAX] {
        for batch in [1, 5, 32, 40] {
            pump(
                start,
                300,
                batch,
                |id| Message::new(id, &id.to_be_bytes()).unwrap(),
                |req| Message::new(req.id, b"pong").unwrap(),
                |id, rsp| {
                    assert!(rsp.is_intact());
                    assert_eq!(rsp.id, id);
                },
            );
        }
    }
}

#[test]
fn odd_sized_entries_round_trip_across_the_index_wrap() {
    for start in [0, u32::MAX - 300, u32::MAX] {
        pump(
            start,
            2000,
            256,
            TxRequest::numbered,
            |req| TxResponse {
                id: req.id,
                status: -(req.flags as i16),
            },
            |sequence, rsp| {
                let req = TxRequest::numbered(sequence);
                assert_eq!(rsp.id, req.id);
                assert_eq!(rsp.status, -(req.flags as i16));
            },
        );
    }
}

#[test]
fn the_front_end_can_never_overrun_unread_responses() {
    let page = LocalPage::new();
    Sring::init_at(&page, u32::MAX - 3);
    let mut front = Front::<Message, Message>::attach(&page, u32::MAX - 3).unwrap();
    let mut back = Back::<Message, Message>::attach(&page, u32::MAX - 3).unwrap();
    let reply = Message::new(0, b"").unwrap();
    for id in 0..32 {
        front
            .produce_request(&Message::new(id, b"").unwrap())
            .unwrap();
    }
    let _ = front.push_requests();
    for _ in 0..32 {
        back.next_request().unwrap().unwrap();
        back.produce_response(&reply).unwrap();
    }
    let _ = back.push_responses();
    // All answered, but the front-end has not read the responses: its slots are not free.
    assert!(front.is_full());
    assert_eq!(back.unconsumed_requests(), Ok(0));
    front.next_response().unwrap().unwrap();
    assert_eq!(front.free_requests(), 1);
}

#[test]
fn a_sleeping_back_end_is_woken_exactly_once_per_arming() {
    let page = LocalPage::new();
    Sring::init_at(&page, u32::MAX - 1);
    let mut front = Front::<Message, Message>::attach(&page, u32::MAX - 1).unwrap();
    let mut back = Back::<Message, Message>::attach(&page, u32::MAX - 1).unwrap();
    let message = Message::new(1, b"x").unwrap();

    // The back-end goes to sleep on an empty ring.
    assert_eq!(back.final_check_for_requests(), Ok(false));
    front.produce_request(&message).unwrap();
    assert!(front.push_requests(), "the sleeping back-end must be woken");
    front.produce_request(&message).unwrap();
    assert!(!front.push_requests(), "the back-end has not slept again");

    // Woken, the back-end drains without sleeping in between; no further events.
    assert_eq!(back.final_check_for_requests(), Ok(true));
    back.next_request().unwrap().unwrap();
    back.next_request().unwrap().unwrap();
    front.produce_request(&message).unwrap();
    assert!(!front.push_requests());
    // The final check sees the request that raced in, so the back-end does not sleep.
    assert_eq!(back.final_check_for_requests(), Ok(true));
    back.next_request().unwrap().unwrap();
    assert_eq!(back.final_check_for_requests(), Ok(false));
    front.produce_request(&message).unwrap();
    front.produce_request(&message).unwrap();
    assert!(front.push_requests());
}

#[test]
fn a_sleeping_front_end_is_woken_when_its_responses_arrive() {
    let page = LocalPage::new();
    Sring::init(&page);
    let mut front = Front::<TxRequest, TxResponse>::new(&page).unwrap();
    let mut back = Back::<TxRequest, TxResponse>::new(&page).unwrap();
    for sequence in 0..3 {
        front
            .produce_request(&TxRequest::numbered(sequence))
            .unwrap();
    }
    assert!(front.push_requests());
    assert_eq!(front.final_check_for_responses(), Ok(false));
    let reply = TxResponse { id: 0, status: 0 };
    for _ in 0..3 {
        back.next_request().unwrap().unwrap();
    }
    back.produce_response(&reply).unwrap();
    assert!(
        back.push_responses(),
        "the first response wakes the front-end"
    );
    back.produce_response(&reply).unwrap();
    back.produce_response(&reply).unwrap();
    assert!(!back.push_responses());
    assert_eq!(front.final_check_for_responses(), Ok(true));
    assert_eq!(front.unconsumed_responses(), Ok(3));
}

#[test]
fn padding_is_zero_on_the_wire() {
    // Encoders get a zeroed buffer: bytes they skip reach the peer as zero.
    struct Sparse(u8);
    impl RingEntry for Sparse {
        const SIZE: usize = 8;
        fn encode(&self, out: &mut [u8]) {
            out[0] = self.0;
        }
        fn decode(bytes: &[u8]) -> Self {
            Sparse(bytes[0])
        }
    }
    let page = LocalPage::new();
    page.write_bytes(0, &[0xee; 4096]);
    Sring::init(&page);
    page.write_bytes(64, &[0xee; 64]);
    let mut front = FrontRing::<Sparse, Sparse, _>::new(&page).unwrap();
    front.produce_request(&Sparse(9)).unwrap();
    let mut slot = [0u8; 8];
    page.read_bytes(64, &mut slot);
    assert_eq!(slot, [9, 0, 0, 0, 0, 0, 0, 0]);
}
