//! Discovery of the host platform from its ACPI tables: CPUs (MADT), the IO-APIC, PCI
//! configuration space (MCFG), the IOMMU (DMAR for VT-d, IVRS for AMD-Vi), and where all the
//! tables lie so the frame allocator can keep them.
//!
//! The RSDP is found by scanning the first KiB of the EBDA (segment in the BDA word at
//! 0x40E) and then `0xE0000..0x100000`, on 16-byte boundaries, for `"RSD PTR "` with a
//! valid checksum (and extended checksum for revision 2+). The XSDT is used when the RSDP
//! has one, otherwise the RSDT. Every table's checksum is verified; a table with a bad
//! checksum or an unreadable header is skipped and its signature noted in
//! [`AcpiInfo::bad_tables`]. Lengths in the tables are not trusted: every loop is bounded
//! by the table length, which is itself bounded by [`MAX_TABLE_BYTES`].

mod tables;

pub use crate::phys::PhysRead;
use heapless::Vec;

/// Largest table length accepted.
pub const MAX_TABLE_BYTES: u32 = 4 << 20;
/// Most entries of the XSDT/RSDT that are looked at.
pub const MAX_ROOT_ENTRIES: usize = 128;
/// Most CPUs recorded.
pub const MAX_CPUS: usize = 64;

const HEADER_BYTES: u32 = 36;

/// A processor from the MADT (a type 0 local APIC or a type 9 local x2APIC entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuEntry {
    /// Its local APIC ID.
    pub apic_id: u32,
    /// Its ACPI processor UID.
    pub acpi_uid: u32,
    /// Flags bit 0: usable now.
    pub enabled: bool,
    /// Flags bit 1: not enabled, but may be brought online.
    pub online_capable: bool,
}

/// The first IO-APIC of the MADT (type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    /// Physical address of its registers.
    pub address: u32,
    /// First global system interrupt it handles.
    pub gsi_base: u32,
}

/// One PCI Express ECAM window from the MCFG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McfgEntry {
    pub base_pa: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

/// The Intel VT-d remapping hardware from the DMAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarInfo {
    /// Register base of each DMA remapping hardware unit (DRHD), in table order.
    pub drhd_units: Vec<u64, 4>,
    /// Maximum DMA physical address width in bits (the table's field plus one).
    pub host_address_width: u8,
}

/// An AMD IOMMU from the IVRS: one per register base, merged from the IVHD blocks (types
/// 0x10, 0x11 and 0x40) that describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvrsUnit {
    /// Register base (the MMIO block of the unit).
    pub base_pa: u64,
    /// PCI segment of the unit and of the devices behind it.
    pub segment: u16,
    /// The unit's own PCI function (requester ID: `bus << 8 | device << 3 | function`).
    pub device_id: u16,
    /// Offset of the IOMMU capability in that function's configuration space.
    pub capability_offset: u16,
    /// The extended feature register image (IVHD types 0x11 and 0x40 only).
    pub efr_image: Option<u64>,
    /// The highest IVHD type seen for this unit.
    pub ivhd_type: u8,
}

/// What the ACPI tables say about the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcpiInfo {
    /// Where the RSDP was.
    pub rsdp_pa: u64,
    /// A MADT was found (only the first is used).
    pub madt_present: bool,
    /// Local APIC register base (0 if there is no MADT).
    pub local_apic_pa: u32,
    /// Processors, in MADT order, without duplicate APIC IDs.
    pub cpus: Vec<CpuEntry, MAX_CPUS>,
    /// The MADT listed more than [`MAX_CPUS`] processors.
    pub cpus_truncated: bool,
    pub ioapic: Option<IoApic>,
    pub mcfg: Vec<McfgEntry, 4>,
    pub dmar: Option<DmarInfo>,
    /// An AMD IOMMU table (IVRS) is present.
    pub ivrs_present: bool,
    /// The AMD IOMMUs the (first) IVRS describes, in table order, one per register base.
    pub ivrs_units: Vec<IvrsUnit, 4>,
    /// `[start, end)` physical ranges of the RSDP and every table found, sorted and disjoint
    /// (merged where they touch; when there are too many, the closest ones are merged).
    pub reserved_ranges: Vec<(u64, u64), 32>,
    /// Signatures of the tables skipped (bad checksum, bad length, unreadable).
    pub bad_tables: Vec<[u8; 4], 8>,
}

/// Why the ACPI tables could not be used at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP in the EBDA or the BIOS area.
    RsdpNotFound,
    /// No valid RSDP at the given address.
    BadRsdp(u64),
    /// The XSDT/RSDT cannot be read, or its signature or length is wrong.
    BadRootTable(u64),
    /// The XSDT/RSDT checksum is wrong.
    BadRootChecksum(u64),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::RsdpNotFound => write!(f, "no ACPI RSDP found"),
            Self::BadRsdp(pa) => write!(f, "no valid ACPI RSDP at {pa:#x}"),
            Self::BadRootTable(pa) => {
                write!(f, "ACPI root table at {pa:#x} is unreadable or malformed")
            }
            Self::BadRootChecksum(pa) => write!(f, "ACPI root table at {pa:#x} has a bad checksum"),
        }
    }
}

/// What a valid RSDP points to.
#[derive(Clone, Copy, Debug)]
struct Rsdp {
    rsdt_pa: u32,
    xsdt_pa: Option<u64>,
    length: u32,
}

/// Finds the RSDP the way a PC BIOS publishes it.
pub fn find_rsdp<M: PhysRead + ?Sized>(mem: &M) -> Option<u64> {
    let ebda = mem
        .read_u16(0x40e)
        .map(|segment| u64::from(segment) << 4)
        .filter(|&pa| pa != 0);
    let ebda_scan = ebda
        .into_iter()
        .flat_map(|base| (base..base + 1024).step_by(16));
    let bios_scan = (0xe_0000u64..0x10_0000).step_by(16);
    ebda_scan
        .chain(bios_scan)
        .find(|&pa| read_rsdp(mem, pa).is_some())
}

/// Finds the RSDP and parses the tables it leads to.
pub fn parse_acpi<M: PhysRead + ?Sized>(mem: &M) -> Result<AcpiInfo, AcpiError> {
    let rsdp_pa = find_rsdp(mem).ok_or(AcpiError::RsdpNotFound)?;
    parse_acpi_at(mem, rsdp_pa)
}

/// Parses the tables reached from the RSDP at `rsdp_pa` (as given by a boot loader).
pub fn parse_acpi_at<M: PhysRead + ?Sized>(mem: &M, rsdp_pa: u64) -> Result<AcpiInfo, AcpiError> {
    let rsdp = read_rsdp(mem, rsdp_pa).ok_or(AcpiError::BadRsdp(rsdp_pa))?;
    let mut info = AcpiInfo {
        rsdp_pa,
        ..AcpiInfo::default()
    };
    add_range(&mut info.reserved_ranges, rsdp_pa, u64::from(rsdp.length));

    let (root_pa, signature, entry_bytes) = match rsdp.xsdt_pa {
        Some(xsdt) => (xsdt, b"XSDT", 8u32),
        None => (u64::from(rsdp.rsdt_pa), b"RSDT", 4u32),
    };
    let root = read_header(mem, root_pa).ok_or(AcpiError::BadRootTable(root_pa))?;
    if &root.signature != signature || !root.length_ok() {
        return Err(AcpiError::BadRootTable(root_pa));
    }
    if !checksum_ok(mem, root_pa, root.length) {
        return Err(AcpiError::BadRootChecksum(root_pa));
    }
    add_range(&mut info.reserved_ranges, root_pa, u64::from(root.length));

    let entries = ((root.length - HEADER_BYTES) / entry_bytes) as usize;
    for index in 0..entries.min(MAX_ROOT_ENTRIES) {
        let at = root_pa + u64::from(HEADER_BYTES) + (index as u64) * u64::from(entry_bytes);
        let table_pa = if entry_bytes == 8 {
            mem.read_u64(at)
        } else {
            mem.read_u32(at).map(u64::from)
        };
        match table_pa {
            Some(0) => {}
            Some(pa) => tables::parse_table(mem, pa, &mut info),
            None => note_bad_table(&mut info, *b"????"),
        }
    }
    Ok(info)
}

fn read_rsdp<M: PhysRead + ?Sized>(mem: &M, pa: u64) -> Option<Rsdp> {
    let mut bytes = [0u8; 36];
    if !mem.read(pa, &mut bytes[..20]) || &bytes[..8] != b"RSD PTR " || sum(&bytes[..20]) != 0 {
        return None;
    }
    let rsdt_pa = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let revision = bytes[15];
    if revision < 2 {
        return Some(Rsdp {
            rsdt_pa,
            xsdt_pa: None,
            length: 20,
        });
    }
    if !mem.read(pa, &mut bytes) || sum(&bytes) != 0 {
        return None;
    }
    let mut xsdt = [0u8; 8];
    xsdt.copy_from_slice(&bytes[24..32]);
    let xsdt_pa = Some(u64::from_le_bytes(xsdt)).filter(|&x| x != 0);
    Some(Rsdp {
        rsdt_pa,
        xsdt_pa,
        length: 36,
    })
}

/// The common 36-byte header of a system description table (signature and length only).
#[derive(Clone, Copy, Debug)]
struct Header {
    signature: [u8; 4],
    length: u32,
}

impl Header {
    fn length_ok(&self) -> bool {
        (HEADER_BYTES..=MAX_TABLE_BYTES).contains(&self.length)
    }
}

fn read_header<M: PhysRead + ?Sized>(mem: &M, pa: u64) -> Option<Header> {
    let mut signature = [0u8; 4];
    if !mem.read(pa, &mut signature) {
        return None;
    }
    let length = mem.read_u32(pa.checked_add(4)?)?;
    Some(Header { signature, length })
}

/// Whether the `length` bytes at `pa` sum to zero (mod 256).
fn checksum_ok<M: PhysRead + ?Sized>(mem: &M, pa: u64, length: u32) -> bool {
    let Some(end) = pa.checked_add(u64::from(length)) else {
        return false;
    };
    let mut total = 0u8;
    let mut chunk = [0u8; 64];
    let mut at = pa;
    while at < end {
        let n = (end - at).min(chunk.len() as u64) as usize;
        if !mem.read(at, &mut chunk[..n]) {
            return false;
        }
        total = total.wrapping_add(sum(&chunk[..n]));
        at += n as u64;
    }
    total == 0
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, &b| acc.wrapping_add(b))
}

fn note_bad_table(info: &mut AcpiInfo, signature: [u8; 4]) {
    // Only the first few are kept; they are for a diagnostic message.
    let _ = info.bad_tables.push(signature);
}

/// Adds `[pa, pa + len)` to the reserved ranges, kept sorted and disjoint: ranges it
/// overlaps or touches are merged into it. When the list is full, the two closest
/// neighbours (the new range included) are merged, which reserves the smallest gap.
fn add_range(ranges: &mut Vec<(u64, u64), 32>, pa: u64, len: u64) {
    let mut new = (pa, pa.saturating_add(len));
    ranges.retain(|&(s, e)| {
        let touches = s <= new.1 && new.0 <= e;
        if touches {
            new = (new.0.min(s), new.1.max(e));
        }
        !touches
    });
    if ranges.is_full() {
        let pos = ranges
            .iter()
            .position(|&(s, _)| s > new.0)
            .unwrap_or(ranges.len());
        let gap_before = pos.checked_sub(1).map(|k| (new.0 - ranges[k].1, k));
        let gap_after = ranges.get(pos).map(|r| (r.0 - new.1, pos));
        let nearest = [gap_before, gap_after].into_iter().flatten().min();
        let closest_pair = (1..ranges.len())
            .map(|k| (ranges[k].0 - ranges[k - 1].1, k))
            .min();
        match (nearest, closest_pair) {
            (Some((gap_new, _)), Some((gap_pair, k))) if gap_pair < gap_new => {
                ranges[k - 1].1 = ranges[k].1;
                ranges.remove(k);
            }
            (Some((_, neighbour)), _) => {
                let (s, e) = ranges.remove(neighbour);
                new = (new.0.min(s), new.1.max(e));
            }
            // A full list is never empty, so `nearest` is always `Some`.
            (None, _) => return,
        }
    }
    let pos = ranges
        .iter()
        .position(|&(s, _)| s > new.0)
        .unwrap_or(ranges.len());
    // Room was made above.
    let _ = ranges.insert(pos, new);
}

#[cfg(test)]
mod tests;
