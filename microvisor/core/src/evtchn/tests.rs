//! Tests of the port table (every operation's success and error paths, interdomain bind,
//! close and revert, teardown) and of the 2-level raise/unmask rules against a fake
//! `shared_info`.

use super::*;
use microvisor_abi::errno::{EEXIST, EINVAL, ENOENT};
use microvisor_abi::evtchn::{VIRQ_CONSOLE, VIRQ_DOM_EXC};
use proptest::prelude::*;

const A: DomId = 1;
const B: DomId = 2;

// ---------------------------------------------------------------------------------------
// Single-table operations
// ---------------------------------------------------------------------------------------

#[test]
fn new_table_is_empty_and_usable_in_const_context() {
    static EMPTY: PortTable = PortTable::new();
    assert_eq!(EMPTY.used_ports(), 0);
    for port in 0..MAX_PORTS as Port {
        assert_eq!(EMPTY.state(port), Some(ChannelState::Free));
    }
    assert_eq!(EMPTY.state(MAX_PORTS as Port), None);
    assert_eq!(EMPTY.state(u32::MAX), None);
}

#[test]
fn alloc_unbound_takes_lowest_free_port_from_1() {
    let mut t = PortTable::new();
    assert_eq!(t.alloc_unbound(B), Ok(1));
    assert_eq!(t.alloc_unbound(B), Ok(2));
    assert_eq!(t.alloc_unbound(7), Ok(3));
    assert_eq!(t.state(1), Some(ChannelState::Unbound { remote: B }));
    assert_eq!(t.state(3), Some(ChannelState::Unbound { remote: 7 }));
    assert_eq!(t.notify_vcpu(1), 0);
    assert_eq!(t.close(2), Ok(CloseEffect::Freed));
    assert_eq!(t.alloc_unbound(B), Ok(2), "a freed port is reused first");
    assert_eq!(t.used_ports(), 3);
    assert_eq!(
        t.state(0),
        Some(ChannelState::Free),
        "port 0 is never allocated"
    );
}

#[test]
fn exhaustion_gives_enospc_for_every_kind_of_port() {
    let mut t = PortTable::new();
    for expected in 1..MAX_PORTS as Port {
        assert_eq!(t.alloc_unbound(B), Ok(expected));
    }
    assert_eq!(t.used_ports(), MAX_PORTS - 1);
    assert_eq!(t.alloc_unbound(B), Err(ENOSPC));
    assert_eq!(t.bind_ipi(0, 1), Err(ENOSPC));
    assert_eq!(t.bind_virq(VIRQ_TIMER, 0, 1), Err(ENOSPC));
    assert_eq!(
        t.virq_port(VIRQ_TIMER, 0),
        None,
        "a failed bind leaves no trace"
    );
    let mut peer = PortTable::new();
    let rport = peer.alloc_unbound(A).unwrap();
    assert_eq!(
        bind_interdomain(&mut t, A, &mut peer, B, rport),
        Err(ENOSPC)
    );
    assert_eq!(peer.state(rport), Some(ChannelState::Unbound { remote: A }));
    assert_eq!(t.state(0), Some(ChannelState::Free));
    // One freed port makes room again, and it is that one.
    t.close(500).unwrap();
    assert_eq!(t.bind_ipi(0, 1), Ok(500));
    assert_eq!(t.alloc_unbound(B), Err(ENOSPC));
}

#[test]
fn bind_virq_per_vcpu_and_global() {
    let mut t = PortTable::new();
    let timer0 = t.bind_virq(VIRQ_TIMER, 0, 2).unwrap();
    let timer1 = t.bind_virq(VIRQ_TIMER, 1, 2).unwrap();
    assert_ne!(timer0, timer1);
    assert_eq!(
        t.state(timer1),
        Some(ChannelState::Virq { virq: VIRQ_TIMER })
    );
    assert_eq!(t.notify_vcpu(timer1), 1);
    assert_eq!(t.virq_port(VIRQ_TIMER, 0), Some(timer0));
    assert_eq!(t.virq_port(VIRQ_TIMER, 1), Some(timer1));
    assert_eq!(t.virq_target(VIRQ_TIMER, 1), Some((timer1, 1)));
    let debug1 = t.bind_virq(VIRQ_DEBUG, 1, 2).unwrap();
    assert_eq!(t.virq_port(VIRQ_DEBUG, 1), Some(debug1));
    assert_eq!(t.virq_port(VIRQ_DEBUG, 0), None);
    let console = t.bind_virq(VIRQ_CONSOLE, 0, 2).unwrap();
    assert_eq!(t.virq_port(VIRQ_CONSOLE, 0), Some(console));
    assert_eq!(t.virq_port(VIRQ_CONSOLE, 1), None);
    // A global VIRQ raised "for" any vCPU goes to the one port, at its notify vCPU.
    assert_eq!(t.virq_target(VIRQ_CONSOLE, 1), Some((console, 0)));
    t.bind_vcpu(console, 1, 2).unwrap();
    assert_eq!(t.virq_target(VIRQ_CONSOLE, 0), Some((console, 1)));
    assert_eq!(t.virq_target(VIRQ_DOM_EXC, 0), None);
    assert_eq!(t.used_ports(), 4);
}

#[test]
fn bind_virq_errors() {
    let mut t = PortTable::new();
    assert_eq!(t.bind_virq(NR_VIRQS, 0, 1), Err(EINVAL));
    assert_eq!(t.bind_virq(u32::MAX, 0, 1), Err(EINVAL));
    assert_eq!(
        t.bind_virq(VIRQ_CONSOLE, 1, 2),
        Err(EINVAL),
        "global VIRQ off vCPU 0"
    );
    assert_eq!(t.bind_virq(VIRQ_TIMER, 2, 2), Err(ENOENT), "no such vCPU");
    assert_eq!(t.bind_virq(VIRQ_TIMER, u32::MAX, u32::MAX), Err(ENOENT));
    assert_eq!(
        t.bind_virq(VIRQ_TIMER, MAX_VCPUS as u32, 64),
        Err(ENOENT),
        "beyond what the table can target"
    );
    assert_eq!(
        t.bind_virq(VIRQ_CONSOLE, 0, 0),
        Err(ENOENT),
        "domain without vCPUs"
    );
    let p = t.bind_virq(VIRQ_TIMER, 0, 1).unwrap();
    assert_eq!(t.bind_virq(VIRQ_TIMER, 0, 1), Err(EEXIST));
    assert_eq!(t.used_ports(), 1);
    // Closing the port unbinds the VIRQ.
    t.close(p).unwrap();
    assert_eq!(t.virq_port(VIRQ_TIMER, 0), None);
    assert_eq!(t.bind_virq(VIRQ_TIMER, 0, 1), Ok(p));
}

#[test]
fn per_vcpu_virq_classification() {
    for virq in 0..NR_VIRQS {
        let expected = matches!(virq, 0 | 1 | 7 | 13);
        assert_eq!(virq_is_per_vcpu(virq), expected, "virq {virq}");
    }
    let mut t = PortTable::new();
    assert!(t.bind_virq(VIRQ_XENPMU, 3, 4).is_ok());
    assert!(t.bind_virq(VIRQ_XENOPROF, 3, 4).is_ok());
}

#[test]
fn bind_ipi_and_send() {
    let mut t = PortTable::new();
    let p = t.bind_ipi(3, 4).unwrap();
    assert_eq!(t.state(p), Some(ChannelState::Ipi));
    assert_eq!(t.notify_vcpu(p), 3);
    assert_eq!(t.send_target(p), Ok(SendTarget::Local { port: p, vcpu: 3 }));
    assert_eq!(t.bind_ipi(4, 4), Err(ENOENT));
    assert_eq!(t.bind_ipi(u32::MAX, u32::MAX), Err(ENOENT));
    assert_eq!(t.used_ports(), 1);
}

#[test]
fn bind_vcpu_rules() {
    let mut t = PortTable::new();
    let unbound = t.alloc_unbound(B).unwrap();
    let ipi = t.bind_ipi(1, 4).unwrap();
    let timer = t.bind_virq(VIRQ_TIMER, 1, 4).unwrap();
    let console = t.bind_virq(VIRQ_CONSOLE, 0, 4).unwrap();

    assert_eq!(t.bind_vcpu(unbound, 2, 4), Ok(()));
    assert_eq!(t.notify_vcpu(unbound), 2);
    assert_eq!(t.bind_vcpu(console, 3, 4), Ok(()));
    assert_eq!(t.notify_vcpu(console), 3);

    assert_eq!(t.bind_vcpu(ipi, 2, 4), Err(EINVAL));
    assert_eq!(t.bind_vcpu(timer, 2, 4), Err(EINVAL));
    assert_eq!(t.bind_vcpu(100, 2, 4), Err(EINVAL), "free port");
    assert_eq!(t.bind_vcpu(0, 2, 4), Err(EINVAL), "port 0");
    assert_eq!(t.bind_vcpu(MAX_PORTS as Port, 2, 4), Err(EINVAL));
    assert_eq!(t.bind_vcpu(u32::MAX, 2, 4), Err(EINVAL));
    assert_eq!(t.bind_vcpu(unbound, 4, 4), Err(ENOENT));
    assert_eq!(t.notify_vcpu(ipi), 1);
    assert_eq!(t.notify_vcpu(timer), 1);
    assert_eq!(t.notify_vcpu(unbound), 2);

    // A freed port goes back to vCPU 0.
    t.close(unbound).unwrap();
    assert_eq!(t.notify_vcpu(unbound), 0);
    assert_eq!(t.alloc_unbound(B), Ok(unbound));
    assert_eq!(t.notify_vcpu(unbound), 0);
    assert_eq!(t.notify_vcpu(u32::MAX), 0);
}

#[test]
fn send_target_per_state() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    let unbound = a.alloc_unbound(B).unwrap();
    let virq = a.bind_virq(VIRQ_TIMER, 0, 1).unwrap();
    assert_eq!(a.send_target(unbound), Ok(SendTarget::Dropped));
    assert_eq!(a.send_target(virq), Err(EINVAL));
    assert_eq!(a.send_target(0), Err(EINVAL));
    assert_eq!(a.send_target(77), Err(EINVAL));
    assert_eq!(a.send_target(MAX_PORTS as Port), Err(EINVAL));
    assert_eq!(a.send_target(u32::MAX), Err(EINVAL));
    let bport = bind_interdomain(&mut b, B, &mut a, A, unbound).unwrap();
    assert_eq!(
        a.send_target(unbound),
        Ok(SendTarget::Remote {
            domid: B,
            port: bport
        })
    );
    assert_eq!(
        b.send_target(bport),
        Ok(SendTarget::Remote {
            domid: A,
            port: unbound
        })
    );
}

#[test]
fn status_per_state() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    let unbound = a.alloc_unbound(B).unwrap();
    a.bind_vcpu(unbound, 1, 2).unwrap();
    assert_eq!(
        a.status(unbound),
        Ok(Status {
            status: EVTCHNSTAT_UNBOUND,
            vcpu: 1,
            detail: StatusDetail::Unbound { dom: B }
        })
    );
    let bport = bind_interdomain(&mut b, B, &mut a, A, unbound).unwrap();
    assert_eq!(
        a.status(unbound),
        Ok(Status {
            status: EVTCHNSTAT_INTERDOMAIN,
            vcpu: 1,
            detail: StatusDetail::Interdomain {
                dom: B,
                port: bport
            }
        })
    );
    let virq = a.bind_virq(VIRQ_DEBUG, 1, 2).unwrap();
    assert_eq!(
        a.status(virq),
        Ok(Status {
            status: EVTCHNSTAT_VIRQ,
            vcpu: 1,
            detail: StatusDetail::Virq { virq: VIRQ_DEBUG }
        })
    );
    let ipi = a.bind_ipi(1, 2).unwrap();
    assert_eq!(
        a.status(ipi),
        Ok(Status {
            status: EVTCHNSTAT_IPI,
            vcpu: 1,
            detail: StatusDetail::None
        })
    );
    let closed = Status {
        status: EVTCHNSTAT_CLOSED,
        vcpu: 0,
        detail: StatusDetail::None,
    };
    assert_eq!(a.status(0), Ok(closed));
    assert_eq!(a.status(900), Ok(closed));
    assert_eq!(a.status(MAX_PORTS as Port), Err(EINVAL));
    assert_eq!(a.status(u32::MAX), Err(EINVAL));
}

/// What the microvisor does with an answer: writes its output bytes at `OUT_OFFSET`.
fn write_answer(status: Status, arg: &mut [u8; STATUS_SIZE]) {
    arg[Status::OUT_OFFSET..].copy_from_slice(&status.encode_out());
}

#[test]
fn status_encoding_layout() {
    let mut arg = [0xaau8; STATUS_SIZE];
    write_answer(
        Status {
            status: EVTCHNSTAT_INTERDOMAIN,
            vcpu: 3,
            detail: StatusDetail::Interdomain {
                dom: 0x1234,
                port: 0x0506_0708,
            },
        },
        &mut arg,
    );
    assert_eq!(&arg[..8], &[0xaa; 8], "inputs untouched");
    assert_eq!(&arg[8..12], &2u32.to_le_bytes());
    assert_eq!(&arg[12..16], &3u32.to_le_bytes());
    assert_eq!(&arg[16..24], &[0x34, 0x12, 0, 0, 0x08, 0x07, 0x06, 0x05]);

    write_answer(
        Status {
            status: EVTCHNSTAT_UNBOUND,
            vcpu: 0,
            detail: StatusDetail::Unbound { dom: 0x0102 },
        },
        &mut arg,
    );
    assert_eq!(&arg[8..12], &1u32.to_le_bytes());
    assert_eq!(
        &arg[16..24],
        &[0x02, 0x01, 0, 0, 0, 0, 0, 0],
        "stale union cleared"
    );

    write_answer(
        Status {
            status: EVTCHNSTAT_VIRQ,
            vcpu: 1,
            detail: StatusDetail::Virq { virq: 0x0a0b_0c0d },
        },
        &mut arg,
    );
    assert_eq!(&arg[16..24], &[0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0, 0]);

    write_answer(
        Status {
            status: EVTCHNSTAT_IPI,
            vcpu: 1,
            detail: StatusDetail::None,
        },
        &mut arg,
    );
    assert_eq!(&arg[8..12], &5u32.to_le_bytes());
    assert_eq!(&arg[16..24], &[0; 8]);
}

#[test]
fn close_errors_and_effects() {
    let mut t = PortTable::new();
    assert_eq!(t.close(0), Err(EINVAL), "port 0 is never open");
    assert_eq!(t.close(5), Err(EINVAL), "free port");
    assert_eq!(t.close(MAX_PORTS as Port), Err(EINVAL));
    assert_eq!(t.close(u32::MAX), Err(EINVAL));
    let p = t.bind_ipi(0, 1).unwrap();
    assert_eq!(t.close(p), Ok(CloseEffect::Freed));
    assert_eq!(t.close(p), Err(EINVAL), "double close");
    assert_eq!(t.used_ports(), 0);
    assert_eq!(t.state(p), Some(ChannelState::Free));
}

#[test]
fn is_valid_is_the_table_range() {
    let t = PortTable::new();
    assert!(t.is_valid(0));
    assert!(t.is_valid(MAX_PORTS as Port - 1));
    assert!(!t.is_valid(MAX_PORTS as Port));
    assert!(!t.is_valid(u32::MAX));
}

// ---------------------------------------------------------------------------------------
// Two tables
// ---------------------------------------------------------------------------------------

#[test]
fn interdomain_bind_close_revert() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    a.alloc_unbound(B).unwrap(); // port 1 of A, so the ports differ between tables
    let aport = a.alloc_unbound(B).unwrap();
    a.bind_vcpu(aport, 1, 2).unwrap();
    let bport = bind_interdomain(&mut b, B, &mut a, A, aport).unwrap();
    assert_eq!(bport, 1);
    assert_eq!(
        a.state(aport),
        Some(ChannelState::Interdomain {
            remote: B,
            remote_port: bport
        })
    );
    assert_eq!(
        b.state(bport),
        Some(ChannelState::Interdomain {
            remote: A,
            remote_port: aport
        })
    );
    assert_eq!(a.notify_vcpu(aport), 1, "the bound-to port keeps its vCPU");
    assert_eq!(b.notify_vcpu(bport), 0, "the new port notifies vCPU 0");

    // B closes: A's port reverts to unbound for B, so B can bind again.
    let effect = b.close(bport).unwrap();
    assert_eq!(
        effect,
        CloseEffect::RevertRemote {
            domid: A,
            port: aport
        }
    );
    a.revert_to_unbound(aport, B);
    assert_eq!(a.state(aport), Some(ChannelState::Unbound { remote: B }));
    assert_eq!(a.notify_vcpu(aport), 1);
    assert_eq!(b.used_ports(), 0);
    assert_eq!(a.used_ports(), 2);
    let again = bind_interdomain(&mut b, B, &mut a, A, aport).unwrap();
    assert_eq!(again, bport);

    // A closes: B's port reverts to unbound for A.
    let effect = a.close(aport).unwrap();
    assert_eq!(
        effect,
        CloseEffect::RevertRemote {
            domid: B,
            port: bport
        }
    );
    b.revert_to_unbound(bport, A);
    assert_eq!(b.state(bport), Some(ChannelState::Unbound { remote: A }));
}

#[test]
fn bind_interdomain_errors() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    let for_c = a.alloc_unbound(3).unwrap();
    let ipi = a.bind_ipi(0, 1).unwrap();
    assert_eq!(
        bind_interdomain(&mut b, B, &mut a, A, for_c),
        Err(EINVAL),
        "port accepts another domain"
    );
    assert_eq!(bind_interdomain(&mut b, B, &mut a, A, ipi), Err(EINVAL));
    assert_eq!(bind_interdomain(&mut b, B, &mut a, A, 0), Err(EINVAL));
    assert_eq!(bind_interdomain(&mut b, B, &mut a, A, 99), Err(EINVAL));
    assert_eq!(
        bind_interdomain(&mut b, B, &mut a, A, MAX_PORTS as Port),
        Err(EINVAL)
    );
    assert_eq!(
        bind_interdomain(&mut b, B, &mut a, A, u32::MAX),
        Err(EINVAL)
    );
    assert_eq!(b.used_ports(), 0, "failed binds allocate nothing");
    assert_eq!(a.state(for_c), Some(ChannelState::Unbound { remote: 3 }));

    // An already connected port cannot be bound a second time.
    let for_b = a.alloc_unbound(B).unwrap();
    bind_interdomain(&mut b, B, &mut a, A, for_b).unwrap();
    assert_eq!(bind_interdomain(&mut b, B, &mut a, A, for_b), Err(EINVAL));
    assert_eq!(b.used_ports(), 1);
}

#[test]
fn loopback_bind_close_revert_in_one_table() {
    let mut t = PortTable::new();
    let listen = t.alloc_unbound(A).unwrap();
    let other = t.alloc_unbound(B).unwrap();
    assert_eq!(bind_interdomain_same(&mut t, A, other), Err(EINVAL));
    assert_eq!(bind_interdomain_same(&mut t, A, 500), Err(EINVAL));
    let local = bind_interdomain_same(&mut t, A, listen).unwrap();
    assert_ne!(local, listen);
    assert_eq!(
        t.state(local),
        Some(ChannelState::Interdomain {
            remote: A,
            remote_port: listen
        })
    );
    assert_eq!(
        t.state(listen),
        Some(ChannelState::Interdomain {
            remote: A,
            remote_port: local
        })
    );
    assert_eq!(
        t.send_target(local),
        Ok(SendTarget::Remote {
            domid: A,
            port: listen
        })
    );
    let effect = t.close(local).unwrap();
    assert_eq!(
        effect,
        CloseEffect::RevertRemote {
            domid: A,
            port: listen
        }
    );
    t.revert_to_unbound(listen, A);
    assert_eq!(t.state(listen), Some(ChannelState::Unbound { remote: A }));
    assert_eq!(t.used_ports(), 2);
}

#[test]
fn revert_to_unbound_touches_only_a_matching_interdomain_port() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    let ipi = a.bind_ipi(0, 1).unwrap();
    let unbound = a.alloc_unbound(B).unwrap();
    let for_b = a.alloc_unbound(B).unwrap();
    bind_interdomain(&mut b, B, &mut a, A, for_b).unwrap();
    let before = a.clone();
    a.revert_to_unbound(ipi, B);
    a.revert_to_unbound(unbound, 9);
    a.revert_to_unbound(for_b, 9); // peer is B, not 9
    a.revert_to_unbound(300, B);
    a.revert_to_unbound(u32::MAX, B);
    for port in 0..MAX_PORTS as Port {
        assert_eq!(a.state(port), before.state(port));
    }
    assert_eq!(a.used_ports(), before.used_ports());
}

#[test]
fn close_all_reports_peers_and_frees_everything() {
    let mut a = PortTable::new();
    let mut b = PortTable::new();
    a.bind_virq(VIRQ_TIMER, 0, 1).unwrap();
    a.bind_ipi(0, 1).unwrap();
    a.alloc_unbound(B).unwrap();
    let b1 = b.alloc_unbound(A).unwrap();
    let b2 = b.alloc_unbound(A).unwrap();
    let a1 = bind_interdomain(&mut a, A, &mut b, B, b1).unwrap();
    let a2 = bind_interdomain(&mut a, A, &mut b, B, b2).unwrap();
    let loop_listen = a.alloc_unbound(A).unwrap();
    let loop_local = bind_interdomain_same(&mut a, A, loop_listen).unwrap();
    assert_eq!(a.used_ports(), 7);

    let peers = a.close_all();
    let mut got: Vec<_> = peers.iter().copied().collect();
    got.sort_unstable();
    let mut want = vec![(B, b1), (B, b2), (A, loop_listen), (A, loop_local)];
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(a.used_ports(), 0);
    assert_eq!(a.virq_port(VIRQ_TIMER, 0), None);
    for port in 0..MAX_PORTS as Port {
        assert_eq!(a.state(port), Some(ChannelState::Free));
    }
    assert!(a1 != a2);

    for (dom, port) in peers {
        if dom == B {
            b.revert_to_unbound(port, A);
        } else {
            a.revert_to_unbound(port, A);
        }
    }
    assert_eq!(b.state(b1), Some(ChannelState::Unbound { remote: A }));
    assert_eq!(b.state(b2), Some(ChannelState::Unbound { remote: A }));
    assert_eq!(
        a.used_ports(),
        0,
        "reverting a self-peer after close_all is a no-op"
    );
    assert_eq!(a.state(loop_listen), Some(ChannelState::Free));
    // The table is as good as new.
    assert_eq!(a.bind_virq(VIRQ_TIMER, 0, 1), Ok(1));
}

// ---------------------------------------------------------------------------------------
// 2-level raise and unmask
// ---------------------------------------------------------------------------------------

/// `shared_info` and `vcpu_info` as plain vectors.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FakeBits {
    pending: Vec<bool>,
    mask: Vec<bool>,
    selector: Vec<u64>,
    upcall: Vec<bool>,
}

impl FakeBits {
    fn new() -> Self {
        let ports = NR_EVENT_CHANNELS_2L as usize;
        FakeBits {
            pending: vec![false; ports],
            mask: vec![false; ports],
            selector: vec![0; MAX_VCPUS],
            upcall: vec![false; MAX_VCPUS],
        }
    }
}

impl EventBits for FakeBits {
    fn test_and_set_pending(&mut self, port: Port) -> bool {
        std::mem::replace(&mut self.pending[port as usize], true)
    }
    fn is_pending(&self, port: Port) -> bool {
        self.pending[port as usize]
    }
    fn is_masked(&self, port: Port) -> bool {
        self.mask[port as usize]
    }
    fn clear_mask(&mut self, port: Port) -> bool {
        std::mem::replace(&mut self.mask[port as usize], false)
    }
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool {
        let sel = &mut self.selector[vcpu as usize];
        let old = *sel & (1 << word) != 0;
        *sel |= 1 << word;
        old
    }
    fn set_upcall_pending(&mut self, vcpu: u32) -> bool {
        std::mem::replace(&mut self.upcall[vcpu as usize], true)
    }
}

#[test]
fn raise_sets_pending_selector_upcall_and_kicks_once() {
    let mut bits = FakeBits::new();
    assert!(raise(&mut bits, 70, 1));
    assert!(bits.pending[70]);
    assert_eq!(bits.selector[1], 1 << 1, "port 70 is in word 1");
    assert!(bits.upcall[1]);
    assert_eq!(bits.selector[0], 0);
    assert!(!bits.upcall[0]);
    // Already pending: nothing changes, no kick.
    let before = bits.clone();
    assert_eq!(
        raise_detailed(&mut bits, 70, 1),
        RaiseOutcome::AlreadyPending
    );
    assert_eq!(bits, before);
    // Another port in the same word: selector already set, no kick.
    assert_eq!(
        raise_detailed(&mut bits, 71, 1),
        RaiseOutcome::SelectorAlreadySet
    );
    assert!(bits.pending[71]);
    // A port in another word while the upcall is still pending: no kick.
    assert_eq!(
        raise_detailed(&mut bits, 3, 1),
        RaiseOutcome::UpcallAlreadyPending
    );
    assert_eq!(bits.selector[1], 0b11);
    // The guest handles the upcall (clears flag and selector, not the pending bits).
    bits.upcall[1] = false;
    bits.selector[1] = 0;
    assert!(raise(&mut bits, 4095, 1), "last 2-level port, word 63");
    assert_eq!(bits.selector[1], 1 << 63);
}

#[test]
fn raise_masked_port_only_sets_pending() {
    let mut bits = FakeBits::new();
    bits.mask[9] = true;
    assert_eq!(raise_detailed(&mut bits, 9, 0), RaiseOutcome::Masked);
    assert!(raise_detailed(&mut bits, 10, 0).newly_pending());
    bits.upcall[0] = false;
    bits.selector[0] = 0;
    assert!(!raise(&mut bits, 9, 0), "already pending");
    assert!(bits.pending[9]);
    assert_eq!(bits.selector[0], 0);
    assert!(!bits.upcall[0]);
}

#[test]
fn raise_out_of_range_touches_nothing() {
    let mut bits = FakeBits::new();
    let before = bits.clone();
    assert_eq!(
        raise_detailed(&mut bits, NR_EVENT_CHANNELS_2L, 0),
        RaiseOutcome::OutOfRange
    );
    assert!(!raise(&mut bits, u32::MAX, 0));
    assert!(!raise(&mut bits, 1, MAX_VCPUS as u32));
    assert!(!raise(&mut bits, 1, u32::MAX));
    assert!(!unmask(&mut bits, NR_EVENT_CHANNELS_2L, 0));
    assert!(!unmask(&mut bits, 1, u32::MAX));
    assert_eq!(bits, before);
    assert!(!RaiseOutcome::OutOfRange.newly_pending());
    assert!(!RaiseOutcome::AlreadyPending.newly_pending());
    assert!(RaiseOutcome::Masked.newly_pending());
}

#[test]
fn unmask_redelivers_a_pending_masked_port() {
    let mut bits = FakeBits::new();
    bits.mask[130] = true;
    raise(&mut bits, 130, 2);
    assert!(!bits.upcall[2]);
    assert!(unmask(&mut bits, 130, 2));
    assert!(!bits.mask[130]);
    assert_eq!(bits.selector[2], 1 << 2);
    assert!(bits.upcall[2]);
    // Unmasking again: the mask was already clear, nothing is re-delivered.
    bits.upcall[2] = false;
    bits.selector[2] = 0;
    assert!(!unmask(&mut bits, 130, 2));
    assert_eq!(bits.selector[2], 0);
    assert!(!bits.upcall[2]);
}

#[test]
fn unmask_cases_without_kick() {
    let mut bits = FakeBits::new();
    // Masked but not pending: only the mask changes.
    bits.mask[5] = true;
    assert!(!unmask(&mut bits, 5, 0));
    assert!(!bits.mask[5]);
    assert_eq!(bits.selector[0], 0);
    // Masked and pending, selector already set: no kick, upcall untouched.
    bits.mask[6] = true;
    bits.pending[6] = true;
    bits.selector[0] = 1;
    assert!(!unmask(&mut bits, 6, 0));
    assert!(!bits.upcall[0]);
    // Masked and pending, selector new, upcall already pending: no kick.
    bits.mask[64] = true;
    bits.pending[64] = true;
    bits.upcall[0] = true;
    assert!(!unmask(&mut bits, 64, 0));
    assert_eq!(bits.selector[0], 0b11);
}

// ---------------------------------------------------------------------------------------
// Property: random operations on two domains keep the peer invariant
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    AllocUnbound {
        dom: usize,
        remote: DomId,
    },
    Bind {
        dom: usize,
        remote: usize,
        port: Port,
    },
    Close {
        dom: usize,
        port: Port,
    },
    CloseAll {
        dom: usize,
    },
    BindVirq {
        dom: usize,
        virq: u32,
        vcpu: u32,
    },
    BindIpi {
        dom: usize,
        vcpu: u32,
    },
    BindVcpu {
        dom: usize,
        port: Port,
        vcpu: u32,
    },
    Send {
        dom: usize,
        port: Port,
    },
    Status {
        dom: usize,
        port: Port,
    },
    Revert {
        dom: usize,
        port: Port,
        remote: DomId,
    },
}

/// Ports mostly in the busy low range, sometimes anywhere.
fn port() -> impl Strategy<Value = Port> {
    prop_oneof![8 => 0u32..12, 1 => any::<u32>(), 1 => 1000u32..1100]
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 0usize..2;
    prop_oneof![
        4 => (dom.clone(), 1u16..4).prop_map(|(dom, remote)| Op::AllocUnbound { dom, remote }),
        4 => (dom.clone(), 0usize..2, port()).prop_map(|(dom, remote, port)| Op::Bind { dom, remote, port }),
        3 => (dom.clone(), port()).prop_map(|(dom, port)| Op::Close { dom, port }),
        1 => dom.clone().prop_map(|dom| Op::CloseAll { dom }),
        2 => (dom.clone(), prop_oneof![0u32..4, any::<u32>()], 0u32..4)
            .prop_map(|(dom, virq, vcpu)| Op::BindVirq { dom, virq, vcpu }),
        1 => (dom.clone(), 0u32..4).prop_map(|(dom, vcpu)| Op::BindIpi { dom, vcpu }),
        1 => (dom.clone(), port(), any::<u32>()).prop_map(|(dom, port, vcpu)| Op::BindVcpu { dom, port, vcpu: vcpu % 5 }),
        1 => (dom.clone(), port()).prop_map(|(dom, port)| Op::Send { dom, port }),
        1 => (dom.clone(), port()).prop_map(|(dom, port)| Op::Status { dom, port }),
        1 => (dom, port(), 1u16..4).prop_map(|(dom, port, remote)| Op::Revert { dom, port, remote }),
    ]
}

const NR_VCPUS: u32 = 3;

/// Two domains, ids 1 and 2, and the caller's side of the protocol.
struct World {
    tables: [PortTable; 2],
}

fn id(dom: usize) -> DomId {
    dom as DomId + 1
}

fn index(domid: DomId) -> Option<usize> {
    (1..=2).contains(&domid).then(|| usize::from(domid - 1))
}

impl World {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::AllocUnbound { dom, remote } => {
                let _ = self.tables[dom].alloc_unbound(remote);
            }
            Op::Bind { dom, remote, port } => {
                let result = if dom == remote {
                    bind_interdomain_same(&mut self.tables[dom], id(dom), port)
                } else {
                    let [t0, t1] = &mut self.tables;
                    let (local, peer) = if dom == 0 { (t0, t1) } else { (t1, t0) };
                    bind_interdomain(local, id(dom), peer, id(remote), port)
                };
                if let Ok(lport) = result {
                    assert!(lport != 0 && (lport as usize) < MAX_PORTS);
                }
            }
            Op::Close { dom, port } => {
                if let Ok(CloseEffect::RevertRemote { domid, port }) = self.tables[dom].close(port)
                {
                    let peer = index(domid).expect("interdomain peer is a known domain");
                    self.tables[peer].revert_to_unbound(port, id(dom));
                }
            }
            Op::CloseAll { dom } => {
                for (domid, port) in self.tables[dom].close_all() {
                    let peer = index(domid).expect("interdomain peer is a known domain");
                    self.tables[peer].revert_to_unbound(port, id(dom));
                }
            }
            Op::BindVirq { dom, virq, vcpu } => {
                let _ = self.tables[dom].bind_virq(virq, vcpu, NR_VCPUS);
            }
            Op::BindIpi { dom, vcpu } => {
                let _ = self.tables[dom].bind_ipi(vcpu, NR_VCPUS);
            }
            Op::BindVcpu { dom, port, vcpu } => {
                let _ = self.tables[dom].bind_vcpu(port, vcpu, NR_VCPUS);
            }
            Op::Send { dom, port } => {
                if let Ok(SendTarget::Remote { domid, port }) = self.tables[dom].send_target(port) {
                    let peer = index(domid).expect("interdomain peer is a known domain");
                    assert!(matches!(
                        self.tables[peer].state(port),
                        Some(ChannelState::Interdomain { .. })
                    ));
                }
            }
            Op::Status { dom, port } => {
                let _ = self.tables[dom].status(port);
            }
            Op::Revert { dom, port, remote } => {
                // A stray revert (the caller's bug, or a stale one) must not break pairs:
                // only apply it when the named remote really is no longer connected.
                if let Some(ChannelState::Interdomain {
                    remote: r,
                    remote_port,
                }) = self.tables[dom].state(port)
                {
                    let still_connected = index(r).is_some_and(|peer| {
                        self.tables[peer].state(remote_port)
                            == Some(ChannelState::Interdomain {
                                remote: id(dom),
                                remote_port: port,
                            })
                    });
                    if still_connected {
                        return;
                    }
                }
                self.tables[dom].revert_to_unbound(port, remote);
            }
        }
    }

    fn check_invariants(&self) {
        for (dom, table) in self.tables.iter().enumerate() {
            let mut used = 0;
            assert_eq!(table.state(0), Some(ChannelState::Free));
            for port in 0..MAX_PORTS as Port {
                let state = table.state(port).unwrap();
                if state != ChannelState::Free {
                    used += 1;
                }
                assert!(table.notify_vcpu(port) < NR_VCPUS);
                match state {
                    ChannelState::Interdomain {
                        remote,
                        remote_port,
                    } => {
                        let peer = index(remote).expect("peer is a known domain");
                        assert_eq!(
                            self.tables[peer].state(remote_port),
                            Some(ChannelState::Interdomain {
                                remote: id(dom),
                                remote_port: port
                            }),
                            "domain {} port {port} points at domain {remote} port {remote_port}",
                            id(dom)
                        );
                    }
                    ChannelState::Virq { virq } => {
                        let vcpu = if virq_is_per_vcpu(virq) {
                            table.notify_vcpu(port)
                        } else {
                            0
                        };
                        assert_eq!(table.virq_port(virq, vcpu), Some(port));
                    }
                    ChannelState::Free => assert_eq!(table.notify_vcpu(port), 0),
                    _ => {}
                }
            }
            assert_eq!(table.used_ports(), used);
            for virq in 0..NR_VIRQS {
                for vcpu in 0..MAX_VCPUS as u32 {
                    if let Some(port) = table.virq_port(virq, vcpu) {
                        assert_eq!(table.state(port), Some(ChannelState::Virq { virq }));
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_interdomain_pairs(ops in proptest::collection::vec(op(), 1..120)) {
        let mut world = World { tables: [PortTable::new(), PortTable::new()] };
        for op in &ops {
            world.apply(op);
            world.check_invariants();
        }
    }

    #[test]
    fn raise_and_unmask_never_panic_and_agree_with_the_bits(
        steps in proptest::collection::vec((any::<bool>(), 0u32..200, 0u32..10, any::<bool>()), 1..200)
    ) {
        let mut bits = FakeBits::new();
        for (is_raise, port, vcpu, set_mask) in steps {
            let in_range = (vcpu as usize) < MAX_VCPUS;
            if in_range && set_mask {
                bits.mask[port as usize] = true;
            }
            let kick = if is_raise { raise(&mut bits, port, vcpu) } else { unmask(&mut bits, port, vcpu) };
            if kick {
                prop_assert!(bits.upcall[vcpu as usize]);
                prop_assert!(bits.pending[port as usize] && !bits.mask[port as usize]);
                prop_assert!(bits.selector[vcpu as usize] & (1 << (port / 64)) != 0);
            }
            if is_raise && in_range {
                prop_assert!(bits.pending[port as usize]);
            }
            // Sometimes the guest takes the upcall.
            if port % 7 == 0 && in_range {
                bits.upcall[vcpu as usize] = false;
                bits.selector[vcpu as usize] = 0;
            }
        }
    }
}
