//! Hypercalls: `VMMCALL` with RAX = number, arguments in RDI, RSI, RDX, R10, R8, and the
//! result in RAX (negative = `-errno`, see `microvisor_abi::errno`). Numbers and argument
//! structs are in `microvisor_abi`; the interface is specified in `microvisor/HYPERCALLS.md`.
//!
//! [`raw`] issues any hypercall; the typed wrappers below pass only pointers to memory
//! they borrow for the right size, so they are safe.

use core::arch::asm;

use microvisor_abi::errno::EINVAL;
use microvisor_abi::evtchn::{
    ALLOC_UNBOUND_SIZE, BIND_INTERDOMAIN_SIZE, BIND_IPI_SIZE, BIND_VCPU_SIZE, BIND_VIRQ_SIZE,
    DOMID_SELF, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_IPI,
    EVTCHNOP_BIND_VCPU, EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS,
    EVTCHNOP_UNMASK, PORT_ARG_SIZE, STATUS_SIZE,
};
use microvisor_abi::grant::{
    COPY_SIZE, GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE,
    GNTTABOP_UNMAP_GRANT_REF, MAP_GRANT_REF_SIZE, QUERY_SIZE_SIZE, UNMAP_GRANT_REF_SIZE,
};
use microvisor_abi::hvm::{
    ADD_TO_PHYSMAP_SIZE, HVMOP_GET_PARAM, HVMOP_SET_PARAM, HVM_PARAM_SIZE, XENMEM_ADD_TO_PHYSMAP,
};
use microvisor_abi::hypercall::{
    CONSOLEIO_MAX_BYTES, CONSOLEIO_WRITE, CONSOLE_IO, EVENT_CHANNEL_OP, GRANT_TABLE_OP, HVM_OP,
    MEMORY_OP, MICROVISOR_OP, SCHED_OP, VCPU_OP, XEN_VERSION,
};
pub use microvisor_abi::microvisor_op::DomainStats;
use microvisor_abi::microvisor_op::{DomainInfo, MVOP_DOMAIN_INFO, MVOP_DOMAIN_STATS};
use microvisor_abi::sched::{SchedShutdown, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD};
use microvisor_abi::vcpu::{
    VcpuHvmContext, VcpuSetSingleshotTimer, VCPUOP_DOWN, VCPUOP_INITIALISE, VCPUOP_IS_UP,
    VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER, VCPUOP_UP,
};
use microvisor_abi::version::{
    XENVER_CAPABILITIES, XENVER_EXTRAVERSION, XENVER_GET_FEATURES, XENVER_PAGESIZE, XENVER_VERSION,
};

use crate::qemu_debug;

/// Issues hypercall `num` with up to five arguments and returns RAX.
///
/// # Safety
/// Every argument the hypercall treats as a guest-virtual pointer must point to memory
/// that may be read or written as that hypercall does (for as long as it keeps the
/// address, for operations that register memory), without breaking Rust's aliasing rules.
#[inline]
pub unsafe fn raw(num: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: u64;
    // SAFETY: VMMCALL exits to the microvisor, which changes only RAX and the memory the
    // caller allowed (see this function's contract); it leaves the stack alone.
    unsafe {
        asm!(
            "vmmcall",
            inlateout("rax") num => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            options(nostack),
        );
    }
    ret as i64
}

/// `console_io(CONSOLEIO_WRITE, count, buf)`: writes `bytes` to the domain's console, in
/// pieces of at most `CONSOLEIO_MAX_BYTES`. Returns the first error, or 0.
///
/// Bare-QEMU check only (see [`crate::qemu_debug`]): writes to port 0xe9 instead.
pub fn console_write(bytes: &[u8]) -> i64 {
    if qemu_debug::active() {
        qemu_debug::write(bytes);
        return 0;
    }
    for chunk in bytes.chunks(CONSOLEIO_MAX_BYTES as usize) {
        // SAFETY: the microvisor reads chunk.len() bytes from the chunk, which is borrowed.
        let ret = unsafe {
            raw(
                CONSOLE_IO,
                CONSOLEIO_WRITE,
                chunk.len() as u64,
                chunk.as_ptr() as u64,
                0,
                0,
            )
        };
        if ret < 0 {
            return ret;
        }
    }
    0
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() -> i64 {
    // SAFETY: no pointer argument.
    unsafe { raw(SCHED_OP, SCHEDOP_YIELD, 0, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_block)`: sleeps until an event or the vCPU's single-shot timer.
pub fn sched_block() -> i64 {
    // SAFETY: no pointer argument.
    unsafe { raw(SCHED_OP, SCHEDOP_BLOCK, 0, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_shutdown, &{reason})` (`SHUTDOWN_*` in `microvisor_abi::sched`). Spins
/// if the microvisor returns.
///
/// Bare-QEMU check only (see [`crate::qemu_debug`]): exits QEMU instead.
pub fn shutdown(reason: u32) -> ! {
    if qemu_debug::active() {
        qemu_debug::exit(reason);
    }
    // Let the console backend print our last lines before we are torn down.
    crate::console_ring::drain(1_000_000_000);
    let request = SchedShutdown { reason };
    // SAFETY: the microvisor reads the 4-byte struct, which lives on this stack frame.
    unsafe {
        raw(
            SCHED_OP,
            SCHEDOP_SHUTDOWN,
            &raw const request as u64,
            0,
            0,
            0,
        )
    };
    loop {
        core::hint::spin_loop();
    }
}

/// The bytes `xen_version(cmd, buf)` writes for the commands this wrapper allows.
fn xen_version_out_bytes(cmd: u64) -> Option<usize> {
    match cmd {
        XENVER_VERSION | XENVER_PAGESIZE => Some(0),
        XENVER_EXTRAVERSION => Some(16),
        XENVER_CAPABILITIES => Some(1024),
        XENVER_GET_FEATURES => Some(8),
        _ => None,
    }
}

/// `xen_version(cmd, buf)`. `buf` must be at least as large as what `cmd` writes
/// (16 bytes for `XENVER_EXTRAVERSION`, 1024 for `XENVER_CAPABILITIES`, 8 for
/// `XENVER_GET_FEATURES`, whose first 4 bytes are the submap index; nothing for
/// `XENVER_VERSION` and `XENVER_PAGESIZE`); other commands, or a short buffer, give
/// `-EINVAL` without a hypercall.
pub fn xen_version(cmd: u64, buf: &mut [u8]) -> i64 {
    match xen_version_out_bytes(cmd) {
        Some(needed) if buf.len() >= needed => {
            let ptr = if needed == 0 {
                0
            } else {
                buf.as_mut_ptr() as u64
            };
            // SAFETY: the microvisor writes at most `needed` bytes to buf, which is borrowed
            // mutably and at least that long.
            unsafe { raw(XEN_VERSION, cmd, ptr, 0, 0, 0) }
        }
        _ => EINVAL,
    }
}

/// `vcpu_op(VCPUOP_initialise, vcpu, ctx)`.
pub fn vcpu_initialise(vcpu: u32, ctx: &VcpuHvmContext) -> i64 {
    // SAFETY: the microvisor reads the context struct, which is borrowed.
    unsafe {
        raw(
            VCPU_OP,
            VCPUOP_INITIALISE,
            u64::from(vcpu),
            ctx as *const _ as u64,
            0,
            0,
        )
    }
}

/// `vcpu_op(VCPUOP_up, vcpu)`.
pub fn vcpu_up(vcpu: u32) -> i64 {
    // SAFETY: no pointer argument.
    unsafe { raw(VCPU_OP, VCPUOP_UP, u64::from(vcpu), 0, 0, 0) }
}

/// `vcpu_op(VCPUOP_down, vcpu)`.
pub fn vcpu_down(vcpu: u32) -> i64 {
    // SAFETY: no pointer argument.
    unsafe { raw(VCPU_OP, VCPUOP_DOWN, u64::from(vcpu), 0, 0, 0) }
}

/// `vcpu_op(VCPUOP_is_up, vcpu)`: 1 if up, 0 if not.
pub fn vcpu_is_up(vcpu: u32) -> i64 {
    // SAFETY: no pointer argument.
    unsafe { raw(VCPU_OP, VCPUOP_IS_UP, u64::from(vcpu), 0, 0, 0) }
}

/// Per vCPU: the system time its single-shot timer was last set for through
/// [`set_singleshot_timer`] (0: none, or stopped). A set timer fires once, so a value in
/// the past means nothing is pending.
static TIMER_SET_FOR: [core::sync::atomic::AtomicU64;
    microvisor_abi::manifest::MAX_VCPUS as usize] =
    [const { core::sync::atomic::AtomicU64::new(0) }; microvisor_abi::manifest::MAX_VCPUS as usize];

/// Where the calling vCPU's single-shot timer was last set for (0: none).
pub fn singleshot_timer_set_for() -> u64 {
    TIMER_SET_FOR
        .get(crate::smp::current_vcpu() as usize)
        .map_or(0, |at| at.load(core::sync::atomic::Ordering::Relaxed))
}

/// `vcpu_op(VCPUOP_set_singleshot_timer, current vCPU, {abs_ns, flags: 0})`: wakes the
/// calling vCPU from `sched_block` at system time `abs_ns` (at once if already past).
pub fn set_singleshot_timer(abs_ns: u64) -> i64 {
    let request = VcpuSetSingleshotTimer {
        timeout_abs_ns: abs_ns,
        flags: 0,
        _pad: 0,
    };
    let vcpu = crate::smp::current_vcpu();
    if let Some(at) = TIMER_SET_FOR.get(vcpu as usize) {
        at.store(abs_ns, core::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: the microvisor reads the 16-byte struct, which lives on this stack frame.
    unsafe {
        raw(
            VCPU_OP,
            VCPUOP_SET_SINGLESHOT_TIMER,
            u64::from(vcpu),
            &raw const request as u64,
            0,
            0,
        )
    }
}

/// `vcpu_op(VCPUOP_stop_singleshot_timer, current vCPU)`.
pub fn stop_singleshot_timer() -> i64 {
    let vcpu = crate::smp::current_vcpu();
    if let Some(at) = TIMER_SET_FOR.get(vcpu as usize) {
        at.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: no pointer argument.
    unsafe {
        raw(
            VCPU_OP,
            VCPUOP_STOP_SINGLESHOT_TIMER,
            u64::from(vcpu),
            0,
            0,
            0,
        )
    }
}

/// `microvisor_op(MVOP_DOMAIN_INFO, &info)`: what the domain may learn about itself.
pub fn domain_info() -> Result<DomainInfo, i64> {
    let mut info = DomainInfo::default();
    // SAFETY: the microvisor writes the 24-byte struct, which is borrowed mutably here.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMAIN_INFO,
            &raw mut info as u64,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(info)
    }
}

/// `vcpu_op(cmd, vcpu, arg)` for any command.
///
/// # Safety
/// As for [`raw`]: `arg` must be valid for what `cmd` does with it (a command that registers
/// memory, such as `VCPUOP_register_vcpu_time_memory_area`, keeps using it).
pub unsafe fn vcpu_op(cmd: u64, vcpu: u32, arg: u64) -> i64 {
    // SAFETY: passed on from the caller.
    unsafe { raw(VCPU_OP, cmd, u64::from(vcpu), arg, 0, 0) }
}

/// The counts from `before` to `after` (wrapping), for two [`domain_stats`] readings.
pub fn stats_between(before: &DomainStats, after: &DomainStats) -> DomainStats {
    DomainStats {
        hypercalls: after.hypercalls.wrapping_sub(before.hypercalls),
        events_sent: after.events_sent.wrapping_sub(before.events_sent),
        vm_exits: after.vm_exits.wrapping_sub(before.vm_exits),
    }
}

/// `microvisor_op(MVOP_DOMAIN_STATS, &stats)`: the calling domain's counters since it was
/// built: hypercalls made, `EVTCHNOP_send`s made, VM exits of its vCPUs.
pub fn domain_stats() -> Result<DomainStats, i64> {
    let mut stats = DomainStats::default();
    // SAFETY: the microvisor writes the 24-byte struct, which is borrowed mutably here.
    let ret = unsafe {
        raw(
            MICROVISOR_OP,
            MVOP_DOMAIN_STATS,
            &raw mut stats as u64,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(stats)
    }
}

/// The size of the argument struct of `event_channel_op(cmd)`, for the commands this wrapper
/// allows.
fn evtchn_arg_bytes(cmd: u64) -> Option<usize> {
    match cmd {
        EVTCHNOP_BIND_INTERDOMAIN => Some(BIND_INTERDOMAIN_SIZE),
        EVTCHNOP_BIND_VIRQ => Some(BIND_VIRQ_SIZE),
        EVTCHNOP_CLOSE | EVTCHNOP_SEND | EVTCHNOP_UNMASK => Some(PORT_ARG_SIZE),
        EVTCHNOP_STATUS => Some(STATUS_SIZE),
        EVTCHNOP_ALLOC_UNBOUND => Some(ALLOC_UNBOUND_SIZE),
        EVTCHNOP_BIND_IPI => Some(BIND_IPI_SIZE),
        EVTCHNOP_BIND_VCPU => Some(BIND_VCPU_SIZE),
        _ => None,
    }
}

/// `event_channel_op(cmd, arg)` with the argument struct as bytes (layouts in
/// `microvisor_abi::evtchn`); output fields are written back into `arg`. Commands other
/// than the 2-level ones listed there, or an `arg` shorter than the command's struct, give
/// `-EINVAL` without a hypercall.
pub fn event_channel_op(cmd: u64, arg: &mut [u8]) -> i64 {
    match evtchn_arg_bytes(cmd) {
        Some(needed) if arg.len() >= needed => {
            // SAFETY: the microvisor reads and writes at most `needed` bytes of `arg`, which
            // is borrowed mutably and at least that long.
            unsafe { raw(EVENT_CHANNEL_OP, cmd, arg.as_mut_ptr() as u64, 0, 0, 0) }
        }
        _ => EINVAL,
    }
}

/// `hvm_op(HVMOP_get_param, {DOMID_SELF, index})`: the value of an HVM parameter.
pub fn hvm_get_param(index: u32) -> Result<u64, i64> {
    let mut arg = [0u8; HVM_PARAM_SIZE];
    arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    arg[4..8].copy_from_slice(&index.to_le_bytes());
    // SAFETY: the microvisor reads and writes the 16-byte struct, borrowed mutably here.
    let ret = unsafe { raw(HVM_OP, HVMOP_GET_PARAM, arg.as_mut_ptr() as u64, 0, 0, 0) };
    if ret < 0 {
        return Err(ret);
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&arg[8..16]);
    Ok(u64::from_le_bytes(value))
}

/// `hvm_op(HVMOP_set_param, {DOMID_SELF, index, value})`.
pub fn hvm_set_param(index: u32, value: u64) -> Result<(), i64> {
    let mut arg = [0u8; HVM_PARAM_SIZE];
    arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    arg[4..8].copy_from_slice(&index.to_le_bytes());
    arg[8..16].copy_from_slice(&value.to_le_bytes());
    // SAFETY: the microvisor reads the 16-byte struct, which lives on this stack frame.
    let ret = unsafe { raw(HVM_OP, HVMOP_SET_PARAM, arg.as_mut_ptr() as u64, 0, 0, 0) };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(())
    }
}

/// `memory_op(XENMEM_add_to_physmap, {DOMID_SELF, space, idx, gpfn})`: makes the
/// microvisor-owned frame `idx` of `space` (`XENMAPSPACE_*`) appear at guest frame `gpfn`.
///
/// # Safety
/// Whatever lies at `gpfn` is replaced, so the page must hold no Rust object (the runtime
/// uses pages outside RAM), and the caller must reach the new page only the way its owner
/// expects (shared info and grant frames: atomic accesses).
pub unsafe fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), i64> {
    let mut arg = [0u8; ADD_TO_PHYSMAP_SIZE];
    arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    arg[4..8].copy_from_slice(&space.to_le_bytes());
    arg[8..16].copy_from_slice(&idx.to_le_bytes());
    arg[16..24].copy_from_slice(&gpfn.to_le_bytes());
    // SAFETY: the microvisor reads the 24-byte struct on this stack frame; what it maps is
    // the caller's responsibility (see above).
    let ret = unsafe {
        raw(
            MEMORY_OP,
            XENMEM_ADD_TO_PHYSMAP,
            arg.as_mut_ptr() as u64,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(())
    }
}

/// The size of one element of `grant_table_op(cmd)`, for the commands this wrapper allows.
fn gnttab_op_bytes(cmd: u64) -> Option<usize> {
    match cmd {
        GNTTABOP_MAP_GRANT_REF => Some(MAP_GRANT_REF_SIZE),
        GNTTABOP_UNMAP_GRANT_REF => Some(UNMAP_GRANT_REF_SIZE),
        GNTTABOP_QUERY_SIZE => Some(QUERY_SIZE_SIZE),
        _ => None,
    }
}

/// `grant_table_op(cmd, ops, count)` for map, unmap and query_size, with `count` structs as
/// bytes in `ops` (layouts in `microvisor_abi::grant`); statuses are written back into
/// `ops`. Other commands, or `ops` shorter than `count` structs, give `-EINVAL` without a
/// hypercall. Copies go through [`grant_copy_raw`].
///
/// A map makes the granted frame appear at the `host_addr` each struct names: the caller
/// ([`crate::grant_table`]) names only pages of its mapping window, outside RAM.
pub fn grant_table_op(cmd: u64, ops: &mut [u8], count: u32) -> i64 {
    match gnttab_op_bytes(cmd) {
        Some(size) if ops.len() >= size * count as usize => {
            // SAFETY: the microvisor reads and writes at most `count` structs of `size` bytes
            // of `ops`, which is borrowed mutably and long enough. Mapped frames land at the
            // structs' `host_addr`s, which the microvisor accepts only outside RAM, so no
            // Rust object is replaced.
            unsafe {
                raw(
                    GRANT_TABLE_OP,
                    cmd,
                    ops.as_mut_ptr() as u64,
                    u64::from(count),
                    0,
                    0,
                )
            }
        }
        _ => EINVAL,
    }
}

/// `grant_table_op(GNTTABOP_copy, ops, count)` with `count` 40-byte `gnttab_copy` structs
/// in `ops`; statuses are written back. `-EINVAL` without a hypercall if `ops` is short.
///
/// # Safety
/// Every destination that is a frame of this domain (not a grant reference) must be memory
/// the caller may let the microvisor overwrite: no Rust object that is borrowed or read
/// non-atomically lives there.
pub unsafe fn grant_copy_raw(ops: &mut [u8], count: u32) -> i64 {
    if ops.len() < COPY_SIZE * count as usize {
        return EINVAL;
    }
    // SAFETY: the microvisor reads and writes `count` structs in `ops` (borrowed mutably,
    // long enough); the frames it copies into are the caller's responsibility (see above).
    unsafe {
        raw(
            GRANT_TABLE_OP,
            GNTTABOP_COPY,
            ops.as_mut_ptr() as u64,
            u64::from(count),
            0,
            0,
        )
    }
}

/// `microvisor_op(MVOP_LIST_DOMAINS, out, out.len())`, for the service domains: the live
/// domains, at most `out.len()`; returns how many were written (`-EPERM` for a domain that
/// serves neither xenstore nor consoles).
pub fn list_domains(out: &mut [microvisor_abi::microvisor_op::DomainEntry]) -> Result<usize, i64> {
    // SAFETY: the microvisor writes at most `out.len()` 48-byte `DomainEntry` records at
    // `out`, which is borrowed mutably for the call and holds exactly that many;
    // `DomainEntry` is `repr(C)` integers and bytes, valid for any bit pattern.
    let ret = unsafe {
        raw(
            microvisor_abi::hypercall::MICROVISOR_OP,
            microvisor_abi::microvisor_op::MVOP_LIST_DOMAINS,
            out.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok((ret as usize).min(out.len()))
    }
}
