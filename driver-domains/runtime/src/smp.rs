//! Secondary vCPUs.
//!
//! [`start_vcpu`] gives vCPU `id` a 64 KiB stack from the heap (aligned to its size; the
//! lowest bytes hold a header naming the vCPU), then `VCPUOP_initialise` with a
//! 64-bit context (RIP = the `ap_start64` trampoline, RSP = the stack top, RDI = `id`,
//! CR3 = the boot page tables, CR0 = PG|WP|NE|ET|MP|PE, CR4 = PAE|OSFXSR|OSXMMEXCPT,
//! EFER = LME|LMA, RFLAGS = 2) and `VCPUOP_up`. The vCPU loads the runtime's GDT and IDT,
//! registers its time record and calls `entry(id)`.
//!
//! A vCPU finds its own id from its stack pointer: vCPU 0 runs on the boot stack in .bss;
//! every other vCPU on its aligned heap stack, whose header holds the id.

use alloc::alloc::{alloc, Layout};
use core::fmt;

use microvisor_abi::manifest::MAX_VCPUS;
use microvisor_abi::sched::SHUTDOWN_CRASH;
use microvisor_abi::vcpu::{VcpuHvmContext, VCPU_HVM_MODE_64B};
use spin::Mutex;

use crate::{arch, entry, exceptions, hypercall, println, time};

/// Stack size of a secondary vCPU (also its alignment).
pub const STACK_BYTES: usize = 64 * 1024;
const STACK_MAGIC: u64 = 0x6b63_6174_5370_6376; // "vcpStack"

const CR0_PE_MP_ET_NE_WP_PG: u64 = 0x8001_0033;
const CR4_PAE_OSFXSR_OSXMMEXCPT: u64 = 0x620;
const EFER_LME_LMA: u64 = 0x500;

/// At the lowest address of each secondary vCPU's stack.
#[repr(C)]
struct StackHeader {
    magic: u64,
    vcpu: u64,
}

/// What a secondary vCPU runs, with its id.
pub type VcpuEntry = fn(u32) -> !;

/// The entry function of each secondary vCPU, set before it starts.
static ENTRIES: Mutex<[Option<VcpuEntry>; MAX_VCPUS as usize]> =
    Mutex::new([None; MAX_VCPUS as usize]);

/// Why a vCPU did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// Id 0 (the boot vCPU) or not below `MAX_VCPUS`.
    BadId(u32),
    /// The runtime already started this vCPU.
    AlreadyStarted(u32),
    /// No heap memory for its stack.
    NoMemory,
    /// `VCPUOP_initialise` failed with this error.
    Initialise(i64),
    /// `VCPUOP_up` failed with this error.
    Up(i64),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadId(id) => write!(f, "vcpu id {id} cannot be started"),
            Self::AlreadyStarted(id) => write!(f, "vcpu {id} was already started"),
            Self::NoMemory => write!(f, "no heap memory for a vcpu stack"),
            Self::Initialise(e) => write!(f, "VCPUOP_initialise failed: {e}"),
            Self::Up(e) => write!(f, "VCPUOP_up failed: {e}"),
        }
    }
}

/// Starts vCPU `id` (1 ≤ id < `MAX_VCPUS`) running `entry(id)` on a new 64 KiB stack.
pub fn start_vcpu(id: u32, entry: VcpuEntry) -> Result<(), StartError> {
    if id == 0 || id >= MAX_VCPUS {
        return Err(StartError::BadId(id));
    }
    {
        let mut entries = ENTRIES.lock();
        if entries[id as usize].is_some() {
            return Err(StartError::AlreadyStarted(id));
        }
        entries[id as usize] = Some(entry);
    }
    let result = launch(id);
    if result.is_err() {
        ENTRIES.lock()[id as usize] = None;
    }
    result
}

fn launch(id: u32) -> Result<(), StartError> {
    let layout =
        Layout::from_size_align(STACK_BYTES, STACK_BYTES).map_err(|_| StartError::NoMemory)?;
    // SAFETY: the layout has a non-zero size.
    let stack = unsafe { alloc(layout) };
    if stack.is_null() {
        return Err(StartError::NoMemory);
    }
    let base = stack.expose_provenance() as u64;
    // SAFETY: `stack` is a fresh allocation of STACK_BYTES, aligned to STACK_BYTES, so the
    // header fits at its start. The allocation is never freed: it becomes the vCPU's stack.
    unsafe {
        stack.cast::<StackHeader>().write(StackHeader {
            magic: STACK_MAGIC,
            vcpu: u64::from(id),
        })
    };
    let context = VcpuHvmContext {
        mode: VCPU_HVM_MODE_64B,
        rip: entry::ap_entry_address(),
        rsp: base + STACK_BYTES as u64,
        rdi: u64::from(id),
        rflags: 2,
        cr0: CR0_PE_MP_ET_NE_WP_PG,
        cr3: entry::page_tables_paddr(),
        cr4: CR4_PAE_OSFXSR_OSXMMEXCPT,
        efer: EFER_LME_LMA,
        ..VcpuHvmContext::default()
    };
    let ret = hypercall::vcpu_initialise(id, &context);
    if ret < 0 {
        return Err(StartError::Initialise(ret));
    }
    let ret = hypercall::vcpu_up(id);
    if ret < 0 {
        return Err(StartError::Up(ret));
    }
    Ok(())
}

/// The calling vCPU's id.
pub fn current_vcpu() -> u32 {
    let rsp = arch::stack_pointer();
    let (bottom, top) = entry::boot_stack_range();
    if (bottom..=top).contains(&rsp) || rsp >= crate::layout::IDENTITY_MAP_END {
        return 0;
    }
    let header = core::ptr::with_exposed_provenance::<StackHeader>(
        (rsp & !(STACK_BYTES as u64 - 1)) as usize,
    );
    // SAFETY: rsp is below 4 GiB, so the aligned address is mapped. A secondary vCPU's
    // stack is an aligned heap allocation whose provenance was exposed and whose header
    // was written before the vCPU started; the magic rules out any other stack.
    let (magic, vcpu) = unsafe { ((*header).magic, (*header).vcpu) };
    if magic == STACK_MAGIC && vcpu < u64::from(MAX_VCPUS) {
        vcpu as u32
    } else {
        0
    }
}

/// Where `ap_start64` goes, with the id the microvisor put in RDI.
pub(crate) extern "C" fn ap_start(id: u64) -> ! {
    exceptions::load();
    let entry = usize::try_from(id)
        .ok()
        .and_then(|i| ENTRIES.lock().get(i).copied().flatten());
    let Some(entry) = entry else {
        println!("runtime: vcpu {id} started without an entry function");
        hypercall::shutdown(SHUTDOWN_CRASH);
    };
    let id = id as u32;
    let ret = time::register(id);
    if ret < 0 {
        println!("runtime: vcpu {id}: registering the time record failed: {ret}");
    }
    entry(id)
}

/// Takes the calling vCPU down (`VCPUOP_down`); if that returns, blocks forever.
pub fn park() -> ! {
    hypercall::vcpu_down(current_vcpu());
    loop {
        hypercall::sched_block();
    }
}
