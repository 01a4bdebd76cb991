//! Hypercall dispatch: `VMMCALL` with the number in RAX and arguments in RDI, RSI, RDX, R10,
//! R8 (Xen's 64-bit convention). The interface is specified in `microvisor/HYPERCALLS.md`.
//!
//! Every pointer is a guest-virtual address, translated through the caller's own page tables
//! and then its nested page table, and copied in or out; a pointer that does not translate
//! gives `-EFAULT`. Unknown hypercalls and sub-ops give `-ENOSYS`. Nothing here can fault the
//! microvisor: all guest memory access is bounds-checked copies.

use core::sync::atomic::Ordering;

use microvisor_abi::errno::{EFAULT, EINVAL, ENOENT, ENOSYS, EBUSY, EEXIST, EPERM};
use microvisor_abi::hypercall as nr;
use microvisor_abi::microvisor_op::{DomainInfo, MVOP_DOMAIN_INFO};
use microvisor_abi::sched::*;
use microvisor_abi::vcpu::*;
use microvisor_abi::version::*;

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

    fn read_struct<const N: usize>(&self, gva: u64) -> Result<[u8; N], i64> {
        let mut bytes = [0u8; N];
        self.access().read(gva, &mut bytes).map_err(|_| EFAULT)?;
        Ok(bytes)
    }

    fn write_bytes(&self, gva: u64, bytes: &[u8]) -> Result<(), i64> {
        self.access().write(gva, bytes).map_err(|_| EFAULT)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub fn dispatch(caller: &mut Caller, number: u64, args: [u64; 5]) -> Action {
    crate::stats::HYPERCALLS.fetch_add(1, Ordering::Relaxed);
    let result = match number {
        nr::CONSOLE_IO => console_io(caller, args),
        nr::XEN_VERSION => xen_version(caller, args),
        nr::SCHED_OP => return sched_op(caller, args),
        nr::VCPU_OP => return vcpu_op(caller, args),
        nr::MICROVISOR_OP => microvisor_op(caller, args),
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
            caller.access().read(buf, bytes).map_err(|_| EFAULT)?;
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
            let bytes: [u8; 8] = caller.read_struct(arg)?;
            let submap = if u32_at(&bytes, 0) == 0 { FEATURES_SUBMAP0 } else { 0 };
            caller.write_bytes(arg + 4, &submap.to_le_bytes()).map(|()| 0)
        }
        XENVER_PAGESIZE => Ok(4096),
        _ => Err(ENOSYS),
    }
}

fn sched_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Action {
    match cmd {
        SCHEDOP_YIELD => Action::Yield,
        SCHEDOP_BLOCK => Action::Block,
        SCHEDOP_SHUTDOWN => {
            let bytes: [u8; 4] = match caller.read_struct(arg) {
                Ok(bytes) => bytes,
                Err(e) => return Action::Return(e),
            };
            match u32_at(&bytes, 0) {
                SHUTDOWN_POWEROFF => Action::Shutdown(ShutdownReason::Poweroff),
                SHUTDOWN_REBOOT => Action::Shutdown(ShutdownReason::Reboot),
                SHUTDOWN_CRASH | SHUTDOWN_WATCHDOG => Action::Shutdown(ShutdownReason::Crash),
                _ => Action::Return(EINVAL),
            }
        }
        _ => Action::Return(ENOSYS),
    }
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
        VCPUOP_SET_SINGLESHOT_TIMER if is_self => set_singleshot(caller, arg),
        VCPUOP_STOP_SINGLESHOT_TIMER if is_self => {
            crate::vcpu::timer(caller.slot, target).store(0, Ordering::Relaxed);
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER | VCPUOP_STOP_SINGLESHOT_TIMER => Err(EINVAL),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA if is_self => register_time_area(caller, arg),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => Err(EINVAL),
        _ => Err(ENOSYS),
    };
    Action::Return(result.unwrap_or_else(|e| e))
}

fn initialise(caller: &mut Caller, target: usize, arg: u64) -> Result<i64, i64> {
    if target == caller.vcpu_id || crate::scheduler::vcpu_is_up(caller.slot, target) {
        return Err(EEXIST);
    }
    let bytes: [u8; core::mem::size_of::<VcpuHvmContext>()] = caller.read_struct(arg)?;
    let r = |i: usize| u64_at(&bytes, 8 + i * 8);
    let ctx = VcpuHvmContext {
        mode: u32_at(&bytes, 0),
        _pad: 0,
        rax: r(0),
        rcx: r(1),
        rdx: r(2),
        rbx: r(3),
        rsp: r(4),
        rbp: r(5),
        rsi: r(6),
        rdi: r(7),
        rip: r(8),
        rflags: r(9),
        cr0: r(10),
        cr3: r(11),
        cr4: r(12),
        efer: r(13),
    };
    if ctx.mode != VCPU_HVM_MODE_64B {
        return Err(EINVAL);
    }
    let mut guard = crate::vcpu::slot_lock(caller.slot, target).try_lock().ok_or(EBUSY)?;
    let vcpu = guard.as_mut().ok_or(ENOENT)?;
    crate::vcpu::set_hvm64_state(vcpu, &ctx).map_err(|_| EINVAL)?;
    Ok(0)
}

fn set_singleshot(caller: &mut Caller, arg: u64) -> Result<i64, i64> {
    let bytes: [u8; 16] = caller.read_struct(arg)?;
    let deadline = u64_at(&bytes, 0);
    let flags = u32_at(&bytes, 8);
    if flags & VCPU_SSHOTTMR_FUTURE != 0 && deadline <= crate::time::now_ns() {
        return Err(ETIME);
    }
    crate::vcpu::timer(caller.slot, caller.vcpu_id).store(deadline.max(1), Ordering::Relaxed);
    Ok(0)
}

fn register_time_area(caller: &mut Caller, arg: u64) -> Result<i64, i64> {
    let bytes: [u8; 8] = caller.read_struct(arg)?;
    let gva = u64_at(&bytes, 0);
    let size = core::mem::size_of::<VcpuTimeInfo>() as u64;
    if gva % 8 != 0 || gva % 4096 + size > 4096 {
        return Err(EINVAL);
    }
    let access = caller.access();
    let gpa = access.translate(gva, microvisor_core::pagewalk::Access::Write).map_err(|_| EFAULT)?;
    caller.vcpu.time_area_gpa = Some(gpa);
    crate::time::publish_vcpu_time(caller.domain.npt_root, gpa).map_err(|()| EFAULT)?;
    Ok(0)
}

fn microvisor_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
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
