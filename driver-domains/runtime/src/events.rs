//! Event channels, Xen's 2-level ABI (`XEN-ABI.md` §2.7, §4.5), client side.
//!
//! # Setup (at boot, `init`)
//! 1. `memory_op(XENMEM_add_to_physmap, {DOMID_SELF, XENMAPSPACE_shared_info, 0, gpfn})`
//!    maps the domain's `shared_info` at [`SHARED_INFO_GPA`] (outside RAM, below 4 GiB, so
//!    identity-mapped). vCPU `i`'s `vcpu_info` is slot `i` of it.
//! 2. `hvm_op(HVMOP_set_param, HVM_PARAM_CALLBACK_IRQ = (2 << 56) | 0xF3)`: the microvisor
//!    injects vector [`UPCALL_VECTOR`] whenever a vCPU's `evtchn_upcall_pending` is set and
//!    it has IF=1. The IDT gate for it (`exceptions.rs`) only counts the upcall and
//!    returns (no EOI: the vector does not come through the LAPIC). If the parameter cannot
//!    be set, waiting falls back to `SCHEDOP_block` ([`Delivery::Poll`]).
//! 3. `VIRQ_TIMER` is bound for every vCPU, so the single-shot timer also wakes a vCPU
//!    through the event path.
//!
//! If step 1 fails (a microvisor without events), [`delivery`] is [`Delivery::None`]: the
//! port operations still work, but nothing can tell when a port fired, so waiting degrades
//! to yielding and callers re-check their rings.
//!
//! # Pending events
//! Interrupts stay disabled except inside the `sti; hlt; cli` of a wait. [`poll`] does what
//! Linux's 2-level upcall handler does: clear `evtchn_upcall_pending`, exchange
//! `evtchn_pending_sel` with 0, and for each selected word handle `pending & !mask`,
//! clearing those pending bits with one atomic AND; repeat while `evtchn_upcall_pending`
//! was set again. Handled ports are latched in a software set ([`take`] tests and clears a
//! port's latch) and bump a generation counter ([`generation`]). `VIRQ_TIMER` ports only
//! wake; they are not latched.
//!
//! # Waiting without losing an event
//! ```ignore
//! loop {
//!     let gen = events::generation();
//!     if events::take(port) { /* look at the ring */ }
//!     events::wait_since(gen, None); // returns at once if anything fired after `gen`
//! }
//! ```
//! Any port that fires after the snapshot (even one some other code polls first) changes
//! the generation, so the wait cannot sleep through it. Waits may return spuriously.
//! Before blocking, a wait watches `evtchn_upcall_pending` for a short while
//! ([`set_spin_ns`], default [`DEFAULT_SPIN_NS`]).

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use microvisor_abi::evtchn::{
    shared_info, vcpu_info, DOMID_SELF, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN,
    EVTCHNOP_BIND_IPI, EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS,
    EVTCHNOP_UNMASK, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_PIRQ,
    EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ, NR_EVENT_CHANNELS_2L, STATUS_SIZE, VIRQ_TIMER,
};
use microvisor_abi::hvm::{CALLBACK_TYPE_VECTOR, HVM_PARAM_CALLBACK_IRQ, XENMAPSPACE_SHARED_INFO};
use microvisor_abi::manifest::MAX_VCPUS;

use crate::shared_mem::ForeignPage;
use crate::{hypercall, smp, time};

/// Where `shared_info` is mapped: a page outside RAM, below the builder's ring pages.
pub const SHARED_INFO_GPA: u64 = 0xfeff_0000;
/// The callback vector (Linux's `HYPERVISOR_CALLBACK_VECTOR`).
pub const UPCALL_VECTOR: u8 = 0xf3;

const WORDS: usize = (NR_EVENT_CHANNELS_2L / 64) as usize;

/// An event-channel port of this domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(pub u32);

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How the runtime learns that a port fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Not set up (no `shared_info`): waits yield and return.
    None,
    /// The callback vector: waits are `sti; hlt; cli`.
    Callback,
    /// No callback vector: waits are `SCHEDOP_block`.
    Poll,
}

const DELIVERY_NONE: u8 = 0;
const DELIVERY_CALLBACK: u8 = 1;
const DELIVERY_POLL: u8 = 2;

static DELIVERY: AtomicU8 = AtomicU8::new(DELIVERY_NONE);
/// Upcalls taken (incremented by the vector's handler, below).
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Bumped whenever `poll` latches a port.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Ports handled by `poll` and not yet taken.
static FIRED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// Each vCPU's VIRQ_TIMER port (0: none).
static TIMER_PORTS: [AtomicU32; MAX_VCPUS as usize] =
    [const { AtomicU32::new(0) }; MAX_VCPUS as usize];

// The upcall handler: count and return. It changes no register (IRETQ restores RFLAGS) and
// only runs inside `block_once`'s `sti; hlt; cli`.
global_asm!(
    r#"
    .section .text.upcall_entry, "ax"
    .balign 16
    .global driver_domains_upcall_entry
driver_domains_upcall_entry:
    lock incq {upcalls}(%rip)
    iretq
    "#,
    upcalls = sym UPCALLS,
    options(att_syntax)
);

extern "C" {
    /// The IDT gate target for [`UPCALL_VECTOR`] (only its address is taken).
    static driver_domains_upcall_entry: u8;
}

/// Address of the upcall handler, for the IDT.
pub(crate) fn upcall_entry_address() -> u64 {
    core::ptr::addr_of!(driver_domains_upcall_entry) as u64
}

/// How events are delivered ([`Delivery::None`] before/without setup).
pub fn delivery() -> Delivery {
    match DELIVERY.load(Ordering::Acquire) {
        DELIVERY_CALLBACK => Delivery::Callback,
        DELIVERY_POLL => Delivery::Poll,
        _ => Delivery::None,
    }
}

/// Upcalls taken so far (for diagnostics).
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Relaxed)
}

fn shared() -> ForeignPage {
    // SAFETY: only called once `DELIVERY` is not None, which `init` sets after the
    // shared_info frame was mapped at SHARED_INFO_GPA (outside RAM, identity-mapped, never
    // unmapped, no Rust object there); the microvisor and this module access it atomically.
    unsafe { ForeignPage::new(SHARED_INFO_GPA) }
}

/// Sets events up (see the module documentation); called once at boot on vCPU 0, with the
/// domain's vCPU count and the end of its RAM. Returns the delivery mode, or the error of
/// mapping `shared_info`.
pub(crate) fn init(vcpus: u32, ram_top: u64) -> Result<Delivery, i64> {
    if ram_top > SHARED_INFO_GPA {
        return Err(microvisor_abi::errno::ENOMEM);
    }
    // SAFETY: SHARED_INFO_GPA lies above the domain's RAM (checked above) and below 4 GiB:
    // no Rust object is there; the page is used only through `shared()`.
    unsafe { hypercall::add_to_physmap(XENMAPSPACE_SHARED_INFO, 0, SHARED_INFO_GPA >> 12)? };
    let callback = (CALLBACK_TYPE_VECTOR << 56) | u64::from(UPCALL_VECTOR);
    let mode = match hypercall::hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback) {
        Ok(()) => DELIVERY_CALLBACK,
        Err(_) => DELIVERY_POLL,
    };
    DELIVERY.store(mode, Ordering::Release);
    for vcpu in 0..vcpus.min(MAX_VCPUS) {
        if let Ok(port) = bind_virq(VIRQ_TIMER, vcpu) {
            TIMER_PORTS[vcpu as usize].store(port.0, Ordering::Release);
        }
    }
    Ok(delivery())
}

fn port_arg(port: Port) -> [u8; 4] {
    port.0.to_le_bytes()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn result(ret: i64) -> Result<(), i64> {
    if ret < 0 {
        Err(ret)
    } else {
        Ok(())
    }
}

/// `EVTCHNOP_alloc_unbound`: a new port that `remote` may bind to.
pub fn alloc_unbound(remote: u16) -> Result<Port, i64> {
    let mut arg = [0u8; 8];
    arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    arg[2..4].copy_from_slice(&remote.to_le_bytes());
    result(hypercall::event_channel_op(
        EVTCHNOP_ALLOC_UNBOUND,
        &mut arg,
    ))?;
    Ok(Port(u32_at(&arg, 4)))
}

/// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote`'s unbound port
/// `remote_port` (which must accept this domain). The new port starts pending.
pub fn bind_interdomain(remote: u16, remote_port: u32) -> Result<Port, i64> {
    let mut arg = [0u8; 12];
    arg[0..2].copy_from_slice(&remote.to_le_bytes());
    arg[4..8].copy_from_slice(&remote_port.to_le_bytes());
    result(hypercall::event_channel_op(
        EVTCHNOP_BIND_INTERDOMAIN,
        &mut arg,
    ))?;
    Ok(Port(u32_at(&arg, 8)))
}

/// `EVTCHNOP_bind_virq`: a port for `virq` on `vcpu`.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<Port, i64> {
    let mut arg = [0u8; 12];
    arg[0..4].copy_from_slice(&virq.to_le_bytes());
    arg[4..8].copy_from_slice(&vcpu.to_le_bytes());
    result(hypercall::event_channel_op(EVTCHNOP_BIND_VIRQ, &mut arg))?;
    Ok(Port(u32_at(&arg, 8)))
}

/// `EVTCHNOP_bind_ipi`: a port that [`send`] raises on `vcpu` of this domain.
pub fn bind_ipi(vcpu: u32) -> Result<Port, i64> {
    let mut arg = [0u8; 8];
    arg[0..4].copy_from_slice(&vcpu.to_le_bytes());
    result(hypercall::event_channel_op(EVTCHNOP_BIND_IPI, &mut arg))?;
    Ok(Port(u32_at(&arg, 4)))
}

/// `EVTCHNOP_close`; also forgets a latched firing of the port.
pub fn close(port: Port) -> Result<(), i64> {
    let mut arg = port_arg(port);
    result(hypercall::event_channel_op(EVTCHNOP_CLOSE, &mut arg))?;
    forget(port);
    Ok(())
}

/// `EVTCHNOP_send`: notifies the other end of `port`.
pub fn send(port: Port) -> Result<(), i64> {
    let mut arg = port_arg(port);
    result(hypercall::event_channel_op(EVTCHNOP_SEND, &mut arg))
}

/// `EVTCHNOP_unmask`: clears the port's mask; the microvisor re-delivers it if pending.
pub fn unmask(port: Port) -> Result<(), i64> {
    let mut arg = port_arg(port);
    result(hypercall::event_channel_op(EVTCHNOP_UNMASK, &mut arg))
}

/// Sets the port's bit in `evtchn_mask`: it stays pending without an upcall until
/// [`unmask`]ed. Needs `shared_info` ([`delivery`] not `None`); otherwise does nothing.
pub fn mask(port: Port) {
    if delivery() == Delivery::None || port.0 >= NR_EVENT_CHANNELS_2L {
        return;
    }
    let word = shared_info::EVTCHN_MASK + (port.0 as usize / 64) * 8;
    shared()
        .u64(word)
        .fetch_or(1 << (port.0 % 64), Ordering::SeqCst);
}

/// What a port is connected to, from `EVTCHNOP_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Closed,
    /// Waiting for `remote` to bind.
    Unbound {
        remote: u16,
    },
    Interdomain {
        remote: u16,
        remote_port: u32,
    },
    Pirq(u32),
    Virq(u32),
    Ipi,
    /// A status value this runtime does not know.
    Other(u32),
}

/// `EVTCHNOP_status` of one of this domain's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub state: PortState,
    /// The vCPU the port notifies.
    pub vcpu: u32,
}

/// `EVTCHNOP_status` of `port`.
pub fn status(port: Port) -> Result<PortStatus, i64> {
    let mut arg = [0u8; STATUS_SIZE];
    arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    arg[4..8].copy_from_slice(&port.0.to_le_bytes());
    result(hypercall::event_channel_op(EVTCHNOP_STATUS, &mut arg))?;
    let dom = u16::from_le_bytes([arg[16], arg[17]]);
    let state = match u32_at(&arg, 8) {
        EVTCHNSTAT_CLOSED => PortState::Closed,
        EVTCHNSTAT_UNBOUND => PortState::Unbound { remote: dom },
        EVTCHNSTAT_INTERDOMAIN => PortState::Interdomain {
            remote: dom,
            remote_port: u32_at(&arg, 20),
        },
        EVTCHNSTAT_PIRQ => PortState::Pirq(u32_at(&arg, 16)),
        EVTCHNSTAT_VIRQ => PortState::Virq(u32_at(&arg, 16)),
        EVTCHNSTAT_IPI => PortState::Ipi,
        other => PortState::Other(other),
    };
    Ok(PortStatus {
        state,
        vcpu: u32_at(&arg, 12),
    })
}

fn is_timer_port(port: u32) -> bool {
    port != 0
        && TIMER_PORTS
            .iter()
            .any(|p| p.load(Ordering::Relaxed) == port)
}

fn forget(port: Port) {
    if let Some(word) = FIRED.get(port.0 as usize / 64) {
        word.fetch_and(!(1 << (port.0 % 64)), Ordering::AcqRel);
    }
}

/// Handles the calling vCPU's pending events (see the module documentation); returns how
/// many ports it latched.
pub fn poll() -> u32 {
    if delivery() == Delivery::None {
        return 0;
    }
    let vcpu = smp::current_vcpu() as usize;
    if vcpu >= shared_info::LEGACY_MAX_VCPUS {
        return 0;
    }
    let page = shared();
    let info = shared_info::VCPU_INFO + vcpu * shared_info::VCPU_INFO_SIZE;
    let upcall_pending = page.u8(info + vcpu_info::UPCALL_PENDING);
    let mut latched = 0;
    while upcall_pending.load(Ordering::SeqCst) != 0 {
        upcall_pending.store(0, Ordering::SeqCst);
        let mut selector = page
            .u64(info + vcpu_info::PENDING_SEL)
            .swap(0, Ordering::SeqCst);
        while selector != 0 {
            let w = selector.trailing_zeros() as usize;
            selector &= selector - 1;
            let pending_word = page.u64(shared_info::EVTCHN_PENDING + w * 8);
            let mask = page
                .u64(shared_info::EVTCHN_MASK + w * 8)
                .load(Ordering::SeqCst);
            let ready = pending_word.load(Ordering::SeqCst) & !mask;
            if ready == 0 {
                continue;
            }
            pending_word.fetch_and(!ready, Ordering::SeqCst);
            let mut bits = ready;
            let mut keep = 0u64;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                if !is_timer_port(w as u32 * 64 + b) {
                    keep |= 1 << b;
                }
            }
            if keep != 0 {
                FIRED[w].fetch_or(keep, Ordering::AcqRel);
                latched += keep.count_ones();
            }
        }
    }
    if latched > 0 {
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    latched
}

/// The event generation: changes whenever a port is latched.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Whether `port` fired since it was last taken; clears its latch. Polls first.
pub fn take(port: Port) -> bool {
    poll();
    FIRED.get(port.0 as usize / 64).is_some_and(|w| {
        w.fetch_and(!(1 << (port.0 % 64)), Ordering::AcqRel) & (1 << (port.0 % 64)) != 0
    })
}

/// Whether `port` fired since it was last taken, without clearing its latch. Polls first.
pub fn fired(port: Port) -> bool {
    poll();
    FIRED
        .get(port.0 as usize / 64)
        .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (port.0 % 64)) != 0)
}

fn upcall_pending_here() -> bool {
    let vcpu = smp::current_vcpu() as usize;
    if vcpu >= shared_info::LEGACY_MAX_VCPUS {
        return false;
    }
    let info = shared_info::VCPU_INFO + vcpu * shared_info::VCPU_INFO_SIZE;
    shared()
        .u8(info + vcpu_info::UPCALL_PENDING)
        .load(Ordering::SeqCst)
        != 0
}

/// Sleeps until an event for this vCPU is pending, its single-shot timer fires, or
/// spuriously. Without events, yields once.
fn block_once() {
    match delivery() {
        Delivery::Callback => {
            if !upcall_pending_here() {
                // SAFETY: interrupts are enabled only for the HLT (STI's shadow covers it),
                // and the only interrupt that can come is the upcall vector, whose handler
                // changes nothing but a counter. The block is not `nostack`, so the
                // interrupt frame the CPU pushes below RSP cannot land in a red zone the
                // compiler uses.
                unsafe { asm!("sti", "hlt", "cli") };
            }
        }
        Delivery::Poll => {
            hypercall::sched_block();
        }
        Delivery::None => {
            hypercall::sched_yield();
        }
    }
}

/// How long [`wait_since`] watches for an upcall before it blocks, in ns.
pub const DEFAULT_SPIN_NS: u64 = 50_000;
static SPIN_NS: AtomicU64 = AtomicU64::new(DEFAULT_SPIN_NS);

/// Sets how long waits spin (watching `evtchn_upcall_pending`, no exits) before they
/// block; 0 blocks at once. A short spin catches a peer's quick answer without the cost
/// and latency of blocking and being woken.
pub fn set_spin_ns(ns: u64) {
    SPIN_NS.store(ns, Ordering::Relaxed);
}

/// Spins until an upcall is pending on this vCPU (true) or the spin time or `deadline` is
/// over (false).
fn spin_for_upcall(deadline: Option<u64>) -> bool {
    let ns = SPIN_NS.load(Ordering::Relaxed);
    if ns == 0 || delivery() == Delivery::None || !time::available() {
        return false;
    }
    let start = time::now_ns();
    let end = deadline.map_or(start.saturating_add(ns), |d| {
        d.min(start.saturating_add(ns))
    });
    loop {
        if upcall_pending_here() {
            return true;
        }
        if time::now_ns() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Why a wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A port was latched after the generation the wait started from (or, without events,
    /// a spurious return: re-check).
    Event,
    /// The deadline passed.
    Timeout,
}

/// Waits until the generation differs from `gen` (a port fired after the caller took
/// `gen` with [`generation`]) or until system time `deadline` (ns), if given.
pub fn wait_since(gen: u64, deadline: Option<u64>) -> Wake {
    loop {
        poll();
        if generation() != gen {
            return Wake::Event;
        }
        if let Some(deadline) = deadline {
            if time::now_ns() >= deadline {
                return Wake::Timeout;
            }
        }
        if spin_for_upcall(deadline) {
            continue;
        }
        if let Some(deadline) = deadline {
            // A timer still pending for this deadline or before it wakes this wait in time
            // (an earlier one only makes it look again): a backend waiting with a timeout
            // after every request saves a hypercall a wait.
            let set_for = hypercall::singleshot_timer_set_for();
            if set_for == 0 || set_for > deadline || set_for <= time::now_ns() {
                hypercall::set_singleshot_timer(deadline);
            }
        }
        block_once();
        if delivery() == Delivery::None {
            // Nothing can report events: let the caller look for itself.
            return if deadline.is_some_and(|d| time::now_ns() >= d) {
                Wake::Timeout
            } else {
                Wake::Event
            };
        }
    }
}

/// Blocks until a port fires (one that was already pending counts).
pub fn wait() {
    wait_since(generation(), None);
}

/// Like [`wait`], but gives up at system time `deadline` (ns).
pub fn wait_until(deadline: u64) -> Wake {
    wait_since(generation(), Some(deadline))
}

/// Sleeps until system time `deadline` (ns), waking through the event path; events that
/// arrive meanwhile are latched for their owners. Used by [`crate::time::sleep_ns`].
pub(crate) fn sleep_until(deadline: u64) {
    loop {
        if time::now_ns() >= deadline {
            return;
        }
        hypercall::set_singleshot_timer(deadline);
        poll();
        if time::now_ns() >= deadline {
            return;
        }
        block_once();
    }
}
