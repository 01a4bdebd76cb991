//! System time, in ns since the domain's system-time epoch, from a per-vCPU
//! `VcpuTimeInfo` record that the microvisor keeps up to date (registered with
//! `VCPUOP_register_vcpu_time_memory_area` when each vCPU starts), and sleeping with the
//! single-shot timer.
//!
//! Reading follows pvclock: wait for an even `version`, copy the record and read the TSC,
//! and retry if `version` changed meanwhile (see [`crate::pvclock`] for the arithmetic).

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, Ordering};

use microvisor_abi::manifest::MAX_VCPUS;
use microvisor_abi::vcpu::{
    VcpuRegisterTimeMemoryArea, VcpuTimeInfo, VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA,
};

use crate::{arch, hypercall, pvclock, smp};

/// One vCPU's record, on its own cache line. Written only by the microvisor once
/// registered; read here with volatile reads.
#[repr(C, align(64))]
struct TimeArea(UnsafeCell<VcpuTimeInfo>);

// SAFETY: the runtime never writes the record and never makes a reference to it; it reads
// it through raw pointers with volatile reads, and the version check discards torn copies.
unsafe impl Sync for TimeArea {}

const EMPTY: VcpuTimeInfo = VcpuTimeInfo {
    version: 0,
    _pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    _pad1: [0; 2],
};

static AREAS: [TimeArea; MAX_VCPUS as usize] =
    [const { TimeArea(UnsafeCell::new(EMPTY)) }; MAX_VCPUS as usize];
static REGISTERED: [AtomicBool; MAX_VCPUS as usize] =
    [const { AtomicBool::new(false) }; MAX_VCPUS as usize];

/// Registers vCPU `vcpu`'s record; called on that vCPU as it starts. Returns the result.
pub(crate) fn register(vcpu: u32) -> i64 {
    let Some(area) = AREAS.get(vcpu as usize) else {
        return microvisor_abi::errno::EINVAL;
    };
    let request = VcpuRegisterTimeMemoryArea {
        addr_gva: area.0.get() as u64,
    };
    // SAFETY: the record is a 'static, cache-line aligned VcpuTimeInfo that the runtime
    // only reads with volatile reads, so the microvisor may keep writing it; the request
    // struct lives on this stack frame for the duration of the call.
    let ret = unsafe {
        hypercall::vcpu_op(
            VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA,
            vcpu,
            &raw const request as u64,
        )
    };
    if ret >= 0 {
        REGISTERED[vcpu as usize].store(true, Ordering::Release);
    }
    ret
}

/// Whether the calling vCPU has a registered time record (otherwise [`now_ns`] reads 0).
pub fn available() -> bool {
    REGISTERED
        .get(smp::current_vcpu() as usize)
        .is_some_and(|r| r.load(Ordering::Acquire))
}

/// A consistent copy of the calling vCPU's record and the TSC read with it.
fn snapshot() -> (VcpuTimeInfo, u64) {
    let index = (smp::current_vcpu() as usize).min(AREAS.len() - 1);
    let record = AREAS[index].0.get();
    loop {
        // SAFETY: `record` points to a live 'static VcpuTimeInfo; volatile reads of plain
        // integers cannot observe an invalid value, and a torn copy is detected below.
        let before = unsafe { core::ptr::read_volatile(&raw const (*record).version) };
        if before & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let copy = unsafe { core::ptr::read_volatile(record) };
        let tsc = arch::rdtsc();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let after = unsafe { core::ptr::read_volatile(&raw const (*record).version) };
        if before == after {
            return (copy, tsc);
        }
    }
}

/// System time in ns (0 while no record is registered on this vCPU).
pub fn now_ns() -> u64 {
    let (record, tsc) = snapshot();
    pvclock::system_time_ns(&record, tsc)
}

/// Sleeps at least `ns` of system time: arms the single-shot timer for the deadline and
/// blocks, until the deadline has passed (with events set up, the block is the events'
/// wait, so pending events of others do not turn it into a busy loop). Panics if this vCPU
/// has no time record.
pub fn sleep_ns(ns: u64) {
    assert!(
        available(),
        "time: no time record registered for vcpu {}",
        smp::current_vcpu()
    );
    let deadline = now_ns().saturating_add(ns);
    if crate::events::delivery() != crate::events::Delivery::None {
        // Wake through the event path (VIRQ_TIMER), latching other events for their owners.
        crate::events::sleep_until(deadline);
        return;
    }
    while now_ns() < deadline {
        hypercall::set_singleshot_timer(deadline);
        hypercall::sched_block();
    }
}

/// Sleeps at least `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    sleep_ns(ms.saturating_mul(1_000_000));
}
