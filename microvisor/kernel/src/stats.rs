//! Counters the microvisor keeps about itself, printed at power-off and used by benchmarks.

use core::sync::atomic::{AtomicBool, AtomicU64};
use crossbeam_utils::CachePadded;

pub static VM_EXITS: AtomicU64 = AtomicU64::new(0);
pub static HYPERCALLS: AtomicU64 = AtomicU64::new(0);
pub static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
pub static EVENTS_SENT: AtomicU64 = AtomicU64::new(0);
pub static GRANT_OPS: AtomicU64 = AtomicU64::new(0);
pub static DMA_FAULTS: AtomicU64 = AtomicU64::new(0);
pub static DEVICE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Kinds of #VMEXIT counted per domain, by [`exit_kind`].
pub const EXIT_KIND_NAMES: [&str; 9] = [
    "intr", "vmmcall", "hlt", "cpuid", "msr", "ioio", "npf", "vintr", "other",
];
/// Hypercall numbers counted one by one (Xen's are all below 48; ours is 64).
pub const COUNTED_HYPERCALLS: usize = 48;

/// Per-domain counters (by table slot), reset when a domain is built.
pub struct DomainCounters {
    pub hypercalls: AtomicU64,
    pub events_sent: AtomicU64,
    pub vm_exits: AtomicU64,
    /// Time its vCPUs held a CPU, in ns.
    pub cpu_ns: AtomicU64,
    pub unclaimed_ports: AtomicU64,
    pub exits_by_kind: [AtomicU64; EXIT_KIND_NAMES.len()],
    /// By hypercall number; the last slot counts every number at or above it.
    pub hypercalls_by_number: [AtomicU64; COUNTED_HYPERCALLS + 1],
}

pub static PER_DOMAIN: [DomainCounters; crate::domain::MAX_DOMAINS] = [const {
    DomainCounters {
        hypercalls: AtomicU64::new(0),
        events_sent: AtomicU64::new(0),
        vm_exits: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        unclaimed_ports: AtomicU64::new(0),
        exits_by_kind: [const { AtomicU64::new(0) }; EXIT_KIND_NAMES.len()],
        hypercalls_by_number: [const { AtomicU64::new(0) }; COUNTED_HYPERCALLS + 1],
    }
};
    crate::domain::MAX_DOMAINS];

/// The index in [`EXIT_KIND_NAMES`] of an SVM exit code.
pub fn exit_kind(code: u64) -> usize {
    use crate::svm::exit;
    match code {
        exit::INTR => 0,
        exit::VMMCALL => 1,
        exit::HLT => 2,
        exit::CPUID => 3,
        exit::MSR => 4,
        exit::IOIO => 5,
        exit::NPF => 6,
        0x64 => 7,
        _ => 8,
    }
}

pub fn count_exit(slot: usize, code: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    PER_DOMAIN[slot].vm_exits.fetch_add(1, Relaxed);
    PER_DOMAIN[slot].exits_by_kind[exit_kind(code)].fetch_add(1, Relaxed);
}

pub fn count_hypercall(slot: usize, number: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    HYPERCALLS.fetch_add(1, Relaxed);
    PER_DOMAIN[slot].hypercalls.fetch_add(1, Relaxed);
    PER_DOMAIN[slot].hypercalls_by_number[(number as usize).min(COUNTED_HYPERCALLS)]
        .fetch_add(1, Relaxed);
}

/// Each vCPU's time on a CPU, in ns, by `slot * MAX_VCPUS_PER_DOMAIN + vcpu`.
static VCPU_NS: [AtomicU64; crate::vcpu::MAX_VCPUS] =
    [const { AtomicU64::new(0) }; crate::vcpu::MAX_VCPUS];

pub fn add_vcpu_ns(slot: usize, vcpu: usize, ns: u64) {
    if let Some(c) = VCPU_NS.get(slot * crate::vcpu::MAX_VCPUS_PER_DOMAIN + vcpu) {
        c.fetch_add(ns, core::sync::atomic::Ordering::Relaxed);
    }
}

pub fn vcpu_ns(slot: usize, vcpu: usize) -> u64 {
    VCPU_NS
        .get(slot * crate::vcpu::MAX_VCPUS_PER_DOMAIN + vcpu)
        .map_or(0, |c| c.load(core::sync::atomic::Ordering::Relaxed))
}

pub fn reset_domain(slot: usize) {
    use core::sync::atomic::Ordering::Relaxed;
    for vcpu in 0..crate::vcpu::MAX_VCPUS_PER_DOMAIN {
        if let Some(c) = VCPU_NS.get(slot * crate::vcpu::MAX_VCPUS_PER_DOMAIN + vcpu) {
            c.store(0, Relaxed);
        }
    }
    let c = &PER_DOMAIN[slot];
    c.hypercalls.store(0, Relaxed);
    c.events_sent.store(0, Relaxed);
    c.vm_exits.store(0, Relaxed);
    c.cpu_ns.store(0, Relaxed);
    c.unclaimed_ports.store(0, Relaxed);
    c.exits_by_kind
        .iter()
        .chain(c.hypercalls_by_number.iter())
        .for_each(|n| n.store(0, Relaxed));
}

/// Log a domain's exits by kind and hypercalls by number (at its teardown), on two lines.
pub fn log_domain(slot: usize, domid: u16, name: &str) {
    use core::fmt::Write;
    use core::sync::atomic::Ordering::Relaxed;
    let c = &PER_DOMAIN[slot];
    let mut line: heapless::String<400> = heapless::String::new();
    for (kind, n) in EXIT_KIND_NAMES.iter().zip(&c.exits_by_kind) {
        let n = n.load(Relaxed);
        if n != 0 {
            let _ = write!(line, " {kind} {n},");
        }
    }
    crate::log!(
        "domain {domid} ({name}) vm exits by kind:{} unclaimed ports {}",
        line.trim_end_matches(','),
        c.unclaimed_ports.load(Relaxed)
    );
    line.clear();
    for (number, n) in c.hypercalls_by_number.iter().enumerate() {
        let n = n.load(Relaxed);
        if n != 0 {
            let _ = write!(
                line,
                " {number}{}:{n},",
                if number == COUNTED_HYPERCALLS {
                    "+"
                } else {
                    ""
                }
            );
        }
    }
    crate::log!(
        "domain {domid} ({name}) hypercalls by number:{}",
        line.trim_end_matches(',')
    );
}

/// VM exits per CPU, so a TLB shootdown can tell a CPU has left its guest. Each CPU's
/// counter has a cache line of its own: it is written at every #VMEXIT.
pub static EXITS_ON_CPU: [CachePadded<AtomicU64>; crate::cpu::MAX_CPUS] =
    [const { CachePadded::new(AtomicU64::new(0)) }; crate::cpu::MAX_CPUS];

/// Whether each CPU is (about to be) inside a guest: set before VMRUN, cleared after the
/// #VMEXIT. A CPU outside its guest needs no shootdown: its next VMRUN flushes the TLB.
/// One cache line per CPU, as for `EXITS_ON_CPU`.
pub static IN_GUEST: [CachePadded<AtomicBool>; crate::cpu::MAX_CPUS] =
    [const { CachePadded::new(AtomicBool::new(false)) }; crate::cpu::MAX_CPUS];
