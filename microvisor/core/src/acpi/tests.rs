//! Tests of ACPI parsing over hand-built tables in fake physical memory.

use super::*;
use crate::phys::fake::FakePhys;
use proptest::prelude::*;
use std::vec::Vec;

const TABLES: u64 = 0x7fe0_0000;
const RSDP_PA: u64 = 0xf_5a10;

/// A table with a correct header length and checksum.
fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 36];
    t[..4].copy_from_slice(signature);
    t[8] = 1; // revision
    t[10..16].copy_from_slice(b"TESTOE");
    t.extend_from_slice(body);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(&mut t, 9);
    t
}

fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    bytes[at] = 0u8.wrapping_sub(sum(bytes));
}

fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(b"TESTOE");
    r[15] = revision;
    r[16..20].copy_from_slice(&rsdt.to_le_bytes());
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    let mut head = r[..20].to_vec();
    fix_checksum(&mut head, 8);
    r[8] = head[8];
    fix_checksum(&mut r, 32);
    r
}

fn root(signature: &[u8; 4], entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = if signature == b"XSDT" {
        entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    } else {
        entries
            .iter()
            .flat_map(|e| (*e as u32).to_le_bytes())
            .collect()
    };
    table(signature, &body)
}

fn madt() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // CPU uid 0, APIC 0, enabled
    body.extend_from_slice(&[0, 8, 1, 2, 1, 0, 0, 0]); // CPU uid 1, APIC 2, enabled
    body.extend_from_slice(&[0, 8, 2, 4, 2, 0, 0, 0]); // APIC 4, online-capable only
    body.extend_from_slice(&[0, 8, 3, 2, 1, 0, 0, 0]); // duplicate APIC 2: ignored
    body.extend_from_slice(&[0, 8, 4, 0xff, 1, 0, 0, 0]); // APIC 0xff: not a CPU
                                                          // IO-APIC id 1 at 0xfec00000, GSI base 0.
    body.extend_from_slice(&[1, 12, 1, 0]);
    body.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // A second IO-APIC: only the first is kept.
    body.extend_from_slice(&[1, 12, 2, 0]);
    body.extend_from_slice(&0xfec1_0000u32.to_le_bytes());
    body.extend_from_slice(&24u32.to_le_bytes());
    // Interrupt source override (type 2): skipped.
    body.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
    // x2APIC 300, enabled, uid 9.
    body.extend_from_slice(&[9, 16, 0, 0]);
    body.extend_from_slice(&300u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&9u32.to_le_bytes());
    table(b"APIC", &body)
}

fn mcfg() -> Vec<u8> {
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
    body.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0, 0]);
    table(b"MCFG", &body)
}

fn dmar() -> Vec<u8> {
    let mut body = vec![38u8, 1];
    body.extend_from_slice(&[0; 10]);
    // DRHD, length 16, INCLUDE_PCI_ALL, segment 0, base 0xfed90000.
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&16u16.to_le_bytes());
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
    // RMRR (type 1), length 24: skipped.
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&24u16.to_le_bytes());
    body.extend_from_slice(&[0; 20]);
    table(b"DMAR", &body)
}

fn fadt(facs: u32, dsdt: u64) -> Vec<u8> {
    let mut body = vec![0u8; 276 - 36];
    body[0..4].copy_from_slice(&facs.to_le_bytes());
    body[140 - 36..148 - 36].copy_from_slice(&dsdt.to_le_bytes());
    table(b"FACP", &body)
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f
}

/// A q35-like platform: RSDP in the BIOS area, tables high.
fn platform() -> FakePhys {
    let mut mem = FakePhys::default()
        .with_region(0, 0x10_0000)
        .with_region(TABLES, 0x1_0000);
    mem.put(RSDP_PA, &rsdp(2, 0, TABLES + 0x1000));
    mem.put(
        TABLES + 0x1000,
        &root(
            b"XSDT",
            &[
                TABLES + 0x2000,
                TABLES + 0x3000,
                TABLES + 0x4000,
                TABLES + 0x5000,
                0,
            ],
        ),
    );
    mem.put(
        TABLES + 0x2000,
        &fadt(TABLES as u32 + 0x7000, TABLES + 0x6000),
    );
    mem.put(TABLES + 0x3000, &madt());
    mem.put(TABLES + 0x4000, &mcfg());
    mem.put(TABLES + 0x5000, &dmar());
    mem.put(TABLES + 0x6000, &table(b"DSDT", &[0x10; 100]));
    mem.put(TABLES + 0x7000, &facs());
    mem
}

#[test]
fn parses_a_q35_like_platform() {
    let mem = platform();
    assert_eq!(find_rsdp(&mem), Some(RSDP_PA));
    let info = parse_acpi(&mem).unwrap();
    assert_eq!(info.rsdp_pa, RSDP_PA);
    assert!(info.madt_present);
    assert_eq!(info.local_apic_pa, 0xfee0_0000);
    let cpus: Vec<(u32, u32, bool, bool)> = info
        .cpus
        .iter()
        .map(|c| (c.apic_id, c.acpi_uid, c.enabled, c.online_capable))
        .collect();
    assert_eq!(
        cpus,
        [
            (0, 0, true, false),
            (2, 1, true, false),
            (4, 2, false, true),
            (300, 9, true, false)
        ]
    );
    assert!(!info.cpus_truncated);
    assert_eq!(
        info.ioapic,
        Some(IoApic {
            id: 1,
            address: 0xfec0_0000,
            gsi_base: 0
        })
    );
    assert_eq!(
        &info.mcfg[..],
        &[McfgEntry {
            base_pa: 0xb000_0000,
            segment: 0,
            bus_start: 0,
            bus_end: 0xff
        }]
    );
    let dmar = info.dmar.clone().unwrap();
    assert_eq!(&dmar.drhd_units[..], &[0xfed9_0000]);
    assert_eq!(dmar.host_address_width, 39);
    assert!(!info.ivrs_present);
    assert!(info.bad_tables.is_empty());
    let covered = |pa: u64, len: u64| {
        info.reserved_ranges
            .iter()
            .any(|&(s, e)| s <= pa && pa + len <= e)
    };
    assert!(covered(RSDP_PA, 36));
    assert!(covered(TABLES + 0x1000, 36 + 40));
    for t in 2..=5 {
        assert!(covered(TABLES + t * 0x1000, 36), "table {t}");
    }
    assert!(covered(TABLES + 0x6000, 136), "DSDT");
    assert!(covered(TABLES + 0x7000, 64), "FACS");
    assert!(!covered(TABLES + 0x8000, 1));
}

#[test]
fn ebda_is_searched_first() {
    let mut mem = platform();
    mem.put(0x40e, &0x9fc0u16.to_le_bytes());
    mem.put(0x9_fc40, &rsdp(0, TABLES as u32 + 0x9000, 0));
    assert_eq!(find_rsdp(&mem), Some(0x9_fc40));
    // An RSDP past the first KiB of the EBDA is not found there.
    let mut mem = platform();
    mem.put(0x40e, &0x9000u16.to_le_bytes());
    mem.put(0x9_0400, &rsdp(0, 0, 0));
    assert_eq!(find_rsdp(&mem), Some(RSDP_PA));
}

#[test]
fn bad_rsdp_checksums_are_skipped() {
    let mut mem = platform();
    let mut bad = rsdp(2, 0, TABLES + 0x1000);
    bad[8] ^= 1;
    mem.put(0xe_0000, &bad);
    let mut bad_extended = rsdp(2, 0, TABLES + 0x1000);
    bad_extended[32] ^= 1;
    mem.put(0xe_0010 + 0x30, &bad_extended);
    assert_eq!(find_rsdp(&mem), Some(RSDP_PA));
    assert_eq!(
        parse_acpi_at(&mem, 0xe_0000),
        Err(AcpiError::BadRsdp(0xe_0000))
    );
    assert_eq!(
        parse_acpi(&FakePhys::default().with_region(0, 0x10_0000)),
        Err(AcpiError::RsdpNotFound)
    );
    assert_eq!(
        parse_acpi(&FakePhys::default()),
        Err(AcpiError::RsdpNotFound)
    );
}

#[test]
fn revision_0_uses_the_rsdt() {
    let mut mem = platform();
    mem.put(RSDP_PA, &rsdp(0, TABLES as u32 + 0x9000, 0));
    mem.put(TABLES + 0x9000, &root(b"RSDT", &[TABLES + 0x3000]));
    let info = parse_acpi(&mem).unwrap();
    assert_eq!(info.cpus.len(), 4);
    assert!(info.dmar.is_none() && info.mcfg.is_empty());
}

#[test]
fn root_table_errors() {
    let mut mem = platform();
    let mut xsdt = root(b"XSDT", &[TABLES + 0x3000]);
    xsdt[20] ^= 0x55;
    mem.put(TABLES + 0x1000, &xsdt);
    assert_eq!(
        parse_acpi(&mem),
        Err(AcpiError::BadRootChecksum(TABLES + 0x1000))
    );
    mem.put(TABLES + 0x1000, &root(b"RSDT", &[TABLES + 0x3000]));
    assert_eq!(
        parse_acpi(&mem),
        Err(AcpiError::BadRootTable(TABLES + 0x1000))
    );
    mem.put(RSDP_PA, &rsdp(2, 0, 0x1_0000_0000));
    assert_eq!(
        parse_acpi(&mem),
        Err(AcpiError::BadRootTable(0x1_0000_0000))
    );
    // A root table claiming an absurd length.
    let mut mem = platform();
    let mut xsdt = root(b"XSDT", &[]);
    xsdt[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    mem.put(TABLES + 0x1000, &xsdt);
    assert_eq!(
        parse_acpi(&mem),
        Err(AcpiError::BadRootTable(TABLES + 0x1000))
    );
}

#[test]
fn tables_with_bad_checksums_are_skipped() {
    let mut mem = platform();
    let mut bad_madt = madt();
    bad_madt[40] ^= 1;
    mem.put(TABLES + 0x3000, &bad_madt);
    mem.put(
        TABLES + 0x1000,
        &root(b"XSDT", &[TABLES + 0x3000, TABLES + 0x5000, 0x5_0000_0000]),
    );
    let info = parse_acpi(&mem).unwrap();
    assert!(!info.madt_present);
    assert!(info.cpus.is_empty());
    assert!(info.dmar.is_some());
    assert_eq!(&info.bad_tables[..], &[*b"APIC", *b"????"]);
}

#[test]
fn ivrs_is_noticed() {
    let mut mem = platform();
    mem.put(TABLES + 0x8000, &table(b"IVRS", &[0; 12]));
    mem.put(TABLES + 0x1000, &root(b"XSDT", &[TABLES + 0x8000]));
    let info = parse_acpi(&mem).unwrap();
    assert!(info.ivrs_present);
    assert!(info.ivrs_units.is_empty());
}

/// An IVHD block of `kind` (0x10: 24 bytes of header; 0x11, 0x40: 40) with `entries` after
/// the header.
fn ivhd(kind: u8, device_id: u16, base: u64, segment: u16, efr: u64, entries: &[u8]) -> Vec<u8> {
    let header = if kind == 0x10 { 24 } else { 40 };
    let mut b = vec![0u8; header];
    b[0] = kind;
    b[1] = 0xb0; // flags
    b[4..6].copy_from_slice(&device_id.to_le_bytes());
    b[6..8].copy_from_slice(&0x40u16.to_le_bytes()); // capability offset
    b[8..16].copy_from_slice(&base.to_le_bytes());
    b[16..18].copy_from_slice(&segment.to_le_bytes());
    if kind != 0x10 {
        b[24..32].copy_from_slice(&efr.to_le_bytes());
    }
    b.extend_from_slice(entries);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_le_bytes());
    b
}

fn ivrs(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x0020_3040u32.to_le_bytes()); // IVinfo
    body.extend_from_slice(&[0; 8]);
    for block in blocks {
        body.extend_from_slice(block);
    }
    table(b"IVRS", &body)
}

fn amd_platform(ivrs_table: &[u8]) -> FakePhys {
    let mut mem = platform();
    mem.put(TABLES + 0x8000, ivrs_table);
    mem.put(
        TABLES + 0x1000,
        &root(
            b"XSDT",
            &[TABLES + 0x3000, TABLES + 0x4000, TABLES + 0x8000],
        ),
    );
    mem
}

#[test]
fn ivrs_units_as_qemu_describes_them() {
    // QEMU's amd-iommu: one unit at 0xfed80000, function 00:02.0, described by a type 0x10
    // and a type 0x11 block, each with an "all devices" entry.
    let all = [1u8, 0, 0, 0];
    let table = ivrs(&[
        ivhd(0x10, 0x0010, 0xfed8_0000, 0, 0, &all),
        ivhd(0x11, 0x0010, 0xfed8_0000, 0, 0x29d3, &all),
    ]);
    let info = parse_acpi(&amd_platform(&table)).unwrap();
    assert!(info.ivrs_present);
    assert!(info.dmar.is_none());
    assert_eq!(
        &info.ivrs_units[..],
        &[IvrsUnit {
            base_pa: 0xfed8_0000,
            segment: 0,
            device_id: 0x0010,
            capability_offset: 0x40,
            efr_image: Some(0x29d3),
            ivhd_type: 0x11,
        }]
    );
}

#[test]
fn ivrs_units_are_merged_per_base_and_bounded() {
    let ivmd = {
        // An IVMD (type 0x20, 32 bytes): skipped.
        let mut b = vec![0u8; 32];
        b[0] = 0x20;
        b[2] = 32;
        b
    };
    let table = ivrs(&[
        ivhd(0x40, 0x0002, 0xfd20_0000, 0, 0x1234, &[]),
        ivhd(0x10, 0x0002, 0xfd20_0000, 0, 0, &[]), // older type: the 0x40's fields stay
        ivmd,
        ivhd(0x10, 0x4002, 0xfd30_0000, 1, 0, &[]),
        ivhd(0x11, 0x4003, 0xfd30_0000, 1, 0x77, &[]), // newer type: its fields win
        ivhd(0x10, 0x8002, 0, 0, 0, &[]),              // base 0: ignored
        ivhd(0x10, 0x8002, 0xfd40_0000, 2, 0, &[]),
        ivhd(0x10, 0x8002, 0xfd50_0000, 3, 0, &[]),
        ivhd(0x10, 0x8002, 0xfd60_0000, 4, 0, &[]), // a fifth unit: left off
    ]);
    let info = parse_acpi(&amd_platform(&table)).unwrap();
    let units: Vec<(u64, u16, u16, Option<u64>, u8)> = info
        .ivrs_units
        .iter()
        .map(|u| (u.base_pa, u.segment, u.device_id, u.efr_image, u.ivhd_type))
        .collect();
    assert_eq!(
        units,
        [
            (0xfd20_0000, 0, 0x0002, Some(0x1234), 0x40),
            (0xfd30_0000, 1, 0x4003, Some(0x77), 0x11),
            (0xfd40_0000, 2, 0x8002, None, 0x10),
            (0xfd50_0000, 3, 0x8002, None, 0x10),
        ]
    );
}

#[test]
fn malformed_ivrs_blocks_stop_the_scan() {
    // A short type 0x11 block (no room for the EFR image) still names its unit.
    let mut short = ivhd(0x11, 0x10, 0xfed8_0000, 0, 0x29d3, &[]);
    short.truncate(24);
    short[2..4].copy_from_slice(&24u16.to_le_bytes());
    let mut zero_len = ivhd(0x10, 0x10, 0xfd00_0000, 0, 0, &[]);
    zero_len[2..4].copy_from_slice(&0u16.to_le_bytes());
    let table = ivrs(&[short, zero_len, ivhd(0x10, 0x10, 0xfe00_0000, 0, 0, &[])]);
    let info = parse_acpi(&amd_platform(&table)).unwrap();
    assert_eq!(info.ivrs_units.len(), 1);
    assert_eq!(info.ivrs_units[0].efr_image, None);
    // A block running past the table's end is not read.
    let mut long = ivhd(0x10, 0x10, 0xfed8_0000, 0, 0, &[]);
    long[2..4].copy_from_slice(&200u16.to_le_bytes());
    let info = parse_acpi(&amd_platform(&ivrs(&[long]))).unwrap();
    assert!(info.ivrs_present && info.ivrs_units.is_empty());
    // A type 0x10 block shorter than its header is skipped, the next one read.
    let mut tiny = vec![0x10u8, 0, 8, 0, 0, 0, 0, 0];
    tiny.extend(ivhd(0x10, 0x10, 0xfed8_0000, 0, 0, &[]));
    let info = parse_acpi(&amd_platform(&ivrs(&[tiny]))).unwrap();
    assert_eq!(info.ivrs_units.len(), 1);
}

#[test]
fn malformed_madt_entries_stop_the_scan() {
    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    body.extend_from_slice(&[0, 0, 1, 1, 1, 0, 0, 0]); // length 0
    body.extend_from_slice(&[0, 8, 2, 2, 1, 0, 0, 0]); // never reached
    let mut mem = platform();
    mem.put(TABLES + 0x3000, &table(b"APIC", &body));
    assert_eq!(parse_acpi(&mem).unwrap().cpus.len(), 1);

    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    body.extend_from_slice(&[9, 200, 0, 0, 1, 0]); // runs past the end
    body.extend_from_slice(&[0, 6, 3, 3, 1, 0]); // type 0, too short to be used
    let mut mem = platform();
    mem.put(TABLES + 0x3000, &table(b"APIC", &body));
    assert_eq!(parse_acpi(&mem).unwrap().cpus.len(), 1);
}

#[test]
fn many_cpus_are_truncated() {
    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    for id in 0..100u8 {
        body.extend_from_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    let mut mem = platform();
    mem.put(TABLES + 0x3000, &table(b"APIC", &body));
    let info = parse_acpi(&mem).unwrap();
    assert_eq!(info.cpus.len(), MAX_CPUS);
    assert!(info.cpus_truncated);
}

#[test]
fn reserved_ranges_stay_bounded_and_cover_everything() {
    let mut mem = FakePhys::default()
        .with_region(0, 0x10_0000)
        .with_region(TABLES, 0x10_0000);
    let entries: Vec<u64> = (0..60).map(|i| TABLES + 0x2000 + i * 0x2000).collect();
    for &pa in &entries {
        mem.put(pa, &table(b"SSDT", &[0; 64]));
    }
    mem.put(RSDP_PA, &rsdp(2, 0, TABLES));
    mem.put(TABLES, &root(b"XSDT", &entries));
    let info = parse_acpi(&mem).unwrap();
    assert_eq!(info.reserved_ranges.len(), 32);
    for &pa in entries.iter().chain([TABLES, RSDP_PA].iter()) {
        assert!(
            info.reserved_ranges
                .iter()
                .any(|&(s, e)| s <= pa && pa + 36 <= e),
            "{pa:#x}"
        );
    }
}

proptest! {
    /// The reserved ranges stay sorted, disjoint and bounded, and cover every range added.
    #[test]
    fn add_range_covers_everything(ranges in proptest::collection::vec((0u64..1 << 20, 0u64..5000), 0..100)) {
        let mut reserved: heapless::Vec<(u64, u64), 32> = heapless::Vec::new();
        for &(pa, len) in &ranges {
            add_range(&mut reserved, pa, len);
        }
        for pair in reserved.windows(2) {
            prop_assert!(pair[0].1 < pair[1].0);
        }
        for &(pa, len) in &ranges {
            prop_assert!(reserved.iter().any(|&(s, e)| s <= pa && pa + len <= e));
        }
    }
}

#[test]
fn full_range_list_merges_the_closest_pair() {
    let mut reserved: heapless::Vec<(u64, u64), 32> = heapless::Vec::new();
    for i in 0..31u64 {
        add_range(&mut reserved, i * 0x10_0000, 0x10);
    }
    add_range(&mut reserved, 0x1e0_0100, 0x10); // 0x100 bytes after the range at 30 MiB
    assert_eq!(reserved.len(), 32);
    // A far range: the closest pair (the last two, 0xf0 apart) is merged to make room,
    // rather than widening anything up to 2 GiB.
    add_range(&mut reserved, 0x8000_0000, 0x10);
    assert_eq!(reserved.len(), 32);
    assert_eq!(reserved[30], (0x1e0_0000, 0x1e0_0110));
    assert_eq!(reserved[31], (0x8000_0000, 0x8000_0010));
    // A range close to the first one: its own gap (0x10) is the smallest, so it joins it.
    add_range(&mut reserved, 0x20, 0x10);
    assert_eq!(reserved[0], (0, 0x30));
    assert_eq!(reserved.len(), 32);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Tables with valid checksums but random contents and lengths never cause a panic.
    #[test]
    fn random_tables_never_panic(
        bodies in proptest::collection::vec(
            (prop_oneof![Just(*b"APIC"), Just(*b"MCFG"), Just(*b"DMAR"), Just(*b"FACP"), Just(*b"IVRS")],
             proptest::collection::vec(any::<u8>(), 0..300),
             prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)]),
            0..8),
        junk_entries in proptest::collection::vec(any::<u64>(), 0..4),
    ) {
        let mut mem = FakePhys::default().with_region(0, 0x10_0000).with_region(TABLES, 0x1_0000);
        let mut entries = Vec::new();
        for (i, (sig, body, bad_len)) in bodies.iter().enumerate() {
            let pa = TABLES + 0x1000 + i as u64 * 0x1000;
            let mut t = table(sig, body);
            if let Some(len) = bad_len {
                t[4..8].copy_from_slice(&len.to_le_bytes());
                fix_checksum(&mut t, 9);
            }
            mem.put(pa, &t);
            entries.push(pa);
        }
        entries.extend(junk_entries);
        mem.put(RSDP_PA, &rsdp(2, 0, TABLES));
        mem.put(TABLES, &root(b"XSDT", &entries));
        let info = parse_acpi(&mem).unwrap();
        prop_assert!(info.cpus.len() <= MAX_CPUS);
    }

    /// Random bytes where the RSDP and tables would be never cause a panic.
    #[test]
    fn random_memory_never_panics(
        bios in proptest::collection::vec(any::<u8>(), 64),
        tables in proptest::collection::vec(any::<u8>(), 0..4096),
        xsdt in prop_oneof![Just(TABLES), any::<u64>()],
    ) {
        let mut mem = FakePhys::default().with_region(0, 0x10_0000).with_region(TABLES, 0x1000);
        mem.put(0xf_0000, &bios);
        mem.put(TABLES, &tables);
        mem.put(RSDP_PA, &rsdp(2, xsdt as u32, xsdt));
        let _ = parse_acpi(&mem);
        let _ = parse_acpi_at(&mem, 0xf_0000);
    }
}

proptest! {
    /// IVRS tables of random blocks (IVHD types among them, lengths true or false) never
    /// cause a panic, and every unit kept has a nonzero, distinct base.
    #[test]
    fn random_ivrs_never_panics(
        blocks in proptest::collection::vec(
            (prop_oneof![Just(0x10u8), Just(0x11), Just(0x40), Just(0x20), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..64),
             any::<u16>(),
             any::<bool>()),
            0..12),
    ) {
        let mut raw = Vec::new();
        for (kind, mut bytes, len, honest) in blocks {
            bytes.resize(bytes.len().max(4), 0);
            bytes[0] = kind;
            let len = if honest { bytes.len() as u16 } else { len };
            bytes[2..4].copy_from_slice(&len.to_le_bytes());
            raw.push(bytes);
        }
        let info = parse_acpi(&amd_platform(&ivrs(&raw))).unwrap();
        prop_assert!(info.ivrs_present);
        let bases: std::collections::BTreeSet<u64> = info.ivrs_units.iter().map(|u| u.base_pa).collect();
        prop_assert_eq!(bases.len(), info.ivrs_units.len());
        prop_assert!(!bases.contains(&0));
    }
}
