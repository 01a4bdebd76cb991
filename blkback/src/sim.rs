//! A simulated machine for the tests and the fuzz targets: an in-memory disk, the
//! front-end's granted pages, a pool of slots, a device that works on requests until it is
//! told to finish them (in any order), and a front-end that builds requests.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use xen_ring::{FrontRing, LocalPage, SharedPage, Sring};

use crate::engine::{
    CopyError, Cutoff, DeviceError, Direction, Io, Platform, Queue, Round, SlotCopy,
};
use crate::request::{IndirectPages, Limits};
use crate::slots::{Owner, Pool, Slot};
use crate::wire::{RawRequest, Response, MAX_DIRECT_SEGMENTS, PAGE_BYTES, SECTOR_BYTES};

/// `GNTST_bad_gntref`: what the microvisor answers for a grant nobody gave us.
pub const GNTST_BAD_GNTREF: i16 = -4;

/// The owner the simulated platform reserves slots for (it serves one queue).
const OWNER: Owner = 1;

/// A request the simulated device is working on.
#[derive(Debug)]
pub struct OnDevice {
    /// Its slot.
    pub slot: Slot,
    /// What it does.
    pub io: Io,
    /// It will fail (see [`SimPlatform::fail_next`]).
    pub fail: bool,
    buffer: Vec<u8>,
}

/// What the device saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A request was started.
    Started(Io),
    /// A request was finished (its data moved), with its outcome.
    Finished(Io, bool),
    /// A flush, and how many writes were on the device when it came.
    Flush {
        /// Writes started and not yet finished.
        writes_on_device: usize,
    },
    /// A discard.
    Discard {
        /// The first device sector.
        sector: u64,
        /// How many sectors.
        sectors: u64,
    },
}

/// In which order [`SimPlatform::finish_all`] finishes the device's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The order they were started in.
    Started,
    /// The reverse.
    Reversed,
}

/// The machine the engine runs on in tests.
pub struct SimPlatform {
    /// The disk's bytes.
    pub disk: Vec<u8>,
    /// The front-end's granted pages, by grant reference.
    pub grants: BTreeMap<u32, Vec<u8>>,
    /// The slots.
    pub pool: Pool<Vec<u8>>,
    /// The requests the device is working on, in the order they were started.
    pub device: Vec<OnDevice>,
    /// Everything the device did.
    pub log: Vec<DeviceEvent>,
    /// Each [`Platform::copy`] call: its direction and how many requests it copied.
    pub copy_calls: Vec<(Direction, usize)>,
    /// Flushes the device saw.
    pub flushes: u64,
    /// Sectors discarded.
    pub discarded: u64,
    /// Make the next device operation fail (a request started next fails when finished).
    pub fail_next: bool,
}

impl SimPlatform {
    /// A machine with a zeroed disk of `sectors` sectors and slots for `limits`: four that
    /// hold a direct request and two that hold the largest request.
    pub fn new(sectors: u64, limits: &Limits) -> Self {
        let small = MAX_DIRECT_SEGMENTS * PAGE_BYTES;
        let large = limits.max_request_bytes();
        Self::with_slots(sectors, &[small, small, small, small, large, large])
    }

    /// A machine with a zeroed disk of `sectors` sectors and one slot of each size in
    /// `slot_bytes`.
    pub fn with_slots(sectors: u64, slot_bytes: &[usize]) -> Self {
        Self {
            disk: vec![0; sectors as usize * SECTOR_BYTES],
            grants: BTreeMap::new(),
            pool: Pool::new(slot_bytes.iter().map(|&b| (b, vec![0; b])).collect()),
            device: Vec::new(),
            log: Vec::new(),
            copy_calls: Vec::new(),
            flushes: 0,
            discarded: 0,
            fail_next: false,
        }
    }

    /// Grants a page filled with `fill` as `gref`.
    pub fn grant(&mut self, gref: u32, fill: u8) {
        self.grants.insert(gref, vec![fill; PAGE_BYTES]);
    }

    fn range(&self, sector: u64, bytes: usize) -> Result<core::ops::Range<usize>, DeviceError> {
        let start = usize::try_from(sector)
            .ok()
            .and_then(|s| s.checked_mul(SECTOR_BYTES))
            .ok_or_else(|| DeviceError("sector beyond the disk".into()))?;
        let end = start
            .checked_add(bytes)
            .filter(|end| *end <= self.disk.len())
            .ok_or_else(|| DeviceError("beyond the disk".into()))?;
        Ok(start..end)
    }

    /// The slots the device is working on, in the order they were started.
    pub fn on_device(&self) -> Vec<Slot> {
        self.device.iter().map(|d| d.slot).collect()
    }

    /// The device finishes its request on `slot`: moves the data and gives the slot back.
    /// The outcome, for [`Queue::complete`].
    ///
    /// # Panics
    ///
    /// If the device has nothing on `slot`.
    pub fn finish(&mut self, slot: Slot) -> (Slot, Result<(), DeviceError>) {
        let index = self
            .device
            .iter()
            .position(|d| d.slot == slot)
            .expect("the device works on that slot");
        let OnDevice {
            slot,
            io,
            fail,
            mut buffer,
        } = self.device.remove(index);
        let result = if fail {
            Err(DeviceError("injected failure".into()))
        } else {
            match io {
                Io::Read { sector, bytes } => self.range(sector, bytes).map(|range| {
                    buffer[..bytes].copy_from_slice(&self.disk[range]);
                }),
                Io::Write { sector, bytes } => self.range(sector, bytes).map(|range| {
                    self.disk[range].copy_from_slice(&buffer[..bytes]);
                }),
            }
        };
        self.log.push(DeviceEvent::Finished(io, result.is_ok()));
        assert_eq!(
            self.pool.give_back(slot, buffer),
            Some(OWNER),
            "the queue still owns the slot"
        );
        (slot, result)
    }

    /// The device finishes everything it is working on, in `order`.
    pub fn finish_all(&mut self, order: Order) -> Vec<(Slot, Result<(), DeviceError>)> {
        let mut slots = self.on_device();
        if order == Order::Reversed {
            slots.reverse();
        }
        slots.into_iter().map(|slot| self.finish(slot)).collect()
    }
}

impl Platform for SimPlatform {
    fn reserve(&mut self, bytes: usize) -> Option<Slot> {
        self.pool.reserve(OWNER, bytes)
    }

    fn release(&mut self, slot: Slot) {
        assert!(
            self.pool.release(slot, OWNER),
            "released a slot not held or still on the device"
        );
    }

    fn copy(
        &mut self,
        copies: &[SlotCopy<'_>],
        direction: Direction,
    ) -> Result<(), (usize, CopyError)> {
        self.copy_calls.push((direction, copies.len()));
        for (index, copy) in copies.iter().enumerate() {
            let buffer = self
                .pool
                .buffer_mut(copy.slot, OWNER)
                .expect("a copy into a slot the queue holds");
            let mut at = 0;
            for segment in copy.segments {
                let offset = usize::from(segment.offset_bytes);
                let len = usize::from(segment.len_bytes);
                let page = self.grants.get_mut(&segment.gref).ok_or((
                    index,
                    CopyError {
                        gref: segment.gref,
                        status: GNTST_BAD_GNTREF,
                    },
                ))?;
                let guest = &mut page[offset..offset + len];
                let bounce = &mut buffer[at..at + len];
                match direction {
                    Direction::FromGuest => bounce.copy_from_slice(guest),
                    Direction::ToGuest => guest.copy_from_slice(bounce),
                }
                at += len;
            }
        }
        Ok(())
    }

    fn fetch_indirect(
        &mut self,
        grefs: &[u32],
        bytes: &[usize],
        pages: &mut IndirectPages,
    ) -> Result<(), CopyError> {
        for (index, (&gref, &count)) in grefs.iter().zip(bytes).enumerate() {
            let page = self.grants.get(&gref).ok_or(CopyError {
                gref,
                status: GNTST_BAD_GNTREF,
            })?;
            pages[index][..count].copy_from_slice(&page[..count]);
        }
        Ok(())
    }

    fn start(&mut self, slot: Slot, io: Io) -> Result<(), DeviceError> {
        let capacity = self.pool.capacity_bytes(slot);
        let buffer = self
            .pool
            .lend(slot, OWNER)
            .expect("started on a slot the queue holds");
        let (Io::Read { bytes, .. } | Io::Write { bytes, .. }) = io;
        assert!(bytes <= capacity, "{bytes} bytes in a slot of {capacity}");
        self.log.push(DeviceEvent::Started(io));
        self.device.push(OnDevice {
            slot,
            io,
            fail: core::mem::take(&mut self.fail_next),
            buffer,
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        let writes_on_device = self
            .device
            .iter()
            .filter(|d| matches!(d.io, Io::Write { .. }))
            .count();
        self.log.push(DeviceEvent::Flush { writes_on_device });
        if core::mem::take(&mut self.fail_next) {
            return Err(DeviceError("injected failure".into()));
        }
        self.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, slot: Slot, sector: u64, sectors: u64) -> Result<(), DeviceError> {
        assert!(
            self.pool.buffer_mut(slot, OWNER).is_some(),
            "a discard on a slot the queue holds"
        );
        if core::mem::take(&mut self.fail_next) {
            return Err(DeviceError("injected failure".into()));
        }
        let range = self.range(sector, sectors as usize * SECTOR_BYTES)?;
        self.disk[range].fill(0);
        self.discarded += sectors;
        self.log.push(DeviceEvent::Discard { sector, sectors });
        Ok(())
    }
}

/// Hands the device's outcomes to the queue and lets it go on, until the device has
/// nothing left; each round finishes everything on the device in `order`. The responses
/// published and whether the front-end was to be notified.
///
/// # Errors
///
/// The queue's [`Cutoff`].
pub fn drive<M: SharedPage>(
    queue: &mut Queue<M>,
    sim: &mut SimPlatform,
    order: Order,
) -> Result<Round, Cutoff> {
    let mut total = Round::default();
    loop {
        let done = sim.finish_all(order);
        if done.is_empty() {
            return Ok(total);
        }
        queue.complete(&done, sim)?;
        let round = queue.progress(sim)?;
        total.answered += round.answered;
        total.notify |= round.notify;
    }
}

/// A notification round ([`Queue::service`]), then [`drive`] in the order the requests
/// were started: the responses published in all.
///
/// # Errors
///
/// The queue's [`Cutoff`].
pub fn serve<M: SharedPage>(queue: &mut Queue<M>, sim: &mut SimPlatform) -> Result<Round, Cutoff> {
    let first = queue.service(sim)?;
    let rest = drive(queue, sim, Order::Started)?;
    Ok(Round {
        answered: first.answered + rest.answered,
        notify: first.notify || rest.notify,
    })
}

/// A front-end's ring over one local page, initialised as a front-end does.
pub fn front_ring(page: &LocalPage) -> FrontRing<RawRequest, Response, &LocalPage> {
    Sring::init(page);
    FrontRing::new(page).expect("blkif entries fit a page")
}
