//! [`Vbd`]: a virtual block device, a contiguous slice of a physical disk.
//!
//! A vbd is `sectors` 512-byte sectors starting at device sector `start_sector`, optionally
//! read-only. Its logical sector size is 512 bytes, the blkif unit, so a request's
//! `sector_number` and length map one to one: vbd sector `s` is device sector
//! `start_sector + s`. Every mapping is checked (no arithmetic can overflow, nothing past
//! the slice is reachable).

use core::fmt;

/// The logical (and physical) sector size the backend publishes.
pub const VBD_SECTOR_BYTES: u32 = 512;

/// A slice of a disk served to a front-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vbd {
    start_sector: u64,
    sectors: u64,
    read_only: bool,
}

/// A vbd that does not fit its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VbdError {
    /// The requested start.
    pub start_sector: u64,
    /// The requested length.
    pub sectors: u64,
    /// The disk's size.
    pub disk_sectors: u64,
}

impl fmt::Display for VbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vbd of {} sectors at sector {} does not fit a disk of {} sectors",
            self.sectors, self.start_sector, self.disk_sectors
        )
    }
}

/// A range outside the vbd (in vbd sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// First sector asked for.
    pub sector: u64,
    /// Number of sectors asked for.
    pub count: u64,
    /// The vbd's size.
    pub vbd_sectors: u64,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sector {}+{} outside the vbd ({} sectors)",
            self.sector, self.count, self.vbd_sectors
        )
    }
}

impl Vbd {
    /// Sectors `start_sector .. start_sector + sectors` of a disk of `disk_sectors`.
    ///
    /// # Errors
    ///
    /// [`VbdError`] if the slice reaches past the disk (or its end overflows).
    pub fn slice(
        disk_sectors: u64,
        start_sector: u64,
        sectors: u64,
        read_only: bool,
    ) -> Result<Self, VbdError> {
        match start_sector.checked_add(sectors) {
            Some(end) if end <= disk_sectors => Ok(Self {
                start_sector,
                sectors,
                read_only,
            }),
            _ => Err(VbdError {
                start_sector,
                sectors,
                disk_sectors,
            }),
        }
    }

    /// The whole disk.
    pub fn whole(disk_sectors: u64, read_only: bool) -> Self {
        Self {
            start_sector: 0,
            sectors: disk_sectors,
            read_only,
        }
    }

    /// The device sector of vbd sector 0.
    pub fn start_sector(&self) -> u64 {
        self.start_sector
    }

    /// The size in 512-byte sectors (the backend's `sectors` key).
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The device sector of vbd sectors `sector .. sector + count`, if they all lie in the
    /// vbd. A `count` of 0 is in range at any `sector <= sectors`.
    ///
    /// # Errors
    ///
    /// [`OutOfRange`] otherwise.
    pub fn map(&self, sector: u64, count: u64) -> Result<u64, OutOfRange> {
        match sector.checked_add(count) {
            // `end <= sectors` and the slice fits the disk, so the sum cannot overflow.
            Some(end) if end <= self.sectors => Ok(self.start_sector + sector),
            _ => Err(OutOfRange {
                sector,
                count,
                vbd_sectors: self.sectors,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn maps_into_the_slice() {
        let vbd = Vbd::slice(100_000, 1000, 65536, false).unwrap();
        assert_eq!(vbd.map(0, 1), Ok(1000));
        assert_eq!(vbd.map(65535, 1), Ok(1000 + 65535));
        assert_eq!(vbd.map(65528, 8), Ok(1000 + 65528));
        assert_eq!(vbd.map(65536, 0), Ok(1000 + 65536));
        assert_eq!(
            vbd.map(65536, 1),
            Err(OutOfRange {
                sector: 65536,
                count: 1,
                vbd_sectors: 65536
            })
        );
        assert_eq!(
            vbd.map(12345, 60000).unwrap_err().to_string(),
            "sector 12345+60000 outside the vbd (65536 sectors)"
        );
    }

    #[test]
    fn overflowing_ranges_are_out_of_range() {
        let vbd = Vbd::whole(u64::MAX, false);
        assert_eq!(vbd.map(u64::MAX, 0), Ok(u64::MAX));
        assert!(vbd.map(u64::MAX, 1).is_err());
        assert!(vbd.map(1, u64::MAX).is_err());
        assert!(vbd.map(u64::MAX - 3, 8).is_err());
        let slice = Vbd::slice(u64::MAX, u64::MAX - 10, 10, true).unwrap();
        assert_eq!(slice.map(9, 1), Ok(u64::MAX - 1));
        assert!(slice.map(u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn a_slice_must_fit_its_disk() {
        assert!(Vbd::slice(2048, 1024, 1024, false).is_ok());
        assert_eq!(
            Vbd::slice(2048, 1024, 1025, false),
            Err(VbdError {
                start_sector: 1024,
                sectors: 1025,
                disk_sectors: 2048
            })
        );
        assert!(Vbd::slice(u64::MAX, 1, u64::MAX, false).is_err());
        let vbd = Vbd::slice(10, 0, 0, true).unwrap();
        assert!(vbd.is_read_only());
        assert!(vbd.map(0, 1).is_err());
    }
}
