//! `blk-hostile`: a blkif front-end written on the runtime, to test blkback with what Linux's
//! xen-blkfront never sends.
//!
//! It takes the first virtual block device the xenstore domain wrote for it (`device/vbd`,
//! or `vdev=<n>`), walks the xenbus handshake with one single-page ring (`XEN-ABI.md`
//! §3.5), checks that the vbd works (a 4 KiB write read back, or for a read-only vbd a write
//! refused with `BLKIF_RSP_ERROR` and a read that succeeds), then (with `go=console`, once
//! a line `go` is typed on its console, so a test can pick the moment) misbehaves as `how=`
//! says and waits for the back-end to close the vbd:
//!
//! | `how` | what the front-end does |
//! |---|---|
//! | `none` | nothing: closes the vbd itself, cleanly |
//! | `ring` | publishes `req_prod` 100,000 entries ahead (a scribbled ring) |
//! | `gref` | a read into a grant reference it never gave |
//! | `sector` | a read of the sector just past the end of the vbd |
//! | `segments` | a write with 12 segments (at most 11) |
//! | `id` | two reads with the same id in one push |
//! | `storm` | notifications with nothing in the ring, until the back-end closes |
//!
//! Lines: `blk-hostile: vbd <vdev>: <sectors> sectors, read-write|read-only`,
//! `blk-hostile: io ok` or `blk-hostile: write refused with status -1, read ok`,
//! (`blk-hostile: waiting for go on the console`), `blk-hostile: <how> done`, then `blk-hostile: backend closed the vbd` (or
//! `blk-hostile: backend still <state> after 30 s`), `blk-hostile: done`.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt::Display;

use blkback::wire::{
    RawRequest, Response, RwRequest, Segment, OP_READ, OP_WRITE, STATUS_ERROR, STATUS_OKAY,
    VDISK_READONLY,
};
use driver_domains::events::{self, Port, Wake};
use driver_domains::ring::{FrontRing, SharedPage, Sring};
use driver_domains::xenbus::XenbusState;
use driver_domains::xenstore::{self, Client, Tx};
use driver_domains::{cmdline, println, time, BootInfo, OwnedPage};

use crate::xenbus_front::{self, deadline_in, wait_for_go, Front, CLOSE_NS};

const PREFIX: &str = "blk-hostile";
/// How long each handshake step and each response may take.
const STEP_NS: u64 = 60_000_000_000;
/// The `req_prod` jump of `how=ring`.
const RING_JUMP: u32 = 100_000;
/// The grant reference of `how=gref`: far beyond any this domain made.
const BOGUS_GREF: u32 = 3_000;
/// Offset of `req_prod` in the shared ring page.
const REQ_PROD: usize = 0;
/// Offset of `rsp_prod`.
const RSP_PROD: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    None,
    Ring,
    Gref,
    Sector,
    Segments,
    Id,
    Storm,
}

impl How {
    fn parse(text: Option<&str>) -> Option<Self> {
        Some(match text.unwrap_or("none") {
            "none" => Self::None,
            "ring" => Self::Ring,
            "gref" => Self::Gref,
            "sector" => Self::Sector,
            "segments" => Self::Segments,
            "id" => Self::Id,
            "storm" => Self::Storm,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ring => "ring",
            Self::Gref => "gref",
            Self::Sector => "sector",
            Self::Segments => "segments",
            Self::Id => "id",
            Self::Storm => "storm",
        }
    }
}

fn fail(what: impl Display) -> ! {
    xenbus_front::fail(PREFIX, what)
}

type Ring<'a> = FrontRing<RawRequest, Response, &'a OwnedPage>;

/// A one-segment request covering the whole page `gref`.
fn one_page(operation: u8, id: u64, sector: u64, gref: u32) -> RawRequest {
    let mut segments = [Segment::default(); 11];
    segments[0] = Segment {
        gref,
        first_sect: 0,
        last_sect: 7,
    };
    RawRequest::Rw(RwRequest {
        operation,
        nr_segments: 1,
        handle: 0,
        id,
        sector_number: sector,
        segments,
    })
}

/// Sends `request` and waits for its response's status.
fn exchange(ring: &mut Ring<'_>, port: Port, request: &RawRequest) -> i16 {
    if ring.produce_request(request).is_err() {
        fail("the ring is full");
    }
    let _ = ring.push_requests();
    let _ = events::send(port);
    let deadline = deadline_in(STEP_NS);
    loop {
        let gen = events::generation();
        match ring.next_response() {
            Ok(Some(response)) if response.id == request.id() => return response.status,
            Ok(Some(response)) => fail(format_args!("response to unknown id {:#x}", response.id)),
            Ok(None) => {}
            Err(e) => fail(format_args!("the backend broke the ring: {e}")),
        }
        if matches!(ring.final_check_for_responses(), Ok(true)) {
            continue;
        }
        if events::wait_since(gen, Some(deadline)) == Wake::Timeout {
            fail("no response from the backend");
        }
    }
}

fn pattern(me: u16, index: usize) -> u8 {
    (index as u8).wrapping_mul(13) ^ (me as u8)
}

/// `mode=blk-hostile [how=...] [vdev=<n>] [go=console]`.
pub fn blk_hostile(info: &BootInfo) {
    let Some(how) = How::parse(cmdline::get(info.cmdline, "how")) else {
        fail("needs how=none|ring|gref|sector|segments|id|storm");
    };
    let me = info.domain.domid;
    let mut xs = Client::connect().unwrap_or_else(|e| fail(format_args!("no xenstore: {e}")));
    let vbds = format!("{}/device/vbd", xenstore::domain_path(me));
    let vdev = match cmdline::get(info.cmdline, "vdev") {
        Some(vdev) => String::from(vdev),
        None => xs
            .directory(Tx::NONE, &vbds)
            .ok()
            .and_then(|list| list.into_iter().next())
            .unwrap_or_else(|| fail(format_args!("no virtual block device under {vbds}"))),
    };
    let fdir = format!("{vbds}/{vdev}");
    let mut front = Front::open(xs, me, fdir.clone(), PREFIX);

    let state = front.wait_backend(|s| s == XenbusState::InitWait || s.is_closing());
    if state != XenbusState::InitWait {
        fail(format_args!("backend is {state}, not InitWait"));
    }
    let ring_page = OwnedPage::new().unwrap_or_else(|| fail("no memory for the ring"));
    Sring::init(&ring_page);
    let ring_gref = ring_page
        .grant(front.backend, false)
        .unwrap_or_else(|e| fail(format_args!("granting the ring failed: {e}")));
    let port = events::alloc_unbound(front.backend)
        .unwrap_or_else(|e| fail(format_args!("alloc_unbound failed: {e}")));
    front.publish(
        &[
            ("ring-ref", ring_gref.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("protocol", String::from("x86_64-abi")),
        ],
        XenbusState::Initialised,
    );
    let state = front.wait_backend(|s| s == XenbusState::Connected || s.is_closing());
    if state != XenbusState::Connected {
        fail(format_args!("backend is {state}, not Connected"));
    }
    let bdir = front.bdir.clone();
    let sectors: u64 = front
        .read(&format!("{bdir}/sectors"))
        .parse()
        .unwrap_or_else(|_| fail("bad sectors"));
    let vinfo: u32 = front.read(&format!("{bdir}/info")).parse().unwrap_or(0);
    let readonly = vinfo & VDISK_READONLY != 0;
    println!(
        "{PREFIX}: vbd {vdev}: {sectors} sectors, {}",
        if readonly { "read-only" } else { "read-write" }
    );

    let mut ring: Ring<'_> =
        FrontRing::new(&ring_page).unwrap_or_else(|e| fail(format_args!("ring: {e}")));
    let data = OwnedPage::new().unwrap_or_else(|| fail("no memory for the data page"));
    let data_gref = data
        .grant(front.backend, false)
        .unwrap_or_else(|e| fail(format_args!("granting the data page failed: {e}")));
    // The last page of the vbd: a pattern of this domain's, read back.
    let sector = sectors.saturating_sub(8);
    let mut written = [0u8; 4096];
    for (index, byte) in written.iter_mut().enumerate() {
        *byte = pattern(me, index);
    }
    data.write_bytes(0, &written);
    let status = exchange(&mut ring, port, &one_page(OP_WRITE, 1, sector, data_gref.0));
    data.zero();
    let read = exchange(&mut ring, port, &one_page(OP_READ, 2, sector, data_gref.0));
    let mut back = [0u8; 4096];
    data.read_bytes(0, &mut back);
    match (readonly, status, read) {
        (false, STATUS_OKAY, STATUS_OKAY) if back == written => println!("{PREFIX}: io ok"),
        (true, STATUS_ERROR, STATUS_OKAY) => {
            println!("{PREFIX}: write refused with status {status}, read ok")
        }
        _ => fail(format_args!(
            "io FAILED: write status {status}, read status {read}, data {}",
            if back == written {
                "intact"
            } else {
                "different"
            }
        )),
    }

    if cmdline::get(info.cmdline, "go") == Some("console") {
        wait_for_go(PREFIX);
    }
    match how {
        How::None => {}
        How::Ring => {
            let rsp_prod = ring_page.load_u32(RSP_PROD);
            ring_page.store_u32(REQ_PROD, rsp_prod.wrapping_add(RING_JUMP));
            let _ = events::send(port);
        }
        How::Gref => {
            let _ = ring.produce_request(&one_page(OP_READ, 3, 0, BOGUS_GREF));
            let _ = ring.push_requests();
            let _ = events::send(port);
        }
        How::Sector => {
            let _ = ring.produce_request(&one_page(OP_READ, 3, sectors, data_gref.0));
            let _ = ring.push_requests();
            let _ = events::send(port);
        }
        How::Segments => {
            let mut request = one_page(OP_WRITE, 3, 0, data_gref.0);
            if let RawRequest::Rw(rw) = &mut request {
                rw.nr_segments = 12;
            }
            let _ = ring.produce_request(&request);
            let _ = ring.push_requests();
            let _ = events::send(port);
        }
        How::Id => {
            let _ = ring.produce_request(&one_page(OP_READ, 7, 0, data_gref.0));
            let _ = ring.produce_request(&one_page(OP_READ, 7, 8, data_gref.0));
            let _ = ring.push_requests();
            let _ = events::send(port);
        }
        How::Storm => {}
    }
    println!("{PREFIX}: {} done", how.name());

    if how == How::None {
        front.switch(XenbusState::Closing);
        let state = front.wait_backend(XenbusState::is_closing);
        front.switch(XenbusState::Closed);
        println!("{PREFIX}: closed cleanly (backend {state})");
    } else {
        let storm = (how == How::Storm).then_some(port);
        front.wait_closed("vbd", storm);
    }

    // Take the grants back once the back-end let go of the ring.
    let deadline = deadline_in(CLOSE_NS);
    while ring_page.end_access(ring_gref).is_err() && time::now_ns() < deadline {
        time::sleep_ms(1);
    }
    let _ = data.end_access(data_gref);
    let _ = events::close(port);
    println!("{PREFIX}: done");
}
