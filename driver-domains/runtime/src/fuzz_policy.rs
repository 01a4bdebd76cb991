//! The pure part of the hypercall fuzzer ([`crate::testing::fuzz_hypercalls`]): the PRNG,
//! how numbers and arguments are drawn, which calls are replaced by a yield, and how
//! results are counted.
//!
//! Numbers: a fully random u64 one time in 32; otherwise, half the time a number in 0..70
//! and half the time one of the hypercalls the microvisor implements ([`KNOWN_NUMBERS`]),
//! whose first argument (the sub-op) is then a small integer three times in four, so the
//! sub-ops' argument checks are reached and not only the unknown-number path. Arguments, each
//! drawn at random from five kinds: a small integer (0..=64), a random u64, an 8-byte
//! aligned address inside the scratch buffer, an address within a page of the end of RAM
//! (either side, any alignment), or an unmapped high address (4 GiB and up). Scratch
//! addresses are aligned so that a struct the microvisor reads from scratch has its 8-byte
//! fields on the scratch's words, which hold only values drawn the same way: a field read
//! as a pointer then never combines the bytes of two words into an address of the
//! runtime's own memory.
//!
//! Replaced by `sched_op(SCHEDOP_yield)`: calls that would stop or wedge the fuzzing domain
//! itself, judged on the low 32 bits of the number and of the first two arguments (Xen
//! treats `cmd` and `vcpuid` as 32-bit): `sched_op` block (1), shutdown (2), poll (3) and
//! watchdog (6); `vcpu_op` down (2) and up (1) on any vCPU (up could run a vCPU that a fuzzed
//! `initialise` gave a garbage context), and initialise (0) on vCPU 0; `console_io` write
//! (0) of at most `CONSOLEIO_MAX_BYTES` from an address below the end of RAM, which would
//! print random bytes (not valid text) on the console that the tests read.

use microvisor_abi::errno::{EFAULT, EINVAL, ENOSYS, EPERM};
use microvisor_abi::hypercall::{
    CONSOLEIO_MAX_BYTES, CONSOLEIO_WRITE, CONSOLE_IO, EVENT_CHANNEL_OP, GRANT_TABLE_OP, HVM_OP,
    MEMORY_OP, MICROVISOR_OP, PHYSDEV_OP, SCHED_OP, VCPU_OP, XEN_VERSION,
};
use microvisor_abi::sched::{SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN};
use microvisor_abi::vcpu::{VCPUOP_DOWN, VCPUOP_INITIALISE, VCPUOP_UP};

use crate::layout::Range;

const SCHEDOP_POLL: u64 = 3;
const SCHEDOP_WATCHDOG: u64 = 6;

/// Hypercall numbers are drawn below this, most of the time.
pub const NUMBER_LIMIT: u64 = 70;
/// The hypercalls that half of the calls aim at.
pub const KNOWN_NUMBERS: [u64; 10] = [
    MEMORY_OP,
    XEN_VERSION,
    CONSOLE_IO,
    GRANT_TABLE_OP,
    VCPU_OP,
    SCHED_OP,
    EVENT_CHANNEL_OP,
    PHYSDEV_OP,
    HVM_OP,
    MICROVISOR_OP,
];

/// xorshift64* (Marsaglia's xorshift with a multiplicative output step).
#[derive(Clone, Debug)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Where pointer arguments may point.
#[derive(Clone, Copy, Debug)]
pub struct ArgSpace {
    pub scratch: Range,
    pub ram_top: u64,
}

/// A hypercall number.
pub fn random_number(rng: &mut XorShift64) -> u64 {
    if rng.below(32) == 0 {
        rng.next_u64()
    } else if rng.below(2) == 0 {
        rng.below(NUMBER_LIMIT)
    } else {
        KNOWN_NUMBERS[rng.below(KNOWN_NUMBERS.len() as u64) as usize]
    }
}

/// A number and its five arguments.
pub fn random_call(rng: &mut XorShift64, space: &ArgSpace) -> (u64, [u64; 5]) {
    let num = random_number(rng);
    let mut args: [u64; 5] = core::array::from_fn(|_| random_arg(rng, space));
    if KNOWN_NUMBERS.contains(&num) && rng.below(4) != 0 {
        args[0] = rng.below(33);
    }
    (num, args)
}

/// One argument (or one word of scratch contents).
pub fn random_arg(rng: &mut XorShift64, space: &ArgSpace) -> u64 {
    match rng.below(5) {
        0 => rng.below(65),
        1 => rng.next_u64(),
        2 => space.scratch.start + 8 * rng.below((space.scratch.len() / 8).max(1)),
        3 => space.ram_top.saturating_sub(4096) + rng.below(8192),
        _ => (1u64 << 32) + rng.below(u64::MAX - (1 << 32)),
    }
}

/// Whether the call must be replaced by a yield (see the module documentation).
pub fn must_replace(num: u64, args: &[u64; 5], space: &ArgSpace) -> bool {
    let num = u64::from(num as u32);
    let cmd = u64::from(args[0] as u32);
    let vcpu = args[1] as u32;
    match num {
        CONSOLE_IO => {
            cmd == CONSOLEIO_WRITE
                && args[1] <= CONSOLEIO_MAX_BYTES
                && args[2].saturating_add(args[1]) <= space.ram_top
        }
        SCHED_OP => matches!(
            cmd,
            SCHEDOP_BLOCK | SCHEDOP_SHUTDOWN | SCHEDOP_POLL | SCHEDOP_WATCHDOG
        ),
        VCPU_OP => {
            cmd == VCPUOP_DOWN || cmd == VCPUOP_UP || (cmd == VCPUOP_INITIALISE && vcpu == 0)
        }
        _ => false,
    }
}

/// Results by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzStats {
    pub calls: u64,
    pub zero: u64,
    pub positive: u64,
    pub efault: u64,
    pub einval: u64,
    pub enosys: u64,
    pub eperm: u64,
    pub other_negative: u64,
    /// Calls replaced by a yield (their results are counted too).
    pub replaced: u64,
}

impl core::ops::AddAssign for FuzzStats {
    fn add_assign(&mut self, more: Self) {
        self.calls += more.calls;
        self.zero += more.zero;
        self.positive += more.positive;
        self.efault += more.efault;
        self.einval += more.einval;
        self.enosys += more.enosys;
        self.eperm += more.eperm;
        self.other_negative += more.other_negative;
        self.replaced += more.replaced;
    }
}

impl FuzzStats {
    pub fn count(&mut self, result: i64) {
        self.calls += 1;
        match result {
            0 => self.zero += 1,
            r if r > 0 => self.positive += 1,
            EFAULT => self.efault += 1,
            EINVAL => self.einval += 1,
            ENOSYS => self.enosys += 1,
            EPERM => self.eperm += 1,
            _ => self.other_negative += 1,
        }
    }

    /// Zero and positive results.
    pub fn ok(&self) -> u64 {
        self.zero + self.positive
    }

    /// `-EPERM` and every other negative result but `-EFAULT`, `-EINVAL` and `-ENOSYS`.
    pub fn other(&self) -> u64 {
        self.eperm + self.other_negative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_bounded() {
        let mut a = XorShift64::new(7);
        let mut b = XorShift64::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(70) < 70);
            b.below(70);
        }
        let mut zero = XorShift64::new(0);
        assert_ne!(zero.next_u64(), 0);
    }

    #[test]
    fn draws_every_kind_of_number_and_argument() {
        let mut rng = XorShift64::new(1);
        let space = ArgSpace {
            scratch: Range::new(0x20_0000, 0x21_0000),
            ram_top: 0x100_0000,
        };
        let (mut small, mut scratch, mut near_top, mut high, mut big_numbers) = (0, 0, 0, 0, 0);
        for _ in 0..10_000 {
            if random_number(&mut rng) > MICROVISOR_OP.max(NUMBER_LIMIT) {
                big_numbers += 1;
            }
            let arg = random_arg(&mut rng, &space);
            if arg <= 64 {
                small += 1;
            } else if space.scratch.contains(arg) {
                assert_eq!(arg % 8, 0);
                scratch += 1;
            } else if (space.ram_top - 4096..space.ram_top + 4096).contains(&arg) {
                near_top += 1;
            } else if arg >= 1 << 32 {
                high += 1;
            }
        }
        for (kind, n) in [
            ("small", small),
            ("scratch", scratch),
            ("near top", near_top),
            ("high", high),
        ] {
            assert!(n > 1000, "{kind}: {n}");
        }
        assert!(big_numbers > 100 && big_numbers < 700, "{big_numbers}");
    }

    #[test]
    fn half_the_calls_aim_at_known_hypercalls_with_small_sub_ops() {
        let mut rng = XorShift64::new(3);
        let space = ArgSpace {
            scratch: Range::new(0x20_0000, 0x21_0000),
            ram_top: 0x100_0000,
        };
        let (mut known, mut small_cmd) = (0, 0);
        for _ in 0..10_000 {
            let (num, args) = random_call(&mut rng, &space);
            if KNOWN_NUMBERS.contains(&num) {
                known += 1;
                if args[0] <= 64 {
                    small_cmd += 1;
                }
            }
        }
        assert!((4_800..6_000).contains(&known), "{known}");
        assert!(small_cmd * 10 > known * 7, "{small_cmd} of {known}");
    }

    #[test]
    fn replaces_console_writes_that_would_print() {
        let space = ArgSpace {
            scratch: Range::new(0x20_0000, 0x21_0000),
            ram_top: 0x100_0000,
        };
        let write = |count: u64, ptr: u64| {
            must_replace(CONSOLE_IO, &[CONSOLEIO_WRITE, count, ptr, 0, 0], &space)
        };
        assert!(write(10, 0x20_0000));
        assert!(write(CONSOLEIO_MAX_BYTES, 0x100_0000 - CONSOLEIO_MAX_BYTES));
        assert!(!write(CONSOLEIO_MAX_BYTES + 1, 0x20_0000));
        assert!(!write(10, 0x100_0000 - 5));
        assert!(!write(10, 1 << 40));
        assert!(!must_replace(CONSOLE_IO, &[1, 10, 0x20_0000, 0, 0], &space));
    }

    #[test]
    fn replaces_calls_that_stop_the_domain() {
        let space = ArgSpace {
            scratch: Range::new(0x20_0000, 0x21_0000),
            ram_top: 0x100_0000,
        };
        let must_replace = |num: u64, args: &[u64; 5]| must_replace(num, args, &space);
        let args = |cmd: u64, vcpu: u64| [cmd, vcpu, 0, 0, 0];
        assert!(must_replace(SCHED_OP, &args(SCHEDOP_SHUTDOWN, 0)));
        assert!(must_replace(SCHED_OP, &args(SCHEDOP_BLOCK, 0)));
        assert!(must_replace(SCHED_OP, &args(0xffff_ffff_0000_0002, 0)));
        assert!(must_replace(
            SCHED_OP | 0x1_0000_0000,
            &args(SCHEDOP_SHUTDOWN, 0)
        ));
        assert!(!must_replace(SCHED_OP, &args(0, 0)));
        assert!(!must_replace(SCHED_OP, &args(99, 0)));
        assert!(must_replace(VCPU_OP, &args(VCPUOP_DOWN, 3)));
        assert!(must_replace(VCPU_OP, &args(VCPUOP_UP, 1)));
        assert!(must_replace(VCPU_OP, &args(VCPUOP_INITIALISE, 0)));
        assert!(must_replace(
            VCPU_OP,
            &args(VCPUOP_INITIALISE, 0x1_0000_0000)
        ));
        assert!(!must_replace(VCPU_OP, &args(VCPUOP_INITIALISE, 1)));
        assert!(!must_replace(VCPU_OP, &args(13, 0)));
        assert!(!must_replace(17, &args(2, 0)));
    }

    #[test]
    fn counts_results_by_class() {
        let mut stats = FuzzStats::default();
        for r in [0, 5, EFAULT, EINVAL, EINVAL, ENOSYS, EPERM, -62] {
            stats.count(r);
        }
        assert_eq!(stats.calls, 8);
        assert_eq!(
            (
                stats.ok(),
                stats.efault,
                stats.einval,
                stats.enosys,
                stats.other()
            ),
            (2, 1, 2, 1, 2)
        );
    }
}
