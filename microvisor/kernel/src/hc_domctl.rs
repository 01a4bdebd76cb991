//! The domain-control operations (`MVOP_DOMCTL_*`, `abi/src/domctl.rs`): only the manifest's
//! control domain may call them; anyone else gets `-EPERM`. The logic lives in `domain.rs`
//! and `scheduler.rs`; this file checks the caller, reads the arguments once and writes the
//! answers.

use core::sync::atomic::Ordering;

use microvisor_abi::domctl::*;
use microvisor_abi::errno::{EFAULT, EINVAL, EPERM, ESRCH};

use crate::domain::{self, DomainState, ShutdownReason};
use crate::hypercall::Caller;

/// Whether `cmd` is one of the domain-control operations.
pub fn is_domctl(cmd: u64) -> bool {
    (MVOP_DOMCTL_LIST..=MVOP_DOMCTL_LAST).contains(&cmd)
}

pub fn domctl(caller: &mut Caller, cmd: u64, [a, b, c, d]: [u64; 4]) -> Result<i64, i64> {
    if !domain::is_control(caller.slot) {
        return Err(EPERM);
    }
    match cmd {
        MVOP_DOMCTL_LIST => list(caller, a, b),
        MVOP_DOMCTL_PHYSINFO => {
            let info = PhysInfo {
                cpus: crate::smp::cpu_count() as u32,
                max_domains: domain::MAX_DOMAINS as u32,
                total_frames: crate::mem::free_frames() + crate::mem::allocated_frames(),
                free_frames: crate::mem::free_frames(),
                uptime_ns: crate::time::now_ns(),
                vm_exits: crate::stats::VM_EXITS.load(Ordering::Relaxed),
                hypercalls: crate::stats::HYPERCALLS.load(Ordering::Relaxed),
            };
            caller.write_bytes(a, &info.to_bytes()).map(|()| 0)
        }
        MVOP_DOMCTL_CREATE => {
            let mut bytes = [0u8; CREATE_ARGS_SIZE];
            caller.read_bytes(a, &mut bytes)?;
            domain::create(&CreateArgs::from_bytes(&bytes)).map(i64::from)
        }
        MVOP_DOMCTL_LOAD => load(caller, target(caller, a)?, b, c, d),
        MVOP_DOMCTL_SET_ENTRY => domain::set_entry(target(caller, a)?, b, c).map(|()| 0),
        MVOP_DOMCTL_UNPAUSE => domain::unpause(target(caller, a)?).map(|()| 0),
        MVOP_DOMCTL_PAUSE => {
            let slot = target(caller, a)?;
            crate::scheduler::pause(slot);
            Ok(0)
        }
        MVOP_DOMCTL_DESTROY => domain::destroy(target(caller, a)?).map(|()| 0),
        MVOP_DOMCTL_CRASH => {
            let slot = target(caller, a)?;
            crate::log!(
                "domain {a} ({}) crashed on the control domain's request at {} ns",
                domain::name_of(slot),
                crate::time::now_ns()
            );
            crate::scheduler::begin_shutdown(slot, ShutdownReason::Crash, None);
            Ok(0)
        }
        MVOP_DOMCTL_DMESG => {
            let mut log = [0u8; crate::serial::LOG_RING_BYTES];
            let wanted = usize::try_from(b).unwrap_or(usize::MAX).min(log.len());
            let n = crate::serial::dmesg(&mut log[..wanted]);
            caller.write_bytes(a, &log[..n])?;
            Ok(n as i64)
        }
        MVOP_DOMCTL_VCPU_LIST => {
            let domid = u16::try_from(a).map_err(|_| ESRCH)?;
            let slot = domain::slot_of(domid).ok_or(ESRCH)?;
            let vcpus = domain::view(slot).ok_or(ESRCH)?.vcpus;
            let count = vcpus.min(u32::try_from(c).unwrap_or(u32::MAX));
            for id in 0..count {
                let (state, cpu) = match crate::scheduler::vcpu_state(slot, id as usize) {
                    Some(microvisor_core::sched::VcpuState::Running { cpu }) => {
                        (VCPU_STATE_RUNNING, cpu)
                    }
                    Some(microvisor_core::sched::VcpuState::Runnable) => (VCPU_STATE_RUNNABLE, 0),
                    Some(microvisor_core::sched::VcpuState::Blocked { .. }) => {
                        (VCPU_STATE_BLOCKED, 0)
                    }
                    _ => (VCPU_STATE_DOWN, 0),
                };
                let entry = VcpuEntry {
                    vcpu: id,
                    state,
                    _pad: 0,
                    cpu,
                    cpu_ns: crate::stats::vcpu_ns(slot, id as usize),
                };
                let at = b
                    .checked_add(u64::from(id) * VCPU_ENTRY_SIZE as u64)
                    .ok_or(EFAULT)?;
                caller.write_bytes(at, &entry.to_bytes())?;
            }
            Ok(i64::from(count))
        }
        _ => Err(EINVAL),
    }
}

/// The table slot of domain `domid`, which must not be the caller.
fn target(caller: &Caller, domid: u64) -> Result<usize, i64> {
    let domid = u16::try_from(domid).map_err(|_| ESRCH)?;
    if domid == caller.domain.domid {
        return Err(EINVAL);
    }
    domain::slot_of(domid).ok_or(ESRCH)
}

/// Copies the caller's buffer into the domain it builds, a page-sized piece at a time (each
/// piece within one page of the target).
fn load(caller: &Caller, slot: usize, gpa: u64, buf: u64, len: u64) -> Result<i64, i64> {
    if len > LOAD_MAX_BYTES {
        return Err(EINVAL);
    }
    let mut piece = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let at = gpa.checked_add(done).ok_or(EFAULT)?;
        let n = (4096 - at % 4096).min(len - done) as usize;
        caller.read_bytes(buf.checked_add(done).ok_or(EFAULT)?, &mut piece[..n])?;
        domain::load(slot, at, &piece[..n])?;
        done += n as u64;
    }
    Ok(0)
}

fn list(caller: &Caller, array: u64, count: u64) -> Result<i64, i64> {
    let manifest = domain::MANIFEST.get().expect("manifest decoded");
    let mut entries: heapless::Vec<DomctlEntry, { domain::MAX_DOMAINS }> = heapless::Vec::new();
    for (slot, d) in domain::DOMAINS.lock().iter().enumerate() {
        let Some(d) = d else { continue };
        let counters = &crate::stats::PER_DOMAIN[slot];
        let reason_code = |r: ShutdownReason| match r {
            ShutdownReason::Poweroff => DOMCTL_REASON_POWEROFF,
            ShutdownReason::Reboot => DOMCTL_REASON_REBOOT,
            ShutdownReason::Crash => DOMCTL_REASON_CRASH,
        };
        let (state, reason) = match d.state {
            DomainState::Running if crate::scheduler::is_paused(slot) => {
                (DOMCTL_STATE_PAUSED, DOMCTL_REASON_NONE)
            }
            DomainState::Running => (DOMCTL_STATE_RUNNING, DOMCTL_REASON_NONE),
            DomainState::Dying { reason, .. } => (DOMCTL_STATE_DYING, reason_code(reason)),
            DomainState::Preserved => (
                DOMCTL_STATE_SHUTDOWN,
                d.shutdown.map_or(DOMCTL_REASON_NONE, reason_code),
            ),
        };
        let mut flags = 0;
        match d.spec_index {
            None => flags |= DOMCTL_FLAG_CREATED,
            Some(i) if manifest.is_service(i) || manifest.control_domain == Some(i as u8) => {
                flags |= DOMCTL_FLAG_SERVICE
            }
            Some(_) => {}
        }
        if d.domid == caller.domain.domid {
            flags |= DOMCTL_FLAG_SELF;
        }
        let mut name = [0u8; 32];
        name[..d.name.len().min(31)].copy_from_slice(&d.name.as_bytes()[..d.name.len().min(31)]);
        let _ = entries.push(DomctlEntry {
            domid: d.domid,
            state,
            reason,
            vcpus: d.vcpus,
            memory_bytes: d.ram_bytes,
            cpu_ns: counters.cpu_ns.load(Ordering::Relaxed),
            vm_exits: counters.vm_exits.load(Ordering::Relaxed),
            hypercalls: counters.hypercalls.load(Ordering::Relaxed),
            flags,
            restarts: d.lineage.restarts,
            name,
        });
    }
    let written = entries
        .len()
        .min(usize::try_from(count).unwrap_or(usize::MAX));
    for (i, e) in entries.iter().take(written).enumerate() {
        let at = array
            .checked_add((i * DOMCTL_ENTRY_SIZE) as u64)
            .ok_or(EFAULT)?;
        caller.write_bytes(at, &e.to_bytes())?;
    }
    Ok(written as i64)
}
