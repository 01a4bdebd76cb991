//! The scheduler as the hardware sees it: one policy object from `microvisor-core` behind a
//! spin lock, and the loop every CPU runs: pick a vCPU, run it for up to a time slice, put it
//! back according to why it left; idle with the LAPIC timer set to the next timer deadline.
//!
//! Domain shutdown: `shutdown_domain` marks the domain dying and removes its vCPUs from the
//! policy; vCPUs running on other CPUs notice at their next exit (within a slice). The CPU
//! whose vCPU is the last to leave tears the domain down (`domain::finish_shutdown`).

use core::sync::atomic::{AtomicBool, Ordering};
use crossbeam_utils::{Backoff, CachePadded};

use microvisor_abi::manifest::LifecycleAction;
use microvisor_core::sched::{SchedError, Scheduler, VcpuRef, VcpuState};
use spin::Mutex;

use crate::domain::{self, DomainState, ShutdownReason, MAX_DOMAINS};
use crate::exits::{self, Outcome};
use crate::vcpu::MAX_LIVE_VCPUS;

static SCHED: Mutex<Scheduler<MAX_LIVE_VCPUS>> = Mutex::new(Scheduler::new());
static DYING: [AtomicBool; MAX_DOMAINS] = [const { AtomicBool::new(false) }; MAX_DOMAINS];
/// Paused by the control domain (or created and not yet started): its vCPUs do not enter
/// the guest; one picked from the run queue blocks again at once.
static PAUSED: [AtomicBool; MAX_DOMAINS] = [const { AtomicBool::new(false) }; MAX_DOMAINS];
/// CPUs sleeping in the idle loop; a vCPU made runnable interrupts one of them. One cache
/// line per CPU: each CPU writes its own flag every time it idles.
static IDLE: [CachePadded<AtomicBool>; crate::cpu::MAX_CPUS] =
    [const { CachePadded::new(AtomicBool::new(false)) }; crate::cpu::MAX_CPUS];

/// The longest an idle CPU sleeps before it looks at the run queue again.
const IDLE_POLL_NS: u64 = 5_000_000;

fn vref(slot: usize, vcpu: usize) -> VcpuRef {
    VcpuRef {
        domain: slot as u16,
        vcpu: vcpu as u8,
    }
}

/// Adds a domain's vCPUs (vCPU 0 runnable). Refused (nothing added) when the scheduler has
/// no room for all of them.
pub fn add_domain(slot: usize, vcpus: u32, paused: bool) -> Result<(), SchedError> {
    DYING[slot].store(false, Ordering::Release);
    PAUSED[slot].store(paused, Ordering::Release);
    let mut sched = SCHED.lock();
    if sched.free_slots() < vcpus as usize {
        return Err(SchedError::Full);
    }
    for id in 0..vcpus as usize {
        sched.add(vref(slot, id), id == 0)?;
    }
    Ok(())
}

pub fn is_dying(slot: usize) -> bool {
    DYING[slot].load(Ordering::Acquire)
}

pub fn is_paused(slot: usize) -> bool {
    PAUSED[slot].load(Ordering::Acquire)
}

/// Stop a domain's vCPUs: each leaves its CPU at its next exit (other CPUs running one are
/// interrupted now) and stays blocked until [`unpause`].
pub fn pause(slot: usize) {
    PAUSED[slot].store(true, Ordering::SeqCst);
    shootdown(slot);
}

/// Let a paused domain's vCPUs run again: every one that is not down is woken.
pub fn unpause(slot: usize) {
    PAUSED[slot].store(false, Ordering::SeqCst);
    for id in 0..crate::vcpu::MAX_VCPUS_PER_DOMAIN {
        kick(slot, id);
    }
}

/// A vCPU's scheduling state, if it is known.
pub fn vcpu_state(slot: usize, vcpu: usize) -> Option<VcpuState> {
    SCHED.lock().state(vref(slot, vcpu))
}

pub fn vcpu_is_up(slot: usize, vcpu: usize) -> bool {
    !matches!(
        SCHED.lock().state(vref(slot, vcpu)),
        None | Some(VcpuState::Down) | Some(VcpuState::Dead)
    )
}

pub fn vcpu_up(slot: usize, vcpu: usize) {
    let _ = SCHED.lock().set_up(vref(slot, vcpu));
}

/// Make a vCPU notice an event: wake it if blocked; if it runs on another CPU, interrupt
/// that CPU so the vCPU exits and gets its upcall injected.
pub fn kick(slot: usize, vcpu: usize) {
    let v = vref(slot, vcpu);
    let me = crate::lapic::current_cpu_index();
    let target = {
        let mut sched = SCHED.lock();
        let state = sched.state(v);
        let woken = sched.wake(v);
        match state {
            Some(VcpuState::Running { cpu }) => Some(usize::from(cpu)),
            // Now runnable: an idle CPU should pick it up at once rather than at its next poll.
            _ if woken => {
                (0..crate::smp::cpu_count()).find(|&c| c != me && IDLE[c].load(Ordering::Acquire))
            }
            _ => None,
        }
    };
    if let Some(cpu) = target {
        if cpu != me {
            crate::lapic::send_fixed_ipi(crate::smp::apic_id_of(cpu), crate::cpu::KICK_VECTOR);
        }
    }
}

fn cpus_running(slot: usize, except: usize) -> heapless::Vec<usize, { crate::cpu::MAX_CPUS }> {
    let sched = SCHED.lock();
    let mut cpus = heapless::Vec::new();
    for id in 0..crate::vcpu::MAX_VCPUS_PER_DOMAIN {
        if let Some(VcpuState::Running { cpu }) = sched.state(vref(slot, id)) {
            if usize::from(cpu) != except {
                let _ = cpus.push(usize::from(cpu));
            }
        }
    }
    cpus
}

/// After a mapping was removed from a domain's nested page table: make every other CPU that
/// runs one of its vCPUs in guest mode leave the guest once, so no stale translation survives
/// (each VMRUN flushes the TLB). A CPU that is in the microvisor meanwhile (handling an exit,
/// or itself in a shootdown with interrupts off) is not waited for: it re-enters only through
/// VMRUN. Waits until each CPU in its guest has exited.
pub fn shootdown(slot: usize) {
    let me = crate::lapic::current_cpu_index();
    core::sync::atomic::fence(Ordering::SeqCst);
    for cpu in cpus_running(slot, me) {
        let seen = crate::stats::EXITS_ON_CPU[cpu].load(Ordering::Acquire);
        if !crate::stats::IN_GUEST[cpu].load(Ordering::SeqCst) {
            continue;
        }
        crate::lapic::send_fixed_ipi(crate::smp::apic_id_of(cpu), crate::cpu::KICK_VECTOR);
        let deadline = crate::time::now_ns() + 1_000_000_000;
        let backoff = Backoff::new();
        while crate::stats::EXITS_ON_CPU[cpu].load(Ordering::Acquire) == seen
            && crate::stats::IN_GUEST[cpu].load(Ordering::Acquire)
            && cpus_running(slot, me).contains(&cpu)
            && crate::time::now_ns() < deadline
        {
            backoff.snooze();
        }
    }
}

/// Start shutting a domain down; the first reason wins.
pub fn shutdown_domain(slot: usize, reason: ShutdownReason) {
    begin_shutdown(slot, reason, None);
}

/// Start shutting a domain down with `action` (`None`: its manifest's action for `reason`;
/// a domain the control domain created is kept for it to decide). The first call wins.
pub fn begin_shutdown(slot: usize, reason: ShutdownReason, action: Option<LifecycleAction>) {
    {
        let mut table = domain::DOMAINS.lock();
        let Some(d) = table[slot].as_mut() else {
            return;
        };
        if d.state != DomainState::Running {
            return;
        }
        let manifest = domain::MANIFEST.get().expect("manifest decoded");
        let action = match (action, d.spec_index) {
            (Some(action), _) => action,
            (None, Some(index)) => {
                let spec = &manifest.domains[index];
                match reason {
                    ShutdownReason::Poweroff => spec.on_poweroff,
                    ShutdownReason::Reboot => spec.on_reboot,
                    ShutdownReason::Crash => spec.on_crash,
                }
            }
            (None, None) => LifecycleAction::Preserve,
        };
        d.state = DomainState::Dying { reason, action };
    }
    let finish = {
        let mut sched = SCHED.lock();
        DYING[slot].store(true, Ordering::Release);
        sched.remove_domain(slot as u16);
        // No vCPU of it on any CPU (all blocked or queued): nobody else will finish it.
        sched.domain_quiesced(slot as u16) && DYING[slot].swap(false, Ordering::AcqRel)
    };
    // The service domains drop their connections to it before its grants are revoked.
    domain::notify_services();
    if finish {
        domain::finish_shutdown(slot);
    }
}

/// The loop every CPU runs once the domains are built.
pub fn cpu_loop(cpu: usize) -> ! {
    loop {
        crate::pci::dispatch_interrupts();
        crate::iommu::poll_faults();
        let now = crate::time::now_ns();
        let picked = SCHED.lock().pick_next(cpu as u16, now);
        match picked {
            Some(v) => run(cpu, v),
            None => {
                let next = SCHED.lock().next_deadline();
                let wait = next.map_or(IDLE_POLL_NS, |t| {
                    t.saturating_sub(now).clamp(1_000, IDLE_POLL_NS)
                });
                crate::lapic::arm_timer_ns(wait);
                IDLE[cpu].store(true, Ordering::Release);
                // Look once more after announcing idleness, so a wake-up in between is not missed.
                if SCHED.lock().runnable_count() == 0 {
                    crate::arch::idle_wait();
                }
                IDLE[cpu].store(false, Ordering::Release);
                crate::lapic::disarm_timer();
            }
        }
    }
}

fn run(cpu: usize, v: VcpuRef) {
    let slot = usize::from(v.domain);
    let started = crate::time::now_ns();
    let outcome = exits::run_vcpu(cpu, slot, usize::from(v.vcpu));
    let held = crate::time::now_ns().saturating_sub(started);
    crate::stats::PER_DOMAIN[slot]
        .cpu_ns
        .fetch_add(held, Ordering::Relaxed);
    crate::stats::add_vcpu_ns(slot, usize::from(v.vcpu), held);
    let finish = {
        let mut sched = SCHED.lock();
        if sched.is_dead(v) {
            sched.retire(v);
        } else {
            let now = crate::time::now_ns();
            let _ = match outcome {
                Outcome::Preempted => sched.preempt(v),
                Outcome::Yielded => sched.yield_(v),
                Outcome::Blocked { wake_at_ns } => sched.block(v, wake_at_ns, now).map(|_| ()),
                Outcome::Down => {
                    let result = sched.set_down(v);
                    if sched.all_dead_or_down(v.domain) {
                        drop(sched);
                        crate::log!(
                            "domain {} ({}): every vCPU halted with interrupts off",
                            domain::view(slot).map_or(0, |d| d.domid),
                            domain::name_of(slot)
                        );
                        shutdown_domain(slot, ShutdownReason::Poweroff);
                        sched = SCHED.lock();
                    }
                    result
                }
                Outcome::Dead => Ok(()),
            };
        }
        // The last vCPU of a dying domain to leave its CPU tears it down, exactly once.
        sched.domain_quiesced(v.domain) && DYING[slot].swap(false, Ordering::AcqRel)
    };
    if finish {
        domain::finish_shutdown(slot);
    }
}
