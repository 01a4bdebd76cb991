//! Virtual CPUs: one VMCB, register file and FPU area each, in a fixed table indexed by
//! (domain slot, vCPU id). A vCPU's lock is held by the CPU that runs it; other vCPUs only
//! `try_lock` it (VCPUOP_initialise on a sibling that is down), so two vCPUs never wait on
//! each other.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use microvisor_abi::vcpu::VcpuHvmContext;
use microvisor_core::vlapic::VirtualLapic;
use spin::Mutex;
use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::EferFlags;

use crate::domain::MAX_DOMAINS;
use crate::svm::{self, control, save, FxArea, GuestRegs, Vmcb};

pub const MAX_VCPUS_PER_DOMAIN: usize = microvisor_abi::manifest::MAX_VCPUS as usize;
pub const MAX_VCPUS: usize = MAX_DOMAINS * MAX_VCPUS_PER_DOMAIN;
/// The most vCPUs that exist at once (the scheduler's capacity): a create beyond it is
/// refused.
pub const MAX_LIVE_VCPUS: usize = 512;

pub struct Vcpu {
    pub vmcb: Vmcb,
    pub regs: GuestRegs,
    pub fx: FxArea,
    /// Guest-physical address of its `vcpu_time_info`, if registered.
    pub time_area_gpa: Option<u64>,
    /// Has been given a start state (vCPU 0 at build, others by VCPUOP_initialise).
    pub initialised: bool,
    pub has_run: bool,
    /// Its virtual local APIC (x2APIC mode from reset).
    pub lapic: VirtualLapic,
    /// A LAPIC vector set in V_IRQ at the last entry; taken once V_IRQ reads clear.
    pub injected_lapic_vector: Option<u8>,
}

static VCPUS: [Mutex<Option<Vcpu>>; MAX_VCPUS] = [const { Mutex::new(None) }; MAX_VCPUS];
/// Pending single-shot timer deadline per vCPU, in ns of system time (0 = none).
static TIMER_DEADLINE_NS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// LAPIC vectors sent to a vCPU by its siblings (a 256-bit set), merged into its virtual
/// LAPIC by the CPU that runs it; the sender never takes the target's lock.
static POSTED_VECTORS: [[AtomicU64; 4]; MAX_VCPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; MAX_VCPUS];
/// An NMI sent to a vCPU, injected at its next entry.
static POSTED_NMI: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];

/// Post a fixed interrupt to a vCPU (from a sibling's ICR write) and make it notice.
pub fn post_vector(slot: usize, vcpu: usize, vector: u8) {
    POSTED_VECTORS[index(slot, vcpu)][usize::from(vector / 64)]
        .fetch_or(1 << (vector % 64), Ordering::AcqRel);
    crate::scheduler::kick(slot, vcpu);
}

pub fn post_nmi(slot: usize, vcpu: usize) {
    POSTED_NMI[index(slot, vcpu)].store(true, Ordering::Release);
    crate::scheduler::kick(slot, vcpu);
}

/// Whether anything was posted to the vCPU since it last looked (for waking it from HLT).
pub fn has_posted(slot: usize, vcpu: usize) -> bool {
    let i = index(slot, vcpu);
    POSTED_NMI[i].load(Ordering::Acquire)
        || POSTED_VECTORS[i]
            .iter()
            .any(|w| w.load(Ordering::Acquire) != 0)
}

fn clear_posted(slot: usize, vcpu: usize) {
    let i = index(slot, vcpu);
    POSTED_VECTORS[i]
        .iter()
        .for_each(|w| w.store(0, Ordering::Release));
    POSTED_NMI[i].store(false, Ordering::Release);
}

/// Move what siblings posted into the vCPU's own LAPIC; returns whether an NMI is due.
pub fn take_posted(slot: usize, vcpu: usize, lapic: &mut VirtualLapic) -> bool {
    let i = index(slot, vcpu);
    for (word, bits) in POSTED_VECTORS[i].iter().enumerate() {
        let mut pending = bits.swap(0, Ordering::AcqRel);
        while pending != 0 {
            let bit = pending.trailing_zeros();
            pending &= pending - 1;
            lapic.raise((word as u32 * 64 + bit) as u8);
        }
    }
    POSTED_NMI[i].swap(false, Ordering::AcqRel)
}

pub fn index(slot: usize, vcpu: usize) -> usize {
    slot * MAX_VCPUS_PER_DOMAIN + vcpu
}

pub fn slot_lock(slot: usize, vcpu: usize) -> &'static Mutex<Option<Vcpu>> {
    &VCPUS[index(slot, vcpu)]
}

pub fn timer(slot: usize, vcpu: usize) -> &'static AtomicU64 {
    &TIMER_DEADLINE_NS[index(slot, vcpu)]
}

/// I/O and MSR permission maps shared by every VMCB (hardware only reads them).
static IOPM_PA: AtomicU64 = AtomicU64::new(0);
static MSRPM_PA: AtomicU64 = AtomicU64::new(0);

/// MSRs a guest may access directly: they are switched by VMLOAD/VMSAVE with the VMCB.
const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0100,
    0xc000_0101,
    0xc000_0102, // FS/GS/KERNEL_GS base
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084, // STAR, LSTAR, CSTAR, SFMASK
    0x174,
    0x175,
    0x176, // SYSENTER_CS/ESP/EIP
];

/// Build the shared permission maps: every port intercepted, every MSR intercepted except
/// the VMCB-switched ones.
pub fn init_permission_maps() -> Result<(), crate::npt::OutOfMemory> {
    let iopm = crate::mem::alloc_contiguous(3).ok_or(crate::npt::OutOfMemory)?;
    let msrpm = crate::mem::alloc_contiguous(2).ok_or(crate::npt::OutOfMemory)?;
    let ones = [0xffu8; 4096];
    for page in 0..3 {
        crate::mem::write_phys(iopm + page * 4096, &ones);
    }
    for page in 0..2 {
        crate::mem::write_phys(msrpm + page * 4096, &ones);
    }
    for msr in PASSTHROUGH_MSRS {
        let base = match msr {
            0..=0x1fff => 0,
            0xc000_0000..=0xc000_1fff => 0x800,
            _ => continue,
        };
        let bit = (msr & 0x1fff) as u64 * 2;
        let byte_pa = msrpm + base + bit / 8;
        let mut byte = [0u8];
        crate::mem::read_phys(byte_pa, &mut byte);
        byte[0] &= !(0b11 << (bit % 8));
        crate::mem::write_phys(byte_pa, &byte);
    }
    IOPM_PA.store(iopm, Ordering::Relaxed);
    MSRPM_PA.store(msrpm, Ordering::Relaxed);
    Ok(())
}

/// Create vCPU `vcpu` of the domain in `slot`, down, with a VMCB set up for nested paging.
/// A domain's own I/O permission map: every port intercepted except the given ranges.
pub fn domain_permission_map(ranges: &[microvisor_abi::manifest::IoPortRange]) -> Option<u64> {
    let iopm = crate::mem::alloc_contiguous(3)?;
    let ones = [0xffu8; 4096];
    for page in 0..3 {
        crate::mem::write_phys(iopm + page * 4096, &ones);
    }
    for range in ranges {
        for port in range.first..=range.last {
            let byte_pa = iopm + u64::from(port / 8);
            let mut byte = [0u8];
            crate::mem::read_phys(byte_pa, &mut byte);
            byte[0] &= !(1 << (port % 8));
            crate::mem::write_phys(byte_pa, &byte);
        }
    }
    Some(iopm)
}

pub fn create(
    slot: usize,
    vcpu: usize,
    npt_root: u64,
    iopm: Option<u64>,
) -> Result<(), crate::npt::OutOfMemory> {
    let vmcb = Vmcb::new(crate::mem::alloc_zeroed().ok_or(crate::npt::OutOfMemory)?);
    // #DB and #AC: a guest can make their delivery fault again forever inside the CPU
    // (XSA-156); intercepted, each delivery is a #VMEXIT the host reinjects, so the CPU
    // stays preemptible.
    vmcb.write32(control::INTERCEPT_EXCEPTIONS, (1 << 1) | (1 << 17));
    vmcb.write32(control::INTERCEPT_MISC1, svm::InterceptMisc1::all().bits());
    vmcb.write32(control::INTERCEPT_MISC2, svm::INTERCEPT_SVM_INSNS);
    vmcb.write64(
        control::IOPM_BASE_PA,
        iopm.unwrap_or(IOPM_PA.load(Ordering::Relaxed)),
    );
    vmcb.write64(control::MSRPM_BASE_PA, MSRPM_PA.load(Ordering::Relaxed));
    vmcb.write32(control::GUEST_ASID, svm::asid_for(slot));
    vmcb.write64(control::VINTR, 1 << 24); // V_INTR_MASKING: host IF governs physical interrupts
    vmcb.write64(control::NP_ENABLE, 1);
    vmcb.write64(control::N_CR3, npt_root);
    vmcb.write64(save::G_PAT, 0x0007_0406_0007_0406);
    vmcb.write64(save::DR6, 0xffff_0ff0);
    vmcb.write64(save::DR7, 0x400);
    *VCPUS[index(slot, vcpu)].lock() = Some(Vcpu {
        vmcb,
        regs: GuestRegs::default(),
        fx: FxArea::initial(),
        time_area_gpa: None,
        initialised: false,
        has_run: false,
        lapic: VirtualLapic::new(vcpu as u32, vcpu == 0),
        injected_lapic_vector: None,
    });
    timer(slot, vcpu).store(0, Ordering::Relaxed);
    clear_posted(slot, vcpu);
    Ok(())
}

/// The registers both start states share: paging off, no long mode, interrupts off, CPL 0,
/// the given CR0 and RIP, RSP and RAX zero.
fn set_unpaged_state(vmcb: Vmcb, cr0: u64, rip: u64) {
    vmcb.write64(save::CR0, cr0);
    vmcb.write64(save::CR3, 0);
    vmcb.write64(save::CR4, 0);
    vmcb.write64(save::EFER, EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits());
    vmcb.write64(save::RFLAGS, 0x2);
    vmcb.write64(save::RIP, rip);
    vmcb.write64(save::RSP, 0);
    vmcb.write64(save::RAX, 0);
    vmcb.write8(save::CPL, 0);
}

/// The PVH entry state of Xen's ABI: 32-bit flat protected mode, paging off, EBX = start info.
pub fn set_pvh_boot_state(slot: usize, vcpu: usize, entry: u64, start_info_gpa: u64) {
    let mut guard = VCPUS[index(slot, vcpu)].lock();
    let v = guard.as_mut().expect("vCPU created");
    let vmcb = v.vmcb;
    vmcb.set_segment(save::CS, 0x08, 0x0c9b, 0xffff_ffff, 0);
    for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
        vmcb.set_segment(seg, 0x10, 0x0c93, 0xffff_ffff, 0);
    }
    vmcb.set_segment(save::TR, 0, 0x008b, 0x67, 0);
    vmcb.set_segment(save::LDTR, 0, 0x0082, 0, 0);
    vmcb.set_segment(save::GDTR, 0, 0, 0, 0);
    vmcb.set_segment(save::IDTR, 0, 0, 0, 0);
    set_unpaged_state(vmcb, 0x11, entry);
    v.regs = GuestRegs {
        rbx: start_info_gpa,
        ..GuestRegs::default()
    };
    v.initialised = true;
}

/// What a STARTUP IPI does to a vCPU waiting for it: real mode at `vector << 12`
/// (CS = vector << 8, IP = 0), the state of an AP after INIT.
pub fn set_startup_state(v: &mut Vcpu, vector: u8) {
    let vmcb = v.vmcb;
    let base = u64::from(vector) << 12;
    vmcb.set_segment(save::CS, u16::from(vector) << 8, 0x009b, 0xffff, base);
    for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
        vmcb.set_segment(seg, 0, 0x0093, 0xffff, 0);
    }
    vmcb.set_segment(save::TR, 0, 0x008b, 0xffff, 0);
    vmcb.set_segment(save::LDTR, 0, 0x0082, 0xffff, 0);
    vmcb.set_segment(save::GDTR, 0, 0, 0xffff, 0);
    vmcb.set_segment(save::IDTR, 0, 0, 0xffff, 0);
    set_unpaged_state(vmcb, 0x10, 0);
    vmcb.write64(control::EVENT_INJ, 0);
    v.regs = GuestRegs::default();
    v.fx = FxArea::initial();
    v.injected_lapic_vector = None;
    v.initialised = true;
}

#[derive(Debug)]
pub enum InitError {
    /// The register state is not a valid 64-bit start state.
    Invalid,
}

/// VCPUOP_initialise with a 64-bit context: flat 64-bit segments, the given registers.
/// The control registers are checked enough that VMRUN cannot refuse them; whatever else is
/// wrong crashes only the guest.
pub fn set_hvm64_state(v: &mut Vcpu, ctx: &VcpuHvmContext) -> Result<(), InitError> {
    let long_mode = Cr0Flags::from_bits_retain(ctx.cr0)
        .contains(Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::PAGING)
        && ctx.cr4 & Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits() != 0
        && ctx.efer & EferFlags::LONG_MODE_ENABLE.bits() != 0;
    if !long_mode || ctx.cr0 >> 32 != 0 || ctx.cr4 >> 32 != 0 || ctx.efer & !0xd01 != 0 {
        return Err(InitError::Invalid);
    }
    let canonical = |a: u64| (a as i64) << 16 >> 16 == a as i64;
    if !canonical(ctx.rip) || !canonical(ctx.rsp) {
        return Err(InitError::Invalid);
    }
    let vmcb = v.vmcb;
    vmcb.set_segment(save::CS, 0x08, 0x0a9b, 0xffff_ffff, 0);
    for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
        vmcb.set_segment(seg, 0x10, 0x0c93, 0xffff_ffff, 0);
    }
    vmcb.set_segment(save::TR, 0, 0x008b, 0x67, 0);
    vmcb.set_segment(save::LDTR, 0, 0x0082, 0, 0);
    vmcb.set_segment(save::GDTR, 0, 0, 0, 0);
    vmcb.set_segment(save::IDTR, 0, 0, 0, 0);
    vmcb.write64(save::CR0, ctx.cr0 | 0x10);
    vmcb.write64(save::CR3, ctx.cr3 & 0x000f_ffff_ffff_f000);
    vmcb.write64(save::CR4, ctx.cr4);
    vmcb.write64(
        save::EFER,
        ctx.efer | (EferFlags::LONG_MODE_ACTIVE | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE).bits(),
    );
    vmcb.write64(save::RFLAGS, (ctx.rflags & 0x0024_0ed5) | 0x2);
    vmcb.write64(save::RIP, ctx.rip);
    vmcb.write64(save::RSP, ctx.rsp);
    vmcb.write64(save::RAX, ctx.rax);
    vmcb.write8(save::CPL, 0);
    v.regs = GuestRegs {
        rbx: ctx.rbx,
        rcx: ctx.rcx,
        rdx: ctx.rdx,
        rsi: ctx.rsi,
        rdi: ctx.rdi,
        rbp: ctx.rbp,
        ..GuestRegs::default()
    };
    v.fx = FxArea::initial();
    v.initialised = true;
    Ok(())
}

/// Free every vCPU of the domain in `slot` (none may be running).
pub fn destroy_all(slot: usize) {
    for id in 0..MAX_VCPUS_PER_DOMAIN {
        if let Some(v) = VCPUS[index(slot, id)].lock().take() {
            crate::mem::free(v.vmcb.pa());
        }
        timer(slot, id).store(0, Ordering::Relaxed);
    }
}
