//! Hypercalls: `VMMCALL` with RAX = number, arguments in RDI, RSI, RDX, R10, R8, and the
//! result in RAX (negative = `-errno`, see `microvisor_abi::errno`). Numbers and argument
//! structs are in `microvisor_abi`; the interface is specified in `microvisor/HYPERCALLS.md`.
//!
//! [`raw`] issues any hypercall; the typed wrappers below pass only pointers to memory
//! they borrow for the right size, so they are safe.

use core::arch::asm;

use microvisor_abi::errno::EINVAL;
use microvisor_abi::hypercall::{
    CONSOLEIO_MAX_BYTES, CONSOLEIO_WRITE, CONSOLE_IO, MICROVISOR_OP, SCHED_OP, VCPU_OP, XEN_VERSION,
};
use microvisor_abi::microvisor_op::{DomainInfo, MVOP_DOMAIN_INFO};
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

/// `vcpu_op(VCPUOP_set_singleshot_timer, current vCPU, {abs_ns, flags: 0})`: wakes the
/// calling vCPU from `sched_block` at system time `abs_ns` (at once if already past).
pub fn set_singleshot_timer(abs_ns: u64) -> i64 {
    let request = VcpuSetSingleshotTimer {
        timeout_abs_ns: abs_ns,
        flags: 0,
        _pad: 0,
    };
    let vcpu = crate::smp::current_vcpu();
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
