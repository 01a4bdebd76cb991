//! What the machine gave us at boot: the Multiboot memory map and modules, the ACPI tables
//! (CPUs from the MADT, PCI ECAM from the MCFG, the IOMMU from the DMAR or IVRS), and from
//! them the frame allocator's view of RAM. Also decodes the compiled manifest (module 0).

use heapless::Vec;
use microvisor_abi::manifest::{SystemManifest, MANIFEST_VERSION};
use microvisor_core::acpi;
use microvisor_core::multiboot;

use crate::cpu::MAX_CPUS;
use crate::mem;

pub struct Platform {
    pub apic_ids: Vec<u32, MAX_CPUS>,
    /// The first VT-d remapping unit, if the DMAR lists one.
    pub vtd_base: Option<u64>,
    /// The first AMD-Vi unit, if the IVRS lists one.
    pub amdvi: Option<microvisor_core::acpi::IvrsUnit>,
    /// ECAM base and last bus of segment 0, from the MCFG.
    pub ecam: Option<(u64, u8)>,
}

/// Switch on DMA remapping and find the PCI functions (after the manifest is known, so the
/// BARs of assigned functions can be placed).
pub fn init_devices(platform: &Platform, manifest: &SystemManifest) {
    match platform.vtd_base {
        Some(base) => {
            if let Err(why) = crate::iommu::init(base) {
                crate::log!("VT-d not usable: {why}; PCI passthrough is off");
            }
        }
        None => match &platform.amdvi {
            Some(unit) => match crate::amdvi::init(unit.base_pa) {
                Ok(()) => {
                    if let Some((ecam_base, _)) = platform.ecam {
                        let bdf =
                            microvisor_core::pci::Bdf::from_source_id(unit.segment, unit.device_id);
                        crate::amdvi::watch_pci_status(ecam_base + bdf.ecam_offset());
                    }
                }
                Err(why) => crate::log!("AMD-Vi not usable: {why}; PCI passthrough is off"),
            },
            None => crate::log!("no IOMMU (neither DMAR nor IVRS): PCI passthrough is off"),
        },
    }
    if let Some((base, last_bus)) = platform.ecam {
        let mut assigned: Vec<microvisor_abi::manifest::PciAddress, 64> = Vec::new();
        for spec in &manifest.domains {
            for address in &spec.pci {
                let _ = assigned.push(*address);
            }
        }
        crate::pci::init(base, last_bus.min(7), &assigned);
    }
}

/// Physical memory as the parsers see it, through the identity map (below 4 GiB only).
struct PhysMemory;

impl microvisor_core::phys::PhysRead for PhysMemory {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = pa.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > mem::MAX_PHYS {
            return false;
        }
        mem::read_phys(pa, buf);
        true
    }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

pub fn discover(info_pa: u64) -> Result<Platform, &'static str> {
    let info = multiboot::parse_multiboot(&PhysMemory, info_pa)
        .map_err(|_| "the Multiboot information is malformed")?;
    if info.modules.is_empty() {
        return Err("no boot modules: module 0 must be the compiled manifest");
    }
    let acpi =
        acpi::parse_acpi(&PhysMemory).map_err(|_| "no usable ACPI tables (RSDP/XSDT/MADT)")?;
    if u64::from(acpi.local_apic_pa) != crate::lapic::LAPIC_BASE {
        return Err("the local APIC is not at 0xfee00000");
    }

    let mut usable: Vec<(u64, u64), 64> = Vec::new();
    for region in info.mem_map.iter().filter(|r| r.kind == 1) {
        let _ = usable.push((region.base, region.base.saturating_add(region.len)));
    }
    let mut reserved: Vec<(u64, u64), 64> = Vec::new();
    // Real-mode memory (BIOS data, the AP trampoline), the image, the modules, the
    // Multiboot structures QEMU puts after the modules, and every ACPI table.
    let (image_start, image_end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    let _ = reserved.push((0, 0x10_0000));
    let _ = reserved.push((image_start, image_end));
    let mut modules: Vec<(u64, u64), 16> = Vec::new();
    for module in &info.modules {
        let _ = reserved.push((module.start, module.end));
        let _ = modules.push((module.start, module.end));
    }
    let _ = reserved.push((info_pa & !0xfff, (info_pa & !0xfff) + 0x1000));
    for &range in &acpi.reserved_ranges {
        let _ = reserved.push(range);
    }
    mem::init(&usable, &reserved);
    crate::domain::MODULES.call_once(|| modules);

    let mut apic_ids = Vec::new();
    for cpu in acpi.cpus.iter().filter(|c| c.enabled) {
        let _ = apic_ids.push(cpu.apic_id);
    }
    crate::log!(
        "{} MiB usable RAM, {} boot modules, {} cpus, ECAM {:#x}, IOMMU {}",
        usable.iter().map(|(s, e)| e - s).sum::<u64>() >> 20,
        info.modules.len(),
        apic_ids.len(),
        acpi.mcfg.first().map_or(0, |m| m.base_pa),
        match (&acpi.dmar, acpi.ivrs_present) {
            (Some(_), _) => "Intel VT-d (DMAR)",
            (None, true) => "AMD-Vi (IVRS)",
            (None, false) => "none",
        }
    );
    if let Some(dmar) = &acpi.dmar {
        for unit in &dmar.drhd_units {
            crate::log!("VT-d remapping unit at {unit:#x}");
        }
    }
    let vtd_base = acpi
        .dmar
        .as_ref()
        .and_then(|d| d.drhd_units.first().copied());
    let ecam = acpi
        .mcfg
        .iter()
        .find(|m| m.segment == 0)
        .map(|m| (m.base_pa, m.bus_end));
    let amdvi = acpi.ivrs_units.first().copied();
    Ok(Platform {
        apic_ids,
        vtd_base,
        ecam,
        amdvi,
    })
}

/// Decode boot module 0, the compiled system manifest.
pub fn decode_manifest() -> Result<&'static SystemManifest, &'static str> {
    let &(start, end) = crate::domain::MODULES
        .get()
        .and_then(|m| m.first())
        .ok_or("no manifest module")?;
    // SAFETY: the module lies in memory reserved from the allocator for good and is never written.
    let bytes =
        unsafe { core::slice::from_raw_parts(mem::phys_ptr::<u8>(start), (end - start) as usize) };
    let manifest: SystemManifest =
        postcard::from_bytes(bytes).map_err(|_| "boot module 0 is not a compiled manifest")?;
    if manifest.version != MANIFEST_VERSION {
        return Err(
            "the compiled manifest has another layout version; rebuild it with this tree's tools",
        );
    }
    Ok(crate::domain::MANIFEST.call_once(|| manifest))
}
