//! [`Queue`]: one blkif ring of one vbd, served over a [`Platform`].
//!
//! # One service round
//!
//! 1. Take every published request out of the ring (each slot copied once,
//!    [`xen_ring::BackRing::next_request`]); that is the batch.
//! 2. Two requests of the batch with the same id: the front-end reused an id that is still
//!    outstanding ([`Cutoff::DuplicateId`]).
//! 3. For each request, in order: validate it ([`crate::request::parse`], then for an
//!    indirect request fetch its segment pages and [`crate::request::IndirectHeader::complete`]),
//!    carry it out through the [`Platform`] on the bounce buffer, produce its response.
//! 4. Push the responses (notify if the front-end asked), arm `req_event` and look again
//!    ([`xen_ring::BackRing::final_check_for_requests`]).
//!
//! Data moves by grant copy between the front-end's pages and one bounce buffer that the
//! device reads and writes: nothing of the front-end's is mapped on the data path, so a
//! persistent grant costs nothing to reuse and no request maps or unmaps anything.
//!
//! # Cut-off policy
//!
//! A correct front-end never publishes an impossible ring index, a malformed request
//! ([`crate::request::Reason::is_hostile`]), a grant it did not give us, an id that is
//! still outstanding, or thousands of notifications with nothing in the ring. Each of these
//! ends service of this queue with a [`Cutoff`]; the caller closes the vbd and logs the
//! reason. Requests taken before the cut-off are not answered (the ring is no longer used).
//! Ordinary refusals (a write to a read-only vbd, a secure discard) and device errors are
//! answered with an error status and service goes on.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xen_ring::{RingError, SharedPage};

use crate::request::{
    self, DataSegment, IndirectHeader, IndirectPages, Kind, Limits, Parsed, Rejection, Request,
};
use crate::vbd::Vbd;
use crate::wire::{
    BlkBackRing, RawRequest, Response, MAX_INDIRECT_PAGES, PAGE_BYTES, STATUS_ERROR, STATUS_OKAY,
};

/// Service rounds in a row that found nothing in the ring before the queue is cut off as an
/// event storm. A correct front-end notifies only when `req_event` asks it to, so a round
/// normally finds at least one request; an empty round happens when the requests of an
/// event were already served by the time the event was seen, which is at most one empty
/// round per round with work. Rounds are counted per wake-up (events that arrive while
/// the back-end is busy coalesce), so the limit must be reachable at the back-end's own
/// pace: a storm under TCG gives it a few hundred wake-ups a second.
pub const STORM_EMPTY_ROUNDS: u32 = 256;

/// Which way a grant copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Front-end page to bounce buffer (a write's data).
    FromGuest,
    /// Bounce buffer to front-end page (a read's data).
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

/// What a queue needs from the machine: grant copies to and from one bounce buffer, and
/// the disk. Bounce offsets are bytes from the buffer's start; the buffer holds at least
/// [`Limits::max_request_bytes`].
pub trait Platform {
    /// Copies each segment between the front-end's page and the bounce buffer: segment `i`
    /// at bounce offset `segments[..i]`'s total length.
    ///
    /// # Errors
    ///
    /// The first grant that could not be copied.
    fn copy(&mut self, segments: &[DataSegment], direction: Direction) -> Result<(), CopyError>;

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

    /// Reads `bytes` bytes from device sector `sector` into the bounce buffer's start.
    ///
    /// # Errors
    ///
    /// The device failed.
    fn read(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError>;

    /// Writes the bounce buffer's first `bytes` bytes to device sector `sector`.
    ///
    /// # Errors
    ///
    /// The device failed.
    fn write(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError>;

    /// Makes every completed write durable.
    ///
    /// # Errors
    ///
    /// The device failed.
    fn flush(&mut self) -> Result<(), DeviceError>;

    /// Drops the contents of `sectors` sectors from device sector `sector` (reads of them
    /// afterwards may return anything, zeroes included).
    ///
    /// # Errors
    ///
    /// The device failed.
    fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), DeviceError>;
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
    /// Two requests taken together with the same id.
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
    }
}

/// The outcome of a round that did not cut the queue off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Requests answered in this round.
    pub answered: u32,
    /// Whether the front-end must be notified (its event channel signalled).
    pub notify: bool,
}

/// One ring of a vbd.
pub struct Queue<M> {
    ring: BlkBackRing<M>,
    vbd: Vbd,
    limits: Limits,
    counters: Counters,
    empty_streak: u32,
    indirect_pages: Box<IndirectPages>,
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

    /// Gives the ring back (to unmap its pages).
    pub fn into_ring(self) -> BlkBackRing<M> {
        self.ring
    }

    /// One round (see the module documentation): serves everything the front-end has
    /// published, until the ring is empty with `req_event` armed.
    ///
    /// # Errors
    ///
    /// A [`Cutoff`]: stop serving this queue.
    pub fn service<P: Platform>(&mut self, platform: &mut P) -> Result<Round, Cutoff> {
        self.counters.rounds += 1;
        let mut round = Round {
            answered: 0,
            notify: false,
        };
        loop {
            let mut batch = Vec::new();
            while let Some(raw) = self.ring.next_request().map_err(Cutoff::Ring)? {
                batch.push(raw);
            }
            if batch.is_empty() {
                if self.ring.final_check_for_requests().map_err(Cutoff::Ring)? {
                    continue;
                }
                break;
            }
            check_ids(&batch)?;
            self.counters.requests += batch.len() as u64;
            for raw in &batch {
                let response = self.carry_out(raw, platform)?;
                if response.status != STATUS_OKAY {
                    self.counters.errors += 1;
                }
                // Cannot fail: every request of the batch was taken and is answered once.
                if self.ring.produce_response(&response).is_err() {
                    return Err(Cutoff::NoRoomForResponse(response.id));
                }
                round.answered += 1;
            }
            if self.ring.push_responses() {
                round.notify = true;
            }
        }
        if round.notify {
            self.counters.notifications += 1;
        }
        if round.answered == 0 {
            self.counters.empty_rounds += 1;
            self.empty_streak += 1;
            if self.empty_streak >= STORM_EMPTY_ROUNDS {
                return Err(Cutoff::EventStorm(self.empty_streak));
            }
        } else {
            self.empty_streak = 0;
        }
        Ok(round)
    }

    /// Validates one request and carries it out; the response to produce.
    fn carry_out<P: Platform>(
        &mut self,
        raw: &RawRequest,
        platform: &mut P,
    ) -> Result<Response, Cutoff> {
        let request = match request::parse(raw, &self.limits, &self.vbd) {
            Ok(Parsed::Ready(request)) => request,
            Ok(Parsed::Indirect(header)) => match self.fetch_indirect(&header, platform)? {
                Ok(request) => request,
                Err(rejection) => return refuse(rejection),
            },
            Err(rejection) => return refuse(rejection),
        };
        let status = match self.execute(&request, platform)? {
            Ok(()) => STATUS_OKAY,
            Err(DeviceError(_)) => STATUS_ERROR,
        };
        Ok(request.response(status))
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

    /// Carries out a validated request: the outer error cuts off (a bad grant), the inner
    /// one is a device failure answered with an error.
    fn execute<P: Platform>(
        &mut self,
        request: &Request,
        platform: &mut P,
    ) -> Result<Result<(), DeviceError>, Cutoff> {
        let bad_grant = |error| Cutoff::BadGrant {
            id: request.id,
            error,
        };
        let bytes = request.data_bytes();
        self.counters.grant_copies += request.segments.len() as u64;
        match request.kind {
            Kind::Read => {
                self.counters.reads += 1;
                if let Err(e) = platform.read(request.device_sector, bytes) {
                    return Ok(Err(e));
                }
                platform
                    .copy(&request.segments, Direction::ToGuest)
                    .map_err(bad_grant)?;
                self.counters.bytes_out += bytes as u64;
                Ok(Ok(()))
            }
            Kind::Write => {
                self.counters.writes += 1;
                platform
                    .copy(&request.segments, Direction::FromGuest)
                    .map_err(bad_grant)?;
                self.counters.bytes_in += bytes as u64;
                Ok(platform.write(request.device_sector, bytes))
            }
            Kind::Flush { .. } => {
                // Every earlier request was completed before this one was started (requests
                // are carried out in ring order, one at a time), so one flush after the data
                // makes both it and everything before it durable.
                self.counters.flushes += 1;
                if bytes > 0 {
                    platform
                        .copy(&request.segments, Direction::FromGuest)
                        .map_err(bad_grant)?;
                    self.counters.bytes_in += bytes as u64;
                    if let Err(e) = platform.write(request.device_sector, bytes) {
                        return Ok(Err(e));
                    }
                }
                Ok(platform.flush())
            }
            Kind::Discard { sectors } => {
                self.counters.discards += 1;
                if sectors == 0 {
                    return Ok(Ok(()));
                }
                Ok(platform.discard(request.device_sector, sectors))
            }
        }
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

/// [`Cutoff::DuplicateId`] if two requests of the batch share an id.
fn check_ids(batch: &[RawRequest]) -> Result<(), Cutoff> {
    let mut ids: Vec<u64> = batch.iter().map(RawRequest::id).collect();
    ids.sort_unstable();
    match ids.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(Cutoff::DuplicateId(pair[0])),
        None => Ok(()),
    }
}
