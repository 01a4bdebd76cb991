//! Deliberately hostile operations for test domains (the `hello` image's `fuzz`, `rogue`
//! and `triplefault` modes). They exist to check that the microvisor contains a domain that
//! misbehaves; no service domain has a reason to call them.

use core::arch::asm;
use core::fmt;

use microvisor_abi::hypercall::SCHED_OP;
use microvisor_abi::sched::SCHEDOP_YIELD;

use crate::boot_info::BootInfo;
use crate::fuzz_policy::{self, ArgSpace, FuzzStats, XorShift64};
use crate::hypercall;
use crate::layout::Range;

/// Bytes of the fuzzer's scratch buffer.
pub const SCRATCH_BYTES: u64 = 64 * 1024;
/// Bytes refilled with fresh random words before each call.
const REFILL_BYTES: u64 = 256;

/// Why a hostile operation was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address lies in the runtime's own memory (image or heap).
    RuntimeMemory(u64),
    /// Free RAM has no range large enough for the fuzzer's scratch and tail.
    NoFreeRam,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RuntimeMemory(addr) => write!(f, "{addr:#x} is the runtime's own memory"),
            Self::NoFreeRam => write!(f, "free RAM has no {} KiB range", 2 * SCRATCH_BYTES / 1024),
        }
    }
}

/// Writes `value` to guest-physical `addr` (identity-mapped below 4 GiB; above that the
/// write page-faults in this domain) with one 8-byte store, any alignment. Refuses
/// addresses in the runtime's image or heap. A write the microvisor does not allow ends
/// the domain; one that it allows returns `Ok`.
pub fn write_u64_phys(info: &BootInfo, addr: u64, value: u64) -> Result<(), Refused> {
    if info.layout.is_runtime_owned(addr) || info.layout.is_runtime_owned(addr.wrapping_add(7)) {
        return Err(Refused::RuntimeMemory(addr));
    }
    // SAFETY: no Rust object lives at `addr`: it is outside the image and the heap, and the
    // runtime reaches free and loader RAM only through raw pointers. A plain store through
    // inline assembly has no alignment requirement; a fault is the point of the test and
    // is reported by the exception handler.
    unsafe {
        asm!("mov qword ptr [{addr}], {value}", addr = in(reg) addr, value = in(reg) value, options(nostack, preserves_flags))
    };
    Ok(())
}

/// Loads an IDT of limit 0 and executes `ud2`: the #UD cannot be delivered, nor the #DF
/// and #GP that follow, so the vCPU triple-faults. The microvisor must end only this domain.
pub fn triple_fault() -> ! {
    let empty = [0u8; 10];
    // SAFETY: deliberately makes every exception undeliverable and raises one; nothing
    // after this runs, and no memory is touched besides reading the 10-byte descriptor.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) empty.as_ptr(), options(noreturn, nostack)) }
}

/// The fuzzer's memory: `scratch` then a zeroed `tail` up to the top of the highest free
/// range large enough, so arguments near the end of RAM and spills past the scratch land in
/// free RAM or beyond RAM.
fn fuzz_space(info: &BootInfo) -> Result<(Range, Range), Refused> {
    let mut top: Option<Range> = None;
    info.for_each_free_range(|range| {
        if range.len() >= 2 * SCRATCH_BYTES && top.is_none_or(|t| range.end > t.end) {
            top = Some(range);
        }
    });
    let top = top.ok_or(Refused::NoFreeRam)?;
    let scratch = Range::new(top.end - 2 * SCRATCH_BYTES, top.end - SCRATCH_BYTES);
    Ok((scratch, Range::new(scratch.end, top.end)))
}

fn write_word(addr: u64, value: u64) {
    let word = core::ptr::with_exposed_provenance_mut::<u64>(addr as usize);
    // SAFETY: callers pass 8-aligned addresses in the fuzzer's scratch or tail, which lie
    // in free RAM below 4 GiB: no Rust object lives there (see crate::memory).
    unsafe { word.write_volatile(value) };
}

/// Makes `calls` random hypercalls from PRNG seed `seed` and counts the results (see
/// [`crate::fuzz_policy`] for how calls are drawn and which are replaced by a yield).
///
/// The scratch buffer and its tail lie at the top of free RAM, never in the runtime's
/// memory; calls with an argument inside the runtime's image or heap are replaced by a
/// yield too. Residual risk, accepted for a test domain: a hypercall that writes through a
/// pointer it read from scratch, where the value is one the microvisor itself wrote there
/// earlier, or a random u64 that happens to fall in the runtime's 2^24-odd bytes.
pub fn fuzz_hypercalls(info: &BootInfo, calls: u64, seed: u64) -> Result<FuzzStats, Refused> {
    let (scratch, tail) = fuzz_space(info)?;
    let space = ArgSpace {
        scratch,
        ram_top: info.ram_bytes,
    };
    let mut rng = XorShift64::new(seed);
    for addr in (scratch.start..scratch.end).step_by(8) {
        write_word(addr, fuzz_policy::random_arg(&mut rng, &space));
    }
    for addr in (tail.start..tail.end).step_by(8) {
        write_word(addr, 0);
    }
    let mut stats = FuzzStats::default();
    for _ in 0..calls {
        let refill = scratch.start + 8 * rng.below((SCRATCH_BYTES - REFILL_BYTES) / 8);
        for addr in (refill..refill + REFILL_BYTES).step_by(8) {
            write_word(addr, fuzz_policy::random_arg(&mut rng, &space));
        }
        let (num, args) = fuzz_policy::random_call(&mut rng, &space);
        let hits_runtime = args.iter().any(|&a| info.layout.is_runtime_owned(a));
        let result = if fuzz_policy::must_replace(num, &args, &space) || hits_runtime {
            stats.replaced += 1;
            // SAFETY: sched_op yield takes no pointer.
            unsafe { hypercall::raw(SCHED_OP, SCHEDOP_YIELD, 0, 0, 0, 0) }
        } else {
            // SAFETY: see this function's documentation: every argument is a small integer,
            // an address in free RAM (scratch, tail, end of RAM), an unmapped address, or a
            // random value that is not in the runtime's image or heap (checked above).
            unsafe { hypercall::raw(num, args[0], args[1], args[2], args[3], args[4]) }
        };
        stats.count(result);
    }
    Ok(stats)
}
