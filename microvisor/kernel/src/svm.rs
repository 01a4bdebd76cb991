//! AMD SVM: feature checks, enabling it on a CPU, the VMCB layout we use, and the world
//! switch (`svm_run`).
//!
//! World switch protocol: the host runs with IF=0. `svm_run` saves the host's x87/SSE state
//! and loads the guest's (FXSAVE/FXRSTOR), saves the host's VMLOAD-class state (FS, GS, TR,
//! LDTR, syscall MSRs) with VMSAVE into this CPU's host area and loads the guest's with VMLOAD,
//! then `sti; vmrun`. `clgi` comes before the VMLOAD: once the guest's TR is loaded, an NMI
//! or machine check taken by the host would switch to an IST stack named by the guest's
//! TSS (a silent triple fault), so GIF stays clear from the VMLOAD of the guest's state to
//! the VMLOAD of the host's. With V_INTR_MASKING set, a physical interrupt while the guest runs
//! causes an INTR #VMEXIT. After the exit it saves the guest's state, reloads the host's, and
//! `stgi` lets the pending interrupt be taken on its IST stack (it only acknowledges the LAPIC),
//! then `cli`. TCG does not provide `nrip-save`, so the exit handlers advance RIP themselves.

use crate::arch::cpuid;
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};

const MSR_VM_CR: u32 = 0xc001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// VMCB control-area offsets.
pub mod control {
    pub const INTERCEPT_EXCEPTIONS: u64 = 0x008;
    pub const INTERCEPT_MISC1: u64 = 0x00c;
    pub const INTERCEPT_MISC2: u64 = 0x010;
    pub const IOPM_BASE_PA: u64 = 0x040;
    pub const MSRPM_BASE_PA: u64 = 0x048;
    pub const GUEST_ASID: u64 = 0x058;
    pub const TLB_CONTROL: u64 = 0x05c;
    pub const VINTR: u64 = 0x060;
    pub const EXIT_CODE: u64 = 0x070;
    pub const EXIT_INFO1: u64 = 0x078;
    pub const EXIT_INFO2: u64 = 0x080;
    pub const NP_ENABLE: u64 = 0x090;
    pub const EXIT_INT_INFO: u64 = 0x088;
    pub const EVENT_INJ: u64 = 0x0a8;
    pub const N_CR3: u64 = 0x0b0;
    pub const CLEAN_BITS: u64 = 0x0c0;
}

/// VMCB state-save-area offsets.
pub mod save {
    pub const ES: u64 = 0x400;
    pub const CS: u64 = 0x410;
    pub const SS: u64 = 0x420;
    pub const DS: u64 = 0x430;
    pub const FS: u64 = 0x440;
    pub const GS: u64 = 0x450;
    pub const GDTR: u64 = 0x460;
    pub const LDTR: u64 = 0x470;
    pub const IDTR: u64 = 0x480;
    pub const TR: u64 = 0x490;
    pub const CPL: u64 = 0x4cb;
    pub const EFER: u64 = 0x4d0;
    pub const CR4: u64 = 0x548;
    pub const CR3: u64 = 0x550;
    pub const CR0: u64 = 0x558;
    pub const DR7: u64 = 0x560;
    pub const DR6: u64 = 0x568;
    pub const CR2: u64 = 0x640;
    pub const RFLAGS: u64 = 0x570;
    pub const RIP: u64 = 0x578;
    pub const RSP: u64 = 0x5d8;
    pub const RAX: u64 = 0x5f8;
    pub const G_PAT: u64 = 0x668;
}

/// #VMEXIT codes we handle.
pub mod exit {
    pub const DB: u64 = 0x41;
    pub const AC: u64 = 0x51;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

bitflags::bitflags! {
    /// Intercept bits in INTERCEPT_MISC1: every vCPU runs with all of them set.
    pub struct InterceptMisc1: u32 {
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        const INIT = 1 << 3;
        const RDPMC = 1 << 15;
        const CPUID = 1 << 18;
        const INVD = 1 << 22;
        const HLT = 1 << 24;
        const IOIO = 1 << 27;
        const MSR = 1 << 28;
        const TASK_SWITCH = 1 << 29;
        const SHUTDOWN = 1 << 31;
    }
}
/// Intercept bits in INTERCEPT_MISC2: VMRUN (required), VMMCALL, VMLOAD, VMSAVE, STGI, CLGI,
/// SKINIT, WBINVD (a domain must not flush every cache of a shared CPU), MONITOR, MWAIT,
/// XSETBV; not ICEBP.
pub const INTERCEPT_SVM_INSNS: u32 = 0b111_1111 | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 13);

/// The SVM features the microvisor needs, checked on every CPU.
pub fn check_features() -> Result<(), &'static str> {
    if cpuid(0x8000_0000, 0).eax < 0x8000_000a {
        return Err("CPUID has no SVM leaf (0x8000000A)");
    }
    if cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err("the CPU does not support AMD SVM (CPUID 0x80000001 ECX bit 2); QEMU needs -cpu ...,+svm");
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM (checked just above).
    if unsafe { Msr::new(MSR_VM_CR).read() } & (1 << 4) != 0 {
        return Err("SVM is disabled by firmware (VM_CR.SVMDIS)");
    }
    let features = cpuid(0x8000_000a, 0);
    if features.edx & 1 == 0 {
        return Err(
            "the CPU does not support nested paging (CPUID 0x8000000A EDX bit 0); QEMU needs +npt",
        );
    }
    // EBX counts the ASIDs, 0 (the host's) included.
    if features.ebx < 2 {
        return Err("the CPU offers no guest ASID");
    }
    GUEST_ASIDS.store(features.ebx - 1, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// How many guest ASIDs (1..=n) every CPU offers (QEMU: 15; hardware: thousands).
static GUEST_ASIDS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// The ASID domain `slot` runs with: its own when the CPU has enough, else shared. Sharing is
/// safe because every VMRUN flushes the TLB (`TLB_CONTROL` = flush all).
pub fn asid_for(slot: usize) -> u32 {
    let n = GUEST_ASIDS
        .load(core::sync::atomic::Ordering::Relaxed)
        .max(1);
    1 + (slot as u32 % n)
}

/// Enable SVM on this CPU with `hsave_pa` as its host save area.
pub fn enable(hsave_pa: u64) {
    // SAFETY: SVM presence was checked by `check_features`; setting EFER.SVME and VM_HSAVE_PA
    // (a frame owned by this CPU for good) changes nothing else of the host's state.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE));
        Msr::new(MSR_VM_HSAVE_PA).write(hsave_pa);
    }
}

/// A VMCB page, accessed by offset. Only the vCPU that owns it touches it.
#[derive(Clone, Copy)]
pub struct Vmcb {
    pa: u64,
}

impl Vmcb {
    pub fn new(pa: u64) -> Self {
        Self { pa }
    }
    pub fn pa(self) -> u64 {
        self.pa
    }
    fn ptr<T>(self, offset: u64) -> *mut T {
        assert!(offset + core::mem::size_of::<T>() as u64 <= 4096);
        crate::mem::phys_ptr::<T>(self.pa + offset)
    }
    pub fn read64(self, offset: u64) -> u64 {
        // SAFETY: the VMCB frame is owned by its vCPU and the offset lies inside it (asserted).
        unsafe { core::ptr::read_volatile(self.ptr(offset)) }
    }
    pub fn write64(self, offset: u64, value: u64) {
        // SAFETY: as for read64.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value) }
    }
    pub fn write32(self, offset: u64, value: u32) {
        // SAFETY: as for read64.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value) }
    }
    pub fn write8(self, offset: u64, value: u8) {
        // SAFETY: as for read64.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value) }
    }
    /// Write a segment register: selector, attributes (VMCB format), limit, base.
    pub fn set_segment(self, offset: u64, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.write64(
            offset,
            u64::from(selector) | u64::from(attrib) << 16 | u64::from(limit) << 32,
        );
        self.write64(offset + 8, base);
    }
}

/// Guest general-purpose registers that the VMCB does not hold (RAX and RSP live there).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}
const _: () = assert!(core::mem::size_of::<GuestRegs>() == 14 * 8);
const _: () = assert!(core::mem::offset_of!(GuestRegs, rsi) == 24);
const _: () = assert!(core::mem::offset_of!(GuestRegs, r15) == 104);

/// A 512-byte FXSAVE area.
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after FNINIT with MXCSR at its reset value (0x1f80) and FCW 0x37f.
    pub fn initial() -> Self {
        let mut area = [0u8; 512];
        area[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Self(area)
    }
}

extern "C" {
    fn svm_run_asm(
        vmcb_pa: u64,
        regs: *mut GuestRegs,
        host_save_pa: u64,
        guest_fx: *mut FxArea,
        host_fx: *mut FxArea,
    );
}

/// Enter the guest until the next #VMEXIT.
///
/// # Safety
/// `vmcb` must be a fully initialised VMCB whose N_CR3 names a nested page table that maps
/// only the domain's own frames; `host_save_pa` must be this CPU's VMSAVE area (distinct from
/// VM_HSAVE_PA); no other CPU may use this VMCB, these registers or these FX areas meanwhile.
pub unsafe fn run(
    vmcb: Vmcb,
    regs: &mut GuestRegs,
    host_save_pa: u64,
    guest_fx: &mut FxArea,
    host_fx: &mut FxArea,
) {
    // SAFETY: the caller upholds the contract above; the asm saves and restores every
    // callee-saved register and the host's FS/GS/TR state.
    unsafe { svm_run_asm(vmcb.pa(), regs, host_save_pa, guest_fx, host_fx) }
}

extern "C" {
    /// The first host instruction after VMRUN in `svm_run_asm`.
    static svm_after_vmrun: u8;
}

/// Whether the guest state in `vmcb` is in fact this host's own state at the instruction
/// after VMRUN (RIP there and CR3 the microvisor's page tables), as a second #VMEXIT taken
/// while the CPU already runs the host would leave it. No CPU does that; QEMU's
/// multi-threaded TCG (7.2 and 10.0) sometimes does, and the guest's real state is then
/// gone. A guest that sets these values itself only crashes itself.
pub fn holds_host_state(vmcb: Vmcb) -> bool {
    let after_vmrun = (&raw const svm_after_vmrun) as u64;
    let host_cr3 = x86_64::registers::control::Cr3::read_raw().0;
    vmcb.read64(save::RIP) == after_vmrun
        && vmcb.read64(save::CR3) & !0xfff == host_cr3.start_address().as_u64()
}

core::arch::global_asm!(
    r#"
    .section .text.svm, "ax"
    .global svm_run_asm
svm_run_asm:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    fxsave (%r8)
    fxrstor (%rcx)
    pushq %rcx              /* guest fx   [rsp+32] */
    pushq %r8               /* host fx    [rsp+24] */
    pushq %rdx              /* host save  [rsp+16] */
    pushq %rsi              /* regs       [rsp+8]  */
    pushq %rdi              /* vmcb       [rsp+0]  */
    clgi                    /* from here to VMRUN, TR and the IST pointers are the guest's */
    movq %rdx, %rax
    vmsave %rax
    movq %rdi, %rax
    vmload %rax
    movq 0(%rsi), %rbx
    movq 8(%rsi), %rcx
    movq 16(%rsi), %rdx
    movq 32(%rsi), %rdi
    movq 40(%rsi), %rbp
    movq 48(%rsi), %r8
    movq 56(%rsi), %r9
    movq 64(%rsi), %r10
    movq 72(%rsi), %r11
    movq 80(%rsi), %r12
    movq 88(%rsi), %r13
    movq 96(%rsi), %r14
    movq 104(%rsi), %r15
    movq 24(%rsi), %rsi
    sti
    vmrun %rax
    .global svm_after_vmrun
svm_after_vmrun:
    pushq %rax
    movq 16(%rsp), %rax     /* regs */
    movq %rbx, 0(%rax)
    movq %rcx, 8(%rax)
    movq %rdx, 16(%rax)
    movq %rsi, 24(%rax)
    movq %rdi, 32(%rax)
    movq %rbp, 40(%rax)
    movq %r8, 48(%rax)
    movq %r9, 56(%rax)
    movq %r10, 64(%rax)
    movq %r11, 72(%rax)
    movq %r12, 80(%rax)
    movq %r13, 88(%rax)
    movq %r14, 96(%rax)
    movq %r15, 104(%rax)
    popq %rax
    vmsave %rax
    popq %rdi
    popq %rsi
    popq %rdx
    movq %rdx, %rax
    vmload %rax
    stgi
    cli
    popq %r8
    popq %rcx
    fxsave (%rcx)
    fxrstor (%r8)
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
"#,
    options(att_syntax)
);
