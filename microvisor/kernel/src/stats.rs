//! Counters the microvisor keeps about itself, printed at power-off and used by benchmarks.

use core::sync::atomic::AtomicU64;

pub static VM_EXITS: AtomicU64 = AtomicU64::new(0);
pub static HYPERCALLS: AtomicU64 = AtomicU64::new(0);
pub static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
pub static EVENTS_SENT: AtomicU64 = AtomicU64::new(0);
pub static GRANT_OPS: AtomicU64 = AtomicU64::new(0);
pub static DMA_FAULTS: AtomicU64 = AtomicU64::new(0);
pub static DEVICE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Per-domain counters (by table slot), reset when a domain is built.
pub struct DomainCounters {
    pub hypercalls: AtomicU64,
    pub events_sent: AtomicU64,
    pub vm_exits: AtomicU64,
}

pub static PER_DOMAIN: [DomainCounters; crate::domain::MAX_DOMAINS] = [const {
    DomainCounters { hypercalls: AtomicU64::new(0), events_sent: AtomicU64::new(0), vm_exits: AtomicU64::new(0) }
}; crate::domain::MAX_DOMAINS];

pub fn reset_domain(slot: usize) {
    use core::sync::atomic::Ordering::Relaxed;
    PER_DOMAIN[slot].hypercalls.store(0, Relaxed);
    PER_DOMAIN[slot].events_sent.store(0, Relaxed);
    PER_DOMAIN[slot].vm_exits.store(0, Relaxed);
}

/// VM exits per CPU, so a TLB shootdown can tell a CPU has left its guest.
pub static EXITS_ON_CPU: [AtomicU64; crate::cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::cpu::MAX_CPUS];
