//! Running a vCPU and handling its #VMEXITs.
//!
//! `run_vcpu` keeps the vCPU on this CPU until something makes it leave: its time slice ran
//! out (the LAPIC timer's INTR exit), it yielded, blocked or went down, or its domain is
//! shutting down. An exit the microvisor cannot handle or an access to guest-physical memory
//! the domain does not own crashes that domain only; a triple fault reboots it, as in Xen.

use core::sync::atomic::Ordering;

use crate::domain::{self, ShutdownReason};
use crate::hypercall::{self, Action, Caller};
use crate::svm::{control, exit, save, FxArea, Vmcb};
use crate::vcpu;

/// Length of a time slice.
pub const SLICE_NS: u64 = 10_000_000;

pub enum Outcome {
    Preempted,
    Yielded,
    Blocked {
        wake_at_ns: Option<u64>,
    },
    Down,
    /// Its domain is shutting down; the vCPU will not run again.
    Dead,
}

/// Host FPU/SSE areas, one per CPU.
struct HostFx(core::cell::UnsafeCell<[FxArea; crate::cpu::MAX_CPUS]>);
// SAFETY: CPU i only uses element i, from its own scheduler loop.
unsafe impl Sync for HostFx {}
static HOST_FX: HostFx = HostFx(core::cell::UnsafeCell::new(
    [const { FxArea([0; 512]) }; crate::cpu::MAX_CPUS],
));

pub enum Step {
    Continue,
    Leave(Outcome),
}

pub fn run_vcpu(cpu: usize, slot: usize, id: usize) -> Outcome {
    let mut guard = vcpu::slot_lock(slot, id).lock();
    let Some(v) = guard.as_mut() else {
        return Outcome::Dead;
    };
    let Some(domain) = domain::view(slot) else {
        return Outcome::Dead;
    };
    if crate::scheduler::is_paused(slot) {
        return Outcome::Blocked { wake_at_ns: None };
    }
    if !v.has_run {
        v.has_run = true;
        if id == 0 {
            domain::first_entry(slot);
        }
    }
    // SAFETY: element `cpu` of HOST_FX is used only by this CPU (see HostFx).
    let host_fx = unsafe { &mut (*HOST_FX.0.get())[cpu] };
    let slice_end = crate::time::now_ns() + SLICE_NS;
    loop {
        if crate::scheduler::is_dying(slot) {
            crate::lapic::disarm_timer();
            return Outcome::Dead;
        }
        if crate::scheduler::is_paused(slot) {
            crate::lapic::disarm_timer();
            return Outcome::Blocked { wake_at_ns: None };
        }
        crate::pci::dispatch_interrupts();
        let now = crate::time::now_ns();
        let mut deadline = vcpu::timer(slot, id).load(Ordering::Relaxed);
        if deadline != 0 && deadline <= now {
            vcpu::timer(slot, id).store(0, Ordering::Relaxed);
            crate::events::timer_fired(slot, id);
            deadline = 0;
        }
        if now >= slice_end {
            crate::lapic::disarm_timer();
            crate::stats::PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
            return Outcome::Preempted;
        }
        let wake = if deadline == 0 {
            slice_end
        } else {
            deadline.min(slice_end)
        };
        crate::lapic::arm_timer_ns(wake - now);
        if vcpu::take_posted(slot, id, &mut v.lapic)
            && v.vmcb.read64(control::EVENT_INJ) & EVENT_VALID == 0
        {
            v.vmcb
                .write64(control::EVENT_INJ, 2 | (2 << 8) | EVENT_VALID); // NMI
        }
        inject_interrupt(slot, id, v);
        v.vmcb.write8(control::TLB_CONTROL, 1);
        v.vmcb.write64(control::CLEAN_BITS, 0);
        // SeqCst pairs with `scheduler::shootdown`: either it sees this CPU in the guest and
        // waits for the exit, or this VMRUN comes after its page-table change (and flushes).
        crate::stats::IN_GUEST[cpu].store(true, Ordering::SeqCst);
        // SAFETY: (1) the VMCB was set up by `vcpu::create` with N_CR3 = this domain's nested
        // page table, which maps only its own frames; (2) we hold this vCPU's lock, so no other
        // CPU uses its VMCB, registers or FX area; (3) host_save_pa is this CPU's VMSAVE area.
        unsafe {
            crate::svm::run(
                v.vmcb,
                &mut v.regs,
                crate::smp::host_save_pa(cpu),
                &mut v.fx,
                host_fx,
            )
        };
        crate::stats::IN_GUEST[cpu].store(false, Ordering::Release);
        crate::stats::VM_EXITS.fetch_add(1, Ordering::Relaxed);
        crate::stats::EXITS_ON_CPU[cpu].fetch_add(1, Ordering::Release);
        crate::stats::count_exit(slot, v.vmcb.read64(control::EXIT_CODE));
        if crate::svm::holds_host_state(v.vmcb) {
            crate::lapic::disarm_timer();
            let _ = crash(
                slot,
                v.vmcb,
                format_args!(
                    "its saved state is the microvisor's own after VMRUN (a second #VMEXIT \
                     on the host: an emulator fault, see svm::holds_host_state)"
                ),
            );
            return Outcome::Dead;
        }
        after_exit(v);
        let step = handle_exit(slot, id, v, &domain);
        if let Step::Leave(outcome) = step {
            crate::lapic::disarm_timer();
            return outcome;
        }
    }
}

fn advance_rip(vmcb: Vmcb, bytes: u64) {
    vmcb.write64(save::RIP, vmcb.read64(save::RIP).wrapping_add(bytes));
}

/// Inject a hardware exception (with error code 0 where the vector takes one).
pub fn inject_exception(vmcb: Vmcb, vector: u8) {
    let has_error = matches!(vector, 8 | 10..=14 | 17);
    let event = u64::from(vector) | (3 << 8) | if has_error { 1 << 11 } else { 0 } | (1 << 31);
    vmcb.write64(control::EVENT_INJ, event);
}

fn crash(slot: usize, vmcb: Vmcb, what: core::fmt::Arguments) -> Step {
    let name = domain::name_of(slot);
    let domid = domain::view(slot).map_or(0, |d| d.domid);
    crate::log!(
        "domain {domid} ({name}) crashed: {what} (rip {:#x})",
        vmcb.read64(save::RIP)
    );
    crate::scheduler::shutdown_domain(slot, ShutdownReason::Crash);
    Step::Leave(Outcome::Dead)
}

fn handle_exit(slot: usize, id: usize, v: &mut vcpu::Vcpu, domain: &domain::DomainView) -> Step {
    let vmcb = v.vmcb;
    let code = vmcb.read64(control::EXIT_CODE);
    match code {
        // The slice timer, a timer deadline or a kick: the loop looks at all three.
        exit::INTR => Step::Continue,
        exit::NMI => Step::Continue,
        exit::VMMCALL => {
            advance_rip(vmcb, 3);
            let rax = vmcb.read64(save::RAX);
            let r = &v.regs;
            let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8];
            let mut caller = Caller {
                slot,
                vcpu_id: id,
                vcpu: v,
                domain: *domain,
            };
            match hypercall::dispatch(&mut caller, rax, args) {
                Action::Return(value) => {
                    vmcb.write64(save::RAX, value as u64);
                    Step::Continue
                }
                Action::Yield => {
                    vmcb.write64(save::RAX, 0);
                    Step::Leave(Outcome::Yielded)
                }
                Action::Block => {
                    vmcb.write64(save::RAX, 0);
                    block(slot, id)
                }
                Action::Down => {
                    vmcb.write64(save::RAX, 0);
                    Step::Leave(Outcome::Down)
                }
                Action::Shutdown(reason) => {
                    crate::scheduler::shutdown_domain(slot, reason);
                    Step::Leave(Outcome::Dead)
                }
            }
        }
        exit::HLT => {
            advance_rip(vmcb, 1);
            if vmcb.read64(save::RFLAGS) & (1 << 9) == 0 {
                // Xen: HLT with interrupts off takes the vCPU down; a domain whose vCPUs are
                // all down has powered off.
                Step::Leave(Outcome::Down)
            } else if v.lapic.deliverable().is_some() {
                Step::Continue
            } else {
                block(slot, id)
            }
        }
        exit::CPUID => {
            advance_rip(vmcb, 2);
            crate::cpuid::emulate(vmcb, &mut v.regs, id, domain.domid);
            Step::Continue
        }
        exit::MSR => crate::msr::access(slot, id, v),
        exit::NPF => {
            let gpa = vmcb.read64(control::EXIT_INFO2);
            crash(
                slot,
                vmcb,
                format_args!("nested page fault at gpa {gpa:#x}"),
            )
        }
        // As in Xen (HVM_PARAM_TRIPLE_FAULT_REASON's default), a triple fault is a reboot:
        // it is how a PC resets itself when nothing else does.
        exit::SHUTDOWN => {
            let domid = domain.domid;
            crate::log!(
                "domain {domid} ({}) triple fault (rip {:#x}, rsp {:#x}, cr2 {:#x}, cr3 {:#x}, \
                 idt {:#x}, tr {:#x}, rcx {:#x}, rdi {:#x}): reboot",
                domain::name_of(slot),
                vmcb.read64(save::RIP),
                vmcb.read64(save::RSP),
                vmcb.read64(save::CR2),
                vmcb.read64(save::CR3),
                vmcb.read64(save::IDTR + 8),
                vmcb.read64(save::TR + 8),
                v.regs.rcx,
                v.regs.rdi,
            );
            crate::scheduler::shutdown_domain(slot, ShutdownReason::Reboot);
            Step::Leave(Outcome::Dead)
        }
        exit::IOIO => unclaimed_port(slot, vmcb, v),
        // Reflected into the guest (see `vcpu::create`): #DB without, #AC with an error code.
        exit::DB => {
            inject_exception(vmcb, 1);
            Step::Continue
        }
        exit::AC => {
            inject_exception(vmcb, 17);
            Step::Continue
        }
        exit::INVALID => crash(
            slot,
            vmcb,
            format_args!("invalid vCPU state (VMRUN refused it)"),
        ),
        exit::VMRUN | 0x82..=0x86 | 0x8a | 0x8b | 0x8d => {
            inject_exception(vmcb, 6); // #UD for SVM and monitor/mwait/xsetbv instructions
            Step::Continue
        }
        // INVD, WBINVD: nothing to do for a domain (its memory is write-back RAM, and a
        // passthrough device's DMA is coherent), and no cache flush of a shared CPU.
        0x76 | 0x89 => {
            advance_rip(vmcb, 2);
            Step::Continue
        }
        // RDPMC: no performance counters (CPUID shows none), #GP as with CR4.PCE clear.
        0x6f => {
            inject_exception(vmcb, 13);
            Step::Continue
        }
        0x62 | 0x63 => Step::Continue, // SMI, INIT: nothing for the guest
        other => crash(slot, vmcb, format_args!("unhandled exit {other:#x}")),
    }
}

const EVENT_VALID: u64 = 1 << 31;
const V_IRQ: u64 = 1 << 8;

/// Set or clear the virtual interrupt (V_IRQ) for the next entry: the event upcall first
/// (Xen delivers the callback vector ahead of the local APIC, and without an EOI), else the
/// highest deliverable vector of the vCPU's virtual LAPIC. The CPU delivers it once the
/// guest has IF=1 and clears V_IRQ when it does; `after_exit` then moves a LAPIC vector
/// from IRR to ISR.
fn inject_interrupt(slot: usize, id: usize, v: &mut vcpu::Vcpu) {
    const V_INTR_PRIO: u64 = 0xf << 16;
    const V_IGN_TPR: u64 = 1 << 20;
    // V_INTR_VECTOR is bits 39:32 of the same quadword.
    const V_INTR_VECTOR: u64 = 0xff << 32;
    let vmcb = v.vmcb;
    let callback = crate::events::callback_vector(slot);
    let mut vintr =
        vmcb.read64(control::VINTR) & !(0xff | V_IRQ | V_INTR_PRIO | V_IGN_TPR | V_INTR_VECTOR);
    v.injected_lapic_vector = None;
    let vector = if callback != 0 && crate::events::upcall_pending(slot, id) {
        Some(callback)
    } else if let Some(vector) = v.lapic.deliverable() {
        v.injected_lapic_vector = Some(vector);
        Some(vector)
    } else {
        None
    };
    if let Some(vector) = vector {
        vintr |= V_IRQ | V_INTR_PRIO | V_IGN_TPR | (u64::from(vector) << 32);
    }
    vmcb.write64(control::VINTR, vintr);
}

/// Bookkeeping after every #VMEXIT: a LAPIC vector the guest took goes in service, and an
/// event whose delivery the exit interrupted (EXITINTINFO) is injected again at the next
/// entry, as the hardware expects of the host.
fn after_exit(v: &mut vcpu::Vcpu) {
    let vmcb = v.vmcb;
    if let Some(vector) = v.injected_lapic_vector.take() {
        if vmcb.read64(control::VINTR) & V_IRQ == 0 {
            v.lapic.accept(vector);
        }
    }
    let interrupted = vmcb.read64(control::EXIT_INT_INFO);
    if interrupted & EVENT_VALID != 0 {
        vmcb.write64(control::EVENT_INJ, interrupted);
    }
}

/// Block until an event or the vCPU's timer, unless one is already due (Xen's
/// SCHEDOP_block returns at once when events are pending).
fn block(slot: usize, id: usize) -> Step {
    let deadline = vcpu::timer(slot, id).load(Ordering::Relaxed);
    if deadline != 0 && deadline <= crate::time::now_ns() {
        return Step::Continue;
    }
    if crate::events::upcall_pending(slot, id) || vcpu::has_posted(slot, id) {
        return Step::Continue;
    }
    Step::Leave(Outcome::Blocked {
        wake_at_ns: (deadline != 0).then_some(deadline),
    })
}

/// An I/O instruction on a port the domain was not given: as in Xen, reads return all
/// ones and writes are dropped (a probe is not an attack); string forms move their
/// pointers and count as if they had run.
fn unclaimed_port(slot: usize, vmcb: Vmcb, v: &mut vcpu::Vcpu) -> Step {
    use microvisor_core::ioexit::IoAccess;
    let info = vmcb.read64(control::EXIT_INFO1);
    let Some(access) = IoAccess::decode(info) else {
        return crash(
            slot,
            vmcb,
            format_args!("undecodable I/O intercept {info:#x}"),
        );
    };
    crate::stats::PER_DOMAIN[slot]
        .unclaimed_ports
        .fetch_add(1, Ordering::Relaxed);
    let reset = microvisor_core::guest_acpi::RESET_VALUE;
    if !access.is_in
        && !access.string
        && access.port == microvisor_core::guest_acpi::RESET_PORT
        && vmcb.read64(save::RAX) as u8 == reset
    {
        // The FADT's reset register: the domain asks to reboot (Linux's ACPI reboot).
        crate::scheduler::shutdown_domain(slot, ShutdownReason::Reboot);
        return Step::Leave(Outcome::Dead);
    }
    if !access.string {
        if access.is_in {
            vmcb.write64(save::RAX, access.unclaimed_in_rax(vmcb.read64(save::RAX)));
        }
    } else {
        let count = access.count(v.regs.rcx);
        let backwards = vmcb.read64(save::RFLAGS) & (1 << 10) != 0;
        if access.is_in {
            // INS stores to ES:RDI; in every mode a PVH domain uses, ES's base is 0.
            let mut access_mem = crate::guestmem::of_vcpu(vmcb);
            let ones = [0xffu8; 64];
            let total = count.saturating_mul(u64::from(access.size)).min(1 << 20);
            let start = if backwards {
                v.regs
                    .rdi
                    .wrapping_sub(total.saturating_sub(u64::from(access.size)))
            } else {
                v.regs.rdi
            };
            let mut done = 0;
            while done < total {
                let chunk = (total - done).min(64);
                if access_mem
                    .write(start.wrapping_add(done), &ones[..chunk as usize])
                    .is_err()
                {
                    return crash(
                        slot,
                        vmcb,
                        format_args!("INS from port {:#x} into unmapped memory", access.port),
                    );
                }
                done += chunk;
            }
            v.regs.rdi = access.advance(v.regs.rdi, count, backwards);
        } else {
            v.regs.rsi = access.advance(v.regs.rsi, count, backwards);
        }
        if access.rep {
            v.regs.rcx &= !access.address_mask();
        }
    }
    vmcb.write64(save::RIP, vmcb.read64(control::EXIT_INFO2));
    Step::Continue
}
