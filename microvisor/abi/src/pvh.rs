//! The PVH boot ABI: `struct hvm_start_info` and its memory map and module entries
//! (Xen's `arch-x86/hvm/start_info.h`), and the ELF note that marks the PVH entry.

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// The ELF note owner for Xen notes.
pub const XEN_ELFNOTE_OWNER: &[u8] = b"Xen";
/// `XEN_ELFNOTE_PHYS32_ENTRY`: 32-bit physical entry point (descriptor of 4 or 8 bytes).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// `struct hvm_start_info`, version 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<HvmStartInfo>() == 56);
const _: () = assert!(core::mem::offset_of!(HvmStartInfo, memmap_paddr) == 40);

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}
const _: () = assert!(core::mem::size_of::<HvmModlistEntry>() == 32);

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<HvmMemmapEntry>() == 24);

pub const MEMMAP_TYPE_RAM: u32 = 1;
pub const MEMMAP_TYPE_RESERVED: u32 = 2;
/// ACPI non-volatile storage: where Xen puts a PVH domain's ACPI tables.
pub const MEMMAP_TYPE_ACPI_NVS: u32 = 4;
