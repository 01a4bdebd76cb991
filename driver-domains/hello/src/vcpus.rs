//! Modes that use time and several vCPUs: `hello`, `ticker`, `spin`.

use core::sync::atomic::{AtomicU32, Ordering};

use driver_domains::abi::sched::SHUTDOWN_CRASH;
use driver_domains::abi::version::{XENVER_EXTRAVERSION, XENVER_VERSION};
use driver_domains::{hypercall, println, smp, time, BootInfo};

/// How long vCPU 0 waits for the others to report before it gives up.
const REPORT_TIMEOUT_NS: u64 = 10_000_000_000;

/// Secondary vCPUs that finished their `hello` work.
static DONE: AtomicU32 = AtomicU32::new(0);

/// Starts vCPUs 1..vcpus with `entry`; returns how many started.
fn start_others(info: &BootInfo, entry: fn(u32) -> !) -> u32 {
    let mut started = 0;
    for id in 1..info.domain.vcpus {
        match smp::start_vcpu(id, entry) {
            Ok(()) => started += 1,
            Err(e) => println!("hello: vcpu {id} did not start: {e}"),
        }
    }
    started
}

/// The Xen version as `<major>.<minor><extraversion>`, printed.
fn print_xen_version() {
    let version = hypercall::xen_version(XENVER_VERSION, &mut []);
    let mut extra = [0u8; 16];
    let ret = hypercall::xen_version(XENVER_EXTRAVERSION, &mut extra);
    if version < 0 || ret < 0 {
        println!("hello: xen_version failed: version {version}, extraversion {ret}");
        return;
    }
    let len = extra.iter().position(|&b| b == 0).unwrap_or(extra.len());
    let extra = core::str::from_utf8(&extra[..len]).unwrap_or("?");
    println!("xen {}.{}{}", version >> 16, version & 0xffff, extra);
}

fn hello_vcpu(id: u32) -> ! {
    println!("vcpu {id} online");
    time::sleep_ms(50);
    DONE.fetch_add(1, Ordering::AcqRel);
    smp::park()
}

/// `mode=hello`.
pub fn hello(info: &BootInfo) {
    let domain = &info.domain;
    // The manifest's memory size; the memory map's RAM top if the microvisor did not say.
    let ram_bytes = if domain.memory_bytes != 0 {
        domain.memory_bytes
    } else {
        info.ram_bytes
    };
    println!(
        "hello from domain {}, vcpus={}, ram={} MiB",
        domain.domid,
        domain.vcpus,
        ram_bytes >> 20
    );
    print_xen_version();
    let started = start_others(info, hello_vcpu);
    let before = time::now_ns();
    time::sleep_ms(100);
    println!("slept {} ms", (time::now_ns() - before) / 1_000_000);
    let deadline = time::now_ns() + REPORT_TIMEOUT_NS;
    while DONE.load(Ordering::Acquire) < started {
        if time::now_ns() > deadline {
            println!(
                "hello: only {} of {} vcpus reported",
                DONE.load(Ordering::Acquire),
                started
            );
            hypercall::shutdown(SHUTDOWN_CRASH);
        }
        time::sleep_ms(1);
    }
    println!("hello: done");
}

/// `mode=ticker count=C interval_ms=I`.
pub fn ticker(info: &BootInfo) {
    let count = crate::arg(info, "count", 5);
    let interval_ms = crate::arg(info, "interval_ms", 100);
    for k in 1..=count {
        if k > 1 {
            time::sleep_ms(interval_ms);
        }
        println!("tick {k}");
    }
    println!("ticker: done");
}

fn spin_forever(id: u32) -> ! {
    println!("spin: vcpu {id} spinning");
    let mut counter = 0u64;
    loop {
        counter = core::hint::black_box(counter.wrapping_add(1));
    }
}

/// `mode=spin`: every vCPU spins without hypercalls, for ever.
pub fn spin(info: &BootInfo) {
    start_others(info, spin_forever);
    spin_forever(0)
}
