//! The CPUID a domain sees: the host CPU's answer, filtered, plus Xen's leaves.
//!
//! The policy keeps what a vCPU can use as it is (instructions that need nothing from the
//! microvisor) and hides what the microvisor does not virtualise: state it does not switch
//! (XSAVE state, only FXSAVE state is switched; TSC_AUX), MSRs it does not emulate (MTRR,
//! machine check, debug store, thermal, performance counters), nested virtualisation and
//! memory encryption, MONITOR/MWAIT (so idle uses HLT), and a topology other than one
//! logical processor per package. Bits not listed as kept are zero, including reserved
//! bits and features of future CPUs: the filters are allow-lists.
//!
//! | leaf | register | policy |
//! |---|---|---|
//! | 0 | EAX | min(host, 0xd) |
//! | | EBX, EDX, ECX | host vendor string (Linux uses VMMCALL for hypercalls only on AMD and Hygon) |
//! | 1 | EAX | host (family, model, stepping) |
//! | | EBX | bits 31:24 the vCPU's APIC ID, 23:16 = 1 (logical processors), 15:0 host (CLFLUSH size, brand) |
//! | | ECX | see below |
//! | | EDX | see below |
//! | 2 | all | host (cache descriptors) |
//! | 3 | all | zero (no processor serial number) |
//! | 4 | EAX | host with bits 31:14 (cores per package, threads per cache) zero; EBX, ECX, EDX host |
//! | 5 | all | zero (no MONITOR/MWAIT) |
//! | 6 | all | zero (no thermal and power management) |
//! | 7 | subleaf 0 | EAX = 0 (no further subleaves); EBX: see below; ECX, EDX zero |
//! | | subleaf ≥ 1 | zero |
//! | 8-0xd | all | zero (no DCA, no architectural PMU, no topology leaf 0xb, no XSAVE leaf 0xd) |
//! | 0xe-0x3fffffff | all | zero (above the maximum basic leaf) |
//! | 0x40000000 | all | EAX = 0x40000005 (the last Xen leaf); EBX, ECX, EDX = "XenV", "MMXe", "nVMM" |
//! | 0x40000001 | EAX | Xen version: major << 16 \| minor; EBX, ECX, EDX zero |
//! | 0x40000002 | all | EAX = 1 hypercall page; EBX = [`HYPERCALL_PAGE_MSR`]; ECX, EDX zero (no PV features) |
//! | 0x40000003 | all | zero (no TSC mode information) |
//! | 0x40000004 | all | EAX = VCPU_ID_PRESENT (bit 3) \| DOMID_PRESENT (bit 4); EBX = vCPU id; ECX = domain id; EDX zero; any subleaf |
//! | 0x40000005-0x4fffffff | all | zero (so 0x40000100, 0x40000200, ... hold no other hypervisor signature) |
//! | 0x80000000 | EAX | min(host, 0x80000008); EBX, ECX, EDX host (AMD repeats the vendor) |
//! | 0x80000001 | EAX, EBX | host (family signature, brand) |
//! | | ECX | see below |
//! | | EDX | see below |
//! | 0x80000002-0x80000004 | all | host (brand string) |
//! | 0x80000005, 0x80000006 | all | host (L1, L2 and L3 cache and TLB information) |
//! | 0x80000007 | EDX | only bit 8, invariant TSC; EAX, EBX, ECX zero (no power management, no RAS) |
//! | 0x80000008 | EAX | host (physical, virtual and guest-physical address sizes) |
//! | | EBX, ECX, EDX | zero (no CLZERO/IBPB/... extensions; ECX: one core, no APIC ID size) |
//! | 0x80000009 and up | all | zero: 0x8000000a (SVM) and 0x8000001f (SME/SEV, whose bits make Linux read an MSR before it can take a #GP) included |
//! | anything else | all | zero |
//!
//! Leaf 1 ECX ([`LEAF1_ECX_KEPT`] kept, then [`LEAF1_ECX_SET`] set):
//!
//! | bits | features | policy |
//! |---|---|---|
//! | 0, 1, 9, 13, 19, 20, 22, 23, 25, 30 | SSE3, PCLMULQDQ, SSSE3, CMPXCHG16B, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND | host |
//! | 17 | PCID | host (CR4.PCIDE and CR3 are the guest's own under SVM) |
//! | 21 | x2APIC | set: the virtual LAPIC ([`crate::vlapic`]) is x2APIC whatever the host has |
//! | 31 | hypervisor present | set |
//! | 2, 4 | DTES64, DS-CPL | clear (no debug store) |
//! | 3 | MONITOR | clear (idle must use HLT) |
//! | 5, 6 | VMX, SMX | clear (no nested virtualisation, no GETSEC) |
//! | 7, 8 | EIST, TM2 | clear (no P-state or thermal MSRs) |
//! | 10, 11, 14, 18 | CNXT-ID, SDBG, xTPR update control, DCA | clear (MSRs not emulated) |
//! | 12, 28, 29 | FMA, AVX, F16C | clear (need XSAVE-managed YMM state) |
//! | 15 | PDCM | clear (no IA32_PERF_CAPABILITIES) |
//! | 16 | reserved | clear |
//! | 24 | TSC-deadline | clear (the LAPIC timer is not run) |
//! | 26, 27 | XSAVE, OSXSAVE | clear (only FXSAVE state is switched) |
//!
//! Leaf 1 EDX ([`LEAF1_EDX_KEPT`]):
//!
//! | bits | features | policy |
//! |---|---|---|
//! | 0-6 | FPU, VME, DE, PSE, TSC, MSR, PAE | host |
//! | 8, 9, 11, 13 | CX8, APIC, SEP, PGE | host |
//! | 15-17, 19 | CMOV, PAT, PSE-36, CLFLUSH | host (PAT: the guest's PAT is G_PAT under nested paging) |
//! | 23-27 | MMX, FXSR, SSE, SSE2, self-snoop | host |
//! | 7, 14 | MCE, MCA | clear (no machine-check MSRs) |
//! | 12 | MTRR | clear (no MTRR MSRs) |
//! | 18 | PSN | clear (no serial number) |
//! | 21, 22, 29, 31 | DS, ACPI (thermal MSRs), TM, PBE | clear |
//! | 28 | HTT | clear (one logical processor per package) |
//! | 10, 20, 30 | reserved | clear |
//!
//! Leaf 7 subleaf 0 EBX ([`LEAF7_EBX_KEPT`]): FSGSBASE (0), BMI1 (3), SMEP (7), BMI2 (8),
//! ERMS (9), RDSEED (18), ADX (19), SMAP (20), CLFLUSHOPT (23), CLWB (24) and SHA (29) from
//! the host; everything else (TSC_ADJUST, AVX2 and AVX-512, which need XSAVE state, INVPCID,
//! RTM/HLE, MPX, PQM/PQE, Intel PT, ...) clear.
//!
//! Leaf 0x80000001 ECX ([`EXT1_ECX_KEPT`]):
//!
//! | bits | features | policy |
//! |---|---|---|
//! | 0, 4, 5, 6, 7, 8, 21 | LAHF/SAHF, MOV CR8 in 32-bit mode, LZCNT (ABM), SSE4a, misaligned SSE, PREFETCHW, TBM | host |
//! | 1 | CmpLegacy | clear (one core per package) |
//! | 2 | SVM | clear (no nested virtualisation) |
//! | 3 | extended APIC space | clear (x2APIC only) |
//! | 9 | OSVW | clear (MSRs not emulated) |
//! | 10 | IBS | clear |
//! | 11, 16 | XOP, FMA4 | clear (need XSAVE-managed YMM state) |
//! | 12 | SKINIT | clear |
//! | 13 | WDT | clear |
//! | 15 | LWP | clear (XSAVE state) |
//! | 17, 19 | TCE, NodeID | clear |
//! | 22 | TOPOEXT | clear (leaves 0x8000001d/e would describe the host's topology) |
//! | 23, 24, 27, 28 | PerfCtrExtCore, PerfCtrExtNB, PerfTsc, PerfCtrExtLLC | clear (no performance counters) |
//! | 26 | data breakpoint extension | clear (its address-mask MSRs are not switched) |
//! | 29 | MONITORX | clear (idle must use HLT) |
//! | 14, 18, 20, 25, 30, 31 | reserved | clear |
//!
//! Leaf 0x80000001 EDX ([`EXT1_EDX_KEPT`]):
//!
//! | bits | features | policy |
//! |---|---|---|
//! | 0-6, 8, 9, 13, 15-17, 23, 24 | AMD's copies of leaf 1 EDX (FPU ... FXSR) | host |
//! | 11, 20, 29 | SYSCALL, NX, long mode | host |
//! | 22, 30, 31 | MMX extensions, 3DNow! extensions, 3DNow! | host |
//! | 25, 26 | FFXSR, 1 GiB pages | host |
//! | 7, 12, 14 | copies of MCE, MTRR, MCA | clear, as in leaf 1 |
//! | 27 | RDTSCP | clear (TSC_AUX is not switched between domains) |
//! | 10, 18, 19, 21, 28 | reserved | clear |
//!
//! The host's answer for each leaf is taken at face value: a leaf the host does not have
//! (above its own maximum) is filtered like any other. The maxima the guest sees are never
//! above the host's, so a guest that honours them never asks for such a leaf.

/// The four result registers of CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidRegs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Where Xen's leaves start (Linux scans 0x40000000, 0x40000100, ... for the signature).
pub const XEN_CPUID_BASE: u32 = 0x4000_0000;

/// The MSR a domain writes a page's address to, to get Xen's hypercall stubs in it
/// (reported in leaf 0x40000002 EBX).
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;

/// The largest basic leaf a guest is told about.
pub const MAX_BASIC_LEAF: u32 = 0xd;
/// The largest extended leaf a guest is told about.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// The last Xen leaf (`XEN_CPUID_BASE + 5`, Xen's own count).
pub const MAX_XEN_LEAF: u32 = XEN_CPUID_BASE + 5;

/// Leaf 0x40000004 EAX: EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf 0x40000004 EAX: ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// Leaf 1 ECX bits passed through from the host.
pub const LEAF1_ECX_KEPT: u32 = bits(&[0, 1, 9, 13, 17, 19, 20, 22, 23, 25, 30]);
/// Leaf 1 ECX bits always set: x2APIC (21), hypervisor present (31).
pub const LEAF1_ECX_SET: u32 = bits(&[21, 31]);
/// Leaf 1 EDX bits passed through from the host.
pub const LEAF1_EDX_KEPT: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 13, 15, 16, 17, 19, 23, 24, 25, 26, 27,
]);
/// Leaf 7 subleaf 0 EBX bits passed through from the host.
pub const LEAF7_EBX_KEPT: u32 = bits(&[0, 3, 7, 8, 9, 18, 19, 20, 23, 24, 29]);
/// Leaf 0x80000001 ECX bits passed through from the host.
pub const EXT1_ECX_KEPT: u32 = bits(&[0, 4, 5, 6, 7, 8, 21]);
/// Leaf 0x80000001 EDX bits passed through from the host.
pub const EXT1_EDX_KEPT: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 13, 15, 16, 17, 20, 22, 23, 24, 25, 26, 29, 30, 31,
]);
/// Leaf 0x80000007 EDX bits passed through from the host: invariant TSC (8).
pub const EXT7_EDX_KEPT: u32 = bits(&[8]);
/// Leaf 4 EAX bits passed through (31:14, the topology counts, are zero).
const LEAF4_EAX_KEPT: u32 = (1 << 14) - 1;

/// Who is asking: the values that differ per vCPU and domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestCpuid {
    /// The vCPU's index in its domain (leaf 0x40000004 EBX).
    pub vcpu_id: u32,
    /// Its LAPIC ID (leaf 1 EBX bits 31:24 hold its low 8 bits).
    pub apic_id: u32,
    /// The domain's id (leaf 0x40000004 ECX).
    pub domid: u16,
    /// The Xen version reported in leaf 0x40000001.
    pub xen_major: u16,
    pub xen_minor: u16,
}

const ZERO: CpuidRegs = CpuidRegs {
    eax: 0,
    ebx: 0,
    ecx: 0,
    edx: 0,
};

impl GuestCpuid {
    /// The guest's view of (leaf, subleaf), given what the host CPU returned for the same
    /// (leaf, subleaf).
    pub fn answer(&self, leaf: u32, subleaf: u32, host: CpuidRegs) -> CpuidRegs {
        match leaf {
            0 => CpuidRegs {
                eax: host.eax.min(MAX_BASIC_LEAF),
                ..host
            },
            1 => CpuidRegs {
                eax: host.eax,
                ebx: ((self.apic_id & 0xff) << 24) | (1 << 16) | (host.ebx & 0xffff),
                ecx: (host.ecx & LEAF1_ECX_KEPT) | LEAF1_ECX_SET,
                edx: host.edx & LEAF1_EDX_KEPT,
            },
            2 => host,
            4 => CpuidRegs {
                eax: host.eax & LEAF4_EAX_KEPT,
                ..host
            },
            7 if subleaf == 0 => CpuidRegs {
                ebx: host.ebx & LEAF7_EBX_KEPT,
                ..ZERO
            },
            XEN_CPUID_BASE..=0x4fff_ffff => self.xen_leaf(leaf),
            0x8000_0000 => CpuidRegs {
                eax: host.eax.min(MAX_EXTENDED_LEAF),
                ..host
            },
            0x8000_0001 => CpuidRegs {
                ecx: host.ecx & EXT1_ECX_KEPT,
                edx: host.edx & EXT1_EDX_KEPT,
                ..host
            },
            0x8000_0002..=0x8000_0006 => host,
            0x8000_0007 => CpuidRegs {
                edx: host.edx & EXT7_EDX_KEPT,
                ..ZERO
            },
            0x8000_0008 => CpuidRegs {
                eax: host.eax,
                ..ZERO
            },
            _ => ZERO,
        }
    }

    fn xen_leaf(&self, leaf: u32) -> CpuidRegs {
        let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
        match leaf - XEN_CPUID_BASE {
            0 => CpuidRegs {
                eax: MAX_XEN_LEAF,
                ebx: word(b"XenV"),
                ecx: word(b"MMXe"),
                edx: word(b"nVMM"),
            },
            1 => CpuidRegs {
                eax: (u32::from(self.xen_major) << 16) | u32::from(self.xen_minor),
                ..ZERO
            },
            2 => CpuidRegs {
                eax: 1,
                ebx: HYPERCALL_PAGE_MSR,
                ..ZERO
            },
            4 => CpuidRegs {
                eax: XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT,
                ebx: self.vcpu_id,
                ecx: u32::from(self.domid),
                edx: 0,
            },
            _ => ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn regs(eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidRegs {
        CpuidRegs { eax, ebx, ecx, edx }
    }

    const ALL: CpuidRegs = regs(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
    const GUEST: GuestCpuid = GuestCpuid {
        vcpu_id: 1,
        apic_id: 1,
        domid: 7,
        xen_major: 4,
        xen_minor: 17,
    };

    /// What QEMU 7.2's `-cpu qemu64,+svm,+npt` (TCG) answers, for the leaves tested.
    fn qemu64(leaf: u32) -> CpuidRegs {
        match leaf {
            0 => regs(0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65), // "AuthenticAMD"
            1 => regs(0x0000_0663, 0x0000_0800, 0x8080_2001, 0x078b_fbfd),
            0x8000_0000 => regs(0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            0x8000_0001 => regs(0x0000_0663, 0, 0x0000_0065, 0x2193_fbfd),
            0x8000_0008 => regs(0x0000_3028, 0, 0, 0),
            0x8000_000a => regs(1, 0x10, 0, 1),
            _ => CpuidRegs::default(),
        }
    }

    fn ones(reg: u32) -> Vec<u32> {
        (0..32).filter(|b| reg & (1 << b) != 0).collect()
    }

    #[test]
    fn leaf_0_keeps_the_vendor_and_caps_the_maximum() {
        let r = GUEST.answer(0, 0, qemu64(0));
        assert_eq!(r, qemu64(0));
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&r.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&r.ecx.to_le_bytes());
        assert_eq!(&vendor, b"AuthenticAMD");
        let epyc = regs(0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65);
        assert_eq!(GUEST.answer(0, 0, epyc).eax, 0xd);
        assert_eq!(GUEST.answer(0, 0, regs(7, 0, 0, 0)).eax, 7);
    }

    #[test]
    fn leaf_1_on_qemu64() {
        let vcpu3 = GuestCpuid {
            vcpu_id: 3,
            apic_id: 3,
            ..GUEST
        };
        let r = vcpu3.answer(1, 0, qemu64(1));
        assert_eq!(r.eax, 0x663);
        assert_eq!(
            r.ebx, 0x0301_0800,
            "APIC ID 3, one logical CPU, CLFLUSH 64 bytes"
        );
        assert_eq!(
            r.ecx, 0x80a0_2001,
            "SSE3, CX16, POPCNT + X2APIC, HYPERVISOR"
        );
        // qemu64 less MCE (7), MTRR (12) and MCA (14).
        assert_eq!(r.edx, 0x078b_ab7d);
    }

    #[test]
    fn leaf_1_with_every_host_bit_set() {
        let r = GUEST.answer(1, 0, ALL);
        assert_eq!(r.eax, u32::MAX);
        assert_eq!(r.ebx, 0x0101_ffff);
        assert_eq!(
            ones(r.ecx),
            [0, 1, 9, 13, 17, 19, 20, 21, 22, 23, 25, 30, 31],
            "SSE3 PCLMULQDQ SSSE3 CX16 PCID SSE4.1 SSE4.2 X2APIC MOVBE POPCNT AES RDRAND HV"
        );
        for hidden in [3, 4, 5, 6, 7, 8, 12, 15, 24, 26, 27, 28, 29] {
            assert_eq!(r.ecx & (1 << hidden), 0, "ECX bit {hidden} from the brief");
        }
        assert_eq!(
            ones(r.edx),
            [0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 13, 15, 16, 17, 19, 23, 24, 25, 26, 27]
        );
        for hidden in [7, 12, 14, 21, 22, 28, 29, 31] {
            assert_eq!(r.edx & (1 << hidden), 0, "EDX bit {hidden}");
        }
        // Bits set whatever the host says.
        let bare = GUEST.answer(1, 0, CpuidRegs::default());
        assert_eq!(
            (bare.ebx, bare.ecx, bare.edx),
            (0x0101_0000, 0x8020_0000, 0)
        );
    }

    #[test]
    fn leaf_1_apic_id_is_the_low_byte() {
        let g = GuestCpuid {
            apic_id: 0xfe,
            ..GUEST
        };
        assert_eq!(g.answer(1, 0, ALL).ebx >> 24, 0xfe);
        let g = GuestCpuid {
            apic_id: 0x1_23,
            ..GUEST
        };
        assert_eq!(g.answer(1, 0, CpuidRegs::default()).ebx, 0x2301_0000);
    }

    #[test]
    fn leaf_7_allow_list() {
        let r = GUEST.answer(7, 0, ALL);
        assert_eq!(r, regs(0, 0x219c_0389, 0, 0));
        assert_eq!(ones(r.ebx), [0, 3, 7, 8, 9, 18, 19, 20, 23, 24, 29]);
        // An EPYC-like leaf 7: FSGSBASE BMI1 AVX2 SMEP BMI2 RDSEED ADX SMAP CLFLUSHOPT CLWB SHA.
        let epyc = regs(0, 0x219c_01a9, 0x0040_069c, 0x0000_0010);
        assert_eq!(GUEST.answer(7, 0, epyc), regs(0, 0x219c_0189, 0, 0));
        for subleaf in [1, 2, 0xffff_ffff] {
            assert_eq!(GUEST.answer(7, subleaf, ALL), CpuidRegs::default());
        }
    }

    #[test]
    fn leaves_passed_zeroed_or_trimmed() {
        assert_eq!(GUEST.answer(2, 0, ALL), ALL);
        assert_eq!(
            GUEST.answer(4, 1, ALL),
            regs(0x3fff, u32::MAX, u32::MAX, u32::MAX)
        );
        for leaf in [3, 5, 6, 8, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0x1f, 0x3fff_ffff] {
            for subleaf in [0, 1] {
                assert_eq!(
                    GUEST.answer(leaf, subleaf, ALL),
                    CpuidRegs::default(),
                    "{leaf:#x}"
                );
            }
        }
    }

    #[test]
    fn xen_leaves() {
        let r = GUEST.answer(0x4000_0000, 0, ALL);
        assert_eq!(r.eax, 0x4000_0005);
        assert_eq!(
            (r.ebx, r.ecx, r.edx),
            (0x566e_6558, 0x6558_4d4d, 0x4d4d_566e)
        );
        let mut signature = [0u8; 12];
        signature[..4].copy_from_slice(&r.ebx.to_le_bytes());
        signature[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        signature[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&signature, b"XenVMMXenVMM");
        assert_eq!(
            GUEST.answer(0x4000_0001, 0, ALL),
            regs(0x0004_0011, 0, 0, 0)
        );
        assert_eq!(
            GUEST.answer(0x4000_0002, 0, ALL),
            regs(1, 0x4000_0000, 0, 0)
        );
        assert_eq!(GUEST.answer(0x4000_0003, 0, ALL), CpuidRegs::default());
        assert_eq!(GUEST.answer(0x4000_0003, 2, ALL), CpuidRegs::default());
        assert_eq!(GUEST.answer(0x4000_0005, 0, ALL), CpuidRegs::default());
    }

    #[test]
    fn xen_leaf_4_names_the_vcpu_and_domain() {
        let g = GuestCpuid {
            vcpu_id: 5,
            apic_id: 5,
            domid: 0x7ff0,
            xen_major: 4,
            xen_minor: 17,
        };
        assert_eq!(g.answer(0x4000_0004, 0, ALL), regs(0x18, 5, 0x7ff0, 0));
        assert_eq!(
            g.answer(0x4000_0004, 0, ALL).eax & (1 << 6),
            0,
            "no upcall vector"
        );
        assert_eq!(
            g.answer(0x4000_0004, 3, ALL),
            regs(0x18, 5, 0x7ff0, 0),
            "any subleaf"
        );
    }

    #[test]
    fn only_one_hypervisor_signature_in_the_range() {
        // Linux looks at every 0x100 from 0x40000000 up to 0x40010000.
        for base in (0x4000_0100u32..0x4001_0000).step_by(0x100) {
            assert_eq!(
                GUEST.answer(base, 0, ALL),
                CpuidRegs::default(),
                "{base:#x}"
            );
        }
        for leaf in [0x4000_0006, 0x4000_00ff, 0x4fff_ffff] {
            assert_eq!(
                GUEST.answer(leaf, 0, ALL),
                CpuidRegs::default(),
                "{leaf:#x}"
            );
        }
    }

    #[test]
    fn extended_leaves_on_qemu64() {
        let r = GUEST.answer(0x8000_0000, 0, qemu64(0x8000_0000));
        assert_eq!(r, regs(0x8000_0008, 0x6874_7541, 0x444d_4163, 0x6974_6e65));
        let r = GUEST.answer(0x8000_0001, 0, qemu64(0x8000_0001));
        assert_eq!(r.eax, 0x663);
        assert_eq!(r.ecx, 0x61, "LAHF, ABM, SSE4a; SVM (2) hidden");
        // qemu64 less the MCE, MTRR and MCA copies: SYSCALL, NX and LM stay.
        assert_eq!(r.edx, 0x2193_ab7d);
        assert_eq!(
            GUEST.answer(0x8000_0008, 0, qemu64(0x8000_0008)),
            regs(0x3028, 0, 0, 0)
        );
        let svm = GUEST.answer(0x8000_000a, 0, qemu64(0x8000_000a));
        assert_eq!(svm, CpuidRegs::default());
    }

    #[test]
    fn extended_leaves_with_every_host_bit_set() {
        assert_eq!(GUEST.answer(0x8000_0000, 0, ALL).eax, 0x8000_0008);
        assert_eq!(
            GUEST.answer(0x8000_0000, 0, regs(0x8000_0004, 0, 0, 0)).eax,
            0x8000_0004
        );
        let r = GUEST.answer(0x8000_0001, 0, ALL);
        assert_eq!((r.eax, r.ebx), (u32::MAX, u32::MAX));
        assert_eq!(ones(r.ecx), [0, 4, 5, 6, 7, 8, 21]);
        for hidden in [2, 3, 10, 12, 13, 15, 22, 23, 24, 29] {
            assert_eq!(r.ecx & (1 << hidden), 0, "ECX bit {hidden} from the brief");
        }
        assert_eq!(r.edx & (1 << 27), 0, "RDTSCP");
        for kept in [11, 20, 26, 29] {
            assert_ne!(
                r.edx & (1 << kept),
                0,
                "SYSCALL, NX, 1 GiB pages, LM: bit {kept}"
            );
        }
        assert_eq!(r.edx, 0xe7d3_ab7f);
        for leaf in 0x8000_0002..=0x8000_0006 {
            assert_eq!(GUEST.answer(leaf, 0, ALL), ALL, "{leaf:#x}");
        }
        assert_eq!(GUEST.answer(0x8000_0007, 0, ALL), regs(0, 0, 0, 1 << 8));
        assert_eq!(
            GUEST.answer(0x8000_0007, 0, regs(0, 0, 0, 0x6799)),
            regs(0, 0, 0, 1 << 8)
        );
        assert_eq!(GUEST.answer(0x8000_0008, 0, ALL), regs(u32::MAX, 0, 0, 0));
        for leaf in [
            0x8000_0009,
            0x8000_000a,
            0x8000_001d,
            0x8000_001e,
            0x8000_001f,
            0x8000_0026,
        ] {
            assert_eq!(
                GUEST.answer(leaf, 0, ALL),
                CpuidRegs::default(),
                "{leaf:#x}"
            );
        }
        for leaf in [0x5000_0000, 0x7fff_ffff, 0x8fff_ffff, 0xc000_0000, u32::MAX] {
            assert_eq!(
                GUEST.answer(leaf, 0, ALL),
                CpuidRegs::default(),
                "{leaf:#x}"
            );
        }
    }
}
