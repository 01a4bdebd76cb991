//! RDMSR/WRMSR from a domain. Every MSR is intercepted except the few VMLOAD/VMSAVE switch
//! (see `vcpu::PASSTHROUGH_MSRS`); here the rest are answered:
//!
//! | MSR | behaviour |
//! |---|---|
//! | EFER (0xc0000080) | SCE, LME, NXE writable; LMA read-only; SVME hidden |
//! | PAT (0x277) | the guest's PAT, kept in the VMCB's G_PAT (nested paging combines it) |
//! | APIC_BASE (0x1b), x2APIC (0x800-0x8ff) | the vCPU's virtual LAPIC (`microvisor_core::vlapic`); ICR writes send IPIs to sibling vCPUs |
//! | 0x40000000 | Xen's hypercall-page MSR: writing `gpa | 0` fills that page of the domain's RAM with `mov eax, n; vmmcall; ret` stubs |
//! | 0xc0010055 (K8 interrupt-pending message) | reads 0 (C1E off), writes ignored: Linux reads it without a fault handler on AMD family 0xf |
//! | anything else | #GP, as Xen does for MSRs it does not emulate |

use microvisor_core::vlapic::{Destination, IpiKind, LapicEffect, VirtualLapic};
use x86_64::registers::model_specific::EferFlags as Efer;

use crate::exits::{inject_exception, Step};
use crate::svm::{control, save};
use crate::vcpu::{self, Vcpu};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;
const MSR_K8_INT_PENDING_MSG: u32 = 0xc001_0055;
const SVME: Efer = Efer::SECURE_VIRTUAL_MACHINE_ENABLE;

pub fn access(slot: usize, id: usize, v: &mut Vcpu) -> Step {
    let vmcb = v.vmcb;
    let write = vmcb.read64(control::EXIT_INFO1) & 1 == 1;
    let msr = v.regs.rcx as u32;
    let result = if write {
        let value = (v.regs.rdx << 32) | (vmcb.read64(save::RAX) & 0xffff_ffff);
        write_msr(slot, id, v, msr, value)
    } else {
        read_msr(v, msr).map(|value| {
            vmcb.write64(save::RAX, value & 0xffff_ffff);
            v.regs.rdx = value >> 32;
        })
    };
    match result {
        Ok(()) => vmcb.write64(save::RIP, vmcb.read64(save::RIP).wrapping_add(2)),
        Err(Gp) => inject_exception(vmcb, 13),
    }
    Step::Continue
}

/// The guest gets #GP.
struct Gp;

fn read_msr(v: &Vcpu, msr: u32) -> Result<u64, Gp> {
    match msr {
        MSR_EFER => Ok(v.vmcb.read64(save::EFER) & !SVME.bits()),
        MSR_PAT => Ok(v.vmcb.read64(save::G_PAT)),
        _ if VirtualLapic::handles(msr) => v.lapic.read_msr(msr).map_err(|_| Gp),
        microvisor_core::cpuid::HYPERCALL_PAGE_MSR | MSR_K8_INT_PENDING_MSG => Ok(0),
        _ => Err(Gp),
    }
}

fn write_msr(slot: usize, id: usize, v: &mut Vcpu, msr: u32, value: u64) -> Result<(), Gp> {
    let vmcb = v.vmcb;
    match msr {
        MSR_EFER => {
            // SCE, LME, LMA (read-only, kept), NXE; everything else is reserved to the guest.
            let writable =
                Efer::SYSTEM_CALL_EXTENSIONS | Efer::LONG_MODE_ENABLE | Efer::NO_EXECUTE_ENABLE;
            if value & !(writable | Efer::LONG_MODE_ACTIVE).bits() != 0 {
                return Err(Gp);
            }
            let lma = vmcb.read64(save::EFER) & Efer::LONG_MODE_ACTIVE.bits();
            vmcb.write64(save::EFER, (value & writable.bits()) | lma | SVME.bits());
            Ok(())
        }
        MSR_PAT => {
            // Each byte a valid memory type: UC, WC, WT, WP, WB, UC-.
            if (0..8).any(|i| !matches!((value >> (i * 8)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7)) {
                return Err(Gp);
            }
            vmcb.write64(save::G_PAT, value);
            Ok(())
        }
        _ if VirtualLapic::handles(msr) => match v.lapic.write_msr(msr, value).map_err(|_| Gp)? {
            LapicEffect::None => Ok(()),
            LapicEffect::Ipi(ipi) => {
                send_ipi(slot, id, v, ipi);
                Ok(())
            }
        },
        microvisor_core::cpuid::HYPERCALL_PAGE_MSR => fill_hypercall_page(v, value),
        MSR_K8_INT_PENDING_MSG => Ok(()),
        _ => Err(Gp),
    }
}

/// Deliver an IPI a vCPU's ICR write asked for, to vCPUs of its own domain only (a LAPIC
/// ID names a vCPU of the sender's domain; nothing reaches another domain).
fn send_ipi(slot: usize, me: usize, v: &mut Vcpu, ipi: microvisor_core::vlapic::Ipi) {
    let vcpus = crate::domain::view(slot).map_or(0, |d| d.vcpus as usize);
    for target in 0..vcpus {
        let hit = match ipi.dest {
            Destination::Physical(apic_id) => apic_id as usize == target,
            Destination::SelfOnly => target == me,
            Destination::AllIncludingSelf => true,
            Destination::AllExcludingSelf => target != me,
        };
        if !hit {
            continue;
        }
        match ipi.kind {
            IpiKind::Fixed if target == me => v.lapic.raise(ipi.vector),
            IpiKind::Fixed => vcpu::post_vector(slot, target, ipi.vector),
            IpiKind::Nmi if target == me => {
                if vmcb_event_free(v) {
                    v.vmcb.write64(control::EVENT_INJ, 2 | (2 << 8) | (1 << 31));
                }
            }
            IpiKind::Nmi => vcpu::post_nmi(slot, target),
            // INIT only matters to a vCPU that is down (it then waits for STARTUP);
            // STARTUP starts such a vCPU in real mode at the vector's page.
            IpiKind::Init => {}
            IpiKind::Startup if target != me => start_vcpu(slot, target, ipi.vector),
            IpiKind::Startup => {}
        }
    }
}

fn vmcb_event_free(v: &Vcpu) -> bool {
    v.vmcb.read64(control::EVENT_INJ) & (1 << 31) == 0
}

/// STARTUP to a vCPU that is down: real mode at `vector << 12`, then runnable. A vCPU that
/// is up ignores it (Linux sends STARTUP twice, as the MP specification asks).
fn start_vcpu(slot: usize, target: usize, vector: u8) {
    if crate::scheduler::vcpu_is_up(slot, target) {
        return;
    }
    let Some(mut guard) = vcpu::slot_lock(slot, target).try_lock() else {
        return;
    };
    let Some(t) = guard.as_mut() else { return };
    vcpu::set_startup_state(t, vector);
    drop(guard);
    crate::scheduler::vcpu_up(slot, target);
}

/// Xen's hypercall page: 128 stubs of 32 bytes, `mov eax, <n>; vmmcall; ret`; the
/// `iret` stub (23) is `ud2`, since a PVH domain has no PV iret.
fn fill_hypercall_page(v: &Vcpu, value: u64) -> Result<(), Gp> {
    if value & 0xfff != 0 {
        return Err(Gp);
    }
    let view = crate::npt::NptView::from_root(v.vmcb.read64(control::N_CR3));
    let hpa = view
        .translate_owned(value)
        .filter(|_| view.is_writable(value))
        .ok_or(Gp)?;
    let mut page = [0u8; 4096];
    for (n, stub) in page.chunks_exact_mut(32).enumerate() {
        if n == 23 {
            stub[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&(n as u32).to_le_bytes());
        stub[5..8].copy_from_slice(&[0x0f, 0x01, 0xd9]);
        stub[8] = 0xc3;
    }
    crate::mem::write_phys(hpa, &page);
    Ok(())
}
