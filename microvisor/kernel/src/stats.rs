//! Counters the microvisor keeps about itself, printed at power-off and used by benchmarks.

use core::sync::atomic::AtomicU64;

pub static VM_EXITS: AtomicU64 = AtomicU64::new(0);
pub static HYPERCALLS: AtomicU64 = AtomicU64::new(0);
pub static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
