//! Parsing of the Multiboot1 information structure the boot loader (QEMU's `-kernel`)
//! leaves for the microvisor: the memory map, the boot modules and the command line.
//!
//! Layout of the information structure (offsets in bytes, all `u32`): `flags` @0,
//! `mem_lower`/`mem_upper` (KiB) @4/@8 if flags bit 0, `cmdline` @16 if bit 2,
//! `mods_count`/`mods_addr` @20/@24 if bit 3, `mmap_length`/`mmap_addr` @44/@48 if bit 6.
//! A module entry is 16 bytes: `mod_start`, `mod_end` (exclusive), `string`, reserved. A
//! memory-map entry is `size: u32` (of the rest of the entry, at least 20), then
//! `base: u64`, `length: u64`, `type: u32`; the next entry starts `size + 4` bytes later.
//!
//! Everything is read through [`PhysRead`] and bounded; a malformed structure gives a
//! [`MultibootError`], never a panic.

pub use crate::phys::PhysRead;
use heapless::{String, Vec};

/// Most memory-map entries recorded.
pub const MAX_MEM_REGIONS: usize = 64;
/// Most memory-map entries looked at (the rest of a longer map is ignored).
pub const MAX_MMAP_ENTRIES_SCANNED: usize = 1024;
/// Most boot modules accepted.
pub const MAX_MODULES: usize = 16;

const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

/// One region of the firmware memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub base: u64,
    pub len: u64,
    /// E820 type: 1 available RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad.
    pub kind: u32,
}

impl MemRegion {
    /// The E820 type of usable RAM.
    pub const AVAILABLE: u32 = 1;

    /// Whether the region is usable RAM.
    pub fn is_available(&self) -> bool {
        self.kind == Self::AVAILABLE
    }
}

/// The longest module string kept (QEMU passes the whole `-initrd` path, which can be long).
pub const MAX_MODULE_STRING: usize = 1024;

/// One boot module: `[start, end)` in physical memory and its string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub cmdline: String<MAX_MODULE_STRING>,
}

/// The parts of the Multiboot information the microvisor uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MultibootInfo {
    /// The memory map (flags bit 6), or, without one, the two regions that
    /// `mem_lower`/`mem_upper` describe (flags bit 0).
    pub mem_map: Vec<MemRegion, MAX_MEM_REGIONS>,
    /// The memory map had more entries than were recorded.
    pub mem_map_truncated: bool,
    pub modules: Vec<Module, MAX_MODULES>,
    pub cmdline: String<256>,
}

/// Why the Multiboot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// The information structure itself cannot be read.
    InfoUnreadable(u64),
    /// The memory map cannot be read.
    MemMapUnreadable(u64),
    /// A memory-map entry has a size below 20 or runs past `mmap_length`.
    BadMemMapEntry { offset: u32 },
    /// More than [`MAX_MODULES`] modules.
    TooManyModules(u32),
    /// The module list cannot be read.
    ModuleListUnreadable(u64),
    /// A module ends before it starts.
    BadModule { index: usize },
    /// A string cannot be read (no NUL before unreadable memory).
    StringUnreadable(u64),
    /// A string is longer than its capacity.
    StringTooLong { pa: u64, capacity: usize },
    /// A string is not UTF-8.
    StringNotUtf8(u64),
}

impl core::fmt::Display for MultibootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::InfoUnreadable(pa) => write!(f, "multiboot info at {pa:#x} is unreadable"),
            Self::MemMapUnreadable(pa) => {
                write!(f, "multiboot memory map at {pa:#x} is unreadable")
            }
            Self::BadMemMapEntry { offset } => write!(
                f,
                "multiboot memory map entry at offset {offset} is malformed"
            ),
            Self::TooManyModules(n) => {
                write!(f, "{n} boot modules, at most {MAX_MODULES} are supported")
            }
            Self::ModuleListUnreadable(pa) => {
                write!(f, "multiboot module list at {pa:#x} is unreadable")
            }
            Self::BadModule { index } => write!(f, "boot module {index} ends before it starts"),
            Self::StringUnreadable(pa) => write!(f, "multiboot string at {pa:#x} is unreadable"),
            Self::StringTooLong { pa, capacity } => {
                write!(
                    f,
                    "multiboot string at {pa:#x} is longer than {capacity} bytes"
                )
            }
            Self::StringNotUtf8(pa) => write!(f, "multiboot string at {pa:#x} is not UTF-8"),
        }
    }
}

/// Parses the Multiboot1 information structure at `info_pa`.
pub fn parse_multiboot<M: PhysRead + ?Sized>(
    mem: &M,
    info_pa: u64,
) -> Result<MultibootInfo, MultibootError> {
    let mut header = [0u8; 52];
    if !mem.read(info_pa, &mut header) {
        return Err(MultibootError::InfoUnreadable(info_pa));
    }
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let flags = field(0);
    let mut info = MultibootInfo::default();

    if flags & FLAG_MMAP != 0 {
        parse_mem_map(mem, u64::from(field(48)), field(44), &mut info)?;
    } else if flags & FLAG_MEM != 0 {
        let lower = MemRegion {
            base: 0,
            len: u64::from(field(4)) * 1024,
            kind: MemRegion::AVAILABLE,
        };
        let upper = MemRegion {
            base: 0x10_0000,
            len: u64::from(field(8)) * 1024,
            kind: MemRegion::AVAILABLE,
        };
        info.mem_map
            .extend([lower, upper].into_iter().filter(|r| r.len != 0));
    }
    if flags & FLAG_MODS != 0 {
        parse_modules(mem, u64::from(field(24)), field(20), &mut info)?;
    }
    if flags & FLAG_CMDLINE != 0 && field(16) != 0 {
        info.cmdline = read_c_string(mem, u64::from(field(16)))?;
    }
    Ok(info)
}

fn parse_mem_map<M: PhysRead + ?Sized>(
    mem: &M,
    mmap_pa: u64,
    mmap_length: u32,
    info: &mut MultibootInfo,
) -> Result<(), MultibootError> {
    let mut offset = 0u32;
    for _ in 0..MAX_MMAP_ENTRIES_SCANNED {
        if offset >= mmap_length {
            return Ok(());
        }
        let entry_pa = mmap_pa + u64::from(offset);
        let mut entry = [0u8; 24];
        if mmap_length - offset < 24 {
            return Err(MultibootError::BadMemMapEntry { offset });
        }
        if !mem.read(entry_pa, &mut entry) {
            return Err(MultibootError::MemMapUnreadable(entry_pa));
        }
        let size = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let next = size.checked_add(4).and_then(|n| offset.checked_add(n));
        let next = match next {
            Some(next) if size >= 20 && next <= mmap_length => next,
            _ => return Err(MultibootError::BadMemMapEntry { offset }),
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&entry[4..12]);
        let base = u64::from_le_bytes(word);
        word.copy_from_slice(&entry[12..20]);
        let len = u64::from_le_bytes(word);
        let kind = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]);
        if info.mem_map.push(MemRegion { base, len, kind }).is_err() {
            info.mem_map_truncated = true;
        }
        offset = next;
    }
    info.mem_map_truncated |= offset < mmap_length;
    Ok(())
}

fn parse_modules<M: PhysRead + ?Sized>(
    mem: &M,
    mods_pa: u64,
    count: u32,
    info: &mut MultibootInfo,
) -> Result<(), MultibootError> {
    if count as usize > MAX_MODULES {
        return Err(MultibootError::TooManyModules(count));
    }
    for index in 0..count as usize {
        let entry_pa = mods_pa + index as u64 * 16;
        let mut entry = [0u8; 16];
        if !mem.read(entry_pa, &mut entry) {
            return Err(MultibootError::ModuleListUnreadable(entry_pa));
        }
        let word = |at: usize| {
            u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
        };
        let (start, end, string_pa) = (word(0), word(4), word(8));
        if end < start {
            return Err(MultibootError::BadModule { index });
        }
        let cmdline = if string_pa == 0 {
            String::new()
        } else {
            read_c_string(mem, u64::from(string_pa))?
        };
        // Cannot fail: `count <= MAX_MODULES` was checked.
        let _ = info.modules.push(Module {
            start: u64::from(start),
            end: u64::from(end),
            cmdline,
        });
    }
    Ok(())
}

/// Reads a NUL-terminated UTF-8 string of at most `N` bytes.
fn read_c_string<M: PhysRead + ?Sized, const N: usize>(
    mem: &M,
    pa: u64,
) -> Result<String<N>, MultibootError> {
    let mut bytes: Vec<u8, N> = Vec::new();
    for i in 0..=N as u64 {
        let at = pa
            .checked_add(i)
            .ok_or(MultibootError::StringUnreadable(pa))?;
        let byte = mem
            .read_u8(at)
            .ok_or(MultibootError::StringUnreadable(pa))?;
        if byte == 0 {
            let text =
                core::str::from_utf8(&bytes).map_err(|_| MultibootError::StringNotUtf8(pa))?;
            let mut string = String::new();
            // Cannot fail: `text` is at most `N` bytes.
            let _ = string.push_str(text);
            return Ok(string);
        }
        if bytes.push(byte).is_err() {
            break;
        }
    }
    Err(MultibootError::StringTooLong { pa, capacity: N })
}

#[cfg(test)]
mod tests;
