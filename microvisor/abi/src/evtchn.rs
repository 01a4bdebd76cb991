//! `event_channel_op` (hypercall 32): `(cmd, arg)`, Xen's 2-level event channels
//! (`event_channel.h`), and the `shared_info`/`vcpu_info` layout the pending bits live in.

pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_BIND_IPI: u64 = 7;
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
pub const EVTCHNOP_UNMASK: u64 = 9;

/// Ports of the 2-level ABI: 1..4096 (port 0 is never allocated).
pub const NR_EVENT_CHANNELS_2L: u32 = 4096;

pub const DOMID_SELF: u16 = 0x7ff0;

/// `struct evtchn_alloc_unbound` (8 bytes): 0 dom, 2 remote_dom, 4 port (out).
pub const ALLOC_UNBOUND_SIZE: usize = 8;
/// `struct evtchn_bind_interdomain` (12 bytes): 0 remote_dom, 4 remote_port, 8 local_port (out).
pub const BIND_INTERDOMAIN_SIZE: usize = 12;
/// `struct evtchn_bind_virq` (12 bytes): 0 virq, 4 vcpu, 8 port (out).
pub const BIND_VIRQ_SIZE: usize = 12;
/// `struct evtchn_bind_ipi` (8 bytes): 0 vcpu, 4 port (out).
pub const BIND_IPI_SIZE: usize = 8;
/// `struct evtchn_close`/`send`/`unmask` (4 bytes): 0 port.
pub const PORT_ARG_SIZE: usize = 4;
/// `struct evtchn_bind_vcpu` (8 bytes): 0 port, 4 vcpu.
pub const BIND_VCPU_SIZE: usize = 8;
/// `struct evtchn_status` (24 bytes): 0 dom, 4 port, 8 status (out), 12 vcpu (out), 16 union:
/// unbound.dom u16 / interdomain {dom u16 @16, port u32 @20} / pirq u32 / virq u32.
pub const STATUS_SIZE: usize = 24;

/// `EVTCHNSTAT_*` values reported by `status`.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// Virtual IRQs (`VIRQ_*`). Per-vCPU: TIMER, DEBUG; the rest are global (bound on vCPU 0).
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const NR_VIRQS: u32 = 24;

/// Layout of `struct shared_info` (one page, mapped by `XENMEM_add_to_physmap(shared_info)`).
pub mod shared_info {
    /// `vcpu_info[32]`, 64 bytes each.
    pub const VCPU_INFO: usize = 0x000;
    pub const VCPU_INFO_SIZE: usize = 64;
    pub const LEGACY_MAX_VCPUS: usize = 32;
    /// `evtchn_pending[64]` (u64 words; bit n of the array = port n).
    pub const EVTCHN_PENDING: usize = 0x800;
    /// `evtchn_mask[64]`.
    pub const EVTCHN_MASK: usize = 0xa00;
}

/// Layout of `struct vcpu_info` (64 bytes).
pub mod vcpu_info {
    pub const UPCALL_PENDING: usize = 0;
    pub const PENDING_SEL: usize = 8;
    /// The vCPU's `vcpu_time_info` (pvclock).
    pub const TIME: usize = 32;
    pub const SIZE: usize = 64;
}
