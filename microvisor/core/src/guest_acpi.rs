//! The ACPI tables a PVH domain gets, all in one 4 KiB page.
//!
//! ACPI is optional in the PVH ABI, but Xen's toolstack builds tables for every PVH domain
//! and Linux 6.1 depends on them: without a MADT it neither starts its other vCPUs nor sets
//! up the Xen timer. The set here is the smallest one that Linux (ACPICA) accepts:
//!
//! | offset | table | contents |
//! |---|---|---|
//! | 0 | RSDP | revision 2, OEM "MVISOR", RSDT address 0, XSDT address |
//! | 48 | XSDT | revision 1: → FADT, MADT |
//! | 112 | FADT ("FACP") | revision 6.0 (276 bytes): see below |
//! | 400 | DSDT | revision 2, body `Scope (\_SB_) {}` (7 bytes of AML) |
//! | 448 | MADT ("APIC") | revision 5: local APIC at 0xfee00000, flags 0 (no 8259), one Processor Local APIC entry per vCPU |
//!
//! Every table starts on a 16-byte boundary and carries the header OEM id "MVISOR", OEM
//! table id "MICROVSR", OEM revision 1, creator "MVSR", creator revision 1.
//!
//! FADT: hardware-reduced ACPI, so there is no SCI (SCI_INT 0), no FACS (FIRMWARE_CTRL and
//! X_FIRMWARE_CTRL 0, allowed when HW_REDUCED_ACPI is set), no PM1/PM2/PM-timer/GPE blocks,
//! no reset register and no sleep control/status registers; preferred PM profile 0
//! (unspecified); DSDT and X_DSDT both point at the DSDT (the spec lets both be set when
//! they agree); hypervisor vendor identity "MVISOR\0\0". Flags ([`FADT_FLAGS`]):
//!
//! | bit | flag | why |
//! |---|---|---|
//! | 0 | WBINVD | WBINVD works (the spec requires it on every ACPI system) |
//! | 4 | PWR_BUTTON | set = the power button, if any, is a control-method device: there is no fixed-feature button |
//! | 5 | SLP_BUTTON | the same for the sleep button |
//! | 19 | FORCE_APIC_PHYSICAL_DESTINATION_MODE | makes Linux pick physical x2APIC mode, which is what [`crate::vlapic`] routes |
//! | 10 | RESET_REG_SUP | the reset register below exists: Linux's `reboot` writes it first |
//! | 20 | HW_REDUCED_ACPI | no fixed hardware: Linux installs no PIT, HPET, PIC or PM timer |
//!
//! RESET_REG is the byte-wide I/O port [`RESET_PORT`] (0xcf9, where PC chipsets have it) and
//! RESET_VALUE is [`RESET_VALUE`]; the microvisor reads that write as the domain asking to
//! reboot, as Xen's emulated chipset does.
//!
//! IAPC_BOOT_ARCH ([`IAPC_BOOT_ARCH`]) is VGA not present (bit 2) and CMOS RTC not present
//! (bit 5); bit 1 (8042) is clear, so Linux does not probe a keyboard controller.
//!
//! MADT entries are type 0 (8 bytes): ACPI processor UID = APIC ID = vCPU index, flags 1
//! (enabled). Type 0 holds 8-bit IDs and ID 0xff is reserved for x2APIC entries, so at most
//! [`MAX_VCPUS`] vCPUs (IDs 0..=254) are described. There is no IO-APIC entry: a PVH domain
//! has no IO-APIC.
//!
//! The DSDT body is a well-formed empty scope rather than nothing, so no AML loader can
//! object to a zero-length definition block. There is no `\_S5`: with neither `\_S5` nor
//! sleep registers the guest has no ACPI way to power off, and a PVH Linux then halts every
//! vCPU with interrupts off, which the microvisor treats as power-off, as Xen does.

/// The local APIC address the MADT reports.
pub const LAPIC_BASE: u64 = 0xfee0_0000;

/// Most vCPUs the MADT describes (type 0 entries: APIC IDs 0..=254).
pub const MAX_VCPUS: u32 = 255;

/// The FADT flags (see the module documentation).
pub const FADT_FLAGS: u32 = (1 << 0) | (1 << 4) | (1 << 5) | (1 << 10) | (1 << 19) | (1 << 20);

/// The FADT's reset register: a byte written to this I/O port...
pub const RESET_PORT: u16 = 0xcf9;
/// ...with this value resets (reboots) the domain.
pub const RESET_VALUE: u8 = 0x06;

/// IA-PC boot architecture flags: VGA not present (2), CMOS RTC not present (5).
pub const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);

/// Why the tables cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAcpiError {
    /// Zero vCPUs, or more than the MADT can describe ([`MAX_VCPUS`]).
    TooManyVcpus(u32),
    /// The page's guest-physical address is not 4 KiB aligned.
    UnalignedPage(u64),
    /// The page does not lie below 4 GiB (the FADT's 32-bit DSDT pointer must reach it).
    PageAbove4GiB(u64),
}

impl core::fmt::Display for GuestAcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooManyVcpus(n) => {
                write!(f, "ACPI tables describe 1 to {MAX_VCPUS} vCPUs, not {n}")
            }
            Self::UnalignedPage(gpa) => write!(f, "ACPI page at {gpa:#x} is not page aligned"),
            Self::PageAbove4GiB(gpa) => write!(f, "ACPI page at {gpa:#x} is not below 4 GiB"),
        }
    }
}

const PAGE_BYTES: usize = 4096;
const HEADER_BYTES: usize = 36;

const RSDP_AT: usize = 0;
const RSDP_BYTES: usize = 36;
const XSDT_AT: usize = align16(RSDP_AT + RSDP_BYTES);
const XSDT_BYTES: usize = HEADER_BYTES + 2 * 8;
const FADT_AT: usize = align16(XSDT_AT + XSDT_BYTES);
const FADT_BYTES: usize = 276;
const DSDT_AT: usize = align16(FADT_AT + FADT_BYTES);
/// `Scope (\_SB_) {}`: ScopeOp, PkgLength 6 (itself and the 5-byte name), `\`, `_SB_`.
const DSDT_AML: [u8; 7] = [0x10, 0x06, b'\\', b'_', b'S', b'B', b'_'];
const DSDT_BYTES: usize = HEADER_BYTES + DSDT_AML.len();
const MADT_AT: usize = align16(DSDT_AT + DSDT_BYTES);
const MADT_FIXED_BYTES: usize = HEADER_BYTES + 8;
const LAPIC_ENTRY_BYTES: usize = 8;

// The largest MADT fits the page, so no vCPU count within the limit can overflow it.
const _: () =
    assert!(MADT_AT + MADT_FIXED_BYTES + MAX_VCPUS as usize * LAPIC_ENTRY_BYTES <= PAGE_BYTES);
const _: () = assert!(XSDT_AT == 48 && FADT_AT == 112 && DSDT_AT == 400 && MADT_AT == 448);

const fn align16(offset: usize) -> usize {
    (offset + 15) & !15
}

/// Writes RSDP (rev 2), XSDT, FADT, MADT, DSDT into `page` (which will sit at
/// guest-physical `page_gpa`), returns the RSDP's GPA.
/// `apic_id(i)` of vCPU i is `i` (the LAPIC ID the microvisor reports for vCPU i), ACPI
/// processor UID = i.
///
/// The whole page is written (bytes after the tables are zero); on an error it is left
/// untouched.
pub fn build_guest_acpi(
    page: &mut [u8; 4096],
    page_gpa: u64,
    vcpus: u32,
) -> Result<u64, GuestAcpiError> {
    if !page_gpa.is_multiple_of(PAGE_BYTES as u64) {
        return Err(GuestAcpiError::UnalignedPage(page_gpa));
    }
    if page_gpa > (1 << 32) - PAGE_BYTES as u64 {
        return Err(GuestAcpiError::PageAbove4GiB(page_gpa));
    }
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(GuestAcpiError::TooManyVcpus(vcpus));
    }
    let gpa = |offset: usize| page_gpa + offset as u64;
    page.fill(0);

    // RSDP: checksum (byte 8) over the first 20 bytes, extended checksum (byte 32) over 36.
    page[RSDP_AT..RSDP_AT + 8].copy_from_slice(b"RSD PTR ");
    page[RSDP_AT + 9..RSDP_AT + 15].copy_from_slice(b"MVISOR");
    page[RSDP_AT + 15] = 2;
    put_u32(page, RSDP_AT + 16, 0);
    put_u32(page, RSDP_AT + 20, RSDP_BYTES as u32);
    put_u64(page, RSDP_AT + 24, gpa(XSDT_AT));
    page[RSDP_AT + 8] = checksum(&page[RSDP_AT..RSDP_AT + 20]);
    page[RSDP_AT + 32] = checksum(&page[RSDP_AT..RSDP_AT + RSDP_BYTES]);

    header(page, XSDT_AT, b"XSDT", XSDT_BYTES, 1);
    put_u64(page, XSDT_AT + HEADER_BYTES, gpa(FADT_AT));
    put_u64(page, XSDT_AT + HEADER_BYTES + 8, gpa(MADT_AT));
    seal(page, XSDT_AT, XSDT_BYTES);

    // FADT 6.0; fields not written stay zero (FACS, SCI, legacy blocks, GAS registers).
    header(page, FADT_AT, b"FACP", FADT_BYTES, 6);
    put_u32(page, FADT_AT + 40, gpa(DSDT_AT) as u32); // DSDT
    page[FADT_AT + 45] = 0; // preferred PM profile: unspecified
    put_u16(page, FADT_AT + 46, 0); // SCI_INT
    put_u16(page, FADT_AT + 109, IAPC_BOOT_ARCH);
    put_u32(page, FADT_AT + 112, FADT_FLAGS);
    // RESET_REG, a generic address: System I/O space, 8 bits wide, offset 0, byte access.
    page[FADT_AT + 116..FADT_AT + 120].copy_from_slice(&[1, 8, 0, 1]);
    put_u64(page, FADT_AT + 120, u64::from(RESET_PORT));
    page[FADT_AT + 128] = RESET_VALUE;
    page[FADT_AT + 131] = 0; // FADT minor version
    put_u64(page, FADT_AT + 140, gpa(DSDT_AT)); // X_DSDT
    page[FADT_AT + 268..FADT_AT + 276].copy_from_slice(b"MVISOR\0\0");
    seal(page, FADT_AT, FADT_BYTES);

    header(page, DSDT_AT, b"DSDT", DSDT_BYTES, 2);
    page[DSDT_AT + HEADER_BYTES..DSDT_AT + DSDT_BYTES].copy_from_slice(&DSDT_AML);
    seal(page, DSDT_AT, DSDT_BYTES);

    let madt_bytes = MADT_FIXED_BYTES + vcpus as usize * LAPIC_ENTRY_BYTES;
    header(page, MADT_AT, b"APIC", madt_bytes, 5);
    put_u32(page, MADT_AT + 36, LAPIC_BASE as u32);
    put_u32(page, MADT_AT + 40, 0);
    for vcpu in 0..vcpus as usize {
        let entry = MADT_AT + MADT_FIXED_BYTES + vcpu * LAPIC_ENTRY_BYTES;
        // vcpu < MAX_VCPUS = 255, so it fits the 8-bit fields.
        page[entry..entry + 4].copy_from_slice(&[
            0,
            LAPIC_ENTRY_BYTES as u8,
            vcpu as u8,
            vcpu as u8,
        ]);
        put_u32(page, entry + 4, 1);
    }
    seal(page, MADT_AT, madt_bytes);

    Ok(gpa(RSDP_AT))
}

/// The 36-byte system description table header, checksum left zero.
fn header(page: &mut [u8], at: usize, signature: &[u8; 4], length: usize, revision: u8) {
    page[at..at + 4].copy_from_slice(signature);
    put_u32(page, at + 4, length as u32);
    page[at + 8] = revision;
    page[at + 9] = 0;
    page[at + 10..at + 16].copy_from_slice(b"MVISOR");
    page[at + 16..at + 24].copy_from_slice(b"MICROVSR");
    put_u32(page, at + 24, 1);
    page[at + 28..at + 32].copy_from_slice(b"MVSR");
    put_u32(page, at + 32, 1);
}

/// Sets the header checksum (byte 9) so the table's bytes sum to zero.
fn seal(page: &mut [u8], at: usize, length: usize) {
    page[at + 9] = 0;
    page[at + 9] = checksum(&page[at..at + length]);
}

/// The byte that makes `bytes` plus it sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)))
}

fn put_u16(page: &mut [u8], at: usize, value: u16) {
    page[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(page: &mut [u8], at: usize, value: u32) {
    page[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(page: &mut [u8], at: usize, value: u64) {
    page[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::{parse_acpi, parse_acpi_at};
    use crate::phys::fake::FakePhys;

    const GPA: u64 = 0xfc00_0000;

    fn built(gpa: u64, vcpus: u32) -> [u8; 4096] {
        let mut page = [0xaa; 4096];
        assert_eq!(build_guest_acpi(&mut page, gpa, vcpus), Ok(gpa));
        page
    }

    fn memory(gpa: u64, page: &[u8; 4096]) -> FakePhys {
        let mut mem = FakePhys::default().with_region(gpa, 4096);
        mem.put(gpa, page);
        mem
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
    }

    fn u16_at(page: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(page[at..at + 2].try_into().unwrap())
    }

    fn u32_at(page: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(page[at..at + 4].try_into().unwrap())
    }

    fn u64_at(page: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(page[at..at + 8].try_into().unwrap())
    }

    /// Page offset of a guest-physical address that must lie in the page.
    fn offset(gpa: u64) -> usize {
        assert!(
            (GPA..GPA + 4096).contains(&gpa),
            "{gpa:#x} outside the page"
        );
        (gpa - GPA) as usize
    }

    #[test]
    fn the_host_parser_reads_them_back() {
        for vcpus in [1, 2, 4, 64] {
            let page = built(GPA, vcpus);
            let info = parse_acpi_at(&memory(GPA, &page), GPA).unwrap();
            assert!(info.bad_tables.is_empty(), "{:?}", info.bad_tables);
            assert!(info.madt_present);
            assert_eq!(info.local_apic_pa, 0xfee0_0000);
            assert_eq!(info.cpus.len(), vcpus as usize);
            assert!(!info.cpus_truncated);
            for (i, cpu) in info.cpus.iter().enumerate() {
                let i = i as u32;
                assert_eq!((cpu.apic_id, cpu.acpi_uid, cpu.enabled), (i, i, true));
                assert!(!cpu.online_capable);
            }
            assert!(info.ioapic.is_none());
            assert!(info.mcfg.is_empty() && info.dmar.is_none() && !info.ivrs_present);
            // RSDP, XSDT, FADT, DSDT (found through the FADT) and MADT, all in the page.
            let (start, end) = (
                info.reserved_ranges[0].0,
                info.reserved_ranges.last().unwrap().1,
            );
            assert!(
                start == GPA && end <= GPA + 4096,
                "{:?}",
                info.reserved_ranges
            );
            let dsdt = (GPA + 400, GPA + 443);
            assert!(info
                .reserved_ranges
                .iter()
                .any(|r| r.0 <= dsdt.0 && dsdt.1 <= r.1));
        }
    }

    #[test]
    fn a_bios_style_scan_finds_the_rsdp_too() {
        let page = built(0xe_0000, 3);
        let mut mem = FakePhys::default().with_region(0, 0x1000);
        mem.regions.push((0xe_0000, page.to_vec()));
        let info = parse_acpi(&mem).unwrap();
        assert_eq!(info.rsdp_pa, 0xe_0000);
        assert_eq!(info.cpus.len(), 3);
    }

    #[test]
    fn every_checksum_sums_to_zero() {
        for vcpus in [1, 17, 255] {
            let page = built(GPA, vcpus);
            assert_eq!(sum(&page[..20]), 0, "RSDP checksum");
            assert_eq!(sum(&page[..36]), 0, "RSDP extended checksum");
            let xsdt = offset(u64_at(&page, 24));
            let xsdt_len = u32_at(&page, xsdt + 4) as usize;
            assert_eq!(sum(&page[xsdt..xsdt + xsdt_len]), 0, "XSDT");
            let mut tables = vec![];
            for entry in (xsdt + 36..xsdt + xsdt_len).step_by(8) {
                tables.push(offset(u64_at(&page, entry)));
            }
            let fadt = tables[0];
            tables.push(offset(u64_at(&page, fadt + 140)));
            for at in tables {
                let len = u32_at(&page, at + 4) as usize;
                assert!(at + len <= 4096);
                assert_eq!(sum(&page[at..at + len]), 0, "{:?}", &page[at..at + 4]);
                assert_eq!(at % 16, 0, "16-byte aligned");
            }
        }
    }

    #[test]
    fn rsdp_and_xsdt_fields() {
        let page = built(GPA, 2);
        assert_eq!(&page[0..8], b"RSD PTR ");
        assert_eq!(&page[9..15], b"MVISOR");
        assert_eq!(page[15], 2, "revision");
        assert_eq!(u32_at(&page, 16), 0, "no RSDT");
        assert_eq!(u32_at(&page, 20), 36, "length");
        assert_eq!(u64_at(&page, 24), GPA + 48, "XSDT");
        assert_eq!(&page[33..36], &[0, 0, 0]);

        let xsdt = &page[48..];
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert_eq!(u32_at(xsdt, 4), 36 + 16);
        assert_eq!(xsdt[8], 1);
        assert_eq!(&xsdt[10..16], b"MVISOR");
        assert_eq!(&xsdt[16..24], b"MICROVSR");
        assert_eq!(u32_at(xsdt, 24), 1);
        assert_eq!(&xsdt[28..32], b"MVSR");
        assert_eq!(u32_at(xsdt, 32), 1);
        assert_eq!(&page[offset(u64_at(xsdt, 36))..][..4], b"FACP");
        assert_eq!(&page[offset(u64_at(xsdt, 44))..][..4], b"APIC");
    }

    #[test]
    fn fadt_fields_at_the_spec_offsets() {
        let page = built(GPA, 2);
        let fadt = &page[112..112 + 276];
        assert_eq!(&fadt[0..4], b"FACP");
        assert_eq!(u32_at(fadt, 4), 276, "length of a 6.0 FADT");
        assert_eq!(fadt[8], 6, "major revision");
        assert_eq!(fadt[131], 0, "minor revision");
        assert_eq!(u32_at(fadt, 36), 0, "FIRMWARE_CTRL: no FACS");
        assert_eq!(u32_at(fadt, 40), GPA as u32 + 400, "DSDT");
        assert_eq!(fadt[45], 0, "preferred PM profile");
        assert_eq!(u16_at(fadt, 46), 0, "SCI_INT");
        assert_eq!(u32_at(fadt, 48), 0, "SMI_CMD");
        // PM1a/b event and control, PM2 control, PM timer, GPE0/1 blocks and their lengths.
        assert!(fadt[56..96].iter().all(|&b| b == 0));
        assert_eq!(
            u16_at(fadt, 109),
            0x24,
            "IAPC_BOOT_ARCH: no VGA, no CMOS RTC, no 8042"
        );
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 19), 0, "FORCE_APIC_PHYSICAL_DESTINATION_MODE");
        assert_ne!(flags & (1 << 4), 0, "PWR_BUTTON: no fixed power button");
        assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON: no fixed sleep button");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(
            &fadt[116..120],
            &[1, 8, 0, 1],
            "RESET_REG: System I/O, 8 bits, byte access"
        );
        assert_eq!(u64_at(fadt, 120), 0xcf9, "RESET_REG address");
        assert_eq!(fadt[128], 6, "RESET_VALUE");
        assert_eq!(u64_at(fadt, 132), 0, "X_FIRMWARE_CTRL");
        assert_eq!(u64_at(fadt, 140), GPA + 400, "X_DSDT");
        // X_PM1a_EVT_BLK .. X_GPE1_BLK, SLEEP_CONTROL_REG, SLEEP_STATUS_REG.
        assert!(fadt[148..268].iter().all(|&b| b == 0));
        assert_eq!(&fadt[268..276], b"MVISOR\0\0", "hypervisor vendor identity");
    }

    #[test]
    fn dsdt_is_an_empty_system_bus_scope() {
        let page = built(GPA, 1);
        let dsdt = &page[400..];
        assert_eq!(&dsdt[0..4], b"DSDT");
        assert_eq!(u32_at(dsdt, 4), 43);
        assert_eq!(dsdt[8], 2);
        assert_eq!(&dsdt[36..43], &[0x10, 0x06, 0x5c, 0x5f, 0x53, 0x42, 0x5f]);
        assert!(page[443..448].iter().all(|&b| b == 0));
    }

    #[test]
    fn madt_entries() {
        let page = built(GPA, 255);
        let madt = &page[448..];
        assert_eq!(&madt[0..4], b"APIC");
        assert_eq!(u32_at(madt, 4), 44 + 8 * 255);
        assert_eq!(madt[8], 5);
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(madt, 40), 0, "no PCAT_COMPAT: no 8259");
        for i in 0..255usize {
            let e = &madt[44 + 8 * i..44 + 8 * i + 8];
            assert_eq!(e, &[0, 8, i as u8, i as u8, 1, 0, 0, 0]);
        }
        assert!(page[448 + 44 + 8 * 255..].iter().all(|&b| b == 0));
        // The host parser records 64 of them.
        let info = parse_acpi_at(&memory(GPA, &page), GPA).unwrap();
        assert!(info.cpus_truncated);
        assert_eq!(info.cpus[63].apic_id, 63);
    }

    #[test]
    fn the_rest_of_the_page_is_cleared() {
        let page = built(GPA, 1);
        assert!(page[448 + 52..].iter().all(|&b| b == 0));
    }

    #[test]
    fn errors_leave_the_page_alone() {
        let mut page = [0x5a; 4096];
        let cases = [
            (GPA, 0, GuestAcpiError::TooManyVcpus(0)),
            (GPA, 256, GuestAcpiError::TooManyVcpus(256)),
            (GPA, u32::MAX, GuestAcpiError::TooManyVcpus(u32::MAX)),
            (GPA + 1, 1, GuestAcpiError::UnalignedPage(GPA + 1)),
            (GPA + 0x800, 1, GuestAcpiError::UnalignedPage(GPA + 0x800)),
            (1 << 32, 1, GuestAcpiError::PageAbove4GiB(1 << 32)),
            (!0xfffu64, 1, GuestAcpiError::PageAbove4GiB(!0xfffu64)),
        ];
        for (gpa, vcpus, error) in cases {
            assert_eq!(build_guest_acpi(&mut page, gpa, vcpus), Err(error));
            assert!(page.iter().all(|&b| b == 0x5a));
        }
        // The last page below 4 GiB and page 0 are fine.
        assert_eq!(build_guest_acpi(&mut page, 0xffff_f000, 1), Ok(0xffff_f000));
        assert_eq!(build_guest_acpi(&mut page, 0, 255), Ok(0));
    }
}
