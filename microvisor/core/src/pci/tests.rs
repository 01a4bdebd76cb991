//! Tests of PCI addresses, enumeration and BAR sizing over an emulated configuration
//! space (a q35-like bus with a virtio device, a multi-function chipset device, a bridge
//! and an absent slot), BAR placement, the owner's write filter, and robustness against
//! garbage configuration space.

use super::*;
use proptest::prelude::*;
use std::cell::Cell;
use std::collections::HashMap;
use std::vec::Vec as StdVec;

// ---------------------------------------------------------------------------------------
// An emulated configuration space
// ---------------------------------------------------------------------------------------

/// One emulated function: its registers, and for each BAR the bits software can write
/// (the address bits above its size; 0 for an unimplemented BAR).
#[derive(Clone)]
struct FakeFunction {
    regs: [u32; 1024],
    bar_writable: [u32; 6],
    /// A BAR was written while its decoding was enabled.
    probed_while_decoding: bool,
    writes: StdVec<(u16, u32)>,
}

impl FakeFunction {
    fn new(vendor: u16, device: u16, class: u32, header_type: u8) -> Self {
        let mut regs = [0u32; 1024];
        regs[0] = u32::from(device) << 16 | u32::from(vendor);
        regs[2] = class << 8 | 0x01; // revision 1
        regs[3] = u32::from(header_type) << 16;
        FakeFunction {
            regs,
            bar_writable: [0; 6],
            probed_while_decoding: false,
            writes: StdVec::new(),
        }
    }

    fn command(&self) -> u16 {
        self.regs[1] as u16
    }

    fn set_command(&mut self, command: u16) {
        self.regs[1] = (self.regs[1] & 0xffff_0000) | u32::from(command);
    }

    fn set_status(&mut self, status: u16) {
        self.regs[1] = (self.regs[1] & 0xffff) | u32::from(status) << 16;
    }

    /// A 32-bit memory BAR of `size` at `base`.
    fn mem32(mut self, index: usize, base: u32, size: u32, prefetchable: bool) -> Self {
        self.regs[4 + index] = base | u32::from(prefetchable) << 3;
        self.bar_writable[index] = !(size - 1);
        self
    }

    /// A 64-bit memory BAR of `size` at `base` in slots `index` and `index + 1`.
    fn mem64(mut self, index: usize, base: u64, size: u64, prefetchable: bool) -> Self {
        self.regs[4 + index] = base as u32 | 4 | u32::from(prefetchable) << 3;
        self.regs[5 + index] = (base >> 32) as u32;
        let writable = !(size - 1);
        self.bar_writable[index] = writable as u32 & !0xf;
        self.bar_writable[index + 1] = (writable >> 32) as u32;
        self
    }

    /// An I/O BAR of `size` ports at `base` (16-bit decode: upper bits read 0).
    fn io(mut self, index: usize, base: u16, size: u16) -> Self {
        self.regs[4 + index] = u32::from(base) | 1;
        self.bar_writable[index] = u32::from(!(size - 1)) & 0xfffc;
        self
    }

    /// Installs a capability list: (id, offset, extra dwords after the header).
    fn caps(mut self, list: &[(u8, u16, &[u32])]) -> Self {
        self.set_status(STATUS_CAPABILITIES);
        let mut pointer_at = 0x34usize;
        for &(id, offset, body) in list {
            let ptr_dword = pointer_at / 4;
            let shift = (pointer_at % 4) * 8;
            self.regs[ptr_dword] =
                (self.regs[ptr_dword] & !(0xff << shift)) | u32::from(offset) << shift;
            let at = usize::from(offset) / 4;
            self.regs[at] = (self.regs[at] & 0xffff_0000) | u32::from(id);
            for (k, word) in body.iter().enumerate() {
                if k == 0 {
                    // Upper half of the header dword (e.g. Message Control).
                    self.regs[at] |= word << 16;
                } else {
                    self.regs[at + k] = *word;
                }
            }
            pointer_at = usize::from(offset) + 1;
        }
        self
    }

    fn read(&self, offset: u16) -> u32 {
        self.regs[usize::from(offset / 4)]
    }

    fn write(&mut self, offset: u16, value: u32) {
        self.writes.push((offset, value));
        let index = usize::from(offset / 4);
        match offset {
            0x00 | 0x08 => {} // read-only IDs and class
            COMMAND => {
                let status =
                    (self.regs[1] >> 16) as u16 & !((value >> 16) as u16 & STATUS_WRITE1_CLEAR);
                self.regs[1] = u32::from(status) << 16 | (value & 0xffff);
            }
            0x10..=0x24 if self.regs[3] >> 16 & 0x7f == 0 => {
                let bar = usize::from((offset - 0x10) / 4);
                if value == u32::MAX && self.command() & (COMMAND_IO | COMMAND_MEMORY) != 0 {
                    self.probed_while_decoding = true;
                }
                let writable = self.bar_writable[bar];
                self.regs[index] = (self.regs[index] & !writable) | (value & writable);
            }
            _ => self.regs[index] = value,
        }
    }
}

#[derive(Default)]
struct FakeConfig {
    functions: HashMap<(u8, u8, u8), FakeFunction>,
    reads: Cell<usize>,
}

impl FakeConfig {
    fn add(&mut self, bus: u8, device: u8, function: u8, f: FakeFunction) {
        self.functions.insert((bus, device, function), f);
    }

    fn get(&self, bus: u8, device: u8, function: u8) -> &FakeFunction {
        &self.functions[&(bus, device, function)]
    }

    fn get_mut(&mut self, bus: u8, device: u8, function: u8) -> &mut FakeFunction {
        self.functions.get_mut(&(bus, device, function)).unwrap()
    }
}

impl ConfigSpace for FakeConfig {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        assert_eq!(offset % 4, 0, "unaligned read {offset:#x}");
        assert!(offset < CONFIG_SPACE_BYTES);
        self.reads.set(self.reads.get() + 1);
        self.functions
            .get(&(bdf.bus, bdf.device, bdf.function))
            .map_or(u32::MAX, |f| f.read(offset))
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        assert_eq!(offset % 4, 0, "unaligned write {offset:#x}");
        assert!(offset < CONFIG_SPACE_BYTES);
        if let Some(f) = self.functions.get_mut(&(bdf.bus, bdf.device, bdf.function)) {
            f.write(offset, value);
        }
    }
}

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(0, bus, device, function).unwrap()
}

const VIRTIO_BAR4: u64 = 0x80_0000_0000;

/// A q35-like machine: host bridge 00:00.0, virtio-blk 00:03.0 (MSI-X, a 64-bit
/// prefetchable BAR firmware put above 4 GiB), a device 00:04.0 without the
/// multi-function bit that answers on every function number, nothing at 00:02, a bridge
/// 00:1e.0, the multi-function chipset 00:1f.{0,2,3} (no function 1), and an e1000e-like
/// NIC on bus 1.
fn machine() -> FakeConfig {
    let mut cfg = FakeConfig::default();
    cfg.add(0, 0, 0, FakeFunction::new(0x8086, 0x29c0, 0x06_00_00, 0));
    let virtio = FakeFunction::new(0x1af4, 0x1042, 0x01_00_00, 0)
        .mem32(1, 0xfebd_1000, 0x1000, false)
        .mem64(4, VIRTIO_BAR4, 0x4000, true)
        .caps(&[
            // MSI-X: 3 entries, table in BAR1 at 0, PBA in BAR1 at 0x800.
            (CAP_ID_MSIX, 0x98, &[2, 0x0000_0001, 0x0000_0801]),
            (0x09, 0x84, &[0x0514]),
            (0x09, 0x70, &[0x0414]),
            (0x09, 0x60, &[0x0214]),
            (0x09, 0x50, &[0x0114]),
            (0x09, 0x40, &[0x0310]),
        ]);
    let mut virtio = virtio;
    virtio.set_command(COMMAND_MEMORY | COMMAND_BUS_MASTER);
    cfg.add(0, 3, 0, virtio);
    for function in 0..8 {
        let f = FakeFunction::new(0x1234, 0x0001 + function as u16, 0xff_00_00, 0).mem32(
            0,
            0xfebf_0000,
            0x100,
            false,
        );
        cfg.add(0, 4, function, f);
    }
    let mut bridge = FakeFunction::new(0x1b36, 0x0001, 0x06_04_00, 1);
    bridge.regs[4] = 0xdead_0000; // must be neither sized nor written
    bridge.regs[6] = 0x00_01_01_00; // secondary bus 1
    cfg.add(0, 0x1e, 0, bridge);
    cfg.add(
        0,
        0x1f,
        0,
        FakeFunction::new(0x8086, 0x2918, 0x06_01_00, 0x80),
    );
    let mut sata = FakeFunction::new(0x8086, 0x2922, 0x01_06_01, 0)
        .io(4, 0xc060, 0x20)
        .mem32(5, 0xfebd_2000, 0x1000, false)
        .caps(&[
            // MSI: 64-bit (control bit 7), no per-vector masking, 1 vector.
            (CAP_ID_MSI, 0x80, &[0x0080]),
            (0x12, 0xa8, &[0x0010]),
        ]);
    sata.regs[0x3c / 4] = 0x0000_010a; // INTA, line 10
    sata.set_command(COMMAND_IO | COMMAND_MEMORY);
    cfg.add(0, 0x1f, 2, sata);
    cfg.add(
        0,
        0x1f,
        3,
        FakeFunction::new(0x8086, 0x2930, 0x0c_05_00, 0).io(4, 0x0700, 0x40),
    );
    let nic = FakeFunction::new(0x8086, 0x10d3, 0x02_00_00, 0)
        .mem32(0, 0xfe80_0000, 0x20000, false)
        .mem32(1, 0xfe82_0000, 0x20000, false)
        .io(2, 0xb000, 0x20)
        .mem32(3, 0xfe84_0000, 0x4000, false)
        .caps(&[
            (CAP_ID_POWER_MANAGEMENT, 0xc8, &[0x0023, 0]),
            (CAP_ID_MSI, 0xd0, &[0x0180, 0, 0, 0, 0, 0]),
            (CAP_ID_PCI_EXPRESS, 0xf0, &[0x0002, 0, 0x2810]),
            (CAP_ID_MSIX, 0xa0, &[4, 0x0000_0003, 0x0000_2003]),
        ]);
    cfg.add(1, 0, 0, nic);
    cfg
}

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

#[test]
fn bdf_text_forms() {
    let b = Bdf::new(0, 0, 3, 0).unwrap();
    assert_eq!(b.to_string(), "0000:00:03.0");
    assert_eq!(
        Bdf::new(0x12, 0xab, 0x1f, 7).unwrap().to_string(),
        "0012:ab:1f.7"
    );
    assert_eq!(Bdf::parse("0000:00:03.0"), Ok(b));
    assert_eq!("00:03.0".parse::<Bdf>(), Ok(b));
    assert_eq!(
        Bdf::parse("0001:ff:1f.7"),
        Ok(Bdf::new(1, 0xff, 0x1f, 7).unwrap())
    );
    assert_eq!(Bdf::parse("0:1:2.3"), Ok(Bdf::new(0, 1, 2, 3).unwrap()));
    for bad in [
        "",
        "00:03",
        "00.0",
        "00:20.0",
        "00:03.8",
        "00:03.",
        ":03.0",
        "0000:00:03.0.1",
        "x0:03.0",
        "100:03.0",
        "00000:00:03.0",
        "00:003.0",
        "00:03.10",
        "0:0:0:00:03.0",
        "+0:03.0",
        "00:03.-1",
    ] {
        assert_eq!(Bdf::parse(bad), Err(ParseBdfError), "{bad:?}");
    }
    assert_eq!(Bdf::new(0, 0, 32, 0), None);
    assert_eq!(Bdf::new(0, 0, 0, 8), None);
}

#[test]
fn bdf_numbers() {
    let b = Bdf::new(0, 0x12, 0x1f, 5).unwrap();
    assert_eq!(b.ecam_offset(), 0x12 << 20 | 0x1f << 15 | 5 << 12);
    assert_eq!(b.ecam_offset(), 0x12f_d000);
    assert_eq!(b.devfn(), 0xfd);
    assert_eq!(b.source_id(), 0x12fd);
    assert_eq!(Bdf::from_source_id(0, 0x12fd), b);
    assert_eq!(
        Bdf::new(0, 0xff, 0x1f, 7).unwrap().ecam_offset(),
        0xfff_f000
    );
}

proptest! {
    #[test]
    fn bdf_display_parse_round_trip(segment: u16, bus: u8, device in 0u8..32, function in 0u8..8) {
        let b = Bdf::new(segment, bus, device, function).unwrap();
        prop_assert_eq!(Bdf::parse(&b.to_string()), Ok(b));
        prop_assert_eq!(Bdf::from_source_id(segment, b.source_id()), b);
    }

    #[test]
    fn bdf_parse_never_panics(text in ".{0,20}") {
        let _ = Bdf::parse(&text);
    }
}

// ---------------------------------------------------------------------------------------
// Enumeration and sizing
// ---------------------------------------------------------------------------------------

#[test]
fn enumerate_finds_present_functions_only() {
    let mut cfg = machine();
    let found = enumerate(&mut cfg, 0, 0..=1);
    let addresses: StdVec<String> = found.iter().map(|f| f.bdf.to_string()).collect();
    assert_eq!(
        addresses,
        [
            "0000:00:00.0",
            "0000:00:03.0",
            "0000:00:04.0", // no multi-function bit: functions 1..8 are not looked at
            "0000:00:1e.0",
            "0000:00:1f.0",
            "0000:00:1f.2",
            "0000:00:1f.3",
            "0000:01:00.0",
        ]
    );
    let sata = &found[5];
    assert_eq!((sata.vendor, sata.device), (0x8086, 0x2922));
    assert_eq!(sata.class, 0x01_06_01);
    assert_eq!(sata.revision, 1);
    assert_eq!(sata.header_type, 0);
    assert_eq!(sata.interrupt_pin, 1);
    assert_eq!(found[4].header_type, 0, "multi-function bit removed");
    let bridge = &found[3];
    assert_eq!(bridge.header_type, 1);
    assert!(!bridge.is_endpoint());
    assert_eq!(bridge.bars, [Bar::NONE; 6]);
    assert!(
        cfg.get(0, 0x1e, 0).writes.is_empty(),
        "bridge BARs are not sized"
    );
    // Bus 2 is outside the range: nothing there is read.
    let reads_before = cfg.reads.get();
    assert!(enumerate(&mut cfg, 0, 2..=2).is_empty());
    assert_eq!(
        cfg.reads.get() - reads_before,
        32,
        "one read per absent device"
    );
    // The segment is carried into every address.
    assert!(enumerate(&mut cfg, 7, 0..=0)
        .iter()
        .all(|f| f.bdf.segment == 7));
}

#[test]
fn enumerate_scans_the_whole_range_up_to_bus_255() {
    let mut cfg = FakeConfig::default();
    cfg.add(0xff, 0x1f, 0, FakeFunction::new(0x8086, 1, 0, 0));
    let found = enumerate(&mut cfg, 0, 0..=255);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].bdf, bdf(0xff, 0x1f, 0));
}

#[test]
fn enumerate_stops_at_capacity() {
    let mut cfg = FakeConfig::default();
    for device in 0..32 {
        for function in 0..8 {
            cfg.add(0, device, function, FakeFunction::new(0x8086, 1, 0, 0x80));
        }
    }
    let found = enumerate(&mut cfg, 0, 0..=0);
    assert_eq!(found.len(), MAX_FUNCTIONS);
    assert_eq!(found[MAX_FUNCTIONS - 1].bdf, bdf(0, 7, 7));
}

#[test]
fn virtio_bars_and_msix() {
    let mut cfg = machine();
    let found = enumerate(&mut cfg, 0, 0..=0);
    let virtio = found.iter().find(|f| f.bdf == bdf(0, 3, 0)).unwrap();
    assert_eq!(virtio.bars[0], Bar::NONE);
    assert_eq!(
        virtio.bars[1],
        Bar {
            kind: BarKind::Mem32,
            base: 0xfebd_1000,
            size: 0x1000,
            prefetchable: false
        }
    );
    assert_eq!(
        virtio.bars[4],
        Bar {
            kind: BarKind::Mem64,
            base: VIRTIO_BAR4,
            size: 0x4000,
            prefetchable: true
        }
    );
    assert_eq!(virtio.bars[5], Bar::NONE, "upper half of BAR4");
    assert_eq!(virtio.msi, None);
    let msix = virtio.msix.unwrap();
    assert_eq!(
        msix,
        MsixCap {
            cap_offset: 0x98,
            table_size: 3,
            table_bar: 1,
            table_offset: 0,
            pba_bar: 1,
            pba_offset: 0x800,
        }
    );
    assert_eq!(msix.table_bytes(), 48);
    assert_eq!(
        msix.table_range(&virtio.bars),
        Some(0xfebd_1000..0xfebd_1030)
    );
    assert_eq!(msix.pba_range(&virtio.bars), Some(0xfebd_1800..0xfebd_1808));
    // Decoding was off while probing, and everything is restored afterwards.
    let dev = cfg.get(0, 3, 0);
    assert!(!dev.probed_while_decoding);
    assert_eq!(dev.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
    assert_eq!(dev.regs[4 + 1], 0xfebd_1000);
    assert_eq!(dev.regs[4 + 4], 0x0000_000c);
    assert_eq!(dev.regs[4 + 5], 0x80);
    // The first write turned decoding off, the last one turned it back on.
    assert_eq!(
        dev.writes.first(),
        Some(&(COMMAND, u32::from(COMMAND_BUS_MASTER)))
    );
    assert_eq!(
        dev.writes.last(),
        Some(&(COMMAND, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER)))
    );
}

#[test]
fn io_bars_msi_and_other_capabilities() {
    let mut cfg = machine();
    let found = enumerate(&mut cfg, 0, 0..=1);
    let sata = found.iter().find(|f| f.bdf == bdf(0, 0x1f, 2)).unwrap();
    assert_eq!(
        sata.bars[4],
        Bar {
            kind: BarKind::Io,
            base: 0xc060,
            size: 0x20,
            prefetchable: false
        }
    );
    assert_eq!(sata.bars[5].kind, BarKind::Mem32);
    assert_eq!(
        sata.msi,
        Some(MsiCap {
            cap_offset: 0x80,
            is_64bit: true,
            per_vector_mask: false,
            multi_message_capable: 0
        })
    );
    let msi = sata.msi.unwrap();
    assert_eq!(msi.address_offset(), 0x84);
    assert_eq!(msi.upper_address_offset(), Some(0x88));
    assert_eq!(msi.data_offset(), 0x8c);
    assert_eq!(msi.mask_offset(), None);
    assert_eq!(msi.len_bytes(), 16);
    assert!(!cfg.get(0, 0x1f, 2).probed_while_decoding);
    assert_eq!(cfg.get(0, 0x1f, 2).command(), COMMAND_IO | COMMAND_MEMORY);

    let nic = found.iter().find(|f| f.bdf == bdf(1, 0, 0)).unwrap();
    assert_eq!(nic.pm_cap, Some(0xc8));
    assert_eq!(nic.pcie_cap, Some(0xf0));
    let msi = nic.msi.unwrap();
    assert!(msi.is_64bit && msi.per_vector_mask);
    assert_eq!(msi.mask_offset(), Some(0xe0));
    assert_eq!(msi.len_bytes(), 24);
    let msix = nic.msix.unwrap();
    assert_eq!((msix.table_size, msix.table_bar, msix.pba_bar), (5, 3, 3));
    assert_eq!(msix.pba_offset, 0x2000);
    assert_eq!(msix.table_range(&nic.bars), Some(0xfe84_0000..0xfe84_0050));
    assert_eq!(nic.bars[2].kind, BarKind::Io);
}

#[test]
fn msi_layouts() {
    let cap = |is_64bit, per_vector_mask| MsiCap {
        cap_offset: 0x50,
        is_64bit,
        per_vector_mask,
        multi_message_capable: 0,
    };
    let c = cap(false, false);
    assert_eq!(
        (c.data_offset(), c.upper_address_offset(), c.len_bytes()),
        (0x58, None, 12)
    );
    let c = cap(false, true);
    assert_eq!(
        (c.data_offset(), c.mask_offset(), c.len_bytes()),
        (0x58, Some(0x5c), 20)
    );
    let c = cap(true, true);
    assert_eq!(
        (c.data_offset(), c.mask_offset(), c.len_bytes()),
        (0x5c, Some(0x60), 24)
    );
}

#[test]
fn odd_bars() {
    let mut cfg = FakeConfig::default();
    let mut f = FakeFunction::new(1, 2, 0, 0);
    f.regs[4 + 5] = 0xe000_0004; // 64-bit type in the last slot
    f.bar_writable[5] = 0xffff_f000;
    f.regs[4] = 0b110; // reserved memory type 3
    f.regs[5] = 0x1000_0002; // legacy below-1-MiB type: treated as 32-bit
    f.bar_writable[1] = 0xffff_f000;
    cfg.add(0, 0, 0, f);
    let bars = size_bars(&mut cfg, bdf(0, 0, 0));
    assert_eq!(bars[0], Bar::NONE, "reserved type");
    assert_eq!(bars[1].kind, BarKind::Mem32);
    assert_eq!(bars[1].size, 0x1000);
    assert_eq!(bars[5], Bar::NONE, "a 64-bit BAR cannot start in slot 5");
    assert!(
        bars[2..5].iter().all(|b| *b == Bar::NONE),
        "unimplemented BARs"
    );
}

#[test]
fn large_64bit_bar_size_comes_from_the_upper_half() {
    let mut cfg = FakeConfig::default();
    cfg.add(
        0,
        0,
        0,
        FakeFunction::new(1, 2, 0, 0).mem64(0, 0x40_0000_0000, 0x10_0000_0000, true),
    );
    let bars = size_bars(&mut cfg, bdf(0, 0, 0));
    assert_eq!(bars[0].size, 0x10_0000_0000);
    assert_eq!(bars[0].base, 0x40_0000_0000);
}

// ---------------------------------------------------------------------------------------
// Capability lists
// ---------------------------------------------------------------------------------------

#[test]
fn capability_walk_rules() {
    let mut cfg = machine();
    let ids: StdVec<(u8, u16)> = capabilities(&cfg, bdf(0, 3, 0))
        .map(|c| (c.id, c.offset))
        .collect();
    assert_eq!(
        ids,
        [
            (0x11, 0x98),
            (9, 0x84),
            (9, 0x70),
            (9, 0x60),
            (9, 0x50),
            (9, 0x40)
        ]
    );
    // Status bit 4 clear: no list, whatever the pointer says.
    let f = cfg.get_mut(0, 3, 0);
    f.set_status(0);
    assert_eq!(capabilities(&cfg, bdf(0, 3, 0)).count(), 0);
    // A list pointing at itself stops after MAX_CAPABILITIES entries.
    let f = cfg.get_mut(0, 3, 0);
    f.set_status(STATUS_CAPABILITIES);
    f.regs[0x98 / 4] = 0x0000_9811;
    assert_eq!(capabilities(&cfg, bdf(0, 3, 0)).count(), MAX_CAPABILITIES);
    // Low pointer bits are masked; a pointer into the header ends the list.
    let f = cfg.get_mut(0, 3, 0);
    f.regs[0x34 / 4] = 0x9b;
    f.regs[0x98 / 4] = 0x0000_3c05;
    let caps: StdVec<Capability> = capabilities(&cfg, bdf(0, 3, 0)).collect();
    assert_eq!(
        caps,
        [Capability {
            id: 5,
            offset: 0x98
        }]
    );
    // An absent function has no capabilities (and reading it does not loop).
    assert_eq!(capabilities(&cfg, bdf(0, 9, 0)).count(), 0);
}

#[test]
fn msix_with_bad_bar_indicator_is_ignored() {
    let mut cfg = FakeConfig::default();
    cfg.add(
        0,
        0,
        0,
        FakeFunction::new(1, 2, 0, 0).caps(&[(CAP_ID_MSIX, 0x40, &[0x7ff, 6, 0])]),
    );
    assert_eq!(read_msix(&cfg, bdf(0, 0, 0), 0x40), None);
    let f = read_function(&mut cfg, bdf(0, 0, 0));
    assert_eq!(f.msix, None);
    cfg.get_mut(0, 0, 0).regs[0x44 / 4] = 5;
    let m = read_msix(&cfg, bdf(0, 0, 0), 0x40).unwrap();
    assert_eq!(m.table_size, 2048);
    // The table does not fit in an absent BAR.
    assert_eq!(m.table_range(&[Bar::NONE; 6]), None);
}

// ---------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------

const WINDOW: Range<u64> = 0xc000_0000..0xd000_0000;

#[test]
fn place_bars_aligns_largest_first_in_pages() {
    let mut cfg = machine();
    let found = enumerate(&mut cfg, 0, 0..=1);
    let mut chosen: StdVec<Function> = found
        .iter()
        .filter(|f| [bdf(0, 3, 0), bdf(0, 0x1f, 2), bdf(1, 0, 0)].contains(&f.bdf))
        .copied()
        .collect();
    let before = chosen.clone();
    place_bars(&mut chosen, WINDOW).unwrap();
    let mut placed: StdVec<(u64, u64)> = StdVec::new();
    for (old, new) in before.iter().zip(&chosen) {
        for (a, b) in old.bars.iter().zip(&new.bars) {
            assert_eq!(
                (a.kind, a.size, a.prefetchable),
                (b.kind, b.size, b.prefetchable)
            );
            if a.kind == BarKind::Io || a.kind == BarKind::None {
                assert_eq!(a.base, b.base, "I/O BARs keep firmware's placement");
                continue;
            }
            let span = b.size.max(BAR_PAGE_BYTES);
            assert_eq!(b.base % span, 0, "naturally aligned, whole pages");
            assert!(WINDOW.start <= b.base && b.base + span <= WINDOW.end);
            placed.push((b.base, b.base + span));
        }
    }
    placed.sort();
    for pair in placed.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlap {pair:?}");
    }
    // Largest first from the window start: 2 × 128 KiB, 16 KiB ×2, then 4 KiB pages.
    let nic = &chosen[2];
    assert_eq!(nic.bars[0].base, 0xc000_0000);
    assert_eq!(nic.bars[1].base, 0xc002_0000);
    let virtio = &chosen[0];
    assert_eq!(
        virtio.bars[4].base, 0xc004_0000,
        "64-bit BAR moved below 4 GiB"
    );
    assert_eq!(nic.bars[3].base, 0xc004_4000);
    assert_eq!(virtio.bars[1].base, 0xc004_8000);
    assert_eq!(chosen[1].bars[5].base, 0xc004_9000);
    assert_eq!(placed.last().unwrap().1, 0xc004_a000, "no holes");

    // Programming them reaches the device: sizing again reads the new bases.
    for f in &chosen {
        program_bars(&mut cfg, f);
        assert_eq!(size_bars(&mut cfg, f.bdf), f.bars);
    }
    let virtio_dev = cfg.get(0, 3, 0);
    assert_eq!(virtio_dev.regs[4 + 4], 0xc004_000c);
    assert_eq!(virtio_dev.regs[4 + 5], 0);
    assert_eq!(virtio_dev.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
}

#[test]
fn bar_writes_encode_type_bits() {
    let mut f = enumerate(&mut machine(), 0, 0..=0)[1];
    assert_eq!(f.bdf, bdf(0, 3, 0));
    f.bars[4].base = 0x1_2345_c000;
    let writes: StdVec<(u16, u32)> = bar_writes(&f).iter().copied().collect();
    assert_eq!(
        writes,
        [(0x14, 0xfebd_1000), (0x20, 0x2345_c00c), (0x24, 0x1)]
    );
    let bridge = enumerate(&mut machine(), 0, 0..=0)[3];
    assert!(bar_writes(&bridge).is_empty());
}

#[test]
fn place_bars_errors_leave_everything_unchanged() {
    let mut chosen: StdVec<Function> = enumerate(&mut machine(), 0, 0..=1)
        .iter()
        .copied()
        .collect();
    let before = chosen.clone();
    assert_eq!(
        place_bars(&mut chosen, 0x1000..0x1000),
        Err(PlaceError::BadWindow)
    );
    assert_eq!(
        place_bars(&mut chosen, 0x1800..0x4000),
        Err(PlaceError::BadWindow)
    );
    let err = place_bars(&mut chosen, 0xc000_0000..0xc002_0000).unwrap_err();
    assert!(matches!(err, PlaceError::NoSpace { bar: 1, .. }), "{err:?}");
    assert_eq!(chosen, before);
    assert!(err.to_string().contains("0000:01:00.0 BAR 1"));
}

#[test]
fn place_bars_keeps_32bit_bars_below_4g() {
    let mut cfg = FakeConfig::default();
    cfg.add(
        0,
        0,
        0,
        FakeFunction::new(1, 2, 0, 0).mem32(0, 0xfe00_0000, 0x2000, false),
    );
    cfg.add(
        0,
        1,
        0,
        FakeFunction::new(1, 3, 0, 0).mem64(0, 0xfd00_0000, 0x2000, false),
    );
    let mut fs: StdVec<Function> = enumerate(&mut cfg, 0, 0..=0).iter().copied().collect();
    let mut only32 = [fs[0]];
    assert!(matches!(
        place_bars(&mut only32, 0xffff_f000..0x1_0001_0000),
        Err(PlaceError::NoSpace { .. })
    ));
    place_bars(&mut fs[1..], 0xffff_e000..0x1_0001_0000).unwrap();
    assert_eq!(fs[1].bars[0].base, 0xffff_e000);
    place_bars(&mut fs[1..], 0x1_0000_0000..0x1_0001_0000).unwrap();
    assert_eq!(
        fs[1].bars[0].base, 0x1_0000_0000,
        "64-bit BARs may go above 4 GiB"
    );
}

// ---------------------------------------------------------------------------------------
// The owner's write filter
// ---------------------------------------------------------------------------------------

fn nic_filter() -> (FakeConfig, Function, ConfigFilter) {
    let mut cfg = machine();
    let nic = read_function(&mut cfg, bdf(1, 0, 0));
    (cfg, nic, ConfigFilter::new(&nic))
}

#[test]
fn filter_bars_and_rom_are_ignored() {
    let (_, _, filter) = nic_filter();
    for offset in (0x10..0x28).step_by(4).chain([0x30]) {
        assert_eq!(
            filter.decide(offset, 4, 0xffff_ffff, 0),
            WriteDecision::Ignore,
            "{offset:#x}"
        );
        assert_eq!(
            filter.decide(offset + 2, 2, 0xffff, 0),
            WriteDecision::Ignore
        );
        assert_eq!(filter.decide(offset + 3, 1, 0xff, 0), WriteDecision::Ignore);
    }
    // The dwords around them pass (all but BIST, byte 0x0f).
    assert_eq!(
        filter.decide(0x0c, 4, 0x0000_4010, 0),
        WriteDecision::Masked(0x0000_4010)
    );
    assert_eq!(filter.decide(0x28, 4, 0, 0), WriteDecision::Allow);
    assert_eq!(filter.decide(0x3c, 1, 0x0b, 0), WriteDecision::Allow);
}

#[test]
fn filter_command_register() {
    let (_, _, filter) = nic_filter();
    // Current: memory + SERR enable (bit 8); status has a pending master abort (bit 13)
    // and the capability list bit.
    let current = (1u32 << 13 | 1 << 4) << 16 | 0x0102;
    // Owner sets bus master + I/O, clears memory, tries to clear SERR and set MWI: only
    // the four permitted bits follow the write; the status half is written as 0.
    assert_eq!(
        filter.decide(COMMAND, 2, 0x0015, current),
        WriteDecision::Masked(0x0105)
    );
    assert_eq!(
        filter.decide(COMMAND, 4, 0x0000_0400, current),
        WriteDecision::Masked(0x0500)
    );
    // High byte alone: INTx disable passes, the rest of the byte is kept.
    assert_eq!(
        filter.decide(COMMAND + 1, 1, 0x04, current),
        WriteDecision::Masked(0x0502)
    );
    assert_eq!(
        filter.decide(COMMAND + 1, 1, 0xfb, current),
        WriteDecision::Masked(0x0102)
    );
    // Status: write-1-to-clear bits pass, and the command is written back as it was.
    assert_eq!(
        filter.decide(0x06, 2, 0x2010, current),
        WriteDecision::Masked(0x2000_0102)
    );
    // A dword write clears status bits only where the owner wrote ones.
    assert_eq!(
        filter.decide(COMMAND, 4, 0xffff_0006, current),
        WriteDecision::Masked(0xf900_0106)
    );
}

#[test]
fn filter_msi_and_msix_structures_are_ignored_whole() {
    let (_, nic, filter) = nic_filter();
    let msi = nic.msi.unwrap(); // 0xd0, 24 bytes
    let msix = nic.msix.unwrap(); // 0xa0, 12 bytes
    for offset in (msi.cap_offset..msi.cap_offset + 24).chain(msix.cap_offset..msix.cap_offset + 12)
    {
        assert_eq!(
            filter.decide(offset, 1, 0xff, 0),
            WriteDecision::Ignore,
            "{offset:#x}"
        );
        if offset % 2 == 0 {
            assert_eq!(filter.decide(offset, 2, 0xffff, 0), WriteDecision::Ignore);
        }
    }
    // Message Control of each (enable bits) as a dword write with the header.
    assert_eq!(
        filter.decide(0xd0, 4, 0x0001_0005, 0),
        WriteDecision::Ignore
    );
    assert_eq!(
        filter.decide(0xa0, 4, 0x8000_0011, 0),
        WriteDecision::Ignore
    );
    // The dword after MSI-X is another capability's and passes.
    assert_eq!(filter.decide(0xac, 4, 0x1234_5678, 0), WriteDecision::Allow);
}

#[test]
fn filter_write_straddling_into_a_protected_range() {
    // A 32-bit MSI capability without masking is 10 bytes: 0x50..0x5a. Its last dword is
    // 0x58..0x5c: data (protected) then two bytes that belong to nothing protected.
    let mut f = enumerate(&mut machine(), 0, 0..=0)[0];
    f.msi = Some(MsiCap {
        cap_offset: 0x50,
        is_64bit: false,
        per_vector_mask: false,
        multi_message_capable: 0,
    });
    // Rounded to dwords the structure is 12 bytes, so the whole dword is protected…
    let filter = ConfigFilter::new(&f);
    assert_eq!(
        filter.decide(0x58, 4, 0xaaaa_bbbb, 0x1111_2222),
        WriteDecision::Ignore
    );
    // …and a 64-bit capability ending mid-dword is not possible, so check a straddle with
    // a capability starting mid-dword: bytes 0x62..0x64 protected, 0x60..0x62 free.
    f.msi = None;
    f.msix = Some(MsixCap {
        cap_offset: 0x62,
        table_size: 1,
        table_bar: 0,
        table_offset: 0,
        pba_bar: 0,
        pba_offset: 0x800,
    });
    let filter = ConfigFilter::new(&f);
    assert_eq!(
        filter.decide(0x60, 4, 0xaaaa_bbbb, 0x1111_2222),
        WriteDecision::Masked(0x1111_bbbb)
    );
    assert_eq!(
        filter.decide(0x60, 2, 0xbbbb, 0x1111_2222),
        WriteDecision::Allow
    );
    assert_eq!(
        filter.decide(0x62, 2, 0xbbbb, 0x1111_2222),
        WriteDecision::Ignore
    );
    // The end of the structure: 0x62 + 12 = 0x6e; 0x6c..0x6e protected, 0x6e..0x70 free.
    assert_eq!(
        filter.decide(0x6c, 4, 0xaaaa_bbbb, 0x1111_2222),
        WriteDecision::Masked(0xaaaa_2222)
    );
}

#[test]
fn filter_reset_and_power_state_bits() {
    let (_, _, filter) = nic_filter();
    // PCIe Device Control at 0xf8: everything but function-level reset (bit 15) passes;
    // Device Status (upper half) is written as 0 unless written.
    assert_eq!(
        filter.decide(0xf8, 2, 0x8000 | 0x2810, 0x000f_2810),
        WriteDecision::Masked(0x0000_2810)
    );
    assert_eq!(
        filter.decide(0xf8, 2, 0x0010, 0x000f_2810),
        WriteDecision::Masked(0x0000_0010)
    );
    assert_eq!(
        filter.decide(0xfa, 2, 0x0001, 0x000f_2810),
        WriteDecision::Allow
    );
    assert_eq!(
        filter.decide(0xf8, 4, 0x0001_a810, 0x000f_2810),
        WriteDecision::Masked(0x0001_2810)
    );
    // PM control/status at 0xcc: power state bits 0..1 are kept.
    assert_eq!(
        filter.decide(0xcc, 2, 0x0103, 0x0000_0000),
        WriteDecision::Masked(0x0000_0100)
    );
    assert_eq!(filter.decide(0xcc, 1, 0x03, 0), WriteDecision::Masked(0));
    // Device-specific space and other capabilities pass through.
    assert_eq!(filter.decide(0x40, 4, 0xdead_beef, 0), WriteDecision::Allow);
    assert_eq!(
        filter.decide(0xfff, 2, 0xbeef, 0),
        WriteDecision::Ignore,
        "unaligned size 2"
    );
}

#[test]
fn filter_extended_space_bist_and_advanced_features_reset_are_ignored() {
    let (_, mut nic, filter) = nic_filter();
    // Extended configuration space: SR-IOV, resizable BAR, ATS, ACS ... never written.
    for offset in [0x100u16, 0x104, 0x160, 0xffc] {
        assert_eq!(
            filter.decide(offset, 4, 0xdead_beef, 0),
            WriteDecision::Ignore,
            "{offset:#x}"
        );
    }
    assert_eq!(filter.decide(0xffe, 2, 0xbeef, 0), WriteDecision::Ignore);
    // BIST (0x0f) is kept; cache line size and latency timer (0x0c, 0x0d) pass.
    assert_eq!(filter.decide(0x0f, 1, 0x40, 0), WriteDecision::Ignore);
    assert_eq!(
        filter.decide(0x0c, 4, 0x4000_2010, 0x0000_0000),
        WriteDecision::Masked(0x0000_2010)
    );
    assert_eq!(filter.decide(0x0c, 2, 0x2010, 0), WriteDecision::Allow);
    // An Advanced Features capability at 0x44: its control byte (0x48, FLR) is kept.
    nic.af_cap = Some(0x44);
    let filter = ConfigFilter::new(&nic);
    assert_eq!(filter.decide(0x48, 1, 0x01, 0), WriteDecision::Ignore);
    assert_eq!(
        filter.decide(0x48, 4, 0x0000_0101, 0x0000_0000),
        WriteDecision::Masked(0x0000_0100)
    );
    assert_eq!(filter.decide(0x49, 1, 0x01, 0), WriteDecision::Allow);
}

#[test]
fn filter_malformed_writes_are_ignored() {
    let (_, _, filter) = nic_filter();
    for (offset, size) in [
        (0x41, 2),
        (0x42, 4),
        (0x43, 4),
        (0x40, 3),
        (0x40, 0),
        (0x40, 8),
        (0x1000, 4),
        (0xffff, 1),
    ] {
        assert_eq!(
            filter.decide(offset, size, u32::MAX, 0),
            WriteDecision::Ignore,
            "{offset:#x}/{size}"
        );
    }
}

#[test]
fn filter_for_a_bridge_protects_the_whole_header() {
    let bridge = enumerate(&mut machine(), 0, 0..=0)[3];
    let filter = ConfigFilter::new(&bridge);
    for offset in (0x10..0x40).step_by(4) {
        assert_eq!(
            filter.decide(offset, 4, 0, 0),
            WriteDecision::Ignore,
            "{offset:#x}"
        );
    }
    assert_eq!(filter.decide(0x40, 4, 0, 0), WriteDecision::Allow);
}

#[test]
fn filtered_write_performs_the_decision() {
    let (mut cfg, nic, filter) = nic_filter();
    let b = nic.bdf;
    let dev = cfg.get_mut(1, 0, 0);
    dev.set_command(COMMAND_MEMORY);
    dev.set_status(STATUS_CAPABILITIES | 1 << 13);
    dev.writes.clear();
    // Bus master on: a masked dword with the status half 0 (the abort stays recorded).
    assert_eq!(
        filtered_write(&mut cfg, b, &filter, COMMAND, 2, 0x0006),
        WriteDecision::Masked(0x0006)
    );
    assert_eq!(
        cfg.get(1, 0, 0).regs[1],
        (u32::from(STATUS_CAPABILITIES) | 1 << 13) << 16 | 6
    );
    // A BAR write is dropped.
    assert_eq!(
        filtered_write(&mut cfg, b, &filter, 0x10, 4, 0),
        WriteDecision::Ignore
    );
    assert_eq!(cfg.get(1, 0, 0).regs[4], 0xfe80_0000);
    // A byte of device-specific space is written at its own size.
    assert_eq!(
        filtered_write(&mut cfg, b, &filter, 0x41, 1, 0xab),
        WriteDecision::Allow
    );
    assert_eq!(cfg.get(1, 0, 0).regs[0x40 / 4] & 0xff00, 0xab00);
    assert_eq!(
        filtered_write(&mut cfg, b, &filter, 0x42, 2, 0x1234),
        WriteDecision::Allow
    );
    assert_eq!(cfg.get(1, 0, 0).regs[0x40 / 4], 0x1234_ab00);
}

// ---------------------------------------------------------------------------------------
// MSI-X entries
// ---------------------------------------------------------------------------------------

#[test]
fn msix_entry_encoding() {
    let e = MsixTableEntry::fixed(3, 0x41, false).unwrap();
    assert_eq!(e.encode(), [0xfee0_3000, 0, 0x41, 0]);
    let e = MsixTableEntry::fixed(0xff, 0xfe, true).unwrap();
    assert_eq!(e.encode(), [0xfeef_f000, 0, 0xfe, 1]);
    assert_eq!(MsixTableEntry::fixed(0, 15, false), None);
}

// ---------------------------------------------------------------------------------------
// Garbage configuration space
// ---------------------------------------------------------------------------------------

/// Configuration space whose every register holds arbitrary values (and keeps what is
/// written), as a hostile or broken device would show.
struct GarbageConfig {
    seed: u64,
    written: HashMap<(u8, u8, u8, u16), u32>,
    accesses: Cell<usize>,
}

impl GarbageConfig {
    fn value(&self, bdf: Bdf, offset: u16) -> u32 {
        let mut x = self.seed
            ^ u64::from(bdf.source_id()) << 16
            ^ u64::from(offset)
            ^ 0x9e37_79b9_7f4a_7c15;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x as u32
    }
}

impl ConfigSpace for GarbageConfig {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        assert!(offset.is_multiple_of(4) && offset < CONFIG_SPACE_BYTES);
        self.accesses.set(self.accesses.get() + 1);
        let key = (bdf.bus, bdf.device, bdf.function, offset);
        self.written
            .get(&key)
            .copied()
            .unwrap_or_else(|| self.value(bdf, offset))
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        assert!(offset.is_multiple_of(4) && offset < CONFIG_SPACE_BYTES);
        self.accesses.set(self.accesses.get() + 1);
        // Half of the registers ignore writes; the others keep a scrambled value.
        if self.value(bdf, offset) & 1 == 0 {
            self.written.insert(
                (bdf.bus, bdf.device, bdf.function, offset),
                value ^ self.seed as u32,
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_config_space_never_panics(seed: u64) {
        let mut cfg = GarbageConfig { seed, written: HashMap::new(), accesses: Cell::new(0) };
        let found = enumerate(&mut cfg, 0, 0..=1);
        // Bounded work: per function one sizing pass and one capability walk.
        prop_assert!(cfg.accesses.get() < 2 * 32 * 8 * 200);
        let mut fs: StdVec<Function> = found.iter().copied().collect();
        for f in &fs {
            prop_assert!(f.bdf.device < 32 && f.bdf.function < 8);
            for bar in &f.bars {
                prop_assert!(bar.size == 0 || bar.size.is_power_of_two());
                let _ = bar.range();
            }
            if let Some(m) = f.msix {
                prop_assert!(m.table_bar < 6 && m.pba_bar < 6);
                prop_assert!((1..=2048).contains(&m.table_size));
                let _ = (m.table_range(&f.bars), m.pba_range(&f.bars));
            }
            let filter = ConfigFilter::new(f);
            for offset in (0..0x100u16).step_by(2) {
                let _ = filter.decide(offset, 2, seed as u32, (seed >> 32) as u32);
            }
        }
        let _ = place_bars(&mut fs, 0x8000_0000..0x1_0000_0000);
        for f in &fs {
            program_bars(&mut cfg, f);
        }
    }

    #[test]
    fn garbage_capability_pointers_are_bounded(seed: u64, pointer: u8) {
        let mut cfg = GarbageConfig { seed, written: HashMap::new(), accesses: Cell::new(0) };
        let b = bdf(0, 0, 0);
        cfg.written.insert((0, 0, 0, COMMAND), u32::from(STATUS_CAPABILITIES) << 16);
        cfg.written.insert((0, 0, 0, 0x0c), 0);
        cfg.written.insert((0, 0, 0, 0x34), u32::from(pointer));
        let caps: StdVec<Capability> = capabilities(&cfg, b).collect();
        prop_assert!(caps.len() <= MAX_CAPABILITIES);
        for c in &caps {
            prop_assert!(c.offset >= 0x40 && c.offset <= 0xfc && c.offset % 4 == 0);
        }
        let _ = read_function(&mut cfg, b);
    }

    #[test]
    fn filter_never_changes_protected_bits(offset in 0u16..0x1000, size in 0u8..6, value: u32, current: u32) {
        let (_, nic, filter) = nic_filter();
        let protected: &[Range<u16>] = &[0x0f..0x10, 0x10..0x28, 0x30..0x34, 0xa0..0xac, 0xd0..0xe8, 0x100..0x1000];
        let decision = filter.decide(offset, size, value, current);
        let aligned = offset & !3;
        match decision {
            WriteDecision::Allow => {
                for byte in offset..offset + u16::from(size) {
                    prop_assert!(!protected.iter().any(|r| r.contains(&byte)), "{byte:#x}");
                }
                prop_assert!(aligned != COMMAND);
            }
            WriteDecision::Masked(dword) => {
                for byte in 0..4u16 {
                    if protected.iter().any(|r| r.contains(&(aligned + byte))) {
                        let lane = 0xffu32 << (byte * 8);
                        prop_assert_eq!(dword & lane, current & lane);
                    }
                }
                if aligned == COMMAND {
                    let fixed = !u32::from(COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE) & 0xffff;
                    prop_assert_eq!(dword & fixed, current & fixed);
                    prop_assert_eq!(dword >> 16 & !u32::from(STATUS_WRITE1_CLEAR), 0);
                }
            }
            WriteDecision::Ignore => {}
        }
        let _ = nic;
    }
}
