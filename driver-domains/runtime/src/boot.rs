//! Boot on the first vCPU, from `__driver_domain_start` (see [`crate::entry!`]) to `main`.
//!
//! 1. Load the IDT, so that any fault from here on is reported.
//! 2. Copy the start info, the command line and the memory map into the image (.bss), so
//!    nothing refers to the loader's pages afterwards. With `qemu_debug` on the command
//!    line, switch to the bare-QEMU console and exit ([`crate::qemu_debug`]).
//! 3. Register vCPU 0's time record; read `MVOP_DOMAIN_INFO`. Without a memory map in the
//!    start info, take RAM as `0..DomainInfo::memory_bytes`.
//! 4. Plan memory ([`crate::layout::plan`]) and start the heap.
//! 5. Set up events ([`crate::events`]: shared info, callback vector, `VIRQ_TIMER` per vCPU)
//!    and, if the domain has one, the console ring ([`crate::console_ring`]); both are
//!    skipped quietly on a microvisor that lacks them.
//! 6. Call `main(&BootInfo)`; if it returns, power off.

use core::mem::size_of;

use heapless::{String, Vec};
use microvisor_abi::microvisor_op::DomainInfo;
use microvisor_abi::pvh::{
    HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC, MEMMAP_TYPE_RAM,
};
use microvisor_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};

use crate::boot_info::{BootInfo, MAX_CMDLINE_BYTES, MAX_MEMMAP_ENTRIES};
use crate::console::print_direct;
use crate::layout::{self, Range, IDENTITY_MAP_END};
use crate::{
    cmdline, console_ring, entry, events, exceptions, heap, hypercall, println, qemu_debug, time,
};

/// Choices a domain makes in [`crate::entry!`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeConfig {
    /// Heap size in bytes; `None` for the default (see [`crate::layout`]).
    pub heap_bytes: Option<u64>,
}

static CMDLINE: spin::Once<String<MAX_CMDLINE_BYTES>> = spin::Once::new();
static MEMMAP: spin::Once<Vec<HvmMemmapEntry, MAX_MEMMAP_ENTRIES>> = spin::Once::new();
static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();
/// At most this many modules are kept out of free RAM.
const MAX_MODULES_KEPT: usize = 4;

/// The boot facts; `None` before `main` is called.
pub fn boot_info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

fn crash(message: core::fmt::Arguments<'_>) -> ! {
    print_direct(format_args!("runtime: {}\n", message));
    hypercall::shutdown(SHUTDOWN_CRASH)
}

/// Whether `[addr, addr + len)` lies inside the identity map and is not at address 0.
fn mapped(addr: u64, len: u64) -> bool {
    addr != 0
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= IDENTITY_MAP_END)
}

/// Reads a `T` the loader put at guest-physical `addr` (identity-mapped, in RAM that no
/// Rust object occupies).
fn read_loader<T: Copy>(addr: u64) -> T {
    let pointer = core::ptr::with_exposed_provenance::<T>(addr as usize);
    // SAFETY: callers check with `mapped` that the bytes are inside the identity map; T is
    // plain integers (any bit pattern is valid) and may be unaligned; the loader's pages
    // belong to no Rust object, and nothing writes them while boot reads them.
    unsafe { pointer.read_unaligned() }
}

fn copy_cmdline(addr: u64) -> String<MAX_CMDLINE_BYTES> {
    let mut bytes: Vec<u8, MAX_CMDLINE_BYTES> = Vec::new();
    if addr != 0 {
        for offset in 0..MAX_CMDLINE_BYTES as u64 {
            if !mapped(addr + offset, 1) {
                break;
            }
            let byte: u8 = read_loader(addr + offset);
            if byte == 0 || bytes.push(byte).is_err() {
                break;
            }
        }
    }
    let valid = match core::str::from_utf8(&bytes) {
        Ok(text) => text.len(),
        Err(e) => e.valid_up_to(),
    };
    let mut text = String::new();
    // The prefix is valid UTF-8 and fits: both checked above.
    let _ = text.push_str(core::str::from_utf8(&bytes[..valid]).unwrap_or(""));
    text
}

fn copy_memmap(info: &HvmStartInfo) -> Vec<HvmMemmapEntry, MAX_MEMMAP_ENTRIES> {
    let mut entries = Vec::new();
    if info.version >= 1 {
        let count = (info.memmap_entries as usize).min(MAX_MEMMAP_ENTRIES);
        let entry_bytes = size_of::<HvmMemmapEntry>() as u64;
        if mapped(info.memmap_paddr, count as u64 * entry_bytes) {
            for i in 0..count as u64 {
                let _ = entries.push(read_loader(info.memmap_paddr + i * entry_bytes));
            }
        }
    }
    entries
}

/// The loader's data that must stay out of free RAM.
fn loader_ranges(info: &HvmStartInfo, start_info_paddr: u64, cmdline_len: usize) -> Vec<Range, 8> {
    let mut ranges: Vec<Range, 8> = Vec::new();
    let mut add = |start: u64, len: u64| {
        if start != 0 && len != 0 {
            let _ = ranges.push(Range::new(start, start.saturating_add(len)));
        }
    };
    add(start_info_paddr, size_of::<HvmStartInfo>() as u64);
    add(info.cmdline_paddr, cmdline_len as u64 + 1);
    if info.version >= 1 {
        add(
            info.memmap_paddr,
            u64::from(info.memmap_entries) * size_of::<HvmMemmapEntry>() as u64,
        );
    }
    let module_bytes = size_of::<HvmModlistEntry>() as u64;
    add(
        info.modlist_paddr,
        u64::from(info.nr_modules) * module_bytes,
    );
    let kept = (info.nr_modules as usize).min(MAX_MODULES_KEPT) as u64;
    if mapped(info.modlist_paddr, kept * module_bytes) {
        for i in 0..kept {
            let module: HvmModlistEntry = read_loader(info.modlist_paddr + i * module_bytes);
            add(module.paddr, module.size);
        }
    }
    ranges
}

/// Runs the boot steps and `main`; called by `__driver_domain_start`.
#[doc(hidden)]
pub fn start<F: FnOnce(&'static BootInfo)>(
    start_info_paddr: u64,
    config: &RuntimeConfig,
    main: F,
) -> ! {
    exceptions::load();

    if !mapped(start_info_paddr, size_of::<HvmStartInfo>() as u64) {
        crash(format_args!(
            "start info address {start_info_paddr:#x} is not usable"
        ));
    }
    let start_info: HvmStartInfo = read_loader(start_info_paddr);
    let cmdline: &'static str = CMDLINE
        .call_once(|| copy_cmdline(start_info.cmdline_paddr))
        .as_str();
    if cmdline::flag(cmdline, qemu_debug::CMDLINE_FLAG) {
        // BARE-QEMU CHECK ONLY: see qemu_debug.
        qemu_debug::activate();
        println!(
            "runtime: 64-bit entry ok, start info at {start_info_paddr:#x}, cmdline \"{cmdline}\""
        );
    }
    if start_info.magic != HVM_START_MAGIC {
        crash(format_args!(
            "bad start info magic {:#x} at {start_info_paddr:#x}",
            start_info.magic
        ));
    }

    if !qemu_debug::active() {
        let ret = time::register(0);
        if ret < 0 {
            println!("runtime: vcpu 0: registering the time record failed: {ret}");
        }
    }

    let mut memmap = copy_memmap(&start_info);
    let domain = if qemu_debug::active() {
        DomainInfo {
            vcpus: 1,
            memory_bytes: layout::ram_top(&memmap),
            ..DomainInfo::default()
        }
    } else {
        hypercall::domain_info().unwrap_or_else(|e| {
            println!("runtime: MVOP_DOMAIN_INFO failed: {e}");
            DomainInfo {
                vcpus: 1,
                memory_bytes: layout::ram_top(&memmap),
                ..DomainInfo::default()
            }
        })
    };
    if memmap.is_empty() {
        // No memory map in the start info: the microvisor's RAM is 0..memory_bytes.
        let _ = memmap.push(HvmMemmapEntry {
            addr: 0,
            size: domain.memory_bytes,
            kind: MEMMAP_TYPE_RAM,
            reserved: 0,
        });
    }
    let memmap: &'static [HvmMemmapEntry] = MEMMAP.call_once(|| memmap).as_slice();

    let (image_start, image_end) = entry::image_range();
    let loader = loader_ranges(&start_info, start_info_paddr, cmdline.len());
    let plan = layout::plan(
        Range::new(image_start, image_end),
        memmap,
        config.heap_bytes,
        &loader,
    );
    if plan.is_err() || qemu_debug::active() {
        for e in memmap {
            println!(
                "runtime: memmap {:#x}..{:#x} type {}",
                e.addr,
                e.addr.saturating_add(e.size),
                e.kind
            );
        }
    }
    let plan = plan.unwrap_or_else(|e| crash(format_args!("memory: {e}")));
    heap::init(plan.heap);
    if !qemu_debug::active() {
        // Events and the console ring live in pages above RAM; a microvisor without them
        // (ENOSYS) leaves the domain on console_io and timer-only waits.
        let ram_top = plan.ram_top.max(domain.memory_bytes);
        if let Err(e) = events::init(domain.vcpus, ram_top) {
            if e != microvisor_abi::errno::ENOSYS {
                println!("runtime: events unavailable: error {e}");
            }
        }
        console_ring::init(ram_top);
    }
    if qemu_debug::active() {
        println!(
            "runtime: image {:#x}..{:#x}, heap {:#x}..{:#x}, image_end {:#x}, ram top {:#x}",
            plan.image.start,
            plan.image.end,
            plan.heap.start,
            plan.heap.end,
            plan.image_end(),
            plan.ram_top
        );
    }

    let info = BOOT_INFO.call_once(|| BootInfo {
        cmdline,
        ram_bytes: plan.ram_top,
        image_end: plan.image_end(),
        domain,
        layout: plan,
        memmap,
        start_info,
    });
    main(info);
    hypercall::shutdown(SHUTDOWN_POWEROFF)
}
