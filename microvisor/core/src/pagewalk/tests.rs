//! Tests of the page walker: every paging mode over page tables in fake guest RAM.

use super::*;
use proptest::prelude::*;

const CR0_WP: u64 = Cr0::WRITE_PROTECT.bits();
const CR0_PG: u64 = Cr0::PAGING.bits();
const CR4_PSE: u64 = Cr4::PAGE_SIZE_EXTENSION.bits();
const CR4_PAE: u64 = Cr4::PHYSICAL_ADDRESS_EXTENSION.bits();
const CR4_LA57: u64 = Cr4::L5_PAGING.bits();
const EFER_LMA: u64 = Efer::LONG_MODE_ACTIVE.bits();
const EFER_NXE: u64 = Efer::NO_EXECUTE_ENABLE.bits();
const NO_EXECUTE: u64 = Pte::NO_EXECUTE.bits();

/// Guest RAM `[0, len)` as a byte vector.
struct FakeRam {
    bytes: Vec<u8>,
}

impl FakeRam {
    fn new(len: usize) -> Self {
        FakeRam {
            bytes: vec![0; len],
        }
    }
    fn range(&self, gpa: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(gpa).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
    fn put64(&mut self, gpa: u64, value: u64) {
        assert!(self.write(gpa, &value.to_le_bytes()));
    }
    fn put32(&mut self, gpa: u64, value: u32) {
        assert!(self.write(gpa, &value.to_le_bytes()));
    }
}

impl GuestPhysMemory for FakeRam {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let range = self.range(gpa, 8)?;
        Some(u64::from_le_bytes(self.bytes[range].try_into().unwrap()))
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.range(gpa, buf.len()) {
            Some(range) => {
                buf.copy_from_slice(&self.bytes[range]);
                true
            }
            None => false,
        }
    }
    fn write(&mut self, gpa: u64, buf: &[u8]) -> bool {
        match self.range(gpa, buf.len()) {
            Some(range) => {
                self.bytes[range].copy_from_slice(buf);
                true
            }
            None => false,
        }
    }
}

const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 0x80;
const MIB: u64 = 1 << 20;

const LONG: PagingMode = PagingMode {
    cr0: CR0_PG | CR0_WP | 1,
    cr3: 0x1000,
    cr4: CR4_PAE,
    efer: EFER_LMA | (1 << 8) | EFER_NXE,
};

/// Builds 4-level tables with root at 0x1000, taking table pages from 0x2000 upwards.
struct LongTables {
    ram: FakeRam,
    next_table: u64,
}

impl LongTables {
    fn new(ram_bytes: usize) -> Self {
        LongTables {
            ram: FakeRam::new(ram_bytes),
            next_table: 0x2000,
        }
    }

    /// Maps `gva` to `gpa` with a page of `level` (1: 4K, 2: 2M, 3: 1G) and leaf `flags`.
    fn map(&mut self, gva: u64, gpa: u64, level: u8, flags: u64) {
        let mut table = 0x1000;
        for l in (level + 1..=4).rev() {
            let entry_gpa = table + ((gva >> (12 + 9 * (u32::from(l) - 1))) & 0x1ff) * 8;
            let entry = self.ram.read_u64(entry_gpa).unwrap();
            table = if entry & P != 0 {
                entry & ADDR_MASK
            } else {
                let new = self.next_table;
                self.next_table += 0x1000;
                self.ram.put64(entry_gpa, new | P | RW);
                new
            };
        }
        let entry_gpa = table + ((gva >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff) * 8;
        let size_bit = if level > 1 { PS } else { 0 };
        self.ram.put64(entry_gpa, gpa | flags | size_bit);
    }

    fn entry_gpa(&self, gva: u64, level: u8) -> u64 {
        let mut table = 0x1000;
        for l in (level + 1..=4).rev() {
            let entry = self
                .ram
                .read_u64(table + ((gva >> (12 + 9 * (u32::from(l) - 1))) & 0x1ff) * 8)
                .unwrap();
            table = entry & ADDR_MASK;
        }
        table + ((gva >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff) * 8
    }
}

#[test]
fn paging_off_truncates_to_32_bits() {
    let ram = FakeRam::new(0);
    let mode = PagingMode {
        cr0: 0x11,
        ..Default::default()
    };
    assert_eq!(
        translate(&ram, &mode, 0x1234_5678_9abc_def0, Access::Write),
        Ok(0x9abc_def0)
    );
}

#[test]
fn long_mode_4k_2m_1g() {
    let mut t = LongTables::new(MIB as usize);
    let kernel = 0xffff_ffff_8000_0000u64;
    t.map(kernel, 0x8_0000, 1, P | RW);
    t.map(0x4000_0000, 0x20_0000, 2, P | RW);
    t.map(0x80_0000_0000, 0x4000_0000, 3, P | RW);
    assert_eq!(
        translate(&t.ram, &LONG, kernel + 0x123, Access::Read),
        Ok(0x8_0123)
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x4000_0000 + 0x1f_fff0, Access::Write),
        Ok(0x3f_fff0)
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x80_0000_0000 + 0x3fff_ffff, Access::Read),
        Ok(0x7fff_ffff)
    );
    // The PAT bit (bit 12) of a large page is not part of the address.
    let e = t.entry_gpa(0x4000_0000, 2);
    t.ram.put64(e, 0x20_0000 | P | RW | PS | 0x1000);
    assert_eq!(
        translate(&t.ram, &LONG, 0x4000_0005, Access::Read),
        Ok(0x20_0005)
    );
}

#[test]
fn long_mode_faults() {
    let mut t = LongTables::new(MIB as usize);
    t.map(0x40_0000, 0x9_0000, 1, P); // read-only
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Read),
        Ok(0x9_0000)
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Write),
        Err(WalkError::WriteProtected { level: 1 })
    );
    // Without CR0.WP a supervisor write goes through.
    let no_wp = PagingMode {
        cr0: LONG.cr0 & !CR0_WP,
        ..LONG
    };
    assert_eq!(
        translate(&t.ram, &no_wp, 0x40_0000, Access::Write),
        Ok(0x9_0000)
    );
    // A read-only upper level protects the whole subtree.
    let pde = t.entry_gpa(0x40_0000, 2);
    let value = t.ram.read_u64(pde).unwrap();
    t.ram.put64(t.entry_gpa(0x40_0000, 1), 0x9_0000 | P | RW);
    t.ram.put64(pde, value & !RW);
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Write),
        Err(WalkError::WriteProtected { level: 2 })
    );

    assert_eq!(
        translate(&t.ram, &LONG, 0x40_1000, Access::Read),
        Err(WalkError::NotPresent { level: 1 })
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x8000_0000, Access::Read),
        Err(WalkError::NotPresent { level: 3 })
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x100_0000_0000, Access::Read),
        Err(WalkError::NotPresent { level: 4 })
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0x0000_8000_0000_0000, Access::Read),
        Err(WalkError::NonCanonical(0x0000_8000_0000_0000))
    );
    assert_eq!(
        translate(&t.ram, &LONG, 0xffff_7fff_ffff_f000, Access::Read),
        Err(WalkError::NonCanonical(0xffff_7fff_ffff_f000))
    );
}

#[test]
fn long_mode_reserved_bits() {
    let mut t = LongTables::new(MIB as usize);
    t.map(0x40_0000, 0x9_0000, 1, P | RW | NO_EXECUTE);
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Read),
        Ok(0x9_0000)
    );
    let no_nxe = PagingMode {
        efer: EFER_LMA,
        ..LONG
    };
    assert_eq!(
        translate(&t.ram, &no_nxe, 0x40_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 1 })
    );

    // PS in a PML4E.
    let pml4e = t.entry_gpa(0x40_0000, 4);
    let value = t.ram.read_u64(pml4e).unwrap();
    t.ram.put64(pml4e, value | PS);
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 4 })
    );
    t.ram.put64(pml4e, value);

    // Misaligned 2 MiB and 1 GiB pages.
    t.map(0x4000_0000, 0x20_0000 | 0x2000, 2, P);
    assert_eq!(
        translate(&t.ram, &LONG, 0x4000_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 2 })
    );
    t.map(0x80_0000_0000, 0x4000_0000 | 0x10_0000, 3, P);
    assert_eq!(
        translate(&t.ram, &LONG, 0x80_0000_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 3 })
    );

    let la57 = PagingMode {
        cr4: LONG.cr4 | CR4_LA57,
        ..LONG
    };
    assert_eq!(
        translate(&t.ram, &la57, 0, Access::Read),
        Err(WalkError::FiveLevelPaging)
    );
}

#[test]
fn tables_outside_ram() {
    let mut t = LongTables::new(MIB as usize);
    t.map(0x40_0000, 0x9_0000, 1, P | RW);
    let pde = t.entry_gpa(0x40_0000, 2);
    t.ram.put64(pde, 0x7_0000_0000 | P | RW);
    assert_eq!(
        translate(&t.ram, &LONG, 0x40_0000, Access::Read),
        Err(WalkError::TableNotInRam { gpa: 0x7_0000_0000 })
    );
    let far_cr3 = PagingMode {
        cr3: 0x10_0000_0000,
        ..LONG
    };
    assert_eq!(
        translate(&t.ram, &far_cr3, 0, Access::Read),
        Err(WalkError::TableNotInRam {
            gpa: 0x10_0000_0000
        })
    );
}

#[test]
fn pae_4k_and_2m() {
    let mut ram = FakeRam::new(MIB as usize);
    // PDPT at 0x1020 (32-byte aligned), PD at 0x2000, PT at 0x3000.
    let mode = PagingMode {
        cr0: CR0_PG | CR0_WP | 1,
        cr3: 0x1020,
        cr4: CR4_PAE,
        efer: 0,
    };
    ram.put64(0x1020 + 3 * 8, 0x2000 | P); // gva 0xc000_0000..
    ram.put64(0x2000, 0x3000 | P | RW);
    ram.put64(0x3000 + 5 * 8, 0x5_0000 | P); // read-only 4K page
    ram.put64(0x2000 + 8, 0x40_0000 | P | RW | PS); // 2M page
    assert_eq!(
        translate(&ram, &mode, 0xc000_5abc, Access::Read),
        Ok(0x5_0abc)
    );
    assert_eq!(
        translate(&ram, &mode, 0xc000_5abc, Access::Write),
        Err(WalkError::WriteProtected { level: 1 })
    );
    assert_eq!(
        translate(&ram, &mode, 0xc02f_0001, Access::Write),
        Ok(0x4f_0001)
    );
    // Upper 32 bits of the GVA are ignored outside long mode.
    assert_eq!(
        translate(&ram, &mode, 0x1_c000_5000, Access::Read),
        Ok(0x5_0000)
    );
    assert_eq!(
        translate(&ram, &mode, 0x4000_0000, Access::Read),
        Err(WalkError::NotPresent { level: 3 })
    );
    assert_eq!(
        translate(&ram, &mode, 0xc000_6000, Access::Read),
        Err(WalkError::NotPresent { level: 1 })
    );

    // Reserved bits: PDPTE bit 1, PTE bit 60, NX without EFER.NXE, PDE 2M bit 13.
    ram.put64(0x1020, 0x2000 | P | RW);
    assert_eq!(
        translate(&ram, &mode, 0x1000, Access::Read),
        Err(WalkError::ReservedBit { level: 3 })
    );
    ram.put64(0x3000 + 5 * 8, 0x5_0000 | P | (1 << 60));
    assert_eq!(
        translate(&ram, &mode, 0xc000_5000, Access::Read),
        Err(WalkError::ReservedBit { level: 1 })
    );
    ram.put64(0x3000 + 5 * 8, 0x5_0000 | P | NO_EXECUTE);
    assert_eq!(
        translate(&ram, &mode, 0xc000_5000, Access::Read),
        Err(WalkError::ReservedBit { level: 1 })
    );
    let nxe = PagingMode {
        efer: EFER_NXE,
        ..mode
    };
    assert_eq!(
        translate(&ram, &nxe, 0xc000_5000, Access::Read),
        Ok(0x5_0000)
    );
    ram.put64(0x2000 + 8, 0x40_0000 | P | PS | 0x2000);
    assert_eq!(
        translate(&ram, &mode, 0xc020_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 2 })
    );
}

#[test]
fn legacy_32_bit_4k_and_4m() {
    let mut ram = FakeRam::new(MIB as usize);
    let mode = PagingMode {
        cr0: CR0_PG | CR0_WP | 1,
        cr3: 0x1000,
        cr4: CR4_PSE,
        efer: 0,
    };
    ram.put32(0x1000 + 0x300 * 4, 0x2000 | P as u32 | RW as u32); // gva 0xc000_0000
    ram.put32(0x2000 + 4 * 4, 0x7000 | P as u32);
    // 4 MiB page at gva 0x0040_0000 -> 0x1_00c0_0000 (PSE-36: bit 13 = PA bit 32).
    ram.put32(0x1000 + 4, 0x00c0_0000 | (1 << 13) | (P | RW | PS) as u32);
    assert_eq!(
        translate(&ram, &mode, 0xc000_4321, Access::Read),
        Ok(0x7321)
    );
    assert_eq!(
        translate(&ram, &mode, 0xc000_4321, Access::Write),
        Err(WalkError::WriteProtected { level: 1 })
    );
    assert_eq!(
        translate(&ram, &mode, 0x0041_2345, Access::Write),
        Ok(0x1_00c1_2345)
    );
    // Without CR4.PSE the PS bit is ignored: the PDE points to a page table (bit 13 is
    // then an address bit).
    let no_pse = PagingMode { cr4: 0, ..mode };
    assert_eq!(
        translate(&ram, &no_pse, 0x0041_2345, Access::Read),
        Err(WalkError::TableNotInRam {
            gpa: 0x00c0_2000 + 0x12 * 4
        })
    );
    assert_eq!(
        translate(&ram, &mode, 0x8000_0000, Access::Read),
        Err(WalkError::NotPresent { level: 2 })
    );
    ram.put32(0x1000 + 4, 0x00c0_0000 | (1 << 21) | (P | PS) as u32);
    assert_eq!(
        translate(&ram, &mode, 0x0040_0000, Access::Read),
        Err(WalkError::ReservedBit { level: 2 })
    );
    // The last PDE of the directory is read as 4 bytes, not 8.
    let mut small = FakeRam::new(0x2000);
    small.put32(0x1ffc, 0x1000 | P as u32);
    let top = PagingMode {
        cr3: 0x1000,
        ..mode
    };
    assert_eq!(
        translate(&small, &top, 0xffc0_0000, Access::Read),
        Err(WalkError::NotPresent { level: 1 })
    );
}

#[test]
fn copies_split_at_page_boundaries() {
    let mut t = LongTables::new(MIB as usize);
    // Two virtually adjacent pages backed by physically distant frames.
    t.map(0x7000_0000, 0x8_0000, 1, P | RW);
    t.map(0x7000_1000, 0x6_0000, 1, P | RW);
    let data: Vec<u8> = (0..100u8).collect();
    copy_to_guest(&mut t.ram, &LONG, 0x7000_0fd0, &data).unwrap();
    assert_eq!(&t.ram.bytes[0x8_0fd0..0x8_1000], &data[..48]);
    assert_eq!(&t.ram.bytes[0x6_0000..0x6_0034], &data[48..]);
    let mut back = [0u8; 100];
    copy_from_guest(&t.ram, &LONG, 0x7000_0fd0, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    // Empty copies touch nothing, even at unmapped addresses.
    copy_from_guest(&t.ram, &LONG, 0xdead_0000, &mut []).unwrap();
    // A buffer running into an unmapped page fails there.
    let mut long = [0u8; 0x1100];
    assert_eq!(
        copy_from_guest(&t.ram, &LONG, 0x7000_1000, &mut long),
        Err(WalkError::NotPresent { level: 1 })
    );
}

#[test]
fn copy_to_read_only_or_unbacked_page_fails() {
    let mut t = LongTables::new(MIB as usize);
    t.map(0x1000_0000, 0x8_0000, 1, P);
    t.map(0x2000_0000, 0x7_0000_0000, 1, P | RW); // beyond guest RAM
    assert_eq!(
        copy_to_guest(&mut t.ram, &LONG, 0x1000_0010, b"hello"),
        Err(WalkError::WriteProtected { level: 1 })
    );
    assert!(t.ram.bytes[0x8_0010..0x8_0015].iter().all(|&b| b == 0));
    assert_eq!(
        copy_to_guest(&mut t.ram, &LONG, 0x2000_0000, b"x"),
        Err(WalkError::NotGuestRam { gpa: 0x7_0000_0000 })
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        copy_from_guest(&t.ram, &LONG, 0x2000_0000, &mut buf),
        Err(WalkError::NotGuestRam { gpa: 0x7_0000_0000 })
    );
}

#[test]
fn copy_with_paging_off_wraps_at_4_gib() {
    let mut ram = FakeRam::new(0x2000);
    let mode = PagingMode {
        cr0: 1,
        ..Default::default()
    };
    copy_to_guest(&mut ram, &mode, 0x1_0000_0ffe, b"abcd").unwrap();
    assert_eq!(&ram.bytes[0xffe..0x1002], b"abcd");
}

fn mode_strategy() -> impl Strategy<Value = PagingMode> {
    let cr0 = prop_oneof![
        Just(0u64),
        Just(CR0_PG),
        Just(CR0_PG | CR0_WP),
        any::<u64>()
    ];
    let cr4 = prop_oneof![Just(0u64), Just(CR4_PSE), Just(CR4_PAE), any::<u64>()];
    let efer = prop_oneof![
        Just(0u64),
        Just(EFER_LMA),
        Just(EFER_LMA | EFER_NXE),
        any::<u64>()
    ];
    let cr3 = prop_oneof![(0u64..16).prop_map(|f| f << 12), any::<u64>()];
    (cr0, cr3, cr4, efer).prop_map(|(cr0, cr3, cr4, efer)| PagingMode {
        cr0,
        cr3,
        cr4,
        efer,
    })
}

/// An entry that mostly points back into the 64 KiB of RAM, with random flags.
fn entry_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..16, any::<u16>(), any::<bool>())
            .prop_map(|(frame, flags, nx)| (frame << 12) | u64::from(flags & 0xfff) | (u64::from(nx) << 63)),
        1 => any::<u64>(),
    ]
}

proptest! {
    /// Garbage tables and registers never make a walk or a copy panic.
    #[test]
    fn garbage_tables_never_panic(
        entries in proptest::collection::vec(entry_strategy(), 8192),
        mode in mode_strategy(),
        gva in prop_oneof![any::<u64>(), 0u64..0x10_0000, Just(0xffff_ffff_ffff_f000u64)],
        len in 0usize..0x3000,
    ) {
        let mut ram = FakeRam::new(64 * 1024);
        for (i, e) in entries.iter().enumerate() {
            ram.put64(i as u64 * 8, *e);
        }
        let _ = translate(&ram, &mode, gva, Access::Read);
        let _ = translate(&ram, &mode, gva, Access::Write);
        let mut buf = vec![0u8; len];
        let _ = copy_from_guest(&ram, &mode, gva, &mut buf);
        let _ = copy_to_guest(&mut ram, &mode, gva, &buf);
    }

    /// 4 KiB mappings made by a page-table builder translate to what was mapped; every other
    /// page of the same region is not present.
    #[test]
    fn long_mode_mappings_round_trip(
        pages in proptest::collection::btree_map(0u64..(1 << 20), 0u64..64, 1..20),
        high_half in any::<bool>(),
        offset in 0u64..4096,
    ) {
        let mut t = LongTables::new(2 * MIB as usize);
        let base = if high_half { 0xffff_8000_0000_0000u64 } else { 0 };
        for (&page, &frame) in &pages {
            t.map(base + page * 4096, 0x10_0000 + frame * 4096, 1, P | RW);
        }
        for (&page, &frame) in &pages {
            let gpa = translate(&t.ram, &LONG, base + page * 4096 + offset, Access::Write);
            prop_assert_eq!(gpa, Ok(0x10_0000 + frame * 4096 + offset));
        }
        for probe in 0..64u64 {
            let page = probe * 16411 % (1 << 20);
            if !pages.contains_key(&page) {
                prop_assert!(translate(&t.ram, &LONG, base + page * 4096, Access::Read).is_err());
            }
        }
    }
}
