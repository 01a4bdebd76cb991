//! The individual ACPI tables: MADT ("APIC"), MCFG, DMAR, IVRS, and the FADT's pointers to
//! the DSDT and FACS (only so that their ranges are reserved).
//!
//! Layouts (offsets from the table start, after the 36-byte header):
//! - MADT: local APIC address u32 @36, flags u32 @40, entries from 44, each `type u8,
//!   length u8`. Type 0 local APIC (len 8): uid u8 @2, APIC ID u8 @3, flags u32 @4. Type 1
//!   IO-APIC (len 12): id u8 @2, address u32 @4, GSI base u32 @8. Type 5 local APIC address
//!   override (len 12): address u64 @4. Type 9 local x2APIC (len 16): x2APIC ID u32 @4,
//!   flags u32 @8, uid u32 @12.
//! - MCFG: 8 reserved bytes, then 16-byte entries from 44: base u64, segment u16, start bus
//!   u8, end bus u8.
//! - DMAR: host address width − 1 u8 @36, flags u8 @37, structures from 48, each `type u16,
//!   length u16`; type 0 DRHD has the register base u64 @8.
//! - IVRS: IVinfo u32 @36, 8 reserved bytes, blocks from 48, each `type u8, flags u8,
//!   length u16`. IVHD types 0x10, 0x11, 0x40 (one IOMMU each; a unit is usually described
//!   by several types, for OSes of different ages): IOMMU device ID u16 @4, capability
//!   offset u16 @6, register base u64 @8, PCI segment u16 @16, info u16 @18, feature
//!   reporting / attributes u32 @20; types 0x11 and 0x40 add the EFR image u64 @24 (their
//!   device entries start at 40, type 0x10's at 24). IVMD types 0x20..=0x22 (memory
//!   definitions) are skipped.
//! - FADT: FIRMWARE_CTRL u32 @36, DSDT u32 @40, X_FIRMWARE_CTRL u64 @132, X_DSDT u64 @140.

use super::{
    add_range, checksum_ok, note_bad_table, read_header, AcpiInfo, CpuEntry, DmarInfo, IoApic,
    IvrsUnit, McfgEntry, HEADER_BYTES,
};
use crate::phys::PhysRead;

/// Parses one table listed in the XSDT/RSDT into `info`.
pub(super) fn parse_table<M: PhysRead + ?Sized>(mem: &M, pa: u64, info: &mut AcpiInfo) {
    let Some(header) = read_header(mem, pa) else {
        note_bad_table(info, *b"????");
        return;
    };
    if !header.length_ok() || !checksum_ok(mem, pa, header.length) {
        note_bad_table(info, header.signature);
        return;
    }
    add_range(&mut info.reserved_ranges, pa, u64::from(header.length));
    let table = Table {
        mem,
        pa,
        length: header.length,
    };
    match &header.signature {
        b"APIC" if !info.madt_present => parse_madt(&table, info),
        b"MCFG" if info.mcfg.is_empty() => parse_mcfg(&table, info),
        b"DMAR" if info.dmar.is_none() => parse_dmar(&table, info),
        b"IVRS" if !info.ivrs_present => parse_ivrs(&table, info),
        b"FACP" => reserve_fadt_pointers(&table, info),
        _ => {}
    }
}

/// A checked table: reads at offsets past its end fail.
struct Table<'m, M: ?Sized> {
    mem: &'m M,
    pa: u64,
    length: u32,
}

impl<M: PhysRead + ?Sized> Table<'_, M> {
    fn bytes<const N: usize>(&self, offset: u32) -> Option<[u8; N]> {
        let end = offset.checked_add(N as u32)?;
        if end > self.length {
            return None;
        }
        let mut buf = [0u8; N];
        self.mem
            .read(self.pa + u64::from(offset), &mut buf)
            .then_some(buf)
    }
    fn u8(&self, offset: u32) -> Option<u8> {
        self.bytes::<1>(offset).map(|b| b[0])
    }
    fn u16(&self, offset: u32) -> Option<u16> {
        self.bytes(offset).map(u16::from_le_bytes)
    }
    fn u32(&self, offset: u32) -> Option<u32> {
        self.bytes(offset).map(u32::from_le_bytes)
    }
    fn u64(&self, offset: u32) -> Option<u64> {
        self.bytes(offset).map(u64::from_le_bytes)
    }
}

fn parse_madt<M: PhysRead + ?Sized>(table: &Table<'_, M>, info: &mut AcpiInfo) {
    info.madt_present = true;
    info.local_apic_pa = table.u32(36).unwrap_or(0);
    let mut offset = 44u32;
    // Each entry is at least 2 bytes, so this ends within length / 2 steps.
    while let (Some(kind), Some(len)) = (table.u8(offset), table.u8(offset + 1)) {
        if len < 2 || offset + u32::from(len) > table.length {
            break;
        }
        let field_u32 = |at: u32| {
            if at + 4 <= u32::from(len) {
                table.u32(offset + at)
            } else {
                None
            }
        };
        match kind {
            0 if len >= 8 => {
                let uid = table.u8(offset + 2).unwrap_or(0);
                let apic_id = table.u8(offset + 3).unwrap_or(0xff);
                let flags = field_u32(4).unwrap_or(0);
                if apic_id != 0xff {
                    add_cpu(info, u32::from(apic_id), u32::from(uid), flags);
                }
            }
            1 if len >= 12 && info.ioapic.is_none() => {
                if let (Some(id), Some(address), Some(gsi_base)) =
                    (table.u8(offset + 2), field_u32(4), field_u32(8))
                {
                    info.ioapic = Some(IoApic {
                        id,
                        address,
                        gsi_base,
                    });
                }
            }
            5 if len >= 12 => {
                if let Some(address) = table.u64(offset + 4).and_then(|a| u32::try_from(a).ok()) {
                    info.local_apic_pa = address;
                }
            }
            9 if len >= 16 => {
                if let (Some(apic_id), Some(flags), Some(uid)) =
                    (field_u32(4), field_u32(8), field_u32(12))
                {
                    if apic_id != u32::MAX {
                        add_cpu(info, apic_id, uid, flags);
                    }
                }
            }
            _ => {}
        }
        offset += u32::from(len);
    }
}

fn add_cpu(info: &mut AcpiInfo, apic_id: u32, acpi_uid: u32, flags: u32) {
    if info.cpus.iter().any(|c| c.apic_id == apic_id) {
        return;
    }
    let cpu = CpuEntry {
        apic_id,
        acpi_uid,
        enabled: flags & 1 != 0,
        online_capable: flags & 2 != 0,
    };
    if info.cpus.push(cpu).is_err() {
        info.cpus_truncated = true;
    }
}

fn parse_mcfg<M: PhysRead + ?Sized>(table: &Table<'_, M>, info: &mut AcpiInfo) {
    let mut offset = HEADER_BYTES + 8;
    while offset + 16 <= table.length && !info.mcfg.is_full() {
        if let (Some(base_pa), Some(segment), Some(bus_start), Some(bus_end)) = (
            table.u64(offset),
            table.u16(offset + 8),
            table.u8(offset + 10),
            table.u8(offset + 11),
        ) {
            let _ = info.mcfg.push(McfgEntry {
                base_pa,
                segment,
                bus_start,
                bus_end,
            });
        }
        offset += 16;
    }
}

fn parse_dmar<M: PhysRead + ?Sized>(table: &Table<'_, M>, info: &mut AcpiInfo) {
    let Some(width) = table.u8(36) else { return };
    let mut dmar = DmarInfo {
        drhd_units: heapless::Vec::new(),
        host_address_width: width.saturating_add(1),
    };
    let mut offset = 48u32;
    // Each structure is at least 4 bytes, so this ends within length / 4 steps.
    while let (Some(kind), Some(len)) = (table.u16(offset), table.u16(offset + 2)) {
        if len < 4 || offset + u32::from(len) > table.length {
            break;
        }
        if kind == 0 && len >= 16 {
            if let Some(base) = table.u64(offset + 8) {
                let _ = dmar.drhd_units.push(base);
            }
        }
        offset += u32::from(len);
    }
    info.dmar = Some(dmar);
}

fn parse_ivrs<M: PhysRead + ?Sized>(table: &Table<'_, M>, info: &mut AcpiInfo) {
    info.ivrs_present = true;
    let mut offset = 48u32;
    // Each block is at least 4 bytes, so this ends within length / 4 steps.
    while let (Some(kind), Some(len)) = (table.u8(offset), table.u16(offset + 2)) {
        if len < 4 || offset + u32::from(len) > table.length {
            break;
        }
        let field_u16 = |at: u32| table.u16(offset + at);
        let has_efr = matches!(kind, 0x11 | 0x40) && len >= 40;
        if matches!(kind, 0x10 | 0x11 | 0x40) && len >= 24 {
            if let (Some(device_id), Some(capability_offset), Some(base_pa), Some(segment)) = (
                field_u16(4),
                field_u16(6),
                table.u64(offset + 8),
                field_u16(16),
            ) {
                let efr_image = if has_efr {
                    table.u64(offset + 24)
                } else {
                    None
                };
                add_ivrs_unit(
                    info,
                    IvrsUnit {
                        base_pa,
                        segment,
                        device_id,
                        capability_offset,
                        efr_image,
                        ivhd_type: kind,
                    },
                );
            }
        }
        offset += u32::from(len);
    }
}

/// Adds a unit, or merges it into the one with the same register base: the newer block
/// type's fields win, an EFR image is kept once seen.
fn add_ivrs_unit(info: &mut AcpiInfo, unit: IvrsUnit) {
    if unit.base_pa == 0 {
        return;
    }
    match info
        .ivrs_units
        .iter_mut()
        .find(|u| u.base_pa == unit.base_pa)
    {
        Some(known) => {
            if unit.ivhd_type > known.ivhd_type {
                let efr_image = unit.efr_image.or(known.efr_image);
                *known = IvrsUnit { efr_image, ..unit };
            } else if known.efr_image.is_none() {
                known.efr_image = unit.efr_image;
            }
        }
        // Only the first few are kept; a machine with more IOMMUs than that gets the rest
        // left off, and the caller refuses passthrough behind them.
        None => {
            let _ = info.ivrs_units.push(unit);
        }
    }
}

/// Reserves the DSDT and FACS the FADT points to (they are not listed in the XSDT).
fn reserve_fadt_pointers<M: PhysRead + ?Sized>(table: &Table<'_, M>, info: &mut AcpiInfo) {
    let pick = |wide: Option<u64>, narrow: Option<u32>| {
        wide.filter(|&pa| pa != 0)
            .or(narrow.map(u64::from))
            .filter(|&pa| pa != 0)
    };
    if let Some(facs) = pick(table.u64(132), table.u32(36)) {
        // The FACS has a length but no checksum.
        match table.mem.read_u32(facs.saturating_add(4)) {
            Some(len) if (64..=4096).contains(&len) => {
                add_range(&mut info.reserved_ranges, facs, u64::from(len))
            }
            _ => note_bad_table(info, *b"FACS"),
        }
    }
    if let Some(dsdt) = pick(table.u64(140), table.u32(40)) {
        match read_header(table.mem, dsdt) {
            Some(h)
                if &h.signature == b"DSDT"
                    && h.length_ok()
                    && checksum_ok(table.mem, dsdt, h.length) =>
            {
                add_range(&mut info.reserved_ranges, dsdt, u64::from(h.length));
            }
            _ => note_bad_table(info, *b"DSDT"),
        }
    }
}
