//! The engine against the simulated machine: a front-end ring, granted pages, a disk.

use alloc::string::ToString;
use alloc::vec::Vec;

use xen_ring::{FrontRing, LocalPage};

use crate::engine::{Cutoff, Direction, Io, Queue, STORM_EMPTY_ROUNDS};
use crate::request::Limits;
use crate::sim::{drive, front_ring, serve, DeviceEvent, Order, SimPlatform};
use crate::vbd::Vbd;
use crate::wire::{
    BlkBackRing, DiscardRequest, IndirectRequest, RawRequest, Response, RwRequest, Segment,
    MAX_DIRECT_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ, OP_WRITE, OP_WRITE_BARRIER,
    SECTOR_BYTES, STATUS_ERROR, STATUS_OKAY,
};

type Front<'a> = FrontRing<RawRequest, Response, &'a LocalPage>;

const DISK_SECTORS: u64 = 4096;

fn queue(page: &LocalPage, vbd: Vbd) -> Queue<&LocalPage> {
    Queue::new(
        BlkBackRing::new(page).unwrap(),
        vbd,
        Limits::new(Limits::DEFAULT_MAX_INDIRECT_SEGMENTS).unwrap(),
    )
}

fn machine() -> SimPlatform {
    SimPlatform::new(DISK_SECTORS, &Limits::new(256).unwrap())
}

fn rw(operation: u8, id: u64, sector: u64, grefs: &[u32]) -> RawRequest {
    let mut segments = [Segment::default(); MAX_DIRECT_SEGMENTS];
    for (slot, &gref) in segments.iter_mut().zip(grefs) {
        *slot = Segment {
            gref,
            first_sect: 0,
            last_sect: 7,
        };
    }
    RawRequest::Rw(RwRequest {
        operation,
        nr_segments: grefs.len() as u8,
        handle: 0,
        id,
        sector_number: sector,
        segments,
    })
}

fn submit(front: &mut Front<'_>, requests: &[RawRequest]) {
    for request in requests {
        front.produce_request(request).unwrap();
    }
    let _ = front.push_requests();
}

fn responses(front: &mut Front<'_>) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(response) = front.next_response().unwrap() {
        out.push(response);
    }
    out
}

#[test]
fn writes_then_reads_move_the_data_through_the_slice() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let vbd = Vbd::slice(DISK_SECTORS, 1000, 100, false).unwrap();
    let mut queue = queue(&page, vbd);
    let mut sim = machine();
    sim.grant(1, 0xa1);
    sim.grant(2, 0xb2);
    submit(&mut front, &[rw(OP_WRITE, 7, 8, &[1, 2])]);
    let round = serve(&mut queue, &mut sim).unwrap();
    assert_eq!(round.answered, 1);
    assert_eq!(
        responses(&mut front),
        [Response {
            id: 7,
            operation: OP_WRITE,
            status: STATUS_OKAY
        }]
    );
    // Vbd sector 8 is disk sector 1008.
    let at = 1008 * SECTOR_BYTES;
    assert!(sim.disk[at..at + 4096].iter().all(|&b| b == 0xa1));
    assert!(sim.disk[at + 4096..at + 8192].iter().all(|&b| b == 0xb2));
    assert!(sim.disk[..at].iter().all(|&b| b == 0));

    sim.grant(3, 0);
    submit(&mut front, &[rw(OP_READ, 8, 16, &[3])]);
    serve(&mut queue, &mut sim).unwrap();
    assert_eq!(responses(&mut front)[0].status, STATUS_OKAY);
    assert!(sim.grants[&3].iter().all(|&b| b == 0xb2));
    let counters = queue.counters();
    assert_eq!(
        (counters.reads, counters.writes, counters.grant_copies),
        (1, 1, 3)
    );
    assert_eq!(counters.bytes_in, 8192);
}

#[test]
fn a_read_only_vbd_refuses_writes_and_keeps_serving() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, true));
    let mut sim = machine();
    sim.grant(1, 0xff);
    submit(
        &mut front,
        &[rw(OP_WRITE, 1, 0, &[1]), rw(OP_READ, 2, 0, &[1])],
    );
    serve(&mut queue, &mut sim).unwrap();
    let got = responses(&mut front);
    assert_eq!(got[0].status, STATUS_ERROR);
    assert_eq!(got[1].status, STATUS_OKAY);
    assert!(sim.disk.iter().all(|&b| b == 0));
    assert!(
        sim.grants[&1].iter().all(|&b| b == 0),
        "the read brought zeroes"
    );
}

#[test]
fn flush_writes_its_data_then_flushes() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.grant(4, 0x44);
    submit(
        &mut front,
        &[
            rw(OP_FLUSH_DISKCACHE, 1, 0, &[]),
            rw(OP_FLUSH_DISKCACHE, 2, 64, &[4]),
        ],
    );
    serve(&mut queue, &mut sim).unwrap();
    assert!(responses(&mut front)
        .iter()
        .all(|r| r.status == STATUS_OKAY));
    assert_eq!(sim.flushes, 2);
    assert!(sim.disk[64 * 512..64 * 512 + 4096]
        .iter()
        .all(|&b| b == 0x44));
}

#[test]
fn discard_drops_the_range_and_device_errors_are_answered() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.disk.fill(0x5a);
    let discard = RawRequest::Discard(DiscardRequest {
        flag: 0,
        handle: 0,
        id: 3,
        sector_number: 10,
        nr_sectors: 6,
    });
    submit(&mut front, &[discard]);
    serve(&mut queue, &mut sim).unwrap();
    assert_eq!(responses(&mut front)[0].status, STATUS_OKAY);
    assert!(sim.disk[10 * 512..16 * 512].iter().all(|&b| b == 0));
    assert_eq!(sim.disk[16 * 512], 0x5a);
    sim.grant(1, 0);
    sim.fail_next = true;
    submit(&mut front, &[rw(OP_READ, 4, 0, &[1])]);
    serve(&mut queue, &mut sim).unwrap();
    assert_eq!(responses(&mut front)[0].status, STATUS_ERROR);
    assert_eq!(queue.counters().errors, 1);
}

#[test]
fn indirect_requests_fetch_their_segment_pages() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    // 20 data pages (grants 100..120), described in indirect page 50.
    let mut table = alloc::vec![0u8; 4096];
    for i in 0..20u32 {
        sim.grant(100 + i, i as u8 + 1);
        let segment = Segment {
            gref: 100 + i,
            first_sect: 0,
            last_sect: 7,
        };
        table[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&segment.encode());
    }
    sim.grants.insert(50, table);
    let mut grefs = [0u32; 8];
    grefs[0] = 50;
    let request = RawRequest::Indirect(IndirectRequest {
        indirect_op: OP_WRITE,
        nr_segments: 20,
        id: 9,
        sector_number: 800,
        handle: 0,
        indirect_grefs: grefs,
    });
    submit(&mut front, &[request]);
    serve(&mut queue, &mut sim).unwrap();
    let got = responses(&mut front);
    assert_eq!(got[0].status, STATUS_OKAY);
    assert_eq!(
        got[0].operation, OP_WRITE,
        "an indirect response carries indirect_op"
    );
    assert_ne!(got[0].operation, OP_INDIRECT);
    for i in 0..20usize {
        let at = (800 + 8 * i) * 512;
        assert!(
            sim.disk[at..at + 4096].iter().all(|&b| b == i as u8 + 1),
            "page {i}"
        );
    }
    assert_eq!(queue.counters().indirect, 1);
}

fn cut_off_by(requests: &[RawRequest], grant: &[u32]) -> (Cutoff, SimPlatform) {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::slice(DISK_SECTORS, 0, 1024, false).unwrap());
    let mut sim = machine();
    for &gref in grant {
        sim.grant(gref, 0xee);
    }
    submit(&mut front, requests);
    let cutoff = serve(&mut queue, &mut sim).unwrap_err();
    (cutoff, sim)
}

#[test]
fn hostile_requests_cut_the_queue_off() {
    // Out of the slice (1024 sectors).
    let (cutoff, sim) = cut_off_by(&[rw(OP_WRITE, 1, 1020, &[1])], &[1]);
    assert!(matches!(cutoff, Cutoff::Malformed(_)), "{cutoff}");
    assert!(cutoff.to_string().contains("1020"), "{cutoff}");
    assert!(sim.disk.iter().all(|&b| b == 0), "nothing was written");
    // A grant nobody gave.
    let (cutoff, _) = cut_off_by(&[rw(OP_WRITE, 1, 0, &[77])], &[]);
    assert!(matches!(cutoff, Cutoff::BadGrant { .. }), "{cutoff}");
    // An unknown operation.
    let (cutoff, _) = cut_off_by(
        &[RawRequest::Other {
            operation: 99,
            id: 1,
        }],
        &[],
    );
    assert!(cutoff.to_string().contains("99"), "{cutoff}");
    // Too many segments.
    let mut many = rw(OP_READ, 1, 0, &[1]);
    if let RawRequest::Rw(ref mut r) = many {
        r.nr_segments = 12;
    }
    let (cutoff, _) = cut_off_by(&[many], &[1]);
    assert!(cutoff.to_string().contains("12 segments"), "{cutoff}");
    // An id used twice in one batch.
    let (cutoff, _) = cut_off_by(&[rw(OP_READ, 5, 0, &[1]), rw(OP_READ, 5, 8, &[1])], &[1]);
    assert_eq!(cutoff, Cutoff::DuplicateId(5));
}

#[test]
fn a_scribbled_ring_index_cuts_off() {
    let page = LocalPage::new();
    let _front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    // req_prod far ahead of anything the back-end answered.
    xen_ring::SharedPage::store_u32(&page, 0, 1000);
    assert!(matches!(queue.service(&mut sim), Err(Cutoff::Ring(_))));
}

#[test]
fn endless_empty_notifications_are_a_storm() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    for _ in 0..STORM_EMPTY_ROUNDS - 1 {
        queue.service(&mut sim).unwrap();
    }
    // Real work resets the count.
    sim.grant(1, 1);
    submit(&mut front, &[rw(OP_READ, 1, 0, &[1])]);
    queue.service(&mut sim).unwrap();
    for _ in 0..STORM_EMPTY_ROUNDS - 1 {
        queue.service(&mut sim).unwrap();
    }
    assert!(matches!(
        queue.service(&mut sim),
        Err(Cutoff::EventStorm(_))
    ));
}

#[test]
fn ids_may_be_reused_once_answered() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.grant(1, 1);
    for _ in 0..100 {
        submit(&mut front, &[rw(OP_READ, 3, 0, &[1])]);
        serve(&mut queue, &mut sim).unwrap();
        assert_eq!(responses(&mut front).len(), 1);
    }
}

proptest::proptest! {
    /// Any bytes in the ring's slots: the engine answers or cuts off, never panics, and
    /// never writes outside the vbd.
    #[test]
    fn arbitrary_entries_never_escape_the_slice(
        entries in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 112), 1..20)
    ) {
        use xen_ring::RingEntry;
        let page = LocalPage::new();
        let mut front = front_ring(&page);
        let mut queue = queue(&page, Vbd::slice(DISK_SECTORS, 512, 512, false).unwrap());
        let mut sim = machine();
        sim.disk.fill(0x77);
        for gref in 0..64 {
            sim.grant(gref, 0x11);
        }
        let requests: Vec<RawRequest> = entries.iter().map(|e| RawRequest::decode(e)).collect();
        let take = requests.len().min(front.free_requests() as usize);
        submit(&mut front, &requests[..take]);
        let _ = serve(&mut queue, &mut sim);
        proptest::prop_assert!(sim.disk[..512 * 512].iter().all(|&b| b == 0x77));
        proptest::prop_assert!(sim.disk[1024 * 512..].iter().all(|&b| b == 0x77));
    }
}

/// Fills disk sectors `sector..sector + 8` with `fill`.
fn fill_page(sim: &mut SimPlatform, sector: u64, fill: u8) {
    let at = sector as usize * SECTOR_BYTES;
    sim.disk[at..at + 4096].fill(fill);
}

#[test]
fn reads_finish_in_any_order_and_are_answered_in_request_order_each_with_its_own_id() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    let requests: Vec<RawRequest> = (0..4u32)
        .map(|i| {
            fill_page(&mut sim, u64::from(i) * 8, 0x10 + i as u8);
            sim.grant(100 + i, 0);
            rw(OP_READ, 40 + u64::from(i), u64::from(i) * 8, &[100 + i])
        })
        .collect();
    submit(&mut front, &requests);
    let round = queue.service(&mut sim).unwrap();
    assert_eq!(
        round.answered, 0,
        "nothing is answered before the device is done"
    );
    assert_eq!(queue.in_flight(), 4, "all four are on the device at once");
    assert_eq!(sim.device.len(), 4);
    assert!(responses(&mut front).is_empty());

    // The device finishes the third one first: answered, but not yet published while
    // three are still on the device.
    let third = sim.on_device()[2];
    let done = sim.finish(third);
    queue.complete(&[done], &mut sim).unwrap();
    let round = queue.progress(&mut sim).unwrap();
    assert_eq!(round.answered, 0);
    assert!(responses(&mut front).is_empty());
    assert!(
        sim.grants[&102].iter().all(|&b| b == 0x12),
        "its data is there"
    );
    assert!(
        sim.grants[&100].iter().all(|&b| b == 0),
        "a read still on the device has not touched its page"
    );
    // Then the first: its response is produced (the third's waits behind the second's
    // place), not yet published while two are still on the device.
    let first = sim.on_device()[0];
    let done = sim.finish(first);
    queue.complete(&[done], &mut sim).unwrap();
    let round = queue.progress(&mut sim).unwrap();
    assert_eq!(round.answered, 0);
    assert!(responses(&mut front).is_empty());

    // The rest, last started first, both finished before the queue hears of either: their
    // data goes to the front-end in one copy, and all four are answered in request order,
    // in one push.
    sim.copy_calls.clear();
    drive(&mut queue, &mut sim, Order::Reversed).unwrap();
    assert_eq!(sim.copy_calls, [(Direction::ToGuest, 2)]);
    let got = responses(&mut front);
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        [40, 41, 42, 43]
    );
    assert!(got
        .iter()
        .all(|r| r.operation == OP_READ && r.status == STATUS_OKAY));
    for i in 0..4u32 {
        assert!(sim.grants[&(100 + i)].iter().all(|&b| b == 0x10 + i as u8));
    }
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(sim.pool.busy(), 0, "every slot is free again");
    assert_eq!(queue.counters().completions, 4);
    assert_eq!(queue.counters().most_in_flight, 4);
}

#[test]
fn writes_finishing_out_of_order_each_land_in_their_own_sectors() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    let requests: Vec<RawRequest> = (0..4u32)
        .map(|i| {
            sim.grant(200 + i, 0xa0 + i as u8);
            rw(OP_WRITE, u64::from(i), 64 + u64::from(i) * 8, &[200 + i])
        })
        .collect();
    submit(&mut front, &requests);
    queue.service(&mut sim).unwrap();
    // The guest's pages change after the request was started: the slot holds the data.
    for i in 0..4u32 {
        sim.grant(200 + i, 0xee);
    }
    drive(&mut queue, &mut sim, Order::Reversed).unwrap();
    let ids: Vec<u64> = responses(&mut front).iter().map(|r| r.id).collect();
    assert_eq!(ids, [0, 1, 2, 3], "answered in request order");
    for i in 0..4u64 {
        let at = (64 + i as usize * 8) * SECTOR_BYTES;
        assert!(sim.disk[at..at + 4096].iter().all(|&b| b == 0xa0 + i as u8));
    }
}

#[test]
fn a_flush_waits_for_earlier_writes_and_holds_back_later_ones() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    for gref in 1..=3 {
        sim.grant(gref, gref as u8);
    }
    submit(
        &mut front,
        &[
            rw(OP_WRITE, 1, 0, &[1]),
            rw(OP_WRITE, 2, 8, &[2]),
            rw(OP_FLUSH_DISKCACHE, 3, 0, &[]),
            rw(OP_WRITE, 4, 16, &[3]),
        ],
    );
    queue.service(&mut sim).unwrap();
    assert_eq!(
        sim.device.len(),
        2,
        "the writes before the flush are started"
    );
    assert_eq!(sim.flushes, 0, "the flush waits for them");
    assert_eq!(
        queue.counters().requests,
        3,
        "nothing is taken past a waiting flush"
    );

    // One earlier write done: still waiting.
    let second = sim.on_device()[1];
    let done = sim.finish(second);
    queue.complete(&[done], &mut sim).unwrap();
    queue.progress(&mut sim).unwrap();
    assert_eq!(sim.flushes, 0);
    assert_eq!(sim.device.len(), 1);

    // Both done: the flush happens with no write on the device, then the later write starts.
    drive(&mut queue, &mut sim, Order::Started).unwrap();
    assert_eq!(sim.flushes, 1);
    let flush_at = sim
        .log
        .iter()
        .position(|e| matches!(e, DeviceEvent::Flush { .. }))
        .unwrap();
    assert_eq!(
        sim.log[flush_at],
        DeviceEvent::Flush {
            writes_on_device: 0
        }
    );
    let started: Vec<usize> = sim
        .log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, DeviceEvent::Started(Io::Write { .. })))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(started.len(), 3);
    assert!(started[..2].iter().all(|&at| at < flush_at));
    assert!(
        started[2] > flush_at,
        "the write after the flush started after it"
    );
    let ids: Vec<u64> = responses(&mut front).iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [1, 2, 3, 4],
        "answered in request order: the flush before the write after it"
    );
}

#[test]
fn a_flush_with_data_is_a_barrier_until_its_device_flush() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    for gref in 1..=3 {
        sim.grant(gref, 0x30 + gref as u8);
    }
    submit(
        &mut front,
        &[
            rw(OP_WRITE, 1, 0, &[1]),
            rw(OP_WRITE_BARRIER, 2, 8, &[2]),
            rw(OP_READ, 3, 8, &[3]),
        ],
    );
    queue.service(&mut sim).unwrap();
    assert_eq!(sim.device.len(), 1);
    drive(&mut queue, &mut sim, Order::Started).unwrap();
    // The barrier's data was written, then flushed, before the read of the same sectors.
    let kinds: Vec<&DeviceEvent> = sim.log.iter().collect();
    let flush_at = kinds
        .iter()
        .position(|e| matches!(e, DeviceEvent::Flush { .. }))
        .unwrap();
    let read_at = kinds
        .iter()
        .position(|e| matches!(e, DeviceEvent::Started(Io::Read { .. })))
        .unwrap();
    let barrier_write_done = kinds
        .iter()
        .position(|e| matches!(e, DeviceEvent::Finished(Io::Write { sector: 8, .. }, true)))
        .unwrap();
    assert!(barrier_write_done < flush_at && flush_at < read_at);
    assert_eq!(
        sim.log[flush_at],
        DeviceEvent::Flush {
            writes_on_device: 0
        }
    );
    assert!(
        sim.grants[&3].iter().all(|&b| b == 0x32),
        "the read saw the barrier's data"
    );
    let got = responses(&mut front);
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(got[1].operation, OP_WRITE_BARRIER);
    assert!(got.iter().all(|r| r.status == STATUS_OKAY));
}

#[test]
fn without_a_free_slot_requests_stay_in_the_ring() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    // Two slots.
    let mut sim = SimPlatform::with_slots(DISK_SECTORS, &[4096, 1 << 20]);
    sim.grant(1, 0);
    let requests: Vec<RawRequest> = (0..10).map(|i| rw(OP_READ, i, i * 8, &[1])).collect();
    submit(&mut front, &requests);
    queue.service(&mut sim).unwrap();
    assert_eq!(sim.device.len(), 2);
    assert_eq!(
        queue.counters().requests,
        3,
        "two started, one waiting, the rest left in the ring"
    );
    drive(&mut queue, &mut sim, Order::Reversed).unwrap();
    let mut ids: Vec<u64> = responses(&mut front).iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert_eq!(queue.counters().most_in_flight, 2);
}

#[test]
fn a_device_failure_is_answered_and_a_cut_off_leaves_slots_with_the_device() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.grant(1, 0);
    sim.fail_next = true;
    submit(
        &mut front,
        &[rw(OP_READ, 1, 0, &[1]), rw(OP_READ, 2, 8, &[1])],
    );
    queue.service(&mut sim).unwrap();
    drive(&mut queue, &mut sim, Order::Reversed).unwrap();
    let got = responses(&mut front);
    assert_eq!((got[0].id, got[0].status), (1, STATUS_ERROR));
    assert_eq!((got[1].id, got[1].status), (2, STATUS_OKAY));

    // A read into a grant that vanished while the device worked: cut off when it is done.
    submit(
        &mut front,
        &[rw(OP_READ, 3, 0, &[1]), rw(OP_READ, 4, 0, &[9])],
    );
    sim.grant(9, 0);
    queue.service(&mut sim).unwrap();
    sim.grants.remove(&9);
    let done = sim.finish_all(Order::Started);
    let cutoff = queue.complete(&done, &mut sim).unwrap_err();
    assert_eq!(
        cutoff,
        Cutoff::BadGrant {
            id: 4,
            error: crate::engine::CopyError {
                gref: 9,
                status: crate::sim::GNTST_BAD_GNTREF
            }
        }
    );
}

#[test]
fn an_id_reused_while_its_request_is_on_the_device_cuts_off() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.grant(1, 0);
    submit(&mut front, &[rw(OP_READ, 5, 0, &[1])]);
    queue.service(&mut sim).unwrap();
    assert_eq!(queue.in_flight(), 1);
    // Published in a later push, while 5 is still on the device.
    submit(&mut front, &[rw(OP_READ, 5, 8, &[1])]);
    assert_eq!(queue.service(&mut sim), Err(Cutoff::DuplicateId(5)));
}

proptest::proptest! {
    /// Reads, writes, flushes (with and without data), barriers, discards and refusals,
    /// finished by the device in any order and at any pace: every request taken gets
    /// exactly one response with its own id, a flush never comes while a write is on the
    /// device, and every slot is free at the end.
    #[test]
    fn every_taken_request_gets_exactly_one_response(
        kinds in proptest::collection::vec(0u8..7, 1..30),
        sectors in proptest::collection::vec(0u64..16, 30),
        picks in proptest::collection::vec(proptest::prelude::any::<u16>(), 200),
    ) {
        let page = LocalPage::new();
        let mut front = front_ring(&page);
        let mut queue = queue(&page, Vbd::slice(DISK_SECTORS, 0, 128, false).unwrap());
        let mut sim = SimPlatform::with_slots(DISK_SECTORS, &[4096, 4096, 8192, 1 << 20]);
        let mut requests = Vec::new();
        for (index, &kind) in kinds.iter().enumerate() {
            let id = 1000 + index as u64;
            let gref = 1 + index as u32;
            sim.grant(gref, index as u8);
            let sector = sectors[index] * 8;
            requests.push(match kind {
                0 | 1 => rw(OP_READ, id, sector, &[gref]),
                2 | 3 => rw(OP_WRITE, id, sector, &[gref]),
                4 => rw(OP_FLUSH_DISKCACHE, id, 0, &[]),
                5 => rw(OP_WRITE_BARRIER, id, sector, &[gref]),
                _ => RawRequest::Discard(DiscardRequest {
                    flag: 0,
                    handle: 0,
                    id,
                    sector_number: sector,
                    nr_sectors: 8,
                }),
            });
        }
        submit(&mut front, &requests);
        queue.service(&mut sim).unwrap();
        let mut picks = picks.into_iter();
        while !sim.device.is_empty() {
            // Finish one or more requests, picked at random.
            let count = 1 + usize::from(picks.next().unwrap_or(0)) % sim.device.len();
            let mut done = Vec::new();
            for _ in 0..count {
                let on = sim.on_device();
                let slot = on[usize::from(picks.next().unwrap_or(0)) % on.len()];
                done.push(sim.finish(slot));
            }
            queue.complete(&done, &mut sim).unwrap();
            queue.progress(&mut sim).unwrap();
        }
        let got = responses(&mut front);
        let mut ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let sent: Vec<u64> = (0..kinds.len() as u64).map(|i| 1000 + i).collect();
        proptest::prop_assert_eq!(ids, sent);
        proptest::prop_assert!(got.iter().all(|r| r.status == STATUS_OKAY));
        let flush_beside_a_write = sim.log.iter().any(|e| {
            matches!(e, DeviceEvent::Flush { writes_on_device } if *writes_on_device > 0)
        });
        proptest::prop_assert!(!flush_beside_a_write, "a flush came while a write was on the device");
        proptest::prop_assert_eq!(queue.in_flight(), 0);
        proptest::prop_assert_eq!(sim.pool.busy(), 0);
    }
}

#[test]
fn a_request_published_while_others_are_on_the_device_starts_at_once() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = machine();
    sim.grant(1, 0);
    submit(&mut front, &[rw(OP_READ, 1, 0, &[1])]);
    queue.service(&mut sim).unwrap();
    assert_eq!(queue.in_flight(), 1);
    // The next piece of the same I/O, published while the first is on the device: the
    // front-end is asked to notify, and the round for it starts the request without
    // waiting for the first to finish.
    front.produce_request(&rw(OP_READ, 2, 8, &[1])).unwrap();
    assert!(front.push_requests(), "the front-end notifies");
    queue.service(&mut sim).unwrap();
    assert_eq!(queue.in_flight(), 2);
    assert_eq!(sim.device.len(), 2);
    drive(&mut queue, &mut sim, Order::Started).unwrap();
    assert_eq!(responses(&mut front).len(), 2);
}

#[test]
fn responses_of_requests_finishing_one_by_one_are_published_together() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    let mut sim = SimPlatform::with_slots(DISK_SECTORS, &[131_072; 8]);
    sim.grant(1, 0);
    let requests: Vec<RawRequest> = (0..8).map(|i| rw(OP_READ, i, i * 8, &[1])).collect();
    submit(&mut front, &requests);
    queue.service(&mut sim).unwrap();
    assert_eq!(sim.device.len(), 8);
    let mut pushes = Vec::new();
    while let Some(&slot) = sim.on_device().first() {
        let done = sim.finish(slot);
        queue.complete(&[done], &mut sim).unwrap();
        let round = queue.progress(&mut sim).unwrap();
        if round.answered > 0 {
            pushes.push(round.answered);
            // The front-end takes them and asks to be told of the next.
            assert!(round.notify);
            responses(&mut front);
            assert!(!front.final_check_for_responses().unwrap());
        }
    }
    // Published when as many wait as are still on the device: 4 (4 left), 2 (2 left),
    // 1 (1 left), the last.
    assert_eq!(pushes, [4, 2, 1, 1]);
    assert_eq!(queue.counters().notifications, 4);
}

/// A back-end killed with requests on the device, some answered and not published, some
/// published, some still in the ring: a new instance resumes the ring
/// ([`xen_ring::BackRing::resume`]) and the front-end gets every response exactly once, in
/// request order, with every write on the disk.
#[test]
fn a_restarted_back_end_resumes_the_ring_and_answers_each_request_once() {
    for finished_before_death in 0..=6usize {
        let page = LocalPage::new();
        let mut front = front_ring(&page);
        let limits = Limits::new(Limits::DEFAULT_MAX_INDIRECT_SEGMENTS).unwrap();
        let vbd = Vbd::whole(DISK_SECTORS, false);
        let mut queue = Queue::new(BlkBackRing::journaled(&page).unwrap(), vbd, limits);
        let mut sim = machine();
        let requests: Vec<RawRequest> = (0..10u32)
            .map(|i| {
                sim.grant(300 + i, 0x30 + i as u8);
                rw(OP_WRITE, u64::from(i), u64::from(i) * 8, &[300 + i])
            })
            .collect();
        submit(&mut front, &requests);
        queue.service(&mut sim).unwrap();
        let on_device = sim.on_device();
        // The device finishes some, last started first; the queue hears of them.
        let mut seen = Vec::new();
        for &slot in on_device.iter().rev().take(finished_before_death) {
            let done = sim.finish(slot);
            queue.complete(&[done], &mut sim).unwrap();
            queue.progress(&mut sim).unwrap();
        }
        seen.extend(responses(&mut front).iter().map(|r| r.id));
        // Killed: the queue, its slots and whatever the device was doing are gone; the
        // disk and the front-end's ring remain.
        drop(queue);
        let mut after = machine();
        after.disk = sim.disk.clone();
        after.grants = sim.grants.clone();
        let (ring, _restored) = BlkBackRing::resume(&page).unwrap();
        let mut queue = Queue::new(ring, vbd, limits);
        serve(&mut queue, &mut after).unwrap();
        seen.extend(responses(&mut front).iter().map(|r| r.id));
        assert_eq!(
            seen,
            (0..10).collect::<Vec<u64>>(),
            "{finished_before_death} finished before the kill"
        );
        for i in 0..10u64 {
            let at = (i as usize * 8) * SECTOR_BYTES;
            assert!(after.disk[at..at + 4096]
                .iter()
                .all(|&b| b == 0x30 + i as u8));
        }
    }
}

/// A back-end given up on answers whatever is in the ring with an error, in order, and
/// touches no data.
#[test]
fn a_given_up_back_end_fails_every_request_without_carrying_it_out() {
    let page = LocalPage::new();
    let mut front = front_ring(&page);
    let mut queue = queue(&page, Vbd::whole(DISK_SECTORS, false));
    submit(
        &mut front,
        &[
            rw(OP_WRITE, 7, 0, &[1]),
            rw(OP_READ, 8, 8, &[2]),
            rw(OP_FLUSH_DISKCACHE, 9, 0, &[]),
        ],
    );
    let round = queue.fail_all().unwrap();
    assert_eq!(round.answered, 3);
    let got = responses(&mut front);
    assert_eq!(
        got.iter()
            .map(|r| (r.id, r.operation, r.status))
            .collect::<Vec<_>>(),
        [
            (7, OP_WRITE, STATUS_ERROR),
            (8, OP_READ, STATUS_ERROR),
            (9, OP_FLUSH_DISKCACHE, STATUS_ERROR)
        ]
    );
}
