//! One connected vif: its tx and rx rings and the frames in flight, over a [`Platform`] that
//! does the grant copies.
//!
//! # Tx (guest to bridge)
//!
//! [`Vif::take_tx`] copies every published tx slot out of the ring once into the vif's
//! pending slots, and parses whole frames off their front ([`crate::tx::parse`]). A whole
//! frame is copied out of the guest's grants (one grant copy per piece) into a buffer of
//! ours, its checksum is completed if the guest left it blank ([`crate::csum`]), and its
//! slots are answered at once: the frame is ours now, the guest may reuse its pages. A
//! TCP/IPv4 frame with a GSO extra (up to 64 KiB) is cut into segments ([`crate::gso`])
//! that go on as frames of their own. A malformed frame is answered with errors and
//! dropped; so is a frame of a kind the bridge does not carry (longer than [`MAX_FRAME`]
//! without GSO, a blank checksum that cannot be completed, a GSO frame that cannot be
//! segmented). What no correct front-end sends ([`crate::tx::Fatal`], a ring
//! index out of range) cuts the vif off ([`Cutoff`]).
//!
//! # Event storms
//!
//! The back-end counts each turn on which the vif's event channel fired
//! ([`Vif::notified`]); [`STORM_EMPTY_EVENTS`] of them in a row without a request taken off
//! either ring cut the vif off too.
//!
//! # Rx (bridge to guest)
//!
//! [`Vif::queue_rx`] queues a frame (at most [`RX_QUEUE_FRAMES`]; the oldest is dropped
//! beyond). [`Vif::deliver_rx`] takes one posted rx request per frame, copies the frame to
//! offset 0 of the granted page and answers in the request's slot with the frame's length
//! (`flags` 0: the guest checks the checksums itself).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use xen_ring::{BackRing, RingError, SharedPage};

use crate::csum;
use crate::gso;
use crate::handshake::MAX_FRAME;
use crate::tx::{self, Fatal, Parsed, Piece};
use crate::wire::{RxRequest, RxResponse, TxRequest, TxResponse, RSP_ERROR};

/// Frames copied into the guest's rx buffers in one batch (a few grant-copy hypercalls).
pub const RX_BATCH: usize = 32;

/// Frames a vif queues for its guest while the guest posts no rx buffers.
pub const RX_QUEUE_FRAMES: usize = 256;

/// Notifications in a row that found no new request on either ring before the vif is cut
/// off as an event storm ([`Vif::notified`]). A correct front-end notifies only when the
/// ring's `req_event` asks it to, which is when it published something: a notification
/// finds nothing new only when that was already taken on an earlier turn, at most once per
/// turn that took something. Turns are counted per wake-up of the back-end (events that
/// arrive while it is busy coalesce), so the limit must be reachable at its own pace: a
/// storm under TCG gives it a few hundred wake-ups a second.
pub const STORM_EMPTY_EVENTS: u32 = 256;

/// A grant copy that failed: the grant and the `GNTST_*` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyError {
    pub gref: u32,
    pub status: i16,
}

/// The grant copies a vif needs.
pub trait Platform {
    /// Copies `pieces` of the front-end's granted pages, in order, into `out` (whose
    /// length is their sum).
    fn copy_from_guest(&mut self, pieces: &[Piece], out: &mut [u8]) -> Result<(), CopyError>;
    /// Copies each `(gref, frame)` of `copies` (at most [`RX_BATCH`], each frame at most
    /// [`MAX_FRAME`] bytes) to offset 0 of the front-end's granted page `gref`, as one batch;
    /// `done[i]` says whether the `i`-th copy was made.
    fn copy_to_guest(&mut self, copies: &[(u32, &[u8])], done: &mut [bool]);
}

/// Why a vif is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// The tx ring's producer index is impossible.
    TxRing(RingError),
    /// The rx ring's producer index is impossible.
    RxRing(RingError),
    /// A tx frame no correct front-end sends.
    Frame(Fatal),
    /// [`STORM_EMPTY_EVENTS`] notifications in a row with nothing new on either ring.
    EventStorm(u32),
}

impl fmt::Display for Cutoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TxRing(e) => write!(f, "it broke the tx ring protocol ({e:?})"),
            Self::RxRing(e) => write!(f, "it broke the rx ring protocol ({e:?})"),
            Self::Frame(fatal) => write!(f, "it sent {fatal}"),
            Self::EventStorm(events) => write!(
                f,
                "event storm: {events} notifications in a row with nothing new on either ring"
            ),
        }
    }
}

/// What a vif did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames answered with errors (malformed, or not carried).
    pub tx_dropped: u64,
    /// Frames that came with a GSO extra, and the segments they were cut into.
    pub tx_gso_frames: u64,
    pub tx_segments: u64,
    /// Grant copies that failed (their frames dropped).
    pub tx_copy_errors: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames dropped because the guest posted no buffers in time, or a copy failed.
    pub rx_dropped: u64,
    /// Grant copies made (one per tx piece, one per rx frame).
    pub grant_copies: u64,
    /// Notifications the vif asked for (tx and rx responses).
    pub notifications: u64,
}

impl Counters {
    /// The sum of two sets of counts (a vif's queues together).
    pub fn add(self, other: &Counters) -> Counters {
        Counters {
            tx_frames: self.tx_frames + other.tx_frames,
            tx_bytes: self.tx_bytes + other.tx_bytes,
            tx_dropped: self.tx_dropped + other.tx_dropped,
            tx_gso_frames: self.tx_gso_frames + other.tx_gso_frames,
            tx_segments: self.tx_segments + other.tx_segments,
            tx_copy_errors: self.tx_copy_errors + other.tx_copy_errors,
            rx_frames: self.rx_frames + other.rx_frames,
            rx_bytes: self.rx_bytes + other.rx_bytes,
            rx_dropped: self.rx_dropped + other.rx_dropped,
            grant_copies: self.grant_copies + other.grant_copies,
            notifications: self.notifications + other.notifications,
        }
    }
}

/// One connected vif.
pub struct Vif<M: SharedPage> {
    tx: BackRing<TxRequest, TxResponse, M>,
    rx: BackRing<RxRequest, RxResponse, M>,
    /// Tx slots copied out of the ring that do not make a whole frame yet.
    pending: Vec<TxRequest>,
    rx_queue: VecDeque<Vec<u8>>,
    counters: Counters,
    /// A request was taken off either ring since the last [`Vif::notified`].
    took_requests: bool,
    /// Notifications in a row that found nothing new.
    empty_events: u32,
}

impl<M: SharedPage> Vif<M> {
    /// A vif over its two rings (attached at index 0, as the front-end initialised them).
    pub fn new(
        tx: BackRing<TxRequest, TxResponse, M>,
        rx: BackRing<RxRequest, RxResponse, M>,
    ) -> Self {
        Self {
            tx,
            rx,
            pending: Vec::new(),
            rx_queue: VecDeque::new(),
            counters: Counters::default(),
            took_requests: false,
            empty_events: 0,
        }
    }

    /// Counts a notification from the front-end; call it on each turn its event channel
    /// fired, after [`Vif::take_tx`]. It found work if a request was taken off either ring
    /// since the previous notification (rx requests are taken by [`Vif::deliver_rx`], later
    /// in a turn, so they count for the next one).
    ///
    /// # Errors
    ///
    /// [`Cutoff::EventStorm`] after [`STORM_EMPTY_EVENTS`] notifications in a row that
    /// found nothing.
    pub fn notified(&mut self) -> Result<(), Cutoff> {
        if core::mem::take(&mut self.took_requests) {
            self.empty_events = 0;
            return Ok(());
        }
        self.empty_events += 1;
        if self.empty_events >= STORM_EMPTY_EVENTS {
            return Err(Cutoff::EventStorm(self.empty_events));
        }
        Ok(())
    }

    /// The counts so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Frames waiting for the guest's rx buffers.
    pub fn queued_rx(&self) -> usize {
        self.rx_queue.len()
    }

    /// The two rings' regions, to unmap.
    pub fn into_pages(self) -> (M, M) {
        (self.tx.into_page(), self.rx.into_page())
    }

    fn answer_tx(&mut self, responses: &[TxResponse]) {
        for response in responses {
            // Cannot fail: each response answers one slot taken from the ring.
            let _ = self.tx.produce_response(response);
        }
    }

    /// Takes the frames the front-end published into `frames` (each a whole Ethernet
    /// frame, checksums complete). Returns whether the front-end is to be notified.
    ///
    /// # Errors
    ///
    /// [`Cutoff`] for a hostile front-end; the vif must not be served again.
    pub fn take_tx(
        &mut self,
        platform: &mut impl Platform,
        frames: &mut Vec<Vec<u8>>,
    ) -> Result<bool, Cutoff> {
        loop {
            while let Some(slot) = self.tx.next_request().map_err(Cutoff::TxRing)? {
                self.pending.push(slot);
                self.took_requests = true;
            }
            self.parse_pending(platform, frames)?;
            if !self.tx.final_check_for_requests().map_err(Cutoff::TxRing)? {
                break;
            }
        }
        let notify = self.tx.push_responses();
        if notify {
            self.counters.notifications += 1;
        }
        Ok(notify)
    }

    fn parse_pending(
        &mut self,
        platform: &mut impl Platform,
        frames: &mut Vec<Vec<u8>>,
    ) -> Result<(), Cutoff> {
        let mut at = 0;
        while at < self.pending.len() {
            match tx::parse(&self.pending[at..]).map_err(Cutoff::Frame)? {
                Parsed::Incomplete => break,
                Parsed::Dropped {
                    responses, slots, ..
                } => {
                    self.counters.tx_dropped += 1;
                    self.answer_tx(&responses);
                    at += slots;
                }
                Parsed::Frame { frame, slots } => {
                    at += slots;
                    let len = usize::from(frame.len);
                    // `tx::parse` drops GSO extras of other types.
                    let mss = frame.gso.map(|(size, _)| size);
                    if mss.is_none() && len > MAX_FRAME {
                        self.counters.tx_dropped += 1;
                        self.answer_tx(&frame.refuse());
                        continue;
                    }
                    let mut bytes = alloc::vec![0u8; len];
                    self.counters.grant_copies += frame.pieces.len() as u64;
                    if platform.copy_from_guest(&frame.pieces, &mut bytes).is_err() {
                        self.counters.tx_copy_errors += 1;
                        self.answer_tx(&frame.refuse());
                        continue;
                    }
                    if let Some(mss) = mss {
                        match gso::segment_tcpv4(&bytes, mss, frames) {
                            Ok(segments) => {
                                self.counters.tx_frames += 1;
                                self.counters.tx_gso_frames += 1;
                                self.counters.tx_segments += segments as u64;
                                self.counters.tx_bytes += len as u64;
                                self.answer_tx(&frame.responses);
                            }
                            Err(_) => {
                                self.counters.tx_dropped += 1;
                                self.answer_tx(&frame.refuse());
                            }
                        }
                        continue;
                    }
                    if frame.csum_blank && csum::complete(&mut bytes).is_err() {
                        self.counters.tx_dropped += 1;
                        self.answer_tx(&frame.refuse());
                        continue;
                    }
                    self.counters.tx_frames += 1;
                    self.counters.tx_bytes += len as u64;
                    self.answer_tx(&frame.responses);
                    frames.push(bytes);
                }
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Queues `frame` for the guest (see the module documentation).
    pub fn queue_rx(&mut self, frame: &[u8]) {
        if self.rx_queue.len() >= RX_QUEUE_FRAMES {
            self.rx_queue.pop_front();
            self.counters.rx_dropped += 1;
        }
        self.rx_queue.push_back(Vec::from(frame));
    }

    /// Moves queued frames into the buffers the guest posted. Returns whether the
    /// front-end is to be notified.
    ///
    /// # Errors
    ///
    /// [`Cutoff::RxRing`] for an impossible rx producer index.
    pub fn deliver_rx(&mut self, platform: &mut impl Platform) -> Result<bool, Cutoff> {
        loop {
            // Up to RX_BATCH frames, each with a posted buffer.
            let mut batch: Vec<(RxRequest, Vec<u8>)> = Vec::new();
            while batch.len() < RX_BATCH && !self.rx_queue.is_empty() {
                let Some(request) = self.rx.next_request().map_err(Cutoff::RxRing)? else {
                    // Asks to be told of the next posted buffer; one may have come meanwhile.
                    if self.rx.final_check_for_requests().map_err(Cutoff::RxRing)? {
                        continue;
                    }
                    break;
                };
                self.took_requests = true;
                // Cannot be empty: checked by the loop.
                if let Some(frame) = self.rx_queue.pop_front() {
                    batch.push((request, frame));
                }
            }
            if batch.is_empty() {
                break;
            }
            let copies: Vec<(u32, &[u8])> = batch
                .iter()
                .map(|(request, frame)| (request.gref, frame.as_slice()))
                .collect();
            let mut done = alloc::vec![false; batch.len()];
            platform.copy_to_guest(&copies, &mut done);
            self.counters.grant_copies += batch.len() as u64;
            for ((request, frame), done) in batch.iter().zip(done) {
                let status = if done {
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += frame.len() as u64;
                    frame.len() as i16
                } else {
                    self.counters.rx_dropped += 1;
                    RSP_ERROR
                };
                let response = RxResponse {
                    id: request.id,
                    offset: 0,
                    flags: 0,
                    status,
                };
                // Cannot fail: the request was just taken.
                let _ = self.rx.produce_response(&response);
            }
            if batch.len() < RX_BATCH {
                break;
            }
        }
        let notify = self.rx.push_responses();
        if notify {
            self.counters.notifications += 1;
        }
        Ok(notify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RSP_OKAY, TXF_CSUM_BLANK, TXF_MORE_DATA};
    use alloc::collections::BTreeMap;
    use xen_ring::{FrontRing, LocalPage, Sring};

    /// Grants as pages of bytes; `bad` grants fail to copy.
    #[derive(Default)]
    struct Pages {
        pages: BTreeMap<u32, Vec<u8>>,
        bad: Vec<u32>,
        /// Calls of `copy_to_guest`.
        batches: usize,
    }

    impl Platform for Pages {
        fn copy_from_guest(&mut self, pieces: &[Piece], out: &mut [u8]) -> Result<(), CopyError> {
            let mut at = 0;
            for piece in pieces {
                let fail = CopyError {
                    gref: piece.gref,
                    status: -1,
                };
                if self.bad.contains(&piece.gref) {
                    return Err(fail);
                }
                let page = self.pages.get(&piece.gref).ok_or(fail)?;
                let from = usize::from(piece.offset);
                let len = usize::from(piece.len);
                out[at..at + len].copy_from_slice(&page[from..from + len]);
                at += len;
            }
            Ok(())
        }

        fn copy_to_guest(&mut self, copies: &[(u32, &[u8])], done: &mut [bool]) {
            assert!(copies.len() <= RX_BATCH);
            self.batches += 1;
            for (&(gref, frame), done) in copies.iter().zip(done.iter_mut()) {
                *done = !self.bad.contains(&gref);
                if *done {
                    let page = self
                        .pages
                        .entry(gref)
                        .or_insert_with(|| alloc::vec![0; 4096]);
                    page[..frame.len()].copy_from_slice(frame);
                }
            }
        }
    }

    struct Rig<'p> {
        vif: Vif<&'p LocalPage>,
        tx: FrontRing<TxRequest, TxResponse, &'p LocalPage>,
        rx: FrontRing<RxRequest, RxResponse, &'p LocalPage>,
    }

    fn rig<'p>(tx_page: &'p LocalPage, rx_page: &'p LocalPage) -> Rig<'p> {
        Sring::init(tx_page);
        Sring::init(rx_page);
        Rig {
            vif: Vif::new(
                BackRing::new(tx_page).unwrap(),
                BackRing::new(rx_page).unwrap(),
            ),
            tx: FrontRing::new(tx_page).unwrap(),
            rx: FrontRing::new(rx_page).unwrap(),
        }
    }

    /// An Ethernet frame of `len` bytes from `00:16:3e:00:00:01` with a recognisable body.
    fn frame(len: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 1]);
        f
    }

    fn send(rig: &mut Rig<'_>, slots: &[TxRequest]) {
        for slot in slots {
            rig.tx.produce_request(slot).unwrap();
        }
        let _ = rig.tx.push_requests();
    }

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

    #[test]
    fn a_frame_in_two_pieces_is_copied_out_once_and_answered() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let f = frame(1000);
        let mut pages = Pages::default();
        let mut first = alloc::vec![0u8; 4096];
        first[4000..4096].copy_from_slice(&f[..96]);
        let mut second = alloc::vec![0u8; 4096];
        second[..904].copy_from_slice(&f[96..]);
        pages.pages.insert(5, first);
        pages.pages.insert(6, second);
        send(
            &mut rig,
            &[slot(5, 4000, 1000, TXF_MORE_DATA, 1), slot(6, 0, 904, 0, 2)],
        );
        let mut out = Vec::new();
        rig.vif.take_tx(&mut pages, &mut out).unwrap();
        assert_eq!(out, [f]);
        let responses: Vec<TxResponse> =
            core::iter::from_fn(|| rig.tx.next_response().unwrap()).collect();
        assert_eq!(
            responses,
            [
                TxResponse {
                    id: 1,
                    status: RSP_OKAY
                },
                TxResponse {
                    id: 2,
                    status: RSP_OKAY
                }
            ]
        );
        let c = rig.vif.counters();
        assert_eq!((c.tx_frames, c.tx_bytes, c.grant_copies), (1, 1000, 2));
    }

    /// A netback killed with half a frame taken: the new instance resumes both rings where
    /// the old one left them, takes the half frame again, and every slot is answered once.
    #[test]
    fn a_resumed_vif_takes_again_what_its_dead_instance_left_unanswered() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        Sring::init(&tp);
        Sring::init(&rp);
        let mut tx_front: FrontRing<TxRequest, TxResponse, _> = FrontRing::new(&tp).unwrap();
        let mut vif = Vif::new(
            BackRing::journaled(&tp).unwrap(),
            BackRing::journaled(&rp).unwrap(),
        );
        let (a, b) = (frame(100), frame(1000));
        let mut pages = Pages::default();
        let mut page_a = alloc::vec![0u8; 4096];
        page_a[..100].copy_from_slice(&a);
        let mut page_b1 = alloc::vec![0u8; 4096];
        page_b1[..500].copy_from_slice(&b[..500]);
        let mut page_b2 = alloc::vec![0u8; 4096];
        page_b2[..500].copy_from_slice(&b[500..]);
        pages.pages.insert(1, page_a);
        pages.pages.insert(2, page_b1);
        pages.pages.insert(3, page_b2);
        for request in [slot(1, 0, 100, 0, 10), slot(2, 0, 1000, TXF_MORE_DATA, 11)] {
            tx_front.produce_request(&request).unwrap();
        }
        let _ = tx_front.push_requests();
        let mut out = Vec::new();
        vif.take_tx(&mut pages, &mut out).unwrap();
        assert_eq!(out, [a.clone()]);
        drop(vif);
        // The rest of the second frame arrives while no instance serves the ring.
        tx_front.produce_request(&slot(3, 0, 500, 0, 12)).unwrap();
        let _ = tx_front.push_requests();
        let (tx, _) = BackRing::resume(&tp).unwrap();
        let (rx, _) = BackRing::resume(&rp).unwrap();
        let mut vif = Vif::new(tx, rx);
        let mut out = Vec::new();
        vif.take_tx(&mut pages, &mut out).unwrap();
        assert_eq!(out, [b]);
        let ids: Vec<u16> = core::iter::from_fn(|| tx_front.next_response().unwrap())
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [10, 11, 12], "each slot answered once, in order");
    }

    #[test]
    fn half_a_frame_waits_for_the_rest() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let f = frame(100);
        let mut pages = Pages::default();
        let mut page = alloc::vec![0u8; 4096];
        page[..100].copy_from_slice(&f);
        pages.pages.insert(1, page);
        send(&mut rig, &[slot(1, 0, 100, TXF_MORE_DATA, 0)]);
        let mut out = Vec::new();
        rig.vif.take_tx(&mut pages, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(rig.tx.next_response().unwrap(), None);
        send(&mut rig, &[slot(1, 100, 0, 0, 1)]);
        rig.vif.take_tx(&mut pages, &mut out).unwrap();
        assert_eq!(out, [f]);
    }

    #[test]
    fn blank_checksums_are_completed_and_bad_grants_drop_only_their_frame() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        // An IPv4 UDP frame with a blank checksum.
        let mut udp = frame(14 + 28);
        udp[12..14].copy_from_slice(&[0x08, 0x00]);
        udp[14..24].copy_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17]);
        udp[38..40].copy_from_slice(&[0, 8 + 20]);
        udp[40..42].copy_from_slice(&[0, 0]);
        let mut pages = Pages::default();
        let mut page = alloc::vec![0u8; 4096];
        page[..udp.len()].copy_from_slice(&udp);
        pages.pages.insert(1, page);
        pages.bad.push(9);
        send(
            &mut rig,
            &[
                slot(9, 0, 60, 0, 0),
                slot(1, 0, udp.len() as u16, TXF_CSUM_BLANK, 1),
            ],
        );
        let mut out = Vec::new();
        rig.vif.take_tx(&mut pages, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(crate::csum::verify(&out[0]), Some(true));
        assert_ne!(out[0], udp);
        let statuses: Vec<i16> = core::iter::from_fn(|| rig.tx.next_response().unwrap())
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [RSP_ERROR, RSP_OKAY]);
        assert_eq!(rig.vif.counters().tx_copy_errors, 1);
    }

    #[test]
    fn a_piece_crossing_its_page_cuts_the_vif_off() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        send(&mut rig, &[slot(1, 4000, 200, 0, 0)]);
        let mut out = Vec::new();
        let result = rig.vif.take_tx(&mut Pages::default(), &mut out);
        assert!(matches!(
            result,
            Err(Cutoff::Frame(Fatal::CrossesPage { .. }))
        ));
    }

    #[test]
    fn rx_frames_wait_for_posted_pages_and_land_at_offset_zero() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let mut pages = Pages::default();
        let f = frame(60);
        rig.vif.queue_rx(&f);
        assert!(!rig.vif.deliver_rx(&mut pages).unwrap());
        assert_eq!(rig.vif.queued_rx(), 1);
        rig.rx
            .produce_request(&RxRequest { id: 3, gref: 40 })
            .unwrap();
        rig.rx
            .produce_request(&RxRequest { id: 4, gref: 41 })
            .unwrap();
        let _ = rig.rx.push_requests();
        rig.vif.deliver_rx(&mut pages).unwrap();
        let response = rig.rx.next_response().unwrap().unwrap();
        assert_eq!(
            response,
            RxResponse {
                id: 3,
                offset: 0,
                flags: 0,
                status: 60
            }
        );
        assert_eq!(&pages.pages[&40][..60], &f[..]);
        // The second page stays posted for the next frame.
        assert_eq!(rig.rx.next_response().unwrap(), None);
        for _ in 0..RX_QUEUE_FRAMES + 5 {
            rig.vif.queue_rx(&f);
        }
        assert_eq!(rig.vif.queued_rx(), RX_QUEUE_FRAMES);
        assert_eq!(rig.vif.counters().rx_dropped, 5);
    }

    #[test]
    fn rx_frames_go_in_batches_and_each_answers_its_request() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let mut pages = Pages::default();
        pages.bad.push(1005);
        let count = RX_BATCH + 8;
        for n in 0..count {
            rig.vif.queue_rx(&frame(60 + n));
            let id = n as u16;
            rig.rx
                .produce_request(&RxRequest {
                    id,
                    gref: 1000 + id as u32,
                })
                .unwrap();
        }
        let _ = rig.rx.push_requests();
        rig.vif.deliver_rx(&mut pages).unwrap();
        assert_eq!(pages.batches, 2);
        for n in 0..count {
            let response = rig.rx.next_response().unwrap().unwrap();
            assert_eq!(response.id, n as u16);
            if n == 5 {
                assert_eq!(response.status, RSP_ERROR);
            } else {
                assert_eq!(response.status, (60 + n) as i16);
                assert_eq!(
                    &pages.pages[&(1000 + n as u32)][..60 + n],
                    &frame(60 + n)[..]
                );
            }
        }
        assert_eq!(rig.vif.queued_rx(), 0);
        let counters = rig.vif.counters();
        assert_eq!(
            (counters.rx_frames, counters.rx_dropped),
            (count as u64 - 1, 1)
        );
    }

    #[test]
    fn an_impossible_rx_producer_cuts_the_vif_off() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        rp.store_u32(0, 100_000); // req_prod far past the ring
        rig.vif.queue_rx(&frame(60));
        assert!(matches!(
            rig.vif.deliver_rx(&mut Pages::default()),
            Err(Cutoff::RxRing(_))
        ));
    }

    /// One turn of the back-end on which the vif's event channel fired.
    fn notified_turn(rig: &mut Rig<'_>, pages: &mut Pages) -> Result<(), Cutoff> {
        let mut out = Vec::new();
        rig.vif.take_tx(pages, &mut out)?;
        rig.vif.notified()?;
        rig.vif.deliver_rx(pages)?;
        Ok(())
    }

    #[test]
    fn endless_notifications_with_nothing_new_are_a_storm() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let mut pages = Pages::default();
        let mut page = alloc::vec![0u8; 4096];
        page[..60].copy_from_slice(&frame(60));
        pages.pages.insert(1, page);
        for _ in 0..STORM_EMPTY_EVENTS - 1 {
            notified_turn(&mut rig, &mut pages).unwrap();
        }
        // A tx frame is work: the count starts over.
        send(&mut rig, &[slot(1, 0, 60, 0, 0)]);
        notified_turn(&mut rig, &mut pages).unwrap();
        // So is an rx buffer taken for a queued frame, though on the turn after.
        rig.vif.queue_rx(&frame(60));
        rig.rx
            .produce_request(&RxRequest { id: 0, gref: 2 })
            .unwrap();
        let _ = rig.rx.push_requests();
        notified_turn(&mut rig, &mut pages).unwrap();
        assert_eq!(rig.vif.counters().rx_frames, 1);
        for _ in 0..STORM_EMPTY_EVENTS {
            notified_turn(&mut rig, &mut pages).unwrap();
        }
        let storm = notified_turn(&mut rig, &mut pages);
        assert_eq!(storm, Err(Cutoff::EventStorm(STORM_EMPTY_EVENTS)));
        assert!(alloc::format!("{}", storm.unwrap_err()).starts_with("event storm: "));
    }

    #[test]
    fn slots_taken_on_a_turn_without_an_event_count_for_the_next_notification() {
        let (tp, rp) = (LocalPage::new(), LocalPage::new());
        let mut rig = rig(&tp, &rp);
        let mut pages = Pages::default();
        pages.pages.insert(1, alloc::vec![0u8; 4096]);
        for _ in 0..STORM_EMPTY_EVENTS - 1 {
            rig.vif.notified().unwrap();
        }
        // Taken on a turn woken by something else; the front-end's event arrives after.
        send(&mut rig, &[slot(1, 0, 60, 0, 0)]);
        rig.vif.take_tx(&mut pages, &mut Vec::new()).unwrap();
        for _ in 0..STORM_EMPTY_EVENTS {
            rig.vif.notified().unwrap();
        }
        assert!(rig.vif.notified().is_err());
    }
}
