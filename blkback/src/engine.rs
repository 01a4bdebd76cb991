//! [`Queue`]: one blkif ring of one vbd, served over a [`Platform`], with several requests
//! on the device at once.
//!
//! # Requests in flight
//!
//! Each request that moves data gets a bounce buffer of its own, a *slot*
//! ([`Platform::reserve`], [`crate::slots`]). A write's data is copied into its slot and the
//! device is started on it ([`Platform::start`]); a read starts the device at once. The
//! queue does not wait: the platform tells it when the device is done
//! ([`Queue::complete`], in whatever order the device finishes), a read's data is then
//! copied out of its slot, and the request is answered with its own id.
//!
//! # One pass ([`Queue::progress`])
//!
//! 1. Start the request that was waiting, if it can start now (a slot is free, no barrier
//!    is in the way).
//! 2. Otherwise take the next published request out of the ring (each slot copied once,
//!    [`xen_ring::BackRing::next_request`]): its id must not be that of a request still
//!    outstanding ([`Cutoff::DuplicateId`]); validate it ([`crate::request::parse`], then
//!    for an indirect request fetch its segment pages and
//!    [`crate::request::IndirectHeader::complete`]); a refused request is answered at once,
//!    a valid one starts or waits. At most one request waits: while it does, nothing more is
//!    taken (the front-end's ring holds the rest).
//! 3. With the ring empty, arm `req_event` and look again
//!    ([`xen_ring::BackRing::final_check_for_requests`]), also while requests are on the
//!    device, so a request published meanwhile starts at once.
//! 4. Push the responses produced since the last push, all at once, when there are at
//!    least as many of them as requests still on the device (or nothing is on it); notify
//!    the front-end only if its `rsp_event` asks.
//!
//! [`Queue::service`] is a pass for the front-end's notification (it counts rounds and
//! empty rounds, see the cut-off policy); the platform runs [`Queue::progress`] after
//! delivering completions.
//!
//! # Flushes and barriers
//!
//! A flush (`FLUSH_DISKCACHE` or `WRITE_BARRIER`) starts only once every request taken
//! before it has completed, so the device flush covers every earlier write; and nothing
//! taken after it starts before it has completed, so no later write is done (or reported
//! done) before it. A flush with data writes the data first, then flushes.
//!
//! Data moves by grant copy between the front-end's pages and the slots, which the device
//! reads and writes: nothing of the front-end's is mapped on the data path, so a persistent
//! grant costs nothing to reuse and no request maps or unmaps anything.
//!
//! # Cut-off policy
//!
//! A correct front-end never publishes an impossible ring index, a malformed request
//! ([`crate::request::Reason::is_hostile`]), a grant it did not give us, an id that is
//! still outstanding, or thousands of notifications with nothing in the ring. Each of these
//! ends service of this queue with a [`Cutoff`]; the caller closes the vbd and logs the
//! reason. Requests taken before the cut-off are not answered (the ring is no longer used);
//! the caller keeps the slots of those still on the device until the device gives them
//! back ([`crate::slots::Pool::disown`]). Ordinary refusals (a write to a read-only vbd, a
//! secure discard) and device errors are answered with an error status and service goes
//! on.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xen_ring::{RingError, SharedPage};

use crate::request::{
    self, DataSegment, IndirectHeader, IndirectPages, Kind, Limits, Parsed, Rejection, Request,
};
use crate::slots::Slot;
use crate::vbd::Vbd;
use crate::wire::{
    BlkBackRing, RawRequest, Response, MAX_INDIRECT_PAGES, PAGE_BYTES, STATUS_ERROR, STATUS_OKAY,
};

/// Service rounds in a row that found nothing in the ring before the queue is cut off as an
/// event storm. A correct front-end notifies only when `req_event` asks it to, so a round
/// normally finds at least one request; an empty round happens when the requests of an
/// event were already taken by the time the event was seen (by an earlier round, or by a
/// pass after a completion), which is at most one empty round per request taken. Rounds
/// are counted per wake-up (events that arrive while the back-end is busy coalesce), so the
/// limit must be reachable at the back-end's own pace: a storm under TCG gives it a few
/// hundred wake-ups a second.
pub const STORM_EMPTY_ROUNDS: u32 = 256;

/// Which way a grant copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Front-end page to slot (a write's data).
    FromGuest,
    /// Slot to front-end page (a read's data).
    ToGuest,
}

/// A grant the microvisor refused to copy (not granted to us, wrong domain, read-only for a
/// read, out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyError {
    /// The grant reference.
    pub gref: u32,
    /// The `GNTST_*` status.
    pub status: i16,
}

/// The device failed a request (the response says `BLKIF_RSP_ERROR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError(pub String);

/// What the device is started on: a slot's first `bytes` bytes and the disk from device
/// sector `sector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Disk to slot.
    Read {
        /// The first device sector.
        sector: u64,
        /// Whole sectors.
        bytes: usize,
    },
    /// Slot to disk.
    Write {
        /// The first device sector.
        sector: u64,
        /// Whole sectors.
        bytes: usize,
    },
}

/// One request's data in a grant copy: its slot and its segments, segment `i` at slot
/// offset `segments[..i]`'s total length.
#[derive(Debug, Clone, Copy)]
pub struct SlotCopy<'a> {
    /// The slot.
    pub slot: Slot,
    /// The front-end's pages.
    pub segments: &'a [DataSegment],
}

/// What a queue needs from the machine: slots, grant copies to and from them, and the disk.
///
/// The platform serves one queue at a time; every slot it hands out belongs to that queue
/// until the queue releases it.
pub trait Platform {
    /// Reserves a free slot that holds at least `bytes` bytes, or `None` while every such
    /// slot is busy (or the device has no room for another request): the request waits for
    /// a completion. A slot that holds the largest request (`Limits::max_request_bytes`)
    /// must exist, or such a request would wait forever.
    fn reserve(&mut self, bytes: usize) -> Option<Slot>;

    /// Frees a reserved slot the device is not working on.
    fn release(&mut self, slot: Slot);

    /// Copies each request's segments between the front-end's pages and its slot (the
    /// platform may let small requests share hypercalls).
    ///
    /// # Errors
    ///
    /// The index in `copies` of a request whose grant could not be copied, and that grant.
    fn copy(
        &mut self,
        copies: &[SlotCopy<'_>],
        direction: Direction,
    ) -> Result<(), (usize, CopyError)>;

    /// Copies the first `bytes[i]` bytes of each indirect page `grefs[i]` into `pages[i]`.
    ///
    /// # Errors
    ///
    /// The first grant that could not be copied.
    fn fetch_indirect(
        &mut self,
        grefs: &[u32],
        bytes: &[usize],
        pages: &mut IndirectPages,
    ) -> Result<(), CopyError>;

    /// Starts the device on `io` with `slot`'s buffer and returns without waiting; once the
    /// device is done, the platform hands the outcome to [`Queue::complete`].
    ///
    /// # Errors
    ///
    /// The device could not be started (the slot stays reserved, nothing is in flight).
    fn start(&mut self, slot: Slot, io: Io) -> Result<(), DeviceError>;

    /// Makes every completed write durable; returns when the device is done.
    ///
    /// # Errors
    ///
    /// The device failed.
    fn flush(&mut self) -> Result<(), DeviceError>;

    /// Drops the contents of `sectors` sectors from device sector `sector` (reads of them
    /// afterwards may return anything, zeroes included), with `slot` as scratch; returns
    /// when the device is done.
    ///
    /// # Errors
    ///
    /// The device failed.
    fn discard(&mut self, slot: Slot, sector: u64, sectors: u64) -> Result<(), DeviceError>;
}

/// Why a queue stopped being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cutoff {
    /// An impossible ring index.
    Ring(RingError),
    /// A request no correct front-end sends.
    Malformed(Rejection),
    /// A grant the microvisor would not copy.
    BadGrant {
        /// The request's id.
        id: u64,
        /// What the copy said.
        error: CopyError,
    },
    /// A request taken with the id of one still outstanding.
    DuplicateId(u64),
    /// [`STORM_EMPTY_ROUNDS`] notifications in a row with nothing in the ring.
    EventStorm(u32),
    /// The response ring had no room for the response to a request that was taken (cannot
    /// happen while the ring's indices are the back-end's own: a broken ring).
    NoRoomForResponse(u64),
}

impl fmt::Display for Cutoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ring(e) => write!(f, "ring protocol: {e}"),
            Self::Malformed(rejection) => write!(f, "malformed {rejection}"),
            Self::BadGrant { id, error } => write!(
                f,
                "request {id:#x}: grant {} refused (status {})",
                error.gref, error.status
            ),
            Self::DuplicateId(id) => write!(f, "request id {id:#x} reused while outstanding"),
            Self::EventStorm(rounds) => {
                write!(f, "event storm: {rounds} notifications with an empty ring")
            }
            Self::NoRoomForResponse(id) => {
                write!(f, "no room in the ring for the response to request {id:#x}")
            }
        }
    }
}

/// What a queue has done, for the stats line and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Service rounds (one per notification or poll).
    pub rounds: u64,
    /// Rounds that found nothing.
    pub empty_rounds: u64,
    /// Requests taken from the ring.
    pub requests: u64,
    /// Of them: reads, writes, flushes (barriers included), discards, indirect.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Discards.
    pub discards: u64,
    /// Indirect requests.
    pub indirect: u64,
    /// Requests answered with an error status (refusals and device errors).
    pub errors: u64,
    /// Data bytes copied from the front-end (writes).
    pub bytes_in: u64,
    /// Data bytes copied to the front-end (reads).
    pub bytes_out: u64,
    /// Grant copy operations (data segments and indirect pages).
    pub grant_copies: u64,
    /// Times the front-end was notified of responses.
    pub notifications: u64,
    /// Device completions handed to the queue.
    pub completions: u64,
    /// The most requests this queue had on the device at once.
    pub most_in_flight: u64,
}

impl core::ops::AddAssign for Counters {
    fn add_assign(&mut self, more: Self) {
        self.rounds += more.rounds;
        self.empty_rounds += more.empty_rounds;
        self.requests += more.requests;
        self.reads += more.reads;
        self.writes += more.writes;
        self.flushes += more.flushes;
        self.discards += more.discards;
        self.indirect += more.indirect;
        self.errors += more.errors;
        self.bytes_in += more.bytes_in;
        self.bytes_out += more.bytes_out;
        self.grant_copies += more.grant_copies;
        self.notifications += more.notifications;
        self.completions += more.completions;
        self.most_in_flight = self.most_in_flight.max(more.most_in_flight);
    }
}

/// The outcome of a pass that did not cut the queue off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Responses published in this pass.
    pub answered: u32,
    /// Whether the front-end must be notified (its event channel signalled).
    pub notify: bool,
}

/// What the device is doing for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading into its slot; the data goes to the front-end once done.
    Read,
    /// Writing its slot.
    Write,
    /// Writing a flush's data; the device flush follows.
    FlushData,
}

/// A request on the device.
#[derive(Debug)]
struct InFlight {
    /// The ring index it was taken at: its response goes there.
    index: u32,
    slot: Slot,
    stage: Stage,
    request: Request,
}

/// What became of an attempt to start a request.
enum Start {
    /// On the device.
    Started,
    /// Done (or refused) without the device working in the background: this response.
    Answered(Response),
    /// Not now: it waits for a completion.
    Blocked(Request),
}

/// One ring of a vbd.
pub struct Queue<M> {
    ring: BlkBackRing<M>,
    vbd: Vbd,
    limits: Limits,
    counters: Counters,
    empty_streak: u32,
    indirect_pages: Box<IndirectPages>,
    /// Taken and validated, not yet started (no slot free, or a barrier in the way).
    waiting: Option<(u32, Request)>,
    /// Responses by ring index from the next one to produce on: `None` for a request taken
    /// and not answered yet. Responses are produced in request order (response `i` answers
    /// request `i`), so that a restarted instance can resume the ring exactly
    /// ([`xen_ring::BackRing::resume`]).
    ready: VecDeque<Option<Response>>,
    /// On the device.
    in_flight: Vec<InFlight>,
    /// Responses produced and not yet pushed.
    unpushed: u32,
}

impl<M: SharedPage> Queue<M> {
    /// A queue over `ring` serving `vbd` under `limits`.
    pub fn new(ring: BlkBackRing<M>, vbd: Vbd, limits: Limits) -> Self {
        Self {
            ring,
            vbd,
            limits,
            counters: Counters::default(),
            empty_streak: 0,
            indirect_pages: Box::new([[0u8; PAGE_BYTES]; MAX_INDIRECT_PAGES]),
            waiting: None,
            ready: VecDeque::new(),
            in_flight: Vec::new(),
            unpushed: 0,
        }
    }

    /// What it has done so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The vbd it serves.
    pub fn vbd(&self) -> &Vbd {
        &self.vbd
    }

    /// How many of its requests are on the device.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a request it took waits to be started (for a slot, or behind a flush).
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether the device is working on `slot` for this queue.
    pub fn owns(&self, slot: Slot) -> bool {
        self.in_flight.iter().any(|f| f.slot == slot)
    }

    /// Gives the ring back (to unmap its pages). Requests still on the device are forgotten:
    /// the caller keeps their slots until the device gives them back.
    pub fn into_ring(self) -> BlkBackRing<M> {
        self.ring
    }

    /// A pass for a notification from the front-end (see the module documentation): takes
    /// and starts what the front-end published, pushes the responses. Counts a round, and
    /// an empty one if it found nothing to take.
    ///
    /// # Errors
    ///
    /// A [`Cutoff`]: stop serving this queue.
    pub fn service<P: Platform>(&mut self, platform: &mut P) -> Result<Round, Cutoff> {
        self.counters.rounds += 1;
        let taken = self.counters.requests;
        let round = self.progress(platform)?;
        // Nothing taken, and not because a request is waiting for room (the ring may hold
        // more behind it): an empty round.
        if self.counters.requests == taken && self.waiting.is_none() {
            self.counters.empty_rounds += 1;
            self.empty_streak += 1;
            if self.empty_streak >= STORM_EMPTY_ROUNDS {
                return Err(Cutoff::EventStorm(self.empty_streak));
            }
        }
        Ok(round)
    }

    /// One pass (see the module documentation): starts what can start, takes what the
    /// front-end published while there is room, pushes the responses.
    ///
    /// # Errors
    ///
    /// A [`Cutoff`]: stop serving this queue.
    pub fn progress<P: Platform>(&mut self, platform: &mut P) -> Result<Round, Cutoff> {
        loop {
            if let Some((index, request)) = self.waiting.take() {
                match self.try_start(index, request, platform)? {
                    Start::Blocked(request) => {
                        self.waiting = Some((index, request));
                        break;
                    }
                    Start::Started => {}
                    Start::Answered(response) => self.answer(index, &response)?,
                }
                continue;
            }
            let index = self.ring.req_cons();
            let Some(raw) = self.ring.next_request().map_err(Cutoff::Ring)? else {
                // Asked even with requests on the device: a front-end that publishes the
                // pieces of one I/O one after the other wants them all started at once, not
                // each after the device finished an earlier one.
                if self.ring.final_check_for_requests().map_err(Cutoff::Ring)? {
                    continue;
                }
                break;
            };
            self.counters.requests += 1;
            self.empty_streak = 0;
            if self.is_outstanding(raw.id()) {
                return Err(Cutoff::DuplicateId(raw.id()));
            }
            self.ready.push_back(None);
            match self.validate(&raw, platform)? {
                Ok(request) => {
                    self.count_kind(&request);
                    self.waiting = Some((index, request));
                }
                Err(response) => self.answer(index, &response)?,
            }
        }
        let mut round = Round::default();
        // Publish once at least as many responses wait as requests are still on the device
        // (or none is): a front-end waiting for several requests at once (Linux cuts a large
        // I/O into several) is woken for most of them together, not for each; the device
        // finishes the rest without anything from the front-end, so nothing waits forever.
        if self.unpushed > 0 && self.unpushed as usize >= self.in_flight.len() {
            round.answered = self.unpushed;
            self.unpushed = 0;
            if self.ring.push_responses() {
                round.notify = true;
                self.counters.notifications += 1;
            }
        }
        Ok(round)
    }

    /// The device is done with these slots of this queue (the outcome of each): copies the
    /// reads' data to the front-end (in one batch), finishes flushes, produces the
    /// responses (published by the next [`Queue::progress`]) and frees the slots. Slots
    /// this queue has nothing on are ignored.
    ///
    /// # Errors
    ///
    /// A [`Cutoff`]: a read's grant was refused.
    pub fn complete<P: Platform>(
        &mut self,
        done: &[(Slot, Result<(), DeviceError>)],
        platform: &mut P,
    ) -> Result<(), Cutoff> {
        let mut finished: Vec<(InFlight, bool)> = Vec::with_capacity(done.len());
        for (slot, result) in done {
            if let Some(index) = self.in_flight.iter().position(|f| f.slot == *slot) {
                finished.push((self.in_flight.swap_remove(index), result.is_ok()));
            }
        }
        self.counters.completions += finished.len() as u64;
        let reads: Vec<&InFlight> = finished
            .iter()
            .filter(|(f, ok)| *ok && f.stage == Stage::Read)
            .map(|(f, _)| f)
            .collect();
        if !reads.is_empty() {
            let copies: Vec<SlotCopy<'_>> = reads
                .iter()
                .map(|f| SlotCopy {
                    slot: f.slot,
                    segments: &f.request.segments,
                })
                .collect();
            for read in &reads {
                self.counters.grant_copies += read.request.segments.len() as u64;
            }
            platform
                .copy(&copies, Direction::ToGuest)
                .map_err(|(index, error)| Cutoff::BadGrant {
                    id: reads.get(index).map_or(0, |f| f.request.id),
                    error,
                })?;
            for read in &reads {
                self.counters.bytes_out += read.request.data_bytes() as u64;
            }
        }
        for (flight, ok) in &finished {
            let status = match (flight.stage, ok) {
                (_, false) => STATUS_ERROR,
                (Stage::FlushData, true) => match platform.flush() {
                    Ok(()) => STATUS_OKAY,
                    Err(DeviceError(_)) => STATUS_ERROR,
                },
                (Stage::Read | Stage::Write, true) => STATUS_OKAY,
            };
            platform.release(flight.slot);
            self.answer(flight.index, &flight.request.response(status))?;
        }
        Ok(())
    }

    fn is_outstanding(&self, id: u64) -> bool {
        self.waiting.as_ref().is_some_and(|(_, r)| r.id == id)
            || self.ready.iter().flatten().any(|r| r.id == id)
            || self.in_flight.iter().any(|f| f.request.id == id)
    }

    fn count_kind(&mut self, request: &Request) {
        let counter = match request.kind {
            Kind::Read => &mut self.counters.reads,
            Kind::Write => &mut self.counters.writes,
            Kind::Flush { .. } => &mut self.counters.flushes,
            Kind::Discard { .. } => &mut self.counters.discards,
        };
        *counter += 1;
    }

    /// Produces a response (published at the end of the pass).
    fn answer(&mut self, index: u32, response: &Response) -> Result<(), Cutoff> {
        if response.status != STATUS_OKAY {
            self.counters.errors += 1;
        }
        // Cannot fail: every request taken has its place and is answered once.
        let place = index.wrapping_sub(self.ring.rsp_prod_pvt()) as usize;
        match self.ready.get_mut(place) {
            Some(entry @ None) => *entry = Some(*response),
            _ => return Err(Cutoff::NoRoomForResponse(response.id)),
        }
        while let Some(Some(next)) = self.ready.front().copied() {
            if self.ring.produce_response(&next).is_err() {
                return Err(Cutoff::NoRoomForResponse(next.id));
            }
            self.ready.pop_front();
            self.unpushed += 1;
        }
        Ok(())
    }

    /// For a back-end that was given up on (a restart loop): answers every request in the
    /// ring with `BLKIF_RSP_ERROR`, carrying out none (nothing of a request but its id and
    /// operation is looked at), so the front-end's I/O fails instead of waiting forever.
    /// Only for a queue that has taken nothing otherwise.
    ///
    /// # Errors
    ///
    /// [`Cutoff::Ring`] for an impossible ring index.
    pub fn fail_all(&mut self) -> Result<Round, Cutoff> {
        let mut round = Round::default();
        loop {
            while let Some(raw) = self.ring.next_request().map_err(Cutoff::Ring)? {
                self.counters.requests += 1;
                self.counters.errors += 1;
                // Cannot fail: the request was just taken, and nothing else is outstanding.
                let _ = self.ring.produce_response(&raw.response(STATUS_ERROR));
                round.answered += 1;
            }
            if !self.ring.final_check_for_requests().map_err(Cutoff::Ring)? {
                break;
            }
        }
        if round.answered > 0 && self.ring.push_responses() {
            round.notify = true;
            self.counters.notifications += 1;
        }
        Ok(round)
    }

    /// Validates one request: the request, or the response refusing it.
    fn validate<P: Platform>(
        &mut self,
        raw: &RawRequest,
        platform: &mut P,
    ) -> Result<Result<Request, Response>, Cutoff> {
        let parsed = match request::parse(raw, &self.limits, &self.vbd) {
            Ok(Parsed::Ready(request)) => Ok(request),
            Ok(Parsed::Indirect(header)) => self.fetch_indirect(&header, platform)?,
            Err(rejection) => Err(rejection),
        };
        match parsed {
            Ok(request) => Ok(Ok(request)),
            Err(rejection) => refuse(rejection).map(Err),
        }
    }

    /// Copies an indirect request's segment pages out of the front-end (once) and checks
    /// them.
    fn fetch_indirect<P: Platform>(
        &mut self,
        header: &IndirectHeader,
        platform: &mut P,
    ) -> Result<Result<Request, Rejection>, Cutoff> {
        self.counters.indirect += 1;
        let mut bytes = [0usize; MAX_INDIRECT_PAGES];
        for (page, count) in bytes.iter_mut().enumerate().take(header.pages()) {
            *count = header.page_bytes(page);
        }
        self.counters.grant_copies += header.pages() as u64;
        platform
            .fetch_indirect(
                header.page_grefs(),
                &bytes[..header.pages()],
                &mut self.indirect_pages,
            )
            .map_err(|error| Cutoff::BadGrant {
                id: header.id(),
                error,
            })?;
        Ok(header.complete(&self.indirect_pages, &self.vbd))
    }

    /// Whether a flush is on the device: nothing starts until it is done.
    fn barrier_in_flight(&self) -> bool {
        self.in_flight.iter().any(|f| f.stage == Stage::FlushData)
    }

    /// Starts a validated request if it can start now (see the module documentation).
    fn try_start<P: Platform>(
        &mut self,
        index: u32,
        request: Request,
        platform: &mut P,
    ) -> Result<Start, Cutoff> {
        if self.barrier_in_flight() {
            return Ok(Start::Blocked(request));
        }
        let bytes = request.data_bytes();
        let (stage, io) = match request.kind {
            Kind::Read => (
                Stage::Read,
                Io::Read {
                    sector: request.device_sector,
                    bytes,
                },
            ),
            Kind::Write => (
                Stage::Write,
                Io::Write {
                    sector: request.device_sector,
                    bytes,
                },
            ),
            Kind::Flush { .. } => {
                // Every request taken before it must be done first.
                if !self.in_flight.is_empty() {
                    return Ok(Start::Blocked(request));
                }
                if bytes == 0 {
                    let status = match platform.flush() {
                        Ok(()) => STATUS_OKAY,
                        Err(DeviceError(_)) => STATUS_ERROR,
                    };
                    return Ok(Start::Answered(request.response(status)));
                }
                (
                    Stage::FlushData,
                    Io::Write {
                        sector: request.device_sector,
                        bytes,
                    },
                )
            }
            Kind::Discard { sectors } => {
                if sectors == 0 {
                    return Ok(Start::Answered(request.response(STATUS_OKAY)));
                }
                let Some(slot) = platform.reserve(self.limits.max_request_bytes()) else {
                    return Ok(Start::Blocked(request));
                };
                let result = platform.discard(slot, request.device_sector, sectors);
                platform.release(slot);
                let status = if result.is_ok() {
                    STATUS_OKAY
                } else {
                    STATUS_ERROR
                };
                return Ok(Start::Answered(request.response(status)));
            }
        };
        let Some(slot) = platform.reserve(bytes) else {
            return Ok(Start::Blocked(request));
        };
        if stage != Stage::Read {
            self.counters.grant_copies += request.segments.len() as u64;
            let copy = [SlotCopy {
                slot,
                segments: &request.segments,
            }];
            if let Err((_, error)) = platform.copy(&copy, Direction::FromGuest) {
                platform.release(slot);
                return Err(Cutoff::BadGrant {
                    id: request.id,
                    error,
                });
            }
            self.counters.bytes_in += bytes as u64;
        }
        if platform.start(slot, io).is_err() {
            platform.release(slot);
            return Ok(Start::Answered(request.response(STATUS_ERROR)));
        }
        self.in_flight.push(InFlight {
            index,
            slot,
            stage,
            request,
        });
        self.counters.most_in_flight = self
            .counters
            .most_in_flight
            .max(self.in_flight.len() as u64);
        Ok(Start::Started)
    }
}

/// A refused request: hostile ones cut off, the others are answered.
fn refuse(rejection: Rejection) -> Result<Response, Cutoff> {
    if rejection.reason.is_hostile() {
        Err(Cutoff::Malformed(rejection))
    } else {
        Ok(rejection.response())
    }
}
