//! The runtime every Rust stub domain links.
//!
//! A domain is a `#![no_std] #![no_main]` binary for the host target, linked with this
//! crate's `link.ld` (see the `hello` crate's `build.rs`), that names its main function
//! with [`entry!`]:
//!
//! ```ignore
//! driver_domains::entry!(main);
//! fn main(info: &'static driver_domains::BootInfo) { /* returns: power off */ }
//! ```
//!
//! The image is an ELF64 loaded at guest-physical 1 MiB and entered through Xen's PVH
//! entry (`src/entry.rs`: the `XEN_ELFNOTE_PHYS32_ENTRY` note, 32-bit entry code, page
//! tables, the switch to 64-bit mode). Before `main` the runtime has: 64-bit mode with
//! guest-physical 0..4 GiB identity-mapped, SSE on, an IDT that reports exceptions and
//! crashes the domain, the command line and memory map copied in, vCPU 0's time record
//! registered, `MVOP_DOMAIN_INFO` read, a heap, and (on a microvisor that has them) event
//! channels set up and console output switched to the console ring. Interrupts stay
//! disabled except inside a wait's `sti; hlt; cli`, where the event upcall (vector 0xF3)
//! wakes the vCPU; without events a vCPU waits with `sched_block` and the single-shot
//! timer.
//!
//! Modules: [`hypercall`] (raw and typed hypercalls), [`console`] (`print!`/`println!`),
//! [`time`] (system time, sleeping), [`smp`] (secondary vCPUs), [`memory`] (free RAM),
//! [`layout`] (what lies where in guest-physical memory), [`cmdline`] (command-line
//! parsing), [`testing`] and [`double_fetch`] (hostile operations for test domains),
//! [`qemu_debug`] (bare-QEMU check only). The panic handler prints `panic: <message> at
//! <file>:<line>` and crashes the domain.
//!
//! Inter-domain communication the Xen way: [`events`] (event channels: shared info, the
//! callback vector, port operations, waiting), [`grant_table`] (granting own pages, mapping
//! and copying foreign grants), [`xenstore`] (the xenstore client), [`xenbus`] (device
//! states, peer lookup by name), [`console_ring`] (console output over the PV console
//! ring, which boot switches [`print!`] to when the domain has one). The shared-ring
//! crate is re-exported as [`ring`]; [`OwnedPage`] and [`grant_table::MappedGrant`] are
//! the pages its rings run over.
//!
//! PCI passthrough: [`pci`] (the functions assigned to this domain, their config space through
//! the microvisor, their memory BARs, MSI-X entries bound to event channels), [`dma`] (memory
//! a device may DMA into: bus address = guest-physical address) and [`virtio`] (a virtio-blk
//! driver on the `virtio-drivers` crate over those).
//!
//! Pure modules ([`cmdline`], [`layout`], [`pvclock`], [`linebuf`], [`fuzz_policy`],
//! [`boot_info`], [`byte_ring`], [`xs_wire`], [`grant_alloc`], the state enum of
//! [`xenbus`]) build on the host too and carry the unit tests; the hardware modules are
//! compiled only outside `cfg(test)`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

#[cfg(not(test))]
extern crate baremetal;

pub mod boot_info;
pub mod byte_ring;
pub mod cmdline;
pub mod dma;
pub mod fuzz_policy;
pub mod grant_alloc;
pub mod layout;
pub mod linebuf;
pub mod pci;
pub mod pvclock;
pub mod virtio;
pub mod xenbus;
pub mod xs_wire;

#[cfg(not(test))]
pub mod arch;
#[cfg(not(test))]
pub mod boot;
#[cfg(not(test))]
pub mod console;
#[cfg(not(test))]
pub mod console_ring;
#[cfg(not(test))]
pub mod domctl;
#[cfg(not(test))]
pub mod double_fetch;
#[cfg(not(test))]
mod entry;
#[cfg(not(test))]
pub mod events;
#[cfg(not(test))]
mod exceptions;
#[cfg(not(test))]
pub mod grant_table;
#[cfg(not(test))]
pub mod heap;
#[cfg(not(test))]
pub mod hypercall;
#[cfg(not(test))]
pub mod memory;
#[cfg(not(test))]
mod panic;
#[cfg(not(test))]
pub mod qemu_debug;
#[cfg(not(test))]
mod shared_mem;
#[cfg(not(test))]
pub mod smp;
#[cfg(not(test))]
pub mod testing;
#[cfg(not(test))]
pub mod time;
#[cfg(not(test))]
pub mod xenstore;

#[cfg(not(test))]
pub use boot::RuntimeConfig;
pub use boot_info::BootInfo;
pub use microvisor_abi as abi;
#[cfg(not(test))]
pub use shared_mem::OwnedPage;
pub use xen_ring as ring;

/// Names the domain's main function, `fn(&'static BootInfo)` or `fn(&'static BootInfo) -> !`;
/// if it returns, the domain powers off. `entry!(main, heap_bytes = N)` asks for a heap of
/// N bytes instead of the default (see [`layout`]).
///
/// Defines `__driver_domain_start`, which the entry code calls in 64-bit mode.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!(@config $main, $crate::RuntimeConfig { heap_bytes: ::core::option::Option::None });
    };
    ($main:path, heap_bytes = $bytes:expr) => {
        $crate::entry!(@config $main, $crate::RuntimeConfig { heap_bytes: ::core::option::Option::Some($bytes) });
    };
    (@config $main:path, $config:expr) => {
        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn __driver_domain_start(start_info_paddr: u64) -> ! {
            const CONFIG: $crate::RuntimeConfig = $config;
            $crate::boot::start(start_info_paddr, &CONFIG, |info| {
                $main(info);
            })
        }
    };
}
