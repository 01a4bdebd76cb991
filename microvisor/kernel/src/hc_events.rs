//! `event_channel_op` (32) and `hvm_op` (34): the event-channel operations of Xen's 2-level
//! ABI and the HVM parameters. See `microvisor/HYPERCALLS.md`.
//!
//! Every port, vCPU and domain id is checked by the port-table policy in `microvisor-core`;
//! interdomain operations lock the two domains' tables in slot order.

use microvisor_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use microvisor_abi::evtchn::*;
use microvisor_abi::hvm::*;
use microvisor_core::evtchn::{self as policy, CloseEffect, SendTarget};

use crate::events::{self, GuestEventBits, EVENTS};
use crate::hypercall::{u16_at, u32_at, u64_at, Caller};

fn resolve_domid(caller: &Caller, domid: u16) -> u16 {
    if domid == DOMID_SELF {
        caller.domain.domid
    } else {
        domid
    }
}

pub fn event_channel_op(caller: &mut Caller, [cmd, arg, ..]: [u64; 5]) -> Result<i64, i64> {
    let slot = caller.slot;
    let nr_vcpus = caller.domain.vcpus;
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut bytes: [u8; ALLOC_UNBOUND_SIZE] = caller.read_struct(arg)?;
            if resolve_domid(caller, u16_at(&bytes, 0)) != caller.domain.domid {
                return Err(EPERM);
            }
            let remote = resolve_domid(caller, u16_at(&bytes, 2));
            let port = EVENTS[slot].lock().ports.alloc_unbound(remote)?;
            bytes[4..8].copy_from_slice(&port.to_le_bytes());
            caller.write_bytes(arg, &bytes).map(|()| 0)
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut bytes: [u8; BIND_INTERDOMAIN_SIZE] = caller.read_struct(arg)?;
            let remote_domid = resolve_domid(caller, u16_at(&bytes, 0));
            let remote_port = u32_at(&bytes, 4);
            let local_port = bind_interdomain(caller, remote_domid, remote_port)?;
            bytes[8..12].copy_from_slice(&local_port.to_le_bytes());
            caller.write_bytes(arg, &bytes)?;
            // Xen marks the new local port pending so a notification sent before the bind is not lost.
            events::raise(slot, local_port);
            Ok(0)
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut bytes: [u8; BIND_VIRQ_SIZE] = caller.read_struct(arg)?;
            let port = EVENTS[slot].lock().ports.bind_virq(
                u32_at(&bytes, 0),
                u32_at(&bytes, 4),
                nr_vcpus,
            )?;
            bytes[8..12].copy_from_slice(&port.to_le_bytes());
            caller.write_bytes(arg, &bytes).map(|()| 0)
        }
        EVTCHNOP_BIND_IPI => {
            let mut bytes: [u8; BIND_IPI_SIZE] = caller.read_struct(arg)?;
            let port = EVENTS[slot]
                .lock()
                .ports
                .bind_ipi(u32_at(&bytes, 0), nr_vcpus)?;
            bytes[4..8].copy_from_slice(&port.to_le_bytes());
            caller.write_bytes(arg, &bytes).map(|()| 0)
        }
        EVTCHNOP_BIND_VCPU => {
            let bytes: [u8; BIND_VCPU_SIZE] = caller.read_struct(arg)?;
            EVENTS[slot]
                .lock()
                .ports
                .bind_vcpu(u32_at(&bytes, 0), u32_at(&bytes, 4), nr_vcpus)?;
            Ok(0)
        }
        EVTCHNOP_CLOSE => {
            let bytes: [u8; PORT_ARG_SIZE] = caller.read_struct(arg)?;
            let effect = EVENTS[slot].lock().ports.close(u32_at(&bytes, 0))?;
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
            let bytes: [u8; PORT_ARG_SIZE] = caller.read_struct(arg)?;
            crate::stats::EVENTS_SENT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            crate::stats::PER_DOMAIN[slot]
                .events_sent
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let target = EVENTS[slot].lock().ports.send_target(u32_at(&bytes, 0))?;
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
            let bytes: [u8; PORT_ARG_SIZE] = caller.read_struct(arg)?;
            let port = u32_at(&bytes, 0);
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
            let mut bytes: [u8; STATUS_SIZE] = caller.read_struct(arg)?;
            if resolve_domid(caller, u16_at(&bytes, 0)) != caller.domain.domid {
                return Err(EPERM);
            }
            let status = EVENTS[slot].lock().ports.status(u32_at(&bytes, 4))?;
            status.encode_into(&mut bytes);
            caller.write_bytes(arg, &bytes).map(|()| 0)
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
            let mut bytes: [u8; HVM_PARAM_SIZE] = caller.read_struct(arg)?;
            if resolve_domid(caller, u16_at(&bytes, 0)) != caller.domain.domid {
                return Err(EPERM);
            }
            let index = u32_at(&bytes, 4);
            if index >= HVM_NR_PARAMS {
                return Err(EINVAL);
            }
            if cmd == HVMOP_GET_PARAM {
                let value = crate::domain::DOMAINS.lock()[caller.slot]
                    .as_ref()
                    .map_or(0, |d| d.hvm_params[index as usize]);
                bytes[8..16].copy_from_slice(&value.to_le_bytes());
                return caller.write_bytes(arg, &bytes).map(|()| 0);
            }
            let value = u64_at(&bytes, 8);
            match index {
                HVM_PARAM_CALLBACK_IRQ => {
                    let vector = match value >> 56 {
                        0 if value == 0 => 0,
                        CALLBACK_TYPE_VECTOR
                            if (0x20..=0xff).contains(&(value & 0xff))
                                && value & 0x00ff_ffff_ffff_ff00 == 0 =>
                        {
                            (value & 0xff) as u8
                        }
                        _ => return Err(EINVAL),
                    };
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
