//! CPUID as a domain sees it: the host's answer filtered by the policy in
//! `microvisor_core::cpuid` (Xen's leaves at 0x40000000, the features the microvisor does
//! not virtualise hidden, the vCPU's APIC ID).

use microvisor_core::cpuid::{CpuidRegs, GuestCpuid};

use crate::svm::{save, GuestRegs, Vmcb};

pub fn emulate(vmcb: Vmcb, regs: &mut GuestRegs, vcpu_id: usize, domid: u16) {
    let leaf = vmcb.read64(save::RAX) as u32;
    let subleaf = regs.rcx as u32;
    let host = crate::arch::cpuid(leaf, subleaf);
    let policy = GuestCpuid {
        vcpu_id: vcpu_id as u32,
        apic_id: vcpu_id as u32,
        domid,
        xen_major: microvisor_abi::version::VERSION_MAJOR as u16,
        xen_minor: microvisor_abi::version::VERSION_MINOR as u16,
    };
    let r = policy.answer(
        leaf,
        subleaf,
        CpuidRegs {
            eax: host.eax,
            ebx: host.ebx,
            ecx: host.ecx,
            edx: host.edx,
        },
    );
    vmcb.write64(save::RAX, u64::from(r.eax));
    regs.rbx = u64::from(r.ebx);
    regs.rcx = u64::from(r.ecx);
    regs.rdx = u64::from(r.edx);
}
