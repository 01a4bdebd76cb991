//! PCI configuration space: addresses ([`Bdf`]), enumeration, BAR sizing and placement,
//! the MSI / MSI-X capabilities, and the policy for configuration writes from the driver
//! domain that owns a passthrough function ([`ConfigFilter`]).
//!
//! The hardware crate implements [`ConfigSpace`] over ECAM (the MCFG window: function
//! `bdf` at `base + bdf.ecam_offset()`). Everything read from a device is untrusted: loops
//! are bounded (buses by the range given, capability lists by [`MAX_CAPABILITIES`]), and
//! garbage never panics, it only yields absent BARs or capabilities.
//!
//! Layout facts used here (PCI Local Bus 3.0, PCI Express Base):
//!
//! | offset | field |
//! |---|---|
//! | 0x00 | vendor ID (0xffff: no function), device ID |
//! | 0x04 | command (bit 0 I/O space, 1 memory space, 2 bus master, 10 INTx disable), status (bit 4 capability list; bits 8, 11..15 write-1-to-clear) |
//! | 0x08 | revision, class code (24 bits) |
//! | 0x0e | header type (bits 0..6: 0 endpoint, 1 PCI bridge; bit 7 multi-function) |
//! | 0x10..0x28 | BARs 0..5 (type 0); 0x10..0x18 for a bridge |
//! | 0x30 | expansion ROM BAR (type 0; 0x38 for a bridge) |
//! | 0x34 | capabilities pointer |
//! | 0x3d | interrupt pin |
//!
//! A BAR's bit 0 says I/O (1) or memory (0); for memory, bits 1..2 give the type (0: 32-bit,
//! 2: 64-bit, the next BAR then holds the upper half) and bit 3 prefetchable. Its size is
//! found by writing all-ones with decoding disabled and reading back: the lowest set
//! address bit is the size.

use core::fmt;
use core::ops::{Range, RangeInclusive};
use core::str::FromStr;
use heapless::Vec;

/// Most functions [`enumerate`] records.
pub const MAX_FUNCTIONS: usize = 64;
/// Most capability-list entries looked at (256 bytes of config space hold at most 48
/// dword-aligned capabilities above the 64-byte header).
pub const MAX_CAPABILITIES: usize = 48;
/// Size of one function's configuration space (PCI Express).
pub const CONFIG_SPACE_BYTES: u16 = 4096;
/// Granule memory BARs are placed in: a BAR is mapped into a domain page by page, so no
/// two BARs may share a page.
pub const BAR_PAGE_BYTES: u64 = 4096;

/// Command register offset.
pub const COMMAND: u16 = 0x04;
/// Command: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command: bus master (the function may issue DMA and MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status bit: the function has a capability list.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status bits that are write-1-to-clear (parity, aborts, SERR).
pub const STATUS_WRITE1_CLEAR: u16 = 0xf900;
/// First BAR register.
pub const BAR0: u16 = 0x10;
/// Expansion ROM BAR of a type-0 header.
pub const EXPANSION_ROM: u16 = 0x30;
/// Capabilities pointer.
pub const CAPABILITIES_POINTER: u16 = 0x34;

/// Capability ID: power management.
pub const CAP_ID_POWER_MANAGEMENT: u8 = 0x01;
/// Capability ID: MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID: PCI Express.
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;
/// Capability ID: MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Advanced Features: its control register (+4, bit 0) starts a function-level reset.
pub const CAP_ID_ADVANCED_FEATURES: u8 = 0x13;

/// Bytes of an MSI-X capability structure.
pub const MSIX_CAP_BYTES: u16 = 12;
/// Bytes of one MSI-X table entry.
pub const MSIX_ENTRY_BYTES: u64 = 16;

/// A PCI function address: segment, bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// The address, if `device < 32` and `function < 8`.
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 {
            Some(Bdf {
                segment,
                bus,
                device,
                function,
            })
        } else {
            None
        }
    }

    /// The function's configuration space offset inside its segment's ECAM window:
    /// `bus << 20 | device << 15 | function << 12`.
    pub const fn ecam_offset(&self) -> u64 {
        ((self.bus as u64) << 20)
            | (((self.device & 0x1f) as u64) << 15)
            | (((self.function & 7) as u64) << 12)
    }

    /// `device << 3 | function`: the index of the function's context entry.
    pub const fn devfn(&self) -> u8 {
        ((self.device & 0x1f) << 3) | (self.function & 7)
    }

    /// The requester ID (VT-d "source ID"): `bus << 8 | device << 3 | function`.
    pub const fn source_id(&self) -> u16 {
        ((self.bus as u16) << 8) | self.devfn() as u16
    }

    /// The function a requester ID names in `segment`.
    pub const fn from_source_id(segment: u16, source_id: u16) -> Bdf {
        Bdf {
            segment,
            bus: (source_id >> 8) as u8,
            device: ((source_id >> 3) & 0x1f) as u8,
            function: (source_id & 7) as u8,
        }
    }

    /// Parses `SSSS:BB:DD.F` or `BB:DD.F` (segment 0), in hexadecimal, as Xen's `pci=`
    /// and `lspci` write it.
    pub fn parse(text: &str) -> Result<Bdf, ParseBdfError> {
        let (head, function) = text.split_once('.').ok_or(ParseBdfError)?;
        let mut parts = head.rsplitn(3, ':');
        let device = parts.next().ok_or(ParseBdfError)?;
        let bus = parts.next().ok_or(ParseBdfError)?;
        let segment = parts.next();
        let segment = match segment {
            Some(s) => hex(s, 4)? as u16,
            None => 0,
        };
        let bdf = Bdf::new(
            segment,
            hex(bus, 2)? as u8,
            hex(device, 2)? as u8,
            hex(function, 1)? as u8,
        );
        bdf.ok_or(ParseBdfError)
    }
}

/// Parses 1..=`max_digits` hexadecimal digits.
fn hex(text: &str, max_digits: usize) -> Result<u32, ParseBdfError> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseBdfError);
    }
    u32::from_str_radix(text, 16).map_err(|_| ParseBdfError)
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

impl FromStr for Bdf {
    type Err = ParseBdfError;

    fn from_str(text: &str) -> Result<Bdf, ParseBdfError> {
        Bdf::parse(text)
    }
}

/// The text is not a PCI address of the form `[SSSS:]BB:DD.F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseBdfError;

impl fmt::Display for ParseBdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a PCI address of the form [SSSS:]BB:DD.F (hexadecimal, device < 20, function < 8)"
        )
    }
}

/// Access to configuration space.
///
/// `offset` is 4-byte aligned and below [`CONFIG_SPACE_BYTES`] for the required methods;
/// the helpers keep it so. A function that does not exist reads as all-ones.
pub trait ConfigSpace {
    /// Reads the dword at `offset`.
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    /// Writes the dword at `offset`.
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);

    /// Reads the 16 bits at `offset` (bit 0 of `offset` is ignored).
    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        let dword = self.read32(bdf, offset & 0xffc);
        (dword >> ((offset & 2) * 8)) as u16
    }

    /// Reads the byte at `offset`.
    fn read8(&self, bdf: Bdf, offset: u16) -> u8 {
        let dword = self.read32(bdf, offset & 0xffc);
        (dword >> ((offset & 3) * 8)) as u8
    }

    /// Writes the 16 bits at `offset` (bit 0 ignored). The default reads, merges and
    /// writes the whole dword, which writes the other half back as it was read (a
    /// write-1-to-clear bit read as 1 is cleared): an ECAM implementation should override
    /// it with a real 16-bit access.
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        let aligned = offset & 0xffc;
        let shift = (offset & 2) * 8;
        let old = self.read32(bdf, aligned);
        let merged = (old & !(0xffff << shift)) | (u32::from(value) << shift);
        self.write32(bdf, aligned, merged);
    }

    /// Writes the byte at `offset`; the default is a read-modify-write as for
    /// [`write16`](Self::write16).
    fn write8(&mut self, bdf: Bdf, offset: u16, value: u8) {
        let aligned = offset & 0xffc;
        let shift = (offset & 3) * 8;
        let old = self.read32(bdf, aligned);
        let merged = (old & !(0xff << shift)) | (u32::from(value) << shift);
        self.write32(bdf, aligned, merged);
    }
}

/// The command register value as a dword to write at [`COMMAND`]: the status half is 0,
/// so no write-1-to-clear status bit is touched.
fn command_dword(command: u16) -> u32 {
    u32::from(command)
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BarKind {
    /// Not implemented, or the upper half of the 64-bit BAR before it.
    #[default]
    None,
    /// I/O ports.
    Io,
    /// Memory below 4 GiB (type 0, or the legacy below-1-MiB type 1).
    Mem32,
    /// Memory anywhere in 64 bits; occupies this slot and the next.
    Mem64,
}

/// One decoded and sized BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bar {
    pub kind: BarKind,
    /// Bus address of the region (as programmed).
    pub base: u64,
    /// Size in bytes, a power of two (0 when `kind` is `None`).
    pub size: u64,
    /// Memory BAR marked prefetchable.
    pub prefetchable: bool,
}

impl Bar {
    /// An absent BAR.
    pub const NONE: Bar = Bar {
        kind: BarKind::None,
        base: 0,
        size: 0,
        prefetchable: false,
    };

    /// Whether this is a memory BAR (32- or 64-bit).
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, BarKind::Mem32 | BarKind::Mem64)
    }

    /// `[base, base + size)`, if the BAR is present and the end does not overflow.
    pub fn range(&self) -> Option<Range<u64>> {
        if self.kind == BarKind::None || self.size == 0 {
            return None;
        }
        Some(self.base..self.base.checked_add(self.size)?)
    }
}

/// The MSI capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiCap {
    /// Offset of the capability in configuration space.
    pub cap_offset: u16,
    /// Message Control bit 7: 64-bit message address.
    pub is_64bit: bool,
    /// Message Control bit 8: per-vector masking (mask and pending registers present).
    pub per_vector_mask: bool,
    /// Message Control bits 1..3: log2 of the vectors the function can use.
    pub multi_message_capable: u8,
}

impl MsiCap {
    /// Offset of Message Control.
    pub fn control_offset(&self) -> u16 {
        self.cap_offset + 2
    }

    /// Offset of the (lower) message address.
    pub fn address_offset(&self) -> u16 {
        self.cap_offset + 4
    }

    /// Offset of the upper message address (64-bit only).
    pub fn upper_address_offset(&self) -> Option<u16> {
        self.is_64bit.then_some(self.cap_offset + 8)
    }

    /// Offset of the 16-bit message data.
    pub fn data_offset(&self) -> u16 {
        self.cap_offset + if self.is_64bit { 0x0c } else { 0x08 }
    }

    /// Offset of the mask bits (per-vector masking only).
    pub fn mask_offset(&self) -> Option<u16> {
        self.per_vector_mask
            .then_some(self.cap_offset + if self.is_64bit { 0x10 } else { 0x0c })
    }

    /// Bytes of the structure, rounded up to whole dwords: 12, 16, 20 or 24.
    pub fn len_bytes(&self) -> u16 {
        match (self.is_64bit, self.per_vector_mask) {
            (false, false) => 12,
            (true, false) => 16,
            (false, true) => 20,
            (true, true) => 24,
        }
    }
}

/// The MSI-X capability. The table and the pending-bit array live in memory BARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset of the capability in configuration space.
    pub cap_offset: u16,
    /// Number of table entries (1..=2048).
    pub table_size: u16,
    /// BAR index (0..6) holding the table.
    pub table_bar: u8,
    /// Offset of the table inside that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR index (0..6) holding the pending-bit array.
    pub pba_bar: u8,
    /// Offset of the pending-bit array inside that BAR.
    pub pba_offset: u32,
}

impl MsixCap {
    /// Offset of Message Control (bit 15 enable, bit 14 function mask).
    pub fn control_offset(&self) -> u16 {
        self.cap_offset + 2
    }

    /// Bytes of the table.
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.table_size) * MSIX_ENTRY_BYTES
    }

    /// Bus addresses `[start, end)` of the table, if its BAR is a memory BAR that holds it.
    /// These pages must not be mapped writable into the owner's address space.
    pub fn table_range(&self, bars: &[Bar; 6]) -> Option<Range<u64>> {
        region_in_bar(bars, self.table_bar, self.table_offset, self.table_bytes())
    }

    /// Bus addresses `[start, end)` of the pending-bit array (one bit per entry, in
    /// whole qwords).
    pub fn pba_range(&self, bars: &[Bar; 6]) -> Option<Range<u64>> {
        let bytes = u64::from(self.table_size).div_ceil(64) * 8;
        region_in_bar(bars, self.pba_bar, self.pba_offset, bytes)
    }
}

fn region_in_bar(bars: &[Bar; 6], index: u8, offset: u32, bytes: u64) -> Option<Range<u64>> {
    let bar = bars.get(usize::from(index)).filter(|b| b.is_memory())?;
    let end_in_bar = u64::from(offset).checked_add(bytes)?;
    if end_in_bar > bar.size {
        return None;
    }
    let start = bar.base.checked_add(u64::from(offset))?;
    Some(start..start.checked_add(bytes)?)
}

/// One PCI function found by [`enumerate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass and programming interface: `class << 16 | sub << 8 | prog_if`.
    pub class: u32,
    pub revision: u8,
    /// Header layout (bit 7, the multi-function flag, removed): 0 endpoint, 1 bridge.
    pub header_type: u8,
    /// Interrupt pin (0 none, 1..4 INTA..INTD).
    pub interrupt_pin: u8,
    /// Sized BARs of a type-0 header; all [`Bar::NONE`] for other headers.
    pub bars: [Bar; 6],
    pub msi: Option<MsiCap>,
    pub msix: Option<MsixCap>,
    /// Offset of the PCI Express capability.
    pub pcie_cap: Option<u16>,
    /// Offset of the power-management capability.
    pub pm_cap: Option<u16>,
    /// Offset of the Advanced Features capability.
    pub af_cap: Option<u16>,
}

impl Function {
    /// Whether this is a type-0 (endpoint) header.
    pub fn is_endpoint(&self) -> bool {
        self.header_type == 0
    }
}

/// One entry of a capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    /// Offset in configuration space (dword aligned, `>= 0x40`).
    pub offset: u16,
}

/// The capability list of a function: at most [`MAX_CAPABILITIES`] entries, stopping at
/// a pointer below 0x40 (after masking with 0xfc). A loop in the list therefore ends too.
pub struct CapabilityIter<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    bdf: Bdf,
    next: u8,
    seen: usize,
}

impl<C: ConfigSpace + ?Sized> Iterator for CapabilityIter<'_, C> {
    type Item = Capability;

    fn next(&mut self) -> Option<Capability> {
        if self.next < 0x40 || self.seen >= MAX_CAPABILITIES {
            return None;
        }
        self.seen += 1;
        let offset = u16::from(self.next);
        let header = self.cfg.read32(self.bdf, offset);
        self.next = (header >> 8) as u8 & 0xfc;
        Some(Capability {
            id: header as u8,
            offset,
        })
    }
}

/// Walks the capability list of `bdf` (empty unless status bit 4 is set and the header
/// type is 0 or 1).
pub fn capabilities<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf) -> CapabilityIter<'_, C> {
    let status = (cfg.read32(bdf, COMMAND) >> 16) as u16;
    let header_type = cfg.read8(bdf, 0x0e) & 0x7f;
    let next = if status & STATUS_CAPABILITIES != 0 && header_type <= 1 {
        cfg.read8(bdf, CAPABILITIES_POINTER) & 0xfc
    } else {
        0
    };
    CapabilityIter {
        cfg,
        bdf,
        next,
        seen: 0,
    }
}

/// Reads the MSI capability at `offset`.
pub fn read_msi<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf, offset: u16) -> MsiCap {
    let control = cfg.read16(bdf, offset + 2);
    MsiCap {
        cap_offset: offset,
        is_64bit: control & (1 << 7) != 0,
        per_vector_mask: control & (1 << 8) != 0,
        multi_message_capable: ((control >> 1) & 7) as u8,
    }
}

/// Reads the MSI-X capability at `offset`; `None` if a BAR indicator is not 0..=5.
pub fn read_msix<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf, offset: u16) -> Option<MsixCap> {
    let control = cfg.read16(bdf, offset + 2);
    let table = cfg.read32(bdf, offset + 4);
    let pba = cfg.read32(bdf, offset + 8);
    let table_bar = (table & 7) as u8;
    let pba_bar = (pba & 7) as u8;
    if table_bar > 5 || pba_bar > 5 {
        return None;
    }
    Some(MsixCap {
        cap_offset: offset,
        table_size: (control & 0x7ff) + 1,
        table_bar,
        table_offset: table & !7,
        pba_bar,
        pba_offset: pba & !7,
    })
}

/// Scans every device and function on the buses in `buses` of `segment` (all of them: no
/// bridge is followed or required). A function whose vendor ID reads 0xffff (or 0) is
/// absent; functions 1..8 are scanned only when function 0 sets the multi-function bit.
/// Type-0 functions get their BARs sized ([`size_bars`]), which briefly disables their
/// decoding; bridges are recorded unsized. At most [`MAX_FUNCTIONS`] are recorded (a full
/// result may be truncated).
pub fn enumerate<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    segment: u16,
    buses: RangeInclusive<u8>,
) -> Vec<Function, MAX_FUNCTIONS> {
    let mut found = Vec::new();
    for bus in buses {
        for device in 0..32u8 {
            for function in 0..8u8 {
                let Some(bdf) = Bdf::new(segment, bus, device, function) else {
                    continue;
                };
                let id = cfg.read32(bdf, 0);
                let vendor = id as u16;
                if vendor == 0xffff || vendor == 0 {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let raw_header = cfg.read8(bdf, 0x0e);
                let record = read_function(cfg, bdf);
                if found.push(record).is_err() {
                    return found;
                }
                if function == 0 && raw_header & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    found
}

/// Reads and (for a type-0 header) sizes one present function.
pub fn read_function<C: ConfigSpace + ?Sized>(cfg: &mut C, bdf: Bdf) -> Function {
    let id = cfg.read32(bdf, 0);
    let class_rev = cfg.read32(bdf, 0x08);
    let header_type = cfg.read8(bdf, 0x0e) & 0x7f;
    let mut function = Function {
        bdf,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class: class_rev >> 8,
        revision: class_rev as u8,
        header_type,
        interrupt_pin: cfg.read8(bdf, 0x3d),
        bars: [Bar::NONE; 6],
        msi: None,
        msix: None,
        pcie_cap: None,
        pm_cap: None,
        af_cap: None,
    };
    for cap in capabilities(&*cfg, bdf) {
        match cap.id {
            CAP_ID_MSI if function.msi.is_none() => {
                function.msi = Some(read_msi(&*cfg, bdf, cap.offset));
            }
            CAP_ID_MSIX if function.msix.is_none() => {
                function.msix = read_msix(&*cfg, bdf, cap.offset);
            }
            CAP_ID_PCI_EXPRESS if function.pcie_cap.is_none() => {
                function.pcie_cap = Some(cap.offset);
            }
            CAP_ID_POWER_MANAGEMENT if function.pm_cap.is_none() => {
                function.pm_cap = Some(cap.offset);
            }
            CAP_ID_ADVANCED_FEATURES if function.af_cap.is_none() => {
                function.af_cap = Some(cap.offset);
            }
            _ => {}
        }
    }
    if header_type == 0 {
        function.bars = size_bars(cfg, bdf);
    }
    function
}

/// Decodes and sizes the six BARs of a type-0 function: disables I/O and memory decoding,
/// writes all-ones to each BAR (both halves of a 64-bit one), reads the size mask back,
/// restores the BAR, and finally restores the command register. The slot after a 64-bit
/// BAR is [`BarKind::None`]. A BAR that reads back no address bits, a 64-bit BAR in slot
/// 5, and the reserved memory type 3 are `None`.
pub fn size_bars<C: ConfigSpace + ?Sized>(cfg: &mut C, bdf: Bdf) -> [Bar; 6] {
    let command = cfg.read16(bdf, COMMAND);
    cfg.write32(
        bdf,
        COMMAND,
        command_dword(command & !(COMMAND_IO | COMMAND_MEMORY)),
    );
    let mut bars = [Bar::NONE; 6];
    let mut index = 0usize;
    while index < 6 {
        let offset = BAR0 + 4 * index as u16;
        let original = cfg.read32(bdf, offset);
        if original & 1 == 1 {
            let mask = probe(cfg, bdf, offset, original) & 0xffff_fffc;
            let size = lowest_set_bit(u64::from(mask));
            if size != 0 {
                bars[index] = Bar {
                    kind: BarKind::Io,
                    base: u64::from(original & 0xffff_fffc),
                    size,
                    prefetchable: false,
                };
            }
            index += 1;
            continue;
        }
        let prefetchable = original & 8 != 0;
        match (original >> 1) & 3 {
            0 | 1 => {
                let mask = probe(cfg, bdf, offset, original) & 0xffff_fff0;
                let size = lowest_set_bit(u64::from(mask));
                if size != 0 {
                    bars[index] = Bar {
                        kind: BarKind::Mem32,
                        base: u64::from(original & 0xffff_fff0),
                        size,
                        prefetchable,
                    };
                }
                index += 1;
            }
            2 if index < 5 => {
                let upper_offset = offset + 4;
                let original_upper = cfg.read32(bdf, upper_offset);
                let low = probe(cfg, bdf, offset, original);
                let high = probe(cfg, bdf, upper_offset, original_upper);
                let mask = (u64::from(high) << 32 | u64::from(low)) & !0xf;
                let size = lowest_set_bit(mask);
                if size != 0 {
                    bars[index] = Bar {
                        kind: BarKind::Mem64,
                        base: (u64::from(original_upper) << 32) | u64::from(original & 0xffff_fff0),
                        size,
                        prefetchable,
                    };
                }
                index += 2;
            }
            _ => index += 1,
        }
    }
    cfg.write32(bdf, COMMAND, command_dword(command));
    bars
}

/// Writes all-ones to the register at `offset`, reads it back, and restores `original`.
fn probe<C: ConfigSpace + ?Sized>(cfg: &mut C, bdf: Bdf, offset: u16, original: u32) -> u32 {
    cfg.write32(bdf, offset, 0xffff_ffff);
    let read_back = cfg.read32(bdf, offset);
    cfg.write32(bdf, offset, original);
    read_back
}

fn lowest_set_bit(value: u64) -> u64 {
    value & value.wrapping_neg()
}

/// Why [`place_bars`] could not place every memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// The window is empty, not page aligned, or reaches past 2^64.
    BadWindow,
    /// The window has no room left for this BAR (a 32-bit BAR also needs room below
    /// 4 GiB).
    NoSpace { bdf: Bdf, bar: u8, size: u64 },
}

impl fmt::Display for PlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadWindow => write!(f, "BAR window is empty or not page aligned"),
            Self::NoSpace { bdf, bar, size } => {
                write!(
                    f,
                    "no room in the BAR window for {bdf} BAR {bar} ({size:#x} bytes)"
                )
            }
        }
    }
}

/// Assigns new bases to the memory BARs of the type-0 functions in `functions`, inside
/// `window` (`[start, end)`, page aligned), and stores them in `functions[..].bars`. I/O
/// BARs and other headers are left as they are.
///
/// Each BAR is given `max(size, 4 KiB)` bytes, naturally aligned, so no two BARs share a
/// page. BARs are placed largest first (ties in function and BAR order), each at the
/// lowest free address of the window; from an aligned start, decreasing power-of-two
/// sizes leave no holes. A 32-bit BAR must end at or below 4 GiB. On error nothing is
/// changed. The hardware is untouched: write the new bases with [`program_bars`].
pub fn place_bars(functions: &mut [Function], window: Range<u64>) -> Result<(), PlaceError> {
    if window.start >= window.end
        || !window.start.is_multiple_of(BAR_PAGE_BYTES)
        || !window.end.is_multiple_of(BAR_PAGE_BYTES)
    {
        return Err(PlaceError::BadWindow);
    }
    // Every memory BAR, as (function index, BAR index), largest first.
    let mut order: Vec<(usize, u8), { MAX_FUNCTIONS * 6 }> = Vec::new();
    for (f, function) in functions.iter().enumerate() {
        if !function.is_endpoint() {
            continue;
        }
        for (b, bar) in (0u8..).zip(function.bars.iter()) {
            if bar.is_memory() && bar.size != 0 && order.push((f, b)).is_err() {
                // More BARs than MAX_FUNCTIONS functions can have.
                return Err(PlaceError::NoSpace {
                    bdf: function.bdf,
                    bar: b,
                    size: bar.size,
                });
            }
        }
    }
    let slot = |functions: &[Function], (f, b): (usize, u8)| functions[f].bars[usize::from(b)];
    order.sort_unstable_by(|&x, &y| {
        let (sx, sy) = (slot(functions, x).size, slot(functions, y).size);
        sy.cmp(&sx).then(x.cmp(&y))
    });
    let mut bases: Vec<u64, { MAX_FUNCTIONS * 6 }> = Vec::new();
    let mut cursor = window.start;
    for &(f, b) in &order {
        let bar = slot(functions, (f, b));
        let span = bar.size.max(BAR_PAGE_BYTES);
        let no_space = PlaceError::NoSpace {
            bdf: functions[f].bdf,
            bar: b,
            size: bar.size,
        };
        let base = align_up(cursor, span).ok_or(no_space)?;
        let end = base.checked_add(span).ok_or(no_space)?;
        let limit = if bar.kind == BarKind::Mem32 {
            window.end.min(1 << 32)
        } else {
            window.end
        };
        if end > limit {
            return Err(no_space);
        }
        // Cannot fail: `bases` has the capacity of `order`.
        let _ = bases.push(base);
        cursor = end;
    }
    for (&(f, b), &base) in order.iter().zip(bases.iter()) {
        functions[f].bars[usize::from(b)].base = base;
    }
    Ok(())
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    // `align` is a power of two (a BAR size, or the page size).
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// The BAR register writes that program `function.bars` (memory BARs only; the upper half
/// of a 64-bit BAR is written too): `(offset, value)` pairs in register order.
pub fn bar_writes(function: &Function) -> Vec<(u16, u32), 6> {
    let mut writes = Vec::new();
    if !function.is_endpoint() {
        return writes;
    }
    for (index, bar) in function.bars.iter().enumerate() {
        let offset = BAR0 + 4 * index as u16;
        let type_bits = u32::from(bar.prefetchable) << 3;
        // Each push is within capacity: at most one write per BAR slot.
        match bar.kind {
            BarKind::Mem32 => {
                let _ = writes.push((offset, (bar.base as u32 & 0xffff_fff0) | type_bits));
            }
            BarKind::Mem64 if index < 5 => {
                let low = (bar.base as u32 & 0xffff_fff0) | type_bits | 4;
                let _ = writes.push((offset, low));
                let _ = writes.push((offset + 4, (bar.base >> 32) as u32));
            }
            _ => {}
        }
    }
    writes
}

/// Writes `function`'s memory BAR bases to the device with memory decoding disabled, then
/// restores the command register.
pub fn program_bars<C: ConfigSpace + ?Sized>(cfg: &mut C, function: &Function) {
    let bdf = function.bdf;
    let command = cfg.read16(bdf, COMMAND);
    cfg.write32(bdf, COMMAND, command_dword(command & !COMMAND_MEMORY));
    for (offset, value) in bar_writes(function) {
        cfg.write32(bdf, offset, value);
    }
    cfg.write32(bdf, COMMAND, command_dword(command));
}

/// An MSI-X table entry (16 bytes: address low, address high, data, vector control) for
/// a fixed, edge-triggered interrupt to one local APIC in physical destination mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixTableEntry {
    /// `0xfee0_0000 | destination APIC ID << 12`.
    pub address_lo: u32,
    pub address_hi: u32,
    /// The vector; delivery mode fixed (bits 8..10 = 0), edge (bit 15 = 0).
    pub data: u32,
    /// Bit 0: masked.
    pub vector_control: u32,
}

impl MsixTableEntry {
    /// The entry sending `vector` to the CPU with local APIC ID `dest_apic_id`; `None`
    /// for the exception vectors 0..16, which cannot be delivered as interrupts.
    pub fn fixed(dest_apic_id: u8, vector: u8, masked: bool) -> Option<Self> {
        if vector < 16 {
            return None;
        }
        Some(MsixTableEntry {
            address_lo: 0xfee0_0000 | (u32::from(dest_apic_id) << 12),
            address_hi: 0,
            data: u32::from(vector),
            vector_control: u32::from(masked),
        })
    }

    /// The four dwords in table order (address low, address high, data, vector control).
    pub fn encode(&self) -> [u32; 4] {
        [
            self.address_lo,
            self.address_hi,
            self.data,
            self.vector_control,
        ]
    }
}

/// What to do with a configuration write from the owning driver domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// Perform the write unchanged (same offset, size and value).
    Allow,
    /// Drop it.
    Ignore,
    /// Write this dword at `offset & !3` instead: the bytes and bits the owner may change
    /// come from its write, the rest from the current value (a status half is written as
    /// 0 unless the owner wrote it, so no write-1-to-clear bit is cleared by accident).
    Masked(u32),
}

/// The configuration-write policy for one passthrough function, built from what
/// [`enumerate`] found. Reads are always allowed: the owner sees the real registers,
/// including the BAR addresses the microvisor placed.
///
/// | register | owner's writes |
/// |---|---|
/// | BARs 0x10..0x28 and the expansion ROM BAR 0x30 (bridges: 0x10..0x40) | ignored |
/// | command 0x04 | only I/O space, memory space, bus master, INTx disable |
/// | status 0x06 | write-1-to-clear bits pass |
/// | the MSI and MSI-X capability structures, whole | ignored (the microvisor programs them) |
/// | PCI Express Device Control bit 15 (function-level reset) | ignored (a reset clears the BARs) |
/// | power management control/status bits 0..1 (power state) | ignored (D3hot to D0 may clear the BARs) |
/// | Advanced Features control (+4) | ignored (its bit 0 is a function-level reset) |
/// | BIST 0x0f | ignored (a self-test leaves the function unusable while it runs) |
/// | extended configuration space 0x100..0x1000 | ignored: SR-IOV (new functions with BARs of their own), resizable BARs, ATS and PASID (the device caching translations), ACS (peer-to-peer redirection) all live there, and no driver domain needs to write it |
/// | everything else in 0x00..0x100 | passes |
///
/// A write must be 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB config space;
/// any other is ignored. Each byte of a write is judged by its own rule, so a write
/// straddling into a protected range keeps only its unprotected bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigFilter {
    endpoint: bool,
    /// `[start, end)` of the MSI and MSI-X structures.
    msi: Option<(u16, u16)>,
    msix: Option<(u16, u16)>,
    pcie_device_control: Option<u16>,
    pm_control: Option<u16>,
    af_control: Option<u16>,
}

impl ConfigFilter {
    /// The policy for `function`.
    pub fn new(function: &Function) -> Self {
        ConfigFilter {
            endpoint: function.is_endpoint(),
            msi: function
                .msi
                .map(|m| (m.cap_offset, m.cap_offset.saturating_add(m.len_bytes()))),
            msix: function
                .msix
                .map(|m| (m.cap_offset, m.cap_offset.saturating_add(MSIX_CAP_BYTES))),
            pcie_device_control: function.pcie_cap.map(|c| c.saturating_add(8)),
            pm_control: function.pm_cap.map(|c| c.saturating_add(4)),
            af_control: function.af_cap.map(|c| c.saturating_add(4)),
        }
    }

    /// Judges a write of `size` bytes of `value` at `offset`; `current` is the dword now
    /// at `offset & !3` (used for [`WriteDecision::Masked`]).
    pub fn decide(&self, offset: u16, size: u8, value: u32, current: u32) -> WriteDecision {
        let size = u16::from(size);
        if !matches!(size, 1 | 2 | 4)
            || !offset.is_multiple_of(size)
            || offset >= CONFIG_SPACE_BYTES
        {
            return WriteDecision::Ignore;
        }
        let aligned = offset & !3;
        let shift = u32::from(offset & 3) * 8;
        let lanes: u32 = match size {
            4 => u32::MAX,
            2 => 0xffff << shift,
            _ => 0xff << shift,
        };
        let written = (value << shift) & lanes;
        let writable = self.writable_bits(aligned) & lanes;
        if writable == 0 {
            return WriteDecision::Ignore;
        }
        if writable == lanes && aligned != COMMAND {
            return WriteDecision::Allow;
        }
        // Bits of the current value written back unchanged: never a status half with
        // write-1-to-clear bits (PCI status, PCI Express Device Status).
        let status_half = aligned == COMMAND
            || self
                .pcie_device_control
                .is_some_and(|control| aligned == control & !3 && control & 3 == 0);
        let keep = if status_half { 0x0000_ffff } else { u32::MAX };
        WriteDecision::Masked((current & keep & !writable) | (written & writable))
    }

    /// The bits of the dword at `aligned` the owner may change.
    fn writable_bits(&self, aligned: u16) -> u32 {
        if aligned == COMMAND {
            let command = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
            return u32::from(command) | u32::from(STATUS_WRITE1_CLEAR) << 16;
        }
        let header_protected = if self.endpoint {
            (BAR0..BAR0 + 24).contains(&aligned) || aligned == EXPANSION_ROM
        } else {
            (BAR0..0x40).contains(&aligned)
        };
        if header_protected || aligned >= EXTENDED_CONFIG {
            return 0;
        }
        let mut bits = u32::MAX;
        for byte in 0..4u16 {
            let at = aligned + byte;
            let inside = |range: Option<(u16, u16)>| range.is_some_and(|(s, e)| s <= at && at < e);
            let (in_msi, in_msix) = (inside(self.msi), inside(self.msix));
            let af = self.af_control == Some(at);
            if in_msi || in_msix || af || at == BIST {
                bits &= !(0xff << (byte * 8));
            }
        }
        if let Some(control) = self.pcie_device_control {
            if aligned == control & !3 {
                bits &= !(1 << (15 + u32::from(control & 3) * 8));
            }
        }
        if let Some(control) = self.pm_control {
            if aligned == control & !3 {
                bits &= !(3 << (u32::from(control & 3) * 8));
            }
        }
        bits
    }
}

/// The BIST register (byte 3 of the dword at 0x0c).
const BIST: u16 = 0x0f;
/// Where PCI Express extended configuration space starts.
const EXTENDED_CONFIG: u16 = 0x100;

/// Applies an owner's write through `filter`: reads the current dword, decides, and
/// performs an allowed write at its own size or a masked one as a dword. Returns the
/// decision.
pub fn filtered_write<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    bdf: Bdf,
    filter: &ConfigFilter,
    offset: u16,
    size: u8,
    value: u32,
) -> WriteDecision {
    let current = cfg.read32(bdf, offset & 0xffc);
    let decision = filter.decide(offset, size, value, current);
    match decision {
        WriteDecision::Allow => match size {
            4 => cfg.write32(bdf, offset, value),
            2 => cfg.write16(bdf, offset, value as u16),
            _ => cfg.write8(bdf, offset, value as u8),
        },
        WriteDecision::Masked(dword) => cfg.write32(bdf, offset & 0xffc, dword),
        WriteDecision::Ignore => {}
    }
    decision
}

#[cfg(test)]
mod tests;
