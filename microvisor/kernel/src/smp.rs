//! Bringing up the application processors: the boot-time CPU list (from the ACPI MADT),
//! the INIT/SIPI sequence through the real-mode trampoline, and the per-CPU bring-up that
//! every CPU runs (descriptor tables, LAPIC, SVM).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::cpu::MAX_CPUS;

/// APIC ID of each CPU, by CPU index (index 0 is the bootstrap CPU).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
static CPU_COUNT: AtomicUsize = AtomicUsize::new(1);
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Set when the domains are built and every CPU may start scheduling.
static GO: AtomicBool = AtomicBool::new(false);
/// Host VMSAVE areas, one frame per CPU (distinct from VM_HSAVE_PA).
static HOST_SAVE_PA: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_CPUS];

pub fn cpu_index_of_apic(apic_id: u32) -> Option<usize> {
    (0..CPU_COUNT.load(Ordering::Relaxed)).find(|&i| APIC_IDS[i].load(Ordering::Relaxed) == apic_id)
}

pub fn cpu_count() -> usize {
    CPU_COUNT.load(Ordering::Relaxed)
}

pub fn apic_id_of(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Relaxed)
}

pub fn host_save_pa(cpu: usize) -> u64 {
    HOST_SAVE_PA[cpu].load(Ordering::Relaxed)
}

/// Per-CPU set-up shared by the bootstrap CPU and the APs.
pub fn init_this_cpu(cpu: usize) -> Result<(), &'static str> {
    crate::cpu::init_this_cpu(cpu);
    crate::lapic::enable();
    crate::svm::check_features()?;
    let hsave = crate::mem::alloc_zeroed().ok_or("out of memory for the SVM host save area")?;
    let vmsave = crate::mem::alloc_zeroed().ok_or("out of memory for the host VMSAVE area")?;
    HOST_SAVE_PA[cpu].store(vmsave, Ordering::Relaxed);
    crate::svm::enable(hsave);
    Ok(())
}

/// Start every enabled CPU of the MADT other than ourselves; returns how many came online.
pub fn start_aps(apic_ids: &[u32]) -> usize {
    let bsp = crate::lapic::id();
    APIC_IDS[0].store(bsp, Ordering::Relaxed);
    let mut count = 1;
    for &id in apic_ids.iter().filter(|&&id| id != bsp) {
        if count >= MAX_CPUS {
            crate::log!("more than {MAX_CPUS} CPUs: ignoring APIC id {id}");
            continue;
        }
        APIC_IDS[count].store(id, Ordering::Relaxed);
        count += 1;
    }
    CPU_COUNT.store(count, Ordering::Release);

    let code = crate::boot::trampoline_bytes();
    crate::mem::write_phys(crate::boot::TRAMPOLINE_PA, code);
    #[allow(clippy::needless_range_loop)] // APIC_IDS is indexed by CPU number throughout
    for cpu in 1..count {
        let before = CPUS_ONLINE.load(Ordering::Acquire);
        let slot = crate::boot::TRAMPOLINE_PA + crate::boot::trampoline_stack_slot_offset() as u64;
        crate::mem::write_phys(slot, &crate::cpu::ap_stack_top(cpu).to_le_bytes());
        crate::lapic::start_ap(
            APIC_IDS[cpu].load(Ordering::Relaxed),
            (crate::boot::TRAMPOLINE_PA >> 12) as u8,
        );
        let deadline = crate::time::now_ns() + 1_000_000_000;
        while CPUS_ONLINE.load(Ordering::Acquire) == before && crate::time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if CPUS_ONLINE.load(Ordering::Acquire) == before {
            crate::log!(
                "cpu {cpu} (APIC id {}) did not come up",
                APIC_IDS[cpu].load(Ordering::Relaxed)
            );
        }
    }
    CPUS_ONLINE.load(Ordering::Acquire)
}

pub fn release_aps() {
    GO.store(true, Ordering::Release);
}

/// Rust entry of an application processor, called by the trampoline on its own stack.
#[no_mangle]
extern "C" fn ap_main() -> ! {
    let cpu = crate::lapic::current_cpu_index();
    if let Err(why) = init_this_cpu(cpu) {
        crate::log!("cpu {cpu} cannot run domains: {why}");
        crate::arch::halt_forever();
    }
    CPUS_ONLINE.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    crate::scheduler::cpu_loop(cpu)
}
