//! The microvisor: the privileged core of a disaggregated, Xen-compatible hypervisor.
//!
//! Boot (bootstrap CPU): serial → Multiboot information → ACPI (MADT, MCFG, DMAR) → frame
//! allocator → TSC and LAPIC timer calibration → descriptor tables and SVM on this CPU →
//! application processors → the compiled manifest (boot module 0) → build every domain →
//! release all CPUs into the scheduler. See `microvisor/HYPERCALLS.md` for the interface.
#![no_std]
#![no_main]

mod amdvi;
mod arch;
mod boot;
mod console;
mod cpu;
mod cpuid;
mod domain;
mod events;
mod exits;
mod grants;
mod guestmem;
mod hc_domctl;
mod hc_events;
mod hc_grants;
mod hypercall;
mod iommu;
mod lapic;
mod mem;
mod msr;
mod npt;
mod pci;
mod platform;
mod scheduler;
mod serial;
mod smp;
mod stats;
mod svm;
mod time;
mod vcpu;

// The freestanding symbols (memcpy, ...) the prebuilt core needs.
extern crate baremetal;

use arch::ExitCode;

fn refuse(why: &str) -> ! {
    log!("cannot start: {why}");
    arch::machine_exit(ExitCode::Unsupported)
}

#[no_mangle]
extern "C" fn bsp_main(magic: u32, info_pa: u32) -> ! {
    serial::init();
    log!("microvisor {} starting", env!("CARGO_PKG_VERSION"));
    if magic != 0x2bad_b002 {
        refuse("not started by a Multiboot1 loader");
    }
    let platform = platform::discover(u64::from(info_pa)).unwrap_or_else(|why| refuse(why));
    lapic::mask_legacy_pic();
    time::calibrate();
    cpu::build_idt();
    if let Err(why) = smp::init_this_cpu(0) {
        refuse(why);
    }
    lapic::calibrate();
    log!(
        "tsc {} MHz, lapic timer {} ticks/us, {} MiB free",
        time::tsc_hz() / 1_000_000,
        lapic::ticks_per_us(),
        mem::free_frames() * 4 / 1024
    );
    if vcpu::init_permission_maps().is_err() {
        refuse("out of memory for the permission maps");
    }
    let online = smp::start_aps(&platform.apic_ids);
    log!(
        "{online} of {} cpus online, SVM with nested paging on each",
        platform.apic_ids.len()
    );

    let manifest = platform::decode_manifest().unwrap_or_else(|why| refuse(why));
    platform::init_devices(&platform, manifest);
    domain::BASELINE_FRAMES.store(
        mem::allocated_frames(),
        core::sync::atomic::Ordering::Relaxed,
    );
    let count = manifest.domains.len();
    domain::NOT_YET_RUNNING.store(count as u32, core::sync::atomic::Ordering::Release);
    // Service domains first, so the others can be connected to them as they are built.
    let services = [manifest.xenstore_domain, manifest.console_domain];
    let order = (0..count)
        .filter(|i| services.contains(&Some(*i as u8)))
        .chain((0..count).filter(|i| !services.contains(&Some(*i as u8))));
    for index in order {
        if let Err(why) = domain::build(index, index, domain::Lineage::default()) {
            log!("domain {} not built: {why}", manifest.domains[index].name);
            let _ = domain::NOT_YET_RUNNING.fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
        }
    }
    log!("ready: {count} domains in the manifest");
    domain::check_all_gone();
    smp::release_aps();
    scheduler::cpu_loop(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::force_log(format_args!(
        "PANIC on cpu {}: {info}",
        lapic::current_cpu_index()
    ));
    arch::machine_exit(ExitCode::Panic)
}
