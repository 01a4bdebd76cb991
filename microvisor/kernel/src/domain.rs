//! Domains: the table of live domains, the boot-time builder (memory, nested page table, PVH
//! image, `hvm_start_info`, vCPUs), and teardown with scrubbing.
//!
//! Guest-physical layout of a PVH domain (as Xen lays one out):
//!
//! | range | what |
//! |---|---|
//! | `0..memory` | RAM (E820 type 1) |
//! | [`START_INFO_GPA`] (in RAM) | `hvm_start_info`, the memory map, the module list, the command line |
//! | `p_paddr` of each PT_LOAD (at or above 1 MiB) | the image |
//! | the next 2 MiB boundary after the image (at least 16 MiB) | the initramfs (`ramdisk`), module 0 |
//! | [`ACPI_GPA`] | the domain's ACPI tables, one page (E820 type 4, NVS) |
//! | [`SPECIAL_PAGES_GPA`].. | the xenstore and console rings (E820 reserved) |
//!
//! vCPU 0 starts at the image's `XEN_ELFNOTE_PHYS32_ENTRY` in 32-bit protected mode with
//! EBX = the start-info address; the other vCPUs start down until their virtual local APIC
//! gets INIT and STARTUP (native SMP boot, which Linux uses) or `VCPUOP_initialise` +
//! `VCPUOP_up` (our own domains).

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use heapless::{String, Vec};
use microvisor_abi::manifest::{DomainSpec, LifecycleAction};
use spin::Mutex;

use crate::mem::{self, PAGE_SIZE};
use crate::npt::NestedPageTable;
use crate::vcpu::{self, MAX_VCPUS_PER_DOMAIN};

/// The domain table's size: the boot manifest's domains (at most
/// `microvisor_abi::manifest::MAX_DOMAINS`) take its first slots, and the control domain's
/// creations the rest.
pub const MAX_DOMAINS: usize = 256;
pub use microvisor_abi::domctl::{ACPI_GPA, CONSOLE_RING_GPA, START_INFO_GPA, STORE_RING_GPA};
const CONSOLE_LINE_BYTES: usize = 240;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DomainState {
    Running,
    /// Shutting down; the last CPU to leave one of its vCPUs applies `action`.
    Dying {
        reason: ShutdownReason,
        action: LifecycleAction,
    },
    /// Stopped and kept: `preserve`, or a domain the control domain created, waiting for it
    /// to apply its lifecycle action.
    Preserved,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Crash,
}

impl ShutdownReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Crash => "crash",
        }
    }
}

pub fn action_name(action: LifecycleAction) -> &'static str {
    match action {
        LifecycleAction::Destroy => "destroy",
        LifecycleAction::Restart => "restart",
        LifecycleAction::Preserve => "preserve",
    }
}

pub struct Domain {
    pub domid: u16,
    pub name: String<32>,
    /// Its entry in the boot manifest; `None` for a domain the control domain created.
    pub spec_index: Option<usize>,
    /// Why it shut down, once it has (kept while [`DomainState::Preserved`]).
    pub shutdown: Option<ShutdownReason>,
    /// A created domain: false while the control domain builds it (it may load its memory
    /// and set its entry), true from its first unpause on.
    pub sealed: bool,
    /// A created domain: vCPU 0's entry was set.
    pub has_entry: bool,
    /// This build's number, unique in this boot ([`DomainEntry::instance`]).
    ///
    /// [`DomainEntry::instance`]: microvisor_abi::microvisor_op::DomainEntry::instance
    pub instance: u32,
    /// What it inherited from the instances before it (restarts, id, recent restart times).
    pub lineage: Lineage,
    pub vcpus: u32,
    pub ram_bytes: u64,
    pub npt: NestedPageTable,
    pub state: DomainState,
    pub console: Vec<u8, CONSOLE_LINE_BYTES>,
    /// HVM parameters (`HVMOP_get_param`), by index.
    pub hvm_params: [u64; microvisor_abi::hvm::HVM_NR_PARAMS as usize],
    /// RAM frames that `XENMEM_add_to_physmap` displaced from the guest-physical map. They
    /// stay the domain's until it is destroyed (another vCPU could still reach them through
    /// a stale TLB entry, so they are not handed out earlier).
    pub displaced: Vec<u64, 64>,
    /// Its own I/O permission map (3 frames) when the manifest gave it `ioports`.
    pub iopm: Option<u64>,
    /// Its DMA (IOMMU second-level) page table when it owns PCI functions.
    pub dma_table: Option<u64>,
}

impl Domain {
    /// A running domain with nothing of a build's own yet: a created domain as the control
    /// domain first gets it (not sealed, no entry, no devices, no restarts).
    fn new(
        domid: u16,
        name: String<32>,
        vcpus: u32,
        ram_bytes: u64,
        npt: NestedPageTable,
        hvm_params: [u64; microvisor_abi::hvm::HVM_NR_PARAMS as usize],
    ) -> Self {
        Self {
            domid,
            name,
            spec_index: None,
            shutdown: None,
            sealed: false,
            has_entry: false,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed) + 1,
            lineage: Lineage::default(),
            vcpus,
            ram_bytes,
            npt,
            state: DomainState::Running,
            console: Vec::new(),
            hvm_params,
            displaced: Vec::new(),
            iopm: None,
            dma_table: None,
        }
    }
}

pub static DOMAINS: Mutex<[Option<Domain>; MAX_DOMAINS]> =
    Mutex::new([const { None }; MAX_DOMAINS]);
/// The manifest, kept for restarts.
pub static MANIFEST: spin::Once<microvisor_abi::manifest::SystemManifest> = spin::Once::new();
/// Boot modules (start, end) by index, kept for restarts.
pub static MODULES: spin::Once<Vec<(u64, u64), 16>> = spin::Once::new();
static NEXT_DOMID: AtomicU16 = AtomicU16::new(1);
/// The last build number handed out ([`Domain::instance`]).
static INSTANCES: AtomicU32 = AtomicU32::new(0);
/// Per slot: `domid + 1` of a service domain being torn down to be rebuilt under the same
/// id (0: none). While its slot is empty the domain list still shows it, dying and
/// restarting, so a service that syncs in that window keeps its entries.
pub static REBUILDING: [AtomicU32; MAX_DOMAINS] = [const { AtomicU32::new(0) }; MAX_DOMAINS];

pub use microvisor_core::restart::{Lineage, GIVEN_UP_ARG, RESTART_BURST, RESTART_WINDOW_NS};

/// A fresh domain id: the next one in 1..DOMID_FIRST_RESERVED (0x7ff0, where Xen's special
/// ids such as DOMID_SELF begin) that no live domain has, wrapping back to 1. With at most
/// MAX_DOMAINS live domains one is always free.
fn next_domid() -> u16 {
    const FIRST_RESERVED: u16 = 0x7ff0;
    let table = DOMAINS.lock();
    loop {
        let candidate = NEXT_DOMID
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(if n + 1 >= FIRST_RESERVED { 1 } else { n + 1 })
            })
            .unwrap_or(1);
        let candidate = if candidate == 0 || candidate >= FIRST_RESERVED {
            1
        } else {
            candidate
        };
        if !table.iter().flatten().any(|d| d.domid == candidate) {
            return candidate;
        }
    }
}
/// Number of domains whose vCPU 0 has not yet entered the guest for the first time.
pub static NOT_YET_RUNNING: AtomicU32 = AtomicU32::new(0);

/// What a hypercall handler needs to know about the calling domain, copied out of the table.
#[derive(Clone, Copy)]
pub struct DomainView {
    pub domid: u16,
    pub npt_root: u64,
    pub ram_bytes: u64,
    pub vcpus: u32,
    pub restarts: u32,
}

pub fn view(slot: usize) -> Option<DomainView> {
    let table = DOMAINS.lock();
    let d = table[slot].as_ref()?;
    Some(DomainView {
        domid: d.domid,
        npt_root: d.npt.root_pa(),
        ram_bytes: d.ram_bytes,
        vcpus: d.vcpus,
        restarts: d.lineage.restarts,
    })
}

/// The table slot of a live domain, by domain id.
pub fn slot_of(domid: u16) -> Option<usize> {
    DOMAINS
        .lock()
        .iter()
        .position(|d| d.as_ref().is_some_and(|d| d.domid == domid))
}

pub fn name_of(slot: usize) -> String<32> {
    DOMAINS.lock()[slot]
        .as_ref()
        .map(|d| d.name.clone())
        .unwrap_or_default()
}

#[derive(Debug)]
pub enum BuildError {
    OutOfMemory,
    Layout(microvisor_core::pvh_boot::PvhBootError),
    BadModule,
    Pci(crate::pci::AssignError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory => write!(f, "out of memory"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::BadModule => write!(f, "the manifest names a boot module that does not exist"),
            Self::Pci(e) => write!(f, "{e}"),
        }
    }
}

fn module_bytes(index: u16) -> Result<&'static [u8], BuildError> {
    let modules = MODULES.get().ok_or(BuildError::BadModule)?;
    let &(start, end) = modules
        .get(usize::from(index))
        .ok_or(BuildError::BadModule)?;
    // SAFETY: boot modules are reserved from the frame allocator for the microvisor's whole
    // life and never written, so a shared slice over them stays valid and unchanged.
    Ok(unsafe { core::slice::from_raw_parts(mem::phys_ptr::<u8>(start), (end - start) as usize) })
}

/// Build domain `spec_index` of the manifest into table slot `slot` and make vCPU 0 runnable.
pub fn build(slot: usize, spec_index: usize, lineage: Lineage) -> Result<u16, BuildError> {
    let spec: &DomainSpec = &MANIFEST.get().expect("manifest decoded").domains[spec_index];
    let ram_bytes = u64::from(spec.memory_mib) << 20;
    let image_bytes = module_bytes(spec.image_module)?;
    let ramdisk = spec.ramdisk_module.map(module_bytes).transpose()?;
    let mut cmdline: String<{ microvisor_abi::manifest::MAX_CMDLINE_BYTES + GIVEN_UP_ARG.len() }> =
        String::new();
    let _ = cmdline.push_str(&spec.cmdline);
    if lineage.given_up {
        let _ = cmdline.push_str(GIVEN_UP_ARG);
    }
    let boot = microvisor_core::pvh_boot::plan(
        image_bytes,
        ram_bytes,
        spec.vcpus,
        cmdline.as_bytes(),
        ramdisk.map(|bytes| bytes.len() as u64),
    )
    .map_err(BuildError::Layout)?;
    let image = &boot.image;

    let Ram {
        mut npt,
        frames,
        reused,
        lowest,
        highest,
    } = alloc_ram(ram_bytes)?;
    for segment in &image.segments {
        let file = &image_bytes[segment.file_offset as usize..][..segment.file_bytes as usize];
        copy_into_guest(&npt, segment.paddr, file);
        // The rest up to mem_bytes is already zero (fresh frames are zeroed).
    }
    if let (Some(bytes), Some(gpa)) = (ramdisk, boot.ramdisk_gpa) {
        copy_into_guest(&npt, gpa, bytes);
    }
    if let Err(e) = map_acpi_page(&mut npt, &boot.acpi_page) {
        npt.destroy();
        return Err(e);
    }
    copy_into_guest(&npt, START_INFO_GPA, &boot.start_info_page);
    let start_info = boot.start_info_gpa;

    let domid = lineage.domid.unwrap_or_else(next_domid);
    crate::stats::reset_domain(slot);
    let mut hvm_params = [0; microvisor_abi::hvm::HVM_NR_PARAMS as usize];
    let (iopm, dma_table) = match connect_services(
        slot,
        domid,
        Some(spec_index),
        spec.vcpus,
        &mut npt,
        &mut hvm_params,
    ) {
        Ok(done) => done,
        Err(e) => {
            crate::pci::release(slot);
            vcpu::destroy_all(slot);
            let _ = crate::grants::destroy_domain(slot, domid);
            crate::events::destroy_domain(slot, domid);
            npt.destroy();
            return Err(e);
        }
    };
    vcpu::set_pvh_boot_state(slot, 0, u64::from(image.entry), start_info);

    crate::log!(
        "domain {domid} ({}) built: {frames} frames, {reused} reused, {} vcpus, entry {:#x}, RAM in host memory {lowest:#x}..{highest:#x}",
        spec.name,
        spec.vcpus,
        image.entry
    );
    DOMAINS.lock()[slot] = Some(Domain {
        spec_index: Some(spec_index),
        sealed: true,
        has_entry: true,
        lineage,
        iopm,
        dma_table,
        ..Domain::new(
            domid,
            spec.name.clone(),
            spec.vcpus,
            ram_bytes,
            npt,
            hvm_params,
        )
    });
    if let Err(e) = crate::scheduler::add_domain(slot, spec.vcpus, false) {
        crate::log!(
            "domain {domid} ({}): no room in the scheduler ({e}); destroying it",
            spec.name
        );
        crate::scheduler::begin_shutdown(
            slot,
            ShutdownReason::Crash,
            Some(LifecycleAction::Destroy),
        );
        return Err(BuildError::OutOfMemory);
    }
    notify_services();
    Ok(domid)
}

/// A fresh nested page table with RAM at guest-physical `0..ram_bytes` (zeroed frames).
struct Ram {
    npt: NestedPageTable,
    frames: u64,
    reused: u64,
    lowest: u64,
    highest: u64,
}

fn alloc_ram(ram_bytes: u64) -> Result<Ram, BuildError> {
    let mut npt = NestedPageTable::new().map_err(|_| BuildError::OutOfMemory)?;
    let (mut frames, mut reused) = (0u64, 0u64);
    let (mut lowest, mut highest) = (u64::MAX, 0u64);
    let mut gpa = 0;
    while gpa < ram_bytes {
        let Some((hpa, was_reused)) = mem::alloc() else {
            npt.destroy();
            return Err(BuildError::OutOfMemory);
        };
        frames += 1;
        reused += u64::from(was_reused);
        lowest = lowest.min(hpa);
        highest = highest.max(hpa + PAGE_SIZE);
        if npt.map(gpa, hpa, true, true).is_err() {
            mem::free(hpa);
            npt.destroy();
            return Err(BuildError::OutOfMemory);
        }
        gpa += PAGE_SIZE;
    }
    Ok(Ram {
        npt,
        frames,
        reused,
        lowest,
        highest,
    })
}

/// Serializes the control domain's creations (name check and slot choice).
static CREATING: Mutex<()> = Mutex::new(());
/// Per slot: held while the control domain loads a domain it builds, sets its entry, or
/// first unpauses it, so none of those interleave.
static BUILDING: [Mutex<()>; MAX_DOMAINS] = [const { Mutex::new(()) }; MAX_DOMAINS];

/// `MVOP_DOMCTL_CREATE`: an empty, paused domain for the control domain to build: zeroed
/// RAM, an empty ACPI page, its vCPUs (down), and its xenstore and console rings. Created
/// domains take the table slots after the boot manifest's (those stay for the manifest's
/// own restarts).
pub fn create(args: &microvisor_abi::domctl::CreateArgs) -> Result<u16, i64> {
    use microvisor_abi::errno::{EEXIST, EINVAL, ENOMEM, ENOSPC};
    let name = args.name_str().ok_or(EINVAL)?;
    let ram_bytes = u64::from(args.memory_mib) << 20;
    if args.vcpus == 0
        || args.vcpus > MAX_VCPUS_PER_DOMAIN as u32
        || args.memory_mib < 2
        || ram_bytes > ACPI_GPA
    {
        return Err(EINVAL);
    }
    let _creating = CREATING.lock();
    let first = MANIFEST.get().map_or(0, |m| m.domains.len());
    let slot = {
        let table = DOMAINS.lock();
        if table.iter().flatten().any(|d| d.name.as_str() == name) {
            return Err(EEXIST);
        }
        (first..MAX_DOMAINS)
            .find(|&slot| table[slot].is_none() && !crate::scheduler::is_dying(slot))
            .ok_or(ENOSPC)?
    };
    let Ram {
        mut npt,
        frames,
        lowest,
        highest,
        ..
    } = alloc_ram(ram_bytes).map_err(|_| ENOMEM)?;
    if map_acpi_page(&mut npt, &[0; PAGE_SIZE as usize]).is_err() {
        npt.destroy();
        return Err(ENOMEM);
    }
    let domid = next_domid();
    crate::stats::reset_domain(slot);
    let mut hvm_params = [0; microvisor_abi::hvm::HVM_NR_PARAMS as usize];
    match connect_services(slot, domid, None, args.vcpus, &mut npt, &mut hvm_params) {
        Ok(_) => {}
        Err(_) => {
            vcpu::destroy_all(slot);
            let _ = crate::grants::destroy_domain(slot, domid);
            crate::events::destroy_domain(slot, domid);
            npt.destroy();
            return Err(ENOMEM);
        }
    }
    crate::log!(
        "domain {domid} ({name}) created paused by the control domain: {frames} frames, {} vcpus, RAM in host memory {lowest:#x}..{highest:#x}",
        args.vcpus
    );
    let name_owned = String::try_from(name).map_err(|_| EINVAL)?;
    DOMAINS.lock()[slot] = Some(Domain::new(
        domid, name_owned, args.vcpus, ram_bytes, npt, hvm_params,
    ));
    if crate::scheduler::add_domain(slot, args.vcpus, true).is_err() {
        crate::log!(
            "domain {domid} ({name}): no room in the scheduler for {} vcpus; destroying it",
            args.vcpus
        );
        crate::scheduler::begin_shutdown(
            slot,
            ShutdownReason::Crash,
            Some(LifecycleAction::Destroy),
        );
        return Err(ENOSPC);
    }
    notify_services();
    Ok(domid)
}

/// `MVOP_DOMCTL_LOAD`, one piece within a page: writes `bytes` at `gpa` of a created domain
/// that was never unpaused, into its RAM or its ACPI page.
pub fn load(slot: usize, gpa: u64, bytes: &[u8]) -> Result<(), i64> {
    use microvisor_abi::errno::{EFAULT, EPERM, ESRCH};
    let _building = BUILDING[slot].lock();
    let table = DOMAINS.lock();
    let d = table[slot].as_ref().ok_or(ESRCH)?;
    if d.sealed || d.spec_index.is_some() {
        return Err(EPERM);
    }
    let end = gpa.checked_add(bytes.len() as u64).ok_or(EFAULT)?;
    let in_ram = end <= d.ram_bytes;
    let in_acpi = gpa >= ACPI_GPA && end <= ACPI_GPA + PAGE_SIZE;
    if !(in_ram || in_acpi) || gpa / PAGE_SIZE != (end - 1) / PAGE_SIZE {
        return Err(EFAULT);
    }
    let hpa = d.npt.translate(gpa).ok_or(EFAULT)?;
    mem::write_phys(hpa, bytes);
    Ok(())
}

/// `MVOP_DOMCTL_SET_ENTRY`: vCPU 0 of a created domain, never unpaused, starts at the PVH
/// `entry` with EBX = `start_info`.
pub fn set_entry(slot: usize, entry: u64, start_info: u64) -> Result<(), i64> {
    use microvisor_abi::errno::{EINVAL, EPERM, ESRCH};
    let entry = u32::try_from(entry).map_err(|_| EINVAL)?;
    let start_info = u32::try_from(start_info).map_err(|_| EINVAL)?;
    let _building = BUILDING[slot].lock();
    {
        let table = DOMAINS.lock();
        let d = table[slot].as_ref().ok_or(ESRCH)?;
        if d.sealed || d.spec_index.is_some() {
            return Err(EPERM);
        }
    }
    vcpu::set_pvh_boot_state(slot, 0, u64::from(entry), u64::from(start_info));
    if let Some(d) = DOMAINS.lock()[slot].as_mut() {
        d.has_entry = true;
    }
    Ok(())
}

/// `MVOP_DOMCTL_UNPAUSE`: the first one ends a created domain's building stage.
pub fn unpause(slot: usize) -> Result<(), i64> {
    use microvisor_abi::errno::{EINVAL, ESRCH};
    let _building = BUILDING[slot].lock();
    {
        let mut table = DOMAINS.lock();
        let d = table[slot].as_mut().ok_or(ESRCH)?;
        if d.state != DomainState::Running || !d.has_entry {
            return Err(EINVAL);
        }
        d.sealed = true;
    }
    crate::scheduler::unpause(slot);
    Ok(())
}

/// `MVOP_DOMCTL_DESTROY`: tear a domain down now, whatever its state.
pub fn destroy(slot: usize) -> Result<(), i64> {
    use microvisor_abi::errno::ESRCH;
    let preserved = {
        let mut table = DOMAINS.lock();
        let d = table[slot].as_mut().ok_or(ESRCH)?;
        match d.state {
            DomainState::Running => false,
            DomainState::Dying { reason, .. } => {
                d.state = DomainState::Dying {
                    reason,
                    action: LifecycleAction::Destroy,
                };
                return Ok(());
            }
            DomainState::Preserved => {
                d.state = DomainState::Dying {
                    reason: d.shutdown.unwrap_or(ShutdownReason::Poweroff),
                    action: LifecycleAction::Destroy,
                };
                true
            }
        }
    };
    if preserved {
        finish_shutdown(slot);
    } else {
        crate::scheduler::begin_shutdown(
            slot,
            ShutdownReason::Poweroff,
            Some(LifecycleAction::Destroy),
        );
    }
    Ok(())
}

/// Map a frame of the domain's own at [`ACPI_GPA`] holding `page` (its ACPI tables, or
/// zeros for the control domain to fill).
fn map_acpi_page(
    npt: &mut NestedPageTable,
    page: &[u8; PAGE_SIZE as usize],
) -> Result<(), BuildError> {
    let frame = mem::alloc_zeroed().ok_or(BuildError::OutOfMemory)?;
    mem::write_phys(frame, page);
    if npt.map(ACPI_GPA, frame, true, true).is_err() {
        mem::free(frame);
        return Err(BuildError::OutOfMemory);
    }
    Ok(())
}

/// The live domain built from manifest entry `index`, if any: (slot, domid).
fn service(index: Option<u8>) -> Option<(usize, u16)> {
    let index = usize::from(index?);
    let table = DOMAINS.lock();
    table.iter().enumerate().find_map(|(slot, d)| {
        d.as_ref()
            .filter(|d| d.spec_index == Some(index) && d.state == DomainState::Running)
            .map(|d| (slot, d.domid))
    })
}

/// Give a new domain its event state, vCPUs, I/O permission map, and (unless it is the
/// service itself) a xenstore ring and a console ring: a page of its own at a fixed
/// guest-physical address, granted (reserved refs 1 and 0) to the serving domain, with an
/// unbound port whose remote end is that domain, published in its HVM parameters.
fn connect_services(
    slot: usize,
    domid: u16,
    spec_index: Option<usize>,
    vcpus: u32,
    npt: &mut NestedPageTable,
    params: &mut [u64; microvisor_abi::hvm::HVM_NR_PARAMS as usize],
) -> Result<(Option<u64>, Option<u64>), BuildError> {
    use microvisor_abi::grant::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
    use microvisor_abi::hvm::*;
    let manifest = MANIFEST.get().expect("manifest decoded");
    let spec = spec_index.map(|i| &manifest.domains[i]);
    crate::events::init_domain(slot, vcpus).map_err(|_| BuildError::OutOfMemory)?;
    crate::grants::open(slot, domid);
    crate::grants::table_frame(slot, 0).map_err(|_| BuildError::OutOfMemory)?;
    let mut ports: Vec<microvisor_abi::manifest::IoPortRange, 24> = Vec::new();
    if let Some(spec) = spec {
        ports.extend(spec.ioports.iter().copied());
        ports.extend(crate::pci::io_ranges(&spec.pci));
    }
    let iopm = if ports.is_empty() {
        None
    } else {
        Some(vcpu::domain_permission_map(&ports).ok_or(BuildError::OutOfMemory)?)
    };
    for id in 0..vcpus.min(MAX_VCPUS_PER_DOMAIN as u32) {
        vcpu::create(slot, id as usize, npt.root_pa(), iopm)
            .map_err(|_| BuildError::OutOfMemory)?;
    }
    let rings = [
        (
            manifest.xenstore_domain,
            STORE_RING_GPA,
            GNTTAB_RESERVED_XENSTORE,
            HVM_PARAM_STORE_PFN,
            HVM_PARAM_STORE_EVTCHN,
        ),
        (
            manifest.console_domain,
            CONSOLE_RING_GPA,
            GNTTAB_RESERVED_CONSOLE,
            HVM_PARAM_CONSOLE_PFN,
            HVM_PARAM_CONSOLE_EVTCHN,
        ),
    ];
    for (role, gpa, gref, pfn_param, port_param) in rings {
        if role.map(usize::from) == spec_index && spec_index.is_some() {
            continue;
        }
        let Some((_, server)) = service(role) else {
            continue;
        };
        let frame = mem::alloc_zeroed().ok_or(BuildError::OutOfMemory)?;
        if npt.map(gpa, frame, true, true).is_err() {
            mem::free(frame);
            return Err(BuildError::OutOfMemory);
        }
        let port = crate::events::EVENTS[slot]
            .lock()
            .ports
            .alloc_unbound(server)
            .map_err(|_| BuildError::OutOfMemory)?;
        crate::grants::write_reserved(slot, gref, server, gpa / PAGE_SIZE)
            .map_err(|_| BuildError::OutOfMemory)?;
        params[pfn_param as usize] = gpa / PAGE_SIZE;
        params[port_param as usize] = u64::from(port);
    }
    let dma_table = match spec {
        Some(spec) => {
            let ram_bytes = u64::from(spec.memory_mib) << 20;
            crate::pci::assign(slot, &spec.pci, npt, ram_bytes).map_err(BuildError::Pci)?
        }
        None => None,
    };
    Ok((iopm, dma_table))
}

/// Whether manifest domain `spec_index` is the console service domain.
pub fn is_console_service(spec_index: Option<usize>) -> bool {
    MANIFEST
        .get()
        .is_some_and(|m| spec_index.is_some() && m.console_domain.map(usize::from) == spec_index)
}

/// Whether the domain in `slot` is the control domain.
pub fn is_control(slot: usize) -> bool {
    let manifest = MANIFEST.get().expect("manifest decoded");
    let index = DOMAINS.lock()[slot].as_ref().and_then(|d| d.spec_index);
    index.is_some() && manifest.control_domain.map(usize::from) == index
}

/// Tell the service domains and the control domain the set of domains changed
/// (VIRQ_DOMAIN_CHANGE).
pub fn notify_services() {
    let manifest = MANIFEST.get().expect("manifest decoded");
    for role in [
        manifest.xenstore_domain,
        manifest.console_domain,
        manifest.control_domain,
    ] {
        if let Some((slot, _)) = service(role) {
            crate::events::raise_virq(slot, microvisor_abi::microvisor_op::VIRQ_DOMAIN_CHANGE, 0);
        }
    }
}

/// Whether the domain in `slot` serves xenstore and/or consoles: (store, console).
pub fn roles_of(slot: usize) -> (bool, bool) {
    let manifest = MANIFEST.get().expect("manifest decoded");
    let Some(index) = DOMAINS.lock()[slot].as_ref().and_then(|d| d.spec_index) else {
        return (false, false);
    };
    (
        manifest.xenstore_domain.map(usize::from) == Some(index),
        manifest.console_domain.map(usize::from) == Some(index),
    )
}

fn copy_into_guest(npt: &NestedPageTable, gpa: u64, bytes: &[u8]) {
    let mut done = 0usize;
    while done < bytes.len() {
        let at = gpa + done as u64;
        let in_page = (PAGE_SIZE - (at % PAGE_SIZE)) as usize;
        let chunk = in_page.min(bytes.len() - done);
        let hpa = npt
            .translate(at)
            .expect("the builder checked the range lies in RAM");
        mem::write_phys(hpa, &bytes[done..done + chunk]);
        done += chunk;
    }
}

/// Teardowns under way: the machine must not power off while one is still scrubbing.
static TEARDOWNS: AtomicU32 = AtomicU32::new(0);

/// Tear a dying domain down (no vCPU of it runs anywhere) and apply its lifecycle action.
pub fn finish_shutdown(slot: usize) {
    TEARDOWNS.fetch_add(1, Ordering::AcqRel);
    tear_down(slot);
    TEARDOWNS.fetch_sub(1, Ordering::AcqRel);
    check_all_gone();
}

/// Whether manifest entry `spec_index` keeps its domain id when it restarts: the service
/// domains do (see [`Lineage::domid`]).
fn keeps_id(spec_index: usize) -> bool {
    MANIFEST.get().is_some_and(|m| m.is_service(spec_index))
}

/// Whether a domain in this state will be rebuilt under its own id.
pub fn restarting(d: &Domain) -> bool {
    matches!(
        d.state,
        DomainState::Dying {
            action: LifecycleAction::Restart,
            ..
        }
    ) && d.spec_index.is_some_and(keeps_id)
        && !d.lineage.given_up
}

fn tear_down(slot: usize) {
    let Some(mut domain) = ({
        let mut table = DOMAINS.lock();
        if let Some(d) = table[slot].as_ref().filter(|d| restarting(d)) {
            REBUILDING[slot].store(u32::from(d.domid) + 1, Ordering::Release);
        }
        table[slot].take()
    }) else {
        return;
    };
    let DomainState::Dying { reason, action } = domain.state else {
        DOMAINS.lock()[slot] = Some(domain);
        return;
    };
    crate::log!(
        "domain {} ({}) shut down: {} -> {}",
        domain.domid,
        domain.name,
        reason.name(),
        action_name(action)
    );
    domain.shutdown = Some(reason);
    if action == LifecycleAction::Preserve {
        domain.state = DomainState::Preserved;
        DOMAINS.lock()[slot] = Some(domain);
        notify_services();
        return;
    }
    vcpu::destroy_all(slot);
    // Devices first: no DMA may reach the frames once they are scrubbed and reused.
    crate::pci::release(slot);
    if let Some(table) = domain.dma_table {
        crate::iommu::destroy_domain_table(table);
    }
    let revoked = crate::grants::destroy_domain(slot, domain.domid);
    crate::events::destroy_domain(slot, domain.domid);
    for &frame in &domain.displaced {
        mem::free(frame);
    }
    if let Some(iopm) = domain.iopm {
        for page in 0..3 {
            mem::free(iopm + page * PAGE_SIZE);
        }
    }
    crate::stats::log_domain(slot, domain.domid, &domain.name);
    let released = domain.npt.destroy() + domain.displaced.len() as u64;
    crate::log!(
        "domain {} ({}) destroyed: {released} frames scrubbed, {revoked} grant mappings of it revoked",
        domain.domid,
        domain.name
    );
    if let (LifecycleAction::Restart, Some(spec_index)) = (action, domain.spec_index) {
        let now = crate::time::now_ns();
        let keep = keeps_id(spec_index).then_some(domain.domid);
        let next = if domain.lineage.given_up {
            None
        } else {
            match domain.lineage.next(keep, now) {
                Some(lineage) => Some(lineage),
                // A restart loop. A service domain is rebuilt once more, told it was given up
                // on, so that it answers what its peers wait for with errors and closes their
                // devices (they fail instead of hanging); anything else, or that last instance
                // stopping, is destroyed.
                None if keep.is_some() => {
                    crate::log!(
                        "domain {} ({}) restarted more than {RESTART_BURST} times in {} s: given up; rebuilt once more to fail its devices ({})",
                        domain.domid,
                        domain.name,
                        RESTART_WINDOW_NS / 1_000_000_000,
                        GIVEN_UP_ARG.trim()
                    );
                    Some(Lineage {
                        given_up: true,
                        ..domain.lineage
                    })
                }
                None => None,
            }
        };
        let restarted = match next {
            None => {
                crate::log!(
                    "domain {} ({}) {}: not restarted",
                    domain.domid,
                    domain.name,
                    if domain.lineage.given_up {
                        "stopped after it was given up on"
                    } else {
                        "restarted too often (given up)"
                    }
                );
                false
            }
            Some(lineage) => match build(slot, spec_index, lineage) {
                Ok(new_domid) => {
                    crate::log!(
                        "domain {} ({}) restarted as domain {new_domid} (restart {}, at {} ns)",
                        domain.domid,
                        domain.name,
                        domain.lineage.restarts + 1,
                        crate::time::now_ns()
                    );
                    true
                }
                Err(why) => {
                    crate::log!(
                        "domain {} ({}) cannot restart: {why}",
                        domain.domid,
                        domain.name
                    );
                    false
                }
            },
        };
        REBUILDING[slot].store(0, Ordering::Release);
        if restarted {
            return;
        }
    }
    notify_services();
}

/// Frames in use before any domain was built (microvisor tables); what is allocated beyond
/// this belongs to domains.
pub static BASELINE_FRAMES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Power off once no domain is left running.
///
/// Service domains (the xenstore and console domains of the manifest) are infrastructure:
/// once every other domain is gone they have nobody to serve, and the machine powers off.
pub fn check_all_gone() {
    let manifest = MANIFEST.get().expect("manifest decoded");
    let is_service = |d: &Domain| d.spec_index.is_some_and(|i| manifest.is_service(i));
    let has_guests = (0..manifest.domains.len()).any(|i| !manifest.is_service(i));
    let table = DOMAINS.lock();
    let running = table
        .iter()
        .flatten()
        .filter(|d| d.state != DomainState::Preserved && !(has_guests && is_service(d)))
        .count();
    let preserved = table
        .iter()
        .flatten()
        .filter(|d| d.state == DomainState::Preserved)
        .count();
    let services = table
        .iter()
        .flatten()
        .filter(|d| d.state != DomainState::Preserved && is_service(d))
        .count();
    drop(table);
    if running == 0 && TEARDOWNS.load(Ordering::Acquire) == 0 && services > 0 && has_guests {
        static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            crate::log!("every guest domain is gone; stopping the service domains");
        }
        let slots: Vec<usize, MAX_DOMAINS> = DOMAINS
            .lock()
            .iter()
            .enumerate()
            .filter_map(|(slot, d)| {
                d.as_ref()
                    .filter(|d| d.state == DomainState::Running && is_service(d))
                    .map(|_| slot)
            })
            .collect();
        for slot in slots {
            crate::scheduler::shutdown_domain(slot, ShutdownReason::Poweroff);
        }
        return;
    }
    if running == 0 && TEARDOWNS.load(Ordering::Acquire) == 0 {
        if preserved == 0 {
            crate::log!("all domains gone, powering off");
        } else {
            crate::log!("no domain left running ({preserved} preserved), powering off");
        }
        let held = mem::allocated_frames().saturating_sub(BASELINE_FRAMES.load(Ordering::Relaxed));
        crate::log!(
            "{} vm exits, {} hypercalls, {} preemptions; {held} frames still held by domains",
            crate::stats::VM_EXITS.load(Ordering::Relaxed),
            crate::stats::HYPERCALLS.load(Ordering::Relaxed),
            crate::stats::PREEMPTIONS.load(Ordering::Relaxed),
        );
        crate::arch::machine_exit(crate::arch::ExitCode::PowerOff);
    }
}

/// Called when a domain's vCPU 0 enters the guest for the first time.
pub fn first_entry(slot: usize) {
    let boot_domain = DOMAINS.lock()[slot]
        .as_ref()
        .is_some_and(|d| d.spec_index.is_some());
    if !boot_domain {
        return;
    }
    let before =
        NOT_YET_RUNNING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    if before == Ok(1) {
        let count = MANIFEST.get().map_or(0, |m| m.domains.len());
        crate::log!("all {count} domains running");
    }
}

/// Map a frame the microvisor owns (shared info, a grant-table frame) at `gpa` in the domain,
/// in place of whatever was there. A displaced RAM frame stays the domain's until teardown.
pub fn map_special_frame(slot: usize, gpa: u64, frame: u64) -> Result<(), i64> {
    let mut table = DOMAINS.lock();
    let domain = table[slot].as_mut().ok_or(microvisor_abi::errno::EINVAL)?;
    if domain.npt.translate(gpa) == Some(frame) {
        return Ok(());
    }
    if domain.displaced.is_full() {
        return Err(microvisor_abi::errno::ENOMEM);
    }
    if let Some((old, owned)) = domain.npt.unmap(gpa) {
        if owned {
            let _ = domain.displaced.push(old);
        }
    }
    domain
        .npt
        .map(gpa, frame, true, false)
        .map_err(|_| microvisor_abi::errno::ENOMEM)
}
