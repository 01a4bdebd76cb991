//! The engine against the simulated machine: a front-end ring, granted pages, a disk.

use alloc::string::ToString;
use alloc::vec::Vec;

use xen_ring::{FrontRing, LocalPage};

use crate::engine::{Cutoff, Queue, STORM_EMPTY_ROUNDS};
use crate::request::Limits;
use crate::sim::{front_ring, SimPlatform};
use crate::vbd::Vbd;
use crate::wire::{
    BlkBackRing, DiscardRequest, IndirectRequest, RawRequest, Response, RwRequest, Segment,
    MAX_DIRECT_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ, OP_WRITE, SECTOR_BYTES,
    STATUS_ERROR, STATUS_OKAY,
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
    let round = queue.service(&mut sim).unwrap();
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
    queue.service(&mut sim).unwrap();
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
    queue.service(&mut sim).unwrap();
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
    queue.service(&mut sim).unwrap();
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
    queue.service(&mut sim).unwrap();
    assert_eq!(responses(&mut front)[0].status, STATUS_OKAY);
    assert!(sim.disk[10 * 512..16 * 512].iter().all(|&b| b == 0));
    assert_eq!(sim.disk[16 * 512], 0x5a);
    sim.grant(1, 0);
    sim.fail_next = true;
    submit(&mut front, &[rw(OP_READ, 4, 0, &[1])]);
    queue.service(&mut sim).unwrap();
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
    queue.service(&mut sim).unwrap();
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
    let cutoff = queue.service(&mut sim).unwrap_err();
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
        queue.service(&mut sim).unwrap();
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
        let _ = queue.service(&mut sim);
        proptest::prop_assert!(sim.disk[..512 * 512].iter().all(|&b| b == 0x77));
        proptest::prop_assert!(sim.disk[1024 * 512..].iter().all(|&b| b == 0x77));
    }
}
