//! What the runtime found at boot and hands to the domain's `main`.

use microvisor_abi::microvisor_op::DomainInfo;
use microvisor_abi::pvh::{HvmMemmapEntry, HvmStartInfo};

use crate::layout::{MemoryLayout, Range};

/// The longest command line kept (longer ones are cut).
pub const MAX_CMDLINE_BYTES: usize = 1024;
/// The most memory-map entries kept.
pub const MAX_MEMMAP_ENTRIES: usize = 128;

/// Boot facts, valid for the domain's lifetime.
#[derive(Debug)]
pub struct BootInfo {
    /// The command line (`hvm_start_info.cmdline_paddr`, up to its NUL; invalid UTF-8 is cut
    /// off at the first bad byte; at most [`MAX_CMDLINE_BYTES`]).
    pub cmdline: &'static str,
    /// The domain's RAM size: the end of the highest RAM range of the memory map.
    pub ram_bytes: u64,
    /// The first guest-physical address the runtime does not use: RAM from here up is free
    /// for the domain (see [`crate::layout`]; [`BootInfo::for_each_free_range`] lists it).
    pub image_end: u64,
    /// From `MVOP_DOMAIN_INFO` at boot.
    pub domain: DomainInfo,
    /// Where the image, heap and loader data lie.
    pub layout: MemoryLayout,
    /// The memory map (copied from the start info, at most [`MAX_MEMMAP_ENTRIES`]).
    pub memmap: &'static [HvmMemmapEntry],
    /// The start info as the loader gave it.
    pub start_info: HvmStartInfo,
}

impl BootInfo {
    /// Calls `f` with each page-aligned range of free RAM (see
    /// [`MemoryLayout::for_each_free_range`]).
    pub fn for_each_free_range(&self, f: impl FnMut(Range)) {
        self.layout.for_each_free_range(self.memmap, f);
    }
}
