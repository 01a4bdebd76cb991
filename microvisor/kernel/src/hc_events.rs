//! `event_channel_op` (32) and `hvm_op` (34): the event-channel operations of Xen's 2-level
//! ABI and the HVM parameters. See `microvisor/HYPERCALLS.md`.
//!
//! Every port, vCPU and domain id is checked by the port-table policy in `microvisor-core`;
//! interdomain operations lock the two domains' tables in slot order. Each argument struct is
//! read once ([`Caller::read_arg`]) and only its output field is written back.

use microvisor_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use microvisor_abi::evtchn::*;
use microvisor_abi::hvm::*;
use microvisor_core::evtchn::{self as policy, CloseEffect, SendTarget, Status};
use microvisor_core::guest_arg::{
    self, AllocUnbound, BindInterdomain, BindIpi, BindVcpu, BindVirq, HvmParam, PortArg,
    StatusQuery,
};

use crate::events::{self, GuestEventBits, EVENTS};
use crate::hypercall::Caller;

fn resolve_domid(caller: &Caller, domid: u16) -> u16 {
    guest_arg::resolve_domid(domid, caller.domain.domid)
}

pub fn event_channel_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    let slot = caller.slot;
    let nr_vcpus = caller.domain.vcpus;
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let request: AllocUnbound = caller.read_arg(arg)?;
            if resolve_domid(caller, request.dom) != caller.domain.domid {
                return Err(EPERM);
            }
            let remote = resolve_domid(caller, request.remote_dom);
            let port = EVENTS[slot].lock().ports.alloc_unbound(remote)?;
            caller
                .write_field(arg, AllocUnbound::PORT_OFFSET, &port.to_le_bytes())
                .map(|()| 0)
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let request: BindInterdomain = caller.read_arg(arg)?;
            let remote_domid = resolve_domid(caller, request.remote_dom);
            let local_port = bind_interdomain(caller, remote_domid, request.remote_port)?;
            caller.write_field(arg, BindInterdomain::PORT_OFFSET, &local_port.to_le_bytes())?;
            // Xen marks the new local port pending so a notification sent before the bind is not lost.
            events::raise(slot, local_port);
            Ok(0)
        }
        EVTCHNOP_BIND_VIRQ => {
            let request: BindVirq = caller.read_arg(arg)?;
            let port = EVENTS[slot]
                .lock()
                .ports
                .bind_virq(request.virq, request.vcpu, nr_vcpus)?;
            caller
                .write_field(arg, BindVirq::PORT_OFFSET, &port.to_le_bytes())
                .map(|()| 0)
        }
        EVTCHNOP_BIND_IPI => {
            let request: BindIpi = caller.read_arg(arg)?;
            let port = EVENTS[slot].lock().ports.bind_ipi(request.vcpu, nr_vcpus)?;
            caller
                .write_field(arg, BindIpi::PORT_OFFSET, &port.to_le_bytes())
                .map(|()| 0)
        }
        EVTCHNOP_BIND_VCPU => {
            let request: BindVcpu = caller.read_arg(arg)?;
            EVENTS[slot]
                .lock()
                .ports
                .bind_vcpu(request.port, request.vcpu, nr_vcpus)?;
            Ok(0)
        }
        EVTCHNOP_CLOSE => {
            let request: PortArg = caller.read_arg(arg)?;
            let effect = EVENTS[slot].lock().ports.close(request.port)?;
            if let CloseEffect::RevertRemote { domid, port } = effect {
                if let Some(peer) = crate::domain::slot_of(domid) {
                    EVENTS[peer]
                        .lock()
                        .ports
                        .revert_to_unbound(port, caller.domain.domid);
                }
            }
            Ok(0)
        }
        EVTCHNOP_SEND => {
            let request: PortArg = caller.read_arg(arg)?;
            crate::stats::EVENTS_SENT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            crate::stats::PER_DOMAIN[slot]
                .events_sent
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let target = EVENTS[slot].lock().ports.send_target(request.port)?;
            match target {
                SendTarget::Remote { domid, port } => {
                    if let Some(peer) = crate::domain::slot_of(domid) {
                        events::raise(peer, port);
                    }
                }
                SendTarget::Local { port, .. } => events::raise(slot, port),
                SendTarget::Dropped => {}
            }
            Ok(0)
        }
        EVTCHNOP_UNMASK => {
            let port = caller.read_arg::<PortArg>(arg)?.port;
            let kick = {
                let events = EVENTS[slot].lock();
                if events.ports.state(port).is_none() {
                    return Err(EINVAL);
                }
                let vcpu = events.ports.notify_vcpu(port);
                let mut bits = GuestEventBits::of(&events);
                policy::unmask(&mut bits, port, vcpu).then_some(vcpu)
            };
            if let Some(vcpu) = kick {
                crate::scheduler::kick(slot, vcpu as usize);
            }
            Ok(0)
        }
        EVTCHNOP_STATUS => {
            let query: StatusQuery = caller.read_arg(arg)?;
            if resolve_domid(caller, query.dom) != caller.domain.domid {
                return Err(EPERM);
            }
            let status = EVENTS[slot].lock().ports.status(query.port)?;
            caller
                .write_field(arg, Status::OUT_OFFSET, &status.encode_out())
                .map(|()| 0)
        }
        // The FIFO ABI is not offered: guests stay on the 2-level ABI.
        _ => Err(ENOSYS),
    }
}

fn bind_interdomain(caller: &Caller, remote_domid: u16, remote_port: u32) -> Result<u32, i64> {
    let local = caller.slot;
    let local_domid = caller.domain.domid;
    if remote_domid == local_domid {
        let mut events = EVENTS[local].lock();
        return policy::bind_interdomain_same(&mut events.ports, local_domid, remote_port);
    }
    let remote = crate::domain::slot_of(remote_domid).ok_or(ESRCH)?;
    let (first, second) = if local < remote {
        (local, remote)
    } else {
        (remote, local)
    };
    let mut a = EVENTS[first].lock();
    let mut b = EVENTS[second].lock();
    let (mine, theirs) = if local < remote {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    policy::bind_interdomain(
        &mut mine.ports,
        local_domid,
        &mut theirs.ports,
        remote_domid,
        remote_port,
    )
}

pub fn hvm_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    match cmd {
        HVMOP_SET_PARAM | HVMOP_GET_PARAM => {
            let param: HvmParam = caller.read_arg(arg)?;
            if resolve_domid(caller, param.domid) != caller.domain.domid {
                return Err(EPERM);
            }
            let index = param.index;
            if index >= HVM_NR_PARAMS {
                return Err(EINVAL);
            }
            if cmd == HVMOP_GET_PARAM {
                let value = crate::domain::DOMAINS.lock()[caller.slot]
                    .as_ref()
                    .map_or(0, |d| d.hvm_params[index as usize]);
                return caller
                    .write_field(arg, HvmParam::VALUE_OFFSET, &value.to_le_bytes())
                    .map(|()| 0);
            }
            let value = param.value;
            match index {
                HVM_PARAM_CALLBACK_IRQ => {
                    let vector = guest_arg::callback_vector(value)?;
                    EVENTS[caller.slot].lock().callback_vector = vector;
                }
                // The store and console parameters are set by the builder, not the guest.
                _ => return Err(EPERM),
            }
            if let Some(d) = crate::domain::DOMAINS.lock()[caller.slot].as_mut() {
                d.hvm_params[index as usize] = value;
            }
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}
