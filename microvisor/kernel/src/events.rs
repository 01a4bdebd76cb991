//! Event channels as the hardware sees them: each domain's port table (policy in
//! `microvisor-core::evtchn`), its `shared_info` frame, where each vCPU's `vcpu_info` lives,
//! and the callback vector. Raising a port sets bits in the target domain's shared memory
//! with atomic operations (Xen's 2-level ABI), then kicks the target vCPU: a blocked vCPU is
//! woken, a running one gets an IPI so it exits and sees the upcall. The upcall itself is
//! injected as a virtual interrupt (V_IRQ) with the domain's callback vector before VMRUN,
//! whenever `evtchn_upcall_pending` is set; the CPU delivers it once the guest has IF=1.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use microvisor_abi::evtchn::{shared_info, vcpu_info, VIRQ_TIMER};
use microvisor_core::evtchn::{self as policy, EventBits, Port, PortTable};
use spin::Mutex;

use crate::domain::MAX_DOMAINS;
use crate::mem;
use crate::vcpu::MAX_VCPUS_PER_DOMAIN;

pub struct DomainEvents {
    pub ports: PortTable,
    /// Host frame of the domain's `shared_info` (allocated at build, zeroed).
    pub shared_info_hpa: u64,
    /// Host address of each vCPU's `vcpu_info` (0: none yet).
    pub vcpu_info_hpa: [u64; MAX_VCPUS_PER_DOMAIN],
    /// The vector given by `HVM_PARAM_CALLBACK_IRQ` (0: no upcalls).
    pub callback_vector: u8,
}

impl DomainEvents {
    const fn empty() -> Self {
        Self {
            ports: PortTable::new(),
            shared_info_hpa: 0,
            vcpu_info_hpa: [0; MAX_VCPUS_PER_DOMAIN],
            callback_vector: 0,
        }
    }
}

pub static EVENTS: [Mutex<DomainEvents>; MAX_DOMAINS] =
    [const { Mutex::new(DomainEvents::empty()) }; MAX_DOMAINS];

/// Give a freshly built domain its event state: a zeroed `shared_info` frame whose
/// `vcpu_info` slots hold the vCPUs' time records; no ports bound.
pub fn init_domain(slot: usize, vcpus: u32) -> Result<(), crate::npt::OutOfMemory> {
    let shared = mem::alloc_zeroed().ok_or(crate::npt::OutOfMemory)?;
    let mut events = EVENTS[slot].lock();
    *events = DomainEvents::empty();
    events.shared_info_hpa = shared;
    for id in 0..(vcpus as usize).min(MAX_VCPUS_PER_DOMAIN) {
        let at = shared + (shared_info::VCPU_INFO + id * shared_info::VCPU_INFO_SIZE) as u64;
        events.vcpu_info_hpa[id] = at;
        crate::time::write_vcpu_time_hpa(at + vcpu_info::TIME as u64);
    }
    Ok(())
}

/// Release a domain's event state at teardown: close every port (peers' ports revert to
/// unbound, as in Xen) and free the `shared_info` frame.
pub fn destroy_domain(slot: usize, domid: u16) {
    let (peers, shared) = {
        let mut events = EVENTS[slot].lock();
        let peers = events.ports.close_all();
        let shared = core::mem::replace(&mut events.shared_info_hpa, 0);
        *events = DomainEvents::empty();
        (peers, shared)
    };
    for (peer_domid, peer_port) in peers {
        if let Some(peer_slot) = crate::domain::slot_of(peer_domid) {
            if peer_slot != slot {
                EVENTS[peer_slot]
                    .lock()
                    .ports
                    .revert_to_unbound(peer_port, domid);
            }
        }
    }
    if shared != 0 {
        mem::free(shared);
    }
}

/// The 2-level bits of one domain, in its shared memory.
pub struct GuestEventBits {
    shared: u64,
    vcpu_info: [u64; MAX_VCPUS_PER_DOMAIN],
}

impl GuestEventBits {
    pub fn of(events: &DomainEvents) -> Self {
        Self {
            shared: events.shared_info_hpa,
            vcpu_info: events.vcpu_info_hpa,
        }
    }

    fn word(&self, base: usize, port: Port) -> Option<(&AtomicU64, u64)> {
        if self.shared == 0 || port >= 4096 {
            return None;
        }
        let at = self.shared + (base + (port as usize / 64) * 8) as u64;
        // SAFETY: `at` lies in the domain's shared_info frame (base + at most 63 words stays
        // inside the page), which the microvisor allocated and keeps until the domain is
        // destroyed; it is 8-byte aligned; guests touch it only with atomic operations too.
        Some((
            unsafe { AtomicU64::from_ptr(mem::phys_ptr::<u64>(at)) },
            1u64 << (port % 64),
        ))
    }

    fn vcpu_field<T>(&self, vcpu: u32, offset: usize) -> Option<*mut T> {
        let base = *self.vcpu_info.get(vcpu as usize)?;
        (base != 0).then(|| mem::phys_ptr::<T>(base + offset as u64))
    }
}

impl EventBits for GuestEventBits {
    fn test_and_set_pending(&mut self, port: Port) -> bool {
        self.word(shared_info::EVTCHN_PENDING, port)
            .is_none_or(|(w, bit)| w.fetch_or(bit, Ordering::SeqCst) & bit != 0)
    }
    fn is_pending(&self, port: Port) -> bool {
        self.word(shared_info::EVTCHN_PENDING, port)
            .is_some_and(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }
    fn is_masked(&self, port: Port) -> bool {
        self.word(shared_info::EVTCHN_MASK, port)
            .is_none_or(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }
    fn clear_mask(&mut self, port: Port) -> bool {
        self.word(shared_info::EVTCHN_MASK, port)
            .is_some_and(|(w, bit)| w.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool {
        let Some(ptr) = self.vcpu_field::<u64>(vcpu, vcpu_info::PENDING_SEL) else {
            return true;
        };
        // SAFETY: the vcpu_info lies in the shared_info frame or in a guest RAM frame the
        // domain registered (checked 8-byte aligned, inside one page, owned by the domain
        // while it lives); only atomic accesses are made.
        let sel = unsafe { AtomicU64::from_ptr(ptr) };
        let bit = 1u64 << (word % 64);
        sel.fetch_or(bit, Ordering::SeqCst) & bit != 0
    }
    fn set_upcall_pending(&mut self, vcpu: u32) -> bool {
        let Some(ptr) = self.vcpu_field::<u8>(vcpu, vcpu_info::UPCALL_PENDING) else {
            return true;
        };
        // SAFETY: as for the selector; a byte needs no alignment.
        let flag = unsafe { AtomicU8::from_ptr(ptr) };
        flag.swap(1, Ordering::SeqCst) != 0
    }
}

/// Whether `vcpu` of the domain has an upcall pending.
pub fn upcall_pending(slot: usize, vcpu: usize) -> bool {
    let events = EVENTS[slot].lock();
    let Some(&base) = events.vcpu_info_hpa.get(vcpu) else {
        return false;
    };
    if base == 0 {
        return false;
    }
    // SAFETY: see `set_upcall_pending`.
    unsafe { AtomicU8::from_ptr(mem::phys_ptr::<u8>(base)) }.load(Ordering::SeqCst) != 0
}

pub fn callback_vector(slot: usize) -> u8 {
    EVENTS[slot].lock().callback_vector
}

/// Raise `port` of the domain in `slot` on the vCPU the port notifies, kicking it if needed.
pub fn raise(slot: usize, port: Port) {
    let kick = {
        let events = EVENTS[slot].lock();
        let vcpu = events.ports.notify_vcpu(port);
        let mut bits = GuestEventBits::of(&events);
        policy::raise(&mut bits, port, vcpu).then_some(vcpu)
    };
    if let Some(vcpu) = kick {
        crate::scheduler::kick(slot, vcpu as usize);
    }
}

/// Raise a VIRQ of the domain in `slot` (on `vcpu` for per-vCPU VIRQs), if bound.
pub fn raise_virq(slot: usize, virq: u32, vcpu: u32) {
    let port = EVENTS[slot].lock().ports.virq_port(virq, vcpu);
    if let Some(port) = port {
        raise(slot, port);
    }
}

/// The vCPU's single-shot timer fired: raise its VIRQ_TIMER port if one is bound.
pub fn timer_fired(slot: usize, vcpu: usize) {
    let port = EVENTS[slot].lock().ports.virq_port(VIRQ_TIMER, vcpu as u32);
    if let Some(port) = port {
        raise(slot, port);
    }
}
