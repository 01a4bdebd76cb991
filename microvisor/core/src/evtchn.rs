//! Event channels: one domain's port table and the 2-level delivery rules (XEN-ABI.md §2.7,
//! §4.5; numbers in [`microvisor_abi::evtchn`]).
//!
//! A [`PortTable`] holds the state of ports `0..MAX_PORTS` of one domain. Port 0 is never
//! allocated, so a domain has `MAX_PORTS - 1` usable ports (Xen's default limit for a domU).
//! Every operation takes the port, vCPU and VIRQ numbers exactly as the domain passed them
//! and answers with Xen's errno (negative `i64`) instead of panicking:
//!
//! | operation | errors |
//! |---|---|
//! | [`PortTable::alloc_unbound`] | `-ENOSPC` no free port |
//! | [`bind_interdomain`] | `-ENOSPC`; `-EINVAL` remote port out of range, not `Unbound`, or not accepting this domain |
//! | [`PortTable::bind_virq`] | `-EINVAL` VIRQ out of range or a global VIRQ on a vCPU other than 0; `-ENOENT` no such vCPU; `-EEXIST` already bound; `-ENOSPC` |
//! | [`PortTable::bind_ipi`] | `-ENOENT` no such vCPU; `-ENOSPC` |
//! | [`PortTable::bind_vcpu`] | `-ENOENT` no such vCPU; `-EINVAL` port out of range, free, IPI or per-vCPU VIRQ |
//! | [`PortTable::send_target`] | `-EINVAL` port out of range, free or VIRQ (an `Unbound` port drops the event and succeeds) |
//! | [`PortTable::close`] | `-EINVAL` port out of range or free |
//! | [`PortTable::status`] | `-EINVAL` port out of range (a free port in range is `EVTCHNSTAT_CLOSED`) |
//!
//! Who does what: this module owns the table and the rules; the hardware crate holds the
//! tables under its locks, resolves `DOMID_SELF` and checks that a named domain exists
//! (`-ESRCH`), raises ports with [`raise`] through its own [`EventBits`] over the domain's
//! `shared_info`/`vcpu_info`, and kicks vCPUs. Two-table operations ([`bind_interdomain`],
//! [`PortTable::close`] + [`PortTable::revert_to_unbound`]) need both tables locked, in a
//! fixed order (for instance lower domain id first).
//!
//! The invariant every operation keeps, given that the caller applies the
//! [`CloseEffect`]s and the peers [`PortTable::close_all`] returns: a port
//! `Interdomain { remote, remote_port }` of domain `d` has as peer port `remote_port` of
//! domain `remote`, which is `Interdomain { remote: d, remote_port: <this port> }`.

use microvisor_abi::errno::{EEXIST, EINVAL, ENOENT};
use microvisor_abi::evtchn::{
    EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
    NR_EVENT_CHANNELS_2L, NR_VIRQS, STATUS_SIZE, VIRQ_DEBUG, VIRQ_TIMER,
};

/// A domain id.
pub type DomId = u16;
/// An event channel port number (`evtchn_port_t`).
pub type Port = u32;

/// Ports per domain, port 0 included (it is never allocated).
pub const MAX_PORTS: usize = 1024;
/// vCPUs per domain the port table can target.
pub const MAX_VCPUS: usize = 8;

/// No space left: every port is in use. Not in `microvisor_abi::errno` (yet).
pub const ENOSPC: i64 = -28;

/// `VIRQ_XENOPROF`: per-vCPU like TIMER and DEBUG.
pub const VIRQ_XENOPROF: u32 = 7;
/// `VIRQ_XENPMU`: per-vCPU like TIMER and DEBUG.
pub const VIRQ_XENPMU: u32 = 13;

/// Bits per word of `evtchn_pending`/`evtchn_mask` and of `evtchn_pending_sel` (64-bit guests).
pub const BITS_PER_EVTCHN_WORD: u32 = 64;

const NR_VIRQ_SLOTS: usize = NR_VIRQS as usize;

/// Whether `virq` is bound per vCPU (TIMER, DEBUG, XENOPROF, XENPMU). All other VIRQs are
/// global: bound once, on vCPU 0, and retargetable with `bind_vcpu`.
pub const fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

/// The state of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Not allocated (`EVTCHNSTAT_closed`).
    Free,
    /// Allocated, waiting for domain `remote` to bind to it.
    Unbound { remote: DomId },
    /// Connected to port `remote_port` of domain `remote`.
    Interdomain { remote: DomId, remote_port: Port },
    /// Bound to a virtual IRQ.
    Virq { virq: u32 },
    /// An inter-processor event within the domain; delivered to the port's vCPU.
    Ipi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    state: ChannelState,
    /// The vCPU that is notified when the port is raised.
    notify_vcpu: u32,
}

impl Channel {
    const FREE: Channel = Channel {
        state: ChannelState::Free,
        notify_vcpu: 0,
    };
}

/// Where an `EVTCHNOP_send` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendTarget {
    /// Raise `port` of domain `domid`, on that port's `notify_vcpu`.
    Remote { domid: DomId, port: Port },
    /// Raise `port` of the sending domain on `vcpu` (an IPI).
    Local { port: Port, vcpu: u32 },
    /// The port is still unbound: the event is dropped and the send succeeds.
    Dropped,
}

/// What the caller must do after [`PortTable::close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseEffect {
    /// The port is free; nothing else to do.
    Freed,
    /// The port was interdomain: revert `port` of domain `domid` (which may be this same
    /// domain) with `revert_to_unbound(port, <this domain>)`.
    RevertRemote { domid: DomId, port: Port },
}

/// The state-specific part of an `EVTCHNOP_status` answer (the union at offset 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusDetail {
    /// Closed or IPI: the union is zero.
    None,
    /// `unbound.dom`.
    Unbound { dom: DomId },
    /// `interdomain.dom`, `interdomain.port`.
    Interdomain { dom: DomId, port: Port },
    /// `virq`.
    Virq { virq: u32 },
}

/// The answer to `EVTCHNOP_status` for one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// `EVTCHNSTAT_*`.
    pub status: u32,
    /// The port's `notify_vcpu`.
    pub vcpu: u32,
    pub detail: StatusDetail,
}

impl Status {
    /// Byte offset of the first output field (`status`) in `struct evtchn_status`.
    pub const OUT_OFFSET: usize = 8;

    /// The output fields (bytes 8..24 of `struct evtchn_status`: status, vcpu, union),
    /// written at [`Self::OUT_OFFSET`]; the `dom` and `port` inputs are not written back.
    pub fn encode_out(&self) -> [u8; STATUS_SIZE - Self::OUT_OFFSET] {
        let mut out = [0u8; STATUS_SIZE - Self::OUT_OFFSET];
        out[0..4].copy_from_slice(&self.status.to_le_bytes());
        out[4..8].copy_from_slice(&self.vcpu.to_le_bytes());
        match self.detail {
            StatusDetail::None => {}
            StatusDetail::Unbound { dom } => out[8..10].copy_from_slice(&dom.to_le_bytes()),
            StatusDetail::Interdomain { dom, port } => {
                out[8..10].copy_from_slice(&dom.to_le_bytes());
                out[12..16].copy_from_slice(&port.to_le_bytes());
            }
            StatusDetail::Virq { virq } => out[8..12].copy_from_slice(&virq.to_le_bytes()),
        }
        out
    }
}

/// The event channels of one domain.
#[derive(Clone, Debug)]
pub struct PortTable {
    channels: [Channel; MAX_PORTS],
    /// `virq_ports[vcpu][virq]`: the port bound to that VIRQ on that vCPU, 0 if none.
    /// Global VIRQs are recorded under vCPU 0.
    virq_ports: [[Port; NR_VIRQ_SLOTS]; MAX_VCPUS],
    /// Number of ports not `Free`.
    used: usize,
}

impl Default for PortTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Index of `port` in the table, if it is in range.
fn slot(port: Port) -> Option<usize> {
    let i = usize::try_from(port).ok()?;
    (i < MAX_PORTS).then_some(i)
}

/// Checks that `vcpu` exists: below `nr_vcpus` and within what the table can target.
fn check_vcpu(vcpu: u32, nr_vcpus: u32) -> Result<usize, i64> {
    let i = usize::try_from(vcpu).map_err(|_| ENOENT)?;
    if vcpu < nr_vcpus && i < MAX_VCPUS {
        Ok(i)
    } else {
        Err(ENOENT)
    }
}

impl PortTable {
    /// A table with every port free.
    pub const fn new() -> Self {
        PortTable {
            channels: [Channel::FREE; MAX_PORTS],
            virq_ports: [[0; NR_VIRQ_SLOTS]; MAX_VCPUS],
            used: 0,
        }
    }

    /// Whether `port` is in the table's range (`EVTCHNOP_unmask` answers `-EINVAL` if not).
    pub fn is_valid(&self, port: Port) -> bool {
        slot(port).is_some()
    }

    /// The lowest free port, never 0.
    fn free_port(&self) -> Result<usize, i64> {
        self.channels
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, c)| c.state == ChannelState::Free)
            .map(|(i, _)| i)
            .ok_or(ENOSPC)
    }

    /// Puts a free slot into `state`, notifying `notify_vcpu`.
    fn occupy(&mut self, i: usize, state: ChannelState, notify_vcpu: u32) -> Port {
        if let Some(c) = self.channels.get_mut(i) {
            if c.state == ChannelState::Free {
                self.used += 1;
            }
            *c = Channel { state, notify_vcpu };
        }
        // `i < MAX_PORTS`, which fits a `Port`.
        i as Port
    }

    /// `EVTCHNOP_alloc_unbound`: a new port that domain `remote` may bind to; notifies vCPU 0.
    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<Port, i64> {
        let i = self.free_port()?;
        Ok(self.occupy(i, ChannelState::Unbound { remote }, 0))
    }

    /// `EVTCHNOP_bind_virq`: binds `virq` on `vcpu` of a domain with `nr_vcpus` vCPUs. The
    /// port notifies `vcpu`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32, nr_vcpus: u32) -> Result<Port, i64> {
        if virq >= NR_VIRQS {
            return Err(EINVAL);
        }
        if !virq_is_per_vcpu(virq) && vcpu != 0 {
            return Err(EINVAL);
        }
        let v = check_vcpu(vcpu, nr_vcpus)?;
        let virq_slot = virq as usize;
        if self.virq_ports[v][virq_slot] != 0 {
            return Err(EEXIST);
        }
        let i = self.free_port()?;
        let port = self.occupy(i, ChannelState::Virq { virq }, vcpu);
        self.virq_ports[v][virq_slot] = port;
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: a port that raises itself on `vcpu` when sent.
    pub fn bind_ipi(&mut self, vcpu: u32, nr_vcpus: u32) -> Result<Port, i64> {
        check_vcpu(vcpu, nr_vcpus)?;
        let i = self.free_port()?;
        Ok(self.occupy(i, ChannelState::Ipi, vcpu))
    }

    /// `EVTCHNOP_bind_vcpu`: notify `vcpu` from now on. Allowed for unbound, interdomain
    /// and global-VIRQ ports.
    pub fn bind_vcpu(&mut self, port: Port, vcpu: u32, nr_vcpus: u32) -> Result<(), i64> {
        check_vcpu(vcpu, nr_vcpus)?;
        let c = slot(port)
            .and_then(|i| self.channels.get_mut(i))
            .ok_or(EINVAL)?;
        match c.state {
            ChannelState::Unbound { .. } | ChannelState::Interdomain { .. } => {}
            ChannelState::Virq { virq } if !virq_is_per_vcpu(virq) => {}
            ChannelState::Virq { .. } | ChannelState::Ipi | ChannelState::Free => {
                return Err(EINVAL)
            }
        }
        c.notify_vcpu = vcpu;
        Ok(())
    }

    /// The state of `port`; `None` if it is out of range.
    pub fn state(&self, port: Port) -> Option<ChannelState> {
        slot(port).map(|i| self.channels[i].state)
    }

    /// The vCPU `port` notifies (0 for a port out of range).
    pub fn notify_vcpu(&self, port: Port) -> u32 {
        slot(port).map_or(0, |i| self.channels[i].notify_vcpu)
    }

    /// The port bound to `virq` on `vcpu`. A global VIRQ is found under vCPU 0 only.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<Port> {
        let v = usize::try_from(vcpu).ok()?;
        let port = *self.virq_ports.get(v)?.get(usize::try_from(virq).ok()?)?;
        (port != 0).then_some(port)
    }

    /// Where to deliver `virq` raised for `vcpu`: the bound port and the vCPU to notify.
    /// A per-vCPU VIRQ goes to `vcpu`'s own port; a global VIRQ (any `vcpu`) to the port
    /// bound on vCPU 0, notifying that port's `notify_vcpu`. `None` if not bound.
    pub fn virq_target(&self, virq: u32, vcpu: u32) -> Option<(Port, u32)> {
        if virq_is_per_vcpu(virq) {
            self.virq_port(virq, vcpu).map(|port| (port, vcpu))
        } else {
            self.virq_port(virq, 0)
                .map(|port| (port, self.notify_vcpu(port)))
        }
    }

    /// `EVTCHNOP_status` for `port`.
    pub fn status(&self, port: Port) -> Result<Status, i64> {
        let c = slot(port).map(|i| self.channels[i]).ok_or(EINVAL)?;
        let (status, detail) = match c.state {
            ChannelState::Free => (EVTCHNSTAT_CLOSED, StatusDetail::None),
            ChannelState::Unbound { remote } => {
                (EVTCHNSTAT_UNBOUND, StatusDetail::Unbound { dom: remote })
            }
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => (
                EVTCHNSTAT_INTERDOMAIN,
                StatusDetail::Interdomain {
                    dom: remote,
                    port: remote_port,
                },
            ),
            ChannelState::Virq { virq } => (EVTCHNSTAT_VIRQ, StatusDetail::Virq { virq }),
            ChannelState::Ipi => (EVTCHNSTAT_IPI, StatusDetail::None),
        };
        Ok(Status {
            status,
            vcpu: c.notify_vcpu,
            detail,
        })
    }

    /// `EVTCHNOP_send` on `port`: where the event goes.
    pub fn send_target(&self, port: Port) -> Result<SendTarget, i64> {
        let c = slot(port).map(|i| self.channels[i]).ok_or(EINVAL)?;
        match c.state {
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => Ok(SendTarget::Remote {
                domid: remote,
                port: remote_port,
            }),
            ChannelState::Ipi => Ok(SendTarget::Local {
                port,
                vcpu: c.notify_vcpu,
            }),
            ChannelState::Unbound { .. } => Ok(SendTarget::Dropped),
            ChannelState::Virq { .. } | ChannelState::Free => Err(EINVAL),
        }
    }

    /// `EVTCHNOP_close`: frees `port` (it then notifies vCPU 0 again). For an interdomain
    /// port the caller must revert the peer (see [`CloseEffect::RevertRemote`]).
    pub fn close(&mut self, port: Port) -> Result<CloseEffect, i64> {
        let i = slot(port).ok_or(EINVAL)?;
        let state = self.channels[i].state;
        let effect = match state {
            ChannelState::Free => return Err(EINVAL),
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => CloseEffect::RevertRemote {
                domid: remote,
                port: remote_port,
            },
            ChannelState::Virq { .. } => {
                for vcpu_ports in self.virq_ports.iter_mut() {
                    for p in vcpu_ports.iter_mut().filter(|p| **p == port) {
                        *p = 0;
                    }
                }
                CloseEffect::Freed
            }
            ChannelState::Unbound { .. } | ChannelState::Ipi => CloseEffect::Freed,
        };
        self.channels[i] = Channel::FREE;
        self.used = self.used.saturating_sub(1);
        Ok(effect)
    }

    /// Reverts `port`, the peer of a port of domain `remote` that was just closed, to
    /// `Unbound { remote }` (keeping its `notify_vcpu`), as Xen does. Does nothing unless
    /// `port` is `Interdomain` with domain `remote`, so a stale or repeated call cannot
    /// disturb an unrelated port.
    pub fn revert_to_unbound(&mut self, port: Port, remote: DomId) {
        let Some(c) = slot(port).and_then(|i| self.channels.get_mut(i)) else {
            return;
        };
        if let ChannelState::Interdomain { remote: r, .. } = c.state {
            if r == remote {
                c.state = ChannelState::Unbound { remote };
            }
        }
    }

    /// Domain teardown (and `EVTCHNOP_reset`): frees every port. Returns the
    /// `(domain, port)` peers of the interdomain ports, each to be reverted with
    /// `revert_to_unbound(port, <this domain>)`. Peers in this same domain are listed too;
    /// reverting them is a no-op because they are free by then.
    pub fn close_all(&mut self) -> heapless::Vec<(DomId, Port), MAX_PORTS> {
        let mut peers = heapless::Vec::new();
        for c in self.channels.iter() {
            if let ChannelState::Interdomain {
                remote,
                remote_port,
            } = c.state
            {
                // At most one per port: cannot overflow a vector of capacity MAX_PORTS.
                let _ = peers.push((remote, remote_port));
            }
        }
        // Reset in place: a fresh table would be a large temporary on the stack.
        self.channels.fill(Channel::FREE);
        for vcpu_ports in self.virq_ports.iter_mut() {
            vcpu_ports.fill(0);
        }
        self.used = 0;
        peers
    }

    /// Number of allocated ports.
    pub fn used_ports(&self) -> usize {
        self.used
    }

    /// Checks that `remote_port` accepts a binding from `local_id` and that the local table
    /// has room; returns the local slot to use.
    fn check_bind(
        local: &PortTable,
        local_id: DomId,
        remote: &PortTable,
        remote_port: Port,
    ) -> Result<usize, i64> {
        let lslot = local.free_port()?;
        let rslot = slot(remote_port).ok_or(EINVAL)?;
        match remote.channels[rslot].state {
            ChannelState::Unbound { remote: accepts } if accepts == local_id => Ok(lslot),
            _ => Err(EINVAL),
        }
    }
}

/// `EVTCHNOP_bind_interdomain` of domain `local_id` to `remote_port` of another domain
/// `remote_id`: `remote_port` must be `Unbound { remote: local_id }`. Both ports become
/// `Interdomain`, pointing at each other; the new local port notifies vCPU 0, the remote
/// port keeps its `notify_vcpu`. Returns the new local port, which the caller then raises
/// (as Xen does). For a domain binding to its own port use [`bind_interdomain_same`].
pub fn bind_interdomain(
    local: &mut PortTable,
    local_id: DomId,
    remote: &mut PortTable,
    remote_id: DomId,
    remote_port: Port,
) -> Result<Port, i64> {
    let lslot = PortTable::check_bind(local, local_id, remote, remote_port)?;
    let lport = local.occupy(
        lslot,
        ChannelState::Interdomain {
            remote: remote_id,
            remote_port,
        },
        0,
    );
    if let Some(r) = slot(remote_port).and_then(|i| remote.channels.get_mut(i)) {
        r.state = ChannelState::Interdomain {
            remote: local_id,
            remote_port: lport,
        };
    }
    Ok(lport)
}

/// [`bind_interdomain`] for a domain (`domid`) binding to its own unbound `remote_port`.
pub fn bind_interdomain_same(
    table: &mut PortTable,
    domid: DomId,
    remote_port: Port,
) -> Result<Port, i64> {
    let lslot = PortTable::check_bind(table, domid, table, remote_port)?;
    let lport = table.occupy(
        lslot,
        ChannelState::Interdomain {
            remote: domid,
            remote_port,
        },
        0,
    );
    if let Some(r) = slot(remote_port).and_then(|i| table.channels.get_mut(i)) {
        r.state = ChannelState::Interdomain {
            remote: domid,
            remote_port: lport,
        };
    }
    Ok(lport)
}

/// The 2-level event words of one domain: `evtchn_pending`/`evtchn_mask` in its
/// `shared_info` and, per vCPU, `evtchn_pending_sel` and `evtchn_upcall_pending` in its
/// `vcpu_info`. The hardware crate implements it with atomic operations on guest memory;
/// [`raise`] and [`unmask`] only pass ports `< NR_EVENT_CHANNELS_2L` and vCPUs
/// `< MAX_VCPUS`.
pub trait EventBits {
    /// Sets `evtchn_pending[port]`; returns the old bit.
    fn test_and_set_pending(&mut self, port: Port) -> bool;
    /// Reads `evtchn_pending[port]`.
    fn is_pending(&self, port: Port) -> bool;
    /// Reads `evtchn_mask[port]`.
    fn is_masked(&self, port: Port) -> bool;
    /// Clears `evtchn_mask[port]`; returns the old bit.
    fn clear_mask(&mut self, port: Port) -> bool;
    /// Sets bit `word` of `vcpu`'s `evtchn_pending_sel`; returns the old bit.
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool;
    /// Sets `vcpu`'s `evtchn_upcall_pending` to 1; returns whether it was already non-zero.
    fn set_upcall_pending(&mut self, vcpu: u32) -> bool;
}

/// What [`raise_detailed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaiseOutcome {
    /// Port or vCPU out of range: nothing touched.
    OutOfRange,
    /// The port was already pending: nothing else to do.
    AlreadyPending,
    /// Newly pending but masked: no upcall until it is unmasked.
    Masked,
    /// Newly pending; the vCPU's selector bit was already set, so an upcall is already
    /// on its way.
    SelectorAlreadySet,
    /// Newly pending, selector newly set, but `evtchn_upcall_pending` was already set.
    UpcallAlreadyPending,
    /// The upcall is newly pending: kick the vCPU (wake it, inject the callback vector).
    Kick,
}

impl RaiseOutcome {
    /// Whether the port became pending now (a vCPU blocked in `SCHEDOP_poll` on this port
    /// must be woken whenever this holds).
    pub fn newly_pending(self) -> bool {
        !matches!(self, Self::OutOfRange | Self::AlreadyPending)
    }
}

fn in_2l_range(port: Port, vcpu: u32) -> bool {
    port < NR_EVENT_CHANNELS_2L && usize::try_from(vcpu).is_ok_and(|v| v < MAX_VCPUS)
}

/// Sets the selector bit of `port`'s word on `vcpu` and, if that is new, the upcall flag.
/// Returns whether the vCPU must be kicked.
fn mark_pending(bits: &mut impl EventBits, port: Port, vcpu: u32) -> RaiseOutcome {
    if bits.test_and_set_selector(vcpu, port / BITS_PER_EVTCHN_WORD) {
        RaiseOutcome::SelectorAlreadySet
    } else if bits.set_upcall_pending(vcpu) {
        RaiseOutcome::UpcallAlreadyPending
    } else {
        RaiseOutcome::Kick
    }
}

/// Raises `port` for `vcpu` by the 2-level rules and says what happened (see [`raise`]).
pub fn raise_detailed(bits: &mut impl EventBits, port: Port, vcpu: u32) -> RaiseOutcome {
    if !in_2l_range(port, vcpu) {
        return RaiseOutcome::OutOfRange;
    }
    if bits.test_and_set_pending(port) {
        return RaiseOutcome::AlreadyPending;
    }
    if bits.is_masked(port) {
        return RaiseOutcome::Masked;
    }
    mark_pending(bits, port, vcpu)
}

/// Raises `port` for `vcpu` (the port's `notify_vcpu`): sets it pending and, unless it was
/// already pending or is masked, its selector bit and the upcall flag. Returns true if the
/// upcall became pending now, so the vCPU must be kicked.
pub fn raise(bits: &mut impl EventBits, port: Port, vcpu: u32) -> bool {
    raise_detailed(bits, port, vcpu) == RaiseOutcome::Kick
}

/// `EVTCHNOP_unmask` of `port`, delivered to `vcpu` (the port's `notify_vcpu`): clears
/// the mask; if it was masked and the port is pending, marks it pending on `vcpu` as
/// [`raise`] does. Returns true if the vCPU must be kicked. The caller answers `-EINVAL`
/// first if the port is out of the domain's range ([`PortTable::is_valid`]).
pub fn unmask(bits: &mut impl EventBits, port: Port, vcpu: u32) -> bool {
    if !in_2l_range(port, vcpu) {
        return false;
    }
    bits.clear_mask(port)
        && bits.is_pending(port)
        && mark_pending(bits, port, vcpu) == RaiseOutcome::Kick
}

#[cfg(test)]
mod tests;
