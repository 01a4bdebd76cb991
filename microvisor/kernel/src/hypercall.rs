//! Hypercall dispatch: `VMMCALL` with the number in RAX and arguments in RDI, RSI, RDX, R10,
//! R8 (Xen's 64-bit convention). The interface is specified in `microvisor/HYPERCALLS.md`.
//!
//! Every pointer is a guest-virtual address, translated through the caller's own page tables
//! and then its nested page table, and copied in or out; a pointer that does not translate
//! gives `-EFAULT`. Unknown hypercalls and sub-ops give `-ENOSYS`. Nothing here can fault the
//! microvisor: all guest memory access is bounds-checked copies.
//!
//! An argument struct is read once, whole, with [`Caller::read_arg`] and decoded by
//! `microvisor_core::guest_arg`; only that copy is checked and used, and only output fields
//! are written back ([`Caller::write_field`]), so another vCPU rewriting the struct during
//! the call changes nothing (no double fetch).

use core::sync::atomic::Ordering;

use microvisor_abi::errno::{EBUSY, EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM};
use microvisor_abi::hypercall as nr;
use microvisor_abi::microvisor_op::{DomainInfo, MVOP_DOMAIN_INFO};
use microvisor_abi::sched::*;
use microvisor_abi::vcpu::*;
use microvisor_abi::version::*;
use microvisor_core::guest_arg::{self, GuestArg};

use crate::domain::{DomainView, ShutdownReason};
use crate::guestmem::{GuestAccess, GuestMemory};
use crate::npt::NptView;
use crate::vcpu::Vcpu;

/// What the vCPU does after the hypercall.
pub enum Action {
    /// Return this value in RAX and continue.
    Return(i64),
    /// RAX = 0, then give up the CPU.
    Yield,
    /// RAX = 0, then sleep until the vCPU's timer (or forever without one).
    Block,
    /// The domain shuts down.
    Shutdown(ShutdownReason),
    /// This vCPU goes down (RAX = 0 if it is brought up again).
    Down,
}

pub struct Caller<'a> {
    pub slot: usize,
    pub vcpu_id: usize,
    pub vcpu: &'a mut Vcpu,
    pub domain: DomainView,
}

impl Caller<'_> {
    fn access(&self) -> GuestAccess {
        GuestAccess {
            memory: GuestMemory::new(NptView::from_root(self.domain.npt_root)),
            mode: crate::guestmem::paging_mode(self.vcpu.vmcb),
        }
    }

    /// Copies the argument struct at `gva` out of the guest, once, and decodes the copy.
    pub fn read_arg<T: GuestArg>(&self, gva: u64) -> Result<T, i64> {
        self.access().read_arg(gva).map_err(|_| EFAULT)
    }

    /// Copies `buf.len()` bytes at `gva` out of the guest, once.
    pub fn read_bytes(&self, gva: u64, buf: &mut [u8]) -> Result<(), i64> {
        self.access().read(gva, buf).map_err(|_| EFAULT)
    }

    pub fn write_bytes(&self, gva: u64, bytes: &[u8]) -> Result<(), i64> {
        self.access().write(gva, bytes).map_err(|_| EFAULT)
    }

    /// Writes one output field, at `offset` in the struct at `gva` (the inputs are left as
    /// the guest has them now).
    pub fn write_field(&self, gva: u64, offset: usize, bytes: &[u8]) -> Result<(), i64> {
        self.write_bytes(gva.checked_add(offset as u64).ok_or(EFAULT)?, bytes)
    }
}

pub fn dispatch(caller: &mut Caller, number: u64, args: [u64; 5]) -> Action {
    crate::stats::count_hypercall(caller.slot, number);
    let result = match number {
        nr::CONSOLE_IO => console_io(caller, args),
        nr::XEN_VERSION => xen_version(caller, args),
        nr::SCHED_OP => return sched_op(caller, args),
        nr::VCPU_OP => return vcpu_op(caller, args),
        nr::MICROVISOR_OP => microvisor_op(caller, args),
        nr::EVENT_CHANNEL_OP => crate::hc_events::event_channel_op(caller, args),
        nr::HVM_OP => crate::hc_events::hvm_op(caller, args),
        nr::MEMORY_OP => memory_op(caller, args),
        nr::GRANT_TABLE_OP => crate::hc_grants::grant_table_op(caller, args),
        _ => Err(ENOSYS),
    };
    Action::Return(result.unwrap_or_else(|e| e))
}

fn console_io(caller: &mut Caller, [cmd, count, buf, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
        nr::CONSOLEIO_WRITE => {
            if count > nr::CONSOLEIO_MAX_BYTES {
                return Err(EINVAL);
            }
            let mut bytes = [0u8; nr::CONSOLEIO_MAX_BYTES as usize];
            let bytes = &mut bytes[..count as usize];
            caller.read_bytes(buf, bytes)?;
            crate::console::write(caller.slot, bytes);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

fn xen_version(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
        XENVER_VERSION => Ok(i64::from(VERSION_MAJOR << 16 | VERSION_MINOR)),
        XENVER_EXTRAVERSION => caller.write_bytes(arg, EXTRAVERSION).map(|()| 0),
        XENVER_CAPABILITIES => {
            let mut text = [0u8; 1024];
            text[..CAPABILITIES.len()].copy_from_slice(CAPABILITIES);
            caller.write_bytes(arg, &text).map(|()| 0)
        }
        XENVER_GET_FEATURES => {
            let info: XenFeatureInfo = caller.read_arg(arg)?;
            let submap = if info.submap_idx == 0 {
                FEATURES_SUBMAP0
            } else {
                0
            };
            caller
                .write_field(arg, guest_arg::FEATURE_SUBMAP_OFFSET, &submap.to_le_bytes())
                .map(|()| 0)
        }
        XENVER_PAGESIZE => Ok(4096),
        _ => Err(ENOSYS),
    }
}

fn sched_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Action {
    match cmd {
        SCHEDOP_YIELD => Action::Yield,
        SCHEDOP_POLL => match poll(caller, arg) {
            Ok(true) => Action::Return(0),
            Ok(false) => Action::Yield,
            Err(e) => Action::Return(e),
        },
        SCHEDOP_BLOCK => Action::Block,
        SCHEDOP_SHUTDOWN => {
            let request: SchedShutdown = match caller.read_arg(arg) {
                Ok(request) => request,
                Err(e) => return Action::Return(e),
            };
            match request.reason {
                SHUTDOWN_POWEROFF => Action::Shutdown(ShutdownReason::Poweroff),
                SHUTDOWN_REBOOT => Action::Shutdown(ShutdownReason::Reboot),
                SHUTDOWN_CRASH | SHUTDOWN_WATCHDOG => Action::Shutdown(ShutdownReason::Crash),
                _ => Action::Return(EINVAL),
            }
        }
        _ => Action::Return(ENOSYS),
    }
}

/// `SCHEDOP_poll`: whether one of the named ports is pending (masked or not). When none
/// is, the vCPU yields and the call returns 0, a wake-up the caller must tolerate (Xen's
/// poll may also return early; Linux's PV spinlocks re-check their lock).
fn poll(caller: &mut Caller, arg: u64) -> Result<bool, i64> {
    let request: guest_arg::SchedPoll = caller.read_arg(arg)?;
    let mut ports = [0u8; guest_arg::POLL_PORTS_MAX_BYTES];
    let ports = &mut ports[..request.ports_bytes()?];
    caller.read_bytes(request.ports_gva, ports)?;
    let shared = crate::events::EVENTS[caller.slot].lock().shared_info_hpa;
    for port in guest_arg::poll_ports(ports) {
        if port as usize >= microvisor_core::evtchn::MAX_PORTS {
            return Err(EINVAL);
        }
        let mut byte = [0u8];
        let offset =
            microvisor_abi::evtchn::shared_info::EVTCHN_PENDING as u64 + u64::from(port / 8);
        crate::mem::read_phys_once(shared + offset, &mut byte);
        if byte[0] & (1 << (port % 8)) != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn vcpu_op(caller: &mut Caller, [cmd, target, arg, ..]: [u64; 5]) -> Action {
    if target >= u64::from(caller.domain.vcpus) {
        return Action::Return(ENOENT);
    }
    let target = target as usize;
    let is_self = target == caller.vcpu_id;
    let result = match cmd {
        VCPUOP_INITIALISE => initialise(caller, target, arg),
        VCPUOP_UP => {
            if is_self {
                Ok(0)
            } else {
                match crate::vcpu::slot_lock(caller.slot, target).try_lock() {
                    None => Err(EBUSY),
                    Some(guard) if !guard.as_ref().is_some_and(|v| v.initialised) => Err(EINVAL),
                    Some(_) => {
                        crate::scheduler::vcpu_up(caller.slot, target);
                        Ok(0)
                    }
                }
            }
        }
        VCPUOP_DOWN if is_self => return Action::Down,
        VCPUOP_DOWN => Err(EPERM),
        VCPUOP_IS_UP => Ok(i64::from(crate::scheduler::vcpu_is_up(caller.slot, target))),
        VCPUOP_STOP_PERIODIC_TIMER => Ok(0),
        // Accepted, not kept up to date: Linux reads zeros as "no steal time".
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => register_runstate(caller, arg),
        VCPUOP_SET_SINGLESHOT_TIMER if is_self => set_singleshot(caller, arg),
        VCPUOP_STOP_SINGLESHOT_TIMER if is_self => {
            crate::vcpu::timer(caller.slot, target).store(0, Ordering::Relaxed);
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER | VCPUOP_STOP_SINGLESHOT_TIMER => Err(EINVAL),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA if is_self => register_time_area(caller, arg),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => Err(EINVAL),
        VCPUOP_REGISTER_VCPU_INFO => register_vcpu_info(caller, target, arg),
        _ => Err(ENOSYS),
    };
    Action::Return(result.unwrap_or_else(|e| e))
}

/// The area's address must translate (for writing) now; it is accepted but not kept up to
/// date, which Linux reads as "no steal time".
fn register_runstate(caller: &mut Caller, arg: u64) -> Result<i64, i64> {
    let gva = caller
        .read_arg::<guest_arg::RegisterRunstateArea>(arg)?
        .addr_gva;
    if gva != 0 {
        caller
            .access()
            .translate(gva, microvisor_core::pagewalk::Access::Write)
            .map_err(|_| EFAULT)?;
    }
    Ok(0)
}

fn initialise(caller: &mut Caller, target: usize, arg: u64) -> Result<i64, i64> {
    if target == caller.vcpu_id || crate::scheduler::vcpu_is_up(caller.slot, target) {
        return Err(EEXIST);
    }
    let ctx: VcpuHvmContext = caller.read_arg(arg)?;
    if ctx.mode != VCPU_HVM_MODE_64B {
        return Err(EINVAL);
    }
    let mut guard = crate::vcpu::slot_lock(caller.slot, target)
        .try_lock()
        .ok_or(EBUSY)?;
    let vcpu = guard.as_mut().ok_or(ENOENT)?;
    crate::vcpu::set_hvm64_state(vcpu, &ctx).map_err(|_| EINVAL)?;
    Ok(0)
}

fn set_singleshot(caller: &mut Caller, arg: u64) -> Result<i64, i64> {
    let timer: VcpuSetSingleshotTimer = caller.read_arg(arg)?;
    let deadline = timer.timeout_abs_ns;
    if timer.flags & VCPU_SSHOTTMR_FUTURE != 0 && deadline <= crate::time::now_ns() {
        return Err(ETIME);
    }
    crate::vcpu::timer(caller.slot, caller.vcpu_id).store(deadline.max(1), Ordering::Relaxed);
    Ok(0)
}

fn register_time_area(caller: &mut Caller, arg: u64) -> Result<i64, i64> {
    let gva = caller.read_arg::<VcpuRegisterTimeMemoryArea>(arg)?.addr_gva;
    guest_arg::check_time_area(gva)?;
    let access = caller.access();
    let gpa = access
        .translate(gva, microvisor_core::pagewalk::Access::Write)
        .map_err(|_| EFAULT)?;
    caller.vcpu.time_area_gpa = Some(gpa);
    crate::time::publish_vcpu_time(caller.domain.npt_root, gpa).map_err(|()| EFAULT)?;
    Ok(0)
}

/// `VCPUOP_register_vcpu_info`: move a vCPU's `vcpu_info` to a guest frame (gfn + offset,
/// 8-byte aligned, inside one page). Once per vCPU, as in Xen. The old contents are copied and
/// a rescan is forced (`pending_sel` all ones, `upcall_pending` set).
fn register_vcpu_info(caller: &mut Caller, target: usize, arg: u64) -> Result<i64, i64> {
    use microvisor_abi::evtchn::{shared_info, vcpu_info};
    let gpa = caller.read_arg::<guest_arg::RegisterVcpuInfo>(arg)?.gpa()?;
    let view = crate::npt::NptView::from_root(caller.domain.npt_root);
    // Only the domain's own RAM may hold it: not a shared-info or grant-table frame (the
    // microvisor's, freed at teardown before the event state is reset) placed over RAM with
    // add_to_physmap, and not a foreign frame mapped by grant.
    let hpa = view
        .translate_owned(gpa)
        .filter(|_| view.is_writable(gpa))
        .ok_or(EINVAL)?;
    if gpa >= caller.domain.ram_bytes {
        return Err(EINVAL);
    }
    let mut events = crate::events::EVENTS[caller.slot].lock();
    let shared = events.shared_info_hpa;
    let default = shared + (shared_info::VCPU_INFO + target * shared_info::VCPU_INFO_SIZE) as u64;
    let current = events.vcpu_info_hpa[target];
    if current != 0 && current != default {
        return Err(EBUSY);
    }
    let mut old = [0u8; vcpu_info::SIZE];
    if current != 0 {
        crate::mem::read_phys(current, &mut old);
    } else {
        old[vcpu_info::TIME..vcpu_info::TIME + 32].copy_from_slice(&[0; 32]);
    }
    crate::mem::write_phys(hpa, &old);
    crate::time::write_vcpu_time_hpa(hpa + vcpu_info::TIME as u64);
    crate::mem::write_phys(hpa + vcpu_info::PENDING_SEL as u64, &u64::MAX.to_le_bytes());
    crate::mem::write_phys(hpa + vcpu_info::UPCALL_PENDING as u64, &[1]);
    events.vcpu_info_hpa[target] = hpa;
    Ok(0)
}

/// `memory_op`: only `XENMEM_add_to_physmap` for the shared-info page and grant-table frames.
fn memory_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    use microvisor_abi::hvm::*;
    if cmd != XENMEM_ADD_TO_PHYSMAP {
        return Err(ENOSYS);
    }
    let request: guest_arg::AddToPhysmap = caller.read_arg(arg)?;
    request.check(caller.domain.domid)?;
    let frame = match request.space {
        XENMAPSPACE_SHARED_INFO if request.idx == 0 => {
            crate::events::EVENTS[caller.slot].lock().shared_info_hpa
        }
        XENMAPSPACE_GRANT_TABLE => crate::grants::table_frame(caller.slot, request.idx)?,
        _ => return Err(EINVAL),
    };
    crate::domain::map_special_frame(caller.slot, request.gpfn * 4096, frame)?;
    Ok(0)
}

/// `MVOP_LIST_DOMAINS`: the live domains, for the xenstore and console service domains.
fn list_domains(caller: &mut Caller, array: u64, count: u64) -> Result<i64, i64> {
    use microvisor_abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_STORE_EVTCHN};
    use microvisor_abi::microvisor_op::*;
    let (store, console) = crate::domain::roles_of(caller.slot);
    if !store && !console {
        return Err(EPERM);
    }
    let mut entries: heapless::Vec<[u8; DOMAIN_ENTRY_SIZE], { crate::domain::MAX_DOMAINS }> =
        heapless::Vec::new();
    let table = crate::domain::DOMAINS.lock();
    for (slot, d) in table.iter().enumerate() {
        let Some(d) = d else {
            // A service domain being rebuilt under its id: listed as dying and restarting
            // (no ports), so its servers keep its entries for the next instance.
            let rebuilding =
                crate::domain::REBUILDING[slot].load(core::sync::atomic::Ordering::Acquire);
            if let Ok(domid) = u16::try_from(rebuilding.wrapping_sub(1)) {
                let mut e = [0u8; DOMAIN_ENTRY_SIZE];
                e[0..2].copy_from_slice(&domid.to_le_bytes());
                e[2..4]
                    .copy_from_slice(&(DOMAIN_FLAG_DYING | DOMAIN_FLAG_RESTARTING).to_le_bytes());
                let _ = entries.push(e);
            }
            continue;
        };
        let mut e = [0u8; DOMAIN_ENTRY_SIZE];
        let mut flags = 0u16;
        if d.state != crate::domain::DomainState::Running {
            flags |= DOMAIN_FLAG_DYING;
        }
        if crate::domain::restarting(d) {
            flags |= DOMAIN_FLAG_RESTARTING;
        }
        if d.domid == caller.domain.domid {
            flags |= DOMAIN_FLAG_SELF;
        }
        let control = crate::domain::MANIFEST
            .get()
            .and_then(|m| m.control_domain)
            .map(usize::from);
        if d.spec_index.is_some() && d.spec_index == control {
            flags |= DOMAIN_FLAG_CONTROL;
        }
        e[0..2].copy_from_slice(&d.domid.to_le_bytes());
        e[2..4].copy_from_slice(&flags.to_le_bytes());
        let store_port = if store {
            d.hvm_params[HVM_PARAM_STORE_EVTCHN as usize] as u32
        } else {
            0
        };
        let console_port = if console {
            d.hvm_params[HVM_PARAM_CONSOLE_EVTCHN as usize] as u32
        } else {
            0
        };
        e[4..8].copy_from_slice(&store_port.to_le_bytes());
        e[8..12].copy_from_slice(&console_port.to_le_bytes());
        e[12..16].copy_from_slice(&d.instance.to_le_bytes());
        let name = d.name.as_bytes();
        e[16..16 + name.len().min(31)].copy_from_slice(&name[..name.len().min(31)]);
        let _ = entries.push(e);
    }
    drop(table);
    let written = entries.len().min(count as usize);
    for (i, e) in entries.iter().take(written).enumerate() {
        caller.write_bytes(
            array
                .checked_add((i * DOMAIN_ENTRY_SIZE) as u64)
                .ok_or(EFAULT)?,
            e,
        )?;
    }
    Ok(written as i64)
}

fn microvisor_op(caller: &mut Caller, [cmd, arg, count, extra @ ..]: [u64; 5]) -> Result<i64, i64> {
    if crate::hc_domctl::is_domctl(cmd) {
        return crate::hc_domctl::domctl(caller, cmd, [arg, count, extra[0], extra[1]]);
    }
    match cmd {
        microvisor_abi::microvisor_op::MVOP_LIST_DOMAINS => list_domains(caller, arg, count),
        microvisor_abi::microvisor_op::MVOP_PCI_LIST => {
            const SIZE: usize = microvisor_abi::microvisor_op::PCI_FUNCTION_ENTRY_SIZE;
            let mut entries = [[0u8; SIZE]; 8];
            let n = crate::pci::list(caller.slot, &mut entries).min(count as usize);
            for (i, entry) in entries.iter().take(n).enumerate() {
                caller.write_bytes(arg.checked_add((i * SIZE) as u64).ok_or(EFAULT)?, entry)?;
            }
            Ok(n as i64)
        }
        microvisor_abi::microvisor_op::MVOP_PCI_CONFIG_READ => {
            crate::pci::config_read(caller.slot, arg, count, extra[0])
        }
        microvisor_abi::microvisor_op::MVOP_PCI_CONFIG_WRITE => {
            crate::pci::config_write(caller.slot, arg, count, extra[0], extra[1])
        }
        microvisor_abi::microvisor_op::MVOP_PCI_BIND_MSIX => {
            crate::pci::bind_msix(caller.slot, arg, count, extra[0])
        }
        microvisor_abi::microvisor_op::MVOP_DOMAIN_STATS => {
            let c = &crate::stats::PER_DOMAIN[caller.slot];
            let mut bytes = [0u8; 24];
            bytes[0..8].copy_from_slice(&c.hypercalls.load(Ordering::Relaxed).to_le_bytes());
            bytes[8..16].copy_from_slice(&c.events_sent.load(Ordering::Relaxed).to_le_bytes());
            bytes[16..24].copy_from_slice(&c.vm_exits.load(Ordering::Relaxed).to_le_bytes());
            caller.write_bytes(arg, &bytes).map(|()| 0)
        }
        MVOP_DOMAIN_INFO => {
            let info = DomainInfo {
                domid: caller.domain.domid,
                restarts: caller.domain.restarts,
                vcpus: caller.domain.vcpus,
                memory_bytes: caller.domain.ram_bytes,
                ..DomainInfo::default()
            };
            let mut bytes = [0u8; 24];
            bytes[0..2].copy_from_slice(&info.domid.to_le_bytes());
            bytes[4..8].copy_from_slice(&info.restarts.to_le_bytes());
            bytes[8..12].copy_from_slice(&info.vcpus.to_le_bytes());
            bytes[16..24].copy_from_slice(&info.memory_bytes.to_le_bytes());
            caller.write_bytes(arg, &bytes).map(|()| 0)
        }
        _ => Err(ENOSYS),
    }
}
