//! CPUID as a domain sees it: the host's leaves with SVM hidden and the hypervisor bit set,
//! plus Xen's leaves at 0x40000000 ("XenVMMXenVMM", version) so Xen-aware guests find us.

use crate::svm::{save, GuestRegs, Vmcb};

pub fn emulate(vmcb: Vmcb, regs: &mut GuestRegs, vcpu_id: usize) {
    let leaf = vmcb.read64(save::RAX) as u32;
    let subleaf = regs.rcx as u32;
    let (mut a, mut b, mut c, mut d) = match leaf {
        0x4000_0000 => (0x4000_0002, u32::from_le_bytes(*b"XenV"), u32::from_le_bytes(*b"MMXe"), u32::from_le_bytes(*b"nVMM")),
        0x4000_0001 => (microvisor_abi::version::VERSION_MAJOR << 16 | microvisor_abi::version::VERSION_MINOR, 0, 0, 0),
        0x4000_0002 => (0, 0, 0, 0), // no hypercall pages: VMMCALL directly
        0x4000_0003..=0x4fff_ffff => (0, 0, 0, 0),
        _ => {
            let r = crate::arch::cpuid(leaf, subleaf);
            (r.eax, r.ebx, r.ecx, r.edx)
        }
    };
    match leaf {
        1 => {
            c |= 1 << 31; // hypervisor present
            c &= !(1 << 5); // no VMX
            b = (b & 0x00ff_ffff) | ((vcpu_id as u32) << 24);
        }
        0x8000_0001 => c &= !(1 << 2), // no SVM
        0x8000_000a => (a, b, c, d) = (0, 0, 0, 0),
        _ => {}
    }
    vmcb.write64(save::RAX, u64::from(a));
    regs.rbx = u64::from(b);
    regs.rcx = u64::from(c);
    regs.rdx = u64::from(d);
}
