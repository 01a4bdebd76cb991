//! The PVH start-of-day page: `struct hvm_start_info`, the memory map and the command line,
//! laid out in one guest page whose GPA goes to the new vCPU in `%ebx`.
//!
//! Layout (offsets in the page, all fields little-endian, see `XEN-ABI.md` §1.3):
//!
//! | offset | contents |
//! |---|---|
//! | 0 | `hvm_start_info` (56 bytes): magic, version 1, flags 0, no modules, no RSDP |
//! | 56 | the memory map: one `hvm_memmap_table_entry` (24 bytes), RAM `[0, ram_bytes)` |
//! | 80 | the command line, NUL-terminated (absent, `cmdline_paddr` = 0, when empty) |
//!
//! The page must lie in the domain's RAM and below 1 GiB: Linux reads the memory map
//! through its early page tables, which map only the first 1 GiB.

use core::mem::{offset_of, size_of};
use microvisor_abi::pvh::{HvmMemmapEntry, HvmStartInfo, HVM_START_MAGIC, MEMMAP_TYPE_RAM};

const PAGE_SIZE: usize = 4096;
/// Offset of the memory map in the page.
pub const MEMMAP_OFFSET: usize = size_of::<HvmStartInfo>();
/// Offset of the command line in the page.
pub const CMDLINE_OFFSET: usize = MEMMAP_OFFSET + size_of::<HvmMemmapEntry>();
/// Longest command line that fits, without its terminating NUL.
pub const MAX_CMDLINE_BYTES: usize = PAGE_SIZE - CMDLINE_OFFSET - 1;
/// The start-info page must end at or below this GPA.
pub const START_INFO_LIMIT: u64 = 1 << 30;

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
        }
    }
}

/// Writes the start-info page for a domain with RAM `[0, ram_bytes)` into `page`, which
/// the caller will place at `page_gpa`. Returns the GPA of `hvm_start_info` (for `%ebx`).
/// The whole page is overwritten (unused bytes are zero).
pub fn write_start_info(
    page: &mut [u8; 4096],
    page_gpa: u64,
    ram_bytes: u64,
    cmdline: &[u8],
) -> Result<u64, StartInfoError> {
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

    page.fill(0);
    let cmdline_paddr = if cmdline.is_empty() {
        0
    } else {
        page_gpa + CMDLINE_OFFSET as u64
    };
    put_u32(page, offset_of!(HvmStartInfo, magic), HVM_START_MAGIC);
    put_u32(page, offset_of!(HvmStartInfo, version), 1);
    put_u32(page, offset_of!(HvmStartInfo, flags), 0);
    put_u32(page, offset_of!(HvmStartInfo, nr_modules), 0);
    put_u64(page, offset_of!(HvmStartInfo, modlist_paddr), 0);
    put_u64(page, offset_of!(HvmStartInfo, cmdline_paddr), cmdline_paddr);
    put_u64(page, offset_of!(HvmStartInfo, rsdp_paddr), 0);
    put_u64(
        page,
        offset_of!(HvmStartInfo, memmap_paddr),
        page_gpa + MEMMAP_OFFSET as u64,
    );
    put_u32(page, offset_of!(HvmStartInfo, memmap_entries), 1);

    let entry = |field: usize| MEMMAP_OFFSET + field;
    put_u64(page, entry(offset_of!(HvmMemmapEntry, addr)), 0);
    put_u64(page, entry(offset_of!(HvmMemmapEntry, size)), ram_bytes);
    put_u32(
        page,
        entry(offset_of!(HvmMemmapEntry, kind)),
        MEMMAP_TYPE_RAM,
    );

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

    #[test]
    fn layout_matches_the_abi() {
        let mut page = [0xaau8; 4096];
        let gpa = write_start_info(&mut page, 0x8000, RAM, b"console=hvc0").unwrap();
        assert_eq!(gpa, 0x8000);
        // Offsets written out by hand from the ABI table, not from offset_of!.
        assert_eq!(u32_at(&page, 0), 0x336e_c578);
        assert_eq!(u32_at(&page, 4), 1);
        assert_eq!(u32_at(&page, 8), 0);
        assert_eq!(u32_at(&page, 12), 0);
        assert_eq!(u64_at(&page, 16), 0);
        assert_eq!(u64_at(&page, 24), 0x8000 + 80);
        assert_eq!(u64_at(&page, 32), 0);
        assert_eq!(u64_at(&page, 40), 0x8000 + 56);
        assert_eq!(u32_at(&page, 48), 1);
        assert_eq!(u32_at(&page, 52), 0);
        // Memory map entry.
        assert_eq!(u64_at(&page, 56), 0);
        assert_eq!(u64_at(&page, 64), RAM);
        assert_eq!(u32_at(&page, 72), 1);
        assert_eq!(u32_at(&page, 76), 0);
        assert_eq!(&page[80..93], b"console=hvc0\0");
        assert!(page[93..].iter().all(|&b| b == 0));
    }

    #[test]
    fn empty_cmdline_is_absent() {
        let mut page = [0u8; 4096];
        write_start_info(&mut page, 0x1000, RAM, b"").unwrap();
        assert_eq!(u64_at(&page, 24), 0);
    }

    #[test]
    fn longest_cmdline_fits_with_its_nul() {
        let mut page = [0xffu8; 4096];
        let cmdline = [b'x'; MAX_CMDLINE_BYTES];
        write_start_info(&mut page, 0, RAM, &cmdline).unwrap();
        assert_eq!(page[4094], b'x');
        assert_eq!(page[4095], 0);
        let too_long = [b'x'; MAX_CMDLINE_BYTES + 1];
        assert_eq!(
            write_start_info(&mut page, 0, RAM, &too_long),
            Err(StartInfoError::CmdlineTooLong(MAX_CMDLINE_BYTES + 1))
        );
    }

    #[test]
    fn placement_errors() {
        let mut page = [0u8; 4096];
        assert_eq!(
            write_start_info(&mut page, 0x1234, RAM, b""),
            Err(StartInfoError::UnalignedPage(0x1234))
        );
        assert_eq!(
            write_start_info(&mut page, RAM, RAM, b""),
            Err(StartInfoError::PageOutsideRam(RAM))
        );
        assert_eq!(
            write_start_info(&mut page, !0xfffu64, u64::MAX, b""),
            Err(StartInfoError::PageOutsideRam(!0xfffu64))
        );
        assert_eq!(
            write_start_info(&mut page, RAM - 0x1000, RAM, b""),
            Ok(RAM - 0x1000)
        );
        assert_eq!(
            write_start_info(&mut page, 1 << 30, 2 << 30, b""),
            Err(StartInfoError::PageAbove1GiB(1 << 30))
        );
        assert_eq!(
            write_start_info(&mut page, 0x1000, RAM, b"a\0b"),
            Err(StartInfoError::CmdlineContainsNul)
        );
    }
}
