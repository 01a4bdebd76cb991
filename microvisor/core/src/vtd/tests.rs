//! Tests of the VT-d encoders against hand-computed bit patterns, the capability decoding
//! of QEMU 7.2's `intel-iommu`, the register sequences, fault records, and second-level
//! page tables over fake memory.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

/// CAP as QEMU 7.2 reports it with the default `aw-bits=39`, read from the device.
const QEMU_CAP_AW39: u64 = 0x00d2_008c_2226_0206;
/// CAP with `aw-bits=48`.
const QEMU_CAP_AW48: u64 = 0x00d2_008c_222f_0606;
/// ECAP with the defaults on q35 under TCG: QI, IR, PT, IRO = 0xf, MHMV = 0xf.
const QEMU_ECAP: u64 = 0x00f0_0f4a;

#[test]
fn qemu_capabilities() {
    let caps = Capabilities::decode(QEMU_CAP_AW39, QEMU_ECAP);
    assert_eq!(caps.domain_id_bits, 16);
    assert_eq!(caps.max_domain_id(), 0xffff);
    assert!(!caps.required_write_buffer_flush);
    assert!(!caps.caching_mode);
    assert_eq!(caps.sagaw, 0b00010);
    assert_eq!(caps.mgaw_bits, 39);
    assert_eq!(caps.fault_recording_offset, 0x220);
    assert_eq!(caps.fault_recording_count, 1);
    assert!(caps.page_selective_invalidation);
    assert_eq!(caps.max_address_mask, 18);
    assert_eq!(caps.second_level_large_pages, 0b11);
    assert!(caps.drain_read && caps.drain_write);
    assert!(!caps.coherent);
    assert!(caps.queued_invalidation);
    assert!(!caps.device_tlb);
    assert!(caps.interrupt_remapping);
    assert!(!caps.extended_interrupt_mode);
    assert!(caps.pass_through);
    assert!(!caps.snoop_control);
    assert!(!caps.scalable_mode);
    assert_eq!(caps.iotlb_offset, 0xf0);
    assert_eq!(caps.iva_register(), 0xf0);
    assert_eq!(caps.iotlb_register(), 0xf8);
    assert_eq!(caps.fault_record_register(0), Some(0x220));
    assert_eq!(caps.fault_record_register(1), None);
    assert_eq!(caps.register_span(), 0x1000);
    assert_eq!(pick_agaw(&caps), Some(AddressWidth::Bits39));
    assert_eq!(caps.dma_address_limit(AddressWidth::Bits39), 1 << 39);

    let caps48 = Capabilities::decode(QEMU_CAP_AW48, QEMU_ECAP);
    assert_eq!(caps48.sagaw, 0b00110);
    assert_eq!(caps48.mgaw_bits, 48);
    assert_eq!(pick_agaw(&caps48), Some(AddressWidth::Bits48));
    assert_eq!(caps48.dma_address_limit(AddressWidth::Bits48), 1 << 48);
    assert_eq!(caps48.dma_address_limit(AddressWidth::Bits39), 1 << 39);
}

#[test]
fn capability_fields_at_their_bits() {
    let cap = 3 // ND: 10 bits of domain ID
        | 1 << 4 // RWBF
        | 1 << 7 // CM
        | 0b1000 << 8 // SAGAW: only 57-bit
        | 56 << 16 // MGAW 57
        | 0x3ff << 24 // FRO
        | 0xff << 40; // NFR
    let ecap = 1 | 0x3ff << 8 | 1 << 7 | 1 << 4 | 1 << 2 | 1 << 43;
    let caps = Capabilities::decode(cap, ecap);
    assert_eq!(caps.domain_id_bits, 10);
    assert_eq!(caps.max_domain_id(), 0x3ff);
    assert!(caps.required_write_buffer_flush && caps.caching_mode);
    assert_eq!(caps.mgaw_bits, 57);
    assert_eq!(caps.fault_recording_offset, 0x3ff0);
    assert_eq!(caps.fault_recording_count, 256);
    assert_eq!(caps.fault_record_register(255), Some(0x3ff0 + 255 * 16));
    assert_eq!(caps.iotlb_offset, 0x3ff0);
    assert_eq!(caps.register_span(), 0x3ff0 + 256 * 16);
    assert!(caps.coherent && caps.snoop_control && caps.extended_interrupt_mode);
    assert!(caps.device_tlb && caps.scalable_mode);
    assert!(!caps.queued_invalidation && !caps.pass_through);
    assert_eq!(pick_agaw(&caps), None, "5-level only is not supported");
    assert_eq!(caps.dma_address_limit(AddressWidth::Bits48), 1 << 48);
}

#[test]
fn address_widths() {
    assert_eq!(
        (AddressWidth::Bits39.bits(), AddressWidth::Bits39.levels()),
        (39, 3)
    );
    assert_eq!(
        (AddressWidth::Bits48.bits(), AddressWidth::Bits48.levels()),
        (48, 4)
    );
    assert_eq!(AddressWidth::Bits39.context_encoding(), 1);
    assert_eq!(AddressWidth::Bits48.context_encoding(), 2);
    assert_eq!(AddressWidth::Bits39.sagaw_bit(), 0b010);
    assert_eq!(AddressWidth::Bits48.sagaw_bit(), 0b100);
}

// ---------------------------------------------------------------------------------------
// Tables and registers
// ---------------------------------------------------------------------------------------

#[test]
fn root_and_context_entries() {
    assert_eq!(root_entry(0x0012_3000), [0x0012_3001, 0]);
    assert_eq!(
        root_entry(0x0012_3fff),
        [0x0012_3001, 0],
        "low bits dropped"
    );
    assert_eq!(
        context_entry(0x0004_5000, AddressWidth::Bits48, 0x1234),
        [0x0004_5001, 0x0012_3402]
    );
    assert_eq!(
        context_entry(0x7f_ffff_f000, AddressWidth::Bits39, 1),
        [0x7f_ffff_f001, 0x101]
    );
    assert_eq!(
        context_entry(0x1000, AddressWidth::Bits39, 0xffff),
        [0x1001, 0x00ff_ff01]
    );
    // No bit QEMU treats as reserved: context low bits 4..11, high bit 7 and 24..63.
    let [lo, hi] = context_entry(0x000f_ffff_ffff_f000, AddressWidth::Bits48, 0xffff);
    assert_eq!(lo & 0xff0, 0);
    assert_eq!(hi & 0xffff_ffff_ff00_0080, 0);
    assert_eq!(lo & 0b1110, 0, "FPD = 0, TT = 0");
    assert_eq!(root_entry_offset(0xff), 0xff0);
    assert_eq!(context_entry_offset(0x18), 0x180);
    assert_eq!(rtaddr_value(0x0020_0000), 0x0020_0000);
}

#[test]
fn gcmd_keeps_persistent_enables() {
    // Nothing enabled yet.
    assert_eq!(gcmd_value(0, GCMD_SRTP), 0x4000_0000);
    // Translation on and the root pointer loaded: setting the root again keeps TE and
    // does not repeat the one-shot RTPS.
    let gsts = GCMD_TE | GCMD_SRTP;
    assert_eq!(gcmd_value(gsts, GCMD_SRTP), 0xc000_0000);
    // Queued invalidation and interrupt remapping stay on, write-buffer status does not
    // echo back as a command.
    let gsts = GCMD_TE | GCMD_SRTP | GCMD_QIE | GCMD_IRE | GCMD_SIRTP | GCMD_WBF;
    assert_eq!(gcmd_value(gsts, GCMD_WBF), 0x8e00_0000);
    assert_eq!(gcmd_value_clearing(gsts, GCMD_TE), 0x0600_0000);
    assert_eq!(gcmd_value(GCMD_CFI | GCMD_EAFL, 0), 0x1080_0000);
}

#[test]
fn command_sequences() {
    let caps = Capabilities::decode(QEMU_CAP_AW39, QEMU_ECAP);
    assert_eq!(
        set_root_table(0x0020_0000, GCMD_TE),
        [
            RegOp::Write64 {
                offset: 0x20,
                value: 0x0020_0000
            },
            RegOp::Write32 {
                offset: 0x18,
                value: 0xc000_0000
            },
            RegOp::Wait32 {
                offset: 0x1c,
                mask: 0x4000_0000,
                expect: 0x4000_0000
            },
        ]
    );
    assert_eq!(
        invalidate_context_global(),
        [
            RegOp::Write64 {
                offset: 0x28,
                value: 0xa000_0000_0000_0000
            },
            RegOp::Wait64 {
                offset: 0x28,
                mask: 1 << 63,
                expect: 0
            },
        ]
    );
    assert_eq!(
        invalidate_context_device(7, 0x0318),
        [
            RegOp::Write64 {
                offset: 0x28,
                value: 0xe000_0000_0318_0007
            },
            RegOp::Wait64 {
                offset: 0x28,
                mask: 1 << 63,
                expect: 0
            },
        ]
    );
    assert_eq!(
        invalidate_iotlb_global(&caps),
        [
            RegOp::Write64 {
                offset: 0xf8,
                value: 0x9003_0000_0000_0000
            },
            RegOp::Wait64 {
                offset: 0xf8,
                mask: 1 << 63,
                expect: 0
            },
        ]
    );
    assert_eq!(
        invalidate_iotlb_domain(&caps, 0x42),
        [
            RegOp::Write64 {
                offset: 0xf8,
                value: 0xa003_0042_0000_0000
            },
            RegOp::Wait64 {
                offset: 0xf8,
                mask: 1 << 63,
                expect: 0
            },
        ]
    );
    assert_eq!(
        invalidate_iotlb_pages(&caps, 3, 0x0004_0000, 2),
        Some([
            RegOp::Write64 {
                offset: 0xf0,
                value: 0x0004_0002
            },
            RegOp::Write64 {
                offset: 0xf8,
                value: 0xb003_0003_0000_0000
            },
            RegOp::Wait64 {
                offset: 0xf8,
                mask: 1 << 63,
                expect: 0
            },
        ])
    );
    assert_eq!(
        invalidate_iotlb_pages(&caps, 3, 0x0004_1000, 2),
        None,
        "misaligned"
    );
    assert_eq!(invalidate_iotlb_pages(&caps, 3, 0, 19), None, "beyond MAMV");
    let no_psi = Capabilities::decode(QEMU_CAP_AW39 & !(1 << 39), QEMU_ECAP);
    assert_eq!(invalidate_iotlb_pages(&no_psi, 3, 0, 0), None);
    let no_drain = Capabilities::decode(QEMU_CAP_AW39 & !(3 << 54), QEMU_ECAP);
    assert_eq!(
        invalidate_iotlb_global(&no_drain)[0],
        RegOp::Write64 {
            offset: 0xf8,
            value: 0x9000_0000_0000_0000
        }
    );
    assert_eq!(
        enable_translation(GCMD_SRTP),
        [
            RegOp::Write32 {
                offset: 0x18,
                value: 0x8000_0000
            },
            RegOp::Wait32 {
                offset: 0x1c,
                mask: 1 << 31,
                expect: 1 << 31
            },
        ]
    );
    assert_eq!(
        disable_translation(GCMD_TE | GCMD_SRTP | GCMD_QIE),
        [
            RegOp::Write32 {
                offset: 0x18,
                value: 0x0400_0000
            },
            RegOp::Wait32 {
                offset: 0x1c,
                mask: 1 << 31,
                expect: 0
            },
        ]
    );
    assert_eq!(
        flush_write_buffer(GCMD_TE),
        [
            RegOp::Write32 {
                offset: 0x18,
                value: 0x8800_0000
            },
            RegOp::Wait32 {
                offset: 0x1c,
                mask: 1 << 27,
                expect: 0
            },
        ]
    );
    assert_eq!(
        fault_event_setup(2, 0xee),
        [
            RegOp::Write32 {
                offset: 0x3c,
                value: 0xee
            },
            RegOp::Write32 {
                offset: 0x40,
                value: 0xfee0_2000
            },
            RegOp::Write32 {
                offset: 0x44,
                value: 0
            },
            RegOp::Write32 {
                offset: 0x38,
                value: 0
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

#[test]
fn fault_record_decode() {
    // As QEMU records a write by 00:03.0 to an unmapped page: F, T = 0, reason 5.
    let r = FaultRecord::decode(0x0000_0000_0001_2000, 0x8000_0005_0000_0018);
    assert_eq!(r.source_id, Bdf::new(0, 0, 3, 0).unwrap());
    assert_eq!(r.fault_address, 0x1_2000);
    assert_eq!(r.reason, 5);
    assert!(r.is_write && r.fault);
    assert_eq!((r.address_type, r.pasid), (0, None));
    assert_eq!(
        r.to_string(),
        "DMA write by 0000:00:03.0 at 0x12000: fault 0x5 \
         (write to a page without write permission (or not mapped))"
    );
    // A read (T = 1) by 01:1f.7, context entry not present; the low 12 bits of FI are
    // not part of the address.
    let r = FaultRecord::decode(0xdead_beef_cafe_bfff, 0xc000_0002_0000_01ff);
    assert_eq!(r.source_id, Bdf::new(0, 1, 0x1f, 7).unwrap());
    assert_eq!(r.fault_address, 0xdead_beef_cafe_b000);
    assert!(!r.is_write && r.fault);
    assert_eq!(r.reason_text(), "context entry not present");
    // PASID present (bit 30) with PASID 0xabcde, address type 2.
    let r = FaultRecord::decode(0, 1 << 30 | 0xabcde << 40 | 2 << 60 | 6 << 32);
    assert_eq!(r.pasid, Some(0xabcde));
    assert_eq!(r.address_type, 2);
    assert!(!r.fault);
    assert_eq!(r.reason, 6);
}

#[test]
fn fault_records_as_qemu_writes_them() {
    // Recorded by QEMU 7.2 for an `edu` device at 00:04.0 (and one at 00:05.0) under a
    // 3-level table: it fills the PASID field with ones but leaves PP (bit 30) clear.
    let cases = [
        ((0x1_2000, 0x80ff_ff05_0000_0020), (4, 0x1_2000, 5, true)), // write to a read-only page
        ((0x1_3000, 0xc0ff_ff06_0000_0020), (4, 0x1_3000, 6, false)), // read of an unmapped page
        ((0x1_4000, 0x80ff_ff05_0000_0020), (4, 0x1_4000, 5, true)), // write to an unmapped page
        (
            (0x80_0000_0000, 0x80ff_ff04_0000_0020),
            (4, 1 << 39, 4, true),
        ), // beyond 39 bits
        ((0x1_1000, 0x8000_0002_0000_0028), (5, 0x1_1000, 2, true)), // no context entry
    ];
    for ((lo, hi), (device, address, reason, is_write)) in cases {
        let r = FaultRecord::decode(lo, hi);
        assert_eq!(r.source_id, Bdf::new(0, 0, device, 0).unwrap());
        assert_eq!(
            (r.fault_address, r.reason, r.is_write),
            (address, reason, is_write)
        );
        assert!(r.fault);
        assert_eq!(r.pasid, None);
    }
}

#[test]
fn fault_reasons_follow_the_specification() {
    assert_eq!(fault_reason_text(1), "root entry not present");
    assert_eq!(fault_reason_text(4), "address beyond the address width");
    assert_eq!(
        fault_reason_text(0xc),
        "reserved bits set in a page-table entry"
    );
    assert_eq!(
        fault_reason_text(0x26),
        "remapped interrupt blocked (source ID check)"
    );
    assert_eq!(fault_reason_text(0), "unknown fault reason");
    assert_eq!(fault_reason_text(0xe), "unknown fault reason");
    assert_eq!(fault_reason_text(0xff), "unknown fault reason");
    for reason in (0x1..=0xd).chain(0x20..=0x26) {
        assert_ne!(fault_reason_text(reason), "unknown fault reason");
    }
}

#[test]
fn fault_status_and_scan() {
    let s = FaultStatus::from_bits_retain(0x0000_0203);
    assert!(s.contains(FaultStatus::OVERFLOW | FaultStatus::PENDING));
    assert!(!s.intersects(FaultStatus::QUEUE_STOPPED));
    let e = FaultStatus::from_bits_retain(0x70);
    assert!(e.contains(FaultStatus::QUEUE_STOPPED | FaultStatus::COMPLETION_ERROR));
    assert_eq!(
        clear_fault_overflow(),
        RegOp::Write32 {
            offset: REG_FSTS,
            value: 0x71
        }
    );
    let caps = Capabilities::decode(QEMU_CAP_AW39, QEMU_ECAP);
    assert_eq!(
        fault_record_indices(&caps, 0x0000_0002).collect::<Vec<_>>(),
        [0]
    );
    // Four registers, first to read is 2.
    let four = Capabilities::decode(QEMU_CAP_AW39 | 3 << 40, QEMU_ECAP);
    assert_eq!(
        fault_record_indices(&four, 0x0202).collect::<Vec<_>>(),
        [2, 3, 0, 1]
    );
    // An FRI beyond the registers (a broken unit) still visits each once.
    assert_eq!(
        fault_record_indices(&four, 0xff02).collect::<Vec<_>>(),
        [3, 0, 1, 2]
    );
    assert_eq!(
        clear_fault_record(&caps, 0),
        Some(RegOp::Write32 {
            offset: 0x22c,
            value: 0x8000_0000
        })
    );
    assert_eq!(clear_fault_record(&caps, 1), None);
    assert_eq!(
        clear_fault_overflow(),
        RegOp::Write32 {
            offset: 0x34,
            value: 0x71
        }
    );
}

// ---------------------------------------------------------------------------------------
// Second-level page tables
// ---------------------------------------------------------------------------------------

/// Host memory as a map of qwords (absent reads as 0).
#[derive(Default)]
pub(crate) struct FakeMem {
    pub(crate) words: HashMap<u64, u64>,
}

impl PhysMem for FakeMem {
    fn read_u64(&self, pa: u64) -> u64 {
        assert_eq!(pa % 8, 0);
        self.words.get(&pa).copied().unwrap_or(0)
    }

    fn write_u64(&mut self, pa: u64, value: u64) {
        assert_eq!(pa % 8, 0);
        self.words.insert(pa, value);
    }
}

/// A bump allocator of zeroed frames with a limit.
pub(crate) struct FakeFrames {
    pub(crate) next: u64,
    pub(crate) left: usize,
    pub(crate) allocated: Vec<u64>,
}

impl FakeFrames {
    pub(crate) fn new(limit: usize) -> Self {
        FakeFrames {
            next: 0x10_0000,
            left: limit,
            allocated: Vec::new(),
        }
    }
}

impl FrameSource for FakeFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let pa = self.next;
        self.next += 0x1000;
        self.allocated.push(pa);
        Some(pa)
    }
}

/// Every qword written lies in an allocated table frame.
fn assert_only_tables_written(mem: &FakeMem, frames: &FakeFrames) {
    for pa in mem.words.keys() {
        assert!(
            frames.allocated.contains(&(pa & !0xfff)),
            "write outside the tables: {pa:#x}"
        );
    }
}

fn setup(aw: AddressWidth) -> (FakeMem, FakeFrames, SlPageTable) {
    let mut frames = FakeFrames::new(64);
    let mut mem = FakeMem::default();
    let table = SlPageTable::new(&mut mem, &mut frames, aw).unwrap();
    (mem, frames, table)
}

#[test]
fn map_translate_unmap_4_levels() {
    let (mut mem, mut frames, mut t) = setup(AddressWidth::Bits48);
    assert_eq!(t.levels(), 4);
    assert_eq!(t.root_pa(), 0x10_0000);
    let gpa = 0x0000_8000_4030_1000; // indices 256, 1, 1, 0x101 at levels 4..1
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa, 0x7654_3000, true),
        Ok(None)
    );
    // Root, PDPT, PD, PT: four frames, each entry R|W pointing at the next.
    assert_eq!(
        frames.allocated,
        [0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000]
    );
    assert_eq!(mem.read_u64(0x10_0000 + 256 * 8), 0x10_1003);
    assert_eq!(mem.read_u64(0x10_1000 + 8), 0x10_2003);
    assert_eq!(mem.read_u64(0x10_2000 + 8), 0x10_3003);
    assert_eq!(mem.read_u64(0x10_3000 + 0x101 * 8), 0x7654_3003);
    assert_eq!(mem.words.len(), 4);
    assert_eq!(
        t.translate(&mem, gpa + 0xabc),
        Some(Translation {
            hpa: 0x7654_3abc,
            writable: true
        })
    );
    assert_eq!(t.translate(&mem, gpa + 0x1000), None);
    assert_eq!(t.translate(&mem, 1 << 48), None);
    // A read-only neighbour shares the page-table page.
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa + 0x1000, 0x5000, false),
        Ok(None)
    );
    assert_eq!(frames.allocated.len(), 4);
    assert_eq!(mem.read_u64(0x10_3000 + 0x102 * 8), 0x5001);
    assert_eq!(
        t.translate(&mem, gpa + 0x1008),
        Some(Translation {
            hpa: 0x5008,
            writable: false
        })
    );
    // Remapping returns the old page.
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, gpa, 0x9000, false),
        Ok(Some(0x7654_3000))
    );
    assert_eq!(t.unmap_4k(&mut mem, gpa), Some(0x9000));
    assert_eq!(t.unmap_4k(&mut mem, gpa), None);
    assert_eq!(t.translate(&mem, gpa), None);
    assert_eq!(t.unmap_4k(&mut mem, 0x1000), None, "no tables there");
    assert_eq!(t.unmap_4k(&mut mem, gpa + 1), None, "misaligned");
    assert_only_tables_written(&mem, &frames);
}

#[test]
fn map_3_levels() {
    let (mut mem, mut frames, mut t) = setup(AddressWidth::Bits39);
    assert_eq!(t.levels(), 3);
    let gpa = 0x7f_c020_1000; // indices 511, 1, 1
    t.map_4k(&mut mem, &mut frames, gpa, 0x1234_5000, true)
        .unwrap();
    assert_eq!(frames.allocated.len(), 3);
    assert_eq!(mem.read_u64(0x10_0000 + 511 * 8), 0x10_1003);
    assert_eq!(mem.read_u64(0x10_1000 + 8), 0x10_2003);
    assert_eq!(mem.read_u64(0x10_2000 + 8), 0x1234_5003);
    assert_eq!(t.translate(&mem, gpa + 5).map(|x| x.hpa), Some(0x1234_5005));
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 1 << 39, 0x1000, true),
        Err(SlError::AddressTooWide)
    );
    assert_only_tables_written(&mem, &frames);
}

#[test]
fn map_errors() {
    let (mut mem, mut frames, mut t) = setup(AddressWidth::Bits48);
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1001, 0x2000, true),
        Err(SlError::Misaligned)
    );
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1000, 0x2800, true),
        Err(SlError::Misaligned)
    );
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 0x1000, 1 << 52, true),
        Err(SlError::AddressTooWide)
    );
    assert_eq!(
        t.map_4k(&mut mem, &mut frames, 1 << 48, 0x2000, true),
        Err(SlError::AddressTooWide)
    );
    assert!(mem.words.is_empty(), "nothing written on argument errors");
    // Out of frames half-way: the tables made so far stay linked, nothing is leaked.
    let mut few = FakeFrames::new(3);
    let mut t = SlPageTable::new(&mut mem, &mut few, AddressWidth::Bits48).unwrap();
    assert_eq!(
        t.map_4k(&mut mem, &mut few, 0x1000, 0x2000, true),
        Err(SlError::OutOfFrames)
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
        SlPageTable::new(&mut mem, &mut Bad, AddressWidth::Bits39),
        Err(SlError::BadFrame(0x1234))
    );
}

#[test]
fn entries_have_no_bits_qemu_reserves() {
    // QEMU 7.2 (no snoop control, no device TLB, aw-bits 39): a leaf must not set bit 11
    // or bits 39..51 or bit 62; a level-4 entry must not set bit 7.
    let leaf_reserved = 0x800 | (0x000f_ffff_ffff_f000 & !((1u64 << 39) - 1)) | 1 << 62;
    let (mut mem, mut frames, mut t) = setup(AddressWidth::Bits48);
    for k in 0..8u64 {
        t.map_4k(
            &mut mem,
            &mut frames,
            k << 39 | k << 30 | k << 21 | k << 12,
            0x7f_ffff_f000,
            true,
        )
        .unwrap();
    }
    for (&pa, &entry) in &mem.words {
        assert_eq!(entry & leaf_reserved, 0, "{pa:#x}: {entry:#x}");
        assert_eq!(entry & 0xffc, 0, "{pa:#x}: only R and W below bit 12");
        if pa & !0xfff == t.root_pa() {
            assert_eq!(entry & 0x80, 0);
        }
    }
}

#[test]
fn destroy_visits_every_table_once() {
    for aw in [AddressWidth::Bits39, AddressWidth::Bits48] {
        let (mut mem, mut frames, mut t) = setup(aw);
        // Spread over several top-level slots, second-level slots and page tables.
        let gpas = [
            0,
            0x1000,
            0x20_0000,
            0x4000_0000,
            0x40_0000_0000,
            0x7f_ffff_f000,
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
        assert_eq!(unique.into_iter().collect::<Vec<_>>(), all, "{aw:?}");
        assert!(!visited.contains(&0x5000), "mapped pages are not tables");
    }
}

proptest! {
    #[test]
    fn page_table_matches_a_model(
        ops in proptest::collection::vec((0u64..64, 0u64..0x1000, any::<bool>(), any::<bool>()), 1..60),
        four_levels: bool,
    ) {
        let aw = if four_levels { AddressWidth::Bits48 } else { AddressWidth::Bits39 };
        let (mut mem, mut frames, mut t) = setup(aw);
        let mut model: HashMap<u64, (u64, bool)> = HashMap::new();
        // Guest pages spread over several tables at every level.
        let gpa_of = |k: u64| (k % 4) << 12 | (k / 4 % 4) << 21 | (k / 16 % 2) << 30 | (k / 32) << 38;
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
            let expect = model.get(&gpa).map(|&(hpa, writable)| Translation { hpa: hpa | 0x10, writable });
            prop_assert_eq!(t.translate(&mem, gpa | 0x10), expect);
        }
        assert_only_tables_written(&mem, &frames);
        let mut visited = Vec::new();
        t.destroy(&mem, |f| visited.push(f));
        visited.sort();
        prop_assert_eq!(visited, frames.allocated.clone());
    }

    #[test]
    fn fault_record_decode_is_total(lo: u64, hi: u64) {
        let r = FaultRecord::decode(lo, hi);
        prop_assert_eq!(r.fault_address & 0xfff, 0);
        prop_assert_eq!(r.source_id.source_id(), hi as u16);
        prop_assert!(r.address_type < 4);
        let _ = r.to_string();
    }

    #[test]
    fn capabilities_decode_is_total(cap: u64, ecap: u64) {
        let caps = Capabilities::decode(cap, ecap);
        prop_assert!(caps.fault_recording_count >= 1);
        prop_assert!(caps.register_span() >= 0x1000);
        let _ = (pick_agaw(&caps), caps.max_domain_id(), caps.dma_address_limit(AddressWidth::Bits48));
        let _ = invalidate_iotlb_pages(&caps, 1, 0, caps.max_address_mask);
        prop_assert!(fault_record_indices(&caps, ecap as u32).count() == usize::from(caps.fault_recording_count));
    }
}

// ---------------------------------------------------------------------------------------
// Queued invalidation and interrupt remapping
// ---------------------------------------------------------------------------------------

#[test]
fn invalidation_descriptors_at_their_bits() {
    assert_eq!(InvDesc::context_global().0, [0x11, 0]);
    // Device-selective (G = 3), DID 5 in 16..31, SID 00:03.0 (0x18) in 32..47.
    assert_eq!(
        InvDesc::context_device(5, 0x0018).0,
        [0x0000_0018_0005_0031, 0]
    );
    let caps = Capabilities::decode(QEMU_CAP_AW39, QEMU_ECAP);
    assert!(caps.drain_read && caps.drain_write);
    // Global (G = 1), DR (bit 7) and DW (bit 6).
    assert_eq!(InvDesc::iotlb_global(&caps).0, [0x12 | 0xc0, 0]);
    assert_eq!(
        InvDesc::iotlb_domain(&caps, 7).0,
        [0x0007_0000 | 0x22 | 0xc0, 0]
    );
    let no_drain = Capabilities::decode(0, 0);
    assert_eq!(InvDesc::iotlb_domain(&no_drain, 1).0, [0x0001_0022, 0]);
    assert_eq!(InvDesc::iec_global().0, [0x4, 0]);
    assert_eq!(InvDesc::iec_index(0x1234).0, [0x0000_1234_0000_0014, 0]);
    assert_eq!(
        InvDesc::wait(0x12_3450, 0xdead_beef).unwrap().0,
        [0xdead_beef_0000_0025, 0x12_3450]
    );
    assert_eq!(InvDesc::wait(0x12_3452, 1), None);
    assert_eq!(InvDesc::wait(0x1000, 1).unwrap().kind(), INV_TYPE_WAIT);
}

/// The reserved-bit masks QEMU 7.2 checks (the VT-d specification's reserved fields):
/// none of our descriptors may set one.
#[test]
fn invalidation_descriptors_leave_reserved_bits_clear() {
    let caps = Capabilities::decode(QEMU_CAP_AW39, QEMU_ECAP);
    for did in [0u16, 1, 0xffff] {
        for sid in [0u16, 0x18, 0xffff] {
            let d = InvDesc::context_device(did, sid).0;
            assert_eq!(d[0] & 0xfffc_0000_0000_ffc0, 0);
            assert_eq!(d[1], 0);
        }
        let d = InvDesc::iotlb_domain(&caps, did).0;
        assert_eq!(d[0] & 0xffff_ffff_0000_ff00, 0);
        assert_eq!(d[1], 0);
    }
    for index in [0u16, 1, 0xffff] {
        let d = InvDesc::iec_index(index).0;
        assert_eq!(d[0] & 0xffff_0000_07ff_f1e0, 0);
    }
    let w = InvDesc::wait(0xffff_fffc, u32::MAX).unwrap().0;
    // Bits 7..8 and 12..31 reserved; status address bits 0..1 reserved; SW without IF.
    assert_eq!(w[0] & 0xffff_f180, 0);
    assert_eq!(w[1] & 3, 0);
    assert_eq!(w[0] & INV_WAIT_IF, 0);
    assert_ne!(w[0] & INV_WAIT_SW, 0);
}

#[test]
fn queue_registers() {
    assert_eq!(iqa_value(0x0123_4000, 0), 0x0123_4000);
    assert_eq!(iqa_value(0x0123_4fff, 9), 0x0123_4001);
    assert_eq!(iq_offset(0), 0);
    assert_eq!(iq_offset(1), 0x10);
    assert_eq!(iq_offset(255), 0xff0);
    assert_eq!(iq_index(0xff0), 255);
    for i in 0..INV_QUEUE_ENTRIES {
        assert_eq!(iq_index(iq_offset(i)), i);
    }
    assert_eq!(u64::from(INV_QUEUE_ENTRIES) * INV_DESC_BYTES, 4096);
    let ops = enable_queued_invalidation(0x5000, GCMD_TE);
    assert_eq!(
        ops[0],
        RegOp::Write64 {
            offset: REG_IQT,
            value: 0
        }
    );
    assert_eq!(
        ops[1],
        RegOp::Write64 {
            offset: REG_IQA,
            value: 0x5000
        }
    );
    // TE is repeated, or the command would turn translation off.
    assert_eq!(
        ops[2],
        RegOp::Write32 {
            offset: REG_GCMD,
            value: GCMD_TE | GCMD_QIE
        }
    );
    assert_eq!(
        ops[3],
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_QIE,
            expect: GCMD_QIE
        }
    );
}

#[test]
fn interrupt_remap_table_registers() {
    assert_eq!(irta_size_field(0), None);
    assert_eq!(irta_size_field(1), Some(0));
    assert_eq!(irta_size_field(2), Some(0));
    assert_eq!(irta_size_field(3), Some(1));
    assert_eq!(irta_size_field(16), Some(3));
    assert_eq!(irta_size_field(u32::from(IRT_ONE_PAGE_ENTRIES)), Some(7));
    assert_eq!(irta_size_field(1 << 16), Some(IRTA_MAX_SIZE_FIELD));
    assert_eq!(irta_size_field((1 << 16) + 1), None);
    assert_eq!(u64::from(IRT_ONE_PAGE_ENTRIES) * IRTE_BYTES, 4096);
    assert_eq!(irta_value(0x7000, 7, false), 0x7007);
    assert_eq!(irta_value(0x7000, 7, true), 0x7807);
    let gsts = GCMD_TE | GCMD_QIE;
    let ops = set_interrupt_remap_table(0x7007, gsts);
    assert_eq!(
        ops[0],
        RegOp::Write64 {
            offset: REG_IRTA,
            value: 0x7007
        }
    );
    assert_eq!(
        ops[1],
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gsts | GCMD_SIRTP
        }
    );
    assert_eq!(
        ops[2],
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GSTS_IRTPS,
            expect: GSTS_IRTPS
        }
    );
    let ops = enable_interrupt_remapping(gsts);
    assert_eq!(
        ops[0],
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gsts | GCMD_IRE
        }
    );
    // Compatibility-format interrupts are not allowed through.
    assert!(matches!(ops[0], RegOp::Write32 { value, .. } if value & GCMD_CFI == 0));
}

#[test]
fn irte_encoding() {
    // APIC 1, vector 0x31, requester 00:03.0, xAPIC: destination in bits 40..47.
    let e = irte(1, 0x31, 0x0018, false).unwrap();
    assert_eq!(e, [0x0000_0100_0031_0001, 0x0004_0018]);
    let v = IrteView::decode(e);
    assert!(v.present);
    assert_eq!(v.vector, 0x31);
    assert_eq!(v.destination, 0x100);
    assert_eq!(v.source_id, 0x18);
    assert_eq!(v.source_validation, 1);
    assert_eq!(v.source_qualifier, 0);
    // x2APIC: the whole field.
    assert_eq!(irte(0x1234, 0x40, 1, true).unwrap()[0] >> 32, 0x1234);
    assert_eq!(irte(0x100, 0x40, 1, false), None);
    assert_eq!(irte(0, 15, 1, false), None);
    // QEMU 7.2's reserved fields: low bits 12..14 and 24..31, high bits 20..63; FPD,
    // destination mode, redirection hint, trigger mode, delivery mode and IM all 0.
    for (apic, vector, sid) in [(0u32, 16u8, 0u16), (255, 255, 0xffff), (3, 0x3e, 0x0100)] {
        let [lo, hi] = irte(apic, vector, sid, false).unwrap();
        assert_eq!(lo & 0x0000_0000_ff00_7000, 0);
        assert_eq!(lo & 0xfe, 0, "FPD, DM, RH, TM, DLM clear");
        assert_eq!(lo & 1 << 15, 0, "remapped mode, not posted");
        assert_eq!(hi >> 20, 0);
    }
}

#[test]
fn remappable_msi_addresses() {
    assert_eq!(remappable_msi_address(0), 0xfee0_0010);
    assert_eq!(remappable_msi_address(1), 0xfee0_0030);
    assert_eq!(remappable_msi_address(0x7fff), 0xfeef_fff0);
    assert_eq!(remappable_msi_address(0x8000), 0xfee0_0014);
    for handle in [0u16, 1, 14, 255, 0x7fff, 0x8000, 0xffff] {
        let address = remappable_msi_address(handle);
        assert!(INTERRUPT_RANGE.contains(&u64::from(address)));
        assert_eq!(address & 1 << 3, 0, "SHV clear");
        assert_eq!(msi_handle(address), Some(handle));
    }
    // Compatibility format (bit 4 clear) and addresses outside the range have no handle.
    assert_eq!(msi_handle(0xfee0_1000), None);
    assert_eq!(msi_handle(0xfed0_0010), None);
}

#[test]
fn interrupt_remapping_fault_records() {
    // Reason 0x22 (entry not present) for index 9 by 00:03.0, a write.
    let record = FaultRecord::decode(9 << 48, 0x8000_0022_0000_0018);
    assert_eq!(record.reason, 0x22);
    assert!(record.fault);
    assert_eq!(record.interrupt_index(), Some(9));
    assert_eq!(
        record.reason_text(),
        "interrupt remapping entry not present"
    );
    assert_eq!(record.source_id, Bdf::from_source_id(0, 0x18));
    for reason in 0x20..=0x26u8 {
        assert!(is_interrupt_remapping_fault(reason));
        assert_ne!(fault_reason_text(reason), "unknown fault reason");
    }
    assert!(!is_interrupt_remapping_fault(0x5));
    assert_eq!(
        FaultRecord::decode(0x1000, 0x8000_0005_0000_0018).interrupt_index(),
        None
    );
}

proptest! {
    #[test]
    fn remappable_address_round_trips(handle in any::<u16>()) {
        let address = remappable_msi_address(handle);
        prop_assert_eq!(address >> 20, 0xfee);
        prop_assert_eq!(msi_handle(address), Some(handle));
    }

    #[test]
    fn irte_round_trips(apic in 0u32..256, vector in 16u8..=255, sid in any::<u16>()) {
        let view = IrteView::decode(irte(apic, vector, sid, false).unwrap());
        prop_assert!(view.present);
        prop_assert_eq!(view.vector, vector);
        prop_assert_eq!(view.destination >> 8, apic);
        prop_assert_eq!(view.source_id, sid);
        prop_assert_eq!(view.source_validation, 1);
        prop_assert_eq!(view.source_qualifier, 0);
    }
}
