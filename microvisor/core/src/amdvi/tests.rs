//! Tests of the AMD-Vi encoders against hand-computed bit patterns, the feature register of
//! QEMU 7.2's `amd-iommu`, the register sequences, commands, event decoding, and I/O page
//! tables over fake memory.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

// ---------------------------------------------------------------------------------------
// Features and paging modes
// ---------------------------------------------------------------------------------------

/// The extended feature register QEMU 7.2 reports: PreF, PPR, GT, IA, GA, HE, HATS = 2,
/// GATS = 2.
const QEMU_EFR: u64 = 0x29d3;

#[test]
fn qemu_features() {
    let f = Features::decode(QEMU_EFR);
    assert!(f.prefetch && f.ppr && f.guest_translation && f.invalidate_all);
    assert!(f.guest_apic && f.hardware_errors);
    assert!(!f.x2apic && !f.no_execute && !f.performance_counters);
    assert_eq!(f.host_levels, 6);
    assert_eq!(f.guest_levels, 4);
    assert!(!f.absent());
    assert_eq!(pick_paging_mode(&f), PagingMode::LEVELS_6);
}

#[test]
fn feature_fields_at_their_bits() {
    let f = Features::decode(1 << 2 | 1 << 3 | 1 << 9 | 1 << 10 | 1 << 12);
    assert!(f.x2apic && f.no_execute && f.performance_counters);
    assert!(!f.prefetch && !f.invalidate_all);
    assert_eq!(f.host_levels, 5);
    assert_eq!(f.guest_levels, 5);
    assert_eq!(pick_paging_mode(&f).levels(), 5);
    let f = Features::decode(0);
    assert_eq!(f.host_levels, 4);
    assert_eq!(pick_paging_mode(&f), PagingMode::LEVELS_4);
    // HATS = 3 is reserved: the smallest, safe choice.
    assert_eq!(Features::decode(3 << 10).host_levels, 4);
    assert!(Features::decode(u64::MAX).absent());
}

#[test]
fn paging_modes() {
    assert_eq!(PagingMode::new(0), None);
    assert_eq!(PagingMode::new(7), None);
    let bits: Vec<u8> = (1..=6)
        .map(|l| PagingMode::new(l).unwrap().address_bits())
        .collect();
    assert_eq!(bits, [21, 30, 39, 48, 57, 64]);
    let m4 = PagingMode::LEVELS_4;
    assert!(m4.covers(0xffff_ffff_ffff));
    assert!(!m4.covers(1 << 48));
    assert!(PagingMode::LEVELS_6.covers(u64::MAX));
    assert_eq!(PagingMode::LEVELS_6.dte_mode(), 6);
}

// ---------------------------------------------------------------------------------------
// Device table
// ---------------------------------------------------------------------------------------

/// The reserved bits QEMU 7.2 checks (before and after 7.2.19): an entry with any of them
/// set fails every request of its device, interrupts included.
const QEMU_RESERVED: [u64; 4] = [
    0x8030_0000_0000_00fc | 0x7c,
    0x100,
    0x08f0_0000_0000_0000 | 0x0030_0000_0000_0000,
    u64::MAX,
];

fn assert_no_qemu_reserved_bits(q: [u64; 4]) {
    for (i, (word, reserved)) in q.iter().zip(QEMU_RESERVED).enumerate() {
        assert_eq!(word & reserved, 0, "quadword {i}: {word:#x}");
    }
}

#[test]
fn translated_entry() {
    let dte = DeviceTableEntry::translated(0x12_3456_7000, PagingMode::LEVELS_6, 0x1234);
    let q = dte.encode();
    assert_eq!(q[0], 0x6000_0012_3456_7c03);
    assert_eq!(q[1], 0x1234);
    assert_eq!(q[2], 0, "no interrupt remapping: MSIs pass unchanged");
    assert_eq!(q[3], 0);
    assert_no_qemu_reserved_bits(q);
    assert_eq!(DeviceTableEntry::decode(q), dte);
    assert!(dte.allows_dma());
    // The low 12 bits of the root are dropped.
    assert_eq!(
        DeviceTableEntry::translated(0x5fff, PagingMode::LEVELS_4, 1).encode()[0],
        0x6000_0000_0000_5803
    );
}

#[test]
fn blocked_entry() {
    let dte = DeviceTableEntry::blocked(0x8000, PagingMode::LEVELS_6);
    let q = dte.encode();
    // V, TV, mode 6, the empty table, and neither IR nor IW.
    assert_eq!(q, [0x8c03, 0, 0, 0]);
    assert_no_qemu_reserved_bits(q);
    assert!(!dte.allows_dma());
    assert_eq!(DeviceTableEntry::decode(q), dte);
    // An all-zero entry is not blocked: V = 0 lets DMA through untranslated.
    assert!(DeviceTableEntry::decode([0; 4]).allows_dma());
}

#[test]
fn entry_fields_at_their_bits() {
    let q = [
        DTE_V | 5 << 9 | DTE_IW | 0xabc_d000,
        0xbeef | DTE_SE | DTE_SA,
        DTE_IV,
        0,
    ];
    let dte = DeviceTableEntry::decode(q);
    assert!(dte.valid && !dte.translation_valid && dte.write && !dte.read);
    assert_eq!(dte.mode, 5);
    assert_eq!(dte.root_pa, 0xabc_d000);
    assert_eq!(dte.domain_id, 0xbeef);
    assert!(dte.suppress_faults && dte.suppress_all_faults && dte.interrupt_remapping);
    assert_eq!(dte.encode(), q);
}

#[test]
fn device_table_layout() {
    assert_eq!(DEVICE_TABLE_BYTES, 2 << 20);
    assert_eq!(device_table_offset(0), 0);
    assert_eq!(device_table_offset(0x0018), 0x300); // 00:03.0
    assert_eq!(device_table_offset(0xffff), (2 << 20) - 32);
    assert_eq!(
        device_table_base_value(0x4000_0000, DEVICE_TABLE_BYTES),
        0x4000_01ff
    );
    assert_eq!(device_table_base_value(0x4000_0000, 4096), 0x4000_0000);
    assert_eq!(device_table_base_value(0x4000_0123, 0), 0x4000_0000);
}

// ---------------------------------------------------------------------------------------
// Rings and register sequences
// ---------------------------------------------------------------------------------------

#[test]
fn rings() {
    assert_eq!(RING_BYTES, 4096);
    assert_eq!(
        ring_base_value(0x7000, RING_LEN_LOG2),
        0x0800_0000_0000_7000
    );
    assert_eq!(ring_base_value(0x7fff, 15), 0x0f00_0000_0000_7000);
    assert_eq!(ring_next(0, RING_BYTES), 16);
    assert_eq!(ring_next(4080, RING_BYTES), 0);
    assert_eq!(
        ring_next(4088, RING_BYTES),
        0,
        "misaligned offsets are masked"
    );
    assert!(!ring_full(0, 0, RING_BYTES), "head == tail: empty");
    assert!(ring_full(0, 4080, RING_BYTES));
    assert!(ring_full(32, 16, RING_BYTES));
    assert!(!ring_full(32, 32, RING_BYTES));
}

#[test]
fn enable_sequence_programs_everything_then_switches_on() {
    let ops = enable_sequence(0x20_0000, 0x1000, 0x2000);
    assert_eq!(
        ops[0],
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: 0
        },
        "off first"
    );
    let writes: HashMap<u32, u64> = ops
        .iter()
        .filter_map(|op| match *op {
            RegOp::Write64 { offset, value } => Some((offset, value)),
            _ => None,
        })
        .collect();
    assert_eq!(writes[&REG_DEVICE_TABLE_BASE], 0x20_01ff);
    assert_eq!(writes[&REG_COMMAND_BUFFER_BASE], 0x0800_0000_0000_1000);
    assert_eq!(writes[&REG_EVENT_LOG_BASE], 0x0800_0000_0000_2000);
    for reg in [
        REG_COMMAND_HEAD,
        REG_COMMAND_TAIL,
        REG_EVENT_HEAD,
        REG_EVENT_TAIL,
        REG_EXCLUSION_BASE,
    ] {
        assert_eq!(writes[&reg], 0, "{reg:#x}");
    }
    assert_eq!(writes[&REG_STATUS], 0b111);
    // The last write switches on translation, event logging and the command buffer.
    assert_eq!(
        ops[10],
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: 0x1405
        }
    );
    assert_eq!(
        ops[11],
        RegOp::Wait64 {
            offset: REG_STATUS,
            mask: 0x18,
            expect: 0x18
        }
    );
    // No write lands outside QEMU's register block or on a read-only register.
    for op in ops {
        if let RegOp::Write64 { offset, .. } = op {
            assert!(u64::from(offset) + 8 <= REGISTER_SPAN);
            assert_ne!(offset, REG_EXTENDED_FEATURES);
        }
    }
}

#[test]
fn event_log_restart() {
    let control = 0x1405;
    let ops = restart_event_log(control);
    assert_eq!(
        ops[0],
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: 0x1401
        }
    );
    assert_eq!(
        ops[1],
        RegOp::Wait64 {
            offset: REG_STATUS,
            mask: STATUS_EVENT_LOG_RUN,
            expect: 0
        }
    );
    assert!(ops.contains(&RegOp::Write64 {
        offset: REG_EVENT_HEAD,
        value: 0
    }));
    assert!(ops.contains(&RegOp::Write64 {
        offset: REG_EVENT_TAIL,
        value: 0
    }));
    assert!(ops.contains(&RegOp::Write64 {
        offset: REG_STATUS,
        value: 0b11
    }));
    assert_eq!(
        ops[5],
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: 0x1405
        }
    );
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// The bits QEMU 7.2 logs an ILLEGAL_COMMAND_ERROR for, per opcode (first and second
/// quadword).
fn qemu_reserved_command_bits(op: u8) -> [u64; 2] {
    let range = |lo: u32, n: u32| ((1u64 << n) - 1) << lo;
    match op {
        OP_COMPLETION_WAIT => [range(52, 8), 0],
        OP_INVALIDATE_DEVTAB_ENTRY => [range(16, 44), u64::MAX],
        OP_INVALIDATE_IOMMU_PAGES => [range(20, 12) | range(48, 12), range(3, 9)],
        OP_INVALIDATE_IOMMU_ALL => [range(0, 60), u64::MAX],
        _ => panic!("not used"),
    }
}

fn assert_clean(cmd: Command) {
    let op = command_opcode(&cmd);
    let [r0, r1] = qemu_reserved_command_bits(op);
    assert_eq!(cmd[0] & r0, 0, "{cmd:x?}");
    assert_eq!(cmd[1] & r1, 0, "{cmd:x?}");
}

#[test]
fn command_encodings() {
    let wait = completion_wait(0x1234_5678, 0xfeed);
    assert_eq!(wait, [0x1000_0000_1234_5679, 0xfeed]);
    assert_eq!(command_opcode(&wait), OP_COMPLETION_WAIT);
    assert_eq!(
        completion_wait(0x1234_567f, 1)[0],
        0x1000_0000_1234_5679,
        "8-byte aligned"
    );
    assert_eq!(
        completion_wait(u64::MAX, 1)[0],
        0x100f_ffff_ffff_fff9,
        "no reserved bits"
    );
    assert_clean(wait);
    assert_clean(completion_wait(u64::MAX, 1));

    let devtab = invalidate_devtab_entry(0x0018);
    assert_eq!(devtab, [0x2000_0000_0000_0018, 0]);
    assert_clean(devtab);

    let pages = invalidate_iommu_pages_domain(0xabcd);
    assert_eq!(pages, [0x3000_abcd_0000_0000, 0x7fff_ffff_ffff_f003]);
    assert_clean(pages);

    let all = invalidate_iommu_all();
    assert_eq!(all, [0x8000_0000_0000_0000, 0]);
    assert_clean(all);
}

#[test]
fn page_range_invalidation() {
    // One page: S = 0.
    assert_eq!(
        invalidate_iommu_pages(7, 0x5000, 0),
        Some([0x3000_0007_0000_0000, 0x5002])
    );
    // Two pages: S = 1, bit 12 clear.
    assert_eq!(invalidate_iommu_pages(7, 0x4000, 1).unwrap()[1], 0x4003);
    // 2 MiB (order 9): bits 12..=19 set, bit 20 clear.
    assert_eq!(
        invalidate_iommu_pages(7, 0x20_0000, 9).unwrap()[1],
        0x2f_f003
    );
    assert_eq!(invalidate_iommu_pages(7, 0x1000, 1), None, "misaligned");
    assert_eq!(invalidate_iommu_pages(7, 0, 52), None);
    for order in 0..=51u8 {
        let cmd = invalidate_iommu_pages(1, 0, order).unwrap();
        assert_clean(cmd);
        // The size the unit reads back: the first zero bit from bit 12.
        if order > 0 {
            let first_zero = (!(cmd[1] >> 12)).trailing_zeros() + 12;
            assert_eq!(first_zero + 1, 12 + u32::from(order), "order {order}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[test]
fn io_page_fault_as_the_specification_writes_it() {
    // 00:03.0, domain 1, a write (RW) to a page that is not present, at 0x2800000.
    let lo = 0x2u64 << 60 | u64::from(EVENT_FLAG_RW) << 48 | 1 << 32 | 0x0018;
    let e = Event::decode(lo, 0x280_0000);
    assert_eq!(e.code, EVENT_IO_PAGE_FAULT);
    assert_eq!(e.device_id, 0x18);
    assert_eq!(e.device(0).to_string(), "0000:00:03.0");
    assert_eq!(e.domain_or_pasid, 1);
    assert_eq!(e.address, 0x280_0000);
    assert!(e.is_write() && e.is_blocked_dma() && !e.is_empty());
    assert_eq!(e.name(), "IO_PAGE_FAULT");
    assert_eq!(e.reason_text(), "address not mapped for this device");
    assert_eq!(e.encode(), [lo, 0x280_0000]);
    // The same on a read of a present page without permission.
    let read = Event::decode(
        0x2u64 << 60 | u64::from(EVENT_FLAG_PR) << 48 | 0x0018,
        0x1000,
    );
    assert!(!read.is_write());
    assert_eq!(read.reason_text(), "read of a page without read permission");
    let write = Event::decode(
        0x2u64 << 60 | u64::from(EVENT_FLAG_PR | EVENT_FLAG_RW) << 48 | 0x0018,
        0x1000,
    );
    assert_eq!(
        write.reason_text(),
        "write to a page without write permission"
    );
    let rz = Event::decode(0x2u64 << 60 | u64::from(EVENT_FLAG_RZ) << 48, 0);
    assert_eq!(rz.reason_text(), "reserved bit set in a page-table entry");
}

#[test]
fn io_page_fault_as_qemu_writes_it() {
    // QEMU: info = permission (1 read, 2 write) | I (1 << 3) | code 2 << 12, stored at bit
    // 48; the device ID is only the device and function; the address is the full address.
    let qemu = |devfn: u64, write: bool, addr: u64| {
        let info: u64 = (if write { 2 } else { 1 }) | 1 << 3 | 2 << 12;
        Event::decode(devfn | info << 48, addr)
    };
    let w = qemu(0x18, true, 0x280_0123);
    assert_eq!(w.code, EVENT_IO_PAGE_FAULT);
    assert!(w.is_write());
    assert!(w.has_flag(EVENT_FLAG_I));
    assert_eq!(w.address, 0x280_0123);
    assert_eq!(w.device(0).to_string(), "0000:00:03.0");
    assert_eq!(w.reason_text(), "address not mapped for this device");
    let r = qemu(0x18, false, 0x1000);
    assert!(!r.is_write());
    assert!(r.is_blocked_dma());
    // A GN request with NX is a guest execute request, not a write.
    let gn = Event::decode(
        0x2u64 << 60 | u64::from(EVENT_FLAG_GN | EVENT_FLAG_NX) << 48,
        0,
    );
    assert!(!gn.is_write());
}

#[test]
fn event_kinds() {
    let names: Vec<(&str, bool)> = (0..=0xfu64)
        .map(|code| {
            let e = Event::decode(code << 60, 0);
            (e.name(), e.is_blocked_dma())
        })
        .collect();
    assert_eq!(names[0], ("EMPTY", false));
    assert_eq!(names[1], ("ILLEGAL_DEV_TABLE_ENTRY", true));
    assert_eq!(names[2], ("IO_PAGE_FAULT", true));
    assert_eq!(names[3], ("DEV_TAB_HARDWARE_ERROR", false));
    assert_eq!(names[4], ("PAGE_TAB_HARDWARE_ERROR", false));
    assert_eq!(names[5], ("ILLEGAL_COMMAND_ERROR", false));
    assert_eq!(names[6], ("COMMAND_HARDWARE_ERROR", false));
    assert_eq!(names[7], ("IOTLB_INV_TIMEOUT", false));
    assert_eq!(names[8], ("INVALID_DEVICE_REQUEST", true));
    assert_eq!(names[9], ("INVALID_PPR_REQUEST", false));
    assert_eq!(names[10], ("EVENT_COUNTER_ZERO", false));
    assert_eq!(names[11], ("UNKNOWN_EVENT", false));
    assert!(Event::decode(0, 0).is_empty());
    let e = Event::decode(0x4u64 << 60 | 0x0100, 0xdead_b000);
    assert_eq!(e.device(2).to_string(), "0002:01:00.0");
    assert_eq!(e.reason_text(), "page table not accessible");
    assert_eq!(
        e.to_string(),
        "PAGE_TAB_HARDWARE_ERROR device 0000:01:00.0 domain 0x0 flags 0x0 address 0xdeadb000: page table not accessible"
    );
    // PASID bits.
    let p = Event::decode(0x2u64 << 60 | 0xfff << 48 | 0x1234u64 << 32 | 0xa << 16, 0);
    assert_eq!(
        (p.domain_or_pasid, p.pasid_high, p.flags),
        (0x1234, 0xa, 0xfff)
    );
}

// ---------------------------------------------------------------------------------------
// I/O page tables
// ---------------------------------------------------------------------------------------

use crate::vtd::tests::{FakeFrames, FakeMem};
/// Every qword written lies in an allocated table frame, and no slot of a table is zero
/// (QEMU would refuse a DMA there without reporting it).
fn assert_tables_well_formed(mem: &FakeMem, frames: &FakeFrames) {
    for pa in mem.words.keys() {
        assert!(
            frames.allocated.contains(&(pa & !0xfff)),
            "write outside the tables: {pa:#x}"
        );
    }
    for &frame in &frames.allocated {
        for i in 0..512 {
            assert_ne!(
                mem.read_u64(frame + i * 8),
                0,
                "zero slot {i} in {frame:#x}"
            );
        }
    }
}

fn setup(mode: PagingMode) -> (FakeMem, FakeFrames, IoPageTable) {
    let mut frames = FakeFrames::new(64);
    let mut mem = FakeMem::default();
    let table = IoPageTable::new(&mut mem, &mut frames, mode).unwrap();
    (mem, frames, table)
}

#[test]
fn new_tables_are_empty_not_zero() {
    let (mem, frames, t) = setup(PagingMode::LEVELS_6);
    assert_eq!(frames.allocated, [0x10_0000]);
    assert_eq!(mem.words.len(), 512);
    assert!(mem.words.values().all(|&e| e == PTE_EMPTY));
    assert_eq!(PTE_EMPTY & PTE_PR, 0, "empty is not present");
    assert_eq!(t.translate(&mem, 0), None);
    assert_tables_well_formed(&mem, &frames);
}

#[test]
fn map_translate_unmap_6_levels() {
    let (mut mem, mut frames, mut t) = setup(PagingMode::LEVELS_6);
    assert_eq!(t.levels(), 6);
    assert_eq!(t.root_pa(), 0x10_0000);
    let gpa = 0x280_0000; // indices 0, 0, 0, 0, 20, 0 at levels 6..1
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa, 0x7654_3000, true),
        Ok(None)
    );
    assert_eq!(
        frames.allocated,
        [0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000, 0x10_4000, 0x10_5000]
    );
    // Each table entry: PR, Next Level = the level below, IR, IW.
    assert_eq!(mem.read_u64(0x10_0000), 0x6000_0000_0010_1a01);
    assert_eq!(mem.read_u64(0x10_1000), 0x6000_0000_0010_2801);
    assert_eq!(mem.read_u64(0x10_2000), 0x6000_0000_0010_3601);
    assert_eq!(mem.read_u64(0x10_3000), 0x6000_0000_0010_4401);
    assert_eq!(mem.read_u64(0x10_4000 + 20 * 8), 0x6000_0000_0010_5201);
    // The page: PR, Next Level 0, IR, IW.
    assert_eq!(mem.read_u64(0x10_5000), 0x6000_0000_7654_3001);
    assert_eq!(
        t.translate(&mem, gpa + 0xabc),
        Some(Translation {
            hpa: 0x7654_3abc,
            readable: true,
            writable: true
        })
    );
    assert_eq!(t.translate(&mem, gpa + 0x1000), None);
    assert_eq!(t.translate(&mem, gpa | 1 << 63), None, "no aliasing");
    // A read-only neighbour shares the page table.
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa + 0x1000, 0x5000, false),
        Ok(None)
    );
    assert_eq!(frames.allocated.len(), 6);
    assert_eq!(mem.read_u64(0x10_5008), 0x2000_0000_0000_5001);
    assert_eq!(
        t.translate(&mem, gpa + 0x1008),
        Some(Translation {
            hpa: 0x5008,
            readable: true,
            writable: false
        })
    );
    // Remapping returns the old page.
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa, 0x9000, false),
        Ok(Some(0x7654_3000))
    );
    assert_eq!(t.unmap_4k(&mut mem, gpa), Some(0x9000));
    assert_eq!(mem.read_u64(0x10_5000), PTE_EMPTY);
    assert_eq!(t.unmap_4k(&mut mem, gpa), None);
    assert_eq!(t.translate(&mem, gpa), None);
    assert_eq!(t.unmap_4k(&mut mem, 1 << 40), None, "no tables there");
    assert_eq!(t.unmap_4k(&mut mem, gpa + 1), None, "misaligned");
    assert_tables_well_formed(&mem, &frames);
}

#[test]
fn map_4_levels() {
    let (mut mem, mut frames, mut t) = setup(PagingMode::LEVELS_4);
    let gpa = 0xffff_c020_1000; // indices 511, 511, 1, 1
    t.map_4k(&mut mem, &mut frames, gpa, 0x1234_5000, true)
        .unwrap();
    assert_eq!(frames.allocated.len(), 4);
    assert_eq!(mem.read_u64(0x10_0000 + 511 * 8), 0x6000_0000_0010_1601);
    assert_eq!(t.translate(&mem, gpa + 5).map(|x| x.hpa), Some(0x1234_5005));
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 1 << 48, 0x1000, true),
        Err(TableError::AddressTooWide)
    );
    assert_eq!(t.translate(&mem, gpa | 1 << 48), None);
    assert_tables_well_formed(&mem, &frames);
}

#[test]
fn map_errors() {
    let (mut mem, mut frames, mut t) = setup(PagingMode::LEVELS_6);
    let before = mem.words.clone();
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1001, 0x2000, true),
        Err(TableError::Misaligned)
    );
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1000, 0x2800, true),
        Err(TableError::Misaligned)
    );
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1000, 1 << 52, true),
        Err(TableError::AddressTooWide)
    );
    assert_eq!(mem.words, before, "nothing written on argument errors");
    // Out of frames half-way: the tables made so far stay linked, nothing is leaked.
    let mut few = FakeFrames::new(3);
    let mut t = IoPageTable::new(&mut mem, &mut few, PagingMode::LEVELS_6).unwrap();
    assert_eq!(
        t.map_4k(&mut mem, &mut few, 0x1000, 0x2000, true),
        Err(TableError::OutOfFrames)
    );
    let mut visited = Vec::new();
    t.destroy(&mem, |f| visited.push(f));
    visited.sort();
    assert_eq!(visited, few.allocated);
    // A frame source handing out misaligned frames is refused.
    struct Bad;
    impl FrameSource for Bad {
        fn alloc_zeroed_frame(&mut self) -> Option<u64> {
            Some(0x1234)
        }
    }
    assert_eq!(
        IoPageTable::new(&mut mem, &mut Bad, PagingMode::LEVELS_4),
        Err(TableError::BadFrame(0x1234))
    );
    assert_eq!(
        TableError::OutOfFrames.to_string(),
        "no frame left for an IOMMU page table"
    );
}

#[test]
fn translate_follows_the_hardware_walk() {
    let mut mem = FakeMem::default();
    let t = IoPageTable::from_root(0x1000, PagingMode::LEVELS_4);
    // Level 4 slot 0 skips straight to a level-2 table at 0x2000.
    mem.write_u64(0x1000, table_entry(0x2000, 2));
    // Level 2 slot 0: a 2 MiB page (Next Level 0 at level 2).
    mem.write_u64(0x2000, 0x4000_0000 | PTE_PR | PTE_IR | PTE_IW);
    assert_eq!(
        t.translate(&mem, 0x12_3456).map(|x| x.hpa),
        Some(0x4012_3456)
    );
    // Level 2 slot 1: Next Level 7 with the size coded in the address: bits 12..=19 set,
    // bit 20 clear: 2 MiB.
    mem.write_u64(0x2008, 0x6000_0000 | 0xf_f000 | 7 << 9 | PTE_PR | PTE_IR);
    assert_eq!(
        t.translate(&mem, 0x20_0000 + 0x1234),
        Some(Translation {
            hpa: 0x6000_1234,
            readable: true,
            writable: false
        })
    );
    // Level 2 slot 2: a Next Level not below the current level ends the walk.
    mem.write_u64(0x2010, 0x7000_0000 | 3 << 9 | PTE_PR | PTE_IR);
    assert_eq!(t.translate(&mem, 0x40_0000), None);
    // Permissions are ANDed: a read-only table entry makes everything below read-only.
    mem.write_u64(0x1008, table_entry(0x3000, 1) & !PTE_IW);
    mem.write_u64(0x3000, page_entry(0x8000, true));
    let x = t.translate(&mem, 1 << 39).unwrap();
    assert!(x.readable && !x.writable);
    // No permission at all: nothing reachable.
    mem.write_u64(0x3008, PTE_PR | 0x9000);
    assert_eq!(t.translate(&mem, (1 << 39) + 0x1000), None);
    // Not present: nothing, whatever the other bits say.
    mem.write_u64(0x3010, PTE_EMPTY | 0xa000 | PTE_IR | PTE_IW);
    assert_eq!(t.translate(&mem, (1 << 39) + 0x2000), None);
}

#[test]
fn entries_have_no_stray_bits() {
    let (mut mem, mut frames, mut t) = setup(PagingMode::LEVELS_6);
    for k in 0..8u64 {
        t.map_4k(
            &mut mem,
            &mut frames,
            k << 57 | k << 48 | k << 39 | k << 30 | k << 21 | k << 12,
            0xf_ffff_ffff_f000,
            k % 2 == 0,
        )
        .unwrap();
    }
    let allowed = PTE_PR | 7 << 9 | ADDR_MASK | PTE_IR | PTE_IW;
    for (&pa, &entry) in &mem.words {
        assert_eq!(entry & !allowed, 0, "{pa:#x}: {entry:#x}");
    }
}

#[test]
fn destroy_visits_every_table_once() {
    for mode in [PagingMode::LEVELS_4, PagingMode::LEVELS_6] {
        let (mut mem, mut frames, mut t) = setup(mode);
        let gpas = [
            0,
            0x1000,
            0x20_0000,
            0x4000_0000,
            0x40_0000_0000,
            0xffff_ffff_f000,
        ];
        for gpa in gpas {
            t.map_4k(&mut mem, &mut frames, gpa, 0x5000, true).unwrap();
        }
        t.unmap_4k(&mut mem, 0x20_0000).unwrap();
        let mut visited = Vec::new();
        t.destroy(&mem, |f| visited.push(f));
        assert_eq!(visited.last(), Some(&t.root_pa()), "root last");
        let unique: BTreeSet<u64> = visited.iter().copied().collect();
        assert_eq!(unique.len(), visited.len(), "each once");
        let mut all = frames.allocated.clone();
        all.sort();
        assert_eq!(unique.into_iter().collect::<Vec<_>>(), all, "{mode:?}");
        assert!(!visited.contains(&0x5000), "mapped pages are not tables");
    }
}

proptest! {
    #[test]
    fn page_table_matches_a_model(
        ops in proptest::collection::vec((0u64..64, 1u64..0x1000, any::<bool>(), any::<bool>()), 1..60),
        six_levels: bool,
    ) {
        let mode = if six_levels { PagingMode::LEVELS_6 } else { PagingMode::LEVELS_4 };
        let (mut mem, mut frames, mut t) = setup(mode);
        let mut model: HashMap<u64, (u64, bool)> = HashMap::new();
        // Bus pages spread over several tables at every level.
        let gpa_of = |k: u64| (k % 4) << 12 | (k / 4 % 4) << 21 | (k / 16 % 2) << 30 | (k / 32) << 39;
        for (k, frame, writable, unmap) in ops {
            let gpa = gpa_of(k);
            let hpa = frame << 12;
            if unmap {
                prop_assert_eq!(t.unmap_4k(&mut mem, gpa), model.remove(&gpa).map(|m| m.0));
            } else {
                let old = t.map_4k(&mut mem, &mut frames, gpa, hpa, writable).unwrap();
                prop_assert_eq!(old, model.insert(gpa, (hpa, writable)).map(|m| m.0));
            }
        }
        for k in 0..64 {
            let gpa = gpa_of(k);
            let expect = model
                .get(&gpa)
                .map(|&(hpa, writable)| Translation { hpa: hpa | 0x10, readable: true, writable });
            prop_assert_eq!(t.translate(&mem, gpa | 0x10), expect);
        }
        assert_tables_well_formed(&mem, &frames);
        let mut visited = Vec::new();
        t.destroy(&mem, |f| visited.push(f));
        visited.sort();
        prop_assert_eq!(visited, frames.allocated.clone());
    }

    /// Any 128 bits decode, describe themselves and encode back.
    #[test]
    fn event_decode_is_total(lo: u64, hi: u64) {
        let e = Event::decode(lo, hi);
        prop_assert!(e.code < 16);
        prop_assert!(e.flags < 0x1000);
        prop_assert!(e.pasid_high < 16);
        prop_assert_eq!(e.device(0).source_id(), lo as u16);
        let _ = (e.is_write(), e.is_blocked_dma(), e.name(), e.reason_text(), e.to_string());
        let [l, h] = e.encode();
        prop_assert_eq!(h, hi);
        prop_assert_eq!(Event::decode(l, h), e);
        // Only the undefined bits (20..=31) are lost.
        prop_assert_eq!(l, lo & !(0xfff << 20));
    }

    #[test]
    fn device_table_entry_decode_is_total(q0: u64, q1: u64, q2: u64, q3: u64) {
        let dte = DeviceTableEntry::decode([q0, q1, q2, q3]);
        prop_assert!(dte.mode < 8);
        prop_assert_eq!(dte.root_pa & !ADDR_MASK, 0);
        prop_assert_eq!(DeviceTableEntry::decode(dte.encode()), dte);
        let _ = dte.allows_dma();
    }

    #[test]
    fn features_decode_is_total(efr: u64) {
        let f = Features::decode(efr);
        prop_assert!((4..=6).contains(&f.host_levels));
        let mode = pick_paging_mode(&f);
        prop_assert!((4..=6).contains(&mode.levels()));
    }

    /// Walking garbage never panics or loops, whatever the tables hold.
    #[test]
    fn translate_of_garbage_is_total(
        words in proptest::collection::vec(any::<u64>(), 64),
        gpa: u64,
        levels in 1u8..=6,
    ) {
        let mut mem = FakeMem::default();
        // Four frames of 16 entries each, pointing at each other at random.
        for (i, w) in words.iter().enumerate() {
            let frame = (i as u64 / 16) << 12;
            let slot = i as u64 % 16;
            let w = (w & !ADDR_MASK) | ((w >> 12) % 4) << 12;
            mem.write_u64(frame + slot * 8, w);
        }
        let t = IoPageTable::from_root(0, PagingMode::new(levels).unwrap());
        let _ = t.translate(&mem, gpa & 0xf_ffff);
        let _ = t.translate(&mem, gpa);
    }

    #[test]
    fn page_invalidation_is_total(domain: u16, gpa: u64, order: u8) {
        if let Some(cmd) = invalidate_iommu_pages(domain, gpa, order) {
            prop_assert_eq!(command_opcode(&cmd), OP_INVALIDATE_IOMMU_PAGES);
            prop_assert_eq!((cmd[0] >> 32) as u16, domain);
            prop_assert_eq!(cmd[1] & 0xff8, 0);
        }
    }
}
