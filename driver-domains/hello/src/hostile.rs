//! Modes that misbehave on purpose: `rogue`, `fuzz`, `double-fetch`, `evtchn-storm`, `crash`,
//! `triplefault`, `domctl-eperm`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::fuzz_policy::FuzzStats;
use driver_domains::{
    boot, cmdline, double_fetch, events, hypercall, println, smp, testing, time, BootInfo,
};

const ROGUE_VALUE: u64 = 0x0bad_c0de_0bad_c0de;

/// `mode=rogue target=0xADDR`: one 8-byte write to a guest-physical address.
pub fn rogue(info: &BootInfo) {
    let Some(target) = cmdline::get(info.cmdline, "target").and_then(cmdline::parse_u64) else {
        panic!("rogue: needs target=<address>");
    };
    println!("rogue: writing to {target:#x}");
    if let Err(e) = testing::write_u64_phys(info, target, ROGUE_VALUE) {
        println!("rogue: refused: {e}");
        hypercall::shutdown(SHUTDOWN_CRASH);
    }
    println!("rogue: write did not fault");
}

/// The calls and seed of `mode=fuzz`, for the other vCPUs.
static FUZZ_CALLS: AtomicU64 = AtomicU64::new(0);
static FUZZ_SEED: AtomicU64 = AtomicU64::new(0);
/// The other vCPUs' results, summed, and how many of them finished.
static OTHERS: spin_free::Totals = spin_free::Totals::new();
static FINISHED: AtomicU32 = AtomicU32::new(0);

/// Lock-free sums of [`FuzzStats`] fields.
mod spin_free {
    use super::*;

    pub struct Totals([AtomicU64; 9]);

    impl Totals {
        pub const fn new() -> Self {
            Totals([const { AtomicU64::new(0) }; 9])
        }

        pub fn add(&self, s: &FuzzStats) {
            let fields = [
                s.calls,
                s.zero,
                s.positive,
                s.efault,
                s.einval,
                s.enosys,
                s.eperm,
                s.other_negative,
                s.replaced,
            ];
            for (total, value) in self.0.iter().zip(fields) {
                total.fetch_add(value, Ordering::Relaxed);
            }
        }

        pub fn get(&self) -> FuzzStats {
            let v: [u64; 9] = core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed));
            FuzzStats {
                calls: v[0],
                zero: v[1],
                positive: v[2],
                efault: v[3],
                einval: v[4],
                enosys: v[5],
                eperm: v[6],
                other_negative: v[7],
                replaced: v[8],
            }
        }
    }
}

fn fuzz_on(info: &BootInfo, id: u32) -> FuzzStats {
    let calls = FUZZ_CALLS.load(Ordering::Acquire);
    let seed = FUZZ_SEED
        .load(Ordering::Acquire)
        .wrapping_add(u64::from(id).wrapping_mul(0x9e37_79b9));
    let stats = testing::fuzz_hypercalls(info, calls, seed).unwrap_or_else(|e| panic!("fuzz: {e}"));
    print_stats(&format_args!("vcpu {id}: "), &stats);
    stats
}

fn other_vcpu(id: u32) -> ! {
    let Some(info) = boot::boot_info() else {
        panic!("fuzz: vcpu {id} has no boot info");
    };
    OTHERS.add(&fuzz_on(info, id));
    FINISHED.fetch_add(1, Ordering::Release);
    smp::park()
}

/// `fuzz: <who><n> calls: ok=... other=...`.
fn print_stats(who: &dyn core::fmt::Display, stats: &FuzzStats) {
    println!(
        "fuzz: {who}{} calls: ok={} efault={} einval={} enosys={} other={}",
        stats.calls,
        stats.ok(),
        stats.efault,
        stats.einval,
        stats.enosys,
        stats.other()
    );
}

/// `mode=fuzz calls=N seed=S`: N random hypercalls on every vCPU of the domain at once
/// (vCPU `i` with seed `S + i * 0x9e3779b9`), sharing one scratch area whose words they
/// keep rewriting, so arguments change under each other's calls.
pub fn fuzz(info: &BootInfo) {
    let calls = crate::arg(info, "calls", 20_000);
    let seed = crate::arg(info, "seed", 1);
    FUZZ_CALLS.store(calls, Ordering::Release);
    FUZZ_SEED.store(seed, Ordering::Release);
    let mut started = 0;
    for id in 1..info.domain.vcpus {
        match smp::start_vcpu(id, other_vcpu) {
            Ok(()) => started += 1,
            Err(e) => println!("fuzz: vcpu {id} did not start: {e}"),
        }
    }
    let start = time::now_ns();
    let mut stats = fuzz_on(info, 0);
    while FINISHED.load(Ordering::Acquire) < started {
        hypercall::sched_yield();
    }
    let ms = (time::now_ns() - start) / 1_000_000;
    stats += OTHERS.get();
    print_stats(&"", &stats);
    println!(
        "fuzz: detail zero={} positive={} eperm={} other_negative={} replaced_by_yield={} vcpus={} ms={ms}",
        stats.zero, stats.positive, stats.eperm, stats.other_negative, stats.replaced, started + 1
    );
    println!("fuzz: done");
}

/// `mode=double-fetch calls=N`: vCPU 1 flips fields of hypercall arguments between a valid
/// and a hostile value while vCPU 0 makes N calls of each hypercall family with them (N/5 of
/// grant map and unmap; see [`double_fetch`]); prints each family's counts.
pub fn double_fetch(info: &BootInfo) {
    let calls = crate::arg(info, "calls", 20_000);
    if let Err(e) = smp::start_vcpu(1, double_fetch::flipper) {
        panic!("double-fetch: vcpu 1 did not start: {e}");
    }
    let start = time::now_ns();
    let report = double_fetch::run(info, calls).unwrap_or_else(|e| panic!("double-fetch: {e}"));
    let ms = (time::now_ns() - start) / 1_000_000;
    for f in &report.families {
        println!(
            "double-fetch: {}: {} calls: {} valid, {} hostile, {} inconsistent ({} ms)",
            f.name, f.calls, f.valid, f.hostile, f.inconsistent, f.ms
        );
    }
    let calls: u64 = report.families.iter().map(|f| f.calls).sum();
    let inconsistent: u64 = report.families.iter().map(|f| f.inconsistent).sum();
    println!(
        "double-fetch: {calls} calls in {ms} ms, {} stores by vcpu 1, {inconsistent} inconsistent",
        report.flips
    );
    println!("double-fetch: done");
}

/// `mode=crash`.
pub fn crash() -> ! {
    panic!("deliberate crash")
}

/// `mode=triplefault`.
pub fn triplefault() -> ! {
    println!("triplefault: loading an empty IDT and raising #UD");
    testing::triple_fault()
}

/// IPI bind, send and close cycles per round of `mode=evtchn-storm`.
const IPI_CYCLES: u32 = 200;
static STORM_ROUNDS: AtomicU64 = AtomicU64::new(0);
static STORM_ALLOCS: AtomicU64 = AtomicU64::new(0);
static STORM_IPIS: AtomicU64 = AtomicU64::new(0);
static STORM_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Allocates unbound ports (for this domain itself) until refused; returns them and the
/// refusal.
fn exhaust_ports(me: u16) -> (alloc::vec::Vec<events::Port>, i64) {
    let mut ports = alloc::vec::Vec::new();
    loop {
        match events::alloc_unbound(me) {
            Ok(port) => ports.push(port),
            Err(e) => return (ports, e),
        }
    }
}

fn storm_rounds(id: u32) {
    let Some(info) = boot::boot_info() else {
        panic!("evtchn-storm: vcpu {id} has no boot info");
    };
    let me = info.domain.domid;
    for _ in 0..STORM_ROUNDS.load(Ordering::Acquire) {
        let (ports, limit) = exhaust_ports(me);
        STORM_ALLOCS.fetch_add(ports.len() as u64, Ordering::Relaxed);
        STORM_LIMIT.store(limit as u64, Ordering::Relaxed);
        for &port in &ports {
            if let Err(e) = events::close(port) {
                panic!("evtchn-storm: closing port {} failed: {e}", port.0);
            }
        }
        for _ in 0..IPI_CYCLES {
            if let Ok(port) = events::bind_ipi(id) {
                let _ = events::send(port);
                let _ = events::close(port);
                // A closed port is refused, never a fault.
                let _ = events::send(port);
                STORM_IPIS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn storm_vcpu(id: u32) -> ! {
    storm_rounds(id);
    FINISHED.fetch_add(1, Ordering::Release);
    smp::park()
}

/// `mode=evtchn-storm rounds=N`: every vCPU at once, N times: allocates event-channel ports
/// until the microvisor refuses one, closes them all, then binds, raises and closes IPI
/// ports; before and after, vCPU 0 alone counts the ports it can get, which must not have
/// fallen (nothing leaked).
pub fn evtchn_storm(info: &BootInfo) {
    let rounds = crate::arg(info, "rounds", 20);
    let me = info.domain.domid;
    let (ports, limit) = exhaust_ports(me);
    let before = ports.len();
    for port in ports {
        let _ = events::close(port);
    }
    println!("evtchn-storm: {before} ports free (the next refused with {limit})");
    STORM_ROUNDS.store(rounds, Ordering::Release);
    let mut started = 0;
    for id in 1..info.domain.vcpus {
        match smp::start_vcpu(id, storm_vcpu) {
            Ok(()) => started += 1,
            Err(e) => println!("evtchn-storm: vcpu {id} did not start: {e}"),
        }
    }
    storm_rounds(0);
    while FINISHED.load(Ordering::Acquire) < started {
        hypercall::sched_yield();
    }
    let (ports, _) = exhaust_ports(me);
    let after = ports.len();
    for port in ports {
        let _ = events::close(port);
    }
    println!(
        "evtchn-storm: {rounds} rounds on {} vcpus: {} ports allocated and closed, {} ipi cycles, refusal {}",
        started + 1,
        STORM_ALLOCS.load(Ordering::Relaxed),
        STORM_IPIS.load(Ordering::Relaxed),
        STORM_LIMIT.load(Ordering::Relaxed) as i64
    );
    if after == before {
        println!("evtchn-storm: {after} ports free after: nothing leaked");
    } else {
        println!("evtchn-storm: {after} ports free after, {before} before: LEAKED");
    }
    println!("evtchn-storm: done");
}

/// `mode=domctl-eperm`: a domain that is not the control domain calls every domain-control
/// operation, aimed at domain `target` (default 1); each must be refused with `-EPERM`.
pub fn domctl_eperm(info: &BootInfo) {
    use driver_domains::abi::domctl::{CreateArgs, DomctlEntry};
    use driver_domains::abi::errno::EPERM;
    use driver_domains::domctl;
    let target = cmdline::get(info.cmdline, "target")
        .and_then(cmdline::parse_u64)
        .unwrap_or(1) as u16;
    let mut name = [0u8; 32];
    name[..5].copy_from_slice(b"rogue");
    let args = CreateArgs {
        name,
        memory_mib: 16,
        vcpus: 1,
    };
    let mut entries = [DomctlEntry::default(); 4];
    let mut vcpus = [driver_domains::abi::domctl::VcpuEntry::default(); 2];
    let mut log = [0u8; 64];
    let page = [0x90u8; 64];
    let results: [(&str, i64); 11] = [
        (
            "list",
            domctl::list(&mut entries)
                .map(|n| n as i64)
                .unwrap_or_else(|e| e),
        ),
        (
            "physinfo",
            domctl::physinfo().map(|_| 0).unwrap_or_else(|e| e),
        ),
        (
            "create",
            domctl::create(&args).map(i64::from).unwrap_or_else(|e| e),
        ),
        (
            "load",
            domctl::load(target, 0x10_0000, &page)
                .map(|()| 0)
                .unwrap_or_else(|e| e),
        ),
        (
            "set-entry",
            domctl::set_entry(target, 0x10_0000, 0x1000)
                .map(|()| 0)
                .unwrap_or_else(|e| e),
        ),
        (
            "pause",
            domctl::pause(target).map(|()| 0).unwrap_or_else(|e| e),
        ),
        (
            "unpause",
            domctl::unpause(target).map(|()| 0).unwrap_or_else(|e| e),
        ),
        (
            "destroy",
            domctl::destroy(target).map(|()| 0).unwrap_or_else(|e| e),
        ),
        (
            "dmesg",
            domctl::dmesg(&mut log)
                .map(|n| n as i64)
                .unwrap_or_else(|e| e),
        ),
        (
            "vcpu-list",
            domctl::vcpu_list(target, &mut vcpus)
                .map(|n| n as i64)
                .unwrap_or_else(|e| e),
        ),
        (
            "crash",
            domctl::crash(target).map(|()| 0).unwrap_or_else(|e| e),
        ),
    ];
    let mut refused = 0;
    for (op, ret) in results {
        println!("domctl-eperm: {op} on domain {target} -> {ret}");
        if ret == EPERM {
            refused += 1;
        }
    }
    println!(
        "domctl-eperm: {refused} of {} operations refused with EPERM",
        results.len()
    );
}
