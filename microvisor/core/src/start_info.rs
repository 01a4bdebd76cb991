//! The PVH start-of-day page: `struct hvm_start_info`, the memory map, the module list and
//! the command line, laid out in one guest page whose GPA goes to the new vCPU in `%ebx`.
//!
//! Layout (offsets in the page, all fields little-endian, see `XEN-ABI.md` §1.3):
//!
//! | offset | contents |
//! |---|---|
//! | 0 | `hvm_start_info` (56 bytes): magic, version 1, flags 0, modules, RSDP |
//! | 56 | the memory map: RAM `[0, ram_bytes)`, then the extra ranges, [`MAX_EXTRA_RANGES`] at most (24 bytes each) |
//! | 56 + 24 × 9 = 272 | the module list: one `hvm_modlist_entry` (32 bytes), the initramfs, if any |
//! | 304 | the command line, NUL-terminated (absent, `cmdline_paddr` = 0, when empty) |
//!
//! The page must lie in the domain's RAM and below 1 GiB: Linux reads the memory map
//! through its early page tables, which map only the first 1 GiB. The initramfs must lie in
//! RAM below 4 GiB (Linux copies its address into 32-bit boot-parameter fields).

use core::mem::{offset_of, size_of};
use microvisor_abi::pvh::{
    HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC, MEMMAP_TYPE_RAM,
};

const PAGE_SIZE: usize = 4096;
/// Most memory-map entries besides the RAM entry.
pub const MAX_EXTRA_RANGES: usize = 8;
/// Offset of the memory map in the page.
pub const MEMMAP_OFFSET: usize = size_of::<HvmStartInfo>();
/// Offset of the module list in the page.
pub const MODLIST_OFFSET: usize =
    MEMMAP_OFFSET + (1 + MAX_EXTRA_RANGES) * size_of::<HvmMemmapEntry>();
/// Offset of the command line in the page.
pub const CMDLINE_OFFSET: usize = MODLIST_OFFSET + size_of::<HvmModlistEntry>();
/// Longest command line that fits, without its terminating NUL.
pub const MAX_CMDLINE_BYTES: usize = PAGE_SIZE - CMDLINE_OFFSET - 1;
/// The start-info page must end at or below this GPA.
pub const START_INFO_LIMIT: u64 = 1 << 30;

/// A range of guest-physical space that is not RAM, for the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub addr: u64,
    pub size: u64,
    /// An E820 type (`MEMMAP_TYPE_*`).
    pub kind: u32,
}

/// What the start-info page describes.
#[derive(Clone, Copy, Debug)]
pub struct BootLayout<'a> {
    /// RAM is `[0, ram_bytes)`.
    pub ram_bytes: u64,
    pub cmdline: &'a [u8],
    /// The initramfs (module 0): guest-physical address and size in bytes.
    pub ramdisk: Option<(u64, u64)>,
    /// Guest-physical address of the ACPI RSDP (0: no ACPI).
    pub rsdp_gpa: u64,
    /// Further memory-map entries (ACPI tables, special pages), outside RAM.
    pub extra_ranges: &'a [MemoryRange],
}

/// Why the start-info page could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// `page_gpa` is not 4 KiB aligned.
    UnalignedPage(u64),
    /// The page does not lie inside the domain's RAM `[0, ram_bytes)`.
    PageOutsideRam(u64),
    /// The page is not below [`START_INFO_LIMIT`].
    PageAbove1GiB(u64),
    /// The command line is longer than [`MAX_CMDLINE_BYTES`].
    CmdlineTooLong(usize),
    /// The command line contains a NUL byte.
    CmdlineContainsNul,
    /// The initramfs is empty, not inside RAM, or not below 4 GiB.
    RamdiskOutsideRam { gpa: u64, size: u64 },
    /// More than [`MAX_EXTRA_RANGES`] extra ranges, or one that overlaps RAM.
    BadExtraRange,
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::UnalignedPage(gpa) => write!(f, "start info page {gpa:#x} is not 4 KiB aligned"),
            Self::PageOutsideRam(gpa) => {
                write!(f, "start info page {gpa:#x} is not in the domain's RAM")
            }
            Self::PageAbove1GiB(gpa) => write!(f, "start info page {gpa:#x} is not below 1 GiB"),
            Self::CmdlineTooLong(len) => {
                write!(
                    f,
                    "command line of {len} bytes is longer than {MAX_CMDLINE_BYTES}"
                )
            }
            Self::CmdlineContainsNul => write!(f, "command line contains a NUL byte"),
            Self::RamdiskOutsideRam { gpa, size } => write!(
                f,
                "the initramfs ({size} bytes at {gpa:#x}) does not fit the domain's RAM below 4 GiB"
            ),
            Self::BadExtraRange => write!(f, "too many or overlapping memory-map ranges"),
        }
    }
}

/// Writes the start-info page described by `layout` into `page`, which the caller will
/// place at `page_gpa`. Returns the GPA of `hvm_start_info` (for `%ebx`). The whole page is
/// overwritten (unused bytes are zero).
pub fn write_start_info(
    page: &mut [u8; 4096],
    page_gpa: u64,
    layout: &BootLayout,
) -> Result<u64, StartInfoError> {
    let ram_bytes = layout.ram_bytes;
    let cmdline = layout.cmdline;
    if !page_gpa.is_multiple_of(PAGE_SIZE as u64) {
        return Err(StartInfoError::UnalignedPage(page_gpa));
    }
    let page_end = page_gpa
        .checked_add(PAGE_SIZE as u64)
        .ok_or(StartInfoError::PageOutsideRam(page_gpa))?;
    if page_end > ram_bytes {
        return Err(StartInfoError::PageOutsideRam(page_gpa));
    }
    if page_end > START_INFO_LIMIT {
        return Err(StartInfoError::PageAbove1GiB(page_gpa));
    }
    if cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(StartInfoError::CmdlineTooLong(cmdline.len()));
    }
    if cmdline.contains(&0) {
        return Err(StartInfoError::CmdlineContainsNul);
    }
    if let Some((gpa, size)) = layout.ramdisk {
        let end = gpa.checked_add(size);
        if size == 0 || end.is_none_or(|end| end > ram_bytes || end > 1 << 32) {
            return Err(StartInfoError::RamdiskOutsideRam { gpa, size });
        }
    }
    if layout.extra_ranges.len() > MAX_EXTRA_RANGES
        || layout
            .extra_ranges
            .iter()
            .any(|r| r.addr < ram_bytes || r.addr.checked_add(r.size).is_none())
    {
        return Err(StartInfoError::BadExtraRange);
    }

    page.fill(0);
    let cmdline_paddr = if cmdline.is_empty() {
        0
    } else {
        page_gpa + CMDLINE_OFFSET as u64
    };
    let entries = 1 + layout.extra_ranges.len() as u32;
    put_u32(page, offset_of!(HvmStartInfo, magic), HVM_START_MAGIC);
    put_u32(page, offset_of!(HvmStartInfo, version), 1);
    put_u32(page, offset_of!(HvmStartInfo, flags), 0);
    put_u64(page, offset_of!(HvmStartInfo, cmdline_paddr), cmdline_paddr);
    put_u64(page, offset_of!(HvmStartInfo, rsdp_paddr), layout.rsdp_gpa);
    put_u64(
        page,
        offset_of!(HvmStartInfo, memmap_paddr),
        page_gpa + MEMMAP_OFFSET as u64,
    );
    put_u32(page, offset_of!(HvmStartInfo, memmap_entries), entries);

    let ranges = core::iter::once(MemoryRange {
        addr: 0,
        size: ram_bytes,
        kind: MEMMAP_TYPE_RAM,
    })
    .chain(layout.extra_ranges.iter().copied());
    for (i, range) in ranges.enumerate() {
        let entry = |field: usize| MEMMAP_OFFSET + i * size_of::<HvmMemmapEntry>() + field;
        put_u64(page, entry(offset_of!(HvmMemmapEntry, addr)), range.addr);
        put_u64(page, entry(offset_of!(HvmMemmapEntry, size)), range.size);
        put_u32(page, entry(offset_of!(HvmMemmapEntry, kind)), range.kind);
    }

    if let Some((gpa, size)) = layout.ramdisk {
        put_u32(page, offset_of!(HvmStartInfo, nr_modules), 1);
        put_u64(
            page,
            offset_of!(HvmStartInfo, modlist_paddr),
            page_gpa + MODLIST_OFFSET as u64,
        );
        put_u64(
            page,
            MODLIST_OFFSET + offset_of!(HvmModlistEntry, paddr),
            gpa,
        );
        put_u64(
            page,
            MODLIST_OFFSET + offset_of!(HvmModlistEntry, size),
            size,
        );
    }

    page[CMDLINE_OFFSET..CMDLINE_OFFSET + cmdline.len()].copy_from_slice(cmdline);
    Ok(page_gpa)
}

fn put_u32(page: &mut [u8; 4096], at: usize, value: u32) {
    page[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(page: &mut [u8; 4096], at: usize, value: u64) {
    page[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 256 << 20;

    fn u32_at(page: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(page[at..at + 4].try_into().unwrap())
    }
    fn u64_at(page: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(page[at..at + 8].try_into().unwrap())
    }
    fn plain(cmdline: &[u8]) -> BootLayout<'_> {
        BootLayout {
            ram_bytes: RAM,
            cmdline,
            ramdisk: None,
            rsdp_gpa: 0,
            extra_ranges: &[],
        }
    }

    #[test]
    fn layout_matches_the_abi() {
        let mut page = [0xaau8; 4096];
        let gpa = write_start_info(&mut page, 0x8000, &plain(b"console=hvc0")).unwrap();
        assert_eq!(gpa, 0x8000);
        // Offsets written out by hand from the ABI table, not from offset_of!.
        assert_eq!(u32_at(&page, 0), 0x336e_c578);
        assert_eq!(u32_at(&page, 4), 1);
        assert_eq!(u32_at(&page, 8), 0);
        assert_eq!(u32_at(&page, 12), 0);
        assert_eq!(u64_at(&page, 16), 0);
        assert_eq!(u64_at(&page, 24), 0x8000 + 304);
        assert_eq!(u64_at(&page, 32), 0);
        assert_eq!(u64_at(&page, 40), 0x8000 + 56);
        assert_eq!(u32_at(&page, 48), 1);
        assert_eq!(u32_at(&page, 52), 0);
        // Memory map entry.
        assert_eq!(u64_at(&page, 56), 0);
        assert_eq!(u64_at(&page, 64), RAM);
        assert_eq!(u32_at(&page, 72), 1);
        assert_eq!(u32_at(&page, 76), 0);
        assert_eq!(&page[304..317], b"console=hvc0\0");
        assert!(page[317..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ramdisk_rsdp_and_extra_ranges() {
        let mut page = [0u8; 4096];
        let acpi = [MemoryRange {
            addr: 0xfc00_0000,
            size: 0x1000,
            kind: 4,
        }];
        let layout = BootLayout {
            ram_bytes: RAM,
            cmdline: b"x",
            ramdisk: Some((0x400_0000, 12345)),
            rsdp_gpa: 0xfc00_0000,
            extra_ranges: &acpi,
        };
        write_start_info(&mut page, 0x1000, &layout).unwrap();
        assert_eq!(u32_at(&page, 12), 1); // nr_modules
        assert_eq!(u64_at(&page, 16), 0x1000 + 272); // modlist_paddr
        assert_eq!(u64_at(&page, 32), 0xfc00_0000); // rsdp
        assert_eq!(u32_at(&page, 48), 2); // memmap entries
        assert_eq!(u64_at(&page, 80), 0xfc00_0000);
        assert_eq!(u64_at(&page, 88), 0x1000);
        assert_eq!(u32_at(&page, 96), 4);
        assert_eq!(u64_at(&page, 272), 0x400_0000);
        assert_eq!(u64_at(&page, 280), 12345);
        assert_eq!(u64_at(&page, 288), 0);
    }

    #[test]
    fn ramdisk_and_range_errors() {
        let mut page = [0u8; 4096];
        let mut layout = plain(b"");
        layout.ramdisk = Some((RAM - 10, 11));
        assert_eq!(
            write_start_info(&mut page, 0x1000, &layout),
            Err(StartInfoError::RamdiskOutsideRam {
                gpa: RAM - 10,
                size: 11
            })
        );
        layout.ramdisk = Some((0x10_0000, 0));
        assert!(write_start_info(&mut page, 0x1000, &layout).is_err());
        layout.ramdisk = Some((u64::MAX, 2));
        assert!(write_start_info(&mut page, 0x1000, &layout).is_err());
        layout.ramdisk = None;
        let overlapping = [MemoryRange {
            addr: RAM - 0x1000,
            size: 0x1000,
            kind: 2,
        }];
        layout.extra_ranges = &overlapping;
        assert_eq!(
            write_start_info(&mut page, 0x1000, &layout),
            Err(StartInfoError::BadExtraRange)
        );
        let many = [MemoryRange {
            addr: RAM,
            size: 1,
            kind: 2,
        }; MAX_EXTRA_RANGES + 1];
        layout.extra_ranges = &many;
        assert_eq!(
            write_start_info(&mut page, 0x1000, &layout),
            Err(StartInfoError::BadExtraRange)
        );
    }

    #[test]
    fn empty_cmdline_is_absent() {
        let mut page = [0u8; 4096];
        write_start_info(&mut page, 0x1000, &plain(b"")).unwrap();
        assert_eq!(u64_at(&page, 24), 0);
    }

    #[test]
    fn longest_cmdline_fits_with_its_nul() {
        let mut page = [0xffu8; 4096];
        let cmdline = [b'x'; MAX_CMDLINE_BYTES];
        write_start_info(&mut page, 0, &plain(&cmdline)).unwrap();
        assert_eq!(page[4094], b'x');
        assert_eq!(page[4095], 0);
        let too_long = [b'x'; MAX_CMDLINE_BYTES + 1];
        assert_eq!(
            write_start_info(&mut page, 0, &plain(&too_long)),
            Err(StartInfoError::CmdlineTooLong(MAX_CMDLINE_BYTES + 1))
        );
    }

    #[test]
    fn placement_errors() {
        let mut page = [0u8; 4096];
        assert_eq!(
            write_start_info(&mut page, 0x1234, &plain(b"")),
            Err(StartInfoError::UnalignedPage(0x1234))
        );
        assert_eq!(
            write_start_info(&mut page, RAM, &plain(b"")),
            Err(StartInfoError::PageOutsideRam(RAM))
        );
        let huge = BootLayout {
            ram_bytes: u64::MAX,
            ..plain(b"")
        };
        assert_eq!(
            write_start_info(&mut page, !0xfffu64, &huge),
            Err(StartInfoError::PageOutsideRam(!0xfffu64))
        );
        assert_eq!(
            write_start_info(&mut page, RAM - 0x1000, &plain(b"")),
            Ok(RAM - 0x1000)
        );
        let big = BootLayout {
            ram_bytes: 2 << 30,
            ..plain(b"")
        };
        assert_eq!(
            write_start_info(&mut page, 1 << 30, &big),
            Err(StartInfoError::PageAbove1GiB(1 << 30))
        );
        assert_eq!(
            write_start_info(&mut page, 0x1000, &plain(b"a\0b")),
            Err(StartInfoError::CmdlineContainsNul)
        );
    }
}
