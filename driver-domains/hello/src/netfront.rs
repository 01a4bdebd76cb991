//! `net-hostile`: a netif front-end written on the runtime, to test netback with what
//! Linux's xen-netfront never sends.
//!
//! It takes the first network interface the xenstore domain wrote for it (`device/vif`, or
//! `vif=<handle>`), walks the xenbus handshake as xen-netfront does (`XEN-ABI.md` §3.6: one
//! tx and one rx ring page, one event channel, `request-rx-copy` 1, straight to
//! `Connected`), sends one well-formed frame and checks that it is answered `RSP_OKAY`,
//! then (with `go=console`, once a line `go` is typed on its console, so a test can pick the
//! moment) misbehaves as `how=` says. It posts no rx buffers: frames the bridge floods to it
//! wait in netback's queue, and an rx buffer could not be mistaken for work in a storm.
//!
//! The frames it sends carry its own MAC as both source and destination, so the bridge
//! accepts them and forwards them nowhere.
//!
//! | `how` | what the front-end does | netback's answer |
//! |---|---|---|
//! | `ring` | publishes the tx `req_prod` 100,000 entries ahead (a scribbled ring) | cut off |
//! | `slots` | a frame over 19 data slots (at most 18) | cut off |
//! | `crosses` | a frame of 200 bytes at offset 4000 of its page | cut off |
//! | `extra` | a frame with an extra-info slot of unknown type 9 | cut off |
//! | `storm` | notifications with nothing on either ring, until the back-end closes | cut off |
//! | `gref` | a frame in a grant reference it never made | that frame `RSP_ERROR`, the vif serves on |
//! | `size` | a frame whose first slot says 100 bytes and whose second says 200 | that frame `RSP_ERROR`, the vif serves on |
//!
//! Lines: `net-hostile: vif <handle>: mac <mac>, connected`, `net-hostile: frame ok`,
//! (`net-hostile: waiting for go on the console`), `net-hostile: <how> done`; then for the
//! cases that cut the vif off `net-hostile: backend closed the vif` (or `net-hostile:
//! backend still <state> after 30 s`), and for the others `net-hostile: frame refused with
//! status -1, the next frame ok` and `net-hostile: closed cleanly (backend <state>)`;
//! finally `net-hostile: done`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Display;

use driver_domains::events::{self, Port, Wake};
use driver_domains::ring::{FrontRing, SharedPage, Sring};
use driver_domains::xenbus::XenbusState;
use driver_domains::xenstore::{self, Client, Tx};
use driver_domains::{cmdline, println, time, BootInfo, OwnedPage};
use netback::mac::Mac;
use netback::wire::{
    ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse, RSP_ERROR, RSP_OKAY, TXF_EXTRA_INFO,
    TXF_MORE_DATA,
};

use crate::xenbus_front::{self, deadline_in, wait_for_go, Front, CLOSE_NS};

const PREFIX: &str = "net-hostile";
/// How long each handshake step and each response may take.
const STEP_NS: u64 = 60_000_000_000;
/// The tx `req_prod` jump of `how=ring`.
const RING_JUMP: u32 = 100_000;
/// The grant reference of `how=gref`: far beyond any this domain made.
const BOGUS_GREF: u32 = 3_000;
/// Data slots of `how=slots`: one more than netback takes for a frame.
const TOO_MANY_SLOTS: u16 = 19;
/// The extra-info type of `how=extra` (the known ones are 1 to 4).
const UNKNOWN_EXTRA: u8 = 9;
/// Offset of `req_prod` in a shared ring page.
const REQ_PROD: usize = 0;
/// Offset of `rsp_prod`.
const RSP_PROD: usize = 8;
/// The length of the well-formed frames: the shortest Ethernet frame.
const FRAME_BYTES: u16 = 60;
/// IEEE's local experimental ethertype: nobody on the bridge cares for it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Ring,
    Slots,
    Crosses,
    Extra,
    Storm,
    Gref,
    Size,
}

impl How {
    const ALL: [How; 7] = [
        Self::Ring,
        Self::Slots,
        Self::Crosses,
        Self::Extra,
        Self::Storm,
        Self::Gref,
        Self::Size,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::Slots => "slots",
            Self::Crosses => "crosses",
            Self::Extra => "extra",
            Self::Storm => "storm",
            Self::Gref => "gref",
            Self::Size => "size",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|how| how.name() == text)
    }

    /// Whether netback must cut the vif off for it (otherwise: drop that frame only).
    fn is_fatal(self) -> bool {
        !matches!(self, Self::Gref | Self::Size)
    }
}

fn fail(what: impl Display) -> ! {
    xenbus_front::fail(PREFIX, what)
}

type TxRing<'a> = FrontRing<TxRequest, TxResponse, &'a OwnedPage>;

/// A tx data slot.
fn slot(gref: u32, offset: u16, size: u16, flags: u16, id: u16) -> TxRequest {
    TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
        raw: [0; 12],
    }
}

/// Publishes `slots` and notifies the back-end.
fn push(ring: &mut TxRing<'_>, port: Port, slots: &[TxRequest]) {
    for request in slots {
        if ring.produce_request(request).is_err() {
            fail("the tx ring is full");
        }
    }
    let _ = ring.push_requests();
    let _ = events::send(port);
}

/// Sends `slots` and waits for one response per slot; their statuses, in ring order.
fn exchange(ring: &mut TxRing<'_>, port: Port, slots: &[TxRequest]) -> Vec<i16> {
    push(ring, port, slots);
    let deadline = deadline_in(STEP_NS);
    let mut statuses = Vec::new();
    while statuses.len() < slots.len() {
        let gen = events::generation();
        match ring.next_response() {
            Ok(Some(response)) => {
                let expected = slots[statuses.len()].id;
                if response.id != expected {
                    fail(format_args!(
                        "response to id {}, expected {expected}",
                        response.id
                    ));
                }
                statuses.push(response.status);
                continue;
            }
            Ok(None) => {}
            Err(e) => fail(format_args!("the backend broke the tx ring: {e}")),
        }
        if matches!(ring.final_check_for_responses(), Ok(true)) {
            continue;
        }
        if events::wait_since(gen, Some(deadline)) == Wake::Timeout {
            fail("no response from the backend");
        }
    }
    statuses
}

/// A well-formed frame of [`FRAME_BYTES`] from `mac` to `mac`.
fn frame(mac: Mac, serial: u8) -> [u8; FRAME_BYTES as usize] {
    let mut bytes = [0u8; FRAME_BYTES as usize];
    bytes[..6].copy_from_slice(&mac.0);
    bytes[6..12].copy_from_slice(&mac.0);
    bytes[12..14].copy_from_slice(&ETHERTYPE);
    for (index, byte) in bytes[14..].iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(31) ^ serial;
    }
    bytes
}

/// The first `vif` under `device/vif`, or the one `vif=` names.
fn find_vif(xs: &mut Client, info: &BootInfo, me: u16) -> String {
    let vifs = format!("{}/device/vif", xenstore::domain_path(me));
    let handle = match cmdline::get(info.cmdline, "vif") {
        Some(handle) => String::from(handle),
        None => xs
            .directory(Tx::NONE, &vifs)
            .ok()
            .and_then(|list| list.into_iter().next())
            .unwrap_or_else(|| fail(format_args!("no network interface under {vifs}"))),
    };
    format!("{vifs}/{handle}")
}

/// `mode=net-hostile how=<how> [vif=<handle>] [go=console]`.
pub fn net_hostile(info: &BootInfo) {
    let how = cmdline::get(info.cmdline, "how")
        .and_then(How::parse)
        .unwrap_or_else(|| fail("needs how=ring|slots|crosses|extra|storm|gref|size"));
    let me = info.domain.domid;
    let mut xs = Client::connect().unwrap_or_else(|e| fail(format_args!("no xenstore: {e}")));
    let fdir = find_vif(&mut xs, info, me);
    let mut front = Front::open(xs, me, fdir.clone(), PREFIX);
    let mac_text = front.read(&format!("{fdir}/mac"));
    let mac = Mac::parse(&mac_text).unwrap_or_else(|| fail(format_args!("bad mac {mac_text:?}")));
    let handle = front.read(&format!("{fdir}/handle"));

    let state = front.wait_backend(|s| s == XenbusState::InitWait || s.is_closing());
    if state != XenbusState::InitWait {
        fail(format_args!("backend is {state}, not InitWait"));
    }
    let tx_page = OwnedPage::new().unwrap_or_else(|| fail("no memory for the tx ring"));
    let rx_page = OwnedPage::new().unwrap_or_else(|| fail("no memory for the rx ring"));
    Sring::init(&tx_page);
    Sring::init(&rx_page);
    let backend = front.backend;
    let grant = |page: &OwnedPage, readonly: bool, what: &str| {
        page.grant(backend, readonly)
            .unwrap_or_else(|e| fail(format_args!("granting the {what} failed: {e}")))
    };
    let tx_gref = grant(&tx_page, false, "tx ring");
    let rx_gref = grant(&rx_page, false, "rx ring");
    let port = events::alloc_unbound(front.backend)
        .unwrap_or_else(|e| fail(format_args!("alloc_unbound failed: {e}")));
    // xen-netfront skips `Initialised`.
    front.publish(
        &[
            ("tx-ring-ref", tx_gref.0.to_string()),
            ("rx-ring-ref", rx_gref.0.to_string()),
            ("event-channel", port.0.to_string()),
            ("request-rx-copy", String::from("1")),
            ("feature-rx-notify", String::from("1")),
            ("feature-sg", String::from("1")),
        ],
        XenbusState::Connected,
    );
    let state = front.wait_backend(|s| s == XenbusState::Connected || s.is_closing());
    if state != XenbusState::Connected {
        fail(format_args!("backend is {state}, not Connected"));
    }
    println!("{PREFIX}: vif {handle}: mac {mac}, connected");
    // The rx ring is checked to be a ring of the right entries, and left without buffers.
    let _ = FrontRing::<RxRequest, RxResponse, &OwnedPage>::new(&rx_page)
        .unwrap_or_else(|e| fail(format_args!("rx ring: {e}")));
    let mut ring: TxRing<'_> =
        FrontRing::new(&tx_page).unwrap_or_else(|e| fail(format_args!("tx ring: {e}")));

    // Tx grants are read-only, as xen-netfront makes them.
    let data = OwnedPage::new().unwrap_or_else(|| fail("no memory for the data page"));
    data.write_bytes(0, &frame(mac, 1));
    let data_gref = grant(&data, true, "data page");
    let good = |id: u16| slot(data_gref.0, 0, FRAME_BYTES, 0, id);
    let statuses = exchange(&mut ring, port, &[good(0)]);
    if statuses != [RSP_OKAY] {
        fail(format_args!("a good frame FAILED: statuses {statuses:?}"));
    }
    println!("{PREFIX}: frame ok");

    if cmdline::get(info.cmdline, "go") == Some("console") {
        wait_for_go(PREFIX);
    }
    let mut refused = Vec::new();
    match how {
        How::Ring => {
            let rsp_prod = tx_page.load_u32(RSP_PROD);
            tx_page.store_u32(REQ_PROD, rsp_prod.wrapping_add(RING_JUMP));
            let _ = events::send(port);
        }
        How::Slots => {
            // Each slot a piece of the page; the first says the whole frame's length.
            let mut slots: Vec<TxRequest> = (0..TOO_MANY_SLOTS)
                .map(|n| slot(data_gref.0, 0, FRAME_BYTES, TXF_MORE_DATA, 1 + n))
                .collect();
            slots[0].size = FRAME_BYTES * TOO_MANY_SLOTS;
            if let Some(last) = slots.last_mut() {
                last.flags = 0;
            }
            push(&mut ring, port, &slots);
        }
        How::Crosses => push(&mut ring, port, &[slot(data_gref.0, 4000, 200, 0, 1)]),
        How::Extra => {
            let unknown = ExtraInfo {
                kind: UNKNOWN_EXTRA,
                flags: 0,
                data: [0; 6],
            };
            let first = slot(data_gref.0, 0, FRAME_BYTES, TXF_EXTRA_INFO, 1);
            push(&mut ring, port, &[first, unknown.to_slot()]);
        }
        How::Storm => {}
        How::Gref => {
            refused = exchange(&mut ring, port, &[slot(BOGUS_GREF, 0, FRAME_BYTES, 0, 1)]);
        }
        How::Size => {
            let slots = [
                slot(data_gref.0, 0, 100, TXF_MORE_DATA, 1),
                slot(data_gref.0, 0, 200, 0, 2),
            ];
            refused = exchange(&mut ring, port, &slots);
        }
    }
    println!("{PREFIX}: {} done", how.name());

    if how.is_fatal() {
        let storm = (how == How::Storm).then_some(port);
        front.wait_closed("vif", storm);
    } else {
        data.write_bytes(0, &frame(mac, 2));
        let next = exchange(&mut ring, port, &[good(9)]);
        if !refused.iter().all(|&s| s == RSP_ERROR) || next != [RSP_OKAY] {
            fail(format_args!(
                "FAILED: the bad frame got {refused:?}, the next one {next:?}"
            ));
        }
        println!("{PREFIX}: frame refused with status {RSP_ERROR}, the next frame ok");
        front.switch(XenbusState::Closing);
        let state = front.wait_backend(XenbusState::is_closing);
        front.switch(XenbusState::Closed);
        println!("{PREFIX}: closed cleanly (backend {state})");
    }

    // Take the grants back once the back-end let go of the rings.
    let deadline = deadline_in(CLOSE_NS);
    while (tx_page.end_access(tx_gref).is_err() || rx_page.end_access(rx_gref).is_err())
        && time::now_ns() < deadline
    {
        time::sleep_ms(1);
    }
    let _ = data.end_access(data_gref);
    let _ = events::close(port);
    println!("{PREFIX}: done");
}
