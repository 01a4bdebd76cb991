//! A simulated machine for the tests and the fuzz targets: an in-memory disk, the
//! front-end's granted pages, the bounce buffer, and a front-end that builds requests.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use xen_ring::{FrontRing, LocalPage, Sring};

use crate::engine::{CopyError, DeviceError, Direction, Platform};
use crate::request::{DataSegment, IndirectPages, Limits};
use crate::wire::{RawRequest, Response, PAGE_BYTES, SECTOR_BYTES};

/// `GNTST_bad_gntref`: what the microvisor answers for a grant nobody gave us.
pub const GNTST_BAD_GNTREF: i16 = -4;

/// The machine the engine runs on in tests.
pub struct SimPlatform {
    /// The disk's bytes.
    pub disk: Vec<u8>,
    /// The front-end's granted pages, by grant reference.
    pub grants: BTreeMap<u32, Vec<u8>>,
    /// The bounce buffer.
    pub bounce: Vec<u8>,
    /// Flushes the device saw.
    pub flushes: u64,
    /// Sectors discarded.
    pub discarded: u64,
    /// Make the next device operation fail.
    pub fail_next: bool,
}

impl SimPlatform {
    /// A machine with a zeroed disk of `sectors` sectors and a bounce buffer for `limits`.
    pub fn new(sectors: u64, limits: &Limits) -> Self {
        Self {
            disk: vec![0; sectors as usize * SECTOR_BYTES],
            grants: BTreeMap::new(),
            bounce: vec![0; limits.max_request_bytes()],
            flushes: 0,
            discarded: 0,
            fail_next: false,
        }
    }

    /// Grants a page filled with `fill` as `gref`.
    pub fn grant(&mut self, gref: u32, fill: u8) {
        self.grants.insert(gref, vec![fill; PAGE_BYTES]);
    }

    fn page(&mut self, gref: u32) -> Result<&mut Vec<u8>, CopyError> {
        self.grants.get_mut(&gref).ok_or(CopyError {
            gref,
            status: GNTST_BAD_GNTREF,
        })
    }

    fn device(
        &mut self,
        sector: u64,
        bytes: usize,
    ) -> Result<core::ops::Range<usize>, DeviceError> {
        if core::mem::take(&mut self.fail_next) {
            return Err(DeviceError("injected failure".into()));
        }
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
}

impl Platform for SimPlatform {
    fn copy(&mut self, segments: &[DataSegment], direction: Direction) -> Result<(), CopyError> {
        let mut at = 0;
        for segment in segments {
            let offset = usize::from(segment.offset_bytes);
            let len = usize::from(segment.len_bytes);
            let page = self.grants.get_mut(&segment.gref).ok_or(CopyError {
                gref: segment.gref,
                status: GNTST_BAD_GNTREF,
            })?;
            let guest = &mut page[offset..offset + len];
            let bounce = &mut self.bounce[at..at + len];
            match direction {
                Direction::FromGuest => bounce.copy_from_slice(guest),
                Direction::ToGuest => guest.copy_from_slice(bounce),
            }
            at += len;
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
            let page = self.page(gref)?;
            pages[index][..count].copy_from_slice(&page[..count]);
        }
        Ok(())
    }

    fn read(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError> {
        let range = self.device(sector, bytes)?;
        self.bounce[..bytes].copy_from_slice(&self.disk[range]);
        Ok(())
    }

    fn write(&mut self, sector: u64, bytes: usize) -> Result<(), DeviceError> {
        let range = self.device(sector, bytes)?;
        self.disk[range].copy_from_slice(&self.bounce[..bytes]);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.device(0, 0)?;
        self.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), DeviceError> {
        let range = self.device(sector, sectors as usize * SECTOR_BYTES)?;
        self.disk[range].fill(0);
        self.discarded += sectors;
        Ok(())
    }
}

/// A front-end's ring over one local page, initialised as a front-end does.
pub fn front_ring(page: &LocalPage) -> FrontRing<RawRequest, Response, &LocalPage> {
    Sring::init(page);
    FrontRing::new(page).expect("blkif entries fit a page")
}
